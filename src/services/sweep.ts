// Expiring short-lived rows (registration nonces, UIA sessions) without a schedule or an index.

/** How many of the oldest rows one sweep looks at. */
const SWEEP_BATCH = 100;

/** Delete the expired ones (`created_ts` < `cutoff`) among the table's oldest rows. Rows are
 *  inserted with increasing `created_ts`, so rowid order is age order: looking at the first
 *  SWEEP_BATCH rows costs the same whatever the table holds, and a sweep on every insert removes
 *  expired rows faster than they can pile up (up to SWEEP_BATCH per insert). */
export async function sweepExpired(db: D1Database, table: "registration_nonces" | "uia_sessions", cutoff: number): Promise<number> {
  const r = await db
    .prepare(`DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} ORDER BY rowid LIMIT ${SWEEP_BATCH}) AND created_ts < ?`)
    .bind(cutoff)
    .run();
  return r.meta.changes;
}
