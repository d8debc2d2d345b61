//! Untrusted files through what `pykiln inspect` and the runner parse first: the
//! appended-archive trailer, the search for an embedded archive, and the runtime stamp.
//! Any panic or out-of-bounds access is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pykiln_archive::{Archive, stamp, trailer};

fuzz_target!(|data: &[u8]| {
    if let Ok(archive) = trailer::appended(data) {
        let _ = Archive::open(archive);
    }
    if let Some((offset, archive)) = trailer::locate(data) {
        assert!(offset + archive.len() <= data.len());
        let _ = Archive::open(archive).map(|a| a.manifest());
    }
    let _ = stamp::find(data);
});
