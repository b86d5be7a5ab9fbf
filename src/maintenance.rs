//! The maintenance task: closes connections past `idle_timeout` and `max_lifetime`, pings
//! connections quiet for `keepalive` (closing them after `check_retries` failures in a row),
//! refills `min_idle`, and publishes metrics.
//!
//! Between passes the task holds only a `Weak` reference: a dropped pool is not kept alive.
//! It stops when the pool closes. A connection the scan takes out of the idle queue keeps its
//! unit of capacity meanwhile (held by an engine `Unit`, so a pass cancelled mid-check closes
//! it and frees the unit), and a refill dials on a slot it reserved: the hard bound holds.

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
    tokio::spawn(async move {
        // The backends the last publication labelled (their gauges are zeroed once they leave).
        #[cfg(feature = "metrics")]
        let mut labelled = Vec::new();
        loop {
            {
                let Some(inner) = weak.upgrade() else { return };
                if inner.is_closed() {
                    return;
                }
                // Raced with `close()`: a keepalive ping or a refill's connect in flight (up
                // to `check_timeout` or `connect_timeout`) must not delay it. Dropped mid-way,
                // the pass's unit closes its connection (or frees its slot) in the closed pool.
                tokio::select! {
                    () = inner.maintain() => {}
                    () = inner.closed() => return,
                }
                #[cfg(feature = "metrics")]
                crate::metrics::publish(&inner, &mut labelled);
                let listener = inner.shutdown.listen();
                if inner.is_closed() {
                    return;
                }
                drop(inner);
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = listener => return,
                }
            }
        }
    });
}

impl<M: Manager> PoolInner<M> {
    /// One maintenance pass.
    pub(crate) async fn maintain(&self) {
        self.scan_idle().await;
        self.refill().await;
    }

    /// Closes stale idle connections and pings quiet ones.
    async fn scan_idle(&self) {
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
            let mut unit = Unit::new(&self.engine, self, Token::Conn(c));
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
    }

    /// Opens connections until `min_idle` are idle (within `max_size`).
    async fn refill(&self) {
        let want = self.config.min_idle;
        while want > 0 && !self.is_closed() && self.idle.len() < want {
            if !self.engine.try_reserve() {
                return;
            }
            // Dropped on any early return: the slot goes on.
            let unit = Unit::new(&self.engine, self, Token::Slot);
            let entry = match self.backends.pick(self.config.balance, &[]) {
                Picked::Dial(e) => e,
                Picked::AllBackedOff(_) | Picked::None => return,
            };
            match self.dial(&entry, None).await {
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
