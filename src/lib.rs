#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod admission;
mod backends;
mod backoff;
mod balance;
mod builder;
mod config;
pub mod discovery;
mod engine;
mod error;
mod events;
mod idle;
mod lanes;
mod maintenance;
mod manager;
#[cfg(feature = "metrics")]
mod metrics;
mod pool;
mod pooled;
#[cfg(feature = "redis")]
pub mod redis;
mod stats;
mod sync;

pub use crate::backends::Backend;
pub use crate::balance::Balance;
pub use crate::builder::Builder;
pub use crate::config::{Config, TestOnBorrow};
pub use crate::discovery::{Discovery, Updates};
pub use crate::error::{BuildError, DiscoveryError, Error};
pub use crate::events::{CloseReason, Event};
pub use crate::manager::Manager;
pub use crate::pool::{Get, GetRef, Pool};
pub use crate::pooled::{Pooled, PooledRef};
pub use crate::stats::{BackendStatus, Stats, Status};

#[cfg(loom)]
#[doc(hidden)]
pub mod __loom;
