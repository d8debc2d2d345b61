//! Running one of pykiln-build's helper scripts in the interpreter being embedded.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

fn spawn(
    python: &Path,
    flags: &[&str],
    script: &str,
    input: &serde_json::Value,
) -> anyhow::Result<Child> {
    let input = serde_json::to_vec(input)?;
    let mut child = Command::new(python)
        .args(flags)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
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
) -> anyhow::Result<Output> {
    Ok(spawn(python, flags, script, input)?.wait_with_output()?)
}

/// Like [`run_script`], for scripts that run code that is not ours (importing the app):
/// the child is killed after `limit`, which is an error.
pub fn run_script_limited(
    python: &Path,
    flags: &[&str],
    script: &str,
    input: &serde_json::Value,
    limit: Duration,
) -> anyhow::Result<Output> {
    let mut child = spawn(python, flags, script, input)?;
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
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}
