//! `pykiln build`: options (checked before any work; only `--from` paths are looked
//! at), then the pipeline, then the executable: the runner's bytes, padding, the
//! archive and a trailer, written to a temporary file beside the output and renamed
//! over it.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use pykiln_build::{App, Source, Stage, ToolConfig};

use crate::runner::{self, TARGET};

/// `pykiln build` arguments.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// A directory with pyproject.toml (default: the current directory, unless --from
    /// is given).
    project: Option<PathBuf>,

    /// Build from requirements instead of a project: a PyPI requirement
    /// (`mcp-server-time==2026.10.19`), a local wheel, or a requirements/lock file.
    /// Repeatable; the entry point is the single console script of the first named
    /// distribution.
    #[arg(long = "from", value_name = "REQUIREMENT")]
    from: Vec<String>,

    /// The console script to run (when the distribution has several, or the
    /// requirements come from a file).
    #[arg(long, value_name = "NAME")]
    script: Option<String>,

    /// The function to run, `module:function` (instead of a console script).
    #[arg(long, value_name = "MODULE:FUNCTION")]
    entry_point: Option<String>,

    /// Interpreter to embed: a path, or a version such as 3.12 (default: the project's
    /// [tool.pykiln] python, else PYO3_PYTHON, an active virtualenv, else python3 on
    /// PATH). It needs its static library.
    #[arg(long, value_name = "PATH|VERSION")]
    python: Option<String>,

    /// Build for another target, e.g. aarch64-unknown-linux-gnu: embeds pykiln's own
    /// interpreter for it (`pykiln python install 3.11 --target …`); the build runs it
    /// under qemu-user.
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,

    /// Where to write the executable (default: ./NAME, NAME being the console script;
    /// with --tauri-sidecar and no -o, only the sidecar is written).
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,

    /// Write it as DIR/NAME-<target triple>, the name Tauri's `bundle.externalBin`
    /// expects for a sidecar (and also to -o PATH when that is given).
    #[arg(long, value_name = "DIR")]
    tauri_sidecar: Option<PathBuf>,

    /// Leave out modules (and their subpackages); `*` wildcards allowed. Repeatable.
    #[arg(long, value_name = "MODULE")]
    exclude: Vec<String>,

    /// Give a distribution an on-disk file view ([tool.pykiln] on-disk). Repeatable.
    #[arg(long, value_name = "DIST")]
    on_disk: Vec<String>,

    /// Keep a distribution in memory even if it looks path-dependent
    /// ([tool.pykiln] in-memory). Repeatable.
    #[arg(long, value_name = "DIST")]
    in_memory: Vec<String>,

    /// Keep a distribution's native code in memory (memfd) at run time, whatever its
    /// size ([tool.pykiln] native-in-memory). Repeatable.
    #[arg(long, value_name = "DIST")]
    native_in_memory: Vec<String>,

    /// Serve a distribution's native code file-backed from the per-user cache at run
    /// time, whatever its size ([tool.pykiln] native-cached). Repeatable.
    #[arg(long, value_name = "DIST")]
    native_cached: Vec<String>,

    /// Native images at least this big are served file-backed from the per-user cache,
    /// smaller ones from memory (default 0: all file-backed; `off`: all in memory)
    /// ([tool.pykiln] native-cache-threshold).
    #[arg(long, value_name = "SIZE")]
    native_cache_threshold: Option<String>,

    /// Pack the Python sources of a distribution or top-level package
    /// ([tool.pykiln] sources). Repeatable.
    #[arg(long, value_name = "DIST")]
    sources: Vec<String>,

    /// Pack the sources of every module, standard library included.
    #[arg(long)]
    all_sources: bool,

    /// Send the server's writes to sys.stdout to stderr (for servers that print
    /// on the MCP channel).
    #[arg(long)]
    stdout_guard: bool,

    /// `BIN -c/-m …` does not run Python ([tool.pykiln] python-cli = false).
    #[arg(long)]
    no_python_cli: bool,

    /// Keep debug info and symbols in packed native code.
    #[arg(long)]
    no_strip_native: bool,

    /// zstd level, 1–22 (default 19 or PYKILN_ZSTD_LEVEL; compressed blobs are cached).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=22))]
    zstd_level: Option<i32>,

    /// Do not record the server's start-up (saves about as long as the server takes to
    /// import on every rebuild, for quick iterations; the binary then starts without its
    /// start-up prefetch and compiles its start-up source strings and regexes itself,
    /// ~20% slower).
    #[arg(long)]
    no_startup_order: bool,

    /// Resolve unpinned requirements again.
    #[arg(long)]
    refresh: bool,

    /// Cache directory (default: $PYKILN_CACHE_DIR, else $XDG_CACHE_HOME/pykiln, else
    /// ~/.cache/pykiln).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Cap of the build cache (bytes, or with K/M/G; default PYKILN_CACHE_MAX, else 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    cache_max: Option<u64>,

    /// Use this runner executable instead of the cached one for the interpreter (it
    /// must embed the same Python).
    #[arg(long, value_name = "PATH")]
    runner: Option<PathBuf>,

    /// No summary, no progress: only warnings and errors.
    #[arg(short, long)]
    quiet: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    pykiln_build::parse_size(s)
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or with K, M or G)"))
}

/// What to build, from the arguments alone (plus whether each `--from` names a file).
struct Plan {
    source: Source,
    tool: ToolConfig,
}

impl BuildArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        let source = if self.from.is_empty() {
            if self.script.is_some() {
                bail!(
                    "--script chooses among the console scripts of --from requirements; for a project, use --entry-point or [tool.pykiln] entry-point"
                );
            }
            Source::Project(self.project.clone().unwrap_or_else(|| PathBuf::from(".")))
        } else {
            if let Some(p) = &self.project {
                bail!(
                    "give either a project directory ({}) or --from requirements, not both",
                    p.display()
                );
            }
            let mut specs = Vec::new();
            let mut file = None;
            for f in &self.from {
                let path = Path::new(f);
                let is_archive = [".whl", ".tar.gz", ".zip"].iter().any(|s| f.ends_with(s));
                if path.is_file() && !is_archive {
                    if file.replace(absolute(path)).is_some() {
                        bail!("only one requirements file can be given with --from");
                    }
                } else if path.exists() {
                    // pip runs elsewhere: local paths must be absolute.
                    specs.push(absolute(path).display().to_string());
                } else if is_archive {
                    bail!("--from {f}: no such file");
                } else {
                    specs.push(f.clone());
                }
            }
            Source::Requirements {
                specs,
                file,
                script: self.script.clone(),
            }
        };
        let tool = ToolConfig {
            entry_point: self.entry_point.clone(),
            on_disk: self.on_disk.clone(),
            in_memory: self.in_memory.clone(),
            native_in_memory: self.native_in_memory.clone(),
            native_cached: self.native_cached.clone(),
            native_cache_threshold: self.native_cache_threshold.clone(),
            sources: self.sources.clone(),
            exclude: self.exclude.clone(),
            all_sources: self.all_sources.then_some(true),
            python_cli: self.no_python_cli.then_some(false),
            strip_native: self.no_strip_native.then_some(false),
            stdout_guard: self.stdout_guard.then_some(true),
            ..ToolConfig::default()
        };
        Ok(Plan { source, tool })
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Progress on stderr: a spinner on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    started: Instant,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner:.cyan} {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress {
            bar,
            quiet,
            started: Instant::now(),
        }
    }

    fn say(&self, what: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(what.to_string()),
            None if !self.quiet => eprintln!("pykiln: {what}"),
            None => {}
        }
    }

    /// A line that stays (warnings), above the spinner.
    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl pykiln_build::Progress for Progress {
    fn stage(&mut self, stage: Stage) {
        self.say(stage.doing());
    }
}

/// Run `pykiln build`.
pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    // `--python`, else the project's `[tool.pykiln] python`.
    let spec = match (&args.python, &plan.source) {
        (Some(p), _) => Some(p.clone()),
        (None, Source::Project(dir)) => ToolConfig::read(dir)?.python,
        (None, Source::Requirements { .. }) => None,
    };
    let python = crate::python::resolve_for(
        spec.as_deref(),
        args.cache_dir.as_deref(),
        args.target.as_deref(),
    )?;
    // The same layering as build.rs users: the environment, then what was given.
    let mut app = App::new(plan.source).options(plan.tool);
    if let Some(c) = &args.cache_dir {
        app = app.cache_dir(c);
    }
    if let Some(m) = args.cache_max {
        app = app.cache_max(m);
    }
    if let Some(l) = args.zstd_level {
        app = app.compression_level(l);
    }
    let mut options = app.resolve_options()?;
    options.python = python;
    options.refresh |= args.refresh;
    options.record_startup = !args.no_startup_order;
    // Fail on an unwritable output before minutes of work.
    for dir in [
        args.output.as_deref().map(parent_dir),
        args.tauri_sidecar.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        check_writable(dir)?;
    }

    let mut progress = Progress::new(args.quiet);
    // From crates.io, the runner's crate list is read from the source `cargo install`
    // unpacks: build the runner first (bad input then fails after it, once).
    let mut early_runner = None;
    if args.runner.is_none() && runner::from_registry() {
        let config = pykiln_pyconfig::PythonConfig::probe(&options.python)?;
        early_runner = Some(runner::runner_for(
            &config,
            &options.cache_dir,
            &mut |what| progress.say(what),
        )?);
    }
    if let Some(r) = &args.runner {
        progress.line(&format!(
            "warning: the licenses and SBOM list no Rust crates: the crates linked into {} are unknown",
            r.display()
        ));
    }
    match args
        .runner
        .is_none()
        .then(runner::linked_crates)
        .transpose()
    {
        Ok(crates) => options.rust_crates = crates.flatten().unwrap_or_default(),
        Err(e) => progress.line(&format!(
            "warning: the runner's Rust crates are missing from the licenses and SBOM: {e:#}"
        )),
    }
    let scratch_root = options.cache_dir.join("tmp");
    std::fs::create_dir_all(&scratch_root)
        .with_context(|| format!("creating {}", scratch_root.display()))?;
    let scratch = tempfile::tempdir_in(&scratch_root)
        .with_context(|| format!("creating a directory in {}", scratch_root.display()))?;
    let archive_path = scratch.path().join("app.pykiln");
    let report = app.build(&archive_path, &options, &mut progress);
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            progress.finish();
            return Err(e.into());
        }
    };
    for w in report.warnings.iter().filter(|w| !w.is_info()) {
        progress.line(&format!("warning: {w}"));
    }
    if std::env::var_os(pykiln_build::TIMINGS_ENV).is_some() {
        let steps: Vec<String> = report
            .timings
            .iter()
            .map(|(s, t)| format!("{} {:.0} ms", s.name(), t.as_secs_f64() * 1e3))
            .collect();
        progress.line(&format!("pykiln: build stages: {}", steps.join(", ")));
    }

    // The runner after the archive: bad input fails in seconds, not after a first
    // runner build.
    let config = &report.python;
    let runner = match (&args.runner, early_runner) {
        (Some(r), _) => runner::Runner {
            path: r.clone(),
            built_in: None,
        },
        (None, Some(r)) => r,
        (None, None) => {
            runner::runner_for(config, &options.cache_dir, &mut |what| progress.say(what))?
        }
    };
    if let Some(t) = runner.built_in {
        progress.line(&format!(
            "pykiln: built the runner for Python {} in {:.0} s ({})",
            config.version,
            t.as_secs_f64(),
            runner.path.display()
        ));
    }
    progress.say("writing the executable");
    let archive = map(&archive_path)?;
    let runner_map = map(&runner.path)?;
    if pykiln_archive::trailer::appended(&runner_map).is_ok() {
        bail!(
            "{} already carries an archive: it is a built application, not a runner",
            runner.path.display()
        );
    }
    // A sidecar build writes no ./NAME nobody asked for.
    let output = match (&args.output, &args.tauri_sidecar) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(PathBuf::from(&report.binary_name)),
    };
    let mut written = Vec::new();
    if let Some(output) = &output {
        write_executable(output, &runner_map, &archive)?;
        written.push(absolute(output));
    }
    if let Some(dir) = &args.tauri_sidecar {
        // Tauri names a sidecar by the target it runs on.
        let target = config
            .portable
            .as_ref()
            .map_or(TARGET, |p| p.target.as_str());
        let path = dir.join(format!("{}-{target}", report.binary_name));
        write_executable(&path, &runner_map, &archive)?;
        written.push(absolute(&path));
    }
    progress.finish();
    if !args.quiet {
        print_summary(&written, &report, progress.started.elapsed())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn check_writable(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("the output directory {} does not exist", dir.display());
    }
    tempfile::Builder::new()
        .prefix(".pykiln-check-")
        .tempfile_in(dir)
        .map(drop)
        .with_context(|| format!("cannot write to the output directory {}", dir.display()))
}

/// A file mapped read-only (the runner, the archive: neither is copied into memory,
/// which matters for a server with a gigabyte of native code).
fn map(path: &Path) -> anyhow::Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: read-only; both files are ours (the cache's runner, this build's archive)
    // and not modified while the executable is written.
    unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))
}

/// The runner, padding, the archive and the trailer, streamed into a temporary file
/// beside `path` that gets the executable's mode and is then renamed over `path`.
fn write_executable(path: &Path, runner: &[u8], archive: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    if path.is_dir() {
        bail!(
            "the output {} is a directory; give the executable's path",
            path.display()
        );
    }
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write to the output directory {}", dir.display()))?;
    let (padding, trailer) = pykiln_archive::trailer::appendix(runner.len() as u64, archive);
    let mut out = std::io::BufWriter::new(tmp.as_file_mut());
    for part in [runner, &padding, archive, &trailer] {
        out.write_all(part)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    drop(out);
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

fn print_summary(
    written: &[PathBuf],
    report: &pykiln_build::BuildReport,
    took: Duration,
) -> anyhow::Result<()> {
    let Some(exe) = written.first() else {
        return Ok(());
    };
    let i = crate::inspect::inspect(exe)?;
    println!(
        "built {} ({}) in {:.1} s",
        exe.display(),
        crate::inspect::mb(i.size),
        took.as_secs_f64()
    );
    for extra in &written[1..] {
        println!("  also {}", extra.display());
    }
    print!("{}", crate::inspect::render(&i, 10));
    for w in report.warnings.iter().filter(|w| w.is_info()) {
        println!("  note          {w}");
    }
    let name = &report.binary_name;
    let command = exe.display().to_string();
    let (desktop, vscode) = crate::dist::client_configs(name, &command, &[]);
    println!();
    println!(
        "MCP client config. Claude Desktop (claude_desktop_config.json) and Cursor (~/.cursor/mcp.json):"
    );
    println!("{}", serde_json::to_string_pretty(&desktop)?);
    println!("VS Code (.vscode/mcp.json):");
    println!("{}", serde_json::to_string_pretty(&vscode)?);
    Ok(())
}
