// Key exchange (spec: Server-Server API "Retrieving server keys"):
//   GET  /_matrix/key/v2/server                 our keys ("Publishing Keys")
//   GET  /_matrix/key/v2/query/{serverName}     notary, one server ("Querying Keys Through Another Server")
//   POST /_matrix/key/v2/query                  notary, batch
// These endpoints are unauthenticated by design: keys are self-signed, notary answers re-signed.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { parseBody, parseValue } from "../validate";
import { notaryKeyResponses, ownKeyResponse, type ServerKeys } from "../../services/federation/keys";
import { federationContext } from "../../services/federation/client";

/** Servers one batch query may name (each may trigger an outbound fetch). */
const MAX_SERVERS_PER_QUERY = 50;

export const serverKeys = new Hono<AppEnv>();

serverKeys.get("/server", async (c) => {
  return c.json(await ownKeyResponse(c.env, c.var.config));
});

// Legacy form with a key ID in the path; the spec removed it but some servers still ask.
serverKeys.get("/server/:keyId", async (c) => c.json(await ownKeyResponse(c.env, c.var.config)));

const minValidQuery = z.object({ minimum_valid_until_ts: z.coerce.number().int().nonnegative().optional() });

serverKeys.get("/query/:serverName", async (c) => {
  const q = parseValue(c.req.query(), minValidQuery);
  const ctx = federationContext(c.env, c.var.config);
  return c.json({ server_keys: await notaryKeyResponses(ctx, c.req.param("serverName"), q.minimum_valid_until_ts) });
});

const criteria = z.object({ minimum_valid_until_ts: z.number().int().nonnegative().optional() }).loose();
const queryBody = z.object({
  server_keys: z.record(z.string(), z.record(z.string(), criteria)),
});

serverKeys.post("/query", async (c) => {
  const body = await parseBody(c, queryBody);
  const servers = Object.entries(body.server_keys).slice(0, MAX_SERVERS_PER_QUERY);
  const ctx = federationContext(c.env, c.var.config);
  const results = await Promise.all(
    servers.map(([server, keys]) => {
      // The strictest criterion asked for this server (no key IDs: all keys, valid now).
      const mins = Object.values(keys).map((k) => k.minimum_valid_until_ts).filter((x): x is number => x !== undefined);
      return notaryKeyResponses(ctx, server, mins.length ? Math.max(...mins) : undefined).catch(() => [] as ServerKeys[]);
    }),
  );
  return c.json({ server_keys: results.flat() });
});
