# Shared by tests/run.sh (host) and tests/vm-tests.sh (inside the VM).
# run_prog NAME CMD... runs one test program, shows its output, and adds its
# closing "N passed, M failed" line to the totals. A program that ends without
# that line, or exits non-zero with no failure counted, counts as one failure.
TOTAL_PASS=0
TOTAL_FAIL=0
FAILED_PROGS=()

run_prog() {
	local name=$1 log rc line p f
	shift
	# test programs keep their work under /tmp/vuv-*: start each clean (in
	# the VM, /tmp is a tmpfs of half the guest's memory)
	[ "${VUV_IN_VM:-0}" != 1 ] || rm -rf /tmp/vuv-e2e-*
	log=$(mktemp)
	echo "=== $name"
	set +e
	"$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	set -e
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
	rm -f "$log"
	if [ -n "$line" ]; then
		p=${line%% passed*}
		f=${line#*passed, }
		f=${f%% failed*}
	else
		p=0
		f=0
	fi
	if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
		echo "=== $name: exit status $rc"
		f=1
	fi
	TOTAL_PASS=$((TOTAL_PASS + p))
	TOTAL_FAIL=$((TOTAL_FAIL + f))
	[ "$f" = 0 ] || FAILED_PROGS+=("$name")
}

# check NAME CMD...: one pass/fail case from a shell command.
check() {
	local name=$1
	shift
	if "$@" >/dev/null 2>&1; then
		echo "PASS $name"
		TOTAL_PASS=$((TOTAL_PASS + 1))
	else
		echo "FAIL $name"
		TOTAL_FAIL=$((TOTAL_FAIL + 1))
		FAILED_PROGS+=("$name")
	fi
}
