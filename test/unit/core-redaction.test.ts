import { describe, it, expect } from "vitest";
import { redactEvent } from "../../src/core/redaction";
import { getRoomVersion, type RoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";

const rv = (id: string): RoomVersion => getRoomVersion(id)!;
const ALL = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

function pdu(type: string, content: Record<string, unknown>, extra: Record<string, unknown> = {}): PDU {
  return {
    event_id: "$e:x",
    room_id: "!r:x",
    sender: "@a:x",
    origin: "x",
    origin_server_ts: 1,
    type,
    state_key: "",
    content,
    prev_events: ["$p"],
    auth_events: ["$a"],
    prev_state: [],
    membership: "join",
    depth: 3,
    hashes: { sha256: "h" },
    signatures: { x: { "ed25519:1": "s" } },
    unsigned: { age_ts: 5 },
    age_ts: 5,
    redacts: "$r",
    custom_top_level: { nested: true },
    ...extra,
  } as PDU;
}

const keptContent = (type: string, content: Record<string, unknown>, v: string) =>
  redactEvent(pdu(type, content), rv(v)).content;

describe("redaction: top-level keys", () => {
  const essential = ["event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth", "prev_events", "auth_events", "origin_server_ts"];
  it("v1–v10 keep the full original list (incl. origin, membership, prev_state)", () => {
    for (const v of ALL.slice(0, 10)) {
      const r = redactEvent(pdu("m.room.message", { body: "hi" }), rv(v));
      expect(Object.keys(r).sort(), `v${v}`).toEqual([...essential, "origin", "membership", "prev_state"].sort());
    }
  });
  it("v11+ drop origin, membership and prev_state", () => {
    for (const v of ["11", "12"]) {
      const r = redactEvent(pdu("m.room.message", { body: "hi" }), rv(v));
      expect(Object.keys(r).sort(), `v${v}`).toEqual([...essential].sort());
    }
  });
  it("removes unsigned, top-level age_ts, redacts and unknown keys in every version", () => {
    for (const v of ALL) {
      const r = redactEvent(pdu("m.room.redaction", { redacts: "$r" }), rv(v)) as Record<string, unknown>;
      for (const k of ["unsigned", "age_ts", "redacts", "custom_top_level"]) expect(r[k], `v${v} ${k}`).toBeUndefined();
    }
  });
  it("keeps signatures and hashes intact, does not add absent keys, does not mutate the input", () => {
    const input = pdu("m.room.member", { membership: "join", displayname: "A" });
    delete (input as Record<string, unknown>).state_key;
    const before = structuredClone(input);
    const r = redactEvent(input, rv("12"));
    expect(input).toEqual(before);
    expect(r.signatures).toEqual(input.signatures);
    expect(r.hashes).toEqual(input.hashes);
    expect("state_key" in r).toBe(false);
    // Deep copy: mutating the result leaves the input alone.
    r.signatures.x["ed25519:1"] = "changed";
    expect(input.signatures.x["ed25519:1"]).toBe("s");
  });
  it("gives an empty content when content is missing or not an object", () => {
    for (const c of [undefined, null, "str", [1, 2]]) {
      const p = pdu("m.room.message", {});
      (p as Record<string, unknown>).content = c;
      expect(redactEvent(p, rv("10")).content).toEqual({});
    }
  });
});

describe("redaction: content per event type and version", () => {
  it("strips all content of ordinary events", () => {
    for (const v of ALL) expect(keptContent("m.room.message", { body: "x", msgtype: "m.text" }, v)).toEqual({});
    for (const v of ALL) expect(keptContent("m.room.topic", { topic: "x" }, v)).toEqual({});
    for (const v of ALL) expect(keptContent("m.room.name", { name: "x" }, v)).toEqual({});
  });

  it("m.room.member: membership; join_authorised_via_users_server from v9; third_party_invite.signed from v11", () => {
    const content = {
      membership: "invite",
      displayname: "Alice",
      avatar_url: "mxc://x/y",
      join_authorised_via_users_server: "@b:x",
      third_party_invite: { display_name: "alice@example.org", signed: { mxid: "@a:x", token: "t", signatures: {} } },
    };
    for (const v of ["1", "5", "6", "7", "8"]) expect(keptContent("m.room.member", content, v), `v${v}`).toEqual({ membership: "invite" });
    for (const v of ["9", "10"]) {
      expect(keptContent("m.room.member", content, v), `v${v}`).toEqual({ membership: "invite", join_authorised_via_users_server: "@b:x" });
    }
    for (const v of ["11", "12"]) {
      expect(keptContent("m.room.member", content, v), `v${v}`).toEqual({
        membership: "invite",
        join_authorised_via_users_server: "@b:x",
        third_party_invite: { signed: { mxid: "@a:x", token: "t", signatures: {} } },
      });
    }
    // third_party_invite without `signed`, or not an object, disappears.
    expect(keptContent("m.room.member", { membership: "invite", third_party_invite: { display_name: "x" } }, "11")).toEqual({ membership: "invite" });
    expect(keptContent("m.room.member", { membership: "invite", third_party_invite: "junk" }, "11")).toEqual({ membership: "invite" });
    expect(keptContent("m.room.member", { membership: "invite", third_party_invite: ["signed"] }, "12")).toEqual({ membership: "invite" });
  });

  it("m.room.create: only `creator` before v11, everything from v11", () => {
    const content = { creator: "@a:x", room_version: "1", "m.federate": false, predecessor: { room_id: "!o:x" } };
    for (const v of ALL.slice(0, 10)) expect(keptContent("m.room.create", content, v), `v${v}`).toEqual({ creator: "@a:x" });
    for (const v of ["11", "12"]) expect(keptContent("m.room.create", content, v), `v${v}`).toEqual(content);
    const v12 = { room_version: "12", additional_creators: ["@b:y"], type: "m.space" };
    expect(keptContent("m.room.create", v12, "12")).toEqual(v12);
  });

  it("m.room.join_rules: `allow` kept from v8", () => {
    const content = { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: "!s:x" }], other: 1 };
    for (const v of ALL.slice(0, 7)) expect(keptContent("m.room.join_rules", content, v), `v${v}`).toEqual({ join_rule: "restricted" });
    for (const v of ALL.slice(7)) {
      expect(keptContent("m.room.join_rules", content, v), `v${v}`).toEqual({ join_rule: "restricted", allow: content.allow });
    }
  });

  it("m.room.power_levels: `invite` kept from v11", () => {
    const content = {
      ban: 50, events: { "m.room.name": 50 }, events_default: 0, kick: 50, redact: 50, state_default: 50,
      users: { "@a:x": 100 }, users_default: 0, invite: 0, notifications: { room: 50 }, other: 1,
    };
    const { invite: _i, notifications: _n, other: _o, ...withoutInvite } = content;
    for (const v of ALL.slice(0, 10)) expect(keptContent("m.room.power_levels", content, v), `v${v}`).toEqual(withoutInvite);
    for (const v of ["11", "12"]) expect(keptContent("m.room.power_levels", content, v), `v${v}`).toEqual({ ...withoutInvite, invite: 0 });
  });

  it("m.room.history_visibility keeps history_visibility everywhere", () => {
    for (const v of ALL) expect(keptContent("m.room.history_visibility", { history_visibility: "shared", x: 1 }, v)).toEqual({ history_visibility: "shared" });
  });

  it("m.room.aliases keeps `aliases` only in v1–v5", () => {
    const content = { aliases: ["#a:x"], other: 1 };
    for (const v of ALL.slice(0, 5)) expect(keptContent("m.room.aliases", content, v), `v${v}`).toEqual({ aliases: ["#a:x"] });
    for (const v of ALL.slice(5)) expect(keptContent("m.room.aliases", content, v), `v${v}`).toEqual({});
  });

  it("m.room.redaction keeps content.redacts only from v11", () => {
    for (const v of ALL.slice(0, 10)) expect(keptContent("m.room.redaction", { redacts: "$r", reason: "spam" }, v)).toEqual({});
    for (const v of ["11", "12"]) expect(keptContent("m.room.redaction", { redacts: "$r", reason: "spam" }, v)).toEqual({ redacts: "$r" });
  });

  it("only keeps keys that are present (no undefined placeholders)", () => {
    const r = keptContent("m.room.power_levels", { ban: 50 }, "12");
    expect(r).toEqual({ ban: 50 });
    expect(Object.keys(r)).toEqual(["ban"]);
  });

  it("is idempotent", () => {
    for (const v of ALL) {
      const once = redactEvent(pdu("m.room.member", { membership: "join", displayname: "x", third_party_invite: { signed: {} } }), rv(v));
      expect(redactEvent(once, rv(v))).toEqual(once);
    }
  });
});
