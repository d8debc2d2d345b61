//! What the end-to-end tests share: every wait on a child process is bounded, and a
//! child that outlives its bound is killed after its state is recorded, so a hang fails
//! the test with what the process was doing (its threads, its stderr) instead of eating
//! CI's time.
//!
//! Use [`CommandExt::output_within`] / [`CommandExt::status_within`] instead of
//! `Command::output` / `status`, and [`wait_within`] / [`output_of`] for a spawned
//! [`Child`].

pub mod mcp;

use std::io::{BufRead as _, Read, Write as _};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default bound: generous, since the machines are shared; it only catches hangs.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The bound for builds (pip downloads, a runner's first compile, cargo): only a hang
/// guard, far above any build's time on a cold machine.
pub const LONG: Duration = Duration::from_secs(30 * 60);

/// Bounded versions of `Command::output` and `Command::status`.
pub trait CommandExt {
    /// Like `output()` (stdin is /dev/null, stdout and stderr captured), but a child
    /// still running after `limit` is killed and the test fails with its threads' state
    /// and what it wrote.
    fn output_within(&mut self, limit: Duration) -> Output;
    /// Like `status()` (stdio inherited), bounded the same way.
    fn status_within(&mut self, limit: Duration) -> ExitStatus;
    /// Start the child with SIGINT and SIGQUIT at their default disposition, as an MCP
    /// client or a terminal starts a server. A test run started in the background by a
    /// non-interactive shell (`cmd &`) inherits them ignored, and a server started so
    /// rightly ignores SIGINT, as a venv's Python does: tests that send it need this.
    fn default_stop_signals(&mut self) -> &mut Self;
}

impl CommandExt for Command {
    fn output_within(&mut self, limit: Duration) -> Output {
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe_command(self)));
        output_of(child, limit, &describe_command(self))
    }

    fn status_within(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe_command(self)));
        wait_within(&mut child, limit, &describe_command(self))
    }

    fn default_stop_signals(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
        unsafe {
            self.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            })
        }
    }
}

fn describe_command(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args().take(6) {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if cmd.get_args().len() > 6 {
        s.push_str(" …");
    }
    s
}

/// Read `from` to its end in a thread (a full pipe would block the child).
pub fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        all
    })
}

/// Wait for `child` at most `limit`; past it, record its state, kill it and fail.
/// `what` names it in the failure.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    match try_wait_within(child, limit) {
        Some(status) => status,
        None => {
            let state = threads(child.id());
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} (pid {}) still running after {limit:?}; killed. Its threads:\n{state}",
                child.id()
            );
        }
    }
}

/// Wait for `child` at most `limit`; None if it is still running then (it is left
/// running: the caller decides).
pub fn try_wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return Some(status);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Like `Child::wait_with_output`, bounded: stdout and stderr (those that are piped)
/// are read as the child runs; past `limit` the failure shows its threads and stderr.
pub fn output_of(mut child: Child, limit: Duration, what: &str) -> Output {
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = try_wait_within(&mut child, limit);
    let state = if status.is_none() {
        let state = threads(child.id());
        let _ = child.kill();
        let _ = child.wait();
        Some(state)
    } else {
        None
    };
    let join = |h: Option<JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    let (stdout, stderr) = (join(stdout), join(stderr));
    match (status, state) {
        (Some(status), _) => Output {
            status,
            stdout,
            stderr,
        },
        (None, state) => panic!(
            "{what} (pid {}) still running after {limit:?}; killed. Its threads:\n{}\nstderr:\n{}",
            child.id(),
            state.unwrap_or_default(),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// One line per thread of `pid` (and of its child processes): id, name, state, the
/// kernel function it waits in and its current system call — what a hung process was
/// doing.
pub fn threads(pid: u32) -> String {
    let mut out = String::new();
    describe_process(pid, 0, &mut out);
    out
}

fn describe_process(pid: u32, depth: usize, out: &mut String) {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let indent = "  ".repeat(depth);
    let cmdline = read(Path::new(&format!("/proc/{pid}/cmdline"))).replace('\0', " ");
    out.push_str(&format!("{indent}process {pid}: {}\n", cmdline.trim()));
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        out.push_str(&format!("{indent}  (gone)\n"));
        return;
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let dir = task.path();
        let status = read(&dir.join("status"));
        let state = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        out.push_str(&format!(
            "{indent}  {} {:<16} {:<14} wchan={} syscall={}\n",
            task.file_name().to_string_lossy(),
            read(&dir.join("comm")).trim(),
            state,
            read(&dir.join("wchan")).trim(),
            read(&dir.join("syscall")).trim(),
        ));
        children.extend(
            read(&dir.join("children"))
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    for child in children {
        describe_process(child, depth + 1, out);
    }
}

/// The names of the pykiln runtime's own threads.
pub const RUNTIME_THREADS: [&str; 3] = ["pykiln-stdin", "pykiln-signals", "pykiln-prefetch"];

/// Waits until a thread of `pid` that is not one of the runtime's ([`RUNTIME_THREADS`])
/// is blocked in `read(2)` on a pipe or socket — the application's stdin reader (the
/// MCP SDK reads a duplicate of fd 0 in a worker thread) — up to `limit`; fails with
/// the threads' state past it.
pub fn wait_reading_stdin(pid: u32, limit: Duration) {
    let start = Instant::now();
    let reading = || -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().any(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if RUNTIME_THREADS.contains(&comm.trim()) {
                return false;
            }
            let text = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
            let mut fields = text.split_whitespace();
            if fields.next() != Some(&libc::SYS_read.to_string()) {
                return false;
            }
            let Some(fd) = fields
                .next()
                .and_then(|f| i64::from_str_radix(f.trim_start_matches("0x"), 16).ok())
            else {
                return false;
            };
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|t| {
                let t = t.to_string_lossy();
                t.starts_with("socket:") || t.starts_with("pipe:")
            })
        })
    };
    while !reading() {
        if start.elapsed() > limit {
            panic!(
                "process {pid} never blocked reading its stdin within {limit:?}. Its threads:\n{}",
                threads(pid)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The first line `child` writes on its (piped) stdout, within `limit`; past it the
/// child is killed and the failure shows its threads and stderr.
pub fn first_line(child: &mut Child, limit: Duration, what: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(limit) {
        Ok(line) => line,
        Err(_) => {
            let state = threads(child.id());
            let _ = child.kill();
            let _ = child.wait();
            let stderr = child
                .stderr
                .take()
                .map(|mut e| {
                    let mut s = String::new();
                    let _ = e.read_to_string(&mut s);
                    s
                })
                .unwrap_or_default();
            panic!(
                "{what}: no line on stdout within {limit:?}; killed. Its threads:\n{state}\nstderr:\n{stderr}"
            )
        }
    }
}

/// An MCP `initialize` request, one line.
pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"pykiln-tests","version":"0"}}}"#;

/// Start `cmd` as a stdio MCP server, optionally complete `initialize` (else wait until
/// it reads its stdin), send it `signal` and wait for it to end, stdin still open;
/// returns its status and stderr. Every wait is bounded by `limit`.
pub fn stop_with_signal(
    mut cmd: Command,
    signal: i32,
    initialize: bool,
    limit: Duration,
) -> (ExitStatus, String) {
    let mut child = cmd
        .default_stop_signals()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let mut stdin = child.stdin.take().expect("piped stdin");
    if initialize {
        writeln!(stdin, "{INITIALIZE}").expect("write initialize");
        let line = first_line(&mut child, limit, "initialize");
        assert!(line.contains("\"result\""), "initialize: {line}");
    } else {
        wait_reading_stdin(child.id(), limit);
    }
    kill(child.id(), signal);
    let out = output_of(child, limit, &format!("the server after signal {signal}"));
    drop(stdin);
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Send `signal` to `pid`.
pub fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid and a signal number; errors (a process already gone)
    // are the caller's to notice through its wait.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Compile a shared library at `out` whose constructor creates the file `marker`: a
/// payload an attacker would plant, whose marker proves it was (or was never) loaded.
/// Needs a C compiler (`cc`).
pub fn marker_library(out: &Path, marker: &Path) {
    let src = out.with_extension("c");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void pwn(void) {{ FILE *f = fopen(\"{}\", \"w\"); if (f) fclose(f); }}\n",
            marker.display()
        ),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", src.display()));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(out)
        .arg(&src)
        .status_within(TIMEOUT);
    assert!(status.success(), "cc could not build {}", out.display());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn a_quick_child_gives_its_output() {
        let out = Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .output_within(Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn a_hung_child_is_killed_and_described() {
        let result = std::panic::catch_unwind(|| {
            Command::new("sh")
                .args(["-c", "echo waiting >&2; exec sleep 60"])
                .output_within(Duration::from_millis(500))
        });
        let msg = result.expect_err("the bound fails the test");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("still running after"), "{msg}");
        assert!(msg.contains("sleep"), "threads named: {msg}");
        assert!(msg.contains("waiting"), "stderr shown: {msg}");
    }

    #[test]
    fn a_child_reading_stdin_is_seen() {
        let mut child = Command::new("sh")
            .args(["-c", "read line"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        wait_reading_stdin(child.id(), Duration::from_secs(30));
        kill(child.id(), libc::SIGTERM);
        let status = wait_within(&mut child, Duration::from_secs(30), "sh");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }
}
