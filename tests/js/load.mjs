// Concurrent MCP sessions against a notes server over streamable HTTP, with the
// official TypeScript SDK: each session initializes, adds one note and searches for
// it, then leaves without ending the session (as many real clients do).
//
//   node load.mjs <url> <sessions> <wave>
//   node load.mjs <url> <calls> <wave> one-session   (concurrent add_note calls in one session)
//
// Prints one JSON line: {"ok": n, "failed": n, "notes": [{id, title, session}], "errors": [first few]}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, sessions, wave, mode] = process.argv.slice(2);
const n = Number(sessions);

async function one(i) {
  const token = `w${wave}s${i}tok`;
  const client = new Client({ name: "pykiln-load", version: "0.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  try {
    await client.connect(transport);
    const added = await client.callTool({ name: "add_note", arguments: { title: `load ${token}`, body: `body of ${token}` } });
    if (added.isError) throw new Error(`add_note: ${added.content?.[0]?.text}`);
    const id = Number(added.content[0].text);
    const found = await client.callTool({ name: "search_notes", arguments: { query: token } });
    if (found.isError) throw new Error(`search_notes: ${found.content?.[0]?.text}`);
    const hits = found.structuredContent.result;
    if (hits.length !== 1 || hits[0].id !== id) throw new Error(`search for ${token} gave ${JSON.stringify(hits)} (id ${id})`);
    return { id, title: `load ${token}`, session: transport.sessionId };
  } finally {
    // Drop the connection without DELETE: the server must expire the session itself.
    await transport.close().catch(() => {});
  }
}

async function oneSession() {
  const client = new Client({ name: "pykiln-load", version: "0.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport);
  const add = async (i) => {
    const title = `one-session w${wave} c${i}`;
    const added = await client.callTool({ name: "add_note", arguments: { title, body: title } });
    if (added.isError) throw new Error(`add_note: ${added.content?.[0]?.text}`);
    return { id: Number(added.content[0].text), title };
  };
  const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => add(i)));
  await transport.terminateSession().catch(() => {});
  await client.close();
  return results;
}

const results =
  mode === "one-session" ? await oneSession() : await Promise.allSettled(Array.from({ length: n }, (_, i) => one(i)));
const ok = results.filter((r) => r.status === "fulfilled").map((r) => r.value);
const errors = results.filter((r) => r.status === "rejected").map((r) => String(r.reason?.message ?? r.reason));
console.log(JSON.stringify({ ok: ok.length, failed: errors.length, notes: ok, errors: errors.slice(0, 5) }));
