//! A real third-party MCP client (the official TypeScript SDK, tests/js) drives the
//! packaged server over stdio and over streamable HTTP.

mod common;
use common::support::{self, CommandExt as _};

use std::process::Command;

use common::js_dir;

fn node(args: &[&str]) -> std::process::Output {
    let out = Command::new("node")
        .current_dir(js_dir())
        .arg("client.mjs")
        .args(args)
        .output_within(support::TIMEOUT);
    assert!(
        out.status.success(),
        "SDK client failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn typescript_sdk_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    let out = node(&[
        "stdio",
        common::binary().to_str().unwrap(),
        db.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\":true"));
    assert!(db.exists(), "the --db argument reached the server");
}

#[test]
fn typescript_sdk_over_streamable_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::spawn_http_server(&dir.path().join("notes.db"), &[]);
    let out = node(&["http", &server.url()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"mode\":\"http\""));
    let (status, stdout, stderr) = server.terminate();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}\n{stderr}");
    assert!(!stderr.contains("still running"), "{stderr}");
    // uvicorn's access log goes to stderr like every other log line.
    assert!(stdout.is_empty(), "printed on stdout: {stdout}");
    assert!(
        stderr.contains("POST /mcp"),
        "access log on stderr: {stderr}"
    );
}
