//! The `metrics` feature publishes the gauges and counters, labelled with the pool's name.
#![cfg(feature = "metrics")]

mod support;

use std::time::Duration;

use connpool::Pool;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use support::faulty::{eventually, Faulty};

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

    let find = |name: &str| {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(k, _, _, _)| {
                k.key().name() == name
                    && k.key()
                        .labels()
                        .any(|l| l.key() == "pool" && l.value() == "orders")
            })
            .map(|(k, _, _, v)| (k.kind(), v))
    };
    eventually(
        "metrics published after the gets",
        Duration::from_secs(10),
        || {
            matches!(
                find("connpool_gets_total"),
                Some((_, DebugValue::Counter(2)))
            )
        },
    )
    .await;
    match find("connpool_gets_total") {
        Some((MetricKind::Counter, DebugValue::Counter(n))) => assert_eq!(n, 2),
        other => panic!("gets counter: {other:?}"),
    }
    match find("connpool_in_use") {
        Some((MetricKind::Gauge, DebugValue::Gauge(v))) => assert_eq!(v.into_inner(), 1.0),
        other => panic!("in_use gauge: {other:?}"),
    }
    match find("connpool_size") {
        Some((MetricKind::Gauge, DebugValue::Gauge(v))) => assert_eq!(v.into_inner(), 2.0),
        other => panic!("size gauge: {other:?}"),
    }
    assert!(find("connpool_backend_size").is_some());
    drop(held);
}
