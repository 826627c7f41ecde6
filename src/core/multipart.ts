// multipart/mixed for federation media (spec: Server-Server API "Content Repository",
// GET /_matrix/federation/v1/media/download|thumbnail): the answer "MUST contain a boundary (per
// RFC 2046) delineating exactly two parts": first `application/json` metadata (currently always
// `{}`), then either the bytes with their Content-Type/Content-Disposition, or a `Location`
// header pointing where the bytes can be fetched.
//
// Pure code, no I/O: building the envelope around a body (the body itself is streamed by the
// caller) and parsing a whole buffered answer.

const enc = new TextEncoder();
const dec = new TextDecoder();

/** RFC 2046 §5.1.1: boundary := 0*69<bchars> bcharsnospace. We generate only [A-Za-z0-9]. */
const BOUNDARY_RE = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;

export function isValidBoundary(b: string): boolean {
  return BOUNDARY_RE.test(b);
}

/** The text before and after the second part's body, so the body can be streamed between them:
 *  `head + body + tail` is the whole multipart/mixed entity. Header values must not contain CR/LF
 *  (callers pass values they built; checked here anyway). */
export function multipartEnvelope(
  boundary: string,
  metadata: unknown,
  partHeaders: Record<string, string>,
): { head: Uint8Array; tail: Uint8Array; contentType: string } {
  if (!isValidBoundary(boundary)) throw new Error("invalid multipart boundary");
  const lines: string[] = [];
  for (const [k, v] of Object.entries(partHeaders)) {
    if (/[\r\n]/.test(k) || /[\r\n]/.test(v)) throw new Error("header value contains a line break");
    lines.push(`${k}: ${v}`);
  }
  const head =
    `--${boundary}\r\n` +
    `Content-Type: application/json\r\n\r\n` +
    `${JSON.stringify(metadata ?? {})}\r\n` +
    `--${boundary}\r\n` +
    `${lines.join("\r\n")}\r\n\r\n`;
  const tail = `\r\n--${boundary}--\r\n`;
  return { head: enc.encode(head), tail: enc.encode(tail), contentType: `multipart/mixed; boundary=${boundary}` };
}

export class MultipartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MultipartError";
  }
}

export interface MultipartPart {
  /** Header names lower-cased; the last occurrence wins. */
  headers: Record<string, string>;
  body: Uint8Array;
}

/** Split a `Content-Type` header into its essence (lower case) and parameters (names lower case;
 *  quoted-string values unquoted per RFC 2045 §5.1 / RFC 9110 §5.6.4). */
export function parseContentType(header: string): { essence: string; params: Record<string, string> } {
  const semi = header.indexOf(";");
  const essence = (semi < 0 ? header : header.slice(0, semi)).trim().toLowerCase();
  return { essence, params: semi < 0 ? {} : parseParams(header.slice(semi + 1)) };
}

/** `name=value; name="quoted \" value"` → {name: value}. Malformed pieces are skipped. */
function parseParams(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < s.length) {
    while (i < s.length && (s[i] === ";" || s[i] === " " || s[i] === "\t")) i++;
    const eq = s.indexOf("=", i);
    if (eq < 0) break;
    const name = s.slice(i, eq).trim().toLowerCase();
    i = eq + 1;
    let value = "";
    if (s[i] === '"') {
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === "\\" && i + 1 < s.length) i++;
        value += s[i++];
      }
      i++; // closing quote
      const next = s.indexOf(";", i);
      i = next < 0 ? s.length : next;
    } else {
      const next = s.indexOf(";", i);
      value = (next < 0 ? s.slice(i) : s.slice(i, next)).trim();
      i = next < 0 ? s.length : next;
    }
    if (name && !(name in out)) out[name] = value;
  }
  return out;
}

/** The filename of a Content-Disposition header: RFC 6266 §4.3 prefers `filename*` (RFC 8187
 *  `utf-8''percent-encoded`) over `filename`. Undefined when there is none or it is unusable. */
export function dispositionFilename(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const { params } = parseContentType(header);
  const star = params["filename*"];
  if (star !== undefined) {
    const m = /^([A-Za-z0-9!#$%&+^_`{}~-]+)'[A-Za-z0-9-]*'(.*)$/.exec(star);
    if (m && m[1].toLowerCase() === "utf-8") {
      try {
        const name = decodeURIComponent(m[2]);
        if (name !== "") return name;
      } catch {
        /* fall through to filename */
      }
    }
  }
  const plain = params.filename;
  return plain !== undefined && plain !== "" ? plain : undefined;
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0];
  const last = hay.length - needle.length;
  outer: for (let i = hay.indexOf(first, from); i !== -1 && i <= last; i = hay.indexOf(first, i + 1)) {
    for (let j = 1; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Position just after the line break that ends the line containing `from` (CRLF or bare LF), or
 *  -1 when the buffer ends first. Only transport padding (spaces, tabs) may precede it. */
function afterDelimiterLine(buf: Uint8Array, from: number): number {
  let i = from;
  while (i < buf.length && (buf[i] === 0x20 || buf[i] === 0x09)) i++;
  if (buf[i] === 0x0d && buf[i + 1] === 0x0a) return i + 2;
  if (buf[i] === 0x0a) return i + 1;
  return -1;
}

function parseHeaderBlock(text: string): Record<string, string> {
  const headers: Record<string, string> = {};
  let current: string | undefined;
  for (const line of text.split(/\r?\n/)) {
    if (line === "") continue;
    if ((line[0] === " " || line[0] === "\t") && current) {
      // Obsolete line folding (RFC 5322 §2.2.3): continuation of the previous header.
      headers[current] += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) throw new MultipartError(`malformed part header line`);
    current = line.slice(0, colon).trim().toLowerCase();
    headers[current] = line.slice(colon + 1).trim();
  }
  return headers;
}

/**
 * Parse a buffered multipart entity (RFC 2046 §5.1.1) whose Content-Type header is `contentType`.
 * Tolerates a preamble and an epilogue, transport padding after delimiters and bare-LF line
 * breaks; requires the closing delimiter (a truncated answer is an error, not a shorter file).
 * At most `maxParts` parts. Throws MultipartError on anything malformed.
 */
export function parseMultipart(contentType: string | null | undefined, buf: Uint8Array, maxParts = 16): MultipartPart[] {
  const ct = parseContentType(contentType ?? "");
  if (!ct.essence.startsWith("multipart/")) throw new MultipartError(`not a multipart answer (${ct.essence || "no content type"})`);
  const boundary = ct.params.boundary;
  if (boundary === undefined || !isValidBoundary(boundary)) throw new MultipartError("missing or invalid boundary");
  const dash = enc.encode(`--${boundary}`);
  // The first delimiter may start the entity; later ones follow a line break (CRLF, or LF).
  let pos: number;
  if (indexOf(buf.subarray(0, dash.length), dash, 0) === 0) pos = 0;
  else {
    const at = indexOf(buf, enc.encode(`\n--${boundary}`), 0);
    if (at < 0) throw new MultipartError("no opening boundary");
    pos = at + 1;
  }
  const parts: MultipartPart[] = [];
  for (;;) {
    const afterDash = pos + dash.length;
    // "--" after the boundary closes the entity.
    if (buf[afterDash] === 0x2d && buf[afterDash + 1] === 0x2d) {
      if (parts.length === 0) throw new MultipartError("no parts");
      return parts;
    }
    const start = afterDelimiterLine(buf, afterDash);
    if (start < 0) throw new MultipartError("malformed boundary line");
    const next = indexOf(buf, enc.encode(`\n--${boundary}`), start - 1);
    if (next < 0) throw new MultipartError("missing closing boundary (truncated answer?)");
    // The line break before the next delimiter belongs to the delimiter (RFC 2046).
    const end = next > 0 && buf[next - 1] === 0x0d ? next - 1 : next;
    if (parts.length >= maxParts) throw new MultipartError("too many parts");
    parts.push(splitPart(buf.subarray(start, Math.max(start, end))));
    pos = next + 1;
  }
}

/** A part: headers, an empty line, the body. A part without headers starts with the empty line. */
function splitPart(part: Uint8Array): MultipartPart {
  if (part[0] === 0x0a) return { headers: {}, body: part.subarray(1) };
  if (part[0] === 0x0d && part[1] === 0x0a) return { headers: {}, body: part.subarray(2) };
  const crlf = indexOf(part, enc.encode("\r\n\r\n"), 0);
  const lf = indexOf(part, enc.encode("\n\n"), 0);
  let headerEnd: number;
  let bodyStart: number;
  if (crlf >= 0 && (lf < 0 || crlf <= lf)) {
    headerEnd = crlf;
    bodyStart = crlf + 4;
  } else if (lf >= 0) {
    headerEnd = lf;
    bodyStart = lf + 2;
  } else {
    // Headers only, no body (allowed: e.g. a Location part with nothing after the blank line).
    headerEnd = part.length;
    bodyStart = part.length;
  }
  if (headerEnd > 16 * 1024) throw new MultipartError("part headers too long");
  return { headers: parseHeaderBlock(dec.decode(part.subarray(0, headerEnd))), body: part.subarray(bodyStart) };
}

export type FederationMediaAnswer =
  | { kind: "bytes"; metadata: Record<string, unknown>; contentType: string | undefined; filename: string | undefined; body: Uint8Array }
  | { kind: "location"; metadata: Record<string, unknown>; location: string };

/** Interpret a federation media answer: exactly two parts, JSON metadata first, then the bytes or
 *  a Location (spec: content_repository.yaml). */
export function parseFederationMedia(contentType: string | null | undefined, buf: Uint8Array): FederationMediaAnswer {
  const parts = parseMultipart(contentType, buf, 2);
  if (parts.length !== 2) throw new MultipartError(`expected two parts, got ${parts.length}`);
  const [meta, media] = parts;
  const metaType = parseContentType(meta.headers["content-type"] ?? "").essence;
  if (metaType !== "application/json") throw new MultipartError("first part is not application/json");
  let metadata: unknown;
  try {
    metadata = JSON.parse(dec.decode(meta.body));
  } catch {
    throw new MultipartError("metadata part is not JSON");
  }
  if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) throw new MultipartError("metadata is not an object");
  const location = media.headers.location;
  if (location !== undefined) return { kind: "location", metadata: metadata as Record<string, unknown>, location };
  return {
    kind: "bytes",
    metadata: metadata as Record<string, unknown>,
    contentType: media.headers["content-type"],
    filename: dispositionFilename(media.headers["content-disposition"]),
    body: media.body,
  };
}
