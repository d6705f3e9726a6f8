/* SPDX-License-Identifier: MIT */
/*
 * vu: the vhost-user side of vhost-user-video (see vu.h for the contract).
 *
 * Reads top-down: constants and types, logging, guest memory, rings (pop,
 * respond, notify), message handlers, the dispatch table, the message
 * reader, and the socket loop.
 *
 * What a bad frontend gets (one rule, applied everywhere):
 *  - Broken framing drops the connection (vu_handle_msg returns -EPROTO after
 *    one "error:" line): wrong version bits, a payload larger than any we
 *    accept, a size that is not exactly the request's payload, a short header
 *    or a hang-up mid-message, more than 8 fds (MSG_CTRUNC), and a wrong fd
 *    count on a request that carries fds (SET_MEM_TABLE, ADD_MEM_REG,
 *    SET_VRING_KICK/CALL/ERR), SET_MEM_TABLE with 0 or more than 8 regions.
 *  - A well-framed request with an invalid value (ring index, ring size, ring
 *    addresses, overlapping or wrapping regions, unknown feature bits, a
 *    config range, an unknown or unsupported request) is refused: one
 *    "warning:" line, nothing changes, and a non-zero status if the frontend
 *    set NEED_REPLY. Surplus fds on requests that take none are closed.
 *  - A guest that corrupts a ring (avail index more than a ring ahead, a
 *    head out of range) marks the device broken; the loop drops the
 *    connection. A malformed chain only goes back to the used ring empty.
 *
 * Memory ordering with the guest (virtio 1.x, 2.7.13): avail->idx is read
 * with acquire before any ring entry or descriptor it publishes; used
 * entries are written before used->idx is stored with release; a full fence
 * separates our stores (used->idx, avail_event) from the loads of the
 * guest's suppression words that decide whether to notify or re-check.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/udmabuf.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include "config.h"
#include "vu.h"

/* ---- constants ---------------------------------------------------------------- */

#define VU_MAX_FDS 8
#define VU_MAX_PAYLOAD ((uint32_t)sizeof(struct vhost_user_config_msg))
#define VU_MAX_INDIRECT 32768u		/* descriptors in one indirect table */
#define VU_REQ_TABLE 44			/* request codes we can name */

#define BIT(n) (1ull << (n))
#define VU_TRANSPORT_FEATURES (BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_RING_F_INDIRECT_DESC) | \
			       BIT(VIRTIO_RING_F_EVENT_IDX) | BIT(VHOST_USER_F_PROTOCOL_FEATURES))
#define VU_PROTOCOL_FEATURES (BIT(VHOST_USER_PROTOCOL_F_MQ) | \
			      BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) | \
			      BIT(VHOST_USER_PROTOCOL_F_CONFIG) | \
			      BIT(VHOST_USER_PROTOCOL_F_RESET_DEVICE) | \
			      BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))

/* ---- types -------------------------------------------------------------------- */

struct vu_region {
	uint64_t gpa, size, uva;
	uint8_t *host;			/* byte at gpa: map + mmap_offset */
	void *map;
	size_t map_len;
	int fd;				/* our dup of the file (linear views), or -1 */
	uint64_t foff;			/* file offset of gpa (mmap_offset) */
};

/* A linear view (vu_view_new): a reserved address range with pieces of the
 * regions' files mapped at consecutive addresses. */
struct vu_view {
	struct vu_view *next;		/* dev->views */
	uint8_t *base;			/* the reservation, page-aligned */
	size_t res_len;			/* its length */
	size_t head;			/* first byte of the data at base + head */
	size_t len;			/* bytes of data */
	bool valid;			/* false once the memory table changed */
};

enum vu_qstate { VU_Q_STOPPED, VU_Q_STARTED };

/* What a ring looked like when it was stopped, to tell a resume (same ring,
 * same index: in-flight chains stay valid) from a ring re-created by a guest
 * reset (they must not be answered into it). */
struct vu_ring_sig {
	uint64_t desc, avail, used;
	unsigned num;
	uint16_t base, used_idx;
};

/* An answer given while its ring was not running (VM stopped: disabled,
 * then GET_VRING_BASE): kept, guest memory untouched, until the same ring
 * runs again; dropped if the ring is re-created instead. */
struct vu_done {
	uint32_t gen;			/* a reset since (any ring re-created) drops it */
	uint16_t head;
	bool fits;			/* len <= the chain's writable space */
	struct vu_seg wr[VU_CHAIN_MAX_WR];
	unsigned n_wr;
	uint8_t *resp;
	size_t len;
};

struct vu_queue {
	enum vu_qstate state;
	bool enabled;
	bool addr_set;
	bool was_stopped;
	unsigned num;
	uint64_t desc_uva, avail_uva, used_uva;
	/* Host views of the ring; NULL while the addresses do not translate. */
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t last_avail, used_idx, signalled_used;
	bool signalled_valid;
	int kick_fd, call_fd, err_fd;
	struct vu_ring_sig stopped;
	struct vu_done *done;		/* answers waiting for the ring to run */
	unsigned n_done, cap_done;
};

struct vu_rl {
	time_t window;
	unsigned used, missed;
};

struct vu_dev {
	const struct vu_ops *ops;
	void *opaque;
	pthread_mutex_t lock;
	int conn_fd, wake_fd, stop_fd;
	uint32_t gen;			/* __atomic */
	bool forget_device;		/* a ring was re-created: ops->reset after this message */
	bool broken;			/* __atomic */
	uint64_t features, protocol_features;
	uint8_t status;
	unsigned nregions;
	struct vu_region regions[VU_MAX_MEM_SLOTS];
	struct vu_view *views;		/* live linear views, valid or not */
	struct vu_queue q[VU_MAX_QUEUES];
	struct vu_rl rl_chain, rl_req, rl_call;
};

struct vu_msg {
	struct vhost_user_hdr hdr;
	union {
		uint64_t u64;
		struct vhost_vring_state_msg state;
		struct vhost_vring_addr_msg addr;
		struct vhost_user_mem_table mem;
		struct vhost_user_mem_reg_msg reg;
		struct vhost_user_config_msg cfg;
		uint8_t raw[VU_MAX_PAYLOAD];
	} p;
	int fds[VU_MAX_FDS];
	unsigned nfds;
};

/* One request being handled: the request, our reply, what to do after. */
struct vu_ctx {
	struct vu_dev *dev;
	struct vu_msg *m;
	struct vu_msg *r;
	const char *name;
	bool has_reply;
	bool reset;			/* call ops->reset without the lock, then clear rings */
};

/* ---- logging ------------------------------------------------------------------ */

int vu_verbosity;

/* Warnings are what a guest or frontend can make us repeat: at most
 * VU_WARN_BURST a second, the next one says how many were dropped. */
#define VU_WARN_BURST 20
static bool warn_allowed(unsigned *missed)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static time_t window;
	static unsigned used, dropped;
	struct timespec ts;
	bool ok;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	pthread_mutex_lock(&mu);
	if (ts.tv_sec != window) {
		window = ts.tv_sec;
		used = 0;
	}
	ok = used < VU_WARN_BURST;
	if (ok) {
		used++;
		*missed = dropped;
		dropped = 0;
	} else {
		dropped++;
	}
	pthread_mutex_unlock(&mu);
	return ok;
}

void vu_log(int level, const char *fmt, ...)
{
	static const char *const prefix[] = {
		[VU_ERR] = "error: ", [VU_WARN] = "warning: ",
	};
	char line[1024];
	int saved = errno, n;
	unsigned missed = 0;
	va_list ap;

	if (level > VU_INFO && level - VU_INFO > vu_verbosity)
		return;
	if (level == VU_WARN && !warn_allowed(&missed))
		return;
	n = snprintf(line, sizeof(line), "vhost-user-video: %s",
		     level >= 0 && level <= VU_WARN ? prefix[level] : "");
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	n = strlen(line);
	if (missed)
		n += snprintf(line + n, sizeof(line) - n - 1, " (%u warnings suppressed before)",
			      missed);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line, so that lines of two threads never interleave. */
	if (write(STDERR_FILENO, line, n) < 0)
		(void)0;
	errno = saved;
}

/* At most a few lines a second for what a guest or frontend can repeat;
 * *missed says how many were dropped before this one. */
#define VU_RL_BURST 5
static bool rl_allow(struct vu_rl *rl, unsigned *missed)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (ts.tv_sec != rl->window) {
		rl->window = ts.tv_sec;
		rl->used = 0;
	}
	if (rl->used == VU_RL_BURST) {
		rl->missed++;
		return false;
	}
	rl->used++;
	*missed = rl->missed;
	rl->missed = 0;
	return true;
}

static const char *rl_note(unsigned missed, char *buf, size_t len)
{
	if (!missed)
		return "";
	snprintf(buf, len, " (%u similar lines suppressed)", missed);
	return buf;
}

static int proto_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int proto_error(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	vu_log(VU_ERR, "%s; dropping the frontend", buf);
	return -EPROTO;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Fuzz targets build vu.c with VU_TEST_HOOKS to see every used-ring entry
 * (tests/fuzz: every chain answered exactly once). Nothing otherwise. */
#ifdef VU_TEST_HOOKS
#define TEST_HOOK(dev, what, qi, head) vu_test_hook(dev, what, qi, head)
#else
#define TEST_HOOK(dev, what, qi, head) ((void)0)
#endif

/* ---- device state ------------------------------------------------------------- */

/* True the first time (the caller logs why). */
static bool mark_broken(struct vu_dev *dev)
{
	uint64_t one = 1;

	if (__atomic_exchange_n(&dev->broken, true, __ATOMIC_SEQ_CST))
		return false;
	if (write(dev->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		vu_log(VU_WARN, "cannot wake the vhost-user loop: %s", strerror(errno));
	return true;
}

static void bump_generation(struct vu_dev *dev)
{
	__atomic_add_fetch(&dev->gen, 1, __ATOMIC_SEQ_CST);
}

bool vu_broken(struct vu_dev *dev)
{
	return __atomic_load_n(&dev->broken, __ATOMIC_SEQ_CST);
}

uint32_t vu_generation(struct vu_dev *dev)
{
	return __atomic_load_n(&dev->gen, __ATOMIC_SEQ_CST);
}

bool vu_has_feature(struct vu_dev *dev, unsigned bit)
{
	return bit < 64 && (dev->features & BIT(bit));
}

static struct vu_queue *queue_of(struct vu_dev *dev, unsigned q)
{
	return q < dev->ops->nqueues ? &dev->q[q] : NULL;
}

bool vu_queue_ready(struct vu_dev *dev, unsigned qi)
{
	struct vu_queue *q = queue_of(dev, qi);

	return q && q->state == VU_Q_STARTED && q->enabled && q->desc && dev->conn_fd >= 0 &&
	       !vu_broken(dev);
}

int vu_queue_kick_fd(struct vu_dev *dev, unsigned qi)
{
	struct vu_queue *q = queue_of(dev, qi);

	return q ? q->kick_fd : -1;
}

void *vu_dev_opaque(struct vu_dev *dev)
{
	return dev->opaque;
}

void vu_lock(struct vu_dev *dev)
{
	pthread_mutex_lock(&dev->lock);
}

void vu_unlock(struct vu_dev *dev)
{
	pthread_mutex_unlock(&dev->lock);
}

pthread_mutex_t *vu_mutex(struct vu_dev *dev)
{
	return &dev->lock;
}

/* ---- faults in guest memory --------------------------------------------------- */

/*
 * Guest memory is the frontend's file, mapped shared. A frontend that
 * truncates it after SET_MEM_TABLE (nothing stops it: QEMU's
 * memory-backend-file on /dev/shm has no seals, nor has a memfd without
 * F_SEAL_SHRINK) turns our next access past the new end into SIGBUS, in
 * whichever thread made it: the command thread or the device's event thread.
 * Refusing unsealed regions would refuse QEMU's own memory-backend-file
 * setups (and hugetlbfs running out of pages faults the same way), so the
 * fault is caught instead: every access to guest memory runs under GUARDED,
 * which arms a per-thread sigjmp_buf that the SIGBUS handler jumps back to.
 * The access fails, the device is marked broken with one error line, and the
 * loop drops the frontend and accepts the next one. A SIGBUS outside a guard
 * is our bug: the handler restores the default action and the re-executed
 * access kills the process as it would have without the handler.
 *
 * The guard is sigsetjmp(buf, 0): no signal mask syscall per access;
 * SA_NODEFER keeps SIGBUS unblocked across the jump out of the handler.
 * Nothing between the guard and a guest access takes a lock or allocates
 * in a way a jump could break (the callers' lock stays held and is released
 * by them as usual; a chain's request buffer is freed by the fault path).
 */
static _Thread_local sigjmp_buf *fault_jmp;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *j = fault_jmp;

	(void)si;
	(void)uc;
	if (j) {
		fault_jmp = NULL;
		siglongjmp(*j, 1);
	}
	signal(sig, SIG_DFL);
}

static void sigbus_install(void)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO | SA_NODEFER };

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL))
		vu_log(VU_WARN, "cannot install the SIGBUS handler: %s", strerror(errno));
}

static void guest_fault(struct vu_dev *dev)
{
	if (mark_broken(dev))
		vu_log(VU_ERR, "guest memory access faulted (SIGBUS: the frontend shrank its "
		       "memory file?); dropping the frontend");
}

/* Run stmt (which sets ret) with guest-memory faults caught: ret = fail. */
#define GUARDED(dev, ret, fail, stmt) do {					\
	sigjmp_buf guard_jb_, *guard_prev_ = fault_jmp;				\
	if (sigsetjmp(guard_jb_, 0)) {						\
		fault_jmp = guard_prev_;					\
		guest_fault(dev);						\
		ret = (fail);							\
	} else {								\
		fault_jmp = &guard_jb_;						\
		stmt;								\
		fault_jmp = guard_prev_;					\
	}									\
} while (0)

/* ---- guest memory ------------------------------------------------------------- */

void *vu_gpa_to_va(struct vu_dev *dev, uint64_t gpa, uint64_t *len)
{
	if (vu_broken(dev))
		return NULL;
	for (unsigned i = 0; i < dev->nregions; i++) {
		struct vu_region *rg = &dev->regions[i];

		if (gpa >= rg->gpa && gpa - rg->gpa < rg->size) {
			uint64_t off = gpa - rg->gpa;

			if (*len > rg->size - off)
				*len = rg->size - off;
			return rg->host + off;
		}
	}
	return NULL;
}

/* Host view of [uva, uva + len) of the frontend's address space, all of it
 * inside one region (rings must be contiguous for us). */
static void *uva_to_va(struct vu_dev *dev, uint64_t uva, uint64_t len)
{
	for (unsigned i = 0; i < dev->nregions; i++) {
		struct vu_region *rg = &dev->regions[i];

		if (uva >= rg->uva && uva - rg->uva < rg->size &&
		    len <= rg->size - (uva - rg->uva))
			return rg->host + (uva - rg->uva);
	}
	return NULL;
}

static bool gpa_wraps(uint64_t gpa, uint64_t len)
{
	return len && gpa > UINT64_MAX - (len - 1);
}

/* Walk [gpa, gpa + len) region by region; copy in or out if buf. */
static int gpa_copy(struct vu_dev *dev, uint64_t gpa, void *buf, size_t len, bool to_guest)
{
	size_t done = 0;

	if (gpa_wraps(gpa, len))
		return -EFAULT;
	while (done < len) {
		uint64_t chunk = len - done;
		uint8_t *p = vu_gpa_to_va(dev, gpa + done, &chunk);

		if (!p)
			return -EFAULT;
		if (buf && to_guest)
			memcpy(p, (uint8_t *)buf + done, chunk);
		else if (buf)
			memcpy((uint8_t *)buf + done, p, chunk);
		done += chunk;
	}
	return 0;
}

int vu_gpa_read(struct vu_dev *dev, uint64_t gpa, void *buf, size_t len)
{
	int ret;

	GUARDED(dev, ret, -EFAULT, ret = gpa_copy(dev, gpa, buf, len, false));
	return ret;
}

int vu_gpa_write(struct vu_dev *dev, uint64_t gpa, const void *buf, size_t len)
{
	int ret;

	GUARDED(dev, ret, -EFAULT, ret = gpa_copy(dev, gpa, (void *)buf, len, true));
	return ret;
}

static void region_unmap(struct vu_region *rg)
{
	if (rg->map)
		munmap(rg->map, rg->map_len);
	if (rg->map && rg->fd >= 0)
		close(rg->fd);
	memset(rg, 0, sizeof(*rg));
	rg->fd = -1;
}

static bool regions_overlap(const struct vu_region *a, const struct vu_region *b)
{
	return a->gpa <= b->gpa + (b->size - 1) && b->gpa <= a->gpa + (a->size - 1);
}

/* Check one region from the wire and map it; the fd stays the caller's. */
static int region_map(struct vu_region *rg, const struct vhost_user_mem_region *w, int fd)
{
	uint64_t size = w->memory_size, off = w->mmap_offset;
	struct stat st;
	void *map;

	if (!size || size - 1 > UINT64_MAX - w->guest_phys_addr ||
	    size - 1 > UINT64_MAX - w->userspace_addr || off > UINT64_MAX - size ||
	    off + size > SIZE_MAX) {
		vu_log(VU_WARN, "memory region gpa 0x%llx size 0x%llx uva 0x%llx offset 0x%llx "
		       "is empty or wraps", (unsigned long long)w->guest_phys_addr,
		       (unsigned long long)size, (unsigned long long)w->userspace_addr,
		       (unsigned long long)off);
		return -EINVAL;
	}
	if (fstat(fd, &st) < 0)
		return -errno;
	/* Touching a page past the end of a file is SIGBUS: refuse up front. */
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < off + size) {
		vu_log(VU_WARN, "memory region gpa 0x%llx: its file has %lld bytes, needs %llu",
		       (unsigned long long)w->guest_phys_addr, (long long)st.st_size,
		       (unsigned long long)(off + size));
		return -EINVAL;
	}
	map = mmap(NULL, off + size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (map == MAP_FAILED) {
		int e = errno;

		vu_log(VU_WARN, "cannot map memory region gpa 0x%llx size 0x%llx: %s",
		       (unsigned long long)w->guest_phys_addr, (unsigned long long)size,
		       strerror(e));
		return -e;
	}
	*rg = (struct vu_region){
		.gpa = w->guest_phys_addr, .size = size, .uva = w->userspace_addr,
		.host = (uint8_t *)map + off, .map = map, .map_len = off + size,
		/* kept for linear views; without one, views are refused */
		.fd = CONFIG_VUV_ZERO_COPY ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : -1,
		.foff = off,
	};
	return 0;
}

/* ---- linear views of guest memory ----------------------------------------------
 *
 * The pieces of a guest buffer mapped at consecutive host addresses, for a
 * driver that takes one user pointer (V4L2 USERPTR). Each piece is mapped
 * from the region's file with MAP_FIXED into a PROT_NONE reservation, so a
 * piece must start on a page boundary of the file and of the view, except
 * the first (which may start inside its page), and end on one, except the
 * last (its page is mapped whole, and must be guest memory too). The view
 * maps nothing the entries do not name beyond the partial first and last
 * pages, and those only inside the same region.
 *
 * A change of the memory table (SET_MEM_TABLE, REM_MEM_REG, disconnect)
 * invalidates every view: its pages are replaced by PROT_NONE at once, but
 * the address range stays reserved until the owner frees the view, so that
 * no later mapping reuses the addresses while a driver may still remember
 * them (vb2 keeps a USERPTR buffer pinned, keyed by address, until that
 * buffer is queued with another address or freed).
 */

#define VU_VIEW_MAX_LEN (1ull << 30)
#define VU_VIEW_MAX_MAPS 4096u

static size_t page_size(void)
{
	long pg = sysconf(_SC_PAGESIZE);

	return pg > 0 ? (size_t)pg : 4096;
}

static struct vu_region *region_of(struct vu_dev *dev, uint64_t gpa)
{
	for (unsigned i = 0; i < dev->nregions; i++)
		if (gpa >= dev->regions[i].gpa && gpa - dev->regions[i].gpa < dev->regions[i].size)
			return &dev->regions[i];
	return NULL;
}

/* One mmap of the view being built: file pages of rg from foff for len
 * bytes at view offset at (all page-aligned). */
struct view_map {
	const struct vu_region *rg;
	uint64_t foff;
	size_t at, len;
};

static int view_map_flush(struct vu_view *v, struct view_map *m, unsigned *nmaps)
{
	void *a;

	if (!m->len)
		return 0;
	if (++*nmaps > VU_VIEW_MAX_MAPS)
		return -E2BIG;
	a = mmap(v->base + m->at, m->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		 m->rg->fd, (off_t)m->foff);
	if (a == MAP_FAILED)
		return -errno;
	m->len = 0;
	return 0;
}

/* Add [gpa, gpa + len), inside region rg, at view offset at; merged with the
 * previous mmap when it continues it in the same file. */
static int view_add(struct vu_view *v, struct view_map *m, unsigned *nmaps,
		    const struct vu_region *rg, uint64_t gpa, size_t len, size_t at, size_t pg)
{
	uint64_t foff = rg->foff + (gpa - rg->gpa), fstart = foff & ~(uint64_t)(pg - 1);
	uint64_t rend = rg->foff + rg->size, fend;
	size_t astart = at & ~(pg - 1);
	int r;

	if ((foff & (pg - 1)) != (at & (pg - 1)) || fstart < rg->foff)
		return -ENOTSUP;
	fend = (foff + len + pg - 1) & ~(uint64_t)(pg - 1);
	if (fend > rend)
		return -ENOTSUP;	/* the last page is not all guest memory */
	if (m->len && m->rg->fd == rg->fd && m->foff + m->len == fstart && m->at + m->len == astart) {
		m->len += (size_t)(fend - fstart);
		return 0;
	}
	r = view_map_flush(v, m, nmaps);
	if (r)
		return r;
	*m = (struct view_map){ rg, fstart, astart, (size_t)(fend - fstart) };
	return 0;
}

/* Lay the pieces out (first pass: checks only, base NULL) or map them. */
static int view_build(struct vu_dev *dev, struct vu_view *v, const struct vu_seg *seg, unsigned n,
		      size_t pg)
{
	struct view_map m = { 0 };
	unsigned nmaps = 0;
	size_t at = v->head;
	int r;

	for (unsigned i = 0; i < n; i++) {
		uint64_t gpa = seg[i].gpa, left = seg[i].len;

		while (left) {
			struct vu_region *rg = region_of(dev, gpa);
			uint64_t chunk;

			if (!rg || rg->fd < 0)
				return rg ? -ENOTSUP : -EFAULT;
			chunk = rg->size - (gpa - rg->gpa);
			if (chunk > left)
				chunk = left;
			/* a piece after the first starts on a page boundary,
			 * and so the one before it ended on one */
			if (at != v->head && (at & (pg - 1)))
				return -ENOTSUP;
			if (v->base)
				r = view_add(v, &m, &nmaps, rg, gpa, (size_t)chunk, at, pg);
			else
				r = ((rg->foff + (gpa - rg->gpa)) & (pg - 1)) != (at & (pg - 1)) ? -ENOTSUP : 0;
			if (r)
				return r;
			at += (size_t)chunk;
			gpa += chunk;
			left -= chunk;
		}
	}
	return v->base ? view_map_flush(v, &m, &nmaps) : 0;
}

int vu_view_new(struct vu_dev *dev, const struct vu_seg *seg, unsigned n, struct vu_view **out)
{
	size_t pg = page_size();
	struct vu_view *v;
	uint64_t total = 0;
	struct vu_region *rg;
	int r;

	*out = NULL;
	if (!CONFIG_VUV_ZERO_COPY)
		return -ENOTSUP;
	if (vu_broken(dev) || !n)
		return -EFAULT;
	for (unsigned i = 0; i < n; i++) {
		if (!seg[i].len || gpa_wraps(seg[i].gpa, seg[i].len))
			return -EFAULT;
		total += seg[i].len;
		if (total > VU_VIEW_MAX_LEN)
			return -E2BIG;
	}
	rg = region_of(dev, seg[0].gpa);
	if (!rg)
		return -EFAULT;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->head = (size_t)((rg->foff + (seg[0].gpa - rg->gpa)) & (pg - 1));
	v->len = (size_t)total;
	v->res_len = (v->head + v->len + pg - 1) & ~(pg - 1);
	r = view_build(dev, v, seg, n, pg);
	if (r)
		goto err_free;
	v->base = mmap(NULL, v->res_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (v->base == MAP_FAILED) {
		r = -errno;
		goto err_free;
	}
	r = view_build(dev, v, seg, n, pg);
	if (r)
		goto err_unmap;
	v->valid = true;
	v->next = dev->views;
	dev->views = v;
	*out = v;
	return 0;
err_unmap:
	munmap(v->base, v->res_len);
err_free:
	free(v);
	return r;
}

void *vu_view_addr(const struct vu_view *v)
{
	return v->base + v->head;
}

size_t vu_view_len(const struct vu_view *v)
{
	return v->len;
}

bool vu_view_valid(const struct vu_view *v)
{
	return v && v->valid;
}

void vu_view_free(struct vu_dev *dev, struct vu_view *v)
{
	if (!v)
		return;
	for (struct vu_view **pp = &dev->views; *pp; pp = &(*pp)->next)
		if (*pp == v) {
			*pp = v->next;
			break;
		}
	munmap(v->base, v->res_len);
	free(v);
}

/* The memory table changes: no view may show the old memory. The address
 * ranges stay reserved (see above). */
static void views_invalidate(struct vu_dev *dev)
{
	for (struct vu_view *v = dev->views; v; v = v->next) {
		if (!v->valid)
			continue;
		if (mmap(v->base, v->res_len, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED)
			vu_log(VU_WARN, "cannot unmap a linear view: %s", strerror(errno));
		v->valid = false;
	}
}

/* ---- DMABUF over guest memory ------------------------------------------------- */

/* udmabuf (drivers/dma-buf/udmabuf.c) takes pages of a shmem or hugetlbfs
 * file only, and only while it cannot shrink under the buffer: F_SEAL_SHRINK
 * set, F_SEAL_WRITE and F_SEAL_FUTURE_WRITE clear (the device writes into it). */
const char *vu_memfd_unfit(int fd)
{
	int seals;

	/* (QEMU: memory-backend-file, e.g. on /dev/shm, has no seals and
	 * cannot get any; memory-backend-memfd seals by default, seal=on) */
	seals = fd < 0 ? -1 : fcntl(fd, F_GET_SEALS);
	if (seals < 0)
		return "guest memory is not a memfd";
	if (!(seals & F_SEAL_SHRINK))
		return "guest memory is not sealed with F_SEAL_SHRINK (QEMU: memory-backend-memfd)";
	if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
		return "guest memory is sealed against writes";
	return NULL;
}

/* Append [off, off + len) of rg's file to items, merging with the last item
 * when it ends where this begins in the same file. */
static int dmabuf_item_add(struct udmabuf_create_item *items, unsigned *n, unsigned max,
			   const struct vu_region *rg, uint64_t off, uint64_t len)
{
	struct udmabuf_create_item *last = *n ? &items[*n - 1] : NULL;

	if (last && last->memfd == (uint32_t)rg->fd && last->offset + last->size == off) {
		last->size += len;
		return 0;
	}
	if (*n == max)
		return -E2BIG;
	items[(*n)++] = (struct udmabuf_create_item){ .memfd = (uint32_t)rg->fd,
						      .offset = off, .size = len };
	return 0;
}

int vu_dmabuf_items(struct vu_dev *dev, const struct vu_seg *segs, unsigned n,
		    struct udmabuf_create_item *items, unsigned max, const char **why)
{
	static const char outside[] = "an entry is outside guest memory";
	uint64_t page = page_size();
	unsigned count = 0;

	*why = "not built";
	if (!CONFIG_VUV_DMABUF)
		return -EOPNOTSUPP;
	*why = "empty";
	if (!n || vu_broken(dev))
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		uint64_t gpa = segs[i].gpa, left = segs[i].len;

		/* The last entry may end inside its page (a guest's buffer is
		 * sized to the frame): the dmabuf takes the whole page, which
		 * must be guest memory too; the device is told the real length. */
		if (i == n - 1 && left % page && left <= UINT64_MAX - page)
			left += page - left % page;
		if (!left || gpa % page || left % page)
			return *why = "an entry is empty or not page-aligned", -EINVAL;
		if (gpa_wraps(gpa, left))
			return *why = outside, -EFAULT;
		/* A range may span adjacent regions: one item per region. */
		while (left) {
			const struct vu_region *rg = region_of(dev, gpa);
			uint64_t off, chunk;

			if (!rg)
				return *why = outside, -EFAULT;
			off = rg->foff + (gpa - rg->gpa);
			chunk = rg->size - (gpa - rg->gpa);
			if (chunk > left)
				chunk = left;
			if (off % page || chunk % page)
				return *why = "a region is not page-aligned in its file", -EINVAL;
			if ((*why = vu_memfd_unfit(rg->fd)))
				return -EPERM;
			if (dmabuf_item_add(items, &count, max, rg, off, chunk))
				return *why = "too many pieces", -E2BIG;
			gpa += chunk;
			left -= chunk;
		}
	}
	*why = NULL;
	return (int)count;
}

/* /dev/udmabuf, opened on first use and kept. Guarded by the device lock
 * (the daemon has one device). */
static int udmabuf_fd = -1;

int vu_dmabuf_create(struct vu_dev *dev, const struct vu_seg *segs, unsigned n, const char **why)
{
	struct udmabuf_create_list *req;
	int count, fd;

	*why = "too many pieces";
	if (n > VU_DMABUF_MAX_ITEMS)
		return -E2BIG;
	req = malloc(sizeof(*req) + VU_DMABUF_MAX_ITEMS * sizeof(req->list[0]));
	if (!req)
		return -ENOMEM;
	fd = count = vu_dmabuf_items(dev, segs, n, req->list, VU_DMABUF_MAX_ITEMS, why);
	if (count < 0)
		goto out_free;
	/* (ENOENT: a host kernel without CONFIG_UDMABUF) */
	*why = "/dev/udmabuf";
	if (udmabuf_fd < 0)
		udmabuf_fd = open(*why, O_RDWR | O_CLOEXEC);
	req->flags = UDMABUF_FLAGS_CLOEXEC;
	req->count = (uint32_t)count;
	fd = udmabuf_fd < 0 ? -1 : ioctl(udmabuf_fd, UDMABUF_CREATE_LIST, req);
	if (fd < 0)
		fd = -errno;
	else
		*why = NULL;
out_free:
	free(req);
	return fd;
}

/* ---- rings -------------------------------------------------------------------- */

static uint16_t load16(const uint16_t *p)
{
	return le16toh(__atomic_load_n(p, __ATOMIC_RELAXED));
}

static void store16(uint16_t *p, uint16_t v)
{
	__atomic_store_n(p, htole16(v), __ATOMIC_RELAXED);
}

/* used_event lives after avail->ring[num], avail_event after used->ring[num]. */
static uint16_t *used_event_ptr(struct vu_queue *q)
{
	return &q->avail->ring[q->num];
}

static uint16_t *avail_event_ptr(struct vu_queue *q)
{
	return (uint16_t *)&q->used->ring[q->num];
}

/* Translate the ring's three areas, each whole inside one region and
 * aligned as virtio 1.x requires (desc 16, avail 2, used 4). */
static int vq_map(struct vu_dev *dev, struct vu_queue *q)
{
	void *d, *a, *u;

	q->desc = NULL;
	q->avail = NULL;
	q->used = NULL;
	if (!q->addr_set || !q->num)
		return -EINVAL;
	d = uva_to_va(dev, q->desc_uva, 16ull * q->num);
	a = uva_to_va(dev, q->avail_uva, 6 + 2ull * q->num);
	u = uva_to_va(dev, q->used_uva, 6 + 8ull * q->num);
	if (!d || !a || !u)
		return -EFAULT;
	if ((uintptr_t)d % 16 || (uintptr_t)a % 2 || (uintptr_t)u % 4)
		return -EINVAL;
	q->desc = d;
	q->avail = a;
	q->used = u;
	return 0;
}

static void vq_resume(struct vu_dev *dev, unsigned qi);

/* After the memory table changed: rings must be looked up again (and one
 * that is back in guest memory gets what was answered meanwhile). */
static void vq_remap_all(struct vu_dev *dev)
{
	for (unsigned i = 0; i < dev->ops->nqueues; i++) {
		struct vu_queue *q = &dev->q[i];

		if (q->addr_set && vq_map(dev, q) && q->state == VU_Q_STARTED)
			vu_log(VU_WARN, "queue %u: ring no longer in guest memory; queue idle", i);
		vq_resume(dev, i);
	}
}

static void vq_stop(struct vu_queue *q)
{
	if (q->state != VU_Q_STARTED)
		return;
	q->state = VU_Q_STOPPED;
	q->was_stopped = true;
	q->stopped = (struct vu_ring_sig){ q->desc_uva, q->avail_uva, q->used_uva, q->num,
					   q->last_avail, q->used_idx };
}

static void vq_drop_done(struct vu_queue *q)
{
	for (unsigned i = 0; i < q->n_done; i++)
		free(q->done[i].resp);
	q->n_done = 0;
}

static void vq_clear(struct vu_queue *q)
{
	vq_drop_done(q);
	free(q->done);
	close_fd(&q->kick_fd);
	close_fd(&q->call_fd);
	close_fd(&q->err_fd);
	*q = (struct vu_queue){ .kick_fd = -1, .call_fd = -1, .err_fd = -1 };
}

/* A resume finds the ring where it was stopped, used index included (the
 * driver never writes it; a re-created ring starts at 0 from zeroed memory). */
static bool vq_same_ring(const struct vu_queue *q, const struct vu_ring_sig *was)
{
	return q->desc_uva == was->desc && q->avail_uva == was->avail &&
	       q->used_uva == was->used && q->num == was->num && q->last_avail == was->base &&
	       load16(&q->used->idx) == was->used_idx;
}

static int vq_start(struct vu_dev *dev, struct vu_queue *q, unsigned qi)
{
	if (q->state == VU_Q_STARTED)
		return 0;
	if (vq_map(dev, q)) {
		vu_log(VU_WARN, "queue %u: kicked without a valid ring (size and addresses)", qi);
		return -EINVAL;
	}
	if (q->was_stopped && !vq_same_ring(q, &q->stopped)) {
		vu_log(VU_DEBUG, "queue %u: ring re-created; chains popped before and %u answers "
		       "kept for it are dropped", qi, q->n_done);
		vq_drop_done(q);
		bump_generation(dev);
		/* Without STATUS this is how a guest reset (reboot, driver
		 * reload) shows: the device must forget its streams too. */
		dev->forget_device = true;
	}
	q->was_stopped = false;
	q->used_idx = load16(&q->used->idx);
	q->signalled_valid = false;
	if (vu_has_feature(dev, VIRTIO_RING_F_EVENT_IDX))
		store16(avail_event_ptr(q), q->last_avail);	/* kick me at the next one */
	q->state = VU_Q_STARTED;
	/* vhost-user.rst: without PROTOCOL_FEATURES a ring is enabled on start. */
	if (!vu_has_feature(dev, VHOST_USER_F_PROTOCOL_FEATURES))
		q->enabled = true;
	vu_log(VU_DEBUG, "queue %u: started, size %u, avail %u, used %u", qi, q->num,
	       q->last_avail, q->used_idx);
	return 0;
}

static void push_used(struct vu_queue *q, uint16_t head, uint32_t len)
{
	struct vring_used_elem *e = &q->used->ring[q->used_idx % q->num];

	__atomic_store_n(&e->id, htole32(head), __ATOMIC_RELAXED);
	__atomic_store_n(&e->len, htole32(len), __ATOMIC_RELAXED);
	q->used_idx++;
	/* The element must be visible before the index that publishes it. */
	__atomic_store_n(&q->used->idx, htole16(q->used_idx), __ATOMIC_RELEASE);
}

static bool chain_bad(const char **why, const char *what)
{
	*why = what;
	return false;
}

static bool req_append(struct vu_dev *dev, struct vu_chain *c, size_t *cap, uint64_t gpa,
		       uint32_t len, const char **why)
{
	if (len > VU_CHAIN_MAX_REQ - c->req_len)
		return chain_bad(why, "more readable bytes than a request may have");
	if (c->req_len + len > *cap) {
		size_t n = *cap ? *cap * 2 : 256;
		uint8_t *p;

		while (n < c->req_len + len)
			n *= 2;
		if (n > VU_CHAIN_MAX_REQ)
			n = VU_CHAIN_MAX_REQ;
		p = realloc(c->req, n);
		if (!p)
			return chain_bad(why, "out of memory");
		c->req = p;
		*cap = n;
	}
	if (vu_gpa_read(dev, gpa, c->req + c->req_len, len))
		return chain_bad(why, "readable buffer outside guest memory");
	c->req_len += len;
	return true;
}

/*
 * Walk the chain at c->head (virtio 1.x 2.7.5): copy readable bytes out,
 * record writable pieces. Every descriptor is copied to a local once; the
 * compiler barrier keeps the compiler from reading guest memory again.
 */
static bool chain_walk(struct vu_dev *dev, struct vu_queue *q, struct vu_chain *c,
		       const char **why)
{
	unsigned max = q->num, i = c->head, count = 0;
	uint64_t table = 0;
	bool indirect = false, seen_wr = false;
	size_t cap = 0;

	for (;;) {
		struct vring_desc d;
		uint64_t addr;
		uint32_t len;
		uint16_t flags;

		if (++count > max)
			return chain_bad(why, "descriptor loop (longer than its table)");
		if (!indirect)
			memcpy(&d, &q->desc[i], sizeof(d));
		else if (vu_gpa_read(dev, table + 16ull * i, &d, sizeof(d)))
			return chain_bad(why, "indirect table outside guest memory");
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		addr = le64toh(d.addr);
		len = le32toh(d.len);
		flags = le16toh(d.flags);

		if (flags & VRING_DESC_F_INDIRECT) {
			if (!vu_has_feature(dev, VIRTIO_RING_F_INDIRECT_DESC))
				return chain_bad(why, "indirect descriptor without INDIRECT_DESC");
			if (indirect)
				return chain_bad(why, "nested indirect table");
			if (flags & VRING_DESC_F_NEXT)
				return chain_bad(why, "indirect descriptor with NEXT");
			if (!len || len % 16 || len / 16 > VU_MAX_INDIRECT)
				return chain_bad(why, "indirect table length not a multiple of 16 "
						 "or out of range");
			if (gpa_wraps(addr, len))
				return chain_bad(why, "indirect table wraps around");
			indirect = true;
			table = addr;
			max = len / 16;
			i = 0;
			count = 0;
			continue;
		}
		if (gpa_wraps(addr, len))
			return chain_bad(why, "buffer address wraps around");
		if (flags & VRING_DESC_F_WRITE) {
			seen_wr = true;
			if (len && c->n_wr == VU_CHAIN_MAX_WR)
				return chain_bad(why, "too many writable descriptors");
			if (len && (gpa_copy(dev, addr, NULL, len, false) ||
				    len > SIZE_MAX - c->wr_len))
				return chain_bad(why, "writable buffer outside guest memory");
			if (len) {
				c->wr[c->n_wr++] = (struct vu_seg){ addr, len };
				c->wr_len += len;
			}
		} else if (seen_wr) {
			return chain_bad(why, "readable descriptor after a writable one");
		} else if (len && !req_append(dev, c, &cap, addr, len, why)) {
			return false;
		}
		if (!(flags & VRING_DESC_F_NEXT))
			return true;
		i = le16toh(d.next);
		if (i >= max)
			return chain_bad(why, "next index out of range");
	}
}

static int queue_pop(struct vu_dev *dev, unsigned qi, struct vu_chain *c)
{
	struct vu_queue *q = queue_of(dev, qi);
	uint16_t avail_idx, n, head;
	const char *why = NULL;
	unsigned missed;
	char note[48];

	if (vu_broken(dev))
		return -EIO;
	if (!vu_queue_ready(dev, qi))
		return -EAGAIN;
	/* Orders our last avail_event store before the index load: a guest
	 * that added a buffer after our load then sees the new avail_event. */
	if (vu_has_feature(dev, VIRTIO_RING_F_EVENT_IDX))
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	avail_idx = le16toh(__atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE));
	n = avail_idx - q->last_avail;
	if (n > q->num) {
		vu_log(VU_ERR, "queue %u: avail index %u is %u entries past %u on a ring of %u; "
		       "ring broken", qi, avail_idx, n, q->last_avail, q->num);
		mark_broken(dev);
		return -EIO;
	}
	if (!n)
		return -EAGAIN;
	head = load16(&q->avail->ring[q->last_avail % q->num]);
	if (head >= q->num) {
		vu_log(VU_ERR, "queue %u: avail ring entry %u is head %u, ring size %u; ring broken",
		       qi, q->last_avail, head, q->num);
		mark_broken(dev);
		return -EIO;
	}
	q->last_avail++;
	if (vu_has_feature(dev, VIRTIO_RING_F_EVENT_IDX))
		store16(avail_event_ptr(q), q->last_avail);

	c->queue = qi;
	c->head = head;
	c->gen = vu_generation(dev);
	if (chain_walk(dev, q, c, &why)) {
		vu_log(VU_TRACE, "queue %u: chain %u: %zu bytes in, %zu bytes writable in %u pieces",
		       qi, head, c->req_len, c->wr_len, c->n_wr);
		return 0;
	}
	free(c->req);
	memset(c, 0, sizeof(*c));
	c->queue = UINT16_MAX;
	push_used(q, head, 0);
	TEST_HOOK(dev, VU_HOOK_MALFORMED, qi, head);
	if (rl_allow(&dev->rl_chain, &missed))
		vu_log(VU_WARN, "queue %u: malformed descriptor chain at head %u: %s; returned "
		       "unused%s", qi, head, why, rl_note(missed, note, sizeof(note)));
	return -EINVAL;
}

int vu_queue_pop(struct vu_dev *dev, unsigned qi, struct vu_chain *c)
{
	int ret;

	memset(c, 0, sizeof(*c));
	GUARDED(dev, ret, -EIO, ret = queue_pop(dev, qi, c));
	if (ret == -EIO) {
		free(c->req);		/* a fault may leave a half-copied request */
		memset(c, 0, sizeof(*c));
		c->queue = UINT16_MAX;
	}
	return ret;
}

void vu_chain_release(struct vu_chain *c)
{
	free(c->req);
	c->req = NULL;
	c->req_len = 0;
	c->n_wr = 0;
	c->queue = UINT16_MAX;		/* a second respond/release is harmless */
}

/* Scatter resp into the writable pieces and publish the chain. The used
 * length is what was written: 0 if it does not fit or a piece is gone. */
static int chain_complete(struct vu_dev *dev, struct vu_queue *q, uint16_t head,
			  const struct vu_seg *wr, unsigned n_wr, bool fits, const void *resp,
			  size_t len)
{
	int ret = fits ? 0 : -ENOSPC;
	size_t off = 0;

	for (unsigned i = 0; fits && i < n_wr && off < len && !ret; i++) {
		size_t chunk = len - off < wr[i].len ? len - off : wr[i].len;

		ret = gpa_copy(dev, wr[i].gpa, (uint8_t *)resp + off, chunk, true);
		off += chunk;
	}
	push_used(q, head, fits && !ret ? (uint32_t)len : 0);
	TEST_HOOK(dev, VU_HOOK_USED, (unsigned)(q - dev->q), head);
	return ret;
}

/*
 * The chain's ring is not running (disabled, or stopped by GET_VRING_BASE:
 * QEMU's `stop`). The answer is kept, and guest memory left alone as a
 * suspended device must (vhost-user.rst, Suspended device state), until the
 * same ring runs again (vq_resume). A valid driver has at most a ring's worth
 * of buffers out; answers beyond that are dropped.
 */
static int chain_defer(struct vu_dev *dev, struct vu_queue *q, const struct vu_chain *c,
		       bool fits, const void *resp, size_t len)
{
	struct vu_done *d;
	uint8_t *copy = NULL;

	if (q->n_done == q->cap_done) {
		unsigned n = q->cap_done ? q->cap_done * 2 : 8;
		struct vu_done *p;

		if (n > q->num)
			n = q->num;
		p = n > q->cap_done ? realloc(q->done, n * sizeof(*p)) : NULL;
		if (!p) {
			vu_log(VU_WARN, "queue %u: %u answers already wait for the ring to run; "
			       "chain %u dropped", c->queue, q->n_done, c->head);
			TEST_HOOK(dev, VU_HOOK_DROPPED, c->queue, c->head);
			return 0;
		}
		q->done = p;
		q->cap_done = n;
	}
	if (fits && len && !(copy = malloc(len))) {
		vu_log(VU_WARN, "queue %u: out of memory; chain %u dropped", c->queue, c->head);
		TEST_HOOK(dev, VU_HOOK_DROPPED, c->queue, c->head);
		return 0;
	}
	if (copy)
		memcpy(copy, resp, len);
	d = &q->done[q->n_done++];
	*d = (struct vu_done){ .gen = c->gen, .head = c->head, .fits = fits, .n_wr = c->n_wr,
			       .resp = copy, .len = fits ? len : 0 };
	memcpy(d->wr, c->wr, c->n_wr * sizeof(c->wr[0]));
	TEST_HOOK(dev, VU_HOOK_DEFERRED, c->queue, c->head);
	vu_log(VU_DEBUG, "queue %u: chain %u answered while the ring is stopped; kept",
	       c->queue, c->head);
	return fits ? 0 : -ENOSPC;
}

static int chain_respond(struct vu_dev *dev, struct vu_chain *c, const void *resp, size_t len)
{
	struct vu_queue *q = queue_of(dev, c->queue);
	bool fits = len <= c->wr_len && len <= UINT32_MAX;

	if (!q || c->gen != vu_generation(dev) || dev->conn_fd < 0 || vu_broken(dev) ||
	    c->head >= q->num) {
		vu_log(VU_TRACE, "queue %u: stale chain %u dropped", c->queue, c->head);
		return 0;
	}
	if (!vu_queue_ready(dev, c->queue))
		return chain_defer(dev, q, c, fits, resp, len);
	return chain_complete(dev, q, c->head, c->wr, c->n_wr, fits, resp, len);
}

int vu_chain_respond(struct vu_dev *dev, struct vu_chain *c, const void *resp, size_t len)
{
	int ret;

	GUARDED(dev, ret, -EFAULT, ret = chain_respond(dev, c, resp, len));
	vu_chain_release(c);
	return ret;
}

/* virtio 1.x 2.7.10: notify when new_idx has passed event since old. */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

static bool vq_should_notify(struct vu_dev *dev, struct vu_queue *q)
{
	uint16_t old = q->signalled_used, new_idx = q->used_idx;
	bool valid = q->signalled_valid;

	if (valid && old == new_idx)
		return false;		/* nothing used since the last notification */
	q->signalled_used = new_idx;
	q->signalled_valid = true;
	/* Our used->idx store must be visible before we read the guest's
	 * suppression word (store -> load: a full fence). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (vu_has_feature(dev, VIRTIO_RING_F_EVENT_IDX))
		return !valid || need_event(load16(used_event_ptr(q)), new_idx, old);
	if (vu_has_feature(dev, VIRTIO_F_NOTIFY_ON_EMPTY) &&
	    le16toh(__atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE)) == q->last_avail)
		return true;
	return !(load16(&q->avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
}

static int queue_notify(struct vu_dev *dev, unsigned qi)
{
	struct vu_queue *q = queue_of(dev, qi);
	uint64_t one = 1;
	unsigned missed;

	if (!vu_queue_ready(dev, qi) || q->call_fd < 0 || !vq_should_notify(dev, q))
		return 0;
	if (write(q->call_fd, &one, sizeof(one)) < 0 && errno != EAGAIN &&
	    rl_allow(&dev->rl_call, &missed))
		vu_log(VU_WARN, "queue %u: cannot signal the call eventfd: %s", qi, strerror(errno));
	return 0;
}

void vu_queue_notify(struct vu_dev *dev, unsigned qi)
{
	int ret;

	GUARDED(dev, ret, -EFAULT, ret = queue_notify(dev, qi));
	(void)ret;
}

/* The ring runs again: deliver what was answered while it was stopped, in
 * order, then notify. Called from the handlers that make a ring ready. */
static void vq_resume(struct vu_dev *dev, unsigned qi)
{
	struct vu_queue *q = &dev->q[qi];
	unsigned n = q->n_done, sent = 0;

	if (!n || !vu_queue_ready(dev, qi))
		return;
	for (unsigned i = 0; i < n; i++) {
		struct vu_done *d = &q->done[i];

		/* Another ring re-created meanwhile reset the device: the chain is
		 * as stale as any other of that generation. */
		if (d->gen == vu_generation(dev) && d->head < q->num) {
			chain_complete(dev, q, d->head, d->wr, d->n_wr, d->fits, d->resp, d->len);
			sent++;
		} else {
			TEST_HOOK(dev, VU_HOOK_DROPPED, qi, d->head);
		}
		free(d->resp);
		d->resp = NULL;		/* a fault mid-way leaves the rest to vq_clear */
	}
	q->n_done = 0;
	vu_log(VU_DEBUG, "queue %u: %u answers made while it was stopped delivered, %u stale "
	       "dropped", qi, sent, n - sent);
	queue_notify(dev, qi);
}

/* ---- message handlers (lock held) --------------------------------------------- */

static void reply_u64(struct vu_ctx *x, uint64_t v)
{
	x->r->p.u64 = v;
	x->r->hdr.size = sizeof(uint64_t);
	x->has_reply = true;
}

/* The ring index of a vring message, or NULL after a warning. */
static struct vu_queue *msg_queue(struct vu_ctx *x, uint32_t index)
{
	struct vu_queue *q = queue_of(x->dev, index);

	if (!q)
		vu_log(VU_WARN, "%s: ring %u does not exist (%u rings)", x->name, index,
		       x->dev->ops->nqueues);
	return q;
}

static uint64_t offered_features(struct vu_dev *dev)
{
	return VU_TRANSPORT_FEATURES | dev->ops->features;
}

static int h_get_features(struct vu_ctx *x)
{
	reply_u64(x, offered_features(x->dev));
	return 0;
}

static int h_set_features(struct vu_ctx *x)
{
	uint64_t v = x->m->p.u64, extra = v & ~offered_features(x->dev);

	if (extra) {
		vu_log(VU_WARN, "SET_FEATURES: bits 0x%llx were not offered; refused",
		       (unsigned long long)extra);
		return -EINVAL;
	}
	x->dev->features = v;
	vu_log(VU_DEBUG, "features 0x%llx", (unsigned long long)v);
	return 0;
}

static int h_set_owner(struct vu_ctx *x)
{
	(void)x;
	return 0;
}

/* RESET_OWNER and RESET_DEVICE: rings stop now, the device forgets its
 * state (ops->reset, after the handler, unlocked), then the rings are
 * cleared. The memory table and negotiated features stay. */
static int h_reset(struct vu_ctx *x)
{
	bump_generation(x->dev);
	for (unsigned i = 0; i < x->dev->ops->nqueues; i++)
		vq_stop(&x->dev->q[i]);
	x->reset = true;
	return 0;
}

static int h_get_protocol_features(struct vu_ctx *x)
{
	reply_u64(x, VU_PROTOCOL_FEATURES);
	return 0;
}

static int h_set_protocol_features(struct vu_ctx *x)
{
	uint64_t v = x->m->p.u64, extra = v & ~(uint64_t)VU_PROTOCOL_FEATURES;

	if (extra) {
		vu_log(VU_WARN, "SET_PROTOCOL_FEATURES: bits 0x%llx were not offered; refused",
		       (unsigned long long)extra);
		return -EINVAL;
	}
	x->dev->protocol_features = v;
	return 0;
}

static int h_get_queue_num(struct vu_ctx *x)
{
	reply_u64(x, x->dev->ops->nqueues);
	return 0;
}

static int h_get_max_mem_slots(struct vu_ctx *x)
{
	reply_u64(x, VU_MAX_MEM_SLOTS);
	return 0;
}

static int h_set_mem_table(struct vu_ctx *x)
{
	struct vu_dev *dev = x->dev;
	struct vhost_user_mem_table *t = &x->m->p.mem;
	struct vu_region nr[VU_MAX_MEM_TABLE_REGIONS], old[VU_MAX_MEM_SLOTS];
	unsigned n, nold = dev->nregions;
	int ret = 0;

	if (x->m->hdr.size < 8)
		return proto_error("SET_MEM_TABLE: payload of %u bytes", x->m->hdr.size);
	n = t->nregions;
	if (!n || n > VU_MAX_MEM_TABLE_REGIONS)
		return proto_error("SET_MEM_TABLE: %u regions (1 to %u)", n,
				   VU_MAX_MEM_TABLE_REGIONS);
	if (x->m->hdr.size != 8 + 32 * n || x->m->nfds != n)
		return proto_error("SET_MEM_TABLE: %u regions in %u bytes with %u fds", n,
				   x->m->hdr.size, x->m->nfds);
	for (unsigned i = 0; i < n; i++) {
		ret = region_map(&nr[i], &t->regions[i], x->m->fds[i]);
		for (unsigned j = 0; !ret && j < i; j++)
			if (regions_overlap(&nr[i], &nr[j])) {
				vu_log(VU_WARN, "SET_MEM_TABLE: regions %u and %u overlap", j, i);
				region_unmap(&nr[i]);
				ret = -EINVAL;
			}
		if (ret) {
			while (i--)
				region_unmap(&nr[i]);
			return ret;
		}
	}
	/* The new table is complete: switch, then unmap the old one. */
	views_invalidate(dev);
	memcpy(old, dev->regions, nold * sizeof(old[0]));
	memcpy(dev->regions, nr, n * sizeof(nr[0]));
	dev->nregions = n;
	vq_remap_all(dev);
	for (unsigned i = 0; i < nold; i++)
		region_unmap(&old[i]);
	for (unsigned i = 0; i < n; i++)
		vu_log(VU_DEBUG, "region %u: gpa 0x%llx size 0x%llx uva 0x%llx", i,
		       (unsigned long long)nr[i].gpa, (unsigned long long)nr[i].size,
		       (unsigned long long)nr[i].uva);
	return 0;
}

static int h_add_mem_reg(struct vu_ctx *x)
{
	struct vu_dev *dev = x->dev;
	struct vu_region rg;
	int ret;

	if (dev->nregions == VU_MAX_MEM_SLOTS) {
		vu_log(VU_WARN, "ADD_MEM_REG: all %u slots in use", VU_MAX_MEM_SLOTS);
		return -ENOSPC;
	}
	ret = region_map(&rg, &x->m->p.reg.region, x->m->fds[0]);
	if (ret)
		return ret;
	for (unsigned i = 0; i < dev->nregions; i++)
		if (regions_overlap(&rg, &dev->regions[i])) {
			vu_log(VU_WARN, "ADD_MEM_REG: gpa 0x%llx size 0x%llx overlaps region %u",
			       (unsigned long long)rg.gpa, (unsigned long long)rg.size, i);
			region_unmap(&rg);
			return -EINVAL;
		}
	dev->regions[dev->nregions++] = rg;
	vq_remap_all(dev);
	vu_log(VU_DEBUG, "region added: gpa 0x%llx size 0x%llx", (unsigned long long)rg.gpa,
	       (unsigned long long)rg.size);
	return 0;
}

static int h_rem_mem_reg(struct vu_ctx *x)
{
	struct vu_dev *dev = x->dev;
	const struct vhost_user_mem_region *w = &x->m->p.reg.region;

	for (unsigned i = 0; i < dev->nregions; i++) {
		struct vu_region *rg = &dev->regions[i];

		if (rg->gpa != w->guest_phys_addr || rg->size != w->memory_size ||
		    rg->uva != w->userspace_addr)
			continue;
		views_invalidate(dev);
		region_unmap(rg);
		memmove(rg, rg + 1, (dev->nregions - i - 1) * sizeof(*rg));
		dev->nregions--;
		vq_remap_all(dev);
		return 0;
	}
	vu_log(VU_WARN, "REM_MEM_REG: no region at gpa 0x%llx size 0x%llx",
	       (unsigned long long)w->guest_phys_addr, (unsigned long long)w->memory_size);
	return -ENOENT;
}

static int h_set_vring_num(struct vu_ctx *x)
{
	struct vu_queue *q = msg_queue(x, x->m->p.state.index);
	uint32_t num = x->m->p.state.num;

	if (!q)
		return -EINVAL;
	if (!num || num > VU_MAX_QUEUE_SIZE || (num & (num - 1))) {
		vu_log(VU_WARN, "SET_VRING_NUM: ring %u: size %u is not a power of two up to %u",
		       x->m->p.state.index, num, VU_MAX_QUEUE_SIZE);
		return -EINVAL;
	}
	if (q->state == VU_Q_STARTED) {
		vu_log(VU_WARN, "SET_VRING_NUM: ring %u is running", x->m->p.state.index);
		return -EBUSY;
	}
	q->num = num;
	if (q->addr_set)
		vq_map(x->dev, q);
	return 0;
}

static int h_set_vring_addr(struct vu_ctx *x)
{
	const struct vhost_vring_addr_msg *a = &x->m->p.addr;
	struct vu_queue *q = msg_queue(x, a->index);

	if (!q)
		return -EINVAL;
	/* Like NUM and BASE: moving a running ring would have chains of the old
	 * one answered into the new one. (QEMU sends ADDR to a started ring only
	 * to turn on dirty logging, which we do not offer.) */
	if (q->state == VU_Q_STARTED) {
		vu_log(VU_WARN, "SET_VRING_ADDR: ring %u is running", a->index);
		return -EBUSY;
	}
	q->desc_uva = a->desc_user_addr;
	q->avail_uva = a->avail_user_addr;
	q->used_uva = a->used_user_addr;
	q->addr_set = true;
	if (q->num && vq_map(x->dev, q)) {
		vu_log(VU_WARN, "SET_VRING_ADDR: ring %u (size %u): desc 0x%llx avail 0x%llx "
		       "used 0x%llx not inside guest memory or misaligned", a->index, q->num,
		       (unsigned long long)a->desc_user_addr,
		       (unsigned long long)a->avail_user_addr,
		       (unsigned long long)a->used_user_addr);
		q->addr_set = false;
		return -EFAULT;
	}
	return 0;
}

static int h_set_vring_base(struct vu_ctx *x)
{
	struct vu_queue *q = msg_queue(x, x->m->p.state.index);
	uint32_t num = x->m->p.state.num;

	if (!q)
		return -EINVAL;
	if (num > UINT16_MAX || q->state == VU_Q_STARTED) {
		vu_log(VU_WARN, "SET_VRING_BASE: ring %u: base %u refused (%s)",
		       x->m->p.state.index, num, num > UINT16_MAX ? "out of range" : "running");
		return -EINVAL;
	}
	q->last_avail = num;
	return 0;
}

/* Stops the ring; the reply is where the next frontend should resume. */
static int h_get_vring_base(struct vu_ctx *x)
{
	uint32_t index = x->m->p.state.index;
	struct vu_queue *q = msg_queue(x, index);

	if (!q) {
		x->r->p.state = (struct vhost_vring_state_msg){ index, 0 };
		x->r->hdr.size = sizeof(x->r->p.state);
		x->has_reply = true;
		return -EINVAL;
	}
	vq_stop(q);
	close_fd(&q->kick_fd);
	x->r->p.state = (struct vhost_vring_state_msg){ index, q->last_avail };
	x->r->hdr.size = sizeof(x->r->p.state);
	x->has_reply = true;
	vu_log(VU_DEBUG, "queue %u: stopped at avail %u", index, q->last_avail);
	return 0;
}

/* KICK/CALL/ERR: u64 with the index in bits 0-7 and NOFD in bit 8; one fd
 * unless NOFD. On success *fd is ours (or -1). */
static int vring_fd_msg(struct vu_ctx *x, struct vu_queue **q, int *fd)
{
	uint64_t v = x->m->p.u64;
	bool nofd = v & VHOST_USER_VRING_NOFD_MASK;

	if (x->m->nfds != (nofd ? 0u : 1u))
		return proto_error("%s: %u fds with%s the no-fd flag", x->name, x->m->nfds,
				   nofd ? "" : "out");
	if (v & ~(uint64_t)(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK)) {
		vu_log(VU_WARN, "%s: unknown bits in 0x%llx", x->name, (unsigned long long)v);
		return -EINVAL;
	}
	*q = msg_queue(x, v & VHOST_USER_VRING_IDX_MASK);
	if (!*q)
		return -EINVAL;
	*fd = nofd ? -1 : x->m->fds[0];
	if (!nofd)
		x->m->fds[0] = -1;
	return 0;
}

static int h_set_vring_kick(struct vu_ctx *x)
{
	struct vu_queue *q;
	int fd, ret = vring_fd_msg(x, &q, &fd);

	if (ret)
		return ret;
	close_fd(&q->kick_fd);
	q->kick_fd = fd;
	if (fd < 0)
		vu_log(VU_WARN, "queue %u: no kick fd; polling is not supported",
		       (unsigned)(q - x->dev->q));
	ret = vq_start(x->dev, q, q - x->dev->q);
	if (!ret)
		vq_resume(x->dev, q - x->dev->q);
	return ret;
}

static int h_set_vring_call(struct vu_ctx *x)
{
	struct vu_queue *q;
	int fd, ret = vring_fd_msg(x, &q, &fd);

	if (ret)
		return ret;
	close_fd(&q->call_fd);
	q->call_fd = fd;
	q->signalled_valid = false;
	return 0;
}

static int h_set_vring_err(struct vu_ctx *x)
{
	struct vu_queue *q;
	int fd, ret = vring_fd_msg(x, &q, &fd);

	if (ret)
		return ret;
	close_fd(&q->err_fd);
	q->err_fd = fd;
	return 0;
}

static int h_set_vring_enable(struct vu_ctx *x)
{
	struct vu_queue *q = msg_queue(x, x->m->p.state.index);
	uint32_t on = x->m->p.state.num;

	if (!q)
		return -EINVAL;
	if (on > 1) {
		vu_log(VU_WARN, "SET_VRING_ENABLE: ring %u: value %u", x->m->p.state.index, on);
		return -EINVAL;
	}
	q->enabled = on;
	vu_log(VU_DEBUG, "queue %u: %s", x->m->p.state.index, on ? "enabled" : "disabled");
	vq_resume(x->dev, x->m->p.state.index);
	return 0;
}

static int config_msg_check(struct vu_ctx *x)
{
	const struct vhost_user_config_msg *c = &x->m->p.cfg;

	if (x->m->hdr.size < VHOST_USER_CONFIG_HDR_SIZE || c->size > VU_MAX_CONFIG ||
	    x->m->hdr.size != VHOST_USER_CONFIG_HDR_SIZE + c->size)
		return proto_error("%s: %u config bytes in a payload of %u", x->name,
				   x->m->hdr.size >= VHOST_USER_CONFIG_HDR_SIZE ? c->size : 0,
				   x->m->hdr.size);
	if (c->offset > VU_MAX_CONFIG || c->size > VU_MAX_CONFIG - c->offset) {
		vu_log(VU_WARN, "%s: offset %u size %u outside the config space", x->name,
		       c->offset, c->size);
		return -EINVAL;
	}
	return 0;
}

/* Replies with the same header and the bytes; an error is a size of 0. */
static int h_get_config(struct vu_ctx *x)
{
	const struct vhost_user_config_msg *c = &x->m->p.cfg;
	struct vhost_user_config_msg *rc = &x->r->p.cfg;
	int ret = config_msg_check(x);

	if (ret == -EPROTO)
		return ret;
	if (!ret)
		ret = x->dev->ops->get_config
		      ? x->dev->ops->get_config(x->dev, c->offset, rc->payload, c->size)
		      : -ENOTSUP;
	rc->offset = c->offset;
	rc->flags = c->flags;
	rc->size = ret ? 0 : c->size;
	x->r->hdr.size = VHOST_USER_CONFIG_HDR_SIZE + rc->size;
	x->has_reply = true;
	if (ret)
		vu_log(VU_WARN, "GET_CONFIG: offset %u size %u: %s", c->offset, c->size,
		       strerror(-ret));
	return 0;
}

static int h_set_config(struct vu_ctx *x)
{
	const struct vhost_user_config_msg *c = &x->m->p.cfg;
	int ret = config_msg_check(x);

	if (ret)
		return ret;
	ret = x->dev->ops->set_config
	      ? x->dev->ops->set_config(x->dev, c->offset, c->payload, c->size) : -ENOTSUP;
	if (ret)
		vu_log(VU_WARN, "SET_CONFIG: offset %u size %u: %s", c->offset, c->size,
		       strerror(-ret));
	return ret;
}

/*
 * We do not offer STATUS. It would not tell a VM stop from a guest reset:
 * QEMU (8.x to 10.x, hw/virtio/vhost.c vhost_dev_stop) runs the same stop
 * sequence for both (SET_VRING_ENABLE 0, GET_VRING_BASE per ring, then
 * SET_STATUS 0 when STATUS was negotiated), so SET_STATUS 0 cannot mean
 * "forget the streams". What differs is the restart: after `cont` the rings
 * come back where they stopped (vq_same_ring), after a guest reset they are
 * re-created from index 0. A frontend that sends STATUS anyway is answered.
 */
static int h_set_status(struct vu_ctx *x)
{
	x->dev->status = (uint8_t)x->m->p.u64;
	return 0;
}

static int h_get_status(struct vu_ctx *x)
{
	reply_u64(x, x->dev->status);
	return 0;
}

/* ---- dispatch table ----------------------------------------------------------- */

enum vu_fdmode {
	VU_FD_NONE,		/* surplus fds are closed */
	VU_FD_ONE,		/* exactly one */
	VU_FD_ANY,		/* the handler checks (or closes what it does not use) */
};
#define VU_SIZE_ANY UINT32_MAX

struct vu_handler {
	const char *name;
	int (*fn)(struct vu_ctx *x);	/* NULL: known but not supported */
	uint32_t size;			/* exact payload size, or VU_SIZE_ANY */
	enum vu_fdmode fds;
};

#define H(req, f, sz, fd) [VHOST_USER_##req] = { #req, f, sz, fd }
#define N(code, req) [code] = { #req, NULL, VU_SIZE_ANY, VU_FD_ANY }
static const struct vu_handler vu_handlers[VU_REQ_TABLE] = {
	H(GET_FEATURES, h_get_features, 0, VU_FD_NONE),
	H(SET_FEATURES, h_set_features, 8, VU_FD_NONE),
	H(SET_OWNER, h_set_owner, 0, VU_FD_NONE),
	H(RESET_OWNER, h_reset, 0, VU_FD_NONE),
	H(SET_MEM_TABLE, h_set_mem_table, VU_SIZE_ANY, VU_FD_ANY),
	H(SET_VRING_NUM, h_set_vring_num, 8, VU_FD_NONE),
	H(SET_VRING_ADDR, h_set_vring_addr, 40, VU_FD_NONE),
	H(SET_VRING_BASE, h_set_vring_base, 8, VU_FD_NONE),
	H(GET_VRING_BASE, h_get_vring_base, 8, VU_FD_NONE),
	H(SET_VRING_KICK, h_set_vring_kick, 8, VU_FD_ANY),
	H(SET_VRING_CALL, h_set_vring_call, 8, VU_FD_ANY),
	H(SET_VRING_ERR, h_set_vring_err, 8, VU_FD_ANY),
	H(GET_PROTOCOL_FEATURES, h_get_protocol_features, 0, VU_FD_NONE),
	H(SET_PROTOCOL_FEATURES, h_set_protocol_features, 8, VU_FD_NONE),
	H(GET_QUEUE_NUM, h_get_queue_num, 0, VU_FD_NONE),
	H(SET_VRING_ENABLE, h_set_vring_enable, 8, VU_FD_NONE),
	H(GET_CONFIG, h_get_config, VU_SIZE_ANY, VU_FD_NONE),
	H(SET_CONFIG, h_set_config, VU_SIZE_ANY, VU_FD_NONE),
	H(RESET_DEVICE, h_reset, 0, VU_FD_NONE),
	H(GET_MAX_MEM_SLOTS, h_get_max_mem_slots, 0, VU_FD_NONE),
	H(ADD_MEM_REG, h_add_mem_reg, 40, VU_FD_ONE),
	H(REM_MEM_REG, h_rem_mem_reg, 40, VU_FD_ANY),
	H(SET_STATUS, h_set_status, 8, VU_FD_NONE),
	H(GET_STATUS, h_get_status, 0, VU_FD_NONE),
	/* Known, never offered or needed by this device: refused by name. */
	N(VHOST_USER_SET_LOG_BASE, SET_LOG_BASE),
	N(VHOST_USER_SET_LOG_FD, SET_LOG_FD),
	N(VHOST_USER_SEND_RARP, SEND_RARP),
	N(VHOST_USER_NET_SET_MTU, NET_SET_MTU),
	N(VHOST_USER_SET_BACKEND_REQ_FD, SET_BACKEND_REQ_FD),
	N(VHOST_USER_IOTLB_MSG, IOTLB_MSG),
	N(VHOST_USER_SET_VRING_ENDIAN, SET_VRING_ENDIAN),
	N(26, CREATE_CRYPTO_SESSION),
	N(27, CLOSE_CRYPTO_SESSION),
	N(28, POSTCOPY_ADVISE),
	N(29, POSTCOPY_LISTEN),
	N(30, POSTCOPY_END),
	N(31, GET_INFLIGHT_FD),
	N(32, SET_INFLIGHT_FD),
	N(33, GPU_SET_SOCKET),
	N(35, VRING_KICK),
	N(41, GET_SHARED_OBJECT),
	N(42, SET_DEVICE_STATE_FD),
	N(43, CHECK_DEVICE_STATE),
};
#undef H
#undef N

static const struct vu_handler *handler_of(uint32_t req)
{
	return req < VU_REQ_TABLE && vu_handlers[req].name ? &vu_handlers[req] : NULL;
}

/* The request's name for logs; codes nobody defined print as "request N". */
static const char *req_name(uint32_t req, char *buf, size_t len)
{
	const struct vu_handler *h = handler_of(req);

	if (h)
		return h->name;
	snprintf(buf, len, "request %u", req);
	return buf;
}

/* ---- messages ----------------------------------------------------------------- */

static void msg_close_fds(struct vu_msg *m)
{
	for (unsigned i = 0; i < m->nfds; i++)
		close_fd(&m->fds[i]);
	m->nfds = 0;
}

/* Block until the connection is readable; a stop request abandons the
 * message (a frontend that stalls mid-message must not delay SIGTERM). */
static int wait_readable(struct vu_dev *dev)
{
	struct pollfd p[2] = { { dev->conn_fd, POLLIN, 0 }, { dev->stop_fd, POLLIN, 0 } };

	while (poll(p, dev->stop_fd >= 0 ? 2 : 1, -1) < 0)
		if (errno != EINTR)
			return -EPIPE;
	return p[1].revents & POLLIN ? -EPIPE : 0;
}

static int collect_fds(struct vu_msg *m, struct msghdr *mh)
{
	int ret = 0;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		size_t n;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (m->nfds < VU_MAX_FDS) {
				m->fds[m->nfds++] = fd;
			} else {
				close(fd);
				ret = -EPROTO;
			}
		}
	}
	if (ret || (mh->msg_flags & MSG_CTRUNC))
		return proto_error("more than %u fds with one message", VU_MAX_FDS);
	return 0;
}

/* Read exactly len bytes (a stream has no message boundaries), collecting
 * fds. 0 bytes before the first one is a hang-up (-EPIPE); after it, the
 * frontend broke a message (-EPROTO). */
static int recv_full(struct vu_dev *dev, struct vu_msg *m, void *buf, size_t len, bool first)
{
	size_t got = 0;

	while (got < len) {
		union {
			char buf[CMSG_SPACE(VU_MAX_FDS * sizeof(int))];
			struct cmsghdr align;
		} cbuf;
		struct iovec iov = { (uint8_t *)buf + got, len - got };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf) };
		ssize_t n = recvmsg(dev->conn_fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		int ret;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ret = wait_readable(dev);
			if (ret)
				return ret;
			continue;
		}
		if (n < 0 && first && !got)
			return -EPIPE;
		if (n < 0)
			return proto_error("connection failed mid-message: %s", strerror(errno));
		ret = collect_fds(m, &mh);
		if (ret)
			return ret;
		if (n == 0 && first && !got)
			return -EPIPE;
		if (n == 0)
			return proto_error("frontend hung up mid-message (%zu of %zu bytes)",
					   got, len);
		got += n;
	}
	return 0;
}

static int read_msg(struct vu_dev *dev, struct vu_msg *m)
{
	int ret = recv_full(dev, m, &m->hdr, sizeof(m->hdr), true);
	char nb[24];

	if (ret)
		return ret;
	if ((m->hdr.flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION)
		return proto_error("%s: flags 0x%x: version is not 1",
				   req_name(m->hdr.request, nb, sizeof(nb)), m->hdr.flags);
	if (m->hdr.size > VU_MAX_PAYLOAD)
		return proto_error("%s: payload of %u bytes (at most %u)",
				   req_name(m->hdr.request, nb, sizeof(nb)), m->hdr.size,
				   VU_MAX_PAYLOAD);
	return recv_full(dev, m, &m->p, m->hdr.size, false);
}

static int send_all(struct vu_dev *dev, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = send(dev->conn_fd, (const uint8_t *)buf + done, len - done,
				 MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd p = { dev->conn_fd, POLLOUT, 0 };

			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				return -EPIPE;
			continue;
		}
		if (n <= 0)
			return -EPIPE;
		done += n;
	}
	return 0;
}

static int send_reply(struct vu_dev *dev, const struct vu_msg *r)
{
	uint8_t buf[sizeof(r->hdr) + VU_MAX_PAYLOAD];

	memcpy(buf, &r->hdr, sizeof(r->hdr));
	memcpy(buf + sizeof(r->hdr), &r->p, r->hdr.size);
	return send_all(dev, buf, sizeof(r->hdr) + r->hdr.size);
}

/* Generic checks, then the handler. Lock held. */
static int dispatch(struct vu_ctx *x)
{
	const struct vu_handler *h = handler_of(x->m->hdr.request);
	struct vu_msg *m = x->m;
	unsigned missed;
	char note[48];

	if (!h || !h->fn) {
		if (!rl_allow(&x->dev->rl_req, &missed))
			return -ENOTSUP;
		if (h)
			vu_log(VU_WARN, "%s is not supported; refused%s", x->name,
			       rl_note(missed, note, sizeof(note)));
		else
			vu_log(VU_WARN, "unknown request %u; refused%s", m->hdr.request,
			       rl_note(missed, note, sizeof(note)));
		return -ENOTSUP;
	}
	vu_log(VU_DEBUG, "%s (%u bytes, %u fds)", x->name, m->hdr.size, m->nfds);
	if (h->size != VU_SIZE_ANY && m->hdr.size != h->size)
		return proto_error("%s: payload of %u bytes, expected %u", x->name, m->hdr.size,
				   h->size);
	if (h->fds == VU_FD_ONE && m->nfds != 1)
		return proto_error("%s: %u fds, expected 1", x->name, m->nfds);
	if (h->fds == VU_FD_NONE && m->nfds) {
		vu_log(VU_WARN, "%s: %u unexpected fds closed", x->name, m->nfds);
		msg_close_fds(m);
	}
	return h->fn(x);
}

int vu_handle_msg(struct vu_dev *dev)
{
	struct vu_msg m = { .nfds = 0 }, r;
	struct vu_ctx x = { .dev = dev, .m = &m, .r = &r };
	char nb[24];
	int ret;

	if (dev->conn_fd < 0)
		return -EPIPE;
	ret = read_msg(dev, &m);
	if (ret) {
		msg_close_fds(&m);
		if (ret == -EPROTO)
			mark_broken(dev);
		return ret;
	}
	x.name = req_name(m.hdr.request, nb, sizeof(nb));
	memset(&r, 0, sizeof(r));

	vu_lock(dev);
	/* Handlers touch rings in guest memory (start, resume). */
	GUARDED(dev, ret, -EFAULT, ret = dispatch(&x));
	msg_close_fds(&m);
	if (ret == -EPROTO) {
		mark_broken(dev);
		vu_unlock(dev);
		return ret;
	}
	if (x.reset) {
		vu_unlock(dev);
		if (dev->ops->reset)
			dev->ops->reset(dev);
		vu_lock(dev);
		for (unsigned i = 0; i < dev->ops->nqueues; i++)
			vq_clear(&dev->q[i]);
		vu_log(VU_INFO, "device reset by the frontend (%s)", x.name);
	} else if (dev->forget_device) {
		vu_unlock(dev);
		if (dev->ops->reset)
			dev->ops->reset(dev);
		vu_lock(dev);
		vu_log(VU_INFO, "the guest re-created its rings: device state dropped");
	}
	dev->forget_device = false;
	/* REPLY_ACK (vhost-user.rst): a request without a reply of its own
	 * answers NEED_REPLY with a u64 status, 0 for success. */
	if (!x.has_reply && (m.hdr.flags & VHOST_USER_NEED_REPLY_MASK))
		reply_u64(&x, ret ? 1 : 0);
	vu_unlock(dev);

	if (!x.has_reply)
		return 0;
	r.hdr.request = m.hdr.request;
	r.hdr.flags = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;
	if (send_reply(dev, &r)) {
		vu_log(VU_WARN, "%s: cannot send the reply; frontend gone", x.name);
		return -EPIPE;
	}
	return 0;
}

/* ---- device and connection ---------------------------------------------------- */

static pthread_once_t sigbus_once = PTHREAD_ONCE_INIT;

struct vu_dev *vu_dev_new(const struct vu_ops *ops, void *opaque)
{
	struct vu_dev *dev;

	if (!ops || !ops->nqueues || ops->nqueues > VU_MAX_QUEUES) {
		errno = EINVAL;
		return NULL;
	}
	pthread_once(&sigbus_once, sigbus_install);
	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return NULL;
	dev->ops = ops;
	dev->opaque = opaque;
	dev->conn_fd = -1;
	dev->stop_fd = -1;
	dev->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (dev->wake_fd < 0 || pthread_mutex_init(&dev->lock, NULL)) {
		close_fd(&dev->wake_fd);
		free(dev);
		return NULL;
	}
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
		dev->q[i] = (struct vu_queue){ .kick_fd = -1, .call_fd = -1, .err_fd = -1 };
	return dev;
}

void vu_dev_free(struct vu_dev *dev)
{
	if (!dev)
		return;
	vu_disconnect(dev);
	while (dev->views)		/* the owner's, left behind */
		vu_view_free(dev, dev->views);
	close_fd(&dev->wake_fd);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

int vu_attach(struct vu_dev *dev, int conn_fd)
{
	int ret = 0;

	vu_lock(dev);
	if (dev->conn_fd >= 0)
		ret = -EBUSY;
	else
		dev->conn_fd = conn_fd;
	vu_unlock(dev);
	return ret;
}

void vu_disconnect(struct vu_dev *dev)
{
	vu_lock(dev);
	if (dev->conn_fd < 0) {
		vu_unlock(dev);
		return;
	}
	/* Stop first, so that a chain answered while the device resets is
	 * only freed; memory stays mapped until the device is done. */
	bump_generation(dev);
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
		vq_stop(&dev->q[i]);
	vu_unlock(dev);
	if (dev->ops->reset)
		dev->ops->reset(dev);
	vu_lock(dev);
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
		vq_clear(&dev->q[i]);
	views_invalidate(dev);
	for (unsigned i = 0; i < dev->nregions; i++)
		region_unmap(&dev->regions[i]);
	dev->nregions = 0;
	dev->features = 0;
	dev->protocol_features = 0;
	dev->status = 0;
	close_fd(&dev->conn_fd);
	__atomic_store_n(&dev->broken, false, __ATOMIC_SEQ_CST);
	vu_unlock(dev);
}

/* ---- sockets and the loop ----------------------------------------------------- */

int vu_listen(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t mask;
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -ENOTSOCK;
		/* A socket somebody still listens on is not stale. */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(fd);
			return -EADDRINUSE;
		}
		close(fd);
		if (unlink(path) < 0 && errno != ENOENT)
			return -errno;
	} else if (errno != ENOENT) {
		return -errno;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Owner-only from the start (the caller may widen it to a group):
	 * at start-up, before any thread, so the umask change is ours alone. */
	mask = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(mask);
	if (r < 0 || listen(fd, 1) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static void drain_eventfd(int fd)
{
	uint64_t v;

	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN && errno != EINTR)
		vu_log(VU_WARN, "eventfd read: %s", strerror(errno));
}

/* Serve the attached frontend. 1: stop requested; 0: connection over
 * (hang-up, protocol error or broken device: the caller disconnects). */
static int serve(struct vu_dev *dev, int stop_fd)
{
	for (;;) {
		struct pollfd p[3 + VU_MAX_QUEUES];
		unsigned qidx[3 + VU_MAX_QUEUES], n = 3;

		if (vu_broken(dev))
			return 0;	/* whoever broke it said why */
		p[0] = (struct pollfd){ dev->conn_fd, POLLIN, 0 };
		p[1] = (struct pollfd){ stop_fd, POLLIN, 0 };
		p[2] = (struct pollfd){ dev->wake_fd, POLLIN, 0 };
		vu_lock(dev);
		for (unsigned i = 0; i < dev->ops->nqueues; i++) {
			if (!vu_queue_ready(dev, i) || dev->q[i].kick_fd < 0)
				continue;
			p[n] = (struct pollfd){ dev->q[i].kick_fd, POLLIN, 0 };
			qidx[n++] = i;
		}
		vu_unlock(dev);

		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			vu_log(VU_ERR, "poll: %s", strerror(errno));
			return 0;
		}
		if (p[1].revents & POLLIN)
			return 1;
		if (p[2].revents & POLLIN)
			drain_eventfd(dev->wake_fd);
		/* Kicks first: their fds are still the ones polled. */
		for (unsigned k = 3; k < n; k++) {
			bool ready;

			if (!(p[k].revents & POLLIN))
				continue;
			drain_eventfd(p[k].fd);
			vu_lock(dev);
			ready = vu_queue_ready(dev, qidx[k]);
			vu_unlock(dev);
			if (ready && dev->ops->queue_kick)
				dev->ops->queue_kick(dev, qidx[k]);
		}
		if (p[0].revents) {
			int ret = vu_handle_msg(dev);

			if (ret == -EPIPE)
				vu_log(VU_INFO, "frontend disconnected");
			if (ret)
				return 0;
		}
	}
}

/* 0: a frontend is attached; 1: stop requested; -errno: accept failed. */
static int accept_one(struct vu_dev *dev, int lfd, int stop_fd)
{
	for (;;) {
		struct pollfd p[3] = { { lfd, POLLIN, 0 }, { stop_fd, POLLIN, 0 },
				       { dev->wake_fd, POLLIN, 0 } };
		int c;

		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents & POLLIN)
			return 1;
		if (p[2].revents & POLLIN)
			drain_eventfd(dev->wake_fd);
		if (!(p[0].revents & POLLIN))
			continue;
		c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
				continue;
			return -errno;
		}
		vu_attach(dev, c);
		vu_log(VU_INFO, "frontend connected");
		return 0;
	}
}

int vu_run(struct vu_dev *dev, int fd, int stop_fd)
{
	int listening = 0, ret;
	socklen_t sl = sizeof(listening);

	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &sl) < 0)
		return -errno;
	dev->stop_fd = stop_fd;
	if (!listening) {
		/* Our own copy: vu_disconnect closes it, the caller closes fd. */
		int c = fcntl(fd, F_DUPFD_CLOEXEC, 0);

		if (c < 0)
			return -errno;
		ret = vu_attach(dev, c);
		if (ret) {
			close(c);
			return ret;
		}
		if (!serve(dev, stop_fd))
			vu_disconnect(dev);
		return 0;
	}
	for (;;) {
		ret = accept_one(dev, fd, stop_fd);
		if (ret)
			return ret > 0 ? 0 : ret;
		if (serve(dev, stop_fd))
			return 0;
		vu_disconnect(dev);
	}
}

/* ---- a small printf for the static musl build ---------------------------------- */

#if CONFIG_VUV_SMALL_PRINTF && !defined(__GLIBC__) && !defined(__UCLIBC__)
/*
 * musl's printf carries floating-point and wide-character formatting: about
 * 11 KB of a 96 KB binary. We format only integers and strings, so in the
 * static musl build these replace snprintf, vsnprintf and printf (the linker
 * then takes no printf code from libc.a). Conversions d i u o x X c s p %,
 * flags - 0 + space #, width and precision (also *), lengths hh h l ll z j t.
 * A floating-point conversion consumes its argument and prints '?'.
 */
struct fmt_out {
	char *s;
	size_t cap, len;		/* len counts what would have been written */
};

static void fmt_put(struct fmt_out *o, char c, size_t n)
{
	for (; n; n--, o->len++)
		if (o->len + 1 < o->cap)
			o->s[o->len] = c;
}

static void fmt_puts(struct fmt_out *o, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fmt_put(o, p[i], 1);
}

/* One field: prefix (sign, 0x), zeros to the precision, the body; padded. */
static void fmt_field(struct fmt_out *o, const char *pre, const char *body, size_t n,
		      size_t zeros, int width, bool left, bool zero_pad)
{
	size_t np = strlen(pre), w = np + zeros + n;
	size_t pad = width > 0 && (size_t)width > w ? (size_t)width - w : 0;

	if (!left && !zero_pad)
		fmt_put(o, ' ', pad);
	fmt_puts(o, pre, np);
	if (!left && zero_pad)
		fmt_put(o, '0', pad);
	fmt_put(o, '0', zeros);
	fmt_puts(o, body, n);
	if (left)
		fmt_put(o, ' ', pad);
}

int vsnprintf(char *restrict s, size_t n, const char *restrict fmt, va_list ap)
{
	struct fmt_out o = { s, n, 0 };

	for (const char *f = fmt; *f; f++) {
		bool left = false, zero = false, plus = false, space = false, alt = false;
		int width = 0, prec = -1, lng = 0;	/* lng: -2 hh, -1 h, 1 l, 2 ll/j/z/t */
		char num[24], *d = num + sizeof(num);
		const char *pre = "";
		uintmax_t u;

		if (*f != '%') {
			fmt_put(&o, *f, 1);
			continue;
		}
		for (;; f++) {
			char c = f[1];

			if (c == '-') left = true;
			else if (c == '0') zero = true;
			else if (c == '+') plus = true;
			else if (c == ' ') space = true;
			else if (c == '#') alt = true;
			else break;
		}
		if (f[1] == '*') {
			width = va_arg(ap, int);
			if (width < 0) {
				left = true;
				width = width == INT32_MIN ? 0 : -width;
			}
			f++;
		} else {
			for (; f[1] >= '0' && f[1] <= '9'; f++)
				width = width < 100000 ? width * 10 + (f[1] - '0') : width;
		}
		if (f[1] == '.') {
			f++;
			prec = 0;
			if (f[1] == '*') {
				prec = va_arg(ap, int);
				f++;
			} else {
				for (; f[1] >= '0' && f[1] <= '9'; f++)
					prec = prec < 100000 ? prec * 10 + (f[1] - '0') : prec;
			}
		}
		for (;; f++) {
			char c = f[1];

			if (c == 'h') lng = lng == -1 ? -2 : -1;
			else if (c == 'l') lng++;
			else if (c == 'z' || c == 'j' || c == 't') lng = 2;
			else if (c == 'L') lng = 3;
			else break;
		}
		f++;
		switch (*f) {
		case 'd': case 'i': {
			intmax_t v = lng >= 2 ? va_arg(ap, long long) : lng == 1 ? va_arg(ap, long)
				   : va_arg(ap, int);

			if (lng == -1) v = (short)v;
			if (lng == -2) v = (signed char)v;
			u = v < 0 ? -(uintmax_t)v : (uintmax_t)v;
			pre = v < 0 ? "-" : plus ? "+" : space ? " " : "";
			goto digits10;
		}
		case 'u': case 'o': case 'x': case 'X': case 'p':
			if (*f == 'p')
				u = (uintptr_t)va_arg(ap, void *);
			else
				u = lng >= 2 ? va_arg(ap, unsigned long long)
				    : lng == 1 ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
			if (lng == -1) u = (unsigned short)u;
			if (lng == -2) u = (unsigned char)u;
			if (*f == 'u')
				goto digits10;
			if (*f == 'o') {
				do *--d = (char)('0' + (u & 7)); while (u >>= 3);
				if (alt && *d != '0')
					*--d = '0';
			} else {
				const char *hex = *f == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
				bool zero_val = u == 0;

				do *--d = hex[u & 15]; while (u >>= 4);
				if (*f == 'p' || (alt && !zero_val))
					pre = *f == 'X' ? "0X" : "0x";
			}
			goto number;
		digits10:
			do *--d = (char)('0' + u % 10); while (u /= 10);
		number: {
			size_t nd = (size_t)(num + sizeof(num) - d);

			if (prec == 0 && nd == 1 && *d == '0' && *f != 'p')
				nd = 0;		/* C: %.0d of 0 prints nothing */
			fmt_field(&o, pre, d, nd, prec > 0 && (size_t)prec > nd ? (size_t)prec - nd : 0,
				  width, left, zero && prec < 0);
			break;
		}
		case 'c':
			num[0] = (char)va_arg(ap, int);
			fmt_field(&o, "", num, 1, 0, width, left, false);
			break;
		case 's': {
			const char *str = va_arg(ap, const char *);

			if (!str)
				str = "(null)";
			fmt_field(&o, "", str, prec >= 0 ? strnlen(str, (size_t)prec) : strlen(str), 0,
				  width, left, false);
			break;
		}
		case 'e': case 'E': case 'f': case 'F': case 'g': case 'G': case 'a': case 'A':
			if (lng == 3)
				(void)va_arg(ap, long double);
			else
				(void)va_arg(ap, double);
			fmt_put(&o, '?', 1);
			break;
		case '%':
			fmt_put(&o, '%', 1);
			break;
		case 0:
			f--;		/* a lone '%' at the end */
			break;
		default:		/* not ours: as written */
			fmt_put(&o, '%', 1);
			fmt_put(&o, *f, 1);
			break;
		}
	}
	if (n)
		s[o.len < n ? o.len : n - 1] = 0;
	return o.len > INT32_MAX ? -1 : (int)o.len;
}

int snprintf(char *restrict s, size_t n, const char *restrict fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(s, n, fmt, ap);
	va_end(ap);
	return r;
}

/* Through stdout's buffer, so that it orders with fputs(stdout). */
int printf(const char *restrict fmt, ...)
{
	char buf[512], *p = buf;
	va_list ap, aq;
	int r;

	va_start(ap, fmt);
	va_copy(aq, ap);
	r = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (r >= (int)sizeof(buf) && (p = malloc((size_t)r + 1)))
		vsnprintf(p, (size_t)r + 1, fmt, aq);
	va_end(aq);
	va_end(ap);
	if (r > 0 && p && fwrite(p, 1, (size_t)r, stdout) != (size_t)r)
		r = -1;
	if (p != buf)
		free(p);
	return p ? r : -1;
}
#endif
