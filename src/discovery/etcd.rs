//! [`Etcd`]: backends registered in etcd, through the v3 API (a key prefix, watched with the
//! `etcd-client` crate) or the v2 API (Codis 3's `/jodis/<product>` directory, followed by
//! HTTP long-poll, since codis-proxy registers through v2 and v2 keys are invisible to v3).
//!
//! # v3 (`Etcd::prefix`)
//!
//! Read every key under the prefix at revision `R`, publish, then watch the prefix from
//! `R + 1`, so no change between the read and the watch is lost. Each watch event updates the
//! list (a put parses the value, a delete drops the key) and the complete list is published
//! when it changed. The HTTP/2 keep-alive breaks the connection to a frozen server, and a
//! watch that answers no progress request within `request_timeout` is deemed silent. After any
//! failure (etcd restarted, a broken connection, a silent watch) a new client, on the next
//! endpoint (see below), reads everything again and watches from the new revision: nothing that
//! happened meanwhile (a restored data dir included) can be missed. A watch cancelled because
//! its revision was compacted (a watcher that fell behind) reads everything again too.
//!
//! # v2 (`Etcd::codis3`)
//!
//! `GET /v2/keys/<dir>?recursive=true&quorum=true` gives the children and the store index
//! `X` (header `X-Etcd-Index`), read through the leader, so a member that lags or lost its
//! peers fails the read rather than return an older list; `GET
//! ...?wait=true&recursive=true&waitIndex=X+1` long-polls for the next change, after which
//! the directory is read again. A long-poll that ends quietly after `poll_timeout` (no
//! byte of an answer came) advances the wait index to the index the server reported when
//! the wait began (nothing under the directory changed up to it); an "event index cleared"
//! error (etcd keeps the last 1,000 v2 events) and any failure lead to a full re-read. The
//! long-poll is answered by the member itself: a member cut off from its peers but still
//! reachable keeps answering it quietly, so its list can go stale unnoticed until the
//! member fails (v2 has nothing like v3's "require a leader").
//!
//! # Endpoints
//!
//! The adapter talks to one endpoint at a time, a random one first (so that many pools
//! spread over the members), the next one after a failure. A member that fails while
//! another has not been tried since the last success is a warning (`Updates::warn`), and
//! the next member is tried at once: one member down in a cluster whose others serve is not
//! a discovery failure.
//!
//! # Authentication
//!
//! With [`Etcd::credentials`], v3 signs each new client in (etcd-client renews an expired
//! token and retries), and v2 sends HTTP Basic credentials on every request. Without TLS the
//! password crosses the network in clear, as any etcd client's does.
//!
//! # TLS (feature `etcd-tls`)
//!
//! The PEM given to [`Etcd::tls`] (and [`Etcd::tls_identity`]) is checked once per run into a
//! rustls configuration (ring): v3 hands the same PEM to etcd-client (tonic, rustls with ring),
//! and v2 wraps each long-poll's socket in a TLS session, the handshake counting against the
//! request timeout as the connect does.
//!
//! In both modes the last list stays in force while etcd is unreachable (nothing is published),
//! a failure of every endpoint in a row is reported with `Updates::report_error` and retried
//! after a capped, jittered backoff, and malformed values are skipped with `Updates::warn`
//! (once per value).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, WatchOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, timeout_at, Instant};

#[cfg(feature = "etcd-tls")]
use super::etcd_tls::{Tls, TlsSettings};
use super::node::{parse_node, NodeData};
use super::{Discovery, Updates};
use crate::backends::Backend;
use crate::config::MAX_DURATION;
use crate::error::DiscoveryError;
use crate::sync::deadline_after;

/// Follows backends registered in etcd: under a key prefix (v3 API) or in Codis 3's
/// `/jodis/<product>` directory (v2 API).
///
/// Values are JSON (the address under `addr`, `proxy_addr` or `proto_addr`; a `state` other
/// than `"online"` or `"online": false` means offline; an optional `weight` sets
/// [`Backend::with_weight`](crate::Backend::with_weight)) or plain `host:port`. Constructors
/// connect nothing; the pool's discovery task does, in [`Discovery::run`].
///
/// ```no_run
/// use connpool::discovery::Etcd;
/// # #[derive(Clone)] struct M;
/// # impl connpool::Manager for M {
/// #     type Connection = (); type Error = std::io::Error;
/// #     async fn connect(&self, _: &connpool::Backend) -> Result<(), std::io::Error> { Ok(()) }
/// #     async fn check(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
/// # }
/// # async fn demo() {
/// let pool = connpool::Pool::builder(M)
///     .discovery(Etcd::prefix(&["127.0.0.1:2379"], "/services/redis/"))
///     .build()
///     .unwrap();
/// let conn = pool.get().await.unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Etcd {
    endpoints: Vec<String>,
    source: Source,
    request_timeout: Duration,
    keep_alive: (Duration, Duration),
    progress_interval: Duration,
    poll_timeout: Duration,
    backoff: (Duration, Duration),
    credentials: Option<Credentials>,
    #[cfg(feature = "etcd-tls")]
    tls: Option<TlsSettings>,
}

/// A user name and password (v3: etcd's auth, v2: HTTP Basic).
#[derive(Clone)]
struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The user name only: a password has no place in logs.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Why these credentials cannot be sent through `source`'s API, if they cannot.
    fn invalid(&self, source: &Source) -> Option<String> {
        if self.user.is_empty() {
            return Some("etcd: credentials: the user name is empty".into());
        }
        if matches!(source, Source::V2Dir(_)) && self.user.contains(':') {
            // RFC 7617: the user-id of Basic credentials ends at the first colon.
            return Some(format!(
                "etcd v2: credentials: the user name {:?} contains ':', which HTTP Basic \
                 authentication cannot carry",
                self.user
            ));
        }
        None
    }

    /// The v2 API's `Authorization` header value.
    fn basic(&self) -> String {
        format!(
            "Basic {}",
            base64(format!("{}:{}", self.user, self.password).as_bytes())
        )
    }
}

/// Standard base64 with padding (RFC 4648), for HTTP Basic credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Source {
    /// v3: every key starting with this prefix.
    Prefix(String),
    /// v2: the direct children of this directory (no trailing slash).
    V2Dir(String),
}

/// The shortest duration a knob accepts (zero would make every request fail at once).
const MIN_KNOB: Duration = Duration::from_millis(10);
/// The longest duration a knob accepts (100 years: "never" in practice): deadlines are
/// `instant + knob`, here and in hyper's keep-alive, and must not overflow the clock.
const MAX_KNOB: Duration = MAX_DURATION;
/// A v3 watch that lived this long resets the reconnect backoff.
const HEALTHY: Duration = Duration::from_secs(10);
/// Responses above this are refused: a v2 HTTP body, a v3 range or watch message (a
/// directory of proxies is a few KiB).
const MAX_BODY: usize = 64 << 20;
/// Response headers above this are refused.
const MAX_HEAD: usize = 64 << 10;

/// Without the `etcd-tls` feature there is no TLS: nothing of this type exists.
#[cfg(not(feature = "etcd-tls"))]
enum Tls {}

impl Etcd {
    fn new(endpoints: &[&str], source: Source) -> Etcd {
        Etcd {
            endpoints: endpoints
                .iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect(),
            source,
            request_timeout: Duration::from_secs(5),
            keep_alive: (Duration::from_secs(10), Duration::from_secs(5)),
            progress_interval: Duration::from_secs(5),
            poll_timeout: Duration::from_secs(10),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            credentials: None,
            #[cfg(feature = "etcd-tls")]
            tls: None,
        }
    }

    /// Every key under `prefix`, through the v3 API. End the prefix with `/` if it names a
    /// directory (`"/services/redis"` would also match `"/services/redis2/..."`).
    /// `endpoints` are `host:port` or `http://host:port`.
    ///
    /// ```no_run
    /// use connpool::discovery::Etcd;
    /// let d = Etcd::prefix(&["10.0.0.1:2379", "10.0.0.2:2379"], "/services/redis/");
    /// ```
    pub fn prefix(endpoints: &[&str], prefix: &str) -> Etcd {
        Etcd::new(endpoints, Source::Prefix(prefix.to_owned()))
    }

    /// The Codis 3 proxies of `product`: the children of `/jodis/<product>`, where
    /// codis-proxy publishes itself (its `jodis_name = "etcd"` setting), read through the
    /// **v2** API by HTTP long-poll (etcd must run with `--enable-v2=true`; etcd 3.4 and
    /// later disable v2 by default). `endpoints` are `host:port` or `http://host:port`.
    ///
    /// ```no_run
    /// use connpool::discovery::Etcd;
    /// let d = Etcd::codis3(&["127.0.0.1:2379"], "codis-demo");
    /// ```
    pub fn codis3(endpoints: &[&str], product: &str) -> Etcd {
        let product = product.trim_matches('/');
        Etcd::new(endpoints, Source::V2Dir(format!("/jodis/{product}")))
    }

    /// Bounds connecting, each read, creating a watch, a progress request's answer, and the
    /// wait for a v2 long-poll's response headers. Default 5 s (at least 10 ms, at most 100
    /// years; a longer one is capped there).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let d = connpool::discovery::Etcd::prefix(&["127.0.0.1:2379"], "/svc/")
    ///     .request_timeout(Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn request_timeout(mut self, d: Duration) -> Etcd {
        self.request_timeout = d.clamp(MIN_KNOB, MAX_KNOB);
        self
    }

    /// v3: HTTP/2 keep-alive PING every `interval`; a PING not answered within `timeout`
    /// breaks the connection (and the watch), so a frozen server or a dead network path is
    /// noticed instead of hanging the watch. Default 10 s and 5 s (each at least 10 ms, at most
    /// 100 years; a longer one is capped there). etcd's `--grpc-keepalive-min-time` (default
    /// 5 s) closes connections that ping more often.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let d = connpool::discovery::Etcd::prefix(&["127.0.0.1:2379"], "/svc/")
    ///     .keep_alive(Duration::from_secs(30), Duration::from_secs(10));
    /// ```
    #[must_use]
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Etcd {
        self.keep_alive = (
            interval.clamp(MIN_KNOB, MAX_KNOB),
            timeout.clamp(MIN_KNOB, MAX_KNOB),
        );
        self
    }

    /// v3: after this long without any message on the watch stream, ask etcd for a progress
    /// notification; if nothing arrives within `request_timeout` after that, the watch is
    /// deemed silent and is replaced (read again, watched anew).
    /// Default 5 s, so a silent watch is replaced within about 10 s (at least 10 ms, at most
    /// 100 years; a longer one is capped there).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let d = connpool::discovery::Etcd::prefix(&["127.0.0.1:2379"], "/svc/")
    ///     .progress_interval(Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn progress_interval(mut self, d: Duration) -> Etcd {
        self.progress_interval = d.clamp(MIN_KNOB, MAX_KNOB);
        self
    }

    /// v2: how long one long-poll may wait for a change before it is ended and re-issued
    /// (quietly). A server that freezes mid-poll is noticed within `poll_timeout +
    /// request_timeout`. Default 10 s (at least 10 ms, at most 100 years; a longer one is
    /// capped there).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let d = connpool::discovery::Etcd::codis3(&["127.0.0.1:2379"], "demo")
    ///     .poll_timeout(Duration::from_secs(30));
    /// ```
    #[must_use]
    pub fn poll_timeout(mut self, d: Duration) -> Etcd {
        self.poll_timeout = d.clamp(MIN_KNOB, MAX_KNOB);
        self
    }

    /// Retry delays after a failure: from `base`, doubling per consecutive failure, capped at
    /// `max`, each jittered down by up to half. Default 100 ms and 5 s. `base` is at least
    /// 10 ms, `max` at least `base`, and both at most 100 years (a longer one is capped there).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let d = connpool::discovery::Etcd::prefix(&["127.0.0.1:2379"], "/svc/")
    ///     .backoff(Duration::from_millis(50), Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn backoff(mut self, base: Duration, max: Duration) -> Etcd {
        let base = base.clamp(MIN_KNOB, MAX_KNOB);
        self.backoff = (base, max.clamp(base, MAX_KNOB));
        self
    }

    /// Authenticates as `user` with `password`, for an etcd with authentication enabled
    /// (Codis' `coordinator_auth = "user:password"` for etcd):
    ///
    /// - v3 ([`prefix`](Self::prefix)): etcd's own authentication; each new client signs in,
    ///   and an expired token is renewed and the request retried.
    /// - v2 ([`codis3`](Self::codis3)): HTTP Basic credentials on every request.
    ///
    /// Without TLS (feature `etcd-tls`, `Etcd::tls`) the password travels in clear, as with
    /// any etcd client: keep such endpoints on a trusted network.
    /// [`fmt::Debug`](std::fmt::Debug) shows the user name, never the password.
    ///
    /// Refused credentials are discovery errors, retried after the backoff while the last
    /// list stays in force: a wrong password on v3 fails the sign-in ("authentication
    /// failed"), on v2 every read ("error 110"). An empty user name, or on v2 one containing
    /// `:` (which Basic credentials cannot carry; the password may), is reported by
    /// [`Discovery::run`] as a discovery error naming it, and nothing is connected.
    ///
    /// ```
    /// let d = connpool::discovery::Etcd::prefix(&["127.0.0.1:2379"], "/svc/")
    ///     .credentials("reader", "s3cret");
    /// assert!(!format!("{d:?}").contains("s3cret"));
    /// ```
    #[must_use]
    pub fn credentials(mut self, user: &str, password: &str) -> Etcd {
        self.credentials = Some(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        });
        self
    }

    /// Speaks TLS to every endpoint (v3 and v2), trusting the members' certificates that the
    /// certificates in `ca_pem` (PEM, one or more) sign. Endpoints are then `host:port` or
    /// `https://host:port`; each member's certificate must name the endpoint's host (an IP
    /// address as an IP SAN), or the name given to [`tls_domain`](Self::tls_domain).
    /// Feature `etcd-tls` (rustls, with ring).
    ///
    /// Bad PEM, an `http://` endpoint, or an `https://` one without this, is reported by
    /// [`Discovery::run`] as a discovery error saying which, and nothing is connected; a
    /// member whose certificate does not verify is a discovery error naming the reason.
    ///
    /// ```no_run
    /// let ca = std::fs::read("/etc/etcd/ca.pem").unwrap();
    /// let d = connpool::discovery::Etcd::prefix(&["https://10.0.0.1:2379"], "/svc/").tls(&ca);
    /// ```
    #[cfg(feature = "etcd-tls")]
    #[must_use]
    pub fn tls(mut self, ca_pem: &[u8]) -> Etcd {
        self.tls.get_or_insert_with(TlsSettings::default).ca_pem = ca_pem.to_vec();
        self
    }

    /// With [`tls`](Self::tls): presents this client certificate chain and private key (PEM;
    /// PKCS#8, PKCS#1 or SEC1), for members started with `--client-cert-auth`. The key is
    /// never printed ([`fmt::Debug`](std::fmt::Debug) says whether one is set).
    ///
    /// ```no_run
    /// let read = |p| std::fs::read(p).unwrap();
    /// let d = connpool::discovery::Etcd::prefix(&["10.0.0.1:2379"], "/svc/")
    ///     .tls(&read("/etc/etcd/ca.pem"))
    ///     .tls_identity(&read("/etc/etcd/client.pem"), &read("/etc/etcd/client-key.pem"));
    /// ```
    #[cfg(feature = "etcd-tls")]
    #[must_use]
    pub fn tls_identity(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Etcd {
        self.tls.get_or_insert_with(TlsSettings::default).identity =
            Some((cert_pem.to_vec(), key_pem.to_vec()));
        self
    }

    /// With [`tls`](Self::tls): verifies every member's certificate against `name` instead
    /// of the endpoint's host (members reached by IP address whose certificates name a DNS
    /// name).
    ///
    /// ```no_run
    /// let ca = std::fs::read("/etc/etcd/ca.pem").unwrap();
    /// let d = connpool::discovery::Etcd::prefix(&["10.0.0.1:2379"], "/svc/")
    ///     .tls(&ca)
    ///     .tls_domain("etcd.internal");
    /// ```
    #[cfg(feature = "etcd-tls")]
    #[must_use]
    pub fn tls_domain(mut self, name: &str) -> Etcd {
        self.tls.get_or_insert_with(TlsSettings::default).domain = Some(name.to_owned());
        self
    }

    /// The checked TLS settings, if TLS is set.
    fn prepare_tls(&self) -> Result<Option<Tls>, String> {
        #[cfg(feature = "etcd-tls")]
        {
            self.tls.as_ref().map(TlsSettings::prepare).transpose()
        }
        #[cfg(not(feature = "etcd-tls"))]
        {
            Ok(None)
        }
    }

    /// The endpoints in `host:port` form (each bad one reported and skipped), or the error
    /// when none is usable.
    fn usable_endpoints(
        &self,
        updates: &Updates,
        api: &str,
        tls: bool,
    ) -> Result<Vec<String>, DiscoveryError> {
        let mut endpoints = Vec::new();
        for e in &self.endpoints {
            match endpoint(e, api, tls) {
                Ok(hp) => endpoints.push(hp),
                Err(why) => report(updates, &why),
            }
        }
        if endpoints.is_empty() {
            return Err(DiscoveryError::new(format!(
                "{api}: no usable endpoint in {:?}",
                self.endpoints
            )));
        }
        Ok(endpoints)
    }
}

impl Discovery for Etcd {
    async fn run(&self, updates: Updates) -> Result<(), DiscoveryError> {
        if self.endpoints.is_empty() {
            return Err(DiscoveryError::new("etcd: no endpoints given"));
        }
        if let Some(why) = self
            .credentials
            .as_ref()
            .and_then(|c| c.invalid(&self.source))
        {
            return Err(DiscoveryError::new(why));
        }
        let tls = self.prepare_tls().map_err(DiscoveryError::new)?;
        let tls = tls.as_ref();
        let work = async {
            match &self.source {
                Source::Prefix(prefix) => self.run_v3(&updates, prefix, tls).await,
                Source::V2Dir(dir) => self.run_v2(&updates, dir, tls).await,
            }
        };
        tokio::select! {
            () = updates.closed() => Ok(()),
            r = work => r,
        }
    }
}

// ---- shared ---------------------------------------------------------------------------------

/// Capped exponential backoff, jittered down by up to half.
struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    fn new((base, max): (Duration, Duration)) -> Backoff {
        Backoff {
            base,
            max,
            failures: 0,
        }
    }
    fn reset(&mut self) {
        self.failures = 0;
    }
    fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        crate::backoff::BackoffPolicy {
            base: self.base,
            max: self.max,
        }
        .delay(u64::from(self.failures))
    }
}

/// What the adapter knows: one entry per key, the backend if it is online.
#[derive(Default)]
struct Listing {
    nodes: BTreeMap<String, Option<Backend>>,
    /// Malformed values already warned about: key → the value's revision/modified index.
    warned: HashMap<String, i64>,
    /// The list last published in this run (`None`: nothing published yet).
    published: Option<Vec<Backend>>,
}

impl Listing {
    /// Parses and records `key`'s value; warns (once per `version`) and drops it if malformed.
    fn put(&mut self, updates: &Updates, key: &str, value: &[u8], version: i64) {
        match parse_node(key, value) {
            Ok(NodeData::Online(b)) => {
                self.warned.remove(key);
                self.nodes.insert(key.to_owned(), Some(b));
            }
            Ok(NodeData::Offline) => {
                self.warned.remove(key);
                self.nodes.insert(key.to_owned(), None);
            }
            Err(why) => {
                self.nodes.remove(key);
                if self.warned.get(key) != Some(&version) {
                    self.warned.insert(key.to_owned(), version);
                    tracing::warn!(key, "connpool: etcd: skipping malformed entry: {why}");
                    updates.warn(&format!("etcd: skipping malformed entry: {why}"));
                }
            }
        }
    }

    fn delete(&mut self, key: &str) {
        self.nodes.remove(key);
        self.warned.remove(key);
    }

    /// Publishes the complete list if it differs from the last one published.
    fn publish(&mut self, updates: &Updates) {
        let list: Vec<Backend> = self.nodes.values().flatten().cloned().collect();
        if self.published.as_ref() != Some(&list) {
            tracing::debug!(
                backends = list.len(),
                "connpool: etcd: publishing the backend list"
            );
            updates.publish(list.clone());
            self.published = Some(list);
        }
    }
}

fn report(updates: &Updates, message: &str) {
    tracing::warn!("connpool: {message}");
    updates.report_error(message);
}

/// Which endpoint the adapter talks to, one at a time (both APIs): a random one first (so
/// that many pools spread over the members), the next one after a failure.
///
/// A member that fails while another has not been tried since the last success is only a
/// warning, and the next member is tried at once: one member down, in a cluster whose
/// others serve, is not a discovery failure, and the list stays current. Once every member
/// has failed in a row, the failure is reported (`Event::DiscoveryFailed`) and the adapter
/// backs off before it starts the round again. (A v3 client balanced over every endpoint at
/// once would send each session's read and watch to a member at random: with one member
/// down, sessions failed at random, and each failure was reported and backed off.)
struct Rotation {
    len: usize,
    at: usize,
    /// Members that failed in a row since one last served (or since the round began).
    failed: usize,
}

impl Rotation {
    fn new(len: usize) -> Rotation {
        Rotation {
            len,
            at: fastrand::usize(..len),
            failed: 0,
        }
    }

    /// The member to talk to now.
    fn at(&self) -> usize {
        self.at
    }

    /// The member served (a read and a watch or poll went through).
    fn served(&mut self) {
        self.failed = 0;
    }

    /// The member failed (`why`): moves on to the next. `true`: every member has failed in
    /// a row: `why` was reported, and the caller backs off; `false`: it was a warning, and
    /// the next member is tried at once.
    fn failed(&mut self, updates: &Updates, why: &str) -> bool {
        self.failed += 1;
        self.at = (self.at + 1) % self.len;
        if self.failed >= self.len {
            self.failed = 0;
            report(updates, why);
            return true;
        }
        let message = format!("{why}; trying the next endpoint");
        tracing::warn!("connpool: {message}");
        updates.warn(&message);
        false
    }
}

// ---- v3 ---------------------------------------------------------------------------------------

/// Why a v3 session ended.
enum V3End {
    /// Read everything again with the same client (the watch's revision was compacted).
    Reread,
    /// Drop the client, back off, reconnect, read everything again.
    Reconnect(String),
}

impl Etcd {
    async fn run_v3(
        &self,
        updates: &Updates,
        prefix: &str,
        tls: Option<&Tls>,
    ) -> Result<(), DiscoveryError> {
        // `host:port`: etcd-client adds `https://` when it has TLS options, else `http://`.
        let endpoints = self.usable_endpoints(updates, "etcd", tls.is_some())?;
        let mut listing = Listing::default();
        let mut backoff = Backoff::new(self.backoff);
        let mut rotation = Rotation::new(endpoints.len());
        let mut options = ConnectOptions::new()
            .with_keep_alive(self.keep_alive.0, self.keep_alive.1)
            .with_keep_alive_while_idle(false)
            .with_connect_timeout(self.request_timeout)
            .with_require_leader(true);
        if let Some(c) = &self.credentials {
            // A token outlives its TTL only while used; a quiet watch may let it lapse, and
            // the next read then signs in again instead of failing.
            options = options
                .with_user(c.user.clone(), c.password.clone())
                .with_auto_token_refresh(true);
        }
        match tls {
            #[cfg(feature = "etcd-tls")]
            Some(t) => options = options.with_tls(t.v3_options()),
            #[cfg(not(feature = "etcd-tls"))]
            Some(t) => match *t {},
            None => {}
        }
        loop {
            // One member per client (see `Rotation`).
            let endpoint = &endpoints[rotation.at()];
            let client = timeout(
                self.request_timeout,
                Client::connect([endpoint], Some(options.clone())),
            )
            .await;
            let why = match client {
                Ok(Ok(client)) => loop {
                    // Every session starts with a full read: whatever happened meanwhile (a
                    // restart, a restored data dir, a compaction), nothing is missed.
                    let mut watching_since = None;
                    let end = self
                        .v3_session(&client, updates, prefix, &mut listing, &mut watching_since)
                        .await;
                    if watching_since.is_some() {
                        rotation.served();
                    }
                    // A watch that worked for a while resets the backoff; one that fails right
                    // after it was created does not (no retry storm).
                    if watching_since.is_some_and(|t: Instant| t.elapsed() >= HEALTHY) {
                        backoff.reset();
                    }
                    match end {
                        V3End::Reread => {}
                        V3End::Reconnect(why) => break format!("{why} (at {endpoint})"),
                    }
                },
                Ok(Err(e)) => format!("etcd: connecting to {endpoint}: {e}"),
                Err(_) => format!(
                    "etcd: connecting to {endpoint} timed out after {:?}",
                    self.request_timeout
                ),
            };
            if rotation.failed(updates, &why) {
                sleep(backoff.next_delay()).await;
            }
        }
    }

    /// Reads everything under `prefix`, publishes, and watches from the next revision until
    /// something ends the watch.
    async fn v3_session(
        &self,
        client: &Client,
        updates: &Updates,
        prefix: &str,
        listing: &mut Listing,
        watching_since: &mut Option<Instant>,
    ) -> V3End {
        let rt = self.request_timeout;
        let mut kv = client.kv_client().max_decoding_message_size(MAX_BODY);
        let resp = match timeout(rt, kv.get(prefix, Some(GetOptions::new().with_prefix()))).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return V3End::Reconnect(format!("etcd: reading {prefix:?}: {e}")),
            Err(_) => {
                return V3End::Reconnect(format!("etcd: reading {prefix:?} timed out after {rt:?}"))
            }
        };
        let Some(start) = resp.header().map(|h| h.revision()) else {
            return V3End::Reconnect("etcd: range response without a header".into());
        };
        listing.nodes.clear();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            listing.put(updates, &key, kv.value(), kv.mod_revision());
        }
        listing.publish(updates);
        tracing::debug!(prefix, revision = start, "connpool: etcd: read the prefix");

        let mut wc = client.watch_client().max_decoding_message_size(MAX_BODY);
        let opts = WatchOptions::new()
            .with_prefix()
            .with_fragment()
            .with_start_revision(start.saturating_add(1));
        let mut stream = match timeout(rt, wc.watch(prefix, Some(opts))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return V3End::Reconnect(format!("etcd: watching {prefix:?}: {e}")),
            Err(_) => {
                return V3End::Reconnect(format!(
                    "etcd: watching {prefix:?} timed out after {rt:?}"
                ))
            }
        };

        let mut last_message = Instant::now();
        // When a progress request went out with no message since; `None`: none pending.
        let mut progress_asked: Option<Instant> = None;
        let mut created = false;
        loop {
            let deadline = watch_deadline(
                created,
                last_message,
                progress_asked,
                rt,
                self.progress_interval,
            );
            let msg = match timeout_at(deadline, stream.message()).await {
                Ok(m) => m,
                Err(_) if !created => {
                    return V3End::Reconnect(format!(
                        "etcd: watch on {prefix:?} not created within {rt:?}"
                    ))
                }
                Err(_) if progress_asked.is_some() => {
                    return V3End::Reconnect(format!(
                        "etcd: watch on {prefix:?} silent for {:?} (no answer to a progress \
                         request); re-watching",
                        last_message.elapsed()
                    ))
                }
                Err(_) => {
                    if let Err(e) = stream.request_progress().await {
                        return V3End::Reconnect(format!("etcd: progress request: {e}"));
                    }
                    progress_asked = Some(Instant::now());
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return V3End::Reconnect(format!("etcd: watch stream on {prefix:?} ended"))
                }
                Err(e) => return V3End::Reconnect(format!("etcd: watch on {prefix:?}: {e}")),
            };
            last_message = Instant::now();
            progress_asked = None;

            if resp.canceled() {
                let compacted = resp.compact_revision();
                if compacted > 0 {
                    report(
                        updates,
                        &format!(
                            "etcd: watch on {prefix:?} from revision {} cancelled: compacted up \
                             to {compacted}; reading everything again",
                            start.saturating_add(1)
                        ),
                    );
                    return V3End::Reread;
                }
                return V3End::Reconnect(format!(
                    "etcd: watch on {prefix:?} cancelled: {}",
                    resp.cancel_reason()
                ));
            }
            if resp.created() && !created {
                created = true;
                *watching_since = Some(Instant::now());
                tracing::debug!(
                    prefix,
                    from = start.saturating_add(1),
                    "connpool: etcd: watching"
                );
            }
            let events = resp.events();
            if events.is_empty() {
                continue;
            }
            for ev in events {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key());
                // A delete event carries a tombstone: version 0 ("a deletion resets the
                // version to zero"); a put's version is at least 1. (Not `event_type()`,
                // which panics on a type it does not know.)
                if kv.version() == 0 {
                    listing.delete(&key);
                } else {
                    listing.put(updates, &key, kv.value(), kv.mod_revision());
                }
            }
            listing.publish(updates);
        }
    }
}

/// When the v3 watch loop gives up waiting for a message: the watch's creation is awaited for
/// `rt`; then, with no progress request pending, a message is awaited for `progress_interval`
/// since the last one (then progress is asked for); with one pending, its answer for `rt`.
fn watch_deadline(
    created: bool,
    last_message: Instant,
    progress_asked: Option<Instant>,
    rt: Duration,
    progress_interval: Duration,
) -> Instant {
    match (created, progress_asked) {
        (false, _) => deadline_after(last_message, rt),
        (true, Some(at)) => deadline_after(at, rt),
        (true, None) => deadline_after(last_message, progress_interval),
    }
}

// ---- v2 ---------------------------------------------------------------------------------------

/// An endpoint as `host:port` (a trailing `/` accepted), or why it is not usable: an
/// `http://` or `https://` prefix must agree with whether TLS is set (`api` names the API in
/// the message).
fn endpoint(e: &str, api: &str, tls: bool) -> Result<String, String> {
    let hp = if let Some(rest) = e.strip_prefix("https://") {
        if !tls {
            return Err(format!(
                "{api}: endpoint {e:?} is https://, but TLS is not set (Etcd::tls, feature \
                 etcd-tls)"
            ));
        }
        rest
    } else if let Some(rest) = e.strip_prefix("http://") {
        if tls {
            return Err(format!(
                "{api}: endpoint {e:?} is http://, but TLS is set (give host:port or https://)"
            ));
        }
        rest
    } else {
        e
    };
    let hp = hp.trim_end_matches('/');
    if hp.is_empty() || hp.contains('/') || hp.contains(char::is_whitespace) {
        return Err(format!("{api}: endpoint {e:?} is not host:port"));
    }
    Ok(hp.to_owned())
}

/// What a v2 directory read returned.
#[derive(Debug, PartialEq)]
struct V2Listing {
    /// The store index the listing is current at (`X-Etcd-Index`, else the error's `index`).
    index: u64,
    /// (key, value, modifiedIndex) of each direct child that holds a value.
    children: Vec<(String, String, i64)>,
}

/// A v2 error body: `{"errorCode":401,"message":"...","cause":"...","index":N}`.
fn v2_error(v: &serde_json::Value) -> Option<(i64, String, Option<u64>)> {
    let code = v.get("errorCode")?.as_i64()?;
    let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let cause = v.get("cause").and_then(|m| m.as_str()).unwrap_or("");
    let index = v.get("index").and_then(|i| i.as_u64());
    Some((code, format!("{message} ({cause})"), index))
}

/// Why a v2 reply could not be read: its status and the start of its body. A 404 that is not
/// JSON is what an etcd without the v2 API answers (off by default since etcd 3.4, gone in
/// 3.6): said so, since the fix is on the server.
fn not_json(what: &str, status: u16, body: &[u8], e: &serde_json::Error) -> String {
    let hint = if status == 404 {
        " (is etcd's v2 API enabled? etcd 3.4 and 3.5 serve it only with --enable-v2, and \
         3.6 removed it; codis-proxy registers through it)"
    } else {
        ""
    };
    format!(
        "etcd v2: {what}HTTP {status}: body is not JSON ({e}){hint}: {:?}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    )
}

/// Parses the reply to `GET /v2/keys<dir>?recursive=true`. A missing directory (error 100,
/// "Key not found") is an empty listing.
fn parse_v2_listing(
    status: u16,
    etcd_index: Option<u64>,
    body: &[u8],
) -> Result<V2Listing, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| not_json("", status, body, &e))?;
    if let Some((code, message, index)) = v2_error(&v) {
        return if code == 100 {
            Ok(V2Listing {
                index: etcd_index.or(index).unwrap_or(0),
                children: Vec::new(),
            })
        } else {
            Err(format!("etcd v2: error {code}: {message}"))
        };
    }
    if status != 200 {
        return Err(format!("etcd v2: unexpected HTTP status {status}"));
    }
    let index = etcd_index.ok_or("etcd v2: reply without an X-Etcd-Index header")?;
    let node = v.get("node").ok_or("etcd v2: reply without a node")?;
    let mut children = Vec::new();
    if node.get("dir").and_then(|d| d.as_bool()) != Some(true) {
        return Err(format!(
            "etcd v2: {} is a key, not a directory",
            node.get("key").and_then(|k| k.as_str()).unwrap_or("?")
        ));
    }
    if let Some(nodes) = node.get("nodes").and_then(|n| n.as_array()) {
        for child in nodes {
            if child.get("dir").and_then(|d| d.as_bool()) == Some(true) {
                continue;
            }
            let Some(key) = child.get("key").and_then(|k| k.as_str()) else {
                continue;
            };
            let value = child
                .get("value")
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_owned();
            let modified = child
                .get("modifiedIndex")
                .and_then(|m| m.as_i64())
                .unwrap_or(0);
            children.push((key.to_owned(), value, modified));
        }
    }
    Ok(V2Listing { index, children })
}

/// What a completed long-poll said.
#[derive(Debug, PartialEq)]
enum V2Wait {
    /// Something under the directory changed (at this modified index, if given).
    Changed(Option<u64>),
    /// The wait index is older than the server's event history: read everything again.
    Cleared(String),
}

fn parse_v2_wait(status: u16, body: &[u8]) -> Result<V2Wait, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| not_json("watch: ", status, body, &e))?;
    if let Some((code, message, _)) = v2_error(&v) {
        return if code == 401 {
            Ok(V2Wait::Cleared(message))
        } else {
            Err(format!("etcd v2: watch: error {code}: {message}"))
        };
    }
    if status != 200 || v.get("action").is_none() {
        return Err(format!("etcd v2: watch: unexpected reply (HTTP {status})"));
    }
    Ok(V2Wait::Changed(
        v.get("node")
            .and_then(|n| n.get("modifiedIndex"))
            .and_then(|m| m.as_u64()),
    ))
}

impl Etcd {
    async fn run_v2(
        &self,
        updates: &Updates,
        dir: &str,
        tls: Option<&Tls>,
    ) -> Result<(), DiscoveryError> {
        let endpoints = self.usable_endpoints(updates, "etcd v2", tls.is_some())?;
        let mut rotation = Rotation::new(endpoints.len());
        let mut listing = Listing::default();
        let mut backoff = Backoff::new(self.backoff);
        // The store index the listing is current at; `None`: read everything.
        let mut index: Option<u64> = None;
        let rt = self.request_timeout;
        let auth = self.credentials.as_ref().map(Credentials::basic);
        let auth = auth.as_deref();
        loop {
            let ep = &endpoints[rotation.at()];
            let failure = match index {
                None => {
                    // `quorum`: through the leader, so a member that lags or lost its peers
                    // cannot hand back a list older than what the cluster agreed on (it
                    // fails the read instead, and the next member is tried).
                    let path = format!("/v2/keys{dir}?recursive=true&sorted=true&quorum=true");
                    match http_get(ep, &path, tls, auth, rt, rt).await {
                        Ok(resp) => {
                            match parse_v2_listing(resp.status, resp.etcd_index, &resp.body) {
                                Ok(l) => {
                                    listing.nodes.clear();
                                    for (key, value, modified) in &l.children {
                                        listing.put(updates, key, value.as_bytes(), *modified);
                                    }
                                    listing.publish(updates);
                                    index = Some(l.index);
                                    None
                                }
                                Err(why) => Some(format!("{why} (reading {dir} at {ep})")),
                            }
                        }
                        Err(e) => Some(format!("etcd v2: reading {dir} at {ep}: {e}")),
                    }
                }
                Some(i) => {
                    let path = format!(
                        "/v2/keys{dir}?wait=true&recursive=true&waitIndex={}",
                        i.saturating_add(1)
                    );
                    match http_get(ep, &path, tls, auth, rt, self.poll_timeout).await {
                        Ok(resp) => match parse_v2_wait(resp.status, &resp.body) {
                            Ok(V2Wait::Changed(m)) => {
                                tracing::debug!(dir, modified = ?m, "connpool: etcd v2: change");
                                backoff.reset();
                                index = None;
                                None
                            }
                            Ok(V2Wait::Cleared(why)) => {
                                index = None;
                                // Not an error: a busy store moves its 1,000-event history
                                // on; reading everything again is the normal answer.
                                let message = format!(
                                    "etcd v2: watch on {dir} from index {}: event index \
                                         cleared ({why}); reading everything again",
                                    i.saturating_add(1)
                                );
                                tracing::info!("connpool: {message}");
                                updates.warn(&message);
                                continue;
                            }
                            Err(why) => Some(why),
                        },
                        Err(HttpError::BodyTimeout { etcd_index }) => {
                            // A quiet poll: nothing under `dir` changed up to the index the
                            // server reported when the wait began (`None` if the answer had
                            // begun: the wait is asked again from where it was).
                            backoff.reset();
                            if let Some(x) = etcd_index {
                                index = Some(i.max(x));
                            }
                            None
                        }
                        Err(e) => Some(format!("etcd v2: watching {dir} at {ep}: {e}")),
                    }
                }
            };
            match failure {
                None => rotation.served(),
                Some(why) => {
                    index = None;
                    if rotation.failed(updates, &why) {
                        sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
    }
}

// ---- a minimal HTTP/1.1 GET -------------------------------------------------------------------

#[derive(Debug)]
struct HttpResponse {
    status: u16,
    etcd_index: Option<u64>,
    body: Vec<u8>,
}

#[derive(Debug)]
enum HttpError {
    /// No response headers within the request timeout (connect included).
    HeaderTimeout(Duration),
    /// Headers arrived, the body did not complete in time (a quiet long-poll).
    BodyTimeout {
        /// The headers' `X-Etcd-Index`, if no byte of the body had arrived: only then was the
        /// wait quiet. (A body cut short was an answer, a change, stalled on its way: the
        /// header's index may be past that change, and moving the wait on to it would lose
        /// the change.)
        etcd_index: Option<u64>,
    },
    Io(std::io::Error),
    Malformed(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::HeaderTimeout(d) => write!(f, "no response within {d:?}"),
            HttpError::BodyTimeout { .. } => f.write_str("response body timed out"),
            HttpError::Io(e) => write!(f, "{e}"),
            HttpError::Malformed(m) => write!(f, "malformed HTTP response: {m}"),
        }
    }
}

/// `GET path` on `host_port` with `Connection: close` (and `Authorization: auth`, if given),
/// over TLS if `tls` is given: the headers must arrive within `header_timeout` (connect and
/// handshake included), the body within `body_timeout` after them.
async fn http_get(
    host_port: &str,
    path: &str,
    tls: Option<&Tls>,
    auth: Option<&str>,
    header_timeout: Duration,
    body_timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let head_deadline = deadline_after(Instant::now(), header_timeout);
    let timed_out = |_| HttpError::HeaderTimeout(header_timeout);
    let tcp = timeout_at(head_deadline, TcpStream::connect(host_port))
        .await
        .map_err(timed_out)?
        .map_err(HttpError::Io)?;
    let mut stream: Box<dyn Stream> = match tls {
        #[cfg(feature = "etcd-tls")]
        Some(t) => Box::new(
            timeout_at(head_deadline, t.connect(host_port, tcp))
                .await
                .map_err(timed_out)?
                .map_err(HttpError::Io)?,
        ),
        #[cfg(not(feature = "etcd-tls"))]
        Some(t) => match *t {},
        None => Box::new(tcp),
    };
    let authorization = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nAccept: application/json\r\n\
         {authorization}Connection: close\r\n\r\n"
    );
    timeout_at(head_deadline, stream.write_all(request.as_bytes()))
        .await
        .map_err(timed_out)?
        .map_err(HttpError::Io)?;

    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::Malformed("headers too large".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = timeout_at(head_deadline, stream.read(&mut chunk))
            .await
            .map_err(timed_out)?
            .map_err(HttpError::Io)?;
        if n == 0 {
            return Err(HttpError::Malformed(
                "connection closed before the headers ended".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = parse_head(&buf[..head_end])?;
    let mut body = buf.split_off(head_end + 4);

    let body_deadline = deadline_after(Instant::now(), body_timeout);
    let read_rest = async {
        let mut chunk = [0u8; 8192];
        loop {
            if head.content_length.is_some_and(|n| body.len() >= n) {
                return Ok(());
            }
            if head.chunked && chunked_complete(&body) {
                return Ok(());
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                if head.chunked || head.content_length.is_some() {
                    // The framing says more was coming: the server went away mid-response.
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed before the response ended",
                    ));
                }
                return Ok(());
            }
            if body.len() + n > MAX_BODY {
                return Err(std::io::Error::other("response body too large"));
            }
            body.extend_from_slice(&chunk[..n]);
        }
    };
    let read = timeout_at(body_deadline, read_rest).await;
    match read {
        Err(_) => {
            return Err(HttpError::BodyTimeout {
                etcd_index: head.etcd_index.filter(|_| body.is_empty()),
            })
        }
        Ok(Err(e)) => return Err(HttpError::Io(e)),
        Ok(Ok(())) => {}
    }
    let body = if head.chunked {
        dechunk(&body).map_err(HttpError::Malformed)?
    } else {
        if let Some(n) = head.content_length {
            if body.len() < n {
                return Err(HttpError::Malformed(
                    "body shorter than Content-Length".into(),
                ));
            }
            body.truncate(n);
        }
        body
    };
    Ok(HttpResponse {
        status: head.status,
        etcd_index: head.etcd_index,
        body,
    })
}

/// A connection the v2 client speaks HTTP over: plain TCP, or TLS over it.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    etcd_index: Option<u64>,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(raw: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| HttpError::Malformed("headers are not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| HttpError::Malformed(format!("status line {status_line:?}")))?;
    let mut head = Head {
        status,
        etcd_index: None,
        content_length: None,
        chunked: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("x-etcd-index") {
            head.etcd_index = value.parse().ok();
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .parse()
                    .map_err(|_| HttpError::Malformed(format!("Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    if head.chunked {
        head.content_length = None;
    }
    Ok(head)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body (`Err` if it is malformed or incomplete).
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").ok_or("chunked body: missing chunk size")?;
        let line = std::str::from_utf8(&raw[..line_end]).map_err(|_| "chunked body: bad size")?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| format!("chunked body: bad chunk size {hex:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size.saturating_add(2) {
            return Err("chunked body: truncated".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// `true` when `raw` holds a complete chunked body (up to the last chunk).
fn chunked_complete(raw: &[u8]) -> bool {
    let mut rest = raw;
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return false;
        };
        let Ok(line) = std::str::from_utf8(&rest[..line_end]) else {
            return true; // malformed: stop reading, `dechunk` reports it
        };
        let hex = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(hex, 16) else {
            return true;
        };
        rest = &rest[line_end + 2..];
        if size == 0 {
            return true;
        }
        if rest.len() < size.saturating_add(2) {
            return false;
        }
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_and_7617() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
        let c = Credentials {
            user: "Aladdin".into(),
            password: "open sesame".into(),
        };
        assert_eq!(c.basic(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(!format!("{c:?}").contains("sesame"), "{c:?}");
    }

    proptest::proptest! {
        /// Any bytes encode as the `base64` crate's standard engine encodes them.
        #[test]
        fn base64_agrees_with_the_base64_crate(bytes in proptest::collection::vec(0u8.., 0..64)) {
            use ::base64::Engine as _;
            let theirs = ::base64::engine::general_purpose::STANDARD.encode(&bytes);
            proptest::prop_assert_eq!(base64(&bytes), theirs);
        }
    }

    #[test]
    fn credentials_an_api_cannot_carry_are_named() {
        let v2 = Source::V2Dir("/jodis/demo".into());
        let v3 = Source::Prefix("/svc/".into());
        let with = |user: &str| Credentials {
            user: user.into(),
            password: "a:b".into(),
        };
        assert_eq!(with("reader").invalid(&v2), None, "a password may hold ':'");
        assert_eq!(with("re:ader").invalid(&v3), None, "v3 names may hold ':'");
        let e = with("re:ader").invalid(&v2).unwrap();
        assert!(e.contains("\"re:ader\"") && e.contains("Basic"), "{e}");
        for source in [&v2, &v3] {
            let e = with("").invalid(source).unwrap();
            assert!(e.contains("user name is empty"), "{e}");
        }
    }

    /// A server that sends `head` (and `body_start`), then stalls until the client leaves.
    async fn stalling_server(head: &'static str, body_start: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await;
            // One write: the body's first bytes arrive with the headers.
            let answer = format!("{head}{body_start}");
            s.write_all(answer.as_bytes()).await.unwrap();
            let _ = s.read(&mut req).await;
        });
        addr
    }

    /// A long-poll whose body never began was quiet up to the header's index; one whose body
    /// began and stalled was a change on its way, and gives no index to move the wait to.
    #[tokio::test]
    async fn a_stalled_answer_is_not_a_quiet_poll() {
        const HEAD: &str =
            "HTTP/1.1 200 OK\r\nX-Etcd-Index: 42\r\nTransfer-Encoding: chunked\r\n\r\n";
        // The headers come at once (a generous bound, for a loaded machine); the body never
        // completes, so the short body bound always ends the read.
        let (head, t) = (Duration::from_secs(30), Duration::from_millis(200));
        let quiet = stalling_server(HEAD, "").await;
        let r = http_get(&quiet, "/v2/keys/d?wait=true", None, None, head, t).await;
        assert!(
            matches!(
                r,
                Err(HttpError::BodyTimeout {
                    etcd_index: Some(42)
                })
            ),
            "{r:?}"
        );
        let stalled = stalling_server(HEAD, "40\r\n{\"action\":\"set\"").await;
        let r = http_get(&stalled, "/v2/keys/d?wait=true", None, None, head, t).await;
        assert!(
            matches!(r, Err(HttpError::BodyTimeout { etcd_index: None })),
            "{r:?}"
        );
    }

    #[test]
    fn v2_listing() {
        let body = br#"{"action":"get","node":{"key":"/jodis/demo","dir":true,"nodes":[
            {"key":"/jodis/demo/proxy-a","value":"{\"addr\":\"10.0.0.1:19000\",\"state\":\"online\"}","modifiedIndex":7,"createdIndex":7},
            {"key":"/jodis/demo/sub","dir":true,"modifiedIndex":8,"createdIndex":8},
            {"key":"/jodis/demo/proxy-b","value":"10.0.0.2:19000","modifiedIndex":9,"createdIndex":9}
        ],"modifiedIndex":5,"createdIndex":5}}"#;
        let l = parse_v2_listing(200, Some(12), body).unwrap();
        assert_eq!(l.index, 12);
        assert_eq!(
            l.children,
            vec![
                (
                    "/jodis/demo/proxy-a".into(),
                    r#"{"addr":"10.0.0.1:19000","state":"online"}"#.into(),
                    7
                ),
                ("/jodis/demo/proxy-b".into(), "10.0.0.2:19000".into(), 9),
            ]
        );
        // An empty directory has no "nodes".
        let empty =
            br#"{"action":"get","node":{"key":"/jodis/demo","dir":true,"modifiedIndex":5}}"#;
        assert_eq!(
            parse_v2_listing(200, Some(3), empty).unwrap().children,
            vec![]
        );
        // A missing directory is an empty listing at the error's index.
        let missing =
            br#"{"errorCode":100,"message":"Key not found","cause":"/jodis/demo","index":42}"#;
        assert_eq!(
            parse_v2_listing(404, None, missing).unwrap(),
            V2Listing {
                index: 42,
                children: vec![]
            }
        );
        // A key where a directory should be, other errors, garbage: errors, not panics.
        let key = br#"{"action":"get","node":{"key":"/jodis/demo","value":"x","modifiedIndex":5}}"#;
        assert!(parse_v2_listing(200, Some(1), key).is_err());
        assert!(
            parse_v2_listing(200, None, b"{\"action\":\"get\",\"node\":{\"dir\":true}}").is_err()
        );
        assert!(parse_v2_listing(500, Some(1), b"<html>").is_err());
        // An etcd without the v2 API: the error says what to change on the server.
        let e = parse_v2_listing(404, None, b"404 page not found\n").unwrap_err();
        assert!(e.contains("--enable-v2"), "{e}");
        let e = parse_v2_wait(404, b"404 page not found\n").err().unwrap();
        assert!(e.contains("--enable-v2"), "{e}");
        assert!(parse_v2_listing(
            403,
            Some(1),
            br#"{"errorCode":110,"message":"The request requires user authentication"}"#
        )
        .is_err());
        for junk in [
            &b""[..],
            b"[]",
            b"null",
            b"{\"node\":7}",
            b"{\"node\":{\"dir\":true,\"nodes\":[1,{\"dir\":\"x\"}]}}",
        ] {
            let _ = parse_v2_listing(200, Some(1), junk);
        }
    }

    #[test]
    fn v2_wait() {
        let set = br#"{"action":"set","node":{"key":"/jodis/demo/proxy-a","value":"h:1","modifiedIndex":15,"createdIndex":15},"prevNode":{"key":"/jodis/demo/proxy-a","value":"h:2","modifiedIndex":9}}"#;
        assert_eq!(parse_v2_wait(200, set), Ok(V2Wait::Changed(Some(15))));
        let expire =
            br#"{"action":"expire","node":{"key":"/jodis/demo/proxy-a","modifiedIndex":16}}"#;
        assert_eq!(parse_v2_wait(200, expire), Ok(V2Wait::Changed(Some(16))));
        let cleared = br#"{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [1008/7]","index":2007}"#;
        assert!(matches!(
            parse_v2_wait(400, cleared),
            Ok(V2Wait::Cleared(_))
        ));
        assert!(parse_v2_wait(200, b"{}").is_err());
        assert!(parse_v2_wait(200, b"not json").is_err());
        assert!(
            parse_v2_wait(500, br#"{"errorCode":300,"message":"Raft Internal Error"}"#).is_err()
        );
    }

    #[test]
    fn endpoints() {
        let v2 = |e| endpoint(e, "etcd v2", false);
        assert_eq!(v2("127.0.0.1:2379"), Ok("127.0.0.1:2379".into()));
        assert_eq!(v2("http://h:2379/"), Ok("h:2379".into()));
        let e = v2("https://h:2379").unwrap_err();
        assert!(
            e.contains("TLS is not set") && e.starts_with("etcd v2:"),
            "{e}"
        );
        assert!(v2("http://h:2379/v2").is_err());
        assert!(v2("").is_err());
        let tls = |e| endpoint(e, "etcd", true);
        assert_eq!(tls("https://h:2379"), Ok("h:2379".into()));
        assert_eq!(tls("h:2379"), Ok("h:2379".into()));
        let e = tls("http://h:2379").unwrap_err();
        assert!(e.contains("TLS is set"), "{e}");
    }

    #[test]
    fn http_framing() {
        let head = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Etcd-Index: 77\r\nTransfer-Encoding: chunked",
        )
        .unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                etcd_index: Some(77),
                content_length: None,
                chunked: true
            }
        );
        assert!(parse_head(b"garbage").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1").is_err());

        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        assert!(chunked_complete(body));
        assert_eq!(dechunk(body).unwrap(), b"hello world");
        assert!(!chunked_complete(b"5\r\nhel"));
        assert!(dechunk(b"5\r\nhel").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"ffffffffffffffffff\r\n").is_err());
        assert!(dechunk(b"").is_err());
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut b = Backoff::new((Duration::from_millis(100), Duration::from_secs(5)));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn constructors() {
        let d = Etcd::codis3(&["h:1", " "], "/demo/");
        assert_eq!(d.endpoints, vec!["h:1".to_owned()]);
        assert!(matches!(d.source, Source::V2Dir(ref p) if p == "/jodis/demo"));
        let d = Etcd::prefix(&["h:1"], "/svc/").request_timeout(Duration::ZERO);
        assert_eq!(d.request_timeout, MIN_KNOB);
    }

    fn all_knobs_at(base: Duration, max: Duration) -> Etcd {
        Etcd::prefix(&["h:1"], "/svc/")
            .request_timeout(max)
            .keep_alive(max, max)
            .progress_interval(max)
            .poll_timeout(max)
            .backoff(base, max)
    }

    #[test]
    fn huge_knobs_are_capped() {
        for base in [Duration::from_secs(1), Duration::MAX] {
            let d = all_knobs_at(base, Duration::MAX);
            assert_eq!(d.request_timeout, MAX_KNOB);
            assert_eq!(d.keep_alive, (MAX_KNOB, MAX_KNOB));
            assert_eq!(d.progress_interval, MAX_KNOB);
            assert_eq!(d.poll_timeout, MAX_KNOB);
            assert_eq!(d.backoff, (base.min(MAX_KNOB), MAX_KNOB));
        }
        assert_eq!(MAX_KNOB, Duration::from_secs(100 * 365 * 24 * 3600));
        // Values within the bounds are kept as given.
        let (b, m) = (Duration::from_secs(2), Duration::from_secs(1234));
        let d = all_knobs_at(b, m);
        assert_eq!(
            (
                d.request_timeout,
                d.keep_alive,
                d.progress_interval,
                d.poll_timeout,
                d.backoff
            ),
            (m, (m, m), m, m, (b, m))
        );
    }

    #[test]
    fn deadlines_with_the_largest_knobs_do_not_panic() {
        let d = all_knobs_at(Duration::MAX, Duration::MAX);
        let now = Instant::now();
        let (rt, pi) = (d.request_timeout, d.progress_interval);
        // Every state of the v3 watch loop.
        for created in [false, true] {
            for asked in [None, Some(now)] {
                assert!(watch_deadline(created, now, asked, rt, pi) > now);
            }
        }
        // `http_get`'s header and body deadlines (the body one bounded by `poll_timeout`),
        // and hyper's keep-alive deadlines (`instant + interval`, `instant + timeout`).
        for knob in [rt, d.poll_timeout, d.keep_alive.0, d.keep_alive.1] {
            assert!(deadline_after(now, knob) > now);
            assert!(now.checked_add(knob).is_some());
        }
        // The fallback, for a duration no setter lets through.
        assert!(deadline_after(now, Duration::MAX) >= now);
        // The retry backoff, however many failures in a row.
        let mut b = Backoff::new(d.backoff);
        b.failures = u32::MAX - 1;
        for _ in 0..3 {
            assert!(b.next_delay() <= MAX_KNOB);
        }
    }
}
