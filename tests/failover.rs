//! Failing backends: fail over to the next, back off the failing one (capped, jittered),
//! probe it back in, fail fast when all fail, diagnostic timeouts.

mod support;

use std::time::Duration;

use connpool::{Backend, Error, Pool, TestOnBorrow};
use support::faulty::{Fault, Faulty};

fn list() -> Vec<Backend> {
    ["a:1", "b:2", "c:3"].map(Backend::new).to_vec()
}

#[tokio::test(start_paused = true)]
async fn a_refusing_backend_is_backed_off_and_the_others_serve() {
    let m = Faulty::new();
    m.refuse("b:2", true);
    let pool = Pool::builder(m.clone())
        .max_size(60)
        .backoff_base(Duration::from_secs(1))
        .backoff_max(Duration::from_secs(8))
        .backends(list())
        .build()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..60 {
        // Every get succeeds: a refused dial fails over to the next backend.
        held.push(pool.get().await.expect("the others serve"));
    }
    assert_eq!(m.connects_to("b:2"), 0);
    assert_eq!(m.connects_to("a:1") + m.connects_to("c:3"), 60);
    assert_eq!(
        m.refused(),
        1,
        "backed off after its first failure: no dial storm"
    );
    let st = pool.status();
    let b = st.backends.iter().find(|b| b.addr == "b:2").unwrap();
    assert!(!b.online);
    assert_eq!(b.connect_errors, 1);
    assert_eq!(pool.stats().connect_errors, 1);
    drop(held);

    // Still refusing after the backoff: probed once, backed off again for longer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pool2 = pool.clone();
    for _ in 0..30 {
        drop(pool2.get().await.unwrap());
    }
    // It recovers: the next probe after its backoff brings it back.
    m.refuse("b:2", false);
    tokio::time::sleep(Duration::from_secs(20)).await;
    pool.set_max_size(100).unwrap();
    let mut held = Vec::new();
    for _ in 0..90 {
        held.push(pool.get().await.unwrap());
    }
    assert!(m.connects_to("b:2") > 0, "probed back in once it answers");
    let st = pool.status();
    assert!(st.backends.iter().all(|b| b.online), "{st:?}");
    assert!(
        m.refused() <= 3,
        "backoff kept the dials to the failing backend few: {}",
        m.refused()
    );
}

#[tokio::test(start_paused = true)]
async fn when_every_backend_fails_get_fails_fast_with_the_last_connect_error() {
    let m = Faulty::new();
    m.connect_fault(Fault::Fail);
    let pool = Pool::builder(m.clone())
        .wait_timeout(Duration::from_secs(30))
        .backends(list())
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = pool.get().await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "no waiting out the timeout"
    );
    match &err {
        Error::Connect {
            backend, source, ..
        } => {
            assert!(["a:1", "b:2", "c:3"].contains(&backend.as_str()));
            assert!(source.as_ref().unwrap().0.contains("refused"));
        }
        other => panic!("expected Connect, got {other}"),
    }
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(
        m.refused(),
        3,
        "tried every backend once (connect_attempts 3)"
    );
    // While all are backed off, gets fail at once without dialing, naming the last error.
    let err = pool.get().await.unwrap_err();
    match &err {
        Error::Connect {
            source: None,
            message,
            ..
        } => {
            assert!(
                message.contains("backed off") && message.contains("refused"),
                "{message}"
            )
        }
        other => panic!("expected a backed-off Connect, got {other}"),
    }
    assert_eq!(m.refused(), 3);
    let s = pool.stats();
    assert_eq!((s.connect_errors, s.backed_off), (3, 1));
    assert_eq!(pool.status().size, 0);
    // Recovers by itself once a backend answers.
    m.connect_fault(Fault::Ok);
    tokio::time::sleep(Duration::from_secs(15)).await;
    drop(pool.get().await.expect("recovered"));
}

#[tokio::test(start_paused = true)]
async fn connect_attempts_bounds_the_failover() {
    let m = Faulty::new();
    m.connect_fault(Fault::Fail);
    let pool = Pool::builder(m.clone())
        .connect_attempts(2)
        .backends(list())
        .build()
        .unwrap();
    assert!(pool.get().await.unwrap_err().is_connect());
    assert_eq!(m.refused(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_backend_costs_connect_timeout_then_the_next_serves() {
    let m = Faulty::new();
    m.connect_fault_for("a:1", Fault::Hang);
    m.connect_fault_for("b:2", Fault::Hang);
    let pool = Pool::builder(m.clone())
        .connect_timeout(Duration::from_millis(100))
        .wait_timeout(Duration::from_secs(10))
        .backends(list())
        .build()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..6 {
        let start = tokio::time::Instant::now();
        held.push(pool.get().await.expect("c:3 serves"));
        assert!(start.elapsed() <= Duration::from_millis(250));
    }
    assert_eq!(m.connects_to("c:3"), 6);
    let down = pool.status().backends.iter().filter(|b| !b.online).count();
    assert_eq!(down, 2);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_carries_the_last_connect_error() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(1)
        .wait_timeout(Duration::from_millis(100))
        .backends(list())
        .build()
        .unwrap();
    m.connect_fault_for("a:1", Fault::Fail);
    m.connect_fault_for("b:2", Fault::Fail);
    m.connect_fault_for("c:3", Fault::Fail);
    let _ = pool.get().await;
    m.connect_fault_for("a:1", Fault::Ok);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let held = pool.get().await.unwrap();
    let err = pool.get().await.unwrap_err();
    match err {
        Error::Timeout {
            last_connect_error: Some(e),
            ..
        } => assert!(e.contains("refused"), "{e}"),
        other => panic!("expected a timeout with the last connect error, got {other}"),
    }
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn a_fresh_connection_that_fails_its_check_is_a_check_error() {
    let m = Faulty::new();
    m.check_fault(Fault::Fail);
    let pool = Pool::builder(m.clone())
        .test_on_borrow(TestOnBorrow::Always)
        .backends(vec![Backend::new("a:1")])
        .build()
        .unwrap();
    let err = pool.get().await.unwrap_err();
    assert!(err.is_check(), "{err}");
    assert_eq!(err.backend(), Some("a:1"));
    assert_eq!(m.live(), 0);
    assert_eq!(pool.stats().check_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_backed_off_backends_share_spreads_over_all_the_others() {
    let m = Faulty::new();
    let four = ["a:1", "b:2", "c:3", "d:4"].map(Backend::new).to_vec();
    let pool = Pool::builder(m.clone())
        .max_size(61)
        .backoff_base(Duration::from_secs(60))
        .backoff_max(Duration::from_secs(60))
        .backends(four)
        .build()
        .unwrap();
    m.refuse("b:2", true);
    let mut held = Vec::new();
    for _ in 0..61 {
        held.push(pool.get().await.unwrap());
    }
    // One dial failed over from b; the 61 connections are spread evenly over a, c and d
    // (20 each, give or take the picks made before b's first failure, which depend on the
    // random start), not piled onto b's neighbour (which would get about 30 of them).
    assert_eq!(m.refused(), 1);
    for a in ["a:1", "c:3", "d:4"] {
        let n = m.connects_to(a);
        assert!((18..=23).contains(&n), "{a}: {n}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_whose_background_check_failed_is_checked_before_it_is_lent() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .test_on_borrow(TestOnBorrow::Never)
        .keepalive(Some(Duration::from_secs(1)))
        .check_retries(3)
        .build()
        .unwrap();
    let first = pool.get().await.unwrap().id;
    m.check_fault(Fault::Fail);
    support::faulty::eventually("one failed ping", Duration::from_secs(60), || {
        pool.stats().check_failures >= 1
    })
    .await;
    // Kept (1 of 3 failures) but never lent unchecked: the get checks it, it fails again and
    // is closed, and a new connection is dialed.
    let c = pool.get().await.unwrap();
    assert_ne!(c.id, first);
    // A check failure that leaves the connection unusable closes it at once.
    drop(c);
    m.set_reusable(false);
    let before = pool.stats();
    support::faulty::eventually("closed after one failure", Duration::from_secs(60), || {
        pool.stats().closed_broken > before.closed_broken
    })
    .await;
    assert_eq!(m.live(), 0);
    assert_eq!(pool.stats().check_failures, before.check_failures + 1);
}

/// `try_get` cannot check (it never waits), so it passes over a connection whose background
/// check failed rather than lend it unchecked, and leaves it idle for a `get`, which checks it.
#[tokio::test(start_paused = true)]
async fn try_get_passes_over_a_connection_whose_background_check_failed() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(2)
        .test_on_borrow(TestOnBorrow::Never)
        .keepalive(Some(Duration::from_secs(1)))
        .check_retries(3)
        .build()
        .unwrap();
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    let suspect = a.id;
    drop(a);
    m.check_fault(Fault::Fail);
    support::faulty::eventually("one failed ping", Duration::from_secs(60), || {
        pool.stats().check_failures >= 1
    })
    .await;
    m.check_fault(Fault::Ok);
    let err = pool
        .try_get()
        .expect_err("the only idle connection is suspect");
    assert!(err.is_exhausted(), "{err}");
    assert_eq!(pool.status().idle, 1, "passed over, not closed");
    // With a sound connection idle beside it, that one is lent, and the suspect stays idle.
    drop(b);
    let sound = pool.try_get().expect("the sound connection");
    assert_ne!(sound.id, suspect);
    assert_eq!(pool.status().idle, 1);
    drop(sound);
    // A get checks the suspect before lending it (the check passes now).
    let checks = m.checks();
    let got = [pool.get().await.unwrap(), pool.get().await.unwrap()];
    assert!(got.iter().any(|c| c.id == suspect));
    assert_eq!(
        m.checks(),
        checks + 1,
        "only the suspect is checked on borrow"
    );
}

/// One probe at a time, for as long as it takes: while a probe of a failing backend hangs
/// (a blackholed host, up to `connect_timeout`), other gets do not start probes of their own
/// every time the (shorter) backoff passes; they fail fast instead.
#[tokio::test(start_paused = true)]
async fn a_hanging_probe_holds_off_other_probes_for_its_connect_timeout() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .backends([Backend::new("a:1")])
        .max_size(32)
        .connect_timeout(Duration::from_secs(1))
        .backoff_base(Duration::from_millis(50))
        .backoff_max(Duration::from_millis(50))
        .build()
        .unwrap();
    m.connect_fault(Fault::Fail);
    assert!(pool.get().await.unwrap_err().is_connect());
    m.connect_fault(Fault::Hang);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 20 gets, 20 ms apart, while the first one's probe hangs.
    let mut gets = Vec::new();
    for _ in 0..20 {
        let p = pool.clone();
        gets.push(tokio::spawn(async move { p.get().await.map(drop) }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for g in gets {
        let r = g.await.unwrap();
        assert!(
            matches!(r, Err(ref e) if e.is_connect() || e.is_timeout()),
            "{r:?}"
        );
    }
    assert_eq!(m.attempts_to("a:1"), 2, "the refused dial, then one probe");
}

/// A `wait_timeout` below `connect_timeout` (the README's quick start: 200 ms against 5 s):
/// a dial to a blackholed backend that took the get's whole timeout is a failed connect (the
/// backend is backed off, the failure counted, evented and quoted by the timeout), so the
/// following gets go to the other backend instead of timing out on the silent one in turn.
#[tokio::test(start_paused = true)]
async fn a_dial_cut_by_a_short_wait_timeout_backs_the_silent_backend_off() {
    let m = Faulty::new();
    m.connect_fault_for("a:1", Fault::Hang);
    let pool = Pool::builder(m.clone())
        .wait_timeout(Duration::from_millis(200))
        .test_on_borrow(TestOnBorrow::Never)
        .backends([Backend::new("a:1"), Backend::new("b:2")])
        .build()
        .unwrap();
    let (mut held, mut timeouts) = (Vec::new(), 0);
    for _ in 0..10 {
        match pool.get().await {
            Ok(c) => held.push(c),
            Err(e) => {
                match &e {
                    Error::Timeout {
                        last_connect_error: Some(last),
                        ..
                    } => assert!(last.contains("a:1") && last.contains("timed out"), "{last}"),
                    other => panic!("expected a timeout naming a:1's connect, got {other}"),
                }
                timeouts += 1;
            }
        }
    }
    assert_eq!(timeouts, 1, "only the first get tried the silent backend");
    assert_eq!(m.connects_to("b:2"), 9);
    let s = pool.stats();
    assert_eq!((s.connect_errors, s.timeouts), (1, 1));
    let a = &pool.status().backends[0];
    assert!(
        !a.online && a.connect_errors == 1,
        "a:1 is backed off: {a:?}"
    );
}

/// A dial cut short by a get's deadline after less than the pool's `wait_timeout` (a get
/// with a short timeout of its own) says nothing about the backend: no failure is recorded.
#[tokio::test(start_paused = true)]
async fn a_dial_cut_by_a_short_get_timeout_of_its_own_is_not_a_failure() {
    let m = Faulty::new();
    m.connect_fault(Fault::Delay(Duration::from_millis(300)));
    let pool = Pool::builder(m.clone())
        .wait_timeout(Duration::from_secs(1))
        .backends([Backend::new("a:1")])
        .build()
        .unwrap();
    let e = pool
        .get_timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let s = pool.stats();
    assert_eq!((s.connect_errors, s.timeouts), (0, 1));
    assert!(pool.status().backends[0].online);
    // The next get dials at once and is served.
    drop(pool.get().await.expect("not backed off"));
}

/// A probe that ends without a verdict (its get was dropped mid-connect, or ran out of time
/// too soon to blame the backend) releases its claim: the next get probes at once, instead
/// of failing fast as "backed off" until `connect_timeout` has passed.
#[tokio::test(start_paused = true)]
async fn a_probe_cut_short_without_a_verdict_releases_its_claim() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .backends([Backend::new("a:1")])
        .test_on_borrow(TestOnBorrow::Never)
        .build()
        .unwrap();
    m.connect_fault(Fault::Fail);
    assert!(pool.get().await.unwrap_err().is_connect());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Past the backoff: this get claims the probe, and its caller gives up mid-connect.
    m.connect_fault(Fault::Delay(Duration::from_millis(100)));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), pool.get())
            .await
            .is_err(),
        "still connecting when dropped"
    );
    m.connect_fault(Fault::Ok);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Discarded: no idle connection may serve the gets below (they must dial).
    pool.get().await.expect("probed again at once").discard();
    // And a probe cut by a short get timeout of its own, likewise.
    m.connect_fault(Fault::Fail);
    drop(pool.get().await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.connect_fault(Fault::Delay(Duration::from_millis(100)));
    assert!(pool
        .get_timeout(Duration::from_millis(20))
        .await
        .unwrap_err()
        .is_timeout());
    m.connect_fault(Fault::Ok);
    drop(pool.get().await.expect("probed again at once"));
}
