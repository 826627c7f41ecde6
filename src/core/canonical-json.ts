// Canonical JSON (spec: Appendices, "Canonical JSON"). OWNER: core-crypto helper.
export class CanonicalJsonError extends Error {}
/** Encode `value` as canonical JSON. `strict` (room v6+ and everything non-room) rejects
 *  floats and integers outside [-(2^53)+1, 2^53-1]. Throws CanonicalJsonError. */
export function canonicalJson(value: unknown, opts?: { strict?: boolean }): string {
  throw new Error("not implemented");
}
