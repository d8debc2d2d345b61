//! `pykiln dist --sign KEY`: signatures made with a key the user already has, in formats
//! checked with tools they already have.
//!
//! - An OpenSSH key (private key file, or a `.pub` whose private half is in ssh-agent):
//!   an SSH signature (`ssh-keygen -Y sign`, namespace `file`), written as `.sig`;
//!   checked with `ssh-keygen -Y verify -f allowed_signers -I ID -n file -s F.sig < F`,
//!   in every OpenSSH since 8.0.
//! - A minisign secret key: a minisign signature, written as `.minisig`; checked with
//!   `minisign -Vm F -p KEY.pub`.
//!
//! The signing itself is left to those tools (`ssh-keygen`, `minisign`): they read every
//! key format, ask for a passphrase on the terminal, use the agent and hardware keys,
//! and are what the verifying side runs. Ed25519 signatures are deterministic and the
//! trusted comment is fixed, so a re-run of `dist` gives the same bytes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// A key to sign with, by the tool that uses it.
#[derive(Debug, Clone)]
pub enum Signer {
    /// An OpenSSH private key, or a public key whose private half is in ssh-agent.
    Ssh(PathBuf),
    /// A minisign secret key.
    Minisign(PathBuf),
}

impl Signer {
    /// The signer for the key file `path`, by what the file holds.
    pub fn from_key(path: &Path) -> anyhow::Result<Signer> {
        let text = std::fs::read(path)
            .with_context(|| format!("reading the signing key {}", path.display()))?;
        let head = String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned();
        let first = head.lines().next().unwrap_or("").trim();
        if first == "-----BEGIN OPENSSH PRIVATE KEY-----" {
            return Ok(Signer::Ssh(path.to_path_buf()));
        }
        if first.starts_with("ssh-") || first.starts_with("sk-ssh-") || first.starts_with("ecdsa-")
        {
            // A public key: ssh-keygen signs with its private half held by ssh-agent.
            return Ok(Signer::Ssh(path.to_path_buf()));
        }
        if first.starts_with("untrusted comment:") && head.contains("secret key") {
            return Ok(Signer::Minisign(path.to_path_buf()));
        }
        if first.starts_with("untrusted comment:") {
            bail!(
                "{} is a minisign public key: --sign takes the secret key (minisign.key)",
                path.display()
            );
        }
        if first.starts_with("-----BEGIN") {
            bail!(
                "{} is a PEM key ({first}); --sign takes an OpenSSH key (ssh-keygen -t ed25519) or a minisign secret key",
                path.display()
            );
        }
        bail!(
            "{} is neither an OpenSSH key nor a minisign secret key",
            path.display()
        )
    }

    /// The key file.
    pub fn key(&self) -> &Path {
        match self {
            Signer::Ssh(k) | Signer::Minisign(k) => k,
        }
    }

    /// The extension of this signer's signature files.
    pub fn extension(&self) -> &'static str {
        match self {
            Signer::Ssh(_) => "sig",
            Signer::Minisign(_) => "minisig",
        }
    }

    /// Sign `data` (described as `what` in the minisign trusted comment and in errors).
    pub fn sign(&self, data: &[u8], what: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            Signer::Ssh(key) => {
                let mut cmd = Command::new("ssh-keygen");
                cmd.args(["-Y", "sign", "-n", "file", "-f"]).arg(key);
                let sig = run_with_input(cmd, data, "ssh-keygen", key, what)?;
                // ssh-keygen checks nothing about what it made; a signature that does
                // not verify must not be shipped.
                let mut check = Command::new("ssh-keygen");
                let sig_file = tempfile::NamedTempFile::new().context("a temporary file")?;
                std::fs::write(sig_file.path(), &sig).context("writing a temporary file")?;
                check
                    .args(["-Y", "check-novalidate", "-n", "file", "-s"])
                    .arg(sig_file.path());
                run_with_input(check, data, "ssh-keygen -Y check-novalidate", key, what)?;
                Ok(sig)
            }
            Signer::Minisign(key) => {
                // minisign signs files, not standard input.
                let dir = tempfile::tempdir().context("a temporary directory")?;
                let input = dir.path().join("data");
                let output = dir.path().join("data.minisig");
                std::fs::write(&input, data).context("writing a temporary file")?;
                let mut cmd = Command::new("minisign");
                cmd.args(["-S", "-s"])
                    .arg(key)
                    .arg("-m")
                    .arg(&input)
                    .arg("-x")
                    .arg(&output)
                    .args(["-t", &format!("pykiln dist: {what}")]);
                run_with_input(cmd, &[], "minisign", key, what)?;
                std::fs::read(&output).with_context(|| {
                    format!(
                        "minisign wrote no signature for {what} with {}",
                        key.display()
                    )
                })
            }
        }
    }
}

/// Run a signing tool with `input` on its stdin and the terminal (if any) left to it for
/// a passphrase: its stdout, or an error quoting its stderr.
fn run_with_input(
    mut cmd: Command,
    input: &[u8],
    tool: &str,
    key: &Path,
    what: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "running {tool} to sign {what} (is it installed? Debian: openssh-client, minisign)"
            )
        })?;
    let mut stdin = child.stdin.take().context("the signing tool's stdin")?;
    let written = stdin.write_all(input);
    drop(stdin);
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} could not sign {what} with {} ({}): {}",
            key.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    written.with_context(|| format!("writing {what} to {tool}"))?;
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn the_key_file_says_which_tool_signs() {
        let ssh = key_file("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn...\n");
        assert!(matches!(Signer::from_key(ssh.path()), Ok(Signer::Ssh(_))));
        let agent = key_file("ssh-ed25519 AAAAC3Nza... me@host\n");
        assert!(matches!(Signer::from_key(agent.path()), Ok(Signer::Ssh(_))));
        let mini = key_file("untrusted comment: minisign encrypted secret key\nRWRTY0...\n");
        assert!(matches!(
            Signer::from_key(mini.path()),
            Ok(Signer::Minisign(_))
        ));
        let public = key_file("untrusted comment: minisign public key 1234\nRWQ...\n");
        let err = Signer::from_key(public.path()).unwrap_err().to_string();
        assert!(err.contains("public key"), "{err}");
        let pem = key_file("-----BEGIN PRIVATE KEY-----\nMC4CAQ...\n");
        let err = Signer::from_key(pem.path()).unwrap_err().to_string();
        assert!(err.contains("PEM"), "{err}");
        let err = Signer::from_key(Path::new("/nonexistent/key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/key"), "{err}");
    }
}
