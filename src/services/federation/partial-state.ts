// Partial-state ("faster") joins, joining side, the background half (spec: PUT /v2/send_join
// `omit_members`, `members_omitted`, `servers_in_room`; MSC3706; Synapse's "faster joins").
//
// joinRemoteRoom (membership.ts) seeds the RoomDO with the state the resident returned without
// its member events, marks the room partial and answers the client. syncPartialStateRoom then
// fetches the full state before our join (GET /v1/state?event_id=<our join>) from the servers
// that were in the room, the resident that answered send_join first, falling back to the next
// one, and hands it to RoomDO.completePartialState: checked as a send_join answer is (hashes,
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
  const ctx = federationContext(env, config);
  for (const delay of ROUND_DELAYS_MS) {
    if (delay) await new Promise((r) => setTimeout(r, delay));
    const claim = await stub.claimPartialStateSync();
    if (claim.status === "full") return true;
    if (claim.status === "busy") return false;
    const servers = claim.servers.filter((s) => s !== config.serverName).slice(0, MAX_SERVERS);
    for (const server of servers) {
      let body: { pdus?: unknown; auth_chain?: unknown };
      try {
        body = (
          await federationRequest<typeof body>(ctx, server, "GET", `/_matrix/federation/v1/state/${enc(roomId)}`, {
            query: { event_id: claim.joinEventId },
            timeoutMs: STATE_TIMEOUT_MS,
            maxBytes: STATE_MAX_BYTES,
          })
        ).body;
      } catch (e) {
        console.warn(`partial state of ${roomId}: /state from ${server} failed: ${(e as Error).message}`);
        continue;
      }
      if (!Array.isArray(body.pdus) || !Array.isArray(body.auth_chain)) {
        console.warn(`partial state of ${roomId}: ${server} answered /state without pdus or auth_chain`);
        continue;
      }
      const r = await stub.completePartialState({ claim: claim.claim, origin: server, state: body.pdus as PDU[], authChain: body.auth_chain as PDU[] });
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
