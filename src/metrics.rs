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
//!
//! When the pool closes, the task publishes once more and ends ([`publish_closed`], or
//! [`publish_freed`] if the pool is gone by then): the facade keeps a gauge's last value, so
//! without it the gauges would show the connections the pool had before it closed. See
//! those functions for what the final values reflect.

use crate::manager::Manager;
use crate::pool::PoolInner;
use crate::stats::{BackendStatus, Stats, Status};

/// The per-backend gauges, in the order of [`backend_values`].
const BACKEND_GAUGES: [&str; 5] = [
    "connpool_backend_size",
    "connpool_backend_idle",
    "connpool_backend_in_use",
    "connpool_backend_weight",
    "connpool_backend_online",
];

/// The pool's gauges that count connections and waiters, in the order of [`pool_values`]
/// (all but `connpool_max_size`).
const POOL_GAUGES: [&str; 4] = [
    "connpool_size",
    "connpool_idle",
    "connpool_in_use",
    "connpool_waiters",
];

/// The pool's [`POOL_GAUGES`].
fn pool_values(s: &Status) -> [usize; 4] {
    [s.size, s.idle, s.in_use, s.waiters]
}

/// Sets every one of `backend`'s gauges to 0 (it left the list, or the pool is gone: the
/// facade cannot delete a series).
fn zero_backend(pool: &str, backend: &str) {
    let labels = [("pool", pool.to_owned()), ("backend", backend.to_owned())];
    for key in BACKEND_GAUGES {
        metrics::gauge!(key, &labels).set(0.0);
    }
}

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
    publish_status(
        &inner.config.name,
        &inner.status(),
        &inner.stats(),
        labelled,
    );
}

/// The last publication of a closed pool, once `close()`'s drain is done (the maintenance
/// task waits for that; see `maintenance.rs`). It reflects the pool right after the drain:
/// `connpool_idle` and every backend's idle gauge read 0 (the drain closed the idle
/// connections, and one that comes back later is closed, not queued: only a return racing
/// the drain can show for an instant), `connpool_waiters`
/// reads 0 (close failed every waiter; each leaves the line when it next runs), and each
/// backend reads weight 0 and offline (a closed pool dials nothing). `connpool_size` and
/// `connpool_in_use` (and the backends' size and in-use gauges) count the connections still
/// lent at that moment, plus slots of gets connecting or checking for themselves that have not
/// yet seen the close; with none, they read 0. Those close later, as they come back, and are not
/// published: the task has ended. Counters read their values at this moment too: a get that
/// fails after it (one that starts after close, or a waiter that runs later) is counted in
/// `stats()` but not published.
pub(crate) fn publish_closed<M: Manager>(inner: &PoolInner<M>, labelled: &mut Vec<String>) {
    let mut status = inner.status();
    status.waiters = 0;
    for b in &mut status.backends {
        b.weight = 0;
        b.online = false;
    }
    publish_status(&inner.config.name, &status, &inner.stats(), labelled);
}

/// The last publication when the pool was freed before the task could read it (the last
/// handle dropped, which closed it, and no guard kept it alive): it had no connection and no
/// waiter left, so the pool's size, idle, in-use and waiter gauges and every gauge of the
/// backends last published read 0. `connpool_max_size` and the counters keep the values last
/// published (the freed pool's counters cannot be read).
pub(crate) fn publish_freed(name: &str, labelled: &[String]) {
    for backend in labelled {
        zero_backend(name, backend);
    }
    for key in POOL_GAUGES {
        metrics::gauge!(key, "pool" => name.to_owned()).set(0.0);
    }
}

/// Publishes `status` and `s` under pool `name`; see [`publish`].
fn publish_status(name: &str, status: &Status, s: &Stats, labelled: &mut Vec<String>) {
    let name = name.to_owned();
    for gone in labelled
        .iter()
        .filter(|a| !status.backends.iter().any(|b| &b.addr == *a))
    {
        zero_backend(&name, gone);
    }
    *labelled = status.backends.iter().map(|b| b.addr.clone()).collect();
    let g = |key: &'static str, v: usize| {
        metrics::gauge!(key, "pool" => name.clone()).set(v as f64);
    };
    g("connpool_max_size", status.max_size);
    for (key, v) in POOL_GAUGES.into_iter().zip(pool_values(status)) {
        g(key, v);
    }
    for b in &status.backends {
        let labels = [("pool", name.clone()), ("backend", b.addr.clone())];
        for (key, v) in BACKEND_GAUGES.into_iter().zip(backend_values(b)) {
            metrics::gauge!(key, &labels).set(v);
        }
        metrics::counter!("connpool_backend_connect_errors_total", &labels)
            .absolute(b.connect_errors);
    }
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
