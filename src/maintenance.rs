//! The maintenance task: closes connections past `idle_timeout` and `max_lifetime`, pings
//! connections quiet for `keepalive` (closing them after `check_retries` failures in a row),
//! refills `min_idle`, and publishes metrics.
//!
//! Between passes the task holds only a `Weak` reference: a dropped pool is not kept alive.
//! It stops when the pool closes (with `metrics`, after one last publication, once close's
//! drain is done). A connection the scan takes out of the idle queue keeps its
//! unit of capacity meanwhile (held by an engine `Unit`, so a pass cancelled mid-check closes
//! it and frees the unit), and a refill dials on a slot it reserved: the hard bound holds.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::backends::Picked;
use crate::engine::Unit;
use crate::events::CloseReason;
use crate::idle::Token;
use crate::lanes::Lane;
use crate::manager::Manager;
use crate::pool::{CheckFailure, PoolInner};
use crate::sync::{Arc, Instant};

/// The shortest pause between passes, whatever the settings.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Keepalive pings in flight at once, at most.
const MAX_PINGS: usize = 8;

/// Runs `batch` to completion, every future concurrently (each wake polls those not done;
/// a batch is at most [`MAX_PINGS`]). Dropped mid-way, it drops them (a ping's unit then
/// closes its connection).
async fn join_all<F: Future<Output = ()>>(batch: Vec<F>) {
    let mut pending: Vec<Option<Pin<Box<F>>>> =
        batch.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut left = false;
        for slot in &mut pending {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    left = true;
                }
            }
        }
        if left {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}

pub(crate) fn interval(config: &crate::Config) -> Duration {
    let mut every = config.maintenance_interval;
    for d in [config.idle_timeout, config.keepalive, config.max_lifetime]
        .into_iter()
        .flatten()
    {
        every = every.min(d / 2);
    }
    every.max(MIN_INTERVAL)
}

pub(crate) fn spawn<M: Manager>(inner: &Arc<PoolInner<M>>) {
    let weak = Arc::downgrade(inner);
    let every = interval(&inner.config);
    // One listener for the task's whole life. `shutdown` is notified once, by `close_now`,
    // after `Engine::close` (which drains the idle queue) has returned. Made here, during
    // `build()`, before any handle exists (nobody can have closed the pool yet), it is sure
    // to hear that notification, whenever it comes: so once the task sees the pool closed
    // (by `is_closed()`, which turns true before the drain), awaiting it waits for the drain
    // to be done (a listener made after seeing the flag could have missed the notification
    // and never fire). Owned, it does not keep the pool alive.
    debug_assert!(!inner.is_closed(), "spawned by build(), before any close");
    let mut shutdown = inner.shutdown.listen();
    #[cfg(feature = "metrics")]
    let name = inner.config.name.clone();
    tokio::spawn(async move {
        // The backends the last publication labelled (their gauges are zeroed once they leave).
        #[cfg(feature = "metrics")]
        let mut labelled = Vec::new();
        // Why the loop ended: `true` once `shutdown` fired (close is done, drain included),
        // `false` when the pool was seen closed first.
        let notified = loop {
            let Some(inner) = weak.upgrade() else {
                // Freed: its last handle closed it, and nothing is left to read.
                #[cfg(feature = "metrics")]
                crate::metrics::publish_freed(&name, &labelled);
                return;
            };
            if inner.is_closed() {
                break false;
            }
            // Raced with `close()`: a keepalive ping or a refill's connect in flight (up
            // to `check_timeout` or `connect_timeout`) must not delay it. Dropped mid-way (as
            // the `select!` ends, before anything below runs), the pass's unit closes its
            // connection (or frees its slot) in the closed pool.
            tokio::select! {
                () = inner.maintain() => {}
                () = inner.closed() => break false,
            }
            #[cfg(feature = "metrics")]
            crate::metrics::publish(&inner, &mut labelled);
            drop(inner);
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = &mut shutdown => break true,
            }
        };
        // The pool closed: publish once more, after the drain, so that the gauges do not keep
        // showing the connections it had (the facade keeps a gauge's last value); see
        // `metrics::publish_closed` for what the values reflect. Lent connections close as
        // they come back, after the task has ended.
        #[cfg(feature = "metrics")]
        {
            if !notified {
                // Bounded: `close_now` notifies as soon as its drain is done.
                shutdown.await;
            }
            match weak.upgrade() {
                Some(inner) => crate::metrics::publish_closed(&inner, &mut labelled),
                None => crate::metrics::publish_freed(&name, &labelled),
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (notified, shutdown);
    });
}

impl<M: Manager> PoolInner<M> {
    /// One maintenance pass.
    pub(crate) async fn maintain(&self) {
        self.scan_idle().await;
        self.refill().await;
    }

    /// Closes stale idle connections and pings quiet ones, in batches ([`MAX_PINGS`] at
    /// most, and never more than are left in the idle queue, so gets still find half of the
    /// idle connections, rounded down): a backend that stopped answering costs a pass one
    /// `check_timeout` per batch, not one per connection.
    async fn scan_idle(&self) {
        let mut batch = Vec::new();
        for _ in 0..self.idle.len() {
            if self.is_closed() {
                break;
            }
            let Some(c) = self.idle.pop(Lane::current()) else {
                break;
            };
            let now = Instant::now();
            if let Some(reason) = self.stale_reason(&c.meta, now) {
                self.close_conn(c, reason);
                continue;
            }
            let due = self
                .config
                .keepalive
                .is_some_and(|k| c.meta.quiet_for(now) >= k);
            if !due {
                self.requeue(c);
                continue;
            }
            // Created here, run by `join_all` (an async fn does nothing until polled).
            batch.push(self.ping(Unit::new(&self.engine, self, Token::Conn(c))));
            if batch.len() >= MAX_PINGS || batch.len() >= self.idle.len() {
                join_all(std::mem::take(&mut batch)).await;
            }
        }
        join_all(batch).await;
    }

    /// Pings an idle connection taken out of the queue (it keeps its unit meanwhile), then
    /// puts it back or closes it.
    async fn ping(&self, mut unit: Unit<'_, M::Connection, Self>) {
        let Token::Conn(c) = unit.token() else {
            unreachable!("the unit holds the connection")
        };
        // No get waits on it: only `check_timeout` bounds the check.
        let checked = self.check_conn(c, None).await;
        // Closed after `check_retries` failures in a row, or at once when the manager says
        // the failure broke it (a dead socket is not worth another try), or when the check
        // was cut short (timed out or panicked: its state is unknown, a reply may still be
        // on its way). A connection kept after a failure is checked again before it is
        // lent, and pinged again a keepalive interval later.
        let close = match &checked {
            Ok(()) => false,
            Err(CheckFailure::Failed(_)) => {
                c.meta.failed_checks >= self.config.check_retries
                    || !crate::engine::Hooks::is_reusable(self, &mut c.conn)
            }
            Err(_) => true,
        };
        if close {
            let c = unit.take_conn();
            self.close_conn(c, CloseReason::CheckFailed);
        } else if let Some(reason) = self.stale_reason(&c.meta, Instant::now()) {
            // Its backend left the list during the ping (the purge could not see it):
            // closed now, not left queued.
            let c = unit.take_conn();
            self.close_conn(c, reason);
        } else {
            self.requeue(unit.take_conn());
        }
    }

    /// Opens connections until `min_idle` are idle (within `max_size`).
    async fn refill(&self) {
        let want = self.config.min_idle;
        while want > 0 && !self.is_closed() && self.idle.len() < want {
            if !self.engine.try_reserve() {
                return;
            }
            // Dropped on any early return: the slot goes on (in a closed pool, back to `size`,
            // through `Engine::free_unit`, which wakes `drained` if it was the last unit).
            let unit = Unit::new(&self.engine, self, Token::Slot);
            // `close()` may have run since the loop's check (drained, seen `size` 0 and
            // returned): `try_reserve` does not look at `closed`, so look again now, or this
            // slot would dial after close. The reservation is a SeqCst CAS on `size` and this
            // a SeqCst load of `closed`; `close()` swaps `closed` (SeqCst), fences, and then
            // loads `size` (SeqCst) to decide whether it is drained: the close handshake's
            // store-load pattern (see `engine.rs`), the CAS as the put. In the total order of
            // SeqCst operations, either this load follows the swap and sees the pool closed
            // (the slot goes back, undialled), or the CAS precedes the swap and `close()`'s
            // load counts the slot: `close()` waits for it as for any connect in flight at close
            // (the task's `select!` on `closed()` drops this pass, and `unit` frees the slot).
            if self.is_closed() {
                return;
            }
            let (entry, claim) = match self.backends.pick(self.config.balance, &[]) {
                Picked::Dial(e, claim) => (e, claim),
                Picked::AllBackedOff(_) | Picked::None => return,
            };
            match self.dial(&entry, claim, None).await {
                Ok(c) => {
                    // The new connection now stands for the slot: the slot itself goes.
                    drop(unit.take());
                    self.requeue(c);
                }
                Err(_) => return,
            }
        }
    }
}
