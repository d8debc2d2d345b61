//! The runner: the pykiln runtime linked with one interpreter and no archive, built
//! once with cargo and cached; every application is a copy of it with an archive
//! appended (see `pykiln_archive::trailer`).
//!
//! Where its source comes from: when this CLI was built from a pykiln checkout (`cargo
//! install --path crates/pykiln-cli`) and the checkout is still there, the runner is
//! built from that checkout's `crates/pykiln-runner` with its Cargo.lock (`--locked`),
//! and the runtime's sources are part of the cache key, so a changed runtime gives a new
//! runner. Otherwise it is `cargo install pykiln-runner --version =<this version>` from
//! crates.io. Either way the key also holds the interpreter (path, version, static
//! library) and the target; the binary is verified against its recorded SHA-256 before
//! each use, and rebuilt if it does not match.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pykiln_pyconfig::PythonConfig;
use sha2::{Digest as _, Sha256};

/// The target triple this CLI (and so the runner it builds) is for.
pub const TARGET: &str = env!("PYKILN_TARGET");

/// What the runner's bundled SQLite is compiled with: the math functions a stock
/// `./configure` build has (this repository's .cargo/config.toml sets the same for
/// cargo-built binaries; a crates.io build would not see it).
const SQLITE_FLAGS: &str = "-DSQLITE_ENABLE_MATH_FUNCTIONS";

/// A runner ready to copy.
pub struct Runner {
    /// The executable.
    pub path: PathBuf,
    /// How long building it took, when this call built it.
    pub built_in: Option<Duration>,
}

/// The checkout this CLI was built from, if it is still there.
fn checkout_runner_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .join("pykiln-runner");
    dir.join("Cargo.toml").is_file().then_some(dir)
}

/// Hash of every file under the runtime crates of the checkout (and the lock file):
/// a runtime edited since the last runner build gives another key.
fn checkout_fingerprint(runner_dir: &Path) -> anyhow::Result<String> {
    let crates = runner_dir
        .parent()
        .context("the runner crate has no parent")?;
    let root = crates.parent().context("crates/ has no parent")?;
    let mut h = Sha256::new();
    let mut files = Vec::new();
    for name in [
        "pykiln",
        "pykiln-archive",
        "pykiln-glibc",
        "pykiln-pyconfig",
        "pykiln-runner",
    ] {
        collect_files(&crates.join(name), &mut files);
    }
    files.push(root.join("Cargo.lock"));
    files.push(root.join("Cargo.toml"));
    files.sort();
    for f in files {
        let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        h.update(
            f.strip_prefix(root)
                .unwrap_or(&f)
                .as_os_str()
                .as_encoded_bytes(),
        );
        h.update([0]);
        h.update(Sha256::digest(&bytes));
    }
    Ok(hex(&h.finalize()[..16]))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && e.file_name() != "target" => collect_files(&path, out),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What identifies an interpreter, however it was named (`python3`, `python3.11`,
/// `--python 3.11`, a symlink, a pyenv shim's target): its resolved executable.
fn interpreter_identity(python: &PythonConfig) -> PathBuf {
    std::fs::canonicalize(&python.executable).unwrap_or_else(|_| python.executable.clone())
}

/// The cache key of the runner for `python` (see the module docs): the interpreter as
/// it is (resolved executable, version, static library with its size and time), not
/// as it was named.
fn key(python: &PythonConfig, source: &str) -> String {
    let lib = python.static_library();
    let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
    let meta = std::fs::metadata(&lib).ok();
    let mtime = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    for part in [
        env!("CARGO_PKG_VERSION").to_string(),
        source.to_string(),
        interpreter_identity(python).display().to_string(),
        python.version.clone(),
        lib.display().to_string(),
        meta.map_or(0, |m| m.len()).to_string(),
        mtime.to_string(),
        TARGET.to_string(),
        SQLITE_FLAGS.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..16])
}

/// The Rust crates linked into runners (for the licenses and SBOM of what the CLI
/// builds): read with `cargo metadata` from the checkout's runner crate, or from the
/// crates.io source `cargo install` unpacked (so only once a runner was installed;
/// `None` before).
pub fn linked_crates() -> anyhow::Result<Option<Vec<pykiln_build::RustCrate>>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = match checkout_runner_dir() {
        Some(dir) => dir.join("Cargo.toml"),
        None => {
            let home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
            let unpacked = format!("pykiln-runner-{}", env!("CARGO_PKG_VERSION"));
            let found = home.and_then(|h| {
                std::fs::read_dir(h.join("registry").join("src"))
                    .ok()?
                    .flatten()
                    .map(|index| index.path().join(&unpacked).join("Cargo.toml"))
                    .find(|m| m.is_file())
            });
            match found {
                Some(m) => m,
                None => return Ok(None),
            }
        }
    };
    pykiln_build::rust_crates(Path::new(&cargo), &manifest, Some(TARGET)).map(Some)
}

/// The architecture of `python` when it is not this machine's (a cross build).
fn foreign_arch(python: &PythonConfig) -> Option<&'static str> {
    pykiln_pyconfig::foreign::foreign_arch(&python.executable)
}

/// pyo3's configuration file (`PYO3_CONFIG_FILE`) for `python`, as pyo3 would have
/// found it by running it: static CPython, linked by pykiln's build script.
fn pyo3_config(python: &PythonConfig) -> String {
    format!(
        "implementation=CPython\nversion={}.{}\nshared=false\nabi3=false\nlib_name={}\n\
         lib_dir={}\nexecutable={}\npointer_width=64\nbuild_flags=\n\
         suppress_build_script_link_lines=true\n",
        python.major,
        python.minor,
        python.link_name(),
        python.libpl.display(),
        python.executable.display(),
    )
}

/// Cargo can build for `target` only with that target's standard library: name what
/// to install when the toolchain has none (rustup's default has only the host's).
fn check_rust_std(target: &str) -> anyhow::Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .with_context(|| format!("running {}", Path::new(&rustc).display()))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let has_std = std::fs::read_dir(&libdir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"));
    if !out.status.success() || !has_std {
        bail!(
            "the Rust toolchain ({}) has no standard library for {target}: `rustup target add \
             {target}`, or set RUSTC to a rustc that has one (Debian 12: rustc-web with \
             libstd-rust-web-dev:{}, then RUSTC=/usr/bin/rustc)",
            Path::new(&rustc).display(),
            match target {
                "aarch64-unknown-linux-gnu" => "arm64",
                other => other,
            }
        );
    }
    Ok(())
}

/// Whether runners come from crates.io (this CLI was not built from a checkout that
/// is still there).
pub fn from_registry() -> bool {
    checkout_runner_dir().is_none()
}

/// The runner for `python`, from the cache or built now (`on_build` is told first,
/// with a description, so the caller can say it takes a while).
pub fn runner_for(
    python: &PythonConfig,
    cache: &Path,
    on_build: &mut dyn FnMut(&str),
) -> anyhow::Result<Runner> {
    let checkout = checkout_runner_dir();
    let source = match &checkout {
        Some(dir) => format!("checkout {}", checkout_fingerprint(dir)?),
        None => format!("crates.io pykiln-runner {}", env!("CARGO_PKG_VERSION")),
    };
    let key = key(python, &source);
    let dir = cache.join("runners").join(&key);
    let exe = dir.join("pykiln-runner");
    let stamp = dir.join("pykiln-runner.sha256");
    if let (Ok(want), true) = (std::fs::read_to_string(&stamp), exe.is_file()) {
        if pykiln_python::sources::file_sha256(&exe)? == want.trim() {
            // Last use, for pruning.
            let _ = std::fs::File::options()
                .write(true)
                .open(&stamp)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(Runner {
                path: exe,
                built_in: None,
            });
        }
        eprintln!(
            "pykiln: the cached runner {} does not match its checksum: building it again",
            exe.display()
        );
    }
    on_build(&format!(
        "building the runner for Python {} ({}; once per interpreter and pykiln version, cached in {})",
        python.version,
        python.executable.display(),
        dir.display()
    ));
    let started = Instant::now();
    let interp_key = interpreter_key(interpreter_identity(python).as_os_str().as_encoded_bytes());
    let target_dir = runner_target_dir(&cache.join("runners"), &interp_key);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = dir.join("build.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    // An interpreter pykiln built is linked as it was: by zig, against its old glibc
    // (cargo-zigbuild, from the interpreter's toolchain).
    let zig = python.portable.as_ref();
    let mut cmd = match zig {
        Some(p) => {
            let tools = pykiln_python::toolchain::Toolchain {
                dir: p.toolchain.clone(),
            };
            tools.ensure_shims()?;
            let mut c = Command::new(tools.shims().join("cargo-zigbuild"));
            let path = std::env::var_os("PATH").unwrap_or_default();
            let paths = std::iter::once(tools.shims()).chain(std::env::split_paths(&path));
            c.env("PATH", std::env::join_paths(paths)?);
            c
        }
        None => Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())),
    };
    // The same profile as the workspace's release profile, also for a crates.io build
    // (which does not see it).
    let profile = [
        "--config",
        "profile.release.strip=\"symbols\"",
        "--config",
        "profile.release.panic=\"abort\"",
        "--config",
        "profile.release.debug=false",
    ];
    let target_args: Vec<String> = zig
        .map(|p| vec!["--target".to_string(), p.zig_target()])
        .unwrap_or_default();
    let built = match &checkout {
        Some(runner_dir) => {
            cmd.arg(if zig.is_some() { "zigbuild" } else { "build" })
                .args(profile)
                .args([
                    "--release",
                    "--locked",
                    "--bin",
                    "pykiln-runner",
                    "--manifest-path",
                ])
                .arg(runner_dir.join("Cargo.toml"))
                .args(&target_args)
                .arg("--target-dir")
                .arg(&target_dir);
            match zig {
                Some(p) => target_dir.join(&p.target).join("release"),
                None => target_dir.join("release"),
            }
            .join("pykiln-runner")
        }
        None => {
            cmd.arg("install")
                .args(profile)
                .args(["pykiln-runner", "--locked", "--force", "--version"])
                .arg(format!("={}", env!("CARGO_PKG_VERSION")))
                .args(&target_args)
                .arg("--root")
                .arg(dir.join("install"))
                .arg("--target-dir")
                .arg(&target_dir);
            dir.join("install").join("bin").join("pykiln-runner")
        }
    };
    // pyo3 and pykiln's build script pick the interpreter from PYO3_PYTHON first.
    if let Some(root) = checkout.as_ref().and_then(|d| d.parent()?.parent()) {
        // Cargo reads .cargo/config.toml from the current directory up.
        cmd.current_dir(root);
    }
    cmd.env("PYO3_PYTHON", &python.executable)
        .env("LIBSQLITE3_FLAGS", SQLITE_FLAGS)
        .env_remove("PYO3_CONFIG_FILE")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    if let Some(p) = zig.filter(|_| foreign_arch(python).is_some()) {
        check_rust_std(&p.target)?;
        // pyo3 cannot run another CPU's interpreter to learn its configuration (pykiln's
        // own build script can: under qemu-user), so it is written out for it.
        let config = dir.join("pyo3-config.txt");
        std::fs::write(&config, pyo3_config(python))
            .with_context(|| format!("writing {}", config.display()))?;
        cmd.env("PYO3_CONFIG_FILE", &config);
    }
    let status = cmd
        .status()
        .context("running cargo to build the runner (is Rust installed? https://rustup.rs)")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "building the runner failed ({status}); the last lines of {}:\n  {}",
            log.display(),
            tail.join("\n  ")
        );
    }
    let bytes = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    write_atomic(&exe, &bytes, 0o755)?;
    write_atomic(&stamp, hex(&Sha256::digest(&bytes)).as_bytes(), 0o644)?;
    let owner = dir.join("python");
    write_atomic(
        &owner,
        interpreter_identity(python).as_os_str().as_encoded_bytes(),
        0o644,
    )?;
    prune_runners(&cache.join("runners"), &owner);
    sweep_orphaned(cache);
    Ok(Runner {
        path: exe,
        built_in: Some(started.elapsed()),
    })
}

/// Runners kept per interpreter: each runtime change (in a checkout) or pykiln version
/// makes a new one (~10 MB); the least recently used beyond these are removed.
const RUNNERS_KEPT: usize = 3;

/// Remove the least recently used runners of the interpreter `owner` names.
fn prune_runners(root: &Path, owner: &Path) {
    let Ok(me) = std::fs::read(owner) else { return };
    let mut mine: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|d| std::fs::read(d.join("python")).is_ok_and(|p| p == me))
        .filter_map(|d| {
            let used = std::fs::metadata(d.join("pykiln-runner.sha256"))
                .and_then(|m| m.modified())
                .ok()?;
            Some((used, d))
        })
        .collect();
    mine.sort();
    let excess = mine.len().saturating_sub(RUNNERS_KEPT);
    for (_, dir) in mine.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The build directory kept for rebuilding the runners of one interpreter (its
/// compiled dependencies: hundreds of MB).
fn runner_target_dir(root: &Path, interp_key: &str) -> PathBuf {
    root.join("target").join(interp_key)
}

/// The key of an interpreter's build directory: a hash of its identity (the bytes a
/// runner's `python` file records).
fn interpreter_key(identity: &[u8]) -> String {
    hex(&Sha256::digest(identity)[..8])
}

/// Remove the runners of interpreters that no longer exist (a removed `pykiln python`
/// installation, an uninstalled pyenv or distribution Python) and the build directory
/// kept for each: nothing can use them again. A runner still being built has no
/// `python` record yet and is left alone. Returns the bytes freed.
pub fn sweep_orphaned(cache: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let root = cache.join("runners");
    let mut freed = 0;
    for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let dir = e.path();
        let Ok(identity) = std::fs::read(dir.join("python")) else {
            continue;
        };
        if identity.is_empty() || Path::new(std::ffi::OsStr::from_bytes(&identity)).exists() {
            continue;
        }
        for d in [runner_target_dir(&root, &interpreter_key(&identity)), dir] {
            let size = pykiln_python::disk_usage(&d);
            if std::fs::remove_dir_all(&d).is_ok() {
                freed += size;
            }
        }
    }
    freed
}

/// Write a whole file under a temporary name beside it, with `mode`, then rename.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    pykiln_build::write_atomic_mode(path, bytes, Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--python 3.11` once built a second runner for the very interpreter `python3`
    /// had: the key followed the name it was reached by (issue 25).
    #[test]
    fn the_runner_key_follows_the_interpreter_not_its_name() {
        let Ok(python) = PythonConfig::discover() else {
            return; // no interpreter with a static library here: nothing to key
        };
        let dir = tempfile::tempdir().unwrap();
        // Another name for the same interpreter: a symlink, as `python3` is to
        // `python3.11` in pyenv and distributions.
        let alias = dir.path().join("python-alias");
        let real = std::fs::canonicalize(&python.executable).unwrap();
        std::os::unix::fs::symlink(&real, &alias).unwrap();
        let mut aliased = python.clone();
        aliased.executable = alias;
        assert_eq!(key(&python, "s"), key(&aliased, "s"));
        assert_ne!(
            key(&python, "s"),
            key(&python, "t"),
            "the runtime's source counts"
        );
    }

    #[test]
    fn only_the_most_recently_used_runners_of_an_interpreter_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let make = |name: &str, python: &str, age_s: u64| {
            let d = root.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("python"), python).unwrap();
            let stamp = d.join("pykiln-runner.sha256");
            std::fs::write(&stamp, "x").unwrap();
            let t = std::time::SystemTime::now() - Duration::from_secs(age_s);
            std::fs::File::options()
                .write(true)
                .open(&stamp)
                .unwrap()
                .set_modified(t)
                .unwrap();
            d
        };
        let old = make("a", "/py3.11", 500);
        let older = make("b", "/py3.11", 900);
        let kept: Vec<PathBuf> = [100, 200, 300]
            .iter()
            .enumerate()
            .map(|(i, age)| make(&format!("k{i}"), "/py3.11", *age))
            .collect();
        let other = make("c", "/py3.12", 9000);
        prune_runners(root.path(), &kept[0].join("python"));
        assert!(!old.exists() && !older.exists());
        assert!(kept.iter().all(|d| d.exists()) && other.exists());
    }

    #[test]
    fn runners_of_interpreters_that_are_gone_are_swept_with_their_build_dirs() {
        let cache = tempfile::tempdir().unwrap();
        let root = cache.path().join("runners");
        let live_python = cache.path().join("python3.11");
        std::fs::write(&live_python, "").unwrap();
        let make = |name: &str, identity: &[u8]| {
            let runner = root.join(name);
            std::fs::create_dir_all(&runner).unwrap();
            std::fs::write(runner.join("python"), identity).unwrap();
            std::fs::write(runner.join("pykiln-runner"), vec![0u8; 1000]).unwrap();
            let target = runner_target_dir(&root, &interpreter_key(identity));
            std::fs::create_dir_all(target.join("release")).unwrap();
            std::fs::write(target.join("release/dep.rlib"), vec![0u8; 3000]).unwrap();
            (runner, target)
        };
        let missing = b"/nonexistent/pykiln-test/python3.11";
        let (gone, gone_target) = make("a", missing);
        let (live, live_target) = make("b", live_python.as_os_str().as_encoded_bytes());
        // Being built: no record yet.
        std::fs::create_dir_all(root.join("c")).unwrap();
        // The runner, its record and its build directory.
        assert_eq!(sweep_orphaned(cache.path()), 4000 + missing.len() as u64);
        assert!(!gone.exists() && !gone_target.exists());
        assert!(live.exists() && live_target.exists() && root.join("c").exists());
        assert_eq!(sweep_orphaned(cache.path()), 0);
    }
}
