//! Writer/reader round trips, lookups, and hostile input.

use proptest::prelude::*;
use pykiln_archive::{
    AppInfo, Archive, ArchiveWriter, Distribution, EntryKind, Error, Manifest, SourceKey,
    WriteError,
};

const FORWARD_REF: SourceKey<'static> = SourceKey {
    mode: "eval",
    flags: 0,
    optimize: 0,
    filename: "<string>",
    source: "dict[str, Any] | None",
};

fn sample() -> Vec<u8> {
    let mut w = ArchiveWriter::new((3, 11));
    w.add_module(
        "json",
        b"code-json".repeat(40),
        Some(b"# json source\n".to_vec()),
        true,
    )
    .unwrap();
    w.add_module("json.decoder", vec![1, 2, 3], None, false)
        .unwrap();
    w.add_module("json.tool", vec![4; 500], None, false)
        .unwrap();
    w.add_module("jsonschema", vec![5], None, true).unwrap();
    w.add_module("ns.inner.mod", vec![6], None, false).unwrap();
    w.add_extension(
        "_sqlite3",
        "_sqlite3.cpython-311-x86_64-linux-gnu.so",
        vec![0x7f; 300],
        &["libsqlite3.so.0"],
    )
    .unwrap();
    w.add_extension("json._speedups", "_speedups.abi3.so", vec![9; 10], &[])
        .unwrap();
    w.add_shared_lib("libssl.so.3", vec![7; 1000], &["libcrypto.so.3"])
        .unwrap();
    w.add_resource("json", "data/a.txt", b"hello".to_vec())
        .unwrap();
    w.add_resource("json", "b.bin", vec![0; 4096]).unwrap();
    w.add_resource("jsonschema", "schemas/draft7.json", b"{}".to_vec())
        .unwrap();
    w.add_dist_file(
        "mcp-2.3.0.dist-info",
        "METADATA",
        b"Name: mcp\nVersion: 2.3.0\n".to_vec(),
    )
    .unwrap();
    w.add_dist_file(
        "mcp-2.3.0.dist-info",
        "entry_points.txt",
        b"[console_scripts]\n".to_vec(),
    )
    .unwrap();
    w.add_dist_file("anyio-4.0.dist-info", "METADATA", b"Name: anyio\n".to_vec())
        .unwrap();
    w.add_notice("licenses", b"MIT".repeat(100)).unwrap();
    w.add_compiled_sources(&[(FORWARD_REF, b"marshalled code".to_vec())])
        .unwrap();
    w.set_manifest(&Manifest {
        pykiln_version: "0.1.0".into(),
        python_version: "3.11.7".into(),
        app: Some(AppInfo {
            name: "notes".into(),
            version: "1".into(),
            entry_point: "n:main".into(),
            python_cli: true,
            stdout_guard: false,
        }),
        distributions: vec![Distribution {
            name: "mcp".into(),
            version: "2.3.0".into(),
        }],
        build: Default::default(),
        ..Default::default()
    })
    .unwrap();
    w.finish().unwrap()
}

#[test]
fn lookups_find_what_was_written() {
    let bytes = sample();
    let a = Archive::open(&bytes).unwrap();
    assert_eq!(a.python_version(), (3, 11));
    assert_eq!(a.len(), 17);
    let json = a.module("json").unwrap();
    assert!(json.is_package());
    assert_eq!(&*json.read().unwrap(), &b"code-json".repeat(40)[..]);
    assert!(!json.is_stored_raw(), "a compressible blob is compressed");
    assert_eq!(
        json.read_source().unwrap().as_deref(),
        Some(&b"# json source\n"[..])
    );
    assert_eq!(
        a.module("json.decoder").unwrap().read_source().unwrap(),
        None
    );
    assert!(a.module("json.missing").is_none());
    assert!(a.module("jso").is_none());
    let ext = a.module("_sqlite3").unwrap();
    assert_eq!(ext.kind(), EntryKind::Extension);
    assert_eq!(
        ext.aux().collect::<Vec<_>>(),
        [
            "_sqlite3.cpython-311-x86_64-linux-gnu.so",
            "libsqlite3.so.0"
        ]
    );
    let ssl = a.find(EntryKind::SharedLib, b"libssl.so.3").unwrap();
    assert_eq!(ssl.aux().collect::<Vec<_>>(), ["libcrypto.so.3"]);

    let children: Vec<_> = a.children("json").into_iter().map(|(n, _)| n).collect();
    assert_eq!(children, ["_speedups", "decoder", "tool"]);
    let top: Vec<_> = a.children("").into_iter().map(|(n, _)| n).collect();
    assert_eq!(top, ["_sqlite3", "json", "jsonschema"]);
    assert!(a.has_submodules("ns"));
    assert!(a.has_submodules("ns.inner"));
    assert!(!a.has_submodules("json.tool"));

    let res: Vec<_> = a.resources("json").map(|(p, _)| p).collect();
    assert_eq!(res, ["b.bin", "data/a.txt"]);
    assert_eq!(
        &*a.resource("json", "data/a.txt").unwrap().read().unwrap(),
        b"hello"
    );
    assert!(a.resource("jsonschema", "data/a.txt").is_none());

    assert_eq!(
        a.distributions(),
        ["anyio-4.0.dist-info", "mcp-2.3.0.dist-info"]
    );
    let files: Vec<_> = a
        .dist_files("mcp-2.3.0.dist-info")
        .map(|(f, _)| f)
        .collect();
    assert_eq!(files, ["METADATA", "entry_points.txt"]);
    assert_eq!(a.manifest().unwrap().app.unwrap().entry_point, "n:main");
    let counts: Vec<_> = a.counts().into_iter().map(|(_, n)| n).collect();
    assert_eq!(counts, [1, 5, 2, 1, 3, 3, 0, 1, 1]);
    assert_eq!(
        &*a.notice("licenses").unwrap().read().unwrap(),
        &b"MIT".repeat(100)[..]
    );
    assert!(a.notice("sbom.cdx.json").is_none());
}

#[test]
fn compiled_sources_are_found_by_their_whole_key() {
    let bytes = sample();
    let a = Archive::open(&bytes).unwrap();
    assert!(a.find(EntryKind::CompiledSources, b"startup").is_some());
    let table = a.compiled_sources().unwrap().unwrap();
    assert_eq!(table.get(&FORWARD_REF), Some(&b"marshalled code"[..]));
    let other = SourceKey {
        source: "dict[str, Any]",
        ..FORWARD_REF
    };
    assert_eq!(table.get(&other), None);
    let mut w = ArchiveWriter::new((3, 11));
    let bad = SourceKey {
        mode: "func_type",
        ..FORWARD_REF
    };
    assert!(matches!(
        w.add_compiled_sources(&[(bad, vec![1])]),
        Err(WriteError::BadKey { .. })
    ));
    w.add_regex_seeds(b"marshalled seeds".to_vec()).unwrap();
    let bytes = w.finish().unwrap();
    let a = Archive::open(&bytes).unwrap();
    assert_eq!(
        a.regex_seeds().unwrap().as_deref(),
        Some(&b"marshalled seeds"[..])
    );
    assert!(a.compiled_sources().unwrap().is_none());
    let empty = ArchiveWriter::new((3, 11)).finish().unwrap();
    let empty = Archive::open(&empty).unwrap();
    assert_eq!(empty.prefixed(EntryKind::CompiledSources, b"").count(), 0);
    assert!(empty.compiled_sources().unwrap().is_none());
    assert!(empty.regex_seeds().unwrap().is_none());
}

#[test]
fn output_is_deterministic_whatever_the_insertion_order() {
    let mut w = ArchiveWriter::new((3, 12));
    w.add_module("b", vec![2; 100], None, false).unwrap();
    w.add_module("a", vec![1; 100], None, false).unwrap();
    let mut v = ArchiveWriter::new((3, 12));
    v.add_module("a", vec![1; 100], None, false).unwrap();
    v.add_module("b", vec![2; 100], None, false).unwrap();
    assert_eq!(w.finish().unwrap(), v.finish().unwrap());
}

#[test]
fn writer_rejects_duplicates_and_bad_keys() {
    let mut w = ArchiveWriter::new((3, 11));
    w.add_module("a", vec![], None, false).unwrap();
    assert!(matches!(
        w.add_module("a", vec![], None, false),
        Err(WriteError::Duplicate { .. })
    ));
    assert!(matches!(
        w.add_module("a\0b", vec![], None, false),
        Err(WriteError::BadKey { .. })
    ));
    assert!(matches!(
        w.add_resource("pkg", "", vec![]),
        Err(WriteError::BadKey { .. })
    ));
    // An empty package is the import root (data directories beside top-level modules).
    w.add_resource("", "_data/lib.so", vec![1]).unwrap();
    // Same key, other kind: fine.
    w.add_extension("a", "a.so", vec![], &[]).unwrap();
}

#[test]
fn truncation_is_reported_not_panicked() {
    let bytes = sample();
    for cut in [0, 10, 63, 64, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = Archive::open(&bytes[..cut]).unwrap_err();
        match err {
            Error::TooShort { .. } | Error::OutOfBounds { .. } => {}
            other => panic!("cut at {cut}: unexpected {other}"),
        }
    }
}

#[test]
fn header_corruption_is_caught_by_the_checksum() {
    let bytes = sample();
    let mut bad = bytes.clone();
    bad[70] ^= 0x40; // inside the index
    assert!(matches!(
        Archive::open(&bad),
        Err(Error::MetaChecksum { .. })
    ));
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert_eq!(Archive::open(&bad).unwrap_err(), Error::BadMagic);
    let mut bad = bytes;
    bad[8] = 9;
    assert_eq!(
        Archive::open(&bad).unwrap_err(),
        Error::Version { found: 9 }
    );
}

#[test]
fn data_corruption_names_the_entry_and_spares_the_others() {
    let bytes = sample();
    let a = Archive::open(&bytes).unwrap();
    let victim = a.find(EntryKind::SharedLib, b"libssl.so.3").unwrap();
    // The writer is deterministic, so compressing the same bytes at the same level
    // yields exactly the stored blob; find it and flip a bit in its middle.
    let stored = zstd::bulk::compress(&victim.read().unwrap(), 12).unwrap();
    assert_eq!(stored.len(), victim.stored_len());
    let pos = find(&bytes, &stored).expect("blob present");
    let mut bad = bytes.clone();
    bad[pos + stored.len() / 2] ^= 1;
    let b = Archive::open(&bad).unwrap();
    let err = b
        .find(EntryKind::SharedLib, b"libssl.so.3")
        .unwrap()
        .read()
        .unwrap_err();
    assert!(
        matches!(&err, Error::EntryChecksum { key, .. } if key == "libssl.so.3"),
        "{err}"
    );
    assert!(err.to_string().contains("byte offset"));
    assert_eq!(
        &*b.module("json.decoder").unwrap().read().unwrap(),
        &[1, 2, 3]
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(a) = Archive::open(&bytes) {
            for e in a.entries() {
                let _ = e.read();
                let _ = e.read_source();
            }
        }
    }

    #[test]
    fn any_single_byte_flip_is_an_error_or_harmless(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let bytes = sample();
        let mut bad = bytes.clone();
        let i = pos.index(bad.len());
        bad[i] ^= 1 << bit;
        match Archive::open(&bad) {
            Err(_) => {}
            Ok(a) => {
                // Header and index are checksummed, so only data can differ: at most
                // one entry fails, with a typed error, and every other reads as before.
                let good = Archive::open(&bytes).unwrap();
                let mut failures = 0;
                for (e, g) in a.entries().zip(good.entries()) {
                    match (e.read(), e.read_source()) {
                        (Ok(x), Ok(s)) => {
                            prop_assert_eq!(x, g.read().unwrap());
                            prop_assert_eq!(s, g.read_source().unwrap());
                        }
                        _ => failures += 1,
                    }
                }
                prop_assert!(failures <= 1);
            }
        }
    }

    #[test]
    fn round_trip(mods in proptest::collection::btree_map("[a-z_]{1,8}(\\.[a-z_]{1,8}){0,2}", (proptest::collection::vec(any::<u8>(), 0..300), any::<bool>()), 0..40)) {
        let mut w = ArchiveWriter::new((3, 13));
        for (name, (code, pkg)) in &mods {
            w.add_module(name, code.clone(), pkg.then(|| code.clone()), *pkg).unwrap();
        }
        let bytes = w.finish().unwrap();
        let a = Archive::open(&bytes).unwrap();
        prop_assert_eq!(a.len(), mods.len());
        for (name, (code, pkg)) in &mods {
            let e = a.module(name).unwrap();
            prop_assert_eq!(&*e.read().unwrap(), &code[..]);
            prop_assert_eq!(e.is_package(), *pkg);
            prop_assert_eq!(e.read_source().unwrap().map(|c| c.into_owned()), pkg.then(|| code.clone()));
        }
    }
}

#[test]
fn import_root_resources_round_trip() {
    let mut w = ArchiveWriter::new((3, 11));
    w.add_resource("", "_data/lib.so", b"elf".to_vec()).unwrap();
    w.add_resource("pkg", "data.json", b"{}".to_vec()).unwrap();
    let bytes = w.finish().unwrap();
    let a = Archive::open(&bytes).unwrap();
    assert_eq!(
        &*a.resource("", "_data/lib.so").unwrap().read().unwrap(),
        b"elf"
    );
    assert!(a.resource("pkg", "_data/lib.so").is_none());
    assert_eq!(
        &*a.resource("pkg", "data.json").unwrap().read().unwrap(),
        b"{}"
    );
}

#[test]
fn package_membership_is_by_dotted_component() {
    use pykiln_archive::within_package;
    assert!(within_package("numpy.f2py", "numpy.f2py"));
    assert!(within_package("numpy.f2py._backends._meson", "numpy.f2py"));
    assert!(!within_package("numpy.f2pyx", "numpy.f2py"));
    assert!(!within_package("numpy", "numpy.f2py"));
}

#[test]
fn data_order_lays_out_listed_entries_first_and_reads_the_same() {
    let build = |first: Vec<String>| {
        let mut w = ArchiveWriter::new((3, 11)).compression_level(3);
        for name in ["a", "b", "c", "d"] {
            w.add_module(name, name.repeat(500).into_bytes(), None, false)
                .unwrap();
        }
        w.add_extension("ext", "ext.so", b"\x7fELF-ext".repeat(100), &["libx.so.1"])
            .unwrap();
        w.add_shared_lib("libx.so.1", b"\x7fELF".repeat(300), &["liby.so.2"])
            .unwrap();
        w.add_shared_lib("liby.so.2", b"\x7fELF-y".repeat(300), &[])
            .unwrap();
        w.data_order(first).finish().unwrap()
    };
    let plain = build(Vec::new());
    let first: Vec<String> = ["c", "ext", "not-there", "c"].map(String::from).to_vec();
    let ordered = build(first.clone());
    assert_ne!(plain, ordered);
    let a = Archive::open(&ordered).unwrap();
    let at = |kind, key: &[u8]| a.find(kind, key).unwrap().stored_bytes().as_ptr() as usize;
    let c = at(EntryKind::Module, b"c");
    let liby = at(EntryKind::SharedLib, b"liby.so.2");
    let libx = at(EntryKind::SharedLib, b"libx.so.1");
    let ext = at(EntryKind::Extension, b"ext");
    assert!(
        c < liby && liby < libx && libx < ext,
        "listed order, libraries first"
    );
    for other in [b"a", b"b", b"d"] {
        assert!(
            ext < at(EntryKind::Module, other),
            "listed entries come first"
        );
    }
    // The reader computes the same order (what the runtime prefetches).
    let loaded: Vec<usize> = a
        .load_order(&first)
        .iter()
        .map(|e| e.stored_bytes().as_ptr() as usize)
        .collect();
    assert_eq!(loaded, [c, liby, libx, ext]);
    for name in ["a", "b", "c", "d"] {
        let e = a.module(name).unwrap();
        assert_eq!(&*e.read().unwrap(), name.repeat(500).as_bytes());
    }
}

#[test]
fn read_into_fills_a_caller_buffer_and_checks_its_size() {
    let bytes = sample();
    let a = Archive::open(&bytes).unwrap();
    for e in a.entries() {
        let mut out = vec![0u8; e.raw_len()];
        e.read_into(&mut out).unwrap();
        assert_eq!(out, &*e.read().unwrap(), "{}", e.key_lossy());
    }
    let json = a.module("json").unwrap();
    let err = json
        .read_into(&mut vec![0u8; json.raw_len() + 1])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'json'") && err.contains("output buffer"),
        "{err}"
    );
}

/// Bytecode-like blobs that share most of their bytes, as real modules do.
fn modules_like() -> Vec<(String, Vec<u8>)> {
    (0..60)
        .map(|i| {
            let body = format!("\u{e3}co_names (self, value, typing, dataclass_{i}) line {i}\n");
            (
                format!("pkg.mod{i:02}"),
                body.repeat(8 + i % 5).into_bytes(),
            )
        })
        .collect()
}

#[test]
fn a_dictionary_shrinks_bytecode_and_reads_back() {
    let mods = modules_like();
    let samples: Vec<&[u8]> = mods.iter().map(|(_, b)| &b[..]).collect();
    let dict = zstd::dict::from_continuous(
        &samples.concat(),
        &samples.iter().map(|s| s.len()).collect::<Vec<_>>(),
        4096,
    )
    .unwrap();
    let build = |dict: Option<Vec<u8>>| {
        let mut w = ArchiveWriter::new((3, 11)).compression_level(19);
        if let Some(d) = dict {
            w = w.dictionary(d);
        }
        for (name, code) in &mods {
            w.add_module(
                name,
                code.clone(),
                Some(b"# a source, never with the dictionary\n".repeat(4)),
                false,
            )
            .unwrap();
        }
        w.add_resource("pkg", "data.txt", b"resource bytes ".repeat(20))
            .unwrap();
        w.finish().unwrap()
    };
    let plain = build(None);
    let with = build(Some(dict.clone()));
    let a = Archive::open(&with).unwrap();
    assert_eq!(a.dictionary(), Some(&dict[..]));
    assert!(Archive::open(&plain).unwrap().dictionary().is_none());
    let stored = |bytes: &[u8]| -> usize {
        let a = Archive::open(bytes).unwrap();
        mods.iter()
            .map(|(n, _)| a.module(n).unwrap().stored_len())
            .sum()
    };
    assert!(
        stored(&with) < stored(&plain),
        "{} vs {}",
        stored(&with),
        stored(&plain)
    );
    for (name, code) in &mods {
        let e = a.module(name).unwrap();
        assert_eq!(&*e.read().unwrap(), &code[..]);
        let mut out = vec![0; e.raw_len()];
        e.read_into(&mut out).unwrap();
        assert_eq!(&out, code);
        assert!(e.read_source().unwrap().is_some());
    }
    assert_eq!(
        &*a.resource("pkg", "data.txt").unwrap().read().unwrap(),
        &b"resource bytes ".repeat(20)[..]
    );
    // The dictionary's own bytes are checksummed like any blob: corrupting them is
    // caught when the archive is opened, naming the entry.
    let at = find(&with, &dict[..64]).unwrap();
    let mut bad = with.clone();
    bad[at + 10] ^= 0x40;
    let err = Archive::open(&bad).unwrap_err().to_string();
    assert!(err.contains("zstd-dictionary"), "{err}");
}

#[test]
fn file_backed_keys_round_trip() {
    use pykiln_archive::{file_backed_key, parse_file_backed_key};
    for (kind, key) in [
        (EntryKind::Extension, "pydantic_core._pydantic_core"),
        (EntryKind::SharedLib, "libstdc++.so.6"),
    ] {
        assert_eq!(
            parse_file_backed_key(&file_backed_key(kind, key)),
            Some((kind, key))
        );
    }
    assert_eq!(parse_file_backed_key("module:json"), None);
    assert_eq!(parse_file_backed_key("no-colon"), None);
}
