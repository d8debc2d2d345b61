//! The pykiln resource archive.
//!
//! One self-describing blob that holds everything an embedded interpreter imports:
//! module bytecode (with optional source), package resources, distribution metadata,
//! native extension modules and the shared libraries they need, plus a manifest.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header   64 bytes   magic, format version, Python version, counts, section sizes,
//!                     xxh3-64 over header[..48] + index + strings
//! index    count × 72 sorted by (kind, key): kind, flags, key/aux ranges in the
//!                     string table, and two blob references (primary, secondary)
//! strings  keys and auxiliary strings
//! data     blobs, each raw or zstd-compressed on its own (module bytecode optionally
//!          with the archive's zstd dictionary, itself a raw `Dictionary` entry)
//! ```
//!
//! The [`Archive`] reader works directly on `&[u8]` (an `include_bytes!` static or a
//! memory map): opening validates the header, the index checksum and every record's
//! ranges, but builds no heap structures; lookups are binary searches over the index.
//! Each blob carries its own checksum, verified whenever it is read, so a corrupted
//! entry is reported by name without touching the others.
//!
//! [`ArchiveWriter`] produces the same bytes for the same inputs: entries are sorted,
//! and nothing time- or machine-dependent is written.

pub mod compiled;
mod format;
pub mod notices;
mod order;
mod reader;
pub mod stamp;
pub mod trailer;
mod writer;

pub use compiled::{SourceKey, SourceTable};
pub use format::{EntryKind, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_ENTRY_LEN, RECORD_LEN};
pub use reader::{Archive, Entry};
pub use writer::{ArchiveWriter, FrameCache, WriteError};

use serde::{Deserialize, Serialize};

/// Everything that can go wrong reading an archive. Every variant names the byte offset
/// or the entry involved so a corrupted binary can be diagnosed from the message alone.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The buffer cannot even hold a header.
    #[error("archive is {len} bytes, shorter than its {HEADER_LEN}-byte header")]
    TooShort {
        /// Length of the buffer.
        len: usize,
    },
    /// The first eight bytes are not [`MAGIC`].
    #[error("not a pykiln archive: bad magic at byte offset 0")]
    BadMagic,
    /// A format version this reader does not understand.
    #[error(
        "unsupported archive format version {found} at byte offset 8 (this reader understands {FORMAT_VERSION})"
    )]
    Version {
        /// Version found in the header.
        found: u32,
    },
    /// A section or blob extends past the end of the buffer or its section.
    #[error(
        "{what} at byte offset {offset} (length {len}) runs past the end of its section ({size} bytes)"
    )]
    OutOfBounds {
        /// What was being located.
        what: String,
        /// Offset of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Size of the enclosing section or buffer.
        size: u64,
    },
    /// The checksum over header, index and string table does not match.
    #[error(
        "header/index checksum mismatch (stored {stored:#018x}, computed {computed:#018x}): the archive is corrupted"
    )]
    MetaChecksum {
        /// Checksum stored in the header.
        stored: u64,
        /// Checksum computed over the bytes.
        computed: u64,
    },
    /// An index record is malformed.
    #[error("index record {index} at byte offset {offset}: {problem}")]
    BadRecord {
        /// Position of the record in the index.
        index: usize,
        /// Byte offset of the record in the archive.
        offset: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// A blob's bytes do not match its checksum.
    #[error("{kind} entry '{key}': checksum mismatch in its data at byte offset {offset}")]
    EntryChecksum {
        /// Kind of the entry.
        kind: EntryKind,
        /// Key of the entry (lossily decoded).
        key: String,
        /// Byte offset of the blob in the archive.
        offset: u64,
    },
    /// A blob could not be decompressed to its recorded size.
    #[error("{kind} entry '{key}': cannot decompress its data at byte offset {offset}: {reason}")]
    Decompress {
        /// Kind of the entry.
        kind: EntryKind,
        /// Key of the entry (lossily decoded).
        key: String,
        /// Byte offset of the blob in the archive.
        offset: u64,
        /// Decoder message.
        reason: String,
    },
    /// The manifest entry is missing or not valid JSON of the expected shape.
    #[error("manifest: {0}")]
    Manifest(String),
    /// The compiled-sources table is malformed.
    #[error("compiled-sources entry: {0}")]
    CompiledSources(#[from] compiled::TableError),
}

/// Build information carried inside every archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Manifest {
    /// Version of pykiln that wrote the archive.
    pub pykiln_version: String,
    /// Full version of the Python the bytecode was compiled with (e.g. `3.11.7`).
    pub python_version: String,
    /// The application, if the archive was built for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppInfo>,
    /// Third-party distributions packed, sorted by name.
    #[serde(default)]
    pub distributions: Vec<Distribution>,
    /// Free-form build settings (compression level, exclusions…), sorted.
    #[serde(default)]
    pub build: std::collections::BTreeMap<String, String>,
    /// Packed modules that also fail to import in a plain environment on the build
    /// machine (optional dependency missing, other platform), with the error there.
    /// `--pykiln verify` reports these without counting them as packaging failures.
    #[serde(default)]
    pub expected_import_failures: std::collections::BTreeMap<String, String>,
    /// Distributions that read their own files by path (`__file__`-relative data,
    /// libraries loaded with ctypes/cffi, executables): the runtime extracts each to a
    /// content-addressed directory on first import and points `__file__` there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_disk: Vec<OnDiskGroup>,
    /// `import` lines of the `.pth` files of the packed site-packages, run in order at
    /// start-up as `site` would.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pth_imports: Vec<String>,
    /// OpenSSL's compiled-in CA file and directory on the build machine; when neither
    /// exists at run time the runtime looks for the target's bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub openssl_default_paths: Vec<String>,
    /// Packed modules the app loads at start-up, in load order (recorded by the build);
    /// the runtime reads them ahead of the importer on another thread.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup: Vec<String>,
    /// Native images served file-backed, from the per-user content-addressed cache,
    /// instead of from an in-memory memfd: [`file_backed_key`] → the SHA-256 (hex) of
    /// the image, which names its cache directory and is checked on every load.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub file_backed_native: std::collections::BTreeMap<String, String>,
    /// `[tool.pykiln.mcpb]`: what `pykiln dist` puts in the MCP Bundle's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcpb: Option<McpbConfig>,
    /// `[tool.pykiln.oci]`: how `pykiln dist` makes the container image start it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciConfig>,
}

/// The key of a native image in [`Manifest::file_backed_native`]:
/// `extension:<module>` or `shared-library:<SONAME>`.
pub fn file_backed_key(kind: EntryKind, key: &str) -> String {
    format!("{}:{key}", kind.name())
}

/// The entry a [`file_backed_key`] names; `None` unless it is an extension or shared
/// library key.
pub fn parse_file_backed_key(text: &str) -> Option<(EntryKind, &str)> {
    let (kind, key) = text.split_once(':')?;
    let kind = [EntryKind::Extension, EntryKind::SharedLib]
        .into_iter()
        .find(|k| k.name() == kind)?;
    Some((kind, key))
}

/// `[tool.pykiln.oci]` in pyproject.toml: the container image's command line. A server
/// that speaks MCP over HTTP runs that way in a container (`args`, listening on all
/// interfaces at `port`); without it, the image runs the server on stdio (`-i`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OciConfig {
    /// Arguments after the binary (the image's `CMD`; `ENTRYPOINT` is the binary).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The TCP port the server listens on with those arguments (`EXPOSE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// `[tool.pykiln.mcpb]` in pyproject.toml: how the server is started from an MCP Bundle
/// (Claude Desktop's one-click install format), and what the user is asked for at
/// install. Values may use the bundle's variables: `${user_config.KEY}`, `${HOME}`,
/// `${DOCUMENTS}`, `${__dirname}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct McpbConfig {
    /// Name shown to the user (default: the project name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Author (default: from the package metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Arguments the server is started with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment the server is started with.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// Settings asked for at install, by key.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub user_config: std::collections::BTreeMap<String, UserConfigField>,
}

/// One install-time setting of an MCP Bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfigField {
    /// `string`, `number`, `boolean`, `directory` or `file`.
    #[serde(rename = "type")]
    pub kind: UserConfigKind,
    /// Label.
    pub title: String,
    /// Help text.
    pub description: String,
    /// Whether the user must set it.
    #[serde(default)]
    pub required: bool,
    /// Default value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Several values (directories, files).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multiple: bool,
    /// A secret (stored in the OS keychain, masked).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

/// The kinds of [`UserConfigField`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserConfigKind {
    /// Text.
    String,
    /// A number.
    Number,
    /// On or off.
    Boolean,
    /// A directory path (chosen in a picker).
    Directory,
    /// A file path (chosen in a picker).
    File,
}

/// Whether dotted `name` is `package` itself or a module inside it.
pub fn within_package(name: &str, package: &str) -> bool {
    name == package
        || (name.len() > package.len()
            && name.starts_with(package)
            && name.as_bytes()[package.len()] == b'.')
}

/// A distribution served from the on-disk file view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OnDiskGroup {
    /// Distribution (or app) name.
    pub name: String,
    /// Hex digest of the group's files: the directory name of its extracted view.
    pub id: String,
    /// Packages (dotted prefixes) the view covers, or data directories of the import
    /// root (`_soundfile_data`).
    pub tops: Vec<String>,
    /// Why the build chose it (shown by `--pykiln info`).
    pub reason: String,
}

impl OnDiskGroup {
    /// Whether module (or package, or import-root data directory) `name` is in the view.
    pub fn covers(&self, name: &str) -> bool {
        self.tops.iter().any(|p| within_package(name, p))
    }
}

/// The packed application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AppInfo {
    /// Distribution name from pyproject.toml.
    pub name: String,
    /// Version from pyproject.toml.
    pub version: String,
    /// `module:function` that the executable runs.
    pub entry_point: String,
    /// Whether `<binary> -c CODE` / `-m MODULE` (after optional interpreter flags) runs
    /// Python instead of the app, so code that starts `sys.executable` as an
    /// interpreter works. `[tool.pykiln] python-cli = false` turns it off for apps
    /// whose own arguments look like that.
    #[serde(default = "yes")]
    pub python_cli: bool,
    /// `[tool.pykiln] stdout-guard`: text the server writes to `sys.stdout` goes to
    /// stderr, so a stray `print()` cannot corrupt a stdio MCP channel (the SDK's
    /// transport writes to `sys.stdout.buffer`, which stays stdout).
    #[serde(default)]
    pub stdout_guard: bool,
}

fn yes() -> bool {
    true
}

/// A packed distribution and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Distribution {
    /// Project name as in its metadata.
    pub name: String,
    /// Version as in its metadata.
    pub version: String,
}
