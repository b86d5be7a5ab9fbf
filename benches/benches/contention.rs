//! Criterion contention benchmarks: connpool, bb8, deadpool, qp, mobc, r2d2 and the two floors
//! (a bare `ArrayQueue` pop + push; a `tokio::sync::Semaphore` acquire + release), one
//! `BenchmarkId` per (pool, configuration). One iteration = one get → hold → drop cycle.
//!
//! ```text
//! cargo bench -p connpool-benches --bench contention [-- FILTER]
//! ```
//!
//! Before each (pool, scenario) is measured, a probe runs it briefly in a child process under a
//! time limit; a pool that stops serving (qp, once getters must wait) is reported as hanging
//! and skipped instead of stalling the run. A batch that still hangs later is abandoned (its
//! runtime shut down in the background) and the pool reported as hanging.
//!
//! Throughput, p99 get latency and fairness per scenario come from the `bench-report` binary
//! (`scripts/bench-report.sh`), which criterion alone does not give.

use std::cell::Cell;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connpool_benches::pools::{self, AsyncPool, Kind, Visit};
use connpool_benches::scenario::{self, Hung, Scenario, Shape};
use criterion::{BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;

/// Set in the probe's child process: `POOL/SCENARIO`.
const PROBE_ENV: &str = "CONNPOOL_BENCH_PROBE";
/// How long one batch (or the probe) may take before the pool counts as hanging.
const LIMIT: Duration = Duration::from_secs(20);
/// Cycles the probe runs.
const PROBE_ITERS: u64 = 20_000;

type Runner = Box<dyn FnMut(&Runtime, u64) -> Result<Duration, Hung>>;

/// Builds the closure that runs `iters` cycles on the (already built and warmed) pool.
struct Prepare {
    shape: Shape,
}

impl Visit for Prepare {
    type Out = Runner;
    async fn visit<P: AsyncPool>(self, pool: Arc<P>) -> Runner {
        let shape = self.shape;
        Box::new(move |rt: &Runtime, iters: u64| {
            rt.block_on(scenario::run_iters(&pool, shape, iters, LIMIT))
        })
    }
}

fn prepare(kind: Kind, sc: Scenario, rt: &Runtime) -> Option<Runner> {
    let shape = sc.shape();
    rt.block_on(pools::with_async_pool(
        kind,
        shape.pool_size,
        Prepare { shape },
    ))
}

/// In the child: run the scenario briefly; exit 0 if it completes, 3 if it hangs.
fn probe(spec: &str) -> ! {
    let mut parts = spec.split('/');
    let (Some(kind), Some(sc)) = (
        parts.next().and_then(Kind::from_name),
        parts.next().and_then(Scenario::from_name),
    ) else {
        std::process::exit(2)
    };
    let rt = sc.runtime();
    let Some(mut run) = prepare(kind, sc, &rt) else {
        std::process::exit(2)
    };
    let code = match run(&rt, PROBE_ITERS) {
        Ok(_) => 0,
        Err(Hung) => 3,
    };
    // Leave without waiting for stuck tasks.
    std::process::exit(code)
}

/// Runs the probe for (kind, scenario) in a child process; `true` if it completed in time.
fn completes(kind: Kind, sc: Scenario) -> bool {
    let Ok(exe) = std::env::current_exe() else {
        return true;
    };
    let Ok(mut child) = Command::new(exe)
        .env(PROBE_ENV, format!("{}/{}", kind.name(), sc.name()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
    else {
        return true;
    };
    let deadline = Instant::now() + LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return true,
        }
    }
}

/// Would criterion's filter (the positional arguments, matched here as substrings) run `id`?
/// Lets a filtered run skip the probes (and the pool set-up) of what it does not measure.
fn selected(id: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str()))
}

fn bench_scenario(c: &mut Criterion, sc: Scenario) {
    let shape = sc.shape();
    let mut group = c.benchmark_group(sc.name());
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let param = format!("{}x{}", shape.tasks, shape.pool_size);
    for kind in Kind::ALL {
        let id = BenchmarkId::new(kind.name(), &param);
        if !selected(&format!("{}/{}/{param}", sc.name(), kind.name())) {
            continue;
        }
        if sc.is_blocking() {
            if !kind.is_blocking() {
                continue;
            }
            let pool = Arc::new(pools::r2d2_pool(shape.pool_size));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| scenario::run_threads_iters(&pool, shape, iters))
            });
            continue;
        }
        if !kind.is_async() {
            continue;
        }
        if !completes(kind, sc) {
            eprintln!(
                "{}/{}: hangs (the probe did not finish within {LIMIT:?}); skipped",
                sc.name(),
                kind.name()
            );
            continue;
        }
        let rt = sc.runtime();
        let Some(mut run) = prepare(kind, sc, &rt) else {
            continue;
        };
        let hung = Cell::new(false);
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                if hung.get() {
                    return LIMIT;
                }
                run(&rt, iters).unwrap_or_else(|Hung| {
                    eprintln!("{}/{}: hangs; abandoned", sc.name(), kind.name());
                    hung.set(true);
                    LIMIT
                })
            })
        });
        drop(run);
        if hung.get() {
            rt.shutdown_background();
        } else {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
    group.finish();
}

fn main() {
    if let Ok(spec) = std::env::var(PROBE_ENV) {
        probe(&spec);
    }
    let mut c = Criterion::default().configure_from_args();
    for sc in Scenario::ALL {
        bench_scenario(&mut c, sc);
    }
    c.final_summary();
}
