#!/bin/bash
# The end-to-end tests, run inside the test VM (tests/vm/vm.sh) where the real
# vicodec is loaded: VICODEC_DEC/VICODEC_ENC name its nodes. Each program is
# run against the static daemon and against the ASan+UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh

B=build
: "${VICODEC_DEC:?not in the test VM (VICODEC_DEC unset)}"
echo "vm: vicodec multiplanar=${VICODEC_MPLANE:-?} decoder=$VICODEC_DEC encoder=${VICODEC_ENC:-}"

zc_log=/tmp/vuv-e2e-dec/daemon.log
for variant in static asan; do
	if [ $variant = static ]; then
		daemon=$PWD/vhost-user-video
	else
		daemon=$PWD/$B/asan/vhost-user-video
	fi
	export VUV_DAEMON=$daemon
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=66
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=67
	run_prog "e2e core ($variant daemon)" $B/tests/e2e_core
	run_prog "e2e service conventions ($variant daemon)" $B/tests/e2e_svc
	run_prog "e2e decoder ($variant daemon)" $B/tests/e2e_dec
	if [ $variant = static ] && [ -z "${VUV_MEMORY:-}" ]; then
		check "e2e decoder: auto memory was USERPTR on vicodec, both queues, zero-copy" sh -c \
			"grep -q 'input memory: userptr (the driver offers USERPTR)' $zc_log &&
			 grep -q 'output memory: userptr (the driver offers USERPTR)' $zc_log &&
			 grep -q ' buffers zero-copy, 0 copied' $zc_log"
	fi
	if [ -x $B/tests/e2e_enc ]; then
		run_prog "e2e encoder ($variant daemon)" $B/tests/e2e_enc
	fi
done

# The memory paths (README, Memory paths): the runs above are --memory=auto,
# USERPTR on vicodec (checked there); now the copy path, forced, on a
# representative subset of the decoder and encoder cases (the static daemon
# only; the whole suites take minutes more per vicodec mode).
export VUV_MEMORY=mmap
VUV_CASE="decode 640x480|decode 1920x1080|scattered|resolution change: two|drain right after the 12th" \
	VUV_DAEMON=$PWD/vhost-user-video run_prog "e2e decoder subset (static daemon, --memory=mmap)" $B/tests/e2e_dec
check "--memory=mmap copied everything" sh -c \
	"grep -q 'output memory: mmap + copy (--memory=mmap)' $zc_log && ! grep -q 'memory: userptr' $zc_log"
if [ -x $B/tests/e2e_enc ]; then
	VUV_CASE="encode 640x480|encode 1920x1080|scattered|drain right after the 12th" \
		VUV_DAEMON=$PWD/vhost-user-video run_prog "e2e encoder subset (static daemon, --memory=mmap)" $B/tests/e2e_enc
fi
unset VUV_MEMORY

# The Kconfig-trimmed builds: each serves its role, and refuses the other
# role's node at start-up with a clear message.
VUV_DAEMON=$PWD/$B/dec/vhost-user-video run_prog "e2e decoder (decoder-only build)" $B/tests/e2e_dec
if [ -x $B/tests/e2e_enc ]; then
	VUV_DAEMON=$PWD/$B/enc/vhost-user-video run_prog "e2e encoder (encoder-only build)" $B/tests/e2e_enc
fi
refuses() {
	local out
	out=$("$1" --socket-path=/tmp/vuv-role.sock --v4l2-device="$2" 2>&1) && return 1
	echo "$out" | grep -q "this build has no $3 support"
}
check "--print-capabilities reports the decoder node as virtio-id 31" sh -c \
	"./vhost-user-video --print-capabilities --v4l2-device=$VICODEC_DEC | tr -d ' \n' | grep -q '\"role\":\"decoder\",\"virtio-id\":31'"
check "--print-capabilities reports the encoder node as virtio-id 30" sh -c \
	"./vhost-user-video --print-capabilities --v4l2-device=$VICODEC_ENC | tr -d ' \n' | grep -q '\"role\":\"encoder\",\"virtio-id\":30'"
check "decoder-only build refuses the encoder node" refuses $B/dec/vhost-user-video "${VICODEC_ENC}" encoder
check "encoder-only build refuses the decoder node" refuses $B/enc/vhost-user-video "${VICODEC_DEC}" decoder

# Idle RSS of the static daemon, after serving one frontend (caps).
idle_rss() {
	local sock=/tmp/vuv-rss.sock pid rss
	./vhost-user-video --socket-path=$sock --v4l2-device="$VICODEC_DEC" 2>/dev/null &
	pid=$!
	build/tests/vuvideo-front --socket $sock caps >/dev/null || { kill $pid; return 1; }
	rss=$(awk '$1 == "VmRSS:" {print $2}' /proc/$pid/status)
	kill -TERM $pid
	wait $pid || return 1
	echo "idle RSS of the static daemon after one frontend: $rss KiB" >&2
	[ "$rss" -lt 512 ]
}
check "idle RSS < 512 KiB" idle_rss
idle_rss 2>&1 | sed -n 's/^idle RSS/vm: idle RSS/p'

# The SysV init script with BusyBox start-stop-daemon: once, single-planar.
if [ "${VICODEC_MPLANE:-0}" = 0 ]; then
	run_prog "SysV init script (BusyBox start-stop-daemon)" tests/vm-sysv.sh
fi

echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" = 0 ]
