// Redaction algorithm per room version (spec: Client-Server "Redactions" + room version pages).
// OWNER: core-crypto helper.
import type { PDU } from "./types";
import type { RoomVersion } from "./room-versions";
export function redactEvent<T extends PDU>(pdu: T, rv: RoomVersion): T { throw new Error("not implemented"); }
