//! Live backend lists: the [`Discovery`] trait, the [`Updates`] handle a discovery publishes
//! through, and the adapters (ZooKeeper, etcd) behind features.
//!
//! The pool runs a discovery as its own task. The task calls [`Discovery::run`], which
//! publishes every new list with [`Updates::publish`]; the pool applies the latest list (bursts
//! coalesce: the latest list wins) with `Pool::set_backends`. If `run` returns an error or
//! panics, the pool counts it (`Stats::discovery_errors`), fires `Event::DiscoveryFailed`,
//! keeps the last published list, and calls `run` again after a capped, jittered backoff.
//! When the pool closes, [`Updates::closed`] resolves and `run` should return; the pool stops
//! the task in any case.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::backends::Backend;
use crate::error::DiscoveryError;
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering, WaitQueue};

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd-tls")]
mod etcd_tls;
#[cfg(any(feature = "zookeeper", feature = "etcd"))]
mod node;
pub(crate) mod runner;
#[cfg(feature = "zookeeper")]
mod zookeeper;

#[cfg(feature = "etcd")]
pub use etcd::Etcd;
#[cfg(feature = "zookeeper")]
pub use zookeeper::ZooKeeper;

/// A source of the live backend list (ZooKeeper, etcd, DNS, a file, ...).
///
/// # Example
///
/// ```
/// use connpool::{Backend, Discovery, DiscoveryError, Updates};
///
/// /// Publishes one fixed list, then idles until the pool closes.
/// struct Once(Vec<String>);
///
/// impl Discovery for Once {
///     async fn run(&self, updates: Updates) -> Result<(), DiscoveryError> {
///         updates.publish(self.0.iter().map(Backend::new));
///         updates.closed().await;
///         Ok(())
///     }
/// }
/// ```
pub trait Discovery: Send + Sync + 'static {
    /// Runs until the pool closes (`updates.closed()` resolves), publishing every new list of
    /// online backends with `updates.publish(list)` (sync, cheap, coalescing). If it returns an
    /// error or panics (in the call or in its future), the pool counts and events it and calls
    /// `run` again after a backoff, keeping the last published list meanwhile.
    fn run(&self, updates: Updates)
        -> impl Future<Output = Result<(), DiscoveryError>> + Send + '_;
}

/// Object-safe form of [`Discovery`], so the pool can hold any discovery behind one pointer.
pub(crate) trait DynDiscovery: Send + Sync + 'static {
    fn run_boxed(
        &self,
        updates: Updates,
    ) -> Pin<Box<dyn Future<Output = Result<(), DiscoveryError>> + Send + '_>>;
}

impl<D: Discovery> DynDiscovery for D {
    fn run_boxed(
        &self,
        updates: Updates,
    ) -> Pin<Box<dyn Future<Output = Result<(), DiscoveryError>> + Send + '_>> {
        Box::pin(self.run(updates))
    }
}

/// What a discovery reports besides lists.
pub(crate) enum Report<'a> {
    /// Something went wrong but the discovery carries on (e.g. a lost ZooKeeper connection).
    Error(&'a str),
    /// A tolerable oddity (e.g. a node with malformed data, skipped).
    Warning(&'a str),
}

/// The handle a [`Discovery`] publishes through. Cheap to clone; every clone talks to the
/// same pool.
#[derive(Clone)]
pub struct Updates {
    pub(crate) shared: Arc<UpdatesShared>,
}

impl std::fmt::Debug for Updates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates")
            .field("closed", &self.is_closed())
            .field("published", &self.shared.published.load(Ordering::Relaxed))
            .finish()
    }
}

pub(crate) struct UpdatesShared {
    /// The latest list not yet applied (a newer publish replaces an older one: coalescing).
    pub(crate) pending: Mutex<Option<Vec<Backend>>>,
    /// Wakes the pool's applier task when `pending` is filled.
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) closed: AtomicBool,
    pub(crate) closed_event: WaitQueue,
    /// Publishes ever: shown by `Debug`, and read by the applier to tell whether another
    /// publish came while it waited (its debounce).
    pub(crate) published: AtomicU64,
    pub(crate) reporter: Box<dyn Fn(Report<'_>) + Send + Sync>,
}

impl UpdatesShared {
    pub(crate) fn new(reporter: Box<dyn Fn(Report<'_>) + Send + Sync>) -> Arc<Self> {
        Arc::new(UpdatesShared {
            pending: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
            closed_event: WaitQueue::new(),
            published: AtomicU64::new(0),
            reporter,
        })
    }

    pub(crate) fn close(&self) {
        // SeqCst: pairs with the load in `Updates::closed` after it listens, so a closer and a
        // waiter cannot both miss each other.
        self.closed.store(true, Ordering::SeqCst);
        self.closed_event.notify(usize::MAX);
        self.wake.notify_one();
    }

    pub(crate) fn take_pending(&self) -> Option<Vec<Backend>> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Updates {
    /// Publishes the complete current list of online backends. Cheap and synchronous. The
    /// pool applies the latest list once publishes have paused for 20 ms (the first list at
    /// once; during a burst that does not pause, every 100 ms at least): a burst coalesces
    /// into its latest list, and a backend dropped and listed again within it keeps its
    /// connections. Duplicated addresses are merged. An
    /// empty list is meaningful: `get()` then fails with `Error::NoBackends`.
    pub fn publish<I: IntoIterator<Item = Backend>>(&self, list: I) {
        let list: Vec<Backend> = list.into_iter().collect();
        *self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(list);
        // Relaxed: a statistic for Debug only; the list itself is published by the mutex.
        self.shared.published.fetch_add(1, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }

    /// Reports an error the discovery recovers from by itself (a lost connection to
    /// ZooKeeper, a failed re-read): counted in `Stats::discovery_errors` and fired as
    /// `Event::DiscoveryFailed`. The last published list stays in force.
    pub fn report_error(&self, message: &str) {
        (self.shared.reporter)(Report::Error(message));
    }

    /// Reports a tolerable oddity (a node with malformed data that was skipped): fired as
    /// `Event::DiscoveryWarning` and logged; not counted as an error.
    pub fn warn(&self, message: &str) {
        (self.shared.reporter)(Report::Warning(message));
    }

    /// Resolves once the pool is closed (or dropped); `run` should then return.
    pub async fn closed(&self) {
        loop {
            // SeqCst: pairs with the store in `close` (listen, re-check, then wait).
            if self.shared.closed.load(Ordering::SeqCst) {
                return;
            }
            let listener = self.shared.closed_event.listen();
            if self.shared.closed.load(Ordering::SeqCst) {
                return;
            }
            listener.await;
        }
    }

    /// `true` once the pool is closed.
    pub fn is_closed(&self) -> bool {
        // Acquire: a cheap poll; `closed()` gives the ordered wait.
        self.shared.closed.load(Ordering::Acquire)
    }
}
