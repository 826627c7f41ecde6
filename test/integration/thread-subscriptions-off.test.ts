// With THREAD_SUBSCRIPTIONS off (the default), MSC4306 is absent: not advertised, its paths are
// unknown endpoints, no postcontent kind, and thread replies notify as before.
// (The feature itself: thread-subscriptions.test.ts, run with it on.)
import { describe, it, expect } from "vitest";
import { call, createRoom, registerUser, sendText } from "./helpers";

const enc = encodeURIComponent;

describe("MSC4306 thread subscriptions, off", () => {
  it("is not advertised, its endpoints are unrecognised and the push rules have no postcontent kind", async () => {
    const v = await call("GET", "/_matrix/client/versions");
    expect(v.body.unstable_features["org.matrix.msc4306"]).toBeUndefined();
    const alice = await registerUser();
    const roomId = await createRoom(alice);
    const root = await sendText(alice, roomId, "root");
    const path = `/_matrix/client/unstable/io.element.msc4306/rooms/${enc(roomId)}/thread/${enc(root)}/subscription`;
    for (const method of ["GET", "PUT", "DELETE"]) {
      const r = await call(method, path, { token: alice.accessToken, body: method === "PUT" ? {} : undefined });
      expect(r.status, method).toBe(404);
      expect(r.body.errcode).toBe("M_UNRECOGNIZED");
    }
    // MSC4308: the pagination endpoint is unknown and the sliding-sync extension ignored.
    const page = await call("GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b", { token: alice.accessToken });
    expect([page.status, page.body.errcode]).toEqual([404, "M_UNRECOGNIZED"]);
    const sss = await call("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", {
      token: alice.accessToken,
      body: { lists: {}, extensions: { "io.element.msc4308.thread_subscriptions": { enabled: true } } },
    });
    expect(sss.status).toBe(200);
    expect(sss.body.extensions).toEqual({});
    const rules = await call("GET", "/_matrix/client/v3/pushrules/", { token: alice.accessToken });
    expect(Object.keys(rules.body.global).sort()).toEqual(["content", "override", "room", "sender", "underride"]);
    const kind = await call("GET", "/_matrix/client/v3/pushrules/global/postcontent/.io.element.msc4306.rule.subscribed_thread", { token: alice.accessToken });
    expect(kind.status).toBe(400);
    expect(kind.body.errcode).toBe("M_INVALID_PARAM");
  });
});
