//! Dropping what the dynamic loader never reads from packed ELF files.
//!
//! Extension modules and shared libraries often carry DWARF debug info and a full
//! symbol table (pyenv's `lib-dynload` is built with `-g`: `_decimal` is 1.7 MB, 0.37 MB
//! without). ld.so reads only the program headers and what they map; the section
//! headers' non-allocated sections (`.debug_*`, `.symtab`, `.strtab`, `.comment`) are
//! for debuggers and linkers. [`strip`] keeps every byte up to the end of the last
//! loaded or allocated byte exactly as it was, drops the non-allocated sections that
//! follow, and rewrites the section header table, so loaded code and data, `.dynsym`
//! (what extension modules export) and `.dynamic` are untouched.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header::{EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB};
use goblin::elf::program_header::ProgramHeader;
use goblin::elf::section_header::{
    SHF_ALLOC, SHF_INFO_LINK, SHT_NOBITS, SHT_REL, SHT_RELA, SectionHeader,
};

/// Size of an ELF64 section header.
const SHDR64: usize = 64;

/// Offsets inside the ELF64 file header.
mod ehdr {
    pub const SHOFF: usize = 0x28;
    pub const SHENTSIZE: usize = 0x3a;
    pub const SHNUM: usize = 0x3c;
    pub const SHSTRNDX: usize = 0x3e;
}

/// `bytes` without its non-allocated sections, or `None` when there is nothing to drop
/// or the file is not one this function rewrites (only 64-bit little-endian ELF, the
/// layout of every Linux target pykiln supports; anything unusual is left as it is).
pub fn strip(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 64
        || &bytes[..4] != b"\x7fELF"
        || bytes[EI_CLASS] != ELFCLASS64
        || bytes[EI_DATA] != ELFDATA2LSB
    {
        return None;
    }
    let header = goblin::elf::Elf::parse_header(bytes).ok()?;
    let ctx = Ctx::new(Container::Big, Endian::Little);
    let shnum = header.e_shnum as usize;
    let shstrndx = header.e_shstrndx as usize;
    if header.e_shoff == 0
        || header.e_shentsize as usize != SHDR64
        || shnum == 0
        || shstrndx == 0
        || shstrndx >= shnum
    {
        return None;
    }
    let sections = SectionHeader::parse(bytes, header.e_shoff as usize, shnum, ctx).ok()?;
    let programs =
        ProgramHeader::parse(bytes, header.e_phoff as usize, header.e_phnum as usize, ctx).ok()?;

    let end = |off: u64, size: u64| off.checked_add(size);
    // Everything the loader can see, and every allocated section, stays byte for byte.
    let mut keep_end = header.e_phoff.checked_add(header.e_phnum as u64 * 56)?;
    keep_end = keep_end.max(64);
    for p in &programs {
        keep_end = keep_end.max(end(p.p_offset, p.p_filesz)?);
    }
    let mut last_alloc = 0;
    for (i, s) in sections.iter().enumerate() {
        if s.sh_flags & SHF_ALLOC as u64 != 0 {
            last_alloc = i;
            if s.sh_type != SHT_NOBITS {
                keep_end = keep_end.max(end(s.sh_offset, s.sh_size)?);
            }
        }
    }
    if keep_end > bytes.len() as u64 {
        return None;
    }

    // Drop a non-allocated section only if its bytes lie past the kept prefix and its
    // index is above every allocated section's, so no index that .dynsym's st_shndx or
    // an allocated section's sh_link/sh_info uses ever moves.
    let dropped = |i: usize, s: &SectionHeader| {
        i != 0
            && i != shstrndx
            && i > last_alloc
            && s.sh_flags & SHF_ALLOC as u64 == 0
            && (s.sh_type == SHT_NOBITS || s.sh_offset >= keep_end)
    };
    if !sections.iter().enumerate().any(|(i, s)| dropped(i, s)) {
        return None;
    }
    let mut new_index = vec![0u32; shnum];
    let mut kept = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        if !dropped(i, s) {
            new_index[i] = kept.len() as u32;
            kept.push((i, s.clone()));
        }
    }

    let mut out = bytes[..keep_end as usize].to_vec();
    let mut table = Vec::with_capacity(kept.len() * SHDR64);
    for (_, s) in &kept {
        let mut s = s.clone();
        let data_end = end(s.sh_offset, s.sh_size)?;
        if s.sh_type != SHT_NOBITS && data_end > keep_end {
            // A kept section outside the prefix (.shstrtab): copy it after the prefix.
            let data = bytes.get(s.sh_offset as usize..data_end as usize)?;
            let align = s.sh_addralign.clamp(1, 4096) as usize;
            out.resize(out.len().div_ceil(align) * align, 0);
            s.sh_offset = out.len() as u64;
            out.extend_from_slice(data);
        }
        // Indices up to the last allocated section do not move; links to a dropped
        // section (none in practice: only linkers read them) become 0.
        let remap = |v: u32| new_index.get(v as usize).copied().unwrap_or(0);
        s.sh_link = remap(s.sh_link);
        if s.sh_type == SHT_REL || s.sh_type == SHT_RELA || s.sh_flags & SHF_INFO_LINK as u64 != 0 {
            s.sh_info = remap(s.sh_info);
        }
        write_shdr(&mut table, &s);
    }
    out.resize(out.len().div_ceil(8) * 8, 0);
    let shoff = out.len() as u64;
    out.extend_from_slice(&table);
    out[ehdr::SHOFF..ehdr::SHOFF + 8].copy_from_slice(&shoff.to_le_bytes());
    out[ehdr::SHENTSIZE..ehdr::SHENTSIZE + 2].copy_from_slice(&(SHDR64 as u16).to_le_bytes());
    out[ehdr::SHNUM..ehdr::SHNUM + 2].copy_from_slice(&(kept.len() as u16).to_le_bytes());
    out[ehdr::SHSTRNDX..ehdr::SHSTRNDX + 2]
        .copy_from_slice(&(new_index[shstrndx] as u16).to_le_bytes());
    Some(out)
}

fn write_shdr(out: &mut Vec<u8>, s: &SectionHeader) {
    out.extend_from_slice(&(s.sh_name as u32).to_le_bytes());
    out.extend_from_slice(&s.sh_type.to_le_bytes());
    out.extend_from_slice(&s.sh_flags.to_le_bytes());
    out.extend_from_slice(&s.sh_addr.to_le_bytes());
    out.extend_from_slice(&s.sh_offset.to_le_bytes());
    out.extend_from_slice(&s.sh_size.to_le_bytes());
    out.extend_from_slice(&s.sh_link.to_le_bytes());
    out.extend_from_slice(&s.sh_info.to_le_bytes());
    out.extend_from_slice(&s.sh_addralign.to_le_bytes());
    out.extend_from_slice(&s.sh_entsize.to_le_bytes());
}

/// [`strip`], checked: the result must parse and describe the same dynamic object
/// (SONAME, needed libraries, exported symbols); otherwise the original is kept.
pub fn strip_checked(bytes: Vec<u8>) -> Vec<u8> {
    let Some(stripped) = strip(&bytes) else {
        return bytes;
    };
    let same = match (
        goblin::elf::Elf::parse(&bytes),
        goblin::elf::Elf::parse(&stripped),
    ) {
        (Ok(a), Ok(b)) => {
            a.soname == b.soname
                && a.libraries == b.libraries
                && a.dynsyms.len() == b.dynsyms.len()
                && a.program_headers == b.program_headers
        }
        _ => false,
    };
    if same { stripped } else { bytes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pykiln_test_support::{self as support, CommandExt as _};
    use std::process::Command;

    /// A shared library with debug info, built by the C compiler pykiln requires anyway.
    fn debug_library(dir: &std::path::Path) -> Vec<u8> {
        let src = dir.join("answer.c");
        std::fs::write(
            &src,
            "int pykiln_answer(int x) { return x * 2 + 42; }\n\
             const char *pykiln_name = \"strip-test\";\n",
        )
        .unwrap();
        let lib = dir.join("libanswer.so");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = Command::new(cc)
            .args([
                "-g",
                "-O1",
                "-shared",
                "-fPIC",
                "-Wl,-soname,libanswer.so.1",
                "-o",
            ])
            .arg(&lib)
            .arg(&src)
            .status_within(support::TIMEOUT);
        assert!(status.success());
        std::fs::read(&lib).unwrap()
    }

    fn section_names(bytes: &[u8]) -> Vec<String> {
        let elf = goblin::elf::Elf::parse(bytes).unwrap();
        elf.section_headers
            .iter()
            .filter_map(|s| elf.shdr_strtab.get_at(s.sh_name).map(str::to_string))
            .collect()
    }

    #[test]
    fn drops_debug_info_and_keeps_what_the_loader_reads() {
        let dir = tempfile::tempdir().unwrap();
        let original = debug_library(dir.path());
        assert!(section_names(&original).iter().any(|n| n == ".debug_info"));
        let stripped = strip(&original).expect("something to strip");
        assert!(stripped.len() < original.len());

        let names = section_names(&stripped);
        for gone in [".debug_info", ".symtab", ".strtab"] {
            assert!(!names.iter().any(|n| n == gone), "{gone} left in {names:?}");
        }
        for kept in [".dynsym", ".dynstr", ".text", ".dynamic", ".shstrtab"] {
            assert!(
                names.iter().any(|n| n == kept),
                "{kept} missing from {names:?}"
            );
        }
        let a = goblin::elf::Elf::parse(&original).unwrap();
        let b = goblin::elf::Elf::parse(&stripped).unwrap();
        assert_eq!(a.soname, b.soname);
        assert_eq!(a.program_headers, b.program_headers);
        // Every loaded byte is where it was (but the file header's section-table fields).
        for p in &a.program_headers {
            let r = p.file_range();
            let r = r.start.max(64)..r.end.max(64);
            assert!(
                original[r.clone()] == stripped[r.clone()],
                "segment {r:?} changed"
            );
        }
        // Stripping again finds nothing left to drop.
        assert!(strip(&stripped).is_none());
        assert_eq!(strip_checked(stripped.clone()), stripped);
    }

    #[test]
    fn the_stripped_library_loads_and_runs() {
        let dir = tempfile::tempdir().unwrap();
        let stripped = strip(&debug_library(dir.path())).unwrap();
        let path = dir.path().join("libanswer-stripped.so");
        std::fs::write(&path, &stripped).unwrap();
        // SAFETY: the library was just compiled from the source above; its function
        // has the declared signature and no initialisers run.
        unsafe {
            let lib = libloading::Library::new(&path).unwrap();
            let f: libloading::Symbol<unsafe extern "C" fn(i32) -> i32> =
                lib.get(b"pykiln_answer").unwrap();
            assert_eq!(f(8), 58);
        }
    }

    #[test]
    fn leaves_other_files_alone() {
        assert!(strip(b"").is_none());
        assert!(strip(b"#!/bin/sh\necho not an ELF file\n").is_none());
        let mut elf32 = b"\x7fELF\x01\x01\x01".to_vec();
        elf32.resize(64, 0);
        assert!(strip(&elf32).is_none());
        // A truncated 64-bit header: no panic, nothing done.
        let mut trunc = b"\x7fELF\x02\x01\x01".to_vec();
        trunc.resize(80, 0xff);
        assert!(strip(&trunc).is_none());
        assert_eq!(strip_checked(trunc.clone()), trunc);
    }
}
