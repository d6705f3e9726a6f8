/* SPDX-License-Identifier: MIT */
/*
 * vufront: a test frontend for vhost-user-video.
 *
 * It plays both QEMU and the guest's virtio-video driver over a real unix
 * socket: it owns memfd-backed "guest memory" (two regions at non-adjacent,
 * non-zero guest-physical addresses, like a PC's RAM below and above 4 GiB),
 * runs the vhost-user handshake the way QEMU does, lays out split virtqueues
 * in that memory, and submits virtio-video commands as descriptor chains.
 *
 * Conventions
 *  - Functions return 0 (or a non-negative count/type) on success and -errno
 *    on failure; on failure vuf_error() describes what went wrong in one line.
 *  - Every wait is bounded by a timeout in milliseconds (-ETIMEDOUT).
 *  - Typed command helpers (vuf_stream_create, ...) return the response type
 *    (VIRTIO_VIDEO_RESP_*, host order) the device wrote, or -errno when the
 *    exchange itself failed (no answer, answer shorter than a header, ...).
 *    An error response type is NOT a -errno: tests assert on it.
 *  - Everything is host order in our structs, little-endian on the wire.
 *  - Not thread-safe: one thread drives one struct vuf.
 *  - Ring misbehaviour of the device (a completion for a chain that is not in
 *    flight, a used length beyond the writable space, a completion without a
 *    call notification) is counted in vuf->ring_errors and described in
 *    vuf_error(); tests should check it stays 0.
 */
#ifndef VUFRONT_H
#define VUFRONT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <linux/virtio_ring.h>

#include "../vu.h"
#include "../virtio_video.h"

#define VUF_NREGIONS 2
#define VUF_NQUEUES 2		/* 0 = commandq, 1 = eventq */
#define VUF_MAX_BUFS 16		/* descriptors per chain built by vuf_submit_bufs */
#define VUF_PAGE 4096u

/* Guest-physical bases: region 0 above 4 GiB, region 1 below; never adjacent. */
#define VUF_REGION0_GPA 0x100000000ull
#define VUF_REGION1_GPA 0x40000000ull

/* Default ack/reply wait for vhost-user messages and default command wait. */
#define VUF_REPLY_TIMEOUT_MS 20000
#define VUF_CMD_TIMEOUT_MS 20000
/* A completion in the used ring with no call notification for this long is
 * a device bug (see wait_done in vufront.c). */
#define VUF_CALL_GRACE_MS 15000

struct vuf_opts {
	unsigned queue_size;		/* power of two <= 32768; default 256 */
	bool event_idx;			/* negotiate EVENT_IDX if offered; default true */
	bool use_add_mem_reg;		/* ADD_MEM_REG per region instead of SET_MEM_TABLE */
	bool use_indirect;		/* commands as one indirect descriptor (needs the feature) */
	bool separate_memfds;		/* one memfd per region (default: one shared memfd
					 * with per-region mmap_offset, as QEMU does) */
	bool no_reply_ack;		/* do not negotiate REPLY_ACK */
	bool sealed;			/* seal the memfds against shrinking and growing,
					 * as QEMU memory-backend-memfd does (udmabuf needs
					 * it); default: VUV_FRONT_SEAL=1 in the environment */
	size_t region_size[VUF_NREGIONS]; /* default 64 MiB each, multiple of 4 KiB */
	unsigned n_events;		/* eventq buffers kept posted; default 16 */
	int connect_timeout_ms;		/* retry connect() this long; default 5000 */
	int reply_timeout_ms;		/* vhost-user replies; default VUF_REPLY_TIMEOUT_MS */
	int cmd_timeout_ms;		/* typed helpers; default VUF_CMD_TIMEOUT_MS */
	int verbose;			/* 1: log vhost-user messages to stderr */
};

/* Fill *o with the defaults above. */
void vuf_opts_default(struct vuf_opts *o);

struct vuf_region {
	uint64_t gpa;			/* guest-physical base */
	uint64_t size;
	uint8_t *va;			/* our mapping; also the "userspace_addr" we send */
	uint64_t mmap_offset;		/* offset of the region in its memfd */
	int fd;				/* memfd (may be shared by both regions) */
	uint64_t next;			/* bump allocator: next free offset */
};

struct vuf_slot;			/* private: one in-flight chain per head */

struct vuf_queue {
	unsigned num;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint64_t ind_gpa;		/* per-head indirect tables, VUF_MAX_BUFS each */
	struct vring_desc *desc;	/* in guest memory: malicious tests may poke */
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t avail_idx;		/* next avail index we publish */
	uint16_t last_used;		/* next used index we read */
	uint16_t *free_stack;		/* free descriptor indices */
	unsigned nfree;
	struct vuf_slot *slots;		/* indexed by head */
	int kick_fd, call_fd, err_fd;
	uint32_t last_base;		/* GET_VRING_BASE answer at the last vuf_stop */
};

struct vuf {
	struct vuf_opts opts;
	char path[108];
	int sock;			/* -1 when disconnected */
	struct vuf_region reg[VUF_NREGIONS];
	struct vuf_queue q[VUF_NQUEUES];

	/* Learned in the handshake. */
	uint64_t dev_features;		/* GET_FEATURES */
	uint64_t features;		/* what we SET_FEATURES */
	uint64_t dev_protocol_features;
	uint64_t protocol_features;	/* what we SET_PROTOCOL_FEATURES */
	uint64_t queue_num;		/* GET_QUEUE_NUM (0 if MQ not offered) */
	uint64_t max_mem_slots;		/* GET_MAX_MEM_SLOTS (0 if not offered) */
	struct virtio_video_config config; /* as read (little-endian fields) */
	uint32_t config_len;		/* bytes of config actually returned */
	bool ready;			/* handshake completed, rings enabled */

	unsigned ring_errors;		/* device ring misbehaviour, see above */
	uint64_t next_seq;		/* token sequence */
	uint64_t done_seq;		/* completion order */
	size_t ev_posted;		/* eventq buffers currently posted */
	uint64_t ev_gpa;		/* eventq buffers: n_events x 8 bytes */
	char err[512];
};

/* ---- lifecycle ---------------------------------------------------------- */

/* Allocate guest memory and rings (no connection yet). opts may be NULL for
 * the defaults. NULL on failure, with a message on stderr. */
struct vuf *vuf_new(const struct vuf_opts *opts);
/* Connect to path, retrying for opts.connect_timeout_ms while the daemon
 * starts (ENOENT, ECONNREFUSED). */
int vuf_connect(struct vuf *v, const char *path);
/* The QEMU sequence: features, protocol features, queue num, mem slots,
 * owner, vring call/err, config, SET_FEATURES, memory, rings, enable; then
 * posts the eventq buffers. Resets all ring state first, so it can follow a
 * reconnect. Acks checked when REPLY_ACK was negotiated. */
int vuf_handshake(struct vuf *v);
/* vuf_new + vuf_connect + vuf_handshake; NULL on failure with the reason in
 * err (if non-NULL). */
struct vuf *vuf_open(const char *path, const struct vuf_opts *opts, char *err, size_t errlen);
/* Stop like QEMU: SET_VRING_ENABLE 0 and GET_VRING_BASE per queue (stores
 * the answers in q[i].last_base). The socket stays open. */
int vuf_stop(struct vuf *v);
/* After vuf_stop, start again on the same connection as QEMU does when the
 * guest re-initialises the device (SET_FEATURES, SET_MEM_TABLE unless
 * ADD_MEM_REG was used, rings from index 0, enable, events). */
int vuf_restart(struct vuf *v);
/* After vuf_stop, start again as QEMU does on `cont`: the same rings at the
 * bases GET_VRING_BASE returned, everything in flight still in flight. */
int vuf_resume(struct vuf *v);
/* Close the socket without a word; forget every in-flight chain. Memory and
 * rings are kept for a later vuf_connect + vuf_handshake. */
void vuf_disconnect_abrupt(struct vuf *v);
/* vuf_disconnect_abrupt + vuf_connect(same path) + vuf_handshake. */
int vuf_reconnect(struct vuf *v);
/* Clean shutdown: vuf_stop if connected, close, free. NULL is fine. */
void vuf_close(struct vuf *v);

/* Set the last error message (vuf_error) and return err: for the command
 * layer (vvcmd.c). */
int vuf_fail(struct vuf *v, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The last error message ("" if none). */
const char *vuf_error(const struct vuf *v);
bool vuf_has_feature(const struct vuf *v, unsigned bit);		/* negotiated */
bool vuf_has_protocol_feature(const struct vuf *v, unsigned bit);	/* negotiated */

/* ---- guest memory --------------------------------------------------------- */

/* Allocate len bytes (zeroed) in region 0 or 1, aligned to align (a power of
 * two, 0 = 8). Returns the guest-physical address or 0 when full. */
uint64_t vuf_alloc(struct vuf *v, size_t len, size_t align, int region);
/* Our pointer for gpa, NULL if unmapped. */
void *vuf_va(struct vuf *v, uint64_t gpa);
/* Our pointer for [gpa, gpa+len) if it lies in one region, else NULL. */
void *vuf_va_range(struct vuf *v, uint64_t gpa, size_t len);

struct vuf_sg {
	uint64_t gpa;
	uint32_t len;
};

struct vuf_sglist {
	struct vuf_sg *e;		/* malloc'ed */
	unsigned n;
	size_t len;			/* total bytes */
};

/* One contiguous entry of len bytes in region. */
int vuf_alloc_contig(struct vuf *v, size_t len, int region, struct vuf_sglist *out);
/* The same, starting skip bytes (< a page) into a page. */
int vuf_alloc_contig_at(struct vuf *v, size_t len, int region, size_t skip,
			struct vuf_sglist *out);
/* len bytes as 4 KiB pages alternating between the regions, no two pages
 * adjacent in guest-physical space (the last page may be short). */
int vuf_alloc_scattered(struct vuf *v, size_t len, struct vuf_sglist *out);
void vuf_sglist_free(struct vuf_sglist *l);
/* Copy into / out of an sg list at byte offset off. -EINVAL if out of range. */
int vuf_sg_write(struct vuf *v, const struct vuf_sglist *l, size_t off, const void *src, size_t len);
int vuf_sg_read(struct vuf *v, const struct vuf_sglist *l, size_t off, void *dst, size_t len);

/* ---- raw vhost-user --------------------------------------------------------- */

/* Send one message: header {request, flags, size} + size payload bytes, with
 * fds as SCM_RIGHTS. flags go out exactly as given (pass VHOST_USER_VERSION
 * [| VHOST_USER_NEED_REPLY_MASK] for a well-formed message). payload NULL
 * sends the header alone, whatever size says. */
int vuf_send_msg(struct vuf *v, uint32_t request, uint32_t flags, const void *payload,
		 uint32_t size, const int *fds, unsigned nfds);
/* Send arbitrary bytes (a malformed header, a truncated message). */
int vuf_send_raw(struct vuf *v, const void *bytes, size_t len, const int *fds, unsigned nfds);
/* Receive one reply: fills *hdr, copies up to max payload bytes into buf and
 * returns the payload size; -EMSGSIZE if it was larger (the rest is
 * discarded), -EPIPE on hang-up, -ETIMEDOUT, -EPROTO if the REPLY flag or the
 * version is wrong. */
int vuf_recv_reply(struct vuf *v, struct vhost_user_hdr *hdr, void *buf, size_t max, int timeout_ms);
/* Wait until the daemon closes the connection (0), or -ETIMEDOUT. Any
 * replies still coming are discarded. */
int vuf_wait_hangup(struct vuf *v, int timeout_ms);
/* Request without payload expecting a u64 reply (GET_FEATURES, ...). */
int vuf_get_u64(struct vuf *v, uint32_t request, uint64_t *val);
/* GET_CONFIG of size bytes at offset into buf; returns the bytes returned. */
int vuf_get_config(struct vuf *v, uint32_t offset, void *buf, uint32_t size);

/* ---- virtqueues -------------------------------------------------------------- */

/* One buffer of a chain. */
struct vuf_buf {
	uint64_t gpa;
	uint32_t len;
	bool write;			/* device-writable */
};

/* Post one chain of n buffers on queue q (direct, or as one indirect table)
 * and kick if the device wants it. *token identifies it. -ENOSPC when the
 * ring is full. The gpas are not checked: malicious tests may point them
 * anywhere. */
int vuf_submit_bufs(struct vuf *v, unsigned q, const struct vuf_buf *b, unsigned n,
		    bool indirect, uint64_t *token);
/* Wait for the chain token and release it: returns its used length. The
 * first min(used length, max) bytes written into its device-writable buffers
 * (in chain order) are copied to resp (may be NULL). -ETIMEDOUT leaves it in
 * flight (wait again later); -EPROTO if the used length exceeds the writable
 * space (the chain is still released). */
int vuf_wait(struct vuf *v, uint64_t token, void *resp, size_t max, int timeout_ms);
/* Wait until any chain of the commandq has completed and not been collected;
 * *token = the earliest such. Collect it with vuf_wait (returns at once).
 * -EPROTO (completed without a call notification) also sets *token. */
int vuf_wait_any(struct vuf *v, uint64_t *token, int timeout_ms);
/* Is the chain done (after reading the used ring)? */
bool vuf_done(struct vuf *v, uint64_t token);
/* Chains of the commandq posted and not yet collected. */
unsigned vuf_in_flight(struct vuf *v);
/* Read the used ring of q now and account for what arrived. */
void vuf_reap(struct vuf *v, unsigned q);
/* Kick q unconditionally. */
int vuf_kick(struct vuf *v, unsigned q);

/* ---- virtio-video commands ------------------------------------------------------ */

/* Post one command on the commandq: request (readable), optional payload
 * (readable, own descriptor), response space of resp_len (writable). The
 * bytes live in guest memory owned by the chain until collected. */
int vuf_submit(struct vuf *v, const void *req, size_t req_len, const void *payload,
	       size_t payload_len, size_t resp_len, uint64_t *token);
/* vuf_submit + vuf_wait: returns the used length. */
int vuf_cmd(struct vuf *v, const void *req, size_t req_len, const void *payload,
	    size_t payload_len, void *resp, size_t resp_len, int timeout_ms);
/* Wait for a chain whose response begins with a header: returns its
 * response type, -EPROTO if fewer than min_len bytes were written (an error
 * type needs only the 8-byte header). resp may be NULL. */
int vuf_wait_type(struct vuf *v, uint64_t token, void *resp, size_t resp_len,
		  size_t min_len, int timeout_ms);

/* The eventq: wait for one event (host order in *ev), then re-post its
 * buffer. -EPROTO if it was not exactly 8 bytes or came without a call. */
int vuf_event_wait(struct vuf *v, struct virtio_video_event *ev, int timeout_ms);

/* Host-order views of the wire structs. */
struct vuf_params {
	uint32_t queue_type, format, frame_width, frame_height;
	uint32_t min_buffers, max_buffers;
	struct { uint32_t left, top, width, height; } crop;
	uint32_t frame_rate, num_planes;
	struct { uint32_t plane_size, stride; } plane[VIRTIO_VIDEO_MAX_PLANES];
	uint32_t resource_type;		/* _EXT only */
};

struct vuf_rq_result {
	uint64_t timestamp;
	uint32_t flags;			/* VIRTIO_VIDEO_BUFFER_FLAG_* */
	uint32_t size;
	uint32_t used_len;		/* bytes the device wrote (fields valid if >= 24) */
};

int vuf_stream_create(struct vuf *v, uint32_t stream_id, uint32_t in_mem_type,
		      uint32_t out_mem_type, uint32_t coded_format, const char *tag);
int vuf_stream_destroy(struct vuf *v, uint32_t stream_id);
/* DRAIN is answered only once the drain is done. */
int vuf_stream_drain(struct vuf *v, uint32_t stream_id, int timeout_ms);
int vuf_stream_drain_submit(struct vuf *v, uint32_t stream_id, uint64_t *token);
/* mem[p] are the entries of plane slot p (num_entries[p] = mem[p].n), for
 * p < n_mem; entries go in a separate payload descriptor. */
int vuf_resource_create(struct vuf *v, uint32_t stream_id, uint32_t queue_type,
			uint32_t resource_id, uint32_t planes_layout, uint32_t num_planes,
			const uint32_t *plane_offsets, const struct vuf_sglist *mem, unsigned n_mem);
/* Async: stays in flight until the buffer is done. Collect with
 * vuf_resource_queue_wait (or vuf_wait_any first). */
int vuf_resource_queue(struct vuf *v, uint32_t stream_id, uint32_t queue_type,
		       uint32_t resource_id, uint64_t timestamp, unsigned num_data_sizes,
		       const uint32_t *data_sizes, uint64_t *token);
int vuf_resource_queue_wait(struct vuf *v, uint64_t token, struct vuf_rq_result *res,
			    int timeout_ms);
int vuf_resource_destroy_all(struct vuf *v, uint32_t stream_id, uint32_t queue_type);
int vuf_queue_clear(struct vuf *v, uint32_t stream_id, uint32_t queue_type, int timeout_ms);
int vuf_queue_clear_submit(struct vuf *v, uint32_t stream_id, uint32_t queue_type, uint64_t *token);
/* ext: GET_PARAMS_EXT/SET_PARAMS_EXT (with resource_type) or pure v3. */
int vuf_get_params(struct vuf *v, uint32_t stream_id, uint32_t queue_type, bool ext,
		   struct vuf_params *out);
int vuf_set_params(struct vuf *v, uint32_t stream_id, const struct vuf_params *p, bool ext);
/* values[] gets up to max values; *num the count the device reported. */
int vuf_query_control(struct vuf *v, uint32_t stream_id, uint32_t control, uint32_t format,
		      uint32_t *values, unsigned max, unsigned *num);
int vuf_get_control(struct vuf *v, uint32_t stream_id, uint32_t control, uint32_t *value);
int vuf_set_control(struct vuf *v, uint32_t stream_id, uint32_t control, uint32_t value);

/* ---- capabilities ------------------------------------------------------------------ */

struct vuf_range {
	uint32_t min, max, step;
};

struct vuf_frame {
	struct vuf_range width, height;
	unsigned num_rates;
	struct vuf_range *rates;
};

struct vuf_format_desc {
	uint64_t mask;
	uint32_t format, planes_layout, plane_align;
	unsigned num_frames;
	struct vuf_frame *frames;
};

struct vuf_caps {
	uint32_t queue_type;
	unsigned num_descs;
	struct vuf_format_desc *descs;
};

/* Parse a QUERY_CAPABILITY response of len bytes (header included) with
 * every bound checked. -EPROTO with a reason in err on malformed input. */
int vuf_caps_parse(const void *buf, size_t len, struct vuf_caps *out, char *err, size_t errlen);
void vuf_caps_free(struct vuf_caps *c);
/* QUERY_CAPABILITY (response space max_caps_length, or 4096 if unknown) +
 * parse. Returns the response type; *out is filled only for OK. */
int vuf_query_capability(struct vuf *v, uint32_t queue_type, struct vuf_caps *out);
/* Print caps; other (may be NULL) names the mask bits. */
void vuf_caps_print(FILE *f, const struct vuf_caps *c, const struct vuf_caps *other);

/* ---- names -------------------------------------------------------------------------- */

const char *vuf_cmd_name(uint32_t type);	/* commands and responses */
const char *vuf_format_name(uint32_t fmt);
const char *vuf_queue_type_name(uint32_t qt);
const char *vuf_control_name(uint32_t ctrl);
const char *vuf_feature_name(unsigned bit);	/* virtio + virtio-video bits */
const char *vuf_protocol_feature_name(unsigned bit);
const char *vuf_request_name(uint32_t req);	/* vhost-user requests */
/* Response type is one of 0x200-0x205 / 0x300-0x305. */
bool vuf_resp_type_valid(uint32_t type);
bool vuf_resp_type_is_error(uint32_t type);

#endif /* VUFRONT_H */
