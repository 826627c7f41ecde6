// Open Graph extraction for URL previews (spec: GET /_matrix/client/v1/media/preview_url returns
// "The OpenGraph data for the URL"). A small tolerant scanner over <meta> and <title>; no DOM.

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

function attributes(tag: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*("([^"]*)"|'([^']*)'|([^\s"'>]+))/g;
  for (let m; (m = re.exec(tag)); ) out[m[1].toLowerCase()] = decodeEntities(m[3] ?? m[4] ?? m[5] ?? "");
  return out;
}

const MAX_VALUE = 1000;
const MAX_KEYS = 50;

/** `og:*` (and `twitter:*` as fallback) properties of an HTML document, with `og:title` falling
 *  back to <title> and `og:description` to <meta name="description">. Values are trimmed and
 *  capped; relative `og:image`/`og:url` are resolved against `baseUrl`. */
export function extractOpenGraph(html: string, baseUrl: string): Record<string, string> {
  const og: Record<string, string> = {};
  const fallback: Record<string, string> = {};
  const head = html.slice(0, 512 * 1024);
  for (const m of head.matchAll(/<meta\b[^>]*>/gi)) {
    const a = attributes(m[0]);
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
  const title = /<title\b[^>]*>([\s\S]*?)<\/title>/i.exec(head);
  if (title) fallback["og:title"] ??= decodeEntities(title[1]).replace(/\s+/g, " ").trim().slice(0, MAX_VALUE);
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
