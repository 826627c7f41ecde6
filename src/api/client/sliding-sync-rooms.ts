// Sliding sync (sliding-sync.ts): what one response reads from the RoomDOs. A room's entry
// (a joined or just-left room's timeline and required_state from RoomDO.syncRoom, with the
// expanded timeline and the state sent again; heroes; an invite's or knock's stripped state),
// and the facts the lists need that the hub may lack (room types, space children).
import type { Context } from "hono";
import type { AppEnv } from "../types";
import { roomStub, unwrap } from "../../services/rooms";
import type { JsonObject } from "../../core/types";
import { planRequiredState, wantsState, type RequiredState } from "../../core/sliding-lists";
import type { Requester, RoomResult } from "../../rpc/room";
import type { RoomSyncQuery, RoomSyncView } from "../../../durable-objects/room/sync-view";

/** RoomDOs one response asks at once. */
export const ROOM_CONCURRENCY = 32;

interface SyncRoomRpc {
  syncRoom(req: Requester, q: RoomSyncQuery): Promise<RoomResult<RoomSyncView>>;
  getStrippedState(): Promise<JsonObject[]>;
  getCurrentStateEvent(type: string, stateKey: string): Promise<JsonObject | null>;
  getCurrentState(): Promise<JsonObject[]>;
}

/** A joined (or just left) room: timeline and state from the RoomDO for (since, upTo]. */
export async function roomData(
  c: Context<AppEnv>,
  roomId: string,
  rs: RequiredState,
  limit: number,
  since: number | null,
  upTo: number,
  initial: boolean,
  stateAgain: boolean,
  isDm: boolean,
  ignored: string[],
  expand = false,
): Promise<JsonObject> {
  const { userId, deviceId } = c.var.auth;
  const plan = planRequiredState(rs, userId);
  const stub = roomStub(c.env, c.var.config, roomId) as unknown as SyncRoomRpc;
  // Only the state types asked for (plus name and avatar) are loaded; members lazily when only
  // $LAZY / $ME are asked.
  const stateFilter = plan.allTypes ? undefined : { types: [...plan.types, "m.room.name", "m.room.avatar"] };
  const view = unwrap(
    await stub.syncRoom(
      { userId, deviceId },
      {
        since,
        upTo,
        limit,
        state: stateFilter,
        lazyLoadMembers: plan.lazyMembers && !plan.explicitMembers,
        fullState: false,
        useStateAfter: true,
        ignoredSenders: ignored.length ? ignored : undefined,
      },
    ),
  );
  let timeline = view.timeline.events;
  let { limited, prev_batch } = view.timeline;
  let state = view.state_after?.events ?? [];
  const live = timeline.length;
  if (expand) {
    // The latest `limit` events whatever was sent before; the state stays the delta's, plus
    // the members of the older senders for $LAZY.
    const full = unwrap(
      await stub.syncRoom(
        { userId, deviceId },
        { since: null, upTo, limit, state: { types: ["m.room.member"] }, lazyLoadMembers: true, fullState: false, useStateAfter: true, ignoredSenders: ignored.length ? ignored : undefined },
      ),
    );
    timeline = full.timeline.events;
    // `limited` even when this reaches the room's start: matrix-js-sdk reconciles events it
    // already holds as scrollback only on a limited (or initial) timeline, and would append
    // them again otherwise.
    prev_batch = full.timeline.prev_batch;
    limited = true;
    const have = new Set(state.map((e) => e.event_id));
    state = [...state, ...(full.state_after?.events ?? []).filter((e) => !have.has(e.event_id))];
  }
  const senders = new Set(timeline.map((e) => e.sender as string));
  if (stateAgain) {
    // The whole current state (no timeline), plus the delta's members for $LAZY.
    const full = unwrap(
      await stub.syncRoom({ userId, deviceId }, { since: null, upTo, limit: 0, state: stateFilter, lazyLoadMembers: false, fullState: false, useStateAfter: true }),
    );
    const ids = new Set(state.map((e) => e.event_id));
    state = [...state, ...(full.state_after?.events ?? []).filter((e) => !ids.has(e.event_id))];
  }
  const out: JsonObject = {
    required_state: state.filter((e) => wantsState(rs, userId, e as { type: string; state_key?: string }, senders)),
    timeline,
    limited,
    prev_batch,
    // Timeline events that are new since the connection last saw the room.
    num_live: initial ? 0 : live,
    joined_count: view.summary["m.joined_member_count"],
    invited_count: view.summary["m.invited_member_count"],
  };
  const nameEv = state.find((e) => e.type === "m.room.name" && e.state_key === "");
  const avatarEv = state.find((e) => e.type === "m.room.avatar" && e.state_key === "");
  if (nameEv) out.name = typeof (nameEv.content as JsonObject).name === "string" ? (nameEv.content as JsonObject).name : "";
  if (avatarEv) out.avatar = typeof (avatarEv.content as JsonObject).url === "string" ? (avatarEv.content as JsonObject).url : null;
  // Deployed servers (Synapse) and clients name it with the unstable prefix; the MSC's name too.
  if (expand) out.unstable_expanded_timeline = out.expanded_timeline = true;
  if (initial) {
    out.initial = true;
    if (isDm) out.is_dm = true;
    // Heroes (MSC4186): for clients to name a room that has no name.
    if (!nameEv && view.summary["m.heroes"]?.length) out.heroes = await heroes(stub, view.summary["m.heroes"], state);
  }
  return out;
}

async function heroes(stub: SyncRoomRpc, userIds: string[], state: JsonObject[]): Promise<JsonObject[]> {
  // Member events already in hand (lazy loading includes the heroes'); the rest from the room.
  const have = new Map(state.filter((e) => e.type === "m.room.member").map((e) => [e.state_key as string, e]));
  const evs = await Promise.all(userIds.map((u) => have.get(u) ?? stub.getCurrentStateEvent("m.room.member", u)));
  return userIds.map((u, i) => {
    const content = (evs[i]?.content ?? {}) as JsonObject;
    const h: JsonObject = { user_id: u };
    if (typeof content.displayname === "string") h.displayname = content.displayname;
    if (typeof content.avatar_url === "string") h.avatar_url = content.avatar_url;
    return h;
  });
}

/** An invite or knock: the stripped state (spec "Stripped state") plus my member event. */
export async function inviteRoom(c: Context<AppEnv>, roomId: string, m: string, isDm: boolean): Promise<JsonObject> {
  const stub = roomStub(c.env, c.var.config, roomId) as unknown as SyncRoomRpc;
  const [stripped, me] = await Promise.all([stub.getStrippedState(), stub.getCurrentStateEvent("m.room.member", c.var.auth.userId)]);
  const events: JsonObject[] = [...stripped];
  if (me) events.push({ type: me.type, state_key: me.state_key!, content: me.content, sender: me.sender });
  const out: JsonObject = { initial: true, [m === "invite" ? "invite_state" : "knock_state"]: events };
  const name = stripped.find((e) => e.type === "m.room.name");
  if (name && typeof (name.content as JsonObject).name === "string") out.name = (name.content as JsonObject).name;
  if (isDm || (me?.content as JsonObject | undefined)?.is_direct === true) out.is_dm = true;
  return out;
}

/** room_types filters: the m.room.create content.type of rooms the hub does not know it for
 *  (asked of their RoomDOs once; the hub keeps the answers). A room this server cannot read
 *  yet (an invite over federation) is left out and stays unknown. */
export async function roomTypesOf(c: Context<AppEnv>, roomIds: string[]): Promise<Record<string, string | null>> {
  const learned: Record<string, string | null> = {};
  let next = 0;
  const worker = async () => {
    while (next < roomIds.length) {
      const id = roomIds[next++];
      const create = await (roomStub(c.env, c.var.config, id) as unknown as SyncRoomRpc).getCurrentStateEvent("m.room.create", "");
      const t = (create?.content as JsonObject | undefined)?.type;
      if (create) learned[id] = typeof t === "string" ? t : null;
    }
  };
  await Promise.all(Array.from({ length: Math.min(ROOM_CONCURRENCY, roomIds.length) }, worker));
  return learned;
}

/** spaces filter: each space's children (m.space.child with `via`); the hub uses only the
 *  spaces the user is joined to. */
export async function spaceChildrenOf(c: Context<AppEnv>, spaces: string[]): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  await Promise.all(
    spaces.map(async (sp) => {
      const state = await (roomStub(c.env, c.var.config, sp) as unknown as SyncRoomRpc).getCurrentState();
      out[sp] = state.filter((e) => e.type === "m.space.child" && typeof e.state_key === "string" && Array.isArray((e.content as JsonObject).via)).map((e) => e.state_key as string);
    }),
  );
  return out;
}
