// Application service registrations (spec: Application Service API "Registration"): the shape,
// its validation, and namespace matching. Pure: no I/O.
import { z } from "zod";
import { isValidLocalpart } from "./ids";

/** Longest namespace regex accepted. */
export const MAX_REGEX_LENGTH = 512;
/** Unbounded quantifiers (`*`, `+`, `{n,}`) per regex. Each one multiplies the backtracking
 *  work on a failed match by the input length (IDs are at most 255 bytes): three keep the worst
 *  case near 255^3/6 ≈ 3M steps. */
export const MAX_UNBOUNDED_QUANTIFIERS = 3;

/** Why `source` is not a regex we run on every event and registration, or null if it is fine.
 *  Backtracking regexes are exponential on nested quantifiers (`(a+)+`, `(a|aa)*`); instead of a
 *  linear-time engine (none in workerd) we refuse the constructs that need backtracking to be
 *  fast: backreferences, lookaround, and a repeated group that itself contains a quantifier or an
 *  alternation. Namespace regexes in practice (`@_irc_.*:example\.org`) use none of these. */
export function unsafeRegexReason(source: string): string | null {
  if (source.length === 0) return "regex is empty";
  if (source.length > MAX_REGEX_LENGTH) return `regex is longer than ${MAX_REGEX_LENGTH} characters`;
  try {
    new RegExp(source);
  } catch (e) {
    return `regex does not compile: ${(e as Error).message}`;
  }
  if (/\\[1-9]|\\k</.test(source)) return "backreferences are not allowed";
  if (/\(\?<?[=!]/.test(source)) return "lookaround is not allowed";
  // Walk the pattern: track, per open group, whether it contains a quantifier or `|`; a group
  // closed and then repeated without bound while containing either is refused.
  const stack: { risky: boolean }[] = [{ risky: false }];
  let unbounded = 0;
  let inClass = false;
  let lastClosedRisky = false;
  for (let i = 0; i < source.length; i++) {
    const ch = source[i];
    if (ch === "\\") {
      i++;
      lastClosedRisky = false;
      continue;
    }
    if (inClass) {
      if (ch === "]") inClass = false;
      continue;
    }
    const isUnbounded = ch === "*" || ch === "+" || (ch === "{" && /^\{\d*,\}/.test(source.slice(i)));
    const isQuantifier = isUnbounded || ch === "?" || (ch === "{" && /^\{\d+(,\d*)?\}/.test(source.slice(i)));
    if (isQuantifier && !(ch === "?" && source[i - 1] === "(")) {
      if (isUnbounded) {
        unbounded++;
        if (lastClosedRisky) return "a repeated group contains a quantifier or alternation (catastrophic backtracking)";
      }
      stack[stack.length - 1].risky = true;
      lastClosedRisky = false;
      continue;
    }
    lastClosedRisky = false;
    if (ch === "[") inClass = true;
    else if (ch === "(") stack.push({ risky: false });
    else if (ch === "|") stack[stack.length - 1].risky = true;
    else if (ch === ")" && stack.length > 1) {
      const g = stack.pop()!;
      lastClosedRisky = g.risky;
      if (g.risky) stack[stack.length - 1].risky = true;
    }
  }
  if (unbounded > MAX_UNBOUNDED_QUANTIFIERS) return `more than ${MAX_UNBOUNDED_QUANTIFIERS} unbounded quantifiers`;
  return null;
}

const namespaceSchema = z.array(
  z.object({
    exclusive: z.boolean(),
    regex: z.string().superRefine((s, ctx) => {
      const why = unsafeRegexReason(s);
      if (why) ctx.addIssue({ code: "custom", message: why });
    }),
  }).loose(),
).max(100);

const token = z.string().min(8, "must be at least 8 characters").max(512).regex(/^[\x21-\x7e]+$/, "must be printable ASCII without spaces");

export const registrationSchema = z
  .object({
    id: z.string().min(1).max(255).regex(/^[A-Za-z0-9._~-]+$/, "may only contain A-Z, a-z, 0-9 and ._~-"),
    /** null: the appservice receives nothing (it only uses the Client-Server API). */
    url: z.string().max(2048).nullable().optional(),
    as_token: token,
    hs_token: token,
    sender_localpart: z.string().min(1).max(255).refine(isValidLocalpart, "is not a valid user localpart"),
    namespaces: z
      .object({ users: namespaceSchema.optional(), aliases: namespaceSchema.optional(), rooms: namespaceSchema.optional() })
      .loose()
      .default({}),
    rate_limited: z.boolean().optional(),
    protocols: z.array(z.string().min(1).max(255)).max(100).nullable().optional(),
    receive_ephemeral: z.boolean().optional(),
    "de.sorunome.msc2409.push_ephemeral": z.boolean().optional(),
    "org.matrix.msc3202": z.boolean().optional(),
  })
  .loose()
  .refine((r) => r.as_token !== r.hs_token, { message: "as_token and hs_token must differ", path: ["hs_token"] });

export type Registration = z.infer<typeof registrationSchema>;

type Namespace = { exclusive: boolean; regex: string };
/** A registration as stored (without the as_token). */
export interface StoredRegistration {
  id: string;
  url?: string | null;
  hs_token: string;
  sender_localpart: string;
  namespaces: { users?: Namespace[]; aliases?: Namespace[]; rooms?: Namespace[] };
  rate_limited?: boolean;
  protocols?: string[] | null;
  receive_ephemeral?: boolean;
  "de.sorunome.msc2409.push_ephemeral"?: boolean;
  [k: string]: unknown;
}

interface CompiledNamespace {
  exclusive: boolean;
  regex: RegExp;
}

/** A registration ready for matching. Regexes match from the start of the ID, as Synapse's
 *  `re.match` does (registrations written for it end in `.*` or anchor with `$` themselves). */
export class Appservice {
  readonly id: string;
  readonly url: string | null;
  readonly hsToken: string;
  readonly senderLocalpart: string;
  readonly rateLimited: boolean;
  readonly receiveEphemeral: boolean;
  /** MSC3202 (encrypted appservices): device lists and key counts in transactions. */
  readonly msc3202: boolean;
  readonly protocols: string[];
  private readonly ns: { users: CompiledNamespace[]; aliases: CompiledNamespace[]; rooms: CompiledNamespace[] };

  constructor(
    readonly registration: StoredRegistration,
    readonly serverName: string,
  ) {
    this.id = registration.id;
    this.url = registration.url ?? null;
    this.hsToken = registration.hs_token;
    this.senderLocalpart = registration.sender_localpart;
    this.rateLimited = registration.rate_limited !== false;
    this.receiveEphemeral = registration.receive_ephemeral === true || registration["de.sorunome.msc2409.push_ephemeral"] === true;
    this.msc3202 = registration["org.matrix.msc3202"] === true;
    this.protocols = registration.protocols ?? [];
    const compile = (l: { exclusive: boolean; regex: string }[] | undefined) => (l ?? []).map((n) => ({ exclusive: n.exclusive, regex: new RegExp(`^(?:${n.regex})`) }));
    this.ns = { users: compile(registration.namespaces.users), aliases: compile(registration.namespaces.aliases), rooms: compile(registration.namespaces.rooms) };
  }

  get senderUserId(): string {
    return `@${this.senderLocalpart}:${this.serverName}`;
  }

  /** The user is the appservice's sender or in its users namespace. */
  isInterestedInUser(userId: string): boolean {
    return userId === this.senderUserId || this.ns.users.some((n) => n.regex.test(userId));
  }
  /** The appservice may act as this user (identity assertion, registration). */
  mayActAs(userId: string): boolean {
    return this.isInterestedInUser(userId);
  }
  get hasAliasNamespace(): boolean {
    return this.ns.aliases.length > 0;
  }
  isInterestedInAlias(alias: string): boolean {
    return this.ns.aliases.some((n) => n.regex.test(alias));
  }
  isInterestedInRoom(roomId: string): boolean {
    return this.ns.rooms.some((n) => n.regex.test(roomId));
  }
  exclusiveUser(userId: string): boolean {
    return this.ns.users.some((n) => n.exclusive && n.regex.test(userId));
  }
  exclusiveAlias(alias: string): boolean {
    return this.ns.aliases.some((n) => n.exclusive && n.regex.test(alias));
  }
  /** The public view for the admin API (no tokens). */
  summary(): Record<string, unknown> {
    const { hs_token: _hs, ...rest } = this.registration;
    return rest;
  }
}
