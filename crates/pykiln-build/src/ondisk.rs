//! Choosing the distributions that get an on-disk file view.
//!
//! A packed module's `__file__` names a path under the executable, where nothing
//! exists. Code that finds its files through `importlib.resources` or `pkgutil.get_data`
//! is served from memory; code that builds a path from `__file__` (`with_name`,
//! `.parent.parent`, `dirname(dirname(...))`, a helper in another module, a C library
//! given the path) needs a real directory. For those distributions the runtime writes
//! the distribution's files once to a content-addressed directory in the user's cache,
//! laid out as in site-packages, and points their `__file__`/`__path__` there (see the
//! runtime's `fileview`); bytecode still comes from the archive.
//!
//! Guessing from source text which code builds such paths keeps missing patterns, so
//! the default is the one that works when a guess is wrong: **every distribution that
//! ships runtime data files** — beside a module, in a subdirectory, or at the import
//! root (RECORD says whose) — gets a view of all its top-level names (any module may
//! reach any of its files). A distribution made only of code needs no path, unless
//!
//! - Python's own parser finds one of its modules listing the directory it lives in or
//!   opening a file by a path built from `__file__` (`python/paths.py`, see
//!   [`crate::pathuse`]): plugin discovery, reading its own sources; or
//! - the build's import of the server (the start-up recording) saw it open or list one
//!   of its own files by path (an audit hook: evidence beats analysis);
//!
//! then the view covers the packages found. Module sources go into a view (are packed)
//! only where code lists its package's directory ([`Plan::packs_source`]).
//!
//! `[tool.pykiln] on-disk` adds whole distributions, `in-memory` removes them. What
//! never counts as runtime data: type stubs, C sources and headers, static libraries,
//! pkg-config and CMake files, docs and licence texts, and files under a package's
//! test, example and build-tool directories (they are still part of a view that a
//! distribution gets for another reason).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pykiln_archive::{OnDiskGroup, within_package};
use sha2::{Digest as _, Sha256};

use crate::collect::{Collected, Layer};
use crate::pathuse::Finding;
use crate::project::{Project, normalize};

/// Files that are not runtime data: type stubs, C sources and headers, build inputs
/// (pkg-config and CMake files, Cython hashes, Windows build scripts), docs and licence
/// texts, hidden files.
fn is_build_artifact(file: &str) -> bool {
    let base = file.rsplit('/').next().unwrap_or(file);
    let upper = base.to_ascii_uppercase();
    const EXT: &[&str] = &[
        ".pyi", ".pxd", ".pyx", ".pxi", ".h", ".hpp", ".c", ".cc", ".cpp", ".f", ".f90", ".md",
        ".rst", ".a", ".typed", ".pc", ".cmake", ".la", ".lib", ".asm", ".cmd", ".bat", ".ps1",
        ".obj", ".dll", ".exe", ".pdb",
    ];
    let build_dir = file.split('/').any(|part| {
        part.starts_with('.')
            || part.contains("pkgconfig")
            || part.contains("pkg-config")
            || part.eq_ignore_ascii_case("cmake")
    });
    // Text whose name says it is documentation: `LICENSE`, numpy's `ma/API_CHANGES.txt`,
    // fontTools' `table_API_readme.txt`, SQLAlchemy's `type_migration_guidelines.txt`.
    let text = ["", ".txt", ".html", ".htm", ".md", ".rst", ".pdf"]
        .iter()
        .any(|e| match base.rsplit_once('.') {
            Some((_, ext)) => e.strip_prefix('.') == Some(ext),
            None => e.is_empty(),
        });
    let doc = [
        "LICENSE",
        "LICENCE",
        "COPYING",
        "NOTICE",
        "AUTHORS",
        "README",
        "CHANGELOG",
        "CHANGES",
        "HISTORY",
        "CONTRIBUTORS",
        "CREDITS",
        "THANKS",
        "GUIDELINES",
    ]
    .iter()
    .any(|p| upper.contains(p));
    const BUILD_FILES: &[&str] = &[
        "py.typed",
        "meson.build",
        "CMakeLists.txt",
        "Makefile",
        "pyproject.toml",
        "setup.cfg",
    ];
    build_dir
        || BUILD_FILES.contains(&base)
        || EXT.iter().any(|e| base.ends_with(e))
        || (doc && text)
}

/// Test suites, benchmarks and examples shipped inside a package do not run in a server;
/// neither do build tools shipped inside runtime packages (`numpy.distutils`,
/// `numpy.f2py`), which compile C or Fortran and need a compiler the target lacks.
/// `path` is a dotted module name or a slash-separated file path.
fn is_dev_only(path: &str) -> bool {
    // `_examples` (numpy.random) as well as `examples`.
    path.split(['.', '/']).any(|p| {
        matches!(
            p.trim_start_matches('_'),
            "tests"
                | "test"
                | "testing"
                | "benchmarks"
                | "bench"
                | "examples"
                | "docs"
                | "doc"
                | "distutils"
                | "f2py"
                | "__pycache__"
        )
    })
}

fn top_of(dotted: &str) -> &str {
    dotted.split('.').next().unwrap_or(dotted)
}

/// Top-level name of a RECORD path: the package directory (`pkg/x.py` → `pkg`), the
/// module (`mod.cpython-311-….so` → `mod`), or a data file installed at the import root
/// itself (`slide_layout_templates.json`), which belongs to its distribution's view.
fn record_top(path: &str) -> Option<String> {
    let first = path.split('/').next()?;
    if first.is_empty()
        || first.starts_with("..")
        || first.ends_with(".dist-info")
        || first.ends_with(".data")
        || first == "__pycache__"
    {
        return None;
    }
    if path.contains('/') {
        return Some(first.to_string());
    }
    if first.ends_with(".py") || first.ends_with(".so") {
        return first.split('.').next().map(str::to_string);
    }
    // `.pth` files are read by the build (their import lines), not by the server.
    (!first.ends_with(".pth")).then(|| first.to_string())
}

/// A file the build's import of the server touched by path (the start-up recording's
/// audit hook): the event and the path relative to the import root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Touch {
    /// `open`, `os.listdir`, `os.scandir`, `glob.glob`, `ctypes.dlopen`, `exec`.
    pub event: String,
    /// Relative to the import root it is under (`pkg/data/x.json`).
    pub path: String,
}

/// What the build knows of how the server's code reaches its files.
#[derive(Default)]
pub struct Evidence {
    /// Python's parser on the candidates ([`candidates`]), by module.
    pub findings: BTreeMap<String, Vec<Finding>>,
    /// What the start-up recording saw opened or listed by path.
    pub touched: Vec<Touch>,
}

/// Result of the analysis.
pub struct Plan {
    /// Groups for the manifest.
    pub groups: Vec<OnDiskGroup>,
    /// Every prefix of a group whose view holds its modules' sources too (see
    /// [`Plan::packs_source`]).
    pub source_prefixes: BTreeSet<String>,
    /// Findings for the user.
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether module `name`'s source is packed for its view: where code lists its own
    /// package's directory (found by the parser or at the build's import) — plugin
    /// discovery, which looks for `.py` files — or `[tool.pykiln] on-disk` asks for the
    /// directory as a venv has it. Other views hold data and native files: what code
    /// reaches by path; sources there would be megabytes written for nothing (pandas:
    /// 24 MB in 1,440 files).
    pub fn packs_source(&self, name: &str) -> bool {
        self.source_prefixes.iter().any(|p| within_package(name, p))
    }
}

/// Normalised distribution name → its top-level names (from RECORD: packages, modules
/// and import-root data files); the app is one more distribution, under its own name,
/// unless it packs no packages of its own (a build from requirements).
pub fn distributions(
    collected: &Collected,
    project: &Project,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut dists: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ((dir, file), path) in &collected.dist_files {
        if file != "RECORD" {
            continue;
        }
        let name = normalize(dir.split('-').next().unwrap_or(dir));
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let tops = dists.entry(name).or_default();
        for line in text.lines() {
            let rel = line.split(',').next().unwrap_or_default();
            tops.extend(record_top(rel));
        }
    }
    // Extended, never replaced: `--from NAME` names the project after the distribution
    // it runs, which packs no packages of its own; replacing would lose that
    // distribution's files.
    let app: BTreeSet<String> = project
        .packages
        .iter()
        .map(|(n, _)| top_of(n).to_string())
        .collect();
    if !app.is_empty() {
        dists
            .entry(normalize(&project.name))
            .or_default()
            .extend(app);
    }
    dists
}

/// The top-level packages `[tool.pykiln] sources` names (distributions or import names),
/// and a warning for each entry that names nothing packed. `dists` is
/// [`distributions`]'s.
pub fn source_tops(
    collected: &Collected,
    project: &Project,
    dists: &BTreeMap<String, BTreeSet<String>>,
    warnings: &mut Vec<String>,
) -> BTreeSet<String> {
    let mut tops = BTreeSet::new();
    for wanted in &project.sources {
        if let Some(t) = dists.get(&normalize(wanted)) {
            tops.extend(t.iter().cloned());
        } else if collected.modules.keys().any(|m| top_of(m) == wanted) {
            tops.insert(wanted.clone());
        } else {
            warnings.push(format!(
                "[tool.pykiln] sources names '{wanted}', which is neither a packed distribution nor a packed package"
            ));
        }
    }
    tops
}

/// Top-level name → distribution.
fn owners(dists: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<&str, &str> {
    dists
        .iter()
        .flat_map(|(d, tops)| tops.iter().map(move |t| (t.as_str(), d.as_str())))
        .collect()
}

/// Path of a resource relative to the import root.
fn resource_path(pkg: &str, rel: &str) -> String {
    if pkg.is_empty() {
        rel.to_string()
    } else {
        format!("{}/{rel}", pkg.replace('.', "/"))
    }
}

/// Each distribution's runtime data files (paths relative to the import root, sorted)
/// and their total size.
fn runtime_data(
    collected: &Collected,
    dist_of: &BTreeMap<&str, &str>,
) -> BTreeMap<String, (Vec<String>, u64)> {
    let mut out: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
    for ((pkg, rel), path) in &collected.resources {
        let full = resource_path(pkg, rel);
        let top = full.split('/').next().unwrap_or_default();
        let Some(dist) = dist_of.get(top) else {
            continue;
        };
        if is_build_artifact(rel) || is_dev_only(&full) {
            continue;
        }
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let entry = out.entry(dist.to_string()).or_default();
        entry.0.push(full);
        entry.1 += size;
    }
    out
}

/// Modules worth reading with Python's parser: those that mention a location
/// (`__file__`, `__path__`, `__spec__`), outside the standard library, tests and build
/// tools. Distributions with runtime data get a view anyway; their findings say why it
/// is needed.
pub fn candidates(
    collected: &Collected,
    dists: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, PathBuf> {
    let dist_of = owners(dists);
    let mut out = BTreeMap::new();
    for (name, m) in &collected.modules {
        if !dist_of.contains_key(top_of(name)) || m.layer == Layer::Stdlib || is_dev_only(name) {
            continue;
        }
        let Ok(src) = std::fs::read(&m.path) else {
            continue;
        };
        let mentions = [&b"__file__"[..], b"__path__", b"__spec__"]
            .iter()
            .any(|pat| src.windows(pat.len()).any(|w| w == *pat));
        if mentions {
            out.insert(name.clone(), m.path.clone());
        }
    }
    out
}

/// Decide the on-disk groups of a build (`dists` is [`distributions`]'s).
pub fn plan(
    collected: &Collected,
    project: &Project,
    dists: &BTreeMap<String, BTreeSet<String>>,
    evidence: &Evidence,
) -> Plan {
    let dist_of = owners(dists);
    // Every reason found, in the order found (data, analysis, evidence), once each; and
    // which top-level names the view needs: all of them (None) for data files, which
    // any module may reach (`dirname(dirname(__file__))` crosses packages), else just
    // the packages the analysis or the evidence names: cffi's view is for its
    // recompiler, not for its `_cffi_backend` extension that every start imports.
    // And whether the view holds sources too (listings).
    type Found = (Vec<String>, Option<BTreeSet<String>>, bool);
    let mut reasons: BTreeMap<String, Found> = BTreeMap::new();
    let mut add = |dist: &str, why: String, top: Option<&str>, listing: bool| {
        let (list, tops, sources) = reasons
            .entry(dist.to_string())
            .or_insert_with(|| (Vec::new(), Some(BTreeSet::new()), false));
        if !list.contains(&why) {
            list.push(why);
        }
        *sources |= listing;
        match (top, tops.as_mut()) {
            (Some(t), Some(tops)) => {
                tops.insert(t.to_string());
            }
            (None, _) => *tops = None,
            (Some(_), None) => {}
        }
    };
    let mut warnings = Vec::new();

    for (dist, (files, size)) in runtime_data(collected, &dist_of) {
        let first = files.first().cloned().unwrap_or_default();
        let count = files.len();
        add(
            &dist,
            format!(
                "ships {count} data file{} ({}) beside its modules, e.g. {first}",
                if count == 1 { "" } else { "s" },
                human(size)
            ),
            None,
            false,
        );
    }
    for (module, found) in &evidence.findings {
        let rel = collected
            .modules
            .get(module)
            .map_or(module.as_str(), |m| m.rel.as_str());
        for f in found {
            let target = if f.whose.is_empty() {
                module.as_str()
            } else {
                f.whose.as_str()
            };
            if let Some(dist) = dist_of.get(top_of(target)) {
                add(
                    dist,
                    format!("{rel}:{} {}", f.line, f.what),
                    Some(top_of(target)),
                    f.what == crate::pathuse::LISTS,
                );
            }
        }
    }
    for t in &evidence.touched {
        let top = t.path.split('/').next().unwrap_or_default();
        if let Some(dist) = dist_of.get(top) {
            let what = match t.event.as_str() {
                "open" => "opened",
                "ctypes.dlopen" => "loaded",
                "exec" => "ran",
                _ => "listed",
            };
            add(
                dist,
                format!("{what} {} when the server was imported", t.path),
                Some(top),
                what == "listed",
            );
        }
    }
    for forced in &project.on_disk {
        let n = normalize(forced);
        if dists.contains_key(&n) {
            add(&n, "[tool.pykiln] on-disk".into(), None, true);
        } else {
            warnings.push(format!(
                "[tool.pykiln] on-disk names '{forced}', which is not a packed distribution"
            ));
        }
    }
    for kept in &project.in_memory {
        let n = normalize(kept);
        if reasons.remove(&n).is_none() && !dists.contains_key(&n) {
            warnings.push(format!(
                "[tool.pykiln] in-memory names '{kept}', which is not a packed distribution"
            ));
        }
    }

    let mut groups = Vec::new();
    let mut source_prefixes = BTreeSet::new();
    for (dist, (found, needed, sources)) in reasons {
        let Some(tops) = dists.get(&dist) else {
            continue;
        };
        let tops: BTreeSet<String> = match needed {
            None => tops.clone(),
            Some(needed) => tops.intersection(&needed).cloned().collect(),
        };
        let more = found.len().saturating_sub(3);
        let mut reason = found.into_iter().take(3).collect::<Vec<_>>().join("; ");
        if more > 0 {
            reason.push_str(&format!(" (and {more} more)"));
        }
        // Only what is packed: RECORD also names scripts, `.pth` files and modules an
        // exclude pattern left out.
        let tops: Vec<String> = tops
            .iter()
            .filter(|t| is_packed_top(collected, t))
            .cloned()
            .collect();
        if tops.is_empty() {
            continue;
        }
        groups.push(OnDiskGroup {
            id: group_id(collected, &tops, project.strip_native, sources),
            name: dist,
            tops: tops.clone(),
            reason,
        });
        if sources {
            source_prefixes.extend(tops);
        }
    }
    Plan {
        groups,
        source_prefixes,
        warnings,
    }
}

/// Whether a top-level name is packed: a module or package, an extension module, or
/// a resource (a package's data, or an import-root file or directory).
fn is_packed_top(collected: &Collected, top: &str) -> bool {
    let below = |name: &str| name == top || within_package(name, top);
    collected.modules.keys().any(|n| below(n))
        || collected.extensions.keys().any(|n| below(n))
        || collected.resources.keys().any(|(pkg, rel)| {
            if pkg.is_empty() {
                rel.split('/').next() == Some(top)
            } else {
                below(pkg)
            }
        })
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.0} kB", (bytes as f64 / 1e3).ceil())
    }
}

/// A digest of every file a group's view holds (names and contents, and whether its
/// native files are stripped, which changes them).
fn group_id(collected: &Collected, tops: &[String], strip_native: bool, sources: bool) -> String {
    let ours = |name: &str| tops.iter().any(|p| within_package(name, p));
    let mut h = Sha256::new();
    if strip_native {
        h.update(b"strip-native\0");
    }
    if sources {
        h.update(b"sources\0");
    }
    let mut add = |key: &str, path: &Path| {
        h.update(key.as_bytes());
        h.update([0]);
        if let Ok(bytes) = std::fs::read(path) {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
    };
    for (name, m) in &collected.modules {
        if ours(name) {
            add(&m.rel, &m.path);
        }
    }
    for (name, path) in &collected.extensions {
        if ours(name) {
            add(name, path);
        }
    }
    for ((pkg, rel), path) in &collected.resources {
        let owner = if pkg.is_empty() {
            rel.split('/').next().unwrap_or_default()
        } else {
            pkg
        };
        if ours(owner) {
            add(&format!("{pkg}\0{rel}"), path);
        }
    }
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    crate::hex(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_give_top_level_names() {
        assert_eq!(record_top("pkg/sub/x.py").as_deref(), Some("pkg"));
        assert_eq!(record_top("six.py").as_deref(), Some("six"));
        assert_eq!(
            record_top("_cffi_backend.cpython-311-x86_64-linux-gnu.so").as_deref(),
            Some("_cffi_backend")
        );
        assert_eq!(
            record_top("_soundfile_data/lib.so").as_deref(),
            Some("_soundfile_data")
        );
        assert_eq!(record_top("../../bin/tool"), None);
        assert_eq!(record_top("pkg-1.0.dist-info/RECORD"), None);
        assert_eq!(record_top("pkg-1.0.data/scripts/tool"), None);
        assert_eq!(record_top("distutils-precedence.pth"), None);
        // office-powerpoint-mcp-server installs its templates at the import root.
        assert_eq!(
            record_top("slide_layout_templates.json").as_deref(),
            Some("slide_layout_templates.json")
        );
    }

    #[test]
    fn build_tools_and_tests_are_not_runtime() {
        for m in [
            "numpy.f2py._backends._meson",
            "numpy.distutils.fcompiler",
            "pkg.tests.test_x",
            "numpy/_core/tests/data/umath-validation-set-README.txt",
            "numpy/random/_examples/cython/meson.build",
        ] {
            assert!(is_dev_only(m), "{m}");
        }
        for m in [
            "babel.core",
            "pytz",
            "lxml.isoschematron",
            "tokenizers.tools.visualizer",
        ] {
            assert!(!is_dev_only(m), "{m}");
        }
    }

    #[test]
    fn artifacts_are_not_data() {
        for f in [
            "py.typed",
            "x/__init__.pyi",
            "include/numpy/arrayobject.h",
            "LICENSE.txt",
            "_core/lib/pkgconfig/numpy.pc",
            "_core/lib/libnpymath.a",
            "_core/lib/npy-pkg-config/mlib.ini",
            "aiohttp/.hash/_cparser.pxd.hash",
            "greenlet/platform/setup_switch_x64_masm.cmd",
            "fontTools/ttLib/tables/table_API_readme.txt",
            "numpy/ma/API_CHANGES.txt",
            "sqlalchemy/dialects/type_migration_guidelines.txt",
            "greenlet/platform/switch_arm64_masm.obj",
            "pandas/pyproject.toml",
        ] {
            assert!(is_build_artifact(f), "{f}");
        }
        for f in [
            "locale-data/de.dat",
            "zoneinfo/Europe/Paris",
            "template.txt",
            "data.json",
            "wordlist.txt",
            "license_db.json",
        ] {
            assert!(!is_build_artifact(f), "{f}");
        }
    }
}
