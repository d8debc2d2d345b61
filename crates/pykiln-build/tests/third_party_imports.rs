//! The build imports third-party modules (the import baseline): a module that blocks at
//! import must not hang the build, scripts are not imported, and import-time side
//! effects land in a scratch home, not the builder's (issues 9.2 and 9.3).

use pykiln_test_support::{self as support, CommandExt as _};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pykiln_build::App;

/// Write a pure-Python wheel `fixture_dep` whose modules misbehave at import.
fn fixture_wheel(dir: &Path, token: &str, marker: &Path) -> std::path::PathBuf {
    let wheel = dir.join("fixture_dep-1.0-py3-none-any.whl");
    let blocks = "import asyncio\n\n\nasync def _serve():\n    server = await asyncio.start_server(lambda r, w: None, '127.0.0.1', 0)\n    async with server:\n        await server.serve_forever()\n\n\nasyncio.run(_serve())\n";
    let script = format!(
        "open({marker:?}, 'w').write('imported')\nimport time\ntime.sleep(3600)\n",
        marker = marker.to_string_lossy()
    );
    let telemetry = format!(
        "import os, tempfile\n\
         d = os.path.join(os.path.expanduser('~'), '.cache', 'fixture-telemetry-{token}')\n\
         os.makedirs(d, exist_ok=True)\n\
         open(os.path.join(d, 'events.db'), 'w').write('x')\n\
         open(os.path.join(tempfile.gettempdir(), 'fixture-telemetry-{token}.log'), 'w').write('x')\n"
    );
    let files = serde_json::json!({
        "fixture_dep/__init__.py": "",
        "fixture_dep/blocks.py": blocks,
        "fixture_dep/telemetry.py": telemetry,
        "fixture_dep/tests/__init__.py": "",
        "fixture_dep/tests/echo-server.py": script,
        "fixture_dep-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: fixture-dep\nVersion: 1.0\n",
        "fixture_dep-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: pykiln-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    });
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, zipfile\n\
             files = json.loads(sys.argv[2])\n\
             record = ''.join(f'{n},,\\n' for n in files) + 'fixture_dep-1.0.dist-info/RECORD,,\\n'\n\
             with zipfile.ZipFile(sys.argv[1], 'w') as z:\n\
             \x20   for n, text in files.items():\n\
             \x20       z.writestr(n, text)\n\
             \x20   z.writestr('fixture_dep-1.0.dist-info/RECORD', record)\n",
        ])
        .arg(&wheel)
        .arg(files.to_string())
        .output_within(support::TIMEOUT);
    assert!(out.status.success(), "{out:?}");
    wheel
}

#[test]
fn a_module_that_blocks_at_import_does_not_hang_the_build_nor_touch_home() {
    let d = tempfile::tempdir().unwrap();
    let token = format!(
        "{}-{}",
        std::process::id(),
        d.path().display().to_string().len()
    );
    let marker = d.path().join("echo-server-ran");
    let wheel = fixture_wheel(d.path(), &token, &marker);
    let project = d.path().join("project");
    std::fs::create_dir_all(project.join("src/demo_app")).unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        format!(
            "[project]\nname = 'demo-app'\nversion = '1.0'\ndependencies = ['fixture-dep @ file://{}']\n\
             [tool.pykiln]\nentry-point = 'demo_app:main'\n",
            wheel.display()
        ),
    )
    .unwrap();
    std::fs::write(
        project.join("src/demo_app/__init__.py"),
        "def main():\n    return 0\n",
    )
    .unwrap();

    let out = d.path().join("app.pykiln");
    let report = App::from_project(&project)
        .import_timeout(Duration::from_secs(3))
        .build_to(&out)
        .expect("the build finishes");
    let bytes = std::fs::read(&out).unwrap();
    let archive = pykiln_archive::Archive::open(&bytes).unwrap();
    let manifest = archive.manifest().unwrap();
    let failures = &manifest.expected_import_failures;
    assert!(
        failures
            .get("fixture_dep.blocks")
            .is_some_and(|why| why.starts_with("hangs on import")),
        "{failures:?}\n{:?}",
        report.warnings
    );
    // The script is packed (as a module file) but never imported to check it.
    assert!(!marker.exists(), "the build ran tests/echo-server.py");
    assert!(
        !failures.keys().any(|k| k.contains("echo-server")),
        "{failures:?}"
    );
    // telemetry imported fine, and its files went to the scratch home.
    assert!(
        !failures.contains_key("fixture_dep.telemetry"),
        "{failures:?}"
    );
    let home = std::env::var_os("HOME").expect("HOME is set");
    let planted = Path::new(&home).join(format!(".cache/fixture-telemetry-{token}"));
    assert!(!planted.exists(), "the build wrote {}", planted.display());
    let log = std::env::temp_dir().join(format!("fixture-telemetry-{token}.log"));
    assert!(!log.exists(), "the build wrote {}", log.display());
    assert!(
        !report
            .warnings
            .iter()
            .any(|w| w.message.contains("did not finish")),
        "{:?}",
        report.warnings
    );
}
