/* SPDX-License-Identifier: MIT */
/* fuzz_common.c: the frontend, device and guest the fuzz targets play, and
 * the invariant checks (see fuzz.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"

struct fz FZ = { .sock = -1, .memfd = -1 };

/* ---- reading the input ------------------------------------------------------- */

void rdbuf(struct rd *r, void *buf, size_t len)
{
	size_t n = len < r->n ? len : r->n;

	memcpy(buf, r->p, n);
	memset((uint8_t *)buf + n, 0, len - n);
	r->p += n;
	r->n -= n;
}

uint8_t rd8(struct rd *r)
{
	uint8_t v;

	rdbuf(r, &v, 1);
	return v;
}

uint16_t rd16(struct rd *r)
{
	uint16_t v;

	rdbuf(r, &v, 2);
	return v;
}

uint32_t rd32(struct rd *r)
{
	uint32_t v;

	rdbuf(r, &v, 4);
	return v;
}

uint64_t rd64(struct rd *r)
{
	uint64_t v;

	rdbuf(r, &v, 8);
	return v;
}

/* ---- invariants ---------------------------------------------------------------- */

void fz_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz: invariant broken: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

/* What vu.c reported during the current call, and the answers it keeps. */
enum phase { PH_OTHER, PH_POP, PH_RESPOND };

struct owed {
	uint32_t gen;
	uint16_t q, head;
};

static struct {
	enum phase phase;
	unsigned q;
	uint16_t head;
	unsigned used, malformed, deferred, dropped;
	struct owed owed[FZ_SLOTS * 4];
	unsigned nowed;
} M;

static void phase(enum phase p, unsigned q, uint16_t head)
{
	M.phase = p;
	M.q = q;
	M.head = head;
	M.used = M.malformed = M.deferred = M.dropped = 0;
}

static bool owed_take(uint32_t gen, unsigned q, uint16_t head)
{
	for (unsigned i = 0; i < M.nowed; i++)
		if (M.owed[i].gen == gen && M.owed[i].q == q && M.owed[i].head == head) {
			M.owed[i] = M.owed[--M.nowed];
			return true;
		}
	return false;
}

void vu_test_hook(struct vu_dev *dev, int what, unsigned q, uint16_t head)
{
	uint32_t gen = vu_generation(dev);
	bool mine = M.phase == PH_RESPOND && q == M.q && head == M.head;

	switch (what) {
	case VU_HOOK_MALFORMED:
		FZ_REQUIRE(M.phase == PH_POP && q == M.q, "queue %u: chain %u returned empty "
			   "outside a pop of that queue", q, head);
		M.malformed++;
		break;
	case VU_HOOK_USED:
		if (mine) {
			M.used++;
			break;
		}
		FZ_REQUIRE(owed_take(gen, q, head), "queue %u: chain %u published, but it was "
			   "neither being answered nor kept for this ring", q, head);
		break;
	case VU_HOOK_DEFERRED:
		FZ_REQUIRE(mine, "queue %u: chain %u kept outside its answer", q, head);
		FZ_REQUIRE(M.nowed < sizeof(M.owed) / sizeof(M.owed[0]), "too many kept");
		M.owed[M.nowed++] = (struct owed){ gen, (uint16_t)q, head };
		M.deferred++;
		break;
	case VU_HOOK_DROPPED:		/* not published: never wrong, only counted */
		if (mine)
			M.dropped++;
		else
			(void)owed_take(gen, q, head);
		break;
	default:
		fz_fail("unknown hook %d", what);
	}
}

/* After every step: kept answers of a dead generation are gone for good; a
 * ring that runs has none left to deliver. */
static void check_kept(void)
{
	uint32_t gen;

	if (!FZ.dev)
		return;
	vu_lock(FZ.dev);
	gen = vu_generation(FZ.dev);
	for (unsigned i = 0; i < M.nowed; )
		if (M.owed[i].gen != gen)
			M.owed[i] = M.owed[--M.nowed];
		else
			i++;
	for (unsigned i = 0; i < M.nowed; i++)
		FZ_REQUIRE(!vu_queue_ready(FZ.dev, M.owed[i].q), "queue %u runs again, but the "
			   "answer to chain %u kept while it was stopped was not delivered",
			   M.owed[i].q, M.owed[i].head);
	vu_unlock(FZ.dev);
	phase(PH_OTHER, 0, 0);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = -1;		/* the directory's own fd */

	if (!d)
		fz_fail("/proc/self/fd: %s", strerror(errno));
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* ---- the connection ------------------------------------------------------------ */

static void attach(void)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		fz_fail("socketpair: %s", strerror(errno));
	FZ.sock = sv[1];
	if (vu_attach(FZ.dev, sv[0]))
		fz_fail("attach");
}

void fz_reconnect(void)
{
	vu_disconnect(FZ.dev);
	if (FZ.sock >= 0)
		close(FZ.sock);
	FZ.sock = -1;
	memset(FZ.ring, 0, sizeof(FZ.ring));
	attach();
	check_kept();
}

static int f_get_config(struct vu_dev *d, uint32_t off, void *buf, uint32_t len)
{
	(void)d;
	if (off > 44 || len > 44 - off)
		return -EINVAL;
	memset(buf, 0x5a, len);
	return 0;
}

static void f_reset(struct vu_dev *d)
{
	(void)d;
}

static const struct vu_ops fz_ops = {
	.features = 1, .nqueues = FZ_QUEUES, .get_config = f_get_config, .reset = f_reset,
};

void fz_begin(void)
{
	const char *v = getenv("VUV_FUZZ_VERBOSE");	/* vu's -v level, for a replay */

	vu_verbosity = v ? atoi(v) : 0;
	memset(&M, 0, sizeof(M));
	FZ.fds_before = count_fds();
	FZ.dev = vu_dev_new(&fz_ops, NULL);
	FZ.memfd = memfd_create("fuzz-guest", MFD_CLOEXEC);
	if (!FZ.dev || FZ.memfd < 0 || ftruncate(FZ.memfd, FZ_MEM_SIZE))
		fz_fail("setup: %s", strerror(errno));
	FZ.mem = mmap(NULL, FZ_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, FZ.memfd, 0);
	if (FZ.mem == MAP_FAILED)
		fz_fail("mmap: %s", strerror(errno));
	FZ.truncated = false;
	memset(FZ.busy, 0, sizeof(FZ.busy));
	memset(FZ.ring, 0, sizeof(FZ.ring));
	attach();
}

void fz_end(void)
{
	int after;

	for (unsigned i = 0; i < FZ_SLOTS; i++)
		if (FZ.busy[i])
			vu_chain_release(&FZ.slot[i]);
	memset(FZ.busy, 0, sizeof(FZ.busy));
	vu_dev_free(FZ.dev);
	FZ.dev = NULL;
	if (FZ.sock >= 0)
		close(FZ.sock);
	munmap(FZ.mem, FZ_MEM_SIZE);
	close(FZ.memfd);
	FZ.sock = FZ.memfd = -1;
	after = count_fds();
	FZ_REQUIRE(after == FZ.fds_before, "%d fds open before the input, %d after",
		   FZ.fds_before, after);
}

/* Read every reply waiting; remember the bases GET_VRING_BASE returns. */
static void drain_replies(void)
{
	for (;;) {
		struct vhost_user_hdr h;
		uint8_t pl[512];

		if (recv(FZ.sock, &h, sizeof(h), MSG_DONTWAIT) != (ssize_t)sizeof(h))
			return;
		if (h.size > sizeof(pl) || (h.size && recv(FZ.sock, pl, h.size, MSG_DONTWAIT) !=
						     (ssize_t)h.size))
			fz_fail("reply %u with a payload of %u bytes", h.request, h.size);
		FZ_REQUIRE(h.flags == (VHOST_USER_VERSION | VHOST_USER_REPLY_MASK),
			   "reply flags 0x%x", h.flags);
		if (h.request == VHOST_USER_GET_VRING_BASE && h.size == 8) {
			struct vhost_vring_state_msg st;

			memcpy(&st, pl, 8);
			if (st.index < FZ_QUEUES)
				FZ.ring[st.index].base = st.num;
		}
	}
}

/* Remember what a restart would have to send again. */
static void note_ring(uint32_t req, const void *pl, uint32_t size)
{
	struct vhost_vring_state_msg st;
	struct vhost_vring_addr_msg a;

	if (req == VHOST_USER_SET_VRING_NUM && size == 8) {
		memcpy(&st, pl, 8);
		if (st.index < FZ_QUEUES) {
			FZ.ring[st.index].num = st;
			FZ.ring[st.index].have_num = true;
		}
	} else if (req == VHOST_USER_SET_VRING_ADDR && size == sizeof(a)) {
		memcpy(&a, pl, sizeof(a));
		if (a.index < FZ_QUEUES) {
			FZ.ring[a.index].addr = a;
			FZ.ring[a.index].have_addr = true;
		}
	}
}

int fz_send_fds(int sock, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		char b[CMSG_SPACE(FZ_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} cb;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds > FZ_MAX_FDS)
		return -1;
	memset(&cb, 0, sizeof(cb));
	if (nfds) {
		struct cmsghdr *cm;

		mh.msg_control = cb.b;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

void fz_msg(uint32_t req, uint32_t flags, const void *pl, uint32_t size,
	    const uint8_t *fdkinds, unsigned nfds)
{
	uint8_t buf[sizeof(struct vhost_user_hdr) + 512];
	struct vhost_user_hdr h = { req, flags, size };
	int fds[FZ_MAX_FDS] = { 0 }, ret;

	if (size > 512 || nfds > FZ_MAX_FDS)
		return;
	memcpy(buf, &h, sizeof(h));
	if (size)
		memcpy(buf + sizeof(h), pl, size);
	for (unsigned i = 0; i < nfds; i++) {
		int p[2];

		switch (fdkinds[i] % 3) {
		case 0:
			fds[i] = dup(FZ.memfd);
			break;
		case 1:
			fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
			break;
		default:
			if (pipe2(p, O_CLOEXEC))
				fz_fail("pipe");
			close(p[0]);
			fds[i] = p[1];
		}
		if (fds[i] < 0)
			fz_fail("fd: %s", strerror(errno));
	}
	ret = fz_send_fds(FZ.sock, buf, sizeof(h) + size, fds, nfds);
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);		/* vu has its own copies now */
	if (ret)
		fz_fail("sendmsg: %s", strerror(errno));
	note_ring(req, pl, size);
	ret = vu_handle_msg(FZ.dev);
	drain_replies();
	check_kept();
	if (ret == -EPROTO || ret == -EPIPE || vu_broken(FZ.dev))
		fz_reconnect();		/* what vu_run does */
}

void fz_hangup_mid_message(unsigned bytes)
{
	struct vhost_user_hdr h = { VHOST_USER_SET_FEATURES, VHOST_USER_VERSION, 8 };
	int ret;

	bytes %= sizeof(h) + 8;
	if (bytes && send(FZ.sock, &h, bytes < sizeof(h) ? bytes : sizeof(h), MSG_NOSIGNAL) < 0)
		fz_fail("send");
	shutdown(FZ.sock, SHUT_WR);
	ret = vu_handle_msg(FZ.dev);
	FZ_REQUIRE(ret == -EPIPE || ret == -EPROTO, "hang-up after %u bytes: %d", bytes, ret);
	fz_reconnect();
}

/* ---- the device ------------------------------------------------------------------ */

void fz_pop(unsigned q)
{
	unsigned s;
	int r;

	for (s = 0; s < FZ_SLOTS && FZ.busy[s]; s++)
		;
	if (s == FZ_SLOTS)
		return;
	vu_lock(FZ.dev);
	phase(PH_POP, q, 0);
	r = vu_queue_pop(FZ.dev, q, &FZ.slot[s]);
	FZ_REQUIRE(r == 0 || r == -EAGAIN || r == -EINVAL || r == -EIO, "pop: %d", r);
	FZ_REQUIRE(M.malformed == (r == -EINVAL), "pop %d with %u chains returned empty", r,
		   M.malformed);
	if (!r) {
		struct vu_chain *c = &FZ.slot[s];
		size_t wr = 0;

		FZ_REQUIRE(c->queue == q && c->req_len <= VU_CHAIN_MAX_REQ && c->n_wr <= VU_CHAIN_MAX_WR &&
			   (c->req_len == 0) == (c->req == NULL), "popped chain fields");
		for (unsigned i = 0; i < c->n_wr; i++) {
			uint64_t len = c->wr[i].len;

			FZ_REQUIRE(len && vu_gpa_read(FZ.dev, c->wr[i].gpa, NULL, len) == 0,
				   "writable piece %u", i);
			wr += len;
		}
		FZ_REQUIRE(wr == c->wr_len, "writable length %zu, pieces %zu", c->wr_len, wr);
		FZ.busy[s] = true;
	}
	vu_unlock(FZ.dev);
	check_kept();
}

void fz_respond(unsigned s, size_t len)
{
	static const uint8_t resp[512] = { 'r', 'e', 's', 'p' };
	struct vu_chain *c = &FZ.slot[s % FZ_SLOTS];
	unsigned q = c->queue;
	uint16_t head = c->head;
	int r;

	if (!FZ.busy[s % FZ_SLOTS])
		return;
	vu_lock(FZ.dev);
	phase(PH_RESPOND, q, head);
	r = vu_chain_respond(FZ.dev, c, resp, len % sizeof(resp));
	FZ_REQUIRE(r == 0 || r == -ENOSPC || r == -EFAULT, "respond: %d", r);
	FZ_REQUIRE(M.used + M.deferred + M.dropped <= 1, "one answer made %u used entries, "
		   "%u kept, %u dropped", M.used, M.deferred, M.dropped);
	FZ_REQUIRE(!c->req && c->queue == UINT16_MAX, "answered chain not freed");
	vu_unlock(FZ.dev);
	FZ.busy[s % FZ_SLOTS] = false;
	check_kept();
}

void fz_release(unsigned s)
{
	if (!FZ.busy[s % FZ_SLOTS])
		return;
	vu_chain_release(&FZ.slot[s % FZ_SLOTS]);
	FZ.busy[s % FZ_SLOTS] = false;
}

void fz_notify(unsigned q)
{
	vu_lock(FZ.dev);
	vu_queue_notify(FZ.dev, q);
	vu_unlock(FZ.dev);
	check_kept();
}

void fz_kick(unsigned q)
{
	for (unsigned n = 0; n < 64; n++) {
		struct vu_chain c;
		int r;

		vu_lock(FZ.dev);
		phase(PH_POP, q, 0);
		r = vu_queue_pop(FZ.dev, q, &c);
		FZ_REQUIRE(M.malformed == (r == -EINVAL), "kick: pop %d", r);
		if (r == 0) {
			phase(PH_RESPOND, q, c.head);
			vu_chain_respond(FZ.dev, &c, "pong", 4);
			FZ_REQUIRE(M.used + M.deferred + M.dropped == 1, "kick: answer made %u "
				   "entries", M.used);
		}
		vu_unlock(FZ.dev);
		check_kept();
		if (r == -EAGAIN || r == -EIO)
			break;
	}
	fz_notify(q);
}

/* ---- the guest --------------------------------------------------------------------- */

void fz_guest_write(uint32_t off, const void *buf, size_t len)
{
	if (FZ.truncated || off >= FZ_MEM_SIZE)
		return;
	if (len > FZ_MEM_SIZE - off)
		len = FZ_MEM_SIZE - off;
	memcpy(FZ.mem + off, buf, len);
}

/* A frontend that shrinks its memory file (then puts it back, zeroed). */
void fz_truncate(bool shrink)
{
	if (ftruncate(FZ.memfd, shrink ? 0 : FZ_MEM_SIZE))
		fz_fail("ftruncate: %s", strerror(errno));
	FZ.truncated = shrink;
}

/* ---- QEMU's sequences -------------------------------------------------------------- */

static void msg_state(uint32_t req, uint32_t index, uint32_t num)
{
	struct vhost_vring_state_msg s = { index, num };

	fz_msg(req, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, &s, sizeof(s), NULL, 0);
}

static void msg_u64(uint32_t req, uint64_t v, uint8_t fdkind, unsigned nfds)
{
	fz_msg(req, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, &v, 8, &fdkind, nfds);
}

void fz_qemu_stop(void)
{
	for (unsigned q = 0; q < FZ_QUEUES; q++)
		msg_state(VHOST_USER_SET_VRING_ENABLE, q, 0);
	for (unsigned q = 0; q < FZ_QUEUES; q++) {
		struct vhost_vring_state_msg s = { q, 0 };

		fz_msg(VHOST_USER_GET_VRING_BASE, VHOST_USER_VERSION, &s, sizeof(s), NULL, 0);
	}
}

/* Rings come back as they were (`cont`), at the bases GET_VRING_BASE gave. */
void fz_qemu_start(void)
{
	for (unsigned q = 0; q < FZ_QUEUES; q++) {
		struct fz_ring r = FZ.ring[q];

		if (!r.have_num || !r.have_addr)
			continue;
		fz_msg(VHOST_USER_SET_VRING_NUM, VHOST_USER_VERSION, &r.num, 8, NULL, 0);
		msg_state(VHOST_USER_SET_VRING_BASE, q, r.base);
		fz_msg(VHOST_USER_SET_VRING_ADDR, VHOST_USER_VERSION, &r.addr, sizeof(r.addr),
		       NULL, 0);
		msg_u64(VHOST_USER_SET_VRING_KICK, q, 1, 1);
		msg_u64(VHOST_USER_SET_VRING_CALL, q, 1, 1);
	}
	for (unsigned q = 0; q < FZ_QUEUES; q++)
		msg_state(VHOST_USER_SET_VRING_ENABLE, q, 1);
}

uint64_t fz_uva(uint64_t gpa)
{
	return gpa >= FZ_GPA1 ? FZ_UVA1 + (gpa - FZ_GPA1) : FZ_UVA0 + (gpa - FZ_GPA0);
}

/* GET/SET_PROTOCOL_FEATURES, SET_OWNER, SET_FEATURES, SET_MEM_TABLE. */
void fz_handshake(uint64_t features)
{
	struct vhost_user_mem_table t = { .nregions = 2 };
	static const uint8_t memfds[2] = { 0, 0 };
	uint64_t pf = (1ull << VHOST_USER_PROTOCOL_F_MQ) | (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |
		      (1ull << VHOST_USER_PROTOCOL_F_CONFIG);

	fz_msg(VHOST_USER_GET_FEATURES, VHOST_USER_VERSION, NULL, 0, NULL, 0);
	fz_msg(VHOST_USER_GET_PROTOCOL_FEATURES, VHOST_USER_VERSION, NULL, 0, NULL, 0);
	msg_u64(VHOST_USER_SET_PROTOCOL_FEATURES, pf, 0, 0);
	fz_msg(VHOST_USER_SET_OWNER, VHOST_USER_VERSION, NULL, 0, NULL, 0);
	msg_u64(VHOST_USER_SET_FEATURES, features, 0, 0);
	t.regions[0] = (struct vhost_user_mem_region){ FZ_GPA0, FZ_REGION, FZ_UVA0, 0 };
	t.regions[1] = (struct vhost_user_mem_region){ FZ_GPA1, FZ_REGION, FZ_UVA1, FZ_REGION };
	fz_msg(VHOST_USER_SET_MEM_TABLE, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, &t,
	       8 + 2 * 32, memfds, 2);
}

void fz_ring_setup(unsigned q, uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa,
		   unsigned num)
{
	struct vhost_vring_addr_msg a = { q, 0, fz_uva(desc_gpa), fz_uva(used_gpa),
					  fz_uva(avail_gpa), 0 };

	msg_state(VHOST_USER_SET_VRING_NUM, q, num);
	msg_state(VHOST_USER_SET_VRING_BASE, q, 0);
	fz_msg(VHOST_USER_SET_VRING_ADDR, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, &a,
	       sizeof(a), NULL, 0);
	msg_u64(VHOST_USER_SET_VRING_KICK, q, 1, 1);
	msg_u64(VHOST_USER_SET_VRING_CALL, q, 1, 1);
	msg_state(VHOST_USER_SET_VRING_ENABLE, q, 1);
}
