//! A lock-free latency histogram: log-linear buckets of microseconds (16 per power of two),
//! within about 6 % of the true value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB: u32 = 16;
const BUCKETS: usize = 64 * SUB as usize;

pub struct Histogram {
    buckets: Vec<AtomicU64>,
    max: AtomicU64,
}

fn index(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= 4
    let sub = (us >> (exp - 4)) & (SUB as u64 - 1);
    ((exp - 3) * SUB) as usize + sub as usize
}

fn lower_bound(i: usize) -> u64 {
    if i < SUB as usize {
        return i as u64;
    }
    let exp = (i / SUB as usize) as u32 + 3;
    let sub = (i % SUB as usize) as u64;
    (1u64 << exp) + (sub << (exp - 4))
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        // Relaxed: independent statistics, read approximately by the progress line.
        self.buckets[index(us).min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    pub fn percentile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return lower_bound(i);
            }
        }
        self.max()
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}
