//! Publishes the pool's gauges and counters through the `metrics` facade (feature
//! `metrics`), labelled `pool = <name>`. Called by the maintenance task after each pass, so
//! the hot path pays nothing.
//!
//! Gauges: `connpool_max_size`, `connpool_size`, `connpool_idle`, `connpool_in_use`,
//! `connpool_waiters`, and per backend (`backend` label) `connpool_backend_size`,
//! `connpool_backend_idle`, `connpool_backend_in_use`, `connpool_backend_weight`,
//! `connpool_backend_online`. Counters (absolute): `connpool_<field>_total` for every counter
//! field of `Stats`, `connpool_wait_microseconds_total` for its wait time (whole
//! microseconds: the facade's counters are integers, and seconds would drop every wait
//! shorter than one), and per backend `connpool_backend_connect_errors_total`. A backend that
//! leaves the list has its gauges set to 0 once (the facade cannot delete a series), so no
//! removed backend shows connections it no longer has.

use crate::manager::Manager;
use crate::pool::PoolInner;
use crate::stats::BackendStatus;

/// The per-backend gauges, in the order of [`backend_values`].
const BACKEND_GAUGES: [&str; 5] = [
    "connpool_backend_size",
    "connpool_backend_idle",
    "connpool_backend_in_use",
    "connpool_backend_weight",
    "connpool_backend_online",
];

/// A listed backend's [`BACKEND_GAUGES`].
fn backend_values(b: &BackendStatus) -> [f64; 5] {
    [
        b.size as f64,
        b.idle as f64,
        b.in_use as f64,
        f64::from(b.weight),
        if b.online { 1.0 } else { 0.0 },
    ]
}

/// Publishes everything; `labelled` holds the backends the last call published, and is
/// updated.
pub(crate) fn publish<M: Manager>(inner: &PoolInner<M>, labelled: &mut Vec<String>) {
    let name = inner.config.name.clone();
    let status = inner.status();
    for gone in labelled
        .iter()
        .filter(|a| !status.backends.iter().any(|b| &b.addr == *a))
    {
        let labels = [("pool", name.clone()), ("backend", gone.clone())];
        for key in BACKEND_GAUGES {
            metrics::gauge!(key, &labels).set(0.0);
        }
    }
    *labelled = status.backends.iter().map(|b| b.addr.clone()).collect();
    let g = |key: &'static str, v: usize| {
        metrics::gauge!(key, "pool" => name.clone()).set(v as f64);
    };
    g("connpool_max_size", status.max_size);
    g("connpool_size", status.size);
    g("connpool_idle", status.idle);
    g("connpool_in_use", status.in_use);
    g("connpool_waiters", status.waiters);
    for b in &status.backends {
        let labels = [("pool", name.clone()), ("backend", b.addr.clone())];
        for (key, v) in BACKEND_GAUGES.into_iter().zip(backend_values(b)) {
            metrics::gauge!(key, &labels).set(v);
        }
        metrics::counter!("connpool_backend_connect_errors_total", &labels)
            .absolute(b.connect_errors);
    }
    let s = inner.stats();
    let c = |key: &'static str, v: u64| {
        metrics::counter!(key, "pool" => name.clone()).absolute(v);
    };
    c("connpool_gets_total", s.gets);
    c("connpool_hits_total", s.hits);
    c("connpool_misses_total", s.misses);
    c("connpool_waits_total", s.waits);
    c("connpool_timeouts_total", s.timeouts);
    c("connpool_exhausted_total", s.exhausted);
    c("connpool_cancelled_total", s.cancelled);
    c("connpool_connects_total", s.connects);
    c("connpool_connect_errors_total", s.connect_errors);
    c("connpool_check_failures_total", s.check_failures);
    c("connpool_closed_idle_total", s.closed_idle);
    c("connpool_closed_lifetime_total", s.closed_lifetime);
    c("connpool_closed_broken_total", s.closed_broken);
    c("connpool_closed_backend_gone_total", s.closed_backend_gone);
    c("connpool_discovery_errors_total", s.discovery_errors);
    c("connpool_backed_off_total", s.backed_off);
    c("connpool_no_backends_total", s.no_backends);
    c("connpool_failed_connect_total", s.failed_connect);
    c("connpool_failed_check_total", s.failed_check);
    c("connpool_failed_closed_total", s.failed_closed);
    c("connpool_detached_total", s.detached);
    let micros = u64::try_from(s.wait_time.as_micros()).unwrap_or(u64::MAX);
    c("connpool_wait_microseconds_total", micros);
}
