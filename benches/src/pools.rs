//! The same no-I/O "connection" behind every pool, and one small trait to drive them all.
//!
//! Every manager hands out a [`Conn`] (a counter, no I/O), and its checks always pass. Each pool
//! is configured the same way: no check on borrow, no idle timeout, no lifetime, a wait limit
//! far beyond any run (hangs are caught by the runner's own time limit, not by the pools), so
//! every pool that can bound a wait pays for a timer while it waits, as it would in service.
//! deadpool's default is to wait without a limit (no timer): it is also run that way, as
//! `deadpool-untimed`, so that its cheapest configuration is in the table too. qp has no wait
//! limit at all.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

/// The dummy connection.
#[derive(Debug, Default)]
pub struct Conn {
    /// Bumped by each user, so the compiler cannot drop the use.
    pub uses: u64,
}

/// How long any pool may make a getter wait before it gives up (far longer than any run).
pub const WAIT_LIMIT: Duration = Duration::from_secs(600);

/// A pool the scenarios can drive: an async get whose guard returns the connection on drop.
pub trait AsyncPool: Send + Sync + 'static {
    /// The lent connection; dropping it gives it back.
    type Guard<'a>: Send
    where
        Self: 'a;
    /// Gets a connection (waits as long as the pool makes it wait).
    fn get(&self) -> impl Future<Output = Self::Guard<'_>> + Send;
    /// Uses the connection (so the get is not optimised away).
    fn touch(guard: &mut Self::Guard<'_>);
}

/// A pool with a blocking get (for the OS-thread scenario).
pub trait BlockingPool: Send + Sync + 'static {
    /// The lent connection; dropping it gives it back.
    type Guard<'a>
    where
        Self: 'a;
    /// Gets a connection, blocking the thread while it waits.
    fn get(&self) -> Self::Guard<'_>;
}

/// Every contender, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This crate, `Pool::get` (an owned `Pooled`).
    Connpool,
    /// This crate, `Pool::get_ref` (a `PooledRef` borrowing the pool, as bb8's and qp's
    /// guards do).
    ConnpoolRef,
    /// bb8.
    Bb8,
    /// deadpool (managed), with a wait timeout like the others.
    Deadpool,
    /// deadpool (managed) as it comes: no wait timeout (no timer while waiting).
    DeadpoolUntimed,
    /// qp.
    Qp,
    /// mobc.
    Mobc,
    /// r2d2 (blocking only; in async scenarios it is not run).
    R2d2,
    /// Floor: a bare `ArrayQueue` pop + push.
    ArrayQueueFloor,
    /// Floor: a `tokio::sync::Semaphore` acquire + release.
    SemaphoreFloor,
}

impl Kind {
    /// All of them, in table order.
    pub const ALL: [Kind; 10] = [
        Kind::Connpool,
        Kind::ConnpoolRef,
        Kind::Bb8,
        Kind::Deadpool,
        Kind::DeadpoolUntimed,
        Kind::Qp,
        Kind::Mobc,
        Kind::R2d2,
        Kind::ArrayQueueFloor,
        Kind::SemaphoreFloor,
    ];

    /// The name used on the command line and in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Connpool => "connpool",
            Kind::ConnpoolRef => "connpool-ref",
            Kind::Bb8 => "bb8",
            Kind::Deadpool => "deadpool",
            Kind::DeadpoolUntimed => "deadpool-untimed",
            Kind::Qp => "qp",
            Kind::Mobc => "mobc",
            Kind::R2d2 => "r2d2",
            Kind::ArrayQueueFloor => "floor-arrayqueue",
            Kind::SemaphoreFloor => "floor-semaphore",
        }
    }

    /// Parses a [`name`](Self::name).
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// One of connpool's own rows.
    pub fn is_connpool(self) -> bool {
        matches!(self, Kind::Connpool | Kind::ConnpoolRef)
    }

    /// A floor, not a pool.
    pub fn is_floor(self) -> bool {
        matches!(self, Kind::ArrayQueueFloor | Kind::SemaphoreFloor)
    }

    /// Has an async get.
    pub fn is_async(self) -> bool {
        self != Kind::R2d2
    }

    /// Has a blocking get.
    pub fn is_blocking(self) -> bool {
        self == Kind::R2d2
    }
}

/// Something that runs with whichever pool a [`Kind`] names (the pools' types differ).
pub trait Visit {
    /// What the visit returns.
    type Out;
    /// Called with the pool, built (and warmed: all `size` connections open and idle).
    fn visit<P: AsyncPool>(self, pool: Arc<P>) -> impl Future<Output = Self::Out>;
}

/// Builds the async pool `kind` names with `size` connections, opens them all (so every get
/// is a hit), and hands it to `v`. Must run inside a tokio runtime (for the pools that spawn
/// background tasks). `None` for r2d2, which has no async get.
pub async fn with_async_pool<V: Visit>(kind: Kind, size: usize, v: V) -> Option<V::Out> {
    Some(match kind {
        Kind::Connpool => v.visit(warm(connpool_pool(size)?, size).await).await,
        Kind::ConnpoolRef => {
            v.visit(warm(ConnpoolRef(connpool_pool(size)?), size).await)
                .await
        }
        Kind::Bb8 => v.visit(warm(Bb8Pool::new(size).await, size).await).await,
        Kind::Deadpool => {
            v.visit(warm(DeadpoolPool::new(size, Some(WAIT_LIMIT)), size).await)
                .await
        }
        Kind::DeadpoolUntimed => {
            v.visit(warm(DeadpoolPool::new(size, None), size).await)
                .await
        }
        Kind::Qp => v.visit(warm(QpPool::new(size), size).await).await,
        Kind::Mobc => v.visit(warm(MobcPool::new(size), size).await).await,
        Kind::ArrayQueueFloor => v.visit(Arc::new(QueueFloor::new(size))).await,
        Kind::SemaphoreFloor => v.visit(Arc::new(SemaphoreFloor::new(size))).await,
        Kind::R2d2 => return None,
    })
}

/// Opens all `size` connections (get them all at once, then return them).
async fn warm<P: AsyncPool>(pool: P, size: usize) -> Arc<P> {
    {
        let mut held = Vec::with_capacity(size);
        for _ in 0..size {
            held.push(pool.get().await);
        }
    }
    // mobc returns connections through spawned tasks: let them run.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    Arc::new(pool)
}

// ---- connpool -------------------------------------------------------------------------------

/// connpool's manager: hands out [`Conn`]s.
#[derive(Debug)]
pub struct ConnpoolManager;

impl connpool::Manager for ConnpoolManager {
    type Connection = Conn;
    type Error = Infallible;
    async fn connect(&self, _: &connpool::Backend) -> Result<Conn, Infallible> {
        Ok(Conn::default())
    }
    async fn check(&self, _: &mut Conn) -> Result<(), Infallible> {
        Ok(())
    }
}

/// connpool, configured like the others: no check on borrow, no idle timeout, no lifetime.
pub fn connpool_pool(size: usize) -> Option<connpool::Pool<ConnpoolManager>> {
    connpool::Pool::builder(ConnpoolManager)
        .max_size(size)
        .wait_timeout(WAIT_LIMIT)
        .test_on_borrow(connpool::TestOnBorrow::Never)
        .idle_timeout(None)
        .max_lifetime(None)
        .build()
        .ok()
}

impl AsyncPool for connpool::Pool<ConnpoolManager> {
    type Guard<'a> = connpool::Pooled<ConnpoolManager>;
    async fn get(&self) -> Self::Guard<'_> {
        match connpool::Pool::get(self).await {
            Ok(c) => c,
            Err(e) => panic!("connpool get failed: {e}"),
        }
    }
    fn touch(guard: &mut Self::Guard<'_>) {
        guard.uses += 1;
    }
}

/// connpool through `Pool::get_ref`: the borrowing guard.
pub struct ConnpoolRef(pub connpool::Pool<ConnpoolManager>);

impl AsyncPool for ConnpoolRef {
    type Guard<'a> = connpool::PooledRef<'a, ConnpoolManager>;
    async fn get(&self) -> Self::Guard<'_> {
        match self.0.get_ref().await {
            Ok(c) => c,
            Err(e) => panic!("connpool get_ref failed: {e}"),
        }
    }
    fn touch(guard: &mut Self::Guard<'_>) {
        guard.uses += 1;
    }
}

// ---- bb8 ------------------------------------------------------------------------------------

/// bb8's manager.
#[derive(Debug)]
pub struct Bb8Manager;

impl bb8::ManageConnection for Bb8Manager {
    type Connection = Conn;
    type Error = Infallible;
    async fn connect(&self) -> Result<Conn, Infallible> {
        Ok(Conn::default())
    }
    async fn is_valid(&self, _: &mut Conn) -> Result<(), Infallible> {
        Ok(())
    }
    fn has_broken(&self, _: &mut Conn) -> bool {
        false
    }
}

/// A bb8 pool.
pub struct Bb8Pool(bb8::Pool<Bb8Manager>);

impl Bb8Pool {
    async fn new(size: usize) -> Self {
        let pool = bb8::Pool::builder()
            .max_size(u32::try_from(size).unwrap_or(u32::MAX))
            .test_on_check_out(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connection_timeout(WAIT_LIMIT)
            .build(Bb8Manager)
            .await;
        match pool {
            Ok(p) => Bb8Pool(p),
            Err(e) => match e {},
        }
    }
}

impl AsyncPool for Bb8Pool {
    type Guard<'a> = bb8::PooledConnection<'a, Bb8Manager>;
    async fn get(&self) -> Self::Guard<'_> {
        match self.0.get().await {
            Ok(c) => c,
            Err(e) => panic!("bb8 get failed: {e:?}"),
        }
    }
    fn touch(guard: &mut Self::Guard<'_>) {
        guard.uses += 1;
    }
}

// ---- deadpool -------------------------------------------------------------------------------

/// deadpool's manager (managed pool).
#[derive(Debug)]
pub struct DeadpoolManager;

impl deadpool::managed::Manager for DeadpoolManager {
    type Type = Conn;
    type Error = Infallible;
    async fn create(&self) -> Result<Conn, Infallible> {
        Ok(Conn::default())
    }
    async fn recycle(
        &self,
        _: &mut Conn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

/// A deadpool managed pool.
pub struct DeadpoolPool(deadpool::managed::Pool<DeadpoolManager>);

impl DeadpoolPool {
    /// `wait`: deadpool's wait timeout (`None`, its default: wait without a limit).
    fn new(size: usize, wait: Option<Duration>) -> Self {
        match deadpool::managed::Pool::builder(DeadpoolManager)
            .max_size(size)
            .wait_timeout(wait)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
        {
            Ok(p) => DeadpoolPool(p),
            Err(e) => panic!("deadpool build failed: {e}"),
        }
    }
}

impl AsyncPool for DeadpoolPool {
    type Guard<'a> = deadpool::managed::Object<DeadpoolManager>;
    async fn get(&self) -> Self::Guard<'_> {
        match self.0.get().await {
            Ok(c) => c,
            Err(e) => panic!("deadpool get failed: {e:?}"),
        }
    }
    fn touch(guard: &mut Self::Guard<'_>) {
        guard.uses += 1;
    }
}

// ---- qp -------------------------------------------------------------------------------------

/// qp's manager.
#[derive(Debug)]
pub struct QpManager;

#[qp::async_trait]
impl qp::resource::Manage for QpManager {
    type Output = Conn;
    type Error = Infallible;
    async fn try_create(&self) -> Result<Conn, Infallible> {
        Ok(Conn::default())
    }
}

/// A qp pool; gets use `acquire_unchecked` (no validation, like the others' settings).
pub struct QpPool(qp::Pool<QpManager>);

impl QpPool {
    fn new(size: usize) -> Self {
        QpPool(qp::Pool::new(QpManager, size))
    }
}

impl AsyncPool for QpPool {
    type Guard<'a> = qp::Pooled<'a, QpManager>;
    async fn get(&self) -> Self::Guard<'_> {
        match self.0.acquire_unchecked().await {
            Ok(c) => c,
            Err(e) => match e {},
        }
    }
    fn touch(guard: &mut Self::Guard<'_>) {
        guard.uses += 1;
    }
}

// ---- mobc -----------------------------------------------------------------------------------

/// mobc's manager.
#[derive(Debug)]
pub struct MobcManager;

#[mobc::async_trait]
impl mobc::Manager for MobcManager {
    type Connection = Conn;
    type Error = Infallible;
    async fn connect(&self) -> Result<Conn, Infallible> {
        Ok(Conn::default())
    }
    async fn check(&self, conn: Conn) -> Result<Conn, Infallible> {
        Ok(conn)
    }
}

/// A mobc pool (max_idle = max_open, so returned connections stay).
pub struct MobcPool(mobc::Pool<MobcManager>);

impl MobcPool {
    fn new(size: usize) -> Self {
        let n = u64::try_from(size).unwrap_or(u64::MAX);
        MobcPool(
            mobc::Pool::builder()
                .max_open(n)
                .max_idle(n)
                .test_on_check_out(false)
                .max_lifetime(None)
                .max_idle_lifetime(None)
                .health_check_interval(None)
                .get_timeout(Some(WAIT_LIMIT))
                .build(MobcManager),
        )
    }
}

impl AsyncPool for MobcPool {
    type Guard<'a> = mobc::Connection<MobcManager>;
    async fn get(&self) -> Self::Guard<'_> {
        match self.0.get().await {
            Ok(c) => c,
            Err(e) => panic!("mobc get failed: {e}"),
        }
    }
    fn touch(guard: &mut Self::Guard<'_>) {
        guard.uses += 1;
    }
}

// ---- r2d2 -----------------------------------------------------------------------------------

/// r2d2's manager.
#[derive(Debug)]
pub struct R2d2Manager;

impl r2d2::ManageConnection for R2d2Manager {
    type Connection = Conn;
    type Error = std::io::Error;
    fn connect(&self) -> Result<Conn, std::io::Error> {
        Ok(Conn::default())
    }
    fn is_valid(&self, _: &mut Conn) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn has_broken(&self, _: &mut Conn) -> bool {
        false
    }
}

/// An r2d2 pool, all `size` connections open.
pub fn r2d2_pool(size: usize) -> r2d2::Pool<R2d2Manager> {
    match r2d2::Pool::builder()
        .max_size(u32::try_from(size).unwrap_or(u32::MAX))
        .test_on_check_out(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connection_timeout(WAIT_LIMIT)
        .build(R2d2Manager)
    {
        Ok(p) => p,
        Err(e) => panic!("r2d2 build failed: {e}"),
    }
}

impl BlockingPool for r2d2::Pool<R2d2Manager> {
    type Guard<'a> = r2d2::PooledConnection<R2d2Manager>;
    fn get(&self) -> Self::Guard<'_> {
        match r2d2::Pool::get(self) {
            Ok(mut c) => {
                c.uses += 1;
                c
            }
            Err(e) => panic!("r2d2 get failed: {e}"),
        }
    }
}

// ---- floors ---------------------------------------------------------------------------------

/// Floor: connections in a bare `ArrayQueue`; a get pops (yielding while it is empty), the
/// guard pushes back. No admission, no bookkeeping, no fairness: no pool can be cheaper.
pub struct QueueFloor {
    queue: ArrayQueue<Conn>,
}

impl QueueFloor {
    /// A queue holding `size` connections.
    pub fn new(size: usize) -> Self {
        let queue = ArrayQueue::new(size);
        for _ in 0..size {
            let _ = queue.push(Conn::default());
        }
        QueueFloor { queue }
    }

    /// The synchronous pop (the uncontended floor: pop + push, nothing else).
    #[inline]
    pub fn try_get(&self) -> Option<QueueGuard<'_>> {
        self.queue.pop().map(|conn| QueueGuard {
            queue: &self.queue,
            conn: Some(conn),
        })
    }
}

/// The floor's guard: pushes the connection back on drop.
pub struct QueueGuard<'a> {
    queue: &'a ArrayQueue<Conn>,
    conn: Option<Conn>,
}

impl Drop for QueueGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = self.queue.push(c);
        }
    }
}

impl AsyncPool for QueueFloor {
    type Guard<'a> = QueueGuard<'a>;
    async fn get(&self) -> Self::Guard<'_> {
        loop {
            if let Some(g) = self.try_get() {
                return g;
            }
            tokio::task::yield_now().await;
        }
    }
    fn touch(guard: &mut Self::Guard<'_>) {
        if let Some(c) = guard.conn.as_mut() {
            c.uses += 1;
        }
    }
}

/// Floor: a `tokio::sync::Semaphore` acquire + release (admission alone, no connection).
pub struct SemaphoreFloor {
    sem: tokio::sync::Semaphore,
}

impl SemaphoreFloor {
    /// `size` permits.
    pub fn new(size: usize) -> Self {
        SemaphoreFloor {
            sem: tokio::sync::Semaphore::new(size),
        }
    }
}

impl AsyncPool for SemaphoreFloor {
    type Guard<'a> = tokio::sync::SemaphorePermit<'a>;
    async fn get(&self) -> Self::Guard<'_> {
        match self.sem.acquire().await {
            Ok(p) => p,
            Err(e) => panic!("semaphore closed: {e}"),
        }
    }
    fn touch(guard: &mut Self::Guard<'_>) {
        std::hint::black_box(guard);
    }
}
