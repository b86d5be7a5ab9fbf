//! A crashed backend has a bounded blast radius: two real redis-servers, 64 tasks, one
//! server killed (`kill -9`) under load. Only commands on the dead backend's connections
//! fail; every get succeeds (a dial to the dead one fails over to the live one); the dead
//! backend's connections all close; after a restart on the same port it is dialed again.
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

const TASKS: usize = 64;
/// A bound that catches a hang, not a speed.
const WITHIN: Duration = Duration::from_secs(30);

/// What the tasks saw, per backend (by the address of the connection the command ran on).
/// Every counter is Relaxed: independent tallies, read after the tasks are joined (or polled
/// for progress, where a stale value only delays the poll).
#[derive(Default)]
struct Tally {
    ok: [AtomicU64; 2],
    command_errors: [AtomicU64; 2],
    get_errors: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Tally {
    fn ok(&self, i: usize) -> u64 {
        self.ok[i].load(Ordering::Relaxed)
    }
    fn command_errors(&self, i: usize) -> u64 {
        self.command_errors[i].load(Ordering::Relaxed)
    }
    fn get_errors(&self) -> u64 {
        self.get_errors.load(Ordering::Relaxed)
    }
    fn sample(&self, e: String) {
        let mut s = self.samples.lock().unwrap();
        if s.len() < 8 {
            s.push(e);
        }
    }
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WITHIN;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pool's gauges for backend `addr`: (size, connect errors).
fn backend(pool: &Pool<RedisManager>, addr: &str) -> (usize, u64) {
    let st = pool.status();
    let b = st
        .backends
        .iter()
        .find(|b| b.addr == addr)
        .expect("the backend is listed");
    (b.size, b.connect_errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_fails_only_its_own_requests() {
    let mut dead = RedisServer::start();
    let live = RedisServer::start();
    let addrs = [dead.addr(), live.addr()];
    let manager = RedisManager::new("redis://placeholder/?client_name=blast")
        .unwrap()
        .response_timeout(Some(Duration::from_secs(2)));
    let pool = Pool::builder(manager)
        .backends(addrs.iter().map(Backend::new))
        .max_size(16)
        .wait_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .backoff_base(Duration::from_millis(50))
        .backoff_max(Duration::from_millis(200))
        // Connections retire and are dialed anew all along, so the restarted backend gets
        // new ones (round-robin) once it answers again.
        .max_lifetime(Some(Duration::from_millis(500)))
        .maintenance_interval(Duration::from_millis(50))
        .build()
        .unwrap();

    let tally = Arc::new(Tally::default());
    let load = {
        let (pool, tally, addrs) = (pool.clone(), tally.clone(), addrs.clone());
        Load::spawn(TASKS, move |t| {
            let (pool, tally, addrs) = (pool.clone(), tally.clone(), addrs.clone());
            async move {
                let key = format!("k{t}");
                let mut conn = match pool.get().await {
                    Ok(c) => c,
                    Err(e) => {
                        tally.get_errors.fetch_add(1, Ordering::Relaxed);
                        tally.sample(format!("get: {e}"));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        return;
                    }
                };
                let on = conn.backend().addr().to_owned();
                let i = addrs
                    .iter()
                    .position(|a| *a == on)
                    .expect("a listed backend");
                match redis::cmd("INCR")
                    .arg(&key)
                    .query_async::<i64>(&mut *conn)
                    .await
                {
                    Ok(_) => {
                        tally.ok[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tally.command_errors[i].fetch_add(1, Ordering::Relaxed);
                        tally.sample(format!("command on {on}: {e}"));
                    }
                }
            }
        })
    };

    // Healthy: both backends serve, nothing fails.
    wait_for("both backends serving", || {
        tally.ok(0) >= 500 && tally.ok(1) >= 500
    })
    .await;
    assert_eq!(
        tally.command_errors(0) + tally.command_errors(1) + tally.get_errors(),
        0,
        "errors before the kill: {:?}",
        tally.samples.lock().unwrap()
    );

    // kill -9 one of them, under load.
    dead.kill();
    let served = tally.ok(1);
    // Its connections are all found broken and closed (by failed commands, checks and
    // lifetimes), its dials fail, and the live backend takes the whole load.
    wait_for("the dead backend's connections all closed", || {
        backend(&pool, &addrs[0]).0 == 0
    })
    .await;
    wait_for("the live backend serving on", || {
        tally.ok(1) >= served + 2_000
    })
    .await;
    let (_, refused) = backend(&pool, &addrs[0]);
    assert!(
        refused > 0,
        "dials to the dead backend were tried and failed"
    );
    let ok_dead = tally.ok(0);

    // Restarted on the same port: probed back in, dialed again, serving again.
    dead.restart();
    wait_for("the restarted backend serving again", || {
        tally.ok(0) >= ok_dead + 500
    })
    .await;

    load.stop(WITHIN).await;
    let samples = tally.samples.lock().unwrap().clone();
    // The blast radius: nothing failed on the live backend's connections, and no get failed
    // (every dial to the dead backend failed over to the live one).
    assert_eq!(tally.command_errors(1), 0, "{samples:?}");
    assert_eq!(tally.get_errors(), 0, "{samples:?}");
    // Each error the tasks saw names the dead backend.
    assert!(samples.iter().all(|e| e.contains(&addrs[0])), "{samples:?}");
    let st = pool.status();
    assert_eq!((st.in_use, st.waiters), (0, 0), "{st:?}");
    let s = pool.stats();
    assert_eq!(s.gets, s.hits + s.misses);
    assert_eq!(
        s.gets,
        tally.ok(0) + tally.ok(1) + tally.command_errors(0) + tally.command_errors(1)
    );
    pool.close().await;
}
