//! Three public MCP servers from PyPI, packed by pykiln, driven by the official MCP
//! inspector CLI (`@modelcontextprotocol/inspector-cli`, installed by tests/prereqs):
//! tools/list and a real tool call each.

use pykiln_test_support::{self as support, CommandExt as _};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../js")
}

/// `inspector-cli <bin> <args> --method …`, parsed JSON of its stdout.
fn inspect(bin: &str, server_args: &[&str], method: &[&str]) -> Value {
    let cli = js_dir().join("node_modules/@modelcontextprotocol/inspector-cli/build/index.js");
    assert!(
        cli.exists(),
        "{} is missing: run tests/prereqs (npm ci in tests/js)",
        cli.display()
    );
    let out = Command::new("node")
        .arg(&cli)
        .arg(bin)
        .args(server_args)
        .args(method)
        // inspector-cli 1.0.3 looks for "../package.json" relative to the working
        // directory but imports it relative to its own file; from node_modules both
        // resolve.
        .current_dir(js_dir().join("node_modules"))
        .output_within(support::TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspector {method:?} on {bin} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

fn tool_names(list: &Value) -> Vec<String> {
    list["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn text_of(result: &Value) -> String {
    assert_eq!(result["isError"], false, "{result}");
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn mcp_server_time() {
    let bin = env!("CARGO_BIN_EXE_mcp-server-time");
    let names = tool_names(&inspect(bin, &[], &["--method", "tools/list"]));
    assert!(names.contains(&"convert_time".to_string()), "{names:?}");
    let result = inspect(
        bin,
        &[],
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "convert_time",
            "--tool-arg",
            "source_timezone=Europe/Paris",
            "time=12:00",
            "target_timezone=Asia/Tokyo",
        ],
    );
    let text = text_of(&result);
    let diff = result["structuredContent"]["time_difference"].as_str();
    // +8 h in the European winter, +7 h in summer.
    assert!(matches!(diff, Some("+8.0h" | "+7.0h")), "{text}");
    assert!(text.contains("Asia/Tokyo"), "{text}");
}

/// A one-page web site on 127.0.0.1 (robots.txt: 404, i.e. everything allowed).
fn serve_page() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let (status, body) = if request.contains("/robots.txt") {
                ("404 Not Found", String::new())
            } else {
                (
                    "200 OK",
                    "<html><head><title>Kiln</title></head><body><article><h1>Kiln notes</h1>\
                     <p>Firing bytecode at 1300 degrees.</p></article></body></html>"
                        .to_string(),
                )
            };
            let mut s = &stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn mcp_server_fetch() {
    let bin = env!("CARGO_BIN_EXE_mcp-server-fetch");
    let names = tool_names(&inspect(bin, &[], &["--method", "tools/list"]));
    assert_eq!(names, ["fetch"]);
    let port = serve_page();
    let url = format!("url=http://127.0.0.1:{port}/kiln.html");
    let text = text_of(&inspect(
        bin,
        &["--allow-private-ips"],
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "fetch",
            "--tool-arg",
            &url,
        ],
    ));
    assert!(text.contains("Firing bytecode at 1300 degrees."), "{text}");
}

#[test]
fn mcp_server_git() {
    let bin = env!("CARGO_BIN_EXE_mcp-server-git");
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=pykiln",
                "-c",
                "user.email=pykiln@example.invalid",
            ])
            .args(args)
            .current_dir(repo.path())
            .output_within(support::TIMEOUT);
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("kiln.txt"), "fired\n").unwrap();
    git(&["add", "kiln.txt"]);
    git(&["commit", "-q", "-m", "First firing"]);
    std::fs::write(repo.path().join("new.txt"), "glaze\n").unwrap();

    let names = tool_names(&inspect(bin, &[], &["--method", "tools/list"]));
    for t in ["git_status", "git_log", "git_diff_unstaged"] {
        assert!(names.contains(&t.to_string()), "{t} missing from {names:?}");
    }
    let repo_arg = format!("repo_path={}", repo.path().display());
    let status = text_of(&inspect(
        bin,
        &[],
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "git_status",
            "--tool-arg",
            &repo_arg,
        ],
    ));
    assert!(status.contains("new.txt"), "{status}");
    let log = text_of(&inspect(
        bin,
        &[],
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "git_log",
            "--tool-arg",
            &repo_arg,
        ],
    ));
    assert!(log.contains("First firing"), "{log}");
}

/// mcp-server-git's entry point is a click command: click turns the KeyboardInterrupt
/// of a stop into `Aborted!` and exit 1. Packed, the process still ends by the signal
/// (a shell shows 130 or 143) — what a supervisor expects of a server the signal
/// ended — and promptly (the runtime's grace-period fallback, which says so on stderr,
/// is not what ended it).
#[test]
fn a_click_server_ends_by_the_signal() {
    use std::os::unix::process::ExitStatusExt as _;
    let bin = env!("CARGO_BIN_EXE_mcp-server-git");
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut cmd = Command::new(bin);
        cmd.env_clear();
        let (status, stderr) = support::stop_with_signal(cmd, signal, true, support::TIMEOUT);
        assert_eq!(status.signal(), Some(signal), "{status:?}\n{stderr}");
        assert!(!stderr.contains("still running"), "{stderr}");
    }
}
