//! Link the embedded CPython statically and whole: extension modules loaded at run time
//! resolve their `Py*` symbols against the executable, so every object of libpython
//! must be present (pykiln-build links the final binary exporting the `Py*` symbols).

use std::path::Path;

use pykiln_pyconfig::{PythonConfig, SELECTING_ENV};

fn main() {
    for var in SELECTING_ENV {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let cfg = match PythonConfig::discover() {
        Ok(cfg) => cfg,
        Err(e) => {
            // A build script's panic shows as a backtrace-free error with this text.
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    check_pyo3_agrees(&cfg);
    println!("cargo:rerun-if-changed={}", cfg.static_library().display());
    println!("cargo:rustc-link-search=native={}", cfg.libpl.display());
    // `-bundle`: keep libpython out of this rlib so the final link sees the archive
    // itself and can apply `--whole-archive` to it.
    println!(
        "cargo:rustc-link-lib=static:+whole-archive,-bundle={}",
        cfg.link_name()
    );
    link_dependencies(&cfg);
    compile_support(&cfg.interpreter);
    write_exports();
    if linker_is_zig() {
        write_export_stub(&cfg);
    }
    link_position_dependent_if_needed(&cfg);
    println!("cargo:rustc-env=PYKILN_PYTHON_VERSION={}", cfg.version);
    println!("cargo:rustc-env=PYKILN_PYTHON_MINOR={}", cfg.minor);
    // Downstream build scripts (pykiln-build's caller) can check they pack the same Python.
    println!("cargo:python_version={}", cfg.version);
}

/// The symbols the executable exports to the extension modules it loads: the Python C
/// API and the bundled SQLite's. Not everything (`--export-dynamic`): exported symbols
/// are kept by the linker even when unused (zstd's compressor, ~0.5 MB), make every
/// symbol lookup of a loading extension search a bigger table, and would interpose on
/// same-named symbols inside extensions (a wheel with its own zstd or xxhash).
const EXPORTS: &str = "{\n  Py*;\n  _Py*;\n  sqlite3_*;\n};\n";

/// Write the linker's dynamic list and hand its path to the build scripts of crates
/// that depend on this one (`DEP_PYKILN_PYTHON_EXPORTS`): a build script cannot add
/// link arguments to another package's binaries, so the binary crate's build script
/// passes `-Wl,--dynamic-list=<it>` (pykiln-build does, and the runner's).
fn write_exports() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default())
        .join("pykiln-exports.list");
    if let Err(e) = std::fs::write(&out, EXPORTS) {
        eprintln!("error: writing {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("cargo:exports={}", out.display());
}

/// Whether the target's linker is `zig cc` (cargo-zigbuild's wrapper, used to link
/// against an old glibc, see pykiln-python): it refuses `--dynamic-list`.
fn linker_is_zig() -> bool {
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    std::env::var_os("RUSTC_LINKER")
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().contains("zig")))
        .unwrap_or(false)
}

/// For a `zig cc` link, the same exports as [`EXPORTS`] by another route: a shared
/// library that only references those symbols. The linker exports from the
/// executable every symbol a linked shared library references, and with `--as-needed`
/// the stub itself is not recorded as needed (it exists only at link time). Its path
/// goes to the binaries' build scripts as `DEP_PYKILN_PYTHON_EXPORT_STUB`.
fn write_export_stub(cfg: &PythonConfig) {
    let fail = |what: String| -> ! {
        eprintln!("error: {what}");
        std::process::exit(1);
    };
    let lib = std::fs::read(cfg.static_library())
        .unwrap_or_else(|e| fail(format!("reading {}: {e}", cfg.static_library().display())));
    let mut names = pykiln_pyconfig::exported_definitions(&lib, &["Py", "_Py"])
        .unwrap_or_else(|e| fail(format!("{}: {e}", cfg.static_library().display())));
    // The bundled SQLite's API, as its header declares it.
    if let Some(include) = std::env::var_os("DEP_SQLITE3_INCLUDE") {
        let header = std::path::Path::new(&include).join("sqlite3.h");
        let text = std::fs::read_to_string(&header)
            .unwrap_or_else(|e| fail(format!("reading {}: {e}", header.display())));
        names.extend(pykiln_pyconfig::sqlite_api(&text));
    }
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let source = out.join("pykiln-export-stub.c");
    let mut c = String::new();
    for n in &names {
        c.push_str(&format!("extern char {n}[];\n"));
    }
    c.push_str("void *pykiln_export_stub[] = {\n");
    for n in &names {
        c.push_str(&format!("  {n},\n"));
    }
    c.push_str("};\n");
    if let Err(e) = std::fs::write(&source, c) {
        fail(format!("writing {}: {e}", source.display()));
    }
    let stub = out.join("libpykiln-export-stub.so");
    let linker = std::env::var_os("RUSTC_LINKER").unwrap_or_default();
    let status = std::process::Command::new(&linker)
        .args([
            "-shared",
            "-fPIC",
            "-w",
            "-Wl,-soname,libpykiln-export-stub.so",
            "-o",
        ])
        .arg(&stub)
        .arg(&source)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        fail(format!(
            "{} could not build the export stub {} ({status:?})",
            std::path::Path::new(&linker).display(),
            stub.display()
        ));
    }
    println!("cargo:export_stub={}", stub.display());
}

/// The libraries libpython needs, statically where pykiln-pyconfig's plan says so
/// (libraries of modules built into a distribution's libpython).
fn link_dependencies(cfg: &PythonConfig) {
    for lib in cfg.link_plan() {
        match lib.static_archive.as_deref().and_then(Path::parent) {
            Some(dir) => {
                println!("cargo:rustc-link-search=native={}", dir.display());
                println!("cargo:rustc-link-lib=static:-bundle={}", lib.name);
            }
            None => println!("cargo:rustc-link-lib={}", lib.name),
        }
    }
}

/// A static library compiled without `-fPIC` (Debian's and Ubuntu's `python3.X-dev`)
/// links only into a position-dependent executable: tell the binaries' build scripts
/// (`DEP_PYKILN_PYTHON_PIE=0`, read by pykiln-build and the runner), and link this
/// crate's own tests that way.
fn link_position_dependent_if_needed(cfg: &PythonConfig) {
    let pic = match cfg.static_library_is_pic() {
        Ok(pic) => pic,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("cargo:pie={}", u8::from(pic));
    if !pic {
        println!("cargo:rustc-link-arg=-no-pie");
    }
}

/// pyo3 chooses its interpreter on its own (`PYO3_PYTHON`, `PYO3_CONFIG_FILE`, PATH);
/// pykiln-pyconfig makes the same choice for the library it links. If they differ,
/// pyo3's idea of the C API (struct layouts, `PyConfig` fields) is another CPython's
/// than the one in the binary: refuse to build.
fn check_pyo3_agrees(cfg: &PythonConfig) {
    println!("cargo:rerun-if-env-changed=PYO3_CONFIG_FILE");
    let pyo3 = pyo3_build_config::get();
    let ours = (cfg.major as u8, cfg.minor as u8);
    let version = pyo3.version();
    let theirs = (version.major, version.minor);
    let problem = if pyo3.implementation() != pyo3_build_config::PythonImplementation::CPython {
        Some(format!("pyo3 is configured for {}", pyo3.implementation()))
    } else if matches!(
        pyo3.target_abi().kind(),
        pyo3_build_config::PythonAbiKind::Stable(_)
    ) {
        (theirs > ours).then(|| {
            format!(
                "pyo3 targets the stable ABI of Python {}.{}, newer than the linked {}",
                theirs.0, theirs.1, cfg.version
            )
        })
    } else {
        (theirs != ours).then(|| {
            format!(
                "pyo3 is configured for Python {}.{} ({}) but pykiln links {} ({})",
                theirs.0,
                theirs.1,
                pyo3.executable().unwrap_or("from PYO3_CONFIG_FILE"),
                cfg.version,
                cfg.interpreter.display()
            )
        })
    };
    if let Some(problem) = problem {
        eprintln!(
            "error: {problem}. Point PYO3_PYTHON (or PYO3_CONFIG_FILE) and pykiln at the same \
             interpreter."
        );
        std::process::exit(1);
    }
}

/// Compile the runtime's support module with the interpreter being linked (marshal
/// data is specific to its version), so start-up unmarshals it instead of compiling
/// its source (~1.5 ms).
fn compile_support(python: &std::path::Path) {
    const SOURCE: &str = "python/_pykiln_support.py";
    println!("cargo:rerun-if-changed={SOURCE}");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default())
        .join("_pykiln_support.marshal");
    let script = "import marshal, sys\n\
                  src = open(sys.argv[1], encoding='utf-8').read()\n\
                  code = compile(src, '<pykiln>/_pykiln_support.py', 'exec', dont_inherit=True)\n\
                  open(sys.argv[2], 'wb').write(marshal.dumps(code))\n";
    // Another CPU's interpreter runs under qemu-user, or its twin compiles (marshal
    // data depends on the version only).
    let mut cmd = match pykiln_pyconfig::foreign::script_command(python) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let status = cmd
        .args(["-I", "-S", "-c", script, SOURCE])
        .arg(&out)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!(
            "error: {} could not compile {SOURCE} ({status:?})",
            python.display()
        );
        std::process::exit(1);
    }
}
