// Steps 1–2 of the room's admit pipeline (room/writer.ts, the write door): format and size,
// event ID, duplicates, content hash, signatures, room and server ACL, and parsing the PDU into
// a RoomEvent of this room. No writes: the writer runs these before its transaction, and a
// batch (RoomWriter.admitOutlierBatch) checks every PDU before storing any.
import type { PDU, RoomEvent } from "../../src/core/types";
import { type RoomVersion } from "../../src/core/room-versions";
import { canonicalJson } from "../../src/core/canonical-json";
import { checkContentHash, computeEventId, toRoomEvent, type PduDigest } from "../../src/core/event-hashes";
import { verifyJsonSignature, verifySignedBytes } from "../../src/core/signing";
import { redactEvent } from "../../src/core/redaction";
import { isServerAllowedByAcl } from "../../src/core/server-acl";
import { domainOf } from "../../src/core/ids";
import type { AdmitMode, AdmitOutcome } from "../../src/rpc/room";
import { MAX_PDU_BYTES, MAX_ID_BYTES, utf8, ACL_KEY, isOutlier, RoomHead } from "./core";
import type { EventStore } from "./events";
import type { RoomKeys } from "./keys";
import type { StateStore } from "./state";

/** What PduChecks needs from the rest of the room (the writer passes its own access). */
export interface PduChecksAccess {
  head: RoomHead;
  keys: Pick<RoomKeys, "verifyKey">;
  events: Pick<EventStore, "loadEvent">;
  state: Pick<StateStore, "groupState">;
}

export class PduChecks {
  constructor(private readonly r: PduChecksAccess) {}

  /** Steps 1–2 of admit and parsing: format, size, event ID, duplicates, content hash,
   *  signatures, room and server ACL. No writes: a batch can check every PDU before storing.
   *  `given`: what the caller already knows of this PDU — its event ID, that this room has just
   *  hashed and signed it (`signedHere`), its digest (one encoding for the size, content hash
   *  and signatures) and parsed form `ev`, that it is not stored (`unknown`: a batch asked for
   *  all its events at once). */
  async checkPdu(
    pdu: PDU,
    origin: string,
    opts: AdmitMode,
    given: { eventId?: string; signedHere?: boolean; digest?: PduDigest; ev?: RoomEvent; unknown?: boolean } = {},
  ): Promise<{ ev: RoomEvent } | AdmitOutcome> {
    const rv = this.r.head.requireRoom();
    const { digest } = given;
    // 1. Format and size (spec: "Size limits": 65536 bytes of canonical JSON, IDs <= 255 bytes).
    if (digest) {
      if (digest.size > MAX_PDU_BYTES) return { status: "invalid", reason: "M_TOO_LARGE" };
    } else {
      let encoded: string;
      try {
        encoded = canonicalJson(pdu, { strict: rv.strictCanonicalJson });
      } catch (e) {
        return { status: "invalid", reason: `not canonical JSON: ${(e as Error).message}` };
      }
      if (utf8.encode(encoded).length > MAX_PDU_BYTES) return { status: "invalid", reason: "M_TOO_LARGE" };
    }
    for (const f of ["sender", "room_id", "type", "state_key", "event_id"] as const) {
      const v = pdu[f];
      // (A UTF-16 code unit is at most 3 UTF-8 bytes: a short string needs no encoding.)
      if (v !== undefined && (typeof v !== "string" || (v.length * 3 > MAX_ID_BYTES && utf8.encode(v).length > MAX_ID_BYTES))) {
        return { status: "invalid", reason: `${f} is malformed or longer than 255 bytes` };
      }
    }
    if (typeof pdu.content !== "object" || pdu.content === null || Array.isArray(pdu.content)) {
      return { status: "invalid", reason: "content must be an object" };
    }
    let eventId: string;
    try {
      // (A batch passes the ID it computed from this PDU when parsing it.)
      eventId = given.eventId ?? digest?.eventId ?? (await computeEventId(pdu, rv));
    } catch (e) {
      return { status: "invalid", reason: (e as Error).message };
    }
    const known = given.unknown ? undefined : this.r.events.loadEvent(eventId);
    // An outlier (state or auth chain from another server) may later arrive as part of the
    // timeline: then it is admitted again, this time with a place in the DAG.
    if (known && (opts.outlier || !isOutlier(known))) return { status: "duplicate", eventId };

    // 2. Hashes and signatures (server-server API "Checks performed on receipt of a PDU"). An
    // event this room has just hashed and signed with the server's key (LocalEvents.admitRun)
    // has both by construction: checking them again cost two canonical JSON passes, a SHA-256
    // and an Ed25519 verification per local send.
    if (given.signedHere) return this.parsed(pdu, rv, eventId);
    let hashOk: boolean;
    if (digest) hashOk = digest.contentHashOk;
    else hashOk = await checkContentHash(pdu);
    if (!hashOk) {
      if (opts.local) return { status: "invalid", eventId, reason: "content hash mismatch" };
      pdu = redactEvent(pdu, rv); // "the event is redacted and processed as usual"
    }
    // (The redacted form signs the same bytes: digest.signed serves both.)
    // (State and auth chains from another server: it is asked for keys we cannot get; keys.ts.)
    const sigError = await this.checkSignatures(pdu, rv, digest?.signed, opts.outlier ? origin : undefined);
    if (sigError) return { status: "invalid", eventId, reason: sigError };

    // (The caller's parse of this very PDU, when it was not redacted above.)
    const reuse = hashOk && given.ev?.event_id === eventId && given.ev.pdu === pdu && given.ev.room_id === this.r.head.roomId;
    const parsed = reuse ? { ev: given.ev! } : await this.parsed(pdu, rv, eventId);
    if (!("ev" in parsed)) return parsed;
    const { ev } = parsed;
    // Server ACLs (Server-Server API "Server Access Control Lists"): PDUs from a denied origin
    // are dropped, whatever path they came by.
    if (!opts.local && origin !== this.r.head.serverName) {
      const aclId = this.r.head.currentGroup === null ? undefined : this.r.state.groupState(this.r.head.currentGroup).get(ACL_KEY);
      const acl = aclId ? this.r.events.loadEvent(aclId)?.ev.content : undefined;
      if (!isServerAllowedByAcl(acl ?? null, origin)) return { status: "invalid", eventId, reason: "origin is denied by the room's server ACL" };
    }
    return { ev };
  }

  /** The PDU as a RoomEvent of this room, or why not. */
  private async parsed(pdu: PDU, rv: RoomVersion, eventId: string): Promise<{ ev: RoomEvent } | AdmitOutcome> {
    let ev: RoomEvent;
    try {
      ev = await toRoomEvent(pdu, rv, eventId);
    } catch (e) {
      return { status: "invalid", eventId, reason: (e as Error).message };
    }
    if (ev.room_id !== this.r.head.roomId) return { status: "invalid", eventId, reason: "event is for another room" };
    return { ev };
  }

  /** `signed`: the PDU's PduDigest.signed, when the caller has it (the bytes every signature
   *  signs), instead of encoding the redacted PDU here. */
  async checkSignatures(pdu: PDU, rv: RoomVersion, signed?: Uint8Array, sentBy?: string): Promise<string | undefined> {
    const servers = new Set<string>([domainOf(pdu.sender)]);
    if (rv.eventIdFormat === 1 && typeof pdu.event_id === "string") servers.add(domainOf(pdu.event_id));
    const via = (pdu.content as { join_authorised_via_users_server?: unknown }).join_authorised_via_users_server;
    if (rv.restrictedJoins && pdu.type === "m.room.member" && typeof via === "string" && pdu.content.membership === "join") {
      servers.add(domainOf(via));
    }
    const redacted = signed ? pdu : redactEvent(pdu, rv);
    for (const server of servers) {
      const sigs = pdu.signatures?.[server];
      let ok = false;
      if (sigs && typeof sigs === "object") {
        for (const keyId of Object.keys(sigs)) {
          const pub = await this.r.keys.verifyKey(server, keyId, rv.enforceKeyValidity ? pdu.origin_server_ts : undefined, sentBy);
          if (pub && (await (signed ? verifySignedBytes(pdu, server, keyId, pub, signed) : verifyJsonSignature(redacted, server, keyId, pub, { strict: rv.strictCanonicalJson })))) {
            ok = true;
            break;
          }
        }
      }
      if (!ok) return `no valid signature from ${server}`;
    }
    return undefined;
  }
}
