SUMMARY = "vhost-user virtio-video backend on V4L2 stateful codecs"
DESCRIPTION = "A vhost-user backend implementing the virtio-video device \
(protocol v3) on a host V4L2 mem2mem stateful codec (Venus, Raspberry Pi, \
MediaTek, vicodec). QEMU connects over a unix socket; one daemon per codec node."
SECTION = "multimedia"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=0e41cfd265e9bbc6054e6c580a5d7ea3"

# By default the git repository this layer is part of (see conf/layer.conf);
# a bbappend or local.conf may point SRC_URI/SRCREV elsewhere.
SRC_URI = "git://${VHOST_USER_VIDEO_SRCDIR};protocol=file;branch=main"
SRCREV ?= "${AUTOREV}"
PV = "0.1.0+git${SRCPV}"
S = "${WORKDIR}/git"

# No cml1: the project's menuconfig needs kconfig-mconf or kconfiglib, and
# PACKAGECONFIG covers its options; `bitbake -c devshell` + make menuconfig.
inherit update-rc.d systemd

# The project's Kconfig roles; at least one. The flags become .config lines.
PACKAGECONFIG ??= "decoder encoder"
PACKAGECONFIG[decoder] = "CONFIG_VUV_DECODER=y,CONFIG_VUV_DECODER=n"
PACKAGECONFIG[encoder] = "CONFIG_VUV_ENCODER=y,CONFIG_VUV_ENCODER=n"
# DMABUF from guest memory (/dev/udmabuf), not in the default: about 2.6 KiB.
# For decoders that take only MMAP/DMABUF (Qualcomm Venus, MediaTek, Raspberry
# Pi); needs a host kernel with CONFIG_UDMABUF and QEMU guest memory from
# memory-backend-memfd. CONFIG_VUV_ZERO_COPY, which it needs, is on by default.
PACKAGECONFIG[dmabuf] = "CONFIG_VUV_DMABUF=y,CONFIG_VUV_DMABUF=n"

# CC/CFLAGS/LDFLAGS as bitbake sets them (CC carries --sysroot and the
# machine flags); ours come first, these after. STATIC=0: linking is the
# distro's business. Not stripped: Yocto splits and strips itself.
EXTRA_OEMAKE = "'CC=${CC}' 'CFLAGS=${CFLAGS}' 'LDFLAGS=${LDFLAGS}' STATIC=0 V=1 \
	PREFIX=${prefix} BINDIR=${bindir} MANDIR=${mandir} SYSCONFDIR=${sysconfdir} \
	INITSCRIPT=vhost-user-video SYSTEMDUNITDIR=${systemd_system_unitdir}"

do_configure() {
	oe_runmake defconfig
	for opt in ${PACKAGECONFIG_CONFARGS}; do
		sym=${opt%%=*}
		sed -i -e "/^$sym=/d" -e "/^# $sym is not set/d" ${B}/.config
		case $opt in
		*=y) echo "$opt" >>${B}/.config ;;
		*) echo "# $sym is not set" >>${B}/.config ;;
		esac
	done
	oe_runmake olddefconfig
}

do_compile() {
	oe_runmake vhost-user-video
}

do_install() {
	oe_runmake DESTDIR=${D} install
	if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
		oe_runmake DESTDIR=${D} install-sysv
	fi
	if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
		oe_runmake DESTDIR=${D} install-systemd
		install -D -m 0644 ${S}/contrib/init/vhost-user-video.default \
			${D}${sysconfdir}/default/vhost-user-video
	fi
}

INITSCRIPT_NAME = "vhost-user-video"
INITSCRIPT_PARAMS = "defaults 50"

# Socket activation: the daemon starts at the first connect. The per-node
# template vhost-user-video@.service is installed, enabled by the user.
SYSTEMD_SERVICE:${PN} = "vhost-user-video.socket"

FILES:${PN} += "${systemd_system_unitdir}"
CONFFILES:${PN} = "${sysconfdir}/default/vhost-user-video"
