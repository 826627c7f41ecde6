// The push gateway of bench/push.mjs, in a process of its own (as Sygnal is another machine in
// a deployment): a plain Node HTTP server on loopback that answers POST /_matrix/push/v1/notify
// with `{"rejected":[]}` (after GW_DELAY_MS) and reports each arrival to its parent over IPC.
//
// Run by bench/push.mjs (child_process.fork); argv: <port> <delay ms>. Messages to the parent:
// { listening: port } once, then { arrivals: [[eventId | null, pushkey, at], ...] } where `at`
// is an absolute time in ms (performance.timeOrigin + performance.now(), comparable across
// processes of one machine). Arrivals are sent in batches, one per turn of the event loop, so a
// burst of 99 requests is a few IPC messages, not 99.
import { createServer } from "node:http";

const port = Number(process.argv[2]);
const delayMs = Number(process.argv[3] ?? 0);
const origin = performance.timeOrigin;
let batch = [];

function report(entry) {
  if (!batch.length) {
    setImmediate(() => {
      const out = batch;
      batch = [];
      process.send({ arrivals: out });
    });
  }
  batch.push(entry);
}

const answer = (res) => res.writeHead(200, { "content-type": "application/json" }).end('{"rejected":[]}');
const server = createServer((req, res) => {
  let raw = "";
  req.on("data", (d) => (raw += d));
  req.on("end", () => {
    const at = origin + performance.now();
    const n = JSON.parse(raw).notification;
    report([n?.event_id ?? null, n?.devices?.[0]?.pushkey ?? null, at]);
    if (delayMs > 0) setTimeout(() => answer(res), delayMs);
    else answer(res);
  });
});
server.listen(port, "127.0.0.1", () => process.send({ listening: server.address().port }));
// The parent asks for this process's CPU time (ms) with "cpu"; it ends it with "stop".
process.on("message", (m) => {
  if (m === "cpu") {
    const u = process.cpuUsage();
    process.send({ cpu: (u.user + u.system) / 1000 });
  } else if (m === "stop") {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  }
});
// The parent went away: do not linger.
process.on("disconnect", () => process.exit(0));
