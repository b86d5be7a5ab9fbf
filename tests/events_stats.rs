//! Events fire with the backend's address and the close reason; stats add up.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use connpool::{Backend, CloseReason, Event, Pool, TestOnBorrow};
use support::faulty::{Fault, Faulty};

fn recorder() -> (
    Arc<Mutex<Vec<String>>>,
    impl Fn(&Event<'_>) + Send + Sync + 'static,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    (log, move |e: &Event<'_>| {
        let s = match e {
            Event::Connected { backend } => format!("connected {backend}"),
            Event::ConnectFailed { backend, .. } => format!("connect-failed {backend}"),
            Event::CheckPassed { backend } => format!("check-passed {backend}"),
            Event::CheckFailed { backend, error } => format!("check-failed {backend}: {error}"),
            Event::Closed { backend, reason } => format!("closed {backend} {reason:?}"),
            Event::Detached { backend } => format!("detached {backend}"),
            Event::BackendAdded { backend } => format!("added {backend}"),
            Event::BackendRemoved { backend } => format!("removed {backend}"),
            Event::BackendsChanged { backends } => format!("changed {}", backends.join(",")),
            Event::DiscoveryFailed { message } => format!("discovery-failed {message}"),
            Event::DiscoveryWarning { message } => format!("discovery-warning {message}"),
            _ => "other".to_owned(),
        };
        l2.lock().unwrap().push(s);
    })
}

#[tokio::test(start_paused = true)]
async fn events_name_the_backend_and_the_reason() {
    let m = Faulty::new();
    let (log, cb) = recorder();
    let pool = Pool::builder(m.clone())
        .test_on_borrow(TestOnBorrow::Always)
        .backends(vec![Backend::new("a:1")])
        .on_event(cb)
        .build()
        .unwrap();
    let c = pool.get().await.unwrap();
    c.discard();
    m.refuse("a:1", true);
    let _ = pool.get().await;
    // Past the backoff, a new connection fails its check on borrow.
    m.refuse("a:1", false);
    m.check_fault(Fault::Fail);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let e = pool.get().await.unwrap_err();
    assert!(e.is_check(), "{e}");
    assert!(e.to_string().contains("a:1"), "names the backend: {e}");
    let source = std::error::Error::source(&e).expect("the manager's error is the source");
    assert_eq!(source.to_string(), "check of FConn#1@a:1 refused");
    let first = log.lock().unwrap().clone();
    assert_eq!(
        first,
        vec![
            "connected a:1",
            "check-passed a:1",
            "closed a:1 Discarded",
            "connect-failed a:1",
            "connected a:1",
            "check-failed a:1: check of FConn#1@a:1 refused",
            "closed a:1 CheckFailed",
        ]
    );
    // A detached connection is evented too (it is not closed: its new owner has it).
    m.check_fault(Fault::Ok);
    let c = pool.get().await.unwrap();
    let own = c.detach();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        &log[log.len() - 3..],
        ["connected a:1", "check-passed a:1", "detached a:1"]
    );
    drop(own);
    assert_eq!(CloseReason::Discarded.to_string(), "discarded");
}

#[tokio::test(start_paused = true)]
async fn stats_add_up_and_only_grow() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(2)
        .test_on_borrow(TestOnBorrow::Never)
        .wait_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut last = pool.stats();
    let mut grow = |s: connpool::Stats| {
        assert!(s.gets >= last.gets && s.hits >= last.hits && s.misses >= last.misses);
        assert!(
            s.waits >= last.waits && s.timeouts >= last.timeouts && s.wait_time >= last.wait_time
        );
        assert_eq!(s.gets, s.hits + s.misses);
        last = s;
    };
    let a = pool.get().await.unwrap();
    grow(pool.stats());
    let b = pool.get().await.unwrap();
    let t = pool.get().await.unwrap_err();
    assert!(t.is_timeout());
    grow(pool.stats());
    drop(a);
    let c = pool.get().await.unwrap();
    grow(pool.stats());
    let s = pool.stats();
    assert_eq!(
        (s.gets, s.hits, s.misses, s.waits, s.timeouts, s.connects),
        (3, 1, 2, 1, 1, 2)
    );
    assert!(s.wait_time >= Duration::from_millis(100));
    c.discard();
    let detached = b.detach();
    assert_eq!(
        pool.status().size,
        0,
        "a detached connection leaves the pool's count"
    );
    assert_eq!(m.live(), 1, "but stays open for its new owner");
    drop(detached);
    let s = pool.stats();
    assert_eq!(s.closed_broken, 1);
    assert_eq!(s.detached, 1, "the detach is counted");
    let st = pool.status();
    assert_eq!((st.size, st.idle, st.in_use), (0, 0, 0));
    m.connect_fault(Fault::Fail);
    assert!(pool.get().await.unwrap_err().is_connect());
    assert_eq!(pool.stats().connect_errors, 1);
}

#[tokio::test]
async fn status_stats_and_guards_debug_print() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone()).build().unwrap();
    let c = pool.get().await.unwrap();
    let dbg = format!("{c:?} {pool:?}");
    assert!(dbg.contains("Pooled") && dbg.contains("Pool"), "{dbg}");
    assert_eq!(c.backend().addr(), "");
}

/// Counters only grow, and `gets == hits + misses` in every snapshot, also while gets that
/// hit and gets that dial run on other threads: a snapshot taken between a new connection's
/// lend and its count as a miss must not count that get as a hit (a later snapshot would
/// then count it as a miss, and `hits` would go down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_only_grow_while_gets_run_on_other_threads() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(4)
        .test_on_borrow(TestOnBorrow::Never)
        .build()
        .unwrap();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..5_000u32 {
                    let c = pool.get().await.unwrap();
                    // Every few gets one connection is discarded: the next get dials (a miss).
                    if (i + w) % 3 == 0 {
                        c.discard();
                    }
                }
            })
        })
        .collect();
    let sampler = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let mut last = pool.stats();
            let mut samples = 0u64;
            while last.gets < 20_000 {
                let s = pool.stats();
                assert!(
                    s.gets >= last.gets && s.hits >= last.hits && s.misses >= last.misses,
                    "went down: {last:?} then {s:?}"
                );
                assert_eq!(s.gets, s.hits + s.misses, "{s:?}");
                last = s;
                samples += 1;
            }
            samples
        })
    };
    for w in workers {
        w.await.unwrap();
    }
    let samples = sampler.join().unwrap();
    assert!(samples > 0);
    let s = pool.stats();
    assert_eq!(s.gets, 20_000);
    assert_eq!(s.misses, s.connects);
}

/// Every failed get is counted once, under the error it ended with; dials and checks are
/// counted apart (one get may fail over across several).
#[tokio::test(start_paused = true)]
async fn every_failed_get_is_counted_once_under_its_error() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(1)
        .test_on_borrow(TestOnBorrow::Always)
        .backoff_base(Duration::from_secs(1))
        .backoff_max(Duration::from_secs(1))
        .backends([Backend::new("a:1"), Backend::new("b:2")])
        .build()
        .unwrap();
    let mut failed = Vec::new();
    let mut fail = |e: connpool::Error<support::faulty::FaultError>| failed.push(e);

    fail(pool.try_get().unwrap_err()); // nothing idle
    let held = pool.get().await.unwrap();
    fail(
        pool.get_timeout(Duration::from_millis(100))
            .await
            .unwrap_err(),
    );
    drop(held);
    pool.get().await.unwrap().discard();
    m.refuse("a:1", true);
    m.refuse("b:2", true);
    fail(pool.get().await.unwrap_err()); // both dialed, both refused
    fail(pool.get().await.unwrap_err()); // both backed off: no dial
    m.refuse("a:1", false);
    m.refuse("b:2", false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    m.check_fault(Fault::Fail);
    fail(pool.get().await.unwrap_err()); // both dialed, both new connections fail the check
    m.check_fault(Fault::Ok);
    pool.set_backends([]);
    fail(pool.get().await.unwrap_err());
    pool.close().await;
    fail(pool.get().await.unwrap_err());
    fail(pool.try_get().unwrap_err());

    let kinds: Vec<&str> = failed
        .iter()
        .map(|e| match e {
            e if e.is_exhausted() => "exhausted",
            e if e.is_timeout() => "timeout",
            e if e.is_connect() => "connect",
            e if e.is_check() => "check",
            e if e.is_no_backends() => "no backends",
            e if e.is_closed() => "closed",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "exhausted",
            "timeout",
            "connect",
            "connect",
            "check",
            "no backends",
            "closed",
            "closed"
        ]
    );
    let s = pool.stats();
    assert_eq!(
        (
            s.exhausted,
            s.timeouts,
            s.failed_connect,
            s.backed_off,
            s.failed_check,
            s.no_backends,
            s.failed_closed
        ),
        (1, 1, 1, 1, 1, 1, 2)
    );
    let counted = s.exhausted
        + s.timeouts
        + s.failed_connect
        + s.backed_off
        + s.failed_check
        + s.no_backends
        + s.failed_closed;
    assert_eq!(counted, failed.len() as u64);
    assert_eq!(s.gets, 2);
    // Dials and checks, counted apart: two refused dials, two failed checks.
    assert_eq!((s.connect_errors, s.check_failures), (2, 2));
}

/// A get dropped while it waits (a caller's own timeout, a `select!`) waited too: its wait
/// counts in `wait_time`, not only in `waits`.
#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_counts_in_wait_time() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone()).max_size(1).build().unwrap();
    let held = pool.get().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(1), pool.get())
        .await
        .is_err());
    let s = pool.stats();
    assert_eq!((s.waits, s.cancelled), (1, 1));
    assert_eq!(
        s.wait_time,
        Duration::from_secs(1),
        "the cancelled wait's length"
    );
    drop(held);
}
