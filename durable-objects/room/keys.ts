// The keys signatures are made and checked with: this server's signing key (from D1, once per
// instance) and other servers' verify keys through the federation key ring, with a short memo
// so a 10,000-event send_join answer does not ask D1 per event. Used by the writer's signature
// step (PduChecks.checkSignatures, room/pdu-checks.ts) and by whoever signs (local events, co-signed joins).
import type { Env } from "../../src/env";
import type { Config } from "../../src/config";
import type { SigningKey } from "../../src/core/signing";
import type { PDU } from "../../src/core/types";
import { domainOf } from "../../src/core/ids";
import { getServerSigningKey } from "../../src/services/server-key";
import { getVerifyKey, vouchedKey, type VerifyKey } from "../../src/services/federation/keys";
import type { RoomHead } from "./core";

/** What RoomKeys needs from the rest of the room (wired in durable-objects/room.ts). */
export interface RoomKeysAccess {
  head: RoomHead;
  env: Env;
  /** The configuration, parsed once per instance, with this room's server name. */
  config(): Config;
}

export class RoomKeys {
  constructor(private readonly r: RoomKeysAccess) {}

  private keyPromise?: Promise<SigningKey>;

  signingKey(): Promise<SigningKey> {
    if (!this.keyPromise) {
      this.keyPromise = getServerSigningKey(this.r.env, this.r.config()).catch((e) => {
        this.keyPromise = undefined;
        throw e;
      });
    }
    return this.keyPromise;
  }

  /** Public key for a server's key ID. Our own keys come from D1; remote keys from
   *  src/services/federation/keys.ts (getVerifyKey: cache, key query, notaries). `via`: the
   *  server that sent us the event being checked (a join's resident server), asked as a notary
   *  when the key ring has nothing (vouchedKey; not memoised here: it vouches for its events only). */
  async verifyKey(server: string, keyId: string, ts?: number, via?: string): Promise<string | undefined> {
    if (server === this.r.head.serverName) {
      const k = await this.signingKey();
      if (k.keyId === keyId) return k.publicKey;
      const row = await this.r.env.DB.prepare("SELECT public_key FROM server_signing_keys WHERE key_id = ?").bind(keyId).first<{ public_key: string }>();
      return row?.public_key;
    }
    // Remote keys: the federation key ring (cache, then the server itself, then notaries). A
    // short-lived memo keeps a 10,000-event send_join answer from asking D1 per event; the
    // validity rule is the key ring's (valid_until_ts covers ts; an old key until it expired).
    const memoKey = `${server}\u0000${keyId}`;
    const hit = this.keyMemo.get(memoKey);
    if (hit && hit.until > Date.now() && (ts === undefined || (hit.k.validUntilTs >= ts && (hit.k.expiredTs === undefined || hit.k.expiredTs > ts)))) return hit.k.publicKey;
    const ctx = { env: this.r.env, config: this.r.config() };
    const k = await getVerifyKey(ctx, server, keyId, { purpose: "event", ts });
    if (k) {
      if (this.keyMemo.size > 1024) this.keyMemo.clear();
      this.keyMemo.set(memoKey, { k, until: Date.now() + 60_000 });
    }
    if (!k && via) return (await vouchedKey(ctx, via, server, keyId, { purpose: "event", ts }))?.publicKey;
    return k?.publicKey;
  }
  private keyMemo = new Map<string, { k: VerifyKey; until: number }>();

  /** The servers among the senders of `pdus` for none of whose ed25519 keys (the key IDs their
   *  signatures name) a public key can be had now: their server, the notaries, and `sentBy`
   *  (the server the events came from, see verifyKey) could not give one (the key ring then
   *  waits before asking again). At most 50 servers are asked. */
  async signersWithoutKeys(pdus: PDU[], sentBy?: string): Promise<string[]> {
    const keyIds = new Map<string, Set<string>>();
    for (const p of pdus) {
      if (typeof p.sender !== "string" || !p.sender.includes(":")) continue;
      const server = domainOf(p.sender);
      const sigs = p.signatures?.[server];
      if (!sigs || typeof sigs !== "object") continue;
      let ids = keyIds.get(server);
      if (!ids) keyIds.set(server, (ids = new Set()));
      for (const id of Object.keys(sigs)) if (id.startsWith("ed25519:")) ids.add(id);
    }
    const out: string[] = [];
    for (const [server, ids] of [...keyIds].slice(0, 50)) {
      let found = false;
      for (const id of [...ids].slice(0, 5)) {
        if (await this.verifyKey(server, id, undefined, sentBy)) {
          found = true;
          break;
        }
      }
      if (!found) out.push(server);
    }
    return out;
  }
}
