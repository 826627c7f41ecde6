import { configDefaults, defineConfig } from "vitest/config";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import path from "node:path";

// Two kinds of tests in one `npm test`:
//  - workers: unit tests of the pure core and integration tests of the Worker, inside workerd
//    with real D1, R2 and Durable Objects (miniflare);
//  - e2e: plain Node tests that start real servers (`wrangler dev`) and drive them with
//    matrix-js-sdk or fetch.
// (workers-msc4306 is the workers project with THREAD_SUBSCRIPTIONS=on, for the files below.)

/** The workerd pool's set-up, with `extra` bindings on top of the usual ones. */
const workerdPlugin = (extra: Record<string, string> = {}) =>
  cloudflareTest(async () => ({
    wrangler: { configPath: "./wrangler.toml" },
    miniflare: {
      bindings: {
        TEST_MIGRATIONS: await readD1Migrations(path.join(import.meta.dirname, "migrations")),
        SERVER_NAME: "test.local",
        REGISTRATION: "open",
        RATE_LIMITS: "off",
        REGISTRATION_SHARED_SECRET: "test-shared-secret",
        APPSERVICE_HTTP_LOOPBACK: "true",
        // Partial-state joins (test/integration/federation-partial-join.test.ts); a resident
        // that ignores omit_members answers the full state as before.
        PARTIAL_STATE_JOINS: "on",
        // test/integration/fuzz.test.ts: requests per route and seed (`npm run fuzz`).
        FUZZ_RUNS: process.env.FUZZ_RUNS ?? "",
        FUZZ_SEED: process.env.FUZZ_SEED ?? "",
        FUZZ_ONLY: process.env.FUZZ_ONLY ?? "",
        ...extra,
      },
    },
  }));

/** What both workerd projects share: the migrations set-up and how files are scheduled. */
const workerdTest = {
  // Integration tests do real crypto (PBKDF2, Ed25519) and real storage; on a loaded 2-core
  // CI machine the 5 s default is too tight. Speed targets live in bench/, not here.
  testTimeout: 30_000,
  setupFiles: ["test/apply-migrations.ts"],
  // Every test file gets a workerd of its own (a new Miniflare: fresh storage and modules), and
  // most of a file's time is that start and loading the Worker's modules, not CPU-bound test
  // work: two files at a time keep both cores busy (vitest's default is one fewer than the cores,
  // so 1 on CI's 2). docs/benchmarks.md "Test runner".
  // (One at a time under BENCH=1: the workerd benchmarks time themselves.)
  maxWorkers: process.env.BENCH ? 1 : 2,
  // The Worker's npm dependencies pre-bundled once per run (one module each instead of hundreds
  // of files, each of which workerd would fetch from vitest one by one in every test file). Same
  // code; the bundles are cached under node_modules/.vite/vitest.
  deps: {
    optimizer: {
      ssr: {
        enabled: true,
        include: ["hono", "hono/cookie", "hono/cors", "hono/http-exception", "hono/utils/http-status", "zod", "drizzle-orm", "drizzle-orm/d1", "drizzle-orm/sqlite-core", "js-yaml"],
      },
    },
  },
};

/** Tests that need THREAD_SUBSCRIPTIONS=on (MSC4306 changes how thread replies notify, so the
 *  other tests keep the default, off). Their own project: bindings are per project. */
const THREAD_SUBSCRIPTION_TESTS = ["test/integration/thread-subscriptions.test.ts"];

export default defineConfig({
  test: {
    // Durable Objects keep working after a test file's last test (federation retries on alarms,
    // background state fetches) and may log; a log line that reaches vitest while it tears the
    // file's environment down is rejected as an "unhandled error" that no test caused. Only that
    // one teardown race is let through; every other unhandled error still fails the run.
    onUnhandledError(error) {
      if (error.name === "EnvironmentTeardownError" && /Closing rpc while "onUserConsoleLog" was pending/.test(error.message)) return false;
    },
    projects: [
      {
        plugins: [workerdPlugin()],
        test: {
          name: "workers",
          exclude: [...configDefaults.exclude, ...THREAD_SUBSCRIPTION_TESTS],
          // BENCH=1 adds the workerd benchmarks (bench/*.test.ts), which npm test leaves out.
          include: ["test/unit/**/*.test.ts", "test/integration/**/*.test.ts", ...(process.env.BENCH ? ["bench/**/*.test.ts"] : [])],
          // Sizes for bench/hub-compaction.bench.test.ts (its wrapper bench/hub-compaction.mjs sets them).
          provide: { hubBenchSizes: process.env.HUB_BENCH_SIZES ?? "10000" },
          ...workerdTest,
        },
      },
      {
        plugins: [workerdPlugin({ THREAD_SUBSCRIPTIONS: "on" })],
        test: {
          name: "workers-msc4306",
          include: THREAD_SUBSCRIPTION_TESTS,
          ...workerdTest,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          setupFiles: ["test/e2e/setup.ts"],
        },
      },
    ],
  },
});
