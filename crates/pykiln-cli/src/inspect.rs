//! `pykiln inspect BIN`: what is inside a pykiln binary, read from the file (never
//! run): versions, entry point, size and license per distribution, on-disk views, the
//! glibc it needs. Works on CLI-built binaries (appended archive) and cargo-built ones
//! (archive embedded in read-only data).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use pykiln_archive::{Archive, EntryKind, Manifest};
use serde::Serialize;

/// The report, also printed as JSON with `--json`.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The file inspected.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// `appended` (CLI-built) or `embedded` (cargo-built).
    pub archive_kind: &'static str,
    /// Where the archive is in the file.
    pub archive_offset: u64,
    /// Archive length in bytes.
    pub archive_size: u64,
    /// Versions of the runtime (from its stamp) and the packed Python.
    pub pykiln_version: Option<String>,
    /// Python linked into the runtime.
    pub python_version: Option<String>,
    /// Python the archive's bytecode is for.
    pub archive_python_version: String,
    /// SQLite linked into the runtime.
    pub sqlite_version: Option<String>,
    /// The application.
    pub app: Option<pykiln_archive::AppInfo>,
    /// Entries by kind.
    pub counts: BTreeMap<String, usize>,
    /// Packed distributions with their stored size, largest first; then the standard
    /// library and pykiln's own entries.
    pub distributions: Vec<DistSize>,
    /// Packages given an on-disk file view.
    pub on_disk: Vec<pykiln_archive::OnDiskGroup>,
    /// Native images served file-backed from the per-user cache at run time (written
    /// there on the first start), with their sizes; the others load from memory.
    pub file_backed_native: Vec<FileBacked>,
    /// Oldest glibc it starts on.
    pub glibc: Option<Glibc>,
    /// The Rust target triple it runs on (from its ELF header).
    pub target: Option<&'static str>,
}

/// A native image served file-backed from the per-user cache.
#[derive(Debug, Serialize)]
pub struct FileBacked {
    /// `extension:<module>` or `shared-library:<SONAME>`.
    pub key: String,
    /// Its size once decompressed (what the cache holds).
    pub size: u64,
}

/// One distribution's share of the archive.
#[derive(Debug, Serialize)]
pub struct DistSize {
    /// Name (or "Python standard library", "pykiln").
    pub name: String,
    /// Version, if a distribution.
    pub version: Option<String>,
    /// `License-Expression`, `License` or the license classifier of its METADATA.
    pub license: Option<String>,
    /// Bytes as stored (compressed) in the archive.
    pub stored: u64,
    /// Entries.
    pub entries: usize,
}

/// The glibc requirement.
#[derive(Debug, Serialize)]
pub struct Glibc {
    /// Oldest glibc version the binary and its packed native code run on.
    pub minimum: String,
    /// What needs it.
    pub needed_by: String,
    /// What the executable alone needs.
    pub executable: Option<String>,
}

/// Read `path` and describe it.
pub fn inspect(path: &Path) -> anyhow::Result<Inspection> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: mapped read-only for the duration of this call; a concurrent writer could
    // change what we read, never memory safety of the checks below (they copy out).
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    let bytes: &[u8] = &map;
    let appended = pykiln_archive::trailer::appended(bytes);
    if let Err(e @ pykiln_archive::trailer::TrailerError::Checksum { .. }) = &appended {
        bail!("{}: {e}", path.display());
    }
    let crate::release::Packed {
        offset,
        len: archive_len,
        archive,
        manifest,
    } = crate::release::archive_of(path, bytes)?;
    let stamp: BTreeMap<String, String> = pykiln_archive::stamp::find(bytes)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let counts = archive
        .counts()
        .into_iter()
        .map(|(k, n)| (k.name().to_string(), n))
        .collect();
    let exe_glibc = pykiln_glibc::required(bytes).ok().flatten();
    let glibc = glibc(&manifest, exe_glibc);
    Ok(Inspection {
        file: path.display().to_string(),
        size: bytes.len() as u64,
        archive_kind: if appended.is_ok() {
            "appended"
        } else {
            "embedded"
        },
        archive_offset: offset as u64,
        archive_size: archive_len as u64,
        pykiln_version: stamp.get("pykiln").cloned(),
        python_version: stamp.get("python").cloned(),
        archive_python_version: manifest.python_version.clone(),
        sqlite_version: stamp.get("sqlite").cloned(),
        app: manifest.app.clone(),
        counts,
        distributions: sizes(&archive, &manifest),
        on_disk: manifest.on_disk.clone(),
        file_backed_native: file_backed(&archive, &manifest),
        glibc,
        target: crate::release::target_triple(bytes),
    })
}

fn file_backed(archive: &Archive<'_>, manifest: &Manifest) -> Vec<FileBacked> {
    let mut out: Vec<FileBacked> = manifest
        .file_backed_native
        .keys()
        .map(|key| {
            let size = pykiln_archive::parse_file_backed_key(key)
                .and_then(|(kind, name)| archive.find(kind, name.as_bytes()))
                .map_or(0, |e| e.raw_len() as u64);
            FileBacked {
                key: key.clone(),
                size,
            }
        })
        .collect();
    out.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.key.cmp(&b.key)));
    out
}

/// The glibc floor of a binary: its packed native code's or the executable's.
pub fn glibc(manifest: &Manifest, exe: Option<pykiln_glibc::GlibcVersion>) -> Option<Glibc> {
    let parse = |s: &str| -> Option<(u32, u32)> {
        let (a, b) = s.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let executable = exe.map(|v| v.to_string());
    // The packed native code's floor, when it is above the executable's.
    let natives = manifest
        .build
        .get("min_glibc")
        .filter(|n| executable.as_ref().is_none_or(|e| parse(n) > parse(e)));
    let (minimum, needed_by) = match (natives, &executable) {
        (Some(n), _) => (
            n.clone(),
            manifest
                .build
                .get("min_glibc_needed_by")
                .cloned()
                .unwrap_or_default(),
        ),
        (None, Some(e)) => (e.clone(), "the executable".to_string()),
        (None, None) => return None,
    };
    Some(Glibc {
        minimum,
        needed_by,
        executable,
    })
}

/// The license a METADATA file declares.
fn license(metadata: &str) -> Option<String> {
    let mut classifier = None;
    let mut plain = None;
    for line in metadata.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("License-Expression:") {
            return Some(v.trim().to_string());
        }
        if let Some(v) = line.strip_prefix("License:") {
            let v = v.trim();
            // Some put the whole license text here; only a name is useful.
            if !v.is_empty() && v.len() <= 60 && plain.is_none() {
                plain = Some(v.to_string());
            }
        }
        if let Some(v) = line.strip_prefix("Classifier: License :: ") {
            let name = v.rsplit(" :: ").next().unwrap_or(v).trim();
            classifier.get_or_insert_with(|| name.to_string());
        }
    }
    plain.or(classifier)
}

/// Where an entry would be in site-packages (the paths RECORD lists).
fn entry_path(e: &pykiln_archive::Entry<'_>) -> Option<String> {
    let key = e.key_lossy();
    match e.kind() {
        EntryKind::Module => {
            let base = key.replace('.', "/");
            Some(if e.is_package() {
                format!("{base}/__init__.py")
            } else {
                format!("{base}.py")
            })
        }
        EntryKind::Extension => {
            let file = e.aux().next()?;
            let parent = key.rsplit_once('.').map(|(p, _)| p.replace('.', "/"));
            Some(match parent {
                Some(p) => format!("{p}/{file}"),
                None => file.to_string(),
            })
        }
        EntryKind::Resource => {
            let (pkg, rel) = key.split_once('\0')?;
            Some(format!("{}/{rel}", pkg.replace('.', "/")))
        }
        _ => None,
    }
}

/// Stored bytes per distribution: entries are matched to the files each RECORD lists;
/// modules under a dist-info's top_level.txt without a RECORD (the app's) go to it; the
/// rest is the standard library.
fn sizes(archive: &Archive<'_>, manifest: &Manifest) -> Vec<DistSize> {
    // dist-info dir → (name, version, license)
    let mut dists: BTreeMap<String, (String, String, Option<String>)> = BTreeMap::new();
    let mut by_path: BTreeMap<String, String> = BTreeMap::new();
    let mut by_basename: BTreeMap<String, String> = BTreeMap::new();
    let mut tops: BTreeMap<String, String> = BTreeMap::new();
    for e in archive
        .entries()
        .filter(|e| e.kind() == EntryKind::DistFile)
    {
        let key = e.key_lossy();
        let Some((dir, file)) = key.split_once('\0') else {
            continue;
        };
        let Ok(bytes) = e.read() else { continue };
        let text = String::from_utf8_lossy(&bytes);
        match file {
            "METADATA" => {
                let field = |name: &str| {
                    text.lines()
                        .take_while(|l| !l.is_empty())
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_string())
                };
                dists.insert(
                    dir.to_string(),
                    (
                        field("Name:").unwrap_or_else(|| dir.to_string()),
                        field("Version:").unwrap_or_default(),
                        license(&text),
                    ),
                );
            }
            "RECORD" => {
                for line in text.lines() {
                    let path = line.split(',').next().unwrap_or("");
                    if path.is_empty() || path.starts_with("..") {
                        continue;
                    }
                    by_path.insert(path.to_string(), dir.to_string());
                    if let Some(base) = path.rsplit('/').next() {
                        by_basename.insert(base.to_string(), dir.to_string());
                    }
                }
            }
            "top_level.txt" => {
                for t in text.lines().map(str::trim).filter(|t| !t.is_empty()) {
                    tops.entry(t.to_string()).or_insert_with(|| dir.to_string());
                }
            }
            _ => {}
        }
    }
    // Only distributions without a RECORD claim modules by top-level name (the app's
    // generated dist-info): a RECORD is exact.
    let recorded: BTreeSet<&String> = by_path.values().collect();
    tops.retain(|_, d| !recorded.contains(d));

    const STDLIB: &str = "\0stdlib";
    const PYKILN: &str = "\0pykiln";
    const SYSTEM: &str = "\0system";
    let mut totals: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for e in archive.entries() {
        let owner = match e.kind() {
            EntryKind::Manifest | EntryKind::Dictionary => PYKILN.to_string(),
            EntryKind::DistFile => e
                .key_lossy()
                .split_once('\0')
                .map(|(d, _)| d.to_string())
                .unwrap_or_default(),
            EntryKind::SharedLib => by_basename
                .get(&*e.key_lossy())
                .cloned()
                .or_else(|| {
                    // Auditwheel renames vendored libraries (libfoo-1a2b3c.so.1); the
                    // SONAME keeps the hash, so try the basename RECORD lists.
                    by_basename
                        .iter()
                        .find(|(b, _)| b.starts_with(&*e.key_lossy()))
                        .map(|(_, d)| d.clone())
                })
                .unwrap_or_else(|| SYSTEM.to_string()),
            _ => {
                let path = entry_path(&e);
                let top = e
                    .key_lossy()
                    .split(['.', '\0'])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                path.and_then(|p| by_path.get(&p).cloned())
                    .or_else(|| tops.get(&top).cloned())
                    .unwrap_or_else(|| STDLIB.to_string())
            }
        };
        let t = totals.entry(owner).or_default();
        t.0 += (e.stored_len() + e.stored_source_len()) as u64;
        t.1 += 1;
    }
    let mut out: Vec<DistSize> = totals
        .into_iter()
        .map(|(owner, (stored, entries))| match owner.as_str() {
            STDLIB => DistSize {
                name: "Python standard library".into(),
                version: Some(manifest.python_version.clone()),
                license: Some("PSF-2.0".into()),
                stored,
                entries,
            },
            SYSTEM => DistSize {
                name: "shared libraries from the build machine (for the standard library's extensions)"
                    .into(),
                version: None,
                license: None,
                stored,
                entries,
            },
            PYKILN => DistSize {
                name: "pykiln (manifest, zstd dictionary)".into(),
                version: None,
                license: None,
                stored,
                entries,
            },
            dir => {
                let (name, version, license) = dists.get(dir).cloned().unwrap_or_else(|| {
                    (dir.trim_end_matches(".dist-info").to_string(), String::new(), None)
                });
                DistSize {
                    name,
                    version: (!version.is_empty()).then_some(version),
                    license,
                    stored,
                    entries,
                }
            }
        })
        .collect();
    out.sort_by(|a, b| b.stored.cmp(&a.stored).then(a.name.cmp(&b.name)));
    out
}

/// Megabytes with one decimal.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The report as plain text lines; `top` limits the distribution list (0: all).
pub fn render(i: &Inspection, top: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} ({} archive of {} at byte offset {})",
        i.file,
        mb(i.size),
        i.archive_kind,
        mb(i.archive_size),
        i.archive_offset
    );
    if let Some(app) = &i.app {
        let _ = writeln!(
            s,
            "  app           {} {} (entry point {})",
            app.name, app.version, app.entry_point
        );
    }
    let v = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
    let _ = writeln!(
        s,
        "  versions      pykiln {}, Python {} (bytecode for {}), SQLite {}",
        v(&i.pykiln_version),
        v(&i.python_version),
        i.archive_python_version,
        v(&i.sqlite_version)
    );
    if let Some(g) = &i.glibc {
        let _ = writeln!(
            s,
            "  glibc         >= {} (needed by {}){}",
            g.minimum,
            g.needed_by,
            i.target.map(|t| format!(", {t}")).unwrap_or_default()
        );
    }
    let n = |k: &str| i.counts.get(k).copied().unwrap_or(0);
    let _ = writeln!(
        s,
        "  contents      {} modules, {} extension modules, {} shared libraries, {} data files, {} on-disk views",
        n("module"),
        n("extension"),
        n("shared-library"),
        n("resource"),
        i.on_disk.len()
    );
    for g in &i.on_disk {
        let _ = writeln!(
            s,
            "  on-disk view  {} ({}): {}",
            g.name,
            g.tops.join(", "),
            g.reason
        );
    }
    if !i.file_backed_native.is_empty() {
        let total: u64 = i.file_backed_native.iter().map(|f| f.size).sum();
        // Largest first; by default every image is there, so only the biggest are named.
        const NAMED: usize = 5;
        let names: Vec<&str> = i
            .file_backed_native
            .iter()
            .take(NAMED)
            .map(|f| f.key.split_once(':').map_or(f.key.as_str(), |p| p.1))
            .collect();
        let more = i.file_backed_native.len().saturating_sub(NAMED);
        let _ = writeln!(
            s,
            "  native cache  {} images, {} file-backed from the user's cache: {}{}",
            i.file_backed_native.len(),
            mb(total),
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    let shown = if top == 0 {
        i.distributions.len()
    } else {
        top.min(i.distributions.len())
    };
    let _ = writeln!(s, "  size by distribution (stored, compressed):");
    for d in &i.distributions[..shown] {
        let _ = writeln!(
            s,
            "    {:>9}  {}{}{}",
            mb(d.stored),
            d.name,
            d.version
                .as_ref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default(),
            d.license
                .as_ref()
                .map(|l| format!("  [{l}]"))
                .unwrap_or_default()
        );
    }
    if shown < i.distributions.len() {
        let rest: u64 = i.distributions[shown..].iter().map(|d| d.stored).sum();
        let _ = writeln!(
            s,
            "    {:>9}  {} more",
            mb(rest),
            i.distributions.len() - shown
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licenses_come_from_expression_field_or_classifier() {
        assert_eq!(
            license("Name: a\nLicense-Expression: MIT OR Apache-2.0\nLicense: x\n").as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(
            license("Name: a\nClassifier: License :: OSI Approved :: BSD License\n").as_deref(),
            Some("BSD License")
        );
        let long = format!("License: {}\n", "x".repeat(200));
        assert_eq!(license(&long), None);
        assert_eq!(license("Name: a\n\nLicense: MIT\n"), None);
    }
}
