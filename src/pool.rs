//! [`Pool`]: get, try_get, get_timeout, close, set_max_size, set_backends, status and stats.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use std::sync::OnceLock;

use crate::backends::{Backend, BackendEntry, Backends, Claim, Picked, IDLE, IN_USE};
use crate::config::{Config, TestOnBorrow};
use crate::discovery::UpdatesShared;
use crate::engine::{Engine, Hooks, Unit, WaitError};
use crate::error::{BuildError, Error};
use crate::events::{Callbacks, CloseReason, Event};
use crate::idle::{Conn, IdleLimit, LazyNow, Meta, Token};
use crate::lanes::{self, Lane};
use crate::manager::Manager;
use crate::pooled::{Anchor, Pooled, PooledRef};
use crate::stats::{self, BackendStatus, Counters, Stats, Status};
use crate::sync::{deadline_after, Arc, CachePadded, Instant, Ordering, WaitQueue};

/// A pool of connections spread over a live set of backends.
///
/// Cheap to clone (an `Arc` inside); every clone is the same pool. Dropping the last clone
/// closes the pool in the background (see [`Pool::close`]).
///
/// # Example
///
/// ```
/// use connpool::{Backend, Manager, Pool};
///
/// struct Numbers;
/// impl Manager for Numbers {
///     type Connection = u64;
///     type Error = std::io::Error;
///     async fn connect(&self, _: &Backend) -> Result<u64, std::io::Error> { Ok(42) }
///     async fn check(&self, _: &mut u64) -> Result<(), std::io::Error> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool::builder(Numbers).max_size(4).build()?;
/// let conn = pool.get().await?;
/// assert_eq!(*conn, 42);
/// drop(conn); // back to the idle queue
/// assert_eq!(pool.status().idle, 1);
/// # Ok(()) }
/// ```
///
/// # Memory ordering
///
/// Returning a connection happens-before the get that receives it: whatever a task did to a
/// connection before dropping its `Pooled` is visible to the next task that gets it.
///
/// # Timeouts
///
/// Gets waiting with the pool's `wait_timeout` share one tokio timer, armed by one of the
/// waiters (the *timer duty*) for the earliest deadline in line and passed on to another
/// waiter when it leaves; so a wait arms no timer of its own, and a paused tokio clock still
/// advances to every deadline. A get with another timeout (`get_timeout`) arms its own, and
/// so does a get waiting on another runtime than the one the pool was built on: a timer
/// fires only while its own runtime runs, so a waiter may rely only on a timer of its own
/// runtime. A pool shared across runtimes keeps every deadline even while one of them stops
/// running tasks (its own waiters then time out when it resumes, as any of its timers would).
/// A get that waits, dials or checks uses tokio's timers, so it must be polled inside a tokio
/// runtime (as tokio's own timers must); a hit and `try_get` need none.
///
/// # Cancel safety
///
/// `get()` and `get_timeout()` are cancel-safe: a future dropped at any await point (a
/// `select!` loser, a timeout, an aborted task) gives back its slot and whatever connection it
/// held. A connection dropped in the middle of its check is closed (its state is unknown);
/// a connection dropped in the middle of its connect is never handed out.
///
/// A get future that is polled once and then kept, neither polled again nor dropped (a
/// `select!` branch that is disabled but not dropped, a future stored away), still waits in
/// line. Besides holding its place, it may hold the line's shared timer (see above): the
/// other gets waiting with the pool's `wait_timeout` then time out only once it is polled
/// or dropped (hand-offs still serve them). Drop a get you no longer wait for.
pub struct Pool<M: Manager> {
    handle: Arc<Handle<M>>,
}

/// Dropped with the last `Pool` clone: closes the pool (lent connections close on return).
///
/// Holds one [`Anchor`] per thread lane (see `lanes.rs`): each `Pooled` keeps the pool alive
/// through its lane's anchor, so the reference counts that every get and return changes sit on
/// a line of the calling thread's own, not on one line that every core pulls back and forth.
struct Handle<M: Manager> {
    inner: Arc<PoolInner<M>>,
    /// Created on a lane's first get; the last one is shared by threads without a lane.
    anchors: Box<[OnceLock<Arc<Anchor<M>>>]>,
}

impl<M: Manager> Handle<M> {
    /// The anchor of `lane`, the calling thread's (created on its first get).
    #[inline]
    fn anchor(&self, lane: Lane) -> Arc<Anchor<M>> {
        let slot = lane.slot(self.anchors.len() - 1);
        Arc::clone(
            self.anchors[slot]
                .get_or_init(|| Arc::new(Anchor(CachePadded::new(Arc::clone(&self.inner))))),
        )
    }
}

impl<M: Manager> Drop for Handle<M> {
    fn drop(&mut self) {
        self.inner.close_now();
    }
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<M: Manager> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.handle.inner.config.name)
            .field("status", &self.status())
            .finish()
    }
}

/// The pool's state, shared by `Pool` handles, `Pooled` guards (strong) and background tasks
/// (weak).
///
/// # Synchronization
///
/// The admission, idle queue, gauges, return path and close handshake live in the
/// runtime-agnostic [`Engine`] (see `engine.rs` for their protocol); `PoolInner` derefs to it
/// and adds the manager, timers, counters and events (as the engine's [`Hooks`]).
pub(crate) struct PoolInner<M: Manager> {
    pub(crate) manager: M,
    pub(crate) config: Config,
    pub(crate) engine: Engine<M::Connection>,
    pub(crate) backends: Backends,
    pub(crate) counters: Counters,
    pub(crate) callbacks: Callbacks,
    /// Notified when the backend list changes (gets waiting for the first list wait on it).
    pub(crate) backends_changed: WaitQueue,
    /// Notified when the pool closes (background tasks wait on it).
    pub(crate) shutdown: WaitQueue,
    pub(crate) updates: Option<Arc<UpdatesShared>>,
    last_connect_error: Mutex<Option<String>>,
    /// Does anything read a returned connection's `last_used`: the idle timeout (get and
    /// maintenance), an idle-based check on borrow, keepalive (`Meta::quiet_for`)? Fixed at
    /// build time (see [`Hooks::stamps_returns`]).
    stamps_returns: bool,
    /// The runtime the pool was built on: only its waiters share the line's one timer.
    home: tokio::runtime::Id,
    /// `config.idle_timeout`, converted once (every hit compares with it).
    idle_limit: IdleLimit,
}

impl<M: Manager> Pool<M> {
    /// Starts building a pool around `manager`. See [`Builder`](crate::Builder).
    pub fn builder(manager: M) -> crate::Builder<M> {
        crate::Builder::new(manager)
    }

    pub(crate) fn from_inner(inner: Arc<PoolInner<M>>) -> Self {
        Pool {
            handle: Arc::new(Handle {
                inner,
                anchors: (0..=lanes::owned()).map(|_| OnceLock::new()).collect(),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<PoolInner<M>> {
        &self.handle.inner
    }

    /// The calling thread's anchor (what a `Pooled` keeps the pool alive with).
    pub(crate) fn anchor(&self) -> Arc<Anchor<M>> {
        self.handle.anchor(Lane::current())
    }

    /// Gets a connection, waiting up to `wait_timeout` for the whole get (slot, connect and
    /// checks together).
    ///
    /// An idle connection is preferred (checked first if `test_on_borrow` asks); otherwise a
    /// new one is dialed on the next backend (round-robin or least-connections), failing over
    /// to the next backend on a connect error (at most `connect_attempts` backends).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when `wait_timeout` passes (with the pool's counts and the last
    /// connect error), [`Error::Exhausted`] when `wait_timeout` is zero and no slot is free,
    /// [`Error::Closed`], [`Error::NoBackends`], [`Error::Connect`] when every backend tried
    /// failed or all are backed off, [`Error::Check`] when a new connection failed its check.
    ///
    /// The future is [`Get`]: an idle connection comes back from its first poll, without
    /// allocating (and without reading the clock unless `max_lifetime`, `idle_timeout` or an
    /// idle-based `test_on_borrow` needs it, then once); a get that must wait, dial or check
    /// goes on in a boxed future of its own.
    pub fn get(&self) -> Get<'_, M> {
        self.get_timeout(self.inner().config.wait_timeout)
    }

    /// [`get`](Self::get) with its own timeout instead of `wait_timeout` (`ZERO` = fail fast).
    ///
    /// A get with the pool's `wait_timeout` waits on the pool's one shared timer; a get with
    /// another timeout arms a timer of its own while it waits (a little more work per wait).
    pub fn get_timeout(&self, timeout: Duration) -> Get<'_, M> {
        Get(GetCore::new(self, timeout))
    }

    /// [`get`](Self::get), lending a [`PooledRef`] that borrows this handle instead of a
    /// [`Pooled`] that owns a reference to the pool: the same connection, the same rules, and
    /// no reference count taken or given back, which makes a hit about a fifth cheaper (see
    /// `BENCHMARKS.md`). Use it
    /// where the connection does not outlive the handle (a request handler holding
    /// `&Pool`); [`PooledRef::into_owned`] converts when it must.
    ///
    /// ```
    /// # use connpool::{Backend, Manager, Pool};
    /// # struct Numbers;
    /// # impl Manager for Numbers {
    /// #     type Connection = u64;
    /// #     type Error = std::io::Error;
    /// #     async fn connect(&self, _: &Backend) -> Result<u64, std::io::Error> { Ok(42) }
    /// #     async fn check(&self, _: &mut u64) -> Result<(), std::io::Error> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = Pool::builder(Numbers).build()?;
    /// let conn = pool.get_ref().await?;
    /// assert_eq!(*conn, 42);
    /// # Ok(()) }
    /// ```
    pub fn get_ref(&self) -> GetRef<'_, M> {
        GetRef(GetCore::new(self, self.inner().config.wait_timeout))
    }

    /// An idle connection now, or `Error::Exhausted` (`Error::Closed` once the pool is
    /// closed). Never waits and never dials. Stale
    /// connections found on the way are closed; `test_on_borrow` is not applied (a check
    /// would be I/O), but a connection whose last background check (keepalive) failed is
    /// never lent unchecked: `try_get` passes over it, and leaves it idle for a `get`, which
    /// checks it first.
    pub fn try_get(&self) -> Result<Pooled<M>, Error<M::Error>> {
        let inner = self.inner();
        if inner.is_closed() {
            return Err(inner.fail_closed());
        }
        match inner
            .engine
            .try_take(&mut LazyNow::new(), inner.idle_limit, &**inner)
        {
            Some(c) => Ok(Pooled::new(self.anchor(), c)),
            None => {
                stats::bump(&inner.counters.exhausted);
                Err(Error::Exhausted)
            }
        }
    }

    /// The pool's gauges now, with one entry per backend in force.
    pub fn status(&self) -> Status {
        self.inner().status()
    }

    /// The pool's counters now.
    pub fn stats(&self) -> Stats {
        self.inner().stats()
    }

    /// The configuration the pool was built with. (`set_max_size` changes the limit in force,
    /// which [`status`](Self::status) shows as `max_size`; it does not change this.)
    pub fn config(&self) -> &Config {
        &self.inner().config
    }

    /// Changes `max_size` at run time, within `1..=max_size_limit`.
    ///
    /// Growing wakes waiters at once. Shrinking closes idle connections above the new size
    /// at once; lent connections above it are closed as they come back, so `size` may exceed
    /// the new `max_size` until they do. No get that starts after this returns opens a
    /// connection above the new size; a get already reserving a slot as it runs may still
    /// open one (within the old size), which is closed when it comes back. `max_idle`,
    /// unless set explicitly, follows `max_size`; an explicit `max_idle` is capped at it.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming `max_size` when `n` is 0 or above `max_size_limit`.
    pub fn set_max_size(&self, n: usize) -> Result<(), BuildError> {
        let inner = self.inner();
        let limit = inner.config.effective_max_size_limit();
        if n == 0 || n > limit {
            return Err(BuildError::new(
                "max_size",
                format!("must be in 1..={limit} (max_size_limit), got {n}"),
            ));
        }
        inner
            .engine
            .resize(n, inner.config.effective_max_idle(n).min(n), &**inner);
        Ok(())
    }

    /// Replaces the backend list (what discovery calls). Backends that stay keep their
    /// connections and gauges; a removed backend's idle connections are closed at once, its
    /// lent ones when they come back, and none is handed out again. An empty list makes
    /// `get()` fail with [`Error::NoBackends`] once the idle connections of listed backends
    /// are used up. After [`close`](Self::close) it does nothing.
    pub fn set_backends<I: IntoIterator<Item = Backend>>(&self, list: I) {
        self.inner().set_backends(list.into_iter().collect());
    }

    /// Closes the pool: every waiting and every later `get()` fails with [`Error::Closed`] at
    /// once, and so does a get that is connecting or checking a connection for itself (that
    /// connect or check is abandoned and its connection closed); idle connections are closed;
    /// lent ones are closed when they come back; background tasks and discovery stop. Returns
    /// when every connection is closed. Idempotent.
    ///
    /// A lent connection is waited for until its guard is dropped (a guard leaked with
    /// `mem::forget` is never dropped: use `detach` to take a connection out of the pool for
    /// good). So is a get future that was polled and is kept without being polled or dropped
    /// (see the cancel safety above): a slot it dials on, a connection it checks or one
    /// handed to it in line is its until it is polled again (it then fails `Closed` and gives
    /// it back) or dropped. To bound the wait, wrap it: `tokio::time::timeout(d,
    /// pool.close())`; the pool is closed at once either way, and dropping the future stops
    /// only the wait.
    ///
    /// The background tasks are told to stop, not waited for: each ends the next time its
    /// runtime polls it (the discovery task applying lists within about 100 ms, the end of
    /// its debounce window), so a task or two may still be alive as `close` returns.
    pub async fn close(&self) {
        let inner = self.inner();
        inner.close_now();
        inner.engine.drained().await;
    }

    /// `true` once [`close`](Self::close) was called (or the last handle dropped).
    pub fn is_closed(&self) -> bool {
        self.inner().is_closed()
    }
}

/// The future of [`Pool::get`] and [`Pool::get_timeout`]: resolves to a [`Pooled`] or an
/// [`Error`]. `Send`; cancel-safe (see [`Pool`]); polling it after it resolved panics.
#[must_use = "futures do nothing unless polled"]
pub struct Get<'a, M: Manager>(GetCore<'a, M>);

/// The future of [`Pool::get_ref`]: resolves to a [`PooledRef`] or an [`Error`]. `Send`;
/// cancel-safe (see [`Pool`]); polling it after it resolved panics.
#[must_use = "futures do nothing unless polled"]
pub struct GetRef<'a, M: Manager>(GetCore<'a, M>);

/// What both get futures share: the fast path in the first poll, the rest boxed.
struct GetCore<'a, M: Manager> {
    pool: &'a Pool<M>,
    timeout: Duration,
    /// The rest of a get that did not hit at once (boxed: a wait's state is large, and a
    /// hit should not pay for moving it).
    slow: Option<SlowGet<'a, M>>,
    /// Resolved (a later poll is a caller's bug).
    done: bool,
}

/// A lent connection and the lane it was lent on, or why a get failed.
type LentOn<M> = Result<(Conn<<M as Manager>::Connection>, Lane), Error<<M as Manager>::Error>>;

type SlowGet<'a, M> = Pin<
    Box<
        dyn Future<Output = Result<Conn<<M as Manager>::Connection>, Error<<M as Manager>::Error>>>
            + Send
            + 'a,
    >,
>;

impl<'a, M: Manager> GetCore<'a, M> {
    fn new(pool: &'a Pool<M>, timeout: Duration) -> Self {
        GetCore {
            pool,
            timeout,
            slow: None,
            done: false,
        }
    }

    /// The lent connection (and the lane it was lent on), or why not.
    #[inline]
    fn poll_conn(&mut self, cx: &mut std::task::Context<'_>) -> Poll<LentOn<M>> {
        assert!(!self.done, "a connpool get future polled after it resolved");
        if self.slow.is_none() {
            let inner = self.pool.inner();
            let first = match inner.fast_path() {
                Fast::Hit(conn, lane) => {
                    self.done = true;
                    return Poll::Ready(Ok((conn, lane)));
                }
                Fast::Closed => {
                    self.done = true;
                    return Poll::Ready(Err(inner.fail_closed()));
                }
                Fast::Unit(t) => Some(t),
                Fast::Queue => None,
            };
            self.slow = Some(Box::pin(inner.get_slow(self.timeout, first)));
        }
        let slow = self.slow.as_mut().expect("set above");
        match slow.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.done = true;
                self.slow = None;
                Poll::Ready(r.map(|conn| (conn, Lane::current())))
            }
        }
    }
}

impl<M: Manager> Drop for GetCore<'_, M> {
    fn drop(&mut self) {
        // `slow` is cleared when it resolves: still there, the get was dropped mid-way (the
        // slow future gives back whatever it held as it drops).
        if self.slow.is_some() {
            stats::bump(&self.pool.inner().counters.cancelled);
        }
    }
}

impl<'a, M: Manager> Future for Get<'a, M> {
    type Output = Result<Pooled<M>, Error<M::Error>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let core = &mut self.get_mut().0;
        let pool = core.pool;
        core.poll_conn(cx)
            .map(|r| r.map(|(conn, lane)| Pooled::new(pool.handle.anchor(lane), conn)))
    }
}

impl<'a, M: Manager> Future for GetRef<'a, M> {
    type Output = Result<PooledRef<'a, M>, Error<M::Error>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let core = &mut self.get_mut().0;
        let pool = core.pool;
        core.poll_conn(cx)
            .map(|r| r.map(|(conn, _)| PooledRef::new(pool.inner(), pool, conn)))
    }
}

impl<M: Manager> fmt::Debug for Get<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt_fields(f.debug_struct("Get"))
    }
}

impl<M: Manager> fmt::Debug for GetRef<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt_fields(f.debug_struct("GetRef"))
    }
}

impl<M: Manager> GetCore<'_, M> {
    fn fmt_fields(&self, mut d: fmt::DebugStruct<'_, '_>) -> fmt::Result {
        d.field("timeout", &self.timeout)
            .field("waiting", &self.slow.is_some())
            .field("done", &self.done)
            .finish()
    }
}

/// What the fast path of a get found.
enum Fast<C> {
    /// An idle connection, lent (on this lane).
    Hit(Conn<C>, Lane),
    /// The pool is closed.
    Closed,
    /// A unit that needs more work: an idle connection to check, or a slot to dial with.
    Unit(Token<C>),
    /// Nothing now (or others queue already): wait in line.
    Queue,
}

/// A dial's outcome on its backend: dropped before one was recorded (`given`), it gives a
/// probe's claim back (see [`Backends::release`]).
struct Verdict<'a> {
    backends: &'a Backends,
    entry: &'a BackendEntry,
    claim: Claim,
    given: bool,
}

impl Drop for Verdict<'_> {
    fn drop(&mut self) {
        if !self.given {
            self.backends.release(self.entry, self.claim);
        }
    }
}

/// A connection just opened by a get, while its check runs. Dropped without `take` (the get
/// was cancelled mid-check), it is closed (its state is unknown); the get's slot, held by its
/// [`Unit`], is not this guard's to free.
struct Held<'a, M: Manager> {
    inner: &'a PoolInner<M>,
    conn: Option<Conn<M::Connection>>,
}

impl<M: Manager> Held<'_, M> {
    fn get(&mut self) -> &mut Conn<M::Connection> {
        self.conn.as_mut().expect("Held is used only before take")
    }
    fn take(mut self) -> Conn<M::Connection> {
        self.conn.take().expect("Held is taken once")
    }
}

impl<M: Manager> Drop for Held<'_, M> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let reason = self.inner.engine.abandoned();
            self.inner.engine.close_keep(c, reason, self.inner);
        }
    }
}

/// Runs a future, turning a panic inside it into `Err(message)`.
pub(crate) async fn catch<F: Future>(fut: F) -> Result<F::Output, String> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(
        move |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(panic_message(&*p))),
        },
    )
    .await
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_owned()
    }
}

/// Why a check did not pass.
pub(crate) enum CheckFailure<E> {
    Failed(E),
    TimedOut(Duration),
    Panicked(String),
    /// The get's own deadline passed mid-check (before `check_timeout` did): the get has
    /// timed out, and the check has not failed. The connection's state is unknown, so the
    /// caller closes it; it is not counted or evented as a failed check.
    Deadline,
}

impl<E: fmt::Display> CheckFailure<E> {
    fn message(&self) -> String {
        match self {
            CheckFailure::Failed(e) => e.to_string(),
            CheckFailure::TimedOut(d) => format!("timed out after {d:?}"),
            CheckFailure::Panicked(m) => m.clone(),
            CheckFailure::Deadline => "the get's deadline passed mid-check".to_owned(),
        }
    }
    fn into_source(self) -> Option<E> {
        match self {
            CheckFailure::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl<M: Manager> PoolInner<M> {
    pub(crate) fn new(
        manager: M,
        config: Config,
        backends: Backends,
        callbacks: Callbacks,
        updates: Option<Arc<UpdatesShared>>,
        home: tokio::runtime::Id,
    ) -> Self {
        let limit = config.effective_max_size_limit();
        PoolInner {
            manager,
            engine: Engine::new(
                config.max_size,
                limit,
                config.effective_max_idle(config.max_size),
            ),
            backends,
            counters: Counters::default(),
            callbacks,
            backends_changed: WaitQueue::new(),
            shutdown: WaitQueue::new(),
            updates,
            last_connect_error: Mutex::new(None),
            stamps_returns: config.idle_timeout.is_some()
                || matches!(config.test_on_borrow, TestOnBorrow::IdleFor(_))
                || config.keepalive.is_some(),
            home,
            idle_limit: IdleLimit::new(config.idle_timeout),
            config,
        }
    }

    pub(crate) fn emit(&self, event: impl FnOnce(&dyn Fn(&Event<'_>))) {
        if !self.callbacks.is_empty() {
            event(&|e| self.callbacks.emit(e));
        }
    }

    /// The fast path of a get, while nobody is queued: an idle connection (the hit: no await,
    /// no shared write but the queue's own, at most one clock read for the staleness checks),
    /// else a free slot to dial with.
    #[inline]
    fn fast_path(&self) -> Fast<M::Connection> {
        if self.is_closed() {
            return Fast::Closed;
        }
        if !self.engine.no_waiters() {
            return Fast::Queue;
        }
        let lane = Lane::current();
        let mut now = LazyNow::new();
        let fresh = |meta: &Meta, now: &mut LazyNow| !self.wants_check_on_borrow(meta, now);
        match self
            .engine
            .hit(&mut now, self.idle_limit, lane, self, fresh)
        {
            Some(Ok(c)) => Fast::Hit(c, lane),
            Some(Err(c)) => Fast::Unit(Token::Conn(c)),
            None if self.engine.try_reserve() => Fast::Unit(Token::Slot),
            None => Fast::Queue,
        }
    }

    /// Is the calling task on the runtime the pool was built on? (Read once per wait: the
    /// handle lookup clones and drops a reference to the runtime.)
    fn on_home_runtime(&self) -> bool {
        tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() == self.home)
    }

    /// The rest of a get that did not hit at once: waits in line for a unit if it has none,
    /// then turns its unit into a lent connection.
    async fn get_slow(
        &self,
        timeout: Duration,
        first: Option<Token<M::Connection>>,
    ) -> Result<Conn<M::Connection>, Error<M::Error>> {
        // The get's start, read from the clock only when first needed (a wait, a check, a
        // dial, an error). Until then the get has only popped or reserved, which uses no
        // measurable part of its timeout, so the deadline is the same in effect.
        let mut started = LazyNow::new();
        // A zero timeout means "never wait for a slot"; the connect and checks the get may
        // still need are then bounded by connect_timeout and check_timeout alone.
        let deadline_from = |start: Instant| {
            if timeout.is_zero() {
                deadline_after(start, crate::config::MAX_DURATION)
            } else {
                deadline_after(start, timeout)
            }
        };

        // 1. A unit: the one the fast path found, else one handed over by a return.
        let token = match first {
            Some(t) => t,
            None => {
                if timeout.is_zero() {
                    return Err(self.before_first_list().unwrap_or_else(|| {
                        stats::bump(&self.counters.exhausted);
                        Error::Exhausted
                    }));
                }
                let start = started.get();
                let deadline = deadline_from(start);
                // Its length is added to `wait_time` when the wait ends, or when the get is
                // dropped mid-wait (a cancelled wait waited too).
                let clock = self.counters.wait_clock(start);
                // The pool's own `wait_timeout` is the line's shared deadline: kept by one
                // timer for all such waiters (see `admission.rs`); another timeout arms its own.
                // So does a waiter on another runtime than the pool's: the shared timer is
                // armed by one waiter on its own runtime and fires only while that runtime
                // runs, so a waiter may share it only with the waiters of its own runtime.
                let shared = timeout == self.config.wait_timeout && self.on_home_runtime();
                let waited = self.engine.acquire(self, Some(deadline), shared).await;
                drop(clock);
                match waited {
                    Ok(t) => t,
                    Err(WaitError::Closed) => return Err(self.fail_closed()),
                    Err(WaitError::TimedOut) => {
                        return Err(self
                            .before_first_list()
                            .unwrap_or_else(|| self.timed_out_waiting(start, true)))
                    }
                }
            }
        };
        let mut unit = Unit::new(&self.engine, self, token);
        if self.is_closed() {
            return Err(self.fail_closed());
        }

        // 2. A fresh connection from it. Whatever goes wrong from here on, `unit` gives the
        // unit back (a connection cancelled mid-check is closed: its state is unknown).
        loop {
            match unit.token() {
                Token::Conn(c) => {
                    let mut now = LazyNow::new();
                    if let Some(reason) = c.meta.stale_reason(&mut now, self.idle_limit) {
                        unit.close_keep(reason);
                        continue;
                    }
                    if self.wants_check_on_borrow(&c.meta, &mut now) {
                        let start = started.get();
                        let deadline = deadline_from(start);
                        // Boxed (like the dial below): rare, and large; a wait's future then
                        // stays small (it is allocated and written for every wait).
                        // Raced with `close()`, which fails every get at once: a get mid-check
                        // does not make `close()` wait for its check.
                        let check = Box::pin(self.check_conn(c, Some(deadline)));
                        let Some(checked) = self.unless_closed(check).await else {
                            // `unit` closes the connection (its state is unknown).
                            return Err(self.fail_closed());
                        };
                        match checked {
                            Ok(()) => {}
                            // The whole get ran out of time mid-check: `unit` closes the
                            // connection (its state is unknown). Not a failed check: the
                            // other idle connections are not tried (and closed) in turn.
                            Err(CheckFailure::Deadline) => return Err(self.timed_out(start)),
                            Err(_) => {
                                unit.close_keep(CloseReason::CheckFailed);
                                continue;
                            }
                        }
                    }
                    if self.is_closed() {
                        return Err(self.fail_closed());
                    }
                    return Ok(self.engine.lend(unit.take_conn(), Lane::current()));
                }
                Token::Slot => {
                    // An idle connection may have come back meanwhile: prefer it (and let the
                    // slot go on).
                    let lane = Lane::current();
                    if let Some(c) =
                        self.engine
                            .pop_fresh(&mut LazyNow::new(), self.idle_limit, lane, self)
                    {
                        unit.set_conn(c, true);
                        continue;
                    }
                    // Before discovery's first list arrives there is nothing to dial yet: wait
                    // for it (holding the slot), unless the get may not wait at all.
                    if !self.backends.snapshot().known {
                        // Closed first: a closed pool gets no list, so `continue` would spin.
                        if self.is_closed() {
                            return Err(self.fail_closed());
                        }
                        if timeout.is_zero() {
                            stats::bump(&self.counters.no_backends);
                            return Err(Error::NoBackends);
                        }
                        let deadline = deadline_from(started.get());
                        let listener = self.backends_changed.listen();
                        if self.is_closed() {
                            return Err(self.fail_closed());
                        }
                        if self.backends.snapshot().known {
                            continue;
                        }
                        if tokio::time::timeout_at(deadline, listener).await.is_err() {
                            stats::bump(&self.counters.no_backends);
                            return Err(Error::NoBackends);
                        }
                        if self.is_closed() {
                            return Err(self.fail_closed());
                        }
                        continue;
                    }
                    // 3. A new connection, on the slot.
                    let start = started.get();
                    // Raced with `close()` like the check above: a connect in flight (up to
                    // `connect_timeout`) neither delays the get's `Closed` nor `close()`.
                    let dial = Box::pin(self.dial_for_get(start, deadline_from(start)));
                    let Some(dialed) = self.unless_closed(dial).await else {
                        return Err(self.fail_closed());
                    };
                    let c = dialed?;
                    unit.set_conn(c, false);
                    if self.is_closed() {
                        unit.close_keep(CloseReason::PoolClosed);
                        return Err(self.fail_closed());
                    }
                    let c = self.engine.lend_new(unit.take_conn(), Lane::current());
                    self.counters.miss();
                    return Ok(c);
                }
            }
        }
    }

    /// A get fails because the pool is closed: counted, once per get.
    fn fail_closed(&self) -> Error<M::Error> {
        stats::bump(&self.counters.failed_closed);
        Error::Closed
    }

    /// Resolves once the pool is closed.
    pub(crate) async fn closed(&self) {
        loop {
            if self.is_closed() {
                return;
            }
            // Listen, then look again: a close between the look above and the listen is
            // seen by the second look; one after it notifies the listener.
            let listener = self.shutdown.listen();
            if self.is_closed() {
                return;
            }
            listener.await;
        }
    }

    /// `work`'s output, or `None` if the pool closes first (`work` is then dropped where it
    /// stands, as a cancelled get's would be).
    async fn unless_closed<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            out = work => Some(out),
            () = self.closed() => None,
        }
    }

    fn wants_check_on_borrow(&self, meta: &Meta, now: &mut LazyNow) -> bool {
        if meta.failed_checks > 0 {
            // Its last (background) check failed: never lend it unchecked.
            return true;
        }
        match self.config.test_on_borrow {
            TestOnBorrow::Never => false,
            TestOnBorrow::Always => true,
            TestOnBorrow::IdleFor(d) => meta.quiet_for(now.get()) >= d,
        }
    }

    /// Why an idle connection may not be handed out, if it may not.
    pub(crate) fn stale_reason(&self, meta: &Meta, now: Instant) -> Option<CloseReason> {
        meta.stale_reason(&mut LazyNow::at(now), self.idle_limit)
    }

    /// Runs `Manager::check` under `check_timeout` (and the waiting get's `deadline`, if a get
    /// waits on it), contained if it panics; updates the connection's bookkeeping, counters
    /// and events, unless it was the get's deadline that ended it ([`CheckFailure::Deadline`]).
    pub(crate) async fn check_conn(
        &self,
        c: &mut Conn<M::Connection>,
        deadline: Option<Instant>,
    ) -> Result<(), CheckFailure<M::Error>> {
        let check_limit = deadline_after(Instant::now(), self.config.check_timeout);
        let limit = deadline.map_or(check_limit, |d| d.min(check_limit));
        // The call itself inside `catch` too: a manager may panic before it returns its
        // future (a plain `fn` returning `impl Future`).
        let check = catch(async { self.manager.check(&mut c.conn).await });
        let r = match tokio::time::timeout_at(limit, check).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(CheckFailure::Failed(e)),
            Ok(Err(panic)) => Err(CheckFailure::Panicked(panic)),
            // The get ran out of time, not the check: nothing to count against the
            // connection or its backend.
            Err(_) if deadline.is_some_and(|d| d <= check_limit) => {
                return Err(CheckFailure::Deadline)
            }
            Err(_) => Err(CheckFailure::TimedOut(self.config.check_timeout)),
        };
        // One `DerefMut` of the boxed entry, then disjoint field borrows.
        let c = &mut c.meta;
        let addr = c.backend.backend.addr();
        match &r {
            Ok(()) => {
                // A disjoint field: `addr` borrows `c.backend`.
                c.last_checked = c.backend.stamp(Instant::now());
                c.failed_checks = 0;
                self.emit(|f| f(&Event::CheckPassed { backend: addr }));
            }
            Err(failure) => {
                c.failed_checks = c.failed_checks.saturating_add(1);
                // A failed check is a check too: keepalive tries again a keepalive interval
                // later, not at once (which would spend every retry in one pass).
                c.last_checked = c.backend.stamp(Instant::now());
                stats::bump(&self.counters.check_failures);
                let msg = failure.message();
                tracing::warn!(pool = %self.config.name, backend = addr, error = %msg, "connpool: check failed");
                self.emit(|f| {
                    f(&Event::CheckFailed {
                        backend: addr,
                        error: &msg,
                    })
                });
            }
        }
        r
    }

    /// Dials for a get: tries up to `connect_attempts` backends, skipping backed-off ones.
    async fn dial_for_get(
        &self,
        start: Instant,
        deadline: Instant,
    ) -> Result<Conn<M::Connection>, Error<M::Error>> {
        let mut tried: Vec<Arc<BackendEntry>> = Vec::new();
        let mut last: Option<Error<M::Error>> = None;
        while tried.len() < self.config.connect_attempts {
            let (entry, claim) = match self.backends.pick(self.config.balance, &tried) {
                Picked::Dial(e, claim) => (e, claim),
                Picked::AllBackedOff(e) => {
                    if last.is_none() {
                        stats::bump(&self.counters.backed_off);
                        let message = format!(
                            "every backend is failing; {} backed off for {:?} more; last error: {}",
                            e.backend.addr(),
                            self.backends.retry_in(&e),
                            e.last_error().unwrap_or_else(|| "unknown".to_owned()),
                        );
                        last = Some(Error::Connect {
                            backend: e.backend.addr().to_owned(),
                            source: None,
                            message,
                        });
                    }
                    break;
                }
                Picked::None => break,
            };
            tried.push(Arc::clone(&entry));
            match self.dial(&entry, claim, Some(deadline)).await {
                Ok(mut c) => {
                    if self.config.test_on_borrow == TestOnBorrow::Always {
                        let mut held = Held {
                            inner: self,
                            conn: Some(c),
                        };
                        match self.check_conn(held.get(), Some(deadline)).await {
                            Ok(()) => c = held.take(),
                            // Out of time mid-check: `held` closes the connection.
                            Err(CheckFailure::Deadline) => return Err(self.timed_out(start)),
                            Err(failure) => {
                                self.engine
                                    .close_keep(held.take(), CloseReason::CheckFailed, self);
                                last = Some(Error::Check {
                                    backend: entry.backend.addr().to_owned(),
                                    message: failure.message(),
                                    source: failure.into_source(),
                                });
                                continue;
                            }
                        }
                    }
                    return Ok(c);
                }
                Err(DialError::Deadline) => return Err(self.timed_out(start)),
                Err(DialError::Failed { source, message }) => {
                    last = Some(Error::Connect {
                        backend: entry.backend.addr().to_owned(),
                        source,
                        message,
                    });
                }
            }
        }
        match last {
            Some(e) => {
                // Counted once, under the error the get ends with. Without any dial, the
                // error is the "every backend backed off" one, already counted as
                // `backed_off` above.
                if !tried.is_empty() {
                    match e {
                        Error::Check { .. } => stats::bump(&self.counters.failed_check),
                        _ => stats::bump(&self.counters.failed_connect),
                    }
                }
                Err(e)
            }
            None => {
                stats::bump(&self.counters.no_backends);
                Err(Error::NoBackends)
            }
        }
    }

    /// Opens one connection to `entry` under `connect_timeout` (and the get's deadline), on
    /// a slot the caller holds (the pool's `size` already counts it, so the hard bound counts
    /// connects in flight); the backend's `size` is raised for the duration.
    ///
    /// Its outcome is recorded on the backend (success, or a failure that backs it off),
    /// except when the get's deadline cut the connect before it had run for the pool's
    /// `wait_timeout` (or `connect_timeout`, if shorter): a get with a short timeout of its
    /// own, or one that spent its time waiting, says nothing about the backend. A connect
    /// that had that long is a failure even if `connect_timeout` is longer (with a 200 ms
    /// `wait_timeout` and a 5 s `connect_timeout`, a blackholed backend is backed off after
    /// one get, not dialed by every N-th get in turn). A probe that ends without an outcome
    /// (cut so, or dropped mid-connect) gives its claim back.
    pub(crate) async fn dial(
        &self,
        entry: &Arc<BackendEntry>,
        claim: Claim,
        deadline: Option<Instant>,
    ) -> Result<Conn<M::Connection>, DialError<M::Error>> {
        let opening = self.engine.opening(entry);
        let mut verdict = Verdict {
            backends: &self.backends,
            entry,
            claim,
            given: false,
        };
        let started = Instant::now();
        let connect_deadline = deadline_after(started, self.config.connect_timeout);
        let limit = deadline.map_or(connect_deadline, |d| d.min(connect_deadline));
        let addr = entry.backend.addr();
        let mut cut = false;
        // The call itself inside `catch` too: a manager may panic before it returns its
        // future.
        let connect = catch(async { self.manager.connect(&entry.backend).await });
        let outcome = tokio::time::timeout_at(limit, connect).await;
        let (source, message) = match outcome {
            Ok(Ok(Ok(conn))) => {
                opening.opened();
                stats::bump(&self.counters.connects);
                self.backends.connect_ok(entry);
                verdict.given = true;
                tracing::debug!(pool = %self.config.name, backend = addr, "connpool: connected");
                self.emit(|f| f(&Event::Connected { backend: addr }));
                let c = Conn::new(
                    conn,
                    Meta::new(Arc::clone(entry), Instant::now(), self.config.max_lifetime),
                );
                if entry.is_removed() {
                    // Removed while we dialed: the connection is born stale (the caller keeps
                    // its slot).
                    self.engine.close_keep(c, CloseReason::BackendGone, self);
                    return Err(DialError::Failed {
                        source: None,
                        message: "backend removed while connecting".to_owned(),
                    });
                }
                return Ok(c);
            }
            Ok(Ok(Err(e))) => {
                let m = e.to_string();
                (Some(e), m)
            }
            Ok(Err(panic)) => (None, format!("connect {panic}")),
            Err(_) => {
                if deadline.is_some_and(|d| Instant::now() >= d) && limit < connect_deadline {
                    // The get's own deadline passed, not connect_timeout.
                    let ran = started.elapsed();
                    if ran < self.blame_after() {
                        // Too short a try to blame the backend: no outcome (`verdict` gives
                        // a probe's claim back).
                        return Err(DialError::Deadline);
                    }
                    cut = true;
                    (
                        None,
                        format!(
                            "connect timed out after {ran:?} (the get's timeout; \
                             connect_timeout is {:?})",
                            self.config.connect_timeout
                        ),
                    )
                } else {
                    (
                        None,
                        format!("connect timed out after {:?}", self.config.connect_timeout),
                    )
                }
            }
        };
        stats::bump(&self.counters.connect_errors);
        self.backends.connect_failed(entry, message.clone());
        verdict.given = true;
        tracing::warn!(pool = %self.config.name, backend = addr, error = %message, "connpool: connect failed");
        self.emit(|f| {
            f(&Event::ConnectFailed {
                backend: addr,
                error: &message,
            })
        });
        *self
            .last_connect_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(format!("{addr}: {message}"));
        if cut {
            // Recorded as the backend's failure; the get itself is out of time.
            return Err(DialError::Deadline);
        }
        Err(DialError::Failed { source, message })
    }

    /// How long a connect must have run before the get's deadline cut it for the cut to
    /// count as the backend's failure (see [`dial`](Self::dial)).
    fn blame_after(&self) -> Duration {
        let wait = self.config.wait_timeout;
        if wait.is_zero() {
            self.config.connect_timeout
        } else {
            wait.min(self.config.connect_timeout)
        }
    }

    fn timed_out(&self, start: Instant) -> Error<M::Error> {
        self.timed_out_waiting(start, false)
    }

    /// A get that found no slot (it may not wait, or its wait timed out) before discovery's
    /// first list: every slot is then held by a get waiting for that list, so the cause is
    /// the missing list, and the get fails `NoBackends` (counted there) like those gets do.
    /// `None` once a list is in force.
    fn before_first_list(&self) -> Option<Error<M::Error>> {
        if self.backends.snapshot().known {
            return None;
        }
        stats::bump(&self.counters.no_backends);
        Some(Error::NoBackends)
    }

    /// The timeout error; `waiting`: the get gave up while queued for a slot (its own wait
    /// has already left the waiter count, so it is added back).
    fn timed_out_waiting(&self, start: Instant, waiting: bool) -> Error<M::Error> {
        stats::bump(&self.counters.timeouts);
        Error::Timeout {
            waited: start.elapsed(),
            max_size: self.engine.max(),
            size: self.size(),
            in_use: self.engine.in_use(),
            waiters: self.engine.waiters() + usize::from(waiting),
            last_connect_error: self
                .last_connect_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Closes a connection that is out of the queue and not lent; its unit goes on (see
    /// [`Hooks::on_close`] and [`Engine::close_conn`]).
    pub(crate) fn close_conn(&self, c: Conn<M::Connection>, reason: CloseReason) {
        self.engine.close_conn(c, reason, self);
    }

    /// The return path of a lent connection (called by `Pooled::drop`). Never blocks.
    #[inline]
    pub(crate) fn give_back(&self, c: Conn<M::Connection>, panicking: bool) {
        self.engine.give_back(c, panicking, self);
    }

    /// Gives a healthy connection back (to a waiter, or the idle queue).
    pub(crate) fn requeue(&self, c: Conn<M::Connection>) {
        self.engine.give(Token::Conn(c), self);
    }

    /// The pool's counters now.
    pub(crate) fn stats(&self) -> Stats {
        self.counters.snapshot(self.engine.hits())
    }

    /// Closes the idle connections of removed backends (see [`Engine::purge_stale`]).
    pub(crate) fn purge_removed(&self) {
        self.engine
            .purge_stale(Instant::now(), self.idle_limit, self);
    }

    pub(crate) fn set_backends(&self, list: Vec<Backend>) {
        if self.is_closed() {
            return;
        }
        let change = self.backends.replace(list);
        for e in &change.added {
            let addr = e.backend.addr();
            tracing::info!(pool = %self.config.name, backend = addr, "connpool: backend added");
            self.emit(|f| f(&Event::BackendAdded { backend: addr }));
        }
        for e in &change.removed {
            let addr = e.backend.addr();
            tracing::info!(pool = %self.config.name, backend = addr, "connpool: backend removed");
            self.emit(|f| f(&Event::BackendRemoved { backend: addr }));
        }
        for (e, from, to) in &change.reweighted {
            tracing::info!(
                pool = %self.config.name,
                backend = e.backend.addr(),
                from,
                to,
                "connpool: backend weight changed"
            );
        }
        if change.any() {
            self.emit(|f| {
                let set = self.backends.snapshot();
                let addrs: Vec<&str> = set.entries.iter().map(|e| e.backend.addr()).collect();
                f(&Event::BackendsChanged { backends: &addrs })
            });
        }
        if !change.removed.is_empty() {
            self.purge_removed();
        }
        self.backends_changed.notify(usize::MAX);
    }

    /// The synchronous part of closing: stop admission and tasks, close idle connections.
    pub(crate) fn close_now(&self) {
        // The engine stops admission and closes the idle connections (first caller only).
        if !self.engine.close(self) {
            return;
        }
        tracing::debug!(pool = %self.config.name, "connpool: closed");
        if let Some(u) = &self.updates {
            u.close();
        }
        self.shutdown.notify(usize::MAX);
        self.backends_changed.notify(usize::MAX);
    }

    pub(crate) fn status(&self) -> Status {
        let set = self.backends.snapshot();
        Status {
            max_size: self.engine.max(),
            size: self.size(),
            idle: self.idle.len(),
            in_use: self.engine.in_use(),
            waiters: self.engine.waiters(),
            backends: set
                .entries
                .iter()
                .zip(&set.weights)
                .map(|(e, &weight)| BackendStatus {
                    addr: e.backend.addr().to_owned(),
                    weight,
                    online: self.backends.is_online(e),
                    // Relaxed: gauges.
                    size: e.size.load(Ordering::Relaxed),
                    idle: e.gauges.gauge(IDLE),
                    in_use: e.gauges.gauge(IN_USE),
                    connect_errors: e.connect_errors.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}

/// The engine's hooks: closing drops the connection (containing a panic in its `Drop`),
/// counts the reason, logs and events it; reuse asks the manager (a panic means no).
impl<M: Manager> Hooks<M::Connection> for PoolInner<M> {
    fn on_close(&self, conn: M::Connection, meta: &Meta, reason: CloseReason) {
        if catch_unwind(AssertUnwindSafe(move || drop(conn))).is_err() {
            tracing::error!(pool = %self.config.name, "connpool: a connection's Drop panicked");
        }
        let counter = match reason {
            CloseReason::IdleTimeout | CloseReason::IdleFull | CloseReason::Shrunk => {
                Some(&self.counters.closed_idle)
            }
            CloseReason::Lifetime => Some(&self.counters.closed_lifetime),
            CloseReason::BackendGone => Some(&self.counters.closed_backend_gone),
            CloseReason::PoolClosed => None,
            _ => Some(&self.counters.closed_broken),
        };
        if let Some(c) = counter {
            stats::bump(c);
        }
        let addr = meta.backend.backend.addr();
        tracing::debug!(pool = %self.config.name, backend = addr, %reason, "connpool: connection closed");
        self.emit(|f| {
            f(&Event::Closed {
                backend: addr,
                reason,
            })
        });
    }

    fn on_detach(&self, meta: &Meta) {
        stats::bump(&self.counters.detached);
        let addr = meta.backend.backend.addr();
        tracing::debug!(pool = %self.config.name, backend = addr, "connpool: connection detached");
        self.emit(|f| f(&Event::Detached { backend: addr }));
    }

    fn is_reusable(&self, conn: &mut M::Connection) -> bool {
        catch_unwind(AssertUnwindSafe(|| self.manager.is_reusable(conn))).unwrap_or(false)
    }

    type Sleep = tokio::time::Sleep;

    fn sleep_until(&self, at: Instant) -> tokio::time::Sleep {
        tokio::time::sleep_until(at)
    }

    #[inline]
    fn stamps_returns(&self) -> bool {
        self.stamps_returns
    }
}

impl<M: Manager> std::ops::Deref for PoolInner<M> {
    type Target = Engine<M::Connection>;
    fn deref(&self) -> &Engine<M::Connection> {
        &self.engine
    }
}

/// Why `dial` did not produce a connection.
pub(crate) enum DialError<E> {
    /// The get's deadline passed (not the backend's fault).
    Deadline,
    /// The backend failed (error, connect_timeout, panic, or it was removed meanwhile).
    Failed { source: Option<E>, message: String },
}

/// Compile-time checks of the auto traits users rely on.
#[allow(dead_code)]
fn _assert_auto_traits<M: Manager>(pool: &Pool<M>) {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Pool<M>>();
    send::<Pool<M>>(pool);
    fn send_type<T: Send>() {}
    send_type::<Get<'_, M>>();
    send_type::<GetRef<'_, M>>();
    send_type::<Pooled<M>>();
    send_type::<PooledRef<'_, M>>();
    let fut = pool.get();
    send(&fut);
    let fut = pool.get_ref();
    send(&fut);
}
