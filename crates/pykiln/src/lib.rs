//! The pykiln runtime: runs a Python application packed into a pykiln archive.
//!
//! The executable embeds a statically linked CPython and the archive (see
//! `pykiln-archive`). At start it validates the archive, configures an *isolated*
//! interpreter (no `PYTHON*` variables, no user site, no current directory), installs
//! the archive importer before anything beyond the frozen core is imported, and runs the
//! application's entry point. Native extension modules and their shared libraries are
//! loaded from memory (`memfd_create`), falling back to a private content-addressed cache.
//!
//! ```ignore
//! // src/main.rs of a binary whose build.rs uses pykiln-build:
//! pykiln::main!();
//! ```
//!
//! `argv[1] == "--pykiln"` selects the launcher console (`info`, `python`, `verify`,
//! `selftest`);
//! every other argument belongs to the application.

mod ca;
mod cache;
mod console;
mod fileview;
mod importer;
mod interp;
mod native;
mod precompiled;
mod prefetch;
mod selftest;
mod stop;

use std::process::ExitCode;

use anyhow::Context as _;
use pykiln_archive::Archive;

pub use interp::Mode;

/// Version of the Python this runtime was linked against (e.g. `3.11.7`).
pub const PYTHON_VERSION: &str = env!("PYKILN_PYTHON_VERSION");

/// Version of pykiln.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The versions this runtime was built with, kept by the linker (`#[used]`) in every
/// binary with this runtime: `pykiln inspect` reads them without running it.
#[used]
static STAMP: [u8; pykiln_archive::stamp::STAMP_LEN] = pykiln_archive::stamp::build(&[
    b"pykiln=",
    VERSION.as_bytes(),
    b"\0python=",
    PYTHON_VERSION.as_bytes(),
    b"\0sqlite=",
    libsqlite3_sys::SQLITE_VERSION.to_bytes(),
    b"\0",
]);

/// Expand to a `main` function that runs the archive the build script produced.
///
/// The build script (pykiln-build) sets `PYKILN_ARCHIVE` to the archive path; the bytes
/// are embedded with `include_bytes!`, so the result stays one file and the kernel maps
/// the archive lazily with the rest of the executable.
///
/// `pykiln::main!(entry_point = "pkg.module:function")` runs another entry point of the
/// same archive instead of the project's, so one build can give several binaries
/// (e.g. a server and its admin tool).
#[macro_export]
macro_rules! main {
    () => {
        fn main() -> ::std::process::ExitCode {
            static ARCHIVE: &[u8] = include_bytes!(env!("PYKILN_ARCHIVE"));
            $crate::run(ARCHIVE)
        }
    };
    (entry_point = $entry:literal) => {
        fn main() -> ::std::process::ExitCode {
            static ARCHIVE: &[u8] = include_bytes!(env!("PYKILN_ARCHIVE"));
            $crate::run_entry_point(ARCHIVE, $entry)
        }
    };
}

/// Run the archive appended to this executable (see `pykiln_archive::trailer`): what a
/// runner built once per interpreter does, so that the `pykiln` CLI makes an
/// application by copying it and appending an archive, without compiling or linking.
///
/// The executable file is memory-mapped read-only and the archive read in place, as
/// with an embedded archive.
pub fn run_appended() -> ExitCode {
    stop::defer();
    match appended_archive() {
        Ok(archive) => run_with(archive, None),
        Err(e) => {
            init_logging();
            eprintln!("pykiln: error: {e:#}");
            ExitCode::from(70)
        }
    }
}

fn appended_archive() -> anyhow::Result<&'static [u8]> {
    // /proc/self/exe opens the running file even if it was renamed or replaced since.
    let file = std::fs::File::open("/proc/self/exe").context("opening /proc/self/exe")?;
    // SAFETY: the executable is mapped read-only and private; a file replaced on disk
    // keeps its old inode while running (rename), and writing over a running executable
    // fails with ETXTBSY.
    let map = unsafe { memmap2::Mmap::map(&file) }.context("mapping /proc/self/exe")?;
    // Mapped for the whole process life, like the executable itself.
    let map: &'static memmap2::Mmap = Box::leak(Box::new(map));
    pykiln_archive::trailer::appended(map).map_err(|e| {
        let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
        let exe = exe.display();
        if e == pykiln_archive::trailer::TrailerError::Missing {
            anyhow::anyhow!(
                "{exe} carries no pykiln archive: it is a runner, which `pykiln build` copies and appends an archive to"
            )
        } else {
            anyhow::Error::new(e).context(format!("{exe}: the appended pykiln archive is unreadable"))
        }
    })
}

/// Run the packed application (or the `--pykiln` console) and return its exit status.
pub fn run(archive: &'static [u8]) -> ExitCode {
    run_with(archive, None)
}

/// Like [`run`], with `entry_point` (`module:function`) instead of the archive's own.
pub fn run_entry_point(archive: &'static [u8], entry_point: &str) -> ExitCode {
    run_with(archive, Some(entry_point))
}

fn run_with(archive: &'static [u8], entry_point: Option<&str>) -> ExitCode {
    // First: a stop signal during start-up waits for the server (see `stop`).
    stop::defer();
    init_logging();
    let code = match run_inner(archive, entry_point) {
        Ok(code) => exit_code(code),
        Err(e) => {
            // Errors before Python runs: one clear line on stderr, never a backtrace.
            eprintln!("pykiln: error: {e:#}");
            ExitCode::from(70)
        }
    };
    // A stop signal still pending (the program ended before it let them in) ends the
    // process now, as it would have at any other moment.
    stop::undefer();
    code
}

fn exit_code(code: i32) -> ExitCode {
    // Exit statuses are 8 bits wide on POSIX; Python does the same truncation.
    ExitCode::from((code & 0xff) as u8)
}

fn run_inner(bytes: &'static [u8], entry_point: Option<&str>) -> anyhow::Result<i32> {
    let start = std::time::Instant::now();
    let archive = Archive::open(bytes).context("the embedded pykiln archive is unreadable")?;
    tracing::debug!(entries = archive.len(), bytes = archive.size(), elapsed = ?start.elapsed(), "archive opened");
    check_python_version(&archive)?;
    // Parsed once here; everything after start-up needs works from this copy.
    let manifest = archive.manifest()?;

    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "--pykiln") {
        stop::undefer();
        let rest = args.split_off(2);
        return console::run(archive, manifest, &args[0], rest);
    }
    let app = manifest
        .app
        .clone()
        .context("the archive names no application entry point")?;
    match python_command_line(&args[1.min(args.len())..]) {
        // multiprocessing starts `sys.executable` (this binary) as an interpreter.
        Some(PythonCli::Multiprocessing) => {
            stop::undefer();
            return interp::run(archive, manifest, Mode::Python, args);
        }
        Some(PythonCli::Other) if app.python_cli => {
            stop::undefer();
            return interp::run(archive, manifest, Mode::Python, args);
        }
        _ => {}
    }
    interp::run(
        archive,
        manifest,
        Mode::App {
            entry_point: entry_point.map_or(app.entry_point, str::to_string),
        },
        args,
    )
}

/// An interpreter command line found in the arguments.
#[derive(Debug, PartialEq, Eq)]
enum PythonCli {
    /// `-c 'from multiprocessing.… import …'`: spawn/forkserver children, the resource
    /// tracker.
    Multiprocessing,
    /// Any other `-c CODE` or `-m MODULE`.
    Other,
}

/// Whether the arguments are interpreter flags followed by `-c` or `-m`: what code that
/// runs `sys.executable` as Python passes.
fn python_command_line(args: &[std::ffi::OsString]) -> Option<PythonCli> {
    let mut it = args.iter().map(|a| a.to_str());
    while let Some(Some(arg)) = it.next() {
        match arg {
            "-c" => {
                let code = it.next().flatten()?;
                return Some(if code.starts_with("from multiprocessing.") {
                    PythonCli::Multiprocessing
                } else {
                    PythonCli::Other
                });
            }
            "-m" => return it.next().flatten().map(|_| PythonCli::Other),
            // Flags that take a separate value (sys.flags → _args_from_interpreter_flags).
            "-W" | "-X" => {
                it.next();
            }
            "-I" | "-E" | "-s" | "-S" | "-u" | "-B" | "-O" | "-OO" | "-q" | "-b" | "-bb" | "-d"
            | "-v" | "-R" | "-P" => {}
            flag if (flag.starts_with("-W") || flag.starts_with("-X")) && flag.len() > 2 => {}
            _ => return None,
        }
    }
    None
}

fn check_python_version(archive: &Archive<'_>) -> anyhow::Result<()> {
    let minor: u8 = env!("PYKILN_PYTHON_MINOR").parse().unwrap_or(0);
    let (amaj, amin) = archive.python_version();
    if (amaj, amin) != (3, minor) {
        anyhow::bail!(
            "the archive holds bytecode for Python {amaj}.{amin} but this runtime embeds Python {PYTHON_VERSION}; \
             rebuild with the same interpreter (PYO3_PYTHON) for both"
        );
    }
    Ok(())
}

/// Logs go to stderr (stdout is the MCP channel), filtered by `PYKILN_LOG`: a level
/// (`debug`) or `target=level` pairs (`pykiln=debug,warn`). Colour only on a terminal.
fn init_logging() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let spec = std::env::var("PYKILN_LOG").unwrap_or_default();
    let (filter, bad) = match spec.trim() {
        "" => (Targets::new().with_default(LevelFilter::WARN), None),
        s => match s.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (Targets::new().with_default(LevelFilter::WARN), Some(e)),
        },
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
    if let Some(e) = bad {
        tracing::warn!("PYKILN_LOG={spec:?} is not a log filter ({e}); logging warnings only");
    }
}

/// Version of the SQLite compiled into this executable.
pub fn sqlite_version() -> String {
    // SAFETY: sqlite3_libversion returns a pointer to a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(libsqlite3_sys::sqlite3_libversion()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<std::ffi::OsString> {
        a.iter().map(Into::into).collect()
    }

    #[test]
    fn interpreter_command_lines_are_recognised() {
        use PythonCli::*;
        for (argv, want) in [
            (
                &[
                    "-I",
                    "-c",
                    "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7)",
                    "--multiprocessing-fork",
                ][..],
                Multiprocessing,
            ),
            (
                &[
                    "-c",
                    "from multiprocessing.forkserver import main; main(8, 9, ['__main__'], **{})",
                ],
                Multiprocessing,
            ),
            (
                &[
                    "-I",
                    "-W",
                    "ignore",
                    "-Xutf8",
                    "-c",
                    "from multiprocessing.resource_tracker import main;main(4)",
                ],
                Multiprocessing,
            ),
            (&["-c", "print(1)"], Other),
            (&["-I", "-m", "json.tool"], Other),
        ] {
            assert_eq!(python_command_line(&args(argv)), Some(want), "{argv:?}");
        }
        for no in [
            &[][..],
            &["--pykiln", "python"],
            &["-c"],
            &["serve", "-c", "from multiprocessing.spawn import x"],
            &["--port", "-c", "x"],
            &["-p", "-c", "x"],
        ] {
            assert_eq!(python_command_line(&args(no)), None, "{no:?}");
        }
    }
}
