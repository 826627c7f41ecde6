// A tiny hand-built DAG builder for state resolution tests. Event IDs are readable fakes ("$PA");
// origin_server_ts increases in creation order unless given. Auth events are chosen like the
// spec's "Auth events selection" from the state before the event (which the builder tracks along
// each branch without running any auth checks: the tests decide what is legal).
import { stateKey, type JsonObject, type RoomEvent, type StateIdMap, type StateKey } from "../../src/core/types";
import { getRoomVersion, type RoomVersion } from "../../src/core/room-versions";

export const ALICE = "@alice:example.org"; // the room creator
export const BOB = "@bob:example.org";
export const CHARLIE = "@charlie:example.org";
export const EVELYN = "@evelyn:example.org";
export const ZARA = "@zara:example.org";

export const PL = stateKey("m.room.power_levels", "");
export const JR = stateKey("m.room.join_rules", "");
export const TOPIC = stateKey("m.room.topic", "");
export const CREATE = stateKey("m.room.create", "");
export const member = (u: string): StateKey => stateKey("m.room.member", u);

export interface EvOpts {
  /** prev_events; default: the previously added event. */
  prev?: string[];
  /** The state before the event, when `prev` has several entries. */
  stateBefore?: StateIdMap;
  ts?: number;
}

export class Dag {
  readonly rv: RoomVersion;
  readonly roomId: string;
  readonly events = new Map<string, RoomEvent>();
  private readonly after = new Map<string, StateIdMap>();
  private last: string | undefined;
  private clock = 0;

  /**
   * Room version 12: create event "$CREATE" in room "!CREATE" (room ID = create event ID with
   * `!`), no room_id in the create PDU, and the create event is not listed in auth_events.
   */
  constructor(version: string) {
    this.rv = getRoomVersion(version)!;
    this.roomId = this.rv.roomIdFromCreate ? "!CREATE" : "!room:example.org";
  }

  readonly getEvent = (id: string): RoomEvent | undefined => this.events.get(id);

  /** Add a state event. */
  ev(
    id: string,
    sender: string,
    type: string,
    state_key: string,
    content: JsonObject,
    opts: EvOpts = {},
  ): RoomEvent {
    if (this.events.has(id)) throw new Error(`duplicate ${id}`);
    const prev = opts.prev ?? (this.last ? [this.last] : []);
    let before: StateIdMap;
    if (opts.stateBefore) before = opts.stateBefore;
    else if (prev.length === 0) before = new Map();
    else if (prev.length === 1) before = this.stateAfter(prev[0]!);
    else throw new Error(`${id}: several prev_events need an explicit stateBefore`);

    const auth: string[] = [];
    if (type !== "m.room.create") {
      const keys = [PL, member(sender)];
      if (!this.rv.roomIdFromCreate) keys.unshift(CREATE);
      if (type === "m.room.member") {
        keys.push(member(state_key));
        const m = content["membership"];
        if (m === "join" || m === "invite" || m === "knock") keys.push(JR);
      }
      for (const k of new Set(keys)) {
        const a = before.get(k);
        if (a) auth.push(a);
      }
    }
    const ts = opts.ts ?? (this.clock += 1000);
    if (opts.ts !== undefined) this.clock = Math.max(this.clock, opts.ts);
    const noRoomId = type === "m.room.create" && this.rv.roomIdFromCreate;
    const ev: RoomEvent = {
      event_id: id,
      room_id: this.roomId,
      sender,
      type,
      state_key,
      content,
      origin_server_ts: ts,
      depth: 1 + Math.max(0, ...prev.map((p) => this.events.get(p)!.depth)),
      prev_events: prev,
      auth_events: auth,
      pdu: {
        ...(noRoomId ? {} : { room_id: this.roomId }),
        sender,
        type,
        state_key,
        content,
        origin_server_ts: ts,
        prev_events: prev,
        auth_events: auth,
        depth: 0,
        hashes: { sha256: "" },
        signatures: {},
      },
    };
    this.events.set(id, ev);
    this.after.set(id, new Map(before).set(stateKey(type, state_key), id));
    this.last = id;
    return ev;
  }

  /** The usual start of a room: create, Alice joins, power levels, public join rules, then the
   *  given users join. `users` are extra entries of the initial power levels. */
  init(users: Record<string, number> = {}, joiners: string[] = [BOB, CHARLIE, ZARA]): this {
    this.ev("$CREATE", ALICE, "m.room.create", "", this.rv.implicitCreator ? { room_version: this.rv.id } : { creator: ALICE, room_version: this.rv.id });
    this.ev("$IMA", ALICE, "m.room.member", ALICE, { membership: "join" });
    this.ev("$IPOWER", ALICE, "m.room.power_levels", "", this.pl(users));
    this.ev("$IJR", ALICE, "m.room.join_rules", "", { join_rule: "public" });
    for (const u of joiners) this.ev(`$IM${u[1]!.toUpperCase()}`, u, "m.room.member", u, { membership: "join" });
    return this;
  }

  /** Power levels content: Alice has 100 before v12; from v12 she is the creator (infinite
   *  power) and must not be listed. */
  pl(users: Record<string, number>, extra: JsonObject = {}): JsonObject {
    const u: JsonObject = this.rv.privilegedCreators ? {} : { [ALICE]: 100 };
    Object.assign(u, users);
    return { users: u, ...extra };
  }

  join(id: string, user: string, opts?: EvOpts) {
    return this.ev(id, user, "m.room.member", user, { membership: "join" }, opts);
  }
  topic(id: string, sender: string, text = id, opts?: EvOpts) {
    return this.ev(id, sender, "m.room.topic", "", { topic: text }, opts);
  }
  powerLevels(id: string, sender: string, users: Record<string, number>, extra: JsonObject = {}, opts?: EvOpts) {
    return this.ev(id, sender, "m.room.power_levels", "", this.pl(users, extra), opts);
  }
  membership(id: string, sender: string, target: string, membership: string, opts?: EvOpts) {
    return this.ev(id, sender, "m.room.member", target, { membership }, opts);
  }

  /** The state after an event (along the branch the builder followed). */
  stateAfter(id: string): StateIdMap {
    const s = this.after.get(id);
    if (!s) throw new Error(`unknown event ${id}`);
    return new Map(s);
  }

  /** A state map from event IDs (later ones override earlier ones with the same key). */
  stateOf(ids: string[]): StateIdMap {
    const s: StateIdMap = new Map();
    for (const id of ids) {
      const e = this.events.get(id)!;
      s.set(stateKey(e.type, e.state_key!), id);
    }
    return s;
  }
}

/** Readable form of a state map for assertions: { "type|state_key": event_id }. */
export function readable(s: StateIdMap): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of [...s].sort()) out[k.replace("\u0000", "|")] = v;
  return out;
}
