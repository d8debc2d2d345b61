//! Finding and describing the CPython that pykiln builds against.
//!
//! The interpreter is chosen exactly as pyo3 chooses it, so the Rust bindings and the
//! packed standard library always come from the same Python: `PYO3_PYTHON` if set,
//! else the active virtualenv's or conda env's interpreter, else `python3` on `PATH`.
//! Used both by the runtime crate's build script (link lines) and by pykiln-build
//! (stdlib collection and bytecode compilation).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod foreign;

/// Environment variables that select the interpreter; build scripts should
/// `rerun-if-env-changed` on each.
pub const SELECTING_ENV: &[&str] = &["PYO3_PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX", "PATH"];

/// Oldest supported Python.
pub const MIN_MINOR: u32 = 10;

/// Why no usable interpreter was found.
#[derive(Debug, thiserror::Error)]
pub enum PyConfigError {
    /// The interpreter could not be started.
    #[error("cannot run Python interpreter '{path}': {source}")]
    Spawn {
        /// Interpreter that was tried.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The probe script failed or printed something unexpected.
    #[error("Python interpreter '{path}' did not answer the pykiln probe: {detail}")]
    Probe {
        /// Interpreter that was tried.
        path: String,
        /// stderr or parse error.
        detail: String,
    },
    /// The interpreter is not CPython 3.10+.
    #[error(
        "Python interpreter '{path}' is {implementation} {version}; pykiln needs CPython 3.{MIN_MINOR} or newer (set PYO3_PYTHON to choose another)"
    )]
    Unsupported {
        /// Interpreter that was tried.
        path: String,
        /// Implementation name.
        implementation: String,
        /// Its version.
        version: String,
    },
    /// No static libpython next to the interpreter.
    #[error(
        "Python interpreter '{path}' has no static library (looked for {expected}); pykiln links CPython statically. Use an interpreter that has one: pyenv's default build, or on Debian and Ubuntu the distribution's own with `apt install python{version}-dev` (Fedora, RHEL and Homebrew ship none), and point PYO3_PYTHON (or the CLI's --python) at it"
    )]
    NoStaticLib {
        /// Interpreter that was tried.
        path: String,
        /// Path that was expected.
        expected: String,
        /// `major.minor` of the interpreter.
        version: String,
    },
    /// The static library could not be read as an `ar` archive of ELF objects.
    #[error("cannot read the static library {path}: {detail}")]
    StaticLibrary {
        /// The library.
        path: String,
        /// What went wrong, naming the member where there is one.
        detail: String,
    },
    /// A free-threaded or debug build, which pykiln does not embed.
    #[error(
        "Python interpreter '{path}' is a '{abiflags}' build; pykiln embeds the default (non-debug, GIL) build"
    )]
    Abi {
        /// Interpreter that was tried.
        path: String,
        /// Its ABI flags.
        abiflags: String,
    },
}

/// Libraries linked dynamically whatever static archives exist: the glibc family
/// ([`pykiln_glibc::FAMILY`], which must match the target's ld.so), and `crypt` and
/// `nsl`, glibc's once and shared-only on most systems since (their shared objects are
/// packed like any other library's).
fn links_dynamically(name: &str) -> bool {
    pykiln_glibc::FAMILY.iter().any(|m| m.link_name == name) || ["crypt", "nsl"].contains(&name)
}

/// One library libpython needs, and how it is linked ([`PythonConfig::link_plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkLib {
    /// Name as in `-l<name>`.
    pub name: String,
    /// Its static archive when it is linked statically; None: dynamically.
    pub static_archive: Option<PathBuf>,
}

/// File beside an interpreter `pykiln python install` built (in its `sys.base_prefix`).
pub const PORTABLE_FILE: &str = "pykiln-python.json";

/// What `pykiln python install` recorded about an interpreter it built: binaries that
/// embed it are linked with the same toolchain, against the same old glibc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Portable {
    /// `platform.python_version()` of the interpreter.
    pub version: String,
    /// Rust target triple of the code (`x86_64-unknown-linux-gnu`).
    pub target: String,
    /// The glibc it was linked against, and the oldest it runs on (`2.17`).
    pub glibc: String,
    /// The toolchain's directory: `bin/` holds `cargo-zigbuild` and the `python` that
    /// has `ziglang`.
    pub toolchain: PathBuf,
    /// Hash of the recipe, the pinned sources and the toolchain it was built from.
    pub key: String,
    /// Each source archive it was built from, with its SHA-256.
    pub sources: std::collections::BTreeMap<String, String>,
    /// Optimisations beyond `-O3` it was built with (`pgo`).
    #[serde(default)]
    pub optimizations: Vec<String>,
}

impl Portable {
    /// Read [`PORTABLE_FILE`] in `prefix`, if there is one.
    pub fn read(prefix: &Path) -> Option<Result<Self, String>> {
        let path = prefix.join(PORTABLE_FILE);
        let bytes = std::fs::read(&path).ok()?;
        Some(serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())))
    }

    /// cargo-zigbuild's target: the triple with the glibc version appended.
    pub fn zig_target(&self) -> String {
        format!("{}.{}", self.target, self.glibc)
    }
}

/// What pykiln needs to know about the interpreter.
#[derive(Debug, Clone, Deserialize)]
pub struct PythonConfig {
    /// Interpreter executable used for the probe (as given, not resolved).
    #[serde(skip)]
    pub interpreter: PathBuf,
    /// `sys.implementation.name`.
    pub implementation: String,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// `platform.python_version()`, e.g. `3.11.7`.
    pub version: String,
    /// `sys.implementation.cache_tag`, e.g. `cpython-311`.
    pub cache_tag: String,
    /// Pure-Python standard library directory.
    pub stdlib: PathBuf,
    /// Directory of stdlib extension modules (`lib-dynload`).
    pub dynload: PathBuf,
    /// Directory holding the static library (`LIBPL`).
    pub libpl: PathBuf,
    /// Where the system's libraries for this interpreter's platform are (`LIBDIR`, and
    /// `/usr/lib/<MULTIARCH>` on Debian-style systems): where static copies of
    /// [`Self::link_libs`] are looked for.
    #[serde(default)]
    pub lib_dirs: Vec<PathBuf>,
    /// File name of the static library (`LIBRARY`, e.g. `libpython3.11.a`).
    pub library: String,
    /// Extension module suffix, e.g. `.cpython-311-x86_64-linux-gnu.so`.
    pub ext_suffix: String,
    /// `sys.abiflags`.
    pub abiflags: String,
    /// Libraries libpython itself needs (`LIBS` + `SYSLIBS` + `MODLIBS` `-l` names,
    /// first occurrence of each).
    pub link_libs: Vec<String>,
    /// Whether the build is free-threaded (`Py_GIL_DISABLED`).
    pub gil_disabled: bool,
    /// OpenSSL's compiled-in CA file and directory (what `ssl` trusts by default).
    #[serde(default)]
    pub openssl_paths: Vec<PathBuf>,
    /// `sys.executable`: the interpreter itself, also when [`Self::interpreter`] is a
    /// launcher such as a pyenv shim (which picks a version from the environment).
    #[serde(default)]
    pub executable: PathBuf,
    /// `sys.base_prefix`: where the installation is.
    #[serde(default)]
    pub base_prefix: PathBuf,
    /// Set when pykiln built this interpreter ([`PORTABLE_FILE`]).
    #[serde(skip)]
    pub portable: Option<Portable>,
}

const PROBE: &str = r#"
import json, os, sys, sysconfig, platform
# Run on a same-version twin for another CPU's interpreter: that one's build-time
# configuration (its _sysconfigdata module, named in _PYTHON_SYSCONFIGDATA_NAME).
if os.environ.get("PYKILN_PROBE_SYSCONFIG_DIR"):
    sys.path.append(os.environ["PYKILN_PROBE_SYSCONFIG_DIR"])
v = sysconfig.get_config_var
libs = []
# MODLIBS: libraries of the extension modules built into libpython (Debian builds
# pyexpat and zlib in, needing -lexpat -lz); empty for pyenv's builds.
for var in ("LIBS", "SYSLIBS", "MODLIBS"):
    for tok in (v(var) or "").split():
        if tok.startswith("-l") and tok[2:] not in libs:
            libs.append(tok[2:])
def _ssl_paths():
    try:
        import ssl
    except ImportError:
        return []
    p = ssl.get_default_verify_paths()
    return [x for x in (p.openssl_cafile, p.openssl_capath) if x]
print(json.dumps({
    "implementation": sys.implementation.name,
    "major": sys.version_info[0],
    "minor": sys.version_info[1],
    "version": platform.python_version(),
    "cache_tag": sys.implementation.cache_tag or "",
    "stdlib": sysconfig.get_paths()["stdlib"],
    "dynload": v("DESTSHARED") or "",
    "libpl": v("LIBPL") or "",
    "lib_dirs": [d for d in (v("LIBDIR"), v("MULTIARCH") and "/usr/lib/" + v("MULTIARCH")) if d],
    "library": v("LIBRARY") or "",
    "ext_suffix": v("EXT_SUFFIX") or "",
    "abiflags": getattr(sys, "abiflags", ""),
    "link_libs": libs,
    "gil_disabled": bool(v("Py_GIL_DISABLED")),
    "openssl_paths": _ssl_paths(),
    "executable": sys.executable or "",
    "base_prefix": sys.base_prefix,
}))
"#;

/// For probing a foreign pykiln-built interpreter on its twin: the installation's
/// prefix, and the directory and name of its `_sysconfigdata_*` module.
fn twin_probe_env(interpreter: &Path) -> Result<(PathBuf, (PathBuf, String)), String> {
    let prefix = interpreter
        .parent()
        .and_then(Path::parent)
        .ok_or("not in an installation's bin/")?;
    let name = interpreter
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let lib = prefix.join("lib").join(name.as_ref());
    let modules: Vec<String> = std::fs::read_dir(&lib)
        .map_err(|e| format!("reading {}: {e}", lib.display()))?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("_sysconfigdata_")?.strip_suffix(".py")?;
            Some(n.trim_end_matches(".py").to_string())
        })
        .collect();
    match modules.as_slice() {
        [one] => Ok((prefix.to_path_buf(), (lib, one.clone()))),
        _ => Err(format!(
            "expected one _sysconfigdata_*.py in {}, found {modules:?}",
            lib.display()
        )),
    }
}

/// The interpreter pyo3 would pick, without probing it.
pub fn select_interpreter() -> PathBuf {
    if let Some(p) = std::env::var_os("PYO3_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|p| !p.is_empty()) {
        return Path::new(&venv).join("bin").join("python");
    }
    if let Some(conda) = std::env::var_os("CONDA_PREFIX").filter(|p| !p.is_empty()) {
        return Path::new(&conda).join("bin").join("python");
    }
    PathBuf::from("python3")
}

impl PythonConfig {
    /// Probe the interpreter pyo3 would pick and check that pykiln can embed it.
    pub fn discover() -> Result<Self, PyConfigError> {
        Self::probe(&select_interpreter())
    }

    /// Probe a given interpreter and check that pykiln can embed it.
    pub fn probe(interpreter: &Path) -> Result<Self, PyConfigError> {
        let path = interpreter.display().to_string();
        let probe_err = |detail: String| PyConfigError::Probe {
            path: path.clone(),
            detail,
        };
        let runs = foreign::runs(interpreter).map_err(|e| probe_err(e.to_string()))?;
        let mut cmd = runs.command(interpreter);
        let twin = match &runs {
            foreign::Runs::OnTwin(twin) => {
                let (prefix, lib) = twin_probe_env(interpreter).map_err(probe_err)?;
                cmd.env("PYKILN_PROBE_SYSCONFIG_DIR", &lib.0)
                    .env("_PYTHON_SYSCONFIGDATA_NAME", &lib.1);
                Some((twin.clone(), prefix))
            }
            _ => None,
        };
        let out = cmd
            .args(["-I", "-c", PROBE])
            .env_remove("PYTHONHOME")
            .env_remove("PYTHONPATH")
            .output()
            .map_err(|source| PyConfigError::Spawn {
                path: path.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(PyConfigError::Probe {
                path,
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let mut cfg: PythonConfig =
            serde_json::from_slice(&out.stdout).map_err(|e| PyConfigError::Probe {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        cfg.interpreter = interpreter.to_path_buf();
        if let Some((twin, prefix)) = twin {
            // What the twin reports about itself, said of the foreign installation.
            let twin_prefix = twin.parent().and_then(Path::parent).unwrap_or(&twin);
            if let Ok(rest) = cfg.stdlib.strip_prefix(twin_prefix) {
                cfg.stdlib = prefix.join(rest);
            }
            cfg.executable = interpreter.to_path_buf();
            cfg.base_prefix = prefix;
        }
        cfg.portable = match Portable::read(&cfg.base_prefix) {
            Some(Ok(p)) => Some(p),
            Some(Err(detail)) => return Err(PyConfigError::Probe { path, detail }),
            None => None,
        };
        if cfg.implementation != "cpython" || cfg.major != 3 || cfg.minor < MIN_MINOR {
            return Err(PyConfigError::Unsupported {
                path,
                implementation: cfg.implementation,
                version: cfg.version,
            });
        }
        if cfg.gil_disabled || cfg.abiflags.contains('d') || cfg.abiflags.contains('t') {
            return Err(PyConfigError::Abi {
                path,
                abiflags: cfg.abiflags,
            });
        }
        if !cfg.static_library().is_file() {
            return Err(PyConfigError::NoStaticLib {
                path,
                expected: cfg.static_library().display().to_string(),
                version: format!("{}.{}", cfg.major, cfg.minor),
            });
        }
        Ok(cfg)
    }

    /// Full path of the static library.
    pub fn static_library(&self) -> PathBuf {
        self.libpl.join(&self.library)
    }

    /// Whether the static library's code is position-independent, so that an executable
    /// linking it can be one too (PIE, the default of Rust and of distributions' C
    /// compilers). pyenv's libraries are (their objects are compiled with `-fPIC` for
    /// the shared library as well); Debian's and Ubuntu's `python3.X-dev` ship a static
    /// library compiled without, which only links into a position-dependent executable.
    /// Known only for x86-64 objects (absolute 32-bit relocations exist only in non-PIC
    /// code); other architectures answer true.
    pub fn static_library_is_pic(&self) -> Result<bool, PyConfigError> {
        let path = self.static_library();
        let error = |detail: String| PyConfigError::StaticLibrary {
            path: path.display().to_string(),
            detail,
        };
        let bytes = std::fs::read(&path).map_err(|e| error(e.to_string()))?;
        archive_is_pic(&bytes).map_err(error)
    }

    /// How each of [`Self::link_libs`] is linked. Beyond glibc's, they are there for
    /// extension modules built into libpython (Debian's builds pyexpat and zlib in:
    /// `-lexpat -lz`): their static copies are linked where the system has them (the
    /// `-dev` packages `python3.X-dev` depends on), so the executable needs only glibc on
    /// the target, like one built on pyenv's interpreter.
    pub fn link_plan(&self) -> Vec<LinkLib> {
        self.link_libs
            .iter()
            .map(|name| {
                let file = format!("lib{name}.a");
                let static_archive = (!links_dynamically(name))
                    .then(|| {
                        self.lib_dirs
                            .iter()
                            .map(|d| d.join(&file))
                            .find(|p| p.is_file())
                    })
                    .flatten();
                LinkLib {
                    name: name.clone(),
                    static_archive,
                }
            })
            .collect()
    }

    /// Library name for `rustc-link-lib` (`python3.11` for `libpython3.11.a`).
    pub fn link_name(&self) -> &str {
        self.library
            .strip_prefix("lib")
            .and_then(|s| s.strip_suffix(".a"))
            .unwrap_or(&self.library)
    }
}

/// The symbols an executable linking `bytes` (a static library) must export to the
/// extension modules it loads: the global, default-visibility definitions whose names
/// start with one of `prefixes` (`Py`, `_Py`). Hidden ones are internal to libpython.
pub fn exported_definitions(bytes: &[u8], prefixes: &[&str]) -> Result<Vec<String>, String> {
    use goblin::elf::{Elf, sym};
    let archive = goblin::archive::Archive::parse(bytes).map_err(|e| e.to_string())?;
    let mut out = std::collections::BTreeSet::new();
    for member in archive.members() {
        let data = archive
            .extract(member, bytes)
            .map_err(|e| format!("member {member}: {e}"))?;
        if !data.starts_with(b"\x7fELF") {
            continue;
        }
        let elf = Elf::parse(data).map_err(|e| format!("member {member}: {e}"))?;
        for s in elf.syms.iter() {
            let global = matches!(s.st_bind(), sym::STB_GLOBAL | sym::STB_WEAK);
            if !global || s.st_shndx == 0 || s.st_visibility() != sym::STV_DEFAULT {
                continue;
            }
            if let Some(name) = elf.strtab.get_at(s.st_name) {
                if prefixes.iter().any(|p| name.starts_with(p)) {
                    out.insert(name.to_string());
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The functions and variables `sqlite3.h` declares (`SQLITE_API … sqlite3_x(` or
/// `sqlite3_x[]`), without the types it names on the same lines.
pub fn sqlite_api(header: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in header.lines().filter(|l| l.starts_with("SQLITE_API")) {
        let bytes = line.as_bytes();
        let mut i = 0;
        while let Some(at) = line[i..].find("sqlite3_") {
            let start = i + at;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            let before_ok = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let next = line[end..].trim_start().chars().next();
            if before_ok && matches!(next, Some('(' | '[' | ';')) {
                out.push(line[start..end].to_string());
            }
            i = end.max(start + 1);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// See [`PythonConfig::static_library_is_pic`]: false as soon as one x86-64 object of
/// the archive holds an absolute 32-bit relocation (`R_X86_64_32`/`32S`), which the
/// compiler emits only for position-dependent code.
fn archive_is_pic(bytes: &[u8]) -> Result<bool, String> {
    use goblin::elf::{Elf, header::EM_X86_64, reloc};
    let archive = goblin::archive::Archive::parse(bytes).map_err(|e| e.to_string())?;
    for member in archive.members() {
        let data = archive
            .extract(member, bytes)
            .map_err(|e| format!("member {member}: {e}"))?;
        if !data.starts_with(b"\x7fELF") {
            continue; // symbol tables, LTO-only or foreign members say nothing
        }
        let elf = Elf::parse(data).map_err(|e| format!("member {member}: {e}"))?;
        if elf.header.e_machine != EM_X86_64 {
            return Ok(true);
        }
        let absolute = elf.shdr_relocs.iter().any(|(_, relocs)| {
            relocs
                .iter()
                .any(|r| matches!(r.r_type, reloc::R_X86_64_32 | reloc::R_X86_64_32S))
        });
        if absolute {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pykiln_test_support::{self as support, CommandExt as _};

    fn sample() -> PythonConfig {
        PythonConfig {
            interpreter: PathBuf::new(),
            implementation: "cpython".into(),
            major: 3,
            minor: 11,
            version: "3.11.7".into(),
            cache_tag: "cpython-311".into(),
            stdlib: PathBuf::new(),
            dynload: PathBuf::new(),
            libpl: PathBuf::from("/x"),
            lib_dirs: vec![],
            library: "libpython3.11.a".into(),
            ext_suffix: String::new(),
            abiflags: String::new(),
            link_libs: vec![],
            gil_disabled: false,
            openssl_paths: vec![],
            executable: PathBuf::new(),
            base_prefix: PathBuf::new(),
            portable: None,
        }
    }

    #[test]
    fn link_name_strips_lib_and_suffix() {
        let cfg = sample();
        assert_eq!(cfg.link_name(), "python3.11");
        assert_eq!(cfg.static_library(), PathBuf::from("/x/libpython3.11.a"));
    }

    #[test]
    fn built_in_modules_libraries_link_statically_where_available_glibc_never() {
        let dir = tempfile::tempdir().unwrap();
        for lib in ["libexpat.a", "libm.a"] {
            std::fs::write(dir.path().join(lib), b"!<arch>\n").unwrap();
        }
        let mut cfg = sample();
        cfg.link_libs = ["dl", "m", "expat", "z"].map(String::from).to_vec();
        cfg.lib_dirs = vec![PathBuf::from("/nonexistent"), dir.path().to_path_buf()];
        let plan: Vec<(String, bool)> = cfg
            .link_plan()
            .into_iter()
            .map(|l| (l.name, l.static_archive.is_some()))
            .collect();
        let expect = [("dl", false), ("m", false), ("expat", true), ("z", false)];
        assert_eq!(plan, expect.map(|(n, s)| (n.to_string(), s)).to_vec());
    }

    /// Archives of one object compiled both ways by the C compiler the build uses.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn position_dependent_objects_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m.c");
        std::fs::write(&src, "int x;\nint *f(void) { return &x; }\n").unwrap();
        for (flag, pic) in [("-fPIC", true), ("-fno-pic", false)] {
            let obj = dir.path().join(format!("m{flag}.o"));
            let lib = dir.path().join(format!("lib{flag}.a"));
            let cc = std::process::Command::new("cc")
                .args(["-O2", "-c", flag, "-o"])
                .arg(&obj)
                .arg(&src)
                .status_within(support::TIMEOUT);
            assert!(cc.success());
            let ar = std::process::Command::new("ar")
                .arg("rcs")
                .arg(&lib)
                .arg(&obj)
                .status_within(support::TIMEOUT);
            assert!(ar.success());
            assert_eq!(
                archive_is_pic(&std::fs::read(&lib).unwrap()),
                Ok(pic),
                "{flag}"
            );
        }
        assert!(archive_is_pic(b"!<arch>\nbroken").is_err());
    }

    #[test]
    fn sqlite_api_names_functions_and_variables_not_types() {
        let header = "SQLITE_API int sqlite3_open(const char*, sqlite3**);\n\
                      SQLITE_API sqlite3_int64 sqlite3_last_insert_rowid(sqlite3*);\n\
                      SQLITE_API SQLITE_EXTERN const char sqlite3_version[];\n\
                      SQLITE_API SQLITE_EXTERN char *sqlite3_temp_directory;\n\
                      typedef struct sqlite3_stmt sqlite3_stmt;\n\
                      int sqlite3_not_api(void);\n";
        assert_eq!(
            sqlite_api(header),
            [
                "sqlite3_last_insert_rowid",
                "sqlite3_open",
                "sqlite3_temp_directory",
                "sqlite3_version"
            ]
        );
    }

    #[test]
    fn missing_interpreter_is_a_spawn_error() {
        let err = PythonConfig::probe(Path::new("/nonexistent/python3")).unwrap_err();
        assert!(matches!(err, PyConfigError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/python3"));
    }
}
