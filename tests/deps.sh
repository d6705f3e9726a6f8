#!/bin/bash
# Install what `make check` needs on a Debian machine (bookworm), or, when not
# root, print the exact apt-get command and stop. Then prepare the test VM
# (kernel, vicodec modules, initramfs; cached). Unattended and bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

# `tests/deps.sh fuzz` (make fuzz): clang and its libFuzzer/sanitizer runtimes only.
if [ "${1:-}" = fuzz ]; then
	need=()
	command -v clang >/dev/null 2>&1 || need+=(clang)
	ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 ||
		need+=(libclang-rt-14-dev)
	[ -e /usr/include/linux/virtio_ring.h ] || need+=(linux-libc-dev)
	[ ${#need[@]} -gt 0 ] || exit 0
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing packages; run as root:" >&2
		echo "  apt-get update && apt-get install -y --no-install-recommends ${need[*]}" >&2
		exit 1
	fi
	echo "deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	timeout 600 apt-get update -qq
	timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	exit 0
fi

# command-or-file -> Debian package
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have musl-gcc || need+=(musl-tools)
have gcc || need+=(gcc)
have make || need+=(make)
have valgrind || need+=(valgrind)
have readelf || need+=(binutils)
[ -x /usr/bin/python3 ] || need+=(python3)	# json.tool for --print-capabilities
have systemd-analyze || need+=(systemd)		# verify the units
have shellcheck || need+=(shellcheck)		# the init script
# Buildroot's utils/check-package (tests/buildroot.sh), with /usr/bin/python3
have flake8 || need+=(flake8)
/usr/bin/python3 -c 'import magic' 2>/dev/null || need+=(python3-magic)
[ -e /usr/include/linux/videodev2.h ] || need+=(linux-libc-dev)
[ -e /usr/include/stdio.h ] || need+=(libc6-dev)
# the sanitizer runtimes come with gcc on Debian (libasan8, libubsan1)
# the QEMU fixture of the stop/cont test (../shared/guest-driver/qemu/README)
qemu=../shared/guest-driver/qemu/qemu-system-x86_64
if [ -x "$qemu" ] && ldd "$qemu" 2>/dev/null | grep -q 'not found'; then
	need+=(libglib2.0-0 libpixman-1-0 libfdt1 libpng16-16 zlib1g libbz2-1.0)
fi

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing packages; run as root:" >&2
		echo "  apt-get update && apt-get install -y --no-install-recommends ${need[*]}" >&2
		exit 1
	fi
	echo "deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	timeout 600 apt-get update -qq
	timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ "${VUV_NO_VM:-0}" != 1 ]; then
	tests/vm/vm.sh setup
	# the arm64 VM (tests/run.sh runs it in CI or with VUV_ARM=640|1)
	if { [ "${CI:-}" = true ] && [ "${VUV_ARM:-640}" != 0 ]; } || [ "${VUV_ARM:-0}" != 0 ]; then
		tests/vm/vm-arm64.sh setup
	fi
	# the guest-driver suite: QEMU's runtime libraries, the driver build
	if [ -d ../shared/guest-driver ]; then
		tests/guest/guest.sh setup
	fi
fi
