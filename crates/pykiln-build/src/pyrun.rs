//! Running one of pykiln-build's helper scripts in the interpreter being embedded.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::Context as _;

/// Run `python <flags> -c <script>` with `input` as JSON on stdin; stdout and stderr
/// are captured. The scripts read all of stdin before writing, so writing it first
/// cannot deadlock.
pub fn run_script(
    python: &Path,
    flags: &[&str],
    script: &str,
    input: &serde_json::Value,
) -> anyhow::Result<Output> {
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
    Ok(child.wait_with_output()?)
}
