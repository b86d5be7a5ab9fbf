//! Admission: one atomic permit counter and a wait queue.
//!
//! A permit is the right to hold one connection out of the idle queue (to use it, check it or
//! dial a new one). `max_size` permits exist; an idle connection holds none.
//!
//! # Synchronization
//!
//! `available` is the number of free permits; it may go negative after `resize` shrinks the
//! pool while permits are out (they are then absorbed as they come back). `acquire` is a CAS
//! loop that never takes a permit that is not there. Waiting follows event-listener's
//! protocol: register a listener, *then* re-check, *then* wait. A release adds its permit
//! (SeqCst) and, if anyone waits (SeqCst load of `waiters`), wakes one *additional* listener:
//! a plain `notify(1)` is a no-op while an earlier notification is still unconsumed, which can
//! strand a second waiter. The SeqCst pair (`available` then `waiters` on release, `waiters`
//! then `available` on wait) is a store-load handshake: at least one side sees the other, so
//! either the waiter finds the permit on its re-check or the releaser sees the waiter and wakes
//! it. Whatever the releaser published before `release` (the connection it pushed to the idle
//! queue) happens-before the acquire that takes its permit (Release/Acquire through the
//! counter's read-modify-write chain).
//!
//! # Fairness
//!
//! While anyone waits, newcomers do not take the fast path: they queue behind the waiters
//! (event-listener wakes listeners in the order they registered). A woken waiter that loses
//! its permit to a re-checking newcomer (a narrow window) registers again.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::sync::{
    AtomicBool, AtomicIsize, AtomicUsize, CachePadded, EventListener, Ordering, WaitQueue,
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
            max: AtomicUsize::new(max),
            closed: AtomicBool::new(false),
            queue: WaitQueue::new(),
        }
    }

    /// Takes a permit if one is free. Never waits. Returns `false` when none is free.
    pub(crate) fn try_acquire(&self) -> bool {
        // Relaxed first read: a hint for the CAS, which re-validates.
        let mut cur = self.available.load(Ordering::Relaxed);
        loop {
            if cur <= 0 {
                return false;
            }
            // SeqCst on success: the Acquire half sees the connection a releaser pushed before
            // its release; the SeqCst half orders this against the `waiters` handshake.
            // Relaxed on failure: we only retry with the fresh value.
            match self.available.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
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

    /// Gives a permit back and wakes one more waiter.
    pub(crate) fn release(&self) {
        // SeqCst: publishes everything before it (the connection pushed to the idle queue) to
        // the acquirer (Release half), and is the store of the store-load handshake with
        // waiters.
        self.available.fetch_add(1, Ordering::SeqCst);
        self.wake_one();
    }

    fn wake_one(&self) {
        // SeqCst: the load of the handshake (see the module docs).
        if self.waiters.load(Ordering::SeqCst) != 0 {
            #[cfg(not(connpool_mutant = "plain_notify"))]
            {
                use event_listener::IntoNotification;
                self.queue.notify(1.additional());
            }
            #[cfg(connpool_mutant = "plain_notify")]
            {
                self.queue.notify(1);
            }
        }
    }

    /// Closes admission: every waiter and every later acquire sees `Closed`.
    pub(crate) fn close(&self) {
        // SeqCst: waiters re-check `closed` after registering; they cannot miss it.
        self.closed.store(true, Ordering::SeqCst);
        #[cfg(not(connpool_mutant = "close_no_wake"))]
        self.queue.notify(usize::MAX);
    }

    pub(crate) fn is_closed(&self) -> bool {
        // SeqCst: pairs with the store in `close` (listen, re-check, then wait).
        self.closed.load(Ordering::SeqCst)
    }

    /// Changes the number of permits. Growing wakes as many waiters as permits were added;
    /// shrinking takes permits as they come back (`available` may go negative meanwhile).
    pub(crate) fn resize(&self, new_max: usize) -> usize {
        // AcqRel: resizes are serialised through this swap; the old value is exact.
        let old = self.max.swap(new_max, Ordering::AcqRel);
        let delta = to_isize(new_max) - to_isize(old);
        if delta != 0 {
            // SeqCst: same role as the add in `release`.
            self.available.fetch_add(delta, Ordering::SeqCst);
        }
        if delta > 0 && self.waiters.load(Ordering::SeqCst) != 0 {
            use event_listener::IntoNotification;
            self.queue
                .notify(usize::try_from(delta).unwrap_or(usize::MAX).additional());
        }
        old
    }

    pub(crate) fn max(&self) -> usize {
        // Acquire: pairs with the swap in `resize`.
        self.max.load(Ordering::Acquire)
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
        loop {
            if adm.is_closed() {
                this.finish();
                return Poll::Ready(Err(AcquireError::Closed));
            }
            match this.listener.as_mut() {
                None => {
                    if !this.registered && adm.try_acquire_fair() {
                        return Poll::Ready(Ok(()));
                    }
                    // Listen, then count ourselves as a waiter, then re-check (below).
                    this.listener = Some(adm.queue.listen());
                    if !this.registered {
                        this.registered = true;
                        // SeqCst: the store of the handshake; the re-check below is the load.
                        adm.waiters.fetch_add(1, Ordering::SeqCst);
                    }
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
                Some(listener) => {
                    match Pin::new(listener).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) => {
                            this.listener = None;
                            // Woken: try the permit the releaser freed.
                            if adm.try_acquire() {
                                this.finish();
                                return Poll::Ready(Ok(()));
                            }
                            // Lost it (or a spurious wake-up): listen again.
                        }
                    }
                }
            }
        }
    }
}

impl Acquire<'_> {
    /// Leaves the waiter count. A listener still held is dropped, which passes on any
    /// notification it had received but not consumed (event-listener propagates it).
    fn finish(&mut self) {
        if self.registered {
            self.registered = false;
            // SeqCst: keeps the handshake's total order with `wake_one`'s load.
            self.admission.waiters.fetch_sub(1, Ordering::SeqCst);
        }
        self.listener = None;
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        // Cancelled (or finished: then this is a no-op). Dropping the listener hands a
        // received-but-unconsumed wake-up to the next waiter, so no permit is stranded.
        self.finish();
    }
}
