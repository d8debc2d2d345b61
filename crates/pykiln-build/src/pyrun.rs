//! Running one of pykiln-build's helper scripts in the interpreter being embedded.
//!
//! The scripts import third-party code (the import baseline, the start-up recording),
//! whose import-time side effects — telemetry databases, log files, caches — must not
//! land in the builder's home. So every child runs with a scratch `HOME`, `XDG_*` and
//! `TMPDIR` under the build cache (removed afterwards), no other inherited environment
//! than `PATH`, `LD_LIBRARY_PATH` and the locale, a fixed hash seed, and stdin closed
//! once its JSON job is written.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Environment variables a child inherits (everything else is dropped).
const INHERITED: &[&str] = &["PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE"];

/// A scratch home for one child, removed when dropped.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A new scratch directory under `cache/scratch`.
    pub fn new(cache: &Path) -> anyhow::Result<Self> {
        let root = cache.join("scratch");
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&root)
            .with_context(|| format!("creating a scratch directory in {}", root.display()))?;
        Ok(Scratch(dir))
    }

    /// Point `cmd`'s home, XDG directories and temp dir into the scratch directory and
    /// clear the rest of its environment.
    pub fn isolate(&self, cmd: &mut Command) -> anyhow::Result<()> {
        let base = self.0.path();
        cmd.env_clear();
        for var in INHERITED {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        // For scripts run without -I (which ignores it): what they report must not
        // depend on hash randomization, e.g. a pattern the start-up builds from a set
        // (`tokenize` joins its string prefixes), which would differ from build to build.
        cmd.env("PYTHONHASHSEED", "0");
        for (var, sub) in [
            ("HOME", "home"),
            ("XDG_CACHE_HOME", "home/.cache"),
            ("XDG_CONFIG_HOME", "home/.config"),
            ("XDG_DATA_HOME", "home/.local/share"),
            ("XDG_STATE_HOME", "home/.local/state"),
            ("XDG_RUNTIME_DIR", "run"),
            ("TMPDIR", "tmp"),
        ] {
            let dir = base.join(sub);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            cmd.env(var, dir);
        }
        Ok(())
    }
}

fn spawn(
    python: &Path,
    flags: &[&str],
    script: &str,
    input: &serde_json::Value,
    scratch: &Scratch,
) -> anyhow::Result<Child> {
    let input = serde_json::to_vec(input)?;
    // Another CPU's interpreter (a cross build) runs under qemu-user, or else the
    // scripts that do not depend on the CPU run on its twin (the pipeline runs no import
    // of the app there).
    let mut cmd = pykiln_pyconfig::foreign::script_command(python)?;
    scratch.isolate(&mut cmd)?;
    let mut child = cmd
        .args(flags)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    // Dropped after the write: the child's stdin is closed.
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&input)?;
    }
    Ok(child)
}

/// The last non-empty line of a script's output (where the scripts put their reply).
pub fn last_line(stdout: &[u8]) -> &[u8] {
    stdout
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
}

/// Run `python <flags> -c <script>` with `input` as JSON on stdin; stdout and stderr
/// are captured. The scripts read all of stdin before writing, so writing it first
/// cannot deadlock.
pub fn run_script(
    python: &Path,
    flags: &[&str],
    script: &str,
    input: &serde_json::Value,
    cache: &Path,
) -> anyhow::Result<Output> {
    let scratch = Scratch::new(cache)?;
    Ok(spawn(python, flags, script, input, &scratch)?.wait_with_output()?)
}

/// A script run that [`run_script_limited`] ended at its time limit, with what the
/// child had printed by then.
#[derive(Debug)]
pub struct TimedOut {
    /// The limit.
    pub limit: Duration,
    /// stdout so far.
    pub stdout: Vec<u8>,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "did not finish within {} s", self.limit.as_secs())
    }
}

impl std::error::Error for TimedOut {}

/// Like [`run_script`], for scripts that run code that is not ours (importing the app):
/// the child is killed after `limit`, which is a [`TimedOut`] error.
pub fn run_script_limited(
    python: &Path,
    flags: &[&str],
    script: &str,
    input: &serde_json::Value,
    cache: &Path,
    limit: Duration,
) -> anyhow::Result<Output> {
    let scratch = Scratch::new(cache)?;
    let mut child = spawn(python, flags, script, input, &scratch)?;
    // Drain both pipes on their own threads so a chatty child never blocks on a full
    // pipe; a grandchild that keeps a pipe open must not hang the build either.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
    };
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TimedOut {
                limit,
                stdout: collect(stdout),
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}
