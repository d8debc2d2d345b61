//! Zero-copy reader over archive bytes.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::format::{
    self, EntryKind, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_ENTRY_LEN, RECORD_LEN, flags, header,
    record,
};
use crate::{Error, Manifest};

fn u32_at(b: &[u8], at: usize) -> u32 {
    // Callers only pass offsets inside a slice whose length was checked.
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// `base[off..off+len]` with every overflow and bound turned into an error.
fn range(base: &[u8], off: u64, len: u64, what: impl FnOnce() -> String) -> Result<&[u8], Error> {
    let end = off.checked_add(len);
    match end {
        Some(end) if end <= base.len() as u64 => Ok(&base[off as usize..end as usize]),
        _ => Err(Error::OutOfBounds {
            what: what(),
            offset: off,
            len,
            size: base.len() as u64,
        }),
    }
}

/// Reference to one blob inside the data section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Blob {
    offset: u64,
    stored: u32,
    raw: u32,
    checksum: u64,
}

impl Blob {
    fn parse(rec: &[u8], at: usize) -> Self {
        Blob {
            offset: u64_at(rec, at),
            stored: u32_at(rec, at + 8),
            raw: u32_at(rec, at + 12),
            checksum: u64_at(rec, at + 16),
        }
    }
}

/// An opened archive: validated header and index over borrowed bytes.
#[derive(Clone, Copy)]
pub struct Archive<'a> {
    bytes: &'a [u8],
    index: &'a [u8],
    strings: &'a [u8],
    data: &'a [u8],
    data_offset: u64,
    count: usize,
    python: (u8, u8),
    /// The zstd dictionary entry's bytes, checksum-verified at open.
    dict: Option<&'a [u8]>,
}

impl std::fmt::Debug for Archive<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("entries", &self.count)
            .field("python", &self.python)
            .field("size", &self.size())
            .finish()
    }
}

impl<'a> Archive<'a> {
    /// Validate `bytes` as an archive: magic, version, section bounds, the checksum
    /// over header + index + strings, and every record's ranges, kind, flags and order.
    ///
    /// Costs one pass over the index (no allocation); blob contents are checked when read.
    pub fn open(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::TooShort { len: bytes.len() });
        }
        if bytes[..8] != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = u32_at(bytes, header::VERSION);
        if version != FORMAT_VERSION {
            return Err(Error::Version { found: version });
        }
        let count = u32_at(bytes, header::COUNT) as u64;
        let strings_len = u64_at(bytes, header::STRINGS_LEN);
        let data_offset = u64_at(bytes, header::DATA_OFFSET);
        let data_len = u64_at(bytes, header::DATA_LEN);

        let index_len = count * RECORD_LEN as u64; // count < 2^32, cannot overflow
        let index = range(bytes, HEADER_LEN as u64, index_len, || "index".into())?;
        let strings = range(bytes, HEADER_LEN as u64 + index_len, strings_len, || {
            "string table".into()
        })?;
        let expected_data = HEADER_LEN as u64 + index_len + strings_len;
        if data_offset != expected_data {
            return Err(Error::BadRecord {
                index: 0,
                offset: header::DATA_OFFSET,
                problem: format!(
                    "header says data starts at {data_offset}, layout says {expected_data}"
                ),
            });
        }
        let data = range(bytes, data_offset, data_len, || "data section".into())?;

        let stored = u64_at(bytes, header::CHECKSUM);
        let computed = format::checksum(&[&bytes[..header::CHECKSUM], index, strings]);
        // Under the fuzzer the checksums are not enforced, so mutations reach the
        // record validation and decoding paths behind them.
        if stored != computed && !cfg!(fuzzing) {
            return Err(Error::MetaChecksum { stored, computed });
        }

        let mut archive = Archive {
            bytes,
            index,
            strings,
            data,
            data_offset,
            count: count as usize,
            python: (bytes[header::PY_MAJOR], bytes[header::PY_MINOR]),
            dict: None,
        };
        archive.validate_records()?;
        if let Some(e) = archive.find(EntryKind::Dictionary, b"") {
            if !e.is_stored_raw() {
                let index = archive.lower_bound(EntryKind::Dictionary, b"");
                return Err(Error::BadRecord {
                    index,
                    offset: HEADER_LEN + index * RECORD_LEN,
                    problem: "the zstd dictionary is not stored raw".into(),
                });
            }
            archive.dict = Some(e.verified(e.primary)?);
        }
        Ok(archive)
    }

    /// The zstd dictionary bytecode blobs may be compressed with, if the archive has one.
    pub fn dictionary(&self) -> Option<&'a [u8]> {
        self.dict
    }

    fn validate_records(&self) -> Result<(), Error> {
        let mut prev: Option<(EntryKind, &[u8])> = None;
        for i in 0..self.count {
            let offset = HEADER_LEN + i * RECORD_LEN;
            let bad = |problem: String| Error::BadRecord {
                index: i,
                offset,
                problem,
            };
            let rec = &self.index[i * RECORD_LEN..(i + 1) * RECORD_LEN];
            let kind = EntryKind::from_u8(rec[record::KIND])
                .ok_or_else(|| bad(format!("unknown entry kind {}", rec[record::KIND])))?;
            let fl = rec[record::FLAGS];
            if fl & !flags::KNOWN != 0 {
                return Err(bad(format!("unknown flag bits {fl:#04x}")));
            }
            let key = range(
                self.strings,
                u32_at(rec, record::KEY_OFF) as u64,
                u32_at(rec, record::KEY_LEN) as u64,
                || format!("key of record {i}"),
            )?;
            range(
                self.strings,
                u32_at(rec, record::AUX_OFF) as u64,
                u32_at(rec, record::AUX_LEN) as u64,
                || format!("aux strings of record {i}"),
            )?;
            for (at, what) in [
                (record::PRIMARY, "primary"),
                (record::SECONDARY, "secondary"),
            ] {
                let blob = Blob::parse(rec, at);
                range(self.data, blob.offset, blob.stored as u64, || {
                    format!("{what} data of record {i}")
                })?;
            }
            if let Some((pk, pkey)) = prev {
                if (pk, pkey).cmp(&(kind, key)) != Ordering::Less {
                    return Err(bad("index is not sorted or has a duplicate key".into()));
                }
            }
            prev = Some((kind, key));
        }
        Ok(())
    }

    /// Python `(major, minor)` the archive's bytecode was compiled for.
    pub fn python_version(&self) -> (u8, u8) {
        self.python
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the archive has no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size in bytes of the archive proper (trailing bytes of the buffer excluded).
    pub fn size(&self) -> usize {
        self.data_offset as usize + self.data.len()
    }

    /// The bytes the archive was opened over.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Entry number `i` in index order.
    pub fn entry(&self, i: usize) -> Option<Entry<'a>> {
        let rec = self.index.get(i * RECORD_LEN..(i + 1) * RECORD_LEN)?;
        // Ranges, kind and flags were validated at open.
        let kind = EntryKind::from_u8(rec[record::KIND])?;
        let slice = |off, len| {
            self.strings
                .get(off as usize..(off as usize).checked_add(len as usize)?)
        };
        Some(Entry {
            kind,
            flags: rec[record::FLAGS],
            key: slice(u32_at(rec, record::KEY_OFF), u32_at(rec, record::KEY_LEN))?,
            aux: slice(u32_at(rec, record::AUX_OFF), u32_at(rec, record::AUX_LEN))?,
            primary: Blob::parse(rec, record::PRIMARY),
            secondary: Blob::parse(rec, record::SECONDARY),
            data: self.data,
            data_offset: self.data_offset,
            dict: self.dict,
        })
    }

    /// All entries in index order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        (0..self.count).filter_map(|i| self.entry(i))
    }

    fn key_at(&self, i: usize) -> (EntryKind, &'a [u8]) {
        match self.entry(i) {
            Some(e) => (e.kind, e.key),
            None => (EntryKind::Manifest, &[]),
        }
    }

    /// First index whose (kind, key) is not less than the given one.
    fn lower_bound(&self, kind: EntryKind, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key_at(mid) < (kind, key) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The entry of `kind` with exactly `key`.
    pub fn find(&self, kind: EntryKind, key: &[u8]) -> Option<Entry<'a>> {
        let i = self.lower_bound(kind, key);
        self.entry(i).filter(|e| e.kind == kind && e.key == key)
    }

    /// Entries of `kind` whose key starts with `prefix`, in key order.
    pub fn prefixed<'s>(
        &'s self,
        kind: EntryKind,
        prefix: &'s [u8],
    ) -> impl Iterator<Item = Entry<'a>> + 's {
        let start = self.lower_bound(kind, prefix);
        (start..self.count)
            .map_while(move |i| self.entry(i))
            .take_while(move |e| e.kind == kind && e.key.starts_with(prefix))
    }

    /// A module by dotted name: bytecode module first, then native extension.
    pub fn module(&self, name: &str) -> Option<Entry<'a>> {
        self.find(EntryKind::Module, name.as_bytes())
            .or_else(|| self.find(EntryKind::Extension, name.as_bytes()))
    }

    /// The entries that loading `modules` reads, in load order: each module's entry,
    /// an extension's packed libraries first (dependencies before dependents). The
    /// same order [`ArchiveWriter::data_order`](crate::ArchiveWriter::data_order)
    /// lays out.
    pub fn load_order(&self, modules: &[impl AsRef<str>]) -> Vec<Entry<'a>> {
        let needs = |e: &Entry<'a>, skip: usize| -> Vec<String> {
            e.aux().skip(skip).map(str::to_string).collect()
        };
        let keys = crate::order::load_order(
            modules,
            |name| {
                let e = self.module(name)?;
                // An extension's aux is its file name, then the SONAMEs it needs.
                let needed = match e.kind() {
                    EntryKind::Extension => needs(&e, 1),
                    _ => Vec::new(),
                };
                Some(((e.kind(), e.key()), needed))
            },
            |soname| {
                let e = self.find(EntryKind::SharedLib, soname.as_bytes())?;
                Some(((e.kind(), e.key()), needs(&e, 0)))
            },
        );
        keys.into_iter()
            .filter_map(|(kind, key)| self.find(kind, key))
            .collect()
    }

    /// Whether some packed module lives below `name.` (makes `name` a namespace package
    /// when it has no module of its own).
    pub fn has_submodules(&self, name: &str) -> bool {
        let prefix = format!("{name}.");
        [EntryKind::Module, EntryKind::Extension]
            .into_iter()
            .any(|k| self.prefixed(k, prefix.as_bytes()).next().is_some())
    }

    /// Immediate submodules of `package` (`""` for top level) as (short name, entry),
    /// bytecode and extension modules merged in name order.
    pub fn children(&self, package: &str) -> Vec<(&'a str, Entry<'a>)> {
        let prefix = if package.is_empty() {
            String::new()
        } else {
            format!("{package}.")
        };
        let mut out: Vec<(&'a str, Entry<'a>)> = Vec::new();
        for kind in [EntryKind::Module, EntryKind::Extension] {
            for e in self.prefixed(kind, prefix.as_bytes()) {
                let Ok(rest) = std::str::from_utf8(&e.key[prefix.len()..]) else {
                    continue;
                };
                if !rest.is_empty() && !rest.contains('.') {
                    out.push((rest, e));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Entries of `kind` whose key is `group\0name`, as (name, entry) in name order.
    fn grouped<'s>(
        &'s self,
        kind: EntryKind,
        group: &str,
    ) -> impl Iterator<Item = (&'a str, Entry<'a>)> + 's {
        let mut prefix = group.as_bytes().to_vec();
        prefix.push(0);
        let plen = prefix.len();
        let start = self.lower_bound(kind, &prefix);
        (start..self.count)
            .map_while(move |i| self.entry(i))
            .take_while(move |e| e.kind == kind && e.key.starts_with(&prefix))
            .filter_map(move |e| Some((std::str::from_utf8(&e.key[plen..]).ok()?, e)))
    }

    /// Resources of `package` as (relative path, entry), in path order.
    pub fn resources<'s>(
        &'s self,
        package: &str,
    ) -> impl Iterator<Item = (&'a str, Entry<'a>)> + 's {
        self.grouped(EntryKind::Resource, package)
    }

    /// One resource of `package`.
    pub fn resource(&self, package: &str, path: &str) -> Option<Entry<'a>> {
        self.find(EntryKind::Resource, &join_key(package, path))
    }

    /// Names of the packed `.dist-info` directories, sorted.
    pub fn distributions(&self) -> Vec<&'a str> {
        let mut out: Vec<&'a str> = Vec::new();
        for e in self.prefixed(EntryKind::DistFile, b"") {
            let Some(pos) = e.key.iter().position(|&b| b == 0) else {
                continue;
            };
            let Ok(dir) = std::str::from_utf8(&e.key[..pos]) else {
                continue;
            };
            if out.last() != Some(&dir) {
                out.push(dir);
            }
        }
        out
    }

    /// Files of one `.dist-info` directory as (file name, entry).
    pub fn dist_files<'s>(
        &'s self,
        dist_dir: &str,
    ) -> impl Iterator<Item = (&'a str, Entry<'a>)> + 's {
        self.grouped(EntryKind::DistFile, dist_dir)
    }

    /// One file of a `.dist-info` directory.
    pub fn dist_file(&self, dist_dir: &str, file: &str) -> Option<Entry<'a>> {
        self.find(EntryKind::DistFile, &join_key(dist_dir, file))
    }

    /// A notice by name (see [`crate::notices`]).
    pub fn notice(&self, name: &str) -> Option<Entry<'a>> {
        self.find(EntryKind::Notice, name.as_bytes())
    }

    /// The decoded manifest.
    pub fn manifest(&self) -> Result<Manifest, Error> {
        let e = self
            .find(EntryKind::Manifest, b"")
            .ok_or_else(|| Error::Manifest("the archive has no manifest entry".into()))?;
        let bytes = e.read()?;
        serde_json::from_slice(&bytes).map_err(|err| Error::Manifest(err.to_string()))
    }

    /// The table of code objects compiled from the start-up's source strings, if the
    /// archive has one (see [`crate::compiled`]).
    pub fn compiled_sources(&self) -> Result<Option<crate::SourceTable>, Error> {
        let Some(entry) = self.find(
            EntryKind::CompiledSources,
            crate::compiled::TABLE_KEY.as_bytes(),
        ) else {
            return Ok(None);
        };
        let bytes = entry.read()?.into_owned();
        Ok(Some(crate::SourceTable::parse(bytes)?))
    }

    /// The regular expressions the start-up compiles (see
    /// [`crate::compiled::REGEX_KEY`]), if the archive has them.
    pub fn regex_seeds(&self) -> Result<Option<Cow<'a, [u8]>>, Error> {
        self.find(
            EntryKind::CompiledSources,
            crate::compiled::REGEX_KEY.as_bytes(),
        )
        .map(|e| e.read())
        .transpose()
    }

    /// Number of entries of each kind, in kind order.
    pub fn counts(&self) -> Vec<(EntryKind, usize)> {
        EntryKind::ALL
            .iter()
            .map(|&k| (k, self.prefixed(k, b"").count()))
            .collect()
    }
}

pub(crate) fn join_key(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

/// One index entry; cheap to copy, reads its blobs on demand.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    kind: EntryKind,
    flags: u8,
    key: &'a [u8],
    aux: &'a [u8],
    primary: Blob,
    secondary: Blob,
    data: &'a [u8],
    data_offset: u64,
    dict: Option<&'a [u8]>,
}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("kind", &self.kind)
            .field("key", &self.key_lossy())
            .field("stored", &self.primary.stored)
            .field("raw", &self.primary.raw)
            .finish()
    }
}

impl<'a> Entry<'a> {
    /// What the entry holds.
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// The raw key.
    pub fn key(&self) -> &'a [u8] {
        self.key
    }

    /// The key as text (keys are written from Rust strings, so this only fails on
    /// corrupted archives, where it yields a lossy rendering).
    pub fn key_lossy(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.key)
    }

    /// Whether a module entry is a package.
    pub fn is_package(&self) -> bool {
        self.flags & flags::PACKAGE != 0
    }

    /// Whether the entry carries a secondary blob (module source).
    pub fn has_source(&self) -> bool {
        self.flags & flags::HAS_SECONDARY != 0
    }

    /// Auxiliary strings (extension file name and needed SONAMEs, or a library's
    /// needed SONAMEs). Non-UTF-8 items are skipped.
    pub fn aux(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.aux
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .filter_map(|s| std::str::from_utf8(s).ok())
    }

    /// Size of the primary blob once decompressed.
    pub fn raw_len(&self) -> usize {
        self.primary.raw as usize
    }

    /// Size of the secondary blob (module source) once decompressed; 0 without one.
    pub fn source_len(&self) -> usize {
        if self.has_source() {
            self.secondary.raw as usize
        } else {
            0
        }
    }

    /// Size of the primary blob as stored.
    pub fn stored_len(&self) -> usize {
        self.primary.stored as usize
    }

    /// Size of the secondary blob (module source) as stored; 0 without one.
    pub fn stored_source_len(&self) -> usize {
        if self.has_source() {
            self.secondary.stored as usize
        } else {
            0
        }
    }

    /// Whether the primary blob is stored uncompressed (and so can be borrowed).
    pub fn is_stored_raw(&self) -> bool {
        self.flags & flags::PRIMARY_ZSTD == 0
    }

    /// The primary blob exactly as stored (compressed or not, unverified): lets a
    /// caller that mapped the archive release those pages once it has read them.
    pub fn stored_bytes(&self) -> &'a [u8] {
        let start = (self.primary.offset as usize).min(self.data.len());
        let end = start
            .saturating_add(self.primary.stored as usize)
            .min(self.data.len());
        &self.data[start..end]
    }

    /// The primary blob (bytecode, file contents…), checksum-verified and decompressed.
    pub fn read(&self) -> Result<Cow<'a, [u8]>, Error> {
        self.read_blob(
            self.primary,
            self.flags & flags::PRIMARY_ZSTD != 0,
            self.primary_dict()?,
        )
    }

    /// The dictionary the primary blob needs, if it was compressed with one.
    fn primary_dict(&self) -> Result<Option<&'a [u8]>, Error> {
        if self.flags & flags::PRIMARY_DICT == 0 {
            return Ok(None);
        }
        match self.dict {
            Some(d) => Ok(Some(d)),
            None => Err(self.decompress_error(
                self.data_offset.saturating_add(self.primary.offset),
                "compressed with a zstd dictionary the archive does not have".into(),
            )),
        }
    }

    /// The secondary blob (module source), if the entry has one.
    pub fn read_source(&self) -> Result<Option<Cow<'a, [u8]>>, Error> {
        if !self.has_source() {
            return Ok(None);
        }
        self.read_blob(
            self.secondary,
            self.flags & flags::SECONDARY_ZSTD != 0,
            None,
        )
        .map(Some)
    }

    /// The primary blob, checksum-verified and decompressed into `out`, which must be
    /// exactly [`raw_len`](Self::raw_len) bytes long (e.g. a mapping of the file it
    /// goes to, so that large native images are never copied through the heap).
    pub fn read_into(&self, out: &mut [u8]) -> Result<(), Error> {
        let blob = self.primary;
        let abs = self.data_offset.saturating_add(blob.offset);
        if out.len() != blob.raw as usize {
            return Err(self.decompress_error(
                abs,
                format!(
                    "output buffer is {} bytes, expected {}",
                    out.len(),
                    blob.raw
                ),
            ));
        }
        let stored = self.verified(blob)?;
        if self.flags & flags::PRIMARY_ZSTD == 0 {
            if stored.len() != out.len() {
                return Err(
                    self.decompress_error(abs, "stored length differs from raw length".into())
                );
            }
            out.copy_from_slice(stored);
            return Ok(());
        }
        let dict = self.primary_dict()?;
        let n = decompress_into(stored, out, dict)
            .map_err(|e| self.decompress_error(abs, e.to_string()))?;
        if n != out.len() {
            return Err(
                self.decompress_error(abs, format!("got {n} bytes, expected {}", out.len()))
            );
        }
        Ok(())
    }

    /// The stored bytes of `blob`, bounds- and checksum-checked.
    fn verified(&self, blob: Blob) -> Result<&'a [u8], Error> {
        let stored = range(self.data, blob.offset, blob.stored as u64, || {
            format!("{} entry '{}'", self.kind, self.key_lossy())
        })?;
        if format::blob_checksum(stored) != blob.checksum && !cfg!(fuzzing) {
            return Err(Error::EntryChecksum {
                kind: self.kind,
                key: self.key_lossy().into_owned(),
                offset: self.data_offset.saturating_add(blob.offset),
            });
        }
        Ok(stored)
    }

    fn read_blob(
        &self,
        blob: Blob,
        zstd: bool,
        dict: Option<&[u8]>,
    ) -> Result<Cow<'a, [u8]>, Error> {
        let abs = self.data_offset.saturating_add(blob.offset);
        let stored = self.verified(blob)?;
        if !zstd {
            if stored.len() != blob.raw as usize {
                return Err(
                    self.decompress_error(abs, "stored length differs from raw length".into())
                );
            }
            return Ok(Cow::Borrowed(stored));
        }
        if blob.raw as usize > MAX_ENTRY_LEN {
            return Err(self.decompress_error(
                abs,
                format!(
                    "recorded size {} exceeds the {MAX_ENTRY_LEN}-byte limit",
                    blob.raw
                ),
            ));
        }
        let out = decompress(stored, blob.raw as usize, dict)
            .map_err(|e| self.decompress_error(abs, e.to_string()))?;
        if out.len() != blob.raw as usize {
            return Err(self.decompress_error(
                abs,
                format!("got {} bytes, expected {}", out.len(), blob.raw),
            ));
        }
        Ok(Cow::Owned(out))
    }

    fn decompress_error(&self, offset: u64, reason: String) -> Error {
        Error::Decompress {
            kind: self.kind,
            key: self.key_lossy().into_owned(),
            offset,
            reason,
        }
    }
}

thread_local! {
    // One decompression context per thread: creating a zstd context for each of the
    // hundreds of small blobs read at start-up costs more than decompressing them.
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
    // And one with the archive's dictionary loaded (digested once, not per blob),
    // keyed by the dictionary's address and length.
    static DICT_DCTX: std::cell::RefCell<Option<DictContext>> = const { std::cell::RefCell::new(None) };
}

type DictContext = ((usize, usize), zstd::bulk::Decompressor<'static>);

fn with_dctx<T>(
    dict: Option<&[u8]>,
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    match dict {
        None => DCTX.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::new()?);
            }
            match slot.as_mut() {
                Some(d) => f(d),
                None => f(&mut zstd::bulk::Decompressor::new()?),
            }
        }),
        Some(dict) => DICT_DCTX.with(|cell| {
            let key = (dict.as_ptr() as usize, dict.len());
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(k, _)| *k != key) {
                *slot = Some((key, zstd::bulk::Decompressor::with_dictionary(dict)?));
            }
            match slot.as_mut() {
                Some((_, d)) => f(d),
                None => f(&mut zstd::bulk::Decompressor::with_dictionary(dict)?),
            }
        }),
    }
}

fn decompress(stored: &[u8], capacity: usize, dict: Option<&[u8]>) -> std::io::Result<Vec<u8>> {
    with_dctx(dict, |d| d.decompress(stored, capacity))
}

fn decompress_into(stored: &[u8], out: &mut [u8], dict: Option<&[u8]>) -> std::io::Result<usize> {
    with_dctx(dict, |d| d.decompress_to_buffer(stored, out))
}
