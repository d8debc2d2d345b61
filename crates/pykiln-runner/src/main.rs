//! `pykiln-runner`: runs the archive appended to its own executable.
//!
//! The `pykiln` CLI builds this once per interpreter (cached under the pykiln cache)
//! and makes each application by copying it and appending an archive and a trailer
//! (`pykiln_archive::trailer`), so no compiler or linker runs per application.

fn main() -> std::process::ExitCode {
    pykiln::run_appended()
}
