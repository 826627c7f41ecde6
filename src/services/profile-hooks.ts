// Called after a user's displayname or avatar changes: send updated m.room.member events into
// every room the user has joined (spec: "Events on Change of Profile Information").
import type { Env } from "../env";
import type { Config } from "../config";
import { propagateProfile } from "./rooms";
import { refreshLocalUser } from "./user-directory";

export async function onProfileChange(env: Env, config: Config, userId: string): Promise<void> {
  await refreshLocalUser(env, userId);
  await propagateProfile(env, config, userId);
}
