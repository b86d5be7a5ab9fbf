//! The maintenance task and the knobs it serves: idle_timeout, max_lifetime (jittered),
//! keepalive with check_retries, min_idle, test_on_borrow.

mod support;

use std::time::Duration;

use connpool::{Pool, TestOnBorrow};
use support::faulty::{eventually, Fault, Faulty};

const MIN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_connections_left_idle() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .idle_timeout(Some(Duration::from_secs(10)))
        .max_lifetime(None)
        .build()
        .unwrap();
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_secs(6)).await;
    drop(b);
    tokio::time::sleep(Duration::from_secs(6)).await;
    // a idled 12 s: closed in the background; b idled 6 s: kept.
    eventually("a closed", MIN, || m.live() == 1).await;
    assert_eq!(pool.status().idle, 1);
    eventually("b closed too", MIN, || m.live() == 0).await;
    assert_eq!(pool.stats().closed_idle, 2);
    assert_eq!(pool.status().size, 0);
}

#[tokio::test(start_paused = true)]
async fn a_get_never_receives_a_connection_past_its_idle_timeout() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .idle_timeout(Some(Duration::from_secs(10)))
        .maintenance_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let first = pool.get().await.unwrap().id;
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let c = pool.get().await.unwrap();
    assert_ne!(
        c.id, first,
        "the stale one was closed on get, a new one dialed"
    );
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_closes_old_connections_jittered() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(40)
        .max_lifetime(Some(Duration::from_secs(1000)))
        .idle_timeout(None)
        .test_on_borrow(TestOnBorrow::Never)
        .build()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(pool.get().await.unwrap());
    }
    drop(held);
    // Before 97.5 % of the lifetime nothing expires.
    tokio::time::sleep(Duration::from_secs(974)).await;
    assert_eq!(m.live(), 40);
    // Within the jitter window they expire at different times, not together.
    let mut seen_between = false;
    for _ in 0..26 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let live = m.live();
        if live > 0 && live < 40 {
            seen_between = true;
        }
    }
    assert!(
        seen_between,
        "lifetimes are jittered so a fleet does not expire at once"
    );
    // Jittered down only: by the full lifetime every one has expired, and one sweep (1 s
    // apart here) later every one is closed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        m.live(),
        0,
        "none outlives max_lifetime by more than a sweep"
    );
    assert_eq!(pool.stats().closed_lifetime, 40);
}

#[tokio::test(start_paused = true)]
async fn a_lent_connection_past_its_lifetime_is_closed_on_return() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_lifetime(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let c = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    drop(c);
    assert_eq!(m.live(), 0);
    assert_eq!(pool.stats().closed_lifetime, 1);
}

#[tokio::test(start_paused = true)]
async fn keepalive_pings_idle_connections_and_closes_after_check_retries_failures() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .keepalive(Some(Duration::from_secs(5)))
        .check_retries(3)
        .idle_timeout(None)
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    eventually("pinged", MIN, || m.checks() >= 2).await;
    assert_eq!(m.live(), 1, "passing pings keep it");
    m.check_fault(Fault::Fail);
    let before = m.checks();
    eventually("closed after failing pings", MIN, || m.live() == 0).await;
    assert_eq!(
        m.checks() - before,
        3,
        "exactly check_retries failures in a row"
    );
    let s = pool.stats();
    assert_eq!(s.check_failures, 3);
    assert_eq!(s.closed_broken, 1);
    assert_eq!(pool.status().size, 0);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_keepalive_check_is_bounded_by_check_timeout() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .keepalive(Some(Duration::from_secs(5)))
        .check_timeout(Duration::from_secs(1))
        .check_retries(1)
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    m.check_fault(Fault::Hang);
    eventually("closed after a hung check", MIN, || m.live() == 0).await;
    assert_eq!(pool.stats().check_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn min_idle_is_refilled() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(5)
        .min_idle(3)
        .build()
        .unwrap();
    eventually("min_idle opened", MIN, || pool.status().idle == 3).await;
    let held: Vec<_> = vec![pool.get().await.unwrap(), pool.get().await.unwrap()];
    eventually("refilled while two are lent", MIN, || {
        pool.status().idle == 3
    })
    .await;
    assert_eq!(pool.status().size, 5);
    drop(held);
    // max_idle defaults to max_size (5): both come back, nothing closes.
    assert_eq!(pool.status().idle, 5);
}

#[tokio::test(start_paused = true)]
async fn test_on_borrow_modes() {
    // Never: no checks.
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .test_on_borrow(TestOnBorrow::Never)
        .build()
        .unwrap();
    for _ in 0..5 {
        drop(pool.get().await.unwrap());
    }
    assert_eq!(m.checks(), 0);
    // Always: every get checks (the new one too).
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .test_on_borrow(TestOnBorrow::Always)
        .build()
        .unwrap();
    for _ in 0..5 {
        drop(pool.get().await.unwrap());
    }
    assert_eq!(m.checks(), 5);
    // IdleFor: only connections quiet that long.
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .test_on_borrow(TestOnBorrow::IdleFor(Duration::from_secs(2)))
        .build()
        .unwrap();
    for _ in 0..5 {
        drop(pool.get().await.unwrap());
    }
    assert_eq!(m.checks(), 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(pool.get().await.unwrap());
    assert_eq!(m.checks(), 1);
    // A stale idle connection that fails its check is closed and the get still succeeds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    m.check_fault(Fault::Fail);
    let c = pool.get().await.unwrap();
    assert_eq!(c.id, 1, "the failed one was replaced by a new connection");
    assert_eq!(pool.stats().check_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn check_timeout_bounds_a_check_on_borrow() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .test_on_borrow(TestOnBorrow::Always)
        .check_timeout(Duration::from_millis(100))
        .wait_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    m.check_fault(Fault::Hang);
    let start = tokio::time::Instant::now();
    // The idle connection's check hangs: cut at 100 ms, closed; the new one's check too.
    let err = pool.get().await.unwrap_err();
    assert!(err.is_check(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(pool.stats().check_failures, 2);
    assert_eq!(m.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn maintenance_interval_sets_how_often_the_pool_is_swept() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .min_idle(1)
        .max_size(2)
        .idle_timeout(None)
        .max_lifetime(None)
        .maintenance_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    eventually("min_idle opened at start", MIN, || pool.status().idle == 1).await;
    pool.get().await.unwrap().discard();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pool.status().idle, 0, "not refilled before the next sweep");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(pool.status().idle, 1, "refilled by the next sweep");
}

/// A failed ping is retried a keepalive interval later, not on the next pass: `check_retries`
/// tolerates an outage as long as `check_retries` keepalive intervals, not a burst of pings
/// milliseconds apart.
#[tokio::test(start_paused = true)]
async fn a_failed_ping_is_retried_a_keepalive_interval_later() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .keepalive(Some(Duration::from_secs(5)))
        .check_retries(3)
        .idle_timeout(None)
        .maintenance_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    m.check_fault(Fault::Fail);
    let checks = m.checks();
    eventually("a failed ping", MIN, || m.checks() > checks).await;
    let first = tokio::time::Instant::now();
    eventually("a second failed ping", MIN, || m.checks() > checks + 1).await;
    let gap = first.elapsed();
    assert!(
        gap >= Duration::from_millis(4_900),
        "retried {gap:?} after the failure, not a keepalive interval"
    );
    assert_eq!(m.live(), 1, "kept: 2 of 3 failures");
}

/// A ping cut short (timed out or panicked) leaves the connection in an unknown state (its
/// reply may still arrive): closed at once, whatever `check_retries` allows for failed pings.
#[tokio::test(start_paused = true)]
async fn a_ping_that_times_out_or_panics_closes_its_connection_at_once() {
    for fault in [Fault::Hang, Fault::Panic] {
        let m = Faulty::new();
        let pool = Pool::builder(m.clone())
            .keepalive(Some(Duration::from_secs(5)))
            .check_timeout(Duration::from_secs(1))
            .check_retries(3)
            .idle_timeout(None)
            .build()
            .unwrap();
        drop(pool.get().await.unwrap());
        m.check_fault(fault);
        let checks = m.checks();
        eventually("closed after one cut-short ping", MIN, || m.live() == 0).await;
        assert_eq!(
            m.checks() - checks,
            1,
            "{fault:?}: closed after its first ping"
        );
        assert_eq!(pool.stats().check_failures, 1, "{fault:?}");
    }
}

/// A backend removed while one of its idle connections is out for a ping: the purge cannot
/// see that connection, so the ping's end closes it (not back into the queue).
#[tokio::test(start_paused = true)]
async fn a_connection_whose_backend_left_during_its_ping_is_closed() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .backends([connpool::Backend::new("a:1")])
        .keepalive(Some(Duration::from_secs(5)))
        .idle_timeout(None)
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    m.check_fault(Fault::Delay(Duration::from_millis(500)));
    let checks = m.checks();
    eventually("the ping is in flight", MIN, || m.checks() > checks).await;
    pool.set_backends([connpool::Backend::new("b:2")]);
    assert_eq!(
        m.live_to("a:1"),
        1,
        "out of the queue: the purge did not see it"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(m.live_to("a:1"), 0, "closed when its ping ended");
    assert_eq!(pool.stats().closed_backend_gone, 1);
    assert_eq!(pool.status().idle, 0);
}

/// Keepalive pings run in batches: up to 8 at once, and never more than the connections left
/// in the idle queue (so gets still find half of them). A backend that stops answering costs
/// a pass one `check_timeout` per batch, not one per connection.
#[tokio::test(start_paused = true)]
async fn keepalive_pings_run_in_batches_leaving_half_the_idle_connections() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(16)
        .keepalive(Some(Duration::from_secs(5)))
        .check_timeout(Duration::from_secs(1))
        .idle_timeout(None)
        .test_on_borrow(TestOnBorrow::Never)
        .build()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(pool.get().await.unwrap());
    }
    drop(held);
    assert_eq!(pool.status().idle, 16);
    m.check_fault(Fault::Hang);
    let checks = m.checks();
    eventually("the first pings are in flight", MIN, || m.checks() > checks).await;
    assert_eq!(m.checks() - checks, 8, "a batch of 8 pings starts at once");
    assert_eq!(
        pool.status().idle,
        8,
        "half the idle connections stay queued"
    );
    // A get meanwhile is served from the queue, without waiting.
    let c = pool.try_get().expect("an idle connection left for gets");
    drop(c);
    // One check_timeout later the whole batch has timed out and closed (one at a time, a
    // single connection would have).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(m.live(), 8, "the batch closed together");
    assert_eq!(pool.stats().check_failures, 8);
    // The other quiet ones in batches of at most half the queue (4, 2, 1): one
    // check_timeout per batch. The one the get used is not due yet: it is pinged (and
    // closed) a keepalive interval after its use.
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    eventually("every quiet hung connection closed", MIN, || m.live() == 1).await;
    assert!(
        tokio::time::Instant::now() <= until,
        "the rest took one check_timeout per batch"
    );
    assert_eq!(pool.stats().check_failures, 15);
    eventually("the used one too, later", MIN, || m.live() == 0).await;
    assert_eq!(pool.stats().check_failures, 16);
}
