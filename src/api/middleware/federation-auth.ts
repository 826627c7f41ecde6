// X-Matrix request authentication for /_matrix/federation/* (spec: Server-Server API
// "Request Authentication"). Nothing in the federation API trusts an unsigned request: every
// route behind this middleware sees `c.var.origin`, the verified sending server.
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../types";
import { MatrixError } from "../errors";
import { readBodyText, readJsonBody } from "../validate";
import { parseXMatrix, verifyRequest, XMatrixParseError } from "../../core/x-matrix";
import { getVerifyKey } from "../../services/federation/keys";
import { federationContext } from "../../services/federation/client";
import { onInboundFromServer } from "../../services/federation/sender";

const unauthorized = (msg: string) => new MatrixError(401, "M_UNAUTHORIZED", msg);

/** Verify the request's X-Matrix signature or answer 401 M_UNAUTHORIZED. */
export const federationAuth: MiddlewareHandler<AppEnv> = async (c, next) => {
  const config = c.var.config;
  const header = c.req.header("authorization");
  if (!header) throw unauthorized("Missing X-Matrix Authorization header");
  let auth;
  try {
    auth = parseXMatrix(header);
  } catch (e) {
    if (e instanceof XMatrixParseError) throw unauthorized(`Malformed X-Matrix header: ${e.message}`);
    throw e;
  }
  // "If this property is included, but the value does not match the receiving server's name,
  // the receiving server must deny the request with an HTTP status code 401 Unauthorized."
  if (auth.destination !== undefined && auth.destination !== config.serverName) {
    throw unauthorized("Request is not addressed to this server");
  }
  if (auth.origin === config.serverName) throw unauthorized("Request claims to come from this server");

  // The signed `content` is the JSON-parsed body (absent for bodiless requests). readJsonBody
  // reads through hono's body cache, so handlers can read the body again.
  const method = c.req.method.toUpperCase();
  let content: unknown;
  const hasBody = method !== "GET" && method !== "HEAD" && method !== "DELETE";
  if (hasBody) {
    const raw = await readBodyText(c);
    if (raw.trim() !== "") content = await readJsonBody(c);
  }
  const url = new URL(c.req.url);
  const uri = url.pathname + url.search;

  const ctx = federationContext(c.env, config);
  const key = await getVerifyKey(ctx, auth.origin, auth.key, { purpose: "request" });
  if (!key) throw unauthorized(`Unknown or expired key ${auth.key} for ${auth.origin}`);
  if (!(await verifyRequest(auth, { method, uri, content }, config.serverName, key.publicKey))) {
    throw unauthorized("Invalid X-Matrix signature");
  }
  c.set("origin", auth.origin);
  // A request from a server we had marked down means it is back: resume sending to it.
  try {
    c.executionCtx.waitUntil(onInboundFromServer(c.env, config, auth.origin).catch(() => {}));
  } catch {
    /* no execution context (unit tests) */
  }
  await next();
};
