//! The launcher console: `<binary> --pykiln <command>`.

use std::ffi::OsString;
use std::io::Write as _;

use anyhow::{Context as _, bail};
use pykiln_archive::{Archive, Manifest};

use crate::interp::{self, Mode};

const USAGE: &str = "usage: <binary> --pykiln <command>\n\
commands:\n\
  info               JSON description of the binary and its archive\n\
  licenses           the license texts of everything packed and linked (THIRD_PARTY_LICENSES)\n\
  sbom               a CycloneDX 1.6 JSON SBOM of everything packed and linked\n\
  python [args...]   a Python interpreter inside the packed environment (-c, -m, script, REPL)\n\
  verify [--import-timeout S]  check every checksum and import every packed module (an import\n\
  \x20 still running after S seconds, default 30, is skipped as hanging)\n";

fn usage() -> String {
    format!("{USAGE}{}", crate::selftest::USAGE)
}

/// Run a console command; `rest` are the arguments after `--pykiln`.
pub fn run(
    archive: Archive<'static>,
    manifest: Manifest,
    argv0: &OsString,
    rest: Vec<OsString>,
) -> anyhow::Result<i32> {
    let Some(cmd) = rest.first() else {
        eprint!("{}", usage());
        return Ok(2);
    };
    match cmd.to_str() {
        Some("info") => {
            let info = info(&archive, &manifest)?;
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &info)?;
            writeln!(out)?;
            Ok(0)
        }
        Some("python") => {
            let mut argv = vec![argv0.clone()];
            argv.extend(rest.into_iter().skip(1));
            interp::run(archive, manifest, Mode::Python, argv)
        }
        Some("verify") => {
            let timeout = match &rest[1..] {
                [] => Some(30.0),
                [flag, secs] if flag == "--import-timeout" => secs
                    .to_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s > 0.0),
                _ => None,
            };
            let Some(import_timeout) = timeout else {
                eprint!(
                    "pykiln: verify takes only --import-timeout SECONDS (a positive number)\n{USAGE}"
                );
                return Ok(2);
            };
            let corrupt = verify_checksums(&archive);
            verify_views(&archive, &manifest);
            interp::run(
                archive,
                manifest,
                Mode::Verify {
                    corrupt,
                    import_timeout,
                },
                vec![argv0.clone()],
            )
        }
        Some(what @ ("licenses" | "sbom")) => {
            if rest.len() > 1 {
                eprint!("pykiln: {what} takes no arguments\n{}", usage());
                return Ok(2);
            }
            let text = notice(&archive, what)?;
            let mut out = std::io::stdout().lock();
            let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            match written {
                // `| head` closing the pipe early is not a failure.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(0),
            }
        }
        Some("selftest") => crate::selftest::run(&rest[1..]),
        Some("help" | "--help" | "-h") => {
            print!("{}", usage());
            Ok(0)
        }
        _ => {
            eprint!("pykiln: unknown command {cmd:?}\n{}", usage());
            Ok(2)
        }
    }
}

/// The `licenses` or `sbom` document: the archive's notice with what only the runtime
/// knows (the SQLite it links) added.
fn notice(archive: &Archive<'_>, what: &str) -> anyhow::Result<String> {
    use pykiln_archive::notices;
    let name = if what == "sbom" {
        notices::SBOM
    } else {
        notices::LICENSES
    };
    let stored = archive
        .notice(name)
        .with_context(|| format!("this binary's archive has no '{name}' notice"))?
        .read()
        .with_context(|| format!("reading the '{name}' notice"))?;
    let sqlite = crate::sqlite_version();
    if what == "sbom" {
        let doc = notices::complete_sbom(&stored, &sqlite, None)?;
        Ok(format!("{}\n", serde_json::to_string_pretty(&doc)?))
    } else {
        Ok(format!(
            "{}\n\n{}",
            String::from_utf8_lossy(&stored).trim_end(),
            notices::sqlite_license(&sqlite)
        ))
    }
}

/// Read every entry; report failures on stderr and return them as (kind, key).
fn verify_checksums(archive: &Archive<'_>) -> Vec<(String, String)> {
    let mut bad = Vec::new();
    for e in archive.entries() {
        if let Err(err) = e.read().and_then(|_| e.read_source()) {
            eprintln!("FAIL {err}");
            // Two-part keys (`package\0path`) read as paths.
            bad.push((
                e.kind().name().to_string(),
                e.key_lossy().replace('\0', "/"),
            ));
        }
    }
    eprintln!("checksums: {} entries, {} failed", archive.len(), bad.len());
    bad
}

/// Check every on-disk view already written, file digests included (a start checks only
/// owners, modes and sizes); a damaged one is written again. Reported on stderr: a
/// damaged cache is repaired, not a defect of the binary.
fn verify_views(archive: &Archive<'_>, manifest: &Manifest) {
    let (mut good, mut absent) = (0, 0);
    for group in &manifest.on_disk {
        match crate::fileview::check(archive, group) {
            Ok(crate::fileview::Checked::Good) => good += 1,
            Ok(crate::fileview::Checked::Absent) => absent += 1,
            Ok(crate::fileview::Checked::Repaired(why)) => {
                eprintln!("REPAIRED the on-disk view of {}: {why}", group.name);
            }
            Err(e) => eprintln!("FAIL the on-disk view of {}: {e}", group.name),
        }
    }
    if !manifest.on_disk.is_empty() {
        eprintln!(
            "on-disk views: {} of {} checked file by file, {absent} not written yet",
            good,
            manifest.on_disk.len()
        );
    }
}

fn info(archive: &Archive<'static>, manifest: &Manifest) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let (offset, exe_len) = locate_in_executable(archive.bytes())?;
    let counts: serde_json::Map<String, serde_json::Value> = archive
        .counts()
        .into_iter()
        .map(|(k, n)| (k.name().to_string(), n.into()))
        .collect();
    Ok(serde_json::json!({
        "pykiln_version": crate::VERSION,
        "python_version": crate::PYTHON_VERSION,
        "archive_python_version": manifest.python_version,
        "executable": exe,
        "executable_size": exe_len,
        "archive": {
            "offset": offset,
            "length": archive.size(),
            "entries": archive.len(),
            "counts": counts,
        },
        "sqlite_version": crate::sqlite_version(),
        "app": manifest.app,
        "distributions": manifest.distributions,
        "build": manifest.build,
        "on_disk": manifest.on_disk,
        "file_backed_native": manifest.file_backed_native.keys().collect::<Vec<_>>(),
        "startup_modules": manifest.startup.len(),
        "glibc": glibc_requirement(archive, &exe),
    }))
}

/// The oldest glibc this binary starts on and what needs it: the newest GNU symbol
/// version required by the executable or by any packed native file.
fn glibc_requirement(archive: &Archive<'_>, exe: &std::path::Path) -> serde_json::Value {
    use pykiln_archive::EntryKind;
    let mut newest: Option<(pykiln_glibc::GlibcVersion, String)> = None;
    let mut note = |v: Option<pykiln_glibc::GlibcVersion>, what: String| {
        if let Some(v) = v {
            if newest.as_ref().is_none_or(|(n, _)| v > *n) {
                newest = Some((v, what));
            }
        }
    };
    let exe_req = std::fs::read(exe)
        .ok()
        .and_then(|b| pykiln_glibc::required(&b).ok().flatten());
    note(exe_req, "the executable".into());
    for e in archive.entries() {
        if matches!(e.kind(), EntryKind::Extension | EntryKind::SharedLib) {
            if let Ok(bytes) = e.read() {
                note(
                    pykiln_glibc::required(&bytes).ok().flatten(),
                    format!("packed {}", e.key_lossy()),
                );
            }
        }
    }
    match newest {
        Some((v, what)) => serde_json::json!({
            "minimum": v.to_string(),
            "needed_by": what,
            "executable": exe_req.map(|v| v.to_string()),
        }),
        None => serde_json::Value::Null,
    }
}

/// File offset of `bytes` inside the running executable, from the mapping that holds
/// them in /proc/self/maps; also returns the executable's size.
fn locate_in_executable(bytes: &[u8]) -> anyhow::Result<(u64, u64)> {
    let exe = std::fs::canonicalize("/proc/self/exe").context("reading /proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    let addr = bytes.as_ptr() as u64;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off), Some(_dev), Some(_inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path: String = f.collect::<Vec<_>>().join(" ");
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi), Ok(off)) = (
            u64::from_str_radix(lo, 16),
            u64::from_str_radix(hi, 16),
            u64::from_str_radix(off, 16),
        ) else {
            continue;
        };
        if (lo..hi).contains(&addr) && std::path::Path::new(&path) == exe {
            let size = std::fs::metadata(&exe).map(|m| m.len()).unwrap_or(0);
            return Ok((addr - lo + off, size));
        }
    }
    bail!(
        "the archive is not inside a file mapping of {}",
        exe.display()
    )
}
