// Event rows of the room (the `events` table): loading with a bounded in-memory cache, the
// create event, auth chains, which of a set of IDs are stored, the redaction that applies to an
// event, and the "partial" room marks (a room known only through an invite or knock). Reads only.
import type { JsonObject, PDU, RoomEvent } from "../../src/core/types";
import { MIN_STREAM, EVENT_CACHE, StoredEvent, EventRow, RoomHead, jsonBatches } from "./core";
import type { RoomFacts } from "./facts";


/** What EventStore needs from the rest of the room (wired in durable-objects/room.ts). */
export interface EventStoreAccess {
  head: RoomHead;
  sql: SqlStorage;
  facts: Pick<RoomFacts, "has">;
}

interface RedactionRow {
  event_id: string;
  sender: string;
  powerful: number;
  [k: string]: SqlStorageValue;
}

export class EventStore {
  constructor(private readonly r: EventStoreAccess) {}

  /** Recently loaded events, LRU by insertion, at most EVENT_CACHE. */
  private cache = new Map<string, StoredEvent>();

  /** The cached event, without reading storage. */
  cached(id: string): StoredEvent | undefined {
    return this.cache.get(id);
  }

  /** The event of a row already read (from the cache when it is there; not cached). */
  cachedRow(row: EventRow): StoredEvent {
    return this.cache.get(row.event_id) ?? this.fromRow(row);
  }

  /** Caches the events of rows read with something else (a cold room's state entries with
   *  their events, CurrentStateView), those not cached yet. */
  cacheRows(rows: EventRow[]): void {
    for (const row of rows) if (!this.cache.has(row.event_id)) this.cacheRow(row);
  }

  /** Cache an event (newest in the LRU order), e.g. as the writer has just stored it (its row,
   *  without reading it back). */
  remember(se: StoredEvent): void {
    // (The create event just stored: loadCreate need not look it up. A rollback forgets it.)
    if (se.status === "accepted" && se.ev.type === "m.room.create" && se.ev.state_key === "") this.createId = se.ev.event_id;
    this.cache.delete(se.ev.event_id);
    this.cache.set(se.ev.event_id, se);
    if (this.cache.size > EVENT_CACHE) this.cache.delete(this.cache.keys().next().value!);
  }

  /** Drop an event from the cache (its row changed, or a redaction now applies to it). */
  uncache(id: string): void {
    this.cache.delete(id);
  }

  /** Forget every cached event (a rolled-back write, a purge). */
  clearCache(): void {
    this.cache.clear();
    this.partialMark = undefined;
    this.createId = undefined;
  }

  /** A page of timeline events in stream order (GET /messages, GET /relations): from position
   *  `from` (a "t<n>" token: going back, events at or below n; going forward, above n) up to
   *  `to`, those `take` accepts, at most `limit`, reading at most ~2,000 rows. `end` is where the
   *  next page starts; `exhausted` when the range holds no more events. `where`: more conditions
   *  on the events row, with their arguments. */
  page(
    q: { dir: "b" | "f"; from: number; to?: number; limit: number },
    take: (se: StoredEvent) => boolean,
    where: { conds: string[]; args: (string | number)[] } = { conds: [], args: [] },
  ): { events: StoredEvent[]; end: number; exhausted: boolean } {
    const more = where.conds.map((c) => ` AND ${c}`).join("");
    const events: StoredEvent[] = [];
    let pos = q.from;
    let exhausted = false;
    let scanned = 0;
    while (events.length < q.limit && scanned < 2000) {
      const rows =
        q.dir === "b"
          ? this.r.sql.exec<EventRow>(`SELECT * FROM events WHERE stream IS NOT NULL${more} AND stream <= ? AND stream > ? ORDER BY stream DESC LIMIT 100`, ...where.args, pos, q.to ?? MIN_STREAM).toArray()
          : this.r.sql.exec<EventRow>(`SELECT * FROM events WHERE stream IS NOT NULL${more} AND stream > ? AND stream <= ? ORDER BY stream ASC LIMIT 100`, ...where.args, pos, q.to ?? Number.MAX_SAFE_INTEGER).toArray();
      if (rows.length === 0) {
        exhausted = true;
        break;
      }
      for (const row of rows) {
        scanned++;
        const se = this.cachedRow(row);
        pos = q.dir === "b" ? se.stream! - 1 : se.stream!;
        if (take(se)) events.push(se);
        if (events.length >= q.limit) break;
      }
    }
    return { events, end: pos, exhausted };
  }

  loadEvent(id: string): StoredEvent | undefined {
    const hit = this.cache.get(id);
    if (hit) return hit;
    const row = this.r.sql.exec<EventRow>("SELECT * FROM events WHERE event_id = ?", id).toArray()[0];
    if (!row) return undefined;
    const se = this.fromRow(row);
    this.remember(se);
    return se;
  }

  /** `content.membership` of each stored event among `ids` (member events), from the cache or
   *  in a statement per ~10,000 IDs, without loading and parsing every event: a cold room's
   *  fan-out facts (FanOut.fanOutFacts) loaded each of 10,000 member events one statement at a
   *  time (a resident's first send_join after waking, ~0.4 s). A stored PDU is the form
   *  loadEvent parses (redacted on a content-hash mismatch; redaction keeps `membership`).
   *  Accepted member events of the timeline are read from `memberships` (the writer's copy of
   *  their membership; an event rejected later leaves it), not from their PDUs: SQLite parsed
   *  10,000 PDUs for a cold resident's first send_join. Others (outliers: a partial-state
   *  join's member events) from the PDU. */
  membershipsOf(ids: string[]): Map<string, unknown> {
    const out = new Map<string, unknown>();
    let rest: string[] = [];
    for (const id of ids) {
      const hit = this.cache.get(id);
      if (hit) out.set(id, hit.ev.content.membership);
      else rest.push(id);
    }
    for (const batch of jsonBatches(rest)) {
      for (const r of this.r.sql.exec<{ id: string; m: string }>("SELECT event_id AS id, membership AS m FROM memberships WHERE event_id IN (SELECT value FROM json_each(?))", batch)) {
        out.set(r.id, r.m);
      }
    }
    rest = rest.filter((id) => !out.has(id));
    for (const batch of jsonBatches(rest)) {
      for (const r of this.r.sql.exec<{ id: string; m: SqlStorageValue }>("SELECT event_id AS id, pdu ->> '$.content.membership' AS m FROM events WHERE event_id IN (SELECT value FROM json_each(?))", batch)) {
        out.set(r.id, r.m);
      }
    }
    return out;
  }

  private fromRow(row: EventRow): StoredEvent {
    const pdu = JSON.parse(row.pdu) as PDU;
    const rv = this.r.head.rv!;
    const refs = (r: unknown): string[] => (Array.isArray(r) ? r.map((x) => (Array.isArray(x) ? String(x[0]) : String(x))) : []);
    const ev: RoomEvent = {
      event_id: row.event_id,
      room_id: this.r.head.roomId!,
      sender: row.sender,
      type: row.type,
      content: (pdu.content ?? {}) as JsonObject,
      origin_server_ts: pdu.origin_server_ts,
      depth: pdu.depth,
      prev_events: refs(pdu.prev_events),
      auth_events: refs(pdu.auth_events),
      pdu,
    };
    if (row.state_key !== null) ev.state_key = row.state_key;
    if (row.type === "m.room.redaction") {
      const r = rv.v11Redaction ? (pdu.content as { redacts?: unknown }).redacts : pdu.redacts;
      if (typeof r === "string") ev.redacts = r;
    }
    return {
      ev,
      stream: row.stream,
      status: row.status as StoredEvent["status"],
      stateBefore: row.state_before,
      stateAfter: row.state_after,
      prevState: row.prev_state,
      txnDevice: row.txn_device,
      txnId: row.txn_id,
    };
  }

  /** The create event's ID once known (a room has one; asked for every event's auth). */
  private createId?: string;

  loadCreate(): StoredEvent | undefined {
    if (!this.createId) {
      const row = this.r.sql.exec<{ event_id: string }>("SELECT event_id FROM events WHERE type = 'm.room.create' AND state_key = '' AND status = 'accepted' LIMIT 1").toArray()[0];
      this.createId = row?.event_id;
    }
    return this.createId ? this.loadEvent(this.createId) : undefined;
  }

  /** Redaction rows by the event they redact, read a page at a time (prefetch); only inside
   *  readBatch, which no write interleaves with, so they cannot go stale. */
  private redactionRows?: Map<string, RedactionRow[]>;

  /** Runs a synchronous read (a /sync view of the room) with prefetched redaction rows kept
   *  for its duration. */
  readBatch<T>(fn: () => T): T {
    if (this.redactionRows) return fn();
    this.redactionRows = new Map();
    try {
      return fn();
    } finally {
      this.redactionRows = undefined;
    }
  }

  /** Reads these events (those not cached), the events whose content they replace
   *  (prevState: prev_content) and, inside readBatch, the redaction rows of both, a page at a
   *  time instead of a statement or two per event: a cold room's /sync timeline and state were
   *  ~50 small statements per room. */
  prefetch(ids: string[]): void {
    this.loadMany(ids);
    const prev = ids.flatMap((id) => this.cache.get(id)?.prevState ?? []);
    this.loadMany(prev);
    const rows = this.redactionRows;
    if (!rows) return;
    const wanted = [...new Set([...ids, ...prev])].filter((id) => !rows.has(id));
    for (const id of wanted) rows.set(id, []);
    if (!this.r.facts.has("redactions")) return;
    for (const batch of jsonBatches(wanted)) {
      for (const r of this.r.sql.exec<RedactionRow & { redacts: string }>(
        "SELECT redacts, event_id, sender, powerful FROM redactions WHERE redacts IN (SELECT value FROM json_each(?))",
        batch,
      )) {
        rows.get(r.redacts)!.push({ event_id: r.event_id, sender: r.sender, powerful: r.powerful });
      }
    }
  }

  /** Puts the events among `ids` that are not cached into the cache, a statement per ~10,000
   *  IDs (jsonBatches; was one per 90). */
  loadMany(ids: string[]): void {
    const missing = [...new Set(ids)].filter((id) => !this.cache.has(id));
    for (const batch of jsonBatches(missing)) {
      for (const row of this.r.sql.exec<EventRow>("SELECT * FROM events WHERE event_id IN (SELECT value FROM json_each(?))", batch)) this.cacheRow(row);
    }
  }

  private cacheRow(row: EventRow): void {
    this.remember(this.fromRow(row));
  }

  /** Accepted events with since < stream <= upTo, newest first, at most `limit`, read with what
   *  showing them needs (prefetch). IDs first, then the cache: the newest events of a room are
   *  what every sync asks for (parsing their PDUs again on each sync was a third of syncRoom at
   *  300 rooms); a room just started has nothing cached, and reads the rows in the same
   *  statement. */
  newestDesc(upTo: number, since: number, limit: number): StoredEvent[] {
    const where = "FROM events WHERE stream IS NOT NULL AND stream <= ? AND stream > ? ORDER BY stream DESC LIMIT ?";
    let ids: string[];
    if (this.cache.size === 0) {
      const rows = this.r.sql.exec<EventRow>(`SELECT * ${where}`, upTo, since, limit).toArray();
      for (const row of rows) this.cacheRow(row);
      ids = rows.map((r) => r.event_id);
    } else {
      ids = this.r.sql.exec<{ event_id: string }>(`SELECT event_id ${where}`, upTo, since, limit).toArray().map((r) => r.event_id);
    }
    this.prefetch(ids);
    return ids.map((id) => this.loadEvent(id)!);
  }

  /** The redaction that applies to an event, if any ("Handling redactions": same sender, or
   *  a sender with the redact power level). */
  redactionOf(se: StoredEvent): StoredEvent | undefined {
    const rows =
      this.redactionRows?.get(se.ev.event_id) ??
      (!this.r.facts.has("redactions") ? [] : undefined) ??
      this.r.sql.exec<RedactionRow>("SELECT event_id, sender, powerful FROM redactions WHERE redacts = ?", se.ev.event_id).toArray();
    for (const r of rows) {
      if (r.powerful || r.sender === se.ev.sender) {
        const red = this.loadEvent(r.event_id);
        if (red && red.status === "accepted") return red;
      }
    }
    return undefined;
  }

  /** Up to 200 events with a stream position nearest `ts` in direction `dir`, nearest first
   *  (the candidates timestamp_to_event checks for visibility). */
  timestampCandidates(ts: number, dir: "f" | "b"): EventRow[] {
    return dir === "f"
      ? this.r.sql.exec<EventRow>("SELECT * FROM events WHERE stream IS NOT NULL AND origin_server_ts >= ? ORDER BY origin_server_ts ASC, stream ASC LIMIT 200", ts).toArray()
      : this.r.sql.exec<EventRow>("SELECT * FROM events WHERE stream IS NOT NULL AND origin_server_ts <= ? ORDER BY origin_server_ts DESC, stream DESC LIMIT 200", ts).toArray();
  }

  /** A room we only know through an invite or knock (stripped state, our member event as an
   *  outlier), until we join it. */
  isPartial(): boolean {
    if (this.partialMark !== undefined) return this.partialMark;
    const atStart = this.r.head.metaFromStart("partial");
    if (atStart !== undefined) return (this.partialMark = atStart === "1");
    return (this.partialMark = this.r.sql.exec("SELECT 1 FROM meta WHERE key = 'partial' AND value = '1'").toArray().length > 0);
  }

  /** The partial mark as last read (undefined: read it again). Every local send asked (a
   *  statement each); only the writer changes the mark, and it calls partialMarkChanged. */
  private partialMark: boolean | undefined;
  partialMarkChanged(): void {
    this.partialMark = undefined;
  }

  partialMember(userId: string): StoredEvent | undefined {
    const row = this.r.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", `partial_member\u0000${userId}`).toArray()[0];
    return row ? this.loadEvent(row.value) : undefined;
  }

  /** The auth chain of a set of events (their auth events, recursively), in DAG order. */
  authChain(ids: Iterable<string>): StoredEvent[] {
    const seen = new Set<string>();
    const out: StoredEvent[] = [];
    const stack = [...ids].flatMap((id) => this.loadEvent(id)?.ev.auth_events ?? []);
    while (stack.length) {
      const id = stack.pop()!;
      if (seen.has(id)) continue;
      seen.add(id);
      const se = this.loadEvent(id);
      if (!se) continue;
      out.push(se);
      for (const a of se.ev.auth_events) if (!seen.has(a)) stack.push(a);
    }
    return out.sort((a, b) => a.ev.depth - b.ev.depth);
  }

  /** The auth chain of a set of events as IDs with their depths, in DAG (depth) order: what
   *  authChain returns, read a level of the walk at a time (one statement per level, the auth
   *  event IDs taken from each stored PDU by SQLite) instead of loading and parsing every event.
   *  For a 30,000-event state, authChain loaded each event (past the cache, a statement and a
   *  JSON parse) only to read its auth_events. */
  authChainIds(ids: Iterable<string>): { id: string; depth: number }[] {
    const seen = new Set<string>();
    const out: { id: string; depth: number }[] = [];
    let frontier = this.authIdsOf([...new Set(ids)]);
    while (frontier.length) {
      const level = [...new Set(frontier)].filter((id) => !seen.has(id));
      for (const id of level) seen.add(id);
      if (!level.length) break;
      const rows = this.authEventsOf(level);
      for (const r of rows) out.push({ id: r.id, depth: r.depth });
      frontier = rows.flatMap((r) => r.auth).filter((id) => !seen.has(id));
    }
    return out.sort((a, b) => a.depth - b.depth);
  }

  /** The distinct auth event IDs the stored events among `ids` cite: the first level of
   *  authChainIds, where only those are needed. For a 20,000-event state (send_join) reading an
   *  edge per row (authEventsOf) brought ~40,000 rows into the isolate for a few distinct IDs, a
   *  third of serving the answer; SQLite keeps them distinct here. Events without edges are
   *  read as authEventsOf reads them. */
  private authIdsOf(ids: string[]): string[] {
    const out = new Set<string>();
    const bare: string[] = [];
    for (const batch of jsonBatches(ids)) {
      for (const r of this.r.sql.exec<{ a: string | null; bare: string | null }>(
        `SELECT DISTINCT a.auth_event_id AS a, CASE WHEN a.auth_event_id IS NULL THEN e.event_id END AS bare
         FROM events e LEFT JOIN auth_edges a ON a.event_id = e.event_id
         WHERE e.event_id IN (SELECT value FROM json_each(?))`,
        batch,
      )) {
        if (typeof r.a === "string") out.add(r.a);
        else if (typeof r.bare === "string") bare.push(r.bare);
      }
    }
    if (bare.length) for (const r of this.authEventsOf(bare)) for (const a of r.auth) out.add(a);
    return [...out];
  }

  /** The stored events among `ids` with their depth and auth event IDs, from the auth_edges
   *  index (written with every event row), in a statement per ~10,000 IDs (jsonBatches). Reading
   *  the IDs out of every stored PDU instead (json_each over `pdu`) was a third of serving a
   *  20,000-event send_join. An event without edges (the create event; an invite or knock
   *  stored before we joined, storePartialMembership) is read from its PDU (room versions 1
   *  and 2 cite [event ID, hashes] pairs). */
  private authEventsOf(ids: string[]): { id: string; depth: number; auth: string[] }[] {
    const byId = new Map<string, { id: string; depth: number; auth: string[] }>();
    const bare: string[] = [];
    for (const batch of jsonBatches(ids)) {
      for (const r of this.r.sql.exec<{ id: string; depth: number; a: string | null }>(
        `SELECT e.event_id AS id, e.depth AS depth, a.auth_event_id AS a
         FROM events e LEFT JOIN auth_edges a ON a.event_id = e.event_id
         WHERE e.event_id IN (SELECT value FROM json_each(?))`,
        batch,
      )) {
        let row = byId.get(r.id);
        if (!row) byId.set(r.id, (row = { id: r.id, depth: r.depth, auth: [] }));
        if (typeof r.a === "string") row.auth.push(r.a);
        else bare.push(r.id);
      }
    }
    for (const batch of jsonBatches(bare)) {
      for (const r of this.r.sql.exec<{ id: string; a: string | null }>(
        `SELECT e.event_id AS id, CASE j.type WHEN 'array' THEN json_extract(j.value, '$[0]') ELSE j.value END AS a
         FROM events e JOIN json_each(e.pdu, '$.auth_events') j
         WHERE e.event_id IN (SELECT value FROM json_each(?))`,
        batch,
      )) {
        if (typeof r.a === "string") byId.get(r.id)?.auth.push(r.a);
      }
    }
    return [...byId.values()];
  }

  /** The stored PDU text of each of `ids` that is stored, and whether a redaction names it
   *  (then whether it applies is for redactionOf), in a statement per ~10,000 IDs. */
  pduTexts(ids: string[]): Map<string, { pdu: string; redactionNamed: boolean }> {
    const out = new Map<string, { pdu: string; redactionNamed: boolean }>();
    for (const batch of jsonBatches(ids)) {
      for (const r of this.r.sql.exec<{ id: string; pdu: string; red: number }>(
        `SELECT e.event_id AS id, e.pdu AS pdu, EXISTS (SELECT 1 FROM redactions r WHERE r.redacts = e.event_id) AS red
         FROM events e WHERE e.event_id IN (SELECT value FROM json_each(?))`,
        batch,
      )) {
        out.set(r.id, { pdu: r.pdu, redactionNamed: r.red === 1 });
      }
    }
    return out;
  }

  /** Which of these events are stored and accepted. */
  acceptedAmong(ids: string[]): Set<string> {
    return new Set(this.storedAmong(ids, "status = 'accepted'").map((r) => r.event_id));
  }

  /** Rows of the stored events among `ids` that match `where`, a statement per ~10,000 IDs
   *  (the IDs as a JSON parameter, jsonBatches: 90 to a statement was ~330 statements for a
   *  30,000-event state). */
  storedAmong(ids: string[], where = "1"): { event_id: string; type: string; state_key: string | null; status: string }[] {
    return jsonBatches(ids).flatMap((batch) =>
      this.r.sql
        .exec<{ event_id: string; type: string; state_key: string | null; status: string }>(
          `SELECT event_id, type, state_key, status FROM events WHERE ${where} AND event_id IN (SELECT value FROM json_each(?))`,
          batch,
        )
        .toArray(),
    );
  }

}
