// Helpers for appservice integration tests: a server admin, fresh registrations, acting with
// an as_token, and reading an AppserviceSenderDO's queue.
import { expect } from "vitest";
import { call, uniqueName, type TestUser } from "./helpers";

let admin: TestUser | undefined;

export async function serverAdmin(): Promise<TestUser> {
  if (admin) return admin;
  const { sharedSecretMac } = await import("../../src/api/admin/admin");
  const n = await call("GET", "/_synapse/admin/v1/register");
  const username = uniqueName("asadmin");
  const mac = await sharedSecretMac("test-shared-secret", n.body.nonce, username, "pw", true);
  const r = await call("POST", "/_synapse/admin/v1/register", { body: { nonce: n.body.nonce, username, password: "pw", admin: true, mac } });
  expect(r.status).toBe(200);
  admin = { userId: r.body.user_id, accessToken: r.body.access_token, deviceId: r.body.device_id } as TestUser;
  return admin;
}

/** A registration with fresh tokens and exclusive namespaces `@_<id>_.*` and `#_<id>_.*`. */
export function registration(over: Record<string, unknown> = {}): Record<string, any> {
  const p = uniqueName("as").toLowerCase();
  return {
    id: p,
    url: null,
    as_token: `as_${p}_secret`,
    hs_token: `hs_${p}_secret`,
    sender_localpart: `${p}_bot`,
    namespaces: {
      users: [{ exclusive: true, regex: `@_${p}_.*:test\\.local` }],
      aliases: [{ exclusive: true, regex: `#_${p}_.*:test\\.local` }],
      rooms: [],
    },
    rate_limited: false,
    ...over,
  };
}

/** Register a `registration(over)`; helpers that act with its as_token. */
export async function addAppservice(over: Record<string, unknown> = {}) {
  const reg = registration(over);
  const p = reg.id as string;
  const r = await call("POST", "/_lattice/admin/v1/appservices", { token: (await serverAdmin()).accessToken, body: reg });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  const as = (method: string, path: string, body?: unknown) => call(method, path, { token: reg.as_token, body });
  const ghost = (name: string) => `@_${p}_${name}:test.local`;
  const registerGhost = async (name: string) => {
    const g = await as("POST", "/_matrix/client/v3/register", { type: "m.login.application_service", username: `_${p}_${name}`, inhibit_login: true });
    expect(g.status, JSON.stringify(g.body)).toBe(200);
    return g.body.user_id as string;
  };
  return { p, reg, as, ghost, registerGhost, sender: `@${reg.sender_localpart}:test.local` };
}

/** The queued items of appservice `id` (kind and parsed body), in order. */
export async function queuedItems(id: string): Promise<{ kind: string; body: any }[]> {
  const { runInDurableObject, env } = await import("cloudflare:test");
  const stub = env.APPSERVICE_SENDER.get(env.APPSERVICE_SENDER.idFromName(id));
  return runInDurableObject(stub, (_i, state) =>
    state.storage.sql.exec<{ kind: string; body: string }>("SELECT kind, body FROM queue ORDER BY seq").toArray().map((r) => ({ kind: r.kind, body: JSON.parse(r.body) })),
  );
}

/** The transaction body appservice `id`'s queue would send now for everything queued. */
export async function pendingTransaction(id: string): Promise<Record<string, any>> {
  const { runInDurableObject, env } = await import("cloudflare:test");
  const { appserviceById } = await import("../../src/services/appservices");
  const service = await appserviceById(env, "test.local", id);
  const stub = env.APPSERVICE_SENDER.get(env.APPSERVICE_SENDER.idFromName(id));
  return runInDurableObject(stub, (instance) => (instance as any).transactionBody(service, Number.MAX_SAFE_INTEGER));
}

/** Poll `probe` until `done` holds (at most ~5 s). */
export async function eventually<T>(probe: () => Promise<T>, done: (v: T) => boolean): Promise<T> {
  let v = await probe();
  for (let i = 0; i < 100 && !done(v); i++) {
    await new Promise((r) => setTimeout(r, 50));
    v = await probe();
  }
  return v;
}
