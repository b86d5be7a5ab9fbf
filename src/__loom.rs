//! The crate's internals as the loom models in `loom-tests` drive them. Only under
//! `cfg(loom)`; hidden; not part of the API.
//!
//! [`Core`] is the real [`Engine`] (admission, idle queue, gauges, closed flag, return path,
//! close handshake, try_take, resize, purge, `Permit`/`Opening` guards) plus the real
//! [`Backends`] cell, with a recorder as the engine's hooks in place of the manager, counters
//! and events. Each method is one call into that code, except [`Core::get`], which strings the
//! engine's steps together in the order `PoolInner::get_inner` does (minus the tokio parts:
//! the timeout, test-on-borrow and the manager's `connect`, which here succeeds or fails at
//! once).
//!
//! See `sync.rs` for what loom sees (atomics, the wait queue) and what it does not
//! (`ArrayQueue` and `ArcSwap` run as opaque steps; their correctness is upstream's).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::admission::{Acquire as AdmissionAcquire, AcquireError};
use crate::backends::{Backend, BackendEntry, Backends, BackoffPolicy};
use crate::engine::{Engine, Hooks, Permit as EnginePermit};
use crate::events::CloseReason;
use crate::idle::{Conn, LazyNow, Meta};
use crate::sync::{Arc, Instant};

/// The pool closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Why [`Core::get`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetError {
    /// The pool closed.
    Closed,
    /// The connect failed (or its backend left the list meanwhile); the permit was released.
    ConnectFailed,
    /// No backend is listed.
    NoBackends,
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
            .field("available", &self.available())
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

/// A permit owned by the model: released on drop (the engine's `Permit` guard).
#[must_use]
#[allow(missing_debug_implementations)]
pub struct Permit<'a>(EnginePermit<'a>);

impl Permit<'_> {
    /// Hands the permit on without releasing it (as a get does to its `Pooled`).
    pub fn forget(self) {
        self.0.disarm();
    }
}

/// The admission wait: [`Admission::acquire`](crate::admission::Admission::acquire).
#[must_use]
#[allow(missing_debug_implementations)]
pub struct Acquire<'a>(AdmissionAcquire<'a>);

impl Future for Acquire<'_> {
    type Output = Result<(), Closed>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|AcquireError::Closed| Closed))
    }
}

impl Core {
    /// A pool of `max_size` permits (idle queue capacity 4 × `max_size`, `max_idle` =
    /// `max_size`) over `backends`.
    pub fn new(max_size: usize, backends: &[&str]) -> Self {
        Core {
            engine: Engine::new(max_size, 4 * max_size, max_size),
            backends: Backends::new(
                Some(backends.iter().map(|a| Backend::new(*a)).collect()),
                BackoffPolicy {
                    base: Duration::from_millis(100),
                    max: Duration::from_secs(1),
                },
            ),
            rec: Recorder::default(),
        }
    }

    // ----- admission -----

    /// Waits for a permit (fast path first). Drop it to cancel.
    pub fn acquire(&self) -> Acquire<'_> {
        Acquire(self.engine.admission.acquire())
    }

    /// A permit now if one is free and nobody waits (the fast path).
    pub fn try_acquire_fair(&self) -> bool {
        self.engine.admission.try_acquire_fair()
    }

    /// Gives a permit back (hand-off to a waiter, or the counter).
    pub fn release(&self) {
        self.engine.admission.release();
    }

    /// Owns a permit the caller acquired: the engine's guard, released on drop.
    pub fn permit(&self) -> Permit<'_> {
        Permit(EnginePermit::new(&self.engine.admission))
    }

    // ----- the get path, in get_inner's order -----

    /// `get()` without tokio: closed? → acquire → permit → closed? → a fresh idle connection,
    /// else open one on the first listed backend (`connect_ok`: the manager's answer) → the
    /// removed and closed re-checks → lend.
    pub async fn get(&self, connect_ok: bool) -> Result<Lent, GetError> {
        if self.engine.is_closed() {
            return Err(GetError::Closed);
        }
        self.acquire().await.map_err(|Closed| GetError::Closed)?;
        let permit = self.permit();
        if self.engine.is_closed() {
            return Err(GetError::Closed);
        }
        if let Some(c) = self.pop() {
            permit.forget();
            return Ok(c);
        }
        let c = self.open(connect_ok)?;
        permit.forget();
        Ok(c)
    }

    /// A fresh idle connection, lent (stale ones, e.g. of removed backends, are closed on the
    /// way). The caller holds a permit, which the connection now carries.
    pub fn pop(&self) -> Option<Lent> {
        self.engine
            .pop_fresh(&mut LazyNow::new(), None, &self.rec)
            .map(|c| Lent(self.engine.lend(c)))
    }

    /// Opens a connection on the first listed backend (as `PoolInner::dial` does: `size`
    /// raised first by the engine's `Opening` guard, lowered again if the connect fails; a
    /// connection whose backend left the list meanwhile, or whose pool closed, is closed).
    /// The caller holds a permit; on error it is still the caller's to release.
    pub fn open(&self, connect_ok: bool) -> Result<Lent, GetError> {
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
                .close_conn(c, CloseReason::BackendGone, &self.rec);
            return Err(GetError::ConnectFailed);
        }
        if self.engine.is_closed() {
            self.engine
                .close_conn(c, CloseReason::PoolClosed, &self.rec);
            return Err(GetError::Closed);
        }
        Ok(Lent(self.engine.lend(c)))
    }

    fn conn_to(&self, entry: &Arc<BackendEntry>) -> Conn<TestConn> {
        let mut opened = self.rec.opened.lock().expect("recorder");
        let id = *opened;
        *opened += 1;
        Conn {
            conn: TestConn {
                id,
                backend: entry.backend.addr().to_owned(),
            },
            meta: Meta::new(Arc::clone(entry), Instant::now(), None),
        }
    }

    /// `try_get()`: the engine's fail-fast take.
    pub fn try_get(&self) -> Option<Lent> {
        self.engine
            .try_take(&mut LazyNow::new(), None, &self.rec)
            .map(Lent)
    }

    // ----- the return path -----

    /// `drop(Pooled)`: the engine's return path (push, then release).
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
            self.engine.purge_stale(Instant::now(), None, &self.rec);
        }
    }

    // ----- observations -----

    /// `max_size` now.
    pub fn max_size(&self) -> usize {
        self.engine.admission.max()
    }
    /// Free permits now (0 while a shrink is absorbed).
    pub fn available(&self) -> usize {
        self.engine.admission.available()
    }
    /// Registered waiters now.
    pub fn waiters(&self) -> usize {
        self.engine.admission.waiters()
    }
    /// Open connections (idle, lent, opening).
    pub fn size(&self) -> usize {
        self.engine.size()
    }
    /// Connections in the idle queue.
    pub fn idle(&self) -> usize {
        self.engine.idle.len()
    }
    /// Lent connections.
    pub fn in_use(&self) -> usize {
        // Relaxed: a gauge, read by the model after its threads joined.
        self.engine.in_use.gauge()
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
