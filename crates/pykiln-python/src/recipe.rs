//! The build of pykiln's CPython: the C libraries, then CPython with every standard
//! library extension module built into `libpython` (binaries load none of them from a
//! native cache at start), except `_sqlite3`, which stays a shared module so that
//! binaries can give it the runtime's own SQLite.
//!
//! Everything is compiled by `zig cc` for glibc 2.17 ([`crate::toolchain`]); only what
//! is built here is linked (zig does not search the host's library directories), so
//! nothing of the build machine ends up in a binary. Each step logs to its own file; a
//! failing step is named with the end of its log.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::sources::{self, Pin};
use crate::toolchain::{self, GLIBC, Target, Toolchain, Wrappers};
use crate::{Installation, Portable};

/// Changes whenever the recipe changes what it builds: part of the installation key.
const RECIPE: &str = "pykiln-python recipe 1";

/// The same for what only a cross build does (in the key of other CPUs' builds only).
const CROSS_RECIPE: &str = "pykiln-python cross recipe 1";

/// The same for the profile-guided build (in the key of such builds only).
const PGO_RECIPE: &str = "pykiln-python pgo recipe 1";

/// The training run of a profile-guided build, as CPython's own `make profile-opt`
/// runs it: the test suite's `--pgo` selection (about 45 tests of the core, codecs,
/// json, re, pickle, datetime, sqlite3, …), in parallel workers.
const PGO_TASK: &[&str] = &["-m", "test", "--pgo", "--timeout=1200"];

/// Modules not built: they need libraries pykiln does not build (terminal UI, Tk, dbm,
/// NIS, libcrypt, libuuid: `uuid` falls back to its pure-Python code) or exist only
/// for CPython's own tests.
const NOT_BUILT: &[&str] = &[
    "_curses",
    "_curses_panel",
    "readline",
    "_tkinter",
    "_dbm",
    "_gdbm",
    "nis",
    "_crypt",
    "_uuid",
    "ossaudiodev",
    "spwd",
    "xxlimited",
    "xxlimited_35",
];

/// What to build.
#[derive(Debug, Clone)]
pub struct Request {
    /// `3.11` or `3.11.2`.
    pub version: String,
    /// For which target.
    pub target: Target,
    /// Directories holding the source archives.
    pub sources: Vec<PathBuf>,
    /// pykiln's cache directory.
    pub cache: PathBuf,
    /// Parallel compile jobs.
    pub jobs: usize,
    /// Build again even if this exact installation exists.
    pub force: bool,
    /// Download the archives not found in [`Self::sources`] (into the cache).
    pub download: bool,
    /// Profile-guided optimisation, when LLVM's profile tools are there and the target
    /// is this machine (the training run needs to run the interpreter).
    pub pgo: bool,
}

/// An installation, and whether this call built it.
#[derive(Debug)]
pub struct Outcome {
    /// The installation.
    pub installation: Installation,
    /// How long the build took; None when it was already installed.
    pub built_in: Option<Duration>,
}

/// The key of an installation: the recipe, target, toolchain and every source's hash.
pub(crate) fn key(python: &Pin, target: &Target, pgo: bool) -> String {
    let mut h = Sha256::new();
    for part in [
        RECIPE,
        target.rust,
        toolchain::ZIG,
        toolchain::CARGO_ZIGBUILD,
        GLIBC,
        sources::LIBSQLITE3_SYS,
        python.sha256,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for lib in sources::LIBRARIES {
        h.update(lib.sha256.as_bytes());
    }
    if !target.is_host() {
        h.update(CROSS_RECIPE.as_bytes());
    }
    if pgo {
        h.update(PGO_RECIPE.as_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Build and install the interpreter `req` asks for, or return the one installed.
pub fn install(req: &Request, say: &mut dyn FnMut(&str)) -> anyhow::Result<Outcome> {
    let pin = sources::cpython(&req.version).with_context(|| {
        let known: Vec<&str> = sources::CPYTHON.iter().map(|p| p.version).collect();
        format!(
            "pykiln cannot build Python {} (it can build: {})",
            req.version,
            known.join(", ")
        )
    })?;
    // The profile tools decide the key, so they are looked for first (where LLVM
    // `toolchain::ZIG_LLVM` installs them; the build checks zig's clang is that one).
    let pgo = match (req.pgo, req.target.is_host()) {
        (false, _) => None,
        (true, false) => {
            say(
                "no profile-guided optimisation for another CPU (its training run cannot run here)",
            );
            None
        }
        (true, true) => match toolchain::profile_tools(toolchain::ZIG_LLVM, req.target.arch()) {
            Ok(tools) => Some(tools),
            Err(why) => {
                say(&format!(
                    "building without profile-guided optimisation: {why}"
                ));
                None
            }
        },
    };
    let key = key(pin, &req.target, pgo.is_some());
    let root = crate::root(&req.cache);
    let name = format!("cpython-{}-{}.{GLIBC}-{key}", pin.version, req.target.zig);
    let prefix = root.join(&name);
    if !req.force {
        if let Some(installation) = crate::installed_at(&prefix) {
            return Ok(Outcome {
                installation,
                built_in: None,
            });
        }
    }
    // One build per key at a time: a second `install` of the same interpreter waits
    // for the first and then takes its result instead of building it again and
    // replacing the directory the first one just installed.
    let lock = InstallLock::take(&root, &key, say)?;
    if lock.waited || !req.force {
        if let Some(installation) = crate::installed_at(&prefix) {
            return Ok(Outcome {
                installation,
                built_in: None,
            });
        }
    }
    let mut wanted: Vec<&Pin> = vec![pin];
    wanted.extend(sources::LIBRARIES);
    let downloads = root.join("sources");
    let mut dirs = req.sources.clone();
    dirs.push(downloads.clone());
    let mut archives = Vec::new();
    let mut missing = Vec::new();
    for pin in &wanted {
        match sources::find(pin, &dirs)? {
            Some(path) => archives.push(path),
            None => missing.push(*pin),
        }
    }
    if !missing.is_empty() {
        if req.download {
            sources::download(&missing, &downloads, say)?;
        }
        // Every archive now, or all the missing ones named.
        archives = sources::locate(&wanted, &dirs)?;
    }
    let sqlite = sources::sqlite_source()?;
    let started = Instant::now();
    // A cross build runs the same CPython of this machine during its build (to compile
    // the standard library and run ensurepip): pykiln's own, built first if needed.
    let build_python = if req.target.is_host() {
        None
    } else {
        let host = Request {
            target: toolchain::host()?,
            ..req.clone()
        };
        say(&format!(
            "a build for {} needs the same Python for this machine first",
            req.target.rust
        ));
        Some(install(&host, say)?.installation.python())
    };
    let tools = Toolchain::ensure(&req.cache, say)?;
    let wrappers = tools.wrappers(&req.target)?;
    if pgo.is_some() {
        let major = tools.llvm_major(&wrappers)?;
        if major != toolchain::ZIG_LLVM {
            bail!(
                "zig's clang is LLVM {major}, not {}: its profiles would not fit the profile tools",
                toolchain::ZIG_LLVM
            );
        }
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    sweep_abandoned_builds(&root);
    let work = root.join(format!(".build-{key}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let build = Build {
        work: work.clone(),
        deps: work.join("deps"),
        logs: work.join("logs"),
        cc: wrappers,
        jobs: req.jobs.max(1).to_string(),
        target: req.target,
        build_python,
        pgo,
        step: 0,
    };
    let record = Portable {
        version: pin.version.to_string(),
        target: req.target.rust.to_string(),
        glibc: GLIBC.to_string(),
        toolchain: tools.dir.clone(),
        key: key.clone(),
        optimizations: build.pgo.iter().map(|_| "pgo".to_string()).collect(),
        sources: wanted
            .iter()
            .map(|p| (format!("{} {}", p.name, p.version), p.sha256.to_string()))
            .collect(),
    };
    if let Err(e) = build.run(say, &archives, pin, &sqlite, &prefix, &record) {
        return Err(e.context(format!(
            "building Python {} failed; the build directory {} is kept for inspection",
            pin.version,
            work.display()
        )));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(Outcome {
        installation: Installation {
            dir: prefix,
            portable: record,
        },
        built_in: Some(started.elapsed()),
    })
}

/// An exclusive `flock` on `<root>/.lock-<key>`, held while that installation is built
/// (the kernel drops it if the process dies).
pub(crate) struct InstallLock {
    _file: std::fs::File,
    /// Whether another process held it first.
    waited: bool,
}

impl InstallLock {
    pub(crate) fn take(root: &Path, key: &str, say: &mut dyn FnMut(&str)) -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd as _;
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let path = root.join(format!(".lock-{key}"));
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let flock = |op| loop {
            // SAFETY: flock(2) on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let waited = flock(libc::LOCK_EX | libc::LOCK_NB).is_err();
        if waited {
            say(&format!(
                "another pykiln is building this interpreter (lock {}); waiting for it",
                path.display()
            ));
            flock(libc::LOCK_EX).with_context(|| format!("locking {}", path.display()))?;
        }
        Ok(Self {
            _file: file,
            waited,
        })
    }
}

/// Remove the build directories of builds whose process is gone (interrupted), which
/// failed builds keep for inspection only while nothing newer runs.
fn sweep_abandoned_builds(root: &Path) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".build-")
            .and_then(|r| r.rsplit('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

struct Build {
    work: PathBuf,
    deps: PathBuf,
    logs: PathBuf,
    cc: Wrappers,
    jobs: String,
    target: Target,
    /// This machine's interpreter of the same version, for a cross build.
    build_python: Option<PathBuf>,
    /// Profile-guided optimisation with these tools.
    pgo: Option<toolchain::ProfileTools>,
    step: usize,
}

impl Build {
    #[allow(clippy::too_many_arguments)]
    fn run(
        mut self,
        say: &mut dyn FnMut(&str),
        archives: &[PathBuf],
        pin: &Pin,
        sqlite: &Path,
        prefix: &Path,
        record: &Portable,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.logs)
            .with_context(|| format!("creating {}", self.logs.display()))?;
        // In the order `install` asked for them: CPython, then sources::LIBRARIES.
        let [python_src, zlib, bzip2, xz, libffi, openssl] =
            <[&PathBuf; 6]>::try_from(archives.iter().collect::<Vec<_>>())
                .map_err(|_| anyhow::anyhow!("expected six source archives"))?;
        let deps = self.deps.clone();
        let lib = deps.join("lib");
        let include = deps.join("include");
        std::fs::create_dir_all(&lib)?;
        std::fs::create_dir_all(&include)?;
        let prefix_arg = format!("--prefix={}", deps.display());
        let cflags = "-O2 -fPIC";
        // autoconf's cross-compilation switches (zig's triple is one config.sub knows).
        let cross: Vec<String> = match self.build_python {
            Some(_) => vec![
                format!("--host={}", self.target.zig),
                format!("--build={}-pc-linux-gnu", std::env::consts::ARCH),
            ],
            None => Vec::new(),
        };
        let cross: Vec<&str> = cross.iter().map(String::as_str).collect();

        say("building zlib");
        self.configure_make_install(zlib, "zlib", &["--static", &prefix_arg], cflags)?;

        say("building bzip2");
        let dir = self.extract(bzip2, "bzip2")?;
        let (cc, ar, ranlib) = (
            format!("CC={}", self.cc.cc.display()),
            format!("AR={}", self.cc.ar.display()),
            format!("RANLIB={}", self.cc.ranlib.display()),
        );
        let bz_flags = format!("CFLAGS={cflags} -D_FILE_OFFSET_BITS=64");
        self.make(
            &dir,
            "bzip2-make",
            &["libbz2.a", &cc, &ar, &ranlib, &bz_flags],
        )?;
        copy(&dir.join("libbz2.a"), &lib.join("libbz2.a"))?;
        copy(&dir.join("bzlib.h"), &include.join("bzlib.h"))?;

        say("building xz");
        self.configure_make_install(
            xz,
            "xz",
            &[
                &cross[..],
                &[
                    &prefix_arg,
                    "--disable-shared",
                    "--enable-static",
                    "--disable-xz",
                    "--disable-xzdec",
                    "--disable-lzmadec",
                    "--disable-lzmainfo",
                    "--disable-scripts",
                    "--disable-doc",
                    "--disable-nls",
                ],
            ]
            .concat(),
            cflags,
        )?;

        say("building libffi");
        // libffi 3.4.4 calls a function it declares later; clang 16+ makes that an error.
        let ffi_flags = format!("{cflags} -Wno-error=implicit-function-declaration");
        self.configure_make_install(
            libffi,
            "libffi",
            &[
                &cross[..],
                &[
                    &prefix_arg,
                    "--disable-shared",
                    "--enable-static",
                    "--disable-docs",
                    "--disable-multi-os-directory",
                ],
            ]
            .concat(),
            &ffi_flags,
        )?;

        say("building OpenSSL");
        let dir = self.extract(openssl, "openssl")?;
        self.sh(
            &dir,
            "openssl-configure",
            &[
                "./Configure",
                self.target.openssl,
                "no-shared",
                "no-tests",
                "no-engine",
                "no-module",
                "no-legacy",
                &prefix_arg,
                "--libdir=lib",
                // Where distributions keep CA certificates; the runtime also looks at
                // the other usual places (pykiln's openssl_default_paths).
                "--openssldir=/etc/ssl",
                "-fPIC",
                "-O2",
            ],
            "",
        )?;
        self.make(&dir, "openssl-make", &["build_libs"])?;
        self.make(&dir, "openssl-install", &["install_dev"])?;

        say("building SQLite (the runtime's amalgamation, for the interpreter's own use)");
        let so = lib.join("libsqlite3.so.0");
        let mut cmd = Command::new(&self.cc.cc);
        cmd.args([
            "-O2",
            "-fPIC",
            "-shared",
            "-DSQLITE_ENABLE_MATH_FUNCTIONS",
            "-DSQLITE_THREADSAFE=1",
            "-DSQLITE_ENABLE_FTS5",
            "-DSQLITE_ENABLE_RTREE",
            "-Wl,-soname,libsqlite3.so.0",
            "-o",
        ])
        .arg(&so)
        .arg(sqlite.join("sqlite3.c"))
        .args(["-lm", "-lpthread"]);
        self.exec(&mut cmd, "sqlite")?;
        std::os::unix::fs::symlink("libsqlite3.so.0", lib.join("libsqlite3.so"))
            .context("linking libsqlite3.so")?;
        for h in ["sqlite3.h", "sqlite3ext.h"] {
            copy(&sqlite.join(h), &include.join(h))?;
        }

        say(&format!("building CPython {}", pin.version));
        let dir = self.extract(python_src, "cpython")?;
        let inc = format!("-I{}", include.display());
        let libdir = format!("-L{}", lib.display());
        let mut configure = Command::new("./configure");
        configure
            .current_dir(&dir)
            .arg(format!("--prefix={}", prefix.display()))
            .args([
                "--disable-shared",
                "--with-ensurepip=install",
                "--without-readline",
                "--disable-test-modules",
            ])
            .arg(format!("--with-openssl={}", deps.display()))
            .env("CC", &self.cc.cc)
            .env("CXX", &self.cc.cxx)
            .env("AR", &self.cc.ar)
            .env("RANLIB", &self.cc.ranlib)
            .env("CFLAGS", "-fPIC")
            .env("CPPFLAGS", &inc)
            .env("LDFLAGS", &libdir)
            // Only what is built here: never the host's .pc files.
            .env("PKG_CONFIG_LIBDIR", lib.join("pkgconfig"))
            .env("PKG_CONFIG_PATH", "")
            .env("LIBFFI_CFLAGS", &inc)
            .env("LIBFFI_LIBS", format!("{libdir} -lffi"))
            .env("LIBSQLITE3_CFLAGS", &inc)
            // _sqlite3 finds libsqlite3.so.0 in <prefix>/lib from lib-dynload.
            .env(
                "LIBSQLITE3_LIBS",
                format!("{libdir} -lsqlite3 -Wl,-rpath,\\$$ORIGIN/../.."),
            )
            // Declared by glibc's headers (zig's are the newest) but absent from 2.17;
            // configure only compiles its test, so it must be told.
            .env("ac_cv_func_memfd_create", "no");
        if let Some(build_python) = &self.build_python {
            // configure cannot look at the target's /dev in a cross build: the answers
            // for Linux.
            let site = self.work.join("config.site");
            std::fs::write(
                &site,
                "ac_cv_file__dev_ptmx=yes\nac_cv_file__dev_ptc=no\nac_cv_buggy_getaddrinfo=no\n",
            )
            .with_context(|| format!("writing {}", site.display()))?;
            configure
                .args(&cross)
                .arg(format!("--with-build-python={}", build_python.display()))
                .env("CONFIG_SITE", &site)
                // configure insists on a readelf named by path in a cross build (GNU
                // readelf reads every architecture); it is only used by checks.
                .env(
                    "READELF",
                    pykiln_pyconfig::foreign::find_on_path("readelf".as_ref())
                        .unwrap_or_else(|| "/bin/true".into()),
                );
        }
        self.exec(&mut configure, "cpython-configure")?;
        write_setup_local(&dir, &inc, &libdir)?;
        let optimized = match self.pgo.clone() {
            None => String::new(),
            Some(tools) => format!("CFLAGS_NODIST={}", self.profile(&dir, &tools, say)?),
        };
        self.make(&dir, "cpython-make", &[&optimized])?;
        let stage = self.work.join("stage");
        self.make(
            &dir,
            "cpython-install",
            &[
                "install",
                &optimized,
                &format!("DESTDIR={}", stage.display()),
            ],
        )?;

        say("finishing the installation");
        let staged = stage.join(prefix.strip_prefix("/").unwrap_or(prefix));
        let minor: Vec<&str> = pin.version.split('.').take(2).collect();
        let minor = minor.join(".");
        let config = std::fs::read_dir(staged.join("lib").join(format!("python{minor}")))
            .with_context(|| format!("reading {}", staged.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("config-{minor}")))
            })
            .context("the installation has no config directory")?;
        let libpython = config.join(format!("libpython{minor}.a"));
        // Bundled libraries (libmpdec, expat, HACL*'s SHA-2 since 3.12) are built as
        // archives of their own under Modules/ that CPython's link line names by path;
        // the embedding link names libraries by -l only, so their objects join libpython.
        let merge = self.work.join("merge");
        let mut objects: Vec<PathBuf> = Vec::new();
        for (i, inner) in archives_under(&dir.join("Modules")).iter().enumerate() {
            // One directory each: members of different archives may share a name.
            let into = merge.join(i.to_string());
            std::fs::create_dir_all(&into)?;
            let mut x = Command::new(&self.cc.ar);
            x.current_dir(&into).arg("x").arg(inner);
            self.exec(&mut x, "merge-extract")?;
            let mut these: Vec<PathBuf> = std::fs::read_dir(&into)?
                .flatten()
                .map(|e| e.path())
                .collect();
            these.sort();
            objects.extend(these);
        }
        let mut q = Command::new(&self.cc.ar);
        q.arg("q").arg(&libpython).args(&objects);
        self.exec(&mut q, "merge-add")?;
        let mut r = Command::new(&self.cc.ranlib);
        r.arg(&libpython);
        self.exec(&mut r, "merge-index")?;
        // The static libraries libpython's built-in modules need, where the embedding
        // link looks first (LIBDIR), and the SQLite `_sqlite3` loads.
        for entry in std::fs::read_dir(&lib)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let target = staged.join("lib").join(&name);
            if name.ends_with(".a") {
                copy(&entry.path(), &target)?;
            } else if name.starts_with("libsqlite3.so") {
                let _ = std::fs::remove_file(&target);
                if entry.file_type()?.is_symlink() {
                    std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
                } else {
                    copy(&entry.path(), &target)?;
                }
            }
        }
        if let Some(build_python) = self.build_python.clone() {
            self.install_pip(&build_python, &staged, &minor)?;
        }
        check(&staged, &minor, say)?;
        let json = serde_json::to_vec_pretty(record)?;
        std::fs::write(staged.join(crate::PORTABLE_FILE), json)?;
        if prefix.exists() {
            std::fs::remove_dir_all(prefix)
                .with_context(|| format!("removing the old {}", prefix.display()))?;
        }
        std::fs::rename(&staged, prefix)
            .with_context(|| format!("moving {} to {}", staged.display(), prefix.display()))?;
        Ok(())
    }

    /// pip (and setuptools) from the wheels the standard library bundles, into the
    /// staged site-packages. A cross build's `make install` runs ensurepip on the build
    /// machine's interpreter, which installs them under that interpreter's prefix; pip
    /// is pure Python, so the build machine's pip installs it for the target.
    fn install_pip(
        &mut self,
        build_python: &Path,
        staged: &Path,
        minor: &str,
    ) -> anyhow::Result<()> {
        let lib = staged.join("lib").join(format!("python{minor}"));
        let mut cmd = Command::new(build_python);
        cmd.args([
            "-I",
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-index",
            "--no-compile",
            "--find-links",
        ])
        .arg(lib.join("ensurepip").join("_bundled"))
        .arg("--target")
        .arg(lib.join("site-packages"))
        .args(["pip", "setuptools"]);
        self.exec(&mut cmd, "cross-pip")
    }

    /// The profile of CPython configured in `dir`: built instrumented (LLVM's profile
    /// runtime linked in, which zig does not add), [`PGO_TASK`] run, its raw profiles
    /// merged, the objects removed; returns the compile flags that use the profile.
    fn profile(
        &mut self,
        dir: &Path,
        tools: &toolchain::ProfileTools,
        say: &mut dyn FnMut(&str),
    ) -> anyhow::Result<String> {
        say("profile-guided optimisation: building CPython instrumented");
        let instrument = "-fprofile-instr-generate";
        self.make(
            dir,
            "cpython-make-instrumented",
            &[
                &format!("CFLAGS_NODIST={instrument}"),
                &format!(
                    "LDFLAGS_NODIST={instrument} -Wl,-u,__llvm_profile_runtime {}",
                    tools.runtime.display()
                ),
            ],
        )?;
        say(&format!(
            "profile-guided optimisation: the training run (python {})",
            PGO_TASK.join(" ")
        ));
        let raw = self.work.join("pgo");
        let _ = std::fs::remove_dir_all(&raw);
        std::fs::create_dir_all(&raw).with_context(|| format!("creating {}", raw.display()))?;
        let mut task = Command::new(dir.join("python"));
        task.current_dir(dir)
            .args(PGO_TASK)
            .arg(format!("-j{}", self.jobs))
            .env("LLVM_PROFILE_FILE", raw.join("python-%p-%m.profraw"));
        // Like CPython's profile-opt, a failing test does not fail the build: what ran
        // is the profile.
        let _ = self.exec(&mut task, "cpython-pgo-training");
        let profiles: Vec<PathBuf> = std::fs::read_dir(&raw)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "profraw"))
            .collect();
        if profiles.is_empty() {
            bail!(
                "the training run wrote no profile into {} (see its log in {})",
                raw.display(),
                self.logs.display()
            );
        }
        let merged = self.work.join("python.profdata");
        let mut merge = Command::new(&tools.profdata);
        merge.arg("merge").arg("-o").arg(&merged).args(&profiles);
        self.exec(&mut merge, "cpython-pgo-merge")?;
        self.make(dir, "cpython-clean-instrumented", &["clean"])?;
        say("profile-guided optimisation: building CPython with the profile");
        Ok(format!(
            "-fprofile-instr-use={} -Wno-profile-instr-unprofiled -Wno-profile-instr-out-of-date",
            merged.display()
        ))
    }

    /// Unpack `archive`, then `./configure ARGS`, `make`, `make install` in it.
    fn configure_make_install(
        &mut self,
        archive: &Path,
        name: &str,
        args: &[&str],
        cflags: &str,
    ) -> anyhow::Result<()> {
        let dir = self.extract(archive, name)?;
        let mut configure = vec!["./configure"];
        configure.extend_from_slice(args);
        self.sh(&dir, &format!("{name}-configure"), &configure, cflags)?;
        self.make(&dir, &format!("{name}-make"), &[])?;
        self.make(&dir, &format!("{name}-install"), &["install"])
    }

    /// Unpack `archive` into its own directory; the directory it holds.
    fn extract(&mut self, archive: &Path, name: &str) -> anyhow::Result<PathBuf> {
        let into = self.work.join("src").join(name);
        std::fs::create_dir_all(&into)?;
        let mut tar = Command::new("tar");
        tar.arg("xf").arg(archive).arg("-C").arg(&into);
        self.exec(&mut tar, &format!("{name}-extract"))?;
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&into)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        match (dirs.pop(), dirs.is_empty()) {
            (Some(d), true) => Ok(d),
            _ => bail!(
                "{} does not hold exactly one top directory",
                archive.display()
            ),
        }
    }

    /// A configure-style step with the toolchain in the environment.
    fn sh(&mut self, dir: &Path, step: &str, args: &[&str], cflags: &str) -> anyhow::Result<()> {
        let mut cmd = Command::new(args[0]);
        cmd.current_dir(dir)
            .args(&args[1..])
            .env("CC", &self.cc.cc)
            .env("AR", &self.cc.ar)
            .env("RANLIB", &self.cc.ranlib);
        if !cflags.is_empty() {
            cmd.env("CFLAGS", cflags);
        }
        self.exec(&mut cmd, step)
    }

    fn make(&mut self, dir: &Path, step: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new("make");
        cmd.current_dir(dir)
            .arg(format!("-j{}", self.jobs))
            .args(args.iter().filter(|a| !a.is_empty()))
            .env("CC", &self.cc.cc)
            .env("AR", &self.cc.ar)
            .env("RANLIB", &self.cc.ranlib);
        self.exec(&mut cmd, step)
    }

    /// Run one step, its output to `logs/NN-step.log`.
    fn exec(&mut self, cmd: &mut Command, step: &str) -> anyhow::Result<()> {
        self.step += 1;
        let log = self.logs.join(format!("{:02}-{step}.log", self.step));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // Nothing the build machine sets for its own compilers leaks in.
        for var in [
            "CFLAGS",
            "CPPFLAGS",
            "LDFLAGS",
            "CXXFLAGS",
            "LIBS",
            "MAKEFLAGS",
        ] {
            if cmd.get_envs().all(|(k, _)| k != var) {
                cmd.env_remove(var);
            }
        }
        let status = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .status()
            .with_context(|| format!("step {step}: cannot start {:?}", cmd.get_program()))?;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "step {step} failed ({status}); the end of {}:\n  {}",
                log.display(),
                tail.join("\n  ")
            );
        }
        Ok(())
    }
}

/// `Modules/Setup.local`: every module configure found, built into libpython, except
/// `_sqlite3` (shared, see the module doc) and [`NOT_BUILT`]. `_ctypes` is listed by
/// hand: CPython 3.11 builds it with setup.py, which adds the host's include
/// directories.
fn write_setup_local(dir: &Path, inc: &str, libdir: &str) -> anyhow::Result<()> {
    let stdlib = dir.join("Modules").join("Setup.stdlib");
    let text = std::fs::read_to_string(&stdlib)
        .with_context(|| format!("reading {}", stdlib.display()))?;
    let mut builtin = Vec::new();
    let mut shared = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('*') {
            continue;
        }
        let name = line.split_whitespace().next().unwrap_or_default();
        if name.starts_with("_test") || name.starts_with("xx") || NOT_BUILT.contains(&name) {
            continue;
        }
        if name == "_sqlite3" {
            shared.push(line.to_string());
        } else {
            builtin.push(line.to_string());
        }
    }
    // makesetup reads a line with `=` as a variable: defines carry no value. From 3.12
    // on, Setup.stdlib has its own line.
    if !builtin.iter().any(|l| l.starts_with("_ctypes ")) {
        builtin.push(format!(
        "_ctypes _ctypes/_ctypes.c _ctypes/callbacks.c _ctypes/callproc.c _ctypes/stgdict.c _ctypes/cfield.c -DHAVE_FFI_PREP_CIF_VAR -DHAVE_FFI_PREP_CLOSURE_LOC -DHAVE_FFI_CLOSURE_ALLOC {inc} {libdir} -lffi"
        ));
    }
    let mut out = String::from("*static*\n");
    out.push_str(&builtin.join("\n"));
    out.push_str("\n*shared*\n");
    out.push_str(&shared.join("\n"));
    out.push_str("\n*disabled*\n");
    out.push_str(&NOT_BUILT.join("\n"));
    out.push('\n');
    let path = dir.join("Modules").join("Setup.local");
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))
}

/// The installed interpreter imports what binaries need, and nothing it holds needs a
/// glibc newer than [`GLIBC`].
fn check(staged: &Path, minor: &str, say: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
    let python = staged.join("bin").join(format!("python{minor}"));
    match pykiln_pyconfig::foreign::command(&python) {
        Ok(cmd) => import_check(cmd, &python)?,
        Err(e) => say(&format!("import check skipped: {e}")),
    }
    let floor = pykiln_glibc::GlibcVersion::from_tag(&format!("GLIBC_{GLIBC}"))
        .context("the glibc floor is a version")?;
    let mut files = vec![python];
    files.extend(files_under(&staged.join("lib")).into_iter().filter(|p| {
        p.extension().is_some_and(|x| x == "so")
            || p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".so."))
    }));
    for f in files {
        if std::fs::symlink_metadata(&f).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        if let Ok(Some(v)) = pykiln_glibc::required(&bytes) {
            if v > floor {
                bail!("{} needs glibc {v}, above the floor {GLIBC}", f.display());
            }
        }
    }
    Ok(())
}

/// The interpreter starts and imports what binaries need (ssl's certificates, SQLite,
/// libffi).
fn import_check(mut cmd: Command, python: &Path) -> anyhow::Result<()> {
    let out = cmd
        .args([
            "-I",
            "-c",
            "import ssl, sqlite3, ctypes, zlib, bz2, lzma, decimal, json, hashlib, pyexpat, _asyncio; \
             ssl.create_default_context(); sqlite3.connect(':memory:').execute('select 1'); \
             ctypes.CDLL(None)",
        ])
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "the built interpreter {} fails its import check:\n{}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Every `*.a` under `dir`, sorted.
fn archives_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "a"))
        .collect();
    out.sort();
    out
}

/// Every file under `dir`, at any depth (symbolic links included, not followed).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_local_builds_modules_in_but_sqlite_and_the_unbuilt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Modules")).unwrap();
        std::fs::write(
            dir.path().join("Modules/Setup.stdlib"),
            "# comment\n*shared*\n_json _json.c\n_sqlite3 _sqlite/module.c\n_testcapi _testcapimodule.c\nspwd spwdmodule.c\n_ssl _ssl.c\n",
        )
        .unwrap();
        write_setup_local(dir.path(), "-I/d/include", "-L/d/lib").unwrap();
        let text = std::fs::read_to_string(dir.path().join("Modules/Setup.local")).unwrap();
        let (builtin, rest) = text.split_once("*shared*").unwrap();
        assert!(builtin.contains("_json _json.c") && builtin.contains("_ssl _ssl.c"));
        assert!(
            builtin.contains("_ctypes ") && !builtin.contains('='),
            "{builtin}"
        );
        let (shared, disabled) = rest.split_once("*disabled*").unwrap();
        assert_eq!(shared.trim(), "_sqlite3 _sqlite/module.c");
        assert!(!text.contains("_testcapi"));
        assert!(disabled.lines().any(|l| l == "spwd"));
    }

    #[test]
    fn setup_local_keeps_the_ctypes_line_of_312_and_later() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Modules")).unwrap();
        std::fs::write(
            dir.path().join("Modules/Setup.stdlib"),
            "*static*\n_ctypes _ctypes/_ctypes.c _ctypes/callbacks.c -DUSING_MALLOC_CLOSURE_DOT_C\n",
        )
        .unwrap();
        write_setup_local(dir.path(), "-I/d/include", "-L/d/lib").unwrap();
        let text = std::fs::read_to_string(dir.path().join("Modules/Setup.local")).unwrap();
        let ctypes: Vec<&str> = text.lines().filter(|l| l.starts_with("_ctypes ")).collect();
        assert_eq!(ctypes.len(), 1, "{text}");
        assert!(ctypes[0].contains("USING_MALLOC_CLOSURE_DOT_C"), "{text}");
    }

    #[test]
    fn bundled_archives_are_found_at_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        for p in [
            "_decimal/libmpdec/libmpdec.a",
            "expat/libexpat.a",
            "_hacl/libHacl_Hash_SHA2.a",
        ] {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"!<arch>\n").unwrap();
        }
        std::fs::write(dir.path().join("config.c"), b"").unwrap();
        let found: Vec<String> = archives_under(dir.path())
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            found,
            [
                "_decimal/libmpdec/libmpdec.a",
                "_hacl/libHacl_Hash_SHA2.a",
                "expat/libexpat.a"
            ]
        );
    }

    #[test]
    fn a_second_install_of_the_same_key_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstallLock::take(dir.path(), "k", &mut |_| {}).unwrap();
        assert!(!first.waited);
        let (tx, rx) = std::sync::mpsc::channel();
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let mut said = Vec::new();
            let second = InstallLock::take(&root, "k", &mut |s| said.push(s.to_string()));
            let _ = tx.send((second.map(|l| l.waited).ok(), said));
        });
        // Another key is not held up.
        assert!(
            !InstallLock::take(dir.path(), "other", &mut |_| {})
                .unwrap()
                .waited
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the second lock of the same key was taken while the first was held"
        );
        drop(first);
        let (waited, said) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the second install did not get the lock within 10 s of the release");
        assert_eq!(waited, Some(true));
        assert!(said[0].contains("waiting"), "{said:?}");
    }

    #[test]
    fn the_key_follows_every_source_and_the_optimisation() {
        let t = toolchain::TARGETS[0];
        let a = key(&sources::CPYTHON[0], &t, false);
        let mut other = sources::CPYTHON[0];
        other.sha256 = "00";
        assert_ne!(a, key(&other, &t, false));
        assert_eq!(a, key(&sources::CPYTHON[0], &t, false));
        assert_ne!(a, key(&sources::CPYTHON[0], &t, true));
    }
}
