// Glob-style matching (spec: Appendices "Glob-style matching": `*` matches zero or more
// characters, `?` exactly one). One matcher for every glob a user or a remote server supplies:
// server ACLs, filter event types, push rule patterns. Pure.
//
// It never builds a RegExp: a pattern like `a*a*a*…b` compiled to `.*` regexes backtracks
// exponentially. Instead it runs the pattern as an automaton over the value, keeping the set of
// pattern positions reachable so far: at most O(value × pattern) steps, whatever the input.

/** Longest glob accepted from a user (filters, push rules). Event types are at most 255 bytes
 *  (spec: "Size limits"), so no sensible type pattern is longer. */
export const MAX_GLOB_LENGTH = 255;

export interface GlobOptions {
  /** Compare case-insensitively (server ACLs, push rules). */
  ignoreCase?: boolean;
  /** Whether `?` is a wildcard (true by default). Filters define only `*` (spec: "types": "A '*'
   *  can be used as a wildcard to match any sequence of characters"), so there `?` is literal. */
  questionMark?: boolean;
  /** Match any substring that starts and ends at a word boundary (push rules on content.body:
   *  the start or end of the value, or next to a character outside [A-Za-z0-9_]) instead of the
   *  whole value. */
  wordBoundary?: boolean;
  /** Longest pattern to run (MAX_GLOB_LENGTH by default); longer ones never match. */
  maxLength?: number;
}

const STAR = 0;
const ANY = 1;

const isWordChar = (ch: string | undefined): boolean => ch !== undefined && /^[A-Za-z0-9_]$/.test(ch);

/** Whether `value` matches the glob `pattern`. A pattern longer than `maxLength` never matches
 *  (callers refuse such patterns on input; this guards rules stored before that). */
export function globMatches(pattern: string, value: string, opts: GlobOptions = {}): boolean {
  if (pattern.length > (opts.maxLength ?? MAX_GLOB_LENGTH)) return false;
  const questionMark = opts.questionMark ?? true;
  const p = opts.ignoreCase ? pattern.toLowerCase() : pattern;
  const v = opts.ignoreCase ? value.toLowerCase() : value;
  if (!opts.wordBoundary && !p.includes("*") && !(questionMark && p.includes("?"))) return p === v;

  // The pattern as tokens, one per character; runs of `*` collapse into one.
  const tokens: (string | number)[] = [];
  for (const ch of p) {
    if (ch === "*") {
      if (tokens[tokens.length - 1] !== STAR) tokens.push(STAR);
    } else tokens.push(questionMark && ch === "?" ? ANY : ch);
  }
  const end = tokens.length;
  const chars = Array.from(v);

  // `active` holds pattern positions (0..end) reached after the characters read so far; `mark`
  // de-duplicates them per step. Entering a `*` position also reaches the one after it.
  const mark = new Int32Array(end + 1).fill(-1);
  let active: number[] = [];
  let next: number[] = [];
  const add = (list: number[], pos: number, step: number) => {
    while (mark[pos] !== step) {
      mark[pos] = step;
      list.push(pos);
      if (pos < end && tokens[pos] === STAR) pos++;
      else break;
    }
  };
  const boundaryBefore = (i: number) => i === 0 || !isWordChar(chars[i - 1]);
  const boundaryAt = (i: number) => i === chars.length || !isWordChar(chars[i]);

  // Steps are numbered 0..chars.length; step i holds the positions after reading i characters.
  add(active, 0, 0);
  for (let i = 0; i < chars.length; i++) {
    if (opts.wordBoundary) {
      if (mark[end] === i && boundaryAt(i)) return true;
      if (boundaryBefore(i)) add(active, 0, i);
    } else if (active.length === 0) return false;
    const ch = chars[i];
    next.length = 0;
    for (const pos of active) {
      if (pos === end) continue;
      const t = tokens[pos];
      if (t === STAR) add(next, pos, i + 1);
      else if (t === ANY || t === ch) add(next, pos + 1, i + 1);
    }
    [active, next] = [next, active];
  }
  if (opts.wordBoundary && boundaryBefore(chars.length)) add(active, 0, chars.length);
  return mark[end] === chars.length && (!opts.wordBoundary || boundaryAt(chars.length));
}
