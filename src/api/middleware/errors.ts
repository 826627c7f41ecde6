// Errors → Matrix JSON. No request ever gets a stack trace; unexpected failures are logged and
// answered 500 M_UNKNOWN.
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { AppEnv } from "../types";
import { MatrixError } from "../errors";
import { ConfigError } from "../../config";
import { CanonicalJsonError } from "../../core/canonical-json";

export function onError(err: Error, c: Context<AppEnv>): Response {
  if (err instanceof MatrixError) return c.json(err.toJSON(), err.status);
  // Client JSON that cannot be signed (integers beyond 2^53, floats, lone surrogates): spec
  // Appendices "Canonical JSON". Found by the fuzzer as 500s (test/integration/fuzz-regressions.test.ts).
  if (err instanceof CanonicalJsonError) return c.json({ errcode: "M_BAD_JSON", error: `Not canonical JSON: ${err.message}` }, 400);
  if (err instanceof ConfigError) return c.json({ errcode: "M_UNKNOWN", error: err.message }, 500);
  if (err instanceof HTTPException) {
    return c.json({ errcode: err.status === 413 ? "M_TOO_LARGE" : "M_UNKNOWN", error: err.message || "Request failed" }, err.status);
  }
  console.error("unhandled error", c.req.method, new URL(c.req.url).pathname, err);
  return c.json({ errcode: "M_UNKNOWN", error: "Internal server error" }, 500);
}
