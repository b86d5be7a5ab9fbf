//! Measures every pool in every scenario and prints markdown tables (see `scripts/bench-report.sh`).
//!
//! ```text
//! bench-report [--phase-ms N] [--limit-s N] [--rounds N] [--scenario NAME]... [--pool NAME]...
//! ```
//!
//! Each (pool, scenario) runs in a child process (this binary with `--child POOL SCENARIO`)
//! under a time limit: a pool that stops serving is killed and reported as hanging, and it
//! cannot disturb the runs after it. A child runs two phases of `--phase-ms` each: throughput
//! (plain get/drop loops, per-task counts for fairness), then latency (every get timed).

use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connpool_benches::pools::{self, AsyncPool, Kind, Visit};
use connpool_benches::scenario::{self, Measured, Scenario, Shape};

struct Opts {
    phase: Duration,
    limit: Duration,
    rounds: usize,
    scenarios: Vec<Scenario>,
    kinds: Vec<Kind>,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: bench-report [--phase-ms N] [--limit-s N] [--rounds N] [--scenario NAME]... [--pool NAME]...\n\
         scenarios: {}\npools: {}",
        Scenario::ALL.map(Scenario::name).join(", "),
        Kind::ALL.map(Kind::name).join(", ")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let mut o = Opts {
        phase: Duration::from_millis(1000),
        limit: Duration::from_secs(30),
        rounds: 1,
        scenarios: Vec::new(),
        kinds: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next();
        let num = || v.and_then(|v| v.parse::<u64>().ok());
        match a.as_str() {
            "--phase-ms" => match num() {
                Some(n) => o.phase = Duration::from_millis(n),
                None => return usage(),
            },
            "--limit-s" => match num() {
                Some(n) => o.limit = Duration::from_secs(n),
                None => return usage(),
            },
            "--rounds" => match num() {
                Some(n) if n > 0 => o.rounds = n as usize,
                _ => return usage(),
            },
            "--scenario" => match v.and_then(|v| Scenario::from_name(v)) {
                Some(s) => o.scenarios.push(s),
                None => return usage(),
            },
            "--pool" => match v.and_then(|v| Kind::from_name(v)) {
                Some(k) => o.kinds.push(k),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios = Scenario::ALL.to_vec();
    }
    if o.kinds.is_empty() {
        o.kinds = Kind::ALL.to_vec();
    }
    report(&o);
    ExitCode::SUCCESS
}

// ---- the child: one (pool, scenario) --------------------------------------------------------

struct Measure {
    shape: Shape,
    phase: Duration,
}

impl Visit for Measure {
    type Out = Result<Measured, scenario::Hung>;
    async fn visit<P: AsyncPool>(self, pool: Arc<P>) -> Self::Out {
        scenario::measure(pool, self.shape, self.phase).await
    }
}

fn child(args: &[String]) -> ExitCode {
    let (Some(kind), Some(sc), Some(phase)) = (
        args.first().and_then(|s| Kind::from_name(s)),
        args.get(1).and_then(|s| Scenario::from_name(s)),
        args.get(2).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return usage();
    };
    let phase = Duration::from_millis(phase);
    let shape = sc.shape();
    let measured = if sc.is_blocking() {
        if !kind.is_blocking() {
            println!("SKIP no blocking get");
            return ExitCode::SUCCESS;
        }
        scenario::measure_threads(Arc::new(pools::r2d2_pool(shape.pool_size)), shape, phase)
    } else {
        if !kind.is_async() {
            println!("SKIP no async get");
            return ExitCode::SUCCESS;
        }
        let rt = sc.runtime();
        let out = rt.block_on(async {
            pools::with_async_pool(kind, shape.pool_size, Measure { shape, phase })
                .await
                .expect("an async pool")
        });
        // On a hang, leave at once below: dropping the runtime would wait for stuck tasks.
        std::mem::forget(rt);
        out
    };
    match measured {
        Ok(m) => {
            let mut counts = m.per_task;
            counts.sort_unstable();
            let min = counts.first().copied().unwrap_or(0);
            let max = counts.last().copied().unwrap_or(0);
            let med = counts.get(counts.len() / 2).copied().unwrap_or(0);
            // The number of tasks served more than 1.5x the median (a task the scheduler
            // favours shows here even when the pool serves its line in order).
            let over = counts.iter().filter(|&&n| 2 * n > 3 * med).count();
            println!(
                "RESULT ops={} elapsed_ns={} p50_ns={} p99_ns={} max_ns={} min_task={} med_task={} max_task={} over_task={} samples={}",
                m.ops,
                m.elapsed.as_nanos(),
                m.latency.quantile(0.5).as_nanos(),
                m.latency.quantile(0.99).as_nanos(),
                m.latency.max().as_nanos(),
                min,
                med,
                max,
                over,
                m.latency.len(),
            );
            ExitCode::SUCCESS
        }
        Err(_) => {
            println!("HUNG");
            std::process::exit(3);
        }
    }
}

// ---- the parent: run every child, print the tables ------------------------------------------

/// One (pool, scenario) outcome.
#[derive(Debug, Clone)]
enum Outcome {
    Done(Row),
    Hung,
    Skipped(String),
    Failed(String),
}

#[derive(Debug, Clone, Default)]
struct Row {
    ops: u64,
    elapsed_ns: u64,
    p50_ns: u64,
    p99_ns: u64,
    max_ns: u64,
    min_task: u64,
    med_task: u64,
    max_task: u64,
    over_task: u64,
}

impl Row {
    fn throughput(&self) -> f64 {
        self.ops as f64 / (self.elapsed_ns.max(1) as f64 / 1e9)
    }
    fn parse(line: &str) -> Option<Row> {
        let mut r = Row::default();
        for kv in line.split_whitespace().skip(1) {
            let (k, v) = kv.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "ops" => r.ops = v,
                "elapsed_ns" => r.elapsed_ns = v,
                "p50_ns" => r.p50_ns = v,
                "p99_ns" => r.p99_ns = v,
                "max_ns" => r.max_ns = v,
                "min_task" => r.min_task = v,
                "med_task" => r.med_task = v,
                "max_task" => r.max_task = v,
                "over_task" => r.over_task = v,
                _ => {}
            }
        }
        Some(r)
    }
}

fn run_child(kind: Kind, sc: Scenario, o: &Opts) -> Outcome {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Outcome::Failed(format!("current_exe: {e}")),
    };
    let mut child = match Command::new(exe)
        .args(["--child", kind.name(), sc.name()])
        .arg(o.phase.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("spawn: {e}")),
    };
    let deadline = Instant::now() + o.limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                // The pool stopped serving (or never finished warming up): kill it.
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Hung;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Outcome::Failed(format!("wait: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    let line = out.lines().last().unwrap_or("").trim().to_owned();
    if line == "HUNG" {
        Outcome::Hung
    } else if let Some(why) = line.strip_prefix("SKIP ") {
        Outcome::Skipped(why.to_owned())
    } else if line.starts_with("RESULT ") && status.success() {
        Row::parse(&line).map_or_else(|| Outcome::Failed(line.clone()), Outcome::Done)
    } else {
        Outcome::Failed(format!("exit {status}: {line}"))
    }
}

/// One (pool, scenario)'s outcome over all its rounds: the round of median throughput (the
/// lower middle one when the count is even), so that one lucky or unlucky spell of the shared
/// machine moves nobody's figure; a hang, failure or skip in any round stands.
fn median_round(rounds: Vec<Outcome>) -> Outcome {
    let mut done = Vec::new();
    for out in rounds {
        match out {
            Outcome::Done(r) => done.push(r),
            other => return other,
        }
    }
    if done.is_empty() {
        return Outcome::Failed("not run".into());
    }
    done.sort_by(|a, b| a.throughput().total_cmp(&b.throughput()));
    let mid = (done.len() - 1) / 2;
    Outcome::Done(done.swap_remove(mid))
}

/// `kind`'s measured row among `rows`, if it completed.
fn done_row(rows: &[(Kind, Outcome)], kind: Kind) -> Option<&Row> {
    rows.iter().find_map(|(k, out)| match out {
        Outcome::Done(r) if *k == kind => Some(r),
        _ => None,
    })
}

/// `kind`'s throughput over `base`'s, round by round (the rounds both completed), sorted.
/// Both ran in the same round, minutes apart at most, so a slow or fast spell of the shared
/// machine that lasts a round moves both alike and leaves their ratio alone.
fn paired_ratios(rounds: &[(Kind, Vec<Outcome>)], kind: Kind, base: Kind) -> Vec<f64> {
    let of = |k: Kind| rounds.iter().find(|(x, _)| *x == k).map(|(_, r)| r);
    let (Some(a), Some(b)) = (of(kind), of(base)) else {
        return Vec::new();
    };
    let mut v: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| match (x, y) {
            (Outcome::Done(x), Outcome::Done(y)) => Some(x.throughput() / y.throughput()),
            _ => None,
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The median of sorted `v` (the lower middle one when the count is even), if any.
fn median(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v[(v.len() - 1) / 2])
}

fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0} /s")
    }
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.0} ms", ns as f64 / 1e6)
    } else if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if ns >= 10_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

fn report(o: &Opts) {
    // (scenario, [(kind, its median round)], [(kind, every round)])
    #[allow(clippy::type_complexity)]
    let mut all: Vec<(Scenario, Vec<(Kind, Outcome)>, Vec<(Kind, Vec<Outcome>)>)> = Vec::new();
    for &sc in &o.scenarios {
        // Rounds interleave the pools (a, b, c, a, b, c, ...), so that a slow spell of the
        // shared machine falls on every pool alike; each pool keeps its median round.
        let mut rounds: Vec<Vec<Outcome>> = vec![Vec::new(); o.kinds.len()];
        for round in 0..o.rounds {
            for (i, &kind) in o.kinds.iter().enumerate() {
                // A pool that hung, failed or was skipped runs no more rounds (so only its last
                // round can say so).
                if rounds[i]
                    .last()
                    .is_some_and(|r| !matches!(r, Outcome::Done(_)))
                {
                    continue;
                }
                eprint!("{} / {} (round {}) ... ", sc.name(), kind.name(), round + 1);
                let out = run_child(kind, sc, o);
                match &out {
                    Outcome::Done(r) => {
                        eprintln!("{} p99 {}", fmt_rate(r.throughput()), fmt_ns(r.p99_ns))
                    }
                    other => eprintln!("{other:?}"),
                }
                rounds[i].push(out);
            }
        }
        let per_round: Vec<(Kind, Vec<Outcome>)> = o.kinds.iter().copied().zip(rounds).collect();
        let rows = per_round
            .iter()
            .map(|(k, outs)| (*k, median_round(outs.clone())))
            .collect();
        all.push((sc, rows, per_round));
    }

    println!("## Summary: each pool's throughput relative to connpool\n");
    println!("Higher is better; connpool = 1.00. `hangs` = stopped serving within the time limit (killed).\n");
    let shown: Vec<Kind> = o.kinds.clone();
    print!("| scenario |");
    for k in &shown {
        print!(" {} |", k.name());
    }
    println!();
    print!("|---|");
    for _ in &shown {
        print!("---:|");
    }
    println!();
    for (sc, rows, per_round) in &all {
        let base = done_row(rows, Kind::Connpool).map(Row::throughput);
        print!("| {} |", sc.name());
        for (kind, out) in rows {
            let paired = median(&paired_ratios(per_round, *kind, Kind::Connpool));
            // Both completed every round (a pool's median round is a completed one only
            // if all its rounds were): `paired` is there whenever `base` is.
            let cell = match (out, base, paired) {
                (Outcome::Done(_), Some(_), Some(m)) => format!("{m:.2}"),
                (Outcome::Done(r), _, _) => fmt_rate(r.throughput()),
                (Outcome::Hung, _, _) => "hangs".to_owned(),
                (Outcome::Skipped(_), _, _) => "—".to_owned(),
                (Outcome::Failed(_), _, _) => "failed".to_owned(),
            };
            print!(" {cell} |");
        }
        println!();
    }
    println!();

    for (sc, rows, per_round) in &all {
        println!("## {}: {}\n", sc.name(), sc.describe());
        let base = done_row(rows, Kind::Connpool);
        let fair = *sc == Scenario::Oversubscribed || sc.shape().tasks > 1;
        print!("| pool | throughput | vs connpool | p50 get | p99 get | p99 vs connpool | worst wait |");
        if fair {
            print!(" least / median / most served task |");
        }
        println!();
        print!("|---|---:|---:|---:|---:|---:|---:|");
        if fair {
            print!("---:|");
        }
        println!();
        for (kind, out) in rows {
            let name = if kind.is_floor() {
                format!("*{}*", kind.name())
            } else {
                kind.name().to_owned()
            };
            match out {
                Outcome::Done(r) => {
                    let paired = median(&paired_ratios(per_round, *kind, Kind::Connpool));
                    let (tr, lr) = match &base {
                        Some(b) => (
                            paired.map_or_else(|| "—".into(), |m| format!("{m:.2}")),
                            format!("{:.2}", r.p99_ns as f64 / b.p99_ns.max(1) as f64),
                        ),
                        None => ("—".into(), "—".into()),
                    };
                    print!(
                        "| {name} | {} | {tr} | {} | {} | {lr} | {} |",
                        fmt_rate(r.throughput()),
                        fmt_ns(r.p50_ns),
                        fmt_ns(r.p99_ns),
                        fmt_ns(r.max_ns)
                    );
                    if fair {
                        let f = if r.max_task == 0 {
                            "—".to_owned()
                        } else {
                            format!(
                                "{} / {} / {} ({:.2}; {} over 1.5× median)",
                                r.min_task,
                                r.med_task,
                                r.max_task,
                                r.min_task as f64 / r.max_task as f64,
                                r.over_task
                            )
                        };
                        print!(" {f} |");
                    }
                    println!();
                }
                Outcome::Hung => {
                    print!(
                        "| {name} | hangs (killed after {} s) | | | | | |",
                        o.limit.as_secs()
                    );
                    if fair {
                        print!(" |");
                    }
                    println!();
                }
                Outcome::Skipped(why) => {
                    print!("| {name} | — ({why}) | | | | | |");
                    if fair {
                        print!(" |");
                    }
                    println!();
                }
                Outcome::Failed(why) => {
                    print!("| {name} | failed: {} | | | | | |", why.replace('|', "/"));
                    if fair {
                        print!(" |");
                    }
                    println!();
                }
            }
        }
        println!();
        let best_peer = rows
            .iter()
            .filter(|(k, _)| !k.is_floor() && !k.is_connpool())
            .filter_map(|(k, out)| match out {
                Outcome::Done(r) => Some((*k, r.throughput())),
                _ => None,
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let floor = |f: Kind| done_row(rows, f).map(Row::throughput);
        for (k, out) in rows.iter().filter(|(k, _)| k.is_connpool()) {
            let Outcome::Done(b) = out else { continue };
            let mut line = k.name().to_owned();
            if let Some((p, _)) = best_peer {
                // Round by round: connpool's throughput over the peer's in the same round
                // (both completed every round, so there is one ratio per round).
                let ratios = paired_ratios(per_round, *k, p);
                let ahead = ratios.iter().filter(|&&x| x > 1.0).count();
                if let (Some(m), Some(lo), Some(hi)) =
                    (median(&ratios), ratios.first(), ratios.last())
                {
                    line += &format!(
                        " vs the best completing peer ({}): **{m:.2}×** throughput (rounds: \
                         {lo:.2}–{hi:.2}×, ahead in {ahead} of {})",
                        p.name(),
                        ratios.len()
                    );
                }
            }
            let f = if *sc == Scenario::Uncontended || *sc == Scenario::UnderCapacity {
                Kind::ArrayQueueFloor
            } else {
                Kind::SemaphoreFloor
            };
            if let Some(ft) = floor(f) {
                line += &format!(
                    "; {:.2}× the time per cycle of the {} floor ({:.1} ns vs {:.1} ns)",
                    ft / b.throughput(),
                    f.name(),
                    1e9 / b.throughput(),
                    1e9 / ft
                );
            }
            println!("{line}.  ");
        }
        println!();
    }
}
