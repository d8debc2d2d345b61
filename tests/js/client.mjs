// Drive a packaged pykiln notes server with the official MCP TypeScript SDK.
//
//   node client.mjs stdio <binary> <db>
//   node client.mjs http <url> [token]
//
// Exits 0 after every check passed; prints one JSON summary line on stdout.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

function check(cond, msg) {
  if (!cond) {
    console.error(`check failed: ${msg}`);
    process.exit(1);
  }
}

const [mode, target, db] = process.argv.slice(2);
let transport;
if (mode === "stdio") {
  transport = new StdioClientTransport({ command: target, args: ["--db", db], env: {}, stderr: "inherit" });
} else if (mode === "http") {
  // The third argument is a bearer token for a server started with one.
  const requestInit = db ? { headers: { Authorization: `Bearer ${db}` } } : undefined;
  transport = new StreamableHTTPClientTransport(new URL(target), { requestInit });
} else {
  console.error("usage: client.mjs stdio <binary> <db> | http <url> [token]");
  process.exit(2);
}

const client = new Client({ name: "pykiln-e2e", version: "0.0.0" });
await client.connect(transport);
const server = client.getServerVersion();
check(server?.name === "pykiln-notes", `server name ${JSON.stringify(server)}`);

const { tools } = await client.listTools();
const names = tools.map((t) => t.name).sort();
check(JSON.stringify(names) === JSON.stringify(["add_note", "delete_note", "get_note", "list_notes", "search_notes"]), `tools ${names}`);

const added = await client.callTool({ name: "add_note", arguments: { title: "Glaze recipe", body: "celadon with 2% iron oxide", tags: ["glaze"] } });
check(!added.isError, `add_note ${JSON.stringify(added)}`);
const id = Number(added.content[0].text);
check(Number.isInteger(id), `id ${added.content[0].text}`);

const found = await client.callTool({ name: "search_notes", arguments: { query: "celadon iron" } });
// The server may hold notes of earlier sessions (same title): ours must be among them.
check(!found.isError && found.structuredContent.result.some((r) => r.id === id), `search ${JSON.stringify(found)}`);

const bad = await client.callTool({ name: "get_note", arguments: { id: 987654 } });
check(bad.isError === true, `missing note is a tool error ${JSON.stringify(bad)}`);

const res = await client.readResource({ uri: `note://${id}` });
check(res.contents[0].text.includes("celadon"), `resource ${JSON.stringify(res)}`);

const prompts = await client.listPrompts();
check(prompts.prompts.some((p) => p.name === "summarize_notes"), "prompt listed");
const prompt = await client.getPrompt({ name: "summarize_notes", arguments: { tag: "glaze" } });
check(prompt.messages[0].content.text.includes("Glaze recipe"), `prompt ${JSON.stringify(prompt)}`);

await client.close();
console.log(JSON.stringify({ ok: true, mode, tools: names.length, id }));
