#!/bin/bash
# DMABUF from guest memory on the real vicodec: run inside the sid test VM
# (VUV_VM_KERNEL=sid tests/vm/vm.sh, whose kernel has /dev/udmabuf), against
# the CONFIG_VUV_DMABUF build (build/dma). The test frontend seals its memfds
# as QEMU memory-backend-memfd does. make check-dmabuf runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/lib.sh
. tests/lib.sh

: "${VICODEC_DEC:?not in the test VM (VICODEC_DEC unset)}"
if [ ! -c /dev/udmabuf ]; then
	echo "FAIL no /dev/udmabuf in this kernel ($(uname -r))"
	echo "0 passed, 1 failed"
	exit 1
fi
echo "vm: $(uname -r), vicodec multiplanar=${VICODEC_MPLANE:-?}, /dev/udmabuf"

# vu.c against the real udmabuf: the dmabuf shows the guest pages, both ways
run_prog "unit: udmabuf over a sealed memfd (real /dev/udmabuf)" env VUV_CASE=dmabuf build/dma/tests/test_vu

# The device model on the fake codec (tests/fake_m2m.c, CONFIG_VUV_DMABUF)
# with real udmabufs: a dmabuf per V4L2 memory plane (NV12M, YUV420M: the
# MediaTek encoder's formats, which vicodec has not), byte-exact
# (the fake's fd is a TCP connection to itself: the VM's loopback must be up)
busybox ip link set lo up || echo "vm-dmabuf: cannot bring up lo (the fake codec cases will fail)"
run_prog "fake codec: a dmabuf per memory plane (real /dev/udmabuf)" \
	env VUV_TEST_DMABUF=1 VUV_FAKE_DAEMON="$PWD/build/dma/tests/vhost-user-video-fake" \
	VUV_FRONT_SEAL=1 VUV_CASE='memory forced dmabuf:|colour planes inside' build/tests/test_vv

export VUV_DAEMON=$PWD/build/dma/vhost-user-video VUV_FRONT_SEAL=1 VUV_MEMORY=dmabuf

# It really was DMABUF: the daemon's -v log names the path of each queue.
dmabuf_used() {
	local w
	w=$(sed -n 's/^test content ready in //p' "$1")
	[ -f "$w/daemon.log" ] && grep -q "input memory: dmabuf" "$w/daemon.log" &&
		grep -q "output memory: dmabuf" "$w/daemon.log" || return 1
	echo "  queues on DMABUF: input $(grep -c 'input memory: dmabuf' "$w/daemon.log")," \
		"output $(grep -c 'output memory: dmabuf' "$w/daemon.log");" \
		"on another path: $(grep 'memory: ' "$w/daemon.log" | grep -vc 'memory: dmabuf')"
}

# Bounce memory: a stream with both queues on DMABUF that queued some
# buffers zero-copy and copied others (the decoder's "mixed" case: every
# other resource starts inside a page, which no dmabuf can show). The log
# is read in order: a stream's memory lines, then its counts at destroy.
dmabuf_bounced() {
	local w
	w=$(sed -n 's/^test content ready in //p' "$1")
	[ -f "$w/daemon.log" ] || return 1
	awk '
	/stream [0-9]+: (input|output) memory: / {
		s = $0; sub(/.*stream /, "", s); sub(/:.*/, "", s)
		q = $0; sub(/ memory: .*/, "", q); sub(/.* /, "", q)
		dma[s, q] = $0 ~ / memory: dmabuf/
	}
	/stream [0-9]+: [0-9]+ buffers zero-copy, [0-9]+ copied/ {
		s = $0; sub(/.*stream /, "", s); sub(/:.*/, "", s)
		z = $0; sub(/.*: /, "", z); split(z, f, " ")
		if (dma[s, "input"] && dma[s, "output"] && f[1] > 0 && f[4] > 0) { n++; print "  stream " s ": both queues on DMABUF, " f[1] " buffers zero-copy, " f[4] " copied through bounce memory" }
		dma[s, "input"] = dma[s, "output"] = 0
	}
	END { exit n ? 0 : 1 }' "$w/daemon.log"
}

# The decoder and encoder suites, byte-exact with v4l2-ctl, with the queues
# on DMABUF (a resource that cannot be a dmabuf is copied through the V4L2
# buffer's bounce memory; a queue none of whose resources can be one takes
# USERPTR). The daemon's log is read before the next suite (run_prog
# clears /tmp/vuv-e2e-* in the VM).
for role in dec enc; do
	out=/tmp/vuv-dmabuf-$role.out
	run_prog "e2e ${role}oder, --memory=dmabuf" sh -c "build/tests/e2e_$role | tee $out"
	check "the ${role}oder's queues took the DMABUF path" dmabuf_used $out
	dmabuf_used $out || true
	[ $role = dec ] || continue
	check "the decoder copied through DMABUF bounce memory and went zero-copy in one stream" \
		dmabuf_bounced $out
	if ! dmabuf_bounced $out; then
		echo "  the daemon's memory lines and counts (decoder suite):"
		w=$(sed -n 's/^test content ready in //p' $out)
		grep -E 'memory: |zero-copy|no dmabuf' "$w/daemon.log" | sed 's/^/  | /' | tail -n 60 || true
	fi
done

echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" = 0 ]
