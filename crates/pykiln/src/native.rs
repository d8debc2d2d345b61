//! Native code: extension modules and the shared libraries they need, loaded from the
//! archive without the host's library directories.
//!
//! Each ELF image is opened through a descriptor, `/proc/self/fd/N`: a file in the
//! per-user content-addressed cache (by default: its pages are then shared,
//! reclaimable page cache, see `pykiln-build`'s placement), or an anonymous
//! `memfd_create` file (images the build keeps in memory, `PYKILN_NATIVE_CACHE=off`, or
//! when the cache cannot be used), which never touches the disk. Shared libraries are
//! opened in dependency order before the extension that needs them; glibc then
//! satisfies the extension's `DT_NEEDED` by SONAME from the already-loaded copy and
//! never searches the host's library directories. The descriptors stay open for the
//! life of the process: glibc identifies loaded objects by path, and a reused
//! descriptor number must never alias a different library.
//!
//! The cache (`$XDG_CACHE_HOME/pykiln/native/<sha256>/<name>`; every image goes there
//! when memfd is unavailable or `PYKILN_NO_MEMFD` is set): every
//! directory checked like ssh checks `~/.ssh` (see `cache`), files created under random
//! names with `O_EXCL` and renamed into place, and a cached file is opened once, hashed
//! through that descriptor and loaded from the same descriptor (`/proc/self/fd/N`), so
//! swapping the file after the check changes nothing. Without /proc the path is
//! loaded; only our own uid can write below the checked directories.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::sync::Mutex;

use once_cell::sync::Lazy;
use pykiln_archive::{Archive, Entry, EntryKind};
use sha2::{Digest as _, Sha256};

use crate::cache::CacheError;
use crate::prefetch::Product;

/// Why a native image could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The archive entry could not be read.
    #[error("{0}")]
    Archive(#[from] pykiln_archive::Error),
    /// Neither memfd nor the cache directory worked.
    #[error("cannot stage native image '{name}': {source}")]
    Stage {
        /// Module or SONAME.
        name: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The native cache (the fallback without memfd) cannot be used.
    #[error("cannot stage native image '{name}': {source}")]
    Cache {
        /// Module or SONAME.
        name: String,
        /// What is wrong with the cache.
        source: crate::cache::CacheError,
    },
    /// dlopen refused the library.
    #[error("cannot load shared library '{soname}': {source}")]
    Dlopen {
        /// SONAME.
        soname: String,
        /// dlopen's message.
        source: libloading::Error,
    },
}

struct Loaded {
    sonames: HashSet<String>,
    fds: Vec<OwnedFd>,
    libs: Vec<libloading::os::unix::Library>,
}

static LOADED: Lazy<Mutex<Loaded>> = Lazy::new(|| {
    Mutex::new(Loaded {
        sonames: HashSet::new(),
        fds: Vec::new(),
        libs: Vec::new(),
    })
});

/// Load every packed library in `needed` (and, first, what each of those needs).
/// SONAMEs not in the archive are the system's (glibc family) and left to ld.so.
pub fn ensure_libs(archive: &Archive<'static>, needed: &[&str]) -> Result<(), NativeError> {
    for soname in needed {
        let Some(entry) = archive.find(EntryKind::SharedLib, soname.as_bytes()) else {
            continue;
        };
        {
            let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
            // Inserted before recursing, so dependency cycles terminate.
            if !loaded.sonames.insert(soname.to_string()) {
                continue;
            }
        }
        let deps: Vec<&str> = entry.aux().collect();
        ensure_libs(archive, &deps)?;
        let path = stage_entry(&entry)?;
        tracing::debug!(soname, path = %path.display(), "loading shared library");
        // SAFETY: loading a library runs its initialisers; these are the libraries the
        // packed extension modules were linked against.
        let lib = unsafe {
            libloading::os::unix::Library::open(Some(&path), libc::RTLD_NOW | libc::RTLD_LOCAL)
        }
        .map_err(|source| NativeError::Dlopen {
            soname: soname.to_string(),
            source,
        })?;
        LOADED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .libs
            .push(lib);
    }
    Ok(())
}

/// Drop the resident pages of an archive range that has been read and is not needed
/// again (a native image, once copied out): they belong to the executable's read-only
/// file mapping, so they stay in the page cache and re-fault if ever touched again.
pub fn release_pages(bytes: &[u8]) {
    const PAGE: usize = 4096;
    let start = (bytes.as_ptr() as usize).div_ceil(PAGE) * PAGE;
    let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside `bytes`, a read-only mapping of the executable
        // that nothing writes; MADV_DONTNEED on it only discards cached copies.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// Drop the resident pages of the executable's read-only segments (the archive, the
/// relocation and symbol tables, constant data): after start-up most of them are not
/// read again, and any that are fault back in from the page cache. Segments that are
/// writable or executable, or were ever written (RELRO), are left alone.
pub fn release_readonly_segments() {
    const DT_TEXTREL: u64 = 22;
    const DT_FLAGS: u64 = 30;
    const DF_TEXTREL: u64 = 0x4;
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        _data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: glibc passes a valid dl_phdr_info whose dlpi_phdr array has
        // dlpi_phnum entries; the first object reported is the main program.
        unsafe {
            let info = &*info;
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
            if cfg!(not(target_pointer_width = "64")) {
                return 1; // the dynamic-section walk below reads Elf64_Dyn
            }
            let base = info.dlpi_addr as usize;
            // With text relocations ld.so wrote into "read-only" segments; dropping
            // those pages would undo its work. Linkers do not produce them for
            // x86-64/aarch64 PIE, but a hand-made link could.
            let textrel = phdrs
                .iter()
                .filter(|p| p.p_type == libc::PT_DYNAMIC)
                .any(|p| {
                    let dynamic = (base + p.p_vaddr as usize) as *const [u64; 2];
                    let count = p.p_memsz as usize / 16;
                    (0..count)
                        .map(|i| *dynamic.add(i))
                        .take_while(|[tag, _]| *tag != 0)
                        .any(|[tag, val]| {
                            tag == DT_TEXTREL || (tag == DT_FLAGS && val & DF_TEXTREL != 0)
                        })
                });
            if textrel {
                return 1;
            }
            let relro: Vec<(usize, usize)> = phdrs
                .iter()
                .filter(|p| p.p_type == libc::PT_GNU_RELRO)
                .map(|p| (p.p_vaddr as usize, (p.p_vaddr + p.p_memsz) as usize))
                .collect();
            for p in phdrs {
                let start = p.p_vaddr as usize;
                let end = start + p.p_memsz as usize;
                let overlaps_relro = relro.iter().any(|&(a, b)| start < b && a < end);
                if p.p_type == libc::PT_LOAD && p.p_flags == libc::PF_R && !overlaps_relro {
                    let bytes =
                        std::slice::from_raw_parts((base + start) as *const u8, end - start);
                    release_pages(bytes);
                }
            }
        }
        1 // stop after the main program
    }
    // SAFETY: the callback only reads what glibc hands it.
    unsafe { libc::dl_iterate_phdr(Some(each), std::ptr::null_mut()) };
}

/// Which native images are served file-backed from the cache: entry → SHA-256 (hex).
static FILE_BACKED: once_cell::sync::OnceCell<HashMap<(EntryKind, Vec<u8>), String>> =
    once_cell::sync::OnceCell::new();

/// Take the build's placement of native images from the manifest (see
/// [`Manifest::file_backed_native`](pykiln_archive::Manifest)). `PYKILN_NATIVE_CACHE=off`
/// keeps every image in memory: nothing is written to disk. Call once, before the
/// prefetcher starts; later calls change nothing.
pub fn configure(manifest: &pykiln_archive::Manifest) {
    let off = std::env::var_os("PYKILN_NATIVE_CACHE").is_some_and(|v| v == "off" || v == "0");
    let mut map = HashMap::new();
    if !off {
        for (key, sha) in &manifest.file_backed_native {
            let parsed = pykiln_archive::parse_file_backed_key(key)
                .map(|(kind, name)| (kind, name.as_bytes().to_vec()));
            // A malformed hash is never looked up in the cache: that image stays in memory.
            let sane = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
            match parsed {
                Some(k) if sane => {
                    map.insert(k, sha.to_ascii_lowercase());
                }
                _ => tracing::debug!(key, "unusable file-backed native entry in the manifest"),
            }
        }
    }
    let _ = FILE_BACKED.set(map);
}

/// Set once the unsafe-cache warning has been given.
static UNSAFE_CACHE_WARNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The SHA-256 of an image the build placed in the file-backed cache, if it did.
fn file_backed_hash(entry: &Entry<'_>) -> Option<&'static str> {
    FILE_BACKED
        .get()?
        .get(&(entry.kind(), entry.key().to_vec()))
        .map(String::as_str)
}

/// Whether the build placed this native image in the file-backed cache (and
/// `PYKILN_NATIVE_CACHE=off` did not override it).
pub fn is_file_backed(entry: &Entry<'_>) -> bool {
    file_backed_hash(entry).is_some()
}

/// An open descriptor holding an entry's native image, made the way the build placed
/// it: file-backed from the per-user cache (their pages are then page cache, shared by
/// every process running them and reclaimable, never pinned) or an
/// in-memory memfd. A cache that cannot be used (read-only home, say) falls back to
/// memfd. Also returns the bytes of memory the descriptor holds (0 when file-backed).
pub fn image_fd(entry: &Entry<'_>) -> Result<(OwnedFd, usize), NativeError> {
    let name = entry.key_lossy();
    if let Some(sha) = file_backed_hash(entry) {
        match cached_image(entry, sha) {
            Ok(fd) => return Ok((fd, 0)),
            Err(NativeError::Archive(e)) => return Err(e.into()),
            // Someone else can write to the cache: worth saying (once a run: every
            // image would say the same).
            Err(
                e @ NativeError::Cache {
                    source: CacheError::Unsafe { .. },
                    ..
                },
            ) => {
                if !UNSAFE_CACHE_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!("{e}; loading native code from memory instead");
                }
            }
            // Read-only or missing home, full disk: quietly the in-memory way.
            Err(e) => {
                tracing::debug!(name = %name, error = %e, "native cache unusable, loading from memory")
            }
        }
    }
    if !memfd_allowed() {
        return Err(NativeError::Stage {
            name: name.into_owned(),
            source: std::io::Error::other("memfd disabled by PYKILN_NO_MEMFD"),
        });
    }
    let fd = memfd_entry(entry);
    release_pages(entry.stored_bytes());
    Ok((fd?, entry.raw_len()))
}

/// The packed native image of an entry as a file path for dlopen: the start-up
/// prefetcher's descriptor if it made one, else one made now ([`image_fd`]), else (no
/// memfd or no /proc) a file in the private cache, by path if need be.
pub fn stage_entry(entry: &Entry<'static>) -> Result<PathBuf, NativeError> {
    let name = entry.key_lossy();
    // The prefetcher makes descriptors for native entries (never bare bytes).
    if let Some(Product::Image(fd)) = crate::prefetch::take(entry.kind(), entry.key()) {
        match keep_open(fd) {
            Ok(path) => return Ok(path),
            Err(e) => tracing::debug!(name = %name, error = %e, "prefetched image unusable"),
        }
    }
    match image_fd(entry) {
        Ok((fd, _)) => match keep_open(fd) {
            Ok(path) => return Ok(path),
            Err(e) => {
                tracing::debug!(name = %name, error = %e, "/proc unavailable, using the cache directory by path")
            }
        },
        Err(NativeError::Archive(e)) => return Err(e.into()),
        Err(e) => {
            tracing::debug!(name = %name, error = %e, "memfd unavailable, using the cache directory")
        }
    }
    let bytes = entry.read()?;
    release_pages(entry.stored_bytes());
    let (fd, path) = cached(&name, &bytes).map_err(|source| NativeError::Cache {
        name: name.to_string(),
        source,
    })?;
    // Load through the descriptor that was hashed: a file swapped in at `path` after
    // the check is never what gets loaded. Without /proc, the checked directory
    // (ours, writable by nobody else) is what protects the path.
    match keep_open(fd) {
        Ok(p) => Ok(p),
        Err(_) => Ok(path),
    }
}

/// Whether native images may go to memfds (`PYKILN_NO_MEMFD` unset).
pub fn memfd_allowed() -> bool {
    std::env::var_os("PYKILN_NO_MEMFD").is_none()
}

/// An anonymous memfd holding an entry's image, decompressed in one call straight into
/// a mapping of the memfd: no heap copy and no zstd window (streaming would allocate
/// one of up to the frame's window size, 8 MiB and more at level 19, and the
/// allocator keeps such memory). The mapping is gone when this returns; images that
/// are big enough for its transient resident pages to matter are file-backed (see
/// [`image_fd`]) unless the build or `PYKILN_NATIVE_CACHE=off` says otherwise.
pub fn memfd_entry(entry: &Entry<'_>) -> Result<OwnedFd, NativeError> {
    let name = entry.key_lossy();
    let stage = |source| NativeError::Stage {
        name: name.to_string(),
        source,
    };
    let cname = std::ffi::CString::new(name.replace('\0', "_"))
        .map_err(|e| stage(std::io::Error::other(e)))?;
    // The system call, not glibc's wrapper (glibc 2.27+): binaries run on glibc 2.17.
    // SAFETY: plain syscall with a valid NUL-terminated name.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_create, cname.as_ptr(), libc::MFD_CLOEXEC) }
        as libc::c_int;
    if fd < 0 {
        return Err(stage(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
    let file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let len = entry.raw_len();
    if len > 0 {
        file.set_len(len as u64).map_err(stage)?;
        // SAFETY: the memfd is ours alone and was just sized; nothing else maps it.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(stage)?;
        entry.read_into(&mut map)?;
    }
    Ok(OwnedFd::from(file))
}

/// The path of the file-backed copy of a file-backed entry's image in the cache,
/// written and checked first if need be (see [`cached_image`]): what an on-disk view
/// hard-links instead of holding a second copy.
pub fn cached_image_path(entry: &Entry<'_>) -> Result<PathBuf, NativeError> {
    let name = entry.key_lossy();
    let sha = file_backed_hash(entry).ok_or_else(|| NativeError::Stage {
        name: name.to_string(),
        source: std::io::Error::other("not a file-backed image"),
    })?;
    cached_image(entry, sha)?;
    let dir = cache_root()
        .map_err(|source| NativeError::Cache {
            name: name.to_string(),
            source,
        })?
        .join(sha);
    Ok(dir.join(cache_file_name(&name)))
}

/// The file-backed copy of an entry's image in the cache, under its SHA-256 `sha`
/// (recorded by the build): opened and checked if it is there, else written from the
/// archive and checked. Nothing is decompressed when the cached copy is good.
fn cached_image(entry: &Entry<'_>, sha: &str) -> Result<OwnedFd, NativeError> {
    let name = entry.key_lossy();
    let cache_err = |source| NativeError::Cache {
        name: name.to_string(),
        source,
    };
    let dir = cache_root().map_err(cache_err)?.join(sha);
    crate::cache::private_dir(&dir).map_err(cache_err)?;
    let path = dir.join(cache_file_name(&name));
    let io = |source| {
        cache_err(CacheError::Io {
            path: path.clone(),
            source,
        })
    };
    if let Some(fd) = open_verified(&path, sha).map_err(io)? {
        crate::cache::mark_used(&dir);
        return Ok(fd);
    }
    // Processes starting together write the image once: the others wait here, then
    // find it written.
    let _writer = crate::cache::lock_dir(&dir);
    if let Some(fd) = open_verified(&path, sha).map_err(io)? {
        crate::cache::mark_used(&dir);
        return Ok(fd);
    }
    remove_leftovers(&dir, &path);
    let tmp = temp_in(&dir, &path).map_err(io)?;
    // Decompressed in one call into a mapping of the new file, as for a memfd (no zstd
    // window on the heap), then hashed from that mapping.
    let len = entry.raw_len();
    let digest = if len == 0 {
        Sha256::digest([])
    } else {
        // Blocks reserved up front: a full disk is an error here (ENOSPC), not a
        // SIGBUS when the mapping below is written.
        // SAFETY: plain syscall on our own descriptor.
        let err =
            unsafe { libc::posix_fallocate(tmp.as_file().as_raw_fd(), 0, len as libc::off_t) };
        if err != 0 {
            return Err(io(std::io::Error::from_raw_os_error(err)));
        }
        // SAFETY: a new file of ours under a random name; nothing else maps it.
        let mut map = unsafe { memmap2::MmapMut::map_mut(tmp.as_file()) }.map_err(io)?;
        entry.read_into(&mut map)?;
        Sha256::digest(&map[..])
    };
    if hex(&digest) != sha {
        // The archive's checksums passed, so the build recorded a wrong hash.
        return Err(io(std::io::Error::other(format!(
            "the image does not hash to the {sha} the build recorded"
        ))));
    }
    // No fsync: a copy torn by a crash fails the check on the next start and is
    // rewritten, so durability buys nothing here.
    let file = tmp.persist(&path).map_err(|e| io(e.error))?;
    tracing::debug!(name = %name, path = %path.display(), "native image written to the cache");
    release_pages(entry.stored_bytes());
    // A new image is written when a binary is new or upgraded: the moment images
    // that no binary has used for a long time may be dropped.
    if let Some(root) = dir.parent() {
        crate::cache::sweep_unused(root, std::time::SystemTime::now(), is_image_dir);
    }
    Ok(OwnedFd::from(file))
}

/// The name of an image's file in its cache directory.
fn cache_file_name(name: &str) -> String {
    name.chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect()
}

/// Remove the temporary files a writer of `path` killed mid-way left (see [`temp_in`]),
/// and a directory where the image belongs (a rename cannot replace one); called under
/// the directory's writer lock, in our private cache directory.
fn remove_leftovers(dir: &std::path::Path, path: &std::path::Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        if let Err(e) = std::fs::remove_dir_all(path) {
            tracing::debug!(path = %path.display(), error = %e, "cannot remove a directory where an image belongs");
        }
    }
    let prefix = format!(
        ".{}.",
        path.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    crate::cache::remove_leftovers(dir, |n| n.starts_with(&prefix) && n.ends_with(".tmp"));
}

/// A new private temporary file beside `path`, made with O_EXCL under a random name:
/// a planted file or symlink is never followed or truncated, and it is removed on drop
/// unless persisted.
fn temp_in(
    dir: &std::path::Path,
    path: &std::path::Path,
) -> std::io::Result<tempfile::NamedTempFile> {
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempfile_in(dir)
}

/// Keep a memfd open for the life of the process and return its `/proc` path.
fn keep_open(fd: OwnedFd) -> std::io::Result<PathBuf> {
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if !path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "/proc is not mounted",
        ));
    }
    LOADED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .fds
        .push(fd);
    Ok(path)
}

/// The per-user cache directory for native images, checked (see `cache`).
pub fn cache_root() -> Result<PathBuf, CacheError> {
    crate::cache::dir("native")
}

/// An image directory of the native cache: named by the image's SHA-256.
fn is_image_dir(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cached copy of an image: an open read-only descriptor whose contents were
/// verified against `bytes`' hash, and its path. Writes it first if it is missing or
/// wrong.
fn cached(name: &str, bytes: &[u8]) -> Result<(OwnedFd, PathBuf), CacheError> {
    let hash = hex(&Sha256::digest(bytes));
    let dir = cache_root()?.join(&hash);
    crate::cache::private_dir(&dir)?;
    let path = dir.join(cache_file_name(name));
    let io = |source| CacheError::Io {
        path: path.clone(),
        source,
    };
    if let Some(fd) = open_verified(&path, &hash).map_err(io)? {
        return Ok((fd, path));
    }
    let _writer = crate::cache::lock_dir(&dir);
    if let Some(fd) = open_verified(&path, &hash).map_err(io)? {
        return Ok((fd, path));
    }
    remove_leftovers(&dir, &path);
    let mut tmp = temp_in(&dir, &path).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    let file = tmp.persist(&path).map_err(|e| io(e.error))?;
    Ok((OwnedFd::from(file), path))
}

/// Cached images this process has hashed: (device, inode, size, mtime, SHA-256).
type Identity = (u64, u64, u64, i64, i64, String);
static VERIFIED: std::sync::Mutex<std::collections::BTreeSet<Identity>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Open `path` without following symlinks; if it is a regular file of ours that only
/// we can write and its contents hash to `hash`, return the descriptor it was read
/// through (rewound). `None` if it is missing or wrong (it will be replaced).
fn open_verified(path: &std::path::Path, hash: &str) -> std::io::Result<Option<OwnedFd>> {
    use std::io::Seek as _;
    use std::os::unix::fs::MetadataExt as _;
    // O_NONBLOCK: a FIFO planted here must not block the open (the prefetch thread
    // would hang, and the importer with it); it is then refused as not a file.
    let mut f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            tracing::warn!(path = %path.display(), "cached native image is a symbolic link; replacing it");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        tracing::warn!(path = %path.display(), "cached native image is not a private file of this user; replacing it");
        return Ok(None);
    }
    // Checked once a process: an on-disk view links the same file the prefetcher
    // checked. The file's identity says it is still the one that was hashed.
    let identity = (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        hash.to_string(),
    );
    let seen = VERIFIED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&identity);
    if seen {
        f.rewind()?;
        return Ok(Some(OwnedFd::from(f)));
    }
    // Hashed through read(2), not a mapping: a file truncated under a mapping raises
    // SIGBUS, which no error handling survives; a short read is just a wrong hash.
    let digest = {
        use std::io::Read as _;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        hasher.finalize()
    };
    if hex(&digest) != hash {
        tracing::warn!(path = %path.display(), "cached native image does not match its hash; rewriting it");
        return Ok(None);
    }
    VERIFIED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(identity);
    f.rewind()?;
    Ok(Some(OwnedFd::from(f)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_path_holds_the_decompressed_image() {
        let image: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut w = pykiln_archive::ArchiveWriter::new((3, 11)).compression_level(3);
        w.add_shared_lib("libtest.so.1", image.clone(), &[])
            .unwrap();
        w.add_shared_lib("libempty.so.0", Vec::new(), &[]).unwrap();
        let bytes = w.finish().unwrap();
        let archive = Archive::open(&bytes).unwrap();
        for (soname, want) in [("libtest.so.1", &image[..]), ("libempty.so.0", &[][..])] {
            let entry = archive
                .find(EntryKind::SharedLib, soname.as_bytes())
                .unwrap();
            let p = keep_open(memfd_entry(&entry).unwrap()).unwrap();
            assert!(fs::read(&p).unwrap() == want, "{soname}");
        }
    }

    #[test]
    fn unused_images_are_swept_used_ones_kept() {
        use std::os::unix::ffi::OsStrExt as _;
        let root = tempfile::tempdir().unwrap();
        let old = root.path().join("a".repeat(64));
        let used = root.path().join("b".repeat(64));
        let other = root.path().join("not-an-image");
        for d in [&old, &used, &other] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("lib.so"), b"x").unwrap();
        }
        // Last used 31 days ago, as far as the cache can tell.
        let back = (crate::cache::UNUSED_FOR.as_secs() + 86400) as libc::time_t;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as libc::time_t;
        let t = libc::timespec {
            tv_sec: now - back,
            tv_nsec: 0,
        };
        for d in [&old, &used, &other] {
            let c = std::ffi::CString::new(d.as_os_str().as_bytes()).unwrap();
            assert_eq!(
                unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) },
                0
            );
        }
        crate::cache::mark_used(&used);
        crate::cache::sweep_unused(root.path(), std::time::SystemTime::now(), is_image_dir);
        assert!(!old.exists(), "unused for 31 days: removed");
        assert!(used.join("lib.so").exists(), "used just now: kept");
        assert!(other.exists(), "only image directories are touched");
    }

    /// One test for everything that reads XDG_CACHE_HOME, so none races another.
    #[test]
    fn cache_is_content_addressed_private_and_loaded_from_the_checked_descriptor() {
        let dir = tempfile::Builder::new()
            .prefix("pykiln-native-test")
            .tempdir()
            .unwrap();
        // SAFETY: no other test of this crate reads XDG_CACHE_HOME.
        unsafe { std::env::set_var("XDG_CACHE_HOME", dir.path()) };
        let (fd_a, a) = cached("liba.so.1", b"one").unwrap();
        let (_, b) = cached("liba.so.1", b"two").unwrap();
        assert_ne!(a, b, "different contents get different paths");
        assert_eq!(fs::read(&a).unwrap(), b"one");
        // A tampered file is detected and rewritten.
        fs::write(&a, b"evil").unwrap();
        let (_, again) = cached("liba.so.1", b"one").unwrap();
        assert_eq!(fs::read(&again).unwrap(), b"one");
        let mode = fs::metadata(a.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "cache directory is private");

        // What gets loaded is the descriptor that was checked: a file swapped in at
        // the path afterwards is not seen through it.
        let (fd, path) = cached("libc.so.9", b"checked").unwrap();
        let proc_path = keep_open(fd).unwrap();
        let swap = path.with_extension("swap");
        fs::write(&swap, b"swapped").unwrap();
        fs::rename(&swap, &path).unwrap();
        assert_eq!(fs::read(&proc_path).unwrap(), b"checked");
        drop(fd_a);

        // A symlink planted at the image's path is replaced, never followed.
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let (_, p) = cached("libd.so.1", b"payload").unwrap();
        fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let (_, p2) = cached("libd.so.1", b"payload").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&p2).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&p2).unwrap(), b"payload");
        // No temporary files left behind.
        let leftovers: Vec<_> = fs::read_dir(p2.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // A cache root that other users may write to is refused, naming the path.
        let open = dir.path().join("pykiln/native");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = cached("libe.so.1", b"x").unwrap_err().to_string();
        assert!(e.contains(&*open.to_string_lossy()), "{e}");
    }
}
