// User-Interactive Authentication (spec: Client-Server API "User-Interactive Authentication API").
// A session is bound to one purpose (e.g. "delete_devices:@alice:hs") so a session completed for
// one operation cannot authorise another.
import type { Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError } from "../errors";
import { randomString } from "../../services/crypto-util";
import { verifyPassword } from "../../services/passwords";
import { resolveLoginUser } from "./login";
import { LIMITS, clientAddress, rateLimit } from "../middleware/rate-limit";
import { sweepExpired } from "../../services/sweep";

export type Stage = "m.login.password" | "m.login.dummy" | "m.login.registration_token" | "m.oauth";

export const authDictSchema = z
  .object({
    type: z.string().optional(),
    session: z.string().optional(),
    // m.login.password
    identifier: z.object({ type: z.string(), user: z.string().optional() }).loose().optional(),
    user: z.string().optional(),
    password: z.string().optional(),
    // m.login.registration_token
    token: z.string().optional(),
  })
  .loose();
export type AuthDict = z.infer<typeof authDictSchema>;

const SESSION_LIFETIME_MS = 30 * 60_000;

export interface UiaOptions {
  purpose: string;
  flows: Stage[][];
  /** For m.login.password: the user who must prove their password. */
  userId?: string;
  params?: Record<string, unknown>;
  /** Extra validation for a stage (e.g. registration tokens). Return an error message or null. */
  checkToken?: (token: string) => Promise<string | null>;
  /** For m.oauth: whether the user approved the action on the account page. The client then
   *  submits an auth dict with just the session (spec "OAuth authentication"). */
  checkOAuthApproval?: () => Promise<boolean>;
}

interface SessionRow {
  session_id: string;
  purpose: string;
  completed: string;
  created_ts: number;
}

/** Run one UIA step. Returns the completed stages when a whole flow is done; otherwise throws the
 *  401 response that tells the client what to do next. */
export async function requireUia(c: Context<AppEnv>, auth: AuthDict | undefined, opts: UiaOptions): Promise<Stage[]> {
  const db = c.env.DB;
  let session: SessionRow | null = null;
  if (auth?.session) {
    session = await db
      .prepare("SELECT session_id, purpose, completed, created_ts FROM uia_sessions WHERE session_id = ?")
      .bind(auth.session)
      .first<SessionRow>();
    if (!session || session.created_ts + SESSION_LIFETIME_MS < Date.now()) {
      throw new MatrixError(400, "M_UNKNOWN", "Unknown or expired UIA session");
    }
    if (session.purpose !== opts.purpose) {
      throw new MatrixError(403, "M_FORBIDDEN", "UIA session was started for a different request");
    }
  }
  if (!session) {
    // Sessions that expired unfinished are never asked for again: drop them as new ones come.
    await sweepExpired(db, "uia_sessions", Date.now() - SESSION_LIFETIME_MS);
    const id = randomString(24);
    await db
      .prepare("INSERT INTO uia_sessions (session_id, purpose, completed, created_ts) VALUES (?, ?, '[]', ?)")
      .bind(id, opts.purpose, Date.now())
      .run();
    session = { session_id: id, purpose: opts.purpose, completed: "[]", created_ts: Date.now() };
  }
  const completed: Stage[] = JSON.parse(session.completed);
  const challenge = (extra: Record<string, unknown> = {}) =>
    new MatrixError(401, (extra.errcode as string) ?? "M_UNAUTHORIZED", (extra.error as string) ?? "Additional authentication required", {
      flows: opts.flows.map((stages) => ({ stages })),
      params: opts.params ?? {},
      session: session!.session_id,
      completed,
      ...extra,
    });

  if (auth?.type) {
    const stage = auth.type as Stage;
    if (!opts.flows.some((f) => f.includes(stage))) {
      throw challenge({ errcode: "M_UNRECOGNIZED", error: `Authentication type ${auth.type} is not offered` });
    }
    const failure = await attemptStage(c, stage, auth, opts);
    if (failure) throw challenge({ errcode: failure.errcode, error: failure.error });
    if (!completed.includes(stage)) completed.push(stage);
    await db.prepare("UPDATE uia_sessions SET completed = ? WHERE session_id = ?").bind(JSON.stringify(completed), session.session_id).run();
  }
  if (!auth?.type && auth?.session && opts.checkOAuthApproval && !completed.includes("m.oauth") && (await opts.checkOAuthApproval())) completed.push("m.oauth");
  const done = opts.flows.some((flow) => flow.every((s) => completed.includes(s)));
  if (!done) {
    // No `errcode` on the first challenge: the spec's 401 without an error means "start here".
    throw new MatrixError(401, "", "", {
      flows: opts.flows.map((stages) => ({ stages })),
      params: opts.params ?? {},
      session: session.session_id,
      ...(completed.length ? { completed } : {}),
    });
  }
  await db.prepare("DELETE FROM uia_sessions WHERE session_id = ?").bind(session.session_id).run();
  return completed;
}

async function attemptStage(
  c: Context<AppEnv>,
  stage: Stage,
  auth: AuthDict,
  opts: UiaOptions,
): Promise<{ errcode: string; error: string } | null> {
  switch (stage) {
    case "m.login.dummy":
      return null;
    case "m.login.password": {
      const who = auth.identifier?.type === "m.id.user" ? auth.identifier.user : auth.user;
      if (!who || typeof auth.password !== "string") return { errcode: "M_BAD_JSON", error: "identifier and password are required" };
      const userId = resolveLoginUser(who, c.var.config.serverName);
      if (!opts.userId || userId !== opts.userId) return { errcode: "M_FORBIDDEN", error: "Invalid username or password" };
      // Each attempt is a password guess: the same buckets as /login, so a stolen access token
      // cannot guess without limit through /account/password, /delete_devices and the like.
      await rateLimit(c, "login-ip", clientAddress(c), LIMITS.loginPerAddress);
      await rateLimit(c, "login-user", userId, LIMITS.loginPerAccount);
      const row = await c.env.DB.prepare("SELECT password_hash FROM users WHERE user_id = ?").bind(userId).first<{ password_hash: string | null }>();
      if (!(await verifyPassword(auth.password, row?.password_hash ?? null))) {
        return { errcode: "M_FORBIDDEN", error: "Invalid username or password" };
      }
      return null;
    }
    case "m.oauth":
      // Completed by approval on the account page, submitted without a type.
      return { errcode: "M_UNAUTHORIZED", error: "Approve the action on the account page, then retry with just the session" };
    case "m.login.registration_token": {
      if (typeof auth.token !== "string" || !opts.checkToken) return { errcode: "M_BAD_JSON", error: "token is required" };
      const err = await opts.checkToken(auth.token);
      return err ? { errcode: "M_FORBIDDEN", error: err } : null;
    }
  }
}
