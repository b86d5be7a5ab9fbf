//! A pool shared across runtimes: built on one, used on others. Timers fire only while their
//! own runtime runs, so a get on one runtime must never depend on another runtime's timer (the
//! line's shared timer is kept by a waiter on the pool's own runtime only), and the pool must
//! stay usable from other runtimes after the one it was built on is gone. Real time (each
//! runtime has its own clock), with generous bounds that catch a hang.

mod support;

use std::time::Duration;

use connpool::{Error, Pool};
use support::faulty::{assert_at_rest, eventually, pool_of, Faulty};
use tokio::runtime::Runtime;
use tokio::time::Instant;

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

async fn waiters_reach(pool: &Pool<Faulty>, n: usize) {
    eventually(&format!("{n} waiters"), Duration::from_secs(10), || {
        pool.status().waiters == n
    })
    .await;
}

/// A pool of one, its connection held, and a get waiting with the pool's `wait_timeout` on a
/// runtime that then stops running tasks without dropping them (a current-thread runtime
/// outside `block_on`). Whichever runtime the pool was built on, a get on the other runtime
/// must still end at its own deadline: it may not depend on a timer of the stalled runtime.
fn stalled_waiter_leaves_others_on_time(build_on_stalled: bool) {
    const SHORT: Duration = Duration::from_millis(200);
    let (stalled, live) = (current_thread(), current_thread());
    let m = Faulty::new();
    let pool = if build_on_stalled {
        stalled.block_on(async { pool_of(&m, 1, SHORT) })
    } else {
        live.block_on(async { pool_of(&m, 1, SHORT) })
    };
    let held = live.block_on(pool.get()).unwrap();
    // The stalled runtime's waiter joins the line first (so it would take a shared timer).
    stalled.block_on(async {
        let p = pool.clone();
        tokio::spawn(async move { p.get().await.map(drop) });
        waiters_reach(&pool, 1).await;
    });
    // `stalled` now runs nothing: its waiter stays in line, its timers do not fire.
    let (tx, rx) = std::sync::mpsc::channel();
    let p = pool.clone();
    let live_thread = std::thread::spawn(move || {
        let r = live.block_on(async {
            let start = Instant::now();
            let r = p.get().await.map(drop);
            (start.elapsed(), r)
        });
        let _ = tx.send(r);
        live
    });
    let (waited, r) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the live runtime's get ended (it hung on the stalled runtime's timer)");
    let e = r.expect_err("the get times out");
    assert!(e.is_timeout(), "{e}");
    assert!(
        waited >= SHORT,
        "timed out after {waited:?}, before {SHORT:?}"
    );
    // Kept alive to the end (the pool may have been built on it).
    let _live = live_thread.join().unwrap();
    // The stalled runtime's waiter is still in line, and times out once it runs again.
    assert_eq!(pool.status().waiters, 1);
    stalled.block_on(eventually(
        "the stalled waiter's timeout",
        Duration::from_secs(30),
        || pool.stats().timeouts == 2,
    ));
    assert_eq!(pool.status().waiters, 0);
    drop(held);
    assert_at_rest(&pool, &m);
}

#[test]
fn a_stalled_runtime_delays_no_waiter_of_the_pools_own_runtime() {
    stalled_waiter_leaves_others_on_time(false);
}

#[test]
fn a_stalled_home_runtime_delays_no_waiter_of_another_runtime() {
    stalled_waiter_leaves_others_on_time(true);
}

/// The runtime the pool was built on shuts down (its background tasks end with it); the pool
/// goes on serving another runtime: hits, dials, waits with the pool's own timeout (no shared
/// timer is left to rely on), a timed-out wait, and close.
#[test]
fn the_pool_outlives_the_runtime_it_was_built_on() {
    let m = Faulty::new();
    let pool = {
        let home = current_thread();
        let pool = home.block_on(async { pool_of(&m, 2, Duration::from_millis(200)) });
        drop(home.block_on(pool.get()).unwrap());
        pool
    };
    let rt = multi_thread(2);
    rt.block_on(async {
        let bound = Duration::from_secs(30);
        // A hit, then a dial.
        let a = pool.get().await.unwrap();
        let b = tokio::time::timeout(bound, pool.get())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.connects(), 2);
        // A waiter served by a return, and one that times out.
        let p = pool.clone();
        let served = tokio::spawn(async move { p.get().await.map(|c| c.id) });
        waiters_reach(&pool, 1).await;
        let a_id = a.id;
        drop(a);
        assert_eq!(served.await.unwrap().unwrap(), a_id);
        // Both lent again: the next get must time out.
        let a = pool.get().await.unwrap();
        let started = Instant::now();
        match tokio::time::timeout(bound, pool.get()).await {
            Ok(Err(e)) => assert!(e.is_timeout(), "{e}"),
            Ok(Ok(_)) => panic!("the get was served with both connections lent"),
            Err(_) => panic!("the get hung past its timeout"),
        }
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop((a, b));
        let s = pool.stats();
        assert_eq!((s.waits, s.timeouts), (2, 1));
        assert_at_rest(&pool, &m);
        tokio::time::timeout(bound, pool.close()).await.unwrap();
        assert!(matches!(pool.get().await, Err(Error::Closed)));
        assert_eq!(m.live(), 0);
    });
}

/// How one get of [`mixed_waiters_on_two_runtimes_all_end_in_time`] ended.
#[derive(Default)]
struct Tally {
    served: u64,
    timed_out: u64,
    cancelled: u64,
}

/// Gets on two runtimes at once, over a pool of two: shared-deadline waiters on the pool's own
/// runtime, waiters on the other runtime (their own timers), gets with timeouts of their own,
/// and gets cancelled mid-wait, all in one line. No get hangs (a generous bound on real time),
/// none times out early, and the pool's counters match what the tasks saw. (Whether the line's
/// timer passes to the right waiter is the loom models' to show: here a waiter left unwatched
/// would still be served by the next return, late but not hung.)
#[test]
fn mixed_waiters_on_two_runtimes_all_end_in_time() {
    const TASKS: usize = 12;
    const ROUNDS: usize = 40;
    const WAIT: Duration = Duration::from_millis(40);
    const HANG: Duration = Duration::from_secs(5);
    let (home, other) = (multi_thread(1), multi_thread(1));
    let m = Faulty::new();
    let pool = home.block_on(async { pool_of(&m, 2, WAIT) });
    let spawn_on = |rt: &Runtime, seed: u64| {
        let pool = pool.clone();
        rt.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut t = Tally::default();
            for _ in 0..ROUNDS {
                let own = match rng.u8(0..4) {
                    0 => Some(Duration::from_millis(20)),
                    1 => Some(Duration::from_millis(70)),
                    _ => None,
                };
                let limit = own.unwrap_or(WAIT);
                let started = Instant::now();
                let get = async {
                    match own {
                        Some(d) => pool.get_timeout(d).await,
                        None => pool.get().await,
                    }
                };
                // One get in five is cancelled from outside after 5 ms (if still waiting).
                let r = if rng.u8(0..5) == 0 {
                    tokio::time::timeout(Duration::from_millis(5), get)
                        .await
                        .ok()
                } else {
                    Some(get.await)
                };
                let took = started.elapsed();
                assert!(
                    took < limit + HANG,
                    "a get took {took:?} for a {limit:?} deadline"
                );
                match r {
                    None => t.cancelled += 1,
                    Some(Ok(c)) => {
                        t.served += 1;
                        tokio::time::sleep(Duration::from_millis(rng.u64(0..15))).await;
                        drop(c);
                    }
                    Some(Err(e)) => {
                        assert!(e.is_timeout(), "{e}");
                        assert!(took >= limit, "timed out after {took:?}, before {limit:?}");
                        t.timed_out += 1;
                    }
                }
            }
            t
        })
    };
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let rt = if i % 2 == 0 { &home } else { &other };
            (rt, spawn_on(rt, i as u64))
        })
        .collect();
    let mut total = Tally::default();
    for (rt, task) in tasks {
        let t = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("the tasks end")
                .unwrap()
        });
        total.served += t.served;
        total.timed_out += t.timed_out;
        total.cancelled += t.cancelled;
    }
    assert_eq!(
        total.served + total.timed_out + total.cancelled,
        (TASKS * ROUNDS) as u64
    );
    let s = pool.stats();
    assert_eq!(s.gets, total.served, "{s:?}");
    assert_eq!(s.gets, s.hits + s.misses, "{s:?}");
    assert_eq!(s.timeouts, total.timed_out, "{s:?}");
    assert_eq!(s.cancelled, total.cancelled, "{s:?}");
    assert!(
        s.waits > 0 && total.timed_out > 0,
        "the line was used: {s:?}"
    );
    assert_at_rest(&pool, &m);
    assert!(pool.status().size <= 2);
}
