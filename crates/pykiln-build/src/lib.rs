//! Build a pykiln archive from a Python project, from a `build.rs`.
//!
//! ```no_run
//! // build.rs of the binary crate (whose src/main.rs is `pykiln::main!();`):
//! pykiln_build::App::from_project("examples/notes-server").run_build_script();
//! ```
//!
//! The pipeline: find the interpreter (the one pyo3 links, see `pykiln-pyconfig`);
//! read pyproject.toml; pip-install the dependencies into a staging directory cached by
//! the hash of the requirements; collect the standard library (minus
//! `python-stdlib/exclude.txt`), the staged packages with their data and dist-info, the
//! app, native extensions and the closure of the non-glibc libraries they need; compile
//! bytecode with the same interpreter (cached by content); write the archive.

mod baseline;
mod cache;
mod collect;
mod compile;
mod frames;
mod glibc;
mod install;
mod native;
mod ondisk;
mod project;
mod pyrun;
mod stdlib;
mod strip;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use pykiln_archive::{AppInfo, ArchiveWriter, Distribution, Manifest};
use pykiln_pyconfig::PythonConfig;

pub use collect::Layer;
pub use project::Project;
pub use stdlib::Excludes;

/// Environment variables that change what a build produces.
pub const BUILD_ENV: &[&str] = &[
    "PYKILN_CACHE_DIR",
    cache::MAX_ENV,
    "PYKILN_ZSTD_LEVEL",
    "XDG_CACHE_HOME",
    "CC",
];

/// The symbols the executable exports to the extension modules it loads: the Python C
/// API and the bundled SQLite's. Not everything (`--export-dynamic`): exported symbols
/// are kept by the linker even when unused (zstd's compressor, ~0.5 MB), make every
/// symbol lookup of a loading extension search a bigger table, and would interpose on
/// same-named symbols inside extensions (a wheel with its own zstd or xxhash).
const EXPORTS: &str = "{\n  Py*;\n  _Py*;\n  sqlite3_*;\n};\n";

/// Set to print the time of each build step as a cargo warning.
pub const TIMINGS_ENV: &str = "PYKILN_BUILD_TIMINGS";

/// A Python application to pack.
#[derive(Debug, Clone)]
pub struct App {
    dir: PathBuf,
    entry_point: Option<String>,
    excludes: Excludes,
    level: i32,
    stdlib_sources: bool,
    cache: Option<PathBuf>,
    cache_max: Option<u64>,
    import_timeout: std::time::Duration,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The archive file.
    pub archive: PathBuf,
    /// Files whose change must rebuild the archive.
    pub inputs: Vec<PathBuf>,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
    /// Entries written.
    pub entries: usize,
    /// Wall time of each pipeline step, in order.
    pub timings: Vec<(&'static str, std::time::Duration)>,
}

/// Wall-clock time per pipeline step.
struct Phases {
    last: std::time::Instant,
    done: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    fn new() -> Self {
        Phases {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    fn mark(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.done.push((step, now - self.last));
        self.last = now;
    }
}

impl App {
    /// A project directory holding pyproject.toml. Relative paths are taken from
    /// `CARGO_MANIFEST_DIR` when set (inside a build script), else the current directory.
    pub fn from_project(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        let dir = match std::env::var_os("CARGO_MANIFEST_DIR") {
            Some(root) if dir.is_relative() => Path::new(&root).join(dir),
            _ => dir.to_path_buf(),
        };
        let level = std::env::var("PYKILN_ZSTD_LEVEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(19);
        App {
            dir,
            entry_point: None,
            excludes: Excludes::defaults(),
            level,
            stdlib_sources: false,
            cache: None,
            cache_max: None,
            import_timeout: baseline::IMPORT_TIMEOUT,
        }
    }

    /// Override the entry point (`module:function`).
    pub fn entry_point(mut self, entry: impl Into<String>) -> Self {
        self.entry_point = Some(entry.into());
        self
    }

    /// Leave out a module (and its subpackages); `*` wildcards allowed.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.excludes.push(pattern);
        self
    }

    /// zstd level (default 19, or `PYKILN_ZSTD_LEVEL`). Compressed blobs are cached by
    /// content, so a high level costs only the first build (~13 s for the demo here).
    pub fn compression_level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// Also pack the sources of the standard library and dependencies (the app's own
    /// sources are always packed, for tracebacks).
    pub fn with_all_sources(mut self, yes: bool) -> Self {
        self.stdlib_sources = yes;
        self
    }

    /// How long one import may take in the build-time import baseline before the
    /// module is recorded as hanging on import (default 30 s).
    pub fn import_timeout(mut self, limit: std::time::Duration) -> Self {
        self.import_timeout = limit;
        self
    }

    /// Cap the build cache at `bytes` (default `$PYKILN_CACHE_MAX`, else 2 GiB): after
    /// the build, the least recently used entries are removed until it fits.
    pub fn cache_max(mut self, bytes: u64) -> Self {
        self.cache_max = Some(bytes);
        self
    }

    /// Cache directory for staged installs and bytecode (default `$PYKILN_CACHE_DIR`,
    /// else `$XDG_CACHE_HOME/pykiln`, else `~/.cache/pykiln`).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Some(dir.into());
        self
    }

    fn cache(&self) -> anyhow::Result<PathBuf> {
        if let Some(c) = &self.cache {
            return Ok(c.clone());
        }
        if let Some(c) = std::env::var_os("PYKILN_CACHE_DIR").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(c));
        }
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return Ok(Path::new(&x).join("pykiln"));
        }
        let home = std::env::var_os("HOME").context("no cache directory: set PYKILN_CACHE_DIR")?;
        Ok(Path::new(&home).join(".cache").join("pykiln"))
    }

    /// Run as a build script: build into `OUT_DIR`, print the cargo instructions, and on
    /// failure print the error and exit non-zero (no panic, no backtrace).
    pub fn run_build_script(self) {
        for var in pykiln_pyconfig::SELECTING_ENV
            .iter()
            .chain(BUILD_ENV)
            .chain(install::PIP_ENV)
            .chain([&install::REFRESH_ENV])
        {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let result = std::env::var_os("OUT_DIR")
            .context("OUT_DIR is not set: run_build_script() is for build scripts; use build_to() elsewhere")
            .and_then(|out| {
                let out = Path::new(&out);
                let exports = out.join("pykiln-exports.list");
                write_atomically(&exports, EXPORTS.as_bytes())?;
                Ok((self.build_to(&out.join("app.pykiln"))?, exports))
            });
        match result {
            Ok((report, exports)) => {
                for input in &report.inputs {
                    println!("cargo:rerun-if-changed={}", input.display());
                }
                for w in &report.warnings {
                    println!("cargo:warning={w}");
                }
                if std::env::var_os(TIMINGS_ENV).is_some() {
                    let steps: Vec<String> = report
                        .timings
                        .iter()
                        .map(|(step, t)| format!("{step} {:.0} ms", t.as_secs_f64() * 1e3))
                        .collect();
                    println!("cargo:warning=pykiln build steps: {}", steps.join(", "));
                }
                println!(
                    "cargo:rustc-env=PYKILN_ARCHIVE={}",
                    report.archive.display()
                );
                // Extension modules resolve Py* (and the bundled sqlite3_*) symbols
                // against the executable; nothing else is exported (see EXPORTS).
                println!(
                    "cargo:rustc-link-arg-bins=-Wl,--dynamic-list={}",
                    exports.display()
                );
            }
            Err(e) => {
                eprintln!("error: pykiln: {e:#}");
                std::process::exit(1);
            }
        }
    }

    /// Start recording the app's start-up import order on another thread (it imports
    /// the entry module in a plain interpreter, which overlaps compiling and packing).
    fn record_startup(
        &self,
        python: &PythonConfig,
        site: &Path,
        project: &Project,
        collected: &collect::Collected,
        cache: &Path,
    ) -> std::thread::JoinHandle<anyhow::Result<Vec<String>>> {
        // The app's import roots: the directory above each top-level package.
        let mut paths: Vec<PathBuf> = Vec::new();
        for (name, dir) in &project.packages {
            if let Some(root) = dir.ancestors().nth(name.matches('.').count() + 1) {
                if !paths.iter().any(|p| p == root) {
                    paths.push(root.to_path_buf());
                }
            }
        }
        paths.push(site.to_path_buf());
        let interpreter = python.interpreter.clone();
        let entry_module = project
            .entry_point
            .split_once(':')
            .map_or("", |(m, _)| m)
            .to_string();
        let pth_imports = collected.pth_imports.clone();
        let cache = cache.to_path_buf();
        let stdlib_excludes = self.excludes.patterns().to_vec();
        let excludes = self.excludes.user_patterns().to_vec();
        std::thread::spawn(move || {
            baseline::startup_order(
                &interpreter,
                &paths,
                &entry_module,
                &pth_imports,
                &stdlib_excludes,
                &excludes,
                &cache,
            )
        })
    }

    /// Build the archive at `out` (written to a temporary name, then renamed).
    pub fn build_to(&self, out: &Path) -> anyhow::Result<BuildReport> {
        let mut phases = Phases::new();
        let mut python = PythonConfig::discover()?;
        // Build-time children run with a cleared environment (see pyrun): run the
        // interpreter itself, not a launcher (a pyenv shim picks its version from
        // PYENV_VERSION, which they no longer see).
        if python.executable.is_absolute() {
            python.interpreter = python.executable.clone();
        }
        let cache = self.cache()?;
        let cache_max = match self.cache_max {
            Some(max) => max,
            None => cache::max_from_env()?,
        };
        // Held until the archive is written: no other build prunes what this one uses.
        let hold = cache::hold(&cache)?;
        let project = Project::load(&self.dir, self.entry_point.as_deref())?;
        let mut inputs = vec![self.dir.join("pyproject.toml")];
        inputs.extend(project.requirements.clone());

        phases.mark("probe");
        let site =
            install::stage_dependencies(&python.interpreter, &python.version, &project, &cache)?;
        phases.mark("install");

        let mut collector = collect::Collector::new(&self.excludes, &python.cache_tag);
        collector.walk_stdlib(&python.stdlib, &python.dynload);
        for (name, dir) in &project.packages {
            collector.walk_package(dir, name, &name.replace('.', "/"), Layer::App);
        }
        collector.walk_site(&site);
        let collected = collector.finish();
        phases.mark("collect");
        let startup = self.record_startup(&python, &site, &project, &collected, &cache);
        inputs.extend(collected.app_files.iter().cloned());
        // The package directories too: cargo scans a directory for changes, so a module
        // or data file added after this build triggers the next one.
        inputs.extend(project.packages.iter().map(|(_, dir)| dir.clone()));
        let mut warnings = collected.warnings.clone();
        let dists = ondisk::distributions(&collected, &project);
        let on_disk = ondisk::plan(&collected, &project, &dists);
        warnings.extend(on_disk.warnings.iter().cloned());

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
            compile::compile_all(&python.interpreter, &python.cache_tag, &cache, &jobs)?;
        phases.mark("compile");
        // Dependencies' modules that are not valid Python for this interpreter (Python 2
        // leftovers, templates named .py, another version's syntax): a venv installs
        // them too and only fails if something imports them, so they are packed as
        // source, importing them raises the same SyntaxError, and verify skips them.
        let uncompilable: BTreeMap<&str, &compile::Failure> = collected
            .modules
            .iter()
            .filter_map(|(n, m)| failed.get(&m.path).map(|f| (n.as_str(), f)))
            .collect();
        if !uncompilable.is_empty() {
            let shown: Vec<String> = uncompilable
                .iter()
                .take(5)
                .map(|(n, f)| {
                    format!(
                        "{n} ({}:{}: {})",
                        collected.modules[*n].rel, f.lineno, f.error
                    )
                })
                .collect();
            let (py, n) = (
                format!("{}.{}", python.major, python.minor),
                uncompilable.len(),
            );
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
            warnings.push(format!("{head}: {}{more}", shown.join(", ")));
        }

        match collected
            .modules
            .get(entry_module)
            .and_then(|m| compiled.get(&m.path))
        {
            None => bail!(
                "entry point {} not found: no module {entry_module} in the app or its dependencies",
                project.entry_point
            ),
            Some(c)
                if !c
                    .names
                    .as_ref()
                    .is_some_and(|n| n.iter().any(|n| n == entry_func)) =>
            {
                bail!(
                    "entry point {} not found: {} defines no top-level '{entry_func}'",
                    project.entry_point,
                    collected.modules[entry_module].path.display()
                )
            }
            Some(_) => {}
        }

        // The dictionary learns from the standard library and the dependencies only, so
        // that editing the app never changes it (nor every blob compressed with it).
        let samples: Vec<&Path> = collected
            .modules
            .values()
            .filter(|m| m.layer != Layer::App)
            .filter_map(|m| compiled.get(&m.path).map(|c| c.code_path.as_path()))
            .collect();
        let dictionary = frames::bytecode_dictionary(&samples, &cache)?;
        phases.mark("dictionary");
        let mut w = ArchiveWriter::new((python.major as u8, python.minor as u8))
            .compression_level(self.level)
            .frame_cache(Box::new(frames::DirCache::new(cache.join("zstd"))?));
        if let Some(d) = &dictionary {
            w = w.dictionary(d.clone());
        }
        let mut source_readers = collected.source_readers();
        source_readers.extend(ondisk::source_tops(
            &collected,
            &project,
            &dists,
            &mut warnings,
        ));
        for (name, m) in &collected.modules {
            // No bytecode (empty) marks a module the runtime compiles from its source.
            let code = match compiled.get(&m.path) {
                Some(c) => std::fs::read(&c.code_path)
                    .with_context(|| format!("reading {}", c.code_path.display()))?,
                None => Vec::new(),
            };
            // Sources of on-disk groups are packed too: their view is a real package
            // directory, listed and read like one.
            let top = name.split('.').next().unwrap_or(name);
            let source = if code.is_empty()
                || m.layer == Layer::App
                || self.stdlib_sources
                || on_disk.covers(name)
                || source_readers.contains(top)
            {
                Some(
                    std::fs::read(&m.path)
                        .with_context(|| format!("reading {}", m.path.display()))?,
                )
            } else {
                None
            };
            w.add_module(name, code, source, m.is_package)?;
        }

        // Debug info and symbol tables are most of a `-g` build's size; the loader
        // reads neither.
        let strip_elf = |bytes: Vec<u8>| {
            if project.strip_native {
                strip::strip_checked(bytes)
            } else {
                bytes
            }
        };
        let mut roots = Vec::new();
        let mut native_floor = glibc::Natives::default();
        for (name, path) in &collected.extensions {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            native_floor.note(name, &bytes);
            let info = native::elf_info(path, &bytes)?;
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
            w.add_extension(name, &file, strip_elf(bytes), &needed)?;
            roots.push((path.clone(), info));
        }
        let libs = native::closure(&roots, &collected.vendored)?;
        for (soname, lib) in &libs {
            native_floor.note(soname, &lib.bytes);
        }
        let glibc = glibc::predict(&python.static_library(), native_floor, &cache)?;
        warnings.extend(glibc.describe());
        for (soname, lib) in &libs {
            let needed: Vec<&str> = lib.needed.iter().map(String::as_str).collect();
            w.add_shared_lib(soname, strip_elf(lib.bytes.clone()), &needed)?;
        }
        let placeholders: std::collections::BTreeSet<&str> = roots
            .iter()
            .flat_map(|(_, i)| i.needed.iter())
            .chain(libs.values().flat_map(|l| l.needed.iter()))
            .map(String::as_str)
            .filter(|n| native::provided_by_executable(n))
            .collect();
        for soname in placeholders {
            w.add_shared_lib(soname, strip_elf(placeholder_library(soname, &cache)?), &[])?;
        }

        for ((pkg, rel), path) in &collected.resources {
            w.add_resource(
                pkg,
                rel,
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )?;
        }
        let mut distributions = Vec::new();
        for ((dir, file), path) in &collected.dist_files {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            if file == "METADATA" {
                distributions.extend(distribution_of(&bytes));
            }
            w.add_dist_file(dir, file, bytes)?;
        }
        let (app_dist, app_files) = project.dist_info();
        for (file, bytes) in app_files {
            w.add_dist_file(&app_dist, &file, bytes)?;
        }
        distributions.sort();

        // Modules of the stdlib and the dependencies that fail in a plain environment
        // too; the app's own modules are always expected to import.
        let third_party: Vec<&str> = collected
            .modules
            .iter()
            .filter(|(n, m)| m.layer != Layer::App && !uncompilable.contains_key(n.as_str()))
            .map(|(n, _)| n.as_str())
            .chain(collected.extensions.keys().map(String::as_str))
            .collect();
        phases.mark("add entries");
        let expected_import_failures = baseline::import_failures(
            &python.interpreter,
            std::slice::from_ref(&site),
            &third_party,
            &self.excludes,
            &cache,
            self.import_timeout,
            &mut warnings,
        )?
        .into_iter()
        // The archive records no build-machine paths.
        .map(|(m, e)| {
            (
                m,
                e.replace(&*site.to_string_lossy(), "<site-packages>")
                    .replace(&*python.stdlib.to_string_lossy(), "<stdlib>"),
            )
        })
        .chain(uncompilable.iter().map(|(n, f)| {
            (
                n.to_string(),
                format!(
                    "does not compile on Python {}.{}: {} (line {})",
                    python.major, python.minor, f.error, f.lineno
                ),
            )
        }))
        .collect();

        let mut build = BTreeMap::new();
        build.insert("zstd_level".to_string(), self.level.to_string());
        if let Some(d) = &dictionary {
            build.insert(
                "zstd_dictionary".to_string(),
                format!("{} bytes, trained on the dependencies' bytecode", d.len()),
            );
        }
        build.insert("strip_native".to_string(), project.strip_native.to_string());
        if let Some(floor) = glibc.overall() {
            build.insert("min_glibc".to_string(), floor.version.to_string());
            build.insert("min_glibc_needed_by".to_string(), floor.needed_by.clone());
        }
        if let Some(floor) = &glibc.executable {
            build.insert(
                "min_glibc_executable".to_string(),
                floor.version.to_string(),
            );
        }
        build.insert(
            "stdlib_excludes".to_string(),
            "python-stdlib/exclude.txt".to_string(),
        );
        build.insert(
            "sources".to_string(),
            if self.stdlib_sources { "all" } else { "app" }.to_string(),
        );
        let manifest = Manifest {
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
            on_disk: on_disk.groups,
            pth_imports: collected.pth_imports.clone(),
            openssl_default_paths: python
                .openssl_paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            startup: Vec::new(),
        };
        let startup = match startup.join() {
            Ok(Ok(order)) => order,
            Ok(Err(e)) => {
                warnings.push(format!(
                    "start-up order not recorded (importing {entry_module} in a plain interpreter: {e:#}); \
                     the binary works, but decompresses its start-up modules on the main thread"
                ));
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let startup: Vec<String> = startup
            .into_iter()
            .filter(|n| collected.modules.contains_key(n) || collected.extensions.contains_key(n))
            .collect();
        w = w.data_order(startup.clone());
        w.set_manifest(&Manifest {
            startup,
            ..manifest
        })?;
        let entries = w.len();
        phases.mark("baseline");
        let bytes = w.finish()?;
        phases.mark("compress");
        write_atomically(out, &bytes)?;
        phases.mark("write");
        match hold.finish(cache_max)? {
            cache::Pruning::Pruned {
                before,
                after,
                removed,
            } => warnings.push(format!(
                "the build cache {} held {}, over its cap of {} ({}): removed the {removed} least recently used entries, {} left",
                cache.display(),
                cache::human(before),
                cache::human(cache_max),
                cache::MAX_ENV,
                cache::human(after)
            )),
            cache::Pruning::Fits { size } | cache::Pruning::Busy { size } if size > cache_max => {
                warnings.push(format!(
                    "the build cache {} holds {}, over its cap of {} ({}); another build is using it, so a later build will prune it",
                    cache.display(),
                    cache::human(size),
                    cache::human(cache_max),
                    cache::MAX_ENV
                ))
            }
            _ => {}
        }
        phases.mark("prune");
        warnings.sort();
        warnings.dedup();
        Ok(BuildReport {
            archive: out.to_path_buf(),
            inputs,
            warnings,
            entries,
            timings: phases.done,
        })
    }
}

/// Lower-case hex of `bytes` (cache keys and directory names).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn distribution_of(metadata: &[u8]) -> Option<Distribution> {
    let text = String::from_utf8_lossy(metadata);
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.is_empty() {
            break; // end of headers
        }
        if let Some(v) = line.strip_prefix("Name: ") {
            name.get_or_insert_with(|| v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Version: ") {
            version.get_or_insert_with(|| v.trim().to_string());
        }
    }
    Some(Distribution {
        name: name?,
        version: version?,
    })
}

/// An empty shared library whose only content is its SONAME: it satisfies `DT_NEEDED`
/// for libraries whose symbols the executable exports (the bundled SQLite).
fn placeholder_library(soname: &str, cache: &Path) -> anyhow::Result<Vec<u8>> {
    let dir = cache.join("placeholders");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(soname);
    if let Ok(bytes) = std::fs::read(&path) {
        cache::touch(&path);
        return Ok(bytes);
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let scratch = tempfile::tempdir_in(&dir)
        .with_context(|| format!("creating a temporary directory in {}", dir.display()))?;
    let tmp = scratch.path().join(soname);
    let out = std::process::Command::new(&cc)
        .args(["-shared", "-nostdlib", "-x", "c", "/dev/null", "-o"])
        .arg(&tmp)
        .arg(format!("-Wl,-soname,{soname}"))
        .output()
        .with_context(|| format!("running the C compiler '{cc}' to make a placeholder {soname}"))?;
    if !out.status.success() {
        bail!(
            "making a placeholder {soname} with '{cc}' failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let bytes = std::fs::read(&tmp).with_context(|| format!("reading {}", tmp.display()))?;
    cache::write_atomic(&path, &bytes)?;
    Ok(bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    cache::write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_headers_give_name_and_version() {
        let d = distribution_of(
            b"Metadata-Version: 2.1\nName: mcp\nVersion: 2.3.0\n\nName: not-this\n",
        )
        .unwrap();
        assert_eq!((d.name.as_str(), d.version.as_str()), ("mcp", "2.3.0"));
        assert!(distribution_of(b"Name: x\n").is_none());
    }
}
