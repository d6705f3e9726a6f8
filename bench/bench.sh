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

# The memory paths compared: one daemon each (--memory=PATH), side by side
# (not -v: logging every command would weigh on the zero-copy CPU figures;
# the e2e suites check which path a --memory gives).
paths=${VUV_BENCH_PATHS:-mmap userptr}

# bench_job KIND W H N: KIND is decode or encode. Each round runs the direct
# v4l2-ctl job, then the same job through every path's daemon; the best
# frame rate of the rounds counts, CPU and peak RSS are the daemons' own.
bench_job() {
	local kind=$1 W=$2 H=$3 N=$4 best_d=0 d t r m node ext
	declare -A pid best c0
	if [ "$kind" = decode ]; then
		node=$VICODEC_DEC ext=yuv
		build/tests/vuvideo-front gen $W $H $N $w/raw.yu12
		v4l2-ctl -d "$VICODEC_ENC" --set-fmt-video-out=width=$W,height=$H,pixelformat=YU12 \
			--set-selection-output=target=crop,width=$W,height=$H \
			--stream-out-mmap --stream-mmap --stream-from $w/raw.yu12 --stream-to $w/clip.fwht >/dev/null 2>&1
		rm -f $w/raw.yu12
	else
		node=$VICODEC_ENC ext=fwht
		build/tests/vuvideo-front gen $W $H $N $w/raw.yu12
	fi
	for m in $paths; do
		./vhost-user-video --socket-path=$w/$m.sock --v4l2-device="$node" --memory=$m \
			2>$w/daemon-$kind-$m.log &
		pid[$m]=$!
		best[$m]=0
		c0[$m]=$(cpu_ticks ${pid[$m]})
	done
	for ((r = 0; r < rounds; r++)); do
		local t0 t1
		t0=$(date +%s%N)
		if [ "$kind" = decode ]; then
			v4l2-ctl -d "$node" --stream-out-mmap --stream-mmap --stream-from $w/clip.fwht \
				--stream-to $w/direct.$ext >/dev/null 2>&1
		else
			v4l2-ctl -d "$node" --set-fmt-video-out=width=$W,height=$H,pixelformat=YU12 \
				--set-selection-output=target=crop,width=$W,height=$H --stream-out-pattern=5 \
				--stream-out-mmap --stream-mmap --stream-from $w/raw.yu12 --stream-to $w/direct.$ext >/dev/null 2>&1
		fi
		t1=$(date +%s%N)
		d=$(awk "BEGIN{printf \"%.2f\", $N*1e9/($t1-$t0)}")
		awk "BEGIN{exit !($d > $best_d)}" && best_d=$d
		for m in $paths; do
			if [ "$kind" = decode ]; then
				t=$(build/tests/vuvideo-front --socket $w/$m.sock decode --quiet $w/clip.fwht $w/through.$ext |
					awk '/frames\/s/{print $(NF-1)}')
			else
				t=$(build/tests/vuvideo-front --socket $w/$m.sock encode --quiet $W $H $w/raw.yu12 $w/through.$ext |
					awk '/frames\/s/{print $(NF-1)}')
			fi
			cmp -s $w/direct.$ext $w/through.$ext ||
				{ echo "bench: $kind outputs differ at ${W}x$H with --memory=$m" >&2; exit 1; }
			awk "BEGIN{exit !($t > ${best[$m]})}" && best[$m]=$t
		done
	done
	printf "%-10s %6d %10s" "${W}x$H" $N "$best_d"
	for m in $paths; do
		local c1 hwm
		c1=$(cpu_ticks ${pid[$m]})
		hwm=$(awk '/VmHWM/{print $2}' /proc/${pid[$m]}/status)
		kill -TERM ${pid[$m]}
		wait ${pid[$m]}
		printf " | %8s %6s %8s %8s" "${best[$m]}" "$(awk "BEGIN{printf \"%.2f\", ${best[$m]}/$best_d}")" \
			"$(awk "BEGIN{printf \"%.2f\", (${c1}-${c0[$m]})*1000/$hz/($N*$rounds)}")" "$hwm"
	done
	echo
	rm -f $w/clip.fwht $w/raw.yu12 $w/direct.$ext $w/through.$ext $w/*.sock
}

header() {
	printf "%-10s %6s %10s" size frames "direct fps"
	for m in $paths; do printf " | %-33s" "$m: fps, ratio, ms/frame, RSS kB"; done
	echo
}

strip -o $w/vuv.stripped vhost-user-video
echo "vhost-user-video benchmark (vicodec multiplanar=$VICODEC_MPLANE, TCG VM, best of $rounds)"
echo "stripped static binary: $(stat -c %s $w/vuv.stripped) bytes"
echo "daemon: frames/s through it, ratio to direct v4l2-ctl, daemon CPU ms per frame, peak RSS"
echo "decode (outputs compared byte for byte with the direct decode):"
header
bench_job decode 640 480 ${VUV_BENCH_FRAMES_VGA:-120}
bench_job decode 1920 1080 ${VUV_BENCH_FRAMES_HD:-24}
echo "encode (bitstreams compared byte for byte with the direct encode):"
header
bench_job encode 640 480 ${VUV_BENCH_FRAMES_VGA_ENC:-60}
bench_job encode 1920 1080 ${VUV_BENCH_FRAMES_HD_ENC:-12}
