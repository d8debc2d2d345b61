//! Which packed modules fail to import in a plain environment (cached by content).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

const SCRIPT: &str = include_str!("../python/baseline.py");

/// Import `modules` with `paths` prepended to `sys.path` in a fresh interpreter and
/// return the failures (a module that hangs on import is one, "hangs on import"). A
/// run that crashes or reaches the ceiling yields a warning naming the module it was
/// in and the failures found until then; only complete runs are cached.
pub fn import_failures(
    python: &Path,
    paths: &[PathBuf],
    modules: &[&str],
    excluded: &crate::Excludes,
    cache: &Path,
    timeout: std::time::Duration,
    warnings: &mut Vec<String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let (stdlib_excludes, excludes) = (excluded.patterns(), excluded.user_patterns());
    let mut h = Sha256::new();
    h.update(SCRIPT);
    h.update(timeout.as_millis().to_le_bytes());
    h.update(python.as_os_str().as_encoded_bytes());
    for p in paths {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update([0]);
    }
    for m in modules
        .iter()
        .copied()
        .chain(stdlib_excludes.iter().map(String::as_str))
        .chain(["\0"])
        .chain(excludes.iter().map(String::as_str))
    {
        h.update(m.as_bytes());
        h.update([0]);
    }
    let key = crate::hex(&h.finalize()[..16]);
    let dir = cache.join("baseline");
    let file = dir.join(format!("{key}.json"));
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok(map) = serde_json::from_str(&text) {
            crate::cache::touch(&file);
            return Ok(map);
        }
    }
    let input = serde_json::json!({
        "paths": paths,
        "modules": modules,
        "stdlib_excludes": stdlib_excludes,
        "excludes": excludes,
        "timeout": timeout.as_secs_f64(),
    });
    let (stdout, ended) = match crate::pyrun::run_script_limited(
        python,
        &["-I", "-S"],
        SCRIPT,
        &input,
        cache,
        CEILING,
    ) {
        Ok(out) => (out.stdout, format!("exit status {:?}", out.status.code())),
        Err(e) => match e.downcast::<crate::pyrun::TimedOut>() {
            Ok(t) => (t.stdout, format!("killed after {} s", t.limit.as_secs())),
            Err(e) => return Err(e),
        },
    };
    let run = Run::parse(&stdout);
    if run.done {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::cache::write_atomic(&file, &serde_json::to_vec(&run.failures)?)?;
    } else {
        let stuck = run
            .current
            .map(|m| format!(" while importing {m}"))
            .unwrap_or_default();
        warnings.push(format!(
            "the import baseline did not finish ({ended}{stuck}); `--pykiln verify` will count \
             import failures of the modules it did not reach"
        ));
    }
    Ok(run.failures)
}

/// How long one import may take in the baseline before it counts as hanging.
pub const IMPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long the whole baseline may take (it is killed after).
const CEILING: std::time::Duration = std::time::Duration::from_secs(900);

/// What a baseline run reported.
#[derive(Debug, Default)]
struct Run {
    failures: BTreeMap<String, String>,
    /// The module whose import started last without a result.
    current: Option<String>,
    done: bool,
}

impl Run {
    fn parse(stdout: &[u8]) -> Run {
        #[derive(serde::Deserialize)]
        struct Event {
            start: Option<String>,
            fail: Option<String>,
            why: Option<String>,
            done: Option<bool>,
        }
        let mut run = Run::default();
        for line in stdout.split(|&b| b == b'\n') {
            // Anything else on stdout (a module's print) is not an event.
            let Ok(e) = serde_json::from_slice::<Event>(line) else {
                continue;
            };
            if let Some(m) = e.start {
                run.current = Some(m);
            }
            if let Some(m) = e.fail {
                run.failures.insert(m, e.why.unwrap_or_default());
            }
            if e.done == Some(true) {
                run.done = true;
                run.current = None;
            }
        }
        run
    }
}

/// What the start-up recording found.
#[derive(Debug, Default)]
pub struct Startup {
    /// The modules the app loads at start-up, in load order.
    pub order: Vec<String>,
    /// The source strings its import compiled, sorted, without duplicates.
    pub sources: Vec<crate::compile::Source>,
    /// The regular expressions it compiled through `re`, sorted, without duplicates.
    pub regexes: Vec<crate::compile::Regex>,
    /// What it opened, listed, loaded or ran by path under the import roots.
    pub touched: Vec<crate::ondisk::Touch>,
}

/// The modules the app loads at start-up, in load order: the entry module imported in
/// a plain interpreter over the same files (after the `.pth` import lines). The
/// runtime decompresses them ahead of the importer on another core, and the archive
/// lays them out first. Never cached: an edit can change what the app imports, and
/// the run overlaps the rest of the build.
///
/// The same run records the source strings the import compiles (see
/// [`pykiln_archive::compiled`]), for [`crate::compile::compile_startup`].
pub fn startup_order(
    python: &Path,
    paths: &[PathBuf],
    entry_module: &str,
    pth_imports: &[String],
    stdlib_excludes: &[String],
    excludes: &[String],
    cache: &Path,
) -> anyhow::Result<Startup> {
    let input = serde_json::json!({
        "paths": paths,
        "startup": entry_module,
        "pth_imports": pth_imports,
        "stdlib_excludes": stdlib_excludes,
        "excludes": excludes,
    });
    let out = crate::pyrun::run_script_limited(
        python,
        // Not -I: it ignores PYTHONHASHSEED, and what the start-up compiles must not
        // depend on hash randomization (`tokenize` builds a pattern from a set). -s -S,
        // the scratch environment and the script dropping the working directory from
        // sys.path isolate it the same way.
        &["-s", "-S"],
        SCRIPT,
        &input,
        cache,
        std::time::Duration::from_secs(120),
    )?;
    #[derive(serde::Deserialize)]
    struct Reply {
        startup: Vec<String>,
        #[serde(default)]
        sources: Vec<crate::compile::Source>,
        #[serde(default)]
        regexes: Vec<crate::compile::Regex>,
        #[serde(default)]
        touched: Vec<(String, String)>,
    }
    match serde_json::from_slice::<Reply>(crate::pyrun::last_line(&out.stdout)) {
        Ok(r) if out.status.success() => Ok(Startup {
            order: r.startup,
            sources: r.sources,
            regexes: r.regexes,
            touched: r
                .touched
                .into_iter()
                .map(|(event, path)| crate::ondisk::Touch { event, path })
                .collect(),
        }),
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last_line = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            anyhow::bail!("exit status {:?}: {last_line}", out.status.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_run_keeps_its_findings_and_names_where_it_stopped() {
        let out = b"{\"start\": \"a\"}\n{\"fail\": \"a\", \"why\": \"ImportError: x\"}\nnoise printed by a module\n{\"start\": \"b.server\"}\n";
        let run = Run::parse(out);
        assert!(!run.done);
        assert_eq!(run.current.as_deref(), Some("b.server"));
        assert_eq!(run.failures["a"], "ImportError: x");
        let done = Run::parse(b"{\"start\": \"a\"}\n{\"done\": true}\n");
        assert!(done.done && done.current.is_none() && done.failures.is_empty());
    }
}
