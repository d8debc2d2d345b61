//! Bad projects fail the build with an error that names the file, line or requirement.

use std::path::Path;

use pykiln_build::App;

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let p = d.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    d
}

fn build_error(dir: &Path) -> String {
    let out = dir.join("out/app.pykiln");
    let err = App::from_project(dir)
        .build_to(&out)
        .expect_err("the build must fail");
    assert!(!out.exists(), "no archive is written on failure");
    assert!(
        !dir.join("out").exists() || std::fs::read_dir(dir.join("out")).unwrap().next().is_none(),
        "no partial output"
    );
    format!("{err:#}")
}

const PYPROJECT: &str = "[project]\nname = 'demo-app'\nversion = '1.0'\n[tool.pykiln]\nentry-point = 'demo_app.server:main'\n";

#[test]
fn syntax_error_names_file_and_line() {
    let d = project(&[
        ("pyproject.toml", PYPROJECT),
        ("src/demo_app/__init__.py", ""),
        (
            "src/demo_app/server.py",
            "def main():\n    return 0\n\n\ndef broken(:\n    pass\n",
        ),
    ]);
    let err = build_error(d.path());
    assert!(err.contains("SyntaxError"), "{err}");
    assert!(err.contains("demo_app/server.py:5"), "{err}");
}

#[test]
fn missing_entry_point_is_named() {
    let d = project(&[
        ("pyproject.toml", PYPROJECT),
        ("src/demo_app/__init__.py", ""),
        ("src/demo_app/server.py", "def run():\n    return 0\n"),
    ]);
    let err = build_error(d.path());
    assert!(
        err.contains("entry point demo_app.server:main not found"),
        "{err}"
    );
    let d = project(&[
        ("pyproject.toml", PYPROJECT),
        ("src/demo_app/__init__.py", ""),
    ]);
    let err = build_error(d.path());
    assert!(
        err.contains("entry point demo_app.server:main not found: no module demo_app.server"),
        "{err}"
    );
}

#[test]
fn unknown_requirement_is_pips_error() {
    let d = project(&[
        (
            "pyproject.toml",
            "[project]\nname = 'demo-app'\nversion = '1.0'\ndependencies = ['pykiln-no-such-distribution-xyz==0.0.1']\n[tool.pykiln]\nentry-point = 'demo_app:main'\n",
        ),
        ("src/demo_app/__init__.py", "def main():\n    return 0\n"),
    ]);
    let err = build_error(d.path());
    assert!(err.contains("pykiln-no-such-distribution-xyz"), "{err}");
    assert!(
        err.contains("No matching distribution") || err.contains("Could not find a version"),
        "{err}"
    );
}

#[test]
fn missing_pyproject_names_the_path() {
    let d = tempfile::tempdir().unwrap();
    let err = build_error(d.path());
    assert!(err.contains("pyproject.toml"), "{err}");
}

#[test]
fn a_good_project_builds_deterministically() {
    let d = project(&[
        ("pyproject.toml", PYPROJECT),
        ("src/demo_app/__init__.py", ""),
        (
            "src/demo_app/server.py",
            "def main():\n    \"\"\"Docstring kept.\"\"\"\n    return 0\n",
        ),
        ("src/demo_app/data/hello.txt", "hi"),
    ]);
    let a = d.path().join("a.pykiln");
    let b = d.path().join("b.pykiln");
    App::from_project(d.path()).build_to(&a).unwrap();
    App::from_project(d.path()).build_to(&b).unwrap();
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(a, b, "same inputs, same bytes");
    let archive = pykiln_archive::Archive::open(&a).unwrap();
    assert!(archive.module("demo_app.server").unwrap().has_source());
    assert!(
        archive.module("json").is_some()
            && archive.module("test").is_none()
            && archive.module("tkinter").is_none()
    );
    assert_eq!(
        &*archive
            .resource("demo_app", "data/hello.txt")
            .unwrap()
            .read()
            .unwrap(),
        b"hi"
    );
    assert!(archive.distributions().contains(&"demo_app-1.0.dist-info"));
    let home = std::env::var("HOME").unwrap_or_default();
    assert!(
        home.len() < 2 || !contains(&a, d.path().to_string_lossy().as_bytes()),
        "no build path in the archive"
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
