//! [`Builder`]: the only way to make a [`Pool`].

use std::fmt;
use std::time::Duration;

use crate::backends::{Backend, Backends, BackoffPolicy};
use crate::balance::Balance;
use crate::config::{Config, TestOnBorrow};
use crate::discovery::{Discovery, DynDiscovery, Report, UpdatesShared};
use crate::error::BuildError;
use crate::events::{Callbacks, Event};
use crate::manager::Manager;
use crate::pool::{Pool, PoolInner};
use crate::stats;
use crate::sync::{Arc, Weak};

/// Configures and builds a [`Pool`]. Every setting has a documented default (see
/// [`Config`]); `build` validates them all and names the field of the first bad one.
///
/// ```
/// use std::time::Duration;
/// use connpool::{Backend, Balance, Manager, Pool, TestOnBorrow};
/// # struct M;
/// # impl Manager for M {
/// #     type Connection = ();
/// #     type Error = std::io::Error;
/// #     async fn connect(&self, _: &Backend) -> Result<(), std::io::Error> { Ok(()) }
/// #     async fn check(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = Pool::builder(M)
///     .max_size(32)
///     .min_idle(4)
///     .wait_timeout(Duration::from_millis(200))
///     .keepalive(Some(Duration::from_secs(60)))
///     .test_on_borrow(TestOnBorrow::IdleFor(Duration::from_secs(1)))
///     .balance(Balance::LeastConnections)
///     .backends(["10.0.0.1:6379", "10.0.0.2:6379"].map(Backend::new))
///     .build()
///     .expect("valid config");
/// assert_eq!(pool.status().backends.len(), 2);
///
/// let err = Pool::builder(M).max_size(0).build().unwrap_err();
/// assert_eq!(err.field, "max_size");
/// # }
/// ```
#[must_use = "a Builder does nothing until build() is called"]
pub struct Builder<M: Manager> {
    manager: M,
    config: Config,
    backends: Option<Vec<Backend>>,
    discovery: Option<Arc<dyn DynDiscovery>>,
    callbacks: Callbacks,
}

impl<M: Manager> fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("backends", &self.backends)
            .field("discovery", &self.discovery.is_some())
            .finish_non_exhaustive()
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $field:ident $(($wrap:path))?;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$field = $($wrap)?(value);
                self
            }
        )*
    };
}

impl<M: Manager> Builder<M> {
    pub(crate) fn new(manager: M) -> Self {
        Builder {
            manager,
            config: Config::default(),
            backends: None,
            discovery: None,
            callbacks: Callbacks::default(),
        }
    }

    setters! {
        /// Most connections open at once (MaxActive / PoolSize / MaxOpen). Default 10.
        max_size: usize => max_size;
        /// Most idle connections kept. Default: `max_size` (and it follows `set_max_size`).
        max_idle: usize => max_idle (Some);
        /// Ceiling for `Pool::set_max_size`, the idle queue's fixed capacity. Default
        /// 4 × `max_size`.
        max_size_limit: usize => max_size_limit (Some);
        /// Connections kept open even when idle (MinIdleConns). Default 0.
        min_idle: usize => min_idle;
        /// How long a whole `get()` may take. `Duration::ZERO` = never wait: a get that finds
        /// no slot fails at once (`Exhausted`; `NoBackends` before discovery's first list),
        /// one that has a slot still dials and checks, bounded only by `connect_timeout` (per
        /// attempt, up to `connect_attempts` backends) and `check_timeout`. Default 30 s.
        wait_timeout: Duration => wait_timeout;
        /// How long one connect may take. Default 5 s.
        connect_timeout: Duration => connect_timeout;
        /// How long one check may take. Default 2 s.
        check_timeout: Duration => check_timeout;
        /// Close connections idle this long (`None`: never). Default 10 min.
        idle_timeout: Option<Duration> => idle_timeout;
        /// Close connections older than this, jittered down by up to 2.5 % (`None`: never).
        /// Default 30 min.
        max_lifetime: Option<Duration> => max_lifetime;
        /// When idle connections are checked before use. Default `IdleFor(500 ms)`.
        test_on_borrow: TestOnBorrow => test_on_borrow;
        /// Check idle connections quiet this long, in the background. Default `None`.
        keepalive: Option<Duration> => keepalive;
        /// Consecutive failed background checks before closing a connection, a keepalive
        /// interval apart (a check that times out or panics closes it at once, and so does a
        /// failed one after which `Manager::is_reusable` is `false`: for the redis manager any
        /// I/O, protocol or timeout error, so only error replies are retried). Default 3.
        check_retries: u32 => check_retries;
        /// How new connections are spread over backends. Default round-robin.
        balance: Balance => balance;
        /// Most backends one get dials before it fails. Default 3.
        connect_attempts: usize => connect_attempts;
        /// First backoff of a failing backend (doubles per failure, jittered). Default 100 ms.
        /// Once it has passed, one get probes the backend; others do not until that probe
        /// ends (at most `connect_timeout`).
        backoff_base: Duration => backoff_base;
        /// Longest backoff of a failing backend. Default 10 s.
        backoff_max: Duration => backoff_max;
        /// The longest pause between two maintenance passes (idle and lifetime sweep,
        /// keepalive, `min_idle` refill, metrics). Default 1 s. Passes come more often when
        /// half of `idle_timeout`, `keepalive` or `max_lifetime` is shorter, and never less
        /// than 10 ms apart.
        maintenance_interval: Duration => maintenance_interval;
    }

    /// A name for logs and the `metrics` label `pool`. Default `"connpool"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// A static backend list (an empty list makes every dial fail with `NoBackends`).
    /// Without `backends` and `discovery` the pool has one implicit backend whose `addr()`
    /// is `""`, for managers that know their own address.
    pub fn backends<I: IntoIterator<Item = Backend>>(mut self, list: I) -> Self {
        self.backends = Some(list.into_iter().collect());
        self
    }

    /// A live backend list (replaces a static one). Until its first list arrives, gets wait
    /// for it (within their timeout; a zero timeout does not wait), then fail with
    /// `NoBackends`.
    pub fn discovery(mut self, d: impl Discovery) -> Self {
        self.discovery = Some(Arc::new(d));
        self
    }

    /// Adds a callback for every [`Event`]. Callbacks run synchronously on the task where
    /// the event happens, under `catch_unwind`: keep them quick; a panic is logged and ignored.
    pub fn on_event(mut self, f: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(f));
        self
    }

    /// Validates the configuration and starts the pool (its maintenance task, and the
    /// discovery task if any). Opens no connection unless `min_idle` asks for some.
    ///
    /// # Runtimes
    ///
    /// The background tasks run on the runtime `build` is called on (the pool's *own*
    /// runtime). The pool itself may be used from any tokio runtime: gets, waits, dials and
    /// `close` run on the caller's. Gets waiting on the pool's own runtime share one timer;
    /// gets waiting elsewhere arm their own (see [`Pool`]'s timeouts). The background tasks
    /// end with their runtime: if it shuts down while the pool is still used from another,
    /// gets and `close` keep working, but idle connections are no longer swept, pinged or
    /// refilled, and discovery's lists are no longer applied. Build the pool on the runtime
    /// that lives longest.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first invalid field, or the field `"runtime"` when called
    /// outside a tokio runtime or on one without its time driver (`enable_time()`). Never
    /// panics (on a runtime without timers, tokio's own message is printed by the panic hook
    /// while the pool checks for them, then the error is returned; a program built with
    /// `panic = "abort"` aborts there instead, as it would at the pool's first timer).
    pub fn build(self) -> Result<Pool<M>, BuildError> {
        self.config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError::new(
                "runtime",
                "build() must run inside a tokio runtime (the pool runs a background task)",
            )
        })?;
        let _guard = runtime.enter();
        if !timers_enabled() {
            return Err(BuildError::new(
                "runtime",
                "the tokio runtime has no time driver (the pool's timeouts and its background \
                 task need one): build the runtime with enable_time() or enable_all()",
            ));
        }
        let Builder {
            manager,
            config,
            backends,
            discovery,
            callbacks,
        } = self;
        let initial = match (&discovery, backends) {
            (Some(_), _) => None,
            (None, Some(list)) => Some(list),
            (None, None) => Some(vec![Backend::new("")]),
        };
        let backends = Backends::new(
            initial,
            BackoffPolicy {
                base: config.backoff_base,
                max: config.backoff_max,
            },
        )
        .with_probe_hold(config.connect_timeout);
        let has_discovery = discovery.is_some();
        let inner = Arc::new_cyclic(|weak: &Weak<PoolInner<M>>| {
            let updates = has_discovery.then(|| UpdatesShared::new(reporter(weak.clone())));
            PoolInner::new(manager, config, backends, callbacks, updates, runtime.id())
        });
        crate::maintenance::spawn(&inner);
        if let (Some(d), Some(shared)) = (discovery, inner.updates.clone()) {
            crate::discovery::runner::spawn(&inner, d, shared);
        }
        Ok(Pool::from_inner(inner))
    }
}

/// Does the current runtime have its time driver? tokio offers no query, and creating a timer
/// on a runtime without one panics (with tokio's message, which the panic hook still prints):
/// so one is created, and dropped, under `catch_unwind`. On a runtime with timers nothing
/// panics and nothing is printed.
fn timers_enabled() -> bool {
    std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_ok()
}

/// Routes a discovery's reports into the pool's counters, events and logs.
fn reporter<M: Manager>(weak: Weak<PoolInner<M>>) -> Box<dyn Fn(Report<'_>) + Send + Sync> {
    Box::new(move |report| {
        let Some(inner) = weak.upgrade() else { return };
        match report {
            Report::Error(message) => {
                stats::bump(&inner.counters.discovery_errors);
                tracing::warn!(pool = %inner.config.name, %message, "connpool: discovery failed");
                inner.emit(|f| f(&Event::DiscoveryFailed { message }));
            }
            Report::Warning(message) => {
                tracing::warn!(pool = %inner.config.name, %message, "connpool: discovery warning");
                inner.emit(|f| f(&Event::DiscoveryWarning { message }));
            }
        }
    })
}
