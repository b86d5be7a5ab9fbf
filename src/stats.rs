//! Counters ([`Stats`]) and gauges ([`Status`], [`BackendStatus`]).

use std::time::Duration;

use crate::lanes::{Cells, Lane};
use crate::sync::{AtomicU64, CachePadded, Instant, Ordering};

/// [`Counters::waits`]: gets that waited.
const WAITS: usize = 0;
/// [`Counters::waits`]: their total wait, in nanoseconds.
const WAIT_NANOS: usize = 1;

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
    /// Its weight in the list in force (see [`Backend::with_weight`](crate::Backend::with_weight)).
    pub weight: u32,
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
/// `gets` counts successful gets, so `gets == hits + misses`. A failed get is counted once,
/// under the error it ended with: `timeouts` (`Error::Timeout`), `exhausted`, `no_backends`,
/// `backed_off` and `failed_connect` (`Error::Connect` without and after dialing),
/// `failed_check` and `failed_closed`; so every get that resolved is in exactly one of
/// `gets` and those seven. `cancelled` counts get futures dropped before they finished.
/// `connect_errors` and `check_failures` count dials and checks, not gets: one get may
/// fail over across several dials, and keepalive checks are no get's.
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
    /// returned by a panicking task, or abandoned mid-check by a get that was cancelled or
    /// ran out of time.
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
    /// Gets that failed with `Error::Connect` after dialing at least one backend (each failed
    /// dial is also in `connect_errors`).
    pub failed_connect: u64,
    /// Gets that failed with `Error::Check`: the new connection failed its check on borrow
    /// (each failed check is also in `check_failures`).
    pub failed_check: u64,
    /// Gets that failed with `Error::Closed`.
    pub failed_closed: u64,
    /// Connections taken out of the pool for good by `Pooled::detach` (open, no longer
    /// counted in `size`; each freed its slot).
    pub detached: u64,
}

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// The live counters. Each is padded to its own cache line: gets and returns on many
        /// cores would otherwise contend on one line. Hits are not counted here: the engine
        /// counts them in its lanes, beside the lent gauge every lend writes anyway; and
        /// `gets = hits + misses`.
        #[derive(Default)]
        pub(crate) struct Counters {
            /// Gets served by a new connection (their lends are not hits).
            misses: CachePadded<AtomicU64>,
            /// Gets that waited ([`WAITS`]) and their total wait ([`WAIT_NANOS`]): every get
            /// waits while the pool is oversubscribed, so per-thread lanes.
            waits: Cells<2>,
            $(pub(crate) $name: CachePadded<AtomicU64>,)*
        }

        impl Counters {
            /// A snapshot, given the engine's count of hits.
            pub(crate) fn snapshot(&self, hits: u64) -> Stats {
                // Relaxed, like all of them: independent counters that only grow, so each
                // read is at least what an earlier snapshot read, and so is their sum.
                let misses = self.misses.load(Ordering::Relaxed);
                Stats {
                    gets: hits.wrapping_add(misses),
                    hits,
                    misses,
                    waits: self.waits.sum(WAITS),
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    wait_time: Duration::from_nanos(self.waits.sum(WAIT_NANOS)),
                }
            }

            /// Counts a get that is about to wait; its length is added to the total wait
            /// time when the returned clock drops (the wait ended, or its get was dropped).
            pub(crate) fn wait_clock(&self, start: Instant) -> WaitClock<'_> {
                self.waits.add(Lane::current(), WAITS, 1);
                WaitClock {
                    counters: self,
                    start,
                }
            }

            /// Counts a get served by a new connection.
            pub(crate) fn miss(&self) {
                bump(&self.misses);
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
    failed_connect,
    failed_check,
    failed_closed,
    detached,
);

/// A wait in progress (see [`Counters::wait_clock`]): adds its length to the total wait time
/// when dropped.
pub(crate) struct WaitClock<'a> {
    counters: &'a Counters,
    start: Instant,
}

impl Drop for WaitClock<'_> {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.counters.waits.add(Lane::current(), WAIT_NANOS, nanos);
    }
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    // Relaxed: a monotonic statistic; nothing is published through it.
    c.fetch_add(1, Ordering::Relaxed);
}
