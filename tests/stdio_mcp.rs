//! The packaged demo server speaks MCP over stdio, from a clean environment.

mod common;
use common::support::{self, CommandExt as _};

use common::{Session, binary, clean_command, exercise_notes_server, info};
use serde_json::Value;
use std::os::unix::process::ExitStatusExt as _;

#[test]
fn full_mcp_exchange_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::spawn(clean_command(&binary(), &dir.path().join("notes.db")));
    exercise_notes_server(&mut s);
    let transcript = s.transcript.clone();
    let status = s.finish();
    assert!(
        status.success(),
        "server exits 0 when stdin closes: {status:?}"
    );
    for line in transcript {
        let v: Value = serde_json::from_str(&line).expect("stdout carries only JSON-RPC");
        assert_eq!(v["jsonrpc"], "2.0", "{line}");
    }
}

#[test]
fn sqlite_is_the_bundled_one() {
    let bin = binary();
    let inside = common::stdout_of(
        std::process::Command::new(&bin)
            .args([
                "--pykiln",
                "python",
                "-c",
                "import sqlite3; print(sqlite3.sqlite_version)",
            ])
            .env_clear(),
    )
    .trim()
    .to_string();
    let bundled = info(&bin)["sqlite_version"].as_str().unwrap().to_string();
    assert_eq!(
        inside, bundled,
        "Python's sqlite3 uses the SQLite compiled into the binary"
    );
    // Debian 12's libsqlite3 is 3.40.1; the bundled one is newer and has FTS5 and math.
    let parts: Vec<u32> = bundled.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(
        parts[0] == 3 && parts[1] >= 45,
        "bundled SQLite {bundled} is current"
    );
    let out = std::process::Command::new(&bin)
        .args([
            "--pykiln", "python", "-c",
            "import sqlite3; c = sqlite3.connect(':memory:'); \
             c.execute('create virtual table t using fts5(x)'); \
             print(c.execute('select sqrt(16), json_extract(\\'{\"a\": 2}\\', \\'$.a\\')').fetchone())",
        ])
        .env_clear()
        .output_within(support::TIMEOUT);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "(4.0, 2)",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn info_describes_the_binary() {
    let bin = binary();
    let v = info(&bin);
    assert_eq!(v["app"]["entry_point"], "pykiln_notes.server:main");
    assert!(
        v["distributions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "mcp" && d["version"] == "2.3.0"),
        "{v}"
    );
    let offset = v["archive"]["offset"].as_u64().unwrap();
    let length = v["archive"]["length"].as_u64().unwrap();
    let file = std::fs::read(&bin).unwrap();
    assert!(offset + length <= file.len() as u64);
    assert_eq!(
        &file[offset as usize..offset as usize + 8],
        pykiln_archive::MAGIC,
        "offset points at the archive header"
    );
    let archive =
        pykiln_archive::Archive::open(&file[offset as usize..(offset + length) as usize]).unwrap();
    assert_eq!(
        archive.len() as u64,
        v["archive"]["entries"].as_u64().unwrap()
    );
}

#[test]
fn verify_passes_on_the_demo_binary() {
    let out = std::process::Command::new(binary())
        .args(["--pykiln", "verify"])
        .env_clear()
        .output_within(support::TIMEOUT);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains(" 0 failed"), "{report}");
    let imported: usize = report
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("verify: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        imported > 500,
        "verify imported the stdlib and dependencies: {report}"
    );
}

#[test]
fn python_console_runs_code_and_modules() {
    let bin = binary();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .arg("--pykiln")
            .arg("python")
            .args(args)
            .env_clear()
            .output_within(support::TIMEOUT);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&[
        "-c",
        "import sys, json; print(json.dumps(sys.argv[1:]), sys.executable == sys.argv[0] or sys.executable)",
        "a b",
        "--x",
    ]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("[\"a b\", \"--x\"]"), "{out}");
    let (code, out, err) = run(&["-m", "json.tool", "--help"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("usage"), "{out}");
    let (code, _, err) = run(&["-c", "raise SystemExit(7)"]);
    assert_eq!(code, Some(7), "{err}");
    let (code, _, err) = run(&["-c", "1/0"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("ZeroDivisionError") && err.contains("Traceback"),
        "{err}"
    );
}

#[test]
fn server_arguments_and_exit_status_pass_through() {
    let bin = binary();
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .env_clear()
        .output_within(support::TIMEOUT);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pykiln-notes 0.1.0"));
    let out = std::process::Command::new(&bin)
        .arg("--transport")
        .arg("carrier-pigeon")
        .env_clear()
        .output_within(support::TIMEOUT);
    assert_eq!(out.status.code(), Some(2), "argparse's usage error status");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid choice"));
    // Unopenable database: the server's own error, exit 2.
    let out = std::process::Command::new(&bin)
        .args(["--db", "/proc/nonexistent/x.db"])
        .env_clear()
        .output_within(support::TIMEOUT);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "nothing on stdout");
}

#[test]
fn tracebacks_show_app_source_lines() {
    let out = std::process::Command::new(binary())
        .args([
            "--pykiln",
            "python",
            "-c",
            "from pykiln_notes.store import NoteStore; NoteStore(':memory:').get(5)",
        ])
        .env_clear()
        .output_within(support::TIMEOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pykiln_notes/store.py"), "{err}");
    assert!(
        err.contains("raise NoteError(f\"no note with id {note_id}\")"),
        "source line shown: {err}"
    );
}

/// SIGINT and SIGTERM end a stdio server at once, idle or mid-session, with stdin
/// still open, and the process ends by the signal (a shell shows 130 or 143): the
/// runtime ends the server's stdin so its blocked reader thread returns (issue 15.3).
/// The grace-period fallback announces itself on stderr; it must not be what ended the
/// server.
#[test]
fn sigint_and_sigterm_end_a_stdio_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        for initialize in [false, true] {
            let cmd = clean_command(&binary(), &dir.path().join("n.db"));
            let (status, stderr) = common::stop_with_signal(cmd, signal, initialize);
            let when = if initialize {
                "after initialize"
            } else {
                "idle"
            };
            assert_eq!(
                status.signal(),
                Some(signal),
                "{name} {when}: {status:?}\n{stderr}"
            );
            assert!(
                !stderr.contains("still running"),
                "{name} {when}: clean path did not finish:\n{stderr}"
            );
            assert!(!stderr.contains("Traceback"), "{name} {when}:\n{stderr}");
        }
    }
}

/// A stop signal is never lost, whenever it arrives (issue 30): swept over the whole
/// start-up — from before the runtime is up, through the interpreter's start and the
/// server's imports, to the idle server — every run ends by that signal within a few
/// seconds, with stdin still open (so only the signal can end it), never by the
/// grace-period fallback. The sweep spans 1.3 times the start-up this binary measured
/// here (at least 600 ms), in steps small enough to land in every phase, each moment
/// jittered within its step so that repeated runs cover the span densely.
#[test]
fn a_stop_signal_at_any_moment_of_the_start_up_ends_the_server() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let spawn = |db: &std::path::Path| {
        clean_command(&binary(), db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the server")
    };
    // How long this binary takes to read its stdin here (the slowest of three).
    let mut startup = Duration::ZERO;
    for _ in 0..3 {
        let mut child = spawn(&dir.path().join("probe.db"));
        let t = Instant::now();
        support::wait_reading_stdin(child.id(), common::TIMEOUT);
        startup = startup.max(t.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }
    let span = (startup * 13 / 10).max(Duration::from_millis(600));
    let steps = 64u32;
    // Small xorshifts, seeded from the clock (printed, so a failure can be re-run).
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("sweep seed {seed}");
    // One sweep per signal, side by side: half the time, and each start competes with
    // another for the CPU, as on a busy machine.
    let sweep = |signal: i32| {
        let db = dir.path().join(format!("n{signal}.db"));
        let mut state = seed ^ (signal as u64) << 32;
        for i in 0..steps {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let delay = span * (i * 1000 + (state % 1000) as u32) / (steps * 1000);
            let mut child = spawn(&db);
            let stdin = child.stdin.take();
            std::thread::sleep(delay);
            support::kill(child.id(), signal);
            // A stop ends the server in well under a second; past this bound (beyond
            // the grace period, with room for a busy machine) it has lost the signal,
            // and the failure shows what it was doing.
            let out = support::output_of(
                child,
                Duration::from_secs(10),
                &format!("the server signalled {signal} {delay:?} after spawn"),
            );
            drop(stdin);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.signal(),
                Some(signal),
                "signal {signal} {delay:?} after spawn (seed {seed}): {:?}\n{stderr}",
                out.status
            );
            assert!(
                !stderr.contains("still running"),
                "signal {signal} {delay:?} after spawn (seed {seed}): the grace period ended it:\n{stderr}"
            );
        }
    };
    std::thread::scope(|s| {
        let int = s.spawn(|| sweep(libc::SIGINT));
        let term = s.spawn(|| sweep(libc::SIGTERM));
        for (name, t) in [("SIGINT", int), ("SIGTERM", term)] {
            if let Err(panic) = t.join() {
                eprintln!("the {name} sweep failed");
                std::panic::resume_unwind(panic);
            }
        }
    });
    eprintln!("swept 0..{span:?} (start-up {startup:?}) in {steps} steps per signal, seed {seed}");
}

/// `--pykiln info` names the oldest glibc the binary runs on (issue 9.7): the
/// executable's requirement is what binutils' readelf reads from it, and the build's
/// prediction (made before the link, recorded in the manifest) matches it.
#[test]
fn info_names_the_oldest_glibc() {
    let bin = binary();
    let v = common::info(&bin);
    let glibc = &v["glibc"];
    let out = std::process::Command::new("readelf")
        .args(["-V", "--wide"])
        .arg(&bin)
        .output_within(support::TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout);
    let newest = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut p = v.split('.');
            Some((
                p.next()?.parse::<u32>().ok()?,
                p.next()?.parse::<u32>().ok()?,
            ))
        })
        .max()
        .expect("versioned glibc symbols");
    assert_eq!(
        glibc["executable"],
        format!("{}.{}", newest.0, newest.1),
        "{glibc}"
    );
    assert_eq!(
        v["build"]["min_glibc_executable"], glibc["executable"],
        "{v}"
    );
    assert_eq!(v["build"]["min_glibc"], glibc["minimum"], "{v}");
    assert!(glibc["needed_by"].as_str().is_some_and(|s| !s.is_empty()));
}
