//! The maintenance task: closes connections past `idle_timeout` and `max_lifetime`, pings
//! connections quiet for `keepalive` (closing them after `check_retries` failures in a row),
//! refills `min_idle`, and publishes metrics.
//!
//! Between passes the task holds only a `Weak` reference: a dropped pool is not kept alive.
//! It stops when the pool closes. Each pass takes one permit while it has connections out of
//! the idle queue (so the hard bound holds), and none when no slot is free (the pool is busy:
//! its connections are in use, not idle).

use std::time::Duration;

use crate::backends::Picked;
use crate::engine::Permit;
use crate::events::CloseReason;
use crate::manager::Manager;
use crate::pool::{Held, PoolInner};
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
        loop {
            {
                let Some(inner) = weak.upgrade() else { return };
                if inner.is_closed() {
                    return;
                }
                inner.maintain().await;
                #[cfg(feature = "metrics")]
                crate::metrics::publish(&inner);
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
        let n = self.idle.len();
        if n == 0 || !self.admission.try_acquire() {
            return;
        }
        let permit = Permit::new(&self.admission);
        for _ in 0..n {
            if self.is_closed() {
                break;
            }
            let Some(c) = self.idle.pop() else { break };
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
            let mut held = Held::new(self, c);
            let far = now + self.config.check_timeout;
            match self.check_conn(held.get(), far).await {
                Ok(()) => self.requeue(held.take()),
                // Closed after `check_retries` failures in a row, or at once when the manager
                // says the failure broke it (a dead socket is not worth another try). A
                // connection kept after a failure is checked again before it is lent.
                Err(_)
                    if held.get().meta.failed_checks >= self.config.check_retries
                        || !crate::engine::Hooks::is_reusable(self, &mut held.get().conn) =>
                {
                    self.close_conn(held.take(), CloseReason::CheckFailed);
                }
                Err(_) => self.requeue(held.take()),
            }
        }
        drop(permit);
    }

    /// Opens connections until `min_idle` are idle (within `max_size`).
    async fn refill(&self) {
        let want = self.config.min_idle;
        while want > 0
            && !self.is_closed()
            && self.idle.len() < want
            && self.size() < self.admission.max()
        {
            if !self.admission.try_acquire() {
                return;
            }
            let permit = Permit::new(&self.admission);
            let entry = match self.backends.pick(self.config.balance, &[]) {
                Picked::Dial(e) => e,
                Picked::AllBackedOff(_) | Picked::None => return,
            };
            match self.dial(&entry, None).await {
                Ok(c) => self.requeue(c),
                Err(_) => return,
            }
            drop(permit);
        }
    }
}
