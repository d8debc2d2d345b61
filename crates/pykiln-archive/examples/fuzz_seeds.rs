//! Write small valid archives to a directory, as a seed corpus for the fuzzer:
//! `cargo run -p pykiln-archive --example fuzz_seeds -- fuzz/corpus/open_and_read`.

use pykiln_archive::{ArchiveWriter, Manifest, SourceKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: fuzz_seeds <directory>")?;
    std::fs::create_dir_all(&dir)?;
    for (i, level) in [1, 3, 19].into_iter().enumerate() {
        let mut w = ArchiveWriter::new((3, 11)).compression_level(level);
        if level == 19 {
            // A raw-content dictionary, so the dictionary path has a seed too.
            w = w.dictionary(b"code-shared-bytes ".repeat(40));
        }
        w.add_module("pkg", b"code".repeat(30), Some(b"# src\n".repeat(20)), true)?;
        w.add_module("pkg.mod", vec![1, 2, 3], None, false)?;
        w.add_module("ns.part.x", vec![4; 90], None, false)?;
        w.add_extension("pkg._ext", "_ext.abi3.so", vec![0x7f; 100], &["libz.so.1"])?;
        w.add_shared_lib("libz.so.1", vec![9; 80], &[])?;
        w.add_resource("pkg", "data/a.json", b"{}".to_vec())?;
        w.add_dist_file(
            "pkg-1.0.dist-info",
            "METADATA",
            b"Name: pkg\nVersion: 1.0\n".to_vec(),
        )?;
        let int = SourceKey {
            mode: "eval",
            flags: 0,
            optimize: 0,
            filename: "<string>",
            source: "int",
        };
        w.add_compiled_sources(&[(int, b"code".repeat(10))])?;
        w.set_manifest(&Manifest {
            pykiln_version: "0".into(),
            python_version: "3.11.0".into(),
            ..Default::default()
        })?;
        std::fs::write(format!("{dir}/seed-{i}"), w.finish()?)?;
    }
    Ok(())
}
