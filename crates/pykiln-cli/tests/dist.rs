//! Licenses, SBOM and release artifacts, checked by each format's own tools: the
//! CycloneDX library's schema validator, `sha256sum -c`, tar, the official MCP Bundle
//! CLI (`mcpb validate`, `info`, `unpack`) and an MCP handshake with the unpacked
//! server by the official inspector CLI.

use pykiln_test_support::{self as support, CommandExt as _};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

const TIME: &str = "mcp-server-time==2026.10.19";

fn pykiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pykiln"))
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output_within(support::LONG);
    assert!(out.status.success(), "{cmd:?}\n{}", text(&out));
    out
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// mcp-server-time built once for this file's tests: (binary, the build's stderr).
fn built() -> &'static (PathBuf, String) {
    static BUILT: OnceLock<(tempfile::TempDir, (PathBuf, String))> = OnceLock::new();
    &BUILT
        .get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            let bin = d.path().join("mcp-server-time");
            let out = ok(pykiln().args(["build", "--from", TIME, "-o"]).arg(&bin));
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (d, (bin, stderr))
        })
        .1
}

/// The CycloneDX validator's python (tests/prereqs makes it).
fn validate_sbom(files: &[&Path]) -> Output {
    let python = std::env::var_os("PYKILN_CYCLONEDX_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").unwrap())
                .join(".cache/pykiln-ci/cyclonedx-11.12.0/bin/python")
        });
    assert!(
        python.is_file(),
        "{} is missing: run tests/prereqs (it installs cyclonedx-python-lib)",
        python.display()
    );
    Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate-sbom.py"))
        .args(files)
        .output_within(support::TIMEOUT)
}

fn node_tool(package_file: &str) -> PathBuf {
    let p = repo().join("tests/js/node_modules").join(package_file);
    assert!(
        p.is_file(),
        "{} is missing: run tests/prereqs (npm ci in tests/js)",
        p.display()
    );
    p
}

#[test]
fn licenses_and_sbom_cover_everything_packed() {
    let (bin, build_stderr) = built();
    let d = tempfile::tempdir().unwrap();
    let inspect: Value =
        serde_json::from_slice(&ok(pykiln().arg("inspect").arg(bin).arg("--json")).stdout).unwrap();
    let dists: Vec<(String, String)> = inspect["distributions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| {
            Some((
                d["name"].as_str()?.to_string(),
                d["version"].as_str()?.to_string(),
            ))
        })
        // Not distributions: "Python standard library", "pykiln", …
        .filter(|(name, _)| !name.contains(' ') && name != "pykiln")
        .collect();
    assert!(dists.len() > 20, "{inspect}");

    // Every packed distribution has its license text, or the build named it.
    let licenses =
        String::from_utf8(ok(Command::new(bin).args(["--pykiln", "licenses"])).stdout).unwrap();
    let warned: Vec<&str> = build_stderr
        .lines()
        .filter(|l| l.contains("without a license text") || l.contains("no license information"))
        .collect();
    for (name, version) in &dists {
        let heading = format!("{name} {version} (Python distribution; license: ");
        let at = licenses
            .find(&heading)
            .unwrap_or_else(|| panic!("{heading} missing from --pykiln licenses"));
        // The section's body: after the heading's closing rule, up to the next rule.
        let rule = format!("\n{}\n", "=".repeat(78));
        let after = &licenses[at..];
        let body = &after[after.find(&rule).unwrap() + rule.len()..];
        let body = &body[..body.find(&rule).unwrap_or(body.len())];
        let has_text =
            body.contains("\n--- ") && !body.contains("(its wheel ships no license text)");
        if !has_text {
            assert!(
                warned
                    .iter()
                    .any(|w| w.contains(&format!("{name} {version}"))),
                "{name} {version} has no text and no build warning names it:\n{build_stderr}"
            );
        }
    }
    // mcp-server-time's wheel ships no license file: named in the build's warning.
    assert!(
        warned
            .iter()
            .any(|w| w.contains("mcp-server-time 2026.10.19")),
        "{build_stderr}"
    );
    for part in [
        "CPython 3.",
        "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2",
        "Rust crates linked",
        "pyo3 0.",
        "SQLite 3.",
        "Apache License",
    ] {
        assert!(
            licenses.contains(part),
            "{part} missing from --pykiln licenses"
        );
    }

    // The SBOM: valid CycloneDX 1.6 (CycloneDX's validator), every distribution with
    // its purl and file hashes, CPython, SQLite, the Rust crates.
    let sbom_path = d.path().join("sbom.json");
    let sbom = ok(Command::new(bin).args(["--pykiln", "sbom"])).stdout;
    std::fs::write(&sbom_path, &sbom).unwrap();
    let out = validate_sbom(&[&sbom_path]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&sbom).unwrap();
    let purls: BTreeMap<String, &Value> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| Some((c["purl"].as_str()?.to_string(), c)))
        .collect();
    for (name, version) in &dists {
        let purl = format!(
            "pkg:pypi/{}@{version}",
            name.to_lowercase().replace(['_', '.'], "-")
        );
        let c = purls.get(&purl).unwrap_or_else(|| panic!("{purl} missing"));
        let files = c["components"].as_array().unwrap();
        assert!(!files.is_empty(), "{purl} lists no files");
        for f in files {
            let hash = f["hashes"][0]["content"].as_str().unwrap();
            assert_eq!(hash.len(), 64, "{f}");
        }
    }
    // A file hash is the installed file's (as in the wheel's RECORD): check one.
    let time = purls["pkg:pypi/mcp-server-time@2026.10.19"];
    assert!(
        time["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "mcp_server_time/server.py"),
        "{time}"
    );
    assert!(
        purls
            .keys()
            .any(|p| p.starts_with("pkg:generic/cpython@3."))
    );
    assert!(purls.keys().any(|p| p.starts_with("pkg:generic/sqlite@3.")));
    assert!(purls.keys().any(|p| p.starts_with("pkg:cargo/pyo3@")));
    assert!(
        purls
            .keys()
            .any(|p| p.starts_with("pkg:cargo/pykiln-runner@"))
    );
    // Build-time only crates are not in the binary.
    assert!(
        !purls
            .keys()
            .any(|p| p.starts_with("pkg:cargo/pyo3-build-config@"))
    );

    // The validator does fail on a broken document (so its pass above means something).
    let broken = d.path().join("broken.json");
    let mut bad = doc.clone();
    bad["components"][0]["type"] = "no-such-type".into();
    std::fs::write(&broken, bad.to_string()).unwrap();
    let out = validate_sbom(&[&broken]);
    assert!(!out.status.success(), "{}", text(&out));
}

fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn release_artifacts_are_reproducible_and_pass_their_formats_tools() {
    let (bin, _) = built();
    let d = tempfile::tempdir().unwrap();
    let (one, two) = (d.path().join("one"), d.path().join("two/nested"));
    ok(pykiln().arg("dist").arg(bin).arg("-o").arg(&one));
    ok(pykiln().arg("dist").arg(bin).arg("-o").arg(&two));
    let (a, b) = (files_of(&one), files_of(&two));
    let stem = "mcp-server-time-2026.10.19-x86_64-unknown-linux-gnu";
    let names: Vec<&str> = a.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            &format!("{stem}.mcpb"),
            &format!("{stem}.oci.tar"),
            &format!("{stem}.tar.gz"),
            &format!("{stem}.zip")
        ]
    );
    assert!(a == b, "two dist runs differ");
    let out = ok(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&one));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).matches(": OK").count(),
        4
    );

    // The tarball, extracted by tar: the binary runs, the SBOM carries its hash.
    let x = d.path().join("x");
    std::fs::create_dir(&x).unwrap();
    ok(Command::new("tar")
        .arg("xzf")
        .arg(one.join(format!("{stem}.tar.gz")))
        .arg("-C")
        .arg(&x));
    let top = x.join(stem);
    let exe = top.join("mcp-server-time");
    let out = ok(Command::new(&exe).args(["--pykiln", "selftest"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("selftest: ok"),
        "{}",
        text(&out)
    );
    let out = validate_sbom(&[&top.join("sbom.cdx.json")]);
    assert!(out.status.success(), "{}", text(&out));
    let sbom: Value =
        serde_json::from_slice(&std::fs::read(top.join("sbom.cdx.json")).unwrap()).unwrap();
    let hash = format!("{:x}", Sha256::digest(std::fs::read(bin).unwrap()));
    assert_eq!(sbom["metadata"]["component"]["hashes"][0]["content"], hash);
    let licenses = ok(Command::new(bin).args(["--pykiln", "licenses"])).stdout;
    assert_eq!(
        std::fs::read(top.join("THIRD_PARTY_LICENSES")).unwrap(),
        licenses
    );
    let readme = std::fs::read_to_string(top.join("README.md")).unwrap();
    assert!(
        readme.contains("\"mcpServers\"") && readme.contains("\"servers\""),
        "{readme}"
    );

    // The zip holds the same files, the binary executable.
    let out = ok(Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, oct(i.external_attr >> 16), i.file_size)",
        ])
        .arg(one.join(format!("{stem}.zip"))));
    let listing = String::from_utf8_lossy(&out.stdout);
    let size = std::fs::metadata(bin).unwrap().len();
    assert!(
        listing.contains(&format!("{stem}/mcp-server-time 0o100755 {size}")),
        "{listing}"
    );
    for f in ["README.md", "THIRD_PARTY_LICENSES", "sbom.cdx.json"] {
        assert!(
            listing.contains(&format!("{stem}/{f} 0o100644")),
            "{listing}"
        );
    }

    // The MCP Bundle, by the official mcpb CLI: manifest valid, bundle readable,
    // unpacked server completes an MCP handshake with the official inspector.
    let mcpb = node_tool("@anthropic-ai/mcpb/dist/cli/cli.js");
    let bundle = one.join(format!("{stem}.mcpb"));
    let unpacked = d.path().join("unpacked");
    let out = ok(Command::new("node")
        .arg(&mcpb)
        .arg("unpack")
        .arg(&bundle)
        .arg(&unpacked));
    assert!(
        text(&out).contains("unpacked successfully"),
        "{}",
        text(&out)
    );
    let out = ok(Command::new("node")
        .arg(&mcpb)
        .arg("validate")
        .arg(unpacked.join("manifest.json")));
    assert!(text(&out).contains("validation passes"), "{}", text(&out));
    ok(Command::new("node").arg(&mcpb).arg("info").arg(&bundle));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["server"]["type"], "binary");
    assert_eq!(
        manifest["server"]["mcp_config"]["command"],
        "${__dirname}/server/mcp-server-time"
    );
    assert_eq!(manifest["compatibility"]["platforms"][0], "linux");
    assert_eq!(manifest["version"], "2026.10.19");
    assert!(
        manifest["description"].as_str().unwrap().contains("time"),
        "{manifest}"
    );
    let server = unpacked.join("server/mcp-server-time");
    let inspector = node_tool("@modelcontextprotocol/inspector-cli/build/index.js");
    let out = ok(Command::new("node")
        .arg(&inspector)
        .arg(&server)
        .args([
            "--method",
            "tools/call",
            "--tool-name",
            "get_current_time",
            "--tool-arg",
            "timezone=Europe/Paris",
        ])
        .current_dir(repo().join("tests/js/node_modules")));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["isError"], false, "{result}");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Europe/Paris"),
        "{result}"
    );
}

#[test]
fn the_demo_declares_its_mcpb_settings_in_pyproject() {
    let d = tempfile::tempdir().unwrap();
    // The notes demo's [tool.pykiln.mcpb], through a CLI build of the project.
    let notes = d.path().join("pykiln-notes");
    ok(pykiln()
        .arg("build")
        .arg(repo().join("examples/notes-server"))
        .arg("--no-startup-order")
        .arg("-o")
        .arg(&notes));
    ok(pykiln()
        .arg("dist")
        .arg(&notes)
        .args(["--formats", "mcpb", "-o"])
        .arg(d.path()));
    let bundle = d
        .path()
        .join("pykiln-notes-0.1.0-x86_64-unknown-linux-gnu.mcpb");
    let out = ok(Command::new("python3")
        .args(["-c", "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read('manifest.json'))"])
        .arg(&bundle));
    let manifest_path = d.path().join("manifest.json");
    std::fs::write(&manifest_path, &out.stdout).unwrap();
    ok(Command::new("node")
        .arg(node_tool("@anthropic-ai/mcpb/dist/cli/cli.js"))
        .arg("validate")
        .arg(&manifest_path));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["display_name"], "pykiln notes");
    assert_eq!(m["author"]["name"], "The pykiln developers");
    assert_eq!(
        m["server"]["mcp_config"]["env"]["PYKILN_NOTES_DB"],
        "${user_config.database}"
    );
    assert_eq!(m["user_config"]["database"]["type"], "file");
    assert_eq!(m["user_config"]["database"]["required"], false);
}

#[test]
fn bad_input_gives_one_clear_error_and_no_output() {
    let (bin, _) = built();
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("out");

    // Not a pykiln binary.
    let not = d.path().join("not-pykiln");
    std::fs::copy("/bin/true", &not).unwrap();
    let out = pykiln()
        .arg("dist")
        .arg(&not)
        .arg("-o")
        .arg(&out_dir)
        .output_within(support::TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a pykiln binary") && err.contains("not-pykiln"),
        "{err}"
    );
    assert!(!out_dir.exists());

    // An unknown format: clap's usage error names it and the known ones.
    let out = pykiln()
        .arg("dist")
        .arg(bin)
        .args(["--formats", "tar.gz,rpm", "-o"])
        .arg(&out_dir)
        .output_within(support::TIMEOUT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'rpm'") && err.contains("mcpb"), "{err}");
    assert!(!out_dir.exists());

    // An output directory that cannot be written (we may be root: /proc refuses all).
    let out = pykiln()
        .arg("dist")
        .arg(bin)
        .args(["-o", "/proc/pykiln-dist"])
        .output_within(support::TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/proc/pykiln-dist"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A read-only directory (a read-only bind mount would be the same): nothing
    // half-written is left in it.
    let ro = d.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let out = pykiln()
        .arg("dist")
        .arg(bin)
        .arg("-o")
        .arg(&ro)
        .env("SOURCE_DATE_EPOCH", "not-a-number")
        .output_within(support::TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SOURCE_DATE_EPOCH"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
}

/// `cmd` with `input` on stdin: its output (bounded in time).
fn with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    support::output_of(child, support::TIMEOUT, "a verifying tool")
}

#[test]
fn signed_releases_verify_with_ssh_keygen_and_minisign() {
    let (bin, _) = built();
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    // The keys a user already has: an ed25519 SSH key, a minisign key pair, and a
    // second SSH key that is not the publisher's.
    for name in ["release", "stranger"] {
        ok(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(keys.join(name)));
    }
    ok(Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(keys.join("minisign.pub"))
        .arg("-s")
        .arg(keys.join("minisign.key")));
    let allowed = |key: &str| {
        let public = std::fs::read_to_string(keys.join(format!("{key}.pub"))).unwrap();
        let path = keys.join(format!("allowed-{key}"));
        std::fs::write(&path, format!("release@example.org {public}")).unwrap();
        path
    };

    let signed_dist = |out_dir: &Path| {
        ok(pykiln()
            .arg("dist")
            .arg(bin)
            .arg("--sign")
            .arg(keys.join("release"))
            .arg("--sign")
            .arg(keys.join("minisign.key"))
            .arg("-o")
            .arg(out_dir))
    };
    let out_dir = d.path().join("dist");
    let out = signed_dist(&out_dir);
    let stem = "mcp-server-time-2026.10.19-x86_64-unknown-linux-gnu";
    let listed = String::from_utf8_lossy(&out.stdout);
    for f in ["SHA256SUMS.sig", "SHA256SUMS.minisig"] {
        assert!(listed.contains(f), "{listed}");
    }
    let sums = std::fs::read(out_dir.join("SHA256SUMS")).unwrap();
    let sums_text = String::from_utf8_lossy(&sums);
    assert!(
        sums_text.contains(&format!("{stem}.oci.manifest.sig"))
            && sums_text.contains(&format!("{stem}.oci.manifest.minisig")),
        "{sums_text}"
    );

    // The README's commands: the publisher's key verifies SHA256SUMS, then sha256sum
    // checks every artifact against it.
    let verify = |allowed_signers: &Path, data: &[u8], sig: &Path| {
        with_stdin(
            Command::new("ssh-keygen")
                .args(["-Y", "verify", "-f"])
                .arg(allowed_signers)
                .args(["-I", "release@example.org", "-n", "file", "-s"])
                .arg(sig),
            data,
        )
    };
    let good = verify(&allowed("release"), &sums, &out_dir.join("SHA256SUMS.sig"));
    assert!(good.status.success(), "{}", text(&good));
    assert!(String::from_utf8_lossy(&good.stdout).contains("Good \"file\" signature"));
    let out = ok(Command::new("minisign")
        .args(["-V", "-p"])
        .arg(keys.join("minisign.pub"))
        .arg("-m")
        .arg(out_dir.join("SHA256SUMS")));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pykiln dist: SHA256SUMS of"),
        "the trusted comment: {}",
        text(&out)
    );
    ok(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out_dir));

    // The wrong key fails; so does an edited SHA256SUMS, and an edited artifact fails
    // the checksums the signature vouches for.
    let wrong = verify(&allowed("stranger"), &sums, &out_dir.join("SHA256SUMS.sig"));
    assert!(!wrong.status.success(), "{}", text(&wrong));
    let mut edited = sums.clone();
    edited[0] ^= 1;
    let bad = verify(
        &allowed("release"),
        &edited,
        &out_dir.join("SHA256SUMS.sig"),
    );
    assert!(!bad.status.success(), "{}", text(&bad));
    std::fs::write(out_dir.join("edited"), &edited).unwrap();
    let out = Command::new("minisign")
        .args(["-V", "-p"])
        .arg(keys.join("minisign.pub"))
        .arg("-x")
        .arg(out_dir.join("SHA256SUMS.minisig"))
        .arg("-m")
        .arg(out_dir.join("edited"))
        .output_within(support::TIMEOUT);
    assert!(!out.status.success(), "{}", text(&out));
    let zip = out_dir.join(format!("{stem}.zip"));
    let mut bytes = std::fs::read(&zip).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&zip, bytes).unwrap();
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out_dir)
        .output_within(support::TIMEOUT);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{stem}.zip: FAILED")));

    // The image: its manifest as skopeo serves it (what a registry keeps) verifies
    // against the manifest signature.
    let archive = format!(
        "oci-archive:{}",
        out_dir.join(format!("{stem}.oci.tar")).display()
    );
    let manifest = ok(Command::new("skopeo").args(["inspect", "--raw", &archive])).stdout;
    let good = verify(
        &allowed("release"),
        &manifest,
        &out_dir.join(format!("{stem}.oci.manifest.sig")),
    );
    assert!(good.status.success(), "{}", text(&good));
    ok(Command::new("minisign")
        .args(["-V", "-p"])
        .arg(keys.join("minisign.pub"))
        .arg("-x")
        .arg(out_dir.join(format!("{stem}.oci.manifest.minisig")))
        .arg("-m")
        .arg({
            let m = d.path().join("manifest.json");
            std::fs::write(&m, &manifest).unwrap();
            m
        }));

    // Signatures are as reproducible as the artifacts.
    let again = d.path().join("again");
    signed_dist(&again);
    for f in ["SHA256SUMS", "SHA256SUMS.sig", "SHA256SUMS.minisig"] {
        assert_eq!(
            std::fs::read(out_dir.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }

    // A public minisign key, a missing key and two SSH keys are refused before any
    // work, and nothing is written.
    let none = d.path().join("none");
    for keys_given in [
        vec![keys.join("minisign.pub")],
        vec![keys.join("missing")],
        vec![keys.join("release"), keys.join("stranger")],
    ] {
        let mut cmd = pykiln();
        cmd.arg("dist").arg(bin);
        for k in &keys_given {
            cmd.arg("--sign").arg(k);
        }
        let out = cmd.arg("-o").arg(&none).output_within(support::TIMEOUT);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(keys_given.last().unwrap().to_str().unwrap()),
            "{err}"
        );
        assert!(!none.exists());
    }
}
