//! Bubblewrap roots that hold one binary and the glibc family, nothing else: where no
//! Python, no CA bundle and no zoneinfo exist unless a test puts them there.
#![allow(dead_code)]

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
    "libmvec.so.1",
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

/// The bwrap binary; panics with instructions when missing unless
/// `PYKILN_SKIP_SANDBOX` is set (then tests return early).
pub fn bwrap() -> Option<PathBuf> {
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

/// A root with `bin` copied to `/app/<name>` and the glibc family in /lib.
pub fn make_root(bin: &Path, name: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["app", "lib/x86_64-linux-gnu", "lib64", "tmp", "proc", "dev"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy(bin, r.join("app").join(name)).unwrap();
    for lib in GLIBC_FAMILY {
        if let Some(p) = find_lib(lib) {
            std::fs::copy(&p, r.join("lib/x86_64-linux-gnu").join(lib)).unwrap();
        }
    }
    std::fs::copy(
        r.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        r.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    root
}

/// `/app/<name> args…` inside `root`: every namespace unshared (no network but
/// loopback), empty environment but `HOME=/tmp` and `env`.
pub fn command(root: &Path, name: &str, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(bwrap().unwrap());
    cmd.env_clear().arg("--bind").arg(root).arg("/").args([
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--unshare-all",
        "--die-with-parent",
        "--clearenv",
        "--setenv",
        "HOME",
        "/tmp",
    ]);
    for (k, v) in env {
        cmd.args(["--setenv", k, v]);
    }
    cmd.arg(format!("/app/{name}")).args(args);
    cmd
}

/// Every path under `p`.
pub fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}
