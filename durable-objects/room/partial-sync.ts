// Partial-state joins, the background half (MSC3706; Synapse's faster joins "resync"): the room's
// alarm fetches the full state before our join and completes the room, in bounded steps that
// survive a restart. Not the Worker's waitUntil (cut after 30 s on Cloudflare); an alarm
// handler may run for minutes, and each step here stays well inside that:
//   "ids"     GET /state_ids from one of servers_in_room (the resident that answered send_join
//             first); the IDs are staged in `partial_fetch` (those we hold marked held). If
//             /state_ids fails, GET /state from the same server, and complete with it at once.
//   "events"  when more than a tenth of the staged IDs are missing (Synapse's rule), first one
//             GET /state from the same server: the whole state and auth chain in one answer,
//             whose events we lack are staged (keyed by the ID computed from each PDU); tried
//             once per stage, and a failure only means the /event way. Then GET /event for up
//             to EVENTS_PER_STEP staged IDs not yet fetched (16 in flight), within STEP_MS;
//             the PDUs are staged. Another step follows at once until none is missing.
//   admitting the fetched events are checked and stored as outliers in auth order, at most
//             ADMIT_PER_STEP per step (hashes, signatures and auth rules of ~10,000 events is
//             the heaviest part); then the room is completed from what is stored
//             (PartialState.complete).
// A failed step moves to the next server and waits (BACKOFF_MS, growing, then every 10 min, for
// as long as the room is partial); what was staged stays, since events are the same whichever
// server gives them. Progress is in meta `partial_sync`, so a step cut short by an eviction is
// redone from its start by the next alarm (a watchdog alarm is set before each step).
// After completion the local members' sync hubs are told (UserDO.roomStateCompleted) and, in an
// encrypted room, their device lists (the members were unknown while partial).
import type { Env } from "../../src/env";
import type { Config } from "../../src/config";
import type { PDU } from "../../src/core/types";
import type { RoomVersion } from "../../src/core/room-versions";
import { computeEventId } from "../../src/core/event-hashes";
import type { RoomResult } from "../../src/rpc/room";
import type { PartialState, PartialWrites } from "./partial-state";
import { fetchEvents, fetchState, fetchStateIds } from "../../src/services/federation/partial-state";
import { REFETCH_BACKOFF_MS } from "../../src/services/federation/keys";
import { userStub } from "../../src/rpc/stubs";

/** Growing pauses after a failed step (the last repeats). */
const BACKOFF_MS = [500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000];
/** Wall time a step spends fetching events, and events it fetches at most. */
const STEP_MS = 20_000;
const EVENTS_PER_STEP = 2_000;
const ADMIT_PER_STEP = 2_000;
/** A step not finished by then (the object was evicted) is run again by this alarm. */
const WATCHDOG_MS = 180_000;
/** Missing share of the staged IDs above which the events are asked with one /state first
 *  (Synapse: more than 10% missing). */
const STATE_FIRST_SHARE = 0.1;
/** Servers of servers_in_room tried, in turn. */
const MAX_SERVERS = 5;
/** Failed steps in a row after which fetched events whose signers' keys cannot be had are
 *  checked anyway (and those fail): until then a step that finds such a signer fails instead
 *  (tried again after the backoff, at least the key ring's pause: ~5 minutes in all). */
const KEY_DEFERRALS = 8;
/** Users put in one hub call (a 10,000-member room is ten calls per local member). */
const DEVICE_LIST_CHUNK = 1_000;

/** meta `partial_sync`. */
interface SyncProgress {
  phase: "ids" | "events";
  /** Index into the servers tried (modulo their number). */
  server: number;
  /** Failed steps in a row (the backoff). */
  failures: number;
  /** Not before (epoch ms). */
  nextAt: number;
  /** /state was asked for this stage (once: after that, /event only). */
  stateTried?: boolean;
}

export interface CompletedState {
  rejected: string[];
  added: number;
  stream: number;
  encrypted: boolean;
  localJoined: string[];
  remoteJoined: string[];
}

/** What the fetch needs from the room (wired in durable-objects/room.ts). */
export interface PartialSyncAccess {
  sql: SqlStorage;
  env: Env;
  ctx: DurableObjectState;
  config(): Config;
  roomId(): string | undefined;
  roomVersion(): RoomVersion | undefined;
  partial: Pick<PartialState, "meta" | "claimSync" | "releaseSync">;
  /** IDs among `ids` stored here (any status). */
  held(ids: string[]): Set<string>;
  write<T>(fn: (w: PartialWrites) => T): T;
  /** RoomKeys.signersWithoutKeys: senders' servers none of whose keys can be had now (from
   *  them, our notaries, or `sentBy`, the server the events came from). */
  signersWithoutKeys(pdus: PDU[], sentBy: string): Promise<string[]>;
  /** RemoteRoom.admitOutliers: checked and stored as outliers; returns how many were not. */
  admitOutliers(pdus: PDU[], origin: string): Promise<number>;
  /** RemoteRoom.completePartialState. */
  complete(args: { claim: string; origin: string; state: unknown[]; authChain: unknown[]; stateIds?: string[] }): Promise<RoomResult<CompletedState>>;
}

/** "keys": failed because some signers' keys cannot be had yet (admitSome). */
type StepOutcome = "done" | "more" | "failed" | "refused" | "keys";

export class PartialSync {
  constructor(private readonly r: PartialSyncAccess) {}

  private progress(): SyncProgress {
    const row = this.r.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'partial_sync'").toArray()[0];
    return row ? (JSON.parse(row.value) as SyncProgress) : { phase: "ids", server: 0, failures: 0, nextAt: 0 };
  }

  private save(p: SyncProgress): void {
    this.r.write((w) => w.saveSync(JSON.stringify(p)));
  }

  /** Set the room's one alarm for `at` unless it is set sooner (the fan-out shares it). An alarm
   *  time in the past is the one running now. */
  private async arm(at: number): Promise<void> {
    const cur = await this.r.ctx.storage.getAlarm();
    if (cur === null || cur > at || cur <= Date.now()) await this.r.ctx.storage.setAlarm(at);
  }

  /** The room became partial, or someone waits for it (/members): make sure a step is due. */
  async kick(): Promise<void> {
    if (!this.r.partial.meta()) return;
    await this.arm(Math.max(Date.now(), this.progress().nextAt));
  }

  /** The room's alarm fired: run one step when one is due. */
  async alarm(): Promise<void> {
    const m = this.r.partial.meta();
    if (!m) return;
    const p = this.progress();
    const now = Date.now();
    if (p.nextAt > now) return this.arm(p.nextAt);
    const claim = this.r.partial.claimSync();
    if (claim.status === "full") return;
    if (claim.status === "busy") return this.arm(now + 5_000);
    await this.arm(now + WATCHDOG_MS);
    const servers = claim.servers.filter((s) => s !== this.r.config().serverName).slice(0, MAX_SERVERS);
    let outcome: StepOutcome = "failed";
    let completed: CompletedState | undefined;
    try {
      if (servers.length) {
        const server = servers[p.server % servers.length];
        const r = await this.step(p, server, claim.claim, m.join);
        outcome = r.outcome;
        completed = r.completed;
      }
    } catch (e) {
      console.error(`partial state of ${this.r.roomId()}: step failed`, e);
      outcome = "failed";
    } finally {
      this.r.partial.releaseSync(claim.claim);
    }
    if (outcome === "done") {
      if (completed) await this.tell(completed);
      return;
    }
    if (outcome === "more") {
      // As the step left it (its phase moved on from "ids", /state was tried).
      this.save({ ...this.progress(), failures: 0, nextAt: 0 });
      return this.arm(Date.now());
    }
    // failed: the next server, after a pause. refused: the stage is dropped too (that server's
    // state did not check; another's IDs may differ).
    if (outcome === "refused") this.r.write((w) => w.clearStage());
    // Missing keys: the key ring asks a server again only REFETCH_BACKOFF_MS after a failed
    // fetch, so an earlier step would find none either.
    const wait = Math.max(BACKOFF_MS[Math.min(p.failures, BACKOFF_MS.length - 1)], outcome === "keys" ? REFETCH_BACKOFF_MS : 0);
    const next: SyncProgress = { phase: outcome === "refused" ? "ids" : this.progress().phase, server: p.server + 1, failures: p.failures + 1, nextAt: Date.now() + wait };
    this.save(next);
    await this.arm(next.nextAt);
  }

  /** Many events missing: ask /state once and stage the ones we lack from its answer. They
   *  are checked later exactly as fetched ones are (admitSome); a failed or partial answer
   *  leaves the rest to /event. */
  private async stateFirst(p: SyncProgress, server: string, roomId: string, joinId: string): Promise<void> {
    const rv = this.r.roomVersion();
    const { total, lacking } = this.r.sql.exec<{ total: number; lacking: number }>("SELECT COUNT(*) AS total, COUNT(*) - COUNT(pdu) AS lacking FROM partial_fetch").one();
    if (rv && lacking > total * STATE_FIRST_SHARE) {
      const st = await fetchState(this.r.env, this.r.config(), server, roomId, joinId);
      if (st) {
        const wanted = new Set(this.r.sql.exec<{ event_id: string }>("SELECT event_id FROM partial_fetch WHERE pdu IS NULL").toArray().map((x) => x.event_id));
        const rows: [string, string][] = [];
        for (const pdu of [...st.state, ...st.authChain]) {
          const id = await computeEventId(pdu, rv).catch(() => undefined);
          if (id && wanted.delete(id)) rows.push([id, JSON.stringify(pdu)]);
        }
        this.r.write((w) => w.stagePdus(rows));
      }
    }
    this.save({ ...p, stateTried: true });
  }

  private async step(p: SyncProgress, server: string, claim: string, joinId: string): Promise<{ outcome: StepOutcome; completed?: CompletedState }> {
    const env = this.r.env;
    const config = this.r.config();
    const roomId = this.r.roomId()!;
    if (p.phase === "ids") {
      const ids = await fetchStateIds(env, config, server, roomId, joinId);
      if (!ids) {
        // /state: the whole state in one answer, completed at once.
        const st = await fetchState(env, config, server, roomId, joinId);
        if (!st) return { outcome: "failed" };
        return this.completeWith(claim, server, st.state, st.authChain);
      }
      const inState = new Set(ids.stateIds);
      const all = [...new Set([...ids.stateIds, ...ids.chainIds])];
      const held = this.r.held(all);
      this.r.write((w) => {
        w.clearStage();
        w.stageIds(all.map((id) => ({ id, inState: inState.has(id), held: held.has(id) })));
        w.saveSync(JSON.stringify({ ...p, phase: "events", stateTried: false } satisfies SyncProgress));
      });
      p = { ...p, phase: "events", stateTried: false };
    }
    if (!p.stateTried) await this.stateFirst(p, server, roomId, joinId);
    const deadline = Date.now() + STEP_MS;
    let fetched = 0;
    while (Date.now() < deadline && fetched < EVENTS_PER_STEP) {
      const lacking = this.r.sql
        .exec<{ event_id: string }>("SELECT event_id FROM partial_fetch WHERE pdu IS NULL LIMIT ?", Math.min(500, EVENTS_PER_STEP - fetched))
        .toArray()
        .map((x) => x.event_id);
      if (lacking.length === 0) {
        const admitted = await this.admitSome(server, p.failures);
        if (admitted === "keys") return { outcome: "keys" };
        if (admitted) return this.completeFromStage(claim, server);
        return { outcome: "more" };
      }
      const { got, failed } = await fetchEvents(env, config, server, roomId, lacking, deadline);
      this.r.write((w) => w.stagePdus([...got].map(([id, pdu]) => [id, JSON.stringify(pdu)])));
      fetched += got.size;
      if (failed) return { outcome: "failed" };
    }
    return { outcome: "more" };
  }

  /** Check and store up to ADMIT_PER_STEP fetched events, in auth order (an event's auth events
   *  among the fetched ones come before it, so each step's share finds them stored). They are
   *  marked held: one that failed its checks is not stored, and the completion leaves it out.
   *  Returns whether none is left; "keys" when some of their signers' keys cannot be had now
   *  (nothing admitted: see KEY_DEFERRALS). */
  private async admitSome(origin: string, failures: number): Promise<boolean | "keys"> {
    const rows = this.r.sql.exec<{ event_id: string; pdu: string }>("SELECT event_id, pdu FROM partial_fetch WHERE pdu IS NOT NULL AND pdu != ''").toArray();
    if (rows.length === 0) return true;
    const pdus = new Map(rows.map((x) => [x.event_id, JSON.parse(x.pdu) as PDU]));
    const take = authOrderOf(pdus).slice(0, ADMIT_PER_STEP);
    // A signer's server unreachable for a moment (its key not cached yet; the key ring then
    // waits 30 s before asking again) made every event it signed fail its signature check, and
    // the room completed without them, for good: 10,000-member benchmark under load, ~4,400 of
    // 10,001 members lost. Such a step fails instead and is tried again after the backoff.
    if (failures < KEY_DEFERRALS) {
      const without = await this.r.signersWithoutKeys(take.map((id) => pdus.get(id)!), origin);
      if (without.length) {
        console.warn(`partial state of ${this.r.roomId()}: no key yet for ${without.slice(0, 5).join(", ")}; trying again later`);
        return "keys";
      }
    }
    await this.r.admitOutliers(take.map((id) => pdus.get(id)!), origin);
    this.r.write((w) => w.stagePdus(take.map((id) => [id, ""])));
    return take.length === rows.length;
  }

  private async completeFromStage(claim: string, origin: string): Promise<{ outcome: StepOutcome; completed?: CompletedState }> {
    const rows = this.r.sql.exec<{ event_id: string; in_state: number; pdu: string }>("SELECT event_id, in_state, pdu FROM partial_fetch").toArray();
    const state: PDU[] = [];
    const authChain: PDU[] = [];
    const stateIds: string[] = [];
    for (const row of rows) {
      if (row.in_state) stateIds.push(row.event_id);
      if (row.pdu) (row.in_state ? state : authChain).push(JSON.parse(row.pdu) as PDU);
    }
    return this.completeWith(claim, origin, state, authChain, stateIds);
  }

  private async completeWith(claim: string, origin: string, state: unknown[], authChain: unknown[], stateIds?: string[]): Promise<{ outcome: StepOutcome; completed?: CompletedState }> {
    const r = await this.r.complete({ claim, origin, state, authChain, stateIds });
    if (r.ok) return { outcome: "done", completed: r.value };
    console.warn(`partial state of ${this.r.roomId()}: the state from ${origin} was refused: ${r.error}`);
    return { outcome: "refused" };
  }

  /** The local members' hubs: the room moved (its state is whole now), and in an encrypted room
   *  every remote member's device list is new to them ("device_lists.changed"; while partial
   *  those members were unknown, so updates from them reached nobody — Synapse replays them
   *  when it un-partials a room). Best effort: a hub that misses this sees the room's state at
   *  its next event. */
  private async tell(c: CompletedState): Promise<void> {
    const env = this.r.env;
    const config = this.r.config();
    const roomId = this.r.roomId()!;
    await Promise.all(
      c.localJoined.map(async (local) => {
        const hub = userStub(env, local, config);
        await hub.roomStateCompleted(local, roomId, c.stream).catch((e) => console.error(`room completion to ${local} failed`, e));
        if (!c.encrypted) return;
        for (let i = 0; i < c.remoteJoined.length; i += DEVICE_LIST_CHUNK) {
          await hub.deviceListsChanged(local, c.remoteJoined.slice(i, i + DEVICE_LIST_CHUNK)).catch((e) => console.error(`device lists for ${local} failed`, e));
        }
      }),
    );
  }
}

/** Fetched events in auth order (Kahn's algorithm over the auth_events among them; events in a
 *  cycle come last, and are refused when admitted). */
function authOrderOf(pdus: Map<string, PDU>): string[] {
  const pending = new Map<string, number>();
  const dependants = new Map<string, string[]>();
  for (const [id, p] of pdus) {
    const raw = Array.isArray(p.auth_events) ? (p.auth_events as unknown[]) : [];
    // Room versions 1 and 2 cite [event_id, hashes] pairs.
    const auth = new Set(raw.map((a) => (Array.isArray(a) ? a[0] : a)).filter((a): a is string => typeof a === "string" && a !== id && pdus.has(a)));
    pending.set(id, auth.size);
    for (const a of auth) {
      const list = dependants.get(a);
      if (list) list.push(id);
      else dependants.set(a, [id]);
    }
  }
  const order: string[] = [];
  const ready = [...pending].filter(([, n]) => n === 0).map(([id]) => id);
  while (ready.length) {
    const id = ready.pop()!;
    order.push(id);
    pending.delete(id);
    for (const d of dependants.get(id) ?? []) {
      const n = pending.get(d)! - 1;
      pending.set(d, n);
      if (n === 0) ready.push(d);
    }
  }
  return [...order, ...pending.keys()];
}
