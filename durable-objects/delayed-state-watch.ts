// The room's side of one MSC4140 rule: a user's scheduled delayed state event for (type, state
// key) is cancelled when someone else's state event for that key enters the room (the MSC's rule
// from October 2024 until 2026, when it moved to "Potential issues"; Synapse implements it).
// The DelayedEventsDO of the owner asks the room to watch the key when it schedules; the RoomDO
// calls `onState` after committing any state event (local or from another server) and tells the
// owners whose watch it hits, without waiting for them. A watch fires once (scheduling again
// sets it again); one that outlived its delayed event costs one no-op call.
import type { Env } from "../src/env";
import { parseConfig } from "../src/config";
import { delayedStub, type Placement } from "../src/rpc/stubs";

/** Part of the room's schema (durable-objects/room/schema.ts creates it with the room's tables). */
export const DELAYED_STATE_WATCH_SCHEMA = `
CREATE TABLE IF NOT EXISTS delayed_state_watch (type TEXT NOT NULL, state_key TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (type, state_key, user_id));`;

export class DelayedStateWatch {
  private placementMemo?: Placement;

  constructor(
    private sql: SqlStorage,
    private env: Env,
  ) {}

  /** Parsed when first needed: most room starts never tell an owner anything. */
  private get placement(): Placement {
    return (this.placementMemo ??= parseConfig(this.env));
  }

  /** Known to hold no watch (this object is the table's only writer): most rooms never have
   *  one, and every state event asked (six times per createRoom). */
  private none?: boolean;

  /** A room being created here holds no watch yet (LocalEvents.createRoom): its six state
   *  events need no lookup, which on a new object is a statement prepared for the first time. */
  holdsNone(): void {
    this.none = true;
  }

  watch(userId: string, type: string, stateKey: string): void {
    this.sql.exec("INSERT OR IGNORE INTO delayed_state_watch (type, state_key, user_id) VALUES (?, ?, ?)", type, stateKey, userId);
    this.none = false;
  }

  /** After a state event is committed. */
  onState(roomId: string, ev: { type: string; state_key?: string; sender: string }): void {
    if (ev.state_key === undefined) return;
    this.none ??= this.sql.exec("SELECT 1 FROM delayed_state_watch LIMIT 1").toArray().length === 0;
    if (this.none) return;
    const owners = this.sql
      .exec<{ user_id: string }>("SELECT user_id FROM delayed_state_watch WHERE type = ? AND state_key = ? AND user_id != ?", ev.type, ev.state_key, ev.sender)
      .toArray()
      .map((r) => r.user_id);
    if (!owners.length) return;
    this.sql.exec("DELETE FROM delayed_state_watch WHERE type = ? AND state_key = ? AND user_id != ?", ev.type, ev.state_key, ev.sender);
    for (const u of owners) {
      delayedStub(this.env, this.placement, u)
        .cancelForState(roomId, ev.type, ev.state_key, ev.sender)
        .catch((e) => console.warn(`delayed events of ${u}: state update not passed on: ${(e as Error).message}`));
    }
  }
}
