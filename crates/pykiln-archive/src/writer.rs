//! Deterministic archive writer.

use std::collections::BTreeMap;

use crate::Manifest;
use crate::format::{
    self, EntryKind, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_ENTRY_LEN, RECORD_LEN, flags, header,
    record,
};
use crate::reader::join_key;

/// Blobs shorter than this are stored raw: a zstd frame header would eat the gain.
const MIN_COMPRESS_LEN: usize = 64;

/// Why an entry could not be added or the archive not written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// Two entries of one kind with the same key.
    #[error("duplicate {kind} entry '{key}'")]
    Duplicate {
        /// Kind of both entries.
        kind: EntryKind,
        /// Their key.
        key: String,
    },
    /// A key or auxiliary string that cannot be stored.
    #[error("{kind} entry '{key}': {problem}")]
    BadKey {
        /// Kind of the entry.
        kind: EntryKind,
        /// Offending key.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A blob larger than the format allows.
    #[error("{kind} entry '{key}' is {len} bytes, over the {MAX_ENTRY_LEN}-byte limit")]
    TooLarge {
        /// Kind of the entry.
        kind: EntryKind,
        /// Key of the entry.
        key: String,
        /// Its size.
        len: usize,
    },
    /// zstd failed.
    #[error("compressing {kind} entry '{key}': {reason}")]
    Compress {
        /// Kind of the entry.
        kind: EntryKind,
        /// Key of the entry.
        key: String,
        /// Encoder message.
        reason: String,
    },
    /// The manifest could not be serialised.
    #[error("manifest: {0}")]
    Manifest(String),
}

struct Pending {
    flags: u8,
    aux: Vec<u8>,
    primary: Vec<u8>,
    secondary: Option<Vec<u8>>,
}

/// A store of zstd frames from earlier builds, keyed by the raw bytes, the level and
/// the dictionary (`0` for none, else [`ArchiveWriter::dictionary_id`]): lets a build
/// tool skip compressing what it compressed before. The writer checks that a frame it
/// gets decompresses to the raw bytes before using it.
pub trait FrameCache: Sync {
    /// A frame stored for these inputs, if any.
    fn get(&self, raw: &[u8], level: i32, dictionary: u64) -> Option<Vec<u8>>;
    /// Remember a frame (best effort: a cache that cannot write just misses next time).
    fn put(&self, raw: &[u8], level: i32, dictionary: u64, frame: &[u8]);
}

/// Collects entries, then writes them sorted, compressed and checksummed.
pub struct ArchiveWriter {
    python: (u8, u8),
    level: i32,
    cache: Option<Box<dyn FrameCache>>,
    dictionary: Option<Vec<u8>>,
    entries: BTreeMap<(EntryKind, Vec<u8>), Pending>,
    first: Vec<String>,
}

impl ArchiveWriter {
    /// A writer for bytecode of Python `major.minor`.
    pub fn new(python: (u8, u8)) -> Self {
        ArchiveWriter {
            python,
            level: 12,
            cache: None,
            dictionary: None,
            entries: BTreeMap::new(),
            first: Vec::new(),
        }
    }

    /// Compress module bytecode with this zstd dictionary (e.g. one trained on the
    /// bytecode itself: small blobs share most of their structure, and per-blob frames
    /// cannot see it otherwise). The dictionary is stored raw in the archive.
    pub fn dictionary(mut self, dictionary: Vec<u8>) -> Self {
        self.dictionary = Some(dictionary);
        self
    }

    /// The id [`FrameCache`] keys see for frames made with `dictionary`.
    pub fn dictionary_id(dictionary: &[u8]) -> u64 {
        format::blob_checksum(dictionary) | 1
    }

    /// Lay out first the data that loading these modules reads, in load order (the
    /// modules an app loads at start-up, so that start-up reads one contiguous run of
    /// the file): see [`Archive::load_order`](crate::Archive::load_order). Unknown
    /// names are ignored; the index stays sorted either way.
    pub fn data_order(mut self, modules: Vec<String>) -> Self {
        self.first = modules;
        self
    }

    /// Look frames up in `cache` before compressing, and store new ones there.
    pub fn frame_cache(mut self, cache: Box<dyn FrameCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// zstd level for every compressed blob (default 12).
    pub fn compression_level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// Number of entries added so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was added yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, kind: EntryKind, key: Vec<u8>, p: Pending) -> Result<(), WriteError> {
        let key_str = || String::from_utf8_lossy(&key).into_owned();
        for blob in std::iter::once(&p.primary).chain(p.secondary.as_ref()) {
            if blob.len() > MAX_ENTRY_LEN {
                return Err(WriteError::TooLarge {
                    kind,
                    key: key_str(),
                    len: blob.len(),
                });
            }
        }
        if key.len() > u32::MAX as usize / 4 {
            return Err(WriteError::BadKey {
                kind,
                key: key_str(),
                problem: "key too long",
            });
        }
        if self.entries.contains_key(&(kind, key.clone())) {
            return Err(WriteError::Duplicate {
                kind,
                key: key_str(),
            });
        }
        self.entries.insert((kind, key), p);
        Ok(())
    }

    fn check_part(kind: EntryKind, key: &str, part: &str) -> Result<(), WriteError> {
        if part.contains('\0') {
            return Err(WriteError::BadKey {
                kind,
                key: key.into(),
                problem: "contains a NUL byte",
            });
        }
        if part.is_empty() && kind != EntryKind::Manifest {
            return Err(WriteError::BadKey {
                kind,
                key: key.into(),
                problem: "empty name",
            });
        }
        Ok(())
    }

    fn aux(kind: EntryKind, key: &str, items: &[&str]) -> Result<Vec<u8>, WriteError> {
        let mut out = Vec::new();
        for item in items {
            Self::check_part(kind, key, item)?;
            if !out.is_empty() {
                out.push(0);
            }
            out.extend_from_slice(item.as_bytes());
        }
        Ok(out)
    }

    /// Module bytecode (a `marshal` dump of its code object) and optional source.
    pub fn add_module(
        &mut self,
        name: &str,
        bytecode: Vec<u8>,
        source: Option<Vec<u8>>,
        is_package: bool,
    ) -> Result<(), WriteError> {
        let kind = EntryKind::Module;
        Self::check_part(kind, name, name)?;
        let mut fl = if is_package { flags::PACKAGE } else { 0 };
        if source.is_some() {
            fl |= flags::HAS_SECONDARY;
        }
        self.insert(
            kind,
            name.as_bytes().to_vec(),
            Pending {
                flags: fl,
                aux: Vec::new(),
                primary: bytecode,
                secondary: source,
            },
        )
    }

    /// A native extension module: dotted name, original file name, ELF bytes and the
    /// SONAMEs it needs.
    pub fn add_extension(
        &mut self,
        name: &str,
        file_name: &str,
        elf: Vec<u8>,
        needed: &[&str],
    ) -> Result<(), WriteError> {
        let kind = EntryKind::Extension;
        Self::check_part(kind, name, name)?;
        let mut items = vec![file_name];
        items.extend_from_slice(needed);
        let aux = Self::aux(kind, name, &items)?;
        self.insert(
            kind,
            name.as_bytes().to_vec(),
            Pending {
                flags: 0,
                aux,
                primary: elf,
                secondary: None,
            },
        )
    }

    /// A native shared library by SONAME, with the SONAMEs it needs.
    pub fn add_shared_lib(
        &mut self,
        soname: &str,
        elf: Vec<u8>,
        needed: &[&str],
    ) -> Result<(), WriteError> {
        let kind = EntryKind::SharedLib;
        Self::check_part(kind, soname, soname)?;
        let aux = Self::aux(kind, soname, needed)?;
        self.insert(
            kind,
            soname.as_bytes().to_vec(),
            Pending {
                flags: 0,
                aux,
                primary: elf,
                secondary: None,
            },
        )
    }

    /// A data file of `package` at `path` (relative, `/`-separated).
    pub fn add_resource(
        &mut self,
        package: &str,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<(), WriteError> {
        let kind = EntryKind::Resource;
        let shown = format!("{package}:{path}");
        // An empty package is the import root: data directories that sit beside
        // top-level modules (`_soundfile_data/` next to `soundfile.py`).
        if !package.is_empty() {
            Self::check_part(kind, &shown, package)?;
        }
        Self::check_part(kind, &shown, path)?;
        self.insert(
            kind,
            join_key(package, path),
            Pending {
                flags: 0,
                aux: Vec::new(),
                primary: bytes,
                secondary: None,
            },
        )
    }

    /// A file of a `.dist-info` directory.
    pub fn add_dist_file(
        &mut self,
        dist_dir: &str,
        file: &str,
        bytes: Vec<u8>,
    ) -> Result<(), WriteError> {
        let kind = EntryKind::DistFile;
        let shown = format!("{dist_dir}/{file}");
        Self::check_part(kind, &shown, dist_dir)?;
        Self::check_part(kind, &shown, file)?;
        self.insert(
            kind,
            join_key(dist_dir, file),
            Pending {
                flags: 0,
                aux: Vec::new(),
                primary: bytes,
                secondary: None,
            },
        )
    }

    /// A notice (see [`crate::notices`] for the names the runtime knows).
    pub fn add_notice(&mut self, name: &str, bytes: Vec<u8>) -> Result<(), WriteError> {
        let kind = EntryKind::Notice;
        Self::check_part(kind, name, name)?;
        self.insert(
            kind,
            name.as_bytes().to_vec(),
            Pending {
                flags: 0,
                aux: Vec::new(),
                primary: bytes,
                secondary: None,
            },
        )
    }

    /// The code objects compiled at build time from the start-up's source strings
    /// (see [`crate::compiled`]): `(key, marshal dump)` pairs, stored as one table.
    pub fn add_compiled_sources(
        &mut self,
        entries: &[(crate::SourceKey<'_>, Vec<u8>)],
    ) -> Result<(), WriteError> {
        let kind = EntryKind::CompiledSources;
        let table = crate::compiled::encode_table(entries).map_err(|e| WriteError::BadKey {
            kind,
            key: crate::compiled::TABLE_KEY.into(),
            problem: match e {
                crate::compiled::TableError::BadKey { problem, .. } => problem,
                crate::compiled::TableError::Truncated { .. } => "truncated",
            },
        })?;
        self.insert(
            kind,
            crate::compiled::TABLE_KEY.as_bytes().to_vec(),
            Pending {
                flags: 0,
                aux: Vec::new(),
                primary: table,
                secondary: None,
            },
        )
    }

    /// The regular expressions the start-up compiles through `re` (see
    /// [`crate::compiled::REGEX_KEY`]): one `marshal` dump.
    pub fn add_regex_seeds(&mut self, seeds: Vec<u8>) -> Result<(), WriteError> {
        self.insert(
            EntryKind::CompiledSources,
            crate::compiled::REGEX_KEY.as_bytes().to_vec(),
            Pending {
                flags: 0,
                aux: Vec::new(),
                primary: seeds,
                secondary: None,
            },
        )
    }

    /// The build manifest (replaces an earlier one).
    pub fn set_manifest(&mut self, manifest: &Manifest) -> Result<(), WriteError> {
        let json = serde_json::to_vec(manifest).map_err(|e| WriteError::Manifest(e.to_string()))?;
        self.entries.remove(&(EntryKind::Manifest, Vec::new()));
        self.insert(
            EntryKind::Manifest,
            Vec::new(),
            Pending {
                flags: 0,
                aux: Vec::new(),
                primary: json,
                secondary: None,
            },
        )
    }

    /// Compress every blob (in parallel) and lay out the archive.
    pub fn finish(mut self) -> Result<Vec<u8>, WriteError> {
        if let Some(d) = &self.dictionary {
            self.entries.insert(
                (EntryKind::Dictionary, Vec::new()),
                Pending {
                    flags: 0,
                    aux: Vec::new(),
                    primary: d.clone(),
                    secondary: None,
                },
            );
        }
        let items: Vec<((EntryKind, Vec<u8>), Pending)> = self.entries.into_iter().collect();
        let zstd = Zstd {
            level: self.level,
            dictionary: self.dictionary.as_deref(),
            cache: self.cache.as_deref(),
        };
        let compressed = compress_all(&items, &zstd)?;

        // Data layout: what loading the listed modules reads first, then the rest in
        // index order.
        let mut layout = load_order(&self.first, &items);
        let mut placed = vec![false; items.len()];
        for &i in &layout {
            placed[i] = true;
        }
        layout.extend((0..items.len()).filter(|&i| !placed[i]));
        let mut data = Vec::new();
        let mut blobs: Vec<[Option<BlobRef>; 2]> = vec![[None, None]; items.len()];
        for &i in &layout {
            let ((primary, _), secondary) = &compressed[i];
            blobs[i][0] = Some(append_blob(&mut data, primary, items[i].1.primary.len()));
            if let (Some((bytes, _)), Some(raw)) = (secondary, items[i].1.secondary.as_ref()) {
                blobs[i][1] = Some(append_blob(&mut data, bytes, raw.len()));
            }
        }

        let mut strings = Vec::new();
        let mut index = Vec::with_capacity(items.len() * RECORD_LEN);
        for (i, (((kind, key), p), (primary, secondary))) in
            items.iter().zip(&compressed).enumerate()
        {
            let mut rec = [0u8; RECORD_LEN];
            rec[record::KIND] = *kind as u8;
            let mut fl = p.flags;
            let key_off = strings.len() as u32;
            strings.extend_from_slice(key);
            let aux_off = strings.len() as u32;
            strings.extend_from_slice(&p.aux);
            put_u32(&mut rec, record::KEY_OFF, key_off);
            put_u32(&mut rec, record::KEY_LEN, key.len() as u32);
            put_u32(&mut rec, record::AUX_OFF, aux_off);
            put_u32(&mut rec, record::AUX_LEN, p.aux.len() as u32);
            match primary.1 {
                Codec::Raw => {}
                Codec::Zstd => fl |= flags::PRIMARY_ZSTD,
                Codec::ZstdDict => fl |= flags::PRIMARY_ZSTD | flags::PRIMARY_DICT,
            }
            if let Some(b) = &blobs[i][0] {
                b.put(&mut rec, record::PRIMARY);
            }
            if let (Some((_, codec)), Some(b)) = (secondary, &blobs[i][1]) {
                if *codec != Codec::Raw {
                    fl |= flags::SECONDARY_ZSTD;
                }
                b.put(&mut rec, record::SECONDARY);
            }
            rec[record::FLAGS] = fl;
            index.extend_from_slice(&rec);
        }

        let mut head = [0u8; HEADER_LEN];
        head[..8].copy_from_slice(&MAGIC);
        put_u32(&mut head, header::VERSION, FORMAT_VERSION);
        head[header::PY_MAJOR] = self.python.0;
        head[header::PY_MINOR] = self.python.1;
        put_u32(&mut head, header::COUNT, items.len() as u32);
        put_u64(&mut head, header::STRINGS_LEN, strings.len() as u64);
        let data_offset = (HEADER_LEN + index.len() + strings.len()) as u64;
        put_u64(&mut head, header::DATA_OFFSET, data_offset);
        put_u64(&mut head, header::DATA_LEN, data.len() as u64);
        let sum = format::checksum(&[&head[..header::CHECKSUM], &index, &strings]);
        put_u64(&mut head, header::CHECKSUM, sum);

        let mut out = Vec::with_capacity(data_offset as usize + data.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&index);
        out.extend_from_slice(&strings);
        out.extend_from_slice(&data);
        Ok(out)
    }
}

/// [`Archive::load_order`](crate::Archive::load_order) of `modules` over the entries
/// being written (sorted by key), as indices into them.
fn load_order(modules: &[String], items: &[((EntryKind, Vec<u8>), Pending)]) -> Vec<usize> {
    let get = |kind: EntryKind, key: &str| {
        let key = (kind, key.as_bytes().to_vec());
        let i = items.binary_search_by(|(k, _)| k.cmp(&key)).ok()?;
        Some((i, &items[i].1))
    };
    let needs = |p: &Pending, skip: usize| -> Vec<String> {
        p.aux
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .skip(skip)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    crate::order::load_order(
        modules,
        |name| match get(EntryKind::Module, name) {
            Some((i, _)) => Some((i, Vec::new())),
            // An extension's aux is its file name, then the SONAMEs it needs.
            None => get(EntryKind::Extension, name).map(|(i, p)| (i, needs(p, 1))),
        },
        |soname| get(EntryKind::SharedLib, soname).map(|(i, p)| (i, needs(p, 0))),
    )
}

/// How a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Raw,
    Zstd,
    ZstdDict,
}

type Packed = ((Vec<u8>, Codec), Option<(Vec<u8>, Codec)>);

/// The compression settings of one `finish`.
struct Zstd<'a> {
    level: i32,
    dictionary: Option<&'a [u8]>,
    cache: Option<&'a dyn FrameCache>,
}

/// One worker's zstd contexts, reused for every blob it packs (a context with the
/// dictionary loaded digests it once).
struct Contexts<'a> {
    settings: &'a Zstd<'a>,
    plain: Option<(
        zstd::bulk::Compressor<'static>,
        zstd::bulk::Decompressor<'static>,
    )>,
    dict: Option<(
        zstd::bulk::Compressor<'static>,
        zstd::bulk::Decompressor<'static>,
    )>,
}

impl<'a> Contexts<'a> {
    fn new(settings: &'a Zstd<'a>) -> Self {
        Contexts {
            settings,
            plain: None,
            dict: None,
        }
    }

    /// `raw` as stored: a zstd frame (with the dictionary when `use_dict` and there is
    /// one) if that is smaller, else the bytes themselves.
    fn pack(&mut self, raw: &[u8], use_dict: bool) -> std::io::Result<(Vec<u8>, Codec)> {
        if raw.len() < MIN_COMPRESS_LEN {
            return Ok((raw.to_vec(), Codec::Raw));
        }
        let level = self.settings.level;
        let dict = self.settings.dictionary.filter(|_| use_dict);
        let (codec, id) = match dict {
            Some(d) => (Codec::ZstdDict, ArchiveWriter::dictionary_id(d)),
            None => (Codec::Zstd, 0),
        };
        let slot = if dict.is_some() {
            &mut self.dict
        } else {
            &mut self.plain
        };
        if slot.is_none() {
            *slot = Some(match dict {
                Some(d) => (
                    zstd::bulk::Compressor::with_dictionary(level, d)?,
                    zstd::bulk::Decompressor::with_dictionary(d)?,
                ),
                None => (
                    zstd::bulk::Compressor::new(level)?,
                    zstd::bulk::Decompressor::new()?,
                ),
            });
        }
        let Some((cctx, dctx)) = slot.as_mut() else {
            return Err(std::io::Error::other("no zstd context"));
        };
        let cached = self
            .settings
            .cache
            .and_then(|c| c.get(raw, level, id))
            .filter(|frame| dctx.decompress(frame, raw.len()).is_ok_and(|d| d == raw));
        let frame = match cached {
            Some(frame) => frame,
            None => {
                let frame = cctx.compress(raw)?;
                if let Some(c) = self.settings.cache {
                    c.put(raw, level, id, &frame);
                }
                frame
            }
        };
        Ok(if frame.len() < raw.len() {
            (frame, codec)
        } else {
            (raw.to_vec(), Codec::Raw)
        })
    }
}

fn compress_all(
    items: &[((EntryKind, Vec<u8>), Pending)],
    settings: &Zstd<'_>,
) -> Result<Vec<Packed>, WriteError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, items.len().max(1));
    // Work is handed out one entry at a time: a few large native libraries dominate,
    // and fixed chunks would leave a thread idle while another compresses them.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let pack_one = |ctx: &mut Contexts<'_>,
                    ((kind, key), p): &((EntryKind, Vec<u8>), Pending)|
     -> Result<Packed, WriteError> {
        let err = |e: std::io::Error| WriteError::Compress {
            kind: *kind,
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        };
        let primary = match kind {
            // The dictionary itself is read before anything can be decompressed.
            EntryKind::Dictionary => (p.primary.clone(), Codec::Raw),
            _ => ctx
                .pack(&p.primary, *kind == EntryKind::Module)
                .map_err(err)?,
        };
        let secondary = match &p.secondary {
            Some(s) => Some(ctx.pack(s, false).map_err(err)?),
            None => None,
        };
        Ok((primary, secondary))
    };
    let mut done: Vec<(usize, Packed)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut ctx = Contexts::new(settings);
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(mine);
                        };
                        mine.push((i, pack_one(&mut ctx, item)?));
                    }
                })
            })
            .collect();
        let mut all = Vec::with_capacity(items.len());
        for h in handles {
            match h.join() {
                Ok(part) => all.extend(part?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok::<_, WriteError>(all)
    })?;
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, p)| p).collect())
}

/// Where one blob went in the data section.
#[derive(Clone, Copy)]
struct BlobRef {
    offset: u64,
    stored: u32,
    raw: u32,
    checksum: u64,
}

impl BlobRef {
    fn put(&self, rec: &mut [u8], at: usize) {
        put_u64(rec, at, self.offset);
        put_u32(rec, at + 8, self.stored);
        put_u32(rec, at + 12, self.raw);
        put_u64(rec, at + 16, self.checksum);
    }
}

fn append_blob(data: &mut Vec<u8>, stored: &[u8], raw_len: usize) -> BlobRef {
    let b = BlobRef {
        offset: data.len() as u64,
        stored: stored.len() as u32,
        raw: raw_len as u32,
        checksum: format::blob_checksum(stored),
    };
    data.extend_from_slice(stored);
    b
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
