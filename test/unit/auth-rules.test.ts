// Unit tests of the pure authorization rules (src/core/auth-rules.ts) across room versions 1–12.
import { describe, it, expect } from "vitest";
import {
  authEventKeys,
  buildAuthState,
  checkAuthEventsShape,
  checkEventAuth,
  creatorsOf,
  isAuthValidUserId,
  isCreator,
  joinRuleOf,
  markThirdPartyInviteVerified,
  membershipOf,
  parsePowerLevelValue,
  powerLevelOf,
  requiredPowerLevel,
  thirdPartyInviteToVerify,
  type AuthResult,
} from "../../src/core/auth-rules";
import { getRoomVersion, type RoomVersion } from "../../src/core/room-versions";
import { stateKey, type JsonObject, type PDU, type RoomEvent, type StateMap } from "../../src/core/types";

const ALICE = "@alice:a.test"; // room creator, PL 100 (v12: infinite)
const BOB = "@bob:b.test";
const CAROL = "@carol:c.test";
const DAVE = "@dave:a.test";
const MALLORY = "@mallory:evil.test";

const ALL_VERSIONS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

function rvOf(id: string): RoomVersion {
  const rv = getRoomVersion(id);
  if (!rv) throw new Error(`no room version ${id}`);
  return rv;
}

function domain(id: string): string {
  return id.slice(id.indexOf(":") + 1);
}

let counter = 0;

interface EventSpec {
  type: string;
  sender: string;
  state_key?: string;
  content?: unknown;
  prev_events?: string[];
  room_id?: string;
  event_id?: string;
  redacts?: string;
  /** Leave room_id out of the PDU (v12 create events). */
  noPduRoomId?: boolean;
}

/** A RoomEvent with a fake ID (`$eN:<sender domain>`, so v1/v2 domain rules can be exercised). */
function makeEvent(spec: EventSpec, roomId: string): RoomEvent {
  counter++;
  const room_id = spec.room_id ?? roomId;
  const content = ("content" in spec ? spec.content : {}) as JsonObject;
  const pdu: PDU = {
    sender: spec.sender,
    type: spec.type,
    content,
    origin_server_ts: counter,
    prev_events: spec.prev_events ?? [],
    auth_events: [],
    depth: counter,
    hashes: { sha256: "" },
    signatures: {},
  };
  if (!spec.noPduRoomId) pdu.room_id = room_id;
  if (spec.state_key !== undefined) pdu.state_key = spec.state_key;
  if (spec.redacts !== undefined) pdu.redacts = spec.redacts;
  const ev: RoomEvent = {
    event_id: spec.event_id ?? `$e${counter}:${domain(spec.sender)}`,
    room_id,
    sender: spec.sender,
    type: spec.type,
    content,
    origin_server_ts: counter,
    depth: counter,
    prev_events: spec.prev_events ?? ["$previous:a.test"],
    auth_events: [],
    pdu,
  };
  if (spec.state_key !== undefined) ev.state_key = spec.state_key;
  if (spec.redacts !== undefined) ev.redacts = spec.redacts;
  return ev;
}

interface RoomOptions {
  createContent?: JsonObject;
  /** Power levels content; null = no m.room.power_levels event. */
  powerLevels?: JsonObject | null;
  /** null = no m.room.join_rules event. */
  joinRule?: string | null;
}

/** A room with: create (by Alice), Alice joined, power levels, join rules. */
class Room {
  readonly rv: RoomVersion;
  readonly roomId: string;
  readonly create: RoomEvent;
  state: StateMap = new Map();

  constructor(version: string, opts: RoomOptions = {}) {
    this.rv = rvOf(version);
    const v = Number(version);
    const createContent: JsonObject = opts.createContent ?? (v >= 11 ? { room_version: version } : { creator: ALICE, room_version: version });
    if (this.rv.roomIdFromCreate) {
      const id = `$createhash${++counter}`;
      this.roomId = `!${id.slice(1)}`;
      this.create = makeEvent(
        { type: "m.room.create", sender: ALICE, state_key: "", content: createContent, prev_events: [], event_id: id, noPduRoomId: true },
        this.roomId,
      );
    } else {
      this.roomId = `!room${++counter}:a.test`;
      this.create = makeEvent({ type: "m.room.create", sender: ALICE, state_key: "", content: createContent, prev_events: [] }, this.roomId);
    }
    this.apply(this.create);
    this.apply(this.event({ type: "m.room.member", sender: ALICE, state_key: ALICE, content: { membership: "join" } }));
    const pl = opts.powerLevels === undefined ? { users: this.rv.privilegedCreators ? {} : { [ALICE]: 100 } } : opts.powerLevels;
    if (pl !== null) this.apply(this.event({ type: "m.room.power_levels", sender: ALICE, state_key: "", content: pl }));
    const jr = opts.joinRule === undefined ? "invite" : opts.joinRule;
    if (jr !== null) this.apply(this.event({ type: "m.room.join_rules", sender: ALICE, state_key: "", content: { join_rule: jr } }));
  }

  event(spec: EventSpec): RoomEvent {
    return makeEvent(spec, this.roomId);
  }
  apply(ev: RoomEvent): this {
    this.state.set(stateKey(ev.type, ev.state_key ?? ""), ev);
    return this;
  }
  check(spec: EventSpec | RoomEvent): AuthResult {
    const ev = "pdu" in spec ? spec : this.event(spec);
    return checkEventAuth(ev, this.state, this.rv);
  }
  /** Put a membership into the state directly (no auth check). */
  setMember(user: string, membership: string, extra: JsonObject = {}): this {
    return this.apply(this.event({ type: "m.room.member", sender: user, state_key: user, content: { membership, ...extra } }));
  }
  setPowerLevels(content: JsonObject): this {
    return this.apply(this.event({ type: "m.room.power_levels", sender: ALICE, state_key: "", content }));
  }
  setJoinRule(join_rule: unknown, extra: JsonObject = {}): this {
    return this.apply(this.event({ type: "m.room.join_rules", sender: ALICE, state_key: "", content: { join_rule, ...extra } as JsonObject }));
  }
  member(sender: string, target: string, membership: string, extra: JsonObject = {}): AuthResult {
    return this.check({ type: "m.room.member", sender, state_key: target, content: { membership, ...extra } });
  }
  /** Users power levels with the creator listed where the version allows it. */
  users(u: Record<string, number>): JsonObject {
    return this.rv.privilegedCreators ? u : { [ALICE]: 100, ...u };
  }
}

function allowed(r: AuthResult): void {
  expect(r, r.allowed ? "" : (r as { reason: string }).reason).toEqual({ allowed: true });
}
function rejected(r: AuthResult, reasonPart?: string | RegExp): void {
  expect(r.allowed).toBe(false);
  if (!r.allowed) {
    expect(r.reason.length).toBeGreaterThan(0);
    if (reasonPart !== undefined) expect(r.reason).toMatch(reasonPart);
  }
}

// ---------------------------------------------------------------------------------------------

describe("m.room.create (rule 1)", () => {
  function createIn(version: string, spec: Partial<EventSpec> = {}): { ev: RoomEvent; rv: RoomVersion } {
    const rv = rvOf(version);
    const base: EventSpec = {
      type: "m.room.create",
      sender: ALICE,
      state_key: "",
      content: Number(version) >= 11 ? {} : { creator: ALICE },
      prev_events: [],
      noPduRoomId: rv.roomIdFromCreate,
      event_id: "$abc",
      ...spec,
    };
    return { ev: makeEvent(base, rv.roomIdFromCreate ? "!abc" : "!r:a.test"), rv };
  }
  const check = (x: { ev: RoomEvent; rv: RoomVersion }) => checkEventAuth(x.ev, new Map(), x.rv);

  it.each(ALL_VERSIONS)("v%s: a well-formed create event is allowed", (v) => allowed(check(createIn(v))));

  it.each(ALL_VERSIONS)("v%s: rejects a create event with prev_events (1.1)", (v) => {
    rejected(check(createIn(v, { prev_events: ["$x:a.test"] })), /1\.1/);
  });

  it.each(ALL_VERSIONS.slice(0, 11))("v%s: rejects a room_id domain different from the sender's (1.2)", (v) => {
    rejected(check(createIn(v, { room_id: "!r:other.test" })), /1\.2/);
    rejected(check(createIn(v, { room_id: "!nodomain" })), /1\.2/);
  });

  it("v12: rejects a create event carrying a room_id (1.2)", () => {
    rejected(check(createIn("12", { noPduRoomId: false })), /room_id/);
  });

  it.each(ALL_VERSIONS)("v%s: rejects an unrecognised content.room_version (1.3)", (v) => {
    const base = Number(v) >= 11 ? {} : { creator: ALICE };
    rejected(check(createIn(v, { content: { ...base, room_version: "999" } })), /1\.3/);
    rejected(check(createIn(v, { content: { ...base, room_version: 11 } })), /1\.3/);
    allowed(check(createIn(v, { content: { ...base, room_version: v } })));
  });

  it.each(ALL_VERSIONS.slice(0, 10))("v%s: rejects a create event without content.creator (1.4)", (v) => {
    rejected(check(createIn(v, { content: {} })), /creator/);
  });
  it.each(["11", "12"])("v%s: no creator property is needed", (v) => allowed(check(createIn(v, { content: {} }))));

  it("v12: additional_creators must be an array of valid user IDs (1.4)", () => {
    allowed(check(createIn("12", { content: { additional_creators: [BOB, CAROL] } })));
    allowed(check(createIn("12", { content: { additional_creators: [] } })));
    rejected(check(createIn("12", { content: { additional_creators: BOB } })), /additional_creators/);
    rejected(check(createIn("12", { content: { additional_creators: ["bob"] } })), /additional_creators/);
    rejected(check(createIn("12", { content: { additional_creators: ["@bob"] } })), /additional_creators/);
    rejected(check(createIn("12", { content: { additional_creators: [42] } })), /additional_creators/);
  });
  it("v11: additional_creators is not validated (no such concept)", () => {
    allowed(check(createIn("11", { content: { additional_creators: "junk" } })));
  });
});

describe("room identity and federation (rules 2, 3)", () => {
  it.each(ALL_VERSIONS)("v%s: rejects an event whose auth state's create event is from another room", (v) => {
    const room = new Room(v, { joinRule: "public" });
    const other = new Room(v, { joinRule: "public" });
    // The event claims room `room`, but is checked against the state of `other`.
    const ev = room.event({ type: "m.room.message", sender: ALICE, content: { body: "hi" } });
    rejected(checkEventAuth(ev, other.state, other.rv), /room/);
    allowed(checkEventAuth(ev, room.state, room.rv));
  });

  it("v12: the room ID must be the create event's ID with sigil ! (rule 2)", () => {
    const room = new Room("12");
    rejected(room.check({ type: "m.room.message", sender: ALICE, room_id: "!somethingelse", content: {} }), /room/);
    allowed(room.check({ type: "m.room.message", sender: ALICE, content: {} }));
  });

  it.each(ALL_VERSIONS)("v%s: rejects when there is no create event in the auth state", (v) => {
    const room = new Room(v);
    const state = new Map(room.state);
    state.delete(stateKey("m.room.create", ""));
    rejected(checkEventAuth(room.event({ type: "m.room.message", sender: ALICE, content: {} }), state, room.rv), /create/);
  });

  it.each(["1", "6", "11", "12"])("v%s: m.federate false keeps other servers out (rule 3)", (v) => {
    const base: JsonObject = Number(v) >= 11 ? {} : { creator: ALICE };
    const room = new Room(v, { joinRule: "public", createContent: { ...base, "m.federate": false } });
    rejected(room.member(BOB, BOB, "join"), /m\.federate/);
    allowed(room.member(DAVE, DAVE, "join")); // same server as the creator
  });
});

describe("m.room.aliases special case (v1–v5 rule 4)", () => {
  it.each(["1", "2", "3", "4", "5"])("v%s: allowed from the state_key's server, even if not joined", (v) => {
    const room = new Room(v);
    allowed(room.check({ type: "m.room.aliases", sender: BOB, state_key: "b.test", content: { aliases: ["#x:b.test"] } }));
    rejected(room.check({ type: "m.room.aliases", sender: BOB, state_key: "a.test", content: { aliases: [] } }), /4\.2/);
    rejected(room.check({ type: "m.room.aliases", sender: BOB, content: { aliases: [] } }), /state_key/);
  });
  it.each(["6", "7", "11", "12"])("v%s: m.room.aliases is an ordinary state event", (v) => {
    const room = new Room(v);
    rejected(room.check({ type: "m.room.aliases", sender: BOB, state_key: "b.test", content: { aliases: [] } }), /not joined/);
    room.setMember(BOB, "join");
    rejected(room.check({ type: "m.room.aliases", sender: BOB, state_key: "b.test", content: { aliases: [] } }), /requires power level 50/);
    allowed(room.check({ type: "m.room.aliases", sender: ALICE, state_key: "b.test", content: { aliases: [] } }));
  });
});

describe("membership join (rule 4.3)", () => {
  it.each(ALL_VERSIONS)("v%s: the creator's first join right after the create event is allowed", (v) => {
    const room = new Room(v, { powerLevels: null, joinRule: null });
    room.state.delete(stateKey("m.room.member", ALICE));
    const join = room.event({ type: "m.room.member", sender: ALICE, state_key: ALICE, content: { membership: "join" }, prev_events: [room.create.event_id] });
    allowed(room.check(join));
    // Anybody else (no join rules event = invite-only) is refused.
    const bob = room.event({ type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: "join" }, prev_events: [room.create.event_id] });
    rejected(room.check(bob));
    // ...and the creator too if the create event is not the only prev event.
    const late = room.event({ type: "m.room.member", sender: ALICE, state_key: ALICE, content: { membership: "join" }, prev_events: [room.create.event_id, "$x:a.test"] });
    rejected(room.check(late));
  });

  it("v1–v10 use content.creator, v11+ the create event's sender", () => {
    for (const v of ["1", "10"]) {
      const room = new Room(v, { powerLevels: null, joinRule: null, createContent: { creator: BOB } });
      room.state.delete(stateKey("m.room.member", ALICE));
      const prev = [room.create.event_id];
      allowed(room.check({ type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: "join" }, prev_events: prev }));
      rejected(room.check({ type: "m.room.member", sender: ALICE, state_key: ALICE, content: { membership: "join" }, prev_events: prev }));
    }
    for (const v of ["11", "12"]) {
      const room = new Room(v, { powerLevels: null, joinRule: null, createContent: { creator: BOB } });
      room.state.delete(stateKey("m.room.member", ALICE));
      const prev = [room.create.event_id];
      allowed(room.check({ type: "m.room.member", sender: ALICE, state_key: ALICE, content: { membership: "join" }, prev_events: prev }));
      rejected(room.check({ type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: "join" }, prev_events: prev }));
    }
  });

  it.each(ALL_VERSIONS)("v%s: join_rules public lets anybody join", (v) => {
    const room = new Room(v, { joinRule: "public" });
    allowed(room.member(BOB, BOB, "join"));
  });

  it.each(ALL_VERSIONS)("v%s: a user cannot join on behalf of someone else (4.3.2)", (v) => {
    const room = new Room(v, { joinRule: "public" });
    rejected(room.member(MALLORY, BOB, "join"), /4\.3\.2/);
  });

  it.each(ALL_VERSIONS)("v%s: a banned user cannot join, even a public room (4.3.3)", (v) => {
    const room = new Room(v, { joinRule: "public" }).setMember(BOB, "ban");
    rejected(room.member(BOB, BOB, "join"), /banned/);
  });

  it.each(ALL_VERSIONS)("v%s: invite-only: invited or joined users may join, others not (4.3.4)", (v) => {
    const room = new Room(v, { joinRule: "invite" });
    rejected(room.member(BOB, BOB, "join"), /4\.3\.4/);
    room.setMember(BOB, "invite");
    allowed(room.member(BOB, BOB, "join"));
    room.setMember(BOB, "join");
    allowed(room.member(BOB, BOB, "join")); // profile change
  });

  it.each(ALL_VERSIONS)("v%s: a kicked user cannot rejoin an invite-only room", (v) => {
    const room = new Room(v, { joinRule: "invite" });
    room.setMember(BOB, "join");
    room.apply(room.event({ type: "m.room.member", sender: ALICE, state_key: BOB, content: { membership: "leave" } }));
    rejected(room.member(BOB, BOB, "join"));
  });

  it.each(ALL_VERSIONS)("v%s: no m.room.join_rules event behaves as invite-only", (v) => {
    const room = new Room(v, { joinRule: null });
    expect(joinRuleOf(room.state)).toBe("invite");
    rejected(room.member(BOB, BOB, "join"));
    room.setMember(BOB, "invite");
    allowed(room.member(BOB, BOB, "join"));
  });

  it.each(ALL_VERSIONS)("v%s: unknown or malformed join rules allow no joins", (v) => {
    const room = new Room(v, { joinRule: "private" }).setMember(BOB, "invite");
    rejected(room.member(BOB, BOB, "join"), /4\.3\.7/);
    room.setJoinRule(42);
    rejected(room.member(BOB, BOB, "join"));
  });

  it("knock join rule: like invite from v7, unknown before", () => {
    for (const v of ["6", "7", "12"]) {
      const room = new Room(v, { joinRule: "knock" }).setMember(BOB, "invite");
      if (v === "6") rejected(room.member(BOB, BOB, "join"));
      else allowed(room.member(BOB, BOB, "join"));
      rejected(room.member(CAROL, CAROL, "join"));
    }
  });
});

describe("restricted joins (v8+ rule 4.3.5)", () => {
  function restrictedRoom(v: string, rule = "restricted"): Room {
    return new Room(v).setJoinRule(rule, { allow: [{ type: "m.room_membership", room_id: "!space:a.test" }] }).setMember(DAVE, "join");
  }
  const via = (user: string) => ({ join_authorised_via_users_server: user });

  it("v7: the restricted join rule is unknown, so joins are rejected", () => {
    const room = restrictedRoom("7");
    rejected(room.member(BOB, BOB, "join", via(ALICE)));
  });

  it.each(["8", "9", "10", "11", "12"])("v%s: a join authorised by a joined user with invite power is allowed", (v) => {
    const room = restrictedRoom(v);
    allowed(room.member(BOB, BOB, "join", via(ALICE)));
    allowed(room.member(BOB, BOB, "join", via(DAVE))); // invite level defaults to 0
  });

  it.each(["8", "10", "12"])("v%s: rejects when the authorising user lacks invite power", (v) => {
    const room = restrictedRoom(v).setPowerLevels({ users: room_users(v, {}), invite: 50 });
    rejected(room.member(BOB, BOB, "join", via(DAVE)), /cannot invite/);
    allowed(room.member(BOB, BOB, "join", via(ALICE)));
  });

  it.each(["8", "12"])("v%s: rejects when the authorising user is not joined, or absent", (v) => {
    const room = restrictedRoom(v).setMember(CAROL, "invite");
    rejected(room.member(BOB, BOB, "join", via(CAROL)), /not joined/);
    rejected(room.member(BOB, BOB, "join", via(MALLORY)), /not joined/);
    rejected(room.member(BOB, BOB, "join"), /join_authorised_via_users_server/);
    rejected(room.member(BOB, BOB, "join", { join_authorised_via_users_server: 7 }));
  });

  it.each(["8", "12"])("v%s: invited or joined users need no authoriser; banned users never join", (v) => {
    const room = restrictedRoom(v).setMember(BOB, "invite");
    allowed(room.member(BOB, BOB, "join"));
    room.setMember(BOB, "ban");
    rejected(room.member(BOB, BOB, "join", via(ALICE)), /banned/);
  });

  it("knock_restricted: unknown in v8/v9, restricted-or-knock from v10", () => {
    for (const v of ["8", "9"]) {
      const room = restrictedRoom(v, "knock_restricted");
      rejected(room.member(BOB, BOB, "join", via(ALICE)));
      rejected(room.member(BOB, BOB, "knock"));
    }
    for (const v of ["10", "11", "12"]) {
      const room = restrictedRoom(v, "knock_restricted");
      allowed(room.member(BOB, BOB, "join", via(ALICE)));
      rejected(room.member(BOB, BOB, "join"));
      allowed(room.member(BOB, BOB, "knock"));
    }
  });
});

function room_users(v: string, u: Record<string, number>): JsonObject {
  return rvOf(v).privilegedCreators ? u : { [ALICE]: 100, ...u };
}

describe("membership invite (rule 4.4)", () => {
  it.each(ALL_VERSIONS)("v%s: a joined member with invite power may invite", (v) => {
    const room = new Room(v);
    allowed(room.member(ALICE, BOB, "invite"));
    room.setMember(BOB, "leave");
    allowed(room.member(ALICE, BOB, "invite"));
  });

  it.each(ALL_VERSIONS)("v%s: the inviter must be joined (4.4.2)", (v) => {
    const room = new Room(v).setMember(CAROL, "invite");
    rejected(room.member(CAROL, BOB, "invite"), /4\.4\.2/);
    rejected(room.member(MALLORY, BOB, "invite"), /4\.4\.2/);
  });

  it.each(ALL_VERSIONS)("v%s: cannot invite a banned or joined user (4.4.3)", (v) => {
    const room = new Room(v).setMember(BOB, "ban").setMember(CAROL, "join");
    rejected(room.member(ALICE, BOB, "invite"), /ban/);
    rejected(room.member(ALICE, CAROL, "invite"), /join/);
  });

  it.each(ALL_VERSIONS)("v%s: the invite level is enforced (4.4.4)", (v) => {
    const room = new Room(v).setPowerLevels({ users: room_users(v, { [DAVE]: 10 }), invite: 20 }).setMember(DAVE, "join");
    rejected(room.member(DAVE, BOB, "invite"), /invite level/);
    room.setPowerLevels({ users: room_users(v, { [DAVE]: 20 }), invite: 20 });
    allowed(room.member(DAVE, BOB, "invite"));
  });
});

describe("third-party invites (rule 4.4.1)", () => {
  function tpiRoom(v: string): { room: Room; tpi: RoomEvent } {
    const room = new Room(v);
    const tpi = room.event({
      type: "m.room.third_party_invite",
      sender: ALICE,
      state_key: "tok",
      content: { display_name: "b...", key_validity_url: "https://id", public_key: "K1", public_keys: [{ public_key: "K2" }] },
    });
    room.apply(tpi);
    return { room, tpi };
  }
  const signed = (mxid: string, token = "tok") => ({ third_party_invite: { display_name: "b", signed: { mxid, token, signatures: {} } } });

  it.each(["1", "11", "12"])("v%s: structural rules, then the caller-verified signature", (v) => {
    const { room, tpi } = tpiRoom(v);
    const ev = room.event({ type: "m.room.member", sender: ALICE, state_key: BOB, content: { membership: "invite", ...signed(BOB) } });
    rejected(room.check(ev), /signature/);
    const todo = thirdPartyInviteToVerify(ev, room.state);
    expect(todo?.publicKeys).toEqual(["K1", "K2"]);
    expect(todo?.thirdPartyInviteEventId).toBe(tpi.event_id);
    markThirdPartyInviteVerified(ev, tpi.event_id);
    allowed(room.check(ev));
    // Verification against one m.room.third_party_invite event does not carry over to another.
    const other = { ...tpiRoom(v).room.state.get(stateKey("m.room.third_party_invite", "tok"))!, room_id: room.roomId };
    rejected(checkEventAuth(ev, new Map(room.state).set(stateKey("m.room.third_party_invite", "tok"), other), room.rv), /signature/);
  });

  it("rejects malformed or mismatching third-party invites", () => {
    const { room } = tpiRoom("10");
    const inv = (sender: string, target: string, content: JsonObject) =>
      room.member(sender, target, "invite", content);
    rejected(inv(ALICE, BOB, { third_party_invite: {} }), /4\.4\.1\.2/);
    rejected(inv(ALICE, BOB, { third_party_invite: null }), /4\.4\.1\.2/);
    rejected(inv(ALICE, BOB, { third_party_invite: { signed: { mxid: BOB } } }), /4\.4\.1\.3/);
    rejected(inv(ALICE, BOB, signed(CAROL)), /4\.4\.1\.4/);
    rejected(inv(ALICE, BOB, signed(BOB, "nope")), /4\.4\.1\.5/);
    room.setMember(DAVE, "join");
    rejected(inv(DAVE, BOB, signed(BOB)), /4\.4\.1\.6/);
    room.setMember(BOB, "ban");
    rejected(inv(ALICE, BOB, signed(BOB)), /banned/);
  });
});

describe("membership leave (rule 4.5)", () => {
  it.each(ALL_VERSIONS)("v%s: joined and invited users may leave; others may not", (v) => {
    const room = new Room(v).setMember(BOB, "join").setMember(CAROL, "invite").setMember(DAVE, "ban");
    allowed(room.member(BOB, BOB, "leave"));
    allowed(room.member(CAROL, CAROL, "leave")); // reject an invite
    rejected(room.member(DAVE, DAVE, "leave"), /4\.5\.1/); // a banned user cannot unban themselves
    rejected(room.member(MALLORY, MALLORY, "leave"), /4\.5\.1/); // never joined
    room.setMember(BOB, "leave");
    rejected(room.member(BOB, BOB, "leave"), /4\.5\.1/);
  });

  it("a knocking user may rescind the knock from v7", () => {
    for (const v of ["7", "12"]) {
      const room = new Room(v, { joinRule: "knock" }).setMember(BOB, "knock");
      allowed(room.member(BOB, BOB, "leave"));
    }
    const v6 = new Room("6", { joinRule: "knock" }).setMember(BOB, "knock");
    rejected(v6.member(BOB, BOB, "leave"));
  });

  it.each(ALL_VERSIONS)("v%s: kicks need the kick level and a higher level than the target", (v) => {
    const room = new Room(v)
      .setPowerLevels({ users: room_users(v, { [BOB]: 50, [CAROL]: 50, [DAVE]: 10 }) })
      .setMember(BOB, "join")
      .setMember(CAROL, "join")
      .setMember(DAVE, "join");
    allowed(room.member(BOB, DAVE, "leave"));
    rejected(room.member(BOB, CAROL, "leave"), /4\.5\.4/); // equal level
    rejected(room.member(DAVE, BOB, "leave"), /4\.5\.4/); // below kick level
    rejected(room.member(BOB, ALICE, "leave")); // higher level
    allowed(room.member(ALICE, BOB, "leave"));
    allowed(room.member(BOB, MALLORY, "leave")); // never joined target, level 0
  });

  it.each(ALL_VERSIONS)("v%s: the kicker must be joined (4.5.2)", (v) => {
    const room = new Room(v).setPowerLevels({ users: room_users(v, { [BOB]: 80 }) }).setMember(BOB, "invite").setMember(CAROL, "join");
    rejected(room.member(BOB, CAROL, "leave"), /4\.5\.2/);
  });

  it.each(ALL_VERSIONS)("v%s: unbanning needs both the ban and the kick level (4.5.3)", (v) => {
    const room = new Room(v)
      .setPowerLevels({ users: room_users(v, { [BOB]: 60 }), ban: 70, kick: 50 })
      .setMember(BOB, "join")
      .setMember(MALLORY, "ban");
    rejected(room.member(BOB, MALLORY, "leave"), /4\.5\.3/);
    room.setPowerLevels({ users: room_users(v, { [BOB]: 60 }), ban: 50, kick: 70 });
    rejected(room.member(BOB, MALLORY, "leave"), /4\.5\.4/);
    room.setPowerLevels({ users: room_users(v, { [BOB]: 60 }), ban: 60, kick: 60 });
    allowed(room.member(BOB, MALLORY, "leave"));
  });
});

describe("membership ban (rule 4.6)", () => {
  it.each(ALL_VERSIONS)("v%s: bans need the ban level and a higher level than the target", (v) => {
    const room = new Room(v)
      .setPowerLevels({ users: room_users(v, { [BOB]: 50, [CAROL]: 50 }) })
      .setMember(BOB, "join")
      .setMember(CAROL, "join");
    allowed(room.member(BOB, MALLORY, "ban")); // never-joined users can be banned
    allowed(room.member(BOB, DAVE, "ban"));
    rejected(room.member(BOB, CAROL, "ban"), /4\.6\.2/);
    rejected(room.member(CAROL, ALICE, "ban"), /4\.6\.2/);
    rejected(room.member(DAVE, MALLORY, "ban"), /4\.6\.1/); // not joined
    room.setMember(DAVE, "join");
    rejected(room.member(DAVE, MALLORY, "ban"), /4\.6\.2/); // level 0 < ban level 50
  });
});

describe("membership knock (v7+ rule 4.7)", () => {
  it("v6 has no knocking: knock is an unknown membership", () => {
    const room = new Room("6", { joinRule: "knock" });
    rejected(room.member(BOB, BOB, "knock"), /knock/);
  });

  it.each(["7", "8", "9", "10", "11", "12"])("v%s: knocking follows the join rule and the membership", (v) => {
    const room = new Room(v, { joinRule: "knock" });
    allowed(room.member(BOB, BOB, "knock"));
    rejected(room.member(MALLORY, BOB, "knock"), /4\.7\.2/);
    room.setMember(BOB, "leave");
    allowed(room.member(BOB, BOB, "knock"));
    for (const m of ["ban", "invite", "join"]) {
      room.setMember(BOB, m);
      rejected(room.member(BOB, BOB, "knock"), /4\.7\.4/);
    }
    for (const jr of ["public", "invite", "restricted"]) {
      room.setJoinRule(jr);
      rejected(room.member(CAROL, CAROL, "knock"), /4\.7\.1/);
    }
  });
});

describe("membership shape (rules 4.1, 4.8)", () => {
  it.each(ALL_VERSIONS)("v%s: rejects missing/odd membership and unknown values", (v) => {
    const room = new Room(v, { joinRule: "public" });
    rejected(room.check({ type: "m.room.member", sender: BOB, state_key: BOB, content: {} }), /4\.1/);
    rejected(room.check({ type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: 5 } }), /4\.1/);
    rejected(room.check({ type: "m.room.member", sender: BOB, content: { membership: "join" } }), /4\.1/);
    rejected(room.member(BOB, BOB, "dance"), /unknown membership/);
  });
});

describe("sender membership, third_party_invite, required level, @ state keys (rules 5–8)", () => {
  it.each(ALL_VERSIONS)("v%s: non-members cannot send events (rule 5)", (v) => {
    const room = new Room(v).setMember(BOB, "invite").setMember(CAROL, "leave");
    for (const sender of [BOB, CAROL, MALLORY]) {
      rejected(room.check({ type: "m.room.message", sender, content: { body: "x" } }), /not joined/);
    }
    room.setMember(BOB, "join");
    allowed(room.check({ type: "m.room.message", sender: BOB, content: { body: "x" } }));
  });

  it.each(ALL_VERSIONS)("v%s: an event 'sent as' a joined user by someone else fails on the real sender", (v) => {
    // The claimed author in content is irrelevant; the auth rules only trust `sender`.
    const room = new Room(v).setMember(BOB, "join");
    rejected(room.check({ type: "m.room.message", sender: MALLORY, content: { body: "x", author: BOB } }), /not joined/);
  });

  it.each(ALL_VERSIONS)("v%s: m.room.third_party_invite requires the invite level, not state_default (rule 6)", (v) => {
    const room = new Room(v).setMember(BOB, "join");
    allowed(room.check({ type: "m.room.third_party_invite", sender: BOB, state_key: "t", content: {} }));
    room.setPowerLevels({ users: room_users(v, {}), invite: 1, state_default: 0 });
    rejected(room.check({ type: "m.room.third_party_invite", sender: BOB, state_key: "t", content: {} }), /rule 6/);
  });

  it.each(ALL_VERSIONS)("v%s: required power levels: events, state_default, events_default (rule 7)", (v) => {
    const room = new Room(v)
      .setPowerLevels({ users: room_users(v, { [BOB]: 10 }), events_default: 5, state_default: 20, events: { "m.room.topic": 10, "x.loud": 11 } })
      .setMember(BOB, "join")
      .setMember(CAROL, "join");
    allowed(room.check({ type: "m.room.message", sender: BOB, content: {} }));
    rejected(room.check({ type: "m.room.message", sender: CAROL, content: {} }), /rule 7/);
    allowed(room.check({ type: "m.room.topic", sender: BOB, state_key: "", content: {} }));
    rejected(room.check({ type: "m.room.name", sender: BOB, state_key: "", content: {} }), /rule 7/);
    rejected(room.check({ type: "x.loud", sender: BOB, content: {} }), /rule 7/);
    expect(requiredPowerLevel("m.room.name", true, room.state, room.rv)).toBe(20);
    expect(requiredPowerLevel("m.room.message", false, room.state, room.rv)).toBe(5);
  });

  it.each(ALL_VERSIONS)("v%s: without power levels, state needs 50 and messages 0", (v) => {
    const room = new Room(v, { powerLevels: null }).setMember(BOB, "join");
    allowed(room.check({ type: "m.room.message", sender: BOB, content: {} }));
    rejected(room.check({ type: "m.room.name", sender: BOB, state_key: "", content: {} }), /requires power level 50/);
    allowed(room.check({ type: "m.room.name", sender: ALICE, state_key: "", content: {} }));
  });

  it.each(ALL_VERSIONS)("v%s: a state_key starting with @ must be the sender (rule 8)", (v) => {
    const room = new Room(v).setPowerLevels({ users: room_users(v, { [BOB]: 0 }), state_default: 0 }).setMember(BOB, "join");
    rejected(room.check({ type: "x.custom", sender: BOB, state_key: ALICE, content: {} }), /rule 8/);
    rejected(room.check({ type: "x.custom", sender: ALICE, state_key: "@other:server", content: {} }), /rule 8/);
    allowed(room.check({ type: "x.custom", sender: BOB, state_key: BOB, content: {} }));
    allowed(room.check({ type: "x.custom", sender: BOB, state_key: "other", content: {} }));
  });
});

describe("m.room.power_levels (rule 9)", () => {
  const pl = (room: Room, sender: string, content: JsonObject) =>
    room.check({ type: "m.room.power_levels", sender, state_key: "", content });

  it.each(ALL_VERSIONS)("v%s: the first power levels event is allowed (9.4)", (v) => {
    const room = new Room(v, { powerLevels: null });
    allowed(pl(room, ALICE, { users: room.users({ [BOB]: 100 }), ban: 0 }));
  });

  it.each(ALL_VERSIONS)("v%s: a member cannot raise their own power level", (v) => {
    const room = new Room(v).setPowerLevels({ users: room_users(v, { [BOB]: 50 }) }).setMember(BOB, "join");
    rejected(pl(room, BOB, { users: room.users({ [BOB]: 51 }) }), /9\.9/);
    allowed(pl(room, BOB, { users: room.users({ [BOB]: 50 }), state_default: 50 }));
  });

  it.each(ALL_VERSIONS)("v%s: a member cannot demote or remove someone of equal level, but can demote self", (v) => {
    const room = new Room(v).setPowerLevels({ users: room_users(v, { [BOB]: 50, [CAROL]: 50, [DAVE]: 10 }) }).setMember(BOB, "join");
    rejected(pl(room, BOB, { users: room.users({ [BOB]: 50, [CAROL]: 0, [DAVE]: 10 }) }), /9\.8/);
    rejected(pl(room, BOB, { users: room.users({ [BOB]: 50, [DAVE]: 10 }) }), /9\.8/);
    allowed(pl(room, BOB, { users: room.users({ [BOB]: 50, [CAROL]: 50, [DAVE]: 0 }) }));
    allowed(pl(room, BOB, { users: room.users({ [BOB]: 50, [CAROL]: 50, [DAVE]: 50 }) })); // up to own level
    rejected(pl(room, BOB, { users: room.users({ [BOB]: 50, [CAROL]: 50, [DAVE]: 51 }) }), /9\.9/);
    allowed(pl(room, BOB, { users: room.users({ [BOB]: 0, [CAROL]: 50, [DAVE]: 10 }) })); // self-demotion
  });

  it.each(ALL_VERSIONS)("v%s: top-level levels must stay at or below the sender's level (9.5)", (v) => {
    const room = new Room(v).setPowerLevels({ users: room_users(v, { [BOB]: 50 }), ban: 60 }).setMember(BOB, "join");
    rejected(pl(room, BOB, { users: room.users({ [BOB]: 50 }), ban: 50 }), /9\.5/); // current value above sender
    room.setPowerLevels({ users: room.users({ [BOB]: 50 }) });
    rejected(pl(room, BOB, { users: room.users({ [BOB]: 50 }), kick: 51 }), /9\.5/);
    allowed(pl(room, BOB, { users: room.users({ [BOB]: 50 }), kick: 50, users_default: 50 }));
    rejected(pl(room, BOB, { users: room.users({ [BOB]: 50 }), users_default: 51 }), /9\.5/);
  });

  it.each(ALL_VERSIONS)("v%s: events entries (9.6, 9.7)", (v) => {
    const room = new Room(v).setPowerLevels({ users: room_users(v, { [BOB]: 50 }), events: { "m.room.name": 60, "m.room.topic": 40 } }).setMember(BOB, "join");
    const base = { users: room.users({ [BOB]: 50 }) };
    rejected(pl(room, BOB, { ...base, events: { "m.room.topic": 40 } }), /9\.6/); // removes 60
    rejected(pl(room, BOB, { ...base, events: { "m.room.name": 60, "m.room.topic": 51 } }), /9\.6/);
    allowed(pl(room, BOB, { ...base, events: { "m.room.name": 60, "m.room.topic": 50, "x.new": 20 } }));
  });

  it("notifications levels are checked from v6 on", () => {
    for (const v of ALL_VERSIONS) {
      const room = new Room(v).setPowerLevels({ users: room_users(v, { [BOB]: 50 }), notifications: { room: 100 } }).setMember(BOB, "join");
      const lower = pl(room, BOB, { users: room_users(v, { [BOB]: 50 }), notifications: { room: 10 } });
      const raise = pl(room, BOB, { users: room_users(v, { [BOB]: 50 }), notifications: { room: 100, other: 90 } });
      if (Number(v) >= 6) {
        rejected(lower, /notifications/);
        rejected(raise, /notifications/);
      } else {
        allowed(lower);
        allowed(raise);
      }
    }
  });

  it.each(ALL_VERSIONS)("v%s: users must map valid user IDs to levels (9.3)", (v) => {
    const room = new Room(v);
    rejected(pl(room, ALICE, { users: { ...room.users({}), "not-a-user": 10 } }), /9\.3/);
    rejected(pl(room, ALICE, { users: { ...room.users({}), [BOB]: "lots" } }), /9\.3/);
    rejected(pl(room, ALICE, { users: { ...room.users({}), [BOB]: null } }), /9\.3/);
    rejected(pl(room, ALICE, { users: [BOB] as unknown as JsonObject }), /9\.3/);
    rejected(pl(room, ALICE, { users: "x" as unknown as JsonObject }), /9\.3/);
    allowed(pl(room, ALICE, { users: room.users({ "@weird.Local_part+x:[::1]:8448": 1 }) }));
  });

  it("string power levels: accepted up to v9, rejected from v10", () => {
    for (const v of ALL_VERSIONS) {
      const room = new Room(v);
      const users = room.users({ [BOB]: 10 });
      const stringy = pl(room, ALICE, { users: { ...users, [CAROL]: " +020 " }, ban: "50", events: { "m.room.name": "50" } });
      const stringyNamed = pl(room, ALICE, { users, ban: "50" });
      const stringyEvents = pl(room, ALICE, { users, events: { "m.room.name": "50" } });
      const stringyNotif = pl(room, ALICE, { users, notifications: { room: "50" } });
      if (Number(v) >= 10) {
        rejected(stringy);
        rejected(stringyNamed, /9\.1/);
        rejected(stringyEvents, /9\.2/);
        rejected(stringyNotif, /9\.2/);
      } else {
        allowed(stringy);
        allowed(stringyNamed);
        allowed(stringyEvents);
        allowed(stringyNotif);
      }
    }
  });

  it("v10+: non-integer values are rejected wherever they appear", () => {
    for (const v of ["10", "11", "12"]) {
      const room = new Room(v);
      const users = room.users({});
      rejected(pl(room, ALICE, { users, kick: 1.5 }), /9\.1/);
      rejected(pl(room, ALICE, { users, invite: null }), /9\.1/);
      rejected(pl(room, ALICE, { users, events: [] as unknown as JsonObject }), /9\.2/);
      rejected(pl(room, ALICE, { users, events: { "m.room.name": 2 ** 53 } }), /9\.2/);
      rejected(pl(room, ALICE, { users: { ...users, [BOB]: 1.5 } }), /9\.3/);
    }
  });

  it("floats: truncated in v1–v5, invalid from v6", () => {
    for (const v of ALL_VERSIONS) {
      const room = new Room(v);
      const r = pl(room, ALICE, { users: room.users({ [BOB]: 50.57 }) });
      if (Number(v) <= 5) allowed(r);
      else rejected(r, /9\.3/);
    }
    const v5 = new Room("5").setPowerLevels({ users: { [ALICE]: 100, [BOB]: 50.57 } });
    expect(powerLevelOf(BOB, v5.state, v5.rv)).toBe(50);
  });

  it("string values in state are read as numbers (v1–v9) and equal values are not a change", () => {
    const room = new Room("9").setPowerLevels({ users: { [ALICE]: "100", [BOB]: "050" }, ban: " 40 " }).setMember(BOB, "join");
    expect(powerLevelOf(BOB, room.state, room.rv)).toBe(50);
    // Rewriting the same levels as integers is not an alteration, even for levels Bob cannot touch.
    allowed(pl(room, BOB, { users: { [ALICE]: 100, [BOB]: 50 }, ban: 40 }));
    const v10 = new Room("10").setPowerLevels({ users: { [ALICE]: 100, [BOB]: "50" } });
    expect(powerLevelOf(BOB, v10.state, v10.rv)).toBe(0); // invalid in v10: falls back to users_default
  });

  it.each(ALL_VERSIONS)("v%s: the PL event itself needs the power_levels event level (rule 7)", (v) => {
    const room = new Room(v)
      .setPowerLevels({ users: room_users(v, { [BOB]: 40 }), events: { "m.room.power_levels": 50 } })
      .setMember(BOB, "join");
    rejected(pl(room, BOB, { users: room_users(v, { [BOB]: 40 }), events: { "m.room.power_levels": 50 } }), /rule 7/);
  });
});

describe("room version 12 creators", () => {
  it("creators have infinite power level; additional creators too", () => {
    const room = new Room("12", { createContent: { additional_creators: [BOB] } }).setMember(BOB, "join").setMember(CAROL, "join");
    expect(powerLevelOf(ALICE, room.state, room.rv)).toBe(Infinity);
    expect(powerLevelOf(BOB, room.state, room.rv)).toBe(Infinity);
    expect(powerLevelOf(CAROL, room.state, room.rv)).toBe(0);
    expect(isCreator(BOB, room.state, room.rv)).toBe(true);
    expect(isCreator(CAROL, room.state, room.rv)).toBe(false);
    expect(creatorsOf(room.create, room.rv)).toEqual([ALICE, BOB]);
    // Infinite level: anything at any level is allowed.
    room.setPowerLevels({ users: { [CAROL]: 2 ** 52 }, events: { "x.big": 2 ** 52 } });
    allowed(room.check({ type: "x.big", sender: BOB, content: {} }));
    allowed(room.member(BOB, CAROL, "ban"));
  });

  it("creators cannot be kicked or banned, even by another creator", () => {
    const room = new Room("12", { createContent: { additional_creators: [BOB] } }).setMember(BOB, "join").setMember(CAROL, "join");
    room.setPowerLevels({ users: { [CAROL]: 100 } });
    rejected(room.member(CAROL, ALICE, "ban"));
    rejected(room.member(CAROL, BOB, "leave"));
    rejected(room.member(BOB, ALICE, "ban"));
  });

  it("a power levels event listing a creator in users is rejected (v12 rule 10.4)", () => {
    const room = new Room("12", { createContent: { additional_creators: [BOB] } });
    const pl = (users: JsonObject) => room.check({ type: "m.room.power_levels", sender: ALICE, state_key: "", content: { users } });
    rejected(pl({ [ALICE]: 100 }), /creator/);
    rejected(pl({ [BOB]: 100 }), /creator/);
    allowed(pl({ [CAROL]: 100 }));
    // The first PL event is not exempt.
    const fresh = new Room("12", { powerLevels: null });
    rejected(fresh.check({ type: "m.room.power_levels", sender: ALICE, state_key: "", content: { users: { [ALICE]: 100 } } }), /creator/);
  });

  it("v11: the creator is an ordinary user once power levels exist, and may be listed", () => {
    const room = new Room("11");
    expect(powerLevelOf(ALICE, room.state, room.rv)).toBe(100);
    room.setPowerLevels({ users: { [BOB]: 100 } });
    expect(powerLevelOf(ALICE, room.state, room.rv)).toBe(0);
    const noPl = new Room("11", { powerLevels: null });
    expect(powerLevelOf(ALICE, noPl.state, noPl.rv)).toBe(100);
    expect(powerLevelOf(BOB, noPl.state, noPl.rv)).toBe(0);
  });

  it("v12 without power levels: creators infinite, others 0", () => {
    const room = new Room("12", { powerLevels: null });
    expect(powerLevelOf(ALICE, room.state, room.rv)).toBe(Infinity);
    expect(powerLevelOf(BOB, room.state, room.rv)).toBe(0);
  });
});

describe("m.room.redaction", () => {
  it.each(["1", "2"])("v%s: redact level, or same domain as the redacted event (rule 11)", (v) => {
    const room = new Room(v).setMember(BOB, "join");
    allowed(room.check({ type: "m.room.redaction", sender: BOB, redacts: "$own:b.test", content: {} }));
    rejected(room.check({ type: "m.room.redaction", sender: BOB, redacts: "$theirs:a.test", content: {} }), /redact level/);
    rejected(room.check({ type: "m.room.redaction", sender: BOB, content: {} }), /redact level/);
    allowed(room.check({ type: "m.room.redaction", sender: ALICE, redacts: "$theirs:b.test", content: {} }));
  });

  it.each(["3", "6", "11", "12"])("v%s: the redact level is not an auth rule; only the event type level is", (v) => {
    const room = new Room(v).setMember(BOB, "join");
    allowed(room.check({ type: "m.room.redaction", sender: BOB, redacts: "$theirs", content: { redacts: "$theirs" } }));
    room.setPowerLevels({ users: room_users(v, {}), events: { "m.room.redaction": 50 } });
    rejected(room.check({ type: "m.room.redaction", sender: BOB, redacts: "$theirs", content: {} }), /rule 7/);
  });
});

describe("malformed input never throws", () => {
  it.each(ALL_VERSIONS)("v%s: odd content shapes are rejected or ignored, not thrown", (v) => {
    const room = new Room(v, { joinRule: "public" }).setMember(BOB, "join");
    const weird: unknown[] = [null, 5, "x", [], { membership: {} }, { users: { [BOB]: { a: 1 } } }];
    for (const content of weird) {
      for (const type of ["m.room.member", "m.room.power_levels", "m.room.create", "m.room.message", "m.room.join_rules"]) {
        const r = room.check({ type, sender: BOB, state_key: type === "m.room.member" ? BOB : "", content });
        expect(typeof r.allowed).toBe("boolean");
      }
    }
    rejected(room.check({ type: "m.room.message", sender: BOB, content: null }), /content/);
  });

  it("malformed state (power levels, join rules, create) is read defensively", () => {
    const room = new Room("10", { joinRule: "public" }).setMember(BOB, "join");
    room.setPowerLevels({ users: "nope", events: 3, users_default: "x", ban: {} } as unknown as JsonObject);
    expect(powerLevelOf(BOB, room.state, room.rv)).toBe(0);
    allowed(room.check({ type: "m.room.message", sender: BOB, content: {} }));
    rejected(room.check({ type: "m.room.name", sender: BOB, state_key: "", content: {} }), /rule 7/);
    room.apply(room.event({ type: "m.room.join_rules", sender: ALICE, state_key: "", content: null as unknown as JsonObject }));
    expect(joinRuleOf(room.state)).toBe("invite");
  });

  it("prototype keys in content are not inherited values", () => {
    const room = new Room("11").setMember(BOB, "join");
    room.setPowerLevels({ users: { [ALICE]: 100 }, events: {} });
    expect(requiredPowerLevel("constructor", false, room.state, room.rv)).toBe(0);
    expect(requiredPowerLevel("__proto__", true, room.state, room.rv)).toBe(50);
    expect(powerLevelOf("toString", room.state, room.rv)).toBe(0);
    expect(membershipOf("hasOwnProperty", room.state)).toBeUndefined();
  });
});

describe("authEventKeys (auth events selection)", () => {
  const k = stateKey;
  it("create is selected before v12, not in v12; the create event needs nothing", () => {
    const msg = { type: "m.room.message", sender: BOB, content: {} };
    expect(authEventKeys(rvOf("11"), msg)).toEqual([k("m.room.create", ""), k("m.room.power_levels", ""), k("m.room.member", BOB)]);
    expect(authEventKeys(rvOf("12"), msg)).toEqual([k("m.room.power_levels", ""), k("m.room.member", BOB)]);
    expect(authEventKeys(rvOf("12"), { type: "m.room.create", sender: ALICE, state_key: "", content: {} })).toEqual([]);
  });

  it("membership events add the target, join rules, third-party invite, restricted authoriser", () => {
    const rv = rvOf("10");
    expect(new Set(authEventKeys(rv, { type: "m.room.member", sender: ALICE, state_key: BOB, content: { membership: "ban" } }))).toEqual(
      new Set([k("m.room.create", ""), k("m.room.power_levels", ""), k("m.room.member", ALICE), k("m.room.member", BOB)]),
    );
    for (const membership of ["join", "invite", "knock"]) {
      expect(authEventKeys(rv, { type: "m.room.member", sender: BOB, state_key: BOB, content: { membership } })).toContain(k("m.room.join_rules", ""));
    }
    expect(authEventKeys(rv, { type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: "leave" } })).not.toContain(k("m.room.join_rules", ""));
    // Sender and target are the same: one member key.
    expect(authEventKeys(rv, { type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: "join" } })).toHaveLength(4);
    const tpi = { type: "m.room.member", sender: ALICE, state_key: BOB, content: { membership: "invite", third_party_invite: { signed: { mxid: BOB, token: "tok" } } } };
    expect(authEventKeys(rv, tpi)).toContain(k("m.room.third_party_invite", "tok"));
    const via = { type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: "join", join_authorised_via_users_server: CAROL } };
    expect(authEventKeys(rv, via)).toContain(k("m.room.member", CAROL));
    expect(authEventKeys(rvOf("7"), via)).not.toContain(k("m.room.member", CAROL));
  });

  it("tolerates malformed content", () => {
    expect(authEventKeys(rvOf("10"), { type: "m.room.member", sender: BOB, state_key: BOB, content: null as unknown as JsonObject })).toHaveLength(3);
  });
});

describe("checkAuthEventsShape (rule 2)", () => {
  function setup(v: string) {
    const room = new Room(v, { joinRule: "public" });
    const create = room.create;
    const pl = room.state.get(stateKey("m.room.power_levels", ""))!;
    const aliceMember = room.state.get(stateKey("m.room.member", ALICE))!;
    const jr = room.state.get(stateKey("m.room.join_rules", ""))!;
    return { room, create, pl, aliceMember, jr };
  }

  it.each(ALL_VERSIONS.slice(0, 11))("v%s: a correct selection passes; the create event is required", (v) => {
    const { room, create, pl, aliceMember, jr } = setup(v);
    const join = room.event({ type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: "join" } });
    allowed(checkAuthEventsShape(join, [create, pl, jr], room.rv));
    rejected(checkAuthEventsShape(join, [pl, jr], room.rv), /2\.4/);
    rejected(checkAuthEventsShape(join, [create, pl, pl], room.rv), /2\.1/);
    rejected(checkAuthEventsShape(join, [create, pl, jr, aliceMember], room.rv), /2\.2/); // Alice is neither sender nor target
    const msg = room.event({ type: "m.room.message", sender: ALICE, content: {} });
    rejected(checkAuthEventsShape(msg, [create, pl, aliceMember, jr], room.rv), /2\.2/); // join rules not needed
    allowed(checkAuthEventsShape(msg, [create, pl, aliceMember], room.rv));
    // The auth state built from the auth events authorises the event.
    allowed(checkEventAuth(join, buildAuthState([create, pl, jr]), room.rv));
  });

  it("v12: the create event must not be selected", () => {
    const { room, create, pl, aliceMember } = setup("12");
    const msg = room.event({ type: "m.room.message", sender: ALICE, content: {} });
    allowed(checkAuthEventsShape(msg, [pl, aliceMember], room.rv));
    allowed(checkAuthEventsShape(msg, [], room.rv));
    rejected(checkAuthEventsShape(msg, [create, pl, aliceMember], room.rv), /2\.2/);
  });

  it.each(["3", "12"])("v%s: auth events from another room are rejected (2.5)", (v) => {
    const { room, create, aliceMember } = setup(v);
    const other = new Room(v);
    const foreignPl = other.state.get(stateKey("m.room.power_levels", ""))!;
    const msg = room.event({ type: "m.room.message", sender: ALICE, content: {} });
    const authEvents = room.rv.roomIdFromCreate ? [foreignPl, aliceMember] : [create, foreignPl, aliceMember];
    rejected(checkAuthEventsShape(msg, authEvents, room.rv), /2\.5/);
  });

  it("non-state auth events are rejected; the create event itself is exempt", () => {
    const { room, create } = setup("9");
    const msg = room.event({ type: "m.room.message", sender: ALICE, content: {} });
    const notState = room.event({ type: "m.room.message", sender: ALICE, content: {} });
    rejected(checkAuthEventsShape(msg, [create, notState], room.rv), /not a state event/);
    allowed(checkAuthEventsShape(create, [], room.rv));
  });
});

describe("helpers", () => {
  it("parsePowerLevelValue follows each version's number grammar", () => {
    const [v1, v6, v10] = [rvOf("1"), rvOf("6"), rvOf("10")];
    expect(parsePowerLevelValue(" -007 ", v1)).toBe(-7);
    expect(parsePowerLevelValue("+100", v6)).toBe(100);
    expect(parsePowerLevelValue("1e3", v1)).toBeUndefined();
    expect(parsePowerLevelValue("12.5", v1)).toBeUndefined();
    expect(parsePowerLevelValue("", v1)).toBeUndefined();
    expect(parsePowerLevelValue(5.1146e4 + 0.98, v1)).toBe(51146);
    expect(parsePowerLevelValue(-1.5, v1)).toBe(-1);
    expect(parsePowerLevelValue(1.5, v6)).toBeUndefined();
    expect(parsePowerLevelValue("100", v10)).toBeUndefined();
    expect(parsePowerLevelValue(100, v10)).toBe(100);
    expect(parsePowerLevelValue(true, v1)).toBeUndefined();
  });

  it("isAuthValidUserId", () => {
    for (const ok of [BOB, "@a:b", "@Old_Style!:example.org:8448", "@x:[2001:db8::1]", "@x:1.2.3.4"]) expect(isAuthValidUserId(ok), ok).toBe(true);
    for (const bad of ["bob", "@bob", "@:b.test", "@bob:", "#bob:b.test", `@${"a".repeat(260)}:b.test`, "@bob:b test", 5]) {
      expect(isAuthValidUserId(bad), String(bad)).toBe(false);
    }
  });

  it("checkEventAuth is fast enough for state resolution", () => {
    const room = new Room("10", { joinRule: "public" });
    for (let i = 0; i < 2000; i++) room.setMember(`@u${i}:x.test`, "join");
    const msgs = Array.from({ length: 2000 }, (_, i) => room.event({ type: "m.room.message", sender: `@u${i}:x.test`, content: {} }));
    const t0 = performance.now();
    for (let round = 0; round < 10; round++) for (const m of msgs) checkEventAuth(m, room.state, room.rv);
    // 20 000 checks; generous bound (workerd timers are coarse).
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});
