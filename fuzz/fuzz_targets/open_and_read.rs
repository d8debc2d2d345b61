//! Untrusted bytes through the whole reader: open, then read every entry and walk
//! every lookup. Any panic, out-of-bounds access or runaway allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pykiln_archive::{Archive, EntryKind, SourceKey};

fuzz_target!(|data: &[u8]| {
    let Ok(archive) = Archive::open(data) else { return };
    let _ = archive.manifest();
    let _ = archive.counts();
    for e in archive.entries() {
        let _ = e.read();
        // The no-heap path native images take; a hostile size is capped here only to
        // keep the fuzzer's own allocation small.
        if e.raw_len() <= 1 << 20 {
            let _ = e.read_into(&mut vec![0u8; e.raw_len()]);
        }
        let _ = e.read_source();
        let _ = e.aux().count();
        let key = e.key_lossy().into_owned();
        let _ = archive.find(e.kind(), e.key());
        if e.kind() == EntryKind::Module {
            let _ = archive.module(&key);
            let _ = archive.children(&key);
            let _ = archive.has_submodules(&key);
            let _ = archive.resources(&key).count();
        }
    }
    for dist in archive.distributions() {
        let _ = archive.dist_files(dist).count();
    }
    let _ = archive.children("");
    if let Ok(Some(table)) = archive.compiled_sources() {
        let _ = table.get(&SourceKey {
            mode: "eval",
            flags: 0,
            optimize: 0,
            filename: "<string>",
            source: "int",
        });
    }
});
