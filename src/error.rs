//! Errors: [`Error`] from getting a connection, [`BuildError`] from configuration and
//! [`DiscoveryError`] from a discovery source.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Why `get()` did not return a connection.
///
/// Match with `Error::Timeout { .. }`, `Error::Connect { .. }` and so on; the enum is
/// `#[non_exhaustive]` so new causes can be added without breaking you.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error<E> {
    /// `wait_timeout` passed before a connection was ready.
    Timeout {
        /// How long the get waited in all.
        waited: Duration,
        /// The pool's `max_size` when the get gave up.
        max_size: usize,
        /// Open connections when the get gave up.
        size: usize,
        /// Connections lent out when the get gave up.
        in_use: usize,
        /// Getters waiting for a slot when the get gave up (this one included if it was
        /// waiting for a slot then, not connecting or checking).
        waiters: usize,
        /// The text of the last connect error the pool saw, if any (why the pool may be short).
        last_connect_error: Option<String>,
    },
    /// No slot was free and the get was not allowed to wait (`wait_timeout` zero), or
    /// `try_get` found no idle connection.
    Exhausted,
    /// The pool is closed.
    Closed,
    /// Discovery currently lists no backend (or the first list had not arrived in time).
    NoBackends,
    /// Opening a connection failed on every backend tried, or every backend is failing and
    /// backed off. `backend` is the last one tried; when every backend was backed off and
    /// none was tried, it is the one due to be probed next.
    Connect {
        /// The backend's address.
        backend: String,
        /// The manager's error; `None` when the connect timed out, panicked, or was not tried
        /// because every backend is backed off (then `message` holds the last error's text).
        source: Option<E>,
        /// What went wrong, in words.
        message: String,
    },
    /// A fresh connection failed its check.
    Check {
        /// The backend's address.
        backend: String,
        /// The manager's error; `None` when the check timed out or panicked.
        source: Option<E>,
        /// What went wrong, in words.
        message: String,
    },
}

impl<E> Error<E> {
    /// `true` for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
    /// `true` for [`Error::Exhausted`].
    pub fn is_exhausted(&self) -> bool {
        matches!(self, Error::Exhausted)
    }
    /// `true` for [`Error::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }
    /// `true` for [`Error::NoBackends`].
    pub fn is_no_backends(&self) -> bool {
        matches!(self, Error::NoBackends)
    }
    /// `true` for [`Error::Connect`].
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect { .. })
    }
    /// `true` for [`Error::Check`].
    pub fn is_check(&self) -> bool {
        matches!(self, Error::Check { .. })
    }
    /// The backend the error is about, for `Connect` and `Check`.
    pub fn backend(&self) -> Option<&str> {
        match self {
            Error::Connect { backend, .. } | Error::Check { backend, .. } => Some(backend),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout {
                waited,
                max_size,
                size,
                in_use,
                waiters,
                last_connect_error,
            } => {
                write!(
                    f,
                    "timed out after {waited:?} waiting for a connection \
                     (max_size {max_size}, size {size}, in use {in_use}, waiters {waiters})"
                )?;
                if let Some(e) = last_connect_error {
                    write!(f, "; last connect error: {e}")?;
                }
                Ok(())
            }
            Error::Exhausted => {
                f.write_str("pool exhausted: no connection free and no wait allowed")
            }
            Error::Closed => f.write_str("pool closed"),
            Error::NoBackends => f.write_str("no backends: discovery lists no online backend"),
            Error::Connect {
                backend, message, ..
            } => {
                write!(f, "connecting to {} failed: {message}", shown(backend))
            }
            Error::Check {
                backend, message, ..
            } => {
                write!(
                    f,
                    "check of a new connection to {} failed: {message}",
                    shown(backend)
                )
            }
        }
    }
}

/// The implicit backend has the address `""`: the manager dials its own address.
fn shown(backend: &str) -> &str {
    if backend.is_empty() {
        "the manager's own address"
    } else {
        backend
    }
}

impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Connect {
                source: Some(e), ..
            }
            | Error::Check {
                source: Some(e), ..
            } => Some(e),
            _ => None,
        }
    }
}

/// An invalid configuration, or a pool built where it cannot run.
///
/// `field` names the builder method at fault and `rule` says what it must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuildError {
    /// The offending builder field (e.g. `"max_size"`), or `"runtime"`.
    pub field: &'static str,
    /// The rule it broke, in words.
    pub rule: String,
}

impl BuildError {
    pub(crate) fn new(field: &'static str, rule: impl Into<String>) -> Self {
        BuildError {
            field,
            rule: rule.into(),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid pool config: {}: {}", self.field, self.rule)
    }
}

impl StdError for BuildError {}

/// A discovery source failed; the pool keeps the last good list and retries after a backoff.
#[derive(Debug)]
pub struct DiscoveryError {
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl DiscoveryError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        DiscoveryError {
            message: message.into(),
            source: None,
        }
    }
    /// An error with a message and the underlying cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        DiscoveryError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {}", self.message, s),
            None => f.write_str(&self.message),
        }
    }
}

impl StdError for DiscoveryError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
