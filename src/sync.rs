//! The only place the crate's atomics, `Arc`, the wait queue, the idle queue, the backend
//! cell and the clock come from.
//!
//! # What loom sees
//!
//! Under plain `cfg(loom)` (set by `scripts/loom.sh` through `RUSTFLAGS="--cfg loom"`; not
//! `all(test, loom)`, which would never switch on when `loom-tests` builds this crate as a
//! dependency) the atomics and the wait queue (event-listener built with its `loom` feature) are
//! loom's, so the models in `loom-tests` explore every interleaving of the capacity count (`size`),
//! the waiting word and the waiters' line, the hand-off, the timer duty, the closed flag, the
//! limits, the gauges and the backends' `removed` flags. The models drive the real
//! [`Engine`](crate::engine::Engine) and [`Backends`](crate::backends::Backends) through
//! `crate::__loom`.
//!
//! What loom does **not** see:
//! - `crossbeam_queue::ArrayQueue` (the idle queue) stays the real one: loom sees each push
//!   and pop as one opaque, atomic step (they contain no loom operation, so loom never
//!   preempts inside them, and runs them in its chosen order). Its own correctness
//!   (linearizable, each element published Release/Acquire) is upstream's: crossbeam checks it
//!   under its own `crossbeam_loom`. Our models check how we *use* it.
//! - `arc_swap::ArcSwap` (the backend list) is replaced under loom by a stand-in with the same
//!   four methods over a loom `Mutex`, because loom must see a new list's entries *published*
//!   (their atomics are loom's; an opaque publication makes loom report a causality
//!   violation). The stand-in orders at least as much as ArcSwap (a store happens-before the
//!   loads that see it), which is all the pool relies on; ArcSwap's own correctness is
//!   upstream's.
//! - `Arc`/`Weak` stay std's (loom has no `Weak`); the models hold the engine directly.
//! - The clock stays tokio's `Instant`: tokio switches to loom only under `all(test, loom)`,
//!   so as a dependency it builds normally and `Instant::now()` outside a runtime reads the
//!   monotonic clock. No model depends on time (no lifetimes or idle timeouts are set).
//! - loom models `SeqCst` loads and stores only as `Acquire`/`Release` (loom's README,
//!   tokio-rs/loom#180), so it cannot see the single total order that our store-load
//!   handshakes rely on (the four in `engine.rs`'s table, and the last close ↔ `drained`).
//!   The return path marks its load halves with [`handshake_fence`]: a `fence(SeqCst)` under
//!   loom, which loom does model, and nothing under std, where the `SeqCst` accesses
//!   themselves give the guarantee; the slow sides fence with [`fence_seqcst`], a real fence
//!   under both. So the models check everything around the
//!   handshakes (hand-off, pass-on, epochs, the close and drain paths) and take the C11 `SeqCst`
//!   total order itself as given.
//! - The tokio parts of the pool (timeouts, the maintenance and discovery tasks, the
//!   manager's futures) are not modelled; `tests/model.rs` and `tests/soak.rs` cover them.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// The mutex of the waiters' line: loom's under loom, which must see a model thread block on
/// it (its critical sections contain loom atomics).
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// The reference count of a waiter's slot: loom's under loom (a slot holds loom atomics and
/// is freed by whichever thread drops it last, which loom must see synchronized).
#[cfg(loom)]
pub(crate) use loom::sync::Arc as SlotArc;
#[cfg(not(loom))]
pub(crate) use std::sync::Arc as SlotArc;

/// `Arc`/`Weak` stay std's even under loom (loom has no `Weak`); the models drive the engine
/// and the backend set directly, whose only reference counts loom must see are the waiters'
/// slots ([`SlotArc`]).
pub(crate) use std::sync::{Arc, Weak};

#[cfg(loom)]
pub(crate) use self::loom_stand_in::ArcSwap;
#[cfg(not(loom))]
pub(crate) use arc_swap::ArcSwap;
pub(crate) use crossbeam_queue::ArrayQueue;
/// The cell a waiter's handed connection travels in (crossbeam's: lock-free for a pointer).
/// Under loom it stays crossbeam's too: its accesses are ordered by the slot's state, whose
/// atomics loom does see.
pub(crate) use crossbeam_utils::atomic::AtomicCell;
pub(crate) use crossbeam_utils::CachePadded;
/// `event_listener::Event`, renamed: `connpool::Event` is our public callback type.
pub(crate) use event_listener::Event as WaitQueue;

/// The pool's clock. tokio's `Instant` so that tests can pause and advance time; outside a
/// runtime it reads the system's monotonic clock. Under `cfg(loom)` too: tokio (a plain
/// dependency there) is built without its own loom switch, so its clock works as usual.
pub(crate) type Instant = tokio::time::Instant;

/// `at` as nanoseconds since `epoch`, the pool's compact time (connection timestamps,
/// backoff deadlines, waiters' deadlines): earlier times read as 0, and 584 years on saturate.
#[inline]
pub(crate) fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// `start + d`, or, if the clock cannot represent that, the farthest instant it can within a
/// factor of two: a deadline never panics. Every configured duration is capped at 100 years,
/// which every platform's clock holds, so the fallback is a guard, not a path.
pub(crate) fn deadline_after(start: Instant, d: std::time::Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(at) = start.checked_add(d) {
            return at;
        }
        // Terminates: `start + 0` always fits.
        d /= 2;
    }
}

/// The instant `nanos` after `epoch` (the inverse of [`nanos_since`]).
#[inline]
pub(crate) fn instant_at(epoch: Instant, nanos: u64) -> Instant {
    epoch + std::time::Duration::from_nanos(nanos)
}

/// Marks the load half of a `SeqCst` store-load handshake (see the module docs): a
/// `fence(SeqCst)` under loom, which models `SeqCst` accesses only as `AcqRel`; nothing
/// otherwise, where the `SeqCst` accesses on both sides already sit in one total order.
#[inline(always)]
pub(crate) fn handshake_fence() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// A `SeqCst` fence, under std and loom alike: the load half of a handshake on a slow path
/// (a waiter's re-check, close, resize), where its cost does not matter and it spares the
/// handshake any reliance on how a dependency orders its own loads.
#[inline]
pub(crate) fn fence_seqcst() {
    #[cfg(not(loom))]
    std::sync::atomic::fence(Ordering::SeqCst);
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

#[cfg(loom)]
mod loom_stand_in {
    use super::Arc;

    /// `arc_swap::ArcSwap` as loom sees it: the four methods the backend set uses, over a
    /// loom `Mutex` (see the module docs).
    pub(crate) struct ArcSwap<T>(loom::sync::Mutex<Arc<T>>);

    impl<T> ArcSwap<T> {
        pub(crate) fn from_pointee(value: T) -> Self {
            ArcSwap(loom::sync::Mutex::new(Arc::new(value)))
        }
        pub(crate) fn load(&self) -> Arc<T> {
            self.load_full()
        }
        pub(crate) fn load_full(&self) -> Arc<T> {
            Arc::clone(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
        }
        pub(crate) fn store(&self, value: Arc<T>) {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = value;
        }
    }
}
