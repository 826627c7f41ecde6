// Full-text search of one room's events (module "Server Side Search", category room_events),
// with SQLite FTS5 in the RoomDO's own storage.
//
// The index is kept by catching up, not on the write path: each search first indexes the events
// stored since the last one (meta.search_rowid, a watermark on the events table's rowid, which
// only grows). Every stored event of a searchable type is indexed whatever its status; a hit
// counts only when its event is accepted (stream set), visible to the searcher and unredacted.
// Tokenizer unicode61 with remove_diacritics 2: case- and accent-insensitive.
// Edits (rel_type m.replace) are not hits of their own: their m.new_content.body is indexed
// under the event they edit (row `source` = the edit), so the message is found by its current
// text and shown once; a redacted or invalid edit (not the original's sender and type) counts
// for nothing.
import type { JsonObject, RoomEvent } from "../../src/core/types";
import { matchesRoomEventFilter, type RoomEventFilter } from "../../src/core/room-event-filter";

export const SEARCH_SCHEMA = `
CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(value, event_id UNINDEXED, key UNINDEXED, source UNINDEXED, tokenize = 'unicode61 remove_diacritics 2');
`;

/** The keys the spec names (room_events): content.body of m.room.message, content.name of
 *  m.room.name, content.topic (and m.topic's text/plain body) of m.room.topic. */
export const SEARCH_KEYS = ["content.body", "content.name", "content.topic"] as const;
export type SearchKey = (typeof SEARCH_KEYS)[number];
const KEY_OF_TYPE: Record<string, SearchKey> = { "m.room.message": "content.body", "m.room.name": "content.name", "m.room.topic": "content.topic" };
const CATCH_UP_BATCH = 2000;

export interface SearchEvent {
  ev: RoomEvent;
  stream: number | null;
}

export interface RoomSearchQuery {
  term: string;
  keys: SearchKey[];
  orderBy: "rank" | "recent";
  filter?: RoomEventFilter;
  /** Hits wanted from this room: the merged page's offset + limit. */
  limit: number;
  /** order_by recent: only hits older than this (origin_server_ts, event_id), exclusive. */
  before?: { ts: number; eventId: string };
  context?: { before: number; after: number; includeProfile: boolean };
  /** Phase 1 (`idsOnly`): ranks and positions only, nothing serialised. Phase 2 (`fetch`): the
   *  client form (and context) of these hits, which won the merge across rooms. */
  idsOnly?: boolean;
  fetch?: string[];
  /** One phase (a search of one room): serialise only the hits at these positions of the room's
   *  ranking, the rest come back as positions. */
  page?: { from: number; to: number };
}

export interface RoomSearchHit {
  rank: number;
  ts: number;
  eventId: string;
  result?: JsonObject;
  context?: JsonObject;
}

export interface RoomSearchResult {
  hits: RoomSearchHit[];
  /** Matches in this room up to the searcher's cap (an estimate: not checked one by one). */
  count: number;
}

export interface SearchAccess<E extends SearchEvent> {
  sql: SqlStorage;
  load(eventId: string): E | undefined;
  visible(e: E): boolean;
  redacted(e: E): boolean;
  clientEvents(es: E[]): JsonObject[];
  /** Accepted events just before / after a stream position, newest / oldest first. */
  around(stream: number, dir: "b" | "f", n: number): E[];
  /** The member event of `userId` in the state after `e`, if any. */
  memberAt(e: E, userId: string): E | undefined;
  /** Newest stream position the searcher may see (relationsCap). */
  cap: number;
  /** Users the searcher ignores (m.ignored_user_list). */
  ignored?: readonly string[];
}

/** Module "Ignoring Users": the client no longer receives events sent by an ignored user, "with
 *  the exception of state events" (so a room name or topic they set is still found). */
function notIgnored(ignored: readonly string[] | undefined): (e: SearchEvent) => boolean {
  if (!ignored?.length) return () => true;
  const set = new Set(ignored);
  return (e) => e.ev.state_key !== undefined || !set.has(e.ev.sender);
}

/** Index the events stored since the last catch-up. */
const withSchema = new WeakSet<SqlStorage>();
/** Whether the room's index holds edit rows (rows indexed under another event than their own),
 *  per database: learnt once per object (a scan that stops at the first edit row, so a whole
 *  pass only in a room that has none), kept current by catching up. Without them every message
 *  has one row, so counting matching rows counts messages. */
const hasEditRows = new WeakMap<SqlStorage, boolean>();

export function catchUpIndex(sql: SqlStorage): number {
  if (!withSchema.has(sql)) {
    sql.exec(SEARCH_SCHEMA);
    withSchema.add(sql);
  }
  const mark = () => Number(sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'search_rowid'").toArray()[0]?.value ?? "0");
  let from = mark();
  let indexed = 0;
  for (let round = 0; round < 10_000; round++) {
    const rows = sql
      .exec<{ rid: number; event_id: string; type: string; body: SqlStorageValue; name: SqlStorageValue; topic: SqlStorageValue; mtopic: string | null; rel: SqlStorageValue; target: SqlStorageValue; new_body: SqlStorageValue; sender: string }>(
        `SELECT rowid AS rid, event_id, type, json_extract(pdu, '$.content.body') AS body, json_extract(pdu, '$.content.name') AS name,
           json_extract(pdu, '$.content.topic') AS topic, json_extract(pdu, '$.content."m.topic"') AS mtopic,
           json_extract(pdu, '$.content."m.relates_to".rel_type') AS rel, json_extract(pdu, '$.content."m.relates_to".event_id') AS target,
           json_extract(pdu, '$.content."m.new_content".body') AS new_body, sender
         FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?`,
        from,
        CATCH_UP_BATCH,
      )
      .toArray();
    if (rows.length === 0) break;
    for (const r of rows) {
      const key = KEY_OF_TYPE[r.type];
      if (!key) continue;
      if (r.rel === "m.replace") {
        if (key === "content.body" && typeof r.target === "string" && typeof r.new_body === "string" && r.new_body) {
          sql.exec("INSERT INTO search_fts (value, event_id, key, source) VALUES (?, ?, ?, ?)", r.new_body, r.target, key, r.event_id);
          hasEditRows.set(sql, true);
          indexed++;
        }
        continue;
      }
      const values: string[] = [];
      const v = key === "content.body" ? r.body : key === "content.name" ? r.name : r.topic;
      if (typeof v === "string" && v) values.push(v);
      if (key === "content.topic" && r.mtopic) values.push(...plainTopics(r.mtopic));
      for (const value of values) {
        sql.exec("INSERT INTO search_fts (value, event_id, key, source) VALUES (?, ?, ?, ?)", value, r.event_id, key, r.event_id);
        indexed++;
      }
    }
    from = rows[rows.length - 1].rid;
    sql.exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('search_rowid', ?)", String(from));
    if (rows.length < CATCH_UP_BATCH) break;
  }
  return indexed;
}

function editRows(sql: SqlStorage): boolean {
  let has = hasEditRows.get(sql);
  if (has === undefined) {
    has = sql.exec("SELECT 1 FROM search_fts WHERE source != event_id LIMIT 1").toArray().length > 0;
    hasEditRows.set(sql, has);
  }
  return has;
}

/** text/plain bodies of an m.topic content block. */
function plainTopics(raw: string): string[] {
  try {
    const t = JSON.parse(raw) as JsonObject;
    const reps = Array.isArray(t["m.text"]) ? (t["m.text"] as JsonObject[]) : [];
    return reps.filter((r) => r && (r.mimetype === undefined || r.mimetype === "text/plain") && typeof r.body === "string").map((r) => r.body as string);
  } catch {
    return [];
  }
}

/** Words of the search term (letters and digits), lowercased: the FTS query ANDs them, each a
 *  prefix match, quoted so no FTS5 syntax from the user reaches the parser. Also the highlights. */
export function searchTerms(term: string): string[] {
  return [...new Set((term.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []).slice(0, 20))];
}

/** The FTS5 query of a search term: every word as a quoted prefix, ANDed; "" when it has none. */
function ftsMatch(term: string): string {
  return searchTerms(term)
    .map((w) => `"${w}"*`)
    .join(" AND ");
}

/** Whether any indexed text of the room matches the term (after catching up): most rooms of a
 *  search have no match, and need nothing else read for it. */
export function anyMatch(sql: SqlStorage, term: string): boolean {
  catchUpIndex(sql);
  const match = ftsMatch(term);
  return match !== "" && sql.exec("SELECT 1 FROM search_fts WHERE search_fts MATCH ? LIMIT 1", match).toArray().length > 0;
}

export function searchRoom<E extends SearchEvent>(a: SearchAccess<E>, q: RoomSearchQuery): RoomSearchResult {
  const shown = notIgnored(a.ignored);
  if (q.fetch) {
    const picked = q.fetch.slice(0, 100).map((id) => a.load(id)).filter((e): e is E => !!e && a.visible(e) && !a.redacted(e) && (e.stream ?? 0) <= a.cap && shown(e));
    return { hits: serialise(a, picked.map((e) => ({ e, rank: 0 })), q), count: picked.length };
  }
  catchUpIndex(a.sql);
  const match = ftsMatch(q.term);
  if (match === "" || q.keys.length === 0) return { hits: [], count: 0 };
  const keyIn = q.keys.map(() => "?").join(",");
  let where = `search_fts MATCH ? AND s.key IN (${keyIn}) AND e.stream IS NOT NULL AND e.stream <= ?`;
  const args: SqlStorageValue[] = [match, ...q.keys, a.cap];
  const ignoring = (a.ignored?.length ?? 0) > 0;
  if (ignoring) {
    where += " AND (e.state_key IS NOT NULL OR e.sender NOT IN (SELECT value FROM json_each(?)))";
    args.push(JSON.stringify(a.ignored));
  }
  // The count is "approximate" (spec): a searcher who sees the whole room gets the index's own
  // count (matching rows, or distinct events once the room has edit rows); one who left or
  // ignores someone counts as the hits are filtered. The fast paths: a searcher who sees the whole room, ignores nobody and asks every key needs
  // nothing from the events table to rank or count, so the FTS index answers alone (joining
  // each match to its event row by event_id was most of a room's search time); each candidate
  // is then checked in JS as it is loaded. order_by recent walks the events newest first
  // against the set of matching event IDs, when no match can come through an edit (the edit's
  // validity needs its row). Otherwise the query joins every match to its event to filter.
  const whole = a.cap >= Number.MAX_SAFE_INTEGER && !ignoring;
  const allKeys = SEARCH_KEYS.every((k) => q.keys.includes(k));
  const noEdits = whole && allKeys && !editRows(a.sql);
  const ftsRank = whole && allKeys && q.orderBy === "rank";
  const matchSet = noEdits && q.orderBy === "recent";
  const count = !whole
    ? (a.sql.exec<{ n: number }>(`SELECT COUNT(DISTINCT s.event_id) AS n FROM search_fts s JOIN events e ON e.event_id = s.event_id WHERE ${where}`, ...args).toArray()[0]?.n ?? 0)
    : noEdits
      ? (a.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM search_fts WHERE search_fts MATCH ?`, match).toArray()[0]?.n ?? 0)
      : (a.sql.exec<{ n: number }>(`SELECT COUNT(DISTINCT event_id) AS n FROM search_fts WHERE search_fts MATCH ? AND key IN (${keyIn})`, match, ...q.keys).toArray()[0]?.n ?? 0);

  let order = "score ASC, e.stream DESC";
  let score = "bm25(search_fts)";
  let cursor = "";
  const cursorArgs: SqlStorageValue[] = [];
  if (q.orderBy === "recent") {
    // bm25 only when ranking by it.
    score = "0";
    order = "e.origin_server_ts DESC, e.event_id DESC";
    if (q.before) {
      cursor = "AND (e.origin_server_ts < ? OR (e.origin_server_ts = ? AND e.event_id < ?))";
      cursorArgs.push(q.before.ts, q.before.ts, q.before.eventId);
    }
  }
  const picked: { e: E; rank: number }[] = [];
  const seen = new Set<string>();
  // Candidates in pages; those the searcher may not see are skipped (bounded scan).
  const PAGE = Math.min(500, q.limit * 2 + 20);
  for (let offset = 0; picked.length < q.limit && offset < 5000; offset += PAGE) {
    const rows = ftsRank
      ? // Ranked on the index alone (rowid and score: no column read per match), the page's
        // columns read after; ties newest indexed first.
        a.sql
          .exec<{ event_id: string; source: string; score: number }>(
            `SELECT s.event_id AS event_id, s.source AS source, t.score AS score
             FROM (SELECT rowid AS rid, bm25(search_fts) AS score FROM search_fts WHERE search_fts MATCH ? ORDER BY score ASC, rowid DESC LIMIT ? OFFSET ?) t
             JOIN search_fts s ON s.rowid = t.rid ORDER BY t.score ASC, t.rid DESC`,
            match,
            PAGE,
            offset,
          )
          .toArray()
      : matchSet
        ? a.sql
            .exec<{ event_id: string; source: string; score: number }>(
              `SELECT e.event_id AS event_id, e.event_id AS source, 0 AS score FROM events e
               WHERE e.stream IS NOT NULL AND e.event_id IN (SELECT event_id FROM search_fts WHERE search_fts MATCH ?) ${cursor}
               ORDER BY ${order} LIMIT ? OFFSET ?`,
              match,
              ...cursorArgs,
              PAGE,
              offset,
            )
            .toArray()
        : a.sql
            .exec<{ event_id: string; source: string; score: number }>(
              `SELECT s.event_id AS event_id, s.source AS source, ${score} AS score FROM search_fts s JOIN events e ON e.event_id = s.event_id
               WHERE ${where} ${cursor} ORDER BY ${order} LIMIT ? OFFSET ?`,
              ...args,
              ...cursorArgs,
              PAGE,
              offset,
            )
            .toArray();
    for (const r of rows) {
      if (seen.has(r.event_id)) continue;
      // a.load: accepted events only; the cap is unbounded on the fast path.
      const e = a.load(r.event_id);
      if (!e || !a.visible(e) || a.redacted(e) || !shown(e) || !matchesRoomEventFilter(q.filter, e.ev)) continue;
      if (r.source !== r.event_id) {
        // Matched through an edit: it must be valid ("Validity of replacement events") and stand.
        const edit = a.load(r.source);
        if (!edit || a.redacted(edit) || edit.ev.sender !== e.ev.sender || edit.ev.type !== e.ev.type || e.ev.state_key !== undefined) continue;
      }
      seen.add(r.event_id);
      // bm25 is lower for better matches; the spec's rank is higher for closer ones.
      picked.push({ e, rank: -r.score });
      if (picked.length >= q.limit) break;
    }
    if (rows.length < PAGE) break;
  }
  const position = (p: { e: E; rank: number }): RoomSearchHit => ({ rank: p.rank, ts: p.e.ev.origin_server_ts, eventId: p.e.ev.event_id });
  if (q.idsOnly) return { hits: picked.map(position), count };
  if (q.page) {
    const { from, to } = q.page;
    return { hits: [...picked.slice(0, from).map(position), ...serialise(a, picked.slice(from, to), q), ...picked.slice(to).map(position)], count };
  }
  return { hits: serialise(a, picked, q), count };
}

function serialise<E extends SearchEvent>(a: SearchAccess<E>, picked: { e: E; rank: number }[], q: RoomSearchQuery): RoomSearchHit[] {
  const results = a.clientEvents(picked.map((p) => p.e));
  const hits: RoomSearchHit[] = picked.map((p, i) => ({ rank: p.rank, ts: p.e.ev.origin_server_ts, eventId: p.e.ev.event_id, result: results[i] }));
  if (q.context) {
    const ctx = q.context;
    picked.forEach((p, i) => (hits[i].context = contextOf(a, p.e, ctx)));
  }
  return hits;
}

/** event_context of one hit: events before and after it the searcher may see, tokens, and with
 *  include_profile the senders' profiles at the hit (their member events then). */
function contextOf<E extends SearchEvent>(a: SearchAccess<E>, e: E, ctx: { before: number; after: number; includeProfile: boolean }): JsonObject {
  const shown = notIgnored(a.ignored);
  const pick = (dir: "b" | "f", n: number) => (n <= 0 ? [] : a.around(e.stream!, dir, n * 2 + 10).filter((x) => a.visible(x) && (x.stream ?? 0) <= a.cap && shown(x)).slice(0, n));
  const before = pick("b", ctx.before);
  const after = pick("f", ctx.after);
  const out: JsonObject = {
    events_before: a.clientEvents(before),
    events_after: a.clientEvents(after),
    start: `t${(before.length ? before[before.length - 1].stream! : e.stream!) - 1}`,
    end: `t${after.length ? after[after.length - 1].stream! : e.stream!}`,
  };
  if (ctx.includeProfile) {
    const profiles: JsonObject = {};
    for (const x of [e, ...before, ...after]) {
      if (x.ev.sender in profiles) continue;
      const m = a.memberAt(e, x.ev.sender);
      const c = (m?.ev.content ?? {}) as JsonObject;
      const p: JsonObject = {};
      if (typeof c.displayname === "string") p.displayname = c.displayname;
      if (typeof c.avatar_url === "string") p.avatar_url = c.avatar_url;
      profiles[x.ev.sender] = p;
    }
    out.profile_info = profiles;
  }
  return out;
}
