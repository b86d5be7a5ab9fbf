//! The backend set: round-robin (random start), least-connections, per-backend gauges,
//! set_backends, removed backends, no backends.

mod support;

use std::time::Duration;

use connpool::{Backend, Balance, Error, Event, Pool, TestOnBorrow};
use support::faulty::Faulty;

fn addrs(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.0.0.{i}:6379")).collect()
}

fn backends(list: &[String]) -> Vec<Backend> {
    list.iter().map(Backend::new).collect()
}

#[tokio::test]
async fn round_robin_spreads_new_connections_evenly() {
    let m = Faulty::new();
    let list = addrs(3);
    let pool = Pool::builder(m.clone())
        .max_size(30)
        .backends(backends(&list))
        .build()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(pool.get().await.unwrap());
    }
    for a in &list {
        assert_eq!(m.connects_to(a), 10, "{a}");
    }
    let st = pool.status();
    assert_eq!(st.backends.len(), 3);
    for b in &st.backends {
        assert_eq!((b.size, b.in_use, b.idle), (10, 10, 0), "{b:?}");
        assert!(b.online);
    }
    drop(held);
    for b in pool.status().backends {
        assert_eq!((b.size, b.in_use, b.idle), (10, 0, 10), "{b:?}");
    }
}

#[tokio::test]
async fn round_robin_starts_at_a_random_backend() {
    // Many pools over the same list do not all dial the first backend first.
    let list = addrs(4);
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..64 {
        let m = Faulty::new();
        let pool = Pool::builder(m.clone())
            .backends(backends(&list))
            .build()
            .unwrap();
        let c = pool.get().await.unwrap();
        firsts.insert(c.backend().addr().to_owned());
    }
    assert!(firsts.len() >= 3, "first dials went to {firsts:?}");
}

#[tokio::test]
async fn least_connections_fills_the_emptiest_backend() {
    let m = Faulty::new();
    let list = addrs(2);
    let pool = Pool::builder(m.clone())
        .max_size(10)
        .balance(Balance::LeastConnections)
        .backends(backends(&list[..1]))
        .build()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.get().await.unwrap());
    }
    pool.set_backends(backends(&list));
    for _ in 0..4 {
        held.push(pool.get().await.unwrap());
    }
    assert_eq!(m.connects_to(&list[0]), 4);
    assert_eq!(
        m.connects_to(&list[1]),
        4,
        "new connections go to the emptier backend"
    );
}

#[tokio::test]
async fn a_removed_backends_connections_are_closed_and_never_handed_out() {
    let m = Faulty::new();
    let list = addrs(2);
    let pool = Pool::builder(m.clone())
        .max_size(8)
        .test_on_borrow(TestOnBorrow::Never)
        .backends(backends(&list))
        .build()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(pool.get().await.unwrap());
    }
    // Return half: 2 idle per backend, 2 lent per backend.
    let lent: Vec<_> = held.split_off(4);
    drop(held);
    assert_eq!(m.live_to(&list[0]), 4);
    pool.set_backends(backends(&list[1..]));
    assert_eq!(
        m.live_to(&list[0]),
        2,
        "idle connections of a removed backend close at once"
    );
    let st = pool.status();
    assert_eq!(st.backends.len(), 1);
    assert_eq!(st.backends[0].addr, list[1]);
    drop(lent);
    assert_eq!(
        m.live_to(&list[0]),
        0,
        "lent ones close when they come back"
    );
    // Nothing of the removed backend is ever handed out again.
    for _ in 0..50 {
        let c = pool.get().await.unwrap();
        assert_eq!(c.addr, list[1]);
    }
    let s = pool.stats();
    assert_eq!(s.closed_backend_gone, 4);
    let st = pool.status();
    assert_eq!(st.size, st.idle + st.in_use);
    assert_eq!(st.size, m.live());
}

#[tokio::test]
async fn a_backend_that_comes_back_is_dialed_again() {
    let m = Faulty::new();
    let list = addrs(2);
    let pool = Pool::builder(m.clone())
        .backends(backends(&list))
        .build()
        .unwrap();
    pool.set_backends(backends(&list[..1]));
    pool.set_backends(backends(&list));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.get().await.unwrap());
    }
    assert_eq!(m.connects_to(&list[1]), 2);
}

#[tokio::test]
async fn an_empty_list_fails_with_no_backends_after_idle_connections() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .test_on_borrow(TestOnBorrow::Never)
        .backends(backends(&addrs(1)))
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    pool.set_backends(Vec::new());
    assert!(matches!(pool.get().await, Err(Error::NoBackends)));
    assert_eq!(pool.stats().no_backends, 1);
    // An explicitly empty static list too, at once (no waiting).
    let empty = Pool::builder(m.clone())
        .wait_timeout(Duration::from_secs(3600))
        .backends(Vec::new())
        .build()
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), empty.get())
        .await
        .unwrap();
    assert!(matches!(r, Err(Error::NoBackends)));
}

#[tokio::test]
async fn without_backends_the_pool_has_one_implicit_backend() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone()).build().unwrap();
    let c = pool.get().await.unwrap();
    assert_eq!(c.backend().addr(), "");
    assert_eq!(pool.status().backends.len(), 1);
}

#[tokio::test]
async fn duplicate_addresses_are_merged_and_changes_are_evented() {
    let m = Faulty::new();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    let pool = Pool::builder(m.clone())
        .backends(["a:1", "a:1", "b:2"].map(Backend::new))
        .on_event(move |e| match e {
            Event::BackendAdded { backend } => s2.lock().unwrap().push(format!("+{backend}")),
            Event::BackendRemoved { backend } => s2.lock().unwrap().push(format!("-{backend}")),
            Event::BackendsChanged { backends } => s2.lock().unwrap().push(backends.join(",")),
            _ => {}
        })
        .build()
        .unwrap();
    assert_eq!(pool.status().backends.len(), 2);
    pool.set_backends(["b:2", "c:3", "c:3"].map(Backend::new));
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["+c:3".to_owned(), "-a:1".to_owned(), "b:2,c:3".to_owned()]
    );
    // The same list again changes nothing and fires nothing.
    pool.set_backends(["b:2", "c:3"].map(Backend::new));
    assert_eq!(seen.lock().unwrap().len(), 3);
}
