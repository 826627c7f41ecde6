// Lattice: the Worker entry. Builds the hono app and exports the Durable Object classes.
import { Hono } from "hono";
import { cors } from "hono/cors";
import type { AppEnv } from "./api/types";
import { parseConfig } from "./config";
import { onError } from "./api/middleware/errors";
import { MatrixError } from "./api/errors";
import { routeMatcher } from "./api/route-match";
import { wellKnown, versions, capabilities } from "./api/client/discovery";
import { login } from "./api/client/login";
import { openid } from "./api/client/openid";
import { register, registrationTokenValidity } from "./api/client/register";
import { deviceRoutes } from "./api/client/devices";
import { account } from "./api/client/account";
import { profile } from "./api/client/profile";
import { admin } from "./api/admin/admin";
import { adminUsers } from "./api/admin/users";
import { adminRooms } from "./api/admin/rooms";
import { adminMedia } from "./api/admin/media";
import { adminFederation } from "./api/admin/federation";
import { adminConsole } from "./api/admin/console";
import { adminReports } from "./api/admin/reports";
import { adminServerNotices } from "./api/admin/server-notices";
import { clientAdminWhois, clientAdminModeration } from "./api/client/admin";
import { appserviceAdmin } from "./api/admin/appservices";
import { rooms } from "./api/client/rooms";
import { membership } from "./api/client/membership";
import { events } from "./api/client/events";
import { timeline, timelineV1 } from "./api/client/timeline";
import { directory } from "./api/client/directory";
import { serverKeys } from "./api/federation/keys";
import { sync } from "./api/client/sync";
import { slidingSync } from "./api/client/sliding-sync";
import { filters } from "./api/client/filter";
import { typing } from "./api/client/typing";
import { receipts } from "./api/client/receipts";
import { accountData } from "./api/client/account-data";
import { presence } from "./api/client/presence";
import { pushRules } from "./api/client/push-rules";
import { threadSubscriptions, threadSubscriptionsPagination } from "./api/client/thread-subscriptions";
import { pushersRoutes } from "./api/client/pushers";
import { voip } from "./api/client/voip";
import { rtc } from "./api/client/rtc";
import { delayedEvents } from "./api/client/delayed-events";
import { keys } from "./api/client/keys";
import { crossSigning } from "./api/client/cross-signing";
import { keyBackup } from "./api/client/key-backup";
import { toDevice } from "./api/client/to-device";
import { dehydratedDevice } from "./api/client/dehydrated-device";
import { mediaRoutes, clientMediaRoutes } from "./api/client/media";
import { federation } from "./api/federation";
import { spaces } from "./api/client/spaces";
import { search } from "./api/client/search";
import { userDirectory } from "./api/client/user-directory";
import { report } from "./api/client/report";
import { mutualRoomsUnstable, roomSummary } from "./api/client/room-summary";
import { peeking } from "./api/client/peeking";
import { oldSync } from "./api/client/old-sync";
import { appservicePing } from "./api/appservice/ping";
import { thirdparty } from "./api/client/thirdparty";
import { appserviceDirectory } from "./api/appservice/directory";
import { oauthRegistration } from "./api/client/oauth/registration";
import { oauthPages } from "./api/client/oauth/authorize";
import { oauthToken } from "./api/client/oauth/token";
import { authMetadata } from "./api/client/oauth/metadata";
import { oauthAccount } from "./api/client/oauth/account";
import { oauthDevice } from "./api/client/oauth/device";
import { loginToken } from "./api/client/login-token";
import { rendezvous } from "./api/client/rendezvous";

export { RoomDO } from "../durable-objects/room";
export { RateLimiterDO } from "../durable-objects/rate-limiter";
export { UserDO } from "../durable-objects/user";
export { SenderDO } from "../durable-objects/sender";
export { PusherDO } from "../durable-objects/pusher";
export { DelayedEventsDO } from "../durable-objects/delayed-events";
export { AppserviceSenderDO } from "../durable-objects/appservice-sender";

const app = new Hono<AppEnv>();

// CORS on every response (spec: Client-Server API "Web Browser Clients").
app.use(
  "*",
  cors({
    origin: "*",
    allowMethods: ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"],
    // If-Match / If-None-Match: MSC4108 rendezvous sessions (src/api/client/rendezvous.ts).
    allowHeaders: ["X-Requested-With", "Content-Type", "Authorization", "If-Match", "If-None-Match"],
  }),
);
app.use("*", async (c, next) => {
  c.set("config", parseConfig(c.env, c.req.url));
  await next();
});

app.route("/", wellKnown);

/** Client-Server API v3 routes. Also served under the legacy /r0 prefix (same handlers). */
const clientV3 = new Hono<AppEnv>();
for (const area of [login, register, deviceRoutes, account, profile, capabilities, directory, openid, thirdparty, appserviceDirectory]) clientV3.route("/", area);
for (const area of [rooms, membership, events, timeline, peeking, oldSync, search, userDirectory, report]) clientV3.route("/", area);
for (const area of [sync, filters, typing, receipts, accountData, presence, pushRules, pushersRoutes, voip]) clientV3.route("/", area);
for (const area of [keys, crossSigning, keyBackup, toDevice]) clientV3.route("/", area);
clientV3.route("/", clientAdminWhois);

const client = new Hono<AppEnv>();
client.route("/", versions);
client.route("/v3", clientV3);
client.route("/r0", clientV3);
client.route("/v1", registrationTokenValidity);
client.route("/v1", authMetadata);
client.route("/v1", loginToken);
client.route("/unstable/org.matrix.msc4108", rendezvous);
client.route("/v1", timelineV1);
client.route("/v1", spaces);
client.route("/v1", roomSummary);
client.route("/v1", appservicePing);
client.route("/unstable/uk.half-shot.msc2666", mutualRoomsUnstable);
client.route("/v1", clientAdminModeration);
client.route("/unstable/org.matrix.msc3814.v1", dehydratedDevice);
client.route("/unstable/org.matrix.simplified_msc3575", slidingSync);
client.route("/unstable/org.matrix.msc4143", rtc);
client.route("/unstable/org.matrix.msc4140", delayedEvents);
client.route("/unstable/io.element.msc4306", threadSubscriptions);
client.route("/unstable/io.element.msc4308", threadSubscriptionsPagination);
client.route("/v1", rtc);
client.route("/v1/media", clientMediaRoutes);
app.route("/_matrix/client", client);
app.route("/_matrix/media", mediaRoutes);
app.route("/_synapse/admin", admin);
app.route("/_lattice/admin", appserviceAdmin);
app.route("/_synapse/admin", adminUsers);
app.route("/_synapse/admin", adminRooms);
app.route("/_synapse/admin", adminMedia);
app.route("/_synapse/admin", adminFederation);
app.route("/_synapse/admin", adminReports);
app.route("/_synapse/admin", adminServerNotices);
app.route("/", adminConsole);
app.route("/_lattice/oauth", oauthRegistration);
app.route("/_lattice/oauth", oauthPages);
app.route("/_lattice/oauth", oauthToken);
app.route("/_lattice/oauth", oauthAccount);
app.route("/_lattice/oauth", oauthDevice);
app.route("/_matrix/key/v2", serverKeys);
app.route("/_matrix/federation", federation);

// Unknown endpoint → 404 M_UNRECOGNIZED; known endpoint, wrong method → 405 M_UNRECOGNIZED
// (spec: Client-Server API "Common error codes").
const knownPath = routeMatcher(() => app.routes);
app.notFound((c) => {
  const path = new URL(c.req.url).pathname;
  const status = knownPath(path) ? 405 : 404;
  return c.json(new MatrixError(status, "M_UNRECOGNIZED", "Unrecognized request").toJSON(), status);
});
app.onError(onError);

export default app;
