/* SPDX-License-Identifier: MIT */
/*
 * vu: a small vhost-user backend engine with split virtqueues.
 *
 * It knows nothing of video. It accepts one frontend at a time on a unix
 * socket, parses and answers vhost-user messages, maps the guest's memory,
 * walks descriptor chains with every bounds check, and fills the used ring.
 * The device above it supplies callbacks (struct vu_ops).
 *
 * Guest memory faults (a frontend that truncates its memory file): every
 * access made by vu_* functions is guarded; SIGBUS there fails the access,
 * marks the device broken and drops the frontend. vu_dev_new installs the
 * process's SIGBUS handler once for this. Pointers from vu_gpa_to_va are not
 * guarded: do not dereference them, copy with vu_gpa_read/vu_gpa_write.
 *
 * Threads and locking
 *  - vu_run() runs on the command thread. It blocks in poll() without the
 *    lock, and takes dev->lock while it handles one vhost-user message (so the
 *    memory table and ring state never change under a holder of the lock).
 *  - Every other function that touches guest memory or a ring
 *    (vu_queue_pop, vu_chain_respond, vu_queue_notify, vu_gpa_*) must be
 *    called with the lock held (vu_lock), from any thread.
 *  - Callbacks: get_config/set_config are called with the lock held;
 *    queue_kick and reset are called WITHOUT the lock (they take it as needed).
 *
 * Wire format facts: QEMU docs/interop/vhost-user.rst; virtio 1.x split rings.
 */
#ifndef VU_H
#define VU_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- vhost-user wire format (shared with tests/vufront.c) ---- */

enum vu_request {
	VHOST_USER_NONE = 0,
	VHOST_USER_GET_FEATURES = 1,
	VHOST_USER_SET_FEATURES = 2,
	VHOST_USER_SET_OWNER = 3,
	VHOST_USER_RESET_OWNER = 4,
	VHOST_USER_SET_MEM_TABLE = 5,
	VHOST_USER_SET_LOG_BASE = 6,
	VHOST_USER_SET_LOG_FD = 7,
	VHOST_USER_SET_VRING_NUM = 8,
	VHOST_USER_SET_VRING_ADDR = 9,
	VHOST_USER_SET_VRING_BASE = 10,
	VHOST_USER_GET_VRING_BASE = 11,
	VHOST_USER_SET_VRING_KICK = 12,
	VHOST_USER_SET_VRING_CALL = 13,
	VHOST_USER_SET_VRING_ERR = 14,
	VHOST_USER_GET_PROTOCOL_FEATURES = 15,
	VHOST_USER_SET_PROTOCOL_FEATURES = 16,
	VHOST_USER_GET_QUEUE_NUM = 17,
	VHOST_USER_SET_VRING_ENABLE = 18,
	VHOST_USER_SEND_RARP = 19,
	VHOST_USER_NET_SET_MTU = 20,
	VHOST_USER_SET_BACKEND_REQ_FD = 21,
	VHOST_USER_IOTLB_MSG = 22,
	VHOST_USER_SET_VRING_ENDIAN = 23,
	VHOST_USER_GET_CONFIG = 24,
	VHOST_USER_SET_CONFIG = 25,
	VHOST_USER_RESET_DEVICE = 34,
	VHOST_USER_GET_MAX_MEM_SLOTS = 36,
	VHOST_USER_ADD_MEM_REG = 37,
	VHOST_USER_REM_MEM_REG = 38,
	VHOST_USER_SET_STATUS = 39,
	VHOST_USER_GET_STATUS = 40,
	VHOST_USER_MAX
};

#define VHOST_USER_VERSION 0x1u
#define VHOST_USER_VERSION_MASK 0x3u
#define VHOST_USER_REPLY_MASK (1u << 2)
#define VHOST_USER_NEED_REPLY_MASK (1u << 3)

#define VHOST_USER_F_PROTOCOL_FEATURES 30

#define VHOST_USER_PROTOCOL_F_MQ 0
#define VHOST_USER_PROTOCOL_F_REPLY_ACK 3
#define VHOST_USER_PROTOCOL_F_CONFIG 9
#define VHOST_USER_PROTOCOL_F_RESET_DEVICE 13
#define VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS 15

#define VHOST_USER_VRING_IDX_MASK 0xffu
#define VHOST_USER_VRING_NOFD_MASK (1u << 8)

#define VU_MAX_MEM_TABLE_REGIONS 8	/* SET_MEM_TABLE carries at most 8 */
#define VU_MAX_MEM_SLOTS 32		/* answer to GET_MAX_MEM_SLOTS */
#define VU_MAX_QUEUES 8
#define VU_MAX_QUEUE_SIZE 32768
#define VU_MAX_CONFIG 256

struct vhost_user_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
} __attribute__((packed));

struct vhost_vring_state_msg {
	uint32_t index;
	uint32_t num;
};

struct vhost_vring_addr_msg {
	uint32_t index;
	uint32_t flags;
	uint64_t desc_user_addr;
	uint64_t used_user_addr;
	uint64_t avail_user_addr;
	uint64_t log_guest_addr;
};

struct vhost_user_mem_region {
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t mmap_offset;
};

struct vhost_user_mem_table {
	uint32_t nregions;
	uint32_t padding;
	struct vhost_user_mem_region regions[VU_MAX_MEM_TABLE_REGIONS];
};

struct vhost_user_mem_reg_msg {
	uint64_t padding;
	struct vhost_user_mem_region region;
};

struct vhost_user_config_msg {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;
	uint8_t payload[VU_MAX_CONFIG];
};
#define VHOST_USER_CONFIG_HDR_SIZE 12u

_Static_assert(sizeof(struct vhost_user_hdr) == 12, "vhost-user header");
_Static_assert(sizeof(struct vhost_vring_state_msg) == 8, "vring state");
_Static_assert(sizeof(struct vhost_vring_addr_msg) == 40, "vring addr");
_Static_assert(sizeof(struct vhost_user_mem_region) == 32, "mem region");
_Static_assert(sizeof(struct vhost_user_mem_table) == 8 + 8 * 32, "mem table");
_Static_assert(sizeof(struct vhost_user_mem_reg_msg) == 40, "mem reg");

/* ---- the engine ---- */

struct vu_dev;

struct vu_ops {
	uint64_t features;	/* device feature bits; vu adds the transport ones */
	unsigned nqueues;	/* <= VU_MAX_QUEUES */
	/* Copy len bytes of config space at off into buf; 0 or -errno. Lock held. */
	int (*get_config)(struct vu_dev *dev, uint32_t off, void *buf, uint32_t len);
	/* Optional; NULL refuses writes. Lock held. */
	int (*set_config)(struct vu_dev *dev, uint32_t off, const void *buf, uint32_t len);
	/* Queue q got a kick and is started and enabled. Lock NOT held. */
	void (*queue_kick)(struct vu_dev *dev, unsigned q);
	/*
	 * The device must forget all guest state: called on RESET_OWNER,
	 * RESET_DEVICE, disconnect, or when the device is marked broken, before
	 * any memory is unmapped. Parked chains must be released with
	 * vu_chain_release (not answered). Lock NOT held.
	 */
	void (*reset)(struct vu_dev *dev);
};

/* One guest-writable piece of a popped chain, kept as a guest-physical
 * address so that it is translated again (and bounds-checked) when the chain
 * is answered, possibly much later. */
struct vu_seg {
	uint64_t gpa;
	uint32_t len;
};

#define VU_CHAIN_MAX_WR 16
#define VU_CHAIN_MAX_REQ (256u * 1024)	/* readable bytes copied out per chain */

/* A popped descriptor chain. Plain data: may be copied and parked. */
struct vu_chain {
	uint16_t queue;
	uint16_t head;
	uint32_t gen;		/* connection generation it was popped under */
	uint8_t *req;		/* readable bytes, copied out of guest memory (malloc) */
	size_t req_len;
	struct vu_seg wr[VU_CHAIN_MAX_WR];
	unsigned n_wr;
	size_t wr_len;		/* total writable bytes */
};

/* Allocate a device; ops must outlive it. NULL on ENOMEM. */
struct vu_dev *vu_dev_new(const struct vu_ops *ops, void *opaque);
void vu_dev_free(struct vu_dev *dev);
void *vu_dev_opaque(struct vu_dev *dev);

void vu_lock(struct vu_dev *dev);
void vu_unlock(struct vu_dev *dev);
/* The device mutex itself, for pthread_cond_wait by the device. */
pthread_mutex_t *vu_mutex(struct vu_dev *dev);

/* Create a listening socket at path, mode 0600 (umask 0177 around bind; call
 * before starting threads): removes a stale socket file, refuses a path that
 * exists and is not a socket. Returns fd or -errno. */
int vu_listen(const char *path);

/*
 * Serve frontends until stop_fd becomes readable (the caller's signalfd; it
 * is not read here). fd is a listening socket (accept one frontend at a time;
 * after a disconnect, reset and accept the next) or an already connected one
 * (serve it; return when it hangs up). Tell them apart with SO_ACCEPTCONN.
 * Returns 0 when stopped or the connected socket hung up, -errno on a fatal
 * local error (accept failing with other than EINTR/ECONNABORTED).
 */
int vu_run(struct vu_dev *dev, int fd, int stop_fd);

/* Attach a connected frontend socket without running the loop (tests). */
int vu_attach(struct vu_dev *dev, int conn_fd);
/* Read and handle one message from the attached socket (tests, vu_run).
 * 0 handled (an invalid request is answered/logged and still returns 0),
 * -EPIPE hang-up, -EPROTO the frontend broke the protocol: the caller must
 * drop the connection (vu_disconnect). */
int vu_handle_msg(struct vu_dev *dev);
/* Drop the connection: calls ops->reset, unmaps memory, closes fds. */
void vu_disconnect(struct vu_dev *dev);

/* Negotiated state, lock held. */
bool vu_has_feature(struct vu_dev *dev, unsigned bit);
bool vu_queue_ready(struct vu_dev *dev, unsigned q);
/* Kick fd of queue q, or -1 (tests; vu_run polls it itself). */
int vu_queue_kick_fd(struct vu_dev *dev, unsigned q);
/* Connection generation: bumped on every disconnect/reset. */
uint32_t vu_generation(struct vu_dev *dev);
/* True once the device was marked broken (bad ring, protocol error). */
bool vu_broken(struct vu_dev *dev);

/*
 * Pop the next available chain of queue q into *c (lock held).
 * 0: *c filled (free with vu_chain_respond or vu_chain_release);
 * -EAGAIN: nothing available or queue not ready;
 * -EINVAL: the chain was malformed; it was already returned to the used ring
 *   with length 0 and logged, the caller just pops the next one;
 * -EIO: the ring itself is unusable; the device is marked broken and the
 *   connection will be dropped.
 */
int vu_queue_pop(struct vu_dev *dev, unsigned q, struct vu_chain *c);

/*
 * Answer a chain (lock held): scatter len bytes of resp into its writable
 * segments, put it on the used ring with the written length, and free c->req.
 * If len exceeds the writable space nothing is written, the used length is 0
 * and -ENOSPC is returned (the chain is still completed). A chain from an
 * older connection generation (reset, disconnect, ring re-created) is only
 * freed. A chain whose ring is disabled or stopped (QEMU's `stop`) is kept,
 * without touching guest memory, and published when the same ring runs again
 * (`cont`); if the ring is re-created instead, it is dropped. Returns -EFAULT
 * if guest memory faulted (the connection is then dropped).
 * Does not notify: call vu_queue_notify after a batch.
 */
int vu_chain_respond(struct vu_dev *dev, struct vu_chain *c, const void *resp, size_t len);

/* Free a chain without answering it (teardown). */
void vu_chain_release(struct vu_chain *c);

/* Signal the call eventfd of q if the guest wants it (EVENT_IDX and
 * NOTIFY_ON_EMPTY aware). Lock held. */
void vu_queue_notify(struct vu_dev *dev, unsigned q);

/* Guest-physical memory access (lock held). */
/* Host pointer for gpa, *len clamped to what is contiguous in one region;
 * NULL if gpa is not mapped. */
void *vu_gpa_to_va(struct vu_dev *dev, uint64_t gpa, uint64_t *len);
/* Copy across regions; -EFAULT if any byte is not in guest memory. */
int vu_gpa_read(struct vu_dev *dev, uint64_t gpa, void *buf, size_t len);
int vu_gpa_write(struct vu_dev *dev, uint64_t gpa, const void *buf, size_t len);

/*
 * Linear views (zero-copy): the guest buffer made of the pieces seg[0..n)
 * (guest-physical, in order) mapped at consecutive host addresses, from the
 * regions' files, for handing to a driver (V4L2 USERPTR). Lock held, any
 * thread. The daemon itself must not dereference a view (use vu_gpa_*: the
 * frontend may truncate its file under it).
 * vu_view_new: 0 and *out; -EFAULT a piece is not guest memory (or wraps);
 * -ENOTSUP a piece is not page-aligned in its file and in the view the way
 * mmap needs (every piece but the first starts on a page boundary, every
 * piece but the last ends on one), or the region has no file to map;
 * -E2BIG more than 1 GiB or too many separate mappings; -ENOMEM, or mmap's
 * error. Any error means: use the copy path for this buffer.
 * A view is invalidated (vu_view_valid false, its pages gone, its addresses
 * still reserved) by every change of the memory table (SET_MEM_TABLE,
 * REM_MEM_REG) and by disconnect; the owner still frees it, with
 * vu_view_free, after the driver let go of its addresses. */
struct vu_view;
int vu_view_new(struct vu_dev *dev, const struct vu_seg *seg, unsigned n, struct vu_view **out);
void *vu_view_addr(const struct vu_view *v);	/* the first byte of seg[0] */
size_t vu_view_len(const struct vu_view *v);	/* the sum of the lengths */
bool vu_view_valid(const struct vu_view *v);	/* NULL: false */
void vu_view_free(struct vu_dev *dev, struct vu_view *v);	/* NULL: nothing */

/*
 * DMABUF over guest memory (CONFIG_VUV_DMABUF; lock held for both).
 * A list of guest-physical ranges becomes the items of one
 * UDMABUF_CREATE_LIST request: each range must lie in guest memory, start
 * and end on a page boundary of its region's file (the last may end inside
 * its page: the whole page is taken, and must be guest memory), and that
 * file must be a memfd sealed with F_SEAL_SHRINK and not against writes
 * (udmabuf's rule). Ranges that follow each other in one file become one
 * item.
 *
 * vu_dmabuf_items fills items[0..max) and returns how many it used, or
 * -errno with *why saying what was refused (a static string):
 * -EFAULT outside guest memory or wraps, -EINVAL not page-aligned or empty,
 * -EPERM the region's file cannot back a udmabuf, -E2BIG more than max
 * items, -EOPNOTSUPP built without CONFIG_VUV_DMABUF. No /dev/udmabuf is
 * needed (unit tests).
 *
 * vu_dmabuf_create builds the request and asks /dev/udmabuf (opened once,
 * on first use) for a dmabuf: the fd (O_CLOEXEC, the caller's) or -errno
 * and *why (-ENOENT: the host kernel has no udmabuf). The dmabuf holds the
 * pages itself: it stays valid after the memory table changes, so the
 * caller drops it with the resource (and on SET_MEM_TABLE/REM_MEM_REG).
 */
#define VU_DMABUF_MAX_ITEMS 1024u	/* udmabuf's default list_limit */
struct udmabuf_create_item;
int vu_dmabuf_items(struct vu_dev *dev, const struct vu_seg *segs, unsigned n,
		    struct udmabuf_create_item *items, unsigned max, const char **why);
int vu_dmabuf_create(struct vu_dev *dev, const struct vu_seg *segs, unsigned n,
		     const char **why);
/* Why fd (a memory region's file) cannot back a udmabuf, or NULL if it can. */
const char *vu_memfd_unfit(int fd);

#ifdef VU_TEST_HOOKS
/* Defined by a test program built with -DVU_TEST_HOOKS (tests/fuzz): told
 * of every used-ring entry (USED: an answer published; MALFORMED: a bad
 * chain returned empty by vu_queue_pop) and of answers kept while the ring
 * was stopped (DEFERRED) or dropped (DROPPED). Lock held. */
enum { VU_HOOK_USED, VU_HOOK_MALFORMED, VU_HOOK_DEFERRED, VU_HOOK_DROPPED };
void vu_test_hook(struct vu_dev *dev, int what, unsigned q, uint16_t head);
#endif

/* Logging, shared by the whole daemon: one line each on stderr. */
extern int vu_verbosity;	/* 0 default, 1 = -v (commands), 2 = -vv (buffers) */
void vu_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define VU_ERR 0
#define VU_WARN 1
#define VU_INFO 2
#define VU_DEBUG 3
#define VU_TRACE 4

#endif /* VU_H */
