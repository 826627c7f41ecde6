// The auth-event graph as state resolution sees it: a memoising view over `getEvent`, plus the
// graph walks the algorithm needs. Every walk here is iterative (no recursion: auth chains can be
// thousands of events deep) and linear in the part of the graph it visits.
import type { RoomEvent } from "../types";
import type { RoomVersion } from "../room-versions";

/**
 * A read-only, memoised view of the room's events for the duration of one `resolveState` call.
 *
 * Events that `getEvent` cannot produce are treated as absent: they are left out of auth chains
 * and conflicted sets rather than failing the whole resolution (a server may lack an old auth
 * event; the auth rules then see the state without it).
 *
 * Room version 12 create events: from v12 on the create event is never listed in `auth_events`;
 * it is implied by the room ID (room ID = `!` + the create event's reference hash, and the event
 * ID is `$` + the same hash). We therefore keep it OUT of the auth graph (auth chains are, as the
 * spec defines them, what `auth_events` links reach) but make it available to every auth check and
 * power-level lookup through {@link EventGraph.createEvent}.
 */
export class EventGraph {
  private readonly cache = new Map<string, RoomEvent | null>();

  /** `authIds`, when given, answers "the auth_events of this event, or undefined if unknown"
   *  without producing the whole event (see ResolveOptions.authEvents); it must agree with
   *  `fetch`, and should be cheap (it is not memoised here). */
  constructor(
    readonly rv: RoomVersion,
    private readonly fetch: (eventId: string) => RoomEvent | undefined,
    private readonly authIds?: (eventId: string) => readonly string[] | undefined,
  ) {}

  get(eventId: string): RoomEvent | undefined {
    let ev = this.cache.get(eventId);
    if (ev === undefined) {
      ev = this.fetch(eventId) ?? null;
      this.cache.set(eventId, ev);
    }
    return ev ?? undefined;
  }

  /** The event's `auth_events` that we actually have. */
  authEvents(ev: RoomEvent): RoomEvent[] {
    const out: RoomEvent[] = [];
    for (const id of ev.auth_events) {
      const a = this.get(id);
      if (a) out.push(a);
    }
    return out;
  }

  /**
   * v12: the create event implied by `ev`'s room ID (`!<hash>` → `$<hash>`), or `ev` itself if
   * it is the create event. (Before v12 the create event is simply one of the auth events.)
   */
  createEvent(ev: RoomEvent): RoomEvent | undefined {
    if (ev.type === "m.room.create" && ev.state_key === "") return ev;
    return this.get(createEventIdForRoom(ev.room_id));
  }

  /**
   * The union of the auth chains of `starts` (the events reachable through `auth_events` links;
   * a start event is included only if another start reaches it), skipping — and not walking
   * past — events for which `stop` returns true.
   */
  authChainUnion(starts: Iterable<string>, stop?: (id: string) => boolean): Set<string> {
    const seen = new Set<string>();
    const stack: string[] = [];
    const push = (authEvents: readonly string[]) => {
      for (const id of authEvents) {
        if (seen.has(id) || (stop && stop(id))) continue;
        if (!this.authEventsOf(id)) continue;
        seen.add(id);
        stack.push(id);
      }
    };
    for (const id of starts) {
      const a = this.authEventsOf(id);
      if (a) push(a);
    }
    while (stack.length > 0) push(this.authEventsOf(stack.pop()!)!);
    return seen;
  }

  /** An event's `auth_events` (undefined if we do not have the event). The walks above visit
   *  every event of the state sets, the unconflicted ones included, and read nothing else: with
   *  an `authIds` lookup they do not make the caller produce thousands of whole events. */
  authEventsOf(eventId: string): readonly string[] | undefined {
    const known = this.cache.get(eventId);
    if (known !== undefined) return known?.auth_events;
    return this.authIds ? this.authIds(eventId) : this.get(eventId)?.auth_events;
  }
}

/** v12: the create event's ID is the room ID's hash with the sigil `$` instead of `!`. */
export function createEventIdForRoom(roomId: string): string {
  return "$" + roomId.slice(1);
}
