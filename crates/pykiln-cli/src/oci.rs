//! The OCI image of `pykiln dist --formats oci`: an OCI image layout in one tar
//! (`skopeo copy oci-archive:FILE …`, `podman load -i FILE`), made without a container
//! daemon. One layer: the binary at `/app/NAME`, the glibc-family libraries it and its
//! packed native code use (from this machine, which must have at least the glibc the
//! binary needs), the CA bundle, tzdata, a non-root user (65532, `app`, home
//! `/home/app`), `/tmp`. `ENTRYPOINT` is the binary, `CMD` `[tool.pykiln.oci] args`, and
//! the health check the binary's own `--pykiln selftest`. Reproducible like the other
//! artifacts: fixed order, owners and times.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::release::Release;

/// The user the server runs as.
const UID: u64 = 65532;

enum Node {
    Dir { mode: u32, uid: u64 },
    File { bytes: Vec<u8>, mode: u32 },
    Link { target: String },
}

/// What `oci` reports besides the bytes.
pub struct Image {
    /// The image layout tar.
    pub tar: Vec<u8>,
    /// Bytes a registry stores (compressed layer, config, manifest).
    pub compressed: u64,
    /// Bytes of the unpacked root file system.
    pub unpacked: u64,
    /// The image manifest, byte for byte (what a registry serves for the image, and
    /// what `--sign` signs).
    pub manifest: Vec<u8>,
}

/// Build the image of `r`.
pub fn image(r: &Release, host_glibc: Option<&str>) -> anyhow::Result<Image> {
    let (arch, multiarch, interp) = match r.triple {
        "x86_64-unknown-linux-gnu" => ("amd64", "x86_64-linux-gnu", "lib64/ld-linux-x86-64.so.2"),
        "aarch64-unknown-linux-gnu" => ("arm64", "aarch64-linux-gnu", "lib/ld-linux-aarch64.so.1"),
        other => bail!("no OCI image for {other}"),
    };
    if std::env::consts::ARCH != r.triple.split('-').next().unwrap_or_default() {
        bail!(
            "the image takes its glibc from this machine, which is {}: make the {} image on a {} machine",
            std::env::consts::ARCH,
            r.triple,
            arch
        );
    }
    if let (Some(need), Some(have)) = (&r.min_glibc, host_glibc) {
        if version(have) < version(need) {
            bail!(
                "the binary needs glibc >= {need}, but this machine's (which the image would ship) is {have}: make the image on a newer system"
            );
        }
    }
    let mut fs: BTreeMap<String, Node> = BTreeMap::new();
    let dir = |fs: &mut BTreeMap<String, Node>, path: &str, mode: u32, uid: u64| {
        fs.insert(path.to_string(), Node::Dir { mode, uid });
    };
    // Mount points too (proc, dev, sys): a runtime that is not root cannot create them.
    for d in [
        "app",
        "dev",
        "etc",
        "etc/ssl",
        "etc/ssl/certs",
        "home",
        "lib",
        "lib64",
        "proc",
        "sys",
        "usr",
        "usr/share",
    ] {
        dir(&mut fs, d, 0o755, 0);
    }
    dir(&mut fs, &format!("lib/{multiarch}"), 0o755, 0);
    dir(&mut fs, "home/app", 0o755, UID);
    dir(&mut fs, "tmp", 0o1777, 0);
    fs.insert(
        format!("app/{}", r.name),
        Node::File {
            bytes: r.binary.clone(),
            mode: 0o755,
        },
    );
    let file = |fs: &mut BTreeMap<String, Node>, path: &str, text: &str| {
        fs.insert(
            path.to_string(),
            Node::File {
                bytes: text.as_bytes().to_vec(),
                mode: 0o644,
            },
        );
    };
    file(
        &mut fs,
        "etc/passwd",
        &format!(
            "root:x:0:0:root:/root:/sbin/nologin\napp:x:{UID}:{UID}:app:/home/app:/sbin/nologin\n"
        ),
    );
    file(&mut fs, "etc/group", &format!("root:x:0:\napp:x:{UID}:\n"));
    file(
        &mut fs,
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files dns\n",
    );

    // The glibc family, from this machine's multiarch directories.
    let lib_dirs = [
        format!("/lib/{multiarch}"),
        format!("/usr/lib/{multiarch}"),
        "/lib64".to_string(),
        "/usr/lib64".to_string(),
    ];
    let find = |name: &str| {
        lib_dirs
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    let interp_name = interp.rsplit('/').next().unwrap_or(interp);
    // The glibc family is never packed into a pykiln archive, so the image provides it.
    let family = pykiln_glibc::FAMILY.iter().map(|m| m.soname);
    for name in family.chain([interp_name]) {
        let Some(path) = find(name) else {
            if ["libc.so.6", "libm.so.6", "libgcc_s.so.1"].contains(&name) || name == interp_name {
                bail!(
                    "{name} not found in {}: the image needs this machine's glibc",
                    lib_dirs.join(", ")
                );
            }
            continue; // not every glibc has every member (libpthread is in libc since 2.34)
        };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        fs.insert(
            format!("lib/{multiarch}/{name}"),
            Node::File { bytes, mode: 0o755 },
        );
    }
    if interp.starts_with("lib64/") {
        fs.insert(
            interp.to_string(),
            Node::Link {
                target: format!("/lib/{multiarch}/{interp_name}"),
            },
        );
    }

    // CA bundle and tzdata, for TLS clients and zoneinfo.
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let bytes = std::fs::read(ca).with_context(|| {
        format!(
            "reading {} (the image's CA bundle; install ca-certificates)",
            ca.display()
        )
    })?;
    fs.insert(
        "etc/ssl/certs/ca-certificates.crt".into(),
        Node::File { bytes, mode: 0o644 },
    );
    let zoneinfo = Path::new("/usr/share/zoneinfo");
    if !zoneinfo.is_dir() {
        bail!(
            "{} is missing (the image's tzdata; install tzdata)",
            zoneinfo.display()
        );
    }
    add_tree(&mut fs, zoneinfo, "usr/share/zoneinfo")?;

    let (layer, diff_id, unpacked) = layer(&fs, r.epoch)?;
    let layer_digest = digest(&layer);
    let created = rfc3339(r.epoch);
    let mut config = json!({
        "User": format!("{UID}:{UID}"),
        "Entrypoint": [format!("/app/{}", r.name)],
        "Env": [
            "PATH=/app:/usr/bin:/bin",
            "HOME=/home/app",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "TZDIR=/usr/share/zoneinfo",
        ],
        "WorkingDir": "/home/app",
        "Labels": {
            "org.opencontainers.image.title": r.name,
            "org.opencontainers.image.version": r.version,
            "org.opencontainers.image.description": r.metadata.summary.clone().unwrap_or_default(),
        },
        // Docker's and podman's health check (not in the OCI spec, which has none).
        "Healthcheck": {
            "Test": ["CMD", format!("/app/{}", r.name), "--pykiln", "selftest"],
            "Interval": 30_000_000_000u64,
            "Timeout": 30_000_000_000u64,
            "StartPeriod": 10_000_000_000u64,
            "Retries": 3,
        },
    });
    if !r.oci.args.is_empty() {
        config["Cmd"] = json!(r.oci.args);
    }
    if let Some(port) = r.oci.port {
        config["ExposedPorts"] = json!({ format!("{port}/tcp"): {} });
    }
    let image_config = json!({
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": created, "created_by": format!("pykiln dist {}", env!("CARGO_PKG_VERSION"))}],
    });
    let config_bytes = serde_json::to_vec(&image_config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", digest(&config_bytes)),
            "size": config_bytes.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", digest(&manifest_bytes)),
            "size": manifest_bytes.len(),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": r.version},
        }],
    });
    let compressed = (layer.len() + config_bytes.len() + manifest_bytes.len()) as u64;
    let mut layout: BTreeMap<String, Node> = BTreeMap::new();
    dir(&mut layout, "blobs", 0o755, 0);
    dir(&mut layout, "blobs/sha256", 0o755, 0);
    let manifest = manifest_bytes.clone();
    for bytes in [layer, config_bytes, manifest_bytes] {
        layout.insert(
            format!("blobs/sha256/{}", digest(&bytes)),
            Node::File { bytes, mode: 0o644 },
        );
    }
    file(
        &mut layout,
        "oci-layout",
        "{\"imageLayoutVersion\":\"1.0.0\"}",
    );
    file(&mut layout, "index.json", &index.to_string());
    let mut tar = tar::Builder::new(Vec::new());
    append_all(&mut tar, &layout, r.epoch)?;
    Ok(Image {
        tar: tar.into_inner()?,
        compressed,
        unpacked,
        manifest,
    })
}

/// `X.Y` as a comparable pair.
fn version(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn digest(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Copy a directory tree of this machine (files and symlinks) into the image.
fn add_tree(fs: &mut BTreeMap<String, Node>, src: &Path, dest: &str) -> anyhow::Result<()> {
    fs.insert(
        dest.to_string(),
        Node::Dir {
            mode: 0o755,
            uid: 0,
        },
    );
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", src.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let to = format!("{dest}/{name}");
        let kind = e.file_type()?;
        if kind.is_symlink() {
            let target = std::fs::read_link(&path)?;
            fs.insert(
                to,
                Node::Link {
                    target: target.to_string_lossy().into_owned(),
                },
            );
        } else if kind.is_dir() {
            add_tree(fs, &path, &to)?;
        } else if kind.is_file() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            fs.insert(to, Node::File { bytes, mode: 0o644 });
        }
    }
    Ok(())
}

fn append_all(
    tar: &mut tar::Builder<impl std::io::Write>,
    fs: &BTreeMap<String, Node>,
    epoch: u64,
) -> anyhow::Result<()> {
    for (path, node) in fs {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(epoch);
        let _ = h.set_username("");
        let _ = h.set_groupname("");
        match node {
            Node::Dir { mode, uid } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*uid);
                h.set_size(0);
                tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            Node::File { bytes, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(bytes.len() as u64);
                tar.append_data(&mut h, path, bytes.as_slice())
                    .with_context(|| format!("adding {path}"))?;
            }
            Node::Link { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(0);
                tar.append_link(&mut h, path, target)
                    .with_context(|| format!("adding {path}"))?;
            }
        }
    }
    Ok(())
}

/// The layer (tar.gz), the SHA-256 of its uncompressed tar (the diff id), and the
/// bytes of its files.
fn layer(fs: &BTreeMap<String, Node>, epoch: u64) -> anyhow::Result<(Vec<u8>, String, u64)> {
    let mut tar = tar::Builder::new(Vec::new());
    append_all(&mut tar, fs, epoch)?;
    let raw = tar.into_inner()?;
    let diff_id = digest(&raw);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &raw)?;
    let unpacked = fs
        .values()
        .map(|n| match n {
            Node::File { bytes, .. } => bytes.len() as u64,
            _ => 0,
        })
        .sum();
    Ok((gz.finish()?, diff_id, unpacked))
}

/// `epoch` as RFC 3339 UTC.
fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(315_532_800), "1980-01-01T00:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn glibc_versions_compare_numerically() {
        assert!(version("2.36") > version("2.9"));
        assert!(version("2.35") < version("2.36"));
    }
}
