include $(sort $(wildcard $(BR2_EXTERNAL_VHOST_USER_VIDEO_PATH)/package/*/*.mk))
