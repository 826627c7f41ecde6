// Login cost: POST /login (one PBKDF2-SHA-512 100k verification + token issue) vs GET /whoami
// (token lookup only), against a real `npm start` server on a free loopback port.
// Run: node bench/login.mjs [rounds]
import { startServer } from "../test/e2e/harness.ts";
import { percentile, registerBenchUser } from "./util.mjs";

const rounds = Number(process.argv[2] ?? 30);
const server = await startServer({ RATE_LIMITS: "off", REGISTRATION: "open" });
try {
  const user = await registerBenchUser(server.baseUrl, "kdfbench");
  const login = [];
  // Round 0 warms the isolate and D1 up and is not counted.
  for (let i = -1; i < rounds; i++) {
    const t = performance.now();
    const r = await fetch(`${server.baseUrl}/_matrix/client/v3/login`, {
      method: "POST",
      body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "kdfbench" }, password: user.password, device_id: "BENCH" }),
    });
    await r.json();
    if (i >= 0) login.push(performance.now() - t);
  }
  const whoami = [];
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    await (await fetch(`${server.baseUrl}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${user.token}` } })).json();
    whoami.push(performance.now() - t);
  }
  console.log(`login  (PBKDF2-SHA-512 100k + tokens): p50 ${percentile(login, 50).toFixed(1)} ms, p99 ${percentile(login, 99).toFixed(1)} ms over ${rounds}`);
  console.log(`whoami (token lookup):                p50 ${percentile(whoami, 50).toFixed(1)} ms, p99 ${percentile(whoami, 99).toFixed(1)} ms over ${rounds}`);
} finally {
  await server.stop();
}
