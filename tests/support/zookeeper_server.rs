//! `ZooKeeperServer`: a real standalone ZooKeeper 3.8 (Debian's `zookeeper` package) on
//! 127.0.0.1 and a random free port, with its own `zoo.cfg` and data directory in a temporary
//! directory, for the tests of feature `zookeeper`. It can be stopped (SIGKILL) and restarted
//! on the same port and data directory, and is killed (and its directory removed) when dropped.
//!
//! It runs `java -cp <zookeeper.jar>:<an slf4j binding> org.apache.zookeeper.server.ZooKeeperServerMain
//! zoo.cfg`; `zookeeper.jar`'s manifest names the other jars it needs in `/usr/share/java`.
//! Overrides: `$CONNPOOL_JAVA` (the `java` binary), `$CONNPOOL_ZOOKEEPER_JAR`. Missing, the
//! tests panic saying which Debian packages to install.
//!
//! [`ZooKeeperServer::start_tls`] adds a `secureClientPort` (Netty, PEM key and trust stores)
//! beside the plain port, which readiness checks and the tests' writers keep using.
//!
//! `tickTime` is 100 ms, so the negotiated session timeout is at most `max_session` (default
//! 2 s) and session-expiry tests are quick. No ZooKeeper client here (every test with
//! `mod support;` compiles this file): readiness is the `ruok` four-letter word.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::certs::TlsFiles;

static SEQ: AtomicUsize = AtomicUsize::new(0);

const DEFAULT_JAR: &str = "/usr/share/java/zookeeper.jar";
const INSTALL_HINT: &str =
    "install Debian's ZooKeeper and a Java runtime: `apt-get install zookeeper default-jre-headless` \
     (or point $CONNPOOL_JAVA / $CONNPOOL_ZOOKEEPER_JAR at them)";

/// A standalone ZooKeeper server child process.
pub struct ZooKeeperServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    max_session: Duration,
    /// The `secureClientPort`, if TLS is on.
    tls_port: Option<u16>,
    /// Whether clients must present a certificate (`ssl.clientAuth=need`).
    client_auth: bool,
}

impl ZooKeeperServer {
    /// Starts a server whose sessions time out after at most 2 s.
    pub fn start() -> Self {
        Self::start_with(Duration::from_secs(2))
    }

    /// Starts a server whose negotiated session timeout is at most `max_session` (at least
    /// 2 × tickTime = 200 ms).
    pub fn start_with(max_session: Duration) -> Self {
        Self::start_inner(max_session, None)
    }

    /// Starts a server that also speaks TLS on a second port ([`tls_addr`](Self::tls_addr)),
    /// with `files`' certificate and key; with `files.client_ca`, clients must present a
    /// certificate that CA signed.
    pub fn start_tls(files: &TlsFiles) -> Self {
        Self::start_inner(Duration::from_secs(2), Some(files))
    }

    fn start_inner(max_session: Duration, tls: Option<&TlsFiles>) -> Self {
        let mut last = String::new();
        // A free port can be taken between our probe and the server's bind: try a few.
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "connpool-zk-{}-{}-{port}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(dir.join("data")).expect("create the server's directory");
            let mut s = ZooKeeperServer {
                port,
                dir,
                child: None,
                max_session,
                // Another free port than `port` (a probe may hand the same one out twice).
                tls_port: tls.map(|_| loop {
                    let p = free_port();
                    if p != port {
                        break p;
                    }
                }),
                client_auth: tls.is_some_and(|t| t.client_ca.is_some()),
            };
            if let Some(files) = tls {
                // ZooKeeper's PEM key store holds the certificate and its key in one file.
                let mut bundle = std::fs::read(files.cert).expect("read the server certificate");
                bundle.extend(std::fs::read(files.key).expect("read the server key"));
                std::fs::write(s.dir.join("keystore.pem"), bundle).expect("write keystore.pem");
                let trust = files.client_ca.unwrap_or(files.cert);
                std::fs::copy(trust, s.dir.join("truststore.pem")).expect("write truststore.pem");
            }
            s.write_config();
            match s.spawn_and_wait() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("zookeeper did not start: {last}");
    }

    /// `127.0.0.1:port`, the connect string.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:port` of the TLS port (after [`start_tls`](Self::start_tls)).
    pub fn tls_addr(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.tls_port.expect("started with start_tls")
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the server (SIGKILL) and waits for the process to be gone; its clients see their
    /// connections reset. The data directory stays, so `restart` keeps the tree and sessions.
    pub fn stop(&mut self) {
        super::kill_child(&mut self.child);
    }

    /// Starts the server again on the same port and data directory (after `stop`) and waits
    /// until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        super::restart_on_port("zookeeper", port, || self.spawn_and_wait());
    }

    /// Stops the server, deletes its whole tree and sessions (the data directory), and
    /// starts a fresh one on the same port: an ensemble wiped and seeded again.
    pub fn wipe(&mut self) {
        self.stop();
        let data = self.dir.join("data");
        std::fs::remove_dir_all(&data).expect("remove the data directory");
        std::fs::create_dir_all(&data).expect("create the data directory");
        let port = self.port;
        super::restart_on_port("zookeeper", port, || self.spawn_and_wait());
    }

    /// Sends a four-letter word (`ruok`, `srvr`, `cons`, `stat`) and returns the answer.
    pub fn four_letter(&self, word: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(word.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// How many watches (data and child, all sessions) the server holds (`mntr`'s
    /// `zk_watch_count`).
    pub fn watch_count(&self) -> Option<usize> {
        let text = self.four_letter("mntr").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("zk_watch_count"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The paths the server holds a *data* watch on for `session` (four-letter word `wchc`;
    /// ZooKeeper does not list child watches there: see `watch_count`).
    pub fn watched_paths(&self, session: i64) -> Vec<String> {
        let text = self.four_letter("wchc").unwrap_or_default();
        let id = format!("{session:#x}");
        let mut out = Vec::new();
        let mut mine = false;
        for line in text.lines() {
            if line.starts_with('\t') || line.starts_with(' ') {
                if mine {
                    out.push(line.trim().to_owned());
                }
            } else {
                mine = line.trim() == id;
            }
        }
        out
    }

    /// The server's log so far (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("zookeeper.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn write_config(&self) {
        let cfg = format!(
            "tickTime=100\n\
             initLimit=10\n\
             syncLimit=5\n\
             dataDir={data}\n\
             clientPort={port}\n\
             clientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n\
             minSessionTimeout=200\n\
             maxSessionTimeout={max}\n\
             maxClientCnxns=0\n\
             forceSync=no\n\
             4lw.commands.whitelist=ruok,srvr,stat,cons,wchc,mntr\n",
            data = self.dir.join("data").display(),
            port = self.port,
            max = self.max_session.as_millis().max(200),
        );
        let cfg = match self.tls_port {
            None => cfg,
            Some(tls_port) => format!(
                "{cfg}\
                 serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
                 secureClientPort={tls_port}\n\
                 secureClientPortAddress=127.0.0.1\n\
                 ssl.keyStore.location={keystore}\n\
                 ssl.keyStore.type=PEM\n\
                 ssl.trustStore.location={truststore}\n\
                 ssl.trustStore.type=PEM\n\
                 ssl.clientAuth={auth}\n",
                keystore = self.dir.join("keystore.pem").display(),
                truststore = self.dir.join("truststore.pem").display(),
                auth = if self.client_auth { "need" } else { "none" },
            ),
        };
        std::fs::write(self.dir.join("zoo.cfg"), cfg).expect("write zoo.cfg");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let java = std::env::var("CONNPOOL_JAVA").unwrap_or_else(|_| "java".into());
        let jar = std::env::var("CONNPOOL_ZOOKEEPER_JAR").unwrap_or_else(|_| DEFAULT_JAR.into());
        if !Path::new(&jar).exists() {
            panic!("{jar} not found: {INSTALL_HINT}");
        }
        let jar_dir = Path::new(&jar)
            .parent()
            .unwrap_or(Path::new("/usr/share/java"));
        // A logging binding (the server logs through slf4j), to our log file.
        let mut classpath = jar.clone();
        if self.tls_port.is_some() {
            // The Netty server's TLS handler needs netty-codec, which zookeeper.jar's manifest
            // leaves out (Debian's libnetty-java, a dependency of the package).
            let codec = jar_dir.join("netty-codec.jar");
            if !codec.exists() {
                panic!(
                    "{} not found (ZooKeeper's TLS port needs it): `apt-get install libnetty-java`",
                    codec.display()
                );
            }
            classpath.push(':');
            classpath.push_str(&codec.to_string_lossy());
        }
        for binding in ["slf4j-simple.jar", "slf4j-nop.jar"] {
            let p = jar_dir.join(binding);
            if p.exists() {
                classpath.push(':');
                classpath.push_str(&p.to_string_lossy());
                break;
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("zookeeper.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(&java)
            .args([
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                &classpath,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(self.dir.join("zoo.cfg"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("`{java}` not found: {INSTALL_HINT}")
            }
            Err(e) => return Err(format!("spawn {java}: {e}")),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if !self.is_running() {
                self.child = None;
                return Err(format!(
                    "zookeeper exited during startup on port {}:\n{}",
                    self.port,
                    self.log_tail(30)
                ));
            }
            if matches!(self.four_letter("ruok"), Ok(ref s) if s.trim() == "imok")
                && matches!(self.four_letter("srvr"), Ok(ref s) if s.contains("Mode: standalone"))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "zookeeper did not answer on port {} within 60 s:\n{}",
                    self.port,
                    self.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("probe a free port")
}

/// A TCP proxy in front of a ZooKeeper server that records the session id and password of
/// every session established through it (from the server's `ConnectResponse`), so a test can
/// [`kill_session`] a client's session while the server keeps running; it can also refuse new
/// connections ([`SessionSniffer::block`]) and drop watch notifications
/// ([`SessionSniffer::mute_notifications`]).
pub struct SessionSniffer {
    addr: String,
    sessions: Sessions,
    blocked: std::sync::Arc<std::sync::atomic::AtomicBool>,
    muted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Session ids and passwords seen, in order.
type Sessions = std::sync::Arc<std::sync::Mutex<Vec<(i64, Vec<u8>)>>>;

impl SessionSniffer {
    /// Listens on 127.0.0.1 (a random port) and forwards every connection to `target`.
    pub async fn start(target: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let sessions: Sessions = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let blocked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let target = target.to_owned();
        let recorded = sessions.clone();
        let refuse = blocked.clone();
        let muted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mute = muted.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                // SeqCst: a plain flag set by the test; no other data rides on it.
                if refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let recorded = recorded.clone();
                let mute = mute.clone();
                conns.spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    });
                    // The server's first frame is the ConnectResponse: int32 length, then
                    // protocolVersion i32, timeOut i32, sessionId i64, passwd (i32 length +
                    // bytes), readOnly bool.
                    let mut len = [0u8; 4];
                    if sr.read_exact(&mut len).await.is_ok() {
                        let n = i32::from_be_bytes(len).clamp(0, 1 << 20) as usize;
                        let mut body = vec![0u8; n];
                        if sr.read_exact(&mut body).await.is_ok() {
                            if let Some(s) = parse_connect_response(&body) {
                                if s.0 != 0 {
                                    recorded.lock().unwrap().push(s);
                                }
                            }
                            let _ = cw.write_all(&len).await;
                            let _ = cw.write_all(&body).await;
                            // Then frame by frame: ReplyHeader (xid i32, zxid i64, err i32)
                            // and body; xid -1 is a watch notification.
                            loop {
                                let mut len = [0u8; 4];
                                if sr.read_exact(&mut len).await.is_err() {
                                    break;
                                }
                                let n = i32::from_be_bytes(len).clamp(0, 1 << 24) as usize;
                                let mut body = vec![0u8; n];
                                if sr.read_exact(&mut body).await.is_err() {
                                    break;
                                }
                                let notification = body.get(..4) == Some(&(-1i32).to_be_bytes());
                                // SeqCst: a plain flag set by the test.
                                if notification && mute.load(Ordering::SeqCst) {
                                    continue;
                                }
                                if cw.write_all(&len).await.is_err()
                                    || cw.write_all(&body).await.is_err()
                                {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = cw.shutdown().await;
                    up.abort();
                });
                while conns.try_join_next().is_some() {}
            }
        });
        SessionSniffer {
            addr,
            sessions,
            blocked,
            muted,
            task,
        }
    }

    /// While muted, the server's watch notifications are dropped on their way to the client
    /// (the server has spent the watch; the client still believes it armed): lost watches.
    pub fn mute_notifications(&self, on: bool) {
        // SeqCst: see the load in the forwarding loop.
        self.muted.store(on, Ordering::SeqCst);
    }

    /// While blocked, new connections through the proxy are closed at once (existing ones
    /// stay): a client cannot re-attach to its session meanwhile.
    pub fn block(&self, on: bool) {
        // SeqCst: see the load in the accept loop.
        self.blocked.store(on, Ordering::SeqCst);
    }

    /// The proxy's `127.0.0.1:port`, the connect string to give the client.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// The distinct sessions established through the proxy so far, oldest first.
    pub fn sessions(&self) -> Vec<(i64, Vec<u8>)> {
        let mut out: Vec<(i64, Vec<u8>)> = Vec::new();
        for s in self.sessions.lock().unwrap().iter() {
            if !out.iter().any(|o| o.0 == s.0) {
                out.push(s.clone());
            }
        }
        out
    }
}

impl Drop for SessionSniffer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse_connect_response(b: &[u8]) -> Option<(i64, Vec<u8>)> {
    let id = i64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
    let n = i32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
    let pw = b.get(20..20 + usize::try_from(n).ok()?)?.to_vec();
    Some((id, pw))
}

/// Ends a session on the server, as Curator's `KillSession` does: attaches a second connection
/// to it (id and password) and closes it there. The session's own client is disconnected and,
/// reconnecting, told the session expired. Blocking (std I/O).
///
/// If the client re-attaches between the two steps, the server refuses the close
/// (`SessionMoved`) and the session lives on: keep the client away meanwhile (e.g.
/// [`SessionSniffer::block`]).
pub fn kill_session(server: &str, session_id: i64, password: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(server)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    // ConnectRequest: protocolVersion 0, lastZxidSeen 0, timeOut, sessionId, passwd, readOnly.
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&2000i32.to_be_bytes());
    body.extend_from_slice(&session_id.to_be_bytes());
    body.extend_from_slice(&(password.len() as i32).to_be_bytes());
    body.extend_from_slice(password);
    body.push(0);
    write_frame(&mut s, &body)?;
    let reply = read_frame(&mut s)?;
    match parse_connect_response(&reply) {
        Some((id, _)) if id == session_id => {}
        other => {
            return Err(std::io::Error::other(format!(
                "could not attach to session {session_id:#x}: {other:?}"
            )))
        }
    }
    // closeSession: xid 1, type -11, no body; then wait for its reply (or the close).
    let mut req = Vec::new();
    req.extend_from_slice(&1i32.to_be_bytes());
    req.extend_from_slice(&(-11i32).to_be_bytes());
    write_frame(&mut s, &req)?;
    let _ = read_frame(&mut s);
    Ok(())
}

fn write_frame(s: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    s.write_all(&frame)
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len).clamp(0, 1 << 20) as usize;
    let mut body = vec![0u8; n];
    s.read_exact(&mut body)?;
    Ok(body)
}
