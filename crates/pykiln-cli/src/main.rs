//! `pykiln`: turn a Python MCP server into one self-contained executable, without a
//! Rust project. `build` packs a pyproject project or PyPI requirements into an archive
//! (the same pipeline as build.rs users, `pykiln-build`) and appends it to a runner
//! built once per interpreter; `inspect` reads what is inside any pykiln binary;
//! `check` runs a binary's own verify and MCP self-test; `dist` makes its release
//! artifacts.

mod build_command;
mod check;
mod dist;
mod inspect;
mod oci;
mod python;
mod release;
mod runner;
mod sign;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pykiln",
    version,
    about = "Turn a Python MCP server into one self-contained executable",
    long_about = None,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a standalone executable from a pyproject project or from requirements.
    Build(Box<build_command::BuildArgs>),
    /// Show what is inside a pykiln binary (without running it).
    Inspect {
        /// The binary.
        bin: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a binary's `--pykiln verify` and its MCP self-test (`--pykiln selftest`).
    Check(check::CheckArgs),
    /// Make the release artifacts of a binary: tar.gz, zip, MCP Bundle, OCI image, SHA256SUMS.
    Dist(dist::DistArgs),
    /// Print the path of the runner for an interpreter, building it if needed.
    Runner(RunnerArgs),
    /// pykiln's own CPython, for binaries that run on glibc 2.17+: install, list, find.
    Python(python::PythonArgs),
}

#[derive(Args)]
struct RunnerArgs {
    /// Interpreter: a path, or a version such as 3.12 (default: PYO3_PYTHON, an
    /// active virtualenv, else python3 on PATH).
    #[arg(long)]
    python: Option<String>,
    /// Cache directory (default: $PYKILN_CACHE_DIR, else ~/.cache/pykiln).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build_command::run(*args),
        Command::Inspect { bin, json } => inspect::inspect(&bin).and_then(|i| {
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                print!("{}", inspect::render(&i, 0));
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Check(args) => check::run(args),
        Command::Dist(args) => dist::run(args),
        Command::Runner(args) => runner_command(args),
        Command::Python(args) => python::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pykiln: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runner_command(args: RunnerArgs) -> anyhow::Result<ExitCode> {
    let cache = match args.cache_dir {
        Some(c) => c,
        None => pykiln_build::default_cache_dir()?,
    };
    let python = python::resolve(args.python.as_deref(), Some(&cache))?;
    let config = pykiln_pyconfig::PythonConfig::probe(&python)?;
    let r = runner::runner_for(&config, &cache, &mut |what| eprintln!("pykiln: {what}"))?;
    if let Some(t) = r.built_in {
        eprintln!("pykiln: built the runner in {:.0} s", t.as_secs_f64());
    }
    println!("{}", r.path.display());
    Ok(ExitCode::SUCCESS)
}
