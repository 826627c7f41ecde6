// History visibility (spec: Client-Server API, module "Room History Visibility", "Server behaviour").
// Pure decision function; the RoomDO supplies the state before/after the event.

export type HistoryVisibility = "world_readable" | "shared" | "invited" | "joined";

/** The visibility named by an m.room.history_visibility content. "By default if no
 *  history_visibility is set, or if the value is not understood, the visibility is assumed to be
 *  shared." */
export function parseHistoryVisibility(content: unknown): HistoryVisibility {
  const v = (content as { history_visibility?: unknown } | undefined)?.history_visibility;
  return v === "world_readable" || v === "shared" || v === "invited" || v === "joined" ? v : "shared";
}

export interface VisibilityInputs {
  /** History visibility in the state before the event (and after it, for history_visibility events). */
  visibility: HistoryVisibility[];
  /** The user's membership before the event (and after it, for the user's own member events). */
  membership: (string | undefined)[];
  /** Whether the user joined the room at some point after the event was sent. */
  joinedLater: boolean;
}

/** Rules 1–5 of "Server behaviour", evaluated for every (visibility, membership) combination
 *  supplied: for history_visibility events and the user's own member events the user may see
 *  the event if the state before *or* after the event allows it. */
export function isEventVisible(i: VisibilityInputs): boolean {
  for (const hv of i.visibility) {
    for (const m of i.membership) {
      if (hv === "world_readable") return true; // 1
      if (m === "join") return true; // 2
      if (hv === "shared" && i.joinedLater) return true; // 3
      if (m === "invite" && hv === "invited") return true; // 4
    }
  }
  return false; // 5
}
