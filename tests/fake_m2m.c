/* SPDX-License-Identifier: MIT */
/*
 * fake_m2m: a deterministic V4L2 mem2mem stateful codec behind the v4l2.h
 * API, linked instead of v4l2.c into a test build of the daemon
 * (build/tests/vhost-user-video-fake), so that the device model can be
 * tested on a host without V4L2.
 *
 * Device paths: "fake:decoder" or "fake:encoder", optionally followed by
 * ":mplane" (V4L2_CAP_VIDEO_M2M_MPLANE), optionally followed by
 * ":mem-planes" (the raw formats are YUV420M and NV12M, one memory plane
 * per colour plane, as MediaTek's encoder offers them) or ":both-planes"
 * (YUV420, NV12, YUV420M and NV12M, as Wave5 offers them; there the decoder
 * seeds a YM12/NM12 frame with its own fourcc, so that a test sees which
 * one the daemon chose). Anything else: -ENOENT.
 *
 * The codec is tests/fake_codec.h. The behaviour modelled is what
 * dev-decoder.rst, dev-encoder.rst, vb2 and the v4l2-mem2mem draining
 * helpers (v4l2_update_last_buf_state & co.) do:
 *  - formats FWHT (coded) and YU12/NV12 (raw, one memory plane), or with
 *    :mem-planes YM12/NM12 (the same bytes, split at the colour planes); S_FMT
 *    adjusts, -EBUSY once buffers exist; G/S_SELECTION (decoder COMPOSE,
 *    encoder CROP); G/S_PARM (encoder only); controls MIN_BUFFERS_FOR_*,
 *    GOP_SIZE and FORCE_KEY_FRAME (encoder); no BITRATE & co.
 *  - REQBUFS with malloc'ed "MMAP" planes; QBUF/DQBUF with vb2's checks
 *    (-EINVAL not streaming, -EPIPE after the LAST buffer, -EAGAIN).
 *    USERPTR planes are used in place; a DMABUF plane is mmap()ed at QBUF
 *    (at least sizeimage, as vb2 checks) and the codec works in it; one
 *    given as -1 uses the buffer's own memory (v4l2.c's bounce memory).
 *  - The decoder parses the OUTPUT queue as a byte stream (frames may span
 *    buffers; bytes that are not a frame mark their buffer ERROR), raises
 *    SOURCE_CHANGE at the first header and at every size change (then the
 *    next capture buffer is an empty LAST one and decoding waits for a
 *    capture STREAMOFF/STREAMON), and holds frames until capture is set up.
 *  - STOP: the last OUTPUT buffer queued at that moment is the last one
 *    processed; its frame carries LAST (or an empty LAST buffer follows);
 *    later OUTPUT buffers wait for START. STREAMOFF returns every buffer
 *    and clears the drain state like the m2m core.
 *  - Work is done synchronously inside the calls that make it possible
 *    (QBUF, STREAMON, commands): a very fast device, and deterministic.
 *
 * The fd given to the daemon is one end of a loopback TCP connection: the
 * fake makes it readable (a byte) while a buffer can be dequeued and raises
 * POLLPRI (an urgent byte, MSG_OOB) while an event is pending; its send side
 * is kept full so it never polls writable. So the daemon's event thread
 * polls it exactly as it polls a V4L2 fd.
 *
 * Faults: VUV_FAKE_FAULTS="name=N,..." read at every open, counted per
 * context: enodev=N (the device is gone after N capture buffers are done:
 * every call -ENODEV, the fd hangs up), error=N (capture buffer N comes
 * back with V4L2_BUF_FLAG_ERROR), eio_qbuf=N (OUTPUT QBUF number N fails
 * with -EIO), bad_index=N (capture DQBUF number N reports an index past
 * the queue; the buffer itself is lost, as with a broken driver),
 * big_used=N (capture buffer N reports bytesused 4096 past its length),
 * epipe=N (from capture DQBUF number N on,
 * -EPIPE until STREAMOFF, as after a LAST buffer, though none came), streamon=N (STREAMON number N fails with -EIO),
 * stale_err=N (at OUTPUT STREAMOFF number N the codec stalls; the first
 * poll() that then asks for POLLIN or POLLOUT on the fd while work is queued
 * returns at once with POLLERR, and the next poll() on the fd resumes the
 * codec: a report that is stale by the time it is read, see poll() below),
 * no_event=1 (SOURCE_CHANGE is never raised: the decoder waits for a
 * capture setup that never comes), storm=N (every event comes N+1 times,
 * up to FK_MAX_EVENTS pending). ctx=K: only the K-th context
 * opened by the process gets the faults (default: every one). N counts
 * from 1.
 *
 * VUV_FAKE_STRICT=1 (read at every open): a caller bug that vb2 would
 * only refuse with -EINVAL, QBUF of a buffer the driver holds or of an
 * index past the queue, aborts with one line instead (tests/fuzz).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/videodev2.h>

#include "../v4l2.h"
#include "fake_codec.h"

#define FK_MAX_FD 4096
#define FK_MAX_EVENTS 256
#define FK_MIN_DIM 16u
#define FK_MAX_DIM 4096u

/* The raw formats: one memory plane, :mem-planes, :both-planes */
enum fk_planes { FK_ONE_PLANE, FK_MEM_PLANES, FK_BOTH_PLANES };

struct fk_buf {
	bool queued;			/* owned by the driver (ready or done) */
	uint32_t flags;
	uint64_t ts;
	uint32_t bytesused[M2M_MAX_PLANES];
	uint8_t *mem[M2M_MAX_PLANES];	/* what the codec reads/writes: own, or a USERPTR */
	size_t len[M2M_MAX_PLANES];
	uint8_t *own[M2M_MAX_PLANES];	/* the buffer's own memory (MMAP, USERPTR bounce) */
	size_t min_len[M2M_MAX_PLANES];	/* vb2's min_length: sizeimage at REQBUFS */
	void *dmamap[M2M_MAX_PLANES];	/* a DMABUF plane's mapping, until the next QBUF */
	size_t dmamap_len[M2M_MAX_PLANES];
};

struct fk_queue {
	struct m2m_pix pix;
	unsigned nbufs, nplanes;
	struct fk_buf b[M2M_MAX_BUFFERS];
	unsigned ready[M2M_MAX_BUFFERS], nready;	/* queued, not processed */
	unsigned done[M2M_MAX_BUFFERS], ndone;	/* processed, to dequeue */
	bool streaming;
	bool last_dequeued;		/* vb2: DQBUF -EPIPE until STREAMOFF */
	uint32_t fps;
};

struct fk_ctx {
	int fd, peer;
	enum m2m_role role;
	bool mplane;
	enum fk_planes planes;		/* :mem-planes, :both-planes */
	struct fk_queue q[2];
	bool sub_src_change, sub_eos;
	uint32_t ev[FK_MAX_EVENTS];
	unsigned nev;
	/* readiness of fd */
	unsigned in_outstanding;	/* bytes sent to fd, not read back */
	bool pri_outstanding;		/* an urgent byte sent, not read back */
	/* m2m draining helpers */
	bool is_draining, has_stopped, next_buf_last;
	int last_src;			/* OUTPUT buffer marked at STOP, -1 */
	bool stop_reached;		/* last_src was consumed */
	/* decoder */
	uint8_t *as;			/* the frame being assembled */
	size_t as_len, as_cap;
	uint64_t as_ts;
	size_t src_off;			/* bytes of ready[0] consumed */
	bool src_junk;			/* ready[0] held bytes that are no frame */
	bool hdr_known, wait_capture, res_last;
	uint32_t w, h;			/* visible size of the stream */
	struct m2m_rect rect;		/* decoder compose / encoder crop */
	/* encoder */
	int32_t gop;
	bool force_key;
	uint32_t frame_no;
	/* faults and counters */
	unsigned f_enodev, f_error, f_eio_qbuf;
	unsigned f_bad_index, f_big_used, f_epipe, f_streamon, f_no_event, f_storm;
	unsigned f_no_userptr, f_userptr_fail, f_stale_err;
	enum { FK_STALE_NONE, FK_STALE_ARMED, FK_STALE_SENT } stale;	/* stale_err */
	enum m2m_memory mem[2];
	unsigned n_dst_done, n_src_qbuf, n_dst_dqbuf, n_streamon, n_src_streamoff;
	bool dead;
	bool strict;			/* VUV_FAKE_STRICT: caller bugs abort */
	unsigned idle_calls;
	bool idle_warned;
	unsigned dead_calls;		/* calls after the device went away */
	unsigned idle_max;		/* longest run of idle DQBUF calls */
};

static pthread_mutex_t fk_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fk_ctx *fk_table[FK_MAX_FD];
static int fk_listen = -1;
static unsigned fk_opens;		/* contexts opened, for ctx=K */

/* ---- path, formats ------------------------------------------------------- */

static int parse_path(const char *path, enum m2m_role *role, bool *mplane,
		      enum fk_planes *planes)
{
	const char *rest;

	if (!path || strncmp(path, "fake:", 5))
		return -ENOENT;
	path += 5;
	if (!strncmp(path, "decoder", 7)) {
		*role = M2M_ROLE_DECODER;
		rest = path + 7;
	} else if (!strncmp(path, "encoder", 7)) {
		*role = M2M_ROLE_ENCODER;
		rest = path + 7;
	} else {
		return -ENOENT;
	}
	*planes = !strcmp(rest, ":mplane:mem-planes") ? FK_MEM_PLANES
		  : !strcmp(rest, ":mplane:both-planes") ? FK_BOTH_PLANES : FK_ONE_PLANE;
	*mplane = *planes != FK_ONE_PLANE || !strcmp(rest, ":mplane");
	return *mplane || !*rest ? 0 : -ENOENT;
}

/* The one-memory-plane format of the same bytes: what the codec seeds and
 * hashes with, so that YM12 decodes and encodes exactly as YU12. */
static uint32_t base_fourcc(uint32_t f)
{
	return f == V4L2_PIX_FMT_NV12M ? V4L2_PIX_FMT_NV12
	       : f == V4L2_PIX_FMT_YUV420M ? V4L2_PIX_FMT_YUV420 : f;
}

/* A raw format of this device, or what S_FMT makes of another: the
 * default, YUV420 (YUV420M with :mem-planes). */
static uint32_t raw_fourcc(uint32_t f, enum fk_planes planes)
{
	bool m = f != base_fourcc(f);
	bool nv12 = base_fourcc(f) == V4L2_PIX_FMT_NV12;

	if (planes == FK_BOTH_PLANES || m == (planes == FK_MEM_PLANES))
		return nv12 || base_fourcc(f) == V4L2_PIX_FMT_YUV420 ? f
		       : m ? V4L2_PIX_FMT_YUV420M : V4L2_PIX_FMT_YUV420;
	return planes == FK_MEM_PLANES ? V4L2_PIX_FMT_YUV420M : V4L2_PIX_FMT_YUV420;
}

static uint32_t clampu(uint32_t v, uint32_t lo, uint32_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* The layout of a raw format of visible size w x h. */
static void raw_layout(struct m2m_pix *p, uint32_t fourcc, uint32_t w, uint32_t h,
		       enum fk_planes planes)
{
	uint32_t cw = fk_align(clampu(w, FK_MIN_DIM, FK_MAX_DIM));
	uint32_t ch = fk_align(clampu(h, FK_MIN_DIM, FK_MAX_DIM));

	memset(p, 0, sizeof(*p));
	p->pixfmt = raw_fourcc(fourcc, planes);
	p->width = cw;
	p->height = ch;
	p->num_planes = 1;
	p->bytesperline[0] = cw;
	p->sizeimage[0] = cw * ch * 3 / 2;
	if (p->pixfmt == V4L2_PIX_FMT_NV12M) {
		p->num_planes = 2;
		p->sizeimage[0] = cw * ch;
		p->bytesperline[1] = cw;
		p->sizeimage[1] = cw * ch / 2;
	} else if (p->pixfmt == V4L2_PIX_FMT_YUV420M) {
		p->num_planes = 3;
		p->sizeimage[0] = cw * ch;
		for (unsigned i = 1; i < 3; i++) {
			p->bytesperline[i] = cw / 2;
			p->sizeimage[i] = cw / 2 * (ch / 2);
		}
	}
}

static void coded_layout(struct m2m_pix *p, uint32_t w, uint32_t h, uint32_t sizeimage)
{
	uint32_t cw = fk_align(clampu(w, FK_MIN_DIM, FK_MAX_DIM));
	uint32_t ch = fk_align(clampu(h, FK_MIN_DIM, FK_MAX_DIM));

	memset(p, 0, sizeof(*p));
	p->pixfmt = V4L2_PIX_FMT_FWHT;
	p->width = cw;
	p->height = ch;
	p->num_planes = 1;
	p->sizeimage[0] = sizeimage ? clampu(sizeimage, 256, 16u << 20)
				    : FK_HDR + cw * ch * 3 / 4;
}

/* ---- readiness of the fd -------------------------------------------------- */

static int tcp_pair(int *a, int *b)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int small = 4096, one = 1, fa, fb;

	if (fk_listen < 0) {
		fk_listen = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fk_listen < 0)
			return -errno;
		if (bind(fk_listen, (struct sockaddr *)&sa, sizeof(sa)) || listen(fk_listen, 16)) {
			int e = -errno;

			close(fk_listen);
			fk_listen = -1;
			return e;
		}
	}
	if (getsockname(fk_listen, (struct sockaddr *)&sa, &sl))
		return -errno;
	fa = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fa < 0)
		return -errno;
	setsockopt(fa, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	if (connect(fa, (struct sockaddr *)&sa, sizeof(sa))) {
		int e = -errno;

		close(fa);
		return e;
	}
	fb = accept4(fk_listen, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fb < 0) {
		int e = -errno;

		close(fa);
		return e;
	}
	setsockopt(fb, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	setsockopt(fa, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &one, sizeof(one));
	setsockopt(fa, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fb, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*a = fa;
	*b = fb;
	return 0;
}

/* Keep the daemon's end unwritable: its peer never reads. */
static void fill_send(struct fk_ctx *c)
{
	static const uint8_t junk[4096];

	while (send(c->fd, junk, sizeof(junk), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
		;
}

static bool want_in(const struct fk_ctx *c)
{
	return c->q[M2M_SRC].ndone || c->q[M2M_DST].ndone ||
	       (c->q[M2M_DST].streaming && c->q[M2M_DST].last_dequeued);
}

/* Make the fd's POLLIN and POLLPRI match the state. A byte in flight on
 * loopback shows up later and is read back at the next call: at worst one
 * spurious wake-up, never a lost one. Normal data is read back only while
 * no urgent byte is outstanding: reading past the urgent mark clears it. */
static void fk_sync(struct fk_ctx *c)
{
	uint8_t buf[64];
	ssize_t n;

	if (c->dead)
		return;
	fill_send(c);
	if (c->nev && !c->pri_outstanding) {
		if (send(c->peer, "!", 1, MSG_OOB | MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
			c->pri_outstanding = true;
	} else if (!c->nev && c->pri_outstanding) {
		if (recv(c->fd, buf, 1, MSG_OOB | MSG_DONTWAIT) == 1)
			c->pri_outstanding = false;
	}
	if (want_in(c)) {
		if (!c->in_outstanding && send(c->peer, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
			c->in_outstanding = 1;
	} else if (c->in_outstanding && !c->pri_outstanding) {
		while ((n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
			c->in_outstanding -= (unsigned)n < c->in_outstanding ? (unsigned)n
									       : c->in_outstanding;
	}
}

/*
 * Fault stale_err. What poll() reports describes the moment it was
 * evaluated; the caller acts on it later. The real m2m poll reports POLLERR
 * while neither queue has a buffer to work on (v4l2_m2m_poll_for_data): an
 * OUTPUT STREAMOFF (a seek) while every capture buffer is with the daemon
 * wakes the event thread with POLLERR, and by the time it has the daemon's
 * lock the command thread may have queued buffers again. This poll() takes
 * libc's place in the fake build and passes every call through, except on
 * a context with the fault armed: its codec stalls at the STREAMOFF, so
 * that once work is queued a poll() that asks for POLLIN or POLLOUT finds
 * nothing to dequeue and returns at once with POLLERR added; the codec
 * resumes at the next poll() on the fd (the daemon's next wait, or its check
 * of that POLLERR), and its work shows up then. Deterministic, whatever the
 * threads' timing.
 */
static void fk_run(struct fk_ctx *c);

static struct fk_ctx *fk_of_fd(int fd)
{
	return fd >= 0 && fd < FK_MAX_FD ? fk_table[fd] : NULL;
}

static bool fk_stale_due(const struct fk_ctx *c, short events)
{
	const struct fk_queue *s = &c->q[M2M_SRC], *d = &c->q[M2M_DST];

	return c->stale == FK_STALE_ARMED && (events & (POLLIN | POLLOUT)) && !s->ndone &&
	       !d->ndone && !d->last_dequeued && !c->nev &&
	       ((s->streaming && s->nready) || (d->streaming && d->nready));
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	struct timespec ts = { timeout / 1000, timeout % 1000 * 1000000L }, zero = { 0, 0 };
	bool due = false;
	int r;

	pthread_mutex_lock(&fk_lock);
	for (nfds_t i = 0; i < n; i++) {
		struct fk_ctx *c = fk_of_fd(fds[i].fd);

		if (c && c->stale == FK_STALE_SENT) {
			c->stale = FK_STALE_NONE;
			fk_run(c);
		}
		due |= c && fk_stale_due(c, fds[i].events);
	}
	pthread_mutex_unlock(&fk_lock);
	r = ppoll(fds, n, due ? &zero : timeout < 0 ? NULL : &ts, NULL);
	if (r < 0 || !due)
		return r;
	pthread_mutex_lock(&fk_lock);
	for (nfds_t i = 0; i < n; i++) {
		struct fk_ctx *c = fk_of_fd(fds[i].fd);

		if (!c || !fk_stale_due(c, fds[i].events))
			continue;
		c->stale = FK_STALE_SENT;
		r += !fds[i].revents;
		fds[i].revents |= POLLERR;
		fprintf(stderr, "fake_m2m: fd %d: injected fault: a stale POLLERR "
			"(nothing to dequeue, work queued)\n", c->fd);
	}
	pthread_mutex_unlock(&fk_lock);
	return r;
}

static void fk_kill(struct fk_ctx *c)
{
	if (c->dead)
		return;
	c->dead = true;
	shutdown(c->fd, SHUT_RDWR);	/* POLLHUP, as an unregistered video node */
	fprintf(stderr, "fake_m2m: fd %d: injected fault: the device is gone (ENODEV)\n", c->fd);
}

/* ---- contexts --------------------------------------------------------------- */

static unsigned fault_value(const char *spec, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = spec; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (!strncmp(p, name, n) && p[n] == '=')
			return (unsigned)strtoul(p + n + 1, NULL, 10);
	return 0;
}

static struct fk_ctx *ctx_of(const struct m2m_ctx *ctx)
{
	if (!ctx || ctx->fd < 0 || ctx->fd >= FK_MAX_FD)
		return NULL;
	return fk_table[ctx->fd];
}

static void set_types(struct m2m_ctx *ctx, bool mplane)
{
	ctx->mplane = mplane;
	ctx->buf_type[M2M_SRC] = mplane ? V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
					: V4L2_BUF_TYPE_VIDEO_OUTPUT;
	ctx->buf_type[M2M_DST] = mplane ? V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
					: V4L2_BUF_TYPE_VIDEO_CAPTURE;
}

int m2m_open(struct m2m_ctx *ctx, const char *path, bool mplane)
{
	struct fk_ctx *c;
	enum m2m_role role;
	bool mp;
	enum fk_planes planes;
	const char *faults = getenv("VUV_FAKE_FAULTS");
	int r = parse_path(path, &role, &mp, &planes);

	memset(ctx, 0, sizeof(*ctx));
	ctx->fd = -1;
	set_types(ctx, mplane);
	if (r)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_lock(&fk_lock);
	r = tcp_pair(&c->fd, &c->peer);
	if (!r && c->fd >= FK_MAX_FD) {
		close(c->fd);
		close(c->peer);
		r = -EMFILE;
	}
	if (r) {
		pthread_mutex_unlock(&fk_lock);
		free(c);
		return r;
	}
	c->role = role;
	c->mplane = mplane;
	c->planes = planes;
	c->last_src = -1;
	c->gop = 10;
	c->w = 640;
	c->h = 480;
	if (fault_value(faults, "ctx") && ++fk_opens != fault_value(faults, "ctx"))
		faults = NULL;
	c->f_enodev = fault_value(faults, "enodev");
	c->f_error = fault_value(faults, "error");
	c->f_eio_qbuf = fault_value(faults, "eio_qbuf");
	c->f_bad_index = fault_value(faults, "bad_index");
	c->f_big_used = fault_value(faults, "big_used");
	c->f_epipe = fault_value(faults, "epipe");
	c->f_streamon = fault_value(faults, "streamon");
	c->f_no_event = fault_value(faults, "no_event");
	c->f_storm = fault_value(faults, "storm");
	c->f_no_userptr = fault_value(faults, "no_userptr");
	c->f_userptr_fail = fault_value(faults, "userptr_fail");
	c->f_stale_err = fault_value(faults, "stale_err");
	c->strict = getenv("VUV_FAKE_STRICT") && atoi(getenv("VUV_FAKE_STRICT"));
	if (role == M2M_ROLE_DECODER) {
		coded_layout(&c->q[M2M_SRC].pix, 640, 480, 0);
		raw_layout(&c->q[M2M_DST].pix, V4L2_PIX_FMT_YUV420, 640, 480, planes);
	} else {
		raw_layout(&c->q[M2M_SRC].pix, V4L2_PIX_FMT_YUV420, 640, 480, planes);
		coded_layout(&c->q[M2M_DST].pix, 640, 480, 0);
	}
	c->rect = (struct m2m_rect){ 0, 0, 640, 480 };
	fk_table[c->fd] = c;
	fill_send(c);
	pthread_mutex_unlock(&fk_lock);
	ctx->fd = c->fd;
	return 0;
}

static void dma_unmap(struct fk_buf *b)
{
	for (unsigned p = 0; p < M2M_MAX_PLANES; p++) {
		if (b->dmamap[p])
			munmap(b->dmamap[p], b->dmamap_len[p]);
		b->dmamap[p] = NULL;
	}
}

static void free_bufs(struct fk_queue *q, struct m2m_ctx *ctx, enum m2m_queue mq)
{
	for (unsigned i = 0; i < M2M_MAX_BUFFERS; i++)
		for (unsigned p = 0; p < M2M_MAX_PLANES; p++) {
			if (!p)
				dma_unmap(&q->b[i]);
			free(q->b[i].own[p]);
			q->b[i].own[p] = q->b[i].mem[p] = NULL;
			q->b[i].len[p] = 0;
			if (ctx) {
				ctx->map[mq][i][p].addr = NULL;
				ctx->map[mq][i][p].length = 0;
			}
		}
	memset(q->b, 0, sizeof(q->b));
	q->nbufs = 0;
	q->nready = q->ndone = 0;
	if (ctx)
		ctx->nbufs[mq] = 0;
}

void m2m_close(struct m2m_ctx *ctx)
{
	struct fk_ctx *c;

	pthread_mutex_lock(&fk_lock);
	c = ctx_of(ctx);
	if (c) {
		if (c->dead)
			fprintf(stderr, "fake_m2m: fd %d: %u calls after the device went away\n",
				c->fd, c->dead_calls);
		if (c->idle_max >= 100)
			fprintf(stderr, "fake_m2m: fd %d: up to %u DQBUF calls in a row found nothing\n",
				c->fd, c->idle_max);
		fk_table[c->fd] = NULL;
		free_bufs(&c->q[M2M_SRC], ctx, M2M_SRC);
		free_bufs(&c->q[M2M_DST], ctx, M2M_DST);
		close(c->fd);
		close(c->peer);
		free(c->as);
		free(c);
	}
	pthread_mutex_unlock(&fk_lock);
	if (ctx)
		ctx->fd = -1;
}

/* ---- processing ----------------------------------------------------------- */

static void event_queue(struct fk_ctx *c, uint32_t type)
{
	if ((type == V4L2_EVENT_SOURCE_CHANGE && !c->sub_src_change) ||
	    (type == V4L2_EVENT_EOS && !c->sub_eos) || c->nev == FK_MAX_EVENTS)
		return;
	if (type == V4L2_EVENT_SOURCE_CHANGE && c->f_no_event) {
		fprintf(stderr, "fake_m2m: fd %d: injected fault: SOURCE_CHANGE not raised\n", c->fd);
		return;
	}
	c->ev[c->nev++] = type;
	if (c->f_storm)
		fprintf(stderr, "fake_m2m: fd %d: injected fault: %u copies of event %u\n", c->fd,
			c->f_storm, type);
	for (unsigned i = 0; i < c->f_storm && c->nev < FK_MAX_EVENTS; i++)
		c->ev[c->nev++] = type;
}

static void buf_done(struct fk_ctx *c, enum m2m_queue mq, unsigned idx, uint32_t flags)
{
	struct fk_queue *q = &c->q[mq];
	struct fk_buf *b = &q->b[idx];

	b->flags = (b->flags & ~(uint32_t)(V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_LAST |
					   V4L2_BUF_FLAG_ERROR | V4L2_BUF_FLAG_KEYFRAME |
					   V4L2_BUF_FLAG_PFRAME)) | V4L2_BUF_FLAG_DONE | flags;
	q->done[q->ndone++] = idx;
	if (mq == M2M_DST) {
		c->n_dst_done++;
		if (c->f_error && c->n_dst_done == c->f_error)
			b->flags |= V4L2_BUF_FLAG_ERROR;
		if (c->f_big_used && c->n_dst_done == c->f_big_used) {
			fprintf(stderr, "fake_m2m: fd %d: injected fault: capture bytesused %zu of %zu\n",
				c->fd, b->len[0] + 4096, b->len[0]);
			b->bytesused[0] = (uint32_t)b->len[0] + 4096;
		}
		if (c->f_enodev && c->n_dst_done >= c->f_enodev)
			fk_kill(c);
	}
}

/* Take the oldest ready buffer of q off the ready list. */
static unsigned ready_pop(struct fk_queue *q)
{
	unsigned idx = q->ready[0];

	memmove(q->ready, q->ready + 1, --q->nready * sizeof(q->ready[0]));
	return idx;
}

/* v4l2_m2m_last_buffer_done: buffer idx of CAPTURE ends the drain, with
 * the frame it holds (flags) or empty. */
static void last_buffer_done(struct fk_ctx *c, unsigned idx, bool keep, uint32_t flags)
{
	struct fk_buf *b = &c->q[M2M_DST].b[idx];

	if (!keep) {
		memset(b->bytesused, 0, sizeof(b->bytesused));
		b->ts = 0;
	}
	buf_done(c, M2M_DST, idx, V4L2_BUF_FLAG_LAST | flags);
	c->is_draining = false;
	c->next_buf_last = false;
	c->has_stopped = true;
	c->last_src = -1;
	c->stop_reached = false;
	event_queue(c, V4L2_EVENT_EOS);
}

/* The next capture buffer is an empty LAST one (drain without a frame,
 * resolution change). */
static void force_last(struct fk_ctx *c, bool drain)
{
	struct fk_queue *d = &c->q[M2M_DST];

	if (d->nready) {
		unsigned idx = ready_pop(d);

		if (drain) {
			last_buffer_done(c, idx, false, 0);
		} else {
			memset(d->b[idx].bytesused, 0, sizeof(d->b[idx].bytesused));
			d->b[idx].ts = 0;
			buf_done(c, M2M_DST, idx, V4L2_BUF_FLAG_LAST);
		}
		return;
	}
	if (drain)
		c->next_buf_last = true;
	else
		c->res_last = true;
}

static bool as_complete(const struct fk_ctx *c)
{
	return c->as_len >= FK_HDR && c->as_len - FK_HDR >= fk_be32(c->as + 40);
}

static size_t as_need(const struct fk_ctx *c)
{
	return c->as_len < FK_HDR ? FK_HDR - c->as_len : FK_HDR + fk_be32(c->as + 40) - c->as_len;
}

static bool as_append(struct fk_ctx *c, const uint8_t *p, size_t n)
{
	if (c->as_len + n > c->as_cap) {
		size_t cap = c->as_len + n + 4096;
		uint8_t *nb = realloc(c->as, cap);

		if (!nb)
			return false;
		c->as = nb;
		c->as_cap = cap;
	}
	memcpy(c->as + c->as_len, p, n);
	c->as_len += n;
	return true;
}

static const uint8_t fk_magic[8] = { 0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff };

/* Move bytes of the oldest OUTPUT buffer into the frame being assembled;
 * return the buffer when it is used up. false: nothing to consume. */
static bool dec_consume(struct fk_ctx *c)
{
	struct fk_queue *s = &c->q[M2M_SRC];
	struct fk_buf *b;
	unsigned idx;
	size_t avail, n;
	const uint8_t *p;

	if (!s->streaming || !s->nready || c->has_stopped || c->stop_reached)
		return false;
	idx = s->ready[0];
	b = &s->b[idx];
	p = b->mem[0] + c->src_off;
	avail = b->bytesused[0] - c->src_off;
	if (c->as_len == 0) {
		/* a frame starts here: skip anything that is not one */
		size_t skip = 0;

		while (skip < avail && (avail - skip < 8 || memcmp(p + skip, fk_magic, 8)))
			skip++;
		if (skip) {
			c->src_junk = true;
			c->src_off += skip;
			p += skip;
			avail -= skip;
		}
		if (avail)
			c->as_ts = b->ts;
	}
	n = as_need(c);
	if (n > avail)
		n = avail;
	if (n && !as_append(c, p, n))
		c->src_junk = true;
	c->src_off += n;
	if (c->as_len >= FK_HDR && fk_be32(c->as + 40) > (64u << 20)) {
		c->src_junk = true;	/* absurd size: not a frame */
		c->as_len = 0;
	}
	if (c->src_off == b->bytesused[0]) {
		ready_pop(s);
		c->src_off = 0;
		buf_done(c, M2M_SRC, idx, c->src_junk ? V4L2_BUF_FLAG_ERROR : 0);
		c->src_junk = false;
		if (c->is_draining && (int)idx == c->last_src)
			c->stop_reached = true;
	}
	return true;
}

static void dec_set_size(struct fk_ctx *c, uint32_t w, uint32_t h)
{
	struct fk_queue *d = &c->q[M2M_DST];

	c->w = w;
	c->h = h;
	raw_layout(&d->pix, d->pix.pixfmt, w, h, c->planes);
	coded_layout(&c->q[M2M_SRC].pix, w, h, c->q[M2M_SRC].pix.sizeimage[0]);
	c->rect = (struct m2m_rect){ 0, 0, w, h };
}

static void dec_frame(struct fk_ctx *c)
{
	struct fk_queue *d = &c->q[M2M_DST];
	unsigned idx = ready_pop(d);
	struct fk_buf *b = &d->b[idx];
	uint32_t seed = fk_seed(c->as + FK_HDR, c->as_len - FK_HDR) ^
			(c->planes == FK_BOTH_PLANES ? d->pix.pixfmt : base_fourcc(d->pix.pixfmt));
	uint32_t flags = (fk_be32(c->as + 20) & FK_I_FRAME) ? V4L2_BUF_FLAG_KEYFRAME
							     : V4L2_BUF_FLAG_PFRAME;
	size_t at = 0;		/* byte i of the frame, across its memory planes */

	memset(b->bytesused, 0, sizeof(b->bytesused));
	for (unsigned p = 0; p < d->nplanes; p++)
		if (b->len[p] < d->pix.sizeimage[p])
			flags |= V4L2_BUF_FLAG_ERROR;
	for (unsigned p = 0; p < d->nplanes && !(flags & V4L2_BUF_FLAG_ERROR); p++) {
		size_t need = d->pix.sizeimage[p];

		for (size_t i = 0; i < need; i++)
			b->mem[p][i] = fk_pixel(seed, at + i);
		at += need;
		b->bytesused[p] = (uint32_t)need;
	}
	b->ts = c->as_ts;
	c->as_len = 0;
	if (c->stop_reached)
		last_buffer_done(c, idx, true, flags);
	else
		buf_done(c, M2M_DST, idx, flags);
}

static void run_decoder(struct fk_ctx *c)
{
	struct fk_queue *d = &c->q[M2M_DST];

	while (!c->dead) {
		if (!as_complete(c)) {
			if (dec_consume(c))
				continue;
			if (c->stop_reached) {
				/* the last buffer before STOP ended without a whole frame */
				c->as_len = 0;
				c->stop_reached = false;
				force_last(c, true);
			}
			break;
		}
		uint32_t w = fk_be32(c->as + 12), h = fk_be32(c->as + 16);

		if (w < FK_MIN_DIM || h < FK_MIN_DIM || w > FK_MAX_DIM || h > FK_MAX_DIM) {
			c->as_len = 0;	/* undecodable: dropped */
			continue;
		}
		if (!c->hdr_known || w != c->w || h != c->h) {
			bool first = !c->hdr_known;

			if (c->wait_capture)
				break;
			dec_set_size(c, w, h);
			c->hdr_known = true;
			c->wait_capture = true;
			event_queue(c, V4L2_EVENT_SOURCE_CHANGE);
			if (!first && d->streaming)
				force_last(c, false);
			break;
		}
		if (c->wait_capture || !d->streaming || !d->nready)
			break;
		dec_frame(c);
	}
}

static void enc_frame(struct fk_ctx *c)
{
	struct fk_queue *s = &c->q[M2M_SRC], *d = &c->q[M2M_DST];
	unsigned si = ready_pop(s), di = ready_pop(d);
	struct fk_buf *sb = &s->b[si], *db = &d->b[di];
	const struct m2m_pix *px = &s->pix;
	uint32_t bpl = px->bytesperline[0], ch = px->height, hash = FK_FNV_INIT, flags = 0;
	struct m2m_rect r = c->rect;
	bool key = c->force_key || c->gop <= 1 || c->frame_no % (uint32_t)c->gop == 0;
	uint32_t sflags = 0;
	const uint8_t *cp[2];	/* the chroma planes: after Y, or their own memory planes */

	for (unsigned p = 0; p < s->nplanes; p++)
		if (sb->bytesused[p] < px->sizeimage[p])
			sflags = V4L2_BUF_FLAG_ERROR;	/* not a whole frame */
	if (!sflags) {
		cp[0] = px->num_planes > 1 ? sb->mem[1] : sb->mem[0] + (size_t)bpl * ch;
		cp[1] = px->num_planes > 2 ? sb->mem[2] : cp[0] + (size_t)(bpl / 2) * (ch / 2);
		/* Y, then the chroma planes at half size */
		for (uint32_t y = 0; y < r.height; y++)
			hash = fk_fnv(sb->mem[0] + (size_t)(r.top + (int32_t)y) * bpl + r.left, r.width, hash);
		if (base_fourcc(px->pixfmt) == V4L2_PIX_FMT_NV12) {
			for (uint32_t y = 0; y < r.height / 2; y++)
				hash = fk_fnv(cp[0] + (size_t)(r.top / 2 + (int32_t)y) * bpl + r.left,
					      r.width, hash);
		} else {
			for (unsigned p = 0; p < 2; p++)
				for (uint32_t y = 0; y < r.height / 2; y++)
					hash = fk_fnv(cp[p] + (size_t)(r.top / 2 + (int32_t)y) * (bpl / 2) +
						      r.left / 2, r.width / 2, hash);
		}
	}
	memset(db->bytesused, 0, sizeof(db->bytesused));
	if (sflags || db->len[0] < FK_HDR + FK_ENC_PAYLOAD) {
		flags = V4L2_BUF_FLAG_ERROR;
	} else {
		fk_header(db->mem[0], r.width, r.height, key ? FK_I_FRAME : 0, FK_ENC_PAYLOAD);
		fk_put_be32(db->mem[0] + FK_HDR, hash);
		fk_put_be32(db->mem[0] + FK_HDR + 4, c->frame_no);
		db->bytesused[0] = FK_HDR + FK_ENC_PAYLOAD;
		c->frame_no++;
		c->force_key = false;
	}
	db->ts = sb->ts;
	buf_done(c, M2M_SRC, si, sflags);
	if (c->is_draining && (int)si == c->last_src)
		last_buffer_done(c, di, true, flags);
	else
		buf_done(c, M2M_DST, di, flags);
}

static void run_encoder(struct fk_ctx *c)
{
	struct fk_queue *s = &c->q[M2M_SRC], *d = &c->q[M2M_DST];

	while (!c->dead && s->streaming && d->streaming && !c->has_stopped && s->nready &&
	       d->nready)
		enc_frame(c);
}

static void fk_run(struct fk_ctx *c)
{
	if (c->stale != FK_STALE_NONE) {
		fk_sync(c);	/* stalled: fault stale_err */
		return;
	}
	if (c->role == M2M_ROLE_DECODER)
		run_decoder(c);
	else
		run_encoder(c);
	fk_sync(c);
}

/* ---- the v4l2.h API --------------------------------------------------------- */

const char *m2m_fourcc(uint32_t f, char buf[5])
{
	for (int i = 0; i < 4; i++) {
		char ch = (char)((f >> (8 * i)) & 0xff);

		buf[i] = (ch >= 0x20 && ch < 0x7f) ? ch : '.';
	}
	buf[4] = '\0';
	return buf;
}

const char *m2m_queue_name(enum m2m_queue q)
{
	return q == M2M_SRC ? "output" : q == M2M_DST ? "capture" : "?";
}

int m2m_probe(const char *path, struct m2m_info *info)
{
	enum m2m_role role;
	bool mplane;
	enum fk_planes planes;
	int r = parse_path(path, &role, &mplane, &planes);
	enum m2m_queue coded, raw;
	struct m2m_format *f;

	memset(info, 0, sizeof(*info));
	if (r)
		return r;
	snprintf(info->driver, sizeof(info->driver), "fake-m2m");
	snprintf(info->card, sizeof(info->card), "fake %s",
		 role == M2M_ROLE_DECODER ? "decoder" : "encoder");
	snprintf(info->bus_info, sizeof(info->bus_info), "platform:fake");
	info->mplane = mplane;
	info->role = role;
	coded = role == M2M_ROLE_DECODER ? M2M_SRC : M2M_DST;
	raw = coded == M2M_SRC ? M2M_DST : M2M_SRC;
	info->nfmt[coded] = 1;
	f = &info->fmt[coded][0];
	f->pixfmt = V4L2_PIX_FMT_FWHT;
	f->flags = V4L2_FMT_FLAG_COMPRESSED;
	f->nsizes = 1;
	f->sizes[0] = (struct m2m_frmsize){ FK_MIN_DIM, FK_MAX_DIM, FK_ALIGN,
					    FK_MIN_DIM, FK_MAX_DIM, FK_ALIGN };
	/* YU12 NV12, YM12 NM12, or all four */
	info->nfmt[raw] = planes == FK_BOTH_PLANES ? 4 : 2;
	for (unsigned i = 0; i < info->nfmt[raw]; i++) {
		bool m = planes == FK_MEM_PLANES || i >= 2;

		info->fmt[raw][i].pixfmt = i % 2 ? (m ? V4L2_PIX_FMT_NV12M : V4L2_PIX_FMT_NV12)
						 : (m ? V4L2_PIX_FMT_YUV420M : V4L2_PIX_FMT_YUV420);
		info->fmt[raw][i].pair_mask = 1;
	}
	f->pair_mask = (1ull << info->nfmt[raw]) - 1;
	return 0;
}

/* Every call below: look the context up, fail with -ENODEV when the device
 * is gone, do the work, update the fd. */
#define FK_ENTER(ctx, c)						\
	struct fk_ctx *c;						\
	pthread_mutex_lock(&fk_lock);					\
	c = ctx_of(ctx);						\
	if (!c || c->dead) {						\
		if (c)							\
			c->dead_calls++;				\
		pthread_mutex_unlock(&fk_lock);				\
		return c ? -ENODEV : -EBADF;				\
	}
#define FK_LEAVE(r) do { pthread_mutex_unlock(&fk_lock); return (r); } while (0)

int m2m_set_fmt(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_pix *pix)
{
	FK_ENTER(ctx, c);
	struct fk_queue *fq = &c->q[q];
	bool coded = (q == M2M_SRC) == (c->role == M2M_ROLE_DECODER);

	if (fq->nbufs)
		FK_LEAVE(-EBUSY);
	if (coded && c->role == M2M_ROLE_DECODER) {
		coded_layout(&fq->pix, pix->width, pix->height, pix->sizeimage[0]);
		if (!c->hdr_known) {
			c->w = pix->width;
			c->h = pix->height;
		}
	} else if (coded) {
		/* encoder CAPTURE: the size follows OUTPUT */
		coded_layout(&fq->pix, c->q[M2M_SRC].pix.width, c->q[M2M_SRC].pix.height,
			     pix->sizeimage[0]);
	} else if (c->role == M2M_ROLE_DECODER) {
		/* decoder CAPTURE: the stream decides the size */
		raw_layout(&fq->pix, pix->pixfmt, c->w, c->h, c->planes);
	} else {
		raw_layout(&fq->pix, pix->pixfmt, pix->width, pix->height, c->planes);
		c->w = clampu(pix->width, FK_MIN_DIM, FK_MAX_DIM);
		c->h = clampu(pix->height, FK_MIN_DIM, FK_MAX_DIM);
		c->rect = (struct m2m_rect){ 0, 0, c->w, c->h };
		if (!c->q[M2M_DST].nbufs)
			coded_layout(&c->q[M2M_DST].pix, c->w, c->h, c->q[M2M_DST].pix.sizeimage[0]);
	}
	*pix = fq->pix;
	FK_LEAVE(0);
}

int m2m_get_fmt(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_pix *pix)
{
	FK_ENTER(ctx, c);
	*pix = c->q[q].pix;
	FK_LEAVE(0);
}

int m2m_get_selection(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t target, struct m2m_rect *r)
{
	FK_ENTER(ctx, c);
	if (c->role == M2M_ROLE_DECODER ? q != M2M_DST || target != V4L2_SEL_TGT_COMPOSE
					: q != M2M_SRC || target != V4L2_SEL_TGT_CROP)
		FK_LEAVE(-EINVAL);
	*r = c->rect;
	FK_LEAVE(0);
}

int m2m_set_selection(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t target, struct m2m_rect *r)
{
	FK_ENTER(ctx, c);
	const struct m2m_pix *px = &c->q[M2M_SRC].pix;

	if (c->role != M2M_ROLE_ENCODER || q != M2M_SRC || target != V4L2_SEL_TGT_CROP)
		FK_LEAVE(-EINVAL);
	if (c->q[M2M_SRC].streaming)
		FK_LEAVE(-EBUSY);
	/* even, inside the coded frame */
	r->left = r->left < 0 ? 0 : (int32_t)((uint32_t)r->left & ~1u);
	r->top = r->top < 0 ? 0 : (int32_t)((uint32_t)r->top & ~1u);
	if ((uint32_t)r->left > px->width - FK_MIN_DIM)
		r->left = (int32_t)(px->width - FK_MIN_DIM);
	if ((uint32_t)r->top > px->height - FK_MIN_DIM)
		r->top = (int32_t)(px->height - FK_MIN_DIM);
	r->width = clampu(r->width & ~1u, FK_MIN_DIM, px->width - (uint32_t)r->left);
	r->height = clampu(r->height & ~1u, FK_MIN_DIM, px->height - (uint32_t)r->top);
	c->rect = *r;
	FK_LEAVE(0);
}

int m2m_set_frame_rate(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t fps)
{
	FK_ENTER(ctx, c);
	if (c->role != M2M_ROLE_ENCODER)
		FK_LEAVE(-ENOTTY);
	if (!fps)
		FK_LEAVE(-EINVAL);
	c->q[q].fps = fps > 240 ? 240 : fps;
	FK_LEAVE(0);
}

int m2m_get_frame_rate(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t *fps)
{
	FK_ENTER(ctx, c);
	if (c->role != M2M_ROLE_ENCODER)
		FK_LEAVE(-ENOTTY);
	*fps = c->q[q].fps;	/* 0 until set: timeperframe 0/0 */
	FK_LEAVE(0);
}

int m2m_alloc_buffers(struct m2m_ctx *ctx, enum m2m_queue q, unsigned *count)
{
	FK_ENTER(ctx, c);
	struct fk_queue *fq = &c->q[q];
	unsigned n = *count > M2M_MAX_BUFFERS ? M2M_MAX_BUFFERS : *count;

	if (fq->streaming)
		FK_LEAVE(-EBUSY);
	free_bufs(fq, ctx, q);
	if (q == M2M_SRC) {
		if (c->f_stale_err && ++c->n_src_streamoff == c->f_stale_err)
			c->stale = FK_STALE_ARMED;
		c->as_len = 0;
		c->src_off = 0;
	}
	/* vb2: a memory type the queue does not offer is -EINVAL; v4l2.c's
	 * fallback to MMAP, as in m2m_alloc_buffers there */
	if (n && ctx->mem[q] == M2M_MEM_USERPTR && (c->f_no_userptr || c->f_userptr_fail)) {
		fprintf(stderr, "fake_m2m: fd %d: REQBUFS USERPTR -EINVAL%s\n", c->fd,
			c->f_userptr_fail ? " (injected)" : "");
		ctx->mem[q] = M2M_MEM_MMAP;
	}
	c->mem[q] = ctx->mem[q];
	for (unsigned i = 0; i < n; i++) {
		for (unsigned p = 0; p < fq->pix.num_planes; p++) {
			fq->b[i].len[p] = fq->b[i].min_len[p] = fq->pix.sizeimage[p];
			fq->b[i].own[p] = fq->b[i].mem[p] = calloc(1, fq->pix.sizeimage[p]);
			if (!fq->b[i].mem[p]) {
				free_bufs(fq, ctx, q);
				FK_LEAVE(-ENOMEM);
			}
			ctx->map[q][i][p].addr = fq->b[i].mem[p];
			ctx->map[q][i][p].length = fq->b[i].len[p];
		}
	}
	fq->nbufs = n;
	fq->nplanes = fq->pix.num_planes;
	ctx->nbufs[q] = n;
	ctx->num_planes[q] = fq->pix.num_planes;
	ctx->buf_caps[q] = V4L2_BUF_CAP_SUPPORTS_MMAP | V4L2_BUF_CAP_SUPPORTS_DMABUF |
			   (c->f_no_userptr ? 0 : V4L2_BUF_CAP_SUPPORTS_USERPTR);
	*count = n;
	FK_LEAVE(0);
}

int m2m_query_buf_caps(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t *caps)
{
	FK_ENTER(ctx, c);
	if (c->q[q].streaming)
		FK_LEAVE(-EBUSY);
	free_bufs(&c->q[q], ctx, q);
	ctx->nbufs[q] = 0;
	*caps = V4L2_BUF_CAP_SUPPORTS_MMAP | V4L2_BUF_CAP_SUPPORTS_DMABUF |
		(c->f_no_userptr ? 0 : V4L2_BUF_CAP_SUPPORTS_USERPTR);
	FK_LEAVE(0);
}

const char *m2m_memory_name(enum m2m_memory m)
{
	return m == M2M_MEM_USERPTR ? "userptr" : m == M2M_MEM_DMABUF ? "dmabuf" : "mmap";
}

int m2m_qbuf(struct m2m_ctx *ctx, enum m2m_queue q, const struct m2m_buf *mb)
{
	FK_ENTER(ctx, c);
	struct fk_queue *fq = &c->q[q];
	struct fk_buf *b;

	if (mb->index >= fq->nbufs || fq->b[mb->index].queued) {
		if (c->strict) {
			fprintf(stderr, "fake_m2m: fd %d: QBUF %s buffer %u %s (VUV_FAKE_STRICT)\n",
				c->fd, m2m_queue_name(q), mb->index,
				mb->index >= fq->nbufs ? "past the queue" : "which the driver holds");
			abort();
		}
		FK_LEAVE(-EINVAL);
	}
	b = &fq->b[mb->index];
	dma_unmap(b);
	for (unsigned p = 0; p < fq->nplanes; p++) {
		/* USERPTR (vb2 __prepare_userptr): the plane is the caller's
		 * memory, at least the format's sizeimage */
		b->mem[p] = b->own[p];
		b->len[p] = b->min_len[p];
		if (c->mem[q] == M2M_MEM_USERPTR && mb->userptr[p]) {
			if (mb->length[p] < b->min_len[p])
				FK_LEAVE(-EINVAL);
			b->mem[p] = (uint8_t *)mb->userptr[p];
			b->len[p] = mb->length[p];
		}
		if (c->mem[q] == M2M_MEM_DMABUF && mb->dmabuf[p] >= 0) {
			/* vb2 __prepare_dmabuf: the dmabuf's size is the plane's */
			off_t size = lseek(mb->dmabuf[p], 0, SEEK_END);
			void *m = size > 0 ? mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE,
						  MAP_SHARED, mb->dmabuf[p], 0) : MAP_FAILED;

			if (m == MAP_FAILED || (size_t)size < b->min_len[p]) {
				fprintf(stderr, "fake_m2m: fd %d: QBUF %s plane %u: dmabuf fd %d of "
					"%lld bytes refused (%zu needed)\n", c->fd, m2m_queue_name(q),
					p, mb->dmabuf[p], (long long)size, b->min_len[p]);
				if (m != MAP_FAILED)
					munmap(m, (size_t)size);
				FK_LEAVE(-EINVAL);
			}
			b->dmamap[p] = b->mem[p] = m;
			b->dmamap_len[p] = b->len[p] = (size_t)size;
		}
		if (q == M2M_SRC && mb->bytesused[p] > b->len[p])
			FK_LEAVE(-EINVAL);
	}
	if (q == M2M_SRC && c->f_eio_qbuf && ++c->n_src_qbuf == c->f_eio_qbuf) {
		fprintf(stderr, "fake_m2m: fd %d: injected fault: QBUF output -EIO\n", c->fd);
		FK_LEAVE(-EIO);
	}
	b->queued = true;
	b->flags = V4L2_BUF_FLAG_QUEUED;
	b->ts = mb->timestamp;
	memcpy(b->bytesused, mb->bytesused, sizeof(b->bytesused));
	if (q == M2M_DST && fq->streaming && c->is_draining && c->next_buf_last) {
		last_buffer_done(c, mb->index, false, 0);
	} else if (q == M2M_DST && fq->streaming && c->res_last) {
		c->res_last = false;
		memset(b->bytesused, 0, sizeof(b->bytesused));
		b->ts = 0;
		buf_done(c, M2M_DST, mb->index, V4L2_BUF_FLAG_LAST);
	} else {
		fq->ready[fq->nready++] = mb->index;
	}
	fk_run(c);
	FK_LEAVE(0);
}

int m2m_dqbuf(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_buf *mb)
{
	FK_ENTER(ctx, c);
	struct fk_queue *fq = &c->q[q];
	struct fk_buf *b;
	unsigned idx;
	int r = 0;

	if (q == M2M_DST && fq->streaming && fq->ndone && c->f_epipe &&
	    ++c->n_dst_dqbuf == c->f_epipe) {
		/* as if a LAST buffer had been dequeued: -EPIPE (and POLLIN)
		 * until STREAMOFF of capture */
		fprintf(stderr, "fake_m2m: fd %d: injected fault: DQBUF capture -EPIPE from now on\n",
			c->fd);
		fq->last_dequeued = true;
	}
	if (!fq->streaming)
		r = -EINVAL;
	else if (q == M2M_DST && fq->last_dequeued)
		r = -EPIPE;
	else if (!fq->ndone)
		r = -EAGAIN;
	if (r) {
		/* a daemon that keeps asking without anything to get spins */
		if (++c->idle_calls > c->idle_max)
			c->idle_max = c->idle_calls;
		if (c->idle_calls == 10000 && !c->idle_warned) {
			c->idle_warned = true;
			fprintf(stderr, "fake_m2m: fd %d: 10000 DQBUF calls in a row found "
				"nothing: the caller polls busily\n", c->fd);
		}
		fk_sync(c);
		FK_LEAVE(r);
	}
	c->idle_calls = 0;
	idx = fq->done[0];
	memmove(fq->done, fq->done + 1, --fq->ndone * sizeof(fq->done[0]));
	b = &fq->b[idx];
	b->queued = false;
	memset(mb, 0, sizeof(*mb));
	mb->index = idx;
	mb->flags = b->flags & ~(uint32_t)V4L2_BUF_FLAG_DONE;
	mb->timestamp = b->ts;
	mb->num_planes = fq->nplanes;
	memcpy(mb->bytesused, b->bytesused, sizeof(mb->bytesused));
	if (q == M2M_DST && (b->flags & V4L2_BUF_FLAG_LAST))
		fq->last_dequeued = true;
	if (q == M2M_DST && c->f_bad_index && ++c->n_dst_dqbuf == c->f_bad_index) {
		fprintf(stderr, "fake_m2m: fd %d: injected fault: DQBUF capture index %u for %u\n",
			c->fd, fq->nbufs + 7, idx);
		mb->index = fq->nbufs + 7;
	}
	fk_sync(c);
	FK_LEAVE(0);
}

int m2m_streamon(struct m2m_ctx *ctx, enum m2m_queue q)
{
	FK_ENTER(ctx, c);
	struct fk_queue *fq = &c->q[q];

	if (!fq->nbufs)
		FK_LEAVE(-EINVAL);
	if (c->f_streamon && ++c->n_streamon == c->f_streamon) {
		fprintf(stderr, "fake_m2m: fd %d: injected fault: STREAMON %s -EIO\n", c->fd,
			m2m_queue_name(q));
		FK_LEAVE(-EIO);
	}
	if (!fq->streaming) {
		fq->streaming = true;
		ctx->streaming[q] = true;
		if (q == M2M_SRC)
			c->last_src = -1;	/* v4l2_m2m_update_start_streaming_state */
		if (q == M2M_DST)
			c->wait_capture = false;
		if (q == M2M_SRC && c->role == M2M_ROLE_ENCODER)
			c->frame_no = 0;
	}
	fk_run(c);
	FK_LEAVE(0);
}

int m2m_streamoff(struct m2m_ctx *ctx, enum m2m_queue q)
{
	FK_ENTER(ctx, c);
	struct fk_queue *fq = &c->q[q];

	for (unsigned i = 0; i < fq->nbufs; i++) {
		fq->b[i].queued = false;
		fq->b[i].flags = 0;
	}
	fq->nready = fq->ndone = 0;
	fq->streaming = false;
	ctx->streaming[q] = false;
	if (q == M2M_SRC) {
		c->as_len = 0;
		c->src_off = 0;
		c->src_junk = false;
		if (c->is_draining) {
			/* v4l2_m2m_update_stop_streaming_state */
			c->last_src = -1;
			c->stop_reached = false;
			force_last(c, true);
		}
	} else {
		fq->last_dequeued = false;
		c->is_draining = c->has_stopped = c->next_buf_last = false;
		c->last_src = -1;
		c->stop_reached = false;
		c->res_last = false;
	}
	fk_run(c);
	FK_LEAVE(0);
}

int m2m_subscribe(struct m2m_ctx *ctx, uint32_t event_type)
{
	FK_ENTER(ctx, c);
	if (event_type == V4L2_EVENT_SOURCE_CHANGE && c->role == M2M_ROLE_DECODER)
		c->sub_src_change = true;
	else if (event_type == V4L2_EVENT_EOS)
		c->sub_eos = true;
	else
		FK_LEAVE(-EINVAL);
	FK_LEAVE(0);
}

int m2m_dqevent(struct m2m_ctx *ctx, uint32_t *type, uint32_t *changes)
{
	FK_ENTER(ctx, c);
	if (!c->nev) {
		fk_sync(c);
		FK_LEAVE(-EAGAIN);
	}
	*type = c->ev[0];
	*changes = *type == V4L2_EVENT_SOURCE_CHANGE ? V4L2_EVENT_SRC_CH_RESOLUTION : 0;
	memmove(c->ev, c->ev + 1, --c->nev * sizeof(c->ev[0]));
	fk_sync(c);
	FK_LEAVE(0);
}

/* VIDIOC_(TRY_)DECODER_CMD / ENCODER_CMD with vicodec's rule (ignored
 * unless both queues stream) and the m2m helpers' drain state. */
static int codec_cmd(struct m2m_ctx *ctx, enum m2m_role role, bool stop, bool start, bool try)
{
	FK_ENTER(ctx, c);
	if (c->role != role)
		FK_LEAVE(-ENOTTY);
	if (!stop && !start)
		FK_LEAVE(-EINVAL);
	if (try || !c->q[M2M_SRC].streaming || !c->q[M2M_DST].streaming)
		FK_LEAVE(0);
	if (stop) {
		if (c->is_draining)
			FK_LEAVE(-EBUSY);
		if (c->has_stopped)
			FK_LEAVE(0);
		c->is_draining = true;
		c->last_src = c->q[M2M_SRC].nready
			      ? (int)c->q[M2M_SRC].ready[c->q[M2M_SRC].nready - 1] : -1;
		if (c->last_src < 0)
			force_last(c, true);
	} else {
		if (c->is_draining)
			FK_LEAVE(-EBUSY);
		if (c->has_stopped) {
			c->has_stopped = false;
			c->q[M2M_DST].last_dequeued = false;
			c->frame_no = 0;
		}
	}
	fk_run(c);
	FK_LEAVE(0);
}

int m2m_decoder_cmd(struct m2m_ctx *ctx, uint32_t cmd, bool try)
{
	return codec_cmd(ctx, M2M_ROLE_DECODER, cmd == V4L2_DEC_CMD_STOP, cmd == V4L2_DEC_CMD_START,
			 try);
}

int m2m_encoder_cmd(struct m2m_ctx *ctx, uint32_t cmd, bool try)
{
	return codec_cmd(ctx, M2M_ROLE_ENCODER, cmd == V4L2_ENC_CMD_STOP, cmd == V4L2_ENC_CMD_START,
			 try);
}

int m2m_get_ctrl(struct m2m_ctx *ctx, uint32_t id, int32_t *value)
{
	FK_ENTER(ctx, c);
	if (id == V4L2_CID_MIN_BUFFERS_FOR_CAPTURE && c->role == M2M_ROLE_DECODER)
		*value = 2;
	else if (id == V4L2_CID_MIN_BUFFERS_FOR_OUTPUT)
		*value = c->role == M2M_ROLE_ENCODER ? 2 : 1;
	else if (id == V4L2_CID_MPEG_VIDEO_GOP_SIZE && c->role == M2M_ROLE_ENCODER)
		*value = c->gop;
	else
		FK_LEAVE(-EINVAL);
	FK_LEAVE(0);
}

int m2m_set_ctrl(struct m2m_ctx *ctx, uint32_t id, int32_t value)
{
	FK_ENTER(ctx, c);
	if (c->role != M2M_ROLE_ENCODER)
		FK_LEAVE(-EINVAL);
	if (id == V4L2_CID_MPEG_VIDEO_GOP_SIZE) {
		if (value < 1 || value > 64)
			FK_LEAVE(-ERANGE);
		c->gop = value;
	} else if (id == V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME) {
		c->force_key = true;
	} else {
		FK_LEAVE(-EINVAL);
	}
	FK_LEAVE(0);
}

int m2m_query_ctrl(struct m2m_ctx *ctx, uint32_t id, int32_t *min, int32_t *max, int32_t *def)
{
	FK_ENTER(ctx, c);
	if (id != V4L2_CID_MPEG_VIDEO_GOP_SIZE || c->role != M2M_ROLE_ENCODER)
		FK_LEAVE(-EINVAL);
	*min = 1;
	*max = 64;
	*def = 10;
	FK_LEAVE(0);
}

bool m2m_menu_has(struct m2m_ctx *ctx, uint32_t id, uint32_t index)
{
	return false;
}
