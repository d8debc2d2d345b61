//! Micro-benchmarks of the archive reader: what start-up and every import pay.
//!
//! `cargo bench -p pykiln-archive`. The archive is synthetic but shaped like a real
//! one: 5,000 modules in packages, bytecode-sized blobs (1–8 KiB, zstd level 12), with
//! and without a trained dictionary.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pykiln_archive::{Archive, ArchiveWriter, Manifest};

const MODULES: usize = 5_000;

fn module_name(i: usize) -> String {
    format!("pkg{}.sub{}.module_{i}", i % 40, i % 7)
}

/// Bytecode-like bytes: repetitive structure with varying names, as marshal output is.
fn bytecode(i: usize) -> Vec<u8> {
    let len = 1024 + (i * 131) % 7168;
    let mut out = Vec::with_capacity(len);
    let mut x = i as u32 | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(b"\xe3\x00\x00\x00\x00");
        out.extend_from_slice(format!("name_{}", x % 97).as_bytes());
    }
    out.truncate(len);
    out
}

fn build(dictionary: Option<Vec<u8>>) -> Vec<u8> {
    let mut w = ArchiveWriter::new((3, 11)).compression_level(12);
    if let Some(d) = dictionary {
        w = w.dictionary(d);
    }
    for i in 0..MODULES {
        w.add_module(&module_name(i), bytecode(i), None, false)
            .unwrap();
    }
    w.add_resource("pkg0", "big.bin", bytecode(7).repeat(256))
        .unwrap();
    w.set_manifest(&Manifest::default()).unwrap();
    w.finish().unwrap()
}

fn benches(c: &mut Criterion) {
    let bytes = build(None);
    c.bench_function("open 5000-entry archive (header + index checksum)", |b| {
        b.iter(|| Archive::open(black_box(&bytes)).unwrap())
    });
    let archive = Archive::open(&bytes).unwrap();
    let names: Vec<String> = (0..MODULES).step_by(97).map(module_name).collect();
    c.bench_function("module lookup (binary search)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % names.len();
            archive.module(black_box(&names[i])).unwrap()
        })
    });
    c.bench_function("miss lookup (a module that is not packed)", |b| {
        b.iter(|| archive.module(black_box("numpy.not_here")))
    });
    // What the finder does per import besides unmarshal/exec: lookup, verify and
    // decompress the bytecode.
    c.bench_function("lookup + read bytecode (finder work per import)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % names.len();
            archive.module(&names[i]).unwrap().read().unwrap().len()
        })
    });
    // The same with bytecode compressed against a dictionary trained on it, as the
    // build does.
    let samples: Vec<Vec<u8>> = (0..MODULES).step_by(5).map(bytecode).collect();
    let dict = zstd::dict::from_samples(&samples, 64 * 1024).unwrap();
    let with_dict = build(Some(dict));
    let archive_d = Archive::open(&with_dict).unwrap();
    c.bench_function("lookup + read bytecode, dictionary-compressed", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % names.len();
            archive_d.module(&names[i]).unwrap().read().unwrap().len()
        })
    });
    let big = archive.resource("pkg0", "big.bin").unwrap();
    let raw = big.read().unwrap().len();
    let mut g = c.benchmark_group("decompression");
    g.throughput(Throughput::Bytes(raw as u64));
    g.bench_function("read a 1 MiB resource (xxh3 + zstd)", |b| {
        b.iter(|| big.read().unwrap().len())
    });
    g.finish();
}

criterion_group!(archive, benches);
criterion_main!(archive);
