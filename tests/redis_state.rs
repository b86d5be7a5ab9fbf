//! RedisManager against a real redis-server: which connections go back to the pool.
//!
//! A connection left inside MULTI, WATCH, SUBSCRIBE, PSUBSCRIBE or MONITOR, or whose command
//! was cancelled before its reply, is closed (the server sees it go) and never lent again; an
//! error *reply* leaves the connection in the pool; the URL's password, database and client
//! name apply to every connection.
#![cfg(feature = "redis")]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connpool::redis::redis::{self, ErrorKind, Value};
use connpool::redis::RedisManager;
use connpool::{Backend, CloseReason, Error, Event, Pool, Pooled, TestOnBorrow};
use support::redis_server::RedisServer;

const GONE_WITHIN: Duration = Duration::from_secs(10);

/// A pool of one connection over `url`, counting the connections closed as not reusable.
fn pool_of_one(url: &str) -> (Pool<RedisManager>, Arc<AtomicU64>) {
    let not_reusable = Arc::new(AtomicU64::new(0));
    let n = not_reusable.clone();
    let pool = Pool::builder(RedisManager::new(url).expect("valid url"))
        .max_size(1)
        .wait_timeout(Duration::from_secs(10))
        .on_event(move |e| {
            if let Event::Closed {
                reason: CloseReason::NotReusable,
                ..
            } = e
            {
                n.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .expect("valid pool");
    (pool, not_reusable)
}

async fn client_id(conn: &mut Pooled<RedisManager>) -> u64 {
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut **conn)
        .await
        .expect("CLIENT ID")
}

#[tokio::test]
async fn dirty_connections_are_closed_not_reused() {
    let server = RedisServer::start();
    // Each case: the commands that leave the connection dirty.
    let cases: &[(&str, &[&[&str]])] = &[
        ("multi", &[&["MULTI"], &["SET", "k", "from-multi"]]),
        ("watch", &[&["WATCH", "k"]]),
        // Outside MULTI, DISCARD and EXEC are errors that leave the WATCH in force.
        ("watch-discard", &[&["WATCH", "k"], &["DISCARD"]]),
        ("watch-exec", &[&["WATCH", "k"], &["EXEC"]]),
        // The next user would inherit another client name.
        ("setname", &[&["CLIENT", "SETNAME", "someone-else"]]),
        ("subscribe", &[&["SUBSCRIBE", "news"]]),
        ("psubscribe", &[&["PSUBSCRIBE", "news.*"]]),
        ("monitor", &[&["MONITOR"]]),
        ("select", &[&["SELECT", "5"]]),
    ];
    for (i, (name, cmds)) in cases.iter().enumerate() {
        let (pool, not_reusable) = pool_of_one(&format!("{}/?client_name={name}", server.url()));
        let mut conn = pool.get().await.expect("get");
        let dirty_id = client_id(&mut conn).await;
        for args in *cmds {
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            let r: redis::RedisResult<Value> = cmd.query_async(&mut *conn).await;
            if let Err(e) = r {
                // Only the error replies of EXEC and DISCARD without MULTI are expected.
                let expected = matches!(args[0], "EXEC" | "DISCARD") && !e.is_io_error();
                assert!(expected, "{name}: {args:?}: {e}");
            }
        }
        assert!(!conn.is_reusable(), "{name}: connection should be dirty");
        drop(conn);
        assert_eq!(
            not_reusable.load(Ordering::Relaxed),
            1,
            "{name}: closed as not reusable"
        );
        assert!(
            server.wait_client_gone(dirty_id, GONE_WITHIN).await,
            "{name}: the server still lists the dirty connection {dirty_id}"
        );

        // The next user gets a fresh, clean connection.
        let mut conn = pool.get().await.expect("get after dirty");
        let fresh_id = client_id(&mut conn).await;
        assert_ne!(fresh_id, dirty_id, "{name}: dirty connection was reused");
        let v: Option<String> = redis::cmd("GET")
            .arg("k")
            .query_async(&mut *conn)
            .await
            .expect("GET on the fresh connection");
        assert_eq!(
            v, None,
            "{name}: the MULTI was never executed, and GET is not QUEUED"
        );
        drop(conn);
        let stats = pool.stats();
        assert_eq!(
            (stats.misses, stats.closed_broken),
            (2, 1),
            "{name}: {stats:?}"
        );
        pool.close().await;
        assert_eq!(
            server.wait_clients(name, GONE_WITHIN, |n| n == 0).await,
            0,
            "{name}: close() left connections open (case {i})"
        );
    }
    // Nobody subscribed any more: the server dropped the subscribers with their sockets.
    assert_eq!(server.must(&["PUBSUB", "NUMPAT"]).text(), "0");
    assert_eq!(server.must(&["PUBLISH", "news", "x"]).text(), "0");
}

#[tokio::test]
async fn closed_transactions_and_error_replies_keep_the_connection() {
    let server = RedisServer::start();
    let (pool, not_reusable) = pool_of_one(&format!("{}/?client_name=clean", server.url()));
    let mut conn = pool.get().await.expect("get");
    let id = client_id(&mut conn).await;

    // A Codis proxy's error reply, produced by a Lua script.
    let err = redis::cmd("EVAL")
        .arg("return redis.error_reply('ERR backend conn reset')")
        .arg(0)
        .query_async::<Value>(&mut *conn)
        .await
        .expect_err("an error reply");
    assert!(err.to_string().contains("backend conn reset"), "{err}");
    assert!(
        !err.is_io_error() && !err.is_connection_dropped(),
        "{err:?}"
    );
    // WRONGTYPE, and an integer error.
    redis::cmd("SET")
        .arg("s")
        .arg("text")
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
    let err = redis::cmd("LPUSH")
        .arg("s")
        .arg(1)
        .query_async::<Value>(&mut *conn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("WRONGTYPE"), "{err:?}");
    redis::cmd("INCR")
        .arg("s")
        .query_async::<i64>(&mut *conn)
        .await
        .unwrap_err();
    // A transaction closed by EXEC, one closed by DISCARD, a WATCH closed by UNWATCH.
    let v: Value = redis::cmd("MULTI").query_async(&mut *conn).await.unwrap();
    assert_eq!(v, Value::Okay);
    let v: Value = redis::cmd("SET")
        .arg("t")
        .arg(1)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(v, Value::SimpleString("QUEUED".into()));
    let v: Vec<Value> = redis::cmd("EXEC").query_async(&mut *conn).await.unwrap();
    assert_eq!(v, [Value::Okay]);
    redis::cmd("MULTI")
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
    redis::cmd("DISCARD")
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
    redis::cmd("WATCH")
        .arg("t")
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
    redis::cmd("UNWATCH")
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
    // An atomic pipeline (MULTI ... EXEC in one go) with a failing command inside.
    let r: redis::RedisResult<(i64, i64)> = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("n")
        .cmd("INCR")
        .arg("s")
        .query_async(&mut *conn)
        .await;
    assert!(r.is_err(), "INCR on a string fails inside EXEC");
    // The optimistic lock: WATCH, then an atomic pipeline (its MULTI and EXEC are the
    // pipeline's own, not among its commands): the transaction ends the WATCH.
    redis::cmd("WATCH")
        .arg("w")
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("w")
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // SELECT of the URL's own database is harmless.
    redis::cmd("SELECT")
        .arg(0)
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
    assert!(conn.is_reusable(), "{conn:?}");
    drop(conn);

    let mut conn = pool.get().await.expect("get again");
    assert_eq!(client_id(&mut conn).await, id, "the connection was reused");
    drop(conn);
    let stats = pool.stats();
    assert_eq!(
        (stats.misses, stats.hits, stats.closed_broken),
        (1, 1, 0),
        "{stats:?}"
    );
    assert_eq!(not_reusable.load(Ordering::Relaxed), 0);
    pool.close().await;
}

#[tokio::test]
async fn a_command_cancelled_mid_reply_closes_its_connection() {
    let server = RedisServer::start();
    let (pool, not_reusable) = pool_of_one(&format!("{}/?client_name=cancel", server.url()));
    let mut conn = pool.get().await.expect("get");
    let id = client_id(&mut conn).await;
    // BLPOP waits up to 5 s for an element; give up after 100 ms.
    let mut blpop = redis::cmd("BLPOP");
    blpop.arg("queue").arg(5);
    let blpop = blpop.query_async::<Value>(&mut *conn);
    assert!(tokio::time::timeout(Duration::from_millis(100), blpop)
        .await
        .is_err());
    assert!(!conn.is_reusable(), "{conn:?}");
    drop(conn);
    assert_eq!(not_reusable.load(Ordering::Relaxed), 1);
    assert!(server.wait_client_gone(id, GONE_WITHIN).await);

    // The next user is not stuck behind the BLPOP, and its replies are its own.
    server.must(&["RPUSH", "queue", "late"]);
    let mut conn = pool.get().await.expect("get");
    assert_ne!(client_id(&mut conn).await, id);
    let v: Vec<String> = redis::cmd("LRANGE")
        .arg("queue")
        .arg(0)
        .arg(-1)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(v, ["late"], "the cancelled BLPOP popped nothing");
    let pong: String = redis::cmd("PING").query_async(&mut *conn).await.unwrap();
    assert_eq!(pong, "PONG");
    drop(conn);
    pool.close().await;
}

#[tokio::test]
async fn url_password_database_and_client_name_apply() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@{}/3?client_name=tmpl", server.addr());
    let pool = Pool::builder(RedisManager::new(&url).unwrap())
        .max_size(2)
        .build()
        .unwrap();
    let (mut a, mut b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    redis::cmd("SET")
        .arg("where")
        .arg("db3")
        .query_async::<()>(&mut *a)
        .await
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("where")
        .query_async(&mut *b)
        .await
        .unwrap();
    assert_eq!(v, "db3");
    let clients = server.clients_named("tmpl");
    assert_eq!(clients.len(), 2, "{clients:?}");
    assert!(clients.iter().all(|c| c.get("db") == "3"), "{clients:?}");
    // The key is in database 3, not 0.
    let keyspace = server.must(&["INFO", "keyspace"]).text();
    assert!(keyspace.contains("db3:keys=1"), "{keyspace}");
    assert!(!keyspace.contains("db0:"), "{keyspace}");
    drop((a, b));
    pool.close().await;

    // A wrong password fails the get with a connect error naming the backend.
    let bad = format!("redis://:wrong@{}/3", server.addr());
    let pool = Pool::builder(RedisManager::new(&bad).unwrap())
        .backends([Backend::new(server.addr())])
        .wait_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = pool.get().await.expect_err("AUTH must fail");
    match &err {
        Error::Connect {
            source: Some(e), ..
        } => assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e:?}"),
        other => panic!("expected Error::Connect, got {other:?}"),
    }
    assert!(err.to_string().contains(&server.addr()), "{err}");
    pool.close().await;

    // Nothing listens: the error says where it dialed, even for the implicit backend.
    let port = server.port();
    drop(server);
    let pool = Pool::builder(RedisManager::new(&format!("redis://127.0.0.1:{port}")).unwrap())
        .wait_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = pool.get().await.expect_err("nothing listens");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    pool.close().await;
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced_on_borrow() {
    let server = RedisServer::start();
    let pool =
        Pool::builder(RedisManager::new(&format!("{}/?client_name=killed", server.url())).unwrap())
            .max_size(1)
            .test_on_borrow(TestOnBorrow::Always)
            .build()
            .unwrap();
    let mut conn = pool.get().await.unwrap();
    let id = client_id(&mut conn).await;
    drop(conn);
    server.must(&["CLIENT", "KILL", "ID", &id.to_string()]);
    assert!(server.wait_client_gone(id, GONE_WITHIN).await);

    let mut conn = pool.get().await.expect("a fresh connection, no error");
    assert_ne!(client_id(&mut conn).await, id);
    drop(conn);
    let stats = pool.stats();
    assert_eq!((stats.check_failures, stats.misses), (1, 2), "{stats:?}");
    pool.close().await;
}

#[tokio::test]
async fn a_dead_connection_is_known_without_a_round_trip() {
    let server = RedisServer::start();
    let pool = Pool::builder(RedisManager::new(&server.url()).unwrap())
        .build()
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    let id = client_id(&mut conn).await;
    assert!(conn.is_reusable() && !conn.is_broken());
    server.must(&["CLIENT", "KILL", "ID", &id.to_string()]);
    // No command sent: the driver task sees the EOF and ends.
    let deadline = std::time::Instant::now() + GONE_WITHIN;
    while !conn.is_broken() {
        assert!(std::time::Instant::now() < deadline, "{conn:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!conn.is_reusable());
    drop(conn);
    let stats = pool.stats();
    assert_eq!(
        (stats.closed_broken, pool.status().size),
        (1, 0),
        "{stats:?}"
    );
    pool.close().await;
}

#[tokio::test]
async fn async_commands_and_detach_work() {
    use redis::AsyncCommands;
    let server = RedisServer::start();
    let pool = Pool::builder(RedisManager::new(&server.url()).unwrap())
        .build()
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    let () = conn.set("ac", 41).await.unwrap();
    let n: i64 = conn.incr("ac", 1).await.unwrap();
    assert_eq!(n, 42);
    // A detached connection keeps working outside the pool, and closes when dropped.
    let mut own = conn.detach();
    let id: u64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut own)
        .await
        .unwrap();
    let v: i64 = own.get("ac").await.unwrap();
    assert_eq!(v, 42);
    assert_eq!(pool.status().size, 0);
    drop(own);
    assert!(server.wait_client_gone(id, GONE_WITHIN).await);
    pool.close().await;
}

/// A stand-in for a Codis proxy: answers RESP commands, refusing `CLIENT` as Codis does.
async fn refuses_client(stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        // One command: an array of bulk strings.
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let n: usize = line.trim().trim_start_matches('*').parse().unwrap_or(0);
        let mut name = None;
        for _ in 0..n {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let len: usize = line.trim().trim_start_matches('$').parse().unwrap_or(0);
            let mut arg = vec![0; len + 2];
            if r.read_exact(&mut arg).await.is_err() {
                return;
            }
            name.get_or_insert_with(|| String::from_utf8_lossy(&arg[..len]).to_uppercase());
        }
        let reply = match name.as_deref() {
            Some("CLIENT") => "-ERR handle request, command 'CLIENT' is not allowed\r\n",
            Some("PING") => "+PONG\r\n",
            _ => "+OK\r\n",
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A client name is asked for, and the proxy refuses `CLIENT SETNAME`: the connection still
/// serves (unnamed), and nothing counts as a failed connect.
#[tokio::test]
async fn a_proxy_that_refuses_client_setname_still_serves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(refuses_client(s));
        }
    });
    let manager = RedisManager::new("redis://placeholder/?client_name=billing").unwrap();
    let pool = Pool::builder(manager)
        .backends([Backend::new(addr)])
        .max_size(2)
        .build()
        .unwrap();
    let mut conn = pool
        .get()
        .await
        .expect("connects although SETNAME is refused");
    let v: String = redis::cmd("PING").query_async(&mut *conn).await.unwrap();
    assert_eq!(v, "PONG");
    assert!(conn.is_reusable(), "{conn:?}");
    drop(conn);
    let s = pool.stats();
    assert_eq!((s.connects, s.connect_errors), (1, 0));
    pool.close().await;
}
