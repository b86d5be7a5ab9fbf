#!/usr/bin/env bash
# Runs the contention benchmarks and writes BENCHMARKS.md (see benches/src/bin/bench-report.rs).
#
#   scripts/bench-report.sh [bench-report options...]
#     e.g. scripts/bench-report.sh --phase-ms 2000 --rounds 3
#          scripts/bench-report.sh --scenario over_capacity --pool connpool --pool bb8
#
# Every (pool, scenario) runs in its own child process under a time limit (--limit-s, default
# 30): a pool that stops serving is killed and reported as hanging. Quote the ratios, not the
# absolute numbers: shared machines are noisy. Never run by CI (CI only compiles the benches).
# Env: OUT (default BENCHMARKS.md), CARGO_TARGET_DIR (default target), NICE (default 0).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-BENCHMARKS.md}"
target="${CARGO_TARGET_DIR:-target}"
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
    args=(--phase-ms 1000 --rounds 1)
fi

cargo build --release -p connpool-benches --bin bench-report
bin="$target/release/bench-report"

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
nice -n "${NICE:-0}" "$bin" "${args[@]}" >"$tmp"

cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
{
    echo "# Contention benchmarks"
    echo
    echo "connpool against bb8, deadpool (managed), qp, mobc and r2d2, with the same no-I/O manager"
    echo "(a dummy connection, checks that always pass; no check on borrow, no idle timeout, no"
    echo "lifetime; every pool warmed so every get is a hit), plus two floors no pool can beat: a bare"
    echo "\`crossbeam_queue::ArrayQueue\` pop + push and a \`tokio::sync::Semaphore\` acquire + release."
    echo
    echo "- Machine: $(nproc) CPUs, ${cpu:-unknown CPU}; $(rustc -V)"
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Command: \`scripts/bench-report.sh ${args[*]}\`"
    echo
    echo "Rows: \`connpool\` is \`Pool::get\` (an owned \`Pooled\`, like deadpool's and mobc's guards);"
    echo "\`connpool-ref\` is \`Pool::get_ref\` (a \`PooledRef\` borrowing the pool handle, like bb8's"
    echo "and qp's guards). Every pool that can bound a wait is given a wait limit far beyond the run"
    echo "(so it pays for a timer while it waits, as it would in service); \`deadpool\` is configured"
    echo "so, \`deadpool-untimed\` is deadpool as it comes (no wait limit, no timer); qp has none."
    echo
    echo "Quote the ratios, not the absolute numbers: this is one run on a shared machine. In each"
    echo "round every pool runs once, back to back, so a slow or fast spell of the machine that lasts"
    echo "a round falls on all of them alike. Every throughput ratio to connpool (the summary, \`vs connpool\`,"
    echo "the best-peer lines) is the median of the ratios measured round by round, and the"
    echo "best-peer lines give their range and in how many rounds connpool was ahead; the absolute"
    echo "figures are each pool's median round. Throughput is get → hold → drop cycles per second over all tasks;"
    echo "p50/p99 are of the time one \`get\` took, over every completed get of a second phase; worst"
    echo "wait is the longest single get. A pool that lets newcomers barge past queued getters"
    echo "completes most gets at once and leaves a few tasks waiting very long: its p99 looks small"
    echo "while its worst wait and its served-task spread show the starvation. The spread column is"
    echo "least / median / most cycles served per task (1.00 = perfectly even) and how many tasks were"
    echo "served more than 1.5× the median: one task far above the rest, with everyone else even,"
    echo "is the scheduler favouring one task (it shows for the tokio semaphore floor too), not the"
    echo "pool barging. The ArrayQueue floor has no admission at all (a getter that finds it empty"
    echo "yields and retries), so under contention it spins and starves; it is the floor for the"
    echo "uncontended and under-capacity costs only. \`hangs\` = the pool stopped serving and was"
    echo "killed after the time limit (qp loses wake-ups once getters must wait)."
    echo
    cat "$tmp"
} >"$out"
echo "wrote $out" >&2
