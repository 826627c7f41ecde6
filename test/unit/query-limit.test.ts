import { describe, expect, it } from "vitest";
import { queryLimit } from "../../src/api/validate";
import { MatrixError } from "../../src/api/errors";

describe("queryLimit (the `limit` query parameter of paginated endpoints)", () => {
  it("reads absent or empty as the default and caps large values", () => {
    expect(queryLimit(undefined, { dflt: 10 })).toBe(10);
    expect(queryLimit("", { dflt: 20, max: 100 })).toBe(20);
    expect(queryLimit("7", { dflt: 20, max: 100 })).toBe(7);
    expect(queryLimit("1000000", { dflt: 20, max: 100 })).toBe(100);
    expect(queryLimit("0", { dflt: 20 })).toBe(0);
  });

  it.each(["-1", "1.5", "abc", "1e3", " 5", "0x10", "9999999999999999"])("refuses %j with 400 M_INVALID_PARAM", (raw) => {
    try {
      queryLimit(raw, { dflt: 20, max: 100 });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(MatrixError);
      expect((e as MatrixError).status).toBe(400);
      expect((e as MatrixError).errcode).toBe("M_INVALID_PARAM");
    }
  });

  it("refuses 0 where at least one item is required", () => {
    expect(() => queryLimit("0", { dflt: 20, min: 1 })).toThrow(MatrixError);
    expect(queryLimit("1", { dflt: 20, min: 1 })).toBe(1);
  });
});
