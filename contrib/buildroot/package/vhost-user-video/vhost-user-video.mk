################################################################################
#
# vhost-user-video
#
################################################################################

# Built from the tree this BR2_EXTERNAL lives in (contrib/buildroot of the
# vhost-user-video sources). To build other sources, set
# VHOST_USER_VIDEO_OVERRIDE_SRCDIR in local.mk.
VHOST_USER_VIDEO_VERSION = 0.1.0
VHOST_USER_VIDEO_SITE = $(BR2_EXTERNAL_VHOST_USER_VIDEO_PATH)/../..
VHOST_USER_VIDEO_SITE_METHOD = local
# the developer's own build output stays out of the copy
VHOST_USER_VIDEO_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /build --exclude /vhost-user-video --exclude /.config
VHOST_USER_VIDEO_LICENSE = MIT
VHOST_USER_VIDEO_LICENSE_FILES = LICENSE

# The project's own Kconfig; `make defconfig` needs no Kconfig tool.
VHOST_USER_VIDEO_KCONFIG_DEFCONFIG = defconfig
VHOST_USER_VIDEO_KCONFIG_EDITORS = menuconfig

define VHOST_USER_VIDEO_KCONFIG_FIXUP_CMDS
	$(if $(BR2_PACKAGE_VHOST_USER_VIDEO_DECODER),
		$(call KCONFIG_ENABLE_OPT,CONFIG_VUV_DECODER),
		$(call KCONFIG_DISABLE_OPT,CONFIG_VUV_DECODER))
	$(if $(BR2_PACKAGE_VHOST_USER_VIDEO_ENCODER),
		$(call KCONFIG_ENABLE_OPT,CONFIG_VUV_ENCODER),
		$(call KCONFIG_DISABLE_OPT,CONFIG_VUV_ENCODER))
	$(if $(BR2_PACKAGE_VHOST_USER_VIDEO_DMABUF),
		$(call KCONFIG_ENABLE_OPT,CONFIG_VUV_ZERO_COPY)
		$(call KCONFIG_ENABLE_OPT,CONFIG_VUV_DMABUF),
		$(call KCONFIG_DISABLE_OPT,CONFIG_VUV_DMABUF))
endef

# CC, CFLAGS and LDFLAGS from Buildroot (appended after the project's own
# flags); STATIC=0 so that BR2_STATIC_LIBS, or not, decides the linking.
VHOST_USER_VIDEO_MAKE_OPTS = \
	$(TARGET_CONFIGURE_OPTS) \
	STATIC=$(if $(BR2_STATIC_LIBS),1,0) \
	PREFIX=/usr

define VHOST_USER_VIDEO_BUILD_CMDS
	$(TARGET_MAKE_ENV) $(MAKE) -C $(@D) $(VHOST_USER_VIDEO_MAKE_OPTS)
endef

define VHOST_USER_VIDEO_INSTALL_TARGET_CMDS
	$(TARGET_MAKE_ENV) $(MAKE) -C $(@D) $(VHOST_USER_VIDEO_MAKE_OPTS) \
		DESTDIR=$(TARGET_DIR) install
endef

define VHOST_USER_VIDEO_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(VHOST_USER_VIDEO_PKGDIR)/S50vhost-user-video \
		$(TARGET_DIR)/etc/init.d/S50vhost-user-video
	$(INSTALL) -D -m 0644 $(@D)/contrib/init/vhost-user-video.default \
		$(TARGET_DIR)/etc/default/vhost-user-video
endef

define VHOST_USER_VIDEO_INSTALL_INIT_SYSTEMD
	$(TARGET_MAKE_ENV) $(MAKE) -C $(@D) $(VHOST_USER_VIDEO_MAKE_OPTS) \
		DESTDIR=$(TARGET_DIR) install-systemd
	$(INSTALL) -D -m 0644 $(@D)/contrib/init/vhost-user-video.default \
		$(TARGET_DIR)/etc/default/vhost-user-video
endef

$(eval $(kconfig-package))
