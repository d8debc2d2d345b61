//! A runner (the runtime with no archive of its own) for the servers test: it runs the
//! archive appended to a copy of it, as `pykiln build` makes binaries.
fn main() -> std::process::ExitCode {
    pykiln::run_appended()
}
