//! On-disk file views for distributions whose files code may find through `__file__`.
//!
//! The build marks such distributions (see pykiln-build's `ondisk`: those that ship data
//! files, and code that reaches its directory); on the first import of one of their
//! modules the runtime writes the distribution's files (data, native images, and the
//! sources that were packed) to `<cache>/pykiln/files/<id>/`, laid out like site-packages, and the
//! importer gives those modules `__file__`/`__path__` inside it. `<id>` is a digest of
//! the contents, so a view is written once per content and shared by every run and every
//! binary carrying the same files. Bytecode is still read from the archive.
//!
//! A view is built in a fresh private temporary directory (random name), completed
//! with a marker file listing every file's size and xxh3 digest, and renamed into
//! place, so a crash or a concurrent start never leaves a half-written
//! view in use; starts that race write it once (the writer holds the views
//! directory's lock, see `cache::lock_dir`). Native images in a view are hard links to the same image in the native
//! cache (see `native`), never a second copy. Each process checks a view once before
//! first use, cheaply — no file is read: the directory and every file must be ours,
//! writable by nobody else and not a symlink, and every file the archive says belongs
//! there must have the archive's size (as the marker says too). `--pykiln verify` also
//! checks every file's digest ([`check`]). A view that fails is set aside and written
//! again (a truncated or removed file is repaired, a view planted by another user is
//! never used).

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use pykiln_archive::{Archive, Entry, EntryKind, OnDiskGroup};

/// File whose presence marks a complete view; it lists the view's files.
const MARKER: &str = ".pykiln-complete";
/// First line of the marker.
const MARKER_HEADER: &str = "pykiln-view 1";

/// Why a view could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The cache directory is missing or unsafe.
    #[error("its on-disk file view: {0}")]
    Cache(#[from] crate::cache::CacheError),
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

/// The directory of `group`'s view, writing it first if needed: in the user's cache,
/// else (refused, read-only, full) in a private directory under the temporary one.
pub fn ensure(archive: &Archive<'_>, group: &OnDiskGroup) -> Result<PathBuf, ViewError> {
    let first = crate::cache::dir("files")
        .map_err(ViewError::from)
        .and_then(|base| ensure_in(&base, archive, group));
    let e = match first {
        Ok(root) => return Ok(root),
        Err(e) => e,
    };
    match crate::cache::temp_dir("files")
        .map_err(ViewError::from)
        .and_then(|base| ensure_in(&base, archive, group))
    {
        Ok(root) => {
            tracing::warn!(group = %group.name, path = %root.display(), "{e}; the view is in the temporary directory instead");
            Ok(root)
        }
        // The first reason is the one worth reading.
        Err(_) => Err(e),
    }
}

/// One file of a view: where it goes and which blob holds it.
struct Planned<'a> {
    rel: PathBuf,
    entry: Entry<'a>,
    /// The module's source (secondary blob) rather than the primary blob.
    source: bool,
    len: u64,
}

impl<'a> Planned<'a> {
    /// A file whose content is the entry's primary blob.
    fn file(rel: PathBuf, entry: Entry<'a>) -> Self {
        let len = entry.raw_len() as u64;
        Planned {
            rel,
            entry,
            source: false,
            len,
        }
    }

    fn read(&self) -> Result<Vec<u8>, ViewError> {
        Ok(if self.source {
            self.entry
                .read_source()?
                .map(|c| c.into_owned())
                .unwrap_or_default()
        } else {
            self.entry.read()?.into_owned()
        })
    }
}

fn ensure_in(
    base: &Path,
    archive: &Archive<'_>,
    group: &OnDiskGroup,
) -> Result<PathBuf, ViewError> {
    if !group.id.chars().all(|c| c.is_ascii_hexdigit()) || group.id.is_empty() {
        return Err(ViewError::UnsafePath(group.id.clone()));
    }
    crate::cache::private_dir(base)?;
    let files = plan(archive, group)?;
    let root = base.join(&group.id);
    let start = std::time::Instant::now();
    match verify(&root, &files, Depth::Sizes) {
        Ok(()) => {
            crate::cache::mark_used(&root);
            tracing::debug!(group = %group.name, elapsed = ?start.elapsed(), "on-disk file view checked");
            return Ok(root);
        }
        Err(Problem::Missing) => {}
        Err(Problem::Bad(why)) => {
            tracing::warn!(group = %group.name, path = %root.display(), "on-disk file view is damaged ({why}); writing it again");
        }
    }
    // Processes starting together write the view once: the others wait here, then
    // find it written. Under the lock, what a writer killed mid-way left goes.
    let _writer = crate::cache::lock_dir(base);
    if verify(&root, &files, Depth::Sizes).is_ok() {
        crate::cache::mark_used(&root);
        return Ok(root);
    }
    let leftover = format!(".{}.", group.id);
    crate::cache::remove_leftovers(base, |n| {
        n.starts_with(&leftover) || n.starts_with(".stale.")
    });
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", group.id))
        .tempdir_in(base)
        .map_err(io(base))?;
    write_view(tmp.path(), &files)?;
    install(base, tmp, &root, &files)?;
    // A new view is written when a binary is new or upgraded: the moment views (and
    // leftovers of interrupted writers) that no binary used for a long time may go.
    crate::cache::sweep_unused(base, std::time::SystemTime::now(), is_sweepable);
    tracing::debug!(group = %group.name, path = %root.display(), elapsed = ?start.elapsed(), "on-disk file view written");
    Ok(root)
}

/// A view (named by its hex id) or what an interrupted writer left (`.`-prefixed
/// temporary and set-aside directories).
fn is_sweepable(name: &str) -> bool {
    name.starts_with('.') && name != MARKER
        || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Rename the finished view at `tmp` to `root`, replacing a damaged one; if another
/// process put a good view there first, use that.
fn install(
    base: &Path,
    tmp: tempfile::TempDir,
    root: &Path,
    files: &[Planned<'_>],
) -> Result<(), ViewError> {
    for _ in 0..3 {
        match std::fs::rename(tmp.path(), root) {
            Ok(()) => {
                let _ = tmp.keep();
                return Ok(());
            }
            Err(_) if verify(root, files, Depth::Sizes).is_ok() => return Ok(()), // tmp is dropped
            // Damaged: move it aside, then retry.
            Err(_) => set_aside(base, root),
        }
    }
    std::fs::rename(tmp.path(), root).map_err(io(root))?;
    let _ = tmp.keep();
    Ok(())
}

/// Move a damaged view out of the way and remove it (our directory, so even another
/// user's files in it can be moved). A process still using it keeps its open files.
fn set_aside(base: &Path, root: &Path) {
    let Ok(stale) = tempfile::Builder::new().prefix(".stale.").tempdir_in(base) else {
        return;
    };
    let target = stale.path().join("view");
    if std::fs::rename(root, &target).is_err() {
        return;
    }
    // Dropping the temporary directory removes what was moved into it.
    drop(stale);
}

/// Why an existing view cannot be used.
enum Problem {
    Missing,
    Bad(String),
}

/// How far [`verify`] looks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Ownership, modes and sizes: what every start checks (no file is read).
    Sizes,
    /// Also every file's digest against the marker (`--pykiln verify`).
    Digests,
}

/// What [`check`] found of a group's view.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// Not written yet (no server start imported the distribution).
    Absent,
    /// Every file as the archive says.
    Good,
    /// Damaged (why), and written again.
    Repaired(String),
}

/// The full check of `group`'s view for `--pykiln verify`: every file's digest too; a
/// damaged view is written again.
pub fn check(archive: &Archive<'_>, group: &OnDiskGroup) -> Result<Checked, ViewError> {
    let base = crate::cache::dir("files")?;
    check_in(&base, archive, group)
}

fn check_in(base: &Path, archive: &Archive<'_>, group: &OnDiskGroup) -> Result<Checked, ViewError> {
    if !group.id.chars().all(|c| c.is_ascii_hexdigit()) || group.id.is_empty() {
        return Err(ViewError::UnsafePath(group.id.clone()));
    }
    let files = plan(archive, group)?;
    match verify(&base.join(&group.id), &files, Depth::Digests) {
        Ok(()) => Ok(Checked::Good),
        Err(Problem::Missing) => Ok(Checked::Absent),
        Err(Problem::Bad(why)) => {
            // Set aside first: the cheap check of `ensure_in` would accept it.
            set_aside(base, &base.join(&group.id));
            ensure_in(base, archive, group)?;
            Ok(Checked::Repaired(why))
        }
    }
}

/// Open a file without following a symlink and require it to be ours, regular and
/// writable by nobody else.
fn open_private(path: &Path) -> Result<std::fs::File, Problem> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Problem::Missing,
            _ => Problem::Bad(format!("{}: {e}", path.display())),
        })?;
    let m = f
        .metadata()
        .map_err(|e| Problem::Bad(format!("{}: {e}", path.display())))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !m.is_file() || m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(Problem::Bad(format!(
            "{} is not a private regular file of this user",
            path.display()
        )));
    }
    Ok(f)
}

/// Check a view against the archive's file list and its marker: sizes, owners and
/// modes, and with [`Depth::Digests`] every file's digest.
fn verify(root: &Path, files: &[Planned<'_>], depth: Depth) -> Result<(), Problem> {
    use std::os::unix::fs::FileTypeExt as _;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    match std::fs::symlink_metadata(root) {
        Err(_) => return Err(Problem::Missing),
        Ok(m) => {
            if !m.is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
                return Err(Problem::Bad(
                    "not a private directory of this user".to_string(),
                ));
            }
        }
    }
    let mut marker = String::new();
    open_private(&root.join(MARKER))
        .map_err(|p| match p {
            Problem::Missing => Problem::Bad("no completion marker".into()),
            p => p,
        })?
        .read_to_string(&mut marker)
        .map_err(|e| Problem::Bad(format!("marker: {e}")))?;
    let mut lines = marker.lines();
    if lines.next() != Some(MARKER_HEADER) {
        return Err(Problem::Bad("marker of another format".into()));
    }
    let listed: std::collections::HashMap<&str, (u64, u64)> = lines
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            let size = f.next()?.parse().ok()?;
            let hash = u64::from_str_radix(f.next()?, 16).ok()?;
            Some((f.next()?, (size, hash)))
        })
        .collect();
    let mut buf = Vec::new();
    for p in files {
        let rel = p.rel.to_string_lossy();
        let Some(&(size, hash)) = listed.get(&*rel) else {
            return Err(Problem::Bad(format!("{rel} is not in the marker")));
        };
        if size != p.len {
            return Err(Problem::Bad(format!(
                "{rel}: marker size differs from the archive"
            )));
        }
        let path = root.join(&p.rel);
        if depth == Depth::Sizes {
            // lstat: a symlink is reported as one, never followed.
            let m = std::fs::symlink_metadata(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Problem::Bad(format!("{rel} is missing")),
                _ => Problem::Bad(format!("{rel}: {e}")),
            })?;
            let ft = m.file_type();
            if !ft.is_file() || ft.is_fifo() || m.uid() != me || m.mode() & 0o022 != 0 {
                return Err(Problem::Bad(format!(
                    "{rel} is not a private regular file of this user"
                )));
            }
            if m.len() != p.len {
                return Err(Problem::Bad(format!(
                    "{rel} has {} bytes, expected {}",
                    m.len(),
                    p.len
                )));
            }
            continue;
        }
        let mut f = open_private(&path).map_err(|e| match e {
            Problem::Missing => Problem::Bad(format!("{rel} is missing")),
            e => e,
        })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if len != p.len {
            return Err(Problem::Bad(format!(
                "{rel} has {len} bytes, expected {}",
                p.len
            )));
        }
        buf.clear();
        f.read_to_end(&mut buf)
            .map_err(|e| Problem::Bad(format!("{rel}: {e}")))?;
        if xxhash_rust::xxh3::xxh3_64(&buf) != hash {
            return Err(Problem::Bad(format!("{rel} has changed")));
        }
    }
    Ok(())
}

/// Relative path of a dotted name (`a.b` → `a/b`), refusing anything that could escape.
fn safe_rel(
    parts: impl IntoIterator<Item = impl AsRef<str>>,
    shown: &str,
) -> Result<PathBuf, ViewError> {
    let mut out = PathBuf::new();
    for p in parts {
        let p = p.as_ref();
        if p.is_empty() || p == "." || p == ".." || p.contains('\0') || p.contains('/') {
            return Err(ViewError::UnsafePath(shown.to_string()));
        }
        out.push(p);
    }
    Ok(out)
}

/// Every file of `group`'s view, from the archive.
fn plan<'a>(archive: &Archive<'a>, group: &OnDiskGroup) -> Result<Vec<Planned<'a>>, ViewError> {
    let mut out = Vec::new();
    for e in archive.entries() {
        let key = e.key_lossy();
        match e.kind() {
            EntryKind::Module => {
                if !group.covers(&key) || !e.has_source() {
                    continue;
                }
                let parts: Vec<&str> = key.split('.').collect();
                let rel = safe_rel(&parts, &key)?;
                let rel = if e.is_package() {
                    rel.join("__init__.py")
                } else {
                    rel.with_extension("py")
                };
                let len = e.source_len() as u64;
                out.push(Planned {
                    rel,
                    entry: e,
                    source: true,
                    len,
                });
            }
            EntryKind::Extension => {
                if !group.covers(&key) {
                    continue;
                }
                let parts: Vec<&str> = key.split('.').collect();
                let file = e.aux().next().unwrap_or_default();
                let mut rel = safe_rel(&parts[..parts.len() - 1], &key)?;
                rel.push(safe_rel([file], &key)?);
                out.push(Planned::file(rel, e));
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
                out.push(Planned::file(safe_rel(&parts, &key)?, e));
            }
            _ => {}
        }
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
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(if exec { 0o755 } else { 0o644 })
        .open(&path)
        .map_err(io(&path))?;
    f.write_all(bytes).map_err(io(&path))
}

/// A hard link at `root/rel` to the native cache's copy of a file-backed image, if
/// there is (or can be made) one; its digest for the marker.
fn link_native(root: &Path, rel: &Path, entry: &Entry<'_>) -> Option<u64> {
    if entry.kind() != EntryKind::Extension || !crate::native::is_file_backed(entry) {
        return None;
    }
    let cached = crate::native::cached_image_path(entry)
        .map_err(|e| tracing::debug!(name = %entry.key_lossy(), error = %e, "no native cache copy to link"))
        .ok()?;
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent()?).ok()?;
    std::fs::hard_link(&cached, &path)
        .map_err(|e| tracing::debug!(path = %path.display(), error = %e, "cannot link the native cache copy"))
        .ok()?;
    let bytes = std::fs::read(&path).ok()?;
    Some(xxhash_rust::xxh3::xxh3_64(&bytes))
}

fn write_view(root: &Path, files: &[Planned<'_>]) -> Result<(), ViewError> {
    let mut marker = format!("{MARKER_HEADER}\n");
    for p in files {
        // One copy of a native image on disk: the view links the native cache's.
        let hash = match (!p.source)
            .then(|| link_native(root, &p.rel, &p.entry))
            .flatten()
        {
            Some(hash) => hash,
            None => {
                let bytes = p.read()?;
                write_file(root, &p.rel, &bytes)?;
                xxhash_rust::xxh3::xxh3_64(&bytes)
            }
        };
        marker.push_str(&format!(
            "{} {:016x} {}\n",
            p.len,
            hash,
            p.rel.to_string_lossy()
        ));
    }
    // No fsync or syncfs: a view is a cache of the archive, and what a crash can tear
    // is caught by the size check of the next start (ext4 in its default ordered
    // mode, XFS and btrfs do not commit a file's new size before its data), which
    // writes it again. Forcing it to disk cost more than the writing: syncfs waits for
    // every dirty page of the filesystem (the native images just written, whatever
    // else the machine is doing): up to a second more on markitdown-mcp's first start.
    write_file(root, Path::new(MARKER), marker.as_bytes())
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

        // A truncated native image is found and repaired.
        let so = root.join("pkg/_speed.abi3.so");
        std::fs::write(&so, b"\x7f").unwrap();
        ensure_in(&base, &a, &group).unwrap();
        assert_eq!(std::fs::read(&so).unwrap(), b"\x7fELF");
        // A file edited in place (same size): a start does not read files, so only the
        // full check (`--pykiln verify`) finds it by its digest, and repairs it.
        std::fs::write(root.join("pkg/data/x.json"), b"[]").unwrap();
        ensure_in(&base, &a, &group).unwrap();
        assert_eq!(std::fs::read(root.join("pkg/data/x.json")).unwrap(), b"[]");
        assert!(matches!(
            check_in(&base, &a, &group).unwrap(),
            Checked::Repaired(why) if why.contains("pkg/data/x.json has changed")
        ));
        assert_eq!(std::fs::read(root.join("pkg/data/x.json")).unwrap(), b"{}");
        assert_eq!(check_in(&base, &a, &group).unwrap(), Checked::Good);
        // A symlink in place of a file is not followed.
        let elsewhere = base.join("elsewhere.json");
        std::fs::write(&elsewhere, b"{}").unwrap();
        std::fs::remove_file(root.join("pkg/data/x.json")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("pkg/data/x.json")).unwrap();
        ensure_in(&base, &a, &group).unwrap();
        assert!(
            !std::fs::symlink_metadata(root.join("pkg/data/x.json"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // A view (marker and all) that belongs to another user is never used.
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            for f in walk(&root) {
                std::os::unix::fs::lchown(&f, Some(65534), Some(65534)).unwrap();
            }
            std::fs::write(&so, b"\x7fEVL").unwrap();
            ensure_in(&base, &a, &group).unwrap();
            assert_eq!(std::fs::read(&so).unwrap(), b"\x7fELF");
            use std::os::unix::fs::MetadataExt as _;
            assert_eq!(std::fs::metadata(&so).unwrap().uid(), 0);
        }
        // Nothing temporary is left next to the views.
        let names: Vec<String> = std::fs::read_dir(&base)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
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

    /// Views nobody used for longer than the cache keeps things, and what interrupted
    /// writers left, go when a new view is written; a view in use stays.
    #[test]
    fn unused_views_are_swept_when_a_new_one_is_written() {
        let bytes = archive();
        let a = Archive::open(&bytes).unwrap();
        let base = tempfile::tempdir().unwrap();
        let group = |id: &str| OnDiskGroup {
            name: "pkg".into(),
            id: id.into(),
            tops: vec!["pkg".into()],
            reason: String::new(),
        };
        let used = ensure_in(base.path(), &a, &group("aaaa")).unwrap();
        let old_view = ensure_in(base.path(), &a, &group("bbbb")).unwrap();
        let leftover = base.path().join(".cccc.tmp123");
        std::fs::create_dir(&leftover).unwrap();
        let unrelated = base.path().join("not-a-view");
        std::fs::create_dir(&unrelated).unwrap();
        let age_back = |p: &Path| {
            use std::os::unix::ffi::OsStrExt as _;
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
            let back = (crate::cache::UNUSED_FOR.as_secs() + 86400) as libc::time_t;
            // SAFETY: a valid path and two valid timespecs.
            unsafe {
                let mut now: libc::timespec = std::mem::zeroed();
                libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
                let t = libc::timespec {
                    tv_sec: now.tv_sec - back,
                    tv_nsec: 0,
                };
                assert_eq!(
                    libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0),
                    0
                );
            }
        };
        for p in [&used, &old_view, &leftover, &unrelated] {
            age_back(p);
        }
        // A start that uses "aaaa" marks it used; writing "dddd" sweeps the rest.
        ensure_in(base.path(), &a, &group("aaaa")).unwrap();
        ensure_in(base.path(), &a, &group("dddd")).unwrap();
        assert!(used.is_dir(), "a view in use stays");
        assert!(!old_view.exists(), "an unused view goes");
        assert!(!leftover.exists(), "an old leftover goes");
        assert!(unrelated.is_dir(), "what is not ours to judge stays");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![dir.to_path_buf()];
        for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
