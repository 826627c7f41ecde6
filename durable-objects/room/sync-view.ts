// /sync's view of one room for one user, computed inside the RoomDO (RoomDO.syncRoom) from a
// narrow set of its primitives, so the algorithm reads as one piece (spec: Client-Server API
// "Syncing", GET /sync → rooms.join / rooms.leave; MSC4222 state_after; "Lazy-loading room
// members").
//
// Ranges are room stream positions: the hub (UserDO) says the client has seen everything up to
// `since` and may now see up to `upTo`. The timeline is the newest `limit` visible events in
// (since, upTo]; when more exist it is `limited` and `prev_batch` ("t<n>", the /messages token
// form) points just before the oldest returned event, so /messages dir=b from there reaches every
// event of the gap.
import type { JsonObject, RoomEvent, StateIdMap } from "../../src/core/types";
import { stateKey } from "../../src/core/types";
import { matchesRoomEventFilter, type RoomEventFilter } from "../../src/core/room-event-filter";

export interface SyncEvent {
  ev: RoomEvent;
  stream: number | null;
}

/** What syncRoomView needs from the RoomDO. */
export interface RoomSyncAccess<E extends SyncEvent> {
  /** Accepted events with since < stream <= upTo, newest first, at most `limit`. */
  eventsDesc(upTo: number, since: number, limit: number): E[];
  /** History-visibility check for one user. */
  visibleFor(userId: string): (e: E) => boolean;
  /** Stream position of the join that starts the user's current membership (null if not
   *  joined): every later event is visible to them ("if the user was joined ... allow"), without
   *  looking up the state before each event. */
  joinedSince(userId: string): number | null;
  /** Room state at a stream position (after the newest event with stream <= n). */
  stateAt(n: number): StateIdMap;
  load(eventId: string): E | undefined;
  /** Reads these events, and what showing them needs, a page at a time (optional: load and
   *  toClient work without it). */
  prefetch?(eventIds: string[]): void;
  toClient(e: E, now: number): JsonObject;
  /** Adds bundled aggregations (unsigned.m.relations) to the timeline's client events. */
  bundle?(events: E[], out: JsonObject[]): void;
  /** The event as a PDU, for `event_format: "federation"` (falls back to toClient). */
  toFederation?(e: E, now: number): JsonObject;
  /** Membership of member events by event ID, from one cheap read (optional; events it does
   *  not cover are loaded). Summarising a cold room by loading 300 member events was 40% of a
   *  first sync of 300 rooms × 300 members. */
  memberships?(): Map<string, string>;
  /** Partial-state rooms: the sender's member event among the event's auth events, for a
   *  sender whose membership is not in the state yet (lazy-loading). */
  senderMemberFromAuth?(e: E): string | undefined;
}

export interface RoomSyncQuery {
  /** Room stream position already seen; null = the room is new to the client. */
  since: number | null;
  upTo: number;
  limit: number;
  timeline?: RoomEventFilter;
  state?: RoomEventFilter;
  lazyLoadMembers: boolean;
  fullState: boolean;
  /** The hub does not know exactly what the client saw before `since` (a token below its
   *  compacted log, durable-objects/user/position-log.ts): answer as a gappy sync — the timeline after `since`
   *  marked `limited` (prev_batch leads /messages back over the gap) with full state. */
  gap?: boolean;
  /** The room is new to the client in an incremental sync (joined since the token, or joined
   *  and left): `since` is null, and `limited` also tells of visible history before the
   *  timeline that the filter left out. */
  newlyJoined?: boolean;
  /** MSC4222 / v1.16 use_state_after: state up to the end of the timeline in `state_after`. */
  useStateAfter: boolean;
  /** Users the requester ignores (module "Ignoring Users"): their non-state events are left out
   *  of the timeline; their state events still come ("Servers must still send state events sent
   *  by ignored users to clients"). */
  ignoredSenders?: string[];
  /** Filter `event_format`: "federation" returns events as PDUs (RoomSyncAccess.toFederation). */
  eventFormat?: "client" | "federation";
}

export interface RoomSyncView {
  timeline: { events: JsonObject[]; limited: boolean; prev_batch: string };
  state?: { events: JsonObject[] };
  state_after?: { events: JsonObject[] };
  summary: { "m.heroes"?: string[]; "m.joined_member_count": number; "m.invited_member_count": number };
  /** Lazy-loading, incremental syncs only: the member events (user → event ID) in `state` /
   *  `state_after` that are there only because their user sent a timeline event — not a change
   *  since `since`. The Worker leaves out those the device already has (durable-objects/
   *  user/lazy-members.ts) and strips this field. */
  lazyMembers?: Record<string, string>;
}

const SCAN_PAGE = 100;
const SCAN_MAX = 5000;
const MEMBER_PREFIX = "m.room.member\u0000";

export function syncRoomView<E extends SyncEvent>(access: RoomSyncAccess<E>, userId: string, q: RoomSyncQuery): RoomSyncView {
  const now = Date.now();
  const room = q.eventFormat === "federation" && access.toFederation ? { ...access, toClient: access.toFederation } : access;
  const slowVisible = room.visibleFor(userId);
  const joinedAt = room.joinedSince(userId);
  const ignored = new Set(q.ignoredSenders ?? []);
  const hidden = (e: E) => ignored.size > 0 && e.ev.state_key === undefined && ignored.has(e.ev.sender);
  // The room's state at the end of the range (read early: the visibility check below uses it).
  const end = room.stateAt(q.upTo);
  // Current state reaches a joined user's timeline even when history visibility hid it as it
  // happened (a join while they were away from a "joined"-history room): they may read that
  // state anyway, and clients rely on seeing it (sytest "Current state appears in timeline in
  // private history"; Synapse's always_include_ids).
  const currentState = (e: E) => joinedAt !== null && e.ev.state_key !== undefined && end.get(stateKey(e.ev.type, e.ev.state_key)) === e.ev.event_id;
  const visible = (e: E) => !hidden(e) && ((joinedAt !== null && e.stream! > joinedAt) || slowVisible(e) || currentState(e));
  const floor = q.since ?? -1;
  const timelineFilter = q.timeline ? { ...q.timeline, rooms: undefined, not_rooms: undefined } : undefined;

  // Timeline: newest first until `limit` are picked, then look for one more to decide `limited`.
  const picked: E[] = [];
  let limited = false;
  /** Stream of the oldest event the user may see in the range, whatever the timeline filter. */
  let oldestVisible: number | null = null;
  let pos = q.upTo;
  let scanned = 0;
  // The first page is just big enough for the common case (limit + 1 visible events).
  let pageSize = Math.min(SCAN_PAGE, q.limit + 1);
  outer: while (scanned < SCAN_MAX) {
    const page = room.eventsDesc(pos, floor, pageSize);
    if (page.length === 0) break;
    for (const e of page) {
      scanned++;
      pos = e.stream! - 1;
      if (!visible(e)) continue;
      oldestVisible = e.stream;
      if (!matchesRoomEventFilter(timelineFilter, e.ev)) continue;
      if (picked.length >= q.limit) {
        limited = true;
        break outer;
      }
      picked.push(e);
    }
    if (page.length < pageSize) break;
    pageSize = SCAN_PAGE;
  }
  if ((scanned >= SCAN_MAX && pos > floor) || q.gap) limited = true;
  // A room newly joined in an incremental sync: `limited` unless the timeline reaches back to the
  // oldest event the user may see. Events the timeline filter left out still count: otherwise
  // the client believes it holds the room's whole history and never paginates (Complement
  // "Newly joined room has correct timeline in incremental sync"; Synapse marks every newly
  // joined room limited). An initial sync stays count-based (sytest "A filtered timeline
  // reaches its limit": not limited).
  if (!limited && q.newlyJoined && oldestVisible !== null && (picked.length === 0 || oldestVisible < picked[picked.length - 1].stream!)) limited = true;
  picked.reverse();
  const startStream = picked.length ? picked[0].stream! - 1 : q.upTo;
  const timelineEvents = picked.map((e) => room.toClient(e, now));
  room.bundle?.(picked, timelineEvents);
  const timeline = {
    events: timelineEvents,
    limited,
    prev_batch: `t${Math.max(0, limited || picked.length ? startStream : q.upTo)}`,
  };

  // State. `state_after`: what changed between `since` and the end of the timeline. `state`:
  // between `since` and the start of the timeline — computed as Synapse does, from the state at
  // both ends minus what the timeline itself carries, so state events a timeline filter removed
  // (or that the gap hid) are not lost: ((start ∪ end) − since) − timeline.
  const fresh = q.since === null || q.fullState || !!q.gap;
  const base: StateIdMap = fresh ? new Map() : room.stateAt(q.since!);
  const start = q.useStateAfter ? end : room.stateAt(startStream);
  const inTimeline = new Set(picked.map((e) => e.ev.event_id));
  // Lazy-loading: only members needed to render the timeline (plus, on a fresh room, my own),
  // but always member changes in the gap of an incremental sync ("MUST return membership events
  // for events in the gap"). On a fresh room the other members are skipped while collecting.
  const needed = new Set(picked.map((e) => e.ev.sender));
  const fromAuth = new Map<string, string>();
  if (room.senderMemberFromAuth) {
    for (const e of picked) {
      if (fromAuth.has(e.ev.sender) || end.has(stateKey("m.room.member", e.ev.sender))) continue;
      const id = room.senderMemberFromAuth(e);
      if (id) fromAuth.set(e.ev.sender, id);
    }
  }
  if (fresh) needed.add(userId);
  // A cold room (states read key by key) with lazy-loaded members: its non-member state and
  // the senders' member entries are read first and their events loaded in one page, so the
  // summary's look at the room's name and alias reads nothing more.
  if (q.lazyLoadMembers) {
    const ids: string[] = [];
    for (const st of new Set([start, end])) {
      if (!isSparse(st)) continue;
      if (fresh && st.prefetchLazy) {
        st.prefetchLazy([...needed]);
        for (const [, id] of st.nonMemberEntries()) ids.push(id);
      } else st.prefetchMembers?.([...needed]);
      for (const u of needed) {
        const id = st.get(stateKey("m.room.member", u));
        if (id) ids.push(id);
      }
    }
    if (ids.length) room.prefetch?.(ids);
  }
  // "When lazy-loading room members is enabled, the membership events for the heroes MUST be
  // included in the state, unless they are redundant" (RoomSummary m.heroes).
  const summary = summarize(room, end, userId);
  if (q.lazyLoadMembers) for (const h of summary["m.heroes"] ?? []) needed.add(h);
  const neededKeys = new Set([...needed].map((u) => stateKey("m.room.member", u)));
  // The needed members' entries in one statement per state rather than one per member.
  if (q.lazyLoadMembers) for (const st of new Set([start, end])) if (isSparse(st)) st.prefetchMembers?.([...needed]);
  const skipMember = q.lazyLoadMembers && fresh ? (k: string) => k.startsWith(MEMBER_PREFIX) && !neededKeys.has(k) : () => false;
  const entries = new Map<string, string>(); // event ID → state key
  // A state that can list its non-member entries (a cold room's current state) is not read
  // whole when the other members are skipped anyway: those entries and the needed members.
  const walk = (st: StateIdMap): Iterable<[string, string]> => {
    if (!(q.lazyLoadMembers && fresh && isSparse(st))) return st;
    const out = [...st.nonMemberEntries()];
    for (const k of neededKeys) {
      const id = st.get(k);
      if (id) out.push([k, id]);
    }
    return out;
  };
  // (The same state at both ends — the common case — is walked once.)
  for (const st of q.useStateAfter || start === end ? [end] : [start, end]) {
    for (const [k, id] of walk(st)) if (base.get(k) !== id && (q.useStateAfter || !inTimeline.has(id)) && !skipMember(k)) entries.set(id, k);
  }
  // On an incremental sync a sender's member event that did not change since `since` may be
  // one the client already has ("redundant"): it is marked for the Worker to decide. Changes
  // since `since` (the gap) are always sent ("regardless as to whether or not they are
  // redundant").
  const lazyMembers: Record<string, string> = {};
  if (q.lazyLoadMembers) {
    for (const u of needed) {
      const k = stateKey("m.room.member", u);
      const id = start.get(k) ?? fromAuth.get(u);
      if (!id || (!q.useStateAfter && inTimeline.has(id))) continue;
      if (!fresh && !entries.has(id) && base.get(k) === id) lazyMembers[u] = id;
      entries.set(id, k);
    }
  }
  const stateFilter = q.state ? { ...q.state, rooms: undefined, not_rooms: undefined, contains_url: undefined } : undefined;
  const stateEvents: JsonObject[] = [];
  room.prefetch?.([...entries.keys()]);
  for (const id of entries.keys()) {
    const e = room.load(id);
    if (e && matchesRoomEventFilter(stateFilter, e.ev)) stateEvents.push(room.toClient(e, now));
    else if (e?.ev.type === "m.room.member") delete lazyMembers[e.ev.state_key!];
  }

  const view: RoomSyncView = { timeline, summary };
  if (Object.keys(lazyMembers).length) view.lazyMembers = lazyMembers;
  if (q.useStateAfter) view.state_after = { events: stateEvents };
  else view.state = { events: stateEvents };
  return view;
}

/** Counts and hero candidates of one state map, for every user (see summarize). */
interface MemberSummary {
  joined: number;
  invited: number;
  /** Joined or invited members, and the others (left, banned, knocking), in user ID order: the
   *  first six, enough for five heroes besides the requester. */
  active: string[];
  gone: string[];
  /** The room has a name or canonical alias: clients need no heroes to name it. */
  named: boolean;
}

/** A state map that answers without being read whole: its entries other than member events,
 *  its member counts and the first members in user ID order (the RoomDO's current state,
 *  durable-objects/room/current-state.ts). Its get() reads one key. */
export interface SparseState extends StateIdMap {
  nonMemberEntries(): [string, string][];
  memberCounts?(): { joined: number; invited: number };
  firstMembers?(active: boolean): string[];
  /** Reads these users' member entries together (later get()s answer from memory). */
  prefetchMembers?(userIds: string[]): void;
  /** Reads the non-member entries and these users' member entries together. */
  prefetchLazy?(userIds: string[]): void;
}

function isSparse(st: StateIdMap): st is SparseState {
  return typeof (st as Partial<SparseState>).nonMemberEntries === "function";
}

/** A sparse state that also counts its members (the current state). */
function countsMembers(st: StateIdMap): st is Required<SparseState> {
  return isSparse(st) && typeof st.memberCounts === "function" && typeof st.firstMembers === "function";
}

/** Per state map (the RoomDO hands out one cached, never mutated map per state group): a summary
 *  walks every member event of the state, which for a 300-member room was most of an initial
 *  sync's per-room work; the same state is summarised once, for every user and every sync. */
const memberSummaries = new WeakMap<StateIdMap, MemberSummary>();

/** Room summary (spec: "summary"): joined/invited counts and, for a room without a name or
 *  canonical alias, up to 5 heroes (other members, joined or invited first, else those who
 *  left), in user ID order. */
function summarize<E extends SyncEvent>(room: RoomSyncAccess<E>, st: StateIdMap, userId: string): RoomSyncView["summary"] {
  let s = memberSummaries.get(st);
  if (!s && countsMembers(st)) {
    // (A named room needs no heroes: they are looked for only when it has no name.)
    const named = isNamed(room, st);
    s = { ...st.memberCounts(), active: named ? [] : st.firstMembers(true), gone: named ? [] : st.firstMembers(false), named };
  }
  if (!s) {
    let joined = 0;
    let invited = 0;
    const active: string[] = [];
    const gone: string[] = [];
    const known = room.memberships?.();
    for (const [k, id] of st) {
      if (!k.startsWith(MEMBER_PREFIX)) continue;
      const m = known?.get(id) ?? room.load(id)?.ev.content.membership;
      const u = k.slice(MEMBER_PREFIX.length);
      if (m === "join") joined++;
      if (m === "invite") invited++;
      if (m === "join" || m === "invite") active.push(u);
      else gone.push(u);
    }
    s = { joined, invited, active: active.sort().slice(0, 6), gone: gone.sort().slice(0, 6), named: isNamed(room, st) };
  }
  memberSummaries.set(st, s);
  const counts = { "m.joined_member_count": s.joined, "m.invited_member_count": s.invited };
  // m.heroes is "required if the room's m.room.name or m.room.canonical_alias state events are
  // unset or empty"; a named room's client does not use them.
  if (s.named) return counts;
  const others = (list: string[]) => list.filter((u) => u !== userId);
  const heroes = (others(s.active).length ? others(s.active) : others(s.gone)).slice(0, 5);
  return { "m.heroes": heroes, ...counts };
}

/** The room has a non-empty m.room.name or m.room.canonical_alias alias. */
function isNamed<E extends SyncEvent>(room: RoomSyncAccess<E>, st: StateIdMap): boolean {
  const nonEmpty = (type: string, field: string) => {
    const id = st.get(stateKey(type, ""));
    const v = id ? room.load(id)?.ev.content[field] : undefined;
    return typeof v === "string" && v !== "";
  };
  return nonEmpty("m.room.name", "name") || nonEmpty("m.room.canonical_alias", "alias");
}
