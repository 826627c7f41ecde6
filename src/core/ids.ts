// Identifier grammar (spec: Appendices, "Identifier Grammar"). OWNER: core-crypto helper.
export interface ServerName { host: string; port?: number }
export function parseServerName(s: string): ServerName | null { throw new Error("not implemented"); }
export function isValidServerName(s: string): boolean { throw new Error("not implemented"); }
/** Localpart for *new* users: [a-z0-9._=\-/+]+ . */
export function isValidLocalpart(localpart: string): boolean { throw new Error("not implemented"); }
/** Full user ID; `historical` accepts the wider historical grammar for remote users. Max 255 bytes. */
export function parseUserId(id: string, opts?: { historical?: boolean }): { localpart: string; serverName: string } | null { throw new Error("not implemented"); }
export function isValidUserId(id: string, opts?: { historical?: boolean }): boolean { throw new Error("not implemented"); }
export function isValidRoomId(id: string): boolean { throw new Error("not implemented"); }
export function isValidRoomAlias(alias: string): boolean { throw new Error("not implemented"); }
export function isValidEventId(id: string): boolean { throw new Error("not implemented"); }
