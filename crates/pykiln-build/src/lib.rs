//! Turn a Python MCP server into a pykiln archive: from a `build.rs`, or from the
//! `pykiln` CLI (which appends it to a prebuilt runner).
//!
//! ```no_run
//! // build.rs of the binary crate (whose src/main.rs is `pykiln::main!();`):
//! pykiln_build::App::from_project("examples/notes-server").run_build_script();
//! ```
//!
//! The pipeline ([`build`], stages in `pipeline.rs`): probe the interpreter (the one
//! pyo3 links, see `pykiln-pyconfig`) and read pyproject.toml, or take requirements;
//! pip-install them into a staging directory cached by the resolved pins; collect the
//! standard library (minus `python-stdlib/exclude.txt`), the staged packages with their
//! data and dist-info, the app, native extensions and the closure of the non-glibc
//! libraries they need; compile bytecode with the same interpreter (cached by
//! content); write the archive. It reads no environment variable itself: its inputs
//! are a [`Source`], a [`ToolConfig`] and [`BuildOptions`].

mod baseline;
mod cache;
mod collect;
mod compile;
mod error;
mod frames;
mod glibc;
mod install;
mod native;
mod notices;
mod ondisk;
mod options;
mod pathuse;
mod pipeline;
mod placement;
mod project;
mod pyrun;
mod stdlib;
mod strip;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use pykiln_archive::Distribution;

pub use cache::{
    DEFAULT_MAX as DEFAULT_CACHE_MAX, MAX_ENV as CACHE_MAX_ENV, parse_size, write_atomic_mode,
};
pub use collect::Layer;
pub use error::{Error, Warning, WarningKind};
pub use install::{PIP_ENV, REFRESH_ENV};
pub use notices::{LicenseText, RustCrate, rust_crates};
pub use options::{BuildOptions, DEFAULT_LEVEL, OPTIONS_ENV, default_cache_dir};
pub use pipeline::{BuildReport, Progress, Source, Stage, build};
pub use project::{EntrySpec, Project, ToolConfig, normalize, requirement_name};
pub use stdlib::Excludes;

/// Environment variables that change what a build produces (besides pip's).
pub const BUILD_ENV: &[&str] = OPTIONS_ENV;

/// Set by cargo for build scripts of crates that depend on `pykiln`: the linker's list
/// of the symbols the executable exports to extension modules (see pykiln's build.rs).
pub const EXPORTS_ENV: &str = "DEP_PYKILN_PYTHON_EXPORTS";

/// Set by cargo like [`EXPORTS_ENV`]: `0` when the linked static libpython is not
/// position-independent, so binaries must be linked `-no-pie` (see pykiln's build.rs).
pub const PIE_ENV: &str = "DEP_PYKILN_PYTHON_PIE";

/// Set by cargo like [`EXPORTS_ENV`] when the target's linker is `zig cc` (an
/// interpreter pykiln built, linked against an old glibc): a link-time-only shared
/// library whose references make the linker export the same symbols, since zig
/// refuses `--dynamic-list` (see pykiln's build.rs).
pub const EXPORT_STUB_ENV: &str = "DEP_PYKILN_PYTHON_EXPORT_STUB";

/// How the runtime crate asks the final executable to be linked, as its build script
/// told cargo.
#[derive(Debug, Clone)]
pub struct HostLink {
    /// The linker's list of symbols the executable exports to extension modules.
    pub exports: PathBuf,
    /// For a `zig cc` link, the stub library that exports them instead
    /// ([`EXPORT_STUB_ENV`]).
    pub export_stub: Option<PathBuf>,
    /// Whether the executable can be position-independent.
    pub pie: bool,
}

impl HostLink {
    /// Read [`EXPORTS_ENV`] and [`PIE_ENV`] (inside a build script).
    pub fn from_env() -> anyhow::Result<Self> {
        let exports = std::env::var_os(EXPORTS_ENV).with_context(|| {
            format!("{EXPORTS_ENV} is not set: the crate whose build.rs runs pykiln-build must depend on pykiln")
        })?;
        Ok(HostLink {
            exports: PathBuf::from(exports),
            export_stub: std::env::var_os(EXPORT_STUB_ENV).map(PathBuf::from),
            pie: std::env::var(PIE_ENV).map_or(true, |v| v != "0"),
        })
    }
}

/// Set to print the time of each build step as a cargo warning.
pub const TIMINGS_ENV: &str = "PYKILN_BUILD_TIMINGS";

/// A Python application to pack, with options set in code; the rest come from the
/// environment ([`BuildOptions::from_env`]) when built with [`App::build_to`] or
/// [`App::run_build_script`].
#[derive(Debug, Clone)]
pub struct App {
    source: Source,
    tool: ToolConfig,
    level: Option<i32>,
    cache: Option<PathBuf>,
    cache_max: Option<u64>,
    import_timeout: Option<std::time::Duration>,
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
        Self::new(Source::Project(dir))
    }

    /// What to pack, with no option set.
    pub fn new(source: Source) -> Self {
        App {
            source,
            tool: ToolConfig::default(),
            level: None,
            cache: None,
            cache_max: None,
            import_timeout: None,
        }
    }

    /// Lay `tool` over the project's `[tool.pykiln]` options.
    pub fn options(mut self, tool: ToolConfig) -> Self {
        self.tool = self.tool.merged(&tool);
        self
    }

    /// Override the entry point (`module:function`).
    pub fn entry_point(mut self, entry: impl Into<String>) -> Self {
        self.tool.entry_point = Some(entry.into());
        self
    }

    /// Leave out a module (and its subpackages); `*` wildcards allowed.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.tool.exclude.push(pattern.into());
        self
    }

    /// zstd level (default 19, or `PYKILN_ZSTD_LEVEL`). Compressed blobs are cached by
    /// content, so a high level costs only the first build (~13 s for the demo here).
    pub fn compression_level(mut self, level: i32) -> Self {
        self.level = Some(level);
        self
    }

    /// Also pack the sources of the standard library and dependencies (the app's own
    /// sources are always packed, for tracebacks).
    pub fn with_all_sources(mut self, yes: bool) -> Self {
        self.tool.all_sources = Some(yes);
        self
    }

    /// How long one import may take in the build-time import baseline before the
    /// module is recorded as hanging on import (default 30 s).
    pub fn import_timeout(mut self, limit: std::time::Duration) -> Self {
        self.import_timeout = Some(limit);
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

    /// [`BuildOptions::from_env`] with what was set on this `App` on top.
    pub fn resolve_options(&self) -> anyhow::Result<BuildOptions> {
        let mut o = BuildOptions::from_env()?;
        if let Some(c) = &self.cache {
            o.cache_dir = c.clone();
        }
        if let Some(m) = self.cache_max {
            o.cache_max = m;
        }
        if let Some(l) = self.level {
            o.level = l;
        }
        if let Some(t) = self.import_timeout {
            o.import_timeout = t;
        }
        Ok(o)
    }

    /// Build the archive at `out` with `options` (written to a temporary name, then
    /// renamed), telling `progress` as each stage starts.
    pub fn build(
        &self,
        out: &Path,
        options: &BuildOptions,
        progress: &mut dyn Progress,
    ) -> Result<BuildReport, Error> {
        build(&self.source, &self.tool, options, out, progress)
    }

    /// Build the archive at `out` with the options from the environment.
    pub fn build_to(&self, out: &Path) -> anyhow::Result<BuildReport> {
        let options = self.resolve_options()?;
        Ok(self.build(out, &options, &mut ())?)
    }

    /// Run as a build script: build into `OUT_DIR`, print the cargo instructions, and on
    /// failure print the error and exit non-zero (no panic, no backtrace).
    pub fn run_build_script(self) {
        for var in pykiln_pyconfig::SELECTING_ENV
            .iter()
            .chain(BUILD_ENV)
            .chain(PIP_ENV)
        {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let result = std::env::var_os("OUT_DIR")
            .context("OUT_DIR is not set: run_build_script() is for build scripts; use build_to() elsewhere")
            .and_then(|out| {
                let link = HostLink::from_env()?;
                let out = Path::new(&out);
                let mut options = self.resolve_options()?;
                self.check_requested_python(&options)?;
                options.rust_crates = linked_crates();
                let report = self.build(&out.join("app.pykiln"), &options, &mut ())?;
                Ok((report, link))
            });
        match result {
            Ok((report, link)) => {
                for line in cargo_directives(&report, &link) {
                    println!("{line}");
                }
            }
            Err(e) => {
                eprintln!("error: pykiln: {e:#}");
                std::process::exit(1);
            }
        }
    }
}

impl App {
    /// `[tool.pykiln] python` in a build script: pyo3, the runtime crate and the archive
    /// take the interpreter from the environment cargo runs in (`PYO3_PYTHON`, else
    /// `python3`), which no build script can change, so a different request fails here
    /// with the line that fixes it, instead of a binary on the wrong interpreter.
    fn check_requested_python(&self, options: &BuildOptions) -> anyhow::Result<()> {
        let project = match &self.source {
            Source::Project(dir) => ToolConfig::read(dir)?,
            Source::Requirements { .. } => ToolConfig::default(),
        };
        let Some(wanted) = project.merged(&self.tool).python else {
            return Ok(());
        };
        let target = std::env::var("TARGET").ok();
        let resolved = pykiln_python::request::resolve_for(
            Some(&wanted),
            Some(&options.cache_dir),
            target.as_deref(),
        )
        .with_context(|| format!("[tool.pykiln] python = \"{wanted}\""))?;
        let same = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if same(&resolved) == same(&options.python) {
            return Ok(());
        }
        bail!(
            "[tool.pykiln] python = \"{wanted}\" is {}, but cargo builds this crate with {} \
             (PYO3_PYTHON, else python3 on PATH), which pyo3 and the pykiln runtime are compiled \
             for. Build in an environment that names it, e.g. in .cargo/config.toml:\n\n\
             [env]\nPYO3_PYTHON = \"{}\"\n\n\
             (`pykiln python env {wanted}` prints the shell form for `cargo zigbuild`)",
            resolved.display(),
            options.python.display(),
            resolved.display()
        )
    }
}

/// Inside a build script: the Rust crates linked into the package being built (for
/// its licenses and SBOM). A failure is a warning: the binary works without them.
fn linked_crates() -> Vec<RustCrate> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(|d| Path::new(&d).join("Cargo.toml"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = std::env::var("TARGET").ok();
    // A changed lock file may link other crates.
    if let Some(lock) = manifest.as_ref().and_then(|m| {
        m.ancestors()
            .skip(1)
            .map(|d| d.join("Cargo.lock"))
            .find(|l| l.is_file())
    }) {
        println!("cargo:rerun-if-changed={}", lock.display());
    }
    let result = manifest
        .context("CARGO_MANIFEST_DIR is not set")
        .and_then(|m| rust_crates(Path::new(&cargo), &m, target.as_deref()));
    match result {
        Ok(crates) => crates,
        Err(e) => {
            println!(
                "cargo:warning=the Rust crates linked into this binary are missing from its licenses and SBOM: {e:#}"
            );
            Vec::new()
        }
    }
}

/// The lines a build script prints for a finished build: what reruns it, its warnings,
/// where the archive is (`PYKILN_ARCHIVE`, which `pykiln::main!` embeds) and the link
/// arguments that export the C API to extension modules (and turn PIE off for a static
/// libpython that needs it).
pub fn cargo_directives(report: &BuildReport, link: &HostLink) -> Vec<String> {
    let mut lines = Vec::new();
    for input in &report.inputs {
        lines.push(format!("cargo:rerun-if-changed={}", input.display()));
    }
    for w in &report.warnings {
        lines.push(format!("cargo:warning={w}"));
    }
    if std::env::var_os(TIMINGS_ENV).is_some() {
        let steps: Vec<String> = report
            .timings
            .iter()
            .map(|(step, t)| format!("{} {:.0} ms", step.name(), t.as_secs_f64() * 1e3))
            .collect();
        lines.push(format!(
            "cargo:warning=pykiln build steps: {}",
            steps.join(", ")
        ));
    }
    lines.push(format!(
        "cargo:rustc-env=PYKILN_ARCHIVE={}",
        report.archive.display()
    ));
    // Extension modules resolve Py* (and the bundled sqlite3_*) symbols against the
    // executable; nothing else is exported (pykiln's build.rs).
    match link.export_stub.as_deref() {
        Some(stub) => {
            // Linked only for its references: --as-needed keeps it out of NEEDED.
            let dir = stub.parent().unwrap_or(Path::new("."));
            lines.push(format!("cargo:rustc-link-arg-bins=-L{}", dir.display()));
            lines.push("cargo:rustc-link-arg-bins=-Wl,--as-needed".to_string());
            lines.push("cargo:rustc-link-arg-bins=-lpykiln-export-stub".to_string());
        }
        None => lines.push(format!(
            "cargo:rustc-link-arg-bins=-Wl,--dynamic-list={}",
            link.exports.display()
        )),
    }
    if !link.pie {
        lines.push("cargo:rustc-link-arg-bins=-no-pie".to_string());
    }
    lines
}

/// Lower-case hex of `bytes` (cache keys and directory names).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a string of hex digit pairs; `None` if it is not one.
fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    let digit = |d: u8| char::from(d).to_digit(16);
    digits
        .chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
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
/// `cc` compiles for `arch` (empty: this machine's).
fn placeholder_library(
    soname: &str,
    cache: &Path,
    cc: &str,
    arch: &str,
) -> anyhow::Result<Vec<u8>> {
    let dir = cache.join("placeholders").join(arch);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(soname);
    if let Ok(bytes) = std::fs::read(&path) {
        cache::touch(&path);
        return Ok(bytes);
    }
    let scratch = tempfile::tempdir_in(&dir)
        .with_context(|| format!("creating a temporary directory in {}", dir.display()))?;
    let tmp = scratch.path().join(soname);
    let out = std::process::Command::new(cc)
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

    #[test]
    fn hex_round_trips_and_rejects_what_is_not_hex() {
        let bytes = [0u8, 1, 0x7f, 0xab, 0xff];
        assert_eq!(unhex(&hex(&bytes)).as_deref(), Some(&bytes[..]));
        assert_eq!(unhex("").as_deref(), Some(&[][..]));
        for bad in ["a", "+f", "0g", "é0"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }
}
