//! Counters ([`Stats`]) and gauges ([`Status`], [`BackendStatus`]).

use std::time::Duration;

use crate::sync::{AtomicU64, CachePadded, Ordering};

/// Stripes of a [`Striped`] counter.
const STRIPES: usize = 8;

/// A counter or gauge written on every get and every return, split over cache lines.
///
/// A single atomic written by every core is one cache line pulled from core to core on each
/// get and return; here each thread adds to the stripe its thread picks (by the address of a
/// thread-local), so threads on different cores mostly write different lines, and readers
/// (status, stats; rare) sum the stripes. Values wrap: a gauge raised on one thread and
/// lowered on another leaves one stripe above and one below zero, and the sum is exact.
///
/// # Synchronization
///
/// Every operation is Relaxed: nothing is published through these numbers. The sum reads
/// each stripe once; it is exact at rest (no get or return in flight) and otherwise may be
/// off by the operations in flight, as the docs of [`Status`] say. A counter's sum never goes
/// down between two reads ordered one after the other: each stripe only grows and is read
/// coherently.
pub(crate) struct Striped {
    stripes: [CachePadded<AtomicU64>; STRIPES],
}

impl Default for Striped {
    fn default() -> Self {
        Striped {
            stripes: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
        }
    }
}

thread_local! {
    /// Only its address is used: it tells threads apart without any shared state.
    static STRIPE_KEY: u8 = const { 0 };
}

/// This thread's stripe.
#[inline]
fn stripe() -> usize {
    // Thread-locals live in per-thread blocks at least a few hundred bytes apart; drop the
    // low bits (the same in every thread) and fold a few above them. Two threads that share
    // a stripe only share a cache line, never a count.
    let addr = STRIPE_KEY
        .try_with(|k| std::ptr::from_ref(k) as usize)
        .unwrap_or(0);
    (addr >> 12 ^ addr >> 16 ^ addr >> 20) % STRIPES
}

impl Striped {
    /// Adds `n` (wrapping).
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        // Relaxed: see the type's docs.
        self.stripes[stripe()].fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` (wrapping; another stripe holds the matching add).
    #[inline]
    pub(crate) fn sub(&self, n: u64) {
        // Relaxed: see the type's docs.
        self.stripes[stripe()].fetch_sub(n, Ordering::Relaxed);
    }

    /// The total of a counter.
    pub(crate) fn sum(&self) -> u64 {
        self.stripes
            // Relaxed: see the type's docs.
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(s.load(Ordering::Relaxed)))
    }

    /// The total of a gauge, 0 if operations in flight make it look negative.
    pub(crate) fn gauge(&self) -> usize {
        let sum = self.sum();
        if sum > u64::MAX / 2 {
            0
        } else {
            usize::try_from(sum).unwrap_or(usize::MAX)
        }
    }
}

/// A snapshot of the pool's gauges.
///
/// At rest `size == idle + in_use <= max_size`. While gets and returns are in flight the
/// fields are read one by one and may disagree by the operations in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The current limit on open connections (see `Pool::set_max_size`).
    pub max_size: usize,
    /// Open connections: idle, lent, or being opened or checked.
    pub size: usize,
    /// Connections in the idle queue.
    pub idle: usize,
    /// Connections lent to users.
    pub in_use: usize,
    /// Getters waiting for a slot.
    pub waiters: usize,
    /// One entry per backend currently in force, in list order.
    pub backends: Vec<BackendStatus>,
}

/// A snapshot of one backend's gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendStatus {
    /// The backend's address.
    pub addr: String,
    /// `false` while the backend is backed off after failed connects.
    pub online: bool,
    /// Open connections to it.
    pub size: usize,
    /// Of those, idle.
    pub idle: usize,
    /// Of those, lent.
    pub in_use: usize,
    /// Failed connects to it, ever (while it stayed listed).
    pub connect_errors: u64,
}

/// The pool's counters. They only grow.
///
/// `gets` counts successful gets, so `gets == hits + misses`; a failed get is counted once
/// under its cause (`timeouts`, `exhausted`, `connect_errors`, ...). `cancelled` counts get
/// futures dropped before they finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Successful gets.
    pub gets: u64,
    /// Gets served by an idle connection.
    pub hits: u64,
    /// Gets served by a new connection.
    pub misses: u64,
    /// Gets that had to wait for a slot.
    pub waits: u64,
    /// Total time gets spent waiting for a slot.
    pub wait_time: Duration,
    /// Gets that failed with `Error::Timeout`.
    pub timeouts: u64,
    /// Gets that failed with `Error::Exhausted`.
    pub exhausted: u64,
    /// Get futures dropped before they finished.
    pub cancelled: u64,
    /// Connections opened.
    pub connects: u64,
    /// Failed connects (each failed dial, whether or not its get then failed over).
    pub connect_errors: u64,
    /// Failed checks (test-on-borrow, keepalive, a new connection's check).
    pub check_failures: u64,
    /// Connections closed for being idle too long, or because the idle queue was full
    /// (`max_idle`) or the pool shrank.
    pub closed_idle: u64,
    /// Connections closed for outliving `max_lifetime`.
    pub closed_lifetime: u64,
    /// Connections closed as broken: failed checks, `is_reusable() == false`, discarded,
    /// returned by a panicking task, or abandoned mid-check by a cancelled get.
    pub closed_broken: u64,
    /// Connections closed because their backend left the list.
    pub closed_backend_gone: u64,
    /// Discovery errors (a failed or panicked `run`, or a reported error).
    pub discovery_errors: u64,
    /// Gets that failed fast with `Error::Connect` without dialing, because every backend was
    /// failing and backed off.
    pub backed_off: u64,
    /// Gets that failed with `Error::NoBackends`.
    pub no_backends: u64,
}

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// The live counters. Each is padded to its own cache line: gets and returns on many
        /// cores would otherwise contend on one line.
        #[derive(Default)]
        pub(crate) struct Counters {
            /// Bumped by every hit: striped (see [`Striped`]).
            pub(crate) hits: Striped,
            pub(crate) misses: CachePadded<AtomicU64>,
            /// Bumped by every get that waits (every get, while the pool is oversubscribed):
            /// striped, like its total wait time.
            pub(crate) waits: Striped,
            $(pub(crate) $name: CachePadded<AtomicU64>,)*
            pub(crate) wait_nanos: Striped,
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Stats {
                // Relaxed: independent monotonic counters; a snapshot reads each once.
                let hits = self.hits.sum();
                let misses = self.misses.load(Ordering::Relaxed);
                Stats {
                    // Not a counter of its own: one fewer atomic add on every get, and
                    // `gets == hits + misses` holds exactly in every snapshot.
                    gets: hits + misses,
                    hits,
                    misses,
                    waits: self.waits.sum(),
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    wait_time: Duration::from_nanos(self.wait_nanos.sum()),
                }
            }
        }
    };
}

counters!(
    timeouts,
    exhausted,
    cancelled,
    connects,
    connect_errors,
    check_failures,
    closed_idle,
    closed_lifetime,
    closed_broken,
    closed_backend_gone,
    discovery_errors,
    backed_off,
    no_backends,
);

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    // Relaxed: a monotonic statistic; nothing is published through it.
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds a finished wait's length to the total wait time.
pub(crate) fn add_wait(c: &Counters, d: Duration) {
    c.wait_nanos
        .add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
}
