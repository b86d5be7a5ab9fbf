//! Admission: the hard bound, waiting, hand-off, fail fast, timeouts, resize.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connpool::{Error, Pool, TestOnBorrow};
use support::faulty::{Fault, Faulty};

fn pool(m: &Faulty, max: usize) -> connpool::Builder<Faulty> {
    Pool::builder(m.clone())
        .max_size(max)
        .test_on_borrow(TestOnBorrow::Never)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_never_exceeds_max_under_64_tasks_with_random_holds() {
    let m = Faulty::new();
    let pool = pool(&m, 8).build().unwrap();
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let pool = pool.clone();
        let m = m.clone();
        let peak = Arc::clone(&peak);
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t);
            for _ in 0..200 {
                let c = pool.get().await.unwrap();
                let live = m.live();
                peak.fetch_max(live, Ordering::SeqCst);
                let st = pool.status();
                assert!(live <= 8, "live connections {live} > max_size 8");
                assert!(st.in_use <= 8, "in_use {} > 8", st.in_use);
                assert!(st.size <= 8, "size {} > 8", st.size);
                for _ in 0..rng.usize(0..4) {
                    tokio::task::yield_now().await;
                }
                if rng.usize(0..10) == 0 {
                    tokio::time::sleep(Duration::from_micros(rng.u64(0..200))).await;
                }
                drop(c);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = pool.status();
    assert_eq!(st.in_use, 0);
    assert_eq!(st.waiters, 0);
    assert_eq!(st.size, st.idle + st.in_use);
    assert_eq!(st.size, m.live());
    assert!(st.size <= 8);
    assert!(peak.load(Ordering::SeqCst) <= 8);
    let s = pool.stats();
    assert_eq!(s.gets, 64 * 200);
    assert_eq!(s.gets, s.hits + s.misses);
    assert_eq!(s.misses as usize, m.connects());
}

#[tokio::test(start_paused = true)]
async fn a_returned_connection_is_handed_to_the_waiter() {
    let m = Faulty::new();
    let pool = pool(&m, 1).build().unwrap();
    let held = pool.get().await.unwrap();
    let id = held.id;
    let p2 = pool.clone();
    let waiter = tokio::spawn(async move { p2.get().await.map(|c| c.id) });
    support::faulty::eventually("the getter waits", Duration::from_secs(5), || {
        pool.status().waiters == 1
    })
    .await;
    drop(held);
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(
        got, id,
        "the waiter gets the returned connection, no new dial"
    );
    assert_eq!(m.connects(), 1);
    let s = pool.stats();
    assert_eq!(s.waits, 1);
    assert_eq!((s.hits, s.misses), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn every_waiter_is_woken_by_back_to_back_releases() {
    // Two releases in a row must wake two waiters (a plain notify(1) would strand one).
    let m = Faulty::new();
    let pool = pool(&m, 2).build().unwrap();
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let p = pool.clone();
        waiters.push(tokio::spawn(async move { p.get().await.map(|c| c.id) }));
    }
    support::faulty::eventually("two waiters", Duration::from_secs(5), || {
        pool.status().waiters == 2
    })
    .await;
    drop(a);
    drop(b);
    for w in waiters {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("a waiter was stranded")
            .unwrap()
            .unwrap();
    }
    assert_eq!(m.connects(), 2);
}

#[tokio::test(start_paused = true)]
async fn zero_wait_timeout_fails_fast_with_exhausted() {
    let m = Faulty::new();
    // Zero never waits for a slot, but a connect that takes time is still allowed.
    m.connect_fault(Fault::Delay(Duration::from_millis(100)));
    let pool = pool(&m, 1).wait_timeout(Duration::ZERO).build().unwrap();
    let c = pool.get().await.unwrap();
    let err = pool.get().await.unwrap_err();
    assert!(matches!(err, Error::Exhausted), "{err}");
    assert_eq!(pool.stats().exhausted, 1);
    assert_eq!(pool.stats().waits, 0);
    drop(c);
    drop(pool.get().await.unwrap());
}

#[tokio::test]
async fn try_get_never_waits_and_never_dials() {
    let m = Faulty::new();
    let pool = pool(&m, 2).build().unwrap();
    assert!(
        matches!(pool.try_get(), Err(Error::Exhausted)),
        "no idle connection yet"
    );
    assert_eq!(m.connects(), 0, "try_get never dials");
    drop(pool.get().await.unwrap());
    let c = pool.try_get().unwrap();
    assert!(matches!(pool.try_get(), Err(Error::Exhausted)));
    drop(c);
    assert_eq!(m.connects(), 1);
    assert_eq!(pool.stats().exhausted, 2);
}

#[tokio::test(start_paused = true)]
async fn a_get_times_out_with_the_pools_counts() {
    let m = Faulty::new();
    let pool = pool(&m, 2)
        .wait_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let _a = pool.get().await.unwrap();
    let _b = pool.get().await.unwrap();
    let start = tokio::time::Instant::now();
    let err = pool.get().await.unwrap_err();
    let waited = start.elapsed();
    match err {
        Error::Timeout {
            max_size,
            size,
            in_use,
            waiters,
            waited: w,
            ..
        } => {
            assert_eq!((max_size, size, in_use, waiters), (2, 2, 2, 1));
            assert!(w >= Duration::from_millis(250));
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5));
    assert_eq!(pool.stats().timeouts, 1);
    assert_eq!(pool.status().waiters, 0);
    // get_timeout overrides wait_timeout.
    let start = tokio::time::Instant::now();
    assert!(pool
        .get_timeout(Duration::from_secs(3))
        .await
        .unwrap_err()
        .is_timeout());
    assert!(start.elapsed() >= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_bounds_a_hanging_connect() {
    let m = Faulty::new();
    m.connect_fault(Fault::Hang);
    let pool = pool(&m, 2)
        .wait_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = pool.get().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let st = pool.status();
    assert_eq!(
        (st.size, st.in_use),
        (0, 0),
        "the abandoned connect holds nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn resize_up_wakes_waiters_and_down_closes_the_surplus() {
    let m = Faulty::new();
    let pool = pool(&m, 2).max_size_limit(8).build().unwrap();
    let held: Vec<_> = vec![pool.get().await.unwrap(), pool.get().await.unwrap()];
    let p = pool.clone();
    let waiter = tokio::spawn(async move { p.get().await.map(|c| c.id) });
    support::faulty::eventually("a waiter", Duration::from_secs(5), || {
        pool.status().waiters == 1
    })
    .await;
    pool.set_max_size(3).unwrap();
    waiter.await.unwrap().unwrap();
    assert_eq!(pool.status().max_size, 3);
    // Grow to 6, fill it, then shrink to 2: idle surplus closes at once, lent surplus on return.
    pool.set_max_size(6).unwrap();
    let mut more = Vec::new();
    for _ in 0..4 {
        more.push(pool.get().await.unwrap());
    }
    assert_eq!(pool.status().in_use, 6);
    drop(more.drain(..2).collect::<Vec<_>>());
    assert_eq!(pool.status().idle, 2);
    pool.set_max_size(2).unwrap();
    let st = pool.status();
    assert_eq!(st.max_size, 2);
    assert_eq!(st.idle, 0, "idle surplus closed at once");
    drop(held);
    drop(more);
    let st = pool.status();
    assert_eq!(st.size, 2, "lent surplus closed on return");
    assert_eq!(m.live(), 2);
    assert!(pool.stats().closed_idle >= 4);
    // The limit and zero are rejected, naming the field.
    assert_eq!(pool.set_max_size(9).unwrap_err().field, "max_size");
    assert_eq!(pool.set_max_size(0).unwrap_err().field, "max_size");
    // The bound holds after the shrink.
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    assert!(pool
        .get_timeout(Duration::from_millis(10))
        .await
        .unwrap_err()
        .is_timeout());
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn max_idle_closes_the_surplus_on_return() {
    let m = Faulty::new();
    let pool = pool(&m, 4).max_idle(1).build().unwrap();
    let conns: Vec<_> = futures_join(&pool, 4).await;
    drop(conns);
    let st = pool.status();
    assert_eq!((st.idle, st.size), (1, 1));
    assert_eq!(pool.stats().closed_idle, 3);
    assert_eq!(m.live(), 1);
}

async fn futures_join(pool: &Pool<Faulty>, n: usize) -> Vec<connpool::Pooled<Faulty>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(pool.get().await.unwrap());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversubscribed_waiters_all_make_progress() {
    // 1,024 getters over 16 slots: every one finishes its rounds (no stall, no starvation).
    let m = Faulty::new();
    let pool = pool(&m, 16)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1024 {
        let pool = pool.clone();
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let c = pool.get().await.expect("no getter times out");
                tokio::task::yield_now().await;
                drop(c);
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 1024);
    assert_eq!(pool.stats().timeouts, 0);
    assert!(m.connects() <= 16);
    assert_eq!(pool.status().in_use, 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_turn_and_newcomers_do_not_barge() {
    // 64 tasks loop get -> yield -> drop over 4 slots. A task that returns a connection and
    // asks again at once must queue behind the waiters: every task is served about equally.
    let m = Faulty::new();
    let pool = pool(&m, 4).build().unwrap();
    let total = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let pool = pool.clone();
        let total = Arc::clone(&total);
        tasks.push(tokio::spawn(async move {
            let mut mine = 0usize;
            while total.fetch_add(1, Ordering::SeqCst) < 64 * 200 {
                let c = pool.get().await.unwrap();
                tokio::task::yield_now().await;
                drop(c);
                mine += 1;
            }
            mine
        }));
    }
    let mut served = Vec::new();
    for t in tasks {
        served.push(t.await.unwrap());
    }
    let (min, max) = (*served.iter().min().unwrap(), *served.iter().max().unwrap());
    assert!(
        max <= min + 2,
        "unfair service: the most served task got {max}, the least {min}"
    );
}

/// No stall window: 64 getters over 8 slots, each holding across a yield, on tokio's paused
/// clock. Time moves only when every task is parked on a timer, so a waiter whose wake-up
/// was lost (and that no later return rescues) would show as virtual time passing (its wait
/// would run to its 60 s deadline); with every wake-up delivered, none passes at all.
#[tokio::test(start_paused = true)]
async fn waiters_are_served_without_the_clock_moving() {
    let m = Faulty::new();
    let pool = pool(&m, 8)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let c = pool.get().await.expect("no getter times out");
                tokio::task::yield_now().await;
                drop(c);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "a waiter stalled");
    let s = pool.stats();
    assert_eq!((s.gets, s.timeouts), (64 * 20, 0));
    assert!(s.waits > 0, "getters did wait");
}

/// A full idle queue closes a returned connection only if no get waits for it: with
/// `max_idle(0)` a return hands its connection to the waiting get (no close, no new dial),
/// and the last return, with nobody waiting, closes it.
#[tokio::test(start_paused = true)]
async fn a_full_idle_queue_still_hands_a_returned_connection_to_a_waiter() {
    let m = Faulty::new();
    let pool = pool(&m, 1).max_idle(0).build().unwrap();
    let held = pool.get().await.unwrap();
    let p = pool.clone();
    let waiter = tokio::spawn(async move { p.get().await.map(|c| c.id) });
    while pool.status().waiters == 0 {
        tokio::task::yield_now().await;
    }
    let id = held.id;
    drop(held);
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        id,
        "the same connection, handed over"
    );
    let s = pool.stats();
    assert_eq!((s.connects, s.closed_idle), (1, 1), "{s:?}");
    assert_eq!(
        m.live(),
        0,
        "closed on the last return, with nobody waiting"
    );
}
