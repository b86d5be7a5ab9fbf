//! `--redis`: the demo against real Redis servers, through `connpool::redis::RedisManager`.
//!
//! [`start`] spawns `redis-server` processes on 127.0.0.1 (random ports, no persistence) when
//! the binary is on `PATH`, or uses the servers given with `--redis-addr`. Each
//! [`RedisBackend`] offers what the in-process `TestBackend` does (`addr`, `kill`,
//! `is_killed`, `accepted`, `requests`), so the demo's script, progress line and table work
//! unchanged; [`request`] is one SET + GET through a pooled connection.
//!
//! Needs `--features redis` (`cargo run --release --example demo --features redis -- --redis`).
#![cfg(feature = "redis")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use connpool::redis::redis::{self, ErrorKind, RedisError};
use connpool::redis::{RedisConnection, RedisManager};

/// The name the demo's connections give themselves (`CLIENT SETNAME`): how `kill` finds them
/// on a server it did not start.
pub const CLIENT_NAME: &str = "connpool-demo";

/// One Redis server the demo uses: a child process it started, or a given address.
pub struct RedisBackend {
    pub addr: String,
    child: Mutex<Option<Child>>,
    dir: Option<PathBuf>,
    killed: AtomicBool,
    /// `INFO stats` counters when the demo started, and their last values read.
    base_accepted: u64,
    base_requests: u64,
    last_accepted: AtomicU64,
    last_requests: AtomicU64,
}

/// The manager for the demo's pool: its URL's host is a placeholder, since every backend's
/// address replaces it; connections are named [`CLIENT_NAME`].
pub fn manager() -> RedisManager {
    RedisManager::new(&format!("redis://placeholder/?client_name={CLIENT_NAME}"))
        .expect("a valid URL")
        .response_timeout(Some(Duration::from_secs(1)))
}

/// One request: `SET demo:<random> n EX 10`, then `GET` it back; a different value is an
/// error (it would mean a reply went to the wrong caller).
pub async fn request(conn: &mut RedisConnection, n: u64) -> Result<(), RedisError> {
    let key = format!("demo:{:016x}", fastrand::u64(..));
    redis::cmd("SET")
        .arg(&key)
        .arg(n)
        .arg("EX")
        .arg(10)
        .query_async::<()>(&mut *conn)
        .await?;
    let v: u64 = redis::cmd("GET").arg(&key).query_async(&mut *conn).await?;
    if v == n {
        Ok(())
    } else {
        Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "GET returned another value than the SET before it",
            format!("{key}: set {n}, got {v}"),
        )))
    }
}

/// The servers to use: `given` addresses (`--redis-addr`, each `host:port`) if any, else
/// `count` new `redis-server` processes. Errors say what is missing.
pub fn start(given: &[String], count: usize) -> Result<Vec<RedisBackend>, String> {
    if !given.is_empty() {
        return given
            .iter()
            .map(|addr| {
                let (a, r) = info_stats(addr)?;
                Ok(RedisBackend::new(addr.clone(), None, None, a, r))
            })
            .collect();
    }
    (0..count).map(|_| spawn()).collect()
}

impl RedisBackend {
    fn new(
        addr: String,
        child: Option<Child>,
        dir: Option<PathBuf>,
        accepted: u64,
        requests: u64,
    ) -> Self {
        RedisBackend {
            addr,
            child: Mutex::new(child),
            dir,
            killed: AtomicBool::new(false),
            base_accepted: accepted,
            base_requests: requests,
            last_accepted: AtomicU64::new(accepted),
            last_requests: AtomicU64::new(requests),
        }
    }

    /// Crashes the backend: `kill -9` of a server the demo started; on a given server (which
    /// the demo must not stop), `CLIENT KILL` of the demo's own connections.
    pub fn kill(&self) {
        self.refresh();
        // Relaxed: a flag for the report, read on the same task.
        self.killed.store(true, Ordering::Relaxed);
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
            return;
        }
        if let Ok(list) = call(&self.addr, &["CLIENT", "LIST"]) {
            for line in list.lines() {
                let field = |k: &str| {
                    line.split(' ')
                        .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                };
                if field("name") == Some(CLIENT_NAME) {
                    if let Some(id) = field("id") {
                        let _ = call(&self.addr, &["CLIENT", "KILL", "ID", id]);
                    }
                }
            }
        }
    }

    pub fn is_killed(&self) -> bool {
        // Relaxed: see `kill`.
        self.killed.load(Ordering::Relaxed)
    }

    /// Connections the server accepted since the demo started (`total_connections_received`).
    pub fn accepted(&self) -> u64 {
        self.refresh();
        // Relaxed: a statistic.
        self.last_accepted.load(Ordering::Relaxed) - self.base_accepted
    }

    /// Commands the server processed since the demo started (`total_commands_processed`,
    /// including the demo's own `INFO` calls and connection setup).
    pub fn requests(&self) -> u64 {
        self.refresh();
        // Relaxed: a statistic.
        self.last_requests.load(Ordering::Relaxed) - self.base_requests
    }

    /// Reads the counters again while the server answers; keeps the last values otherwise.
    fn refresh(&self) {
        let dead = self.child.lock().unwrap().is_none() && self.dir.is_some();
        if dead {
            return;
        }
        if let Ok((a, r)) = info_stats(&self.addr) {
            // Relaxed: statistics; fetch_max keeps them monotonic.
            self.last_accepted.fetch_max(a, Ordering::Relaxed);
            self.last_requests.fetch_max(r, Ordering::Relaxed);
        }
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts one `redis-server` on 127.0.0.1 and a free port, and waits until it answers.
fn spawn() -> Result<RedisBackend, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir =
        std::env::temp_dir().join(format!("connpool-demo-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run redis-server ({e}): install it (apt-get install redis-server) \
                 or pass --redis-addr host:port"
            )
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((a, r)) = info_stats(&addr) {
            return Ok(RedisBackend::new(addr, Some(child), Some(dir), a, r));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server on {addr} exited: {status}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("redis-server on {addr} did not answer"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(total_connections_received, total_commands_processed)` from `INFO stats`.
fn info_stats(addr: &str) -> Result<(u64, u64), String> {
    let text = call(addr, &["INFO", "stats"])?;
    let field = |name: &str| -> Result<u64, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("INFO stats has no {name}"))
    };
    Ok((
        field("total_connections_received")?,
        field("total_commands_processed")?,
    ))
}

/// One command on a fresh connection (std, short timeouts); the reply as text. Enough RESP
/// for `INFO`, `CLIENT LIST` and `CLIENT KILL`.
fn call(addr: &str, args: &[&str]) -> Result<String, String> {
    let io = |e: std::io::Error| format!("{addr}: {e}");
    let sock_addr = addr
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sock_addr, Duration::from_secs(1)).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(io)?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(io)?;
    let line = line.trim_end();
    match line.split_at_checked(1) {
        Some(("+", rest)) | Some((":", rest)) => Ok(rest.to_owned()),
        Some(("-", rest)) => Err(format!("{addr}: {rest}")),
        Some(("$", n)) => {
            let n: usize = n.parse().map_err(|_| format!("{addr}: bad reply"))?;
            let mut buf = vec![0; n + 2];
            r.read_exact(&mut buf).map_err(io)?;
            buf.truncate(n);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        _ => Err(format!("{addr}: unexpected reply {line:?}")),
    }
}
