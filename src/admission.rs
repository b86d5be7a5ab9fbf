//! Admission: one atomic permit counter and a wait queue, with direct hand-off.
//!
//! A permit is the right to hold one connection out of the idle queue (to use it, check it or
//! dial a new one). `max_size` permits exist; an idle connection holds none.
//!
//! # Synchronization
//!
//! `available` counts free permits; it may go negative after `resize` shrinks the pool while
//! permits are out (returned permits then pay the debt first). `try_acquire` is a CAS loop
//! that never takes a permit that is not there.
//!
//! Waiting follows event-listener's protocol: register a listener, *then* count the
//! registration (`waiters`, then `registrations`), *then* re-check the counter, *then* wait.
//!
//! Releasing hands the permit **directly** to the oldest waiting listener
//! (`notify(1.additional())`; a plain `notify(1)` is a no-op while an earlier notification is
//! still unconsumed, which strands the second waiter of two back-to-back releases). A woken
//! listener owns the permit it was handed: nobody can barge in between. Only when no listener
//! took it does the permit go to the counter; the releaser then re-reads `registrations`: if a
//! waiter registered meanwhile, its re-check may have run before the permit arrived, so the
//! releaser takes a permit back and hands it off again. All of these are SeqCst, so they sit
//! in one total order: either the releaser sees the registration, or the waiter's re-check
//! (which follows its registration) sees the permit. No wake-up is lost, and no releaser spins:
//! it loops only when a new registration happened.
//!
//! A waiter that leaves (succeeds by its re-check, or is cancelled) `discard`s its listener: if
//! a permit was handed to it meanwhile, it passes that permit on with `release`, so nothing is
//! stranded.
//!
//! Whatever the releaser published before `release` (the connection it pushed to the idle
//! queue) happens-before the acquire that receives its permit: through the counter's
//! read-modify-write chain, or through the wait queue's lock on a hand-off.
//!
//! # Fairness
//!
//! Freed permits go to waiters in the order they registered (event-listener's queue is FIFO),
//! and while anyone waits, newcomers do not take the fast path: they queue behind. A task that
//! returns a connection and asks again at once therefore waits its turn, which is what bounds
//! the tail latency under oversubscription.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::sync::{
    handshake_fence, AtomicBool, AtomicIsize, AtomicUsize, CachePadded, EventListener, Listener,
    Ordering, WaitQueue,
};

/// The outcome of a wait that did not produce a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcquireError {
    Closed,
}

pub(crate) struct Admission {
    /// Free permits; negative while a shrink is being absorbed.
    available: CachePadded<AtomicIsize>,
    /// Registered waiters (listener in the queue, not yet done).
    waiters: CachePadded<AtomicUsize>,
    /// Every registration ever (the releasers' handshake; see the module docs).
    registrations: CachePadded<AtomicUsize>,
    /// The current number of permits (max_size).
    max: AtomicUsize,
    closed: AtomicBool,
    queue: WaitQueue,
}

impl Admission {
    pub(crate) fn new(max: usize) -> Self {
        Admission {
            available: CachePadded::new(AtomicIsize::new(to_isize(max))),
            waiters: CachePadded::new(AtomicUsize::new(0)),
            registrations: CachePadded::new(AtomicUsize::new(0)),
            max: AtomicUsize::new(max),
            closed: AtomicBool::new(false),
            queue: WaitQueue::new(),
        }
    }

    /// Takes a permit if one is free. Never waits. Returns `false` when none is free.
    pub(crate) fn try_acquire(&self) -> bool {
        #[cfg(connpool_mutant = "acquire_not_cas")]
        {
            // Mutant: check-then-store instead of a CAS; two acquirers can take one permit.
            let cur = self.available.load(Ordering::SeqCst);
            if cur <= 0 {
                return false;
            }
            self.available.store(cur - 1, Ordering::SeqCst);
            return true;
        }
        // SeqCst, not Relaxed: this read is the load half of the handshake with `release`
        // (a waiter's re-check after it registered). A Relaxed read may return a stale 0 and
        // skip the CAS although `release` already put the permit in the counter: the waiter
        // then sleeps on a free permit (found by loom, `cancelled_waiter_passes_hand_off`).
        let mut cur = self.available.load(Ordering::SeqCst);
        loop {
            if cur <= 0 {
                return false;
            }
            // SeqCst on success: the Acquire half sees the connection a releaser pushed before
            // its release; the SeqCst half orders this against the `waiters` handshake.
            // SeqCst on failure too: a failed CAS that reads `<= 0` ends the try, so that read
            // is part of the handshake like the first one.
            match self.available.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The fast path of `acquire`: a permit only if nobody is queued (no barging).
    pub(crate) fn try_acquire_fair(&self) -> bool {
        // SeqCst: part of the handshake with `release`; a newcomer that sees waiters queues.
        if self.waiters.load(Ordering::SeqCst) != 0 {
            return false;
        }
        self.try_acquire()
    }

    /// Waits for a permit. Cancel-safe: dropping the future before it resolves takes nothing
    /// (a notification it had received is passed on to the next waiter).
    pub(crate) fn acquire(&self) -> Acquire<'_> {
        Acquire {
            admission: self,
            listener: None,
            registered: false,
        }
    }

    /// Gives a permit back: pays a shrink's debt, else hands it to the oldest waiter, else
    /// puts it in the counter (see the module docs for why this loses no wake-up).
    pub(crate) fn release(&self) {
        // Relaxed first read: a hint for the CAS, which re-validates.
        let mut cur = self.available.load(Ordering::Relaxed);
        while cur < 0 {
            // SeqCst: a counter update like any other (see `try_acquire`).
            match self.available.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
        loop {
            // SeqCst: read before the hand-off attempt and compared after the counter update
            // below; its total order with the waiter's registration is the handshake.
            let epoch = self.registrations.load(Ordering::SeqCst);
            // SeqCst: a waiter counts itself after it listens; seeing it means its listener
            // is in the queue (or already served).
            if self.waiters.load(Ordering::SeqCst) != 0 && self.hand_off() {
                return;
            }
            // SeqCst: publishes the permit (and what preceded it) to the next acquirer, and is
            // the store of the store-load handshake with registering waiters.
            self.available.fetch_add(1, Ordering::SeqCst);
            handshake_fence();
            // SeqCst: the load of the handshake.
            if self.registrations.load(Ordering::SeqCst) == epoch
                || cfg!(connpool_mutant = "no_epoch_recheck")
            {
                return;
            }
            // Someone registered while we worked: its re-check may have missed the permit.
            // Take one back and hand it off (if it is gone already, someone has it: done).
            if !self.try_acquire() {
                return;
            }
        }
    }

    /// Hands one permit to the oldest listener not yet served; `false` if there is none.
    fn hand_off(&self) -> bool {
        #[cfg(not(connpool_mutant = "plain_notify"))]
        {
            use event_listener::IntoNotification;
            self.queue.notify(1.additional()) > 0
        }
        #[cfg(connpool_mutant = "plain_notify")]
        {
            self.queue.notify(1) > 0
        }
    }

    /// Closes admission: every waiter and every later acquire sees `Closed`.
    pub(crate) fn close(&self) {
        // SeqCst: waiters re-check `closed` after registering; they cannot miss it.
        self.closed.store(true, Ordering::SeqCst);
        handshake_fence();
        #[cfg(not(connpool_mutant = "close_no_wake"))]
        self.queue.notify(usize::MAX);
    }

    pub(crate) fn is_closed(&self) -> bool {
        // SeqCst: pairs with the store in `close` (listen, re-check, then wait).
        self.closed.load(Ordering::SeqCst)
    }

    /// Changes the number of permits. Growing hands the new permits to waiters at once;
    /// shrinking takes permits as they come back (`available` may go negative meanwhile).
    pub(crate) fn resize(&self, new_max: usize) -> usize {
        // SeqCst: resizes are serialised through this swap (the old value is exact), and it is
        // the store half of the shrink handshake with `Engine::requeue` (which loads `max`
        // after it pushed): either the shrink sees the pushed connection or the returner sees
        // the new max.
        let old = self.max.swap(new_max, Ordering::SeqCst);
        if new_max < old {
            // SeqCst: a counter update like any other.
            #[cfg(not(connpool_mutant = "resize_no_adjust"))]
            self.available
                .fetch_sub(to_isize(old - new_max), Ordering::SeqCst);
        } else {
            for _ in old..new_max {
                #[cfg(not(connpool_mutant = "resize_no_wake"))]
                self.release();
                // Mutant: the new permits go to the counter; nobody waiting is told.
                // SeqCst: as in `release`.
                #[cfg(connpool_mutant = "resize_no_wake")]
                self.available.fetch_add(1, Ordering::SeqCst);
            }
        }
        old
    }

    pub(crate) fn max(&self) -> usize {
        // SeqCst: the load half of the shrink handshake (see `resize`); a plain load on x86.
        self.max.load(Ordering::SeqCst)
    }

    /// Permits currently free (0 when a shrink is being absorbed).
    #[allow(dead_code)] // used by the loom models and tests
    pub(crate) fn available(&self) -> usize {
        // Relaxed: a gauge for status; nothing is published through it.
        usize::try_from(self.available.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub(crate) fn waiters(&self) -> usize {
        // Relaxed: a gauge for status.
        self.waiters.load(Ordering::Relaxed)
    }
}

fn to_isize(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

/// The future returned by [`Admission::acquire`].
pub(crate) struct Acquire<'a> {
    admission: &'a Admission,
    listener: Option<EventListener>,
    registered: bool,
}

impl Future for Acquire<'_> {
    type Output = Result<(), AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let adm = this.admission;
        if adm.is_closed() {
            this.finish();
            return Poll::Ready(Err(AcquireError::Closed));
        }
        if this.listener.is_none() {
            // First poll: the fast path, unless others queue already.
            if adm.try_acquire_fair() {
                return Poll::Ready(Ok(()));
            }
            // Listen, count ourselves, then re-check: a permit freed before we listened is
            // in the counter; one freed after is handed to us.
            this.listener = Some(adm.queue.listen());
            this.registered = true;
            // SeqCst (both): the registration half of the handshake in `release`; `waiters`
            // first, so a releaser that sees the new epoch also sees a waiter to hand off to.
            adm.waiters.fetch_add(1, Ordering::SeqCst);
            adm.registrations.fetch_add(1, Ordering::SeqCst);
            handshake_fence();
            #[cfg(not(connpool_mutant = "no_recheck"))]
            if adm.try_acquire() {
                this.finish();
                return Poll::Ready(Ok(()));
            }
            if adm.is_closed() {
                this.finish();
                return Poll::Ready(Err(AcquireError::Closed));
            }
        }
        let listener = this.listener.as_mut().expect("listening");
        match Pin::new(listener).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                // Consumed: a permit was handed to us (or the pool closed).
                this.listener = None;
                this.finish();
                if adm.is_closed() {
                    return Poll::Ready(Err(AcquireError::Closed));
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl Acquire<'_> {
    /// Leaves the queue. A listener still held is discarded; if a permit had been handed to
    /// it meanwhile, that permit is passed on (we either have one already or are cancelled).
    fn finish(&mut self) {
        if let Some(listener) = self.listener.take() {
            if listener.discard()
                && !self.admission.is_closed()
                && !cfg!(connpool_mutant = "cancel_drops_handoff")
            {
                self.admission.release();
            }
        }
        if self.registered {
            self.registered = false;
            // SeqCst: keeps one total order with the loads in `release`.
            self.admission.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        // Cancelled (or finished: then this is a no-op).
        self.finish();
    }
}
