//! The idle queue: an `ArrayQueue` of connections with their bookkeeping.
//!
//! The queue's capacity is `max_size_limit`, fixed at build time, so `set_max_size` never
//! reallocates it. Push and pop are lock-free and allocate nothing. The queue is FIFO: a
//! returned connection goes to the back, so every idle connection is used (and so kept warm)
//! in turn, and the maintenance scan sees the oldest first.

use std::time::Duration;

use crate::backends::BackendEntry;
use crate::events::CloseReason;
use crate::sync::{Arc, ArrayQueue, Instant};

/// A connection and what the pool knows about it. Travels with the connection between the
/// idle queue and its `Pooled` guard.
pub(crate) struct Conn<C> {
    pub(crate) conn: C,
    pub(crate) meta: Meta,
}

/// A connection's bookkeeping.
pub(crate) struct Meta {
    pub(crate) backend: Arc<BackendEntry>,
    pub(crate) created_at: Instant,
    /// `created_at + max_lifetime`, jittered down by up to 2.5 %; `None` = no limit.
    pub(crate) expires_at: Option<Instant>,
    /// When a user last returned it (or when it was opened).
    pub(crate) last_used: Instant,
    /// When a check last passed on it (or when it was opened).
    pub(crate) last_checked: Instant,
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
        let expires_at = max_lifetime.map(|l| now + l.mul_f64(1.0 - fastrand::f64() * 0.025));
        Meta {
            backend,
            created_at: now,
            expires_at,
            last_used: now,
            last_checked: now,
            failed_checks: 0,
        }
    }

    /// Outlived `max_lifetime`? Reads the clock only if the connection has a lifetime.
    pub(crate) fn expired(&self, now: &mut LazyNow) -> bool {
        self.expires_at.is_some_and(|at| now.get() >= at)
    }

    /// Idle past `idle_timeout`? Reads the clock only if there is an idle timeout.
    pub(crate) fn idle_too_long(&self, now: &mut LazyNow, idle_timeout: Option<Duration>) -> bool {
        idle_timeout.is_some_and(|t| now.get().saturating_duration_since(self.last_used) >= t)
    }

    /// Why this idle connection may not be handed out, if it may not: its backend left the
    /// list, it outlived `max_lifetime`, or it sat idle past `idle_timeout`.
    pub(crate) fn stale_reason(
        &self,
        now: &mut LazyNow,
        idle_timeout: Option<Duration>,
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
        now.saturating_duration_since(self.last_used.max(self.last_checked))
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
    pub(crate) fn push(&self, c: Conn<C>) -> Result<(), Conn<C>> {
        // Count it idle before it becomes visible, so the total never dips below zero.
        // Relaxed: a gauge; the queue's own synchronization publishes the connection.
        c.meta.backend.idle.add(1);
        self.queue.push(c).inspect_err(|c| {
            c.meta.backend.idle.sub(1);
        })
    }

    pub(crate) fn pop(&self) -> Option<Conn<C>> {
        let c = self.queue.pop()?;
        // Relaxed: a gauge.
        c.meta.backend.idle.sub(1);
        Some(c)
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}
