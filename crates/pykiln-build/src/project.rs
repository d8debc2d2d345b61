//! Reading the Python project: pyproject.toml, its packages and entry point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
struct PyProject {
    project: Option<ProjectTable>,
    tool: Option<ToolTable>,
}

#[derive(Debug, Deserialize, Default)]
struct ProjectTable {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
    #[serde(default)]
    scripts: BTreeMap<String, String>,
    #[serde(default, rename = "entry-points")]
    entry_points: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
struct ToolTable {
    pykiln: Option<ToolConfig>,
}

/// `[tool.pykiln]` in pyproject.toml: every packing option, all optional. The `pykiln`
/// CLI builds one from its flags and lays it over the project's ([`ToolConfig::merged`]).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ToolConfig {
    /// `module:function` run at start (default: the single `[project.scripts]` entry).
    pub entry_point: Option<String>,
    /// The app's top-level import packages (default: found under src/ or the root).
    pub packages: Option<Vec<String>>,
    /// A requirements or lock file installed instead of `[project].dependencies`.
    pub requirements: Option<String>,
    /// Distributions (or the app's name) given an on-disk file view.
    #[serde(default)]
    pub on_disk: Vec<String>,
    /// Distributions kept in memory even if they look `__file__`-dependent.
    #[serde(default)]
    pub in_memory: Vec<String>,
    /// Distributions whose native images always stay in memory (memfd).
    #[serde(default)]
    pub native_in_memory: Vec<String>,
    /// Distributions whose native images are always file-backed (the per-user cache).
    #[serde(default)]
    pub native_cached: Vec<String>,
    /// Native images at least this big are file-backed: a size (`1M`) or `off`.
    pub native_cache_threshold: Option<String>,
    /// Distributions or top-level packages whose Python sources are packed.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Modules left out (and their subpackages); `*` wildcards allowed.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Pack the sources of the standard library and every dependency.
    pub all_sources: Option<bool>,
    /// `<binary> -c/-m …` runs Python (default true).
    pub python_cli: Option<bool>,
    /// Strip debug info and symbol tables from packed native code (default true).
    pub strip_native: Option<bool>,
    /// The server's text writes to `sys.stdout` go to stderr (default false).
    pub stdout_guard: Option<bool>,
    /// The interpreter to build with: a version (`3.11`, which prefers pykiln's own
    /// build of it, as `--python 3.11` does) or a path. The CLI uses it when no
    /// `--python` is given; a build script cannot choose pyo3's interpreter, so there it
    /// checks that cargo's (`PYO3_PYTHON`) is this one and says how to make it so.
    pub python: Option<String>,
    /// `[tool.pykiln.mcpb]`: the MCP Bundle `pykiln dist` makes.
    pub mcpb: Option<pykiln_archive::McpbConfig>,
    /// `[tool.pykiln.oci]`: the container image `pykiln dist` makes.
    pub oci: Option<pykiln_archive::OciConfig>,
}

impl ToolConfig {
    /// The `[tool.pykiln]` table of `dir/pyproject.toml` (empty when it has none).
    pub fn read(dir: &Path) -> anyhow::Result<ToolConfig> {
        let (_, doc) = read_pyproject(dir)?;
        Ok(doc.tool.and_then(|t| t.pykiln).unwrap_or_default())
    }

    /// `self` with every option `over` sets taken from `over` (lists are appended).
    pub fn merged(mut self, over: &ToolConfig) -> ToolConfig {
        fn pick<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
            if b.is_some() {
                a.clone_from(b);
            }
        }
        pick(&mut self.entry_point, &over.entry_point);
        pick(&mut self.packages, &over.packages);
        pick(&mut self.requirements, &over.requirements);
        pick(&mut self.all_sources, &over.all_sources);
        pick(&mut self.python_cli, &over.python_cli);
        pick(&mut self.strip_native, &over.strip_native);
        pick(&mut self.stdout_guard, &over.stdout_guard);
        pick(&mut self.python, &over.python);
        pick(&mut self.mcpb, &over.mcpb);
        pick(&mut self.oci, &over.oci);
        pick(
            &mut self.native_cache_threshold,
            &over.native_cache_threshold,
        );
        self.native_in_memory
            .extend(over.native_in_memory.iter().cloned());
        self.native_cached
            .extend(over.native_cached.iter().cloned());
        self.on_disk.extend(over.on_disk.iter().cloned());
        self.in_memory.extend(over.in_memory.iter().cloned());
        self.sources.extend(over.sources.iter().cloned());
        self.exclude.extend(over.exclude.iter().cloned());
        self
    }
}

/// `dir/pyproject.toml`: its path and its parsed contents.
fn read_pyproject(dir: &Path) -> anyhow::Result<(PathBuf, PyProject)> {
    let file = dir.join("pyproject.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let doc = toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    Ok((file, doc))
}

/// Where the entry point of a project made of requirements comes from, once they
/// are installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySpec {
    /// `module:function`, given.
    Given(String),
    /// A console script, by name, of any installed distribution.
    Script(String),
    /// The single console script of this distribution.
    ScriptOf(String),
}

/// A Python project to pack.
#[derive(Debug, Clone)]
pub struct Project {
    /// Project directory.
    pub dir: PathBuf,
    /// `[project].name`.
    pub name: String,
    /// `[project].version`.
    pub version: String,
    /// One-line summary.
    pub description: String,
    /// `[project].dependencies` (PEP 508 strings).
    pub dependencies: Vec<String>,
    /// Requirements/lock file (pip format, may carry hashes) used instead of `dependencies`.
    pub requirements: Option<PathBuf>,
    /// `module:function` run at start.
    pub entry_point: String,
    /// Top-level import packages of the app, with their directories.
    pub packages: Vec<(String, PathBuf)>,
    /// Entry point groups for the generated dist-info.
    pub entry_points: BTreeMap<String, BTreeMap<String, String>>,
    /// Distributions (or the app's name) forced into the on-disk file view
    /// (`[tool.pykiln] on-disk`).
    pub on_disk: Vec<String>,
    /// Distributions kept in memory even if they look `__file__`-dependent
    /// (`[tool.pykiln] in-memory`).
    pub in_memory: Vec<String>,
    /// `[tool.pykiln] native-in-memory`: distributions whose native images stay in memory.
    pub native_in_memory: Vec<String>,
    /// `[tool.pykiln] native-cached`: distributions whose native images are file-backed.
    pub native_cached: Vec<String>,
    /// `[tool.pykiln] native-cache-threshold` as written (a size or `off`; default 0:
    /// every image file-backed).
    pub native_cache_threshold: Option<String>,
    /// Distributions (or top-level packages) whose Python sources are packed besides
    /// their bytecode (`[tool.pykiln] sources`), for code that reads module files.
    pub sources: Vec<String>,
    /// `[tool.pykiln] python-cli` (default true): `<binary> -c/-m …` runs Python.
    pub python_cli: bool,
    /// `[tool.pykiln] stdout-guard` (default false): the server's text writes to
    /// `sys.stdout` go to stderr (for servers that print a banner on the MCP channel).
    pub stdout_guard: bool,
    /// `[tool.pykiln.mcpb]`.
    pub mcpb: Option<pykiln_archive::McpbConfig>,
    /// `[tool.pykiln.oci]`.
    pub oci: Option<pykiln_archive::OciConfig>,
    /// `[tool.pykiln] strip-native` (default true): drop debug info and symbol tables
    /// from packed extension modules and shared libraries.
    pub strip_native: bool,
    /// `[tool.pykiln] exclude`: modules left out.
    pub exclude: Vec<String>,
    /// `[tool.pykiln] all-sources`: pack every module's source.
    pub all_sources: bool,
    /// Set for a project made of requirements only, until the staged install tells the
    /// entry point (see [`Project::resolve_entry_point`]).
    pub pending_entry: Option<EntrySpec>,
    /// pyproject.toml, or None for a project made of requirements.
    pub pyproject: Option<PathBuf>,
}

impl Project {
    /// Read `dir/pyproject.toml` and find the app's packages; `over` overrides its
    /// `[tool.pykiln]` options.
    pub fn load(dir: &Path, over: &ToolConfig) -> anyhow::Result<Self> {
        let (file, doc) = read_pyproject(dir)?;
        let project = doc
            .project
            .with_context(|| format!("{}: no [project] table", file.display()))?;
        let name = project
            .name
            .with_context(|| format!("{}: [project] has no name", file.display()))?;
        let version = project.version.with_context(|| {
            format!(
                "{}: [project] has no static version (dynamic versions are not supported)",
                file.display()
            )
        })?;
        let tool = doc
            .tool
            .and_then(|t| t.pykiln)
            .unwrap_or_default()
            .merged(over);

        let entry_point = match (tool.entry_point.clone(), project.scripts.len()) {
            (Some(e), _) => e,
            (None, 1) => project.scripts.values().next().cloned().unwrap_or_default(),
            (None, n) => bail!(
                "{}: cannot tell the entry point ({n} [project.scripts] entries); set [tool.pykiln] entry-point = \"module:function\"",
                file.display()
            ),
        };
        check_entry_point(&entry_point).with_context(|| file.display().to_string())?;

        // `packages = []` is explicit: an app made only of its dependencies (the entry
        // point lives in one of them).
        let explicit = tool.packages.is_some();
        let packages = match tool.packages.clone() {
            Some(names) => names
                .into_iter()
                .map(|n| {
                    let d = find_package_dir(dir, &n).with_context(|| {
                        format!(
                            "{}: package '{n}' not found under {} or its src/",
                            file.display(),
                            dir.display()
                        )
                    })?;
                    Ok((n, d))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => discover_packages(dir, &name),
        };
        if packages.is_empty() && !explicit {
            bail!(
                "{}: no Python package found for project '{name}' (looked in src/ and the project root; \
                 set [tool.pykiln] packages = [] if the entry point is in a dependency)",
                file.display()
            );
        }

        let mut entry_points = project.entry_points;
        if !project.scripts.is_empty() {
            entry_points.insert("console_scripts".into(), project.scripts);
        }
        Ok(Project {
            dir: dir.to_path_buf(),
            name,
            version,
            description: project.description.unwrap_or_default(),
            dependencies: project.dependencies,
            requirements: tool.requirements.as_ref().map(|r| dir.join(r)),
            entry_point,
            packages,
            entry_points,
            pending_entry: None,
            pyproject: Some(file),
            ..Self::with_options(tool)
        })
    }

    /// The fields every kind of project takes from its options.
    fn with_options(tool: ToolConfig) -> Self {
        Project {
            dir: PathBuf::new(),
            name: String::new(),
            version: String::new(),
            description: String::new(),
            dependencies: Vec::new(),
            requirements: None,
            entry_point: String::new(),
            packages: Vec::new(),
            entry_points: BTreeMap::new(),
            on_disk: tool.on_disk,
            in_memory: tool.in_memory,
            native_in_memory: tool.native_in_memory,
            native_cached: tool.native_cached,
            native_cache_threshold: tool.native_cache_threshold,
            sources: tool.sources,
            exclude: tool.exclude,
            all_sources: tool.all_sources.unwrap_or(false),
            python_cli: tool.python_cli.unwrap_or(true),
            strip_native: tool.strip_native.unwrap_or(true),
            stdout_guard: tool.stdout_guard.unwrap_or(false),
            mcpb: tool.mcpb,
            oci: tool.oci,
            pending_entry: None,
            pyproject: None,
        }
    }

    /// A project made only of requirements (PyPI names with versions, local wheels, and
    /// optionally a requirements or lock file), whose entry point is a console script of
    /// what they install. `tool.entry_point` wins; else `script`; else the single console
    /// script of the first named distribution.
    pub fn from_requirements(
        specs: &[String],
        requirements_file: Option<&Path>,
        script: Option<&str>,
        tool: ToolConfig,
    ) -> anyhow::Result<Self> {
        if specs.is_empty() && requirements_file.is_none() {
            bail!("nothing to install: give a requirement, a wheel or a requirements file");
        }
        let named = specs.iter().find_map(|s| requirement_name(s));
        let pending = match (&tool.entry_point, script, named) {
            (Some(e), _, _) => {
                check_entry_point(e)?;
                EntrySpec::Given(e.clone())
            }
            (None, Some(s), _) => EntrySpec::Script(s.to_string()),
            (None, None, Some(n)) => EntrySpec::ScriptOf(n),
            (None, None, None) => bail!(
                "cannot tell which console script to run from a requirements file alone: name it with --script NAME or --entry-point module:function"
            ),
        };
        let dir = std::env::current_dir().context("reading the current directory")?;
        Ok(Project {
            dir,
            name: named_or(script, specs),
            dependencies: specs.to_vec(),
            requirements: requirements_file.map(Path::to_path_buf),
            pending_entry: Some(pending),
            ..Self::with_options(ToolConfig {
                packages: Some(Vec::new()),
                ..tool
            })
        })
    }

    /// What pip installs besides a requirements file: the requirements given on the
    /// command line, or `[project].dependencies` unless a requirements file replaces them.
    pub fn pip_specs(&self) -> &[String] {
        if self.pyproject.is_some() && self.requirements.is_some() {
            &[]
        } else {
            &self.dependencies
        }
    }

    /// What the build installs from, for messages: pyproject.toml or the requirements.
    pub fn origin(&self) -> String {
        match &self.pyproject {
            Some(file) => file.display().to_string(),
            None => {
                let mut parts = self.dependencies.clone();
                if let Some(r) = &self.requirements {
                    parts.push(format!("-r {}", r.display()));
                }
                format!("the requirements {}", parts.join(" "))
            }
        }
    }

    /// For a project made of requirements: find the entry point among the console
    /// scripts of the installed distributions in `site` (their `entry_points.txt`), and
    /// take the app's name and version from it.
    pub fn resolve_entry_point(&mut self, site: &Path) -> anyhow::Result<()> {
        let Some(pending) = self.pending_entry.take() else {
            return Ok(());
        };
        let installed = console_scripts(site);
        let version_of = |dist: &str| {
            installed
                .iter()
                .find(|d| d.name == normalize(dist))
                .map(|d| d.version.clone())
        };
        match pending {
            EntrySpec::Given(entry) => {
                let dist = requirement_name_list(&self.dependencies);
                self.entry_point = entry;
                if let Some(d) = dist {
                    self.version = version_of(&d).unwrap_or_default();
                }
            }
            EntrySpec::Script(script) => {
                let found: Vec<_> = installed
                    .iter()
                    .filter_map(|d| d.scripts.get(&script).map(|e| (d, e)))
                    .collect();
                let Some((dist, entry)) = found.first() else {
                    let all: Vec<String> = installed
                        .iter()
                        .flat_map(|d| d.scripts.keys().cloned())
                        .collect();
                    bail!(
                        "no installed distribution has a console script '{script}'{}",
                        if all.is_empty() {
                            " (none has any)".to_string()
                        } else {
                            format!("; there are: {}", all.join(", "))
                        }
                    );
                };
                self.entry_point = entry.to_string();
                self.version = dist.version.clone();
                self.name = script;
            }
            EntrySpec::ScriptOf(dist) => {
                let Some(d) = installed.iter().find(|d| d.name == normalize(&dist)) else {
                    bail!("{dist} was not installed by {}", self.origin());
                };
                match (d.scripts.len(), d.scripts.iter().next()) {
                    (1, Some((script, entry))) => {
                        self.entry_point = entry.clone();
                        self.name = script.clone();
                    }
                    (0, _) => bail!(
                        "{dist} {} has no console script: name the function to run with --entry-point module:function",
                        d.version
                    ),
                    (n, _) => bail!(
                        "{dist} {} has {n} console scripts ({}): choose one with --script NAME",
                        d.version,
                        d.scripts.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }
                self.version = d.version.clone();
            }
        }
        // `module:function [extras]` in entry_points.txt: the extras are not ours.
        if let Some((head, _)) = self.entry_point.split_once('[') {
            self.entry_point = head.trim().to_string();
        }
        check_entry_point(&self.entry_point)
    }

    /// The name of the executable: the project's single console script, else its name.
    pub fn binary_name(&self) -> String {
        match self.entry_points.get("console_scripts") {
            Some(scripts) if scripts.len() == 1 => {
                scripts.keys().next().cloned().unwrap_or_default()
            }
            _ => self.name.clone(),
        }
    }

    /// Normalised distribution name as used in `.dist-info` directory names.
    pub fn dist_name(&self) -> String {
        normalize(&self.name)
    }

    /// `.dist-info` files describing the app itself.
    pub fn dist_info(&self) -> (String, Vec<(String, Vec<u8>)>) {
        let dir = format!("{}-{}.dist-info", self.dist_name(), self.version);
        let mut meta = format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {}\n",
            self.name, self.version
        );
        if !self.description.is_empty() {
            meta.push_str(&format!("Summary: {}\n", self.description));
        }
        for d in &self.dependencies {
            meta.push_str(&format!("Requires-Dist: {d}\n"));
        }
        let mut files = vec![
            ("INSTALLER".to_string(), b"pykiln\n".to_vec()),
            ("METADATA".to_string(), meta.into_bytes()),
        ];
        if !self.entry_points.is_empty() {
            let mut ep = String::new();
            for (group, items) in &self.entry_points {
                ep.push_str(&format!("[{group}]\n"));
                for (k, v) in items {
                    ep.push_str(&format!("{k} = {v}\n"));
                }
                ep.push('\n');
            }
            files.push(("entry_points.txt".to_string(), ep.into_bytes()));
        }
        let top: String = self
            .packages
            .iter()
            .map(|(n, _)| format!("{n}\n"))
            .collect();
        files.push(("top_level.txt".to_string(), top.into_bytes()));
        (dir, files)
    }
}

fn check_entry_point(entry: &str) -> anyhow::Result<()> {
    if entry
        .split_once(':')
        .is_none_or(|(m, f)| m.trim().is_empty() || f.trim().is_empty())
    {
        bail!("entry point '{entry}' is not of the form module:function");
    }
    Ok(())
}

/// The distribution name a requirement names: `name[extras]>=1; marker` → name, or a
/// wheel file's name (`name-version-….whl`). None for URLs and other paths.
pub fn requirement_name(spec: &str) -> Option<String> {
    let spec = spec.trim();
    let file = Path::new(spec).file_name()?.to_str()?;
    if let Some(stem) = file.strip_suffix(".whl") {
        return stem.split('-').next().map(str::to_string);
    }
    if spec.contains('/') || spec.contains("://") {
        return None;
    }
    let name: String = spec
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (!name.is_empty()).then_some(name)
}

fn requirement_name_list(specs: &[String]) -> Option<String> {
    specs.iter().find_map(|s| requirement_name(s))
}

fn named_or(script: Option<&str>, specs: &[String]) -> String {
    script
        .map(str::to_string)
        .or_else(|| requirement_name_list(specs))
        .unwrap_or_else(|| "app".to_string())
}

/// An installed distribution's console scripts.
struct Installed {
    /// Normalised name.
    name: String,
    version: String,
    scripts: BTreeMap<String, String>,
}

/// The distributions in `site` with their console scripts (from `entry_points.txt`).
fn console_scripts(site: &Path) -> Vec<Installed> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(site).into_iter().flatten().flatten() {
        let file = entry.file_name();
        let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".dist-info")) else {
            continue;
        };
        let Some((name, version)) = stem.split_once('-') else {
            continue;
        };
        let text =
            std::fs::read_to_string(entry.path().join("entry_points.txt")).unwrap_or_default();
        let mut scripts = BTreeMap::new();
        let mut in_scripts = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_scripts = line == "[console_scripts]";
            } else if in_scripts {
                if let Some((k, v)) = line.split_once('=') {
                    scripts.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
        }
        found.push(Installed {
            name: normalize(name),
            version: version.to_string(),
            scripts,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// PEP 503 name normalised with `_` (the form dist-info directories use).
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !sep {
                out.push('_');
            }
            sep = true;
        } else {
            out.extend(c.to_lowercase());
            sep = false;
        }
    }
    out
}

fn find_package_dir(dir: &Path, name: &str) -> Option<PathBuf> {
    let rel = name.replace('.', "/");
    [dir.join("src").join(&rel), dir.join(&rel)]
        .into_iter()
        .find(|p| p.join("__init__.py").is_file())
}

fn discover_packages(dir: &Path, name: &str) -> Vec<(String, PathBuf)> {
    let src = dir.join("src");
    if src.is_dir() {
        let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(&src)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("__init__.py").is_file())
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect();
        found.sort();
        return found;
    }
    let n = normalize(name);
    find_package_dir(dir, &n)
        .map(|p| vec![(n, p)])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn src_layout_with_one_script() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "pyproject.toml",
            "[project]\nname='My-App'\nversion='1.2'\ndependencies=['mcp>=2']\n[project.scripts]\nmy-app='my_app.cli:main'\n",
        );
        write(d.path(), "src/my_app/__init__.py", "");
        let p = Project::load(d.path(), &ToolConfig::default()).unwrap();
        assert_eq!(p.entry_point, "my_app.cli:main");
        assert_eq!(p.packages[0].0, "my_app");
        let (dir, files) = p.dist_info();
        assert_eq!(dir, "my_app-1.2.dist-info");
        let meta =
            String::from_utf8(files.iter().find(|f| f.0 == "METADATA").unwrap().1.clone()).unwrap();
        assert!(meta.contains("Name: My-App\nVersion: 1.2\n"));
        assert!(meta.contains("Requires-Dist: mcp>=2"));
    }

    #[test]
    fn native_placement_keys_are_read_and_flags_add_to_them() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "pyproject.toml",
            "[project]\nname='a'\nversion='1'\n[project.scripts]\na='a:main'\n\
             [tool.pykiln]\nnative-in-memory=['duckdb']\nnative-cached=['pydantic-core']\n\
             native-cache-threshold='4M'\n",
        );
        write(d.path(), "a/__init__.py", "");
        let flags = ToolConfig {
            native_in_memory: vec!["onnxruntime".into()],
            native_cache_threshold: Some("off".into()),
            ..ToolConfig::default()
        };
        let p = Project::load(d.path(), &flags).unwrap();
        assert_eq!(p.native_in_memory, ["duckdb", "onnxruntime"]);
        assert_eq!(p.native_cached, ["pydantic-core"]);
        assert_eq!(
            p.native_cache_threshold.as_deref(),
            Some("off"),
            "the flag wins"
        );
    }

    #[test]
    fn ambiguous_entry_point_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "pyproject.toml",
            "[project]\nname='a'\nversion='1'\n",
        );
        write(d.path(), "a/__init__.py", "");
        let err = Project::load(d.path(), &ToolConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pyproject.toml") && err.contains("entry-point"),
            "{err}"
        );
    }

    #[test]
    fn a_project_of_dependencies_only_is_allowed_when_it_says_so() {
        let d = tempfile::tempdir().unwrap();
        let toml = "[project]\nname='wrap'\nversion='1'\ndependencies=['mcp-server-time==2026.10.19']\n\
                    [tool.pykiln]\nentry-point='mcp_server_time:main'\n";
        write(d.path(), "pyproject.toml", toml);
        let err = Project::load(d.path(), &ToolConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("packages = []"), "{err}");
        write(
            d.path(),
            "pyproject.toml",
            &format!("{toml}packages = []\n"),
        );
        let p = Project::load(d.path(), &ToolConfig::default()).unwrap();
        assert!(p.packages.is_empty());
        assert_eq!(p.entry_point, "mcp_server_time:main");
    }

    #[test]
    fn requirement_names_come_from_specs_and_wheel_files() {
        for (spec, name) in [
            ("mcp-server-time==2026.10.19", Some("mcp-server-time")),
            ("mcp[cli]>=2; python_version>'3.9'", Some("mcp")),
            (
                "/w/mcp_server_time-2026.10.19-py3-none-any.whl",
                Some("mcp_server_time"),
            ),
            ("/src/my-project", None),
            ("https://example.org/x.tar.gz", None),
        ] {
            assert_eq!(requirement_name(spec).as_deref(), name, "{spec}");
        }
    }

    #[test]
    fn entry_points_of_requirements_come_from_the_installed_console_scripts() {
        let site = tempfile::tempdir().unwrap();
        write(
            site.path(),
            "mcp_server_time-2026.10.19.dist-info/entry_points.txt",
            "[console_scripts]\nmcp-server-time = mcp_server_time:main\n[other]\nx = y:z\n",
        );
        write(
            site.path(),
            "tool-1.0.dist-info/entry_points.txt",
            "[console_scripts]\na = tool.a:main [extra]\nb = tool.b:main\n",
        );
        write(site.path(), "six-1.16.0.dist-info/METADATA", "Name: six\n");
        let load = |specs: &[&str], script: Option<&str>| {
            let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
            let mut p =
                Project::from_requirements(&specs, None, script, ToolConfig::default()).unwrap();
            p.resolve_entry_point(site.path()).map(|()| p)
        };
        let p = load(&["mcp-server-time==2026.10.19"], None).unwrap();
        assert_eq!(
            (p.entry_point.as_str(), p.name.as_str(), p.version.as_str()),
            ("mcp_server_time:main", "mcp-server-time", "2026.10.19")
        );
        let err = load(&["tool"], None).unwrap_err().to_string();
        assert!(err.contains("has 2 console scripts (a, b)"), "{err}");
        let p = load(&["tool"], Some("a")).unwrap();
        assert_eq!(p.entry_point, "tool.a:main");
        let err = load(&["six"], None).unwrap_err().to_string();
        assert!(err.contains("has no console script"), "{err}");
        let err = load(&["nope"], None).unwrap_err().to_string();
        assert!(err.contains("nope was not installed"), "{err}");
    }

    #[test]
    fn normalize_matches_pep_503() {
        assert_eq!(normalize("Foo.Bar--baz_qux"), "foo_bar_baz_qux");
    }
}
