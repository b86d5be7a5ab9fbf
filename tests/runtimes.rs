//! A pool shared across runtimes: built on one, used on others. Timers fire only while their
//! own runtime runs, so a get on one runtime must never depend on another runtime's timer (the
//! line's shared timer is kept by a waiter on the pool's own runtime only), and the pool must
//! stay usable from other runtimes after the one it was built on is gone. Real time (each
//! runtime has its own clock), with generous bounds that catch a hang.

mod support;

use std::time::Duration;

use connpool::{Error, Pool, TestOnBorrow};
use support::faulty::{assert_at_rest, eventually, Faulty};
use tokio::runtime::Runtime;
use tokio::time::Instant;

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
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
    let build = |m: &Faulty| {
        Pool::builder(m.clone())
            .max_size(1)
            .wait_timeout(SHORT)
            .test_on_borrow(TestOnBorrow::Never)
            .build()
            .unwrap()
    };
    let pool = if build_on_stalled {
        stalled.block_on(async { build(&m) })
    } else {
        live.block_on(async { build(&m) })
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
        let pool = home.block_on(async {
            Pool::builder(m.clone())
                .max_size(2)
                .wait_timeout(Duration::from_millis(200))
                .test_on_borrow(TestOnBorrow::Never)
                .build()
                .unwrap()
        });
        drop(home.block_on(pool.get()).unwrap());
        pool
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
