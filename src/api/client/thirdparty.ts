// Third-party networks (spec: Client-Server API "Third-party Networks"): every lookup is
// forwarded to the application services that declare the protocol in their registration
// (`protocols`), and their answers combined.
import { Hono, type Context } from "hono";
import type { AppEnv } from "../types";
import { notFound } from "../errors";
import { requireAuth } from "../middleware/auth";
import { askAll, protocolServices } from "../../services/appservice-queries";

export const thirdparty = new Hono<AppEnv>();

const enc = encodeURIComponent;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Several appservices may serve one protocol: keep the first answer's metadata and the union of
 *  their `instances`. */
function mergeProtocols(answers: unknown[]): Record<string, unknown> | undefined {
  const objects = answers.filter(isObject);
  if (objects.length === 0) return undefined;
  const instances = objects.flatMap((o) => (Array.isArray(o.instances) ? o.instances : []));
  return { ...objects[0], instances };
}

thirdparty.get("/thirdparty/protocols", requireAuth, async (c) => {
  const services = await protocolServices(c.env, c.var.config);
  const names = [...new Set(services.flatMap((s) => s.protocols))];
  const out: Record<string, unknown> = {};
  await Promise.all(
    names.map(async (p) => {
      const merged = mergeProtocols(await askAll(c.var.config, services.filter((s) => s.protocols.includes(p)), `/_matrix/app/v1/thirdparty/protocol/${enc(p)}`));
      if (merged) out[p] = merged;
    }),
  );
  return c.json(out);
});

thirdparty.get("/thirdparty/protocol/:protocol", requireAuth, async (c) => {
  const p = c.req.param("protocol");
  const services = await protocolServices(c.env, c.var.config, p);
  const merged = mergeProtocols(await askAll(c.var.config, services, `/_matrix/app/v1/thirdparty/protocol/${enc(p)}`));
  if (!merged) throw notFound("Protocol is unknown");
  return c.json(merged);
});

/** The request's query string, passed on as is (the fields are protocol-defined). */
const query = (c: Context<AppEnv>) => {
  const q = new URL(c.req.url).searchParams;
  q.delete("access_token");
  const s = q.toString();
  return s ? `?${s}` : "";
};

async function lookup(c: Context<AppEnv>, kind: "location" | "user", protocol?: string) {
  const services = await protocolServices(c.env, c.var.config, protocol);
  if (protocol !== undefined && services.length === 0) throw notFound("Protocol is unknown");
  const path = `/_matrix/app/v1/thirdparty/${kind}${protocol !== undefined ? `/${enc(protocol)}` : ""}${query(c)}`;
  const answers = await askAll(c.var.config, services, path);
  return c.json(answers.flatMap((a) => (Array.isArray(a) ? a.filter(isObject) : [])));
}

thirdparty.get("/thirdparty/location/:protocol", requireAuth, (c) => lookup(c, "location", c.req.param("protocol")));
thirdparty.get("/thirdparty/user/:protocol", requireAuth, (c) => lookup(c, "user", c.req.param("protocol")));
thirdparty.get("/thirdparty/location", requireAuth, (c) => lookup(c, "location"));
thirdparty.get("/thirdparty/user", requireAuth, (c) => lookup(c, "user"));
