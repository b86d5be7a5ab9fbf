//! The seed's stale-connection bug (Radix.v2 behind an HTTP API: after every idle period the
//! first requests failed with EOF), shown absent against a real redis-server with `timeout 1`.
//!
//! Three pools fill up, then idle until `CLIENT LIST` shows that the server dropped the idle
//! clients of the two pools that do not ping. Then each pool serves 1,000 commands:
//! - the control pool (no keepalive, no test-on-borrow) hands out every stale connection, and
//!   each one fails a command (else this test would prove nothing);
//! - the keepalive pool pinged its connections below the server's timeout: zero errors, and
//!   the server never dropped them;
//! - the `TestOnBorrow::IdleFor` pool checks connections that were quiet, finds the stale
//!   ones dead, and replaces them: zero errors.
#![cfg(feature = "redis")]

mod support;

use std::time::Duration;

use connpool::redis::redis;
use connpool::redis::RedisManager;
use connpool::{Pool, TestOnBorrow};
use support::redis_server::RedisServer;

const SIZE: usize = 8;
const COMMANDS: usize = 1_000;

fn pool(
    server: &RedisServer,
    name: &str,
    keepalive: Option<Duration>,
    tob: TestOnBorrow,
) -> Pool<RedisManager> {
    Pool::builder(RedisManager::new(&format!("{}/?client_name={name}", server.url())).unwrap())
        .name(name)
        .max_size(SIZE)
        .wait_timeout(Duration::from_secs(10))
        .keepalive(keepalive)
        .test_on_borrow(tob)
        .build()
        .unwrap()
}

/// Opens `SIZE` connections at once and returns them all to the idle queue.
async fn fill(pool: &Pool<RedisManager>) {
    let mut held = Vec::new();
    for _ in 0..SIZE {
        let mut c = pool.get().await.expect("get while filling");
        let _: String = redis::cmd("PING").query_async(&mut *c).await.unwrap();
        held.push(c);
    }
    drop(held);
    assert_eq!(pool.status().idle, SIZE);
}

/// Runs `COMMANDS` commands over `SIZE` concurrent workers; returns the errors users saw.
async fn serve(pool: &Pool<RedisManager>, name: &str) -> Vec<String> {
    let mut workers = Vec::new();
    for w in 0..SIZE {
        let pool = pool.clone();
        let key = format!("{name}:{w}");
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for _ in 0..COMMANDS / SIZE {
                match pool.get().await {
                    Ok(mut c) => {
                        if let Err(e) = redis::cmd("INCR")
                            .arg(&key)
                            .query_async::<i64>(&mut *c)
                            .await
                        {
                            errors.push(format!("command: {e}"));
                        }
                    }
                    Err(e) => errors.push(format!("get: {e}")),
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.expect("worker"));
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_and_test_on_borrow_hide_server_idle_timeouts() {
    let server = RedisServer::start_with(&["--timeout", "1"]);
    let control = pool(&server, "control", None, TestOnBorrow::Never);
    let keepalive = pool(
        &server,
        "keepalive",
        Some(Duration::from_millis(200)),
        TestOnBorrow::Never,
    );
    let on_borrow = pool(
        &server,
        "onborrow",
        None,
        TestOnBorrow::IdleFor(Duration::from_millis(500)),
    );
    for p in [&control, &keepalive, &on_borrow] {
        fill(p).await;
    }
    for name in ["control", "keepalive", "onborrow"] {
        assert_eq!(server.clients_named(name).len(), SIZE, "{name}");
    }

    // Idle until the server has dropped the idle clients of the pools that do not ping.
    let within = Duration::from_secs(20);
    assert_eq!(server.wait_clients("control", within, |n| n == 0).await, 0);
    assert_eq!(server.wait_clients("onborrow", within, |n| n == 0).await, 0);
    assert_eq!(
        server.clients_named("keepalive").len(),
        SIZE,
        "keepalive pings kept every connection alive"
    );
    for p in [&control, &keepalive, &on_borrow] {
        assert_eq!(
            p.status().size,
            SIZE,
            "the pool still holds its {SIZE} connections"
        );
    }
    // All idle: a maintenance pass takes each idle connection out of the queue to look at it
    // (and the keepalive pool's, to ping it, for the round trip), so the count is read between
    // passes.
    for p in [&control, &keepalive, &on_borrow] {
        support::faulty::eventually("every connection idle", within, || p.status().idle == SIZE)
            .await;
    }

    let control_errors = serve(&control, "control").await;
    let keepalive_errors = serve(&keepalive, "keepalive").await;
    let on_borrow_errors = serve(&on_borrow, "onborrow").await;

    eprintln!(
        "errors seen by users over {COMMANDS} commands each: control {}, keepalive {}, \
         test-on-borrow {} (its check failures: {})",
        control_errors.len(),
        keepalive_errors.len(),
        on_borrow_errors.len(),
        on_borrow.stats().check_failures
    );
    // The control pool surfaced each of its stale connections exactly once.
    assert_eq!(control_errors.len(), SIZE, "{control_errors:?}");
    assert!(
        control_errors.iter().all(|e| e.starts_with("command:")),
        "{control_errors:?}"
    );
    assert_eq!(control.stats().closed_broken, SIZE as u64);
    // The fix, both ways.
    assert!(keepalive_errors.is_empty(), "{keepalive_errors:?}");
    assert!(on_borrow_errors.is_empty(), "{on_borrow_errors:?}");
    let ks = keepalive.stats();
    assert_eq!((ks.misses, ks.closed_broken), (SIZE as u64, 0), "{ks:?}");
    let os = on_borrow.stats();
    assert_eq!(
        os.check_failures, SIZE as u64,
        "each stale connection failed its check: {os:?}"
    );
    // The commands all landed.
    let mut total = 0;
    for name in ["control", "keepalive", "onborrow"] {
        for w in 0..SIZE {
            let v = server.must(&["GET", &format!("{name}:{w}")]).text();
            total += v.parse::<usize>().unwrap_or(0);
        }
    }
    assert_eq!(total, 3 * COMMANDS - SIZE);
    for p in [control, keepalive, on_borrow] {
        p.close().await;
    }
}
