import { Hono } from "hono";
import type { AppEnv } from "./api/types";
export { RoomDO } from "../durable-objects/room";
export { RateLimiterDO } from "../durable-objects/rate-limiter";

const app = new Hono<AppEnv>();
export default app;
