//! The hit path allocates nothing: getting an idle connection and returning it (no check on
//! borrow) makes no heap allocation, so a busy service's pool adds no allocator traffic. A
//! get that waits allocates its continuation and nothing per wait slot: the slots (and their
//! events) are reused, for a burst of waiters too.
//!
//! A counting `#[global_allocator]` counts the allocations made on this test's thread while
//! counting is switched on; the pool is warmed first (building it, opening its connections and
//! starting its maintenance task all allocate, once).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use connpool::{Backend, Manager, Pool, TestOnBorrow};

struct Counting;

thread_local! {
    // const-initialised: using them never allocates (so they are safe inside the allocator).
    // Both per thread: the tests run on threads of their own, at the same time.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: defers every operation to `System`; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts the allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(Cell::get) - before
}

#[derive(Debug)]
struct Dummy;

impl Manager for Dummy {
    type Connection = u64;
    type Error = std::io::Error;
    async fn connect(&self, _: &Backend) -> Result<u64, std::io::Error> {
        Ok(0)
    }
    async fn check(&self, _: &mut u64) -> Result<(), std::io::Error> {
        Ok(())
    }
}

const CYCLES: usize = 10_000;

/// `CYCLES` gets (each must be a hit: ready at its first poll) and returns, polled by hand.
fn hits_by_hand<F, G, E>(mut get: impl FnMut() -> F)
where
    F: std::future::Future<Output = Result<G, E>>,
    G: std::ops::DerefMut<Target = u64>,
    E: std::fmt::Display,
{
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    for _ in 0..CYCLES {
        let mut fut = std::pin::pin!(get());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(mut c)) => *c += 1,
            std::task::Poll::Ready(Err(e)) => panic!("get failed: {e}"),
            std::task::Poll::Pending => panic!("a hit must not wait"),
        }
    }
}

/// A current-thread runtime (everything below runs on the test's own thread, where the
/// allocations are counted).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A pool that does nothing on a hit but pop and push: no check on borrow, no idle timeout,
/// no lifetime.
fn plain_pool(max_size: usize, wait_timeout: Duration) -> Pool<Dummy> {
    Pool::builder(Dummy)
        .max_size(max_size)
        .test_on_borrow(TestOnBorrow::Never)
        .idle_timeout(None)
        .max_lifetime(None)
        .wait_timeout(wait_timeout)
        .build()
        .expect("pool")
}

#[test]
fn get_and_return_of_an_idle_connection_allocates_nothing() {
    runtime().block_on(async {
        let pool = plain_pool(4, Duration::from_secs(5));
        // Warm: open every connection, return them, let the maintenance task start.
        {
            let mut held = Vec::new();
            for _ in 0..4 {
                held.push(pool.get().await.expect("get"));
            }
        }
        tokio::task::yield_now().await;
        for _ in 0..100 {
            *pool.get().await.expect("get") += 1;
        }
        assert_eq!(pool.status().idle, 4);

        // The hit path, polled by hand so that nothing but get and drop runs while counting:
        // through `get` (an owned guard) and `get_ref` (a borrowing one).
        let n = allocations(|| hits_by_hand(|| pool.get()));
        assert_eq!(n, 0, "{n} allocations over {CYCLES} get/return cycles");
        let n = allocations(|| hits_by_hand(|| pool.get_ref()));
        assert_eq!(n, 0, "{n} allocations over {CYCLES} get_ref/return cycles");

        // try_get's hit path too.
        let n = allocations(|| {
            for _ in 0..CYCLES {
                let mut c = pool.try_get().expect("an idle connection");
                *c += 1;
            }
        });
        assert_eq!(n, 0, "{n} allocations over {CYCLES} try_get/return cycles");

        let stats = pool.stats();
        assert_eq!(stats.misses, 4, "every counted get was a hit");
        // The 100 warm-up gets and every cycle above (try_get's count as hits too).
        assert_eq!(stats.hits, 100 + 3 * CYCLES as u64);
    });
}

/// How many gets queue at once in each round of the burst test below.
const BURST: usize = 4;

/// One round of a burst: the one connection is held while `BURST` gets queue behind it (each
/// polled once, by hand), then it is given back, and each get in turn is served and gives it
/// back to the next. `look`: also check the line's length on the way (`status()` allocates
/// its list of backends, so not while counting).
fn burst_round(pool: &Pool<Dummy>, look: bool) {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let held = pool.try_get().expect("the idle connection");
    let mut a = std::pin::pin!(pool.get());
    let mut b = std::pin::pin!(pool.get());
    let mut c = std::pin::pin!(pool.get());
    let mut d = std::pin::pin!(pool.get());
    let mut gets = [a.as_mut(), b.as_mut(), c.as_mut(), d.as_mut()];
    for g in gets.iter_mut() {
        assert!(
            g.as_mut().poll(&mut cx).is_pending(),
            "a get behind a held connection must wait"
        );
    }
    if look {
        assert_eq!(pool.status().waiters, BURST);
    }
    drop(held);
    for g in gets.iter_mut() {
        match g.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(mut c)) => *c += 1,
            std::task::Poll::Ready(Err(e)) => panic!("get failed: {e}"),
            std::task::Poll::Pending => panic!("a get handed the connection must be ready"),
        }
    }
    if look {
        assert_eq!(pool.status().waiters, 0);
    }
}

#[test]
fn a_burst_of_waits_reuses_its_wait_slots() {
    runtime().block_on(async {
        let pool = plain_pool(1, Duration::from_secs(3600));
        drop(pool.get().await.expect("get"));
        tokio::task::yield_now().await;
        // Warm: the first rounds allocate the wait slots that later rounds reuse.
        for _ in 0..3 {
            burst_round(&pool, true);
        }
        const ROUNDS: usize = 1000;
        let n = allocations(|| {
            for _ in 0..ROUNDS {
                burst_round(&pool, false);
            }
        });
        // Per round: each waiting get's continuation (boxed, so that a get that hits stays
        // small) and the one timer of the line, armed by the first waiter (which holds the
        // timer duty). Nothing per wait slot: a slot and its event are allocated once and then
        // reused, for every get of a burst, not only the first.
        assert_eq!(
            n,
            ROUNDS * (BURST + 1),
            "{n} allocations over {ROUNDS} rounds of {BURST} waits"
        );
        let stats = pool.stats();
        assert_eq!(stats.waits, (3 + ROUNDS as u64) * BURST as u64);
    });
}
