//! What a build reports: a typed error for callers that branch on the cause, and
//! warnings each front end prints its own way (`cargo:warning=` or the CLI's lines).

use std::fmt;

/// Why a build failed. Every variant's message names the file, module or setting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interpreter cannot be embedded (not found, too old, no static library…).
    #[error(transparent)]
    Python(#[from] pykiln_pyconfig::PyConfigError),
    /// pyproject.toml or the options are wrong.
    #[error("{0:#}")]
    Project(anyhow::Error),
    /// pip could not install the requirements.
    #[error("{0:#}")]
    Install(anyhow::Error),
    /// No entry point, or one that does not exist.
    #[error("{0:#}")]
    EntryPoint(anyhow::Error),
    /// A module of the app does not compile (names file and line).
    #[error("{0:#}")]
    Compile(anyhow::Error),
    /// A native extension or a library it needs is missing or unreadable.
    #[error("{0:#}")]
    Native(anyhow::Error),
    /// The archive could not be assembled.
    #[error("{0:#}")]
    Archive(anyhow::Error),
    /// The build cache is unusable.
    #[error("{0:#}")]
    Cache(anyhow::Error),
    /// The output could not be written.
    #[error("{0:#}")]
    Output(anyhow::Error),
}

/// What a warning is about, for front ends that group or filter them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WarningKind {
    /// Something found while collecting files (an unreadable or odd file).
    Collect,
    /// A package given an on-disk file view, or an option naming nothing.
    OnDisk,
    /// `[tool.pykiln] sources` naming nothing.
    Sources,
    /// Dependency modules that do not compile, packed as source.
    Uncompilable,
    /// The oldest glibc the binary runs on (information).
    Glibc,
    /// The build-time import baseline (hanging or failing imports).
    Baseline,
    /// The start-up import order could not be recorded.
    Startup,
    /// The build cache was pruned or is over its cap.
    Cache,
    /// Packed software without license information, or of unknown origin.
    Licenses,
}

/// A non-fatal finding of a build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Warning {
    /// What it is about.
    pub kind: WarningKind,
    /// One paragraph for the user.
    pub message: String,
}

impl Warning {
    pub(crate) fn new(kind: WarningKind, message: impl Into<String>) -> Self {
        Warning {
            kind,
            message: message.into(),
        }
    }

    /// Whether this is information rather than a problem (the glibc requirement).
    pub fn is_info(&self) -> bool {
        self.kind == WarningKind::Glibc
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
