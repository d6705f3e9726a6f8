#!/bin/bash
# Real-codec test VM rig: boots Debian's 6.1 kernel under QEMU with the
# vicodec driver (built out of tree) and runs a host command inside it, with
# the host root file system mounted read-only over 9p.
#
#   tests/vm/vm.sh setup
#   tests/vm/vm.sh run [--multiplanar] [--share DIR] [--timeout SECONDS]
#                      [--mem MB] -- CMD [ARGS...]
#   tests/vm/vm.sh check
#   tests/vm/vm.sh kver      (prints the guest kernel version and cache directory)
#
# VUV_VM_KERNEL=sid boots Debian sid's kernel instead (it has CONFIG_UDMABUF,
# for the DMABUF tests), fetched with a scratch apt configuration that leaves
# the machine's own apt setup alone; vicodec is built for it out of tree with
# the host's gcc. See doc/dmabuf.md.
#
# See README.md, "The test VM" (commands, cache, timings).
set -euo pipefail

# Bump whenever the cache layout, the guest /init or the module build changes.
readonly FORMAT=3
SELF_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=tests/vm/vmlib.sh
. "$SELF_DIR/vmlib.sh"
SELF="$SELF_DIR/$(basename -- "${BASH_SOURCE[0]}")"
readonly SELF_DIR SELF

CACHE_ROOT=${VUV_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vhost-user-video}
readonly CACHE_ROOT
FLAVOUR=${VUV_VM_KERNEL:-bookworm}
[[ $FLAVOUR == bookworm || $FLAVOUR == sid ]] || {
	echo "vm.sh: error: VUV_VM_KERNEL=$FLAVOUR (want bookworm or sid)" >&2
	exit 1
}
readonly FLAVOUR
SID_DIR=$CACHE_ROOT/vm/sid-apt
readonly SID_DIR

# Roots of the guest module set; their dependencies are resolved with
# modinfo and loaded first.  The out-of-tree v4l2-mem2mem and vicodec come last.
readonly IMAGE_MODULES="virtio_pci 9pnet_virtio 9p mc videodev videobuf2-common videobuf2-v4l2 videobuf2-memops videobuf2-vmalloc"
# sid's kernel has virtio_pci built in.
readonly SID_IMAGE_MODULES="9pnet_virtio 9p mc videodev videobuf2-common videobuf2-v4l2 videobuf2-memops videobuf2-vmalloc"

readonly GUEST_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() {
	echo "vm.sh: error: $*" >&2
	exit "${DIE_STATUS:-1}"
}

note() {
	echo "vm.sh: $*" >&2
}

usage() {
	cat <<'EOF'
usage: vm.sh setup
       vm.sh run [--multiplanar] [--share DIR] [--timeout SECONDS] [--mem MB] -- CMD [ARGS...]
       vm.sh check
EOF
}

# Runs "$@" with a time limit, logging its output to $LOG_FILE; on failure
# shows the end of the log and dies.
step() {
	local limit=$1 what=$2
	shift 2
	if ! timeout -k 10 "$limit" "$@" >>"$LOG_FILE" 2>&1; then
		tail -n 30 "$LOG_FILE" >&2 || true
		die "$what failed (full log: $LOG_FILE)"
	fi
}

# --- kernel version -------------------------------------------------------

resolve_kver_once() {
	timeout 60 apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: linux-image-\(6\.1\.[0-9][0-9]*-[0-9][0-9]*-amd64\)$/\1/p' |
		head -n 1
}

# --- Debian sid, through a scratch apt configuration ------------------------

# apt-get/apt-cache options for sid's package lists in $SID_DIR only; the
# mirror is the one the machine's own sources use for Debian.
SID_APT=(-o Dir::Etc::SourceList="$SID_DIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$SID_DIR/lists" -o Dir::Cache="$SID_DIR/cache"
	-o Dir::State::status=/dev/null -o APT::Architectures=amd64 -o APT::Architecture=amd64
	-o APT::Sandbox::User=root -o Debug::NoLocking=1)
readonly SID_APT

sid_update() {
	local uri
	# shellcheck disable=SC2016 # apt's own $(FIELD) syntax
	uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null |
		awk '$2 !~ /security/ { print $1; exit }')
	[[ -n $uri ]] || die "no Debian mirror in the machine's apt sources"
	mkdir -p "$SID_DIR/lists/partial" "$SID_DIR/cache/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri sid main" \
		>"$SID_DIR/sources.list"
	note "updating the scratch package lists for Debian sid ($SID_DIR)"
	timeout -k 10 600 apt-get "${SID_APT[@]}" -q update >&2 || die "apt-get update (sid) failed"
}

sid_lists_key() {
	{ stat -c '%n %s %Y' "$SID_DIR"/lists/*Packages* 2>/dev/null || true; } | cksum | cut -d' ' -f1
}

# The packages among the dependencies of $1 whose names match $2 (sed BRE).
sid_dep() {
	timeout 120 apt-cache "${SID_APT[@]}" depends "$1" 2>/dev/null |
		sed -n "s/^ *Depends: \($2\)\$/\1/p"
}

sid_resolve_kver() {
	local memo=$CACHE_ROOT/vm/sid-kver.memo lists k v
	compgen -G "$SID_DIR/lists/*Packages*" >/dev/null || sid_update
	lists=$(sid_lists_key)
	if [[ -f $memo ]] && read -r k v <"$memo" && [[ $k == "$lists" ]]; then
		KVER=$v
		return 0
	fi
	KVER=$(sid_dep linux-image-amd64 'linux-image-[0-9][^ ]*-amd64' | head -n 1)
	KVER=${KVER#linux-image-}
	[[ -n $KVER ]] || die "cannot resolve sid's kernel from 'apt-cache depends linux-image-amd64' (set VUV_KVER)"
	{ echo "$lists $KVER" >"$memo.$$" && mv -f "$memo.$$" "$memo"; } || rm -f "$memo.$$"
}

sid_version() {
	timeout 120 apt-cache "${SID_APT[@]}" show --no-all-versions "$1" 2>/dev/null |
		sed -n 's/^Version: //p' | head -n 1
}

KVER=
resolve_kver() {
	[[ -z $KVER ]] || return 0
	if [[ $FLAVOUR == sid ]]; then
		mkdir -p "$CACHE_ROOT/vm"
		if [[ -n ${VUV_KVER:-} ]]; then
			KVER=$VUV_KVER
		else
			sid_resolve_kver
		fi
		[[ $KVER =~ ^[0-9]+\.[0-9]+\.[0-9]+[^/]*-amd64$ ]] || die "unexpected kernel version '$KVER'"
		CACHE_DIR=$CACHE_ROOT/vm/$KVER
		return 0
	fi
	if [[ -n ${VUV_KVER:-} ]]; then
		KVER=$VUV_KVER
	else
		# apt-cache takes ~1 s here: remember its answer until the package
		# lists change.
		local lists memo=$CACHE_ROOT/vm/kver.memo
		lists=$(apt_lists_key)
		if [[ -f $memo ]] && read -r k v <"$memo" && [[ $k == "$lists" ]]; then
			KVER=$v
		else
			KVER=$(resolve_kver_once || true)
			if [[ -z $KVER && $(id -u) -eq 0 ]]; then
				apt_update
				KVER=$(resolve_kver_once || true)
				lists=$(apt_lists_key)
			fi
			if [[ -n $KVER ]] && mkdir -p "$CACHE_ROOT/vm" 2>/dev/null; then
				if ! { echo "$lists $KVER" >"$memo.$$" && mv -f "$memo.$$" "$memo"; }; then
					rm -f "$memo.$$"
				fi
			fi
		fi
		[[ -n $KVER ]] || die "cannot resolve the kernel ABI from 'apt-cache depends linux-image-amd64' (run apt-get update, or set VUV_KVER=6.1.0-NN-amd64)"
	fi
	[[ $KVER =~ ^6\.1\.[0-9]+-[0-9]+-amd64$ ]] || die "unexpected kernel version '$KVER' (want 6.1.0-NN-amd64)"
	CACHE_DIR=$CACHE_ROOT/vm/$KVER
}

# --- packages ---------------------------------------------------------------

host_packages() {
	if [[ $FLAVOUR == sid ]]; then
		# no linux-source/headers: they come from sid; the rest builds
		# modpost and objtool for the sid kernel with the host's gcc
		echo qemu-system-x86 busybox-static cpio v4l-utils xz-utils make gcc kmod dpkg apt \
			coreutils util-linux bison flex bc libelf-dev libssl-dev zstd
		return
	fi
	echo qemu-system-x86 busybox-static cpio v4l-utils linux-source-6.1 \
		"linux-headers-$KVER" xz-utils make gcc kmod dpkg apt coreutils util-linux
}

install_packages() {
	local missing p
	missing=$(missing_packages | tr '\n' ' ')
	missing=${missing% }
	[[ -n $missing ]] || return 0
	local cmd="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing"
	if [[ $(id -u) -ne 0 ]]; then
		echo "vm.sh: error: missing Debian packages; as root, run:" >&2
		echo "  apt-get update && $cmd" >&2
		exit 1
	fi
	for p in $missing; do
		if ! apt-cache show "$p" >/dev/null 2>&1; then
			apt_update
			break
		fi
	done
	note "installing: $missing"
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	if ! DEBIAN_FRONTEND=noninteractive timeout -k 10 900 apt-get install -y -q \
		--no-install-recommends -o DPkg::Lock::Timeout=120 \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		$missing </dev/null >&2; then
		[[ $apt_updated -eq 0 ]] || die "apt-get install failed"
		apt_update
		# shellcheck disable=SC2086
		DEBIAN_FRONTEND=noninteractive timeout -k 10 900 apt-get install -y -q \
			--no-install-recommends -o DPkg::Lock::Timeout=120 \
			-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
			$missing </dev/null >&2 || die "apt-get install failed"
	fi
}

# --- cache -----------------------------------------------------------------

# Everything the cached artefacts depend on, cheap to compute.
cache_key() {
	local hdr src
	if [[ $FLAVOUR == sid ]]; then
		# the versions in the scratch lists; the memo spares apt-cache
		local memo=$CACHE_ROOT/vm/sid-key.memo lists k v
		lists=$(sid_lists_key)
		if [[ -f $memo ]] && read -r k v <"$memo" && [[ $k == "$lists-$KVER" ]]; then
			hdr=$v
		else
			hdr=$(sid_version "linux-image-$KVER")
			{ echo "$lists-$KVER $hdr" >"$memo.$$" && mv -f "$memo.$$" "$memo"; } || rm -f "$memo.$$"
		fi
		# (sidformat: bump when only the sid build changes)
		printf 'format=%s sidformat=2 kver=%s sid=%s init=%s\n' "$FORMAT" "$KVER" "$hdr" \
			"$(guest_init | cksum | cut -d' ' -f1)"
		return
	fi
	hdr=$(dpkg-query -W -f='${Version}' "linux-headers-$KVER" 2>/dev/null || echo none)
	src=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || echo none)
	printf 'format=%s kver=%s headers=%s source=%s init=%s\n' "$FORMAT" "$KVER" \
		"$hdr" "$src" "$(guest_init | cksum | cut -d' ' -f1)"
}

cache_ok() {
	[[ -f $CACHE_DIR/stamp && -f $CACHE_DIR/vmlinuz && -f $CACHE_DIR/initrd.img ]]
}

# --- guest /init --------------------------------------------------------------

# The initramfs /init (busybox sh).  Per-run settings come from the kernel
# command line (simple tokens) and from files in the run directory.
guest_init() {
	cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stty -onlcr -opost </dev/console >/dev/null 2>&1

run= mplane=0 debug=0
for w in $(cat /proc/cmdline); do
	case $w in
	vuv.run=*) run=${w#vuv.run=} ;;
	vuv.mplane=*) mplane=${w#vuv.mplane=} ;;
	vuv.debug=*) debug=${w#vuv.debug=} ;;
	esac
done
[ "$debug" = 1 ] || echo 1 >/proc/sys/kernel/printk

halt() {
	sync
	# Leave through QEMU's isa-debug-exit port: unlike poweroff, it prints
	# nothing on the console.
	printf '\001' | dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc 2>/dev/null
	poweroff -f
	sleep 10
}
fail() {
	echo "vm-init: error: $*" >&2
	[ -d "/share/$run" ] && echo "$*" >"/share/$run/init-error"
	halt
}

while read -r m; do
	p=
	[ "$m" = vicodec.ko ] && [ "$mplane" = 1 ] && p=multiplanar=1
	insmod "/lib/modules/$m" $p || fail "insmod $m failed"
done </lib/modules/order

mkdir -p /share /newroot
o=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$o,cache=none" vmshare /share || fail "cannot mount the share"
[ -n "$run" ] && [ -f "/share/$run/cmd.sh" ] || fail "no run directory '$run' in the share"
R=/newroot
mount -t 9p -o "ro,$o,cache=loose" hostroot $R || fail "cannot mount the host root"
# The host's /tmp and /run stay reachable under /hostfs: the guest gets fresh
# tmpfs there, but the working directory may be a clone under /tmp.
mkdir -p /hostfs/tmp /hostfs/run
mount --bind $R/tmp /hostfs/tmp && mount --bind $R/run /hostfs/run ||
	fail "cannot keep the host's /tmp and /run"
mount -t proc proc $R/proc &&
	mount -t sysfs sysfs $R/sys &&
	mount -t devtmpfs devtmpfs $R/dev &&
	mkdir -p $R/dev/pts $R/dev/shm &&
	mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts &&
	mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm &&
	mount -t tmpfs -o mode=1777 tmpfs $R/tmp &&
	mount -t tmpfs -o mode=755 tmpfs $R/run || fail "cannot mount the guest file systems"
cwd=$(cat "/share/$run/cwd")
case $cwd in
/tmp/* | /run/*)
	# a working directory under the fresh tmpfs: show the host's, read-only
	mkdir -p "$R$cwd" && mount --bind "/hostfs$cwd" "$R$cwd" ||
		fail "cannot show the working directory $cwd"
	# and the fixtures beside it (../shared, as CI lays them out): a
	# directory is shown the same way, a symlink is made again (its target
	# is resolved in the guest's root, the host's)
	sib=${cwd%/*}/shared
	if [ -L "/hostfs$sib" ]; then
		ln -s "$(readlink "/hostfs$sib")" "$R$sib" || fail "cannot show $sib"
	elif [ -d "/hostfs$sib" ]; then
		mkdir -p "$R$sib" && mount --bind "/hostfs$sib" "$R$sib" || fail "cannot show $sib"
	fi
	;;
esac
share=$(cat "/share/$run/share")
# (a share under /tmp or /run needs its mount point made in the tmpfs)
[ -d "$R$share" ] || mkdir -p "$R$share"
mount --bind /share "$R$share" || fail "cannot mount the share at $share"

dec= enc=
for d in /sys/class/video4linux/video*; do
	case $(cat "$d/name") in
	stateful-decoder) dec=/dev/${d##*/} ;;
	stateful-encoder) enc=/dev/${d##*/} ;;
	esac
done
[ -n "$dec" ] && [ -n "$enc" ] || fail "vicodec nodes not found"

chroot $R /usr/bin/env -i PATH=__GUEST_PATH__ HOME=/tmp TERM=dumb LANG=C.UTF-8 \
	VM_SHARE="$share" VUV_IN_VM=1 VICODEC_DEC="$dec" VICODEC_ENC="$enc" \
	VICODEC_MPLANE="$mplane" /bin/sh "$share/$run/cmd.sh" </dev/null
rc=$?
[ "$debug" = 1 ] && dmesg >"/share/$run/dmesg"
echo "$rc" >"/share/$run/status.tmp" && mv "/share/$run/status.tmp" "/share/$run/status"
halt
EOF
}

# --- setup -----------------------------------------------------------------

TMP_BUILD=
TAR_PID=
cleanup_build() {
	[[ -z $TAR_PID ]] || kill "$TAR_PID" 2>/dev/null || true
	[[ -z $TAR_PID ]] || wait "$TAR_PID" 2>/dev/null || true
	[[ -z $TMP_BUILD ]] || rm -rf "$TMP_BUILD"
}

# gcc as the sid kernel's build expects it: the host's gcc lacks a flag its
# configuration (made with a newer gcc) adds; -falign-functions is what the
# kernel itself uses without it.
sid_cc_wrap() {
	cat <<'EOF'
#!/bin/bash
args=()
for a in "$@"; do
	case $a in
	-fmin-function-alignment=*) args+=("-falign-functions=${a#*=}") ;;
	*) args+=("$a") ;;
	esac
done
exec gcc "${args[@]}"
EOF
}

# The sid kernel into $1/out/vmlinuz, its modules and the out-of-tree
# v4l2-mem2mem and vicodec into $1/ko. Its packages come through the scratch
# lists; its kbuild binaries need a newer glibc than the host's, so modpost
# and objtool are rebuilt from its source with the host's gcc.
sid_kernel() {
	local w=$1 hdr mm src pkgs f
	hdr=linux-headers-$KVER
	mm=${KVER%%[-+]*}
	src=linux-source-${mm%.*}
	pkgs="linux-image-$KVER $(sid_dep "linux-image-$KVER" 'linux-\(binary\|modules\)-[^ ]*' | tr '\n' ' ')"
	pkgs+=" $hdr $(sid_dep "$hdr" 'linux-\(headers-[^ ]*-common\|kbuild-[^ ]*\)' | tr '\n' ' ') $src"
	note "downloading from sid: $pkgs"
	# shellcheck disable=SC2086 # the package list splits on purpose
	(cd "$w/deb" && step 900 "apt-get download (sid)" apt-get "${SID_APT[@]}" -q download $pkgs)
	note "building v4l2-mem2mem.ko and vicodec.ko for $KVER"
	# shellcheck disable=SC2016 # expanded by the inner shell
	step 600 "unpacking $src" bash -o pipefail -c 'dpkg-deb --fsys-tarfile "$1" |
		tar -xO --wildcards "./usr/src/linux-source-*.tar.xz" |
		tar -C "$2" --strip-components=1 -xJ' unpack "$(echo "$w"/deb/"$src"_*.deb)" "$w/src" &
	TAR_PID=$!
	for f in "$w"/deb/linux-image-*.deb "$w"/deb/linux-binary-*.deb "$w"/deb/linux-modules-*.deb; do
		[[ -f $f ]] || continue
		dpkg-deb -x "$f" "$w/img"
	done
	[[ -f $w/img/usr/lib/modules/$KVER/vmlinuz ]] || die "no vmlinuz in sid's linux-image-$KVER"
	cp "$w/img/usr/lib/modules/$KVER/vmlinuz" "$w/out/vmlinuz"
	find "$w/img/usr/lib/modules/$KVER/kernel" \( -path '*/9p/*' -o -path '*/netfs/*' \
		-o -path '*/media/mc/*' -o -path '*/media/v4l2-core/*' -o -path '*/videobuf2/*' \) \
		-name '*.ko*' | while read -r f; do
		case $f in
		*.xz) xz -dc "$f" >"$w/ko/$(basename "$f" .xz)" ;;
		*.zst) zstd -qdc "$f" >"$w/ko/$(basename "$f" .zst)" ;;
		*) cp "$f" "$w/ko/" ;;
		esac
	done
	rm -rf "$w/img"
	local kh=$w/kh h kbt
	mkdir -p "$kh"
	for f in "$w"/deb/linux-headers-*.deb "$w"/deb/linux-kbuild-*.deb; do
		dpkg-deb -x "$f" "$kh"
	done
	h=$kh/usr/src/$hdr
	[[ -f $h/Makefile && -f $h/.config ]] || die "no $hdr in sid's packages"
	sed -i "s|/usr/src/|$kh/usr/src/|g" "$h/Makefile"
	if ! wait "$TAR_PID"; then
		TAR_PID=
		die "unpacking $src failed"
	fi
	TAR_PID=
	mkdir -p "$w/tb"
	cp "$h/.config" "$w/tb/.config"
	step 300 "configuring $src" make -C "$w/src" O="$w/tb" ARCH=x86 CC=gcc HOSTCC=gcc olddefconfig
	step 900 "building modpost and objtool" make -C "$w/src" O="$w/tb" ARCH=x86 CC=gcc \
		HOSTCC=gcc -j"$(nproc)" modules_prepare
	kbt=$(readlink -f "$h/scripts/..")
	cp "$w/tb/scripts/mod/modpost" "$kbt/scripts/mod/modpost.real-lsb-64"
	cp "$w/tb/tools/objtool/objtool" "$kbt/tools/objtool/objtool.real-x86"
	sid_cc_wrap >"$w/cc-wrap"
	chmod 755 "$w/cc-wrap"
	local kb=$w/kbuild
	mkdir -p "$kb"
	cp "$w/src/drivers/media/v4l2-core/v4l2-mem2mem.c" "$w"/src/drivers/media/test-drivers/vicodec/*.[ch] "$kb/"
	printf '%s\n' 'obj-m := v4l2-mem2mem.o vicodec.o' \
		'vicodec-y := vicodec-core.o codec-fwht.o codec-v4l2-fwht.o' >"$kb/Kbuild"
	# (no pahole on the host: no BTF for these two modules)
	step 600 "building the modules" make -C "$h" M="$kb" CC="$w/cc-wrap" \
		CONFIG_DEBUG_INFO_BTF_MODULES= -j"$(nproc)" modules
	cp "$kb/v4l2-mem2mem.ko" "$kb/vicodec.ko" "$w/ko/"
}

do_setup() {
	resolve_kver
	install_packages
	local key
	key=$(cache_key)
	if cache_ok && [[ $(cat "$CACHE_DIR/stamp") == "$key" ]]; then
		note "cache up to date: $CACHE_DIR"
		return 0
	fi
	if [[ $FLAVOUR == sid ]]; then
		# sid moves: build from fresh lists (old packages leave its mirror)
		sid_update
		KVER=
		resolve_kver
		key=$(cache_key)
		if cache_ok && [[ $(cat "$CACHE_DIR/stamp") == "$key" ]]; then
			note "cache up to date: $CACHE_DIR"
			return 0
		fi
	fi
	mkdir -p "$CACHE_ROOT/vm"
	exec 9>"$CACHE_ROOT/vm/.lock"
	flock -w 1200 9 || die "timed out waiting for the cache lock"
	if cache_ok && [[ $(cat "$CACHE_DIR/stamp") == "$key" ]]; then
		exec 9>&-
		note "cache up to date: $CACHE_DIR"
		return 0
	fi
	local t0=$SECONDS
	note "building the VM cache for $KVER in $CACHE_DIR"
	TMP_BUILD=$(mktemp -d "$CACHE_ROOT/vm/.build.XXXXXX")
	trap 'cleanup_build' EXIT
	local w=$TMP_BUILD
	LOG_FILE=$w/setup.log
	: >"$LOG_FILE"
	mkdir -p "$w/out" "$w/deb" "$w/img" "$w/src" "$w/ko" "$w/initrd/bin" \
		"$w/initrd/lib/modules" "$w/initrd/proc" "$w/initrd/sys" "$w/initrd/dev"

	if [[ $FLAVOUR == sid ]]; then
		sid_kernel "$w"
	else
		# The 138 MB source tarball takes longest to unpack: start it first.
		note "building v4l2-mem2mem.ko and vicodec.ko"
		timeout -k 10 600 tar -C "$w/src" --strip-components=1 \
			-xJf /usr/src/linux-source-6.1.tar.xz --wildcards \
			'linux-source-6.1/drivers/media/v4l2-core/v4l2-mem2mem.c' \
			'linux-source-6.1/drivers/media/test-drivers/vicodec/*' >"$w/tar.log" 2>&1 &
		TAR_PID=$!

		# Guest kernel: the image package matching the installed headers.
		local hver
		hver=$(dpkg-query -W -f='${Version}' "linux-headers-$KVER")
		# apt drops privileges to _apt for downloads; let it write there.
		chmod 755 "$w" "$w/deb"
		if [[ $(id -u) -eq 0 ]] && getent passwd _apt >/dev/null; then
			chown _apt "$w/deb" 2>/dev/null || true
		fi
		if ! (cd "$w/deb" && timeout -k 10 600 apt-get download -q "linux-image-$KVER=$hver") >>"$LOG_FILE" 2>&1; then
			note "linux-image-$KVER=$hver not downloadable, trying the candidate version"
			(cd "$w/deb" && step 600 "apt-get download linux-image-$KVER" apt-get download -q "linux-image-$KVER")
		fi
		# Unpack (not install) only the kernel and the module directories needed.
		local deb
		deb=$(echo "$w"/deb/linux-image-*.deb)
		[[ -f $deb ]] || die "no linux-image-$KVER package downloaded"
		# shellcheck disable=SC2016 # expanded by the inner shell
		step 300 "unpacking $deb" bash -o pipefail -c 'dpkg-deb --fsys-tarfile "$1" |
			tar -C "$2" -x --wildcards "./boot/vmlinuz-*" \
				"./lib/modules/*/kernel/drivers/virtio/*" "./lib/modules/*/kernel/net/9p/*" \
				"./lib/modules/*/kernel/fs/9p/*" "./lib/modules/*/kernel/fs/netfs/*" \
				"./lib/modules/*/kernel/fs/fscache/*" "./lib/modules/*/kernel/drivers/media/mc/*" \
				"./lib/modules/*/kernel/drivers/media/v4l2-core/*" \
				"./lib/modules/*/kernel/drivers/media/common/videobuf2/*"' \
			unpack "$deb" "$w/img"
		cp "$w/img/boot/vmlinuz-$KVER" "$w/out/vmlinuz"
		# Flatten the image modules into one directory, decompressed.
		find "$w/img/lib/modules/$KVER/kernel" \
			\( -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' \) |
			while read -r f; do
				case $f in
				*.xz) xz -dc "$f" >"$w/ko/$(basename "$f" .xz)" ;;
				*.gz) gzip -dc "$f" >"$w/ko/$(basename "$f" .gz)" ;;
				*.zst) zstd -qdc "$f" >"$w/ko/$(basename "$f" .zst)" ;;
				*) cp "$f" "$w/ko/" ;;
				esac
			done

		# v4l2-mem2mem and vicodec, built out of tree against Debian's headers.
		if ! wait "$TAR_PID"; then
			cat "$w/tar.log" >&2
			die "extracting /usr/src/linux-source-6.1.tar.xz failed"
		fi
		TAR_PID=
		local kb=$w/kbuild
		mkdir -p "$kb"
		cp "$w/src/drivers/media/v4l2-core/v4l2-mem2mem.c" "$w"/src/drivers/media/test-drivers/vicodec/*.[ch] "$kb/"
		printf '%s\n' 'obj-m := v4l2-mem2mem.o vicodec.o' \
			'vicodec-y := vicodec-core.o codec-fwht.o codec-v4l2-fwht.o' >"$kb/Kbuild"
		step 600 "building the modules" make -C "/usr/src/linux-headers-$KVER" M="$kb" \
			-j"$(nproc)" modules
		cp "$kb/v4l2-mem2mem.ko" "$kb/vicodec.ko" "$w/ko/"
	fi
	# Under TCG, decompressing the bzImage costs ~3.5 s per boot: keep the
	# uncompressed ELF vmlinux too (QEMU boots it through its PVH entry).
	local off
	off=$(LC_ALL=C grep -obUa $'\xfd7zXZ\x00' "$w/out/vmlinuz" | head -n 1 | cut -d: -f1 || true)
	# (tail dies of SIGPIPE when xz stops at the end of the stream)
	if [[ -n $off ]] && { tail -c +"$((off + 1))" "$w/out/vmlinuz" || true; } |
		xz -dc --single-stream >"$w/out/vmlinux" 2>/dev/null &&
		[[ $(head -c 4 "$w/out/vmlinux" | od -An -c | tr -d ' ') == '177ELF' ]]; then
		:
	elif off=$(LC_ALL=C grep -obUa $'\x28\xb5\x2f\xfd' "$w/out/vmlinuz" | head -n 1 | cut -d: -f1 || true) &&
		[[ -n $off ]] && { { tail -c +"$((off + 1))" "$w/out/vmlinuz" || true; } |
		zstd -qdc >"$w/out/vmlinux" 2>/dev/null || true; } &&
		[[ $(head -c 4 "$w/out/vmlinux" | od -An -c | tr -d ' ') == '177ELF' ]]; then
		:	# (sid's kernel is zstd: zstd stops with an error at the data after it)
	else
		note "cannot extract vmlinux from vmlinuz; booting the bzImage (slower)"
		rm -f "$w/out/vmlinux"
	fi
	local m
	local -a wanted=()
	for m in $([[ $FLAVOUR == sid ]] && echo "$SID_IMAGE_MODULES" || echo "$IMAGE_MODULES"); do
		wanted+=("$m")
	done

	# The module load order, dependencies first.
	local n=0 order
	order=$(resolve_modules "$w/ko" "${wanted[@]}" v4l2-mem2mem vicodec)
	for m in $order; do
		cp "$w/ko/$m" "$w/initrd/lib/modules/$m"
		echo "$m" >>"$w/initrd/lib/modules/order"
		n=$((n + 1))
	done
	[[ $(tail -n 1 "$w/initrd/lib/modules/order") == vicodec.ko ]] ||
		die "internal error: vicodec.ko is not the last module"

	# The initramfs.
	cp /bin/busybox "$w/initrd/bin/busybox"
	guest_init | sed "s|__GUEST_PATH__|$GUEST_PATH|" >"$w/initrd/init"
	chmod 755 "$w/initrd/init"
	(cd "$w/initrd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) |
		gzip -1 >"$w/out/initrd.img"
	tr '\n' ' ' <"$w/initrd/lib/modules/order" >"$w/out/modules"
	echo "$key" >"$w/out/stamp"

	# Move into place atomically.
	local old=
	if [[ -e $CACHE_DIR ]]; then
		old=$(mktemp -d "$CACHE_ROOT/vm/.old.XXXXXX")
		mv "$CACHE_DIR" "$old/"
	fi
	mv "$w/out" "$CACHE_DIR"
	[[ -z $old ]] || rm -rf "$old"
	rm -rf "$TMP_BUILD"
	TMP_BUILD=
	trap - EXIT
	exec 9>&-
	note "cache ready in $((SECONDS - t0)) s: $CACHE_DIR ($n modules)"
}

# --- run -------------------------------------------------------------------

do_run() {
	local mplane=0 share='' limit=900 mem=1024
	while [[ $# -gt 0 ]]; do
		case $1 in
		--multiplanar) mplane=1 ;;
		--share) share=${2:?--share needs a directory}; shift ;;
		--share=*) share=${1#--share=} ;;
		--timeout) limit=${2:?--timeout needs a value}; shift ;;
		--timeout=*) limit=${1#--timeout=} ;;
		--mem) mem=${2:?--mem needs a value}; shift ;;
		--mem=*) mem=${1#--mem=} ;;
		--) shift; break ;;
		*) usage >&2; die "unknown run option '$1'" ;;
		esac
		shift
	done
	[[ $# -gt 0 ]] || { usage >&2; die "run: no command given"; }
	[[ $limit =~ ^[0-9]+$ && $limit -gt 0 ]] || die "bad --timeout '$limit'"
	[[ $mem =~ ^[0-9]+$ && $mem -ge 256 ]] || die "bad --mem '$mem' (MB, at least 256)"

	DIE_STATUS=125
	resolve_kver
	# a cache built by another version of this script (its /init, its
	# format) or for other kernel packages is rebuilt, not reused
	cache_ok && [[ $(cat "$CACHE_DIR/stamp") == "$(cache_key)" ]] || do_setup
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (run: vm.sh setup)"

	share=${share:-$PWD/build/vm-share}
	mkdir -p -- "$share"
	share=$(cd -- "$share" && pwd -P)
	local rundir runname
	rundir=$(mktemp -d "$share/.vm-run.XXXXXX")
	runname=$(basename "$rundir")
	RUNDIR=$rundir
	trap '[[ ${VUV_VM_DEBUG:-0} == 1 ]] || rm -rf "$RUNDIR"' EXIT
	printf '%s' "$share" >"$rundir/share"
	printf '%s' "$PWD" >"$rundir/cwd"
	{
		echo '# generated by vm.sh run'
		local v
		while read -r v; do
			[[ $v == VUV_IN_VM ]] || echo "export $v=$(shquote "${!v}")"
		done < <(compgen -e | grep '^VUV_' || true)
		echo "cd -- $(shquote "$PWD") || exit 125"
		printf 'exec'
		local a
		for a in "$@"; do
			printf ' %s' "$(shquote "$a")"
		done
		echo
	} >"$rundir/cmd.sh"

	local -a accel=(-accel 'tcg,thread=multi' -cpu max)
	if [[ -e /sys/module/kvm_intel || -e /sys/module/kvm_amd ]] && [[ -w /dev/kvm ]]; then
		accel=(-accel kvm -cpu host)
	fi
	local append="console=ttyS0 panic=-1 quiet loglevel=1 vuv.run=$runname vuv.mplane=$mplane"
	[[ ${VUV_VM_DEBUG:-0} != 1 ]] || append="console=ttyS0 panic=-1 loglevel=7 vuv.run=$runname vuv.mplane=$mplane vuv.debug=1"

	local kernel=$CACHE_DIR/vmlinux
	[[ -f $kernel && ${VUV_VM_BZIMAGE:-0} != 1 ]] || kernel=$CACHE_DIR/vmlinuz
	local qrc=0
	timeout -k 10 "$limit" qemu-system-x86_64 -machine pc "${accel[@]}" -smp 2 -m "$mem" \
		-nodefaults -display none -monitor none -serial stdio -no-reboot \
		-device isa-debug-exit,iobase=0xf4,iosize=0x04 \
		-kernel "$kernel" -initrd "$CACHE_DIR/initrd.img" -append "$append" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
		-virtfs "local,path=${share//,/,,},mount_tag=vmshare,security_model=none,multidevs=remap" \
		</dev/null || qrc=$?

	if [[ -f $rundir/status ]]; then
		local st
		st=$(cat "$rundir/status")
		[[ $st =~ ^[0-9]+$ ]] || die "VM reported a bad status '$st'"
		return "$st"
	fi
	if [[ -f $rundir/init-error ]]; then
		die "VM setup failed: $(cat "$rundir/init-error")"
	elif [[ $qrc -eq 124 || $qrc -eq 137 ]]; then
		die "VM timed out after $limit s"
	else
		die "VM exited (qemu status $qrc) without reporting a command status (crash or kernel panic?; rerun with VUV_VM_DEBUG=1)"
	fi
}

# --- check -----------------------------------------------------------------

# Runs inside the guest: list the devices, encode a generated clip, decode it
# twice and compare.
guest_check() {
	[[ ${VUV_IN_VM:-} == 1 ]] || die "guest-check runs inside the VM only"
	local w=/tmp/vicodec-check frames=${VUV_CHECK_FRAMES:-30} f
	local width=640 height=480
	local fsize=$((width * height * 3 / 2))
	mkdir -p "$w"
	echo "== VICODEC_ENC=$VICODEC_ENC VICODEC_DEC=$VICODEC_DEC VICODEC_MPLANE=$VICODEC_MPLANE"
	v4l2-ctl --list-devices
	local caps
	caps=$(v4l2-ctl -d "$VICODEC_ENC" --info)
	if [[ $VICODEC_MPLANE == 1 ]]; then
		grep -q 'Video Memory-to-Memory Multiplanar' <<<"$caps" || die "encoder is not multiplanar"
	else
		grep -q 'Video Memory-to-Memory$' <<<"$caps" || die "encoder is not single-planar"
	fi
	for ((f = 0; f < frames; f++)); do
		{ yes "vicodec frame $f: the quick brown fox jumps over the lazy dog $((f * 7919))" || true; } |
			head -c "$fsize"
	done >"$w/raw.yu12"
	local t0 t1
	t0=$(date +%s.%N)
	v4l2-ctl -d "$VICODEC_ENC" --set-fmt-video-out="width=$width,height=$height,pixelformat=YU12" \
		--stream-out-mmap --stream-mmap --stream-from "$w/raw.yu12" \
		--stream-to-hdr "$w/coded.fwht" >"$w/enc.log" 2>&1 || { cat "$w/enc.log"; die "encode failed"; }
	t1=$(date +%s.%N)
	echo "encode: $frames frames ${width}x$height in $(awk "BEGIN{printf \"%.2f s (%.0f frames/s)\", $t1-$t0, $frames/($t1-$t0)}")"
	local i
	for i in 1 2; do
		t0=$(date +%s.%N)
		v4l2-ctl -d "$VICODEC_DEC" --stream-out-mmap --stream-mmap \
			--stream-from-hdr "$w/coded.fwht" --stream-to "$w/dec$i.yu12" >"$w/dec.log" 2>&1 ||
			{ cat "$w/dec.log"; die "decode $i failed"; }
		t1=$(date +%s.%N)
		echo "decode $i: $frames frames ${width}x$height in $(awk "BEGIN{printf \"%.2f s (%.0f frames/s)\", $t1-$t0, $frames/($t1-$t0)}")"
	done
	local coded rawsz dsz
	coded=$(stat -c %s "$w/coded.fwht")
	rawsz=$(stat -c %s "$w/raw.yu12")
	dsz=$(stat -c %s "$w/dec1.yu12")
	echo "sizes: raw $rawsz, coded $coded, decoded $dsz"
	[[ $coded -gt 0 && $coded -lt $rawsz ]] || die "unexpected coded size $coded"
	[[ $dsz -eq $rawsz ]] || die "decoded size $dsz != raw size $rawsz"
	cmp "$w/dec1.yu12" "$w/dec2.yu12" || die "two decodes of the same stream differ"
	echo "check OK (multiplanar=$VICODEC_MPLANE)"
}

do_check() {
	local mode rc t0 share
	share=$(mktemp -d "${TMPDIR:-/tmp}/vuv-vm-check.XXXXXX")
	# shellcheck disable=SC2064 # expand now
	trap "rm -rf '$share'" EXIT
	for mode in single multi; do
		local -a opt=()
		[[ $mode == single ]] || opt=(--multiplanar)
		t0=$SECONDS
		note "check: $mode-planar"
		rc=0
		"$SELF" run "${opt[@]}" --share "$share" --timeout "${VUV_CHECK_TIMEOUT:-300}" -- "$SELF" guest-check || rc=$?
		[[ $rc -eq 0 ]] || die "check failed ($mode-planar, status $rc)"
		note "check: $mode-planar passed in $((SECONDS - t0)) s"
	done
	note "check passed"
}

main() {
	local cmd=${1:-}
	[[ $# -eq 0 ]] || shift
	case $cmd in
	setup) [[ $# -eq 0 ]] || die "setup takes no arguments"; do_setup ;;
	run) do_run "$@" ;;
	check) [[ $# -eq 0 ]] || die "check takes no arguments"; do_check ;;
	kver) resolve_kver; echo "$KVER $CACHE_DIR" ;;
	guest-check) guest_check ;;
	-h | --help | help) usage ;;
	*) usage >&2; exit 2 ;;
	esac
}

main "$@"
