//! How the pool chooses the backend for a new connection.

/// The backend chosen for each new connection.
///
/// Only *new* connections are balanced: an idle connection is reused whatever its backend,
/// because reuse is what a pool is for. Both modes honour each backend's
/// [weight](crate::Backend::with_weight), and dial a standby (weight 0) only when no backend
/// of non-zero weight can be dialed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// The next backend in turn, starting at a random offset per pool (as Codis' Jodis does),
    /// so that many processes started together do not all dial the first backend first.
    /// With weights, each backend is first choice for its weight's share of every run of
    /// dials as long as the weights' sum. The default: even spread, no shared state but one
    /// counter.
    #[default]
    RoundRobin,
    /// The backend with the fewest open connections from this pool per unit of weight (ties
    /// go round-robin).
    LeastConnections,
}
