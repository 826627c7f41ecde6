// Called after a user's displayname or avatar changes. The rooms work sends updated
// m.room.member events into every room the user has joined (spec: "Events on Change of Profile
// Information"). OWNER: rooms helper.
import type { Env } from "../env";
import type { Config } from "../config";

export async function onProfileChange(_env: Env, _config: Config, _userId: string): Promise<void> {}
