//! `pykiln dist BIN`: the release artifacts of a pykiln binary, made from what the
//! binary itself says (see [`crate::release`]): `NAME-VERSION-TRIPLE.tar.gz` / `.zip`
//! (binary, README with client configs, THIRD_PARTY_LICENSES, sbom.cdx.json), an MCP
//! Bundle (`.mcpb`), an OCI image (`.oci.tar`, see [`crate::oci`]), `SHA256SUMS` over
//! all of them, and with `--sign` their signatures (see [`crate::sign`]). Every output
//! is byte-for-byte reproducible: fixed order, owners, modes and times
//! (`SOURCE_DATE_EPOCH` if set, else 1980-01-01), and all of them are written under
//! temporary names and renamed only once every one is complete.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::release::Release;

/// Release formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Format {
    /// `NAME-VERSION-TRIPLE.tar.gz`.
    #[value(name = "tar.gz")]
    TarGz,
    /// `NAME-VERSION-TRIPLE.zip`.
    Zip,
    /// `NAME-VERSION-TRIPLE.mcpb`: an MCP Bundle (Claude Desktop's one-click install).
    Mcpb,
    /// `NAME-VERSION-TRIPLE.oci.tar`: an OCI image layout (no container daemon needed).
    Oci,
}

/// `pykiln dist` arguments.
#[derive(Debug, Args)]
pub struct DistArgs {
    /// The binary (built by `pykiln build` or by cargo with pykiln-build).
    pub bin: PathBuf,
    /// Formats to make, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["tar.gz", "zip", "mcpb", "oci"])]
    pub formats: Vec<Format>,
    /// Output directory (created if missing).
    #[arg(short, long, default_value = "dist")]
    pub output: PathBuf,
    /// Sign SHA256SUMS (and through it every artifact) and the OCI image's manifest
    /// with this key: an OpenSSH key (private, or a .pub held by ssh-agent) gives
    /// SSH signatures (`.sig`, namespace `file`), a minisign secret key `.minisig`.
    /// May be given twice, for both.
    #[arg(long, value_name = "KEY")]
    pub sign: Vec<PathBuf>,
}

/// Run `pykiln dist`.
pub fn run(args: DistArgs) -> anyhow::Result<ExitCode> {
    // Keys are checked before any work: a typo must not cost a whole release build.
    let signers = args
        .sign
        .iter()
        .map(|k| crate::sign::Signer::from_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (i, a) in signers.iter().enumerate() {
        if let Some(b) = signers[..i].iter().find(|b| b.extension() == a.extension()) {
            bail!(
                "--sign {} and {}: both would write SHA256SUMS.{}; give one key of each kind",
                b.key().display(),
                a.key().display(),
                a.extension()
            );
        }
    }
    let release = crate::release::read(&args.bin)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let stem = format!("{}-{}-{}", release.name, release.version, release.triple);
    let mut formats = args.formats.clone();
    formats.sort();
    formats.dedup();
    // Everything is written under a temporary name first; renamed at the end.
    let mut outputs: Vec<(String, tempfile::NamedTempFile)> = Vec::new();
    let mut notes = Vec::new();
    let mut signed = Vec::new();
    for format in formats {
        let (file, bytes) = match format {
            Format::TarGz => (format!("{stem}.tar.gz"), tar_gz(&release, &stem)?),
            Format::Zip => (format!("{stem}.zip"), zip(&release, &stem)?),
            Format::Mcpb => (format!("{stem}.mcpb"), mcpb(&release)?),
            Format::Oci => {
                let image = crate::oci::image(&release, host_glibc().as_deref())
                    .context("making the OCI image")?;
                notes.push(format!(
                    "OCI image: {:.1} MB compressed (what a registry stores and a pull downloads), {:.1} MB unpacked",
                    image.compressed as f64 / 1e6,
                    image.unpacked as f64 / 1e6
                ));
                // The manifest is what a registry keeps of the image (the tar is gone
                // once pushed), so that is what is signed: the signature checks the image
                // wherever it was copied (`skopeo inspect --raw` gives the bytes).
                for signer in &signers {
                    let sig = signer.sign(
                        &image.manifest,
                        &format!("the OCI image manifest of {stem}"),
                    )?;
                    signed.push((format!("{stem}.oci.manifest.{}", signer.extension()), sig));
                }
                (format!("{stem}.oci.tar"), image.tar)
            }
        };
        outputs.push((file, staged(&args.output, &bytes)?));
    }
    for (file, sig) in signed {
        outputs.push((file, staged(&args.output, &sig)?));
    }
    let mut sums = String::new();
    let mut listed: Vec<(String, u64)> = Vec::new();
    for (file, tmp) in &outputs {
        let bytes = std::fs::read(tmp.path())
            .with_context(|| format!("reading back {}", tmp.path().display()))?;
        sums.push_str(&format!("{:x}  {file}\n", Sha256::digest(&bytes)));
        listed.push((file.clone(), bytes.len() as u64));
    }
    listed.push(("SHA256SUMS".to_string(), sums.len() as u64));
    outputs.push((
        "SHA256SUMS".to_string(),
        staged(&args.output, sums.as_bytes())?,
    ));
    for signer in &signers {
        let sig = signer.sign(sums.as_bytes(), &format!("SHA256SUMS of {stem}"))?;
        let file = format!("SHA256SUMS.{}", signer.extension());
        listed.push((file.clone(), sig.len() as u64));
        outputs.push((file, staged(&args.output, &sig)?));
    }
    for (file, tmp) in outputs {
        let dest = args.output.join(&file);
        tmp.persist(&dest)
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    for (file, size) in listed {
        println!(
            "{:>10.1} MB  {}",
            size as f64 / 1e6,
            args.output.join(file).display()
        );
    }
    for n in notes {
        println!("{n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// This machine's glibc version.
fn host_glibc() -> Option<String> {
    // SAFETY: gnu_get_libc_version returns a pointer to a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    v.to_str().ok().map(str::to_string)
}

/// `bytes` in a temporary file of `dir` (removed unless persisted).
fn staged(dir: &Path, bytes: &[u8]) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".pykiln-dist-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    // Release files are for everyone to read (tempfile creates them 0600).
    tmp.write_all(bytes)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    Ok(tmp)
}

/// Claude Desktop / Cursor and VS Code configs for a server at `command`.
pub fn client_configs(name: &str, command: &str, args: &[String]) -> (Value, Value) {
    let desktop = json!({ "mcpServers": { name: { "command": command, "args": args } } });
    let vscode = json!({
        "servers": { name: { "type": "stdio", "command": command, "args": args } }
    });
    (desktop, vscode)
}

/// The README of the tar.gz and zip.
fn readme(r: &Release) -> String {
    let path = format!("/opt/{0}/{0}", r.name);
    let (desktop, vscode) = client_configs(&r.name, &path, &[]);
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    format!(
        "# {name} {version}\n\n\
         {summary}\n\n\
         `{name}` is one self-contained executable ({triple}): no Python or anything else to\n\
         install. Unpack it anywhere (below: `/opt/{name}/`) and point your MCP client at it.\n\n\
         Claude Desktop (`claude_desktop_config.json`) and Cursor (`~/.cursor/mcp.json`):\n\n\
         ```json\n{desktop}\n```\n\n\
         VS Code (`.vscode/mcp.json`):\n\n\
         ```json\n{vscode}\n```\n\n\
         Check it on this machine: `./{name} --pykiln selftest` (an MCP handshake with itself).\n\n\
         `THIRD_PARTY_LICENSES` holds the license texts of everything inside (also printed by\n\
         `./{name} --pykiln licenses`), `sbom.cdx.json` a CycloneDX 1.6 SBOM of it (the same as\n\
         `./{name} --pykiln sbom`, plus the executable's own SHA-256).\n",
        name = r.name,
        version = r.version,
        triple = r.triple,
        summary = r.metadata.summary.as_deref().unwrap_or("An MCP server."),
        desktop = pretty(&desktop),
        vscode = pretty(&vscode),
    )
}

/// The files of the tar.gz and zip: (path inside, bytes, executable).
fn contents<'a>(r: &'a Release, stem: &str) -> Vec<(String, std::borrow::Cow<'a, [u8]>, bool)> {
    vec![
        (
            format!("{stem}/{}", r.name),
            r.binary.as_slice().into(),
            true,
        ),
        (
            format!("{stem}/README.md"),
            readme(r).into_bytes().into(),
            false,
        ),
        (
            format!("{stem}/THIRD_PARTY_LICENSES"),
            r.licenses.as_bytes().into(),
            false,
        ),
        (
            format!("{stem}/sbom.cdx.json"),
            r.sbom.as_bytes().into(),
            false,
        ),
    ]
}

fn tar_gz(r: &Release, stem: &str) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_size(0);
    set_common(&mut dir, 0o755, r.epoch);
    tar.append_data(&mut dir, format!("{stem}/"), std::io::empty())?;
    for (path, bytes, exec) in contents(r, stem) {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(bytes.len() as u64);
        set_common(&mut h, if exec { 0o755 } else { 0o644 }, r.epoch);
        tar.append_data(&mut h, &path, &*bytes)
            .with_context(|| format!("adding {path} to the tar"))?;
    }
    Ok(tar.into_inner()?.finish()?)
}

fn set_common(h: &mut tar::Header, mode: u32, epoch: u64) {
    h.set_mode(mode);
    h.set_mtime(epoch);
    h.set_uid(0);
    h.set_gid(0);
    // Empty names: extracted files belong to whoever extracts them.
    let _ = h.set_username("");
    let _ = h.set_groupname("");
}

fn zip_of(files: &[(String, &[u8], bool)]) -> anyhow::Result<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, bytes, exec) in files {
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(9))
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(if *exec { 0o755 } else { 0o644 })
            .large_file(bytes.len() > u32::MAX as usize / 2);
        z.start_file(path.as_str(), options)
            .with_context(|| format!("adding {path} to the zip"))?;
        z.write_all(bytes)?;
    }
    Ok(z.finish()?.into_inner())
}

fn zip(r: &Release, stem: &str) -> anyhow::Result<Vec<u8>> {
    let files = contents(r, stem);
    let files: Vec<(String, &[u8], bool)> = files
        .iter()
        .map(|(p, b, e)| (p.clone(), &**b, *e))
        .collect();
    zip_of(&files)
}

/// The MCP Bundle manifest (`manifest.json`, manifest version 0.3).
fn mcpb_manifest(r: &Release) -> Value {
    let entry = format!("server/{}", r.name);
    let mut config = json!({
        "command": format!("${{__dirname}}/{entry}"),
        "args": r.mcpb.args,
    });
    if !r.mcpb.env.is_empty() {
        config["env"] = json!(r.mcpb.env);
    }
    let author = r
        .mcpb
        .author
        .clone()
        .or_else(|| r.metadata.author.clone())
        .unwrap_or_else(|| "unknown".to_string());
    let mut m = json!({
        "manifest_version": "0.3",
        "name": r.name,
        "version": r.version,
        "description": r.metadata.summary.clone().unwrap_or_else(|| format!("The {} MCP server", r.name)),
        "author": {"name": author},
        "server": {"type": "binary", "entry_point": entry, "mcp_config": config},
        "compatibility": {"platforms": ["linux"]},
    });
    if let Some(d) = &r.mcpb.display_name {
        m["display_name"] = json!(d);
    }
    if let Some(l) = &r.metadata.license {
        m["license"] = json!(l);
    }
    if let Some(h) = r
        .metadata
        .homepage
        .as_ref()
        .filter(|h| h.starts_with("http"))
    {
        m["homepage"] = json!(h);
    }
    if !r.mcpb.user_config.is_empty() {
        m["user_config"] = json!(r.mcpb.user_config);
    }
    m
}

fn mcpb(r: &Release) -> anyhow::Result<Vec<u8>> {
    let manifest = format!("{}\n", serde_json::to_string_pretty(&mcpb_manifest(r))?);
    zip_of(&[
        ("manifest.json".to_string(), manifest.as_bytes(), false),
        (format!("server/{}", r.name), &r.binary, true),
        (
            "THIRD_PARTY_LICENSES".to_string(),
            r.licenses.as_bytes(),
            false,
        ),
        ("sbom.cdx.json".to_string(), r.sbom.as_bytes(), false),
    ])
}
