// RoomDO: one per room, the only writer of that room's events. OWNER: rooms helper.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";

export class RoomDO extends DurableObject<Env> {}
