//! The runtime's stamp: the versions a pykiln executable was linked with (pykiln,
//! Python, SQLite), stored as plain bytes in it so tools read them without running it.
//!
//! Layout: [`STAMP_MAGIC`], then `key=value` items, each NUL-terminated, in a
//! zero-padded block of [`STAMP_LEN`] bytes.

/// Starts the stamp.
pub const STAMP_MAGIC: &[u8] = b"PYKILN-RUNTIME\0";
/// Size of the stamp block.
pub const STAMP_LEN: usize = 128;

/// Build a stamp from `key=value` parts at compile time (`parts` are concatenated
/// after the magic; put a NUL after each item). Overlong input is cut.
pub const fn build(parts: &[&[u8]]) -> [u8; STAMP_LEN] {
    let mut out = [0u8; STAMP_LEN];
    let mut at = 0;
    let mut i = 0;
    while i < STAMP_MAGIC.len() {
        out[at] = STAMP_MAGIC[i];
        at += 1;
        i += 1;
    }
    let mut p = 0;
    while p < parts.len() {
        let part = parts[p];
        let mut i = 0;
        while i < part.len() && at < STAMP_LEN - 1 {
            out[at] = part[i];
            at += 1;
            i += 1;
        }
        p += 1;
    }
    out
}

/// The `key=value` items of the first stamp in `file` that has any.
pub fn find(file: &[u8]) -> Option<Vec<(String, String)>> {
    let mut from = 0;
    while let Some(pos) = file[from..]
        .windows(STAMP_MAGIC.len())
        .position(|w| w == STAMP_MAGIC)
    {
        let at = from + pos;
        let block = &file[at + STAMP_MAGIC.len()..file.len().min(at + STAMP_LEN)];
        let items: Vec<(String, String)> = block
            .split(|&b| b == 0)
            .take_while(|s| !s.is_empty())
            .filter_map(|s| std::str::from_utf8(s).ok())
            .filter_map(|s| s.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !items.is_empty() {
            return Some(items);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_from_inside_a_file() {
        const S: [u8; STAMP_LEN] = build(&[b"pykiln=0.1.0\0", b"python=3.11.7\0"]);
        let mut file = b"some elf bytes PYKILN-RUN".to_vec();
        file.extend_from_slice(&S);
        file.extend_from_slice(b"more");
        assert_eq!(
            find(&file).unwrap(),
            vec![
                ("pykiln".into(), "0.1.0".into()),
                ("python".into(), "3.11.7".into())
            ]
        );
        assert!(find(b"nothing").is_none());
    }
}
