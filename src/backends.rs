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
/// backend to the pool. A list that names an address twice keeps the first.
///
/// ```
/// use connpool::Backend;
/// let b = Backend::new("10.0.0.7:19000")
///     .with_id("proxy-1")
///     .with_weight(3)
///     .with_label("zone", "a");
/// assert_eq!(b.addr(), "10.0.0.7:19000");
/// assert_eq!(b.id(), Some("proxy-1"));
/// assert_eq!(b.weight(), 3);
/// assert_eq!(b.label("zone"), Some("a"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    addr: String,
    id: Option<String>,
    weight: u32,
    labels: Vec<(String, String)>,
}

impl Backend {
    /// A backend at `addr` (whatever the manager understands, typically `host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Backend {
            addr: addr.into(),
            id: None,
            weight: 1,
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
    /// Sets the backend's share of new connections (default 1). Both [`Balance`] modes honour
    /// it: round-robin gives a backend of weight 3 three dials for every one of a backend of
    /// weight 1, and least-connections keeps each backend's open connections in proportion to
    /// its weight.
    ///
    /// Weight 0 makes the backend a standby: it gets no new connections while a backend of
    /// non-zero weight can be dialed, and is dialed only when every such backend is backed
    /// off after failed connects or has failed this get. Its existing connections stay in
    /// use until they retire (idle timeout, lifetime); to close them at once, take the
    /// backend out of the list instead.
    ///
    /// A new list may change a listed backend's weight (the next dial follows it, and the
    /// pool emits [`Event::BackendsChanged`](crate::Event::BackendsChanged)).
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
    /// The backend's share of new connections (see [`with_weight`](Self::with_weight)).
    pub fn weight(&self) -> u32 {
        self.weight
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
    /// Each entry's weight as this list gives it (an entry outlives the list that added it;
    /// a later list may change its weight).
    pub(crate) weights: Vec<u32>,
    /// `false` until the first list arrives from discovery.
    pub(crate) known: bool,
}

/// What `Backends::pick` found.
pub(crate) enum Picked {
    /// Dial this one (as a probe if it was failing).
    Dial(Arc<BackendEntry>, Claim),
    /// Every untried backend is backed off; this one is the first to be probed again.
    AllBackedOff(Arc<BackendEntry>),
    /// Nothing left to try (empty list, or every backend already tried by this get).
    None,
}

/// How a picked backend may be dialed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Healthy: free to dial, nothing to give back.
    Healthy,
    /// A failing backend, claimed for one probe: its `retry_at` was moved to this value.
    /// The probe's outcome sets `retry_at` anew (`connect_ok`, `connect_failed`); a probe
    /// that ends without one gives the claim back ([`Backends::release`]).
    Probe(u64),
}

/// The live list plus the round-robin cursor.
pub(crate) struct Backends {
    set: ArcSwap<BackendSet>,
    /// Held by `replace` from its read of the list to its marking of the removed entries:
    /// two concurrent replacements (discovery's and a user's `set_backends`) would otherwise
    /// each build on the same old list, and one could store an entry the other had just
    /// marked removed (listed, yet closing every connection it opens). Lists change rarely;
    /// no get takes it.
    writer: crate::sync::Mutex<()>,
    cursor: CachePadded<AtomicUsize>,
    epoch: Instant,
    backoff: BackoffPolicy,
    /// How long a claimed probe holds off other probes at least: the longest its connect may
    /// take (the pool's `connect_timeout`). A backoff delay shorter than that would let a new
    /// probe start while the last one still hangs on a blackholed backend.
    probe_hold: Duration,
}

/// The result of `Backends::replace`: what changed.
pub(crate) struct Change {
    pub(crate) added: Vec<Arc<BackendEntry>>,
    pub(crate) removed: Vec<Arc<BackendEntry>>,
    /// Backends that stayed listed with another weight: (the backend, its old weight, its
    /// new one).
    pub(crate) reweighted: Vec<(Arc<BackendEntry>, u32, u32)>,
}

impl Change {
    /// Did the list change at all (a backend added, removed or reweighted)?
    pub(crate) fn any(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty() || !self.reweighted.is_empty()
    }
}

impl BackendSet {
    /// The entries a dial may choose from, with the weight each counts with: those that `ok`
    /// accepts and have a non-zero weight; if there are none, the standbys (weight 0) that
    /// `ok` accepts, each counting 1. `ok` is asked once per entry, so the tier is one
    /// consistent view even while other gets' dials and probes change what `ok` would say.
    fn tier(&self, ok: impl Fn(&Arc<BackendEntry>) -> bool) -> Vec<(&Arc<BackendEntry>, u64)> {
        let mut listed: Vec<(&Arc<BackendEntry>, u64)> = self
            .entries
            .iter()
            .zip(self.weights.iter().map(|&w| u64::from(w)))
            .filter(|(e, _)| ok(e))
            .collect();
        if listed.iter().any(|&(_, w)| w > 0) {
            listed.retain(|&(_, w)| w > 0);
        } else {
            for (_, w) in &mut listed {
                *w = 1;
            }
        }
        listed
    }
}

impl Backends {
    pub(crate) fn new(initial: Option<Vec<Backend>>, backoff: BackoffPolicy) -> Self {
        let known = initial.is_some();
        let epoch = Instant::now();
        let list = dedup(initial.unwrap_or_default());
        let weights = list.iter().map(Backend::weight).collect();
        let entries = list
            .into_iter()
            .map(|b| Arc::new(BackendEntry::new(b, epoch)))
            .collect();
        Backends {
            set: ArcSwap::from_pointee(BackendSet {
                entries,
                weights,
                known,
            }),
            // Random start, as Codis' Jodis client does: many processes built at once do not all
            // dial the first backend first.
            cursor: CachePadded::new(AtomicUsize::new(fastrand::usize(..))),
            writer: crate::sync::Mutex::new(()),
            epoch,
            backoff,
            probe_hold: Duration::ZERO,
        }
    }

    /// Sets `probe_hold`: a claimed probe holds off other probes for at least `d`.
    pub(crate) fn with_probe_hold(mut self, d: Duration) -> Self {
        self.probe_hold = d;
        self
    }

    pub(crate) fn snapshot(&self) -> Arc<BackendSet> {
        self.set.load_full()
    }

    /// Replaces the list; entries whose address stays are kept (with their gauges), and take
    /// the new list's weight.
    pub(crate) fn replace(&self, list: Vec<Backend>) -> Change {
        let list = dedup(list);
        let weights: Vec<u32> = list.iter().map(Backend::weight).collect();
        // A panic cannot leave the lists half-replaced (the store is one step): a poisoned
        // lock is taken over.
        let _writing = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.set.load_full();
        let mut added = Vec::new();
        let mut reweighted = Vec::new();
        let entries: Vec<Arc<BackendEntry>> = list
            .into_iter()
            .map(
                |b| match old.entries.iter().position(|e| e.backend.addr == b.addr) {
                    Some(i) => {
                        let e = &old.entries[i];
                        let (was, now) = (old.weights[i], b.weight);
                        if was != now {
                            reweighted.push((Arc::clone(e), was, now));
                        }
                        Arc::clone(e)
                    }
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
            weights,
            known: true,
        }));
        #[cfg(not(connpool_mutant = "no_mark_removed"))]
        for e in &removed {
            e.mark_removed();
        }
        Change {
            added,
            removed,
            reweighted,
        }
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
        let dialable = move |e: &Arc<BackendEntry>| untried(&e) && due(&e);
        // The weighted backends that may be dialed now, or else the standbys; each backend
        // looked at once, so the choice below is made on one view.
        let tier = set.tier(dialable);
        if !tier.is_empty() {
            // Relaxed: the cursor only spreads load; no data is published through it.
            let turn = self.cursor.fetch_add(1, Ordering::Relaxed) as u64;
            // The backends to try in turn, and where to start.
            let (order, first) = match balance {
                Balance::RoundRobin => {
                    // Each backend owns a span of the total weight as wide as its own, and the
                    // turn falls in one of them: over any `total` consecutive turns each
                    // backend is first choice exactly its weight's number of times (with
                    // equal weights, plain turn by turn). Turn by turn over the backends that
                    // may be dialed now, so a backed-off backend's share spreads over all the
                    // others, not onto its neighbour. (`total` is not 0: a tier's weights are
                    // all at least 1, and it is not empty.)
                    let total: u64 = tier.iter().map(|&(_, w)| w).sum();
                    let at = turn % total;
                    let mut end = 0;
                    let first = tier
                        .iter()
                        .position(|&(_, w)| {
                            end += w;
                            end > at
                        })
                        .unwrap_or(0);
                    (tier, first)
                }
                Balance::LeastConnections => {
                    // Each size read once (Relaxed: a load-spreading hint), so the least and
                    // its ties are found in the same view, whatever other gets' dials and
                    // closes do meanwhile: at least one backend (the least) always ties.
                    let sized: Vec<(&Arc<BackendEntry>, u128, u128)> = tier
                        .into_iter()
                        .map(|(e, w)| (e, e.size.load(Ordering::Relaxed) as u128, w.into()))
                        .collect();
                    // Connections per unit of weight, compared by cross-multiplying (exact:
                    // no division, and u128 cannot overflow). `sized` is not empty: the tier
                    // is not.
                    let (s, w) = sized.iter().skip(1).fold(
                        (sized[0].1, sized[0].2),
                        |(s, w), &(_, s2, w2)| if s2 * w < s * w2 { (s2, w2) } else { (s, w) },
                    );
                    // Ties go round-robin, so equal backends fill evenly.
                    let ties: Vec<(&Arc<BackendEntry>, u64)> = sized
                        .into_iter()
                        .filter(|&(_, s2, w2)| s2 * w == s * w2)
                        .map(|(e, _, w2)| (e, w2 as u64))
                        .collect();
                    let first = (turn % ties.len() as u64) as usize;
                    (ties, first)
                }
            };
            for &(e, _) in order.iter().cycle().skip(first).take(order.len()) {
                if let Some(claim) = self.claim(e, now) {
                    return Some(Picked::Dial(Arc::clone(e), claim));
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
    /// `None`: not dialable now.
    fn claim(&self, e: &BackendEntry, now: u64) -> Option<Claim> {
        // Relaxed: `failures` only chooses the next delay; `retry_at` below is re-validated.
        let failures = e.failures.load(Ordering::Relaxed);
        if failures == 0 {
            return Some(Claim::Healthy);
        }
        // Acquire: pairs with the Release stores of `retry_at`.
        let retry_at = e.retry_at.load(Ordering::Acquire);
        if retry_at > now {
            return None;
        }
        // Held for the probe's whole connect at least: its outcome (`connect_failed`, or
        // `connect_ok` clearing the backoff) sets `retry_at` anew when it ends, and a probe
        // cut short without one gives the claim back (`release`).
        let hold = self.backoff.delay(failures).max(self.probe_hold);
        // At least 1 past `now`: a claim is never the value 0 that "healthy" stores.
        let next = now.saturating_add(nanos(hold)).max(1);
        // AcqRel: the winner publishes its claim; losers see it and move on.
        e.retry_at
            .compare_exchange(retry_at, next, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Claim::Probe(next))
    }

    /// Gives back the claim of a probe that ended without an outcome (its get was dropped
    /// mid-connect, or ran out of time too soon to blame the backend): the backend is due
    /// again now, so the next get probes it instead of failing fast until the claim's hold
    /// (up to `connect_timeout`) runs out. Only if `retry_at` still holds this claim: an
    /// outcome recorded meanwhile (another get's connect) stands.
    pub(crate) fn release(&self, e: &BackendEntry, claim: Claim) {
        if let Claim::Probe(held) = claim {
            let now = self.now_nanos();
            // Release: pairs with the Acquire in `pick`, like every store of `retry_at`; a
            // failed CAS means another outcome replaced the claim: nothing to give back.
            let _ = e.retry_at.compare_exchange(
                held,
                now.min(held),
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Healthy backends `h:0`, `h:1`, ... with these weights.
    fn listed(weights: &[u32]) -> Backends {
        let list = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Backend::new(format!("h:{i}")).with_weight(w))
            .collect();
        let backoff = BackoffPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
        };
        Backends::new(Some(list), backoff)
    }

    /// `turns` picks; each picked backend's `size` grows by one, as its dial would make it.
    /// Returns how many each got.
    fn dial(b: &Backends, balance: Balance, turns: u64) -> Vec<u64> {
        let set = b.snapshot();
        let mut got = vec![0; set.entries.len()];
        for _ in 0..turns {
            let Picked::Dial(e, _) = b.pick(balance, &[]) else {
                panic!("a healthy list always has a backend to dial")
            };
            // Relaxed: single-threaded.
            e.size.fetch_add(1, Ordering::Relaxed);
            let i = set.entries.iter().position(|x| Arc::ptr_eq(x, &e));
            got[i.expect("a listed backend")] += 1;
        }
        got
    }

    /// What each backend's share of `rounds` runs of the weights' sum is: its weight each
    /// time, or 1 each when only standbys are listed.
    fn shares(weights: &[u32], rounds: u64) -> (u64, Vec<u64>) {
        let weighted = weights.iter().any(|&w| w > 0);
        let effective: Vec<u64> = weights
            .iter()
            .map(|&w| if weighted { u64::from(w) } else { 1 })
            .collect();
        let total: u64 = effective.iter().sum();
        (
            total * rounds,
            effective.iter().map(|w| w * rounds).collect(),
        )
    }

    proptest::proptest! {
        /// Round-robin's turns and least-connections' fill both give each backend exactly
        /// its share.
        #[test]
        fn dials_follow_the_weights(
            weights in proptest::collection::vec(0u32..6, 1..7),
            rounds in 1u64..4,
        ) {
            let (turns, want) = shares(&weights, rounds);
            for balance in [Balance::RoundRobin, Balance::LeastConnections] {
                let b = listed(&weights);
                proptest::prop_assert_eq!(&dial(&b, balance, turns), &want, "{:?}", balance);
            }
        }
    }

    /// A pass sees one view: each backend is asked once whether it may be dialed, so an
    /// answer that changes meanwhile (another get's probe or failure) cannot leave the pass
    /// with a tier that matches neither answer.
    #[test]
    fn a_tier_asks_each_backend_once() {
        let b = listed(&[1, 0, 2]);
        let set = b.snapshot();
        let asked = std::cell::Cell::new(0);
        // Yes the first time each is asked; no after that.
        let ok = |_: &Arc<BackendEntry>| {
            asked.set(asked.get() + 1);
            asked.get() <= 3
        };
        let tier: Vec<(&str, u64)> = set
            .tier(ok)
            .into_iter()
            .map(|(e, w)| (e.backend.addr(), w))
            .collect();
        assert_eq!(asked.get(), 3);
        assert_eq!(tier, vec![("h:0", 1), ("h:2", 2)]);
        // Only standbys may be dialed: they count 1 each.
        let only_standby = |e: &Arc<BackendEntry>| e.backend.addr() == "h:1";
        let tier: Vec<(&str, u64)> = set
            .tier(only_standby)
            .into_iter()
            .map(|(e, w)| (e.backend.addr(), w))
            .collect();
        assert_eq!(tier, vec![("h:1", 1)]);
    }

    #[test]
    fn a_new_list_reweights_in_place() {
        let b = listed(&[1, 1]);
        let before = b.snapshot();
        let change = b.replace(vec![
            Backend::new("h:0").with_weight(4),
            Backend::new("h:1"),
        ]);
        assert!(change.added.is_empty() && change.removed.is_empty());
        let moved: Vec<(&str, u32, u32)> = change
            .reweighted
            .iter()
            .map(|(e, from, to)| (e.backend.addr(), *from, *to))
            .collect();
        assert_eq!(moved, vec![("h:0", 1, 4)]);
        let after = b.snapshot();
        assert!(
            Arc::ptr_eq(&before.entries[0], &after.entries[0]),
            "same entry"
        );
        assert_eq!(after.weights, vec![4, 1]);
        assert!(!b
            .replace(vec![
                Backend::new("h:0").with_weight(4),
                Backend::new("h:1")
            ])
            .any());
    }
}
