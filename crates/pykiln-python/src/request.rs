//! Which interpreter a request names (`--python 3.11`, `[tool.pykiln] python`): the
//! same answer for the CLI and for build scripts.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::toolchain;

/// The interpreter `spec` names: a path (or command), or a version (`3.12`,
/// `3.12.7`) looked up among the interpreters `pykiln python install` built (under
/// `cache`), then in pyenv's versions, then on PATH, then in /usr/bin and
/// /usr/local/bin. Without `spec`, the one pyo3 would pick (`PYO3_PYTHON`, an active
/// virtualenv, `python3`).
pub fn resolve(spec: Option<&str>, cache: Option<&Path>) -> anyhow::Result<PathBuf> {
    let Some(spec) = spec else {
        return Ok(pykiln_pyconfig::select_interpreter());
    };
    if !is_version(spec) {
        return Ok(PathBuf::from(spec));
    }
    let minor: String = spec.split('.').take(2).collect::<Vec<_>>().join(".");
    let command = format!("python{minor}");
    let mut looked = Vec::new();
    // pykiln's own first, as uv prefers the Pythons it manages.
    if let Some(cache) = cache {
        let root = crate::root(cache);
        let host = toolchain::target(None).map(|t| t.rust);
        if let Some(found) = host.ok().and_then(|t| crate::find(&root, spec, t)) {
            return Ok(found.python());
        }
        looked.push(format!("{} (pykiln python install {spec})", root.display()));
    }
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
    if let Some(root) = pyenv {
        let versions = root.join("versions");
        looked.push(format!("{}/{spec}*", versions.display()));
        let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(&versions)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let exe = e.path().join("bin").join(&command);
                (crate::version_matches(&name, spec) && is_version(&name) && exe.is_file())
                    .then(|| (crate::version_key(&name), exe))
            })
            .collect();
        found.sort();
        if let Some((_, exe)) = found.pop() {
            return Ok(exe);
        }
    }
    // Not pyenv's shims: a shim runs only the versions pyenv has activated.
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .filter(|d| !d.ends_with(".pyenv/shims"))
        .chain([PathBuf::from("/usr/local/bin"), PathBuf::from("/usr/bin")])
    {
        let exe = dir.join(&command);
        if exe.is_file() {
            return Ok(exe);
        }
    }
    looked.push(format!("{command} on PATH, /usr/local/bin, /usr/bin"));
    bail!(
        "no Python {spec} found (looked in {}); build pykiln's own with `pykiln python install {minor}`, install one with its static library (pyenv install {minor}), or pass --python /path/to/python3",
        looked.join("; ")
    )
}

/// [`resolve`] for a target: for another CPU, only pykiln's own interpreters built for
/// it (`pykiln python install VERSION --target TRIPLE`) or a path to one.
pub fn resolve_for(
    spec: Option<&str>,
    cache: Option<&Path>,
    target: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let target = match target {
        None => return resolve(spec, cache),
        Some(t) => toolchain::target(Some(t))?,
    };
    if target.is_host() {
        return resolve(spec, cache);
    }
    if let Some(path) = spec.filter(|s| !is_version(s)) {
        let arch = pykiln_pyconfig::foreign::elf_arch(Path::new(path));
        if arch != Some(target.arch()) {
            bail!(
                "--python {path} is not an interpreter for {} (its architecture: {})",
                target.rust,
                arch.unwrap_or("unknown")
            );
        }
        return Ok(PathBuf::from(path));
    }
    let cache = cache.context("no cache directory to find pykiln's own interpreters in")?;
    let root = crate::root(cache);
    let found = match spec {
        Some(v) => crate::find(&root, v, target.rust),
        None => crate::installed(&root)
            .into_iter()
            .find(|i| i.portable.target == target.rust),
    };
    match found {
        Some(i) => Ok(i.python()),
        None => bail!(
            "no pykiln Python {}for {} in {}: build one with `pykiln python install {} --target {}`",
            spec.map(|v| format!("{v} ")).unwrap_or_default(),
            target.rust,
            root.display(),
            spec.unwrap_or("3.11"),
            target.rust
        ),
    }
}

/// Whether `s` is a version (`3.12`, `3.12.7`) rather than a path or command.
pub fn is_version(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_paths_are_told_apart() {
        assert!(is_version("3.12") && is_version("3.12.7"));
        for not in ["3", "python3.12", "/usr/bin/python3", "3.12-dev", "3..1"] {
            assert!(!is_version(not), "{not}");
        }
        assert_eq!(
            resolve(Some("/opt/py/bin/python3"), None).unwrap(),
            PathBuf::from("/opt/py/bin/python3")
        );
        let err = resolve(Some("3.99"), None).unwrap_err().to_string();
        assert!(err.contains("no Python 3.99 found"), "{err}");
    }

    #[test]
    fn a_version_prefers_pykilns_own_interpreter() {
        let cache = tempfile::tempdir().unwrap();
        let root = crate::root(cache.path());
        let host = toolchain::target(None).unwrap();
        crate::tests::fake(&root, "own", "3.11.2", host.rust);
        let prefix = root.join("own");
        assert_eq!(
            resolve(Some("3.11"), Some(cache.path())).unwrap(),
            prefix.join("bin/python3.11")
        );
    }
}
