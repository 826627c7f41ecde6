// The body of POST /publicRooms, the same for clients (client-server API) and for other servers
// (server-server API, which mirrors it). One schema, so the two cannot drift apart.
import { z } from "zod";
import { absentIfNull } from "./validate";

// Every field is optional; `null` is read as absent (absentIfNull), and `room_types` entries
// may be null (the spec's `["string", "null"]`: rooms without a type). `since` is our own
// page token, always short.
export const publicRoomsBody = z.object({
  limit: absentIfNull(z.number().int().min(0)),
  since: absentIfNull(z.string().max(1000)),
  filter: absentIfNull(
    z.object({
      generic_search_term: absentIfNull(z.string().max(1000)),
      room_types: absentIfNull(z.array(z.string().nullable())),
    }),
  ),
  include_all_networks: absentIfNull(z.boolean()),
  third_party_instance_id: absentIfNull(z.string()),
});
