//! Contention benchmarks for connpool against bb8, deadpool (managed), qp, mobc and r2d2, and
//! two floors no pool can beat (a bare `ArrayQueue` pop + push; a `tokio::sync::Semaphore`
//! acquire + release).
//!
//! - `benches/contention.rs`: criterion, one `BenchmarkId` per (pool, scenario);
//! - `src/bin/bench-report.rs`: throughput, p99 get latency, worst wait and fairness per
//!   scenario, each (pool, scenario) in its own child process under a time limit, printed as
//!   markdown (`scripts/bench-report.sh` writes `BENCHMARKS.md` from it).
//!
//! Both drive the same managers ([`pools`]) through the same loops ([`scenario`]). The
//! profiling aids `src/bin/hit-loop.rs` and `src/bin/wait-loop.rs` (for callgrind) share
//! [`profiling`].

pub mod hist;
pub mod pools;
pub mod profiling;
pub mod scenario;
