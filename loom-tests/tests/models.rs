//! Loom models of every concurrent path of connpool's engine: admission (the hit, a slot's
//! reservation), the waiters' line and its hand-off, cancellation, the timer duty's expiry and
//! its passing on, close, resize, backend swap, the backoff probe, fail-fast and connect
//! failure.
//!
//! Each model drives the real code (`connpool::__loom::Core` wraps the crate's `Engine` and
//! `Backends`), with at most 3 spawned threads. Run them with `scripts/loom.sh`. Each one but
//! `expiry_races_hand_off` and `try_get_races_return` is shown to catch a deliberate bug by
//! `scripts/mutants.sh` (the bug is named in its doc comment).
#![cfg(loom)]

use std::task::{Context, Poll, Waker};

use connpool::__loom::{Core, GetError, Lent, Pick};
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
        "open connections != size (a slot leaked): {core:?}"
    );
    assert_eq!(
        core.backend_sizes(),
        core.size(),
        "the backends' sizes do not add up to the pool's: {core:?}"
    );
}

/// Runs `f` on a new loom thread, with its own handle on the core.
fn spawn<T: 'static>(
    core: &Arc<Core>,
    f: impl FnOnce(&Core) -> T + 'static,
) -> thread::JoinHandle<T> {
    let core = Arc::clone(core);
    thread::spawn(move || f(&core))
}

fn get(core: &Core) -> Result<Lent, GetError> {
    block_on(core.get(true))
}

/// Two getters, one unit: never both inside, both finish, nothing leaks.
/// Catches `reserve_not_cas` (both reserve the one slot), `no_recheck` and `no_epoch_recheck`
/// (a return that misses a registering waiter strands it: deadlock).
#[test]
fn two_getters_one_unit() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let inside = Arc::new(AtomicUsize::new(0));
        let getters: Vec<_> = (0..2)
            .map(|_| {
                let (core, inside) = (core.clone(), inside.clone());
                thread::spawn(move || {
                    let c = get(&core).expect("get");
                    assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders of one unit");
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

/// A return while a getter is parked: the waiter is woken and gets *that* connection (handed
/// over, or found by its re-check). Catches `no_recheck` (lost wake-up: deadlock).
#[test]
fn return_wakes_parked_waiter() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let waiter = spawn(&core, move |core| {
            let c = get(core).expect("get");
            assert_eq!(c.id(), 0, "the waiter must get the returned connection");
            core.give_back(c);
        });
        let returner = spawn(&core, move |core| core.give_back(c0));
        waiter.join().unwrap();
        returner.join().unwrap();
        at_rest(&core);
        assert_eq!(core.opened(), 1);
    });
}

/// Two back-to-back returns, two parked waiters that keep what they get: both are woken, and
/// neither opens a connection of its own. Catches `no_recheck` and `no_epoch_recheck` (a
/// waiter left parked: deadlock).
#[test]
fn two_returns_wake_two_waiters() {
    loom::model(|| {
        let core = Arc::new(Core::new(2, &["a"]));
        let c0 = get(&core).unwrap();
        let c1 = get(&core).unwrap();
        let waiters: Vec<_> = (0..2)
            // Each keeps its connection until both have one (main returns them).
            .map(|_| spawn(&core, |core| get(core).expect("get")))
            .collect();
        let returner = spawn(&core, move |core| {
            core.give_back(c0);
            core.give_back(c1);
        });
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

/// A waiter cancelled at any point, including after a unit was handed to it: the unit
/// passes on to the other waiter, and nothing leaks. Catches `cancel_drops_handoff` (the
/// cancelled waiter drops the unit handed to it: the other waiter sleeps forever) and
/// `hand_off_no_cas` (a return hands its unit to a slot whose waiter already left: lost).
#[test]
fn cancelled_waiter_passes_hand_off() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let cancelled = spawn(&core, move |core| {
            let mut fut = core.acquire(false);
            let mut cx = Context::from_waker(Waker::noop());
            match fut.as_mut().poll(&mut cx) {
                // It got the unit at once (its re-check saw the return): give it back.
                Poll::Ready(r) => r.expect("not closed").give_back(core),
                // In line; loom may run the return (and its hand-off to us) before the drop.
                Poll::Pending => drop(fut),
            }
        });
        let waiter = spawn(&core, move |core| {
            let c = get(core).expect("get");
            core.give_back(c);
        });
        core.give_back(c0);
        cancelled.join().unwrap();
        waiter.join().unwrap();
        at_rest(&core);
        assert_eq!(core.opened(), 1);
    });
}

/// The timer duty's walk expiring a waiter while a return hands it the one connection: the
/// waiter either gets it or times out, never both; a connection it did not get is idle, and
/// nothing leaks.
#[test]
fn expiry_races_hand_off() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let waiter = spawn(&core, move |core| {
            match block_on(core.get_with(true, true)) {
                Ok(c) => core.give_back(c),
                Err(e) => assert_eq!(e, GetError::TimedOut),
            }
        });
        let expirer = spawn(&core, move |core| core.expire_due());
        core.give_back(c0);
        expirer.join().unwrap();
        // The walk may have run before the waiter was in line: then it is still waiting, and
        // the return above (or this walk) lets it go.
        core.expire_due();
        waiter.join().unwrap();
        at_rest(&core);
        assert_eq!(core.opened(), 1);
        assert_eq!(
            core.idle(),
            1,
            "the one connection is back in the idle queue"
        );
    });
}

/// A walk of the timer duty before any deadline (its timer fired early, or a newcomer took the
/// duty and walked) racing with a return: it expires nobody, and the waiter gets the
/// connection. Catches `expire_early` (the walk expires waiters whatever their deadline).
#[test]
fn early_walk_expires_nobody() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let waiter = spawn(&core, move |core| {
            let c = block_on(core.get_with(true, true)).expect("not expired before its deadline");
            core.give_back(c);
        });
        let walker = spawn(&core, move |core| core.expire_due_now());
        core.give_back(c0);
        walker.join().unwrap();
        waiter.join().unwrap();
        at_rest(&core);
    });
}

/// The timer duty holder leaving (cancelled) while another waiter with a shared deadline
/// stays: the duty passes to it (it is woken and takes it) before anything else happens.
/// Catches `duty_not_passed` (nobody is woken to take the duty over, so the shared deadlines
/// would go unwatched: the model waits forever for a holder, a deadlock loom reports).
#[test]
fn timer_duty_passes_on() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let leaver = spawn(&core, move |core| {
            // In line (taking the duty if it is free), then gone.
            let mut first = core.acquire(true);
            let mut cx = Context::from_waker(Waker::noop());
            assert!(first.as_mut().poll(&mut cx).is_pending());
            drop(first);
        });
        let stayer = spawn(&core, move |core| {
            let c = block_on(core.get_with(true, true)).expect("get");
            core.give_back(c);
        });
        leaver.join().unwrap();
        // The stayer (in line, or about to be) must end up holding the duty on its own.
        core.wait_for_duty();
        core.give_back(c0);
        stayer.join().unwrap();
        at_rest(&core);
    });
}

/// A waiter without a shared deadline (its own `get_timeout`, or waiting on another runtime
/// than the pool's) never takes the timer duty, and a leaving holder's nudge passes over it
/// to the shared waiter that stays: the duty goes only to a waiter whose deadline the line's
/// timer keeps. Catches `unshared_takes_duty` (the waiter without a shared deadline, alone in
/// line, takes the duty: the assertion) and `nudge_unshared` (the nudge wakes the waiter at
/// the back, which has no shared deadline and does not take the duty; the shared waiter is
/// never woken: the model waits forever for a holder, a deadlock loom reports).
#[test]
fn duty_passes_over_unshared_waiter() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut front = core.acquire(false);
        assert!(front.as_mut().poll(&mut cx).is_pending());
        assert!(
            !core.duty_held(),
            "a waiter without a shared deadline took the timer duty"
        );
        let mut holder = core.acquire(true);
        assert!(holder.as_mut().poll(&mut cx).is_pending());
        assert!(core.duty_held(), "the first shared waiter takes the duty");
        // The shared waiter that stays: in line behind the holder, then parked until woken.
        let joined = Arc::new((AtomicBool::new(false), loom::sync::Notify::new()));
        let stayer = {
            let joined = Arc::clone(&joined);
            spawn(&core, move |core| {
                let mut mine = core.acquire(true);
                let mut cx = Context::from_waker(Waker::noop());
                assert!(mine.as_mut().poll(&mut cx).is_pending());
                joined.0.store(true, SeqCst);
                joined.1.notify();
                drop(block_on(mine).expect("the stayer is served"));
            })
        };
        // (loom's `Notify` may wake spuriously: the flag says the stayer is in line.)
        while !joined.0.load(SeqCst) {
            joined.1.wait();
        }
        // Another waiter without a shared deadline, at the back of the line.
        let mut back = core.acquire(false);
        assert!(back.as_mut().poll(&mut cx).is_pending());
        drop(holder);
        // The stayer (woken, or polling on its own) must end up holding the duty.
        core.wait_for_duty();
        drop(front);
        drop(back);
        core.give_back(c0);
        stayer.join().unwrap();
        at_rest(&core);
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
                spawn(&core, move |core| {
                    assert_eq!(get(core).unwrap_err(), GetError::Closed);
                })
            })
            .collect();
        let closer = spawn(&core, move |core| assert!(core.close()));
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

/// Close racing with a return and a waiting getter: the getter sees `Closed` or a connection (a get
/// concurrent with close may still succeed); at the end no connection stays open (none left in the
/// idle queue of the closed pool). Catches `close_no_recheck` (the returner pushes after close
/// drained the queue and does not look again: the connection stays open and `close()` never
/// completes).
#[test]
fn close_races_get_and_return() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let getter = spawn(&core, move |core| match get(core) {
            // The returned connection, or (when close drained it first) a new one: a get
            // concurrent with close may still succeed; its connection closes on return.
            Ok(c) => core.give_back(c),
            Err(e) => assert_eq!(e, GetError::Closed),
        });
        let returner = spawn(&core, move |core| core.give_back(c0));
        let closer = spawn(&core, move |core| assert!(core.close()));
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
/// is back `size <= 1` and only one unit exists. Catches `resize_no_adjust` (the shrink does
/// not close the idle connection above the new size).
#[test]
fn resize_down_races_get_return() {
    loom::model(|| {
        let core = Arc::new(Core::new(2, &["a"]));
        let getters: Vec<_> = (0..2)
            .map(|_| {
                spawn(&core, move |core| {
                    let c = get(core).expect("get");
                    assert!(core.size() <= 2, "size above the larger max_size: {core:?}");
                    core.give_back(c);
                })
            })
            .collect();
        let resizer = spawn(&core, move |core| core.resize(1));
        for g in getters {
            g.join().unwrap();
        }
        resizer.join().unwrap();
        assert_eq!(core.max_size(), 1);
        at_rest(&core);
        // And the bound holds from here on: one get fits, the next finds no unit.
        let c = get(&core).unwrap();
        assert!(
            core.try_get().is_none() && core.try_reserve().is_none(),
            "a second unit exists at max_size 1"
        );
        core.give_back(c);
    });
}

/// Growing (1 → 2) while a getter waits and nothing comes back: the new slot goes to it.
/// Catches `resize_no_wake` (the new slot is there but nobody in line is told: deadlock).
#[test]
fn resize_up_wakes_waiter() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let c0 = get(&core).unwrap();
        let waiter = spawn(&core, move |core| {
            let c = get(core).expect("get");
            assert!(core.size() <= 2, "size above max_size: {core:?}");
            core.give_back(c);
        });
        let resizer = spawn(&core, move |core| core.resize(2));
        waiter.join().unwrap();
        resizer.join().unwrap();
        core.give_back(c0);
        at_rest(&core);
    });
}

/// Two connections closing at once (discarded) in a pool shrunk 2 → 1 while a getter waits:
/// only one of them may give its unit up (the shrink needs one), the other's unit goes to
/// the waiter as a slot. Catches `shed_not_cas` (each closer checks `size > max_size` and
/// then lowers `size` on its own: both see 2 > 1, both give their unit up, `size` ends at 0
/// below `max_size` and the waiter is never served: deadlock).
#[test]
fn shrink_sheds_one_unit_per_excess() {
    loom::model(|| {
        let core = Arc::new(Core::new(2, &["a"]));
        let c1 = get(&core).unwrap();
        let c2 = get(&core).unwrap();
        core.resize(1);
        assert_eq!(core.size(), 2, "both lent: nothing to close yet");
        let a = spawn(&core, move |core| core.discard(c1));
        let b = spawn(&core, move |core| core.discard(c2));
        let c = get(&core).expect("get");
        assert!(core.size() <= 2, "size above the old max_size: {core:?}");
        core.give_back(c);
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(core.max_size(), 1);
        at_rest(&core);
        assert_eq!(
            core.size(),
            1,
            "the waiter's connection is the one unit left"
        );
    });
}

/// A connection closing in a pool one above its size (3 open, shrunk to 2) while the pool
/// grows back to 3 and a getter waits: whichever order, the waiter is served. The closer's
/// `max` may be the old one: the grow finds no free slot yet (3 of 3), then the closer gives
/// its unit up (3 → 2), and the slot that frees must still reach the waiter. Catches
/// `shed_no_recheck` (the closer does not look for waiters after its decrement: deadlock).
#[test]
fn shed_races_resize_up() {
    loom::model(|| {
        let core = Arc::new(Core::new(3, &["a"]));
        let c1 = get(&core).unwrap();
        let c2 = get(&core).unwrap();
        let c3 = get(&core).unwrap();
        core.resize(2);
        let waiter = spawn(&core, move |core| {
            let c = get(core).expect("get");
            core.give_back(c);
        });
        let closer = spawn(&core, move |core| core.discard(c1));
        let grower = spawn(&core, move |core| core.resize(3));
        waiter.join().unwrap();
        closer.join().unwrap();
        grower.join().unwrap();
        core.give_back(c2);
        core.give_back(c3);
        assert_eq!(core.max_size(), 3);
        at_rest(&core);
    });
}

/// Two healthy connections returned at once into a pool shrunk 2 → 1: one of them is the
/// excess and closes, the other stays idle. Catches `shrunk_return_not_cas` (each return
/// checks `size > max_size` and then closes on its own: both see 2 > 1, both close, and the
/// pool ends with no connection at all).
#[test]
fn two_returns_into_a_shrunk_pool_close_one() {
    loom::model(|| {
        let core = Arc::new(Core::new(2, &["a"]));
        let c1 = get(&core).unwrap();
        let c2 = get(&core).unwrap();
        core.resize(1);
        let a = spawn(&core, move |core| core.give_back(c1));
        let b = spawn(&core, move |core| core.give_back(c2));
        a.join().unwrap();
        b.join().unwrap();
        at_rest(&core);
        assert_eq!(
            (core.size(), core.idle()),
            (1, 1),
            "only the excess closed: {core:?}"
        );
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
        let returner = spawn(&core, move |core| core.give_back(c0));
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

/// The fail-fast `try_get` racing with a return while a slot is free: it gets the returned
/// connection or `None`, never dials, and takes nothing when it fails.
#[test]
fn try_get_races_return() {
    loom::model(|| {
        let core = Arc::new(Core::new(2, &["a"]));
        let c0 = get(&core).unwrap();
        let trier = spawn(&core, move |core| {
            if let Some(c) = core.try_get() {
                assert_eq!(c.id(), 0, "try_get may only hand out an idle connection");
                core.give_back(c);
            }
        });
        let returner = spawn(&core, move |core| core.give_back(c0));
        trier.join().unwrap();
        returner.join().unwrap();
        at_rest(&core);
        assert_eq!(core.opened(), 1, "try_get dialed");
    });
}

/// Two gets pick a failing backend whose backoff has passed, and whichever claims its probe
/// connects: the other never reads the list as empty (it dials, or sees the backend backed off
/// by the probe in flight), and once the connects that were made succeeded the backend is
/// online. Catches `pick_no_retry` (a pick whose claim lost to a probe that then succeeded
/// reports no backend) and `success_keeps_backoff` (a probe claimed just as another's
/// success cleared the failures leaves the healthy backend backed off).
#[test]
fn pick_races_successful_probe() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        core.fail_first_backend();
        let probe = |core: &Core| {
            let picked = core.pick();
            assert_ne!(picked, Pick::None, "a listed backend read as no backend");
            if picked == Pick::Dial {
                core.connect_ok_first();
            }
        };
        let other = spawn(&core, probe);
        probe(&core);
        other.join().unwrap();
        assert!(
            core.first_backend_online(),
            "every connect succeeded, yet the backend is backed off"
        );
    });
}

/// A connect failure while another getter waits: the failing get gives its slot back (to the
/// waiter, which then dials) and its backend's `size`. Catches `unit_guard_leaks` (the slot is
/// never given back: the waiter sleeps forever) and `opening_leaks_size` (the backend's `size`
/// keeps the failed connect).
#[test]
fn connect_failure_releases_slot() {
    loom::model(|| {
        let core = Arc::new(Core::new(1, &["a"]));
        let failing = spawn(&core, move |core| match block_on(core.get(false)) {
            Err(e) => assert_eq!(e, GetError::ConnectFailed),
            // It found the other getter's returned connection: no connect needed.
            Ok(c) => core.give_back(c),
        });
        let getter = spawn(&core, move |core| {
            let c = get(core).expect("get");
            core.give_back(c);
        });
        failing.join().unwrap();
        getter.join().unwrap();
        at_rest(&core);
    });
}
