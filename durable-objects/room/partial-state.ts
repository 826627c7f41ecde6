// Partial-state ("faster") joins: the room-side rules that need no storage (spec: PUT
// /v2/send_join `omit_members`, `members_omitted`, `servers_in_room`; MSC3706, MSC3943; Synapse's
// faster joins). The RoomDO applies them: as the resident server when it answers send_join with
// omit_members, and as the joining server while its copy of a room lacks the member events.
import type { RoomEvent, StateIdMap, StateKey } from "../../src/core/types";
import { stateKey } from "../../src/core/types";
import { CREATE_KEY, memberKey } from "../../src/core/auth-rules";

const MEMBER_PREFIX = "m.room.member\u0000";
/** m.heroes: "the first 5 members of the room" (Client-Server API, /sync room summary). */
const HEROES = 5;

/** A member event of the state, in stream order where known. */
export interface MemberRow {
  userId: string;
  eventId: string;
  membership: string;
}

/** send_join with omit_members=true (resident side): the state before the join without its
 *  member events, except
 *   - the joining user's own current membership (an auth event of the join: an invite, a
 *     leave, a knock), as Synapse keeps it;
 *   - when the room has neither a name nor a canonical alias, the heroes' memberships: "the
 *     room members who would be included in the m.heroes property of the room summary" (spec,
 *     MSC3943), which the C-S spec defines as the first 5 joined or invited members by stream
 *     ordering, else the banned and left ones, never the user themself.
 *  `ordered`: the state's member events in stream order (those this server has a stream
 *  position for); members without one (outliers of a room this server joined through another)
 *  come after them in user-ID order, their membership read through `membershipOf`. */
export function omitMembersState(
  state: StateIdMap,
  joiner: string,
  named: boolean,
  ordered: Iterable<MemberRow>,
  membershipOf: (eventId: string) => string | undefined,
): string[] {
  const kept: string[] = [];
  for (const [k, id] of state) if (!k.startsWith(MEMBER_PREFIX)) kept.push(id);
  const own = state.get(memberKey(joiner));
  if (own) kept.push(own);
  if (named) return kept;
  const active: string[] = [];
  const gone: string[] = [];
  const seen = new Set<string>([joiner]);
  const take = (userId: string, membership: string | undefined) => {
    seen.add(userId);
    if (membership === "join" || membership === "invite") active.push(userId);
    else if (gone.length < HEROES) gone.push(userId);
  };
  for (const r of ordered) {
    if (active.length >= HEROES) break;
    if (seen.has(r.userId) || state.get(memberKey(r.userId)) !== r.eventId) continue;
    take(r.userId, r.membership);
  }
  if (active.length < HEROES) {
    const rest = [...state.keys()].filter((k) => k.startsWith(MEMBER_PREFIX)).map((k) => k.slice(MEMBER_PREFIX.length)).filter((u) => !seen.has(u)).sort();
    for (const u of rest) {
      if (active.length >= HEROES) break;
      take(u, membershipOf(state.get(memberKey(u))!));
    }
  }
  const heroes = active.length ? active.slice(0, HEROES) : gone;
  for (const u of heroes) kept.push(state.get(memberKey(u))!);
  return kept;
}

/** The state an event is authorised against (auth rules step "the state before the event")
 *  while the room's state is partial. The member events we lack would make most senders look
 *  absent, so — as Synapse does — the event's own auth events are state-resolved against the
 *  state we know: what the event claims fills the gaps, and where the two disagree the
 *  resolution decides (a ban we know of beats a join it cites). Only the keys the check reads
 *  take part. Re-checked against the full state when it arrives (RoomDO.completePartialState). */
export function partialAuthState(before: StateIdMap, claimed: RoomEvent[], keys: StateKey[], resolve: (maps: StateIdMap[]) => StateIdMap): StateIdMap {
  const theirs: StateIdMap = new Map();
  for (const a of claimed) if (a.state_key !== undefined) theirs.set(stateKey(a.type, a.state_key), a.event_id);
  const ours: StateIdMap = new Map();
  for (const k of new Set([...keys, ...theirs.keys(), CREATE_KEY])) {
    const id = before.get(k);
    if (id) ours.set(k, id);
  }
  // Room version 12 leaves the create event out of auth_events: both sides hold ours.
  const create = before.get(CREATE_KEY);
  if (create) theirs.set(CREATE_KEY, create);
  let differ = false;
  for (const [k, id] of theirs) if (ours.get(k) !== id) differ = true;
  if (!differ) return ours;
  return resolve([ours, theirs]);
}

// ---------------------------------------------------------------------------------------------
// The joining server's side: a room seeded from a send_join answer whose members were omitted.

/** meta `partial_state`: the room lacks member events of its state before our join. */
export interface PartialStateMeta {
  /** Our join, the event whose state before it is fetched (GET /v1/state?event_id=). */
  join: string;
  /** Its stream position: events above it were admitted against partial state. */
  joinStream: number;
  /** servers_in_room of the send_join answer, the server that answered first. */
  servers: string[];
}

/** A stored event as far as this module reads it. */
export interface PartialStoredEvent {
  ev: RoomEvent;
  stream: number | null;
  status: string;
  stateBefore: number | null;
  stateAfter: number | null;
  prevState: string | null;
}

/** The writes completing a partial state takes, bound to one transaction of the room's writer
 *  (RoomWriter.partialWrite): their SQL is in writer.ts, behind the write door. */
export interface PartialWrites {
  /** Add entries to every state group without a parent from group `from` on (the roots every
   *  state of the room since our join descends from). */
  addToRootGroups(from: number, entries: [StateKey, string][]): void;
  applyCurrentState(changes: Map<StateKey, string | null>): void;
  /** An event accepted against partial state that the full state forbids: rejected now, as it
   *  would have been on arrival (see RoomWriter.rejectAfterAll). */
  rejectAfterAll(eventId: string, reason: string): void;
  /** The state is complete: the partial mark and the fetch's records go; the completion takes
   *  the next stream position (returned), the one before it is kept as `partial_state_done`. */
  endPartialState(): number;
  /** The background fetch's progress (meta `partial_sync`, JSON; null: none). */
  saveSync(progress: string | null): void;
  /** IDs of the full state (`inState`) and of its auth chain; `held`: stored here already
   *  (not fetched), else fetched later. */
  stageIds(rows: { id: string; inState: boolean; held: boolean }[]): void;
  /** Fetched events (their PDU JSON), by ID. */
  stagePdus(rows: [string, string][]): void;
  clearStage(): void;
}

/** What PartialState needs from the room (wired in durable-objects/room.ts). */
export interface PartialStateAccess {
  sql: SqlStorage;
  /** A `meta` value as read at the room's start (null: absent), or undefined once a write may
   *  have changed it (RoomHead.metaFromStart). */
  metaFromStart(key: string): string | null | undefined;
  currentGroup(): number | null;
  loadEvent(id: string): PartialStoredEvent | undefined;
  groupState(g: number | null): StateIdMap;
  /** The events of a state and its auth chain checked and stored as outliers, as a send_join
   *  answer's are; returns the state events that were accepted, by ID. */
  admitState(state: unknown[], authChain: unknown[], origin: string): Promise<Map<string, RoomEvent>>;
  /** Type and state key of the accepted events we hold among `ids`. */
  heldState(ids: string[]): { event_id: string; type: string; state_key: string }[];
  /** Auth rules for `ev` against `state` (the state before it): null when allowed. */
  authCheck(ev: RoomEvent, state: StateIdMap): string | null;
  /** Run `fn` in one transaction of the room's writer (RoomWriter.partialWrite). */
  write<T>(fn: (w: PartialWrites) => T): T;
  /** Forget in-memory state derived from storage (groups, events, fan-out facts). */
  dropCaches(): void;
  /** Mirror memberships and the user directory after a change of the current state. */
  afterCommit(): Promise<void>;
  /** Make sure the background fetch's alarm is set (room/partial-sync.ts). */
  armSync(): void;
}

/** A claim on the background fetch lasts this long (a run cut short is retried after it). */
const CLAIM_MS = 5 * 60_000;

export class PartialState {
  constructor(private readonly r: PartialStateAccess) {}

  private cached?: PartialStateMeta | null;
  private claim?: { token: string; until: number };
  private waiters = new Set<() => void>();

  /** The room's partial-state record, or undefined when its state is complete. */
  meta(): PartialStateMeta | undefined {
    if (this.cached === undefined) {
      let value = this.r.metaFromStart("partial_state");
      if (value === undefined) value = this.r.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'partial_state'").toArray()[0]?.value ?? null;
      this.cached = value !== null ? (JSON.parse(value) as PartialStateMeta) : null;
    }
    return this.cached ?? undefined;
  }

  isPartial(): boolean {
    return this.meta() !== undefined;
  }

  /** The room is partial from now on (seedFromJoin; the writer stored the record with the
   *  room's, RoomWriter.recordRoom). */
  begin(m: PartialStateMeta): void {
    this.cached = m;
    this.r.armSync();
  }

  /** Stream position at which the last completion happened (for /sync: a client that synced
   *  before it gets the room's state whole once, see fullStateSince). */
  completedAt(): number | null {
    const atStart = this.r.metaFromStart("partial_state_done");
    if (atStart !== undefined) return atStart === null ? null : Number(atStart);
    const row = this.r.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'partial_state_done'").toArray()[0];
    return row ? Number(row.value) : null;
  }

  /** Servers that get our events besides those of the members we know: while partial, the
   *  member events that would name them are missing (Synapse sends to servers_in_room). */
  extraDestinations(): string[] {
    return this.meta()?.servers ?? [];
  }

  /** Claim the background fetch (src/services/federation/partial-state.ts). */
  claimSync(): { status: "full" } | { status: "busy" } | { status: "claimed"; claim: string; joinEventId: string; servers: string[] } {
    const m = this.meta();
    if (!m) return { status: "full" };
    const now = Date.now();
    if (this.claim && this.claim.until > now) return { status: "busy" };
    this.claim = { token: crypto.randomUUID(), until: now + CLAIM_MS };
    return { status: "claimed", claim: this.claim.token, joinEventId: m.join, servers: m.servers };
  }

  releaseSync(token: string): void {
    if (this.claim?.token === token) this.claim = undefined;
  }

  /** Wait until the state is complete, at most `ms`. Returns whether it is. */
  async awaitFull(ms: number): Promise<boolean> {
    if (!this.isPartial()) return true;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
    return !this.isPartial();
  }

  /** The full state before our join arrived (GET /v1/state from one of the servers): check it
   *  as a send_join answer is checked, add the member events we lacked to every state of the
   *  room, re-check the events admitted while the state was partial (Synapse: "since the state
   *  at this event has changed, we should now re-evaluate whether it should have been
   *  rejected"), and un-partial the room. Returns what the Worker needs for device lists. */
  async complete(args: { claim: string; origin: string; state: unknown[]; authChain: unknown[]; stateIds?: string[] }): Promise<{ rejected: string[]; added: number; stream: number }> {
    const m = this.meta();
    if (!m) return { rejected: [], added: 0, stream: 0 };
    if (this.claim?.token !== args.claim) throw new PartialStateError("This fetch no longer holds the claim");
    const join = this.r.loadEvent(m.join);
    if (!join || join.stateBefore === null) throw new PartialStateError("Our join is not in the room");
    // Check and store every event (outliers); the state: those of `state` that passed.
    const passed = await this.r.admitState(args.state, args.authChain, args.origin);
    const full: StateIdMap = new Map();
    const put = (id: string, type: string, skey: string) => {
      const k = stateKey(type, skey);
      if (full.has(k) && full.get(k) !== id) throw new PartialStateError(`Two state events for ${type}/${skey}`);
      full.set(k, id);
    };
    for (const [id, ev] of passed) if (ev.state_key !== undefined) put(id, ev.type, ev.state_key);
    // /state_ids: the events of the state we held already were not fetched again.
    if (args.stateIds) for (const h of this.r.heldState(args.stateIds.filter((id) => !passed.has(id)))) put(h.event_id, h.type, h.state_key);
    const partial = this.r.groupState(join.stateBefore);
    if (full.get(CREATE_KEY) !== partial.get(CREATE_KEY)) throw new PartialStateError("The state is of another room");
    // What we lacked: keys absent from the partial state (the omitted members). Keys we have
    // keep our event: they came checked with the send_join answer or were admitted since.
    const missing: [StateKey, string][] = [...full].filter(([k]) => !partial.has(k));
    const oldCurrent = this.r.groupState(this.r.currentGroup());
    const rejected: string[] = [];
    let stream = 0;
    // Every state group of the room descends from a group without a parent (the join's state
    // before, or a later snapshot); each of those holds its whole state. The omitted keys were
    // absent from all of them, so adding them to each gives every state of the room — before
    // our join and after it, wherever a later event did not set the key — its full form, and
    // the delta groups below inherit them.
    const from = join.stateBefore;
    this.r.write((w) => w.addToRootGroups(from, missing));
    this.r.dropCaches();
    const newCurrent = this.r.groupState(this.r.currentGroup());
    this.r.write((w) => {
      w.applyCurrentState(diff(oldCurrent, newCurrent));
      // Re-check what was admitted while partial, in stream order, against the full state.
      const rows = this.r.sql.exec<{ event_id: string }>("SELECT event_id FROM events WHERE stream > ? AND status = 'accepted' ORDER BY stream", m.joinStream).toArray();
      for (const { event_id } of rows) {
        const se = this.r.loadEvent(event_id);
        if (!se || se.stateBefore === null) continue;
        const why = this.r.authCheck(se.ev, this.r.groupState(se.stateBefore));
        if (why === null) continue;
        w.rejectAfterAll(event_id, `re-checked against the full state: ${why}`);
        rejected.push(event_id);
      }
      stream = w.endPartialState();
    });
    this.cached = null;
    this.claim = undefined;
    // Memberships and the user directory learn the members (the changes applied above), then
    // what was read before the rejections is forgotten.
    await this.r.afterCommit();
    this.r.dropCaches();
    for (const w of [...this.waiters]) w();
    return { rejected, added: missing.length, stream };
  }
}

export class PartialStateError extends Error {}


function diff(prev: StateIdMap, next: StateIdMap): Map<StateKey, string | null> {
  const out = new Map<StateKey, string | null>();
  for (const [k, v] of next) if (prev.get(k) !== v) out.set(k, v);
  for (const k of prev.keys()) if (!next.has(k)) out.set(k, null);
  return out;
}
