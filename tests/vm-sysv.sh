#!/bin/bash
# The SysV init script, contrib/init/S50vhost-user-video, as a BusyBox system
# runs it: run inside the test VM (real vicodec), with BusyBox's
# start-stop-daemon (Debian's busybox-static) first in PATH. Installed with
# `make install-sysv` into a scratch root; the defaults file points the script
# at this tree's daemon. start, decode through it, restart, decode, stop, and
# check the process, pid file and socket are gone.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
: "${VICODEC_DEC:?not in the test VM (VICODEC_DEC unset)}"

w=/tmp/vuv-sysv
rm -rf $w
mkdir -p $w/bin $w/root
ln -s /bin/busybox $w/bin/start-stop-daemon
export PATH=$w/bin:$PATH
make --no-print-directory -s DESTDIR=$w/root SYSCONFDIR=$w/etc INITDIR=/init.d BINDIR=$PWD \
	install-sysv >/dev/null
S=$w/root/init.d/S50vhost-user-video
conf=$w/root$w/etc/default/vhost-user-video
sock=$w/run/video.sock
# the installed defaults, pointed at our scratch paths and the vicodec decoder
sed -i -e "s|^VHOST_USER_VIDEO_DEVICE=.*|VHOST_USER_VIDEO_DEVICE=\"$VICODEC_DEC\"|" \
	-e "s|^VHOST_USER_VIDEO_SOCKET=.*|VHOST_USER_VIDEO_SOCKET=\"$sock\"|" \
	-e "s|^VHOST_USER_VIDEO_LOG=.*|VHOST_USER_VIDEO_LOG=\"$w/daemon.log\"|" \
	-e "s|^VHOST_USER_VIDEO_OPTS=.*|VHOST_USER_VIDEO_OPTS=\"-v\"|" "$conf"
# the script reads @SYSCONFDIR@/default: here $w/etc, which is under DESTDIR
mkdir -p $w/etc/default
cp "$conf" $w/etc/default/vhost-user-video

# a clip of our own, encoded by vicodec directly
build/tests/vuvideo-front gen 320 240 8 $w/raw.yu12
v4l2-ctl -d "$VICODEC_ENC" --set-fmt-video-out=width=320,height=240,pixelformat=YU12 \
	--set-selection-output=target=crop,width=320,height=240 \
	--stream-out-mmap --stream-mmap --stream-from $w/raw.yu12 --stream-to $w/clip.fwht >/dev/null 2>&1
v4l2-ctl -d "$VICODEC_DEC" --stream-out-mmap --stream-mmap --stream-from $w/clip.fwht \
	--stream-to $w/direct.yuv >/dev/null 2>&1

pid_of() { cat /var/run/vhost-user-video.pid; }
decode() {
	rm -f $w/out.yuv
	build/tests/vuvideo-front --socket $sock decode $w/clip.fwht $w/out.yuv && cmp $w/direct.yuv $w/out.yuv
}
check "the script uses BusyBox start-stop-daemon" sh -c \
	"start-stop-daemon --help 2>&1 | grep -q BusyBox"
check "start: OK, socket there, pid file names a running vhost-user-video" sh -c \
	"$S start | grep -q OK && [ -S $sock ] && grep -q vhost-user-video /proc/\$(cat /var/run/vhost-user-video.pid)/cmdline"
check "the socket is owner-only (0600)" sh -c "[ \$(stat -c %a $sock) = 600 ]"
check "status: running" sh -c "$S status | grep -q 'is running'"
check "start again: already running, still one daemon" sh -c \
	"$S start | grep -q 'already running' && [ \$(pidof vhost-user-video | wc -w) = 1 ]"
check "decode through the daemon started by the script" decode
first=$(pid_of || echo none)
check "restart: a new daemon" sh -c "$S restart | grep -q OK && [ \"\$(cat /var/run/vhost-user-video.pid)\" != $first ]"
check "the first daemon is gone after restart" sh -c "[ ! -e /proc/$first ]"
check "decode after restart" decode
check "reload (= restart) works" sh -c "$S reload | grep -q OK && [ -S $sock ]"
last=$(pid_of || echo none)
check "stop: OK" sh -c "$S stop | grep -q OK"
check "after stop: process, pid file and socket gone" sh -c \
	"[ ! -e /proc/$last ] && [ ! -e /var/run/vhost-user-video.pid ] && [ ! -e $sock ]"
check "status after stop: not running (exit 3)" sh -c "$S status >/dev/null; [ \$? = 3 ]"
check "stop again: not running, exit 0" sh -c "$S stop | grep -q 'not running'"
check "the log kept the daemon's lines (start, frontend, stopping)" sh -c \
	"grep -q 'serving a decoder' $w/daemon.log && grep -q 'frontend connected' $w/daemon.log &&
	 grep -q stopping $w/daemon.log"
# a bad device: start reports FAIL and leaves nothing running
sed -i "s|^VHOST_USER_VIDEO_DEVICE=.*|VHOST_USER_VIDEO_DEVICE=\"/dev/null\"|" $w/etc/default/vhost-user-video
check "start with a bad device: FAIL, nothing left running" sh -c \
	"! $S start >$w/bad.out; grep -q FAIL $w/bad.out && ! pidof vhost-user-video"
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" = 0 ]
