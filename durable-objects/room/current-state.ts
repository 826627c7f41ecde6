// The room's current state read from its `current_state` table key by key, for /sync's view of
// a cold room (room/sync-view.ts).
//
// A RoomDO that has just started holds nothing in memory. Answering a first /sync through
// StateStore.groupState built the whole current state (~1.5 × its size in rows: the snapshot and
// the deltas on it) and summarised every member, so each cold room cost what its member list
// costs, whatever the answer held; with lazy-loaded members an answer needs only the non-member
// state, the timeline senders' member events, and the counts. This map reads those: one query
// for the non-member entries, one lookup per member key asked for, and the member counts and
// hero candidates from SQL (memberCounts, firstMembers). Iterating it whole still works (one query).
import type { StateIdMap, StateKey } from "../../src/core/types";
import { splitStateKey, stateKey } from "../../src/core/types";
import { GROUP_CHAIN_SQL, type EventRow } from "./core";
import { ReadOnlyStateMap } from "./state-layers";
import { MEMBERS_SQL, type MemberCounts } from "./member-counts";

const MEMBER = "m.room.member";
const MEMBER_PREFIX = MEMBER + "\u0000";

/** A state view that reads keys one by one (remembering them) and builds the whole map only
 *  when iterated. Subclasses say where a key and a set of member keys are read from. */
abstract class KeyByKeyView extends ReadOnlyStateMap {
  /** Keys read so far (null: absent from the state). */
  protected readonly known = new Map<StateKey, string | null>();
  protected abstract materialise(): StateIdMap;
  /** One key's event ID in storage (null: absent). */
  protected abstract lookup(type: string, key: string): string | null;
  /** The member events of these users in storage; of two rows for a user the later wins
   *  (event_id null: removed). */
  protected abstract lookupMembers(userIds: string[]): Iterable<{ state_key: string; event_id: string | null }>;
  /** The whole map when it is built already (reads then answer from it). */
  protected built(): StateIdMap | undefined {
    return undefined;
  }
  /** Every entry but the member events, read from storage. */
  protected abstract readNonMembers(): [StateKey, string][];
  /** Those and the member events of these users in one statement, when the view can. */
  protected readNonMembersAnd?(userIds: string[]): Iterable<{ type: string; state_key: string; event_id: string }>;
  private nonMembers?: Map<StateKey, string>;

  /** What a lazy-loading answer of a room new to the client reads of its state: the non-member
   *  entries (nonMemberEntries) and these users' member entries (prefetchMembers), together. */
  prefetchLazy(userIds: string[]): void {
    if (this.built() || this.nonMembers || !this.readNonMembersAnd) {
      this.nonMemberEntries();
      this.prefetchMembers(userIds);
      return;
    }
    for (const u of userIds) this.known.set(stateKey(MEMBER, u), null);
    const nonMembers = new Map<StateKey, string>();
    for (const r of this.readNonMembersAnd(userIds)) {
      if (r.type === MEMBER) this.known.set(stateKey(MEMBER, r.state_key), r.event_id);
      else nonMembers.set(stateKey(r.type, r.state_key), r.event_id);
    }
    this.nonMembers = nonMembers;
  }

  /** Every entry but the member events: what an answer with lazy-loaded members walks. Once
   *  read, get() answers the other non-member keys (the room's name) from them. */
  nonMemberEntries(): [StateKey, string][] {
    const whole = this.built();
    if (whole) return [...whole].filter(([k]) => !k.startsWith(MEMBER_PREFIX));
    this.nonMembers ??= new Map(this.readNonMembers());
    return [...this.nonMembers];
  }

  override get(k: StateKey): string | undefined {
    const whole = this.built();
    if (whole) return whole.get(k);
    if (this.nonMembers && !k.startsWith(MEMBER_PREFIX)) return this.nonMembers.get(k);
    let v = this.known.get(k);
    if (v === undefined) {
      const [type, key] = splitStateKey(k);
      v = this.lookup(type, key);
      this.known.set(k, v);
    }
    return v ?? undefined;
  }

  override has(k: StateKey): boolean {
    return this.get(k) !== undefined;
  }

  /** Reads the member events of these users in one statement (later get()s answer from memory):
   *  a lazy-loading answer's senders and heroes. */
  prefetchMembers(userIds: string[]): void {
    if (this.built()) return;
    const wanted = userIds.filter((u) => !this.known.has(stateKey(MEMBER, u)));
    if (wanted.length === 0) return;
    for (const u of wanted) this.known.set(stateKey(MEMBER, u), null);
    for (const r of this.lookupMembers(wanted)) this.known.set(stateKey(MEMBER, r.state_key), r.event_id);
  }

  override entries(): MapIterator<[StateKey, string]> {
    return this.materialise().entries();
  }
  override keys(): MapIterator<StateKey> {
    return this.materialise().keys();
  }
  override values(): MapIterator<string> {
    return this.materialise().values();
  }
}

/**
 * A read-only state map over `current_state`, valid while the room's current state group is the
 * one it was made for (StateStore keeps one per group). Reads are remembered.
 */
export class CurrentStateView extends KeyByKeyView {
  private full?: StateIdMap;
  private counted?: number;

  constructor(
    private readonly sql: SqlStorage,
    readonly group: number | null,
    /** The counts the writer keeps with the current state (room/member-counts.ts), when known. */
    private readonly keptCounts: () => MemberCounts | undefined = () => undefined,
    /** Takes the event rows read with the entries (prefetchLazy): the events of a lazy answer's
     *  state come in the statement that finds them (EventStore.cacheRows). */
    private readonly eventRows?: (rows: EventRow[]) => void,
  ) {
    super();
  }

  protected override built(): StateIdMap | undefined {
    return this.full;
  }

  protected lookup(type: string, key: string): string | null {
    return this.sql.exec<{ event_id: string }>("SELECT event_id FROM current_state WHERE type = ? AND state_key = ?", type, key).toArray()[0]?.event_id ?? null;
  }

  protected lookupMembers(userIds: string[]): Iterable<{ state_key: string; event_id: string }> {
    return this.sql.exec<{ state_key: string; event_id: string }>(
      "SELECT state_key, event_id FROM current_state WHERE type = ? AND state_key IN (SELECT value FROM json_each(?))",
      MEMBER,
      JSON.stringify(userIds),
    );
  }

  override get size(): number {
    if (this.full) return this.full.size;
    return (this.counted ??= this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM current_state").one().n);
  }

  // (`type < ? OR type > ?` rather than `type != ?`: two ranges of the primary key instead of a
  // scan of every member row.)
  protected readNonMembers(): [StateKey, string][] {
    return this.sql
      .exec<{ type: string; state_key: string; event_id: string }>("SELECT type, state_key, event_id FROM current_state WHERE type < ?1 OR type > ?1", MEMBER)
      .toArray()
      .map((r) => [stateKey(r.type, r.state_key), r.event_id]);
  }

  protected override readNonMembersAnd(userIds: string[]): Iterable<{ type: string; state_key: string; event_id: string }> {
    const where = "c.type < ?1 OR c.type > ?1 OR (c.type = ?1 AND c.state_key IN (SELECT value FROM json_each(?2)))";
    if (!this.eventRows) {
      return this.sql.exec<{ type: string; state_key: string; event_id: string }>(`SELECT type, state_key, event_id FROM current_state c WHERE ${where}`, MEMBER, JSON.stringify(userIds));
    }
    // Their events too: what the answer shows of them (one statement less for a cold room).
    const rows = this.sql
      .exec<EventRow & { c_type: string; c_key: string; c_id: string }>(
        `SELECT c.type AS c_type, c.state_key AS c_key, c.event_id AS c_id, e.* FROM current_state c LEFT JOIN events e ON e.event_id = c.event_id WHERE ${where}`,
        MEMBER,
        JSON.stringify(userIds),
      )
      .toArray();
    this.eventRows(rows.filter((r) => r.event_id !== null));
    return rows.map((r) => ({ type: r.c_type, state_key: r.c_key, event_id: r.c_id }));
  }

  /** Joined and invited counts (room summary): those the writer keeps, else in SQL without
   *  reading the member list into memory: from `memberships` alone when it covers every current member event (the rule),
   *  else with the membership of the others read from their events. */
  memberCounts(): { joined: number; invited: number } {
    const kept = this.keptCounts();
    if (kept) return { ...kept };
    // (A NULL group: member events without a row in `memberships`.)
    const rows = this.sql
      .exec<{ ms: string | null; n: number }>(`SELECT m.membership AS ms, count(*) AS n FROM current_state c LEFT JOIN memberships m ON m.event_id = c.event_id WHERE c.type = '${MEMBER}' GROUP BY m.membership`)
      .toArray();
    const counts = new Map<string | null, number>(
      rows.every((r) => r.ms !== null) ? rows.map((r) => [r.ms, r.n]) : this.sql.exec<{ ms: string | null; n: number }>(`SELECT ms, count(*) AS n FROM (${MEMBERS_SQL}) GROUP BY ms`).toArray().map((r) => [r.ms, r.n]),
    );
    return { joined: counts.get("join") ?? 0, invited: counts.get("invite") ?? 0 };
  }

  /** The first six members in user ID order that are joined or invited (`active`), or not
   *  (hero candidates). User IDs are ASCII (spec: "Historical user IDs"), so SQLite's byte order
   *  is JavaScript's. */
  firstMembers(active: boolean): string[] {
    return this.sql
      .exec<{ u: string }>(`SELECT u FROM (${MEMBERS_SQL}) WHERE ${active ? "" : "NOT "}(ms IS NOT NULL AND ms IN ('join', 'invite')) ORDER BY u LIMIT 6`)
      .toArray()
      .map((r) => r.u);
  }

  protected materialise(): StateIdMap {
    return (this.full ??= new Map(
      this.sql.exec<{ type: string; state_key: string; event_id: string }>("SELECT type, state_key, event_id FROM current_state").toArray().map((r) => [stateKey(r.type, r.state_key), r.event_id]),
    ));
  }

}

/**
 * A read-only state map of an older state group (the state before a timeline that changed the
 * state, or at an incremental sync's `since`), read from its chain of deltas key by key: the
 * newest entry for a key along the chain wins (a NULL event ID: removed). Iterating it whole
 * builds the group's state (`build`, StateStore.groupState).
 */
export class GroupStateView extends KeyByKeyView {
  private chainJson?: string;

  constructor(
    private readonly sql: SqlStorage,
    readonly group: number,
    private readonly build: () => StateIdMap,
  ) {
    super();
  }

  /** The group and its ancestors down to its snapshot, as a JSON array. */
  private chain(): string {
    return (this.chainJson ??= JSON.stringify(this.sql.exec<{ id: number }>(GROUP_CHAIN_SQL, this.group).toArray().map((r) => r.id)));
  }

  protected lookup(type: string, key: string): string | null {
    const row = this.sql
      .exec<{ event_id: string | null }>(
        "SELECT event_id FROM state_group_entries WHERE group_id IN (SELECT value FROM json_each(?)) AND type = ? AND state_key = ? ORDER BY group_id DESC LIMIT 1",
        this.chain(),
        type,
        key,
      )
      .toArray()[0];
    return row?.event_id ?? null;
  }

  /** Along the chain the newest entry wins (rows in group order). */
  protected lookupMembers(userIds: string[]): Iterable<{ state_key: string; event_id: string | null }> {
    return this.sql.exec<{ state_key: string; event_id: string | null }>(
      "SELECT state_key, event_id FROM state_group_entries WHERE group_id IN (SELECT value FROM json_each(?)) AND type = ? AND state_key IN (SELECT value FROM json_each(?)) ORDER BY group_id",
      this.chain(),
      MEMBER,
      JSON.stringify(userIds),
    );
  }

  override get size(): number {
    return this.materialise().size;
  }

  protected materialise(): StateIdMap {
    return this.build();
  }

  protected readNonMembers(): [StateKey, string][] {
    const out = new Map<StateKey, string | null>();
    for (const r of this.sql.exec<{ type: string; state_key: string; event_id: string | null }>(
      "SELECT type, state_key, event_id FROM state_group_entries WHERE group_id IN (SELECT value FROM json_each(?)) AND type != ? ORDER BY group_id",
      this.chain(),
      MEMBER,
    )) {
      out.set(stateKey(r.type, r.state_key), r.event_id);
    }
    return [...out].filter((e): e is [StateKey, string] => e[1] !== null);
  }

}
