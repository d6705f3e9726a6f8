#!/bin/bash
# Runs every test of `make check`: command-line checks and unit tests on the
# host (static, ASan+UBSan, valgrind), then the end-to-end tests on the real
# vicodec in the test VM, single- and multi-planar. Ends with the totals as
# "N passed, M failed". VUV_NO_VM=1 skips the VM part.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh

B=build
D=./vhost-user-video
start=$(date +%s)

echo "=== command line"
check "daemon is statically linked" sh -c \
	"readelf -lW $D >$B/phdrs && ! grep -q 'Requesting program interpreter' $B/phdrs"
check "--help exits 0" $D --help
check "--version prints the version" sh -c "$D --version | grep -q '^vhost-user-video [0-9]'"
check "--print-capabilities prints JSON, exit 0" sh -c "$D --print-capabilities | grep -q '\"type\": \"video\"'"
check "an unknown flag exits 2" sh -c "$D --bogus 2>/dev/null; [ \$? = 2 ]"
check "no socket given exits 2" sh -c "$D --v4l2-device=/dev/null 2>/dev/null; [ \$? = 2 ]"
check "a missing device exits 1 with an error line" sh -c \
	"out=\$($D --socket-path=/tmp/vuv-none.sock --v4l2-device=/nonexistent 2>&1); [ \$? = 1 ] && echo \"\$out\" | grep -q 'error: cannot open /nonexistent'"
check "a non-V4L2 device is refused" sh -c "! $D --socket-path=/tmp/vuv-none.sock --v4l2-device=/dev/null 2>/dev/null"
check "--fd refuses a non-number" sh -c "$D --fd=abc 2>/dev/null; [ \$? = 2 ]"
check "--v4l2-ctrl refuses a malformed ID=VALUE" sh -c "$D --v4l2-ctrl=gop 2>/dev/null; [ \$? = 2 ]"

echo "=== Kconfig-trimmed builds"
declare -A marker=([decoder]="source change" [encoder]="smaller than a frame")
for cfg in dec:decoder:encoder enc:encoder:decoder; do
	IFS=: read -r dir role other <<<"$cfg"
	bin=$B/$dir/vhost-user-video
	check "$role-only build is static" sh -c \
		"readelf -lW $bin >$B/phdrs && ! grep -q 'Requesting program interpreter' $B/phdrs"
	check "$role-only build reports only the $role" sh -c \
		"$bin --print-capabilities | grep -q '\"$role\"' && ! $bin --print-capabilities | grep -q '\"$other\"'"
	# a log message only the other role's code has; the full build has both
	check "$role-only build has no ${other} code" sh -c \
		"strings $D | grep -q '${marker[$other]}' && ! strings $bin | grep -q '${marker[$other]}'"
done
for bin in $D $B/dec/vhost-user-video $B/enc/vhost-user-video; do
	strip -o "$B/stripped" "$bin"
	echo "stripped size of $bin: $(stat -c %s "$B/stripped") bytes"
done
rm -f "$B/stripped"

# The aarch64 cross build: in CI (or with VUV_CROSS=1); it installs a cross
# toolchain and adds the arm64 dpkg architecture, so not by default.
if [ "${CI:-}" = true ] || [ "${VUV_CROSS:-0}" = 1 ]; then
	run_prog "aarch64 cross build" tests/cross.sh
fi

run_prog "unit: vhost-user engine" $B/tests/test_vu
run_prog "unit: vhost-user engine (ASan+UBSan)" $B/asan/tests/test_vu
run_prog "unit: vhost-user engine (valgrind)" \
	valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite $B/tests/test_vu

# The device model on the fake codec: the plain daemon, the ASan+UBSan
# daemon, and the plain daemon under valgrind.
run_prog "unit: device model on the fake codec" $B/tests/test_vv
run_prog "unit: device model (ASan+UBSan)" \
	env VUV_FAKE_DAEMON=$B/asan/tests/vhost-user-video-fake \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=66 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=67 $B/asan/tests/test_vv
run_prog "unit: device model (valgrind)" \
	env VUV_DAEMON_WRAPPER="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite" \
	$B/tests/test_vv

if [ "${VUV_NO_VM:-0}" != 1 ]; then
	run_prog "vm: vicodec single-planar" tests/vm/vm.sh run --mem 2048 -- tests/vm-tests.sh
	run_prog "vm: vicodec multi-planar" tests/vm/vm.sh run --mem 2048 --multiplanar -- tests/vm-tests.sh
fi

echo
echo "make check: $(( $(date +%s) - start )) s"
[ ${#FAILED_PROGS[@]} = 0 ] || echo "failed: ${FAILED_PROGS[*]}"
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" = 0 ]
