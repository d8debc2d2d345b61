//! Builds share one cache safely (issue 9.5): two builds of different projects at the
//! same time on one fresh cache both succeed and give the bytes each gives alone, and
//! a cache over its cap is pruned to what the last build used, which still builds.

use std::path::Path;

use pykiln_build::App;

fn project(dir: &Path, name: &str, body: &str) {
    let src = dir.join("src").join(name);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        dir.join("pyproject.toml"),
        format!("[project]\nname = '{name}'\nversion = '1.0'\n[tool.pykiln]\nentry-point = '{name}:main'\n"),
    )
    .unwrap();
    std::fs::write(
        src.join("__init__.py"),
        format!("def main():\n    {body}\n"),
    )
    .unwrap();
}

fn build(dir: &Path, cache: Option<&Path>, out: &Path) -> pykiln_build::BuildReport {
    let mut app = App::from_project(dir).compression_level(1);
    if let Some(c) = cache {
        app = app.cache_dir(c);
    }
    app.build_to(out)
        .unwrap_or_else(|e| panic!("building {}: {e:#}", dir.display()))
}

#[test]
fn concurrent_builds_share_a_cache_and_pruning_keeps_what_is_used() {
    let d = tempfile::tempdir().unwrap();
    let (p1, p2) = (d.path().join("one"), d.path().join("two"));
    project(&p1, "first_app", "import json; return len(json.dumps([1]))");
    project(&p2, "second_app", "import sqlite3; return 0");

    // Alone, on the usual (warm) cache.
    let a1 = build(&p1, None, &d.path().join("a1.pykiln"));
    let a2 = build(&p2, None, &d.path().join("a2.pykiln"));

    // At the same time, on one fresh cache.
    let shared = d.path().join("shared-cache");
    let (b1, b2) = std::thread::scope(|s| {
        let t1 = s.spawn(|| build(&p1, Some(&shared), &d.path().join("b1.pykiln")));
        let t2 = s.spawn(|| build(&p2, Some(&shared), &d.path().join("b2.pykiln")));
        (t1.join().unwrap(), t2.join().unwrap())
    });
    let read = |r: &pykiln_build::BuildReport| std::fs::read(&r.archive).unwrap();
    assert!(
        read(&a1) == read(&b1),
        "first_app differs when built concurrently"
    );
    assert!(
        read(&a2) == read(&b2),
        "second_app differs when built concurrently"
    );

    // A cap below what one build needs: everything but this build's entries goes.
    let pruned = App::from_project(&p1)
        .compression_level(1)
        .cache_dir(&shared)
        .cache_max(1)
        .build_to(&d.path().join("c1.pykiln"))
        .unwrap();
    assert!(
        pruned
            .warnings
            .iter()
            .any(|w| w.message.contains("least recently used")),
        "{:?}",
        pruned.warnings
    );
    assert!(read(&pruned) == read(&a1));
    // second_app's own entries (its module's bytecode and frames) are gone, the
    // shared ones stay: it still builds, to the same bytes.
    let again = build(&p2, Some(&shared), &d.path().join("c2.pykiln"));
    assert!(read(&again) == read(&a2));
}
