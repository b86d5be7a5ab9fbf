//! Sets `cfg(connpool_mutant = "...")` from the `CONNPOOL_MUTANT` environment variable: a
//! deliberate bug for `scripts/mutants.sh` to show that a loom model catches it. Through a
//! build script (not RUSTFLAGS) so that switching mutants rebuilds only this crate.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CONNPOOL_MUTANT");
    if let Ok(m) = std::env::var("CONNPOOL_MUTANT") {
        let m = m.trim();
        if !m.is_empty() {
            println!("cargo:rustc-cfg=connpool_mutant=\"{m}\"");
            println!(
                "cargo:warning=connpool built with the deliberate bug `{m}` (CONNPOOL_MUTANT)"
            );
        }
    }
}
