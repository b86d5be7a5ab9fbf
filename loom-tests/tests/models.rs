//! Loom models of every concurrent path of connpool's engine: admission, hand-off,
//! cancellation, close, resize, backend swap, fail-fast and connect failure.
//!
//! Each model drives the real code (`connpool::__loom::Core` wraps the crate's `Engine` and
//! `Backends`), with at most 3 spawned threads. Run them with `scripts/loom.sh`; each is shown
//! to catch a deliberate bug by `scripts/mutants.sh` (the bug is named in its doc comment).
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use connpool::__loom::{Core, GetError, Lent};
use connpool::CloseReason;
use loom::future::block_on;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

/// What must hold once every thread is done and every connection is back.
fn at_rest(core: &Core) {
    assert_eq!(
        core.in_use(),
        0,
        "a connection is still counted lent: {core:?}"
    );
    assert_eq!(core.waiters(), 0, "a waiter is still counted: {core:?}");
    assert_eq!(core.size(), core.idle(), "size != idle at rest: {core:?}");
    assert!(
        core.size() <= core.max_size(),
        "size above max_size: {core:?}"
    );
    assert_eq!(
        core.live(),
        core.size(),
        "open connections != size: {core:?}"
    );
    assert_eq!(
        core.available(),
        core.max_size(),
        "a permit leaked: {core:?}"
    );
}

fn get(core: &Core) -> Result<Lent, GetError> {
    block_on(core.get(true))
}

/// Two getters, one permit: never both inside, both finish, nothing leaks.
/// Catches `acquire_not_cas` (both take the one permit), `no_recheck` and `no_epoch_recheck`
/// (a release that misses a registering waiter strands it: deadlock).
#[test]
fn two_getters_one_permit() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let inside = Arc::new(AtomicUsize::new(0));
        let getters: Vec<_> = (0..2)
            .map(|_| {
                let (core, inside) = (core.clone(), inside.clone());
                thread::spawn(move || {
                    let c = get(&core).expect("get");
                    assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders of one permit");
                    inside.fetch_sub(1, SeqCst);
                    core.give_back(c);
                })
            })
            .collect();
        for g in getters {
            g.join().unwrap();
        }
        at_rest(&core);
        assert_eq!(
            core.opened(),
            1,
            "the second getter must reuse the first's connection"
        );
    });
}

/// A return while a getter is parked: the waiter is woken and gets *that* connection (push
/// happens before release). Catches `release_before_push` (the woken waiter finds the queue
/// empty and opens a second connection) and `no_recheck` (lost wake-up: deadlock).
#[test]
fn return_wakes_parked_waiter() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let waiter = {
            let core = core.clone();
            thread::spawn(move || {
                let c = get(&core).expect("get");
                assert_eq!(c.id(), 0, "the waiter must get the returned connection");
                core.give_back(c);
            })
        };
        let returner = {
            let core = core.clone();
            thread::spawn(move || core.give_back(c0))
        };
        waiter.join().unwrap();
        returner.join().unwrap();
        at_rest(&core);
        assert_eq!(core.opened(), 1);
    });
}

/// Two back-to-back returns, two parked waiters that keep what they get: both are woken.
/// Catches `plain_notify` (`notify(1)` is a no-op while the first notification is
/// unconsumed: the second permit goes to the counter and the second waiter sleeps forever).
#[test]
fn two_returns_wake_two_waiters() {
    loom::model(|| {
        let core = Arc::new(Core::new(2, &["a"]));
        let c0 = get(&core).unwrap();
        let c1 = get(&core).unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let core = core.clone();
                // Each keeps its connection until both have one (main returns them).
                thread::spawn(move || get(&core).expect("get"))
            })
            .collect();
        let returner = {
            let core = core.clone();
            thread::spawn(move || {
                core.give_back(c0);
                core.give_back(c1);
            })
        };
        let got: Vec<Lent> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        returner.join().unwrap();
        assert!(
            got.iter().all(|c| c.id() < 2),
            "a waiter opened a third connection"
        );
        for c in got {
            core.give_back(c);
        }
        at_rest(&core);
    });
}

/// A waiter cancelled at any point, including after a permit was handed to it: the permit
/// passes on to the other waiter, and nothing leaks. Catches `cancel_drops_handoff` (the
/// cancelled listener's permit is dropped: the other waiter sleeps forever).
#[test]
fn cancelled_waiter_passes_hand_off() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let cancelled = {
            let core = core.clone();
            thread::spawn(move || {
                let mut fut = core.acquire();
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(&mut fut).poll(&mut cx) {
                    // It got the permit at once (the return came first): give it back.
                    Poll::Ready(r) => {
                        r.expect("not closed");
                        drop(core.permit());
                    }
                    // Parked; loom may run the return (and its hand-off to us) before the drop.
                    Poll::Pending => drop(fut),
                }
            })
        };
        let waiter = {
            let core = core.clone();
            thread::spawn(move || {
                let c = get(&core).expect("get");
                core.give_back(c);
            })
        };
        core.give_back(c0);
        cancelled.join().unwrap();
        waiter.join().unwrap();
        at_rest(&core);
        assert_eq!(core.opened(), 1);
    });
}

/// Close while getters wait and no connection comes back: every waiter sees `Closed`; the
/// lent connection is closed on return and `close()` then completes. Catches `close_no_wake`
/// (the waiters are never woken: deadlock).
#[test]
fn close_wakes_waiters() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let core = core.clone();
                thread::spawn(move || {
                    assert_eq!(get(&core).unwrap_err(), GetError::Closed);
                })
            })
            .collect();
        let closer = {
            let core = core.clone();
            thread::spawn(move || assert!(core.close()))
        };
        for w in waiters {
            w.join().unwrap();
        }
        closer.join().unwrap();
        core.give_back(c0);
        block_on(core.drained());
        assert_eq!((core.size(), core.idle(), core.live()), (0, 0, 0));
        assert_eq!(core.closed(), vec![(0, CloseReason::PoolClosed)]);
    });
}

/// Close racing with a return and a waiting getter: the getter sees `Closed` or a connection
/// (a get concurrent with close may still succeed); at the end no connection stays open (none left in the idle queue of the
/// closed pool). Catches `close_no_recheck` (the returner pushes after close drained the
/// queue and does not look again: the connection stays open and `close()` never completes).
#[test]
fn close_races_get_and_return() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let getter = {
            let core = core.clone();
            thread::spawn(move || match get(&core) {
                // The returned connection, or (when close drained it first) a new one: a get
                // concurrent with close may still succeed; its connection closes on return.
                Ok(c) => core.give_back(c),
                Err(e) => assert_eq!(e, GetError::Closed),
            })
        };
        let returner = {
            let core = core.clone();
            thread::spawn(move || core.give_back(c0))
        };
        let closer = {
            let core = core.clone();
            thread::spawn(move || assert!(core.close()))
        };
        getter.join().unwrap();
        returner.join().unwrap();
        closer.join().unwrap();
        assert_eq!(
            core.idle(),
            0,
            "a connection stayed in the closed pool's queue"
        );
        assert_eq!(core.live(), 0, "a connection stayed open after close");
        block_on(core.drained());
        assert_eq!(core.size(), 0);
    });
}

/// Shrinking (2 → 1) while two getters get and return: never more than 2 open, and once all
/// is back `size <= 1` and exactly one permit exists. Catches `resize_no_adjust` (the shrink
/// does not take a permit away: two permits remain for `max_size` 1).
#[test]
fn resize_down_races_get_return() {
    loom::model(|| {
        let core = Arc::new(Core::new(2, &["a"]));
        let getters: Vec<_> = (0..2)
            .map(|_| {
                let core = core.clone();
                thread::spawn(move || {
                    let c = get(&core).expect("get");
                    assert!(core.size() <= 2, "size above the larger max_size: {core:?}");
                    core.give_back(c);
                })
            })
            .collect();
        let resizer = {
            let core = core.clone();
            thread::spawn(move || core.resize(1))
        };
        for g in getters {
            g.join().unwrap();
        }
        resizer.join().unwrap();
        assert_eq!(core.max_size(), 1);
        at_rest(&core);
        // And the bound holds from here on: one get fits, the next finds no permit.
        let c = get(&core).unwrap();
        assert!(
            !core.try_acquire_fair(),
            "a second permit exists at max_size 1"
        );
        core.give_back(c);
    });
}

/// Growing (1 → 2) while a getter waits and nothing comes back: the new permit wakes it.
/// Catches `resize_no_wake` (the new permit goes to the counter unseen: deadlock).
#[test]
fn resize_up_wakes_waiter() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let waiter = {
            let core = core.clone();
            thread::spawn(move || {
                let c = get(&core).expect("get");
                assert!(core.size() <= 2, "size above max_size: {core:?}");
                core.give_back(c);
            })
        };
        let resizer = {
            let core = core.clone();
            thread::spawn(move || core.resize(2))
        };
        waiter.join().unwrap();
        resizer.join().unwrap();
        core.give_back(c0);
        at_rest(&core);
    });
}

/// `set_backends` (a → b) racing with a get and the return of a connection to `a`: once the
/// swap is done, no connection to `a` is ever handed out (checked by the racing getter when
/// it saw the swap finish first, and by a get after everything). Catches `no_mark_removed`
/// (the removed entry is never flagged) and `get_ignores_removed` (the get path does not
/// check the flag).
#[test]
fn set_backends_races_get_return() {
    loom::model(|| {
        let core = Arc::new(Core::new(2, &["a"]));
        let c0 = get(&core).unwrap();
        let swapped = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (core, swapped) = (core.clone(), swapped.clone());
            thread::spawn(move || {
                core.set_backends(&["b"]);
                swapped.store(true, SeqCst);
            })
        };
        let returner = {
            let core = core.clone();
            thread::spawn(move || core.give_back(c0))
        };
        let getter = {
            let (core, swapped) = (core.clone(), swapped.clone());
            thread::spawn(move || {
                let after_swap = swapped.load(SeqCst);
                match get(&core) {
                    Ok(c) => {
                        assert!(
                            !(after_swap && c.backend() == "a"),
                            "a removed backend's connection was handed out"
                        );
                        core.give_back(c);
                    }
                    // Dialed `a` just as it was removed: closed, not handed out.
                    Err(e) => assert_eq!(e, GetError::ConnectFailed),
                }
            })
        };
        swapper.join().unwrap();
        returner.join().unwrap();
        getter.join().unwrap();
        let c = get(&core).unwrap();
        assert_eq!(
            c.backend(),
            "b",
            "a removed backend's connection was handed out"
        );
        core.give_back(c);
        assert_eq!(core.in_use(), 0);
        assert_eq!(core.size(), core.idle());
    });
}

/// The fail-fast `try_get` racing with a return while a permit is free: it gets the
/// returned connection or `None`, never dials, and takes nothing when it fails. Catches
/// `try_get_leaks_permit` (the failed try keeps its permit).
#[test]
fn try_get_races_return() {
    loom::model(|| {
        let core = Arc::new(Core::new(2, &["a"]));
        let c0 = get(&core).unwrap();
        let trier = {
            let core = core.clone();
            thread::spawn(move || {
                if let Some(c) = core.try_get() {
                    assert_eq!(c.id(), 0, "try_get may only hand out an idle connection");
                    core.give_back(c);
                }
            })
        };
        let returner = {
            let core = core.clone();
            thread::spawn(move || core.give_back(c0))
        };
        trier.join().unwrap();
        returner.join().unwrap();
        at_rest(&core);
        assert_eq!(core.opened(), 1, "try_get dialed");
    });
}

/// A connect failure while another getter waits: the failing get releases its permit (which
/// wakes the waiter) and its `size` slot. Catches `permit_guard_leaks` (the permit guard
/// does not release: the waiter sleeps forever) and `opening_leaks_size` (`size` keeps the
/// failed connect: `size != idle` at rest).
#[test]
fn connect_failure_releases_permit() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let failing = {
            let core = core.clone();
            thread::spawn(move || match block_on(core.get(false)) {
                Err(e) => assert_eq!(e, GetError::ConnectFailed),
                // It found the other getter's returned connection: no connect needed.
                Ok(c) => core.give_back(c),
            })
        };
        let getter = {
            let core = core.clone();
            thread::spawn(move || {
                let c = get(&core).expect("get");
                core.give_back(c);
            })
        };
        failing.join().unwrap();
        getter.join().unwrap();
        at_rest(&core);
    });
}
