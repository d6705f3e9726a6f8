#!/bin/bash
# The aarch64 static build, as a Buildroot/Yocto user or a board maintainer
# would make it on Debian: gcc-aarch64-linux-gnu + musl-dev:arm64 give
# aarch64-linux-musl-gcc. Builds it, checks it is a static AArch64 binary and
# runs it under qemu-user. Prints PASS/FAIL lines and "N passed, M failed".
# Installs the toolchain when root (it adds the arm64 dpkg architecture).
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh

need=()
command -v aarch64-linux-musl-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu musl-dev:arm64)
# the arm64 uapi headers (asm/): only recommended by the cross gcc
[ -d /usr/aarch64-linux-gnu/include/asm ] || [ -d /usr/include/aarch64-linux-gnu/asm ] ||
	need+=(linux-libc-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "cross: run as root, or: dpkg --add-architecture arm64 && apt-get update &&" \
		     "apt-get install ${need[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	dpkg --add-architecture arm64
	timeout 600 apt-get update -qq
	timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

B=build/arm64
bin=$B/vhost-user-video
echo "=== aarch64 static build"
check "make CROSS_COMPILE=aarch64-linux-musl- builds" \
	make --no-print-directory B=$B CROSS_COMPILE=aarch64-linux-musl- $bin
check "it is an AArch64 executable" sh -c "readelf -h $bin | grep -q 'Machine:.*AArch64'"
check "it is statically linked" sh -c \
	"readelf -lW $bin >$B/phdrs && ! grep -q 'Requesting program interpreter' $B/phdrs"
check "it runs (qemu-user): --version" sh -c "qemu-aarch64-static $bin --version | grep -q '^vhost-user-video '"
check "it runs (qemu-user): --print-capabilities" sh -c \
	"qemu-aarch64-static $bin --print-capabilities | grep -q '\"type\": \"video\"'"
# Buildroot/Yocto style: the given CC is used and the user's CFLAGS come
# after ours (so the user's -O1 wins over our -Os), never instead of them.
rm -rf build/arm64-br
check "a Buildroot-style build: CC given, CFLAGS appended after ours" sh -c \
	"make --no-print-directory V=1 B=build/arm64-br CC=aarch64-linux-musl-gcc CFLAGS=-O1 \
		build/arm64-br/vhost-user-video | grep -q '^aarch64-linux-musl-gcc .*-Werror.* -Os .*-O1 -c'"
aarch64-linux-gnu-strip -o $B/stripped $bin
echo "stripped aarch64 size: $(stat -c %s $B/stripped) bytes"
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" = 0 ]
