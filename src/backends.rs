//! The live backend set: [`Backend`], the per-backend gauges and backoff, and the
//! `ArcSwap`ped list the pool dials over.
//!
//! # Synchronization
//!
//! The list is an immutable `BackendSet` behind an `ArcSwap`: readers (`pick`, `status`) take
//! a cheap snapshot and never block writers; `set_backends` builds a new set and swaps it in.
//! An entry that leaves the list has its `removed` flag set (Release) *after* the swap, so any
//! path that later sees the flag (Acquire) also sees the new list; the pool checks the flag
//! before handing out or re-queueing a connection, so a removed backend's connection is never
//! handed out again. Entries are shared between consecutive sets while their address stays
//! listed, so gauges and backoff survive a list change.

use std::sync::Mutex;
use std::time::Duration;

pub(crate) use crate::backoff::BackoffPolicy;
use crate::balance::Balance;
use crate::lanes::Cells;
use crate::sync::{
    instant_at, nanos_since, Arc, ArcSwap, AtomicBool, AtomicU64, AtomicUsize, CachePadded,
    Instant, Ordering,
};

/// One backend the pool may dial: an address plus what discovery said about it.
///
/// Backends are identified by their address: two `Backend`s with the same `addr` are the same
/// backend to the pool.
///
/// ```
/// use connpool::Backend;
/// let b = Backend::new("10.0.0.7:19000").with_id("proxy-1").with_label("zone", "a");
/// assert_eq!(b.addr(), "10.0.0.7:19000");
/// assert_eq!(b.id(), Some("proxy-1"));
/// assert_eq!(b.label("zone"), Some("a"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    addr: String,
    id: Option<String>,
    labels: Vec<(String, String)>,
}

impl Backend {
    /// A backend at `addr` (whatever the manager understands, typically `host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Backend {
            addr: addr.into(),
            id: None,
            labels: Vec::new(),
        }
    }
    /// The address the manager dials.
    pub fn addr(&self) -> &str {
        &self.addr
    }
    /// Sets the identifier discovery knows the backend by (a ZooKeeper node name, an etcd key).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// The identifier discovery knows the backend by, if any.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    /// Adds a label (e.g. what discovery read about the backend).
    #[must_use]
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
    /// The value of label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// All labels, in the order they were added.
    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }
}

impl<S: Into<String>> From<S> for Backend {
    fn from(addr: S) -> Self {
        Backend::new(addr)
    }
}

/// [`BackendEntry::gauges`]: connections in the idle queue.
pub(crate) const IDLE: usize = 0;
/// [`BackendEntry::gauges`]: connections lent to users.
pub(crate) const IN_USE: usize = 1;

/// One listed backend and its live state.
pub(crate) struct BackendEntry {
    pub(crate) backend: Backend,
    /// Set once when the backend leaves the list; never cleared. Read on every get and every
    /// return, so it has a cache line of its own: the fields around it are written on every
    /// open and close (`size`) and failed connect, and a flag sharing their line would then
    /// miss in every core that reads it. (The gauges written on every get and return live in
    /// their own lanes.)
    removed: CachePadded<AtomicBool>,
    /// Open connections to this backend (idle, lent or being checked), and connects to it in
    /// flight.
    pub(crate) size: AtomicUsize,
    /// Of those, in the idle queue ([`IDLE`]) and lent to users ([`IN_USE`]). Written by
    /// every get and return: per-thread lanes (see `lanes.rs`).
    pub(crate) gauges: Cells<2>,
    /// Failed connects, ever.
    pub(crate) connect_errors: AtomicU64,
    /// Consecutive failed connects; 0 = healthy.
    failures: AtomicU64,
    /// Nanoseconds since the set's epoch before which the backend is not dialed; 0 = now.
    retry_at: AtomicU64,
    /// The last connect error's text (failure path only).
    last_error: Mutex<Option<String>>,
    /// What its connections' timestamps count from (the pool's start; see `idle::Meta`).
    epoch: Instant,
}

impl BackendEntry {
    fn new(backend: Backend, epoch: Instant) -> Self {
        BackendEntry {
            epoch,
            backend,
            removed: CachePadded::new(AtomicBool::new(false)),
            size: AtomicUsize::new(0),
            gauges: Cells::default(),
            connect_errors: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            retry_at: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// `at` as nanoseconds since the pool started (a connection's compact timestamp); earlier
    /// times read as 0, and 584 years on saturate.
    #[inline]
    pub(crate) fn stamp(&self, at: Instant) -> u64 {
        nanos_since(self.epoch, at)
    }

    /// The instant of a [`stamp`](Self::stamp).
    pub(crate) fn instant(&self, stamp: u64) -> Instant {
        instant_at(self.epoch, stamp)
    }

    /// Has this backend left the list?
    #[inline]
    pub(crate) fn is_removed(&self) -> bool {
        // Acquire: pairs with the Release in `mark_removed`, which follows the list swap.
        self.removed.load(Ordering::Acquire)
    }

    fn mark_removed(&self) {
        // Release: publishes the swap that preceded it to whoever sees the flag.
        self.removed.store(true, Ordering::Release);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// An immutable snapshot of the list.
pub(crate) struct BackendSet {
    pub(crate) entries: Vec<Arc<BackendEntry>>,
    /// `false` until the first list arrives from discovery.
    pub(crate) known: bool,
}

/// What `Backends::pick` found.
pub(crate) enum Picked {
    /// Dial this one.
    Dial(Arc<BackendEntry>),
    /// Every untried backend is backed off; this one is the first to be probed again.
    AllBackedOff(Arc<BackendEntry>),
    /// Nothing left to try (empty list, or every backend already tried by this get).
    None,
}

/// The live list plus the round-robin cursor.
pub(crate) struct Backends {
    set: ArcSwap<BackendSet>,
    cursor: CachePadded<AtomicUsize>,
    epoch: Instant,
    backoff: BackoffPolicy,
}

/// The result of `Backends::replace`: what changed.
pub(crate) struct Change {
    pub(crate) added: Vec<Arc<BackendEntry>>,
    pub(crate) removed: Vec<Arc<BackendEntry>>,
}

impl Backends {
    pub(crate) fn new(initial: Option<Vec<Backend>>, backoff: BackoffPolicy) -> Self {
        let known = initial.is_some();
        let epoch = Instant::now();
        let entries = dedup(initial.unwrap_or_default())
            .into_iter()
            .map(|b| Arc::new(BackendEntry::new(b, epoch)))
            .collect();
        Backends {
            set: ArcSwap::from_pointee(BackendSet { entries, known }),
            // Random start, as Codis' Jodis client does: many processes built at once do not all
            // dial the first backend first.
            cursor: CachePadded::new(AtomicUsize::new(fastrand::usize(..))),
            epoch,
            backoff,
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<BackendSet> {
        self.set.load_full()
    }

    /// Replaces the list; entries whose address stays are kept (with their gauges).
    pub(crate) fn replace(&self, list: Vec<Backend>) -> Change {
        let list = dedup(list);
        let old = self.set.load_full();
        let mut added = Vec::new();
        let entries: Vec<Arc<BackendEntry>> = list
            .into_iter()
            .map(
                |b| match old.entries.iter().find(|e| e.backend.addr == b.addr) {
                    Some(e) => Arc::clone(e),
                    None => {
                        let e = Arc::new(BackendEntry::new(b, self.epoch));
                        added.push(Arc::clone(&e));
                        e
                    }
                },
            )
            .collect();
        let removed: Vec<Arc<BackendEntry>> = old
            .entries
            .iter()
            .filter(|e| !entries.iter().any(|n| Arc::ptr_eq(n, e)))
            .cloned()
            .collect();
        self.set.store(Arc::new(BackendSet {
            entries,
            known: true,
        }));
        #[cfg(not(connpool_mutant = "no_mark_removed"))]
        for e in &removed {
            e.mark_removed();
        }
        Change { added, removed }
    }

    fn now_nanos(&self) -> u64 {
        nanos_since(self.epoch, Instant::now()).max(1)
    }

    /// Picks the next backend to dial, skipping `tried` and backends in backoff. A backend
    /// whose backoff has passed is claimed for one probe: its `retry_at` moves on by its current
    /// delay, so concurrent gets do not all probe it at once.
    pub(crate) fn pick(&self, balance: Balance, tried: &[Arc<BackendEntry>]) -> Picked {
        // Each pass either picks, or finds every untried backend backed off, or finds none
        // left; a pass whose claims all failed while a backend became dialable again (another
        // get's probe succeeded after this pass looked) goes round once more. Only a change
        // made by another get's connect or claim sends it round, so it ends.
        loop {
            if let Some(picked) = self.pick_once(balance, tried) {
                return picked;
            }
        }
    }

    /// One pass of [`pick`](Self::pick); `None`: a backend became dialable meanwhile.
    fn pick_once(&self, balance: Balance, tried: &[Arc<BackendEntry>]) -> Option<Picked> {
        let set = self.set.load();
        if set.entries.is_empty() {
            return Some(Picked::None);
        }
        let now = self.now_nanos();
        let untried = |e: &&Arc<BackendEntry>| !tried.iter().any(|t| Arc::ptr_eq(t, e));
        // Acquire: pairs with the Release stores in `connect_failed`/`connect_ok`.
        let due = |e: &&Arc<BackendEntry>| e.retry_at.load(Ordering::Acquire) <= now;
        let eligible = set.entries.iter().filter(untried).filter(due).count();
        if eligible > 0 {
            match balance {
                Balance::RoundRobin => {
                    // Relaxed: the cursor only spreads load; no data is published through it.
                    let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                    // Turn by turn over the backends that may be dialed now, so a backed-off
                    // backend's share spreads over all the others, not onto its neighbour.
                    let order = set.entries.iter().filter(untried).filter(due).cycle();
                    for e in order.skip(start % eligible).take(eligible) {
                        if self.claim(e, now) {
                            return Some(Picked::Dial(Arc::clone(e)));
                        }
                    }
                }
                Balance::LeastConnections => {
                    // Relaxed: a load-spreading hint.
                    let size = |e: &&Arc<BackendEntry>| e.size.load(Ordering::Relaxed);
                    let least = set
                        .entries
                        .iter()
                        .filter(untried)
                        .filter(due)
                        .map(|e| size(&e))
                        .min();
                    // Ties go round-robin, so equal backends fill evenly.
                    let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                    let ties = set
                        .entries
                        .iter()
                        .filter(untried)
                        .filter(due)
                        .filter(|e| Some(size(e)) == least);
                    let n = ties.clone().count().max(1);
                    for e in ties.cycle().skip(start % n).take(n) {
                        if self.claim(e, now) {
                            return Some(Picked::Dial(Arc::clone(e)));
                        }
                    }
                }
            }
        }
        // Nothing dialable: report the backed-off backend that is probed again first. (Its
        // `retry_at` is read again: the claims above may have lost to a probe that has since
        // succeeded and cleared it.)
        // Relaxed: which one to name; `due` below decides, with its own Acquire load.
        let first = set
            .entries
            .iter()
            .filter(untried)
            .min_by_key(|e| e.retry_at.load(Ordering::Relaxed));
        match first {
            None => Some(Picked::None),
            Some(e) if !due(&e) => Some(Picked::AllBackedOff(Arc::clone(e))),
            // Dialable again since this pass looked: another pass.
            #[cfg(not(connpool_mutant = "pick_no_retry"))]
            Some(_) => None,
            // Mutant: reports "no backend" for a list whose backend just came back.
            #[cfg(connpool_mutant = "pick_no_retry")]
            Some(_) => Some(Picked::None),
        }
    }

    /// A healthy backend (no failures) is always free to dial; a failing one whose backoff
    /// has passed is claimed by moving `retry_at` forward with a CAS (one prober wins).
    fn claim(&self, e: &BackendEntry, now: u64) -> bool {
        // Relaxed: `failures` only chooses the next delay; `retry_at` below is re-validated.
        let failures = e.failures.load(Ordering::Relaxed);
        if failures == 0 {
            return true;
        }
        // Acquire: pairs with the Release stores of `retry_at`.
        let retry_at = e.retry_at.load(Ordering::Acquire);
        if retry_at > now {
            return false;
        }
        let next = now.saturating_add(nanos(self.backoff.delay(failures)));
        // AcqRel: the winner publishes its claim; losers see it and move on.
        e.retry_at
            .compare_exchange(retry_at, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Records a failed connect: backs the backend off (capped, jittered).
    pub(crate) fn connect_failed(&self, e: &BackendEntry, message: String) {
        *e.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
        // Relaxed: counters; `retry_at` below publishes the backoff.
        e.connect_errors.fetch_add(1, Ordering::Relaxed);
        let failures = e.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let until = self
            .now_nanos()
            .saturating_add(nanos(self.backoff.delay(failures)));
        // Release: pairs with the Acquire in `pick`.
        e.retry_at.store(until, Ordering::Release);
    }

    /// Records a successful connect: the backend is healthy again.
    pub(crate) fn connect_ok(&self, e: &BackendEntry) {
        // Relaxed loads first: the common case (healthy) writes nothing, keeping the line
        // shared. `retry_at` is looked at too: a probe claimed by a get that read `failures`
        // just before another get's success cleared it leaves `retry_at` in the future with
        // `failures` at 0, and its own success must clear that, or the healthy backend would
        // read as backed off until then.
        #[cfg(not(connpool_mutant = "success_keeps_backoff"))]
        let backed_off =
            e.failures.load(Ordering::Relaxed) != 0 || e.retry_at.load(Ordering::Relaxed) != 0;
        // Mutant: only `failures` decides.
        #[cfg(connpool_mutant = "success_keeps_backoff")]
        let backed_off = e.failures.load(Ordering::Relaxed) != 0;
        if backed_off {
            e.failures.store(0, Ordering::Relaxed);
            // Release: pairs with the Acquire in `pick`.
            e.retry_at.store(0, Ordering::Release);
        }
    }

    /// Marks `e` failing with its backoff already passed (the next pick claims it for a
    /// probe), for the models.
    #[cfg(loom)]
    pub(crate) fn fail_due(&self, e: &BackendEntry) {
        // Relaxed: set up before the model's threads start.
        e.failures.store(1, Ordering::Relaxed);
        e.retry_at.store(0, Ordering::Relaxed);
    }

    /// Is the backend currently dialable (not backed off)?
    pub(crate) fn is_online(&self, e: &BackendEntry) -> bool {
        // Acquire: pairs with the Release stores of `retry_at`.
        e.retry_at.load(Ordering::Acquire) <= self.now_nanos()
    }

    /// How long until a backed-off backend may be probed again.
    pub(crate) fn retry_in(&self, e: &BackendEntry) -> Duration {
        let at = e.retry_at.load(Ordering::Acquire);
        Duration::from_nanos(at.saturating_sub(self.now_nanos()))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn dedup(list: Vec<Backend>) -> Vec<Backend> {
    let mut out: Vec<Backend> = Vec::with_capacity(list.len());
    for b in list {
        if !out.iter().any(|o| o.addr == b.addr) {
            out.push(b);
        }
    }
    out
}
