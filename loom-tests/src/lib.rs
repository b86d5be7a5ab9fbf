//! Loom models of connpool (see issue: verification).
