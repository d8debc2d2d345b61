//! Compression inputs that outlive one build: the zstd frame cache and the bytecode
//! dictionary, both under the cache directory.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use pykiln_archive::FrameCache;
use sha2::{Digest as _, Sha256};

use crate::hex;

/// Size of the trained dictionary: zstd's usual choice (about 100 KB) gains ~14% on
/// the demo's bytecode; larger ones gain little more and are stored in every binary.
const DICTIONARY_SIZE: usize = 110 * 1024;

/// Fewer samples than this train a dictionary worth less than its own size.
const MIN_SAMPLES: usize = 200;

/// zstd frames in `<cache>/zstd`, one file per (content, level, dictionary): after a
/// one-file edit only that file's blob is compressed again.
pub struct DirCache {
    dir: PathBuf,
}

impl DirCache {
    /// The cache in `dir` (created if missing).
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(DirCache { dir })
    }

    fn path(&self, raw: &[u8], level: i32, dictionary: u64) -> PathBuf {
        let key = hex(&Sha256::digest(raw));
        match dictionary {
            0 => self.dir.join(format!("{key}-{level}.zst")),
            d => self.dir.join(format!("{key}-{level}-d{d:016x}.zst")),
        }
    }
}

impl FrameCache for DirCache {
    fn get(&self, raw: &[u8], level: i32, dictionary: u64) -> Option<Vec<u8>> {
        let path = self.path(raw, level, dictionary);
        let frame = std::fs::read(&path).ok()?;
        crate::cache::touch(&path);
        Some(frame)
    }

    fn put(&self, raw: &[u8], level: i32, dictionary: u64, frame: &[u8]) {
        let path = self.path(raw, level, dictionary);
        // A cache entry only: a frame that cannot be stored is compressed again.
        let _ = crate::cache::write_atomic(&path, frame);
    }
}

/// A zstd dictionary trained on the bytecode files `samples` (cached by their names,
/// which are content digests), or `None` when there are too few to be worth one.
pub fn bytecode_dictionary(samples: &[&Path], cache: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    if samples.len() < MIN_SAMPLES {
        return Ok(None);
    }
    let mut names: Vec<&std::ffi::OsStr> = samples.iter().filter_map(|p| p.file_name()).collect();
    names.sort();
    let mut h = Sha256::new();
    h.update(DICTIONARY_SIZE.to_le_bytes());
    for n in &names {
        h.update(n.as_encoded_bytes());
        h.update([0]);
    }
    let dir = cache.join("dictionaries");
    let file = dir.join(format!("{}.dict", &hex(&h.finalize())[..32]));
    if let Ok(dict) = std::fs::read(&file) {
        crate::cache::touch(&file);
        return Ok(Some(dict));
    }
    let data: Vec<Vec<u8>> = samples
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<_>>()?;
    let dict = zstd::dict::from_samples(&data, DICTIONARY_SIZE)
        .context("training the bytecode dictionary")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::cache::write_atomic(&file, &dict)?;
    Ok(Some(dict))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_keyed_by_content_level_and_dictionary() {
        let dir = tempfile::tempdir().unwrap();
        let c = DirCache::new(dir.path().join("zstd")).unwrap();
        c.put(b"raw", 19, 0, b"plain");
        c.put(b"raw", 19, 7, b"with dict");
        assert_eq!(c.get(b"raw", 19, 0).as_deref(), Some(&b"plain"[..]));
        assert_eq!(c.get(b"raw", 19, 7).as_deref(), Some(&b"with dict"[..]));
        assert!(c.get(b"raw", 3, 0).is_none());
        assert!(c.get(b"other", 19, 0).is_none());
    }

    #[test]
    fn a_dictionary_is_trained_once_and_only_with_enough_samples() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<PathBuf> = (0..MIN_SAMPLES)
            .map(|i| {
                let p = dir.path().join(format!("{i:04}.marshal"));
                let body = format!(
                    "def f_{i}(x):\n    return x * {i} + len('shared text {}')\n",
                    i % 7
                );
                std::fs::write(&p, body.repeat(20)).unwrap();
                p
            })
            .collect();
        let refs: Vec<&Path> = samples.iter().map(PathBuf::as_path).collect();
        let cache = dir.path().join("cache");
        assert!(bytecode_dictionary(&refs[..10], &cache).unwrap().is_none());
        let dict = bytecode_dictionary(&refs, &cache).unwrap().unwrap();
        assert!(!dict.is_empty() && dict.len() <= DICTIONARY_SIZE);
        // The second call reads the cached copy (training is not deterministic in time).
        let again = bytecode_dictionary(&refs, &cache).unwrap().unwrap();
        assert_eq!(dict, again);
    }
}
