// Server discovery and feature advertisement: /.well-known, /versions, /capabilities.
import { Hono } from "hono";
import type { AppEnv } from "../types";
import { requireAuth } from "../middleware/auth";
import { ROOM_VERSIONS, DEFAULT_ROOM_VERSION } from "../../core/room-versions";
import { rtcTransports } from "./rtc";
import { mayGetLoginToken } from "./login-token";
import { DELAYED_EVENTS_CAPABILITY } from "./delayed-events";

/** Spec versions we advertise: only those whose required endpoints Lattice actually serves.
 *  Raise this as areas land (see docs/conformance.md). */
export const SUPPORTED_SPEC_VERSIONS = ["r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1", "v1.1"];

export const wellKnown = new Hono<AppEnv>();
wellKnown.get("/.well-known/matrix/client", (c) => {
  const foci = rtcTransports(c.var.config);
  return c.json({ "m.homeserver": { base_url: c.var.config.publicBaseUrl }, ...(foci.length ? { "org.matrix.msc4143.rtc_foci": foci } : {}) });
});
wellKnown.get("/.well-known/matrix/server", (c) => {
  // Delegation target for federation: the Worker itself on port 443 unless a port is in the name.
  const host = new URL(c.var.config.publicBaseUrl).host;
  return c.json({ "m.server": host.includes(":") ? host : `${host}:443` });
});

// GET /.well-known/matrix/support (spec "Server support discovery"): from SUPPORT_CONTACTS and
// SUPPORT_PAGE; 404 when neither is configured.
wellKnown.get("/.well-known/matrix/support", (c) => {
  const { contacts, supportPage } = c.var.config.support;
  if (contacts.length === 0 && !supportPage) return c.json({ errcode: "M_NOT_FOUND", error: "No support information configured" }, 404);
  const out: { contacts?: typeof contacts; support_page?: string } = {};
  if (contacts.length) out.contacts = contacts;
  if (supportPage) out.support_page = supportPage;
  return c.json(out);
});

export const versions = new Hono<AppEnv>();
/** MSC3916 (authenticated media, stable in v1.11): tells clients that do not yet see "v1.11" above
 *  to use /_matrix/client/v1/media, since the unauthenticated media endpoints are frozen by
 *  default (docs/media.md). */
const UNSTABLE_FEATURES = {
  "org.matrix.msc3916.stable": true,
  "org.matrix.msc4140": true,
  // Threads (MSC3440), the thread list (MSC3856) and /relations `dir` (MSC3715), all stable in
  // v1.4, which we do not advertise yet: matrix-js-sdk looks for these flags instead.
  "org.matrix.msc3440.stable": true,
  "org.matrix.msc3856.stable": true,
  "org.matrix.msc3715.stable": true,
  // Mutual rooms (MSC2666, stable in v1.19).
  "uk.half-shot.msc2666.query_mutual_rooms": true,
  // Simplified Sliding Sync (MSC4186), src/api/client/sliding-sync.ts.
  "org.matrix.simplified_msc3575": true,
  // QR-code sign-in rendezvous (MSC4108), src/api/client/rendezvous.ts; the new device signs in
  // with the OAuth device authorization grant (src/api/client/oauth/device.ts).
  "org.matrix.msc4108": true,
};
versions.get("/versions", (c) => {
  // Thread subscriptions (MSC4306, src/api/client/thread-subscriptions.ts) when configured on.
  const unstable_features = c.var.config.threadSubscriptions ? { ...UNSTABLE_FEATURES, "org.matrix.msc4306": true } : UNSTABLE_FEATURES;
  return c.json({ versions: SUPPORTED_SPEC_VERSIONS, unstable_features });
});

export const capabilities = new Hono<AppEnv>();
capabilities.get("/capabilities", requireAuth, async (c) => {
  const available: Record<string, "stable" | "unstable"> = {};
  for (const v of ROOM_VERSIONS.values()) if (v.creatable) available[v.id] = "stable";
  return c.json({
    capabilities: {
      "m.change_password": { enabled: true },
      "m.room_versions": { default: DEFAULT_ROOM_VERSION, available },
      "m.set_displayname": { enabled: true },
      "m.set_avatar_url": { enabled: true },
      "m.profile_fields": { enabled: true },
      "m.3pid_changes": { enabled: false },
      "m.get_login_token": { enabled: await mayGetLoginToken(c) },
      ...DELAYED_EVENTS_CAPABILITY,
    },
  });
});
