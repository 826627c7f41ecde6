// Canonical JSON (spec: Appendices, "Canonical JSON").
//
// The shortest UTF-8 JSON encoding with object keys sorted by Unicode code point, no
// insignificant whitespace, integers without exponent or fraction, and no `-0`. Strings are
// escaped exactly as the spec's grammar says: `"` and `\`, the short escapes \b \t \n \f \r,
// other C0 control characters as \u00XX (lowercase hex); everything else (including DEL and
// non-ASCII) is written raw. The result is a JS string; encode it with TextEncoder for bytes.

export class CanonicalJsonError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CanonicalJsonError";
  }
}

/** Largest magnitude allowed by the spec: integers must be in [-(2^53)+1, (2^53)-1]. */
export const MAX_SAFE_INTEGER = Number.MAX_SAFE_INTEGER; // 2^53 - 1
/** Nesting deeper than this is refused (also catches cycles). Python's json, which Synapse
 *  uses, fails at about the same depth. */
export const MAX_DEPTH = 1000;

// A lone (unpaired) UTF-16 surrogate cannot be encoded as UTF-8, so such strings have no
// canonical encoding (Python's encoder fails on them too).
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether `s` is well-formed UTF-16 (no lone surrogates). */
export function isWellFormedString(s: string): boolean {
  return NATIVE_WELL_FORMED ? (s as unknown as { isWellFormed(): boolean }).isWellFormed() : !LONE_SURROGATE.test(s);
}

// String.prototype.isWellFormed (ES2024) answers the same question natively, several times
// faster than the expression: every string of every event is checked when it is hashed.
const NATIVE_WELL_FORMED = typeof (String.prototype as { isWellFormed?: unknown }).isWellFormed === "function";
// Keys with only code units below the surrogates sort the same by code unit (the default
// sort) as by code point.
const SURROGATE_OR_ABOVE = /[\ud800-\uffff]/;

/** Compare two well-formed strings by Unicode code point (JS `<` compares UTF-16 code units,
 *  which puts U+E000..U+FFFF after astral characters). */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codeUnitRank(x) - codeUnitRank(y);
  }
  return a.length - b.length;
}

// At the first differing code unit, surrogates (astral code points) must rank above every
// BMP character; the relative order inside each group is unchanged.
function codeUnitRank(u: number): number {
  if (u >= 0xd800 && u <= 0xdfff) return u + 0x2000; // → 0xF800..0xFFFF
  if (u >= 0xe000) return u - 0x800; // → 0xD800..0xF7FF
  return u;
}

function encodeString(s: string): string {
  if (!isWellFormedString(s)) throw new CanonicalJsonError("string contains a lone surrogate");
  // For well-formed strings JSON.stringify escapes exactly the set the spec's grammar
  // requires (", \, \b \t \n \f \r, other C0 controls as lowercase \u00xx) and nothing else.
  return JSON.stringify(s);
}

function encodeNumber(n: number, strict: boolean): string {
  if (!Number.isFinite(n)) throw new CanonicalJsonError(`number ${n} is not allowed`);
  if (Number.isInteger(n)) {
    if (strict && Math.abs(n) > MAX_SAFE_INTEGER) {
      throw new CanonicalJsonError(`integer ${n} out of range`);
    }
    if (Object.is(n, -0)) return "0";
    // Digits only: no exponent even for large values (non-strict mode; e.g. 1e21).
    return Math.abs(n) < 1e21 ? String(n) : BigInt(n).toString();
  }
  if (strict) throw new CanonicalJsonError(`non-integer number ${n} is not allowed`);
  // Non-strict (room versions 1–5 tolerate floats): best effort, JS's shortest form.
  return String(n);
}

function isPlainObject(v: object): boolean {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** The object's keys in canonical order (by Unicode code point); throws on a lone surrogate. */
function sortedKeys(obj: object): string[] {
  const keys = Object.keys(obj);
  let bmpOnly = true;
  for (const k of keys) {
    // (A key without a code unit from U+D800 up has no surrogate: well-formed.)
    if (!SURROGATE_OR_ABOVE.test(k)) continue;
    if (!isWellFormedString(k)) throw new CanonicalJsonError("key contains a lone surrogate");
    bmpOnly = false;
  }
  if (bmpOnly) keys.sort();
  else keys.sort(compareCodePoints);
  return keys;
}

function encode(value: unknown, strict: boolean, depth: number): string {
  switch (typeof value) {
    case "string":
      return encodeString(value);
    case "number":
      return encodeNumber(value, strict);
    case "bigint":
      if (strict && (value > BigInt(MAX_SAFE_INTEGER) || value < -BigInt(MAX_SAFE_INTEGER))) {
        throw new CanonicalJsonError(`integer ${value} out of range`);
      }
      return value.toString();
    case "boolean":
      return value ? "true" : "false";
    case "object": {
      if (value === null) return "null";
      if (depth >= MAX_DEPTH) throw new CanonicalJsonError("JSON nested too deeply");
      if (Array.isArray(value)) {
        let out = "[";
        for (let i = 0; i < value.length; i++) {
          if (!(i in value)) throw new CanonicalJsonError("sparse arrays are not JSON");
          if (i) out += ",";
          out += encode(value[i], strict, depth + 1);
        }
        return out + "]";
      }
      if (!isPlainObject(value)) {
        throw new CanonicalJsonError(`cannot encode ${Object.prototype.toString.call(value)}`);
      }
      const obj = value as Record<string, unknown>;
      const keys = sortedKeys(obj);
      let out = "{";
      for (let i = 0; i < keys.length; i++) {
        if (i) out += ",";
        out += JSON.stringify(keys[i]) + ":" + encode(obj[keys[i]], strict, depth + 1);
      }
      return out + "}";
    }
    default:
      // undefined, functions, symbols: not JSON. (JSON.stringify would silently drop an
      // undefined property; we refuse so that what is signed is exactly what is sent.)
      throw new CanonicalJsonError(`cannot encode a value of type ${typeof value}`);
  }
}

/** Encode `value` as canonical JSON. `strict` (room v6+ and everything non-room) rejects
 *  floats and integers outside [-(2^53)+1, 2^53-1]. Throws CanonicalJsonError. */
export function canonicalJson(value: unknown, opts?: { strict?: boolean }): string {
  return encodeValue(value, opts?.strict ?? false, 0);
}

// The fast path: JSON.stringify (native) writes exactly canonical JSON for a value whose every
// object enumerates its keys in canonical order and whose strings, numbers and types pass the
// checks of `encode` (JSON.stringify writes strings, integers below 1e21, other finite numbers
// and -0 as `encode` does). `inOrder` checks that, returning the value itself, or a copy whose
// objects were rebuilt with their keys inserted in canonical order (received events are rarely
// sorted), or NOT_FAST for anything else: `encode` then writes it, or throws the error it
// throws. A rebuilt object must not have array-index keys ("0", "17": V8 enumerates those
// first, whatever the insertion order) nor `__proto__` (assigning it sets the prototype).
const NOT_FAST = Symbol("not fast");
const ARRAY_INDEX = /^(?:0|[1-9][0-9]*)$/;

function inOrder(value: unknown, strict: boolean, depth: number): unknown {
  switch (typeof value) {
    case "string":
      return isWellFormedString(value) ? value : NOT_FAST;
    case "number":
      if (Number.isInteger(value)) return Math.abs(value) <= (strict ? MAX_SAFE_INTEGER : 1e20) ? value : NOT_FAST;
      return strict || !Number.isFinite(value) ? NOT_FAST : value;
    case "boolean":
      return value;
    case "object": {
      if (value === null) return null;
      if (depth >= MAX_DEPTH) return NOT_FAST;
      if (Array.isArray(value)) {
        let out: unknown[] | undefined;
        for (let i = 0; i < value.length; i++) {
          const v = value[i];
          if (v === undefined) return NOT_FAST; // a hole or undefined: `encode` refuses both
          const c = inOrder(v, strict, depth + 1);
          if (c === NOT_FAST) return NOT_FAST;
          if (c !== v && !out) out = value.slice(0, i);
          if (out) out.push(c);
        }
        return out ?? value;
      }
      if (!isPlainObject(value)) return NOT_FAST;
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj);
      let sorted = true;
      let changed = false;
      const vals: unknown[] = new Array(keys.length);
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i];
        // Keys with a surrogate or above sort differently by code point: left to `encode`.
        if (SURROGATE_OR_ABOVE.test(k)) return NOT_FAST;
        if (i && keys[i - 1] > k) sorted = false;
        const v = obj[k];
        const c = inOrder(v, strict, depth + 1);
        if (c === NOT_FAST) return NOT_FAST;
        if (c !== v) changed = true;
        vals[i] = c;
      }
      if (sorted && !changed) return value;
      for (const k of keys) if (k === "__proto__" || (!sorted && ARRAY_INDEX.test(k))) return NOT_FAST;
      const order = keys.map((_, i) => i);
      if (!sorted) order.sort((a, b) => (keys[a] < keys[b] ? -1 : 1));
      const out: Record<string, unknown> = {};
      for (const i of order) out[keys[i]] = vals[i];
      return out;
    }
    default:
      return NOT_FAST;
  }
}

function encodeValue(value: unknown, strict: boolean, depth: number): string {
  const fast = inOrder(value, strict, depth);
  return fast === NOT_FAST ? encode(value, strict, depth) : JSON.stringify(fast);
}

/** Canonical JSON as UTF-8 bytes (what gets signed and hashed). */
export function canonicalJsonBytes(value: unknown, opts?: { strict?: boolean }): Uint8Array {
  return new TextEncoder().encode(canonicalJson(value, opts));
}

/** The members (`"key":value`) of a plain object's canonical JSON, in canonical key order:
 *  `{` + their texts joined by `,` + `}` is canonicalJson(obj), and any subset of them, still
 *  in this order, is the canonical JSON of the object with only those keys. For callers that
 *  encode several objects sharing most members (a PDU, its hashed part, its redacted form:
 *  digestPdu). Throws CanonicalJsonError as canonicalJson(obj) would. */
export function canonicalMembers(obj: object, opts?: { strict?: boolean }): { key: string; text: string }[] {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj) || !isPlainObject(obj)) throw new CanonicalJsonError("not a JSON object");
  const strict = opts?.strict ?? false;
  const rec = obj as Record<string, unknown>;
  return sortedKeys(obj).map((key) => ({ key, text: canonicalMember(key, rec[key], strict) }));
}

/** One member `"key":value` of a top-level object's canonical JSON (the value at depth 1). */
export function canonicalMember(key: string, value: unknown, strict: boolean): string {
  if (!isWellFormedString(key)) throw new CanonicalJsonError("key contains a lone surrogate");
  return JSON.stringify(key) + ":" + encodeValue(value, strict, 1);
}

