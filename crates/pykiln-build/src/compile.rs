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
    /// A module that does not compile is a build error (the app's own modules); else
    /// it is reported in [`Outcome::failed`] and the build goes on (a dependency's
    /// Python 2 leftover or template with a `.py` suffix, which a venv never imports).
    pub strict: bool,
}

/// Why a module did not compile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Failure {
    /// `SyntaxError: invalid hexadecimal literal`.
    pub error: String,
    /// 1-based line, 0 when unknown.
    pub lineno: u32,
}

/// What [`compile_all`] produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Compiled modules by source path.
    pub compiled: BTreeMap<PathBuf, Compiled>,
    /// Non-strict modules that do not compile, by source path.
    pub failed: BTreeMap<PathBuf, Failure>,
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
    /// The source itself is not valid Python (not an unreadable file).
    #[serde(default)]
    compile_error: bool,
    names: Option<Vec<String>>,
}

/// Compile every job (cache hits, and known failures, are not recompiled); errors of
/// strict jobs name file and line.
pub fn compile_all(
    python: &Path,
    cache_tag: &str,
    cache: &Path,
    jobs: &[Job],
) -> anyhow::Result<Outcome> {
    let dir = cache.join("bytecode").join(cache_tag);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut results = BTreeMap::new();
    let mut failed = BTreeMap::new();
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
        } else if let Some(failure) = (!job.strict).then(|| known_failure(&code_path)).flatten() {
            failed.insert(job.path.clone(), failure);
        } else {
            todo.push((job, code_path));
        }
    }
    if todo.is_empty() {
        return Ok(Outcome {
            compiled: results,
            failed,
        });
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
    let strict: BTreeMap<&Path, bool> = jobs.iter().map(|j| (j.path.as_path(), j.strict)).collect();
    let mut errors = Vec::new();
    for part in replies {
        for (reply, code_path) in part? {
            let lenient = reply.compile_error && strict.get(reply.path.as_path()) == Some(&false);
            if reply.ok {
                results.insert(
                    reply.path,
                    Compiled {
                        code_path,
                        names: reply.names,
                    },
                );
            } else if lenient {
                let failure = Failure {
                    error: reply.error.unwrap_or_else(|| "unknown error".into()),
                    lineno: reply.lineno,
                };
                remember_failure(&code_path, &failure);
                failed.insert(reply.path, failure);
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
    Ok(Outcome {
        compiled: results,
        failed,
    })
}

/// The failure recorded beside `code_path` by an earlier build: the same source with
/// the same compiler fails the same way, and asking Python again costs a process.
fn known_failure(code_path: &Path) -> Option<Failure> {
    let path = code_path.with_extension("error");
    let failure = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    crate::cache::touch(&path);
    Some(failure)
}

fn remember_failure(code_path: &Path, failure: &Failure) {
    if let Ok(json) = serde_json::to_vec(failure) {
        // A cache entry only: a build that cannot write it just asks Python again.
        let _ = crate::cache::write_atomic(&code_path.with_extension("error"), &json);
    }
}

/// Run compile.py on `input`; its output, or an error with its stderr if it failed.
fn run_compiler_script(
    python: &Path,
    cache: &Path,
    input: &serde_json::Value,
) -> anyhow::Result<std::process::Output> {
    let out = crate::pyrun::run_script(python, &["-I"], COMPILER, input, cache)?;
    if !out.status.success() {
        bail!(
            "the bytecode compiler failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
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
    let out = run_compiler_script(python, cache, &serde_json::json!({ "jobs": jobs }))?;
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

/// A source string the app's start-up compiles, as recorded (see
/// [`pykiln_archive::compiled`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Source {
    /// `exec`, `eval` or `single`.
    pub mode: String,
    /// Compiler flags in effect (`__future__` features only).
    pub flags: u32,
    /// Resolved optimization level.
    pub optimize: i32,
    /// The code's file name.
    pub filename: String,
    /// The source text.
    pub source: String,
}

impl Source {
    /// The archive's key for this source.
    pub fn key(&self) -> pykiln_archive::SourceKey<'_> {
        pykiln_archive::SourceKey {
            mode: &self.mode,
            flags: self.flags,
            optimize: self.optimize,
            filename: &self.filename,
            source: &self.source,
        }
    }
}

/// A regular expression the app's start-up compiles through `re`, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Regex {
    /// The pattern (a bytes pattern as Latin-1 text).
    pub pattern: String,
    /// Whether the pattern is bytes.
    pub bytes: bool,
    /// Its flags as `re`'s cache keys them.
    pub flags: i64,
}

/// What [`compile_startup`] gives.
#[derive(Debug, Default)]
pub struct StartupCode {
    /// Each recorded source string that compiled, with its `marshal` dump.
    pub sources: Vec<(Source, Vec<u8>)>,
    /// The `re` cache seeds (see [`pykiln_archive::compiled::REGEX_KEY`]), if any
    /// pattern qualified.
    pub regex_seeds: Option<Vec<u8>>,
}

/// Compile what the start-up recording found, in one fresh interpreter (so the
/// marshalled bytes depend only on the inputs, like the modules' bytecode): each
/// source string exactly as it was compiled at start-up, and for each regular
/// expression the arguments `re` passes to `_sre.compile`, from this interpreter's own
/// `re` compiler and checked to give an equal pattern. What does not compile, or warns
/// when compiled, is left out (the binary compiles it at run time, as before). Cached
/// by content: a one-line edit of the app rarely changes what its start-up compiles.
pub fn compile_startup(
    python: &Path,
    cache: &Path,
    sources: Vec<Source>,
    regexes: Vec<Regex>,
) -> anyhow::Result<StartupCode> {
    if sources.is_empty() && regexes.is_empty() {
        return Ok(StartupCode::default());
    }
    let input = serde_json::json!({ "sources": sources, "regexes": regexes });
    let mut h = Sha256::new();
    h.update(COMPILER);
    h.update(python.as_os_str().as_encoded_bytes());
    h.update(serde_json::to_vec(&input)?);
    let file = cache
        .join("baseline")
        .join(format!("startup-{}.jsonl", crate::hex(&h.finalize()[..16])));
    let stdout = match std::fs::read(&file) {
        Ok(bytes) => {
            crate::cache::touch(&file);
            bytes
        }
        Err(_) => {
            let out = run_compiler_script(python, cache, &input)?;
            if let Some(dir) = file.parent() {
                // A cache entry only: a build that cannot write it compiles again.
                let _ = std::fs::create_dir_all(dir)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| crate::cache::write_atomic(&file, &out.stdout));
            }
            out.stdout
        }
    };
    parse_startup(&stdout, sources)
}

/// compile.py's answer for [`compile_startup`]: one line per source, then the seeds.
fn parse_startup(stdout: &[u8], sources: Vec<Source>) -> anyhow::Result<StartupCode> {
    #[derive(Deserialize)]
    struct SourceReply {
        code: Option<String>,
    }
    #[derive(Deserialize)]
    struct SeedReply {
        seeds: String,
        count: usize,
    }
    let mut lines = stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let mut code = StartupCode::default();
    for source in sources {
        let line = lines
            .next()
            .context("the bytecode compiler answered fewer lines than source strings")?;
        let reply: SourceReply =
            serde_json::from_slice(line).context("unreadable reply from the bytecode compiler")?;
        if let Some(hex) = reply.code {
            let bytes = crate::unhex(&hex).context("bad hex from the bytecode compiler")?;
            code.sources.push((source, bytes));
        }
    }
    let line = lines
        .next()
        .context("the bytecode compiler did not answer for the regular expressions")?;
    let reply: SeedReply =
        serde_json::from_slice(line).context("unreadable reply from the bytecode compiler")?;
    if reply.count > 0 {
        code.regex_seeds =
            Some(crate::unhex(&reply.seeds).context("bad hex from the bytecode compiler")?);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python() -> PathBuf {
        pykiln_pyconfig::PythonConfig::discover()
            .expect("the build's Python")
            .executable
    }

    #[test]
    fn only_strict_modules_fail_the_build_and_failures_are_remembered() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("good.py");
        let py2 = d.path().join("py2.py");
        std::fs::write(&good, "x = 1\n").unwrap();
        std::fs::write(&py2, "x = 1\nprint 'hello'\n").unwrap();
        let cache = d.path().join("cache");
        let job = |path: &Path, strict| Job {
            path: path.to_path_buf(),
            filename: path.file_name().unwrap().to_string_lossy().into_owned(),
            names: false,
            strict,
        };
        let jobs = [job(&good, false), job(&py2, false)];
        let out = compile_all(&python(), "cpython-test", &cache, &jobs).unwrap();
        assert!(out.compiled.contains_key(&good));
        let failure = &out.failed[&py2];
        assert!(failure.error.starts_with("SyntaxError"), "{failure:?}");
        assert_eq!(failure.lineno, 2);

        // The next build knows both without running Python.
        let nowhere = d.path().join("no-python-here");
        let again = compile_all(&nowhere, "cpython-test", &cache, &jobs).unwrap();
        assert_eq!(again.failed[&py2], *failure);
        assert!(again.compiled.contains_key(&good));

        // An app module (strict) that does not compile is an error naming file:line.
        let err = compile_all(&python(), "cpython-test", &cache, &[job(&py2, true)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SyntaxError") && err.contains("py2.py:2"),
            "{err}"
        );
    }

    #[test]
    fn start_up_code_compiles_as_recorded_leaves_out_what_fails_or_warns_and_is_cached() {
        let d = tempfile::tempdir().unwrap();
        let source = |mode: &str, flags: u32, text: &str| Source {
            mode: mode.into(),
            flags,
            optimize: 0,
            filename: "<string>".into(),
            source: text.into(),
        };
        // 0x1000000: `from __future__ import annotations` on 3.7–3.13.
        let sources = vec![
            source("eval", 0, "list[int] | None"),
            source("exec", 0x100_0000, "def f(x: undefined): pass"),
            source("exec", 0, "1 +"),
        ];
        let regexes = vec![
            Regex {
                pattern: "(?P<word>[a-z]+)".into(),
                bytes: false,
                flags: 2,
            },
            // A possible nested set: it warns, so it is left out.
            Regex {
                pattern: "[[a]".into(),
                bytes: false,
                flags: 0,
            },
        ];
        let cache = d.path().join("cache");
        let out = compile_startup(&python(), &cache, sources.clone(), regexes.clone()).unwrap();
        let kept: Vec<&Source> = out.sources.iter().map(|(s, _)| s).collect();
        assert_eq!(kept, [&sources[0], &sources[1]]);
        for (s, code) in &out.sources {
            // marshal's TYPE_CODE, with or without its reference flag.
            assert_eq!(code.first().map(|b| b & 0x7f), Some(b'c'), "{s:?}");
        }
        // A list of one (flags, arguments) pair: TYPE_LIST, length 1.
        let seeds = out.regex_seeds.expect("seeds");
        assert_eq!((seeds[0] & 0x7f, &seeds[1..5]), (b'[', &[1, 0, 0, 0][..]));
        // The second build reads the cache, and gets the same.
        let cached = std::fs::read_dir(cache.join("baseline")).unwrap().count();
        assert_eq!(cached, 1);
        let again = compile_startup(&python(), &cache, sources, regexes).unwrap();
        assert_eq!(again.sources, out.sources);
        assert_eq!(again.regex_seeds.as_deref(), Some(&seeds[..]));
        let none = compile_startup(&python(), &cache, Vec::new(), Vec::new()).unwrap();
        assert!(none.sources.is_empty() && none.regex_seeds.is_none());
    }
}
