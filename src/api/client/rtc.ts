// MatrixRTC transport discovery (MSC4143; LiveKit transport MSC4195): clients ask the homeserver
// which SFU to use. Lattice offers one LiveKit focus, RTC_FOCUS_URL: the URL of the LiveKit JWT
// service (lk-jwt-service), which exchanges a Matrix OpenID token for a LiveKit token.
//   GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports (and /v1/rtc/transports)
//     → {"rtc_transports": [{"type": "livekit", "livekit_service_url": ...}]}
// The same focus is in /.well-known/matrix/client as "org.matrix.msc4143.rtc_foci" (MSC4158),
// where older clients look (src/api/client/discovery.ts).
import { Hono } from "hono";
import type { AppEnv } from "../types";
import type { Config } from "../../config";
import { requireAuth } from "../middleware/auth";

export function rtcTransports(config: Config): { type: string; livekit_service_url: string }[] {
  return config.rtcFocusUrl ? [{ type: "livekit", livekit_service_url: config.rtcFocusUrl }] : [];
}

export const rtc = new Hono<AppEnv>();
rtc.get("/rtc/transports", requireAuth, (c) => c.json({ rtc_transports: rtcTransports(c.var.config) }));
