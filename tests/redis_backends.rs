//! RedisManager over two real redis-servers: round-robin spreads the connections evenly (as
//! `CLIENT LIST` on each server shows), and a backend removed from the list loses its
//! connections: idle ones at once, lent ones when they come back.
#![cfg(feature = "redis")]

mod support;

use std::time::Duration;

use connpool::redis::redis;
use connpool::redis::RedisManager;
use connpool::{Backend, Pool, Pooled};
use support::redis_server::RedisServer;

const WITHIN: Duration = Duration::from_secs(10);

fn two_server_pool(
    a: &RedisServer,
    b: &RedisServer,
    name: &str,
    size: usize,
) -> Pool<RedisManager> {
    // The URL's host is a placeholder: each backend's address replaces it.
    Pool::builder(RedisManager::new(&format!("redis://placeholder/?client_name={name}")).unwrap())
        .max_size(size)
        .backends([Backend::new(a.addr()), Backend::new(b.addr())])
        .build()
        .unwrap()
}

/// Takes `n` connections at once, each having answered a PING.
async fn hold(pool: &Pool<RedisManager>, n: usize) -> Vec<Pooled<RedisManager>> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut c = pool.get().await.expect("get");
        let _: String = redis::cmd("PING").query_async(&mut *c).await.unwrap();
        held.push(c);
    }
    held
}

#[tokio::test]
async fn round_robin_splits_connections_evenly() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let pool = two_server_pool(&a, &b, "rr", 10);
    let held = hold(&pool, 10).await;
    assert_eq!(a.clients_named("rr").len(), 5);
    assert_eq!(b.clients_named("rr").len(), 5);
    let st = pool.status();
    assert_eq!(
        st.backends.iter().map(|b| b.size).collect::<Vec<_>>(),
        [5, 5],
        "{st:?}"
    );
    let on_a = held
        .iter()
        .filter(|c| c.backend().addr() == a.addr())
        .count();
    assert_eq!(on_a, 5);
    drop(held);

    // A second wave reuses the idle connections: still 5 and 5, nothing new dialed.
    let held = hold(&pool, 10).await;
    assert_eq!(
        (a.clients_named("rr").len(), b.clients_named("rr").len()),
        (5, 5)
    );
    assert_eq!(pool.stats().misses, 10);
    drop(held);
    pool.close().await;
    assert_eq!(a.wait_clients("rr", WITHIN, |n| n == 0).await, 0);
    assert_eq!(b.wait_clients("rr", WITHIN, |n| n == 0).await, 0);
}

#[tokio::test]
async fn a_removed_backend_loses_its_connections() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let pool = two_server_pool(&a, &b, "rm", 8);
    let mut held = hold(&pool, 8).await;
    assert_eq!(
        (a.clients_named("rm").len(), b.clients_named("rm").len()),
        (4, 4)
    );
    // Keep two of b's connections lent; return the rest to the idle queue.
    let (mut lent_b, rest): (Vec<_>, Vec<_>) =
        held.drain(..).partition(|c| c.backend().addr() == b.addr());
    let back_to_idle = lent_b.split_off(2);
    drop(rest);
    drop(back_to_idle);
    assert_eq!(pool.status().idle, 6);

    pool.set_backends([Backend::new(a.addr())]);
    // b's idle connections close at once; its two lent ones stay open while lent.
    assert_eq!(b.wait_clients("rm", WITHIN, |n| n == 2).await, 2);
    assert_eq!(a.clients_named("rm").len(), 4);
    // A lent connection of a removed backend still works for its holder ...
    for c in &mut lent_b {
        let _: String = redis::cmd("PING").query_async(&mut **c).await.unwrap();
    }
    // ... and is closed when it comes back.
    drop(lent_b);
    assert_eq!(b.wait_clients("rm", WITHIN, |n| n == 0).await, 0);
    assert_eq!(pool.stats().closed_backend_gone, 4);
    let st = pool.status();
    assert_eq!(st.backends.len(), 1);
    assert_eq!((st.size, st.idle), (4, 4), "{st:?}");

    // New connections go to a only.
    let held = hold(&pool, 8).await;
    assert_eq!(
        (a.clients_named("rm").len(), b.clients_named("rm").len()),
        (8, 0)
    );
    drop(held);
    pool.close().await;
    assert_eq!(a.wait_clients("rm", WITHIN, |n| n == 0).await, 0);
}
