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

int vuf_fail(struct vuf *v, int err, const char *fmt, ...)
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


/* ---- names ------------------------------------------------------------------ */

#define NAME(tab, i) ((size_t)(i) < sizeof(tab) / sizeof((tab)[0]) && (tab)[i] ? (tab)[i] : NULL)

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
	o->sealed = getenv("VUV_FRONT_SEAL") && !strcmp(getenv("VUV_FRONT_SEAL"), "1");
	o->region_size[1] = 64 * MIB;
	o->n_events = 16;
	o->connect_timeout_ms = 5000;
	o->reply_timeout_ms = VUF_REPLY_TIMEOUT_MS;
	o->cmd_timeout_ms = VUF_CMD_TIMEOUT_MS;
}

static int new_memfd(size_t size, bool sealed)
{
	int fd = memfd_create("vufront-guest", MFD_CLOEXEC | (sealed ? MFD_ALLOW_SEALING : 0));

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0 ||
	    (sealed && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)) {
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
		return vuf_fail(v, -EINVAL, "bad region sizes %zu, %zu", s0, s1);
	if (!v->opts.separate_memfds) {
		int fd = new_memfd(s0 + s1, v->opts.sealed);
		uint8_t *base;

		if (fd < 0)
			return vuf_fail(v, fd, "memfd_create: %s", strerror(-fd));
		base = mmap(NULL, s0 + s1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (base == MAP_FAILED) {
			close(fd);
			return vuf_fail(v, -ENOMEM, "mmap guest memory: %s", strerror(errno));
		}
		v->reg[1] = (struct vuf_region){ gpa[1], s1, base, 0, fd, 0 };
		v->reg[0] = (struct vuf_region){ gpa[0], s0, base + s1, s1, fd, 0 };
		return 0;
	}
	for (int i = 0; i < VUF_NREGIONS; i++) {
		int fd = new_memfd(sz[i], v->opts.sealed);
		uint8_t *va;

		if (fd < 0)
			return vuf_fail(v, fd, "memfd_create: %s", strerror(-fd));
		va = mmap(NULL, sz[i], PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (va == MAP_FAILED) {
			close(fd);
			return vuf_fail(v, -ENOMEM, "mmap guest memory: %s", strerror(errno));
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
		vuf_fail(v, -ENOMEM, "guest memory region %d exhausted (%zu bytes wanted)", region, len);
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
	return vuf_alloc_contig_at(v, len, region, 0, out);
}

int vuf_alloc_contig_at(struct vuf *v, size_t len, int region, size_t skip,
			struct vuf_sglist *out)
{
	uint64_t gpa;

	memset(out, 0, sizeof(*out));
	if (!len || len > UINT32_MAX || skip >= VUF_PAGE)
		return vuf_fail(v, -EINVAL, "bad buffer length %zu (+%zu)", len, skip);
	gpa = vuf_alloc(v, len + skip, VUF_PAGE, region);
	if (!gpa)
		return -ENOMEM;
	gpa += skip;
	out->e = malloc(sizeof(*out->e));
	if (!out->e)
		return vuf_fail(v, -ENOMEM, "out of memory");
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
		return vuf_fail(v, -EINVAL, "bad buffer length %zu", len);
	out->e = calloc(n, sizeof(*out->e));
	if (!out->e)
		return vuf_fail(v, -ENOMEM, "out of memory");
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
		return vuf_fail(v, -EINVAL, "copy of %zu bytes at %zu beyond a %zu-byte buffer",
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
			return vuf_fail(v, -EFAULT, "sg entry %u not in guest memory", i);
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
		return vuf_fail(v, -ENOMEM, "out of memory");
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
		return vuf_fail(v, -errno, "eventfd: %s", strerror(errno));
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
		return vuf_fail(v, -ENOTCONN, "not connected");
	if (nfds > 16)
		return vuf_fail(v, -EINVAL, "too many fds");
	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	flat = malloc(total ? total : 1);
	if (!flat)
		return vuf_fail(v, -ENOMEM, "out of memory");
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
			ret = vuf_fail(v, -errno, "send: %s", strerror(errno));
			break;
		}
		if (poll(&p, 1, remaining_ms(deadline)) == 0) {
			ret = vuf_fail(v, -ETIMEDOUT, "send: daemon not reading for %d ms",
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
			return vuf_fail(v, -errno, "poll: %s", strerror(errno));
		if (r == 0)
			return -ETIMEDOUT;
		n = recvmsg(v->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return vuf_fail(v, -errno, "recv: %s", strerror(errno));
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
		return vuf_fail(v, -ENOTCONN, "not connected");
	r = recv_full(v, hdr, sizeof(*hdr), deadline);
	if (r == -ETIMEDOUT)
		return vuf_fail(v, r, "no reply within %d ms", timeout_ms);
	if (r == -EPIPE)
		return vuf_fail(v, r, "daemon closed the connection");
	if (r < 0)
		return r;
	if (v->opts.verbose)
		fprintf(stderr, "vufront: <- %s flags 0x%x size %u\n",
			vuf_request_name(hdr->request), hdr->flags, hdr->size);
	if ((hdr->flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION ||
	    !(hdr->flags & VHOST_USER_REPLY_MASK))
		return vuf_fail(v, -EPROTO, "reply to %s with bad flags 0x%x",
			    vuf_request_name(hdr->request), hdr->flags);
	if (hdr->size > MAX_REPLY)
		return vuf_fail(v, -EPROTO, "reply to %s claims %u bytes",
			    vuf_request_name(hdr->request), hdr->size);
	r = recv_full(v, buf, hdr->size < max ? hdr->size : max, deadline);
	if (r < 0)
		return vuf_fail(v, r, "reply to %s: payload: %s", vuf_request_name(hdr->request),
			    strerror(-r));
	for (left = hdr->size > max ? hdr->size - max : 0; left;) {
		size_t n = left < sizeof(sink) ? left : sizeof(sink);

		r = recv_full(v, sink, n, deadline);
		if (r < 0)
			return vuf_fail(v, r, "reply payload: %s", strerror(-r));
		left -= n;
	}
	if (hdr->size > max)
		return vuf_fail(v, -EMSGSIZE, "reply to %s of %u bytes, expected at most %zu",
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
			return vuf_fail(v, -ETIMEDOUT, "daemon kept the connection open for %d ms",
				    timeout_ms);
		n = recv(v->sock, sink, sizeof(sink), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return 0;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return vuf_fail(v, -errno, "recv: %s", strerror(errno));
	}
}

static int expect_reply(struct vuf *v, uint32_t request, void *buf, size_t len)
{
	struct vhost_user_hdr h;
	int r = vuf_recv_reply(v, &h, buf, len, v->opts.reply_timeout_ms);

	if (r < 0)
		return vuf_fail(v, r, "%s: %s", vuf_request_name(request), v->err);
	if (h.request != request)
		return vuf_fail(v, -EPROTO, "%s answered with request %u (%s)",
			    vuf_request_name(request), h.request, vuf_request_name(h.request));
	if ((size_t)r != len)
		return vuf_fail(v, -EPROTO, "%s reply of %d bytes, expected %zu",
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
		return vuf_fail(v, -EIO, "%s: daemon answered failure (%" PRIu64 ")",
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
		return vuf_fail(v, -EINVAL, "config size %u too large", size);
	r = vuf_send_msg(v, VHOST_USER_GET_CONFIG, VHOST_USER_VERSION, &m,
			 VHOST_USER_CONFIG_HDR_SIZE + size, NULL, 0);
	if (r < 0)
		return r;
	r = vuf_recv_reply(v, &h, &m, sizeof(m), v->opts.reply_timeout_ms);
	if (r < 0)
		return vuf_fail(v, r, "GET_CONFIG: %s", v->err);
	if (h.request != VHOST_USER_GET_CONFIG)
		return vuf_fail(v, -EPROTO, "GET_CONFIG answered with %s", vuf_request_name(h.request));
	if (r == 0)
		return vuf_fail(v, -EIO, "GET_CONFIG refused (empty reply)");
	if ((uint32_t)r < VHOST_USER_CONFIG_HDR_SIZE || m.size > (uint32_t)r - VHOST_USER_CONFIG_HDR_SIZE ||
	    m.size > size)
		return vuf_fail(v, -EPROTO, "GET_CONFIG reply of %d bytes with size %u", r, m.size);
	memcpy(buf, m.payload, m.size);
	return (int)m.size;
}

int vuf_connect(struct vuf *v, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t deadline = now_ms() + v->opts.connect_timeout_ms;

	size_t len = strlen(path);

	if (len >= sizeof(sa.sun_path) || len >= sizeof(v->path))
		return vuf_fail(v, -ENAMETOOLONG, "socket path too long: %s", path);
	memmove(v->path, path, len + 1);
	memcpy(sa.sun_path, path, len + 1);
	close_fd(&v->sock);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), e;

		if (fd < 0)
			return vuf_fail(v, -errno, "socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			v->sock = fd;
			return 0;
		}
		e = errno;
		close(fd);
		if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN && e != EINTR) ||
		    now_ms() >= deadline)
			return vuf_fail(v, -e, "connect %s: %s", path,
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
		return vuf_fail(v, -ENOTSUP, "daemon does not offer PROTOCOL_FEATURES");
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
		return vuf_fail(v, -ENOTSUP, "daemon does not offer the CONFIG protocol feature");
	if (vuf_has_protocol_feature(v, VHOST_USER_PROTOCOL_F_MQ)) {
		if ((r = vuf_get_u64(v, VHOST_USER_GET_QUEUE_NUM, &v->queue_num)) < 0)
			return r;
		if (v->queue_num < VUF_NQUEUES)
			return vuf_fail(v, -ENOTSUP, "daemon has %" PRIu64 " queues", v->queue_num);
	}
	if (vuf_has_protocol_feature(v, VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
		if ((r = vuf_get_u64(v, VHOST_USER_GET_MAX_MEM_SLOTS, &v->max_mem_slots)) < 0)
			return r;
	} else if (v->opts.use_add_mem_reg) {
		return vuf_fail(v, -ENOTSUP, "ADD_MEM_REG wanted, CONFIGURE_MEM_SLOTS not offered");
	}
	if (v->opts.use_add_mem_reg && v->max_mem_slots < VUF_NREGIONS)
		return vuf_fail(v, -ENOTSUP, "daemon has %" PRIu64 " memory slots", v->max_mem_slots);
	if ((r = msg_acked(v, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0)) < 0)
		return r;
	if ((r = vuf_get_u64(v, VHOST_USER_GET_FEATURES, &f2)) < 0)
		return r;
	if (f2 != v->dev_features)
		return vuf_fail(v, -EPROTO, "GET_FEATURES changed: 0x%" PRIx64 " then 0x%" PRIx64,
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
		return vuf_fail(v, -ENOTSUP, "daemon does not offer VERSION_1");
	if (!vuf_has_feature(v, VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES))
		return vuf_fail(v, -ENOTSUP, "daemon does not offer RESOURCE_GUEST_PAGES");
	if (v->opts.use_indirect && !vuf_has_feature(v, VIRTIO_RING_F_INDIRECT_DESC))
		return vuf_fail(v, -ENOTSUP, "indirect descriptors wanted, not offered");
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
		return vuf_fail(v, -ENOTCONN, "not connected");
	if (v->ready)
		return vuf_fail(v, -EBUSY, "restart without vuf_stop first");
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
		return vuf_fail(v, -ENOTCONN, "not connected");
	if (v->ready)
		return vuf_fail(v, -EBUSY, "resume without vuf_stop first");
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
			return vuf_fail(v, -EPROTO, "GET_VRING_BASE %u answered for ring %u", i, s.index);
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
		return vuf_fail(v, -EINVAL, "no kick fd for queue %u", qi);
	if (write(v->q[qi].kick_fd, &one, sizeof(one)) != sizeof(one))
		return vuf_fail(v, -errno, "kick: %s", strerror(errno));
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
		return vuf_fail(v, -ENOTCONN, "not connected (handshake not done)");
	if (qi >= VUF_NQUEUES || !n || n > VUF_MAX_BUFS)
		return vuf_fail(v, -EINVAL, "bad chain: queue %u, %u buffers", qi, n);
	q = &v->q[qi];
	if (q->nfree < ndesc)
		return vuf_fail(v, -ENOSPC, "queue %u full (%u of %u descriptors in use)", qi,
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
			return vuf_fail(v, -ENOTCONN, "not connected");
		r = poll(p, 2, remaining_ms(deadline));
		if (r < 0 && errno != EINTR)
			return vuf_fail(v, -errno, "poll: %s", strerror(errno));
		if (r == 0)
			break;
		if (p[1].revents & (POLLHUP | POLLERR))
			return vuf_fail(v, -EPIPE, "daemon closed the connection while we waited "
				    "on queue %u", qi);
		if (p[0].revents & POLLIN)
			if (read(q->call_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
				return vuf_fail(v, -errno, "read call fd: %s", strerror(errno));
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
			return vuf_fail(v, -errno, "read call fd: %s", strerror(errno));
	}
	vuf_reap(v, qi);
	if (target ? target->done : first_done(v, qi) != NULL) {
		*found = target ? target : first_done(v, qi);
		return 0;
	}
	return vuf_fail(v, -ETIMEDOUT, "queue %u: no completion within %d ms", qi, timeout_ms);
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
		r = vuf_fail(v, -EPROTO, "used length %u exceeds the %u writable bytes", s->used_len,
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
		return vuf_fail(v, -EINVAL, "unknown or already collected token 0x%" PRIx64, token);
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
		return vuf_fail(v, -ENOTCONN, "not connected (handshake not done)");
	if (req_len > UINT32_MAX || payload_len > UINT32_MAX || resp_len > UINT32_MAX)
		return vuf_fail(v, -EINVAL, "buffer too large");
	if (!q->nfree)
		return vuf_fail(v, -ENOSPC, "commandq full (%u descriptors in use)", q->num);
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
		return vuf_fail(v, -EINVAL, "no event buffers (n_events = 0)");
	notified = wait_done(v, EVQ, NULL, &s, timeout_ms);

	if (notified == -EPROTO)
		s = first_done(v, EVQ);
	else if (notified < 0)
		return notified == -ETIMEDOUT ? vuf_fail(v, notified, "no event within %d ms", timeout_ms)
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
		return vuf_fail(v, -EPROTO, "event of %u bytes, expected %zu", len, sizeof(*ev));
	ev->event_type = rd32(b);
	ev->stream_id = rd32(b + 4);
	return notified;
}
