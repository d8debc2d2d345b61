//! The `pykiln` CLI as a user meets it: a server from PyPI built, inspected and checked
//! (its own MCP self-test), a Tauri sidecar name, and every kind of bad input giving
//! one clear line, a non-zero exit and no output file.

use pykiln_test_support::{self as support, CommandExt as _};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn pykiln() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pykiln"));
    // Plain output: the tests are not a terminal, and say so.
    cmd.env_remove("PYKILN_LOG");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output_within(support::LONG)
}

/// The error line of a failed run: exit 1, one `pykiln: error:` line, no panic.
fn fails_with(out: &Output, needles: &[&str]) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pykiln: error:"), "{all}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{all}"
    );
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in\n{all}");
    }
}

const TIME: &str = "mcp-server-time==2026.10.19";

#[test]
fn a_server_from_pypi_builds_inspects_and_checks() {
    let d = tempfile::tempdir().unwrap();
    let out_path = d.path().join("mcp-server-time");
    let sidecars = d.path().join("binaries");
    std::fs::create_dir(&sidecars).unwrap();
    let out = run(pykiln()
        .args(["build", "--from", TIME, "-o"])
        .arg(&out_path)
        .arg("--tauri-sidecar")
        .arg(&sidecars));
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Not a terminal: plain lines, no escape sequences anywhere.
    assert!(!all.contains('\u{1b}'), "{all}");
    assert!(stdout.contains("mcp-server-time 2026.10.19"), "{all}");
    assert!(stdout.contains("size by distribution"), "{all}");
    assert!(stdout.contains("glibc         >= 2."), "{all}");
    // The client configs are JSON with the absolute path.
    let abs = out_path.display().to_string();
    assert!(stdout.contains(&format!("\"command\": \"{abs}\"")), "{all}");
    assert!(
        stdout.contains("\"mcpServers\"") && stdout.contains("\"servers\""),
        "{all}"
    );

    // Tauri's externalBin name: <name>-<target triple>, the same bytes.
    let triple = sidecars.join("mcp-server-time-x86_64-unknown-linux-gnu");
    assert_eq!(
        std::fs::read(&triple).expect("the sidecar"),
        std::fs::read(&out_path).unwrap()
    );
    // No temporary files left beside the outputs.
    for dir in [d.path(), sidecars.as_path()] {
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(
                !name.starts_with(".tmp-") && !name.starts_with(".pykiln"),
                "left over: {name}"
            );
        }
    }

    let out = run(pykiln().arg("inspect").arg(&out_path).arg("--json"));
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["archive_kind"], "appended");
    assert_eq!(v["app"]["name"], "mcp-server-time");
    assert_eq!(v["app"]["entry_point"], "mcp_server_time:main");
    assert_eq!(v["pykiln_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        v["sqlite_version"].as_str().unwrap().starts_with("3."),
        "{v}"
    );
    assert_eq!(v["python_version"], v["archive_python_version"]);
    let dists = v["distributions"].as_array().unwrap();
    let time = dists
        .iter()
        .find(|d| d["name"] == "mcp-server-time")
        .expect("mcp-server-time listed");
    assert_eq!(time["version"], "2026.10.19");
    assert!(time["stored"].as_u64().unwrap() > 1000, "{time}");
    let pydantic = dists.iter().find(|d| d["name"] == "pydantic").unwrap();
    assert_eq!(pydantic["license"], "MIT");
    // Everything in the archive is attributed somewhere.
    let total: u64 = dists.iter().map(|d| d["stored"].as_u64().unwrap()).sum();
    assert!(total <= v["archive_size"].as_u64().unwrap(), "{total} {v}");
    assert!(
        total * 10 > v["archive_size"].as_u64().unwrap() * 9,
        "{total} {v}"
    );

    // check: verify, then the binary's own MCP self-test with the server's arguments.
    let out =
        run(pykiln()
            .arg("check")
            .arg(&out_path)
            .args(["--", "--local-timezone", "Europe/Paris"]));
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verify: "), "{all}");
    assert!(stdout.contains("get_current_time, convert_time"), "{all}");
    assert!(stdout.contains("selftest: ok"), "{all}");

    // A server that cannot start fails the self-test, with a non-zero exit.
    let out = run(pykiln()
        .arg("check")
        .arg("--no-verify")
        .arg(&out_path)
        .args(["--", "--no-such-flag"]));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("selftest: FAILED"), "{all}");

    // The self-test is the binary's own command (a container health check uses it).
    let out = run(Command::new(&out_path).args(["--pykiln", "selftest"]));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn requirements_without_one_clear_script_say_what_to_pass() {
    let d = tempfile::tempdir().unwrap();
    let o = d.path().join("x");
    // pip has pip, pip3 and pip3.X.
    let out = run(pykiln()
        .args(["build", "--from", "pip==24.0", "-o"])
        .arg(&o));
    fails_with(
        &out,
        &[
            "pip 24.0 has",
            "console scripts (pip, pip3",
            "--script NAME",
        ],
    );
    let out = run(pykiln()
        .args(["build", "--from", "six==1.16.0", "-o"])
        .arg(&o));
    fails_with(&out, &["six 1.16.0 has no console script", "--entry-point"]);
    let out = run(pykiln()
        .args(["build", "--from", "pip==24.0", "--script", "nope", "-o"])
        .arg(&o));
    fails_with(
        &out,
        &[
            "no installed distribution has a console script 'nope'",
            "pip3",
        ],
    );
    let out = run(pykiln()
        .args([
            "build",
            "--from",
            "pykiln-surely-not-on-pypi-4c1d==1.0",
            "-o",
        ])
        .arg(&o));
    fails_with(
        &out,
        &["installing pykiln-surely-not-on-pypi-4c1d==1.0 failed"],
    );
    assert!(!o.exists());
}

#[test]
fn bad_outputs_and_interpreters_fail_before_building() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("no/such/dir/server");
    let out = run(pykiln().args(["build", "--from", TIME, "-o"]).arg(&missing));
    fails_with(&out, &["the output directory", "does not exist"]);
    // A read-only file system (we may be root, for whom modes do not count).
    let out = run(pykiln().args(["build", "--from", TIME, "-o", "/proc/pykiln-server"]));
    fails_with(&out, &["cannot write to the output directory /proc"]);
    let out = run(pykiln().args(["build", "--from", TIME, "--python", "3.99"]));
    fails_with(&out, &["no Python 3.99 found", "pyenv install 3.99"]);
    // A project's `[tool.pykiln] python` is the default for --python.
    let project = d.path().join("wants-3.99");
    std::fs::create_dir_all(project.join("app")).unwrap();
    std::fs::write(project.join("app/__init__.py"), "def main():\n    pass\n").unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        "[project]\nname = \"app\"\nversion = \"1\"\n[project.scripts]\napp = \"app:main\"\n\
         [tool.pykiln]\npython = \"3.99\"\n",
    )
    .unwrap();
    let out = run(pykiln()
        .arg("build")
        .arg(&project)
        .arg("-o")
        .arg(d.path().join("s")));
    fails_with(&out, &["no Python 3.99 found"]);

    // An interpreter whose static library is missing: the real one, reporting a
    // library file that does not exist.
    let real = pykiln_pyconfig::select_interpreter();
    let fake = d.path().join("python3");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\"{}\" \"$@\" | sed 's/\"library\": \"libpython/\"library\": \"libmissing/'\n",
            which(&real).display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(pykiln()
        .args(["build", "--from", TIME, "-o"])
        .arg(d.path().join("s"))
        .arg("--python")
        .arg(&fake));
    fails_with(
        &out,
        &[
            "has no static library",
            "libmissing",
            "apt install python3.",
        ],
    );
    assert!(!d.path().join("s").exists());

    // An interpreter without pip (as Debian's is without python3-pip): a venv made
    // without it, over the real interpreter (whose static library it shares).
    let venv = d.path().join("nopip");
    let made = std::process::Command::new(which(&real))
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status_within(support::TIMEOUT);
    assert!(made.success());
    let nopip = venv.join("bin/python");
    let out = run(pykiln()
        .args(["build", "--refresh", "--from", TIME, "-o"])
        .arg(d.path().join("s"))
        .arg("--python")
        .arg(&nopip));
    fails_with(&out, &["has no pip", "apt install python3-pip"]);
    assert!(!d.path().join("s").exists());

    let out = run(pykiln().args(["build", "--from", TIME, "examples/notes-server"]));
    fails_with(&out, &["not both"]);
}

fn which(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .expect("python3 on PATH")
}

#[test]
fn files_that_are_not_pykiln_binaries_are_never_run() {
    let d = tempfile::tempdir().unwrap();
    // A script that would leave a marker if it ran.
    let marker = d.path().join("ran");
    let script = d.path().join("not-pykiln");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    for cmd in ["inspect", "check"] {
        let out = run(pykiln().arg(cmd).arg(&script));
        fails_with(&out, &["is not a pykiln binary"]);
    }
    assert!(
        !marker.exists(),
        "pykiln ran a file that is not a pykiln binary"
    );
    let out = run(pykiln().args(["inspect", "/no/such/file"]));
    fails_with(&out, &["/no/such/file"]);
}

#[test]
fn local_wheels_and_requirements_files_build_too() {
    let d = tempfile::tempdir().unwrap();
    // The wheel, as a user would have it from their own build.
    let wheels = d.path().join("wheels");
    let python = pykiln_pyconfig::select_interpreter();
    let out = run(Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
        .arg(&wheels)
        .arg(TIME));
    assert!(out.status.success(), "{}", text(&out));
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("a wheel");
    let bin = d.path().join("from-wheel");
    let out = run(pykiln()
        .current_dir(d.path())
        .args(["build", "-q", "--from"])
        // Relative, as typed.
        .arg(Path::new("wheels").join(wheel.file_name().unwrap()))
        .arg("-o")
        .arg(&bin));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(pykiln().args(["check", "--no-verify"]).arg(&bin));
    assert!(out.status.success(), "{}", text(&out));

    // A requirements file names no distribution: the script is named instead.
    let reqs = d.path().join("requirements.txt");
    std::fs::write(&reqs, format!("{TIME}\n")).unwrap();
    let bin = d.path().join("from-file");
    let out = run(pykiln()
        .args(["build", "-q", "--from"])
        .arg(&reqs)
        .arg("-o")
        .arg(&bin));
    fails_with(&out, &["--script NAME"]);
    let out = run(pykiln()
        .args(["build", "-q", "--script", "mcp-server-time", "--from"])
        .arg(&reqs)
        .arg("-o")
        .arg(&bin));
    assert!(out.status.success(), "{}", text(&out));
    let v: Value =
        serde_json::from_slice(&run(pykiln().arg("inspect").arg("--json").arg(&bin)).stdout)
            .unwrap();
    assert_eq!(v["app"]["name"], "mcp-server-time");
    assert_eq!(v["app"]["version"], "2026.10.19");
}

/// The native images a binary's first start wrote to the cache under `xdg`: file
/// names (module or SONAME) of `pykiln/native/<sha256>/<name>`.
fn cached_images(xdg: &Path) -> BTreeSet<String> {
    let native = xdg.join("pykiln/native");
    let Ok(dirs) = std::fs::read_dir(&native) else {
        return BTreeSet::new();
    };
    dirs.filter_map(Result::ok)
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().filter_map(Result::ok))
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn native_images_go_where_the_placement_settings_say() {
    let d = tempfile::tempdir().unwrap();
    let import = "import pydantic_core, _decimal, _json; print('ok')";
    let build = |name: &str, extra: &[&str]| {
        let bin = d.path().join(name);
        let out = run(pykiln()
            .args(["build", "-q", "--from", TIME, "-o"])
            .arg(&bin)
            .args(extra));
        assert!(out.status.success(), "{}", text(&out));
        bin
    };
    let start = |bin: &Path, env: &[(&str, &str)]| {
        let xdg = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["--pykiln", "python", "-c", import])
            .env("XDG_CACHE_HOME", xdg.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
        (cached_images(xdg.path()), xdg)
    };
    let listed = |bin: &Path| -> BTreeSet<String> {
        let out = run(pykiln().arg("inspect").arg(bin).arg("--json"));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["file_backed_native"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert!(f["size"].as_u64().unwrap() > 0, "{f}");
                f["key"].as_str().unwrap().to_string()
            })
            .collect()
    };

    // Default: every image is file-backed and written on the first start.
    let default = build("default", &[]);
    let keys = listed(&default);
    for key in ["extension:pydantic_core._pydantic_core", "extension:_json"] {
        assert!(keys.contains(key), "{key}: {keys:?}");
    }
    let (cached, _xdg) = start(&default, &[]);
    for name in ["pydantic_core._pydantic_core", "_decimal", "_json"] {
        assert!(cached.contains(name), "{name}: {cached:?}");
    }
    // A threshold keeps smaller images in memory: _json (~45 KB) is not written.
    let thresholded = build("thresholded", &["--native-cache-threshold", "1M"]);
    let (cached, _xdg) = start(&thresholded, &[]);
    assert!(
        cached.contains("pydantic_core._pydantic_core"),
        "{cached:?}"
    );
    assert!(!cached.contains("_json"), "{cached:?}");
    // With the cache turned off at run time nothing is written at all.
    let (off, _xdg) = start(&default, &[("PYKILN_NATIVE_CACHE", "off")]);
    assert!(off.is_empty(), "{off:?}");
    // A cache that cannot be made (here: the path is a file) falls back to memory.
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let out = run(Command::new(&default)
        .args(["--pykiln", "python", "-c", import])
        .env("XDG_CACHE_HOME", &file));
    assert!(out.status.success(), "{}", text(&out));

    // Per distribution, and the threshold: pydantic-core in memory whatever its size,
    // everything else in memory too (threshold off).
    let pinned = build(
        "pinned",
        &[
            "--native-in-memory",
            "pydantic-core",
            "--native-cache-threshold",
            "off",
        ],
    );
    assert!(listed(&pinned).is_empty());
    let (cached, _xdg) = start(&pinned, &[]);
    assert!(cached.is_empty(), "{cached:?}");
    // ...and the other way: a small image file-backed because its distribution is.
    let small = build(
        "small",
        &[
            "--native-cached",
            "pydantic-core",
            "--native-cache-threshold",
            "64M",
        ],
    );
    assert_eq!(
        listed(&small),
        BTreeSet::from(["extension:pydantic_core._pydantic_core".to_string()])
    );

    // A threshold that is not a size is one clear error, and nothing is written.
    let bad = d.path().join("bad");
    let out = run(pykiln()
        .args([
            "build",
            "-q",
            "--from",
            TIME,
            "--native-cache-threshold",
            "lots",
            "-o",
        ])
        .arg(&bad));
    fails_with(&out, &["native-cache-threshold", "lots"]);
    assert!(!bad.exists());
}

/// A module whose import compiles source strings every way Python code does, and
/// reports what came out: the same with the strings served from the archive as with
/// CPython compiling them.
const COMPILES: &str = r#"from __future__ import annotations
import ast, builtins, dataclasses, json, sys, typing

events = []
sys.addaudithook(lambda e, a: events.append(a[1]) if e == "compile" else None)

@dataclasses.dataclass(order=True)
class Point:
    x: int
    y: "list[int] | None" = None

class Pair(typing.NamedTuple):
    a: int
    b: str

hints = {k: repr(v) for k, v in typing.get_type_hints(Point).items()}
exec("from_exec = 40 + 2")  # the caller's globals by default
blank_eval = eval("  \t1 + from_exec")  # eval strips leading blanks
# The annotations future is inherited from this module: the annotation is not evaluated...
exec(compile("def lazy(x: undefined_name): return x", "<lazy>", "exec"))
# ...unless dont_inherit says not to.
try:
    exec(compile("def eager(x: undefined_name): return x", "<eager>", "exec", dont_inherit=True))
    eager = "defined"
except NameError as e:
    eager = str(e)
tree = type(compile("1 + 2", "<ast>", "eval", ast.PyCF_ONLY_AST)).__name__
try:
    exec("1 +")
    syntax = None
except SyntaxError as e:
    syntax = [e.msg, e.filename, e.lineno]

def in_function():
    v = 5
    return eval("v * 2")  # the caller's locals

import re, warnings
words = re.compile(r"(?P<word>[a-z]+)", re.I).findall("Hello, World")
first = re.match(rb"(\d+)-(\d+)", b"12-34").groups()
# What warns when compiled is compiled at run time, so the warning is still shown.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    nested = re.compile("[[a]").pattern  # FutureWarning: possible nested set
    exec("escape = '\\d'")  # invalid escape sequence: a (Deprecation|Syntax)Warning

RESULT = {
    "point": repr(Point(1, [2])), "ordered": Point(1) < Point(2), "pair": repr(Pair(1, "b")),
    "hints": hints, "from_exec": from_exec, "blank_eval": blank_eval, "lazy": lazy(3),
    "eager": eager, "tree": tree, "syntax": syntax, "in_function": in_function(),
    "code_names": [Point.__init__.__code__.co_filename, Pair.__new__.__code__.co_name],
    "compile_events": events, "words": words, "first": [g.decode() for g in first],
    "warnings": sorted(type(w.message).__name__ for w in caught), "escape": escape,
}

def main():
    RESULT["builtins_after_import"] = [
        getattr(builtins, n).__module__ for n in ("compile", "exec", "eval")
    ]
    print(json.dumps(RESULT, sort_keys=True))
"#;

#[test]
fn start_up_source_strings_come_from_the_archive_and_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let project = d.path().join("compiles");
    std::fs::create_dir_all(project.join("compiles")).unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        "[project]\nname = \"compiles\"\nversion = \"1.0\"\n\n\
         [tool.pykiln]\nentry-point = \"compiles:main\"\n",
    )
    .unwrap();
    std::fs::write(project.join("compiles/__init__.py"), COMPILES).unwrap();
    let bin = d.path().join("compiles-bin");
    let out = run(pykiln()
        .args(["build", "-q"])
        .arg(&project)
        .arg("-o")
        .arg(&bin));
    assert!(out.status.success(), "{}", text(&out));
    let start = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(&bin);
        cmd.env("PYKILN_LOG", "debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd);
        assert!(out.status.success(), "{}", text(&out));
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", text(&out));
        });
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // The numbers the runtime's debug lines report.
        let count = |line: &str, field: &str| {
            stderr
                .lines()
                .find(|l| l.contains(line))
                .and_then(|l| l.split(field).nth(1))
                .and_then(|s| s.split_whitespace().next())
                .map(|n| n.parse::<usize>().unwrap())
        };
        let counts = (
            count("start-up source strings", "served="),
            count("re cache filled", "patterns="),
        );
        (result, counts)
    };
    let (served, (count, patterns)) = start(&[]);
    // Both patterns above, and those of the modules the import loads.
    assert!(
        patterns.expect("the re cache debug line") >= 2,
        "{patterns:?}"
    );
    assert_eq!(served["words"], serde_json::json!(["Hello", "World"]));
    assert_eq!(served["first"], serde_json::json!(["12", "34"]));
    assert_eq!(served["escape"], "\\d");
    let warned = served["warnings"].as_array().unwrap();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned.iter().any(|w| w == "FutureWarning"), "{warned:?}");
    let (compiled, none) = start(&[("PYKILN_PRECOMPILED", "off")]);
    assert_eq!(served, compiled, "served from the archive vs compiled");
    assert_eq!(
        none,
        (None, None),
        "PYKILN_PRECOMPILED=off installs nothing"
    );
    // The dataclass's methods, the named tuple's __new__, both forward references,
    // the exec/eval strings and both compile() calls of code objects.
    let count = count.expect("the debug line counting served strings");
    assert!(count >= 8, "served {count}");
    assert_eq!(served["blank_eval"], 43);
    assert_eq!(served["from_exec"], 42);
    assert_eq!(served["lazy"], 3);
    assert_eq!(served["eager"], "name 'undefined_name' is not defined");
    assert_eq!(served["tree"], "Expression");
    assert_eq!(served["in_function"], 10);
    assert_eq!(served["syntax"][1], "<string>");
    assert_eq!(
        served["builtins_after_import"],
        serde_json::json!(["builtins", "builtins", "builtins"])
    );
    let events = served["compile_events"].as_array().unwrap();
    for name in ["<lazy>", "<eager>", "<ast>", "<string>"] {
        assert!(events.iter().any(|e| e == name), "{name}: {events:?}");
    }
}

/// `pykiln python`'s answers that need no build: what is missing, and where it looked.
#[test]
fn own_interpreter_commands_name_what_is_missing() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let empty = d.path().join("sources");
    std::fs::create_dir_all(&empty).unwrap();
    let out = run(pykiln().args(["python", "sources", "--check"]).arg(&empty));
    fails_with(&out, &["cpython 3.11.2", "openssl 3.0.20", "--sources DIR"]);
    // A wrong archive under a pinned name is named with both hashes.
    std::fs::write(empty.join("Python-3.11.2.tgz"), b"not python").unwrap();
    let out = run(pykiln().args(["python", "sources", "--check"]).arg(&empty));
    fails_with(
        &out,
        &["Python-3.11.2.tgz is not cpython 3.11.2", "2411c74b"],
    );
    let out = run(pykiln()
        .args(["python", "find", "3.11", "--cache-dir"])
        .arg(&cache));
    fails_with(
        &out,
        &["no pykiln Python 3.11", "pykiln python install 3.11"],
    );
    let out = run(pykiln()
        .args(["python", "install", "3.9", "--offline", "--cache-dir"])
        .arg(&cache));
    fails_with(&out, &["cannot build Python 3.9", "3.11.2"]);
    // Offline with nothing to build from: every missing archive is named, nothing built.
    let out = run(pykiln()
        .args(["python", "install", "3.11", "--offline", "--sources"])
        .arg(&empty)
        .arg("--cache-dir")
        .arg(&cache));
    fails_with(&out, &["Python-3.11.2.tgz is not cpython 3.11.2"]);
    assert!(
        !cache.join("toolchain").exists(),
        "nothing is installed before the sources are there"
    );
    let out = run(pykiln()
        .args(["python", "list", "--json", "--cache-dir"])
        .arg(&cache));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    // Removing: nothing of that version is an error that says where to look; nothing
    // superseded is not.
    let out = run(pykiln()
        .args(["python", "remove", "3.11", "--cache-dir"])
        .arg(&cache));
    fails_with(&out, &["no pykiln Python 3.11", "pykiln python list"]);
    let out = run(pykiln()
        .args(["python", "remove", "--superseded", "--cache-dir"])
        .arg(&cache));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing superseded"), "{}", text(&out));
    // Another CPU: only pykiln's own interpreter for it will do, and the error says how
    // to build one; a target pykiln has no recipe for is refused by name.
    let out = run(pykiln()
        .args([
            "build",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/notes-server"),
            "--python",
            "3.11",
            "--target",
            "aarch64-unknown-linux-gnu",
            "--cache-dir",
        ])
        .arg(&cache));
    fails_with(
        &out,
        &["pykiln python install 3.11 --target aarch64-unknown-linux-gnu"],
    );
    let out = run(pykiln()
        .args([
            "python",
            "install",
            "3.11",
            "--offline",
            "--target",
            "riscv64gc-unknown-linux-gnu",
            "--cache-dir",
        ])
        .arg(&cache));
    fails_with(
        &out,
        &["riscv64gc-unknown-linux-gnu", "aarch64-unknown-linux-gnu"],
    );
}
