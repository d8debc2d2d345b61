//! Which distributions get an on-disk view (issue 25), on fixture wheels that each show
//! one way: data files beside the modules and at the import root (the default),
//! code that reaches its directory in a way only the build's import of the server can
//! see (`importlib.util.find_spec(__name__).origin`, no `__file__` in sight), code that
//! needs no path (stays in memory), and a distribution named on the command line, which
//! once lost its view (`--from NAME`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pykiln_build::{App, Source};
use pykiln_test_support::{self as support, CommandExt as _};

/// A pure-Python wheel of `files` (path → text), RECORD listing them all.
fn wheel(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let wheel = dir.join(format!("{name}-1.0-py3-none-any.whl"));
    let dist_info = format!("{name}-1.0.dist-info");
    let mut all: BTreeMap<String, String> = files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    all.insert(
        format!("{dist_info}/METADATA"),
        format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: 1.0\n",
            name.replace('_', "-")
        ),
    );
    all.insert(
        format!("{dist_info}/WHEEL"),
        "Wheel-Version: 1.0\nGenerator: pykiln-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            .into(),
    );
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, zipfile\n\
             files, dist_info = json.loads(sys.argv[2]), sys.argv[3]\n\
             record = ''.join(f'{n},,\\n' for n in files) + f'{dist_info}/RECORD,,\\n'\n\
             with zipfile.ZipFile(sys.argv[1], 'w') as z:\n\
             \x20   for n, text in files.items():\n\
             \x20       z.writestr(n, text)\n\
             \x20   z.writestr(f'{dist_info}/RECORD', record)\n",
        ])
        .arg(&wheel)
        .arg(serde_json::to_string(&all).unwrap())
        .arg(&dist_info)
        .output_within(support::TIMEOUT);
    assert!(out.status.success(), "{out:?}");
    wheel
}

#[test]
fn views_follow_data_and_what_the_import_does() {
    let d = tempfile::tempdir().unwrap();
    let data = wheel(
        d.path(),
        "data_lib",
        &[
            ("data_lib/__init__.py", "def rows():\n    return 1\n"),
            ("data_lib/table.csv", "a,b\n1,2\n"),
            ("data_lib/py.typed", ""),
            ("data_lib_settings.json", "{}\n"),
        ],
    );
    let sneaky = wheel(
        d.path(),
        "sneaky_lib",
        &[
            (
                "sneaky_lib/__init__.py",
                "import importlib.util, os\n\
             here = os.path.dirname(importlib.util.find_spec(__name__).origin)\n\
             PLUGINS = sorted(n for n in os.listdir(here) if n.endswith('.py'))\n",
            ),
            ("sneaky_lib/extra.py", "X = 1\n"),
        ],
    );
    let quiet = wheel(
        d.path(),
        "quiet_lib",
        &[
            ("quiet_lib/__init__.py", "from quiet_lib import core\n"),
            ("quiet_lib/core.py", "def f():\n    return __name__\n"),
            ("quiet_lib/LICENSE.txt", "MIT\n"),
        ],
    );
    let project = d.path().join("project");
    std::fs::create_dir_all(project.join("src/views_app")).unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        format!(
            "[project]\nname = 'views-app'\nversion = '1.0'\ndependencies = [\
             'data-lib @ file://{}', 'sneaky-lib @ file://{}', 'quiet-lib @ file://{}']\n\
             [tool.pykiln]\nentry-point = 'views_app:main'\n",
            data.display(),
            sneaky.display(),
            quiet.display()
        ),
    )
    .unwrap();
    std::fs::write(
        project.join("src/views_app/__init__.py"),
        "import data_lib, sneaky_lib, quiet_lib\n\ndef main():\n    return 0\n",
    )
    .unwrap();
    let report = App::from_project(&project)
        .compression_level(1)
        .build_to(&d.path().join("app.pykiln"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let views: BTreeMap<&str, (&Vec<String>, &str)> = report
        .manifest
        .on_disk
        .iter()
        .map(|g| (g.name.as_str(), (&g.tops, g.reason.as_str())))
        .collect();
    let (tops, why) = views.get("data_lib").expect("data_lib ships data: a view");
    assert_eq!(
        **tops,
        ["data_lib", "data_lib_settings.json"],
        "the whole distribution, its import-root file included"
    );
    assert!(why.starts_with("ships 2 data files"), "{why}");
    let (_, why) = views
        .get("sneaky_lib")
        .expect("sneaky_lib listed its directory when the server was imported: a view");
    assert!(
        why.contains("listed sneaky_lib when the server was imported"),
        "{why}"
    );
    assert!(
        !views.contains_key("quiet_lib"),
        "code only, no path use, a licence text: memory ({views:?})"
    );
    assert!(!views.contains_key("views_app"), "{views:?}");

    // The same distribution named as the requirement to build (`pykiln build --from`):
    // the project is named after it and packs nothing of its own, which once replaced
    // the distribution's files by none, so it got no view.
    let report = App::new(Source::Requirements {
        specs: vec![data.display().to_string()],
        file: None,
        script: None,
    })
    .entry_point("data_lib:rows")
    .compression_level(1)
    .build_to(&d.path().join("from.pykiln"))
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        report
            .manifest
            .on_disk
            .iter()
            .any(|g| g.name == "data_lib" && g.tops.iter().any(|t| t == "data_lib_settings.json")),
        "{:?}",
        report.manifest.on_disk
    );
}
