#!/bin/bash
# DMABUF from guest memory on the real vicodec: run inside the sid test VM
# (VUV_VM_KERNEL=sid tests/vm/vm.sh, whose kernel has /dev/udmabuf), against
# the CONFIG_VUV_DMABUF build (build/dma). The test frontend seals its memfds
# as QEMU memory-backend-memfd does. make check-dmabuf runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh

: "${VICODEC_DEC:?not in the test VM (VICODEC_DEC unset)}"
[ -c /dev/udmabuf ] || { echo "FAIL no /dev/udmabuf in this kernel ($(uname -r))"; echo "0 passed, 1 failed"; exit 1; }
echo "vm: $(uname -r), vicodec multiplanar=${VICODEC_MPLANE:-?}, /dev/udmabuf"

# vu.c against the real udmabuf: the dmabuf shows the guest pages, both ways
run_prog "unit: udmabuf over a sealed memfd (real /dev/udmabuf)" env VUV_CASE=dmabuf build/dma/tests/test_vu

export VUV_DAEMON=$PWD/build/dma/vhost-user-video VUV_FRONT_SEAL=1 VUV_MEMORY=dmabuf
log=/tmp/vuv-dmabuf-dec.out
# the decoder suite, byte-exact with v4l2-ctl, with both queues on DMABUF
run_prog "e2e decoder, --memory=dmabuf" sh -c "build/tests/e2e_dec | tee $log"
# and it really was DMABUF: the daemon's -v log names the path per queue
dmabuf_used() {
	local w
	w=$(sed -n 's/^test content ready in //p' $log)
	grep -c "input memory: dmabuf" "$w/daemon.log" >/dev/null &&
		grep -c "output memory: dmabuf" "$w/daemon.log" >/dev/null || return 1
	echo "  streams on DMABUF: input $(grep -c 'input memory: dmabuf' "$w/daemon.log")," \
		"output $(grep -c 'output memory: dmabuf' "$w/daemon.log");" \
		"other paths: $(grep 'memory: ' "$w/daemon.log" | grep -vc 'memory: dmabuf')"
}
check "the decoder's queues took the DMABUF path" dmabuf_used
dmabuf_used || true

echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" = 0 ]
