// Shared helpers for benchmarks (loopback servers only).
export function percentile(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Register a user through the real UIA flow (needs REGISTRATION=open). */
export async function registerBenchUser(baseUrl, username, password = "bench-password") {
  const url = `${baseUrl}/_matrix/client/v3/register`;
  const first = await (await fetch(url, { method: "POST", body: JSON.stringify({ username, password }) })).json();
  const res = await fetch(url, {
    method: "POST",
    body: JSON.stringify({ username, password, auth: { type: "m.login.dummy", session: first.session } }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`register ${username}: ${JSON.stringify(body)}`);
  return { userId: body.user_id, token: body.access_token, deviceId: body.device_id, password };
}
