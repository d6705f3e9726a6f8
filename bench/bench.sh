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

# utime and stime of a process, in ticks. Both: vicodec codes inside the
# QBUF that makes a job ready (m2m device_run), so the daemon's system time
# holds codec work too; its user time is its own (the copies).
utime() { awk '{print $14}' /proc/"$1"/stat; }
stime() { awk '{print $15}' /proc/"$1"/stat; }

# The memory paths compared: one daemon each (--memory=PATH), side by side
# (not -v: logging every command would weigh on the zero-copy CPU figures;
# the e2e suites check which path a --memory gives).
paths=${VUV_BENCH_PATHS:-mmap userptr}

# dmabuf: the CONFIG_VUV_DMABUF build (make dmabuf-build), a kernel with
# /dev/udmabuf (VUV_VM_KERNEL=sid) and guest memory in sealed memfds, as
# QEMU's memory-backend-memfd gives (the frontend's VUV_FRONT_SEAL=1). Without
# them it is skipped, and the other paths run as before.
dma_daemon=build/dma/vhost-user-video
if [[ " $paths " == *" dmabuf "* ]]; then
	why=
	if [ ! -c /dev/udmabuf ]; then
		why="no /dev/udmabuf in this kernel ($(uname -r)); run it with VUV_VM_KERNEL=sid (make bench-dmabuf)"
	elif [ ! -x $dma_daemon ]; then
		why="$dma_daemon not built (make dmabuf-build)"
	fi
	if [ -n "$why" ]; then
		echo "bench: dmabuf path skipped: $why"
		paths=$(for m in $paths; do [ "$m" = dmabuf ] || printf '%s ' "$m"; done)
	fi
fi

# daemon_of PATH, seal_of PATH: the daemon binary for a path, and whether the
# frontend seals its guest memory memfds for it (udmabuf wants F_SEAL_SHRINK).
daemon_of() { if [ "$1" = dmabuf ]; then echo $dma_daemon; else echo ./vhost-user-video; fi; }
seal_of() { if [ "$1" = dmabuf ]; then echo 1; else echo 0; fi; }

# front PATH ARGS...: the test frontend playing the guest for that path.
front() {
	local m=$1
	shift
	VUV_FRONT_SEAL=$(seal_of "$m") build/tests/vuvideo-front "$@"
}

# The memory each queue of the streams in daemon log $1 took, from its -v
# lines ("stream N: input memory: dmabuf (...)"), as "input=X output=Y".
queue_memory() {
	local q
	for q in input output; do
		printf '%s=%s ' $q "$(sed -n "s/^.*stream [0-9]*: $q memory: \([^(]*[^ (]\).*/\1/p" "$1" |
			sort -u | paste -sd, -)"
	done
}

# dmabuf_probe KIND W H: the job once through a -v daemon on --memory=dmabuf
# (the measured daemon runs without -v, like the others), output compared
# with the reference; its log must show both queues on DMABUF. Sets dma_ok
# (1 when they were), dma_note to what it found and dma_why to the log lines
# that say why not. (node and ext are bench_job's.)
dma_ok=0 dma_note='' dma_why=''
dmabuf_probe() {
	local kind=$1 W=$2 H=$3 log=$w/daemon-$1-$2x$3-dmabuf-v.log got pid rc=0
	$dma_daemon -v --socket-path=$w/probe.sock --v4l2-device="$node" --memory=dmabuf 2>"$log" &
	pid=$!
	if [ "$kind" = decode ]; then
		front dmabuf --socket $w/probe.sock decode --quiet $w/clip.fwht $w/through.$ext >/dev/null || rc=$?
	else
		front dmabuf --socket $w/probe.sock encode --quiet "$W" "$H" $w/raw.yu12 $w/through.$ext >/dev/null || rc=$?
	fi
	kill -TERM $pid
	wait $pid || true
	if [ $rc != 0 ] || ! cmp -s $w/ref.$ext $w/through.$ext; then
		echo "bench: the -v probe of --memory=dmabuf failed at ${W}x$H $kind (frontend status $rc," \
			"or outputs differ); the daemon's log ends:" >&2
		tail -n 20 "$log" >&2
		exit 1
	fi
	got=$(queue_memory "$log")
	got=${got% }
	if [ "$got" = "input=dmabuf output=dmabuf" ]; then
		dma_ok=1 dma_note="dmabuf checked: its -v probe run had $got"
	else
		dma_note="--memory=dmabuf FELL BACK at ${W}x$H $kind: $got; the dmabuf column of this row is that path, NOT DMABUF"
		dma_why=$({ grep -m 6 -E "memory: |no dmabuf: " "$log" || true; } | sed 's/^/    -v: /')
	fi
}

# bench_job KIND W H N: KIND is decode or encode. Each round runs the direct
# v4l2-ctl job, then the same job through every path's daemon; the best
# frame rate of the rounds counts, CPU and peak RSS are the daemons' own.
bench_job() {
	local kind=$1 W=$2 H=$3 N=$4 best_d=0 d t r m node ext udm
	declare -A pid best u0 s0
	if [ "$kind" = decode ]; then
		node=$VICODEC_DEC ext=yuv
		build/tests/vuvideo-front gen "$W" "$H" "$N" $w/raw.yu12
		v4l2-ctl -d "$VICODEC_ENC" --set-fmt-video-out=width="$W",height="$H",pixelformat=YU12 \
			--set-selection-output=target=crop,width="$W",height="$H" \
			--stream-out-mmap --stream-mmap --stream-from $w/raw.yu12 --stream-to $w/clip.fwht >/dev/null 2>&1
		rm -f $w/raw.yu12
	else
		node=$VICODEC_ENC ext=fwht
		build/tests/vuvideo-front gen "$W" "$H" "$N" $w/raw.yu12
	fi
	for m in $paths; do
		"$(daemon_of "$m")" --socket-path="$w/$m.sock" --v4l2-device="$node" --memory="$m" \
			2>"$w/daemon-$kind-$m.log" &
		pid[$m]=$!
		best[$m]=0
		u0[$m]=$(utime "${pid[$m]}")
		s0[$m]=$(stime "${pid[$m]}")
	done
	# The reference: two direct runs that agree (on a loaded machine
	# v4l2-ctl's select() timeout can end a run short).
	direct "$kind" "$node" "$W" "$H" $w/ref.$ext
	for ((r = 0; r < 5; r++)); do
		direct "$kind" "$node" "$W" "$H" $w/direct.$ext
		cmp -s $w/ref.$ext $w/direct.$ext && break
		mv $w/direct.$ext $w/ref.$ext
	done
	dma_ok=0 dma_note='' dma_why=''
	if [[ " $paths " == *" dmabuf "* ]]; then
		dmabuf_probe "$kind" "$W" "$H"
	fi
	for ((r = 0; r < rounds; r++)); do
		local t0 t1
		t0=$(date +%s%N)
		direct "$kind" "$node" "$W" "$H" $w/direct.$ext
		t1=$(date +%s%N)
		d=$(awk "BEGIN{printf \"%.2f\", $N*1e9/($t1-$t0)}")
		if cmp -s $w/ref.$ext $w/direct.$ext; then
			awk "BEGIN{exit !($d > $best_d)}" && best_d=$d
		else
			echo "bench: a direct v4l2-ctl run came out short; its time is not counted" >&2
		fi
		for m in $paths; do
			if [ "$kind" = decode ]; then
				t=$(front "$m" --socket "$w/$m.sock" decode --quiet $w/clip.fwht $w/through.$ext |
					awk '/frames\/s/{print $(NF-1)}')
			else
				t=$(front "$m" --socket "$w/$m.sock" encode --quiet "$W" "$H" $w/raw.yu12 $w/through.$ext |
					awk '/frames\/s/{print $(NF-1)}')
			fi
			cmp -s $w/ref.$ext $w/through.$ext ||
				{ echo "bench: $kind outputs differ at ${W}x$H with --memory=$m" >&2; exit 1; }
			awk "BEGIN{exit !($t > ${best[$m]})}" && best[$m]=$t
		done
	done
	printf "%-10s %6d %10s" "${W}x$H" "$N" "$best_d"
	for m in $paths; do
		local u1 s1 hwm
		u1=$(utime "${pid[$m]}")
		s1=$(stime "${pid[$m]}")
		hwm=$(awk '/VmHWM/{print $2}' /proc/"${pid[$m]}"/status)
		# the measured DMABUF daemon made dmabufs too: it keeps /dev/udmabuf
		# open from the first one on
		if [ "$m" = dmabuf ] && [ $dma_ok = 1 ]; then
			udm=$(find /proc/"${pid[$m]}"/fd -lname /dev/udmabuf 2>/dev/null | wc -l)
			if [ "$udm" -gt 0 ]; then
				dma_note+=", the measured daemon has /dev/udmabuf open"
			else
				dma_note="the measured --memory=dmabuf daemon never opened /dev/udmabuf at ${W}x$H $kind: NOT DMABUF"
				dma_why="    (its -v probe run had both queues on DMABUF)"
			fi
		fi
		kill -TERM "${pid[$m]}"
		wait "${pid[$m]}"
		printf " | %7s %5s %6s %6s %7s" "${best[$m]}" "$(awk "BEGIN{printf \"%.2f\", ${best[$m]}/$best_d}")" \
			"$(awk "BEGIN{printf \"%.2f\", (${u1}-${u0[$m]})*1000/$hz/($N*$rounds)}")" \
			"$(awk "BEGIN{printf \"%.1f\", (${s1}-${s0[$m]})*1000/$hz/($N*$rounds)}")" "$hwm"
	done
	echo
	[ -z "$dma_note" ] || echo "  bench: $dma_note"
	[ -z "$dma_why" ] || echo "$dma_why"
	rm -f $w/clip.fwht $w/raw.yu12 $w/ref.$ext $w/direct.$ext $w/through.$ext $w/*.sock
}

# direct KIND NODE W H OUT: the job with v4l2-ctl on vicodec itself.
direct() {
	if [ "$1" = decode ]; then
		v4l2-ctl -d "$2" --stream-out-mmap --stream-mmap --stream-from $w/clip.fwht \
			--stream-to "$5" >/dev/null 2>&1
	else
		v4l2-ctl -d "$2" --set-fmt-video-out=width="$3",height="$4",pixelformat=YU12 \
			--set-selection-output=target=crop,width="$3",height="$4" --stream-out-pattern=5 \
			--stream-out-mmap --stream-mmap --stream-from $w/raw.yu12 --stream-to "$5" >/dev/null 2>&1
	fi
}

header() {
	printf "%-10s %6s %10s" size frames "direct fps"
	for m in $paths; do printf " | %-36s" "$m: fps ratio user-ms sys-ms RSS-kB"; done
	echo
}

strip -o $w/vuv.stripped vhost-user-video
echo "vhost-user-video benchmark (vicodec multiplanar=$VICODEC_MPLANE, TCG VM, kernel $(uname -r), best of $rounds)"
echo "stripped static binary: $(stat -c %s $w/vuv.stripped) bytes"
if [[ " $paths " == *" dmabuf "* ]]; then
	strip -o $w/vuv-dma.stripped $dma_daemon
	echo "dmabuf: $dma_daemon (CONFIG_VUV_DMABUF), $(stat -c %s $w/vuv-dma.stripped) bytes stripped;" \
		"the frontend seals its memfds; a -v probe run per job checks both queues take DMABUF"
fi
echo "per path: frames/s through the daemon, ratio to direct v4l2-ctl, the daemon's user and"
echo "system CPU ms per frame (system time includes vicodec coding inside its QBUFs), peak RSS"
echo "decode (outputs compared byte for byte with the direct decode):"
header
bench_job decode 640 480 "${VUV_BENCH_FRAMES_VGA:-120}"
bench_job decode 1920 1080 "${VUV_BENCH_FRAMES_HD:-24}"
echo "encode (bitstreams compared byte for byte with the direct encode):"
header
bench_job encode 640 480 "${VUV_BENCH_FRAMES_VGA_ENC:-60}"
bench_job encode 1920 1080 "${VUV_BENCH_FRAMES_HD_ENC:-12}"
