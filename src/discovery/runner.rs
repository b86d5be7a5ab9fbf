//! The pool's discovery tasks: one runs `Discovery::run` (restarting it after a backoff when
//! it fails or panics), one applies published lists to the pool (coalescing bursts).

use std::time::Duration;

use super::{DynDiscovery, Updates, UpdatesShared};
use crate::backoff::BackoffPolicy;
use crate::manager::Manager;
use crate::pool::{catch, PoolInner};
use crate::sync::{Arc, Instant};

/// A published list is applied once publishes have paused this long (the first list at once):
/// a burst of publishes collapses into its latest list, and a flap within it (a backend
/// dropped and listed again) changes nothing, so that backend keeps its connections.
const COALESCE: Duration = Duration::from_millis(20);
/// The longest a burst that never pauses holds its latest list back (from the publish that
/// woke the applier).
const COALESCE_MAX: Duration = Duration::from_millis(100);
/// Restart backoff of a failing `run`: from 100 ms, doubling, up to 5 s, jittered.
const RESTART_BASE: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(5);
/// A run that lasted this long resets the restart backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

pub(crate) fn spawn<M: Manager>(
    inner: &Arc<PoolInner<M>>,
    discovery: Arc<dyn DynDiscovery>,
    shared: Arc<UpdatesShared>,
) {
    let updates = Updates {
        shared: Arc::clone(&shared),
    };
    tokio::spawn(run_loop(discovery, updates));

    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        // The first list is applied at once: gets wait for it.
        let mut first = true;
        loop {
            shared.wake.notified().await;
            // Wait for the publishes to pause before taking the list (a trailing debounce,
            // bounded by COALESCE_MAX): a change (a backend dropped, then listed again a
            // moment later) is seen whole, and applied only as what it ends in.
            if !first {
                let woke = Instant::now();
                loop {
                    // Relaxed: only whether another publish came meanwhile; the list itself
                    // is handed over under `pending`'s mutex.
                    let seen = shared.published.load(crate::sync::Ordering::Relaxed);
                    tokio::time::sleep(COALESCE).await;
                    let quiet = shared.published.load(crate::sync::Ordering::Relaxed) == seen;
                    if quiet || woke.elapsed() >= COALESCE_MAX {
                        break;
                    }
                }
            }
            // SeqCst: like every access of `closed` (set once, by close).
            if shared.closed.load(crate::sync::Ordering::SeqCst) {
                return;
            }
            let Some(list) = shared.take_pending() else {
                continue;
            };
            first = false;
            let Some(inner) = weak.upgrade() else { return };
            inner.set_backends(list);
            drop(inner);
        }
    });
}

async fn run_loop(discovery: Arc<dyn DynDiscovery>, updates: Updates) {
    let mut failures: u32 = 0;
    loop {
        if updates.is_closed() {
            return;
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            // `run` itself called inside `catch`: it may panic before it returns its future.
            r = catch(async { discovery.run_boxed(updates.clone()).await }) => r,
            () = updates.closed() => return,
        };
        if updates.is_closed() {
            return;
        }
        let message = match outcome {
            Ok(Ok(())) => "discovery returned before the pool closed; restarting".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("discovery {panic}"),
        };
        updates.report_error(&message);
        if started.elapsed() >= HEALTHY_RUN {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let delay = BackoffPolicy {
            base: RESTART_BASE,
            max: RESTART_MAX,
        }
        .delay(u64::from(failures));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = updates.closed() => return,
        }
    }
}
