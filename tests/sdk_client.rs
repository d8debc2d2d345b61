//! A real third-party MCP client (the official TypeScript SDK, tests/js) drives the
//! packaged server over stdio and over streamable HTTP.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk").is_dir(),
        "the MCP SDK is not installed: run `npm ci --prefix tests/js` (.ci/run does)"
    );
    dir
}

fn node(args: &[&str]) -> std::process::Output {
    let out = Command::new("node")
        .current_dir(js_dir())
        .arg("client.mjs")
        .args(args)
        .output()
        .expect("node is installed");
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
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(common::binary())
        .args([
            "--transport",
            "http",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--db",
        ])
        .arg(dir.path().join("notes.db"))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Ready means an HTTP answer, not merely a completed connect: a bare connect can
    // "succeed" by TCP self-connect (the probe's ephemeral source port equal to `port`),
    // and such a socket echoes the request back instead of answering it.
    let listening = || {
        use std::io::{Read as _, Write as _};
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
            start.elapsed() < common::TIMEOUT,
            "HTTP server did not start listening"
        );
        if let Some(status) = server.try_wait().unwrap() {
            panic!("HTTP server exited early: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}/mcp");
    let out = node(&["http", &url]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"mode\":\"http\""));
    // SAFETY: kill(2) on our own child. (uvicorn's access log goes to stdout in HTTP
    // mode, where stdout is not the protocol channel, so it is not checked here.)
    unsafe { kill(server.id() as i32, 15) };
    let status = server.wait().unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert!(
        status.code() == Some(143) || status.success() || status.signal() == Some(15),
        "{status:?}"
    );
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
