import { describe, it, expect } from "vitest";
import {
  generateSigningKey,
  isValidKeyId,
  signBytes,
  signingKeyFromSeed,
  signJson,
  verifyBytes,
  verifyJsonSignature,
} from "../../src/core/signing";
import { decodeBase64, encodeBase64, encodeBase64Url } from "../../src/core/base64";
import { CanonicalJsonError } from "../../src/core/canonical-json";

// Spec: Appendices, "Cryptographic Test Vectors".
const SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const specKey = () => signingKeyFromSeed("ed25519:1", SEED);

describe("signing keys", () => {
  it("derives the public key from the spec's seed", async () => {
    const key = await specKey();
    expect(key.keyId).toBe("ed25519:1");
    expect(decodeBase64(key.publicKey).length).toBe(32);
    // The stored seed is the canonical unpadded encoding of the same 32 bytes.
    expect(decodeBase64(key.seed)).toEqual(decodeBase64(SEED));
    // Reloading gives the same public key (padded / URL-safe seed forms too).
    const again = await signingKeyFromSeed("ed25519:1", encodeBase64Url(decodeBase64(SEED)) + "=");
    expect(again.publicKey).toBe(key.publicKey);
  });

  it("generates fresh keys with a random ed25519:xxxxxx ID and a consistent seed", async () => {
    const a = await generateSigningKey();
    const b = await generateSigningKey();
    expect(a.keyId).toMatch(/^ed25519:[A-Za-z0-9]{6}$/);
    expect(isValidKeyId(a.keyId)).toBe(true);
    expect(a.seed).not.toBe(b.seed);
    expect(decodeBase64(a.seed).length).toBe(32);
    const reloaded = await signingKeyFromSeed(a.keyId, a.seed);
    expect(reloaded.publicKey).toBe(a.publicKey);
    expect((await generateSigningKey("ed25519:custom_1")).keyId).toBe("ed25519:custom_1");
  });

  it("rejects seeds that are not 32 bytes", async () => {
    await expect(signingKeyFromSeed("ed25519:1", "AAAA")).rejects.toThrow();
    await expect(signingKeyFromSeed("ed25519:1", encodeBase64(new Uint8Array(33)))).rejects.toThrow();
    await expect(signingKeyFromSeed("ed25519:1", "not base64!")).rejects.toThrow();
  });

  it("validates key IDs", () => {
    expect(isValidKeyId("ed25519:a_AbCd")).toBe(true);
    expect(isValidKeyId("ed25519:")).toBe(false);
    expect(isValidKeyId("ed25519:a-b")).toBe(false);
    expect(isValidKeyId("curve25519:abc")).toBe(false);
  });
});

describe("signJson: spec test vectors", () => {
  it("signs an empty object", async () => {
    const signed = await signJson({}, "domain", await specKey());
    expect(signed).toEqual({
      signatures: {
        domain: {
          "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ",
        },
      },
    });
  });

  it("signs an object with data values", async () => {
    const signed = await signJson({ one: 1, two: "Two" }, "domain", await specKey());
    expect(signed).toEqual({
      one: 1,
      signatures: {
        domain: {
          "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
        },
      },
      two: "Two",
    });
  });

  it("verifies the spec's signatures", async () => {
    const key = await specKey();
    const obj = {
      one: 1,
      two: "Two",
      signatures: { domain: { "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw" } },
    };
    expect(await verifyJsonSignature(obj, "domain", "ed25519:1", key.publicKey)).toBe(true);
  });
});

describe("signJson / verifyJsonSignature", () => {
  it("excludes `unsigned` and `signatures` from what is signed, keeps `unsigned`, merges signatures", async () => {
    const key = await specKey();
    const other = await generateSigningKey("ed25519:other");
    const obj = {
      name: "example.org",
      unsigned: { age_ts: 922834800000 },
      signatures: { "third.party": { "ed25519:x": "abc" } },
    };
    const s1 = await signJson(obj, "example.org", key);
    const s2 = await signJson(s1, "example.org", other);
    expect(s2.unsigned).toEqual({ age_ts: 922834800000 });
    expect(Object.keys(s2.signatures["example.org"]).sort()).toEqual(["ed25519:1", "ed25519:other"]);
    expect(s2.signatures["third.party"]).toEqual({ "ed25519:x": "abc" });
    // Input not mutated.
    expect(obj.signatures).toEqual({ "third.party": { "ed25519:x": "abc" } });

    expect(await verifyJsonSignature(s2, "example.org", "ed25519:1", key.publicKey)).toBe(true);
    expect(await verifyJsonSignature(s2, "example.org", "ed25519:other", other.publicKey)).toBe(true);
    // `unsigned` may change in transit without breaking the signature.
    const aged = { ...s2, unsigned: { age_ts: 1, anything: "else" } };
    expect(await verifyJsonSignature(aged, "example.org", "ed25519:1", key.publicKey)).toBe(true);
    const noUnsigned = { ...s2 } as Partial<typeof s2>;
    delete noUnsigned.unsigned;
    expect(await verifyJsonSignature(noUnsigned, "example.org", "ed25519:1", key.publicKey)).toBe(true);
  });

  it("signature is independent of key order", async () => {
    const key = await specKey();
    const a = await signJson({ b: 1, a: { d: 2, c: 3 } }, "s", key);
    const b = await signJson({ a: { c: 3, d: 2 }, b: 1 }, "s", key);
    expect(a.signatures).toEqual(b.signatures);
  });

  it("fails for tampered data, wrong key, wrong entity, wrong key ID and forged signatures", async () => {
    const key = await specKey();
    const wrong = await generateSigningKey("ed25519:1");
    const signed = await signJson({ one: 1, two: "Two" }, "domain", key);
    const sig = signed.signatures.domain["ed25519:1"];
    const verify = (o: object, entity = "domain", keyId = "ed25519:1", pub = key.publicKey) =>
      verifyJsonSignature(o, entity, keyId, pub);

    expect(await verify(signed)).toBe(true);
    expect(await verify({ ...signed, one: 2 })).toBe(false);
    expect(await verify({ ...signed, three: 3 })).toBe(false);
    expect(await verify(signed, "domain", "ed25519:1", wrong.publicKey)).toBe(false);
    expect(await verify(signed, "other.domain")).toBe(false);
    expect(await verify(signed, "domain", "ed25519:2")).toBe(false);

    // Bit-flipped signature.
    const raw = decodeBase64(sig);
    raw[10] ^= 1;
    expect(await verify({ ...signed, signatures: { domain: { "ed25519:1": encodeBase64(raw) } } })).toBe(false);
    // Signature by the wrong key copied under the right key ID.
    const forged = await signJson({ one: 1, two: "Two" }, "domain", wrong);
    expect(await verify(forged)).toBe(false);
    // Garbage signatures, public keys and shapes never throw.
    const junk: unknown[] = ["", "!!!", "AAAA", sig.slice(0, 40), sig + "AAAA", 42, null, { x: 1 }];
    for (const j of junk) {
      expect(await verify({ ...signed, signatures: { domain: { "ed25519:1": j } } })).toBe(false);
    }
    for (const pub of ["", "!!!", encodeBase64(new Uint8Array(31)), encodeBase64(new Uint8Array(32))]) {
      expect(await verify(signed, "domain", "ed25519:1", pub)).toBe(false);
    }
    for (const sigs of [undefined, null, "x", [], { domain: null }, { domain: "x" }]) {
      expect(await verify({ one: 1, two: "Two", signatures: sigs })).toBe(false);
    }
    // Inherited properties are not signatures.
    expect(await verify({ one: 1, two: "Two", signatures: { domain: Object.create({ "ed25519:1": sig }) } })).toBe(false);
  });

  it("refuses unknown algorithms even with a valid-looking signature", async () => {
    const key = await specKey();
    const signed = await signJson({}, "domain", { ...key, keyId: "ed448:1" });
    expect(await verifyJsonSignature(signed, "domain", "ed448:1", key.publicKey)).toBe(false);
  });

  it("signs strictly by default; lenient only on request", async () => {
    const key = await specKey();
    await expect(signJson({ f: 1.5 }, "d", key)).rejects.toThrow(CanonicalJsonError);
    await expect(signJson({ big: 2 ** 60 }, "d", key)).rejects.toThrow(CanonicalJsonError);
    const lenient = await signJson({ big: 2 ** 60 }, "d", key, { strict: false });
    expect(await verifyJsonSignature(lenient, "d", "ed25519:1", key.publicKey)).toBe(true);
    expect(await verifyJsonSignature(lenient, "d", "ed25519:1", key.publicKey, { strict: true })).toBe(false);
    // Unencodable objects verify as false rather than throwing.
    expect(await verifyJsonSignature({ x: "\ud800", signatures: { d: { "ed25519:1": "AA" } } }, "d", "ed25519:1", key.publicKey)).toBe(false);
  });

  it("signBytes / verifyBytes", async () => {
    const key = await generateSigningKey();
    const msg = new TextEncoder().encode("hello");
    const sig = await signBytes(key, msg);
    expect(decodeBase64(sig).length).toBe(64);
    expect(await verifyBytes(key.publicKey, sig, msg)).toBe(true);
    expect(await verifyBytes(key.publicKey, sig, new TextEncoder().encode("hellO"))).toBe(false);
  });
});
