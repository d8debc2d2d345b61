//! Archives appended to an executable, and finding an archive inside any file.
//!
//! A runner executable (built once per interpreter) becomes an application by
//! appending an archive and a fixed-size trailer; the ELF loader ignores bytes past
//! the last segment, so nothing is relinked:
//!
//! ```text
//! runner ELF   as built
//! padding      zeros up to the next multiple of ALIGN (the archive starts on a page)
//! archive      the archive bytes, unchanged
//! trailer      32 bytes: TRAILER_MAGIC, archive offset u64, archive length u64,
//!              xxh3-64 over the trailer's first 24 bytes and the archive's header
//! ```
//!
//! The checksum ties the trailer to the archive it points at; the archive's own
//! checksums cover the rest when it is opened.

use crate::format::{self, HEADER_LEN, MAGIC, header};

/// Last 32 bytes of an executable carrying an appended archive start with these.
pub const TRAILER_MAGIC: [u8; 8] = *b"PYKILN\0T";
/// Size of the trailer.
pub const TRAILER_LEN: usize = 32;
/// The appended archive starts at a multiple of this (a page), so it can be mapped
/// on its own.
pub const ALIGN: usize = 4096;

/// Why a file's appended archive could not be located.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TrailerError {
    /// The file does not end with a trailer.
    #[error("no pykiln trailer in the last {TRAILER_LEN} bytes")]
    Missing,
    /// The trailer's offset and length do not lie inside the file.
    #[error(
        "the pykiln trailer at byte offset {at} points at bytes {offset}..{offset}+{len}, outside the file's first {at} bytes"
    )]
    OutOfBounds {
        /// Offset of the trailer.
        at: u64,
        /// Archive offset the trailer records.
        offset: u64,
        /// Archive length the trailer records.
        len: u64,
    },
    /// The trailer's checksum does not match the trailer and the archive header.
    #[error(
        "the pykiln trailer at byte offset {at} does not match the archive it points at (checksum {stored:#018x}, computed {computed:#018x}): the file is corrupted"
    )]
    Checksum {
        /// Offset of the trailer.
        at: u64,
        /// Checksum stored in the trailer.
        stored: u64,
        /// Checksum computed.
        computed: u64,
    },
}

fn trailer_checksum(fields: &[u8], archive: &[u8]) -> u64 {
    let head = &archive[..archive.len().min(HEADER_LEN)];
    format::checksum(&[fields, head])
}

/// Bytes to append to an executable of `exe_len` bytes so that it carries `archive`:
/// padding, the archive and the trailer (the archive itself is not copied here; write
/// `padding`, then `archive`, then `trailer`).
pub fn appendix(exe_len: u64, archive: &[u8]) -> (Vec<u8>, [u8; TRAILER_LEN]) {
    let align = ALIGN as u64;
    let offset = exe_len.div_ceil(align) * align;
    let padding = vec![0u8; (offset - exe_len) as usize];
    let mut trailer = [0u8; TRAILER_LEN];
    trailer[..8].copy_from_slice(&TRAILER_MAGIC);
    trailer[8..16].copy_from_slice(&offset.to_le_bytes());
    trailer[16..24].copy_from_slice(&(archive.len() as u64).to_le_bytes());
    let sum = trailer_checksum(&trailer[..24], archive);
    trailer[24..].copy_from_slice(&sum.to_le_bytes());
    (padding, trailer)
}

/// The appended archive of `file` (an executable's bytes), located through its trailer.
/// Only the trailer and the archive header are read; open the result with
/// [`crate::Archive::open`].
pub fn appended(file: &[u8]) -> Result<&[u8], TrailerError> {
    let Some(at) = file.len().checked_sub(TRAILER_LEN) else {
        return Err(TrailerError::Missing);
    };
    let trailer = &file[at..];
    if trailer[..8] != TRAILER_MAGIC {
        return Err(TrailerError::Missing);
    }
    let field = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&trailer[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let (offset, len, stored) = (field(8), field(16), field(24));
    let bad = TrailerError::OutOfBounds {
        at: at as u64,
        offset,
        len,
    };
    let end = offset.checked_add(len).ok_or(bad.clone())?;
    if end > at as u64 {
        return Err(bad);
    }
    let archive = &file[offset as usize..end as usize];
    let computed = trailer_checksum(&trailer[..24], archive);
    if stored != computed {
        return Err(TrailerError::Checksum {
            at: at as u64,
            stored,
            computed,
        });
    }
    Ok(archive)
}

/// The pykiln archive inside any file: an appended one (through its trailer, which is
/// authoritative: the archive's own checks come when it is opened), else one embedded
/// anywhere in it (a cargo-built executable holds its archive in read-only data): the
/// first place where the magic starts a header whose sections fit in the file and
/// that opens. Returns the archive's offset in `file` and its bytes.
pub fn locate(file: &[u8]) -> Option<(usize, &[u8])> {
    if let Ok(archive) = appended(file) {
        let offset = archive.as_ptr() as usize - file.as_ptr() as usize;
        return Some((offset, archive));
    }
    let mut from = 0;
    while let Some(pos) = find(&file[from..], &MAGIC) {
        let start = from + pos;
        if let Some(len) = archive_len(&file[start..]) {
            let bytes = &file[start..start + len];
            if crate::Archive::open(bytes).is_ok() {
                return Some((start, bytes));
            }
        }
        from = start + 1;
    }
    None
}

/// Total length an archive header at the start of `bytes` declares, if it fits.
fn archive_len(bytes: &[u8]) -> Option<usize> {
    let head = bytes.get(..HEADER_LEN)?;
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let total = u64_at(header::DATA_OFFSET).checked_add(u64_at(header::DATA_LEN))?;
    (total <= bytes.len() as u64).then_some(total as usize)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        let rel = haystack[i..].iter().position(|&b| b == first)?;
        i += rel;
        if haystack.get(i..i + needle.len()) == Some(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Archive, ArchiveWriter};

    fn archive() -> Vec<u8> {
        let mut w = ArchiveWriter::new((3, 11));
        w.add_module("m", b"code".to_vec(), None, false).unwrap();
        w.finish().unwrap()
    }

    fn executable_with(archive: &[u8], exe: &[u8]) -> Vec<u8> {
        let (padding, trailer) = appendix(exe.len() as u64, archive);
        [exe, &padding, archive, &trailer].concat()
    }

    #[test]
    fn an_appended_archive_is_found_page_aligned() {
        let a = archive();
        let file = executable_with(&a, b"\x7fELF runner bytes");
        let found = appended(&file).unwrap();
        assert_eq!(found, &a[..]);
        assert_eq!(
            (found.as_ptr() as usize - file.as_ptr() as usize) % ALIGN,
            0
        );
        Archive::open(found).unwrap();
        assert_eq!(locate(&file).unwrap().1, &a[..]);
    }

    #[test]
    fn a_damaged_trailer_or_header_is_named_not_trusted() {
        let a = archive();
        let file = executable_with(&a, &[1u8; 5000]);
        assert_eq!(
            appended(&file[..file.len() - 1]),
            Err(TrailerError::Missing)
        );
        let mut moved = file.clone();
        let at = moved.len() - TRAILER_LEN;
        moved[at + 8] ^= 1; // offset
        assert!(matches!(
            appended(&moved),
            Err(TrailerError::Checksum { .. } | TrailerError::OutOfBounds { .. })
        ));
        let mut huge = file.clone();
        huge[at + 16..at + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            appended(&huge),
            Err(TrailerError::OutOfBounds { .. })
        ));
        let mut header = file.clone();
        header[8192 + 20] ^= 1; // inside the archive header
        assert!(matches!(
            appended(&header),
            Err(TrailerError::Checksum { .. })
        ));
    }

    proptest::proptest! {
        /// Arbitrary bytes, and a real file with one byte changed anywhere: never a
        /// panic; what is found lies inside the file and opens, or is refused.
        #[test]
        fn damaged_files_are_found_or_refused_never_misread(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            at in 0usize..20_000,
            flip in 1u8..=255,
        ) {
            let _ = appended(&noise);
            let _ = locate(&noise);
            let _ = crate::stamp::find(&noise);
            let a = archive();
            let mut file = executable_with(&a, &noise);
            let at = at % file.len();
            file[at] ^= flip;
            match appended(&file) {
                // The trailer is authoritative; the archive's own checks come at open.
                Ok(found) => {
                    let start = found.as_ptr() as usize - file.as_ptr() as usize;
                    proptest::prop_assert!(start + found.len() <= file.len() - TRAILER_LEN);
                    proptest::prop_assert_eq!(locate(&file), Some((start, found)));
                }
                Err(_) => {
                    if let Some((off, found)) = locate(&file) {
                        proptest::prop_assert!(off + found.len() <= file.len());
                        proptest::prop_assert!(Archive::open(found).is_ok());
                    }
                }
            }
        }
    }

    #[test]
    fn an_embedded_archive_is_found_past_false_magics() {
        let a = archive();
        let mut file = b"text PYKILN\0A not an archive ".to_vec();
        file.extend_from_slice(&MAGIC);
        file.extend_from_slice(&[0xff; 100]);
        let at = file.len();
        file.extend_from_slice(&a);
        file.extend_from_slice(b"more rodata");
        let (off, bytes) = locate(&file).unwrap();
        assert_eq!((off, bytes), (at, &a[..]));
        assert!(locate(b"no archive here").is_none());
    }
}
