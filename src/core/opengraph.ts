// Open Graph extraction for URL previews (spec: GET /_matrix/client/v1/media/preview_url returns
// "The OpenGraph data for the URL"). A small tolerant scanner over <meta> and <title>; no DOM.
// It is a single forward pass with indexOf (no regex over the page): the page comes from anyone,
// and regexes such as /<meta[^>]*>/g rescan to the end for every unclosed tag (quadratic: 512 KiB
// of "<meta" took 173 s). Here every search starts where the last one ended.

const NAMED_ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };

export function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === "#") {
      const cp = e[1] === "x" || e[1] === "X" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return cp > 0 && cp <= 0x10ffff ? String.fromCodePoint(cp) : m;
    }
    return NAMED_ENTITIES[e.toLowerCase()] ?? m;
  });
}

const MAX_VALUE = 1000;
const MAX_KEYS = 50;
/** How much of the page is scanned (the fetch itself stops at 1 MiB). */
export const MAX_SCAN_CHARS = 512 * 1024;
/** Raw attribute text decoded per value: entities only shrink text, so this covers MAX_VALUE. */
const MAX_RAW_VALUE = 16 * MAX_VALUE;

const isSpace = (ch: string) => ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || ch === "\f";
/** The `\b` after a tag name: the next character is not a word character. */
const endsName = (s: string, i: number) => i >= s.length || !/[A-Za-z0-9_]/.test(s[i]);

/** Attributes of one tag's text (after its name, without the closing `>`), in one pass: name,
 *  optional `= value` with "", '' or bare values; a valueless attribute is skipped. */
function attributes(tag: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  const n = tag.length;
  while (i < n) {
    while (i < n && (isSpace(tag[i]) || tag[i] === "/")) i++;
    const start = i;
    while (i < n && !isSpace(tag[i]) && tag[i] !== "=" && tag[i] !== "/") i++;
    if (i === start) {
      i++; // a stray "=": skip it
      continue;
    }
    const name = tag.slice(start, i).toLowerCase();
    while (i < n && isSpace(tag[i])) i++;
    if (tag[i] !== "=") continue;
    i++;
    while (i < n && isSpace(tag[i])) i++;
    let value: string;
    const quote = tag[i];
    if (quote === '"' || quote === "'") {
      const close = tag.indexOf(quote, i + 1);
      const end = close < 0 ? n : close;
      value = tag.slice(i + 1, Math.min(end, i + 1 + MAX_RAW_VALUE));
      i = end + 1;
    } else {
      const vstart = i;
      while (i < n && !isSpace(tag[i])) i++;
      value = tag.slice(vstart, Math.min(i, vstart + MAX_RAW_VALUE));
    }
    if (/^[a-z_:][-a-z0-9_:.]*$/.test(name)) out[name] = decodeEntities(value);
  }
  return out;
}

/** `og:*` (and `twitter:*` as fallback) properties of an HTML document, with `og:title` falling
 *  back to <title> and `og:description` to <meta name="description">. Values are trimmed and
 *  capped; relative `og:image`/`og:url` are resolved against `baseUrl`. */
export function extractOpenGraph(html: string, baseUrl: string): Record<string, string> {
  const og: Record<string, string> = {};
  const fallback: Record<string, string> = {};
  const head = html.slice(0, MAX_SCAN_CHARS);
  // ASCII-only lowercase keeps every index valid in `head`.
  const lower = head.replace(/[A-Z]+/g, (m) => m.toLowerCase());
  let title: string | undefined;
  for (let i = lower.indexOf("<"); i >= 0; i = lower.indexOf("<", i + 1)) {
    const isMeta = lower.startsWith("<meta", i) && endsName(lower, i + 5);
    const isTitle = title === undefined && lower.startsWith("<title", i) && endsName(lower, i + 6);
    if (!isMeta && !isTitle) continue;
    // A tag ends at the next ">"; with none left, no later tag can be complete either.
    const close = lower.indexOf(">", i);
    if (close < 0) break;
    if (isTitle) {
      const end = lower.indexOf("</title>", close + 1);
      // No "</title>" after this one: none after a later one either.
      title = end < 0 ? "" : head.slice(close + 1, Math.min(end, close + 1 + MAX_RAW_VALUE));
      if (end >= 0) i = end;
      continue;
    }
    const a = attributes(head.slice(i + 5, close));
    i = close;
    const key = (a.property ?? a.name ?? "").toLowerCase();
    const value = (a.content ?? "").trim().slice(0, MAX_VALUE);
    if (!key || !value) continue;
    if (key.startsWith("og:")) {
      if (!(key in og) && Object.keys(og).length < MAX_KEYS) og[key] = value;
    } else if (key === "description") fallback["og:description"] ??= value;
    else if (key === "twitter:title") fallback["og:title"] ??= value;
    else if (key === "twitter:description") fallback["og:description"] ??= value;
    else if (key === "twitter:image") fallback["og:image"] ??= value;
  }
  if (title) fallback["og:title"] ??= decodeEntities(title).replace(/\s+/g, " ").trim().slice(0, MAX_VALUE);
  for (const [k, v] of Object.entries(fallback)) if (!(k in og) && v) og[k] = v;
  for (const k of ["og:image", "og:url"]) {
    if (og[k]) {
      try {
        og[k] = new URL(og[k], baseUrl).toString();
      } catch {
        delete og[k];
      }
    }
  }
  return og;
}
