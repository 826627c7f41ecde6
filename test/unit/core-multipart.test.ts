// multipart/mixed for federation media (src/core/multipart.ts).
import { describe, it, expect } from "vitest";
import {
  dispositionFilename,
  multipartEnvelope,
  parseContentType,
  parseFederationMedia,
  parseMultipart,
  MultipartError,
} from "../../src/core/multipart";

const enc = new TextEncoder();
const dec = new TextDecoder();
const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

describe("multipartEnvelope", () => {
  it("round-trips binary bytes through parseFederationMedia", () => {
    const bytes = new Uint8Array(1000).map((_, i) => (i * 31) & 0xff);
    // Bytes that look like line breaks and dashes must survive.
    bytes.set(enc.encode("\r\n--\r\n\n--"), 100);
    const env = multipartEnvelope("abc123", {}, { "Content-Type": "image/png", "Content-Disposition": `inline; filename="a b.png"` });
    expect(env.contentType).toBe("multipart/mixed; boundary=abc123");
    const whole = concat(env.head, bytes, env.tail);
    const r = parseFederationMedia(env.contentType, whole);
    expect(r.kind).toBe("bytes");
    if (r.kind !== "bytes") return;
    expect(r.metadata).toEqual({});
    expect(r.contentType).toBe("image/png");
    expect(r.filename).toBe("a b.png");
    expect(Array.from(r.body)).toEqual(Array.from(bytes));
  });

  it("keeps empty content empty", () => {
    const env = multipartEnvelope("b", {}, { "Content-Type": "text/plain" });
    const r = parseFederationMedia(env.contentType, concat(env.head, env.tail));
    expect(r.kind === "bytes" && r.body.length).toBe(0);
  });

  it("refuses header injection and bad boundaries", () => {
    expect(() => multipartEnvelope("b", {}, { "Content-Type": "a\r\nX: y" })).toThrow();
    expect(() => multipartEnvelope("", {}, {})).toThrow();
    expect(() => multipartEnvelope("x".repeat(71), {}, {})).toThrow();
  });
});

describe("parseMultipart", () => {
  it("accepts the spec's example shape with a Location part", () => {
    const text =
      "--gc0p4Jq0M2Yt08jU534c0p\r\nContent-Type: application/json\r\n\r\n{}\r\n" +
      "--gc0p4Jq0M2Yt08jU534c0p\r\nLocation: https://cdn.example.org/ab/c/def\r\n\r\n\r\n--gc0p4Jq0M2Yt08jU534c0p--";
    const r = parseFederationMedia('multipart/mixed; boundary="gc0p4Jq0M2Yt08jU534c0p"', enc.encode(text));
    expect(r).toEqual({ kind: "location", metadata: {}, location: "https://cdn.example.org/ab/c/def" });
  });

  it("tolerates preamble, epilogue, padding, LF line breaks and folded headers", () => {
    const text =
      "This is a preamble.\n--xyz  \nContent-Type: application/json\n\n{\"a\":1}\n" +
      "--xyz\t\ncontent-type: text/plain;\n charset=utf-8\n\nhello\n--xyz--\nepilogue";
    const parts = parseMultipart("Multipart/Mixed; charset=x; boundary=xyz", enc.encode(text));
    expect(parts).toHaveLength(2);
    expect(dec.decode(parts[0].body)).toBe('{"a":1}');
    expect(parts[1].headers["content-type"]).toBe("text/plain; charset=utf-8");
    expect(dec.decode(parts[1].body)).toBe("hello");
  });

  it("rejects truncated answers, wrong types, missing boundaries and extra parts", () => {
    const env = multipartEnvelope("q", {}, { "Content-Type": "image/png" });
    const whole = concat(env.head, enc.encode("data"), env.tail);
    expect(() => parseMultipart(env.contentType, whole.subarray(0, whole.length - 8))).toThrow(MultipartError);
    expect(() => parseMultipart("application/json", whole)).toThrow(/not a multipart/);
    expect(() => parseMultipart("multipart/mixed", whole)).toThrow(/boundary/);
    expect(() => parseMultipart("multipart/mixed; boundary=other", whole)).toThrow(/opening boundary/);
    const three = "--q\r\n\r\n{}\r\n--q\r\n\r\na\r\n--q\r\n\r\nb\r\n--q--";
    expect(() => parseFederationMedia("multipart/mixed; boundary=q", enc.encode(three))).toThrow(/too many parts/);
    const one = "--q\r\nContent-Type: application/json\r\n\r\n{}\r\n--q--";
    expect(() => parseFederationMedia("multipart/mixed; boundary=q", enc.encode(one))).toThrow(/two parts/);
    const notJson = "--q\r\nContent-Type: text/plain\r\n\r\n{}\r\n--q\r\n\r\nx\r\n--q--";
    expect(() => parseFederationMedia("multipart/mixed; boundary=q", enc.encode(notJson))).toThrow(/application\/json/);
    const badJson = "--q\r\nContent-Type: application/json\r\n\r\n{\r\n--q\r\n\r\nx\r\n--q--";
    expect(() => parseFederationMedia("multipart/mixed; boundary=q", enc.encode(badJson))).toThrow(/not JSON/);
    const badHeader = "--q\r\nContent-Type: application/json\r\n\r\n{}\r\n--q\r\nno colon here\r\n\r\nx\r\n--q--";
    expect(() => parseFederationMedia("multipart/mixed; boundary=q", enc.encode(badHeader))).toThrow(/malformed part header/);
  });
});

describe("header helpers", () => {
  it("parses content types with quoted parameters", () => {
    expect(parseContentType('multipart/mixed; boundary="a \\"b\\" c"; x=y')).toEqual({ essence: "multipart/mixed", params: { boundary: 'a "b" c', x: "y" } });
    expect(parseContentType("IMAGE/PNG")).toEqual({ essence: "image/png", params: {} });
  });

  it("prefers filename* (RFC 8187) over filename", () => {
    expect(dispositionFilename(`attachment; filename="fallback.txt"; filename*=utf-8''na%C3%AFve%20file.txt`)).toBe("naïve file.txt");
    expect(dispositionFilename(`inline; filename="plain.png"`)).toBe("plain.png");
    expect(dispositionFilename(`inline; filename=bare.png`)).toBe("bare.png");
    expect(dispositionFilename(`inline; filename*=iso-8859-1''x.png; filename="y.png"`)).toBe("y.png");
    expect(dispositionFilename(`inline`)).toBeUndefined();
    expect(dispositionFilename(undefined)).toBeUndefined();
  });
});
