//! `Etcd` discovery against a real etcd 3.4 (Debian's `etcd-server`) on 127.0.0.1: the v3
//! prefix watch and Codis 3's v2 `/jodis/<product>` directory. Proxies register, go offline,
//! are deleted, are added, carry malformed data; etcd is killed, stopped, frozen and
//! restarted; the v3 history is compacted while the watcher is cut off; authentication is on
//! (v3 users and roles, v2 Basic), and with feature `etcd-tls` the client port speaks TLS and
//! asks for client certificates. Every assertion is on the pool (`status().backends`,
//! per-backend dial counts of a no-I/O manager), polled with a generous deadline.
//!
//! Run: `cargo test --features etcd --test discovery_etcd` (needs `etcd` on PATH and `protoc`
//! to build; `--features etcd-tls` adds the TLS tests). Convergence figures: `cargo test
//! --release --features etcd --test discovery_etcd -- --ignored --nocapture
//! measure_convergence`.
#![cfg(feature = "etcd")]

mod support;

/// The demo's `--etcd` module, compiled and exercised here.
#[path = "../examples/demo/etcd.rs"]
mod demo_etcd;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connpool::discovery::Etcd;
use connpool::{Error, Event, Pool, Pooled};
use support::etcd_server::{free_port, EtcdServer};
use support::faulty::{eventually, settles, Faulty};

/// Generous: CI machines are slow and shared.
const WITHIN: Duration = Duration::from_secs(30);

// ---- helpers ----------------------------------------------------------------------------------

/// Messages of `DiscoveryFailed` and `DiscoveryWarning` events.
#[derive(Clone, Default)]
struct Seen {
    errors: Arc<Mutex<Vec<String>>>,
    warnings: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    fn errors_with(&self, needle: &str) -> usize {
        let e = self.errors.lock().unwrap();
        e.iter().filter(|m| m.contains(needle)).count()
    }
    fn warnings_with(&self, needle: &str) -> usize {
        let w = self.warnings.lock().unwrap();
        w.iter().filter(|m| m.contains(needle)).count()
    }
}

fn pool_with(d: Etcd) -> (Pool<Faulty>, Faulty, Seen) {
    let m = Faulty::new();
    let seen = Seen::default();
    let s = seen.clone();
    let pool = Pool::builder(m.clone())
        .max_size(12)
        .wait_timeout(Duration::from_secs(10))
        .on_event(move |e| match e {
            Event::DiscoveryFailed { message } => {
                s.errors.lock().unwrap().push(message.to_string())
            }
            Event::DiscoveryWarning { message } => {
                s.warnings.lock().unwrap().push(message.to_string())
            }
            _ => {}
        })
        .discovery(d)
        .build()
        .unwrap();
    (pool, m, seen)
}

/// Quick knobs so that failures are noticed in about a second.
fn fast(d: Etcd) -> Etcd {
    d.request_timeout(Duration::from_secs(1))
        .progress_interval(Duration::from_millis(500))
        .poll_timeout(Duration::from_secs(1))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
}

fn listed(pool: &Pool<Faulty>) -> Vec<String> {
    let mut v: Vec<String> = pool.status().backends.into_iter().map(|b| b.addr).collect();
    v.sort();
    v
}

fn strs(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

async fn until_listed(pool: &Pool<Faulty>, want: &[&str]) {
    let want = strs(want);
    eventually(&format!("backends == {want:?}"), WITHIN, || {
        listed(pool) == want
    })
    .await;
}

/// Waits until the adapter's watch is up and delivering: `key` is put with address `E`, must be
/// listed beside `listed_now`, and is deleted again, and must go. Being listed after the first
/// read alone does not show that the watch is up: a freeze between the read and the watch's
/// creation makes the watch call itself time out, which is not the path a freeze test means to
/// take (and would count a discovery error in tests that assert none).
async fn watch_is_live(pool: &Pool<Faulty>, w: &mut V3, key: &str, listed_now: &[&str]) {
    let mut with = listed_now.to_vec();
    with.push(E);
    w.put(key, E).await;
    until_listed(pool, &with).await;
    w.delete(key).await;
    until_listed(pool, listed_now).await;
}

fn codis(addr: &str, state: &str) -> String {
    format!(
        r#"{{"token":"t-{addr}","start_time":"2026-11-24 06:00:00","admin_addr":"{addr}1","proto_type":"tcp4","proxy_addr":"{addr}","product_name":"demo","addr":"{addr}","state":"{state}"}}"#
    )
}

/// Once the (empty) list is in force, `get()` fails with `NoBackends` at once instead of
/// waiting for a first list.
async fn fails_fast_with_no_backends(pool: &Pool<Faulty>) {
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let t = std::time::Instant::now();
        let r = pool.get_timeout(Duration::from_secs(2)).await;
        assert!(matches!(r, Err(Error::NoBackends)), "{:?}", r.err());
        if t.elapsed() < Duration::from_secs(1) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no empty list published"
        );
    }
}

/// Holds `n` connections at once (so each is a fresh dial), then returns them all.
async fn dial(pool: &Pool<Faulty>, n: usize) {
    let mut held: Vec<Pooled<Faulty>> = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.expect("get"));
    }
}

/// v3 writes, straight to etcd (not through any proxy under test).
struct V3 {
    c: etcd_client::Client,
}

impl V3 {
    async fn connect(endpoint: &str) -> V3 {
        V3 {
            c: etcd_client::Client::connect([endpoint], None)
                .await
                .unwrap(),
        }
    }
    /// A client signed in as `user` (on an etcd with authentication on), renewing its token.
    async fn connect_as(endpoint: &str, user: &str, password: &str) -> V3 {
        let options = etcd_client::ConnectOptions::new()
            .with_user(user, password)
            .with_auto_token_refresh(true);
        V3 {
            c: etcd_client::Client::connect([endpoint], Some(options))
                .await
                .unwrap(),
        }
    }
    async fn put(&mut self, key: &str, value: &str) -> i64 {
        let r = self.c.put(key, value, None).await.unwrap();
        r.header().unwrap().revision()
    }
    async fn delete(&mut self, key: &str) {
        self.c.delete(key, None).await.unwrap();
    }
    async fn compact(&mut self, revision: i64) {
        self.c.compact(revision, None).await.unwrap();
    }
}

/// A TCP forwarder that can be frozen: while frozen it moves no byte in either direction (on
/// old or new connections), like a stalled network path or a hung server.
struct Freezer {
    port: u16,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Freezer {
    async fn start(upstream: String) -> Freezer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let f = f.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::spawn(pump(dr, uw, f.clone()));
                    tokio::spawn(pump(ur, dw, f));
                });
            }
        });
        Freezer { port, frozen, task }
    }
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn freeze(&self, on: bool) {
        // SeqCst: a plain flag the pumps poll; no other data hangs on it.
        self.frozen.store(on, Ordering::SeqCst);
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    // SeqCst loads below: the flag set by `Freezer::freeze`, polled every 10 ms.
    loop {
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

const A: &str = "10.0.0.1:19000";
const B: &str = "10.0.0.2:19000";
const C: &str = "10.0.0.3:19000";
const D: &str = "10.0.0.4:19000";
const E: &str = "10.0.0.5:19000";

// ---- v3: Etcd::prefix -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_register_offline_delete_add_malformed() {
    let etcd = EtcdServer::start();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/svc/redis/proxy-1", &codis(A, "online")).await;
    w.put("/svc/redis/proxy-2", &codis(B, "online")).await;
    w.put("/svc/redis/proxy-3", C).await; // plain host:port
    w.put("/svc/redis-other/proxy-9", D).await; // outside the prefix "/svc/redis/"

    let (pool, m, seen) = pool_with(fast(Etcd::prefix(&[&etcd.endpoint()], "/svc/redis/")));
    until_listed(&pool, &[A, B, C]).await;

    // Dials go round-robin over all three.
    dial(&pool, 6).await;
    for a in [A, B, C] {
        assert_eq!(m.connects_to(a), 2, "round-robin: {a}");
    }
    eventually("six idle", WITHIN, || pool.status().idle == 6).await;

    // B goes offline (state flip): it leaves the list, its idle connections close, no new
    // dials go to it.
    w.put("/svc/redis/proxy-2", &codis(B, "offline")).await;
    until_listed(&pool, &[A, C]).await;
    eventually("B's idle connections closed", WITHIN, || m.live_to(B) == 0).await;
    dial(&pool, 8).await;
    assert_eq!(m.connects_to(B), 2, "no new dial to an offline proxy");

    // C is deleted; D is added.
    w.delete("/svc/redis/proxy-3").await;
    until_listed(&pool, &[A]).await;
    eventually("C's idle connections closed", WITHIN, || m.live_to(C) == 0).await;
    w.put("/svc/redis/proxy-4", &codis(D, "online")).await;
    until_listed(&pool, &[A, D]).await;
    dial(&pool, 12).await;
    assert!(m.connects_to(D) > 0, "the new proxy is dialed");

    // Malformed data: warned and skipped; the others stay.
    let before = listed(&pool);
    w.put("/svc/redis/proxy-5", "{not json").await;
    w.put("/svc/redis/proxy-6", r#"{"state":"online"}"#).await;
    eventually("two warnings", WITHIN, || {
        seen.warnings_with("proxy-5") >= 1 && seen.warnings_with("proxy-6") >= 1
    })
    .await;
    // A later valid change still goes through (the watch survived the bad values).
    w.put("/svc/redis/proxy-2", &codis(B, "online")).await;
    until_listed(&pool, &[A, B, D]).await;
    assert_eq!(before, strs(&[A, D]));
    // A malformed value replacing a good one drops that backend.
    w.put("/svc/redis/proxy-2", "nonsense").await;
    until_listed(&pool, &[A, D]).await;
    assert_eq!(
        seen.errors_with(""),
        0,
        "no discovery error: {:?}",
        seen.errors
    );

    pool.close().await;
}

/// etcd with authentication on: a pool with a reader's credentials lists and follows its
/// prefix; one without credentials, or with a wrong password, lists nothing, dials nothing and
/// reports the refusal; an empty user name is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_credentials_on_an_etcd_with_auth() {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let mut admin = etcd_client::Client::connect([&ep], None).await.unwrap();
    admin.role_add("svc-readers").await.unwrap();
    let read = etcd_client::Permission::read("/svc/redis/").with_prefix();
    admin
        .role_grant_permission("svc-readers", read)
        .await
        .unwrap();
    admin.user_add("reader", "s3:cret", None).await.unwrap();
    admin
        .user_grant_role("reader", "svc-readers")
        .await
        .unwrap();
    admin
        .put("/svc/redis/proxy-1", codis(A, "online"), None)
        .await
        .unwrap();
    enable_v3_auth(&mut admin).await;
    let mut w = V3::connect_as(&ep, "root", "rootpw").await;
    w.put("/svc/redis/proxy-2", &codis(B, "online")).await;

    let d = fast(Etcd::prefix(&[&ep], "/svc/redis/")).credentials("reader", "s3:cret");
    assert!(!format!("{d:?}").contains("s3:cret"), "{d:?}");
    let (pool, m, seen) = pool_with(d);
    until_listed(&pool, &[A, B]).await;
    // The watch is the reader's too: changes are followed.
    w.put("/svc/redis/proxy-2", &codis(B, "offline")).await;
    until_listed(&pool, &[A]).await;
    w.put("/svc/redis/proxy-3", C).await;
    until_listed(&pool, &[A, C]).await;
    dial(&pool, 2).await;
    assert_eq!(m.connects_to(A) + m.connects_to(C), 2);
    assert_eq!(seen.errors_with(""), 0, "{:?}", seen.errors);
    refused_with(
        fast(Etcd::prefix(&[&ep], "/svc/redis/")),
        "etcdserver: user name is empty",
    )
    .await;
    refused_with(
        fast(Etcd::prefix(&[&ep], "/svc/redis/")).credentials("reader", "wrong"),
        "authentication failed",
    )
    .await;
    refused_with(
        fast(Etcd::prefix(&[&ep], "/svc/redis/")).credentials("", "s3:cret"),
        "etcd: credentials: the user name is empty",
    )
    .await;
    pool.close().await;
}

/// The registry's `weight` reaches the pool: dials follow it, a change is applied in place,
/// a malformed weight is warned about and its node skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_weights_follow_the_registry() {
    let etcd = EtcdServer::start();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/svc/w/proxy-1", &format!(r#"{{"addr":"{A}","weight":3}}"#))
        .await;
    w.put(
        "/svc/w/proxy-2",
        &format!(r#"{{"addr":"{B}","weight":"1"}}"#),
    )
    .await;
    let (pool, m, seen) = pool_with(fast(Etcd::prefix(&[&etcd.endpoint()], "/svc/w/")));
    until_listed(&pool, &[A, B]).await;
    let weight = |addr: &str| {
        let st = pool.status();
        st.backends
            .iter()
            .find(|b| b.addr == addr)
            .map(|b| b.weight)
    };
    assert_eq!((weight(A), weight(B)), (Some(3), Some(1)));
    dial(&pool, 8).await;
    assert_eq!((m.connects_to(A), m.connects_to(B)), (6, 2));

    // B's weight goes up in place: the same backend, its connections kept.
    w.put("/svc/w/proxy-2", &format!(r#"{{"addr":"{B}","weight":5}}"#))
        .await;
    eventually("B reweighted", WITHIN, || weight(B) == Some(5)).await;
    assert_eq!(m.live_to(B), 2, "a weight change closes nothing");

    // A malformed weight: warned about, naming the node, and the node skipped.
    w.put(
        "/svc/w/proxy-1",
        &format!(r#"{{"addr":"{A}","weight":-2}}"#),
    )
    .await;
    eventually("warned about the weight", WITHIN, || {
        seen.warnings_with("proxy-1") >= 1
    })
    .await;
    until_listed(&pool, &[B]).await;
    assert!(
        seen.warnings
            .lock()
            .unwrap()
            .iter()
            .any(|w| w.contains("weight")),
        "{:?}",
        seen.warnings
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_empty_prefix_means_no_backends_then_first_registration() {
    let etcd = EtcdServer::start();
    let mut w = V3::connect(&etcd.endpoint()).await;
    let (pool, _m, seen) = pool_with(fast(Etcd::prefix(&[&etcd.endpoint()], "/empty/")));
    fails_fast_with_no_backends(&pool).await;
    assert_eq!(seen.errors_with(""), 0);
    w.put("/empty/p1", A).await;
    until_listed(&pool, &[A]).await;
    w.delete("/empty/p1").await;
    until_listed(&pool, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_restart_keeps_list_then_converges() {
    let mut etcd = EtcdServer::start();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/r/p1", A).await;
    w.put("/r/p2", B).await;
    let (pool, _m, seen) = pool_with(fast(Etcd::prefix(&[&etcd.endpoint()], "/r/")));
    until_listed(&pool, &[A, B]).await;

    etcd.kill();
    eventually("the lost watch is reported", WITHIN, || {
        pool.stats().discovery_errors >= 2
    })
    .await;
    // Meanwhile the last list serves.
    for _ in 0..20 {
        assert_eq!(listed(&pool), strs(&[A, B]));
        dial(&pool, 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    etcd.restart();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.delete("/r/p1").await;
    w.put("/r/p3", C).await;
    until_listed(&pool, &[B, C]).await;
    assert!(seen.errors_with("etcd") >= 2);

    // A graceful stop and start behaves the same.
    let n = seen.errors.lock().unwrap().len();
    etcd.stop();
    eventually("the stop is reported", WITHIN, || {
        seen.errors.lock().unwrap().len() > n
    })
    .await;
    etcd.restart();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/r/p1", A).await;
    until_listed(&pool, &[A, B, C]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_frozen_server_is_noticed_and_followed_after() {
    let etcd = EtcdServer::start();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/f/p1", A).await;
    let (pool, _m, seen) = pool_with(fast(Etcd::prefix(&[&etcd.endpoint()], "/f/")));
    until_listed(&pool, &[A]).await;
    watch_is_live(&pool, &mut w, "/f/live", &[A]).await;

    etcd.freeze();
    eventually("the silent watch is reported", WITHIN, || {
        seen.errors_with("silent") + seen.errors_with("timed out") >= 1
    })
    .await;
    assert_eq!(listed(&pool), strs(&[A]), "last list kept");
    etcd.thaw();
    let mut w2 = V3::connect(&etcd.endpoint()).await;
    w2.put("/f/p2", B).await;
    until_listed(&pool, &[A, B]).await;
    drop(w);
}

/// With progress requests off (an hour), only the HTTP/2 keep-alive can notice a frozen server:
/// it must break the watch rather than let it hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_keepalive_breaks_a_frozen_watch() {
    let etcd = EtcdServer::start_with_args(false, &["--grpc-keepalive-min-time=200ms"]);
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/k/p1", A).await;
    let d = Etcd::prefix(&[&etcd.endpoint()], "/k/")
        .progress_interval(Duration::from_secs(3600))
        .keep_alive(Duration::from_millis(500), Duration::from_millis(500))
        .request_timeout(Duration::from_secs(1))
        .backoff(Duration::from_millis(50), Duration::from_millis(500));
    let (pool, _m, seen) = pool_with(d);
    until_listed(&pool, &[A]).await;
    watch_is_live(&pool, &mut w, "/k/live", &[A]).await;
    etcd.freeze();
    eventually("the keep-alive breaks the watch", WITHIN, || {
        seen.errors_with("watch on") >= 1
    })
    .await;
    etcd.thaw();
    w.put("/k/p2", B).await;
    until_listed(&pool, &[A, B]).await;
}

/// The watcher is cut off (a frozen network path) while proxies change: the silent watch is
/// reported, the last list serves, and when the path comes back a new client reads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_cut_off_path_then_back() {
    let etcd = EtcdServer::start();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/x/p1", A).await;
    w.put("/x/p2", B).await;
    let freezer = Freezer::start(etcd.endpoint()).await;
    let (pool, _m, seen) = pool_with(fast(Etcd::prefix(&[&freezer.endpoint()], "/x/")));
    until_listed(&pool, &[A, B]).await;

    freezer.freeze(true);
    eventually("the cut-off watch is reported", WITHIN, || {
        pool.stats().discovery_errors >= 1
    })
    .await;
    w.delete("/x/p2").await;
    w.put("/x/p3", C).await;
    assert_eq!(listed(&pool), strs(&[A, B]), "last list kept");
    freezer.freeze(false);
    until_listed(&pool, &[A, C]).await;
    assert!(seen.errors_with("etcd") >= 1);
    w.put("/x/p4", D).await;
    until_listed(&pool, &[A, C, D]).await;
}

/// The watcher falls behind: its path stalls (nothing is read from etcd, so etcd cannot send
/// and parks the watcher as a "victim") while a burst of events fills every buffer, and etcd
/// compacts its history past the watcher's revision. etcd then cancels the watch with a
/// `compact_revision`; the adapter reads everything again and watches from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_compaction_while_the_watcher_is_behind() {
    compaction_while_the_watcher_is_behind(false).await;
}

/// The same with authentication on and a 1 s token TTL: the stall outlasts the pool's token,
/// and the re-read after the compaction (the same client) renews it instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_compaction_after_the_token_expired() {
    compaction_while_the_watcher_is_behind(true).await;
}

/// Turns etcd's authentication on, with a `root` user (password `rootpw`) holding the root role.
async fn enable_v3_auth(admin: &mut etcd_client::Client) {
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.role_add("root").await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
}

async fn compaction_while_the_watcher_is_behind(auth: bool) {
    let etcd = if auth {
        EtcdServer::start_with_args(false, &["--auth-token-ttl=1"])
    } else {
        EtcdServer::start()
    };
    let mut w = if auth {
        let mut admin = etcd_client::Client::connect([etcd.endpoint()], None)
            .await
            .unwrap();
        enable_v3_auth(&mut admin).await;
        V3::connect_as(&etcd.endpoint(), "root", "rootpw").await
    } else {
        V3::connect(&etcd.endpoint()).await
    };
    w.put("/c/p1", A).await;
    w.put("/c/p2", B).await;
    let freezer = Freezer::start(etcd.endpoint()).await;
    // Neither progress requests nor keep-alive may notice the short stall: the watch must
    // stay, and fall behind.
    let mut d = Etcd::prefix(&[&freezer.endpoint()], "/c/")
        .progress_interval(Duration::from_secs(3600))
        .keep_alive(Duration::from_secs(60), Duration::from_secs(60))
        .backoff(Duration::from_millis(50), Duration::from_millis(500));
    if auth {
        d = d.credentials("root", "rootpw");
    }
    let (pool, _m, seen) = pool_with(d);
    until_listed(&pool, &[A, B]).await;
    watch_is_live(&pool, &mut w, "/c/live", &[A, B]).await;

    freezer.freeze(true);
    // ~24 MiB of events under the prefix (an offline registration with padding: listed
    // nowhere, warned about nowhere) — far more than HTTP/2 windows, socket buffers and etcd's
    // per-stream queue hold.
    let pad = "x".repeat(96 * 1024);
    let mut rev = 0;
    for i in 0..256 {
        let v = format!(r#"{{"addr":"10.9.9.9:1","state":"offline","n":{i},"pad":"{pad}"}}"#);
        rev = w.put("/c/pad", &v).await;
    }
    w.delete("/c/pad").await;
    w.delete("/c/p2").await;
    rev = rev.max(w.put("/c/p3", C).await);
    w.compact(rev).await;
    if auth {
        // The pool's token, unused since the watch began, lapses (the TTL is 1 s; etcd
        // sweeps expired tokens every second or so).
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert_eq!(listed(&pool), strs(&[A, B]), "last list kept");
    assert_eq!(pool.stats().discovery_errors, 0, "{:?}", seen.errors);

    freezer.freeze(false);
    until_listed(&pool, &[A, C]).await;
    assert!(
        seen.errors_with("compacted") >= 1,
        "the compaction path was taken: {:?}",
        seen.errors
    );
    // Only the compaction is reported: the re-read went through (an expired token renewed).
    assert_eq!(
        seen.errors_with(""),
        seen.errors_with("compacted"),
        "{:?}",
        seen.errors
    );
    // And the new watch works.
    w.put("/c/p4", D).await;
    until_listed(&pool, &[A, C, D]).await;
    assert_eq!(seen.warnings_with(""), 0);
}

/// A watcher that fell behind catches up on ~24 MiB of backlog (etcd batches up to 1,000
/// revisions per response; tonic refuses messages over 4 MiB by default): no error, no
/// re-read, the list converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_watcher_catches_up_on_a_big_backlog() {
    let etcd = EtcdServer::start();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/b/p1", A).await;
    let freezer = Freezer::start(etcd.endpoint()).await;
    let d = Etcd::prefix(&[&freezer.endpoint()], "/b/")
        .progress_interval(Duration::from_secs(3600))
        .keep_alive(Duration::from_secs(60), Duration::from_secs(60));
    let (pool, _m, seen) = pool_with(d);
    until_listed(&pool, &[A]).await;
    watch_is_live(&pool, &mut w, "/b/live", &[A]).await;
    freezer.freeze(true);
    let pad = "x".repeat(96 * 1024);
    for i in 0..256 {
        let v = format!(r#"{{"addr":"10.9.9.9:1","state":"offline","n":{i},"pad":"{pad}"}}"#);
        w.put("/b/pad", &v).await;
    }
    w.put("/b/p2", B).await;
    freezer.freeze(false);
    until_listed(&pool, &[A, B]).await;
    assert_eq!(pool.stats().discovery_errors, 0, "{:?}", seen.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_do_not_share_state() {
    let etcd = EtcdServer::start_v2();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/one/p", A).await;
    w.put("/two/p", B).await;
    etcd.put_v2("/jodis/three/proxy-c", &codis(C, "online"));
    let (p1, m1, _) = pool_with(fast(Etcd::prefix(&[&etcd.endpoint()], "/one/")));
    let (p2, m2, _) = pool_with(fast(Etcd::prefix(&[&etcd.endpoint()], "/two/")));
    let (p3, _m3, _) = pool_with(fast(Etcd::codis3(&[&etcd.endpoint()], "three")));
    until_listed(&p1, &[A]).await;
    until_listed(&p2, &[B]).await;
    until_listed(&p3, &[C]).await;
    dial(&p1, 2).await;
    dial(&p2, 3).await;
    assert_eq!((m1.connects_to(A), m1.connects_to(B)), (2, 0));
    assert_eq!((m2.connects_to(A), m2.connects_to(B)), (0, 3));

    w.put("/two/q", C).await;
    until_listed(&p2, &[B, C]).await;
    assert_eq!(listed(&p1), strs(&[A]));
    p1.close().await;
    w.delete("/two/p").await;
    until_listed(&p2, &[C]).await;
    assert_eq!(listed(&p3), strs(&[C]));
}

// ---- v2: Etcd::codis3 -------------------------------------------------------------------------

/// Pools over an endpoint list of one dead member (a refused port) and one live one, each
/// listing `want` once built. Several of them: each starts at an endpoint of its own choice
/// (random), and the dead one is listed first and last in turn.
async fn pools_with_a_dead_endpoint(
    live: &str,
    want: &[&str],
    make: impl Fn(&[&str]) -> Etcd,
) -> Vec<(Pool<Faulty>, Seen)> {
    let dead = format!("127.0.0.1:{}", free_port());
    let mut pools = Vec::new();
    for i in 0..6 {
        let eps = if i % 2 == 0 {
            [&*dead, live]
        } else {
            [live, &*dead]
        };
        let (pool, _m, seen) = pool_with(fast(make(&eps)));
        until_listed(&pool, want).await;
        pools.push((pool, seen));
    }
    pools
}

/// The rest of a dead-endpoint test, once B was registered beside A: every pool follows
/// (its watch is on the live member), none saw a discovery error (a dead member while
/// another serves costs warnings only), and once the live member is killed too, every pool
/// reports it.
async fn follows_then_reports_every_member_down(
    pools: &[(Pool<Faulty>, Seen)],
    etcd: &mut EtcdServer,
) {
    for (pool, _) in pools {
        until_listed(pool, &[A, B]).await;
    }
    for (pool, seen) in pools {
        assert_eq!(
            (seen.errors_with(""), pool.stats().discovery_errors),
            (0, 0),
            "one dead member while another serves is no discovery error: {:?}",
            seen.errors
        );
    }
    etcd.kill();
    for (_, seen) in pools {
        eventually("every member down: reported", WITHIN, || {
            seen.errors_with("") > 0
        })
        .await;
    }
}

/// One member of the endpoint list down while another serves: the adapter passes over it
/// (a warning) and reads and watches the live one, so no pool sees a discovery error and
/// each follows changes. (With one client balanced over both, each session's read and
/// watch went to a member at random: sessions failed at random, each failure reported.)
/// Once every member is down, that is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_a_dead_endpoint_is_passed_over() {
    let mut etcd = EtcdServer::start();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/svc/half/proxy-1", A).await;
    let pools = pools_with_a_dead_endpoint(&etcd.endpoint(), &[A], |eps| {
        Etcd::prefix(eps, "/svc/half/")
    })
    .await;
    w.put("/svc/half/proxy-2", B).await;
    follows_then_reports_every_member_down(&pools, &mut etcd).await;
}

/// The v2 adapter passes over a dead member the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codis3_a_dead_endpoint_is_passed_over() {
    let mut etcd = EtcdServer::start_v2();
    etcd.put_v2("/jodis/half/proxy-a", &codis(A, "online"));
    let pools =
        pools_with_a_dead_endpoint(&etcd.endpoint(), &[A], |eps| Etcd::codis3(eps, "half")).await;
    etcd.put_v2("/jodis/half/proxy-b", &codis(B, "online"));
    follows_then_reports_every_member_down(&pools, &mut etcd).await;
}

/// Codis' `coordinator_auth` on etcd v2: reads allowed to one user alone. A pool with that
/// user's credentials lists and follows the directory; one without credentials, or with a
/// wrong password, lists nothing, dials nothing and reports the refusal; a user name Basic
/// credentials cannot carry is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codis3_credentials_on_an_etcd_with_v2_auth() {
    let etcd = EtcdServer::start_v2();
    etcd.put_v2("/jodis/demo/proxy-a", &codis(A, "online"));
    etcd.enable_v2_auth("rootpw", ("reader", "s3:cret"), "/jodis/*");
    etcd.put_v2_as_root("rootpw", "/jodis/demo/proxy-b", &codis(B, "online"));

    let d = fast(Etcd::codis3(&[&etcd.endpoint()], "demo")).credentials("reader", "s3:cret");
    assert!(!format!("{d:?}").contains("s3:cret"), "{d:?}");
    let (pool, m, seen) = pool_with(d);
    until_listed(&pool, &[A, B]).await;
    // The long-poll carries the credentials too: a change is followed.
    etcd.put_v2_as_root("rootpw", "/jodis/demo/proxy-b", &codis(B, "offline"));
    until_listed(&pool, &[A]).await;
    dial(&pool, 2).await;
    assert_eq!(m.connects_to(A), 2);
    assert_eq!(seen.errors_with(""), 0, "{:?}", seen.errors);
    refused_with(
        fast(Etcd::codis3(&[&etcd.endpoint()], "demo")),
        "requires user authentication",
    )
    .await;
    refused_with(
        fast(Etcd::codis3(&[&etcd.endpoint()], "demo")).credentials("reader", "wrong"),
        "error 110",
    )
    .await;
    refused_with(
        fast(Etcd::codis3(&[&etcd.endpoint()], "demo")).credentials("re:ader", "s3:cret"),
        "the user name \"re:ader\" contains ':'",
    )
    .await;
    pool.close().await;
}

/// A pool on `d` lists nothing, dials nothing, and reports an error containing `why`.
async fn refused_with(d: Etcd, why: &str) {
    let (pool, m, seen) = pool_with(d);
    let reported = settles(WITHIN, || seen.errors_with(why) > 0).await;
    if !reported {
        let errors = seen.errors.lock().unwrap();
        panic!(
            "no discovery error with {why:?} within {WITHIN:?}; the first of {}: {:?}",
            errors.len(),
            &errors[..errors.len().min(3)]
        );
    }
    assert!(listed(&pool).is_empty(), "{:?}", pool.status());
    assert_eq!(m.connects(), 0);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codis3_register_offline_delete_add_malformed() {
    let etcd = EtcdServer::start_v2();
    etcd.put_v2("/jodis/demo/proxy-a", &codis(A, "online"));
    etcd.put_v2("/jodis/demo/proxy-b", &codis(B, "online"));
    etcd.put_v2("/jodis/demo/proxy-c", &codis(C, "online"));
    etcd.put_v2("/jodis/demo2/proxy-d", &codis(D, "online")); // another product
    let (pool, m, seen) = pool_with(fast(Etcd::codis3(&[&etcd.endpoint()], "demo")));
    until_listed(&pool, &[A, B, C]).await;

    dial(&pool, 6).await;
    for a in [A, B, C] {
        assert_eq!(m.connects_to(a), 2, "round-robin: {a}");
    }

    etcd.put_v2("/jodis/demo/proxy-b", &codis(B, "offline"));
    until_listed(&pool, &[A, C]).await;
    eventually("B's idle connections closed", WITHIN, || m.live_to(B) == 0).await;
    dial(&pool, 8).await;
    assert_eq!(m.connects_to(B), 2, "no new dial to an offline proxy");

    etcd.delete_v2("/jodis/demo/proxy-c");
    until_listed(&pool, &[A]).await;
    etcd.put_v2("/jodis/demo/proxy-d", &codis(D, "online"));
    until_listed(&pool, &[A, D]).await;
    dial(&pool, 12).await;
    assert!(m.connects_to(D) > 0);

    etcd.put_v2("/jodis/demo/proxy-e", "{\"addr\": 7}");
    eventually("warned", WITHIN, || seen.warnings_with("proxy-e") >= 1).await;
    etcd.put_v2("/jodis/demo/proxy-f", B); // plain host:port
    until_listed(&pool, &[A, B, D]).await;
    assert_eq!(
        seen.warnings_with("proxy-e"),
        1,
        "a malformed value is warned about once: {:?}",
        seen.warnings
    );

    // codis-proxy registers with a TTL: an expired registration leaves the list.
    etcd.put_v2_ttl("/jodis/demo/proxy-g", &codis(C, "online"), Some(2));
    until_listed(&pool, &[A, B, C, D]).await;
    until_listed(&pool, &[A, B, D]).await;
    assert_eq!(
        seen.errors_with(""),
        0,
        "no discovery error: {:?}",
        seen.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codis3_missing_directory_then_registration() {
    let etcd = EtcdServer::start_v2();
    let (pool, _m, seen) = pool_with(fast(Etcd::codis3(&[&etcd.endpoint()], "later")));
    fails_fast_with_no_backends(&pool).await;
    assert_eq!(seen.errors_with(""), 0);
    etcd.put_v2("/jodis/later/proxy-1", &codis(A, "online"));
    until_listed(&pool, &[A]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codis3_restart_keeps_list_then_converges() {
    let mut etcd = EtcdServer::start_v2();
    etcd.put_v2("/jodis/demo/proxy-a", &codis(A, "online"));
    etcd.put_v2("/jodis/demo/proxy-b", &codis(B, "online"));
    let (pool, _m, seen) = pool_with(fast(Etcd::codis3(&[&etcd.endpoint()], "demo")));
    until_listed(&pool, &[A, B]).await;

    etcd.kill();
    eventually("the lost poll is reported", WITHIN, || {
        pool.stats().discovery_errors >= 2
    })
    .await;
    for _ in 0..20 {
        assert_eq!(listed(&pool), strs(&[A, B]));
        dial(&pool, 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    etcd.restart();
    // The v2 store survives a restart (it is in the WAL and snapshots), its event history
    // does not: the adapter reads everything again.
    etcd.delete_v2("/jodis/demo/proxy-a");
    etcd.put_v2("/jodis/demo/proxy-c", &codis(C, "online"));
    until_listed(&pool, &[B, C]).await;

    let n = seen.errors.lock().unwrap().len();
    etcd.stop();
    eventually("the stop is reported", WITHIN, || {
        seen.errors.lock().unwrap().len() > n
    })
    .await;
    etcd.restart();
    etcd.put_v2("/jodis/demo/proxy-a", &codis(A, "online"));
    until_listed(&pool, &[A, B, C]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codis3_frozen_server_and_cut_off_path() {
    let etcd = EtcdServer::start_v2();
    etcd.put_v2("/jodis/demo/proxy-a", &codis(A, "online"));
    let freezer = Freezer::start(etcd.endpoint()).await;
    let (pool, _m, seen) = pool_with(fast(Etcd::codis3(&[&freezer.endpoint()], "demo")));
    until_listed(&pool, &[A]).await;

    // A cut-off path: the long-poll ends quietly, the next one gets no headers: reported.
    freezer.freeze(true);
    eventually("the cut-off poll is reported", WITHIN, || {
        seen.errors_with("no response") >= 1
    })
    .await;
    etcd.put_v2("/jodis/demo/proxy-b", &codis(B, "online"));
    assert_eq!(listed(&pool), strs(&[A]), "last list kept");
    freezer.freeze(false);
    until_listed(&pool, &[A, B]).await;

    // A frozen server.
    let n = seen.errors.lock().unwrap().len();
    etcd.freeze();
    eventually("the frozen server is reported", WITHIN, || {
        seen.errors.lock().unwrap().len() > n
    })
    .await;
    etcd.thaw();
    etcd.put_v2("/jodis/demo/proxy-c", &codis(C, "online"));
    until_listed(&pool, &[A, B, C]).await;
}

/// Many v2 events elsewhere in the store while the adapter long-polls: its wait index falls
/// out of the 1,000-event history unless it advances on quiet polls; either way it converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codis3_busy_store_elsewhere() {
    let etcd = EtcdServer::start_v2();
    etcd.put_v2("/jodis/demo/proxy-a", &codis(A, "online"));
    let (pool, _m, _seen) = pool_with(fast(Etcd::codis3(&[&etcd.endpoint()], "demo")));
    until_listed(&pool, &[A]).await;
    let e = &etcd;
    tokio::task::block_in_place(|| {
        for i in 0..1200 {
            e.put_v2("/unrelated/key", &i.to_string());
        }
    });
    etcd.put_v2("/jodis/demo/proxy-b", &codis(B, "online"));
    until_listed(&pool, &[A, B]).await;
    // Losing the event history to a busy store is normal: a warning, not a discovery error.
    assert_eq!(pool.stats().discovery_errors, 0);
}

/// The demo's `--etcd` helpers: its discovery follows what its registry writes (under a lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_registry_and_discovery() {
    let etcd = EtcdServer::start();
    demo_follows(&etcd.endpoint(), &demo_etcd::Access::default()).await;
}

/// The demo's `--auth` on an etcd with users: its registry writes and its discovery reads as
/// one user whose role covers `/demo/` alone. A wrong password is refused to the registry,
/// and a discovery without credentials lists nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_registry_and_discovery_with_credentials() {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let access = demo_user(&ep).await;
    demo_follows(&ep, &access).await;
    let wrong = demo_etcd::Access {
        auth: Some(("demo".into(), "wrong".into())),
        ..demo_etcd::Access::default()
    };
    match demo_etcd::Registry::register(&ep, "/demo", &[A.into()], &wrong).await {
        Ok(_) => panic!("a wrong password registered"),
        Err(e) => assert!(e.contains("authentication failed"), "{e}"),
    }
    let anonymous = demo_etcd::discovery(&ep, "/demo/", &demo_etcd::Access::default());
    refused_with(fast(anonymous), "user name is empty").await;
}

/// A user `demo` (password `pa:ss`) allowed to read and write under `/demo/`, and etcd's
/// authentication switched on; the demo's access as that user.
async fn demo_user(ep: &str) -> demo_etcd::Access {
    let mut admin = etcd_client::Client::connect([ep], None).await.unwrap();
    admin.role_add("demo-rw").await.unwrap();
    let rw = etcd_client::Permission::read_write("/demo/").with_prefix();
    admin.role_grant_permission("demo-rw", rw).await.unwrap();
    admin.user_add("demo", "pa:ss", None).await.unwrap();
    admin.user_grant_role("demo", "demo-rw").await.unwrap();
    enable_v3_auth(&mut admin).await;
    demo_etcd::Access {
        auth: Some(("demo".into(), "pa:ss".into())),
        ..demo_etcd::Access::default()
    }
}

/// The demo's registry and discovery, both reaching `ep` as `access` says: the discovery
/// follows each change the registry makes, with no discovery error.
async fn demo_follows(ep: &str, access: &demo_etcd::Access) {
    let mut reg = demo_etcd::Registry::register(ep, "/demo", &[A.into(), B.into()], access)
        .await
        .unwrap();
    let (pool, _m, seen) = pool_with(demo_etcd::discovery(ep, "/demo/", access));
    until_listed(&pool, &[A, B]).await;
    reg.set_online(A, false).await.unwrap();
    until_listed(&pool, &[B]).await;
    reg.add(C).await.unwrap();
    until_listed(&pool, &[B, C]).await;
    reg.remove(B).await.unwrap();
    until_listed(&pool, &[C]).await;
    assert!(reg.remove(B).await.is_err());
    assert_eq!(seen.errors_with(""), 0, "{:?}", seen.errors);
    pool.close().await;
}

// ---- measurements -----------------------------------------------------------------------------

/// Time until the pool's list is `want`, polled every millisecond.
async fn converge(pool: &Pool<Faulty>, want: &[&str]) -> Duration {
    let want = strs(want);
    let t = std::time::Instant::now();
    while listed(pool) != want {
        assert!(t.elapsed() < WITHIN, "no convergence to {want:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t.elapsed()
}

/// Time until the pool has counted one more discovery error.
async fn noticed(pool: &Pool<Faulty>) -> Duration {
    let e = pool.stats().discovery_errors;
    let t = std::time::Instant::now();
    while pool.stats().discovery_errors == e {
        assert!(t.elapsed() < WITHIN, "failure not noticed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t.elapsed()
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<52} n={:<3} median {:>8.1} ms   max {:>8.1} ms",
        v.len(),
        ms(v[v.len() / 2]),
        ms(*v.last().unwrap())
    );
}

/// One change: wait out the pool's 20 ms coalescing window, write (`write` returns when etcd
/// committed it), and time write + propagation until the pool's list is `want`.
async fn timed<F: std::future::Future<Output = ()>>(
    pool: &Pool<Faulty>,
    want: &[&str],
    write: F,
    commits: &mut Vec<Duration>,
) -> Duration {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = std::time::Instant::now();
    write.await;
    commits.push(t.elapsed());
    converge(pool, want).await;
    t.elapsed()
}

/// Prints how long the pool takes to follow each kind of change, with the default knobs
/// unless noted. A measurement, not a pass/fail test:
/// `cargo test --release --features etcd --test discovery_etcd -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn measure_convergence() {
    const N: usize = 20;
    // ---- v3
    let mut etcd = EtcdServer::start();
    let mut w = V3::connect(&etcd.endpoint()).await;
    w.put("/m/p1", A).await;
    let (pool, _m, _) = pool_with(Etcd::prefix(&[&etcd.endpoint()], "/m/"));
    converge(&pool, &[A]).await;
    let (mut add, mut off, mut on, mut del, mut commits) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..N {
        add.push(
            timed(
                &pool,
                &[A, B],
                async {
                    w.put("/m/p2", &codis(B, "online")).await;
                },
                &mut commits,
            )
            .await,
        );
        off.push(
            timed(
                &pool,
                &[A],
                async {
                    w.put("/m/p2", &codis(B, "offline")).await;
                },
                &mut commits,
            )
            .await,
        );
        on.push(
            timed(
                &pool,
                &[A, B],
                async {
                    w.put("/m/p2", &codis(B, "online")).await;
                },
                &mut commits,
            )
            .await,
        );
        del.push(timed(&pool, &[A], async { w.delete("/m/p2").await }, &mut commits).await);
    }
    summary("v3 etcd commit alone (put/delete round trip)", commits);
    summary("v3 add (put new key): write -> listed", add);
    summary("v3 offline (state flip): write -> unlisted", off);
    summary("v3 online again: write -> listed", on);
    summary("v3 delete: write -> unlisted", del);

    let mut frozen = vec![];
    for _ in 0..3 {
        etcd.freeze();
        frozen.push(noticed(&pool).await);
        etcd.thaw();
        converge(&pool, &[A]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    summary("v3 SIGSTOP: frozen -> silent watch reported", frozen);

    let mut restart = vec![];
    for _ in 0..5 {
        etcd.kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        etcd.restart(); // returns once etcd answers /health
        let t = std::time::Instant::now();
        let mut w = V3::connect(&etcd.endpoint()).await;
        w.put("/m/p3", C).await;
        converge(&pool, &[A, C]).await;
        restart.push(t.elapsed());
        w.delete("/m/p3").await;
        converge(&pool, &[A]).await;
    }
    summary(
        "v3 kill -9, 3 s down: healthy again -> change listed",
        restart,
    );
    pool.close().await;

    // v3 path cut off (noticed with request_timeout 1 s, progress 0.5 s), a change meanwhile
    let freezer = Freezer::start(etcd.endpoint()).await;
    let d = Etcd::prefix(&[&freezer.endpoint()], "/m/")
        .request_timeout(Duration::from_secs(1))
        .progress_interval(Duration::from_millis(500));
    let (pool, _m, _) = pool_with(d);
    converge(&pool, &[A]).await;
    let mut cut = vec![];
    let mut w = V3::connect(&etcd.endpoint()).await;
    for i in 0..5 {
        freezer.freeze(true);
        noticed(&pool).await;
        let key = format!("/m/c{i}");
        w.put(&key, C).await;
        freezer.freeze(false);
        let t = std::time::Instant::now();
        converge(&pool, &[A, C]).await;
        cut.push(t.elapsed());
        w.delete(&key).await;
        converge(&pool, &[A]).await;
    }
    summary("v3 cut off, change meanwhile: path back -> listed", cut);
    pool.close().await;

    // v3 lagging watcher cancelled by compaction (default knobs but no progress requests)
    let d = Etcd::prefix(&[&freezer.endpoint()], "/m/")
        .progress_interval(Duration::from_secs(3600))
        .keep_alive(Duration::from_secs(60), Duration::from_secs(60));
    let (pool, _m, seen) = pool_with(d);
    converge(&pool, &[A]).await;
    let pad = "x".repeat(96 * 1024);
    let mut compact = vec![];
    for i in 0..3 {
        freezer.freeze(true);
        let mut rev = 0;
        for n in 0..256 {
            let v = format!(r#"{{"addr":"10.9.9.9:1","state":"offline","n":{n},"pad":"{pad}"}}"#);
            rev = w.put("/m/pad", &v).await;
        }
        w.delete("/m/pad").await;
        let key = format!("/m/k{i}");
        rev = rev.max(w.put(&key, C).await);
        w.compact(rev).await;
        let before = seen.errors_with("compacted");
        freezer.freeze(false);
        let t = std::time::Instant::now();
        converge(&pool, &[A, C]).await;
        compact.push(t.elapsed());
        assert!(seen.errors_with("compacted") > before, "{:?}", seen.errors);
        w.delete(&key).await;
        converge(&pool, &[A]).await;
    }
    summary("v3 lagging watch compacted: path back -> listed", compact);
    drop(freezer);
    drop(etcd);

    // ---- v2
    let mut etcd = EtcdServer::start_v2();
    etcd.put_v2("/jodis/m/proxy-a", &codis(A, "online"));
    let (pool, _m, _) = pool_with(Etcd::codis3(&[&etcd.endpoint()], "m"));
    converge(&pool, &[A]).await;
    let (mut add, mut off, mut del, mut commits) = (vec![], vec![], vec![], vec![]);
    let e = &etcd;
    for _ in 0..N {
        let put = |v: String| async move { e.put_v2("/jodis/m/proxy-b", &v) };
        add.push(timed(&pool, &[A, B], put(codis(B, "online")), &mut commits).await);
        off.push(timed(&pool, &[A], put(codis(B, "offline")), &mut commits).await);
        timed(&pool, &[A, B], put(codis(B, "online")), &mut commits).await;
        del.push(
            timed(
                &pool,
                &[A],
                async { e.delete_v2("/jodis/m/proxy-b") },
                &mut commits,
            )
            .await,
        );
    }
    summary("v2 etcd commit alone (PUT/DELETE round trip)", commits);
    summary("v2 add: write -> listed", add);
    summary("v2 offline (state flip): write -> unlisted", off);
    summary("v2 delete: write -> unlisted", del);

    let mut frozen = vec![];
    for _ in 0..3 {
        etcd.freeze();
        frozen.push(noticed(&pool).await);
        etcd.thaw();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    summary("v2 SIGSTOP: frozen -> failure reported", frozen);

    let mut restart = vec![];
    for _ in 0..5 {
        etcd.kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        etcd.restart();
        let t = std::time::Instant::now();
        etcd.put_v2("/jodis/m/proxy-c", &codis(C, "online"));
        converge(&pool, &[A, C]).await;
        restart.push(t.elapsed());
        etcd.delete_v2("/jodis/m/proxy-c");
        converge(&pool, &[A]).await;
    }
    summary(
        "v2 kill -9, 3 s down: healthy again -> change listed",
        restart,
    );
}

/// Feature `etcd-tls`: v3 and v2 over TLS, with client certificates, against etcd's own TLS
/// listener (certificates made here with rcgen; keys and values written through the plain
/// listener beside it).
#[cfg(feature = "etcd-tls")]
mod tls {
    use super::*;
    use support::certs::{Certs, TlsFiles};

    /// `d` with the CA of `certs` trusted and its client certificate presented.
    fn trusted(certs: &Certs, d: Etcd) -> Etcd {
        d.tls(certs.ca.as_bytes())
            .tls_identity(certs.client_cert.as_bytes(), certs.client_key.as_bytes())
    }

    fn start(certs: &Certs, client_auth: bool) -> EtcdServer {
        let (cert, key, ca) = certs.files(client_auth);
        EtcdServer::start_tls(
            true,
            &TlsFiles {
                cert: &cert,
                key: &key,
                client_ca: ca.as_deref(),
            },
        )
    }

    /// Both APIs through TLS with a client certificate (`--client-cert-auth`): listed, and
    /// changes followed (the watch and the long-poll run over TLS too). Without the client
    /// certificate, trusting another CA, or with TLS unset on an `https://` endpoint, nothing
    /// is listed or dialed and the error says why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v3_and_v2_over_tls_with_a_client_certificate() {
        let certs = Certs::new("mtls");
        let etcd = start(&certs, true);
        let tls_ep = etcd.tls_endpoint();
        let mut w = V3::connect(&etcd.endpoint()).await;
        w.put("/svc/redis/proxy-1", &codis(A, "online")).await;
        etcd.put_v2("/jodis/demo/proxy-a", &codis(A, "online"));

        let v3 = trusted(
            &certs,
            fast(Etcd::prefix(&[&format!("https://{tls_ep}")], "/svc/redis/")),
        );
        assert!(!format!("{v3:?}").contains("PRIVATE KEY"), "{v3:?}");
        let (pool3, m3, seen3) = pool_with(v3);
        let v2 = trusted(&certs, fast(Etcd::codis3(&[&tls_ep], "demo")));
        let (pool2, m2, seen2) = pool_with(v2);
        until_listed(&pool3, &[A]).await;
        until_listed(&pool2, &[A]).await;
        w.put("/svc/redis/proxy-2", &codis(B, "online")).await;
        etcd.put_v2("/jodis/demo/proxy-b", &codis(B, "online"));
        until_listed(&pool3, &[A, B]).await;
        until_listed(&pool2, &[A, B]).await;
        dial(&pool3, 2).await;
        dial(&pool2, 2).await;
        assert_eq!((m3.connects_to(A), m3.connects_to(B)), (1, 1));
        assert_eq!((m2.connects_to(A), m2.connects_to(B)), (1, 1));
        assert_eq!(seen3.errors_with(""), 0, "{:?}", seen3.errors);
        assert_eq!(seen2.errors_with(""), 0, "{:?}", seen2.errors);

        // No client certificate: the member refuses the handshake (v2 reads the alert,
        // "BadCertificate"; v3's read fails with it or with the connection it closed).
        let ca = certs.ca.as_bytes();
        refused_with(
            fast(Etcd::prefix(&[&tls_ep], "/svc/redis/")).tls(ca),
            "reading \"/svc/redis/\"",
        )
        .await;
        refused_with(
            fast(Etcd::codis3(&[&tls_ep], "demo")).tls(ca),
            "fatal alert: BadCertificate",
        )
        .await;
        // Another CA: the member's certificate does not verify.
        let other = Certs::new("other");
        for d in [
            trusted(&other, fast(Etcd::prefix(&[&tls_ep], "/svc/redis/"))),
            trusted(&other, fast(Etcd::codis3(&[&tls_ep], "demo"))),
        ] {
            refused_with(d, "UnknownIssuer").await;
        }
        // An https:// endpoint without TLS set, an http:// one with it.
        let https = format!("https://{tls_ep}");
        refused_with(fast(Etcd::prefix(&[&https], "/svc/")), "TLS is not set").await;
        refused_with(fast(Etcd::codis3(&[&https], "demo")), "TLS is not set").await;
        let http = format!("http://{tls_ep}");
        let with_tls = trusted(&certs, fast(Etcd::prefix(&[&http], "/svc/")));
        refused_with(with_tls, "but TLS is set").await;
        pool3.close().await;
        pool2.close().await;
    }

    /// The demo's `--etcd-ca`, `--etcd-cert`/`--etcd-key` and `--auth` together, on a member
    /// that asks for client certificates: its registry and its discovery both reach etcd
    /// through TLS as the same user. Without the client certificate the registry is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_registry_and_discovery_over_tls() {
        let certs = Certs::new("demo");
        let etcd = start(&certs, true);
        let mut access = demo_user(&etcd.endpoint()).await;
        access.ca_pem = Some(certs.ca.clone().into_bytes());
        let no_identity = access.clone();
        access.identity = Some((
            certs.client_cert.clone().into_bytes(),
            certs.client_key.clone().into_bytes(),
        ));
        demo_follows(&etcd.tls_endpoint(), &access).await;
        let refused =
            demo_etcd::Registry::register(&etcd.tls_endpoint(), "/demo", &[A.into()], &no_identity)
                .await;
        assert!(refused.is_err(), "registered without a client certificate");
    }

    /// Members reached by a name their certificate does not carry: refused, unless
    /// `tls_domain` names what the certificate does carry. Bad PEM is named before anything
    /// is connected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_domain_and_bad_pem() {
        let certs = Certs::new("domain");
        let etcd = start(&certs, false);
        let mut w = V3::connect(&etcd.endpoint()).await;
        w.put("/svc/redis/proxy-1", C).await;
        etcd.put_v2("/jodis/demo/proxy-c", C);
        // "localhost" is not in the certificate (127.0.0.1 and etcd.test are).
        let by_name = format!(
            "localhost:{}",
            etcd.tls_endpoint().rsplit_once(':').unwrap().1
        );
        let ca = certs.ca.as_bytes();
        refused_with(
            fast(Etcd::prefix(&[&by_name], "/svc/redis/")).tls(ca),
            "NotValidForName",
        )
        .await;
        refused_with(
            fast(Etcd::codis3(&[&by_name], "demo")).tls(ca),
            "certificate not valid for name \"localhost\"",
        )
        .await;
        for d in [
            Etcd::prefix(&[&by_name], "/svc/redis/"),
            Etcd::codis3(&[&by_name], "demo"),
        ] {
            let (pool, _m, seen) = pool_with(fast(d).tls(ca).tls_domain("etcd.test"));
            until_listed(&pool, &[C]).await;
            assert_eq!(seen.errors_with(""), 0, "{:?}", seen.errors);
            pool.close().await;
        }

        let ep = etcd.tls_endpoint();
        let bad_key = fast(Etcd::prefix(&[&ep], "/svc/"))
            .tls(ca)
            .tls_identity(certs.client_cert.as_bytes(), b"no key here");
        refused_with(bad_key, "etcd: tls: the client key").await;
        let no_ca = fast(Etcd::codis3(&[&ep], "demo")).tls(b"");
        refused_with(no_ca, "etcd: tls: no CA certificates given").await;
        let identity_only = fast(Etcd::codis3(&[&ep], "demo"))
            .tls_identity(certs.client_cert.as_bytes(), certs.client_key.as_bytes());
        refused_with(identity_only, "no CA certificates given").await;
    }
}
