//! pykiln's own CPython: built from pinned sources with every C dependency of the
//! standard library linked in statically, against glibc 2.17 (so that binaries
//! embedding it run on any Linux since 2014), and installed under the cache.
//!
//! - [`sources`]: the pinned archives and where they are found.
//! - [`toolchain`]: zig and cargo-zigbuild, the compilers that target the old glibc.
//! - [`recipe`]: the build itself.
//! - [`request`]: which interpreter `--python 3.11` or `[tool.pykiln] python` names.
//! - this module: the installed interpreters (`pykiln python list/find/remove`).

pub mod recipe;
pub mod request;
pub mod sources;
pub mod toolchain;

use std::path::{Path, PathBuf};

pub use pykiln_pyconfig::{PORTABLE_FILE, Portable};

/// An interpreter pykiln built.
#[derive(Debug, Clone)]
pub struct Installation {
    /// Its prefix.
    pub dir: PathBuf,
    /// What was recorded about it.
    pub portable: Portable,
}

impl Installation {
    /// The interpreter executable (`bin/python3.X`).
    pub fn python(&self) -> PathBuf {
        let minor: Vec<&str> = self.portable.version.split('.').take(2).collect();
        self.dir
            .join("bin")
            .join(format!("python{}", minor.join(".")))
    }
}

/// Where interpreters are installed: `<cache>/python`.
pub fn root(cache: &Path) -> PathBuf {
    cache.join("python")
}

/// Every complete installation under `root`, newest version first (and of one version,
/// the optimised builds first).
pub fn installed(root: &Path) -> Vec<Installation> {
    let mut out: Vec<Installation> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| installed_at(&e.path()))
        .collect();
    // Newest first; of one version, what this pykiln's recipe builds before what an
    // older one left (another toolchain), and an optimised build (PGO) before a plain
    // one.
    out.sort_by(|a, b| {
        version_key(&b.portable.version)
            .cmp(&version_key(&a.portable.version))
            .then_with(|| is_current(b).cmp(&is_current(a)))
            .then_with(|| {
                b.portable
                    .optimizations
                    .len()
                    .cmp(&a.portable.optimizations.len())
            })
            .then_with(|| a.dir.cmp(&b.dir))
    });
    out
}

/// The newest installation matching `request` (`3.11`, `3.11.2`) for `target`.
pub fn find(root: &Path, request: &str, target: &str) -> Option<Installation> {
    installed(root)
        .into_iter()
        .find(|i| i.portable.target == target && version_matches(&i.portable.version, request))
}

/// Whether `version` (`3.11.2`) is what `request` asks for: itself, or a prefix of whole
/// components (`3.11`, not `3.1`).
pub fn version_matches(version: &str, request: &str) -> bool {
    version == request
        || version
            .strip_prefix(request)
            .is_some_and(|r| r.starts_with('.'))
}

/// The complete installation in `prefix` (its record and its interpreter), if any.
pub fn installed_at(prefix: &Path) -> Option<Installation> {
    let portable = Portable::read(prefix)?.ok()?;
    let installation = Installation {
        dir: prefix.to_path_buf(),
        portable,
    };
    installation.python().is_file().then_some(installation)
}

/// The installations no request picks any more: for each version and target, all but
/// the one [`installed`] puts first (another toolchain's or recipe's build, a plain one
/// beside a profile-guided one).
pub fn superseded(root: &Path) -> Vec<Installation> {
    let mut seen = std::collections::HashSet::new();
    installed(root)
        .into_iter()
        .filter(|i| !seen.insert((i.portable.version.clone(), i.portable.target.clone())))
        .collect()
}

/// Remove an installation: under its install lock (never while it is being built), its
/// directory is first renamed to a hidden name, so that no build picks up a half-removed
/// interpreter, then deleted. Returns the bytes freed.
pub fn remove(installation: &Installation, say: &mut dyn FnMut(&str)) -> anyhow::Result<u64> {
    use anyhow::Context as _;
    let dir = &installation.dir;
    let root = dir
        .parent()
        .with_context(|| format!("{} has no parent directory", dir.display()))?;
    let _lock = recipe::InstallLock::take(root, &installation.portable.key, say)?;
    let size = disk_usage(dir);
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no name", dir.display()))?;
    let doomed = root.join(format!(
        ".removing-{}-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::rename(dir, &doomed)
        .with_context(|| format!("moving {} aside to remove it", dir.display()))?;
    std::fs::remove_dir_all(&doomed).with_context(|| format!("removing {}", doomed.display()))?;
    Ok(size)
}

/// Bytes in the files under `dir` (symbolic links not followed), 0 if it is missing.
pub fn disk_usage(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Whether this pykiln's recipe would build `i` today (its key is a current one).
fn is_current(i: &Installation) -> bool {
    let Some(pin) = sources::CPYTHON
        .iter()
        .find(|p| p.version == i.portable.version)
    else {
        return false;
    };
    let Ok(target) = toolchain::target(Some(&i.portable.target)) else {
        return false;
    };
    [false, true]
        .iter()
        .any(|&pgo| recipe::key(pin, &target, pgo) == i.portable.key)
}

/// A version's numeric components, for ordering (`3.11.10` after `3.11.2`).
pub(crate) fn version_key(v: &str) -> Vec<u32> {
    v.split('.').filter_map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An installation record and interpreter file under `root/name` (its key: `name`).
    pub(crate) fn fake(root: &Path, name: &str, version: &str, target: &str) {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let minor: Vec<&str> = version.split('.').take(2).collect();
        std::fs::write(
            dir.join("bin").join(format!("python{}", minor.join("."))),
            b"",
        )
        .unwrap();
        let p = Portable {
            version: version.into(),
            target: target.into(),
            glibc: "2.17".into(),
            toolchain: PathBuf::from("/t"),
            key: name.into(),
            sources: Default::default(),
            optimizations: Vec::new(),
        };
        std::fs::write(dir.join(PORTABLE_FILE), serde_json::to_vec(&p).unwrap()).unwrap();
    }

    #[test]
    fn requests_find_the_newest_matching_complete_installation() {
        let dir = tempfile::tempdir().unwrap();
        let x86 = "x86_64-unknown-linux-gnu";
        fake(dir.path(), "a", "3.11.2", x86);
        fake(dir.path(), "b", "3.11.10", x86);
        fake(dir.path(), "c", "3.12.1", "aarch64-unknown-linux-gnu");
        // Of one version, this recipe's build before another toolchain's ("0-old"
        // sorts first by name).
        let pin = sources::CPYTHON[0];
        let host = toolchain::TARGETS[0];
        fake(dir.path(), "0-old", pin.version, host.rust);
        let current = recipe::key(&pin, &host, false);
        fake(dir.path(), &current, pin.version, host.rust);
        // Being built: no record yet.
        std::fs::create_dir_all(dir.path().join(".build-x")).unwrap();
        std::fs::create_dir_all(dir.path().join("d/bin")).unwrap();
        let found = |r: &str, t: &str| find(dir.path(), r, t).map(|i| i.portable.version);
        assert_eq!(found("3.11", x86).as_deref(), Some("3.11.10"));
        assert_eq!(found("3.11.2", x86).as_deref(), Some("3.11.2"));
        assert_eq!(found("3.1", x86), None);
        assert_eq!(found("3.12", x86), None);
        assert_eq!(installed(dir.path()).len(), 5);
        let chosen = find(dir.path(), pin.version, host.rust).unwrap();
        assert_eq!(chosen.portable.key, current);

        // Superseded: only the other toolchain's build of the pinned version.
        let old: Vec<String> = superseded(dir.path())
            .into_iter()
            .map(|i| i.portable.key)
            .collect();
        assert_eq!(old, ["0-old"]);
    }

    #[test]
    fn removing_an_installation_deletes_it_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let x86 = "x86_64-unknown-linux-gnu";
        fake(dir.path(), "a", "3.11.2", x86);
        fake(dir.path(), "b", "3.13.5", x86);
        std::fs::write(dir.path().join("a/lib.bin"), vec![0u8; 5000]).unwrap();
        let a = find(dir.path(), "3.11", x86).unwrap();
        let freed = remove(&a, &mut |_| {}).unwrap();
        assert!(freed >= 5000, "{freed}");
        assert!(!dir.path().join("a").exists());
        assert!(find(dir.path(), "3.11", x86).is_none());
        assert!(find(dir.path(), "3.13", x86).is_some());
        // Nothing left behind but the lock file.
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "b" && !n.starts_with(".lock-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
