// Open many MCP sessions over Streamable HTTP and leave them idle, as a misbehaving
// local process would: each is an `initialize` POST whose session is never used again.
//
//   node flood.mjs <url> <count> [--from ADDRESS] [--token TOKEN] [--parallel N]
//
// Prints one JSON line: how many sessions were opened, the HTTP statuses seen and the
// time it took.
import http from "node:http";

const [url, countArg, ...rest] = process.argv.slice(2);
const opts = { from: undefined, token: undefined, parallel: 16 };
for (let i = 0; i < rest.length; i += 2) opts[rest[i].replace(/^--/, "")] = rest[i + 1];
const count = Number(countArg);
if (!url || !Number.isInteger(count)) {
  console.error("usage: flood.mjs <url> <count> [--from ADDRESS] [--token TOKEN] [--parallel N]");
  process.exit(2);
}
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(opts.parallel), localAddress: opts.from });
const body = JSON.stringify({
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "flood", version: "0" } },
});

function open() {
  return new Promise((resolve, reject) => {
    const headers = {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "content-length": Buffer.byteLength(body),
    };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const req = http.request(
      { agent, host: target.hostname, port: target.port, path: target.pathname, method: "POST", headers },
      (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode, session: res.headers["mcp-session-id"] }));
        res.on("error", reject);
      },
    );
    req.setTimeout(30000, () => req.destroy(new Error("no answer within 30 s")));
    req.on("error", reject);
    req.end(body);
  });
}

const started = performance.now();
const statuses = {};
let opened = 0;
let next = 0;
async function worker() {
  while (next < count) {
    next++;
    const { status, session } = await open();
    statuses[status] = (statuses[status] || 0) + 1;
    if (status === 200 && session) opened++;
  }
}
await Promise.all(Array.from({ length: Math.min(Number(opts.parallel), count) }, worker));
agent.destroy();
const seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify({ opened, statuses, seconds: Math.round(seconds * 100) / 100 }));
