// See package.json: placeholder exports; any use throws.
"use strict";
const fail = () => {
  throw new Error("end-to-end encryption is not available in this test environment");
};
module.exports = new Proxy(
  {},
  {
    get(_t, name) {
      if (name === "__esModule") return false;
      if (typeof name !== "string") return undefined;
      // A class-like function: constructing or calling it throws.
      const f = function () { fail(); };
      Object.defineProperty(f, "name", { value: name });
      return f;
    },
  },
);
