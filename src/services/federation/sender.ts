// Worker-side API of the outbound transaction queues (durable-objects/sender.ts, one SenderDO
// per destination). Other code calls:
//   enqueuePdu(env, config, destinations, pdu)   after a local event is committed (the RoomDO fan-out, durable-objects/room/fanout.ts notify)
//   enqueueEdu(env, config, destination, edu)    typing, receipts, presence, device lists, to-device
//   onInboundFromServer(env, config, origin)     (the federation auth middleware does this)
import type { Env } from "../../env";
import type { Config } from "../../config";
import type { Edu, SenderStatus } from "../../rpc/sender";
import { isValidServerName } from "../../core/ids";

export { senderStub, type SenderStub } from "../../rpc/stubs";
import { senderStub } from "../../rpc/stubs";

function remote(config: Config, destinations: Iterable<string>): string[] {
  return [...new Set(destinations)].filter((d) => d !== config.serverName && isValidServerName(d));
}

/** Queue one PDU (federation format: the signed event, no `unsigned`) for each destination. */
export async function enqueuePdu(env: Env, config: Config, destinations: Iterable<string>, pdu: Record<string, unknown>): Promise<void> {
  const { unsigned: _u, ...wire } = pdu;
  await Promise.all(remote(config, destinations).map((d) => senderStub(env, config, d).enqueue(config.serverName, d, [wire], [])));
}

/** Queue one EDU for one destination. */
export async function enqueueEdu(env: Env, config: Config, destination: string, edu: Edu): Promise<void> {
  if (remote(config, [destination]).length === 0) return;
  await senderStub(env, config, destination).enqueue(config.serverName, destination, [], [edu]);
}

const lastWake = new Map<string, number>();
const WAKE_THROTTLE_MS = 60_000;

/** An authenticated request arrived from `origin`: if we had it marked down, resume sending.
 *  Throttled per isolate so that busy peers do not wake their SenderDO on every request. */
export async function onInboundFromServer(env: Env, config: Config, origin: string): Promise<void> {
  const now = Date.now();
  const last = lastWake.get(origin);
  if (last !== undefined && now - last < WAKE_THROTTLE_MS) return;
  if (lastWake.size > 10_000) lastWake.clear();
  lastWake.set(origin, now);
  await senderStub(env, config, origin).wake();
}

export async function senderStatus(env: Env, config: Config, destination: string): Promise<SenderStatus> {
  return senderStub(env, config, destination).status();
}
