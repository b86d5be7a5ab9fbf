//! [`Pooled`]: a lent connection; dropping it is the return path.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::backends::Backend;
use crate::idle::Conn;
use crate::manager::Manager;
use crate::pool::PoolInner;
use crate::sync::{Arc, Instant};

/// A connection lent by the pool. Derefs to `M::Connection`.
///
/// Dropping it returns the connection to the idle queue, then frees its slot and wakes one
/// waiter. It is closed instead (and only the slot freed) when `Manager::is_reusable` says no,
/// it outlived `max_lifetime`, its backend left the list, the pool is closed or shrank, the
/// idle queue already holds `max_idle`, or its task is panicking (a connection abandoned by a
/// panic may be half-used). The return path does no I/O and never blocks.
///
/// The methods here are associated functions in spirit: `discard`, `detach` and `backend`
/// are few and named so they do not shadow the connection's own methods you reach through
/// `Deref`; if yours has the same names, call them as `Pooled::discard(conn)`.
#[must_use = "dropping a Pooled returns the connection at once"]
pub struct Pooled<M: Manager> {
    pool: Arc<PoolInner<M>>,
    conn: Option<Conn<M::Connection>>,
}

impl<M: Manager> Pooled<M> {
    pub(crate) fn new(pool: Arc<PoolInner<M>>, conn: Conn<M::Connection>) -> Self {
        Pooled {
            pool,
            conn: Some(conn),
        }
    }

    fn conn_ref(&self) -> &Conn<M::Connection> {
        self.conn
            .as_ref()
            .expect("a Pooled holds its connection until dropped")
    }

    /// The backend this connection is open to.
    pub fn backend(&self) -> &Backend {
        &self.conn_ref().meta.backend.backend
    }

    /// When the connection was opened.
    pub fn created_at(&self) -> std::time::Instant {
        self.conn_ref().meta.created_at.into_std()
    }

    /// Closes the connection instead of returning it (e.g. after an error that left it in an
    /// unknown state); frees its slot. Counted as `closed_broken`.
    pub fn discard(mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.engine.discard(c, &*self.pool);
        }
    }

    /// Takes the connection out of the pool for good: the pool forgets it and frees its slot
    /// (a new connection may be opened in its place).
    pub fn detach(mut self) -> M::Connection {
        let c = self
            .conn
            .take()
            .expect("a Pooled holds its connection until dropped");
        self.pool.engine.detach(c)
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        &self.conn_ref().conn
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self
            .conn
            .as_mut()
            .expect("a Pooled holds its connection until dropped")
            .conn
    }
}

impl<M: Manager> fmt::Debug for Pooled<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Pooled");
        if let Some(c) = &self.conn {
            d.field("backend", &c.meta.backend.backend.addr()).field(
                "age",
                &Instant::now().saturating_duration_since(c.meta.created_at),
            );
        }
        d.finish_non_exhaustive()
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.give_back(c, std::thread::panicking());
        }
    }
}
