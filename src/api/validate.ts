// Request body parsing: JSON → zod schema → typed value, or a Matrix error.
import type { Context } from "hono";
import { z } from "zod";
import { MatrixError, badJson, invalidParam, notJson } from "./errors";

/** Largest request body we read as JSON (events themselves are limited to 65536 bytes later). */
export const MAX_JSON_BODY = 1024 * 1024;

/** The request body as text. JSON bodies are UTF-8 (RFC 8259 §8.1; the spec's "API standards"
 *  exchange JSON): bytes that are not valid UTF-8 are 400 M_NOT_JSON here, before any field is
 *  read. (Reading with `c.req.text()` would replace them with U+FFFD and accept the body.) The
 *  bytes go through hono's body cache, so this may be called more than once. */
export async function readBodyText(c: Context): Promise<string> {
  const len = Number(c.req.header("content-length") ?? "0");
  if (len > MAX_JSON_BODY) throw new MatrixError(413, "M_TOO_LARGE", "Request body too large");
  const bytes = await c.req.arrayBuffer();
  if (bytes.byteLength > MAX_JSON_BODY) throw new MatrixError(413, "M_TOO_LARGE", "Request body too large");
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new MatrixError(400, "M_NOT_JSON", "Request body is not valid UTF-8");
  }
}

export async function readJsonBody(c: Context): Promise<unknown> {
  const text = await readBodyText(c);
  if (text.trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw notJson();
  }
  // JSON.parse copes with any depth, but what handles the value next (structured clone to a
  // Durable Object, canonical JSON, zod) recurses and overflows the stack: a 20,000-deep body
  // answered 500. Checked after parsing so malformed text still answers M_NOT_JSON.
  if (nestedDeeperThan(text, MAX_JSON_DEPTH)) throw badJson(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
  return value;
}

/** Deepest nesting we accept in a JSON body. serde_json (ruma-based servers) stops at 128, so
 *  deeper events do not travel far anyway. */
export const MAX_JSON_DEPTH = 128;

/** Whether arrays/objects in the JSON text `text` nest deeper than `max`. One linear pass. */
export function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c) i++; // backslash: skip the escaped character
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) inString = true;
    else if (ch === 0x7b || ch === 0x5b) {
      if (++depth > max) return true;
    } else if (ch === 0x7d || ch === 0x5d) depth--;
  }
  return false;
}

function describe(issues: z.core.$ZodIssue[]): string {
  return issues
    .slice(0, 3)
    .map((i) => (i.path.length ? `${i.path.join(".")}: ${i.message}` : i.message))
    .join("; ");
}

/** Parse the JSON body against `schema`. Wrong shape → 400 M_BAD_JSON naming the field. */
export async function parseBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  const raw = await readJsonBody(c);
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw badJson("Body must be a JSON object");
  const r = schema.safeParse(raw);
  if (!r.success) throw badJson(describe(r.error.issues));
  return r.data;
}

/** Validate an already-parsed value (query params, nested JSON). */
export function parseValue<S extends z.ZodType>(value: unknown, schema: S, errcode = "M_INVALID_PARAM"): z.infer<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new MatrixError(400, errcode, describe(r.error.issues));
  return r.data;
}

/** An optional field that a client may also send as `null`, read as absent. Clients built on
 *  languages with nullable types send `"since": null` for "no token" (Synapse reads such keys
 *  with `.get()` and treats null as missing); refusing it would reject a request the spec
 *  allows to omit the field. */
export function absentIfNull<S extends z.ZodType>(schema: S) {
  return schema
    .nullish()
    .transform((v) => (v === null ? undefined : v) as Exclude<z.infer<S>, null> | undefined);
}

/** A `limit` query parameter: absent or empty means `dflt`; otherwise a decimal integer of at
 *  least `min` (else 400 M_INVALID_PARAM); values above `max` are capped, not refused, since
 *  clients ask for large limits to mean "as many as you give". */
export function queryLimit(raw: string | undefined, { dflt, max = Number.MAX_SAFE_INTEGER, min = 0 }: { dflt: number; max?: number; min?: number }): number {
  if (raw === undefined || raw === "") return dflt;
  if (!/^\d{1,15}$/.test(raw) || Number(raw) < min) throw invalidParam(min > 0 ? "limit must be a positive integer" : "limit must be a non-negative integer");
  return Math.min(Number(raw), max);
}
