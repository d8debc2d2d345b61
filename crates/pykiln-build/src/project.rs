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
    pykiln: Option<PykilnTable>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PykilnTable {
    entry_point: Option<String>,
    packages: Option<Vec<String>>,
    requirements: Option<String>,
    #[serde(default)]
    on_disk: Vec<String>,
    #[serde(default)]
    in_memory: Vec<String>,
    #[serde(default)]
    sources: Vec<String>,
    python_cli: Option<bool>,
    strip_native: Option<bool>,
    stdout_guard: Option<bool>,
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
    /// Distributions (or top-level packages) whose Python sources are packed besides
    /// their bytecode (`[tool.pykiln] sources`), for code that reads module files.
    pub sources: Vec<String>,
    /// `[tool.pykiln] python-cli` (default true): `<binary> -c/-m …` runs Python.
    pub python_cli: bool,
    /// `[tool.pykiln] stdout-guard` (default false): the server's text writes to
    /// `sys.stdout` go to stderr (for servers that print a banner on the MCP channel).
    pub stdout_guard: bool,
    /// `[tool.pykiln] strip-native` (default true): drop debug info and symbol tables
    /// from packed extension modules and shared libraries.
    pub strip_native: bool,
}

impl Project {
    /// Read `dir/pyproject.toml` and find the app's packages.
    pub fn load(dir: &Path, entry_override: Option<&str>) -> anyhow::Result<Self> {
        let file = dir.join("pyproject.toml");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let doc: PyProject =
            toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
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
        let tool = doc.tool.and_then(|t| t.pykiln).unwrap_or_default();

        let entry_point = match (entry_override, tool.entry_point, project.scripts.len()) {
            (Some(e), _, _) => e.to_string(),
            (None, Some(e), _) => e,
            (None, None, 1) => project.scripts.values().next().cloned().unwrap_or_default(),
            (None, None, n) => bail!(
                "{}: cannot tell the entry point ({n} [project.scripts] entries); set [tool.pykiln] entry-point = \"module:function\"",
                file.display()
            ),
        };
        if entry_point
            .split_once(':')
            .is_none_or(|(m, f)| m.is_empty() || f.is_empty())
        {
            bail!(
                "{}: entry point '{entry_point}' is not of the form module:function",
                file.display()
            );
        }

        // `packages = []` is explicit: an app made only of its dependencies (the entry
        // point lives in one of them).
        let explicit = tool.packages.is_some();
        let packages = match tool.packages {
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
            requirements: tool.requirements.map(|r| dir.join(r)),
            entry_point,
            packages,
            on_disk: tool.on_disk,
            in_memory: tool.in_memory,
            sources: tool.sources,
            python_cli: tool.python_cli.unwrap_or(true),
            strip_native: tool.strip_native.unwrap_or(true),
            stdout_guard: tool.stdout_guard.unwrap_or(false),
            entry_points,
        })
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
        let p = Project::load(d.path(), None).unwrap();
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
    fn ambiguous_entry_point_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "pyproject.toml",
            "[project]\nname='a'\nversion='1'\n",
        );
        write(d.path(), "a/__init__.py", "");
        let err = Project::load(d.path(), None).unwrap_err().to_string();
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
        let err = Project::load(d.path(), None).unwrap_err().to_string();
        assert!(err.contains("packages = []"), "{err}");
        write(
            d.path(),
            "pyproject.toml",
            &format!("{toml}packages = []\n"),
        );
        let p = Project::load(d.path(), None).unwrap();
        assert!(p.packages.is_empty());
        assert_eq!(p.entry_point, "mcp_server_time:main");
    }

    #[test]
    fn normalize_matches_pep_503() {
        assert_eq!(normalize("Foo.Bar--baz_qux"), "foo_bar_baz_qux");
    }
}
