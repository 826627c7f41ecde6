import { describe, it, expect } from "vitest";
import {
  canonicalJson,
  canonicalJsonBytes,
  CanonicalJsonError,
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
