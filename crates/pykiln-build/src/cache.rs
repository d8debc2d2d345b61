//! The build cache: a lock that lets builds share it, and pruning by size.
//!
//! Builds keep staged installs, bytecode, zstd frames and import baselines under one
//! directory. Every entry a build uses gets its modification time refreshed
//! ([`touch`]), so that time is "last used". While a build runs it holds a shared lock
//! on `<cache>/.lock`; at its end it tries to take the lock exclusively and, only if no
//! other build holds it, removes the least recently used entries until the cache fits
//! its cap (`PYKILN_CACHE_MAX`, default 2 GiB). What this build used is never removed,
//! and neither is the runtime's part of the directory (`files/`, `native/`), which
//! running servers may be reading.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;

/// Caps the build cache's size: bytes, or with a `K`/`M`/`G` suffix (powers of 1024).
pub const MAX_ENV: &str = "PYKILN_CACHE_MAX";

/// The default cap.
pub const DEFAULT_MAX: u64 = 2 << 30;

/// Subdirectories whose entries pruning may remove (each child is one entry).
const PRUNABLE: &[&str] = &[
    "site",
    "bytecode",
    "zstd",
    "baseline",
    "dictionaries",
    "placeholders",
    "glibc",
    "scratch",
];

/// Refresh `path`'s modification time: it was just used.
pub fn touch(path: &Path) {
    if let Ok(f) = File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Write `bytes` to `path` as a whole or not at all: a temporary file beside it
/// (unique name, so concurrent builds never share one), then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic_mode(path, bytes, None)
}

/// [`write_atomic`], with the file's permission bits set before the rename (an
/// executable is never visible without its mode).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    if let Some(mode) = mode {
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    }
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// The cap from `PYKILN_CACHE_MAX`, or an error naming the bad value.
pub fn max_from_env() -> anyhow::Result<u64> {
    match std::env::var(MAX_ENV) {
        Ok(v) if !v.trim().is_empty() => parse_size(&v).with_context(|| {
            format!("{MAX_ENV}={v:?}: expected bytes, or a number with K, M or G")
        }),
        _ => Ok(DEFAULT_MAX),
    }
}

/// A size: bytes, or a number with K, M or G (binary units; `2G`, `500M`, `1.5GiB`).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches(['i']);
    let (num, mult) = match t.chars().last()? {
        'K' | 'k' => (&t[..t.len() - 1], 1u64 << 10),
        'M' | 'm' => (&t[..t.len() - 1], 1 << 20),
        'G' | 'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as u64)
}

/// A build's hold on the cache: a shared lock, released when dropped.
pub struct Hold {
    lock: File,
    dir: PathBuf,
    started: SystemTime,
}

/// What pruning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pruning {
    /// The cache fits its cap.
    Fits { size: u64 },
    /// Entries were removed.
    Pruned {
        before: u64,
        after: u64,
        removed: usize,
    },
    /// Another build holds the cache; pruning waits for a later build.
    Busy { size: u64 },
}

/// Take a shared hold on the cache in `dir` (created if missing) for one build.
pub fn hold(dir: &Path) -> anyhow::Result<Hold> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    flock(&lock, libc::LOCK_SH).with_context(|| format!("locking {}", path.display()))?;
    Ok(Hold {
        lock,
        dir: dir.to_path_buf(),
        started: SystemTime::now(),
    })
}

fn flock(f: &File, op: i32) -> std::io::Result<()> {
    loop {
        // SAFETY: flock(2) on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Hold {
    /// End the build's hold; prune to `max` bytes if no other build holds the cache.
    pub fn finish(self, max: u64) -> anyhow::Result<Pruning> {
        flock(&self.lock, libc::LOCK_UN)?;
        if flock(&self.lock, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            return Ok(Pruning::Busy {
                size: entries(&self.dir).iter().map(|e| e.size).sum(),
            });
        }
        let result = prune(&self.dir, max, self.started);
        let _ = flock(&self.lock, libc::LOCK_UN);
        result
    }
}

/// One removable unit of the cache.
#[derive(Debug)]
struct Entry {
    path: PathBuf,
    size: u64,
    last_used: SystemTime,
}

fn entries(dir: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    for sub in PRUNABLE {
        let Ok(children) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for child in children.flatten() {
            let path = child.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() && *sub == "bytecode" {
                // bytecode/<cache tag>/<digest>.marshal: files are the entries.
                for f in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                    if let Ok(m) = f.metadata() {
                        out.push(Entry {
                            path: f.path(),
                            size: m.len(),
                            last_used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        });
                    }
                }
                continue;
            }
            if path.file_name().is_some_and(|n| n == "resolved") {
                continue; // site/resolved: a few bytes per requirement text
            }
            let last_used = if meta.is_dir() {
                // A staged install is used through its marker (touched on each use).
                std::fs::metadata(path.join(".pykiln-complete"))
                    .or_else(|_| std::fs::metadata(&path))
                    .and_then(|m| m.modified())
            } else {
                meta.modified()
            }
            .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(Entry {
                size: if meta.is_dir() {
                    dir_size(&path)
                } else {
                    meta.len()
                },
                path,
                last_used,
            });
        }
    }
    out
}

/// Size of a directory entry. A complete staged install never changes, so its size is worked
/// out once and kept beside its marker: walking tens of thousands of installed files on
/// every build would cost a one-line rebuild more than a second.
fn dir_size(path: &Path) -> u64 {
    let memo = path.join(".pykiln-size");
    if path.join(".pykiln-complete").is_file() {
        if let Some(n) = std::fs::read_to_string(&memo)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return n;
        }
        let n = pykiln_python::disk_usage(path);
        let _ = std::fs::write(&memo, n.to_string());
        return n;
    }
    pykiln_python::disk_usage(path)
}

/// Remove the least recently used entries not used since `started` until the cache
/// holds at most `max` bytes.
fn prune(dir: &Path, max: u64, started: SystemTime) -> anyhow::Result<Pruning> {
    let mut all = entries(dir);
    let before: u64 = all.iter().map(|e| e.size).sum();
    if before <= max {
        return Ok(Pruning::Fits { size: before });
    }
    all.sort_by_key(|e| e.last_used);
    let mut size = before;
    let mut removed = 0;
    for e in all {
        if size <= max {
            break;
        }
        if e.last_used >= started {
            continue; // used by this build
        }
        let gone = if e.path.is_dir() {
            std::fs::remove_dir_all(&e.path)
        } else {
            std::fs::remove_file(&e.path)
        };
        if gone.is_ok() {
            size -= e.size;
            removed += 1;
        }
    }
    Ok(Pruning::Pruned {
        before,
        after: size,
        removed,
    })
}

/// `1.2 GB`-style size for messages.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", b / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(path: &Path, len: usize, age: Duration) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![0u8; len]).unwrap();
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1G"), None);
    }

    #[test]
    fn the_least_recently_used_go_first_and_this_builds_entries_stay() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path();
        let hour = Duration::from_secs(3600);
        file(&c.join("site/old/.pykiln-complete"), 10, 5 * hour);
        file(&c.join("site/old/pkg/big.py"), 4000, hour);
        file(&c.join("bytecode/cpython-311/a.marshal"), 3000, 3 * hour);
        file(&c.join("zstd/b.zst"), 3000, 2 * hour);
        file(&c.join("site/resolved/k"), 10, 9 * hour);
        file(&c.join("files/view/lib.so"), 100_000, 9 * hour);
        let started = SystemTime::now() - Duration::from_secs(60);
        file(&c.join("zstd/current.zst"), 5000, Duration::ZERO);

        let r = prune(c, 9000, started).unwrap();
        // Oldest first: the staged install (5 h), then bytecode (3 h); then it fits.
        assert_eq!(
            r,
            Pruning::Pruned {
                before: 15010,
                after: 8000,
                removed: 2
            }
        );
        assert!(!c.join("site/old").exists());
        assert!(!c.join("bytecode/cpython-311/a.marshal").exists());
        assert!(c.join("zstd/b.zst").exists());
        // What this build used, the resolution records and the runtime's views stay
        // even under an impossible cap.
        let r = prune(c, 0, started).unwrap();
        assert!(matches!(r, Pruning::Pruned { after: 5000, .. }), "{r:?}");
        assert!(c.join("zstd/current.zst").exists());
        assert!(c.join("site/resolved/k").exists());
        assert!(c.join("files/view/lib.so").exists());
    }

    #[test]
    fn a_cache_another_build_holds_is_not_pruned() {
        let d = tempfile::tempdir().unwrap();
        file(
            &d.path().join("zstd/x.zst"),
            1000,
            Duration::from_secs(7200),
        );
        let other = hold(d.path()).unwrap();
        let ours = hold(d.path()).unwrap();
        assert_eq!(ours.finish(0).unwrap(), Pruning::Busy { size: 1000 });
        assert!(d.path().join("zstd/x.zst").exists());
        drop(other);
        let again = hold(d.path()).unwrap();
        assert!(matches!(
            again.finish(0).unwrap(),
            Pruning::Pruned { after: 0, .. }
        ));
        assert!(!d.path().join("zstd/x.zst").exists());
    }
}
