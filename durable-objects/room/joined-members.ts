// GET /rooms/{roomId}/joined_members: the current joined members with the display name and
// avatar URL of their member events ("displayname"/"avatar_url" of the content, null when absent
// or not a string).
//
// Read from `current_state` joined with the events, the two fields taken out of the stored PDU
// text by SQLite and the answer built there as one JSON object (one row, not one per member).
// Loading each member event instead (a statement, a JSON parse, the client format with its
// prev_content load) and building the whole current state for the requester's membership cost
// ~300 ms in a room of 10,000 members (bench/joined-members.test.ts). Member events a redaction
// names (few) are answered by `contentOf`, which applies the redaction rules as the client
// format does.
import type { JsonObject } from "../../src/core/types";

const FIELD = (name: string) => `CASE WHEN json_type(e.pdu, '$.content.${name}') = 'text' THEN e.pdu ->> '$.content.${name}' END`;
const MEMBERS = `current_state c JOIN events e ON e.event_id = c.event_id WHERE c.type = 'm.room.member'`;
const JOINED_SQL = `SELECT json_group_object(c.state_key, json_object('display_name', ${FIELD("displayname")}, 'avatar_url', ${FIELD("avatar_url")})) AS joined
  FROM ${MEMBERS} AND e.pdu ->> '$.content.membership' = 'join' AND NOT EXISTS (SELECT 1 FROM redactions r WHERE r.redacts = c.event_id)`;
const REDACTED_SQL = `SELECT c.state_key AS user_id, c.event_id FROM current_state c JOIN redactions r ON r.redacts = c.event_id WHERE c.type = 'm.room.member'`;
const MEMBERSHIP_SQL = `SELECT e.pdu ->> '$.content.membership' AS membership FROM ${MEMBERS} AND c.state_key = ?`;

/** The user's current membership ("" when none), read from current_state alone (not the whole
 *  current state built in memory). */
export function currentMembershipOf(sql: SqlStorage, userId: string): string {
  return String(sql.exec<{ membership: string | null }>(MEMBERSHIP_SQL, userId).toArray()[0]?.membership ?? "");
}

/** user ID → { display_name, avatar_url } of every joined member. `contentOf` gives the content
 *  as clients see it (redaction applied) for the member events a redaction names. */
export function joinedMembers(sql: SqlStorage, contentOf: (eventId: string) => JsonObject | undefined): Record<string, JsonObject> {
  const joined = JSON.parse(sql.exec<{ joined: string }>(JOINED_SQL).one().joined) as Record<string, JsonObject>;
  for (const row of sql.exec<{ user_id: string; event_id: string }>(REDACTED_SQL).toArray()) {
    const c = contentOf(row.event_id);
    if (!c || c.membership !== "join") continue;
    joined[row.user_id] = {
      display_name: typeof c.displayname === "string" ? c.displayname : null,
      avatar_url: typeof c.avatar_url === "string" ? c.avatar_url : null,
    };
  }
  return joined;
}
