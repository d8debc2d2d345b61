//! The binary runs where no Python exists: a bubblewrap root holding only the binary
//! and the glibc family, with an empty environment.

mod common;

use common::{Session, exercise_notes_server};
use std::path::{Path, PathBuf};
use std::process::Command;

const GLIBC_FAMILY: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
];

fn find_lib(name: &str) -> Option<PathBuf> {
    [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
}

fn bwrap() -> Option<PathBuf> {
    let found = ["/usr/bin/bwrap", "/bin/bwrap"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() && std::env::var_os("PYKILN_SKIP_SANDBOX").is_none() {
        panic!(
            "bubblewrap is required for this test (apt-get install bubblewrap), or set PYKILN_SKIP_SANDBOX=1"
        );
    }
    found
}

fn sandbox_command(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bwrap().unwrap());
    cmd.env_clear()
        .arg("--bind")
        .arg(root)
        .arg("/")
        .args([
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--unshare-all",
            "--die-with-parent",
            "--clearenv",
        ])
        .args([
            "--setenv",
            "HOME",
            "/tmp",
            "--setenv",
            "PYKILN_NOTES_DB",
            "/tmp/notes.db",
        ])
        .arg("/app/pykiln-notes")
        .args(args);
    cmd
}

fn make_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["app", "lib/x86_64-linux-gnu", "lib64", "tmp", "proc", "dev"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy(common::binary(), r.join("app/pykiln-notes")).unwrap();
    for name in GLIBC_FAMILY {
        if let Some(p) = find_lib(name) {
            std::fs::copy(&p, r.join("lib/x86_64-linux-gnu").join(name)).unwrap();
        }
    }
    std::fs::copy(
        r.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        r.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    root
}

#[test]
fn runs_in_a_root_without_python() {
    if bwrap().is_none() {
        return;
    }
    let root = make_root();
    // Nothing Python-shaped is in the root.
    for e in walkdir(root.path()) {
        let s = e.to_string_lossy();
        assert!(
            !s.contains("python") && !s.contains("sqlite") && !s.contains("libssl"),
            "{s}"
        );
    }
    let mut s = Session::spawn(sandbox_command(root.path(), &[]));
    exercise_notes_server(&mut s);
    assert!(s.finish().success());

    let out = sandbox_command(root.path(), &["--pykiln", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify in the sandbox:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = common::stdout_of(&mut sandbox_command(
        root.path(),
        &[
            "--pykiln",
            "python",
            "-c",
            "import ssl, sqlite3, zlib, lzma, bz2, ctypes, decimal; print(ssl.OPENSSL_VERSION)",
        ],
    ));
    assert!(out.contains("OpenSSL"), "{out}");
}

fn walkdir(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walkdir(&path));
            }
            out.push(path);
        }
    }
    out
}
