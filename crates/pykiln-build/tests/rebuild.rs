//! `cargo build` re-packs when the app gains a module or a data file (issue 9.8): the
//! build script names the package directories to cargo, which scans them.
//!
//! A small crate using pykiln from this repository is built twice with cargo; its
//! target directory lives under this workspace's target dir so later runs are
//! incremental.

use pykiln_test_support::{self as support, CommandExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the repository root")
        .to_path_buf()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn cargo_build(dir: &Path, target: &Path) {
    let (ok, stderr) = try_cargo_build(dir, target);
    assert!(ok, "cargo build failed:\n{stderr}");
}

fn try_cargo_build(dir: &Path, target: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .output_within(support::LONG);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn probe(bin: &Path, code: &str) -> (bool, String) {
    let out = Command::new(bin)
        .args(["--pykiln", "python", "-c", code])
        .env_clear()
        .output_within(support::LONG);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn adding_a_module_or_data_file_repacks() {
    let repo = repo();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write(
        &dir.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"rebuild-probe\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\npykiln = {{ path = {:?} }}\n\n\
             [build-dependencies]\npykiln-build = {{ path = {:?} }}\n\n[workspace]\n",
            repo.join("crates/pykiln"),
            repo.join("crates/pykiln-build"),
        ),
    );
    // The workspace's lock file: the same dependency versions, nothing to resolve.
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    write(
        &dir.join("build.rs"),
        "fn main() {\n    pykiln_build::App::from_project(\"project\").compression_level(1).run_build_script();\n}\n",
    );
    write(&dir.join("src/main.rs"), "pykiln::main!();\n");
    write(
        &dir.join("project/pyproject.toml"),
        "[project]\nname = \"rebuild-probe\"\nversion = \"1.0\"\n[tool.pykiln]\nentry-point = \"probe_app:main\"\n",
    );
    let pkg = dir.join("project/src/probe_app");
    write(&pkg.join("__init__.py"), "def main():\n    return 0\n");

    let target = repo.join("target/rebuild-probe");
    let bin = target.join("release/rebuild-probe");
    cargo_build(dir, &target);
    let check = "import importlib.resources as r, probe_app.extra as e; \
                 print(e.WORD, r.files('probe_app').joinpath('data/word.txt').read_text())";
    let (ok, out) = probe(&bin, check);
    assert!(!ok && out.contains("probe_app.extra"), "{out}");

    // A new module and a new data directory, nothing else touched.
    write(&pkg.join("extra.py"), "WORD = 'fired'\n");
    write(&pkg.join("data/word.txt"), "glazed");
    cargo_build(dir, &target);
    let (ok, out) = probe(&bin, check);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "fired glazed");

    // `[tool.pykiln] python` naming another interpreter than cargo's: the build script
    // cannot switch pyo3's, so it fails and names the setting that would.
    let other = dir.join("other-python3");
    write(&other, "#!/bin/sh\n");
    let pyproject = dir.join("project/pyproject.toml");
    let text = std::fs::read_to_string(&pyproject).unwrap();
    write(
        &pyproject,
        &format!("{text}python = {:?}\n", other.display().to_string()),
    );
    let (ok, stderr) = try_cargo_build(dir, &target);
    assert!(!ok, "built against another interpreter than requested");
    let fix = format!("PYO3_PYTHON = \"{}\"", other.display());
    assert!(
        stderr.contains("[tool.pykiln] python") && stderr.contains(&fix),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
