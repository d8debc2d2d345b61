//! What the build does for start-up speed and size, seen from the built demo: the
//! recorded start-up order feeds the prefetcher, native code is stripped, and packages
//! that read their own sources get them.

mod common;
use common::support;

use std::process::Command;

use common::{Session, binary, clean_command, info, stdout_of};

/// The build recorded the demo's start-up imports, and at run time the prefetcher
/// handed most of them to the importer.
#[test]
fn startup_entries_are_prefetched() {
    let bin = binary();
    let started = info(&bin)["startup_modules"].as_u64().unwrap_or(0);
    assert!(started > 300, "start-up order has {started} modules");

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = clean_command(&bin, &dir.path().join("notes.db"));
    cmd.env("PYKILN_LOG", "pykiln=debug");
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closing stdin at once: the server starts, finds end of input and exits.
    drop(child.stdin.take());
    let out = support::output_of(child, support::TIMEOUT, "the server");
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("start-up prefetch finished"))
        .unwrap_or_else(|| panic!("no prefetch report in:\n{log}"));
    let field = |name: &str| -> u64 {
        let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let (planned, served) = (field("planned"), field("served"));
    assert!(planned >= started, "{line}");
    // Typically all but a few; on a loaded machine the importer may reach some
    // entries first and read them itself, which is correct too.
    assert!(served * 2 >= planned, "served too few: {line}");
    assert!(
        !log.contains("\x1b["),
        "no colour codes when stderr is not a terminal"
    );

    // Turned off, the server still starts (and says nothing about prefetch).
    let mut cmd = clean_command(&bin, &dir.path().join("notes.db"));
    cmd.env("PYKILN_PREFETCH", "0")
        .env("PYKILN_LOG", "pykiln=debug");
    let mut s = Session::spawn(cmd);
    s.initialize();
    assert!(s.finish().success());
}

/// Packed extension modules and libraries carry no debug info or static symbol table,
/// and still load (every import of the demo's start-up went through them above; here
/// the file itself is checked).
#[test]
fn packed_native_code_is_stripped() {
    let out = stdout_of(Command::new(binary()).args([
        "--pykiln",
        "python",
        "-c",
        "import _decimal\nprint(_decimal.Decimal('1.1') + _decimal.Decimal('2.2'))\n",
    ]));
    assert!(out.contains("3.3"), "{out}");
    let archive = common::archive_bytes();
    let archive = pykiln_archive::Archive::open(&archive).unwrap();
    let mut checked = 0;
    for e in archive.entries().filter(|e| {
        matches!(
            e.kind(),
            pykiln_archive::EntryKind::Extension | pykiln_archive::EntryKind::SharedLib
        )
    }) {
        let bytes = e.read().unwrap();
        let names = section_names(&bytes);
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with(".debug") || n == ".symtab"),
            "{} keeps {names:?}",
            e.key_lossy()
        );
        assert!(names.iter().any(|n| n == ".dynsym"), "{}", e.key_lossy());
        checked += 1;
    }
    assert!(checked > 20, "only {checked} native images");
}

/// Section names of an ELF64 little-endian file, read by hand (the test depends on no
/// ELF crate).
fn section_names(elf: &[u8]) -> Vec<String> {
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (shoff, shnum, shstrndx) = (u64_at(0x28), u16_at(0x3c), u16_at(0x3e));
    let strtab = u64_at(shoff + shstrndx * 64 + 0x18);
    (0..shnum)
        .map(|i| {
            let name = strtab + u32_at(shoff + i * 64);
            let end = elf[name..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&elf[name..name + end]).into_owned()
        })
        .collect()
}

/// Dependencies that read sources through `inspect` get them: anyio's lazy imports work
/// (as in a venv, its submodules are not all imported up front) and `inspect.getsource`
/// finds pydantic's code.
#[test]
fn packages_that_read_sources_behave_as_in_a_venv() {
    let out = stdout_of(Command::new(binary()).args([
        "--pykiln",
        "python",
        "-c",
        "import sys, inspect, anyio, pydantic.fields\n\
         print('eager' if 'anyio.to_process' in sys.modules else 'lazy')\n\
         print(anyio.to_process.__name__)\n\
         print(len(inspect.getsource(pydantic.fields)) > 1000)\n",
    ]));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["lazy", "anyio.to_process", "True"]
    );
}
