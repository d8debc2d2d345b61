fn main() {
    // zstd 3: this binary exists for tests, so build speed beats size.
    pykiln_build::App::from_project("corpus")
        .compression_level(3)
        // numpy's cffi example reads numpy's C headers by path (np.get_include()), which
        // packed numpy has only as package data: compiling C against numpy is a build
        // machine's job, not a packed server's.
        .exclude("numpy.random._examples")
        .run_build_script();
}
