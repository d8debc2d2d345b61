//! Prompt, clean shutdown of an application on SIGINT and SIGTERM.
//!
//! A stdio server reads its stdin in a worker thread (the MCP SDK's `anyio` reader),
//! and a thread blocked in `read(2)` cannot be cancelled: on Ctrl-C the event loop
//! cancels its tasks and then waits for that thread until the client happens to send
//! another line. Closing fd 0 does not wake a blocked `read` on Linux. So when stdin is
//! a pipe, socket or terminal, the runtime gives Python one end of a socket pair
//! instead, fed by a thread of ours from the real stdin (a terminal only while the
//! process is in the foreground); on the first stop signal it shuts the socket down,
//! the reader sees end of file — the MCP way to tell a stdio server to stop — and the
//! clean path finishes at once.
//!
//! CPython's C signal handler writes each caught signal's number to the wakeup fd
//! (`signal.set_wakeup_fd`), whatever Python handler (asyncio's, uvicorn's, click's)
//! is installed; a thread of ours reads it, which is how a SIGINT handled entirely by
//! an event loop still reaches us. If the clean path has not ended the process
//! [`GRACE`] after the first stop signal, it exits with `128 + signal`.
//!
//! A child forked without exec (multiprocessing's `fork` and `forkserver` workers)
//! shares both sockets: in it the wakeup fd is pointed at /dev/null (an atfork
//! handler), or a worker's SIGTERM from `Pool.terminate()` would read as the parent's,
//! and [`stopping`] does nothing, or the worker would end the parent's stdin.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// How long the clean path gets after the first stop signal.
pub const GRACE: Duration = Duration::from_secs(5);

/// The first stop signal received, 0 before.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The process that installed all this (not a forked child).
static OWNER: AtomicI32 = AtomicI32::new(0);
/// The wakeup fd, and /dev/null for forked children to put in its place.
static WAKEUP_FD: AtomicI32 = AtomicI32::new(-1);
static DEV_NULL: AtomicI32 = AtomicI32::new(-1);
/// Our end of the socket that stands in for stdin.
static STDIN_FEED: OnceLock<UnixStream> = OnceLock::new();

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

/// Set up the stdin stand-in and the signal watcher. Returns the fd to pass to
/// `signal.set_wakeup_fd`, or None when it could not be set up (then only the Python
/// SIGTERM handler reports stops).
pub fn install() -> Option<RawFd> {
    // SAFETY: getpid cannot fail.
    OWNER.store(unsafe { libc::getpid() }, Ordering::SeqCst);
    if let Err(e) = proxy_stdin() {
        tracing::debug!("stdin stays as it is: {e}");
    }
    let (theirs, mut ours) = UnixStream::pair().ok()?;
    // CPython requires a non-blocking wakeup fd (it writes from a signal handler).
    theirs.set_nonblocking(true).ok()?;
    std::thread::Builder::new()
        .name("pykiln-signals".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = ours.read(&mut buf) {
                for &sig in &buf[..n] {
                    if i32::from(sig) == libc::SIGINT || i32::from(sig) == libc::SIGTERM {
                        stopping(i32::from(sig));
                    }
                }
            }
        })
        .ok()?;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .ok()?;
    let fd = theirs.as_raw_fd();
    WAKEUP_FD.store(fd, Ordering::SeqCst);
    DEV_NULL.store(null.as_raw_fd(), Ordering::SeqCst);
    // SAFETY: registers a handler that only calls dup2 (async-signal-safe).
    if unsafe { libc::pthread_atfork(None, None, Some(after_fork_child)) } != 0 {
        return None;
    }
    // Both stay open for the process's life (the wakeup fd is CPython's from here).
    std::mem::forget(theirs);
    std::mem::forget(null);
    Some(fd)
}

/// Record a stop signal: the first one ends stdin and starts the grace period.
pub fn stopping(signum: i32) {
    // SAFETY: getpid cannot fail.
    if OWNER.load(Ordering::SeqCst) != unsafe { libc::getpid() } {
        return;
    }
    if SIGNAL
        .compare_exchange(0, signum, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    if let Some(feed) = STDIN_FEED.get() {
        let _ = feed.shutdown(std::net::Shutdown::Write);
    }
    let _ = std::thread::Builder::new()
        .name("pykiln-grace".into())
        .spawn(move || {
            std::thread::sleep(GRACE);
            eprintln!(
                "pykiln: still running {}s after signal {signum}; exiting",
                GRACE.as_secs()
            );
            // SAFETY: _exit(2) ends the process without running anything else, which
            // is the point: the clean path is stuck.
            unsafe { libc::_exit(128 + signum) }
        });
}

/// The first stop signal received, if any.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
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
