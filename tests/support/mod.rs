//! Shared test support: a fault-injecting manager and real servers started on 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

pub mod certs;
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

/// Load for tests against real servers: `n` tasks, each running `round(its index)` again
/// and again until [`Load::stop`].
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn spawn<F, Fut>(n: usize, round: F) -> Load
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let round = std::sync::Arc::new(round);
        let tasks = (0..n)
            .map(|t| {
                let (stop, round) = (stop.clone(), round.clone());
                tokio::spawn(async move {
                    // Relaxed: a flag polled between rounds; the join in `stop` is the
                    // synchronisation.
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        round(t).await;
                    }
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the tasks and waits for each to end, at most `within` each (else: "a task
    /// hung"); a task that panicked fails the test.
    pub async fn stop(self, within: Duration) {
        // Relaxed: see `spawn`.
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            tokio::time::timeout(within, t)
                .await
                .expect("a task hung")
                .expect("a task panicked");
        }
    }
}
