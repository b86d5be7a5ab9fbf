//! The crate's internals as the loom models in `loom-tests` drive them. Only under
//! `cfg(loom)`; hidden; not part of the API.
//!
//! [`Core`] is the real [`Engine`] (idle queue, capacity, the waiters' line and its hand-off, the
//! timer duty's expiry walk, gauges, closed flag, return path, close handshake, try_take, resize,
//! purge, the `Unit`/`Opening` guards) plus the real [`Backends`] cell (its pick and backoff probe
//! too), with a recorder as the engine's hooks in place of the manager, counters and events. Each
//! method is one call into that code, except [`Core::get_with`], which strings the engine's steps
//! together in the order `PoolInner::fast_path` and `PoolInner::get_slow` do (minus the tokio
//! parts: test-on-borrow, and the manager's `connect`, which here succeeds or fails at once; the
//! waiters' timer is one that never fires, and expiry is driven by [`Core::expire_due`]).
//!
//! See `sync.rs` for what loom sees (atomics, the wait queue) and what it does not
//! (`ArrayQueue` and `ArcSwap` run as opaque steps; their correctness is upstream's).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use crate::backends::{Backend, BackendEntry, Backends, BackoffPolicy, Picked};
use crate::engine::{Engine, Hooks, Unit as EngineUnit, WaitError};
use crate::events::CloseReason;
use crate::idle::{Conn, IdleLimit, LazyNow, Meta, Token};
use crate::lanes::Lane;
use crate::sync::{Arc, Instant, Ordering};

/// Why [`Core::get`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetError {
    /// The pool closed.
    Closed,
    /// The (shared) deadline passed: [`Core::expire_due`] expired the wait.
    TimedOut,
    /// The connect failed (or its backend left the list meanwhile); its slot went on.
    ConnectFailed,
    /// No backend is listed.
    NoBackends,
}

/// What [`Core::pick`] found (the real `Backends::pick`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// A backend to dial.
    Dial,
    /// Every backend is backed off.
    AllBackedOff,
    /// No backend to try.
    None,
}

/// A model connection: its id and backend address.
#[derive(Debug)]
pub struct TestConn {
    /// Unique per `Core`, in opening order from 0.
    pub id: usize,
    /// The backend it was opened to.
    pub backend: String,
}

/// Records what the engine closes (instead of the manager, counters and events).
#[derive(Default)]
struct Recorder {
    /// Ids and reasons of closed connections, in order. A std `Mutex`: held only while
    /// pushing, with no loom operation inside, so loom never switches threads under it.
    closed: Mutex<Vec<(usize, CloseReason)>>,
    opened: Mutex<usize>,
}

impl Hooks<TestConn> for Recorder {
    fn on_close(&self, conn: TestConn, _meta: &Meta, reason: CloseReason) {
        self.closed
            .lock()
            .expect("recorder")
            .push((conn.id, reason));
    }
    fn is_reusable(&self, _conn: &mut TestConn) -> bool {
        true
    }
    /// Never fires: the models drive expiry with [`Core::expire_due`].
    type Sleep = std::future::Pending<()>;
    fn sleep_until(&self, _at: Instant) -> Self::Sleep {
        std::future::pending()
    }
}

/// The real engine and backend set, driven directly.
pub struct Core {
    engine: Engine<TestConn>,
    backends: Backends,
    rec: Recorder,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("max_size", &self.max_size())
            .field("size", &self.size())
            .field("idle", &self.idle())
            .field("in_use", &self.in_use())
            .field("waiters", &self.waiters())
            .finish()
    }
}

/// A lent connection. Give it back with [`Core::give_back`] (or discard it).
#[must_use]
pub struct Lent(Conn<TestConn>);

impl Lent {
    /// The connection's id.
    pub fn id(&self) -> usize {
        self.0.conn.id
    }
    /// Its backend's address.
    pub fn backend(&self) -> &str {
        &self.0.conn.backend
    }
}

impl fmt::Debug for Lent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lent#{}@{}", self.0.conn.id, self.0.conn.backend)
    }
}

/// A unit of capacity owned by the model (an idle connection or a slot): given back to the
/// engine on drop (the engine's `Unit` guard).
#[must_use]
#[allow(missing_debug_implementations)]
pub struct Unit<'a>(EngineUnit<'a, TestConn, Recorder>);

impl Unit<'_> {
    /// Gives the unit back as it is (dropping it instead closes a connection it holds, as a
    /// get cancelled mid-check does).
    pub fn give_back(self, core: &Core) {
        core.engine.give(self.0.take(), &core.rec);
    }
}

/// The engine's wait in line, as the models poll it (see [`Core::acquire`]).
pub type Acquire<'a> = Pin<Box<dyn Future<Output = Result<Unit<'a>, GetError>> + 'a>>;

impl Core {
    /// A pool of `max_size` units (idle queue capacity 4 × `max_size`, `max_idle` =
    /// `max_size`) over `backends`.
    pub fn new(max_size: usize, backends: &[&str]) -> Self {
        Core {
            engine: Engine::new(max_size, 4 * max_size, max_size),
            backends: Backends::new(
                Some(backends.iter().map(|a| Backend::new(*a)).collect()),
                // A claimed probe's backoff lasts far beyond any model's run.
                BackoffPolicy {
                    base: Duration::from_secs(3600),
                    max: Duration::from_secs(3600),
                },
            ),
            rec: Recorder::default(),
        }
    }

    // ----- admission -----

    /// Waits in line for a unit (no fast path: straight into line). `shared`: with a shared
    /// deadline (expired only by [`expire_due`](Self::expire_due)); else with none. Drop it
    /// to cancel.
    pub fn acquire(&self, shared: bool) -> Acquire<'_> {
        Box::pin(async move {
            self.engine
                .acquire(&self.rec, shared_deadline(shared), shared)
                .await
                .map(|t| Unit(EngineUnit::new(&self.engine, &self.rec, t)))
                .map_err(wait_error)
        })
    }

    /// A free slot now (no waiting, no idle connection taken), as a unit.
    pub fn try_reserve(&self) -> Option<Unit<'_>> {
        self.engine
            .try_reserve()
            .then(|| Unit(EngineUnit::new(&self.engine, &self.rec, Token::Slot)))
    }

    /// The timer duty's walk at a time past every shared deadline: expires every shared
    /// waiter still in line.
    pub fn expire_due(&self) {
        self.engine.expire_due(Instant::now() + 2 * SHARED_WAIT);
    }

    /// The timer duty's walk now, before any shared deadline (an early fire of its timer):
    /// must expire nobody.
    pub fn expire_due_now(&self) {
        self.engine.expire_due(Instant::now());
    }

    /// Blocks until a waiter holds the timer duty (told by the waiter that takes it).
    pub fn wait_for_duty(&self) {
        self.engine.wait_for_duty();
    }

    /// Does a waiter hold the timer duty now?
    pub fn duty_held(&self) -> bool {
        self.engine.duty_held()
    }

    // ----- the get path, in the pool's order -----

    /// `get()` without tokio: closed? → the fast path (an idle connection, else a slot) →
    /// else a wait in line (`shared`: with a shared deadline, see [`acquire`](Self::acquire))
    /// → closed? → a fresh idle connection, else open one on the first listed backend
    /// (`connect_ok`: the manager's answer) → the removed and closed re-checks → lend.
    pub async fn get_with(&self, connect_ok: bool, shared: bool) -> Result<Lent, GetError> {
        if self.engine.is_closed() {
            return Err(GetError::Closed);
        }
        let lane = Lane::current();
        let mut first = None;
        if self.engine.no_waiters() {
            match self.engine.hit(
                &mut LazyNow::new(),
                IdleLimit::NONE,
                lane,
                &self.rec,
                |_, _| true,
            ) {
                Some(Ok(c)) => return Ok(Lent(c)),
                Some(Err(_)) => unreachable!("no check on borrow in the models"),
                None => {
                    if self.engine.try_reserve() {
                        first = Some(Token::Slot);
                    }
                }
            }
        }
        let token = match first {
            Some(t) => t,
            None => self
                .engine
                .acquire(&self.rec, shared_deadline(shared), shared)
                .await
                .map_err(wait_error)?,
        };
        let mut unit = EngineUnit::new(&self.engine, &self.rec, token);
        if self.engine.is_closed() {
            return Err(GetError::Closed);
        }
        loop {
            match unit.token() {
                Token::Conn(c) => {
                    if let Some(reason) = c.meta.stale_reason(&mut LazyNow::new(), IdleLimit::NONE)
                    {
                        unit.close_keep(reason);
                        continue;
                    }
                    return Ok(Lent(self.engine.lend(unit.take_conn(), Lane::current())));
                }
                Token::Slot => {
                    if let Some(c) = self.engine.pop_fresh(
                        &mut LazyNow::new(),
                        IdleLimit::NONE,
                        Lane::current(),
                        &self.rec,
                    ) {
                        unit.set_conn(c, true);
                        continue;
                    }
                    let c = self.open(connect_ok)?;
                    unit.set_conn(c, false);
                    if self.engine.is_closed() {
                        unit.close_keep(CloseReason::PoolClosed);
                        return Err(GetError::Closed);
                    }
                    return Ok(Lent(
                        self.engine.lend_new(unit.take_conn(), Lane::current()),
                    ));
                }
            }
        }
    }

    /// [`get_with`](Self::get_with), waiting with no deadline.
    pub async fn get(&self, connect_ok: bool) -> Result<Lent, GetError> {
        self.get_with(connect_ok, false).await
    }

    /// Opens a connection on the first listed backend, on a slot the caller holds (as
    /// `PoolInner::dial` does: the backend's `size` raised by the engine's `Opening` guard,
    /// lowered again if the connect fails; a connection whose backend left the list meanwhile
    /// is closed, the caller keeping its slot).
    fn open(&self, connect_ok: bool) -> Result<Conn<TestConn>, GetError> {
        let set = self.backends.snapshot();
        let Some(entry) = set.entries.first().cloned() else {
            return Err(GetError::NoBackends);
        };
        let opening = self.engine.opening(&entry);
        if !connect_ok {
            drop(opening);
            return Err(GetError::ConnectFailed);
        }
        opening.opened();
        let c = self.conn_to(&entry);
        if entry.is_removed() {
            self.engine
                .close_keep(c, CloseReason::BackendGone, &self.rec);
            return Err(GetError::ConnectFailed);
        }
        Ok(c)
    }

    fn conn_to(&self, entry: &Arc<BackendEntry>) -> Conn<TestConn> {
        let mut opened = self.rec.opened.lock().expect("recorder");
        let id = *opened;
        *opened += 1;
        Conn::new(
            TestConn {
                id,
                backend: entry.backend.addr().to_owned(),
            },
            Meta::new(Arc::clone(entry), Instant::now(), None),
        )
    }

    /// `try_get()`: the engine's fail-fast take.
    pub fn try_get(&self) -> Option<Lent> {
        self.engine
            .try_take(&mut LazyNow::new(), IdleLimit::NONE, &self.rec)
            .map(Lent)
    }

    // ----- the return path -----

    /// `drop(Pooled)`: the engine's return path (to a waiter, or the idle queue).
    pub fn give_back(&self, c: Lent) {
        self.engine.give_back(c.0, false, &self.rec);
    }

    /// `Pooled::discard`.
    pub fn discard(&self, c: Lent) {
        self.engine.discard(c.0, &self.rec);
    }

    // ----- close, resize, backends -----

    /// `close()`'s synchronous part; `false` if already closed.
    pub fn close(&self) -> bool {
        self.engine.close(&self.rec)
    }

    /// Resolves once every connection is closed (the end of `close()`).
    pub async fn drained(&self) {
        self.engine.drained().await;
    }

    /// `set_max_size(n)`.
    pub fn resize(&self, n: usize) {
        self.engine.resize(n, n, &self.rec);
    }

    /// `set_backends(list)`: the real list swap, then the purge pass.
    pub fn set_backends(&self, list: &[&str]) {
        if self.engine.is_closed() {
            return;
        }
        let change = self
            .backends
            .replace(list.iter().map(|a| Backend::new(*a)).collect());
        if !change.removed.is_empty() {
            self.engine
                .purge_stale(Instant::now(), IdleLimit::NONE, &self.rec);
        }
    }

    /// Marks the first backend failing, its backoff passed: the next pick claims a probe.
    pub fn fail_first_backend(&self) {
        self.backends.fail_due(&self.first_backend());
    }

    /// The real backend pick (round-robin, nothing tried yet).
    pub fn pick(&self) -> Pick {
        match self.backends.pick(crate::balance::Balance::RoundRobin, &[]) {
            Picked::Dial(..) => Pick::Dial,
            Picked::AllBackedOff(_) => Pick::AllBackedOff,
            Picked::None => Pick::None,
        }
    }

    /// A connect to the first backend succeeded (`Backends::connect_ok`).
    pub fn connect_ok_first(&self) {
        self.backends.connect_ok(&self.first_backend());
    }

    fn first_backend(&self) -> Arc<BackendEntry> {
        let set = self.backends.snapshot();
        Arc::clone(set.entries.first().expect("a listed backend"))
    }

    // ----- observations -----

    /// Is the first backend dialable now (not backed off)?
    pub fn first_backend_online(&self) -> bool {
        self.backends.is_online(&self.first_backend())
    }

    /// `max_size` now.
    pub fn max_size(&self) -> usize {
        self.engine.max()
    }
    /// Queued waiters now.
    pub fn waiters(&self) -> usize {
        self.engine.waiters()
    }
    /// Open connections (idle, lent, opening) and reserved slots.
    pub fn size(&self) -> usize {
        self.engine.size()
    }
    /// Open connections (and connects in flight) per listed backend, summed.
    pub fn backend_sizes(&self) -> usize {
        self.backends
            .snapshot()
            .entries
            .iter()
            // Relaxed: read after the model's threads joined.
            .map(|e| e.size.load(Ordering::Relaxed))
            .sum()
    }
    /// Connections in the idle queue.
    pub fn idle(&self) -> usize {
        self.engine.idle.len()
    }
    /// Lent connections.
    pub fn in_use(&self) -> usize {
        self.engine.in_use()
    }
    /// `true` once closed.
    pub fn is_closed(&self) -> bool {
        self.engine.is_closed()
    }
    /// Connections opened, ever.
    pub fn opened(&self) -> usize {
        *self.rec.opened.lock().expect("recorder")
    }
    /// Connections closed by the engine, with why, in order.
    pub fn closed(&self) -> Vec<(usize, CloseReason)> {
        self.rec.closed.lock().expect("recorder").clone()
    }
    /// Opened and not (yet) closed.
    pub fn live(&self) -> usize {
        self.opened() - self.rec.closed.lock().expect("recorder").len()
    }
}

/// How far off a model waiter's shared deadline is: far beyond any model's run, so only
/// [`Core::expire_due`] (a walk past it) expires anyone.
const SHARED_WAIT: Duration = Duration::from_secs(3600);

/// A waiter's shared deadline, if it has one (see [`SHARED_WAIT`]).
fn shared_deadline(shared: bool) -> Option<Instant> {
    shared.then(|| Instant::now() + SHARED_WAIT)
}

fn wait_error(e: WaitError) -> GetError {
    match e {
        WaitError::Closed => GetError::Closed,
        WaitError::TimedOut => GetError::TimedOut,
    }
}
