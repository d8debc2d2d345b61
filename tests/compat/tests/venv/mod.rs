//! Venvs the compatibility tests compare the packed binaries with: made by the
//! interpreter the runtime embeds, cached under the pykiln cache by what they hold.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use pykiln_test_support::{self as support, CommandExt as _};

/// Run `cmd` (bounded by [`support::LONG`]: pip downloads); its stdout, or a failure
/// naming `what` with everything it printed.
pub fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output_within(support::LONG);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pykiln cache directory, as the build finds it.
pub fn cache_root() -> PathBuf {
    std::env::var_os("PYKILN_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| Path::new(&x).join("pykiln")))
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache/pykiln")
        })
}

/// `<cache>/compat/<name>-<python version>-<digest of key>`: a venv in which
/// `pip install <install…>` ran once; its directory.
pub fn cached(name: &str, key: &[u8], install: &[&OsStr]) -> PathBuf {
    let python = pykiln_pyconfig::PythonConfig::discover().expect("the build's Python");
    let digest = key.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    let dir = cache_root().join(format!("compat/{name}-{}-{digest:016x}", python.version));
    if !dir.join(".complete").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        run(
            Command::new(&python.interpreter)
                .arg("-m")
                .arg("venv")
                .arg(&dir),
            "python -m venv",
        );
        run(
            Command::new(dir.join("bin/python"))
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(install),
            "pip install",
        );
        std::fs::write(dir.join(".complete"), b"").unwrap();
    }
    dir
}
