//! A corrupted runner in the cache is built again, never copied into an application.
//! (Its own test binary: it changes the shared runner that other tests copy.)

use pykiln_test_support::{self as support, CommandExt as _};
use std::process::Command;

#[test]
fn a_corrupted_cached_runner_is_rebuilt() {
    let runner = || {
        let out = Command::new(env!("CARGO_BIN_EXE_pykiln"))
            .arg("runner")
            .output_within(support::LONG);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (std::path::PathBuf::from(path), err)
    };
    let (path, _) = runner();
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let (again, err) = runner();
    assert_eq!(again, path);
    assert!(
        err.contains("does not match its checksum: building it again"),
        "{err}"
    );
    assert!(
        std::fs::read(&path).unwrap() == good,
        "the runner was not restored"
    );
}
