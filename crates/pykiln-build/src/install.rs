//! Installing the app's dependencies with pip into a cached staging directory.
//!
//! Resolution is explicit. A staged install is keyed by what it contains — the
//! resolved pins (`name==version` of every distribution pip installed) — and a small
//! map records which pins a requirement text resolved to under which index settings
//! (the `PIP_*` environment and pip's configuration files). So an unpinned
//! `mcp>=2` is resolved again when the requirement text or the index settings change,
//! or on request (`PYKILN_REFRESH=1`); a refresh that resolves to the same pins reuses
//! the staged install. To pin everything, point `[tool.pykiln] requirements` at a lock
//! file (`uv pip compile --generate-hashes`, `pip-compile --generate-hashes`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::project::Project;

/// Bumped when the staging layout changes, so old caches are not reused.
const STAGING_VERSION: &str = "2";

/// Set to resolve the requirements again even when their text and the index settings
/// did not change.
pub const REFRESH_ENV: &str = "PYKILN_REFRESH";

/// pip settings that change what a requirement resolves to, besides `PIP_*` variables.
pub const PIP_ENV: &[&str] = &[
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_PRE",
    "PIP_CONSTRAINT",
    "PIP_CONFIG_FILE",
];

/// The key of a requirement text under the current index settings: every `PIP_*`
/// variable and the content of pip's configuration files.
fn requirement_key(
    base: &[&[u8]],
    req_text: &[u8],
    env: impl IntoIterator<Item = (String, String)>,
    config_files: &[PathBuf],
) -> String {
    let mut h = Sha256::new();
    for b in base {
        h.update(b);
        h.update([0]);
    }
    h.update(req_text);
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("PIP_"))
        .collect();
    env.sort();
    for (k, v) in env {
        h.update(format!("\0{k}={v}"));
    }
    for f in config_files {
        if let Ok(bytes) = std::fs::read(f) {
            h.update(f.as_os_str().as_encoded_bytes());
            h.update(bytes);
        }
    }
    crate::hex(&h.finalize()[..16])
}

/// A directory holding `_manylinux.py`, PEP 600's hook that pip (its vendored
/// `packaging`) asks whether a `manylinux_X_Y` wheel runs here: yes only up to
/// `floor`, whatever the build machine's glibc.
fn manylinux_hook(cache: &Path, floor: &str) -> anyhow::Result<tempfile::TempDir> {
    let (major, minor) = floor
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .with_context(|| format!("glibc floor {floor:?} is not MAJOR.MINOR"))?;
    let dir = tempfile::Builder::new()
        .prefix("manylinux-")
        .tempdir_in(cache)
        .with_context(|| format!("creating a directory in {}", cache.display()))?;
    let source = format!(
        "# pykiln: wheels must run on glibc {floor} (PEP 600).\n\
         def manylinux_compatible(tag_major, tag_minor, tag_arch):\n    \
         return (tag_major, tag_minor) <= ({major}, {minor})\n\n\
         manylinux1_compatible = (2, 5) <= ({major}, {minor})\n\
         manylinux2010_compatible = (2, 12) <= ({major}, {minor})\n\
         manylinux2014_compatible = (2, 17) <= ({major}, {minor})\n"
    );
    std::fs::write(dir.path().join("_manylinux.py"), source)
        .with_context(|| format!("writing {}", dir.path().display()))?;
    Ok(dir)
}

/// pip's configuration files, in the places pip reads them on Linux.
fn pip_config_files() -> Vec<PathBuf> {
    let mut files = vec![
        PathBuf::from("/etc/pip.conf"),
        PathBuf::from("/etc/xdg/pip/pip.conf"),
    ];
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        files.push(home.join(".pip/pip.conf"));
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config"));
        files.push(config.join("pip/pip.conf"));
    }
    if let Some(f) = std::env::var_os("PIP_CONFIG_FILE") {
        files.push(PathBuf::from(f));
    }
    files
}

/// Variables pip needs besides `PIP_*`: proxies, CA bundles, credentials.
const PIP_PASSTHROUGH: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NETRC",
];

/// Give pip, running in a scratch home, the user's settings: every `PIP_*` variable,
/// proxies and CA bundles, the user's pip configuration file and `.netrc` (by path),
/// and the user's pip download cache (so staging again does not download again).
fn pip_environment(cmd: &mut Command) {
    for (k, v) in std::env::vars_os() {
        let Some(name) = k.to_str() else { continue };
        if name.starts_with("PIP_") || PIP_PASSTHROUGH.contains(&name) {
            cmd.env(&k, v);
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    if std::env::var_os("PIP_CONFIG_FILE").is_none() {
        // pip reads one user file (the first that exists); the global ones it still finds.
        let user = pip_config_files()
            .into_iter()
            .filter(|f| !f.starts_with("/etc"))
            .find(|f| f.is_file());
        if let Some(f) = user {
            cmd.env("PIP_CONFIG_FILE", f);
        }
    }
    if std::env::var_os("PIP_CACHE_DIR").is_none() {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".cache")));
        if let Some(c) = cache {
            cmd.env("PIP_CACHE_DIR", c.join("pip"));
        }
    }
    if let Some(netrc) = home.map(|h| h.join(".netrc")).filter(|n| n.is_file()) {
        if std::env::var_os("NETRC").is_none() {
            cmd.env("NETRC", netrc);
        }
    }
}

/// `cmd -m pip install --target TARGET` as every pip run of the build: pip runs
/// third-party code too (sdists' build backends), so in a scratch home like every
/// build-time child, with what pip needs from the user's environment, no bytecode, no
/// prompts, and none of the user's settings of where pip installs. The scratch home
/// lives as long as the returned [`crate::pyrun::Scratch`].
fn pip_install(
    mut cmd: Command,
    target: &Path,
    cache: &Path,
) -> anyhow::Result<(Command, crate::pyrun::Scratch)> {
    let scratch = crate::pyrun::Scratch::new(cache)?;
    scratch.isolate(&mut cmd)?;
    pip_environment(&mut cmd);
    cmd.args(["-m", "pip", "install", "--target"])
        .arg(target)
        .args([
            "--no-compile",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
        ])
        .env_remove("PIP_TARGET")
        .env_remove("PIP_USER")
        .env_remove("PIP_PREFIX");
    Ok((cmd, scratch))
}

/// pip's options for installing wheels of another CPU's Linux: the version, and every
/// manylinux tag of `arch` up to the glibc floor (2.17 when none is known: the oldest
/// any wheel index still serves), with the legacy aliases of 2.5, 2.12 and 2.17.
fn target_platform_args(
    arch: &str,
    python_version: &str,
    glibc_floor: Option<&str>,
) -> Vec<String> {
    let top = glibc_floor
        .and_then(|f| f.strip_prefix("2."))
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(17);
    let minor: Vec<&str> = python_version.split('.').take(2).collect();
    let mut args: Vec<String> = vec![
        "--only-binary=:all:".into(),
        "--implementation".into(),
        "cp".into(),
        "--python-version".into(),
        minor.join("."),
    ];
    let mut tags: Vec<String> = (5..=top)
        .map(|m| format!("manylinux_2_{m}_{arch}"))
        .collect();
    for (alias, since) in [
        ("manylinux1", 5),
        ("manylinux2010", 12),
        ("manylinux2014", 17),
    ] {
        if since <= top {
            tags.push(format!("{alias}_{arch}"));
        }
    }
    for tag in tags {
        args.extend(["--platform".to_string(), tag]);
    }
    args
}

/// The distributions staged in `site` (but `project`, the app's own), installed again
/// for `twin`'s platform into `<cache>/site/twin-<hash>`: for an import baseline of
/// another CPU's build run on its twin, whose failures are those of the target (a
/// missing optional dependency, another operating system's module) but for the CPU.
pub fn stage_for_twin(
    twin: &Path,
    site: &Path,
    project: &str,
    cache: &Path,
) -> anyhow::Result<PathBuf> {
    let project = crate::project::normalize(project);
    let pins: Vec<String> = resolved_pins(site)?
        .lines()
        .filter(|p| p.split_once("==").is_none_or(|(n, _)| n != project))
        .map(str::to_string)
        .collect();
    let mut h = Sha256::new();
    h.update(STAGING_VERSION);
    h.update(twin.as_os_str().as_encoded_bytes());
    h.update(pins.join("\n"));
    let dir = cache
        .join("site")
        .join(format!("twin-{}", crate::hex(&h.finalize()[..16])));
    if dir.join(".pykiln-complete").is_file() {
        crate::cache::touch(&dir.join(".pykiln-complete"));
        return Ok(dir);
    }
    let parent = cache.join("site");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("twin.tmp-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    if !pins.is_empty() {
        let (mut cmd, _scratch) = pip_install(Command::new(twin), tmp.path(), cache)?;
        let out = cmd
            .arg("--no-deps")
            .args(&pins)
            .output()
            .with_context(|| format!("running {} -m pip", twin.display()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            bail!(
                "pip on {} could not install the same distributions: {last}",
                twin.display()
            );
        }
    }
    std::fs::write(tmp.path().join(".pykiln-complete"), pins.join("\n"))?;
    let staged = tmp.keep();
    if std::fs::rename(&staged, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staged);
        if !dir.join(".pykiln-complete").is_file() {
            bail!("could not move the twin's install to {}", dir.display());
        }
    }
    Ok(dir)
}

/// `name==version` of every distribution installed in `site`, sorted.
fn resolved_pins(site: &Path) -> anyhow::Result<String> {
    let mut pins = Vec::new();
    for entry in std::fs::read_dir(site).with_context(|| format!("listing {}", site.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".dist-info") {
            pins.push(match stem.rsplit_once('-') {
                Some((n, v)) => format!("{}=={v}", crate::project::normalize(n)),
                None => stem.to_string(),
            });
        }
    }
    pins.sort();
    Ok(pins.join("\n"))
}

/// Install the project's dependencies into `<cache>/site/<pins hash>`, resolving them
/// unless this requirement text already resolved under the same index settings (and
/// no refresh is asked for).
///
/// With `glibc_floor` (pykiln's own interpreter, linked against that glibc), pip is
/// told through PEP 600's `_manylinux` hook to take only wheels that run on it; a
/// resolution that fails so is retried without the hook, and the build's glibc report
/// then names the distribution whose wheel raised the floor.
pub fn stage_dependencies(
    python: &Path,
    python_version: &str,
    glibc_floor: Option<&str>,
    project: &Project,
    cache: &Path,
    refresh: bool,
) -> anyhow::Result<PathBuf> {
    let specs = project.pip_specs();
    let mut req_text = specs.join("\n").into_bytes();
    // A local wheel or directory is keyed by its content, not only its path.
    for spec in specs {
        if let Ok(bytes) = std::fs::read(spec) {
            req_text.extend_from_slice(format!("\n{spec} sha256:").as_bytes());
            req_text.extend_from_slice(crate::hex(&Sha256::digest(&bytes)).as_bytes());
        }
    }
    if let Some(file) = &project.requirements {
        req_text.extend_from_slice(b"\n-r\n");
        req_text.extend(
            std::fs::read(file)
                .with_context(|| format!("reading requirements file {}", file.display()))?,
        );
    }
    // pip on the target's interpreter (under qemu-user for another CPU) picks the
    // target's wheels; on its twin (another CPU's interpreter and no qemu-user),
    // pip is told the target's platform and takes wheels only.
    let runs = pykiln_pyconfig::foreign::runs(python)?;
    let on_twin = match runs {
        pykiln_pyconfig::foreign::Runs::OnTwin(_) => {
            let arch = pykiln_pyconfig::foreign::foreign_arch(python).unwrap_or_default();
            Some(target_platform_args(arch, python_version, glibc_floor))
        }
        _ => None,
    };
    let mut base: Vec<&[u8]> = vec![
        STAGING_VERSION.as_bytes(),
        python_version.as_bytes(),
        python.as_os_str().as_encoded_bytes(),
        glibc_floor.unwrap_or_default().as_bytes(),
    ];
    if on_twin.is_some() {
        // Wheels only, markers evaluated on the twin: not what the target's pip picks.
        base.push(b"pip on the twin");
    }
    // vars_os: a non-UTF-8 variable elsewhere in the environment must not panic.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())));
    let req_key = requirement_key(&base, &req_text, env, &pip_config_files());
    let site_root = cache.join("site");
    let resolved = site_root.join("resolved").join(&req_key);
    if !refresh {
        if let Ok(pins_key) = std::fs::read_to_string(&resolved) {
            let dir = site_root.join(pins_key.trim());
            if !pins_key.trim().is_empty() && dir.join(".pykiln-complete").is_file() {
                crate::cache::touch(&dir.join(".pykiln-complete"));
                return Ok(dir);
            }
        }
    }
    std::fs::create_dir_all(site_root.join("resolved"))
        .with_context(|| format!("creating {}", site_root.display()))?;
    // A unique directory: builds in other processes and threads may stage the same
    // requirements at the same time.
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{req_key}.tmp-"))
        .tempdir_in(&site_root)
        .with_context(|| format!("creating a staging directory in {}", site_root.display()))?
        .keep();

    if project.requirements.is_some() || !specs.is_empty() {
        let pip = |hook: Option<&Path>| -> anyhow::Result<std::process::Output> {
            let (mut cmd, _scratch) = pip_install(runs.command(python), &tmp, cache)?;
            if let Some(dir) = hook {
                cmd.env("PYTHONPATH", dir);
            }
            cmd.args(on_twin.iter().flatten());
            if let Some(file) = &project.requirements {
                cmd.arg("-r").arg(file);
                if String::from_utf8_lossy(&req_text).contains("--hash=") {
                    cmd.arg("--require-hashes");
                }
            }
            cmd.args(specs);
            cmd.output()
                .with_context(|| format!("running {} -m pip", python.display()))
        };
        let hook = match glibc_floor {
            Some(floor) if on_twin.is_none() => Some(manylinux_hook(cache, floor)?),
            _ => None,
        };
        let mut out = pip(hook.as_ref().map(|h| h.path()))?;
        if !out.status.success() && hook.is_some() {
            // Some distribution has no wheel (nor sdist) for the old glibc: take the
            // newer wheel; the build's glibc report names what needs it.
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)?;
            out = pip(None)?;
        }
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Distribution interpreters come without pip (Debian splits it out).
            if stderr.contains("No module named pip") {
                bail!(
                    "{} has no pip, which installs the dependencies: on Debian and Ubuntu `apt install python3-pip`, elsewhere `{} -m ensurepip`",
                    python.display(),
                    python.display()
                );
            }
            let detail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = detail[detail.len().saturating_sub(12)..].join("\n  ");
            let why = if on_twin.is_some() {
                format!(
                    " ({} is for another CPU and no qemu-user runs it here, so only wheels \
                     for its platform can be installed: `apt install qemu-user-static` lets \
                     pip build the others)",
                    python.display()
                )
            } else {
                String::new()
            };
            bail!(
                "installing {} failed (pip exit status {}){why}:\n  {tail}",
                match &project.pyproject {
                    Some(file) => format!("the dependencies of {}", file.display()),
                    None => project.origin().replacen("the requirements ", "", 1),
                },
                out.status.code().unwrap_or(-1)
            );
        }
    }
    let pins = resolved_pins(&tmp)?;
    let mut h = Sha256::new();
    for b in base {
        h.update(b);
        h.update([0]);
    }
    h.update(&pins);
    let key = crate::hex(&h.finalize()[..16]);
    let dir = site_root.join(&key);
    std::fs::write(tmp.join(".pykiln-complete"), &pins)?;
    let rename = if dir.join(".pykiln-complete").is_file() {
        // Resolved to pins already staged: keep those.
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(())
    } else {
        std::fs::rename(&tmp, &dir)
    };
    match rename {
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
    crate::cache::write_atomic(&resolved, key.as_bytes())?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_for_another_cpu_takes_wheels_up_to_the_floor() {
        let args = target_platform_args("aarch64", "3.11.2", Some("2.17"));
        let platforms: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "--platform")
            .map(|w| w[1].as_str())
            .collect();
        assert!(platforms.contains(&"manylinux_2_17_aarch64"));
        assert!(platforms.contains(&"manylinux2014_aarch64"));
        assert!(platforms.contains(&"manylinux_2_5_aarch64"));
        assert!(
            !platforms
                .iter()
                .any(|p| p.contains("2_18") || p.contains("x86_64"))
        );
        assert!(args.contains(&"--only-binary=:all:".to_string()));
        let version = args.iter().position(|a| a == "--python-version").unwrap();
        assert_eq!(args[version + 1], "3.11");
        // A floor of 2.12 leaves out manylinux2014's tag.
        let older = target_platform_args("x86_64", "3.13.5", Some("2.12"));
        assert!(older.contains(&"manylinux2010_x86_64".to_string()));
        assert!(
            !older
                .iter()
                .any(|a| a.contains("2014") || a.contains("2_17"))
        );
    }

    #[test]
    fn index_settings_are_part_of_the_requirement_key() {
        let base: [&[u8]; 1] = [b"x"];
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let plain = requirement_key(&base, b"mcp>=2", env(&[("HOME", "/a")]), &[]);
        assert_eq!(
            plain,
            requirement_key(&base, b"mcp>=2", env(&[("HOME", "/b")]), &[])
        );
        assert_ne!(plain, requirement_key(&base, b"mcp>=2.1", env(&[]), &[]));
        let index = env(&[("PIP_INDEX_URL", "https://mirror.example/simple")]);
        assert_ne!(plain, requirement_key(&base, b"mcp>=2", index, &[]));
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("pip.conf");
        std::fs::write(&conf, "[global]\nindex-url = https://a.example/simple\n").unwrap();
        let with_conf = requirement_key(&base, b"mcp>=2", env(&[]), std::slice::from_ref(&conf));
        assert_ne!(plain, with_conf);
        std::fs::write(&conf, "[global]\nindex-url = https://b.example/simple\n").unwrap();
        assert_ne!(
            with_conf,
            requirement_key(&base, b"mcp>=2", env(&[]), &[conf])
        );
    }

    #[test]
    fn pins_come_from_the_installed_distributions() {
        let d = tempfile::tempdir().unwrap();
        for dir in [
            "mcp-2.3.0.dist-info",
            "Pydantic_Core-2.33.2.dist-info",
            "mcp",
            "bin",
        ] {
            std::fs::create_dir(d.path().join(dir)).unwrap();
        }
        assert_eq!(
            resolved_pins(d.path()).unwrap(),
            "mcp==2.3.0\npydantic_core==2.33.2"
        );
    }
}
