// PKCE (RFC 7636) with the S256 method only: the spec requires S256, and RFC 9700 §2.1.1 says
// servers should not accept "plain".
import { encodeBase64Url } from "../base64";

/** RFC 7636 §4.1: code_verifier = 43*128 unreserved characters. */
const VERIFIER = /^[A-Za-z0-9\-._~]{43,128}$/;
/** A base64url SHA-256 digest without padding: 43 characters. */
const CHALLENGE = /^[A-Za-z0-9\-_]{43}$/;

export function isValidCodeChallenge(challenge: string): boolean {
  return CHALLENGE.test(challenge);
}

/** BASE64URL(SHA256(ASCII(code_verifier))) (RFC 7636 §4.2). */
export async function s256Challenge(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return encodeBase64Url(new Uint8Array(digest));
}

/** Whether `verifier` is well-formed and hashes to `challenge` (RFC 7636 §4.6). */
export async function verifyPkce(verifier: string, challenge: string): Promise<boolean> {
  if (!VERIFIER.test(verifier)) return false;
  const computed = await s256Challenge(verifier);
  // Both are public-length strings; compare without early exit anyway.
  if (computed.length !== challenge.length) return false;
  let diff = 0;
  for (let i = 0; i < computed.length; i++) diff |= computed.charCodeAt(i) ^ challenge.charCodeAt(i);
  return diff === 0;
}
