//! What `pykiln dist` makes release artifacts of, read from a pykiln binary itself
//! (never run): its archive's manifest, app metadata, licenses and SBOM notices, its
//! target and glibc floor. Shared by the artifact writers (`dist`, `oci`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use pykiln_archive::{Archive, Manifest, notices};
use sha2::{Digest as _, Sha256};

/// 1980-01-01T00:00:00Z: the earliest time a zip file can hold.
const DEFAULT_EPOCH: u64 = 315_532_800;

/// What the artifacts are made of, read from the binary.
pub(crate) struct Release {
    /// The binary's file name.
    pub name: String,
    /// The app's version.
    pub version: String,
    /// Rust target triple of the binary.
    pub triple: &'static str,
    /// The binary.
    pub binary: Vec<u8>,
    /// `--pykiln licenses` of the binary.
    pub licenses: String,
    /// `--pykiln sbom` of the binary.
    pub sbom: String,
    /// The app's METADATA.
    pub metadata: AppMetadata,
    /// `[tool.pykiln.mcpb]`.
    pub mcpb: pykiln_archive::McpbConfig,
    /// `[tool.pykiln.oci]`.
    pub oci: pykiln_archive::OciConfig,
    /// Oldest glibc the binary and its packed native code run on.
    pub min_glibc: Option<String>,
    /// Time of every file in the artifacts (seconds since 1970).
    pub epoch: u64,
}

/// What the app's own METADATA says.
#[derive(Debug, Default)]
pub(crate) struct AppMetadata {
    /// One-line summary.
    pub summary: Option<String>,
    /// Author or Author-email.
    pub author: Option<String>,
    /// License expression or name.
    pub license: Option<String>,
    /// Home page.
    pub homepage: Option<String>,
}

/// The archive found in a pykiln binary, and where.
pub(crate) struct Packed<'a> {
    /// Its byte offset in the binary.
    pub offset: usize,
    /// Its size in bytes.
    pub len: usize,
    /// The archive.
    pub archive: Archive<'a>,
    /// Its manifest.
    pub manifest: Manifest,
}

/// The archive in `binary` (the bytes of the pykiln binary at `path`) and its
/// manifest; errors name the file and the archive's byte offset.
pub(crate) fn archive_of<'a>(path: &Path, binary: &'a [u8]) -> anyhow::Result<Packed<'a>> {
    let Some((offset, archive_bytes)) = pykiln_archive::trailer::locate(binary) else {
        bail!(
            "{} is not a pykiln binary: no pykiln archive found in it",
            path.display()
        );
    };
    let archive = Archive::open(archive_bytes)
        .with_context(|| format!("{}: the archive at byte offset {offset}", path.display()))?;
    let manifest = archive
        .manifest()
        .with_context(|| format!("{}: reading the archive's manifest", path.display()))?;
    Ok(Packed {
        offset,
        len: archive_bytes.len(),
        archive,
        manifest,
    })
}

/// Read the binary and everything the artifacts need from it.
pub(crate) fn read(path: &Path) -> anyhow::Result<Release> {
    let binary = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let Packed {
        archive, manifest, ..
    } = archive_of(path, &binary)?;
    let notice = |name: &str| -> anyhow::Result<Vec<u8>> {
        let e = archive.notice(name).with_context(|| {
            format!(
                "{}: its archive has no '{name}' notice (built by a pykiln before 0.1.0's notices: rebuild it)",
                path.display()
            )
        })?;
        Ok(e.read()
            .with_context(|| format!("{}: reading the '{name}' notice", path.display()))?
            .into_owned())
    };
    let stamp: BTreeMap<String, String> = pykiln_archive::stamp::find(&binary)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let sqlite = stamp
        .get("sqlite")
        .cloned()
        .with_context(|| format!("{}: no pykiln runtime stamp found", path.display()))?;
    let hash = format!("{:x}", Sha256::digest(&binary));
    let sbom = notices::complete_sbom(&notice(notices::SBOM)?, &sqlite, Some(&hash))
        .with_context(|| format!("{}: its SBOM notice", path.display()))?;
    let licenses = format!(
        "{}\n\n{}",
        String::from_utf8_lossy(&notice(notices::LICENSES)?).trim_end(),
        notices::sqlite_license(&sqlite)
    );
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("the binary's path has no file name")?;
    let triple = target_triple(&binary).with_context(|| {
        format!(
            "{}: not an ELF executable of a known machine",
            path.display()
        )
    })?;
    let metadata = app_metadata(&archive, &manifest);
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        Err(_) => DEFAULT_EPOCH,
    };
    let mcpb = manifest.mcpb.clone().unwrap_or_default();
    check_user_config_refs(&mcpb)?;
    let min_glibc =
        crate::inspect::glibc(&manifest, pykiln_glibc::required(&binary).ok().flatten())
            .map(|g| g.minimum);
    Ok(Release {
        name,
        version: manifest
            .app
            .as_ref()
            .map_or_else(|| "0".to_string(), |a| a.version.clone()),
        triple,
        binary,
        licenses,
        sbom: format!("{}\n", serde_json::to_string_pretty(&sbom)?),
        metadata,
        mcpb,
        oci: manifest.oci.clone().unwrap_or_default(),
        min_glibc,
        epoch,
    })
}

/// Every `${user_config.KEY}` in args and env names a declared setting.
fn check_user_config_refs(mcpb: &pykiln_archive::McpbConfig) -> anyhow::Result<()> {
    for value in mcpb.args.iter().chain(mcpb.env.values()) {
        let mut rest = value.as_str();
        while let Some(start) = rest.find("${user_config.") {
            let after = &rest[start + "${user_config.".len()..];
            let key = after.split('}').next().unwrap_or(after);
            if !mcpb.user_config.contains_key(key) {
                bail!(
                    "[tool.pykiln.mcpb] uses ${{user_config.{key}}}, but declares no [tool.pykiln.mcpb.user-config.{key}]"
                );
            }
            rest = after;
        }
    }
    Ok(())
}

/// The Rust target triple of an ELF executable, from its machine field.
pub(crate) fn target_triple(elf: &[u8]) -> Option<&'static str> {
    if elf.get(..4)? != b"\x7fELF" {
        return None;
    }
    let machine = u16::from_le_bytes([*elf.get(18)?, *elf.get(19)?]);
    match machine {
        0x3e => Some("x86_64-unknown-linux-gnu"),
        0xb7 => Some("aarch64-unknown-linux-gnu"),
        _ => None,
    }
}

/// The app's summary, author, license and home page from its dist-info METADATA.
fn app_metadata(archive: &Archive<'_>, manifest: &Manifest) -> AppMetadata {
    let mut m = AppMetadata::default();
    let Some(app) = &manifest.app else {
        return m;
    };
    let want = pykiln_build::normalize(&app.name);
    let Some(dir) = archive
        .distributions()
        .into_iter()
        .find(|d| pykiln_build::normalize(d.split('-').next().unwrap_or(d)) == want)
    else {
        return m;
    };
    let Some(text) = archive
        .dist_file(dir, "METADATA")
        .and_then(|e| e.read().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
    else {
        return m;
    };
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let value = value.trim().to_string();
        match key {
            "Summary" => m.summary = Some(value),
            "Author" => m.author = Some(value),
            // `Name <mail>`, possibly several: the first name.
            "Author-email" | "Maintainer-email" if m.author.is_none() => {
                let first = value.split(',').next().unwrap_or(&value);
                let name = first
                    .split('<')
                    .next()
                    .unwrap_or(first)
                    .trim()
                    .trim_matches('"');
                if !name.is_empty() {
                    m.author = Some(name.to_string());
                }
            }
            "License-Expression" => m.license = Some(value),
            "License" if m.license.is_none() && value.len() < 100 => m.license = Some(value),
            "Home-page" => m.homepage = Some(value),
            "Project-URL" if m.homepage.is_none() => {
                if let Some((_, url)) = value.split_once(", ") {
                    m.homepage = Some(url.trim().to_string());
                }
            }
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn target_triples_from_the_elf_machine() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[18] = 0x3e;
        assert_eq!(target_triple(&elf), Some("x86_64-unknown-linux-gnu"));
        elf[18] = 0xb7;
        assert_eq!(target_triple(&elf), Some("aarch64-unknown-linux-gnu"));
        elf[18] = 0x28;
        assert_eq!(target_triple(&elf), None);
        assert_eq!(target_triple(b"MZ"), None);
    }

    #[test]
    fn user_config_references_must_be_declared() {
        let mut c = pykiln_archive::McpbConfig {
            args: vec!["--db=${user_config.db}".into()],
            ..Default::default()
        };
        let err = check_user_config_refs(&c).unwrap_err().to_string();
        assert!(err.contains("user-config.db"), "{err}");
        c.user_config.insert(
            "db".into(),
            serde_json::from_value(json!({"type": "file", "title": "t", "description": "d"}))
                .unwrap(),
        );
        check_user_config_refs(&c).unwrap();
    }
}
