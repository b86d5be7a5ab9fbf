//! What the profiling aids (`hit-loop`, `wait-loop`) share: their command line, `POOL N
//! [NUMBER...]`, and their runtime.

use crate::pools::Kind;

/// The command line of a profiling aid.
pub struct Args(Vec<String>);

impl Args {
    /// This process's arguments.
    pub fn from_env() -> Args {
        Args(std::env::args().collect())
    }

    /// The pool named first (connpool if none, or an unknown name).
    pub fn kind(&self) -> Kind {
        self.0
            .get(1)
            .and_then(|s| Kind::from_name(s))
            .unwrap_or(Kind::Connpool)
    }

    /// The number at position `i` (1 is the pool's name), `default` if absent or not a number.
    pub fn number(&self, i: usize, default: u64) -> u64 {
        self.0
            .get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }
}

/// The current-thread runtime the aids run on (one thread: the same instructions every run).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}
