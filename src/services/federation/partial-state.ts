// Partial-state ("faster") joins, joining side: the fetches of the background half (spec: PUT
// /v2/send_join `omit_members`, `members_omitted`, `servers_in_room`; MSC3706; Synapse's "faster
// joins").
//
// joinRemoteRoom (membership.ts) seeds the RoomDO with the state the resident returned without
// its member events and marks the room partial; the RoomDO's alarm then completes it in bounded,
// resumable steps (durable-objects/room/partial-sync.ts), calling the fetches below: GET
// /v1/state_ids?event_id=<our join> and the events it lacks through /v1/event (as Synapse does),
// or GET /v1/state when /state_ids fails. Not in the Worker's waitUntil: that is cut after 30 s
// on Cloudflare, and a 10,000-member room's state takes longer than that to fetch and check.
import type { Env } from "../../env";
import type { Config } from "../../config";
import type { PDU } from "../../core/types";
import { roomStub } from "../rooms";
import { federationContext, federationRequest } from "./client";

/** A 10,000-member room's state is ~30,000 events and tens of MB. */
const STATE_TIMEOUT_MS = 120_000;
const STATE_MAX_BYTES = 256 * 1024 * 1024;

const enc = encodeURIComponent;

/** How long /members and /joined_members wait for a partial-state room's members. Synapse
 *  waits without a bound; past this the answer is the members known so far. */
export const MEMBERS_WAIT_MS = 60_000;

/** Member lists of a partial-state room wait for the full state (Synapse: room member lists
 *  "await full state"). The RoomDO's alarm does the fetching; asking also makes sure the alarm
 *  is armed (it is from the join on; this re-arms one lost to a storage failure). */
export async function awaitFullState(env: Env, config: Config, roomId: string, ms = MEMBERS_WAIT_MS): Promise<void> {
  const stub = roomStub(env, config, roomId);
  if (!(await stub.isPartialState())) return;
  await stub.kickPartialStateSync();
  await stub.awaitFullState(ms);
}

/** GET /v1/state_ids?event_id=<joinId> from `server`: the IDs of the state before our join and
 *  of its auth chain (a 30,000-event state's IDs are ~2 MB, where /state is tens of MB). */
export async function fetchStateIds(env: Env, config: Config, server: string, roomId: string, joinId: string): Promise<{ stateIds: string[]; chainIds: string[] } | undefined> {
  let ids: { pdu_ids?: unknown; auth_chain_ids?: unknown };
  try {
    ids = (await federationRequest<typeof ids>(federationContext(env, config), server, "GET", `/_matrix/federation/v1/state_ids/${enc(roomId)}`, { query: { event_id: joinId }, timeoutMs: STATE_TIMEOUT_MS, maxBytes: STATE_MAX_BYTES })).body;
  } catch (e) {
    console.warn(`partial state of ${roomId}: /state_ids from ${server} failed: ${(e as Error).message}`);
    return undefined;
  }
  if (!Array.isArray(ids.pdu_ids) || !Array.isArray(ids.auth_chain_ids)) return undefined;
  return {
    stateIds: ids.pdu_ids.filter((x): x is string => typeof x === "string"),
    chainIds: ids.auth_chain_ids.filter((x): x is string => typeof x === "string"),
  };
}

/** Events fetched at once over /event. */
const EVENT_FETCH_WIDTH = 16;

/** GET /v1/event/{id} from `server` for each of `ids`, 16 in flight, until `deadline`. `failed`:
 *  the server could not give one of them (the caller tries another server for the rest). */
export async function fetchEvents(env: Env, config: Config, server: string, roomId: string, ids: string[], deadline: number): Promise<{ got: Map<string, PDU>; failed: boolean }> {
  const ctx = federationContext(env, config);
  const got = new Map<string, PDU>();
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < ids.length && !failed && Date.now() < deadline) {
      const id = ids[next++];
      try {
        const r = await federationRequest<{ pdus?: PDU[] }>(ctx, server, "GET", `/_matrix/federation/v1/event/${enc(id)}`, { query: { room_id: roomId }, timeoutMs: 30_000 });
        if (r.body.pdus?.[0]) got.set(id, r.body.pdus[0]);
        else failed = true;
      } catch (e) {
        console.warn(`partial state of ${roomId}: /event ${id} from ${server} failed: ${(e as Error).message}`);
        failed = true;
      }
    }
  };
  await Promise.all(Array.from({ length: EVENT_FETCH_WIDTH }, worker));
  return { got, failed };
}

/** GET /v1/state?event_id=<joinId> from `server`: the whole state and auth chain in one answer. */
export async function fetchState(env: Env, config: Config, server: string, roomId: string, joinId: string): Promise<{ state: PDU[]; authChain: PDU[] } | undefined> {
  let body: { pdus?: unknown; auth_chain?: unknown };
  try {
    body = (
      await federationRequest<typeof body>(federationContext(env, config), server, "GET", `/_matrix/federation/v1/state/${enc(roomId)}`, {
        query: { event_id: joinId },
        timeoutMs: STATE_TIMEOUT_MS,
        maxBytes: STATE_MAX_BYTES,
      })
    ).body;
  } catch (e) {
    console.warn(`partial state of ${roomId}: /state from ${server} failed: ${(e as Error).message}`);
    return undefined;
  }
  if (!Array.isArray(body.pdus) || !Array.isArray(body.auth_chain)) return undefined;
  return { state: body.pdus as PDU[], authChain: body.auth_chain as PDU[] };
}
