// Unpadded base64 (spec: Appendices, "Unpadded Base64"). OWNER: core-crypto helper.
export function encodeBase64(bytes: Uint8Array): string { throw new Error("not implemented"); }
export function encodeBase64Url(bytes: Uint8Array): string { throw new Error("not implemented"); }
/** Accepts padded or unpadded, standard or URL-safe. Throws on invalid input. */
export function decodeBase64(s: string): Uint8Array { throw new Error("not implemented"); }
