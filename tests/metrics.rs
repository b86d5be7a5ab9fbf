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
        .maintenance_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let held = pool.get().await.unwrap();
    drop(pool.get().await.unwrap());

    // The debugging recorder hands counters out once per snapshot: judge each snapshot whole,
    // and wait for one taken after a publication that followed the two gets.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let snap = loop {
        let snap: Snapshot = snapshotter.snapshot().into_vec();
        if matches!(
            find(&snap, "connpool_gets_total"),
            Some((MetricKind::Counter, DebugValue::Counter(2)))
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
    assert!(find(&snap, "connpool_backend_size").is_some());
    drop(held);
}
