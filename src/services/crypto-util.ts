// Small Web Crypto helpers: random tokens, SHA-256, constant-time comparison.
import { encodeBase64Url } from "../core/base64";

export function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** 256-bit random token, URL-safe, with a recognisable prefix (helps secret scanners). */
export function randomToken(prefix: string): string {
  return `${prefix}_${encodeBase64Url(randomBytes(32))}`;
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
export function randomString(n: number, alphabet = ALNUM): string {
  const bytes = randomBytes(n);
  let s = "";
  // 256 % 62 bias is negligible for IDs; tokens use randomToken.
  for (const b of bytes) s += alphabet[b % alphabet.length];
  return s;
}

export async function sha256Hex(s: string): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export function timingSafeEqualStrings(a: string, b: string): boolean {
  const enc = new TextEncoder();
  return timingSafeEqual(enc.encode(a), enc.encode(b));
}
