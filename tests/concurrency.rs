//! The demo under concurrency and load: every acknowledged note is stored exactly once,
//! every failure is really not stored, HTTP sessions that clients abandon are freed,
//! and one request cannot occupy the server (issues 9.4 and 15.2/15.4).

mod common;
use common::support::{self, CommandExt as _};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use common::js_dir;

/// Run tests/js/load.mjs and parse its summary.
fn load(url: &str, n: usize, wave: usize, mode: &str) -> Value {
    let out = Command::new("node")
        .current_dir(js_dir())
        .args(["load.mjs", url, &n.to_string(), &wave.to_string(), mode])
        .output_within(support::TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "load.mjs failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("load.mjs printed no summary ({e}): {stdout}"))
}

/// Acknowledged notes of a load run: id → title; ids must be unique.
fn acknowledged(summary: &Value, into: &mut BTreeMap<i64, String>) {
    for n in summary["notes"].as_array().expect("notes") {
        let id = n["id"].as_i64().expect("id");
        let title = n["title"].as_str().expect("title").to_string();
        assert!(
            into.insert(id, title.clone()).is_none(),
            "id {id} acknowledged twice (second for {title})"
        );
    }
}

/// Every acknowledged note is in the database under its id, and nothing else is.
fn assert_stored_exactly(db: &Path, acked: &BTreeMap<i64, String>) {
    let stored: BTreeMap<i64, String> = common::notes_in(db).into_iter().collect();
    let missing: Vec<_> = acked
        .iter()
        .filter(|(id, t)| stored.get(id) != Some(t))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    let extra: Vec<_> = stored.keys().filter(|id| !acked.contains_key(id)).collect();
    assert!(extra.is_empty(), "stored but reported failed: {extra:?}");
}

#[test]
fn pipelined_stdio_writes_are_each_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    let mut child = common::clean_command(&common::binary(), &db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = |v: Value| writeln!(stdin, "{v}").unwrap();
    send(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}),
    );
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    const N: i64 = 200;
    // All requests written before any answer is read: the SDK runs them concurrently.
    for i in 1..=N {
        send(
            json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "add_note", "arguments": {"title": format!("pipelined {i}"), "body": "x"}}}),
        );
    }
    let mut acked = BTreeMap::new();
    let mut answered = BTreeSet::new();
    while answered.len() < N as usize {
        let line = lines.next().expect("a response").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        let Some(id) = v["id"].as_i64().filter(|&i| i > 0) else {
            continue;
        };
        answered.insert(id);
        let r = &v["result"];
        assert_eq!(r["isError"], false, "request {id}: {v}");
        let note: i64 = common::text(r).parse().expect("numeric id");
        assert!(
            acked.insert(note, format!("pipelined {id}")).is_none(),
            "note id {note} acknowledged twice"
        );
    }
    drop(stdin);
    assert!(support::wait_within(&mut child, support::TIMEOUT, "the server").success());
    assert_eq!(acked.len(), N as usize);
    assert_stored_exactly(&db, &acked);
}

#[test]
fn http_under_load_loses_nothing_and_frees_abandoned_sessions() {
    js_dir();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    // 200 concurrent sessions from one address: more than one client may hold by
    // default (tests/security.rs tests that bound).
    let server = common::spawn_http_server(
        &db,
        &[
            "--session-timeout",
            "10",
            "--max-sessions-per-client",
            "1000",
        ],
    );
    let url = server.url();
    let mut acked = BTreeMap::new();

    // 300 concurrent add_note calls inside one session.
    let one = load(&url, 300, 0, "one-session");
    assert_eq!(one["failed"], 0, "{one}");
    acknowledged(&one, &mut acked);

    // Four waves of 200 concurrent sessions (initialize, add, search, abandon).
    let mut rss = Vec::new();
    for wave in 1..=4 {
        let s = load(&url, 200, wave, "");
        assert_eq!(s["failed"], 0, "wave {wave}: {s}");
        acknowledged(&s, &mut acked);
        // Sessions idle for 10 s are ended by the server; give it time to reap them.
        // (Not shorter: a session reaped while its client is between two requests
        // leaves the next request unanswered in mcp 2.3.0's session manager.)
        std::thread::sleep(Duration::from_secs(13));
        rss.push(common::rss_kib(server.child.id()));
        // Every session the wave abandoned is gone: the server answers 404 for it.
        let sessions: Vec<&str> = s["notes"]
            .as_array()
            .expect("notes")
            .iter()
            .map(|n| n["session"].as_str().expect("a session id"))
            .collect();
        assert_eq!(sessions.len(), 200);
        for id in sessions.iter().step_by(10) {
            assert_eq!(
                common::http_list_tools(server.port, id),
                404,
                "wave {wave}: session {id} still served"
            );
        }
    }
    let (status, stdout, stderr) = server.terminate();
    eprintln!("RSS after each wave (KiB): {rss:?}");
    assert!(stdout.is_empty(), "printed on stdout: {stdout}");
    assert!(
        !stderr.contains("Traceback") && !stderr.contains("database error"),
        "{stderr}"
    );
    // A stop ends the server by the signal, after its clean path (no grace-period end).
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}\n{stderr}");
    assert!(!stderr.contains("still running"), "{stderr}");
    assert_eq!(acked.len(), 300 + 4 * 200);
    assert_stored_exactly(&db, &acked);
    // Memory stays flat once the first wave has set the allocator's high-water mark (it
    // added 17 % in one run): a coarse guard against leaks per request. A leak grows
    // RSS by about the same amount every wave; a later wave that ran more of its 200
    // sessions at once (a busy machine: +9 % and +5 % in waves 3 and 4 of one run under
    // a parallel build, +1 % in wave 2) raises the high-water mark irregularly. So a
    // failure is growth in every wave, or more than 25 % in all. Kept sessions are too
    // small to show here (with sessions never reaped, waves 2 to 4 added 4 %), so the
    // 404s above are what shows that abandoned sessions are freed.
    let steps: Vec<f64> = rss.windows(2).map(|w| w[1] as f64 / w[0] as f64).collect();
    assert!(
        steps.iter().any(|&g| g <= 1.03) && rss[3] as f64 <= rss[1] as f64 * 1.25,
        "RSS grew in every wave, or by more than 25 % from wave 2 to 4 (after each wave: \
         {rss:?} KiB)"
    );
}

#[test]
fn stateless_http_serves_without_sessions() {
    js_dir();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    let server = common::spawn_http_server(&db, &["--stateless"]);
    let url = server.url();
    let s = load(&url, 20, 1, "");
    assert_eq!(s["failed"], 0, "{s}");
    // No session id is handed out.
    let resp = Command::new("node")
        .current_dir(js_dir())
        .args([
            "-e",
            &format!(
                "const r = await fetch('{url}', {{method: 'POST', headers: {{'content-type': 'application/json', accept: 'application/json, text/event-stream'}}, body: JSON.stringify({{jsonrpc: '2.0', id: 1, method: 'initialize', params: {{protocolVersion: '2025-06-18', capabilities: {{}}, clientInfo: {{name: 't', version: '0'}}}}}})}}); console.log(r.status, r.headers.get('mcp-session-id'));"
            ),
            "--input-type=module",
        ])
        .output_within(support::TIMEOUT);
    let printed = String::from_utf8_lossy(&resp.stdout);
    assert_eq!(printed.trim(), "200 null", "{printed}");
    let (_, stdout, _) = server.terminate();
    assert!(stdout.is_empty());
    let mut acked = BTreeMap::new();
    acknowledged(&s, &mut acked);
    assert_stored_exactly(&db, &acked);
}

#[test]
fn oversized_inputs_are_refused_quickly_and_the_server_stays_responsive() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    let mut s = common::Session::spawn(common::clean_command(&common::binary(), &db));
    s.initialize();
    let words: String = (0..150_000).map(|i| format!("w{i} ")).collect();
    for (tool, args, want) in [
        ("search_notes", json!({"query": words}), "longer than"),
        (
            "search_notes",
            json!({"query": "a ".repeat(40)}),
            "at most 32",
        ),
        (
            "search_notes",
            json!({"query": "x".repeat(20_000_000)}),
            "longer than",
        ),
        (
            "add_note",
            json!({"title": "t", "body": "b", "tags": (0..60).map(|i| i.to_string()).collect::<Vec<_>>()}),
            "at most 50 tags",
        ),
        (
            "add_note",
            json!({"title": "t", "body": "b", "tags": ["x".repeat(200)]}),
            "longer than 100",
        ),
        (
            "list_notes",
            json!({"tag": "x".repeat(200)}),
            "longer than 100",
        ),
    ] {
        let r = s.call_tool(tool, args);
        assert_eq!(r["isError"], true, "{tool}: {r}");
        assert!(
            common::text(&r).contains(want),
            "{tool}: {}",
            common::text(&r)
        );
    }
    let ok = s.call_tool("add_note", json!({"title": "after", "body": "still here"}));
    assert_eq!(ok["isError"], false, "{ok}");
    assert!(s.finish().success());
}
