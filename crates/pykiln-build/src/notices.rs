//! The licenses and the SBOM of what a build packs (stored as archive notices, see
//! [`pykiln_archive::notices`]): every Python distribution (license fields and texts
//! of its dist-info, SHA-256 of each packed file as installed from its wheel), the
//! CPython the runtime links and whose standard library is packed, system libraries
//! packed for the standard library's extension modules (Debian's copyright files),
//! and the Rust crates linked into the executable (from `cargo metadata`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use pykiln_archive::notices::APP_REF;
use pykiln_pyconfig::PythonConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::collect::Collected;
use crate::project::Project;

/// Largest license file read (a few projects ship whole books of notices).
const MAX_TEXT: u64 = 1 << 20;

/// A license file and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseText {
    /// Where it came from, relative to its package.
    pub file: String,
    /// Its contents (lossily decoded).
    pub text: String,
}

/// A Rust crate linked into the executable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RustCrate {
    /// Crate name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `license` of its Cargo.toml (an SPDX expression).
    pub license: Option<String>,
    /// License files beside its Cargo.toml (and its `license-file`).
    pub texts: Vec<LicenseText>,
}

/// The Rust crates linked into the binary that `manifest` (a Cargo.toml) builds for
/// `target`: its normal dependencies, transitively, without proc-macros and build
/// dependencies (they run at build time and are not in the executable). Reads
/// `cargo metadata` offline with the lock file as it is.
pub fn rust_crates(
    cargo: &Path,
    manifest: &Path,
    target: Option<&str>,
) -> anyhow::Result<Vec<RustCrate>> {
    let metadata = |offline: bool| {
        let mut cmd = Command::new(cargo);
        cmd.args(["metadata", "--format-version", "1", "--locked"])
            .arg("--manifest-path")
            .arg(manifest);
        if offline {
            cmd.arg("--offline");
        }
        if let Some(t) = target {
            cmd.args(["--filter-platform", t]);
        }
        cmd.stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running {} metadata", cargo.display()))
    };
    // Metadata lists the whole workspace, so it wants the manifests of crates a build
    // did not need (other members' dev-dependencies): those are fetched if missing.
    let mut out = metadata(true)?;
    if !out.status.success() {
        out = metadata(false)?;
    }
    if !out.status.success() {
        bail!(
            "cargo metadata for {} failed: {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("resolving {}", manifest.display()))?;
    let packages: BTreeMap<&str, &Value> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let root = packages
        .iter()
        .find(|(_, p)| {
            p["manifest_path"]
                .as_str()
                .is_some_and(|m| Path::new(m) == manifest)
        })
        .map(|(id, _)| *id)
        .with_context(|| format!("cargo metadata does not list {}", manifest.display()))?;
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let is_proc_macro = |p: &Value| {
        p["targets"].as_array().into_iter().flatten().any(|t| {
            t["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k == "proc-macro")
        })
    };
    let mut seen = BTreeSet::from([root]);
    let mut work = vec![root];
    while let Some(id) = work.pop() {
        for dep in nodes
            .get(id)
            .map(|n| &n["deps"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            let Some(pkg) = dep["pkg"].as_str() else {
                continue;
            };
            if normal && packages.get(pkg).is_some_and(|p| !is_proc_macro(p)) && seen.insert(pkg) {
                work.push(pkg);
            }
        }
    }
    let mut crates: Vec<RustCrate> = seen
        .iter()
        .filter_map(|id| packages.get(id))
        .map(|p| {
            let dir = Path::new(p["manifest_path"].as_str().unwrap_or_default())
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let mut texts = license_files(&dir);
            if let Some(f) = p["license_file"].as_str() {
                let path = dir.join(f);
                let name = f.to_string();
                if !texts.iter().any(|t| t.file == name) {
                    texts.extend(read_text(&path).map(|text| LicenseText { file: name, text }));
                }
            }
            RustCrate {
                name: p["name"].as_str().unwrap_or_default().to_string(),
                version: p["version"].as_str().unwrap_or_default().to_string(),
                // Old manifests separate alternatives with a slash.
                license: p["license"].as_str().map(|l| l.replace('/', " OR ")),
                texts,
            }
        })
        .collect();
    crates.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(crates)
}

fn is_license_file(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["LICENSE", "LICENCE", "COPYING", "NOTICE", "UNLICENSE"]
        .iter()
        .any(|p| upper.starts_with(p))
}

fn read_text(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_TEXT {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes).trim_end().to_string();
    (!text.trim().is_empty()).then_some(text)
}

/// License files directly in `dir`, sorted by name.
fn license_files(dir: &Path) -> Vec<LicenseText> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_license_file(n))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|file| {
            let text = read_text(&dir.join(&file))?;
            Some(LicenseText { file, text })
        })
        .collect()
}

/// What a METADATA file says about licensing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Declared {
    expression: Option<String>,
    names: Vec<String>,
    /// A `License:` field holding a whole text.
    text: Option<String>,
}

/// The headers of a METADATA file (continuation lines joined with newlines).
fn headers(metadata: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in metadata.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn declared(metadata: &str) -> Declared {
    let mut d = Declared::default();
    for (key, value) in headers(metadata) {
        match key.as_str() {
            "License-Expression" if !value.is_empty() => d.expression = Some(value),
            "License" if value.contains('\n') || value.len() > 100 => d.text = Some(value),
            "License" if !value.is_empty() && value != "UNKNOWN" => d.names.push(value),
            "Classifier" => {
                if let Some(rest) = value.strip_prefix("License :: ") {
                    let name = rest.rsplit(" :: ").next().unwrap_or(rest).to_string();
                    if name != "OSI Approved" && !d.names.contains(&name) {
                        d.names.push(name);
                    }
                }
            }
            _ => {}
        }
    }
    d
}

/// A packed Python distribution.
#[derive(Debug)]
struct PyDist {
    name: String,
    version: String,
    declared: Declared,
    texts: Vec<LicenseText>,
    /// (path as in RECORD, SHA-256 hex) of each packed file.
    files: Vec<(String, String)>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The packed distributions, from the dist-info files `collected` holds.
fn python_dists(collected: &Collected) -> Vec<PyDist> {
    let mut by_dir: BTreeMap<&str, Vec<(&str, &PathBuf)>> = BTreeMap::new();
    for ((dir, file), path) in &collected.dist_files {
        by_dir.entry(dir).or_default().push((file, path));
    }
    let packed: BTreeSet<&Path> = collected
        .modules
        .values()
        .map(|m| m.path.as_path())
        .chain(collected.extensions.values().map(PathBuf::as_path))
        .chain(collected.resources.values().map(PathBuf::as_path))
        .chain(collected.dist_files.values().map(PathBuf::as_path))
        .chain(collected.vendored.values().map(PathBuf::as_path))
        .collect();
    let mut out = Vec::new();
    for (dir, files) in by_dir {
        let read = |want: &str| {
            files
                .iter()
                .find(|(f, _)| *f == want)
                .and_then(|(_, p)| std::fs::read_to_string(p).ok())
        };
        let Some(metadata) = read("METADATA") else {
            continue;
        };
        let Some(dist) = crate::distribution_of(metadata.as_bytes()) else {
            continue;
        };
        let declared = declared(&metadata);
        let mut texts: Vec<LicenseText> = files
            .iter()
            .filter(|(f, _)| {
                f.starts_with("licenses/") || is_license_file(f.rsplit('/').next().unwrap_or(f))
            })
            .filter_map(|(f, p)| {
                Some(LicenseText {
                    file: format!("{dir}/{f}"),
                    text: read_text(p)?,
                })
            })
            .collect();
        if let Some(t) = &declared.text {
            texts.push(LicenseText {
                file: format!("{dir}/METADATA (License field)"),
                text: t.clone(),
            });
        }
        let site = files
            .first()
            .and_then(|(f, p)| {
                // dist-info/<f> → site-packages
                let depth = f.matches('/').count() + 2;
                p.ancestors().nth(depth)
            })
            .map(Path::to_path_buf);
        let mut hashed = Vec::new();
        if let (Some(record), Some(site)) = (read("RECORD"), site) {
            for line in record.lines() {
                let rel = line.split(',').next().unwrap_or_default();
                let path = site.join(rel);
                if rel.is_empty() || rel.contains("..") || !packed.contains(path.as_path()) {
                    continue;
                }
                if let Ok(bytes) = std::fs::read(&path) {
                    hashed.push((rel.to_string(), sha256_hex(&bytes)));
                }
            }
        }
        hashed.sort();
        out.push(PyDist {
            name: dist.name,
            version: dist.version,
            declared,
            texts,
            files: hashed,
        });
    }
    out.sort_by(|a, b| {
        (a.name.to_lowercase(), &a.version).cmp(&(b.name.to_lowercase(), &b.version))
    });
    out
}

/// A system library packed for an extension module, and the Debian package it is from.
#[derive(Debug)]
struct SystemLib {
    soname: String,
    sha256: String,
    package: Option<DebPackage>,
}

#[derive(Debug)]
struct DebPackage {
    name: String,
    version: String,
    arch: String,
    licenses: Vec<String>,
    copyright: Option<String>,
}

/// The Debian packages that installed `paths` (dpkg's database), by path. One query
/// for all: each `dpkg-query` reads the whole database.
fn deb_packages(paths: &[&Path]) -> BTreeMap<PathBuf, DebPackage> {
    // Merged /usr: dpkg may know a file by either name.
    let mut names: BTreeMap<String, &Path> = BTreeMap::new();
    for p in paths {
        let s = p.to_string_lossy();
        let other = s
            .strip_prefix("/usr")
            .map(str::to_string)
            .unwrap_or_else(|| format!("/usr{s}"));
        names.insert(s.to_string(), p);
        names.insert(other, p);
    }
    let mut out = BTreeMap::new();
    if names.is_empty() {
        return out;
    }
    let query = |args: &[&str]| {
        Command::new("dpkg-query")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let mut args = vec!["-S"];
    args.extend(names.keys().map(String::as_str));
    // Lines are `package[:arch][, other]: path`.
    let mut owners: BTreeMap<&Path, String> = BTreeMap::new();
    for line in query(&args).unwrap_or_default().lines() {
        let Some((pkgs, path)) = line.split_once(": ") else {
            continue;
        };
        let pkg = pkgs.split([',', ':']).next().unwrap_or(pkgs).trim();
        if let Some(p) = names.get(path.trim()) {
            owners.entry(p).or_insert_with(|| pkg.to_string());
        }
    }
    let packages: BTreeSet<&str> = owners.values().map(String::as_str).collect();
    if packages.is_empty() {
        return out;
    }
    let mut args = vec!["-W", "-f", "${Package}\t${Version}\t${Architecture}\n"];
    args.extend(packages.iter().copied());
    let mut versions: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in query(&args).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if let [name, version, arch] = f[..] {
            versions.insert(name.to_string(), (version.to_string(), arch.to_string()));
        }
    }
    for (path, name) in owners {
        let Some((version, arch)) = versions.get(&name).cloned() else {
            continue;
        };
        let copyright = read_text(&Path::new("/usr/share/doc").join(&name).join("copyright"));
        let mut licenses = Vec::new();
        for line in copyright.iter().flat_map(|c| c.lines()) {
            if let Some(l) = line.strip_prefix("License:") {
                let l = l.trim().to_string();
                if !l.is_empty() && !licenses.contains(&l) {
                    licenses.push(l);
                }
            }
        }
        out.insert(
            path.to_path_buf(),
            DebPackage {
                name,
                version,
                arch,
                licenses,
                copyright,
            },
        );
    }
    out
}

/// A library packed from the build machine's system directories: soname, path, bytes.
pub(crate) type SystemLibFile = (String, PathBuf, Vec<u8>);

/// What the notices are made of; see [`Notices::gather`].
pub struct Notices {
    app: Option<(String, String, String)>,
    app_texts: Vec<LicenseText>,
    python: PythonConfig,
    python_license: Option<LicenseText>,
    dists: Vec<PyDist>,
    system: Vec<SystemLib>,
    rust: Vec<RustCrate>,
}

impl Notices {
    /// Read the licensing facts of a build. `system_libs` are the libraries packed
    /// from the build machine's system directories (soname, path, bytes as packed).
    pub(crate) fn gather(
        python: &PythonConfig,
        project: &Project,
        collected: &Collected,
        system_libs: &[SystemLibFile],
        rust: &[RustCrate],
    ) -> Notices {
        let python_license = [
            python.stdlib.join("LICENSE.txt"),
            PathBuf::from(format!(
                "/usr/share/doc/python{}.{}/copyright",
                python.major, python.minor
            )),
        ]
        .iter()
        .find_map(|p| {
            Some(LicenseText {
                file: p.file_name()?.to_string_lossy().into_owned(),
                text: read_text(p)?,
            })
        });
        let app_texts = if project.pyproject.is_some() {
            license_files(&project.dir)
        } else {
            Vec::new()
        };
        let paths: Vec<&Path> = system_libs.iter().map(|(_, p, _)| p.as_path()).collect();
        let mut debs = deb_packages(&paths);
        Notices {
            app: project.pyproject.is_some().then(|| {
                (
                    project.name.clone(),
                    project.version.clone(),
                    project.description.clone(),
                )
            }),
            app_texts,
            python: python.clone(),
            python_license,
            dists: python_dists(collected),
            system: system_libs
                .iter()
                .map(|(soname, path, bytes)| SystemLib {
                    soname: soname.clone(),
                    sha256: sha256_hex(bytes),
                    package: debs.remove(path),
                })
                .collect(),
            rust: rust.to_vec(),
        }
    }

    /// Build warnings: distributions packed without license texts, system libraries
    /// whose origin is unknown.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let nothing: Vec<String> = self
            .dists
            .iter()
            .filter(|d| {
                d.texts.is_empty() && d.declared.expression.is_none() && d.declared.names.is_empty()
            })
            .map(|d| format!("{} {}", d.name, d.version))
            .collect();
        if !nothing.is_empty() {
            out.push(format!(
                "packed with no license information at all (no license field, classifier or file in their dist-info): {}; check their terms before you redistribute the binary",
                nothing.join(", ")
            ));
        }
        let no_text: Vec<String> = self
            .dists
            .iter()
            .filter(|d| {
                d.texts.is_empty()
                    && !(d.declared.expression.is_none() && d.declared.names.is_empty())
            })
            .map(|d| {
                let l = d
                    .declared
                    .expression
                    .clone()
                    .unwrap_or_else(|| d.declared.names.join(", "));
                format!("{} {} ({l})", d.name, d.version)
            })
            .collect();
        if !no_text.is_empty() {
            out.push(format!(
                "packed without a license text (their wheels ship none; `--pykiln licenses` names only the license): {}",
                no_text.join(", ")
            ));
        }
        if self.python_license.is_none() {
            out.push(format!(
                "no license text of CPython found ({}/LICENSE.txt); `--pykiln licenses` names the license only",
                self.python.stdlib.display()
            ));
        }
        let unknown: Vec<&str> = self
            .system
            .iter()
            .filter(|l| l.package.is_none())
            .map(|l| l.soname.as_str())
            .collect();
        if !unknown.is_empty() {
            out.push(format!(
                "packed system libraries of unknown origin (no package manager owns them): {}; their licenses are not in `--pykiln licenses`",
                unknown.join(", ")
            ));
        }
        out
    }

    /// The license texts notice (the runtime appends SQLite's).
    pub fn licenses(&self) -> String {
        let rule = "=".repeat(78);
        let mut s = String::new();
        let title = match &self.app {
            Some((name, version, _)) => format!("{name} {version}"),
            None => "this executable".to_string(),
        };
        s.push_str(&format!(
            "Third-party licenses of {title}\n\n\
             This executable was made by pykiln {} and contains the software below: the\n\
             application, {} Python distributions, CPython {} (interpreter and standard\n\
             library), {} system libraries, {} Rust crates and SQLite. Each is followed by the\n\
             license texts it ships.\n",
            env!("CARGO_PKG_VERSION"),
            self.dists.len(),
            self.python.version,
            self.system.len(),
            self.rust.len(),
        ));
        let section = |s: &mut String, heading: String, texts: &[LicenseText]| {
            s.push_str(&format!("\n{rule}\n{heading}\n{rule}\n"));
            for t in texts {
                s.push_str(&format!("\n--- {} ---\n{}\n", t.file, t.text));
            }
        };
        if let Some((name, version, _)) = &self.app {
            if !self.app_texts.is_empty() {
                section(
                    &mut s,
                    format!("{name} {version} (the application)"),
                    &self.app_texts,
                );
            }
        }
        for d in &self.dists {
            let license = d
                .declared
                .expression
                .clone()
                .unwrap_or_else(|| d.declared.names.join("; "));
            let license = if license.is_empty() {
                "not declared".to_string()
            } else {
                license
            };
            section(
                &mut s,
                format!(
                    "{} {} (Python distribution; license: {license})",
                    d.name, d.version
                ),
                &d.texts,
            );
            if d.texts.is_empty() {
                s.push_str("\n(its wheel ships no license text)\n");
            }
        }
        section(
            &mut s,
            format!(
                "CPython {} (interpreter, linked into the runtime, and standard library; license: PSF-2.0)",
                self.python.version
            ),
            self.python_license.as_slice(),
        );
        for l in &self.system {
            match &l.package {
                Some(p) => {
                    let texts: Vec<LicenseText> = p
                        .copyright
                        .iter()
                        .map(|c| LicenseText {
                            file: format!("/usr/share/doc/{}/copyright", p.name),
                            text: c.clone(),
                        })
                        .collect();
                    section(
                        &mut s,
                        format!(
                            "{} from Debian package {} {} (system library packed for the standard library)",
                            l.soname, p.name, p.version
                        ),
                        &texts,
                    );
                }
                None => section(
                    &mut s,
                    format!("{} (system library of unknown origin)", l.soname),
                    &[],
                ),
            }
        }
        // Rust crates share texts (the Apache-2.0 text, mostly): each distinct text once.
        let mut by_text: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut plain = Vec::new();
        for c in &self.rust {
            let id = format!(
                "{} {} ({})",
                c.name,
                c.version,
                c.license.as_deref().unwrap_or("license not declared")
            );
            if c.texts.is_empty() {
                plain.push(id.clone());
            }
            for t in &c.texts {
                by_text
                    .entry(&t.text)
                    .or_default()
                    .push(format!("{id}: {}", t.file));
            }
        }
        s.push_str(&format!(
            "\n{rule}\nRust crates linked into the executable\n{rule}\n"
        ));
        for c in &self.rust {
            s.push_str(&format!(
                "  {} {} ({})\n",
                c.name,
                c.version,
                c.license.as_deref().unwrap_or("license not declared")
            ));
        }
        if !plain.is_empty() {
            s.push_str(&format!(
                "\nShipping no license file: {}\n",
                plain.join(", ")
            ));
        }
        for (text, users) in by_text {
            s.push_str(&format!("\n--- {} ---\n{text}\n", users.join("\n--- ")));
        }
        s
    }

    /// The CycloneDX 1.6 SBOM notice (the runtime adds SQLite; a release adds the
    /// binary's own hash).
    pub fn sbom(&self) -> Value {
        let licenses = |expression: Option<&str>, names: &[String]| -> Option<Value> {
            if let Some(e) = expression {
                return Some(json!([{"expression": e}]));
            }
            (!names.is_empty()).then(|| {
                Value::Array(
                    names
                        .iter()
                        .map(|n| json!({"license": {"name": n}}))
                        .collect(),
                )
            })
        };
        let mut components = Vec::new();
        for d in &self.dists {
            let purl_name = d.name.to_lowercase().replace(['_', '.'], "-");
            let mut c = json!({
                "type": "library",
                "bom-ref": format!("pypi/{purl_name}@{}", d.version),
                "name": d.name,
                "version": d.version,
                "purl": format!("pkg:pypi/{purl_name}@{}", d.version),
                "components": d.files.iter().map(|(path, hash)| json!({
                    "type": "file",
                    "name": path,
                    "hashes": [{"alg": "SHA-256", "content": hash}],
                })).collect::<Vec<_>>(),
            });
            if let Some(l) = licenses(d.declared.expression.as_deref(), &d.declared.names) {
                c["licenses"] = l;
            }
            components.push(c);
        }
        let v = &self.python.version;
        components.push(json!({
            "type": "library",
            "bom-ref": format!("cpython@{v}"),
            "name": "cpython",
            "version": v,
            "description": "CPython: the interpreter, statically linked into the runtime, and its standard library, packed",
            "licenses": [{"expression": "PSF-2.0"}],
            "cpe": format!("cpe:2.3:a:python:python:{v}:*:*:*:*:*:*:*"),
            "purl": format!("pkg:generic/cpython@{v}"),
        }));
        for l in &self.system {
            let mut c = json!({
                "type": "library",
                "name": l.soname,
                "hashes": [{"alg": "SHA-256", "content": l.sha256}],
                "description": "a system library packed for an extension module of the standard library",
            });
            match &l.package {
                Some(p) => {
                    c["bom-ref"] = json!(format!("deb/{}@{}/{}", p.name, p.version, l.soname));
                    c["version"] = json!(p.version);
                    c["purl"] = json!(format!(
                        "pkg:deb/debian/{}@{}?arch={}",
                        p.name,
                        p.version.replace(':', "%3A"),
                        p.arch
                    ));
                    if let Some(lic) = licenses(None, &p.licenses) {
                        c["licenses"] = lic;
                    }
                }
                None => c["bom-ref"] = json!(format!("system/{}", l.soname)),
            }
            components.push(c);
        }
        for r in &self.rust {
            let mut c = json!({
                "type": "library",
                "bom-ref": format!("cargo/{}@{}", r.name, r.version),
                "name": r.name,
                "version": r.version,
                "purl": format!("pkg:cargo/{}@{}", r.name, r.version),
            });
            if let Some(l) = licenses(r.license.as_deref(), &[]) {
                c["licenses"] = l;
            }
            components.push(c);
        }
        let refs: Vec<Value> = components.iter().map(|c| c["bom-ref"].clone()).collect();
        let mut app = json!({"type": "application", "bom-ref": APP_REF});
        match &self.app {
            Some((name, version, description)) => {
                app["name"] = json!(name);
                app["version"] = json!(version);
                if !description.is_empty() {
                    app["description"] = json!(description);
                }
            }
            None => app["name"] = json!("pykiln executable"),
        }
        let mut doc = json!({
            "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
            "bomFormat": "CycloneDX",
            "specVersion": "1.6",
            "version": 1,
            "metadata": {
                "tools": {"components": [{
                    "type": "application",
                    "name": "pykiln",
                    "version": env!("CARGO_PKG_VERSION"),
                }]},
                "component": app,
                "properties": [{"name": "pykiln:python", "value": v}],
            },
            "components": components,
            "dependencies": std::iter::once(json!({"ref": APP_REF, "dependsOn": refs}))
                .chain(refs.iter().map(|r| json!({"ref": r})))
                .collect::<Vec<_>>(),
        });
        // Reproducible: the serial number is derived from the content.
        let digest = Sha256::digest(doc.to_string().as_bytes());
        let hex = format!("{digest:x}");
        let variant = ["8", "9", "a", "b"][usize::from(digest[8] & 3)];
        doc["serialNumber"] = json!(format!(
            "urn:uuid:{}-{}-5{}-{variant}{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        ));
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_fields_expression_names_and_whole_texts() {
        let d = declared(
            "Name: a\nLicense-Expression: MIT OR Apache-2.0\nClassifier: License :: OSI Approved :: MIT License\n\nLicense: not a header\n",
        );
        assert_eq!(d.expression.as_deref(), Some("MIT OR Apache-2.0"));
        assert_eq!(d.names, ["MIT License"]);
        let d = declared(
            "Name: a\nLicense: Copyright (c) me\n        Permission is hereby granted\nLicense: UNKNOWN\n",
        );
        assert_eq!(
            d.text.as_deref(),
            Some("Copyright (c) me\nPermission is hereby granted")
        );
        assert!(d.names.is_empty());
        assert_eq!(
            declared("Name: a\nLicense: BSD-3-Clause\n").names,
            ["BSD-3-Clause"]
        );
    }

    #[test]
    fn license_file_names() {
        for n in [
            "LICENSE",
            "LICENSE.txt",
            "license-mit",
            "COPYING.LESSER",
            "NOTICE",
            "LICENCE",
        ] {
            assert!(is_license_file(n), "{n}");
        }
        for n in ["README.md", "Cargo.toml", "src"] {
            assert!(!is_license_file(n), "{n}");
        }
    }

    #[test]
    fn rust_crates_of_this_workspace_exclude_build_and_proc_macro_dependencies() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let crates = rust_crates(
            Path::new(&cargo),
            &root.join("crates/pykiln-runner/Cargo.toml"),
            Some("x86_64-unknown-linux-gnu"),
        )
        .unwrap();
        let names: BTreeSet<&str> = crates.iter().map(|c| c.name.as_str()).collect();
        for linked in ["pykiln-runner", "pykiln", "pyo3", "libsqlite3-sys", "zstd"] {
            assert!(names.contains(linked), "{linked} missing from {names:?}");
        }
        // Build-time only: build dependencies and proc-macros.
        for build_only in ["pyo3-build-config", "pykiln-pyconfig", "pyo3-macros", "cc"] {
            assert!(!names.contains(build_only), "{build_only} listed");
        }
        let pyo3 = crates.iter().find(|c| c.name == "pyo3").unwrap();
        assert!(pyo3.texts.iter().any(|t| t.text.contains("Apache License")));
    }
}
