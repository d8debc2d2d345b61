//! Export the Python C API and SQLite symbols to the extension modules the runner
//! loads: pykiln's build script writes the linker's list, this binary's link uses it.
//! Link position-dependent when pykiln's build script says libpython needs it.

fn main() {
    // A `zig cc` link (old glibc) exports through a stub library instead of the list.
    if let Ok(stub) = std::env::var("DEP_PYKILN_PYTHON_EXPORT_STUB") {
        let dir = std::path::Path::new(&stub)
            .parent()
            .unwrap_or(std::path::Path::new("."));
        println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--as-needed");
        println!("cargo:rustc-link-arg-bins=-lpykiln-export-stub");
    } else {
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
    // A static libpython compiled without -fPIC (Debian's python3.X-dev).
    if std::env::var("DEP_PYKILN_PYTHON_PIE").is_ok_and(|v| v == "0") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
