// Redaction algorithm per room version (spec: Client-Server "Redactions"; the "Redactions"
// section of each room version page: v1–v5 fragment "v1-redactions", v6/v7 "v6-redactions",
// v8 its own list, v9/v10 "v9-redactions", v11/v12 "v11-redactions").
//
// `unsigned` is removed like every other key not in the list: the spec's list does not
// include it, and signatures and reference hashes are computed without it anyway. A server
// serving a redacted event to clients adds `unsigned.redacted_because` itself afterwards.
import type { JsonObject, JsonValue, PDU } from "./types";
import { type RoomVersion, versionAtLeast } from "./room-versions";

// Top-level keys kept by every room version.
const KEPT_TOP_LEVEL = [
  "event_id",
  "type",
  "room_id",
  "sender",
  "state_key",
  "content",
  "hashes",
  "signatures",
  "depth",
  "prev_events",
  "auth_events",
  "origin_server_ts",
];
// Kept only before v11 ("The top-level origin, membership, and prev_state properties are no
// longer protected from redaction").
const KEPT_TOP_LEVEL_BEFORE_V11 = ["prev_state", "origin", "membership"];

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The content keys kept for `type` in room version `rv`; "all" keeps the whole content. */
function keptContentKeys(type: string, rv: RoomVersion): string[] | "all" {
  const v11 = rv.v11Redaction;
  switch (type) {
    case "m.room.member":
      // v9 added join_authorised_via_users_server (v8 forgot it, hence v8's warning).
      // v11's partial `third_party_invite` is handled in redactContent.
      return versionAtLeast(rv, 9) ? ["membership", "join_authorised_via_users_server"] : ["membership"];
    case "m.room.create":
      return v11 ? "all" : ["creator"];
    case "m.room.join_rules":
      return rv.restrictedJoins ? ["join_rule", "allow"] : ["join_rule"];
    case "m.room.power_levels": {
      const keys = ["ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"];
      if (v11) keys.push("invite");
      return keys;
    }
    case "m.room.history_visibility":
      return ["history_visibility"];
    case "m.room.aliases":
      return rv.specialCaseAliases ? ["aliases"] : [];
    case "m.room.redaction":
      return v11 ? ["redacts"] : [];
    default:
      return [];
  }
}

function redactContent(type: string, content: JsonObject, rv: RoomVersion, copy: <V>(v: V) => V): JsonObject {
  const kept = keptContentKeys(type, rv);
  if (kept === "all") return copy(content);
  const out: JsonObject = {};
  for (const k of kept) {
    if (Object.prototype.hasOwnProperty.call(content, k)) out[k] = copy(content[k]);
  }
  // v11: m.room.member "allows the `signed` key of the `third_party_invite` key" — the
  // third_party_invite object survives holding only `signed` (dropped if it has none).
  if (type === "m.room.member" && rv.v11Redaction) {
    const tpi = content.third_party_invite;
    if (isObject(tpi) && Object.prototype.hasOwnProperty.call(tpi, "signed")) {
      out.third_party_invite = { signed: copy(tpi.signed as JsonValue) };
    }
  }
  return out;
}

/** Returns a new, redacted copy of `pdu` (the input is not modified). A missing or
 *  non-object `content` becomes `{}`. `shared`: the kept values are the input's own (not
 *  copied), for a caller that only reads the result (hashing, checking a signature): copying
 *  every kept value of every event was a share of checking a large room's state. */
export function redactEvent<T extends PDU>(pdu: T, rv: RoomVersion, opts?: { shared?: boolean }): T {
  const keep = rv.v11Redaction ? KEPT_TOP_LEVEL : [...KEPT_TOP_LEVEL, ...KEPT_TOP_LEVEL_BEFORE_V11];
  const copy = opts?.shared ? <V>(v: V): V => v : structuredClone;
  const src = pdu as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of keep) {
    if (k === "content") continue;
    if (Object.prototype.hasOwnProperty.call(src, k)) out[k] = copy(src[k]);
  }
  const content = isObject(src.content) ? src.content : {};
  out.content = redactContent(String(src.type), content, rv, copy);
  return out as T;
}
