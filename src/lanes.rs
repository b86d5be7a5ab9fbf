//! Per-thread lanes: the gauges and counters that every get and every return writes, kept
//! where no other core writes them.
//!
//! A single atomic written by every core is one cache line pulled from core to core on each
//! get and return, and even uncontended a locked read-modify-write costs as much as the rest of
//! a hit. So the first time a thread touches a pool it claims a *lane* (a small index from a
//! process-wide registry) and keeps it until it exits; every [`Cells`] has one cache line per
//! lane. While a thread owns lane `i`, it is the only writer of line `i` of every `Cells`, so
//! it updates its cells with a plain load and store (no `lock` prefix, no line transfer).
//! Readers (status, stats; rare) sum the lines.
//!
//! Only the first [`owned`] lanes are owned this way (twice the machine's parallelism, so
//! runtime workers and a few other threads each get one); threads beyond them, and a thread
//! whose lane was already given back (a pool used from a thread-local destructor), use a few
//! shared lines with atomic read-modify-writes, which is slower but exact.
//!
//! # Synchronization
//!
//! Every cell operation is Relaxed: nothing is published through these numbers. An owned
//! line has one writer at a time; when a thread exits, its lane goes back to the registry
//! under a mutex, and the next thread to claim it takes it under the same mutex, so the old
//! owner's last store happens-before the new owner's first load (no update is lost across the
//! hand-over). Values wrap: a gauge raised on one lane and lowered on another leaves one line
//! above and one below zero, and the sum is exact.
//!
//! Under `cfg(loom)` every thread of a model runs on one OS thread (one thread-local), so
//! every operation takes the shared, read-modify-write path, which loom sees and checks.

#[cfg(not(loom))]
use std::sync::OnceLock;

use crate::sync::{AtomicU64, CachePadded, Ordering};

/// Shared lines, for threads without an owned lane.
#[cfg(not(loom))]
const SHARED: usize = 4;
#[cfg(loom)]
const SHARED: usize = 1;

/// How many lanes are owned: twice the parallelism, within 4..=128 (0 under loom).
pub(crate) fn owned() -> usize {
    #[cfg(loom)]
    {
        0
    }
    #[cfg(not(loom))]
    {
        static OWNED: OnceLock<usize> = OnceLock::new();
        *OWNED.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(4, usize::from);
            (2 * cores).clamp(4, 128)
        })
    }
}

/// The lane registry and each thread's claim on it (not under loom, where every operation
/// takes a shared line).
#[cfg(not(loom))]
mod registry {
    use std::sync::Mutex;

    /// The process-wide registry of lane indices: the next never-used index and the given-back
    /// ones (the lowest is reused first, so owned lanes are reused before shared ones).
    pub(super) struct Registry {
        pub(super) next: usize,
        pub(super) free: Vec<usize>,
    }

    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        next: 0,
        free: Vec::new(),
    });

    impl Registry {
        /// The lowest free index, or a new one.
        pub(super) fn claim(&mut self) -> usize {
            let lowest = self
                .free
                .iter()
                .enumerate()
                .min_by_key(|(_, i)| **i)
                .map(|(at, _)| at);
            match lowest {
                Some(at) => self.free.swap_remove(at),
                None => {
                    let i = self.next;
                    self.next += 1;
                    i
                }
            }
        }
    }

    /// A thread's claim on its lane; gives it back when the thread exits.
    pub(super) struct Claim(pub(super) usize);

    impl Claim {
        fn new() -> Claim {
            Claim(REGISTRY.lock().unwrap_or_else(|p| p.into_inner()).claim())
        }
    }

    impl Drop for Claim {
        fn drop(&mut self) {
            // Under the registry's mutex: the next claimant of this index sees every store this
            // thread made to its lines (see the module docs).
            REGISTRY
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .free
                .push(self.0);
        }
    }

    thread_local! {
        pub(super) static LANE: Claim = Claim::new();
    }
}

/// The calling thread's lane (see the module docs). Cheap: one thread-local read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lane(usize);

impl Lane {
    /// The current thread's lane; a shared one if it has none (or under loom).
    #[inline]
    pub(crate) fn current() -> Lane {
        #[cfg(loom)]
        {
            Lane(usize::MAX)
        }
        #[cfg(not(loom))]
        {
            registry::LANE
                .try_with(|c| c.0)
                .map_or(Lane(usize::MAX), Lane)
        }
    }

    /// Which of `n` owned slots (plus one shared slot at index `n`) this lane uses.
    #[inline]
    pub(crate) fn slot(self, n: usize) -> usize {
        self.0.min(n)
    }
}

/// `K` counters or gauges, one cache line per lane (see the module docs).
pub(crate) struct Cells<const K: usize> {
    lines: Box<[CachePadded<[AtomicU64; K]>]>,
    owned: usize,
}

impl<const K: usize> Default for Cells<K> {
    fn default() -> Self {
        let owned = owned();
        Cells {
            lines: (0..owned + SHARED)
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            owned,
        }
    }
}

impl<const K: usize> Cells<K> {
    /// `lane`'s line, and whether the calling thread owns it (is its only writer).
    #[inline]
    fn line(&self, lane: Lane) -> (&[AtomicU64; K], bool) {
        if lane.0 < self.owned {
            (&self.lines[lane.0], true)
        } else {
            (&self.lines[self.owned + lane.0 % SHARED], false)
        }
    }

    /// Adds `n` (wrapping) to `c`, on a line the calling thread owns or a shared one.
    #[inline]
    fn bump(c: &AtomicU64, owned: bool, n: u64) {
        if owned {
            // Relaxed load and store, not a read-modify-write: this thread is the only writer
            // of its owned line (see the module docs), so no update can fall between them.
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            // Relaxed: a shared line; the RMW keeps concurrent updates.
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds `n` (wrapping) to cell `k` on `lane`.
    #[inline]
    pub(crate) fn add(&self, lane: Lane, k: usize, n: u64) {
        let (line, owned) = self.line(lane);
        Self::bump(&line[k], owned, n);
    }

    /// Adds `deltas[k]` (wrapping) to every cell `k` on `lane`: one line, one bounds check.
    #[inline]
    pub(crate) fn add_all(&self, lane: Lane, deltas: [u64; K]) {
        let (line, owned) = self.line(lane);
        for (c, d) in line.iter().zip(deltas) {
            Self::bump(c, owned, d);
        }
    }

    /// Subtracts `n` (wrapping; another lane may hold the matching add).
    #[inline]
    pub(crate) fn sub(&self, lane: Lane, k: usize, n: u64) {
        self.add(lane, k, n.wrapping_neg());
    }

    /// The total of counter `k`.
    pub(crate) fn sum(&self, k: usize) -> u64 {
        self.lines
            .iter()
            // Relaxed: see the module docs; each line is read once.
            .fold(0u64, |a, l| a.wrapping_add(l[k].load(Ordering::Relaxed)))
    }

    /// The total of gauge `k`, 0 if operations in flight make it look negative.
    pub(crate) fn gauge(&self, k: usize) -> usize {
        let sum = self.sum(k);
        if sum > u64::MAX / 2 {
            0
        } else {
            usize::try_from(sum).unwrap_or(usize::MAX)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn owned_and_shared_lanes_add_up() {
        let cells = Cells::<2>::default();
        let here = Lane::current();
        cells.add(here, 0, 5);
        cells.sub(here, 1, 1);
        // A lane beyond the owned ones takes the shared (RMW) path.
        let far = Lane(usize::MAX);
        cells.add(far, 1, 3);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let lane = Lane::current();
                    for _ in 0..1000 {
                        cells.add(lane, 0, 1);
                        cells.sub(lane, 0, 1);
                        cells.add(lane, 1, 1);
                    }
                });
            }
        });
        assert_eq!(cells.sum(0), 5);
        assert_eq!(cells.gauge(1), 8 * 1000 + 2);
    }

    #[test]
    fn a_given_back_lane_is_claimed_again_lowest_first() {
        let mut r = registry::Registry {
            next: 0,
            free: Vec::new(),
        };
        let (a, b, c) = (r.claim(), r.claim(), r.claim());
        assert_eq!((a, b, c), (0, 1, 2));
        r.free.push(c);
        r.free.push(a);
        assert_eq!(r.claim(), 0, "the lowest given-back index first");
        assert_eq!(r.claim(), 2);
        assert_eq!(r.claim(), 3, "then a new one");
    }

    #[test]
    fn a_thread_has_a_lane_of_its_own() {
        let here = Lane::current();
        let there = std::thread::spawn(Lane::current).join().unwrap();
        assert_ne!(here, Lane(usize::MAX));
        assert_ne!(here, there, "two live threads never share a lane");
    }
}
