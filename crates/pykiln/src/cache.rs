//! The per-user cache directory the runtime writes to (native-image fallback, file views).

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// `$XDG_CACHE_HOME/pykiln`, else `$HOME/.cache/pykiln`, else a private
/// `pykiln-<uid>` directory in the temporary directory (only if it is ours and 0700).
pub fn base() -> Option<PathBuf> {
    let home = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| Path::new(&h).join(".cache"))
        });
    if let Some(h) = home {
        return Some(h.join("pykiln"));
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir = std::env::temp_dir().join(format!("pykiln-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    // A directory someone else made (or made readable) in a shared /tmp is not ours to use.
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0).then_some(dir)
}

/// Create `dir` (and parents) with mode 0700.
pub fn create_private(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
