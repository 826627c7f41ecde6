// The room's joined and invited member counts (the /sync room summary's m.joined_member_count and
// m.invited_member_count), kept in `meta` as "<joined> <invited>" in the transaction that changes
// the current state (RoomWriter.applyCurrentState), so a cold RoomDO answers them from the `meta`
// it reads at start. Counting them instead (one aggregate over the member rows of current_state
// and their memberships) was the largest statement of a cold /sync: 116 ms of 300 rooms × 300
// members. The invariant: the stored counts are always what counting the current state gives
// (MEMBER_COUNTS_SQL), as the membership of each member event is its `memberships` row, else its
// content.

/** The state key prefix of member events (stateKey("m.room.member", userId)). */
export const MEMBER_KEY_PREFIX = "m.room.member\u0000";

export interface MemberCounts {
  joined: number;
  invited: number;
}

/** A row of MEMBER_COUNTS_SQL (or of the delta). */
export type MemberCountsRow = MemberCounts & Record<string, SqlStorageValue>;

/** The members of the current state with their membership: from `memberships` (every accepted
 *  member event has a row), else from the event itself (state received from another server). */
export const MEMBERS_SQL = `SELECT c.state_key AS u, COALESCE(m.membership, json_extract(e.pdu, '$.content.membership')) AS ms
  FROM current_state c LEFT JOIN memberships m ON m.event_id = c.event_id LEFT JOIN events e ON m.event_id IS NULL AND e.event_id = c.event_id
  WHERE c.type = 'm.room.member'`;

/** Counting them over the current state (a room that does not keep them yet). */
export const MEMBER_COUNTS_SQL = `SELECT COALESCE(SUM(ms = 'join'), 0) AS joined, COALESCE(SUM(ms = 'invite'), 0) AS invited FROM (${MEMBERS_SQL})`;

/** How the counts move when current_state's member keys ?1 (a JSON array of user IDs) are
 *  replaced by the events ?2 (a JSON array of event IDs): minus the present events of those
 *  keys, plus the new ones. Run before the change is applied. */
const DELTA_SQL = `SELECT COALESCE(SUM(d * (ms = 'join')), 0) AS joined, COALESCE(SUM(d * (ms = 'invite')), 0) AS invited FROM (
  SELECT -1 AS d, ms FROM (${MEMBERS_SQL} AND c.state_key IN (SELECT value FROM json_each(?1)))
  UNION ALL
  SELECT 1 AS d, COALESCE(m.membership, json_extract(e.pdu, '$.content.membership')) AS ms
    FROM events e LEFT JOIN memberships m ON m.event_id = e.event_id WHERE e.event_id IN (SELECT value FROM json_each(?2))
)`;

/** IDs per JSON parameter: at most 255 bytes each (spec: "Size limits"), so a batch stays well
 *  under the 2 MB a statement's parameters may hold here. */
const BATCH = 1500;

export function parseMemberCounts(value: string | null | undefined): MemberCounts | undefined {
  const m = value ? /^(\d+) (\d+)$/.exec(value) : null;
  return m ? { joined: Number(m[1]), invited: Number(m[2]) } : undefined;
}

export function formatMemberCounts(c: MemberCounts): string {
  return `${c.joined} ${c.invited}`;
}

/** The counts after the member entries among `changes` (user ID → new event ID, null: removed)
 *  replace the present ones, from `before` (the counts now). Reads; call before applying them. */
export function countsAfter(sql: SqlStorage, before: MemberCounts, changes: Map<string, string | null>): MemberCounts {
  if (changes.size === 0) return before;
  const users = [...changes.keys()];
  const added = [...changes.values()].filter((id): id is string => id !== null);
  const out = { ...before };
  for (let i = 0; i < Math.max(users.length, added.length); i += BATCH) {
    const d = sql.exec<MemberCountsRow>(DELTA_SQL, JSON.stringify(users.slice(i, i + BATCH)), JSON.stringify(added.slice(i, i + BATCH))).one();
    out.joined += d.joined;
    out.invited += d.invited;
  }
  return out;
}
