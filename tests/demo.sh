#!/bin/bash
# The main job, run inside the test VM by `make demo`: make a clip, decode it
# directly on vicodec with v4l2-ctl, then through vhost-user-video with the
# test frontend playing the guest, and show that both are byte-identical.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${VICODEC_DEC:?run me with tests/vm/vm.sh run (make demo)}"
W=${VUV_DEMO_WIDTH:-640} H=${VUV_DEMO_HEIGHT:-480} N=${VUV_DEMO_FRAMES:-60}
w=/tmp/demo
mkdir -p $w
echo "demo: ${W}x$H, $N frames; vicodec decoder $VICODEC_DEC (multiplanar=$VICODEC_MPLANE)"
build/tests/vuvideo-front gen $W $H $N $w/raw.yu12
v4l2-ctl -d "$VICODEC_ENC" --set-fmt-video-out=width=$W,height=$H,pixelformat=YU12 \
	--set-selection-output=target=crop,width=$W,height=$H \
	--stream-out-mmap=1 --stream-mmap --stream-from $w/raw.yu12 --stream-to $w/clip.fwht >$w/enc.log 2>&1
echo "demo: encoded $(stat -c %s $w/clip.fwht) bytes of FWHT with v4l2-ctl on $VICODEC_ENC"
# v4l2-ctl on a loaded machine can give up early (a fixed 2 s select
# timeout, a STOP race): a direct decode counts only when it is complete.
want=$((W * H * 3 / 2 * N))
for try in 1 2 3; do
	t0=$(date +%s%N)
	v4l2-ctl -d "$VICODEC_DEC" --stream-out-mmap --stream-mmap --stream-from $w/clip.fwht \
		--stream-to $w/direct.yuv >$w/dec.log 2>&1
	t1=$(date +%s%N)
	[ "$(stat -c %s $w/direct.yuv)" = $want ] && break
	echo "demo: the direct v4l2-ctl decode came out short ($(stat -c %s $w/direct.yuv) of $want bytes); again"
done
echo "demo: direct v4l2-ctl decode: $(awk "BEGIN{printf \"%.1f\", $N*1e9/($t1-$t0)}") frames/s"

./vhost-user-video --socket-path=$w/video.sock --v4l2-device="$VICODEC_DEC" 2>$w/daemon.log &
pid=$!
build/tests/vuvideo-front --socket $w/video.sock decode $w/clip.fwht $w/through.yuv
kill -TERM $pid
wait $pid
echo "demo: daemon log:"
sed 's/^/  | /' $w/daemon.log
if cmp $w/direct.yuv $w/through.yuv; then
	echo "demo: OK: the decode through vhost-user-video is byte-identical to the direct decode ($(stat -c %s $w/through.yuv) bytes)"
else
	echo "demo: FAILED: outputs differ"
	exit 1
fi
