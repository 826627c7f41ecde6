// Addressing the Durable Objects: one function each for a room's, a user's (sync hub) and a
// destination server's (sender) object, with the configured jurisdiction and location hint
// applied here only (README "Data residency").
//
// The stub types name the RPC methods the Worker calls. They are taken from the classes through
// the bindings in src/env.ts (the one place that references the Durable Object classes), so this
// module and its importers never import a Durable Object module. (Typed as a Pick of the class:
// the generated RPC stub types recurse too deeply over JsonObject — "type instantiation is
// excessively deep".)
import type { Env } from "../env";
import type { Config } from "../config";

type BoundClass<K extends "ROOMS" | "USERS" | "FEDERATION_SENDER" | "PUSHERS" | "DELAYED_EVENTS"> = Env[K] extends DurableObjectNamespace<infer T> ? T : never;
type RoomDO = BoundClass<"ROOMS">;
type UserDO = BoundClass<"USERS">;
type SenderDO = BoundClass<"FEDERATION_SENDER">;
type PusherDO = BoundClass<"PUSHERS">;
type DelayedEventsDO = BoundClass<"DELAYED_EVENTS">;

export type Placement = Pick<Config, "jurisdiction" | "locationHint">;

/** The object named `name` in `ns`, in the configured jurisdiction, first placed near the
 *  configured location hint. */
function addressed<T extends Rpc.DurableObjectBranded | undefined>(ns: DurableObjectNamespace<T>, placement: Placement, name: string): DurableObjectStub<T> {
  const inJurisdiction = placement.jurisdiction ? ns.jurisdiction(placement.jurisdiction) : ns;
  return inJurisdiction.get(inJurisdiction.idFromName(name), placement.locationHint ? { locationHint: placement.locationHint } : undefined);
}

/** The RoomDO's RPC surface as the Worker calls it. */
export type RoomStub = Pick<
  RoomDO,
  | "createRoom"
  | "createLocalEvent"
  | "admit"
  | "expectJoin"
  | "heldAmong"
  | "joinSettled"
  | "getRoomVersion"
  | "getSummary"
  | "getCurrentStateEvent"
  | "getCurrentState"
  | "getCurrentStateOfType"
  | "getMembership"
  | "canSend"
  | "getPowerInfo"
  | "getState"
  | "getStateEvent"
  | "getEventForClient"
  | "threadEventInfo"
  | "getMembers"
  | "getJoinedMembers"
  | "getJoinedUserIds"
  | "getRemoteServers"
  | "getResidency"
  | "getMessages"
  | "getContext"
  | "peekEvents"
  | "getRelations"
  | "getThreads"
  | "hasAnnotation"
  | "searchEvents"
  | "timestampToEvent"
  | "fedTimestampToEvent"
  | "getStrippedState"
  | "getPdu"
  | "getForwardExtremities"
  // Federation (src/api/federation/rooms.ts, src/services/federation/membership.ts).
  | "fedTemplate"
  | "fedSendMembership"
  | "fedStateAt"
  | "fedEventAuth"
  | "fedEvent"
  | "fedBackfill"
  | "fedMissingEvents"
  | "storeRemoteMembership"
  | "getPartialInfo"
  // Partial-state joins (src/services/federation/partial-state.ts).
  | "isPartialState"
  | "awaitFullState"
  | "kickPartialStateSync"
  | "seedFromJoin"
  | "admitOutliers"
  | "admitWithStates"
  | "getBackfillPoints"
  | "admitBackfill"
  | "prepareLocalEvent"
  // Per-user read rules: POST /forget, erasure on deactivation.
  | "forget"
  | "eraseSender"
  // Admin API (src/services/admin-rooms.ts).
  | "purge"
  | "mediaInRoom"
  | "watchDelayedState"
>;

/** The room's Durable Object, named by room ID. */
export function roomStub(env: Env, config: Placement, roomId: string): RoomStub {
  return addressed(env.ROOMS, config, roomId) as unknown as RoomStub;
}

/** The sync hub's RPC surface. */
export type UserStub = Pick<
  UserDO,
  | "roomEvent"
  | "roomEvents"
  | "typing"
  | "receipt"
  | "setAccountData"
  | "getAccountData"
  | "createFilter"
  | "getFilter"
  | "getPushRules"
  | "putPushRule"
  | "deletePushRule"
  | "setPushRuleAttr"
  | "notifications"
  | "setPresence"
  | "presenceOf"
  | "getPresence"
  | "pushToDevice"
  | "deviceListChanged"
  | "deviceListsChanged"
  | "roomStateCompleted"
  | "deviceListChanges"
  | "roomPosition"
  | "setDeviceKeyCounts"
  | "deleteDevice"
  | "setPushers"
  | "getRooms"
  | "currentToken"
  | "sync"
  | "settleLazyMembers"
  | "compactLog"
  | "forgetRoom"
  // MSC4306 / MSC4308 (src/api/client/thread-subscriptions.ts).
  | "getThreadSubscription"
  | "subscribeThread"
  | "unsubscribeThread"
  | "threadSubscriptionPage"
  | "accountDeactivated"
>;

/** A local user's hub (durable-objects/user.ts), named by user ID. (Arguments in this order for
 *  its many existing callers.) */
export function userStub(env: Env, userId: string, config: Placement): UserStub {
  return addressed(env.USERS, config, userId) as unknown as UserStub;
}

/** The outbound queue's RPC surface. */
export type SenderStub = Pick<SenderDO, "enqueue" | "wake" | "status">;

/** The outbound transaction queue for one destination server (durable-objects/sender.ts). */
export function senderStub(env: Env, config: Placement, destination: string): SenderStub {
  return addressed(env.FEDERATION_SENDER, config, destination) as unknown as SenderStub;
}

/** One pusher's delivery queue (durable-objects/pusher.ts). */
export type PusherStub = Pick<PusherDO, "enqueue" | "drop" | "status">;

/** The queue of the pusher (user, app_id, pushkey); named by a JSON array, so no separator can be
 *  forged by a pushkey. */
export function pusherStub(env: Env, config: Placement, userId: string, appId: string, pushkey: string): PusherStub {
  return addressed(env.PUSHERS, config, JSON.stringify([userId, appId, pushkey])) as unknown as PusherStub;
}

/** A user's delayed events (durable-objects/delayed-events.ts, MSC4140). */
export type DelayedStub = Pick<DelayedEventsDO, "schedule" | "update" | "list" | "listFinalised" | "get" | "cancelForState">;

export function delayedStub(env: Env, config: Placement, userId: string): DelayedStub {
  return addressed(env.DELAYED_EVENTS, config, userId) as unknown as DelayedStub;
}
