//! The `metrics` feature after close: the maintenance task's last publication shows the
//! drained pool, not the connections it had before. Its own test binary: the recorder is
//! process-global.
//!
//! The recorder here keeps each gauge's last value (`metrics_util`'s `DebuggingRecorder`
//! resets a gauge to 0 when it hands it out in a snapshot, so it cannot tell a gauge set to 0
//! from one that was never set again).
#![cfg(feature = "metrics")]

mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use connpool::Pool;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use support::faulty::{eventually, settles, Faulty};

/// Plenty: the pool publishes every 100 ms (virtual time).
const WITHIN: Duration = Duration::from_secs(10);

/// A recorder that keeps every metric's last value, for reading at any time.
struct Keep(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for Keep {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

/// The process's recorder, installed by the first test to ask.
fn registry() -> &'static Arc<Registry<Key, AtomicStorage>> {
    static REGISTRY: OnceLock<Arc<Registry<Key, AtomicStorage>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Arc::new(Registry::atomic());
        metrics::set_global_recorder(Keep(Arc::clone(&registry)))
            .expect("the only recorder in this test binary");
        registry
    })
}

/// The last value of gauge `name` labelled `pool = <pool>` (and `backend = <backend>` if
/// given), if it was ever set.
fn gauge(pool: &str, name: &str, backend: Option<&str>) -> Option<f64> {
    registry()
        .get_gauge_handles()
        .into_iter()
        .find(|(k, _)| {
            let label = |key: &str| k.labels().find(|l| l.key() == key).map(|l| l.value());
            k.name() == name && label("pool") == Some(pool) && label("backend") == backend
        })
        .map(|(_, g)| f64::from_bits(g.load(std::sync::atomic::Ordering::SeqCst)))
}

/// Every gauge that counts connections or says a backend is usable, for pool `pool` and its
/// one backend (the default, `""`).
fn gauges(pool: &str) -> Vec<(&'static str, Option<f64>)> {
    let mut all: Vec<_> = ["connpool_size", "connpool_idle", "connpool_in_use"]
        .into_iter()
        .map(|n| (n, gauge(pool, n, None)))
        .collect();
    for n in [
        "connpool_backend_size",
        "connpool_backend_idle",
        "connpool_backend_in_use",
        "connpool_backend_weight",
        "connpool_backend_online",
    ] {
        all.push((n, gauge(pool, n, Some(""))));
    }
    all
}

/// A pool named `name` that keeps two connections idle.
fn pool_with_two_idle(m: &Faulty, name: &str) -> Pool<Faulty> {
    Pool::builder(m.clone())
        .name(name)
        .max_size(4)
        .min_idle(2)
        .maintenance_interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// Waits until the published gauges show the two idle connections.
async fn published_two_idle(name: &str) {
    eventually("connpool_idle published as 2", WITHIN, || {
        gauge(name, "connpool_idle", None) == Some(2.0)
            && gauge(name, "connpool_size", None) == Some(2.0)
            && gauge(name, "connpool_backend_idle", Some("")) == Some(2.0)
    })
    .await;
}

/// Waits until every connection gauge of `name` reads 0.
async fn published_drained(name: &str) {
    let drained = || gauges(name).iter().all(|(_, v)| *v == Some(0.0));
    assert!(
        settles(WITHIN, drained).await,
        "gauges still {:?} {WITHIN:?} after the pool closed",
        gauges(name)
    );
}

#[tokio::test(start_paused = true)]
async fn gauges_read_zero_after_close() {
    let m = Faulty::new();
    let pool = pool_with_two_idle(&m, "closing");
    published_two_idle("closing").await;

    pool.close().await;
    assert_eq!(pool.status().size, 0);
    published_drained("closing").await;
}

#[tokio::test(start_paused = true)]
async fn gauges_read_zero_after_the_last_handle_drops() {
    let m = Faulty::new();
    let pool = pool_with_two_idle(&m, "dropping");
    published_two_idle("dropping").await;

    drop(pool);
    eventually("both connections closed", WITHIN, || m.live() == 0).await;
    published_drained("dropping").await;
}
