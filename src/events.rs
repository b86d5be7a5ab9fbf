//! [`Event`]s and the panic-safe dispatch of `on_event` callbacks.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::sync::Arc;

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// Idle longer than `idle_timeout`.
    IdleTimeout,
    /// Older than `max_lifetime` (jittered).
    Lifetime,
    /// Failed `check_retries` checks in a row, or its check on borrow.
    CheckFailed,
    /// `Manager::is_reusable` said no when it came back.
    NotReusable,
    /// The user called `Pooled::discard`.
    Discarded,
    /// Its task panicked while it was lent.
    Panicked,
    /// A get gave up while checking it (cancelled, or out of time): its state is unknown.
    Cancelled,
    /// Its backend left the list.
    BackendGone,
    /// The idle queue held `max_idle` connections already.
    IdleFull,
    /// The pool shrank (`set_max_size`) below its open connections.
    Shrunk,
    /// The pool closed.
    PoolClosed,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::Lifetime => "max lifetime",
            CloseReason::CheckFailed => "check failed",
            CloseReason::NotReusable => "not reusable",
            CloseReason::Discarded => "discarded",
            CloseReason::Panicked => "task panicked",
            CloseReason::Cancelled => "get cancelled mid-check",
            CloseReason::BackendGone => "backend removed",
            CloseReason::IdleFull => "idle queue full",
            CloseReason::Shrunk => "pool shrank",
            CloseReason::PoolClosed => "pool closed",
        })
    }
}

/// Something that happened in the pool, passed to the `on_event` callbacks.
///
/// Borrowed strings keep dispatch allocation-free; copy what you keep.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A new connection was opened.
    Connected {
        /// The backend's address.
        backend: &'a str,
    },
    /// Opening a connection failed.
    ConnectFailed {
        /// The backend's address.
        backend: &'a str,
        /// The error, in words.
        error: &'a str,
    },
    /// A check passed.
    CheckPassed {
        /// The backend's address.
        backend: &'a str,
    },
    /// A check failed.
    CheckFailed {
        /// The backend's address.
        backend: &'a str,
        /// The error, in words.
        error: &'a str,
    },
    /// A connection was closed.
    Closed {
        /// The backend's address.
        backend: &'a str,
        /// Why.
        reason: CloseReason,
    },
    /// A lent connection was taken out of the pool for good (`Pooled::detach`): it stays
    /// open, owned by the caller, and the pool no longer counts it.
    Detached {
        /// The backend's address.
        backend: &'a str,
    },
    /// A backend joined the list.
    BackendAdded {
        /// The backend's address.
        backend: &'a str,
    },
    /// A backend left the list.
    BackendRemoved {
        /// The backend's address.
        backend: &'a str,
    },
    /// The list changed (a backend added, removed or given another weight); here is the
    /// new one.
    BackendsChanged {
        /// The addresses now in force.
        backends: &'a [&'a str],
    },
    /// Discovery failed (the last good list stays in force).
    DiscoveryFailed {
        /// What went wrong.
        message: &'a str,
    },
    /// Discovery skipped something it could not use (e.g. malformed node data).
    DiscoveryWarning {
        /// What was skipped, and why.
        message: &'a str,
    },
}

pub(crate) type Callback = Arc<dyn Fn(&Event<'_>) + Send + Sync + 'static>;

/// The registered callbacks.
#[derive(Clone, Default)]
pub(crate) struct Callbacks {
    list: Vec<Callback>,
}

impl Callbacks {
    pub(crate) fn push(&mut self, cb: Callback) {
        self.list.push(cb);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Runs every callback under `catch_unwind`: a panicking callback is logged and skipped,
    /// and never disturbs the pool or the other callbacks.
    pub(crate) fn emit(&self, event: &Event<'_>) {
        for cb in &self.list {
            if catch_unwind(AssertUnwindSafe(|| cb(event))).is_err() {
                tracing::error!(?event, "connpool: an on_event callback panicked; ignored");
            }
        }
    }
}
