//! What the demo promises about who may use it and what it leaves readable: bearer-token
//! authentication over HTTP (checked with the official TypeScript SDK client and on the
//! wire), no unauthenticated listening beyond loopback, a session flood that locks no
//! other client out, and a notes database only its owner can read.

mod common;
use common::support::{self, CommandExt as _};

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

const TOKEN: &str = "6f1c0e6a9b7d4b2f8a3e5c7d9f1b3a5c";

fn token_file(dir: &Path) -> String {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

/// The TypeScript SDK client (tests/js/client.mjs) against `url`, with an optional
/// token: its exit status and stderr.
fn sdk_client(url: &str, token: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("node");
    cmd.current_dir(common::js_dir())
        .args(["client.mjs", "http", url])
        .args(token);
    let out = cmd.output_within(support::TIMEOUT);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Open a session from `from` (initialize + initialized): its id.
fn open_session(port: u16, from: Option<&str>) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "security-test", "version": "0"}}});
    let (status, headers, body) = common::http_request(port, from, "POST", &[], &init.to_string());
    assert_eq!(status, 200, "{body}");
    let id = header(&headers, "mcp-session-id")
        .expect("a session id")
        .to_string();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, body) = common::http_request(
        port,
        from,
        "POST",
        &[
            ("Mcp-Session-Id", &id),
            ("Mcp-Protocol-Version", "2025-06-18"),
        ],
        &note.to_string(),
    );
    assert_eq!(status, 202, "{body}");
    id
}

/// tests/js/flood.mjs: `count` sessions opened and left idle from source `from`, four
/// at a time (fewer than a client may hold: sessions still in their opening request
/// are busy, and with every session busy a new one is refused).
fn flood(url: &str, count: usize, from: &str) -> Value {
    let out = Command::new("node")
        .current_dir(common::js_dir())
        .args(["flood.mjs", url, &count.to_string(), "--from", from])
        .args(["--parallel", "4"])
        .output_within(support::TIMEOUT);
    assert!(
        out.status.success(),
        "flood failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn the_typescript_sdk_needs_the_token_when_the_server_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let server = common::spawn_http_server(
        &dir.path().join("notes.db"),
        &["--token-file", tokens.as_str()],
    );
    let url = server.url();

    let (ok, out) = sdk_client(&url, Some(TOKEN));
    assert!(ok, "with the token: {out}");
    assert!(out.contains("\"ok\":true"), "{out}");

    for token in [None, Some("0123456789abcdef0123456789abcdef")] {
        let (ok, out) = sdk_client(&url, token);
        assert!(!ok, "{token:?} must be refused: {out}");
        assert!(
            out.contains("a valid bearer token is required"),
            "{token:?}: {out}"
        );
    }

    // On the wire: 401 with an RFC 6750 challenge, and no session made.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
    let (status, headers, _) = common::http_request(server.port, None, "POST", &[], init);
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "www-authenticate"),
        Some(r#"Bearer realm="pykiln-notes""#)
    );
    assert!(header(&headers, "mcp-session-id").is_none());
    let wrong = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    let (status, headers, _) = common::http_request(
        server.port,
        None,
        "POST",
        &[("Authorization", &wrong)],
        init,
    );
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "www-authenticate"),
        Some(r#"Bearer realm="pykiln-notes", error="invalid_token""#)
    );
    let (_, stdout, stderr) = server.terminate();
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
}

#[test]
fn beyond_loopback_the_server_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let run = |extra: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(common::binary());
        cmd.args(["--transport", "http", "--host", "0.0.0.0", "--port"])
            .arg(port.to_string())
            .arg("--db")
            .arg(dir.path().join("n.db"))
            .args(extra)
            .env_clear();
        if let Some(token) = env {
            cmd.env("PYKILN_NOTES_TOKEN", token);
        }
        cmd
    };
    let out = run(&[], None).output_within(support::TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--token-file"), "{stderr}");
    assert!(out.stdout.is_empty());

    // A token too short to be a secret is refused, naming where it came from.
    let short = dir.path().join("short");
    std::fs::write(&short, "hunter2\n").unwrap();
    let out = run(&["--token-file", short.to_str().unwrap()], None).output_within(support::TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(short.to_str().unwrap()), "{stderr}");
    let out = run(&[], Some("short")).output_within(support::TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("$PYKILN_NOTES_TOKEN"), "{stderr}");

    // With a token from the environment it listens on every interface and serves a
    // client that has it.
    let mut child = run(&[], Some(TOKEN))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < support::TIMEOUT,
            "the server did not listen"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server ended: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = sdk_client(&url, Some(TOKEN));
    support::kill(child.id(), libc::SIGTERM);
    support::wait_within(&mut child, support::TIMEOUT, "the server after SIGTERM");
    assert!(ok, "{out}");
}

#[test]
fn a_flood_of_idle_sessions_locks_no_client_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::spawn_http_server(
        &dir.path().join("notes.db"),
        &["--max-sessions", "30", "--max-sessions-per-client", "10"],
    );
    let url = server.url();
    let port = server.port;
    // Sessions opened and left idle make room this long after (the server's
    // `Admission.OPENED_IDLE`, 2 s), with a margin.
    let aged = || std::thread::sleep(Duration::from_millis(2600));
    let statuses_ok = |s: &Value| {
        s["statuses"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| k == "200" || k == "503")
    };

    // A client in use, then one process opening far more sessions than a client may
    // hold: it gets its share, the first client's session is untouched, and a client
    // from elsewhere gets in at once.
    let mine = open_session(port, None);
    let summary = flood(&url, 200, "127.0.0.2");
    assert!(statuses_ok(&summary), "{summary}");
    assert!(summary["opened"].as_u64().unwrap() >= 10, "{summary}");
    assert_eq!(
        common::http_list_tools(port, &mine),
        200,
        "the first client's session"
    );
    let (ok, out) = sdk_client(&url, None);
    assert!(ok, "a client from another address during the flood: {out}");
    // The flooding address itself gets in again once its idle sessions have aged.
    aged();
    open_session(port, Some("127.0.0.2"));

    // Many addresses past the global bound: every session left idle makes room, and
    // a new client completes a whole session with the official SDK.
    for i in 3..8 {
        let summary = flood(&url, 20, &format!("127.0.0.{i}"));
        assert!(statuses_ok(&summary), "{summary}");
        aged();
    }
    let (ok, out) = sdk_client(&url, None);
    assert!(ok, "a new client after the flood: {out}");

    // A session in use is never the one that ends, however long the flood (`mine`
    // has been idle long enough to go by now, so it is used again first).
    let busy = open_session(port, Some("127.0.0.9"));
    assert_eq!(common::http_list_tools(port, &busy), 200);
    assert_eq!(common::http_list_tools(port, &mine), 200);
    for i in 10..16 {
        aged();
        assert_eq!(
            common::http_list_tools(port, &mine),
            200,
            "a session in use ended"
        );
        let summary = flood(&url, 12, &format!("127.0.0.{i}"));
        assert!(statuses_ok(&summary), "{summary}");
    }
    assert_eq!(
        common::http_list_tools(port, &busy),
        200,
        "a session in use ended"
    );
    assert_eq!(
        common::http_list_tools(port, &mine),
        200,
        "a session in use ended"
    );

    let (_, stdout, stderr) = server.terminate();
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains("Traceback"), "{stderr}");
}

#[test]
fn the_notes_database_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new/dirs/notes.db");
    let mut s = common::Session::spawn(common::clean_command(&common::binary(), &db));
    s.initialize();
    let added = s.call_tool("add_note", json!({"title": "secret", "body": "x"}));
    assert_eq!(added["isError"], false, "{added}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("new")), 0o700);
    assert_eq!(mode(&dir.path().join("new/dirs")), 0o700);
    for f in ["notes.db", "notes.db-wal", "notes.db-shm"] {
        let p = dir.path().join("new/dirs").join(f);
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    assert!(s.finish().success());

    // An existing database keeps the mode its owner gave it.
    let shared = dir.path().join("shared.db");
    std::fs::write(&shared, b"").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut s = common::Session::spawn(common::clean_command(&common::binary(), &shared));
    s.initialize();
    let added = s.call_tool("add_note", json!({"title": "team", "body": "y"}));
    assert_eq!(added["isError"], false, "{added}");
    assert!(s.finish().success());
    assert_eq!(mode(&shared), 0o640);
}
