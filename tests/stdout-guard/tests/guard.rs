//! `[tool.pykiln] stdout-guard`: a server that print()s a banner at import, another line
//! before starting the stdio transport and one inside a tool still talks MCP to a real
//! client (the official TypeScript SDK), and every printed line reaches stderr after
//! one warning.

use pykiln_test_support::{self as support, CommandExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../js")
}

/// The official TypeScript SDK's client, with the server's stderr inherited: connect,
/// list tools, call `echo`. Prints one JSON line.
const CLIENT: &str = r#"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
const transport = new StdioClientTransport({ command: process.argv[1], args: [], env: {}, stderr: "inherit" });
const client = new Client({ name: "pykiln-stdout-guard", version: "0.0.0" });
await client.connect(transport);
const { tools } = await client.listTools();
const result = await client.callTool({ name: "echo", arguments: { text: "hello" } });
await client.close();
console.log(JSON.stringify({ tools: tools.map((t) => t.name), result }));
"#;

/// Run [`CLIENT`] against the binary: its JSON line and everything on stderr.
fn talk() -> (Value, String) {
    assert!(
        js_dir()
            .join("node_modules/@modelcontextprotocol/sdk")
            .exists(),
        "the MCP SDK is missing: run tests/prereqs (npm ci in tests/js)"
    );
    let out = Command::new("node")
        .args(["--input-type=module", "-e", CLIENT])
        .arg(env!("CARGO_BIN_EXE_banner-server"))
        .current_dir(js_dir())
        .output_within(support::TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the MCP client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let json =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
    (json, stderr)
}

#[test]
fn printing_server_still_speaks_mcp_and_its_prints_reach_stderr() {
    let (reply, stderr) = talk();
    assert_eq!(reply["tools"], serde_json::json!(["echo"]), "{reply}");
    assert_eq!(reply["result"]["isError"], false, "{reply}");
    assert_eq!(reply["result"]["content"][0]["text"], "hello", "{reply}");
    for line in [
        "Starting MCP server 'banner' ...",
        "Listening on stdio",
        "echo called with 'hello'",
    ] {
        assert!(stderr.contains(line), "{line:?} not on stderr:\n{stderr}");
    }
    assert_eq!(stderr.matches("stdout-guard").count(), 1, "{stderr}");
}
