//! The [`Manager`] trait: how the pool opens, checks and vets connections.

use std::future::Future;

use crate::backends::Backend;

/// Knows how to open, check and vet connections to one backend.
///
/// The pool decides *when* and *to which backend*; the manager only does the I/O.
/// Every method may be called concurrently from many tasks.
///
/// Closing a connection is dropping it: a connection's `Drop` must not block (tokio's and
/// the `redis` crate's sockets close without blocking).
///
/// `connect` runs on the runtime of the task that needs the connection: a get's (or the
/// pool's own, for `min_idle` refills). A tokio socket belongs to the runtime it was opened
/// on, so when a pool is shared by several runtimes, a connection dialed on one that shuts
/// down stops working; the pool closes it once a use or a check fails (see
/// [`Builder::build`](crate::Builder::build)'s runtimes).
///
/// # Panics
///
/// A panic in `connect` or `check` is caught by the pool, whether it happens in the call
/// itself (before the future is returned) or while the future runs: it counts as a failed
/// connect or a failed check, and never leaks a slot, corrupts a counter or ends the pool's
/// background task.
///
/// # Example
///
/// ```
/// use connpool::{Backend, Manager};
/// use tokio::net::TcpStream;
///
/// struct Tcp;
///
/// impl Manager for Tcp {
///     type Connection = TcpStream;
///     type Error = std::io::Error;
///
///     async fn connect(&self, backend: &Backend) -> Result<TcpStream, std::io::Error> {
///         TcpStream::connect(backend.addr()).await
///     }
///
///     async fn check(&self, conn: &mut TcpStream) -> Result<(), std::io::Error> {
///         // A real manager would send a PING; here: is the socket still open?
///         conn.peer_addr().map(|_| ())
///     }
/// }
/// ```
pub trait Manager: Send + Sync + 'static {
    /// The connection type handed out by the pool.
    type Connection: Send + 'static;
    /// The error `connect` and `check` return.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a new connection to `backend` (the pool picks the backend).
    fn connect(
        &self,
        backend: &Backend,
    ) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Active health check (e.g. PING). Used by test-on-borrow, keepalive and the idle scan.
    fn check(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Cheap and synchronous: may `conn` go back to the idle queue? (not broken, no half-read
    /// reply, not inside MULTI/WATCH/SUBSCRIBE/MONITOR). Default: `true`.
    fn is_reusable(&self, _conn: &mut Self::Connection) -> bool {
        true
    }
}
