// OAuth 2.0 JSON error responses (RFC 6749 §5.2, RFC 7591 §3.2.2): {"error", "error_description"},
// never cached. Matrix's {"errcode"} shape is not used on these endpoints.
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

export function noStore(c: Context): void {
  c.header("Cache-Control", "no-store");
  c.header("Pragma", "no-cache");
}

export function oauthError(c: Context, status: ContentfulStatusCode, error: string, description?: string): Response {
  noStore(c);
  return c.json(description ? { error, error_description: description } : { error }, status);
}

/** Form fields of an application/x-www-form-urlencoded body (the token, revocation and device
 *  endpoints take only that, RFC 6749 §3.2); null if the body is something else. Repeated
 *  parameters are an error (RFC 6749 §3.1), reported as an empty-string sentinel. */
export async function formBody(c: Context): Promise<Map<string, string> | null> {
  const type = c.req.header("content-type") ?? "";
  if (!type.toLowerCase().startsWith("application/x-www-form-urlencoded")) return null;
  const text = await c.req.text();
  if (text.length > 64 * 1024) return null;
  const out = new Map<string, string>();
  const seen = new Set<string>();
  for (const [k, v] of new URLSearchParams(text)) {
    if (seen.has(k)) throw new RepeatedParameter(k);
    seen.add(k);
    out.set(k, v);
  }
  return out;
}

export class RepeatedParameter extends Error {
  constructor(readonly parameter: string) {
    super(`${parameter} is repeated`);
  }
}
