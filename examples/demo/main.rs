//! connpool demo: many tasks through one pool over a live set of backends.
//!
//! `cargo run --release --example demo` starts a few in-process TCP backends (no server
//! needed), runs concurrent request loops through the pool for a few seconds, removes one
//! backend and adds another half-way, kills one backend's listener later, and shows a live
//! progress line, then a final table.
//!
//! Flags: `--duration SECS` (default 8), `--tasks N` (64), `--pool N` (16), `--backends N` (3).

mod backend;
mod hist;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::{LineManager, TestBackend};
use connpool::{Backend, Pool, Status};
use hist::Histogram;

struct Args {
    duration: Duration,
    tasks: usize,
    pool: usize,
    backends: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        duration: Duration::from_secs(8),
        tasks: 64,
        pool: 16,
        backends: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--duration" => {
                a.duration = Duration::from_secs_f64(
                    value("--duration")?
                        .parse::<f64>()
                        .map_err(|e| format!("--duration: {e}"))?,
                )
            }
            "--tasks" => {
                a.tasks = value("--tasks")?
                    .parse()
                    .map_err(|e| format!("--tasks: {e}"))?
            }
            "--pool" => {
                a.pool = value("--pool")?
                    .parse()
                    .map_err(|e| format!("--pool: {e}"))?
            }
            "--backends" => {
                a.backends = value("--backends")?
                    .parse()
                    .map_err(|e| format!("--backends: {e}"))?
            }
            "-h" | "--help" => {
                println!("usage: demo [--duration SECS] [--tasks N] [--pool N] [--backends N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    if a.tasks == 0 || a.pool == 0 || a.backends < 2 {
        return Err("--tasks and --pool must be at least 1, --backends at least 2".into());
    }
    Ok(a)
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    get_errors: AtomicU64,
    io_errors: AtomicU64,
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(2);
        }
    };
    let mut servers = Vec::new();
    for i in 0..args.backends + 1 {
        servers.push(TestBackend::start(format!("b{i}")).await);
    }
    let initial: Vec<Backend> = servers[..args.backends]
        .iter()
        .map(|s| Backend::new(s.addr.clone()))
        .collect();
    let pool = Pool::builder(LineManager)
        .name("demo")
        .max_size(args.pool)
        .wait_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500))
        .backoff_base(Duration::from_millis(200))
        .backoff_max(Duration::from_secs(2))
        .backends(initial)
        .build()
        .expect("valid pool config");

    println!(
        "connpool demo: {} tasks, pool of {}, {} backends ({}), {:?}",
        args.tasks,
        args.pool,
        args.backends,
        servers[..args.backends]
            .iter()
            .map(|s| s.addr.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        args.duration
    );

    let hist = Arc::new(Histogram::new());
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let end = start + args.duration;
    let mut workers = Vec::new();
    for _ in 0..args.tasks {
        let pool = pool.clone();
        let hist = hist.clone();
        let counters = counters.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                match pool.get().await {
                    Ok(mut conn) => match conn.request(n).await {
                        Ok(()) => {
                            hist.record(t.elapsed());
                            counters.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            counters.io_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(_) => {
                        counters.get_errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                n += 1;
            }
        }));
    }

    // The script: half-way, swap a backend; at 70 %, kill one backend's listener.
    let half = args.duration / 2;
    let kill_at = args.duration.mul_f64(0.7);
    let mut swapped = false;
    let mut killed = false;
    let mut last_ok = 0;
    let mut last_t = Instant::now();
    let tick = Duration::from_millis(500);
    while Instant::now() < end {
        tokio::time::sleep(tick.min(end.saturating_duration_since(Instant::now()))).await;
        let elapsed = start.elapsed();
        if !swapped && elapsed >= half {
            swapped = true;
            let mut list: Vec<Backend> = servers[1..args.backends]
                .iter()
                .map(|s| Backend::new(s.addr.clone()))
                .collect();
            list.push(Backend::new(servers[args.backends].addr.clone()));
            pool.set_backends(list);
            println!(
                "\n-- {:>4.1}s: removed {} and added {}",
                elapsed.as_secs_f64(),
                servers[0].addr,
                servers[args.backends].addr
            );
        }
        if !killed && elapsed >= kill_at {
            killed = true;
            servers[1].kill();
            println!(
                "\n-- {:>4.1}s: killed {}'s listener and connections",
                elapsed.as_secs_f64(),
                servers[1].addr
            );
        }
        let ok = counters.ok.load(Ordering::Relaxed);
        let rate = (ok - last_ok) as f64 / last_t.elapsed().as_secs_f64();
        last_ok = ok;
        last_t = Instant::now();
        let st = pool.status();
        print!(
            "\r{:>5.1}s  {:>9.0} ops/s  p99 {:>8}  size {:>3} idle {:>3} in_use {:>3} waiters {:>4}  backends {}   ",
            elapsed.as_secs_f64(),
            rate,
            fmt_us(hist.percentile(0.99)),
            st.size,
            st.idle,
            st.in_use,
            st.waiters,
            backends_line(&st)
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    for w in workers {
        let _ = w.await;
    }
    let total = start.elapsed();
    println!("\n");
    report(&pool, &servers, &hist, &counters, total);
    pool.close().await;
}

fn backends_line(st: &Status) -> String {
    st.backends
        .iter()
        .map(|b| {
            format!(
                "{}{}:{}",
                if b.online { "" } else { "!" },
                short(&b.addr),
                b.size
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn short(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{us}µs")
    }
}

fn report(
    pool: &Pool<LineManager>,
    servers: &[TestBackend],
    hist: &Histogram,
    c: &Counters,
    total: Duration,
) {
    let ok = c.ok.load(Ordering::Relaxed);
    println!("== throughput");
    println!(
        "  {} requests in {:.2}s = {:.0} ops/s; failed gets {}, failed requests {}",
        ok,
        total.as_secs_f64(),
        ok as f64 / total.as_secs_f64(),
        c.get_errors.load(Ordering::Relaxed),
        c.io_errors.load(Ordering::Relaxed)
    );
    println!("== latency (get + request)");
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
        println!("  {name:<6} {}", fmt_us(hist.percentile(q)));
    }
    println!("  max    {}", fmt_us(hist.max()));
    println!("== backends");
    println!(
        "  {:<22} {:>8} {:>12} {:>8} {:>8}",
        "address", "conns", "requests", "listed", "pool now"
    );
    let st = pool.status();
    for s in servers {
        let listed = st.backends.iter().find(|b| b.addr == s.addr);
        println!(
            "  {:<22} {:>8} {:>12} {:>8} {:>8}",
            format!("{}{}", s.addr, if s.is_killed() { " (killed)" } else { "" }),
            s.accepted(),
            s.requests(),
            if listed.is_some() { "yes" } else { "no" },
            listed.map_or("-".to_owned(), |b| format!(
                "{}{}",
                b.size,
                if b.online { "" } else { " off" }
            )),
        );
    }
    println!(
        "== pool status\n  max_size {} size {} idle {} in_use {} waiters {}",
        st.max_size, st.size, st.idle, st.in_use, st.waiters
    );
    println!("== pool stats");
    let s = pool.stats();
    for line in format!("{s:#?}").lines().skip(1) {
        if line.trim() != "}" {
            println!("  {}", line.trim().trim_end_matches(','));
        }
    }
}
