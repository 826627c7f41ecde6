// Expired OAuth rows go without a schedule: each insert deletes the expired ones among the
// table's oldest rows (rowid order is age order), as src/services/sweep.ts does for UIA sessions.
import type { Env } from "../../env";

const BATCH = 100;
/** Kept a day past expiry, so a late replay of a code is still recognised as a replay. */
const GRACE_MS = 24 * 3600_000;

type Table = "oauth_grants" | "oauth_browser_sessions" | "oauth_device_grants" | "login_tokens";

export async function sweepOAuth(env: Env, table: Table): Promise<void> {
  await env.DB.prepare(`DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} ORDER BY rowid LIMIT ${BATCH}) AND expires_ts < ?`)
    .bind(Date.now() - GRACE_MS)
    .run();
}
