//! [`ZooKeeper`]: follows a directory of backend nodes in ZooKeeper (the Codis layouts and a
//! generic one) and publishes its online members.
//!
//! # How it follows the directory
//!
//! `run` connects a `zookeeper-client` session and then, for as long as the pool lives:
//!
//! - lists the directory's children with a one-shot *children* watch (or, while the directory
//!   does not exist, an *exists* watch on it, so its creation is seen: a missing directory is an
//!   empty list);
//! - reads every child's data with a one-shot *data* watch (Codis 2.x flips a proxy's `state`
//!   in place), parsing it with the shared node parser (JSON with `addr`/`state`, or plain
//!   `host:port`); an offline or malformed node is left out (a malformed one with a warning),
//!   the others stay;
//! - when a watch fires, re-reads what it covers and re-arms that watch *in the same call*
//!   (ZooKeeper watches are one-shot), then publishes the complete list if it changed;
//! - re-reads everything after every reconnect (watches re-sent by the client do not replay
//!   every change made while it was disconnected) and every `resync_interval` as a safety net;
//!   a change that the full pass finds under a watch believed armed means that watch was lost,
//!   so it is re-armed then and there;
//! - publishes what it could read: a child whose data cannot be read for the moment keeps its
//!   last known state (and everything is read again after a backoff); while the listing
//!   itself fails, nothing is published;
//! - when the session ends (expiry is terminal in `zookeeper-client`), reports it, builds a new
//!   client, re-reads everything and re-arms every watch;
//! - while ZooKeeper is unreachable, publishes nothing (the pool keeps the last list) and
//!   retries with a capped, jittered exponential backoff.
//!
//! Every failure is reported through [`Updates::report_error`] (counted in
//! `Stats::discovery_errors`, fired as `Event::DiscoveryFailed`); nothing is printed. Each
//! `ZooKeeper` value owns its sessions and caches: pools never share discovery state.
//!
//! With feature `zookeeper-tls`, [`ZooKeeper::tls`] makes every session speak TLS to the
//! servers' `secureClientPort` (zookeeper-client's rustls), verifying the servers against the
//! CA given and, with [`ZooKeeper::tls_identity`], presenting a client certificate.
//!
//! One-shot watches are used rather than a persistent recursive watch: `zookeeper-client`
//! 0.11 re-sends only the one-shot kinds after a reconnect (its `SetWatches` request carries the
//! data, exists and child lists), and a persistent watch misses changes made while the client
//! was disconnected anyway.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use zookeeper_client as zk;

use super::node::{parse_node, NodeData};
use super::{Discovery, Updates};
use crate::backends::Backend;
use crate::backoff::BackoffPolicy;
use crate::config::MAX_DURATION;
use crate::error::DiscoveryError;
use crate::sync::deadline_after;

/// Default requested session timeout (the server clamps it to `[2, 20] × tickTime`).
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on establishing one session.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default period of the full re-read that backs up the watches.
const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Reconnect backoff: from this, doubling, up to `max_reconnect_backoff`, jittered 50–100 %.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Default cap of the reconnect backoff.
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(3);
/// A session that lasted this long resets the reconnect backoff; one that ends sooner (a
/// server that accepts sessions and then drops them at once) backs off further, as a failed
/// connect does.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);
/// Shortest accepted resync interval (a zero one would spin).
const MIN_RESYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Longest accepted session timeout: `zookeeper-client` sends it as an `i32` of milliseconds
/// (`as i32`, so a longer one would wrap) and scales it by 7/5; about 24.8 days. The server
/// negotiates it down to its `maxSessionTimeout` (default 20 × tickTime) anyway.
const MAX_SESSION_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
/// First delay of the re-read after a failed read (then doubling, up to `max_backoff`).
const READ_RETRY_BASE: Duration = Duration::from_millis(200);

/// Which well-known layout a [`ZooKeeper`] follows (for logs and `Debug`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Codis3,
    Codis2,
    Directory,
}

/// Service discovery through a ZooKeeper directory whose children are backends.
///
/// Each child's data is JSON with the address under `addr`, `proxy_addr` or `proto_addr` (a
/// `state` other than `"online"`, or `"online": false`, means offline; an optional `weight`
/// sets [`Backend::with_weight`](crate::Backend::with_weight)) or plain `host:port`.
/// The constructors connect nothing; the pool's discovery task does, in [`Discovery::run`].
///
/// It watches the directory's children and every child's data (one-shot watches, re-armed in
/// the same call that re-reads), so a proxy that joins, is deleted, or flips its `state` in
/// place shows up at once. It re-reads everything after each reconnect and every
/// `resync_interval` (re-arming any watch found lost); after a session expiry it builds a new
/// session and re-arms every watch; while ZooKeeper is unreachable the pool keeps the last list
/// and reconnects back off. Errors count in `Stats::discovery_errors` and fire
/// `Event::DiscoveryFailed`; a malformed or unreadable node is skipped with
/// `Event::DiscoveryWarning` (the others stay); a missing directory is an empty list (its
/// creation is watched for). Each value keeps its own session and state: pools never share.
///
/// Defaults: session timeout 10 s (requested; the server clamps it to `[2, 20] × tickTime`),
/// connect timeout 5 s per attempt, a full re-read every 30 s besides the watches, reconnect
/// backoff from 100 ms doubling to 3 s (jittered).
///
/// # Example
///
/// ```no_run
/// # #[derive(Debug)] struct E; impl std::fmt::Display for E { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("e") } } impl std::error::Error for E {}
/// # struct Tcp;
/// # impl connpool::Manager for Tcp {
/// #     type Connection = ();
/// #     type Error = E;
/// #     async fn connect(&self, _: &connpool::Backend) -> Result<(), E> { Ok(()) }
/// #     async fn check(&self, _: &mut ()) -> Result<(), E> { Ok(()) }
/// # }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use connpool::{discovery::ZooKeeper, Pool};
///
/// // Codis 3.x proxies of product "demo", registered in the ZooKeeper at 10.0.0.1:2181.
/// let zk = ZooKeeper::codis3("10.0.0.1:2181", "demo").resync_interval(Duration::from_secs(10));
/// let pool = Pool::builder(Tcp).discovery(zk).build()?;
/// let conn = pool.get().await?; // waits for the first list
/// println!("dialed {}", conn.backend().addr());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ZooKeeper {
    connect: String,
    path: String,
    layout: Layout,
    session_timeout: Duration,
    connect_timeout: Duration,
    resync_interval: Duration,
    max_backoff: Duration,
    /// `digest` credentials, `user:password` (never printed).
    digest: Option<Digest>,
    /// [`ZooKeeper::tls`] and [`ZooKeeper::tls_identity`] (a key is never printed).
    #[cfg(feature = "zookeeper-tls")]
    tls: Option<TlsPem>,
}

/// The PEM given to [`ZooKeeper::tls`] and [`ZooKeeper::tls_identity`].
#[cfg(feature = "zookeeper-tls")]
#[derive(Clone, Default)]
struct TlsPem {
    /// The certificates that may sign the servers' certificates.
    ca: Vec<u8>,
    /// The client certificate chain and its private key.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Checked TLS settings, ready for every session's connector.
#[cfg(feature = "zookeeper-tls")]
type Tls = zk::TlsOptions;

/// Without the `zookeeper-tls` feature there is no TLS: nothing of this type exists.
#[cfg(not(feature = "zookeeper-tls"))]
enum Tls {}

#[cfg(feature = "zookeeper-tls")]
impl TlsPem {
    /// Parses and checks the PEM once, so that a bad certificate or key is reported by what it
    /// is, before anything is connected.
    fn prepare(&self) -> Result<Tls, String> {
        let text = |what: &str, pem: &[u8]| {
            std::str::from_utf8(pem)
                .map(str::to_owned)
                .map_err(|_| format!("tls: {what} PEM is not UTF-8 text"))
        };
        if self.ca.is_empty() {
            return Err("tls: no CA certificates given (ZooKeeper::tls)".into());
        }
        let mut options = zk::TlsOptions::new()
            .with_pem_ca(&text("the CA certificates'", &self.ca)?)
            .map_err(|e| format!("tls: the CA certificates: {e}"))?;
        if let Some((cert, key)) = &self.identity {
            let cert = text("the client certificate's", cert)?;
            if !cert.contains("-----BEGIN CERTIFICATE-----") {
                return Err("tls: no certificate in the client certificate's PEM".into());
            }
            options = options
                .with_pem_identity(&cert, &text("the client key's", key)?)
                .map_err(|e| format!("tls: the client certificate and key: {e}"))?;
        }
        // zookeeper-client builds its rustls configuration from the process's default crypto
        // provider. rustls picks one itself only when exactly one is compiled in, and
        // zookeeper-client's rustls brings aws-lc-rs beside the ring of this crate (and of
        // etcd-client's tonic): so ring becomes the default unless the process chose one.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err: another thread installed one meanwhile, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Ok(options)
    }
}

/// ZooKeeper `digest` credentials.
#[derive(Clone)]
struct Digest {
    user: String,
    password: String,
}

impl Digest {
    /// What the `digest` scheme sends: `user:password`, or why the user name cannot be sent.
    fn auth(&self) -> Result<Vec<u8>, String> {
        if self.user.is_empty() {
            return Err("digest: the user name is empty".into());
        }
        if self.user.contains(':') {
            // The server splits `user:password` at its first colon.
            return Err(format!(
                "digest: the user name {:?} contains ':', which the digest scheme cannot carry",
                self.user
            ));
        }
        Ok(format!("{}:{}", self.user, self.password).into_bytes())
    }
}

impl fmt::Debug for ZooKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZooKeeper")
            .field("connect", &self.connect)
            .field("path", &self.path)
            .field("layout", &self.layout)
            .field("session_timeout", &self.session_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("resync_interval", &self.resync_interval)
            .field("max_reconnect_backoff", &self.max_backoff)
            // The user name only: a password has no place in logs.
            .field("digest_user", &self.digest.as_ref().map(|d| &d.user))
            // Whether TLS and a client certificate are set; never a key.
            .field("tls", &self.tls_summary())
            .finish()
    }
}

impl ZooKeeper {
    /// Codis 3.x: the proxies of `product` as they publish themselves for clients, under
    /// `/jodis/<product>` (children `proxy-<token>`, JSON with `addr` and `state`; the
    /// directory Jodis watches). `connect` is `host:port[,host:port...]`, optionally followed
    /// by a chroot (`host:port/chroot`).
    ///
    /// ```
    /// let zk = connpool::discovery::ZooKeeper::codis3("127.0.0.1:2181", "demo");
    /// assert_eq!(zk.path(), "/jodis/demo");
    /// ```
    pub fn codis3(connect: &str, product: &str) -> Self {
        Self::with_layout(connect, &format!("/jodis/{product}"), Layout::Codis3)
    }

    /// Codis 2.x: the proxies of `product` under `/zk/codis/db_<product>/proxy` (JSON
    /// `{"addr": ..., "state": "online"}`, whose state flips in place).
    ///
    /// ```
    /// let zk = connpool::discovery::ZooKeeper::codis2("127.0.0.1:2181", "demo");
    /// assert_eq!(zk.path(), "/zk/codis/db_demo/proxy");
    /// ```
    pub fn codis2(connect: &str, product: &str) -> Self {
        Self::with_layout(
            connect,
            &format!("/zk/codis/db_{product}/proxy"),
            Layout::Codis2,
        )
    }

    /// Any directory whose children hold JSON (`addr`, `proxy_addr` or `proto_addr`, optional
    /// `state`/`online` and `weight`) or plain `host:port`. A missing leading `/` is added
    /// and a trailing one dropped.
    ///
    /// ```
    /// let zk = connpool::discovery::ZooKeeper::directory("127.0.0.1:2181", "/serverlist");
    /// assert_eq!(zk.path(), "/serverlist");
    /// ```
    pub fn directory(connect: &str, path: &str) -> Self {
        Self::with_layout(connect, path, Layout::Directory)
    }

    fn with_layout(connect: &str, path: &str, layout: Layout) -> Self {
        ZooKeeper {
            connect: connect.trim().to_owned(),
            path: normalize_path(path),
            layout,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            max_backoff: DEFAULT_MAX_BACKOFF,
            digest: None,
            #[cfg(feature = "zookeeper-tls")]
            tls: None,
        }
    }

    /// The session timeout to request (default 10 s; the server clamps it to
    /// `[2, 20] × tickTime`). While ZooKeeper is unreachable for longer, the session expires
    /// and a new one is built once it is back.
    ///
    /// At most `i32::MAX` milliseconds (about 24.8 days; a longer one is capped there), the
    /// most the protocol can carry; the server negotiates any request down to its
    /// `maxSessionTimeout` anyway.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let zk = connpool::discovery::ZooKeeper::codis3("127.0.0.1:2181", "demo")
    ///     .session_timeout(Duration::from_secs(30));
    /// ```
    #[must_use]
    pub fn session_timeout(mut self, d: Duration) -> Self {
        // Capped so the client's `as i32` of the milliseconds cannot wrap.
        self.session_timeout = d.min(MAX_SESSION_TIMEOUT);
        self
    }

    /// Bound on establishing one session (default 5 s; at least 1 ms, at most 100 years, a
    /// longer one being capped there); a failed attempt is reported and retried after the
    /// reconnect backoff.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let zk = connpool::discovery::ZooKeeper::codis3("127.0.0.1:2181", "demo")
    ///     .connect_timeout(Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        // Capped so that deadlines computed from it cannot overflow the clock.
        self.connect_timeout = d.clamp(Duration::from_millis(1), MAX_DURATION);
        self
    }

    /// How often the whole directory is re-read besides the watches, as a safety net
    /// (default 30 s; at least 100 ms, at most 100 years: pass `Duration::MAX` for "never",
    /// it is capped there).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let zk = connpool::discovery::ZooKeeper::codis3("127.0.0.1:2181", "demo")
    ///     .resync_interval(Duration::from_secs(10));
    /// ```
    #[must_use]
    pub fn resync_interval(mut self, d: Duration) -> Self {
        // Capped so that `now + resync_interval` cannot overflow the clock.
        self.resync_interval = d.clamp(MIN_RESYNC_INTERVAL, MAX_DURATION);
        self
    }

    /// Cap of the reconnect backoff (default 3 s; at least 100 ms, at most 100 years, a
    /// longer one being capped there). Reconnects start after 100 ms and double up to this
    /// cap, each delay jittered down by up to half; a session that lasted 10 s resets them
    /// (one that ends sooner counts as another failure, so a server that drops every new
    /// session at once is not reconnected to ten times a second). Failed reads are retried
    /// with the same cap, from 200 ms.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let zk = connpool::discovery::ZooKeeper::codis3("127.0.0.1:2181", "demo")
    ///     .max_reconnect_backoff(Duration::from_secs(10));
    /// ```
    #[must_use]
    pub fn max_reconnect_backoff(mut self, d: Duration) -> Self {
        // Capped so that `now + delay` cannot overflow the clock.
        self.max_backoff = d.clamp(BACKOFF_BASE, MAX_DURATION);
        self
    }

    /// Authenticates every session with ZooKeeper's `digest` scheme (what `addauth digest
    /// user:password` does in `zkCli.sh`, and what Codis' `coordinator_auth = "user:password"`
    /// sets up), so that a directory and nodes whose ACLs allow only that identity can be read.
    /// The credentials are sent again on every new session; [`fmt::Debug`] shows the user
    /// name, never the password.
    ///
    /// ZooKeeper does not reject a wrong password when it is sent: reads of what the ACLs
    /// protect fail instead, and are reported as discovery errors (`NoAuth`, "not authorized")
    /// while the last list stays in force. A user name that is empty or contains `:` (the
    /// scheme splits `user:password` at its first colon; the password may contain one) is
    /// reported by [`Discovery::run`] as a discovery error naming it, and nothing is connected.
    ///
    /// ```
    /// let zk = connpool::discovery::ZooKeeper::codis3("127.0.0.1:2181", "demo")
    ///     .digest("codis", "s3cret");
    /// assert!(!format!("{zk:?}").contains("s3cret"));
    /// ```
    #[must_use]
    pub fn digest(mut self, user: &str, password: &str) -> Self {
        self.digest = Some(Digest {
            user: user.to_owned(),
            password: password.to_owned(),
        });
        self
    }

    /// Speaks TLS to every server (their `secureClientPort`; ZooKeeper serves it with
    /// `serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory`), trusting the
    /// servers' certificates that the certificates in `ca_pem` (PEM, one or more) sign. Each
    /// server's certificate must name the host it is reached by (an IP address as an IP SAN).
    /// Servers are then `host:port` or `tcp+tls://host:port` in the connect string. Feature
    /// `zookeeper-tls` (rustls; ring is made the process's default crypto provider if it has
    /// none, see `Cargo.toml`).
    ///
    /// Bad PEM, or a `tcp://` server in the connect string (plain TCP) with TLS set, or a
    /// `tcp+tls://` one without it, is reported by [`Discovery::run`] as a discovery error
    /// saying which, and nothing is connected; a server whose certificate does not verify, or
    /// that refuses ours, fails the session, reported as a discovery error and retried.
    ///
    /// ```no_run
    /// let ca = std::fs::read("/etc/zookeeper/ca.pem").unwrap();
    /// let zk = connpool::discovery::ZooKeeper::codis3("10.0.0.1:2182", "demo").tls(&ca);
    /// ```
    #[cfg(feature = "zookeeper-tls")]
    #[must_use]
    pub fn tls(mut self, ca_pem: &[u8]) -> Self {
        self.tls.get_or_insert_with(TlsPem::default).ca = ca_pem.to_vec();
        self
    }

    /// With [`tls`](Self::tls): presents this client certificate chain and private key (PEM;
    /// PKCS#8, PKCS#1 or SEC1), for servers with `ssl.clientAuth=need` (or `want`) that
    /// authenticate clients by certificate (`authProvider.x509`). The key is never printed
    /// ([`fmt::Debug`] says whether one is set).
    ///
    /// ```no_run
    /// let read = |p| std::fs::read(p).unwrap();
    /// let zk = connpool::discovery::ZooKeeper::codis3("10.0.0.1:2182", "demo")
    ///     .tls(&read("/etc/zookeeper/ca.pem"))
    ///     .tls_identity(&read("/etc/zookeeper/client.pem"), &read("/etc/zookeeper/client-key.pem"));
    /// ```
    #[cfg(feature = "zookeeper-tls")]
    #[must_use]
    pub fn tls_identity(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        self.tls.get_or_insert_with(TlsPem::default).identity =
            Some((cert_pem.to_vec(), key_pem.to_vec()));
        self
    }

    /// For `Debug`: the CA PEM's size and whether a client certificate is set, if TLS is.
    fn tls_summary(&self) -> Option<(usize, bool)> {
        #[cfg(feature = "zookeeper-tls")]
        {
            self.tls
                .as_ref()
                .map(|t| (t.ca.len(), t.identity.is_some()))
        }
        #[cfg(not(feature = "zookeeper-tls"))]
        {
            None
        }
    }

    /// What every session of a run uses, checked once before any is opened: the path, the
    /// digest's bytes (if credentials are set) and the TLS settings (if TLS is).
    fn session_settings(&self) -> Result<(Option<Vec<u8>>, Option<Tls>), String> {
        check_path(&self.path)?;
        let digest = self.digest.as_ref().map(Digest::auth).transpose()?;
        Ok((digest, self.prepare_tls()?))
    }

    /// The checked TLS settings, if TLS is set; then whether the connect string agrees.
    fn prepare_tls(&self) -> Result<Option<Tls>, String> {
        #[cfg(feature = "zookeeper-tls")]
        let tls = self.tls.as_ref().map(TlsPem::prepare).transpose()?;
        #[cfg(not(feature = "zookeeper-tls"))]
        let tls = None;
        check_schemes(&self.connect, tls.is_some())?;
        Ok(tls)
    }

    /// The directory followed.
    ///
    /// ```
    /// let zk = connpool::discovery::ZooKeeper::codis3("127.0.0.1:2181", "demo");
    /// assert_eq!(zk.path(), "/jodis/demo");
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The connect string (`host:port[,host:port...][/chroot]`).
    ///
    /// ```
    /// let zk = connpool::discovery::ZooKeeper::codis3("127.0.0.1:2181", "demo");
    /// assert_eq!(zk.connect_string(), "127.0.0.1:2181");
    /// ```
    pub fn connect_string(&self) -> &str {
        &self.connect
    }

    /// Opens one session, bounded by `connect_timeout`, authenticated with `digest`
    /// (`user:password`) if given, through TLS if `tls` is given.
    async fn open(&self, digest: Option<&[u8]>, tls: Option<&Tls>) -> Result<zk::Client, String> {
        let mut connector = zk::Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_fail_eagerly();
        if let Some(auth) = digest {
            connector = connector.with_auth("digest", auth);
        }
        let connecting = async {
            match tls {
                None => connector.connect(&self.connect).await,
                #[cfg(feature = "zookeeper-tls")]
                Some(options) => {
                    // Servers without a scheme are reached through TLS too.
                    connector
                        .with_tls(options.clone())
                        .secure_connect(&self.connect)
                        .await
                }
                #[cfg(not(feature = "zookeeper-tls"))]
                Some(never) => match *never {},
            }
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => {
                // zookeeper-client reports a failed handshake as no host being available, and
                // keeps the reason to itself: say where to look.
                let hint = if tls.is_some() && matches!(e, zk::Error::NoHosts) {
                    " (over TLS: no server completed the handshake; check that their \
                     certificates are signed by the CA given and name the host they are \
                     reached by, that a client certificate is given if they ask for one, and \
                     that the port is their secureClientPort)"
                } else {
                    ""
                };
                Err(format!(
                    "zookeeper {}: cannot open a session: {e}{hint}",
                    self.connect
                ))
            }
            Err(_) => Err(format!(
                "zookeeper {}: no session within {:?}",
                self.connect, self.connect_timeout
            )),
        }
    }

    /// Follows the directory through one session until it ends or the pool closes.
    async fn follow(
        &self,
        client: &zk::Client,
        updates: &Updates,
        cache: &mut Cache,
        published: &mut Option<Vec<Backend>>,
    ) -> SessionEnd {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Target, zk::WatchedEvent)>();
        let mut watches = Watches {
            tasks: JoinSet::new(),
            tx,
            children: false,
            exists: false,
            data: HashSet::new(),
        };
        let mut states = client.state_watcher();
        let mut connected = true;
        let mut work = Work::All;
        let mut next_resync = deadline_after(Instant::now(), self.resync_interval);
        // When to re-read after failed reads, and how many failed in a row.
        let mut retry: Option<(Instant, u64)> = None;
        let retry_backoff = BackoffPolicy {
            base: READ_RETRY_BASE,
            max: self.max_backoff,
        };

        loop {
            if connected && !work.is_none() {
                let pending = std::mem::take(&mut work);
                // A read outlasting the session timeout means the client is stuck: end the
                // session (a new client re-reads everything) rather than wait on it.
                let bound = self.session_timeout.max(Duration::from_secs(5));
                let read = self.read(client, &pending, cache, &mut watches, updates);
                let ok = match tokio::time::timeout(bound, read).await {
                    Err(_) => {
                        return SessionEnd::Failed(format!(
                            "zookeeper {}: reading {} took over {bound:?}",
                            self.connect, self.path
                        ))
                    }
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(Failure::Ended(end))) => return end,
                    Ok(Err(failure)) => Err(failure),
                };
                if let Err(Failure::Error(message) | Failure::Partial(message)) = &ok {
                    tracing::warn!(path = %self.path, "{message}");
                    updates.report_error(message);
                }
                // Only a full read that succeeded settles a pending retry: a later small read
                // (one child's data, on its watch) does not re-read the listing or re-arm the
                // watches the failed read left unarmed.
                if ok.is_ok() && matches!(pending, Work::All) {
                    retry = None;
                    next_resync = deadline_after(Instant::now(), self.resync_interval);
                }
                // Publish unless the listing itself failed: after a partial read, a node that
                // could not be read keeps its last known state (a new one waits for the retry).
                if publishable(&ok, published.is_none()) {
                    let list = cache.online();
                    if published.as_ref() != Some(&list) {
                        tracing::info!(
                            path = %self.path,
                            backends = ?list.iter().map(Backend::addr).collect::<Vec<_>>(),
                            "zookeeper: publishing the backend list"
                        );
                        updates.publish(list.iter().cloned());
                        *published = Some(list);
                    }
                }
                if ok.is_err() {
                    // Read again later (everything: the cache may be partly stale).
                    let failed = retry.map_or(1, |(_, n)| n.saturating_add(1));
                    let at = deadline_after(Instant::now(), retry_backoff.delay(failed));
                    retry = Some((at, failed));
                }
            }

            let retry_at = retry.map(|(at, _)| at);
            tokio::select! {
                () = updates.closed() => return SessionEnd::PoolClosed,
                state = states.changed() => match state {
                    zk::SessionState::Disconnected => {
                        connected = false;
                        let message = format!(
                            "zookeeper {}: connection lost; keeping the last list while reconnecting",
                            self.connect
                        );
                        tracing::warn!("{message}");
                        updates.report_error(&message);
                    }
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                        tracing::info!(connect = %self.connect, "zookeeper: reconnected; re-reading {}", self.path);
                        connected = true;
                        work = Work::All;
                    }
                    terminal => return SessionEnd::Terminal(terminal),
                },
                Some((target, event)) = rx.recv() => {
                    if let Some(end) = watches.fired(target, &event, &mut work) {
                        return end;
                    }
                    // Coalesce whatever else already fired.
                    while let Ok((target, event)) = rx.try_recv() {
                        if let Some(end) = watches.fired(target, &event, &mut work) {
                            return end;
                        }
                    }
                }
                () = tokio::time::sleep_until(next_resync) => {
                    tracing::debug!(path = %self.path, "zookeeper: periodic resync");
                    next_resync = deadline_after(Instant::now(), self.resync_interval);
                    work = Work::All;
                }
                () = sleep_until_opt(retry_at), if retry_at.is_some() => {
                    // Not read yet if disconnected: try again after the same delay.
                    retry = retry.map(|(_, n)| {
                        (deadline_after(Instant::now(), retry_backoff.delay(n)), n)
                    });
                    work = Work::All;
                }
            }
        }
    }

    /// Performs `work`: re-reads (and re-arms) the directory and/or some children.
    async fn read(
        &self,
        client: &zk::Client,
        work: &Work,
        cache: &mut Cache,
        watches: &mut Watches,
        updates: &Updates,
    ) -> Result<(), Failure> {
        let (names, list_dir) = match work {
            Work::None => return Ok(()),
            Work::All => (None, true),
            Work::Some { children, data } => (Some(data), *children),
        };
        let mut to_read: Vec<String> = Vec::new();
        if list_dir {
            let was_armed = watches.children;
            let mut listing = self.list(client, watches).await?;
            // The names alone would miss a child deleted and created again under its name
            // (a restarted proxy with a stable id): `cversion` moved all the same.
            let changed =
                !same_names(&listing.children, &cache.nodes) || listing.cversion != cache.cversion;
            if names.is_none() && was_armed && changed {
                // A full pass found a change the armed children watch never reported: that
                // watch is evidently lost (or its event is still in flight): arm another.
                tracing::warn!(path = %self.path, "zookeeper: resync found a children change no watch reported; re-arming");
                watches.children = false;
                listing = self.list(client, watches).await?;
            }
            cache.cversion = listing.cversion;
            let children = listing.children;
            let listed: HashSet<&str> = children.iter().map(String::as_str).collect();
            cache.nodes.retain(|name, _| listed.contains(name.as_str()));
            match names {
                // A full pass: every child.
                None => to_read = children.clone(),
                // Children changed: the new ones, plus any data that also fired.
                Some(data) => {
                    to_read.extend(
                        children
                            .iter()
                            .filter(|c| !cache.nodes.contains_key(*c) || data.contains(*c))
                            .cloned(),
                    );
                }
            }
        } else if let Some(data) = names {
            to_read.extend(
                data.iter()
                    .filter(|c| cache.nodes.contains_key(*c))
                    .cloned(),
            );
        }
        if to_read.is_empty() {
            return Ok(());
        }
        let (first_error, missed) = self
            .read_batch(client, &to_read, cache, watches, updates)
            .await?;
        let mut first_error = first_error;
        if !missed.is_empty() {
            // A plain re-read found data no armed watch reported a change of: those watches
            // are evidently lost (or their events still in flight): arm new ones.
            tracing::warn!(path = %self.path, nodes = ?missed, "zookeeper: resync found data changes no watch reported; re-arming");
            for name in &missed {
                watches.data.remove(name);
            }
            let (again, _) = self
                .read_batch(client, &missed, cache, watches, updates)
                .await?;
            first_error = first_error.or(again);
        }
        match first_error {
            None => Ok(()),
            Some(message) => Err(Failure::Partial(message)),
        }
    }

    /// Reads the data of `names` (arming a data watch on each that has none) into the cache.
    /// Returns the first error, if any, and the children whose data changed although their
    /// watch was armed.
    async fn read_batch(
        &self,
        client: &zk::Client,
        names: &[String],
        cache: &mut Cache,
        watches: &mut Watches,
        updates: &Updates,
    ) -> Result<(Option<String>, Vec<String>), Failure> {
        // Send every request first (the client sends at call time), then collect: one round
        // trip for the whole batch.
        let mut pending = Vec::with_capacity(names.len());
        for name in names {
            let path = child_path(&self.path, name);
            let fut = if watches.data.contains(name) {
                Read::Plain(client.get_data(&path))
            } else {
                Read::Watch(client.get_and_watch_data(&path))
            };
            pending.push((name, fut));
        }
        let mut first_error: Option<String> = None;
        let mut missed = Vec::new();
        for (name, fut) in pending {
            let result = match fut {
                Read::Plain(f) => f.await.map(|(d, s)| (d, s, None)),
                Read::Watch(f) => f.await.map(|(d, s, w)| (d, s, Some(w))),
            };
            match result {
                Ok((data, stat, watcher)) => {
                    match watcher {
                        Some(w) => watches.arm(Target::Data(name.clone()), w),
                        None => {
                            if cache.nodes.get(name).is_some_and(|n| n.mzxid != stat.mzxid) {
                                missed.push(name.clone());
                            }
                        }
                    }
                    cache.update(name, &data, stat.mzxid, updates, &self.path);
                }
                Err(zk::Error::NoNode) => {
                    // Deleted since the listing; the children watch reports it too.
                    cache.nodes.remove(name);
                }
                Err(zk::Error::NoAuth) => {
                    // A node this client may not read: skipped like a malformed one.
                    cache.unreadable(name, "not authorized to read it", updates, &self.path);
                }
                Err(e) => {
                    if let Some(end) = terminal_error(&e) {
                        return Err(Failure::Ended(end));
                    }
                    first_error.get_or_insert_with(|| {
                        format!(
                            "zookeeper {}: reading {}: {e}",
                            self.connect,
                            child_path(&self.path, name)
                        )
                    });
                }
            }
        }
        Ok((first_error, missed))
    }

    /// Lists the directory, arming the children watch (or, while it is missing, the exists
    /// watch) unless one is already outstanding. A missing directory is an empty list.
    async fn list(&self, client: &zk::Client, watches: &mut Watches) -> Result<Listing, Failure> {
        let fail = |e: zk::Error| match terminal_error(&e) {
            Some(end) => Failure::Ended(end),
            None => Failure::Error(format!(
                "zookeeper {}: listing {}: {e}",
                self.connect, self.path
            )),
        };
        // Twice at most: the directory may be created between a failed listing and the
        // exists watch.
        for _ in 0..2 {
            let listed = if watches.children {
                client.get_children(&self.path).await
            } else {
                match client.get_and_watch_children(&self.path).await {
                    Ok((children, stat, watcher)) => {
                        watches.arm(Target::Children, watcher);
                        Ok((children, stat))
                    }
                    Err(e) => Err(e),
                }
            };
            match listed {
                Ok((children, stat)) => {
                    return Ok(Listing {
                        children,
                        cversion: Some(stat.cversion),
                    })
                }
                Err(zk::Error::NoNode) => {
                    if watches.exists {
                        return Ok(Listing::missing());
                    }
                    let (stat, watcher) = client
                        .check_and_watch_stat(&self.path)
                        .await
                        .map_err(fail)?;
                    watches.arm(Target::Exists, watcher);
                    if stat.is_none() {
                        tracing::debug!(path = %self.path, "zookeeper: directory missing; watching for it");
                        return Ok(Listing::missing());
                    }
                }
                Err(e) => return Err(fail(e)),
            }
        }
        Ok(Listing::missing())
    }
}

/// The directory's children, and its `cversion` (which every create and delete of a child
/// moves, even when a child is deleted and created again under its old name); `None` while
/// the directory does not exist.
struct Listing {
    children: Vec<String>,
    cversion: Option<i32>,
}

impl Listing {
    fn missing() -> Self {
        Listing {
            children: Vec::new(),
            cversion: None,
        }
    }
}

impl Discovery for ZooKeeper {
    async fn run(&self, updates: Updates) -> Result<(), DiscoveryError> {
        let (digest, tls) = match self.session_settings() {
            Ok(settings) => settings,
            Err(e) => return Err(DiscoveryError::new(format!("zookeeper: {e}"))),
        };
        let mut cache = Cache::default();
        let mut published: Option<Vec<Backend>> = None;
        let mut failures: u32 = 0;
        loop {
            if updates.is_closed() {
                return Ok(());
            }
            let opened = tokio::select! {
                r = self.open(digest.as_deref(), tls.as_ref()) => r,
                () = updates.closed() => return Ok(()),
            };
            match opened {
                Ok(client) => {
                    let began = Instant::now();
                    tracing::info!(
                        connect = %self.connect,
                        session = %client.session_id(),
                        timeout = ?client.session_timeout(),
                        "zookeeper: session established; following {}", self.path
                    );
                    let end = self
                        .follow(&client, &updates, &mut cache, &mut published)
                        .await;
                    drop(client);
                    if began.elapsed() >= HEALTHY_SESSION {
                        failures = 0;
                    }
                    let message = match end {
                        SessionEnd::PoolClosed => return Ok(()),
                        SessionEnd::Terminal(zk::SessionState::Expired) => format!(
                            "zookeeper {}: session expired; reconnecting with a new session",
                            self.connect
                        ),
                        SessionEnd::Failed(why) => {
                            format!("{why}; reconnecting with a new session")
                        }
                        SessionEnd::Terminal(state) => format!(
                            "zookeeper {}: session ended ({state}); reconnecting with a new session",
                            self.connect
                        ),
                    };
                    tracing::warn!("{message}");
                    updates.report_error(&message);
                }
                Err(message) => {
                    tracing::warn!("{message}");
                    updates.report_error(&message);
                }
            }
            // `failures` counts the failures before this one: the first waits `BACKOFF_BASE`.
            let delay = BackoffPolicy {
                base: BACKOFF_BASE,
                max: self.max_backoff,
            }
            .delay(u64::from(failures) + 1);
            failures = failures.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = updates.closed() => return Ok(()),
            }
        }
    }
}

/// Why `follow` returned.
#[derive(Debug)]
enum SessionEnd {
    PoolClosed,
    Terminal(zk::SessionState),
    /// The session is unusable for another reason (a read stuck past the session timeout).
    Failed(String),
}

/// A failed read: an error the session survives, or the end of the session.
enum Failure {
    /// Nothing usable was read (the listing failed).
    Error(String),
    /// The listing was read but some children's data was not.
    Partial(String),
    /// The session ended.
    Ended(SessionEnd),
}

fn terminal_error(e: &zk::Error) -> Option<SessionEnd> {
    match e {
        zk::Error::SessionExpired | zk::Error::SessionMoved => {
            Some(SessionEnd::Terminal(zk::SessionState::Expired))
        }
        zk::Error::ClientClosed => Some(SessionEnd::Terminal(zk::SessionState::Closed)),
        zk::Error::AuthFailed => Some(SessionEnd::Terminal(zk::SessionState::AuthFailed)),
        _ => None,
    }
}

/// What a watch covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The directory's children.
    Children,
    /// The directory's existence.
    Exists,
    /// One child's data.
    Data(String),
}

/// What needs re-reading.
#[derive(Debug, Default, PartialEq, Eq)]
enum Work {
    #[default]
    None,
    /// Everything.
    All,
    /// The listing (if `children`) and the data of some children.
    Some {
        children: bool,
        data: HashSet<String>,
    },
}

impl Work {
    fn is_none(&self) -> bool {
        matches!(self, Work::None)
    }

    fn add(&mut self, target: Target) {
        match self {
            Work::All => {}
            Work::None => {
                *self = Work::Some {
                    children: false,
                    data: HashSet::new(),
                };
                self.add(target);
            }
            Work::Some { children, data } => match target {
                Target::Children | Target::Exists => *children = true,
                Target::Data(name) => {
                    data.insert(name);
                }
            },
        }
    }
}

/// The watches outstanding in one session: one task per watch, each sending its event back.
/// Never more than one per target: a watch is re-armed only after it fired.
struct Watches {
    tasks: JoinSet<()>,
    tx: mpsc::UnboundedSender<(Target, zk::WatchedEvent)>,
    children: bool,
    exists: bool,
    data: HashSet<String>,
}

impl Watches {
    fn arm(&mut self, target: Target, watcher: zk::OneshotWatcher) {
        match &target {
            Target::Children => self.children = true,
            Target::Exists => self.exists = true,
            Target::Data(name) => {
                self.data.insert(name.clone());
            }
        }
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            let event = watcher.changed().await;
            let _ = tx.send((target, event));
        });
        // Reap finished tasks so the set does not grow with every fired watch.
        while self.tasks.try_join_next().is_some() {}
    }

    /// A watch fired: mark it spent and note what to re-read. A session event on a one-shot
    /// watch means the session ended.
    fn fired(
        &mut self,
        target: Target,
        event: &zk::WatchedEvent,
        work: &mut Work,
    ) -> Option<SessionEnd> {
        match &target {
            Target::Children => self.children = false,
            Target::Exists => self.exists = false,
            Target::Data(name) => {
                self.data.remove(name);
            }
        }
        if event.event_type == zk::EventType::Session {
            if event.session_state.is_terminated() {
                return Some(SessionEnd::Terminal(event.session_state));
            }
            *work = Work::All;
            return None;
        }
        tracing::debug!(?target, event = ?event.event_type, path = %event.path, "zookeeper: watch fired");
        work.add(target);
        None
    }
}

/// What is known of each child, across sessions of one run.
#[derive(Debug, Default)]
struct Cache {
    nodes: BTreeMap<String, Node>,
    /// The directory's `cversion` at its last listing (see [`Listing`]).
    cversion: Option<i32>,
}

#[derive(Debug)]
struct Node {
    /// The zxid of the data's last modification (a change no watch reported shows here).
    mzxid: i64,
    /// The data as last read: re-parsed (and re-warned) only when it or `mzxid` changes. Not
    /// `mzxid` alone: the cache outlives sessions, and an ensemble wiped and seeded again by
    /// the same script numbers its transactions the same way, so a node's new data can come
    /// with its old `mzxid`.
    data: Vec<u8>,
    parsed: Result<NodeData, String>,
}

impl Cache {
    /// Records a child's data, warning once per version if it is malformed.
    fn update(&mut self, name: &str, data: &[u8], mzxid: i64, updates: &Updates, dir: &str) {
        if let Some(node) = self.nodes.get(name) {
            if node.mzxid == mzxid && node.data == data {
                return;
            }
        }
        let parsed = parse_node(name, data);
        if let Err(why) = &parsed {
            let message = format!("zookeeper {dir}: skipping {why}");
            tracing::warn!("{message}");
            updates.warn(&message);
        }
        self.nodes.insert(
            name.to_owned(),
            Node {
                mzxid,
                data: data.to_vec(),
                parsed,
            },
        );
    }

    /// Records a child whose data cannot be read (skipped; warned once until it changes).
    fn unreadable(&mut self, name: &str, why: &str, updates: &Updates, dir: &str) {
        let why = format!("node {name}: {why}");
        if let Some(Node {
            parsed: Err(old), ..
        }) = self.nodes.get(name)
        {
            if *old == why {
                return;
            }
        }
        let message = format!("zookeeper {dir}: skipping {why}");
        tracing::warn!("{message}");
        updates.warn(&message);
        // No real zxid is that low: the next readable version is parsed.
        self.nodes.insert(
            name.to_owned(),
            Node {
                mzxid: i64::MIN,
                data: Vec::new(),
                parsed: Err(why),
            },
        );
    }

    /// The online backends, in child-name order, each address once.
    fn online(&self) -> Vec<Backend> {
        online_list(self.nodes.values().map(|n| &n.parsed))
    }
}

/// Whether a read's outcome is published: a full success always; a partial one (some
/// children could not be read, and keep their last known state) only once a list has been
/// published. A first list missing the children it could not read, possibly empty, would make
/// the gets waiting for it fail with `NoBackends`; they wait for the retry instead.
fn publishable(ok: &Result<(), Failure>, first: bool) -> bool {
    match ok {
        Ok(()) => true,
        Err(Failure::Partial(_)) => !first,
        Err(_) => false,
    }
}

/// Whether `listed` names exactly the cached children.
fn same_names(listed: &[String], cached: &BTreeMap<String, Node>) -> bool {
    listed.len() == cached.len() && listed.iter().all(|n| cached.contains_key(n))
}

/// The online backends among parsed nodes, each address once (first wins).
fn online_list<'a>(parsed: impl Iterator<Item = &'a Result<NodeData, String>>) -> Vec<Backend> {
    let mut seen = HashSet::new();
    parsed
        .filter_map(|p| match p {
            Ok(NodeData::Online(b)) => Some(b),
            _ => None,
        })
        .filter(|b| seen.insert(b.addr().to_owned()))
        .cloned()
        .collect()
}

/// With TLS set every server is reached through TLS, without it through plain TCP: a server
/// whose scheme in the connect string says otherwise (`tcp://` with TLS set, `tcp+tls://`
/// without) is refused, rather than left to connect in the clear or to fail every session.
fn check_schemes(connect: &str, tls: bool) -> Result<(), String> {
    for server in connect.split(',').map(str::trim) {
        if tls && server.starts_with("tcp://") {
            return Err(format!(
                "{server:?} in the connect string is plain TCP, but TLS is set"
            ));
        }
        if !tls && server.starts_with("tcp+tls://") {
            return Err(format!(
                "{server:?} in the connect string asks for TLS, but TLS is not set \
                 (ZooKeeper::tls, feature zookeeper-tls)"
            ));
        }
    }
    Ok(())
}

/// Adds a leading `/`, drops trailing ones (the root stays `/`).
fn normalize_path(path: &str) -> String {
    let trimmed = path.trim().trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// A path ZooKeeper accepts: absolute, no empty, `.` or `..` segment, no NUL.
fn check_path(path: &str) -> Result<(), String> {
    if path == "/" {
        return Ok(());
    }
    let ok = path.starts_with('/')
        && !path.contains('\0')
        && path[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(format!("{path:?} is not a valid ZooKeeper path"))
    }
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One read in a batch: a plain one (its watch is still armed) or one that arms a watch.
enum Read<P, W> {
    Plain(P),
    Watch(W),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_first_read_is_not_published() {
        let partial = || Err(Failure::Partial("a child could not be read".to_owned()));
        assert!(publishable(&Ok(()), true));
        assert!(publishable(&Ok(()), false));
        // The first list would lack the unread children (possibly empty: NoBackends for
        // every waiting get): the retry is waited for.
        assert!(!publishable(&partial(), true));
        // Later lists keep the unread children's last known state.
        assert!(publishable(&partial(), false));
        assert!(!publishable(
            &Err(Failure::Error("listing".to_owned())),
            false
        ));
    }

    #[test]
    fn schemes_must_agree_with_the_tls_setting() {
        assert_eq!(check_schemes("h1:2181,h2:2181/chroot", false), Ok(()));
        assert_eq!(
            check_schemes("h1:2182,tcp+tls://h2:2182/chroot", true),
            Ok(())
        );
        assert_eq!(check_schemes("tcp://h1:2181, h2:2181", false), Ok(()));
        let plain = check_schemes("h1:2182, tcp://h2:2181", true).unwrap_err();
        assert!(
            plain.contains("\"tcp://h2:2181\"") && plain.contains("TLS is set"),
            "{plain}"
        );
        let secure = check_schemes("tcp+tls://h1:2182", false).unwrap_err();
        assert!(secure.contains("TLS is not set"), "{secure}");
    }

    #[test]
    fn layouts_and_paths() {
        assert_eq!(ZooKeeper::codis3("h:1", "p").path(), "/jodis/p");
        assert_eq!(ZooKeeper::codis2("h:1", "p").path(), "/zk/codis/db_p/proxy");
        assert_eq!(
            ZooKeeper::directory("h:1", "serverlist/").path(),
            "/serverlist"
        );
        assert_eq!(ZooKeeper::directory("h:1", "/").path(), "/");
        assert_eq!(ZooKeeper::directory("h:1", "").path(), "/");
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/d", "a"), "/d/a");
        assert!(check_path("/jodis/p").is_ok());
        assert!(check_path("/").is_ok());
        for bad in ["/a//b", "/a/./b", "/a/..", "/a\0b", "a"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        // An empty product makes a path ZooKeeper refuses: run reports it, nothing panics.
        assert!(check_path(ZooKeeper::codis2("h:1", "").path()).is_ok());
        assert!(check_path(&normalize_path("/jodis/a//b")).is_err());
    }

    #[test]
    fn knobs_are_clamped() {
        let zk = ZooKeeper::codis3("h:1", "p")
            .resync_interval(Duration::ZERO)
            .max_reconnect_backoff(Duration::ZERO)
            .connect_timeout(Duration::ZERO);
        assert_eq!(zk.resync_interval, MIN_RESYNC_INTERVAL);
        assert_eq!(zk.max_backoff, BACKOFF_BASE);
        assert!(zk.connect_timeout > Duration::ZERO);
        assert!(format!("{zk:?}").contains("/jodis/p"));
    }

    fn all_knobs_at(d: Duration) -> ZooKeeper {
        ZooKeeper::codis3("h:1", "p")
            .session_timeout(d)
            .connect_timeout(d)
            .resync_interval(d)
            .max_reconnect_backoff(d)
    }

    #[test]
    fn huge_knobs_are_capped() {
        let zk = all_knobs_at(Duration::MAX);
        assert_eq!(zk.session_timeout, MAX_SESSION_TIMEOUT);
        assert_eq!(zk.session_timeout.as_millis(), i32::MAX as u128);
        assert_eq!(zk.connect_timeout, MAX_DURATION);
        assert_eq!(zk.resync_interval, MAX_DURATION);
        assert_eq!(zk.max_backoff, MAX_DURATION);
        // Values within the bounds are kept as given.
        let d = Duration::from_secs(1234);
        let zk = all_knobs_at(d);
        assert_eq!(
            (
                zk.session_timeout,
                zk.connect_timeout,
                zk.resync_interval,
                zk.max_backoff
            ),
            (d, d, d, d)
        );
    }

    #[test]
    fn deadlines_with_the_largest_knobs_do_not_panic() {
        let zk = all_knobs_at(Duration::MAX);
        let now = Instant::now();
        // `follow`'s resync deadline.
        assert!(deadline_after(now, zk.resync_interval) > now);
        // The fallback, for a duration no setter lets through.
        assert!(deadline_after(now, Duration::MAX) >= now);
        // The reconnect backoff (`run`) and the read retry (`follow`), at any failure count.
        for base in [BACKOFF_BASE, READ_RETRY_BASE] {
            let policy = BackoffPolicy {
                base,
                max: zk.max_backoff,
            };
            for failures in [0, 1, 2, 40, u64::from(u32::MAX) + 1, u64::MAX] {
                let d = policy.delay(failures);
                assert!(d <= zk.max_backoff, "{failures}: {d:?}");
                assert!(deadline_after(now, d) >= now);
            }
        }
        // What zookeeper-client 0.11 computes from the requested session timeout (it sends
        // `as_millis() as i32`; `reset_timeout` takes 3/5, 1/20 × 8 and 7/5 of it and adds the
        // last to an instant): none of it may wrap or overflow.
        let s = zk.session_timeout;
        assert!(i32::try_from(s.as_millis()).is_ok());
        assert!(s.checked_mul(3).is_some());
        assert!((s / 20).checked_mul(8).is_some());
        let expired = s.checked_mul(7).map(|d| d / 5).unwrap();
        assert!(now.checked_add(expired).is_some());
    }

    #[test]
    fn online_list_keeps_online_once_in_order() {
        let b = |a: &str, id: &str| Backend::new(a).with_id(id);
        let parsed = [
            Ok(NodeData::Online(b("h:1", "a"))),
            Ok(NodeData::Offline),
            Err("bad".to_owned()),
            Ok(NodeData::Online(b("h:2", "c"))),
            Ok(NodeData::Online(b("h:1", "d"))),
        ];
        let list = online_list(parsed.iter());
        assert_eq!(list, vec![b("h:1", "a"), b("h:2", "c")]);
    }

    #[test]
    fn work_merges() {
        let mut w = Work::None;
        w.add(Target::Data("a".into()));
        w.add(Target::Data("a".into()));
        assert_eq!(
            w,
            Work::Some {
                children: false,
                data: ["a".to_owned()].into_iter().collect()
            }
        );
        w.add(Target::Exists);
        assert!(matches!(w, Work::Some { children: true, .. }));
        let mut all = Work::All;
        all.add(Target::Children);
        assert_eq!(all, Work::All);
    }

    #[tokio::test]
    async fn bad_connect_strings_are_errors_not_panics() {
        for connect in [
            "",
            ",",
            "h:notaport",
            "h:99999",
            "h:1,,h:2",
            "h:1/a//b",
            "tcp+tls://h:1",
            "[::1",
        ] {
            let zk = ZooKeeper::codis3(connect, "p").connect_timeout(Duration::from_millis(300));
            assert!(zk.open(None, None).await.is_err(), "{connect:?}");
        }
    }

    fn quiet_updates() -> Updates {
        Updates {
            shared: super::super::UpdatesShared::new(Box::new(|_| {})),
        }
    }

    #[test]
    fn cache_warns_once_per_version_and_tracks_changes() {
        let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = warnings.clone();
        let updates = Updates {
            shared: super::super::UpdatesShared::new(Box::new(move |r| {
                if let super::super::Report::Warning(m) = r {
                    sink.lock().unwrap().push(m.to_owned());
                }
            })),
        };
        let mut cache = Cache::default();
        cache.update("a", b"h:1", 1, &updates, "/d");
        cache.update("b", b"junk", 2, &updates, "/d");
        cache.update("b", b"junk", 2, &updates, "/d"); // a resync: same version, no new warning
        assert_eq!(warnings.lock().unwrap().len(), 1);
        assert!(warnings.lock().unwrap()[0].contains("node b"));
        assert_eq!(cache.online(), vec![Backend::new("h:1").with_id("a")]);
        cache.update(
            "b",
            br#"{"addr":"h:2","state":"online"}"#,
            3,
            &updates,
            "/d",
        );
        assert_eq!(cache.online().len(), 2);
        cache.update(
            "a",
            br#"{"addr":"h:1","state":"offline"}"#,
            4,
            &updates,
            "/d",
        );
        assert_eq!(cache.online().len(), 1);
        assert_eq!(cache.online()[0].addr(), "h:2");
        assert_eq!(warnings.lock().unwrap().len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn any_payload_is_parsed_or_skipped(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            json in r#"\{"(addr|proxy_addr|state|online|weight)":("[ -~]{0,24}"|[0-9]{1,6}|true|false|null|\[\]),? ?("state":"(online|offline|[a-z]{0,8})")?\}"#,
            name in "[a-zA-Z0-9_.-]{1,24}",
        ) {
            let updates = quiet_updates();
            let mut cache = Cache::default();
            cache.update(&name, &data, 1, &updates, "/d");
            cache.update("j", json.as_bytes(), 2, &updates, "/d");
            let list = cache.online();
            proptest::prop_assert!(list.len() <= 2);
            for b in &list {
                proptest::prop_assert!(b.addr().contains(':'));
            }
        }
    }

    #[test]
    fn jitter_stays_within_half() {
        for _ in 0..100 {
            let d = crate::backoff::jitter(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }
}
