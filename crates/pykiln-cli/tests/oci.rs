//! The OCI image of `pykiln dist`, checked the way a container user meets it: skopeo
//! reads it, umoci unpacks it into a runtime bundle (rootfs + the runtime config it
//! derives from the image), and the bundle's own process (user, environment, working
//! directory, entrypoint + CMD) runs in a bubblewrap root made of that rootfs alone
//! (crun needs cgroups this CI machine does not delegate; bwrap runs as the image's
//! user), where the official MCP
//! TypeScript SDK completes an HTTP session with it on 127.0.0.1.

use pykiln_test_support::{self as support, CommandExt as _};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A bwrap command whose root is `rootfs` and nothing else of this machine, running
/// as the bundle's user, with its environment and working directory.
fn in_image(rootfs: &Path, process: &Value) -> Command {
    // bwrap started as the image's user, so that its user namespace maps that uid to
    // itself and the rootfs's ownership (root's files, the user's home) holds inside.
    let (uid, gid) = (
        process["user"]["uid"].to_string(),
        process["user"]["gid"].to_string(),
    );
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &uid, "--regid", &gid, "--clear-groups", "bwrap"])
        .arg("--bind")
        .arg(rootfs)
        .arg("/")
        .args(["--proc", "/proc", "--dev", "/dev"])
        .args([
            "--unshare-all",
            "--share-net",
            "--die-with-parent",
            "--clearenv",
        ])
        .args(["--chdir", process["cwd"].as_str().unwrap()]);
    for e in process["env"].as_array().unwrap() {
        let (k, v) = e.as_str().unwrap().split_once('=').unwrap();
        cmd.args(["--setenv", k, v]);
    }
    cmd
}

#[test]
fn the_image_unpacks_and_serves_mcp_over_http_in_a_root_of_its_own() {
    let d = tempfile::tempdir().unwrap();
    // The image's user must reach the unpacked rootfs.
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let bin = d.path().join("pykiln-notes");
    ok(Command::new(env!("CARGO_BIN_EXE_pykiln"))
        .arg("build")
        .arg(repo().join("examples/notes-server"))
        .arg("--no-startup-order")
        .arg("-o")
        .arg(&bin));
    let out = ok(Command::new(env!("CARGO_BIN_EXE_pykiln"))
        .arg("dist")
        .arg(&bin)
        .args(["--formats", "oci", "-o"])
        .arg(d.path()));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("OCI image: ") && report.contains("MB compressed"),
        "{report}"
    );
    let image = d
        .path()
        .join("pykiln-notes-0.1.0-x86_64-unknown-linux-gnu.oci.tar");

    // skopeo reads the archive: image and config.
    let archive = format!("oci-archive:{}", image.display());
    let inspect: Value =
        serde_json::from_slice(&ok(Command::new("skopeo").args(["inspect", &archive])).stdout)
            .unwrap();
    assert_eq!(inspect["Architecture"], "amd64", "{inspect}");
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.version"],
        "0.1.0"
    );
    let config: Value = serde_json::from_slice(
        &ok(Command::new("skopeo").args(["inspect", "--config", &archive])).stdout,
    )
    .unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(c["Entrypoint"][0], "/app/pykiln-notes");
    assert_eq!(c["Cmd"][1], "http", "{config}");
    assert!(c["ExposedPorts"]["8000/tcp"].is_object(), "{config}");

    // umoci unpacks it into a runtime bundle.
    let layout = d.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    ok(Command::new("tar")
        .arg("xf")
        .arg(&image)
        .arg("-C")
        .arg(&layout));
    let bundle = d.path().join("bundle");
    ok(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:0.1.0", layout.display()))
        .arg(&bundle));
    // umoci makes the bundle directory private to root.
    std::fs::set_permissions(&bundle, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rootfs = bundle.join("rootfs");
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let process = &runtime["process"];
    assert_eq!(process["user"]["uid"], 65532, "{process}");

    // Nothing of this machine is visible inside: the root holds the image's top-level
    // directories only (/proc and /dev are bwrap's mounts on the image's mount points).
    let out = ok(in_image(&rootfs, process).args([
        "/app/pykiln-notes",
        "--pykiln",
        "python",
        "-c",
        "import os, ssl, zoneinfo; print(sorted(os.listdir('/'))); \
         print(os.getuid(), os.path.exists('/work'), os.path.exists('/root')); \
         print(ssl.create_default_context().cert_store_stats()['x509_ca'] > 100); \
         print(zoneinfo.ZoneInfo('Europe/Paris'))",
    ]));
    let seen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [
            "['app', 'dev', 'etc', 'home', 'lib', 'lib64', 'proc', 'sys', 'tmp', 'usr']",
            "65532 False False",
            "True",
            "Europe/Paris"
        ],
        "{}",
        text(&out)
    );

    // The image's health check passes inside it. Health checks are Docker's
    // extension of the config (skopeo's OCI view drops them): read the config blob.
    let blob = |digest: &str| -> Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let raw_config = blob(manifest["config"]["digest"].as_str().unwrap());
    let test = &raw_config["config"]["Healthcheck"]["Test"];
    assert_eq!(test[0], "CMD", "{raw_config}");
    let health: Vec<String> = test.as_array().unwrap()[1..]
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(health, ["/app/pykiln-notes", "--pykiln", "selftest"]);
    ok(in_image(&rootfs, process).args(&health));

    // The image's own command line (entrypoint + CMD, port remapped as `-p` would):
    // an MCP session over HTTP from the official TypeScript SDK.
    let port = free_port();
    let args: Vec<String> = process["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("8000", &port.to_string()))
        .collect();
    // It listens on every interface, so it refuses to start without a token (as
    // `docker run` without `-e PYKILN_NOTES_TOKEN` would)...
    let refused = in_image(&rootfs, process)
        .args(&args)
        .output_within(support::TIMEOUT);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("PYKILN_NOTES_TOKEN"),
        "{}",
        text(&refused)
    );
    // ...and serves a client that sends it.
    let token = "c0ffee00c0ffee00c0ffee00c0ffee00";
    let mut server = in_image(&rootfs, process)
        .args(["--setenv", "PYKILN_NOTES_TOKEN", token])
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.try_wait() {
            let mut err = String::new();
            server
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the server exited ({status}):\n{err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no listener on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = Command::new("node")
        .arg(repo().join("tests/js/client.mjs"))
        .arg("http")
        .arg(format!("http://127.0.0.1:{port}/mcp"))
        .arg(token)
        .output_within(support::TIMEOUT);
    let _ = server.kill();
    support::wait_within(&mut server, support::TIMEOUT, "the killed server");
    assert!(client.status.success(), "{}", text(&client));
    assert!(
        String::from_utf8_lossy(&client.stdout).contains("\"ok\":true"),
        "{}",
        text(&client)
    );
    // The database went to the app user's home inside the image.
    assert!(
        rootfs
            .join("home/app/.local/share/pykiln-notes/notes.db")
            .is_file()
    );
}
