//! Profiling aid: `hit-loop POOL N` runs N uncontended get → drop cycles (all hits) on a
//! current-thread runtime, in `hot_loop` (for `valgrind --tool=callgrind
//! --toggle-collect=*hot_loop*` or `perf record`).

use std::sync::Arc;

use connpool_benches::pools::{self, AsyncPool, Visit};
use connpool_benches::profiling::{self, Args};

struct Loop(u64);

impl Visit for Loop {
    type Out = ();
    async fn visit<P: AsyncPool>(self, pool: Arc<P>) {
        hot_loop(&*pool, self.0).await;
    }
}

#[inline(never)]
async fn hot_loop<P: AsyncPool>(pool: &P, n: u64) {
    for _ in 0..n {
        let mut g = pool.get().await;
        P::touch(&mut g);
    }
}

fn main() {
    let args = Args::from_env();
    let (kind, n) = (args.kind(), args.number(2, 1_000_000));
    profiling::runtime().block_on(async {
        pools::with_async_pool(kind, 16, Loop(n)).await;
    });
}
