//! On-disk constants and the byte layout shared by reader and writer.

use std::fmt;

/// First eight bytes of every archive.
pub const MAGIC: [u8; 8] = *b"PYKILN\0A";
/// The only format version this crate reads and writes (2: a shared zstd dictionary;
/// 3: notices, the licenses and SBOM of what is packed).
pub const FORMAT_VERSION: u32 = 4;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Largest decompressed size of one blob; bounds the allocation a hostile record can ask for.
pub const MAX_ENTRY_LEN: usize = 1 << 30;
/// Size of one index record.
pub const RECORD_LEN: usize = 72;

/// Offsets inside the header.
pub(crate) mod header {
    pub const VERSION: usize = 8;
    pub const PY_MAJOR: usize = 12;
    pub const PY_MINOR: usize = 13;
    pub const COUNT: usize = 16;
    pub const STRINGS_LEN: usize = 24;
    pub const DATA_OFFSET: usize = 32;
    pub const DATA_LEN: usize = 40;
    /// The checksum covers the header up to here, then index and strings.
    pub const CHECKSUM: usize = 48;
}

/// Offsets inside an index record.
pub(crate) mod record {
    pub const KIND: usize = 0;
    pub const FLAGS: usize = 1;
    pub const KEY_OFF: usize = 4;
    pub const KEY_LEN: usize = 8;
    pub const AUX_OFF: usize = 12;
    pub const AUX_LEN: usize = 16;
    pub const PRIMARY: usize = 24;
    /// A blob reference: offset u64 (into data), stored u32, raw u32, xxh3 u64.
    pub const BLOB_LEN: usize = 24;
    pub const SECONDARY: usize = PRIMARY + BLOB_LEN;
    const _: () = assert!(SECONDARY + BLOB_LEN == super::RECORD_LEN);
}

/// Record flag bits.
pub(crate) mod flags {
    /// A module entry that is a package (`__init__`).
    pub const PACKAGE: u8 = 1 << 0;
    /// The primary blob is zstd-compressed.
    pub const PRIMARY_ZSTD: u8 = 1 << 1;
    /// The secondary blob is zstd-compressed.
    pub const SECONDARY_ZSTD: u8 = 1 << 2;
    /// The entry has a secondary blob (module source).
    pub const HAS_SECONDARY: u8 = 1 << 3;
    /// The primary blob's zstd frame was made with the archive's dictionary.
    pub const PRIMARY_DICT: u8 = 1 << 4;
    /// Every bit this version defines.
    pub const KNOWN: u8 = PACKAGE | PRIMARY_ZSTD | SECONDARY_ZSTD | HAS_SECONDARY | PRIMARY_DICT;
}

/// What an entry holds. The numeric value orders the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// The build manifest (JSON); key is empty.
    Manifest = 0,
    /// Module bytecode (marshal), optional source; key is the dotted module name.
    Module = 1,
    /// Native extension module (ELF); key is the dotted module name, aux is
    /// `[file name, needed SONAMEs…]`.
    Extension = 2,
    /// Native shared library; key is its SONAME, aux the SONAMEs it needs.
    SharedLib = 3,
    /// Package data; key is `package\0relative/path`.
    Resource = 4,
    /// A file of a `.dist-info` directory; key is `name-ver.dist-info\0file`.
    DistFile = 5,
    /// The zstd dictionary that bytecode blobs flagged with it were compressed with
    /// (stored raw); key is empty. At most one.
    Dictionary = 6,
    /// A document about the archive's contents for people and tools (license texts,
    /// the SBOM); key is its name, see [`crate::notices`].
    Notice = 7,
    /// What the app's start-up compiles from source text, compiled at build time (see
    /// [`crate::compiled`]): key `startup`, the code objects of the source strings
    /// (`compile`, `exec`, `eval`: dataclass methods, `typing` forward references…) as
    /// one table; key `regexes`, the regular expressions compiled through `re`.
    CompiledSources = 8,
}

impl EntryKind {
    /// Decode the kind byte of a record.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Manifest,
            1 => Self::Module,
            2 => Self::Extension,
            3 => Self::SharedLib,
            4 => Self::Resource,
            5 => Self::DistFile,
            6 => Self::Dictionary,
            7 => Self::Notice,
            8 => Self::CompiledSources,
            _ => return None,
        })
    }

    /// Every kind, in index order.
    pub const ALL: [EntryKind; 9] = [
        Self::Manifest,
        Self::Module,
        Self::Extension,
        Self::SharedLib,
        Self::Resource,
        Self::DistFile,
        Self::Dictionary,
        Self::Notice,
        Self::CompiledSources,
    ];

    /// Lower-case name used in messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::Module => "module",
            Self::Extension => "extension",
            Self::SharedLib => "shared-library",
            Self::Resource => "resource",
            Self::DistFile => "dist-file",
            Self::Dictionary => "zstd-dictionary",
            Self::Notice => "notice",
            Self::CompiledSources => "compiled-sources",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub(crate) fn checksum(parts: &[&[u8]]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(p);
    }
    h.digest()
}

pub(crate) fn blob_checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}
