//! The environment and the current directory never influence what the binary imports,
//! and the running server maps no host file beyond the glibc family.

mod common;
use common::support::{self, CommandExt as _};

use common::{Session, binary, exercise_notes_server};
use std::path::Path;
use std::process::Command;

fn hostile_dir(root: &Path) -> std::path::PathBuf {
    let evil = root.join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    let marker = root.join("HOSTILE_RAN");
    let payload = format!(
        "open({:?}, 'a').write(__name__ + '\\n')\nraise SystemExit('hostile module imported')\n",
        marker.to_str().unwrap()
    );
    for m in [
        "typing.py",
        "json.py",
        "encodings.py",
        "sitecustomize.py",
        "usercustomize.py",
        "mcp.py",
        "pykiln_notes.py",
        "sqlite3.py",
    ] {
        std::fs::write(evil.join(m), &payload).unwrap();
        std::fs::write(root.join(m), &payload).unwrap();
    }
    std::fs::write(root.join("startup.py"), &payload).unwrap();
    std::fs::write(root.join("pykiln-notes._pth"), "evil\n").unwrap();
    std::fs::write(
        root.join("pyvenv.cfg"),
        format!("home = {}\n", evil.display()),
    )
    .unwrap();
    marker
}

#[test]
fn python_variables_and_cwd_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = hostile_dir(dir.path());
    // The binary is run from the hostile directory, and a copy sits inside it too
    // (so ._pth / pyvenv.cfg next to the executable are tried).
    let copy = dir.path().join("pykiln-notes");
    std::fs::copy(binary(), &copy).unwrap();
    for bin in [binary(), copy] {
        let mut cmd = Command::new(&bin);
        cmd.current_dir(dir.path())
            .env("PYTHONPATH", dir.path().join("evil"))
            .env("PYTHONHOME", dir.path().join("evil"))
            .env("PYTHONSTARTUP", dir.path().join("startup.py"))
            .env("PYTHONSAFEPATH", "0")
            .env("PYTHONUSERBASE", dir.path())
            .env("PYTHONINSPECT", "1")
            .env("PYTHONNOUSERSITE", "")
            .env("PYKILN_NOTES_DB", dir.path().join("notes.db"));
        let mut s = Session::spawn(cmd);
        exercise_notes_server(&mut s);
        assert!(s.finish().success());
        let out = common::stdout_of(
            Command::new(&bin)
                .current_dir(dir.path())
                .env("PYTHONPATH", dir.path().join("evil"))
                .env("PYTHONHOME", dir.path().join("evil"))
                .args([
                    "--pykiln",
                    "python",
                    "-c",
                    "import json, typing, sys; print(sys.path, sys.flags.isolated)",
                ]),
        );
        assert_eq!(out.trim(), "[] 1", "no directory on sys.path, isolated");
    }
    assert!(
        !marker.exists(),
        "a hostile module ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
}

/// glibc and its companions: the only host files a packaged server may map.
fn allowed_host_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    [
        "ld-linux",
        "libc.so",
        "libc-",
        "libm.so",
        "libm-",
        "libgcc_s",
        "libpthread",
        "libdl.so",
        "librt.so",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || path.starts_with("/usr/lib/locale/")
        || path.contains("/gconv/")
}

/// What a notes server maps after a session, sorted out: memfd images, images from
/// the native cache under `cache`, and host files it should not map.
struct Mapped {
    memfds: usize,
    cached: Vec<String>,
    offenders: Vec<String>,
    maps: String,
}

fn session_maps(extra_env: &[(&str, &str)]) -> (Mapped, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let bin = binary();
    let mut cmd = Command::new(&bin);
    cmd.env_clear()
        .env("PYKILN_NOTES_DB", dir.path().join("n.db"))
        .env("XDG_CACHE_HOME", dir.path().join("cache"));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut s = Session::spawn(cmd);
    exercise_notes_server(&mut s); // loads sqlite3, ssl-free stack, pydantic_core…
    let pid = s.child.id();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let exe = std::fs::canonicalize(&bin).unwrap();
    let native_cache = dir.path().join("cache/pykiln/native");
    let mut mapped = Mapped {
        memfds: 0,
        cached: Vec::new(),
        offenders: Vec::new(),
        maps: maps.clone(),
    };
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        if path.starts_with("/memfd:") {
            mapped.memfds += 1;
        } else if Path::new(path).starts_with(&native_cache) {
            mapped.cached.push(path.to_string());
        } else if path.starts_with('/')
            && Path::new(path) != exe
            && !allowed_host_file(path)
            // The server's own database (WAL mode maps its `-shm` index).
            && !Path::new(path).starts_with(dir.path())
        {
            mapped.offenders.push(path.to_string());
        }
    }
    mapped.offenders.sort();
    mapped.offenders.dedup();
    mapped.cached.sort();
    mapped.cached.dedup();
    assert!(s.finish().success());
    (mapped, dir)
}

#[test]
fn running_server_maps_no_host_python_or_libraries() {
    // Default placement: every image file-backed from the private native cache;
    // nothing of the host's Python or libraries, and no memfd.
    let (m, dir) = session_maps(&[]);
    assert!(
        m.offenders.is_empty(),
        "host files mapped by the server: {:#?}",
        m.offenders
    );
    assert_eq!(m.memfds, 0, "{}", m.maps);
    // (`_json` is an extension module in pyenv's, Debian's and 3.12's builds alike.)
    for image in ["_pydantic_core", "_json"] {
        assert!(
            m.cached.iter().any(|p| p.contains(image)),
            "{image} file-backed: {:#?}\n{}",
            m.cached,
            m.maps
        );
    }
    drop(dir);

    // PYKILN_NATIVE_CACHE=off: every image in memory and nothing written to disk.
    let (m, dir) = session_maps(&[("PYKILN_NATIVE_CACHE", "off")]);
    assert!(m.offenders.is_empty(), "{:#?}", m.offenders);
    assert!(m.cached.is_empty(), "{:#?}", m.cached);
    assert!(m.maps.contains("/memfd:pydantic_core"), "{}", m.maps);
    assert!(
        !dir.path().join("cache").exists(),
        "nothing was written to the cache directory"
    );
}

#[test]
fn corrupted_archive_is_a_clear_error() {
    let bin = binary();
    let v = common::info(&bin);
    let offset = v["archive"]["offset"].as_u64().unwrap() as usize;
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes[offset + pykiln_archive::HEADER_LEN + 5] ^= 0xff; // inside the index
    let copy = dir.path().join("broken");
    std::fs::write(&copy, &bytes).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&copy)
        .env_clear()
        .output_within(support::TIMEOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// `--pykiln verify` on a copy of the binary with one byte flipped inside one entry's
/// data, for 20 entries spread over every kind (issue 9.1): every run exits non-zero,
/// by exit status (never a signal), and names the entry. Entries the runtime reads at
/// start (manifest, dictionary) fail before any import; the rest fail the verify run.
#[test]
fn verify_fails_on_every_corrupted_entry() {
    use pykiln_archive::{Archive, EntryKind};
    use std::os::unix::fs::PermissionsExt as _;
    let bin = binary();
    let v = common::info(&bin);
    let offset = v["archive"]["offset"].as_u64().unwrap() as usize;
    let original = std::fs::read(&bin).unwrap();
    let bytes = common::archive_bytes();
    let archive = Archive::open(&bytes).unwrap();
    let base = archive.bytes().as_ptr() as usize;

    // A fixed pseudo-random pick (the same entries every run): per kind, up to `n`.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut picks = Vec::new();
    for (kind, n) in [
        (EntryKind::Manifest, 1),
        (EntryKind::Dictionary, 1),
        (EntryKind::Module, 7),
        (EntryKind::Extension, 3),
        (EntryKind::SharedLib, 2),
        (EntryKind::Resource, 3),
        (EntryKind::DistFile, 3),
    ] {
        let all: Vec<_> = archive
            .entries()
            .filter(|e| e.kind() == kind && e.stored_len() > 0)
            .collect();
        if matches!(
            kind,
            EntryKind::Manifest
                | EntryKind::Module
                | EntryKind::Extension
                | EntryKind::Resource
                | EntryKind::DistFile
        ) {
            assert!(!all.is_empty(), "the demo has no {kind} entry");
        }
        for _ in 0..n.min(all.len()) {
            let e = all[(next() % all.len() as u64) as usize];
            let at = e.stored_bytes().as_ptr() as usize - base + e.stored_len() / 2;
            let name = match e.key_lossy().replace('\0', "/") {
                k if k.is_empty() => kind.name().to_string(),
                k => k,
            };
            picks.push((kind, name, at));
        }
    }
    picks.dedup_by(|a, b| a.2 == b.2);
    assert!(picks.len() >= 15, "{picks:?}");

    let dir = tempfile::tempdir().unwrap();
    // Every copy is written before any runs: a file still open for writing in another
    // thread's fork cannot be executed (ETXTBSY).
    let copies: Vec<_> = picks
        .iter()
        .map(|(_, _, at)| {
            let mut damaged = original.clone();
            damaged[offset + at] ^= 0x5a;
            let copy = dir.path().join(format!("damaged-{at}"));
            std::fs::write(&copy, &damaged).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            copy
        })
        .collect();
    let run = |((kind, name, _), copy): (&(EntryKind, String, usize), &std::path::PathBuf)| {
        // Other tests of this binary fork while writing their own files; a fork that
        // inherited such a descriptor briefly makes exec fail with ETXTBSY: retry.
        let mut tries = 0;
        let out = loop {
            match Command::new(copy)
                .args(["--pykiln", "verify"])
                .env_clear()
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
            {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                r => break support::output_of(r.unwrap(), support::TIMEOUT, "verify"),
            }
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(copy);
        assert!(
            out.status.code().is_some(),
            "{kind} '{name}': ended by a signal: {:?}\n{text}",
            out.status
        );
        assert_ne!(
            out.status.code(),
            Some(0),
            "{kind} '{name}': verify passed:\n{text}"
        );
        assert!(
            text.contains(name.as_str()),
            "{kind} '{name}' not named:\n{text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    };
    // Two at a time: each run imports every packed module.
    std::thread::scope(|s| {
        let jobs: Vec<_> = picks.iter().zip(&copies).collect();
        for pair in jobs.chunks(2) {
            let handles: Vec<_> = pair.iter().map(|&p| s.spawn(move || run(p))).collect();
            for h in handles {
                if let Err(e) = h.join() {
                    std::panic::resume_unwind(e);
                }
            }
        }
    });
}
