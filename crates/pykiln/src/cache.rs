//! The per-user cache directory the runtime writes to (native images, file views).
//!
//! Everything the runtime puts there is later executed or imported, so a directory that
//! another user can write to (or a symlink they planted) would let them run code in
//! our process. Every directory is checked the way ssh checks `~/.ssh` before it is
//! used: ours must be real directories owned by the effective user and writable by
//! nobody else; their ancestors must be owned by us or root and not writable by
//! others (unless sticky, like `/tmp`). Anything else is refused with the path named.
//!
//! Entries are written once even by processes starting together: a writer holds
//! [`lock_dir`] on the entry's directory, re-checks, and removes what a writer killed
//! mid-way left ([`remove_leftovers`]) before writing under a temporary name.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};

/// Why a cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No location is configured (no `XDG_CACHE_HOME`, `HOME` or usable temp dir).
    #[error("no cache directory: set XDG_CACHE_HOME or HOME")]
    NoLocation,
    /// A path component fails the ownership/permission checks.
    #[error("refusing cache directory {path}: {why}")]
    Unsafe {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Creating or inspecting a directory failed.
    #[error("cache directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// `$XDG_CACHE_HOME/pykiln`, else `$HOME/.cache/pykiln`, else `pykiln-<uid>` in the
/// temporary directory. Not checked: see [`dir`].
pub fn base() -> Option<PathBuf> {
    let home = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| Path::new(&h).join(".cache"))
        });
    match home {
        Some(h) => Some(h.join("pykiln")),
        None => Some(std::env::temp_dir().join(format!("pykiln-{}", euid()))),
    }
}

/// `<base>/<sub>`, created (0700) if missing, with every component checked.
pub fn dir(sub: &str) -> Result<PathBuf, CacheError> {
    checked(base().ok_or(CacheError::NoLocation)?, sub)
}

/// `pykiln-<uid>/<sub>` in the temporary directory, checked like [`dir`]: where what
/// must be on disk (file views) goes when the user's cache is refused or unusable
/// (a home another user owns, a read-only one).
pub fn temp_dir(sub: &str) -> Result<PathBuf, CacheError> {
    checked(std::env::temp_dir().join(format!("pykiln-{}", euid())), sub)
}

fn checked(base: PathBuf, sub: &str) -> Result<PathBuf, CacheError> {
    if !base.is_absolute() {
        return Err(CacheError::Unsafe {
            path: base,
            why: "not an absolute path".into(),
        });
    }
    check_ancestors(&base)?;
    private_dir(&base)?;
    let d = base.join(sub);
    private_dir(&d)?;
    Ok(d)
}

/// Create `dir` (mode 0700) if missing; then require it to be a real directory owned
/// by us that nobody else can write to. Its parent must already have been checked.
pub fn private_dir(dir: &Path) -> Result<(), CacheError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(CacheError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| CacheError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let unsafe_ = |why: String| CacheError::Unsafe {
        path: dir.to_path_buf(),
        why,
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_("it is not a directory".into()));
    }
    if meta.uid() != euid() {
        return Err(unsafe_(format!(
            "it is owned by uid {}, not by this user (uid {})",
            meta.uid(),
            euid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_(format!(
            "mode {:o} lets other users write to it (chmod go-w)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The directories above the cache root (`~/.cache`, `~`, `/home`, `/`): each must be
/// owned by us or root and not writable by others unless sticky (`/tmp`), both as
/// written and after resolving symbolic links; a symlink on the way must itself be
/// ours or root's (as Linux's `protected_symlinks` requires in sticky directories).
fn check_ancestors(base: &Path) -> Result<(), CacheError> {
    let Some(parent) = base.parent() else {
        return Ok(());
    };
    // Missing ancestors are created by `create_ancestors` below as ours; check what exists.
    let mut existing = parent.to_path_buf();
    while !existing.exists() {
        if !existing.pop() {
            break;
        }
    }
    let mut walked = PathBuf::new();
    for c in existing.components() {
        walked.push(c);
        if matches!(c, Component::RootDir) {
            continue;
        }
        if let Ok(m) = std::fs::symlink_metadata(&walked) {
            if m.file_type().is_symlink() && m.uid() != euid() && m.uid() != 0 {
                return Err(CacheError::Unsafe {
                    path: walked,
                    why: format!("a symbolic link owned by uid {}", m.uid()),
                });
            }
        }
    }
    let resolved = std::fs::canonicalize(&existing).map_err(|source| CacheError::Io {
        path: existing.clone(),
        source,
    })?;
    for dir in resolved.ancestors() {
        let meta = std::fs::metadata(dir).map_err(|source| CacheError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let owner_ok = meta.uid() == euid() || meta.uid() == 0;
        let sticky = meta.mode() & 0o1000 != 0;
        let writable_by_others = meta.mode() & 0o022 != 0;
        if !owner_ok || (writable_by_others && !sticky) {
            return Err(CacheError::Unsafe {
                path: dir.to_path_buf(),
                why: format!(
                    "an ancestor of the cache owned by uid {} with mode {:o}: other users could replace what is below it",
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            });
        }
    }
    // Create what is missing between the checked part and the cache root, as ours.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|source| CacheError::Io {
            path: parent.to_path_buf(),
            source,
        })
}

/// Cache entries (native images, on-disk views) not used for this long are removed (a
/// later use writes them again): a server upgraded every week would otherwise leave a
/// copy of its native code and data behind each time.
pub const UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Record that a cache entry (a directory) was used now: its mtime. Best effort: a
/// read-only cache keeps working, it is just never swept.
pub fn mark_used(dir: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    if let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
        // SAFETY: a valid path; a null `times` means "now".
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    }
}

/// Remove the entry directories under `root` (ours, named as `is_entry` says) last used
/// before `now - UNUSED_FOR`. Removing one that a running process uses is safe: its
/// open files and mappings keep their data until it exits.
pub fn sweep_unused(root: &Path, now: std::time::SystemTime, is_entry: fn(&str) -> bool) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let me = euid();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        if !is_entry(&name.to_string_lossy()) {
            continue;
        }
        // Not following symlinks: only real directories of ours are removed.
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > UNUSED_FOR);
        if meta.is_dir() && meta.uid() == me && old {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::debug!(dir = %e.path().display(), "removed an unused cache entry")
                }
                Err(err) => {
                    tracing::debug!(dir = %e.path().display(), error = %err, "cannot remove an unused cache entry")
                }
            }
        }
    }
}

/// How long a first start waits for another process that is writing the same cache
/// entry before writing it too (a writer that is stopped or stuck must not stall
/// every start; two writers are still correct, each renames a complete copy).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// An exclusive `flock` on a cache directory, released on drop (and by the kernel when
/// the process dies, so a writer killed mid-way never leaves it held).
#[derive(Debug)]
pub struct DirLock {
    _held: Option<std::fs::File>,
}

/// Take the writer's lock on `dir` (checked by [`private_dir`] already), so that
/// processes starting together write each cache entry once: the others wait, then
/// find it written. Waits at most [`LOCK_WAIT`]; past that, or where the file system
/// has no locks, goes on without it.
pub fn lock_dir(dir: &Path) -> DirLock {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot open the cache directory to lock it");
            return DirLock { _held: None };
        }
    };
    let start = std::time::Instant::now();
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return DirLock { _held: Some(file) };
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            tracing::debug!(dir = %dir.display(), error = %err, "no lock on the cache directory");
            return DirLock { _held: None };
        }
        if start.elapsed() > LOCK_WAIT {
            tracing::warn!(dir = %dir.display(), "another process has been writing to the cache for {LOCK_WAIT:?}; writing without waiting for it");
            return DirLock { _held: None };
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Remove what a writer killed mid-way left in `dir`: the entries `is_leftover` names
/// (temporary files and directories). Only called under [`lock_dir`], when no other
/// writer can be using them.
pub fn remove_leftovers(dir: &Path, is_leftover: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = euid();
    for e in entries.filter_map(Result::ok) {
        if !is_leftover(&e.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.uid() != me {
            continue;
        }
        let removed = if meta.is_dir() {
            std::fs::remove_dir_all(e.path())
        } else {
            std::fs::remove_file(e.path())
        };
        match removed {
            Ok(()) => {
                tracing::debug!(path = %e.path().display(), "removed what an interrupted writer left")
            }
            Err(err) => {
                tracing::debug!(path = %e.path().display(), error = %err, "cannot remove a leftover")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("pykiln-cache-test")
            .tempdir()
            .unwrap()
    }

    #[test]
    fn private_dir_is_created_0700_and_accepted() {
        let t = tmp();
        let d = t.path().join("x");
        private_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        private_dir(&d).unwrap();
    }

    #[test]
    fn writable_by_others_or_symlink_is_refused() {
        let t = tmp();
        let d = t.path().join("open");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&d).unwrap_err().to_string();
        assert!(
            e.contains(&*d.to_string_lossy()) && e.contains("777"),
            "{e}"
        );

        let link = t.path().join("link");
        let target = t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = private_dir(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn foreign_owner_is_refused() {
        if euid() != 0 {
            return; // only root can hand a directory to another uid
        }
        let t = tmp();
        let d = t.path().join("theirs");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        let e = private_dir(&d).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        // And as an ancestor of the cache.
        let e = check_ancestors(&d.join("pykiln")).unwrap_err().to_string();
        assert!(e.contains("ancestor"), "{e}");
    }

    #[test]
    fn sticky_world_writable_ancestor_is_accepted() {
        // /tmp is 1777 and root's: fine as an ancestor.
        let t = tmp();
        check_ancestors(&t.path().join("pykiln")).unwrap();
    }
}
