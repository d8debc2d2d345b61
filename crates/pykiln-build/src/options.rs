//! Everything a build needs to know besides the project, resolved before it starts.
//!
//! The pipeline reads no environment variable of its own: the build.rs glue makes a
//! [`BuildOptions`] with [`BuildOptions::from_env`], the CLI from its flags (falling
//! back to the same variables for what they do not set).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::cache;

/// Environment variables [`BuildOptions::from_env`] reads (besides the interpreter
/// selection of `pykiln_pyconfig::SELECTING_ENV`).
pub const OPTIONS_ENV: &[&str] = &[
    "PYKILN_CACHE_DIR",
    cache::MAX_ENV,
    "PYKILN_ZSTD_LEVEL",
    "XDG_CACHE_HOME",
    "CC",
    crate::install::REFRESH_ENV,
];

/// Default zstd level: compressed blobs are cached by content, so a high level costs
/// only the first build.
pub const DEFAULT_LEVEL: i32 = 19;

/// How one build runs: which interpreter, where its cache is, how hard it compresses.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The CPython to pack and link (its standard library, bytecode and static library).
    pub python: PathBuf,
    /// Cache of staged installs, bytecode and compressed frames.
    pub cache_dir: PathBuf,
    /// Cap of the cache in bytes; pruned after each build.
    pub cache_max: u64,
    /// zstd level.
    pub level: i32,
    /// C compiler (for the placeholder libraries).
    pub cc: String,
    /// Resolve the requirements again even if their text did not change.
    pub refresh: bool,
    /// How long one import may take in the build-time import baseline.
    pub import_timeout: Duration,
    /// Record the app's start-up (it imports the entry module once, as long as the
    /// server takes to import) so the binary prefetches its start-up on a second core
    /// and takes the source strings its start-up compiles from the archive. Off: faster
    /// rebuilds while iterating, a slower-starting binary.
    pub record_startup: bool,
    /// The Rust crates linked into the executable the archive goes into (see
    /// [`rust_crates`](crate::rust_crates)), for its licenses and SBOM.
    pub rust_crates: Vec<crate::RustCrate>,
}

impl BuildOptions {
    /// Options with the defaults for everything but the interpreter and the cache.
    pub fn new(python: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        BuildOptions {
            python: python.into(),
            cache_dir: cache_dir.into(),
            cache_max: cache::DEFAULT_MAX,
            level: DEFAULT_LEVEL,
            cc: "cc".to_string(),
            refresh: false,
            import_timeout: crate::baseline::IMPORT_TIMEOUT,
            record_startup: true,
            rust_crates: Vec::new(),
        }
    }

    /// Options from the environment: the interpreter pyo3 would pick (`PYO3_PYTHON`,
    /// a virtualenv, `python3`), `PYKILN_CACHE_DIR`, `PYKILN_CACHE_MAX`,
    /// `PYKILN_ZSTD_LEVEL`, `CC`, `PYKILN_REFRESH`.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut o = Self::new(pykiln_pyconfig::select_interpreter(), default_cache_dir()?);
        o.cache_max = cache::max_from_env()?;
        if let Ok(v) = std::env::var("PYKILN_ZSTD_LEVEL") {
            o.level = v
                .trim()
                .parse()
                .with_context(|| format!("PYKILN_ZSTD_LEVEL={v:?} is not a number"))?;
        }
        if let Ok(cc) = std::env::var("CC") {
            if !cc.trim().is_empty() {
                o.cc = cc;
            }
        }
        o.refresh = std::env::var_os(crate::install::REFRESH_ENV)
            .is_some_and(|v| !v.is_empty() && v != "0");
        Ok(o)
    }
}

/// `$PYKILN_CACHE_DIR`, else `$XDG_CACHE_HOME/pykiln`, else `~/.cache/pykiln`.
pub fn default_cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(c) = std::env::var_os("PYKILN_CACHE_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(c));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(Path::new(&x).join("pykiln"));
    }
    let home = std::env::var_os("HOME").context("no cache directory: set PYKILN_CACHE_DIR")?;
    Ok(Path::new(&home).join(".cache").join("pykiln"))
}
