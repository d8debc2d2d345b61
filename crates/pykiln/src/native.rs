//! Native code from memory: extension modules and the shared libraries they need.
//!
//! Each ELF image is written to an anonymous `memfd_create` file and opened through
//! `/proc/self/fd/N`, so nothing touches the disk. Shared libraries are opened in
//! dependency order before the extension that needs them; glibc then satisfies the
//! extension's `DT_NEEDED` by SONAME from the already-loaded copy and never searches
//! the host's library directories. The memfds stay open for the life of the process:
//! glibc identifies loaded objects by path, and a reused descriptor number must never
//! alias a different library.
//!
//! Where memfd or /proc is unavailable, images go to a per-user content-addressed cache
//! (`$XDG_CACHE_HOME/pykiln/native/<sha256>/<name>`, directories 0700, written to a
//! temporary name and renamed, contents re-hashed before every use).

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::sync::Mutex;

use once_cell::sync::Lazy;
use pykiln_archive::{Archive, Entry, EntryKind};
use sha2::{Digest as _, Sha256};

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

/// The packed native image of an entry as a file path for dlopen: the start-up
/// prefetcher's memfd if it made one, else a memfd made now, else (no memfd or no
/// /proc) a file in the private cache.
pub fn stage_entry(entry: &Entry<'static>) -> Result<PathBuf, NativeError> {
    let name = entry.key_lossy();
    let stage = |source| NativeError::Stage {
        name: name.to_string(),
        source,
    };
    let mut prefetched = None;
    match crate::prefetch::take(entry.kind(), entry.key()) {
        Some(Product::Image(fd)) => match keep_open(fd) {
            Ok(path) => return Ok(path),
            Err(e) => tracing::debug!(name = %name, error = %e, "prefetched memfd unusable"),
        },
        // Decompressed only (memfd not allowed): the cache below takes the bytes.
        Some(Product::Bytes(b)) => prefetched = Some(b),
        None => {}
    }
    if memfd_allowed() {
        let made = memfd_entry(entry);
        release_pages(entry.stored_bytes());
        match made {
            Ok(fd) => match keep_open(fd) {
                Ok(path) => return Ok(path),
                Err(e) => {
                    tracing::debug!(name = %name, error = %e, "/proc unavailable, using the cache directory")
                }
            },
            Err(NativeError::Archive(e)) => return Err(e.into()),
            Err(e) => {
                tracing::debug!(name = %name, error = %e, "memfd unavailable, using the cache directory")
            }
        }
    }
    let bytes = match prefetched {
        Some(b) => std::borrow::Cow::Owned(b),
        None => entry.read()?,
    };
    release_pages(entry.stored_bytes());
    cached(&name, &bytes).map_err(stage)
}

/// Whether native images may go to memfds (`PYKILN_NO_MEMFD` unset).
pub fn memfd_allowed() -> bool {
    std::env::var_os("PYKILN_NO_MEMFD").is_none()
}

/// An anonymous memfd holding an entry's image, decompressed straight into a mapping
/// of the memfd (no copy through the heap: images are megabytes).
pub fn memfd_entry(entry: &Entry<'_>) -> Result<OwnedFd, NativeError> {
    let name = entry.key_lossy();
    let stage = |source| NativeError::Stage {
        name: name.to_string(),
        source,
    };
    let cname = std::ffi::CString::new(name.replace('\0', "_"))
        .map_err(|e| stage(std::io::Error::other(e)))?;
    // SAFETY: plain syscall with a valid NUL-terminated name.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
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

/// The per-user cache directory for native images.
pub fn cache_root() -> Option<PathBuf> {
    Some(crate::cache::base()?.join("native"))
}

fn cached(name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let root = cache_root().ok_or_else(|| {
        std::io::Error::other("no usable cache directory (XDG_CACHE_HOME, HOME, private temp dir)")
    })?;
    let hash = hex(&Sha256::digest(bytes));
    let dir = root.join(&hash);
    crate::cache::create_private(&dir)?;
    let file_name: String = name
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    let path = dir.join(&file_name);
    if let Ok(existing) = fs::read(&path) {
        if hex(&Sha256::digest(&existing)) == hash {
            return Ok(path);
        }
        tracing::warn!(path = %path.display(), "cached native image does not match its hash; rewriting it");
    }
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o700)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    Ok(path)
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
    fn cache_is_content_addressed_and_private() {
        let dir = std::env::temp_dir().join(format!("pykiln-native-test-{}", std::process::id()));
        // SAFETY: tests in this module do not read XDG_CACHE_HOME concurrently.
        unsafe { std::env::set_var("XDG_CACHE_HOME", &dir) };
        let a = cached("liba.so.1", b"one").unwrap();
        let b = cached("liba.so.1", b"two").unwrap();
        assert_ne!(a, b, "different contents get different paths");
        assert_eq!(fs::read(&a).unwrap(), b"one");
        // A tampered file is detected and rewritten.
        fs::write(&a, b"evil").unwrap();
        let again = cached("liba.so.1", b"one").unwrap();
        assert_eq!(fs::read(&again).unwrap(), b"one");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(a.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "cache directory is private");
        let _ = fs::remove_dir_all(dir);
    }
}
