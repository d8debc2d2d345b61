//! Finding the target system's CA certificates for `ssl`.
//!
//! The packed OpenSSL looks for CA certificates where the *build* machine's distro keeps
//! them (e.g. Debian's `/usr/lib/ssl/cert.pem`). On a target whose distro keeps them
//! elsewhere, `ssl.create_default_context()` would trust nothing. So, as Go's crypto/x509
//! does, when neither `SSL_CERT_FILE` nor `SSL_CERT_DIR` is set and the compiled-in
//! locations do not exist, the well-known bundle locations are probed and the first
//! found is exported as `SSL_CERT_FILE` / `SSL_CERT_DIR` (which OpenSSL honours, and
//! which child processes inherit).

use std::path::Path;

/// CA bundle files, in Go's order (Debian/Ubuntu/Gentoo, Fedora/RHEL 6, openSUSE,
/// OpenELEC, CentOS/RHEL 7+, Alpine).
pub const BUNDLE_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Hashed-certificate directories (Go's list).
pub const BUNDLE_DIRS: &[&str] = &[
    "/etc/ssl/certs",
    "/etc/pki/tls/certs",
    "/system/etc/security/cacerts",
];

/// What to export, given the compiled-in paths and a file-existence test.
pub fn choose(
    compiled_in: &[String],
    env_set: bool,
    exists: impl Fn(&Path) -> bool,
) -> (Option<&'static str>, Option<&'static str>) {
    if env_set || compiled_in.iter().any(|p| exists(Path::new(p))) {
        return (None, None);
    }
    let file = BUNDLE_FILES.iter().copied().find(|f| exists(Path::new(f)));
    let dir = BUNDLE_DIRS.iter().copied().find(|d| exists(Path::new(d)));
    (file, dir)
}

/// Export `SSL_CERT_FILE`/`SSL_CERT_DIR` if the target needs them. Call before any
/// thread starts (it changes the environment).
pub fn configure(compiled_in: &[String]) {
    let env_set = std::env::var_os("SSL_CERT_FILE").is_some_and(|v| !v.is_empty())
        || std::env::var_os("SSL_CERT_DIR").is_some_and(|v| !v.is_empty());
    let (file, dir) = choose(compiled_in, env_set, |p| p.exists());
    for (var, value) in [("SSL_CERT_FILE", file), ("SSL_CERT_DIR", dir)] {
        if let Some(v) = value {
            tracing::debug!(
                var,
                value = v,
                "CA certificates found at a non-default location"
            );
            // SAFETY: called from main before the interpreter or any other thread runs.
            unsafe { std::env::set_var(var, v) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_only_when_needed() {
        let fedora = |p: &Path| {
            p == Path::new("/etc/pki/tls/certs/ca-bundle.crt")
                || p == Path::new("/etc/pki/tls/certs")
        };
        let debian_build = vec!["/usr/lib/ssl/cert.pem".to_string()];
        assert_eq!(
            choose(&debian_build, false, fedora),
            (
                Some("/etc/pki/tls/certs/ca-bundle.crt"),
                Some("/etc/pki/tls/certs")
            )
        );
        // The user's variables win; so does a compiled-in path that exists.
        assert_eq!(choose(&debian_build, true, fedora), (None, None));
        assert_eq!(
            choose(&debian_build, false, |p| p.ends_with("cert.pem")),
            (None, None)
        );
        assert_eq!(choose(&debian_build, false, |_| false), (None, None));
    }
}
