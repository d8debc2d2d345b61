//! Stop signals (SIGINT, SIGTERM): never lost, one exit rule for the process's whole life.
//!
//! **The rule.** A SIGINT or SIGTERM ends the server, and the process then ends *by that
//! signal* — what the default disposition does and what a venv's Python does for an
//! uncaught `KeyboardInterrupt` — so a shell shows 130 or 143 and systemd counts it as
//! a clean stop (an exit *status* of 143 is a failure to systemd). However the program
//! ends after a stop signal (`KeyboardInterrupt`, `CancelledError`, click's `Aborted!`
//! exit 1, a normal return because stdin ended, an uncaught error), the exit hook
//! ([`at_exit`]) turns its end into death by the first stop signal.
//!
//! **No window.** From `main` on, the runtime blocks both signals ([`defer`]): one that
//! arrives while the interpreter starts stays pending in the kernel. The app program
//! calls [`arm`] once CPython's handlers, the SIGTERM handler and the wakeup fd are in
//! place: a signal already pending then ends the process at once (nothing of the server
//! has run), and from there on every stop signal is seen. Before `main` (the dynamic
//! loader) and after CPython restored the default handlers at finalization, the default
//! disposition applies, which is the same rule. The runtime's own threads keep both
//! signals blocked for good (they inherit the mask), so a signal never interrupts them
//! and always lands where CPython's handler runs on Python's behalf.
//!
//! **Seeing a signal whatever Python does with it.** CPython's C handler writes each
//! caught signal's number to the wakeup fd (`signal.set_wakeup_fd`) whatever Python
//! handler is installed (asyncio's, uvicorn's, click's); a thread of ours reads it. Code
//! that sets its own wakeup fd (asyncio's `add_signal_handler`, trio) would silence
//! that, so `signal.set_wakeup_fd` is replaced by [`set_wakeup_fd`]: CPython keeps
//! writing to ours, and every byte is forwarded to the fd the app set, which sees what
//! it would in a venv (`-1` before it set one). Reading and recording are one step
//! under a lock, and the main thread reads whatever is left before it asks whether a
//! stop happened ([`signal`]) or exits, so a signal whose byte is written is never
//! missed because the thread had not run yet.
//!
//! **Ending a stdio server.** It reads stdin in a worker thread (the MCP SDK's `anyio`
//! reader), and a thread blocked in `read(2)` cannot be cancelled: on Ctrl-C the event
//! loop cancels its tasks and then waits for that thread until the client sends another
//! line. Closing fd 0 does not wake a blocked `read` on Linux. So when stdin is a pipe,
//! socket or terminal, the runtime gives Python one end of a socket pair instead, fed by
//! a thread of ours from the real stdin (a terminal only while the process is in the
//! foreground); on the first stop signal it shuts the socket down, the reader sees end
//! of file — the MCP way to tell a stdio server to stop — and the clean path finishes at
//! once. If it has not ended the process [`GRACE`] after the first stop signal, the
//! process ends by the signal anyway.
//!
//! A child forked without exec (multiprocessing's `fork` and `forkserver` workers)
//! shares both sockets: in it the wakeup fd is pointed at /dev/null (an atfork
//! handler), or a worker's SIGTERM from `Pool.terminate()` would read as the parent's,
//! and none of this acts for it: it has CPython's own behaviour.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, IntoRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;

/// How long the clean path gets after the first stop signal.
pub const GRACE: Duration = Duration::from_secs(5);

/// The first stop signal received, 0 before.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// When the grace period ends (`CLOCK_MONOTONIC` nanoseconds), 0 before a stop.
static DEADLINE: AtomicU64 = AtomicU64::new(0);
/// The process that installed all this (not a forked child).
static OWNER: AtomicI32 = AtomicI32::new(0);
/// CPython's wakeup fd (the write end), and /dev/null for forked children to put in
/// its place.
static WAKEUP_FD: AtomicI32 = AtomicI32::new(-1);
static DEV_NULL: AtomicI32 = AtomicI32::new(-1);
/// The read end of the wakeup socket (non-blocking).
static WATCH_FD: AtomicI32 = AtomicI32::new(-1);
/// Held while the wakeup socket is read and what was read is recorded and forwarded;
/// holds the wakeup fd the app set through [`set_wakeup_fd`] (-1: none).
static READING: Mutex<RawFd> = Mutex::new(-1);
/// Our end of the socket that stands in for stdin.
static STDIN_FEED: OnceLock<UnixStream> = OnceLock::new();
/// CPython's own `signal.set_wakeup_fd`, for [`arm`] and forked children.
static REAL_SET_WAKEUP_FD: OnceLock<Py<PyAny>> = OnceLock::new();

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Block SIGINT and SIGTERM on this (the main) thread, and so on every thread it starts:
/// called first thing in `main`, so that a stop signal during start-up waits for [`arm`]
/// instead of landing where nothing can act on it.
pub fn defer() {
    let set = stop_signals();
    // SAFETY: changes this thread's mask with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Undo [`defer`] for the modes that are plain Python (`--pykiln python`, multiprocessing
/// children, verify): a pending signal takes its default action now, as it would have.
pub fn undefer() {
    let set = stop_signals();
    // SAFETY: changes this thread's mask with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

extern "C" fn after_fork_child() {
    let (wakeup, null) = (
        WAKEUP_FD.load(Ordering::SeqCst),
        DEV_NULL.load(Ordering::SeqCst),
    );
    if wakeup >= 0 && null >= 0 {
        // SAFETY: dup2 is async-signal-safe; both fds are open in the child.
        unsafe { libc::dup2(null, wakeup) };
    }
}

extern "C" fn at_exit() {
    if !is_owner() {
        return;
    }
    if let Some(sig) = signal().or_else(pending_stop) {
        die_by(sig);
    }
}

/// A stop signal that is blocked and pending on this thread (it came before [`arm`]).
fn pending_stop() -> Option<i32> {
    // SAFETY: sigpending fills a local set; sigismember reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        [libc::SIGTERM, libc::SIGINT]
            .into_iter()
            .find(|&sig| libc::sigismember(&set, sig) == 1)
    }
}

fn is_owner() -> bool {
    // SAFETY: getpid cannot fail.
    OWNER.load(Ordering::SeqCst) == unsafe { libc::getpid() }
}

/// End the process by `sig`, as its default disposition does.
fn die_by(sig: i32) -> ! {
    // SAFETY: resets one signal's disposition, unblocks it on this thread and sends it
    // to this thread; with the default action that ends the whole process. `_exit` is
    // the fallback should it somehow return.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}

fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime with a valid clock and out-pointer.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts
    };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Set up the stdin stand-in, the signal watcher and the exit hook. Returns the fd
/// [`arm`] makes CPython's wakeup fd, or None when it could not be set up (then only
/// the Python SIGTERM handler reports stops).
pub fn install() -> Option<RawFd> {
    // SAFETY: getpid cannot fail.
    OWNER.store(unsafe { libc::getpid() }, Ordering::SeqCst);
    if let Err(e) = proxy_stdin() {
        tracing::debug!("stdin stays as it is: {e}");
    }
    let (theirs, ours) = UnixStream::pair().ok()?;
    // CPython requires a non-blocking wakeup fd (it writes from a signal handler); our
    // end is read only after poll(2) says so, by either of two threads.
    theirs.set_nonblocking(true).ok()?;
    ours.set_nonblocking(true).ok()?;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .ok()?;
    // Open for the process's life: the main thread reads it too.
    let ours = ours.into_raw_fd();
    WATCH_FD.store(ours, Ordering::SeqCst);
    std::thread::Builder::new()
        .name("pykiln-signals".into())
        .spawn(move || watch(ours))
        .ok()?;
    let fd = theirs.as_raw_fd();
    WAKEUP_FD.store(fd, Ordering::SeqCst);
    DEV_NULL.store(null.as_raw_fd(), Ordering::SeqCst);
    // SAFETY: registers a handler that only calls dup2 (async-signal-safe), and an exit
    // hook that only acts in this process.
    unsafe {
        if libc::pthread_atfork(None, None, Some(after_fork_child)) != 0 {
            return None;
        }
        libc::atexit(at_exit);
    }
    // Both stay open for the process's life (the wakeup fd is CPython's from `arm`).
    std::mem::forget(theirs);
    std::mem::forget(null);
    Some(fd)
}

/// The watcher thread: wait for bytes on the wakeup socket (or the end of the grace
/// period), then read and record them.
fn watch(fd: RawFd) {
    loop {
        let deadline = DEADLINE.load(Ordering::SeqCst);
        let timeout = if deadline == 0 {
            -1
        } else {
            let left = deadline.saturating_sub(monotonic_ns());
            if left == 0 {
                let sig = SIGNAL.load(Ordering::SeqCst);
                eprintln!(
                    "pykiln: still running {}s after signal {sig}; ending by it",
                    GRACE.as_secs()
                );
                die_by(sig);
            }
            // Rounded up, so a wake-up before the deadline does not spin.
            i32::try_from(left.div_ceil(1_000_000)).unwrap_or(i32::MAX)
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
        if n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            // Only if the write end is gone, which never happens in this process.
            if pfd.revents & libc::POLLIN == 0 {
                return;
            }
        }
        drain();
    }
}

/// Read what is on the wakeup socket, record the stop signals among it and forward it
/// to the app's wakeup fd; one step under [`READING`].
fn drain() {
    let fd = WATCH_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let app = READING.lock().unwrap_or_else(|e| e.into_inner());
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: read into a local buffer from a non-blocking socket we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let got = &buf[..n as usize];
        // The app's wakeup fd first, then the stop (which ends stdin): the app's own
        // handler is queued on its event loop before the end of input that closes the
        // session and cancels the task that would run it (seen lost under load).
        if *app >= 0 {
            // Our own wake-ups (0) are not signals.
            let signals: Vec<u8> = got.iter().copied().filter(|&b| b != 0).collect();
            // SAFETY: a non-blocking write of a local buffer; a full or closed fd loses
            // the bytes, as CPython's own handler would.
            unsafe { libc::write(*app, signals.as_ptr().cast(), signals.len()) };
        }
        for &sig in got {
            let sig = i32::from(sig);
            if sig == libc::SIGINT || sig == libc::SIGTERM {
                stopping(sig);
            }
        }
    }
}

/// Record a stop signal: the first one ends stdin and starts the grace period.
pub fn stopping(signum: i32) {
    if !is_owner() {
        return;
    }
    if SIGNAL
        .compare_exchange(0, signum, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    DEADLINE.store(monotonic_ns() + GRACE.as_nanos() as u64, Ordering::SeqCst);
    if let Some(feed) = STDIN_FEED.get() {
        let _ = feed.shutdown(std::net::Shutdown::Write);
    }
    // Wake the watcher so that it starts counting the grace period (it may be blocked
    // with no time-out); a 0 byte is no signal.
    let wakeup = WAKEUP_FD.load(Ordering::SeqCst);
    if wakeup >= 0 {
        // SAFETY: a one-byte non-blocking write to our own socket.
        unsafe { libc::write(wakeup, [0u8].as_ptr().cast(), 1) };
    }
}

/// The first stop signal received, if any (what is still unread on the wakeup socket
/// counts).
pub fn signal() -> Option<i32> {
    drain();
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Called by the app program once CPython's handlers and the SIGTERM handler are in
/// place: make our socket CPython's wakeup fd, put [`set_wakeup_fd`] in place of
/// `signal.set_wakeup_fd`, end the process by a stop signal that arrived during
/// start-up, and let the next ones in.
pub fn arm(py: Python<'_>) {
    let fd = WAKEUP_FD.load(Ordering::SeqCst);
    if fd >= 0 && is_owner() {
        if let Err(e) = take_wakeup_fd(py, fd) {
            // Then only the SIGTERM handler reports stops; the server still runs.
            tracing::warn!("signal wakeup fd not set: {e}");
        }
    }
    if let Some(sig) = pending_stop() {
        die_by(sig);
    }
    undefer();
}

fn take_wakeup_fd(py: Python<'_>, fd: RawFd) -> PyResult<()> {
    let signal_mod = py.import("signal")?;
    let real = signal_mod.getattr("set_wakeup_fd")?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("warn_on_full_buffer", false)?;
    real.call((fd,), Some(&kwargs))?;
    let _ = REAL_SET_WAKEUP_FD.set(real.unbind());
    let ours = pyo3::wrap_pyfunction!(set_wakeup_fd, py)?;
    signal_mod.setattr("set_wakeup_fd", &ours)?;
    py.import("_signal")?.setattr("set_wakeup_fd", &ours)
}

/// `signal.set_wakeup_fd` as the app sees it: the fd it sets gets every byte CPython's
/// handler writes (through [`drain`]), and it returns what the app set before (-1 at
/// first), while CPython keeps writing to the runtime's. In a forked child, CPython's
/// own.
#[pyfunction]
#[pyo3(signature = (fd, /, *, warn_on_full_buffer = true))]
fn set_wakeup_fd(py: Python<'_>, fd: RawFd, warn_on_full_buffer: bool) -> PyResult<RawFd> {
    let real = REAL_SET_WAKEUP_FD
        .get()
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("signal wakeup not armed"))?;
    if !is_owner() {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("warn_on_full_buffer", warn_on_full_buffer)?;
        let old: RawFd = real.bind(py).call((fd,), Some(&kwargs))?.extract()?;
        return Ok(if old == WAKEUP_FD.load(Ordering::SeqCst) {
            -1
        } else {
            old
        });
    }
    // The checks and messages of CPython's own.
    // SAFETY: gettid/getpid cannot fail; the main thread's id is the process id. The
    // system call, not glibc's wrapper (2.30+): binaries run on glibc 2.17.
    if unsafe { libc::syscall(libc::SYS_gettid) != libc::getpid() as libc::c_long } {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "set_wakeup_fd only works in main thread of the main interpreter",
        ));
    }
    if fd != -1 {
        // SAFETY: fstat/fcntl on an fd number with a local out-pointer.
        let flags = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            libc::fcntl(fd, libc::F_GETFL)
        };
        if flags < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if flags & libc::O_NONBLOCK == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "the fd {fd} must be in non-blocking mode"
            )));
        }
    }
    let mut app = READING.lock().unwrap_or_else(|e| e.into_inner());
    Ok(std::mem::replace(&mut *app, fd))
}

/// Replace fd 0 by a socket fed from the real stdin when a read of it can block.
fn proxy_stdin() -> std::io::Result<()> {
    // SAFETY: fstat/isatty on fd 0 with a valid out-pointer.
    let blocking = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(0, &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let kind = st.st_mode & libc::S_IFMT;
        // A terminal only in the foreground: a background process that reads its
        // terminal is stopped (SIGTTIN), and our reader would read before the
        // application ever does.
        kind == libc::S_IFIFO
            || kind == libc::S_IFSOCK
            || (libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp())
    };
    if !blocking {
        return Ok(());
    }
    let (python_end, feed) = UnixStream::pair()?;
    // SAFETY: fcntl/dup2 on fds we own or on 0; results are checked.
    let real = unsafe {
        let fd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let real = OwnedFd::from_raw_fd(fd);
        // dup2 leaves fd 0 without FD_CLOEXEC: children still inherit stdin.
        if libc::dup2(python_end.as_raw_fd(), 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        real
    };
    drop(python_end);
    let mut writer = feed.try_clone()?;
    let _ = STDIN_FEED.set(feed);
    let mut real = std::fs::File::from(real);
    std::thread::Builder::new()
        .name("pykiln-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match real.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if writer.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Write);
        })?;
    Ok(())
}
