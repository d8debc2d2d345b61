//! Which packed modules fail to import in a plain environment (cached by content).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

const SCRIPT: &str = include_str!("../python/baseline.py");

/// Import `modules` with `paths` prepended to `sys.path` in a fresh interpreter and
/// return the failures. A crashed baseline run yields a warning and no baseline.
pub fn import_failures(
    python: &Path,
    paths: &[PathBuf],
    modules: &[&str],
    stdlib_excludes: &[String],
    excludes: &[String],
    cache: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut h = Sha256::new();
    h.update(SCRIPT);
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
            return Ok(map);
        }
    }
    let input = serde_json::json!({
        "paths": paths,
        "modules": modules,
        "stdlib_excludes": stdlib_excludes,
        "excludes": excludes,
    });
    let out = crate::pyrun::run_script(python, &["-I", "-S"], SCRIPT, &input)?;
    match serde_json::from_slice::<BTreeMap<String, String>>(crate::pyrun::last_line(&out.stdout)) {
        Ok(map) => {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!("{key}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec(&map)?)?;
            std::fs::rename(&tmp, &file)?;
            Ok(map)
        }
        Err(_) => {
            warnings.push(format!(
                "the import baseline run failed (exit status {:?}); `--pykiln verify` will count every import failure",
                out.status.code()
            ));
            Ok(BTreeMap::new())
        }
    }
}

/// The modules the app loads at start-up, in load order: the entry module imported in
/// a plain interpreter over the same files (after the `.pth` import lines). The
/// runtime decompresses them ahead of the importer on another core, and the archive
/// lays them out first. Never cached: an edit can change what the app imports, and
/// the run overlaps the rest of the build.
pub fn startup_order(
    python: &Path,
    paths: &[PathBuf],
    entry_module: &str,
    pth_imports: &[String],
    stdlib_excludes: &[String],
    excludes: &[String],
) -> anyhow::Result<Vec<String>> {
    let input = serde_json::json!({
        "paths": paths,
        "startup": entry_module,
        "pth_imports": pth_imports,
        "stdlib_excludes": stdlib_excludes,
        "excludes": excludes,
    });
    let out = crate::pyrun::run_script_limited(
        python,
        &["-I", "-S"],
        SCRIPT,
        &input,
        std::time::Duration::from_secs(120),
    )?;
    #[derive(serde::Deserialize)]
    struct Reply {
        startup: Vec<String>,
    }
    match serde_json::from_slice::<Reply>(crate::pyrun::last_line(&out.stdout)) {
        Ok(r) if out.status.success() => Ok(r.startup),
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last_line = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            anyhow::bail!("exit status {:?}: {last_line}", out.status.code())
        }
    }
}
