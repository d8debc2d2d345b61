//! Source strings compiled at build time.
//!
//! At start-up, Python code compiles source text it generates itself: `typing` compiles
//! every string annotation into a forward reference, `dataclasses` and
//! `collections.namedtuple` `exec` the methods they write. On the demo that is ~3,000
//! calls to CPython's parser and compiler, ~10 % of its start-up. The build records
//! those calls (in the plain interpreter that records the start-up order), compiles
//! each once, and stores the code objects in one table entry
//! ([`EntryKind::CompiledSources`](crate::EntryKind)) keyed by everything the result
//! depends on ([`SourceKey`]); at run time a call whose key is byte for byte the same is
//! served from the table instead of being parsed and compiled again.
//!
//! Table layout: records sorted by key, each `u32` LE key length, the key's
//! [`canonical`](SourceKey::canonical) bytes, `u32` LE code length, the code object's
//! `marshal` dump. One blob, so zstd sees the similar records together (the demo's
//! ~1,150 records: 650 KB raw, 65 KB stored).

use std::collections::HashMap;
use std::ops::Range;

use xxhash_rust::xxh3::xxh3_64;

/// Everything a code object compiled from a source string depends on: the same key
/// gives the same code object on the same interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceKey<'s> {
    /// `compile()`'s mode: `exec`, `eval` or `single`.
    pub mode: &'s str,
    /// The compiler flags in effect: the caller's, plus the `__future__` features
    /// inherited from the calling code unless `dont_inherit`.
    pub flags: u32,
    /// The optimization level (`-1` already resolved to the interpreter's).
    pub optimize: i32,
    /// The file name the code reports (`<string>` for `exec`/`eval` of a string).
    pub filename: &'s str,
    /// The source text (for `eval`, after the leading blanks it strips).
    pub source: &'s str,
}

/// The key of the [`EntryKind::CompiledSources`](crate::EntryKind) entry holding the
/// table of code objects.
pub const TABLE_KEY: &str = "startup";

/// The key of the [`EntryKind::CompiledSources`](crate::EntryKind) entry holding the
/// regular expressions the start-up compiles through `re`: one `marshal` dump of a
/// list of `(flags, arguments of _sre.compile)`, from which the runtime fills `re`'s
/// cache (patterns `re` parses and compiles in Python, ~150 on the demo).
pub const REGEX_KEY: &str = "regexes";

/// Versions the layout of [`SourceKey::canonical`].
const TAG: &[u8] = b"pykiln-compiled-source-1\0";

impl SourceKey<'_> {
    /// The modes `compile()` accepts that produce a module-level code object.
    pub const MODES: [&'static str; 3] = ["exec", "eval", "single"];

    /// The key as bytes, compared whole on lookup. Unambiguous: no field before the
    /// source can hold a NUL (`compile()` rejects such file names).
    pub fn canonical(&self) -> Vec<u8> {
        let head = format!(
            "{}\0{}\0{}\0{}\0",
            self.mode, self.flags, self.optimize, self.filename
        );
        let mut out = Vec::with_capacity(TAG.len() + head.len() + self.source.len());
        out.extend_from_slice(TAG);
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(self.source.as_bytes());
        out
    }
}

/// Why a table cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// A mode other than `exec`, `eval`, `single`, or a file name with a NUL.
    #[error("compiled source string {index}: {problem}")]
    BadKey {
        /// Position among the entries given.
        index: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// A length runs past the end of the table.
    #[error(
        "compiled-source table: record at byte offset {offset} runs past its end ({len} bytes)"
    )]
    Truncated {
        /// Byte offset of the record in the table.
        offset: usize,
        /// Length of the table.
        len: usize,
    },
}

/// Encode `(key, marshalled code)` pairs as a table (sorted; a repeated key keeps its
/// first code).
pub fn encode_table(entries: &[(SourceKey<'_>, Vec<u8>)]) -> Result<Vec<u8>, TableError> {
    let mut records = Vec::with_capacity(entries.len());
    for (index, (key, code)) in entries.iter().enumerate() {
        if !SourceKey::MODES.contains(&key.mode) {
            return Err(TableError::BadKey {
                index,
                problem: "mode is not exec, eval or single",
            });
        }
        if key.filename.contains('\0') {
            return Err(TableError::BadKey {
                index,
                problem: "file name contains a NUL byte",
            });
        }
        records.push((key.canonical(), code, index));
    }
    // Stable: of repeated keys, the first given stays first and is kept.
    records.sort_by(|a, b| a.0.cmp(&b.0));
    records.dedup_by(|a, b| a.0 == b.0);
    let mut out = Vec::new();
    for (canonical, code, index) in records {
        for part in [&canonical[..], &code[..]] {
            let len = u32::try_from(part.len()).map_err(|_| TableError::BadKey {
                index,
                problem: "longer than 4 GiB",
            })?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    Ok(out)
}

/// Where one record's key and code are in a table's bytes.
type Record = (Range<usize>, Range<usize>);

/// A decoded table: lookups by whole key.
pub struct SourceTable {
    bytes: Vec<u8>,
    /// xxh3-64 of the canonical key → the records with that hash.
    index: HashMap<u64, Vec<Record>>,
}

impl SourceTable {
    /// Index a table (see the module docs for its layout).
    pub fn parse(bytes: Vec<u8>) -> Result<Self, TableError> {
        let mut index: HashMap<u64, Vec<Record>> = HashMap::new();
        let mut at = 0;
        let len = bytes.len();
        let part = |at: &mut usize| -> Result<Range<usize>, TableError> {
            let truncated = TableError::Truncated { offset: *at, len };
            let head = bytes
                .get(*at..at.saturating_add(4))
                .ok_or(truncated.clone())?;
            let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let start = *at + 4;
            let end = start
                .checked_add(n)
                .filter(|&e| e <= len)
                .ok_or(truncated)?;
            *at = end;
            Ok(start..end)
        };
        while at < len {
            let record = at;
            let key = part(&mut at)?;
            let code = part(&mut at).map_err(|_| TableError::Truncated {
                offset: record,
                len,
            })?;
            index
                .entry(xxh3_64(&bytes[key.clone()]))
                .or_default()
                .push((key, code));
        }
        Ok(SourceTable { bytes, index })
    }

    /// The marshalled code object compiled for exactly `key`.
    pub fn get(&self, key: &SourceKey<'_>) -> Option<&[u8]> {
        let canonical = key.canonical();
        self.index
            .get(&xxh3_64(&canonical))?
            .iter()
            .find(|(k, _)| self.bytes[k.clone()] == canonical[..])
            .map(|(_, code)| &self.bytes[code.clone()])
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.index.values().map(Vec::len).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(source: &str) -> SourceKey<'_> {
        SourceKey {
            mode: "eval",
            flags: 0,
            optimize: 0,
            filename: "<string>",
            source,
        }
    }

    #[test]
    fn every_field_is_part_of_the_key() {
        let base = key("int | None");
        let variants = [
            SourceKey {
                mode: "exec",
                ..base
            },
            SourceKey {
                flags: 0x100_0000,
                ..base
            },
            SourceKey {
                optimize: 1,
                ..base
            },
            SourceKey {
                filename: "<x>",
                ..base
            },
            key("int | str"),
        ];
        let table = SourceTable::parse(encode_table(&[(base, b"code".to_vec())]).unwrap()).unwrap();
        assert_eq!(table.get(&base), Some(&b"code"[..]));
        for v in variants {
            assert_ne!(v.canonical(), base.canonical(), "{v:?}");
            assert_eq!(table.get(&v), None, "{v:?}");
        }
    }

    #[test]
    fn tables_are_sorted_deduplicated_and_checked() {
        let (a, b) = (key("a"), key("b"));
        let one = encode_table(&[(b, vec![2]), (a, vec![1]), (b, vec![3])]).unwrap();
        let other = encode_table(&[(a, vec![1]), (b, vec![2])]).unwrap();
        assert_eq!(one, other, "the same table whatever the order");
        let t = SourceTable::parse(one.clone()).unwrap();
        assert_eq!((t.len(), t.get(&b)), (2, Some(&[2u8][..])));
        let bad = SourceKey {
            mode: "func_type",
            ..a
        };
        assert!(matches!(
            encode_table(&[(a, vec![]), (bad, vec![])]),
            Err(TableError::BadKey { index: 1, .. })
        ));
        let cut = one[..one.len() - 1].to_vec();
        assert!(matches!(
            SourceTable::parse(cut),
            Err(TableError::Truncated { .. })
        ));
        assert!(SourceTable::parse(Vec::new()).unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(t) = SourceTable::parse(bytes) {
                let _ = t.get(&key("x"));
            }
        }
    }
}
