//! Start-up prefetch: the archive entries an app reads at start-up, decompressed on
//! another thread ahead of the importer.
//!
//! Python imports on one thread, and a packed app spends a good part of its start-up
//! in zstd (bytecode, and native images of several megabytes) and in copying native
//! images into memfds. The build records the order in which the app loads its modules
//! (`Manifest::startup`); this module walks that order on a second thread, so the
//! importer finds most entries ready. Only pure Rust runs there: no Python, no dlopen.
//!
//! Each planned entry is in one state: waiting, being worked on, ready, or taken. The
//! importer [`take`]s an entry: a ready one is handed over, one being worked on is
//! waited for, and a waiting one is claimed so the prefetcher skips it (the importer
//! then reads it itself, as without prefetch; errors are always reported by that read).
//! What the prefetcher holds is bounded ([`BUDGET`]); [`finish`] at the end of start-up
//! stops it and frees whatever was not taken.
//!
//! The prefetcher is an optimisation, so nothing may depend on it, and its failure
//! must not take the process down:
//!
//! - It has no panicking path (release builds abort on a panic, so catching one is
//!   not an option): every step returns an error instead, which hands the entry back to
//!   the importer, and this module denies the lints that would let a panic in. What it
//!   calls is the archive reader (fuzzed: no input makes it panic) and the native-image
//!   staging, which reports every failure and never maps a file another process could
//!   truncate (that would be a SIGBUS).
//! - The importer never waits on it for long: an entry being worked on for more than
//!   [`STALL`] (a blocked read, a stuck file system) is taken back and read by the
//!   importer; whatever the prefetcher makes of it later is dropped.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pykiln_archive::{Archive, Entry, EntryKind};

/// Most decompressed bytes the prefetcher keeps ahead of the importer. Measured on the
/// demo and a FastMCP server (bench/RESULTS.md): 24 MiB raised the cgroup's peak by
/// 6–8 MB over prefetch off; 4 MiB keeps the start-up gain and costs 1–2 MB.
const BUDGET: usize = 4 << 20;

/// Longest the importer waits for an entry the prefetcher is working on before reading
/// it itself. The slowest honest case, hashing or decompressing a large native image
/// on a loaded machine, takes a fraction of this.
const STALL: Duration = Duration::from_secs(5);

/// A prefetched entry.
#[derive(Debug)]
pub enum Product {
    /// Decompressed, checksum-verified bytes (module bytecode).
    Bytes(Vec<u8>),
    /// A descriptor holding a native image (extension module or shared library): a
    /// memfd, or its checked copy in the file-backed cache.
    Image(OwnedFd),
}

enum Slot {
    Waiting,
    Working,
    Ready(Product, usize),
    Taken,
}

struct State {
    slots: Vec<Slot>,
    next: usize,
    held: usize,
    stopped: bool,
    served: usize,
    /// Time the importer spent waiting for an entry being worked on.
    waited: Duration,
    /// Entries taken back from a prefetcher that was too slow with them.
    stalled: usize,
}

/// What makes an entry's product: [`produce`], or a failing one in tests.
type Producer = fn(&Images, &Entry<'static>) -> Option<(Product, usize)>;

/// How native images are made, handed in by the runtime (its native-image staging):
/// this module depends on the archive alone.
#[derive(Debug, Clone, Copy)]
pub struct Images {
    /// A descriptor holding the entry's image (a memfd, or its checked copy in the
    /// file-backed cache) and the memory it holds; None leaves it to the importer.
    pub make: fn(&Entry<'_>) -> Option<(OwnedFd, usize)>,
    /// Whether the entry's image is file-backed (holds no memory once made).
    pub file_backed: fn(&Entry<'_>) -> bool,
}

struct Shared {
    plan: Vec<Entry<'static>>,
    by_key: HashMap<(EntryKind, &'static [u8]), usize>,
    state: Mutex<State>,
    changed: Condvar,
    /// [`STALL`], shorter in tests.
    stall: Duration,
    images: Images,
}

/// The running prefetcher; emptied by [`finish`], which frees the plan.
static PREFETCH: Mutex<Option<Arc<Shared>>> = Mutex::new(None);
static THREAD: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);
static STARTED: AtomicBool = AtomicBool::new(false);

fn current() -> Option<Arc<Shared>> {
    PREFETCH.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Start prefetching the entries of the `startup` modules (in that order) and the
/// shared libraries their extensions need, native images made by `images`. Does
/// nothing if already started or if there is nothing to do.
pub fn start(archive: Archive<'static>, startup: &[String], images: Images) {
    // PYKILN_PREFETCH=0 turns it off (for measuring what it gains).
    let off = std::env::var_os("PYKILN_PREFETCH").is_some_and(|v| v == "0");
    if off || startup.is_empty() || STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let shared = Arc::new(plan(archive, startup, images));
    *PREFETCH.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared.clone());
    let spawned = std::thread::Builder::new()
        .name("pykiln-prefetch".into())
        .stack_size(256 << 10)
        .spawn(move || run(&shared, produce));
    match spawned {
        Ok(handle) => *THREAD.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle),
        Err(e) => {
            tracing::debug!(error = %e, "no prefetch thread; start-up reads on the main thread");
            finish();
        }
    }
}

fn plan(archive: Archive<'static>, startup: &[String], images: Images) -> Shared {
    let plan = archive.load_order(startup);
    let by_key = plan
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.kind(), e.key()), i))
        .collect();
    let slots = plan.iter().map(|_| Slot::Waiting).collect();
    Shared {
        plan,
        by_key,
        state: Mutex::new(State {
            slots,
            next: 0,
            held: 0,
            stopped: false,
            served: 0,
            waited: Duration::ZERO,
            stalled: 0,
        }),
        changed: Condvar::new(),
        stall: STALL,
        images,
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read one entry: bytecode decompressed; a native image into a descriptor by
/// `images`. Returns the memory it holds.
fn produce(images: &Images, entry: &Entry<'static>) -> Option<(Product, usize)> {
    match entry.kind() {
        EntryKind::Extension | EntryKind::SharedLib => {
            // Without memfd or cache (PYKILN_NO_MEMFD and no usable cache) this fails
            // and the importer stages the image itself.
            let (fd, held) = (images.make)(entry)?;
            Some((Product::Image(fd), held))
        }
        _ => Some((
            Product::Bytes(entry.read().ok()?.into_owned()),
            entry.raw_len(),
        )),
    }
}

fn run(shared: &Shared, produce: Producer) {
    let mut st = lock(shared);
    loop {
        if st.stopped {
            return;
        }
        while matches!(st.slots.get(st.next), Some(s) if !matches!(s, Slot::Waiting)) {
            st.next += 1;
        }
        let i = st.next;
        let Some(entry) = shared.plan.get(i) else {
            return;
        };
        // A file-backed image holds no memory once made (its pages are page cache).
        let size = if (shared.images.file_backed)(entry) {
            0
        } else {
            entry.raw_len()
        };
        if st.held > 0 && st.held.saturating_add(size) > BUDGET {
            st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        set(&mut st, i, Slot::Working);
        st.next = i + 1;
        drop(st);
        let product = produce(&shared.images, entry);
        st = lock(shared);
        // The importer may have taken the entry back meanwhile (too slow): then what
        // was made is dropped here.
        if matches!(st.slots.get(i), Some(Slot::Working)) {
            let slot = match product {
                Some((p, len)) if !st.stopped => {
                    st.held += len;
                    Slot::Ready(p, len)
                }
                // A failed read is left to the importer, which reports it.
                _ => Slot::Taken,
            };
            set(&mut st, i, slot);
        }
        shared.changed.notify_all();
    }
}

/// Put `slot` at `i` (a planned index; out of range is ignored, never a panic).
fn set(st: &mut State, i: usize, slot: Slot) {
    if let Some(s) = st.slots.get_mut(i) {
        *s = slot;
    }
}

/// The prefetched product of an entry, if the prefetcher has (or is about to have) it.
/// `None` means: read it yourself.
pub fn take(kind: EntryKind, key: &[u8]) -> Option<Product> {
    current()?.take(kind, key)
}

/// End of start-up: stop the prefetcher and free what it made that nobody took.
pub fn finish() {
    let shared = PREFETCH.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(shared) = shared {
        shared.finish();
    }
    // A thread that has run out of work is reaped now, so that its buffers and zstd
    // context are freed before start-up hands free memory back; one still busy with
    // an entry nobody asked for just ends on its own.
    let mut slot = THREAD.lock().unwrap_or_else(|p| p.into_inner());
    if slot.as_ref().is_some_and(|h| h.is_finished()) {
        if let Some(h) = slot.take() {
            let _ = h.join();
        }
    }
}

impl Shared {
    fn take(&self, kind: EntryKind, key: &[u8]) -> Option<Product> {
        let &i = self.by_key.get(&(kind, key))?;
        let mut st = lock(self);
        let since = std::time::Instant::now();
        loop {
            if st.stopped {
                return None;
            }
            let slot = st.slots.get_mut(i)?;
            match std::mem::replace(slot, Slot::Taken) {
                Slot::Ready(p, len) => {
                    st.held -= len;
                    st.served += 1;
                    self.changed.notify_all();
                    return Some(p);
                }
                Slot::Working => {
                    let waited = since.elapsed();
                    if waited >= self.stall {
                        // Left Taken: the prefetcher drops what it makes of it.
                        st.stalled += 1;
                        tracing::warn!(entry = %String::from_utf8_lossy(key), waited = ?waited, "the start-up prefetch is stuck on an entry; reading it here instead");
                        return None;
                    }
                    *slot = Slot::Working;
                    let before = std::time::Instant::now();
                    let (guard, _) = self
                        .changed
                        .wait_timeout(st, self.stall - waited)
                        .unwrap_or_else(|p| p.into_inner());
                    st = guard;
                    st.waited += before.elapsed();
                }
                Slot::Waiting | Slot::Taken => return None,
            }
        }
    }

    fn finish(&self) {
        let mut st = lock(self);
        if st.stopped {
            return;
        }
        st.stopped = true;
        let mut unused = 0;
        for s in st.slots.iter_mut() {
            if matches!(s, Slot::Ready(..)) {
                *s = Slot::Taken;
                unused += 1;
            }
        }
        st.held = 0;
        tracing::debug!(
            planned = self.plan.len(),
            served = st.served,
            unused,
            waited = ?st.waited,
            stalled = st.stalled,
            "start-up prefetch finished"
        );
        self.changed.notify_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use pykiln_archive::{ArchiveWriter, Manifest};

    fn archive() -> Archive<'static> {
        let mut w = ArchiveWriter::new((3, 11)).compression_level(3);
        for i in 0..50 {
            w.add_module(&format!("m{i}"), vec![i as u8; 5000 + i], None, false)
                .unwrap();
        }
        w.set_manifest(&Manifest::default()).unwrap();
        let bytes: &'static [u8] = Box::leak(w.finish().unwrap().into_boxed_slice());
        Archive::open(bytes).unwrap()
    }

    fn bytes_of(p: Option<Product>) -> Option<Vec<u8>> {
        match p? {
            Product::Bytes(b) => Some(b),
            Product::Image(_) => None,
        }
    }

    #[test]
    fn hands_over_each_entry_once_and_in_any_order() {
        let a = archive();
        let names: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        let shared = Arc::new(plan(a, &names, NO_IMAGES));
        let worker = {
            let s = shared.clone();
            std::thread::spawn(move || run(&s, produce))
        };
        // Out of order, as imports sometimes are: every entry is either handed over
        // with the right bytes or left to the caller, never both, never wrong.
        let mut got = 0;
        for i in (0..50).rev().chain(0..50) {
            if let Some(b) = bytes_of(shared.take(EntryKind::Module, format!("m{i}").as_bytes())) {
                assert_eq!(b, vec![i as u8; 5000 + i]);
                got += 1;
            }
        }
        assert!(got <= 50);
        worker.join().unwrap();
        let st = lock(&shared);
        assert_eq!(st.held, 0, "everything handed over or left");
        assert!(st.slots.iter().all(|s| matches!(s, Slot::Taken)));
    }

    const NO_IMAGES: Images = Images {
        make: |_| None,
        file_backed: |_| false,
    };

    fn failing(_: &Images, _: &Entry<'static>) -> Option<(Product, usize)> {
        None
    }

    static RELEASE: AtomicBool = AtomicBool::new(false);

    /// Stuck (a blocked read) until [`RELEASE`], then makes the entry.
    fn stuck(images: &Images, entry: &Entry<'static>) -> Option<(Product, usize)> {
        while !RELEASE.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        produce(images, entry)
    }

    #[test]
    fn a_failing_prefetcher_hands_every_entry_back() {
        let names: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        let shared = Arc::new(plan(archive(), &names, NO_IMAGES));
        let worker = {
            let s = shared.clone();
            std::thread::spawn(move || run(&s, failing))
        };
        worker.join().unwrap();
        for i in 0..50 {
            assert!(
                shared
                    .take(EntryKind::Module, format!("m{i}").as_bytes())
                    .is_none()
            );
        }
        assert_eq!(lock(&shared).held, 0);
    }

    #[test]
    fn a_stuck_prefetcher_does_not_hold_the_importer() {
        let names: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
        let mut planned = plan(archive(), &names, NO_IMAGES);
        planned.stall = Duration::from_millis(200);
        let shared = Arc::new(planned);
        let worker = {
            let s = shared.clone();
            std::thread::spawn(move || run(&s, stuck))
        };
        while !matches!(lock(&shared).slots.first(), Some(Slot::Working)) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let asked = std::time::Instant::now();
        assert!(
            shared.take(EntryKind::Module, b"m0").is_none(),
            "read it yourself"
        );
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(60),
            "{waited:?}"
        );
        assert_eq!(lock(&shared).stalled, 1);
        // Unstuck, the prefetcher drops what it made of the taken-back entry and goes on.
        RELEASE.store(true, Ordering::SeqCst);
        while shared.take(EntryKind::Module, b"m1").is_none()
            && !matches!(lock(&shared).slots.get(1), Some(Slot::Taken))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        shared.finish();
        worker.join().unwrap();
        let st = lock(&shared);
        assert!(matches!(st.slots.first(), Some(Slot::Taken)));
        assert_eq!(st.held, 0);
    }

    #[test]
    fn the_global_prefetcher_serves_then_stops() {
        let a = archive();
        let names: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        start(a, &names, NO_IMAGES);
        // In order, as start-up asks: each answer is right or None.
        for i in 0..25 {
            if let Some(b) = bytes_of(take(EntryKind::Module, format!("m{i}").as_bytes())) {
                assert_eq!(b, vec![i as u8; 5000 + i]);
            }
        }
        // Taken entries are not handed over twice.
        assert!(take(EntryKind::Module, b"m0").is_none());
        assert!(take(EntryKind::Module, b"not-planned").is_none());
        let shared = current().unwrap();
        finish();
        assert!(
            take(EntryKind::Module, b"m30").is_none(),
            "nothing after finish"
        );
        assert_eq!(lock(&shared).held, 0);
        assert!(current().is_none(), "the plan is freed");
    }
}
