fn main() {
    // zstd 3: this binary exists for tests, so build speed beats size.
    pykiln_build::App::from_project("project")
        .compression_level(3)
        .run_build_script();
}
