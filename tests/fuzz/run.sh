#!/bin/bash
# tests/fuzz/run.sh SECONDS TARGET...: run each libFuzzer target (built by
# `make fuzz` in build/fuzz/) for SECONDS, starting from the committed corpus
# (tests/fuzz/corpus/TARGET, read-only here) plus a working corpus kept in
# build/fuzz/corpus-TARGET between runs, from a random seed: exploration.
#
# tests/fuzz/run.sh --runs TARGET:N...: run each target on exactly N inputs
# from the fixed seed FUZZ_SEED (default 1), starting from the committed
# corpus alone (a fresh working corpus): the same inputs on any machine at
# any load, so a pass or a failure does not depend on timing (make fuzz-ci,
# .ci/run).
#
# Prints the executions and coverage of each; a crash or a broken invariant
# leaves its input in build/fuzz/crash-TARGET/ and fails. Extra libFuzzer
# flags: FUZZ_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$1" = --runs ]; then
	shift
	mode=runs
else
	mode=time
	secs=$1
	shift
fi
failed=()
for arg in "$@"; do
	t=${arg%%:*}
	crash=build/fuzz/crash-$t
	log=build/fuzz/$t.log
	if [ $mode = runs ]; then
		n=${arg#*:}
		work=build/fuzz/ci-corpus-$t
		rm -rf "$work"
		budget=(-runs="$n" -seed="${FUZZ_SEED:-1}")
		echo "=== fuzz: $t on $n inputs, seed ${FUZZ_SEED:-1}"
	else
		work=build/fuzz/corpus-$t
		budget=(-max_total_time="$secs")
		echo "=== fuzz: $t for $secs s"
	fi
	mkdir -p "$work" "$crash"
	set +e
	# the daemon's own log lines go to stderr too: keep them in the log file
	start=$SECONDS
	build/fuzz/$t "${budget[@]}" -timeout=10 -print_final_stats=1 \
		-artifact_prefix="$crash/" ${FUZZ_FLAGS:-} "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1
	rc=$?
	set -e
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	cov=$(grep -aE '^#[0-9]+.*cov: ' "$log" | tail -n 1 | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+).*/\1 edges, \2 features/' || true)
	echo "fuzz: $t: ${execs:-?} executions (${rate:-?}/s, $((SECONDS - start)) s), coverage ${cov:-?}, corpus $(ls "$work" | wc -l) inputs"
	if [ "$rc" != 0 ]; then
		grep -a -m 5 -E 'invariant broken|ERROR: |SUMMARY: |runtime error' "$log" || true
		echo "fuzz: $t FAILED (exit $rc); inputs in $crash/, log $log"
		echo "fuzz: once fixed, add the input to tests/fuzz/corpus/$t/ (make check replays it)"
		failed+=("$t")
	fi
done
[ ${#failed[@]} = 0 ] || { echo "fuzz: failed: ${failed[*]}"; exit 1; }
