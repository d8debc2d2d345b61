//! Choosing the distributions that get an on-disk file view.
//!
//! Most code reaches its data through `importlib.resources` or `pkgutil.get_data`, which
//! the archive importer serves from memory. Some code builds paths from `__file__`
//! instead (`open(os.path.join(os.path.dirname(__file__), "data.json"))`), loads a
//! bundled library with ctypes/cffi by path, or runs a bundled executable. For those
//! distributions the runtime extracts the distribution's files once to a
//! content-addressed directory and points `__file__` there; bytecode still comes from
//! the archive. This module decides which distributions need it:
//!
//! - the package holding an ELF shared library that is not an extension module (it is
//!   loaded by path) or an executable;
//! - the package of a module whose source mentions `__file__` and also names, in a
//!   string literal, a data file or directory that sits beside it;
//! - the package of a module that lists its own directory (`os.listdir`, `os.scandir`,
//!   `os.walk`, `glob`, `Path.glob`/`iterdir` on a path derived from `__file__`), as
//!   plugin discovery does: a packed package has no directory to list;
//! - plus whole distributions named in `[tool.pykiln] on-disk`, minus those in
//!   `[tool.pykiln] in-memory`.
//!
//! What never asks for a view (each a false positive seen in real distributions, kept
//! in `tests/compat`'s labelled corpus): code in a top-level `if __name__ ==
//! "__main__":` block (pycparser's `_ast_gen.py`), test suites and build tools inside a
//! package (`numpy.f2py`, `numpy.distutils`), extension modules in a directory without
//! `.py` files (protobuf's `google/_upb/_message.abi3.so`, found by the collector), and
//! shipped scripts that no module finds beside `__file__` (tqdm's `completion.sh`).
//!
//! A view covers packages (dotted prefixes), not necessarily whole distributions, so
//! `numpy.f2py._backends` can get one while the rest of numpy stays in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use pykiln_archive::{OnDiskGroup, within_package};
use sha2::{Digest as _, Sha256};

use crate::collect::{Collected, Layer};
use crate::project::{Project, normalize};

/// Files that are not runtime data: type stubs, C sources and headers, docs.
fn is_build_artifact(file: &str) -> bool {
    let base = file.rsplit('/').next().unwrap_or(file);
    let upper = base.to_ascii_uppercase();
    const EXT: &[&str] = &[
        ".pyi", ".pxd", ".pyx", ".pxi", ".h", ".hpp", ".c", ".cc", ".cpp", ".f", ".f90", ".md",
        ".rst", ".a", ".typed",
    ];
    base == "py.typed"
        || EXT.iter().any(|e| base.ends_with(e))
        || ["LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS"]
            .iter()
            .any(|p| upper.starts_with(p))
}

/// Test suites, benchmarks and examples shipped inside a package do not run in a server;
/// neither do build tools shipped inside runtime packages (`numpy.distutils`,
/// `numpy.f2py`), which compile C or Fortran and need a compiler the target lacks.
fn is_dev_only(module: &str) -> bool {
    module.split('.').any(|p| {
        matches!(
            p,
            "tests"
                | "test"
                | "testing"
                | "benchmarks"
                | "bench"
                | "examples"
                | "docs"
                | "distutils"
                | "f2py"
        )
    })
}

/// The source with its top-level `if __name__ == "__main__":` block blanked: code there
/// runs only when the file is executed as a script (pycparser's `_ast_gen.py`
/// regenerates its own sources from `_c_ast.cfg` there), never on import.
fn without_main_block(src: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut in_main = false;
    let mut found = false;
    for line in src.split_inclusive('\n') {
        let top_level = !line.starts_with([' ', '\t']) && !line.trim().is_empty();
        if top_level {
            let code = line.split('#').next().unwrap_or_default();
            let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
            in_main = matches!(
                compact.as_str(),
                "if__name__=='__main__':"
                    | "if__name__==\"__main__\":"
                    | "if'__main__'==__name__:"
                    | "if\"__main__\"==__name__:"
            );
            found |= in_main;
        }
        if !in_main {
            out.push_str(line);
        } else if line.ends_with('\n') {
            out.push('\n'); // keep line numbers for the warnings
        }
    }
    if found {
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(src)
    }
}

fn top_of(dotted: &str) -> &str {
    dotted.split('.').next().unwrap_or(dotted)
}

/// Top-level name of a RECORD path (`pkg/x.py` → `pkg`, `mod.cpython-311-….so` → `mod`).
fn record_top(path: &str) -> Option<String> {
    let first = path.split('/').next()?;
    if first.is_empty() || first.starts_with("..") || first.ends_with(".dist-info") {
        return None;
    }
    if path.contains('/') {
        return Some(first.to_string());
    }
    let stem = first.split('.').next()?;
    (first.ends_with(".py") || first.ends_with(".so")).then(|| stem.to_string())
}

/// String literals of a Python source (short strings only; good enough to spot names).
fn string_literals(src: &str) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let q = bytes[i];
        if q == b'"' || q == b'\'' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && bytes[j] != q && bytes[j] != b'\n' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            if j < bytes.len() && bytes[j] == q {
                if let Some(s) = src.get(start..j) {
                    out.insert(s);
                }
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// Calls that list the directory given as their first argument.
const LISTING_FUNCTIONS: &[&str] = &["listdir(", "scandir(", "walk(", "glob(", "iglob("];
/// Methods that list the directory they are called on.
const LISTING_METHODS: &[&str] = &[".glob(", ".rglob(", ".iterdir("];

/// The receiver of a method call ending at byte `end` of `code`: the expression
/// before it, back to a space, `=`, `[`, `,` or an unmatched `(`.
fn receiver(code: &str, end: usize) -> &str {
    let mut depth = 0i32;
    let mut start = end;
    for (i, c) in code[..end].char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth == 0 => break,
            '(' => depth -= 1,
            ' ' | '=' | '[' | ',' if depth == 0 => break,
            _ => {}
        }
        start = i;
    }
    &code[start..end]
}

/// The first line (1-based) that lists a directory derived from `__file__`: the
/// listed path (a listing function's argument, a listing method's receiver) names
/// `__file__` itself or a variable assigned from an expression that does
/// (`HERE = Path(__file__).parent`, one level of indirection).
fn lists_own_directory(src: &str) -> Option<usize> {
    let mut derived: Vec<&str> = Vec::new();
    let names_own_dir = |text: &str, derived: &[&str]| {
        text.contains("__file__")
            || derived.iter().any(|v| {
                text.match_indices(v).any(|(at, _)| {
                    let ident =
                        |c: Option<char>| c.is_some_and(|c| c == '_' || c.is_alphanumeric());
                    !ident(text[..at].chars().next_back())
                        && !ident(text[at + v.len()..].chars().next())
                })
            })
    };
    for (i, line) in src.lines().enumerate() {
        let code = line.split('#').next().unwrap_or_default();
        let function_lists = LISTING_FUNCTIONS.iter().any(|f| {
            code.match_indices(f).any(|(at, _)| {
                // `name(` as a whole name (`os.listdir(`, `listdir(`), not `.glob(`.
                let before = code[..at].chars().next_back();
                let whole = !before.is_some_and(|c| c == '_' || c.is_alphanumeric());
                let is_method =
                    f == &"glob(" && before == Some('.') && !code[..at].ends_with("glob.");
                whole && !is_method && names_own_dir(&code[at + f.len()..], &derived)
            })
        });
        let method_lists = LISTING_METHODS.iter().any(|m| {
            code.match_indices(m)
                .any(|(at, _)| names_own_dir(receiver(code, at), &derived))
        });
        if function_lists || method_lists {
            return Some(i + 1);
        }
        if names_own_dir(code, &derived) {
            // `NAME = …` (also `self.NAME = …`): NAME now stands for the directory.
            if let Some((lhs, rhs)) = code.split_once('=') {
                let lhs = lhs.trim().trim_start_matches("self.");
                if !rhs.starts_with('=')
                    && !lhs.is_empty()
                    && lhs.chars().all(|c| c == '_' || c.is_alphanumeric())
                    && rhs.contains("__file__")
                {
                    derived.push(lhs);
                }
            }
        }
    }
    None
}

/// Result of the analysis.
pub struct Plan {
    /// Groups for the manifest.
    pub groups: Vec<OnDiskGroup>,
    /// Every prefix in some group (their sources are packed, for the view).
    pub prefixes: BTreeSet<String>,
    /// Findings for the user.
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether module `name` is served from a view.
    pub fn covers(&self, name: &str) -> bool {
        self.prefixes.iter().any(|p| within_package(name, p))
    }
}

/// What a group found so far: view prefixes and the first reason.
#[derive(Default)]
struct Found {
    prefixes: BTreeSet<String>,
    reason: String,
}

impl Found {
    fn add(&mut self, prefix: &str, why: String) {
        self.prefixes.insert(prefix.to_string());
        if self.reason.is_empty() {
            self.reason = why;
        }
    }
}

/// Normalised distribution name → its top-level import names (from RECORD); the app is
/// one more distribution, under its own name.
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
    dists.insert(
        normalize(&project.name),
        project
            .packages
            .iter()
            .map(|(n, _)| top_of(n).to_string())
            .collect(),
    );
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

/// Decide the on-disk groups of a build (`dists` is [`distributions`]'s).
pub fn plan(
    collected: &Collected,
    project: &Project,
    dists: &BTreeMap<String, BTreeSet<String>>,
) -> Plan {
    let app = normalize(&project.name);
    let dist_of: BTreeMap<&str, &str> = dists
        .iter()
        .flat_map(|(d, tops)| tops.iter().map(move |t| (t.as_str(), d.as_str())))
        .collect();

    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let mut warnings = Vec::new();

    // Data files by directory (relative to the import root), and ELF/executable files.
    let mut data_dirs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ((pkg, rel), path) in &collected.resources {
        let full = if pkg.is_empty() {
            rel.clone()
        } else {
            format!("{}/{rel}", pkg.replace('.', "/"))
        };
        let top = full.split('/').next().unwrap_or_default();
        let Some(dist) = dist_of.get(top) else {
            continue;
        };
        // The package holding the file, or the import-root directory it sits in.
        let owner = if pkg.is_empty() { top } else { pkg.as_str() };
        let head = read_head(path);
        if head.starts_with(b"\x7fELF") {
            if rel.contains(".so") {
                found.entry(dist.to_string()).or_default().add(
                    owner,
                    format!("ships a shared library loaded by path: {full}"),
                );
            } else {
                found
                    .entry(dist.to_string())
                    .or_default()
                    .add(owner, format!("ships an executable: {full}"));
            }
        }
        // An executable script is data like any other: a view only when code finds it
        // beside `__file__` (tqdm ships completion.sh, but copies it out through
        // importlib.resources).
        if is_build_artifact(rel) {
            continue;
        }
        // Every directory level between the package and the file can be named.
        let parts: Vec<&str> = full.split('/').collect();
        for i in 0..parts.len().saturating_sub(1) {
            data_dirs
                .entry(parts[..=i].join("/"))
                .or_default()
                .insert(parts[i + 1].to_string());
        }
        data_dirs
            .entry(String::new())
            .or_default()
            .insert(parts[0].to_string());
    }

    // Directories that are packages: a literal naming one is a submodule reference.
    let package_dirs: BTreeSet<String> = collected
        .modules
        .iter()
        .filter(|(_, m)| m.is_package)
        .map(|(n, _)| n.replace('.', "/"))
        .collect();
    for (name, m) in &collected.modules {
        let Some(dist) = dist_of.get(top_of(name)) else {
            continue;
        };
        if m.layer == Layer::Stdlib || is_dev_only(name) {
            continue;
        }
        let Ok(src) = std::fs::read_to_string(&m.path) else {
            continue;
        };
        if !src.contains("__file__") {
            continue;
        }
        let src = without_main_block(&src);
        if !src.contains("__file__") {
            continue;
        }
        let dir = match m.rel.rsplit_once('/') {
            Some((d, _)) => d.to_string(),
            None => String::new(),
        };
        if let Some(line) = lists_own_directory(&src) {
            let why = format!("{}:{line} lists its own directory", m.rel);
            let entry = found.entry(dist.to_string()).or_default();
            if dir.is_empty() {
                // A top-level module lists the import root: only it can be viewed.
                entry.add(name, why);
            } else {
                entry.add(&dir.replace('/', "."), why);
            }
            continue;
        }
        let Some(beside) = data_dirs.get(&dir) else {
            continue;
        };
        let hit = string_literals(&src)
            .into_iter()
            .filter_map(|lit| lit.trim_matches('/').split('/').next())
            .find(|first| {
                let path = if dir.is_empty() {
                    first.to_string()
                } else {
                    format!("{dir}/{first}")
                };
                !first.is_empty() && beside.contains(*first) && !package_dirs.contains(&path)
            });
        let Some(hit) = hit else {
            continue;
        };
        let why = format!("{} opens '{hit}' relative to __file__", m.rel);
        let entry = found.entry(dist.to_string()).or_default();
        if dir.is_empty() {
            // A top-level module and an import-root data directory beside it.
            entry.add(name, why.clone());
            entry.add(hit, why);
        } else {
            entry.add(&dir.replace('/', "."), why);
        }
    }

    for forced in &project.on_disk {
        let n = normalize(forced);
        match dists.get(&n) {
            Some(tops) => {
                let entry = found.entry(n).or_default();
                for t in tops {
                    entry.add(t, "[tool.pykiln] on-disk".into());
                }
            }
            None => warnings.push(format!(
                "[tool.pykiln] on-disk names '{forced}', which is not a packed distribution"
            )),
        }
    }
    for kept in &project.in_memory {
        found.remove(&normalize(kept));
    }

    let mut groups = Vec::new();
    let mut prefixes = BTreeSet::new();
    for (dist, f) in found {
        // Drop prefixes inside other prefixes of the group.
        let tops: Vec<String> = f
            .prefixes
            .iter()
            .filter(|p| !f.prefixes.iter().any(|q| q != *p && within_package(p, q)))
            .cloned()
            .collect();
        // The app's own packages are reported like any dependency: a view is a cost
        // its author may prefer to avoid (importlib.resources needs none).
        let whose = if dist == app {
            format!("{dist} (this project)")
        } else {
            dist.clone()
        };
        warnings.push(format!(
            "{whose} looks __file__-dependent ({}); on-disk file view for: {} \
             (set [tool.pykiln] in-memory = [\"{dist}\"] to keep it in memory)",
            f.reason,
            tops.join(", ")
        ));
        groups.push(OnDiskGroup {
            id: group_id(collected, &tops, project.strip_native),
            name: dist,
            tops: tops.clone(),
            reason: f.reason,
        });
        prefixes.extend(tops);
    }
    Plan {
        groups,
        prefixes,
        warnings,
    }
}

/// A digest of every file a group's view holds (names and contents, and whether its
/// native files are stripped, which changes them).
fn group_id(collected: &Collected, tops: &[String], strip_native: bool) -> String {
    let ours = |name: &str| tops.iter().any(|p| within_package(name, p));
    let mut h = Sha256::new();
    if strip_native {
        h.update(b"strip-native\0");
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

fn read_head(path: &Path) -> [u8; 4] {
    use std::io::Read as _;
    let mut head = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read(&mut head);
    }
    head
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
        assert_eq!(record_top("README"), None);
    }

    #[test]
    fn literals_are_found() {
        let lits = string_literals(
            "p = os.path.join(os.path.dirname(__file__), 'locale-data')\nq = \"a\\\"b\"\nx = 'unterminated\n",
        );
        assert!(lits.contains("locale-data"));
        assert!(lits.contains("a\\\"b"));
        assert!(!lits.iter().any(|l| l.contains("unterminated")));
    }

    #[test]
    fn listing_the_own_directory_is_found() {
        for (src, line) in [
            (
                "import os\nnames = os.listdir(os.path.dirname(__file__))\n",
                2,
            ),
            (
                "from pathlib import Path\nHERE = Path(__file__).parent\n\nfor p in HERE.glob('*.py'):\n    pass\n",
                4,
            ),
            (
                "import os\nbase = os.path.dirname(os.path.abspath(__file__))\nfor root, dirs, files in os.walk(base):\n    pass\n",
                3,
            ),
            (
                "import os\nwith os.scandir(os.path.dirname(__file__)) as it:\n    pass\n",
                2,
            ),
            (
                "from pathlib import Path\nplugins = [p.stem for p in Path(__file__).parent.iterdir()]\n",
                2,
            ),
        ] {
            assert_eq!(lists_own_directory(src), Some(line), "{src}");
        }
        for src in [
            // A directory the user names, in a module that mentions __file__ elsewhere.
            "import os\nVERSION_FILE = __file__\nnames = os.listdir(user_dir)\n",
            "import os\nprint(__file__)\n# os.listdir(os.path.dirname(__file__))\n",
            "basedir = 1\nx = __file__\nfor p in basedirs.glob('*'): pass\n",
            // numpy.distutils: a loop variable that shares its name with a derived one.
            "f = __file__\nfor f in os.listdir(dpath):\n    pass\n",
            "here = os.path.dirname(__file__)\nfor root, dirs, files in os.walk(top_path):\n    x = here\n",
        ] {
            assert_eq!(lists_own_directory(src), None, "{src}");
        }
    }

    #[test]
    fn main_blocks_are_not_import_time_code() {
        // pycparser 2.22 `_ast_gen.py`, reduced.
        let src = "import os\nclass ASTCodeGenerator:\n    def __init__(self, cfg_filename='_c_ast.cfg'):\n        pass\n\nif __name__ == \"__main__\":\n    base_dir = os.path.dirname(os.path.abspath(__file__))\n    cfg_path = os.path.join(base_dir, \"_c_ast.cfg\")\n\n    for f in os.listdir(base_dir): pass\nx = 1\n";
        let stripped = without_main_block(src);
        assert!(!stripped.contains("__file__"), "{stripped}");
        assert!(stripped.contains("x = 1"), "code after the block is kept");
        assert_eq!(
            src.lines().count(),
            stripped.lines().count(),
            "line numbers kept"
        );
        // Indented `if __name__` (inside a function) and other conditions stay.
        for keep in [
            "def f():\n    if __name__ == '__main__':\n        open(__file__)\n",
            "if __name__ == 'x':\n    open(__file__)\n",
        ] {
            assert!(without_main_block(keep).contains("__file__"), "{keep}");
        }
    }

    #[test]
    fn build_tools_and_tests_are_not_runtime() {
        for m in [
            "numpy.f2py._backends._meson",
            "numpy.distutils.fcompiler",
            "pkg.tests.test_x",
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
        ] {
            assert!(is_build_artifact(f), "{f}");
        }
        for f in [
            "locale-data/de.dat",
            "zoneinfo/Europe/Paris",
            "template.txt",
            "data.json",
        ] {
            assert!(!is_build_artifact(f), "{f}");
        }
    }
}
