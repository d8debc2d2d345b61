//! Export the Python C API and SQLite symbols to the extension modules the runner
//! loads: pykiln's build script writes the linker's list, this binary's link uses it.

fn main() {
    match std::env::var("DEP_PYKILN_PYTHON_EXPORTS") {
        Ok(list) => println!("cargo:rustc-link-arg-bins=-Wl,--dynamic-list={list}"),
        Err(_) => {
            eprintln!(
                "error: DEP_PYKILN_PYTHON_EXPORTS is not set (pykiln's build script sets it)"
            );
            std::process::exit(1);
        }
    }
}
