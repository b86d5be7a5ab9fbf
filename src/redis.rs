//! Pooling Redis connections: [`RedisManager`] and the connection it hands out,
//! [`RedisConnection`] (feature `redis`).
//!
//! ```no_run
//! use connpool::redis::{redis, RedisManager};
//! use connpool::Pool;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::builder(RedisManager::new("redis://127.0.0.1:6379/0")?).build()?;
//! let mut conn = pool.get().await?;
//! redis::cmd("SET").arg("greeting").arg("hello").query_async::<()>(&mut *conn).await?;
//! let v: String = redis::cmd("GET").arg("greeting").query_async(&mut *conn).await?;
//! assert_eq!(v, "hello");
//! # Ok(()) }
//! ```
//!
//! The [`redis`] crate is re-exported as `connpool::redis::redis`, so your code and
//! connpool agree on one version of it. Its `AsyncCommands` helpers work too, since
//! [`RedisConnection`] implements [`redis::aio::ConnectionLike`]:
//! `conn.set::<_, _, ()>("k", 1).await?` on a `Pooled<RedisManager>`.
//!
//! # One socket per pooled connection
//!
//! Each pooled connection is its own TCP socket, dialed by the manager, with a
//! [`MultiplexedConnection`] over it and that connection's driver task spawned on the current
//! tokio runtime (the redis crate has had no single-socket async connection since 0.30; this is
//! what deadpool-redis and bb8-redis pool too). The driver task ends when the server closes the
//! socket, so a dead connection is known without a round trip; dropping a [`RedisConnection`]
//! aborts its driver without blocking, and the socket closes when its runtime next runs the
//! aborted task (at once on a multi-thread runtime; on a current-thread runtime, at its next
//! poll).
//!
//! # The URL is a template
//!
//! [`RedisManager::new`] takes a `redis://[[user]:password@]host[:port][/db][?client_name=NAME]`
//! URL. Every connection is set up with the URL's credentials (`AUTH`), database (`SELECT`)
//! and client name (`CLIENT SETNAME`, from the `client_name` query parameter, as in go-redis),
//! whichever backend it is dialed to: each backend's address (`host:port`, from the pool's
//! backend list or its discovery) replaces the URL's host and port. A pool with neither a
//! backend list nor discovery has one implicit backend whose address is empty; the manager then
//! dials the URL's own host and port.
//!
//! ```no_run
//! use connpool::redis::RedisManager;
//! use connpool::{Backend, Pool};
//!
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Two Codis proxies (or Redis servers) sharing one password, database and client name
//! // (a proxy that refuses `CLIENT SETNAME`, as Codis and twemproxy do, is warned about once
//! // and its connections stay unnamed).
//! let manager = RedisManager::new("redis://:s3cret@placeholder/2?client_name=billing")?;
//! let pool = Pool::builder(manager)
//!     .backends([Backend::new("10.0.0.1:19000"), Backend::new("10.0.0.2:19000")])
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! # Which connections go back to the pool
//!
//! A [`RedisConnection`] watches the commands that pass through it (as redigo's pooled
//! connection did with its state bits) and answers [`Manager::is_reusable`] with `false`, so the
//! pool closes it instead of lending it to the next user, when:
//!
//! - a command failed with an I/O or protocol error, or timed out waiting for its reply
//!   (the socket is in an unknown state);
//! - a command future was dropped before its reply arrived (a cancelled `BLPOP` would otherwise
//!   hold up the next user's commands behind it, a cancelled `EXEC` leaves the transaction's
//!   fate unknown): the connection is never desynchronised for the next user, only closed;
//! - it is inside `MULTI` (until `EXEC` or `DISCARD`) or has keys `WATCH`ed (until a
//!   transaction's `EXEC` or `DISCARD`, or `UNWATCH`; an `EXEC` or `DISCARD` outside `MULTI` is
//!   an error that leaves the `WATCH` in force);
//! - it ever sent `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE` or `MONITOR` (such a connection
//!   carries a stream of messages that the next user would read as replies);
//! - it changed its session: `SELECT` of another database than the URL's, `AUTH`, `HELLO`,
//!   `RESET`, `QUIT`, `READONLY`, `READWRITE`, or `CLIENT` `REPLY`, `SETNAME`, `TRACKING`,
//!   `NO-EVICT` or `NO-TOUCH` (the next user would inherit it);
//! - its driver task has ended (the server closed the socket).
//!
//! An error *reply* (`-ERR ...`, for instance a Codis proxy's `ERR backend conn reset`, or
//! `WRONGTYPE`) is a command error, not a broken connection: the connection stays reusable.
//! A transaction built with [`redis::pipe().atomic()`](::redis::Pipeline::atomic) sends
//! `MULTI ... EXEC` in one go and leaves the connection clean, also after a `WATCH` (the
//! usual optimistic lock: `WATCH`, read, then an atomic pipeline).
//!
//! An I/O error on a connection names its server (`redis connection to 10.0.0.1:19000:
//! Connection reset by peer`) and keeps its `io::ErrorKind`, so
//! [`RedisError::is_connection_dropped`] and [`RedisError::is_timeout`] still answer.
//!
//! [`Manager::check`] (test-on-borrow, keepalive) fails at once when the driver task has ended
//! or the connection is not reusable, and otherwise sends `PING`.
//!
//! # Timeouts
//!
//! Each command waits at most [`RedisManager::response_timeout`] for its reply (default 3 s,
//! go-redis' read timeout: a silent server must not pin a pooled connection forever; the redis
//! crate's own 500 ms default is tight for a busy server). A command that times out leaves its
//! connection not reusable. Set it above your longest blocking command (`BLPOP`, `XREAD
//! BLOCK`), or to `None`. Connecting is bounded by the pool's `connect_timeout`, checks by its
//! `check_timeout`.
//!
//! # Limits
//!
//! The manager dials TCP (`redis://`); TLS (`rediss://`) and Unix sockets are not supported.
//! A connection belongs to the tokio runtime it was dialed on (its socket is registered with
//! that runtime's I/O driver, and its driver task runs there): the runtime of the get that
//! dialed it, or the pool's own for `min_idle` refills (see [`Builder::build`]'s runtimes).
//! If that runtime shuts down while the pool is used from another, its connections stop
//! working: the next command on one fails, which marks it broken, and it is closed when it
//! comes back (one checked on borrow fails its check and is closed instead).
//!
//! [`Builder::build`]: crate::Builder::build

pub use ::redis;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::{
    Arg, AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, Value,
};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::backends::Backend;
use crate::manager::Manager;

/// The default [`RedisManager::response_timeout`]: 3 s, go-redis' read timeout.
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A [`Manager`] for Redis (and Redis-protocol proxies such as Codis): dials one socket per
/// pooled connection from a `redis://` URL template. See the [module docs](self).
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use connpool::redis::{redis, RedisManager};
/// use connpool::{Pool, TestOnBorrow};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = RedisManager::new("redis://127.0.0.1:6379/?client_name=api")?
///     .response_timeout(Some(Duration::from_secs(1)));
/// let pool = Pool::builder(manager)
///     .max_size(32)
///     // The server closes clients idle for `timeout 300`: ping idle connections before that.
///     .keepalive(Some(Duration::from_secs(60)))
///     .test_on_borrow(TestOnBorrow::IdleFor(Duration::from_secs(1)))
///     .build()?;
/// let mut conn = pool.get().await?;
/// let n: i64 = redis::cmd("INCR").arg("hits").query_async(&mut *conn).await?;
/// # let _ = n;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisManager {
    /// The URL's own host, dialed for a backend whose address is empty.
    host: String,
    /// The URL's own port.
    port: u16,
    /// Credentials, database and protocol, applied to every connection.
    info: RedisConnectionInfo,
    /// `CLIENT SETNAME` after connecting, from the URL's `client_name` parameter.
    client_name: Option<String>,
    response_timeout: Option<Duration>,
    /// Set once a server refused `CLIENT SETNAME` (warned about once per manager).
    name_refused: Arc<AtomicBool>,
}

impl RedisManager {
    /// A manager for the `redis://` URL `url`: its host and port are the implicit backend's;
    /// its user, password, database (path) and `client_name` query parameter apply to every
    /// backend. Connects nothing.
    ///
    /// # Errors
    ///
    /// A [`RedisError`] of kind [`ErrorKind::InvalidClientConfig`] when the URL does not parse,
    /// is not a TCP (`redis://`) URL, or its `client_name` has a space or a control character
    /// (which Redis refuses: every connect would fail).
    ///
    /// # Example
    ///
    /// ```
    /// use connpool::redis::RedisManager;
    ///
    /// let m = RedisManager::new("redis://:secret@127.0.0.1:6380/3?client_name=worker").unwrap();
    /// assert_eq!(m.db(), 3);
    /// assert_eq!(m.client_name(), Some("worker"));
    /// assert!(RedisManager::new("not a url").is_err());
    /// ```
    pub fn new(url: &str) -> Result<Self, RedisError> {
        let parsed = url::Url::parse(url).map_err(|e| {
            RedisError::from((
                ErrorKind::InvalidClientConfig,
                "invalid redis URL",
                e.to_string(),
            ))
        })?;
        let client_name = parsed
            .query_pairs()
            .find(|(k, _)| k == "client_name")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty());
        if let Some(name) = &client_name {
            if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "client_name may not contain spaces or control characters",
                    name.clone(),
                )));
            }
        }
        let info = parsed.into_connection_info()?;
        let (host, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            _ => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "connpool's RedisManager dials TCP only (a redis:// URL)",
                )))
            }
        };
        Ok(Self {
            host,
            port,
            info: info.redis_settings().clone(),
            client_name,
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
            name_refused: Arc::new(AtomicBool::new(false)),
        })
    }

    /// How long a command waits for its reply before failing (and leaving its connection not
    /// reusable). Default 3 s; `None` waits forever.
    #[must_use]
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets (or, with `None`, clears) the name each connection gives itself with
    /// `CLIENT SETNAME`, overriding the URL's `client_name`. Names may not contain spaces (Redis
    /// refuses them, and every connect then fails with its error). A proxy that does not offer
    /// `CLIENT` (Codis, twemproxy) is warned about once; its connections stay unnamed.
    #[must_use]
    pub fn with_client_name(mut self, name: Option<&str>) -> Self {
        self.client_name = name.map(str::to_owned);
        self
    }

    /// The database every connection selects (the URL's path; 0 by default).
    pub fn db(&self) -> i64 {
        self.info.db()
    }

    /// The name every connection sets with `CLIENT SETNAME`, if any.
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }

    /// The address dialed for `backend`: its own, or the URL's when it has none.
    fn target<'a>(&'a self, backend: &'a Backend) -> Target<'a> {
        if backend.addr().is_empty() {
            Target::Url(&self.host, self.port)
        } else {
            Target::Addr(backend.addr())
        }
    }
}

impl fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("RedisManager")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.info.db())
            .field("username", &self.info.username())
            .field("password", &self.info.password().map(|_| "<redacted>"))
            .field("client_name", &self.client_name)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

enum Target<'a> {
    Url(&'a str, u16),
    Addr(&'a str),
}

impl Target<'_> {
    async fn dial(&self) -> io::Result<TcpStream> {
        match *self {
            Target::Url(host, port) => TcpStream::connect((host, port)).await,
            Target::Addr(addr) => TcpStream::connect(addr).await,
        }
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Target::Url(host, port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Url(host, port) => write!(f, "{host}:{port}"),
            Target::Addr(addr) => f.write_str(addr),
        }
    }
}

impl Manager for RedisManager {
    type Connection = RedisConnection;
    type Error = RedisError;

    /// Dials the backend's address (or the URL's), sets up the connection (`AUTH`, `SELECT`,
    /// `CLIENT SETNAME` as the URL says), and spawns its driver task.
    async fn connect(&self, backend: &Backend) -> Result<RedisConnection, RedisError> {
        let target = self.target(backend);
        // The address goes into the error: the implicit backend's own address is empty.
        let stream = target
            .dial()
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("dialing {target}: {e}")))?;
        stream.set_nodelay(true)?;
        let config = AsyncConnectionConfig::new().set_response_timeout(self.response_timeout);
        let (inner, driver) =
            MultiplexedConnection::new_with_config(&self.info, stream, config).await?;
        // From here the connection owns the driver: if this future is dropped (the pool's
        // connect_timeout), dropping `conn` aborts the task and closes the socket.
        let mut conn = RedisConnection {
            inner,
            driver: tokio::spawn(driver),
            state: State::default(),
            db: self.info.db(),
            peer: target.to_string(),
        };
        if let Some(name) = &self.client_name {
            // On the inner connection: the pool's own setup is not a user's session change.
            let named = ::redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .query_async::<()>(&mut conn.inner)
                .await;
            match named {
                Ok(()) => {}
                // An error reply: a proxy that does not offer CLIENT (Codis, twemproxy). The
                // connection works; it just has no name.
                Err(e) if matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension) => {
                    // Relaxed: only decides whether this is the first warning.
                    if !self.name_refused.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            backend = %conn.peer, error = %e,
                            "connpool::redis: CLIENT SETNAME refused; connections stay unnamed"
                        );
                    }
                }
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(backend = %conn.peer, db = conn.db, "connpool::redis: connected");
        Ok(conn)
    }

    /// Fails at once when the connection is broken or its driver task has ended; otherwise
    /// `PING`.
    async fn check(&self, conn: &mut RedisConnection) -> Result<(), RedisError> {
        if conn.driver.is_finished() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("redis connection to {} closed by the server", conn.peer),
            )
            .into());
        }
        if !conn.is_reusable() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "redis connection to {} is not reusable ({:?})",
                    conn.peer, conn.state
                ),
            )
            .into());
        }
        let pong: String = ::redis::cmd("PING").query_async(conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "PING did not answer PONG",
                pong,
            )))
        }
    }

    fn is_reusable(&self, conn: &mut RedisConnection) -> bool {
        conn.is_reusable()
    }
}

/// One pooled Redis connection: its own socket, a [`MultiplexedConnection`] over it, and the
/// state its commands left it in. Use it with `query_async(&mut *conn)` or the redis crate's
/// `AsyncCommands`; see the [module docs](self) for when it is not reused.
///
/// Not `Clone`: a clone would escape the state tracking. Dropping it aborts its driver task
/// and closes the socket.
pub struct RedisConnection {
    inner: MultiplexedConnection,
    /// The spawned driver of `inner`: reads replies and writes requests. It finishes when the
    /// socket closes.
    driver: JoinHandle<()>,
    state: State,
    /// The database the URL selected.
    db: i64,
    /// The address dialed, for errors and logs.
    peer: String,
}

impl RedisConnection {
    /// `false` when the pool must not lend this connection again: broken, a reply unread,
    /// inside `MULTI` or `WATCH`, subscribed, monitoring, session changed, or closed by the
    /// server. See the [module docs](self).
    pub fn is_reusable(&self) -> bool {
        self.state.is_clean() && !self.driver.is_finished()
    }

    /// `true` when the connection can carry no more commands: an I/O, protocol or timeout
    /// error happened on it, or the server closed it.
    pub fn is_broken(&self) -> bool {
        self.state.has(State::BROKEN) || self.driver.is_finished()
    }

    /// The address this connection was dialed to (`host:port`).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Records a reply (or its failure). An error that is a server's reply leaves the
    /// connection usable; any other error (I/O, protocol, timeout) breaks it, and an I/O error
    /// is given the server's address (keeping its `io::ErrorKind`, so `is_io_error`,
    /// `is_connection_dropped` and `is_timeout` still answer).
    fn finish<T>(&mut self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        match result {
            Ok(v) => {
                self.state.clear(State::IN_FLIGHT);
                Ok(v)
            }
            Err(e) if is_reply(&e) => {
                self.state.clear(State::IN_FLIGHT);
                Err(e)
            }
            Err(e) => {
                self.state.set(State::BROKEN);
                tracing::debug!(backend = %self.peer, error = %e, "connpool::redis: connection broken");
                match io_kind(&e) {
                    Some(kind) => Err(io::Error::new(
                        kind,
                        format!("redis connection to {}: {e}", self.peer),
                    )
                    .into()),
                    None => Err(e),
                }
            }
        }
    }
}

impl Drop for RedisConnection {
    fn drop(&mut self) {
        // Never blocks: the task is cancelled the next time the runtime looks at it, and its
        // socket is closed then.
        self.driver.abort();
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("peer", &self.peer)
            .field("db", &self.db)
            .field("state", &self.state)
            .field("driver_finished", &self.driver.is_finished())
            .finish()
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.state.before(cmd, self.db);
            // IN_FLIGHT is set: if this future is dropped here, the connection stays marked.
            let result = self.inner.req_packed_command(cmd).await;
            self.finish(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.state.before_pipeline(pipeline, self.db);
            let result = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.finish(result)
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// The `io::ErrorKind` of an I/O error (the redis crate keeps it behind an `Arc`).
fn io_kind(e: &RedisError) -> Option<io::ErrorKind> {
    let source = std::error::Error::source(e)?;
    if let Some(io) = source.downcast_ref::<io::Error>() {
        return Some(io.kind());
    }
    source
        .downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
        .and_then(|inner| inner.downcast_ref::<io::Error>())
        .map(io::Error::kind)
}

/// Is `e` a reply from the server (`-ERR ...`, `WRONGTYPE`, `EXECABORT`, an unknown code such
/// as a proxy's), as opposed to an I/O, protocol or timeout error?
fn is_reply(e: &RedisError) -> bool {
    // `Client` errors are raised before anything is sent (e.g. an empty command).
    matches!(
        e.kind(),
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::Client
    )
}

/// The state bits of a connection, set by the commands sent through it (a plain field: only
/// the `&mut` holder touches it).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct State(u8);

impl State {
    /// A command was sent and its reply has not been read yet.
    const IN_FLIGHT: u8 = 1;
    /// An I/O, protocol or timeout error: the socket is in an unknown state.
    const BROKEN: u8 = 1 << 1;
    /// Inside MULTI.
    const MULTI: u8 = 1 << 2;
    /// Keys are WATCHed.
    const WATCH: u8 = 1 << 3;
    /// SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE was sent (sticky).
    const SUBSCRIBED: u8 = 1 << 4;
    /// MONITOR was sent (sticky).
    const MONITOR: u8 = 1 << 5;
    /// The session differs from the URL's: another database, AUTH, HELLO, RESET, QUIT,
    /// CLIENT REPLY (sticky, except SELECT back to the URL's database).
    const SESSION: u8 = 1 << 6;
    /// SELECT of a database other than the URL's.
    const OTHER_DB: u8 = 1 << 7;

    const NAMES: [(u8, &'static str); 8] = [
        (Self::IN_FLIGHT, "in_flight"),
        (Self::BROKEN, "broken"),
        (Self::MULTI, "multi"),
        (Self::WATCH, "watch"),
        (Self::SUBSCRIBED, "subscribed"),
        (Self::MONITOR, "monitor"),
        (Self::SESSION, "session_changed"),
        (Self::OTHER_DB, "other_db"),
    ];

    fn has(self, bits: u8) -> bool {
        self.0 & bits != 0
    }

    fn set(&mut self, bits: u8) {
        self.0 |= bits;
    }

    fn clear(&mut self, bits: u8) {
        self.0 &= !bits;
    }

    fn is_clean(self) -> bool {
        self.0 == 0
    }

    /// Updates the bits for `cmd`, about to be sent. Transitions are applied at send time:
    /// if the reply never arrives, IN_FLIGHT or BROKEN keeps the connection out of the pool
    /// anyway.
    fn before(&mut self, cmd: &Cmd, db: i64) {
        self.set(Self::IN_FLIGHT);
        let mut args = cmd.args_iter().map(|a| match a {
            Arg::Simple(bytes) => bytes,
            _ => &[][..],
        });
        let Some(name) = args.next() else { return };
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        if is("MULTI") {
            self.set(Self::MULTI);
        } else if is("EXEC") || is("DISCARD") {
            // Outside MULTI both are errors that change nothing: a WATCH stays in force.
            if self.has(Self::MULTI) {
                self.clear(Self::MULTI | Self::WATCH);
            }
        } else if is("WATCH") {
            self.set(Self::WATCH);
        } else if is("UNWATCH") {
            self.clear(Self::WATCH);
        } else if is("SUBSCRIBE") || is("PSUBSCRIBE") || is("SSUBSCRIBE") {
            self.set(Self::SUBSCRIBED);
        } else if is("MONITOR") {
            self.set(Self::MONITOR);
        } else if is("SELECT") {
            let target = args
                .next()
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|s| s.trim().parse::<i64>().ok());
            if target == Some(db) {
                self.clear(Self::OTHER_DB);
            } else {
                self.set(Self::OTHER_DB);
            }
        } else if is("AUTH")
            || is("HELLO")
            || is("RESET")
            || is("QUIT")
            || is("READONLY")
            || is("READWRITE")
            || (is("CLIENT")
                && args.next().is_some_and(|sub| {
                    ["REPLY", "SETNAME", "TRACKING", "NO-EVICT", "NO-TOUCH"]
                        .iter()
                        .any(|s| sub.eq_ignore_ascii_case(s.as_bytes()))
                }))
        {
            self.set(Self::SESSION);
        }
    }

    /// [`before`](Self::before) for each command of `pipeline`. An atomic pipeline sends its
    /// commands between a `MULTI` and an `EXEC` of its own (not among `cmd_iter`'s): counted
    /// as such, so it ends a `WATCH` as a transaction does.
    fn before_pipeline(&mut self, pipeline: &Pipeline, db: i64) {
        let atomic = pipeline.is_transaction();
        if atomic {
            self.set(Self::MULTI);
        }
        for cmd in pipeline.cmd_iter() {
            self.before(cmd, db);
        }
        if atomic {
            self.clear(Self::MULTI | Self::WATCH);
        }
        self.set(Self::IN_FLIGHT);
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return f.write_str("clean");
        }
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.has(bit) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(cmds: &[Cmd]) -> State {
        let mut s = State::default();
        for c in cmds {
            s.before(c, 0);
            s.clear(State::IN_FLIGHT);
        }
        s
    }

    fn c(args: &[&str]) -> Cmd {
        let mut cmd = ::redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd
    }

    #[test]
    fn transactions_and_watch() {
        assert!(after(&[c(&["MULTI"])]).has(State::MULTI));
        assert!(after(&[c(&["multi"]), c(&["SET", "k", "v"]), c(&["EXEC"])]).is_clean());
        assert!(after(&[c(&["MULTI"]), c(&["DISCARD"])]).is_clean());
        assert!(after(&[c(&["WATCH", "k"])]).has(State::WATCH));
        assert!(after(&[c(&["WATCH", "k"]), c(&["UNWATCH"])]).is_clean());
        assert!(after(&[c(&["WATCH", "k"]), c(&["MULTI"]), c(&["EXEC"])]).is_clean());
        assert!(after(&[c(&["WATCH", "k"]), c(&["MULTI"])]).has(State::WATCH | State::MULTI));
        // Outside MULTI, EXEC and DISCARD are errors: the WATCH stays.
        assert!(after(&[c(&["WATCH", "k"]), c(&["DISCARD"])]).has(State::WATCH));
        assert!(after(&[c(&["WATCH", "k"]), c(&["EXEC"])]).has(State::WATCH));
    }

    #[test]
    fn an_atomic_pipeline_is_a_transaction() {
        let mut s = State::default();
        s.before(&c(&["WATCH", "k"]), 0);
        let mut p = ::redis::pipe();
        p.atomic().cmd("SET").arg("k").arg("v").cmd("INCR").arg("n");
        s.before_pipeline(&p, 0);
        s.clear(State::IN_FLIGHT);
        assert!(s.is_clean(), "{s:?}");
        // A plain pipeline does not end the WATCH; one with SUBSCRIBE stays dirty.
        let mut s = State::default();
        s.before(&c(&["WATCH", "k"]), 0);
        let mut p = ::redis::pipe();
        p.cmd("SET").arg("k").arg("v");
        s.before_pipeline(&p, 0);
        assert!(s.has(State::WATCH));
        let mut s = State::default();
        let mut p = ::redis::pipe();
        p.atomic().cmd("SUBSCRIBE").arg("ch");
        s.before_pipeline(&p, 0);
        assert!(s.has(State::SUBSCRIBED));
    }

    #[test]
    fn sticky_states() {
        for cmd in [
            c(&["SUBSCRIBE", "ch"]),
            c(&["psubscribe", "c*"]),
            c(&["SSUBSCRIBE", "ch"]),
            c(&["MONITOR"]),
            c(&["AUTH", "pw"]),
            c(&["HELLO", "3"]),
            c(&["RESET"]),
            c(&["QUIT"]),
            c(&["CLIENT", "reply", "off"]),
            c(&["CLIENT", "SETNAME", "x"]),
            c(&["client", "tracking", "on"]),
            c(&["CLIENT", "NO-EVICT", "on"]),
            c(&["CLIENT", "NO-TOUCH", "on"]),
            c(&["READONLY"]),
            c(&["READWRITE"]),
        ] {
            let s = after(&[cmd.clone(), c(&["EXEC"]), c(&["UNWATCH"])]);
            assert!(!s.is_clean(), "{:?} should leave the connection dirty", cmd);
        }
        // Reading about the session changes nothing.
        assert!(after(&[c(&["CLIENT", "GETNAME"]), c(&["CLIENT", "ID"])]).is_clean());
    }

    #[test]
    fn select_tracks_the_template_db() {
        assert!(after(&[c(&["SELECT", "0"])]).is_clean());
        assert!(after(&[c(&["SELECT", "3"])]).has(State::OTHER_DB));
        assert!(after(&[c(&["SELECT", "3"]), c(&["SELECT", "0"])]).is_clean());
        assert!(after(&[c(&["SELECT", "x"])]).has(State::OTHER_DB));
    }

    #[test]
    fn in_flight_stays_until_the_reply() {
        let mut s = State::default();
        s.before(&c(&["GET", "k"]), 0);
        assert!(!s.is_clean());
        assert_eq!(format!("{s:?}"), "in_flight");
    }

    #[test]
    fn reply_errors_do_not_break() {
        let reply = RedisError::from((ErrorKind::Client, "empty command"));
        assert!(is_reply(&reply));
        let io: RedisError = io::Error::from(io::ErrorKind::UnexpectedEof).into();
        assert!(!is_reply(&io));
        let timeout: RedisError = io::Error::from(io::ErrorKind::TimedOut).into();
        assert!(!is_reply(&timeout));
        let parse = RedisError::from((ErrorKind::Parse, "bad"));
        assert!(!is_reply(&parse));
    }

    #[test]
    fn io_errors_keep_their_kind() {
        let e: RedisError = io::Error::from(io::ErrorKind::BrokenPipe).into();
        assert_eq!(io_kind(&e), Some(io::ErrorKind::BrokenPipe));
        assert_eq!(io_kind(&RedisError::from((ErrorKind::Parse, "bad"))), None);
    }

    #[test]
    fn url_template() {
        let m = RedisManager::new("redis://u:p%40ss@example.com:7000/5?client_name=a-b").unwrap();
        assert_eq!((m.host.as_str(), m.port, m.db()), ("example.com", 7000, 5));
        assert_eq!(m.info.password(), Some("p@ss"));
        assert_eq!(m.client_name(), Some("a-b"));
        // Names Redis would refuse on every connect are refused here, at once.
        for bad in ["a%20b", "a%0Ab", "a%09b"] {
            let e = RedisManager::new(&format!("redis://h/?client_name={bad}")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidClientConfig, "{bad}: {e}");
        }
        assert!(!format!("{m:?}").contains("p@ss"));
        let m = RedisManager::new("redis://127.0.0.1").unwrap();
        assert_eq!((m.port, m.db(), m.client_name()), (6379, 0, None));
        assert!(RedisManager::new("redis://h/notanumber").is_err());
        assert!(RedisManager::new("redis+unix:///tmp/redis.sock").is_err());
        assert!(RedisManager::new("rediss://h").is_err());
        let b = Backend::new("");
        assert_eq!(m.target(&b).to_string(), "127.0.0.1:6379");
        let b = Backend::new("10.1.1.1:19000");
        assert_eq!(m.target(&b).to_string(), "10.1.1.1:19000");
    }
}
