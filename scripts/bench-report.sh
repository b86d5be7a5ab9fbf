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
    echo "Quote the ratios, not the absolute numbers: this is one run on a shared machine. Throughput"
    echo "is get → hold → drop cycles per second over all tasks; p50/p99 are of the time one \`get\`"
    echo "took, over every completed get of a second phase; worst wait is the longest single get."
    echo "A pool that lets newcomers barge past queued getters completes most gets at once and"
    echo "leaves a few tasks waiting very long: its p99 looks small while its worst wait and its"
    echo "least/most served task ratio (1.00 = perfectly even) show the starvation. The ArrayQueue"
    echo "floor has no admission at all (a getter that finds it empty yields and retries), so under"
    echo "contention it spins and starves; it is the floor for the uncontended cost only."
    echo "\`hangs\` = the pool stopped serving and was killed after the time limit (qp loses wake-ups"
    echo "once getters must wait)."
    echo
    cat "$tmp"
} >"$out"
echo "wrote $out" >&2
