//! Waiting in line: the one shared timer for gets with the pool's `wait_timeout` (held by one
//! waiter at a time, passed on when it leaves), gets with their own timeout, and the borrowing
//! guard (`get_ref`). Every deadline is checked on tokio's paused clock, so the figures are
//! exact: a get must end at its deadline, not merely eventually. (A pool shared across runtimes:
//! `tests/runtimes.rs`.)

mod support;

use std::time::Duration;

use connpool::{Error, Pool, PooledRef, TestOnBorrow};
use support::faulty::{assert_at_rest, eventually, pool_of, Fault, FaultError, Faulty};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(1);

fn pool(m: &Faulty, max: usize) -> Pool<Faulty> {
    pool_of(m, max, WAIT)
}

/// How a get spawned by [`timed_get`] ended, and when.
type Ended = (Instant, Result<(), Error<FaultError>>);

/// Spawns a get that reports when it ended and how.
fn timed_get(pool: &Pool<Faulty>, timeout: Option<Duration>) -> tokio::task::JoinHandle<Ended> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let r = match timeout {
            None => pool.get().await,
            Some(t) => pool.get_timeout(t).await,
        };
        (Instant::now(), r.map(drop))
    })
}

/// The get ended in a timeout `after` its `start`, to the millisecond (the paused clock is
/// exact; 2 ms of slack only for the timer wheel's rounding to whole milliseconds).
fn assert_timed_out(got: Ended, start: Instant, after: Duration) {
    let (ended, r) = got;
    let e = r.expect_err("the get times out");
    assert!(e.is_timeout(), "{e}");
    let waited = ended - start;
    assert!(
        waited >= after && waited < after + Duration::from_millis(2),
        "waited {waited:?} for a {after:?} deadline"
    );
}

async fn waiters_reach(pool: &Pool<Faulty>, n: usize) {
    eventually(&format!("{n} waiters"), Duration::from_secs(5), || {
        pool.status().waiters == n
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn every_waiter_times_out_at_its_own_deadline_on_the_shared_timer() {
    let m = Faulty::new();
    let pool = pool(&m, 1);
    let held = pool.get().await.unwrap();
    // Arrivals 100 ms apart: one shared timer must fire for each deadline in turn.
    let mut gets = Vec::new();
    for i in 0..5 {
        gets.push((Instant::now(), timed_get(&pool, None)));
        waiters_reach(&pool, i + 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (arrived, g) in gets {
        assert_timed_out(g.await.unwrap(), arrived, WAIT);
    }
    assert_eq!(pool.stats().timeouts, 5);
    assert_eq!(pool.status().waiters, 0);
    drop(held);
    assert_at_rest(&pool, &m);
}

#[tokio::test(start_paused = true)]
async fn the_timer_duty_passes_on_when_its_holder_is_cancelled() {
    let m = Faulty::new();
    let pool = pool(&m, 1);
    let held = pool.get().await.unwrap();
    // The first waiter takes the duty; it is cancelled after 200 ms, long before any deadline.
    let first = timed_get(&pool, None);
    waiters_reach(&pool, 1).await;
    // The later waiters arrive after the holder (so a timer that fired them at the holder's
    // deadline would be caught).
    let start = Instant::now();
    let later: Vec<_> = (0..3).map(|_| timed_get(&pool, None)).collect();
    waiters_reach(&pool, 4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // The deadlines stay watched after the holder left.
    for g in later {
        assert_timed_out(g.await.unwrap(), start, WAIT);
    }
    let s = pool.stats();
    assert_eq!((s.timeouts, s.cancelled), (3, 1));
    drop(held);
    assert_at_rest(&pool, &m);
}

#[tokio::test(start_paused = true)]
async fn the_timer_duty_passes_on_when_its_holder_is_served() {
    let m = Faulty::new();
    let pool = pool(&m, 1);
    let held = pool.get().await.unwrap();
    // The first waiter takes the duty; it is served by the return below and keeps the
    // connection past everybody else's deadline.
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let c = pool.get().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(c);
        })
    };
    waiters_reach(&pool, 1).await;
    // The later waiters arrive after the holder (see the test above).
    let start = Instant::now();
    let later: Vec<_> = (0..3).map(|_| timed_get(&pool, None)).collect();
    waiters_reach(&pool, 4).await;
    drop(held);
    // The deadlines stay watched after the holder was served.
    for g in later {
        assert_timed_out(g.await.unwrap(), start, WAIT);
    }
    first.await.unwrap();
    assert_eq!(pool.stats().timeouts, 3);
    assert_at_rest(&pool, &m);
}

#[tokio::test(start_paused = true)]
async fn a_get_with_its_own_timeout_keeps_it_among_shared_waiters() {
    let m = Faulty::new();
    let pool = pool(&m, 1);
    let held = pool.get().await.unwrap();
    let start = Instant::now();
    let shared: Vec<_> = (0..2).map(|_| timed_get(&pool, None)).collect();
    waiters_reach(&pool, 2).await;
    // The own-timeout gets arrive after the shared ones.
    let own = Instant::now();
    let short = timed_get(&pool, Some(Duration::from_millis(300)));
    let long = timed_get(&pool, Some(Duration::from_secs(3)));
    waiters_reach(&pool, 4).await;
    assert_timed_out(short.await.unwrap(), own, Duration::from_millis(300));
    for g in shared {
        assert_timed_out(g.await.unwrap(), start, WAIT);
    }
    assert_timed_out(long.await.unwrap(), own, Duration::from_secs(3));
    assert_eq!(pool.stats().timeouts, 4);
    drop(held);
    assert_at_rest(&pool, &m);
}

#[tokio::test(start_paused = true)]
async fn wait_time_counts_every_waits_length() {
    let m = Faulty::new();
    let pool = pool(&m, 1);
    let held = pool.get().await.unwrap();
    let start = Instant::now();
    let a = timed_get(&pool, None);
    let b = timed_get(&pool, None);
    waiters_reach(&pool, 2).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // a is served now and gives the connection on to b at once: both waited as long.
    let waited = start.elapsed();
    drop(held);
    a.await.unwrap().1.unwrap();
    b.await.unwrap().1.unwrap();
    let s = pool.stats();
    assert_eq!(s.waits, 2);
    assert!(
        s.wait_time >= 2 * waited && s.wait_time < 2 * waited + Duration::from_millis(5),
        "wait_time {:?} for two waits of {waited:?}",
        s.wait_time
    );
    assert_at_rest(&pool, &m);
}

#[tokio::test(start_paused = true)]
async fn a_borrowing_guard_is_a_pooled_connection_in_every_way() {
    let m = Faulty::new();
    let pool = pool(&m, 2);
    let a: PooledRef<'_, Faulty> = pool.get_ref().await.unwrap();
    let id = a.id;
    assert_eq!(pool.status().in_use, 1);
    drop(a);
    assert_eq!((pool.status().in_use, pool.status().idle), (0, 1));
    // The same connection again, turned into an owned guard that outlives the borrow.
    let owned = pool.get_ref().await.unwrap().into_owned();
    assert_eq!(owned.id, id);
    assert_eq!(pool.status().in_use, 1);
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(owned);
    });
    task.await.unwrap();
    assert_eq!((pool.status().in_use, pool.status().idle), (0, 1));
    // discard and detach work as on a `Pooled`.
    pool.get_ref().await.unwrap().discard();
    assert_eq!(pool.stats().closed_broken, 1);
    let detached = pool.get_ref().await.unwrap().detach();
    drop(detached);
    assert_eq!(pool.status().size, 0);
    // It waits in line like any get, and is counted like one.
    let x = pool.get().await.unwrap();
    let y = pool.get().await.unwrap();
    let p2 = pool.clone();
    let waiter = tokio::spawn(async move { p2.get_ref().await.map(|c| c.id) });
    waiters_reach(&pool, 1).await;
    let xid = x.id;
    drop(x);
    assert_eq!(waiter.await.unwrap().unwrap(), xid);
    drop(y);
    let s = pool.stats();
    assert_eq!(s.gets, s.hits + s.misses);
    assert_eq!(s.waits, 1);
    assert_at_rest(&pool, &m);
}

#[tokio::test(start_paused = true)]
async fn get_futures_are_inert_until_polled_and_count_cancels_once() {
    let m = Faulty::new();
    let pool = pool(&m, 1);
    // Created and dropped without a poll: nothing taken, nothing counted.
    drop(pool.get());
    drop(pool.get_ref());
    let (s, st) = (pool.stats(), pool.status());
    assert_eq!((s.gets, s.cancelled, st.size, st.waiters), (0, 0, 0, 0));
    let held = pool.get().await.unwrap();
    let fut = pool.get();
    assert!(format!("{fut:?}").contains("Get"));
    // Cancelled while waiting: counted once, its place freed.
    assert!(tokio::time::timeout(Duration::from_millis(10), fut)
        .await
        .is_err());
    assert_eq!(pool.stats().cancelled, 1);
    assert_eq!(pool.status().waiters, 0);
    drop(held);
    match pool.get_timeout(Duration::ZERO).await {
        Ok(c) => drop(c),
        Err(Error::Exhausted) => panic!("the connection is back"),
        Err(e) => panic!("{e}"),
    }
    assert_at_rest(&pool, &m);
}

/// A pool that checks every connection it lends, with a `check_timeout` far above the get's
/// own timeout.
fn checking_pool(m: &Faulty, max: usize) -> Pool<Faulty> {
    Pool::builder(m.clone())
        .max_size(max)
        .test_on_borrow(TestOnBorrow::Always)
        .check_timeout(Duration::from_secs(10))
        .wait_timeout(WAIT)
        .build()
        .unwrap()
}

/// A get whose deadline passes while an idle connection's check still runs times out at its
/// deadline. The check has not failed: the other idle connections are neither tried nor
/// closed in turn, and nothing is counted or evented as a failed check.
#[tokio::test(start_paused = true)]
async fn a_deadline_reached_mid_check_is_a_timeout_not_a_failed_check() {
    let m = Faulty::new();
    let pool = checking_pool(&m, 3);
    let (a, b, c) = (pool.get().await, pool.get().await, pool.get().await);
    drop((a.unwrap(), b.unwrap(), c.unwrap()));
    m.check_fault(Fault::Delay(Duration::from_secs(5)));
    let start = Instant::now();
    assert_timed_out(timed_get(&pool, None).await.unwrap(), start, WAIT);
    assert_eq!(pool.stats().check_failures, 0);
    let status = pool.status();
    assert_eq!(
        (status.size, status.idle),
        (2, 2),
        "only the connection abandoned mid-check is closed"
    );
    assert_at_rest(&pool, &m);
    m.check_fault(Fault::Ok);
    drop(
        pool.get()
            .await
            .expect("the other idle connections still serve"),
    );
    assert_eq!(pool.stats().connects, 3);
}

/// The same for a new connection's check: the get times out (it is not a `Check` error) and
/// the connection is closed.
#[tokio::test(start_paused = true)]
async fn a_deadline_reached_mid_check_of_a_new_connection_is_a_timeout() {
    let m = Faulty::new();
    let pool = checking_pool(&m, 1);
    m.check_fault(Fault::Delay(Duration::from_secs(5)));
    let start = Instant::now();
    assert_timed_out(timed_get(&pool, None).await.unwrap(), start, WAIT);
    assert_eq!(pool.stats().check_failures, 0);
    assert_eq!(pool.stats().connects, 1);
    assert_at_rest(&pool, &m);
    assert_eq!(m.live(), 0);
}

/// `wait_timeout` bounds the whole get: its wait for a slot, its connect and its check
/// together. Here the wait takes 300 ms, the connect 400 ms, and the check would take 10 s:
/// the get ends at its 1 s deadline, not at any of their own limits.
#[tokio::test(start_paused = true)]
async fn the_timeout_bounds_the_wait_the_connect_and_the_check_together() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(1)
        .test_on_borrow(TestOnBorrow::Always)
        .connect_timeout(Duration::from_secs(10))
        .check_timeout(Duration::from_secs(10))
        .wait_timeout(WAIT)
        .build()
        .unwrap();
    let held = pool.get().await.unwrap();
    m.connect_fault(Fault::Delay(Duration::from_millis(400)));
    m.check_fault(Fault::Delay(Duration::from_secs(10)));
    let start = Instant::now();
    let get = timed_get(&pool, None);
    waiters_reach(&pool, 1).await;
    tokio::time::sleep_until(start + Duration::from_millis(300)).await;
    // The slot comes free: the waiter takes it and dials.
    held.discard();
    assert_timed_out(get.await.unwrap(), start, WAIT);
    assert_eq!(m.connects(), 2, "the waiter's connect finished");
    assert_eq!(pool.stats().check_failures, 0);
    assert_at_rest(&pool, &m);
    assert_eq!(m.live(), 0, "the connection abandoned mid-check is closed");
}
