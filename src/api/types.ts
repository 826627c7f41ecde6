import type { Env } from "../env";
import type { Config } from "../config";
import type { Appservice } from "../core/appservice-registration";

/** Who is calling, established by the auth middleware from the access token. */
export interface Auth {
  userId: string;
  deviceId: string;
  isGuest: boolean;
  /** Row id of the access token (for logout); 0 for an application service's as_token. */
  tokenId: number;
  /** Set when the request authenticated with an application service's as_token (identity
   *  assertion: userId is its sender or the `user_id` it asserted). */
  appservice?: Appservice;
  /** The sender overrides the admin API set (shadow ban, rate-limit override), read with the
   *  token in the same D1 query so a send needs no second lookup (rate-limit.ts
   *  senderOverrides). Absent for application services. */
  overrides?: SenderOverrideRow;
  /** The user's profile (users.displayname, avatar_url), read with the token in the same D1
   *  query, for createRoom's m.room.member of the creator (one D1 round trip fewer). Absent for
   *  application services. */
  profile?: { displayname?: string; avatar_url?: string };
}

export interface SenderOverrideRow {
  shadow_banned: number;
  messages_per_second: number | null;
  burst_count: number | null;
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
