// Outbound calls to an application service (spec: Application Service API "Authorization":
// the homeserver presents its hs_token as `Authorization: Bearer`). The URL rule is checked on
// every call, so a registration stored before the rule changed cannot reach a forbidden host.
import type { Config } from "../config";
import type { Appservice } from "../core/appservice-registration";
import { appserviceUrlProblem } from "./appservices";

export class AppserviceCallError extends Error {
  constructor(
    readonly kind: "no_url" | "forbidden_url" | "timeout" | "connection" | "status",
    message: string,
    readonly status?: number,
    readonly body?: string,
  ) {
    super(message);
  }
}

/** Largest response body read from an appservice. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

/** Call `path` (e.g. "/_matrix/app/v1/users/@x:hs") on the appservice; the parsed JSON answer
 *  of a 2xx, else AppserviceCallError. */
export async function callAppservice(
  config: Pick<Config, "appserviceHttpLoopback">,
  service: Appservice,
  method: "GET" | "PUT" | "POST",
  path: string,
  opts: { body?: unknown; timeoutMs?: number } = {},
): Promise<unknown> {
  if (!service.url) throw new AppserviceCallError("no_url", "The application service has no URL");
  const problem = appserviceUrlProblem(service.url, config.appserviceHttpLoopback);
  if (problem) throw new AppserviceCallError("forbidden_url", problem);
  const url = service.url.replace(/\/+$/, "") + path;
  const headers: Record<string, string> = { authorization: `Bearer ${service.hsToken}` };
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers,
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      redirect: "manual",
      signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000),
    });
  } catch (e) {
    const name = (e as Error).name;
    if (name === "TimeoutError" || name === "AbortError") throw new AppserviceCallError("timeout", "The application service did not answer in time");
    throw new AppserviceCallError("connection", `Could not reach the application service: ${(e as Error).message}`);
  }
  const text = await readLimited(res);
  if (res.status < 200 || res.status >= 300) throw new AppserviceCallError("status", `The application service answered ${res.status}`, res.status, text);
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new AppserviceCallError("status", "The application service answered with invalid JSON", res.status, text);
  }
}

async function readLimited(res: Response): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_RESPONSE_BYTES) {
      await reader.cancel();
      throw new AppserviceCallError("status", "The application service's answer is too large", res.status);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let o = 0;
  for (const c of chunks) (all.set(c, o), (o += c.byteLength));
  return new TextDecoder().decode(all);
}
