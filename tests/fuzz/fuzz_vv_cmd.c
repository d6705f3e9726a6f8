/* SPDX-License-Identifier: MIT */
/*
 * fuzz_vv_cmd: the virtio-video command layer (vuvideo.c, included below
 * whole, its main renamed) over the real vhost-user code (vu.c) and the
 * fake codec (tests/fake_m2m.c, with VUV_FAKE_STRICT=1 and the faults the
 * input picks). The harness is the guest driver (a well-formed command
 * ring and event ring in a memfd, commands built from the input, some raw)
 * and the event thread (there is none: its steps are taken when the input
 * says, with the device lock held as the thread holds it), so a run is
 * deterministic.
 *
 * Invariants, besides no crash and no sanitizer report:
 *  - every chain is answered exactly once: a used-ring entry (vu.c's
 *    VU_TEST_HOOKS) must be a chain the guest made available and that is
 *    not answered yet; the device model never answers or releases a chain
 *    it already answered (vu_chain_respond/release are wrapped); when the
 *    guest gives up at the end (QUEUE_CLEAR both queues and STREAM_DESTROY
 *    of every stream), nothing is left unanswered;
 *  - no QBUF of a buffer the codec holds (the fake aborts, VUV_FAKE_STRICT);
 *  - the device model's own pairing of resources and V4L2 buffers agrees
 *    with itself after every step;
 *  - no fd is leaked: as many fds after the input as before.
 * A broken invariant prints one line and aborts.
 *
 * Header: u8 device (% 4: decoder, decoder:mplane, encoder, encoder:mplane),
 * u8 fault (% 10: none, enodev, error, eio_qbuf, bad_index, big_used, epipe,
 * streamon, no_event, storm), u8 its N (% 8 + 1).
 * Step byte % 16 (stream ids % 4 + 1, resource ids % 8 + 1, queue bit 0):
 *   0 STREAM_CREATE sid, u8 coded (bit 7: u32 raw format follows), u8 mem
 *   1 STREAM_DESTROY sid       2 STREAM_DRAIN sid
 *   3 RESOURCE_CREATE sid, u8 queue, u8 res, u8 layout (bit 7: the per-plane
 *     layout), u8 planes (% 4), u8 mode: 0 one entry per plane over the
 *     resource's own 32 KiB, else (mode % 8) entries of u32 gpa (in the
 *     data area or past the end of memory), u16 len
 *   4 RESOURCE_QUEUE sid, u8 queue, u8 res, u8 timestamp, u8 sizes (% 4),
 *     u16 each
 *   5 RESOURCE_DESTROY_ALL sid, u8 queue     6 QUEUE_CLEAR sid, u8 queue
 *   7 GET_PARAMS sid, u8 queue (bit 1: _EXT)
 *   8 SET_PARAMS sid, u8 queue (bit 1: _EXT), u8 format, u16 width, u16
 *     height, u8 planes, u32 plane_size, u8 crop (x8), u8 rate
 *   9 controls: u8 which (% 4: QUERY_CAPABILITY, QUERY/GET/SET_CONTROL),
 *     sid, u8 control, u32 value
 *  10 a bitstream frame into an input resource's memory: u8 res, u16
 *     offset, u8 size (w, h = 16 x (1 + bits 0-1, 2-3)), u8 payload, u8 I
 *  11 guest write into the data area: u32 offset, u8 length, bytes
 *  12 event thread: poll every stream's fd (no wait), service what is ready
 *  13 event thread, revents forced: u8 slot, u8 revents bits
 *  14 a raw command: u16 type offset, sid, u8 length, bytes
 *  15 lifecycle: u8 % 4: eventq refill and kick, RESET_DEVICE, disconnect
 *     and reconnect, a kick of the command queue with nothing new
 */
#include <dirent.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <sys/mman.h>

#include "vu.h"

int vuv_main(int argc, char **argv);
static int fz_chain_respond(struct vu_dev *dev, struct vu_chain *c, const void *resp, size_t len);
static void fz_chain_release(struct vu_chain *c);

#define main vuv_main
#define vu_chain_respond fz_chain_respond
#define vu_chain_release fz_chain_release
#include "../../vuvideo.c"
#undef vu_chain_respond
#undef vu_chain_release
#undef main

#include "../fake_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- guest memory map (gpa = offset in the memfd, one region) ------------ */
#define MEM_SIZE 0x200000u
#define UVA_BASE 0x7f0000000000ull
#define CMD_NUM 256u
#define EV_NUM 16u
#define CMD_DESC 0x0000u
#define CMD_AVAIL 0x1000u
#define CMD_USED 0x2000u
#define EV_DESC 0x3000u
#define EV_AVAIL 0x3800u
#define EV_USED 0x3c00u
#define EV_BUF 0x4000u			/* EV_NUM x 64 */
#define REQ_BASE 0x8000u		/* SLOTS x REQ_MAX */
#define REQ_MAX 1024u
#define RESP_BASE 0x28000u		/* SLOTS x RESP_MAX */
#define RESP_MAX 4096u
#define SLOTS (CMD_NUM / 2)		/* a chain: request + response descriptor */
#define DATA_BASE 0x100000u		/* 2 queues x 8 resources x RES_SPAN */
#define RES_SPAN 0x8000u
#define DATA_SIZE (MEM_SIZE - DATA_BASE)

static struct {
	int sock, memfd, fds_before;
	uint8_t *mem;
	uint16_t cmd_avail, cmd_used, ev_avail, ev_used;
	bool slot_busy[SLOTS], ev_busy[EV_NUM];
	bool out[2][CMD_NUM];		/* heads made available, not answered */
	bool encoder;
	unsigned steps;
} G = { .sock = -1, .memfd = -1 };

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz: invariant broken (step %u): ", G.steps);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}
#define REQUIRE(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

/* ---- the input --------------------------------------------------------------- */

struct rd {
	const uint8_t *p;
	size_t n;
};

static void rdbuf(struct rd *r, void *buf, size_t len)
{
	size_t n = len < r->n ? len : r->n;

	memcpy(buf, r->p, n);
	memset((uint8_t *)buf + n, 0, len - n);
	r->p += n;
	r->n -= n;
}

static uint8_t r8(struct rd *r) { uint8_t v; rdbuf(r, &v, 1); return v; }
static uint16_t r16(struct rd *r) { uint16_t v; rdbuf(r, &v, 2); return v; }
static uint32_t r32(struct rd *r) { uint32_t v; rdbuf(r, &v, 4); return v; }

/* ---- answers: the hooks and the wrapped vu calls ------------------------------ */

void vu_test_hook(struct vu_dev *dev, int what, unsigned q, uint16_t head)
{
	(void)dev;
	REQUIRE(q < 2 && head < CMD_NUM, "hook %d for queue %u head %u", what, q, head);
	switch (what) {
	case VU_HOOK_USED:
		REQUIRE(G.out[q][head], "queue %u: chain %u answered, but it is not the guest's "
			"to answer (answered twice, or never made available)", q, head);
		G.out[q][head] = false;
		break;
	case VU_HOOK_MALFORMED:
		fail("queue %u: chain %u malformed, but the guest writes only well-formed ones",
		     q, head);
	case VU_HOOK_DROPPED:		/* a reset's or disconnect's: the guest forgot it */
	case VU_HOOK_DEFERRED:
		break;
	default:
		fail("unknown hook %d", what);
	}
}

static int fz_chain_respond(struct vu_dev *dev, struct vu_chain *c, const void *resp, size_t len)
{
	REQUIRE(c->queue != UINT16_MAX, "a chain answered a second time (response 0x%x)",
		len >= 4 ? rd32(resp) : 0);
	return vu_chain_respond(dev, c, resp, len);
}

static void fz_chain_release(struct vu_chain *c)
{
	REQUIRE(c->queue != UINT16_MAX, "a chain released after it was answered or released");
	vu_chain_release(c);
}

/* The device model's pairing: each V4L2 buffer at most one resource, and
 * the resource says the same; a paired resource is queued. */
static void check_pairs(void)
{
	for (unsigned i = 0; i < CONFIG_VUV_MAX_STREAMS; i++) {
		struct vv_stream *s = vv.streams[i];

		if (!s)
			continue;
		for (int mq = 0; mq < 2; mq++) {
			struct vv_queue *q = &s->q[mq];
			unsigned paired = 0;

			REQUIRE(q->nres <= VV_MAX_RESOURCES, "stream %u: %u resources", s->id, q->nres);
			for (unsigned b = 0; b < M2M_MAX_BUFFERS; b++) {
				int slot = q->vbuf_res[b];

				if (slot < 0)
					continue;
				paired++;
				REQUIRE(b < s->m2m.nbufs[mq], "stream %u %s: buffer %u of %u paired",
					s->id, m2m_queue_name(mq), b, s->m2m.nbufs[mq]);
				REQUIRE((unsigned)slot < q->nres, "stream %u: buffer %u -> slot %d",
					s->id, b, slot);
				if (mq == M2M_DST)
					REQUIRE(q->res[slot].vbuf == (int)b && q->res[slot].queued,
						"stream %u capture: buffer %u -> resource %u (vbuf %d, "
						"queued %d)", s->id, b, q->res[slot].id,
						q->res[slot].vbuf, q->res[slot].queued);
			}
			REQUIRE(q->in_driver <= paired, "stream %u %s: %u in the driver, %u paired",
				s->id, m2m_queue_name(mq), q->in_driver, paired);
		}
	}
}

/* ---- vhost-user: the frontend's messages -------------------------------------- */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = -1;

	if (!d)
		fail("/proc/self/fd: %s", strerror(errno));
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static void drain_replies(void)
{
	uint8_t buf[sizeof(struct vhost_user_hdr) + 512];

	while (recv(G.sock, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

/* One message; fdk: 0 none, 1 the memfd, 2 a new eventfd. */
static void msg(uint32_t req, const void *pl, uint32_t size, int fdk)
{
	uint8_t buf[sizeof(struct vhost_user_hdr) + 512];
	struct vhost_user_hdr h = { req, VHOST_USER_VERSION, size };
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cb;
	struct iovec iov = { buf, sizeof(h) + size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int fd = -1, r;

	memcpy(buf, &h, sizeof(h));
	if (size)
		memcpy(buf + sizeof(h), pl, size);
	if (fdk) {
		struct cmsghdr *cm;

		fd = fdk == 1 ? dup(G.memfd) : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (fd < 0)
			fail("fd: %s", strerror(errno));
		memset(&cb, 0, sizeof(cb));
		mh.msg_control = cb.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	r = sendmsg(G.sock, &mh, MSG_NOSIGNAL) == (ssize_t)iov.iov_len ? 0 : -errno;
	if (fd >= 0)
		close(fd);
	if (r)
		fail("sendmsg: %s", strerror(-r));
	r = vu_handle_msg(vv.vu);
	drain_replies();
	REQUIRE(r == 0 && !vu_broken(vv.vu), "vhost-user message %u refused (%d)", req, r);
}

static void msg_state(uint32_t req, uint32_t index, uint32_t num)
{
	struct vhost_vring_state_msg s = { index, num };

	msg(req, &s, sizeof(s), 0);
}

static void msg_u64(uint32_t req, uint64_t v, int fdk)
{
	msg(req, &v, 8, fdk);
}

static void ring_setup(unsigned q)
{
	uint32_t d = q ? EV_DESC : CMD_DESC, a = q ? EV_AVAIL : CMD_AVAIL, u = q ? EV_USED : CMD_USED;
	struct vhost_vring_addr_msg m = { q, 0, UVA_BASE + d, UVA_BASE + u, UVA_BASE + a, 0 };

	memset(G.mem + d, 0, q ? EV_AVAIL - EV_DESC : CMD_AVAIL - CMD_DESC);
	memset(G.mem + a, 0, q ? EV_USED - EV_AVAIL : CMD_USED - CMD_AVAIL);
	memset(G.mem + u, 0, q ? EV_BUF - EV_USED : EV_DESC - CMD_USED);
	msg_state(VHOST_USER_SET_VRING_NUM, q, q ? EV_NUM : CMD_NUM);
	msg_state(VHOST_USER_SET_VRING_BASE, q, 0);
	msg(VHOST_USER_SET_VRING_ADDR, &m, sizeof(m), 0);
	msg_u64(VHOST_USER_SET_VRING_KICK, q, 2);
	msg_u64(VHOST_USER_SET_VRING_CALL, q, 2);
	msg_state(VHOST_USER_SET_VRING_ENABLE, q, 1);
}

/* The guest's side of both rings starts over (after a reset or reconnect). */
static void guest_rings_reset(void)
{
	G.cmd_avail = G.cmd_used = G.ev_avail = G.ev_used = 0;
	memset(G.slot_busy, 0, sizeof(G.slot_busy));
	memset(G.ev_busy, 0, sizeof(G.ev_busy));
	memset(G.out, 0, sizeof(G.out));
	ring_setup(0);
	ring_setup(1);
}

static void connect_frontend(void)
{
	struct vhost_user_mem_table t = { .nregions = 1 };
	uint64_t pf = (1ull << VHOST_USER_PROTOCOL_F_MQ) | (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |
		      (1ull << VHOST_USER_PROTOCOL_F_CONFIG) |
		      (1ull << VHOST_USER_PROTOCOL_F_RESET_DEVICE);
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		fail("socketpair: %s", strerror(errno));
	G.sock = sv[1];
	if (vu_attach(vv.vu, sv[0]))
		fail("attach");
	msg(VHOST_USER_GET_FEATURES, NULL, 0, 0);
	msg(VHOST_USER_GET_PROTOCOL_FEATURES, NULL, 0, 0);
	msg_u64(VHOST_USER_SET_PROTOCOL_FEATURES, pf, 0);
	msg(VHOST_USER_SET_OWNER, NULL, 0, 0);
	msg_u64(VHOST_USER_SET_FEATURES, (1ull << VIRTIO_F_VERSION_1) |
		(1ull << VHOST_USER_F_PROTOCOL_FEATURES) | vv_ops.features, 0);
	t.regions[0] = (struct vhost_user_mem_region){ 0, MEM_SIZE, UVA_BASE, 0 };
	msg(VHOST_USER_SET_MEM_TABLE, &t, 8 + 32, 1);
	guest_rings_reset();
}

static void disconnect_frontend(void)
{
	vu_disconnect(vv.vu);		/* ops->reset: every stream closes */
	close(G.sock);
	G.sock = -1;
}

/* ---- the guest: rings ---------------------------------------------------------- */

static void put_desc(uint32_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	struct vring_desc d = { addr, len, flags, next };

	memcpy(G.mem + table + 16 * i, &d, sizeof(d));
}

static void avail_push(uint32_t avail, unsigned num, uint16_t *idx, uint16_t head)
{
	memcpy(G.mem + avail + 4 + 2 * (*idx % num), &head, 2);
	(*idx)++;
	__atomic_store_n((uint16_t *)(G.mem + avail + 2), *idx, __ATOMIC_RELEASE);
}

/* Read the used entries the device published since last time. */
static void collect_used(void)
{
	uint16_t idx = __atomic_load_n((uint16_t *)(G.mem + CMD_USED + 2), __ATOMIC_ACQUIRE);

	while (G.cmd_used != idx) {
		struct vring_used_elem e;

		memcpy(&e, G.mem + CMD_USED + 4 + 8 * (G.cmd_used % CMD_NUM), sizeof(e));
		REQUIRE(e.id < CMD_NUM && e.id % 2 == 0 && G.slot_busy[e.id / 2] &&
			e.len <= RESP_MAX, "used entry %u (len %u) is no chain of the guest",
			e.id, e.len);
		G.slot_busy[e.id / 2] = false;
		G.cmd_used++;
	}
	idx = __atomic_load_n((uint16_t *)(G.mem + EV_USED + 2), __ATOMIC_ACQUIRE);
	while (G.ev_used != idx) {
		struct vring_used_elem e;

		memcpy(&e, G.mem + EV_USED + 4 + 8 * (G.ev_used % EV_NUM), sizeof(e));
		REQUIRE(e.id < EV_NUM && G.ev_busy[e.id] && e.len == sizeof(struct virtio_video_event),
			"event used entry %u (len %u)", e.id, e.len);
		G.ev_busy[e.id] = false;
		G.ev_used++;
	}
}

/* Make one command available and kick: false if no slot is free. */
static bool submit(const void *req, size_t len, uint32_t resp_len)
{
	unsigned s;
	uint16_t head;

	for (s = 0; s < SLOTS && G.slot_busy[s]; s++)
		;
	if (s == SLOTS || len > REQ_MAX)
		return false;
	head = (uint16_t)(2 * s);
	memcpy(G.mem + REQ_BASE + s * REQ_MAX, req, len);
	memset(G.mem + RESP_BASE + s * RESP_MAX, 0, RESP_MAX);
	put_desc(CMD_DESC, head, REQ_BASE + s * REQ_MAX, (uint32_t)len, VRING_DESC_F_NEXT,
		 (uint16_t)(head + 1));
	put_desc(CMD_DESC, head + 1u, RESP_BASE + s * RESP_MAX, resp_len, VRING_DESC_F_WRITE, 0);
	G.slot_busy[s] = true;
	G.out[0][head] = true;
	avail_push(CMD_AVAIL, CMD_NUM, &G.cmd_avail, head);
	dev_queue_kick(vv.vu, VIRTIO_VIDEO_QUEUE_COMMAND);
	collect_used();
	return true;
}

static void events_refill(void)
{
	for (unsigned i = 0; i < EV_NUM; i++) {
		if (G.ev_busy[i])
			continue;
		put_desc(EV_DESC, i, EV_BUF + 64 * i, 64, VRING_DESC_F_WRITE, 0);
		G.ev_busy[i] = true;
		G.out[1][i] = true;
		avail_push(EV_AVAIL, EV_NUM, &G.ev_avail, (uint16_t)i);
	}
	dev_queue_kick(vv.vu, VIRTIO_VIDEO_QUEUE_EVENT);
	collect_used();
}

/* ---- the guest: commands ------------------------------------------------------- */

static uint32_t qtype(uint8_t b)
{
	return b & 1 ? VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT : VIRTIO_VIDEO_QUEUE_TYPE_INPUT;
}

static uint32_t sid_of(uint8_t b)
{
	return b % 4u + 1;
}

static struct virtio_video_cmd_hdr hdr(uint32_t type, uint32_t sid)
{
	return (struct virtio_video_cmd_hdr){ htole32(type), htole32(sid) };
}

static void cmd_hdr_only(uint32_t type, uint32_t sid)
{
	struct virtio_video_cmd_hdr h = hdr(type, sid);

	submit(&h, sizeof(h), 64);
}

static void cmd_queue(uint32_t type, uint32_t sid, uint32_t qt)
{
	struct virtio_video_queue_cmd c = { .hdr = hdr(type, sid), .queue_type = htole32(qt) };

	submit(&c, sizeof(c), type == VIRTIO_VIDEO_CMD_GET_PARAMS_EXT ? 256 : 128);
}

static uint32_t res_gpa(unsigned q, unsigned res)
{
	return DATA_BASE + (q * 8u + (res - 1)) * RES_SPAN;
}

static void step_stream_create(struct rd *r)
{
	uint32_t sid = sid_of(r8(r));
	uint8_t c = r8(r), m = r8(r);
	struct virtio_video_stream_create sc = { .hdr = hdr(VIRTIO_VIDEO_CMD_STREAM_CREATE, sid) };
	uint32_t coded = c & 0x80 ? r32(r) : c & 0x40 ? VIRTIO_VIDEO_FORMAT_YUV420
							: VIRTIO_VIDEO_FORMAT_FWHT;

	sc.in_mem_type = htole32(m & 1);
	sc.out_mem_type = htole32((m >> 1) & 1);
	sc.coded_format = htole32(coded);
	memcpy(sc.tag, "fuzz", 4);
	submit(&sc, sizeof(sc), 64);
}

static void step_resource_create(struct rd *r)
{
	uint8_t buf[REQ_MAX];
	struct virtio_video_resource_create rc = { 0 };
	uint32_t sid = sid_of(r8(r));
	uint8_t qb = r8(r), res = (uint8_t)(r8(r) % 8 + 1), layout = r8(r);
	unsigned planes = r8(r) % 4, mode = r8(r) % 8, nent = 0;
	size_t len = sizeof(rc);

	if (!planes)
		planes = 1;
	rc.hdr = hdr(VIRTIO_VIDEO_CMD_RESOURCE_CREATE, sid);
	rc.queue_type = htole32(qtype(qb));
	rc.resource_id = htole32(res);
	rc.planes_layout = htole32(layout & 0x80 ? VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE
						: VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER);
	rc.num_planes = htole32(planes);
	if (mode == 0) {
		/* one entry per plane over the resource's own memory, planes
		 * packed as a decoder or encoder of small frames wants them */
		uint32_t base = res_gpa(qb & 1, res), third = RES_SPAN / 4;

		for (unsigned p = 0; p < planes; p++) {
			struct virtio_video_mem_entry e = { 0 };
			bool single = !(layout & 0x80);

			rc.plane_offsets[p] = htole32(single ? p * third : 0);
			if (single && p)
				continue;
			e.addr = htole64(base + (single ? 0 : p * third));
			e.length = htole32(single ? RES_SPAN : third);
			rc.num_entries[p] = htole32(1);
			memcpy(buf + len + 16 * nent++, &e, sizeof(e));
		}
		if (!(layout & 0x80))
			rc.num_entries[0] = htole32(1);
	} else {
		for (unsigned i = 0; i < mode; i++) {
			struct virtio_video_mem_entry e = { 0 };

			/* the data area, or past the end of guest memory; not the
			 * rings: a guest that has the device write its own rings
			 * only breaks itself, and the harness would see that */
			e.addr = htole64(DATA_BASE + r32(r) % (DATA_SIZE + 0x10000u));
			e.length = htole32(r16(r));
			memcpy(buf + len + 16 * nent++, &e, sizeof(e));
		}
		for (unsigned p = 0; p < planes; p++) {
			rc.plane_offsets[p] = htole32(r16(r) & 0x3fff);
			rc.num_entries[p] = htole32(r8(r) % 4);
		}
	}
	len += 16 * nent;
	memcpy(buf, &rc, sizeof(rc));
	submit(buf, len, 64);
}

static void step_resource_queue(struct rd *r)
{
	struct virtio_video_resource_queue q = { 0 };
	uint32_t sid = sid_of(r8(r));
	uint8_t qb = r8(r), res = (uint8_t)(r8(r) % 8 + 1), ts = r8(r);
	unsigned n = r8(r) % 4;

	q.hdr = hdr(VIRTIO_VIDEO_CMD_RESOURCE_QUEUE, sid);
	q.queue_type = htole32(qtype(qb));
	q.resource_id = htole32(res);
	q.timestamp = htole64((uint64_t)ts * 1000);
	q.num_data_sizes = htole32(n);
	for (unsigned i = 0; i < n; i++)
		q.data_sizes[i] = htole32(r16(r));
	submit(&q, sizeof(q), 64);
}

static void step_set_params(struct rd *r)
{
	struct virtio_video_set_params_ext sp = { 0 };
	uint32_t sid = sid_of(r8(r));
	uint8_t qb = r8(r), fmt = r8(r), planes, crop;
	struct virtio_video_params *p = &sp.params.base;
	uint32_t w = r16(r), h = r16(r), psize;

	planes = r8(r);
	psize = r32(r);
	crop = r8(r);
	sp.hdr = hdr(qb & 2 ? VIRTIO_VIDEO_CMD_SET_PARAMS_EXT : VIRTIO_VIDEO_CMD_SET_PARAMS, sid);
	p->queue_type = htole32(qtype(qb));
	p->format = htole32(fmt & 0x80 ? fmt : fmt & 1 ? VIRTIO_VIDEO_FORMAT_NV12
					      : (fmt & 2) ? VIRTIO_VIDEO_FORMAT_FWHT
							  : VIRTIO_VIDEO_FORMAT_YUV420);
	p->frame_width = htole32(w);
	p->frame_height = htole32(h);
	p->crop.width = htole32(crop ? (uint32_t)crop * 8 : w);
	p->crop.height = htole32(crop ? (uint32_t)crop * 8 : h);
	p->frame_rate = htole32(r8(r));
	p->num_planes = htole32(planes);
	p->plane_formats[0].plane_size = htole32(psize);
	submit(&sp, qb & 2 ? sizeof(sp) : sizeof(struct virtio_video_set_params), 64);
}

static void step_controls(struct rd *r)
{
	uint8_t which = r8(r) % 4;
	uint32_t sid = sid_of(r8(r)), ctl = r8(r) % 9, value = r32(r);

	switch (which) {
	case 0: {
		struct virtio_video_query_capability c = {
			.hdr = hdr(VIRTIO_VIDEO_CMD_QUERY_CAPABILITY, 0),
			.queue_type = htole32(qtype((uint8_t)value)),
		};

		submit(&c, sizeof(c), value & 2 ? 64 : RESP_MAX);
		break;
	}
	case 1: {
		struct virtio_video_query_control c = {
			.hdr = hdr(VIRTIO_VIDEO_CMD_QUERY_CONTROL, sid),
			.control = htole32(ctl),
			.format = htole32(value & 1 ? value : VIRTIO_VIDEO_FORMAT_FWHT),
		};

		submit(&c, sizeof(c), 256);
		break;
	}
	case 2: {
		struct virtio_video_get_control c = {
			.hdr = hdr(VIRTIO_VIDEO_CMD_GET_CONTROL, sid),
			.control = htole32(ctl),
		};

		submit(&c, sizeof(c), 64);
		break;
	}
	default: {
		struct virtio_video_set_control c = {
			.hdr = hdr(VIRTIO_VIDEO_CMD_SET_CONTROL, sid),
			.control = htole32(ctl),
			.value = htole32(value),
		};

		submit(&c, value & 0x100 ? VIRTIO_VIDEO_SET_CONTROL_SHORT_SIZE : sizeof(c), 64);
		break;
	}
	}
}

/* A frame of the fake codec's FWHT framing into input resource res. */
static void step_frame(struct rd *r)
{
	unsigned res = r8(r) % 8 + 1, off = r16(r) % RES_SPAN;
	uint8_t sz = r8(r), payload = r8(r), key = r8(r);
	uint8_t f[FK_HDR + 255];

	fk_header(f, 16u * (1 + (sz & 3)), 16u * (1 + ((sz >> 2) & 3)), key & 1 ? FK_I_FRAME : 0,
		  payload);
	for (unsigned i = 0; i < payload; i++)
		f[FK_HDR + i] = (uint8_t)(i * 7 + key);
	if (off + FK_HDR + payload > RES_SPAN)
		off = RES_SPAN - FK_HDR - payload;
	memcpy(G.mem + res_gpa(0, res) + off, f, FK_HDR + payload);
}

static void step_raw(struct rd *r)
{
	uint8_t buf[256];
	uint16_t t = r16(r);
	uint32_t sid = sid_of(r8(r));
	uint8_t len = r8(r);

	rdbuf(r, buf, len);
	if (len >= 8) {
		struct virtio_video_cmd_hdr h = hdr(VIRTIO_VIDEO_CMD_QUERY_CAPABILITY + t % 20 - 1, sid);

		memcpy(buf, &h, sizeof(h));
	}
	submit(buf, len, t & 0x8000 ? 8 : RESP_MAX);
}

/* ---- the event thread's steps --------------------------------------------------- */

static void event_step(int forced_slot, short forced)
{
	struct pollfd pfd[CONFIG_VUV_MAX_STREAMS];
	struct vv_stream *ss[CONFIG_VUV_MAX_STREAMS];
	unsigned n = 0;

	vu_lock(vv.vu);
	for (unsigned i = 0; i < CONFIG_VUV_MAX_STREAMS; i++) {
		struct vv_stream *s = vv.streams[i];

		if (!s || s->state != VV_STREAM_OPEN || s->error)
			continue;
		if (forced_slot >= 0 && (unsigned)forced_slot % 4 != s->id % 4)
			continue;
		pfd[n] = (struct pollfd){ .fd = s->m2m.fd,
					  .events = POLLPRI | (stream_wants_data(s) ? POLLIN | POLLOUT : 0) };
		ss[n++] = s;
	}
	/* (libFuzzer's SIGALRM for -timeout can interrupt even a poll that
	 * does not wait: ask again, as the event thread does) */
	while (forced_slot < 0 && poll(pfd, n, 0) < 0)
		if (errno != EINTR)
			fail("poll: %s", strerror(errno));
	for (unsigned k = 0; k < n; k++) {
		short rev = forced_slot >= 0 ? forced : pfd[k].revents;

		if (rev)
			service_stream(&vv, ss[k], rev);
	}
	vu_queue_notify(vv.vu, VIRTIO_VIDEO_QUEUE_COMMAND);
	vu_unlock(vv.vu);
	collect_used();
}

/* ---- one input -------------------------------------------------------------------- */

static const char *const devices[4] = {
	"fake:decoder", "fake:decoder:mplane", "fake:encoder", "fake:encoder:mplane",
};
static struct m2m_info infos[4];

static void init_once(void)
{
	static bool done;
	struct m2m_ctx ctx;
	const char *v = getenv("VUV_FUZZ_VERBOSE");

	if (done)
		return;
	done = true;
	vu_verbosity = v ? atoi(v) : 0;
	setenv("VUV_FAKE_STRICT", "1", 1);
	for (unsigned i = 0; i < 4; i++)
		if (m2m_probe(devices[i], &infos[i]))
			fail("probe %s", devices[i]);
	/* the fake's listening socket is made at the first open and kept */
	if (m2m_open(&ctx, devices[0], false))
		fail("fake open");
	m2m_close(&ctx);
	vv.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_cond_init(&vv.cond, NULL);
	/* no event thread: sync_event_thread() must not wait for one */
	vv.stop = true;
	vv_ops.features = (1ull << VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES) |
			  (1ull << VIRTIO_VIDEO_F_RESOURCE_NON_CONTIG);
}

static void begin(uint8_t dev, uint8_t fault, uint8_t n)
{
	static const char *const faults[10] = {
		NULL, "enodev", "error", "eio_qbuf", "bad_index", "big_used", "epipe",
		"streamon", "no_event", "storm",
	};
	char spec[64];

	init_once();
	G.fds_before = count_fds();
	dev %= 4;
	vv.info = infos[dev];
	vv.devpath = devices[dev];
	G.encoder = dev >= 2;
	if (faults[fault % 10]) {
		snprintf(spec, sizeof(spec), "%s=%u", faults[fault % 10], n % 8u + 1);
		setenv("VUV_FAKE_FAULTS", spec, 1);
	} else {
		unsetenv("VUV_FAKE_FAULTS");
	}
	G.memfd = memfd_create("fuzz-guest", MFD_CLOEXEC);
	if (G.memfd < 0 || ftruncate(G.memfd, MEM_SIZE))
		fail("memfd: %s", strerror(errno));
	G.mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, G.memfd, 0);
	if (G.mem == MAP_FAILED)
		fail("mmap: %s", strerror(errno));
	vv.vu = vu_dev_new(&vv_ops, &vv);
	if (!vv.vu)
		fail("vu_dev_new");
	connect_frontend();
	events_refill();
}

/* The guest gives up on every stream: everything must be answered. */
static void end(void)
{
	int after;

	for (uint32_t sid = 1; sid <= 4; sid++) {
		if (!stream_find(&vv, sid))
			continue;
		cmd_queue(VIRTIO_VIDEO_CMD_QUEUE_CLEAR, sid, VIRTIO_VIDEO_QUEUE_TYPE_INPUT);
		cmd_queue(VIRTIO_VIDEO_CMD_QUEUE_CLEAR, sid, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT);
		cmd_hdr_only(VIRTIO_VIDEO_CMD_STREAM_DESTROY, sid);
	}
	collect_used();
	for (unsigned h = 0; h < CMD_NUM; h++)
		REQUIRE(!G.out[0][h], "chain %u still unanswered after every stream was destroyed", h);
	REQUIRE(vv.nstreams == 0, "%u streams left after every one was destroyed", vv.nstreams);
	disconnect_frontend();
	vu_dev_free(vv.vu);
	vv.vu = NULL;
	vv.backlog_len = 0;
	munmap(G.mem, MEM_SIZE);
	close(G.memfd);
	G.memfd = -1;
	/* the eventfd counter of the wake-ups the input caused */
	{
		uint64_t v;

		if (read(vv.wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			fail("wake_fd: %s", strerror(errno));
	}
	after = count_fds();
	REQUIRE(after == G.fds_before, "%d fds open before the input, %d after", G.fds_before,
		after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd r = { data, size };
	uint8_t dev = r8(&r), fault = r8(&r), n = r8(&r);
	unsigned heavy = 0;

	begin(dev, fault, n);
	for (G.steps = 0; r.n && G.steps < 3000; G.steps++) {
		uint8_t op = r8(&r) % 16;

		switch (op) {
		case 0:
			step_stream_create(&r);
			break;
		case 1:
			cmd_hdr_only(VIRTIO_VIDEO_CMD_STREAM_DESTROY, sid_of(r8(&r)));
			break;
		case 2:
			cmd_hdr_only(VIRTIO_VIDEO_CMD_STREAM_DRAIN, sid_of(r8(&r)));
			break;
		case 3:
			step_resource_create(&r);
			break;
		case 4:
			step_resource_queue(&r);
			break;
		case 5: {
			uint32_t sid = sid_of(r8(&r));

			cmd_queue(VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL, sid, qtype(r8(&r)));
			break;
		}
		case 6: {
			uint32_t sid = sid_of(r8(&r));

			cmd_queue(VIRTIO_VIDEO_CMD_QUEUE_CLEAR, sid, qtype(r8(&r)));
			break;
		}
		case 7: {
			uint32_t sid = sid_of(r8(&r));
			uint8_t qb = r8(&r);

			cmd_queue(qb & 2 ? VIRTIO_VIDEO_CMD_GET_PARAMS_EXT : VIRTIO_VIDEO_CMD_GET_PARAMS,
				  sid, qtype(qb));
			break;
		}
		case 8:
			step_set_params(&r);
			break;
		case 9:
			step_controls(&r);
			break;
		case 10:
			step_frame(&r);
			break;
		case 11: {
			uint32_t off = r32(&r) % DATA_SIZE;
			uint8_t buf[256], len = r8(&r);

			rdbuf(&r, buf, len);
			if (len > DATA_SIZE - off)
				len = (uint8_t)(DATA_SIZE - off);
			memcpy(G.mem + DATA_BASE + off, buf, len);
			break;
		}
		case 12:
			event_step(-1, 0);
			break;
		case 13: {
			uint8_t slot = r8(&r), bits = r8(&r);
			short rev = (short)((bits & 1 ? POLLIN : 0) | (bits & 2 ? POLLPRI : 0) |
					    (bits & 4 ? POLLOUT : 0) |
					    ((bits & 0x38) == 0x38 ? POLLERR : 0) |
					    ((bits & 0xc0) == 0xc0 ? POLLHUP : 0));

			event_step(slot, rev);
			break;
		}
		case 14:
			step_raw(&r);
			break;
		default:
			switch (r8(&r) % 4) {
			case 0:
				events_refill();
				break;
			case 1:
				if (heavy++ < 8) {
					msg(VHOST_USER_RESET_DEVICE, NULL, 0, 0);
					guest_rings_reset();
					events_refill();
				}
				break;
			case 2:
				if (heavy++ < 8) {
					disconnect_frontend();
					connect_frontend();
					events_refill();
				}
				break;
			default:
				dev_queue_kick(vv.vu, VIRTIO_VIDEO_QUEUE_COMMAND);
				collect_used();
				break;
			}
			break;
		}
		check_pairs();
	}
	end();
	return 0;
}
