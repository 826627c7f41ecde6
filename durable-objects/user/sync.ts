// The sync assembly: what changed for one user and device after a token — the hub's half of
// GET /sync (the Worker then fetches each room's range from its RoomDO, src/api/client/sync.ts).
// A response covers (since, Q] where Q is the hub's current position, or lower when the
// to-device batch is capped (then everything else is computed up to the same Q, so nothing is
// skipped). Long-polling: sync() waits on the hub's stream (stream.ts) until a push wakes it, or
// its timeout.
import type { JsonValue } from "../../src/core/types";
import type { HubResult, Membership, SyncDelta, SyncRequest, SyncRoomDelta } from "../../src/rpc/user";
import type { HubStream } from "./stream";
import type { PositionLog } from "./position-log";
import type { Presence } from "./presence";
import type { E2eeInbox } from "./e2ee-inbox";
import type { Ephemeral } from "./ephemeral";
import type { Settings } from "./settings";
import { forgetLazyMembers } from "./lazy-members";

const MAX_TIMEOUT_MS = 5 * 60_000;

/** What the sync assembly reads from the hub's modules (all of its writes go through them). */
export interface SyncAccess {
  sql: SqlStorage;
  stream: Pick<HubStream, "pos" | "token" | "tokenPos" | "parseToken" | "waitForPush">;
  log: Pick<PositionLog, "floor" | "markDevice" | "roomsChanged" | "seenAt" | "streamAt">;
  presence: Pick<Presence, "setMine" | "pingDue" | "get" | "since">;
  inbox: Pick<E2eeInbox, "acknowledge" | "toDeviceAfter" | "deviceListsSince" | "keyCounts">;
  ephemeral: Pick<Ephemeral, "ephemeralSince" | "receiptsByRoom" | "unreadCounts" | "unreadRows">;
  settings: Pick<Settings, "accountDataSince" | "roomAccountDataByRoom" | "ruleset" | "ignoredUsers">;
  /** fan-in.ts: adopt memberships from D1 once per hub. */
  bootstrap(): Promise<void>;
}

export class SyncAssembly {
  constructor(private a: SyncAccess) {}

  /** What changed for this user/device after `since` — waiting up to `timeoutMs` for something
   *  to change when nothing has. An invalid token → ok:false (M_INVALID_PARAM). */
  async sync(req: SyncRequest): Promise<HubResult<SyncDelta>> {
    const { stream, log } = this.a;
    await this.a.bootstrap();
    let since: number | undefined;
    if (req.since !== undefined) {
      const p = stream.parseToken(req.since);
      if ("error" in p) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: p.error };
      since = p.pos;
      log.markDevice(req.deviceId, since);
    } else {
      // An initial sync: the client starts over, so it holds none of the members sent before.
      forgetLazyMembers(this.a.sql, req.deviceId);
    }
    let presenceChanged: SyncDelta["presenceChanged"];
    if (req.setPresence) {
      const changed = this.a.presence.setMine(req.userId, req.setPresence);
      if (this.a.presence.pingDue(changed, Date.now())) {
        const p = this.a.presence.get(req.userId)!;
        presenceChanged = { presence: p.presence, statusMsg: p.statusMsg, lastActiveTs: p.lastActiveTs, ping: !changed };
      }
    }
    const deadline = Date.now() + Math.max(0, Math.min(req.timeoutMs, MAX_TIMEOUT_MS));
    if (since !== undefined) this.a.inbox.acknowledge(req.deviceId, since);
    for (;;) {
      const delta = this.delta(req, since);
      if (since === undefined) log.markDevice(req.deviceId, stream.tokenPos(delta.nextBatch));
      if (since === undefined || req.fullState || delta.changed || Date.now() >= deadline) return { ok: true, value: { ...delta, presenceChanged } };
      // Nothing for this device yet: wait for the next push (or the deadline), then look again
      // from the same token (pushes for other devices wake us too).
      await stream.waitForPush(deadline - Date.now());
    }
  }

  /** The delta (since, Q] (see the header). */
  private delta(req: SyncRequest, since: number | undefined): SyncDelta {
    const { sql, stream, log, ephemeral, settings } = this.a;
    const from = since ?? 0;
    const td = this.a.inbox.toDeviceAfter(req.deviceId, from);
    const q = td.upTo ?? stream.pos;
    const toDevice = td.messages;
    const initial = since === undefined;

    // Rooms.
    const rooms: SyncRoomDelta[] = [];
    const roomIds = initial ? sql.exec<{ room_id: string }>("SELECT room_id FROM rooms").toArray().map((r) => r.room_id) : log.roomsChanged(from, q);
    const fullStateRooms = req.fullState && !initial ? sql.exec<{ room_id: string }>("SELECT room_id FROM rooms WHERE membership = 'join'").toArray().map((r) => r.room_id) : [];
    const all = new Set([...roomIds, ...fullStateRooms]);
    const threadsWanted = req.threadCounts;
    // Up to the current position, `rooms` already holds each room's membership and highest
    // stream (the newest membership_log entry and MAX(stream) of room_log): one read for all
    // rooms instead of two log scans per room — the log scans were a fifth of an initial sync
    // of 300 rooms × 300 members (docs/benchmarks.md).
    const current =
      q === stream.pos
        ? new Map(
            sql
              .exec<{ room_id: string; membership: string; member_stream: number; stream: number; inviter: string | null }>(
                "SELECT room_id, membership, member_stream, stream, inviter FROM rooms",
              )
              .toArray()
              .map((r) => [r.room_id, r]),
          )
        : undefined;
    // An initial sync: every room's receipts, unread counts and account data read together
    // (three statements instead of four per room).
    const batch = initial
      ? { receipts: ephemeral.receiptsByRoom(-1, q), unread: ephemeral.unreadRows(), accountData: settings.roomAccountDataByRoom(-1, q) }
      : undefined;
    const forgotten = new Map(
      sql.exec<{ room_id: string; member_stream: number }>("SELECT room_id, member_stream FROM forgotten_rooms").toArray().map((r) => [r.room_id, r.member_stream]),
    );
    for (const roomId of all) {
      const memAt = (p: number) =>
        sql.exec<{ membership: string; stream: number }>("SELECT membership, stream FROM membership_log WHERE room_id = ? AND upos <= ? ORDER BY upos DESC LIMIT 1", roomId, p).toArray()[0];
      const cur = current?.get(roomId);
      const nowM = cur ? { membership: cur.membership, stream: cur.member_stream } : memAt(q);
      if (!nowM) continue;
      if (forgotten.get(roomId) === nowM.stream) continue;
      const membership = nowM.membership as Membership;
      const upTo = cur ? cur.stream : (log.streamAt(roomId, q) ?? nowM.stream);
      let roomSince: number | null = null;
      let gap = false;
      if (!initial) {
        const thenM = memAt(from);
        // The stream the client had seen at the token (position-log.ts: below the compacted
        // floor the room may come as a gap).
        const seenAt = (): number | null => {
          const seen = log.seenAt(roomId, from);
          if (seen.gap) gap = true;
          return seen.stream;
        };
        if (membership === "leave" || membership === "ban") {
          // Already left before the token and my membership did not change since: skip.
          if (thenM && (thenM.membership === "leave" || thenM.membership === "ban") && thenM.stream === nowM.stream) continue;
          // Left (kicked, banned, rejected an invite) after the token: the events since then,
          // up to and including the leave. But a room joined and left within the batch is new
          // to the client as a joined room (it held at most the invite's stripped state): it
          // comes whole, with its full state (sytest "When user joins and leaves a room in the
          // same batch, the full state is still included in the next sync").
          if (thenM && !(thenM.membership !== "join" && this.joinedBetween(roomId, from, q))) roomSince = seenAt();
        } else if (membership === "join" && thenM?.membership === "join") {
          // Still joined (own profile changes are new member events of the same join).
          roomSince = seenAt();
        }
        // Otherwise newly joined, invited or knocking: the room is new to the client.
      } else if ((membership === "leave" || membership === "ban") && !req.includeLeave) continue;
      const inviter =
        membership === "invite"
          ? ((cur ? cur.inviter : sql.exec<{ inviter: string | null }>("SELECT inviter FROM rooms WHERE room_id = ?", roomId).toArray()[0]?.inviter) ?? undefined)
          : undefined;
      const counts = ephemeral.unreadCounts(roomId, threadsWanted, batch?.unread);
      rooms.push({
        roomId,
        membership,
        since: roomSince,
        upTo,
        gap: gap || undefined,
        newlyJoined: (!initial && roomSince === null && (membership === "join" || membership === "leave" || membership === "ban")) || undefined,
        inviter,
        unread: counts.main,
        threads: threadsWanted ? counts.threads : undefined,
        // A room new to the client gets all of its account data and receipts, not just changes.
        accountData: batch ? (batch.accountData.get(roomId) ?? []) : settings.accountDataSince(roomId, roomSince === null ? -1 : from, q),
        ephemeral: membership === "join" ? ephemeral.ephemeralSince(roomId, roomSince === null ? -1 : from, q, batch ? (batch.receipts.get(roomId) ?? []) : undefined) : [],
      });
    }

    const accountData = settings.accountDataSince("", initial ? -1 : from, q);
    // Clients read the ruleset from m.push_rules account data (Synapse always sends it).
    if (initial && !accountData.some((e) => e.type === "m.push_rules")) accountData.push({ type: "m.push_rules", content: { global: settings.ruleset() as unknown as JsonValue } });
    const presence = this.a.presence.since(initial ? -1 : from, q);
    const dl = this.a.inbox.deviceListsSince(from, q);
    const keys = this.a.inbox.keyCounts(req.deviceId);
    const changed = rooms.length > 0 || accountData.length > 0 || presence.length > 0 || toDevice.length > 0 || (!initial && dl.changed.length + dl.left.length > 0);
    return {
      nextBatch: stream.token(q),
      changed,
      rooms,
      accountData,
      presence,
      toDevice,
      // The user's own ID is included: their other devices must learn of a new or deleted
      // device of theirs (Rust crypto re-queries own keys only on this signal).
      deviceLists: dl,
      oneTimeKeyCounts: keys.oneTimeKeyCounts,
      fallbackKeyTypes: keys.fallbackKeyTypes,
      ignoredUsers: settings.ignoredUsers(),
    };
  }

  /** Whether I joined `roomId` at a position in (from, to] (membership_log is never compacted). */
  private joinedBetween(roomId: string, from: number, to: number): boolean {
    return this.a.sql.exec("SELECT 1 FROM membership_log WHERE room_id = ? AND upos > ? AND upos <= ? AND membership = 'join' LIMIT 1", roomId, from, to).toArray().length > 0;
  }
}

