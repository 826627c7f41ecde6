import type { Env as LatticeEnv } from "../src/env";
import type { D1Migration } from "cloudflare:test";

declare global {
  namespace Cloudflare {
    interface Env extends LatticeEnv {
      TEST_MIGRATIONS: D1Migration[];
    }
  }
}
export {};
