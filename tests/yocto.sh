#!/bin/bash
# The Yocto recipe (contrib/yocto) without bitbake (Debian has none): its
# do_configure, do_compile and do_install run by tests/yocto-run.py with the
# environment bitbake gives them: a CC carrying machine flags and
# --sysroot=${STAGING_DIR_TARGET}, poky's default CFLAGS/LDFLAGS (FORTIFY,
# -Werror=format-security, -z relro -z now, --as-needed), S/B/D/WORKDIR, the
# standard paths. Twice: DISTRO_FEATURES sysvinit with both roles, and
# systemd with PACKAGECONFIG = "decoder dmabuf". Checks the installed file
# list, that nothing is stripped (Yocto's already-stripped QA), that LDFLAGS
# were used (BIND_NOW), and that the roles and DMABUF follow PACKAGECONFIG.
# The compiler is the host's gcc with qemux86-64's tune flags: the point is
# the recipe and the Makefile under bitbake's variables, not the target.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
repo=$PWD
bb=contrib/yocto/recipes-multimedia/vhost-user-video/vhost-user-video_git.bb
w=$repo/build/yocto
rm -rf "$w"
mkdir -p "$w/recipe-sysroot/usr"
# the target sysroot, here the host's own libc and uapi headers
ln -s /usr/include "$w/recipe-sysroot/usr/include"
ln -s /usr/lib "$w/recipe-sysroot/usr/lib"
ln -s /usr/lib "$w/recipe-sysroot/lib"
[ -e /lib64 ] && ln -s /lib64 "$w/recipe-sysroot/lib64"

check "LIC_FILES_CHKSUM is the md5 of LICENSE" sh -c \
	"grep -q \"file://LICENSE;md5=\$(md5sum LICENSE | cut -d' ' -f1)\\\"\" $bb"
check "layer.conf: a collection with LAYERSERIES_COMPAT" sh -c \
	"grep -q '^BBFILE_COLLECTIONS += \"vhost-user-video\"' contrib/yocto/conf/layer.conf &&
	 grep -q '^LAYERSERIES_COMPAT_vhost-user-video = ' contrib/yocto/conf/layer.conf"

run_recipe() {	# $1: name, then VAR=value...
	local name=$1 wd=$w/$1
	shift
	mkdir -p "$wd/git" "$wd/image"
	# the source as do_unpack leaves it: the tracked files of this tree
	git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$wd/git"
	local pfx="-fmacro-prefix-map=$wd=/usr/src/debug/vhost-user-video/0.1.0-r0"
	/usr/bin/python3 tests/yocto-run.py $bb \
		"WORKDIR=$wd" "S=$wd/git" "B=$wd/git" "D=$wd/image" "PN=vhost-user-video" \
		"CC=gcc -m64 -march=core2 -mtune=core2 -msse3 -mfpmath=sse --sysroot=$w/recipe-sysroot" \
		"CFLAGS=-O2 -pipe -g -feliminate-unused-debug-types $pfx -fstack-protector-strong -O2 -D_FORTIFY_SOURCE=2 -Wformat -Wformat-security -Werror=format-security" \
		"LDFLAGS=$pfx -Wl,-O1 -Wl,--hash-style=gnu -Wl,--as-needed -fstack-protector-strong -Wl,-z,relro,-z,now" \
		"PARALLEL_MAKE=-j 2" "prefix=/usr" "bindir=/usr/bin" "mandir=/usr/share/man" \
		"sysconfdir=/etc" "systemd_system_unitdir=/usr/lib/systemd/system" "$@" >"$wd/log" 2>&1
}
files() { (cd "$1" && find . ! -type d | sort | tr '\n' ' '); }

echo "=== Yocto recipe: DISTRO_FEATURES=sysvinit, PACKAGECONFIG default"
check "do_configure, do_compile, do_install run" run_recipe sysv "DISTRO_FEATURES=acl ipv6 sysvinit"
tail -n 3 "$w/sysv/log" | sed 's/^/  | /'
img=$w/sysv/image
check "installed: the daemon, the man page, /etc/init.d/vhost-user-video, /etc/default" sh -c \
	"[ \"$(files "$img" 2>/dev/null)\" = './etc/default/vhost-user-video ./etc/init.d/vhost-user-video ./usr/bin/vhost-user-video ./usr/share/man/man8/vhost-user-video.8 ' ]"
echo "  files: $(files "$img" 2>/dev/null)"
check "not stripped (debug info kept for Yocto's own split)" sh -c \
	"readelf -S $img/usr/bin/vhost-user-video | grep -q '\\.debug_info' && file $img/usr/bin/vhost-user-video | grep -q 'not stripped'"
check "bitbake's CC and LDFLAGS were used (dynamic, BIND_NOW from -z now)" sh -c \
	"readelf -d $img/usr/bin/vhost-user-video | grep -q 'BIND_NOW' &&
	 grep -q -- '--sysroot=$w/recipe-sysroot' $w/sysv/log"
check "both roles (PACKAGECONFIG decoder encoder)" sh -c \
	"$img/usr/bin/vhost-user-video --print-capabilities | tr -d ' \n' | grep -q '\"features\":\\[\"decoder\",\"encoder\"\\]'"
check "the init script's paths are the recipe's" sh -c \
	"grep -q '^BIN=\"/usr/bin/\$DAEMON\"' $img/etc/init.d/vhost-user-video"
check ".config: CONFIG_VUV_DMABUF off (not in the default); no /dev/udmabuf in the binary" sh -c \
	"grep -q '^# CONFIG_VUV_DMABUF is not set' $w/sysv/git/.config &&
	 ! grep -qF /dev/udmabuf $img/usr/bin/vhost-user-video"

echo "=== Yocto recipe: DISTRO_FEATURES=systemd, PACKAGECONFIG = decoder dmabuf"
check "do_configure, do_compile, do_install run" run_recipe systemd \
	"DISTRO_FEATURES=acl ipv6 systemd" "PACKAGECONFIG=decoder dmabuf"
img=$w/systemd/image
check "installed: the daemon, the man page, the three units, /etc/default" sh -c \
	"[ \"$(files "$img" 2>/dev/null)\" = './etc/default/vhost-user-video ./usr/bin/vhost-user-video ./usr/lib/systemd/system/vhost-user-video.service ./usr/lib/systemd/system/vhost-user-video.socket ./usr/lib/systemd/system/vhost-user-video@.service ./usr/share/man/man8/vhost-user-video.8 ' ]"
echo "  files: $(files "$img" 2>/dev/null)"
check "the units run /usr/bin/vhost-user-video" sh -c \
	"grep -q '^ExecStart=/usr/bin/vhost-user-video ' $img/usr/lib/systemd/system/vhost-user-video.service"
check ".config: CONFIG_VUV_ENCODER off; the binary serves only the decoder" sh -c \
	"grep -q '^# CONFIG_VUV_ENCODER is not set' $w/systemd/git/.config &&
	 $img/usr/bin/vhost-user-video --print-capabilities | tr -d ' \n' | grep -q '\"features\":\\[\"decoder\"\\]'"
check ".config: CONFIG_VUV_DMABUF=y (PACKAGECONFIG dmabuf); /dev/udmabuf in the binary" sh -c \
	"grep -q '^CONFIG_VUV_DMABUF=y' $w/systemd/git/.config &&
	 grep -qF /dev/udmabuf $img/usr/bin/vhost-user-video"
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" = 0 ]
