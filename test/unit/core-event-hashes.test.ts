import { describe, it, expect } from "vitest";
import {
  checkContentHash,
  computeContentHash,
  computeEventId,
  computeReferenceHash,
  computeReferenceHashBytes,
  digestPdu,
  hashAndSignEvent,
  roomIdFromCreateEventId,
  toRoomEvent,
} from "../../src/core/event-hashes";
import { redactEvent } from "../../src/core/redaction";
import { generateSigningKey, signingKeyFromSeed, verifyJsonSignature, verifySignedBytes } from "../../src/core/signing";
import { getRoomVersion, type RoomVersion } from "../../src/core/room-versions";
import { decodeBase64, encodeBase64, encodeBase64Url } from "../../src/core/base64";
import { canonicalJson, CanonicalJsonError } from "../../src/core/canonical-json";
import { isValidEventId, isValidRoomId } from "../../src/core/ids";
import type { PDU } from "../../src/core/types";

const rv = (id: string): RoomVersion => getRoomVersion(id)!;
const SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const specKey = () => signingKeyFromSeed("ed25519:1", SEED);

async function sha256b64(s: string): Promise<string> {
  return encodeBase64(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s))));
}

describe("event signing: spec test vectors (Appendices, 'Event Signing')", () => {
  it("minimally-sized event", async () => {
    const input = {
      room_id: "!x:domain",
      sender: "@a:domain",
      origin: "domain",
      origin_server_ts: 1000000,
      signatures: {},
      hashes: {},
      type: "X",
      content: {},
      prev_events: [],
      auth_events: [],
      depth: 3,
      unsigned: { age_ts: 1000000 },
    } as unknown as PDU;
    // No event_id, and the redaction keeps `origin`: a room version 3–10 event.
    const { pdu } = await hashAndSignEvent(input, rv("3"), "domain", await specKey());
    expect(pdu).toEqual({
      auth_events: [],
      content: {},
      depth: 3,
      hashes: { sha256: "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos" },
      origin: "domain",
      origin_server_ts: 1000000,
      prev_events: [],
      room_id: "!x:domain",
      sender: "@a:domain",
      signatures: {
        domain: {
          "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg",
        },
      },
      type: "X",
      unsigned: { age_ts: 1000000 },
    });
    expect(await checkContentHash(pdu)).toBe(true);
    // The input object is not modified.
    expect(input.hashes).toEqual({});
  });

  it("event containing redactable content", async () => {
    const input = {
      content: { body: "Here is the message content" },
      event_id: "$0:domain",
      origin: "domain",
      origin_server_ts: 1000000,
      type: "m.room.message",
      room_id: "!r:domain",
      sender: "@u:domain",
      signatures: {},
      unsigned: { age_ts: 1000000 },
    } as unknown as PDU;
    const { pdu, eventId } = await hashAndSignEvent(input, rv("1"), "domain", await specKey());
    expect(eventId).toBe("$0:domain");
    expect(pdu).toEqual({
      content: { body: "Here is the message content" },
      event_id: "$0:domain",
      hashes: { sha256: "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g" },
      origin: "domain",
      origin_server_ts: 1000000,
      type: "m.room.message",
      room_id: "!r:domain",
      sender: "@u:domain",
      signatures: {
        domain: {
          "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA",
        },
      },
      unsigned: { age_ts: 1000000 },
    });
    const key = await specKey();
    // The signature covers the redacted form, so it verifies on the full and redacted event alike.
    const redacted = redactEvent(pdu, rv("1"));
    expect(redacted.content).toEqual({});
    expect(await verifyJsonSignature(redacted, "domain", "ed25519:1", key.publicKey)).toBe(true);
    expect(await verifyJsonSignature(redactEvent(redacted, rv("1")), "domain", "ed25519:1", key.publicKey)).toBe(true);
    // …but the content hash only matches the full event.
    expect(await checkContentHash(pdu)).toBe(true);
    expect(await checkContentHash(redacted)).toBe(false);
  });
});

describe("content hash", () => {
  const base = (): PDU => ({
    room_id: "!r:x",
    sender: "@a:x",
    origin_server_ts: 5,
    type: "m.room.message",
    content: { body: "hello", msgtype: "m.text" },
    prev_events: ["$p"],
    auth_events: ["$a"],
    depth: 2,
    hashes: { sha256: "" },
    signatures: {},
  });

  it("is SHA-256 of the canonical JSON without unsigned, signatures and hashes", async () => {
    const p = { ...base(), unsigned: { age: 1 }, signatures: { x: { "ed25519:1": "s" } } };
    const expected = await sha256b64(
      '{"auth_events":["$a"],"content":{"body":"hello","msgtype":"m.text"},"depth":2,"origin_server_ts":5,"prev_events":["$p"],"room_id":"!r:x","sender":"@a:x","type":"m.room.message"}',
    );
    expect(await computeContentHash(p)).toBe(expected);
  });

  it("detects tampering anywhere outside unsigned/signatures/hashes", async () => {
    const key = await generateSigningKey();
    const { pdu } = await hashAndSignEvent(base(), rv("12"), "x", key);
    expect(await checkContentHash(pdu)).toBe(true);
    const tampered: PDU[] = [
      { ...pdu, content: { ...pdu.content, body: "hellO" } },
      { ...pdu, content: { ...pdu.content, extra: 1 } },
      { ...pdu, depth: 3 },
      { ...pdu, new_top_level_key: true },
    ];
    for (const t of tampered) expect(await checkContentHash(t)).toBe(false);
    // Not covered: unsigned, signatures, other hash algorithms.
    expect(await checkContentHash({ ...pdu, unsigned: { age: 99 } })).toBe(true);
    expect(await checkContentHash({ ...pdu, signatures: {} })).toBe(true);
    expect(await checkContentHash({ ...pdu, hashes: { ...pdu.hashes, sha512: "x" } })).toBe(true);
  });

  it("compares decoded bytes (padded form accepted) and never throws on junk", async () => {
    const p = base();
    const h = await computeContentHash(p);
    expect(await checkContentHash({ ...p, hashes: { sha256: h + "=" } })).toBe(true);
    for (const junk of [undefined, null, 1, "", "!!!", h.slice(0, 20), h + "AAAA"]) {
      expect(await checkContentHash({ ...p, hashes: { sha256: junk as string } })).toBe(false);
    }
    expect(await checkContentHash({ ...p, hashes: undefined } as unknown as PDU)).toBe(false);
    expect(await checkContentHash({ ...p, content: { bad: "\ud800" } })).toBe(false);
  });
});

describe("reference hashes and event IDs", () => {
  const event = (): PDU => ({
    room_id: "!r:x",
    sender: "@a:x",
    origin: "x",
    origin_server_ts: 5,
    type: "m.room.message",
    content: { body: "hello" },
    prev_events: ["$p"],
    auth_events: ["$a"],
    depth: 2,
    hashes: { sha256: "abc" },
    signatures: { x: { "ed25519:1": "sig" } },
    unsigned: { age_ts: 5 },
  });

  it("hashes the redacted event without signatures/unsigned (hand-computed)", async () => {
    // v4–v10 keep `origin`; content of m.room.message is emptied.
    const v10 = await sha256b64(
      '{"auth_events":["$a"],"content":{},"depth":2,"hashes":{"sha256":"abc"},"origin":"x","origin_server_ts":5,"prev_events":["$p"],"room_id":"!r:x","sender":"@a:x","type":"m.room.message"}',
    );
    expect(await computeReferenceHash(event(), rv("10"))).toBe(v10);
    // v11 drops `origin`.
    const v11 = await sha256b64(
      '{"auth_events":["$a"],"content":{},"depth":2,"hashes":{"sha256":"abc"},"origin_server_ts":5,"prev_events":["$p"],"room_id":"!r:x","sender":"@a:x","type":"m.room.message"}',
    );
    expect(await computeReferenceHash(event(), rv("11"))).toBe(v11);
  });

  it("formats event IDs per version: v3 standard base64, v4+ URL-safe", async () => {
    // Find an event whose hash contains + or / so the two encodings differ.
    let e = event();
    let bytes = await computeReferenceHashBytes(e, rv("3"));
    for (let i = 0; !/[+/]/.test(encodeBase64(bytes)); i++) {
      e = { ...event(), depth: i };
      bytes = await computeReferenceHashBytes(e, rv("3"));
    }
    const v3 = await computeEventId(e, rv("3"));
    const v4 = await computeEventId(e, rv("4"));
    expect(v3).toBe("$" + encodeBase64(bytes));
    expect(v4).toBe("$" + encodeBase64Url(bytes));
    expect(v3).not.toBe(v4);
    expect(v3).toHaveLength(44);
    expect(isValidEventId(v3, rv("3"))).toBe(true);
    expect(isValidEventId(v4, rv("4"))).toBe(true);
    expect(decodeBase64(v4.slice(1))).toEqual(bytes);
  });

  it("is stable under unsigned/signature changes and redaction, but not under hash or key changes", async () => {
    const id = await computeEventId(event(), rv("10"));
    expect(await computeEventId({ ...event(), unsigned: { age_ts: 999 } }, rv("10"))).toBe(id);
    expect(await computeEventId({ ...event(), signatures: {} }, rv("10"))).toBe(id);
    expect(await computeEventId({ ...event(), content: { body: "other" } }, rv("10"))).toBe(id);
    expect(await computeEventId(redactEvent(event(), rv("10")), rv("10"))).toBe(id);
    expect(await computeEventId({ ...event(), hashes: { sha256: "abd" } }, rv("10"))).not.toBe(id);
    expect(await computeEventId({ ...event(), depth: 3 }, rv("10"))).not.toBe(id);
    expect(await computeEventId({ ...event(), origin: "y" }, rv("10"))).not.toBe(id);
    // origin is not covered from v11 on.
    const id11 = await computeEventId(event(), rv("11"));
    expect(await computeEventId({ ...event(), origin: "y" }, rv("11"))).toBe(id11);
  });

  it("v1/v2 event IDs come from the PDU", async () => {
    expect(await computeEventId({ ...event(), event_id: "$abc:x" }, rv("1"))).toBe("$abc:x");
    expect(await computeEventId({ ...event(), event_id: "$abc:x" }, rv("2"))).toBe("$abc:x");
    await expect(computeEventId(event(), rv("1"))).rejects.toThrow();
  });

  it("refuses events that are not JSON", async () => {
    await expect(computeEventId({ ...event(), depth: NaN }, rv("10"))).rejects.toThrow(CanonicalJsonError);
    await expect(computeContentHash({ ...event(), content: { x: undefined } } as unknown as PDU)).rejects.toThrow(CanonicalJsonError);
  });

  it("roomIdFromCreateEventId swaps the sigil", () => {
    expect(roomIdFromCreateEventId("$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg")).toBe("!Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg");
    expect(() => roomIdFromCreateEventId("!abc")).toThrow();
    expect(() => roomIdFromCreateEventId("$")).toThrow();
  });
});

describe("hashAndSignEvent", () => {
  it("returns the event ID computeEventId gives (v3 base64, v4+ URL-safe; an existing signature kept)", async () => {
    const key = await generateSigningKey();
    for (const v of ["3", "4", "10", "11"]) {
      const ev = {
        room_id: "!r:a.example",
        sender: "@alice:a.example",
        origin_server_ts: 1_700_000_000_000,
        type: "m.room.member",
        state_key: "@alice:a.example",
        content: { membership: "join", displayname: "Alice", "+/=": "x" },
        prev_events: ["$p"],
        auth_events: ["$a"],
        depth: 7,
        signatures: { "b.example": { "ed25519:1": "sig" } },
        unsigned: { age: 1 },
      };
      const { pdu, eventId } = await hashAndSignEvent(ev, rv(v), "a.example", key);
      expect(eventId).toBe(await computeEventId(pdu, rv(v)));
      expect(pdu.signatures["b.example"]).toEqual({ "ed25519:1": "sig" });
      expect(Object.keys(pdu.signatures["a.example"])).toEqual([key.keyId]);
    }
  });
  it("builds a v12 room: create event → room ID, signature on the redacted form verifies", async () => {
    const key = await generateSigningKey();
    const create = {
      sender: "@alice:a.example",
      origin_server_ts: 1_700_000_000_000,
      type: "m.room.create",
      state_key: "",
      content: { room_version: "12", additional_creators: ["@bob:b.example"] },
      prev_events: [],
      auth_events: [],
      depth: 1,
      unsigned: { age: 0 },
    };
    const { pdu, eventId } = await hashAndSignEvent(create, rv("12"), "a.example", key);
    expect("room_id" in pdu).toBe(false);
    expect(eventId).toBe(await computeEventId(pdu, rv("12")));
    expect(isValidEventId(eventId, rv("12"))).toBe(true);
    const roomId = roomIdFromCreateEventId(eventId);
    expect(roomId).toBe("!" + eventId.slice(1));
    expect(isValidRoomId(roomId, rv("12"))).toBe(true);
    expect(isValidRoomId(roomId, rv("11"))).toBe(false);

    expect(await checkContentHash(pdu)).toBe(true);
    const redacted = redactEvent(pdu, rv("12"));
    expect(redacted.content).toEqual(create.content); // v11+: create keeps all content
    expect(await verifyJsonSignature(redacted, "a.example", key.keyId, key.publicKey, { strict: true })).toBe(true);
    // v11+ create events lose nothing but `unsigned` on redaction, so the full form verifies too.
    expect(await verifyJsonSignature(pdu, "a.example", key.keyId, key.publicKey)).toBe(true);
    const other = await generateSigningKey(key.keyId);
    expect(await verifyJsonSignature(redacted, "a.example", key.keyId, other.publicKey)).toBe(false);

    const createEv = await toRoomEvent(pdu, rv("12"));
    expect(createEv.event_id).toBe(eventId);
    expect(createEv.room_id).toBe(roomId);
    expect(createEv.pdu.room_id).toBeUndefined();
    expect(createEv.state_key).toBe("");

    // A member event in that room references the create event only through room_id and prev_events.
    const join = await hashAndSignEvent(
      {
        room_id: roomId,
        sender: "@alice:a.example",
        origin_server_ts: 1_700_000_000_001,
        type: "m.room.member",
        state_key: "@alice:a.example",
        content: { membership: "join", displayname: "Alice" },
        prev_events: [eventId],
        auth_events: [],
        depth: 2,
      },
      rv("12"),
      "a.example",
      key,
    );
    const joinEv = await toRoomEvent(join.pdu, rv("12"));
    expect(joinEv.room_id).toBe(roomId);
    expect(joinEv.prev_events).toEqual([eventId]);
    expect(joinEv.event_id).toBe(join.eventId);
    expect(join.eventId).not.toBe(eventId);
    // Here the signed (redacted) form differs from the full one: displayname is not covered.
    expect(await verifyJsonSignature(redactEvent(join.pdu, rv("12")), "a.example", key.keyId, key.publicKey)).toBe(true);
    expect(await verifyJsonSignature(join.pdu, "a.example", key.keyId, key.publicKey)).toBe(false);
  });

  it("refuses a v12 create event that carries a room_id", async () => {
    const key = await generateSigningKey();
    const create = {
      room_id: "!x:a.example",
      sender: "@alice:a.example",
      origin_server_ts: 1,
      type: "m.room.create",
      state_key: "",
      content: {},
      prev_events: [],
      auth_events: [],
      depth: 1,
    };
    await expect(hashAndSignEvent(create, rv("12"), "a.example", key)).rejects.toThrow();
    // Fine in v11 (room_id with a domain).
    await expect(hashAndSignEvent(create, rv("11"), "a.example", key)).resolves.toBeTruthy();
  });

  it("keeps other servers' signatures (co-signing) and both verify", async () => {
    const a = await generateSigningKey();
    const b = await generateSigningKey();
    const ev = {
      room_id: "!r:a.example",
      sender: "@bob:b.example",
      origin_server_ts: 1,
      type: "m.room.member",
      state_key: "@bob:b.example",
      content: { membership: "join", join_authorised_via_users_server: "@alice:a.example" },
      prev_events: ["$p"],
      auth_events: ["$a"],
      depth: 4,
    };
    const first = await hashAndSignEvent(ev, rv("10"), "b.example", b);
    const second = await hashAndSignEvent(first.pdu, rv("10"), "a.example", a);
    expect(second.eventId).toBe(first.eventId); // signatures are not part of the reference hash
    const red = redactEvent(second.pdu, rv("10"));
    expect(await verifyJsonSignature(red, "b.example", b.keyId, b.publicKey)).toBe(true);
    expect(await verifyJsonSignature(red, "a.example", a.keyId, a.publicKey)).toBe(true);
  });

  it("uses strict canonical JSON from room version 6 on", async () => {
    const key = await generateSigningKey();
    const ev = {
      event_id: "$e:x",
      room_id: "!r:x",
      sender: "@a:x",
      origin_server_ts: 1,
      type: "m.room.message",
      content: { n: 2 ** 60 },
      prev_events: [],
      auth_events: [],
      depth: 2 ** 60,
    };
    const { event_id: _e, ...v6ev } = ev;
    await expect(hashAndSignEvent(v6ev, rv("6"), "x", key)).rejects.toThrow(/out of range/);
    await expect(hashAndSignEvent({ ...v6ev, depth: 1, content: { f: 0.5 } }, rv("6"), "x", key)).rejects.toThrow(/non-integer/);
    // …including in keys that redaction removes (covered by the content hash only).
    await expect(hashAndSignEvent({ ...v6ev, depth: 1, content: { f: 0.5 } }, rv("5"), "x", key)).resolves.toBeTruthy();
    await expect(hashAndSignEvent({ ...v6ev, depth: 1, content: {} }, rv("6"), "x", key)).resolves.toBeTruthy();
    const { pdu } = await hashAndSignEvent({ ...ev, prev_events: [], auth_events: [] }, rv("1"), "x", key);
    expect(await verifyJsonSignature(redactEvent(pdu, rv("1")), "x", key.keyId, key.publicKey)).toBe(true);
  });

  it("the signature fails when a redaction-protected field is changed after signing", async () => {
    const key = await generateSigningKey();
    const { pdu } = await hashAndSignEvent(
      {
        room_id: "!r:x",
        sender: "@a:x",
        origin_server_ts: 1,
        type: "m.room.power_levels",
        state_key: "",
        content: { users: { "@a:x": 100 }, invite: 0 },
        prev_events: [],
        auth_events: [],
        depth: 3,
      },
      rv("11"),
      "x",
      key,
    );
    const verify = (p: PDU) => verifyJsonSignature(redactEvent(p, rv("11")), "x", key.keyId, key.publicKey);
    expect(await verify(pdu)).toBe(true);
    expect(await verify({ ...pdu, content: { ...pdu.content, users: { "@a:x": 100, "@evil:y": 100 } } })).toBe(false);
    expect(await verify({ ...pdu, content: { ...pdu.content, invite: 100 } })).toBe(false);
    expect(await verify({ ...pdu, sender: "@b:x" })).toBe(false);
    expect(await verify({ ...pdu, prev_events: ["$x"] })).toBe(false);
    // A non-protected addition leaves the signature valid but breaks the content hash.
    const added = { ...pdu, content: { ...pdu.content, note: "hi" } };
    expect(await verify(added)).toBe(true);
    expect(await checkContentHash(added)).toBe(false);
  });
});

describe("toRoomEvent", () => {
  const common = { room_id: "!r:x", sender: "@a:x", origin_server_ts: 1, depth: 3, hashes: { sha256: "h" }, signatures: {} };

  it("normalises v1/v2 [id, hashes] pairs", async () => {
    const pdu = {
      ...common,
      event_id: "$e:x",
      type: "m.room.message",
      content: {},
      prev_events: [["$p:x", { sha256: "ph" }]],
      auth_events: [["$a1:x", { sha256: "a" }], ["$a2:x", { sha256: "b" }]],
    } as PDU;
    const ev = await toRoomEvent(pdu, rv("1"));
    expect(ev.event_id).toBe("$e:x");
    expect(ev.prev_events).toEqual(["$p:x"]);
    expect(ev.auth_events).toEqual(["$a1:x", "$a2:x"]);
    expect(ev.pdu).toBe(pdu);
    expect(ev.state_key).toBeUndefined();
    // Plain strings are malformed in v1/v2, pairs are malformed in v3+.
    await expect(toRoomEvent({ ...pdu, prev_events: ["$p:x"] }, rv("2"))).rejects.toThrow();
    await expect(toRoomEvent(pdu, rv("3"))).rejects.toThrow();
  });

  it("takes `redacts` from the top level before v11 and from content from v11", async () => {
    const pdu = { ...common, event_id: "$e:x", type: "m.room.redaction", redacts: "$top", content: { redacts: "$inner" }, prev_events: [], auth_events: [] } as PDU;
    expect((await toRoomEvent(pdu, rv("1"))).redacts).toBe("$top");
    const { event_id: _e, ...v3pdu } = pdu;
    expect((await toRoomEvent(v3pdu as PDU, rv("10"))).redacts).toBe("$top");
    expect((await toRoomEvent(v3pdu as PDU, rv("11"))).redacts).toBe("$inner");
    expect((await toRoomEvent({ ...v3pdu, content: {} } as PDU, rv("11"))).redacts).toBeUndefined();
    // Only redaction events redact.
    expect((await toRoomEvent({ ...v3pdu, type: "m.room.message" } as PDU, rv("10"))).redacts).toBeUndefined();
  });

  it("rejects PDUs without room_id (except v12 create), type or sender", async () => {
    const base = { ...common, type: "m.room.message", content: {}, prev_events: [], auth_events: [] } as PDU;
    const { room_id: _r, ...noRoom } = base;
    await expect(toRoomEvent(noRoom as PDU, rv("12"))).rejects.toThrow();
    await expect(toRoomEvent({ ...base, sender: undefined } as unknown as PDU, rv("12"))).rejects.toThrow();
    await expect(toRoomEvent({ ...base, type: 5 } as unknown as PDU, rv("12"))).rejects.toThrow();
    await expect(toRoomEvent({ ...base, prev_events: "x" } as unknown as PDU, rv("12"))).rejects.toThrow();
    // A v11 create event without room_id is malformed too.
    await expect(toRoomEvent({ ...noRoom, type: "m.room.create", state_key: "" } as PDU, rv("11"))).rejects.toThrow();
  });

  it("event ID and reference hash agree with canonical JSON of the redacted form", async () => {
    const pdu = { ...common, type: "m.room.topic", state_key: "", content: { topic: "x" }, prev_events: ["$p"], auth_events: [] } as PDU;
    const ev = await toRoomEvent(pdu, rv("9"));
    const { signatures: _s, ...redacted } = redactEvent(pdu, rv("9"));
    const expected = await sha256b64(canonicalJson(redacted));
    expect(ev.event_id).toBe("$" + expected.replace(/\+/g, "-").replace(/\//g, "_"));
  });
});

describe("digestPdu (one encoding shared by the checks on receipt)", () => {
  const base = { room_id: "!r:x", type: "m.room.member", state_key: "@a:x", sender: "@a:x", content: { membership: "join", displayname: "Ä 😀" }, origin_server_ts: 1, depth: 3, prev_events: ["$p"], auth_events: ["$a"] };

  it("agrees with the separate checks: size, content hash, event ID, signed bytes", async () => {
    const key = await generateSigningKey("ed25519:k");
    for (const id of ["3", "5", "10", "11", "12"]) {
      const { pdu, eventId } = await hashAndSignEvent({ ...base } as unknown as PDU, rv(id), "x", key);
      for (const variant of [pdu, { ...pdu, unsigned: { age: 12, "ü": [1, 2], "日😀": "\u0001é" } } as PDU]) {
        const d = await digestPdu(variant, rv(id));
        expect(d.size).toBe(new TextEncoder().encode(canonicalJson(variant)).length);
        expect(d.contentHashOk).toBe(await checkContentHash(variant));
        expect(d.contentHashOk).toBe(true);
        expect(d.eventId).toBe(await computeEventId(variant, rv(id)));
        expect(d.eventId).toBe(eventId);
        const { signatures: _s, unsigned: _u, ...signedPart } = redactEvent(variant, rv(id)) as unknown as Record<string, unknown>;
        expect(new TextDecoder().decode(d.signed)).toBe(canonicalJson(signedPart));
        expect(await verifySignedBytes(variant, "x", "ed25519:k", key.publicKey, d.signed)).toBe(true);
        expect(await verifySignedBytes(variant, "x", "ed25519:k", (await generateSigningKey()).publicKey, d.signed)).toBe(false);
      }
      // Content changed after hashing: the hash no longer matches, the ID (redacted form) is the same.
      const altered = { ...pdu, content: { ...pdu.content, displayname: "B" } } as PDU;
      const d = await digestPdu(altered, rv(id));
      expect(d.contentHashOk).toBe(false);
      expect(d.eventId).toBe(eventId);
    }
  });

  it("refuses what is not (strict) canonical JSON, as the size check did; an event of nothing but hashes", async () => {
    await expect(digestPdu({ ...base, content: { membership: "join", f: 1.5 } } as unknown as PDU, rv("12"))).rejects.toBeInstanceOf(CanonicalJsonError);
    await expect(digestPdu({ ...base, unsigned: { f: 1.5 } } as unknown as PDU, rv("12"))).rejects.toBeInstanceOf(CanonicalJsonError);
    const bare = { hashes: { sha256: "x" } } as unknown as PDU;
    expect((await digestPdu(bare, rv("12"))).size).toBe(canonicalJson(bare).length);
  });
});

describe("hashAndSignEvent's size", () => {
  it("is the UTF-8 length of the finished PDU's canonical JSON, without encoding it again", async () => {
    const key = await specKey();
    const base = {
      room_id: "!r:domain",
      sender: "@a:domain",
      origin_server_ts: 1000,
      type: "m.room.message",
      content: { msgtype: "m.text", body: "héllo wörld ✓ 😀 \u0001" },
      depth: 3,
      prev_events: ["$p"],
      auth_events: ["$a", "$b"],
    } as unknown as PDU;
    const cases: [string, PDU][] = [
      ["10", base],
      ["12", { ...base, unsigned: { age_ts: 5, "ü": "x" } } as PDU],
      ["1", { ...base, event_id: "$e:domain", prev_events: [["$p:domain", { sha256: "x" }]], auth_events: [] } as unknown as PDU],
      ["3", { ...base, signatures: { "other.example": { "ed25519:k": "c2ln" } } } as unknown as PDU],
    ];
    for (const [v, input] of cases) {
      const { pdu, size } = await hashAndSignEvent(input, rv(v), "domain", key);
      expect(size, v).toBe(new TextEncoder().encode(canonicalJson(pdu)).length);
    }
  });
});
