//! Record the target triple: the runner is built for it, and Tauri sidecars are named
//! after it.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=PYKILN_TARGET={target}");
}
