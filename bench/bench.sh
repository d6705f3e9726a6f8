#!/bin/bash
# Decoder and encoder benchmark, run inside the test VM by `make bench`:
# throughput through vhost-user-video vs v4l2-ctl directly on vicodec, in the same run,
# as a ratio; the daemon's CPU time per frame and peak RSS; the stripped
# binary size. A benchmark, not a test: it asserts nothing about speed.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${VICODEC_DEC:?run me with tests/vm/vm.sh run (make bench)}"
w=/tmp/bench
mkdir -p $w
hz=$(getconf CLK_TCK)
rounds=${VUV_BENCH_ROUNDS:-3}

cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }

bench_size() {
	local W=$1 H=$2 N=$3 best_d=0 best_t=0 d t
	build/tests/vuvideo-front gen $W $H $N $w/raw.yu12
	v4l2-ctl -d "$VICODEC_ENC" --set-fmt-video-out=width=$W,height=$H,pixelformat=YU12 \
		--set-selection-output=target=crop,width=$W,height=$H \
		--stream-out-mmap --stream-mmap --stream-from $w/raw.yu12 --stream-to $w/clip.fwht >/dev/null 2>&1
	rm -f $w/raw.yu12
	./vhost-user-video --socket-path=$w/b.sock --v4l2-device="$VICODEC_DEC" 2>$w/daemon.log &
	local pid=$! c0 c1
	c0=$(cpu_ticks $pid)
	for ((r = 0; r < rounds; r++)); do
		local t0 t1
		t0=$(date +%s%N)
		v4l2-ctl -d "$VICODEC_DEC" --stream-out-mmap --stream-mmap --stream-from $w/clip.fwht \
			--stream-to $w/direct.yuv >/dev/null 2>&1
		t1=$(date +%s%N)
		d=$(awk "BEGIN{printf \"%.2f\", $N*1e9/($t1-$t0)}")
		t=$(build/tests/vuvideo-front --socket $w/b.sock decode --quiet $w/clip.fwht $w/through.yuv |
			awk '/frames\/s/{print $(NF-1)}')
		cmp -s $w/direct.yuv $w/through.yuv || { echo "bench: outputs differ at ${W}x$H" >&2; exit 1; }
		awk "BEGIN{exit !($d > $best_d)}" && best_d=$d
		awk "BEGIN{exit !($t > $best_t)}" && best_t=$t
	done
	c1=$(cpu_ticks $pid)
	local hwm
	hwm=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
	kill -TERM $pid
	wait $pid
	printf "%-10s %6d %14s %16s %8s %14s %12s\n" "${W}x$H" $N "$best_d" "$best_t" \
		"$(awk "BEGIN{printf \"%.2f\", $best_t/$best_d}")" \
		"$(awk "BEGIN{printf \"%.2f\", ($c1-$c0)*1000/$hz/($N*$rounds)}")" "$hwm"
	rm -f $w/clip.fwht $w/direct.yuv $w/through.yuv
}

bench_encode() {
	local W=$1 H=$2 N=$3 best_d=0 best_t=0 d t
	build/tests/vuvideo-front gen $W $H $N $w/raw.yu12
	./vhost-user-video --socket-path=$w/e.sock --v4l2-device="$VICODEC_ENC" 2>$w/daemon-enc.log &
	local pid=$! c0 c1
	c0=$(cpu_ticks $pid)
	for ((r = 0; r < rounds; r++)); do
		local t0 t1
		t0=$(date +%s%N)
		v4l2-ctl -d "$VICODEC_ENC" --set-fmt-video-out=width=$W,height=$H,pixelformat=YU12 \
			--set-selection-output=target=crop,width=$W,height=$H --stream-out-pattern=5 \
			--stream-out-mmap --stream-mmap --stream-from $w/raw.yu12 --stream-to $w/direct.fwht >/dev/null 2>&1
		t1=$(date +%s%N)
		d=$(awk "BEGIN{printf \"%.2f\", $N*1e9/($t1-$t0)}")
		t=$(build/tests/vuvideo-front --socket $w/e.sock encode --quiet $W $H $w/raw.yu12 $w/through.fwht |
			awk '/frames\/s/{print $(NF-1)}')
		cmp -s $w/direct.fwht $w/through.fwht || { echo "bench: bitstreams differ at ${W}x$H" >&2; exit 1; }
		awk "BEGIN{exit !($d > $best_d)}" && best_d=$d
		awk "BEGIN{exit !($t > $best_t)}" && best_t=$t
	done
	c1=$(cpu_ticks $pid)
	local hwm
	hwm=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
	kill -TERM $pid
	wait $pid
	printf "%-10s %6d %14s %16s %8s %14s %12s\n" "${W}x$H" $N "$best_d" "$best_t" \
		"$(awk "BEGIN{printf \"%.2f\", $best_t/$best_d}")" \
		"$(awk "BEGIN{printf \"%.2f\", ($c1-$c0)*1000/$hz/($N*$rounds)}")" "$hwm"
	rm -f $w/raw.yu12 $w/direct.fwht $w/through.fwht
}

strip -o $w/vuv.stripped vhost-user-video
echo "vhost-user-video benchmark (vicodec multiplanar=$VICODEC_MPLANE, TCG VM, best of $rounds)"
echo "stripped static binary: $(stat -c %s $w/vuv.stripped) bytes"
echo "decode (outputs compared byte for byte with the direct decode):"
printf "%-10s %6s %14s %16s %8s %14s %12s\n" size frames "direct fps" "via daemon fps" ratio \
	"daemon ms/fr" "peak RSS kB"
bench_size 640 480 ${VUV_BENCH_FRAMES_VGA:-120}
bench_size 1920 1080 ${VUV_BENCH_FRAMES_HD:-24}
echo "encode (bitstreams compared byte for byte with the direct encode):"
printf "%-10s %6s %14s %16s %8s %14s %12s\n" size frames "direct fps" "via daemon fps" ratio \
	"daemon ms/fr" "peak RSS kB"
bench_encode 640 480 ${VUV_BENCH_FRAMES_VGA_ENC:-60}
bench_encode 1920 1080 ${VUV_BENCH_FRAMES_HD_ENC:-12}
