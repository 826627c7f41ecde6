import { applyD1Migrations, env } from "cloudflare:test";
import { setFederationFetch } from "../src/services/federation/client";

// Storage is isolated per test file; migrations are idempotent (tracked in d1_migrations).
await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);

// Tests never reach beyond loopback: unless a test installs its own fake, every outbound
// federation request (discovery, DNS-over-HTTPS, peers) fails at once instead of trying the
// network.
setFederationFetch(async () => {
  throw new Error("offline (test)");
});
