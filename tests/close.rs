//! Closing: waiters see Closed at once, everything is closed, tasks stop; dropping the last
//! handle does the same.

mod support;

use std::time::Duration;

use connpool::{Error, Pool, TestOnBorrow};
use support::faulty::{eventually, Faulty};

/// A pool of two with no check on borrow.
fn pool_of_two(m: &Faulty) -> Pool<Faulty> {
    Pool::builder(m.clone())
        .max_size(2)
        .test_on_borrow(TestOnBorrow::Never)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn close_wakes_waiters_and_closes_everything() {
    let m = Faulty::new();
    let pool = pool_of_two(&m);
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    drop(b); // one idle
    let c = pool.get().await.unwrap();
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let p = pool.clone();
        waiters.push(tokio::spawn(async move { p.get().await.map(|_| ()) }));
    }
    eventually("five waiters", Duration::from_secs(5), || {
        pool.status().waiters == 5
    })
    .await;
    let closer = {
        let p = pool.clone();
        tokio::spawn(async move { p.close().await })
    };
    for w in waiters {
        let r = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(r, Err(Error::Closed)),
            "a waiter sees Closed at once"
        );
    }
    assert!(pool.is_closed());
    assert!(matches!(pool.get().await, Err(Error::Closed)));
    assert!(matches!(pool.try_get(), Err(Error::Closed)));
    assert!(
        !closer.is_finished(),
        "close() waits for the lent connections"
    );
    drop(a);
    assert_eq!(m.live(), 1);
    drop(c);
    tokio::time::timeout(Duration::from_secs(5), closer)
        .await
        .expect("close returns once the last lent connection is back")
        .unwrap();
    assert_eq!(m.live(), 0);
    let st = pool.status();
    assert_eq!((st.size, st.idle, st.in_use, st.waiters), (0, 0, 0, 0));
    // Idempotent.
    tokio::time::timeout(Duration::from_secs(1), pool.close())
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_of_an_idle_pool_returns_at_once() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .min_idle(3)
        .max_size(4)
        .build()
        .unwrap();
    eventually("min_idle filled", Duration::from_secs(10), || m.live() == 3).await;
    tokio::time::timeout(Duration::from_secs(1), pool.close())
        .await
        .unwrap();
    assert_eq!(m.live(), 0);
    // The maintenance task has stopped: it neither refills min_idle nor dials, however long
    // we wait.
    let connects = m.connects();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!((m.live(), m.connects()), (0, connects));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_closes_the_pool_and_stops_its_task() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .min_idle(2)
        .max_size(4)
        .keepalive(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    eventually("min_idle filled", Duration::from_secs(10), || m.live() == 2).await;
    let lent = pool.get().await.unwrap();
    let checks = m.checks();
    drop(pool);
    assert_eq!(
        m.live(),
        1,
        "idle connections close when the last handle drops"
    );
    drop(lent);
    assert_eq!(m.live(), 0, "a lent connection closes when it comes back");
    // The maintenance task holds no strong reference and has stopped: no more checks, no
    // refill, however long we wait.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(m.live(), 0);
    assert_eq!(m.checks(), checks);
}

#[tokio::test(start_paused = true)]
async fn a_connect_finishing_after_close_is_closed_not_handed_out() {
    let m = Faulty::new();
    m.connect_fault(support::faulty::Fault::Delay(Duration::from_millis(100)));
    let pool = Pool::builder(m.clone()).build().unwrap();
    let p = pool.clone();
    let get = tokio::spawn(async move { p.get().await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let closing = {
        let p = pool.clone();
        tokio::spawn(async move { p.close().await })
    };
    let r = get.await.unwrap();
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    tokio::time::timeout(Duration::from_secs(5), closing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_close_bounded_by_a_timeout_still_closes_and_can_be_awaited_again() {
    let m = Faulty::new();
    let pool = pool_of_two(&m);
    let held = pool.get().await.unwrap();
    drop(pool.get().await.unwrap()); // one idle
                                     // The holder keeps its connection past the bound: the wait is cut short, the pool is closed.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), pool.close())
            .await
            .is_err()
    );
    assert!(pool.is_closed());
    assert!(matches!(pool.get().await, Err(Error::Closed)));
    assert_eq!(
        (m.live(), pool.status().size),
        (1, 1),
        "the idle one closed"
    );
    // The lent one is closed when it comes back, and a later close() sees the pool drained.
    drop(held);
    assert_eq!(m.live(), 0);
    tokio::time::timeout(Duration::from_secs(1), pool.close())
        .await
        .expect("the pool is drained");
    assert_eq!(pool.status().size, 0);
}

/// `close()` fails a get at once even while it is connecting or checking (a connect or a
/// check can take up to its timeout): the get sees `Closed` at the instant of the close, its
/// half-made or half-checked connection is closed, and `close()` returns without waiting out
/// the timeout.
#[tokio::test(start_paused = true)]
async fn a_get_mid_connect_or_mid_check_sees_closed_at_once() {
    use support::faulty::Fault;
    for mid_check in [false, true] {
        let m = Faulty::new();
        let reasons = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let r2 = reasons.clone();
        let pool = Pool::builder(m.clone())
            .on_event(move |e| {
                if let connpool::Event::Closed { reason, .. } = e {
                    r2.lock().unwrap().push(*reason);
                }
            })
            .max_size(1)
            .test_on_borrow(TestOnBorrow::Always)
            .connect_timeout(Duration::from_secs(60))
            .check_timeout(Duration::from_secs(60))
            .wait_timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        if mid_check {
            drop(pool.get().await.unwrap());
            m.check_fault(Fault::Hang);
        } else {
            m.connect_fault(Fault::Hang);
        }
        let checks = m.checks();
        let p = pool.clone();
        let get = tokio::spawn(async move { p.get().await.map(|_| ()) });
        eventually(
            "the get is connecting or checking",
            Duration::from_secs(5),
            || {
                if mid_check {
                    m.checks() > checks
                } else {
                    m.connects() == 0 && pool.status().size == 1
                }
            },
        )
        .await;
        let closed_at = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), pool.close())
            .await
            .expect("close() does not wait for the connect or check in flight");
        let r = get.await.unwrap();
        assert!(
            matches!(r, Err(Error::Closed)),
            "mid_check {mid_check}: {r:?}"
        );
        assert_eq!(closed_at.elapsed(), Duration::ZERO, "mid_check {mid_check}");
        assert_eq!(m.live(), 0, "mid_check {mid_check}");
        assert_eq!(pool.status().size, 0, "mid_check {mid_check}");
        // Closed because the pool closed, not counted as broken.
        let reasons = reasons.lock().unwrap().clone();
        let want: &[connpool::CloseReason] = if mid_check {
            &[connpool::CloseReason::PoolClosed]
        } else {
            &[]
        };
        assert_eq!(reasons, want, "mid_check {mid_check}");
        assert_eq!(pool.stats().closed_broken, 0, "mid_check {mid_check}");
    }
}

/// `close()` does not wait for the maintenance task's I/O either: a keepalive ping or a
/// `min_idle` connect in flight is abandoned, its connection closed, and `close()` returns at
/// once.
#[tokio::test(start_paused = true)]
async fn close_does_not_wait_for_a_keepalive_ping_or_a_refill_in_flight() {
    use support::faulty::Fault;
    for refill in [false, true] {
        let m = Faulty::new();
        let mut b = Pool::builder(m.clone())
            .max_size(2)
            .connect_timeout(Duration::from_secs(60))
            .check_timeout(Duration::from_secs(60))
            .maintenance_interval(Duration::from_millis(100));
        b = if refill {
            m.connect_fault(Fault::Hang);
            b.min_idle(1)
        } else {
            b.keepalive(Some(Duration::from_secs(1)))
        };
        let pool = b.build().unwrap();
        if refill {
            eventually("the refill is connecting", Duration::from_secs(5), || {
                pool.status().size == 1
            })
            .await;
        } else {
            drop(pool.get().await.unwrap());
            m.check_fault(Fault::Hang);
            let checks = m.checks();
            eventually("the ping is in flight", Duration::from_secs(5), || {
                m.checks() > checks
            })
            .await;
        }
        let closing = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), pool.close())
            .await
            .expect("close() does not wait for the maintenance task's I/O");
        assert_eq!(closing.elapsed(), Duration::ZERO, "refill {refill}");
        assert_eq!(m.live(), 0, "refill {refill}");
        assert_eq!(pool.status().size, 0, "refill {refill}");
        assert_eq!(
            pool.stats().closed_broken,
            0,
            "closed as the pool closed, not broken"
        );
    }
}
