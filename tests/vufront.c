/* SPDX-License-Identifier: MIT */
/*
 * vufront: a test frontend for vhost-user-video (see vufront.h).
 *
 * Written from the vhost-user protocol text (QEMU docs/interop/vhost-user.rst),
 * the virtio 1.x split ring layout and the virtio-video v3 tables in
 * shared/virtio-video-v3.md. Guest memory is ours: the device reads and
 * writes it through its own mapping of the same memfd, so ring indices are
 * accessed with atomics and explicit fences, as a guest driver would.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include "vufront.h"

#define MIB (1024u * 1024u)
#define MAX_REPLY (1u * MIB)		/* larger vhost-user replies are a protocol error */
#define CMDQ VIRTIO_VIDEO_QUEUE_COMMAND
#define EVQ VIRTIO_VIDEO_QUEUE_EVENT
#define TOKEN_Q_BIT 0x8000u		/* heads are < 32768, bit 15 names the queue */

struct vuf_slot {
	uint64_t seq;			/* 0: free */
	bool done;
	bool overlong;			/* used length > writable space */
	uint32_t used_len;
	uint64_t done_order;
	unsigned ndesc;
	uint16_t ids[VUF_MAX_BUFS];
	unsigned nbufs;
	struct vuf_buf bufs[VUF_MAX_BUFS];
	uint32_t wr_total;
	uint64_t scratch_gpa;		/* bytes of vuf_submit, grown on demand */
	size_t scratch_cap;
};

/* ---- errors and logging --------------------------------------------------- */

__attribute__((format(printf, 3, 4)))
static int fail(struct vuf *v, int err, const char *fmt, ...)
{
	char msg[sizeof(v->err)];
	va_list ap;

	/* Formatted aside first: callers may pass v->err as an argument. */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memcpy(v->err, msg, sizeof(msg));
	if (v->opts.verbose)
		fprintf(stderr, "vufront: %s\n", v->err);
	return err;
}

__attribute__((format(printf, 2, 3)))
static void ring_error(struct vuf *v, const char *fmt, ...)
{
	char msg[sizeof(v->err)];
	va_list ap;

	v->ring_errors++;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memcpy(v->err, msg, sizeof(msg));
	fprintf(stderr, "vufront: ring error: %s\n", v->err);
}

const char *vuf_error(const struct vuf *v)
{
	return v ? v->err : "no frontend";
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining_ms(int64_t deadline)
{
	int64_t r = deadline - now_ms();

	return r < 0 ? 0 : r > 0x7fffffff ? 0x7fffffff : (int)r;
}

static size_t align_up(size_t x, size_t a)
{
	return (x + a - 1) & ~(a - 1);
}

static uint32_t rd32(const uint8_t *p)
{
	uint32_t x;

	memcpy(&x, p, 4);
	return le32toh(x);
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t x;

	memcpy(&x, p, 8);
	return le64toh(x);
}

/* ---- names ------------------------------------------------------------------ */

static const char *const cmd_names[] = {
	[0x00] = "QUERY_CAPABILITY", [0x01] = "STREAM_CREATE", [0x02] = "STREAM_DESTROY",
	[0x03] = "STREAM_DRAIN", [0x04] = "RESOURCE_CREATE", [0x05] = "RESOURCE_QUEUE",
	[0x06] = "RESOURCE_DESTROY_ALL", [0x07] = "QUEUE_CLEAR", [0x08] = "GET_PARAMS",
	[0x09] = "SET_PARAMS", [0x0A] = "QUERY_CONTROL", [0x0B] = "GET_CONTROL",
	[0x0C] = "SET_CONTROL", [0x0D] = "GET_PARAMS_EXT", [0x0E] = "SET_PARAMS_EXT",
};

static const char *const resp_names[] = {
	[0x00] = "OK_NODATA", [0x01] = "OK_QUERY_CAPABILITY", [0x02] = "OK_RESOURCE_QUEUE",
	[0x03] = "OK_GET_PARAMS", [0x04] = "OK_QUERY_CONTROL", [0x05] = "OK_GET_CONTROL",
};

static const char *const err_names[] = {
	[0x00] = "ERR_INVALID_OPERATION", [0x01] = "ERR_OUT_OF_MEMORY",
	[0x02] = "ERR_INVALID_STREAM_ID", [0x03] = "ERR_INVALID_RESOURCE_ID",
	[0x04] = "ERR_INVALID_PARAMETER", [0x05] = "ERR_UNSUPPORTED_CONTROL",
};

#define NAME(tab, i) ((size_t)(i) < sizeof(tab) / sizeof((tab)[0]) && (tab)[i] ? (tab)[i] : NULL)

const char *vuf_cmd_name(uint32_t type)
{
	const char *n = NULL;

	if (type >= 0x100 && type < 0x200)
		n = NAME(cmd_names, type - 0x100);
	else if (type >= 0x200 && type < 0x300)
		n = NAME(resp_names, type - 0x200);
	else if (type >= 0x300 && type < 0x400)
		n = NAME(err_names, type - 0x300);
	return n ? n : "unknown";
}

bool vuf_resp_type_valid(uint32_t type)
{
	return (type >= 0x200 && type <= 0x205) || vuf_resp_type_is_error(type);
}

bool vuf_resp_type_is_error(uint32_t type)
{
	return type >= 0x300 && type <= 0x305;
}

static const char *const raw_fmt_names[] = {
	[1] = "ARGB8888", [2] = "BGRA8888", [3] = "NV12", [4] = "YUV420", [5] = "YVU420",
};

static const char *const coded_fmt_names[] = {
	[0] = "MPEG2", [1] = "MPEG4", [2] = "H264", [3] = "HEVC", [4] = "VP8", [5] = "VP9",
	[6] = "FWHT",
};

const char *vuf_format_name(uint32_t fmt)
{
	const char *n = NULL;

	if (fmt < 0x1000)
		n = NAME(raw_fmt_names, fmt);
	else
		n = NAME(coded_fmt_names, fmt - 0x1000);
	return n ? n : "unknown";
}

const char *vuf_queue_type_name(uint32_t qt)
{
	return qt == VIRTIO_VIDEO_QUEUE_TYPE_INPUT ? "input" :
	       qt == VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT ? "output" : "unknown";
}

static const char *const control_names[] = {
	[1] = "BITRATE", [2] = "PROFILE", [3] = "LEVEL", [4] = "FORCE_KEYFRAME",
	[5] = "BITRATE_MODE", [6] = "BITRATE_PEAK", [7] = "PREPEND_SPSPPS_TO_IDR",
};

const char *vuf_control_name(uint32_t ctrl)
{
	const char *n = NAME(control_names, ctrl);

	return n ? n : "unknown";
}

static const char *const feature_names[64] = {
	[VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES] = "RESOURCE_GUEST_PAGES",
	[VIRTIO_VIDEO_F_RESOURCE_NON_CONTIG] = "RESOURCE_NON_CONTIG",
	[VIRTIO_VIDEO_F_RESOURCE_VIRTIO_OBJECT] = "RESOURCE_VIRTIO_OBJECT",
	[24] = "NOTIFY_ON_EMPTY", [27] = "ANY_LAYOUT",
	[VIRTIO_RING_F_INDIRECT_DESC] = "RING_INDIRECT_DESC",
	[VIRTIO_RING_F_EVENT_IDX] = "RING_EVENT_IDX",
	[VHOST_USER_F_PROTOCOL_FEATURES] = "PROTOCOL_FEATURES",
	[32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER",
	[36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA",
	[39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET",
};

const char *vuf_feature_name(unsigned bit)
{
	const char *n = NAME(feature_names, bit);

	return n ? n : "unknown";
}

static const char *const proto_feature_names[64] = {
	[0] = "MQ", [1] = "LOG_SHMFD", [2] = "RARP", [3] = "REPLY_ACK", [4] = "NET_MTU",
	[5] = "BACKEND_REQ", [6] = "CROSS_ENDIAN", [7] = "CRYPTO_SESSION", [8] = "PAGEFAULT",
	[9] = "CONFIG", [10] = "BACKEND_SEND_FD", [11] = "HOST_NOTIFIER",
	[12] = "INFLIGHT_SHMFD", [13] = "RESET_DEVICE", [14] = "INBAND_NOTIFICATIONS",
	[15] = "CONFIGURE_MEM_SLOTS", [16] = "STATUS", [17] = "XEN_MMAP",
	[18] = "SHARED_OBJECT", [19] = "DEVICE_STATE",
};

const char *vuf_protocol_feature_name(unsigned bit)
{
	const char *n = NAME(proto_feature_names, bit);

	return n ? n : "unknown";
}

static const char *const request_names[] = {
	[1] = "GET_FEATURES", [2] = "SET_FEATURES", [3] = "SET_OWNER", [4] = "RESET_OWNER",
	[5] = "SET_MEM_TABLE", [6] = "SET_LOG_BASE", [7] = "SET_LOG_FD",
	[8] = "SET_VRING_NUM", [9] = "SET_VRING_ADDR", [10] = "SET_VRING_BASE",
	[11] = "GET_VRING_BASE", [12] = "SET_VRING_KICK", [13] = "SET_VRING_CALL",
	[14] = "SET_VRING_ERR", [15] = "GET_PROTOCOL_FEATURES",
	[16] = "SET_PROTOCOL_FEATURES", [17] = "GET_QUEUE_NUM", [18] = "SET_VRING_ENABLE",
	[19] = "SEND_RARP", [20] = "NET_SET_MTU", [21] = "SET_BACKEND_REQ_FD",
	[22] = "IOTLB_MSG", [23] = "SET_VRING_ENDIAN", [24] = "GET_CONFIG",
	[25] = "SET_CONFIG", [34] = "RESET_DEVICE", [36] = "GET_MAX_MEM_SLOTS",
	[37] = "ADD_MEM_REG", [38] = "REM_MEM_REG", [39] = "SET_STATUS", [40] = "GET_STATUS",
};

const char *vuf_request_name(uint32_t req)
{
	const char *n = NAME(request_names, req);

	return n ? n : "unknown";
}

bool vuf_has_feature(const struct vuf *v, unsigned bit)
{
	return bit < 64 && (v->features >> bit) & 1;
}

bool vuf_has_protocol_feature(const struct vuf *v, unsigned bit)
{
	return bit < 64 && (v->protocol_features >> bit) & 1;
}

/* ---- guest memory ---------------------------------------------------------- */

void vuf_opts_default(struct vuf_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->queue_size = 256;
	o->event_idx = true;
	o->region_size[0] = 64 * MIB;
	o->region_size[1] = 64 * MIB;
	o->n_events = 16;
	o->connect_timeout_ms = 5000;
	o->reply_timeout_ms = VUF_REPLY_TIMEOUT_MS;
	o->cmd_timeout_ms = VUF_CMD_TIMEOUT_MS;
}

static int new_memfd(size_t size)
{
	int fd = memfd_create("vufront-guest", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

/*
 * Like QEMU on a PC with memory-backend-memfd: one memfd holds both regions,
 * region 1 (low gpa) at file offset 0 and region 0 (high gpa) after it, so
 * region 0 has a non-zero mmap_offset. Our mapping address is the
 * "userspace_addr" sent to the daemon: distinct from the gpa.
 */
static int mem_setup(struct vuf *v)
{
	size_t s0 = v->opts.region_size[0], s1 = v->opts.region_size[1];
	uint64_t gpa[VUF_NREGIONS] = { VUF_REGION0_GPA, VUF_REGION1_GPA };
	size_t sz[VUF_NREGIONS] = { s0, s1 };

	if (!s0 || !s1 || s0 % VUF_PAGE || s1 % VUF_PAGE || s1 > VUF_REGION0_GPA - VUF_REGION1_GPA - VUF_PAGE)
		return fail(v, -EINVAL, "bad region sizes %zu, %zu", s0, s1);
	if (!v->opts.separate_memfds) {
		int fd = new_memfd(s0 + s1);
		uint8_t *base;

		if (fd < 0)
			return fail(v, fd, "memfd_create: %s", strerror(-fd));
		base = mmap(NULL, s0 + s1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (base == MAP_FAILED) {
			close(fd);
			return fail(v, -ENOMEM, "mmap guest memory: %s", strerror(errno));
		}
		v->reg[1] = (struct vuf_region){ gpa[1], s1, base, 0, fd, 0 };
		v->reg[0] = (struct vuf_region){ gpa[0], s0, base + s1, s1, fd, 0 };
		return 0;
	}
	for (int i = 0; i < VUF_NREGIONS; i++) {
		int fd = new_memfd(sz[i]);
		uint8_t *va;

		if (fd < 0)
			return fail(v, fd, "memfd_create: %s", strerror(-fd));
		va = mmap(NULL, sz[i], PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (va == MAP_FAILED) {
			close(fd);
			return fail(v, -ENOMEM, "mmap guest memory: %s", strerror(errno));
		}
		v->reg[i] = (struct vuf_region){ gpa[i], sz[i], va, 0, fd, 0 };
	}
	return 0;
}

static void mem_free(struct vuf *v)
{
	if (!v->opts.separate_memfds) {
		if (v->reg[1].va)
			munmap(v->reg[1].va, v->reg[0].size + v->reg[1].size);
		if (v->reg[1].fd >= 0)
			close(v->reg[1].fd);
		return;
	}
	for (int i = 0; i < VUF_NREGIONS; i++) {
		if (v->reg[i].va)
			munmap(v->reg[i].va, v->reg[i].size);
		if (v->reg[i].fd >= 0)
			close(v->reg[i].fd);
	}
}

uint64_t vuf_alloc(struct vuf *v, size_t len, size_t align, int region)
{
	struct vuf_region *r;
	uint64_t off;

	if (region < 0 || region >= VUF_NREGIONS || !len)
		return 0;
	if (!align)
		align = 8;
	if (align & (align - 1))
		return 0;
	r = &v->reg[region];
	off = align_up(r->next, align);
	if (off > r->size || len > r->size - off) {
		fail(v, -ENOMEM, "guest memory region %d exhausted (%zu bytes wanted)", region, len);
		return 0;
	}
	r->next = off + len;
	memset(r->va + off, 0, len);
	return r->gpa + off;
}

void *vuf_va_range(struct vuf *v, uint64_t gpa, size_t len)
{
	for (int i = 0; i < VUF_NREGIONS; i++) {
		struct vuf_region *r = &v->reg[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
			return r->va + (gpa - r->gpa);
	}
	return NULL;
}

void *vuf_va(struct vuf *v, uint64_t gpa)
{
	return vuf_va_range(v, gpa, 1);
}

int vuf_alloc_contig(struct vuf *v, size_t len, int region, struct vuf_sglist *out)
{
	uint64_t gpa;

	memset(out, 0, sizeof(*out));
	if (!len || len > UINT32_MAX)
		return fail(v, -EINVAL, "bad buffer length %zu", len);
	gpa = vuf_alloc(v, len, VUF_PAGE, region);
	if (!gpa)
		return -ENOMEM;
	out->e = malloc(sizeof(*out->e));
	if (!out->e)
		return fail(v, -ENOMEM, "out of memory");
	out->e[0] = (struct vuf_sg){ gpa, (uint32_t)len };
	out->n = 1;
	out->len = len;
	return 0;
}

int vuf_alloc_scattered(struct vuf *v, size_t len, struct vuf_sglist *out)
{
	size_t n = (len + VUF_PAGE - 1) / VUF_PAGE, left = len;

	memset(out, 0, sizeof(*out));
	if (!len || n > UINT32_MAX)
		return fail(v, -EINVAL, "bad buffer length %zu", len);
	out->e = calloc(n, sizeof(*out->e));
	if (!out->e)
		return fail(v, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		int region = (int)(i & 1);
		uint64_t gpa = vuf_alloc(v, VUF_PAGE, VUF_PAGE, region);

		/* A one-page hole after every page keeps pages of the same
		 * region apart; the two regions are far apart anyway. */
		if (!gpa || !vuf_alloc(v, VUF_PAGE, VUF_PAGE, region)) {
			vuf_sglist_free(out);
			return -ENOMEM;
		}
		out->e[i].gpa = gpa;
		out->e[i].len = left < VUF_PAGE ? (uint32_t)left : VUF_PAGE;
		left -= out->e[i].len;
	}
	out->n = (unsigned)n;
	out->len = len;
	return 0;
}

void vuf_sglist_free(struct vuf_sglist *l)
{
	free(l->e);
	memset(l, 0, sizeof(*l));
}

static int sg_copy(struct vuf *v, const struct vuf_sglist *l, size_t off, void *buf,
		   size_t len, bool to_guest)
{
	uint8_t *p = buf;

	if (off > l->len || len > l->len - off)
		return fail(v, -EINVAL, "copy of %zu bytes at %zu beyond a %zu-byte buffer",
			    len, off, l->len);
	for (unsigned i = 0; i < l->n && len; i++) {
		size_t n;
		uint8_t *g;

		if (off >= l->e[i].len) {
			off -= l->e[i].len;
			continue;
		}
		n = l->e[i].len - off;
		if (n > len)
			n = len;
		g = vuf_va_range(v, l->e[i].gpa + off, n);
		if (!g)
			return fail(v, -EFAULT, "sg entry %u not in guest memory", i);
		if (to_guest)
			memcpy(g, p, n);
		else
			memcpy(p, g, n);
		p += n;
		len -= n;
		off = 0;
	}
	return 0;
}

int vuf_sg_write(struct vuf *v, const struct vuf_sglist *l, size_t off, const void *src, size_t len)
{
	return sg_copy(v, l, off, (void *)src, len, true);
}

int vuf_sg_read(struct vuf *v, const struct vuf_sglist *l, size_t off, void *dst, size_t len)
{
	return sg_copy(v, l, off, dst, len, false);
}

/* ---- rings: layout ------------------------------------------------------------ */

static int queue_alloc(struct vuf *v, unsigned qi)
{
	struct vuf_queue *q = &v->q[qi];
	unsigned n = v->opts.queue_size;

	q->num = n;
	q->kick_fd = q->call_fd = q->err_fd = -1;
	/* Descriptors and avail ring in region 0, used ring in region 1: the
	 * daemon must translate each address on its own. */
	q->desc_gpa = vuf_alloc(v, 16u * n, VUF_PAGE, 0);
	q->avail_gpa = vuf_alloc(v, 6u + 2u * n, VUF_PAGE, 0);
	q->used_gpa = vuf_alloc(v, 6u + 8u * n, VUF_PAGE, 1);
	q->ind_gpa = vuf_alloc(v, (size_t)16 * VUF_MAX_BUFS * n, VUF_PAGE, 1);
	if (!q->desc_gpa || !q->avail_gpa || !q->used_gpa || !q->ind_gpa)
		return -ENOMEM;
	q->desc = vuf_va(v, q->desc_gpa);
	q->avail = vuf_va(v, q->avail_gpa);
	q->used = vuf_va(v, q->used_gpa);
	q->free_stack = calloc(n, sizeof(*q->free_stack));
	q->slots = calloc(n, sizeof(*q->slots));
	if (!q->free_stack || !q->slots)
		return fail(v, -ENOMEM, "out of memory");
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Forget every chain; with zero_ring also clear the ring memory (only once
 * the daemon is known to be done with the previous connection). */
static void queue_reset(struct vuf_queue *q, bool zero_ring)
{
	if (zero_ring) {
		memset(q->desc, 0, 16u * q->num);
		memset(q->avail, 0, 6u + 2u * q->num);
		memset(q->used, 0, 6u + 8u * q->num);
	}
	q->avail_idx = q->last_used = 0;
	/* Pop order 0, 1, 2, ... */
	for (unsigned i = 0; i < q->num; i++)
		q->free_stack[i] = (uint16_t)(q->num - 1 - i);
	q->nfree = q->num;
	for (unsigned i = 0; i < q->num; i++) {
		q->slots[i].seq = 0;
		q->slots[i].done = false;
	}
}

static int queue_fds(struct vuf *v, struct vuf_queue *q)
{
	close_fd(&q->kick_fd);
	close_fd(&q->call_fd);
	close_fd(&q->err_fd);
	q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->err_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->kick_fd < 0 || q->call_fd < 0 || q->err_fd < 0)
		return fail(v, -errno, "eventfd: %s", strerror(errno));
	return 0;
}

/* ---- socket ---------------------------------------------------------------------- */

/*
 * The socket is non-blocking: a daemon that stops reading cannot hang us.
 * The message is flattened so that a partial send can be resumed; the fds
 * go with the first byte.
 */
static int send_all(struct vuf *v, const struct iovec *iov, int iovcnt, const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} cm;
	int64_t deadline = now_ms() + v->opts.reply_timeout_ms;
	size_t total = 0, off = 0;
	uint8_t *flat;
	int ret = 0;

	if (v->sock < 0)
		return fail(v, -ENOTCONN, "not connected");
	if (nfds > 16)
		return fail(v, -EINVAL, "too many fds");
	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	flat = malloc(total ? total : 1);
	if (!flat)
		return fail(v, -ENOMEM, "out of memory");
	for (int i = 0; i < iovcnt; i++) {
		memcpy(flat + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	off = 0;
	do {
		struct iovec io = { flat + off, total - off };
		struct msghdr mh = { .msg_iov = &io, .msg_iovlen = 1 };
		struct pollfd p = { v->sock, POLLOUT, 0 };
		ssize_t n;

		if (nfds && off == 0) {
			struct cmsghdr *c;

			memset(&cm, 0, sizeof(cm));
			mh.msg_control = cm.buf;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
		}
		n = sendmsg(v->sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN) {
			ret = fail(v, -errno, "send: %s", strerror(errno));
			break;
		}
		if (poll(&p, 1, remaining_ms(deadline)) == 0) {
			ret = fail(v, -ETIMEDOUT, "send: daemon not reading for %d ms",
				   v->opts.reply_timeout_ms);
			break;
		}
	} while (off < total);
	free(flat);
	return ret;
}

int vuf_send_raw(struct vuf *v, const void *bytes, size_t len, const int *fds, unsigned nfds)
{
	struct iovec iov = { (void *)bytes, len };

	return send_all(v, &iov, 1, fds, nfds);
}

int vuf_send_msg(struct vuf *v, uint32_t request, uint32_t flags, const void *payload,
		 uint32_t size, const int *fds, unsigned nfds)
{
	struct vhost_user_hdr h = { request, flags, size };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)payload, payload ? size : 0 } };

	if (v->opts.verbose)
		fprintf(stderr, "vufront: -> %s flags 0x%x size %u fds %u\n",
			vuf_request_name(request), flags, size, nfds);
	return send_all(v, iov, payload && size ? 2 : 1, fds, nfds);
}

/* Read exactly len bytes by the deadline; fds that arrive are closed. */
static int recv_full(struct vuf *v, void *buf, size_t len, int64_t deadline)
{
	uint8_t *p = buf;

	while (len) {
		char cbuf[CMSG_SPACE(sizeof(int) * 8)];
		struct iovec iov = { p, len };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct pollfd pfd = { v->sock, POLLIN, 0 };
		ssize_t n;
		int r = poll(&pfd, 1, remaining_ms(deadline));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail(v, -errno, "poll: %s", strerror(errno));
		if (r == 0)
			return -ETIMEDOUT;
		n = recvmsg(v->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return fail(v, -errno, "recv: %s", strerror(errno));
		if (n == 0)
			return -EPIPE;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int fd;

				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				close(fd);
			}
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int vuf_recv_reply(struct vuf *v, struct vhost_user_hdr *hdr, void *buf, size_t max, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	uint8_t sink[256];
	size_t left;
	int r;

	if (v->sock < 0)
		return fail(v, -ENOTCONN, "not connected");
	r = recv_full(v, hdr, sizeof(*hdr), deadline);
	if (r == -ETIMEDOUT)
		return fail(v, r, "no reply within %d ms", timeout_ms);
	if (r == -EPIPE)
		return fail(v, r, "daemon closed the connection");
	if (r < 0)
		return r;
	if (v->opts.verbose)
		fprintf(stderr, "vufront: <- %s flags 0x%x size %u\n",
			vuf_request_name(hdr->request), hdr->flags, hdr->size);
	if ((hdr->flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION ||
	    !(hdr->flags & VHOST_USER_REPLY_MASK))
		return fail(v, -EPROTO, "reply to %s with bad flags 0x%x",
			    vuf_request_name(hdr->request), hdr->flags);
	if (hdr->size > MAX_REPLY)
		return fail(v, -EPROTO, "reply to %s claims %u bytes",
			    vuf_request_name(hdr->request), hdr->size);
	r = recv_full(v, buf, hdr->size < max ? hdr->size : max, deadline);
	if (r < 0)
		return fail(v, r, "reply to %s: payload: %s", vuf_request_name(hdr->request),
			    strerror(-r));
	for (left = hdr->size > max ? hdr->size - max : 0; left;) {
		size_t n = left < sizeof(sink) ? left : sizeof(sink);

		r = recv_full(v, sink, n, deadline);
		if (r < 0)
			return fail(v, r, "reply payload: %s", strerror(-r));
		left -= n;
	}
	if (hdr->size > max)
		return fail(v, -EMSGSIZE, "reply to %s of %u bytes, expected at most %zu",
			    vuf_request_name(hdr->request), hdr->size, max);
	return (int)hdr->size;
}

int vuf_wait_hangup(struct vuf *v, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	uint8_t sink[512];

	for (;;) {
		struct pollfd pfd = { v->sock, POLLIN, 0 };
		int r = poll(&pfd, 1, remaining_ms(deadline));
		ssize_t n;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return fail(v, -ETIMEDOUT, "daemon kept the connection open for %d ms",
				    timeout_ms);
		n = recv(v->sock, sink, sizeof(sink), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return 0;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return fail(v, -errno, "recv: %s", strerror(errno));
	}
}

static int expect_reply(struct vuf *v, uint32_t request, void *buf, size_t len)
{
	struct vhost_user_hdr h;
	int r = vuf_recv_reply(v, &h, buf, len, v->opts.reply_timeout_ms);

	if (r < 0)
		return fail(v, r, "%s: %s", vuf_request_name(request), v->err);
	if (h.request != request)
		return fail(v, -EPROTO, "%s answered with request %u (%s)",
			    vuf_request_name(request), h.request, vuf_request_name(h.request));
	if ((size_t)r != len)
		return fail(v, -EPROTO, "%s reply of %d bytes, expected %zu",
			    vuf_request_name(request), r, len);
	return 0;
}

int vuf_get_u64(struct vuf *v, uint32_t request, uint64_t *val)
{
	int r = vuf_send_msg(v, request, VHOST_USER_VERSION, NULL, 0, NULL, 0);

	return r < 0 ? r : expect_reply(v, request, val, sizeof(*val));
}

/* A setup message: with REPLY_ACK it asks for an ack and checks it is 0. */
static int msg_acked(struct vuf *v, uint32_t request, const void *payload, uint32_t size,
		     const int *fds, unsigned nfds)
{
	bool ack = vuf_has_protocol_feature(v, VHOST_USER_PROTOCOL_F_REPLY_ACK);
	uint64_t status;
	int r;

	r = vuf_send_msg(v, request, VHOST_USER_VERSION | (ack ? VHOST_USER_NEED_REPLY_MASK : 0),
			 payload, size, fds, nfds);
	if (r < 0 || !ack)
		return r;
	r = expect_reply(v, request, &status, sizeof(status));
	if (r < 0)
		return r;
	if (status)
		return fail(v, -EIO, "%s: daemon answered failure (%" PRIu64 ")",
			    vuf_request_name(request), status);
	return 0;
}

static int msg_u64(struct vuf *v, uint32_t request, uint64_t val, int fd)
{
	return msg_acked(v, request, &val, sizeof(val), fd >= 0 ? &fd : NULL, fd >= 0);
}

static int msg_state(struct vuf *v, uint32_t request, unsigned idx, unsigned num)
{
	struct vhost_vring_state_msg s = { idx, num };

	return msg_acked(v, request, &s, sizeof(s), NULL, 0);
}

int vuf_get_config(struct vuf *v, uint32_t offset, void *buf, uint32_t size)
{
	struct vhost_user_config_msg m = { .offset = offset, .size = size };
	struct vhost_user_hdr h;
	int r;

	if (size > VU_MAX_CONFIG)
		return fail(v, -EINVAL, "config size %u too large", size);
	r = vuf_send_msg(v, VHOST_USER_GET_CONFIG, VHOST_USER_VERSION, &m,
			 VHOST_USER_CONFIG_HDR_SIZE + size, NULL, 0);
	if (r < 0)
		return r;
	r = vuf_recv_reply(v, &h, &m, sizeof(m), v->opts.reply_timeout_ms);
	if (r < 0)
		return fail(v, r, "GET_CONFIG: %s", v->err);
	if (h.request != VHOST_USER_GET_CONFIG)
		return fail(v, -EPROTO, "GET_CONFIG answered with %s", vuf_request_name(h.request));
	if (r == 0)
		return fail(v, -EIO, "GET_CONFIG refused (empty reply)");
	if ((uint32_t)r < VHOST_USER_CONFIG_HDR_SIZE || m.size > (uint32_t)r - VHOST_USER_CONFIG_HDR_SIZE ||
	    m.size > size)
		return fail(v, -EPROTO, "GET_CONFIG reply of %d bytes with size %u", r, m.size);
	memcpy(buf, m.payload, m.size);
	return (int)m.size;
}

int vuf_connect(struct vuf *v, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t deadline = now_ms() + v->opts.connect_timeout_ms;

	size_t len = strlen(path);

	if (len >= sizeof(sa.sun_path) || len >= sizeof(v->path))
		return fail(v, -ENAMETOOLONG, "socket path too long: %s", path);
	memmove(v->path, path, len + 1);
	memcpy(sa.sun_path, path, len + 1);
	close_fd(&v->sock);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), e;

		if (fd < 0)
			return fail(v, -errno, "socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			v->sock = fd;
			return 0;
		}
		e = errno;
		close(fd);
		if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN && e != EINTR) ||
		    now_ms() >= deadline)
			return fail(v, -e, "connect %s: %s", path,
				    e == EAGAIN ? "the daemon is not accepting (backlog full)" :
				    strerror(e));
		nanosleep(&(struct timespec){ 0, 20 * 1000 * 1000 }, NULL);
	}
}

/* ---- handshake -------------------------------------------------------------------- */

#define OUR_PROTOCOL_FEATURES                                                        \
	((1ull << VHOST_USER_PROTOCOL_F_MQ) | (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) | \
	 (1ull << VHOST_USER_PROTOCOL_F_CONFIG) |                                         \
	 (1ull << VHOST_USER_PROTOCOL_F_RESET_DEVICE) |                                   \
	 (1ull << VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))

static struct vhost_user_mem_region region_msg(const struct vuf_region *r)
{
	return (struct vhost_user_mem_region){
		.guest_phys_addr = r->gpa,
		.memory_size = r->size,
		.userspace_addr = (uint64_t)(uintptr_t)r->va,
		.mmap_offset = r->mmap_offset,
	};
}

static int set_memory(struct vuf *v)
{
	int fds[VUF_NREGIONS];

	if (v->opts.use_add_mem_reg) {
		for (int i = 0; i < VUF_NREGIONS; i++) {
			struct vhost_user_mem_reg_msg m = { 0, region_msg(&v->reg[i]) };
			int r = msg_acked(v, VHOST_USER_ADD_MEM_REG, &m, sizeof(m), &v->reg[i].fd, 1);

			if (r < 0)
				return r;
		}
		return 0;
	}
	struct vhost_user_mem_table t = { .nregions = VUF_NREGIONS };

	for (int i = 0; i < VUF_NREGIONS; i++) {
		t.regions[i] = region_msg(&v->reg[i]);
		fds[i] = v->reg[i].fd;
	}
	/* The message carries only the regions in use, as QEMU sends it. */
	return msg_acked(v, VHOST_USER_SET_MEM_TABLE, &t,
			 (uint32_t)(8 + VUF_NREGIONS * sizeof(t.regions[0])), fds, VUF_NREGIONS);
}

static int setup_ring(struct vuf *v, unsigned qi, uint32_t base)
{
	struct vuf_queue *q = &v->q[qi];
	struct vhost_vring_addr_msg a = {
		.index = qi,
		.desc_user_addr = (uint64_t)(uintptr_t)q->desc,
		.used_user_addr = (uint64_t)(uintptr_t)q->used,
		.avail_user_addr = (uint64_t)(uintptr_t)q->avail,
	};
	int r;

	if ((r = msg_state(v, VHOST_USER_SET_VRING_NUM, qi, q->num)) < 0 ||
	    (r = msg_state(v, VHOST_USER_SET_VRING_BASE, qi, base)) < 0 ||
	    (r = msg_acked(v, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0)) < 0 ||
	    (r = msg_u64(v, VHOST_USER_SET_VRING_KICK, qi, q->kick_fd)) < 0 ||
	    (r = msg_u64(v, VHOST_USER_SET_VRING_CALL, qi, q->call_fd)) < 0)
		return r;
	return 0;
}

static int post_events(struct vuf *v);

static int negotiate(struct vuf *v)
{
	uint64_t f2, want;
	int r;

	if ((r = vuf_get_u64(v, VHOST_USER_GET_FEATURES, &v->dev_features)) < 0)
		return r;
	if (!(v->dev_features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)))
		return fail(v, -ENOTSUP, "daemon does not offer PROTOCOL_FEATURES");
	if ((r = vuf_get_u64(v, VHOST_USER_GET_PROTOCOL_FEATURES, &v->dev_protocol_features)) < 0)
		return r;
	want = OUR_PROTOCOL_FEATURES;
	if (v->opts.no_reply_ack)
		want &= ~(1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK);
	v->protocol_features = v->dev_protocol_features & want;
	/* Not acked: REPLY_ACK is only in force once this has been sent. */
	r = vuf_send_msg(v, VHOST_USER_SET_PROTOCOL_FEATURES, VHOST_USER_VERSION,
			 &v->protocol_features, 8, NULL, 0);
	if (r < 0)
		return r;
	if (!vuf_has_protocol_feature(v, VHOST_USER_PROTOCOL_F_CONFIG))
		return fail(v, -ENOTSUP, "daemon does not offer the CONFIG protocol feature");
	if (vuf_has_protocol_feature(v, VHOST_USER_PROTOCOL_F_MQ)) {
		if ((r = vuf_get_u64(v, VHOST_USER_GET_QUEUE_NUM, &v->queue_num)) < 0)
			return r;
		if (v->queue_num < VUF_NQUEUES)
			return fail(v, -ENOTSUP, "daemon has %" PRIu64 " queues", v->queue_num);
	}
	if (vuf_has_protocol_feature(v, VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
		if ((r = vuf_get_u64(v, VHOST_USER_GET_MAX_MEM_SLOTS, &v->max_mem_slots)) < 0)
			return r;
	} else if (v->opts.use_add_mem_reg) {
		return fail(v, -ENOTSUP, "ADD_MEM_REG wanted, CONFIGURE_MEM_SLOTS not offered");
	}
	if (v->opts.use_add_mem_reg && v->max_mem_slots < VUF_NREGIONS)
		return fail(v, -ENOTSUP, "daemon has %" PRIu64 " memory slots", v->max_mem_slots);
	if ((r = msg_acked(v, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0)) < 0)
		return r;
	if ((r = vuf_get_u64(v, VHOST_USER_GET_FEATURES, &f2)) < 0)
		return r;
	if (f2 != v->dev_features)
		return fail(v, -EPROTO, "GET_FEATURES changed: 0x%" PRIx64 " then 0x%" PRIx64,
			    v->dev_features, f2);
	return 0;
}

static int choose_features(struct vuf *v)
{
	uint64_t want = (1ull << VIRTIO_F_VERSION_1) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES) |
			(1ull << VIRTIO_RING_F_INDIRECT_DESC) |
			(1ull << VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES) |
			(1ull << VIRTIO_VIDEO_F_RESOURCE_NON_CONTIG);

	if (v->opts.event_idx)
		want |= 1ull << VIRTIO_RING_F_EVENT_IDX;
	v->features = v->dev_features & want;
	if (!vuf_has_feature(v, VIRTIO_F_VERSION_1))
		return fail(v, -ENOTSUP, "daemon does not offer VERSION_1");
	if (!vuf_has_feature(v, VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES))
		return fail(v, -ENOTSUP, "daemon does not offer RESOURCE_GUEST_PAGES");
	if (v->opts.use_indirect && !vuf_has_feature(v, VIRTIO_RING_F_INDIRECT_DESC))
		return fail(v, -ENOTSUP, "indirect descriptors wanted, not offered");
	return 0;
}

/* QEMU's DRIVER_OK step: features, memory, rings, enable; then the events. */
static int start_device(struct vuf *v, bool send_memory)
{
	int r;

	if ((r = choose_features(v)) < 0 ||
	    (r = msg_u64(v, VHOST_USER_SET_FEATURES, v->features, -1)) < 0 ||
	    (send_memory && (r = set_memory(v)) < 0))
		return r;
	for (unsigned i = 0; i < VUF_NQUEUES; i++)
		if ((r = setup_ring(v, i, 0)) < 0)
			return r;
	for (unsigned i = 0; i < VUF_NQUEUES; i++)
		if ((r = msg_state(v, VHOST_USER_SET_VRING_ENABLE, i, 1)) < 0)
			return r;
	v->ready = true;
	v->err[0] = 0;
	return post_events(v);
}

int vuf_handshake(struct vuf *v)
{
	int r;

	v->ready = false;
	v->features = v->protocol_features = 0;
	v->queue_num = v->max_mem_slots = 0;
	v->ev_posted = 0;
	for (unsigned i = 0; i < VUF_NQUEUES; i++) {
		queue_reset(&v->q[i], false);
		if ((r = queue_fds(v, &v->q[i])) < 0)
			return r;
	}
	if ((r = negotiate(v)) < 0)
		return r;
	/* The daemon answered on this connection, so it has dropped any
	 * previous one and no longer reads the rings: clear them now. */
	for (unsigned i = 0; i < VUF_NQUEUES; i++)
		queue_reset(&v->q[i], true);
	for (unsigned i = 0; i < VUF_NQUEUES; i++) {
		if ((r = msg_u64(v, VHOST_USER_SET_VRING_CALL, i, v->q[i].call_fd)) < 0 ||
		    (r = msg_u64(v, VHOST_USER_SET_VRING_ERR, i, v->q[i].err_fd)) < 0)
			return r;
	}
	memset(&v->config, 0, sizeof(v->config));
	r = vuf_get_config(v, 0, &v->config, sizeof(v->config));
	if (r < 0)
		return r;
	v->config_len = (uint32_t)r;
	return start_device(v, true);
}

int vuf_restart(struct vuf *v)
{
	uint64_t cnt;

	if (v->sock < 0)
		return fail(v, -ENOTCONN, "not connected");
	if (v->ready)
		return fail(v, -EBUSY, "restart without vuf_stop first");
	v->ev_posted = 0;
	for (unsigned i = 0; i < VUF_NQUEUES; i++) {
		queue_reset(&v->q[i], true);
		while (read(v->q[i].call_fd, &cnt, sizeof(cnt)) > 0)
			;
	}
	/* ADD_MEM_REG frontends send only changes: none here. */
	return start_device(v, !v->opts.use_add_mem_reg);
}

int vuf_resume(struct vuf *v)
{
	int r;

	if (v->sock < 0)
		return fail(v, -ENOTCONN, "not connected");
	if (v->ready)
		return fail(v, -EBUSY, "resume without vuf_stop first");
	/* QEMU 10 vhost_dev_start after `cont` (observed: tests/qemu_stopcont):
	 * SET_FEATURES, then each ring as it was, at the base it stopped at. */
	if ((r = msg_u64(v, VHOST_USER_SET_FEATURES, v->features, -1)) < 0)
		return r;
	for (unsigned i = 0; i < VUF_NQUEUES; i++)
		if ((r = setup_ring(v, i, v->q[i].last_base)) < 0)
			return r;
	for (unsigned i = 0; i < VUF_NQUEUES; i++)
		if ((r = msg_state(v, VHOST_USER_SET_VRING_ENABLE, i, 1)) < 0)
			return r;
	v->ready = true;
	return 0;
}

int vuf_stop(struct vuf *v)
{
	int r;

	for (unsigned i = 0; i < VUF_NQUEUES; i++)
		if ((r = msg_state(v, VHOST_USER_SET_VRING_ENABLE, i, 0)) < 0)
			return r;
	for (unsigned i = 0; i < VUF_NQUEUES; i++) {
		struct vhost_vring_state_msg s = { i, 0 };

		r = vuf_send_msg(v, VHOST_USER_GET_VRING_BASE, VHOST_USER_VERSION, &s, sizeof(s), NULL, 0);
		if (r < 0 || (r = expect_reply(v, VHOST_USER_GET_VRING_BASE, &s, sizeof(s))) < 0)
			return r;
		if (s.index != i)
			return fail(v, -EPROTO, "GET_VRING_BASE %u answered for ring %u", i, s.index);
		v->q[i].last_base = s.num;
	}
	v->ready = false;
	return 0;
}

void vuf_disconnect_abrupt(struct vuf *v)
{
	close_fd(&v->sock);
	v->ready = false;
	for (unsigned i = 0; i < VUF_NQUEUES; i++) {
		struct vuf_queue *q = &v->q[i];

		close_fd(&q->kick_fd);
		close_fd(&q->call_fd);
		close_fd(&q->err_fd);
		/* Ring memory is left alone: the daemon may still be looking. */
		queue_reset(q, false);
	}
	v->ev_posted = 0;
}

int vuf_reconnect(struct vuf *v)
{
	int r;

	vuf_disconnect_abrupt(v);
	if ((r = vuf_connect(v, v->path)) < 0)
		return r;
	return vuf_handshake(v);
}

struct vuf *vuf_new(const struct vuf_opts *opts)
{
	struct vuf *v = calloc(1, sizeof(*v));
	unsigned n;

	if (!v) {
		fprintf(stderr, "vufront: out of memory\n");
		return NULL;
	}
	if (opts)
		v->opts = *opts;
	else
		vuf_opts_default(&v->opts);
	v->sock = -1;
	v->reg[0].fd = v->reg[1].fd = -1;
	for (unsigned i = 0; i < VUF_NQUEUES; i++)
		v->q[i].kick_fd = v->q[i].call_fd = v->q[i].err_fd = -1;
	n = v->opts.queue_size;
	if (!n || n > VU_MAX_QUEUE_SIZE || (n & (n - 1))) {
		fprintf(stderr, "vufront: bad queue size %u\n", n);
		goto err;
	}
	if (v->opts.n_events > n)
		v->opts.n_events = n;
	if (mem_setup(v) < 0)
		goto err;
	for (unsigned i = 0; i < VUF_NQUEUES; i++)
		if (queue_alloc(v, i) < 0)
			goto err;
	v->ev_gpa = vuf_alloc(v, 8u * (v->opts.n_events ? v->opts.n_events : 1), 64, 1);
	if (!v->ev_gpa)
		goto err;
	return v;
err:
	if (v->err[0])
		fprintf(stderr, "vufront: %s\n", v->err);
	vuf_close(v);
	return NULL;
}

struct vuf *vuf_open(const char *path, const struct vuf_opts *opts, char *err, size_t errlen)
{
	struct vuf *v = vuf_new(opts);

	if (!v) {
		if (err)
			snprintf(err, errlen, "cannot set up guest memory");
		return NULL;
	}
	if (vuf_connect(v, path) < 0 || vuf_handshake(v) < 0) {
		if (err)
			snprintf(err, errlen, "%s", v->err);
		vuf_close(v);
		return NULL;
	}
	return v;
}

void vuf_close(struct vuf *v)
{
	if (!v)
		return;
	if (v->sock >= 0 && v->ready)
		vuf_stop(v);
	close_fd(&v->sock);
	for (unsigned i = 0; i < VUF_NQUEUES; i++) {
		close_fd(&v->q[i].kick_fd);
		close_fd(&v->q[i].call_fd);
		close_fd(&v->q[i].err_fd);
		free(v->q[i].free_stack);
		free(v->q[i].slots);
	}
	mem_free(v);
	free(v);
}

/* ---- rings: submit, reap, wait ------------------------------------------------------- */

static uint16_t *used_event(struct vuf_queue *q)
{
	return &q->avail->ring[q->num];
}

static uint16_t *avail_event(struct vuf_queue *q)
{
	return (uint16_t *)&q->used->ring[q->num];
}

int vuf_kick(struct vuf *v, unsigned qi)
{
	uint64_t one = 1;

	if (qi >= VUF_NQUEUES || v->q[qi].kick_fd < 0)
		return fail(v, -EINVAL, "no kick fd for queue %u", qi);
	if (write(v->q[qi].kick_fd, &one, sizeof(one)) != sizeof(one))
		return fail(v, -errno, "kick: %s", strerror(errno));
	return 0;
}

/* Publish one head and kick unless the device suppressed notifications. */
static int publish(struct vuf *v, unsigned qi, uint16_t head)
{
	struct vuf_queue *q = &v->q[qi];
	uint16_t old = q->avail_idx, ev;
	bool need;

	q->avail->ring[old % q->num] = htole16(head);
	q->avail_idx = (uint16_t)(old + 1);
	/* The entry must be visible before the index (release), and the index
	 * before we read the device's suppression state (full fence). */
	__atomic_store_n(&q->avail->idx, htole16(q->avail_idx), __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (vuf_has_feature(v, VIRTIO_RING_F_EVENT_IDX)) {
		ev = le16toh(__atomic_load_n(avail_event(q), __ATOMIC_ACQUIRE));
		need = vring_need_event(ev, q->avail_idx, old);
	} else {
		need = !(le16toh(__atomic_load_n(&q->used->flags, __ATOMIC_ACQUIRE)) &
			 VRING_USED_F_NO_NOTIFY);
	}
	return need ? vuf_kick(v, qi) : 0;
}

int vuf_submit_bufs(struct vuf *v, unsigned qi, const struct vuf_buf *b, unsigned n,
		    bool indirect, uint64_t *token)
{
	struct vuf_queue *q;
	struct vuf_slot *s;
	unsigned ndesc = indirect ? 1 : n;
	uint16_t ids[VUF_MAX_BUFS], head;

	if (!v->ready)
		return fail(v, -ENOTCONN, "not connected (handshake not done)");
	if (qi >= VUF_NQUEUES || !n || n > VUF_MAX_BUFS)
		return fail(v, -EINVAL, "bad chain: queue %u, %u buffers", qi, n);
	q = &v->q[qi];
	if (q->nfree < ndesc)
		return fail(v, -ENOSPC, "queue %u full (%u of %u descriptors in use)", qi,
			    q->num - q->nfree, q->num);
	for (unsigned i = 0; i < ndesc; i++)
		ids[i] = q->free_stack[--q->nfree];
	head = ids[0];
	s = &q->slots[head];
	if (indirect) {
		uint64_t tgpa = q->ind_gpa + (uint64_t)head * VUF_MAX_BUFS * 16;
		struct vring_desc *t = vuf_va(v, tgpa);

		for (unsigned i = 0; i < n; i++) {
			t[i].addr = htole64(b[i].gpa);
			t[i].len = htole32(b[i].len);
			t[i].flags = htole16((i + 1 < n ? VRING_DESC_F_NEXT : 0) |
					     (b[i].write ? VRING_DESC_F_WRITE : 0));
			t[i].next = htole16((uint16_t)(i + 1 < n ? i + 1 : 0));
		}
		q->desc[head] = (struct vring_desc){ htole64(tgpa), htole32(16u * n),
						     htole16(VRING_DESC_F_INDIRECT), 0 };
	} else {
		for (unsigned i = 0; i < n; i++) {
			q->desc[ids[i]].addr = htole64(b[i].gpa);
			q->desc[ids[i]].len = htole32(b[i].len);
			q->desc[ids[i]].flags = htole16((i + 1 < n ? VRING_DESC_F_NEXT : 0) |
							(b[i].write ? VRING_DESC_F_WRITE : 0));
			q->desc[ids[i]].next = htole16(i + 1 < n ? ids[i + 1] : 0);
		}
	}
	s->seq = ++v->next_seq;
	s->done = s->overlong = false;
	s->used_len = 0;
	s->ndesc = ndesc;
	memcpy(s->ids, ids, ndesc * sizeof(ids[0]));
	s->nbufs = n;
	memcpy(s->bufs, b, n * sizeof(*b));
	s->wr_total = 0;
	for (unsigned i = 0; i < n; i++)
		if (b[i].write)
			s->wr_total += b[i].len;
	if (token)
		*token = s->seq << 16 | (qi ? TOKEN_Q_BIT : 0) | head;
	return publish(v, qi, head);
}

static void account_used(struct vuf *v, unsigned qi, uint32_t id, uint32_t len)
{
	struct vuf_queue *q = &v->q[qi];
	struct vuf_slot *s;

	if (id >= q->num || !q->slots[id].seq) {
		ring_error(v, "queue %u: used entry for descriptor %u, which is not in flight", qi, id);
		return;
	}
	s = &q->slots[id];
	if (s->done) {
		ring_error(v, "queue %u: chain %u completed twice", qi, id);
		return;
	}
	if (len > s->wr_total) {
		ring_error(v, "queue %u: chain %u used length %u > writable %u", qi, id, len,
			   s->wr_total);
		s->overlong = true;
	}
	s->done = true;
	s->used_len = len;
	s->done_order = ++v->done_seq;
}

void vuf_reap(struct vuf *v, unsigned qi)
{
	struct vuf_queue *q;

	if (qi >= VUF_NQUEUES || !v->ready)
		return;
	q = &v->q[qi];
	for (;;) {
		uint16_t idx = le16toh(__atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE));

		if ((uint16_t)(idx - q->last_used) > q->num) {
			ring_error(v, "queue %u: used index jumped from %u to %u", qi,
				   q->last_used, idx);
			q->last_used = idx;
		}
		while (q->last_used != idx) {
			struct vring_used_elem e = q->used->ring[q->last_used % q->num];

			q->last_used++;
			account_used(v, qi, le32toh(e.id), le32toh(e.len));
		}
		if (!vuf_has_feature(v, VIRTIO_RING_F_EVENT_IDX))
			return;
		/* Ask for a call on the next entry, then look again: an entry
		 * added before the device saw used_event gets no call. */
		__atomic_store_n(used_event(q), htole16(q->last_used), __ATOMIC_RELEASE);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (le16toh(__atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE)) == q->last_used)
			return;
	}
}

static struct vuf_slot *token_slot(struct vuf *v, uint64_t token, unsigned *qi)
{
	unsigned q = token & TOKEN_Q_BIT ? 1 : 0, head = token & (TOKEN_Q_BIT - 1);

	*qi = q;
	if (head >= v->q[q].num || !v->q[q].slots || v->q[q].slots[head].seq != token >> 16 ||
	    !(token >> 16))
		return NULL;
	return &v->q[q].slots[head];
}

bool vuf_done(struct vuf *v, uint64_t token)
{
	unsigned qi;
	struct vuf_slot *s = token_slot(v, token, &qi);

	if (!s)
		return false;
	vuf_reap(v, qi);
	return s->done;
}

unsigned vuf_in_flight(struct vuf *v)
{
	unsigned n = 0;

	for (unsigned i = 0; i < v->q[CMDQ].num; i++)
		n += v->q[CMDQ].slots[i].seq != 0;
	return n;
}

/* The earliest completed, uncollected chain of queue qi, or NULL. */
static struct vuf_slot *first_done(struct vuf *v, unsigned qi)
{
	struct vuf_queue *q = &v->q[qi];
	struct vuf_slot *best = NULL;

	for (unsigned i = 0; i < q->num; i++)
		if (q->slots[i].seq && q->slots[i].done &&
		    (!best || q->slots[i].done_order < best->done_order))
			best = &q->slots[i];
	return best;
}

/*
 * Wait until *target is done (target NULL: any chain of qi). Sleeps on the
 * call eventfd only, so a device that forgets to notify makes this fail
 * even though the completion is in the used ring.
 */
static int wait_done(struct vuf *v, unsigned qi, struct vuf_slot *target,
		     struct vuf_slot **found, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	struct vuf_queue *q = &v->q[qi];

	for (;;) {
		struct pollfd p[2] = { { q->call_fd, POLLIN, 0 }, { v->sock, 0, 0 } };
		struct vuf_slot *s;
		uint64_t cnt;
		int r;

		vuf_reap(v, qi);
		s = target ? (target->done ? target : NULL) : first_done(v, qi);
		if (s) {
			*found = s;
			return 0;
		}
		if (!v->ready)
			return fail(v, -ENOTCONN, "not connected");
		r = poll(p, 2, remaining_ms(deadline));
		if (r < 0 && errno != EINTR)
			return fail(v, -errno, "poll: %s", strerror(errno));
		if (r == 0)
			break;
		if (p[1].revents & (POLLHUP | POLLERR))
			return fail(v, -EPIPE, "daemon closed the connection while we waited "
				    "on queue %u", qi);
		if (p[0].revents & POLLIN)
			if (read(q->call_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
				return fail(v, -errno, "read call fd: %s", strerror(errno));
	}
	/*
	 * Timed out without a call. Is there a completion the device did not
	 * signal? Look at used->idx WITHOUT consuming: vuf_reap moves
	 * used_event past what it takes, which lets the device skip that
	 * entry's call legitimately (EVENT_IDX). The device writes used->idx
	 * first and signals right after; on a loaded machine its thread can
	 * be descheduled between the two for a long time (seen: over 500 ms
	 * under TCG with both cores busy). So this is a liveness bound, not a
	 * timing window: only an entry still unsignalled after
	 * VUF_CALL_GRACE_MS is the device's fault.
	 */
	if (le16toh(__atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE)) != q->last_used) {
		struct pollfd pc = { q->call_fd, POLLIN, 0 };
		uint64_t cnt;
		int r;

		while ((r = poll(&pc, 1, VUF_CALL_GRACE_MS)) < 0 && errno == EINTR)
			;
		if (r != 1) {
			vuf_reap(v, qi);
			ring_error(v, "queue %u: chain completed without a call notification", qi);
			return -EPROTO;
		}
		if (read(q->call_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
			return fail(v, -errno, "read call fd: %s", strerror(errno));
	}
	vuf_reap(v, qi);
	if (target ? target->done : first_done(v, qi) != NULL) {
		*found = target ? target : first_done(v, qi);
		return 0;
	}
	return fail(v, -ETIMEDOUT, "queue %u: no completion within %d ms", qi, timeout_ms);
}

/* Copy what the device wrote, give the descriptors back. */
static int collect(struct vuf *v, unsigned qi, struct vuf_slot *s, void *resp, size_t max)
{
	struct vuf_queue *q = &v->q[qi];
	size_t want = s->used_len < max ? s->used_len : max;
	uint8_t *p = resp;
	int r = (int)s->used_len;

	for (unsigned i = 0; i < s->nbufs && want && p; i++) {
		size_t n;
		void *g;

		if (!s->bufs[i].write)
			continue;
		n = s->bufs[i].len < want ? s->bufs[i].len : want;
		g = vuf_va_range(v, s->bufs[i].gpa, n);
		if (g)
			memcpy(p, g, n);
		p += n;
		want -= n;
	}
	if (s->overlong)
		r = fail(v, -EPROTO, "used length %u exceeds the %u writable bytes", s->used_len,
			 s->wr_total);
	for (unsigned i = s->ndesc; i-- > 0;)
		q->free_stack[q->nfree++] = s->ids[i];
	s->seq = 0;
	s->done = false;
	return r;
}

int vuf_wait(struct vuf *v, uint64_t token, void *resp, size_t max, int timeout_ms)
{
	unsigned qi;
	struct vuf_slot *s = token_slot(v, token, &qi), *found;
	int r, used;

	if (!s)
		return fail(v, -EINVAL, "unknown or already collected token 0x%" PRIx64, token);
	r = wait_done(v, qi, s, &found, timeout_ms);
	if (!s->done)
		return r;
	/* Done, possibly without a notification (-EPROTO): release it anyway. */
	used = collect(v, qi, s, resp, max);
	return r < 0 ? r : used;
}

int vuf_wait_any(struct vuf *v, uint64_t *token, int timeout_ms)
{
	struct vuf_slot *s;
	int r = wait_done(v, CMDQ, NULL, &s, timeout_ms);

	/* -EPROTO (no notification) still names the chain, to collect it. */
	if (r == -EPROTO)
		s = first_done(v, CMDQ);
	else if (r < 0)
		return r;
	*token = s->seq << 16 | (uint64_t)(s - v->q[CMDQ].slots);
	return r;
}

/* ---- commands ------------------------------------------------------------------------- */

static int ensure_scratch(struct vuf *v, uint16_t head, size_t need)
{
	struct vuf_slot *s = &v->q[CMDQ].slots[head];
	size_t cap = align_up(need ? need : 1, VUF_PAGE);
	uint64_t gpa;

	if (s->scratch_cap >= need)
		return 0;
	/* Alternate regions by head so commands live in both. */
	gpa = vuf_alloc(v, cap, 64, head & 1);
	if (!gpa)
		return -ENOMEM;
	s->scratch_gpa = gpa;
	s->scratch_cap = cap;
	return 0;
}

int vuf_submit(struct vuf *v, const void *req, size_t req_len, const void *payload,
	       size_t payload_len, size_t resp_len, uint64_t *token)
{
	struct vuf_queue *q = &v->q[CMDQ];
	size_t off_pl = align_up(req_len, 64), off_resp = off_pl + align_up(payload_len, 64);
	struct vuf_buf b[3];
	unsigned n = 0;
	uint16_t head;
	uint8_t *base;
	int r;

	if (!v->ready)
		return fail(v, -ENOTCONN, "not connected (handshake not done)");
	if (req_len > UINT32_MAX || payload_len > UINT32_MAX || resp_len > UINT32_MAX)
		return fail(v, -EINVAL, "buffer too large");
	if (!q->nfree)
		return fail(v, -ENOSPC, "commandq full (%u descriptors in use)", q->num);
	/* vuf_submit_bufs takes the head from the top of the free stack. */
	head = q->free_stack[q->nfree - 1];
	if ((r = ensure_scratch(v, head, off_resp + resp_len)) < 0)
		return r;
	base = vuf_va(v, q->slots[head].scratch_gpa);
	if (req_len) {
		memcpy(base, req, req_len);
		b[n++] = (struct vuf_buf){ q->slots[head].scratch_gpa, (uint32_t)req_len, false };
	}
	if (payload_len) {
		memcpy(base + off_pl, payload, payload_len);
		b[n++] = (struct vuf_buf){ q->slots[head].scratch_gpa + off_pl,
					   (uint32_t)payload_len, false };
	}
	if (resp_len) {
		memset(base + off_resp, 0, resp_len);
		b[n++] = (struct vuf_buf){ q->slots[head].scratch_gpa + off_resp,
					   (uint32_t)resp_len, true };
	}
	return vuf_submit_bufs(v, CMDQ, b, n, v->opts.use_indirect && n > 0, token);
}

int vuf_cmd(struct vuf *v, const void *req, size_t req_len, const void *payload,
	    size_t payload_len, void *resp, size_t resp_len, int timeout_ms)
{
	uint64_t t;
	int r = vuf_submit(v, req, req_len, payload, payload_len, resp_len, &t);

	return r < 0 ? r : vuf_wait(v, t, resp, resp_len, timeout_ms);
}

int vuf_wait_type(struct vuf *v, uint64_t token, void *resp, size_t resp_len,
		  size_t min_len, int timeout_ms)
{
	struct virtio_video_cmd_hdr h;
	uint32_t type;
	int r;

	if (!resp) {
		resp = &h;
		resp_len = sizeof(h);
	}
	r = vuf_wait(v, token, resp, resp_len, timeout_ms);
	if (r < 0)
		return r;
	if ((size_t)r < sizeof(h))
		return fail(v, -EPROTO, "response of %d bytes, shorter than a header", r);
	type = rd32(resp);
	if (!vuf_resp_type_is_error(type) && (size_t)r < min_len)
		return fail(v, -EPROTO, "%s response of %d bytes, expected %zu", vuf_cmd_name(type),
			    r, min_len);
	return (int)type;
}

static int simple_cmd(struct vuf *v, const void *req, size_t len, void *resp, size_t resp_len,
		      size_t min_len, int timeout_ms)
{
	uint64_t t;
	int r = vuf_submit(v, req, len, NULL, 0, resp_len, &t);

	return r < 0 ? r : vuf_wait_type(v, t, resp, resp_len, min_len, timeout_ms);
}

static struct virtio_video_cmd_hdr mkhdr(uint32_t type, uint32_t stream_id)
{
	return (struct virtio_video_cmd_hdr){ htole32(type), htole32(stream_id) };
}

int vuf_stream_create(struct vuf *v, uint32_t stream_id, uint32_t in_mem_type,
		      uint32_t out_mem_type, uint32_t coded_format, const char *tag)
{
	struct virtio_video_stream_create c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_STREAM_CREATE, stream_id),
		.in_mem_type = htole32(in_mem_type),
		.out_mem_type = htole32(out_mem_type),
		.coded_format = htole32(coded_format),
	};

	if (tag)
		snprintf((char *)c.tag, sizeof(c.tag), "%s", tag);
	return simple_cmd(v, &c, sizeof(c), NULL, 8, 8, v->opts.cmd_timeout_ms);
}

int vuf_stream_destroy(struct vuf *v, uint32_t stream_id)
{
	struct virtio_video_cmd_hdr c = mkhdr(VIRTIO_VIDEO_CMD_STREAM_DESTROY, stream_id);

	return simple_cmd(v, &c, sizeof(c), NULL, 8, 8, v->opts.cmd_timeout_ms);
}

int vuf_stream_drain_submit(struct vuf *v, uint32_t stream_id, uint64_t *token)
{
	struct virtio_video_cmd_hdr c = mkhdr(VIRTIO_VIDEO_CMD_STREAM_DRAIN, stream_id);

	return vuf_submit(v, &c, sizeof(c), NULL, 0, 8, token);
}

int vuf_stream_drain(struct vuf *v, uint32_t stream_id, int timeout_ms)
{
	uint64_t t;
	int r = vuf_stream_drain_submit(v, stream_id, &t);

	return r < 0 ? r : vuf_wait_type(v, t, NULL, 0, 8, timeout_ms);
}

int vuf_resource_create(struct vuf *v, uint32_t stream_id, uint32_t queue_type,
			uint32_t resource_id, uint32_t planes_layout, uint32_t num_planes,
			const uint32_t *plane_offsets, const struct vuf_sglist *mem, unsigned n_mem)
{
	struct virtio_video_resource_create c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_RESOURCE_CREATE, stream_id),
		.queue_type = htole32(queue_type),
		.resource_id = htole32(resource_id),
		.planes_layout = htole32(planes_layout),
		.num_planes = htole32(num_planes),
	};
	struct virtio_video_mem_entry *e;
	size_t total = 0, k = 0;
	uint64_t t;
	int r;

	if (n_mem > VIRTIO_VIDEO_MAX_PLANES)
		return fail(v, -EINVAL, "%u planes", n_mem);
	for (unsigned p = 0; p < VIRTIO_VIDEO_MAX_PLANES; p++)
		c.plane_offsets[p] = htole32(plane_offsets && p < num_planes ? plane_offsets[p] : 0);
	for (unsigned p = 0; p < n_mem; p++) {
		c.num_entries[p] = htole32(mem[p].n);
		total += mem[p].n;
	}
	e = calloc(total ? total : 1, sizeof(*e));
	if (!e)
		return fail(v, -ENOMEM, "out of memory");
	for (unsigned p = 0; p < n_mem; p++)
		for (unsigned i = 0; i < mem[p].n; i++, k++) {
			e[k].addr = htole64(mem[p].e[i].gpa);
			e[k].length = htole32(mem[p].e[i].len);
		}
	r = vuf_submit(v, &c, sizeof(c), e, total * sizeof(*e), 8, &t);
	free(e);
	return r < 0 ? r : vuf_wait_type(v, t, NULL, 0, 8, v->opts.cmd_timeout_ms);
}

int vuf_resource_queue(struct vuf *v, uint32_t stream_id, uint32_t queue_type,
		       uint32_t resource_id, uint64_t timestamp, unsigned num_data_sizes,
		       const uint32_t *data_sizes, uint64_t *token)
{
	struct virtio_video_resource_queue c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_RESOURCE_QUEUE, stream_id),
		.queue_type = htole32(queue_type),
		.resource_id = htole32(resource_id),
		.timestamp = htole64(timestamp),
		.num_data_sizes = htole32(num_data_sizes),
	};

	for (unsigned i = 0; i < num_data_sizes && i < VIRTIO_VIDEO_MAX_PLANES; i++)
		c.data_sizes[i] = htole32(data_sizes[i]);
	return vuf_submit(v, &c, sizeof(c), NULL, 0, sizeof(struct virtio_video_resource_queue_resp),
			  token);
}

int vuf_resource_queue_wait(struct vuf *v, uint64_t token, struct vuf_rq_result *res,
			    int timeout_ms)
{
	uint8_t b[sizeof(struct virtio_video_resource_queue_resp)] = { 0 };
	int used = vuf_wait(v, token, b, sizeof(b), timeout_ms);
	uint32_t type;

	memset(res, 0, sizeof(*res));
	if (used < 0)
		return used;
	if (used < 8)
		return fail(v, -EPROTO, "RESOURCE_QUEUE response of %d bytes, shorter than a header",
			    used);
	type = rd32(b);
	if (type == VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE && (size_t)used < sizeof(b))
		return fail(v, -EPROTO, "OK_RESOURCE_QUEUE response of %d bytes", used);
	res->used_len = (uint32_t)used;
	if ((size_t)used >= sizeof(b)) {
		res->timestamp = rd64(b + 8);
		res->flags = rd32(b + 16);
		res->size = rd32(b + 20);
	}
	return (int)type;
}

static int queue_cmd(struct vuf *v, uint32_t type, uint32_t stream_id, uint32_t queue_type,
		     uint64_t *token)
{
	struct virtio_video_queue_cmd c = {
		.hdr = mkhdr(type, stream_id),
		.queue_type = htole32(queue_type),
	};

	return vuf_submit(v, &c, sizeof(c), NULL, 0, 8, token);
}

int vuf_resource_destroy_all(struct vuf *v, uint32_t stream_id, uint32_t queue_type)
{
	uint64_t t;
	int r = queue_cmd(v, VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL, stream_id, queue_type, &t);

	return r < 0 ? r : vuf_wait_type(v, t, NULL, 0, 8, v->opts.cmd_timeout_ms);
}

int vuf_queue_clear_submit(struct vuf *v, uint32_t stream_id, uint32_t queue_type, uint64_t *token)
{
	return queue_cmd(v, VIRTIO_VIDEO_CMD_QUEUE_CLEAR, stream_id, queue_type, token);
}

int vuf_queue_clear(struct vuf *v, uint32_t stream_id, uint32_t queue_type, int timeout_ms)
{
	uint64_t t;
	int r = vuf_queue_clear_submit(v, stream_id, queue_type, &t);

	return r < 0 ? r : vuf_wait_type(v, t, NULL, 0, 8, timeout_ms);
}

static void params_from_wire(struct vuf_params *p, const uint8_t *w, bool ext)
{
	memset(p, 0, sizeof(*p));
	p->queue_type = rd32(w + 0);
	p->format = rd32(w + 4);
	p->frame_width = rd32(w + 8);
	p->frame_height = rd32(w + 12);
	p->min_buffers = rd32(w + 16);
	p->max_buffers = rd32(w + 20);
	p->crop.left = rd32(w + 24);
	p->crop.top = rd32(w + 28);
	p->crop.width = rd32(w + 32);
	p->crop.height = rd32(w + 36);
	p->frame_rate = rd32(w + 40);
	p->num_planes = rd32(w + 44);
	for (unsigned i = 0; i < VIRTIO_VIDEO_MAX_PLANES; i++) {
		p->plane[i].plane_size = rd32(w + 48 + 8 * i);
		p->plane[i].stride = rd32(w + 52 + 8 * i);
	}
	if (ext)
		p->resource_type = rd32(w + 112);
}

static void params_to_wire(struct virtio_video_params_ext *w, const struct vuf_params *p)
{
	memset(w, 0, sizeof(*w));
	w->base.queue_type = htole32(p->queue_type);
	w->base.format = htole32(p->format);
	w->base.frame_width = htole32(p->frame_width);
	w->base.frame_height = htole32(p->frame_height);
	w->base.min_buffers = htole32(p->min_buffers);
	w->base.max_buffers = htole32(p->max_buffers);
	w->base.crop.left = htole32(p->crop.left);
	w->base.crop.top = htole32(p->crop.top);
	w->base.crop.width = htole32(p->crop.width);
	w->base.crop.height = htole32(p->crop.height);
	w->base.frame_rate = htole32(p->frame_rate);
	w->base.num_planes = htole32(p->num_planes);
	for (unsigned i = 0; i < VIRTIO_VIDEO_MAX_PLANES; i++) {
		w->base.plane_formats[i].plane_size = htole32(p->plane[i].plane_size);
		w->base.plane_formats[i].stride = htole32(p->plane[i].stride);
	}
	w->resource_type = htole32(p->resource_type);
}

int vuf_get_params(struct vuf *v, uint32_t stream_id, uint32_t queue_type, bool ext,
		   struct vuf_params *out)
{
	struct virtio_video_queue_cmd c = {
		.hdr = mkhdr(ext ? VIRTIO_VIDEO_CMD_GET_PARAMS_EXT : VIRTIO_VIDEO_CMD_GET_PARAMS,
			     stream_id),
		.queue_type = htole32(queue_type),
	};
	uint8_t b[sizeof(struct virtio_video_get_params_ext_resp)] = { 0 };
	size_t len = ext ? sizeof(struct virtio_video_get_params_ext_resp) :
			   sizeof(struct virtio_video_get_params_resp);
	int r = simple_cmd(v, &c, sizeof(c), b, len, len, v->opts.cmd_timeout_ms);

	if (r == VIRTIO_VIDEO_RESP_OK_GET_PARAMS && out)
		params_from_wire(out, b + 8, ext);
	return r;
}

int vuf_set_params(struct vuf *v, uint32_t stream_id, const struct vuf_params *p, bool ext)
{
	struct virtio_video_set_params_ext c;

	c.hdr = mkhdr(ext ? VIRTIO_VIDEO_CMD_SET_PARAMS_EXT : VIRTIO_VIDEO_CMD_SET_PARAMS, stream_id);
	params_to_wire(&c.params, p);
	return simple_cmd(v, &c, ext ? sizeof(struct virtio_video_set_params_ext) :
				       sizeof(struct virtio_video_set_params),
			  NULL, 8, 8, v->opts.cmd_timeout_ms);
}

int vuf_query_control(struct vuf *v, uint32_t stream_id, uint32_t control, uint32_t format,
		      uint32_t *values, unsigned max, unsigned *num)
{
	struct virtio_video_query_control c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_QUERY_CONTROL, stream_id),
		.control = htole32(control),
		.format = htole32(format),
	};
	uint8_t b[16 + 4 * 128] = { 0 };
	uint64_t t;
	int r, used;

	*num = 0;
	if ((r = vuf_submit(v, &c, sizeof(c), NULL, 0, sizeof(b), &t)) < 0)
		return r;
	/* vuf_wait_type does not tell the length: wait, then type by hand. */
	used = vuf_wait(v, t, b, sizeof(b), v->opts.cmd_timeout_ms);
	if (used < 0)
		return used;
	if (used < 8)
		return fail(v, -EPROTO, "response of %d bytes, shorter than a header", used);
	r = (int)rd32(b);
	if (r != VIRTIO_VIDEO_RESP_OK_QUERY_CONTROL)
		return r;
	if (used < 16 || rd32(b + 8) > (uint32_t)(used - 16) / 4)
		return fail(v, -EPROTO, "QUERY_CONTROL response of %d bytes for %u values", used,
			    used >= 16 ? rd32(b + 8) : 0);
	*num = rd32(b + 8);
	for (unsigned i = 0; i < *num && i < max; i++)
		values[i] = rd32(b + 16 + 4 * i);
	return r;
}

int vuf_get_control(struct vuf *v, uint32_t stream_id, uint32_t control, uint32_t *value)
{
	struct virtio_video_get_control c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_GET_CONTROL, stream_id),
		.control = htole32(control),
	};
	uint8_t b[sizeof(struct virtio_video_get_control_resp)] = { 0 };
	int r = simple_cmd(v, &c, sizeof(c), b, sizeof(b), sizeof(b), v->opts.cmd_timeout_ms);

	if (r == VIRTIO_VIDEO_RESP_OK_GET_CONTROL && value)
		*value = rd32(b + 8);
	return r;
}

int vuf_set_control(struct vuf *v, uint32_t stream_id, uint32_t control, uint32_t value)
{
	struct virtio_video_set_control c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_SET_CONTROL, stream_id),
		.control = htole32(control),
		.value = htole32(value),
	};

	return simple_cmd(v, &c, sizeof(c), NULL, 8, 8, v->opts.cmd_timeout_ms);
}

/* ---- eventq ------------------------------------------------------------------------------ */

static int post_event_buf(struct vuf *v, uint64_t gpa)
{
	struct vuf_buf b = { gpa, sizeof(struct virtio_video_event), true };
	int r;

	memset(vuf_va(v, gpa), 0, b.len);
	r = vuf_submit_bufs(v, EVQ, &b, 1, false, NULL);
	if (r == 0)
		v->ev_posted++;
	return r;
}

static int post_events(struct vuf *v)
{
	for (unsigned i = 0; i < v->opts.n_events; i++) {
		int r = post_event_buf(v, v->ev_gpa + 8u * i);

		if (r < 0)
			return r;
	}
	return 0;
}

int vuf_event_wait(struct vuf *v, struct virtio_video_event *ev, int timeout_ms)
{
	struct vuf_slot *s;
	uint8_t b[sizeof(*ev)] = { 0 };
	uint64_t gpa;
	uint32_t len;
	int r, notified;

	if (!v->opts.n_events)
		return fail(v, -EINVAL, "no event buffers (n_events = 0)");
	notified = wait_done(v, EVQ, NULL, &s, timeout_ms);

	if (notified == -EPROTO)
		s = first_done(v, EVQ);
	else if (notified < 0)
		return notified == -ETIMEDOUT ? fail(v, notified, "no event within %d ms", timeout_ms)
					      : notified;
	gpa = s->bufs[0].gpa;
	len = s->used_len;
	r = collect(v, EVQ, s, b, sizeof(b));
	v->ev_posted--;
	if (post_event_buf(v, gpa) < 0)
		return -EIO;
	if (r < 0)
		return r;
	if (len != sizeof(*ev))
		return fail(v, -EPROTO, "event of %u bytes, expected %zu", len, sizeof(*ev));
	ev->event_type = rd32(b);
	ev->stream_id = rd32(b + 4);
	return notified;
}

/* ---- capabilities -------------------------------------------------------------------------- */

void vuf_caps_free(struct vuf_caps *c)
{
	if (!c->descs)
		return;
	for (unsigned i = 0; i < c->num_descs; i++) {
		for (unsigned j = 0; c->descs[i].frames && j < c->descs[i].num_frames; j++)
			free(c->descs[i].frames[j].rates);
		free(c->descs[i].frames);
	}
	free(c->descs);
	memset(c, 0, sizeof(*c));
}

static struct vuf_range rd_range(const uint8_t *p)
{
	return (struct vuf_range){ rd32(p), rd32(p + 4), rd32(p + 8) };
}

#define CAPS_FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); goto bad; } while (0)

int vuf_caps_parse(const void *buf, size_t len, struct vuf_caps *out, char *err, size_t errlen)
{
	const uint8_t *b = buf;
	size_t off = 16;
	char dummy[8];

	if (!err) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	memset(out, 0, sizeof(*out));
	if (len < 16)
		CAPS_FAIL("capability response of %zu bytes, shorter than 16", len);
	out->num_descs = rd32(b + 8);
	if (out->num_descs > VIRTIO_VIDEO_MAX_FORMAT_DESCS)
		CAPS_FAIL("%u format descriptors (at most %d)", out->num_descs,
			  VIRTIO_VIDEO_MAX_FORMAT_DESCS);
	if (out->num_descs > (len - off) / 24)
		CAPS_FAIL("%u format descriptors do not fit in %zu bytes", out->num_descs, len);
	out->descs = calloc(out->num_descs ? out->num_descs : 1, sizeof(*out->descs));
	if (!out->descs)
		CAPS_FAIL("out of memory");
	for (unsigned i = 0; i < out->num_descs; i++) {
		struct vuf_format_desc *d = &out->descs[i];
		unsigned nf;

		if (len - off < 24)
			CAPS_FAIL("descriptor %u truncated at byte %zu", i, off);
		d->mask = rd64(b + off);
		d->format = rd32(b + off + 8);
		d->planes_layout = rd32(b + off + 12);
		d->plane_align = rd32(b + off + 16);
		nf = rd32(b + off + 20);
		off += 24;
		if (nf > (len - off) / 40)
			CAPS_FAIL("descriptor %u: %u frames do not fit in the %zu bytes left", i, nf,
				  len - off);
		d->frames = calloc(nf ? nf : 1, sizeof(*d->frames));
		if (!d->frames)
			CAPS_FAIL("out of memory");
		d->num_frames = nf;
		for (unsigned j = 0; j < nf; j++) {
			struct vuf_frame *f = &d->frames[j];
			unsigned nr;

			if (len - off < 40)
				CAPS_FAIL("descriptor %u frame %u truncated", i, j);
			f->width = rd_range(b + off);
			f->height = rd_range(b + off + 16);
			nr = rd32(b + off + 32);
			off += 40;
			if (nr > (len - off) / 16)
				CAPS_FAIL("descriptor %u frame %u: %u rates do not fit", i, j, nr);
			f->rates = calloc(nr ? nr : 1, sizeof(*f->rates));
			if (!f->rates)
				CAPS_FAIL("out of memory");
			f->num_rates = nr;
			for (unsigned k = 0; k < nr; k++, off += 16)
				f->rates[k] = rd_range(b + off);
		}
	}
	return 0;
bad:
	vuf_caps_free(out);
	return -EPROTO;
}

int vuf_query_capability(struct vuf *v, uint32_t queue_type, struct vuf_caps *out)
{
	struct virtio_video_query_capability c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_QUERY_CAPABILITY, 0),
		.queue_type = htole32(queue_type),
	};
	uint32_t max = le32toh(v->config.max_caps_length);
	size_t len = max && max <= MIB ? max : 4096;
	uint8_t *b = calloc(1, len);
	char why[200];
	int used, r;

	memset(out, 0, sizeof(*out));
	if (!b)
		return fail(v, -ENOMEM, "out of memory");
	used = vuf_cmd(v, &c, sizeof(c), NULL, 0, b, len, v->opts.cmd_timeout_ms);
	if (used < 0) {
		free(b);
		return used;
	}
	if (used < 8) {
		free(b);
		return fail(v, -EPROTO, "QUERY_CAPABILITY response of %d bytes", used);
	}
	r = (int)rd32(b);
	if (r == VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY) {
		if (vuf_caps_parse(b, (size_t)used, out, why, sizeof(why)) < 0)
			r = fail(v, -EPROTO, "QUERY_CAPABILITY %s: %s", vuf_queue_type_name(queue_type),
				 why);
		else
			out->queue_type = queue_type;
	}
	free(b);
	return r;
}

static void print_range(FILE *f, const char *what, struct vuf_range r)
{
	if (r.min == r.max)
		fprintf(f, "%s %u", what, r.min);
	else
		fprintf(f, "%s %u..%u step %u", what, r.min, r.max, r.step);
}

void vuf_caps_print(FILE *f, const struct vuf_caps *c, const struct vuf_caps *other)
{
	fprintf(f, "%s capabilities: %u format%s\n", vuf_queue_type_name(c->queue_type),
		c->num_descs, c->num_descs == 1 ? "" : "s");
	for (unsigned i = 0; i < c->num_descs; i++) {
		const struct vuf_format_desc *d = &c->descs[i];

		fprintf(f, "  [%u] %s (0x%x)  planes_layout 0x%x%s%s  plane_align %u\n", i,
			vuf_format_name(d->format), d->format, d->planes_layout,
			d->planes_layout & VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER ? " single-buffer" : "",
			d->planes_layout & VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE ? " per-plane" : "",
			d->plane_align);
		fprintf(f, "      mask 0x%016" PRIx64 " ->", d->mask);
		for (unsigned b = 0; b < 64; b++) {
			if (!(d->mask >> b & 1))
				continue;
			if (other && b < other->num_descs)
				fprintf(f, " %s", vuf_format_name(other->descs[b].format));
			else
				fprintf(f, " #%u", b);
		}
		fprintf(f, "\n");
		for (unsigned j = 0; j < d->num_frames; j++) {
			const struct vuf_frame *fr = &d->frames[j];

			fprintf(f, "      frame %u: ", j);
			print_range(f, "width", fr->width);
			print_range(f, ", height", fr->height);
			fprintf(f, ", %u rate%s", fr->num_rates, fr->num_rates == 1 ? "" : "s");
			for (unsigned k = 0; k < fr->num_rates; k++)
				print_range(f, k ? "," : ":", fr->rates[k]);
			fprintf(f, "\n");
		}
	}
}
