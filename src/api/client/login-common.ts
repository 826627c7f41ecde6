// What /login and /register share: starting the client's session from the request's device
// fields, and authenticating an application service by its as_token (m.login.application_service).
import type { Context } from "hono";
import type { AppEnv } from "../types";
import { MatrixError } from "../errors";
import { extractAccessToken } from "../middleware/auth";
import { db } from "../../db";
import { clientSession } from "../../services/sessions";
import { appserviceByToken } from "../../services/appservices";
import type { Appservice } from "../../core/appservice-registration";

/** The device and token fields of a /login or /register request body. */
export interface SessionFields {
  device_id?: string;
  initial_device_display_name?: string;
  refresh_token?: boolean;
}

/** Log `userId` in on the device the request names (or a new one). */
export function sessionFor(c: Context<AppEnv>, userId: string, body: SessionFields) {
  const config = c.var.config;
  return clientSession(db(c.env), {
    userId,
    serverName: config.serverName,
    lifetimeMs: config.accessTokenLifetimeMs,
    deviceId: body.device_id,
    displayName: body.initial_device_display_name,
    refresh: body.refresh_token,
  });
}

/** The application service whose as_token the request carries; 401 without or with an unknown one. */
export async function appserviceFromToken(c: Context<AppEnv>): Promise<Appservice> {
  const token = extractAccessToken(c);
  if (!token) throw new MatrixError(401, "M_MISSING_TOKEN", "m.login.application_service needs the appservice's as_token");
  const service = await appserviceByToken(c.env, c.var.config.serverName, token);
  if (!service) throw new MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised as_token", { soft_logout: false });
  return service;
}
