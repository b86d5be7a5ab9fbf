//! Loom models of connpool's concurrent paths: see `tests/models.rs`, `scripts/loom.sh` (run
//! them) and `scripts/mutants.sh` (show that each model catches its deliberate bug).
//!
//! The models need `RUSTFLAGS="--cfg loom"`; without it this crate is empty.
