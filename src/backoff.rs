//! The one capped, jittered exponential backoff used everywhere a retry waits: a failing
//! backend, a discovery `run` that failed, a ZooKeeper reconnect, an etcd re-read.

use std::time::Duration;

/// Doubles from `base` per consecutive failure up to `max`, each delay jittered down by up to
/// half, so many clients that saw the same outage do not retry in step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackoffPolicy {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl BackoffPolicy {
    /// The delay after the `failures`-th failure in a row (1 = the first: `base`).
    pub(crate) fn delay(&self, failures: u64) -> Duration {
        let shift = failures.saturating_sub(1).min(20) as u32;
        jitter(self.base.saturating_mul(1u32 << shift).min(self.max))
    }
}

/// `d` jittered down to somewhere in `[d/2, d]`.
pub(crate) fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_jitters_down_by_at_most_half() {
        let p = BackoffPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for (failures, raw) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            for _ in 0..100 {
                let d = p.delay(failures);
                let raw = Duration::from_millis(raw);
                assert!(d <= raw && d >= raw / 2, "{failures}: {d:?}");
            }
        }
    }
}
