//! Which glibc an ELF file needs, from its GNU symbol versions.
//!
//! A dynamically linked executable or library records, per library it links, the
//! symbol versions it was linked against (`.gnu.version_r`: `GLIBC_2.34`, …); the
//! dynamic loader refuses to start it on a system whose glibc lacks one. The newest of
//! them is the oldest glibc it runs on. Before the final link that record does not
//! exist yet; [`default_versions`] and [`undefined_symbols`] let a build predict it: an
//! undefined symbol of an object gets the default version its name has in the build
//! machine's glibc.
//!
//! [`FAMILY`] is the one list of the libraries a glibc system provides and a pykiln
//! binary therefore never packs (they must match the target's own ld.so): what the
//! build links dynamically, what it predicts versions from, what it leaves out of an
//! archive, and what a container image copies in.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use goblin::elf::Elf;

/// A library every glibc system has (see [`FAMILY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyMember {
    /// Its SONAME, `libm.so.6`.
    pub soname: &'static str,
    /// Its name for the linker, `m` (as in `-lm`).
    pub link_name: &'static str,
    /// Part of glibc itself (whose symbols carry `GLIBC_` versions); false for the
    /// compiler runtime (`libgcc_s`), which glibc programs need as much.
    pub glibc: bool,
}

const fn member(soname: &'static str, link_name: &'static str, glibc: bool) -> FamilyMember {
    FamilyMember {
        soname,
        link_name,
        glibc,
    }
}

/// The glibc family: glibc's libraries and the compiler runtime, present on every
/// glibc system, never packed, and copied into container images. The dynamic loader
/// (`ld-linux*.so`, `ld64.so*`) belongs too: see [`is_family`].
pub const FAMILY: &[FamilyMember] = &[
    member("libc.so.6", "c", true),
    member("libm.so.6", "m", true),
    member("libpthread.so.0", "pthread", true),
    member("libdl.so.2", "dl", true),
    member("librt.so.1", "rt", true),
    member("libutil.so.1", "util", true),
    member("libresolv.so.2", "resolv", true),
    member("libanl.so.1", "anl", true),
    member("libmvec.so.1", "mvec", true),
    member("libBrokenLocale.so.1", "BrokenLocale", true),
    member("libgcc_s.so.1", "gcc_s", false),
];

/// Whether `soname` is of the glibc family (a [`FAMILY`] member or the dynamic loader).
pub fn is_family(soname: &str) -> bool {
    FAMILY.iter().any(|m| m.soname == soname)
        || soname.starts_with("ld-linux")
        || soname.starts_with("ld64.so")
}

/// A glibc version, `2.35`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlibcVersion {
    /// Major version (2).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl GlibcVersion {
    /// Parse a version tag, `GLIBC_2.35` or `GLIBC_2.2.5` (patch level ignored);
    /// None for anything else (`GLIBC_PRIVATE`, `GCC_3.0`).
    pub fn from_tag(tag: &str) -> Option<Self> {
        let mut parts = tag.strip_prefix("GLIBC_")?.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(GlibcVersion { major, minor })
    }
}

impl fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The newest glibc version an ELF file's version requirements name; None when it
/// names none (a static or version-free file).
pub fn required(elf: &[u8]) -> Result<Option<GlibcVersion>, goblin::error::Error> {
    let elf = Elf::parse(elf)?;
    let Some(verneed) = &elf.verneed else {
        return Ok(None);
    };
    let mut newest = None;
    for file in verneed.iter() {
        for aux in file.iter() {
            let v = elf
                .dynstrtab
                .get_at(aux.vna_name)
                .and_then(GlibcVersion::from_tag);
            newest = newest.max(v);
        }
    }
    Ok(newest)
}

/// The default (`@@`) glibc version of every symbol a shared library defines.
pub fn default_versions(lib: &[u8]) -> Result<HashMap<String, GlibcVersion>, goblin::error::Error> {
    let elf = Elf::parse(lib)?;
    let (Some(versym), Some(verdef)) = (&elf.versym, &elf.verdef) else {
        return Ok(HashMap::new());
    };
    // Version index → version of that definition.
    let mut by_index = HashMap::new();
    for def in verdef.iter() {
        if let Some(v) = def
            .iter()
            .next()
            .and_then(|aux| elf.dynstrtab.get_at(aux.vda_name))
            .and_then(GlibcVersion::from_tag)
        {
            by_index.insert(def.vd_ndx, v);
        }
    }
    let mut out = HashMap::new();
    for (i, sym) in elf.dynsyms.iter().enumerate() {
        if sym.st_shndx == 0 {
            continue;
        }
        let Some(vs) = versym.get_at(i) else {
            continue;
        };
        if vs.is_hidden() {
            continue;
        }
        if let (Some(name), Some(v)) = (
            elf.dynstrtab.get_at(sym.st_name),
            by_index.get(&vs.version()),
        ) {
            out.insert(name.to_string(), *v);
        }
    }
    Ok(out)
}

/// Names of the symbols an object file, or the members of a static library (`ar`
/// archive), leave undefined.
pub fn undefined_symbols(bytes: &[u8]) -> Result<BTreeSet<String>, goblin::error::Error> {
    let mut out = BTreeSet::new();
    let mut add = |object: &[u8]| -> Result<(), goblin::error::Error> {
        let elf = Elf::parse(object)?;
        for sym in elf.syms.iter() {
            if sym.st_shndx == 0 && sym.st_name != 0 {
                if let Some(name) = elf.strtab.get_at(sym.st_name) {
                    out.insert(name.to_string());
                }
            }
        }
        Ok(())
    };
    if bytes.starts_with(b"!<arch>\n") {
        let archive = goblin::archive::Archive::parse(bytes)?;
        for member in archive.members() {
            let data = archive.extract(member, bytes)?;
            if data.starts_with(b"\x7fELF") {
                add(data)?;
            }
        }
    } else {
        add(bytes)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_names_agree_and_include_the_loader() {
        for m in FAMILY {
            assert!(
                m.soname.starts_with(&format!("lib{}.so.", m.link_name)),
                "{m:?}"
            );
            assert!(is_family(m.soname));
        }
        assert!(is_family("ld-linux-x86-64.so.2") && is_family("ld-linux-aarch64.so.1"));
        assert!(!is_family("libcrypt.so.1") && !is_family("libssl.so.3"));
    }
    use pykiln_test_support::{self as support, CommandExt as _};

    #[test]
    fn tags_parse() {
        assert_eq!(
            GlibcVersion::from_tag("GLIBC_2.2.5"),
            Some(GlibcVersion { major: 2, minor: 2 })
        );
        assert_eq!(
            GlibcVersion::from_tag("GLIBC_2.35").map(|v| v.to_string()),
            Some("2.35".into())
        );
        assert!(GlibcVersion::from_tag("GLIBC_2.35") > GlibcVersion::from_tag("GLIBC_2.4"));
        assert_eq!(GlibcVersion::from_tag("GLIBC_PRIVATE"), None);
        assert_eq!(GlibcVersion::from_tag("GCC_3.0"), None);
    }

    /// This test binary itself: what it requires is what `readelf -V` shows, and each
    /// required symbol resolves to a default version no newer than that.
    #[test]
    fn the_running_executable_is_read_like_readelf() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let ours = required(&exe)
            .unwrap()
            .expect("a dynamically linked test binary");
        // readelf comes with binutils, next to the C compiler the build needs anyway.
        let out = std::process::Command::new("readelf")
            .args(["-V", "--wide", "/proc/self/exe"])
            .output_within(support::TIMEOUT);
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let theirs = text
                .split_whitespace()
                .filter_map(|w| GlibcVersion::from_tag(w.trim_start_matches("Name:")))
                .max();
            assert_eq!(Some(ours), theirs);
        }
        let libc = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6")
            .or_else(|_| std::fs::read("/lib64/libc.so.6"));
        if let Ok(libc) = libc {
            let defaults = default_versions(&libc).unwrap();
            assert!(defaults.get("malloc").is_some_and(|v| v.major == 2));
            assert!(defaults.values().max().is_some_and(|v| *v >= ours));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(required(b"not an elf file").is_err());
        assert!(undefined_symbols(b"!<arch>\nbroken").is_err());
    }
}
