// Unpadded base64 (spec: Appendices, "Unpadded Base64" and "URL-safe unpadded Base64").
// RFC 4648 base64 without "=" padding; the URL-safe variant uses "-" and "_" for 62 and 63.

const STD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Character code → 6-bit value; both alphabets decode (-1 = not a base64 character).
const DECODE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) {
  DECODE[STD.charCodeAt(i)] = i;
  DECODE[URL.charCodeAt(i)] = i;
}

function encode(bytes: Uint8Array, alphabet: string): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += alphabet[n >> 18] + alphabet[(n >> 12) & 63] + alphabet[(n >> 6) & 63] + alphabet[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += alphabet[n >> 18] + alphabet[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += alphabet[n >> 18] + alphabet[(n >> 12) & 63] + alphabet[(n >> 6) & 63];
  }
  return out;
}

/** Standard alphabet, no padding. */
export function encodeBase64(bytes: Uint8Array): string {
  return encode(bytes, STD);
}

/** URL-safe alphabet ("-", "_"), no padding. */
export function encodeBase64Url(bytes: Uint8Array): string {
  return encode(bytes, URL);
}

/** Accepts padded or unpadded, standard or URL-safe. Throws on invalid input.
 *  Non-zero trailing bits in the last character are tolerated (the spec's own test-vector
 *  seed "…XA1" has them), as RFC 4648 decoders commonly do. Whitespace is not accepted. */
export function decodeBase64(s: string): Uint8Array {
  // Padding is optional, but if present it must be exactly what RFC 4648 would write.
  let body = s;
  const pad = s.length - s.replace(/=+$/, "").length;
  if (pad > 0) {
    if (pad > 2 || s.length % 4 !== 0) throw new Error("invalid base64 padding");
    body = s.slice(0, s.length - pad);
  }
  if (body.length % 4 === 1) throw new Error("invalid base64 length");

  const out = new Uint8Array(Math.floor((body.length * 3) / 4));
  let bits = 0;
  let nbits = 0;
  let j = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    const v = c < 128 ? DECODE[c] : -1;
    if (v < 0) throw new Error("invalid base64 character");
    bits = ((bits << 6) | v) & 0xffffff;
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out[j++] = (bits >> nbits) & 0xff;
    }
  }
  return out;
}
