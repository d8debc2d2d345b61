fn main() {
    pykiln_build::App::from_project("project")
        .compression_level(3)
        .run_build_script();
}
