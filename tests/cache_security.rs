//! The native-image cache cannot be turned against its user: the attacks of issue 15
//! replayed with a second uid (`nobody`, through `setpriv`) against the demo binary
//! running as root with `PYKILN_NO_MEMFD=1` (every image through the cache), and the
//! default placement (images file-backed) under racing first starts and with a
//! cache others can write to.
//!
//! Root only (it needs a second uid); skipped with a message otherwise.

mod common;
use common::support::{self, CommandExt as _};

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: &str = "65534";

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Run a shell snippet as `nobody`.
fn as_nobody(script: &str) -> std::process::Child {
    Command::new("setpriv")
        .args([
            "--reuid",
            NOBODY,
            "--regid",
            NOBODY,
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("setpriv (util-linux) runs")
}

/// A shared library whose constructor creates `marker`: the attacker's payload.
fn payload(dir: &Path, marker: &Path) -> std::path::PathBuf {
    let src = dir.join("evil.c");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void pwn(void) {{ FILE *f = fopen(\"{}\", \"w\"); if (f) fclose(f); }}\n",
            marker.display()
        ),
    )
    .unwrap();
    let so = dir.join("evil.so");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status_within(support::TIMEOUT);
    assert!(st.success());
    std::fs::set_permissions(&so, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    so
}

/// The binary run as root on a cache under `xdg`, importing native stdlib modules.
fn run_binary(xdg: &Path) -> std::process::Output {
    Command::new(common::binary())
        .env_clear()
        .env("XDG_CACHE_HOME", xdg)
        .env("PYKILN_NO_MEMFD", "1")
        .args([
            "--pykiln",
            "python",
            "-c",
            // Which of them are extension modules (not built into libpython) depends on
            // the interpreter: pyenv's build has all of them as `.so`, Debian's only
            // `_json` and `_decimal`; the second line says how many images to expect.
            "import sys, math, _json, select, _decimal; print(math.pi); \
             print(sum(m not in sys.builtin_module_names for m in ('math', '_json', 'select', '_decimal')))",
        ])
        .stdin(Stdio::null())
        .output_within(support::TIMEOUT)
}

#[test]
fn a_cache_shared_with_another_user_is_refused_and_never_loaded_from() {
    if !is_root() {
        eprintln!("skipped: needs root for a second uid");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tools = t.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    let marker = t.path().join("PWNED");
    let evil = payload(&tools, &marker);
    // A root-owned file the symlink attack would overwrite.
    let victim = t.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();

    // A world-writable shared cache location that nobody controls.
    let shared = t.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();

    for layout in ["world-writable", "nobody-owned", "symlink"] {
        let xdg = shared.join(layout);
        let cache = xdg.join("pykiln");
        let script = match layout {
            // The attacker pre-creates the cache open to everyone, plants symlinks at
            // every temp-file name the old runtime used, and races: every image root
            // writes is replaced by the payload as soon as it appears.
            "world-writable" => format!(
                "mkdir -p {cache}/native && chmod -R 777 {xdg} && \
                 for p in $(seq 1 400); do ln -s {victim} {cache}/native/.math.$p.tmp; done; \
                 end=$(($(date +%s) + 8)); while [ $(date +%s) -lt $end ]; do \
                   for d in {cache}/native/*/; do for f in \"$d\"*; do \
                     [ -f \"$f\" ] && cp {evil} \"$f.x\" 2>/dev/null && mv -f \"$f.x\" \"$f\" 2>/dev/null; \
                   done; done; \
                 done",
                cache = cache.display(),
                xdg = xdg.display(),
                victim = victim.display(),
                evil = evil.display()
            ),
            // Private to nobody: root could write into it, but must not trust it.
            "nobody-owned" => format!(
                "mkdir -p {cache}/native && chmod 700 {cache}",
                cache = cache.display()
            ),
            // The cache root is a symlink nobody planted, pointing into their own dir.
            _ => format!(
                "mkdir -p {xdg}/real && ln -s {xdg}/real {cache}",
                xdg = xdg.display(),
                cache = cache.display()
            ),
        };
        std::fs::create_dir(&xdg).unwrap();
        std::os::unix::fs::chown(&xdg, Some(65534), Some(65534)).unwrap();
        let mut attacker = as_nobody(&script);
        if layout != "world-writable" {
            let setup = support::wait_within(&mut attacker, support::TIMEOUT, "the setup");
            assert!(setup.success(), "{layout}: setup");
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
        let started = Instant::now();
        let out = run_binary(&xdg);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{layout}: the binary used a cache another user controls:\n{stderr}"
        );
        assert!(
            out.status.code().is_some(),
            "{layout}: killed by a signal: {:?}",
            out.status
        );
        assert!(
            stderr.contains("refusing cache directory") && stderr.contains(&*xdg.to_string_lossy()),
            "{layout}: the error names the refused path:\n{stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        let _ = attacker.kill();
        let _ = attacker.wait();
        assert!(!marker.exists(), "{layout}: the attacker's code ran");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{layout}");
    }
}

#[test]
fn a_private_cache_works_and_an_unwritable_one_is_named() {
    let t = tempfile::tempdir().unwrap();
    let out = run_binary(t.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("3.14159")),
        "{stdout}"
    );
    let extensions: usize = lines.next().and_then(|l| l.parse().ok()).expect("a count");
    assert!(extensions >= 2, "{stdout}");
    let native = t.path().join("pykiln/native");
    let images: Vec<_> = std::fs::read_dir(&native).unwrap().collect();
    assert!(
        images.len() >= extensions,
        "images were cached under {native:?}"
    );
    // No temporary files left anywhere.
    for d in std::fs::read_dir(&native).unwrap().filter_map(Result::ok) {
        for f in std::fs::read_dir(d.path()).unwrap().filter_map(Result::ok) {
            assert!(!f.file_name().to_string_lossy().ends_with(".tmp"), "{f:?}");
        }
    }

    if !is_root() {
        return;
    }
    // Owned by us but read-only: the error names the directory (root ignores mode
    // bits, so drop to nobody for this one).
    let ro = tempfile::tempdir().unwrap();
    std::fs::set_permissions(ro.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let xdg = ro.path().join("ro");
    std::fs::create_dir(&xdg).unwrap();
    std::os::unix::fs::chown(&xdg, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(common::binary())
        .args(["--pykiln", "python", "-c", "import _json"])
        .env_clear()
        .env("XDG_CACHE_HOME", &xdg)
        .env("PYKILN_NO_MEMFD", "1")
        .output_within(support::TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&*xdg.join("pykiln").to_string_lossy())
            && stderr.contains("Permission denied"),
        "{stderr}"
    );
}

#[test]
fn a_full_disk_leaves_no_temporary_files() {
    if !is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8k,mode=0700", "pykiln-test"])
        .arg(&mnt)
        .spawn()
        .is_ok_and(|mut c| support::wait_within(&mut c, support::TIMEOUT, "mount").success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let out = run_binary(&mnt);
    let leftovers: Vec<String> = common_walk(&mnt)
        .into_iter()
        .filter(|p| p.ends_with(".tmp"))
        .collect();
    // With memfd available (the default), a full cache means loading from memory.
    let fallback = Command::new(common::binary())
        .env_clear()
        .env("XDG_CACHE_HOME", &mnt)
        .args([
            "--pykiln",
            "python",
            "-c",
            "import _json, _decimal; print('ok')",
        ])
        .output_within(support::TIMEOUT);
    let leftovers_after: Vec<String> = common_walk(&mnt)
        .into_iter()
        .filter(|p| p.ends_with(".tmp"))
        .collect();
    let _ = Command::new("umount")
        .arg(&mnt)
        .status_within(support::TIMEOUT);
    assert!(
        fallback.status.success() && fallback.stdout.starts_with(b"ok"),
        "{}",
        String::from_utf8_lossy(&fallback.stderr)
    );
    assert!(leftovers_after.is_empty(), "{leftovers_after:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an 8 KiB cache cannot hold the images"
    );
    assert!(
        stderr.contains("No space left on device") && stderr.contains(&*mnt.to_string_lossy()),
        "{stderr}"
    );
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn common_walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            out.push(p.to_string_lossy().into_owned());
            if p.is_dir() {
                out.extend(common_walk(&p));
            }
        }
    }
    out
}

/// The default placement (images file-backed, memfd available): servers starting
/// at the same time on an empty cache all work, each image ends up there once, no
/// temporary file is left; a cache another user can write to is not used (the image
/// comes from memory) and a warning names it.
#[test]
fn racing_first_starts_share_one_copy_and_an_unsafe_cache_is_skipped() {
    let t = tempfile::tempdir().unwrap();
    // `_decimal` is an extension module in pyenv's and Debian's builds alike
    // (`unicodedata` is built into Debian's).
    let import = "import pydantic_core, _decimal; print('ok')";
    let children: Vec<_> = (0..6)
        .map(|_| {
            Command::new(common::binary())
                .args(["--pykiln", "python", "-c", import])
                .env_clear()
                .env("XDG_CACHE_HOME", t.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = support::output_of(c, support::TIMEOUT, "a first start");
        assert!(
            out.status.success() && out.stdout.starts_with(b"ok"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let files = common_walk(&t.path().join("pykiln/native"));
    assert!(files.iter().all(|f| !f.ends_with(".tmp")), "{files:#?}");
    for name in ["pydantic_core._pydantic_core", "_decimal"] {
        let copies = files
            .iter()
            .filter(|f| f.ends_with(&format!("/{name}")))
            .count();
        assert_eq!(copies, 1, "{name}: {files:#?}");
    }

    if !is_root() {
        return;
    }
    // Group- and world-writable: another user could swap the images.
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(common::binary())
        .args(["--pykiln", "python", "-c", import])
        .env_clear()
        .env("XDG_CACHE_HOME", open.path())
        .output_within(support::TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&*open.path().to_string_lossy()) && stderr.contains("from memory"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("from memory").count(),
        1,
        "said once, not once per image: {stderr}"
    );
    assert!(
        !open.path().join("pykiln/native").exists()
            || common_walk(&open.path().join("pykiln/native")).is_empty(),
        "nothing written to the unsafe cache"
    );
}
