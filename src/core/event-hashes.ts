// Content hashes, reference hashes, event IDs (spec: Server-Server API "Calculating the content
// hash for an event", "Calculating the reference hash for an event"; room versions' "Event IDs").
// OWNER: core-crypto helper.
import type { PDU, RoomEvent } from "./types";
import type { RoomVersion } from "./room-versions";
import type { SigningKey } from "./signing";
export async function computeContentHash(pdu: PDU): Promise<string> { throw new Error("not implemented"); }
export async function checkContentHash(pdu: PDU): Promise<boolean> { throw new Error("not implemented"); }
export async function computeReferenceHash(pdu: PDU, rv: RoomVersion): Promise<string> { throw new Error("not implemented"); }
/** `$` + reference hash (v3: standard base64, v4+: URL-safe); v1/v2: pdu.event_id. */
export async function computeEventId(pdu: PDU, rv: RoomVersion): Promise<string> { throw new Error("not implemented"); }
/** v12: room ID of a room whose create event has this event ID ("!" + the hash part). */
export function roomIdFromCreateEventId(createEventId: string): string { throw new Error("not implemented"); }
/** Fill `hashes`, then sign the redacted form; returns the finished PDU and its event ID. */
export async function hashAndSignEvent(pdu: Omit<PDU, "hashes" | "signatures"> & Partial<Pick<PDU, "hashes" | "signatures">>, rv: RoomVersion, serverName: string, key: SigningKey): Promise<{ pdu: PDU; eventId: string }> { throw new Error("not implemented"); }
/** PDU → RoomEvent (event ID computed, prev/auth events normalised; v12 create gets its room ID). */
export async function toRoomEvent(pdu: PDU, rv: RoomVersion): Promise<RoomEvent> { throw new Error("not implemented"); }
