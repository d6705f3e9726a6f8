#!/bin/bash
# The aarch64 vicodec VM: Debian bookworm's arm64 6.1 kernel under
# qemu-system-aarch64 (TCG), vicodec cross-built out of tree, and a small
# arm64 userland in the initramfs (static BusyBox, v4l2-ctl with its shared
# libraries). The aarch64 daemon and test programs (build/arm64) are packed
# into a second initramfs archive for each run; the guest has no access to
# the host's files, the command's output comes back on the serial console.
#
#   tests/vm/vm-arm64.sh setup
#   tests/vm/vm-arm64.sh run [--multiplanar] [--timeout SECONDS] [--mem MB] -- CMD [ARGS...]
#   tests/vm/vm-arm64.sh check      (e2e_dec + e2e_enc, single- and multi-planar)
#   tests/vm/vm-arm64.sh kver
#
# See doc/arm-vm.md.
set -euo pipefail

# Bump whenever the cache layout, the guest /init or the module build changes.
readonly FORMAT=1
SELF_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=tests/vm/vmlib.sh
. "$SELF_DIR/vmlib.sh"
SELF="$SELF_DIR/$(basename -- "${BASH_SOURCE[0]}")"
readonly SELF_DIR SELF
REPO=$(cd -- "$SELF_DIR/../.." && pwd -P)
readonly REPO

CACHE_ROOT=${VUV_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vhost-user-video}
readonly CACHE_ROOT
readonly CROSS=aarch64-linux-gnu-

# The guest's modules: these and their dependencies (modinfo) from Debian's
# image, then the out-of-tree vicodec (Debian's arm64 kernel has
# v4l2-mem2mem, unlike amd64's). No virtio: the guest needs no device.
readonly IMAGE_MODULES="mc videodev videobuf2-common videobuf2-v4l2 videobuf2-memops videobuf2-vmalloc v4l2-mem2mem"
# The arm64 userland: unpacked (dpkg-deb -x), never installed.
# (v4l2-ctl needs libv4l2, libv4lconvert, libjpeg, libstdc++, libgcc_s, libc;
# setup checks the whole DT_NEEDED closure is there.)
readonly USER_DEBS="busybox-static v4l-utils libv4l-0 libv4lconvert0 libc6 libgcc-s1 libstdc++6 libjpeg62-turbo"

die() {
	echo "vm-arm64.sh: error: $*" >&2
	exit "${DIE_STATUS:-1}"
}

note() {
	echo "vm-arm64.sh: $*" >&2
}

usage() {
	cat <<'EOF'
usage: vm-arm64.sh setup
       vm-arm64.sh run [--multiplanar] [--timeout SECONDS] [--mem MB] -- CMD [ARGS...]
       vm-arm64.sh check
       vm-arm64.sh kver
EOF
}

step() {
	local limit=$1 what=$2
	shift 2
	if ! timeout -k 10 "$limit" "$@" >>"$LOG_FILE" 2>&1; then
		tail -n 30 "$LOG_FILE" >&2 || true
		die "$what failed (full log: $LOG_FILE)"
	fi
}

# --- kernel version and packages ---------------------------------------------

have_arm64_arch() {
	dpkg --print-foreign-architectures | grep -qx arm64
}

# The arm64 packages are only known to apt once the architecture is added.
add_arm64_arch() {
	have_arm64_arch && return 0
	[[ $(id -u) -eq 0 ]] || die "the arm64 dpkg architecture is missing; as root: dpkg --add-architecture arm64 && apt-get update"
	note "adding the arm64 dpkg architecture (packages are downloaded, never installed)"
	dpkg --add-architecture arm64
	apt_update
}

resolve_kver_once() {
	timeout 60 apt-cache depends linux-image-arm64:arm64 2>/dev/null |
		sed -n 's/^ *Depends: linux-image-\(6\.1\.[0-9][0-9]*-[0-9][0-9]*-arm64\)\(:arm64\)\{0,1\}$/\1/p' |
		head -n 1
}

KVER=
resolve_kver() {
	[[ -z $KVER ]] || return 0
	if [[ -n ${VUV_ARM_KVER:-} ]]; then
		KVER=$VUV_ARM_KVER
	else
		local lists memo=$CACHE_ROOT/vm-arm64/kver.memo k v
		lists=$(apt_lists_key)
		if [[ -f $memo ]] && read -r k v <"$memo" && [[ $k == "$lists" ]]; then
			KVER=$v
		else
			KVER=$(resolve_kver_once || true)
			if [[ -z $KVER && $(id -u) -eq 0 ]]; then
				add_arm64_arch
				apt_update
				KVER=$(resolve_kver_once || true)
				lists=$(apt_lists_key)
			fi
			if [[ -n $KVER ]] && mkdir -p "$CACHE_ROOT/vm-arm64" 2>/dev/null; then
				{ echo "$lists $KVER" >"$memo.$$" && mv -f "$memo.$$" "$memo"; } || rm -f "$memo.$$"
			fi
		fi
		[[ -n $KVER ]] || die "cannot resolve the kernel ABI from 'apt-cache depends linux-image-arm64:arm64' (dpkg --add-architecture arm64 && apt-get update, or set VUV_ARM_KVER=6.1.0-NN-arm64)"
	fi
	[[ $KVER =~ ^6\.1\.[0-9]+-[0-9]+-arm64$ ]] || die "unexpected kernel version '$KVER' (want 6.1.0-NN-arm64)"
	ABI=${KVER%-arm64}
	CACHE_DIR=$CACHE_ROOT/vm-arm64/$KVER
}

# Host (amd64) packages: QEMU, the cross compilers, and the arch-independent
# parts of the module build (the common headers, the amd64 kbuild tools, the
# vicodec source).
host_packages() {
	echo qemu-system-arm cpio gcc-aarch64-linux-gnu musl-dev:arm64 linux-libc-dev-arm64-cross \
		linux-source-6.1 "linux-headers-$ABI-common" linux-kbuild-6.1 xz-utils make kmod \
		dpkg apt coreutils util-linux
}

install_packages() {
	local missing p
	missing=$(missing_packages | tr '\n' ' ')
	missing=${missing% }
	[[ -n $missing ]] || return 0
	if [[ $(id -u) -ne 0 ]]; then
		echo "vm-arm64.sh: error: missing Debian packages; as root, run:" >&2
		echo "  dpkg --add-architecture arm64 && apt-get update && apt-get install -y --no-install-recommends $missing" >&2
		exit 1
	fi
	add_arm64_arch
	for p in $missing; do
		if ! apt-cache show "$p" >/dev/null 2>&1; then
			apt_update
			break
		fi
	done
	note "installing: $missing"
	local -a cmd=(apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=120
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	if ! DEBIAN_FRONTEND=noninteractive timeout -k 10 900 "${cmd[@]}" $missing </dev/null >&2; then
		[[ $apt_updated -eq 0 ]] || die "apt-get install failed"
		apt_update
		# shellcheck disable=SC2086
		DEBIAN_FRONTEND=noninteractive timeout -k 10 900 "${cmd[@]}" $missing </dev/null >&2 ||
			die "apt-get install failed"
	fi
}

# --- cache -----------------------------------------------------------------

pkg_version() {
	dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none
}

cache_key() {
	printf 'format=%s kver=%s common=%s kbuild=%s source=%s cross=%s init=%s lists=%s\n' "$FORMAT" "$KVER" \
		"$(pkg_version "linux-headers-$ABI-common")" "$(pkg_version linux-kbuild-6.1)" \
		"$(pkg_version linux-source-6.1)" "$(pkg_version gcc-12-aarch64-linux-gnu)" \
		"$(guest_init | cksum | cut -d' ' -f1)" \
		"$(echo "$IMAGE_MODULES $USER_DEBS" | cksum | cut -d' ' -f1)"
}

cache_ok() {
	[[ -f $CACHE_DIR/stamp && -f $CACHE_DIR/Image && -f $CACHE_DIR/base.cpio ]]
}

cache_fresh() {
	cache_ok && [[ $(cat "$CACHE_DIR/stamp") == "$(cache_key)" ]]
}

# --- guest /init --------------------------------------------------------------

# The initramfs /init (BusyBox sh). The run's archive adds /vuv with the
# programs and cmd.sh; the result is the "vm-arm64: exit status N" line.
guest_init() {
	cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
stty -onlcr -opost </dev/console >/dev/null 2>&1

mplane=0 debug=0
for w in $(cat /proc/cmdline); do
	case $w in
	vuv.mplane=*) mplane=${w#vuv.mplane=} ;;
	vuv.debug=*) debug=${w#vuv.debug=} ;;
	esac
done
[ "$debug" = 1 ] || echo 1 >/proc/sys/kernel/printk
halt() {
	sync
	poweroff -f
	sleep 10
}
fail() {
	echo "vm-arm64: init error: $*"
	halt
}
echo "vm-arm64: init at $(cut -d' ' -f1 /proc/uptime) s"
while read -r m; do
	p=
	[ "$m" = vicodec.ko ] && [ "$mplane" = 1 ] && p=multiplanar=1
	insmod "/lib/modules/$m" $p || fail "insmod $m failed"
done </lib/modules/order
dec= enc=
for d in /sys/class/video4linux/video*; do
	case $(cat "$d/name") in
	stateful-decoder) dec=/dev/${d##*/} ;;
	stateful-encoder) enc=/dev/${d##*/} ;;
	esac
done
[ -n "$dec" ] && [ -n "$enc" ] || fail "vicodec nodes not found"
[ -f /vuv/cmd.sh ] || fail "no /vuv/cmd.sh in the initramfs"
echo "vm-arm64: modules loaded at $(cut -d' ' -f1 /proc/uptime) s"
cd /vuv
env -i PATH=/vuv/bin:/bin:/usr/bin HOME=/tmp TERM=dumb VUV_IN_VM=1 VUV_ARM64_VM=1 \
	VICODEC_DEC="$dec" VICODEC_ENC="$enc" VICODEC_MPLANE="$mplane" \
	/bin/sh /vuv/cmd.sh </dev/null
rc=$?
[ "$debug" = 1 ] && dmesg | tail -n 50
echo "vm-arm64: exit status $rc"
halt
EOF
}

# --- setup -----------------------------------------------------------------

# Copies the shared libraries ELF file $1 needs (DT_NEEDED, recursively) from
# the unpacked root $2 into $3/lib/aarch64-linux-gnu.
declare -A LIB_SEEN=()
copy_needed() {
	local elf=$1 root=$2 dst=$3 n f d
	for n in $("${CROSS}readelf" -dW "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
		[[ -z ${LIB_SEEN[$n]:-} ]] || continue
		LIB_SEEN[$n]=1
		f=
		for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu; do
			[[ -e $root/$d/$n ]] && { f=$root/$d/$n; break; }
		done
		[[ -n $f ]] || die "library $n (needed by $(basename "$elf")) not in the unpacked packages ($USER_DEBS)"
		cp -L "$f" "$dst/lib/aarch64-linux-gnu/$n"
		copy_needed "$f" "$root" "$dst"
	done
}

TMP_BUILD=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup_build() {
	[[ -z $TMP_BUILD ]] || rm -rf "$TMP_BUILD"
}

# Downloads arm64 packages into the current directory; the exact version
# first when given as NAME=VERSION, else the candidate.
download() {
	local p
	for p in "$@"; do
		if ! timeout -k 10 600 apt-get download -q "$p" >>"$LOG_FILE" 2>&1; then
			[[ $p == *=* ]] || { tail -n 20 "$LOG_FILE" >&2; die "apt-get download $p failed"; }
			note "$p not downloadable, trying the candidate version"
			step 600 "apt-get download ${p%%=*}" apt-get download -q "${p%%=*}"
		fi
	done
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
	mkdir -p "$CACHE_ROOT/vm-arm64"
	exec 9>"$CACHE_ROOT/vm-arm64/.lock"
	flock -w 1200 9 || die "timed out waiting for the cache lock"
	if cache_ok && [[ $(cat "$CACHE_DIR/stamp") == "$key" ]]; then
		exec 9>&-
		note "cache up to date: $CACHE_DIR"
		return 0
	fi
	local t0=$SECONDS
	note "building the arm64 VM cache for $KVER in $CACHE_DIR"
	TMP_BUILD=$(mktemp -d "$CACHE_ROOT/vm-arm64/.build.XXXXXX")
	trap 'cleanup_build' EXIT
	local w=$TMP_BUILD
	LOG_FILE=$w/setup.log
	: >"$LOG_FILE"
	mkdir -p "$w/out" "$w/deb" "$w/img" "$w/hdr" "$w/user" "$w/src" "$w/ko" \
		"$w/initrd/bin" "$w/initrd/usr/bin" "$w/initrd/lib/aarch64-linux-gnu" \
		"$w/initrd/lib/modules" "$w/initrd/proc" "$w/initrd/sys" "$w/initrd/dev" \
		"$w/initrd/tmp" "$w/initrd/etc"

	# The vicodec source, in the background while apt downloads.
	timeout -k 10 600 tar -C "$w/src" --strip-components=1 -xJf /usr/src/linux-source-6.1.tar.xz \
		--wildcards 'linux-source-6.1/drivers/media/test-drivers/vicodec/*' >"$w/tar.log" 2>&1 &
	local tar_pid=$!

	# The kernel image and headers matching the host's common headers.
	local hver p
	hver=$(pkg_version "linux-headers-$ABI-common")
	chmod 755 "$w" "$w/deb"
	if [[ $(id -u) -eq 0 ]] && getent passwd _apt >/dev/null; then
		chown _apt "$w/deb" 2>/dev/null || true
	fi
	local -a user=()
	for p in $USER_DEBS; do
		user+=("$p:arm64")
	done
	(cd "$w/deb" && download "linux-image-$KVER:arm64=$hver" "linux-headers-$KVER:arm64=$hver" "${user[@]}")

	# Kernel: the gzip-compressed Image, uncompressed once here (saves the
	# guest's decompression on every boot); the media modules.
	local deb
	deb=$(echo "$w"/deb/linux-image-*.deb)
	[[ -f $deb ]] || die "no linux-image-$KVER package downloaded"
	# shellcheck disable=SC2016 # expanded by the inner shell
	step 300 "unpacking $deb" bash -o pipefail -c 'dpkg-deb --fsys-tarfile "$1" |
		tar -C "$2" -x --wildcards "./boot/vmlinuz-*" \
			"./lib/modules/*/kernel/drivers/media/mc/*" \
			"./lib/modules/*/kernel/drivers/media/v4l2-core/*" \
			"./lib/modules/*/kernel/drivers/media/common/videobuf2/*"' \
		unpack "$deb" "$w/img"
	if ! gzip -dc "$w/img/boot/vmlinuz-$KVER" >"$w/out/Image" 2>/dev/null; then
		cp "$w/img/boot/vmlinuz-$KVER" "$w/out/Image"
	fi
	find "$w/img/lib/modules/$KVER/kernel" -name '*.ko*' | while read -r f; do
		case $f in
		*.xz) xz -dc "$f" >"$w/ko/$(basename "$f" .xz)" ;;
		*.gz) gzip -dc "$f" >"$w/ko/$(basename "$f" .gz)" ;;
		*.zst) zstd -qdc "$f" >"$w/ko/$(basename "$f" .zst)" ;;
		*) cp "$f" "$w/ko/" ;;
		esac
	done

	# vicodec, cross-built out of tree against the arm64 headers package
	# (unpacked, not installed: its kbuild helpers would be arm64 binaries;
	# the host's linux-kbuild-6.1 of the same version takes their place).
	dpkg-deb -x "$(echo "$w"/deb/linux-headers-*.deb)" "$w/hdr"
	local kdir=$w/hdr/usr/src/linux-headers-$KVER
	[[ -f $kdir/.config ]] || die "no $kdir/.config in linux-headers-$KVER:arm64"
	ln -sfn /usr/lib/linux-kbuild-6.1/scripts "$kdir/scripts"
	ln -sfn /usr/lib/linux-kbuild-6.1/tools "$kdir/tools"
	if ! wait "$tar_pid"; then
		cat "$w/tar.log" >&2
		die "extracting /usr/src/linux-source-6.1.tar.xz failed"
	fi
	local kb=$w/kbuild
	mkdir -p "$kb"
	cp "$w"/src/drivers/media/test-drivers/vicodec/*.[ch] "$kb/"
	printf '%s\n' 'obj-m := vicodec.o' \
		'vicodec-y := vicodec-core.o codec-fwht.o codec-v4l2-fwht.o' >"$kb/Kbuild"
	step 600 "building vicodec.ko" make -C "$kdir" M="$kb" ARCH=arm64 CROSS_COMPILE=$CROSS \
		-j"$(nproc)" modules
	local vm vi
	vm=$(modinfo -F vermagic "$w/ko/videodev.ko")
	vi=$(modinfo -F vermagic "$kb/vicodec.ko")
	[[ $vm == "$vi" ]] || die "vicodec.ko vermagic '$vi' differs from the image's '$vm'"
	cp "$kb/vicodec.ko" "$w/ko/"

	local n=0 m order
	# shellcheck disable=SC2086 # a list of names
	order=$(resolve_modules "$w/ko" $IMAGE_MODULES vicodec)
	for m in $order; do
		cp "$w/ko/$m" "$w/initrd/lib/modules/$m"
		echo "$m" >>"$w/initrd/lib/modules/order"
		n=$((n + 1))
	done
	[[ $(tail -n 1 "$w/initrd/lib/modules/order") == vicodec.ko ]] ||
		die "internal error: vicodec.ko is not the last module"

	# The userland: static BusyBox; v4l2-ctl, the loader and the libraries
	# it needs (the loader finds them in its multiarch directory).
	for deb in "$w"/deb/*.deb; do
		case $(basename "$deb") in linux-*) continue ;; esac
		dpkg-deb -x "$deb" "$w/user"
	done
	cp "$w/user/bin/busybox" "$w/initrd/bin/busybox"
	"${CROSS}readelf" -hW "$w/initrd/bin/busybox" | grep -q 'Machine:.*AArch64' ||
		die "busybox-static:arm64 is not an AArch64 binary"
	cp "$w/user/usr/bin/v4l2-ctl" "$w/initrd/usr/bin/v4l2-ctl"
	cp -L "$w/user/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1" "$w/initrd/lib/aarch64-linux-gnu/"
	ln -s aarch64-linux-gnu/ld-linux-aarch64.so.1 "$w/initrd/lib/ld-linux-aarch64.so.1"
	copy_needed "$w/initrd/usr/bin/v4l2-ctl" "$w/user" "$w/initrd"
	guest_init >"$w/initrd/init"
	chmod 755 "$w/initrd/init"
	# Uncompressed: QEMU loads it as it is, the emulated kernel need not
	# inflate it.
	(cd "$w/initrd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$w/out/base.cpio"
	tr '\n' ' ' <"$w/initrd/lib/modules/order" >"$w/out/modules"
	for deb in "$w"/deb/*.deb; do
		# shellcheck disable=SC2016 # dpkg's format, not the shell's
		dpkg-deb -W --showformat='${Package}:${Architecture} ${Version}\n' "$deb"
	done >"$w/out/packages"
	echo "$key" >"$w/out/stamp"

	local old=
	if [[ -e $CACHE_DIR ]]; then
		old=$(mktemp -d "$CACHE_ROOT/vm-arm64/.old.XXXXXX")
		mv "$CACHE_DIR" "$old/"
	fi
	mv "$w/out" "$CACHE_DIR"
	[[ -z $old ]] || rm -rf "$old"
	rm -rf "$TMP_BUILD"
	TMP_BUILD=
	trap - EXIT
	exec 9>&-
	note "cache ready in $((SECONDS - t0)) s: $CACHE_DIR ($n modules, initramfs $(($(stat -c %s "$CACHE_DIR/base.cpio") / 1024)) KiB)"
}

# --- run -------------------------------------------------------------------

# The run's archive: /vuv/build/arm64/{vhost-user-video,tests/*} (what is
# built of them), /vuv/tests/*.sh, and /vuv/cmd.sh running CMD in /vuv.
make_run_cpio() {
	local st=$1 out=$2 b=${VUV_ARM_B:-build/arm64} f
	shift 2
	mkdir -p "$st/vuv/$b/tests" "$st/vuv/tests"
	[[ -x $REPO/$b/vhost-user-video ]] || die "no $b/vhost-user-video (make B=$b CROSS_COMPILE=aarch64-linux-musl-)"
	cp "$REPO/$b/vhost-user-video" "$st/vuv/$b/"
	for f in "$REPO/$b"/tests/*; do
		[[ -f $f && -x $f ]] && cp "$f" "$st/vuv/$b/tests/"
	done
	cp "$REPO"/tests/*.sh "$st/vuv/tests/"
	{
		echo '# generated by vm-arm64.sh run'
		local v
		while read -r v; do
			echo "export $v=$(shquote "${!v}")"
		done < <(compgen -e | grep '^VUV_' || true)
		printf 'exec'
		local a
		for a in "$@"; do
			printf ' %s' "$(shquote "$a")"
		done
		echo
	} >"$st/vuv/cmd.sh"
	(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$out"
}

do_run() {
	local mplane=0 limit=1800 mem=2048
	while [[ $# -gt 0 ]]; do
		case $1 in
		--multiplanar) mplane=1 ;;
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
	cache_fresh || do_setup
	command -v qemu-system-aarch64 >/dev/null || die "qemu-system-aarch64 not found (run: vm-arm64.sh setup)"

	local rundir
	mkdir -p "$REPO/build"
	rundir=$(mktemp -d "$REPO/build/.vm-arm64-run.XXXXXX")
	RUNDIR=$rundir
	trap '[[ ${VUV_VM_DEBUG:-0} == 1 ]] || rm -rf "$RUNDIR"' EXIT
	make_run_cpio "$rundir/stage" "$rundir/run.cpio" "$@"
	# Linux unpacks concatenated archives in order: the cached base, then ours.
	cat "$CACHE_DIR/base.cpio" "$rundir/run.cpio" >"$rundir/initrd"

	local append="console=ttyAMA0 panic=-1 quiet loglevel=1 vuv.mplane=$mplane"
	[[ ${VUV_VM_DEBUG:-0} != 1 ]] || append="console=ttyAMA0 panic=-1 loglevel=7 vuv.mplane=$mplane vuv.debug=1"
	# cortex-a72 rather than max (pointer authentication, SVE...): measured
	# here, max booted to /init in 52-97 s against 6 s, and a 30-frame
	# 640x480 encode + decode took 1.3-2x as long.
	local cpu=${VUV_ARM_CPU:-cortex-a72} qrc=0 t0=$SECONDS
	timeout -k 10 "$limit" qemu-system-aarch64 -machine virt -accel tcg,thread=multi -cpu "$cpu" \
		-smp 2 -m "$mem" -nodefaults -display none -monitor none -serial stdio -no-reboot \
		-kernel "$CACHE_DIR/Image" -initrd "$rundir/initrd" -append "$append" </dev/null |
		tee "$rundir/console.log" || qrc=${PIPESTATUS[0]}
	# (the kernel's last words may end without a newline)
	[[ $(tail -c 1 "$rundir/console.log" | od -An -c | tr -d ' ') == '\n' ]] || echo
	note "VM ran $((SECONDS - t0)) s (boot to /init: $(sed -n 's/^vm-arm64: init at \([0-9.]*\) s.*/\1/p' "$rundir/console.log" | head -n 1) s guest time)"
	local st
	st=$(tr -d '\r' <"$rundir/console.log" | sed -n 's/^vm-arm64: exit status \([0-9][0-9]*\)$/\1/p' | tail -n 1)
	if [[ -n $st ]]; then
		return "$st"
	fi
	if grep -q '^vm-arm64: init error' "$rundir/console.log"; then
		die "VM setup failed: $(grep '^vm-arm64: init error' "$rundir/console.log" | head -n 1)"
	elif [[ $qrc -eq 124 || $qrc -eq 137 ]]; then
		die "VM timed out after $limit s"
	else
		die "VM exited (qemu status $qrc) without reporting a command status (crash or kernel panic?; rerun with VUV_VM_DEBUG=1)"
	fi
}

# --- check -----------------------------------------------------------------

# The e2e suites in the VM, once per vicodec mode; the total closes the output.
do_check() {
	cd "$REPO"
	# shellcheck source=tests/lib.sh disable=SC1091
	. tests/lib.sh
	local t0=$SECONDS mode t
	local -a opt
	for mode in single multi; do
		opt=()
		[[ $mode == single ]] || opt=(--multiplanar)
		t=$SECONDS
		run_prog "arm64 vm: vicodec $mode-planar" "$SELF" run "${opt[@]}" \
			--timeout "${VUV_ARM_TIMEOUT:-3600}" -- sh tests/vm-arm64-tests.sh
		echo "=== arm64 vm: vicodec $mode-planar: $((SECONDS - t)) s"
	done
	echo
	echo "vm-arm64.sh check: $((SECONDS - t0)) s"
	[ ${#FAILED_PROGS[@]} = 0 ] || echo "failed: ${FAILED_PROGS[*]}"
	echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
	[ "$TOTAL_FAIL" = 0 ]
}

main() {
	local what=${1:-}
	[[ $# -eq 0 ]] || shift
	case $what in
	setup) [[ $# -eq 0 ]] || die "setup takes no arguments"; do_setup ;;
	run) do_run "$@" ;;
	check) [[ $# -eq 0 ]] || die "check takes no arguments"; do_check ;;
	kver) resolve_kver; echo "$KVER $CACHE_DIR" ;;
	-h | --help | help) usage ;;
	*) usage >&2; exit 2 ;;
	esac
}

# exit on the same line: bash reads a script as it runs it, and an edit made
# meanwhile must not be read
main "$@"; exit
