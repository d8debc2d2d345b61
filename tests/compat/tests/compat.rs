//! The compatibility corpus: every module of ~50 popular distributions imports in the
//! packed binary, and `compat_smoke` prints the same JSON packed as in a venv holding
//! the same distributions (built once per corpus and interpreter, cached).

#[path = "../../common/sandbox.rs"]
mod sandbox;
mod venv;

use venv::run;

use pykiln_test_support::{self as support, CommandExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pykiln-compat"))
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
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
    let pyproject = std::fs::read(corpus().join("pyproject.toml")).unwrap();
    let dir = venv::cached("venv", &pyproject, &[project.path().as_os_str()]);
    let py = dir.join("bin/python");
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
    // olefile's Python 2 module: packed as source, skipped with the reason.
    assert!(
        out.lines().any(
            |l| l.starts_with("SKIP olefile.olefile2: does not compile on Python 3.")
                && l.contains("SyntaxError: invalid hexadecimal literal (line 277)")
        ),
        "{out}"
    );
    let summary = out.lines().last().unwrap_or_default();
    assert!(summary.ends_with(" 0 failed"), "{out}");
    let imported: usize = summary
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(imported > 2000, "{summary}");
}

/// compat_plugins lists its own directory to find its plugins: Python's parser finds
/// it in the build (issue 15.5, issue 25), and the view's reason says so.
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
            .is_some_and(|r| r.contains("compat_plugins/__init__.py:13 lists its own directory")),
        "{group}"
    );
}

/// The build's on-disk view decisions on real distributions, labelled (issues 10.3 and
/// 25). Since issue 25 every distribution that ships runtime data files gets a view,
/// whatever its code does with them: no analysis keeps up with the ways code builds a
/// path (`with_name`, `dirname(dirname(...))`, a helper elsewhere, a C library given the
/// path), and a view that turns out unneeded costs a few kB to a few MB written once,
/// where a missing one is a server that dies. Distributions made only of code stay in
/// memory unless Python's parser or the build's import of the server sees them reach
/// their directory by path.
#[test]
fn views_match_the_labelled_corpus() {
    // (distribution, a view prefix, why it needs a real path)
    const NEEDED: &[(&str, &str, &str)] = &[
        (
            "babel",
            "babel",
            "reads global.dat and locale-data/ beside __file__",
        ),
        (
            "compat_smoke",
            "compat_plugins",
            "lists its own directory for plugins",
        ),
        (
            "compat_smoke",
            "compat_smoke",
            "opens data.json beside __file__",
        ),
        (
            "docutils",
            "docutils.writers.html4css1",
            "opens its stylesheets by path",
        ),
        ("glfw", "glfw", "ctypes loads libglfw.so by path"),
        (
            "lxml",
            "lxml.isoschematron",
            "parses its .rng/.xsl resources by path",
        ),
        ("pytz", "pytz", "opens zoneinfo/ files by path"),
        (
            "soundfile",
            "_soundfile_data",
            "cffi dlopens libsndfile by path",
        ),
        (
            "tokenizers",
            "tokenizers.tools",
            "reads visualizer-styles.css at import",
        ),
        (
            "certifi",
            "certifi",
            "where() hands its cacert.pem path to ssl and requests",
        ),
        (
            "cffi",
            "cffi",
            "code only, but its recompiler reads its C headers by path (Python's parser finds it)",
        ),
    ];
    // (distribution, a view prefix, the data that gives it a view by default)
    const BY_DEFAULT: &[(&str, &str, &str)] = &[
        (
            "jsonschema_specifications",
            "jsonschema_specifications",
            "JSON schemas (read through importlib.resources today)",
        ),
        ("markdown_it_py", "markdown_it", "port.yaml"),
        ("olefile", "olefile", "olefile.html, its documentation"),
        (
            "pycparser",
            "pycparser",
            "_c_ast.cfg (read only by its __main__ block)",
        ),
        (
            "python_dateutil",
            "dateutil",
            "its zoneinfo tarball (read through pkgutil.get_data today)",
        ),
        ("tqdm", "tqdm", "completion.sh and its man page"),
        ("tzdata", "tzdata", "the IANA zone files zoneinfo reads"),
        ("urllib3", "urllib3", "the emscripten fetch worker script"),
    ];
    // (module, why it stays in memory: code only, and no path use found)
    const NOT_NEEDED: &[(&str, &str)] = &[
        (
            "google._upb._message",
            "an abi3 extension module, not a library loaded by path",
        ),
        ("google.protobuf", "pure Python beside that extension"),
        (
            "numpy",
            "its C headers, pkg-config files and API_CHANGES.txt are build inputs and docs",
        ),
        (
            "numpy.f2py._backends._meson",
            "build tooling: f2py needs a Fortran compiler",
        ),
        (
            "sqlalchemy",
            "its only other file is type_migration_guidelines.txt",
        ),
        (
            "greenlet",
            "ships only Windows build files besides its code",
        ),
        (
            "aiohttp",
            "ships only Cython source hashes besides its code",
        ),
        ("jinja2", "code only"),
    ];
    let info = run(
        Command::new(binary()).args(["--pykiln", "info"]),
        "--pykiln info",
    );
    let info: Value = serde_json::from_str(&info).expect("info is JSON");
    let groups = info["on_disk"].as_array().expect("on_disk is a list");
    let covers = |module: &str| {
        groups.iter().find(|g| {
            g["tops"].as_array().is_some_and(|tops| {
                tops.iter()
                    .filter_map(Value::as_str)
                    .any(|t| module == t || module.starts_with(&format!("{t}.")))
            })
        })
    };
    for (dist, prefix, why) in NEEDED.iter().chain(BY_DEFAULT) {
        let group = covers(prefix).unwrap_or_else(|| panic!("no view for {prefix} ({why})"));
        assert_eq!(group["name"], *dist, "{group}");
    }
    for (module, why) in NOT_NEEDED {
        assert!(
            covers(module).is_none(),
            "{module} got a view but {why}: {}",
            info["on_disk"]
        );
    }
    let names: std::collections::BTreeSet<&str> =
        groups.iter().filter_map(|g| g["name"].as_str()).collect();
    let expected: std::collections::BTreeSet<&str> = NEEDED
        .iter()
        .chain(BY_DEFAULT)
        .map(|(d, _, _)| *d)
        .collect();
    assert_eq!(
        names, expected,
        "views beyond the labelled corpus: label them"
    );
}

/// `importlib.resources` and `pkgutil.get_data` list and read module files like a venv;
/// reading one whose source is not packed says which option packs it.
#[test]
fn module_files_without_packed_source_say_how_to_pack_them() {
    let code = r#"
import pkgutil
from importlib import resources
for read in (lambda: (resources.files("jinja2") / "utils.py").read_bytes(),
             lambda: pkgutil.get_data("jinja2", "utils.py")):
    try:
        read()
        print("read")
    except FileNotFoundError as e:
        print("error:", e)
print(len((resources.files("markdown") / "core.py").read_text()) > 1000)
"#;
    let out = run(
        Command::new(binary()).args(["-c", code]),
        "pykiln-compat -c",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for line in &lines[..2] {
        assert!(
            line.starts_with("error:")
                && line.contains("source of module jinja2.utils is not packed")
                && line.contains("[tool.pykiln] sources = [\"jinja2\"]"),
            "{out}"
        );
    }
    assert_eq!(lines[2], "True", "{out}");
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

/// On-disk views are checked before each process uses them: a truncated library is
/// written again at start, an edited one by `--pykiln verify`, and a view that another
/// user planted (in a cache location they control) is refused, its code never run: the
/// view goes to a private directory in the temporary one instead.
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
            .output_within(support::TIMEOUT)
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

    // Truncated (a crash of an old writer, a full disk) or removed: a start finds it
    // by its size alone and writes the view again.
    let n = good.len();
    std::fs::write(&lib, &good[..n / 2]).unwrap();
    let again = run_probe(&[]);
    assert!(
        again.status.success(),
        "truncated: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        std::fs::read(&lib).unwrap(),
        good,
        "truncated library rewritten"
    );
    // Edited in place with the same size: a start reads no file (issue 25: the check
    // stays cheap for babel's thousand files), so only `--pykiln verify`, which checks
    // every digest, finds it, says so and writes the view again.
    let mut edited = good.clone();
    edited[n - 1] ^= 0xff;
    std::fs::write(&lib, &edited).unwrap();
    let mut verify = Command::new(binary());
    clean(&mut verify, home.path());
    let out = verify
        .args(["--pykiln", "verify", "--import-timeout", "5"])
        .output_within(support::LONG);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("REPAIRED the on-disk view of soundfile")
            && stderr.contains("libsndfile_x86_64.so has changed"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&lib).unwrap(),
        good,
        "edited library rewritten"
    );

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
        .status_within(support::TIMEOUT);
    assert!(status.success());
    support::marker_library(&planted, &mark);
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&xdg)
        .status_within(support::TIMEOUT);
    assert!(status.success());
    let out = run_probe(&[("XDG_CACHE_HOME", &xdg)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!mark.exists(), "the planted library ran:\n{stderr}");
    assert!(
        stderr.contains("refusing cache directory") && stderr.contains(&*xdg.to_string_lossy()),
        "{stderr}"
    );
    // The view the server needs is written where only this user can write (a private
    // directory in the temporary one) and the server works.
    assert!(out.status.success(), "{stderr}");
    let used = String::from_utf8_lossy(&out.stdout);
    let temp = std::env::temp_dir().join("pykiln-0/files");
    assert!(
        used.split_whitespace()
            .nth(1)
            .is_some_and(|p| Path::new(p).starts_with(&temp)),
        "{used}\n{stderr}"
    );
}

#[test]
fn every_packed_distribution_has_its_license_text_or_says_it_ships_none() {
    let info: Value = serde_json::from_str(&run(
        Command::new(binary()).args(["--pykiln", "info"]),
        "info",
    ))
    .unwrap();
    let dists = info["distributions"].as_array().expect("distributions");
    assert!(dists.len() > 40, "{info}");
    let licenses = run(
        Command::new(binary()).args(["--pykiln", "licenses"]),
        "--pykiln licenses",
    );
    let rule = format!("\n{}\n", "=".repeat(78));
    let mut without_text = Vec::new();
    for d in dists {
        let (name, version) = (d["name"].as_str().unwrap(), d["version"].as_str().unwrap());
        let heading = format!("{name} {version} (Python distribution; license: ");
        let at = licenses
            .find(&heading)
            .unwrap_or_else(|| panic!("{name} {version} is missing from --pykiln licenses"));
        let after = &licenses[at..];
        let body = &after[after.find(&rule).unwrap() + rule.len()..];
        let body = &body[..body.find(&rule).unwrap_or(body.len())];
        if body.contains("(its wheel ships no license text)") {
            without_text.push(format!("{name} {version}"));
        } else {
            // A text of at least a few lines, not just a file name.
            assert!(
                body.contains("\n--- ") && body.lines().count() > 3,
                "{name} {version}: no license text:\n{body}"
            );
        }
    }
    // The build names these in its warning (the same list, see pykiln-build's
    // notices); the corpus has one such wheel.
    assert!(without_text.len() <= 2, "{without_text:?}");
}
