//! Cancel safety: a get future dropped at any await point gives back its slot and whatever
//! connection it held.

mod support;

use std::time::Duration;

use connpool::{Pool, TestOnBorrow};
use support::faulty::{Fault, Faulty};

/// Runs `n` gets, each cancelled at a random point by one of: a short timeout, losing a
/// `select!`, or an aborted task; checks and connects take random (virtual) time so the
/// cancellations land while waiting for a slot, mid-check and mid-connect.
async fn cancel_storm(pool: &Pool<Faulty>, m: &Faulty, n: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut handles = Vec::new();
    for i in 0..n {
        match rng.usize(0..3) {
            0 => m.check_fault(Fault::Delay(Duration::from_micros(rng.u64(0..300)))),
            1 => m.connect_fault(Fault::Delay(Duration::from_micros(rng.u64(0..300)))),
            _ => {}
        }
        let pool = pool.clone();
        let kind = rng.usize(0..4);
        let t = Duration::from_micros(rng.u64(0..400));
        let hold = Duration::from_micros(rng.u64(0..200));
        let h = tokio::spawn(async move {
            match kind {
                0 => {
                    if let Ok(Ok(c)) = tokio::time::timeout(t, pool.get()).await {
                        tokio::time::sleep(hold).await;
                        drop(c);
                    }
                }
                1 => {
                    tokio::select! {
                        r = pool.get() => { if let Ok(c) = r { tokio::time::sleep(hold).await; drop(c) } }
                        () = tokio::time::sleep(t) => {}
                    }
                }
                2 => {
                    let _ = pool.get_timeout(t).await;
                }
                _ => {
                    if let Ok(c) = pool.get().await {
                        tokio::time::sleep(hold).await;
                        drop(c);
                    }
                }
            }
        });
        if i % 7 == 3 {
            // Abort some tasks wherever they are.
            let h2 = h.abort_handle();
            tokio::time::sleep(Duration::from_micros(rng.u64(0..100))).await;
            h2.abort();
        }
        handles.push(h);
        if handles.len() >= 64 {
            for h in handles.drain(..) {
                let _ = h.await;
            }
        }
    }
    for h in handles {
        let _ = h.await;
    }
}

async fn assert_nothing_leaked(pool: &Pool<Faulty>, m: &Faulty, max: usize) {
    m.check_fault(Fault::Ok);
    m.connect_fault(Fault::Ok);
    support::faulty::assert_at_rest(pool, m);
    let st = pool.status();
    assert!(st.size <= max, "{st:?}");
    // Every slot is usable: max_size gets succeed at once, without waiting.
    let mut all = Vec::new();
    for _ in 0..max {
        all.push(
            pool.get_timeout(Duration::ZERO)
                .await
                .expect("every slot is free after the storm"),
        );
    }
    assert!(pool
        .get_timeout(Duration::ZERO)
        .await
        .unwrap_err()
        .is_exhausted());
    drop(all);
    let s = pool.stats();
    assert_eq!(s.gets, s.hits + s.misses);
    assert!(s.cancelled > 0, "the storm cancelled gets: {s:?}");
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_randomly_cancelled_gets_leak_nothing() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(8)
        .test_on_borrow(TestOnBorrow::Always)
        .build()
        .unwrap();
    cancel_storm(&pool, &m, 10_000, 7).await;
    assert_nothing_leaked(&pool, &m, 8).await;
    let s = pool.stats();
    assert!(
        s.closed_broken > 0,
        "some connections were abandoned mid-check: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_gets_on_many_threads_leak_nothing() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(4)
        .test_on_borrow(TestOnBorrow::IdleFor(Duration::from_micros(50)))
        .build()
        .unwrap();
    cancel_storm(&pool, &m, 3_000, 11).await;
    assert_nothing_leaked(&pool, &m, 4).await;
}

#[tokio::test(start_paused = true)]
async fn a_get_cancelled_mid_connect_holds_nothing() {
    let m = Faulty::new();
    m.connect_fault(Fault::Hang);
    let pool = Pool::builder(m.clone()).max_size(1).build().unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(50), pool.get())
        .await
        .is_err());
    let st = pool.status();
    assert_eq!((st.size, st.in_use, st.waiters), (0, 0, 0));
    m.connect_fault(Fault::Ok);
    drop(pool.get_timeout(Duration::ZERO).await.unwrap());
    assert_eq!(pool.stats().cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn a_get_cancelled_mid_check_closes_that_connection() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(1)
        .test_on_borrow(TestOnBorrow::Always)
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    assert_eq!(m.live(), 1);
    m.check_fault(Fault::Hang);
    assert!(tokio::time::timeout(Duration::from_millis(50), pool.get())
        .await
        .is_err());
    assert_eq!(m.live(), 0, "a connection abandoned mid-check is closed");
    let st = pool.status();
    assert_eq!((st.size, st.idle, st.in_use), (0, 0, 0));
    assert_eq!(pool.stats().closed_broken, 1);
}

/// Spawns a get that waits in line, once it is counted the `nth` waiter; it resolves to the
/// id of the connection it got.
async fn queue_waiter(
    pool: &Pool<Faulty>,
    nth: usize,
) -> tokio::task::JoinHandle<Result<u64, connpool::Error<support::faulty::FaultError>>> {
    let p = pool.clone();
    let waiter = tokio::spawn(async move { p.get().await.map(|c| c.id) });
    support::faulty::eventually("the waiter in line", Duration::from_secs(5), || {
        pool.status().waiters == nth
    })
    .await;
    waiter
}

#[tokio::test(start_paused = true)]
async fn a_waiter_cancelled_after_its_wake_up_passes_it_on() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone()).max_size(1).build().unwrap();
    let held = pool.get().await.unwrap();
    let first = queue_waiter(&pool, 1).await;
    let second = queue_waiter(&pool, 2).await;
    // Release (which notifies the first waiter) and abort the first before it runs.
    drop(held);
    first.abort();
    let id = tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .expect("the wake-up was passed on to the second waiter")
        .unwrap()
        .unwrap();
    assert_eq!(id, 0);
    assert_eq!(pool.status().waiters, 0);
}

/// A waiter handed a slot (a connection closed) and cancelled before it ran, in a pool that
/// shrank meanwhile below that slot: the slot is given up, not passed on to the next waiter,
/// which would open a connection above the new size.
#[tokio::test(start_paused = true)]
async fn a_cancelled_waiters_slot_is_given_up_when_the_pool_shrank_below_it() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone()).max_size(2).build().unwrap();
    let c1 = pool.get().await.unwrap();
    let c2 = pool.get().await.unwrap();
    let first = queue_waiter(&pool, 1).await;
    let second = queue_waiter(&pool, 2).await;
    // The slot of the discarded connection goes to the first waiter; the pool shrinks to 1
    // (2 open: the one left and that slot); the first waiter is aborted before it runs.
    c1.discard();
    pool.set_max_size(1).unwrap();
    first.abort();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.status().size, 1, "the slot was given up");
    assert_eq!(m.connects(), 2, "no connection opened above the new size");
    assert!(
        !second.is_finished(),
        "the second waiter waits for the one connection"
    );
    drop(c2);
    let id = tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .expect("served by the returned connection")
        .unwrap()
        .unwrap();
    assert_eq!(id, 1, "c2, handed over");
    assert_eq!(m.connects(), 2);
}
