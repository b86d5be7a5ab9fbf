//! What connpool relies on in a dependency's implementation, beyond its documented API:
//! checked against the source of the version actually built, so that an upgrade that changes
//! it fails here, loudly, instead of quietly weakening the pool.
//!
//! The return path puts a connection back with `ArrayQueue::push` and then loads the pool's
//! `closed` flag, `max_size` and waiting word with `SeqCst` loads: a store-load handshake whose
//! store half is the push's compare-and-swap of the queue's tail, which crossbeam performs with
//! `Ordering::SeqCst` (see `src/engine.rs`, "Synchronization"). A weaker CAS there would need a
//! `SeqCst` fence on every return instead (measured in `benches/PERF-LOG.md`).

use std::path::{Path, PathBuf};

/// The source directory of the `crossbeam-queue` this workspace builds: its version from
/// `Cargo.lock`, its sources where cargo unpacked them (`$CARGO_HOME/registry/src/*/`).
fn crossbeam_queue_src() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).expect("Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"crossbeam-queue\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("crossbeam-queue in Cargo.lock");
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registries = std::fs::read_dir(home.join("registry").join("src"))
        .expect("cargo's unpacked registry sources");
    registries
        .filter_map(Result::ok)
        .map(|r| {
            r.path()
                .join(format!("crossbeam-queue-{version}"))
                .join("src")
        })
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "crossbeam-queue {version}'s sources under {}",
                home.display()
            )
        })
}

#[test]
fn array_queue_push_swaps_the_tail_with_a_seqcst_cas() {
    let path = crossbeam_queue_src().join("array_queue.rs");
    let src = std::fs::read_to_string(&path).expect("crossbeam-queue's array_queue.rs");
    // The successful CAS of the tail in `push_or_else`: `compare_exchange_weak(` on the tail,
    // whose first ordering (success) is SeqCst.
    let at = src
        .find("self.tail.compare_exchange_weak(")
        .unwrap_or_else(|| panic!("no tail CAS in {}: re-check src/engine.rs", path.display()));
    let call: String = src[at..].chars().take(200).collect();
    let success = call.split(',').nth(2).map(str::trim).unwrap_or_default();
    assert_eq!(
        success,
        "Ordering::SeqCst",
        "crossbeam-queue's ArrayQueue::push no longer swaps its tail with a SeqCst CAS \
         ({}): the return path's handshakes in src/engine.rs need a SeqCst fence after the \
         push instead",
        path.display()
    );
}
