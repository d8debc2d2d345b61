//! The notes server as a supervised sidecar: started once in the background, spoken to
//! over MCP on its stdio (rmcp's client), restarted with back-off when it dies, and
//! ended in order when the app quits.
//!
//! Why not `tauri-plugin-shell`'s `sidecar()`: its child hands out stdout as
//! `CommandEvent`s rather than a byte stream, only `kill()`s (SIGKILL, no chance to
//! close the database), and cannot set a process group or a parent-death signal. We
//! resolve the binary the way it does (next to the app's executable, where Tauri puts
//! `bundle.externalBin` both in `target/<profile>/` and in installed bundles) and spawn it
//! with tokio, which gives rmcp the `(AsyncRead, AsyncWrite)` pair it wants.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject,
};
use rmcp::service::{Peer, RoleClient, RunningService};
use rmcp::ServiceExt;
use serde::Serialize;
use tauri::async_runtime::JoinHandle;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{watch, Mutex};

/// What the page shows about the server; sent as the `sidecar` event on every change.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Status {
    /// Spawned (or about to be), waiting for the MCP handshake.
    Starting { attempt: u32 },
    /// Initialized; tool calls go through.
    Ready { pid: u32, startup_ms: u64 },
    /// Died or failed to start; the next attempt comes after `retry_in_ms`.
    Restarting {
        attempt: u32,
        retry_in_ms: u64,
        reason: String,
    },
    /// Ended because the app is quitting.
    Stopped,
}

/// Back-off between restarts: 250 ms doubling to 8 s. A server that stayed up for
/// `HEALTHY_AFTER` starts over at the shortest delay.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(8);
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// Generous: a cold start on a loaded machine, not the usual ~0.3 s.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a tool call waits for a (re)starting server before it gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// At quit: closing stdin ends the server; SIGTERM, then SIGKILL if it hangs.
const EXIT_GRACE: Duration = Duration::from_secs(3);

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The sidecar executable.
    pub program: PathBuf,
    /// Its arguments (`--db <app data dir>/notes.db`).
    pub args: Vec<OsString>,
}

impl Spec {
    /// The sidecar `name` next to the running executable, as Tauri places
    /// `bundle.externalBin` entries (without the target-triple suffix).
    pub fn beside_current_exe(name: &str, args: Vec<OsString>) -> std::io::Result<Self> {
        let exe = tauri::utils::platform::current_exe()?;
        let dir = exe.parent().ok_or_else(|| {
            std::io::Error::other(format!("{} has no parent directory", exe.display()))
        })?;
        Ok(Spec {
            program: dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)),
            args,
        })
    }
}

/// A handle on the supervised server; cheap to share between Tauri commands.
pub struct Sidecar {
    status: watch::Receiver<Status>,
    peer: watch::Receiver<Option<Peer<RoleClient>>>,
    quit: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Sidecar {
    /// Starts supervising in the background and returns at once: the window does not
    /// wait for the server. `on_status` sees every status change (it emits the event).
    pub fn start(spec: Spec, on_status: impl Fn(&Status) + Send + Sync + 'static) -> Self {
        let (status_tx, status) = watch::channel(Status::Starting { attempt: 1 });
        let (peer_tx, peer) = watch::channel(None);
        let (quit, quit_rx) = watch::channel(false);
        let supervisor = Supervisor {
            spec,
            status: status_tx,
            peer: peer_tx,
            quit: quit_rx,
            on_status: Box::new(on_status),
        };
        let handle = tauri::async_runtime::spawn(supervisor.run());
        Sidecar {
            status,
            peer,
            quit,
            supervisor: Mutex::new(Some(handle)),
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Calls a tool and returns its result as JSON: the structured content (unwrapped
    /// from the `{"result": …}` the Python SDK puts around non-object returns), else
    /// the text content parsed as JSON. A tool error becomes `Err` with its message.
    pub async fn call(
        &self,
        tool: &'static str,
        arguments: JsonObject,
    ) -> Result<serde_json::Value, String> {
        let peer = self.ready_peer().await?;
        let result = peer
            .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
            .await
            .map_err(|e| {
                format!("{tool}: the notes server did not answer ({e}); it is being restarted")
            })?;
        let text = || {
            result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if result.is_error == Some(true) {
            return Err(text());
        }
        match result.structured_content.clone() {
            Some(serde_json::Value::Object(mut map))
                if map.len() == 1 && map.contains_key("result") =>
            {
                Ok(map.remove("result").unwrap_or_default())
            }
            Some(value) => Ok(value),
            None => serde_json::from_str(&text())
                .map_err(|e| format!("{tool}: the server's answer is not JSON ({e}): {}", text())),
        }
    }

    /// Waits (up to `READY_TIMEOUT`) for a server that has finished its handshake.
    async fn ready_peer(&self) -> Result<Peer<RoleClient>, String> {
        let mut peer = self.peer.clone();
        let waited = tokio::time::timeout(READY_TIMEOUT, peer.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(p)) => p
                .clone()
                .ok_or_else(|| "the notes server is not running".to_owned()),
            Ok(Err(_)) => Err("the notes server has been stopped".to_owned()),
            Err(_) => Err(format!(
                "the notes server is not ready after {} s ({})",
                READY_TIMEOUT.as_secs(),
                describe(&self.status())
            )),
        }
    }

    /// Ends the server (stdin closed, then SIGTERM, then SIGKILL) and the supervisor.
    /// Idempotent; returns once the process has been reaped.
    pub async fn shutdown(&self) {
        let _ = self.quit.send(true);
        let handle = self.supervisor.lock().await.take();
        if let Some(handle) = handle {
            if let Err(e) = handle.await {
                log::error!("the sidecar supervisor failed: {e}");
            }
        }
    }
}

fn describe(status: &Status) -> String {
    match status {
        Status::Starting { attempt } => format!("starting, attempt {attempt}"),
        Status::Ready { pid, .. } => format!("running as pid {pid}"),
        Status::Restarting { reason, .. } => format!("restarting after: {reason}"),
        Status::Stopped => "stopped".to_owned(),
    }
}

struct Supervisor {
    spec: Spec,
    status: watch::Sender<Status>,
    peer: watch::Sender<Option<Peer<RoleClient>>>,
    quit: watch::Receiver<bool>,
    on_status: Box<dyn Fn(&Status) + Send + Sync>,
}

/// One running server: the process and the MCP session on its stdio.
struct Running {
    child: Child,
    service: RunningService<RoleClient, ClientConfig>,
}

impl Supervisor {
    fn set(&self, status: Status) {
        match status {
            Status::Restarting { retry_in_ms, .. } => {
                log::warn!(
                    "notes server: {}; next attempt in {retry_in_ms} ms",
                    describe(&status)
                )
            }
            _ => log::info!("notes server: {}", describe(&status)),
        }
        (self.on_status)(&status);
        self.status.send_replace(status);
    }

    async fn run(self) {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.set(Status::Starting { attempt });
            let started = Instant::now();
            let mut quit = self.quit.clone();
            let outcome = tokio::select! {
                r = self.start() => r,
                _ = quit.wait_for(|q| *q) => break,
            };
            let reason = match outcome {
                Ok(mut running) => {
                    let pid = running.child.id().unwrap_or(0);
                    self.peer.send_replace(Some(running.service.peer().clone()));
                    self.set(Status::Ready {
                        pid,
                        startup_ms: started.elapsed().as_millis() as u64,
                    });
                    let ended = tokio::select! {
                        status = running.child.wait() => Some(status),
                        _ = quit.wait_for(|q| *q) => None,
                    };
                    self.peer.send_replace(None);
                    match ended {
                        None => {
                            stop(running).await;
                            break;
                        }
                        Some(status) => {
                            // Reap the session's task; the pipe is already gone.
                            let _ = running.service.cancel().await;
                            exit_reason(status)
                        }
                    }
                }
                Err(reason) => reason,
            };
            if started.elapsed() >= HEALTHY_AFTER {
                attempt = 1;
            }
            let delay = backoff(attempt);
            self.set(Status::Restarting {
                attempt,
                retry_in_ms: delay.as_millis() as u64,
                reason,
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = quit.wait_for(|q| *q) => break,
            }
        }
        self.peer.send_replace(None);
        self.set(Status::Stopped);
    }

    /// Spawns the server and completes the MCP handshake. Dropping the future (quit
    /// during start-up) kills the child: `kill_on_drop`.
    async fn start(&self) -> Result<Running, String> {
        let program = &self.spec.program;
        let mut cmd = Command::new(program);
        // The environment is inherited: PYKILN_LOG=debug in the app's makes the
        // runtime's start-up lines show in the app's log.
        cmd.args(&self.spec.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        {
            // Its own process group: a Ctrl-C in the terminal reaches only the app,
            // which then ends the server in order instead of both dying at once.
            cmd.process_group(0);
        }
        #[cfg(target_os = "linux")]
        // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
        unsafe {
            // If the app is killed outright (SIGKILL, crash), the kernel sends SIGTERM.
            // It is tied to the spawning thread: a tokio worker, alive as long as the
            // app's runtime. Closing stdin (the pipe dies with us) is the second guard.
            let parent = libc::getpid();
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the app exited during spawn"));
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id().unwrap_or(0);
        if let Some(stderr) = child.stderr.take() {
            // Read as bytes until EOF: `lines()` stops at the first line that is not
            // UTF-8, and a pipe nobody drains blocks the server once it is full.
            tauri::async_runtime::spawn(async move {
                let mut stderr = BufReader::new(stderr);
                let mut line = Vec::new();
                while stderr
                    .read_until(b'\n', &mut line)
                    .await
                    .is_ok_and(|n| n > 0)
                {
                    let text = String::from_utf8_lossy(&line);
                    log::info!(target: "pykiln-notes", "[pid {pid}] {}", text.trim_end());
                    line.clear();
                }
            });
        }
        let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
            return Err("the server's stdio pipes were not created".to_owned());
        };
        let info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        );
        let service = match tokio::time::timeout(HANDSHAKE_TIMEOUT, info.serve((stdout, stdin)))
            .await
        {
            Ok(Ok(service)) => service,
            Ok(Err(e)) => {
                let status = child.try_wait().ok().flatten();
                return Err(match status {
                    Some(status) => format!("{} before the MCP handshake", exit_reason(Ok(status))),
                    None => format!("MCP handshake with {} failed: {e}", program.display()),
                });
            }
            Err(_) => {
                return Err(format!(
                    "no MCP handshake from {} within {} s",
                    program.display(),
                    HANDSHAKE_TIMEOUT.as_secs()
                ))
            }
        };
        if let Some(Some(server)) = service.peer().peer_info().map(|p| p.server_info.clone()) {
            log::info!("notes server pid {pid}: {} {}", server.name, server.version);
        }
        Ok(Running { child, service })
    }
}

/// Ends one server in order: close the MCP session (its stdin reaches EOF and the
/// server exits on its own), then SIGTERM, then SIGKILL.
async fn stop(mut running: Running) {
    let pid = running.child.id();
    let _ = tokio::time::timeout(EXIT_GRACE, running.service.close()).await;
    drop(running.service);
    let mut child = running.child;
    if let Ok(status) = tokio::time::timeout(EXIT_GRACE, child.wait()).await {
        log::info!("notes server: {}", exit_reason(status));
        return;
    }
    #[cfg(unix)]
    if let Some(pid) = pid {
        log::warn!("notes server pid {pid} ignored the end of its input; sending SIGTERM");
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        if let Ok(status) = tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            log::info!("notes server: {}", exit_reason(status));
            return;
        }
    }
    log::warn!("notes server did not exit; killing it");
    let _ = child.kill().await;
}

fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(MAX_RETRY)
}

fn exit_reason(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Err(e) => format!("lost track of the server process: {e}"),
        Ok(status) => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(signal) = status.signal() {
                    return format!("the server was killed by signal {signal}");
                }
            }
            match status.code() {
                Some(code) => format!("the server exited with status {code}"),
                None => "the server exited".to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let delays: Vec<u64> = (1..=8).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn status_serializes_for_the_page() {
        let s = Status::Restarting {
            attempt: 2,
            retry_in_ms: 500,
            reason: "the server was killed by signal 9".into(),
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"state": "restarting", "attempt": 2, "retry_in_ms": 500,
                               "reason": "the server was killed by signal 9"})
        );
    }
}
