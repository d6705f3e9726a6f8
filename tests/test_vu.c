/* SPDX-License-Identifier: MIT */
/*
 * test_vu: vu.c against a hand-played frontend over a socketpair, with guest
 * memory in memfd regions at non-adjacent guest-physical bases and rings
 * built by hand. Most cases call vu_handle_msg() in this thread; the
 * run_* cases run vu_run() in a thread and talk over a real socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/udmabuf.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include "config.h"
#include "tharness.h"
#include "vu.h"

#define MB (1ull << 20)
#define MEM_SIZE (4 * MB)
/* Guest memory: A and B are the SET_MEM_TABLE regions (not adjacent), C is
 * added with ADD_MEM_REG right after B (in gpa and in the file). */
#define GPA_A 0x10000000ull
#define GPA_B 0x80000000ull
#define GPA_C (GPA_B + MB)
#define UVA_A 0x7f1000000000ull
#define UVA_B 0x7f2000000000ull
#define UVA_C 0x7f3000000000ull
#define OFF_A 0
#define OFF_B MB
#define OFF_C (2 * MB)

#define V VHOST_USER_VERSION
#define NR VHOST_USER_NEED_REPLY_MASK
#define F(b) (1ull << (b))
#define F_RING (F(VIRTIO_F_VERSION_1) | F(VIRTIO_RING_F_INDIRECT_DESC) | \
		F(VIRTIO_RING_F_EVENT_IDX) | F(VHOST_USER_F_PROTOCOL_FEATURES))
#define F_DEV F(0)
#define CFG_SIZE 44
#define QSIZE 16

/* ---- the fake device ----------------------------------------------------- */

static uint8_t cfg[CFG_SIZE];
static int n_resets, n_kicks;		/* __atomic */
static bool echo_on_kick;

static int f_get_config(struct vu_dev *d, uint32_t off, void *buf, uint32_t len)
{
	(void)d;
	if (off > CFG_SIZE || len > CFG_SIZE - off)
		return -EINVAL;
	memcpy(buf, cfg + off, len);
	return 0;
}

static int f_set_config(struct vu_dev *d, uint32_t off, const void *buf, uint32_t len)
{
	(void)d;
	if (off > CFG_SIZE || len > CFG_SIZE - off)
		return -EINVAL;
	memcpy(cfg + off, buf, len);
	return 0;
}

/* Runs on vu_run's thread without the lock, like the real device. */
static void f_kick(struct vu_dev *d, unsigned q)
{
	struct vu_chain c;
	int r;

	__atomic_add_fetch(&n_kicks, 1, __ATOMIC_SEQ_CST);
	if (!echo_on_kick)
		return;
	vu_lock(d);
	while ((r = vu_queue_pop(d, q, &c)) != -EAGAIN && r != -EIO)
		if (r == 0)
			vu_chain_respond(d, &c, "pong", 4);
	vu_queue_notify(d, q);
	vu_unlock(d);
}

static void f_reset(struct vu_dev *d)
{
	(void)d;
	__atomic_add_fetch(&n_resets, 1, __ATOMIC_SEQ_CST);
}

static const struct vu_ops ops = {
	.features = F_DEV, .nqueues = 2,
	.get_config = f_get_config, .set_config = f_set_config,
	.queue_kick = f_kick, .reset = f_reset,
};

/* ---- the frontend side ------------------------------------------------- */

struct ring {
	unsigned num;
	uint64_t base;			/* gpa of the ring area */
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t aidx;
	int kick, call;
};

static struct {
	struct vu_dev *dev;
	int sock;			/* our end */
	int memfd;
	uint8_t *mem;			/* the whole memfd */
	bool threaded;			/* vu_run answers, not us */
	struct ring r[2];
} T = { .sock = -1, .memfd = -1, .r = { { .kick = -1, .call = -1 }, { .kick = -1, .call = -1 } } };

static uint8_t *gp(uint64_t gpa)
{
	if (gpa >= GPA_A && gpa < GPA_A + MB)
		return T.mem + OFF_A + (gpa - GPA_A);
	return T.mem + OFF_B + (gpa - GPA_B);	/* B and C follow each other */
}

static uint64_t uva(uint64_t gpa)
{
	return gpa < GPA_B ? UVA_A + (gpa - GPA_A) : UVA_B + (gpa - GPA_B);
}

static bool t_open(void)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return false;
	T.dev = vu_dev_new(&ops, NULL);
	T.sock = sv[1];
	T.memfd = memfd_create("guest", MFD_CLOEXEC);
	if (!T.dev || T.memfd < 0 || ftruncate(T.memfd, MEM_SIZE))
		return false;
	T.mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, T.memfd, 0);
	return T.mem != MAP_FAILED && vu_attach(T.dev, sv[0]) == 0;
}

static void t_close(void)
{
	if (T.dev)
		vu_dev_free(T.dev);
	if (T.sock >= 0)
		close(T.sock);
	if (T.mem && T.mem != MAP_FAILED)
		munmap(T.mem, MEM_SIZE);
	if (T.memfd >= 0)
		close(T.memfd);
	for (int i = 0; i < 2; i++) {
		if (T.r[i].kick >= 0)
			close(T.r[i].kick);
		if (T.r[i].call >= 0)
			close(T.r[i].call);
	}
	memset(&T, 0, sizeof(T));
	T.sock = T.memfd = -1;
	for (int i = 0; i < 2; i++)
		T.r[i].kick = T.r[i].call = -1;
	echo_on_kick = false;
}

static int fe_raw(const void *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		char b[CMSG_SPACE(16 * sizeof(int))];
		struct cmsghdr align;
	} cb;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

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
	return sendmsg(T.sock, &mh, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -errno;
}

/* Send one request; without vu_run, handle it and return vu_handle_msg's
 * result. */
static int fe(uint32_t req, uint32_t flags, const void *pl, uint32_t size, const int *fds,
	      unsigned nfds)
{
	uint8_t buf[12 + 1024];
	struct vhost_user_hdr h = { req, flags, size };

	memcpy(buf, &h, 12);
	if (size)
		memcpy(buf + 12, pl, size);
	if (fe_raw(buf, 12 + size, fds, nfds))
		return -EIO;
	return T.threaded ? 0 : vu_handle_msg(T.dev);
}

/* Read a reply to req; false if there is none (or it is malformed). */
static bool rep(uint32_t req, void *pl, uint32_t *size)
{
	struct vhost_user_hdr h;
	int fl = T.threaded ? MSG_WAITALL : MSG_DONTWAIT;
	uint32_t max = *size;

	if (recv(T.sock, &h, 12, fl) != 12 || h.request != req ||
	    h.flags != (V | VHOST_USER_REPLY_MASK) || h.size > max)
		return false;
	*size = h.size;
	return !h.size || recv(T.sock, pl, h.size, MSG_WAITALL) == (ssize_t)h.size;
}

static bool no_reply(void)
{
	char b;

	return recv(T.sock, &b, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

static uint64_t get_u64(uint32_t req)
{
	uint64_t v;
	uint32_t sz = 8;

	if (fe(req, V, NULL, 0, NULL, 0) || !rep(req, &v, &sz) || sz != 8)
		return UINT64_MAX;
	return v;
}

/* A request with NEED_REPLY: the status (0 ok), or a negative handle error,
 * or -1000 when no status came back. */
static int64_t acked(uint32_t req, const void *pl, uint32_t size, const int *fds, unsigned n)
{
	uint64_t st;
	uint32_t sz = 8;
	int r = fe(req, V | NR, pl, size, fds, n);

	if (r)
		return r;
	return rep(req, &st, &sz) && sz == 8 ? (int64_t)st : -1000;
}

static int64_t set_u64(uint32_t req, uint64_t v)
{
	return acked(req, &v, 8, NULL, 0);
}

static int64_t set_state(uint32_t req, uint32_t idx, uint32_t num)
{
	struct vhost_vring_state_msg s = { idx, num };

	return acked(req, &s, 8, NULL, 0);
}

static int64_t set_vring_fd(uint32_t req, uint32_t idx, int fd)
{
	uint64_t v = fd < 0 ? idx | VHOST_USER_VRING_NOFD_MASK : idx;

	return acked(req, &v, 8, &fd, fd < 0 ? 0 : 1);
}

static struct vhost_user_mem_region region(uint64_t gpa, uint64_t size, uint64_t u, uint64_t off)
{
	return (struct vhost_user_mem_region){ gpa, size, u, off };
}

static int64_t mem_table(const struct vhost_user_mem_region *rg, unsigned n)
{
	struct vhost_user_mem_table t = { .nregions = n };
	int fds[8];

	for (unsigned i = 0; i < n; i++) {
		t.regions[i] = rg[i];
		fds[i] = T.memfd;
	}
	return acked(VHOST_USER_SET_MEM_TABLE, &t, 8 + 32 * n, fds, n);
}

static int64_t mem_table_ab(void)
{
	struct vhost_user_mem_region rg[2] = { region(GPA_A, MB, UVA_A, OFF_A),
					       region(GPA_B, MB, UVA_B, OFF_B) };
	return mem_table(rg, 2);
}

static int64_t mem_reg(uint32_t req, struct vhost_user_mem_region rg, int fd)
{
	struct vhost_user_mem_reg_msg m = { 0, rg };

	return acked(req, &m, sizeof(m), &fd, fd < 0 ? 0 : 1);
}

static int64_t vring_addr(unsigned q, uint64_t desc, uint64_t avail, uint64_t used)
{
	struct vhost_vring_addr_msg a = { q, 0, desc, used, avail, 0 };

	return acked(VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0);
}

/* Queue q's ring at base (+0 desc, +0x1000 avail, +0x2000 used), started and
 * enabled the way QEMU does it. */
static bool ring_setup_ex(unsigned q, uint64_t base, unsigned num, bool enable)
{
	struct ring *r = &T.r[q];

	memset(gp(base), 0, 0x3000);
	*r = (struct ring){ num, base, (void *)gp(base), (void *)gp(base + 0x1000),
			    (void *)gp(base + 0x2000), 0,
			    eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK),
			    eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
	return set_state(VHOST_USER_SET_VRING_NUM, q, num) == 0 &&
	       set_state(VHOST_USER_SET_VRING_BASE, q, 0) == 0 &&
	       vring_addr(q, uva(base), uva(base + 0x1000), uva(base + 0x2000)) == 0 &&
	       set_vring_fd(VHOST_USER_SET_VRING_KICK, q, r->kick) == 0 &&
	       set_vring_fd(VHOST_USER_SET_VRING_CALL, q, r->call) == 0 &&
	       (!enable || set_state(VHOST_USER_SET_VRING_ENABLE, q, 1) == 0);
}

static bool ring_setup(unsigned q, uint64_t base, unsigned num)
{
	return ring_setup_ex(q, base, num, true);
}

/* Handshake, both regions, queue 0 in A and queue 1 in B. */
static bool setup(uint64_t features)
{
	return t_open() &&
	       set_u64(VHOST_USER_SET_PROTOCOL_FEATURES, get_u64(VHOST_USER_GET_PROTOCOL_FEATURES)) == 0 &&
	       acked(VHOST_USER_SET_OWNER, NULL, 0, NULL, 0) == 0 &&
	       set_u64(VHOST_USER_SET_FEATURES, features) == 0 && mem_table_ab() == 0 &&
	       ring_setup(0, GPA_A + 0x1000, QSIZE) && ring_setup(1, GPA_B + 0x1000, QSIZE);
}

static void desc(struct vring_desc *t, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	t[i] = (struct vring_desc){ addr, len, flags, next };
}

static void post(struct ring *r, uint16_t head)
{
	r->avail->ring[r->aidx % r->num] = head;
	r->aidx++;
	__atomic_store_n(&r->avail->idx, r->aidx, __ATOMIC_RELEASE);
}

static int pop(unsigned q, struct vu_chain *c)
{
	int r;

	vu_lock(T.dev);
	r = vu_queue_pop(T.dev, q, c);
	vu_unlock(T.dev);
	return r;
}

static int respond(struct vu_chain *c, const void *buf, size_t len)
{
	int r;

	vu_lock(T.dev);
	r = vu_chain_respond(T.dev, c, buf, len);
	vu_unlock(T.dev);
	return r;
}

static void notify(unsigned q)
{
	vu_lock(T.dev);
	vu_queue_notify(T.dev, q);
	vu_unlock(T.dev);
}

static uint16_t used_idx(unsigned q)
{
	return __atomic_load_n(&T.r[q].used->idx, __ATOMIC_ACQUIRE);
}

static uint16_t avail_event(struct ring *r)
{
	uint16_t v;

	memcpy(&v, &r->used->ring[r->num], 2);
	return v;
}

static uint64_t calls(unsigned q)
{
	uint64_t v = 0;

	return read(T.r[q].call, &v, 8) == 8 ? v : 0;
}

/* A pipe whose write end we hand over: EOF on the read end proves that vu
 * closed its copy. */
static int pipe_rd, pipe_wr;

static bool pipe_make(void)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC | O_NONBLOCK))
		return false;
	pipe_rd = p[0];
	pipe_wr = p[1];
	return true;
}

static bool pipe_closed_by_vu(void)
{
	char c;
	bool eof;

	close(pipe_wr);
	eof = read(pipe_rd, &c, 1) == 0;
	close(pipe_rd);
	return eof;
}

static bool still_works(void)
{
	return get_u64(VHOST_USER_GET_QUEUE_NUM) == 2;
}

/* ---- handshake and messages -------------------------------------------- */

static bool case_log_format(void)
{
	int p[2], saved = dup(2);
	char buf[256] = "";
	ssize_t n;

	CHECK(pipe2(p, O_NONBLOCK) == 0 && saved >= 0, "pipe");
	dup2(p[1], 2);
	vu_log(VU_WARN, "x %d", 1);
	vu_log(VU_DEBUG, "hidden");
	vu_log(VU_INFO, "plain");
	dup2(saved, 2);
	close(saved);
	n = read(p[0], buf, sizeof(buf) - 1);
	close(p[0]);
	close(p[1]);
	CHECK(n > 0 && !strcmp(buf, "vhost-user-video: warning: x 1\nvhost-user-video: plain\n"),
	      "got '%s'", buf);
	return true;
}

static void wait_next_second(void)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (t.tv_sec == t0.tv_sec);
}

/* Warnings (what a guest can provoke) are rate-limited; errors are not, and
 * the next warning let through says how many were dropped. */
static bool case_log_rate_limit(void)
{
	int p[2], saved = dup(2), warn = 0, err = 0;
	static char buf[32768];
	ssize_t n;

	CHECK(pipe2(p, O_NONBLOCK) == 0 && saved >= 0, "pipe");
	wait_next_second();
	dup2(p[1], 2);
	for (int i = 0; i < 100; i++)
		vu_log(VU_WARN, "flood %d", i);
	for (int i = 0; i < 3; i++)
		vu_log(VU_ERR, "error %d", i);
	wait_next_second();
	vu_log(VU_WARN, "after");
	dup2(saved, 2);
	close(saved);
	n = read(p[0], buf, sizeof(buf) - 1);
	close(p[0]);
	close(p[1]);
	CHECK(n > 0, "nothing logged");
	buf[n] = 0;
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
		warn += !strncmp(l, "vhost-user-video: warning: flood", 32);
		err += !strncmp(l, "vhost-user-video: error: error", 30);
		if (!strncmp(l, "vhost-user-video: warning: after", 32))
			CHECK(strstr(l, "(80 warnings suppressed before)"), "got '%s'", l);
	}
	CHECK(warn == 20, "%d of 100 warnings in one second got through, expected 20", warn);
	CHECK(err == 3, "%d of 3 errors logged", err);
	return true;
}

static bool case_listen(void)
{
	char dir[] = "/tmp/test_vu.XXXXXX", path[64];
	int fd, fd2, f;

	CHECK(mkdtemp(dir), "mkdtemp");
	snprintf(path, sizeof(path), "%s/sock", dir);
	f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	close(f);
	CHECK(vu_listen(path) == -ENOTSOCK, "a regular file must be refused");
	unlink(path);
	fd = vu_listen(path);
	CHECK(fd >= 0, "listen: %s", strerror(-fd));
	CHECK(vu_listen(path) == -EADDRINUSE, "a live socket must not be taken over");
	close(fd);
	fd2 = vu_listen(path);		/* stale now */
	CHECK(fd2 >= 0, "stale socket not replaced: %s", strerror(-fd2));
	CHECK((fcntl(fd2, F_GETFD) & FD_CLOEXEC), "not CLOEXEC");
	close(fd2);
	unlink(path);
	rmdir(dir);
	return true;
}

static bool case_features(void)
{
	uint64_t f;

	CHECK(t_open(), "setup");
	f = get_u64(VHOST_USER_GET_FEATURES);
	CHECK(f == (F_RING | F_DEV), "features 0x%llx", (unsigned long long)f);
	CHECK(set_u64(VHOST_USER_SET_FEATURES, F_RING | F(26)) > 0, "unoffered bit accepted");
	CHECK(set_u64(VHOST_USER_SET_FEATURES, F_RING) == 0, "offered bits refused");
	return true;
}

static bool case_protocol_features(void)
{
	uint64_t want = F(VHOST_USER_PROTOCOL_F_MQ) | F(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
			F(VHOST_USER_PROTOCOL_F_CONFIG) | F(VHOST_USER_PROTOCOL_F_RESET_DEVICE) |
			F(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS), f;

	CHECK(t_open(), "setup");
	f = get_u64(VHOST_USER_GET_PROTOCOL_FEATURES);
	CHECK(f == want, "protocol features 0x%llx", (unsigned long long)f);
	CHECK(set_u64(VHOST_USER_SET_PROTOCOL_FEATURES, want | F(1)) > 0, "unoffered accepted");
	CHECK(set_u64(VHOST_USER_SET_PROTOCOL_FEATURES, want) == 0, "refused");
	CHECK(get_u64(VHOST_USER_GET_MAX_MEM_SLOTS) == VU_MAX_MEM_SLOTS, "mem slots");
	return true;
}

/* docs/interop/vhost-user.rst as QEMU drives a generic vhost-user device. */
static bool case_qemu_handshake(void)
{
	struct vhost_user_config_msg c = { 0, CFG_SIZE, 0, { 0 } }, rc;
	struct vhost_vring_state_msg st;
	uint32_t sz;
	int call[2], err[2];

	CHECK(t_open(), "setup");
	for (int i = 0; i < CFG_SIZE; i++)
		cfg[i] = i * 3;
	/* realize */
	CHECK(get_u64(VHOST_USER_GET_FEATURES) & F(VHOST_USER_F_PROTOCOL_FEATURES), "no PF");
	CHECK(set_u64(VHOST_USER_SET_PROTOCOL_FEATURES,
		      get_u64(VHOST_USER_GET_PROTOCOL_FEATURES)) == 0, "SET_PROTOCOL_FEATURES");
	CHECK(get_u64(VHOST_USER_GET_QUEUE_NUM) == 2, "queue num");
	CHECK(get_u64(VHOST_USER_GET_MAX_MEM_SLOTS) == 32, "slots");
	CHECK(fe(VHOST_USER_SET_OWNER, V, NULL, 0, NULL, 0) == 0 && no_reply(), "SET_OWNER");
	CHECK(get_u64(VHOST_USER_GET_FEATURES) != UINT64_MAX, "GET_FEATURES again");
	for (unsigned q = 0; q < 2; q++) {
		call[q] = eventfd(0, EFD_CLOEXEC);
		err[q] = eventfd(0, EFD_CLOEXEC);
		CHECK(set_vring_fd(VHOST_USER_SET_VRING_CALL, q, call[q]) == 0, "CALL");
		CHECK(set_vring_fd(VHOST_USER_SET_VRING_ERR, q, err[q]) == 0, "ERR");
		close(call[q]);
		close(err[q]);
	}
	/* guest reads config */
	CHECK(fe(VHOST_USER_GET_CONFIG, V, &c, 12 + CFG_SIZE, NULL, 0) == 0, "GET_CONFIG");
	sz = sizeof(rc);
	CHECK(rep(VHOST_USER_GET_CONFIG, &rc, &sz) && sz == 12 + CFG_SIZE && rc.size == CFG_SIZE &&
	      !memcmp(rc.payload, cfg, CFG_SIZE), "config bytes");
	/* DRIVER_OK */
	CHECK(set_u64(VHOST_USER_SET_FEATURES, F_RING | F_DEV) == 0, "SET_FEATURES");
	CHECK(mem_table_ab() == 0, "SET_MEM_TABLE");
	CHECK(ring_setup(0, GPA_A + 0x1000, QSIZE) && ring_setup(1, GPA_B + 0x1000, 256), "rings");
	vu_lock(T.dev);
	CHECK(vu_queue_ready(T.dev, 0) && vu_queue_ready(T.dev, 1), "rings not ready");
	CHECK(vu_queue_kick_fd(T.dev, 0) >= 0 && vu_has_feature(T.dev, VIRTIO_RING_F_EVENT_IDX),
	      "kick fd / features");
	vu_unlock(T.dev);
	/* stop */
	for (unsigned q = 0; q < 2; q++) {
		CHECK(set_state(VHOST_USER_SET_VRING_ENABLE, q, 0) == 0, "disable");
		CHECK(fe(VHOST_USER_GET_VRING_BASE, V, &(struct vhost_vring_state_msg){ q, 0 }, 8,
			 NULL, 0) == 0, "GET_VRING_BASE");
		sz = 8;
		CHECK(rep(VHOST_USER_GET_VRING_BASE, &st, &sz) && st.index == q && st.num == 0,
		      "vring base reply");
		CHECK(!vu_queue_ready(T.dev, q) && vu_queue_kick_fd(T.dev, q) < 0, "still running");
	}
	return true;
}

static bool case_enable_semantics(void)
{
	/* Without PROTOCOL_FEATURES a ring runs on its kick alone. */
	CHECK(t_open() && set_u64(VHOST_USER_SET_FEATURES, F(VIRTIO_F_VERSION_1)) == 0 &&
	      mem_table_ab() == 0 && ring_setup_ex(0, GPA_A + 0x1000, QSIZE, false), "setup");
	CHECK(vu_queue_ready(T.dev, 0), "not enabled on kick");
	t_close();
	/* With it, a kicked ring waits for SET_VRING_ENABLE 1. */
	CHECK(t_open() && set_u64(VHOST_USER_SET_FEATURES, F_RING) == 0 &&
	      mem_table_ab() == 0 && ring_setup_ex(0, GPA_A + 0x1000, QSIZE, false), "setup");
	CHECK(!vu_queue_ready(T.dev, 0), "ring runs before SET_VRING_ENABLE");
	CHECK(set_state(VHOST_USER_SET_VRING_ENABLE, 0, 1) == 0 && vu_queue_ready(T.dev, 0),
	      "enable");
	CHECK(set_state(VHOST_USER_SET_VRING_ENABLE, 0, 0) == 0 && !vu_queue_ready(T.dev, 0),
	      "disabled ring runs");
	CHECK(set_state(VHOST_USER_SET_VRING_ENABLE, 0, 2) > 0, "enable 2 accepted");
	return true;
}

static bool case_get_config(void)
{
	struct vhost_user_config_msg c = { 40, 8, 0, { 0 } }, rc;
	uint32_t sz = sizeof(rc);
	uint8_t w[2] = { 0xaa, 0xbb };

	CHECK(t_open(), "setup");
	CHECK(fe(VHOST_USER_GET_CONFIG, V, &c, 12 + 8, NULL, 0) == 0, "handle");
	CHECK(rep(VHOST_USER_GET_CONFIG, &rc, &sz) && sz == 12 && rc.size == 0 && rc.offset == 40,
	      "device error must be a reply of size 0");
	c = (struct vhost_user_config_msg){ 250, 8, 0, { 0 } };
	sz = sizeof(rc);
	CHECK(fe(VHOST_USER_GET_CONFIG, V, &c, 12 + 8, NULL, 0) == 0, "handle");
	CHECK(rep(VHOST_USER_GET_CONFIG, &rc, &sz) && sz == 12 && rc.size == 0, "out of bounds");
	c = (struct vhost_user_config_msg){ 4, 2, 0, { 0xaa, 0xbb } };
	CHECK(acked(VHOST_USER_SET_CONFIG, &c, 14, NULL, 0) == 0, "SET_CONFIG");
	CHECK(!memcmp(cfg + 4, w, 2), "SET_CONFIG not applied");
	c = (struct vhost_user_config_msg){ 4, 10, 0, { 0 } };
	CHECK(fe(VHOST_USER_GET_CONFIG, V, &c, 12 + 8, NULL, 0) == -EPROTO, "size mismatch");
	return true;
}

static bool case_reply_ack(void)
{
	uint64_t st;
	uint32_t sz = 8;

	CHECK(t_open(), "setup");
	CHECK(acked(VHOST_USER_SET_OWNER, NULL, 0, NULL, 0) == 0, "ack 0");
	CHECK(set_state(VHOST_USER_SET_VRING_NUM, 0, 3) > 0, "failure must be non-zero");
	CHECK(fe(VHOST_USER_SET_VRING_NUM, V, &(struct vhost_vring_state_msg){ 0, 3 }, 8, NULL, 0)
	      == 0 && no_reply(), "reply without NEED_REPLY");
	/* A request with its own reply gets exactly that one. */
	CHECK(fe(VHOST_USER_GET_QUEUE_NUM, V | NR, NULL, 0, NULL, 0) == 0, "handle");
	CHECK(rep(VHOST_USER_GET_QUEUE_NUM, &st, &sz) && st == 2 && no_reply(), "double reply");
	return true;
}

static bool case_mem_table(void)
{
	uint64_t len = 100;
	uint8_t buf[16];
	uint8_t *p;

	CHECK(t_open() && mem_table_ab() == 0, "setup");
	memcpy(gp(GPA_A + 0x100), "region A", 8);
	memcpy(gp(GPA_B + 0x100), "region B", 8);
	vu_lock(T.dev);
	p = vu_gpa_to_va(T.dev, GPA_A + 0x100, &len);
	CHECK(p && len == 100 && !memcmp(p, "region A", 8), "A");
	CHECK(vu_gpa_read(T.dev, GPA_B + 0x100, buf, 8) == 0 && !memcmp(buf, "region B", 8), "B");
	len = 100;
	CHECK(vu_gpa_to_va(T.dev, GPA_A + MB - 8, &len) && len == 8, "no clamp at region end");
	len = 1;
	CHECK(!vu_gpa_to_va(T.dev, GPA_A + MB, &len) && !vu_gpa_to_va(T.dev, 0, &len) &&
	      !vu_gpa_to_va(T.dev, GPA_A - 1, &len), "hole mapped");
	CHECK(vu_gpa_read(T.dev, GPA_A + MB - 8, buf, 16) == -EFAULT, "read into the hole");
	CHECK(vu_gpa_write(T.dev, GPA_B + MB - 4, buf, 8) == -EFAULT, "write past B");
	CHECK(vu_gpa_read(T.dev, UINT64_MAX - 3, buf, 8) == -EFAULT, "wrap");
	vu_unlock(T.dev);
	/* Replacing the table: the old mapping goes, the new one works. */
	{
		struct vhost_user_mem_region rg = region(GPA_B, MB, UVA_B, OFF_A);

		CHECK(mem_table(&rg, 1) == 0, "replace");
	}
	vu_lock(T.dev);
	CHECK(vu_gpa_read(T.dev, GPA_B + 0x100, buf, 8) == 0 && !memcmp(buf, "region A", 8),
	      "new table");
	CHECK(vu_gpa_read(T.dev, GPA_A + 0x100, buf, 8) == -EFAULT, "old table still there");
	vu_unlock(T.dev);
	return true;
}

static bool case_add_rem_mem_reg(void)
{
	uint8_t buf[16];

	CHECK(t_open() && mem_table_ab() == 0, "setup");
	memcpy(gp(GPA_C - 8), "BBBBBBBBCCCCCCCC", 16);
	CHECK(mem_reg(VHOST_USER_ADD_MEM_REG, region(GPA_C, MB, UVA_C, OFF_C), T.memfd) == 0,
	      "ADD_MEM_REG");
	vu_lock(T.dev);
	CHECK(vu_gpa_read(T.dev, GPA_C - 8, buf, 16) == 0 && !memcmp(buf, "BBBBBBBBCCCCCCCC", 16),
	      "read across B and C");
	vu_unlock(T.dev);
	CHECK(mem_reg(VHOST_USER_ADD_MEM_REG, region(GPA_C + 0x1000, MB, UVA_C, OFF_A), T.memfd)
	      > 0, "overlap accepted");
	CHECK(pipe_make(), "pipe");
	CHECK(mem_reg(VHOST_USER_REM_MEM_REG, region(GPA_C, MB, UVA_C, OFF_C), pipe_wr) == 0,
	      "REM_MEM_REG");
	CHECK(pipe_closed_by_vu(), "REM_MEM_REG fd kept");
	vu_lock(T.dev);
	CHECK(vu_gpa_read(T.dev, GPA_C - 8, buf, 16) == -EFAULT, "C still mapped");
	vu_unlock(T.dev);
	CHECK(mem_reg(VHOST_USER_REM_MEM_REG, region(GPA_C, MB, UVA_C, OFF_C), -1) > 0,
	      "removing an unknown region");
	CHECK(mem_reg(VHOST_USER_ADD_MEM_REG, region(GPA_C, MB, UVA_C, OFF_C), -1) == -EPROTO,
	      "ADD_MEM_REG without fd");
	return true;
}

/* ---- DMABUF over guest memory -------------------------------------------- */

#define PG 4096u		/* also the view cases below */

/* Guest memory in a memfd that allows sealing, with seals added, in place
 * of t_open's unsealable one. */
static bool use_sealed_memfd(unsigned seals)
{
	int fd = memfd_create("guest", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || ftruncate(fd, MEM_SIZE) || (seals && fcntl(fd, F_ADD_SEALS, seals))) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	munmap(T.mem, MEM_SIZE);
	close(T.memfd);
	T.memfd = fd;
	T.mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, T.memfd, 0);
	return T.mem != MAP_FAILED;
}

/* A, B by SET_MEM_TABLE and C (right after B) by ADD_MEM_REG, sealed. */
static bool dmabuf_setup(void)
{
	return t_open() && use_sealed_memfd(F_SEAL_SHRINK) && mem_table_ab() == 0 &&
	       mem_reg(VHOST_USER_ADD_MEM_REG, region(GPA_C, MB, UVA_C, OFF_C), T.memfd) == 0;
}

static int items(const struct vu_seg *segs, unsigned n, struct udmabuf_create_item *it,
		 unsigned max, const char **reason)
{
	int r;

	vu_lock(T.dev);
	r = vu_dmabuf_items(T.dev, segs, n, it, max, reason);
	vu_unlock(T.dev);
	return r;
}

/* The item names T.memfd's file at [off, off + size). */
static bool item_is(const struct udmabuf_create_item *it, uint64_t off, uint64_t size)
{
	struct stat a, b;

	return fstat((int)it->memfd, &a) == 0 && fstat(T.memfd, &b) == 0 &&
	       a.st_ino == b.st_ino && a.st_dev == b.st_dev && it->offset == off &&
	       it->size == size && !it->__pad;
}

static int count_fds(void)
{
	char path[64];
	int n = 0;

	for (int fd = 0; fd < 1024; fd++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n += access(path, F_OK) == 0;
	}
	return n;
}

/* Without CONFIG_VUV_DMABUF (the default build) both refuse, cleanly. The
 * cases below run in full in build/dma (configs/dmabuf_defconfig). */
static bool dmabuf_not_built(void)
{
	const struct vu_seg seg = { GPA_A, PG };
	struct udmabuf_create_item it[1];
	const char *reason;
	int r;

	CHECK(dmabuf_setup(), "setup");
	CHECK(items(&seg, 1, it, 1, &reason) == -EOPNOTSUPP && strstr(reason, "not built"),
	      "items: '%s'", reason ? reason : "");
	vu_lock(T.dev);
	r = vu_dmabuf_create(T.dev, &seg, 1, &reason);
	vu_unlock(T.dev);
	CHECK(r == -EOPNOTSUPP, "create: %d", r);
	return true;
}

static bool case_dmabuf_items_scattered(void)
{
	/* Out of order, adjacent, within one region, across B and C. */
	const struct vu_seg segs[] = {
		{ GPA_A + 3 * PG, 2 * PG }, { GPA_A + 5 * PG, PG },	/* merge: A 3..6 */
		{ GPA_B + 16 * PG, PG },				/* B */
		{ GPA_A + PG, PG },					/* back to A */
		{ GPA_C - PG, 3 * PG },					/* B's last, C's first two */
		{ GPA_C + 2 * PG, PG },					/* merges with C */
	};
	struct udmabuf_create_item it[8];
	const char *reason;
	int n;

	if (!CONFIG_VUV_DMABUF)
		return dmabuf_not_built();

	CHECK(dmabuf_setup(), "setup");
	n = items(segs, 6, it, 8, &reason);
	CHECK(n == 5, "%d items (%s)", n, reason ? reason : "");
	CHECK(item_is(&it[0], OFF_A + 3 * PG, 3 * PG), "A 3..6: %llu+%llu",
	      (unsigned long long)it[0].offset, (unsigned long long)it[0].size);
	CHECK(item_is(&it[1], OFF_B + 16 * PG, PG), "B");
	CHECK(item_is(&it[2], OFF_A + PG, PG), "A 1");
	CHECK(item_is(&it[3], OFF_B + MB - PG, PG), "B's last page");
	CHECK(item_is(&it[4], OFF_C, 3 * PG), "C's first pages");
	CHECK(it[3].memfd != it[4].memfd, "B and C are separate regions with their own fds");
	CHECK(items(segs, 6, it, 4, &reason) == -E2BIG && reason, "5 items in 4");
	CHECK(items(segs, 0, it, 8, &reason) == -EINVAL, "no entries");
	return true;
}

static bool case_dmabuf_items_refused(void)
{
	struct udmabuf_create_item it[4];
	const char *reason;
	struct {
		struct vu_seg seg;
		int err;
		const char *reason;
	} bad[] = {
		{ { GPA_A + 0x100, PG }, -EINVAL, "page-aligned" },
		{ { GPA_A, 0 }, -EINVAL, "empty" },
		{ { GPA_A + MB, PG }, -EFAULT, "outside" },		/* the hole after A */
		{ { GPA_A + MB - PG, 2 * PG }, -EFAULT, "outside" },	/* runs into it */
		{ { GPA_A - PG, PG }, -EFAULT, "outside" },
		{ { GPA_C + MB - PG, 2 * PG }, -EFAULT, "outside" },	/* past C */
		{ { 0xfffffffffffff000ull, 2 * PG }, -EFAULT, "outside" },	/* wraps */
	};

	if (!CONFIG_VUV_DMABUF)
		return dmabuf_not_built();

	CHECK(dmabuf_setup(), "setup");
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = items(&bad[i].seg, 1, it, 4, &reason);

		CHECK(r == bad[i].err && reason && strstr(reason, bad[i].reason),
		      "entry %u: %d '%s'", i, r, reason ? reason : "");
	}
	/* Only the last entry may end inside a page: it is rounded up, if the
	 * rest of the page is guest memory. */
	{
		const struct vu_seg mid[] = { { GPA_A, PG + 0x800 }, { GPA_A + 4 * PG, PG } };
		const struct vu_seg last[] = { { GPA_A + 4 * PG, PG }, { GPA_A, PG + 0x800 } };
		const struct vu_seg edge = { GPA_C + MB - PG, 0x800 };
		const struct vu_seg past = { GPA_A + MB - PG, PG + 0x10 };

		CHECK(items(mid, 2, it, 4, &reason) == -EINVAL, "unaligned middle entry");
		CHECK(items(last, 2, it, 4, &reason) == 2 && item_is(&it[1], OFF_A, 2 * PG),
		      "unaligned last entry: '%s'", reason ? reason : "");
		CHECK(items(&edge, 1, it, 4, &reason) == 1 && item_is(&it[0], OFF_C + MB - PG, PG),
		      "last page of guest memory");
		CHECK(items(&past, 1, it, 4, &reason) == -EFAULT, "rounded up into the hole");
	}
	/* A region that starts mid-page in its file cannot be handed over. */
	{
		struct vhost_user_mem_region rg = region(GPA_A, MB - PG, UVA_A, OFF_A + 0x800);
		const struct vu_seg seg = { GPA_A, PG };

		CHECK(mem_table(&rg, 1) == 0, "SET_MEM_TABLE");
		CHECK(items(&seg, 1, it, 4, &reason) == -EINVAL && strstr(reason, "region"),
		      "unaligned region: '%s'", reason ? reason : "");
	}
	return true;
}

static bool case_dmabuf_seals(void)
{
	struct udmabuf_create_item it[2];
	const struct vu_seg seg = { GPA_A, PG };
	const char *reason;
	int efd, fd;

	if (!CONFIG_VUV_DMABUF)
		return dmabuf_not_built();

	/* t_open's memfd cannot be sealed at all (QEMU memory-backend-file
	 * on /dev/shm looks the same: a tmpfs file with F_SEAL_SEAL). */
	CHECK(t_open() && mem_table_ab() == 0, "setup");
	CHECK(items(&seg, 1, it, 2, &reason) == -EPERM && strstr(reason, "F_SEAL_SHRINK"),
	      "unsealable: '%s'", reason ? reason : "");
	vu_lock(T.dev);
	CHECK(vu_dmabuf_create(T.dev, &seg, 1, &reason) == -EPERM, "create over an unsealed memfd");
	vu_unlock(T.dev);
	/* Sealable, not sealed (memory-backend-memfd,seal=off). */
	CHECK(use_sealed_memfd(0) && mem_table_ab() == 0, "sealable");
	CHECK(items(&seg, 1, it, 2, &reason) == -EPERM && strstr(reason, "F_SEAL_SHRINK"),
	      "not sealed: '%s'", reason ? reason : "");
	/* Growing is fine; shrinking is what udmabuf forbids. */
	CHECK(use_sealed_memfd(F_SEAL_SHRINK | F_SEAL_GROW) && mem_table_ab() == 0, "sealed");
	CHECK(items(&seg, 1, it, 2, &reason) == 1 && !reason, "sealed: '%s'", reason ? reason : "");
	/* Write seals: the daemon could not even map such a region. */
	fd = memfd_create("ro", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	CHECK(fd >= 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_WRITE) == 0, "memfd");
	reason = vu_memfd_unfit(fd);
	close(fd);
	CHECK(reason && strstr(reason, "against writes"), "F_SEAL_WRITE: '%s'", reason ? reason : "");
	efd = eventfd(0, EFD_CLOEXEC);
	reason = vu_memfd_unfit(efd);
	close(efd);
	CHECK(reason && strstr(reason, "not a memfd"), "eventfd: '%s'", reason ? reason : "");
	CHECK(vu_memfd_unfit(-1), "no fd");
	return true;
}

/* On a host without udmabuf, creation fails cleanly (the caller falls back);
 * with it (the VM suite's newer kernel), the dmabuf shows the guest's pages
 * in entry order. */
static bool case_dmabuf_create(void)
{
	const struct vu_seg segs[] = { { GPA_B + 4 * PG, PG }, { GPA_A + 2 * PG, 2 * PG },
				       { GPA_C - PG, 2 * PG } };
	const char *reason = NULL;
	int base, fd;

	if (!CONFIG_VUV_DMABUF)
		return dmabuf_not_built();

	base = count_fds();
	CHECK(dmabuf_setup(), "setup");
	memset(gp(GPA_B + 4 * PG), 'b', PG);
	memset(gp(GPA_A + 2 * PG), 'a', 2 * PG);
	memset(gp(GPA_C - PG), 'B', PG);
	memset(gp(GPA_C), 'c', PG);
	vu_lock(T.dev);
	fd = vu_dmabuf_create(T.dev, segs, 3, &reason);
	vu_unlock(T.dev);
	if (access("/dev/udmabuf", F_OK) && errno == ENOENT) {
		CHECK(fd == -ENOENT && reason && strstr(reason, "/dev/udmabuf"), "%d '%s'", fd,
		      reason ? reason : "");
	} else {
		uint8_t *p;

		CHECK(fd >= 0, "UDMABUF_CREATE_LIST: %s (%s)", strerror(-fd), reason ? reason : "");
		CHECK(fcntl(fd, F_GETFD) == FD_CLOEXEC, "dmabuf without O_CLOEXEC");
		p = mmap(NULL, 5 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		CHECK(p != MAP_FAILED, "mmap dmabuf: %s", strerror(errno));
		CHECK(p[0] == 'b' && p[PG - 1] == 'b' && p[PG] == 'a' && p[3 * PG - 1] == 'a' &&
		      p[3 * PG] == 'B' && p[4 * PG] == 'c' && p[5 * PG - 1] == 'c',
		      "dmabuf content");
		/* Both ways: the device's writes land in guest memory. */
		memcpy(p + PG, "from the codec", 14);
		munmap(p, 5 * PG);
		CHECK(!memcmp(gp(GPA_A + 2 * PG), "from the codec", 14), "write-through");
		close(fd);
	}
	t_close();
	/* /dev/udmabuf stays open once opened: one fd at most. */
	CHECK(count_fds() - base <= 1, "fds %d before, %d after", base, count_fds());
	return true;
}

/* Every region's kept file goes with its region. */
static bool case_dmabuf_no_fd_leak(void)
{
	int base = count_fds(), open_now;

	CHECK(dmabuf_setup(), "setup");
	open_now = count_fds();
	CHECK(mem_reg(VHOST_USER_REM_MEM_REG, region(GPA_C, MB, UVA_C, OFF_C), -1) >= 0 &&
	      count_fds() == open_now - CONFIG_VUV_ZERO_COPY, "REM_MEM_REG");
	CHECK(mem_table_ab() == 0 && count_fds() == open_now - CONFIG_VUV_ZERO_COPY,
	      "SET_MEM_TABLE again");
	vu_disconnect(T.dev);
	t_close();
	CHECK(count_fds() == base, "fds %d before, %d after", base, count_fds());
	return true;
}

/* ---- malicious messages -------------------------------------------------- */

static bool case_msg_hangup(void)
{
	CHECK(t_open(), "setup");
	shutdown(T.sock, SHUT_WR);
	CHECK(vu_handle_msg(T.dev) == -EPIPE, "hang-up");
	return true;
}

static bool case_msg_short_header(void)
{
	CHECK(t_open(), "setup");
	CHECK(fe_raw("\x01\0\0\0\x01\0", 6, NULL, 0) == 0, "send");
	shutdown(T.sock, SHUT_WR);
	CHECK(vu_handle_msg(T.dev) == -EPROTO && vu_broken(T.dev), "short header");
	vu_disconnect(T.dev);
	CHECK(!vu_broken(T.dev), "still broken after the disconnect");
	return true;
}

static bool case_msg_hangup_mid_payload(void)
{
	struct vhost_user_hdr h = { VHOST_USER_SET_FEATURES, V, 8 };
	uint8_t b[16] = { 0 };

	CHECK(t_open(), "setup");
	memcpy(b, &h, 12);
	CHECK(fe_raw(b, 16, NULL, 0) == 0, "send");
	shutdown(T.sock, SHUT_WR);
	CHECK(vu_handle_msg(T.dev) == -EPROTO, "half a payload");
	return true;
}

static bool case_msg_split_delivery(void)
{
	struct vhost_user_hdr h = { VHOST_USER_GET_QUEUE_NUM, V, 0 };
	uint64_t v;
	uint32_t sz = 8;

	/* A stream has no boundaries: a header in two pieces is fine. */
	CHECK(t_open(), "setup");
	CHECK(fe_raw(&h, 5, NULL, 0) == 0 && fe_raw((uint8_t *)&h + 5, 7, NULL, 0) == 0, "send");
	CHECK(vu_handle_msg(T.dev) == 0 && rep(VHOST_USER_GET_QUEUE_NUM, &v, &sz) && v == 2,
	      "split header");
	return true;
}

static bool case_msg_bad_size(void)
{
	uint64_t v = 0;
	struct vhost_user_hdr h = { VHOST_USER_SET_FEATURES, V, 100000 };

	CHECK(t_open(), "setup");
	CHECK(fe(VHOST_USER_GET_FEATURES, V, &v, 8, NULL, 0) == -EPROTO, "GET_FEATURES size 8");
	t_close();
	CHECK(t_open(), "setup");
	CHECK(fe(VHOST_USER_SET_FEATURES, V, &v, 4, NULL, 0) == -EPROTO, "SET_FEATURES size 4");
	t_close();
	CHECK(t_open(), "setup");
	CHECK(fe(VHOST_USER_SET_VRING_ADDR, V, &v, 8, NULL, 0) == -EPROTO, "ADDR size 8");
	t_close();
	CHECK(t_open(), "setup");
	CHECK(fe_raw(&h, 12, NULL, 0) == 0 && vu_handle_msg(T.dev) == -EPROTO, "size 100000");
	return true;
}

static bool case_msg_bad_version(void)
{
	CHECK(t_open(), "setup");
	CHECK(fe(VHOST_USER_GET_FEATURES, 0, NULL, 0, NULL, 0) == -EPROTO, "version 0");
	t_close();
	CHECK(t_open(), "setup");
	CHECK(fe(VHOST_USER_GET_FEATURES, 2 | NR, NULL, 0, NULL, 0) == -EPROTO, "version 2");
	return true;
}

static bool case_fds_surplus_closed(void)
{
	CHECK(t_open() && pipe_make(), "setup");
	CHECK(fe(VHOST_USER_SET_OWNER, V, NULL, 0, &pipe_wr, 1) == 0, "SET_OWNER with an fd");
	CHECK(pipe_closed_by_vu(), "surplus fd kept");
	CHECK(still_works(), "dead after");
	return true;
}

static bool case_fds_wrong_count(void)
{
	uint64_t v = 0;
	int two[2];

	CHECK(t_open() && pipe_make(), "setup");
	two[0] = two[1] = pipe_wr;
	CHECK(fe(VHOST_USER_SET_VRING_KICK, V, &v, 8, two, 2) == -EPROTO, "KICK with 2 fds");
	CHECK(pipe_closed_by_vu(), "fds kept");
	t_close();
	CHECK(t_open() && pipe_make(), "setup");
	v = VHOST_USER_VRING_NOFD_MASK;
	CHECK(fe(VHOST_USER_SET_VRING_CALL, V, &v, 8, &pipe_wr, 1) == -EPROTO, "NOFD with an fd");
	CHECK(pipe_closed_by_vu(), "fd kept");
	t_close();
	CHECK(t_open(), "setup");
	v = 0;
	CHECK(fe(VHOST_USER_SET_VRING_KICK, V, &v, 8, NULL, 0) == -EPROTO, "KICK without fd");
	t_close();
	CHECK(t_open() && pipe_make(), "setup");
	{
		struct vhost_user_mem_table t = { .nregions = 2 };

		t.regions[0] = region(GPA_A, MB, UVA_A, 0);
		t.regions[1] = region(GPA_B, MB, UVA_B, MB);
		CHECK(fe(VHOST_USER_SET_MEM_TABLE, V, &t, 8 + 64, &pipe_wr, 1) == -EPROTO,
		      "2 regions, 1 fd");
	}
	CHECK(pipe_closed_by_vu(), "fd kept");
	return true;
}

static bool case_fds_too_many(void)
{
	int nine[9];

	CHECK(t_open() && pipe_make(), "setup");
	for (int i = 0; i < 9; i++)
		nine[i] = pipe_wr;
	CHECK(fe(VHOST_USER_SET_OWNER, V, NULL, 0, nine, 9) == -EPROTO, "9 fds");
	CHECK(pipe_closed_by_vu(), "fds kept");
	return true;
}

static bool case_mem_table_count(void)
{
	struct vhost_user_mem_table t = { .nregions = 0 };
	uint8_t big[8 + 9 * 32] = { 9 };
	int fds[9];

	for (int i = 0; i < 9; i++)
		fds[i] = 0;
	CHECK(t_open(), "setup");
	CHECK(fe(VHOST_USER_SET_MEM_TABLE, V, &t, 8, NULL, 0) == -EPROTO, "0 regions");
	t_close();
	CHECK(t_open(), "setup");
	t.nregions = 9;
	CHECK(fe(VHOST_USER_SET_MEM_TABLE, V, &t, sizeof(t), fds, 8) == -EPROTO, "9 regions");
	t_close();
	CHECK(t_open(), "setup");
	CHECK(fe(VHOST_USER_SET_MEM_TABLE, V, big, sizeof(big), fds, 8) == -EPROTO, "9 (size)");
	t_close();
	CHECK(t_open(), "setup");
	t.nregions = 1;
	t.regions[0] = region(GPA_A, MB, UVA_A, 0);
	CHECK(fe(VHOST_USER_SET_MEM_TABLE, V, &t, sizeof(t), &T.memfd, 1) == -EPROTO,
	      "1 region in a full-size table");
	return true;
}

static bool case_mem_table_bad_regions(void)
{
	struct vhost_user_mem_region ov[2] = { region(GPA_A, MB, UVA_A, 0),
					       region(GPA_A + MB / 2, MB, UVA_B, MB) };
	struct vhost_user_mem_region wrap = region(UINT64_MAX - MB + 2, MB, UVA_A, 0);
	struct vhost_user_mem_region uwrap = region(GPA_A, MB, UINT64_MAX - 16, 0);
	struct vhost_user_mem_region owrap = region(GPA_A, MB, UVA_A, UINT64_MAX - 16);
	struct vhost_user_mem_region small = region(GPA_A, MB, UVA_A, 3 * MB + MB / 2);
	struct vhost_user_mem_region empty = region(GPA_A, 0, UVA_A, 0);
	uint8_t b[8];

	CHECK(t_open(), "setup");
	CHECK(mem_table(ov, 2) > 0, "overlap accepted");
	CHECK(mem_table(&wrap, 1) > 0, "gpa wrap accepted");
	CHECK(mem_table(&uwrap, 1) > 0, "uva wrap accepted");
	CHECK(mem_table(&owrap, 1) > 0, "offset wrap accepted");
	CHECK(mem_table(&small, 1) > 0, "region beyond the end of its file accepted");
	CHECK(mem_table(&empty, 1) > 0, "empty region accepted");
	CHECK(mem_table_ab() == 0, "good table refused after bad ones");
	vu_lock(T.dev);
	CHECK(vu_gpa_read(T.dev, GPA_B, b, 8) == 0, "good table not mapped");
	vu_unlock(T.dev);
	return true;
}

static bool case_ring_bad_num(void)
{
	CHECK(t_open(), "setup");
	CHECK(set_state(VHOST_USER_SET_VRING_NUM, 0, 0) > 0, "0");
	CHECK(set_state(VHOST_USER_SET_VRING_NUM, 0, 3) > 0, "3");
	CHECK(set_state(VHOST_USER_SET_VRING_NUM, 0, 65536) > 0, "65536");
	CHECK(set_state(VHOST_USER_SET_VRING_NUM, 0, 32768) == 0, "32768 refused");
	CHECK(set_state(VHOST_USER_SET_VRING_BASE, 0, 70000) > 0, "base 70000");
	return true;
}

static bool case_ring_bad_addr(void)
{
	uint64_t base = GPA_A + 0x1000;
	int k = eventfd(0, EFD_CLOEXEC);

	CHECK(t_open() && mem_table_ab() == 0, "setup");
	CHECK(set_state(VHOST_USER_SET_VRING_NUM, 0, QSIZE) == 0, "num");
	CHECK(vring_addr(0, 0x1000, uva(base + 0x1000), uva(base + 0x2000)) > 0, "desc unmapped");
	CHECK(vring_addr(0, uva(base) + 8, uva(base + 0x1000), uva(base + 0x2000)) > 0,
	      "desc misaligned");
	CHECK(vring_addr(0, uva(base), UVA_A + MB - 8, uva(base + 0x2000)) > 0,
	      "avail across the region end");
	CHECK(vring_addr(0, uva(base), uva(base + 0x1000), GPA_A + 0x3000) > 0,
	      "used given as a guest-physical address");
	CHECK(set_vring_fd(VHOST_USER_SET_VRING_KICK, 0, k) > 0, "started without a ring");
	close(k);
	CHECK(!vu_queue_ready(T.dev, 0), "ready without a ring");
	/* A ring that no longer fits its region after a resize. */
	CHECK(vring_addr(0, UVA_A + MB - 0x1000, uva(base + 0x1000), uva(base + 0x2000)) == 0,
	      "good addr");
	CHECK(set_state(VHOST_USER_SET_VRING_NUM, 0, 32768) == 0, "num");
	k = eventfd(0, EFD_CLOEXEC);
	CHECK(set_vring_fd(VHOST_USER_SET_VRING_KICK, 0, k) > 0, "ring past its region started");
	close(k);
	return true;
}

static bool case_ring_bad_index(void)
{
	struct vhost_vring_state_msg st;
	uint32_t sz = 8;

	CHECK(t_open() && pipe_make(), "setup");
	CHECK(set_state(VHOST_USER_SET_VRING_NUM, 5, 16) > 0, "NUM index 5");
	CHECK(set_state(VHOST_USER_SET_VRING_ENABLE, 2, 1) > 0, "ENABLE index 2");
	CHECK(set_vring_fd(VHOST_USER_SET_VRING_KICK, 9, pipe_wr) > 0, "KICK index 9");
	CHECK(pipe_closed_by_vu(), "fd of a refused KICK kept");
	CHECK(vring_addr(200, UVA_A, UVA_A, UVA_A) > 0, "ADDR index 200");
	CHECK(fe(VHOST_USER_GET_VRING_BASE, V, &(struct vhost_vring_state_msg){ 7, 0 }, 8, NULL,
		 0) == 0 && rep(VHOST_USER_GET_VRING_BASE, &st, &sz) && st.index == 7,
	      "GET_VRING_BASE index 7 must still be answered");
	CHECK(still_works(), "dead after");
	return true;
}

static bool case_unknown_request(void)
{
	uint64_t st, log[2] = { 0, 0 };
	uint32_t sz = 8;

	CHECK(t_open(), "setup");
	CHECK(fe(999, V | NR, NULL, 0, NULL, 0) == 0, "999 dropped the connection");
	CHECK(rep(999, &st, &sz) && st != 0, "999 needs a failure reply");
	CHECK(pipe_make(), "pipe");
	CHECK(acked(VHOST_USER_SET_LOG_BASE, log, 16, &pipe_wr, 1) > 0, "SET_LOG_BASE");
	CHECK(pipe_closed_by_vu(), "SET_LOG_BASE fd kept");
	CHECK(pipe_make(), "pipe");
	CHECK(fe(VHOST_USER_SET_BACKEND_REQ_FD, V, NULL, 0, &pipe_wr, 1) == 0 && no_reply(),
	      "SET_BACKEND_REQ_FD");
	CHECK(pipe_closed_by_vu(), "SET_BACKEND_REQ_FD fd kept");
	CHECK(fe(VHOST_USER_IOTLB_MSG, V, log, 16, NULL, 0) == 0 && no_reply(), "IOTLB");
	CHECK(acked(VHOST_USER_SET_STATUS, &(uint64_t){ 15 }, 8, NULL, 0) == 0, "SET_STATUS");
	CHECK(get_u64(VHOST_USER_GET_STATUS) == 15, "GET_STATUS");
	CHECK(still_works(), "dead after");
	return true;
}

/* ---- rings --------------------------------------------------------------- */

#define DATA_A (GPA_A + 0x10000)
#define DATA_B (GPA_B + 0x10000)
#define TABLE (GPA_A + 0x8000)

/* head 0: "hello " in A, "world" in B, then 8 writable bytes in A and 8 in B. */
static void good_chain(struct ring *r, unsigned first)
{
	memcpy(gp(DATA_A), "hello ", 6);
	memcpy(gp(DATA_B), "world", 5);
	desc(r->desc, first, DATA_A, 6, VRING_DESC_F_NEXT, first + 1);
	desc(r->desc, first + 1, DATA_B, 5, VRING_DESC_F_NEXT, first + 2);
	desc(r->desc, first + 2, DATA_A + 0x100, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
	     first + 3);
	desc(r->desc, first + 3, DATA_B + 0x100, 8, VRING_DESC_F_WRITE, 0);
	post(r, first);
}

static bool good_chain_works(unsigned q, unsigned first)
{
	struct vu_chain c;
	uint16_t u = used_idx(q);

	good_chain(&T.r[q], first);
	CHECK(pop(q, &c) == 0, "good chain after a bad one not popped");
	CHECK(c.req_len == 11 && !memcmp(c.req, "hello world", 11), "request bytes");
	CHECK(respond(&c, "0123456789AB", 12) == 0, "respond");
	CHECK(used_idx(q) == (uint16_t)(u + 1), "used idx");
	return true;
}

/* A malformed chain: -EINVAL, returned with length 0, the ring carries on. */
static bool bad_chain(uint16_t head, const char *what)
{
	struct ring *r = &T.r[0];
	struct vu_chain c;
	uint16_t u = used_idx(0);
	struct vring_used_elem e;

	post(r, head);
	CHECK(pop(0, &c) == -EINVAL, "%s: not refused", what);
	e = r->used->ring[u % r->num];
	CHECK(used_idx(0) == (uint16_t)(u + 1) && e.id == head && e.len == 0,
	      "%s: not returned unused", what);
	CHECK(!vu_broken(T.dev), "%s: broke the device", what);
	return good_chain_works(0, 8);
}

static bool case_ring_good_chain(void)
{
	struct vu_chain c;
	struct ring *r = &T.r[0];

	CHECK(setup(F_RING | F_DEV), "setup");
	CHECK(pop(0, &c) == -EAGAIN, "empty ring popped");
	good_chain(r, 0);
	CHECK(pop(0, &c) == 0, "pop");
	CHECK(c.queue == 0 && c.head == 0 && c.gen == vu_generation(T.dev), "chain ids");
	CHECK(c.req_len == 11 && !memcmp(c.req, "hello world", 11), "request bytes");
	CHECK(c.n_wr == 2 && c.wr_len == 16 && c.wr[0].gpa == DATA_A + 0x100, "writable pieces");
	CHECK(respond(&c, "0123456789AB", 12) == 0 && !c.req, "respond");
	CHECK(!memcmp(gp(DATA_A + 0x100), "01234567", 8) && !memcmp(gp(DATA_B + 0x100), "89AB", 4),
	      "response scattered wrongly");
	CHECK(used_idx(0) == 1 && r->used->ring[0].id == 0 && r->used->ring[0].len == 12,
	      "used element");
	CHECK(avail_event(r) == 1, "avail_event not advanced");
	/* queue 1 lives in region B */
	return good_chain_works(1, 0);
}

static bool case_ring_indirect(void)
{
	struct vring_desc *t;
	struct vu_chain c;

	CHECK(setup(F_RING), "setup");
	t = (void *)gp(TABLE);
	memcpy(gp(DATA_A), "indirect", 8);
	desc(t, 0, DATA_A, 8, VRING_DESC_F_NEXT, 2);
	desc(t, 2, DATA_B, 4, VRING_DESC_F_WRITE, 0);
	desc(T.r[0].desc, 3, TABLE, 3 * 16, VRING_DESC_F_INDIRECT, 0);
	post(&T.r[0], 3);
	CHECK(pop(0, &c) == 0 && c.head == 3, "pop");
	CHECK(c.req_len == 8 && !memcmp(c.req, "indirect", 8) && c.n_wr == 1 && c.wr_len == 4,
	      "contents");
	CHECK(respond(&c, "ok", 2) == 0 && !memcmp(gp(DATA_B), "ok", 2), "respond");
	return true;
}

static bool case_ring_loop(void)
{
	CHECK(setup(F_RING), "setup");
	desc(T.r[0].desc, 0, DATA_A, 4, VRING_DESC_F_NEXT, 1);
	desc(T.r[0].desc, 1, DATA_A, 4, VRING_DESC_F_NEXT, 0);
	return bad_chain(0, "loop");
}

static bool case_ring_indirect_loop(void)
{
	struct vring_desc *t;

	CHECK(setup(F_RING), "setup");
	t = (void *)gp(TABLE);
	desc(t, 0, DATA_A, 4, VRING_DESC_F_NEXT, 1);
	desc(t, 1, DATA_A, 4, VRING_DESC_F_NEXT, 0);
	desc(T.r[0].desc, 0, TABLE, 32, VRING_DESC_F_INDIRECT, 0);
	return bad_chain(0, "indirect loop");
}

static bool case_ring_head_out_of_range(void)
{
	struct vu_chain c;

	CHECK(setup(F_RING), "setup");
	post(&T.r[0], QSIZE);
	CHECK(pop(0, &c) == -EIO && vu_broken(T.dev), "head %u accepted", QSIZE);
	CHECK(pop(0, &c) == -EIO, "broken device pops");
	return true;
}

static bool case_ring_next_out_of_range(void)
{
	CHECK(setup(F_RING), "setup");
	desc(T.r[0].desc, 0, DATA_A, 4, VRING_DESC_F_NEXT, QSIZE);
	return bad_chain(0, "next");
}

static bool case_ring_nested_indirect(void)
{
	struct vring_desc *t;

	CHECK(setup(F_RING), "setup");
	t = (void *)gp(TABLE);
	desc(t, 0, TABLE + 0x100, 16, VRING_DESC_F_INDIRECT, 0);
	desc(T.r[0].desc, 0, TABLE, 16, VRING_DESC_F_INDIRECT, 0);
	return bad_chain(0, "nested");
}

static bool case_ring_indirect_len(void)
{
	CHECK(setup(F_RING), "setup");
	desc(T.r[0].desc, 0, TABLE, 24, VRING_DESC_F_INDIRECT, 0);
	if (!bad_chain(0, "len 24"))
		return false;
	desc(T.r[0].desc, 0, TABLE, 0, VRING_DESC_F_INDIRECT, 0);
	if (!bad_chain(0, "len 0"))
		return false;
	desc(T.r[0].desc, 0, TABLE, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1);
	desc(T.r[0].desc, 1, DATA_A, 4, 0, 0);
	if (!bad_chain(0, "INDIRECT|NEXT"))
		return false;
	desc(T.r[0].desc, 0, GPA_A + MB - 16, 32, VRING_DESC_F_INDIRECT, 0);
	((struct vring_desc *)gp(GPA_A + MB - 16))[0] =
		(struct vring_desc){ DATA_A, 4, VRING_DESC_F_NEXT, 1 };
	return bad_chain(0, "table past the region end");
}

static bool case_ring_indirect_without_feature(void)
{
	struct vring_desc *t;

	CHECK(setup(F_RING & ~F(VIRTIO_RING_F_INDIRECT_DESC)), "setup");
	t = (void *)gp(TABLE);
	desc(t, 0, DATA_A, 4, 0, 0);
	desc(T.r[0].desc, 0, TABLE, 16, VRING_DESC_F_INDIRECT, 0);
	return bad_chain(0, "indirect without the feature");
}

static bool case_ring_read_after_write(void)
{
	CHECK(setup(F_RING), "setup");
	desc(T.r[0].desc, 0, DATA_A, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	desc(T.r[0].desc, 1, DATA_A + 8, 4, 0, 0);
	return bad_chain(0, "readable after writable");
}

static bool case_ring_addr_outside(void)
{
	CHECK(setup(F_RING), "setup");
	desc(T.r[0].desc, 0, GPA_A + MB, 4, 0, 0);
	if (!bad_chain(0, "readable in the hole"))
		return false;
	desc(T.r[0].desc, 0, GPA_A + MB - 2, 4, VRING_DESC_F_WRITE, 0);
	if (!bad_chain(0, "writable across A's end"))
		return false;
	desc(T.r[0].desc, 0, 0, 4, 0, 0);
	return bad_chain(0, "address 0");
}

static bool case_ring_addr_wrap(void)
{
	CHECK(setup(F_RING), "setup");
	desc(T.r[0].desc, 0, UINT64_MAX - 0xf, 0x20, 0, 0);
	if (!bad_chain(0, "readable wraps"))
		return false;
	desc(T.r[0].desc, 0, UINT64_MAX - 0xf, 0x20, VRING_DESC_F_WRITE, 0);
	if (!bad_chain(0, "writable wraps"))
		return false;
	desc(T.r[0].desc, 0, UINT64_MAX - 0xf, 0x20, VRING_DESC_F_INDIRECT, 0);
	return bad_chain(0, "table wraps");
}

static bool case_ring_split_regions(void)
{
	struct vu_chain c;

	CHECK(setup(F_RING), "setup");
	CHECK(mem_reg(VHOST_USER_ADD_MEM_REG, region(GPA_C, MB, UVA_C, OFF_C), T.memfd) == 0,
	      "ADD_MEM_REG");
	memcpy(gp(GPA_C - 6), "split!", 6);
	memcpy(gp(GPA_C), "across", 6);
	desc(T.r[0].desc, 0, GPA_C - 6, 12, VRING_DESC_F_NEXT, 1);
	desc(T.r[0].desc, 1, GPA_C - 4, 8, VRING_DESC_F_WRITE, 0);
	post(&T.r[0], 0);
	CHECK(pop(0, &c) == 0, "pop");
	CHECK(c.req_len == 12 && !memcmp(c.req, "split!across", 12), "readable across B/C");
	CHECK(respond(&c, "WXYZwxyz", 8) == 0 && !memcmp(gp(GPA_C - 4), "WXYZwxyz", 8),
	      "writable across B/C");
	return true;
}

static bool case_ring_avail_jump(void)
{
	struct vu_chain c;

	CHECK(setup(F_RING), "setup");
	__atomic_store_n(&T.r[0].avail->idx, QSIZE + 1, __ATOMIC_RELEASE);
	CHECK(pop(0, &c) == -EIO, "jump accepted");
	CHECK(vu_broken(T.dev), "not broken");
	vu_lock(T.dev);
	CHECK(vu_gpa_read(T.dev, DATA_A, &c, 1) == -EFAULT, "broken device touches memory");
	vu_unlock(T.dev);
	return true;
}

static bool case_ring_too_many_writable(void)
{
	struct vring_desc *t;

	CHECK(setup(F_RING), "setup");
	t = (void *)gp(TABLE);
	for (unsigned i = 0; i < VU_CHAIN_MAX_WR + 1; i++)
		desc(t, i, DATA_A + 16 * i, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, i + 1);
	t[VU_CHAIN_MAX_WR].flags = VRING_DESC_F_WRITE;
	desc(T.r[0].desc, 0, TABLE, 16 * (VU_CHAIN_MAX_WR + 1), VRING_DESC_F_INDIRECT, 0);
	return bad_chain(0, "17 writable");
}

static bool case_ring_request_too_big(void)
{
	CHECK(setup(F_RING), "setup");
	desc(T.r[0].desc, 0, GPA_A + 0x20000, VU_CHAIN_MAX_REQ + 1, 0, 0);
	return bad_chain(0, "oversized request");
}

static bool case_ring_enospc(void)
{
	struct vu_chain c;
	struct ring *r = &T.r[0];

	CHECK(setup(F_RING), "setup");
	desc(r->desc, 0, DATA_A, 4, VRING_DESC_F_WRITE, 0);
	post(r, 0);
	memset(gp(DATA_A), 'x', 4);
	CHECK(pop(0, &c) == 0 && c.req_len == 0 && !c.req, "pop");
	CHECK(respond(&c, "12345678", 8) == -ENOSPC, "too long a response");
	CHECK(used_idx(0) == 1 && r->used->ring[0].len == 0 && !memcmp(gp(DATA_A), "xxxx", 4),
	      "must complete with length 0 and write nothing");
	return good_chain_works(0, 8);
}

static bool case_ring_event_idx(void)
{
	struct ring *r = &T.r[0];

	CHECK(setup(F_RING), "setup");
	CHECK(good_chain_works(0, 0), "%s", why);
	notify(0);
	CHECK(calls(0) == 1, "first notification missing");
	notify(0);
	CHECK(calls(0) == 0, "notified with nothing new");
	r->avail->ring[QSIZE] = 10;		/* used_event: wake me at 11 */
	CHECK(good_chain_works(0, 0), "%s", why);
	notify(0);
	CHECK(calls(0) == 0, "used_event ignored");
	r->avail->ring[QSIZE] = 2;		/* used idx goes 2 -> 3 */
	CHECK(good_chain_works(0, 0), "%s", why);
	notify(0);
	CHECK(calls(0) == 1, "used_event crossed, no notification");
	CHECK(avail_event(r) == 3, "avail_event");
	return true;
}

static bool case_ring_no_interrupt(void)
{
	struct ring *r = &T.r[0];

	CHECK(setup(F_RING & ~F(VIRTIO_RING_F_EVENT_IDX)), "setup");
	r->avail->flags = VRING_AVAIL_F_NO_INTERRUPT;
	CHECK(good_chain_works(0, 0), "%s", why);
	notify(0);
	CHECK(calls(0) == 0, "NO_INTERRUPT ignored");
	r->avail->flags = 0;
	CHECK(good_chain_works(0, 0), "%s", why);
	notify(0);
	CHECK(calls(0) == 1, "no notification");
	return true;
}

static bool case_ring_old_generation(void)
{
	struct vu_chain c, c2;
	uint32_t gen;

	CHECK(setup(F_RING), "setup");
	good_chain(&T.r[0], 0);
	good_chain(&T.r[0], 4);
	CHECK(pop(0, &c) == 0 && pop(0, &c2) == 0, "pop");
	gen = vu_generation(T.dev);
	n_resets = 0;
	CHECK(acked(VHOST_USER_RESET_DEVICE, NULL, 0, NULL, 0) == 0, "RESET_DEVICE");
	CHECK(n_resets == 1 && vu_generation(T.dev) != gen, "reset not seen");
	CHECK(respond(&c, "x", 1) == 0 && !c.req && used_idx(0) == 0, "old chain answered");
	CHECK(!vu_queue_ready(T.dev, 0), "ring survived the reset");
	/* After a disconnect the memory is gone: the chain is only freed. */
	vu_disconnect(T.dev);
	CHECK(n_resets == 2 && !vu_broken(T.dev), "disconnect reset");
	CHECK(respond(&c2, "x", 1) == 0 && !c2.req, "chain of a dead connection answered");
	return true;
}

/* ---- VM stop/continue (QEMU `stop` / `cont`) ------------------------------ */

#define WR_AREA (GPA_B + 0x20000)	/* chain h writes to WR_AREA + 0x100 * h */

/* Chain at head h (descriptors 2h, 2h+1): 4 readable bytes, 16 writable. */
static void small_chain(struct ring *r, uint16_t h)
{
	memcpy(gp(DATA_A + 0x40 * h), "req!", 4);
	memset(gp(WR_AREA + 0x100 * h), '.', 16);
	desc(r->desc, 2 * h, DATA_A + 0x40 * h, 4, VRING_DESC_F_NEXT, 2 * h + 1);
	desc(r->desc, 2 * h + 1, WR_AREA + 0x100 * h, 16, VRING_DESC_F_WRITE, 0);
	post(r, 2 * h);
}

static bool answer(struct vu_chain *c, char tag)
{
	char b[8] = { 'a', 'n', 's', tag, 0, 0, 0, 0 };

	return respond(c, b, 8) == 0 && !c->req;
}

/* The used ring of q holds each of heads[0..n) exactly once, in some order,
 * each with length 8 and its answer in its writable buffer. */
static bool used_exactly(unsigned q, const uint16_t *heads, const char *tags, unsigned n)
{
	struct ring *r = &T.r[q];

	CHECK(used_idx(q) == n, "used idx %u, expected %u", used_idx(q), n);
	for (unsigned k = 0; k < n; k++) {
		unsigned seen = 0;

		for (unsigned i = 0; i < n; i++)
			if (r->used->ring[i].id == heads[k]) {
				seen++;
				CHECK(r->used->ring[i].len == 8, "head %u: used len %u", heads[k],
				      r->used->ring[i].len);
			}
		CHECK(seen == 1, "head %u is %u times in the used ring", heads[k], seen);
		CHECK(!memcmp(gp(WR_AREA + 0x100 * (heads[k] / 2)), "ans", 3) &&
		      gp(WR_AREA + 0x100 * (heads[k] / 2))[3] == tags[k], "head %u: answer", heads[k]);
	}
	return true;
}

/* hw/virtio/vhost.c vhost_dev_stop: SET_VRING_ENABLE 0 for every ring, then
 * GET_VRING_BASE for each; returns ring 0's base. */
static int64_t qemu_stop(void)
{
	struct vhost_vring_state_msg st = { 0, 0 }, b0 = { 0, 0 };

	for (unsigned q = 0; q < 2; q++)
		if (set_state(VHOST_USER_SET_VRING_ENABLE, q, 0))
			return -1;
	for (unsigned q = 0; q < 2; q++) {
		uint32_t sz = 8;

		if (fe(VHOST_USER_GET_VRING_BASE, V, &(struct vhost_vring_state_msg){ q, 0 }, 8,
		       NULL, 0) || !rep(VHOST_USER_GET_VRING_BASE, &st, &sz) || st.index != q)
			return -1;
		if (!q)
			b0 = st;
	}
	return b0.num;
}

/* vhost_dev_start: SET_FEATURES, SET_MEM_TABLE, then per ring NUM, BASE,
 * ADDR, KICK (a new eventfd), CALL; then SET_VRING_ENABLE 1 for every ring.
 * base0 is ring 0's base (ring 1 resumes at 0; nothing was popped there). */
static bool qemu_start(uint16_t base0, bool enable)
{
	if (set_u64(VHOST_USER_SET_FEATURES, F_RING) || mem_table_ab())
		return false;
	for (unsigned q = 0; q < 2; q++) {
		struct ring *r = &T.r[q];

		close(r->kick);
		r->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (set_state(VHOST_USER_SET_VRING_NUM, q, r->num) ||
		    set_state(VHOST_USER_SET_VRING_BASE, q, q ? 0 : base0) ||
		    vring_addr(q, uva(r->base), uva(r->base + 0x1000), uva(r->base + 0x2000)) ||
		    set_vring_fd(VHOST_USER_SET_VRING_KICK, q, r->kick) ||
		    set_vring_fd(VHOST_USER_SET_VRING_CALL, q, r->call))
			return false;
	}
	for (unsigned q = 0; enable && q < 2; q++)
		if (set_state(VHOST_USER_SET_VRING_ENABLE, q, 1))
			return false;
	return true;
}

/* `stop` with parked chains, answers while stopped, `cont`: every chain is
 * answered exactly once, the used index is right, the device kept its state. */
static bool case_vm_stop_cont(void)
{
	struct vu_chain c[5], tmp;
	static const uint16_t heads[5] = { 0, 2, 4, 6, 8 };
	uint16_t u0;

	CHECK(setup(F_RING), "setup");
	for (uint16_t h = 0; h < 4; h++)
		small_chain(&T.r[0], h);
	for (int i = 0; i < 4; i++)
		CHECK(pop(0, &c[i]) == 0 && c[i].head == heads[i], "pop %d", i);
	CHECK(answer(&c[0], '0') && used_idx(0) == 1, "answer while running");
	notify(0);
	(void)calls(0);
	n_resets = 0;

	/* stop: disabled first, then stopped; answers in both windows are kept */
	CHECK(set_state(VHOST_USER_SET_VRING_ENABLE, 0, 0) == 0, "disable");
	CHECK(answer(&c[1], '1') && used_idx(0) == 1, "answered into a disabled ring");
	CHECK(qemu_stop() == 4, "GET_VRING_BASE must return the 4 popped");
	CHECK(!vu_queue_ready(T.dev, 0) && vu_queue_kick_fd(T.dev, 0) < 0, "not stopped");
	CHECK(answer(&c[2], '2') && used_idx(0) == 1, "answered into a stopped ring");
	notify(0);
	CHECK(calls(0) == 0, "a stopped ring notified the guest");
	CHECK(!memcmp(gp(WR_AREA + 0x100), "................", 16) &&
	      !memcmp(gp(WR_AREA + 0x200), "................", 16),
	      "a suspended device wrote guest memory");
	small_chain(&T.r[0], 4);		/* the guest had posted one more */
	CHECK(pop(0, &tmp) == -EAGAIN, "stopped ring popped");

	/* cont: nothing is delivered until the ring is enabled again */
	CHECK(qemu_start(4, false), "restart");
	CHECK(used_idx(0) == 1, "delivered before SET_VRING_ENABLE 1");
	CHECK(set_state(VHOST_USER_SET_VRING_ENABLE, 0, 1) == 0 &&
	      set_state(VHOST_USER_SET_VRING_ENABLE, 1, 1) == 0, "enable");
	if (!used_exactly(0, heads, "012", 3))
		return false;
	CHECK(calls(0) == 1, "kept answers delivered without a notification");
	CHECK(n_resets == 0, "a stop/cont reset the device");
	u0 = used_idx(0);
	CHECK(answer(&c[3], '3') && used_idx(0) == u0 + 1, "answer after cont");
	CHECK(pop(0, &c[4]) == 0 && c[4].head == 8 && answer(&c[4], '4'), "chain posted while stopped");
	return used_exactly(0, heads, "01234", 5);
	return true;
}

/* Two stop/cont cycles in a row, answers kept across both. */
static bool case_vm_stop_cont_twice(void)
{
	struct vu_chain c[3];
	static const uint16_t heads[3] = { 0, 2, 4 };

	CHECK(setup(F_RING), "setup");
	for (uint16_t h = 0; h < 3; h++)
		small_chain(&T.r[0], h);
	for (int i = 0; i < 3; i++)
		CHECK(pop(0, &c[i]) == 0, "pop %d", i);
	n_resets = 0;
	CHECK(qemu_stop() == 3, "stop 1");
	CHECK(answer(&c[0], 'a'), "answer");
	CHECK(qemu_start(3, true), "cont 1");
	if (!used_exactly(0, heads, "a", 1))
		return false;
	CHECK(qemu_stop() == 3, "stop 2");
	CHECK(answer(&c[1], 'b'), "answer");
	CHECK(qemu_start(3, false), "cont 2");
	CHECK(qemu_stop() == 3, "stop 3 before enabling");
	CHECK(answer(&c[2], 'c'), "answer");
	CHECK(qemu_start(3, true), "cont 3");
	CHECK(n_resets == 0, "reset");
	return used_exactly(0, heads, "abc", 3);
}

/* A guest reset (reboot, driver reload) looks like a stop, then rings
 * re-created from index 0 in zeroed memory: the device forgets its streams,
 * answers kept for the old rings and chains popped from them are dropped. */
static bool case_guest_reset_after_stop(void)
{
	struct vu_chain c[3];

	CHECK(setup(F_RING), "setup");
	for (uint16_t h = 0; h < 3; h++)
		small_chain(&T.r[0], h);
	for (int i = 0; i < 3; i++)
		CHECK(pop(0, &c[i]) == 0, "pop %d", i);
	CHECK(answer(&c[0], '0') && used_idx(0) == 1, "answer");
	CHECK(qemu_stop() == 3, "stop");
	CHECK(answer(&c[1], '1'), "answer while stopped");
	n_resets = 0;
	memset(gp(T.r[0].base), 0, 0x3000);	/* the driver's fresh ring, same place */
	T.r[0].aidx = 0;
	CHECK(qemu_start(0, true), "re-create");
	CHECK(n_resets == 1, "device state kept across a guest reset");
	CHECK(used_idx(0) == 0, "an answer for the old ring was delivered into the new one");
	CHECK(respond(&c[2], "x", 1) == 0 && used_idx(0) == 0, "stale chain in a new ring");
	return good_chain_works(0, 8);
}

/* Same addresses, same base, but a used index that moved: not a resume. */
static bool case_stop_used_idx_moved(void)
{
	struct vu_chain c[2];

	CHECK(setup(F_RING), "setup");
	small_chain(&T.r[0], 0);
	small_chain(&T.r[0], 1);
	CHECK(pop(0, &c[0]) == 0 && pop(0, &c[1]) == 0, "pop");
	CHECK(qemu_stop() == 2, "stop");
	CHECK(answer(&c[0], '0'), "answer");
	n_resets = 0;
	T.r[0].used->idx = 7;
	CHECK(qemu_start(2, true), "restart");
	CHECK(n_resets == 1 && used_idx(0) == 7, "a ring whose used index moved was resumed");
	CHECK(respond(&c[1], "x", 1) == 0 && used_idx(0) == 7, "stale chain answered");
	return true;
}

/* Found by fuzz_vu_msg: ring 1 re-created (a device reset) while ring 0,
 * resumed unchanged, holds a kept answer: that answer is stale too. */
static bool case_stop_other_ring_recreated(void)
{
	struct vu_chain c;

	CHECK(setup(F_RING), "setup");
	small_chain(&T.r[0], 0);
	CHECK(pop(0, &c) == 0, "pop");
	CHECK(qemu_stop() == 1, "stop");
	CHECK(answer(&c, '0'), "answer while stopped");
	n_resets = 0;
	T.r[1].used->idx = 3;			/* ring 1 is not the one it was */
	CHECK(qemu_start(1, true), "restart");
	CHECK(n_resets == 1, "re-created ring 1 did not reset the device");
	CHECK(used_idx(0) == 0, "a kept answer of before the reset reached ring 0");
	return good_chain_works(0, 8);
}

/* An older test: in-flight chains answered after a resume at the same base. */
static bool case_ring_get_vring_base(void)
{
	struct vu_chain c1, c2, c3, tmp;
	struct vhost_vring_state_msg st;
	uint32_t sz = 8;

	CHECK(setup(F_RING), "setup");
	good_chain(&T.r[0], 0);
	good_chain(&T.r[0], 4);
	good_chain(&T.r[0], 8);
	CHECK(pop(0, &c1) == 0 && pop(0, &c2) == 0 && pop(0, &c3) == 0, "pop");
	CHECK(set_state(VHOST_USER_SET_VRING_ENABLE, 0, 0) == 0, "disable");
	CHECK(fe(VHOST_USER_GET_VRING_BASE, V, &(struct vhost_vring_state_msg){ 0, 0 }, 8, NULL, 0)
	      == 0 && rep(VHOST_USER_GET_VRING_BASE, &st, &sz) && st.num == 3, "base not 3");
	CHECK(!vu_queue_ready(T.dev, 0) && vu_queue_kick_fd(T.dev, 0) < 0, "not stopped");
	post(&T.r[0], 0);
	CHECK(pop(0, &tmp) == -EAGAIN, "stopped ring popped");
	CHECK(respond(&c1, "x", 1) == 0 && used_idx(0) == 0, "answered into a stopped ring");
	/* Resumed at the same place (VM stop/cont): in-flight chains count. */
	CHECK(set_state(VHOST_USER_SET_VRING_BASE, 0, 3) == 0 &&
	      set_vring_fd(VHOST_USER_SET_VRING_KICK, 0, T.r[0].kick) == 0 &&
	      set_state(VHOST_USER_SET_VRING_ENABLE, 0, 1) == 0, "restart");
	CHECK(used_idx(0) == 1, "the answer kept while stopped was not delivered");
	CHECK(respond(&c2, "x", 1) == 0 && used_idx(0) == 2, "resumed ring lost its chain");
	/* Re-created from scratch (guest reset): the old chain is dropped. */
	CHECK(fe(VHOST_USER_GET_VRING_BASE, V, &(struct vhost_vring_state_msg){ 0, 0 }, 8, NULL, 0)
	      == 0 && rep(VHOST_USER_GET_VRING_BASE, &st, &sz), "stop");
	close(T.r[0].kick);
	T.r[0].kick = -1;
	close(T.r[0].call);
	T.r[0].call = -1;
	CHECK(ring_setup(0, GPA_A + 0x1000, QSIZE), "re-create");
	CHECK(respond(&c3, "x", 1) == 0 && used_idx(0) == 0, "stale chain in a new ring");
	return good_chain_works(0, 0);
}

/* SET_VRING_ADDR is refused on a running ring like NUM and BASE. */
static bool case_ring_addr_running(void)
{
	struct vu_chain c;
	uint64_t nb = GPA_A + 0x40000;

	CHECK(setup(F_RING), "setup");
	good_chain(&T.r[0], 0);
	CHECK(pop(0, &c) == 0, "pop");
	CHECK(vring_addr(0, uva(nb), uva(nb + 0x1000), uva(nb + 0x2000)) > 0,
	      "SET_VRING_ADDR accepted on a running ring");
	CHECK(respond(&c, "0123456789AB", 12) == 0 && used_idx(0) == 1,
	      "the ring moved anyway");
	if (!good_chain_works(0, 4))
		return false;
	CHECK(qemu_stop() == 2, "stop");
	CHECK(vring_addr(0, uva(nb), uva(nb + 0x1000), uva(nb + 0x2000)) == 0,
	      "SET_VRING_ADDR refused on a stopped ring");
	return true;
}

/* ---- a frontend that truncates its memory file -------------------------- */

/* stderr goes to a memfd between cap_begin and cap_end. */
static int cap_fd = -1, cap_saved = -1;

static void cap_begin(void)
{
	fflush(stderr);
	cap_fd = memfd_create("stderr", MFD_CLOEXEC);
	cap_saved = dup(2);
	dup2(cap_fd, 2);
}

static void cap_end(char *buf, size_t len)
{
	ssize_t n;

	dup2(cap_saved, 2);
	close(cap_saved);
	n = pread(cap_fd, buf, len - 1, 0);
	close(cap_fd);
	buf[n > 0 ? n : 0] = 0;
}

static unsigned count_lines(const char *log, const char *what)
{
	unsigned n = 0;

	for (const char *l = log; *l; ) {
		const char *e = strchr(l, '\n');
		size_t len = e ? (size_t)(e - l) : strlen(l);

		n += memmem(l, len, what, strlen(what)) != NULL;
		l += len + (e != NULL);
	}
	return n;
}

struct gpa_writer {
	pthread_t th;
	int ret;
};

/* Another thread (the device's event thread) writing guest memory. */
static void *gpa_write_thread(void *arg)
{
	struct gpa_writer *w = arg;

	vu_lock(T.dev);
	w->ret = vu_gpa_write(T.dev, DATA_A, "frame", 5);
	vu_unlock(T.dev);
	return NULL;
}

/* ftruncate to 0 after SET_MEM_TABLE: the first access faults in whichever
 * thread makes it; it fails, one error line, the device is broken (and the
 * loop would drop the frontend), nothing else touches the memory. */
static bool case_sigbus_truncated(void)
{
	struct vu_chain c, c2;
	struct gpa_writer w = { .ret = 1 };
	static char log[8192];
	int r_pop, r_resp;
	bool broken;

	CHECK(setup(F_RING), "setup");
	good_chain(&T.r[0], 0);
	CHECK(pop(0, &c) == 0, "pop");
	good_chain(&T.r[0], 4);
	CHECK(ftruncate(T.memfd, 0) == 0, "truncate");
	cap_begin();
	pthread_create(&w.th, NULL, gpa_write_thread, &w);
	pthread_join(w.th, NULL);
	r_pop = pop(0, &c2);
	r_resp = respond(&c, "x", 1);
	broken = vu_broken(T.dev);
	cap_end(log, sizeof(log));
	CHECK(ftruncate(T.memfd, MEM_SIZE) == 0, "restore");
	CHECK(w.ret == -EFAULT, "write into truncated memory: %d", w.ret);
	CHECK(broken && r_pop == -EIO && !c2.req, "pop after the fault: %d", r_pop);
	CHECK(r_resp == 0 && !c.req, "respond after the fault: %d", r_resp);
	CHECK(count_lines(log, "error:") == 1 && count_lines(log, "SIGBUS") == 1,
	      "log: '%s'", log);
	return true;
}

/* The same fault inside vu_queue_pop on the command thread. */
static bool case_sigbus_pop(void)
{
	struct vu_chain c;
	static char log[8192];
	int r;

	CHECK(setup(F_RING), "setup");
	good_chain(&T.r[0], 0);
	CHECK(ftruncate(T.memfd, 0) == 0, "truncate");
	cap_begin();
	r = pop(0, &c);
	cap_end(log, sizeof(log));
	CHECK(ftruncate(T.memfd, MEM_SIZE) == 0, "restore");
	CHECK(r == -EIO && vu_broken(T.dev) && !c.req, "pop: %d", r);
	CHECK(count_lines(log, "error:") == 1 && count_lines(log, "SIGBUS") == 1,
	      "log: '%s'", log);
	return true;
}

/* ---- vu_run ------------------------------------------------------------- */

struct runner {
	pthread_t th;
	int fd, stop, ret;
};

static void *run_thread(void *arg)
{
	struct runner *r = arg;

	r->ret = vu_run(T.dev, r->fd, r->stop);
	return NULL;
}

static bool wait_call(unsigned q)
{
	struct pollfd p = { T.r[q].call, POLLIN, 0 };

	return poll(&p, 1, 5000) == 1 && calls(q) >= 1;
}

static bool case_run_listen(void)
{
	char dir[] = "/tmp/test_vu.XXXXXX", path[64];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct runner rn = { .ret = -1 };
	uint64_t one = 1;
	char b;

	CHECK(mkdtemp(dir), "mkdtemp");
	snprintf(path, sizeof(path), "%s/sock", dir);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	CHECK(t_open(), "setup");
	vu_disconnect(T.dev);			/* vu_run accepts its own */
	close(T.sock);
	rn.fd = vu_listen(path);
	rn.stop = eventfd(0, EFD_CLOEXEC);
	CHECK(rn.fd >= 0 && rn.stop >= 0, "listen");
	T.threaded = true;
	echo_on_kick = true;
	CHECK(pthread_create(&rn.th, NULL, run_thread, &rn) == 0, "thread");
	for (int round = 0; round < 2; round++) {
		uint64_t f;

		T.sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(connect(T.sock, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");
		f = get_u64(VHOST_USER_GET_FEATURES);
		CHECK(f == (F_RING | F_DEV), "features over the socket");
		CHECK(set_u64(VHOST_USER_SET_FEATURES, F_RING) == 0 && mem_table_ab() == 0 &&
		      ring_setup(0, GPA_A + 0x1000, QSIZE), "handshake");
		good_chain(&T.r[0], 0);
		CHECK(write(T.r[0].kick, &one, 8) == 8, "kick");
		CHECK(wait_call(0), "no answer to a kick");
		CHECK(used_idx(0) == 1 && !memcmp(gp(DATA_A + 0x100), "pong", 4), "echo");
		close(T.sock);			/* hang up: vu_run takes the next one */
		close(T.r[0].kick);
		close(T.r[0].call);
		T.r[0].kick = T.r[0].call = -1;
	}
	/* A ring the guest broke drops the frontend. */
	T.sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(connect(T.sock, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");
	CHECK(set_u64(VHOST_USER_SET_FEATURES, F_RING) == 0 && mem_table_ab() == 0 &&
	      ring_setup(0, GPA_A + 0x1000, QSIZE), "handshake");
	__atomic_store_n(&T.r[0].avail->idx, 100, __ATOMIC_RELEASE);
	CHECK(write(T.r[0].kick, &one, 8) == 8, "kick");
	CHECK(recv(T.sock, &b, 1, 0) == 0, "broken device kept the frontend");
	close(T.sock);
	T.sock = -1;
	CHECK(write(rn.stop, &one, 8) == 8, "stop");
	pthread_join(rn.th, NULL);
	CHECK(rn.ret == 0, "vu_run returned %d", rn.ret);
	CHECK(__atomic_load_n(&n_kicks, __ATOMIC_SEQ_CST) >= 3, "kicks");
	close(rn.fd);
	close(rn.stop);
	unlink(path);
	rmdir(dir);
	return true;
}

static bool case_run_connected(void)
{
	struct runner rn = { .ret = -1 };
	int sv[2];

	CHECK(t_open(), "setup");
	vu_disconnect(T.dev);
	close(T.sock);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
	T.sock = sv[1];
	rn.fd = sv[0];
	rn.stop = -1;
	T.threaded = true;
	n_resets = 0;
	CHECK(pthread_create(&rn.th, NULL, run_thread, &rn) == 0, "thread");
	CHECK(get_u64(VHOST_USER_GET_QUEUE_NUM) == 2, "GET_QUEUE_NUM");
	close(T.sock);
	T.sock = -1;
	pthread_join(rn.th, NULL);
	CHECK(rn.ret == 0 && n_resets == 1, "vu_run %d, resets %d", rn.ret, n_resets);
	CHECK(fcntl(sv[0], F_GETFD) >= 0, "the caller's fd was closed");
	close(sv[0]);
	return true;
}

/* A fresh guest memory file (the old one stays truncated for the daemon). */
static bool mem_renew(void)
{
	munmap(T.mem, MEM_SIZE);
	close(T.memfd);
	T.memfd = memfd_create("guest", MFD_CLOEXEC);
	if (T.memfd < 0 || ftruncate(T.memfd, MEM_SIZE))
		return false;
	T.mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, T.memfd, 0);
	for (int i = 0; i < 2; i++) {
		close(T.r[i].kick);
		close(T.r[i].call);
		T.r[i].kick = T.r[i].call = -1;
	}
	return T.mem != MAP_FAILED;
}

/* Through vu_run: a frontend truncates its memory, a write from another
 * thread faults (connection dropped), the next frontend truncates and kicks
 * (the fault is in the loop's own thread: dropped), the third is served. */
static bool case_run_sigbus(void)
{
	char dir[] = "/tmp/test_vu.XXXXXX", path[64];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct runner rn = { .ret = -1 };
	static char log[16384];
	uint64_t one = 1;
	bool ok = true;
	int w_ret = 0;
	char b;

	CHECK(mkdtemp(dir), "mkdtemp");
	snprintf(path, sizeof(path), "%s/sock", dir);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	CHECK(t_open(), "setup");
	vu_disconnect(T.dev);
	close(T.sock);
	rn.fd = vu_listen(path);
	rn.stop = eventfd(0, EFD_CLOEXEC);
	CHECK(rn.fd >= 0 && rn.stop >= 0, "listen");
	T.threaded = true;
	echo_on_kick = true;
	cap_begin();
	pthread_create(&rn.th, NULL, run_thread, &rn);
	for (int round = 0; round < 3 && ok; round++) {
		T.sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		ok = connect(T.sock, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		     set_u64(VHOST_USER_SET_FEATURES, F_RING) == 0 && mem_table_ab() == 0 &&
		     ring_setup(0, GPA_A + 0x1000, QSIZE);
		if (!ok)
			break;
		good_chain(&T.r[0], 0);
		if (round == 0) {
			ok = ftruncate(T.memfd, 0) == 0;
			vu_lock(T.dev);
			w_ret = vu_gpa_write(T.dev, DATA_A, "frame", 5);
			vu_unlock(T.dev);
			ok = ok && recv(T.sock, &b, 1, 0) == 0;
		} else if (round == 1) {
			ok = ftruncate(T.memfd, 0) == 0 && write(T.r[0].kick, &one, 8) == 8 &&
			     recv(T.sock, &b, 1, 0) == 0;
		} else {
			ok = write(T.r[0].kick, &one, 8) == 8 && wait_call(0) && used_idx(0) == 1 &&
			     !memcmp(gp(DATA_A + 0x100), "pong", 4);
		}
		close(T.sock);
		T.sock = -1;
		ok = ok && mem_renew();
	}
	ok = write(rn.stop, &one, 8) == 8 && ok;
	pthread_join(rn.th, NULL);
	cap_end(log, sizeof(log));
	CHECK(ok, "a round failed; log: '%s'", log);
	CHECK(w_ret == -EFAULT, "the faulting write returned %d", w_ret);
	CHECK(rn.ret == 0, "vu_run returned %d", rn.ret);
	CHECK(count_lines(log, "error:") == 2 && count_lines(log, "SIGBUS") == 2,
	      "log: '%s'", log);
	close(rn.fd);
	close(rn.stop);
	unlink(path);
	rmdir(dir);
	return true;
}


/* ---- linear views ---------------------------------------------------------- */


static unsigned count_dir(const char *path)
{
	char cmd[128], buf[32];
	FILE *f;
	unsigned n = 0;

	snprintf(cmd, sizeof(cmd), "ls %s | wc -l", path);
	f = popen(cmd, "r");
	if (f && fgets(buf, sizeof(buf), f))
		n = (unsigned)atoi(buf);
	if (f)
		pclose(f);
	return n;
}

/* Mappings of the guest memfd in /proc/self/maps (read without stdio: no
 * allocation, so valgrind's own mappings do not move the count). */
static unsigned n_maps(void)
{
	static char buf[1 << 20];
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	size_t len = 0;
	ssize_t r;
	unsigned n = 0;

	if (fd < 0)
		return 0;
	while (len < sizeof(buf) - 1 && (r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)r;
	close(fd);
	buf[len] = '\0';
	for (char *p = buf; (p = strstr(p, "memfd:guest")); p++)
		n++;
	return n;
}

/* Nothing mapped at [p, p + len) any more. */
static bool unmapped(const void *p, size_t len)
{
	unsigned char vec[64];
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)(PG - 1);

	return len <= 64 * PG && mincore((void *)a, len, vec) < 0 && errno == ENOMEM;
}

/* Fill guest page at gpa with a pattern of its own. */
static void fill_page(uint64_t gpa, uint8_t tag)
{
	for (unsigned i = 0; i < PG; i++)
		gp(gpa)[i] = (uint8_t)(tag + i * 7);
}

/* The view's bytes equal the pieces' guest bytes, in order, and a write
 * through the view lands in guest memory. */
static bool view_matches(struct vu_view *v, const struct vu_seg *seg, unsigned n)
{
	const uint8_t *p = vu_view_addr(v);
	size_t at = 0;

	for (unsigned i = 0; i < n; i++) {
		if (memcmp(p + at, gp(seg[i].gpa), seg[i].len))
			return false;
		at += seg[i].len;
	}
	return at == vu_view_len(v);
}

static bool case_view_contiguous(void)
{
	struct vu_seg seg = { GPA_A + 16 * PG, 5 * PG + 100 };
	struct vu_view *v;

	CHECK(t_open() && mem_table_ab() == 0, "setup");
	for (unsigned i = 0; i < 6; i++)
		fill_page(GPA_A + (16 + i) * PG, (uint8_t)i);
	vu_lock(T.dev);
	CHECK(vu_view_new(T.dev, &seg, 1, &v) == 0, "view refused");
	CHECK(vu_view_valid(v) && vu_view_len(v) == seg.len && view_matches(v, &seg, 1), "contents");
	CHECK((uint8_t *)vu_view_addr(v) != gp(seg.gpa), "the view is the region mapping itself");
	((uint8_t *)vu_view_addr(v))[3 * PG + 5] = 0xa5;
	CHECK(gp(seg.gpa)[3 * PG + 5] == 0xa5, "a write through the view is not in guest memory");
	vu_view_free(T.dev, v);
	vu_unlock(T.dev);
	return true;
}

/* Pieces in both regions, out of order, the first starting inside its page
 * (it ends on a boundary), the last ending inside one. */
static bool case_view_scattered(void)
{
	struct vu_seg seg[] = {
		{ GPA_B + 40 * PG + 1000, PG - 1000 }, { GPA_A + 7 * PG, PG },
		{ GPA_B + 3 * PG, 2 * PG }, { GPA_A + 90 * PG, PG }, { GPA_A + 5 * PG, 123 },
	};
	unsigned n = sizeof(seg) / sizeof(seg[0]);
	struct vu_view *v;
	uint8_t *p;

	CHECK(t_open() && mem_table_ab() == 0, "setup");
	for (unsigned i = 0; i < n; i++)
		for (uint64_t g = seg[i].gpa & ~(uint64_t)(PG - 1); g < seg[i].gpa + seg[i].len; g += PG)
			fill_page(g, (uint8_t)(i * 40 + (g >> 12)));
	vu_lock(T.dev);
	CHECK(vu_view_new(T.dev, seg, n, &v) == 0, "view refused");
	CHECK(view_matches(v, seg, n), "contents");
	p = vu_view_addr(v);
	CHECK(((uintptr_t)p & (PG - 1)) == 1000, "first byte not at its page offset");
	p[PG - 1000 + PG + 2 * PG + 17] = 0x5a;	/* seg[3], byte 17 */
	CHECK(gp(seg[3].gpa)[17] == 0x5a, "write to the 4th piece");
	p[vu_view_len(v) - 1] = 0x3c;
	CHECK(gp(seg[4].gpa)[122] == 0x3c, "write to the last byte");
	vu_view_free(T.dev, v);
	vu_unlock(T.dev);
	return true;
}

/* One entry across regions B and C (adjacent in gpa and in the file). */
static bool case_view_two_regions(void)
{
	struct vu_seg seg = { GPA_C - 2 * PG, 4 * PG };
	struct vu_view *v;

	CHECK(t_open() && mem_table_ab() == 0, "setup");
	CHECK(mem_reg(VHOST_USER_ADD_MEM_REG, region(GPA_C, MB, UVA_C, OFF_C), T.memfd) == 0,
	      "ADD_MEM_REG");
	for (unsigned i = 0; i < 4; i++)
		fill_page(seg.gpa + i * PG, (uint8_t)(9 * i));
	vu_lock(T.dev);
	CHECK(vu_view_new(T.dev, &seg, 1, &v) == 0 && view_matches(v, &seg, 1), "across B and C");
	vu_view_free(T.dev, v);
	vu_unlock(T.dev);
	return true;
}

static bool case_view_refused(void)
{
	struct vu_seg mid[] = { { GPA_A, PG }, { GPA_A + 3 * PG + 8, PG - 8 } };
	struct vu_seg short_first[] = { { GPA_A, 100 }, { GPA_A + 3 * PG, PG } };
	struct vu_seg hole[] = { { GPA_A + MB - PG, 2 * PG } };
	struct vu_seg wrap[] = { { UINT64_MAX - PG + 1, 2 * PG } };
	struct vu_seg tail[] = { { GPA_A + MB - PG, PG - 1 } };
	struct vu_view *v = (void *)1;
	unsigned maps, fds;

	CHECK(t_open() && mem_table_ab() == 0, "setup");
	maps = n_maps();
	fds = count_dir("/proc/self/fd");
	vu_lock(T.dev);
	CHECK(vu_view_new(T.dev, mid, 2, &v) == -ENOTSUP && !v, "a piece starting inside a page");
	CHECK(vu_view_new(T.dev, short_first, 2, &v) == -ENOTSUP, "a piece ending inside a page");
	CHECK(vu_view_new(T.dev, hole, 1, &v) == -EFAULT, "a piece past the region");
	CHECK(vu_view_new(T.dev, wrap, 1, &v) == -EFAULT, "a wrapping piece");
	CHECK(vu_view_new(T.dev, tail, 1, &v) == 0, "a short last page inside the region");
	{
		void *a = vu_view_addr(v);

		vu_view_free(T.dev, v);
		CHECK(unmapped(a, PG), "a freed view is still mapped");
	}
	vu_unlock(T.dev);
	CHECK(n_maps() == maps, "mappings leaked (%u, was %u)", n_maps(), maps);
	CHECK(count_dir("/proc/self/fd") == fds, "fds leaked");
	return true;
}

/* The same page twice, and in two views at once: both show guest memory. */
static bool case_view_overlapping(void)
{
	struct vu_seg seg[] = { { GPA_A + 8 * PG, PG }, { GPA_A + 8 * PG, PG } };
	struct vu_view *v, *w;

	CHECK(t_open() && mem_table_ab() == 0, "setup");
	fill_page(GPA_A + 8 * PG, 77);
	vu_lock(T.dev);
	CHECK(vu_view_new(T.dev, seg, 2, &v) == 0 && vu_view_new(T.dev, seg, 1, &w) == 0, "views");
	CHECK(view_matches(v, seg, 2) && view_matches(w, seg, 1), "contents");
	((uint8_t *)vu_view_addr(v))[PG + 1] = 0x11;
	CHECK(((uint8_t *)vu_view_addr(v))[1] == 0x11 && ((uint8_t *)vu_view_addr(w))[1] == 0x11 &&
	      gp(GPA_A + 8 * PG)[1] == 0x11, "one page, three addresses");
	vu_view_free(T.dev, w);
	vu_view_free(T.dev, v);
	vu_unlock(T.dev);
	return true;
}

/* 16384 entries (the device's maximum per resource): page after page,
 * merged into few mappings; alternating pages: too many mappings, refused. */
static bool case_view_max_entries(void)
{
	enum { N = 16384 };
	struct vu_seg *seg = calloc(N, sizeof(*seg));
	struct vu_view *v = NULL;
	unsigned maps;
	bool ok;

	CHECK(seg && t_open() && mem_table_ab() == 0, "setup");
	for (unsigned i = 0; i < N; i++)
		seg[i] = (struct vu_seg){ GPA_A + (i % 128) * PG, PG };
	maps = n_maps();
	vu_lock(T.dev);
	ok = vu_view_new(T.dev, seg, N, &v) == 0 && view_matches(v, seg, N);
	vu_unlock(T.dev);
	CHECK(ok, "%u consecutive-page entries", N);
	CHECK(n_maps() <= maps + 1 + N / 128, "not merged: %u mappings", n_maps() - maps);
	for (unsigned i = 0; i < N; i++)
		seg[i].gpa = GPA_A + (i % 2 ? 200 : 100) * PG;
	vu_lock(T.dev);
	vu_view_free(T.dev, v);
	ok = vu_view_new(T.dev, seg, N, &v) == -E2BIG;
	vu_unlock(T.dev);
	free(seg);
	CHECK(ok, "16384 separate mappings accepted");
	CHECK(n_maps() == maps, "mappings leaked");
	return true;
}

/* Every memory table change invalidates: SET_MEM_TABLE, REM_MEM_REG,
 * disconnect. The addresses stay reserved, without the guest's pages. */
static bool case_view_invalidated(void)
{
	struct vu_seg a = { GPA_A + PG, PG }, c = { GPA_C, PG };
	struct vhost_user_mem_region rg = region(GPA_A, MB, UVA_A, OFF_A);
	struct vu_view *v, *w, *x;
	unsigned fds;

	fds = count_dir("/proc/self/fd");
	CHECK(t_open() && mem_table_ab() == 0, "setup");
	CHECK(mem_reg(VHOST_USER_ADD_MEM_REG, region(GPA_C, MB, UVA_C, OFF_C), T.memfd) == 0,
	      "ADD_MEM_REG");
	vu_lock(T.dev);
	CHECK(vu_view_new(T.dev, &c, 1, &v) == 0 && vu_view_valid(v), "view of C");
	vu_unlock(T.dev);
	CHECK(mem_reg(VHOST_USER_REM_MEM_REG, region(GPA_C, MB, UVA_C, OFF_C), -1) == 0, "REM");
	vu_lock(T.dev);
	CHECK(!vu_view_valid(v), "valid after REM_MEM_REG");
	CHECK(vu_view_new(T.dev, &a, 1, &w) == 0 && vu_view_new(T.dev, &c, 1, &x) == -EFAULT,
	      "views after REM_MEM_REG");
	vu_unlock(T.dev);
	CHECK(mem_table(&rg, 1) == 0, "SET_MEM_TABLE");
	vu_lock(T.dev);
	CHECK(!vu_view_valid(w), "valid after SET_MEM_TABLE");
	CHECK(vu_view_new(T.dev, &a, 1, &x) == 0, "view in the new table");
	CHECK(vu_view_addr(x) != vu_view_addr(w) && vu_view_addr(x) != vu_view_addr(v),
	      "a stale view's addresses were reused");
	vu_unlock(T.dev);
	vu_disconnect(T.dev);
	vu_lock(T.dev);
	CHECK(!vu_view_valid(x), "valid after disconnect");
	vu_view_free(T.dev, v);
	vu_view_free(T.dev, w);
	vu_view_free(T.dev, x);
	vu_unlock(T.dev);
	t_close();
	CHECK(count_dir("/proc/self/fd") == fds, "fds leaked: %u, was %u",
	      count_dir("/proc/self/fd"), fds);
	return true;
}

int main(void)
{
	static const struct {
		const char *name;
		bool (*fn)(void);
	} cases[] = {
#define C(n) { #n, case_##n }
		C(log_format), C(log_rate_limit), C(listen), C(features), C(protocol_features), C(qemu_handshake),
		C(enable_semantics), C(get_config), C(reply_ack), C(mem_table),
		C(add_rem_mem_reg), C(dmabuf_items_scattered), C(dmabuf_items_refused),
		C(dmabuf_seals), C(dmabuf_create), C(dmabuf_no_fd_leak),
		C(msg_hangup), C(msg_short_header), C(msg_hangup_mid_payload),
		C(msg_split_delivery), C(msg_bad_size), C(msg_bad_version),
		C(fds_surplus_closed), C(fds_wrong_count), C(fds_too_many), C(mem_table_count),
		C(mem_table_bad_regions), C(ring_bad_num), C(ring_bad_addr), C(ring_bad_index),
		C(unknown_request),
		C(ring_good_chain), C(ring_indirect), C(ring_loop), C(ring_indirect_loop),
		C(ring_head_out_of_range), C(ring_next_out_of_range), C(ring_nested_indirect),
		C(ring_indirect_len), C(ring_indirect_without_feature), C(ring_read_after_write),
		C(ring_addr_outside), C(ring_addr_wrap), C(ring_split_regions),
		C(ring_avail_jump), C(ring_too_many_writable), C(ring_request_too_big),
		C(ring_enospc), C(ring_event_idx), C(ring_no_interrupt), C(ring_old_generation),
		C(ring_get_vring_base), C(vm_stop_cont), C(vm_stop_cont_twice),
		C(guest_reset_after_stop), C(stop_used_idx_moved), C(stop_other_ring_recreated),
		C(ring_addr_running),
		C(sigbus_truncated), C(sigbus_pop),
		C(run_listen), C(run_connected), C(run_sigbus),
		C(view_contiguous), C(view_scattered), C(view_two_regions), C(view_refused),
		C(view_overlapping), C(view_max_entries), C(view_invalidated),
#undef C
	};

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		th_run(cases[i].name, cases[i].fn);
		t_close();
	}
	return th_summary();
}
