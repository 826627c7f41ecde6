import { describe, it, expect } from "vitest";
import {
  formatXMatrix,
  parseXMatrix,
  requestJson,
  signRequest,
  verifyRequest,
  XMatrixParseError,
} from "../../src/core/x-matrix";
import { generateSigningKey, signingKeyFromSeed, signJson } from "../../src/core/signing";

describe("parseXMatrix", () => {
  it("parses the spec's example", () => {
    const h = 'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"';
    expect(parseXMatrix(h)).toEqual({
      origin: "origin.hs.example.com",
      destination: "destination.hs.example.com",
      key: "ed25519:key1",
      sig: "ABCDEF",
    });
  });

  it("accepts unquoted values (tokens, colons, base64), any order, case-insensitive names and scheme", () => {
    const h = "x-matrix   KEY=ed25519:key1 , Sig=AB+/cd\t,origin=example.org:8448,destination=localhost:1234";
    expect(parseXMatrix(h)).toEqual({ origin: "example.org:8448", destination: "localhost:1234", key: "ed25519:key1", sig: "AB+/cd" });
  });

  it("unescapes quoted-pairs and ignores unknown parameters", () => {
    const h = 'X-Matrix origin="ex\\ample.org",key="ed25519:a\\_b",sig="abc",foo="a \\"quoted\\" ,value",bar=baz';
    expect(parseXMatrix(h)).toEqual({ origin: "example.org", key: "ed25519:a_b", sig: "abc" });
  });

  it("accepts a missing destination (pre-v1.3 senders)", () => {
    expect(parseXMatrix('X-Matrix origin=a.example,key="ed25519:k",sig="s"').destination).toBeUndefined();
  });

  it("formats the spec's way and round-trips", () => {
    const p = { origin: "a.example", destination: "b.example:8448", key: "ed25519:k1", sig: "Zm9v+/" };
    const h = formatXMatrix(p);
    expect(h).toBe('X-Matrix origin="a.example",destination="b.example:8448",key="ed25519:k1",sig="Zm9v+/"');
    expect(parseXMatrix(h)).toEqual(p);
  });

  const malformed: [string, string][] = [
    ["empty", ""],
    ["other scheme", 'Bearer origin="a",key="ed25519:k",sig="s"'],
    ["scheme without space", 'X-Matrixorigin="a",key="ed25519:k",sig="s"'],
    ["no params", "X-Matrix "],
    ["missing origin", 'X-Matrix key="ed25519:k",sig="s"'],
    ["missing key", 'X-Matrix origin="a.example",sig="s"'],
    ["missing sig", 'X-Matrix origin="a.example",key="ed25519:k"'],
    ["duplicate origin (smuggling)", 'X-Matrix origin="a.example",origin="evil.example",key="ed25519:k",sig="s"'],
    ["duplicate, different case", 'X-Matrix origin="a.example",ORIGIN="evil.example",key="ed25519:k",sig="s"'],
    ["unterminated quote", 'X-Matrix origin="a.example,key="ed25519:k",sig="s'],
    ["trailing backslash", 'X-Matrix origin="a.example",key="ed25519:k",sig="s\\'],
    ["missing =", 'X-Matrix origin "a.example",key="ed25519:k",sig="s"'],
    ["empty value", 'X-Matrix origin=,key="ed25519:k",sig="s"'],
    ["junk between params", 'X-Matrix origin="a.example" key="ed25519:k",sig="s"'],
    ["invalid origin", 'X-Matrix origin="a example",key="ed25519:k",sig="s"'],
    ["origin with path", 'X-Matrix origin="a.example/x",key="ed25519:k",sig="s"'],
    ["invalid destination", 'X-Matrix origin="a.example",destination="",key="ed25519:k",sig="s"'],
    ["key without algorithm", 'X-Matrix origin="a.example",key="k",sig="s"'],
    ["sig not base64", 'X-Matrix origin="a.example",key="ed25519:k",sig="s!s"'],
    ["control char in quotes", 'X-Matrix origin="a.exa\u0001mple",key="ed25519:k",sig="s"'],
    ["newline injection", 'X-Matrix origin="a.example"\r\n,key="ed25519:k",sig="s"'],
    ["too long", `X-Matrix origin="a.example",key="ed25519:k",sig="${"A".repeat(9000)}"`],
  ];
  for (const [name, h] of malformed) {
    it(`rejects: ${name}`, () => {
      expect(() => parseXMatrix(h)).toThrow(XMatrixParseError);
    });
  }
});

describe("signRequest / verifyRequest", () => {
  const base = { method: "PUT", uri: "/_matrix/federation/v1/send/txn1?x=1", origin: "a.example", destination: "b.example" };
  const content = { pdus: [], edus: [{ edu_type: "m.typing", content: { x: 1 } }] };

  it("signs what the spec's python example signs", async () => {
    const key = await signingKeyFromSeed("ed25519:1", "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1");
    const header = await signRequest(key, { ...base, content });
    const expected = await signJson({ method: "PUT", uri: base.uri, origin: "a.example", destination: "b.example", content }, "a.example", key);
    expect(parseXMatrix(header)).toEqual({ origin: "a.example", destination: "b.example", key: "ed25519:1", sig: expected.signatures["a.example"]["ed25519:1"] });
  });

  it("omits content for bodiless requests", () => {
    expect(requestJson({ method: "get", uri: "/x", origin: "a", destination: "b" })).toEqual({ method: "GET", uri: "/x", origin: "a", destination: "b" });
  });

  it("verifies a genuine request and refuses tampered ones", async () => {
    const key = await generateSigningKey();
    const auth = parseXMatrix(await signRequest(key, { ...base, content }));
    const recv = { method: "PUT", uri: base.uri, content };
    expect(await verifyRequest(auth, recv, "b.example", key.publicKey)).toBe(true);
    // Tampered method, URI, body, origin, destination, signature; wrong public key. (The key ID
    // is not signed: what matters is that the verifier looks the public key up by it.)
    expect(await verifyRequest(auth, { ...recv, method: "POST" }, "b.example", key.publicKey)).toBe(false);
    expect(await verifyRequest(auth, { ...recv, uri: "/_matrix/federation/v1/send/txn2?x=1" }, "b.example", key.publicKey)).toBe(false);
    expect(await verifyRequest(auth, { ...recv, uri: "/_matrix/federation/v1/send/txn1" }, "b.example", key.publicKey)).toBe(false);
    expect(await verifyRequest(auth, { ...recv, content: { ...content, pdus: [{}] } }, "b.example", key.publicKey)).toBe(false);
    expect(await verifyRequest(auth, { method: "PUT", uri: base.uri }, "b.example", key.publicKey)).toBe(false);
    expect(await verifyRequest({ ...auth, origin: "evil.example" }, recv, "b.example", key.publicKey)).toBe(false);
    expect(await verifyRequest({ ...auth, destination: "c.example" }, recv, "c.example", key.publicKey)).toBe(false);
    // Change one character that carries signature bits (replacing the tail with a fixed "AA"
    // left the signature unchanged whenever it already ended that way: 1 run in 256).
    const flipped = auth.sig.slice(0, 10) + (auth.sig[10] === "A" ? "B" : "A") + auth.sig.slice(11);
    expect(await verifyRequest({ ...auth, sig: flipped }, recv, "b.example", key.publicKey)).toBe(false);
    expect(await verifyRequest({ ...auth, sig: "garbage" }, recv, "b.example", key.publicKey)).toBe(false);
    const other = await generateSigningKey();
    expect(await verifyRequest(auth, recv, "b.example", other.publicKey)).toBe(false);
  });

  it("a header without destination is checked against the receiver's name", async () => {
    const key = await generateSigningKey();
    const { destination: _d, ...auth } = parseXMatrix(await signRequest(key, { ...base, method: "GET", uri: "/_matrix/federation/v1/version" }));
    const recv = { method: "GET", uri: "/_matrix/federation/v1/version" };
    expect(await verifyRequest(auth, recv, "b.example", key.publicKey)).toBe(true);
    expect(await verifyRequest(auth, recv, "c.example", key.publicKey)).toBe(false);
  });
});
