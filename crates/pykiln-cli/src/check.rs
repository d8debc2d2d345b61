//! `pykiln check BIN [-- ARGS]`: the binary's own checks, run in turn: `--pykiln
//! verify` (every checksum, every packed module imports) and `--pykiln selftest`
//! (it starts itself as the MCP server with ARGS and talks to it).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::Context as _;
use clap::Args;

/// `pykiln check` arguments.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The binary.
    bin: PathBuf,
    /// Seconds each self-test step may take.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Skip `--pykiln verify` (importing every module takes seconds on big servers).
    #[arg(long)]
    no_verify: bool,
    /// Arguments for the server (after --).
    #[arg(last = true)]
    args: Vec<OsString>,
}

/// Run `pykiln check`.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    // Never execute a file that is not a pykiln binary.
    let i = crate::inspect::inspect(&args.bin)?;
    let bin = std::path::absolute(&args.bin).unwrap_or(args.bin.clone());
    eprintln!(
        "pykiln: checking {} ({} {})",
        bin.display(),
        i.app.as_ref().map_or("?", |a| a.name.as_str()),
        i.app.as_ref().map_or("?", |a| a.version.as_str())
    );
    // A binary for another CPU (`pykiln build --target`) runs under qemu-user, and so
    // does the server its selftest starts.
    let run = || -> anyhow::Result<Command> {
        let mut cmd = pykiln_pyconfig::foreign::command(&bin)?;
        let program = cmd.get_program().to_owned();
        if program != bin.as_os_str() {
            cmd.env("PYKILN_SELFTEST_EMULATOR", program);
        }
        Ok(cmd)
    };
    let mut failed = Vec::new();
    if !args.no_verify {
        let status = run()?
            .args(["--pykiln", "verify"])
            .status()
            .with_context(|| format!("running {} --pykiln verify", bin.display()))?;
        if !status.success() {
            failed.push(format!("verify ({status})"));
        }
    }
    let status = run()?
        .args(["--pykiln", "selftest", "--timeout"])
        .arg(args.timeout.to_string())
        .arg("--")
        .args(&args.args)
        .status()
        .with_context(|| format!("running {} --pykiln selftest", bin.display()))?;
    if !status.success() {
        failed.push(format!("selftest ({status})"));
    }
    if failed.is_empty() {
        eprintln!("pykiln: {} passed its checks", bin.display());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("pykiln: {} FAILED: {}", bin.display(), failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
