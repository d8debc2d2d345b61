//! Shared helpers for the end-to-end tests: the built binary and a small MCP client.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use serde_json::{Value, json};

/// Generous: the machines are shared; this only bounds a hang.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The release binary cargo built for this test run.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pykiln-notes"))
}

/// A command for the binary with an empty environment except what is given, and a
/// private database.
pub fn clean_command(bin: &Path, db: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PYKILN_NOTES_DB", db)
        .env("HOME", db.parent().unwrap_or(Path::new("/tmp")));
    cmd
}

/// An MCP session over a child's stdio.
pub struct Session {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
    /// Every stdout line seen, for protocol-cleanliness checks.
    pub transcript: Vec<String>,
}

impl Session {
    /// Spawn `cmd` with piped stdio (stderr inherited so failures are visible).
    pub fn spawn(mut cmd: Command) -> Session {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Session {
            child,
            stdin,
            lines: rx,
            next_id: 1,
            transcript: Vec::new(),
        }
    }

    fn send(&mut self, msg: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{msg}").expect("write to server");
        stdin.flush().expect("flush");
    }

    /// Send a request and wait for its response (skipping notifications).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let line = match self.lines.recv_timeout(TIMEOUT) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no response to {method} within {TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("server closed stdout before answering {method}")
                }
            };
            self.transcript.push(line.clone());
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("non-JSON line on stdout ({e}): {line}"));
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
        }
    }

    /// `initialize` + `notifications/initialized`; returns the initialize result.
    pub fn initialize(&mut self) -> Value {
        let r = self.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pykiln-tests", "version": "0"}}),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        r
    }

    /// `tools/call`, returning the result object.
    pub fn call_tool(&mut self, name: &str, args: Value) -> Value {
        let r = self.request("tools/call", json!({"name": name, "arguments": args}));
        r.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("tools/call {name} failed: {r}"))
    }

    /// Close stdin and wait for a clean exit.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Drain what is left so the transcript is complete.
                while let Ok(line) = self.lines.try_recv() {
                    self.transcript.push(line);
                }
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit after stdin closed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Text of the first content block of a tool result.
pub fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Run a full add/search/get/resource/prompt exchange and check every answer.
pub fn exercise_notes_server(s: &mut Session) {
    let init = s.initialize();
    assert_eq!(
        init["result"]["serverInfo"]["name"], "pykiln-notes",
        "{init}"
    );

    let tools = s.request("tools/list", json!({}));
    let mut names: Vec<String> = tools["result"]["tools"]
        .as_array()
        .expect("tools array")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "add_note",
            "delete_note",
            "get_note",
            "list_notes",
            "search_notes"
        ]
    );
    let add = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "add_note")
        .unwrap()
        .clone();
    assert!(
        add["description"].as_str().unwrap().contains("Save a note"),
        "docstrings survive packing: {add}"
    );

    let id = s.call_tool("add_note", json!({"title": "Kiln log", "body": "Bisque firing reached cone 04 overnight", "tags": ["pottery"]}));
    assert_eq!(id["isError"], false, "{id}");
    let id: i64 = text(&id).parse().expect("numeric id");
    s.call_tool(
        "add_note",
        json!({"title": "Groceries", "body": "clay, glaze, milk"}),
    );

    let found = s.call_tool("search_notes", json!({"query": "cone firing"}));
    assert_eq!(found["isError"], false, "{found}");
    let hits = &found["structuredContent"]["result"];
    assert_eq!(hits[0]["id"], id, "FTS5 finds the note: {found}");
    assert_eq!(
        hits.as_array().map(Vec::len),
        Some(1),
        "only the matching note: {found}"
    );

    let listed = s.call_tool("list_notes", json!({"tag": "pottery"}));
    assert_eq!(
        listed["structuredContent"]["result"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{listed}"
    );

    let missing = s.call_tool("get_note", json!({"id": 424242}));
    assert_eq!(missing["isError"], true, "{missing}");
    assert!(
        text(&missing).contains("no note with id 424242"),
        "{missing}"
    );
    let bad = s.call_tool("search_notes", json!({"query": "x", "limit": 0}));
    assert_eq!(bad["isError"], true, "{bad}");

    let res = s.request("resources/read", json!({"uri": format!("note://{id}")}));
    let body = res["result"]["contents"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        body.starts_with("# Kiln log") && body.contains("cone 04"),
        "{res}"
    );

    let prompt = s.request(
        "prompts/get",
        json!({"name": "summarize_notes", "arguments": {}}),
    );
    let msg = prompt["result"]["messages"][0]["content"]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("Kiln log") && msg.contains("Groceries"),
        "{prompt}"
    );

    assert_eq!(
        s.call_tool("delete_note", json!({"id": id}))["isError"],
        false
    );
    assert_eq!(s.call_tool("get_note", json!({"id": id}))["isError"], true);
}

/// `<binary> --pykiln info` as JSON.
pub fn info(bin: &Path) -> Value {
    let out = Command::new(bin)
        .args(["--pykiln", "info"])
        .output()
        .expect("run info");
    assert!(
        out.status.success(),
        "info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("info prints JSON")
}

/// Run `cmd` to completion and return its stdout, failing the test (with stderr) if it
/// exits non-zero.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{:?} failed ({:?}):\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The archive embedded in the built binary, read back from the file.
pub fn archive_bytes() -> Vec<u8> {
    let bin = binary();
    let i = info(&bin);
    let offset = i["archive"]["offset"].as_u64().expect("archive offset") as usize;
    let length = i["archive"]["length"].as_u64().expect("archive length") as usize;
    let file = std::fs::read(&bin).expect("read the binary");
    file[offset..offset + length].to_vec()
}
