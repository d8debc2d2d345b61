//! What the demo's dependencies need from the importer works inside the binary:
//! importlib.metadata, importlib.resources, pkgutil, inspect, and the native fallback.

mod common;
use common::support::{self, CommandExt as _};

use std::process::Command;

fn python(code: &str) -> (bool, String, String) {
    let out = Command::new(common::binary())
        .args(["--pykiln", "python", "-c", code])
        .env_clear()
        .output_within(support::TIMEOUT);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn importlib_metadata_reads_packed_dist_info() {
    let (ok, out, err) = python(
        "import importlib.metadata as md\n\
         print(md.version('mcp'), md.version('pykiln-notes'), md.version('PYDANTIC'))\n\
         d = md.distribution('pydantic_core')\n\
         print(isinstance(d, md.Distribution), d.metadata['Name'])\n\
         eps = md.entry_points(group='console_scripts')\n\
         print(sorted(e.name for e in eps if e.name in ('pykiln-notes', 'uvicorn')))\n\
         print(md.entry_points(group='console_scripts')['pykiln-notes'].value)\n\
         print(any(str(f).endswith('pydantic/__init__.py') for f in md.files('pydantic')))\n\
         print(len(md.requires('mcp')) > 3, len(list(md.distributions())) > 20)\n\
         meta = [f for f in md.files('pydantic_core') if f.name == 'METADATA'][0]\n\
         print(meta.locate().exists(), meta.read_text().startswith('Metadata-Version'))\n\
         try:\n    md.version('not-a-packed-dist')\nexcept md.PackageNotFoundError:\n    print('missing ok')\n",
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("2.3.0 0.1.0 2."), "{out}");
    assert_eq!(lines[1], "True pydantic_core");
    assert_eq!(lines[2], "['pykiln-notes', 'uvicorn']");
    assert_eq!(lines[3], "pykiln_notes.server:main");
    assert_eq!(lines[4], "True");
    assert_eq!(lines[5], "True True");
    assert_eq!(lines[6], "True True", "dist-info files exist and read");
    assert_eq!(lines[7], "missing ok");
}

#[test]
fn importlib_resources_and_pkgutil_read_packed_data() {
    let (ok, out, err) = python(
        "import importlib.resources as r, json, pkgutil\n\
         root = r.files('jsonschema_specifications')\n\
         schemas = root / 'schemas'\n\
         print(schemas.is_dir(), root.joinpath('schemas', 'nope').exists() if hasattr(root, 'exists') else False)\n\
         drafts = sorted(p.name for p in schemas.iterdir())\n\
         print('draft7' in drafts)\n\
         meta = next(p for p in (schemas / 'draft7').iterdir() if p.is_file())\n\
         print(json.loads(meta.read_text())['$schema'].startswith('http'))\n\
         with r.as_file(meta) as real:\n    print(real.exists(), real.read_bytes() == meta.read_bytes())\n\
         import jsonschema_specifications, os\n\
         rel = os.path.join('schemas', 'draft7', meta.name)\n\
         print(pkgutil.get_data('jsonschema_specifications', rel) == meta.read_bytes())\n",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["True False", "True", "True", "True True", "True"],
        "{out}"
    );
}

#[test]
fn inspect_and_module_attributes_look_like_files_under_the_binary() {
    let (ok, out, err) = python(
        "import inspect, sys, json.decoder, pykiln_notes.store as s, _sqlite3\n\
         exe = sys.executable\n\
         print(json.decoder.__file__ == exe + '/json/decoder.py', s.__spec__.origin == exe + '/pykiln_notes/store.py')\n\
         print('class NoteStore' in inspect.getsource(s))\n\
         print(_sqlite3.__file__.startswith(exe + '/_sqlite3.'), json.__path__ == [exe + '/json'])\n\
         print(sys.path, sys.flags.no_site, sys.flags.isolated)\n",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["True True", "True", "True True", "[] 1 1"],
        "{out}"
    );
}

#[test]
fn native_code_falls_back_to_a_private_cache_without_memfd() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::binary())
        .args([
            "--pykiln",
            "python",
            "-c",
            "import ssl, sqlite3, sys, _ctypes; print('_ssl' in sys.builtin_module_names)",
        ])
        .env_clear()
        .env("PYKILN_NO_MEMFD", "1")
        .env("XDG_CACHE_HOME", dir.path())
        .output_within(support::TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pykiln's own interpreter (pykiln python install) has `_ssl` and `_ctypes` built
    // in, with OpenSSL and libffi: only `_sqlite3` is then a native image.
    let built_in = String::from_utf8_lossy(&out.stdout).trim() == "True";
    let native = dir.path().join("pykiln/native");
    let entries: Vec<_> = std::fs::read_dir(&native).unwrap().flatten().collect();
    assert!(
        entries.len() >= if built_in { 1 } else { 4 },
        "ssl, crypto, _ssl, _sqlite3… staged: {}",
        entries.len()
    );
    use std::os::unix::fs::PermissionsExt as _;
    for e in entries {
        assert_eq!(
            e.metadata().unwrap().permissions().mode() & 0o077,
            0,
            "{:?} is private",
            e.path()
        );
    }
}

#[test]
fn pep_420_namespace_packages_import() {
    // opentelemetry (a dependency of mcp) ships `opentelemetry` and
    // `opentelemetry.util` without __init__.py. (3.10 names the loader
    // `_NamespaceLoader`.)
    let (ok, out, err) = python(
        "import sys, importlib.util, opentelemetry.util as u, opentelemetry.util.types as t\n\
         print(u.__spec__.origin, getattr(u, '__file__', None), type(u.__loader__).__name__.lstrip('_'))\n\
         print(list(u.__path__) == [sys.executable + '/opentelemetry/util'])\n\
         print(importlib.util.find_spec('opentelemetry.util.types').origin == sys.executable + '/opentelemetry/util/types.py')\n",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["None None NamespaceLoader", "True", "True"],
        "{out}"
    );
}
