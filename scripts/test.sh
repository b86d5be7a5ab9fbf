#!/usr/bin/env bash
# connpool's test command (README, CI's .ci/run). Installs what is missing, then runs:
# fmt check, clippy -D warnings, every test and doc test with all features (real redis-server,
# ZooKeeper and etcd started by the tests on 127.0.0.1), docs with -D warnings, the loom models
# and their mutants, and a compile check of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { printf '\n==> %s (%ds)\n' "$*" "$((SECONDS - started))"; }

# --- what the tests need --------------------------------------------------------------------
step "checking tools"
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/*.proto), which etcd-client's protos import.
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]} — install them (apt-get install ${missing[*]}) or run as root" >&2
    echo "(the tests that need them will fail saying what to install)" >&2
  fi
fi
# Debian's redis-server package starts a system server on 6379; the tests start their own on
# random ports and do not need it, but leave it alone if it was there before.
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$c"
  fi
done

# Builds are most of this command's time (on a 2-core machine, a fresh all-features test build
# took 4m04s with full debuginfo and 3m21s with line tables only, in 1.6 GB of target/ instead
# of 3.9 GB). Line tables keep file:line in panics and backtraces; a fresh build gains nothing
# from incremental state. Either can be overridden from the environment.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# --- checks ---------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (workspace, all targets, all features)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (workspace, all features, doc tests included)"
cargo test --workspace --all-features --no-fail-fast

step "cargo test (default features only)"
cargo test -p connpool --tests

# The fault soak, short and in the debug build: every get's outcome counted once, no slot
# or waiter leaked, and fds, tasks and heap back at their baseline after 20 s of chaos. (By
# hand, longer: CONNPOOL_SOAK_SECS=180 cargo test --release --all-features --test soak.)
step "fault soak (20 s)"
CONNPOOL_SOAK_SECS=20 cargo test -p connpool --all-features --test soak -- --nocapture

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features -p connpool

if [ -x scripts/loom.sh ]; then
  # The models are `cfg(loom)`: the workspace clippy above never sees them.
  step "cargo clippy (loom models, --cfg loom)"
  scripts/loom.sh --clippy
  step "loom models"
  scripts/loom.sh
fi
if [ -x scripts/mutants.sh ]; then
  step "mutants: each model must catch its planted bug"
  scripts/mutants.sh
fi

step "benchmarks compile"
cargo build --workspace --benches

step "all checks passed"
