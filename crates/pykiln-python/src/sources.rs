//! The pinned source archives: what a build of pykiln's CPython is made from.
//!
//! Each archive is named by the file names it is published under and checked against
//! one SHA-256. The pins are the upstream releases that Debian's source packages carry
//! (`apt-get source --download-only python3.11 zlib bzip2 xz-utils libffi openssl`
//! fetches all of them); each is the release tarball byte for byte except zlib's, which
//! Debian repacks (`.dfsg`) without the contrib directory nothing here builds.

use std::path::{Path, PathBuf};

use anyhow::bail;
use sha2::{Digest as _, Sha256};

/// One pinned source archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// Project name (`openssl`).
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
    /// The file names it is published under (upstream first, then Debian's).
    pub files: &'static [&'static str],
    /// SHA-256 of the archive, lower-case hex.
    pub sha256: &'static str,
    /// Where to download it, tried in order (upstream first, then Debian's pool, which
    /// serves a release's copy while it is current in Debian 12).
    pub urls: &'static [&'static str],
}

/// CPython releases pykiln builds, newest first: the ones Debian 13 (3.13.5) and
/// Debian 12 (3.11.2) ship, whose source packages carry the release tarballs.
pub const CPYTHON: &[Pin] = &[
    Pin {
        name: "cpython",
        version: "3.13.5",
        files: &["Python-3.13.5.tar.xz", "python3.13_3.13.5.orig.tar.xz"],
        sha256: "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640",
        urls: &[
            "https://www.python.org/ftp/python/3.13.5/Python-3.13.5.tar.xz",
            "https://deb.debian.org/debian/pool/main/p/python3.13/python3.13_3.13.5.orig.tar.xz",
        ],
    },
    Pin {
        name: "cpython",
        version: "3.11.2",
        files: &["Python-3.11.2.tgz", "python3.11_3.11.2.orig.tar.gz"],
        sha256: "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849",
        urls: &[
            "https://www.python.org/ftp/python/3.11.2/Python-3.11.2.tgz",
            "https://deb.debian.org/debian/pool/main/p/python3.11/python3.11_3.11.2.orig.tar.gz",
        ],
    },
];

/// The C libraries of the standard library's extension modules, linked statically.
/// SQLite is not among them: binaries use the runtime's own (libsqlite3-sys), and the
/// interpreter's `_sqlite3` is built against the same amalgamation ([`sqlite_source`]).
pub const LIBRARIES: &[Pin] = &[
    Pin {
        name: "zlib",
        version: "1.2.13",
        files: &["zlib_1.2.13.dfsg.orig.tar.bz2"],
        sha256: "71feb7947e3c00ef125f83b79a4e529bde31171e5babe48b391f06758d1ab0a1",
        urls: &["https://deb.debian.org/debian/pool/main/z/zlib/zlib_1.2.13.dfsg.orig.tar.bz2"],
    },
    Pin {
        name: "bzip2",
        version: "1.0.8",
        files: &["bzip2-1.0.8.tar.gz", "bzip2_1.0.8.orig.tar.gz"],
        sha256: "ab5a03176ee106d3f0fa90e381da478ddae405918153cca248e682cd0c4a2269",
        urls: &[
            "https://sourceware.org/pub/bzip2/bzip2-1.0.8.tar.gz",
            "https://deb.debian.org/debian/pool/main/b/bzip2/bzip2_1.0.8.orig.tar.gz",
        ],
    },
    Pin {
        name: "xz",
        version: "5.4.1",
        files: &["xz-5.4.1.tar.xz", "xz-utils_5.4.1.orig.tar.xz"],
        sha256: "5d9827aa1875b21c288f78864bb26d2650b436ea8d2cad364e4921eb6266a5a5",
        urls: &[
            "https://github.com/tukaani-project/xz/releases/download/v5.4.1/xz-5.4.1.tar.xz",
            "https://deb.debian.org/debian/pool/main/x/xz-utils/xz-utils_5.4.1.orig.tar.xz",
        ],
    },
    Pin {
        name: "libffi",
        version: "3.4.4",
        files: &["libffi-3.4.4.tar.gz", "libffi_3.4.4.orig.tar.gz"],
        sha256: "d66c56ad259a82cf2a9dfc408b32bf5da52371500b84745f7fb8b645712df676",
        urls: &[
            "https://github.com/libffi/libffi/releases/download/v3.4.4/libffi-3.4.4.tar.gz",
            "https://deb.debian.org/debian/pool/main/libf/libffi/libffi_3.4.4.orig.tar.gz",
        ],
    },
    Pin {
        name: "openssl",
        version: "3.0.20",
        files: &["openssl-3.0.20.tar.gz", "openssl_3.0.20.orig.tar.gz"],
        sha256: "c80a01dfc70ece4dc21168932c37739042d404d46ccc81a5986dd75314ecda6f",
        urls: &[
            "https://github.com/openssl/openssl/releases/download/openssl-3.0.20/openssl-3.0.20.tar.gz",
            "https://deb.debian.org/debian/pool/main/o/openssl/openssl_3.0.20.orig.tar.gz",
        ],
    },
];

/// The CPython pin for a request (`3.11` or `3.11.2`).
pub fn cpython(request: &str) -> Option<&'static Pin> {
    CPYTHON.iter().find(|p| {
        p.version == request
            || p.version
                .strip_prefix(request)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Lower-case hex SHA-256 of a file.
pub fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `pin`'s archive in `dirs` under any of its names, its hash checked; None when no
/// directory holds one.
pub fn find(pin: &Pin, dirs: &[PathBuf]) -> anyhow::Result<Option<PathBuf>> {
    let hit = dirs
        .iter()
        .flat_map(|d| pin.files.iter().map(move |f| d.join(f)))
        .find(|p| p.is_file());
    let Some(path) = hit else { return Ok(None) };
    let got = file_sha256(&path)?;
    if got != pin.sha256 {
        bail!(
            "{} is not {} {}: its SHA-256 is {got}, the pinned one {}",
            path.display(),
            pin.name,
            pin.version,
            pin.sha256
        );
    }
    Ok(Some(path))
}

/// Find each pin's archive in `dirs` under any of its names and check its hash. All
/// missing archives are named at once, with where to get them.
pub fn locate(pins: &[&Pin], dirs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for pin in pins {
        match find(pin, dirs)? {
            Some(path) => found.push(path),
            None => missing.push(format!(
                "  {} {} ({}; {})",
                pin.name,
                pin.version,
                pin.files.join(" or "),
                pin.urls.join(" or ")
            )),
        }
    }
    if !missing.is_empty() {
        let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        bail!(
            "source archives missing (looked in {}):\n{}\nput them in a directory and pass --sources DIR; on Debian or Ubuntu with a deb-src line, `apt-get source --download-only python3.11 zlib bzip2 xz-utils libffi openssl` fetches them",
            if looked.is_empty() {
                "no directory: pass --sources".to_string()
            } else {
                looked.join(", ")
            },
            missing.join("\n")
        );
    }
    Ok(found)
}

/// Download the archives of `pins` that `into` does not hold yet, each from the first
/// of its URLs that answers, checking its hash before it gets its final name. The
/// download runs in the host's `python3` (urllib: proxies and CA settings as Python
/// has them), which pykiln needs anyway.
pub fn download(pins: &[&Pin], into: &Path, say: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
    std::fs::create_dir_all(into)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", into.display()))?;
    const FETCH: &str = "import sys, urllib.request\n\
        with urllib.request.urlopen(sys.argv[1], timeout=60) as r, open(sys.argv[2], 'wb') as f:\n    \
            while True:\n        \
                b = r.read(1 << 16)\n        \
                if not b: break\n        \
                f.write(b)\n";
    let host = std::env::var_os("PYKILN_HOST_PYTHON").unwrap_or_else(|| "python3".into());
    for pin in pins {
        if find(pin, &[into.to_path_buf()])?.is_some() {
            continue;
        }
        let mut tried = Vec::new();
        let mut done = false;
        for url in pin.urls {
            let name = url.rsplit('/').next().unwrap_or(pin.files[0]);
            let part = into.join(format!(".part-{name}"));
            say(&format!("downloading {url}"));
            let out = std::process::Command::new(&host)
                .args(["-I", "-c", FETCH, url])
                .arg(&part)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| anyhow::anyhow!("running {}: {e}", Path::new(&host).display()))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let last = err.lines().last().unwrap_or("failed").to_string();
                tried.push(format!("{url}: {last}"));
                let _ = std::fs::remove_file(&part);
                continue;
            }
            let got = file_sha256(&part)?;
            if got != pin.sha256 {
                tried.push(format!(
                    "{url}: SHA-256 {got}, not the pinned {}",
                    pin.sha256
                ));
                let _ = std::fs::remove_file(&part);
                continue;
            }
            std::fs::rename(&part, into.join(name))
                .map_err(|e| anyhow::anyhow!("naming {}: {e}", part.display()))?;
            done = true;
            break;
        }
        if !done {
            bail!(
                "cannot download {} {}:\n  {}\nput the archive in a directory and pass --sources DIR",
                pin.name,
                pin.version,
                tried.join("\n  ")
            );
        }
    }
    Ok(())
}

/// The libsqlite3-sys release whose SQLite amalgamation the runtime links (Cargo.lock).
pub const LIBSQLITE3_SYS: &str = "0.40.0";

/// The directory holding libsqlite3-sys's `sqlite3.c` and `sqlite3.h`, from cargo's
/// registry (where building a runner or `cargo fetch` puts it).
pub fn sqlite_source() -> anyhow::Result<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_default();
    let registry = cargo_home.join("registry").join("src");
    let crate_dir = format!("libsqlite3-sys-{LIBSQLITE3_SYS}");
    for index in std::fs::read_dir(&registry).into_iter().flatten().flatten() {
        let dir = index.path().join(&crate_dir).join("sqlite3");
        if dir.join("sqlite3.c").is_file() && dir.join("sqlite3.h").is_file() {
            return Ok(dir);
        }
    }
    bail!(
        "libsqlite3-sys {LIBSQLITE3_SYS} is not in cargo's registry ({}): run `cargo fetch` in a project that depends on it (pykiln's checkout does), or build any pykiln binary once",
        registry.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_whole_version_parts() {
        assert_eq!(cpython("3.11").map(|p| p.version), Some("3.11.2"));
        assert_eq!(cpython("3.11.2").map(|p| p.version), Some("3.11.2"));
        assert_eq!(cpython("3.13").map(|p| p.version), Some("3.13.5"));
        assert!(cpython("3.1").is_none());
        assert!(cpython("3.11.20").is_none());
    }

    #[test]
    fn pins_are_well_formed() {
        for pin in CPYTHON.iter().chain(LIBRARIES) {
            assert_eq!(pin.sha256.len(), 64, "{}", pin.name);
            assert!(
                pin.sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(!pin.files.is_empty() && pin.files.iter().all(|f| f.contains(pin.version)));
            // A download is saved under its URL's name, which must be one `locate` finds.
            for url in pin.urls {
                let name = url.rsplit('/').next().unwrap();
                assert!(pin.files.contains(&name), "{url}");
            }
        }
    }

    /// The amalgamation the interpreter is built against is the one the runtime links.
    #[test]
    fn the_sqlite_pin_follows_cargo_lock() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .expect("Cargo.lock");
        let entry = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"libsqlite3-sys\""))
            .expect("libsqlite3-sys in Cargo.lock");
        assert!(
            entry.contains(&format!("version = \"{LIBSQLITE3_SYS}\"")),
            "{entry}"
        );
    }

    #[test]
    fn a_wrong_or_missing_archive_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let pin = &LIBRARIES[0];
        let err = locate(&[pin], &[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("zlib 1.2.13") && err.contains(pin.files[0]),
            "{err}"
        );
        std::fs::write(dir.path().join(pin.files[0]), b"not zlib").unwrap();
        let err = locate(&[pin], &[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not zlib 1.2.13") && err.contains(pin.sha256),
            "{err}"
        );
    }
}
