/* SPDX-License-Identifier: MIT */
/*
 * virtio-video protocol v3, the dialect the Linux (ChromeOS-era) frontend
 * driver speaks: pure v3 plus GET/SET_PARAMS_EXT, controls 1..7, a 44-byte
 * config space, and the FWHT coded format used by vicodec.
 *
 * Wire structs only; every field is little-endian on the wire. Written from
 * the protocol facts in shared/virtio-video-v3.md. Sizes and the offsets the
 * guest driver relies on are checked at compile time.
 */
#ifndef VIRTIO_VIDEO_H
#define VIRTIO_VIDEO_H

#include <stddef.h>
#include <stdint.h>

typedef uint16_t le16;
typedef uint32_t le32;
typedef uint64_t le64;

#define VIRTIO_ID_VIDEO_ENCODER 30
#define VIRTIO_ID_VIDEO_DECODER 31

#define VIRTIO_VIDEO_QUEUE_COMMAND 0
#define VIRTIO_VIDEO_QUEUE_EVENT 1
#define VIRTIO_VIDEO_NUM_QUEUES 2

/* Device feature bits. */
#define VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES 0
#define VIRTIO_VIDEO_F_RESOURCE_NON_CONTIG 1
#define VIRTIO_VIDEO_F_RESOURCE_VIRTIO_OBJECT 2

#define VIRTIO_VIDEO_MAX_PLANES 8
#define VIRTIO_VIDEO_MAX_FORMAT_DESCS 64

enum virtio_video_cmd_type {
	VIRTIO_VIDEO_CMD_QUERY_CAPABILITY = 0x100,
	VIRTIO_VIDEO_CMD_STREAM_CREATE = 0x101,
	VIRTIO_VIDEO_CMD_STREAM_DESTROY = 0x102,
	VIRTIO_VIDEO_CMD_STREAM_DRAIN = 0x103,
	VIRTIO_VIDEO_CMD_RESOURCE_CREATE = 0x104,
	VIRTIO_VIDEO_CMD_RESOURCE_QUEUE = 0x105,
	VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL = 0x106,
	VIRTIO_VIDEO_CMD_QUEUE_CLEAR = 0x107,
	VIRTIO_VIDEO_CMD_GET_PARAMS = 0x108,
	VIRTIO_VIDEO_CMD_SET_PARAMS = 0x109,
	VIRTIO_VIDEO_CMD_QUERY_CONTROL = 0x10A,
	VIRTIO_VIDEO_CMD_GET_CONTROL = 0x10B,
	VIRTIO_VIDEO_CMD_SET_CONTROL = 0x10C,
	VIRTIO_VIDEO_CMD_GET_PARAMS_EXT = 0x10D,
	VIRTIO_VIDEO_CMD_SET_PARAMS_EXT = 0x10E,

	VIRTIO_VIDEO_RESP_OK_NODATA = 0x200,
	VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY = 0x201,
	VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE = 0x202,
	VIRTIO_VIDEO_RESP_OK_GET_PARAMS = 0x203,
	VIRTIO_VIDEO_RESP_OK_QUERY_CONTROL = 0x204,
	VIRTIO_VIDEO_RESP_OK_GET_CONTROL = 0x205,

	VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION = 0x300,
	VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY = 0x301,
	VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID = 0x302,
	VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID = 0x303,
	VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER = 0x304,
	VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL = 0x305,
};

enum virtio_video_queue_type {
	VIRTIO_VIDEO_QUEUE_TYPE_INPUT = 0x100,
	VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT = 0x101,
};

enum virtio_video_mem_type {
	VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES = 0,
	VIRTIO_VIDEO_MEM_TYPE_VIRTIO_OBJECT = 1,
};

enum virtio_video_planes_layout {
	VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER = 1 << 0,
	VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE = 1 << 1,
};

enum virtio_video_buffer_flag {
	VIRTIO_VIDEO_BUFFER_FLAG_ERR = 0x0001,
	VIRTIO_VIDEO_BUFFER_FLAG_EOS = 0x0002,
	VIRTIO_VIDEO_BUFFER_FLAG_IFRAME = 0x0004,
	VIRTIO_VIDEO_BUFFER_FLAG_PFRAME = 0x0008,
	VIRTIO_VIDEO_BUFFER_FLAG_BFRAME = 0x0010,
};

enum virtio_video_event_type {
	VIRTIO_VIDEO_EVENT_ERROR = 0x0100,
	VIRTIO_VIDEO_EVENT_DECODER_RESOLUTION_CHANGED = 0x0200,
};

enum virtio_video_format {
	/* Raw formats */
	VIRTIO_VIDEO_FORMAT_RAW_MIN = 1,
	VIRTIO_VIDEO_FORMAT_ARGB8888 = VIRTIO_VIDEO_FORMAT_RAW_MIN,
	VIRTIO_VIDEO_FORMAT_BGRA8888,
	VIRTIO_VIDEO_FORMAT_NV12,
	VIRTIO_VIDEO_FORMAT_YUV420,
	VIRTIO_VIDEO_FORMAT_YVU420,
	VIRTIO_VIDEO_FORMAT_RAW_MAX = VIRTIO_VIDEO_FORMAT_YVU420,
	/* Coded formats */
	VIRTIO_VIDEO_FORMAT_CODED_MIN = 0x1000,
	VIRTIO_VIDEO_FORMAT_MPEG2 = VIRTIO_VIDEO_FORMAT_CODED_MIN,
	VIRTIO_VIDEO_FORMAT_MPEG4,
	VIRTIO_VIDEO_FORMAT_H264,
	VIRTIO_VIDEO_FORMAT_HEVC,
	VIRTIO_VIDEO_FORMAT_VP8,
	VIRTIO_VIDEO_FORMAT_VP9,
	VIRTIO_VIDEO_FORMAT_FWHT,
	VIRTIO_VIDEO_FORMAT_CODED_MAX = VIRTIO_VIDEO_FORMAT_FWHT,
};

enum virtio_video_control_type {
	VIRTIO_VIDEO_CONTROL_BITRATE = 1,
	VIRTIO_VIDEO_CONTROL_PROFILE,
	VIRTIO_VIDEO_CONTROL_LEVEL,
	VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME,
	VIRTIO_VIDEO_CONTROL_BITRATE_MODE,
	VIRTIO_VIDEO_CONTROL_BITRATE_PEAK,
	VIRTIO_VIDEO_CONTROL_PREPEND_SPSPPS_TO_IDR,
	VIRTIO_VIDEO_CONTROL_MAX = VIRTIO_VIDEO_CONTROL_PREPEND_SPSPPS_TO_IDR,
};

enum virtio_video_bitrate_mode {
	VIRTIO_VIDEO_BITRATE_MODE_VBR = 0,
	VIRTIO_VIDEO_BITRATE_MODE_CBR = 1,
};

enum virtio_video_profile {
	VIRTIO_VIDEO_PROFILE_H264_MIN = 0x100,
	VIRTIO_VIDEO_PROFILE_H264_BASELINE = VIRTIO_VIDEO_PROFILE_H264_MIN,
	VIRTIO_VIDEO_PROFILE_H264_MAIN,
	VIRTIO_VIDEO_PROFILE_H264_EXTENDED,
	VIRTIO_VIDEO_PROFILE_H264_HIGH,
	VIRTIO_VIDEO_PROFILE_H264_HIGH10PROFILE,
	VIRTIO_VIDEO_PROFILE_H264_HIGH422PROFILE,
	VIRTIO_VIDEO_PROFILE_H264_HIGH444PREDICTIVEPROFILE,
	VIRTIO_VIDEO_PROFILE_H264_SCALABLEBASELINE,
	VIRTIO_VIDEO_PROFILE_H264_SCALABLEHIGH,
	VIRTIO_VIDEO_PROFILE_H264_STEREOHIGH,
	VIRTIO_VIDEO_PROFILE_H264_MULTIVIEWHIGH,
	VIRTIO_VIDEO_PROFILE_H264_MAX = VIRTIO_VIDEO_PROFILE_H264_MULTIVIEWHIGH,

	VIRTIO_VIDEO_PROFILE_HEVC_MIN = 0x200,
	VIRTIO_VIDEO_PROFILE_HEVC_MAIN = VIRTIO_VIDEO_PROFILE_HEVC_MIN,
	VIRTIO_VIDEO_PROFILE_HEVC_MAIN10,
	VIRTIO_VIDEO_PROFILE_HEVC_MAIN_STILL_PICTURE,
	VIRTIO_VIDEO_PROFILE_HEVC_MAX = VIRTIO_VIDEO_PROFILE_HEVC_MAIN_STILL_PICTURE,

	VIRTIO_VIDEO_PROFILE_VP8_MIN = 0x300,
	VIRTIO_VIDEO_PROFILE_VP8_PROFILE0 = VIRTIO_VIDEO_PROFILE_VP8_MIN,
	VIRTIO_VIDEO_PROFILE_VP8_PROFILE1,
	VIRTIO_VIDEO_PROFILE_VP8_PROFILE2,
	VIRTIO_VIDEO_PROFILE_VP8_PROFILE3,
	VIRTIO_VIDEO_PROFILE_VP8_MAX = VIRTIO_VIDEO_PROFILE_VP8_PROFILE3,

	VIRTIO_VIDEO_PROFILE_VP9_MIN = 0x400,
	VIRTIO_VIDEO_PROFILE_VP9_PROFILE0 = VIRTIO_VIDEO_PROFILE_VP9_MIN,
	VIRTIO_VIDEO_PROFILE_VP9_PROFILE1,
	VIRTIO_VIDEO_PROFILE_VP9_PROFILE2,
	VIRTIO_VIDEO_PROFILE_VP9_PROFILE3,
	VIRTIO_VIDEO_PROFILE_VP9_MAX = VIRTIO_VIDEO_PROFILE_VP9_PROFILE3,
};

enum virtio_video_level {
	VIRTIO_VIDEO_LEVEL_H264_MIN = 0x100,
	VIRTIO_VIDEO_LEVEL_H264_1_0 = VIRTIO_VIDEO_LEVEL_H264_MIN,
	VIRTIO_VIDEO_LEVEL_H264_1_1,
	VIRTIO_VIDEO_LEVEL_H264_1_2,
	VIRTIO_VIDEO_LEVEL_H264_1_3,
	VIRTIO_VIDEO_LEVEL_H264_2_0,
	VIRTIO_VIDEO_LEVEL_H264_2_1,
	VIRTIO_VIDEO_LEVEL_H264_2_2,
	VIRTIO_VIDEO_LEVEL_H264_3_0,
	VIRTIO_VIDEO_LEVEL_H264_3_1,
	VIRTIO_VIDEO_LEVEL_H264_3_2,
	VIRTIO_VIDEO_LEVEL_H264_4_0,
	VIRTIO_VIDEO_LEVEL_H264_4_1,
	VIRTIO_VIDEO_LEVEL_H264_4_2,
	VIRTIO_VIDEO_LEVEL_H264_5_0,
	VIRTIO_VIDEO_LEVEL_H264_5_1,
	VIRTIO_VIDEO_LEVEL_H264_MAX = VIRTIO_VIDEO_LEVEL_H264_5_1,
};

/* Config space: 12 bytes in pure v3, 44 with the device name. */
struct virtio_video_config {
	le32 version;
	le32 max_caps_length;
	le32 max_resp_length;
	uint8_t device_name[32];
};

struct virtio_video_cmd_hdr {
	le32 type;
	le32 stream_id;
};

struct virtio_video_event {
	le32 event_type;
	le32 stream_id;
};

/* QUERY_CAPABILITY */
struct virtio_video_query_capability {
	struct virtio_video_cmd_hdr hdr;
	le32 queue_type;
	uint8_t padding[4];
};

struct virtio_video_format_range {
	le32 min;
	le32 max;
	le32 step;
	uint8_t padding[4];
};

struct virtio_video_format_frame {
	struct virtio_video_format_range width;
	struct virtio_video_format_range height;
	le32 num_rates;
	uint8_t padding[4];
	/* num_rates x struct virtio_video_format_range follow */
};

struct virtio_video_format_desc {
	le64 mask;
	le32 format;
	le32 planes_layout;
	le32 plane_align;
	le32 num_frames;
	/* num_frames x struct virtio_video_format_frame follow */
};

struct virtio_video_query_capability_resp {
	struct virtio_video_cmd_hdr hdr;
	le32 num_descs;
	uint8_t padding[4];
	/* num_descs x struct virtio_video_format_desc follow */
};

/* STREAM_CREATE */
struct virtio_video_stream_create {
	struct virtio_video_cmd_hdr hdr;
	le32 in_mem_type;
	le32 out_mem_type;
	le32 coded_format;
	uint8_t padding[4];
	uint8_t tag[64];
};

/* STREAM_DESTROY and STREAM_DRAIN are a bare header. */

/* RESOURCE_CREATE */
struct virtio_video_mem_entry {
	le64 addr;
	le32 length;
	uint8_t padding[4];
};

struct virtio_video_object_entry {
	uint8_t uuid[16];
};

struct virtio_video_resource_create {
	struct virtio_video_cmd_hdr hdr;
	le32 queue_type;
	le32 resource_id;
	le32 planes_layout;
	le32 num_planes;
	le32 plane_offsets[VIRTIO_VIDEO_MAX_PLANES];
	le32 num_entries[VIRTIO_VIDEO_MAX_PLANES];
	/* sum(num_entries) x struct virtio_video_mem_entry follow */
};

/* RESOURCE_QUEUE */
struct virtio_video_resource_queue {
	struct virtio_video_cmd_hdr hdr;
	le32 queue_type;
	le32 resource_id;
	le64 timestamp;
	le32 num_data_sizes;
	le32 data_sizes[VIRTIO_VIDEO_MAX_PLANES];
	uint8_t padding[4];
};

struct virtio_video_resource_queue_resp {
	struct virtio_video_cmd_hdr hdr;
	le64 timestamp;
	le32 flags;
	le32 size;
};

/* RESOURCE_DESTROY_ALL, QUEUE_CLEAR, GET_PARAMS(_EXT) share this shape. */
struct virtio_video_queue_cmd {
	struct virtio_video_cmd_hdr hdr;
	le32 queue_type;
	uint8_t padding[4];
};

/* Params */
struct virtio_video_crop {
	le32 left;
	le32 top;
	le32 width;
	le32 height;
};

struct virtio_video_plane_format {
	le32 plane_size;
	le32 stride;
};

struct virtio_video_params {
	le32 queue_type;
	le32 format;
	le32 frame_width;
	le32 frame_height;
	le32 min_buffers;
	le32 max_buffers;
	struct virtio_video_crop crop;
	le32 frame_rate;
	le32 num_planes;
	struct virtio_video_plane_format plane_formats[VIRTIO_VIDEO_MAX_PLANES];
};

struct virtio_video_params_ext {
	struct virtio_video_params base;
	le32 resource_type;
	uint8_t padding[4];
};

struct virtio_video_get_params_resp {
	struct virtio_video_cmd_hdr hdr;
	struct virtio_video_params params;
};

struct virtio_video_get_params_ext_resp {
	struct virtio_video_cmd_hdr hdr;
	struct virtio_video_params_ext params;
};

struct virtio_video_set_params {
	struct virtio_video_cmd_hdr hdr;
	struct virtio_video_params params;
};

struct virtio_video_set_params_ext {
	struct virtio_video_cmd_hdr hdr;
	struct virtio_video_params_ext params;
};

/* Controls */
struct virtio_video_query_control {
	struct virtio_video_cmd_hdr hdr;
	le32 control;
	uint8_t padding[4];
	le32 format;		/* the coded format whose profiles/levels are asked */
	uint8_t padding2[4];
};

struct virtio_video_query_control_resp {
	struct virtio_video_cmd_hdr hdr;
	le32 num;
	uint8_t padding[4];
	/* num x le32 values follow */
};

struct virtio_video_get_control {
	struct virtio_video_cmd_hdr hdr;
	le32 control;
	uint8_t padding[4];
};

struct virtio_video_get_control_resp {
	struct virtio_video_cmd_hdr hdr;
	le32 value;
	uint8_t padding[4];
};

struct virtio_video_set_control {
	struct virtio_video_cmd_hdr hdr;
	le32 control;
	uint8_t padding[4];
	le32 value;
	uint8_t padding2[4];
};

/* FORCE_KEYFRAME may arrive without the value part. */
#define VIRTIO_VIDEO_SET_CONTROL_SHORT_SIZE 16

#define VV_ASSERT_SIZE(type, size) \
	_Static_assert(sizeof(struct type) == (size), #type " size")
#define VV_ASSERT_OFF(type, field, off) \
	_Static_assert(offsetof(struct type, field) == (off), #type "." #field)

VV_ASSERT_SIZE(virtio_video_config, 44);
VV_ASSERT_OFF(virtio_video_config, device_name, 12);
VV_ASSERT_SIZE(virtio_video_cmd_hdr, 8);
VV_ASSERT_SIZE(virtio_video_event, 8);
VV_ASSERT_SIZE(virtio_video_query_capability, 16);
VV_ASSERT_SIZE(virtio_video_format_range, 16);
VV_ASSERT_SIZE(virtio_video_format_frame, 40);
VV_ASSERT_SIZE(virtio_video_format_desc, 24);
VV_ASSERT_OFF(virtio_video_format_desc, format, 8);
VV_ASSERT_OFF(virtio_video_format_desc, num_frames, 20);
VV_ASSERT_SIZE(virtio_video_query_capability_resp, 16);
VV_ASSERT_SIZE(virtio_video_stream_create, 88);
VV_ASSERT_OFF(virtio_video_stream_create, coded_format, 16);
VV_ASSERT_OFF(virtio_video_stream_create, tag, 24);
VV_ASSERT_SIZE(virtio_video_mem_entry, 16);
VV_ASSERT_SIZE(virtio_video_object_entry, 16);
VV_ASSERT_SIZE(virtio_video_resource_create, 88);
VV_ASSERT_OFF(virtio_video_resource_create, plane_offsets, 24);
VV_ASSERT_OFF(virtio_video_resource_create, num_entries, 56);
VV_ASSERT_SIZE(virtio_video_resource_queue, 64);
VV_ASSERT_OFF(virtio_video_resource_queue, timestamp, 16);
VV_ASSERT_OFF(virtio_video_resource_queue, num_data_sizes, 24);
VV_ASSERT_OFF(virtio_video_resource_queue, data_sizes, 28);
VV_ASSERT_SIZE(virtio_video_resource_queue_resp, 24);
VV_ASSERT_OFF(virtio_video_resource_queue_resp, flags, 16);
VV_ASSERT_SIZE(virtio_video_queue_cmd, 16);
VV_ASSERT_SIZE(virtio_video_crop, 16);
VV_ASSERT_SIZE(virtio_video_plane_format, 8);
VV_ASSERT_SIZE(virtio_video_params, 112);
VV_ASSERT_OFF(virtio_video_params, crop, 24);
VV_ASSERT_OFF(virtio_video_params, frame_rate, 40);
VV_ASSERT_OFF(virtio_video_params, num_planes, 44);
VV_ASSERT_OFF(virtio_video_params, plane_formats, 48);
VV_ASSERT_SIZE(virtio_video_params_ext, 120);
VV_ASSERT_OFF(virtio_video_params_ext, resource_type, 112);
VV_ASSERT_SIZE(virtio_video_get_params_resp, 120);
VV_ASSERT_SIZE(virtio_video_get_params_ext_resp, 128);
VV_ASSERT_SIZE(virtio_video_set_params, 120);
VV_ASSERT_SIZE(virtio_video_set_params_ext, 128);
VV_ASSERT_SIZE(virtio_video_query_control, 24);
VV_ASSERT_OFF(virtio_video_query_control, format, 16);
VV_ASSERT_SIZE(virtio_video_query_control_resp, 16);
VV_ASSERT_SIZE(virtio_video_get_control, 16);
VV_ASSERT_SIZE(virtio_video_get_control_resp, 16);
VV_ASSERT_SIZE(virtio_video_set_control, 24);
VV_ASSERT_OFF(virtio_video_set_control, value, 16);

#endif /* VIRTIO_VIDEO_H */
