//! Profiling aid: `wait-loop POOL N [TASKS [SIZE]]` runs N get → yield → drop cycles in all,
//! by TASKS tasks (default 16) over a pool of SIZE connections (default 2, so eight tasks per
//! connection, as in the over-capacity scenario) on a current-thread runtime. Every get but
//! the first few waits and every return hands its connection to the oldest waiter: the wait
//! path, one wait per cycle, in a run that is the same every time (for `valgrind
//! --tool=callgrind`, which counts that path's instructions exactly; `hit-loop` does the same
//! for the hit path). `wait-loop POOL N 2 1` is the worst case for a pool that arms a timer
//! per line rather than per wait: every wait is the whole line.

use std::sync::Arc;

use connpool_benches::pools::{self, AsyncPool, Visit};
use connpool_benches::profiling::{self, Args};

struct Loop {
    cycles: u64,
    tasks: u64,
}

impl Visit for Loop {
    type Out = ();
    async fn visit<P: AsyncPool>(self, pool: Arc<P>) {
        let tasks: Vec<_> = (0..self.tasks)
            .map(|_| {
                let pool = Arc::clone(&pool);
                let n = self.cycles / self.tasks;
                tokio::spawn(async move { wait_loop(&*pool, n).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("a wait-loop task panicked");
        }
    }
}

#[inline(never)]
async fn wait_loop<P: AsyncPool>(pool: &P, n: u64) {
    for _ in 0..n {
        let mut g = pool.get().await;
        P::touch(&mut g);
        tokio::task::yield_now().await;
    }
}

fn main() {
    let args = Args::from_env();
    let kind = args.kind();
    let arg = |i, default| args.number(i, default).max(1);
    let (cycles, tasks, size) = (arg(2, 1_000_000), arg(3, 16), arg(4, 2));
    let size = usize::try_from(size).expect("a pool size");
    profiling::runtime().block_on(async {
        pools::with_async_pool(kind, size, Loop { cycles, tasks }).await;
    });
}
