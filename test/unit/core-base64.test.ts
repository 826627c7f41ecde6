import { describe, it, expect } from "vitest";
import { decodeBase64, encodeBase64, encodeBase64Url } from "../../src/core/base64";

const utf8 = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("unpadded base64", () => {
  // Spec: Appendices, "Unpadded Base64".
  const vectors: [string, string][] = [
    ["", ""],
    ["f", "Zg"],
    ["fo", "Zm8"],
    ["foo", "Zm9v"],
    ["foob", "Zm9vYg"],
    ["fooba", "Zm9vYmE"],
    ["foobar", "Zm9vYmFy"],
  ];
  for (const [plain, encoded] of vectors) {
    it(`encodes ${JSON.stringify(plain)} as ${JSON.stringify(encoded)}`, () => {
      expect(encodeBase64(utf8(plain))).toBe(encoded);
      expect(text(decodeBase64(encoded))).toBe(plain);
    });
  }

  it("decodes padded input too", () => {
    expect(text(decodeBase64("Zg=="))).toBe("f");
    expect(text(decodeBase64("Zm8="))).toBe("fo");
    expect(text(decodeBase64("Zm9vYmFy"))).toBe("foobar");
  });

  it("uses - and _ in the URL-safe alphabet and decodes both alphabets", () => {
    const bytes = new Uint8Array([0xfb, 0xff, 0xbf]);
    expect(encodeBase64(bytes)).toBe("+/+/");
    expect(encodeBase64Url(bytes)).toBe("-_-_");
    expect(decodeBase64("+/+/")).toEqual(bytes);
    expect(decodeBase64("-_-_")).toEqual(bytes);
  });

  it("round-trips every byte value at every length mod 3", () => {
    const all = new Uint8Array(256).map((_, i) => i);
    for (let n = 0; n <= 256; n += 1) {
      const b = all.slice(0, n);
      expect(decodeBase64(encodeBase64(b))).toEqual(b);
      expect(decodeBase64(encodeBase64Url(b))).toEqual(b);
      expect(encodeBase64(b)).not.toContain("=");
    }
  });

  it("agrees with btoa (minus padding)", () => {
    const b = crypto.getRandomValues(new Uint8Array(1000));
    for (let n = 0; n < 40; n++) {
      const slice = b.slice(0, n * 25 + (n % 3));
      expect(encodeBase64(slice)).toBe(btoa(String.fromCharCode(...slice)).replace(/=+$/, ""));
    }
  });

  it("tolerates non-zero trailing bits (the spec's own test-vector seed has them)", () => {
    // 43 characters → 32 bytes; "1" carries two low bits that are not part of any byte.
    expect(decodeBase64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").length).toBe(32);
    expect(decodeBase64("Zh")).toEqual(decodeBase64("Zg"));
  });

  it("rejects malformed input", () => {
    for (const bad of ["Z", "Zm9vY", "Zg=", "Zg===", "Zm9v=", "=", "====", "Zg==Zg==", "Zm 9v", "Zm9v\n", "Zm9*", "Zé", "Z\u0000"]) {
      expect(() => decodeBase64(bad), bad).toThrow();
    }
  });
});
