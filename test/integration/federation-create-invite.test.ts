// createRoom's invite list with users of another server (workerd): each invite goes to the
// invitee's server as PUT /v2/invite (co-signed there, with invite_room_state), like
// POST /rooms/{roomId}/invite; is_direct is kept; a refusal fails the request as createRoom's
// spec says (403, M_INVITE_BLOCKED; 400 M_UNSUPPORTED_ROOM_VERSION).
import { describe, it, expect } from "vitest";
import { call, clientOk, federationSetup, offline, type Json, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import { signJson } from "../../src/core/signing";
import { redactEvent } from "../../src/core/redaction";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";

const REMOTE = "invitee.test";
const BOB = `@bob:${REMOTE}`;
const enc = encodeURIComponent;
let key: SigningKey;
let alice: TestUser;

federationSetup(REMOTE, (s) => ({ key, alice } = s), "afterEach");

/** The invitee's server: answers v2/invite with `answer` (or co-signs), records the requests. */
function inviteeServer(answer?: { status: number; errcode: string }) {
  const invites: Json[] = [];
  setFederationFetch(async (input, init) => {
    const url = new URL(String(input));
    if (url.hostname === REMOTE && url.pathname.startsWith("/_matrix/federation/v2/invite/")) {
      const body = JSON.parse(String(init!.body)) as Json;
      invites.push(body);
      if (answer) return Response.json({ errcode: answer.errcode, error: "no" }, { status: answer.status });
      const rv = getRoomVersion(body.room_version)!;
      const pdu = body.event as PDU;
      const signed = await signJson(redactEvent(pdu, rv) as unknown as Record<string, unknown>, REMOTE, key, { strict: rv.strictCanonicalJson });
      const sigs = (signed as Json).signatures[REMOTE];
      return Response.json({ event: { ...pdu, signatures: { ...pdu.signatures, [REMOTE]: sigs } } });
    }
    if (url.hostname === REMOTE && url.pathname.startsWith("/_matrix/federation/v1/send/")) return Response.json({ pdus: {} });
    throw new Error("offline (test)");
  });
  return invites;
}

describe("createRoom with a remote invitee", () => {
  it("sends the invite to the invitee's server (v2, invite_room_state, is_direct) and records it co-signed", async () => {
    const invites = inviteeServer();
    const r = await call("POST", "/_matrix/client/v3/createRoom", { token: alice.accessToken, body: { preset: "trusted_private_chat", is_direct: true, invite: [BOB] } });
    expect(r.status).toBe(200);
    const roomId = r.body.room_id as string;
    expect(invites).toHaveLength(1);
    expect(invites[0].event).toMatchObject({ type: "m.room.member", state_key: BOB, content: { membership: "invite", is_direct: true } });
    const stripped = (invites[0].invite_room_state as Json[]).map((e) => e.type);
    expect(stripped).toContain("m.room.create");
    expect(stripped).toContain("m.room.join_rules");
    const member = await clientOk(alice.accessToken, "GET", `/rooms/${enc(roomId)}/state/m.room.member/${enc(BOB)}`);
    expect(member).toMatchObject({ membership: "invite", is_direct: true });
  });

  it("a refusal fails the request as the spec says", async () => {
    const cases: [{ status: number; errcode: string }, number, string][] = [
      [{ status: 403, errcode: "M_FORBIDDEN" }, 403, "M_FORBIDDEN"],
      [{ status: 403, errcode: "M_INVITE_BLOCKED" }, 403, "M_INVITE_BLOCKED"],
      [{ status: 400, errcode: "M_INCOMPATIBLE_ROOM_VERSION" }, 400, "M_UNSUPPORTED_ROOM_VERSION"],
    ];
    for (const [answer, status, errcode] of cases) {
      inviteeServer(answer);
      const r = await call("POST", "/_matrix/client/v3/createRoom", { token: alice.accessToken, body: { preset: "private_chat", invite: [BOB] } });
      expect([r.status, r.body.errcode]).toEqual([status, errcode]);
    }
  });
});
