//! `--pykiln selftest [--timeout S] [-- ARGS]`: the binary starts itself as the MCP
//! server (with ARGS) over stdio and acts as a client: initialize, list tools, prompts
//! and resources, close stdin and wait for a clean exit. One line per step with its
//! time; any error, timeout, non-JSON line on the server's stdout or unclean exit fails
//! the run (exit 1). Made for container health checks and `pykiln check`.

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

/// The protocol revision the self-test asks for (servers answer with theirs).
const PROTOCOL: &str = "2025-06-18";

/// Usage line for the console's help.
pub const USAGE: &str = "  selftest [--timeout S] [-- ARGS]  start this binary as the MCP server (with ARGS) and\n\
  \x20 check it: initialize, list tools/prompts/resources, shut down (each step within S s, default 30)\n";

/// Parse the arguments after `selftest` and run it; returns the exit status.
pub fn run(rest: &[OsString]) -> anyhow::Result<i32> {
    let mut timeout = Duration::from_secs(30);
    let mut it = rest.iter();
    let mut server_args = Vec::new();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--timeout") => {
                let secs = it
                    .next()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s > 0.0);
                let Some(secs) = secs else {
                    eprintln!("pykiln: selftest --timeout takes a positive number of seconds");
                    return Ok(2);
                };
                timeout = Duration::from_secs_f64(secs);
            }
            Some("--") => {
                server_args.extend(it.by_ref().cloned());
            }
            _ => {
                eprintln!(
                    "pykiln: selftest: unexpected argument {a:?} (server arguments go after --)\n{USAGE}"
                );
                return Ok(2);
            }
        }
    }
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let mut out = std::io::stdout().lock();
    match check(&exe, &server_args, timeout, &mut out) {
        Ok(()) => {
            writeln!(out, "selftest: ok")?;
            Ok(0)
        }
        Err(e) => {
            let _ = out.flush();
            eprintln!("selftest: FAILED: {e:#}");
            Ok(1)
        }
    }
}

struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
    timeout: Duration,
}

impl Server {
    fn send(&mut self, msg: &Value) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{msg}")
            .and_then(|()| stdin.flush())
            .context("writing to the server's stdin (did it exit?)")
    }

    /// Send a request and wait for its response; notifications and server requests
    /// on the way are skipped. Returns the `result`.
    fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("no answer to {method} within {:?}", self.timeout)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    bail!(
                        "the server closed its stdout before answering {method} (exit: {})",
                        status.map_or("unknown".into(), |s| s.to_string())
                    )
                }
            };
            let msg: Value = serde_json::from_str(&line).map_err(|_| {
                anyhow!(
                    "the server wrote a line that is not JSON-RPC on stdout (the protocol channel): {:?}",
                    truncate(&line)
                )
            })?;
            if msg.get("id") != Some(&json!(id)) || msg.get("method").is_some() {
                continue;
            }
            if let Some(err) = msg.get("error") {
                bail!("{method} failed: {err}");
            }
            return msg
                .get("result")
                .cloned()
                .with_context(|| format!("{method}: a response without result: {msg}"));
        }
    }

    /// Every page of a `*/list` method, concatenated.
    fn list(&mut self, method: &str, field: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..1000 {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let r = self.request(method, params)?;
            items.extend(
                r.get(field)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
            match r.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => return Ok(items),
            }
        }
        bail!("{method}: more than 1000 pages")
    }

    /// Close stdin and wait for the exit; killed if it does not exit in time.
    fn shut_down(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "the server did not exit within {:?} of its stdin closing (killed)",
                    self.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A string field for display ("?" when missing or empty).
fn text(v: &Value) -> &str {
    v.as_str().filter(|s| !s.is_empty()).unwrap_or("?")
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

fn names(items: &[Value], key: &str) -> String {
    let names: Vec<&str> = items
        .iter()
        .filter_map(|i| i.get(key).and_then(Value::as_str))
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(", "))
    }
}

/// The emulator to start the server under (set by `pykiln check` for a binary built
/// for another CPU, which it runs under qemu-user).
pub const EMULATOR_ENV: &str = "PYKILN_SELFTEST_EMULATOR";

fn ms(d: Duration) -> String {
    format!("{:>6.0} ms", d.as_secs_f64() * 1e3)
}

fn check(
    exe: &std::path::Path,
    args: &[OsString],
    timeout: Duration,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let start = Instant::now();
    // Under qemu-user (`pykiln check` of a binary for another CPU) this binary cannot
    // exec itself directly: the emulator it runs under is named here.
    let mut command = match std::env::var_os(EMULATOR_ENV).filter(|e| !e.is_empty()) {
        Some(emulator) => {
            let mut c = Command::new(emulator);
            c.arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server {
        stdin: child.stdin.take(),
        child,
        lines,
        next_id: 1,
        timeout,
    };
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    writeln!(out, "selftest: {} {}", exe.display(), shown.join(" "))?;

    let init = server.request(
        "initialize",
        json!({
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "pykiln-selftest", "version": crate::VERSION},
        }),
    )?;
    server.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
    let info = &init["serverInfo"];
    writeln!(
        out,
        "initialize     {}  {} {}, protocol {}",
        ms(start.elapsed()),
        text(&info["name"]),
        text(&info["version"]),
        text(&init["protocolVersion"]),
    )?;
    let caps = init.get("capabilities").cloned().unwrap_or(json!({}));
    if caps.get("tools").is_some() {
        let t = Instant::now();
        let tools = server.list("tools/list", "tools")?;
        writeln!(
            out,
            "tools/list     {}  {} tools{}",
            ms(t.elapsed()),
            tools.len(),
            names(&tools, "name")
        )?;
    }
    if caps.get("prompts").is_some() {
        let t = Instant::now();
        let prompts = server.list("prompts/list", "prompts")?;
        writeln!(
            out,
            "prompts/list   {}  {} prompts{}",
            ms(t.elapsed()),
            prompts.len(),
            names(&prompts, "name")
        )?;
    }
    if caps.get("resources").is_some() {
        let t = Instant::now();
        let resources = server.list("resources/list", "resources")?;
        let templates = server.list("resources/templates/list", "resourceTemplates")?;
        writeln!(
            out,
            "resources/list {}  {} resources{}, {} templates{}",
            ms(t.elapsed()),
            resources.len(),
            names(&resources, "uri"),
            templates.len(),
            names(&templates, "uriTemplate")
        )?;
    }
    let t = Instant::now();
    let status = server.shut_down()?;
    if !status.success() {
        bail!("the server exited with {status} after its stdin closed");
    }
    writeln!(out, "shutdown       {}  exit status 0", ms(t.elapsed()))?;
    writeln!(out, "total          {}", ms(start.elapsed()))?;
    Ok(())
}
