#!/bin/bash
# The Buildroot package (contrib/buildroot, a BR2_EXTERNAL tree) in a real
# Buildroot: the snapshot in ../shared/buildroot/ (a test fixture, never
# copied into the repo), extracted once into the cache. Offline: nothing can
# be downloaded, so the toolchain is an external one made here from Debian's
# aarch64 cross gcc and musl (musl-dev:arm64), and no package that needs a
# download is selected.
#
#   1. utils/check-package on every file of the package and the tree;
#   2. make vhost-user-video for aarch64 (musl, external toolchain), full
#      build: the installed files, the binary runs under qemu-user;
#   3. the BR2 sub-options reach the project's Kconfig: decoder only, then
#      decoder only with DMABUF (CONFIG_VUV_DMABUF, /dev/udmabuf in the binary).
#
# Prints PASS/FAIL lines and "N passed, M failed". Needs (installed when
# root): python3-magic flake8 shellcheck, and for the build rsync and
# Buildroot's host tools, qemu-user-static, the cross toolchain of
# tests/cross.sh.
# VUV_BR_BUILD=0: check-package only. VUV_BR_TARBALL overrides the snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
repo=$PWD

tarball=${VUV_BR_TARBALL:-$(ls ../shared/buildroot/buildroot-*.tar.xz 2>/dev/null | tail -n 1)}
if [ ! -f "$tarball" ]; then
	echo "buildroot: no snapshot (../shared/buildroot/buildroot-*.tar.xz)"
	echo "0 passed, 1 failed"
	exit 1
fi
cache=${VUV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-user-video}/buildroot
id=$(basename "$tarball" .tar.xz)
br=$cache/$id
tc=$cache/toolchain-aarch64-musl
out=$cache/out-aarch64
mkdir -p "$cache"
# One run at a time per cache: each starts by removing $out, so a second
# run (another checkout, a helper, CI beside a developer) would pull the
# first one's build from under it. Wait for the other to finish.
exec 9>"$cache/.lock"
if ! flock -n 9; then
	echo "buildroot: another run uses $cache; waiting for it"
	flock 9
fi

need=()
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v flake8 >/dev/null 2>&1 || need+=(flake8)
/usr/bin/python3 -c 'import magic' 2>/dev/null || need+=(python3-magic)
build=${VUV_BR_BUILD:-1}
if [ "$build" = 1 ]; then
	for p in rsync bc cpio unzip file patch perl wget g++; do
		command -v $p >/dev/null 2>&1 || need+=("$p")
	done
	# the binary runs under qemu-user (tests/cross.sh installs it too, but
	# is skipped when the cross gcc is already there)
	command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
fi
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "buildroot: missing; run as root: apt-get install ${need[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# the cross gcc and musl for arm64 (adds the arm64 dpkg architecture)
[ "$build" = 0 ] || command -v aarch64-linux-musl-gcc >/dev/null 2>&1 || tests/cross.sh >/dev/null

# The Buildroot tree, extracted once (atomically: a half tree never counts).
if [ ! -e "$br/Makefile" ]; then
	rm -rf "$br.tmp"
	mkdir -p "$br.tmp"
	tar -xJf "$tarball" -C "$br.tmp"
	rm -rf "$br"
	mv "$br.tmp" "$br"
fi

echo "=== Buildroot $id: check-package"
pkg=contrib/buildroot
check "check-package: the package and the BR2_EXTERNAL tree are clean" sh -c \
	"cd '$br' && /usr/bin/python3 utils/check-package -b $repo/$pkg/Config.in $repo/$pkg/external.desc \
		$repo/$pkg/external.mk $repo/$pkg/package/vhost-user-video/* >'$cache/check-package.log' 2>&1 &&
	 grep -q '^0 warnings generated' '$cache/check-package.log'"
sed 's/^/  | /' "$cache/check-package.log"
if [ "$build" = 0 ]; then
	echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
	[ "$TOTAL_FAIL" = 0 ]
	exit
fi

# An external toolchain as Buildroot wants one: a directory with the tools
# and a sysroot (musl headers, the arm64 kernel uapi headers, crt files and
# libraries, copied so that `readlink -f` of libc.a lands in the sysroot).
# The compiler is Debian's aarch64-linux-gnu-gcc with a musl specs file whose
# paths are sysroot-relative (%R), so Buildroot's --sysroot=$STAGING_DIR
# works; -v output drops "--with-sysroot=/", the Debian configure flag that
# makes Buildroot refuse distribution toolchains (this gcc does honour
# --sysroot, which is what the check is after). -mno-outline-atomics: Debian's
# libgcc implements outline atomics with glibc's __getauxval, which musl has
# not (musl cross toolchains are built without them).
if [ ! -x "$tc/bin/aarch64-linux-musl-gcc" ] || [ "$(cat "$tc/stamp" 2>/dev/null)" != 3 ]; then
	rm -rf "$tc.tmp"
	s=$tc.tmp/aarch64-linux-musl/sysroot
	mkdir -p "$tc.tmp/bin" "$s/usr/include" "$s/usr/lib" "$s/lib"
	cp -a /usr/include/aarch64-linux-musl/. "$s/usr/include/"
	for d in /usr/aarch64-linux-gnu/include/*/; do cp -a "$d" "$s/usr/include/"; done
	cp -L /usr/lib/aarch64-linux-musl/*.o /usr/lib/aarch64-linux-musl/*.a \
		/usr/lib/aarch64-linux-musl/libc.so "$s/usr/lib/"
	ln -s ../usr/lib/libc.so "$s/lib/ld-musl-aarch64.so.1"
	sed -e 's|/usr/include/aarch64-linux-musl|%R/usr/include|g' \
		-e 's|/usr/lib/aarch64-linux-musl|%R/usr/lib|g' \
		/usr/lib/aarch64-linux-musl/musl-gcc.specs >"$tc.tmp/musl-gcc.specs"
	cat >"$tc.tmp/bin/aarch64-linux-musl-gcc" <<-EOF
	#!/bin/sh
	# Debian's aarch64 cross gcc on a musl sysroot (see tests/buildroot.sh).
	d=\$(dirname "\$(readlink -f "\$0")")/..
	for a in "\$@"; do
		if [ "\$a" = -v ]; then
			aarch64-linux-gnu-gcc --sysroot="\$d/aarch64-linux-musl/sysroot" -mno-outline-atomics \\
				"\$@" -specs "\$d/musl-gcc.specs" 2>&1 | sed 's| --with-sysroot=/ | |' >&2
			exit 0
		fi
	done
	exec aarch64-linux-gnu-gcc --sysroot="\$d/aarch64-linux-musl/sysroot" -mno-outline-atomics \
		"\$@" -specs "\$d/musl-gcc.specs"
	EOF
	chmod +x "$tc.tmp/bin/aarch64-linux-musl-gcc"
	# no C++ in this toolchain; cpp is gcc -E
	printf '#!/bin/sh\nexec "$(dirname "$0")/aarch64-linux-musl-gcc" -E "$@"\n' >"$tc.tmp/bin/aarch64-linux-musl-cpp"
	chmod +x "$tc.tmp/bin/aarch64-linux-musl-cpp"
	for t in addr2line ar as c++filt elfedit gprof ld ld.bfd nm objcopy objdump ranlib readelf \
		size strings strip gcc-ar gcc-nm gcc-ranlib; do
		[ -x "/usr/bin/aarch64-linux-gnu-$t" ] && ln -s "/usr/bin/aarch64-linux-gnu-$t" "$tc.tmp/bin/aarch64-linux-musl-$t"
	done
	echo 3 >"$tc.tmp/stamp"
	rm -rf "$tc"
	mv "$tc.tmp" "$tc"
fi

# Bookworm's GNU tar is 1.34; Buildroot wants >= 1.35 for reproducible
# archives of downloaded sources, and would otherwise download and build
# host-tar. Nothing is downloaded or archived here, so a shim that reports
# 1.35 and runs the real tar is acceptable for this test only.
mkdir -p "$cache/shim"
cat >"$cache/shim/tar" <<'EOF'
#!/bin/sh
# test shim (tests/buildroot.sh): bookworm's tar 1.34 presented as 1.35
if [ "$1" = --version ]; then
	echo "tar (GNU tar) 1.35"
	exit 0
fi
exec /usr/bin/tar "$@"
EOF
chmod +x "$cache/shim/tar"

# A musl toolchain makes Buildroot install musl-compat-headers, whose
# queue.h is downloaded from NetBSD. Offline, the package gets its source
# through Buildroot's override mechanism (local.mk): glibc's sys/queue.h (the
# same BSD header, from libc6-dev) and Buildroot's own cdefs.h.
mkdir -p "$cache/musl-compat-headers"
cp /usr/include/x86_64-linux-gnu/sys/queue.h "$cache/musl-compat-headers/queue.h"
cp "$br/package/musl-compat-headers/cdefs.h" "$cache/musl-compat-headers/cdefs.h"
# (the package has no SITE, only an extra download; pkg-generic wants one)
printf 'MUSL_COMPAT_HEADERS_OVERRIDE_SRCDIR = %s\nMUSL_COMPAT_HEADERS_SITE = file://%s\n' \
	"$cache/musl-compat-headers" "$cache/musl-compat-headers" >"$cache/local.mk"

gccver=$(aarch64-linux-gnu-gcc -dumpversion | cut -d. -f1)
hdr=$(sed -n 's/^#define LINUX_VERSION_CODE //p' /usr/aarch64-linux-gnu/include/linux/version.h)
hdr="$((hdr >> 16))_$(((hdr >> 8) & 255))"
defconfig() {	# $1: extra lines
	cat <<-EOF
	BR2_aarch64=y
	BR2_DL_DIR="$cache/dl"
	BR2_JLEVEL=2
	BR2_BACKUP_SITE=""
	BR2_TOOLCHAIN_EXTERNAL=y
	BR2_TOOLCHAIN_EXTERNAL_CUSTOM=y
	BR2_TOOLCHAIN_EXTERNAL_PREINSTALLED=y
	BR2_TOOLCHAIN_EXTERNAL_PATH="$tc"
	BR2_TOOLCHAIN_EXTERNAL_CUSTOM_PREFIX="aarch64-linux-musl"
	BR2_TOOLCHAIN_EXTERNAL_GCC_$gccver=y
	BR2_TOOLCHAIN_EXTERNAL_HEADERS_$hdr=y
	BR2_TOOLCHAIN_EXTERNAL_CUSTOM_MUSL=y
	BR2_TOOLCHAIN_EXTERNAL_HAS_SSP=y
	BR2_PACKAGE_OVERRIDE_FILE="$cache/local.mk"
	BR2_PACKAGE_VHOST_USER_VIDEO=y
	$1
	EOF
}
brmake() {
	# offline for real: a proxy that refuses, in case anything tried
	env PATH="$cache/shim:$PATH" http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 \
		ftp_proxy=http://127.0.0.1:9 BR2_EXTERNAL="$repo/contrib/buildroot" \
		nice -n 10 make -C "$br" O="$out" "$@"
}

echo "=== Buildroot $id: make vhost-user-video (aarch64, musl, external toolchain)"
t0=$(date +%s)
rm -rf "$out" "$cache/dl"
mkdir -p "$out" "$cache/dl"
defconfig "" >"$out/defconfig.in"
cp "$out/defconfig.in" "$out/.config"
rc=0
brmake olddefconfig >"$out/olddefconfig.log" 2>&1 || rc=$?
check "Buildroot accepts the configuration (olddefconfig, the package selected)" sh -c \
	"[ $rc = 0 ] && grep -q '^BR2_PACKAGE_VHOST_USER_VIDEO=y' '$out/.config' &&
	 grep -q '^BR2_PACKAGE_VHOST_USER_VIDEO_DECODER=y' '$out/.config' &&
	 grep -q '^BR2_TOOLCHAIN_EXTERNAL_CUSTOM_MUSL=y' '$out/.config'"
set +e
brmake vhost-user-video >"$out/build.log" 2>&1
rc=$?
set -e
t1=$(date +%s)
tgt=$out/target
if [ $rc = 0 ]; then
	echo "PASS make vhost-user-video ($((t1 - t0)) s)"
	TOTAL_PASS=$((TOTAL_PASS + 1))
else
	echo "FAIL make vhost-user-video (exit $rc, $((t1 - t0)) s); the end of $out/build.log:"
	tail -n 25 "$out/build.log" | sed 's/^/  | /'
	TOTAL_FAIL=$((TOTAL_FAIL + 1))
	FAILED_PROGS+=("make vhost-user-video")
fi
check "nothing was downloaded (no file in the download directory)" sh -c "[ -z \"\$(find '$cache/dl' -type f)\" ]"
check "the build used Buildroot's CC with our flags and Buildroot's CFLAGS after them" sh -c \
	"grep -E 'aarch64-linux-musl-gcc.* -Werror .*-Os .*-c -o build/vuvideo.o vuvideo.c' '$out/build.log' >/dev/null ||
	 grep -E '  CC +vuvideo.c' '$out/build.log' >/dev/null"
check "target: /usr/bin/vhost-user-video, an AArch64 executable" sh -c \
	"readelf -h '$tgt/usr/bin/vhost-user-video' | grep -q 'Machine:.*AArch64'"
check "target: S50vhost-user-video (0755) and /etc/default/vhost-user-video" sh -c \
	"[ -x '$tgt/etc/init.d/S50vhost-user-video' ] && [ -f '$tgt/etc/default/vhost-user-video' ] &&
	 cmp '$tgt/etc/init.d/S50vhost-user-video' contrib/init/S50vhost-user-video"
check "target: the man page (section 8) and no QEMU JSON descriptor" sh -c \
	"[ -f '$tgt/usr/share/man/man8/vhost-user-video.8' ] && [ ! -e '$tgt/usr/share/qemu' ]"
check "the Buildroot binary runs (qemu-user, staging as root): both roles" sh -c \
	"qemu-aarch64-static -L '$out/staging' '$tgt/usr/bin/vhost-user-video' --print-capabilities |
	 tr -d ' \n' | grep -q '\"features\":\\[\"decoder\",\"encoder\"\\]'"
check "legal-info names the license: MIT, LICENSE" sh -c \
	"grep -q 'VHOST_USER_VIDEO_LICENSE = MIT' contrib/buildroot/package/vhost-user-video/vhost-user-video.mk"
check "default: CONFIG_VUV_DMABUF off in the package's .config, no /dev/udmabuf in the binary" sh -c \
	"grep -q '^# CONFIG_VUV_DMABUF is not set' '$out/build/vhost-user-video-0.1.0/.config' &&
	 ! grep -qF /dev/udmabuf '$tgt/usr/bin/vhost-user-video'"

echo "=== Buildroot: BR2_PACKAGE_VHOST_USER_VIDEO_ENCODER=n -> CONFIG_VUV_ENCODER off"
sed -i 's/^BR2_PACKAGE_VHOST_USER_VIDEO_ENCODER=y/# BR2_PACKAGE_VHOST_USER_VIDEO_ENCODER is not set/' "$out/.config"
set +e
brmake olddefconfig >>"$out/build.log" 2>&1 && brmake vhost-user-video-reconfigure >"$out/build-dec.log" 2>&1
rc=$?
set -e
check "vhost-user-video-reconfigure with the encoder off builds" test $rc = 0
check "the package's .config has CONFIG_VUV_ENCODER off, the decoder on" sh -c \
	"grep -q '^# CONFIG_VUV_ENCODER is not set' '$out/build/vhost-user-video-0.1.0/.config' &&
	 grep -q '^CONFIG_VUV_DECODER=y' '$out/build/vhost-user-video-0.1.0/.config'"
check "the installed binary serves only the decoder" sh -c \
	"qemu-aarch64-static -L '$out/staging' '$tgt/usr/bin/vhost-user-video' --print-capabilities |
	 tr -d ' \n' | grep -q '\"features\":\\[\"decoder\"\\]'"

echo "=== Buildroot: BR2_PACKAGE_VHOST_USER_VIDEO_DMABUF=y -> CONFIG_VUV_DMABUF on"
t2=$(date +%s)
sed -i '/^\(# \)\?BR2_PACKAGE_VHOST_USER_VIDEO_DMABUF\>/d' "$out/.config"
echo 'BR2_PACKAGE_VHOST_USER_VIDEO_DMABUF=y' >>"$out/.config"
set +e
brmake olddefconfig >>"$out/build.log" 2>&1 && brmake vhost-user-video-reconfigure >"$out/build-dma.log" 2>&1
rc=$?
set -e
check "Buildroot keeps BR2_PACKAGE_VHOST_USER_VIDEO_DMABUF=y (olddefconfig)" \
	grep -q '^BR2_PACKAGE_VHOST_USER_VIDEO_DMABUF=y' "$out/.config"
check "vhost-user-video-reconfigure with DMABUF on builds ($(( $(date +%s) - t2 )) s)" test $rc = 0
check "the package's .config has CONFIG_VUV_DMABUF=y, CONFIG_VUV_ZERO_COPY=y, the encoder still off" sh -c \
	"grep -q '^CONFIG_VUV_DMABUF=y' '$out/build/vhost-user-video-0.1.0/.config' &&
	 grep -q '^CONFIG_VUV_ZERO_COPY=y' '$out/build/vhost-user-video-0.1.0/.config' &&
	 grep -q '^# CONFIG_VUV_ENCODER is not set' '$out/build/vhost-user-video-0.1.0/.config'"
check "the installed binary has the udmabuf path (/dev/udmabuf)" \
	grep -qF /dev/udmabuf "$tgt/usr/bin/vhost-user-video"
check "the DMABUF binary runs (qemu-user) and serves only the decoder" sh -c \
	"qemu-aarch64-static -L '$out/staging' '$tgt/usr/bin/vhost-user-video' --print-capabilities |
	 tr -d ' \n' | grep -q '\"features\":\\[\"decoder\"\\]'"
echo "buildroot: $(( $(date +%s) - t0 )) s for the three builds"
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" = 0 ]
