//! The closure of shared libraries that packed native code needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use goblin::elf::Elf;

/// Libraries every Linux target provides (glibc and the compiler runtime, see
/// [`pykiln_glibc::FAMILY`]). They are never packed: they must match the target's own
/// ld.so.
pub fn is_system_library(soname: &str) -> bool {
    pykiln_glibc::is_family(soname)
}

/// SONAMEs whose symbols the pykiln executable itself exports; a placeholder with that
/// SONAME satisfies `DT_NEEDED` so the host's copy is never loaded.
pub fn provided_by_executable(soname: &str) -> bool {
    soname.starts_with("libsqlite3.so") || soname.starts_with("libpython3")
}

/// What the dynamic section says about one ELF file.
#[derive(Debug, Clone, Default)]
pub struct ElfInfo {
    /// `DT_SONAME`, if any.
    pub soname: Option<String>,
    /// `DT_NEEDED` entries in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` / `DT_RPATH` directories with `$ORIGIN` expanded.
    pub search: Vec<PathBuf>,
    /// `e_machine`: the CPU it is for.
    pub machine: u16,
}

/// Parse the dynamic section of the ELF file at `path`.
pub fn elf_info(path: &Path, bytes: &[u8]) -> anyhow::Result<ElfInfo> {
    let elf =
        Elf::parse(bytes).with_context(|| format!("{}: not a valid ELF file", path.display()))?;
    let origin = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let expand = |s: &str| -> Vec<PathBuf> {
        s.split(':')
            .filter(|p| !p.is_empty())
            .map(|p| {
                PathBuf::from(
                    p.replace("$ORIGIN", &origin.to_string_lossy())
                        .replace("${ORIGIN}", &origin.to_string_lossy()),
                )
            })
            .collect()
    };
    let mut search = Vec::new();
    for r in elf.runpaths.iter().chain(elf.rpaths.iter()) {
        search.extend(expand(r));
    }
    Ok(ElfInfo {
        soname: elf.soname.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        search,
        machine: elf.header.e_machine,
    })
}

/// Whether an ELF file defines `PyInit_<stem>`, i.e. is a Python extension module and
/// not a plain shared library that happens to sit in a package (`libsndfile_x86_64.so`,
/// loaded by path with cffi).
pub fn is_extension_module(bytes: &[u8], stem: &str) -> bool {
    let Ok(elf) = Elf::parse(bytes) else {
        return false;
    };
    let want = format!("PyInit_{stem}");
    elf.dynsyms
        .iter()
        .any(|sym| sym.st_shndx != 0 && elf.dynstrtab.get_at(sym.st_name) == Some(want.as_str()))
}

/// Directories ld.so searches by default, from /etc/ld.so.conf and the built-in list.
pub fn system_search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    read_ld_conf(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
    for d in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    let mut seen = BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

fn read_ld_conf(file: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    for line in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
    {
        if let Some(pattern) = line.strip_prefix("include ") {
            let pattern = pattern.trim();
            let (dir, suffix) = match pattern.rsplit_once('/') {
                Some((d, f)) => (PathBuf::from(d), f.trim_start_matches('*').to_string()),
                None => continue,
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(&suffix))
                .collect();
            files.sort();
            if depth < 4 {
                for f in files {
                    read_ld_conf(&f, out, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// A shared library to pack.
#[derive(Debug, Clone)]
pub struct PackedLib {
    /// Its contents.
    pub bytes: Vec<u8>,
    /// SONAMEs it needs that are packed (or provided) too.
    pub needed: Vec<String>,
    /// Where it was read from.
    pub path: PathBuf,
}

/// Resolve the closure of non-system libraries needed by `roots` (path, needed,
/// search dirs). `vendored` maps file names in wheels' `*.libs/` directories to paths;
/// they win over system copies.
pub fn closure(
    roots: &[(PathBuf, ElfInfo)],
    vendored: &BTreeMap<String, PathBuf>,
) -> anyhow::Result<BTreeMap<String, PackedLib>> {
    let system_dirs = system_search_dirs();
    let mut out: BTreeMap<String, PackedLib> = BTreeMap::new();
    let mut work: Vec<(String, PathBuf, Vec<PathBuf>, u16)> = Vec::new();
    for (path, info) in roots {
        for n in &info.needed {
            work.push((n.clone(), path.clone(), info.search.clone(), info.machine));
        }
    }
    while let Some((soname, wanted_by, search, machine)) = work.pop() {
        if is_system_library(&soname)
            || provided_by_executable(&soname)
            || out.contains_key(&soname)
        {
            continue;
        }
        let found = vendored.get(&soname).cloned().or_else(|| {
            search
                .iter()
                .chain(system_dirs.iter())
                .map(|d| d.join(&soname))
                // As ld.so does: a library for another CPU (the build machine's, in a
                // cross build) is passed over.
                .find(|p| {
                    p.is_file()
                        && pykiln_pyconfig::foreign::elf_machine(p).is_none_or(|m| m == machine)
                })
        });
        let Some(path) = found else {
            bail!(
                "{} needs shared library {soname}, which was found neither beside it nor in the system library directories",
                wanted_by.display()
            );
        };
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        let bytes = std::fs::read(&real).with_context(|| format!("reading {}", real.display()))?;
        let info = elf_info(&real, &bytes)?;
        if let Some(actual) = info.soname.as_deref().filter(|s| *s != soname) {
            // ld.so matches DT_NEEDED against the loaded object's DT_SONAME.
            bail!(
                "{} has SONAME {actual} but {} asks for {soname}; ld.so would not match them",
                real.display(),
                wanted_by.display()
            );
        }
        for n in &info.needed {
            work.push((n.clone(), real.clone(), info.search.clone(), info.machine));
        }
        let needed = info
            .needed
            .iter()
            .filter(|n| !is_system_library(n))
            .cloned()
            .collect();
        out.insert(
            soname,
            PackedLib {
                bytes,
                needed,
                path: real,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_family_is_never_packed() {
        assert!(is_system_library("libc.so.6"));
        assert!(is_system_library("ld-linux-x86-64.so.2"));
        assert!(!is_system_library("libssl.so.3"));
        assert!(provided_by_executable("libsqlite3.so.0"));
    }

    #[test]
    fn closure_follows_needed_of_a_real_library() {
        // libssl needs libcrypto on every distro that ships OpenSSL 3.
        let dirs = system_search_dirs();
        let Some(ssl) = dirs
            .iter()
            .map(|d| d.join("libssl.so.3"))
            .find(|p| p.is_file())
        else {
            return;
        };
        let bytes = std::fs::read(&ssl).unwrap();
        let info = elf_info(&ssl, &bytes).unwrap();
        let libs = closure(&[(ssl.clone(), info)], &BTreeMap::new()).unwrap();
        assert!(libs.contains_key("libcrypto.so.3"), "{:?}", libs.keys());
    }

    #[test]
    fn a_library_for_another_cpu_is_passed_over() {
        // A cross build's search reaches the build machine's libraries: as ld.so does,
        // one of another architecture does not satisfy the need.
        let dir = tempfile::tempdir().unwrap();
        let mut head = vec![0u8; 64];
        head[..4].copy_from_slice(b"\x7fELF");
        head[4] = 2;
        head[5] = 1;
        head[6] = 1;
        head[16] = 3;
        head[18..20].copy_from_slice(&goblin::elf::header::EM_X86_64.to_le_bytes());
        head[20] = 1;
        head[52] = 64;
        std::fs::write(dir.path().join("libother.so.1"), &head).unwrap();
        let info = ElfInfo {
            soname: None,
            needed: vec!["libother.so.1".into()],
            search: vec![dir.path().to_path_buf()],
            machine: goblin::elf::header::EM_AARCH64,
        };
        let err = closure(&[(PathBuf::from("/x/_ext.so"), info)], &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs shared library libother.so.1, which was found neither"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_library_names_who_needs_it() {
        let info = ElfInfo {
            soname: None,
            needed: vec!["libdoesnotexist.so.9".into()],
            search: vec![],
            machine: 0,
        };
        let err = closure(&[(PathBuf::from("/x/_ext.so"), info)], &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/x/_ext.so") && err.contains("libdoesnotexist.so.9"),
            "{err}"
        );
    }
}
