//! `RedisServer`: a real `redis-server` on 127.0.0.1 and a random free port, with no
//! persistence (`--save '' --appendonly no`), for the tests of feature `redis`. It can be
//! killed with SIGKILL and restarted on the same port, and is killed when dropped.
//!
//! `RedisServer::cmd` speaks raw RESP over a std `TcpStream` (no redis crate here: every test
//! with `mod support;` compiles this file), enough for `CLIENT LIST`, `CLIENT KILL`, `INFO`.
//!
//! The binary is `redis-server` from `PATH`, or `$CONNPOOL_REDIS_SERVER`. Missing, the tests
//! panic saying which Debian package to install.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The reply as text (simple, bulk or error string; integers formatted).
    pub fn text(&self) -> String {
        match self {
            Resp::Simple(s) | Resp::Error(s) => s.clone(),
            Resp::Int(n) => n.to_string(),
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Resp::Bulk(None) | Resp::Array(None) => String::new(),
            Resp::Array(Some(items)) => items.iter().map(Resp::text).collect::<Vec<_>>().join(" "),
        }
    }
}

/// One line of `CLIENT LIST`: `id=7 addr=127.0.0.1:5000 ... name=x db=0 ... cmd=get`.
#[derive(Debug, Clone)]
pub struct ClientInfo(pub HashMap<String, String>);

impl ClientInfo {
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("", String::as_str)
    }
    pub fn id(&self) -> u64 {
        self.get("id").parse().unwrap_or(0)
    }
    pub fn name(&self) -> &str {
        self.get("name")
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A `redis-server` child process.
pub struct RedisServer {
    port: u16,
    args: Vec<String>,
    password: Option<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with no extra arguments.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments, e.g. `&["--timeout", "1"]` or
    /// `&["--requirepass", "secret"]` (then `cmd` authenticates itself).
    pub fn start_with(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let password = args
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1].clone());
        let mut last = String::new();
        // A free port can be taken between our probe and the server's bind: try a few.
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "connpool-redis-{}-{}-{port}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create the server's directory");
            let mut s = RedisServer {
                port,
                args: args.clone(),
                password: password.clone(),
                dir,
                child: None,
            };
            match s.spawn_and_wait() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://[:password@]127.0.0.1:port` (append `/db?client_name=...` as needed).
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `kill -9`, and waits for the process to be gone. Its clients' sockets are reset by the
    /// kernel.
    pub fn kill(&mut self) {
        super::kill_child(&mut self.child);
    }

    /// Starts the server again on the same port (after `kill`), and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        super::restart_on_port("redis-server", port, || self.spawn_and_wait());
    }

    /// Sends one command (as bulk strings) on a fresh connection and returns the reply
    /// (authenticating first when the server has a password).
    pub fn cmd(&self, args: &[&str]) -> io::Result<Resp> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        let mut conn = RawConn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        if let Some(p) = &self.password {
            let r = conn.call(&["AUTH", p])?;
            if let Resp::Error(e) = r {
                return Err(io::Error::other(format!("AUTH failed: {e}")));
            }
        }
        conn.call(args)
    }

    /// `cmd`, panicking on an I/O error or an error reply.
    pub fn must(&self, args: &[&str]) -> Resp {
        match self.cmd(args) {
            Ok(Resp::Error(e)) => panic!("{args:?} on {}: error reply {e}", self.addr()),
            Ok(r) => r,
            Err(e) => panic!("{args:?} on {}: {e}", self.addr()),
        }
    }

    /// `CLIENT LIST`, without the connection asking for it.
    pub fn client_list(&self) -> Vec<ClientInfo> {
        let text = self.must(&["CLIENT", "LIST"]).text();
        text.lines()
            .map(|line| {
                ClientInfo(
                    line.split(' ')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                )
            })
            .filter(|c| !(c.get("cmd") == "client|list" || c.get("cmd") == "client"))
            .collect()
    }

    /// The clients named `name` (`CLIENT SETNAME`, the pool URL's `client_name`).
    pub fn clients_named(&self, name: &str) -> Vec<ClientInfo> {
        self.client_list()
            .into_iter()
            .filter(|c| c.name() == name)
            .collect()
    }

    /// Polls `clients_named(name).len()` (asynchronously, so the runtime keeps running) until
    /// `pred` holds or `within` passes; returns the last count either way.
    pub async fn wait_clients(
        &self,
        name: &str,
        within: Duration,
        pred: impl Fn(usize) -> bool,
    ) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let n = self.clients_named(name).len();
            if pred(n) || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Is a client with this id (`CLIENT ID`) connected?
    pub fn has_client(&self, id: u64) -> bool {
        self.client_list().iter().any(|c| c.id() == id)
    }

    /// Polls until no client with this id is connected, or `within` passes.
    pub async fn wait_client_gone(&self, id: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if !self.has_client(id) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A field of `INFO <section>` as an integer (e.g. `total_connections_received`).
    pub fn info_u64(&self, section: &str, field: &str) -> u64 {
        let text = self.must(&["INFO", section]).text();
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let bin = std::env::var("CONNPOOL_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let log = self.dir.join("redis.log");
        let mut cmd = Command::new(&bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "`{bin}` not found: the redis tests need a real Redis server; install it with \
                 `apt-get install redis-server` (Debian/Ubuntu package redis-server) or set \
                 CONNPOOL_REDIS_SERVER to its path"
            ),
            Err(e) => panic!("cannot run `{bin}`: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "redis-server on port {} exited ({status}): {}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ));
            }
            if let Ok(r) = self.cmd(&["PING"]) {
                if r == Resp::Simple("PONG".into()) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

struct RawConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawConn {
    fn call(&mut self, args: &[&str]) -> io::Result<Resp> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&buf)?;
        read_resp(&mut self.reader)
    }
}

fn read_resp(r: &mut impl BufRead) -> io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad RESP line {line:?}"),
        )
    };
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut data = vec![0; n as usize + 2];
                r.read_exact(&mut data)?;
                data.truncate(n as usize);
                Resp::Bulk(Some(data))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_resp(r)?);
                }
                Resp::Array(Some(items))
            }
        }
        _ => return Err(bad()),
    })
}
