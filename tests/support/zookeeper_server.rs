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
//! `tickTime` is 100 ms, so the negotiated session timeout is at most `max_session` (default
//! 2 s) and session-expiry tests are quick. No ZooKeeper client here (every test with
//! `mod support;` compiles this file): readiness is the `ruok` four-letter word.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
}

impl ZooKeeperServer {
    /// Starts a server whose sessions time out after at most 2 s.
    pub fn start() -> Self {
        Self::start_with(Duration::from_secs(2))
    }

    /// Starts a server whose negotiated session timeout is at most `max_session` (at least
    /// 2 × tickTime = 200 ms).
    pub fn start_with(max_session: Duration) -> Self {
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
            };
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

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the server (SIGKILL) and waits for the process to be gone; its clients see their
    /// connections reset. The data directory stays, so `restart` keeps the tree and sessions.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data directory (after `stop`) and waits
    /// until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The port may linger for a moment.
        for _ in 0..20 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        panic!("zookeeper did not restart on port {}: {last}", self.port);
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
             4lw.commands.whitelist=ruok,srvr,stat,cons\n",
            data = self.dir.join("data").display(),
            port = self.port,
            max = self.max_session.as_millis().max(200),
        );
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
