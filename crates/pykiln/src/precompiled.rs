//! Start-up source strings served from the archive (see [`pykiln_archive::compiled`]).
//!
//! While the app's entry module is imported, `builtins.compile`, `exec` and `eval` are
//! wrappers. A call that compiles a source string whose whole key — mode, compiler
//! flags in effect (the `__future__` features inherited from the calling code
//! included), optimization level, file name and text — the build recorded gets a fresh
//! code object unmarshalled from the archive, after the same `compile` audit event
//! CPython raises; every other call goes to the original with its arguments
//! untouched. The wrappers are C functions, so no Python frame is added: the
//! originals still find the caller's globals, locals and future features. The
//! originals are put back as soon as the import is done ([`uninstall`]).
//!
//! Likewise the regular expressions the start-up compiles through `re` go into `re`'s
//! cache first ([`seed_regexes`]), built by `_sre.compile` from the arguments `re`'s own
//! compiler produced at build time.

use std::ffi::c_int;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use once_cell::sync::OnceCell;
use pykiln_archive::{Archive, SourceKey, SourceTable};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyString, PyTuple};

unsafe extern "C" {
    /// Public C API (`cpython/pythonrun.h`), not in pyo3-ffi: ORs the calling code's
    /// `__future__` features into `cf.cf_flags`, as `compile`, `exec` and `eval` do.
    fn PyEval_MergeCompilerFlags(cf: *mut ffi::PyCompilerFlags) -> c_int;
}

struct State {
    /// Dropped once the entry module is imported (a wrapper something kept a reference
    /// to then just calls the original).
    table: Mutex<Option<SourceTable>>,
    /// The compiler flags that are `__future__` features (CPython's `PyCF_MASK`).
    future_mask: u32,
    /// `sys.flags.optimize`, what `optimize=-1` means.
    optimize: i32,
    /// The original `compile`, `exec`, `eval`.
    originals: [Py<PyAny>; 3],
    /// The wrappers, to tell whether something replaced them meanwhile.
    wrappers: [Py<PyAny>; 3],
    /// `sys.audit`.
    audit: Py<PyAny>,
    served: AtomicUsize,
    compiled: AtomicUsize,
}

static STATE: OnceCell<State> = OnceCell::new();

const NAMES: [&str; 3] = ["compile", "exec", "eval"];

/// Put the wrappers into `builtins` if the archive holds compiled source strings and
/// `PYKILN_PRECOMPILED` is not `off`. Returns whether they were installed.
pub fn install(py: Python<'_>, archive: Archive<'static>) -> anyhow::Result<bool> {
    if std::env::var_os("PYKILN_PRECOMPILED").is_some_and(|v| v == "off") || STATE.get().is_some() {
        return Ok(false);
    }
    if let Some(seeds) = archive.regex_seeds()? {
        match seed_regexes(py, &seeds) {
            Ok(n) => tracing::debug!(patterns = n, "re cache filled from the archive"),
            Err(e) => tracing::debug!("re cache not filled: {e}"),
        }
    }
    let Some(table) = archive.compiled_sources()? else {
        return Ok(false);
    };
    install_table(py, table)?;
    Ok(true)
}

/// Put the regular expressions the build recorded into `re`'s cache (see
/// [`pykiln_archive::compiled::REGEX_KEY`]), so that `re.compile` and friends find them
/// instead of parsing and compiling them in Python. The key is `re`'s own
/// (`type(pattern), pattern, flags`, the same from 3.8 to 3.13); the cache is never
/// filled past `re._MAXCACHE`, so nothing the app put there is evicted.
fn seed_regexes(py: Python<'_>, seeds: &[u8]) -> PyResult<usize> {
    if py.version_info() >= (3, 14) {
        return Ok(0);
    }
    let seeds = crate::importer::marshal_loads(py, seeds)?;
    let re = py.import("re")?;
    let cache = re.getattr("_cache")?.cast_into::<PyDict>()?;
    let max: usize = re.getattr("_MAXCACHE")?.extract()?;
    let compile = py.import("_sre")?.getattr("compile")?;
    let mut n = 0;
    for seed in seeds.try_iter()? {
        let (flags, args): (Bound<'_, PyAny>, Bound<'_, PyTuple>) = seed?.extract()?;
        let pattern = args.get_item(0)?;
        let key = PyTuple::new(py, [pattern.get_type().into_any(), pattern, flags])?;
        if cache.len() >= max {
            break;
        }
        if !cache.contains(&key)? {
            cache.set_item(key, compile.call1(args)?)?;
            n += 1;
        }
    }
    Ok(n)
}

fn install_table(py: Python<'_>, table: SourceTable) -> PyResult<()> {
    let future = py.import("__future__")?;
    let mut future_mask = 0u32;
    for name in future.getattr("all_feature_names")?.try_iter()? {
        let flag: u32 = future
            .getattr(name?.cast_into::<PyString>()?)?
            .getattr("compiler_flag")?
            .extract()?;
        future_mask |= flag;
    }
    // Obsolete (`PyCF_MASK_OBSOLETE`): accepted by compile() and ignored.
    let nested: u32 = future
        .getattr("nested_scopes")?
        .getattr("compiler_flag")?
        .extract()?;
    future_mask &= !nested;
    let sys = py.import("sys")?;
    let audit = sys.getattr("audit")?.unbind();
    let optimize: i32 = sys.getattr("flags")?.getattr("optimize")?.extract()?;
    let builtins = py.import("builtins")?;
    let originals = [
        builtins.getattr(NAMES[0])?.unbind(),
        builtins.getattr(NAMES[1])?.unbind(),
        builtins.getattr(NAMES[2])?.unbind(),
    ];
    let wrappers: [Py<PyAny>; 3] = [
        pyo3::wrap_pyfunction!(compile, py)?.into_any().unbind(),
        pyo3::wrap_pyfunction!(exec, py)?.into_any().unbind(),
        pyo3::wrap_pyfunction!(eval, py)?.into_any().unbind(),
    ];
    let state = State {
        table: Mutex::new(Some(table)),
        future_mask,
        optimize,
        originals,
        wrappers,
        audit,
        served: AtomicUsize::new(0),
        compiled: AtomicUsize::new(0),
    };
    // The wrappers need the state before anything can call them.
    let state = STATE.get_or_init(|| state);
    for (name, w) in NAMES.iter().zip(&state.wrappers) {
        builtins.setattr(*name, w.bind(py))?;
    }
    Ok(())
}

/// Put the original `compile`, `exec` and `eval` back (each only if `builtins` still
/// holds the wrapper: something that replaced it meanwhile keeps its own).
pub fn uninstall(py: Python<'_>) -> PyResult<()> {
    let Some(state) = STATE.get() else {
        return Ok(());
    };
    if let Ok(mut table) = state.table.lock() {
        *table = None;
    }
    let builtins = py.import("builtins")?;
    for (i, name) in NAMES.iter().enumerate() {
        if builtins.getattr(*name)?.is(state.wrappers[i].bind(py)) {
            builtins.setattr(*name, state.originals[i].bind(py))?;
        }
    }
    tracing::debug!(
        served = state.served.load(Ordering::Relaxed),
        compiled = state.compiled.load(Ordering::Relaxed),
        "start-up source strings (served from the archive / compiled)"
    );
    Ok(())
}

/// The `__future__` flags `compile`/`exec`/`eval` inherit from the code calling them,
/// ORed into `flags`.
fn inherit(flags: u32) -> u32 {
    let mut cf = ffi::PyCompilerFlags {
        cf_flags: flags as c_int,
        cf_feature_version: 0,
    };
    // SAFETY: called with the GIL held (from a Python call); `cf` is a valid struct.
    unsafe { PyEval_MergeCompilerFlags(&mut cf) };
    cf.cf_flags as u32
}

/// The code object for `key`, if the build compiled it: unmarshalled anew (each
/// compile returns its own object), after the audit event CPython raises for a compile.
fn lookup<'py>(
    py: Python<'py>,
    state: &State,
    key: &SourceKey<'_>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if key.flags & !state.future_mask != 0 {
        return Ok(None);
    }
    // Copied out: unmarshalling allocates, which can run a collection and so Python
    // code that compiles, and the lock is not reentrant.
    let found = match state.table.lock() {
        Ok(table) => table.as_ref().and_then(|t| t.get(key)).map(<[u8]>::to_vec),
        Err(_) => return Ok(None),
    };
    let Some(bytes) = found else {
        state.compiled.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    };
    // SAFETY (PyCode_Check): `c` is a valid object.
    let code = match crate::importer::marshal_loads(py, &bytes) {
        Ok(c) if unsafe { ffi::PyCode_Check(c.as_ptr()) } != 0 => c,
        // Not what the build wrote: the original compiles it.
        Ok(_) | Err(_) => {
            tracing::debug!(filename = key.filename, "unreadable compiled source string");
            return Ok(None);
        }
    };
    state.audit.bind(py).call1((
        "compile",
        PyBytes::new(py, key.source.as_bytes()),
        key.filename,
    ))?;
    state.served.fetch_add(1, Ordering::Relaxed);
    Ok(Some(code))
}

/// Argument `i` of a call, given by position or by `name`; `Err(())` when the call
/// is anything but plain (given twice, an unknown keyword): the original decides.
fn argument<'py>(
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
    i: usize,
    name: &str,
) -> Result<Option<Bound<'py, PyAny>>, ()> {
    let by_name = match kwargs {
        Some(kw) => kw.get_item(name).map_err(|_| ())?,
        None => None,
    };
    match (args.get_item(i).ok(), by_name) {
        (Some(_), Some(_)) => Err(()),
        (a, b) => Ok(a.or(b)),
    }
}

fn exact_str<'a, 'py>(obj: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, PyString>> {
    obj.cast_exact::<PyString>().ok()
}

fn exact_int(obj: &Bound<'_, PyAny>) -> Option<i64> {
    obj.cast_exact::<PyInt>().ok()?.extract().ok()
}

/// The key of a `compile()` call, if it is one the archive may hold.
fn compile_key(
    state: &State,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> Option<(String, String, String, u32, i32)> {
    const PARAMS: [&str; 7] = [
        "source",
        "filename",
        "mode",
        "flags",
        "dont_inherit",
        "optimize",
        "_feature_version",
    ];
    if args.len() > 6 {
        return None;
    }
    if let Some(kw) = kwargs {
        for k in kw.keys() {
            let k = k.cast_exact::<PyString>().ok()?.to_str().ok()?.to_owned();
            if !PARAMS.contains(&k.as_str()) {
                return None;
            }
        }
    }
    let get = |i: usize| argument(args, kwargs, i, PARAMS[i]).ok();
    let source = get(0)??;
    let filename = get(1)??;
    let mode = get(2)??;
    let source = exact_str(&source)?.to_str().ok()?.to_owned();
    let filename = exact_str(&filename)?.to_str().ok()?.to_owned();
    let mode = exact_str(&mode)?.to_str().ok()?.to_owned();
    if !SourceKey::MODES.contains(&mode.as_str()) {
        return None;
    }
    let flags = match get(3)? {
        Some(f) => u32::try_from(exact_int(&f)?).ok()?,
        None => 0,
    };
    let dont_inherit = match get(4)? {
        Some(d) if d.is_exact_instance_of::<PyBool>() => d.is_truthy().ok()?,
        Some(d) => exact_int(&d)? != 0,
        None => false,
    };
    let optimize = match get(5)? {
        Some(o) => i32::try_from(exact_int(&o)?).ok()?,
        None => -1,
    };
    if !(-1..=2).contains(&optimize) {
        return None;
    }
    // Keyword-only.
    if let Some(fv) = kwargs.and_then(|kw| kw.get_item(PARAMS[6]).ok().flatten()) {
        if exact_int(&fv)? != -1 {
            return None;
        }
    }
    if flags & !state.future_mask != 0 {
        return None;
    }
    let flags = if dont_inherit { flags } else { inherit(flags) };
    let optimize = if optimize == -1 {
        state.optimize
    } else {
        optimize
    };
    Some((source, filename, mode, flags, optimize))
}

/// `builtins.compile` while the entry module is imported (see the module docs).
#[pyfunction]
#[pyo3(signature = (*args, **kwargs))]
fn compile<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(state) = STATE.get() else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "pykiln: compile wrapper without its state",
        ));
    };
    if let Some((source, filename, mode, flags, optimize)) = compile_key(state, args, kwargs) {
        let key = SourceKey {
            mode: &mode,
            flags,
            optimize,
            filename: &filename,
            source: &source,
        };
        if let Some(code) = lookup(py, state, &key)? {
            return Ok(code);
        }
    }
    state.originals[0].bind(py).call(args, kwargs)
}

/// `exec` and `eval` of a string: `mode`, and the text compiled (`eval` strips
/// leading blanks).
fn run_string<'py>(
    py: Python<'py>,
    which: usize,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(state) = STATE.get() else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "pykiln: exec/eval wrapper without its state",
        ));
    };
    let original = state.originals[which].bind(py);
    let Ok(first) = args.get_item(0) else {
        return original.call(args, kwargs);
    };
    let Some(text) = exact_str(&first).and_then(|s| s.to_str().ok()) else {
        return original.call(args, kwargs);
    };
    let (mode, text) = if which == 2 {
        ("eval", text.trim_start_matches([' ', '\t']))
    } else {
        ("exec", text)
    };
    let key = SourceKey {
        mode,
        flags: inherit(0),
        optimize: state.optimize,
        filename: "<string>",
        source: text,
    };
    match lookup(py, state, &key)? {
        Some(code) => {
            let mut rest = vec![code];
            rest.extend(args.iter().skip(1));
            original.call(PyTuple::new(py, rest)?, kwargs)
        }
        None => original.call(args, kwargs),
    }
}

/// `builtins.exec` while the entry module is imported (see the module docs).
#[pyfunction]
#[pyo3(signature = (*args, **kwargs))]
fn exec<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    run_string(py, 1, args, kwargs)
}

/// `builtins.eval` while the entry module is imported (see the module docs).
#[pyfunction]
#[pyo3(signature = (*args, **kwargs))]
fn eval<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    run_string(py, 2, args, kwargs)
}
