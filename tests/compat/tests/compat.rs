//! The compatibility corpus: every module of ~50 popular distributions imports in the
//! packed binary, and `compat_smoke` prints the same JSON packed as in a venv holding
//! the same distributions (built once per corpus and interpreter, cached).

#[path = "../../common/sandbox.rs"]
mod sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pykiln-compat"))
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A copy of the corpus project: pip writes build/ and egg-info next to the sources.
fn corpus_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in sandbox::walk(&corpus()) {
        let rel = e.strip_prefix(corpus()).unwrap();
        let s = rel.to_string_lossy();
        if s.starts_with("build") || s.contains("egg-info") || s.contains("__pycache__") {
            continue;
        }
        let dest = tmp.path().join(rel);
        if e.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&e, &dest).unwrap();
        }
    }
    tmp
}

/// A venv with the corpus installed, by the interpreter the binary embeds.
fn venv() -> PathBuf {
    let project = corpus_copy();
    let python = pykiln_pyconfig::PythonConfig::discover().expect("the build's Python");
    let cache = std::env::var_os("PYKILN_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| Path::new(&x).join("pykiln")))
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache/pykiln")
        });
    let pyproject = std::fs::read(corpus().join("pyproject.toml")).unwrap();
    let key = format!(
        "{:016x}",
        pyproject
            .iter()
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b))
                .wrapping_mul(0x100000001b3))
    );
    let dir = cache.join(format!("compat/venv-{}-{key}", python.version));
    let py = dir.join("bin/python");
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
            Command::new(&py)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .arg(project.path()),
            "pip install corpus",
        );
        std::fs::write(dir.join(".complete"), b"").unwrap();
    }
    // The smoke package itself changes more often than its pins: reinstall it.
    run(
        Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--force-reinstall",
            ])
            .arg(project.path()),
        "pip install compat-smoke",
    );
    py
}

/// Same clean environment for both sides; a fresh HOME, so on-disk views are written.
fn clean(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .current_dir(home);
}

fn results(text: &str, what: &str) -> serde_json::Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => panic!("{what} printed no JSON object:\n{text}"),
    }
}

/// Every packed module imports; one that blocks at import is skipped as hanging and
/// the run goes on; a script whose name is not an identifier is never imported.
#[test]
fn verify_imports_every_packed_module() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("echo-server-ran");
    let out = run(
        Command::new(binary())
            .args(["--pykiln", "verify", "--import-timeout", "5"])
            .env("COMPAT_ECHO_MARKER", &marker),
        "--pykiln verify",
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("SKIP compat_smoke.hangs_on_import: hangs on import")),
        "{out}"
    );
    assert!(!marker.exists(), "verify imported echo-server.py");
    let summary = out.lines().last().unwrap_or_default();
    assert!(summary.ends_with(" 0 failed"), "{out}");
    let imported: usize = summary
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(imported > 2000, "{summary}");
}

/// compat_plugins lists its own directory to find its plugins and names no data file:
/// the build must give it an on-disk view on its own, and say why (issue 15.5).
#[test]
fn a_package_that_lists_its_directory_gets_a_view() {
    let info = run(
        Command::new(binary()).args(["--pykiln", "info"]),
        "--pykiln info",
    );
    let info: Value = serde_json::from_str(&info).expect("info is JSON");
    let group = info["on_disk"]
        .as_array()
        .and_then(|g| {
            g.iter().find(|g| {
                g["tops"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "compat_plugins"))
            })
        })
        .unwrap_or_else(|| panic!("no view for compat_plugins: {}", info["on_disk"]));
    assert!(
        group["reason"]
            .as_str()
            .is_some_and(|r| r.contains("lists its own directory")),
        "{group}"
    );
}

#[test]
fn smoke_checks_match_a_venv() {
    let python = venv();
    let home = tempfile::tempdir().unwrap();
    let mut v = Command::new(&python);
    v.args(["-m", "compat_smoke"]);
    clean(&mut v, home.path());
    let venv = results(&run(&mut v, "venv compat_smoke"), "venv");
    let home2 = tempfile::tempdir().unwrap();
    let mut p = Command::new(binary());
    clean(&mut p, home2.path());
    let packed = results(&run(&mut p, "packed compat_smoke"), "binary");

    assert!(venv.len() >= 60, "only {} checks ran", venv.len());
    let broken: Vec<_> = venv
        .iter()
        .filter(|(_, v)| v.as_str().is_some_and(|s| s.starts_with("ERROR")))
        .collect();
    assert!(
        broken.is_empty(),
        "checks that fail in the venv itself: {broken:?}"
    );
    let differ: Vec<String> = venv
        .iter()
        .filter(|(k, v)| packed.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}:\n  venv:   {v}\n  packed: {:?}", packed.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "packed differs from venv:\n{}",
        differ.join("\n")
    );
    // The on-disk views were written under the fresh HOME, nowhere else.
    assert!(home2.path().join(".cache/pykiln/files").is_dir());
}

#[test]
fn file_views_tzdata_and_processes_work_in_a_root_without_python() {
    if sandbox::bwrap().is_none() {
        return;
    }
    let root = sandbox::make_root(&binary(), "pykiln-compat");
    assert!(!root.path().join("usr/share/zoneinfo").exists());
    let checks = [
        "tzdata_zoneinfo",
        "pytz",
        "babel",
        "glfw",
        "soundfile",
        "numpy_",
        "multiprocessing_",
        "file_relative",
        "certifi",
    ];
    let mut cmd = sandbox::command(root.path(), "pykiln-compat", &[], &checks);
    let out = results(&run(&mut cmd, "compat_smoke in the sandbox"), "sandbox");
    for name in checks {
        let v = &out[name];
        assert!(
            !v.as_str().is_some_and(|s| s.starts_with("ERROR")),
            "{name}: {v}"
        );
    }
    assert_eq!(out["tzdata_zoneinfo"][0], "-1 day, 19:00:00");
    assert_eq!(out["tzdata_zoneinfo"][1], "TZif");
}

/// On-disk views are checked before each process uses them: a truncated or edited
/// library is written again, and a view that another user planted (in a cache
/// location they control) is refused, its code never run.
#[test]
fn damaged_or_planted_file_views_are_never_used() {
    let home = tempfile::tempdir().unwrap();
    // soundfile loads libsndfile from the `_soundfile_data` package's directory.
    let probe = "import soundfile, _soundfile_data, glob, os; print(soundfile.__libsndfile_version__, \
                 *glob.glob(os.path.join(_soundfile_data.__path__[0], '*.so')))";
    let run_probe = |env: &[(&str, &Path)]| {
        let mut cmd = Command::new(binary());
        clean(&mut cmd, home.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(["--pykiln", "python", "-c", probe])
            .output()
            .unwrap()
    };
    let first = run_probe(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let lib: PathBuf = String::from_utf8_lossy(&first.stdout)
        .split_whitespace()
        .nth(1)
        .expect("library path")
        .into();
    assert!(
        lib.starts_with(home.path().join(".cache/pykiln/files")),
        "{lib:?}"
    );
    let good = std::fs::read(&lib).unwrap();

    // Truncated (a crash of an old writer, a full disk), or edited in place with the
    // same size (only the digest tells): repaired either way.
    let mut edited = good.clone();
    let n = edited.len();
    edited[n - 1] ^= 0xff;
    for (damage, bytes) in [("truncated", &good[..n / 2]), ("edited", &edited[..])] {
        std::fs::write(&lib, bytes).unwrap();
        let again = run_probe(&[]);
        assert!(
            again.status.success(),
            "{damage}: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert_eq!(
            std::fs::read(&lib).unwrap(),
            good,
            "{damage} library rewritten"
        );
    }

    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    // Another user (nobody) controls XDG_CACHE_HOME and plants a complete view, the
    // real marker included, with a library whose constructor leaves a mark.
    let shared = tempfile::tempdir().unwrap();
    let sp = shared.path();
    std::fs::set_permissions(sp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mark = sp.join("PWNED");
    let src = sp.join("evil.c");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void pwn(void) {{ FILE *f = fopen(\"{}\", \"w\"); if (f) fclose(f); }}\n",
            mark.display()
        ),
    )
    .unwrap();
    let xdg = sp.join("xdg");
    let cache_root = home.path().join(".cache/pykiln");
    let rel = lib.strip_prefix(&cache_root).unwrap();
    let planted = xdg.join("pykiln").join(rel);
    std::fs::create_dir_all(xdg.join("pykiln/files")).unwrap();
    let view_rel: PathBuf = rel.iter().take(2).collect();
    let status = Command::new("cp")
        .arg("-a")
        .arg(cache_root.join(&view_rel))
        .arg(xdg.join("pykiln/files/"))
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&planted)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&xdg)
        .status()
        .unwrap();
    assert!(status.success());
    let out = run_probe(&[("XDG_CACHE_HOME", &xdg)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!mark.exists(), "the planted library ran:\n{stderr}");
    assert!(!out.status.success(), "used a cache another user owns");
    assert!(
        stderr.contains("refusing cache directory") && stderr.contains(&*xdg.to_string_lossy()),
        "{stderr}"
    );
}
