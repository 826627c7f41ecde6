// GET /_matrix/federation/v1/version (spec: Server-Server API "Server implementation").
// Unauthenticated by the spec.
import { Hono } from "hono";
import type { AppEnv } from "../types";

export const SERVER_VERSION = "0.1.0";

export const federationVersion = new Hono<AppEnv>();

federationVersion.get("/v1/version", (c) => c.json({ server: { name: "Lattice", version: SERVER_VERSION } }));
