// The hub's own stream of positions (docs/architecture.md, "Request flow"): every push that can
// change what a user's /sync returns takes the next position `pos`, and a sync token
// `s<pos>_<epoch>` names one. `epoch` is random per hub: a token from another user (or from a
// wiped hub) is refused, never silently reset. Also the long-poll: waiters that every push
// releases.

export interface Position {
  pos: number;
}

function randomEpoch(): string {
  const b = new Uint8Array(6);
  crypto.getRandomValues(b);
  return [...b].map((x) => x.toString(36).padStart(2, "0")).join("").slice(0, 8);
}

export class HubStream {
  readonly epoch: string;
  private current: number;
  /** While set, next() leaves persisting `pos` to batch() (once per batch, not per notice). */
  private deferred = false;
  private waiters = new Set<() => void>();
  private sql: SqlStorage;
  /** The meta table as read at start (modules read their own keys from it once). */
  readonly initialMeta: Map<string, string>;

  constructor(private storage: DurableObjectStorage) {
    this.sql = storage.sql;
    this.initialMeta = new Map(this.sql.exec<{ key: string; value: string }>("SELECT key, value FROM meta").toArray().map((r) => [r.key, r.value]));
    this.epoch = this.initialMeta.get("epoch") ?? randomEpoch();
    if (!this.initialMeta.has("epoch")) this.setMeta("epoch", this.epoch);
    this.current = Number(this.initialMeta.get("pos") ?? "0");
  }

  /** The newest position taken. */
  get pos(): number {
    return this.current;
  }

  setMeta(key: string, value: string | number): void {
    this.sql.exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", key, String(value));
  }

  getMeta(key: string): string | undefined {
    return this.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", key).toArray()[0]?.value;
  }

  /** Take the next position of this user's stream. */
  next(): number {
    this.current++;
    if (!this.deferred) this.setMeta("pos", this.current);
    return this.current;
  }

  transaction<T>(fn: () => T): T {
    return this.storage.transactionSync(fn);
  }

  /** `fn` in one storage transaction that may take many positions: `pos` is written once at
   *  the end, and a rollback takes back the positions taken. */
  batch(fn: () => void): void {
    const pos0 = this.current;
    try {
      this.storage.transactionSync(() => {
        this.deferred = true;
        fn();
        this.deferred = false;
        if (this.current !== pos0) this.setMeta("pos", this.current);
      });
    } catch (e) {
      // Rolled back: so are the positions taken.
      this.current = pos0;
      throw e;
    } finally {
      this.deferred = false;
    }
  }

  /** Release every waiting /sync (they re-check what changed for them). */
  wake(): void {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  /** Resolves at the next push to this hub (any device's) or after `ms`, whichever is first. */
  waitForPush(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(done, Math.max(0, ms));
      const waiters = this.waiters;
      function done() {
        clearTimeout(t);
        waiters.delete(done);
        resolve();
      }
      waiters.add(done);
    });
  }

  token(pos: number): string {
    return `s${pos}_${this.epoch}`;
  }

  /** Position of a token this hub issued. */
  tokenPos(t: string): number {
    return Number(/^s(\d+)_/.exec(t)![1]);
  }

  /** Parse a since token: position, or an error for malformed/foreign/future tokens. */
  parseToken(t: string): Position | { error: string } {
    const m = /^s(\d{1,15})_([0-9a-z]+)$/.exec(t);
    if (!m) return { error: "Malformed since token" };
    if (m[2] !== this.epoch) return { error: "The since token was not issued to this user (or this server's sync state was reset): start again with an initial sync" };
    const pos = Number(m[1]);
    if (pos > this.current) return { error: "The since token is from the future" };
    return { pos };
  }
}
