//! The binary runs where no Python exists: a bubblewrap root holding only the binary
//! and the glibc family, with an empty environment.

mod common;
use common::support::{self, CommandExt as _};
#[path = "common/sandbox.rs"]
mod sandbox;

use common::{Session, exercise_notes_server};
use std::path::Path;
use std::process::Command;

fn bwrap() -> Option<std::path::PathBuf> {
    sandbox::bwrap()
}

fn sandbox_command(root: &Path, args: &[&str]) -> Command {
    sandbox::command(
        root,
        "pykiln-notes",
        &[("PYKILN_NOTES_DB", "/tmp/notes.db")],
        args,
    )
}

fn make_root() -> tempfile::TempDir {
    sandbox::make_root(&common::binary(), "pykiln-notes")
}

#[test]
fn runs_in_a_root_without_python() {
    if bwrap().is_none() {
        return;
    }
    let root = make_root();
    // Nothing Python-shaped is in the root.
    for e in sandbox::walk(root.path()) {
        let s = e.to_string_lossy();
        assert!(
            !s.contains("python") && !s.contains("sqlite") && !s.contains("libssl"),
            "{s}"
        );
    }
    let mut s = Session::spawn(sandbox_command(root.path(), &[]));
    exercise_notes_server(&mut s);
    assert!(s.finish().success());

    let out = sandbox_command(root.path(), &["--pykiln", "verify"]).output_within(support::TIMEOUT);
    // Modules that load a library of the host's by name (ctypes), which a root holding
    // only glibc lacks; they import wherever that library is installed. Any other
    // failure (or no summary at all) fails the test.
    const NEEDS_HOST_LIBRARY: &[&str] = &[
        // 3.13's REPL fallback for a missing `_curses` (packed here, so never used):
        // looks up libncursesw with ctypes.util.find_library.
        "_pyrepl._minimal_curses",
    ];
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let failed: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("FAIL "))
        .filter(|l| {
            !NEEDS_HOST_LIBRARY
                .iter()
                .any(|m| l.starts_with(&format!("{m}: ")))
        })
        .collect();
    let summary = report
        .lines()
        .rfind(|l| l.starts_with("verify: "))
        .unwrap_or("");
    assert!(
        failed.is_empty() && !summary.is_empty(),
        "verify in the sandbox:\n{report}"
    );
    let out = common::stdout_of(&mut sandbox_command(
        root.path(),
        &[
            "--pykiln",
            "python",
            "-c",
            "import ssl, sqlite3, zlib, lzma, bz2, ctypes, decimal; print(ssl.OPENSSL_VERSION)",
        ],
    ));
    assert!(out.contains("OpenSSL"), "{out}");
}

/// A TLS client and server inside the sandbox, both in the packed interpreter: the
/// client uses `ssl.create_default_context()`, i.e. whatever CA store the runtime finds.
const TLS_ROUND_TRIP: &str = r#"
import socket, ssl, threading
srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
srv_ctx.load_cert_chain("/app/tls/server.pem", "/app/tls/server.key")
lsock = socket.create_server(("127.0.0.1", 0))
def serve():
    conn, _ = lsock.accept()
    try:
        with srv_ctx.wrap_socket(conn, server_side=True) as s:
            s.sendall(s.recv(4)[::-1])
    except OSError:
        pass  # the client refused our certificate
server = threading.Thread(target=serve)
server.start()
ctx = ssl.create_default_context()
try:
    with ctx.wrap_socket(socket.create_connection(lsock.getsockname()), server_hostname="localhost") as c:
        c.sendall(b"ping")
        print("verified", c.recv(4).decode(), c.getpeercert()["subject"][0][0][1])
except ssl.SSLCertVerificationError as e:
    print("rejected", e.verify_message)
server.join(10)
"#;

fn openssl(dir: &Path, args: &[&str]) {
    // tests/prereqs installs openssl.
    common::stdout_of(Command::new("openssl").current_dir(dir).args(args));
}

/// A throw-away CA and a server certificate for localhost signed by it.
fn test_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=pykiln test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        // What Python 3.13's VERIFY_X509_STRICT default asks of a leaf certificate.
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

#[test]
fn tls_trusts_the_targets_ca_store_wherever_its_distro_keeps_it() {
    if bwrap().is_none() {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    test_pki(pki.path());
    let run = |ca_at: Option<&str>, env: &[(&str, &str)]| {
        let root = make_root();
        let tls = root.path().join("app/tls");
        std::fs::create_dir_all(&tls).unwrap();
        for f in ["server.pem", "server.key"] {
            std::fs::copy(pki.path().join(f), tls.join(f)).unwrap();
        }
        if let Some(at) = ca_at {
            let dest = root.path().join(at.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(pki.path().join("ca.pem"), dest).unwrap();
        }
        let mut cmd = sandbox::command(
            root.path(),
            "pykiln-notes",
            env,
            &["--pykiln", "python", "-c", TLS_ROUND_TRIP],
        );
        common::stdout_of(&mut cmd)
    };
    // Fedora/RHEL's location (the build machine is Debian: its OpenSSL looks in
    // /usr/lib/ssl), Alpine's, then a path only the user's SSL_CERT_FILE names.
    for at in ["/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"] {
        let out = run(Some(at), &[]);
        assert!(
            out.starts_with("verified gnip localhost"),
            "CA at {at}: {out}"
        );
    }
    let out = run(
        Some("/opt/corp/ca.pem"),
        &[("SSL_CERT_FILE", "/opt/corp/ca.pem")],
    );
    assert!(out.starts_with("verified"), "SSL_CERT_FILE: {out}");
    // Control: without the CA anywhere the same client refuses the server.
    let out = run(None, &[]);
    assert!(out.starts_with("rejected"), "no CA: {out}");
    let out = run(Some("/opt/corp/ca.pem"), &[]);
    assert!(out.starts_with("rejected"), "CA at an unknown path: {out}");
}
