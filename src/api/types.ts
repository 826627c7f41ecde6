import type { Env } from "../env";
import type { Config } from "../config";

/** Who is calling, established by the auth middleware from the access token. */
export interface Auth {
  userId: string;
  deviceId: string;
  isGuest: boolean;
  /** Row id of the access token (for logout). */
  tokenId: number;
}

export type AppEnv = {
  Bindings: Env;
  Variables: {
    config: Config;
    auth: Auth;
    /** Federation routes: the sending server, verified from its X-Matrix signature. */
    origin: string;
  };
};
