//! Shared test support: a fault-injecting manager and real servers started on 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

pub mod etcd_server;
pub mod faulty;
pub mod redis_server;
pub mod zookeeper_server;
