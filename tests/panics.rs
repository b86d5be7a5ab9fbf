//! Panics are contained: in connect, check, is_reusable, callbacks, and in a task holding a
//! connection. No slot leaks, no counter is corrupted, the pool keeps serving.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connpool::{Event, Pool, TestOnBorrow};
use support::faulty::{assert_at_rest, eventually, until_at_rest, Fault, Faulty};

const MIN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn a_panicking_connect_is_a_connect_error_and_leaks_nothing() {
    let m = Faulty::new();
    m.connect_fault(Fault::Panic);
    let pool = Pool::builder(m.clone()).max_size(1).build().unwrap();
    let err = pool.get().await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
    assert_at_rest(&pool, &m);
    m.connect_fault(Fault::Ok);
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(
        pool.get_timeout(Duration::ZERO)
            .await
            .expect("the slot came back"),
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_check_closes_that_connection_only() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(1)
        .test_on_borrow(TestOnBorrow::Always)
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    m.check_fault(Fault::Panic);
    // The idle one fails its (panicking) check and is closed; a new one fails the same way.
    let err = pool.get().await.unwrap_err();
    assert!(err.is_check(), "{err}");
    assert_at_rest(&pool, &m);
    assert_eq!(pool.stats().check_failures, 2);
    m.check_fault(Fault::Ok);
    drop(pool.get_timeout(Duration::ZERO).await.unwrap());
}

/// A manager's `connect` and `check` may be plain `fn`s returning `impl Future`, and panic
/// in the call itself, before any future exists: contained like a panic inside the future.
#[tokio::test(start_paused = true)]
async fn a_connect_or_check_that_panics_before_its_future_is_contained() {
    let m = Faulty::new();
    m.connect_fault(Fault::PanicEarly);
    let pool = Pool::builder(m.clone())
        .max_size(1)
        .test_on_borrow(TestOnBorrow::Always)
        .build()
        .unwrap();
    let err = pool.get().await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(err.to_string().contains("before its future"), "{err}");
    assert_at_rest(&pool, &m);
    m.connect_fault(Fault::Ok);
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(pool.get().await.expect("the slot came back"));
    m.check_fault(Fault::PanicEarly);
    let err = pool.get().await.unwrap_err();
    assert!(err.is_check(), "{err}");
    assert!(err.to_string().contains("before its future"), "{err}");
    assert_at_rest(&pool, &m);
    m.check_fault(Fault::Ok);
    drop(pool.get_timeout(Duration::ZERO).await.unwrap());
}

/// The maintenance task dials for `min_idle` and checks for keepalive: a manager that panics
/// in the call must not end it (it would then never refill, sweep or ping again).
#[tokio::test(start_paused = true)]
async fn maintenance_survives_a_connect_and_a_check_that_panic_before_their_futures() {
    let m = Faulty::new();
    m.connect_fault(Fault::PanicEarly);
    let pool = Pool::builder(m.clone())
        .max_size(4)
        .min_idle(2)
        .keepalive(Some(Duration::from_secs(1)))
        .check_retries(1)
        .maintenance_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    // Several passes, each of whose refills panic.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pool.status().size, 0);
    m.connect_fault(Fault::Ok);
    eventually("min_idle refilled after the panics", MIN, || {
        pool.status().idle == 2
    })
    .await;
    // Keepalive's pings panic: each closes its connection (one failed check is enough
    // here), and the pool is refilled once pings pass again.
    let before = pool.stats().connects;
    m.check_fault(Fault::PanicEarly);
    eventually("panicking pings counted", MIN, || {
        pool.stats().check_failures >= 2
    })
    .await;
    m.check_fault(Fault::Ok);
    eventually("still maintained after the panicking pings", MIN, || {
        pool.stats().connects >= before + 2 && pool.status().idle == 2
    })
    .await;
    assert_at_rest(&pool, &m);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_is_reusable_discards_the_connection() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone()).max_size(1).build().unwrap();
    let c = pool.get().await.unwrap();
    m.panic_in_reusable(true);
    drop(c);
    assert_at_rest(&pool, &m);
    assert_eq!(m.live(), 0);
    assert_eq!(pool.stats().closed_broken, 1);
    m.panic_in_reusable(false);
    drop(pool.get_timeout(Duration::ZERO).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_by_a_panicking_task_is_discarded() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(2)
        .test_on_borrow(TestOnBorrow::Never)
        .build()
        .unwrap();
    let p = pool.clone();
    let r = tokio::spawn(async move {
        let _c = p.get().await.unwrap();
        panic!("the user's task panics while holding a connection");
    })
    .await;
    assert!(r.unwrap_err().is_panic());
    assert_at_rest(&pool, &m);
    assert_eq!(m.live(), 0, "not reused: closed");
    assert_eq!(pool.stats().closed_broken, 1);
    // Unrelated callers are unaffected.
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_callback_does_not_disturb_the_pool_or_other_callbacks() {
    let m = Faulty::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let pool = Pool::builder(m.clone())
        .on_event(|e| {
            if matches!(e, Event::Connected { .. }) {
                panic!("callback panics");
            }
        })
        .on_event(move |e| {
            if matches!(e, Event::Connected { .. }) {
                s2.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    let c = pool.get().await.unwrap();
    drop(c);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_at_rest(&pool, &m);
    assert_eq!(pool.stats().gets, 1);
}

/// The manager's callbacks panic by turns (in their futures and before them), an event
/// callback panics on every event (from gets, returns, closes and the maintenance task), and
/// tasks panic holding connections: the counts stay true and the pool keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_panics_in_every_callback_keep_the_counts_true() {
    let m = Faulty::new();
    let delivered = Arc::new(AtomicUsize::new(0));
    let d2 = delivered.clone();
    let pool = Pool::builder(m.clone())
        .max_size(4)
        .min_idle(1)
        .max_lifetime(Some(Duration::from_millis(30)))
        .maintenance_interval(Duration::from_millis(10))
        .test_on_borrow(TestOnBorrow::Always)
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(50))
        .on_event(|_| panic!("event callback panicked"))
        .on_event(move |_| {
            d2.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let p = pool.clone();
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            match i % 7 {
                0 => m.connect_fault(Fault::Panic),
                1 => m.check_fault(Fault::Panic),
                2 => m.panic_in_reusable(true),
                3 => m.connect_fault(Fault::PanicEarly),
                4 => m.check_fault(Fault::PanicEarly),
                _ => {
                    m.connect_fault(Fault::Ok);
                    m.check_fault(Fault::Ok);
                    m.panic_in_reusable(false);
                }
            }
            if let Ok(c) = p.get().await {
                tokio::task::yield_now().await;
                if i % 11 == 0 {
                    panic!("task panics holding a connection");
                }
                drop(c);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    m.connect_fault(Fault::Ok);
    m.check_fault(Fault::Ok);
    m.panic_in_reusable(false);
    // The maintenance task retires (30 ms lifetime) and refills (min_idle 1) every 10 ms, so
    // at any instant a refill may be in flight; the pool must come to rest, not be at rest.
    until_at_rest(&pool, &m, MIN).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // let any backoff pass
    let mut all = Vec::new();
    for _ in 0..4 {
        all.push(pool.get().await.unwrap());
    }
    drop(all);
    let s = pool.stats();
    assert_eq!(s.gets, s.hits + s.misses);
    // The other callback saw events all along, and the maintenance task still runs (it
    // retires connections past their 30 ms lifetime and refills min_idle).
    assert!(delivered.load(Ordering::SeqCst) > 0);
    let retired = s.closed_lifetime;
    eventually("maintenance still retires and refills", MIN, || {
        pool.stats().closed_lifetime > retired && pool.status().idle >= 1
    })
    .await;
}
