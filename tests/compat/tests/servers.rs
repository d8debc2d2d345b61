//! Real MCP servers from PyPI whose code finds its data through `__file__` in ways no
//! source analysis keeps up with (`servers/*.json` says which, and why): each is built
//! from its requirements alone — the pipeline `pykiln build --from` runs — appended to
//! a runner as the CLI does, and driven through the same MCP session (initialize,
//! tools/list, tool calls that reach that data) next to the same pins in a venv. The
//! answers must be identical, and the build must have given the distributions their
//! on-disk views.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod venv;

use pykiln_build::{App, Source};
use pykiln_test_support::mcp::Session;
use serde_json::{Value, json};

#[derive(serde::Deserialize)]
struct Server {
    why: String,
    requirements: Vec<String>,
    script: String,
    args: Vec<String>,
    /// (distribution, one of its top-level names) that must be served from a view.
    views: Vec<(String, String)>,
    calls: Vec<(String, Value)>,
}

fn server(name: &str) -> Server {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("servers")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A venv holding exactly the server's requirements.
fn venv(s: &Server) -> PathBuf {
    let install: Vec<&std::ffi::OsStr> = s.requirements.iter().map(|r| r.as_ref()).collect();
    venv::cached(
        "server-venv",
        s.requirements.join("\n").as_bytes(),
        &install,
    )
}

/// The server packed from its requirements and appended to the runner: what
/// `pykiln build --from REQ… --script NAME` writes.
fn packed(s: &Server, work: &Path) -> (PathBuf, pykiln_archive::Manifest) {
    let archive = work.join("archive.pkar");
    let report = App::new(Source::Requirements {
        specs: s.requirements.clone(),
        file: None,
        script: Some(s.script.clone()),
    })
    .compression_level(3)
    .build_to(&archive)
    .unwrap_or_else(|e| panic!("building {:?}: {e:#}", s.requirements));
    let runner = std::fs::read(env!("CARGO_BIN_EXE_compat-runner")).unwrap();
    let archive = std::fs::read(&archive).unwrap();
    let (padding, trailer) = pykiln_archive::trailer::appendix(runner.len() as u64, &archive);
    let bin = work.join(&s.script);
    std::fs::write(&bin, [&runner[..], &padding, &archive, &trailer].concat()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (bin, report.manifest)
}

/// Tool names, then each call's result with the session's directory written `{dir}`.
fn session(program: &Path, s: &Server) -> (Vec<String>, Vec<Value>) {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().to_string_lossy().into_owned();
    let mut cmd = Command::new(program);
    cmd.args(&s.args)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .current_dir(home.path());
    let mut session = Session::spawn(cmd);
    let init = session.initialize();
    assert!(
        init.get("result").is_some(),
        "{}: {init}",
        program.display()
    );
    let tools = session.request("tools/list", json!({}));
    let mut names: Vec<String> = tools["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: tools/list: {tools}", program.display()))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    let mut results = Vec::new();
    for (tool, args) in &s.calls {
        let args: Value = serde_json::from_str(&args.to_string().replace("{dir}", &dir)).unwrap();
        let r = session.request("tools/call", json!({"name": tool, "arguments": args}));
        let text = r.to_string().replace(&dir, "{dir}");
        results.push(serde_json::from_str::<Value>(&text).unwrap()["result"].clone());
    }
    let status = session.finish();
    assert!(status.success(), "{}: {status:?}", program.display());
    (names, results)
}

fn same_as_a_venv(name: &str) {
    let s = server(name);
    let work = tempfile::tempdir().unwrap();
    let (bin, manifest) = packed(&s, work.path());
    let views: BTreeMap<&str, &Vec<String>> = manifest
        .on_disk
        .iter()
        .map(|g| (g.name.as_str(), &g.tops))
        .collect();
    for (dist, top) in &s.views {
        assert!(
            views.get(dist.as_str()).is_some_and(|t| t.contains(top)),
            "{name}: no on-disk view of {dist} holding {top} ({}); views: {views:?}",
            s.why
        );
    }
    let venv = venv(&s);
    let (venv_tools, venv_results) = session(&venv.join("bin").join(&s.script), &s);
    for (call, r) in s.calls.iter().zip(&venv_results) {
        assert_eq!(
            r["isError"], false,
            "{name} in the venv: {} failed: {r}",
            call.0
        );
    }
    let (tools, results) = session(&bin, &s);
    assert_eq!(tools, venv_tools, "{name}: tools/list");
    for ((call, packed), venv) in s.calls.iter().zip(&results).zip(&venv_results) {
        assert_eq!(packed, venv, "{name}: {} differs from the venv's", call.0);
    }
}

#[test]
fn excel_mcp_server_finds_its_data_beside_its_modules() {
    same_as_a_venv("excel-mcp-server");
}

#[test]
fn office_powerpoint_mcp_server_finds_its_data_at_the_import_root() {
    same_as_a_venv("office-powerpoint-mcp-server");
}
