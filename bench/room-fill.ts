// Synthetic room history for the workerd benchmarks (conversations, search-profile,
// search-room): events written straight into a RoomDO's SQLite in the shape the write path
// stores them, because sending 100,000 events through the API takes hours on this machine.
import { env, runInDurableObject } from "cloudflare:test";

/** 52 words: a sentence of 8 matches "zephyr" about one time in seven. */
export const WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu apple banana cherry dragon eagle falcon garden harbor island jungle kettle lemon meadow needle ocean pepper quartz river saddle timber umbrella valley window yellow zephyr".split(" ");

export const roomObject = (roomId: string) => env.ROOMS.get(env.ROOMS.idFromName(roomId));

/** Sentences of 8 WORDS from a seeded generator (the same text on every run). */
export function sentences(seed = 7): () => string {
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  return () => Array.from({ length: 8 }, () => WORDS[Math.floor(rnd() * WORDS.length)]).join(" ");
}

/** Append `n` accepted events after the room's newest one, with its state; IDs `$bench<tag>_<i>`. */
export async function appendEvents(roomId: string, sender: string, make: (i: number) => { type: string; content: Record<string, unknown> }, n: number, tag: string): Promise<string[]> {
  return runInDurableObject(roomObject(roomId), async (inst, state) => {
    const sql = state.storage.sql;
    const last = sql.exec<{ stream: number; state_after: number; depth: number }>("SELECT stream, state_after, depth FROM events WHERE stream IS NOT NULL ORDER BY stream DESC LIMIT 1").one();
    const ids: string[] = [];
    const now = Date.now();
    for (let i = 0; i < n; i++) {
      const { type, content } = make(i);
      const id = `$bench${tag}_${i}`;
      const ts = now - (n - i) * 1000;
      const pdu = { type, content, sender, room_id: roomId, origin_server_ts: ts, depth: last.depth + 1 + i, prev_events: [], auth_events: [], hashes: { sha256: "x" }, signatures: {} };
      sql.exec(
        "INSERT INTO events (event_id, stream, depth, type, state_key, sender, origin_server_ts, pdu, status, state_before, state_after, received_ts) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, 'accepted', ?, ?, ?)",
        id, last.stream + 1 + i, last.depth + 1 + i, type, sender, ts, JSON.stringify(pdu), last.state_after, last.state_after, now,
      );
      ids.push(id);
    }
    // The room's stream position, in storage and in the running object, so /relations,
    // /messages and search start from the newest.
    sql.exec("UPDATE meta SET value = ? WHERE key = 'stream'", String(last.stream + n));
    (inst as unknown as { head: { stream: number } }).head.stream = last.stream + n;
    return ids;
  });
}

/** `n` m.text messages of `sentence()`. */
export const appendMessages = (roomId: string, sender: string, sentence: () => string, n: number, tag: string) =>
  appendEvents(roomId, sender, () => ({ type: "m.room.message", content: { msgtype: "m.text", body: sentence() } }), n, tag);
