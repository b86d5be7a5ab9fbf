//! `kill -9` of a real redis-server under 256 concurrent tasks, then a restart on the same
//! port: requests in flight fail with a clear error, no get outlives `wait_timeout`, the broken
//! connections are closed, and the same pool serves again by itself.
#![cfg(feature = "redis")]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connpool::redis::redis;
use connpool::redis::RedisManager;
use connpool::{Backend, Pool};
use support::redis_server::RedisServer;
use support::Load;

const TASKS: usize = 256;
const MAX_SIZE: usize = 32;
const BLOCKERS: usize = 8;
const WAIT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack on a loaded 2-core machine: generous, this is a hang bound, not a speed.
const SLACK: Duration = Duration::from_secs(5);

/// What the tasks saw. Every counter is Relaxed: each is an independent tally, read after the
/// tasks are joined (or polled for progress, where a stale value only delays the poll).
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    get_errors: AtomicU64,
    command_errors: AtomicU64,
    /// Longest get and longest command, in µs.
    max_get_us: AtomicU64,
    max_cmd_us: AtomicU64,
    /// Error texts not matching what a dead server should produce.
    unclear: Mutex<Vec<String>>,
    samples: Mutex<Vec<String>>,
}

impl Tally {
    fn errors(&self) -> u64 {
        self.get_errors.load(Ordering::Relaxed) + self.command_errors.load(Ordering::Relaxed)
    }
    fn sample(&self, e: String) {
        let mut s = self.samples.lock().unwrap();
        if s.len() < 8 && !s.contains(&e) {
            s.push(e);
        }
    }
}

async fn wait_for(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_under_load() {
    let mut server = RedisServer::start();
    let addr = server.addr();
    let manager = RedisManager::new("redis://placeholder/?client_name=load")
        .unwrap()
        .response_timeout(Some(RESPONSE_TIMEOUT));
    let pool = Pool::builder(manager)
        .backends([Backend::new(addr.clone())])
        .max_size(MAX_SIZE)
        .wait_timeout(WAIT_TIMEOUT)
        .connect_timeout(Duration::from_secs(1))
        .backoff_base(Duration::from_millis(50))
        .backoff_max(Duration::from_millis(500))
        .build()
        .unwrap();

    let tally = Arc::new(Tally::default());
    let load = {
        let (pool, tally, addr) = (pool.clone(), tally.clone(), addr.clone());
        Load::spawn(TASKS, move |t| {
            let (pool, tally, addr) = (pool.clone(), tally.clone(), addr.clone());
            async move {
                let key = format!("k{t}");
                let t0 = Instant::now();
                let got = pool.get().await;
                tally
                    .max_get_us
                    .fetch_max(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                let mut conn = match got {
                    Ok(c) => c,
                    Err(e) => {
                        tally.get_errors.fetch_add(1, Ordering::Relaxed);
                        let text = e.to_string();
                        // Clear: a connect (or new-connection check) error naming the
                        // backend, or a timeout carrying the last connect error.
                        let clear = ((e.is_connect() || e.is_check()) && text.contains(&addr))
                            || e.is_timeout();
                        if !clear {
                            tally.unclear.lock().unwrap().push(format!("get: {text}"));
                        }
                        tally.sample(format!("get: {text}"));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        return;
                    }
                };
                let t1 = Instant::now();
                let r = redis::cmd("INCR")
                    .arg(&key)
                    .query_async::<i64>(&mut *conn)
                    .await;
                tally
                    .max_cmd_us
                    .fetch_max(t1.elapsed().as_micros() as u64, Ordering::Relaxed);
                match r {
                    Ok(_) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tally.command_errors.fetch_add(1, Ordering::Relaxed);
                        // Clear: an I/O error that names the server.
                        if !(e.is_io_error() && e.to_string().contains(&addr)) {
                            tally
                                .unclear
                                .lock()
                                .unwrap()
                                .push(format!("command: {e:?}"));
                        }
                        tally.sample(format!("command on {}: {e}", conn.peer()));
                    }
                }
            }
        })
    };

    // Blockers: each holds one connection and loops on `BLPOP key 1`, so that commands are
    // certainly in flight when the server dies. Each must end with an error saying the
    // connection dropped (not a timeout), on its first command after the kill.
    let mut blockers = Vec::new();
    for b in 0..BLOCKERS {
        let pool = pool.clone();
        blockers.push(tokio::spawn(async move {
            let mut conn = pool.get().await.expect("blocker get");
            loop {
                let r = redis::cmd("BLPOP")
                    .arg(format!("blocker:{b}"))
                    .arg(1)
                    .query_async::<Option<(String, String)>>(&mut *conn)
                    .await;
                if let Err(e) = r {
                    return (e, conn.is_reusable());
                }
            }
        }));
    }

    // Healthy: the pool fills up and serves without errors.
    let ok = || tally.ok.load(Ordering::Relaxed);
    wait_for(
        "2,000 commands before the kill",
        Duration::from_secs(30),
        || ok() >= 2_000,
    )
    .await;
    assert_eq!(
        tally.errors(),
        0,
        "errors before the kill: {:?}",
        tally.samples.lock().unwrap()
    );
    let size_before = pool.status().size;
    assert_eq!(size_before, MAX_SIZE);
    let closed_before = pool.stats().closed_broken;

    // kill -9, under load.
    server.kill();
    wait_for("errors after the kill", Duration::from_secs(10), || {
        tally.errors() > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok_while_down = ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ok(),
        ok_while_down,
        "commands succeeded with the server down?"
    );

    for b in blockers {
        let (e, reusable) = tokio::time::timeout(SLACK, b)
            .await
            .expect("a blocker hung")
            .expect("a blocker panicked");
        assert!(
            e.is_connection_dropped() && !e.is_timeout(),
            "blocker: {e:?}"
        );
        assert!(
            e.to_string().contains(&addr),
            "the error names the server: {e}"
        );
        assert!(
            !reusable,
            "a connection that saw the kill stays out of the pool"
        );
    }

    // Restart on the same port: the same pool serves again.
    server.restart();
    let ok_at_restart = ok();
    wait_for(
        "2,000 commands after the restart",
        Duration::from_secs(30),
        || ok() >= ok_at_restart + 2_000,
    )
    .await;
    // ... and keeps serving without errors once recovered.
    let errors_recovered = tally.errors();
    let ok_recovered = ok();
    wait_for("2,000 more commands", Duration::from_secs(30), || {
        ok() >= ok_recovered + 2_000
    })
    .await;
    assert_eq!(
        tally.errors(),
        errors_recovered,
        "errors after recovery: {:?}",
        tally.samples.lock().unwrap()
    );

    // Every task finishes: nothing hangs.
    load.stop(WAIT_TIMEOUT + RESPONSE_TIMEOUT + SLACK).await;

    let stats = pool.stats();
    let status = pool.status();
    let max_get = Duration::from_micros(tally.max_get_us.load(Ordering::Relaxed));
    let max_cmd = Duration::from_micros(tally.max_cmd_us.load(Ordering::Relaxed));
    eprintln!(
        "ok {} get errors {} command errors {} max get {max_get:?} max command {max_cmd:?}\n\
         error samples: {:#?}\nstats: {stats:?}\nstatus: {status:?}",
        ok(),
        tally.get_errors.load(Ordering::Relaxed),
        tally.command_errors.load(Ordering::Relaxed),
        tally.samples.lock().unwrap()
    );
    assert!(tally.errors() > 0, "the kill must have been seen");
    let unclear = tally.unclear.lock().unwrap().clone();
    assert!(
        unclear.is_empty(),
        "unclear errors: {:?}",
        &unclear[..unclear.len().min(5)]
    );
    assert!(max_get <= WAIT_TIMEOUT + SLACK, "a get took {max_get:?}");
    assert!(
        max_cmd <= RESPONSE_TIMEOUT + SLACK,
        "a command took {max_cmd:?}"
    );
    // Every connection open at the kill was found broken and closed.
    assert!(
        stats.closed_broken - closed_before >= size_before as u64,
        "closed_broken {} (before {closed_before}), size at kill {size_before}",
        stats.closed_broken
    );
    assert!(status.size <= MAX_SIZE);
    assert_eq!(status.in_use, 0);
    // The server sees only the pool's current connections.
    assert_eq!(
        server
            .wait_clients("load", SLACK, |n| n == status.size)
            .await,
        status.size
    );
    pool.close().await;
    assert_eq!(server.wait_clients("load", SLACK, |n| n == 0).await, 0);
}
