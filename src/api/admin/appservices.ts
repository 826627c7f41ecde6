// Lattice admin API for application service registrations (spec: Application Service API
// "Registration" defines the file; how a server loads it is up to the server — here at runtime):
//   POST   /_lattice/admin/v1/appservices        body: the registration as YAML or JSON
//   GET    /_lattice/admin/v1/appservices
//   DELETE /_lattice/admin/v1/appservices/{id}
// All need a server admin's access token. `npm run appservice` wraps them.
import { Hono } from "hono";
import { load as loadYaml, JSON_SCHEMA } from "js-yaml";
import type { AppEnv } from "../types";
import { MatrixError, badJson, notFound } from "../errors";
import { MAX_JSON_BODY, parseValue } from "../validate";
import { requireAdmin } from "./admin";
import { registrationSchema } from "../../core/appservice-registration";
import { appserviceQueue } from "../../services/appservice-fanout";
import { addAppservice, listAppservices, removeAppservice } from "../../services/appservices";

export const appserviceAdmin = new Hono<AppEnv>();

/** JSON is YAML, so one parser serves both; JSON_SCHEMA keeps YAML's implicit types to JSON's
 *  (no dates, no `!!js` tags). */
function parseRegistrationText(text: string): unknown {
  if (text.length > MAX_JSON_BODY) throw new MatrixError(413, "M_TOO_LARGE", "Registration too large");
  try {
    return loadYaml(text, { schema: JSON_SCHEMA });
  } catch (e) {
    throw new MatrixError(400, "M_NOT_JSON", `Registration is neither valid YAML nor JSON: ${(e as Error).message.split("\n")[0]}`);
  }
}

appserviceAdmin.post("/v1/appservices", async (c) => {
  await requireAdmin(c);
  const raw = parseRegistrationText(new TextDecoder().decode(await c.req.arrayBuffer()));
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw badJson("Registration must be a mapping");
  const reg = parseValue(raw, registrationSchema, "M_BAD_JSON");
  const config = c.var.config;
  const service = await addAppservice(c.env, config.serverName, reg, config.appserviceHttpLoopback);
  return c.json(service.summary());
});

appserviceAdmin.get("/v1/appservices", async (c) => {
  await requireAdmin(c);
  const list = await listAppservices(c.env, c.var.config.serverName);
  return c.json({ appservices: list.map((a) => a.summary()) });
});

appserviceAdmin.delete("/v1/appservices/:id", async (c) => {
  await requireAdmin(c);
  const id = c.req.param("id");
  if (!(await removeAppservice(c.env, id))) throw notFound("No such application service");
  await appserviceQueue(c.env, id).clear(); // its queued transactions go too
  return c.json({});
});
