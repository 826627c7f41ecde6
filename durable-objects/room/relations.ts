// Relations read by the RoomDO besides GET /relations (conversation-reads.ts getRelations): the aggregations
// bundled into events clients receive (`unsigned.m.relations`, spec "Aggregations of child
// events"), the thread list (GET /v1/rooms/{roomId}/threads) and the duplicate-annotation check.
//
// Cost: one query per page of events, over the expression index events_relation
// (json_extract(pdu, '$.content."m.relates_to".event_id'), then rel_type). Threads are aggregated in SQL
// (COUNT, MAX(stream), SUM(sender = me)); edits and references come back one row each.
import type { JsonObject, RoomEvent } from "../../src/core/types";

export const RELATES_TO = `json_extract(pdu, '$.content."m.relates_to".event_id')`;
export const REL_TYPE = `json_extract(pdu, '$.content."m.relates_to".rel_type')`;
/** An event whose redaction applies (same sender, or a sender with the redact level: views.ts
 *  redactionOf) no longer relates to anything. `e` is the events row being tested. */
const NOT_REDACTED = `NOT EXISTS (SELECT 1 FROM redactions r JOIN events re ON re.event_id = r.event_id AND re.stream IS NOT NULL
  WHERE r.redacts = e.event_id AND (r.powerful = 1 OR r.sender = e.sender))`;

export interface RelEvent {
  ev: RoomEvent;
  stream: number | null;
}

/** What the aggregation needs from the RoomDO, for one requester. */
export interface RelationsAccess<E extends RelEvent> {
  sql: SqlStorage;
  load(eventId: string): E | undefined;
  visible(e: E): boolean;
  redacted(e: E): boolean;
  toClient(e: E): JsonObject;
  /** Reads these events and what showing them needs in a few statements (optional). */
  prefetch?(eventIds: string[]): void;
  userId: string;
  /** Users the requester ignores: their thread replies and references are not counted. */
  ignored?: readonly string[];
  /** The requester's relationsCap when the caller has read it already. */
  cap?: number;
  /** False when no event of the room relates to another (RoomFacts): nothing to bundle. */
  anyRelations?(): boolean;
}

/** SQL condition on events row `e`: not sent by one of the JSON array bound here (module
 *  "Ignoring Users": the ignoring user does not see them, so thread summaries, references and
 *  the thread list leave them out too). */
const NOT_IGNORED = `e.sender NOT IN (SELECT value FROM json_each(?))`;
function ignoredJson(ignored: readonly string[] | undefined): string {
  return JSON.stringify(ignored ?? []);
}

/** Newest stream position whose relations the user may count: everything while joined; up to
 *  their last membership change once they left (a user who left does not learn of later
 *  replies, edits or references through the events they can still read). */
export function relationsCap(sql: SqlStorage, userId: string): number {
  return capAfter(sql.exec<{ membership: string; stream: number }>("SELECT membership, stream FROM memberships WHERE user_id = ? ORDER BY stream DESC LIMIT 1", userId).toArray()[0]);
}

/** relationsCap from the user's newest `memberships` row (undefined: none). */
export function capAfter(newest: { membership: string; stream: number } | undefined): number {
  return !newest || newest.membership === "join" ? Number.MAX_SAFE_INTEGER : newest.stream;
}

interface AggRow {
  parent: string;
  rel: string;
  event_id: string;
  sender: string;
  type: string;
  ts: number;
  is_state: number;
  new_content: string | null;
  n: number;
  latest: number;
  mine: number;
  [k: string]: SqlStorageValue;
}

/** Adds `unsigned["m.relations"]` to `out[i]` (the client form of `events[i]`): m.thread
 *  (latest_event, count, current_user_participated), m.replace (the most recent valid edit) and
 *  m.reference (chunk). m.annotation is not bundled ("Server-side aggregation of m.annotation
 *  relationships"). `nested`: bundling inside a thread's latest_event (no further threads). */
export function bundleAggregations<E extends RelEvent>(a: RelationsAccess<E>, events: E[], out: JsonObject[], nested = false): void {
  const byId = new Map<string, number>();
  events.forEach((e, i) => {
    if (!e.ev.event_id.startsWith("$") || byId.has(e.ev.event_id)) return;
    byId.set(e.ev.event_id, i);
  });
  if (byId.size === 0 || a.anyRelations?.() === false) return;
  const cap = a.cap ?? relationsCap(a.sql, a.userId);
  const ids = [...byId.keys()];
  const rows: AggRow[] = [];
  // SQLite here binds at most 100 parameters per statement (2 besides the IDs).
  for (let i = 0; i < ids.length; i += 90) {
    const part = ids.slice(i, i + 90);
    rows.push(
      ...a.sql
        .exec<AggRow>(
          `SELECT ${RELATES_TO} AS parent, ${REL_TYPE} AS rel, event_id, sender, type, origin_server_ts AS ts,
             state_key IS NOT NULL AS is_state, json_type(pdu, '$.content."m.new_content"') AS new_content,
             COUNT(*) AS n, MAX(stream) AS latest, SUM(sender = ?) AS mine
           FROM events e
           WHERE stream IS NOT NULL AND stream <= ? AND ${RELATES_TO} IN (${part.map(() => "?").join(",")})
             AND ${REL_TYPE} IN ('m.thread', 'm.replace', 'm.reference') AND ${NOT_REDACTED}
             AND (${REL_TYPE} = 'm.replace' OR ${NOT_IGNORED})
           GROUP BY parent, rel, CASE WHEN ${REL_TYPE} = 'm.thread' THEN '' ELSE event_id END`,
          a.userId,
          cap,
          ...part,
          ignoredJson(a.ignored),
        )
        .toArray(),
    );
  }
  // The edits and thread replies named by the rows, read together rather than one by one.
  a.prefetch?.(rows.filter((r) => r.rel !== "m.reference").map((r) => r.event_id));
  const agg = new Map<string, JsonObject>();
  const edits = new Map<string, AggRow>();
  const relOf = (id: string) => {
    let r = agg.get(id);
    if (!r) agg.set(id, (r = {}));
    return r;
  };
  const latestEvents: { root: string; e: E }[] = [];
  for (const row of rows) {
    const i = byId.get(row.parent);
    if (i === undefined) continue;
    const parent = events[i];
    if (row.rel === "m.thread" && !nested) {
      const latest = latestVisibleInThread(a, row, cap);
      if (!latest) continue;
      relOf(row.parent)["m.thread"] = {
        latest_event: {},
        count: row.n,
        // "The sender of the thread root event" or of an event in the thread.
        current_user_participated: row.mine > 0 || parent.ev.sender === a.userId,
      };
      latestEvents.push({ root: row.parent, e: latest });
    } else if (row.rel === "m.replace") {
      if (!validReplacement(parent, row)) continue;
      const best = edits.get(row.parent);
      if (!best || row.ts > best.ts || (row.ts === best.ts && row.event_id > best.event_id)) edits.set(row.parent, row);
    } else if (row.rel === "m.reference") {
      const r = relOf(row.parent);
      const chunk = ((r["m.reference"] as JsonObject | undefined)?.chunk as JsonObject[] | undefined) ?? [];
      chunk.push({ event_id: row.event_id });
      r["m.reference"] = { chunk };
    }
  }
  for (const [parentId, row] of edits) {
    // "If the original event is redacted, any m.replace relationship should not be bundled".
    if (a.redacted(events[byId.get(parentId)!])) continue;
    const edit = a.load(row.event_id);
    if (edit && a.visible(edit)) relOf(parentId)["m.replace"] = a.toClient(edit);
  }
  if (latestEvents.length) {
    // The latest event is serialised as the event itself is, with its own aggregations (edits).
    const outs = latestEvents.map((l) => a.toClient(l.e));
    bundleAggregations(a, latestEvents.map((l) => l.e), outs, true);
    latestEvents.forEach((l, k) => ((agg.get(l.root)!["m.thread"] as JsonObject).latest_event = outs[k]));
  }
  for (const [id, rel] of agg) {
    const o = out[byId.get(id)!];
    const unsigned = ((o.unsigned as JsonObject | undefined) ?? {}) as JsonObject;
    unsigned["m.relations"] = rel;
    o.unsigned = unsigned;
  }
}

/** "Validity of replacement events": same sender and type as the original, neither a state
 *  event, the original not itself an edit, and m.new_content present (for encrypted edits it
 *  is inside the ciphertext, so not checkable here). */
function validReplacement(orig: RelEvent, row: AggRow): boolean {
  if (row.sender !== orig.ev.sender || row.type !== orig.ev.type) return false;
  if (row.is_state || orig.ev.state_key !== undefined) return false;
  const rel = (orig.ev.content["m.relates_to"] as JsonObject | undefined)?.rel_type;
  if (rel === "m.replace") return false;
  return row.type === "m.room.encrypted" || row.new_content === "object";
}

/** The thread's newest event (MAX(stream) picks its row's event_id), or, when the requester may
 *  not see that one, the newest they may see among the last 100. */
function latestVisibleInThread<E extends RelEvent>(a: RelationsAccess<E>, row: AggRow, cap: number): E | undefined {
  const first = a.load(row.event_id);
  if (first && a.visible(first)) return first;
  const older = a.sql
    .exec<{ event_id: string }>(
      `SELECT event_id FROM events e WHERE stream IS NOT NULL AND stream <= ? AND ${RELATES_TO} = ? AND ${REL_TYPE} = 'm.thread' AND ${NOT_REDACTED} AND ${NOT_IGNORED} ORDER BY stream DESC LIMIT 100`,
      cap,
      row.parent,
      ignoredJson(a.ignored),
    )
    .toArray();
  for (const r of older) {
    const e = a.load(r.event_id);
    if (e && a.visible(e)) return e;
  }
  return undefined;
}

/** M_DUPLICATE_ANNOTATION ("Avoiding duplicate annotations"): whether `sender` already has an
 *  unredacted annotation of this event type and key on `parent`. */
export function hasAnnotation(sql: SqlStorage, sender: string, parent: string, type: string, key: string): boolean {
  return (
    sql
      .exec(
        `SELECT 1 FROM events e WHERE stream IS NOT NULL AND ${RELATES_TO} = ? AND ${REL_TYPE} = 'm.annotation' AND sender = ? AND type = ?
           AND json_extract(pdu, '$.content."m.relates_to".key') = ? AND ${NOT_REDACTED} LIMIT 1`,
        parent,
        sender,
        type,
        key,
      )
      .toArray().length > 0
  );
}

export interface ThreadsQuery {
  include: "all" | "participated";
  from?: number;
  limit: number;
  /** Users the requester ignores: their replies are no activity, their roots no thread. */
  ignored?: readonly string[];
}

/** GET /v1/rooms/{roomId}/threads: thread roots by latest activity (the stream position of the
 *  thread's newest event), newest first; `from` continues below a position. The caller
 *  filters roots by visibility and serialises them with bundled aggregations. */
export function threadRoots(sql: SqlStorage, userId: string, q: ThreadsQuery, cap: number, batch: number): { root: string; latest: number }[] {
  const participated = q.include === "participated" ? `AND (SUM(sender = ?) > 0 OR (SELECT r.sender FROM events r WHERE r.event_id = parent) = ?)` : "";
  return sql
    .exec<{ parent: string; latest: number }>(
      `SELECT ${RELATES_TO} AS parent, MAX(stream) AS latest FROM events e
       WHERE stream IS NOT NULL AND stream <= ? AND ${REL_TYPE} = 'm.thread' AND ${NOT_REDACTED} AND ${NOT_IGNORED}
         AND coalesce((SELECT r.sender FROM events r WHERE r.event_id = json_extract(e.pdu, '$.content."m.relates_to".event_id')), '') NOT IN (SELECT value FROM json_each(?))
       GROUP BY parent HAVING latest < ? ${participated} ORDER BY latest DESC LIMIT ?`,
      cap,
      ignoredJson(q.ignored),
      ignoredJson(q.ignored),
      q.from ?? Number.MAX_SAFE_INTEGER,
      ...(participated ? [userId, userId] : []),
      batch,
    )
    .toArray()
    .map((r) => ({ root: r.parent, latest: r.latest }));
}
