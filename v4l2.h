/* SPDX-License-Identifier: MIT */
/*
 * m2m: a thin wrapper around one open file of a V4L2 mem2mem stateful codec
 * (kernel docs: dev-mem2mem.rst, dev-decoder.rst, dev-encoder.rst).
 *
 * It knows nothing of virtio. Parameters are host order; functions return 0
 * or -errno. Both single-planar (V4L2_CAP_VIDEO_M2M) and multi-planar
 * (V4L2_CAP_VIDEO_M2M_MPLANE) devices are handled here, so callers always see
 * "planes". The V4L2 OUTPUT queue (what the application feeds) is called
 * M2M_SRC, the CAPTURE queue (what the codec produces) M2M_DST.
 *
 * Threads: a context is used by the command thread for configuration and by
 * the event thread for QBUF/DQBUF/DQEVENT; V4L2 serialises ioctls per file
 * itself. The caller's device mutex protects the m2m_ctx fields.
 */
#ifndef V4L2_H
#define V4L2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define M2M_MAX_PLANES 8	/* VIDEO_MAX_PLANES */
#define M2M_MAX_FORMATS 64
#define M2M_MAX_BUFFERS 32	/* VIDEO_MAX_FRAME */

enum m2m_queue { M2M_SRC = 0, M2M_DST = 1 };

enum m2m_role { M2M_ROLE_NONE = 0, M2M_ROLE_DECODER, M2M_ROLE_ENCODER };

/* V4L2 memory type of a queue's buffers. */
enum m2m_memory { M2M_MEM_MMAP = 0, M2M_MEM_USERPTR, M2M_MEM_DMABUF };

/* The frame sizes of one format: discrete sizes are min == max, step 0. */
struct m2m_frmsize {
	uint32_t min_w, max_w, step_w;
	uint32_t min_h, max_h, step_h;
};

#define M2M_MAX_SIZES 8
#define M2M_MAX_RATES 8

struct m2m_frmrate {		/* frames per second, min == max: discrete */
	uint32_t min, max, step;
};

struct m2m_format {
	uint32_t pixfmt;	/* V4L2 fourcc */
	uint32_t flags;		/* V4L2_FMT_FLAG_* */
	unsigned nsizes;
	struct m2m_frmsize sizes[M2M_MAX_SIZES];
	unsigned nrates;	/* for the first size, when the driver says */
	struct m2m_frmrate rates[M2M_MAX_RATES];
	/* Bit i: formats[i] of the other queue can pair with this one. */
	uint64_t pair_mask;
};

/* What a device offers, read once at start-up (m2m_probe). */
struct m2m_info {
	char driver[16];
	char card[32];
	char bus_info[32];
	bool mplane;
	enum m2m_role role;
	unsigned nfmt[2];
	struct m2m_format fmt[2][M2M_MAX_FORMATS];
};

/* A queue's current format, as G_FMT/S_FMT report it. */
struct m2m_pix {
	uint32_t pixfmt;
	uint32_t width, height;		/* coded (buffer) size */
	unsigned num_planes;		/* memory planes */
	uint32_t sizeimage[M2M_MAX_PLANES];
	uint32_t bytesperline[M2M_MAX_PLANES];
};

struct m2m_rect {
	int32_t left, top;
	uint32_t width, height;
};

/* A dequeued (or to be queued) buffer. */
struct m2m_buf {
	uint32_t index;
	uint32_t flags;			/* V4L2_BUF_FLAG_* */
	uint64_t timestamp;		/* nanoseconds */
	uint32_t sequence;
	unsigned num_planes;
	uint32_t bytesused[M2M_MAX_PLANES];
	uint32_t data_offset[M2M_MAX_PLANES];
	/* QBUF on a USERPTR queue: the memory of each plane (length bytes at
	 * userptr); 0 = the buffer's own bounce memory, map[][][] */
	uintptr_t userptr[M2M_MAX_PLANES];
	uint32_t length[M2M_MAX_PLANES];
	/* QBUF on a DMABUF queue: the dmabuf of each plane (its first length
	 * bytes; vb2 puts a plane at the start of its dmabuf; data_offset is
	 * not passed); -1 = the buffer's own bounce memory. The fds stay the
	 * caller's. */
	int dmabuf[M2M_MAX_PLANES];
};

/* A QBUF of the buffer's own memory on every plane (MMAP, or the bounce
 * memory of a USERPTR or DMABUF queue): the copy path. */
static inline void m2m_buf_own(struct m2m_buf *b)
{
	for (unsigned p = 0; p < M2M_MAX_PLANES; p++) {
		b->userptr[p] = 0;
		b->length[p] = 0;
		b->dmabuf[p] = -1;
	}
}

/* A buffer plane the daemon can copy through: a mapped MMAP plane, or on a
 * USERPTR queue the plane's own anonymous (bounce) memory, used when a QBUF
 * gives no user pointer for it; on a DMABUF queue (CONFIG_VUV_DMABUF) its
 * part of the queue's sealed memfd, made a udmabuf when first queued. */
struct m2m_plane_map {
	void *addr;
	size_t length;
	uint64_t off;			/* DMABUF: where in the queue's bounce_fd */
	int dmabuf;			/* DMABUF: its udmabuf, -1 none yet */
	bool cpu;			/* DMABUF: the CPU may access it (DMA_BUF_SYNC_START) */
};

struct m2m_ctx {
	int fd;
	bool mplane;
	uint32_t buf_type[2];		/* V4L2_BUF_TYPE_* of SRC and DST */
	unsigned nbufs[2];
	unsigned num_planes[2];		/* memory planes of the allocated buffers */
	struct m2m_plane_map map[2][M2M_MAX_BUFFERS][M2M_MAX_PLANES];
	uint32_t buf_caps[2];		/* V4L2_BUF_CAP_* from REQBUFS */
	enum m2m_memory mem[2];		/* memory of the buffers (m2m_alloc_buffers) */
	int bounce_fd[2];		/* DMABUF: the buffers' bounce memfd, -1 none */
	uint64_t bounce_len[2];		/* its size */
	bool streaming[2];
};

/* fourcc as a printable string, for logs. buf must hold 5 bytes. */
const char *m2m_fourcc(uint32_t fourcc, char buf[5]);
const char *m2m_queue_name(enum m2m_queue q);

/* Open a node, QUERYCAP, enumerate formats (with pair masks), detect the
 * role. -ENODEV: not a mem2mem device; -ENOTSUP: not a stateful codec we
 * can drive (e.g. stateless). */
int m2m_probe(const char *path, struct m2m_info *info);

/* Open a new context (one per stream): O_RDWR | O_NONBLOCK | O_CLOEXEC. */
int m2m_open(struct m2m_ctx *ctx, const char *path, bool mplane);
/* Unmap, free buffers, close. Safe on a closed or failed context. */
void m2m_close(struct m2m_ctx *ctx);

int m2m_set_fmt(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_pix *pix);
int m2m_get_fmt(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_pix *pix);
/* V4L2_SEL_TGT_COMPOSE on DST (decoders) / CROP on SRC (encoders). */
int m2m_get_selection(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t target, struct m2m_rect *r);
int m2m_set_selection(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t target, struct m2m_rect *r);
int m2m_set_frame_rate(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t fps);
int m2m_get_frame_rate(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t *fps);

/* REQBUFS(ctx->mem[q], *count) then QUERYBUF + mmap of every plane (MMAP),
 * or anonymous memory of the plane's length (USERPTR: the bounce memory of
 * the copy path); *count is updated to what the driver granted. A REQBUFS
 * of USERPTR or DMABUF that fails is retried with MMAP, and ctx->mem[q]
 * says MMAP then. *count == 0 frees everything. */
int m2m_alloc_buffers(struct m2m_ctx *ctx, enum m2m_queue q, unsigned *count);
/* The V4L2_BUF_CAP_* of queue q, from a REQBUFS(MMAP, 0): only while the
 * queue has no buffers (it frees them). */
int m2m_query_buf_caps(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t *caps);
const char *m2m_memory_name(enum m2m_memory m);

int m2m_qbuf(struct m2m_ctx *ctx, enum m2m_queue q, const struct m2m_buf *b);
/* -EAGAIN: nothing ready; -EPIPE: the last buffer was already dequeued. */
int m2m_dqbuf(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_buf *b);
int m2m_streamon(struct m2m_ctx *ctx, enum m2m_queue q);
int m2m_streamoff(struct m2m_ctx *ctx, enum m2m_queue q);

int m2m_subscribe(struct m2m_ctx *ctx, uint32_t event_type);
/* *type = V4L2_EVENT_*, *changes = src_change.changes. -EAGAIN: none. */
int m2m_dqevent(struct m2m_ctx *ctx, uint32_t *type, uint32_t *changes);

/* V4L2_DEC_CMD_* / V4L2_ENC_CMD_*; try = TRY_ variant. */
int m2m_decoder_cmd(struct m2m_ctx *ctx, uint32_t cmd, bool try);
int m2m_encoder_cmd(struct m2m_ctx *ctx, uint32_t cmd, bool try);

int m2m_get_ctrl(struct m2m_ctx *ctx, uint32_t id, int32_t *value);
int m2m_set_ctrl(struct m2m_ctx *ctx, uint32_t id, int32_t value);
/* Range of a control; -EINVAL if the device lacks it. */
int m2m_query_ctrl(struct m2m_ctx *ctx, uint32_t id, int32_t *min, int32_t *max, int32_t *def);
/* Menu item i of a menu control is supported. */
bool m2m_menu_has(struct m2m_ctx *ctx, uint32_t id, uint32_t index);

#endif /* V4L2_H */
