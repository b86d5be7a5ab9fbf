//! The runtime-agnostic engine: admission, the idle queue, the `size`/`in_use` gauges and
//! the closed flag, with the paths that move a connection between them: the return path
//! (push, then release), the close handshake, the fail-fast take, the shrink and purge
//! passes, and the guards that own a permit or a connect in progress.
//!
//! Nothing here needs tokio: [`PoolInner`](crate::pool::PoolInner) wraps an `Engine` with
//! the manager, timers, counters and events (through [`Hooks`]), and the loom models in
//! `loom-tests` drive the same `Engine` directly (through `crate::__loom`), so they check
//! this code and not a copy of it.
//!
//! # Synchronization
//!
//! - `size` counts open connections (idle, lent, being opened or checked); it is raised
//!   *before* a connect starts ([`Opening`]) and lowered when a connection is closed, so it
//!   never under-counts. It changes only when a connection opens or closes, and all of its
//!   accesses are SeqCst: it takes part in the shrink and close handshakes below. `in_use`
//!   counts lent connections, a gauge (Relaxed); `in_use` (like the
//!   backends' `idle` and `in_use` and the `hits` counter, written by every get and return)
//!   is [`Striped`] over cache lines so that cores do not pull one line back and forth.
//! - Admission (see `admission.rs`) bounds the connections outside the idle queue; the idle
//!   queue's own Release/Acquire publishes a connection from the returner to the getter, and
//!   the permit's release/acquire (SeqCst RMW chain) orders the push before the getter's pop.
//! - `closed` is swapped SeqCst by [`Engine::close`] *before* it drains the idle queue, and
//!   loaded SeqCst by [`Engine::requeue`] *after* it pushes: one of the two always sees the
//!   other, so no connection is left in the queue of a closed pool.
//! - Likewise `resize` swaps `max` SeqCst *before* it closes idle connections above the new
//!   size, and [`Engine::requeue`] loads `max` and `size` SeqCst *after* it pushes: a
//!   connection returned during a shrink is closed by one side or the other.
//! - Under loom, whose `SeqCst` accesses are only `AcqRel`, each handshake's load half also
//!   passes `sync::handshake_fence` (a no-op otherwise; see `sync.rs`).

use std::time::Duration;

use crate::admission::Admission;
use crate::backends::BackendEntry;
use crate::events::CloseReason;
use crate::idle::{Conn, IdleQueue, LazyNow, Meta};
use crate::stats::Striped;
use crate::sync::{
    handshake_fence, AtomicBool, AtomicUsize, CachePadded, Instant, Ordering, WaitQueue,
};

/// What the engine asks of its owner: the pool implements it with the manager, counters,
/// logs and events; the loom models with a recorder.
pub(crate) trait Hooks<C> {
    /// `conn` is being closed for `reason`: drop it (containing a panic in its `Drop`),
    /// count it, log and event it. The engine lowers the gauges afterwards.
    fn on_close(&self, conn: C, meta: &Meta, reason: CloseReason);
    /// May `conn` go back to the idle queue (`Manager::is_reusable`, panic contained)?
    fn is_reusable(&self, conn: &mut C) -> bool;
    /// Does anything read a returned connection's `last_used` (an idle timeout, an
    /// idle-based check on borrow, keepalive)? If not, the return path reads no clock.
    fn stamps_returns(&self) -> bool {
        true
    }
}

/// Admission + idle queue + gauges + closed flag. See the module docs.
pub(crate) struct Engine<C> {
    pub(crate) admission: Admission,
    pub(crate) idle: IdleQueue<C>,
    size: CachePadded<AtomicUsize>,
    /// Written by every get and return: striped (see [`Striped`]).
    pub(crate) in_use: Striped,
    max_idle: AtomicUsize,
    closed: AtomicBool,
    /// Notified whenever a connection closes after the pool closed (`drained` waits on it).
    drained: WaitQueue,
}

impl<C> Engine<C> {
    /// `max_size` permits, an idle queue of `capacity` (the fixed `max_size_limit`).
    pub(crate) fn new(max_size: usize, capacity: usize, max_idle: usize) -> Self {
        Engine {
            admission: Admission::new(max_size),
            idle: IdleQueue::new(capacity),
            size: CachePadded::new(AtomicUsize::new(0)),
            in_use: Striped::default(),
            max_idle: AtomicUsize::new(max_idle),
            closed: AtomicBool::new(false),
            drained: WaitQueue::new(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        // SeqCst: the load half of the close handshake (see the module docs).
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn size(&self) -> usize {
        // SeqCst: the load half of the shrink handshake (`shrink_idle` after `resize` swapped
        // `max`) and of the close handshake (`close` looking for a last connection). All of
        // `size`'s changes are SeqCst too, so such a load sees every open and close that
        // precedes it in the one total order; a Relaxed read could miss the connection a
        // concurrent return just pushed. Only opens and closes change `size` (not the hit
        // path), and on x86 these are the same instructions as Relaxed ones.
        self.size.load(Ordering::SeqCst)
    }

    fn max_idle(&self) -> usize {
        // Relaxed: a limit set by `resize`; a stale value only keeps one more idle connection
        // for one return.
        self.max_idle.load(Ordering::Relaxed)
    }

    /// Does the idle queue already hold `max_idle` connections (so a returning one closes)?
    /// Only looks at the queue (whose length reads both of its contended ends) when `size`
    /// says it could: the returning connection counts in `size` and is not queued, so while
    /// `size <= max_idle` the queue holds fewer than `max_idle`.
    fn idle_full(&self) -> bool {
        let max_idle = self.max_idle();
        self.size() > max_idle && self.idle.len() >= max_idle
    }

    /// Lowers `size` by one; the last close after the pool closed wakes `drained`.
    fn size_sub(&self) {
        // SeqCst: orders the connection's drop before a `drained` that sees the new size
        // (Release half), and is the store half of the close handshake with `close`.
        let before = self.size.fetch_sub(1, Ordering::SeqCst);
        handshake_fence();
        if before == 1 && self.is_closed() {
            self.drained.notify(usize::MAX);
        }
    }

    /// Resolves once every connection is closed (after [`close`](Self::close)).
    pub(crate) async fn drained(&self) {
        loop {
            let listener = self.drained.listen();
            handshake_fence();
            // SeqCst: pairs with `size_sub` (Acquire half: the connections' drops are done).
            if self.size.load(Ordering::SeqCst) == 0 {
                return;
            }
            listener.await;
        }
    }

    /// Raises `size` (and the backend's) for a connect about to start; see [`Opening`].
    pub(crate) fn opening<'a>(&'a self, backend: &'a BackendEntry) -> Opening<'a, C> {
        // SeqCst: see `size` (the shrink handshake reads it). Relaxed: a per-backend gauge.
        self.size.fetch_add(1, Ordering::SeqCst);
        backend.size.fetch_add(1, Ordering::Relaxed);
        Opening {
            engine: self,
            backend,
            armed: true,
        }
    }

    /// Closes a connection that is out of the queue and not lent.
    pub(crate) fn close_conn(&self, c: Conn<C>, reason: CloseReason, h: &impl Hooks<C>) {
        let Conn { conn, meta } = c;
        h.on_close(conn, &meta, reason);
        // Relaxed: a gauge.
        meta.backend.size.fetch_sub(1, Ordering::Relaxed);
        self.size_sub();
    }

    /// Marks a connection lent.
    pub(crate) fn lend(&self, c: Conn<C>) -> Conn<C> {
        // Relaxed: gauges.
        self.in_use.add(1);
        c.meta.backend.in_use.add(1);
        c
    }

    /// A lent connection stops being lent (returned, discarded or detached).
    fn unlend(&self, c: &Conn<C>) {
        // Relaxed: gauges.
        self.in_use.sub(1);
        c.meta.backend.in_use.sub(1);
    }

    /// Pops idle connections until one may be handed out, closing the stale ones on the way
    /// (removed backend, past `max_lifetime` or `idle_timeout`). The caller holds a permit.
    pub(crate) fn pop_fresh(
        &self,
        now: &mut LazyNow,
        idle_timeout: Option<Duration>,
        h: &impl Hooks<C>,
    ) -> Option<Conn<C>> {
        while let Some(c) = self.idle.pop() {
            match c.meta.stale_reason(now, idle_timeout) {
                Some(reason) => self.close_conn(c, reason, h),
                None => return Some(c),
            }
        }
        None
    }

    /// The fail-fast take (`try_get`): a free permit (behind any waiters) and a fresh idle
    /// connection, lent; or `None`, having taken nothing. Never waits, never dials.
    pub(crate) fn try_take(
        &self,
        now: &mut LazyNow,
        idle_timeout: Option<Duration>,
        h: &impl Hooks<C>,
    ) -> Option<Conn<C>> {
        if !self.admission.try_acquire_fair() {
            return None;
        }
        let permit = Permit::new(&self.admission);
        if let Some(c) = self.pop_fresh(now, idle_timeout, h) {
            permit.disarm();
            return Some(self.lend(c));
        }
        #[cfg(connpool_mutant = "try_get_leaks_permit")]
        permit.disarm();
        #[cfg(not(connpool_mutant = "try_get_leaks_permit"))]
        drop(permit);
        None
    }

    /// The return path of a lent connection (`Pooled::drop`). Never blocks. Closes it if it
    /// may not be reused; else pushes it to the idle queue, *then* releases its permit, so a
    /// waiter woken by the release finds it.
    pub(crate) fn give_back(&self, mut c: Conn<C>, panicking: bool, h: &impl Hooks<C>) {
        self.unlend(&c);
        let mut now = LazyNow::new();
        let reason = if panicking {
            Some(CloseReason::Panicked)
        } else if self.is_closed() {
            Some(CloseReason::PoolClosed)
        } else if c.meta.backend.is_removed() {
            Some(CloseReason::BackendGone)
        } else if c.meta.expired(&mut now) {
            Some(CloseReason::Lifetime)
        } else if !h.is_reusable(&mut c.conn) {
            Some(CloseReason::NotReusable)
        } else if self.size() > self.admission.max() {
            Some(CloseReason::Shrunk)
        } else if self.idle_full() {
            Some(CloseReason::IdleFull)
        } else {
            None
        };
        match reason {
            Some(r) => self.close_conn(c, r, h),
            None => {
                if h.stamps_returns() {
                    c.meta.last_used = now.get();
                }
                #[cfg(not(connpool_mutant = "release_before_push"))]
                self.requeue(c, h);
                #[cfg(connpool_mutant = "release_before_push")]
                {
                    self.admission.release();
                    self.requeue(c, h);
                    return;
                }
            }
        }
        // After the push: a woken waiter finds the connection.
        self.admission.release();
    }

    /// `Pooled::discard`: closes a lent connection and frees its permit.
    pub(crate) fn discard(&self, c: Conn<C>, h: &impl Hooks<C>) {
        self.unlend(&c);
        self.close_conn(c, CloseReason::Discarded, h);
        self.admission.release();
    }

    /// `Pooled::detach`: the pool forgets a lent connection and frees its permit.
    pub(crate) fn detach(&self, c: Conn<C>) -> C {
        self.unlend(&c);
        // Relaxed: a gauge.
        c.meta.backend.size.fetch_sub(1, Ordering::Relaxed);
        self.size_sub();
        self.admission.release();
        c.conn
    }

    /// Puts a healthy connection back in the idle queue (closing it if the queue is full),
    /// then makes sure a pool closed meanwhile does not keep it.
    pub(crate) fn requeue(&self, c: Conn<C>, h: &impl Hooks<C>) {
        if let Err(c) = self.idle.push(c) {
            self.close_conn(c, CloseReason::IdleFull, h);
        }
        handshake_fence();
        // SeqCst: the load half of the close handshake; if `close` drained before our push,
        // we see `closed` here and drain what we pushed.
        #[cfg(not(connpool_mutant = "close_no_recheck"))]
        if self.is_closed() {
            self.drain_idle(CloseReason::PoolClosed, h);
            return;
        }
        // The load half of the shrink handshake, likewise: a `resize` that lowered `max` after
        // our caller checked it may have found the queue empty before our push; then we close
        // what is above the new size (found by loom, `resize_down_races_get_return`).
        #[cfg(not(connpool_mutant = "shrink_no_recheck"))]
        self.shrink_idle(h);
    }

    /// Closes idle connections while the pool is above `max_size`.
    fn shrink_idle(&self, h: &impl Hooks<C>) {
        while self.size() > self.admission.max() {
            match self.idle.pop() {
                Some(c) => self.close_conn(c, CloseReason::Shrunk, h),
                None => break,
            }
        }
    }

    /// Closes every idle connection.
    pub(crate) fn drain_idle(&self, reason: CloseReason, h: &impl Hooks<C>) {
        while let Some(c) = self.idle.pop() {
            self.close_conn(c, reason, h);
        }
    }

    /// Changes the number of permits and the idle cap, then closes idle connections while
    /// the pool is above its new size (lent ones above it close as they come back).
    pub(crate) fn resize(&self, max_size: usize, max_idle: usize, h: &impl Hooks<C>) {
        self.admission.resize(max_size);
        // Relaxed: a limit read by the return path; a stale value only keeps one more idle
        // connection for one return.
        self.max_idle.store(max_idle, Ordering::Relaxed);
        // The store half of the shrink handshake was the swap of `max` in `resize`.
        handshake_fence();
        self.shrink_idle(h);
    }

    /// Closes the idle connections that went stale (removed backends, above all). Holds a
    /// permit while it has connections out of the queue, so they stay within the hard bound;
    /// when no permit is free, the getters that pop them close them instead.
    pub(crate) fn purge_stale(
        &self,
        now: Instant,
        idle_timeout: Option<Duration>,
        h: &impl Hooks<C>,
    ) {
        let n = self.idle.len();
        if n == 0 || !self.admission.try_acquire() {
            return;
        }
        let _permit = Permit::new(&self.admission);
        let mut now = LazyNow::at(now);
        for _ in 0..n {
            let Some(c) = self.idle.pop() else { break };
            match c.meta.stale_reason(&mut now, idle_timeout) {
                Some(reason) => self.close_conn(c, reason, h),
                None => self.requeue(c, h),
            }
        }
    }

    /// The synchronous part of closing: every waiter and later acquire sees `Closed`; idle
    /// connections close now, lent ones on return. `false` if it was closed already.
    pub(crate) fn close(&self, h: &impl Hooks<C>) -> bool {
        // SeqCst: the store half of the close handshake (see the module docs).
        if self.closed.swap(true, Ordering::SeqCst) {
            return false;
        }
        handshake_fence();
        self.admission.close();
        self.drain_idle(CloseReason::PoolClosed, h);
        if self.size() == 0 {
            self.drained.notify(usize::MAX);
        }
        true
    }
}

/// A permit owned by a get in progress (or a background pass): released on drop (which
/// wakes one waiter) unless handed on with [`disarm`](Self::disarm).
pub(crate) struct Permit<'a> {
    admission: &'a Admission,
    armed: bool,
}

impl<'a> Permit<'a> {
    /// Owns a permit the caller just acquired.
    pub(crate) fn new(admission: &'a Admission) -> Self {
        Permit {
            admission,
            armed: true,
        }
    }

    /// The permit now belongs to a `Pooled` (its drop releases it).
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        #[cfg(not(connpool_mutant = "permit_guard_leaks"))]
        if self.armed {
            self.admission.release();
        }
    }
}

/// A connect in progress: `size` (and the backend's) stay raised while it runs, so the hard
/// bound counts connects in flight; lowered again on drop unless it produced a connection.
pub(crate) struct Opening<'a, C> {
    engine: &'a Engine<C>,
    backend: &'a BackendEntry,
    armed: bool,
}

impl<C> Opening<'_, C> {
    /// The connect succeeded: the connection now counts in `size` on its own.
    pub(crate) fn opened(mut self) {
        self.armed = false;
    }
}

impl<C> Drop for Opening<'_, C> {
    fn drop(&mut self) {
        #[cfg(not(connpool_mutant = "opening_leaks_size"))]
        if self.armed {
            // Relaxed: a gauge.
            self.backend.size.fetch_sub(1, Ordering::Relaxed);
            self.engine.size_sub();
        }
    }
}
