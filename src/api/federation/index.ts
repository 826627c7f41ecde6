// /_matrix/federation/*: the version endpoint is public; everything else requires a valid
// X-Matrix signature (src/api/middleware/federation-auth.ts) and sees c.var.origin.
import { Hono } from "hono";
import type { AppEnv } from "../types";
import { federationAuth } from "../middleware/federation-auth";
import { routeMatcher } from "../route-match";
import { federationVersion } from "./version";
import { federationOpenid } from "./openid";
import { transactions } from "./transactions";
import { queries } from "./queries";
import { federationRooms } from "./rooms";
import { federationMedia } from "./media";
import { federationE2ee } from "./e2ee";
import { federationSpaces } from "./spaces";
import { federationDirectory } from "./directory";
import { federationTimestamp } from "./timestamp";

export const federation = new Hono<AppEnv>();
federation.route("/", federationVersion);
federation.route("/", federationOpenid); // authenticated by its OpenID token, not X-Matrix

/** Authenticated federation routes. Other federation areas (joins, backfill, ...) add themselves
 *  here: `federationAuthed.route("/", myArea)`. */
export const federationAuthed = new Hono<AppEnv>();
// Signature checks only for paths that exist: an unknown path is 404 M_UNRECOGNIZED, not 401.
const knownFederationPath = routeMatcher(() => federationAuthed.routes, "/_matrix/federation");
federationAuthed.use("*", (c, next) => (knownFederationPath(c.req.path) ? federationAuth(c, next) : next()));
federationAuthed.route("/", transactions);
federationAuthed.route("/", queries);
federationAuthed.route("/", federationRooms);
federationAuthed.route("/", federationMedia);
federationAuthed.route("/", federationE2ee);
federationAuthed.route("/", federationSpaces);
federationAuthed.route("/", federationDirectory);
federationAuthed.route("/", federationTimestamp);
federation.route("/", federationAuthed);
