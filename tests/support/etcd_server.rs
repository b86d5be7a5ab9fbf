//! A real etcd (Debian's `etcd-server`, 3.4) on 127.0.0.1 with random client and peer ports and
//! a temporary data dir; optionally with the v2 API enabled (`--enable-v2=true`, for Codis 3's
//! `/jodis/<product>` registrations). It can be killed (`kill -9`), stopped gracefully, frozen
//! (`SIGSTOP`) and restarted on the same ports and data dir; it is killed on drop.
//!
//! Also a tiny v2 HTTP client (`put_v2`, `delete_v2`, the v2 authentication set-up) and the
//! process helpers. std only, besides the `base64` dev-dependency for Basic credentials (every
//! test that uses `mod support;` compiles this file). `start_tls` adds a TLS client listener
//! beside the plain one, which the helpers keep using.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BINARY: &str = "etcd";

/// A running (or stopped) etcd member.
pub struct EtcdServer {
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    v2: bool,
    extra: Vec<String>,
    /// A TLS client listener's port, beside the plain one (which the helpers keep using).
    tls_port: Option<u16>,
    child: Option<Child>,
}

pub use super::certs::TlsFiles;

impl EtcdServer {
    /// Starts etcd with the v3 API only (etcd 3.4's default).
    pub fn start() -> EtcdServer {
        Self::start_with(false)
    }

    /// Starts etcd with the v2 API enabled as well.
    pub fn start_v2() -> EtcdServer {
        Self::start_with(true)
    }

    /// Starts etcd with extra command-line flags (e.g. `--grpc-keepalive-min-time=500ms`).
    pub fn start_with_args(v2: bool, extra: &[&str]) -> EtcdServer {
        let mut s = Self::new_stopped(v2);
        s.extra = extra.iter().map(|a| a.to_string()).collect();
        s.spawn();
        s
    }

    /// Starts etcd with a TLS client listener (see [`tls_endpoint`](Self::tls_endpoint)) beside
    /// the plain one; with `files.client_ca`, TLS clients must present a certificate it signed.
    pub fn start_tls(v2: bool, files: &TlsFiles<'_>) -> EtcdServer {
        let mut s = Self::new_stopped(v2);
        s.tls_port = Some(free_port());
        let path = |p: &Path| p.display().to_string();
        s.extra = vec![
            format!("--cert-file={}", path(files.cert)),
            format!("--key-file={}", path(files.key)),
        ];
        if let Some(ca) = files.client_ca {
            s.extra.push("--client-cert-auth".into());
            s.extra.push(format!("--trusted-ca-file={}", path(ca)));
        }
        s.spawn();
        s
    }

    /// `127.0.0.1:PORT`, the TLS client endpoint (after `start_tls`).
    pub fn tls_endpoint(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("127.0.0.1:{port}")
    }

    fn start_with(v2: bool) -> EtcdServer {
        let mut s = Self::new_stopped(v2);
        s.spawn();
        s
    }

    fn new_stopped(v2: bool) -> EtcdServer {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "connpool-etcd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create etcd temp dir");
        EtcdServer {
            client_port: free_port(),
            peer_port: free_port(),
            dir,
            v2,
            extra: Vec::new(),
            tls_port: None,
            child: None,
        }
    }

    /// `127.0.0.1:PORT`, the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let mut client = format!("http://127.0.0.1:{}", self.client_port);
        if let Some(port) = self.tls_port {
            client = format!("https://127.0.0.1:{port},{client}");
        }
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(BINARY);
        cmd.arg("--name")
            .arg("connpool-test")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("connpool-test={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--log-outputs")
            .arg("stderr")
            .arg(format!("--enable-v2={}", self.v2))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir));
        if cfg!(not(any(target_arch = "x86_64", target_arch = "aarch64"))) {
            cmd.env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`{BINARY}` not found on PATH: the etcd tests need etcd 3.4 \
                 (Debian/Ubuntu: `apt-get install etcd-server`)"
            ),
            Err(e) => panic!("cannot start `{BINARY}`: {e}"),
        };
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "etcd exited early ({status}); its log:\n{}",
                        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
                    );
                }
            }
            if let Ok((200, body)) = http(self.client_port, "GET", "/health", None) {
                if body.contains("true") {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "etcd did not answer on {} within 30 s; its log:\n{}",
                    self.endpoint(),
                    std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: the process dies at once, its sockets close.
    pub fn kill(&mut self) {
        super::kill_child(&mut self.child);
    }

    /// SIGTERM, then wait for the process to exit (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process freezes; its sockets stay open and silent.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
        }
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
    }

    /// Starts it again on the same ports and data dir (after `kill` or `stop`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// v2 API: sets `key` (e.g. `/jodis/demo/proxy-1`) to `value`.
    pub fn put_v2(&self, key: &str, value: &str) {
        self.put_v2_ttl(key, value, None)
    }

    /// v2 API: sets `key` to `value`, expiring after `ttl` seconds if given (as codis-proxy
    /// registers itself).
    pub fn put_v2_ttl(&self, key: &str, value: &str, ttl: Option<u64>) {
        self.put_v2_with(key, value, ttl, None)
    }

    /// v2 API, as `root` with `root_password` (once v2 authentication is on): sets `key`.
    pub fn put_v2_as_root(&self, root_password: &str, key: &str, value: &str) {
        self.put_v2_with(key, value, None, Some(("root", root_password)))
    }

    /// v2 API: sets `key` to `value`, with a `ttl` and as `user` (name, password) if given.
    fn put_v2_with(&self, key: &str, value: &str, ttl: Option<u64>, user: Option<(&str, &str)>) {
        let mut body = format!("value={}", form_encode(value));
        if let Some(t) = ttl {
            body.push_str(&format!("&ttl={t}"));
        }
        let form = Some(("application/x-www-form-urlencoded", body.as_str()));
        let (status, text) = http_as(
            self.client_port,
            "PUT",
            &format!("/v2/keys{key}"),
            form,
            user,
        )
        .unwrap_or_else(|e| panic!("v2 PUT {key}: {e}"));
        assert!(
            status == 200 || status == 201,
            "v2 PUT {key}: {status} {text}"
        );
    }

    /// v2 API: turns authentication on with a `root` user, takes every right from the guest
    /// role, and adds `user` (name, password) with read access to `read` (a v2 glob such as
    /// `/jodis/*`).
    pub fn enable_v2_auth(&self, root_password: &str, user: (&str, &str), read: &str) {
        let root = Some(("root", root_password));
        let (name, password) = user;
        let steps = [
            (
                "/v2/auth/users/root".to_owned(),
                format!(r#"{{"user":"root","password":"{root_password}"}}"#),
                None,
            ),
            ("/v2/auth/enable".to_owned(), String::new(), None),
            (
                "/v2/auth/roles/guest".to_owned(),
                r#"{"role":"guest","revoke":{"kv":{"read":["/*"],"write":["/*"]}}}"#.to_owned(),
                root,
            ),
            (
                "/v2/auth/roles/readers".to_owned(),
                format!(
                    r#"{{"role":"readers","permissions":{{"kv":{{"read":["{read}"],"write":[]}}}}}}"#
                ),
                root,
            ),
            (
                format!("/v2/auth/users/{name}"),
                format!(r#"{{"user":"{name}","password":"{password}","roles":["readers"]}}"#),
                root,
            ),
        ];
        for (path, body, auth) in &steps {
            let body = Some(("application/json", body.as_str()));
            let (status, text) = http_as(self.client_port, "PUT", path, body, *auth)
                .unwrap_or_else(|e| panic!("v2 PUT {path}: {e}"));
            assert!(
                status == 200 || status == 201,
                "v2 PUT {path}: {status} {text}"
            );
        }
    }

    /// v2 API: deletes `key`.
    pub fn delete_v2(&self, key: &str) {
        let (status, text) = http(self.client_port, "DELETE", &format!("/v2/keys{key}"), None)
            .unwrap_or_else(|e| panic!("v2 DELETE {key}: {e}"));
        assert!(status == 200, "v2 DELETE {key}: {status} {text}");
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // A frozen process ignores nothing but SIGKILL; thaw it anyway for a clean exit.
            signal(pid, "CONT");
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn log_file(dir: &Path) -> Stdio {
    match std::fs::File::create(dir.join("etcd.log")) {
        Ok(f) => Stdio::from(f),
        Err(_) => Stdio::null(),
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A blocking HTTP/1.0 request to 127.0.0.1:`port`: (status, body).
fn http(port: u16, method: &str, path: &str, form: Option<&str>) -> std::io::Result<(u16, String)> {
    let body = form.map(|f| ("application/x-www-form-urlencoded", f));
    http_as(port, method, path, body, None)
}

/// `http` with a body of any content type, and HTTP Basic credentials if given.
fn http_as(
    port: u16,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    user: Option<(&str, &str)>,
) -> std::io::Result<(u16, String)> {
    use base64::Engine as _;
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some((name, password)) = user {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    if let Some((content_type, body)) = body {
        req.push_str(&format!("Content-Type: {content_type}\r\n"));
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {head:?}")))?;
    Ok((status, body.to_owned()))
}
