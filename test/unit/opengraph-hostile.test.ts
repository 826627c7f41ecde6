// URL-preview HTML parsing on hostile pages (issue 14, item 11): the scanner is linear in the
// page, so 1 MB of unclosed tags costs milliseconds, not minutes.
import { describe, expect, it } from "vitest";
import { extractOpenGraph } from "../../src/core/opengraph";

const MB = 1024 * 1024;

function timed(html: string): { ms: number; og: Record<string, string> } {
  const t0 = performance.now();
  const og = extractOpenGraph(html, "https://e.org/");
  return { ms: performance.now() - t0, og };
}

describe("Open Graph extraction on hostile pages", () => {
  // Measured with the regex scanner it replaced (2-core shared dev machine, workerd; the first
  // 512 KiB of each page is scanned): unclosed <meta 173 s, "<meta " 143 s, <title> 41 s,
  // unclosed quotes 64 s. The linear scanner takes milliseconds for each.
  const pages: [string, string][] = [
    ["unclosed <meta", "<meta".repeat(MB / 5)],
    ["unclosed <meta with a space", "<meta ".repeat(MB / 6)],
    ["unclosed <title>", "<title>".repeat(MB / 7)],
    // Closed within the scanned 512 KiB, so the attribute parser sees the whole tag.
    ["a long attribute name run", "<meta " + "a".repeat(400_000) + ">"],
    ["many attribute names without values", "<meta " + "a ".repeat(200_000) + ">"],
    ["many equals signs", "<meta " + "a=".repeat(200_000) + ">"],
    ["unclosed quotes", "<meta content=\"".repeat(MB / 15)],
    ["entities without semicolons", `<meta property="og:title" content="${"&a".repeat(200_000)}">`],
  ];
  for (const [name, html] of pages) {
    it(`${name}: ${(html.length / MB).toFixed(1)} MB in linear time`, () => {
      const { ms } = timed(html);
      expect(ms, `${name} took ${ms.toFixed(0)} ms`).toBeLessThan(500);
    });
  }

  it("still finds tags after hostile prefixes (within the scanned size)", () => {
    const html = "<meta".repeat(1000) + '><meta property="og:title" content="T"><title>x' + "<title>".repeat(1000) + "</title>";
    expect(timed(html).og).toEqual({ "og:title": "T" });
    const t = timed("<title>" + "<meta".repeat(1000) + "</title>").og;
    expect(Object.keys(t)).toEqual(["og:title"]);
  });
});
