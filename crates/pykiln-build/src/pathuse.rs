//! Which modules reach a package directory by path: `python/paths.py`, Python's own
//! parser run by the interpreter being embedded, over the candidates [`crate::ondisk`]
//! picks. Results are cached by the script and the candidates' contents, so a build
//! whose candidates did not change asks Python nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

const SCRIPT: &str = include_str!("../python/paths.py");

/// [`Finding::what`] of a module that lists its own directory.
pub const LISTS: &str = "lists its own directory";

/// One finding of [`analyze`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    /// 1-based line.
    pub line: u32,
    /// "lists its own directory" or "opens a file by a path built from __file__".
    pub what: String,
    /// Whose directory: "" for the module's own, else the dotted name of the imported
    /// module whose `__file__` the path is built from.
    pub whose: String,
}

/// The findings of each candidate (module name → its source file) that has any.
pub fn analyze(
    python: &Path,
    cache: &Path,
    candidates: &BTreeMap<String, PathBuf>,
) -> anyhow::Result<BTreeMap<String, Vec<Finding>>> {
    if candidates.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut h = Sha256::new();
    h.update(SCRIPT);
    for (name, path) in candidates {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        h.update(name.as_bytes());
        h.update([0]);
        h.update((text.len() as u64).to_le_bytes());
        h.update(&text);
    }
    let dir = cache.join("paths");
    let cached = dir.join(format!("{}.json", crate::hex(&h.finalize()[..16])));
    if let Ok(bytes) = std::fs::read(&cached) {
        if let Ok(found) = serde_json::from_slice(&bytes) {
            crate::cache::touch(&cached);
            return Ok(found);
        }
    }
    let files: Vec<(&String, &PathBuf)> = candidates.iter().collect();
    let out = crate::pyrun::run_script(
        python,
        &["-I"],
        SCRIPT,
        &serde_json::json!({ "files": files }),
        cache,
    )?;
    if !out.status.success() {
        bail!(
            "the path-use analysis failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        findings: BTreeMap<String, Vec<(u32, String, String)>>,
    }
    let reply: Reply = serde_json::from_slice(crate::pyrun::last_line(&out.stdout))
        .context("the path-use analysis gave no result")?;
    let found: BTreeMap<String, Vec<Finding>> = reply
        .findings
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .into_iter()
                .map(|(line, what, whose)| Finding { line, what, whose })
                .collect();
            (k, v)
        })
        .collect();
    // A cache entry only: a build that cannot write it just asks Python again.
    if std::fs::create_dir_all(&dir).is_ok() {
        if let Ok(json) = serde_json::to_vec(&found) {
            let _ = crate::cache::write_atomic(&cached, &json);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analysis on the patterns seen in real distributions, by the Python that
    /// builds this crate: listings and openings through any expression built from
    /// `__file__` are found, other directories and script-only code are not.
    #[test]
    fn real_patterns_are_found_by_pythons_parser() {
        let dir = tempfile::tempdir().unwrap();
        /// (line, what, whose) of the first finding.
        type Want = Option<(u32, &'static str, &'static str)>;
        let cases: &[(&str, &str, Want)] = &[
            (
                "listdir",
                "import os\nnames = os.listdir(os.path.dirname(__file__))\n",
                Some((2, "lists its own directory", "")),
            ),
            (
                "pathglob",
                "from pathlib import Path\nHERE = Path(__file__).parent\n\nfor p in HERE.glob('*.py'):\n    pass\n",
                Some((4, "lists its own directory", "")),
            ),
            (
                // excel-mcp-server 2.2.2, excel_mcp/formula_syntax.py
                "with_name",
                "from pathlib import Path\nDATA = Path(__file__).with_name('function_arguments.json').read_text(encoding='utf-8')\n",
                Some((2, "opens a file by a path built from __file__", "")),
            ),
            (
                // office-powerpoint-mcp-server 2.0.7, utils/template_utils.py
                "dirname_dirname",
                "import os\ndef load():\n    current_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n    path = os.path.join(current_dir, 'slide_layout_templates.json')\n    with open(path) as f:\n        return f.read()\n",
                Some((5, "opens a file by a path built from __file__", "")),
            ),
            (
                "other_module",
                "import os\nimport plugins\nfor n in os.listdir(os.path.dirname(plugins.__file__)):\n    pass\n",
                Some((3, "lists its own directory", "plugins")),
            ),
            (
                "elsewhere",
                "import os\nVERSION_FILE = __file__\nnames = os.listdir(user_dir)\n",
                None,
            ),
            (
                // pycparser 2.22 `_ast_gen.py`, reduced.
                "main_block",
                "import os\nif __name__ == '__main__':\n    base = os.path.dirname(os.path.abspath(__file__))\n    for f in os.listdir(base): pass\n",
                None,
            ),
            ("syntax_error", "def (:\n", None),
        ];
        let mut candidates = BTreeMap::new();
        for (name, src, _) in cases {
            let path = dir.path().join(format!("{name}.py"));
            std::fs::write(&path, src).unwrap();
            candidates.insert(name.to_string(), path);
        }
        let cache = dir.path().join("cache");
        let python = std::path::PathBuf::from("python3");
        let found = analyze(&python, &cache, &candidates).unwrap();
        for (name, _, want) in cases {
            let got = found
                .get(*name)
                .and_then(|f| f.first())
                .map(|f| (f.line, f.what.as_str(), f.whose.as_str()));
            assert_eq!(got, *want, "{name}");
        }
        // Cached: the same candidates give the same answer without Python.
        let again = analyze(
            std::path::Path::new("/nonexistent/python"),
            &cache,
            &candidates,
        )
        .unwrap();
        assert_eq!(again, found);
    }
}
