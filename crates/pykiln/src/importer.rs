//! The archive importer: a `sys.meta_path` finder and loader over the pykiln archive.
//!
//! Hot paths (`find_spec`, `exec_module`, `get_code`) are Rust; the parts of
//! `importlib.metadata` and `importlib.resources` that need Python base classes live in
//! the `_pykiln_support` module (python/_pykiln_support.py), which this importer serves
//! itself and which calls back into the `_`-prefixed helpers below.
//!
//! `__file__` follows zipimport's convention: `<executable>/<package path>/<module>.py`.
//! Nothing exists at that path; code that needs a real file uses importlib.resources.
//! Distributions the build gave an on-disk view (those that ship data files, and code
//! that reaches its directory by path) are the exception: their modules get `__file__`
//! inside the view (see `fileview`), written on the first import of one of them.

use std::borrow::Cow;

use once_cell::sync::OnceCell;
use pykiln_archive::{Archive, Entry, EntryKind, OnDiskGroup};
use pyo3::exceptions::{PyFileNotFoundError, PyImportError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// Name under which the support module is served.
const SUPPORT: &str = "_pykiln_support";
const SUPPORT_SOURCE: &str = include_str!("../python/_pykiln_support.py");
/// Its code, compiled by the build script with the linked interpreter.
const SUPPORT_CODE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/_pykiln_support.marshal"));

/// The finder/loader object placed on `sys.meta_path`.
#[pyclass(module = "_pykiln", name = "PykilnImporter", frozen)]
pub struct Importer {
    archive: Archive<'static>,
    /// `<executable>`: the virtual root that origins and `__path__` entries live under.
    prefix: String,
    module_spec: Py<PyAny>,
    fix_co_filename: Py<PyAny>,
    /// Distributions served from an on-disk view, and the view's directory once made.
    views: Vec<(OnDiskGroup, OnceCell<Result<String, String>>)>,
}

/// Put an importer for `archive` on `sys.meta_path`, serving the manifest's `on_disk`
/// groups from file views. Runs in the core phase of start-up, so only builtin and
/// frozen modules may be used here.
pub fn install(
    py: Python<'_>,
    archive: Archive<'static>,
    on_disk: Vec<OnDiskGroup>,
    exe: &std::path::Path,
) -> PyResult<()> {
    let bootstrap = py.import("_frozen_importlib")?;
    let imp = py.import("_imp")?;
    let views = on_disk.into_iter().map(|g| (g, OnceCell::new())).collect();
    let importer = Importer {
        archive,
        prefix: exe.to_string_lossy().into_owned(),
        module_spec: bootstrap.getattr("ModuleSpec")?.unbind(),
        fix_co_filename: imp.getattr("_fix_co_filename")?.unbind(),
        views,
    };
    let obj = Bound::new(py, importer)?;
    py.import("sys")?
        .getattr("meta_path")?
        .call_method1("append", (obj,))?;
    Ok(())
}

/// Put the importer's path hook first on `sys.path_hooks` (after start-up, which
/// installs the default hooks), so tools that walk `__path__` entries — `pkgutil`'s
/// `iter_modules` and `walk_packages` — see packed packages.
pub fn install_path_hook(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    for finder in sys.getattr("meta_path")?.try_iter()? {
        let finder = finder?;
        if finder.is_instance_of::<Importer>() {
            let hook = finder.getattr("_path_hook")?;
            sys.getattr("path_hooks")?
                .call_method1("insert", (0, hook))?;
        }
    }
    Ok(())
}

/// The loader of a packed PEP 420 namespace package (`google`, whose parts come from
/// several distributions): the import system's own namespace loader (same type, so
/// `isinstance` and names match a venv), whose instance also serves
/// `importlib.resources` over what the namespace holds — the import system's needs
/// `__path__` entries that are real directories — so `files("google")` lists `_upb`,
/// `protobuf` as in a venv; and, as the import system does for namespace packages,
/// `__file__` is None.
fn namespace_loader<'py>(
    importer: &Bound<'py, Importer>,
    spec: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = importer.py();
    let external = py.import("_frozen_importlib_external")?;
    // 3.11 renamed `_NamespaceLoader` (still there as an alias).
    let class = external
        .getattr("NamespaceLoader")
        .or_else(|_| external.getattr("_NamespaceLoader"))?;
    let loader = py
        .import("builtins")?
        .getattr("object")?
        .call_method1("__new__", (&class,))?;
    loader.setattr("_path", spec.getattr("submodule_search_locations")?)?;
    let hooks = Bound::new(
        py,
        NamespaceHooks {
            importer: importer.clone().unbind(),
        },
    )?;
    loader.setattr("get_resource_reader", hooks.getattr("get_resource_reader")?)?;
    loader.setattr("exec_module", hooks.getattr("exec_module")?)?;
    Ok(loader)
}

/// What a namespace package's loader does beyond the import system's (see
/// [`namespace_loader`]).
#[pyclass(module = "_pykiln", name = "PackedNamespaceHooks", frozen)]
pub struct NamespaceHooks {
    importer: Py<Importer>,
}

#[pymethods]
impl NamespaceHooks {
    fn exec_module(&self, module: &Bound<'_, PyAny>) -> PyResult<()> {
        module.setattr("__file__", module.py().None())
    }

    fn get_resource_reader<'py>(
        &self,
        py: Python<'py>,
        fullname: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        Importer::get_resource_reader(self.importer.bind(py), fullname)
    }
}

/// A `sys.path_importer_cache` entry for one virtual package directory.
#[pyclass(module = "_pykiln", name = "PackedPathEntry", frozen)]
pub struct PathEntry {
    importer: Py<Importer>,
    /// Dotted package name (`""` for the import root).
    package: String,
}

#[pymethods]
impl PathEntry {
    /// What `pkgutil.iter_modules` asks a path entry finder for: `(name, ispkg)` pairs.
    #[pyo3(signature = (prefix=""))]
    fn iter_modules(&self, py: Python<'_>, prefix: &str) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = self
            .importer
            .bind(py)
            .get()
            .archive
            .children(&self.package)
            .into_iter()
            .map(|(n, e)| {
                (
                    format!("{prefix}{n}"),
                    e.kind() == EntryKind::Module && e.is_package(),
                )
            })
            .collect();
        out.dedup();
        out
    }

    /// Path entry finder protocol: the spec of a module inside this package.
    #[pyo3(signature = (fullname, target=None))]
    fn find_spec<'py>(
        &self,
        py: Python<'py>,
        fullname: &str,
        target: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let parent = fullname.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
        if parent != self.package {
            return Ok(None);
        }
        Importer::find_spec(self.importer.bind(py), fullname, None, target)
    }

    fn invalidate_caches(&self) {}

    fn __repr__(&self) -> String {
        format!("<PackedPathEntry {:?}>", self.package)
    }
}

fn import_error(name: &str, msg: impl std::fmt::Display) -> PyErr {
    PyImportError::new_err(format!("{msg} (module '{name}')"))
}

fn archive_error(name: &str, e: pykiln_archive::Error) -> PyErr {
    import_error(name, format!("pykiln archive: {e}"))
}

impl Importer {
    fn rel_path(name: &str) -> String {
        name.replace('.', "/")
    }

    /// The on-disk view `name`'s files live in, written now if this is its first use;
    /// None when its distribution has none, or when it cannot be written anywhere (then
    /// the distribution is served from memory, as every distribution without data is:
    /// it works unless its code opens its files by path, where a venv's would be).
    fn view_root(&self, name: &str) -> Option<&str> {
        let (group, cell) = self.views.iter().find(|(g, _)| g.covers(name))?;
        cell.get_or_init(|| {
            crate::fileview::ensure(&self.archive, group)
                .map(|p| p.to_string_lossy().into_owned())
                .map_err(|e| {
                    tracing::warn!(
                        "no on-disk view for {}: {e}; its files are served from memory, so code that opens them by path will fail",
                        group.name
                    );
                    e.to_string()
                })
        })
        .as_deref()
        .ok()
    }

    /// The directory `name`'s files live under: its distribution's on-disk view, or the
    /// executable's virtual root.
    fn root(&self, name: &str) -> PyResult<&str> {
        Ok(self.view_root(name).unwrap_or(&self.prefix))
    }

    /// `__file__` of a module entry.
    fn origin(&self, name: &str, entry: &Entry<'_>) -> PyResult<String> {
        let root = self.root(name)?;
        let rel = Self::rel_path(name);
        Ok(match entry.kind() {
            EntryKind::Extension => {
                let file = entry.aux().next().unwrap_or_default();
                match rel.rsplit_once('/') {
                    Some((dir, _)) => format!("{root}/{dir}/{file}"),
                    None => format!("{root}/{file}"),
                }
            }
            _ if entry.is_package() => format!("{root}/{rel}/__init__.py"),
            _ => format!("{root}/{rel}.py"),
        })
    }

    /// `__path__` entry of a package.
    fn package_dir(&self, name: &str) -> PyResult<String> {
        Ok(format!("{}/{}", self.root(name)?, Self::rel_path(name)))
    }

    /// Whether `name` is served from an on-disk view.
    fn on_disk(&self, name: &str) -> bool {
        self.view_root(name).is_some()
    }

    fn entry(&self, name: &str) -> PyResult<Entry<'static>> {
        self.archive
            .module(name)
            .ok_or_else(|| import_error(name, "not in the pykiln archive"))
    }

    fn spec_name(module: &Bound<'_, PyAny>) -> PyResult<String> {
        let spec = module.getattr("__spec__")?;
        if spec.is_none() {
            return module.getattr("__name__")?.extract();
        }
        spec.getattr("name")?.extract()
    }

    fn make_spec<'py>(
        slf: &Bound<'py, Self>,
        name: &str,
        origin: Option<String>,
        search: Option<String>,
        loader: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let kwargs = PyDict::new(py);
        kwargs.set_item("origin", origin.as_deref())?;
        kwargs.set_item("is_package", search.is_some())?;
        let loader_obj: Bound<'py, PyAny> = if loader {
            slf.clone().into_any()
        } else {
            py.None().into_bound(py)
        };
        let spec = this
            .module_spec
            .bind(py)
            .call((name, loader_obj), Some(&kwargs))?;
        if let Some(dir) = search {
            spec.setattr("submodule_search_locations", PyList::new(py, [dir])?)?;
        }
        if origin.is_some() && loader {
            spec.setattr("has_location", true)?;
        }
        Ok(spec)
    }

    fn code_object<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        if name == SUPPORT {
            return unmarshal(py, SUPPORT, SUPPORT_CODE);
        }
        let entry = self.entry(name)?;
        if entry.kind() != EntryKind::Module {
            return Err(import_error(
                name,
                "is a native extension and has no bytecode",
            ));
        }
        let bytes = match crate::prefetch::take(EntryKind::Module, entry.key()) {
            Some(crate::prefetch::Product::Bytes(b)) => Cow::Owned(b),
            _ => entry.read().map_err(|e| archive_error(name, e))?,
        };
        if bytes.is_empty() {
            // A dependency's module that did not compile at build time: compile its
            // source here, so importing it raises the SyntaxError a venv would.
            return self.compile_source(py, name, &entry);
        }
        let code = unmarshal(py, name, &bytes)?;
        self.fix_co_filename
            .bind(py)
            .call1((&code, self.origin(name, &entry)?))?;
        Ok(code)
    }

    /// Compile the packed source of `name` (file name: its origin, as a venv's would be).
    fn compile_source<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        entry: &Entry<'static>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let source = entry
            .read_source()
            .map_err(|e| archive_error(name, e))?
            .ok_or_else(|| import_error(name, "has neither bytecode nor source in the archive"))?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("dont_inherit", true)?;
        py.import("builtins")?.getattr("compile")?.call(
            (PyBytes::new(py, &source), self.origin(name, entry)?, "exec"),
            Some(&kwargs),
        )
    }

    fn load_extension<'py>(
        &self,
        spec: &Bound<'py, PyAny>,
        name: &str,
        entry: &Entry<'static>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = spec.py();
        let needed: Vec<&str> = entry.aux().skip(1).collect();
        crate::native::ensure_libs(&self.archive, &needed).map_err(|e| import_error(name, e))?;
        if self.on_disk(name) {
            // spec.origin is the extension's file in the view: dlopen it where it is.
            return py.import("_imp")?.getattr("create_dynamic")?.call1((spec,));
        }
        let path = crate::native::stage_entry(entry).map_err(|e| import_error(name, e))?;
        tracing::debug!(module = name, path = %path.display(), "loading extension module");
        // _imp.create_dynamic dlopens spec.origin; point it at the in-memory file for
        // the duration of the call only.
        let origin = spec.getattr("origin")?;
        spec.setattr("origin", path.to_string_lossy().as_ref())?;
        let result = py.import("_imp")?.getattr("create_dynamic")?.call1((spec,));
        spec.setattr("origin", origin)?;
        result
    }

    /// The `.dist-info` file at a virtual path (`<prefix>/x-1.0.dist-info/METADATA`).
    fn dist_file_at(&self, path: &str) -> Option<Entry<'static>> {
        let rel = path.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (dir, file) = rel.split_once('/')?;
        if !dir.ends_with(".dist-info") {
            return None;
        }
        self.archive.dist_file(dir, file)
    }

    /// The packed source of the module whose virtual `.py` path is `path`, if packed.
    fn packed_source_at(&self, path: &str) -> PyResult<Option<Vec<u8>>> {
        let Some(rel) = path
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_suffix(".py"))
        else {
            return Ok(None);
        };
        let dotted = rel.replace('/', ".");
        let name = dotted.strip_suffix(".__init__").unwrap_or(&dotted);
        match self.archive.module(name) {
            Some(e) if e.kind() == EntryKind::Module => Ok(e
                .read_source()
                .map_err(|err| archive_error(name, err))?
                .map(|c| c.into_owned())),
            _ => Ok(None),
        }
    }

    /// Module files of `package` and its subpackages, as paths relative to the package,
    /// named as in a venv's directory: `__init__.py`, `mod.py`, `sub/__init__.py`, an
    /// extension module's original file name.
    fn module_paths(&self, package: &str) -> Vec<(String, Entry<'static>)> {
        let mut out = Vec::new();
        for kind in [EntryKind::Module, EntryKind::Extension] {
            for e in self.archive.prefixed(kind, package.as_bytes()) {
                let Ok(name) = std::str::from_utf8(e.key()) else {
                    continue;
                };
                let rest = if name == package {
                    ""
                } else if let Some(r) = name.strip_prefix(package).and_then(|r| r.strip_prefix('.'))
                {
                    r
                } else {
                    continue;
                };
                let rel = rest.replace('.', "/");
                let path = match kind {
                    EntryKind::Extension => {
                        let file = e.aux().next().unwrap_or_default();
                        match rel.rsplit_once('/') {
                            Some((dir, _)) => format!("{dir}/{file}"),
                            None if !rest.is_empty() => file.to_string(),
                            None => continue,
                        }
                    }
                    _ if e.is_package() && rest.is_empty() => "__init__.py".to_string(),
                    _ if e.is_package() => format!("{rel}/__init__.py"),
                    _ if rest.is_empty() => continue,
                    _ => format!("{rel}.py"),
                };
                out.push((path, e));
            }
        }
        out
    }

    /// The bytes a venv's module file holds: the source of a `.py` file (an error
    /// saying how to pack it when only bytecode is packed), an extension's image.
    fn module_file_bytes<'py>(
        py: Python<'py>,
        shown: &str,
        entry: &Entry<'static>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if entry.kind() == EntryKind::Extension {
            return read_bytes(py, shown, entry);
        }
        let name = entry.key_lossy();
        match entry.read_source().map_err(|e| archive_error(&name, e))? {
            Some(src) => Ok(PyBytes::new(py, &src)),
            None => {
                let top = name.split('.').next().unwrap_or_default();
                Err(PyFileNotFoundError::new_err((
                    2,
                    format!(
                        "the source of module {name} is not packed, only its bytecode; to pack it, \
                         list its distribution or package in [tool.pykiln] sources = [\"{top}\"] \
                         in pyproject.toml"
                    ),
                    shown.to_string(),
                )))
            }
        }
    }

    /// The module whose file (as a venv names it) is `rel` inside `package`.
    fn module_file(&self, package: &str, rel: &str) -> Option<Entry<'static>> {
        self.module_paths(package)
            .into_iter()
            .find(|(p, _)| p == rel)
            .map(|(_, e)| e)
    }

    /// The module whose file (as a venv names it) is at virtual path `path`.
    fn module_file_at(&self, path: &str) -> Option<Entry<'static>> {
        let rel = path.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (dir, file) = rel.rsplit_once('/')?;
        self.module_file(&dir.replace('/', "."), file)
    }

    /// Resolve `<prefix>/a/b/file` to (package, relative path) of a packed resource.
    fn resolve_path(&self, path: &str) -> Option<Entry<'static>> {
        let rel = path.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rel.split('/').collect();
        (1..parts.len()).rev().find_map(|split| {
            let package = parts[..split].join(".");
            self.archive.resource(&package, &parts[split..].join("/"))
        })
    }

    /// Resources of `package` and of its subpackages, as paths relative to the package.
    fn resource_paths(&self, package: &str) -> Vec<(String, Entry<'static>)> {
        let mut out = Vec::new();
        for e in self
            .archive
            .prefixed(EntryKind::Resource, package.as_bytes())
        {
            let key = e.key();
            let Some(nul) = key.iter().position(|&b| b == 0) else {
                continue;
            };
            let (Ok(pkg), Ok(file)) = (
                std::str::from_utf8(&key[..nul]),
                std::str::from_utf8(&key[nul + 1..]),
            ) else {
                continue;
            };
            let sub = if pkg == package {
                String::new()
            } else if let Some(rest) = pkg.strip_prefix(package).and_then(|r| r.strip_prefix('.')) {
                format!("{}/", rest.replace('.', "/"))
            } else {
                continue;
            };
            out.push((format!("{sub}{file}"), e));
        }
        out
    }
}

/// The code object marshalled in `bytes`.
fn unmarshal<'py>(py: Python<'py>, name: &str, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    marshal_loads(py, bytes)
        .map_err(|e| import_error(name, format!("cannot unmarshal its bytecode: {e}")))
}

/// `marshal.loads(bytes)`.
pub(crate) fn marshal_loads<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the pointer and length describe `bytes`, alive across the call;
    // PyMarshal_ReadObjectFromString copies what it needs.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyMarshal_ReadObjectFromString(
                bytes.as_ptr().cast(),
                bytes.len() as ffi::Py_ssize_t,
            ),
        )
    }
}

fn read_bytes<'py>(py: Python<'py>, what: &str, e: &Entry<'_>) -> PyResult<Bound<'py, PyBytes>> {
    let data: Cow<'_, [u8]> = e
        .read()
        .map_err(|err| pyo3::exceptions::PyOSError::new_err(format!("{what}: {err}")))?;
    Ok(PyBytes::new(py, &data))
}

#[pymethods]
impl Importer {
    /// PEP 451 finder: a spec for modules, packages and namespace packages in the archive.
    #[pyo3(signature = (fullname, path=None, target=None))]
    fn find_spec<'py>(
        slf: &Bound<'py, Self>,
        fullname: &str,
        path: Option<&Bound<'py, PyAny>>,
        target: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let _ = (path, target);
        let this = slf.get();
        if fullname == SUPPORT {
            return Self::make_spec(
                slf,
                fullname,
                Some(format!("<pykiln>/{SUPPORT}.py")),
                None,
                true,
            )
            .map(Some);
        }
        if let Some(entry) = this.archive.module(fullname) {
            let is_pkg = entry.kind() == EntryKind::Module && entry.is_package();
            let search = if is_pkg {
                Some(this.package_dir(fullname)?)
            } else {
                None
            };
            return Self::make_spec(
                slf,
                fullname,
                Some(this.origin(fullname, &entry)?),
                search,
                true,
            )
            .map(Some);
        }
        if this.archive.has_submodules(fullname) {
            // PEP 420 namespace package: a loader that does what the import system's
            // own namespace loader does, and serves `importlib.resources` (the import
            // system's needs `__path__` entries that are real directories).
            let dir = this.package_dir(fullname)?;
            let spec = Self::make_spec(slf, fullname, None, Some(dir), false)?;
            spec.setattr("loader", namespace_loader(slf, &spec)?)?;
            return Ok(Some(spec));
        }
        Ok(None)
    }

    /// Extension modules are created by the extension machinery; others get the default module.
    fn create_module<'py>(&self, spec: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let name: String = spec.getattr("name")?.extract()?;
        if name == SUPPORT {
            return Ok(None);
        }
        let entry = self.entry(&name)?;
        if entry.kind() == EntryKind::Extension {
            return self.load_extension(spec, &name, &entry).map(Some);
        }
        Ok(None)
    }

    /// Run the module's bytecode in its namespace (or a multi-phase extension's exec slots).
    fn exec_module(&self, module: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = module.py();
        let name = Self::spec_name(module)?;
        let mut lines_from_archive = false;
        if name != SUPPORT {
            let entry = self.entry(&name)?;
            if entry.kind() == EntryKind::Extension {
                py.import("_imp")?
                    .getattr("exec_dynamic")?
                    .call1((module,))?;
                module.setattr("__file__", self.origin(&name, &entry)?)?;
                return Ok(());
            }
            // A packed source outside a view has no file to read lines from.
            lines_from_archive = entry.has_source() && !self.on_disk(&name);
        }
        let code = self.code_object(py, &name)?;
        let globals = module.getattr("__dict__")?;
        if lines_from_archive {
            // Register the module with linecache now, as tracebacks do lazily: a
            // warning raised in it (warnings asks linecache by file name alone) then
            // shows its source line as in a venv.
            let filename = code.getattr("co_filename")?;
            py.import("linecache")?
                .call_method1("lazycache", (filename, &globals))?;
        }
        // builtins.exec() (what importlib's loaders use) adds __builtins__ to the
        // namespace; PyEval_EvalCode does not, and code that reads
        // module.__dict__['__builtins__'] (pyo3-based extensions do) depends on it.
        if !globals.contains("__builtins__")? {
            globals.set_item("__builtins__", py.import("builtins")?)?;
        }
        // SAFETY: code and globals are live objects; PyEval_EvalCode returns a new
        // reference or NULL with an exception set.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyEval_EvalCode(code.as_ptr(), globals.as_ptr(), globals.as_ptr()),
            )?;
        }
        Ok(())
    }

    /// InspectLoader: the module's code object.
    fn get_code<'py>(&self, py: Python<'py>, fullname: &str) -> PyResult<Bound<'py, PyAny>> {
        self.code_object(py, fullname)
    }

    /// InspectLoader: the module's source, if it was packed.
    fn get_source<'py>(
        &self,
        py: Python<'py>,
        fullname: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if fullname == SUPPORT {
            return Ok(Some(PyString::new(py, SUPPORT_SOURCE).into_any()));
        }
        let entry = self.entry(fullname)?;
        let Some(src) = entry
            .read_source()
            .map_err(|e| archive_error(fullname, e))?
        else {
            return Ok(None);
        };
        let decode = py
            .import("_frozen_importlib_external")?
            .getattr("decode_source")?;
        decode.call1((PyBytes::new(py, &src),)).map(Some)
    }

    /// InspectLoader: whether `fullname` is a package.
    fn is_package(&self, fullname: &str) -> PyResult<bool> {
        if fullname == SUPPORT {
            return Ok(false);
        }
        Ok(self.entry(fullname)?.is_package())
    }

    /// ExecutionLoader: the module's (virtual) file name.
    fn get_filename(&self, fullname: &str) -> PyResult<String> {
        let entry = self.entry(fullname)?;
        self.origin(fullname, &entry)
    }

    /// ResourceLoader: bytes of a file by path (what `pkgutil.get_data` asks for): a
    /// packed file under the virtual root, or a real file (on-disk views) elsewhere.
    fn get_data<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(e) = self.resolve_path(path) {
            return read_bytes(py, path, &e);
        }
        if let Some(src) = self.packed_source_at(path)? {
            return Ok(PyBytes::new(py, &src));
        }
        if let Some(e) = self.dist_file_at(path) {
            return read_bytes(py, path, &e);
        }
        if let Some(e) = self.module_file_at(path) {
            return Self::module_file_bytes(py, path, &e);
        }
        if !path.starts_with(&format!("{}/", self.prefix)) {
            let bytes = std::fs::read(path).map_err(|e| {
                pyo3::exceptions::PyOSError::new_err((
                    e.raw_os_error().unwrap_or(0),
                    e.to_string(),
                    path.to_string(),
                ))
            })?;
            return Ok(PyBytes::new(py, &bytes));
        }
        Err(PyFileNotFoundError::new_err((
            2,
            "No such file in the pykiln archive",
            path.to_string(),
        )))
    }

    /// `importlib.resources` reader for a package.
    fn get_resource_reader<'py>(
        slf: &Bound<'py, Self>,
        fullname: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let support = slf.py().import(SUPPORT)?;
        support
            .getattr("PackedResourceReader")?
            .call1((slf, fullname))
    }

    /// `importlib.metadata` hook: distributions packed in the archive.
    #[pyo3(signature = (context=None))]
    fn find_distributions<'py>(
        slf: &Bound<'py, Self>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let support = slf.py().import(SUPPORT)?;
        support.getattr("find_distributions")?.call1((slf, context))
    }

    /// Nothing is cached beyond the archive itself.
    fn invalidate_caches(&self) {}

    // ---- helpers for _pykiln_support -------------------------------------------------

    /// `sys.path_hooks` entry: claims the virtual directories of packed packages.
    fn _path_hook(slf: &Bound<'_, Self>, path: &str) -> PyResult<PathEntry> {
        let this = slf.get();
        let package = if path == this.prefix {
            Some(String::new())
        } else {
            path.strip_prefix(&this.prefix)
                .and_then(|r| r.strip_prefix('/'))
                .map(|r| r.trim_end_matches('/').replace('/', "."))
                .filter(|p| this._is_packed(p))
        };
        match package {
            Some(package) => Ok(PathEntry {
                importer: slf.clone().unbind(),
                package,
            }),
            None => Err(PyImportError::new_err(format!(
                "{path} is not a packed package directory"
            ))),
        }
    }

    /// The virtual root of `__file__` paths.
    #[getter]
    fn _prefix(&self) -> &str {
        &self.prefix
    }

    /// Relative paths of a package's files, subpackages' included: its resources and,
    /// as a venv's directory lists them, its modules' files (`mod.py`, `sub/__init__.py`).
    fn _resource_names(&self, package: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .resource_paths(package)
            .into_iter()
            .chain(self.module_paths(package))
            .map(|(p, _)| p)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Bytes of one file by path relative to the package (a resource, a module's
    /// source, an extension's image), or None.
    fn _resource_bytes<'py>(
        &self,
        py: Python<'py>,
        package: &str,
        path: &str,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let full = format!("{}/{}/{}", self.prefix, Self::rel_path(package), path);
        if let Some(e) = self.resolve_path(&full) {
            return read_bytes(py, &full, &e).map(Some);
        }
        match self.module_file(package, path) {
            Some(e) => Self::module_file_bytes(py, &full, &e).map(Some),
            None => Ok(None),
        }
    }

    /// Names of the packed `.dist-info` directories.
    fn _distributions(&self) -> Vec<&'static str> {
        self.archive.distributions()
    }

    /// A file of a `.dist-info` directory, or None.
    fn _dist_file<'py>(
        &self,
        py: Python<'py>,
        dist_dir: &str,
        file: &str,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        match self.archive.dist_file(dist_dir, file) {
            Some(e) => read_bytes(py, &format!("{dist_dir}/{file}"), &e).map(Some),
            None => Ok(None),
        }
    }

    /// Immediate submodules of a package (`""` for top level) as (name, is_package).
    fn _children(&self, package: &str) -> Vec<(&'static str, bool)> {
        self.archive
            .children(package)
            .into_iter()
            .map(|(n, e)| (n, e.kind() == EntryKind::Module && e.is_package()))
            .collect()
    }

    /// Every packed module name (bytecode and extension), sorted.
    fn _module_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let names: Vec<std::borrow::Cow<'static, str>> = self
            .archive
            .entries()
            .filter(|e| matches!(e.kind(), EntryKind::Module | EntryKind::Extension))
            .map(|e| e.key_lossy())
            .collect();
        PyTuple::new(py, names)
    }

    /// Modules that fail to import on the build machine outside pykiln too (module → error).
    fn _expected_failures(&self) -> std::collections::BTreeMap<String, String> {
        self.archive
            .manifest()
            .map(|m| m.expected_import_failures)
            .unwrap_or_default()
    }

    /// End of start-up: stop the prefetcher, drop this process's resident copies of the
    /// archive's and the other read-only pages of the executable (start-up has read
    /// what it needs; later reads fault pages back in from the page cache) and hand the
    /// heap that start-up freed back to the system.
    fn _release_pages(&self) {
        crate::prefetch::finish();
        // The archive lies in a read-only segment, so the second call covers it too;
        // the first still applies when that one declines (text relocations).
        crate::native::release_pages(self.archive.bytes());
        crate::native::release_readonly_segments();
        // SAFETY: malloc_trim only returns free heap memory to the kernel.
        unsafe { libc::malloc_trim(0) };
    }

    /// Whether a path under the virtual root names something packed: a module's
    /// `.py`, an extension module's file, package data or a `.dist-info` file.
    fn _path_exists(&self, path: &str) -> bool {
        if self.resolve_path(path).is_some() {
            return true;
        }
        let Some(rel) = path
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        if self.dist_file_at(path).is_some() {
            return true;
        }
        let (dir, file) = rel.rsplit_once('/').unwrap_or(("", rel));
        let package = dir.replace('/', ".");
        let join = |stem: &str| {
            if package.is_empty() {
                stem.to_string()
            } else if stem == "__init__" {
                package.clone()
            } else {
                format!("{package}.{stem}")
            }
        };
        if let Some(stem) = file.strip_suffix(".py") {
            return self
                .archive
                .module(&join(stem))
                .is_some_and(|e| e.kind() == EntryKind::Module);
        }
        let stem = file.split('.').next().unwrap_or_default();
        self.archive
            .module(&join(stem))
            .is_some_and(|e| e.kind() == EntryKind::Extension && e.aux().next() == Some(file))
    }

    /// Whether `name` is a packed native extension module.
    fn _is_extension(&self, name: &str) -> bool {
        self.archive
            .module(name)
            .is_some_and(|e| e.kind() == EntryKind::Extension)
    }

    /// Whether `name` is a packed module or namespace package.
    fn _is_packed(&self, name: &str) -> bool {
        self.archive.module(name).is_some() || self.archive.has_submodules(name)
    }
}
