//! Shared test support: a fault-injecting manager and real servers started on 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

pub mod etcd_server;
pub mod faulty;
pub mod redis_server;
pub mod zookeeper_server;

use std::process::Child;
use std::time::Duration;

/// SIGKILLs a server process (if running) and waits for it to be gone.
pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill(); // SIGKILL on Unix
        let _ = c.wait();
    }
}

/// Starts a server again on its old port: `spawn` is retried for about 5 s (the port may
/// linger a moment after a kill); panics naming `what` and the last error if it never answers.
pub fn restart_on_port(what: &str, port: u16, mut spawn: impl FnMut() -> Result<(), String>) {
    let mut last = String::new();
    for _ in 0..20 {
        match spawn() {
            Ok(()) => return,
            Err(e) => {
                last = e;
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    panic!("{what} did not restart on port {port}: {last}");
}
