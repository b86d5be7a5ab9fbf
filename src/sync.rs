//! The only place the crate's atomics, `Arc`, the wait queue, the idle queue, the backend
//! cell and the clock come from.
//!
//! Under `cfg(loom)` the atomics and the wait queue (event-listener built with its
//! `loom` feature) are loom's, so the models in `loom-tests` explore their interleavings.
//! `crossbeam_queue::ArrayQueue` and `arc_swap::ArcSwap` stay the real ones: loom sees each of
//! their operations as one opaque step. Their own correctness is upstream's (crossbeam and
//! arc-swap test themselves); our models check how we *use* them.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
/// `Arc`/`Weak` stay std's even under loom (loom has no `Weak`); the models drive the
/// admission, idle and backend cores directly, which hold no `Arc` of their own.
pub(crate) use std::sync::{Arc, Weak};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};

pub(crate) use arc_swap::ArcSwap;
pub(crate) use crossbeam_queue::ArrayQueue;
pub(crate) use crossbeam_utils::CachePadded;
/// `event_listener::Event`, renamed: `connpool::Event` is our public callback type.
pub(crate) use event_listener::{Event as WaitQueue, EventListener, Listener};

/// The pool's clock. tokio's `Instant` so that tests can pause and advance time; outside a
/// runtime (and under loom) it reads the system's monotonic clock.
pub(crate) type Instant = tokio::time::Instant;
