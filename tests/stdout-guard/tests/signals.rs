//! A server that handles SIGINT and SIGTERM itself through asyncio's
//! `loop.add_signal_handler` (anyio's `open_signal_receiver`), which replaces the
//! signal wakeup fd: its handler still gets every signal, what it sees of the wakeup fd
//! is what a venv shows, and the runtime still ends its stdio session on the signal, so
//! the process ends by it (issue 30). And a stop whose `KeyboardInterrupt` is swallowed
//! during the import still ends the process.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Instant;

use pykiln_test_support::{self as support, CommandExt as _};

/// A server started with piped stdio, its stderr read line by line by a thread that
/// also keeps all of it (`reader`'s result).
struct Started {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    reader: std::thread::JoinHandle<String>,
}

/// Start `exe` and wait until its stderr shows a line containing `ready`; on a time-out,
/// kill it and fail with `never` and its threads' state.
fn start(exe: &str, ready: &str, never: &str) -> Started {
    let mut child = Command::new(exe)
        .env_clear()
        .default_stop_signals()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {exe}: {e}"));
    let stdin = child.stdin.take().expect("piped stdin");
    let (tx, rx) = channel();
    let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + support::TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(ready) => break,
            Ok(_) => {}
            Err(_) => {
                let state = support::threads(child.id());
                let _ = child.kill();
                panic!("{never}:\n{state}");
            }
        }
    }
    Started {
        child,
        stdin,
        reader,
    }
}

#[test]
fn an_app_that_sets_its_own_wakeup_fd_still_stops_and_sees_its_signals() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        for initialize in [false, true] {
            // The signal goes only once the app's handler is in place (it says so).
            let Started {
                mut child,
                mut stdin,
                reader,
            } = start(
                env!("CARGO_BIN_EXE_signal-server"),
                "signal-server: watching signals",
                "the server never said it watches its signals",
            );
            if initialize {
                writeln!(stdin, "{}", support::INITIALIZE).expect("write initialize");
                let line = support::first_line(&mut child, support::TIMEOUT, "initialize");
                assert!(line.contains("\"result\""), "{line}");
            } else {
                support::wait_reading_stdin(child.id(), support::TIMEOUT);
            }
            support::kill(child.id(), signal);
            let status = support::wait_within(
                &mut child,
                support::TIMEOUT,
                &format!("signal-server after signal {signal}"),
            );
            drop(stdin);
            let stderr = reader.join().unwrap_or_default();
            assert_eq!(status.signal(), Some(signal), "{status:?}\n{stderr}");
            assert!(!stderr.contains("still running"), "{stderr}");
            assert!(
                stderr.contains("signal-server: wakeup fd before the app set one: -1"),
                "{stderr}"
            );
            assert!(
                stderr.contains(&format!(
                    "signal-server: the app's handler got signal {signal}"
                )),
                "the app's own handler ran:\n{stderr}"
            );
        }
    }
}

/// CPython can swallow the `KeyboardInterrupt` of a stop that lands during the import
/// (inside a weakref callback of the import system it prints "Exception ignored" and
/// goes on); the import then completes as if nothing happened. The stop must still
/// keep the server from starting, so that the process ends by the signal at once rather
/// than run until the grace period.
#[test]
fn a_stop_swallowed_during_the_import_still_ends_the_process() {
    let Started {
        mut child,
        stdin,
        reader,
    } = start(
        env!("CARGO_BIN_EXE_swallow-server"),
        "swallow-server: importing",
        "the server never started its import",
    );
    support::kill(child.id(), libc::SIGINT);
    let status = support::wait_within(&mut child, support::TIMEOUT, "swallow-server after SIGINT");
    drop(stdin);
    let stderr = reader.join().unwrap_or_default();
    assert!(stderr.contains("swallowed a KeyboardInterrupt"), "{stderr}");
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}\n{stderr}");
    assert!(!stderr.contains("swallow-server: serving"), "{stderr}");
    assert!(
        !stderr.contains("still running"),
        "the grace period ended it:\n{stderr}"
    );
}
