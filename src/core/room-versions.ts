// Room versions 1–12 and the properties each algorithm needs (spec: "Room Versions").

export type StateResAlgorithm = "v1" | "v2" | "v2.1";

export interface RoomVersion {
  id: string;
  /** Lattice can create rooms of this version (all of 1–12; docs/architecture.md "Rooms"). */
  creatable: boolean;
  /** Event ID format: 1 = `$opaque:server` in the PDU; 2 = `$`+standard base64 reference hash (v3);
   *  3 = `$`+URL-safe base64 reference hash (v4+). */
  eventIdFormat: 1 | 2 | 3;
  stateRes: StateResAlgorithm;
  /** v5+: a signing key's `valid_until_ts` must cover the event's origin_server_ts. */
  enforceKeyValidity: boolean;
  /** v1–v5: m.room.aliases has its own auth rule and redaction keeps `aliases`. */
  specialCaseAliases: boolean;
  /** v6+: canonical JSON must be strict (integers in [-(2^53)+1, 2^53-1], no floats). */
  strictCanonicalJson: boolean;
  /** v6+: the `notifications` key of m.room.power_levels is checked by auth rules. */
  limitNotificationsPowerLevels: boolean;
  /** v7+: `knock` membership and join rule. */
  knocking: boolean;
  /** v8+: `restricted` join rule with `join_authorised_via_users_server`. */
  restrictedJoins: boolean;
  /** v10+: `knock_restricted` join rule. */
  knockRestricted: boolean;
  /** v10+: power level values must be integers (not strings). */
  integerPowerLevels: boolean;
  /** v11+: the updated redaction algorithm (create keeps all content, PL keeps `invite`,
   *  `redacts` moves into content) and no `creator` in the create event (sender is the creator). */
  v11Redaction: boolean;
  /** v11+: the room creator is the create event's sender (no `content.creator`). */
  implicitCreator: boolean;
  /** v12+: room ID is derived from the create event's reference hash; the create event has no
   *  room_id and is not listed in auth_events; creators (sender + additional_creators) have
   *  infinite power level. */
  roomIdFromCreate: boolean;
  privilegedCreators: boolean;
}

const base: Omit<RoomVersion, "id"> = {
  creatable: true,
  eventIdFormat: 1,
  stateRes: "v1",
  enforceKeyValidity: false,
  specialCaseAliases: true,
  strictCanonicalJson: false,
  limitNotificationsPowerLevels: false,
  knocking: false,
  restrictedJoins: false,
  knockRestricted: false,
  integerPowerLevels: false,
  v11Redaction: false,
  implicitCreator: false,
  roomIdFromCreate: false,
  privilegedCreators: false,
};

const v1: RoomVersion = { ...base, id: "1" };
const v2: RoomVersion = { ...v1, id: "2", stateRes: "v2" };
const v3: RoomVersion = { ...v2, id: "3", eventIdFormat: 2 };
const v4: RoomVersion = { ...v3, id: "4", eventIdFormat: 3 };
const v5: RoomVersion = { ...v4, id: "5", enforceKeyValidity: true };
const v6: RoomVersion = {
  ...v5,
  id: "6",
  specialCaseAliases: false,
  strictCanonicalJson: true,
  limitNotificationsPowerLevels: true,
};
const v7: RoomVersion = { ...v6, id: "7", knocking: true };
const v8: RoomVersion = { ...v7, id: "8", restrictedJoins: true };
const v9: RoomVersion = { ...v8, id: "9" }; // redaction keeps join_authorised_via_users_server
const v10: RoomVersion = { ...v9, id: "10", knockRestricted: true, integerPowerLevels: true };
const v11: RoomVersion = { ...v10, id: "11", v11Redaction: true, implicitCreator: true };
const v12: RoomVersion = {
  ...v11,
  id: "12",
  stateRes: "v2.1",
  roomIdFromCreate: true,
  privilegedCreators: true,
};

export const ROOM_VERSIONS: ReadonlyMap<string, RoomVersion> = new Map(
  [v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12].map((v) => [v.id, v]),
);

/** The spec recommends room version 12 as the default for new rooms. */
export const DEFAULT_ROOM_VERSION = "12";

export function getRoomVersion(id: string): RoomVersion | undefined {
  return ROOM_VERSIONS.get(id);
}

/** Numeric comparison helper for rules phrased "from version N on". */
export function versionAtLeast(rv: RoomVersion, n: number): boolean {
  return Number(rv.id) >= n;
}
