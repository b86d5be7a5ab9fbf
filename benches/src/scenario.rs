//! The scenarios and the loops that drive a pool through them.
//!
//! Every cycle is get → (yield × n) → drop. A run either lasts a fixed time (the report:
//! throughput, per-task counts for fairness, then a second phase timing every get) or a fixed
//! number of gets (criterion's `iter_custom`). Every wait for the tasks is bounded: a pool that
//! stops serving is reported as hanging ([`Hung`]), never waited for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hist::Hist;
use crate::pools::{AsyncPool, BlockingPool};

/// One contention configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One task, pool of 16: get → drop.
    Uncontended,
    /// 8 tasks on 2 workers, pool of 16: get → yield → drop.
    UnderCapacity,
    /// 64 tasks on 2 workers, pool of 8: get → yield → drop (getters queue).
    OverCapacity,
    /// 1,024 tasks on 2 workers, pool of 16: get → 3 yields → drop.
    Oversubscribed,
    /// 8 OS threads, pool of 4, blocking get → thread yield → drop.
    Threads,
}

/// The numbers of a [`Scenario`].
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Concurrent tasks (or threads).
    pub tasks: usize,
    /// The pool's max size.
    pub pool_size: usize,
    /// Yields while holding the connection.
    pub yields: usize,
    /// Runtime worker threads; 0 = a current-thread runtime.
    pub workers: usize,
}

impl Scenario {
    /// All of them, in report order.
    pub const ALL: [Scenario; 5] = [
        Scenario::Uncontended,
        Scenario::UnderCapacity,
        Scenario::OverCapacity,
        Scenario::Oversubscribed,
        Scenario::Threads,
    ];

    /// The name used on the command line and as the criterion group.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Uncontended => "uncontended",
            Scenario::UnderCapacity => "under_capacity",
            Scenario::OverCapacity => "over_capacity",
            Scenario::Oversubscribed => "oversubscribed",
            Scenario::Threads => "threads",
        }
    }

    /// Parses a [`name`](Self::name).
    pub fn from_name(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Its numbers.
    pub fn shape(self) -> Shape {
        let (tasks, pool_size, yields, workers) = match self {
            Scenario::Uncontended => (1, 16, 0, 0),
            Scenario::UnderCapacity => (8, 16, 1, 2),
            Scenario::OverCapacity => (64, 8, 1, 2),
            Scenario::Oversubscribed => (1024, 16, 3, 2),
            Scenario::Threads => (8, 4, 1, 0),
        };
        Shape {
            tasks,
            pool_size,
            yields,
            workers,
        }
    }

    /// Runs in OS threads with a blocking get.
    pub fn is_blocking(self) -> bool {
        self == Scenario::Threads
    }

    /// A one-line description (table headings, criterion parameters).
    pub fn describe(self) -> String {
        let s = self.shape();
        let hold = match s.yields {
            0 => "get → drop".to_owned(),
            1 => "get → yield → drop".to_owned(),
            n => format!("get → {n} yields → drop"),
        };
        if self.is_blocking() {
            return format!(
                "{} OS threads, pool {}, blocking get → thread yield → drop",
                s.tasks, s.pool_size
            );
        }
        let rt = match s.workers {
            0 => "current-thread runtime".to_owned(),
            n => format!("{n}-worker runtime"),
        };
        format!(
            "{} task{}, pool {}, {hold}, {rt}",
            s.tasks,
            if s.tasks == 1 { "" } else { "s" },
            s.pool_size
        )
    }

    /// The runtime this scenario runs on.
    pub fn runtime(self) -> tokio::runtime::Runtime {
        let s = self.shape();
        let built = if s.workers == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(s.workers)
                .enable_all()
                .build()
        };
        match built {
            Ok(rt) => rt,
            Err(e) => panic!("cannot build a runtime: {e}"),
        }
    }
}

/// The pool stopped serving: the tasks did not finish within the time limit.
#[derive(Debug, Clone, Copy)]
pub struct Hung;

/// What a timed run measured.
#[derive(Debug, Default)]
pub struct Measured {
    /// Get/drop cycles in the throughput phase.
    pub ops: u64,
    /// The throughput phase's length.
    pub elapsed: Duration,
    /// Cycles per task in the throughput phase (fairness).
    pub per_task: Vec<u64>,
    /// Get latency, from the second phase.
    pub latency: Hist,
}

impl Measured {
    /// Cycles per second.
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[inline]
async fn cycle<P: AsyncPool>(pool: &P, yields: usize) {
    let mut g = pool.get().await;
    P::touch(&mut g);
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
    drop(g);
}

#[inline]
async fn timed_cycle<P: AsyncPool>(pool: &P, yields: usize, hist: &mut Hist) {
    let t0 = Instant::now();
    let mut g = pool.get().await;
    hist.record(t0.elapsed());
    P::touch(&mut g);
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
    drop(g);
}

/// How long to wait past a phase's end for the tasks to finish before calling it a hang.
const GRACE: Duration = Duration::from_secs(5);

/// Runs `shape` against `pool` for `phase` (throughput), then for `phase` again timing every
/// get. Call inside the scenario's runtime.
pub async fn measure<P: AsyncPool>(
    pool: Arc<P>,
    shape: Shape,
    phase: Duration,
) -> Result<Measured, Hung> {
    if shape.tasks == 1 {
        return Ok(measure_single(&*pool, shape, phase).await);
    }
    // Phase 1: throughput and per-task counts. Every task starts at the barrier, so the
    // first ones spawned do not run alone (and pile up cycles) while the rest are spawned.
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(tokio::sync::Barrier::new(shape.tasks + 1));
    let handles: Vec<_> = (0..shape.tasks)
        .map(|_| {
            let (pool, stop, barrier) =
                (Arc::clone(&pool), Arc::clone(&stop), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let mut n = 0u64;
                // Relaxed: a plain flag; the join below synchronises the counts.
                while !stop.load(Ordering::Relaxed) {
                    cycle(&*pool, shape.yields).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let per_task = join_all(handles, GRACE).await?;
    let elapsed = start.elapsed();

    // Phase 2: latency of every get.
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(tokio::sync::Barrier::new(shape.tasks + 1));
    let handles: Vec<_> = (0..shape.tasks)
        .map(|_| {
            let (pool, stop, barrier) =
                (Arc::clone(&pool), Arc::clone(&stop), Arc::clone(&barrier));
            tokio::spawn(async move {
                let mut hist = Hist::default();
                barrier.wait().await;
                while !stop.load(Ordering::Relaxed) {
                    timed_cycle(&*pool, shape.yields, &mut hist).await;
                }
                hist
            })
        })
        .collect();
    barrier.wait().await;
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let hists = join_all(handles, GRACE).await?;
    let mut latency = Hist::default();
    for h in &hists {
        latency.merge(h);
    }
    Ok(Measured {
        ops: per_task.iter().sum(),
        elapsed,
        per_task,
        latency,
    })
}

/// One task: the loop runs in the calling task itself (nothing to spawn, nothing to join).
async fn measure_single<P: AsyncPool>(pool: &P, shape: Shape, phase: Duration) -> Measured {
    const BATCH: u64 = 1024;
    let start = Instant::now();
    let mut ops = 0;
    while start.elapsed() < phase {
        for _ in 0..BATCH {
            cycle(pool, shape.yields).await;
        }
        ops += BATCH;
    }
    let elapsed = start.elapsed();
    let mut latency = Hist::default();
    let t = Instant::now();
    while t.elapsed() < phase {
        for _ in 0..BATCH {
            timed_cycle(pool, shape.yields, &mut latency).await;
        }
    }
    Measured {
        ops,
        elapsed,
        per_task: vec![ops],
        latency,
    }
}

async fn join_all<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
    limit: Duration,
) -> Result<Vec<T>, Hung> {
    let all = async {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            match h.await {
                Ok(v) => out.push(v),
                Err(e) => panic!("a benchmark task failed: {e}"),
            }
        }
        out
    };
    tokio::time::timeout(limit, all).await.map_err(|_| Hung)
}

/// Runs `iters` cycles in total, spread over `shape.tasks` tasks; the time per `iters` cycles
/// (criterion's `iter_custom`). Call inside the scenario's runtime.
pub async fn run_iters<P: AsyncPool>(
    pool: &Arc<P>,
    shape: Shape,
    iters: u64,
    limit: Duration,
) -> Result<Duration, Hung> {
    if shape.tasks == 1 {
        let start = Instant::now();
        for _ in 0..iters {
            cycle(&**pool, shape.yields).await;
        }
        return Ok(start.elapsed());
    }
    let tasks = shape.tasks as u64;
    let per_task = iters.div_ceil(tasks).max(1);
    let start = Instant::now();
    let handles: Vec<_> = (0..shape.tasks)
        .map(|_| {
            let pool = Arc::clone(pool);
            tokio::spawn(async move {
                for _ in 0..per_task {
                    cycle(&*pool, shape.yields).await;
                }
            })
        })
        .collect();
    join_all(handles, limit).await?;
    let elapsed = start.elapsed();
    // Scale to exactly `iters` cycles (the tasks ran `per_task * tasks >= iters`).
    Ok(elapsed.mul_f64(iters as f64 / (per_task * tasks) as f64))
}

/// The OS-thread scenario: `shape.tasks` threads, blocking gets; same two phases.
pub fn measure_threads<P: BlockingPool>(
    pool: Arc<P>,
    shape: Shape,
    phase: Duration,
) -> Result<Measured, Hung> {
    let run = |timed: bool| -> Result<(Vec<u64>, Hist, Duration), Hung> {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let handles: Vec<_> = (0..shape.tasks)
            .map(|_| {
                let (pool, stop) = (Arc::clone(&pool), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    let mut hist = Hist::default();
                    // Relaxed: a plain flag; the join synchronises the results.
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = timed.then(Instant::now);
                        let g = pool.get();
                        if let Some(t0) = t0 {
                            hist.record(t0.elapsed());
                        }
                        for _ in 0..shape.yields {
                            std::thread::yield_now();
                        }
                        drop(g);
                        n += 1;
                    }
                    (n, hist)
                })
            })
            .collect();
        std::thread::sleep(phase);
        stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + GRACE;
        let mut counts = Vec::new();
        let mut latency = Hist::default();
        for h in handles {
            while !h.is_finished() {
                if Instant::now() > deadline {
                    return Err(Hung);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            match h.join() {
                Ok((n, hist)) => {
                    counts.push(n);
                    latency.merge(&hist);
                }
                Err(_) => panic!("a benchmark thread panicked"),
            }
        }
        Ok((counts, latency, start.elapsed()))
    };
    let (per_task, _, elapsed) = run(false)?;
    let (_, latency, _) = run(true)?;
    Ok(Measured {
        ops: per_task.iter().sum(),
        elapsed,
        per_task,
        latency,
    })
}

/// The OS-thread scenario for criterion: `iters` cycles spread over `shape.tasks` threads.
pub fn run_threads_iters<P: BlockingPool>(pool: &Arc<P>, shape: Shape, iters: u64) -> Duration {
    let tasks = shape.tasks as u64;
    let per_task = iters.div_ceil(tasks).max(1);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..shape.tasks {
            s.spawn(|| {
                for _ in 0..per_task {
                    let g = pool.get();
                    for _ in 0..shape.yields {
                        std::thread::yield_now();
                    }
                    drop(g);
                }
            });
        }
    });
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * tasks) as f64)
}
