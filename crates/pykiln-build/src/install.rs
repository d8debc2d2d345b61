//! Installing the app's dependencies with pip into a cached staging directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::project::Project;

/// Bumped when the staging layout changes, so old caches are not reused.
const STAGING_VERSION: &str = "1";

/// Install the project's dependencies into `<cache>/site/<hash>` unless an identical
/// install (same interpreter, same requirement text) is already there.
pub fn stage_dependencies(
    python: &Path,
    python_version: &str,
    project: &Project,
    cache: &Path,
) -> anyhow::Result<PathBuf> {
    let mut hasher = Sha256::new();
    hasher.update(STAGING_VERSION);
    hasher.update(python_version);
    hasher.update(python.as_os_str().as_encoded_bytes());
    let req_text = match &project.requirements {
        Some(file) => std::fs::read(file)
            .with_context(|| format!("reading requirements file {}", file.display()))?,
        None => project.dependencies.join("\n").into_bytes(),
    };
    hasher.update(&req_text);
    let key = crate::hex(&hasher.finalize()[..16]);
    let dir = cache.join("site").join(&key);
    if dir.join(".pykiln-complete").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache.join("site"))
        .with_context(|| format!("creating {}", cache.display()))?;
    let tmp = cache
        .join("site")
        .join(format!("{key}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;

    if project.requirements.is_some() || !project.dependencies.is_empty() {
        let mut cmd = Command::new(python);
        cmd.args(["-m", "pip", "install", "--target"])
            .arg(&tmp)
            .args([
                "--no-compile",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
            ])
            .env_remove("PYTHONPATH")
            .env_remove("PIP_TARGET")
            .env_remove("PIP_USER");
        match &project.requirements {
            Some(file) => {
                cmd.arg("-r").arg(file);
                if String::from_utf8_lossy(&req_text).contains("--hash=") {
                    cmd.arg("--require-hashes");
                }
            }
            None => {
                cmd.args(&project.dependencies);
            }
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {} -m pip", python.display()))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let detail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = detail[detail.len().saturating_sub(12)..].join("\n  ");
            bail!(
                "installing the dependencies of {} failed (pip exit status {}):\n  {tail}",
                project.dir.join("pyproject.toml").display(),
                out.status.code().unwrap_or(-1)
            );
        }
    }
    std::fs::write(tmp.join(".pykiln-complete"), req_text)?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another build finished the same install first; use theirs.
        Err(_) if dir.join(".pykiln-complete").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("moving the staged install to {}", dir.display()));
        }
    }
    Ok(dir)
}
