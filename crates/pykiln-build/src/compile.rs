//! Compiling modules to bytecode with the embedded interpreter, with a content cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

const COMPILER: &str = include_str!("../python/compile.py");

/// One module to compile.
#[derive(Debug, Clone)]
pub struct Job {
    /// Source file.
    pub path: PathBuf,
    /// File name recorded in the code object (relative to the archive root).
    pub filename: String,
    /// Report the module's top-level names (entry-point check).
    pub names: bool,
}

/// Compiled output of one job.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Cache file holding the marshalled code object.
    pub code_path: PathBuf,
    /// Top-level names, when asked for.
    pub names: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Reply {
    path: PathBuf,
    #[serde(default)]
    ok: bool,
    error: Option<String>,
    #[serde(default)]
    lineno: u32,
    names: Option<Vec<String>>,
}

/// Compile every job (cache hits are not recompiled); errors name file and line.
pub fn compile_all(
    python: &Path,
    cache_tag: &str,
    cache: &Path,
    jobs: &[Job],
) -> anyhow::Result<BTreeMap<PathBuf, Compiled>> {
    let dir = cache.join("bytecode").join(cache_tag);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut results = BTreeMap::new();
    let mut todo = Vec::new();
    for job in jobs {
        let source =
            std::fs::read(&job.path).with_context(|| format!("reading {}", job.path.display()))?;
        let mut h = Sha256::new();
        h.update(COMPILER);
        h.update(cache_tag);
        h.update(job.filename.as_bytes());
        h.update([0]);
        h.update(&source);
        let key = crate::hex(&h.finalize());
        let code_path = dir.join(format!("{key}.marshal"));
        if code_path.is_file() && !job.names {
            crate::cache::touch(&code_path);
            results.insert(
                job.path.clone(),
                Compiled {
                    code_path,
                    names: None,
                },
            );
        } else {
            todo.push((job, code_path));
        }
    }
    if todo.is_empty() {
        return Ok(results);
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(todo.len());
    let chunk = todo.len().div_ceil(threads);
    let replies: Vec<anyhow::Result<Vec<(Reply, PathBuf)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = todo
            .chunks(chunk)
            .map(|part| s.spawn(move || run_compiler(python, cache, part)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("bytecode compiler thread panicked")))
            })
            .collect()
    });
    let mut errors = Vec::new();
    for part in replies {
        for (reply, code_path) in part? {
            if reply.ok {
                results.insert(
                    reply.path,
                    Compiled {
                        code_path,
                        names: reply.names,
                    },
                );
            } else {
                let msg = reply.error.unwrap_or_else(|| "unknown error".into());
                errors.push(format!(
                    "{msg} in {}:{}",
                    reply.path.display(),
                    reply.lineno
                ));
            }
        }
    }
    if !errors.is_empty() {
        errors.sort();
        bail!("{}", errors.join("\n"));
    }
    Ok(results)
}

fn run_compiler(
    python: &Path,
    cache: &Path,
    part: &[(&Job, PathBuf)],
) -> anyhow::Result<Vec<(Reply, PathBuf)>> {
    let jobs: Vec<serde_json::Value> = part
        .iter()
        .map(|(j, out)| serde_json::json!({"path": j.path, "filename": j.filename, "out": out, "names": j.names}))
        .collect();
    let out = crate::pyrun::run_script(
        python,
        &["-I"],
        COMPILER,
        &serde_json::json!({ "jobs": jobs }),
        cache,
    )?;
    if !out.status.success() {
        bail!(
            "the bytecode compiler failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let by_path: BTreeMap<&Path, &PathBuf> =
        part.iter().map(|(j, o)| (j.path.as_path(), o)).collect();
    let mut replies = Vec::new();
    for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let reply: Reply =
            serde_json::from_slice(line).context("unreadable reply from the bytecode compiler")?;
        let code_path = by_path
            .get(reply.path.as_path())
            .map(|p| (*p).clone())
            .unwrap_or_default();
        replies.push((reply, code_path));
    }
    if replies.len() != part.len() {
        bail!(
            "the bytecode compiler answered {} of {} jobs",
            replies.len(),
            part.len()
        );
    }
    Ok(replies)
}
