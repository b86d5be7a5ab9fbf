//! The `metrics` feature publishes the gauges and counters, labelled with the pool's name.
#![cfg(feature = "metrics")]

mod support;

use std::time::Duration;

use connpool::Pool;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use support::faulty::Faulty;

type Snapshot = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The value of `name` labelled `pool = orders` in one snapshot.
fn find<'a>(snap: &'a Snapshot, name: &str) -> Option<(MetricKind, &'a DebugValue)> {
    snap.iter()
        .find(|(k, _, _, _)| {
            k.key().name() == name
                && k.key()
                    .labels()
                    .any(|l| l.key() == "pool" && l.value() == "orders")
        })
        .map(|(k, _, _, v)| (k.kind(), v))
}

#[tokio::test(start_paused = true)]
async fn gauges_and_counters_are_published_with_the_pool_label() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this test binary");

    let m = Faulty::new();
    let pool = Pool::builder(m.clone())
        .name("orders")
        .max_size(2)
        .maintenance_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let held = pool.get().await.unwrap();
    let other = pool.get().await.unwrap();
    // A get that waits 300 ms for a slot, then times out: its wait is published in
    // microseconds (whole seconds would round it away).
    let waited = pool.get_timeout(Duration::from_millis(300)).await;
    assert!(waited.unwrap_err().is_timeout());
    drop(other);

    // The debugging recorder hands counters out once per snapshot: judge each snapshot whole,
    // and wait for one taken after a publication that followed the two gets.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let snap = loop {
        let snap: Snapshot = snapshotter.snapshot().into_vec();
        if matches!(
            find(&snap, "connpool_gets_total"),
            Some((MetricKind::Counter, DebugValue::Counter(2)))
        ) && matches!(
            find(&snap, "connpool_timeouts_total"),
            Some((MetricKind::Counter, DebugValue::Counter(1)))
        ) {
            break snap;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot with gets = 2 within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    match find(&snap, "connpool_in_use") {
        Some((MetricKind::Gauge, DebugValue::Gauge(v))) => assert_eq!(v.into_inner(), 1.0),
        other => panic!("in_use gauge: {other:?}"),
    }
    match find(&snap, "connpool_size") {
        Some((MetricKind::Gauge, DebugValue::Gauge(v))) => assert_eq!(v.into_inner(), 2.0),
        other => panic!("size gauge: {other:?}"),
    }
    // Both gets dialed (the first connection was still lent during the second).
    match find(&snap, "connpool_misses_total") {
        Some((MetricKind::Counter, DebugValue::Counter(n))) => assert_eq!(*n, 2),
        other => panic!("misses counter: {other:?}"),
    }
    match find(&snap, "connpool_wait_microseconds_total") {
        Some((MetricKind::Counter, DebugValue::Counter(n))) => {
            assert!((300_000..310_000).contains(n), "{n} µs")
        }
        other => panic!("wait time counter: {other:?}"),
    }
    // Every counter of `Stats` is published (its field names, read from its `Debug`), so a
    // counter added later cannot be forgotten here.
    let stats = format!("{:?}", pool.stats());
    let fields = stats
        .trim_start_matches("Stats {")
        .trim_end_matches('}')
        .split(',')
        .filter_map(|f| f.split(':').next())
        .map(str::trim)
        .filter(|f| !f.is_empty() && *f != "wait_time");
    let mut published = 0;
    for field in fields {
        let name = format!("connpool_{field}_total");
        assert!(
            matches!(find(&snap, &name), Some((MetricKind::Counter, _))),
            "{name} is not published"
        );
        published += 1;
    }
    assert!(published >= 20, "{published} counters found in {stats}");
    for name in [
        "connpool_backend_size",
        "connpool_backend_idle",
        "connpool_backend_in_use",
        "connpool_backend_weight",
        "connpool_backend_online",
    ] {
        assert!(
            matches!(find(&snap, name), Some((MetricKind::Gauge, _))),
            "{name}"
        );
    }
    assert!(matches!(
        find(&snap, "connpool_backend_connect_errors_total"),
        Some((MetricKind::Counter, _))
    ));
    assert_eq!(backend_gauge(&snap, "connpool_backend_size", ""), Some(2.0));
    drop(held);

    // The backend leaves the list: its gauges go to 0 (they would otherwise keep showing
    // its last connections forever). The debugging recorder zeroes a gauge as a snapshot
    // reads it, so no snapshot is taken until a publication has followed the removal: first
    // one that sets the old backend's gauges again, then the removal, then one more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    pool.set_backends([connpool::Backend::new("other:1")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snap: Snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(
        backend_gauge(&snap, "connpool_backend_online", "other:1"),
        Some(1.0),
        "the new backend is published"
    );
    for g in [
        "connpool_backend_size",
        "connpool_backend_idle",
        "connpool_backend_weight",
        "connpool_backend_online",
    ] {
        assert_eq!(
            backend_gauge(&snap, g, ""),
            Some(0.0),
            "{g} of the removed backend"
        );
    }
}

/// Gauge `name` of backend `addr` (pool `orders`) in one snapshot.
fn backend_gauge(snap: &Snapshot, name: &str, addr: &str) -> Option<f64> {
    snap.iter().find_map(|(k, _, _, v)| {
        let key = k.key();
        let labelled =
            |l: &str, want: &str| key.labels().any(|x| x.key() == l && x.value() == want);
        match v {
            DebugValue::Gauge(g)
                if key.name() == name
                    && labelled("pool", "orders")
                    && labelled("backend", addr) =>
            {
                Some(g.into_inner())
            }
            _ => None,
        }
    })
}
