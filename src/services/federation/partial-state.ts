// Partial-state ("faster") joins, joining side, the background half (spec: PUT /v2/send_join
// `omit_members`, `members_omitted`, `servers_in_room`; MSC3706; Synapse's "faster joins").
//
// joinRemoteRoom (membership.ts) seeds the RoomDO with the state the resident returned without
// its member events, marks the room partial and answers the client. syncPartialStateRoom then
// fetches the full state before our join from the servers that were in the room, the resident
// that answered send_join first, falling back to the next one: GET /v1/state_ids?event_id=<our
// join> and the events we lack through /v1/event (as Synapse does), or GET /v1/state when
// /state_ids fails; and hands it to RoomDO.completePartialState: checked as a send_join answer is (hashes,
// signatures, auth rules in auth order), merged into every state of the room, the events
// admitted meanwhile re-checked, the room un-partialed. The RoomDO does not fetch (gap filling
// lives in the Worker, as for missing events): it says which event and which servers, and
// hands out one claim at a time so two runs do not fetch the same state.
import type { Env } from "../../env";
import type { Config } from "../../config";
import type { PDU } from "../../core/types";
import { roomStub } from "../rooms";
import { userStub } from "../../rpc/stubs";
import { federationContext, federationRequest } from "./client";

/** A 10,000-member room's state is ~30,000 events and tens of MB. */
const STATE_TIMEOUT_MS = 120_000;
const STATE_MAX_BYTES = 256 * 1024 * 1024;
/** Servers asked per round, and rounds (with these pauses before them). */
const MAX_SERVERS = 5;
const ROUND_DELAYS_MS = [0, 2_000, 10_000];

const enc = encodeURIComponent;

/** Fetch and apply the full state of a partial-state room. Returns whether the room is full
 *  when it returns (false: every server failed in every round, or another run holds the claim;
 *  a later call — the next /members, the next join — tries again once the claim expired). */
export async function syncPartialStateRoom(env: Env, config: Config, roomId: string): Promise<boolean> {
  const stub = roomStub(env, config, roomId);
  for (const delay of ROUND_DELAYS_MS) {
    if (delay) await new Promise((r) => setTimeout(r, delay));
    const claim = await stub.claimPartialStateSync();
    if (claim.status === "full") return true;
    if (claim.status === "busy") return false;
    const servers = claim.servers.filter((s) => s !== config.serverName).slice(0, MAX_SERVERS);
    for (const server of servers) {
      // /state_ids, then only the events we lack (/event), as Synapse does: the IDs of a
      // 30,000-event state are ~2 MB where /state is tens of MB in one answer. /state when
      // /state_ids fails.
      const fetched = (await viaStateIds(env, config, stub, server, roomId, claim.joinEventId)) ?? (await viaState(env, config, server, roomId, claim.joinEventId));
      if (!fetched) continue;
      const r = await stub.completePartialState({ claim: claim.claim, origin: server, ...fetched });
      if (r.ok) {
        if (r.value.encrypted) await deviceListsAfterCompletion(env, config, r.value.localJoined, r.value.remoteJoined);
        return true;
      }
      console.warn(`partial state of ${roomId}: the state from ${server} was refused: ${r.error}`);
    }
    await stub.releasePartialStateSync(claim.claim);
  }
  return false;
}

/** How long /members and /joined_members wait for a partial-state room's members. Synapse
 *  waits without a bound; past this the answer is the members known so far. */
export const MEMBERS_WAIT_MS = 60_000;

/** Member lists of a partial-state room wait for the full state (Synapse: room member lists
 *  "await full state"), and make sure a fetch is running (one that failed or was cut short
 *  left the room partial; its claim has expired by the time anyone asks again). */
export async function awaitFullState(env: Env, config: Config, roomId: string, waitUntil: (p: Promise<unknown>) => void, ms = MEMBERS_WAIT_MS): Promise<void> {
  const stub = roomStub(env, config, roomId);
  if (!(await stub.isPartialState())) return;
  waitUntil(syncPartialStateRoom(env, config, roomId).catch((e) => console.error("partial-state sync failed", e)));
  await stub.awaitFullState(ms);
}

interface FetchedState {
  state: PDU[];
  authChain: PDU[];
  /** With /state_ids: the whole state's IDs (`state` then holds only the events we lacked). */
  stateIds?: string[];
}

/** Events fetched at once over /event, and at most per completion. */
const EVENT_FETCH_WIDTH = 16;
const MAX_EVENT_FETCH = 100_000;

async function viaStateIds(env: Env, config: Config, stub: ReturnType<typeof roomStub>, server: string, roomId: string, joinId: string): Promise<FetchedState | undefined> {
  const ctx = federationContext(env, config);
  let ids: { pdu_ids?: unknown; auth_chain_ids?: unknown };
  try {
    ids = (await federationRequest<typeof ids>(ctx, server, "GET", `/_matrix/federation/v1/state_ids/${enc(roomId)}`, { query: { event_id: joinId }, timeoutMs: STATE_TIMEOUT_MS, maxBytes: STATE_MAX_BYTES })).body;
  } catch (e) {
    console.warn(`partial state of ${roomId}: /state_ids from ${server} failed: ${(e as Error).message}`);
    return undefined;
  }
  if (!Array.isArray(ids.pdu_ids) || !Array.isArray(ids.auth_chain_ids)) return undefined;
  const stateIds = ids.pdu_ids.filter((x): x is string => typeof x === "string");
  const chainIds = ids.auth_chain_ids.filter((x): x is string => typeof x === "string");
  const held = new Set<string>();
  const all = [...new Set([...stateIds, ...chainIds])];
  for (let i = 0; i < all.length; i += 5_000) for (const id of (await stub.heldAmong(all.slice(i, i + 5_000))).held) held.add(id);
  const lacking = all.filter((id) => !held.has(id));
  if (lacking.length > MAX_EVENT_FETCH) return undefined;
  const got = new Map<string, PDU>();
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < lacking.length && !failed) {
      const id = lacking[next++];
      try {
        const r = await federationRequest<{ pdus?: PDU[] }>(ctx, server, "GET", `/_matrix/federation/v1/event/${enc(id)}`, { query: { room_id: roomId }, timeoutMs: 30_000 });
        if (r.body.pdus?.[0]) got.set(id, r.body.pdus[0]);
      } catch (e) {
        // One event the server cannot give: the state would be incomplete, try elsewhere.
        console.warn(`partial state of ${roomId}: /event ${id} from ${server} failed: ${(e as Error).message}`);
        failed = true;
      }
    }
  };
  await Promise.all(Array.from({ length: EVENT_FETCH_WIDTH }, worker));
  if (failed) return undefined;
  const inState = new Set(stateIds);
  return {
    state: [...got].filter(([id]) => inState.has(id)).map(([, p]) => p),
    authChain: [...got].filter(([id]) => !inState.has(id)).map(([, p]) => p),
    stateIds,
  };
}

async function viaState(env: Env, config: Config, server: string, roomId: string, joinId: string): Promise<FetchedState | undefined> {
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

/** Users put in one hub call (a 10,000-member room is ten calls per local member). */
const DEVICE_LIST_CHUNK = 1_000;

/** An encrypted room's members arrived all at once: every local member's client is told that
 *  they now share an encrypted room ("device_lists.changed"), so it fetches their keys before
 *  encrypting for them. While partial they were unknown (Synapse, on un-partial-stating, does
 *  the same for the members it learnt). */
async function deviceListsAfterCompletion(env: Env, config: Config, localJoined: string[], remoteJoined: string[]): Promise<void> {
  for (const local of localJoined) {
    const hub = userStub(env, local, config);
    for (let i = 0; i < remoteJoined.length; i += DEVICE_LIST_CHUNK) {
      await hub.deviceListsChanged(local, remoteJoined.slice(i, i + DEVICE_LIST_CHUNK)).catch((e) => console.error(`device lists for ${local} failed`, e));
    }
  }
}
