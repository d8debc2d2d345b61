//! Shared helpers for the end-to-end tests: the built binary and a small MCP client.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// Generous: the machines are shared; this only bounds a hang.
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub use pykiln_test_support as support;

/// The release binary cargo built for this test run.
pub fn binary() -> PathBuf {
    // The same suite runs against the notes server made by the `pykiln` CLI (a runner
    // with the archive appended; tests/cli-built sets this) as against cargo's build.
    match std::env::var_os(BINARY_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_pykiln-notes")),
    }
}

/// Names another notes binary to test instead of the one cargo built.
pub const BINARY_ENV: &str = "PYKILN_NOTES_BIN";

/// A command for the binary with an empty environment except what is given, and a
/// private database.
pub fn clean_command(bin: &Path, db: &Path) -> Command {
    use support::CommandExt as _;
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .default_stop_signals()
        .env("PYKILN_NOTES_DB", db)
        .env("HOME", db.parent().unwrap_or(Path::new("/tmp")));
    cmd
}

pub use support::mcp::{Session, text};

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
    use support::CommandExt as _;
    let out = cmd.output_within(TIMEOUT);
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

/// A free loopback port (bound and released; the server binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A streamable-HTTP server started by [`spawn_http_server`]. Its stdout and stderr are
/// drained by threads as it runs: a full pipe would block the server's event loop on
/// its next log line.
pub struct HttpServer {
    /// The server process.
    pub child: Child,
    /// Its loopback port.
    pub port: u16,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Drop for HttpServer {
    /// A test that fails midway leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HttpServer {
    /// The MCP endpoint's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Send SIGTERM and wait; returns the exit status and everything printed on stdout
    /// and stderr.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String, String) {
        support::kill(self.child.id(), libc::SIGTERM);
        let status =
            support::wait_within(&mut self.child, TIMEOUT, "the HTTP server after SIGTERM");
        let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            let bytes = h.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        (status, join(self.stdout.take()), join(self.stderr.take()))
    }
}

/// Start the binary as a streamable-HTTP server on a free port with `extra` arguments;
/// returns it once it answers HTTP. Its output is kept so tests can check that nothing
/// was printed on stdout.
pub fn spawn_http_server(db: &Path, extra: &[&str]) -> HttpServer {
    let port = free_port();
    let mut server = Command::new(binary())
        .args(["--transport", "http", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--db")
        .arg(db)
        .args(extra)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn HTTP server");
    let start = std::time::Instant::now();
    // Ready means an HTTP answer, not merely a completed connect: a bare connect can
    // "succeed" by TCP self-connect (the probe's ephemeral source port equal to `port`),
    // and such a socket echoes the request back instead of answering it.
    let listening = || {
        use std::io::Read as _;
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let mut head = [0u8; 5];
        c.write_all(b"GET /health-probe HTTP/1.0\r\n\r\n").is_ok()
            && c.read_exact(&mut head).is_ok()
            && &head == b"HTTP/"
    };
    while !listening() {
        assert!(
            start.elapsed() < TIMEOUT,
            "HTTP server did not start listening"
        );
        if let Some(status) = server.try_wait().expect("wait") {
            panic!("HTTP server exited early: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stdout = support::drain(server.stdout.take().expect("piped stdout"));
    let stderr = support::drain(server.stderr.take().expect("piped stderr"));
    HttpServer {
        child: server,
        port,
        stdout: Some(stdout),
        stderr: Some(stderr),
    }
}

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Every note in a notes database, `(id, title)`, read with the binary's own Python.
pub fn notes_in(db: &Path) -> Vec<(i64, String)> {
    let out = stdout_of(
        Command::new(binary())
            .args([
                "--pykiln",
                "python",
                "-c",
                "import sqlite3, sys, json\n\
                 db = sqlite3.connect(sys.argv[1])\n\
                 print(json.dumps(db.execute('SELECT id, title FROM notes ORDER BY id').fetchall()))",
            ])
            .arg(db)
            .env_clear(),
    );
    serde_json::from_str(out.trim()).expect("notes as JSON")
}

/// Start `cmd` as a stdio server, optionally complete `initialize`, send it `signal`
/// and wait for it to end (see [`support::stop_with_signal`]).
pub fn stop_with_signal(
    cmd: Command,
    signal: i32,
    initialize: bool,
) -> (std::process::ExitStatus, String) {
    support::stop_with_signal(cmd, signal, initialize, TIMEOUT)
}

/// tests/js, where tests/prereqs installs the MCP TypeScript SDK and inspector CLI.
pub fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk").is_dir(),
        "the MCP SDK is not installed: run `npm ci --prefix tests/js` (tests/prereqs does)"
    );
    dir
}

/// One HTTP/1.0 request to the server (connection closed after it), optionally from a
/// given loopback source address: status line, lower-cased headers, body.
pub fn http_request(
    port: u16,
    from: Option<&str>,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = match from {
        Some(addr) => connect_from(addr, port),
        None => std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!(
        "{method} /mcp HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    req += body;
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .expect("the server answers within 30 s");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// The JSON-RPC message in a response body (plain JSON or one SSE `data:` line).
pub fn http_message(body: &str) -> Value {
    let json = body
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap_or(body);
    serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// `tools/list` in session `id` of the demo on `port`: the HTTP status (the five tools
/// checked when it is 200).
pub fn http_list_tools(port: u16, id: &str) -> u16 {
    let req = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, _, body) = http_request(
        port,
        None,
        "POST",
        &[
            ("Mcp-Session-Id", id),
            ("Mcp-Protocol-Version", "2025-06-18"),
        ],
        &req.to_string(),
    );
    if status == 200 {
        assert_eq!(
            http_message(&body)["result"]["tools"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
    }
    status
}

/// A TCP connection to 127.0.0.1:`port` whose source address is `addr` (another
/// loopback address: another client as far as the server can tell).
pub fn connect_from(addr: &str, port: u16) -> std::net::TcpStream {
    use std::os::fd::FromRawFd as _;
    let src: std::net::Ipv4Addr = addr.parse().unwrap();
    // SAFETY: plain socket calls on a descriptor this function owns until it is
    // handed to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sin(src, 0);
        assert_eq!(
            libc::bind(fd, (&raw const local).cast(), len),
            0,
            "bind {addr}: {}",
            std::io::Error::last_os_error()
        );
        let remote = sin(std::net::Ipv4Addr::LOCALHOST, port);
        assert_eq!(
            libc::connect(fd, (&raw const remote).cast(), len),
            0,
            "connect: {}",
            std::io::Error::last_os_error()
        );
        stream
    }
}
