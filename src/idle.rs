//! The idle queue: an `ArrayQueue` of connections with their bookkeeping, and [`Token`], what
//! a get is admitted with.
//!
//! The queue's capacity is `max_size_limit`, fixed at build time, so `set_max_size` never
//! reallocates it. Push and pop are lock-free and allocate nothing. The queue is FIFO: a
//! returned connection goes to the back, so every idle connection is used (and so kept warm)
//! in turn, and the maintenance scan sees the oldest first.

use std::time::Duration;

use crate::backends::{BackendEntry, IDLE};
use crate::events::CloseReason;
use crate::lanes::Lane;
use crate::sync::{Arc, ArrayQueue, Instant};

/// One unit of the pool's capacity, as a get (or a background pass) holds it: an open
/// connection taken out of the idle queue, or a *slot* reserved in `size` for a connection
/// still to be opened. Waiters are handed tokens (see `engine.rs`).
pub(crate) enum Token<C> {
    /// An open connection, out of the idle queue.
    Conn(Conn<C>),
    /// The right to open one connection (`size` already counts it).
    Slot,
}

/// A connection and what the pool knows about it, boxed once when the connection opens:
/// it travels between the idle queue, a waiter's slot and its guard as one
/// pointer, so the hit path moves eight bytes wherever it moves a connection, however large
/// the connection and its bookkeeping are (and the queues' slots stay small).
pub(crate) struct Conn<C>(Box<Entry<C>>);

/// What a [`Conn`] points to: aligned to a cache line, so that a small connection and its
/// bookkeeping share one.
#[repr(align(64))]
pub(crate) struct Entry<C> {
    pub(crate) conn: C,
    pub(crate) meta: Meta,
}

impl<C> Conn<C> {
    /// Boxes a new connection with its bookkeeping (once per connection).
    pub(crate) fn new(conn: C, meta: Meta) -> Self {
        Conn(Box::new(Entry { conn, meta }))
    }

    /// The connection and its bookkeeping, unboxed (when it leaves the pool).
    pub(crate) fn into_parts(self) -> (C, Meta) {
        let Entry { conn, meta } = *self.0;
        (conn, meta)
    }
}

impl<C> std::ops::Deref for Conn<C> {
    type Target = Entry<C>;
    #[inline]
    fn deref(&self) -> &Entry<C> {
        &self.0
    }
}

impl<C> std::ops::DerefMut for Conn<C> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Entry<C> {
        &mut self.0
    }
}

/// A connection's bookkeeping: its backend and four timestamps, each a `u64` of nanoseconds
/// since the pool started ([`BackendEntry::stamp`]), so that an entry of a small connection
/// fits one cache line (a connection that moved between cores then costs one line transfer).
pub(crate) struct Meta {
    pub(crate) backend: Arc<BackendEntry>,
    created: u64,
    /// `created + max_lifetime`, jittered down by up to 2.5 %; `u64::MAX` = no limit.
    expires: u64,
    /// When a user last returned it (or when it was opened).
    last_used: u64,
    /// When a check last passed on it (or when it was opened).
    pub(crate) last_checked: u64,
    /// Consecutive failed checks.
    pub(crate) failed_checks: u32,
}

impl Meta {
    pub(crate) fn new(
        backend: Arc<BackendEntry>,
        now: Instant,
        max_lifetime: Option<Duration>,
    ) -> Self {
        // Jitter the lifetime down by up to 2.5 % so that connections opened together (a
        // fleet's warm-up) do not all expire together.
        let expires = max_lifetime.map_or(u64::MAX, |l| {
            backend.stamp(now + l.mul_f64(1.0 - fastrand::f64() * 0.025))
        });
        let created = backend.stamp(now);
        Meta {
            backend,
            created,
            expires,
            last_used: created,
            last_checked: created,
            failed_checks: 0,
        }
    }

    /// When it was opened.
    pub(crate) fn created_at(&self) -> Instant {
        self.backend.instant(self.created)
    }

    /// A user returned it at `at`.
    #[inline]
    pub(crate) fn set_last_used(&mut self, at: Instant) {
        self.last_used = self.backend.stamp(at);
    }

    /// Outlived `max_lifetime`? Reads the clock only if the connection has a lifetime.
    #[inline]
    pub(crate) fn expired(&self, now: &mut LazyNow) -> bool {
        self.expires != u64::MAX && self.backend.stamp(now.get()) >= self.expires
    }

    /// Idle past `idle_timeout`? Reads the clock only if there is an idle timeout.
    #[inline]
    pub(crate) fn idle_too_long(&self, now: &mut LazyNow, limit: IdleLimit) -> bool {
        limit.0 != u64::MAX
            && self.backend.stamp(now.get()).saturating_sub(self.last_used) >= limit.0
    }

    /// Why this idle connection may not be handed out, if it may not: its backend left the
    /// list, it outlived `max_lifetime`, or it sat idle past `idle_timeout`.
    #[inline]
    pub(crate) fn stale_reason(
        &self,
        now: &mut LazyNow,
        idle_timeout: IdleLimit,
    ) -> Option<CloseReason> {
        let removed = self.backend.is_removed();
        #[cfg(connpool_mutant = "get_ignores_removed")]
        let removed = false;
        if removed {
            Some(CloseReason::BackendGone)
        } else if self.expired(now) {
            Some(CloseReason::Lifetime)
        } else if self.idle_too_long(now, idle_timeout) {
            Some(CloseReason::IdleTimeout)
        } else {
            None
        }
    }

    /// Time since the connection last proved alive (used by a user, or checked).
    pub(crate) fn quiet_for(&self, now: Instant) -> Duration {
        let quiet = self
            .backend
            .stamp(now)
            .saturating_sub(self.last_used.max(self.last_checked));
        Duration::from_nanos(quiet)
    }
}

/// `idle_timeout` in the stamps' unit (nanoseconds; `u64::MAX`: none, or too long to be
/// reached), converted once when the pool is built rather than on every hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdleLimit(u64);

impl IdleLimit {
    /// No idle timeout.
    pub(crate) const NONE: IdleLimit = IdleLimit(u64::MAX);

    pub(crate) fn new(idle_timeout: Option<Duration>) -> IdleLimit {
        idle_timeout.map_or(IdleLimit::NONE, |t| {
            IdleLimit(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX))
        })
    }
}

/// "Now", read from the clock at most once and only when first asked for: a get or return
/// that needs no timestamp (no lifetime, no idle timeout, no idle-based check; see
/// `Hooks::stamps_returns`) reads no clock at all. A clock read is the costliest step of an
/// otherwise lock-free hit (tens of nanoseconds in a VM); the hit path makes none.
#[derive(Debug, Default)]
pub(crate) struct LazyNow(Option<Instant>);

impl LazyNow {
    /// Not read yet.
    pub(crate) fn new() -> Self {
        LazyNow(None)
    }

    /// Already read (by the caller).
    pub(crate) fn at(now: Instant) -> Self {
        LazyNow(Some(now))
    }

    /// The time of the first call (reads the clock then).
    pub(crate) fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// The idle queue plus its per-backend gauge upkeep.
///
/// # Synchronization
///
/// The queue publishes a connection from its pusher to its popper (crossbeam's Release
/// store of the slot's stamp, Acquire load by the popper). The engine also relies on one more
/// property of `ArrayQueue::push`: its successful compare-and-swap of the tail is `SeqCst`, so
/// a push and a later `SeqCst` load by the same thread sit in one total order with the other
/// side's `SeqCst` accesses and fences (the store half of the return path's handshakes, see
/// `engine.rs`). `tests/dependency_contract.rs` checks that crossbeam's source still says so.
pub(crate) struct IdleQueue<C> {
    queue: ArrayQueue<Conn<C>>,
}

impl<C> IdleQueue<C> {
    pub(crate) fn new(capacity: usize) -> Self {
        IdleQueue {
            queue: ArrayQueue::new(capacity.max(1)),
        }
    }

    /// Pushes a connection; gives it back if the queue is full.
    #[inline]
    pub(crate) fn push(&self, c: Conn<C>, lane: Lane) -> Result<(), Conn<C>> {
        // Count it idle before it becomes visible, so the total never dips below zero.
        // (A gauge in the backend's lanes; the queue's own synchronization publishes the
        // connection.)
        c.meta.backend.gauges.add(lane, IDLE, 1);
        self.queue.push(c).inspect_err(|c| {
            c.meta.backend.gauges.sub(lane, IDLE, 1);
        })
    }

    #[inline]
    pub(crate) fn pop(&self, lane: Lane) -> Option<Conn<C>> {
        let c = self.queue.pop()?;
        c.meta.backend.gauges.sub(lane, IDLE, 1);
        Some(c)
    }

    /// Pops a connection and leaves its backend's idle gauge to the caller (the hit path
    /// moves it from idle to lent in one update).
    #[inline]
    pub(crate) fn pop_raw(&self) -> Option<Conn<C>> {
        self.queue.pop()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_idle_limit_is_the_timeout_in_nanoseconds() {
        assert_eq!(IdleLimit::new(None), IdleLimit::NONE);
        assert_eq!(
            IdleLimit::new(Some(Duration::from_millis(1500))).0,
            1_500_000_000
        );
        assert_eq!(IdleLimit::new(Some(Duration::ZERO)).0, 0);
        // Beyond u64 nanoseconds (584 years) no connection can be idle that long: none.
        assert_eq!(IdleLimit::new(Some(Duration::MAX)), IdleLimit::NONE);
    }
}
