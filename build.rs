//! Packs examples/notes-server into the archive that src/main.rs embeds.

fn main() {
    pykiln_build::App::from_project("examples/notes-server").run_build_script();
}
