//! `Faulty`: a fault-injecting manager with no I/O. Every connection it makes is counted
//! while alive, so tests can check that nothing leaks; connects and checks can be told to
//! fail, hang or panic, per backend or for all.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connpool::{Backend, Manager};

/// What a connect or a check does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    Ok,
    /// Fails with an error.
    Fail,
    /// Never completes.
    Hang,
    /// Panics (in the returned future, at its first poll).
    Panic,
    /// Panics when called, before it returns its future.
    PanicEarly,
    /// Completes after a (virtual-time-friendly) tokio sleep.
    Delay(Duration),
}

#[derive(Default)]
struct State {
    connect_all: Mutex<Fault>,
    connect_by: Mutex<HashMap<String, Fault>>,
    check: Mutex<Fault>,
    reusable: AtomicBool,
    panic_reusable: AtomicBool,
    next_id: AtomicU64,
    connects: Mutex<HashMap<String, usize>>,
    live: Mutex<HashMap<String, usize>>,
    live_total: AtomicUsize,
    checks: AtomicUsize,
    refused: AtomicUsize,
    dialed: Mutex<HashSet<String>>,
    attempts: Mutex<HashMap<String, usize>>,
}

/// The manager. Clone it to keep a handle for steering and counting.
#[derive(Clone)]
pub struct Faulty {
    s: Arc<State>,
}

impl Default for Faulty {
    fn default() -> Self {
        Self::new()
    }
}

impl Faulty {
    pub fn new() -> Self {
        let s = State::default();
        s.reusable.store(true, Ordering::SeqCst);
        Faulty { s: Arc::new(s) }
    }
    /// What every connect does (unless a per-backend fault is set).
    pub fn connect_fault(&self, f: Fault) {
        *self.s.connect_all.lock().unwrap() = f;
    }
    /// What connects to `addr` do.
    pub fn connect_fault_for(&self, addr: &str, f: Fault) {
        self.s.connect_by.lock().unwrap().insert(addr.to_owned(), f);
    }
    /// Refuse (or accept again) connects to `addr`.
    pub fn refuse(&self, addr: &str, on: bool) {
        self.connect_fault_for(addr, if on { Fault::Fail } else { Fault::Ok });
    }
    /// What every check does.
    pub fn check_fault(&self, f: Fault) {
        *self.s.check.lock().unwrap() = f;
    }
    /// What `is_reusable` answers.
    pub fn set_reusable(&self, on: bool) {
        self.s.reusable.store(on, Ordering::SeqCst);
    }
    /// Make `is_reusable` panic.
    pub fn panic_in_reusable(&self, on: bool) {
        self.s.panic_reusable.store(on, Ordering::SeqCst);
    }
    /// Successful connects to `addr`, ever.
    pub fn connects_to(&self, addr: &str) -> usize {
        *self.s.connects.lock().unwrap().get(addr).unwrap_or(&0)
    }
    /// Successful connects, ever.
    /// Connects begun to `addr`, whatever became of them (refused, hung, succeeded).
    pub fn attempts_to(&self, addr: &str) -> usize {
        self.s
            .attempts
            .lock()
            .unwrap()
            .get(addr)
            .copied()
            .unwrap_or(0)
    }

    pub fn connects(&self) -> usize {
        self.s.connects.lock().unwrap().values().sum()
    }
    /// Refused (failed) connects, ever.
    pub fn refused(&self) -> usize {
        self.s.refused.load(Ordering::SeqCst)
    }
    /// Connections to `addr` alive now (made and not yet dropped).
    pub fn live_to(&self, addr: &str) -> usize {
        *self.s.live.lock().unwrap().get(addr).unwrap_or(&0)
    }
    /// Connections alive now.
    pub fn live(&self) -> usize {
        self.s.live_total.load(Ordering::SeqCst)
    }
    /// Checks run, ever.
    pub fn checks(&self) -> usize {
        self.s.checks.load(Ordering::SeqCst)
    }
    fn fault_for(&self, addr: &str) -> Fault {
        if let Some(f) = self.s.connect_by.lock().unwrap().get(addr) {
            if *f != Fault::Ok {
                return *f;
            }
        }
        *self.s.connect_all.lock().unwrap()
    }
}

/// A fake connection. Counted alive until dropped.
pub struct FConn {
    pub id: u64,
    pub addr: String,
    /// Set by a test to make `is_reusable` say no for this connection.
    pub dirty: bool,
    s: Arc<State>,
}

impl fmt::Debug for FConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FConn#{}@{}", self.id, self.addr)
    }
}

impl Drop for FConn {
    fn drop(&mut self) {
        *self.s.live.lock().unwrap().get_mut(&self.addr).unwrap() -= 1;
        self.s.live_total.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The manager's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultError(pub String);

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for FaultError {}

async fn act(f: Fault, what: &str) -> Result<(), FaultError> {
    match f {
        Fault::Ok => Ok(()),
        Fault::Fail => Err(FaultError(format!("{what} refused"))),
        Fault::Hang => std::future::pending().await,
        Fault::Panic | Fault::PanicEarly => panic!("{what} panicked (injected)"),
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
    }
}

impl Manager for Faulty {
    type Connection = FConn;
    type Error = FaultError;

    fn connect(&self, backend: &Backend) -> impl Future<Output = Result<FConn, FaultError>> + Send {
        let addr = backend.addr().to_owned();
        let fault = self.fault_for(&addr);
        if fault == Fault::PanicEarly {
            panic!("connect to {addr} panicked before its future (injected)");
        }
        let s = Arc::clone(&self.s);
        async move {
            s.dialed.lock().unwrap().insert(addr.clone());
            *s.attempts.lock().unwrap().entry(addr.clone()).or_default() += 1;
            if let Err(e) = act(fault, &format!("connect to {addr}")).await {
                s.refused.fetch_add(1, Ordering::SeqCst);
                return Err(e);
            }
            *s.connects.lock().unwrap().entry(addr.clone()).or_default() += 1;
            *s.live.lock().unwrap().entry(addr.clone()).or_default() += 1;
            s.live_total.fetch_add(1, Ordering::SeqCst);
            let id = s.next_id.fetch_add(1, Ordering::SeqCst);
            Ok(FConn {
                id,
                addr,
                dirty: false,
                s,
            })
        }
    }

    fn check(&self, conn: &mut FConn) -> impl Future<Output = Result<(), FaultError>> + Send {
        let fault = *self.s.check.lock().unwrap();
        self.s.checks.fetch_add(1, Ordering::SeqCst);
        if fault == Fault::PanicEarly {
            panic!("check of {conn:?} panicked before its future (injected)");
        }
        let what = format!("check of {conn:?}");
        async move { act(fault, &what).await }
    }

    fn is_reusable(&self, conn: &mut FConn) -> bool {
        if self.s.panic_reusable.load(Ordering::SeqCst) {
            panic!("is_reusable panicked (injected)");
        }
        !conn.dirty && self.s.reusable.load(Ordering::SeqCst)
    }
}

/// Polls `cond` every 10 ms (virtual or real) until it holds or `within` passes; whether it
/// held. For callers that say more than [`eventually`] when it does not.
pub async fn settles(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `cond` every 10 ms (virtual or real) until it holds or `within` passes; panics
/// with `what` on timeout. For conditions reached by background tasks.
pub async fn eventually(what: &str, within: Duration, cond: impl FnMut() -> bool) {
    if !settles(within, cond).await {
        panic!("timed out after {within:?} waiting for: {what}");
    }
}

/// A pool of `max` with `wait` as its `wait_timeout` and no check on borrow (so gets and
/// returns are all the manager sees), built on the calling runtime.
pub fn pool_of(m: &Faulty, max: usize, wait: Duration) -> connpool::Pool<Faulty> {
    connpool::Pool::builder(m.clone())
        .max_size(max)
        .wait_timeout(wait)
        .test_on_borrow(connpool::TestOnBorrow::Never)
        .build()
        .unwrap()
}

/// At rest: nothing lent, nobody waiting, every open connection idle, and the pool's size is
/// the number of connections actually alive (`live`).
fn at_rest(st: &connpool::Status, live: usize) -> bool {
    st.in_use == 0 && st.waiters == 0 && st.size == st.idle && st.size == live
}

/// Waits up to `within` for the pool to come to rest, then asserts it (with the status in the
/// message if it never does). For a pool whose maintenance task is busy: a refill it is
/// dialing counts in `size` before it is idle or alive, so an instant's status may show one
/// connection in flight; a unit that leaked never settles.
pub async fn until_at_rest(pool: &connpool::Pool<Faulty>, m: &Faulty, within: Duration) {
    settles(within, || at_rest(&pool.status(), m.live())).await;
    assert_at_rest(pool, m);
}

/// Asserts the pool is at rest (see `at_rest`).
pub fn assert_at_rest(pool: &connpool::Pool<Faulty>, m: &Faulty) {
    let (st, live) = (pool.status(), m.live());
    assert!(
        at_rest(&st, live),
        "not at rest (want in_use 0, waiters 0, size == idle == {live} live connections): {st:?}"
    );
}
