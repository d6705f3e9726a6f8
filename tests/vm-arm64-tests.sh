#!/bin/sh
# The end-to-end tests in the aarch64 VM (tests/vm/vm-arm64.sh), with
# BusyBox's sh: the static aarch64 daemon on vicodec, e2e_dec and e2e_enc
# (aarch64 builds), v4l2-ctl (Debian's arm64) as the reference. Ends with the
# totals as "N passed, M failed".
#   VUV_ARM_SUITES="dec enc" (default) picks the suites; VUV_CASE=SUBSTRING
#   the cases (the test content is prepared in full either way);
#   VUV_ARM_SUBSET=640: only "decode 640x480..." and "encode 640x480..." (CI).
B=${VUV_ARM_B:-build/arm64}
: "${VICODEC_DEC:?not in the arm64 test VM (VICODEC_DEC unset)}"
echo "vm-arm64: vicodec multiplanar=$VICODEC_MPLANE decoder=$VICODEC_DEC encoder=$VICODEC_ENC"
echo "vm-arm64: $(uname -srm), $("$B/vhost-user-video" --version)"
export VUV_DAEMON="$PWD/$B/vhost-user-video"
pass=0 fail=0 failed=
for s in ${VUV_ARM_SUITES:-dec enc}; do
	echo "=== e2e $s (aarch64 daemon)"
	t0=$(cut -d' ' -f1 /proc/uptime)
	rm -rf /tmp/vuv-e2e-*
	if [ "${VUV_ARM_SUBSET:-}" = 640 ]; then
		export VUV_CASE="${s}ode 640x480"
	fi
	# (BusyBox sh has no PIPESTATUS: the status goes through a file)
	{ "$B/tests/e2e_$s"; echo $? >/tmp/suite.rc; } 2>&1 | tee /tmp/suite.log
	rc=$(cat /tmp/suite.rc)
	t1=$(cut -d' ' -f1 /proc/uptime)
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' /tmp/suite.log | tail -n 1)
	p=0 f=0
	if [ -n "$line" ]; then
		p=${line%% passed*}
		f=${line#*passed, }
		f=${f%% failed*}
	fi
	if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
		echo "=== e2e $s: exit status $rc"
		f=1
	fi
	echo "=== e2e $s: $p passed, $f failed in $(awk "BEGIN{printf \"%.0f\", $t1-$t0}") s"
	pass=$((pass + p))
	fail=$((fail + f))
	[ "$f" = 0 ] || failed="$failed e2e_$s"
done
[ -z "$failed" ] || echo "failed:$failed"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
