// Request authentication between servers (spec: Server-Server API, "Authentication" →
// "Request Authentication"). Pure: no I/O.
//
// The sender signs the JSON object {method, uri, origin, destination, content?} with the JSON
// signing algorithm and sends the signature as
//   Authorization: X-Matrix origin="a.example",destination="b.example",key="ed25519:k",sig="..."
// The header follows RFC 9110 §11.4 (auth-scheme, then comma-separated auth-params whose values
// are tokens or quoted-strings with backslash escapes).
import { isValidServerName } from "./ids";
import { signJson, verifyJsonSignature, type SigningKey } from "./signing";

export interface XMatrixParams {
  origin: string;
  /** Optional on receipt for compatibility with pre-v1.3 senders; always sent by us. */
  destination?: string;
  /** Key ID with algorithm, e.g. "ed25519:abc". */
  key: string;
  sig: string;
}

/** What is signed for one request. `content` is omitted when the request has no body. */
export interface SignedRequest {
  method: string;
  /** Path from "/_matrix/..." with the query string, exactly as sent on the wire. */
  uri: string;
  origin: string;
  destination: string;
  content?: unknown;
}

export class XMatrixParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "XMatrixParseError";
  }
}

/** Longest header we look at; a real one is ~250 bytes. */
const MAX_HEADER_LENGTH = 8192;

// RFC 9110 §5.6.2 tchar.
const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
// Unquoted values: tokens, plus ":" (spec: "recipient should allow colons to be included in
// values without requiring the value to be enclosed in quotes") and "/" and "=" (base64 text
// as some senders write it). Anything else needs quotes.
const UNQUOTED_VALUE_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z:/=]/;

function isWs(ch: string): boolean {
  return ch === " " || ch === "\t";
}

/** Parse an `Authorization` header with the X-Matrix scheme. Throws XMatrixParseError on any
 *  syntax problem, a missing origin/key/sig, a repeated parameter, or an invalid origin or
 *  destination server name. Unknown parameters are ignored (spec). */
export function parseXMatrix(header: string): XMatrixParams {
  if (header.length > MAX_HEADER_LENGTH) throw new XMatrixParseError("Authorization header too long");
  const m = /^X-Matrix(?=[ \t])/i.exec(header);
  if (!m) throw new XMatrixParseError("not an X-Matrix Authorization header");
  let i = m[0].length;
  const n = header.length;
  const params = new Map<string, string>();

  const skipWs = () => {
    while (i < n && isWs(header[i])) i++;
  };

  skipWs();
  if (i >= n) throw new XMatrixParseError("X-Matrix header has no parameters");
  for (;;) {
    // name
    const nameStart = i;
    while (i < n && TCHAR.test(header[i])) i++;
    if (i === nameStart) throw new XMatrixParseError(`expected a parameter name at offset ${i}`);
    const name = header.slice(nameStart, i).toLowerCase();
    skipWs(); // BWS
    if (header[i] !== "=") throw new XMatrixParseError(`expected "=" after parameter ${name}`);
    i++;
    skipWs(); // BWS
    // value
    let value = "";
    if (header[i] === '"') {
      i++;
      let closed = false;
      while (i < n) {
        const ch = header[i];
        if (ch === '"') {
          closed = true;
          i++;
          break;
        }
        if (ch === "\\") {
          // quoted-pair: the character after the backslash stands for itself.
          if (i + 1 >= n) break;
          const next = header[i + 1];
          if (!isQdChar(next, true)) throw new XMatrixParseError("invalid escaped character in quoted value");
          value += next;
          i += 2;
          continue;
        }
        if (!isQdChar(ch, false)) throw new XMatrixParseError("control character in quoted value");
        value += ch;
        i++;
      }
      if (!closed) throw new XMatrixParseError(`unterminated quoted value for ${name}`);
    } else {
      const start = i;
      while (i < n && UNQUOTED_VALUE_CHAR.test(header[i])) i++;
      if (i === start) throw new XMatrixParseError(`missing value for ${name}`);
      value = header.slice(start, i);
    }
    if (params.has(name)) throw new XMatrixParseError(`parameter ${name} given twice`);
    params.set(name, value);
    skipWs();
    if (i >= n) break;
    if (header[i] !== ",") throw new XMatrixParseError(`unexpected character ${JSON.stringify(header[i])} at offset ${i}`);
    i++;
    skipWs();
    if (i >= n) break; // a trailing comma is tolerated (RFC 9110 list rules allow empty elements)
  }

  const origin = params.get("origin");
  const key = params.get("key");
  const sig = params.get("sig");
  if (origin === undefined) throw new XMatrixParseError("missing origin");
  if (key === undefined) throw new XMatrixParseError("missing key");
  if (sig === undefined) throw new XMatrixParseError("missing sig");
  if (!isValidServerName(origin)) throw new XMatrixParseError("origin is not a valid server name");
  const destination = params.get("destination");
  if (destination !== undefined && !isValidServerName(destination)) {
    throw new XMatrixParseError("destination is not a valid server name");
  }
  if (!/^[A-Za-z0-9_-]+:[A-Za-z0-9_]+$/.test(key)) throw new XMatrixParseError("key is not a key ID");
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(sig)) throw new XMatrixParseError("sig is not base64");
  return destination === undefined ? { origin, key, sig } : { origin, destination, key, sig };
}

// qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text; quoted-pair allows HTAB / SP / VCHAR / obs-text.
function isQdChar(ch: string, escaped: boolean): boolean {
  const c = ch.charCodeAt(0);
  if (c === 0x09 || c === 0x20) return true;
  if (c === 0x7f || c < 0x20) return false;
  if (!escaped && (c === 0x22 || c === 0x5c)) return false;
  return true;
}

function quote(value: string): string {
  // We only ever send server names, key IDs and base64, none of which needs escaping; escape
  // anyway so the output is always well-formed.
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** Format the header the way the spec asks senders to: one space after the scheme, lower-case
 *  names, quoted values, no whitespace around commas. */
export function formatXMatrix(p: XMatrixParams): string {
  const parts = [`origin=${quote(p.origin)}`];
  if (p.destination !== undefined) parts.push(`destination=${quote(p.destination)}`);
  parts.push(`key=${quote(p.key)}`, `sig=${quote(p.sig)}`);
  return `X-Matrix ${parts.join(",")}`;
}

/** The JSON object that is signed (spec "Step 1 sign JSON"). */
export function requestJson(req: SignedRequest): Record<string, unknown> {
  const obj: Record<string, unknown> = {
    method: req.method.toUpperCase(),
    uri: req.uri,
    origin: req.origin,
    destination: req.destination,
  };
  if (req.content !== undefined) obj.content = req.content;
  return obj;
}

/** Sign a request; returns the `Authorization` header value. */
export async function signRequest(key: SigningKey, req: SignedRequest): Promise<string> {
  const signed = await signJson(requestJson(req), req.origin, key);
  const sig = signed.signatures[req.origin][key.keyId];
  return formatXMatrix({ origin: req.origin, destination: req.destination, key: key.keyId, sig });
}

/** Check the signature in `auth` over the request as received. The caller has already checked
 *  that `auth.destination` (when present) is its own name, and looked up `publicKey` for
 *  (auth.origin, auth.key). When the header carries no destination the receiver's own name is
 *  what the sender must have signed. Never throws. */
export async function verifyRequest(
  auth: XMatrixParams,
  received: { method: string; uri: string; content?: unknown },
  ourServerName: string,
  publicKey: string,
): Promise<boolean> {
  const obj = requestJson({
    method: received.method,
    uri: received.uri,
    origin: auth.origin,
    destination: auth.destination ?? ourServerName,
    content: received.content,
  });
  obj.signatures = { [auth.origin]: { [auth.key]: auth.sig } };
  return verifyJsonSignature(obj, auth.origin, auth.key, publicKey, { strict: false });
}
