//! [`Config`]: the pool's settings as plain data, with documented defaults, and their
//! validation.

use std::time::Duration;

use crate::balance::Balance;
use crate::error::BuildError;

/// When a connection taken from the idle queue is checked (`Manager::check`) before it is
/// handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TestOnBorrow {
    /// Never: fastest; rely on keepalive and on callers retrying.
    Never,
    /// Always: one round trip per get; the safest and the slowest.
    Always,
    /// Only when the connection has been quiet (neither used nor checked) for at least this
    /// long: a busy pool pays nothing, a pool waking from a lull checks its stale connections.
    ///
    /// With an `idle_timeout` at or below this duration, a connection is closed by the idle
    /// timeout before it has been quiet that long, so no check on borrow runs: the idle
    /// timeout does the work. This is accepted (not a build error, unlike such a
    /// `keepalive`), so that a short `idle_timeout` does not make the default `IdleFor(500
    /// ms)` invalid.
    IdleFor(Duration),
}

/// Every setting of a pool. Build one through `Pool::builder`; each field's default and why
/// is given below.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Most connections open at once (go-redis PoolSize, database/sql MaxOpen, redigo
    /// MaxActive). Default 10: enough for a busy service's one process, few enough that a fleet
    /// of processes does not exhaust a server's connection limit.
    pub max_size: usize,
    /// Most idle connections kept; more are closed when they come back, unless a get is
    /// waiting (it is handed the connection). Default: `max_size` (`None` here), so a pool
    /// never closes a connection it will need again at its next peak.
    pub max_idle: Option<usize>,
    /// Ceiling for `Pool::set_max_size` (the idle queue's fixed capacity). Default 4 ×
    /// `max_size` (`None` here): room to grow without reallocating.
    pub max_size_limit: Option<usize>,
    /// Connections kept open even when idle (MinIdleConns, the generic pool's Initialize).
    /// Default 0: a pool opens nothing until it is used, like go-redis and database/sql.
    /// They are still retired by `idle_timeout` and `max_lifetime` (as go-redis does; HikariCP
    /// exempts them from its idle timeout), and the maintenance pass opens new ones in their
    /// place: with `min_idle` set, an `idle_timeout` of `None` (and `keepalive`) keeps the same
    /// connections open through quiet spells.
    pub min_idle: usize,
    /// How long a whole `get()` may take: waiting for a slot, dialing and checks together.
    /// `Duration::ZERO` means never wait, for a slot or for discovery's first list: a get
    /// that finds no slot fails at once (`Error::Exhausted`), and any get before the first
    /// list with `Error::NoBackends`; a get that has a slot still dials and checks, bounded
    /// only by `connect_timeout` (per attempt, up to `connect_attempts` backends) and
    /// `check_timeout`. Default 30 s, HikariCP's: a request should fail rather than hang when
    /// the pool is starved.
    pub wait_timeout: Duration,
    /// How long one connect may take. Default 5 s: longer than any healthy handshake on a LAN,
    /// short enough to fail over to the next backend.
    pub connect_timeout: Duration,
    /// How long one check may take. Default 2 s: a PING answers in microseconds; a check that
    /// takes seconds means the connection is dead.
    pub check_timeout: Duration,
    /// Idle connections unused for this long are closed (ConnMaxIdleTime). Default 10 min,
    /// HikariCP's: below common server-side idle limits.
    pub idle_timeout: Option<Duration>,
    /// Connections older than this are closed (ConnMaxLifetime), jittered down by up to 2.5 % so
    /// connections opened together do not expire together. Default 30 min, HikariCP's: rotates
    /// connections across backends and server restarts.
    pub max_lifetime: Option<Duration>,
    /// When idle connections are checked before use. Default `IdleFor(500 ms)`: free under
    /// load, and catches connections that went stale in a lull (the Radix EOF bug).
    pub test_on_borrow: TestOnBorrow,
    /// Check idle connections quiet for at least this long, in the background (a heartbeat
    /// below the server's idle timeout). Default `None`: set it a little below your server's
    /// `timeout`. Must be below `idle_timeout` (else no connection would live to be pinged).
    /// A pass pings in batches of up to 8 at once, never more than it leaves in the idle
    /// queue (half of the idle connections, rounded up: a lone idle connection is pinged
    /// too), so gets find the others; a connection out for its ping keeps its slot.
    pub keepalive: Option<Duration>,
    /// Consecutive failed background checks before an idle connection is closed
    /// (PingMaxRetries), a `keepalive` interval apart. Default 3: one lost packet does not
    /// cost a connection. A check that times out or panics closes the connection at once (its
    /// state is unknown: a reply may still be on its way), and so does a failed check after
    /// which `Manager::is_reusable` says the connection is not reusable. The redis manager
    /// marks a connection broken on any I/O, protocol or timeout error, so there only a ping
    /// answered with an error reply (or not with `PONG`) is retried.
    pub check_retries: u32,
    /// How new connections are spread over the backends. Default round-robin.
    pub balance: Balance,
    /// Most backends one get tries to dial before it gives up. Default 3: fails over past a
    /// dead backend or two without turning one get into a storm.
    pub connect_attempts: usize,
    /// First backoff of a backend whose connect failed; doubles per failure. Default 100 ms.
    pub backoff_base: Duration,
    /// Longest backoff. Default 10 s: a recovered backend is probed back in within seconds.
    pub backoff_max: Duration,
    /// How often the maintenance task runs (it also runs at half of the shortest of
    /// `idle_timeout`, `keepalive`, `max_lifetime` if that is shorter). Default 1 s.
    pub maintenance_interval: Duration,
    /// A name for logs and the `metrics` label `pool`. Default `"connpool"`.
    pub name: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_size: 10,
            max_idle: None,
            max_size_limit: None,
            min_idle: 0,
            wait_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            check_timeout: Duration::from_secs(2),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            test_on_borrow: TestOnBorrow::IdleFor(Duration::from_millis(500)),
            keepalive: None,
            check_retries: 3,
            balance: Balance::RoundRobin,
            connect_attempts: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            maintenance_interval: Duration::from_secs(1),
            name: "connpool".to_owned(),
        }
    }
}

/// The largest `max_size_limit` accepted: the idle queue is allocated up front.
pub(crate) const MAX_SIZE_LIMIT: usize = 1 << 20;

impl Config {
    /// `max_size_limit` with its default applied.
    pub fn effective_max_size_limit(&self) -> usize {
        self.max_size_limit.unwrap_or_else(|| {
            self.max_size
                .saturating_mul(4)
                .min(MAX_SIZE_LIMIT)
                .max(self.max_size)
        })
    }

    /// `max_idle` with its default applied, for a given current `max_size`.
    pub(crate) fn effective_max_idle(&self, max_size: usize) -> usize {
        self.max_idle.unwrap_or(max_size)
    }

    /// Checks every rule; the error names the field.
    pub fn validate(&self) -> Result<(), BuildError> {
        let limit = self.effective_max_size_limit();
        if self.max_size == 0 {
            return Err(BuildError::new("max_size", "must be at least 1"));
        }
        if self.max_size_limit == Some(0) {
            return Err(BuildError::new("max_size_limit", "must be at least 1"));
        }
        // Named as `max_size` when that is what is too large (the default limit follows it).
        if self.max_size > MAX_SIZE_LIMIT {
            return Err(BuildError::new(
                "max_size",
                format!("must be at most {MAX_SIZE_LIMIT} (got {})", self.max_size),
            ));
        }
        if limit > MAX_SIZE_LIMIT {
            return Err(BuildError::new(
                "max_size_limit",
                format!("must be at most {MAX_SIZE_LIMIT} (got {limit})"),
            ));
        }
        if self.max_size > limit {
            return Err(BuildError::new(
                "max_size",
                format!(
                    "must be at most max_size_limit ({} > {limit})",
                    self.max_size
                ),
            ));
        }
        if let Some(max_idle) = self.max_idle {
            if max_idle > self.max_size {
                return Err(BuildError::new(
                    "max_idle",
                    format!("must be at most max_size ({max_idle} > {})", self.max_size),
                ));
            }
        }
        let max_idle = self.effective_max_idle(self.max_size);
        if self.min_idle > max_idle {
            return Err(BuildError::new(
                "min_idle",
                format!("must be at most max_idle ({} > {max_idle})", self.min_idle),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(BuildError::new(
                "connect_timeout",
                "must be greater than zero",
            ));
        }
        if self.check_timeout.is_zero() {
            return Err(BuildError::new(
                "check_timeout",
                "must be greater than zero",
            ));
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::new(
                "idle_timeout",
                "must be greater than zero (use None for no idle timeout)",
            ));
        }
        if self.max_lifetime.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::new(
                "max_lifetime",
                "must be greater than zero (use None for no lifetime limit)",
            ));
        }
        if self.keepalive.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::new(
                "keepalive",
                "must be greater than zero (use None for no keepalive)",
            ));
        }
        // A connection idle that long is closed by the idle timeout before it is quiet long
        // enough for a ping: such a keepalive would never run.
        if let (Some(k), Some(idle)) = (self.keepalive, self.idle_timeout) {
            if k >= idle {
                return Err(BuildError::new(
                    "keepalive",
                    format!(
                        "must be below idle_timeout ({k:?} >= {idle:?}): connections idle that \
                         long are closed before their ping"
                    ),
                ));
            }
        }
        if self.check_retries == 0 {
            return Err(BuildError::new("check_retries", "must be at least 1"));
        }
        if self.connect_attempts == 0 {
            return Err(BuildError::new("connect_attempts", "must be at least 1"));
        }
        if self.backoff_base.is_zero() {
            return Err(BuildError::new("backoff_base", "must be greater than zero"));
        }
        if self.backoff_max < self.backoff_base {
            return Err(BuildError::new(
                "backoff_max",
                "must be at least backoff_base",
            ));
        }
        if self.maintenance_interval.is_zero() {
            return Err(BuildError::new(
                "maintenance_interval",
                "must be greater than zero",
            ));
        }
        for (field, d) in [
            ("wait_timeout", Some(self.wait_timeout)),
            ("connect_timeout", Some(self.connect_timeout)),
            ("check_timeout", Some(self.check_timeout)),
            ("idle_timeout", self.idle_timeout),
            ("max_lifetime", self.max_lifetime),
            ("keepalive", self.keepalive),
            ("backoff_base", Some(self.backoff_base)),
            ("backoff_max", Some(self.backoff_max)),
            ("maintenance_interval", Some(self.maintenance_interval)),
        ] {
            if d.is_some_and(|d| d > MAX_DURATION) {
                return Err(BuildError::new(field, "must be at most 100 years"));
            }
        }
        if let TestOnBorrow::IdleFor(d) = self.test_on_borrow {
            if d > MAX_DURATION {
                return Err(BuildError::new(
                    "test_on_borrow",
                    "must be at most 100 years",
                ));
            }
        }
        Ok(())
    }
}

/// The longest duration accepted anywhere: larger values would overflow the clock's arithmetic.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
