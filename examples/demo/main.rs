//! connpool demo: many tasks through one pool over a live set of backends.
//!
//! `cargo run --release --example demo` starts a few in-process TCP backends (no server
//! needed), runs concurrent request loops through the pool for a few seconds, removes one
//! backend and adds another half-way, kills one backend's listener later, and shows a live
//! progress line, then a final table: throughput, latency percentiles, per-backend connection
//! and request counts, and every stat.
//!
//! Flags: `--duration SECS` (default 8), `--tasks N` (64), `--pool N` (16), `--backends N` (3);
//! `--redis` [`--redis-addr HOST:PORT`]... (feature `redis`): real Redis servers, SET + GET;
//! `--zk HOST:PORT --codis-product NAME` (feature `zookeeper`) or `--etcd HOST:PORT --prefix P`
//! (feature `etcd`): the backends are registered there and the pool follows them, so the
//! half-way swap goes through the coordination service. `--auth USER:PASSWORD` (Codis'
//! `coordinator_auth`) logs both the registry and the pool in to the coordination service
//! (ZooKeeper's digest scheme, or an etcd user); `--zk-ca FILE [--zk-cert FILE --zk-key FILE]`
//! (feature `zookeeper-tls`) reaches ZooKeeper's `secureClientPort` over TLS, and `--etcd-ca
//! FILE [--etcd-cert FILE --etcd-key FILE] [--etcd-domain NAME]` (feature `etcd-tls`) etcd.

mod backend;
#[cfg(feature = "etcd")]
mod etcd;
mod hist;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "zookeeper")]
mod zookeeper;

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::{LineManager, TestBackend};
use connpool::{Backend, Manager, Pool, Status};
use hist::Histogram;

/// What the demo drives: a manager and one request over its connection.
trait Workload: Manager {
    fn request(
        conn: &mut Self::Connection,
        n: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

impl Workload for LineManager {
    async fn request(conn: &mut backend::LineConn, n: u64) -> Result<(), String> {
        conn.request(n).await.map_err(|e| e.to_string())
    }
}

#[cfg(feature = "redis")]
impl Workload for connpool::redis::RedisManager {
    async fn request(conn: &mut connpool::redis::RedisConnection, n: u64) -> Result<(), String> {
        redis::request(conn, n).await.map_err(|e| e.to_string())
    }
}

/// A backend server the demo can count and kill.
trait Server {
    fn addr(&self) -> &str;
    fn kill(&self);
    fn is_killed(&self) -> bool;
    fn accepted(&self) -> u64;
    fn requests(&self) -> u64;
}

impl Server for TestBackend {
    fn addr(&self) -> &str {
        &self.addr
    }
    fn kill(&self) {
        TestBackend::kill(self)
    }
    fn is_killed(&self) -> bool {
        TestBackend::is_killed(self)
    }
    fn accepted(&self) -> u64 {
        TestBackend::accepted(self)
    }
    fn requests(&self) -> u64 {
        TestBackend::requests(self)
    }
}

#[cfg(feature = "redis")]
impl Server for redis::RedisBackend {
    fn addr(&self) -> &str {
        &self.addr
    }
    fn kill(&self) {
        redis::RedisBackend::kill(self)
    }
    fn is_killed(&self) -> bool {
        redis::RedisBackend::is_killed(self)
    }
    fn accepted(&self) -> u64 {
        redis::RedisBackend::accepted(self)
    }
    fn requests(&self) -> u64 {
        redis::RedisBackend::requests(self)
    }
}

#[derive(Default)]
struct Args {
    duration: Duration,
    tasks: usize,
    pool: usize,
    backends: usize,
    redis: bool,
    redis_addr: Vec<String>,
    zk: Option<String>,
    codis_product: Option<String>,
    etcd: Option<String>,
    prefix: Option<String>,
    /// `--auth USER:PASSWORD`, split at the first `:`.
    auth: Option<(String, String)>,
    /// `--zk-ca`, `--zk-cert`, `--zk-key`: file paths.
    zk_ca: Option<String>,
    zk_cert: Option<String>,
    zk_key: Option<String>,
    /// `--etcd-ca`, `--etcd-cert`, `--etcd-key`, `--etcd-domain`: file paths, then the name.
    etcd_ca: Option<String>,
    etcd_cert: Option<String>,
    etcd_key: Option<String>,
    etcd_domain: Option<String>,
}

const USAGE: &str = "usage: demo [--duration SECS] [--tasks N] [--pool N] [--backends N]
            [--redis [--redis-addr HOST:PORT]...]
            [--zk HOST:PORT --codis-product NAME | --etcd HOST:PORT --prefix P]
            [--auth USER:PASSWORD]
            [--zk-ca FILE [--zk-cert FILE --zk-key FILE]]
            [--etcd-ca FILE [--etcd-cert FILE --etcd-key FILE] [--etcd-domain NAME]]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        duration: Duration::from_secs(8),
        tasks: 64,
        pool: 16,
        backends: 3,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let num = |name: &str, v: String| v.parse::<usize>().map_err(|e| format!("{name}: {e}"));
        match flag.as_str() {
            "--duration" => {
                let secs = value("--duration")?
                    .parse::<f64>()
                    .map_err(|e| format!("--duration: {e}"))?;
                if !(0.5..=3600.0).contains(&secs) {
                    return Err("--duration must be between 0.5 and 3600 seconds".into());
                }
                a.duration = Duration::from_secs_f64(secs);
            }
            "--tasks" => a.tasks = num("--tasks", value("--tasks")?)?,
            "--pool" => a.pool = num("--pool", value("--pool")?)?,
            "--backends" => a.backends = num("--backends", value("--backends")?)?,
            "--redis" => a.redis = true,
            "--redis-addr" => {
                a.redis = true;
                a.redis_addr.push(value("--redis-addr")?)
            }
            "--zk" => a.zk = Some(value("--zk")?),
            "--codis-product" => a.codis_product = Some(value("--codis-product")?),
            "--etcd" => a.etcd = Some(value("--etcd")?),
            "--prefix" => a.prefix = Some(value("--prefix")?),
            "--auth" => a.auth = Some(user_password(&value("--auth")?)?),
            "--zk-ca" => a.zk_ca = Some(value("--zk-ca")?),
            "--zk-cert" => a.zk_cert = Some(value("--zk-cert")?),
            "--zk-key" => a.zk_key = Some(value("--zk-key")?),
            "--etcd-ca" => a.etcd_ca = Some(value("--etcd-ca")?),
            "--etcd-cert" => a.etcd_cert = Some(value("--etcd-cert")?),
            "--etcd-key" => a.etcd_key = Some(value("--etcd-key")?),
            "--etcd-domain" => a.etcd_domain = Some(value("--etcd-domain")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if a.tasks == 0 || a.pool == 0 || a.backends < 2 {
        return Err("--tasks and --pool must be at least 1, --backends at least 2".into());
    }
    if a.zk.is_some() != a.codis_product.is_some() {
        return Err("--zk and --codis-product go together".into());
    }
    if a.etcd.is_some() != a.prefix.is_some() {
        return Err("--etcd and --prefix go together".into());
    }
    if a.zk.is_some() && a.etcd.is_some() {
        return Err("choose one of --zk and --etcd".into());
    }
    if a.auth.is_some() && a.zk.is_none() && a.etcd.is_none() {
        return Err("--auth needs --zk or --etcd".into());
    }
    let zk_tls = a.zk_ca.is_some();
    if (zk_tls || a.zk_cert.is_some() || a.zk_key.is_some()) && !(zk_tls && a.zk.is_some()) {
        return Err("--zk-cert and --zk-key need --zk-ca, and --zk-ca needs --zk".into());
    }
    if a.zk_cert.is_some() != a.zk_key.is_some() {
        return Err("--zk-cert and --zk-key go together".into());
    }
    let tls = a.etcd_ca.is_some();
    if (tls || a.etcd_cert.is_some() || a.etcd_key.is_some() || a.etcd_domain.is_some())
        && !(tls && a.etcd.is_some())
    {
        return Err("--etcd-cert, --etcd-key and --etcd-domain need --etcd-ca, \
                    and --etcd-ca needs --etcd"
            .into());
    }
    if a.etcd_cert.is_some() != a.etcd_key.is_some() {
        return Err("--etcd-cert and --etcd-key go together".into());
    }
    for (on, feature) in [
        (a.redis, "redis"),
        (a.zk.is_some(), "zookeeper"),
        (zk_tls, "zookeeper-tls"),
        (a.etcd.is_some(), "etcd"),
        (tls, "etcd-tls"),
    ] {
        let built = match feature {
            "redis" => cfg!(feature = "redis"),
            "zookeeper" => cfg!(feature = "zookeeper"),
            "zookeeper-tls" => cfg!(feature = "zookeeper-tls"),
            "etcd" => cfg!(feature = "etcd"),
            _ => cfg!(feature = "etcd-tls"),
        };
        if on && !built {
            return Err(format!(
                "this demo was built without the `{feature}` feature: \
                 cargo run --release --example demo --features {feature} -- ..."
            ));
        }
    }
    Ok(a)
}

/// `--auth`'s `USER:PASSWORD`, split at the first `:` (the password may hold more).
fn user_password(v: &str) -> Result<(String, String), String> {
    match v.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_owned(), password.to_owned())),
        _ => Err("--auth takes USER:PASSWORD, with a user name before the first ':'".into()),
    }
}

/// The file a PEM flag names, read (an unreadable one is named with its flag).
#[cfg(any(feature = "zookeeper", feature = "etcd"))]
fn read_pem(flag: &str, path: &Option<String>) -> Result<Option<Vec<u8>>, String> {
    path.as_ref()
        .map(|p| std::fs::read(p).map_err(|e| format!("{flag} {p}: {e}")))
        .transpose()
}

/// The ZooKeeper access `args` asks for, with the PEM files read.
#[cfg(feature = "zookeeper")]
fn zk_access(args: &Args) -> Result<zookeeper::Access, String> {
    let cert = read_pem("--zk-cert", &args.zk_cert)?;
    let key = read_pem("--zk-key", &args.zk_key)?;
    Ok(zookeeper::Access {
        auth: args.auth.clone(),
        ca_pem: read_pem("--zk-ca", &args.zk_ca)?,
        identity: cert.zip(key),
    })
}

/// The etcd access `args` asks for, with the PEM files read.
#[cfg(feature = "etcd")]
fn etcd_access(args: &Args) -> Result<etcd::Access, String> {
    let cert = read_pem("--etcd-cert", &args.etcd_cert)?;
    let key = read_pem("--etcd-key", &args.etcd_key)?;
    Ok(etcd::Access {
        auth: args.auth.clone(),
        ca_pem: read_pem("--etcd-ca", &args.etcd_ca)?,
        identity: cert.zip(key),
        domain: args.etcd_domain.clone(),
    })
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
    let outcome = if args.redis {
        run_redis(&args).await
    } else {
        let mut servers = Vec::new();
        for i in 0..args.backends + 1 {
            servers.push(TestBackend::start(format!("b{i}")).await);
        }
        run(LineManager, servers, &args).await
    };
    if let Err(e) = outcome {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "redis")]
async fn run_redis(args: &Args) -> Result<(), String> {
    let servers = redis::start(&args.redis_addr, args.backends + 1)?;
    run(redis::manager(), servers, args).await
}

#[cfg(not(feature = "redis"))]
async fn run_redis(_: &Args) -> Result<(), String> {
    unreachable!("parse_args rejects --redis without the feature")
}

/// Where the pool's backend list comes from, and how the demo changes it.
enum Source {
    Static,
    #[cfg(feature = "zookeeper")]
    ZooKeeper(Box<zookeeper::Registry>),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::Registry>),
}

impl Source {
    /// Marks a backend offline in the coordination service (as an operator or the Codis
    /// dashboard would); a static list has no such state.
    async fn mark_offline(&mut self, addr: &str) -> Option<Result<(), String>> {
        match self {
            Source::Static => {
                let _ = addr;
                None
            }
            #[cfg(feature = "zookeeper")]
            Source::ZooKeeper(r) => Some(r.set_online(addr, false).await),
            #[cfg(feature = "etcd")]
            Source::Etcd(r) => Some(r.set_online(addr, false).await),
        }
    }

    /// Removes `gone` and adds `new`: directly, or through the coordination service.
    async fn swap<M: Manager>(
        &mut self,
        pool: &Pool<M>,
        gone: &str,
        new: &str,
        list: Vec<String>,
    ) -> Result<(), String> {
        match self {
            Source::Static => {
                let _ = (gone, new);
                pool.set_backends(list.into_iter().map(Backend::new));
                Ok(())
            }
            #[cfg(feature = "zookeeper")]
            Source::ZooKeeper(r) => {
                r.remove(gone).await?;
                r.add(new).await
            }
            #[cfg(feature = "etcd")]
            Source::Etcd(r) => {
                r.remove(gone).await?;
                r.add(new).await
            }
        }
    }
}

async fn run<M: Workload, S: Server>(
    manager: M,
    servers: Vec<S>,
    args: &Args,
) -> Result<(), String> {
    let n = args.backends;
    let initial: Vec<String> = servers[..n].iter().map(|s| s.addr().to_owned()).collect();
    let builder = Pool::builder(manager)
        .name("demo")
        .max_size(args.pool)
        .wait_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500))
        .backoff_base(Duration::from_millis(200))
        .backoff_max(Duration::from_secs(2));
    let (builder, mut source, via) = if let Some(_zk) = &args.zk {
        #[cfg(feature = "zookeeper")]
        {
            let product = args.codis_product.as_deref().unwrap_or_default();
            let access = zk_access(args)?;
            let r = zookeeper::Registry::register(_zk, product, &initial, &access).await?;
            (
                builder.discovery(zookeeper::discovery(_zk, product, &access)),
                Source::ZooKeeper(Box::new(r)),
                format!("ZooKeeper {_zk} /jodis/{product}"),
            )
        }
        #[cfg(not(feature = "zookeeper"))]
        unreachable!("parse_args rejects --zk without the feature")
    } else if let Some(_etcd) = &args.etcd {
        #[cfg(feature = "etcd")]
        {
            let prefix = args.prefix.as_deref().unwrap_or_default();
            let access = etcd_access(args)?;
            let r = etcd::Registry::register(_etcd, prefix, &initial, &access).await?;
            (
                builder.discovery(etcd::discovery(_etcd, prefix, &access)),
                Source::Etcd(Box::new(r)),
                format!("etcd {_etcd} {prefix}"),
            )
        }
        #[cfg(not(feature = "etcd"))]
        unreachable!("parse_args rejects --etcd without the feature")
    } else {
        (
            builder.backends(initial.iter().map(Backend::new)),
            Source::Static,
            "a static list".to_owned(),
        )
    };
    let pool = builder.build().map_err(|e| e.to_string())?;

    println!(
        "connpool demo: {} tasks, pool of {}, {} backends ({}) from {via}, {:?}",
        args.tasks,
        args.pool,
        n,
        initial.join(" "),
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
            let mut i = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                match pool.get().await {
                    Ok(mut conn) => match M::request(&mut conn, i).await {
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
                i += 1;
            }
        }));
    }

    // The script: half-way, swap a backend; at 70 %, kill one backend.
    let half = args.duration / 2;
    let kill_at = args.duration.mul_f64(0.7);
    let offline_at = args.duration.mul_f64(0.85);
    let (mut swapped, mut killed, mut offline) = (false, false, false);
    let mut last_ok = 0;
    let mut last_t = Instant::now();
    let tick = Duration::from_millis(500);
    while Instant::now() < end {
        tokio::time::sleep(tick.min(end.saturating_duration_since(Instant::now()))).await;
        let elapsed = start.elapsed();
        if !swapped && elapsed >= half {
            swapped = true;
            let mut list: Vec<String> = initial[1..].to_vec();
            list.push(servers[n].addr().to_owned());
            let outcome = source
                .swap(&pool, servers[0].addr(), servers[n].addr(), list)
                .await;
            println!(
                "\n-- {:>4.1}s: removed {} and added {}{}",
                elapsed.as_secs_f64(),
                servers[0].addr(),
                servers[n].addr(),
                match outcome {
                    Ok(()) => format!(" (via {via})"),
                    Err(e) => format!(" FAILED: {e}"),
                }
            );
        }
        if !killed && elapsed >= kill_at {
            killed = true;
            servers[1].kill();
            println!(
                "\n-- {:>4.1}s: killed {} (its connections die, its port refuses)",
                elapsed.as_secs_f64(),
                servers[1].addr()
            );
        }
        if !offline && elapsed >= offline_at {
            offline = true;
            if let Some(outcome) = source.mark_offline(servers[1].addr()).await {
                println!(
                    "\n-- {:>4.1}s: marked {} offline in {via}{}",
                    elapsed.as_secs_f64(),
                    servers[1].addr(),
                    outcome
                        .err()
                        .map(|e| format!(" FAILED: {e}"))
                        .unwrap_or_default()
                );
            }
        }
        let ok = counters.ok.load(Ordering::Relaxed);
        let rate = (ok - last_ok) as f64 / last_t.elapsed().as_secs_f64();
        last_ok = ok;
        last_t = Instant::now();
        let st = pool.status();
        print!(
            "\r{:>5.1}s {:>9.0} ops/s  p99 {:>8}  size {:>3} idle {:>3} in_use {:>3} waiters {:>4}  backends {}   ",
            elapsed.as_secs_f64(),
            rate,
            fmt_us(hist.percentile(0.99)),
            st.size,
            st.idle,
            st.in_use,
            st.waiters,
            backends_line(&st)
        );
        let _ = std::io::stdout().flush();
    }
    for w in workers {
        let _ = w.await;
    }
    let total = start.elapsed();
    println!("\n");
    report(&pool, &servers, &hist, &counters, total);
    pool.close().await;
    Ok(())
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    get_errors: AtomicU64,
    io_errors: AtomicU64,
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

fn report<M: Manager, S: Server>(
    pool: &Pool<M>,
    servers: &[S],
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
    println!("== backends (server side: connections accepted, requests served)");
    println!(
        "  {:<26} {:>8} {:>12} {:>8} {:>10}",
        "address", "conns", "requests", "listed", "pool now"
    );
    let st = pool.status();
    for s in servers {
        let listed = st.backends.iter().find(|b| b.addr == s.addr());
        println!(
            "  {:<26} {:>8} {:>12} {:>8} {:>10}",
            format!(
                "{}{}",
                s.addr(),
                if s.is_killed() { " (killed)" } else { "" }
            ),
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
