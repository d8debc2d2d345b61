//! Where each packed native image is served from at run time: file-backed from the
//! per-user content-addressed cache, or an in-memory memfd.
//!
//! A memfd's pages are shared memory: resident until the process exits, never dropped
//! under memory pressure (without swap), and private to each process. A file in the
//! cache is mapped like any library on disk: its pages are page cache, shared by every
//! process running the binary and reclaimable. The cost is a one-time write of the
//! image and hashing it on each start (a few ms for pydantic-core, ~50 ms for DuckDB's
//! 69 MB, on the prefetch thread). Measured (bench/RESULTS.md, FastMCP server):
//! thresholds of 0, 16 KiB, 64 KiB, 1 MiB and 4 MiB start equally fast within the
//! noise, and every image left in memory adds its size to the footprint (65.6 MB at 0,
//! 66.6 at 64 KiB, 69.7 at 1 MiB; the venv 65.4) — so by default every image is
//! file-backed, and memfd is what the runtime falls back to when the cache cannot be
//! used. `[tool.pykiln] native-cache-threshold` keeps images under a size in memory;
//! `native-in-memory` / `native-cached` override it per distribution.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest as _, Sha256};

/// Images at least this big are file-backed by default: all of them (see the module
/// docs for the measurement).
pub const DEFAULT_THRESHOLD: u64 = 0;

/// The placement settings of a build.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Images at least this big are file-backed; `None`: only `cached` ones.
    pub threshold: Option<u64>,
    /// Normalised distribution names whose images always stay in memory.
    pub in_memory: BTreeSet<String>,
    /// Normalised distribution names whose images are always file-backed.
    pub cached: BTreeSet<String>,
}

/// One native image as packed.
pub struct Image<'a> {
    /// Its key in [`pykiln_archive::Manifest::file_backed_native`].
    pub key: String,
    /// The bytes packed (after stripping).
    pub bytes: &'a [u8],
    /// The distributions it belongs to (an extension's own; for a shared library,
    /// those of the extensions that need it).
    pub dists: BTreeSet<String>,
}

impl Policy {
    /// Whether `image` is file-backed: an in-memory override wins, then a cached one,
    /// then the size.
    pub fn file_backed(&self, image: &Image<'_>) -> bool {
        if image.dists.iter().any(|d| self.in_memory.contains(d)) {
            return false;
        }
        if image.dists.iter().any(|d| self.cached.contains(d)) {
            return true;
        }
        self.threshold
            .is_some_and(|t| image.bytes.len() as u64 >= t)
    }

    /// The manifest's map of file-backed images to their SHA-256.
    pub fn place(&self, images: &[Image<'_>]) -> BTreeMap<String, String> {
        images
            .iter()
            .filter(|i| self.file_backed(i))
            .map(|i| (i.key.clone(), crate::hex(&Sha256::digest(i.bytes))))
            .collect()
    }
}

/// Parse `[tool.pykiln] native-cache-threshold`: a size (`1M`, `262144`, `0` = every
/// image) or `off` (none).
pub fn parse_threshold(text: &str) -> Option<Option<u64>> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Some(None);
    }
    crate::cache::parse_size(text).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image<'a>(key: &str, bytes: &'a [u8], dist: &str) -> Image<'a> {
        Image {
            key: key.into(),
            bytes,
            dists: [dist.to_string()].into(),
        }
    }

    #[test]
    fn size_decides_unless_a_distribution_overrides() {
        let big = b"abc".to_vec();
        let small = b"a".to_vec();
        let images = [
            image("extension:_big", &big, "bigdist"),
            image("extension:_small", &small, "smalldist"),
            image("shared-library:libx.so.1", &big, "pinned"),
        ];
        let mut policy = Policy {
            threshold: Some(3),
            in_memory: ["pinned".to_string()].into(),
            cached: BTreeSet::new(),
        };
        let placed = policy.place(&images);
        assert_eq!(placed.keys().collect::<Vec<_>>(), ["extension:_big"]);
        assert_eq!(
            placed["extension:_big"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        policy.cached.insert("smalldist".into());
        policy.threshold = None;
        let placed = policy.place(&images);
        assert_eq!(placed.keys().collect::<Vec<_>>(), ["extension:_small"]);
    }

    #[test]
    fn thresholds_parse() {
        assert_eq!(parse_threshold("off"), Some(None));
        assert_eq!(parse_threshold("1M"), Some(Some(1 << 20)));
        assert_eq!(parse_threshold("4096"), Some(Some(4096)));
        assert_eq!(parse_threshold("lots"), None);
    }
}
