//! The toolchain that targets an old glibc: zig (`zig cc`, from PyPI's `ziglang`) for C
//! and cargo-zigbuild for Rust links, in a virtual environment under the cache.
//!
//! `zig cc -target x86_64-linux-gnu.2.17` compiles against glibc's headers and links
//! against stubs of glibc 2.17's symbol versions, so what it links runs on 2.17 and
//! later. The environment is made with the host's `python3` and pip (PyPI, or the
//! index pip is configured for).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// `ziglang` release on PyPI.
///
/// 0.14.1's clang is LLVM 19.1.7, the release of Debian 12's `llvm-19`, whose
/// `llvm-profdata` and profile runtime profile-guided optimisation needs.
pub const ZIG: &str = "0.14.1";
/// The LLVM major version of [`ZIG`]'s clang.
pub const ZIG_LLVM: u32 = 19;
/// `cargo-zigbuild` release on PyPI.
pub const CARGO_ZIGBUILD: &str = "0.24.1";
/// The oldest glibc binaries are linked against.
pub const GLIBC: &str = "2.17";

/// An installed toolchain.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The virtual environment.
    pub dir: PathBuf,
}

/// A target the toolchain builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Rust's triple.
    pub rust: &'static str,
    /// zig's triple, without the glibc version.
    pub zig: &'static str,
    /// OpenSSL's `Configure` target.
    pub openssl: &'static str,
}

/// The targets pykiln builds interpreters for.
pub const TARGETS: &[Target] = &[
    Target {
        rust: "x86_64-unknown-linux-gnu",
        zig: "x86_64-linux-gnu",
        openssl: "linux-x86_64",
    },
    Target {
        rust: "aarch64-unknown-linux-gnu",
        zig: "aarch64-linux-gnu",
        openssl: "linux-aarch64",
    },
];

impl Target {
    /// The CPU architecture (`x86_64`, `aarch64`).
    pub fn arch(&self) -> &'static str {
        self.zig.split('-').next().unwrap_or(self.zig)
    }

    /// Whether this machine runs the target's programs natively.
    pub fn is_host(&self) -> bool {
        self.arch() == std::env::consts::ARCH
    }
}

/// The target of this machine.
pub fn host() -> anyhow::Result<Target> {
    target(None)
}

/// The target for a Rust triple (default: this machine's).
pub fn target(rust: Option<&str>) -> anyhow::Result<Target> {
    let want = rust.unwrap_or(match std::env::consts::ARCH {
        "aarch64" => "aarch64-unknown-linux-gnu",
        _ => "x86_64-unknown-linux-gnu",
    });
    TARGETS
        .iter()
        .copied()
        .find(|t| t.rust == want)
        .with_context(|| {
            let known: Vec<&str> = TARGETS.iter().map(|t| t.rust).collect();
            format!(
                "pykiln cannot build an interpreter for {want} yet (it can for: {})",
                known.join(", ")
            )
        })
}

impl Toolchain {
    /// The toolchain under `cache`, installed now if it is not there.
    pub fn ensure(cache: &Path, say: &mut dyn FnMut(&str)) -> anyhow::Result<Self> {
        let dir = cache
            .join("toolchain")
            .join(format!("zig-{ZIG}-cargo-zigbuild-{CARGO_ZIGBUILD}"));
        let me = Toolchain { dir };
        if me.dir.join("ready").is_file() {
            me.ensure_shims()?;
            return Ok(me);
        }
        say(&format!(
            "installing zig {ZIG} and cargo-zigbuild {CARGO_ZIGBUILD} from PyPI into {}",
            me.dir.display()
        ));
        let _ = std::fs::remove_dir_all(&me.dir);
        std::fs::create_dir_all(&me.dir)
            .with_context(|| format!("creating {}", me.dir.display()))?;
        let host = std::env::var_os("PYKILN_HOST_PYTHON").unwrap_or_else(|| "python3".into());
        run(
            Command::new(&host).args(["-m", "venv"]).arg(&me.dir),
            "creating the toolchain's virtual environment (python3 -m venv)",
        )?;
        run(
            Command::new(me.dir.join("bin").join("python")).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                &format!("ziglang=={ZIG}"),
                &format!("cargo-zigbuild=={CARGO_ZIGBUILD}"),
            ]),
            "installing ziglang and cargo-zigbuild with pip",
        )?;
        me.ensure_shims()?;
        std::fs::write(me.dir.join("ready"), b"")
            .with_context(|| format!("writing {}", me.dir.display()))?;
        Ok(me)
    }

    /// The environment's `bin/`.
    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// `shims/`: `zig` and `cargo-zigbuild` alone, to put first on PATH (the
    /// environment's `bin/` would also shadow the user's `python3`).
    pub fn shims(&self) -> PathBuf {
        self.dir.join("shims")
    }

    /// Write [`Self::shims`] unless they are there.
    pub fn ensure_shims(&self) -> anyhow::Result<()> {
        if self.shims().join("zig").is_file() && self.shims().join("cargo-zigbuild").exists() {
            return Ok(());
        }
        use std::os::unix::fs::PermissionsExt as _;
        let shims = self.shims();
        std::fs::create_dir_all(&shims).with_context(|| format!("creating {}", shims.display()))?;
        let zig = shims.join("zig");
        let script = format!(
            "#!/bin/sh\nexec '{}' -m ziglang \"$@\"\n",
            self.bin().join("python").display()
        );
        std::fs::write(&zig, script).with_context(|| format!("writing {}", zig.display()))?;
        std::fs::set_permissions(&zig, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", zig.display()))?;
        let link = shims.join("cargo-zigbuild");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(self.bin().join("cargo-zigbuild"), &link)
            .with_context(|| format!("linking {}", link.display()))
    }

    /// Write `bin/<zig target>.<glibc>-{cc,ar,ranlib}`: commands a configure script or
    /// Makefile can take as CC, AR and RANLIB. They stay (the interpreter's sysconfig
    /// names its CC, which pip uses to build a source distribution's C code).
    pub fn wrappers(&self, target: &Target) -> anyhow::Result<Wrappers> {
        use std::os::unix::fs::PermissionsExt as _;
        let python = self.bin().join("python");
        let triple = format!("{}.{GLIBC}", target.zig);
        let mut paths = Vec::new();
        // zig 0.14 makes `__DATE__` an error in optimised builds (-Werror=date-time);
        // CPython's build information uses it.
        for (tool, command) in [
            ("cc", format!("cc -target {triple} -Wno-error=date-time")),
            ("c++", format!("c++ -target {triple} -Wno-error=date-time")),
            ("ar", "ar".to_string()),
            ("ranlib", "ranlib".to_string()),
        ] {
            let path = self.bin().join(format!("{triple}-{tool}"));
            let script = format!(
                "#!/bin/sh\nexec '{}' -m ziglang {command} \"$@\"\n",
                python.display()
            );
            std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", path.display()))?;
            paths.push(path);
        }
        let [cc, cxx, ar, ranlib] = <[PathBuf; 4]>::try_from(paths)
            .map_err(|_| anyhow::anyhow!("four wrappers were written"))?;
        Ok(Wrappers {
            cc,
            cxx,
            ar,
            ranlib,
        })
    }
}

/// LLVM's profile tools of the same major version as zig's clang: what profile-guided
/// optimisation needs besides the compiler (zig ships neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileTools {
    /// `llvm-profdata`, which merges the training run's raw profiles.
    pub profdata: PathBuf,
    /// `libclang_rt.profile-<arch>.a`, linked into the instrumented interpreter.
    pub runtime: PathBuf,
}

impl Toolchain {
    /// The LLVM major version of zig's clang (`clang version 19.1.7` → 19).
    pub fn llvm_major(&self, wrappers: &Wrappers) -> anyhow::Result<u32> {
        let out = Command::new(&wrappers.cc)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} --version", wrappers.cc.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        llvm_major_of(&text)
            .with_context(|| format!("{} --version said: {}", wrappers.cc.display(), text.trim()))
    }
}

fn llvm_major_of(version_text: &str) -> Option<u32> {
    let rest = version_text.split("clang version ").nth(1)?;
    rest.split('.').next()?.trim().parse().ok()
}

/// LLVM `major`'s profile tools for `arch`, where Debian's and Ubuntu's `llvm-<major>`
/// and `libclang-rt-<major>-dev` put them (`/usr/lib/llvm-<major>`); what is missing is
/// named in the error.
pub fn profile_tools(major: u32, arch: &str) -> Result<ProfileTools, String> {
    let base = PathBuf::from(format!("/usr/lib/llvm-{major}"));
    let profdata = base.join("bin").join("llvm-profdata");
    let runtime = base
        .join("lib/clang")
        .join(major.to_string())
        .join("lib/linux")
        .join(format!("libclang_rt.profile-{arch}.a"));
    let missing: Vec<String> = [&profdata, &runtime]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        Ok(ProfileTools { profdata, runtime })
    } else {
        Err(format!(
            "no {} (Debian and Ubuntu: `apt install llvm-{major} libclang-rt-{major}-dev`)",
            missing.join(" or ")
        ))
    }
}

/// The C toolchain's commands for one target.
#[derive(Debug, Clone)]
pub struct Wrappers {
    /// C compiler.
    pub cc: PathBuf,
    /// C++ compiler.
    pub cxx: PathBuf,
    /// Archiver.
    pub ar: PathBuf,
    /// Archive indexer.
    pub ranlib: PathBuf,
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_llvm_version_comes_from_clangs_banner() {
        let zig = "clang version 19.1.7 (https://github.com/ziglang/zig-bootstrap de1b01a)\nTarget: x86_64-unknown-linux-musl\n";
        assert_eq!(llvm_major_of(zig), Some(19));
        assert_eq!(llvm_major_of("Debian clang version 16.0.6 (15)"), Some(16));
        assert_eq!(llvm_major_of("gcc (Debian 12.2.0-14) 12.2.0"), None);
    }

    #[test]
    fn missing_profile_tools_are_named_with_their_packages() {
        // No LLVM 7 on any machine this runs on.
        let err = profile_tools(7, "x86_64").unwrap_err();
        assert!(err.contains("/usr/lib/llvm-7/bin/llvm-profdata"), "{err}");
        assert!(
            err.contains("apt install llvm-7 libclang-rt-7-dev"),
            "{err}"
        );
    }
}
