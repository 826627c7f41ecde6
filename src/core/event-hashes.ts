// Content hashes, reference hashes, event IDs (spec: Server-Server API "Calculating the content
// hash for an event", "Calculating the reference hash for an event", "Signing Events"; room
// versions' "Event IDs"; room version 12 for room IDs).
import type { JsonObject, PDU, RoomEvent } from "./types";
import type { RoomVersion } from "./room-versions";
import { signBytes, type SigningKey } from "./signing";
import { canonicalJson, canonicalJsonBytes, canonicalMember, canonicalMembers } from "./canonical-json";
import { decodeBase64, encodeBase64, encodeBase64Url } from "./base64";
import { redactEvent } from "./redaction";

async function sha256(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

function without(obj: object, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = { ...(obj as Record<string, unknown>) };
  for (const k of keys) delete out[k];
  return out;
}

/** SHA-256 over the canonical JSON of the whole event minus `unsigned`, `signatures` and
 *  `hashes`; unpadded standard base64. Throws CanonicalJsonError if the event is not JSON
 *  (or, with `strict`, not strict canonical JSON). */
export async function computeContentHash(pdu: PDU, opts?: { strict?: boolean }): Promise<string> {
  const bytes = canonicalJsonBytes(without(pdu, ["unsigned", "signatures", "hashes"]), opts);
  return encodeBase64(await sha256(bytes));
}

/** Whether `hashes.sha256` matches the content hash (compared after base64 decoding, as the
 *  spec says). Never throws. A mismatch means the event must be stored redacted. */
export async function checkContentHash(pdu: PDU): Promise<boolean> {
  try {
    const claimed = (pdu.hashes as Record<string, unknown> | undefined)?.sha256;
    if (typeof claimed !== "string") return false;
    const expected = decodeBase64(await computeContentHash(pdu));
    const got = decodeBase64(claimed);
    return got.length === expected.length && got.every((b, i) => b === expected[i]);
  } catch {
    return false;
  }
}

/** Raw SHA-256 reference hash: redact per `rv`, drop `signatures` and `unsigned`, canonical
 *  JSON, SHA-256. (Redaction already drops `unsigned` and any top-level `age_ts`.) */
export async function computeReferenceHashBytes(pdu: PDU, rv: RoomVersion): Promise<Uint8Array> {
  const redacted = without(redactEvent(pdu, rv), ["signatures", "unsigned"]);
  return sha256(canonicalJsonBytes(redacted));
}

/** Reference hash as unpadded *standard* base64 (the form used in v1/v2 `prev_events` /
 *  `auth_events` pairs). Event IDs use computeEventId. */
export async function computeReferenceHash(pdu: PDU, rv: RoomVersion): Promise<string> {
  return encodeBase64(await computeReferenceHashBytes(pdu, rv));
}

/** `$` + reference hash (v3: standard base64, v4+: URL-safe); v1/v2: pdu.event_id. */
export async function computeEventId(pdu: PDU, rv: RoomVersion): Promise<string> {
  switch (rv.eventIdFormat) {
    case 1:
      if (typeof pdu.event_id !== "string") throw new Error(`room version ${rv.id} PDU has no event_id`);
      return pdu.event_id;
    case 2:
      return "$" + encodeBase64(await computeReferenceHashBytes(pdu, rv));
    case 3:
      return "$" + encodeBase64Url(await computeReferenceHashBytes(pdu, rv));
  }
}

/** What the checks on receipt of a PDU need (Server-Server API "Checks performed on receipt of
 *  a PDU": size, content hash, signatures; the event ID is the reference hash), from one
 *  canonical JSON pass over the event, whose members its hashed part and its redacted form
 *  share (only a redacted `content` is encoded again), instead of one pass per check:
 *  checking a large room's state computed each event's redacted form twice and its canonical
 *  JSON four times, then the whole event and its redacted form once each. */
export interface PduDigest {
  eventId: string;
  /** UTF-8 bytes of the whole PDU as canonical JSON (the 65,536-byte limit). */
  size: number;
  /** `hashes.sha256` matches the content hash (compared after base64 decoding). */
  contentHashOk: boolean;
  /** Canonical JSON of the redacted PDU without `signatures` and `unsigned`: what the reference
   *  hash hashes and what every signature signs. */
  signed: Uint8Array;
}

const utf8 = new TextEncoder();

/** Bytes of a well-formed string in UTF-8 (a pair of surrogates is one 4-byte character). */
function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 2; // with its low surrogate: 4 bytes for 2 code units
      i++;
    } else n += 2;
  }
  return n;
}

/** PduDigest of a received PDU. Throws CanonicalJsonError when the PDU is not canonical JSON
 *  (strict canonical JSON for room versions that demand it), as its size check would; and an
 *  Error when a room version 1/2 PDU has no event_id. */
export async function digestPdu(pdu: PDU, rv: RoomVersion): Promise<PduDigest> {
  const strict = rv.strictCanonicalJson;
  const src = pdu as Record<string, unknown>;
  // Each top-level member is encoded once; the hashed part, the whole PDU (its size) and the
  // redacted form share them (objects are written sorted, so a subset of the members in the
  // same order is the canonical JSON of the object with only those keys).
  const members = canonicalMembers(pdu, { strict });
  const hashedParts: string[] = [];
  let size = 0;
  let added = 0;
  for (const m of members) {
    if (m.key === "unsigned" || m.key === "signatures" || m.key === "hashes") {
      size += 1 + utf8Length(m.text);
      added++;
    } else hashedParts.push(m.text);
  }
  const hashedBytes = utf8.encode("{" + hashedParts.join(",") + "}");
  size += hashedBytes.length;
  if (added && hashedParts.length === 0) size -= 1; // no comma before the first member
  const claimed = (pdu.hashes as Record<string, unknown> | undefined)?.sha256;
  const contentHash = await sha256(hashedBytes);
  let contentHashOk = false;
  if (typeof claimed === "string") {
    try {
      const got = decodeBase64(claimed);
      contentHashOk = got.length === contentHash.length && got.every((b, i) => b === contentHash[i]);
    } catch {
      /* not base64: a mismatch */
    }
  }
  // Redaction keeps only values the whole PDU has (the same values: `shared`), so those members
  // are the PDU's own; only a redacted `content` is encoded again. Once the PDU passed as
  // (strict) canonical JSON its redacted form does too; the encoding does not depend on
  // strictness.
  const redacted = redactEvent(pdu, rv, { shared: true }) as Record<string, unknown>;
  const signedParts: string[] = [];
  const member = (k: string, text?: string) => signedParts.push(text !== undefined && redacted[k] === src[k] ? text : canonicalMember(k, redacted[k], false));
  // The redacted form's keys are some of the PDU's, and always `content` (written where it
  // sorts: "content" is ASCII, so `<` orders it as code points do).
  let contentDone = false;
  for (const m of members) {
    if (!contentDone && m.key >= "content") {
      contentDone = true;
      member("content", m.key === "content" ? m.text : undefined);
      if (m.key === "content") continue;
    }
    if (m.key !== "signatures" && m.key !== "unsigned" && Object.prototype.hasOwnProperty.call(redacted, m.key)) member(m.key, m.text);
  }
  if (!contentDone) member("content");
  const signed = utf8.encode("{" + signedParts.join(",") + "}");
  let eventId: string;
  if (rv.eventIdFormat === 1) {
    if (typeof pdu.event_id !== "string") throw new Error(`room version ${rv.id} PDU has no event_id`);
    eventId = pdu.event_id;
  } else {
    const ref = await sha256(signed);
    eventId = "$" + (rv.eventIdFormat === 2 ? encodeBase64(ref) : encodeBase64Url(ref));
  }
  return { eventId, size, contentHashOk, signed };
}

/** v12: room ID of a room whose create event has this event ID ("!" + the hash part). */
export function roomIdFromCreateEventId(createEventId: string): string {
  if (!createEventId.startsWith("$") || createEventId.length < 2) {
    throw new Error(`not an event ID: ${createEventId}`);
  }
  return "!" + createEventId.slice(1);
}

function isV12CreateEvent(pdu: object, rv: RoomVersion): boolean {
  const { type, state_key } = pdu as { type?: unknown; state_key?: unknown };
  return rv.roomIdFromCreate && type === "m.room.create" && state_key === "";
}

/** The keys neither the content hash nor a signature covers. */
const UNHASHED_KEYS = ["unsigned", "signatures", "hashes"];

/** Fill `hashes`, then sign the redacted form; returns the finished PDU and its event ID.
 *  (Spec "Adding hashes and signatures to outgoing events".) Existing signatures are kept;
 *  `hashes` is replaced; `unsigned` is kept but covered by neither hash nor signature. */
export async function hashAndSignEvent(
  pdu: Omit<PDU, "hashes" | "signatures"> & Partial<Pick<PDU, "hashes" | "signatures">>,
  rv: RoomVersion,
  serverName: string,
  key: SigningKey,
): Promise<{ pdu: PDU; eventId: string; size: number }> {
  if (isV12CreateEvent(pdu, rv) && "room_id" in pdu) {
    throw new Error("a room version 12 m.room.create event must not have a room_id");
  }
  const full = { ...pdu, signatures: pdu.signatures ?? {} } as PDU;
  // The content hash covers the whole event, so this is where room v6+ strictness bites
  // for keys that redaction would remove (the signature only sees the redacted form).
  const hashed = canonicalJsonBytes(without(full, UNHASHED_KEYS), { strict: rv.strictCanonicalJson });
  full.hashes = { sha256: encodeBase64(await sha256(hashed)) };

  // What is signed (the redacted event without `signatures` and `unsigned`) is also what the
  // reference hash covers: one redaction and one canonical JSON pass serve both.
  // (Only encoded, never changed: the redacted form may share `full`'s values, no copies.)
  const { signatures: _s, unsigned: _u, ...signedPart } = redactEvent(full, rv, { shared: true }) as Record<string, unknown>;
  const bytes = canonicalJsonBytes(signedPart, { strict: rv.strictCanonicalJson });
  const signature = await signBytes(key, bytes);
  const signatures: Record<string, Record<string, string>> = {};
  for (const [name, sigs] of Object.entries(full.signatures ?? {})) signatures[name] = { ...sigs };
  signatures[serverName] = { ...signatures[serverName], [key.keyId]: signature };
  full.signatures = signatures;
  const eventId =
    rv.eventIdFormat === 1 ? await computeEventId(full, rv) : "$" + (rv.eventIdFormat === 2 ? encodeBase64 : encodeBase64Url)(await sha256(bytes));
  // UTF-8 bytes of the finished PDU as canonical JSON (the size limit), without encoding it
  // again: its keys are those hashed plus the unhashed ones, and two key-sorted objects of
  // lengths a and b (neither empty) merge into one of a + b - 1 bytes (their braces, one comma).
  const rest: Record<string, unknown> = {};
  for (const k of UNHASHED_KEYS) if ((full as Record<string, unknown>)[k] !== undefined) rest[k] = (full as Record<string, unknown>)[k];
  const restBytes = utf8.encode(canonicalJson(rest, { strict: rv.strictCanonicalJson })).length;
  const size = hashed.length === 2 ? restBytes : hashed.length + restBytes - 1;
  return { pdu: full, eventId, size };
}

function normaliseRefs(refs: unknown, rv: RoomVersion, field: string): string[] {
  if (!Array.isArray(refs)) throw new Error(`${field} is not an array`);
  return refs.map((r) => {
    // v1/v2: [event_id, {sha256: reference hash}] pairs; v3+: plain event IDs.
    if (rv.eventIdFormat === 1) {
      if (Array.isArray(r) && typeof r[0] === "string") return r[0];
    } else if (typeof r === "string") {
      return r;
    }
    throw new Error(`malformed entry in ${field} for room version ${rv.id}`);
  });
}

/** PDU → RoomEvent (event ID computed, prev/auth events normalised; v12 create gets its room ID).
 *  For a v12 create event `room_id` is always the derived one; whether the PDU wrongly carried
 *  a `room_id` is visible as `pdu.room_id` (auth rule 1.2 must look there).
 *  Throws on structurally malformed PDUs. `knownEventId`: the event ID computeEventId gave for
 *  this PDU (or its redacted form), to save computing it again. */
export async function toRoomEvent(pdu: PDU, rv: RoomVersion, knownEventId?: string): Promise<RoomEvent> {
  // A caller that has just computed the ID passes it (redaction does not change the ID).
  const eventId = knownEventId ?? (await computeEventId(pdu, rv));
  let roomId: string;
  if (isV12CreateEvent(pdu, rv)) {
    roomId = roomIdFromCreateEventId(eventId);
  } else if (typeof pdu.room_id === "string") {
    roomId = pdu.room_id;
  } else {
    throw new Error("PDU has no room_id");
  }
  if (typeof pdu.type !== "string") throw new Error("PDU has no type");
  if (typeof pdu.sender !== "string") throw new Error("PDU has no sender");

  const content: JsonObject =
    typeof pdu.content === "object" && pdu.content !== null && !Array.isArray(pdu.content) ? pdu.content : {};
  const ev: RoomEvent = {
    event_id: eventId,
    room_id: roomId,
    sender: pdu.sender,
    type: pdu.type,
    content,
    origin_server_ts: pdu.origin_server_ts,
    depth: pdu.depth,
    prev_events: normaliseRefs(pdu.prev_events, rv, "prev_events"),
    auth_events: normaliseRefs(pdu.auth_events, rv, "auth_events"),
    pdu,
  };
  if (typeof pdu.state_key === "string") ev.state_key = pdu.state_key;
  if (pdu.type === "m.room.redaction") {
    // v11 moved `redacts` into content (the top-level copy is not protected by redaction).
    const redacts = rv.v11Redaction ? content.redacts : pdu.redacts;
    if (typeof redacts === "string") ev.redacts = redacts;
  }
  return ev;
}
