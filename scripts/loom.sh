#!/usr/bin/env bash
# Runs the loom models (loom-tests/tests/models.rs) against the real engine.
#
#   scripts/loom.sh                     # every model, LOOM_MAX_PREEMPTIONS=2 (CI)
#   scripts/loom.sh close_wakes         # only models whose name contains the filter
#   LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh
#   LOOM_MAX_PREEMPTIONS= scripts/loom.sh   # unbounded: every interleaving (slow)
#   scripts/loom.sh --clippy            # clippy on the models, as loom builds them
#
# RUSTFLAGS="--cfg loom" switches connpool's sync.rs (and event-listener) to loom; it is set
# only here, with its own target dir (LOOM_TARGET_DIR, default target/loom), so the normal
# build is not invalidated. connpool is built without the redis/zookeeper/etcd features
# (tokio has no `net` under --cfg loom). CONNPOOL_MUTANT, if set, plants a deliberate bug
# (see scripts/mutants.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-$PWD/target/loom}"
# Unset or empty = unbounded (loom's own default); CI bounds it.
if [ -z "${LOOM_MAX_PREEMPTIONS+x}" ]; then
  export LOOM_MAX_PREEMPTIONS=2
elif [ -z "$LOOM_MAX_PREEMPTIONS" ]; then
  unset LOOM_MAX_PREEMPTIONS
fi
# On a failure, loom prints the interleaving that broke the model.
export LOOM_LOCATION=1
if [ "${1-}" = --clippy ]; then
  # The models are `cfg(loom)`: a normal clippy run never compiles them.
  exec cargo clippy --profile loom -p loom-tests --no-deps --tests -- -D warnings
fi
echo "loom: LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-unbounded} CONNPOOL_MUTANT=${CONNPOOL_MUTANT:-none} target=$CARGO_TARGET_DIR" >&2

cargo test --profile loom -p loom-tests --test models -- --test-threads="${LOOM_TEST_THREADS:-2}" "$@"
