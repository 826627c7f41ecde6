// Password hashing: PBKDF2-HMAC-SHA-512 with Web Crypto.
// Workers cap PBKDF2 at 100,000 iterations (workerd rejects more), so we use exactly that with
// SHA-512 (stronger per iteration than SHA-256 against GPU attackers). Measured in
// docs/benchmarks.md. The format carries its parameters so they can be raised later.
import { decodeBase64, encodeBase64 } from "../core/base64";
import { randomBytes, timingSafeEqual } from "./crypto-util";

export const PBKDF2_ITERATIONS = 100_000;
const HASH = "SHA-512";

async function derive(password: string, salt: Uint8Array, iterations: number, hash: string): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(password), "PBKDF2", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits({ name: "PBKDF2", salt, iterations, hash }, key, 512);
  return new Uint8Array(bits);
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const dk = await derive(password, salt, PBKDF2_ITERATIONS, HASH);
  return `pbkdf2-sha512$${PBKDF2_ITERATIONS}$${encodeBase64(salt)}$${encodeBase64(dk)}`;
}

export async function verifyPassword(password: string, stored: string | null): Promise<boolean> {
  if (!stored) return false;
  const [scheme, iter, salt, hash] = stored.split("$");
  if (scheme !== "pbkdf2-sha512" || !iter || !salt || !hash) return false;
  const dk = await derive(password, decodeBase64(salt), Number(iter), HASH);
  return timingSafeEqual(dk, decodeBase64(hash));
}
