// RoomEventFilter matching (spec: Client-Server API "Filtering", RoomEventFilter), pure.
// Used by /messages and /context; the sync work can share it.
import { z } from "zod";
import { globMatches, MAX_GLOB_LENGTH } from "./glob";

/** Type patterns are globs run against every event the filter sees: bound their length. */
const typePatterns = z.array(z.string().max(MAX_GLOB_LENGTH)).max(1000);

export const roomEventFilterSchema = z
  .object({
    limit: z.number().int().optional(),
    types: typePatterns.optional(),
    not_types: typePatterns.optional(),
    senders: z.array(z.string()).optional(),
    not_senders: z.array(z.string()).optional(),
    rooms: z.array(z.string()).optional(),
    not_rooms: z.array(z.string()).optional(),
    contains_url: z.boolean().optional(),
    lazy_load_members: z.boolean().optional(),
    include_redundant_members: z.boolean().optional(),
    unread_thread_notifications: z.boolean().optional(),
  })
  .loose();

export type RoomEventFilter = z.infer<typeof roomEventFilterSchema>;

/** `*` is a wildcard matching any sequence of characters (spec: "types"). */
export function typeMatches(pattern: string, type: string): boolean {
  return globMatches(pattern, type, { questionMark: false });
}

/** Whether an event passes the filter. `not_*` take precedence over the inclusive lists. */
export function matchesRoomEventFilter(
  f: RoomEventFilter | undefined,
  ev: { type: string; sender: string; room_id?: string; content?: unknown },
): boolean {
  if (!f) return true;
  if (f.not_types?.some((p) => typeMatches(p, ev.type))) return false;
  if (f.types && !f.types.some((p) => typeMatches(p, ev.type))) return false;
  if (f.not_senders?.includes(ev.sender)) return false;
  if (f.senders && !f.senders.includes(ev.sender)) return false;
  if (ev.room_id !== undefined) {
    if (f.not_rooms?.includes(ev.room_id)) return false;
    if (f.rooms && !f.rooms.includes(ev.room_id)) return false;
  }
  if (f.contains_url !== undefined) {
    const url = (ev.content as { url?: unknown } | undefined)?.url;
    if (f.contains_url !== (typeof url === "string")) return false;
  }
  return true;
}
