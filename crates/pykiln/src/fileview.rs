//! On-disk file views for distributions that find their files through `__file__`.
//!
//! The build marks such distributions (see pykiln-build's `ondisk`); on the first import
//! of one of their modules the runtime writes the distribution's files (sources, data,
//! native images) to `<cache>/pykiln/files/<id>/`, laid out like site-packages, and the
//! importer gives those modules `__file__`/`__path__` inside it. `<id>` is a digest of
//! the contents, so a view is written once per content and shared by every run and every
//! binary carrying the same files. Bytecode is still read from the archive.
//!
//! A view is built in a temporary directory, completed with a marker file and renamed
//! into place, so a crash or a concurrent start never leaves a half-written view in use.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use pykiln_archive::{Archive, EntryKind, OnDiskGroup};

/// File whose presence marks a complete view.
const MARKER: &str = ".pykiln-complete";

/// Why a view could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// No cache directory can be used.
    #[error("no writable cache directory for its on-disk file view (set XDG_CACHE_HOME or HOME)")]
    NoCache,
    /// Writing the view failed.
    #[error("cannot write its on-disk file view at {path}: {source}")]
    Io {
        /// File or directory being written.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// An archive entry could not be read.
    #[error("{0}")]
    Archive(#[from] pykiln_archive::Error),
    /// An entry's name would escape the view directory.
    #[error("archive entry '{0}' has an unsafe path")]
    UnsafePath(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ViewError + '_ {
    move |source| ViewError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory of `group`'s view, writing it first if needed.
pub fn ensure(archive: &Archive<'_>, group: &OnDiskGroup) -> Result<PathBuf, ViewError> {
    let base = crate::cache::base()
        .ok_or(ViewError::NoCache)?
        .join("files");
    ensure_in(&base, archive, group)
}

fn ensure_in(
    base: &Path,
    archive: &Archive<'_>,
    group: &OnDiskGroup,
) -> Result<PathBuf, ViewError> {
    if !group.id.chars().all(|c| c.is_ascii_hexdigit()) || group.id.is_empty() {
        return Err(ViewError::UnsafePath(group.id.clone()));
    }
    let root = base.join(&group.id);
    if root.join(MARKER).is_file() {
        return Ok(root);
    }
    crate::cache::create_private(base).map_err(io(base))?;
    let tmp = base.join(format!(".{}.{}.tmp", group.id, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let start = std::time::Instant::now();
    let written = write_view(&tmp, archive, group);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &root) {
        Ok(()) => {}
        Err(_) if root.join(MARKER).is_file() => {
            // Another process finished the same view first.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(_) => {
            // A directory without marker is not ours to trust: replace it.
            let _ = std::fs::remove_dir_all(&root);
            std::fs::rename(&tmp, &root).map_err(io(&root))?;
        }
    }
    tracing::debug!(group = %group.name, path = %root.display(), elapsed = ?start.elapsed(), "on-disk file view written");
    Ok(root)
}

/// Relative path of a dotted name (`a.b` → `a/b`), refusing anything that could escape.
fn safe_rel(
    parts: impl IntoIterator<Item = impl AsRef<str>>,
    shown: &str,
) -> Result<PathBuf, ViewError> {
    let mut out = PathBuf::new();
    for p in parts {
        let p = p.as_ref();
        if p.is_empty() || p == "." || p == ".." || p.contains('\0') {
            return Err(ViewError::UnsafePath(shown.to_string()));
        }
        out.push(p);
    }
    Ok(out)
}

fn write_file(root: &Path, rel: &Path, bytes: &[u8]) -> Result<(), ViewError> {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    // Native images and scripts keep their exec bit: code runs or dlopens them by path.
    let exec = bytes.starts_with(b"\x7fELF") || bytes.starts_with(b"#!");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if exec { 0o755 } else { 0o644 })
        .open(&path)
        .map_err(io(&path))?;
    f.write_all(bytes).map_err(io(&path))
}

fn write_view(root: &Path, archive: &Archive<'_>, group: &OnDiskGroup) -> Result<(), ViewError> {
    crate::cache::create_private(root).map_err(io(root))?;
    for e in archive.entries() {
        let key = e.key_lossy();
        match e.kind() {
            EntryKind::Module => {
                if !group.covers(&key) {
                    continue;
                }
                let parts: Vec<&str> = key.split('.').collect();
                let rel = safe_rel(&parts, &key)?;
                let file = if e.is_package() {
                    let dir = root.join(&rel);
                    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                    rel.join("__init__.py")
                } else {
                    rel.with_extension("py")
                };
                if let Some(src) = e.read_source()? {
                    write_file(root, &file, &src)?;
                }
            }
            EntryKind::Extension => {
                if !group.covers(&key) {
                    continue;
                }
                let parts: Vec<&str> = key.split('.').collect();
                let file = e.aux().next().unwrap_or_default();
                let mut rel = safe_rel(&parts[..parts.len() - 1], &key)?;
                rel.push(safe_rel([file], &key)?);
                write_file(root, &rel, &e.read()?)?;
            }
            EntryKind::Resource => {
                let Some((pkg, file)) = key.split_once('\0') else {
                    continue;
                };
                let owner = if pkg.is_empty() {
                    file.split('/').next().unwrap_or_default()
                } else {
                    pkg
                };
                if !group.covers(owner) {
                    continue;
                }
                let mut parts: Vec<&str> = if pkg.is_empty() {
                    Vec::new()
                } else {
                    pkg.split('.').collect()
                };
                parts.extend(file.split('/'));
                write_file(root, &safe_rel(&parts, &key)?, &e.read()?)?;
            }
            _ => {}
        }
    }
    write_file(root, Path::new(MARKER), group.name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pykiln_archive::{ArchiveWriter, Manifest};

    fn archive() -> Vec<u8> {
        let mut w = ArchiveWriter::new((3, 11));
        w.add_module("pkg", b"code".to_vec(), Some(b"# init".to_vec()), true)
            .unwrap();
        w.add_module("pkg.mod", b"code".to_vec(), None, false)
            .unwrap();
        w.add_module("other", b"code".to_vec(), Some(b"# other".to_vec()), false)
            .unwrap();
        w.add_resource("pkg", "data/x.json", b"{}".to_vec())
            .unwrap();
        w.add_resource("", "_pkg_data/lib.so", b"\x7fELF..".to_vec())
            .unwrap();
        w.add_extension("pkg._speed", "_speed.abi3.so", b"\x7fELF".to_vec(), &[])
            .unwrap();
        w.set_manifest(&Manifest::default()).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn view_holds_the_group_files_only() {
        let bytes = archive();
        let a = Archive::open(&bytes).unwrap();
        let base = std::env::temp_dir().join(format!("pykiln-view-test-{}", std::process::id()));
        let group = OnDiskGroup {
            name: "pkg".into(),
            id: "abc123".into(),
            tops: vec!["pkg".into(), "_pkg_data".into()],
            reason: String::new(),
        };
        let root = ensure_in(&base, &a, &group).unwrap();
        assert_eq!(
            std::fs::read(root.join("pkg/__init__.py")).unwrap(),
            b"# init"
        );
        assert_eq!(std::fs::read(root.join("pkg/data/x.json")).unwrap(), b"{}");
        assert!(root.join("pkg/_speed.abi3.so").is_file());
        assert!(
            !root.join("pkg/mod.py").exists(),
            "no source packed, none written"
        );
        assert!(
            !root.join("other.py").exists(),
            "other groups stay in memory"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(root.join("_pkg_data/lib.so"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "native images are executable");
        // Second call reuses it; a view without marker is rebuilt.
        assert_eq!(ensure_in(&base, &a, &group).unwrap(), root);
        std::fs::remove_file(root.join(MARKER)).unwrap();
        std::fs::remove_file(root.join("pkg/data/x.json")).unwrap();
        let again = ensure_in(&base, &a, &group).unwrap();
        assert_eq!(std::fs::read(again.join("pkg/data/x.json")).unwrap(), b"{}");
        let bad = OnDiskGroup {
            id: "../x".into(),
            ..group
        };
        assert!(matches!(
            ensure_in(&base, &a, &bad),
            Err(ViewError::UnsafePath(_))
        ));
        let _ = std::fs::remove_dir_all(base);
    }
}
