//! Running an interpreter built for another CPU (an aarch64 CPython on an x86_64 build
//! machine): under qemu-user, which runs a foreign Linux program as a process of this
//! machine. The build needs to run the target's interpreter (the probe, pip's wheel
//! choice, the import run) so that what it observes is what the target will do.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The CPU architecture an ELF file is built for (`x86_64`, `aarch64`, …), read from
/// its header; None for anything else (a script, a missing file).
pub fn elf_arch(path: &Path) -> Option<&'static str> {
    Some(match elf_machine(path)? {
        goblin::elf::header::EM_X86_64 => "x86_64",
        goblin::elf::header::EM_AARCH64 => "aarch64",
        goblin::elf::header::EM_386 => "x86",
        goblin::elf::header::EM_ARM => "arm",
        goblin::elf::header::EM_RISCV => "riscv64",
        goblin::elf::header::EM_PPC64 => "powerpc64",
        goblin::elf::header::EM_S390 => "s390x",
        _ => "unknown",
    })
}

/// The `e_machine` field of an ELF file's header; None for anything else.
pub fn elf_machine(path: &Path) -> Option<u16> {
    let mut head = [0u8; 64];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    goblin::elf::Elf::parse_header(&head)
        .ok()
        .map(|h| h.e_machine)
}

/// The architecture of `program` when this machine cannot run it natively.
pub fn foreign_arch(program: &Path) -> Option<&'static str> {
    // A program given by name is looked up where Command would find it.
    let resolved = if program.components().count() == 1 {
        find_on_path(program.as_os_str())?
    } else {
        program.to_path_buf()
    };
    elf_arch(&resolved).filter(|a| *a != std::env::consts::ARCH)
}

/// qemu-user for `arch`: `PYKILN_QEMU_<ARCH>` if set (set and empty: none, even if
/// one is installed), else `qemu-<arch>-static` or `qemu-<arch>` on PATH (Debian's
/// qemu-user-static and qemu-user).
pub fn emulator(arch: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(format!("PYKILN_QEMU_{}", arch.to_uppercase())) {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    [format!("qemu-{arch}-static"), format!("qemu-{arch}")]
        .iter()
        .find_map(|name| find_on_path(name.as_ref()))
}

/// A program that cannot run here.
#[derive(Debug, thiserror::Error)]
#[error(
    "{program} is built for {arch} and this machine is {host}: running it needs qemu-user \
     (Debian and Ubuntu: `apt install qemu-user-static`; or set PYKILN_QEMU_{upper} to an emulator)"
)]
pub struct NoEmulator {
    /// The program.
    pub program: String,
    /// Its architecture.
    pub arch: String,
    /// This machine's.
    pub host: &'static str,
    /// `arch` in capitals, for the variable's name.
    pub upper: String,
}

/// A command that runs `program`: directly, or under qemu-user when it is built for
/// another architecture.
pub fn command(program: &Path) -> Result<Command, NoEmulator> {
    match foreign_arch(program) {
        None => Ok(Command::new(program)),
        Some(arch) => {
            let qemu = emulator(arch).ok_or_else(|| no_emulator(program, arch))?;
            Ok(emulated(&qemu, program))
        }
    }
}

/// How this machine runs an interpreter's build-time scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runs {
    /// It is built for this machine.
    Natively,
    /// Under this qemu-user.
    Emulated(PathBuf),
    /// Not at all; its same-version twin for this machine (`bin/python3.X` of the
    /// installation `pykiln python install` built beside it, which the cross build of
    /// the foreign one needed first) runs what does not depend on the CPU: bytecode
    /// compilation, source analysis, pip for the target's platform. The target's own
    /// import runs (start-up order, import baseline) are not possible.
    OnTwin(PathBuf),
}

/// How `interpreter`'s scripts run here; an interpreter of another CPU without an
/// emulator and without a twin is a [`NoEmulator`] error.
pub fn runs(interpreter: &Path) -> Result<Runs, NoEmulator> {
    let Some(arch) = foreign_arch(interpreter) else {
        return Ok(Runs::Natively);
    };
    if let Some(qemu) = emulator(arch) {
        return Ok(Runs::Emulated(qemu));
    }
    twin(interpreter)
        .map(Runs::OnTwin)
        .ok_or_else(|| no_emulator(interpreter, arch))
}

impl Runs {
    /// The command that runs `interpreter`'s scripts so.
    pub fn command(&self, interpreter: &Path) -> Command {
        match self {
            Runs::Natively => Command::new(interpreter),
            Runs::Emulated(qemu) => emulated(qemu, interpreter),
            Runs::OnTwin(twin) => Command::new(twin),
        }
    }
}

/// A command that runs `interpreter`'s scripts: the interpreter, under qemu-user when
/// it is built for another CPU, else its twin ([`Runs::OnTwin`]).
pub fn script_command(interpreter: &Path) -> Result<Command, NoEmulator> {
    Ok(runs(interpreter)?.command(interpreter))
}

fn emulated(qemu: &Path, program: &Path) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.arg(program);
    cmd
}

fn no_emulator(program: &Path, arch: &str) -> NoEmulator {
    NoEmulator {
        program: program.display().to_string(),
        arch: arch.to_string(),
        host: std::env::consts::ARCH,
        upper: arch.to_uppercase(),
    }
}

/// The same-version interpreter for this machine installed beside `interpreter` (both
/// built by `pykiln python install`: `<root>/<installation>/bin/python3.X`).
pub fn twin(interpreter: &Path) -> Option<PathBuf> {
    let prefix = interpreter.parent()?.parent()?;
    let mine = crate::Portable::read(prefix)?.ok()?;
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let name = interpreter.file_name()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(prefix.parent()?)
        .ok()?
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| {
            crate::Portable::read(&e.path())
                .and_then(Result::ok)
                .is_some_and(|p| p.version == mine.version && p.target == host)
        })
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    // Deterministic when several recipes' builds of the version are installed.
    found.sort();
    found.pop()
}

/// `name` in one of PATH's directories.
pub fn find_on_path(name: &std::ffi::OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little-endian
        b[6] = 1;
        b[16] = 2; // ET_EXEC
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[20] = 1;
        b[52] = 64; // e_ehsize
        b
    }

    #[test]
    fn the_architecture_comes_from_the_elf_header() {
        let dir = tempfile::tempdir().unwrap();
        let arm = dir.path().join("arm");
        std::fs::write(&arm, elf(goblin::elf::header::EM_AARCH64)).unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n".repeat(10)).unwrap();
        assert_eq!(elf_arch(&arm), Some("aarch64"));
        assert_eq!(elf_arch(&script), None);
        assert_eq!(elf_arch(&dir.path().join("missing")), None);
        // This test binary runs here.
        let me = std::env::current_exe().unwrap();
        assert_eq!(elf_arch(&me), Some(std::env::consts::ARCH));
        assert_eq!(foreign_arch(&me), None);
    }

    #[test]
    fn a_foreign_program_runs_under_the_named_emulator_or_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let other = if std::env::consts::ARCH == "aarch64" {
            goblin::elf::header::EM_X86_64
        } else {
            goblin::elf::header::EM_AARCH64
        };
        let prog = dir.path().join("python3.11");
        std::fs::write(&prog, elf(other)).unwrap();
        let arch = foreign_arch(&prog).unwrap();
        let var = format!("PYKILN_QEMU_{}", arch.to_uppercase());
        // SAFETY: this test alone reads or writes this variable.
        unsafe { std::env::set_var(&var, "/opt/qemu") };
        let cmd = command(&prog).unwrap();
        assert_eq!(cmd.get_program(), "/opt/qemu");
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), [prog.as_os_str()]);
        unsafe { std::env::remove_var(&var) };
        if emulator(arch).is_none() {
            let err = command(&prog).unwrap_err().to_string();
            assert!(err.contains("python3.11") && err.contains("qemu"), "{err}");
        }

        // Set and empty: no emulator, even if one is installed. A pykiln-built
        // interpreter's scripts then run on its same-version twin for this machine.
        unsafe { std::env::set_var(&var, "") };
        assert_eq!(emulator(arch), None);
        let root = dir.path().join("python");
        let install = |name: &str, version: &str, target: &str, exe: &[u8]| {
            let prefix = root.join(name);
            std::fs::create_dir_all(prefix.join("bin")).unwrap();
            std::fs::write(prefix.join("bin/python3.11"), exe).unwrap();
            let record = crate::Portable {
                version: version.into(),
                target: target.into(),
                glibc: "2.17".into(),
                toolchain: "/t".into(),
                key: name.into(),
                sources: Default::default(),
                optimizations: Vec::new(),
            };
            std::fs::write(
                prefix.join(crate::PORTABLE_FILE),
                serde_json::to_vec(&record).unwrap(),
            )
            .unwrap();
            prefix.join("bin/python3.11")
        };
        let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let foreign = install(
            "f",
            "3.11.2",
            &format!("{arch}-unknown-linux-gnu"),
            &elf(other),
        );
        assert!(
            matches!(runs(&foreign), Err(NoEmulator { .. })),
            "no twin installed yet"
        );
        install("other-version", "3.11.9", &host, b"");
        assert!(runs(&foreign).is_err(), "a twin is the same version");
        let twin = install("t", "3.11.2", &host, b"");
        assert_eq!(runs(&foreign).unwrap(), Runs::OnTwin(twin.clone()));
        assert_eq!(script_command(&foreign).unwrap().get_program(), twin);
        // Running the program itself (not its scripts) still needs the emulator.
        assert!(command(&foreign).is_err());
        assert_eq!(runs(&twin).unwrap(), Runs::Natively);
        unsafe { std::env::remove_var(&var) };
    }
}
