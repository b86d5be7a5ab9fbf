//! In-process TCP backends speaking a one-line protocol (`PING n` → `PONG n`), and the
//! connpool manager for them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use connpool::{Backend, Manager};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A backend listening on 127.0.0.1 with a random port.
pub struct TestBackend {
    pub addr: String,
    accepted: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    killed: AtomicBool,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    pub async fn start(_name: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (a, r) = (accepted.clone(), requests.clone());
        let task = tokio::spawn(async move {
            // Connections live in the JoinSet: aborting this task closes them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    Ok((sock, _)) = listener.accept() => {
                        a.fetch_add(1, Ordering::Relaxed);
                        conns.spawn(serve(sock, r.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        TestBackend {
            addr,
            accepted,
            requests,
            killed: AtomicBool::new(false),
            task,
        }
    }

    /// Closes the listener and every connection (the port then refuses).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.task.abort();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

async fn serve(sock: TcpStream, requests: Arc<AtomicU64>) {
    let _ = sock.set_nodelay(true);
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(n) = line.strip_prefix("PING ") else {
            return;
        };
        requests.fetch_add(1, Ordering::Relaxed);
        if w.write_all(format!("PONG {n}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A connection to a `TestBackend`.
pub struct LineConn {
    reader: BufReader<TcpStream>,
    line: String,
    broken: bool,
}

impl LineConn {
    /// One request/response; an I/O error marks the connection broken (not reused).
    pub async fn request(&mut self, n: u64) -> std::io::Result<()> {
        self.broken = true; // until the reply is read: a cancelled request leaves it broken
        self.reader
            .get_mut()
            .write_all(format!("PING {n}\n").as_bytes())
            .await?;
        self.line.clear();
        let read = self.reader.read_line(&mut self.line).await?;
        if read == 0 || self.line.trim_end() != format!("PONG {n}") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed or bad reply",
            ));
        }
        self.broken = false;
        Ok(())
    }
}

/// The manager: TCP connect, PING check, broken connections are not reused.
pub struct LineManager;

impl Manager for LineManager {
    type Connection = LineConn;
    type Error = std::io::Error;

    async fn connect(&self, backend: &Backend) -> std::io::Result<LineConn> {
        let sock = TcpStream::connect(backend.addr()).await?;
        sock.set_nodelay(true)?;
        Ok(LineConn {
            reader: BufReader::new(sock),
            line: String::new(),
            broken: false,
        })
    }

    async fn check(&self, conn: &mut LineConn) -> std::io::Result<()> {
        conn.request(0).await
    }

    fn is_reusable(&self, conn: &mut LineConn) -> bool {
        !conn.broken
    }
}
