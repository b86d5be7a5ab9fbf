//! The one capped, jittered exponential backoff used everywhere a retry waits: a failing
//! backend, a discovery `run` that failed, a ZooKeeper reconnect, an etcd re-read.

use std::time::Duration;

/// Doubling steps `delay` takes at most. From a `base` of 1 ns, 2^95 ns already exceeds
/// `Duration::MAX`, so this reaches any `max` from any `base` ≥ 1 ns while keeping the loop
/// (and so the cost of a huge failure count) bounded.
const MAX_DOUBLINGS: u64 = 128;

/// Doubles from `base` per consecutive failure up to `max`, each delay jittered down by up to
/// half, so many clients that saw the same outage do not retry in step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackoffPolicy {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl BackoffPolicy {
    /// The delay after the `failures`-th failure in a row (1 = the first: `base`), jittered.
    pub(crate) fn delay(&self, failures: u64) -> Duration {
        jitter(self.raw_delay(failures))
    }

    /// The delay before jitter: `base · 2^(failures - 1)`, capped at `max`.
    fn raw_delay(&self, failures: u64) -> Duration {
        let mut d = self.base;
        // Doubling step by step (saturating) rather than shifting a multiplier: a shift
        // overflows past 31 or 63 steps, and capping the step count instead stops short of
        // `max` when `max / base` is large. The loop stops as soon as `max` is reached.
        for _ in 0..failures.saturating_sub(1).min(MAX_DOUBLINGS) {
            if d >= self.max {
                break;
            }
            d = d.saturating_mul(2);
        }
        d.min(self.max)
    }
}

/// `d` jittered down to somewhere in `[d/2, d]`.
pub(crate) fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    // Only the upper half is scaled, by a factor below 1, so `mul_f64` cannot overflow even
    // for `Duration::MAX` (scaling all of `d` by `0.5 + f / 2` could: that factor can round to
    // exactly 1.0, and `d`'s f64 seconds round up past u64::MAX); the saturating add and the
    // `min` absorb float rounding so the result never exceeds `d`.
    half.saturating_add((d - half).mul_f64(fastrand::f64()))
        .min(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_DURATION;

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

    /// Jitter spreads: delays land in both halves of `[d/2, d]` (a constant delay, or one
    /// not jittered at all, fails this; the chance that 200 uniform draws all miss one half
    /// is 2^-199).
    #[test]
    fn jitter_spreads_over_its_range() {
        let d = Duration::from_secs(1);
        let draws: Vec<Duration> = (0..200).map(|_| jitter(d)).collect();
        let three_quarters = d.mul_f64(0.75);
        assert!(draws.iter().any(|&j| j < three_quarters), "{draws:?}");
        assert!(draws.iter().any(|&j| j > three_quarters), "{draws:?}");
    }

    #[test]
    fn keeps_doubling_until_max_however_far_it_is() {
        let max = Duration::from_secs(3600);
        let p = BackoffPolicy {
            base: Duration::from_millis(1),
            max,
        };
        // 1 ms · 2^21 ≈ 35 min is still below the cap; the 23rd failure reaches it exactly.
        for failures in 1..=22 {
            assert_eq!(
                p.raw_delay(failures),
                Duration::from_millis(1 << (failures - 1)),
                "{failures}"
            );
        }
        for failures in [23, 24, 64, 65, 129, 1000, u64::MAX] {
            assert_eq!(p.raw_delay(failures), max, "{failures}");
            for _ in 0..100 {
                let d = p.delay(failures);
                assert!(d >= max / 2 && d <= max, "{failures}: {d:?}");
            }
        }
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        for (base, max) in [
            (MAX_DURATION, MAX_DURATION),
            (Duration::from_nanos(1), MAX_DURATION),
            (Duration::from_nanos(1), Duration::MAX),
            (Duration::MAX, Duration::MAX),
            (Duration::ZERO, Duration::MAX),
        ] {
            let p = BackoffPolicy { base, max };
            for failures in [0, 1, 2, 63, 64, 65, 96, 200, u64::MAX] {
                let d = p.delay(failures);
                assert!(d <= max, "{base:?} {max:?} {failures}: {d:?}");
            }
            if base > Duration::ZERO {
                assert_eq!(p.raw_delay(u64::MAX), max, "{base:?} {max:?}");
            }
        }
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            MAX_DURATION,
            Duration::MAX,
        ] {
            for _ in 0..100 {
                let j = jitter(d);
                assert!(j >= d / 2 && j <= d, "{d:?}: {j:?}");
            }
        }
    }
}
