import { describe, it, expect } from "vitest";
import {
  canonicalJson,
  canonicalJsonBytes,
  CanonicalJsonError,
  canonicalMembers,
  compareCodePoints,
  MAX_DEPTH,
} from "../../src/core/canonical-json";

describe("canonical JSON: spec appendix examples", () => {
  // Spec: Appendices, "Canonical JSON" → "Examples". Inputs parsed from their JSON text.
  const examples: [string, string][] = [
    ["{}", "{}"],
    ['{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'],
    ['{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'],
    ['{"b":"2","a":"1"}', '{"a":"1","b":"2"}'],
    [
      `{
        "auth": {
          "success": true,
          "mxid": "@john.doe:example.com",
          "profile": {
            "display_name": "John Doe",
            "three_pids": [
              { "medium": "email", "address": "john.doe@example.org" },
              { "medium": "msisdn", "address": "123456789" }
            ]
          }
        }
      }`,
      '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ],
    ['{"a": "日本語"}', '{"a":"日本語"}'],
    ['{"本": 2, "日": 1}', '{"日":1,"本":2}'],
    ['{"a": "\\u65E5"}', '{"a":"日"}'],
    ['{"a": null}', '{"a":null}'],
    ['{"a": -0, "b": 1e10}', '{"a":0,"b":10000000000}'],
  ];
  for (const [input, expected] of examples) {
    it(`${input.replace(/\s+/g, " ").slice(0, 50)} → ${expected.slice(0, 40)}`, () => {
      expect(canonicalJson(JSON.parse(input))).toBe(expected);
      expect(canonicalJson(JSON.parse(input), { strict: true })).toBe(expected);
    });
  }

  it("emits raw UTF-8 bytes for non-ASCII", () => {
    expect(canonicalJsonBytes({ a: "日" })).toEqual(new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xe6, 0x97, 0xa5, 0x22, 0x7d]));
  });
});

describe("canonical JSON: strings", () => {
  it("uses the short escapes and lowercase \\u00XX for other control characters", () => {
    expect(canonicalJson("\b\t\n\f\r\"\\")).toBe('"\\b\\t\\n\\f\\r\\"\\\\"');
    expect(canonicalJson("\u0000\u0001\u000b\u000e\u001f")).toBe('"\\u0000\\u0001\\u000b\\u000e\\u001f"');
  });

  it("does not escape /, DEL, U+2028/2029, non-ASCII or astral characters", () => {
    expect(canonicalJson("/\u007f\u2028\u2029é😀")).toBe('"/\u007f\u2028\u2029é😀"');
  });

  it("rejects lone surrogates in values and keys (they have no UTF-8 encoding)", () => {
    for (const bad of ["\ud800", "a\udc00", "\udc00\ud800", "x\ud83d"]) {
      expect(() => canonicalJson(bad)).toThrow(CanonicalJsonError);
      expect(() => canonicalJson({ [bad]: 1 })).toThrow(CanonicalJsonError);
    }
    expect(canonicalJson("\ud83d\ude00")).toBe('"😀"');
  });
});

describe("canonical JSON: key order", () => {
  it("sorts by Unicode code point, not UTF-16 code unit", () => {
    // U+FF21 (fullwidth A) < U+1F600 by code point, but its UTF-16 unit 0xFF21 > 0xD83D.
    const obj = { "😀": 1, "Ａ": 2, a: 3, "": 4, aa: 5, B: 6 };
    expect(canonicalJson(obj)).toBe('{"":4,"B":6,"a":3,"aa":5,"Ａ":2,"😀":1}');
  });

  it("compareCodePoints orders astral characters after the whole BMP", () => {
    const keys = ["\uffff", "\u{10000}", "\ue000", "\ud7ff", "\u{10ffff}", "\u{1f600}"];
    keys.sort(compareCodePoints);
    expect(keys).toEqual(["\ud7ff", "\ue000", "\uffff", "\u{10000}", "\u{1f600}", "\u{10ffff}"]);
    expect(compareCodePoints("a", "ab")).toBeLessThan(0);
    expect(compareCodePoints("ab", "ab")).toBe(0);
  });

  it("is independent of insertion order and sorts nested objects", () => {
    const a = { z: { y: 1, x: [{ b: 1, a: 2 }] }, a: true };
    const b = { a: true, z: { x: [{ a: 2, b: 1 }], y: 1 } };
    expect(canonicalJson(a)).toBe(canonicalJson(b));
    expect(canonicalJson(a)).toBe('{"a":true,"z":{"x":[{"a":2,"b":1}],"y":1}}');
  });

  it("treats __proto__-like keys as ordinary data", () => {
    const o = JSON.parse('{"__proto__": 1, "constructor": 2}');
    expect(canonicalJson(o)).toBe('{"__proto__":1,"constructor":2}');
  });
});

describe("canonical JSON: numbers", () => {
  it("accepts the boundaries of the strict range", () => {
    expect(canonicalJson(2 ** 53 - 1, { strict: true })).toBe("9007199254740991");
    expect(canonicalJson(-(2 ** 53) + 1, { strict: true })).toBe("-9007199254740991");
    expect(canonicalJson(-0, { strict: true })).toBe("0");
    expect(canonicalJson([0, -1, 1e15], { strict: true })).toBe("[0,-1,1000000000000000]");
  });

  it("strict mode rejects floats and out-of-range integers", () => {
    for (const bad of [1.5, -0.1, 2 ** 53, -(2 ** 53), 1e300, Number.MIN_VALUE]) {
      expect(() => canonicalJson({ a: bad }, { strict: true }), String(bad)).toThrow(CanonicalJsonError);
    }
    expect(() => canonicalJson(2n ** 53n, { strict: true })).toThrow(CanonicalJsonError);
    expect(canonicalJson(2n ** 53n - 1n, { strict: true })).toBe("9007199254740991");
  });

  it("lenient mode (room versions 1–5) writes big integers without exponent and tolerates floats", () => {
    expect(canonicalJson(2 ** 53)).toBe("9007199254740992");
    expect(canonicalJson(1e21)).toBe("1000000000000000000000");
    expect(canonicalJson(-1e21)).toBe("-1000000000000000000000");
    expect(canonicalJson(12345678901234567890n)).toBe("12345678901234567890");
    expect(canonicalJson(1.5)).toBe("1.5");
  });

  it("always rejects NaN and infinities", () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      expect(() => canonicalJson(bad)).toThrow(CanonicalJsonError);
      expect(() => canonicalJson([bad], { strict: true })).toThrow(CanonicalJsonError);
    }
  });
});

describe("canonical JSON: non-JSON values", () => {
  it("rejects undefined, functions, symbols, and non-plain objects", () => {
    const bad: unknown[] = [
      undefined,
      { a: undefined },
      [undefined],
      () => 1,
      { f() {} },
      Symbol("x"),
      new Date(0),
      new Map(),
      new Uint8Array(1),
      new (class Foo {})(),
      // eslint-disable-next-line no-sparse-arrays
      [1, , 2],
    ];
    for (const b of bad) expect(() => canonicalJson(b)).toThrow(CanonicalJsonError);
  });

  it("accepts null-prototype objects and scalars at top level", () => {
    const o = Object.create(null);
    o.b = 1;
    o.a = 2;
    expect(canonicalJson(o)).toBe('{"a":2,"b":1}');
    expect(canonicalJson(null)).toBe("null");
    expect(canonicalJson(true)).toBe("true");
    expect(canonicalJson("x")).toBe('"x"');
    expect(canonicalJson([])).toBe("[]");
  });

  it("handles nesting up to the limit and refuses deeper or cyclic structures cleanly", () => {
    const nest = (n: number) => {
      let v: unknown = 1;
      for (let i = 0; i < n; i++) v = i % 2 ? [v] : { k: v };
      return v;
    };
    expect(() => canonicalJson(nest(MAX_DEPTH - 1))).not.toThrow();
    expect(() => canonicalJson(nest(MAX_DEPTH + 1))).toThrow(CanonicalJsonError);
    expect(() => canonicalJson(nest(100_000))).toThrow(CanonicalJsonError);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(CanonicalJsonError);
  });

  it("round-trips: parsing the output gives the same value", () => {
    const v = { s: "line\nbreak \"q\" \\ \u0007 ü 😀", n: [-5, 0, 42], o: { t: true, f: false, z: null } };
    const out = canonicalJson(v, { strict: true });
    expect(JSON.parse(out)).toEqual(v);
    // No insignificant whitespace anywhere.
    expect(canonicalJson({ a: [1, { b: 2 }], c: "d" })).toBe('{"a":[1,{"b":2}],"c":"d"}');
  });
});

// canonicalJson writes most values with JSON.stringify after checking them (and rebuilding
// objects whose keys are out of order); everything else goes through the spelled-out encoder.
// A reference written straight from the spec's rules must agree on every value, valid or not.
const LONE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
function reference(v: unknown, strict: boolean, depth = 0): string {
  if (typeof v === "string") {
    if (LONE.test(v)) throw new CanonicalJsonError("lone surrogate");
    return JSON.stringify(v);
  }
  if (typeof v === "number") {
    if (!Number.isFinite(v) || (strict && (!Number.isInteger(v) || Math.abs(v) > 2 ** 53 - 1))) throw new CanonicalJsonError("number");
    if (Number.isInteger(v)) return Math.abs(v) < 1e21 ? String(Math.abs(v) === 0 ? 0 : v) : BigInt(v).toString();
    return String(v);
  }
  if (typeof v === "bigint") {
    if (strict && (v > 2n ** 53n - 1n || v < -(2n ** 53n) + 1n)) throw new CanonicalJsonError("number");
    return v.toString();
  }
  if (typeof v === "boolean") return String(v);
  if (v === null) return "null";
  if (typeof v !== "object" || depth >= MAX_DEPTH) throw new CanonicalJsonError("not JSON");
  if (Array.isArray(v)) {
    const parts: string[] = [];
    for (let i = 0; i < v.length; i++) {
      if (!(i in v)) throw new CanonicalJsonError("sparse");
      parts.push(reference(v[i], strict, depth + 1));
    }
    return `[${parts.join(",")}]`;
  }
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) throw new CanonicalJsonError("not plain");
  const keys = Object.keys(v);
  for (const k of keys) if (LONE.test(k)) throw new CanonicalJsonError("lone surrogate key");
  const byCodePoint = (a: string, b: string) => {
    const x = [...a].map((c) => c.codePointAt(0)!);
    const y = [...b].map((c) => c.codePointAt(0)!);
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  };
  return `{${keys
    .sort(byCodePoint)
    .map((k) => `${JSON.stringify(k)}:${reference((v as Record<string, unknown>)[k], strict, depth + 1)}`)
    .join(",")}}`;
}

describe("canonical JSON: the checked JSON.stringify path agrees with the rules", () => {
  const outcome = (f: () => string) => {
    try {
      return f();
    } catch (e) {
      return e instanceof CanonicalJsonError ? "CanonicalJsonError" : `other: ${(e as Error).message}`;
    }
  };
  const same = (v: unknown, label: string) => {
    for (const strict of [false, true]) expect(outcome(() => canonicalJson(v, { strict })), `${label}, strict ${strict}`).toBe(outcome(() => reference(v, strict)));
  };

  it("keys out of order at every depth, array-index keys, __proto__, code-point order, integers at ±2^53", () => {
    const cases: unknown[] = [
      JSON.parse('{"type":"m.x","content":{"b":1,"a":[{"d":2,"c":"\\u00e9"}]},"auth_events":["$a"],"depth":1}'),
      JSON.parse('{"10":1,"9":2,"a":3,"1":4}'),
      JSON.parse('{"1":1,"a":{"z":1,"y":2}}'),
      JSON.parse('{"b":1,"__proto__":{"y":1,"x":2}}'),
      JSON.parse('{"__proto__":{"y":1,"x":2}}'),
      { "\ue000": 1, "\ud83d\ude00": 2, a: 3 },
      { b: { "\ud800": 1 }, a: 1 },
      { b: "x\udc00", a: 1 },
      { b: [1, 2 ** 53 - 1, -(2 ** 53) + 1], a: -0 },
      { b: [2 ** 53], a: 1 },
      { b: -(2 ** 53), a: 1 },
      { b: { c: 1e20, d: 1e21, e: -1e22, f: 0.5 }, a: 1 },
      { b: [1, undefined], a: 1 },
      { b: { c: undefined }, a: 1 },
      { b: 5n, a: 1 },
      { b: () => 1, a: 1 },
      { toJSON: "not called", a: 1 },
      { b: { toJSON: () => "x" }, a: 1 },
      { b: new Date(0), a: 1 },
      { b: [NaN], a: 1 },
      { s: "\b\t\n\f\r\"\\\u0000\u001f\u007f\u2028/é😀", a: [] },
      Object.assign(Object.create(null), { b: 1, a: { d: 1, c: 2 } }),
      // eslint-disable-next-line no-sparse-arrays
      { b: [1, , 2], a: 1 },
    ];
    cases.forEach((v, i) => same(v, `case ${i}`));
  });

  it("agrees with the reference on thousands of generated values", () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
    const strings = ["", "a", "b", "ab", "0", "1", "9", "10", "01", "-1", "4294967295", "__proto__", "constructor", "\ud800", "x\udc00", "😀", "\ue000", "\uffff", "日", "\u0000", "\"", "\\", "é"];
    const numbers = [0, -0, 1, -1, 0.5, 2 ** 53 - 1, 2 ** 53, -(2 ** 53 - 1), -(2 ** 53), 1e20, 1e21, 1e300, NaN, Infinity];
    const gen = (d: number): unknown => {
      const r = rnd();
      if (d > 4 || r < 0.3) return pick<unknown>([pick(strings), pick(numbers), true, false, null, pick(strings), pick(numbers)]);
      if (r < 0.55) return Array.from({ length: Math.floor(rnd() * 4) }, () => gen(d + 1));
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rnd() * 5); i > 0; i--) {
        const k = pick(strings);
        Object.defineProperty(o, k, { value: gen(d + 1), enumerable: true, writable: true, configurable: true });
      }
      return o;
    };
    for (let i = 0; i < 5000; i++) same(gen(0), `value ${i}`);
  });
});

describe("canonicalMembers", () => {
  it("the members in canonical order; any subset of them is the canonical JSON of those keys", () => {
    const o = { z: 1, "😀": { b: 2, a: 1 }, "\ue000": [3], a: "x", m: null };
    const members = canonicalMembers(o);
    expect(members.map((m) => m.key)).toEqual(["a", "m", "z", "\ue000", "😀"]);
    expect(`{${members.map((m) => m.text).join(",")}}`).toBe(canonicalJson(o));
    const some = members.filter((m) => m.key !== "m" && m.key !== "\ue000");
    expect(`{${some.map((m) => m.text).join(",")}}`).toBe(canonicalJson({ z: 1, "😀": { b: 2, a: 1 }, a: "x" }));
  });

  it("throws as canonicalJson does", () => {
    expect(() => canonicalMembers({ a: 1.5 }, { strict: true })).toThrow(CanonicalJsonError);
    expect(() => canonicalMembers({ "\ud800": 1 })).toThrow(CanonicalJsonError);
    expect(() => canonicalMembers([1])).toThrow(CanonicalJsonError);
    expect(canonicalMembers({ a: 1.5 })).toEqual([{ key: "a", text: '"a":1.5' }]);
  });
});
