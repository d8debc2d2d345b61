//! The build pipeline as named stages, each a function returning what the next needs:
//! stage (interpreter, project, pip) → collect (files, on-disk views) → compile →
//! natives (extensions and the libraries they need) → data (resources, metadata) →
//! manifest (import baseline, start-up order) → write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use pykiln_archive::{AppInfo, ArchiveWriter, Distribution, Manifest};
use pykiln_pyconfig::PythonConfig;

use crate::collect::{self, Collected, Layer};
use crate::error::{Error, Warning, WarningKind};
use crate::notices::{Notices, SystemLibFile};
use crate::options::BuildOptions;
use crate::project::{Project, ToolConfig};
use crate::{
    Excludes, baseline, cache, compile, frames, glibc, install, native, ondisk, pathuse, placement,
    strip,
};

/// A step of the pipeline, reported to a [`Progress`] as it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Probing the interpreter and reading the project.
    Probe,
    /// pip resolving, downloading and installing the requirements (cached).
    Install,
    /// Walking the standard library, the installed packages and the app.
    Collect,
    /// Compiling bytecode (cached by content).
    Compile,
    /// Native extensions and the shared libraries they need.
    Natives,
    /// The build-time import baseline and start-up order.
    Baseline,
    /// zstd compression of the archive (cached by content).
    Compress,
    /// Writing the output.
    Write,
}

impl Stage {
    /// Short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Probe => "probe",
            Stage::Install => "install",
            Stage::Collect => "collect",
            Stage::Compile => "compile",
            Stage::Natives => "natives",
            Stage::Baseline => "baseline",
            Stage::Compress => "compress",
            Stage::Write => "write",
        }
    }

    /// What it is doing, for a progress line.
    pub fn doing(self) -> &'static str {
        match self {
            Stage::Probe => "probing the interpreter",
            Stage::Install => "resolving and installing requirements",
            Stage::Collect => "collecting modules and data",
            Stage::Compile => "compiling bytecode",
            Stage::Natives => "packing native extensions",
            Stage::Baseline => "recording the import baseline",
            Stage::Compress => "compressing",
            Stage::Write => "writing",
        }
    }
}

/// Told when each stage starts; the CLI shows a spinner, build.rs ignores it.
pub trait Progress {
    /// `stage` is starting.
    fn stage(&mut self, stage: Stage);
}

impl Progress for () {
    fn stage(&mut self, _: Stage) {}
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The archive file.
    pub archive: PathBuf,
    /// Files whose change must rebuild the archive.
    pub inputs: Vec<PathBuf>,
    /// Non-fatal findings (and the glibc requirement, [`Warning::is_info`]).
    pub warnings: Vec<Warning>,
    /// Entries written.
    pub entries: usize,
    /// The archive's manifest (app, distributions, on-disk views, build facts).
    pub manifest: Manifest,
    /// The name the executable should have: the console script that runs it, else
    /// the project's name.
    pub binary_name: String,
    /// Wall time of each stage, in order.
    pub timings: Vec<(Stage, Duration)>,
    /// The interpreter that was packed (the runtime must embed the same).
    pub python: PythonConfig,
}

/// What to pack.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory holding pyproject.toml.
    Project(PathBuf),
    /// Requirements only: PEP 508 strings or local wheel paths, an optional
    /// requirements/lock file, and the console script to run (see
    /// [`Project::from_requirements`]).
    Requirements {
        /// Requirements and wheel paths (`mcp-server-time==2026.10.19`).
        specs: Vec<String>,
        /// A requirements or lock file.
        file: Option<PathBuf>,
        /// The console script to run.
        script: Option<String>,
    },
}

/// Wall-clock time per stage, and the progress callback.
struct Clock<'p> {
    current: Option<(Stage, Instant)>,
    done: Vec<(Stage, Duration)>,
    progress: &'p mut dyn Progress,
}

impl Clock<'_> {
    fn start(&mut self, stage: Stage) {
        self.end();
        self.progress.stage(stage);
        self.current = Some((stage, Instant::now()));
    }

    fn end(&mut self) {
        if let Some((s, t)) = self.current.take() {
            self.done.push((s, t.elapsed()));
        }
    }
}

/// The interpreter, the project and its staged install.
struct Staged {
    python: PythonConfig,
    project: Project,
    site: PathBuf,
    excludes: Excludes,
    /// The twin that runs `python`'s scripts when `python` is another CPU's and no
    /// qemu-user runs it ([`pykiln_pyconfig::foreign::Runs::OnTwin`]): the app's import
    /// cannot run here.
    twin: Option<PathBuf>,
}

/// Build the archive of `source` at `out` (written to a temporary name, then renamed).
pub fn build(
    source: &Source,
    overrides: &ToolConfig,
    options: &BuildOptions,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<BuildReport, Error> {
    let mut clock = Clock {
        current: None,
        done: Vec::new(),
        progress,
    };
    let cache = options.cache_dir.clone();
    // Held until the archive is written: no other build prunes what this one uses.
    let hold = cache::hold(&cache).map_err(Error::Cache)?;
    let mut warnings = Vec::new();
    let staged = stage(source, overrides, options, &mut clock)?;
    let mut inputs: Vec<PathBuf> = staged.project.pyproject.iter().cloned().collect();
    inputs.extend(staged.project.requirements.clone());

    clock.start(Stage::Collect);
    let collected = collect_files(&staged);
    // Another CPU's interpreter with no qemu-user to run it: its import of the app
    // (start-up order, import baseline) cannot run here.
    if staged.twin.is_some() {
        let arch =
            pykiln_pyconfig::foreign::foreign_arch(&staged.python.interpreter).unwrap_or("foreign");
        let version = &staged.python.version;
        warnings.push(Warning::new(
            WarningKind::Startup,
            format!(
                "the {arch} interpreter does not run here (no qemu-user: `apt install \
                 qemu-user-static`), so the app's import was not run: the binary starts \
                 without a recorded start-up order, and the import baseline ran on this \
                 machine's Python {version} with the same distributions"
            ),
        ));
    }
    let startup = (options.record_startup && staged.twin.is_none())
        .then(|| record_startup(&staged, &collected, &cache));
    inputs.extend(collected.app_files.iter().cloned());
    // The package directories too: cargo scans a directory for changes, so a module
    // or data file added after this build triggers the next one.
    inputs.extend(staged.project.packages.iter().map(|(_, dir)| dir.clone()));
    warnings.extend(warn(WarningKind::Collect, &collected.warnings));
    let dists = ondisk::distributions(&collected, &staged.project);
    // Python's parser on the modules that may reach their directory by path, beside
    // the compile (it is one more child of the same interpreter).
    let path_use = {
        let candidates = ondisk::candidates(&collected, &dists);
        let python = staged.python.interpreter.clone();
        let cache = cache.clone();
        std::thread::spawn(move || pathuse::analyze(&python, &cache, &candidates))
    };

    clock.start(Stage::Compile);
    let compiled = compile_modules(&staged, &collected, &cache, &mut warnings)?;
    let (mut w, dictionary) = archive_writer(&staged, &collected, &compiled, options)?;
    let mut source_warnings = Vec::new();
    let mut source_readers = collected.source_readers();
    source_readers.extend(ondisk::source_tops(
        &collected,
        &staged.project,
        &dists,
        &mut source_warnings,
    ));
    warnings.extend(warn(WarningKind::Sources, &source_warnings));

    clock.start(Stage::Natives);
    let policy = native_policy(&staged.project, &dists, &mut warnings)?;
    let PackedNatives {
        prediction: floor,
        system: system_libs,
        file_backed: file_backed_native,
    } = add_natives(
        &mut w, &staged, &collected, &cache, options, &policy, &dists,
    )?;
    warnings.extend(
        floor
            .describe()
            .map(|m| Warning::new(WarningKind::Glibc, m)),
    );
    let distributions = add_metadata(&mut w, &staged.project, &collected)?;
    let notices = Notices::gather(
        &staged.python,
        &staged.project,
        &collected,
        &system_libs,
        &options.rust_crates,
    );
    warnings.extend(warn(WarningKind::Licenses, &notices.warnings()));
    let archive_err = |e: pykiln_archive::WriteError| Error::Archive(e.into());
    w.add_notice(
        pykiln_archive::notices::LICENSES,
        notices.licenses().into_bytes(),
    )
    .map_err(archive_err)?;
    w.add_notice(
        pykiln_archive::notices::SBOM,
        notices.sbom().to_string().into_bytes(),
    )
    .map_err(archive_err)?;

    clock.start(Stage::Baseline);
    let recorded: Recorded = match startup.map(std::thread::JoinHandle::join) {
        None => Default::default(),
        Some(Ok(Ok(recorded))) => recorded,
        Some(Ok(Err(e))) => {
            warnings.push(Warning::new(
                WarningKind::Startup,
                format!(
                    "start-up order not recorded (importing {entry_module} in a plain interpreter: {e:#}); \
                     the binary works, but decompresses its start-up modules on the main thread, \
                     compiles the source strings and regular expressions its start-up generates, \
                     and what the import opens by path was not seen (on-disk views follow the \
                     analysis alone)",
                    entry_module = entry_module(&staged.project),
                ),
            ));
            Default::default()
        }
        Some(Err(_)) => Default::default(),
    };
    let findings = match path_use.join() {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            warnings.push(Warning::new(
                WarningKind::OnDisk,
                format!("the path-use analysis did not run ({e:#}); on-disk views follow the packed data files alone"),
            ));
            Default::default()
        }
        Err(_) => Default::default(),
    };
    let evidence = ondisk::Evidence {
        findings,
        touched: recorded.touched.clone(),
    };
    let views = ondisk::plan(&collected, &staged.project, &dists, &evidence);
    warnings.extend(warn(WarningKind::OnDisk, &views.warnings));
    add_modules(
        &mut w,
        &staged.project,
        &collected,
        &compiled,
        &views,
        &source_readers,
    )?;
    let manifest = manifest(
        &staged,
        &collected,
        &compiled,
        &views,
        &floor,
        distributions,
        dictionary,
        options,
        &mut warnings,
    )?;
    if !recorded.sources.is_empty() {
        let table: Vec<_> = recorded
            .sources
            .iter()
            .map(|(s, code)| (s.key(), code.clone()))
            .collect();
        w.add_compiled_sources(&table)
            .map_err(|e| Error::Archive(e.into()))?;
    }
    if let Some(seeds) = recorded.regex_seeds {
        w.add_regex_seeds(seeds)
            .map_err(|e| Error::Archive(e.into()))?;
    }
    let startup: Vec<String> = recorded
        .order
        .into_iter()
        .filter(|n| collected.modules.contains_key(n) || collected.extensions.contains_key(n))
        .collect();
    w = w.data_order(startup.clone());
    let manifest = Manifest {
        startup,
        file_backed_native,
        ..manifest
    };
    w.set_manifest(&manifest)
        .map_err(|e| Error::Archive(e.into()))?;
    let entries = w.len();

    clock.start(Stage::Compress);
    let bytes = w.finish().map_err(|e| Error::Archive(e.into()))?;
    clock.start(Stage::Write);
    crate::write_atomically(out, &bytes).map_err(Error::Output)?;
    warnings.extend(prune(hold, &cache, options.cache_max).map_err(Error::Cache)?);
    clock.end();
    warnings.sort();
    warnings.dedup();
    Ok(BuildReport {
        archive: out.to_path_buf(),
        inputs,
        warnings,
        entries,
        binary_name: staged.project.binary_name(),
        manifest,
        timings: clock.done,
        python: staged.python,
    })
}

fn entry_module(project: &Project) -> &str {
    project.entry_point.split_once(':').map_or("", |p| p.0)
}

fn warn(kind: WarningKind, messages: &[String]) -> Vec<Warning> {
    messages.iter().map(|m| Warning::new(kind, m)).collect()
}

/// Probe the interpreter, read the project, stage its requirements and, for a project
/// made of requirements, find its entry point among what they installed.
fn stage(
    source: &Source,
    overrides: &ToolConfig,
    options: &BuildOptions,
    clock: &mut Clock<'_>,
) -> Result<Staged, Error> {
    clock.start(Stage::Probe);
    let mut python = PythonConfig::probe(&options.python)?;
    // Build-time children run with a cleared environment (see pyrun): run the
    // interpreter itself, not a launcher (a pyenv shim picks its version from
    // PYENV_VERSION, which they no longer see).
    if python.executable.is_absolute() {
        python.interpreter = python.executable.clone();
    }
    let mut project = match source {
        Source::Project(dir) => Project::load(dir, overrides),
        Source::Requirements {
            specs,
            file,
            script,
        } => {
            Project::from_requirements(specs, file.as_deref(), script.as_deref(), overrides.clone())
        }
    }
    .map_err(Error::Project)?;
    clock.start(Stage::Install);
    let site = install::stage_dependencies(
        &python.interpreter,
        &python.version,
        python.portable.as_ref().map(|p| p.glibc.as_str()),
        &project,
        &options.cache_dir,
        options.refresh,
    )
    .map_err(Error::Install)?;
    project
        .resolve_entry_point(&site)
        .map_err(Error::EntryPoint)?;
    let mut excludes = Excludes::defaults();
    for e in &project.exclude {
        excludes.push(e.clone());
    }
    let twin = match pykiln_pyconfig::foreign::runs(&python.interpreter) {
        Ok(pykiln_pyconfig::foreign::Runs::OnTwin(twin)) => Some(twin),
        _ => None,
    };
    Ok(Staged {
        python,
        project,
        site,
        excludes,
        twin,
    })
}

/// Walk the standard library, the app's packages and the staged install.
fn collect_files(staged: &Staged) -> Collected {
    let mut collector = collect::Collector::new(&staged.excludes, &staged.python.cache_tag);
    collector.walk_stdlib(&staged.python.stdlib, &staged.python.dynload);
    for (name, dir) in &staged.project.packages {
        collector.walk_package(dir, name, &name.replace('.', "/"), Layer::App);
    }
    collector.walk_site(&staged.site);
    collector.finish()
}

/// What [`record_startup`] gives.
#[derive(Default)]
struct Recorded {
    /// The start-up import order.
    order: Vec<String>,
    /// The source strings the start-up compiles, with their code objects.
    sources: Vec<(crate::compile::Source, Vec<u8>)>,
    /// The regular expressions it compiles, as `re` cache seeds.
    regex_seeds: Option<Vec<u8>>,
    /// What it opened, listed, loaded or ran by path.
    touched: Vec<ondisk::Touch>,
}

/// Start recording the app's start-up import order and compiled source strings on
/// another thread (it imports the entry module in a plain interpreter, which overlaps
/// compiling and packing), then compile those strings.
fn record_startup(
    staged: &Staged,
    collected: &Collected,
    cache: &Path,
) -> std::thread::JoinHandle<anyhow::Result<Recorded>> {
    // The app's import roots: the directory above each top-level package.
    let mut paths: Vec<PathBuf> = Vec::new();
    for (name, dir) in &staged.project.packages {
        if let Some(root) = dir.ancestors().nth(name.matches('.').count() + 1) {
            if !paths.iter().any(|p| p == root) {
                paths.push(root.to_path_buf());
            }
        }
    }
    paths.push(staged.site.clone());
    let interpreter = staged.python.interpreter.clone();
    let entry_module = staged
        .project
        .entry_point
        .split_once(':')
        .map_or("", |(m, _)| m)
        .to_string();
    let pth_imports = collected.pth_imports.clone();
    let cache = cache.to_path_buf();
    let stdlib_excludes = staged.excludes.patterns().to_vec();
    let excludes = staged.excludes.user_patterns().to_vec();
    std::thread::spawn(move || {
        let startup = baseline::startup_order(
            &interpreter,
            &paths,
            &entry_module,
            &pth_imports,
            &stdlib_excludes,
            &excludes,
            &cache,
        )?;
        let code =
            compile::compile_startup(&interpreter, &cache, startup.sources, startup.regexes)?;
        Ok(Recorded {
            order: startup.order,
            sources: code.sources,
            regex_seeds: code.regex_seeds,
            touched: startup.touched,
        })
    })
}

/// Bytecode of every module, and the dependency modules that do not compile.
struct Compiled {
    code: BTreeMap<PathBuf, compile::Compiled>,
    /// Module name → why it does not compile (packed as source only).
    uncompilable: BTreeMap<String, compile::Failure>,
}

/// Compile every module (the app's strictly: a syntax error is an error naming the
/// file and line) and check the entry point exists.
fn compile_modules(
    staged: &Staged,
    collected: &Collected,
    cache: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<Compiled, Error> {
    let project = &staged.project;
    let python = &staged.python;
    let (entry_module, entry_object) = project.entry_point.split_once(':').unwrap_or_default();
    // `module:object.attr`: the module must define `object`.
    let entry_func = entry_object.split('.').next().unwrap_or_default();
    let jobs: Vec<compile::Job> = collected
        .modules
        .iter()
        .map(|(name, m)| compile::Job {
            path: m.path.clone(),
            filename: m.rel.clone(),
            names: name == entry_module,
            strict: m.layer == Layer::App || name == entry_module,
        })
        .collect();
    let compile::Outcome { compiled, failed } =
        compile::compile_all(&python.interpreter, &python.cache_tag, cache, &jobs)
            .map_err(Error::Compile)?;
    // Dependencies' modules that are not valid Python for this interpreter (Python 2
    // leftovers, templates named .py, another version's syntax): a venv installs them
    // too and only fails if something imports them, so they are packed as source,
    // importing them raises the same SyntaxError, and verify skips them.
    let uncompilable: BTreeMap<String, compile::Failure> = collected
        .modules
        .iter()
        .filter_map(|(n, m)| failed.get(&m.path).map(|f| (n.clone(), f.clone())))
        .collect();
    if !uncompilable.is_empty() {
        let shown: Vec<String> = uncompilable
            .iter()
            .take(5)
            .map(|(n, f)| {
                format!(
                    "{n} ({}:{}: {})",
                    collected.modules[n].rel, f.lineno, f.error
                )
            })
            .collect();
        let py = format!("{}.{}", python.major, python.minor);
        let n = uncompilable.len();
        let head = if n == 1 {
            format!(
                "1 dependency module does not compile on Python {py} and is packed as source only \
                 (importing it raises SyntaxError, as in a venv; `--pykiln verify` skips it)"
            )
        } else {
            format!(
                "{n} dependency modules do not compile on Python {py} and are packed as source only \
                 (importing one raises SyntaxError, as in a venv; `--pykiln verify` skips them)"
            )
        };
        let more = match n - shown.len() {
            0 => String::new(),
            rest => format!(" and {rest} more"),
        };
        warnings.push(Warning::new(
            WarningKind::Uncompilable,
            format!("{head}: {}{more}", shown.join(", ")),
        ));
    }

    let entry = collected.modules.get(entry_module);
    match entry.and_then(|m| compiled.get(&m.path)) {
        None => {
            return Err(Error::EntryPoint(anyhow!(
                "entry point {} not found: no module {entry_module} in the app or its dependencies",
                project.entry_point
            )));
        }
        Some(c)
            if !c
                .names
                .as_ref()
                .is_some_and(|n| n.iter().any(|n| n == entry_func)) =>
        {
            return Err(Error::EntryPoint(anyhow!(
                "entry point {} not found: {} defines no top-level '{entry_func}'",
                project.entry_point,
                collected.modules[entry_module].path.display()
            )));
        }
        Some(_) => {}
    }
    Ok(Compiled {
        code: compiled,
        uncompilable,
    })
}

/// The writer, with the zstd dictionary trained on the dependencies' bytecode (its
/// size is returned for the manifest).
fn archive_writer(
    staged: &Staged,
    collected: &Collected,
    compiled: &Compiled,
    options: &BuildOptions,
) -> Result<(ArchiveWriter, Option<usize>), Error> {
    let cache = &options.cache_dir;
    // The dictionary learns from the standard library and the dependencies only, so
    // that editing the app never changes it (nor every blob compressed with it).
    let samples: Vec<&Path> = collected
        .modules
        .values()
        .filter(|m| m.layer != Layer::App)
        .filter_map(|m| compiled.code.get(&m.path).map(|c| c.code_path.as_path()))
        .collect();
    let dictionary = frames::bytecode_dictionary(&samples, cache).map_err(Error::Cache)?;
    let frame_cache = frames::DirCache::new(cache.join("zstd")).map_err(Error::Cache)?;
    let python = &staged.python;
    let mut w = ArchiveWriter::new((python.major as u8, python.minor as u8))
        .compression_level(options.level)
        .frame_cache(Box::new(frame_cache));
    let size = dictionary.as_ref().map(Vec::len);
    if let Some(d) = dictionary {
        w = w.dictionary(d);
    }
    Ok((w, size))
}

/// Every module's bytecode, and its source where the app, an on-disk view, a
/// `sources` option or a module that does not compile needs it.
fn add_modules(
    w: &mut ArchiveWriter,
    project: &Project,
    collected: &Collected,
    compiled: &Compiled,
    views: &ondisk::Plan,
    source_readers: &BTreeSet<String>,
) -> Result<(), Error> {
    for (name, m) in &collected.modules {
        // No bytecode (empty) marks a module the runtime compiles from its source.
        let code = match compiled.code.get(&m.path) {
            Some(c) => std::fs::read(&c.code_path)
                .with_context(|| format!("reading {}", c.code_path.display()))
                .map_err(Error::Cache)?,
            None => Vec::new(),
        };
        // Sources of on-disk groups whose code lists its directory are packed too:
        // their view is then a real package directory, listed like one.
        let top = name.split('.').next().unwrap_or(name);
        let source = if code.is_empty()
            || m.layer == Layer::App
            || project.all_sources
            || views.packs_source(name)
            || source_readers.contains(top)
        {
            Some(
                std::fs::read(&m.path)
                    .with_context(|| format!("reading {}", m.path.display()))
                    .map_err(Error::Project)?,
            )
        } else {
            None
        };
        w.add_module(name, code, source, m.is_package)
            .map_err(|e| Error::Archive(e.into()))?;
    }
    Ok(())
}

/// `[tool.pykiln]`'s native-image placement, checked: a bad threshold is an error
/// naming the key; a distribution named in an override that is not packed, a warning.
/// `known` is [`ondisk::distributions`]'s.
fn native_policy(
    project: &Project,
    known: &BTreeMap<String, BTreeSet<String>>,
    warnings: &mut Vec<Warning>,
) -> Result<placement::Policy, Error> {
    let threshold = match &project.native_cache_threshold {
        None => Some(placement::DEFAULT_THRESHOLD),
        Some(t) => placement::parse_threshold(t).ok_or_else(|| {
            Error::Project(anyhow::anyhow!(
                "[tool.pykiln] native-cache-threshold = {t:?}: expected a size (1M, 262144) or \"off\""
            ))
        })?,
    };
    let mut names = |list: &[String], key: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for name in list {
            let n = crate::project::normalize(name);
            if !known.contains_key(&n) {
                warnings.push(Warning::new(
                    WarningKind::Collect,
                    format!("[tool.pykiln] {key}: no packed distribution is named {name:?}"),
                ));
            }
            out.insert(n);
        }
        out
    };
    Ok(placement::Policy {
        threshold,
        in_memory: names(&project.native_in_memory, "native-in-memory"),
        cached: names(&project.native_cached, "native-cached"),
    })
}

/// The C compiler for placeholder libraries, and the cache directory they go to: for
/// another CPU's interpreter (a cross build), its toolchain's compiler for its target.
fn placeholder_compiler(
    python: &PythonConfig,
    options: &BuildOptions,
) -> anyhow::Result<(String, &'static str)> {
    let Some(p) = python
        .portable
        .as_ref()
        .filter(|_| pykiln_pyconfig::foreign::foreign_arch(&python.interpreter).is_some())
    else {
        return Ok((options.cc.clone(), ""));
    };
    let target = pykiln_python::toolchain::target(Some(&p.target))?;
    let tools = pykiln_python::toolchain::Toolchain {
        dir: p.toolchain.clone(),
    };
    let cc = tools.wrappers(&target)?.cc;
    Ok((cc.display().to_string(), target.arch()))
}

/// Extension modules, the closure of the non-system libraries they need, and
/// placeholders for those the executable provides; returns the glibc prediction, the
/// libraries packed from the system's directories (soname, path, bytes) and the
/// images `policy` makes file-backed (for the manifest). `dists` is
/// [`ondisk::distributions`]'s.
fn add_natives(
    w: &mut ArchiveWriter,
    staged: &Staged,
    collected: &Collected,
    cache: &Path,
    options: &BuildOptions,
    policy: &placement::Policy,
    dists: &BTreeMap<String, BTreeSet<String>>,
) -> Result<PackedNatives, Error> {
    // Which distributions each top-level import name belongs to.
    let mut dists_of_top: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (dist, tops) in dists {
        for top in tops {
            dists_of_top
                .entry(top.as_str())
                .or_default()
                .insert(dist.clone());
        }
    }
    let mut file_backed = BTreeMap::new();
    let mut ext_needs: Vec<(BTreeSet<String>, Vec<String>)> = Vec::new();
    // Debug info and symbol tables are most of a `-g` build's size; the loader
    // reads neither.
    let strip_elf = |bytes: Vec<u8>| {
        if staged.project.strip_native {
            strip::strip_checked(bytes)
        } else {
            bytes
        }
    };
    let native_err = |e: anyhow::Error| Error::Native(e);
    let mut roots = Vec::new();
    let mut native_floor = glibc::Natives::default();
    for (name, path) in &collected.extensions {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(native_err)?;
        native_floor.note(name, &bytes);
        let info = native::elf_info(path, &bytes).map_err(native_err)?;
        let needed: Vec<&str> = info
            .needed
            .iter()
            .map(String::as_str)
            .filter(|n| !native::is_system_library(n))
            .collect();
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let packed = strip_elf(bytes);
        let top = name.split('.').next().unwrap_or(name);
        let dists = dists_of_top.get(top).cloned().unwrap_or_default();
        file_backed.extend(policy.place(&[placement::Image {
            key: pykiln_archive::file_backed_key(pykiln_archive::EntryKind::Extension, name),
            bytes: &packed,
            dists: dists.clone(),
        }]));
        ext_needs.push((dists, needed.iter().map(|n| n.to_string()).collect()));
        w.add_extension(name, &file, packed, &needed)
            .map_err(|e| Error::Archive(e.into()))?;
        roots.push((path.clone(), info));
    }
    let libs = native::closure(&roots, &collected.vendored).map_err(native_err)?;
    for (soname, lib) in &libs {
        native_floor.note(soname, &lib.bytes);
    }
    let prediction = match &staged.python.portable {
        Some(p) => glibc::linked_against(&p.glibc, native_floor)
            .with_context(|| format!("the interpreter's record names glibc {:?}", p.glibc)),
        None => {
            let linked: Vec<PathBuf> = std::iter::once(staged.python.static_library())
                .chain(
                    staged
                        .python
                        .link_plan()
                        .into_iter()
                        .filter_map(|l| l.static_archive),
                )
                .collect();
            glibc::predict(&linked, native_floor, cache)
        }
    }
    .map_err(native_err)?;
    let from_wheels: BTreeSet<PathBuf> = collected
        .vendored
        .values()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
    let system = libs
        .iter()
        .filter(|(_, l)| !from_wheels.contains(&l.path))
        .map(|(s, l)| (s.clone(), l.path.clone(), l.bytes.clone()))
        .collect();
    // A library belongs to the distributions of every extension that needs it,
    // directly or through other packed libraries.
    let mut lib_dists: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (dists, needed) in &ext_needs {
        let mut todo: Vec<&str> = needed.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        while let Some(soname) = todo.pop() {
            let Some((key, lib)) = libs.get_key_value(soname) else {
                continue;
            };
            if seen.insert(key.as_str()) {
                lib_dists
                    .entry(key.as_str())
                    .or_default()
                    .extend(dists.iter().cloned());
                todo.extend(lib.needed.iter().map(String::as_str));
            }
        }
    }
    for (soname, lib) in &libs {
        let needed: Vec<&str> = lib.needed.iter().map(String::as_str).collect();
        let packed = strip_elf(lib.bytes.clone());
        file_backed.extend(policy.place(&[placement::Image {
            key: pykiln_archive::file_backed_key(pykiln_archive::EntryKind::SharedLib, soname),
            bytes: &packed,
            dists: lib_dists.get(soname.as_str()).cloned().unwrap_or_default(),
        }]));
        w.add_shared_lib(soname, packed, &needed)
            .map_err(|e| Error::Archive(e.into()))?;
    }
    let placeholders: BTreeSet<&str> = roots
        .iter()
        .flat_map(|(_, i)| i.needed.iter())
        .chain(libs.values().flat_map(|l| l.needed.iter()))
        .map(String::as_str)
        .filter(|n| native::provided_by_executable(n))
        .collect();
    let (cc, arch) = placeholder_compiler(&staged.python, options).map_err(native_err)?;
    for soname in placeholders {
        let lib = crate::placeholder_library(soname, cache, &cc, arch).map_err(native_err)?;
        let packed = strip_elf(lib);
        file_backed.extend(policy.place(&[placement::Image {
            key: pykiln_archive::file_backed_key(pykiln_archive::EntryKind::SharedLib, soname),
            bytes: &packed,
            dists: lib_dists.get(soname).cloned().unwrap_or_default(),
        }]));
        w.add_shared_lib(soname, packed, &[])
            .map_err(|e| Error::Archive(e.into()))?;
    }
    Ok(PackedNatives {
        prediction,
        system,
        file_backed,
    })
}

/// What [`add_natives`] packed.
struct PackedNatives {
    /// The glibc floor of the packed native code.
    prediction: glibc::Prediction,
    /// The libraries packed from the system's directories.
    system: Vec<SystemLibFile>,
    /// The manifest's file-backed images.
    file_backed: BTreeMap<String, String>,
}

/// Package data and dist-info files (the app's own generated); returns the packed
/// distributions, sorted.
fn add_metadata(
    w: &mut ArchiveWriter,
    project: &Project,
    collected: &Collected,
) -> Result<Vec<Distribution>, Error> {
    let read = |path: &Path| {
        std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(Error::Project)
    };
    let archive_err = |e: pykiln_archive::WriteError| Error::Archive(e.into());
    for ((pkg, rel), path) in &collected.resources {
        w.add_resource(pkg, rel, read(path)?).map_err(archive_err)?;
    }
    let mut distributions = Vec::new();
    for ((dir, file), path) in &collected.dist_files {
        let bytes = read(path)?;
        if file == "METADATA" {
            distributions.extend(crate::distribution_of(&bytes));
        }
        w.add_dist_file(dir, file, bytes).map_err(archive_err)?;
    }
    // A project made of requirements is the distribution that provides the script.
    if project.pyproject.is_some() {
        let (app_dist, app_files) = project.dist_info();
        for (file, bytes) in app_files {
            w.add_dist_file(&app_dist, &file, bytes)
                .map_err(archive_err)?;
        }
    }
    distributions.sort();
    Ok(distributions)
}

/// The manifest, with the import failures a plain environment has too (so verify
/// and the runtime can tell them from packing mistakes).
#[allow(clippy::too_many_arguments)]
fn manifest(
    staged: &Staged,
    collected: &Collected,
    compiled: &Compiled,
    views: &ondisk::Plan,
    floor: &glibc::Prediction,
    distributions: Vec<Distribution>,
    dictionary: Option<usize>,
    options: &BuildOptions,
    warnings: &mut Vec<Warning>,
) -> Result<Manifest, Error> {
    let (python, project) = (&staged.python, &staged.project);
    // Modules of the stdlib and the dependencies that fail in a plain environment
    // too; the app's own modules are always expected to import.
    let third_party: Vec<&str> = collected
        .modules
        .iter()
        .filter(|(n, m)| m.layer != Layer::App && !compiled.uncompilable.contains_key(*n))
        .map(|(n, _)| n.as_str())
        .chain(collected.extensions.keys().map(String::as_str))
        .collect();
    let mut baseline_warnings = Vec::new();
    // Another CPU's interpreter that cannot run here: the baseline runs on its twin,
    // with the same distributions installed for the twin's CPU.
    let baseline_run = match staged.twin.clone() {
        None => Some((
            python.interpreter.clone(),
            staged.site.clone(),
            python.stdlib.clone(),
        )),
        Some(twin) => {
            let twin_prefix = twin.parent().and_then(Path::parent).unwrap_or(&twin);
            let stdlib = match python.stdlib.strip_prefix(&python.base_prefix) {
                Ok(rest) => twin_prefix.join(rest),
                Err(_) => python.stdlib.clone(),
            };
            match install::stage_for_twin(&twin, &staged.site, &project.name, &options.cache_dir) {
                Ok(site) => Some((twin, site, stdlib)),
                Err(e) => {
                    warnings.push(Warning::new(
                        WarningKind::Baseline,
                        format!(
                            "no import baseline: {e:#}; `--pykiln verify` on the target also \
                             counts the imports that fail outside pykiln"
                        ),
                    ));
                    None
                }
            }
        }
    };
    let mut baseline = BTreeMap::new();
    if let Some((interpreter, site, stdlib)) = &baseline_run {
        baseline = baseline::import_failures(
            interpreter,
            std::slice::from_ref(site),
            &third_party,
            &staged.excludes,
            &options.cache_dir,
            options.import_timeout,
            &mut baseline_warnings,
        )
        .map_err(Error::Cache)?
        .into_iter()
        // The archive records no build-machine paths.
        .map(|(m, e)| {
            (
                m,
                e.replace(&*site.to_string_lossy(), "<site-packages>")
                    .replace(&*stdlib.to_string_lossy(), "<stdlib>"),
            )
        })
        .collect();
    }
    let expected_import_failures: BTreeMap<String, String> = baseline
        .into_iter()
        .chain(compiled.uncompilable.iter().map(|(n, f)| {
            (
                n.clone(),
                format!(
                    "does not compile on Python {}.{}: {} (line {})",
                    python.major, python.minor, f.error, f.lineno
                ),
            )
        }))
        .collect();
    warnings.extend(warn(WarningKind::Baseline, &baseline_warnings));

    let mut build = BTreeMap::new();
    build.insert("zstd_level".to_string(), options.level.to_string());
    if let Some(len) = dictionary {
        build.insert(
            "zstd_dictionary".to_string(),
            format!("{len} bytes, trained on the dependencies' bytecode"),
        );
    }
    build.insert("strip_native".to_string(), project.strip_native.to_string());
    if let Some(f) = floor.overall() {
        build.insert("min_glibc".to_string(), f.version.to_string());
        build.insert("min_glibc_needed_by".to_string(), f.needed_by.clone());
    }
    if let Some(f) = &floor.executable {
        build.insert("min_glibc_executable".to_string(), f.version.to_string());
    }
    build.insert(
        "stdlib_excludes".to_string(),
        "python-stdlib/exclude.txt".to_string(),
    );
    build.insert(
        "sources".to_string(),
        if project.all_sources { "all" } else { "app" }.to_string(),
    );
    Ok(Manifest {
        pykiln_version: env!("CARGO_PKG_VERSION").to_string(),
        python_version: python.version.clone(),
        app: Some(AppInfo {
            name: project.name.clone(),
            version: project.version.clone(),
            entry_point: project.entry_point.clone(),
            python_cli: project.python_cli,
            stdout_guard: project.stdout_guard,
        }),
        distributions,
        build,
        expected_import_failures,
        on_disk: views.groups.clone(),
        pth_imports: collected.pth_imports.clone(),
        openssl_default_paths: python
            .openssl_paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        startup: Vec::new(),
        file_backed_native: BTreeMap::new(),
        mcpb: project.mcpb.clone(),
        oci: project.oci.clone(),
    })
}

/// Release the cache and prune it to its cap; a warning when it was or is over it.
fn prune(hold: cache::Hold, dir: &Path, max: u64) -> anyhow::Result<Option<Warning>> {
    let message = match hold.finish(max)? {
        cache::Pruning::Pruned {
            before,
            after,
            removed,
        } => format!(
            "the build cache {} held {}, over its cap of {} ({}): removed the {removed} least recently used entries, {} left",
            dir.display(),
            cache::human(before),
            cache::human(max),
            cache::MAX_ENV,
            cache::human(after)
        ),
        cache::Pruning::Fits { size } | cache::Pruning::Busy { size } if size > max => format!(
            "the build cache {} holds {}, over its cap of {} ({}); another build is using it, so a later build will prune it",
            dir.display(),
            cache::human(size),
            cache::human(max),
            cache::MAX_ENV
        ),
        _ => return Ok(None),
    };
    Ok(Some(Warning::new(WarningKind::Cache, message)))
}
