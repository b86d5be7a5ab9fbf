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

/// The list events seen: `+addr`, `-addr`, and each new list as `addr,addr`.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn list_events(seen: &Seen) -> impl Fn(&Event) + Send + Sync + 'static {
    let seen = seen.clone();
    move |e| match e {
        Event::BackendAdded { backend } => seen.lock().unwrap().push(format!("+{backend}")),
        Event::BackendRemoved { backend } => seen.lock().unwrap().push(format!("-{backend}")),
        Event::BackendsChanged { backends } => seen.lock().unwrap().push(backends.join(",")),
        _ => {}
    }
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
    let seen = Seen::default();
    let pool = Pool::builder(m.clone())
        .backends(["a:1", "a:1", "b:2"].map(Backend::new))
        .on_event(list_events(&seen))
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

fn weighted(list: &[(&str, u32)]) -> Vec<Backend> {
    list.iter()
        .map(|&(a, w)| Backend::new(a).with_weight(w))
        .collect()
}

/// `n` gets, held (each a fresh dial when nothing is idle).
async fn hold(pool: &Pool<Faulty>, n: usize) -> Vec<connpool::Pooled<Faulty>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(pool.get().await.unwrap());
    }
    held
}

fn weighted_pool(m: &Faulty, max: usize, list: &[(&str, u32)]) -> Pool<Faulty> {
    Pool::builder(m.clone())
        .max_size(max)
        .backends(weighted(list))
        .build()
        .unwrap()
}

fn weights(pool: &Pool<Faulty>) -> Vec<(String, u32)> {
    pool.status()
        .backends
        .into_iter()
        .map(|b| (b.addr, b.weight))
        .collect()
}

#[tokio::test]
async fn round_robin_dials_in_proportion_to_weight() {
    let m = Faulty::new();
    let pool = weighted_pool(&m, 40, &[("a:1", 3), ("b:2", 1)]);
    assert_eq!(
        weights(&pool),
        vec![("a:1".to_owned(), 3), ("b:2".to_owned(), 1)]
    );
    let mut held = Vec::new();
    for round in 1..=10 {
        for _ in 0..4 {
            held.push(pool.get().await.unwrap());
        }
        // Whatever the random start, every four consecutive dials are three and one.
        assert_eq!(
            (m.connects_to("a:1"), m.connects_to("b:2")),
            (3 * round, round),
            "after {round} rounds"
        );
    }
}

#[tokio::test]
async fn least_connections_keeps_connections_in_proportion_to_weight() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(30)
        .balance(Balance::LeastConnections)
        .backends(weighted(&[("a:1", 2), ("b:2", 1)]))
        .build()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(pool.get().await.unwrap());
        let (a, b) = (m.connects_to("a:1"), m.connects_to("b:2"));
        // Connections per unit of weight never differ by more than one connection's worth.
        assert!(a.abs_diff(2 * b) <= 2, "a {a}, b {b}");
    }
    assert_eq!((m.connects_to("a:1"), m.connects_to("b:2")), (20, 10));
    // Closing a's connections makes it the emptiest per weight: the next dials go there.
    let (on_a, mut held): (Vec<_>, Vec<_>) =
        held.into_iter().partition(|c| c.backend().addr() == "a:1");
    assert_eq!(on_a.len(), 20);
    let mut on_a = on_a.into_iter();
    for c in on_a.by_ref().take(6) {
        c.discard();
    }
    held.extend(on_a);
    held.extend(hold(&pool, 6).await);
    assert_eq!(m.connects_to("a:1"), 26, "refilled to its share first");
    assert_eq!(m.connects_to("b:2"), 10);
}

#[tokio::test(start_paused = true)]
async fn a_standby_is_dialed_only_when_no_weighted_backend_can_be() {
    standby_only_when_needed(Balance::RoundRobin).await;
    standby_only_when_needed(Balance::LeastConnections).await;
}

async fn standby_only_when_needed(balance: Balance) {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(20)
        .balance(balance)
        .backoff_base(Duration::from_secs(1))
        .backoff_max(Duration::from_secs(1))
        .backends(weighted(&[("a:1", 1), ("s:9", 0), ("b:2", 1)]))
        .build()
        .unwrap();
    let mut held = hold(&pool, 6).await;
    assert_eq!((m.connects_to("a:1"), m.connects_to("b:2")), (3, 3));
    assert_eq!(
        m.connects_to("s:9"),
        0,
        "no dial to a standby while others serve"
    );

    // One weighted backend down: the other takes its share, the standby still nothing.
    m.refuse("a:1", true);
    held.extend(hold(&pool, 4).await);
    assert_eq!(m.connects_to("s:9"), 0);
    assert_eq!(m.connects_to("b:2"), 7);

    // Both down: a get fails over to the standby instead of failing.
    m.refuse("b:2", true);
    for _ in 0..4 {
        let c = pool.get().await.expect("the standby serves");
        assert_eq!(c.backend().addr(), "s:9");
        held.push(c);
    }
    assert_eq!(m.connects_to("s:9"), 4);

    // Back up, and their backoff over: new dials leave the standby again.
    m.refuse("a:1", false);
    m.refuse("b:2", false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    held.extend(hold(&pool, 4).await);
    assert_eq!(m.connects_to("s:9"), 4, "probed back in: the standby rests");
    assert_eq!(m.connects_to("a:1") + m.connects_to("b:2"), 14);
    // The standby's connections stay in use until they retire.
    assert_eq!(m.live_to("s:9"), 4);
}

#[tokio::test]
async fn a_list_of_standbys_only_is_dialed_evenly() {
    let m = Faulty::new();
    let pool = weighted_pool(&m, 8, &[("x:1", 0), ("y:2", 0)]);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            pool.get()
                .await
                .expect("standbys serve when nothing else is listed"),
        );
    }
    assert_eq!((m.connects_to("x:1"), m.connects_to("y:2")), (4, 4));
}

#[tokio::test]
async fn a_weight_change_takes_effect_and_is_evented() {
    let m = Faulty::new();
    let seen = Seen::default();
    let pool = Pool::builder(m.clone())
        .max_size(40)
        .backends(weighted(&[("a:1", 1), ("b:2", 1)]))
        .on_event(list_events(&seen))
        .build()
        .unwrap();
    let mut held = hold(&pool, 4).await;
    assert_eq!((m.connects_to("a:1"), m.connects_to("b:2")), (2, 2));

    pool.set_backends(weighted(&[("a:1", 1), ("b:2", 3)]));
    assert_eq!(*seen.lock().unwrap(), vec!["a:1,b:2".to_owned()]);
    assert_eq!(
        weights(&pool),
        vec![("a:1".to_owned(), 1), ("b:2".to_owned(), 3)]
    );
    assert_eq!(
        pool.status().idle + pool.status().in_use,
        4,
        "connections kept"
    );
    held.extend(hold(&pool, 8).await);
    assert_eq!((m.connects_to("a:1"), m.connects_to("b:2")), (4, 8));

    // The same list again changes nothing and fires nothing.
    pool.set_backends(weighted(&[("a:1", 1), ("b:2", 3)]));
    assert_eq!(seen.lock().unwrap().len(), 1);
    // A duplicate address keeps the first entry's weight.
    pool.set_backends(weighted(&[("a:1", 2), ("a:1", 5), ("b:2", 3)]));
    assert_eq!(
        weights(&pool),
        vec![("a:1".to_owned(), 2), ("b:2".to_owned(), 3)]
    );
}

/// Two writers replacing the list at once (discovery's applier and a user's `set_backends`,
/// say) must not leave a listed backend marked removed: every list they end on can be
/// dialed. Each round, two threads race `[x]`/`[x, y]` against `[y]`/`[x, y]`; then the list
/// settles on `[x]` and a get must dial `x` and keep the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_list_replacements_leave_every_listed_backend_usable() {
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(1)
        .backends([Backend::new("x:1"), Backend::new("y:2")])
        .wait_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for round in 0..300 {
        let writers: Vec<_> = [("x:1", "y:2"), ("y:2", "x:1")]
            .into_iter()
            .map(|(keep, other)| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        pool.set_backends([Backend::new(keep)]);
                        pool.set_backends([Backend::new(keep), Backend::new(other)]);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        pool.set_backends([Backend::new("x:1")]);
        let c = pool
            .get()
            .await
            .unwrap_or_else(|e| panic!("round {round}: x is listed but: {e}"));
        assert_eq!(c.addr, "x:1");
        drop(c);
        assert_eq!(
            pool.status().idle,
            1,
            "round {round}: kept, not closed as gone"
        );
        pool.set_backends([Backend::new("x:1"), Backend::new("y:2")]);
    }
}
