//! The oldest glibc the binary will run on, predicted at build time.
//!
//! The executable does not exist yet when a build script runs, so its requirement is
//! predicted: every symbol libpython leaves undefined gets the default version it has
//! in the build machine's glibc (which the linker will record), plus
//! `__libc_start_main`, which every program references. Packed native code carries
//! its own requirements. `--pykiln info` reads the real ones from the finished binary.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use pykiln_glibc::GlibcVersion;
use sha2::{Digest as _, Sha256};

/// A predicted requirement and what needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    /// The oldest glibc that can run the binary.
    pub version: GlibcVersion,
    /// The symbol or file that needs it.
    pub needed_by: String,
}

impl Floor {
    fn raise(slot: &mut Option<Floor>, version: GlibcVersion, needed_by: impl FnOnce() -> String) {
        if slot.as_ref().is_none_or(|f| version > f.version) {
            *slot = Some(Floor {
                version,
                needed_by: needed_by(),
            });
        }
    }

    /// Long-lived distributions with an older glibc than this floor (down to `above`).
    fn rules_out(&self, above: Option<GlibcVersion>) -> Vec<&'static str> {
        // glibc of long-lived distributions, oldest first.
        const DISTROS: &[(&str, u32)] = &[
            ("RHEL 8", 28),
            ("Debian 11", 31),
            ("Ubuntu 20.04", 31),
            ("RHEL 9", 34),
            ("Amazon Linux 2023", 34),
            ("Ubuntu 22.04", 35),
            ("Debian 12", 36),
            ("Ubuntu 24.04", 39),
        ];
        DISTROS
            .iter()
            .filter(|(_, minor)| {
                let v = GlibcVersion {
                    major: 2,
                    minor: *minor,
                };
                v < self.version && above.is_none_or(|a| v >= a)
            })
            .map(|(d, _)| *d)
            .collect()
    }
}

/// The requirement of the packed native files, gathered as they are packed.
#[derive(Debug, Default)]
pub struct Natives(Option<Floor>);

impl Natives {
    /// Take one native file (extension module or shared library) into account.
    pub fn note(&mut self, name: &str, elf: &[u8]) {
        if let Ok(Some(v)) = pykiln_glibc::required(elf) {
            Floor::raise(&mut self.0, v, || format!("packed {name}"));
        }
    }
}

/// The predicted requirements: the executable's (to start at all) and the packed
/// native files' (to load each of them).
#[derive(Debug, Clone, Default)]
pub struct Prediction {
    /// What the executable will need.
    pub executable: Option<Floor>,
    /// What the packed native files need.
    pub natives: Option<Floor>,
}

impl Prediction {
    /// The newer of the two.
    pub fn overall(&self) -> Option<&Floor> {
        match (&self.executable, &self.natives) {
            (Some(e), Some(n)) => Some(if n.version > e.version { n } else { e }),
            (e, n) => e.as_ref().or(n.as_ref()),
        }
    }

    /// One line for the build's output, naming the common distributions ruled out.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(e) = &self.executable {
            // A link against an old glibc's symbols names no one symbol.
            let why = if e.needed_by.starts_with(LINKED_AGAINST) {
                e.needed_by.clone()
            } else {
                format!("newest versioned symbol: {}", e.needed_by)
            };
            let mut s = format!("the binary needs glibc >= {} ({why})", e.version);
            let out = e.rules_out(None);
            if !out.is_empty() {
                s.push_str(&format!("; it will not start on {}", out.join(", ")));
            }
            parts.push(s);
        }
        if let Some(n) = &self.natives {
            let exe = self.executable.as_ref().map(|e| e.version);
            if exe.is_none_or(|e| n.version > e) {
                let out = n.rules_out(exe);
                let mut s = format!("{} needs glibc >= {}", n.needed_by, n.version);
                if !out.is_empty() {
                    s.push_str(&format!(": code that loads it fails on {}", out.join(", ")));
                }
                parts.push(s);
            }
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// How [`linked_against`] names what needs its floor.
const LINKED_AGAINST: &str = "linked against";

/// The prediction for an executable linked by zig against glibc `linked_against`
/// (pykiln's own interpreter, pykiln-python): that version is the floor by
/// construction, since the link sees only the symbols that version has.
pub fn linked_against(linked_against: &str, natives: Natives) -> Option<Prediction> {
    let version = GlibcVersion::from_tag(&format!("GLIBC_{linked_against}"))?;
    Some(Prediction {
        executable: Some(Floor {
            version,
            needed_by: format!("{LINKED_AGAINST} glibc {linked_against} by zig"),
        }),
        natives: natives.0,
    })
}

/// Predict the binary's glibc floor from the static libraries linked in (libpython
/// first, then those it needs that are linked statically) and the packed native files.
/// The static libraries' part (reading a ~45 MB libpython, ~140 ms) is cached under
/// `cache/glibc`, keyed by the files it was computed from.
pub fn predict(
    static_libraries: &[PathBuf],
    natives: Natives,
    cache: &Path,
) -> anyhow::Result<Prediction> {
    // The glibc libraries whose symbols the executable may bind to.
    let hosts: Vec<PathBuf> = pykiln_glibc::FAMILY
        .iter()
        .filter(|m| m.glibc)
        .filter_map(|m| host_library(m.soname))
        .collect();
    let mut h = Sha256::new();
    for p in static_libraries.iter().chain(&hosts) {
        h.update(p.as_os_str().as_encoded_bytes());
        if let Ok(m) = std::fs::metadata(p) {
            h.update(m.len().to_le_bytes());
            h.update(format!("{:?}", m.modified().ok()));
        }
    }
    let memo = cache.join("glibc").join(crate::hex(&h.finalize()[..16]));
    let executable = match std::fs::read_to_string(&memo)
        .ok()
        .and_then(|t| parse_memo(&t))
    {
        Some(f) => {
            crate::cache::touch(&memo);
            Some(f)
        }
        None => {
            let f = executable_floor(static_libraries, &hosts)?;
            if let Some(f) = &f {
                std::fs::create_dir_all(cache.join("glibc"))?;
                crate::cache::write_atomic(
                    &memo,
                    format!("{}\n{}\n", f.version, f.needed_by).as_bytes(),
                )?;
            }
            f
        }
    };
    Ok(Prediction {
        executable,
        natives: natives.0,
    })
}

fn parse_memo(text: &str) -> Option<Floor> {
    let (version, needed_by) = text.trim_end().split_once('\n')?;
    Some(Floor {
        version: GlibcVersion::from_tag(&format!("GLIBC_{version}"))?,
        needed_by: needed_by.to_string(),
    })
}

/// The newest default glibc version among the symbols the static libraries leave
/// undefined (and `__libc_start_main`), in the host libraries `hosts`.
fn executable_floor(
    static_libraries: &[PathBuf],
    hosts: &[PathBuf],
) -> anyhow::Result<Option<Floor>> {
    let mut floor = None;
    let mut undefined = std::collections::BTreeSet::new();
    for path in static_libraries {
        let lib = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        undefined.extend(
            pykiln_glibc::undefined_symbols(&lib)
                .with_context(|| format!("reading the symbols of {}", path.display()))?,
        );
    }
    undefined.insert("__libc_start_main".to_string());
    for path in hosts {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let defaults = pykiln_glibc::default_versions(&bytes)
            .with_context(|| format!("reading the symbol versions of {}", path.display()))?;
        for sym in &undefined {
            if let Some(v) = defaults.get(sym) {
                Floor::raise(&mut floor, *v, || format!("{sym}@GLIBC_{v}"));
            }
        }
    }
    Ok(floor)
}

/// Where the C compiler finds a library (`cc -print-file-name`).
fn host_library(name: &str) -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = std::process::Command::new(cc)
        .arg(format!("-print-file-name={name}"))
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Without a match cc prints the bare name back.
    path.is_absolute().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zig_link_is_described_by_its_floor() {
        let p = linked_against("2.17", Natives::default()).unwrap();
        assert_eq!(
            p.describe().unwrap(),
            "the binary needs glibc >= 2.17 (linked against glibc 2.17 by zig)"
        );
        assert!(linked_against("seventeen", Natives::default()).is_none());
    }

    #[test]
    fn the_libpython_part_is_remembered() {
        let f = Floor {
            version: GlibcVersion {
                major: 2,
                minor: 35,
            },
            needed_by: "hypot@GLIBC_2.35".into(),
        };
        let text = format!("{}\n{}\n", f.version, f.needed_by);
        assert_eq!(parse_memo(&text), Some(f));
        assert_eq!(parse_memo("garbage"), None);
    }

    #[test]
    fn the_description_names_what_is_ruled_out() {
        let p = Prediction {
            executable: Some(Floor {
                version: GlibcVersion {
                    major: 2,
                    minor: 35,
                },
                needed_by: "hypot@GLIBC_2.35".into(),
            }),
            natives: Some(Floor {
                version: GlibcVersion {
                    major: 2,
                    minor: 36,
                },
                needed_by: "packed libcrypt.so.1".into(),
            }),
        };
        let d = p.describe().unwrap();
        assert!(
            d.contains(">= 2.35") && d.contains("hypot@GLIBC_2.35"),
            "{d}"
        );
        let (start, load) = d.split_once("libcrypt").unwrap();
        assert!(
            start.contains("RHEL 9")
                && start.contains("Debian 11")
                && !start.contains("Ubuntu 22.04"),
            "{d}"
        );
        assert!(
            load.contains("Ubuntu 22.04") && !load.contains("RHEL 9"),
            "{d}"
        );
        assert_eq!(p.overall().unwrap().version.minor, 36);
    }
}
