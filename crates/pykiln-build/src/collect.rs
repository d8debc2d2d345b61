//! Walking the standard library, the staged site-packages and the app into archive items.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::stdlib::Excludes;

/// Where a module came from; earlier layers win on name clashes, as on `sys.path`
/// (the standard library shadows site-packages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    /// The interpreter's standard library.
    Stdlib,
    /// The application's own packages.
    App,
    /// Installed dependencies.
    Site,
}

/// A pure-Python module to compile.
#[derive(Debug, Clone)]
pub struct PyModule {
    /// Source file.
    pub path: PathBuf,
    /// Path relative to its import root (what tracebacks show after the executable path).
    pub rel: String,
    /// `__init__.py` of a package.
    pub is_package: bool,
    /// Layer it came from.
    pub layer: Layer,
}

/// Everything found, keyed for the archive.
#[derive(Debug, Default)]
pub struct Collected {
    /// Pure-Python modules by dotted name.
    pub modules: BTreeMap<String, PyModule>,
    /// Extension modules by dotted name.
    pub extensions: BTreeMap<String, PathBuf>,
    /// (package, relative path) → file.
    pub resources: BTreeMap<(String, String), PathBuf>,
    /// (dist-info dir, file) → file.
    pub dist_files: BTreeMap<(String, String), PathBuf>,
    /// File name → path of libraries vendored by wheels (`<pkg>.libs/`).
    pub vendored: BTreeMap<String, PathBuf>,
    /// Things worth telling the user.
    pub warnings: Vec<String>,
    /// Every app file read (for `rerun-if-changed`).
    pub app_files: Vec<PathBuf>,
    /// `import` lines of site-packages `.pth` files, in `site`'s order (by file name).
    pub pth_imports: Vec<String>,
}

/// Calls through which code reads Python source (its own or another module's) at run
/// time: anyio builds its lazy-import table from its `__init__.py` source, pydantic
/// reads attribute docstrings from class sources.
const SOURCE_READERS: &[&[u8]] = &[b"getsource(", b"getsourcelines(", b"findsource("];

impl Collected {
    /// Top-level packages of the dependencies whose code reads module sources through
    /// `inspect`: their sources are packed too, or they behave differently than in a
    /// venv (anyio imports all its submodules eagerly, pydantic finds no attribute
    /// docstrings). The standard library is not scanned: its readers (`inspect`,
    /// `doctest`, `pdb`) work on other code.
    pub fn source_readers(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for (name, m) in &self.modules {
            let top = name.split('.').next().unwrap_or(name);
            if m.layer != Layer::Site || out.contains(top) {
                continue;
            }
            let Ok(text) = std::fs::read(&m.path) else {
                continue;
            };
            if SOURCE_READERS
                .iter()
                .any(|pat| text.windows(pat.len()).any(|w| w == *pat))
            {
                out.insert(top.to_string());
            }
        }
        out
    }
}

/// Top-level site-packages directories that are not import roots' data: installers put
/// scripts, headers and `data_files` there.
const SITE_NON_DATA: &[&str] = &["bin", "include", "share", "etc", "man", "__pycache__"];

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Module file stems: identifiers, plus the `-` that `_sysconfigdata_<abi>_<platform>-<multiarch>`
/// carries (imported by name through importlib, never through an import statement).
fn is_module_stem(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c == '_' || c == '-' || c.is_alphanumeric())
}

fn join(pkg: &str, name: &str) -> String {
    if pkg.is_empty() {
        name.to_string()
    } else {
        format!("{pkg}.{name}")
    }
}

fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf, bool)> {
    let mut out: Vec<(String, PathBuf, bool)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let path = e.path();
            let is_dir = path.is_dir();
            Some((name, path, is_dir))
        })
        .collect();
    out.sort();
    out
}

/// The files installed at the import root itself (no directory part) that some
/// distribution's RECORD in `site` lists.
fn root_files_in_records(site: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (name, path, is_dir) in sorted_entries(site) {
        if !is_dir || !name.ends_with(".dist-info") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(path.join("RECORD")) else {
            continue;
        };
        for line in text.lines() {
            let file = line.split(',').next().unwrap_or_default();
            if !file.is_empty() && !file.contains('/') {
                out.insert(file.to_string());
            }
        }
    }
    out
}

/// Whether `dir` holds Python modules: sources, or extension modules named with an ABI
/// tag (protobuf's `google/_upb/` holds only `_message.abi3.so`). An untagged `x.so` is
/// not enough: that is how bundled libraries loaded by path are named.
fn contains_python(dir: &Path) -> bool {
    walkdir::WalkDir::new(dir)
        .max_depth(4)
        .into_iter()
        .flatten()
        .any(|e| {
            let name = e.file_name().to_string_lossy();
            name.ends_with(".py")
                || name.ends_with(".abi3.so")
                || (name.ends_with(".so") && name.contains(".cpython-"))
        })
}

/// Collector state for one build.
pub struct Collector<'a> {
    /// Output.
    pub out: Collected,
    excludes: &'a Excludes,
    /// `cpython-311`-style tag that extension file names must carry (or abi3 / none).
    tag: String,
}

impl<'a> Collector<'a> {
    /// A collector that drops what `excludes` names and extensions built for other Pythons.
    pub fn new(excludes: &'a Excludes, cache_tag: &str) -> Self {
        Collector {
            out: Collected::default(),
            excludes,
            tag: cache_tag.to_string(),
        }
    }

    fn add_module(
        &mut self,
        name: String,
        path: &Path,
        rel: String,
        is_package: bool,
        layer: Layer,
    ) {
        if self.excludes.excludes(&name, layer == Layer::Stdlib) {
            return;
        }
        if let Some(existing) = self.out.modules.get(&name) {
            if existing.layer != layer {
                self.out.warnings.push(format!(
                    "module {name} from {} is shadowed by {} (as on sys.path)",
                    path.display(),
                    existing.path.display()
                ));
            }
            return;
        }
        if layer == Layer::App {
            self.out.app_files.push(path.to_path_buf());
        }
        self.out.modules.insert(
            name,
            PyModule {
                path: path.to_path_buf(),
                rel,
                is_package,
                layer,
            },
        );
    }

    fn add_extension(&mut self, pkg: &str, file: &str, path: &Path, layer: Layer) {
        let mut parts = file.split('.');
        let stem = parts.next().unwrap_or_default();
        let tag: Vec<&str> = parts.collect();
        // `name.so`, `name.abi3.so`, `name.cpython-311-x86_64-linux-gnu.so`
        let fits = match tag.as_slice() {
            ["so"] | ["abi3", "so"] => true,
            [t, "so"] => t.starts_with(&format!("{}-", self.tag)) || *t == self.tag,
            _ => false,
        };
        if !is_identifier(stem) {
            return;
        }
        if !fits {
            self.out.warnings.push(format!(
                "skipping {}: built for another Python (this is {})",
                path.display(),
                self.tag
            ));
            return;
        }
        let name = join(pkg, stem);
        if self.excludes.excludes(&name, layer == Layer::Stdlib)
            || self.out.extensions.contains_key(&name)
        {
            return;
        }
        self.out.extensions.insert(name, path.to_path_buf());
    }

    fn add_resource_tree(&mut self, pkg: &str, dir: &Path, rel: &str, layer: Layer) {
        for (name, path, is_dir) in sorted_entries(dir) {
            if name == "__pycache__" {
                continue;
            }
            let r = format!("{rel}{name}");
            if is_dir {
                self.add_resource_tree(pkg, &path, &format!("{r}/"), layer);
            } else if !name.ends_with(".pyc") {
                self.add_resource(pkg, r, &path, layer);
            }
        }
    }

    fn add_resource(&mut self, pkg: &str, rel: String, path: &Path, layer: Layer) {
        if layer == Layer::App {
            self.out.app_files.push(path.to_path_buf());
        }
        self.out
            .resources
            .entry((pkg.to_string(), rel))
            .or_insert_with(|| path.to_path_buf());
    }

    /// A package directory (regular or namespace) and everything under it.
    pub fn walk_package(&mut self, dir: &Path, pkg: &str, rel_dir: &str, layer: Layer) {
        if self.excludes.excludes(pkg, layer == Layer::Stdlib) {
            return;
        }
        for (name, path, is_dir) in sorted_entries(dir) {
            let rel = format!("{rel_dir}/{name}");
            if is_dir {
                if name == "__pycache__" {
                    continue;
                }
                if is_identifier(&name)
                    && (path.join("__init__.py").is_file() || contains_python(&path))
                {
                    self.walk_package(&path, &join(pkg, &name), &rel, layer);
                } else {
                    self.add_resource_tree(pkg, &path, &format!("{name}/"), layer);
                }
            } else if name == "__init__.py" {
                self.add_module(pkg.to_string(), &path, rel, true, layer);
            } else if let Some(stem) = name.strip_suffix(".py") {
                if is_module_stem(stem) {
                    self.add_module(join(pkg, stem), &path, rel, false, layer);
                }
            } else if name.ends_with(".so") {
                self.add_extension(pkg, &name, &path, layer);
            } else if name.ends_with(".pyc") || name.ends_with(".pyo") || name.ends_with(".pyi") {
                // Bytecode is recompiled; stubs are for type checkers only.
            } else {
                self.add_resource(pkg, name, &path, layer);
            }
        }
    }

    /// The standard library directory and its extension-module directory.
    pub fn walk_stdlib(&mut self, stdlib: &Path, dynload: &Path) {
        for (name, path, is_dir) in sorted_entries(stdlib) {
            if is_dir {
                if is_identifier(&name) && path.join("__init__.py").is_file() {
                    self.walk_package(&path, &name, &name, Layer::Stdlib);
                }
            } else if let Some(stem) = name.strip_suffix(".py") {
                if is_module_stem(stem) {
                    self.add_module(stem.to_string(), &path, name.clone(), false, Layer::Stdlib);
                }
            }
        }
        for (name, path, is_dir) in sorted_entries(dynload) {
            if !is_dir && name.ends_with(".so") {
                self.add_extension("", &name, &path, Layer::Stdlib);
            }
        }
    }

    /// A `pip install --target` directory.
    pub fn walk_site(&mut self, site: &Path) {
        let mut pth_dirs = Vec::new();
        let recorded = root_files_in_records(site);
        for (name, path, is_dir) in sorted_entries(site) {
            if is_dir {
                if name.ends_with(".dist-info") {
                    for e in walkdir::WalkDir::new(&path)
                        .sort_by_file_name()
                        .into_iter()
                        .flatten()
                    {
                        if e.file_type().is_file() {
                            if let Ok(rel) = e.path().strip_prefix(&path) {
                                let rel = rel.to_string_lossy().into_owned();
                                self.out
                                    .dist_files
                                    .insert((name.clone(), rel), e.path().to_path_buf());
                            }
                        }
                    }
                } else if name.ends_with(".libs") {
                    for (lib, lpath, ldir) in sorted_entries(&path) {
                        if !ldir {
                            self.out.vendored.insert(lib, lpath);
                        }
                    }
                } else if is_identifier(&name)
                    && (path.join("__init__.py").is_file() || contains_python(&path))
                {
                    self.walk_package(&path, &name, &name, Layer::Site);
                } else if !SITE_NON_DATA.contains(&name.as_str()) && !name.ends_with(".data") {
                    // A data directory beside top-level modules (`_soundfile_data/`),
                    // found by code through `__file__`: packed as import-root data.
                    self.add_resource_tree("", &path, &format!("{name}/"), Layer::Site);
                }
            } else if let Some(stem) = name.strip_suffix(".py") {
                if is_identifier(stem) {
                    self.add_module(stem.to_string(), &path, name.clone(), false, Layer::Site);
                }
            } else if name.ends_with(".so") {
                self.add_extension("", &name, &path, Layer::Site);
            } else if name.ends_with(".pth") {
                pth_dirs.extend(self.read_pth(site, &path, &name));
            } else if recorded.contains(&name) {
                // A data file a wheel installs at the import root itself
                // (office-powerpoint-mcp-server's `slide_layout_templates.json`, which
                // its `utils` package finds two directories above its `__file__`);
                // only what a RECORD lists, not the build cache's own markers.
                self.add_resource("", name.clone(), &path, Layer::Site);
            }
        }
        // Directories a .pth file adds to sys.path are import roots of their own.
        for dir in pth_dirs {
            self.walk_root(&dir);
        }
    }

    /// Top-level modules and packages of an extra import root (a `.pth` path line).
    fn walk_root(&mut self, root: &Path) {
        for (name, path, is_dir) in sorted_entries(root) {
            if is_dir {
                if is_identifier(&name)
                    && (path.join("__init__.py").is_file() || contains_python(&path))
                {
                    self.walk_package(&path, &name, &name, Layer::Site);
                }
            } else if let Some(stem) = name.strip_suffix(".py") {
                if is_identifier(stem) {
                    self.add_module(stem.to_string(), &path, name.clone(), false, Layer::Site);
                }
            } else if name.ends_with(".so") {
                self.add_extension("", &name, &path, Layer::Site);
            }
        }
    }

    /// Emulate `site.addpackage` for one `.pth` file at build time: path lines name
    /// extra import roots (returned; only directories inside site-packages), `import`
    /// lines are kept to run at start-up. `*-nspkg.pth` files are skipped: they
    /// pre-create namespace packages, which the archive importer already serves per
    /// PEP 420.
    fn read_pth(&mut self, site: &Path, path: &Path, name: &str) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if name.ends_with("-nspkg.pth") {
            return dirs;
        }
        let Ok(text) = std::fs::read_to_string(path) else {
            self.out
                .warnings
                .push(format!("{}: not UTF-8 text, ignored", path.display()));
            return dirs;
        };
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with("import ") || line.starts_with("import\t") {
                self.out.pth_imports.push(line.to_string());
                continue;
            }
            let dir = site.join(line);
            match dir.canonicalize() {
                Ok(d) if d.is_dir() && site.canonicalize().is_ok_and(|s| d.starts_with(s)) => {
                    dirs.push(dir)
                }
                Ok(_) => self.out.warnings.push(format!(
                    "{}: path line '{line}' leaves site-packages, ignored",
                    path.display()
                )),
                Err(_) => {} // site.py silently skips paths that do not exist, too
            }
        }
        dirs
    }

    /// Drop pure-Python modules that an extension of the same name shadows (the
    /// extension loader comes first on a real `sys.path`, too), and turn `.so` files
    /// that are not extension modules (no `PyInit_<name>`) into package data.
    pub fn finish(mut self) -> Collected {
        let not_modules: Vec<String> = self
            .out
            .extensions
            .iter()
            .filter(|(name, path)| {
                let stem = name.rsplit('.').next().unwrap_or(name);
                std::fs::read(path).is_ok_and(|bytes| {
                    bytes.starts_with(b"\x7fELF")
                        && !crate::native::is_extension_module(&bytes, stem)
                })
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in not_modules {
            if let Some(path) = self.out.extensions.remove(&name) {
                let pkg = name.rsplit_once('.').map(|(p, _)| p).unwrap_or_default();
                let file = path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.out.resources.insert((pkg.to_string(), file), path);
            }
        }
        let shadowed: Vec<String> = self
            .out
            .extensions
            .keys()
            .filter(|n| self.out.modules.get(*n).is_some_and(|m| !m.is_package))
            .cloned()
            .collect();
        for n in shadowed {
            self.out.modules.remove(&n);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn site_packages_layout_is_classified() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path();
        for f in [
            "pkg/__init__.py",
            "pkg/mod.py",
            "pkg/_speed.cpython-311-x86_64-linux-gnu.so",
            "pkg/_old.cpython-310-x86_64-linux-gnu.so",
            "pkg/data/schema.json",
            "pkg/py.typed",
            "pkg/mod.pyi",
            "pkg/__pycache__/mod.cpython-311.pyc",
            "ns/part/__init__.py",
            "single.py",
            "pkg-1.0.dist-info/METADATA",
            "pkg-1.0.dist-info/licenses/LICENSE",
            "pkg.libs/libfoo-abc.so.1",
            "bin/tool",
            "extra/extmod.py",
            "_pkg_data/table.bin",
            "_pkg_data/libthing.so",
            "google/_upb/_message.abi3.so",
            "legacy-nspkg.pth",
        ] {
            touch(s, f);
        }
        std::fs::write(
            s.join("thing.pth"),
            "# comment\nextra\nmissing-dir\n../../outside\nimport os; os.environ.setdefault('X', '1')\n",
        )
        .unwrap();
        std::fs::write(s.join("legacy-nspkg.pth"), "import sys, types; ns = 1\n").unwrap();
        let ex = Excludes::default();
        let mut c = Collector::new(&ex, "cpython-311");
        c.walk_site(s);
        let out = c.finish();
        let mods: Vec<&str> = out.modules.keys().map(String::as_str).collect();
        // extra/ is an import root because thing.pth names it (and, as on a real
        // sys.path, also a namespace package of site-packages).
        assert_eq!(
            mods,
            [
                "extmod",
                "extra.extmod",
                "ns.part",
                "pkg",
                "pkg.mod",
                "single"
            ]
        );
        assert!(out.modules["pkg"].is_package);
        assert_eq!(out.modules["pkg.mod"].rel, "pkg/mod.py");
        // A directory holding only an ABI-tagged extension is a namespace package
        // (protobuf); an untagged library beside data stays data (loaded by path).
        assert_eq!(
            out.extensions.keys().collect::<Vec<_>>(),
            ["google._upb._message", "pkg._speed"]
        );
        let res: Vec<_> = out
            .resources
            .keys()
            .map(|(p, r)| format!("{p}:{r}"))
            .collect();
        assert_eq!(
            res,
            [
                ":_pkg_data/libthing.so",
                ":_pkg_data/table.bin",
                "pkg:data/schema.json",
                "pkg:py.typed"
            ]
        );
        assert_eq!(
            out.pth_imports,
            ["import os; os.environ.setdefault('X', '1')"],
            "-nspkg.pth skipped, comments and paths are not imports"
        );
        assert_eq!(out.dist_files.len(), 2);
        assert!(out.dist_files.contains_key(&(
            "pkg-1.0.dist-info".to_string(),
            "licenses/LICENSE".to_string()
        )));
        assert!(out.vendored.contains_key("libfoo-abc.so.1"));
        assert!(out.warnings.iter().any(|w| w.contains("_old")));
    }
}
