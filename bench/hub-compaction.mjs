// Sync hub log compaction benchmark: /sync of a user whose hub took N positions (uncompacted,
// then compacted) against a fresh user's. The measuring code runs inside workerd
// (bench/hub-compaction.bench.test.ts, in the `workers` vitest project with BENCH=1); this wrapper passes the
// sizes and prints its tables. Each size runs in its own vitest process (its own workerd): under
// the workers test pool every SELF.fetch gets slower as a process's requests add up
// (cloudflare/workers-sdk#15446), so sizes sharing a process would not be comparable.
//
//   node bench/hub-compaction.mjs [sizes...]      (default: 10000 100000 1000000)
import { spawnSync } from "node:child_process";
import path from "node:path";
import { loadavg } from "node:os";

const root = path.resolve(import.meta.dirname, "..");
const sizes = process.argv.slice(2).map(Number).filter((n) => Number.isInteger(n) && n > 0 && n <= 5_000_000);
const list = sizes.length ? sizes : [10_000, 100_000, 1_000_000];
console.log(`hub-compaction: sizes ${list.join(", ")}; load average at start ${loadavg().map((x) => x.toFixed(1)).join(" ")}`);
let failed = false;
for (const size of list) {
  const r = spawnSync(path.join(root, "node_modules/.bin/vitest"), ["run", "--project", "workers", "bench/hub-compaction.bench.test.ts"], {
    cwd: root,
    env: { ...process.env, BENCH: "1", HUB_BENCH_SIZES: String(size) },
    stdio: "inherit",
  });
  failed ||= r.status !== 0;
  console.log(`load average after ${size}: ${loadavg().map((x) => x.toFixed(1)).join(" ")}`);
}
process.exit(failed ? 1 : 0);
