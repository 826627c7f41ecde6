// Asking application services about things in their namespaces (spec: Application Service API
// "Querying"): a user or alias that does not exist yet may be created on demand by the
// appservice that owns its namespace; third-party lookups are forwarded to the appservices that
// declare the protocol.
import type { Env } from "../env";
import type { Config } from "../config";
import type { Appservice } from "../core/appservice-registration";
import { listAppservices } from "./appservices";
import { AppserviceCallError, callAppservice } from "./appservice-client";

const QUERY_TIMEOUT_MS = 10_000;

async function firstYes(services: Appservice[], config: Config, path: string): Promise<boolean> {
  for (const s of services) {
    try {
      await callAppservice(config, s, "GET", path, { timeoutMs: QUERY_TIMEOUT_MS });
      return true; // 200: "the application service [...] has created" it
    } catch (e) {
      if (!(e instanceof AppserviceCallError)) throw e;
    }
  }
  return false;
}

/** GET {url}/_matrix/app/v1/users/{userId} of the appservices whose users namespace holds this
 *  (not yet existing) local user; true when one says it created the user. */
export async function queryAppserviceUser(env: Env, config: Config, userId: string): Promise<boolean> {
  const services = (await listAppservices(env, config.serverName)).filter((s) => s.url && s.isInterestedInUser(userId));
  if (services.length === 0) return false;
  return firstYes(services, config, `/_matrix/app/v1/users/${encodeURIComponent(userId)}`);
}

/** GET {url}/_matrix/app/v1/rooms/{alias} for an unknown local alias in an aliases namespace. */
export async function queryAppserviceAlias(env: Env, config: Config, alias: string): Promise<boolean> {
  const services = (await listAppservices(env, config.serverName)).filter((s) => s.url && s.isInterestedInAlias(alias));
  if (services.length === 0) return false;
  return firstYes(services, config, `/_matrix/app/v1/rooms/${encodeURIComponent(alias)}`);
}

/** The appservices (with a URL) that declare `protocol`. */
export async function protocolServices(env: Env, config: Config, protocol?: string): Promise<Appservice[]> {
  return (await listAppservices(env, config.serverName)).filter((s) => s.url && (protocol === undefined ? s.protocols.length > 0 : s.protocols.includes(protocol)));
}

/** GET `path` on each service; the answers that came back (failures are skipped, as a lookup
 *  should not fail because one bridge is down). */
export async function askAll(config: Config, services: Appservice[], path: string): Promise<unknown[]> {
  const answers = await Promise.all(
    services.map((s) => callAppservice(config, s, "GET", path, { timeoutMs: QUERY_TIMEOUT_MS }).catch((e) => (e instanceof AppserviceCallError ? undefined : Promise.reject(e)))),
  );
  return answers.filter((a) => a !== undefined);
}
