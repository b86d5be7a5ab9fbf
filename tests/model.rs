//! Model-based property test: random sequences of get, get-with-wait, try_get, return,
//! discard, detach, set_backends, set_max_size and close run against the pool and against a
//! small reference model of what the pool must hold; after every step the pool's status (size,
//! idle, in use, per-backend counts), the live connection count and every result (which
//! connection was handed out, which error) must match the model. proptest shrinks a failing
//! sequence to a minimal one.
//!
//! One task on a current-thread runtime with paused time (a wait that cannot succeed times
//! out at once in virtual time), and the fault-injecting `Faulty` manager, whose connection
//! ids count successful connects, so the model knows the id of the next new connection.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 256).

mod support;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::task::{Context, Waker};
use std::time::Duration;

use connpool::{Backend, Error, Pool, Pooled, TestOnBorrow};
use proptest::prelude::*;
use support::faulty::{FaultError, Faulty};

const ADDRS: [&str; 3] = ["a", "b", "c"];
const LIMIT: usize = 4;

#[derive(Clone)]
enum Op {
    /// `get_timeout(ZERO)`: fail fast when no slot is free.
    Get,
    /// `get_timeout(10 ms)`: waits (virtual time) when no slot is free.
    GetWait,
    TryGet,
    /// Drop the lent connection at this index (modulo the number lent).
    Return(usize),
    Discard(usize),
    Detach(usize),
    /// Bit i set: `ADDRS[i]` is listed.
    SetBackends(u8),
    SetMaxSize(usize),
    Close,
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get => write!(f, "Get"),
            Op::GetWait => write!(f, "GetWait"),
            Op::TryGet => write!(f, "TryGet"),
            Op::Return(i) => write!(f, "Return({i})"),
            Op::Discard(i) => write!(f, "Discard({i})"),
            Op::Detach(i) => write!(f, "Detach({i})"),
            Op::SetBackends(m) => write!(f, "SetBackends({:?})", listed(*m)),
            Op::SetMaxSize(n) => write!(f, "SetMaxSize({n})"),
            Op::Close => write!(f, "Close"),
        }
    }
}

fn listed(mask: u8) -> Vec<&'static str> {
    ADDRS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, a)| *a)
        .collect()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Get),
        1 => Just(Op::GetWait),
        2 => Just(Op::TryGet),
        4 => (0..4usize).prop_map(Op::Return),
        1 => (0..4usize).prop_map(Op::Discard),
        1 => (0..4usize).prop_map(Op::Detach),
        1 => (0..8u8).prop_map(Op::SetBackends),
        1 => (1..=LIMIT).prop_map(Op::SetMaxSize),
        1 => Just(Op::Close),
    ]
}

/// A connection as the model knows it: its id, backend and the backend's generation (a
/// backend removed and listed again is a new entry; connections of the old one are stale).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MConn {
    id: u64,
    addr: &'static str,
    gen: u32,
}

/// What the pool must hold.
struct Model {
    max_size: usize,
    listed: Vec<&'static str>,
    gen: HashMap<&'static str, u32>,
    idle: VecDeque<MConn>,
    lent: Vec<MConn>,
    closed: bool,
    next_id: u64,
}

/// What a get must produce.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Hit(u64),
    /// A new connection, with this id, to some listed backend.
    Miss(u64),
    Exhausted,
    Timeout,
    Closed,
    NoBackends,
}

impl Model {
    fn stale(&self, c: &MConn) -> bool {
        !self.listed.contains(&c.addr) || self.gen[c.addr] != c.gen
    }
    fn size(&self) -> usize {
        self.idle.len() + self.lent.len()
    }
    fn slot_free(&self) -> bool {
        self.lent.len() < self.max_size
    }
    /// Pops until a fresh idle connection (stale ones are closed).
    fn pop_fresh(&mut self) -> Option<MConn> {
        while let Some(c) = self.idle.pop_front() {
            if !self.stale(&c) {
                return Some(c);
            }
        }
        None
    }
    fn get(&mut self, wait: bool) -> Expect {
        if self.closed {
            return Expect::Closed;
        }
        if !self.slot_free() {
            return if wait {
                Expect::Timeout
            } else {
                Expect::Exhausted
            };
        }
        if let Some(c) = self.pop_fresh() {
            self.lent.push(c);
            return Expect::Hit(c.id);
        }
        if self.listed.is_empty() {
            return Expect::NoBackends;
        }
        Expect::Miss(self.next_id)
    }
    /// A miss happened on `addr`: record the new connection.
    fn opened(&mut self, addr: &'static str) {
        let c = MConn {
            id: self.next_id,
            addr,
            gen: self.gen[addr],
        };
        self.next_id += 1;
        self.lent.push(c);
    }
    fn try_get(&mut self) -> Expect {
        if self.closed {
            return Expect::Closed;
        }
        if !self.slot_free() {
            return Expect::Exhausted;
        }
        match self.pop_fresh() {
            Some(c) => {
                self.lent.push(c);
                Expect::Hit(c.id)
            }
            None => Expect::Exhausted,
        }
    }
    fn give_back(&mut self, i: usize) {
        let c = self.lent.remove(i);
        let close = self.closed
            || self.stale(&c)
            || self.size() + 1 > self.max_size
            || self.idle.len() >= self.max_size;
        if !close {
            self.idle.push_back(c);
        }
    }
    fn set_backends(&mut self, mask: u8) {
        if self.closed {
            return;
        }
        let new = listed(mask);
        let removed: Vec<_> = self
            .listed
            .iter()
            .filter(|a| !new.contains(a))
            .copied()
            .collect();
        for a in &removed {
            *self.gen.get_mut(a).unwrap() += 1;
        }
        self.listed = new;
        // The purge pass runs when a slot is free to hold what it takes out.
        if !removed.is_empty() && !self.idle.is_empty() && self.slot_free() {
            let idle = std::mem::take(&mut self.idle);
            self.idle = idle.into_iter().filter(|c| !self.stale(c)).collect();
        }
    }
    fn set_max_size(&mut self, n: usize) {
        self.max_size = n;
        while self.size() > n && self.idle.pop_front().is_some() {}
    }
    fn close(&mut self) {
        self.closed = true;
        self.idle.clear();
    }
}

fn classify(r: &Result<Pooled<Faulty>, Error<FaultError>>, next_id: u64) -> Expect {
    match r {
        Ok(c) => {
            if c.id == next_id {
                Expect::Miss(c.id)
            } else {
                Expect::Hit(c.id)
            }
        }
        Err(Error::Exhausted) => Expect::Exhausted,
        Err(Error::Timeout { .. }) => Expect::Timeout,
        Err(Error::Closed) => Expect::Closed,
        Err(Error::NoBackends) => Expect::NoBackends,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn addr_of(a: &str) -> &'static str {
    ADDRS.iter().find(|x| **x == a).expect("a known address")
}

async fn run(initial_max: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    // The pool's random choices (round-robin start, jitter) come from this thread's fastrand:
    // seeded, a sequence replays identically, so shrinking compares like with like.
    fastrand::seed(7);
    let faulty = Faulty::new();
    let pool = Pool::builder(faulty.clone())
        .max_size(initial_max)
        .max_size_limit(LIMIT)
        .wait_timeout(Duration::from_millis(10))
        .test_on_borrow(TestOnBorrow::Never)
        .idle_timeout(None)
        .max_lifetime(None)
        .backends(ADDRS.map(Backend::new))
        .build()
        .expect("valid config");
    let mut m = Model {
        max_size: initial_max,
        listed: ADDRS.to_vec(),
        gen: ADDRS.iter().map(|a| (*a, 0)).collect(),
        idle: VecDeque::new(),
        lent: Vec::new(),
        closed: false,
        next_id: 0,
    };
    let mut lent: Vec<Pooled<Faulty>> = Vec::new();

    for (step, op) in ops.iter().enumerate() {
        let at = format!("step {step} ({op:?})");
        match op {
            Op::Get | Op::GetWait | Op::TryGet => {
                let want = match op {
                    Op::TryGet => m.try_get(),
                    Op::Get => m.get(false),
                    _ => m.get(true),
                };
                let r = match op {
                    Op::TryGet => pool.try_get(),
                    Op::Get => pool.get_timeout(Duration::ZERO).await,
                    _ => pool.get_timeout(Duration::from_millis(10)).await,
                };
                let got = classify(&r, m.next_id);
                prop_assert_eq!(&got, &want, "{}: result", at);
                if let Ok(c) = r {
                    if let Expect::Miss(_) = want {
                        let addr = addr_of(&c.addr);
                        prop_assert!(m.listed.contains(&addr), "{}: dialed unlisted {}", at, addr);
                        m.opened(addr);
                    }
                    let mc = *m.lent.last().unwrap();
                    prop_assert_eq!(c.addr.as_str(), mc.addr, "{}: backend", at);
                    lent.push(c);
                }
            }
            Op::Return(i) | Op::Discard(i) | Op::Detach(i) => {
                if lent.is_empty() {
                    continue;
                }
                let i = i % lent.len();
                let c = lent.remove(i);
                prop_assert_eq!(c.id, m.lent[i].id, "{}: bookkeeping", at);
                match op {
                    Op::Return(_) => {
                        drop(c);
                        m.give_back(i);
                    }
                    Op::Discard(_) => {
                        Pooled::discard(c);
                        m.lent.remove(i);
                    }
                    _ => {
                        drop(Pooled::detach(c));
                        m.lent.remove(i);
                    }
                }
            }
            Op::SetBackends(mask) => {
                pool.set_backends(listed(*mask).into_iter().map(Backend::new));
                m.set_backends(*mask);
            }
            Op::SetMaxSize(n) => {
                pool.set_max_size(*n).expect("valid size");
                m.set_max_size(*n);
            }
            Op::Close => {
                // close() returns only once the lent connections are back; its first poll
                // does the closing (what the model steps), then it waits for them.
                let mut closing = std::pin::pin!(pool.close());
                let done = closing
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                    .is_ready();
                m.close();
                prop_assert_eq!(done, m.lent.is_empty(), "{}: close() done", at);
            }
        }
        check(&pool, &faulty, &m, &at)?;
    }
    // Everything back: the pool must be at rest and all slots usable.
    while let Some(c) = lent.pop() {
        drop(c);
        m.give_back(m.lent.len() - 1);
    }
    check(&pool, &faulty, &m, "the end")?;
    if !m.closed {
        let st = pool.status();
        prop_assert_eq!(st.waiters, 0);
        let mut all = Vec::new();
        for _ in 0..m.max_size {
            match pool.get_timeout(Duration::ZERO).await {
                Ok(c) => all.push(c),
                // No backend listed and nothing idle: no slot is lost, there is just no dial.
                Err(Error::NoBackends) => {}
                Err(e) => return Err(TestCaseError::fail(format!("a slot was lost: {e}"))),
            }
        }
        prop_assert!(
            pool.get_timeout(Duration::ZERO).await.is_err(),
            "more than max_size slots"
        );
    }
    Ok(())
}

fn check(pool: &Pool<Faulty>, faulty: &Faulty, m: &Model, at: &str) -> Result<(), TestCaseError> {
    let st = pool.status();
    prop_assert_eq!(st.max_size, m.max_size, "{}: max_size", at);
    prop_assert_eq!(st.in_use, m.lent.len(), "{}: in_use", at);
    prop_assert_eq!(st.idle, m.idle.len(), "{}: idle", at);
    prop_assert_eq!(st.size, m.size(), "{}: size", at);
    prop_assert_eq!(faulty.live(), m.size(), "{}: live connections", at);
    let listed: Vec<&str> = st.backends.iter().map(|b| b.addr.as_str()).collect();
    prop_assert_eq!(&listed, &m.listed, "{}: backends", at);
    for b in &st.backends {
        let addr = addr_of(&b.addr);
        let cur = |c: &&MConn| c.addr == addr && c.gen == m.gen[addr];
        let idle = m.idle.iter().filter(cur).count();
        let in_use = m.lent.iter().filter(cur).count();
        prop_assert_eq!(
            (b.size, b.idle, b.in_use),
            (idle + in_use, idle, in_use),
            "{}: backend {} (size, idle, in_use)",
            at,
            addr
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        // Failures shrink until no step can be dropped or simplified (well past the default).
        max_shrink_iters: 100_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pool_matches_the_model(initial_max in 1..=3usize, ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(initial_max, ops))?;
    }
}
