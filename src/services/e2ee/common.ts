// Shared by the E2EE modules: the JSON shape of keys and what a signature covers.
import { canonicalJson } from "../../core/canonical-json";

export type Json = Record<string, unknown>;
export type Signatures = Record<string, Record<string, string>>;

export const same = (a: unknown, b: unknown) => canonicalJson(a) === canonicalJson(b);

/** The object without `signatures` and `unsigned`: what a signature covers. */
export function signedContent(obj: Json): Json {
  const { signatures: _s, unsigned: _u, ...rest } = obj;
  return rest;
}

export function mergeSignatures(obj: Json, extra: { signerUserId: string; signerKeyId: string; signature: string }[]): Json {
  if (extra.length === 0) return obj;
  const sigs: Signatures = {};
  for (const [u, s] of Object.entries((obj.signatures as Signatures | undefined) ?? {})) sigs[u] = { ...s };
  for (const e of extra) (sigs[e.signerUserId] ??= {})[e.signerKeyId] = e.signature;
  return { ...obj, signatures: sigs };
}
