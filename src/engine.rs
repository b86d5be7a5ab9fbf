//! The runtime-agnostic engine: the idle queue, the capacity count, the waiters and the
//! hand-off, and the paths that move a connection between them: the hit, the return, the
//! hand-off to a waiter, close, resize and purge, and the gauges they keep.
//!
//! Nothing here needs tokio: [`PoolInner`](crate::pool::PoolInner) wraps an `Engine` with
//! the manager, timers, counters and events (through [`Hooks`]), and the loom models in
//! `loom-tests` drive the same `Engine` directly (through `crate::__loom`), so they check
//! this code and not a copy of it.
//!
//! # Admission: what a get takes
//!
//! A get is admitted with one *unit* of capacity ([`Token`]): an idle connection popped from
//! the idle queue (the hit), or a *slot* reserved in `size` for a connection it will open.
//! `size` counts open connections plus reserved slots; a slot is reserved by a CAS that
//! refuses at `max_size` ([`Engine::try_reserve`]), which is the hard bound: a hit does not
//! change `size`, so it needs no permit of its own. A hit is one pop from the queue and a
//! return one push, with gauges in per-thread lanes (see `lanes.rs`): no shared counter is
//! written, and no clock is read unless a lifetime, an idle timeout or an idle-based check on
//! borrow needs one (then once per get or return; see `LazyNow`).
//!
//! Nobody takes the fast path while others are queued: a newcomer that sees waiters queues
//! behind them, so freed units go to waiters in arrival order.
//!
//! # Returning and handing off
//!
//! [`Engine::give`] puts a unit back: with waiters queued it hands the unit to the oldest
//! waiter's slot and notifies that waiter, which then owns the unit (see `admission.rs`);
//! with nobody queued it *puts* the unit (a connection to the idle queue, a slot back to
//! `size`), then re-loads the waiting word: if a waiter registered meanwhile, its re-check may
//! have run before the unit arrived, so the return takes a unit back and hands it off.
//!
//! # Synchronization
//!
//! Four store-load handshakes, each between a return (or a closing connection) that *puts*
//! a unit and then loads a flag, and a slow path that *writes* the flag, fences, and then looks
//! for units:
//!
//! | put, then load (return path) | write, fence, then look (slow path) |
//! |---|---|
//! | the waiting word ([`Engine::give`]) | a waiter's registration and re-check |
//! | `closed` ([`Engine::give`]) | [`Engine::close`]'s swap and drain |
//! | `max` ([`Engine::give`]'s shrink re-check) | [`Engine::resize`]'s swap and shrink |
//! | `size`/`max` when a slot is freed | a waiter's re-check ([`Engine::try_reserve`]) |
//!
//! The put is a SeqCst read-modify-write: `size`'s `fetch_sub` for a slot, and for a
//! connection the tail CAS inside `ArrayQueue::push`, which crossbeam performs SeqCst (see
//! `IdleQueue`; checked by `tests/dependency_contract.rs`). The loads after it are SeqCst, the
//! slow side's write is a SeqCst RMW followed by a SeqCst fence. So in the single total order of
//! SeqCst operations either the return's load comes after the flag's write (and sees it), or
//! the slow side's fence comes after the put, and its loads (the queue's tail, `size`) see the
//! unit. No wake-up is lost, no connection is stranded in a closed pool, no idle connection
//! outlives a shrink, and the hot return path pays no fence of its own. (Under loom, which
//! models SeqCst accesses only as AcqRel and does not see inside `ArrayQueue`, the return
//! path's [`handshake_fence`] stands in for the push's SeqCst CAS.)
//!
//! A connection's contents are published from its returner to its next user by the idle
//! queue's own Release/Acquire, or, handed to a waiter, by the Release/Acquire of the slot's
//! move to `HANDED` (see `admission.rs`).

use std::future::Future;
use std::pin::Pin;

use crate::admission::{Admission, Queued, Waiting, Wake};
use crate::backends::{BackendEntry, IDLE, IN_USE};
use crate::events::CloseReason;
use crate::idle::{Conn, IdleLimit, IdleQueue, LazyNow, Meta, Token};
use crate::lanes::{Cells, Lane};
use crate::sync::{
    fence_seqcst, handshake_fence, AtomicBool, AtomicU64, AtomicUsize, CachePadded, Instant,
    Ordering, WaitQueue,
};

/// What the engine asks of its owner: the pool implements it with the manager, counters,
/// logs and events; the loom models with a recorder.
pub(crate) trait Hooks<C> {
    /// `conn` is being closed for `reason`: drop it (containing a panic in its `Drop`),
    /// count it, log and event it. The engine lowers the gauges afterwards.
    fn on_close(&self, conn: C, meta: &Meta, reason: CloseReason);
    /// May `conn` go back to the idle queue (`Manager::is_reusable`, panic contained)?
    fn is_reusable(&self, conn: &mut C) -> bool;
    /// A lent connection is leaving the pool for good (`Pooled::detach`): count, log and
    /// event it. The engine lowers the gauges.
    fn on_detach(&self, _meta: &Meta) {}
    /// Does anything read a returned connection's `last_used` (an idle timeout, an
    /// idle-based check on borrow, keepalive)? If not, the return path reads no clock.
    fn stamps_returns(&self) -> bool {
        true
    }
    /// A timer for waiters (tokio's for the pool; one that never fires for the models).
    type Sleep: Future<Output = ()>;
    /// A timer that fires at `at`.
    fn sleep_until(&self, at: Instant) -> Self::Sleep;
}

/// Why a wait in line ended without a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitError {
    /// The pool closed.
    Closed,
    /// The deadline passed.
    TimedOut,
}

/// [`Engine::gauges`]: lent connections.
const LENT: usize = 0;
/// [`Engine::gauges`]: lends of connections that were open already, ever (`Stats::hits`). A
/// new connection's lend is not counted here but in `Stats::misses`: two counters that each
/// only grow, so `gets = hits + misses` only grows too, and no snapshot can count a get as
/// a hit that a later one counts as a miss.
const HITS: usize = 1;

/// Limits read by every return and written only by `resize` and `close`: one line, shared
/// read-only in the steady state.
struct Limits {
    /// `max_size` (low 32 bits) and `max_idle` (high 32 bits) in one word, so that a
    /// `resize` sets both in one swap: two resizes at once cannot leave one's `max_size` with
    /// the other's `max_idle` (as two separate stores could).
    sizes: AtomicU64,
    closed: AtomicBool,
}

/// [`Limits::sizes`] of `max_size` and `max_idle` (each at most `max_size_limit`, far below
/// 2^32; a larger value saturates rather than wrap).
fn pack_sizes(max_size: usize, max_idle: usize) -> u64 {
    let half = |n: usize| u64::from(u32::try_from(n).unwrap_or(u32::MAX));
    half(max_size) | (half(max_idle) << 32)
}

/// `max_size` from [`Limits::sizes`].
fn max_of(sizes: u64) -> usize {
    (sizes & u64::from(u32::MAX)) as usize
}

/// `max_idle` from [`Limits::sizes`].
fn max_idle_of(sizes: u64) -> usize {
    (sizes >> 32) as usize
}

/// Idle queue + capacity + waiters + hand-off + gauges. See the module docs.
pub(crate) struct Engine<C> {
    pub(crate) idle: IdleQueue<C>,
    /// Open connections plus reserved slots. Changes only when a connection opens or
    /// closes (or a slot is reserved or given back), never on a hit; all of its accesses are
    /// SeqCst (it takes part in the handshakes).
    size: CachePadded<AtomicUsize>,
    limits: CachePadded<Limits>,
    admission: Admission<C>,
    /// Lent connections ([`LENT`]) and hits ever ([`HITS`]), in per-thread lanes.
    gauges: Cells<2>,
    /// Notified whenever a connection closes after the pool closed (`drained` waits on it).
    drained: WaitQueue,
}

impl<C> Engine<C> {
    /// `max_size` units, an idle queue of `capacity` (the fixed `max_size_limit`).
    pub(crate) fn new(max_size: usize, capacity: usize, max_idle: usize) -> Self {
        Engine {
            idle: IdleQueue::new(capacity),
            size: CachePadded::new(AtomicUsize::new(0)),
            limits: CachePadded::new(Limits {
                sizes: AtomicU64::new(pack_sizes(max_size, max_idle)),
                closed: AtomicBool::new(false),
            }),
            admission: Admission::new(),
            gauges: Cells::default(),
            drained: WaitQueue::new(),
        }
    }

    // ----- gauges and limits ------------------------------------------------------------

    pub(crate) fn is_closed(&self) -> bool {
        // SeqCst: the load half of the close handshake (see the module docs).
        self.limits.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn size(&self) -> usize {
        // SeqCst: the load half of the shrink and slot handshakes (see the module docs).
        self.size.load(Ordering::SeqCst)
    }

    pub(crate) fn max(&self) -> usize {
        // SeqCst: the load half of the shrink handshake; a plain load on x86.
        max_of(self.limits.sizes.load(Ordering::SeqCst))
    }

    fn max_idle(&self) -> usize {
        // Relaxed: a limit set by `resize`; a stale value only keeps one more idle connection
        // for one return.
        max_idle_of(self.limits.sizes.load(Ordering::Relaxed))
    }

    /// Queued waiters (a gauge).
    pub(crate) fn waiters(&self) -> usize {
        self.admission.waiters()
    }

    /// The timer duty's walk (see `admission.rs`), for the models.
    #[cfg(loom)]
    pub(crate) fn expire_due(&self, now: Instant) -> Option<Instant> {
        self.admission.expire_due(now)
    }

    /// Blocks the model thread until a waiter holds the timer duty.
    #[cfg(loom)]
    pub(crate) fn wait_for_duty(&self) {
        self.admission.wait_for_duty();
    }

    /// Does a waiter hold the timer duty (for the models)?
    #[cfg(loom)]
    pub(crate) fn duty_held(&self) -> bool {
        self.admission.duty_held()
    }

    /// Lent connections (a gauge).
    pub(crate) fn in_use(&self) -> usize {
        self.gauges.gauge(LENT)
    }

    /// Gets served by a connection that was open already, ever.
    pub(crate) fn hits(&self) -> u64 {
        self.gauges.sum(HITS)
    }

    /// Does the idle queue already hold `max_idle` connections (so a returning one closes)?
    /// Only looks at the queue (whose length reads both of its contended ends) when `size`
    /// says it could: the returning connection counts in `size` and is not queued, so while
    /// `size <= max_idle` the queue holds fewer than `max_idle`.
    #[inline]
    fn idle_full(&self) -> bool {
        let max_idle = self.max_idle();
        self.size() > max_idle && self.idle.len() >= max_idle
    }

    // ----- taking -----------------------------------------------------------------------

    /// Nobody queued: the fast path may take a unit.
    #[inline]
    pub(crate) fn no_waiters(&self) -> bool {
        self.admission.is_empty()
    }

    /// Reserves a slot for a new connection if `size < max_size`. Never waits.
    pub(crate) fn try_reserve(&self) -> bool {
        #[cfg(connpool_mutant = "reserve_not_cas")]
        {
            // Mutant: check-then-store instead of a CAS; two reservers can take one slot.
            let cur = self.size();
            if cur >= self.max() {
                return false;
            }
            self.size.store(cur + 1, Ordering::SeqCst);
            return true;
        }
        // SeqCst: the load half of the slot handshake (a waiter's re-check after its
        // registration and fence): a Relaxed read could return a stale `size` and miss the
        // slot a closing connection just gave back.
        let mut cur = self.size();
        loop {
            if cur >= self.max() {
                return false;
            }
            // SeqCst: a change of `size` like any other (see the field); on failure the
            // value read decides the next try, so it is part of the handshake too.
            match self
                .size
                .compare_exchange_weak(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// A unit if one is there now: an idle connection (as it is: the taker checks it), else
    /// a free slot.
    fn take(&self, lane: Lane) -> Option<Token<C>> {
        if let Some(c) = self.idle.pop(lane) {
            return Some(Token::Conn(c));
        }
        self.try_reserve().then_some(Token::Slot)
    }

    /// Waits in line for a unit until `deadline` (`None`: no limit). `shared`: the deadline
    /// is the pool's shared one (start + `wait_timeout`), kept by the line's one timer; else
    /// this waiter arms a timer of its own (see `admission.rs`). Cancel-safe: dropped before it
    /// resolves, it takes nothing (a unit handed to it meanwhile is passed on to the next
    /// waiter).
    pub(crate) async fn acquire<H: Hooks<C>>(
        &self,
        h: &H,
        deadline: Option<Instant>,
        shared: bool,
    ) -> Result<Token<C>, WaitError> {
        if self.is_closed() {
            return Err(WaitError::Closed);
        }
        // In line first, then counted, then the re-check (see `admission.rs`).
        let waiter = Waiter {
            engine: self,
            hooks: h,
            queued: Queued::new(&self.admission, deadline.filter(|_| shared)),
        };
        #[cfg(not(connpool_mutant = "no_recheck"))]
        if let Some(t) = self.take(Lane::current()) {
            return Ok(t);
        }
        // The one timer this waiter may have armed: its own deadline (not shared), or the
        // line's next shared deadline while it holds the timer duty. Boxed when armed (rare:
        // most waiters arm none), so that a wait's future stays small.
        let mut timer: Option<Pin<Box<H::Sleep>>> = None;
        let mut armed_for = None;
        loop {
            if self.is_closed() {
                return Err(WaitError::Closed);
            }
            // Listen, then look (at the slot and at the duty): a hand-off, or a holder's
            // nudge to take the duty over, that came before the listener existed shows in the
            // slot's state or in the duty's flag. The listener lives in this future (no
            // allocation).
            event_listener::listener!(waiter.queued.event() => listener);
            // Holding the duty (only a shared waiter takes it): expire what is due, then watch
            // the next shared deadline; else a shared waiter watches nothing, and any other
            // its own deadline.
            let want = if waiter.queued.take_duty() {
                self.admission.expire_due(Instant::now())
            } else if shared {
                None
            } else {
                deadline
            };
            if want != armed_for {
                timer = want.map(|at| Box::pin(h.sleep_until(at)));
                armed_for = want;
            }
            if waiter.queued.wake() == Wake::Waiting {
                let fired = std::future::poll_fn(|cx| {
                    if std::pin::Pin::new(&mut listener).poll(cx).is_ready() {
                        return std::task::Poll::Ready(false);
                    }
                    match timer.as_mut() {
                        Some(t) => t.as_mut().poll(cx).map(|()| true),
                        None => std::task::Poll::Pending,
                    }
                })
                .await;
                if fired {
                    armed_for = None;
                    timer = None;
                    if !shared && deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(WaitError::TimedOut);
                    }
                    // The duty's timer: the next pass expires what is due.
                }
            }
            match waiter.queued.wake() {
                Wake::Waiting => {}
                Wake::Closed => return Err(WaitError::Closed),
                Wake::Expired => return Err(WaitError::TimedOut),
                Wake::Handed => return Ok(waiter.queued.take_unit()),
            }
        }
    }

    /// An idle connection that may be handed out, popping (and closing) stale ones on the
    /// way: removed backend, past `max_lifetime` or `idle_timeout`.
    #[inline]
    pub(crate) fn pop_fresh(
        &self,
        now: &mut LazyNow,
        idle_timeout: IdleLimit,
        lane: Lane,
        h: &impl Hooks<C>,
    ) -> Option<Conn<C>> {
        while let Some(c) = self.idle.pop(lane) {
            match c.meta.stale_reason(now, idle_timeout) {
                Some(reason) => self.close_conn(c, reason, h),
                None => return Some(c),
            }
        }
        None
    }

    /// The hit: a fresh idle connection, lent, in one gauge update per line (stale ones on the
    /// way are closed). `None` when the queue has none. `fresh_enough` says whether it may be
    /// lent as it is (no check on borrow due); if not, it is returned unlent in `Err`.
    #[inline]
    pub(crate) fn hit(
        &self,
        now: &mut LazyNow,
        idle_timeout: IdleLimit,
        lane: Lane,
        h: &impl Hooks<C>,
        fresh_enough: impl Fn(&Meta, &mut LazyNow) -> bool,
    ) -> Option<Result<Conn<C>, Conn<C>>> {
        loop {
            let c = self.idle.pop_raw()?;
            if let Some(reason) = c.meta.stale_reason(now, idle_timeout) {
                c.meta.backend.gauges.sub(lane, IDLE, 1);
                self.close_conn(c, reason, h);
                continue;
            }
            if !fresh_enough(&c.meta, now) {
                c.meta.backend.gauges.sub(lane, IDLE, 1);
                return Some(Err(c));
            }
            // Idle to lent: one update of the backend's line, one of the engine's.
            c.meta
                .backend
                .gauges
                .add_all(lane, [1u64.wrapping_neg(), 1]);
            self.gauges.add_all(lane, [1, 1]);
            return Some(Ok(c));
        }
    }

    /// The fail-fast take (`try_get`): an idle connection if nobody waits, lent; never dials.
    /// A connection whose last (background) check failed may not be lent unchecked, and a
    /// take that never waits cannot check: such connections are set aside while it looks
    /// further, and given back (to a waiter, or the idle queue) once it is done.
    pub(crate) fn try_take(
        &self,
        now: &mut LazyNow,
        idle_timeout: IdleLimit,
        h: &impl Hooks<C>,
    ) -> Option<Conn<C>> {
        if !self.no_waiters() {
            return None;
        }
        let lane = Lane::current();
        let mut suspect = Vec::new();
        let found = loop {
            match self.hit(now, idle_timeout, lane, h, |m, _| m.failed_checks == 0) {
                Some(Ok(c)) => break Some(c),
                Some(Err(c)) => suspect.push(c),
                None => break None,
            }
        };
        for c in suspect {
            self.give_in(Token::Conn(c), lane, h);
        }
        found
    }

    /// Why a connection abandoned mid-use (a check or a connect cut short) is closed: because
    /// the pool closed, if it did (a get or a maintenance pass abandoned for `close()`), else
    /// because its get was cancelled or ran out of time.
    pub(crate) fn abandoned(&self) -> CloseReason {
        if self.is_closed() {
            CloseReason::PoolClosed
        } else {
            CloseReason::Cancelled
        }
    }

    /// Marks a connection that was open already lent (a hit).
    #[inline]
    pub(crate) fn lend(&self, c: Conn<C>, lane: Lane) -> Conn<C> {
        self.gauges.add_all(lane, [1, 1]);
        c.meta.backend.gauges.add(lane, IN_USE, 1);
        c
    }

    /// Marks a new connection lent (a miss: counted by the caller in `Stats::misses`).
    pub(crate) fn lend_new(&self, c: Conn<C>, lane: Lane) -> Conn<C> {
        self.gauges.add(lane, LENT, 1);
        c.meta.backend.gauges.add(lane, IN_USE, 1);
        c
    }

    /// A lent connection stops being lent (returned, discarded or detached).
    #[inline]
    fn unlend(&self, c: &Conn<C>, lane: Lane) {
        self.gauges.sub(lane, LENT, 1);
        c.meta.backend.gauges.sub(lane, IN_USE, 1);
    }

    // ----- giving back ------------------------------------------------------------------

    /// The return path of a lent connection (`Pooled::drop`). Never blocks. Closes it if it
    /// may not be reused; else gives it back (to a waiter, or the idle queue).
    #[inline]
    pub(crate) fn give_back(&self, mut c: Conn<C>, panicking: bool, h: &impl Hooks<C>) {
        let lane = Lane::current();
        self.unlend(&c, lane);
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
        } else {
            None
        };
        if let Some(r) = reason {
            self.close_conn(c, r, h);
            return;
        }
        #[cfg(connpool_mutant = "shrunk_return_not_cas")]
        if self.size() > self.max() {
            // Mutant: check, then close (and shed or pass on its unit) on its own.
            self.close_conn(c, CloseReason::Shrunk, h);
            return;
        }
        if self.size() > self.max() {
            // Above its size (a shrink): closed if, at the CAS, the pool still is.
            match self.shed_conn(c, h) {
                Ok(()) => return,
                Err(back) => c = back,
            }
        }
        if self.idle_full() && self.admission.load().waiters() == 0 {
            // Full: closed, unless a get waits for it (the connection then goes to that get,
            // not to the idle queue; should the waiter leave first, it is queued above
            // `max_idle` until the next sweep or return).
            self.close_conn(c, CloseReason::IdleFull, h);
            return;
        }
        if h.stamps_returns() {
            c.meta.set_last_used(now.get());
        }
        self.give_in(Token::Conn(c), lane, h);
    }

    /// `Pooled::discard`: closes a lent connection; its unit goes on.
    pub(crate) fn discard(&self, c: Conn<C>, h: &impl Hooks<C>) {
        self.unlend(&c, Lane::current());
        self.close_conn(c, CloseReason::Discarded, h);
    }

    /// `Pooled::detach`: the pool forgets a lent connection; its unit goes on.
    pub(crate) fn detach(&self, c: Conn<C>, h: &impl Hooks<C>) -> C {
        self.unlend(&c, Lane::current());
        h.on_detach(&c.meta);
        // Relaxed: a gauge.
        c.meta.backend.size.fetch_sub(1, Ordering::Relaxed);
        self.free_unit(h);
        c.into_parts().0
    }

    /// Gives a unit back: to the oldest waiter if any, else to the idle queue (a connection)
    /// or `size` (a slot). See the module docs.
    pub(crate) fn give(&self, t: Token<C>, h: &impl Hooks<C>) {
        self.give_in(t, Lane::current(), h);
    }

    #[inline]
    fn give_in(&self, t: Token<C>, lane: Lane, h: &impl Hooks<C>) {
        // The common case, inline: nobody waits, so the unit is put away; the handshake
        // re-checks after the put rarely find anything to do.
        let before = self.admission.load();
        if before.waiters() == 0 {
            self.put(t, lane, h);
            if let Some(back) = self.after_put(before, lane, h) {
                self.give_slow(back, lane, h);
            }
        } else {
            self.give_slow(t, lane, h);
        }
    }

    /// `give` with waiters about: hand off, or put and re-check, until the unit has a home.
    #[inline(never)]
    fn give_slow(&self, mut t: Token<C>, lane: Lane, h: &impl Hooks<C>) {
        loop {
            let before = self.admission.load();
            if before.waiters() != 0 && !self.is_closed() {
                match self.admission.hand_off(t) {
                    // Its waiter owns it now (a pool closed meanwhile: the waiter sees that,
                    // and gives it back into the closed pool, which closes it).
                    Ok(()) => return,
                    // Nobody left waiting (every counted waiter is served or leaving): put it
                    // away instead.
                    Err(back) => t = back,
                }
            }
            self.put(t, lane, h);
            match self.after_put(before, lane, h) {
                Some(back) => t = back,
                None => return,
            }
        }
    }

    /// The load halves of the handshakes after a put (see the module docs): a pool closed
    /// meanwhile is drained, a shrink is finished, and if a waiter registered since `before`
    /// (its re-check may have missed the unit), a unit is taken back for it (`Some`).
    #[inline]
    fn after_put(&self, before: Waiting, lane: Lane, h: &impl Hooks<C>) -> Option<Token<C>> {
        // The put's SeqCst RMW is the store half of the handshakes (see the module docs).
        handshake_fence();
        #[cfg(not(connpool_mutant = "close_no_recheck"))]
        if self.is_closed() {
            self.drain(h);
            return None;
        }
        // A `resize` that lowered `max` after our caller checked it may have found the
        // queue empty before our push; then we close what is above the new size (found by
        // loom, `resize_down_races_get_return`).
        #[cfg(not(connpool_mutant = "shrink_no_recheck"))]
        if self.size() > self.max() {
            self.shrink_idle(lane, h);
        }
        let after = self.admission.load();
        if !after.registered_since(before) || cfg!(connpool_mutant = "no_epoch_recheck") {
            return None;
        }
        // Someone registered while we worked: take one unit back to hand it off (if there is
        // none, someone has it: done).
        self.take(lane)
    }

    /// Puts a unit away: a connection into the idle queue (closed if the queue is full), a
    /// slot back into `size`.
    #[inline]
    fn put(&self, t: Token<C>, lane: Lane, h: &impl Hooks<C>) {
        match t {
            Token::Conn(c) => {
                if let Err(c) = self.idle.push(c, lane) {
                    self.close_raw(c, CloseReason::IdleFull, h);
                }
            }
            Token::Slot => self.size_sub(),
        }
    }

    /// A unit whose connection was closed (or detached) goes on as a slot: to a waiter, who
    /// will open a connection with it, or back to `size`. Not while the pool is closed or above
    /// its size (a shrink in progress takes the unit).
    pub(crate) fn free_unit(&self, h: &impl Hooks<C>) {
        if self.is_closed() {
            self.size_sub();
            return;
        }
        if let Some(before) = self.try_shed() {
            self.after_shed(before, h);
            return;
        }
        self.give(Token::Slot, h);
    }

    /// Closes `c` as the pool's excess if, at the CAS, the pool is still above its size
    /// ([`try_shed`](Self::try_shed)): two connections at once in a pool one above its size
    /// close one between them, not both. `Err(c)` if it is not above its size (any more).
    fn shed_conn(&self, c: Conn<C>, h: &impl Hooks<C>) -> Result<(), Conn<C>> {
        let Some(before) = self.try_shed() else {
            return Err(c);
        };
        self.close_keep(c, CloseReason::Shrunk, h);
        self.after_shed(before, h);
        Ok(())
    }

    /// Gives one unit up if `size` is above `max_size` *at the decrement* (a CAS): two units
    /// freed at once in a pool one above its size give up one unit between them, and the
    /// other goes on (as a slot, or its connection stays open). (A check of `size > max`
    /// followed by a decrement of its own let both give up their units: `size` fell below
    /// `max_size` with a waiter left unserved, found by loom,
    /// `shrink_sheds_one_unit_per_excess`.) `Some(size before)` if it did; the caller
    /// closes the unit's connection, if any, then calls [`after_shed`](Self::after_shed).
    /// `size` stays at or above `max_size` (so at least 1): the pool's last close never
    /// goes this way.
    fn try_shed(&self) -> Option<usize> {
        #[cfg(connpool_mutant = "shed_not_cas")]
        {
            // Mutant: check, then decrement on its own.
            if self.size() > self.max() {
                return Some(self.size.fetch_sub(1, Ordering::SeqCst));
            }
            return None;
        }
        let mut cur = self.size();
        loop {
            // SeqCst: the load half of the shrink handshake (as in `max`).
            if cur <= self.max() {
                return None;
            }
            // SeqCst: a change of `size` like any other (see the field): the put of a slot
            // (the store half of the slot handshake). On failure the value read decides the
            // next try.
            match self
                .size
                .compare_exchange_weak(cur, cur - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Some(cur),
                Err(actual) => cur = actual,
            }
        }
    }

    /// After [`try_shed`](Self::try_shed) lowered `size` from `before` (and the unit's
    /// connection, if any, is closed).
    fn after_shed(&self, before: usize, h: &impl Hooks<C>) {
        self.after_sub(before);
        // Mutant: the old code had no re-check either (the re-check alone rescues the waiter
        // that two uncoordinated decrements strand).
        #[cfg(any(connpool_mutant = "shed_not_cas", connpool_mutant = "shed_no_recheck"))]
        return;
        // The `max` that `try_shed` read may be stale: a `resize` that grew the pool
        // meanwhile hands out the slots it finds (`try_reserve`), and may have looked before
        // this decrement. Its waiters then get the slot here. SeqCst load of the waiting word
        // after the decrement's SeqCst CAS: the load half of the slot handshake (a Relaxed
        // load could be ordered before the CAS on a weak-memory CPU, and miss a waiter whose
        // re-check missed the slot); a waiter that registers later finds the slot with its
        // own re-check.
        if self.admission.load().waiters() != 0 && self.try_reserve() {
            self.give(Token::Slot, h);
        }
    }

    /// Lowers `size` by one; the last close after the pool closed wakes `drained`.
    fn size_sub(&self) {
        // SeqCst: the put of a slot (the store half of the slot handshake), and orders the
        // connection's drop before a `drained` that sees the new size.
        let before = self.size.fetch_sub(1, Ordering::SeqCst);
        self.after_sub(before);
    }

    /// After `size` went from `before` down by one: the last close after the pool closed
    /// wakes `drained`.
    fn after_sub(&self, before: usize) {
        handshake_fence();
        if before == 1 && self.is_closed() {
            self.drained.notify(usize::MAX);
        }
    }

    // ----- closing connections ----------------------------------------------------------

    /// Closes a connection that is out of the queue and not lent; its unit goes on (see
    /// [`free_unit`](Self::free_unit)).
    pub(crate) fn close_conn(&self, c: Conn<C>, reason: CloseReason, h: &impl Hooks<C>) {
        self.close_keep(c, reason, h);
        self.free_unit(h);
    }

    /// Closes a connection whose unit the caller keeps (as a slot: a get that closes a stale
    /// or failed connection and goes on to the next, or to a dial).
    pub(crate) fn close_keep(&self, c: Conn<C>, reason: CloseReason, h: &impl Hooks<C>) {
        let (conn, meta) = c.into_parts();
        h.on_close(conn, &meta, reason);
        // Relaxed: a gauge.
        meta.backend.size.fetch_sub(1, Ordering::Relaxed);
    }

    /// Closes a connection and gives its unit up (nobody may have it: the pool is closed or
    /// above its size).
    fn close_raw(&self, c: Conn<C>, reason: CloseReason, h: &impl Hooks<C>) {
        self.close_keep(c, reason, h);
        self.size_sub();
    }

    /// Closes idle connections while the pool is above `max_size`. Each is closed only if,
    /// at the CAS, the pool is still above its size ([`shed_conn`](Self::shed_conn)); if
    /// another closer brought it down meanwhile, the connection goes back and the shrink
    /// stops.
    #[cold]
    fn shrink_idle(&self, lane: Lane, h: &impl Hooks<C>) {
        while self.size() > self.max() {
            let Some(c) = self.idle.pop(lane) else { break };
            if let Err(c) = self.shed_conn(c, h) {
                // Back to a waiter or the queue; the shrink is done.
                self.give_in(Token::Conn(c), lane, h);
                break;
            }
        }
    }

    /// Closes every idle connection (the pool closed).
    fn drain(&self, h: &impl Hooks<C>) {
        let lane = Lane::current();
        while let Some(c) = self.idle.pop(lane) {
            self.close_raw(c, CloseReason::PoolClosed, h);
        }
    }

    // ----- background passes, resize, close --------------------------------------------

    /// A connect in progress: the backend's `size` stays raised while it runs (the pool's
    /// `size` already counts the caller's slot); lowered again on drop unless it produced a
    /// connection.
    pub(crate) fn opening<'a>(&'a self, backend: &'a BackendEntry) -> Opening<'a> {
        // Relaxed: a per-backend gauge.
        backend.size.fetch_add(1, Ordering::Relaxed);
        Opening {
            backend,
            armed: true,
        }
    }

    /// Closes the idle connections that went stale (removed backends, above all) and puts
    /// the others back. The connections it holds meanwhile keep their units (the hard bound
    /// holds throughout).
    pub(crate) fn purge_stale(&self, now: Instant, idle_timeout: IdleLimit, h: &impl Hooks<C>) {
        let lane = Lane::current();
        let mut now = LazyNow::at(now);
        for _ in 0..self.idle.len() {
            let Some(c) = self.idle.pop(lane) else { break };
            match c.meta.stale_reason(&mut now, idle_timeout) {
                Some(reason) => self.close_conn(c, reason, h),
                None => self.give_in(Token::Conn(c), lane, h),
            }
        }
    }

    /// Changes `max_size` and the idle cap. Growing hands the new slots to waiters at once;
    /// shrinking closes idle connections above the new size now and lent ones as they come
    /// back (`size` may exceed `max_size` until they do; no new connection opens meanwhile).
    pub(crate) fn resize(&self, max_size: usize, max_idle: usize, h: &impl Hooks<C>) {
        // SeqCst: resizes are serialised through this swap (the old value is exact, and both
        // limits change together), and it is the write of the shrink handshake (see the
        // module docs).
        let old = max_of(
            self.limits
                .sizes
                .swap(pack_sizes(max_size, max_idle), Ordering::SeqCst),
        );
        fence_seqcst();
        if max_size < old {
            #[cfg(not(connpool_mutant = "resize_no_adjust"))]
            self.shrink_idle(Lane::current(), h);
        } else {
            // Each new slot to a waiter, while any is queued (a waiter that registers after
            // the swap finds the slot with its own re-check).
            #[cfg(not(connpool_mutant = "resize_no_wake"))]
            for _ in old..max_size {
                // The SeqCst load of the resize handshake (after the swap and fence).
                if self.admission.load().waiters() == 0 || !self.try_reserve() {
                    break;
                }
                self.give(Token::Slot, h);
            }
        }
    }

    /// The synchronous part of closing: every waiter and later get sees `Closed`; idle
    /// connections close now, lent ones on return. `false` if it was closed already.
    pub(crate) fn close(&self, h: &impl Hooks<C>) -> bool {
        // SeqCst: the write of the close handshake (see the module docs).
        if self.limits.closed.swap(true, Ordering::SeqCst) {
            return false;
        }
        fence_seqcst();
        self.admission.close_all();
        self.drain(h);
        if self.size() == 0 {
            self.drained.notify(usize::MAX);
        }
        true
    }

    /// Resolves once every connection is closed (after [`close`](Self::close)).
    pub(crate) async fn drained(&self) {
        loop {
            let listener = self.drained.listen();
            fence_seqcst();
            // SeqCst: pairs with `size_sub` (its Release half: the connections' drops are
            // done).
            if self.size.load(Ordering::SeqCst) == 0 {
                return;
            }
            listener.await;
        }
    }
}

/// A waiter in [`Engine::acquire`]: leaves the line when dropped (served, closed or
/// cancelled); if a unit was handed to it that it did not take, passes it on.
struct Waiter<'a, C, H: Hooks<C>> {
    engine: &'a Engine<C>,
    hooks: &'a H,
    queued: Queued<'a, C>,
}

impl<C, H: Hooks<C>> Drop for Waiter<'_, C, H> {
    fn drop(&mut self) {
        match self.queued.leave() {
            // Handed, not taken: pass it on; a slot as a freed unit (given up instead if
            // the pool shrank below it meanwhile: no new connection above the new size).
            Some(Token::Slot) => self.engine.free_unit(self.hooks),
            Some(t) => self.engine.give(t, self.hooks),
            None => {}
        }
    }
}

/// See [`Engine::opening`].
pub(crate) struct Opening<'a> {
    backend: &'a BackendEntry,
    armed: bool,
}

impl Opening<'_> {
    /// The connect succeeded: the connection now counts in the backend's `size` on its own.
    pub(crate) fn opened(mut self) {
        self.armed = false;
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        #[cfg(not(connpool_mutant = "opening_leaks_size"))]
        if self.armed {
            // Relaxed: a gauge.
            self.backend.size.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A unit owned by a get in progress (or a background pass), given back when dropped: a
/// connection is closed (its state is unknown, e.g. cancelled mid-check) and its unit goes
/// on; a slot goes on. [`take`](Self::take) and [`take_conn`](Self::take_conn) hand it on instead.
pub(crate) struct Unit<'a, C, H: Hooks<C>> {
    engine: &'a Engine<C>,
    hooks: &'a H,
    token: Option<Token<C>>,
}

impl<'a, C, H: Hooks<C>> Unit<'a, C, H> {
    pub(crate) fn new(engine: &'a Engine<C>, hooks: &'a H, token: Token<C>) -> Self {
        Unit {
            engine,
            hooks,
            token: Some(token),
        }
    }

    /// The unit.
    pub(crate) fn token(&mut self) -> &mut Token<C> {
        self.token
            .as_mut()
            .expect("a Unit holds its token until taken")
    }

    /// Takes the unit out (the caller hands it on).
    pub(crate) fn take(mut self) -> Token<C> {
        self.token.take().expect("a Unit is taken once")
    }

    /// Takes the connection out (the unit must hold one).
    pub(crate) fn take_conn(self) -> Conn<C> {
        match self.take() {
            Token::Conn(c) => c,
            Token::Slot => unreachable!("take_conn on a slot"),
        }
    }

    /// Closes the connection held, keeping its unit as a slot.
    pub(crate) fn close_keep(&mut self, reason: CloseReason) {
        if let Some(Token::Conn(c)) = self.token.take() {
            self.engine.close_keep(c, reason, self.hooks);
        }
        self.token = Some(Token::Slot);
    }

    /// Holds `c` (opened with the slot held, or popped: then the slot goes on).
    pub(crate) fn set_conn(&mut self, c: Conn<C>, popped: bool) {
        let old = self.token.replace(Token::Conn(c));
        debug_assert!(matches!(old, Some(Token::Slot)));
        if popped {
            self.engine.free_unit(self.hooks);
        }
    }
}

impl<C, H: Hooks<C>> Drop for Unit<'_, C, H> {
    fn drop(&mut self) {
        #[cfg(not(connpool_mutant = "unit_guard_leaks"))]
        match self.token.take() {
            // Its state is unknown (a check or a use was cut short): closed.
            Some(Token::Conn(c)) => {
                let reason = self.engine.abandoned();
                self.engine.close_conn(c, reason, self.hooks)
            }
            Some(Token::Slot) => self.engine.free_unit(self.hooks),
            None => {}
        }
    }
}
