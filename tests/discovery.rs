//! The discovery machinery with scripted discoveries: the first list, coalescing, errors and
//! panics restart `run` with the last list kept, an empty list, and stopping on close.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connpool::{Backend, Discovery, DiscoveryError, Error, Event, Pool, Updates};
use support::faulty::{eventually, Faulty};

const MIN: Duration = Duration::from_secs(60);

/// A discovery driven by the test through a channel of commands.
#[derive(Clone, Default)]
struct Scripted {
    runs: Arc<AtomicUsize>,
    updates: Arc<Mutex<Option<Updates>>>,
    /// What the current run does after it starts: 0 = wait for close, 1 = error, 2 = panic.
    mode: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

impl Discovery for Scripted {
    async fn run(&self, updates: Updates) -> Result<(), DiscoveryError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        *self.updates.lock().unwrap() = Some(updates.clone());
        struct End(Arc<AtomicUsize>);
        impl Drop for End {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let _end = End(self.ended.clone());
        loop {
            match self.mode.swap(0, Ordering::SeqCst) {
                1 => return Err(DiscoveryError::new("scripted failure")),
                2 => panic!("scripted discovery panic"),
                _ => {}
            }
            tokio::select! {
                () = updates.closed() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
}

impl Scripted {
    async fn updates(&self) -> Updates {
        eventually("discovery running", MIN, || {
            self.updates.lock().unwrap().is_some()
        })
        .await;
        self.updates.lock().unwrap().clone().unwrap()
    }
}

fn addrs(list: &[&str]) -> Vec<Backend> {
    list.iter().map(|a| Backend::new(*a)).collect()
}

fn listed(pool: &Pool<Faulty>) -> Vec<String> {
    pool.status().backends.into_iter().map(|b| b.addr).collect()
}

#[tokio::test(start_paused = true)]
async fn gets_wait_for_the_first_list_then_fail_no_backends() {
    let d = Scripted::default();
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .wait_timeout(Duration::from_secs(2))
        .discovery(d.clone())
        .build()
        .unwrap();
    // No list yet: the get waits for it, then fails NoBackends (not Timeout).
    let start = tokio::time::Instant::now();
    assert!(matches!(pool.get().await, Err(Error::NoBackends)));
    assert!(start.elapsed() >= Duration::from_secs(2));
    // A get waiting when the first list arrives proceeds.
    let p = pool.clone();
    let get = tokio::spawn(async move { p.get().await.map(|c| c.addr.clone()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.updates().await.publish(addrs(&["a:1"]));
    assert_eq!(get.await.unwrap().unwrap(), "a:1");
}

/// Before discovery's first list every slot is held by a get waiting for that list. A get
/// queued behind them for a slot, and one that may not wait, fail `NoBackends` as well (the
/// cause is the missing list), not `Timeout` or `Exhausted`.
#[tokio::test(start_paused = true)]
async fn gets_without_a_slot_before_the_first_list_fail_no_backends_too() {
    let d = Scripted::default();
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(1)
        .wait_timeout(Duration::from_secs(2))
        .discovery(d.clone())
        .build()
        .unwrap();
    // `first` takes the one slot and waits for the list; `queued` waits for the slot.
    let p = pool.clone();
    let first = tokio::spawn(async move { p.get().await.map(|c| c.addr.clone()) });
    eventually("first holds the slot", MIN, || pool.status().size == 1).await;
    let p = pool.clone();
    let queued = tokio::spawn(async move { p.get().await.map(|c| c.addr.clone()) });
    eventually("queued waits", MIN, || pool.status().waiters == 1).await;
    let fast = pool.get_timeout(Duration::ZERO).await;
    assert!(matches!(fast, Err(Error::NoBackends)), "{:?}", fast.err());
    let queued = queued.await.unwrap();
    assert!(matches!(queued, Err(Error::NoBackends)), "{queued:?}");
    let first = first.await.unwrap();
    assert!(matches!(first, Err(Error::NoBackends)), "{first:?}");
    let stats = pool.stats();
    assert_eq!(
        (stats.no_backends, stats.timeouts, stats.exhausted),
        (3, 0, 0),
        "{stats:?}"
    );
    assert_eq!(pool.status().size, 0, "no slot left held");
    // Once a list is in force, a get with no slot is a plain timeout again.
    d.updates().await.publish(addrs(&["a:1"]));
    eventually("first list", MIN, || listed(&pool).len() == 1).await;
    let held = pool.get().await.unwrap();
    let late = pool.get().await;
    assert!(
        matches!(late, Err(Error::Timeout { .. })),
        "{:?}",
        late.err()
    );
    let fast = pool.get_timeout(Duration::ZERO).await;
    assert!(matches!(fast, Err(Error::Exhausted)), "{:?}", fast.err());
    drop(held);
}

/// A zero timeout never waits, not for a slot and not for the first list: before discovery
/// has published, such a get fails `NoBackends` at once (and gives its slot back).
#[tokio::test(start_paused = true)]
async fn a_zero_timeout_does_not_wait_for_the_first_list() {
    let d = Scripted::default();
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .max_size(1)
        .wait_timeout(Duration::ZERO)
        .discovery(d.clone())
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let within = Duration::from_secs(5);
    let got = tokio::time::timeout(within, pool.get()).await;
    assert!(matches!(got, Ok(Err(Error::NoBackends))), "{got:?}");
    let got = tokio::time::timeout(within, pool.get_timeout(Duration::ZERO)).await;
    assert!(matches!(got, Ok(Err(Error::NoBackends))), "{got:?}");
    assert_eq!(start.elapsed(), Duration::ZERO, "neither get waited");
    assert_eq!(pool.stats().no_backends, 2);
    // The slot came back: once the list arrives, a zero-timeout get dials on it.
    d.updates().await.publish(addrs(&["a:1"]));
    eventually("first list", MIN, || listed(&pool).len() == 1).await;
    assert_eq!(pool.get().await.unwrap().addr, "a:1");
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_publishes_coalesces_and_the_latest_list_wins() {
    let d = Scripted::default();
    let m = Faulty::new();
    let changes = Arc::new(AtomicUsize::new(0));
    let c2 = changes.clone();
    let pool = Pool::builder(m.clone())
        .discovery(d.clone())
        .on_event(move |e| {
            if matches!(e, Event::BackendsChanged { .. }) {
                c2.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    let u = d.updates().await;
    for i in 0..1000 {
        u.publish(addrs(&[&format!("h{i}:1")]));
    }
    eventually("latest list applied", MIN, || {
        listed(&pool) == vec!["h999:1".to_owned()]
    })
    .await;
    assert!(
        changes.load(Ordering::SeqCst) <= 3,
        "no storm of swaps: {}",
        changes.load(Ordering::SeqCst)
    );

    // A burst spread over time: one list every 2 ms for 100 ms (the publisher yields between
    // them, so the applier could apply each). It never pauses for 20 ms, so its latest list
    // is applied once per 100 ms at most (plus the last), not 50 times.
    let before = changes.load(Ordering::SeqCst);
    for i in 0..50 {
        u.publish(addrs(&[&format!("s{i}:1")]));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eventually("latest spread list applied", MIN, || {
        listed(&pool) == vec!["s49:1".to_owned()]
    })
    .await;
    let applied = changes.load(Ordering::SeqCst) - before;
    assert!((1..=3).contains(&applied), "{applied} of 50 lists applied");
}

/// A discovery whose `run` (a plain `fn` returning `impl Future`) panics in the call itself,
/// before its future exists, the first time; the next run publishes.
#[derive(Clone, Default)]
struct PanicsBeforeItsFuture {
    runs: Arc<AtomicUsize>,
}

impl Discovery for PanicsBeforeItsFuture {
    fn run(
        &self,
        updates: Updates,
    ) -> impl std::future::Future<Output = Result<(), DiscoveryError>> + Send + '_ {
        if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("run panicked before its future");
        }
        async move {
            updates.publish(addrs(&["a:1"]));
            updates.closed().await;
            Ok(())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_that_panics_before_its_future_is_restarted() {
    let d = PanicsBeforeItsFuture::default();
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let f2 = failures.clone();
    let pool = Pool::builder(Faulty::new())
        .discovery(d.clone())
        .wait_timeout(MIN)
        .on_event(move |e| {
            if let Event::DiscoveryFailed { message } = e {
                f2.lock().unwrap().push(message.to_string());
            }
        })
        .build()
        .unwrap();
    // The get waits for the first list, which only the second run publishes.
    drop(
        pool.get()
            .await
            .expect("served once the restarted run publishes"),
    );
    assert_eq!(d.runs.load(Ordering::SeqCst), 2);
    assert_eq!(pool.stats().discovery_errors, 1);
    let f = failures.lock().unwrap().clone();
    assert!(
        f.len() == 1 && f[0].contains("run panicked before its future"),
        "{f:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn errors_and_panics_restart_run_and_keep_the_last_list() {
    let d = Scripted::default();
    let m = Faulty::new();
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let f2 = failures.clone();
    let pool = Pool::builder(m.clone())
        .discovery(d.clone())
        .on_event(move |e| {
            if let Event::DiscoveryFailed { message } = e {
                f2.lock().unwrap().push(message.to_string());
            }
        })
        .build()
        .unwrap();
    d.updates().await.publish(addrs(&["a:1", "b:2"]));
    eventually("first list", MIN, || listed(&pool).len() == 2).await;

    d.mode.store(1, Ordering::SeqCst);
    eventually("restarted after an error", MIN, || {
        d.runs.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(
        listed(&pool),
        vec!["a:1", "b:2"],
        "the last good list stays"
    );
    assert_eq!(pool.stats().discovery_errors, 1);
    drop(pool.get().await.unwrap());

    d.mode.store(2, Ordering::SeqCst);
    eventually("restarted after a panic", MIN, || {
        d.runs.load(Ordering::SeqCst) == 3
    })
    .await;
    assert_eq!(listed(&pool), vec!["a:1", "b:2"]);
    assert_eq!(pool.stats().discovery_errors, 2);
    let f = failures.lock().unwrap().clone();
    assert!(
        f[0].contains("scripted failure") && f[1].contains("scripted discovery panic"),
        "{f:?}"
    );

    // The restarted run still publishes.
    d.updates().await.publish(addrs(&["c:3"]));
    eventually("new list after restarts", MIN, || {
        listed(&pool) == vec!["c:3"]
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_empty_list_means_no_backends() {
    let d = Scripted::default();
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .wait_timeout(Duration::from_secs(3600))
        .discovery(d.clone())
        .build()
        .unwrap();
    let u = d.updates().await;
    u.publish(addrs(&["a:1"]));
    eventually("listed", MIN, || listed(&pool).len() == 1).await;
    u.publish(Vec::new());
    eventually("emptied", MIN, || listed(&pool).is_empty()).await;
    let r = tokio::time::timeout(Duration::from_secs(5), pool.get())
        .await
        .unwrap();
    assert!(
        matches!(r, Err(Error::NoBackends)),
        "at once, not after the wait timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn reported_errors_and_warnings_are_counted_and_evented() {
    let d = Scripted::default();
    let m = Faulty::new();
    let warnings = Arc::new(AtomicUsize::new(0));
    let w2 = warnings.clone();
    let pool = Pool::builder(m.clone())
        .discovery(d.clone())
        .on_event(move |e| {
            if matches!(e, Event::DiscoveryWarning { .. }) {
                w2.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    let u = d.updates().await;
    u.report_error("lost the connection");
    u.warn("node x: malformed");
    assert_eq!(pool.stats().discovery_errors, 1);
    assert_eq!(warnings.load(Ordering::SeqCst), 1);
    assert_eq!(
        d.runs.load(Ordering::SeqCst),
        1,
        "a reported error does not restart run"
    );
}

#[tokio::test(start_paused = true)]
async fn close_stops_the_discovery() {
    let d = Scripted::default();
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .discovery(d.clone())
        .build()
        .unwrap();
    let u = d.updates().await;
    pool.close().await;
    assert!(u.is_closed());
    eventually("run returned", MIN, || d.ended.load(Ordering::SeqCst) == 1).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        d.runs.load(Ordering::SeqCst),
        1,
        "not restarted after close"
    );
    // Publishing after close is harmless.
    u.publish(addrs(&["a:1"]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(listed(&pool).is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_pool_stops_the_discovery() {
    let d = Scripted::default();
    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .discovery(d.clone())
        .build()
        .unwrap();
    let u = d.updates().await;
    drop(pool);
    assert!(u.is_closed());
    eventually("run returned", MIN, || d.ended.load(Ordering::SeqCst) == 1).await;
}

/// A discovery whose `run` fails at once, every time.
#[derive(Clone, Default)]
struct FailsAtOnce {
    runs: Arc<AtomicUsize>,
}

impl Discovery for FailsAtOnce {
    async fn run(&self, _updates: Updates) -> Result<(), DiscoveryError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Err(DiscoveryError::new("down"))
    }
}

/// A `run` that fails at once is restarted after a growing backoff, not in a loop: from
/// 100 ms, doubling, each delay jittered down by at most half, so within its first second it
/// runs at most 6 times (at 0 and after at least 50, 150, 350 and 750 ms), and every failure
/// is counted.
#[tokio::test(start_paused = true)]
async fn a_run_that_fails_at_once_is_restarted_with_backoff() {
    let d = FailsAtOnce::default();
    let pool = Pool::builder(Faulty::new())
        .discovery(d.clone())
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let runs = d.runs.load(Ordering::SeqCst);
    assert!((4..=6).contains(&runs), "{runs} runs in the first second");
    // Counted once each (the last may not be counted yet when it has just returned).
    let errors = pool.stats().discovery_errors as usize;
    assert!(
        errors + 1 >= runs && errors <= runs,
        "{errors} errors for {runs} runs"
    );
    // The delays keep doubling (up to 5 s): the next 10 s see only a few more runs.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let more = d.runs.load(Ordering::SeqCst) - runs;
    assert!((2..=8).contains(&more), "{more} more runs in 10 s");
}

/// A flap (a backend dropped and listed again a moment later, after a quiet spell) changes
/// nothing: the pool sees the change whole, so the backend keeps its entry and its idle
/// connections, and no removal is evented.
#[tokio::test(start_paused = true)]
async fn a_backend_that_flaps_within_the_window_keeps_its_connections() {
    let d = Scripted::default();
    let m = Faulty::new();
    let removed = Arc::new(AtomicUsize::new(0));
    let r2 = removed.clone();
    let pool = Pool::builder(m.clone())
        .max_size(4)
        .discovery(d.clone())
        .on_event(move |e| {
            if matches!(e, Event::BackendRemoved { .. }) {
                r2.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    let u = d.updates().await;
    u.publish(addrs(&["a:1", "b:2"]));
    eventually("first list", MIN, || listed(&pool).len() == 2).await;
    // One connection to each (round-robin), then idle.
    let (x, y) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    drop((x, y));
    assert_eq!((m.live_to("a:1"), m.live_to("b:2")), (1, 1));
    tokio::time::sleep(Duration::from_secs(1)).await;

    u.publish(addrs(&["a:1"]));
    tokio::time::sleep(Duration::from_millis(5)).await;
    u.publish(addrs(&["a:1", "b:2"]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(listed(&pool), ["a:1", "b:2"]);
    assert_eq!(removed.load(Ordering::SeqCst), 0, "no removal applied");
    assert_eq!(pool.stats().closed_backend_gone, 0);
    assert_eq!((m.live_to("a:1"), m.live_to("b:2")), (1, 1), "kept");
    assert_eq!(pool.status().idle, 2);

    // The same flap later in a burst: a list wakes the pool's applier, the drop comes 18 ms
    // after it and the relist 7 ms after that. Publishes have not paused for 20 ms until the
    // relist, so only the relist's list is applied.
    u.publish(addrs(&["a:1", "b:2", "c:3"]));
    tokio::time::sleep(Duration::from_millis(18)).await;
    u.publish(addrs(&["a:1", "c:3"]));
    tokio::time::sleep(Duration::from_millis(7)).await;
    u.publish(addrs(&["a:1", "b:2", "c:3"]));
    eventually("c added", MIN, || listed(&pool).len() == 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(listed(&pool), ["a:1", "b:2", "c:3"]);
    assert_eq!(removed.load(Ordering::SeqCst), 0, "no removal applied");
    assert_eq!(m.live_to("b:2"), 1, "kept");

    // A removal that stands is applied (once publishes pause).
    u.publish(addrs(&["a:1", "c:3"]));
    eventually("b removed", MIN, || listed(&pool) == ["a:1", "c:3"]).await;
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert_eq!(m.live_to("b:2"), 0, "its idle connection closed at once");
}
