//! Interpreter setup: an isolated CPython whose imports come from the archive.
//!
//! Initialisation is split the way PEP 587 allows: `Py_InitializeFromConfig` with
//! `_init_main = 0` brings up only the core (builtins, `sys`, the frozen import
//! machinery); the archive importer goes onto `sys.meta_path`; then
//! `_Py_InitializeMain` finishes start-up, whose first stdlib imports (`encodings`…)
//! already come from the archive. `Py_RunMain` then runs the configured command with
//! CPython's own handling of `SystemExit`, tracebacks and `KeyboardInterrupt`.

use std::ffi::{CStr, CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use pykiln_archive::{Archive, Manifest, OnDiskGroup};
use pyo3::ffi;
use pyo3::types::PyAnyMethods as _;

unsafe extern "C" {
    // Part of the PEP 587 multi-phase API; not declared by pyo3-ffi.
    fn _Py_InitializeMain() -> ffi::PyStatus;
}

/// What the interpreter runs once it is up.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The application's `module:function` entry point; `sys.argv` is passed untouched.
    App {
        /// `package.module:function`.
        entry_point: String,
    },
    /// A Python command line (`-c`, `-m`, script, REPL) inside the packed environment.
    Python,
    /// Import every packed module and report failures.
    Verify {
        /// Entries whose checksum failed (already reported), by kind and key: a module
        /// among them is a FAIL even if the build-time baseline expects it to fail.
        corrupt: Vec<(String, String)>,
        /// Seconds one import may take before it counts as hanging (a SKIP).
        import_timeout: f64,
    },
}

/// Bring up the interpreter for `mode` and run it to completion; returns the exit status.
pub fn run(
    archive: Archive<'static>,
    manifest: Manifest,
    mode: Mode,
    argv: Vec<OsString>,
) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let run_command = match &mode {
        Mode::App { entry_point } => {
            crate::stop::install();
            Some(app_command(
                entry_point,
                manifest.app.as_ref().is_some_and(|a| a.stdout_guard),
            )?)
        }
        Mode::Verify {
            corrupt,
            import_timeout,
        } => Some(verify_command(corrupt, *import_timeout)?),
        Mode::Python => None,
    };
    crate::ca::configure(&manifest.openssl_default_paths);
    crate::native::configure(&manifest);
    // The recorded start-up order is the archive's own entry point's; another entry
    // point of the same archive (`main!(entry_point = …)`) imports something else.
    let recorded = manifest.app.as_ref().map(|a| a.entry_point.as_str());
    if let Mode::App { entry_point } = &mode {
        if recorded == Some(entry_point.as_str()) {
            let images = crate::prefetch::Images {
                make: |entry| crate::native::image_fd(entry).ok(),
                file_backed: crate::native::is_file_backed,
            };
            crate::prefetch::start(archive, &manifest.startup, images);
        }
    }
    let start = std::time::Instant::now();
    // SAFETY: called once, on the main thread, before any other use of the C API.
    unsafe {
        initialize(
            archive,
            manifest.on_disk,
            &exe,
            &argv,
            matches!(mode, Mode::Python),
            run_command.as_deref(),
        )?
    };
    // SAFETY: the interpreter is initialised and this thread holds the GIL.
    let py = unsafe { pyo3::Python::assume_attached() };
    if matches!(mode, Mode::App { .. }) {
        install_runtime_module(py)
            .map_err(|e| anyhow::anyhow!("installing _pykiln_runtime: {e}"))?;
        // Until the entry module is imported (`startup_imported` below).
        if let Err(e) = crate::precompiled::install(py, archive) {
            tracing::warn!("start-up source strings will be compiled: {e:#}");
        }
    }
    run_pth_imports(py, &manifest.pth_imports);
    tracing::debug!(elapsed = ?start.elapsed(), "interpreter initialised");
    // SAFETY: the interpreter is fully initialised and this thread holds the GIL.
    let code = unsafe { ffi::Py_RunMain() };
    Ok(code)
}

/// The `-c` program of `--pykiln verify`. CPython ends the process inside `Py_RunMain`
/// on the program's SystemExit, so nothing can be added to the status afterwards: the
/// checksum failures go into `verify()`, which makes the status from both.
fn verify_command(corrupt: &[(String, String)], import_timeout: f64) -> anyhow::Result<String> {
    // A JSON string literal is a valid Python string literal.
    let corrupt = serde_json::to_string(&serde_json::to_string(corrupt)?)?;
    Ok(format!(
        "import json, sys, _pykiln_support\n\
         sys.exit(_pykiln_support.verify([tuple(c) for c in json.loads({corrupt})], {import_timeout:?}))\n"
    ))
}

/// The `-c` program for an application. The entry module is imported with the source
/// strings it compiles served from the archive (see [`crate::precompiled`]) and the cyclic
/// GC off (import-time allocation of long-lived objects triggers many useless
/// collections; pydantic-heavy servers start ~10% faster), then everything imported
/// is frozen out of future collections and the archive pages read so far are handed
/// back to the page cache (they are not needed again, and they counted as RSS).
///
/// Stopping (see [`crate::stop`]): SIGTERM ends the program as cleanly as Ctrl-C. When
/// an event loop has installed its own SIGINT handler (asyncio's cancels the main
/// task), SIGTERM goes through that handler instead of raising inside arbitrary code,
/// which would corrupt the loop's cancel scopes; otherwise it raises SystemExit. Stop
/// signals are let in (`arm`) once that handler and the wakeup fd are in place, inside
/// the `try` that also covers the import: a stop during the import or the run ends the
/// program quietly — `KeyboardInterrupt`, `SystemExit`, `CancelledError` (anyio's
/// runner on 3.10) are what a stop looks like — and the runtime's exit hook then ends
/// the process by the signal, whatever status the program gave. A stop during the
/// import whose `KeyboardInterrupt` was swallowed on the way (raised inside a weakref
/// callback of the import system's module locks, which CPython reports as "Exception
/// ignored" and goes on) still keeps the server from starting.
///
/// `stdout_guard` (`[tool.pykiln] stdout-guard`): before anything of the server runs,
/// `sys.stdout` becomes a text stream that writes to stderr (one warning line first);
/// its `buffer` and `fileno()` are the real stdout's, which is what the MCP SDK's stdio
/// transport writes through, so the protocol still flows and a stray `print()` (a
/// start-up banner, a debug line in a tool) lands on stderr instead of inside it.
fn app_command(entry_point: &str, stdout_guard: bool) -> anyhow::Result<String> {
    let (module, object) = entry_point.split_once(':').with_context(|| {
        format!("entry point '{entry_point}' is not of the form module:function")
    })?;
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|p| {
                p.chars().next().is_some_and(|c| !c.is_ascii_digit())
                    && p.chars().all(|c| c == '_' || c.is_alphanumeric())
            })
    };
    if !ident(module) || !ident(object) {
        bail!("entry point '{entry_point}' is not of the form module:function");
    }
    // `module:object.attr` (console-script syntax) imports `object` and looks the
    // rest up on it.
    let (head, attrs) = match object.split_once('.') {
        Some((head, rest)) => (head, format!(".{rest}")),
        None => (object, String::new()),
    };
    let guard = if stdout_guard { STDOUT_GUARD } else { "" };
    Ok(format!(
        "import sys, signal, _pykiln_runtime\n\
         {guard}\
         def _pykiln_stop(signum, frame):\n\
         \x20   _pykiln_runtime.stopping(signum)\n\
         \x20   on_int = signal.getsignal(signal.SIGINT)\n\
         \x20   if callable(on_int) and on_int is not signal.default_int_handler:\n\
         \x20       return on_int(signal.SIGINT, frame)\n\
         \x20   raise SystemExit(128 + signum)\n\
         signal.signal(signal.SIGTERM, _pykiln_stop)\n\
         import gc as _pykiln_gc\n\
         _pykiln_status = None\n\
         try:\n\
         \x20   _pykiln_runtime.arm()\n\
         \x20   _pykiln_gc.disable()\n\
         \x20   try:\n\
         \x20       from {module} import {head} as _pykiln_entry\n\
         \x20       _pykiln_entry = _pykiln_entry{attrs}\n\
         \x20   finally:\n\
         \x20       _pykiln_runtime.startup_imported()\n\
         \x20       _pykiln_gc.freeze()\n\
         \x20       _pykiln_gc.enable()\n\
         \x20       for _pykiln_f in sys.meta_path:\n\
         \x20           getattr(_pykiln_f, '_release_pages', lambda: None)()\n\
         \x20   if _pykiln_runtime.stop_signal():\n\
         \x20       raise SystemExit(128 + _pykiln_runtime.stop_signal())\n\
         \x20   _pykiln_status = _pykiln_entry()\n\
         except BaseException as _pykiln_e:\n\
         \x20   _pykiln_cancelled = getattr(sys.modules.get('asyncio'), 'CancelledError', ())\n\
         \x20   _pykiln_stopped = (KeyboardInterrupt, SystemExit, _pykiln_cancelled)\n\
         \x20   if not (_pykiln_runtime.stop_signal() and isinstance(_pykiln_e, _pykiln_stopped)):\n\
         \x20       raise\n\
         if _pykiln_runtime.stop_signal():\n\
         \x20   _pykiln_status = 128 + _pykiln_runtime.stop_signal()\n\
        sys.exit(_pykiln_status)\n"
    ))
}

/// Python for `[tool.pykiln] stdout-guard` (see [`app_command`]).
const STDOUT_GUARD: &str = "\
import io as _pykiln_io
class _PykilnStdoutGuard(_pykiln_io.TextIOBase):
    def __init__(self, real):
        self._real = real
        self._warned = False
    def write(self, text):
        if not self._warned:
            self._warned = True
            sys.stderr.write('pykiln: warning: the server wrote to sys.stdout, the MCP channel; '
                             'stdout-guard sends that text to stderr:\\n')
        return sys.stderr.write(text)
    def flush(self):
        sys.stderr.flush()
    def writable(self):
        return True
    def isatty(self):
        return self._real.isatty()
    def fileno(self):
        return self._real.fileno()
    @property
    def buffer(self):
        return self._real.buffer
    @property
    def encoding(self):
        return self._real.encoding
    @property
    def errors(self):
        return self._real.errors
sys.stdout = _PykilnStdoutGuard(sys.stdout)
";

#[pyo3::pyfunction]
fn stopping(signum: i32) {
    crate::stop::stopping(signum);
}

/// Stop signals may come in: see [`crate::stop::arm`].
#[pyo3::pyfunction]
fn arm(py: pyo3::Python<'_>) {
    crate::stop::arm(py);
}

#[pyo3::pyfunction]
fn stop_signal() -> i32 {
    crate::stop::signal().unwrap_or(0)
}

/// The entry module is imported: `compile`, `exec` and `eval` are the originals again.
#[pyo3::pyfunction]
fn startup_imported(py: pyo3::Python<'_>) -> pyo3::PyResult<()> {
    crate::precompiled::uninstall(py)
}

/// `_pykiln_runtime`: what the application program asks of the runtime (stop signals,
/// the end of the start-up window of [`crate::precompiled`]).
fn install_runtime_module(py: pyo3::Python<'_>) -> pyo3::PyResult<()> {
    use pyo3::types::PyModuleMethods as _;
    let m = pyo3::types::PyModule::new(py, "_pykiln_runtime")?;
    m.add_function(pyo3::wrap_pyfunction!(stopping, &m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(stop_signal, &m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(arm, &m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(startup_imported, &m)?)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("_pykiln_runtime", m)
}

/// Run the `import` lines of the packed `.pth` files as `site.addpackage` would: each
/// in its own namespace; a failing line is reported on stderr and the rest still run.
fn run_pth_imports(py: pyo3::Python<'_>, lines: &[String]) {
    for line in lines {
        let result = py.import("builtins").and_then(|b| {
            let globals = pyo3::types::PyDict::new(py);
            b.getattr("exec")?.call1((line.as_str(), globals))
        });
        if let Err(e) = result {
            eprintln!("pykiln: error in a .pth import line ({line}): {e}");
        }
    }
}

/// Uncaught exceptions are printed by the `traceback` module instead of CPython's C
/// printer: only the former asks a module's loader for its source (through
/// `linecache`), so only it can show the lines of packed modules.
fn install_excepthook(py: pyo3::Python<'_>) -> pyo3::PyResult<()> {
    let hook = pyo3::wrap_pyfunction!(excepthook, py)?;
    py.import("sys")?.setattr("excepthook", hook)
}

#[pyo3::pyfunction]
fn excepthook(
    py: pyo3::Python<'_>,
    kind: pyo3::Bound<'_, pyo3::PyAny>,
    value: pyo3::Bound<'_, pyo3::PyAny>,
    tb: pyo3::Bound<'_, pyo3::PyAny>,
) -> pyo3::PyResult<()> {
    let printed = py
        .import("traceback")
        .and_then(|t| t.call_method1("print_exception", (&kind, &value, &tb)));
    if printed.is_err() {
        // Out of memory, recursion limit…: CPython's own printer still works.
        py.import("sys")?
            .getattr("__excepthook__")?
            .call1((kind, value, tb))?;
    }
    Ok(())
}

fn cstring(what: &str, s: &[u8]) -> anyhow::Result<CString> {
    CString::new(s).with_context(|| format!("{what} contains a NUL byte"))
}

unsafe fn check(status: ffi::PyStatus, step: &str) -> anyhow::Result<Option<i32>> {
    unsafe {
        if ffi::PyStatus_Exception(status) == 0 {
            return Ok(None);
        }
        if ffi::PyStatus_IsExit(status) != 0 {
            return Ok(Some(status.exitcode));
        }
        let text = |p: *const std::os::raw::c_char| {
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        bail!(
            "{step} failed: {} {}",
            text(status.func),
            text(status.err_msg)
        )
    }
}

unsafe fn set_string(
    config: *mut ffi::PyConfig,
    field: *mut *mut libc::wchar_t,
    value: &Path,
    what: &str,
) -> anyhow::Result<()> {
    let c = cstring(what, value.as_os_str().as_bytes())?;
    unsafe {
        check(
            ffi::PyConfig_SetBytesString(config, field, c.as_ptr()),
            what,
        )?;
    }
    Ok(())
}

unsafe fn initialize(
    archive: Archive<'static>,
    on_disk: Vec<OnDiskGroup>,
    exe: &Path,
    argv: &[OsString],
    parse_argv: bool,
    run_command: Option<&str>,
) -> anyhow::Result<()> {
    unsafe {
        let mut pre = std::mem::MaybeUninit::<ffi::PyPreConfig>::zeroed().assume_init();
        ffi::PyPreConfig_InitIsolatedConfig(&mut pre);
        pre.utf8_mode = 1;
        if let Some(code) = check(ffi::Py_PreInitialize(&pre), "Py_PreInitialize")? {
            std::process::exit(code);
        }

        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::zeroed().assume_init();
        ffi::PyConfig_InitIsolatedConfig(&mut config);
        let result = configure(&mut config, exe, argv, parse_argv, run_command).and_then(|()| {
            check(
                ffi::Py_InitializeFromConfig(&config),
                "Py_InitializeFromConfig",
            )
        });
        ffi::PyConfig_Clear(&mut config);
        if let Some(code) = result? {
            std::process::exit(code);
        }

        let py = pyo3::Python::assume_attached();
        crate::importer::install(py, archive, on_disk, exe)
            .map_err(|e| anyhow::anyhow!("installing the archive importer: {e}"))?;

        if let Some(code) = check(_Py_InitializeMain(), "_Py_InitializeMain")? {
            std::process::exit(code);
        }
        install_excepthook(py).map_err(|e| anyhow::anyhow!("installing sys.excepthook: {e}"))?;
        crate::importer::install_path_hook(py)
            .map_err(|e| anyhow::anyhow!("installing the path hook: {e}"))?;
    }
    Ok(())
}

unsafe fn configure(
    config: &mut ffi::PyConfig,
    exe: &Path,
    argv: &[OsString],
    parse_argv: bool,
    run_command: Option<&str>,
) -> anyhow::Result<()> {
    // Isolated config already means: no PYTHON* variables, no user site, no cwd or
    // script dir on sys.path. What an isolated config turns off that a program wants:
    config.install_signal_handlers = 1;
    config.parse_argv = i32::from(parse_argv);
    config.site_import = 0;
    config.write_bytecode = 0;
    config.pathconfig_warnings = 0;
    config.buffered_stdio = 1;
    config._init_main = 0;
    // An empty, explicitly set search path plus an explicit home: getpath reads no
    // pyvenv.cfg or ._pth file and sys.path never names a directory.
    config.module_search_paths_set = 1;

    let home: PathBuf = exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    unsafe {
        set_string(config, &raw mut config.executable, exe, "executable path")?;
        set_string(config, &raw mut config.home, &home, "home")?;
        if let Some(arg0) = argv.first() {
            set_string(
                config,
                &raw mut config.program_name,
                Path::new(arg0),
                "argv[0]",
            )?;
        }
        let args: Vec<CString> = argv
            .iter()
            .map(|a| cstring("a command-line argument", a.as_bytes()))
            .collect::<anyhow::Result<_>>()?;
        let mut ptrs: Vec<*const std::os::raw::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        check(
            ffi::PyConfig_SetBytesArgv(config, ptrs.len() as ffi::Py_ssize_t, ptrs.as_mut_ptr()),
            "setting sys.argv",
        )?;
        if let Some(cmd) = run_command {
            let c = cstring("run command", cmd.as_bytes())?;
            check(
                ffi::PyConfig_SetBytesString(config, &mut config.run_command, c.as_ptr()),
                "setting the run command",
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pykiln_test_support::{self as support, CommandExt as _};

    /// The guard's Python, run by the build's python3: text goes to stderr after one
    /// warning line; the transport's byte channel is still stdout.
    #[test]
    fn stdout_guard_sends_text_to_stderr_and_keeps_the_byte_channel() {
        assert!(
            app_command("pkg.server:main", true)
                .unwrap()
                .contains("sys.stdout = _PykilnStdoutGuard(sys.stdout)")
        );
        let program = format!(
            "import sys\n{STDOUT_GUARD}print('Starting MCP server')\nprint('again', flush=True)\n\
             import io\nw = io.TextIOWrapper(sys.stdout.buffer, encoding='utf-8')\n\
             w.write('{{\"jsonrpc\": \"2.0\"}}\\n'); w.flush()\n"
        );
        let out = std::process::Command::new("python3")
            .args(["-I", "-c", &program])
            .output_within(support::TIMEOUT);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "{\"jsonrpc\": \"2.0\"}\n"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.matches("stdout-guard").count(), 1, "{err}");
        assert!(err.ends_with("Starting MCP server\nagain\n"), "{err}");
    }

    #[test]
    fn app_command_runs_the_entry_point() {
        let c = app_command("pkg.server:main", false).unwrap();
        assert!(c.contains("from pkg.server import main as _pykiln_entry"));
        assert!(c.contains("_pykiln_status = _pykiln_entry()"));
        assert!(c.trim_end().ends_with("sys.exit(_pykiln_status)"));
        // The program is valid Python (the interpreter that built this crate checks it).
        let out = std::process::Command::new("python3")
            .args([
                "-I",
                "-c",
                "import sys; compile(sys.argv[1], '<pykiln>', 'exec')",
                &c,
            ])
            .output_within(support::TIMEOUT);
        assert!(
            out.status.success(),
            "{}\n{c}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn app_command_accepts_object_attributes() {
        let c = app_command("pkg.cli:app.main", false).unwrap();
        assert!(c.contains("from pkg.cli import app as _pykiln_entry\n"));
        assert!(c.contains("_pykiln_entry = _pykiln_entry.main\n"));
    }

    #[test]
    fn app_command_rejects_injection() {
        for bad in [
            "pkg",
            "pkg:main;import os",
            "a b:c",
            ":main",
            "pkg:",
            "pkg..x:main",
            "pkg:1main",
            "pkg:main.",
        ] {
            assert!(app_command(bad, false).is_err(), "{bad}");
        }
    }
}
