#!/bin/bash
# Runs every test of `make check`: command-line checks and unit tests on the
# host (static, ASan+UBSan, valgrind), then the end-to-end tests on the real
# vicodec in the test VM, single- and multi-planar, and the real guest driver
# (when ../shared/guest-driver/ exists). Ends with the totals as
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
check "--socket-fd (the --fd alias) refuses a non-number" sh -c "$D --socket-fd=abc 2>/dev/null; [ \$? = 2 ]"
check "--print-capabilities is valid JSON (python3 -m json.tool)" sh -c \
	"$D --print-capabilities | /usr/bin/python3 -m json.tool"
# every long option --help lists is described in the man page, and back
check "--help and the man page (section 8) list the same options" sh -c \
	"$D --help | grep -o -- '--[a-z0-9-]*' | sort -u >$B/opts.help &&
	 sed 's/\\\\-/-/g' doc/vhost-user-video.8 | sed -n '/^.SH OPTIONS/,/^.SH /p' |
		grep -o -- '--[a-z0-9-]*' | sort -u >$B/opts.man &&
	 [ -s $B/opts.help ] && diff $B/opts.help $B/opts.man"
rm -rf $B/inst
check "make install: daemon and man8 page, no QEMU JSON descriptor" sh -c \
	"make --no-print-directory DESTDIR=$PWD/$B/inst PREFIX=/usr install >/dev/null &&
	 [ -x $B/inst/usr/bin/vhost-user-video ] && [ -f $B/inst/usr/share/man/man8/vhost-user-video.8 ] &&
	 [ ! -e $B/inst/usr/share/qemu ]"
check "make install-qemu-json: the descriptor, valid JSON, with the binary's path" sh -c \
	"make --no-print-directory DESTDIR=$PWD/$B/inst PREFIX=/usr install-qemu-json >/dev/null &&
	 /usr/bin/python3 -m json.tool $B/inst/usr/share/qemu/vhost-user/50-vhost-user-video.json |
		grep -q '\"binary\": \"/usr/bin/vhost-user-video\"'"
check "--v4l2-ctrl refuses a malformed ID=VALUE" sh -c "$D --v4l2-ctrl=gop 2>/dev/null; [ \$? = 2 ]"
check "--memory refuses an unknown mode" sh -c "$D --memory=fast 2>/dev/null; [ \$? = 2 ]"

echo "=== init script and systemd units (contrib/)"
rm -rf $B/units
# the units as installed, ExecStart pointing at this tree's daemon so that
# systemd-analyze can check it is executable; the template as an instance
check "make install-systemd installs the three units" sh -c \
	"make --no-print-directory DESTDIR=$PWD/$B/units SYSTEMDUNITDIR=/ SYSCONFDIR=/etc BINDIR=$PWD \
		install-systemd >/dev/null &&
	 cp '$B/units/vhost-user-video@.service' '$B/units/vhost-user-video@video0.service' &&
	 [ \$(ls $B/units | wc -l) = 4 ]"
# verify exits 0 on unknown keys and bad values too: any output is a failure
check "systemd-analyze verify: the units are clean (no output)" sh -c \
	"cd $B/units && systemd-analyze verify --man=no ./vhost-user-video.socket ./vhost-user-video.service \
		./vhost-user-video@video0.service >../units.log 2>&1 && [ ! -s ../units.log ]"
check "the units are Type=notify and hardened (ProtectSystem=strict, DeviceAllow=char-video4linux)" sh -c \
	"for u in vhost-user-video.service vhost-user-video@.service; do
		grep -q '^Type=notify' contrib/systemd/\$u && grep -q '^ProtectSystem=strict' contrib/systemd/\$u &&
		grep -q '^DeviceAllow=char-video4linux rw' contrib/systemd/\$u || exit 1; done"
check "the init script is clean under shellcheck (sh)" shellcheck -s sh contrib/init/S50vhost-user-video
check "make install-sysv: script (executable, BINDIR substituted) and defaults file" sh -c \
	"make --no-print-directory DESTDIR=$PWD/$B/sysv PREFIX=/usr install-sysv >/dev/null &&
	 [ -x $B/sysv/etc/init.d/S50vhost-user-video ] && [ -f $B/sysv/etc/default/vhost-user-video ] &&
	 grep -q '^BIN=\"/usr/bin/' $B/sysv/etc/init.d/S50vhost-user-video"

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

# The aarch64 cross build: in CI (or with VUV_CROSS=1); it installs a cross
# toolchain and adds the arm64 dpkg architecture, so not by default.
if [ "${CI:-}" = true ] || [ "${VUV_CROSS:-0}" = 1 ]; then
	run_prog "aarch64 cross build" tests/cross.sh
fi

# The Buildroot package in the Buildroot snapshot of ../shared/buildroot/:
# check-package always (1 s); the real offline aarch64 build (~2 min: two
# builds, full and decoder-only) with the cross toolchain, in CI or with
# VUV_CROSS=1 / VUV_BUILDROOT=1.
if ls ../shared/buildroot/buildroot-*.tar.xz >/dev/null 2>&1; then
	if [ "${CI:-}" = true ] || [ "${VUV_CROSS:-0}" = 1 ] || [ "${VUV_BUILDROOT:-0}" = 1 ]; then
		run_prog "Buildroot: check-package, make vhost-user-video (aarch64)" tests/buildroot.sh
	else
		run_prog "Buildroot: check-package" env VUV_BR_BUILD=0 tests/buildroot.sh
	fi
elif [ "${CI:-}" = true ]; then
	check "the Buildroot snapshot ../shared/buildroot/buildroot-*.tar.xz is there" false
else
	echo "SKIP Buildroot: no ../shared/buildroot/buildroot-*.tar.xz"
fi

# The Yocto recipe's tasks with bitbake's variables (no bitbake in Debian): 10 s.
run_prog "Yocto recipe: do_configure/do_compile/do_install, bitbake-style" tests/yocto.sh

echo "=== footprint"
make --no-print-directory -s size | tee $B/size.txt
full=$(awk '$1 == "vhost-user-video" {print $2}' $B/size.txt)
dec=$(awk '$1 == "build/dec/vhost-user-video" {print $2}' $B/size.txt)
enc=$(awk '$1 == "build/enc/vhost-user-video" {print $2}' $B/size.txt)
check "full build stripped <= 96 KiB ($full bytes)" test "${full:-999999}" -le 98304
check "decoder-only build smaller than the full one ($dec < $full)" test "${dec:-999999}" -lt "${full:-0}"
check "encoder-only build smaller than the full one ($enc < $full)" test "${enc:-999999}" -lt "${full:-0}"
check "no printf core of libc in the static daemon (CONFIG_VUV_SMALL_PRINTF)" sh -c \
	"nm $D >$B/nm.txt && ! grep -qw -e fmt_fp -e printf_core $B/nm.txt && grep -qw vsnprintf $B/nm.txt"
run_prog "unit: snprintf as the daemon uses it (vu.c's own)" $B/tests/test_fmt
run_prog "unit: snprintf as the daemon uses it (glibc, ASan: the expectations are C's)" $B/asan/tests/test_fmt


run_prog "unit: vhost-user engine" $B/tests/test_vu
run_prog "unit: vhost-user engine (ASan+UBSan)" $B/asan/tests/test_vu
run_prog "unit: vhost-user engine (valgrind)" \
	valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite $B/tests/test_vu
run_prog "unit: vhost-user engine with CONFIG_VUV_DMABUF" build/dma/tests/test_vu
run_prog "unit: vhost-user engine with CONFIG_VUV_DMABUF (ASan+UBSan)" build/dma/asan/tests/test_vu

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

# vu.c against the real QEMU 10 (the guest-driver fixture) with the qtest
# accelerator playing the guest: VM stop/cont with parked chains, guest reset.
run_prog "unit: vhost-user engine against QEMU (stop/cont)" $B/tests/qemu_stopcont ../shared/guest-driver/qemu

# The fuzz targets' committed corpora (seeds and every crasher found), with
# the same invariants as under libFuzzer, built by gcc with ASan+UBSan.
for t in fuzz_vu_msg fuzz_vring fuzz_vv_cmd fuzz_view; do
	run_prog "fuzz corpus replay: $t (ASan+UBSan)" sh -c \
		"$B/asan/tests/$t-replay tests/fuzz/corpus/$t 2>$B/$t-replay.log || { tail -n 20 $B/$t-replay.log; exit 1; }"
done

if [ "${VUV_NO_VM:-0}" != 1 ]; then
	run_prog "vm: vicodec single-planar" tests/vm/vm.sh run --mem 2048 --timeout 2700 -- tests/vm-tests.sh
	run_prog "vm: vicodec multi-planar" tests/vm/vm.sh run --mem 2048 --timeout 2700 --multiplanar -- tests/vm-tests.sh
	# The decoder and encoder suites with the static aarch64 daemon and
	# aarch64 test programs in the arm64 vicodec VM (tests/vm/vm-arm64.sh,
	# doc/arm-vm.md), both vicodec modes. VUV_ARM=640: the 640x480 decode
	# and encode cases (CI's default); VUV_ARM=1: all of them (make check-arm); VUV_ARM=0:
	# none (the default outside CI: it adds the arm64 dpkg architecture).
	arm=${VUV_ARM:-0}
	[ "${CI:-}" != true ] || arm=${VUV_ARM:-640}
	case $arm in
	0) ;;
	640) run_prog "arm64 vm: e2e decoder + encoder, the 640x480 decode and encode" sh -c \
		"make --no-print-directory arm64-tests && VUV_ARM_SUBSET=640 tests/vm/vm-arm64.sh check" ;;
	*) run_prog "arm64 vm: e2e decoder + encoder" sh -c \
		"make --no-print-directory arm64-tests && tests/vm/vm-arm64.sh check" ;;
	esac
	# the real Linux guest driver through QEMU, in the VM (tests/guest/guest.sh)
	if [ -d ../shared/guest-driver ]; then
		run_prog "guest: the Linux virtio-video driver, QEMU and the daemon on vicodec" tests/guest/guest.sh check
	else
		echo "SKIP guest: the Linux virtio-video driver (no ../shared/guest-driver/ fixtures next to the repository)"
	fi
fi

echo
echo "make check: $(( $(date +%s) - start )) s"
[ ${#FAILED_PROGS[@]} = 0 ] || echo "failed: ${FAILED_PROGS[*]}"
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" = 0 ]
