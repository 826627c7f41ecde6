// The hub's E2EE inbox (modules "Send-to-Device messaging" and "End-to-End Encryption"): what the
// E2EE work pushes here and /sync hands to each device.
//
//   pushToDevice(userId, deviceIds, messages)   queue to-device messages for the given devices
//                                               (the caller expands "*" to the user's devices)
//   deviceListChanged(userId, changedUserId)    a user's devices/cross-signing keys changed
//                                               (or they now share an encrypted room)
//   setDeviceKeyCounts(userId, deviceId, counts, fallbackTypes)
//                                               current one-time key counts per algorithm
//                                               and unused fallback key algorithms
//   deleteDevice(userId, deviceId)              drop a deleted device's inbox and counts
// Each call wakes the user's long-polling syncs. Device-list changes that follow from
// memberships (someone joins or leaves an encrypted room of mine; "left" entries) come from
// fan-in.ts.
import type { Env } from "../../src/env";
import type { JsonObject } from "../../src/core/types";
import type { HubResult } from "../../src/rpc/user";
import type { Position } from "./stream";
import { noLongerSharingRoom } from "../../src/services/e2ee/device-list-stream";
import { membersNoLongerShared, otherMembers } from "../../src/db/memberships";

/** To-device messages per /sync response (the rest come in the next one). */
const TO_DEVICE_BATCH = 100;

/** Device-list work a membership notice implies (see afterMembership). */
export type DeviceListFollowUp = { kind: "i-joined" | "i-left"; roomId: string } | { kind: "they-left"; roomId: string; userId: string };

/** What the inbox needs from the hub. */
export interface E2eeInboxAccess {
  sql: SqlStorage;
  /** For the D1 membership mirror (who shares a room with whom). */
  env: Env;
  transaction<T>(fn: () => T): T;
  next(): number;
  wake(): void;
  parseToken(t: string): Position | { error: string };
  /** Oldest position the logs still answer from (position-log.ts). */
  logFloor(): number;
}

/** A type alias, not an interface: it must stay assignable to JsonObject (SyncDelta.toDevice). */
export type ToDeviceMessage = {
  sender: string;
  type: string;
  content: JsonObject;
};

export class E2eeInbox {
  constructor(private a: E2eeInboxAccess) {}

  pushToDevice(deviceIds: string[], messages: ToDeviceMessage[]): void {
    if (deviceIds.length === 0 || messages.length === 0) return;
    this.a.transaction(() => {
      for (const d of deviceIds) {
        for (const m of messages) {
          const upos = this.a.next();
          this.a.sql.exec("INSERT INTO to_device (device_id, upos, sender, type, content) VALUES (?, ?, ?, ?, ?)", d, upos, m.sender, m.type, JSON.stringify(m.content));
        }
      }
    });
    this.a.wake();
  }

  /** To-device messages before the token were delivered: acknowledge (delete) them. (Checked
   *  first: a write holds the response until storage confirms it, so do not write when there
   *  is nothing to delete.) */
  acknowledge(deviceId: string, since: number): void {
    if (this.a.sql.exec("SELECT 1 FROM to_device WHERE device_id = ? AND upos <= ? LIMIT 1", deviceId, since).toArray().length) {
      this.a.sql.exec("DELETE FROM to_device WHERE device_id = ? AND upos <= ?", deviceId, since);
    }
  }

  /** The device's messages after `from`, oldest first, at most TO_DEVICE_BATCH; `upTo` is the
   *  position of the last one when the batch was capped (the response must stop there). Module
   *  "Send-to-Device messaging": "...server should ... deliver ... once". */
  toDeviceAfter(deviceId: string, from: number): { messages: ToDeviceMessage[]; upTo?: number } {
    const td = this.a.sql
      .exec<{ upos: number; sender: string; type: string; content: string }>(
        "SELECT upos, sender, type, content FROM to_device WHERE device_id = ? AND upos > ? ORDER BY upos LIMIT ?",
        deviceId,
        from,
        TO_DEVICE_BATCH + 1,
      )
      .toArray();
    let upTo: number | undefined;
    if (td.length > TO_DEVICE_BATCH) {
      td.length = TO_DEVICE_BATCH;
      upTo = td[td.length - 1].upos;
    }
    return { messages: td.map((m) => ({ sender: m.sender, type: m.type, content: JSON.parse(m.content) as JsonObject })), upTo };
  }

  deviceListChanged(changedUserId: string): void {
    this.a.transaction(() => this.recordDeviceList(changedUserId, this.a.next(), false));
    this.a.wake();
  }

  /** Many at one position, in one transaction. */
  deviceListsChanged(changedUserIds: string[]): void {
    this.a.transaction(() => {
      const upos = this.a.next();
      for (const u of changedUserIds) this.recordDeviceList(u, upos, false);
    });
    this.a.wake();
  }

  deviceListLeft(leftUserId: string): void {
    this.a.transaction(() => this.recordDeviceList(leftUserId, this.a.next(), true));
    this.a.wake();
  }

  /** A device-list entry at `upos`: `device_lists` keeps the latest per user (what /sync
   *  reports), `device_list_log` every one (what GET /keys/changes reports between two tokens). */
  recordDeviceList(user: string, upos: number, left: boolean): void {
    const l = left ? 1 : 0;
    this.a.sql.exec("INSERT INTO device_lists (user_id, upos, left) VALUES (?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET upos = excluded.upos, left = excluded.left", user, upos, l);
    this.a.sql.exec("INSERT OR REPLACE INTO device_list_log (upos, user_id, left) VALUES (?, ?, ?)", upos, user, l);
  }

  /** /sync's device_lists for (from, q]: the latest entry per user decides. */
  deviceListsSince(from: number, q: number): { changed: string[]; left: string[] } {
    const dl = this.a.sql.exec<{ user_id: string; left: number }>("SELECT user_id, left FROM device_lists WHERE upos > ? AND upos <= ?", from, q).toArray();
    return { changed: dl.filter((r) => !r.left).map((r) => r.user_id), left: dl.filter((r) => r.left).map((r) => r.user_id) };
  }

  /** GET /keys/changes between two of this user's sync tokens (module "End-to-End
   *  Encryption", "Tracking the device list for a user": the users whose device lists changed,
   *  or who came to share an encrypted room, after `from` and up to `to` — exactly what the
   *  `device_lists` of the /sync responses in between carried; `left` likewise). A user's last
   *  entry in the range decides between changed and left. */
  deviceListChanges(from: string, to: string): HubResult<{ changed: string[]; left: string[] }> {
    const f = this.a.parseToken(from);
    if ("error" in f) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: `from: ${f.error}` };
    const t = this.a.parseToken(to);
    if ("error" in t) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: `to: ${t.error}` };
    // Below the floor only the newest entry per user is kept: still exact for any `from` as long
    // as `to` is at or above the floor (a user's newest entry up to the floor stands for all of
    // theirs there), not when both tokens are below it.
    if (f.pos < this.a.logFloor() && t.pos < this.a.logFloor()) {
      return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: "to: this sync token is too old; do an initial sync (without since) and query the keys of all tracked users" };
    }
    const last = new Map<string, boolean>();
    for (const r of this.a.sql.exec<{ user_id: string; left: number }>("SELECT user_id, left FROM device_list_log WHERE upos > ? AND upos <= ? ORDER BY upos", f.pos, t.pos)) {
      last.set(r.user_id, r.left === 1);
    }
    const changed = [...last].filter(([, l]) => !l).map(([u]) => u).sort();
    const left = [...last].filter(([, l]) => l).map(([u]) => u).sort();
    return { ok: true, value: { changed, left } };
  }

  /** Device lists after a membership change in an encrypted room (module "End-to-End
   *  Encryption", "Tracking the device list for a user" and the /sync `device_lists` field:
   *  `changed` = "users who ... now share an encrypted room with the client", `left` = "users
   *  with whom we do not share any encrypted rooms anymore"). "Sharing a room" is the same
   *  relation the device-list fan-out uses (src/db/memberships.ts: I am joined, they are joined or
   *  invited), read from the D1 membership mirror, which the RoomDO updates before notifying. A
   *  failed lookup is logged: device lists are then conservative (no `left`), never wrong. */
  async afterMembership(me: string, f: DeviceListFollowUp): Promise<void> {
    let users: string[] = [];
    try {
      if (f.kind === "they-left") users = await noLongerSharingRoom(this.a.env, me, [f.userId]);
      else if (f.kind === "i-left") {
        // Members of the room I left with whom I no longer share any room.
        users = await membersNoLongerShared(this.a.env.DB, f.roomId, me);
      } else {
        users = await otherMembers(this.a.env.DB, f.roomId, me);
      }
    } catch (e) {
      console.error(`device-list lookup for ${me} failed`, e);
      return;
    }
    if (users.length === 0) return;
    const left = f.kind !== "i-joined";
    this.a.transaction(() => {
      const upos = this.a.next();
      for (const u of users) {
        this.recordDeviceList(u, upos, left);
      }
    });
    this.a.wake();
  }

  setDeviceKeyCounts(deviceId: string, counts: Record<string, number>, fallbackTypes: string[]): void {
    this.a.sql.exec(
      "INSERT INTO device_keys (device_id, otk_counts, fallback_types) VALUES (?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET otk_counts = excluded.otk_counts, fallback_types = excluded.fallback_types",
      deviceId,
      JSON.stringify(counts),
      JSON.stringify(fallbackTypes),
    );
    this.a.next();
    this.a.wake();
  }

  /** device_one_time_keys_count and device_unused_fallback_key_types of one device. */
  keyCounts(deviceId: string): { oneTimeKeyCounts: Record<string, number>; fallbackKeyTypes: string[] } {
    const keys = this.a.sql.exec<{ otk_counts: string; fallback_types: string }>("SELECT otk_counts, fallback_types FROM device_keys WHERE device_id = ?", deviceId).toArray()[0];
    return { oneTimeKeyCounts: keys ? JSON.parse(keys.otk_counts) : {}, fallbackKeyTypes: keys ? JSON.parse(keys.fallback_types) : [] };
  }

  /** A deleted device: its inbox and key counts go. */
  deleteDevice(deviceId: string): void {
    this.a.sql.exec("DELETE FROM to_device WHERE device_id = ?", deviceId);
    this.a.sql.exec("DELETE FROM device_keys WHERE device_id = ?", deviceId);
  }
}
