// State groups (durable-objects/room/core.ts SNAPSHOT_FRACTION: deltas on a parent, snapshots
// when the chain grows), the LRU group cache, the resolution memo over prev-event states, the
// auth-edge index state resolution walks, and the auth maps the auth rules consult. Reads only:
// new groups are written by the writer (RoomWriter.newGroup).
import type { RoomEvent, StateIdMap, StateKey, StateMap } from "../../src/core/types";
import { stateKey } from "../../src/core/types";
import { authEventKeys, CREATE_KEY } from "../../src/core/auth-rules";
import { resolveState } from "../../src/core/state-res";
import { LayeredState, layerState, splitShared } from "./state-layers";
import { CurrentStateView, GroupStateView } from "./current-state";
import type { AdmitMode } from "../../src/rpc/room";
import { GROUP_CACHE, GROUP_CACHE_ENTRIES, ACROSS_MEMO, AUTH_INDEX, StoredEvent, GROUP_CHAIN_SQL, GROUP_ENTRIES_SQL, StateAt, RoomHead } from "./core";
import type { EventStore } from "./events";

/** What StateStore needs from the rest of the room (wired in durable-objects/room.ts). */
export interface StateStoreAccess {
  head: RoomHead;
  sql: SqlStorage;
  events: Pick<EventStore, "cached" | "loadEvent" | "cacheRows">;
}

/** What one synchronous read (a /sync view) learnt of current_groups: the current group was
 *  `grp` at every position in [from, to]. The state at both ends of a timeline that did not
 *  change the state is then one query, not two. */
export type GroupSpans = { from: number; to: number; grp: number | null }[];

export class StateStore {
  constructor(private readonly r: StateStoreAccess) {}

  /** Cached group states, LRU (see cacheGroup). */
  private groups = new Map<number, StateIdMap>();

  /** Forget everything derived from storage (a rolled-back write, a purge). */
  clear(): void {
    this.groups.clear();
    this.groupEntries = 0;
    this.baseRefs.clear();
    this.acrossMemo.clear();
    this.authIndex.clear();
    this.authLists.clear();
    this.currentView = undefined;
    this.olderView = undefined;
  }

  groupState(g: number | null): StateIdMap {
    if (g === null) return new Map();
    const hit = this.groups.get(g);
    if (hit) {
      this.groups.delete(g);
      this.groups.set(g, hit);
      return hit;
    }
    // The ancestors up to a cached one or the snapshot (a parent's ID is always lower than its
    // child's), then every delta below that base in one query, applied oldest first.
    let base: StateIdMap | undefined;
    let lowest = g;
    for (const { id } of this.r.sql.exec<{ id: number }>(GROUP_CHAIN_SQL, g)) {
      const cached = this.groups.get(id);
      if (cached) {
        base = cached;
        break;
      }
      lowest = id;
    }
    const delta = new Map<StateKey, string | null>();
    for (const e of this.r.sql.exec<{ type: string; state_key: string; event_id: string | null }>(GROUP_ENTRIES_SQL, g, lowest)) {
      const k = stateKey(e.type, e.state_key);
      if (!base && e.event_id === null) delta.delete(k);
      else delta.set(k, e.event_id);
    }
    const map = base ? layerState(base, delta) : (delta as StateIdMap);
    this.cacheGroup(g, map);
    return map;
  }

  /** Entries held by the cached groups: a full map's size, a layered map's overlay, and each
   *  base in use once (baseRefs counts the cached layered maps on it). */
  private groupEntries = 0;
  private baseRefs = new Map<StateIdMap, number>();

  /** LRU-cache a group's state, bounded by count and by total entries. Groups are mostly
   *  LayeredStates sharing a base (state-layers.ts), so the forward extremities' states of a
   *  large room under concurrent joins stay cached. */
  cacheGroup(id: number, map: StateIdMap): void {
    const old = this.groups.get(id);
    if (old) this.countGroup(old, -1);
    this.groups.delete(id);
    this.groups.set(id, map);
    this.countGroup(map, 1);
    while (this.groups.size > 1 && (this.groups.size > GROUP_CACHE || this.groupEntries > GROUP_CACHE_ENTRIES)) {
      const [k, m] = this.groups.entries().next().value!;
      this.groups.delete(k);
      this.countGroup(m, -1);
    }
  }

  private countGroup(map: StateIdMap, sign: 1 | -1): void {
    if (!(map instanceof LayeredState)) {
      this.groupEntries += sign * map.size;
      return;
    }
    this.groupEntries += sign * map.over.size;
    const refs = (this.baseRefs.get(map.base) ?? 0) + sign;
    if (refs === 0) this.baseRefs.delete(map.base);
    else this.baseRefs.set(map.base, refs);
    if (refs === 0) this.groupEntries -= map.base.size;
    else if (refs === 1 && sign === 1) this.groupEntries += map.base.size;
  }

  /** State before an event: across its prev events we hold, and the states supplied for
   *  those we do not (see AdmitMode.extraStates). */
  stateBefore(prevs: StoredEvent[], extra: StateIdMap[]): StateAt {
    if (extra.length === 0) return this.stateAcross(prevs);
    const maps = [...new Set(prevs.map((p) => p.stateAfter))].map((g) => this.groupState(g)).concat(extra);
    if (maps.length === 1) return { map: maps[0], group: null, resolved: true };
    return { map: this.resolveMaps(maps), group: null, resolved: true };
  }

  /** State after a set of prev events: one → its state; several → state resolution. The same
   *  set is often asked for twice in a row (a make_join template, then the send_join built on
   *  it; a local event built, then admitted): recent resolutions are remembered by their groups,
   *  with the group the result was stored as once an event stored it (decideAndPersist). */
  stateAcross(prevs: StoredEvent[]): StateAt {
    const groups = [...new Set(prevs.map((p) => p.stateAfter))];
    if (groups.length === 1) return { map: this.groupState(groups[0]), group: groups[0], resolved: false };
    const memoKey = groups.map(String).sort().join(",");
    const hit = this.acrossMemo.get(memoKey);
    if (hit) {
      this.acrossMemo.delete(memoKey);
      this.acrossMemo.set(memoKey, hit);
      return hit.group === null ? { map: hit.map, group: null, resolved: true, memoKey } : { map: this.groupState(hit.group), group: hit.group, resolved: false };
    }
    const map = this.resolveMaps(groups.map((g) => this.groupState(g)));
    this.rememberAcross(memoKey, map, null);
    return { map, group: null, resolved: true, memoKey };
  }

  private acrossMemo = new Map<string, { map: StateIdMap; group: number | null }>();

  rememberAcross(memoKey: string, map: StateIdMap, group: number | null): void {
    this.acrossMemo.delete(memoKey);
    this.acrossMemo.set(memoKey, { map: group === null ? map : new Map(), group });
    // A few full-state maps at most (each is the size of the room's state).
    while (this.acrossMemo.size > ACROSS_MEMO) this.acrossMemo.delete(this.acrossMemo.keys().next().value!);
  }

  /** State resolution over state maps, with the auth-chain walks reading auth event IDs
   *  through authIdsOf instead of loading every event of the state, and the conflicted keys
   *  found among the maps' differences from their shared base (splitShared) when they share
   *  one, instead of comparing every key of every map. */
  resolveMaps(maps: StateIdMap[]): StateIdMap {
    return resolveState(this.r.head.rv!, maps, (id) => this.r.events.loadEvent(id)?.ev, {
      isRejected: (id) => this.r.events.loadEvent(id)?.status === "rejected",
      authEvents: this.authIdsOf,
      split: splitShared,
    });
  }

  /** Auth event IDs by event ID, for state resolution (ResolveOptions.authEvents). Resolving
   *  walks the auth chains of every event in the state sets: in a room with 10,000 members that
   *  loaded 10,000 whole events per resolution, past the 4,096-event cache each one a storage
   *  read and a JSON parse. This index keeps only the ID lists (shared between events that cite
   *  the same auth events, as most members' joins do), read from auth_edges. */
  private authIndex = new Map<string, readonly string[]>();
  private authLists = new Map<string, readonly string[]>();
  private readonly authIdsOf = (id: string): readonly string[] | undefined => {
    const hit = this.authIndex.get(id);
    if (hit) return hit;
    let ids: string[];
    const se = this.r.events.cached(id);
    if (se) ids = se.ev.auth_events;
    else {
      ids = this.r.sql.exec<{ a: string }>("SELECT auth_event_id AS a FROM auth_edges WHERE event_id = ?", id).toArray().map((r) => r.a);
      // No auth events: the create event, or an event we do not have.
      if (ids.length === 0 && !this.r.events.loadEvent(id)) return undefined;
    }
    const listKey = [...ids].sort().join(" ");
    let list = this.authLists.get(listKey);
    if (!list) {
      list = Object.freeze([...ids]);
      this.authLists.set(listKey, list);
    }
    if (this.authIndex.size >= AUTH_INDEX) {
      this.authIndex.clear();
      this.authLists.clear();
    }
    this.authIndex.set(id, list);
    return list;
  };

  /** The state entries the auth rules consult for `ev` (its auth events selection + create). */
  authMapFrom(ids: StateIdMap, ev: Pick<RoomEvent, "type" | "sender" | "state_key" | "content">): StateMap {
    const keys = authEventKeys(this.r.head.rv!, ev);
    keys.push(CREATE_KEY);
    return this.stateMapOf(ids, keys);
  }

  stateMapOf(ids: StateIdMap, keys: Iterable<StateKey>): StateMap {
    const out: StateMap = new Map();
    for (const k of keys) {
      const id = ids.get(k);
      const e = id ? this.r.events.loadEvent(id) : undefined;
      if (e) out.set(k, e.ev);
    }
    return out;
  }

  currentAuthMap(keys: StateKey[]): StateMap {
    return this.stateMapOf(this.groupState(this.r.head.currentGroup), keys);
  }

  /** The room's current state as it was at stream position `n` (groupAtStream), for /sync: while
   *  it is the current state and its group is not cached (a room just started), a
   *  CurrentStateView that reads only the keys asked for, instead of building the whole state;
   *  an older group not cached (the state before a timeline that changed the state, or at an
   *  incremental sync's `since`) likewise as a GroupStateView over its chain of deltas. */
  stateForSync(n: number, spans?: GroupSpans): StateIdMap {
    const g = this.groupAtStream(n, spans);
    if (g === null || this.groups.has(g)) return this.groupState(g);
    if (g !== this.r.head.currentGroup) {
      // (The same view for both ends of a timeline in the same older state.)
      if (this.olderView?.group !== g) this.olderView = new GroupStateView(this.r.sql, g, () => this.groupState(g));
      return this.olderView;
    }
    if (this.currentView?.group !== g) this.currentView = new CurrentStateView(this.r.sql, g, () => this.r.head.memberCounts, (rows) => this.r.events.cacheRows(rows));
    return this.currentView;
  }

  /** See stateForSync; dropped with every other cache (clear). */
  private currentView?: CurrentStateView;
  private olderView?: GroupStateView;

  /** The room's current state as it was at stream position `n`: the resolution over the forward
   *  extremities then (current_groups), not the state after the event at `n`, which after
   *  concurrent events (several joins at once) holds only its own branch. Positions before
   *  current_groups was kept fall back to the state after the event. */
  groupAtStream(n: number, spans?: GroupSpans): number | null {
    const known = spans?.find((s) => s.from <= n && n <= s.to);
    if (known) return known.grp;
    const cur = this.r.sql.exec<{ stream: number; grp: number | null }>("SELECT stream, grp FROM current_groups WHERE stream <= ? ORDER BY stream DESC LIMIT 1", n).toArray()[0];
    if (cur) {
      // No change of the current group between the row's position and n.
      spans?.push({ from: cur.stream, to: n, grp: cur.grp });
      return cur.grp;
    }
    const row = this.r.sql.exec<{ event_id: string }>("SELECT event_id FROM events WHERE stream IS NOT NULL AND stream <= ? ORDER BY stream DESC LIMIT 1", n).toArray()[0];
    return row ? this.r.events.loadEvent(row.event_id)!.stateAfter : null;
  }

}
