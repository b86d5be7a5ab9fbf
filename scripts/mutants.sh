#!/usr/bin/env bash
# Shows that each loom model can fail: for every deliberate bug kept in the code behind
# cfg(connpool_mutant = "..."), builds connpool with CONNPOOL_MUTANT set (build.rs turns it
# into the cfg, so only connpool and loom-tests rebuild) and runs the model meant to catch it,
# in its own process (a deadlock aborts the process). The model must FAIL. The script fails
# if any mutant survives, and prints the model <-> mutant table.
#
#   scripts/mutants.sh                  # all of them (CI)
#   scripts/mutants.sh recheck          # only mutants whose name contains the filter
#
# Same environment as scripts/loom.sh (LOOM_MAX_PREEMPTIONS defaults to 2, LOOM_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

# mutant                model that must catch it          the bug
table=(
  "reserve_not_cas      two_getters_one_unit              try_reserve checks then stores instead of a CAS"
  "no_recheck           two_getters_one_unit              a waiter does not re-check for a unit after queueing"
  "no_recheck           return_wakes_parked_waiter        a waiter does not re-check for a unit after queueing"
  "no_recheck           two_returns_wake_two_waiters      a waiter does not re-check for a unit after queueing"
  "no_epoch_recheck     two_getters_one_unit              a return ignores a waiter that registered while it worked"
  "no_epoch_recheck     two_returns_wake_two_waiters      a return ignores a waiter that registered while it worked"
  "cancel_drops_handoff cancelled_waiter_passes_hand_off  a cancelled waiter drops a unit handed to it"
  "hand_off_no_cas      cancelled_waiter_passes_hand_off  a return hands its unit to a slot without the CAS"
  "expire_early         early_walk_expires_nobody         the duty's walk expires waiters whatever their deadline"
  "duty_not_passed      timer_duty_passes_on              a leaving duty holder wakes nobody to take the duty"
  "unshared_takes_duty  duty_passes_over_unshared_waiter  a waiter without a shared deadline takes the timer duty"
  "nudge_unshared       duty_passes_over_unshared_waiter  a leaving holder wakes the back waiter, shared deadline or not"
  "close_no_wake        close_wakes_waiters               close does not wake the waiters"
  "close_no_recheck     close_races_get_and_return        a return does not re-check closed after its put"
  "resize_no_adjust     resize_down_races_get_return      a shrink does not close idle connections above the size"
  "shrink_no_recheck    resize_down_races_get_return      a return does not re-check max_size after its put"
  "resize_no_wake       resize_up_wakes_waiter            growing hands the new slots to nobody"
  "shed_not_cas         shrink_sheds_one_unit_per_excess  a closer above max_size checks, then gives its unit up on its own (no CAS, no re-check)"
  "shed_no_recheck      shed_races_resize_up              a closer above max_size does not look for waiters after giving its unit up"
  "shrunk_return_not_cas two_returns_into_a_shrunk_pool_close_one a return above max_size checks, then closes on its own"
  "no_mark_removed      set_backends_races_get_return     set_backends does not flag removed backends"
  "get_ignores_removed  set_backends_races_get_return     the get path does not check the removed flag"
  "pick_no_retry        pick_races_successful_probe       a pick whose claim lost to a successful probe reports no backend"
  "success_keeps_backoff pick_races_successful_probe       a success leaves a stale probe's backoff in place"
  "unit_guard_leaks     connect_failure_releases_slot     the unit guard does not give its slot back (failed connect)"
  "opening_leaks_size   connect_failure_releases_slot     a failed connect leaves the backend's size raised"
)

filter="${1:-}"
# The loom settings (RUSTFLAGS, target dir, preemption bound) are scripts/loom.sh's; this
# script only reads them for its log dir and summary.
preemptions="${LOOM_MAX_PREEMPTIONS-2}"
per_mutant_timeout="${MUTANT_TIMEOUT:-300}"
log_dir="${LOOM_TARGET_DIR:-$PWD/target/loom}/mutants"
mkdir -p "$log_dir"

results=()
survivors=0
for row in "${table[@]}"; do
  read -r mutant model bug <<<"$row"
  if [ -n "$filter" ] && [[ "$mutant" != *"$filter"* ]]; then
    continue
  fi
  log="$log_dir/$mutant.$model.log"
  started=$SECONDS
  set +e
  CONNPOOL_MUTANT="$mutant" timeout "$per_mutant_timeout" \
    scripts/loom.sh --exact "$model" >"$log" 2>&1
  rc=$?
  set -e
  took=$((SECONDS - started))
  if grep -q 'could not compile\|error\[E' "$log"; then
    outcome="BUILD FAILED (see $log)"
    survivors=$((survivors + 1))
  elif [ "$rc" = 0 ]; then
    outcome="SURVIVED"
    survivors=$((survivors + 1))
  elif [ "$rc" = 124 ]; then
    outcome="SURVIVED? (timed out after ${per_mutant_timeout}s)"
    survivors=$((survivors + 1))
  elif grep -q 'deadlock;' "$log"; then
    outcome="caught: deadlock"
  else
    msg=$(grep -A1 "panicked at" "$log" | grep -v 'panicked at\|^--$\|^stack backtrace' | head -1 | cut -c1-90)
    outcome="caught: ${msg:-failed (rc $rc)}"
  fi
  results+=("$(printf '%-21s %-34s %4ss  %s' "$mutant" "$model" "$took" "$outcome")")
  printf '%-21s %-34s %4ss  %s\n' "$mutant" "$model" "$took" "$outcome" >&2
done

# Leave the loom build unmutated for scripts/loom.sh.
echo
echo "model <-> mutant (LOOM_MAX_PREEMPTIONS=${preemptions:-unbounded}; logs in $log_dir)"
printf '%-21s %-34s %5s  %s\n' "mutant" "model" "time" "outcome"
printf '%s\n' "${results[@]}"
if [ "$survivors" -gt 0 ]; then
  echo "FAIL: $survivors mutant(s) survived" >&2
  exit 1
fi
echo "all ${#results[@]} (mutant, model) pairs caught"
