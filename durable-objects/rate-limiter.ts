import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";

export class RateLimiterDO extends DurableObject<Env> {}
