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
    let so = dir.join("evil.so");
    support::marker_library(&so, marker);
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

/// The demo as an MCP server on the cache under `xdg`, with the runtime's debug log on
/// stderr (drained by a thread, returned by the handle).
fn spawn_server(xdg: &Path) -> (common::Session, std::thread::JoinHandle<Vec<u8>>) {
    let mut cmd = common::clean_command(&common::binary(), &xdg.join("notes.db"));
    cmd.env("XDG_CACHE_HOME", xdg)
        .env("PYKILN_LOG", "pykiln=debug")
        .stderr(Stdio::piped());
    let mut s = common::Session::spawn_with_stderr(cmd);
    let stderr = support::drain(s.child.stderr.take().expect("piped stderr"));
    (s, stderr)
}

/// What `names` (a file's last component) match among the cache's files: temporary
/// files, and the temporary and set-aside directories of interrupted view writers.
fn leftovers(cache: &Path) -> Vec<String> {
    common_walk(cache)
        .into_iter()
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or_default();
            name.ends_with(".tmp") || (p.contains("/pykiln/files/.") && name != ".pykiln-view")
        })
        .collect()
}

/// How many times each cache entry was written, by the debug log lines of `stderrs`.
fn writes(
    stderrs: &[String],
    line: &str,
    field: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for l in stderrs
        .iter()
        .flat_map(|s| s.lines())
        .filter(|l| l.contains(line))
    {
        let name = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix(field))
            .unwrap_or_default()
            .to_string();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// A desktop client starting all its servers at once: 20 first starts of the demo on an
/// empty cache all answer `initialize`, and each native image is written once (the
/// others wait for the writer, then use its copy), with no temporary file left. The
/// same for on-disk views, by 20 interpreters importing the demo's view packages.
#[test]
fn twenty_simultaneous_first_starts_write_each_image_and_view_once() {
    let t = tempfile::tempdir().unwrap();
    let servers: Vec<_> = (0..20).map(|_| spawn_server(t.path())).collect();
    let mut stderrs = Vec::new();
    for (mut s, stderr) in servers {
        let init = s.initialize();
        assert_eq!(
            init["result"]["serverInfo"]["name"], "pykiln-notes",
            "{init}"
        );
        let status = s.finish();
        let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
        assert!(status.success(), "{status:?}: {stderr}");
        stderrs.push(stderr);
    }
    let images = writes(&stderrs, "native image written to the cache", "name=");
    // pyenv's build has ~40 at start, Debian's (most of the standard library built in) fewer.
    assert!(images.len() >= 3, "{images:?}");
    assert!(
        images.values().all(|&n| n == 1),
        "written more than once: {images:?}"
    );
    let files = common_walk(&t.path().join("pykiln/native"));
    for name in images.keys() {
        let copies = files
            .iter()
            .filter(|f| f.ends_with(&format!("/{name}")))
            .count();
        assert_eq!(copies, 1, "{name}: {files:#?}");
    }
    assert_eq!(leftovers(t.path()), Vec::<String>::new());

    let import = "import jsonschema_specifications, pycparser, cffi.recompiler; print('ok')";
    let children: Vec<_> = (0..20)
        .map(|_| {
            Command::new(common::binary())
                .args(["--pykiln", "python", "-c", import])
                .env_clear()
                .env("XDG_CACHE_HOME", t.path())
                .env("PYKILN_LOG", "pykiln=debug")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut stderrs = Vec::new();
    for c in children {
        let out = support::output_of(c, support::TIMEOUT, "a first import");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success() && out.stdout.starts_with(b"ok"),
            "{stderr}"
        );
        stderrs.push(stderr);
    }
    let views = writes(&stderrs, "on-disk file view written", "group=");
    assert_eq!(views.len(), 3, "{views:?}");
    assert!(
        views.values().all(|&n| n == 1),
        "written more than once: {views:?}"
    );
    assert_eq!(leftovers(t.path()), Vec::<String>::new());
}

/// A first start killed (SIGKILL) while it writes to the cache (the moment a temporary
/// file or view directory appears, several times over) leaves a cache the next start
/// uses: it answers, repairs what was half-written, leaves nothing temporary, and
/// `--pykiln verify` finds every image and view good.
#[test]
fn a_start_killed_while_writing_leaves_a_cache_the_next_start_uses() {
    let t = tempfile::tempdir().unwrap();
    let mut hits = 0;
    for round in 0..8 {
        let mut child = Command::new(common::binary())
            .args([
                "--pykiln",
                "python",
                "-c",
                "import pykiln_notes.server, jsonschema_specifications, pycparser, cffi.recompiler",
            ])
            .env_clear()
            .env("XDG_CACHE_HOME", t.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut killed = false;
        while started.elapsed() < support::TIMEOUT {
            if !leftovers(t.path()).is_empty() {
                support::kill(child.id(), libc::SIGKILL);
                killed = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
        }
        support::wait_within(&mut child, support::TIMEOUT, "a start killed while writing");
        if killed {
            hits += 1;
        } else {
            eprintln!("round {round}: the start ended before a write was seen");
            break;
        }
    }
    assert!(hits >= 2, "only {hits} start(s) were killed while writing");

    let (mut s, stderr) = spawn_server(t.path());
    s.initialize();
    let added = s.call_tool(
        "add_note",
        serde_json::json!({"title": "after", "body": "kill -9"}),
    );
    assert_eq!(added["isError"], false, "{added}");
    let status = s.finish();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    assert!(status.success(), "{stderr}");
    let out = Command::new(common::binary())
        .args([
            "--pykiln",
            "python",
            "-c",
            "import jsonschema_specifications, pycparser, cffi.recompiler",
        ])
        .env_clear()
        .env("XDG_CACHE_HOME", t.path())
        .output_within(support::TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(leftovers(t.path()), Vec::<String>::new());
    let out = Command::new(common::binary())
        .args(["--pykiln", "verify"])
        .env_clear()
        .env("XDG_CACHE_HOME", t.path())
        .output_within(support::TIMEOUT);
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(
        !report.contains("REPAIRED"),
        "the start left damage for verify: {report}"
    );
}

/// The cache damaged every way the prefetch thread and the importer meet it — a FIFO
/// where an image was (opening it would block), a directory, a truncated copy, a
/// flipped byte — never stops a start: the server answers and each image is a good
/// file again.
#[test]
fn a_damaged_cache_never_stops_a_start() {
    let t = tempfile::tempdir().unwrap();
    let (mut s, _) = spawn_server(t.path());
    s.initialize();
    assert!(s.finish().success());
    let native = t.path().join("pykiln/native");
    let mut images: Vec<std::path::PathBuf> = common_walk(&native)
        .into_iter()
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    images.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    assert!(images.len() >= 4, "{images:?}");
    let largest: Vec<_> = images.iter().rev().take(4).cloned().collect();
    let [fifo, dir, truncated, flipped] = &largest[..] else {
        unreachable!()
    };
    std::fs::remove_file(fifo).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: plain syscall with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::fs::remove_file(dir).unwrap();
    std::fs::create_dir(dir).unwrap();
    let len = std::fs::metadata(truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let mut bytes = std::fs::read(flipped).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(flipped, bytes).unwrap();

    let (mut s, stderr) = spawn_server(t.path());
    s.initialize();
    let tools = s.request("tools/list", serde_json::json!({}));
    assert_eq!(
        tools["result"]["tools"].as_array().map(Vec::len),
        Some(5),
        "{tools}"
    );
    let status = s.finish();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains("stuck"),
        "the prefetch thread waited on the FIFO: {stderr}"
    );
    for p in [fifo, dir, truncated, flipped] {
        assert!(p.is_file(), "{} was not rewritten: {stderr}", p.display());
    }
}

/// The default placement (images file-backed, memfd available): a cache another user
/// can write to is not used (the image comes from memory) and a warning names it.
#[test]
fn an_unsafe_cache_is_skipped() {
    let import = "import pydantic_core, _decimal; print('ok')";
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
