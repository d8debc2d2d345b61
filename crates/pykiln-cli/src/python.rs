//! `--python PATH|3.12`: which interpreter to embed; `pykiln python …`: pykiln's own
//! interpreters (pykiln-python).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

/// [`pykiln_python::request::resolve`], with the cache defaulting to the user's.
pub fn resolve(spec: Option<&str>, cache: Option<&Path>) -> anyhow::Result<PathBuf> {
    pykiln_python::request::resolve(spec, default_cache(cache).as_deref())
}

/// [`pykiln_python::request::resolve_for`], with the cache defaulting to the user's.
pub fn resolve_for(
    spec: Option<&str>,
    cache: Option<&Path>,
    target: Option<&str>,
) -> anyhow::Result<PathBuf> {
    pykiln_python::request::resolve_for(spec, default_cache(cache).as_deref(), target)
}

/// `cache`, else the default cache directory if there is one.
fn default_cache(cache: Option<&Path>) -> Option<PathBuf> {
    cache
        .map(Path::to_path_buf)
        .or_else(|| pykiln_build::default_cache_dir().ok())
}

/// `pykiln python`.
#[derive(Args)]
pub struct PythonArgs {
    #[command(subcommand)]
    command: PythonCommand,
    /// Cache directory (default: $PYKILN_CACHE_DIR, else ~/.cache/pykiln).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PythonCommand {
    /// Build pykiln's own CPython (glibc 2.17, C libraries linked in) and install it
    /// under the cache; `pykiln build --python 3.11` then uses it.
    Install {
        /// Version: 3.11 or 3.11.2.
        version: String,
        /// Directory holding source archives (repeatable; `pykiln python sources` lists
        /// them); the others are downloaded into the cache.
        #[arg(long = "sources", value_name = "DIR")]
        sources: Vec<PathBuf>,
        /// Rust target triple (default: this machine's).
        #[arg(long)]
        target: Option<String>,
        /// Parallel compile jobs (default: the number of CPUs).
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Build again even when this exact interpreter is installed.
        #[arg(long)]
        force: bool,
        /// Never download: every archive must be in a --sources directory.
        #[arg(long)]
        offline: bool,
        /// Without profile-guided optimisation (which needs LLVM's profile tools,
        /// `apt install llvm-19 libclang-rt-19-dev`, and a training run of a few
        /// minutes; without them the build goes on unoptimised and says so).
        #[arg(long)]
        no_pgo: bool,
    },
    /// List the interpreters pykiln built.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the path of an installed interpreter (for PYO3_PYTHON).
    Find {
        /// Version: 3.11 or 3.11.2.
        version: String,
        /// Rust target triple (default: this machine's).
        #[arg(long)]
        target: Option<String>,
    },
    /// Print shell `export` lines that make `cargo zigbuild` build a Rust project on an
    /// installed interpreter (`eval "$(pykiln python env 3.11)"`): PYO3_PYTHON, and its
    /// toolchain's `zig` and `cargo-zigbuild` first on PATH.
    Env {
        /// Version: 3.11 or 3.11.2.
        version: String,
        /// Rust target triple (default: this machine's).
        #[arg(long)]
        target: Option<String>,
    },
    /// Remove installed interpreters: every build of VERSION for the target, or with
    /// --superseded those no request picks any more (an older recipe's or toolchain's
    /// build, a plain build beside a profile-guided one), with the runners built for
    /// them and the runners of any other interpreter that is gone.
    Remove {
        /// Version: 3.11 or 3.11.2.
        #[arg(required_unless_present = "superseded", conflicts_with = "superseded")]
        version: Option<String>,
        /// Rust target triple (default: this machine's).
        #[arg(long, conflicts_with = "superseded")]
        target: Option<String>,
        /// Every installation that another of the same version and target is preferred to.
        #[arg(long)]
        superseded: bool,
    },
    /// List the source archives a build needs, with their SHA-256 and where to get them.
    Sources {
        /// Instead, check that these directories hold them all (exit status 1 if not).
        #[arg(long, value_name = "DIR")]
        check: Vec<PathBuf>,
    },
}

/// Run `pykiln python …`.
pub fn run(args: PythonArgs) -> anyhow::Result<ExitCode> {
    let cache = match args.cache_dir {
        Some(c) => c,
        None => pykiln_build::default_cache_dir()?,
    };
    let root = pykiln_python::root(&cache);
    match args.command {
        PythonCommand::Install {
            version,
            sources,
            target,
            jobs,
            force,
            offline,
            no_pgo,
        } => {
            let target = pykiln_python::toolchain::target(target.as_deref())?;
            let mut dirs = sources;
            if let Some(d) = std::env::var_os("PYKILN_PYTHON_SOURCES").filter(|d| !d.is_empty()) {
                dirs.push(PathBuf::from(d));
            }
            let req = pykiln_python::recipe::Request {
                version,
                target,
                sources: dirs,
                cache,
                jobs: jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                force,
                download: !offline,
                pgo: !no_pgo,
            };
            // Each step with the time it starts at: an install takes minutes, and where
            // they go (OpenSSL, the PGO training run) is what a slow one is asked about.
            let started = std::time::Instant::now();
            let out = pykiln_python::recipe::install(&req, &mut |what| {
                eprintln!("pykiln: {what} (at {} s)", started.elapsed().as_secs())
            })?;
            match out.built_in {
                Some(t) => eprintln!(
                    "pykiln: built Python {} for {} (glibc {}+) in {:.0} s",
                    out.installation.portable.version,
                    out.installation.portable.target,
                    out.installation.portable.glibc,
                    t.as_secs_f64()
                ),
                None => eprintln!(
                    "pykiln: Python {} is already installed",
                    out.installation.portable.version
                ),
            }
            println!("{}", out.installation.python().display());
        }
        PythonCommand::List { json } => {
            let all = pykiln_python::installed(&root);
            if json {
                let items: Vec<serde_json::Value> = all
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "version": i.portable.version,
                            "target": i.portable.target,
                            "glibc": i.portable.glibc,
                            "python": i.python(),
                            "key": i.portable.key,
                            "optimizations": i.portable.optimizations,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if all.is_empty() {
                eprintln!(
                    "pykiln: no interpreters in {} (pykiln python install 3.11)",
                    root.display()
                );
            } else {
                for i in all {
                    let optimized = if i.portable.optimizations.is_empty() {
                        "-".to_string()
                    } else {
                        i.portable.optimizations.join(",")
                    };
                    println!(
                        "cpython {:<8} {:<26} glibc {}+  {:<4} {}",
                        i.portable.version,
                        i.portable.target,
                        i.portable.glibc,
                        optimized,
                        i.python().display()
                    );
                }
            }
        }
        PythonCommand::Find { version, target } => {
            println!("{}", installed(&root, &version, target)?.python().display());
        }
        PythonCommand::Env { version, target } => {
            let i = installed(&root, &version, target)?;
            let tools = pykiln_python::toolchain::Toolchain {
                dir: i.portable.toolchain.clone(),
            };
            tools.ensure_shims()?;
            let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
            println!("export PYO3_PYTHON={}", quote(&i.python()));
            println!("export PATH={}:\"$PATH\"", quote(&tools.shims()));
            if !pykiln_python::toolchain::target(Some(&i.portable.target))?.is_host() {
                // pyo3 cannot run another CPU's interpreter: it configures itself from
                // the version (pykiln's build script probes it under qemu-user).
                let minor: Vec<&str> = i.portable.version.split('.').take(2).collect();
                println!("export PYO3_CROSS_PYTHON_VERSION={}", minor.join("."));
            }
            eprintln!(
                "pykiln: then: cargo zigbuild --release --target {}",
                i.portable.zig_target()
            );
        }
        PythonCommand::Remove {
            version,
            target,
            superseded,
        } => {
            let doomed = match version {
                Some(v) => {
                    let target = pykiln_python::toolchain::target(target.as_deref())?;
                    let all: Vec<_> = pykiln_python::installed(&root)
                        .into_iter()
                        .filter(|i| {
                            i.portable.target == target.rust
                                && pykiln_python::version_matches(&i.portable.version, &v)
                        })
                        .collect();
                    if all.is_empty() {
                        bail!(
                            "no pykiln Python {v} for {} in {} (`pykiln python list` shows what is installed)",
                            target.rust,
                            root.display()
                        );
                    }
                    all
                }
                None if superseded => pykiln_python::superseded(&root),
                None => bail!("name a version to remove, or --superseded"),
            };
            if doomed.is_empty() {
                eprintln!("pykiln: nothing superseded in {}", root.display());
            }
            for i in doomed {
                let freed = pykiln_python::remove(&i, &mut |what| eprintln!("pykiln: {what}"))?;
                eprintln!(
                    "pykiln: removed cpython {} {} ({:.0} MB) {}",
                    i.portable.version,
                    i.portable.target,
                    freed as f64 / 1e6,
                    i.dir.display()
                );
            }
            // What was built for them: their runners and the runners' build directories.
            let freed = crate::runner::sweep_orphaned(&cache);
            if freed > 0 {
                eprintln!(
                    "pykiln: removed the runners of interpreters that are gone ({:.0} MB)",
                    freed as f64 / 1e6
                );
            }
        }
        PythonCommand::Sources { check } if !check.is_empty() => {
            let mut pins: Vec<&pykiln_python::sources::Pin> =
                pykiln_python::sources::CPYTHON.iter().collect();
            pins.extend(pykiln_python::sources::LIBRARIES);
            for path in pykiln_python::sources::locate(&pins, &check)? {
                println!("{}", path.display());
            }
        }
        PythonCommand::Sources { .. } => {
            for pin in pykiln_python::sources::CPYTHON
                .iter()
                .chain(pykiln_python::sources::LIBRARIES)
            {
                println!(
                    "{:<8} {:<7} {}  {}  {}",
                    pin.name,
                    pin.version,
                    pin.sha256,
                    pin.files.join(" | "),
                    pin.urls.join(" | ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The installed interpreter for `version` and `target` (default: this machine's), or
/// an error saying how to install it.
fn installed(
    root: &Path,
    version: &str,
    target: Option<String>,
) -> anyhow::Result<pykiln_python::Installation> {
    let target = pykiln_python::toolchain::target(target.as_deref())?;
    pykiln_python::find(root, version, target.rust).with_context(|| {
        format!(
            "no pykiln Python {version} for {} in {} (pykiln python install {version})",
            target.rust,
            root.display()
        )
    })
}
