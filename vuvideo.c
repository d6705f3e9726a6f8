/* SPDX-License-Identifier: MIT */
/*
 * vhost-user-video: a virtio-video (protocol v3) device on a host V4L2
 * mem2mem stateful codec, served over vhost-user.
 *
 * Threading model
 * ---------------
 * Command thread (main): vu_run() blocks in poll() on the vhost-user socket,
 *   the queue kick eventfds and a signalfd. It handles one vhost-user message
 *   or one kick at a time. Every virtio-video command is parsed and executed
 *   here, including every configuration ioctl (S_FMT, REQBUFS, STREAMON/OFF,
 *   DECODER_CMD, controls) and QBUF of guest buffers. Synchronous commands
 *   are answered at once; RESOURCE_QUEUE and STREAM_DRAIN chains are parked
 *   in the stream until the codec is done with them.
 * Event thread: blocks in poll() on every live stream's V4L2 fd plus a wake
 *   eventfd. It asks for POLLIN/POLLOUT only while a queue streams with
 *   buffers queued (a mem2mem fd reports POLLERR otherwise) and for POLLPRI
 *   always; what poll() reports may be stale by the time it has the lock
 *   (poll_err_now). It DQBUFs, copies decoded data to the guest, completes parked
 *   chains, DQEVENTs (source change, EOS) and sends events on the eventq.
 *   It also QBUFs what waited for the buffers it freed (feed_src/feed_dst)
 *   and, when that puts the last input queued before a STREAM_DRAIN into
 *   the codec, issues the drain's STOP command (drain_start): the one
 *   command ioctl it makes, non-blocking like all of them.
 * One mutex, the vu device lock (vu_lock), guards everything here: the stream
 *   table, resources, parked chains, the event backlog and both virtqueues.
 *   It is never held across poll() or recvmsg(); the V4L2 fds are
 *   non-blocking, so no ioctl made under it blocks.
 * Stream teardown: the command thread marks the stream closing, bumps
 *   poll_req and wakes the event thread, then waits on `cond` until the event
 *   thread has rebuilt its poll set without the stream (poll_seen), and only
 *   then closes the fd.
 *
 * Queue naming: virtio INPUT is what the guest feeds (bitstream for a
 * decoder, raw frames for an encoder) = V4L2 OUTPUT = M2M_SRC; virtio OUTPUT
 * is what the device produces = V4L2 CAPTURE = M2M_DST.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/videodev2.h>

#include "config.h"
#include "v4l2.h"
#include "virtio_video.h"
#include "vu.h"

#if !CONFIG_VUV_DECODER && !CONFIG_VUV_ENCODER
#error "at least one of CONFIG_VUV_DECODER and CONFIG_VUV_ENCODER is required"
#endif

#define VV_CAPS_MAX 4096		/* max_caps_length */
#define VV_RESP_MAX 4096		/* max_resp_length */
#define VV_MAX_RESOURCES 64		/* per queue */
#define VV_DMABUF_PLANES 3		/* memory planes that can be dmabufs (YM12) */
#define VV_MAX_ENTRIES 16384		/* mem entries per resource */
#define VV_EVENT_BACKLOG 64
#define VV_SRC_BUFFERS 8		/* V4L2 bitstream buffers per stream */
#define VV_MAX_DIM 16384u		/* SET_PARAMS frame width/height */
#define VV_MAX_PLANE_SIZE (256u << 20)	/* a plane, or the data of one buffer */
#define VV_MAX_FPS 1000u
#define VV_DEFAULT_FPS 30u		/* when neither the guest nor the codec says */
#define VV_NUM_CTRLS (VIRTIO_VIDEO_CONTROL_PREPEND_SPSPPS_TO_IDR + 1)

#define VV_STR_(x) #x
#define VV_STR(x) VV_STR_(x)

/* Per-buffer log lines exist only with CONFIG_VUV_VERBOSE_BUFFERS. */
#define VUV_TRACE_ON (CONFIG_VUV_VERBOSE_BUFFERS && vu_verbosity >= 2)

/* ---- types ----------------------------------------------------------------- */

struct vv_res {
	uint32_t id;
	uint32_t layout;		/* VIRTIO_VIDEO_PLANES_LAYOUT_* */
	unsigned num_planes;
	uint32_t plane_offsets[VIRTIO_VIDEO_MAX_PLANES];
	unsigned plane_first[VIRTIO_VIDEO_MAX_PLANES];
	unsigned plane_nent[VIRTIO_VIDEO_MAX_PLANES];
	uint64_t plane_len[VIRTIO_VIDEO_MAX_PLANES];
	struct vu_seg *ent;		/* guest-physical pieces, in order */
	unsigned nent;
	struct vu_view *view;		/* all of ent mapped linearly (zero-copy), or NULL */
	/* DMABUF: V4L2 memory plane p as a udmabuf over the resource's bytes
	 * [dmabuf_at[p], +dmabuf_len[p]) (res_dmabuf): the fd, -1 none yet,
	 * -2 refused */
	int dmabuf[VV_DMABUF_PLANES];
	uint64_t dmabuf_at[VV_DMABUF_PLANES], dmabuf_len[VV_DMABUF_PLANES];
	int last_vbuf;			/* the V4L2 buffer it had last, -1: none */
	/* RESOURCE_QUEUE state */
	bool queued;			/* a chain is parked in .chain */
	struct vu_chain chain;
	int vbuf;			/* output: paired V4L2 buffer, -1 if none */
	uint64_t seq;			/* queue order */
	uint64_t timestamp;
	uint32_t bytes;			/* input: bytes of data */
	uint32_t fed;			/* input: bytes already in V4L2 buffers */
	unsigned pieces;		/* input: V4L2 buffers holding its data */
	uint32_t flags;			/* input: FLAG_ERR collected from its pieces */
};

struct vv_queue {
	enum m2m_queue mq;
	struct vv_res *res;		/* VV_MAX_RESOURCES, allocated at the first create */
	unsigned nres;
	int vbuf_res[M2M_MAX_BUFFERS];	/* resource slot using V4L2 buffer i, -1 free */
	bool vbuf_zc[M2M_MAX_BUFFERS];	/* V4L2 buffer i was queued on its resource's view */
	bool mem_logged;		/* the memory path was logged for this stream */
	unsigned in_driver;		/* V4L2 buffers queued to the driver */
	bool allocated;
	struct m2m_pix alloc_pix;	/* format the V4L2 buffers were allocated with */
	uint64_t next_seq;
};

enum vv_stream_state {
	VV_STREAM_OPEN = 1,
	VV_STREAM_CLOSING,
};

/* A stream's progress through dev-decoder.rst / dev-encoder.rst. */
enum vv_flow {
	VV_FLOW_INIT = 0,	/* decoder: waiting for the first SOURCE_CHANGE */
	VV_FLOW_RUNNING,
	VV_FLOW_STOPPED,	/* drain completed: needs a START command */
	VV_FLOW_RES_CHANGE,	/* decoder: LAST seen after a mid-stream source change */
};

/* A STREAM_DRAIN's progress (dev-decoder.rst / dev-encoder.rst, Drain). It
 * is beside the flow, not in it: a drain may wait through the decoder's
 * first header (INIT) or a resolution change (RES_CHANGE). */
enum vv_drain {
	VV_DRAIN_NONE = 0,
	VV_DRAIN_WAIT,		/* chain parked, STOP not issued yet (drain_start) */
	VV_DRAIN_STOPPING,	/* STOP issued: ends with the LAST buffer or EPIPE */
};

struct vv_stream {
	enum vv_stream_state state;
	enum vv_flow flow;
	uint32_t id;
	uint32_t gen;			/* unique per stream: the event thread's check */
	uint32_t coded_format;		/* virtio format */
	struct m2m_ctx m2m;
	struct vv_queue q[2];		/* [M2M_SRC] = INPUT, [M2M_DST] = OUTPUT */
	bool fmt_known;			/* capture format known (after SOURCE_CHANGE) */
	bool change_pending;		/* resolution event waits for the LAST buffer */
	bool change_sent;		/* DECODER_RESOLUTION_CHANGED sent, capture not set up since */
	struct m2m_pix change_pix;	/* the capture format and visible */
	struct m2m_rect change_crop;	/* rectangle that event announced */
	bool error;			/* the codec failed: no more data polling */
	enum vv_drain drain;
	struct vu_chain drain_chain;	/* parked while drain != VV_DRAIN_NONE */
	bool eos_pending;		/* next output resource goes back as empty EOS */
	bool fed;			/* input went to the codec since creation or the last drain */
	struct m2m_rect crop;		/* decoder: visible rectangle (compose) */
	uint32_t min_bufs[2];
	uint32_t frame_rate;
	unsigned long n_zc, n_copied;	/* V4L2 buffers queued on a view / copied */
	/* controls the codec lacks: what the guest set, or our default */
	uint32_t ctl_val[VV_NUM_CTRLS];
	uint32_t ctl_logged;		/* bit c: "codec ignores control c" logged */
};

#define VV_MAX_USER_CTRLS 16

/* --memory: what the streams' queues may use (the order a queue tries). */
enum vv_memory {
	VV_MEM_AUTO = 0,	/* USERPTR where it works, else DMABUF, else MMAP + copy */
	VV_MEM_MMAP,
	VV_MEM_USERPTR,		/* forced: even if the driver does not say so */
	VV_MEM_DMABUF,		/* forced; falls back to USERPTR, then MMAP */
};

struct vv_dev {
	struct vu_dev *vu;
	const char *devpath;
	enum vv_memory memory;
	/* --v4l2-ctrl=ID=VALUE, applied to every new stream */
	unsigned n_ctrls;
	struct { uint32_t id; int32_t value; } ctrls[VV_MAX_USER_CTRLS];
	struct m2m_info info;
	/* Streams are allocated at STREAM_CREATE and freed at destroy: a guest
	 * opens the device once per open() of its video node (v4l2-compliance
	 * opens it ~100 times), and an idle stream should cost little. */
	struct vv_stream *streams[CONFIG_VUV_MAX_STREAMS];
	unsigned nstreams;
	struct virtio_video_event backlog[VV_EVENT_BACKLOG];
	unsigned backlog_len;
	/* event thread */
	pthread_t thread;
	int wake_fd;
	pthread_cond_t cond;
	uint64_t poll_req, poll_seen;
	uint32_t next_gen;
	bool stop;
};

static struct vv_dev vv;

/* The role, folded to a constant when Kconfig built only one: the other
 * role's code is then dead and leaves the binary. */
static bool is_encoder(const struct vv_dev *d)
{
	if (!CONFIG_VUV_ENCODER)
		return false;
	if (!CONFIG_VUV_DECODER)
		return true;
	return d->info.role == M2M_ROLE_ENCODER;
}

/* The queue that carries the bitstream. */
static enum m2m_queue coded_queue(const struct vv_dev *d)
{
	return is_encoder(d) ? M2M_DST : M2M_SRC;
}

/* ---- name tables (for logs) ------------------------------------------------ */

#define CMD_INDEX(t) ((t) - VIRTIO_VIDEO_CMD_QUERY_CAPABILITY)
#define CMD_COUNT (CMD_INDEX(VIRTIO_VIDEO_CMD_SET_PARAMS_EXT) + 1)

/* Two dense tables, not one indexed by the sparse response codes. */
static const char *const resp_ok_names[] = {
	"OK_NODATA", "OK_QUERY_CAPABILITY", "OK_RESOURCE_QUEUE", "OK_GET_PARAMS",
	"OK_QUERY_CONTROL", "OK_GET_CONTROL",
};
static const char *const resp_err_names[] = {
	"ERR_INVALID_OPERATION", "ERR_OUT_OF_MEMORY", "ERR_INVALID_STREAM_ID",
	"ERR_INVALID_RESOURCE_ID", "ERR_INVALID_PARAMETER", "ERR_UNSUPPORTED_CONTROL",
};

static const char *resp_name(uint32_t t)
{
	uint32_t i = t - VIRTIO_VIDEO_RESP_OK_NODATA, e = t - VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION;

	if (t >= VIRTIO_VIDEO_RESP_OK_NODATA && i < sizeof(resp_ok_names) / sizeof(resp_ok_names[0]))
		return resp_ok_names[i];
	if (t >= VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION &&
	    e < sizeof(resp_err_names) / sizeof(resp_err_names[0]))
		return resp_err_names[e];
	return "?";
}

/* virtio's name of a queue: INPUT = V4L2 OUTPUT = M2M_SRC */
static const char *vq_name(enum m2m_queue q)
{
	return q == M2M_SRC ? "input" : "output";
}

/* virtio format <-> V4L2 fourcc, as the Linux guest driver maps them; the
 * raw ones in the order an encoder's first raw format is picked (enc_init). */
static const struct {
	uint32_t virtio;
	uint32_t fourcc;
	uint8_t color_planes;
	char name[9];
} formats[] = {
	{ VIRTIO_VIDEO_FORMAT_YUV420, V4L2_PIX_FMT_YUV420, 3, "YUV420" },
	{ VIRTIO_VIDEO_FORMAT_NV12, V4L2_PIX_FMT_NV12, 2, "NV12" },
	{ VIRTIO_VIDEO_FORMAT_YVU420, V4L2_PIX_FMT_YVU420, 3, "YVU420" },
	{ VIRTIO_VIDEO_FORMAT_ARGB8888, V4L2_PIX_FMT_ARGB32, 1, "ARGB8888" },
	{ VIRTIO_VIDEO_FORMAT_BGRA8888, V4L2_PIX_FMT_ABGR32, 1, "BGRA8888" },
	{ VIRTIO_VIDEO_FORMAT_MPEG2, V4L2_PIX_FMT_MPEG2, 1, "MPEG2" },
	{ VIRTIO_VIDEO_FORMAT_MPEG4, V4L2_PIX_FMT_MPEG4, 1, "MPEG4" },
	{ VIRTIO_VIDEO_FORMAT_H264, V4L2_PIX_FMT_H264, 1, "H264" },
	{ VIRTIO_VIDEO_FORMAT_HEVC, V4L2_PIX_FMT_HEVC, 1, "HEVC" },
	{ VIRTIO_VIDEO_FORMAT_VP8, V4L2_PIX_FMT_VP8, 1, "VP8" },
	{ VIRTIO_VIDEO_FORMAT_VP9, V4L2_PIX_FMT_VP9, 1, "VP9" },
	{ VIRTIO_VIDEO_FORMAT_FWHT, V4L2_PIX_FMT_FWHT, 1, "FWHT" },
};
#define NFORMATS (sizeof(formats) / sizeof(formats[0]))

/* The multi-memory-plane fourccs (a V4L2 memory plane per colour plane, all
 * MediaTek's encoder takes) are the same virtio formats as their one-plane
 * twins: NM12 is NV12, YM12 YUV420, YM21 YVU420. */
static int fmt_by_fourcc(uint32_t fourcc)
{
	fourcc = fourcc == V4L2_PIX_FMT_NV12M ? V4L2_PIX_FMT_NV12
		 : fourcc == V4L2_PIX_FMT_YUV420M ? V4L2_PIX_FMT_YUV420
		 : fourcc == V4L2_PIX_FMT_YVU420M ? V4L2_PIX_FMT_YVU420 : fourcc;
	for (unsigned i = 0; i < NFORMATS; i++)
		if (formats[i].fourcc == fourcc)
			return (int)i;
	return -1;
}

static int fmt_by_virtio(uint32_t f)
{
	for (unsigned i = 0; i < NFORMATS; i++)
		if (formats[i].virtio == f)
			return (int)i;
	return -1;
}

/* The device's fourcc for virtio format f on queue q (NV12 before NV12M),
 * or 0 when it offers none. */
static uint32_t offered_fourcc(const struct m2m_info *in, enum m2m_queue q, uint32_t f)
{
	uint32_t got = 0;

	for (unsigned i = 0; i < in->nfmt[q]; i++) {
		uint32_t c = in->fmt[q][i].pixfmt;
		int fi = fmt_by_fourcc(c);

		if (fi >= 0 && formats[fi].virtio == f && (!got || c == formats[fi].fourcc))
			got = c;
	}
	return got;
}

static const char *virtio_fmt_name(uint32_t f)
{
	int i = fmt_by_virtio(f);

	return i < 0 ? "?" : formats[i].name;
}

static bool is_coded(uint32_t virtio_fmt)
{
	return virtio_fmt >= VIRTIO_VIDEO_FORMAT_CODED_MIN;
}

/* ---- small helpers --------------------------------------------------------- */

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

static void wake_events(struct vv_dev *d)
{
	uint64_t one = 1;

	if (write(d->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		vu_log(VU_WARN, "cannot wake the event thread: %s", strerror(errno));
}

static struct vv_stream *stream_find(struct vv_dev *d, uint32_t id)
{
	for (unsigned i = 0; i < CONFIG_VUV_MAX_STREAMS; i++) {
		struct vv_stream *s = d->streams[i];

		if (s && s->state == VV_STREAM_OPEN && s->id == id)
			return s;
	}
	return NULL;
}

static int queue_index(uint32_t queue_type)
{
	if (queue_type == VIRTIO_VIDEO_QUEUE_TYPE_INPUT)
		return M2M_SRC;
	if (queue_type == VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT)
		return M2M_DST;
	return -1;
}

static struct vv_res *res_find(struct vv_queue *q, uint32_t id)
{
	for (unsigned i = 0; i < q->nres; i++)
		if (q->res[i].id == id)
			return &q->res[i];
	return NULL;
}

/* ---- answering chains ------------------------------------------------------ */

static void respond(struct vv_dev *d, struct vu_chain *c, const void *resp, size_t len)
{
	uint32_t type = rd32(resp);

	vu_log(VU_DEBUG, "  -> %s (%zu bytes)", resp_name(type), len);
	if (vu_chain_respond(d->vu, c, resp, len) == -ENOSPC)
		vu_log(VU_WARN, "response %s (%zu bytes) does not fit the guest's %zu-byte buffer",
		       resp_name(type), len, c->wr_len);
}

static void respond_hdr(struct vv_dev *d, struct vu_chain *c, uint32_t type, uint32_t stream_id)
{
	struct virtio_video_cmd_hdr h = {
		.type = htole32(type),
		.stream_id = htole32(stream_id),
	};

	respond(d, c, &h, sizeof(h));
}

static void respond_buffer(struct vv_dev *d, struct vu_chain *c, uint32_t type,
			   uint32_t stream_id, uint64_t ts, uint32_t flags, uint32_t size)
{
	struct virtio_video_resource_queue_resp r = {
		.hdr.type = htole32(type),
		.hdr.stream_id = htole32(stream_id),
		.timestamp = htole64(ts),
		.flags = htole32(flags),
		.size = htole32(size),
	};

	respond(d, c, &r, sizeof(r));
}

/* Finish a queued resource: its RESOURCE_QUEUE chain gets its one answer.
 * Every path that ends a buffer (done, error, EOS, clear, destroy) goes
 * through here. ok: OK_RESOURCE_QUEUE; else OK_NODATA (a returned buffer). */
static void res_done(struct vv_dev *d, struct vv_stream *s, struct vv_res *r, bool ok,
		     uint64_t ts, uint32_t flags, uint32_t size)
{
	respond_buffer(d, &r->chain, ok ? VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE
					: VIRTIO_VIDEO_RESP_OK_NODATA, s->id, ts, flags, size);
	r->queued = false;
}

/* ---- events ---------------------------------------------------------------- */

/* Deliver backlogged events into the guest's eventq buffers. Lock held. */
static void events_flush(struct vv_dev *d)
{
	unsigned sent = 0;

	while (sent < d->backlog_len) {
		struct vu_chain c;
		int r = vu_queue_pop(d->vu, VIRTIO_VIDEO_QUEUE_EVENT, &c);

		if (r == -EINVAL)
			continue;
		if (r)
			break;
		if (vu_chain_respond(d->vu, &c, &d->backlog[sent], sizeof(d->backlog[0])))
			vu_log(VU_WARN, "event buffer too small, event dropped");
		sent++;
	}
	if (!sent)
		return;
	memmove(d->backlog, d->backlog + sent, (d->backlog_len - sent) * sizeof(d->backlog[0]));
	d->backlog_len -= sent;
	vu_queue_notify(d->vu, VIRTIO_VIDEO_QUEUE_EVENT);
}

static void event_send(struct vv_dev *d, uint32_t type, uint32_t stream_id)
{
	vu_log(VU_DEBUG, "stream %u: event %s", stream_id,
	       type == VIRTIO_VIDEO_EVENT_ERROR ? "ERROR" : "DECODER_RESOLUTION_CHANGED");
	if (d->backlog_len == VV_EVENT_BACKLOG) {
		vu_log(VU_WARN, "event backlog full, the guest does not read its eventq");
		return;
	}
	d->backlog[d->backlog_len].event_type = htole32(type);
	d->backlog[d->backlog_len].stream_id = htole32(stream_id);
	d->backlog_len++;
	events_flush(d);
}

/* ---- guest memory of resources -------------------------------------------- */

/* Copy len bytes between buf and the resource's plane p at offset off. The
 * entry list was checked at RESOURCE_CREATE; the guest memory is checked
 * again by vu_gpa_* because the memory table may have changed since. */
static int res_copy(struct vv_dev *d, struct vv_res *r, unsigned p, uint64_t off,
		    void *buf, size_t len, bool to_guest)
{
	unsigned first = r->plane_first[p], n = r->plane_nent[p];
	uint8_t *b = buf;

	if (off > r->plane_len[p] || len > r->plane_len[p] - off)
		return -ENOSPC;
	for (unsigned i = first; i < first + n && len; i++) {
		struct vu_seg *e = &r->ent[i];
		size_t chunk;
		int ret;

		if (off >= e->len) {
			off -= e->len;
			continue;
		}
		chunk = e->len - off;
		if (chunk > len)
			chunk = len;
		ret = to_guest ? vu_gpa_write(d->vu, e->gpa + off, b, chunk)
			       : vu_gpa_read(d->vu, e->gpa + off, b, chunk);
		if (ret)
			return ret;
		b += chunk;
		len -= chunk;
		off = 0;
	}
	return len ? -EFAULT : 0;
}

/* One colour plane of a frame in the host's V4L2 buffer. */
struct vv_plane {
	unsigned mem;			/* V4L2 memory plane */
	uint32_t offset, size, stride;
};

/* The colour planes of a format in V4L2 buffers: one memory plane per colour
 * plane for the multi-planar formats, or packed one after the other. */
static unsigned host_planes(const struct m2m_pix *pix, struct vv_plane *pl)
{
	int fi = fmt_by_fourcc(pix->pixfmt);
	unsigned n = fi < 0 ? 1 : formats[fi].color_planes;
	uint32_t bpl = pix->bytesperline[0], h = pix->height;

	memset(pl, 0, sizeof(*pl) * VIRTIO_VIDEO_MAX_PLANES);
	if (pix->num_planes > 1 || n == 1) {
		n = pix->num_planes;
		for (unsigned p = 0; p < n; p++) {
			pl[p].mem = p;
			pl[p].size = pix->sizeimage[p];
			pl[p].stride = pix->bytesperline[p];
		}
		return n;
	}
	pl[0].size = bpl * h;
	pl[0].stride = bpl;
	if (n == 2) {		/* NV12: interleaved chroma at half height */
		pl[1] = (struct vv_plane){ 0, bpl * h, bpl * (h / 2), bpl };
	} else {		/* YUV420/YVU420: two quarter planes */
		uint32_t csize = (bpl / 2) * (h / 2);

		pl[1] = (struct vv_plane){ 0, bpl * h, csize, bpl / 2 };
		pl[2] = (struct vv_plane){ 0, bpl * h + csize, csize, bpl / 2 };
	}
	return n;
}

/* Copy a raw frame between resource r and V4L2 buffer vb of queue mq: a
 * decoded frame out of CAPTURE, or a frame to encode into OUTPUT. Each colour
 * plane goes to the matching plane of the resource, or, when the guest
 * described fewer planes, packed after the previous one. Returns the bytes
 * copied or -errno. */
static long copy_frame(struct vv_dev *d, struct vv_stream *s, struct vv_res *r,
		       enum m2m_queue mq, unsigned vb, bool to_guest)
{
	struct vv_plane pl[VIRTIO_VIDEO_MAX_PLANES];
	unsigned n = host_planes(&s->q[mq].alloc_pix, pl);
	uint64_t packed = 0;
	long total = 0;

	for (unsigned p = 0; p < n; p++) {
		struct m2m_plane_map *m = &s->m2m.map[mq][vb][pl[p].mem];
		bool own = r->num_planes == n;
		unsigned rp = own ? p : 0;
		uint64_t off = r->plane_offsets[rp] + (own ? 0 : packed);
		int ret;

		if (pl[p].mem >= s->m2m.num_planes[mq] ||
		    pl[p].offset > m->length || pl[p].size > m->length - pl[p].offset)
			return -EIO;
		if (s->q[mq].vbuf_zc[vb]) {	/* the codec used the guest's memory */
			total += pl[p].size;
			continue;
		}
		if (r->layout == VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE && own)
			off = r->plane_offsets[rp] < r->plane_len[rp] ? r->plane_offsets[rp] : 0;
		ret = res_copy(d, r, rp, off, (uint8_t *)m->addr + pl[p].offset, pl[p].size,
			       to_guest);
		if (ret)
			return ret;
		packed += pl[p].size;
		total += pl[p].size;
	}
	return total;
}

static uint64_t res_capacity(const struct vv_res *r);

/* Encoder: copy the coded bytes of CAPTURE buffer b into resource r. */
static long copy_coded_out(struct vv_dev *d, struct vv_stream *s, struct vv_res *r,
			   const struct m2m_buf *b)
{
	struct m2m_plane_map *m = &s->m2m.map[M2M_DST][b->index][0];
	uint32_t off = b->data_offset[0], used = b->bytesused[0];
	int ret;

	if (s->q[M2M_DST].vbuf_zc[b->index])	/* written in place; at the offset we gave */
		return off || used > res_capacity(r) ? -EIO : (long)used;
	if (off > used || used > m->length)
		return -EIO;
	ret = res_copy(d, r, 0, r->plane_offsets[0], (uint8_t *)m->addr + off, used - off, true);
	return ret ? ret : (long)(used - off);
}

static void res_dmabuf_drop(struct vv_res *r)
{
	for (unsigned p = 0; p < VV_DMABUF_PLANES; p++) {
		if (r->dmabuf[p] >= 0)
			close(r->dmabuf[p]);
		r->dmabuf[p] = -1;
	}
}

static void res_free(struct vv_dev *d, struct vv_res *r)
{
	vu_view_free(d->vu, r->view);
	r->view = NULL;
	res_dmabuf_drop(r);
	free(r->ent);
	r->ent = NULL;
	r->nent = 0;
}

/* ---- zero-copy memory paths ------------------------------------------------
 *
 * Per queue, chosen when its V4L2 buffers are allocated (choose_memory):
 * USERPTR on a linear view of each resource's guest pages (vu_view_new,
 * built at RESOURCE_CREATE and kept until the resource goes), DMABUF (one
 * udmabuf per resource, CONFIG_VUV_DMABUF: res_dmabuf), or MMAP + copy.
 * On a USERPTR queue every V4L2 buffer also has bounce memory of its own
 * (v4l2.c): a resource
 * whose view is missing, stale (memory table changed) or laid out unlike
 * the codec's buffer is copied through it, exactly as on MMAP. The answer
 * to RESOURCE_QUEUE still waits for DQBUF: the guest sees no partial data.
 * The codec reads and writes only the guest pages the resource names (and
 * the rest of its first and last page): a guest that names a page in two
 * resources, or in an input and an output at once, gets what a real device
 * doing DMA to those pages would give it, and nothing outside its memory.
 */

static const char *const vv_memory_names[] = {
	[VV_MEM_AUTO] = "auto", [VV_MEM_MMAP] = "mmap",
	[VV_MEM_USERPTR] = "userptr", [VV_MEM_DMABUF] = "dmabuf",
};

/* Build the view of a new resource (nothing when only MMAP can be used). */
static void res_view(struct vv_dev *d, struct vv_stream *s, struct vv_res *r)
{
	int ret;

	if (!CONFIG_VUV_ZERO_COPY || d->memory == VV_MEM_MMAP)
		return;
	ret = vu_view_new(d->vu, r->ent, r->nent, &r->view);
	if (ret)
		vu_log(VU_DEBUG, "stream %u: resource %u: no linear view (%s): copied", s->id,
		       r->id, ret == -ENOTSUP ? "pieces not page-aligned" : strerror(-ret));
}

/* A view gone stale with a memory table change: a new one, at new addresses
 * (the old stay reserved until freed: the driver may remember them). */
static void res_view_renew(struct vv_dev *d, struct vv_stream *s, struct vv_res *r)
{
	struct vu_view *old = r->view;

	if (!old || vu_view_valid(old))
		return;
	res_dmabuf_drop(r);	/* the driver keeps its own reference */
	r->view = NULL;
	res_view(d, s, r);
	vu_view_free(d->vu, old);
}

/* Where the copy path would put colour plane p of a frame in resource r, as
 * an offset into its view, and the end of the guest plane it goes to (see
 * copy_frame and res_copy). */
static void view_pos(const struct vv_res *r, unsigned p, unsigned n, uint64_t packed,
		     uint64_t *pos, uint64_t *end)
{
	bool own = r->num_planes == n;
	unsigned rp = own ? p : 0;
	uint64_t start = 0, off = r->plane_offsets[rp] + (own ? 0 : packed);

	if (r->layout == VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE) {
		for (unsigned i = 0; i < rp; i++)
			start += r->plane_len[i];
		if (own)
			off = r->plane_offsets[rp] < r->plane_len[rp] ? r->plane_offsets[rp] : 0;
	}
	*pos = start + off;
	*end = start + r->plane_len[rp];
}

/* The user pointers that let the codec use resource r's view as its V4L2
 * buffer on queue mq: true and b->userptr/length set, or false when the
 * view is missing or stale, or the codec's layout (host_planes, sizeimage)
 * is not where the copy path would put the data: then it is copied. */
static bool res_userptr(struct vv_dev *d, struct vv_stream *s, struct vv_res *r,
			enum m2m_queue mq, struct m2m_buf *b)
{
	const struct m2m_pix *pix = &s->q[mq].alloc_pix;
	struct vv_plane pl[VIRTIO_VIDEO_MAX_PLANES];
	uint64_t len, pos0 = 0, packed = 0;
	uintptr_t base;
	unsigned n;

	if (!CONFIG_VUV_ZERO_COPY || !vu_view_valid(r->view))
		return false;
	base = (uintptr_t)vu_view_addr(r->view);
	len = vu_view_len(r->view);
	if (mq == coded_queue(d)) {
		uint64_t off = r->plane_offsets[0], room = res_capacity(r);

		if (off >= len || room > len - off || room < pix->sizeimage[0])
			return false;
		b->userptr[0] = base + off;
		b->length[0] = room > UINT32_MAX ? UINT32_MAX : (uint32_t)room;
		return true;
	}
	n = host_planes(pix, pl);
	for (unsigned p = 0; p < n; p++) {
		uint64_t pos, end;
		unsigned m = pl[p].mem;

		view_pos(r, p, n, packed, &pos, &end);
		packed += pl[p].size;
		if (pos > end || pl[p].size > end - pos || m >= pix->num_planes)
			return false;
		if (pix->num_planes == 1) {
			if (p == 0)
				pos0 = pos;
			if (pos < pos0 || pos - pos0 != pl[p].offset)
				return false;
			pos = pos0;
		}
		if (pos > len || pix->sizeimage[m] > len - pos)
			return false;
		b->userptr[m] = base + (uintptr_t)pos;
		b->length[m] = pix->sizeimage[m];
	}
	return true;
}

/* DMABUF from guest memory (CONFIG_VUV_DMABUF): a udmabuf per V4L2 memory
 * plane over the resource's entries from where the plane starts
 * (vu_dmabuf_create), made when its queue first wants it, dropped with the
 * resource or when its view goes stale (memory table changed). The view's
 * layout checks (res_userptr) say where each plane goes; vb2 puts a DMABUF
 * plane at the start of its dmabuf, so a plane must start on a page of
 * guest memory (the guest's buffer, and with NV12M or YUV420M each colour
 * plane in it). A resource that cannot be dmabufs (pieces or planes not
 * page-aligned, a layout unlike the codec's, memory not a sealed memfd,
 * made after the queue chose DMABUF) is copied through the V4L2 buffer's
 * own bounce memory, a udmabuf over a memfd of the daemon's (v4l2.c), as on
 * MMAP. */
static int res_dmabuf(struct vv_dev *d, struct vv_stream *s, struct vv_res *r, unsigned p,
		      uint64_t at, uint64_t len)
{
	struct vu_seg *seg = NULL;
	const char *why = "the plane is not inside the resource";
	uint64_t skip = at, left = len;
	unsigned n = 0;
	int fd = -EINVAL;

	if (r->dmabuf[p] != -1 && r->dmabuf_at[p] == at && r->dmabuf_len[p] == len)
		return r->dmabuf[p];	/* (another format: other planes) */
	if (r->dmabuf[p] >= 0)
		close(r->dmabuf[p]);
	/* the entries that hold bytes [at, at + len) of the resource */
	if (len && (seg = malloc(sizeof(*seg) * r->nent))) {
		for (unsigned i = 0; i < r->nent && left; i++) {
			uint64_t take = r->ent[i].len;

			if (skip >= take) {
				skip -= take;
				continue;
			}
			take -= skip;
			take = take < left ? take : left;
			seg[n++] = (struct vu_seg){ r->ent[i].gpa + skip, (uint32_t)take };
			left -= take;
			skip = 0;
		}
		if (!left)
			fd = vu_dmabuf_create(d->vu, seg, n, &why);
		free(seg);
	} else if (len) {
		fd = -ENOMEM, why = "no memory";
	}
	if (fd < 0)
		vu_log(VU_DEBUG, "stream %u: resource %u: plane %u: no dmabuf: %s (%s)", s->id,
		       r->id, p, why, strerror(-fd));
	r->dmabuf[p] = fd < 0 ? -2 : fd;
	r->dmabuf_at[p] = at;
	r->dmabuf_len[p] = len;
	return r->dmabuf[p];
}

/* The dmabufs that let the codec use resource r as its V4L2 buffer on queue
 * mq: true and b->dmabuf, b->length set, or false. */
static bool res_dmabuf_buf(struct vv_dev *d, struct vv_stream *s, struct vv_res *r,
			   enum m2m_queue mq, struct m2m_buf *b)
{
	unsigned n = s->q[mq].alloc_pix.num_planes;	/* (known before REQBUFS) */
	uintptr_t base;

	if (!CONFIG_VUV_DMABUF || !n || n > VV_DMABUF_PLANES || !res_userptr(d, s, r, mq, b))
		return false;
	base = (uintptr_t)vu_view_addr(r->view);
	for (unsigned p = 0; p < n; p++) {
		int fd = res_dmabuf(d, s, r, p, b->userptr[p] - base, b->length[p]);

		if (fd < 0)
			return false;
		b->dmabuf[p] = fd;
	}
	memset(b->userptr, 0, sizeof(b->userptr));
	return true;
}

/* Some resource of the queue can be the codec's buffer as a dmabuf (the
 * others are copied through bounce memory; with none, MMAP + copy does the
 * same work without udmabufs). */
static bool dmabuf_useful(struct vv_dev *d, struct vv_stream *s, enum m2m_queue mq)
{
	struct vv_queue *q = &s->q[mq];

	for (unsigned i = 0; CONFIG_VUV_DMABUF && i < q->nres; i++) {
		struct m2m_buf b = { 0 };

		if (res_dmabuf_buf(d, s, &q->res[i], mq, &b))
			return true;
	}
	return false;
}

/* Resource r as the codec's buffer itself on queue mq, by the queue's memory
 * (USERPTR: its view; DMABUF: its dmabuf): true and b set, or false: copy. */
static bool res_zc(struct vv_dev *d, struct vv_stream *s, struct vv_res *r, enum m2m_queue mq,
		   struct m2m_buf *b)
{
	if (s->m2m.mem[mq] == M2M_MEM_DMABUF)
		return res_dmabuf_buf(d, s, r, mq, b);
	return s->m2m.mem[mq] == M2M_MEM_USERPTR && res_userptr(d, s, r, mq, b);
}

/* Every resource of the queue can be the codec's buffer as it is. */
static bool all_userptr(struct vv_dev *d, struct vv_stream *s, enum m2m_queue mq)
{
	struct vv_queue *q = &s->q[mq];

	for (unsigned i = 0; i < q->nres; i++) {
		struct m2m_buf b = { 0 };

		if (!res_userptr(d, s, &q->res[i], mq, &b))
			return false;
	}
	return q->nres > 0;
}

/* The memory of queue mq's next allocation, into s->m2m.mem[mq]; *why for
 * the log (dev-mem2mem: the capabilities come from REQBUFS). */
static void choose_memory(struct vv_dev *d, struct vv_stream *s, enum m2m_queue mq,
			  const char **why)
{
	enum m2m_memory *m = &s->m2m.mem[mq];
	uint32_t caps = 0;

	*m = M2M_MEM_MMAP;
	*why = "--memory=mmap";
	if (!CONFIG_VUV_ZERO_COPY) {
		*why = "built without CONFIG_VUV_ZERO_COPY";
		return;
	}
	if (d->memory == VV_MEM_MMAP)
		return;
	m2m_query_buf_caps(&s->m2m, mq, &caps);
	if (d->memory == VV_MEM_DMABUF && dmabuf_useful(d, s, mq)) {
		*m = M2M_MEM_DMABUF;
		*why = "--memory=dmabuf";
	} else if (d->memory != VV_MEM_AUTO) {
		*m = M2M_MEM_USERPTR;
		*why = d->memory != VV_MEM_DMABUF ? "--memory=userptr" :
		       CONFIG_VUV_DMABUF ? "--memory=dmabuf, no resource can be one: the next path" :
		       "--memory=dmabuf, not built: the next path";
	} else if (!(caps & V4L2_BUF_CAP_SUPPORTS_USERPTR)) {
		*why = "the driver offers no USERPTR";
		if ((caps & V4L2_BUF_CAP_SUPPORTS_DMABUF) && dmabuf_useful(d, s, mq)) {
			*m = M2M_MEM_DMABUF;
			*why = "the driver offers DMABUF";
		}
	} else if (!all_userptr(d, s, mq)) {
		*why = "a resource has no linear view matching the codec's layout";
	} else {
		*m = M2M_MEM_USERPTR;
		*why = "the driver offers USERPTR";
	}
}

/* After REQBUFS: the path taken, once per queue of a stream, at -v. */
static void log_memory(struct vv_stream *s, enum m2m_queue mq, enum m2m_memory want,
		       const char *why)
{
	struct vv_queue *q = &s->q[mq];

	if (q->mem_logged)
		return;
	q->mem_logged = true;
	if (s->m2m.mem[mq] != want)
		vu_log(VU_DEBUG, "stream %u: %s memory: mmap + copy (REQBUFS %s failed)", s->id,
		       vq_name(mq), m2m_memory_name(want));
	else
		vu_log(VU_DEBUG, "stream %u: %s memory: %s%s (%s)", s->id, vq_name(mq),
		       m2m_memory_name(want), want == M2M_MEM_MMAP ? " + copy" : "", why);
}

/* A free V4L2 buffer for resource r: the one it had last if free (vb2 then
 * keeps its USERPTR pages pinned instead of pinning them again). */
static int pick_vbuf(struct vv_stream *s, enum m2m_queue mq, struct vv_res *r)
{
	struct vv_queue *q = &s->q[mq];
	int last = r->last_vbuf;

	if (last >= 0 && (unsigned)last < s->m2m.nbufs[mq] && q->vbuf_res[last] < 0)
		return last;
	for (unsigned i = 0; i < s->m2m.nbufs[mq]; i++)
		if (q->vbuf_res[i] < 0)
			return (int)i;
	return -1;
}

/* ---- capabilities ---------------------------------------------------------- */

struct vv_caps_buf {
	uint8_t *p;
	size_t len, max;
	bool full;
};

static void *caps_put(struct vv_caps_buf *b, size_t n)
{
	void *p;

	if (b->full || n > b->max - b->len) {
		b->full = true;
		return NULL;
	}
	p = b->p + b->len;
	memset(p, 0, n);
	b->len += n;
	return p;
}

static void put_range(struct virtio_video_format_range *r, uint32_t min, uint32_t max,
		      uint32_t step)
{
	r->min = htole32(min);
	r->max = htole32(max);
	r->step = htole32(step);
}

/* The m2m_info index of the sizes to report for format f of queue q: its own,
 * or (the driver lists sizes for the coded side only) its first partner's. */
static const struct m2m_format *sizes_of(const struct m2m_info *in, enum m2m_queue q,
					 const struct m2m_format *f)
{
	enum m2m_queue o = q == M2M_SRC ? M2M_DST : M2M_SRC;

	if (f->nsizes)
		return f;
	for (unsigned i = 0; i < in->nfmt[o]; i++)
		if ((f->pair_mask & (1ull << i)) && in->fmt[o][i].nsizes)
			return &in->fmt[o][i];
	return f;
}

/* Build the QUERY_CAPABILITY answer for queue q from the V4L2 enumeration. */
static size_t build_caps(struct vv_dev *d, enum m2m_queue q, uint32_t stream_id,
			 uint8_t *out, size_t max)
{
	const struct m2m_info *in = &d->info;
	enum m2m_queue o = q == M2M_SRC ? M2M_DST : M2M_SRC;
	struct vv_caps_buf b = { .p = out, .max = max };
	struct virtio_video_query_capability_resp *h = caps_put(&b, sizeof(*h));
	int vidx[2][M2M_MAX_FORMATS];	/* m2m index -> virtio descriptor index */
	uint32_t ndesc = 0;

	if (!h)
		return 0;
	/* One descriptor per virtio format: of a device's NV12 and NV12M, the
	 * one offered_fourcc gives */
	for (int qq = 0; qq < 2; qq++) {
		int n = 0;

		for (unsigned i = 0; i < in->nfmt[qq]; i++) {
			uint32_t f = in->fmt[qq][i].pixfmt;
			int fi = fmt_by_fourcc(f);

			vidx[qq][i] = (fi >= 0 && offered_fourcc(in, (enum m2m_queue)qq,
								 formats[fi].virtio) == f &&
				       n < VIRTIO_VIDEO_MAX_FORMAT_DESCS) ? n++ : -1;
		}
	}
	for (unsigned i = 0; i < in->nfmt[q] && !b.full; i++) {
		const struct m2m_format *f = &in->fmt[q][i];
		const struct m2m_format *sf = sizes_of(in, q, f);
		struct virtio_video_format_desc *fd;
		uint64_t mask = 0;
		unsigned nframes = sf->nsizes ? sf->nsizes : 0;
		uint32_t vf;

		if (vidx[q][i] < 0)
			continue;
		for (unsigned j = 0; j < in->nfmt[o]; j++)
			if ((f->pair_mask & (1ull << j)) && vidx[o][j] >= 0)
				mask |= 1ull << vidx[o][j];
		fd = caps_put(&b, sizeof(*fd));
		if (!fd)
			break;
		fd->mask = htole64(mask);
		vf = formats[fmt_by_fourcc(f->pixfmt)].virtio;
		fd->format = htole32(vf);
		fd->planes_layout = htole32(VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER |
					    (is_coded(vf) ? 0 : VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE));
		fd->plane_align = htole32(1);
		for (unsigned k = 0; k < nframes; k++) {
			const struct m2m_frmsize *z = &sf->sizes[k];
			struct virtio_video_format_frame *fr = caps_put(&b, sizeof(*fr));

			if (!fr)
				break;
			put_range(&fr->width, z->min_w, z->max_w, z->step_w);
			put_range(&fr->height, z->min_h, z->max_h, z->step_h);
			if (k == 0) {
				unsigned nr = 0;

				for (unsigned r = 0; r < sf->nrates; r++) {
					struct virtio_video_format_range *rr =
						caps_put(&b, sizeof(*rr));

					if (!rr)
						break;
					put_range(rr, sf->rates[r].min, sf->rates[r].max,
						  sf->rates[r].step);
					nr++;
				}
				fr->num_rates = htole32(nr);
			}
			fd->num_frames = htole32(k + 1);
		}
		ndesc++;
	}
	h = (void *)out;
	h->hdr.type = htole32(VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY);
	h->hdr.stream_id = htole32(stream_id);
	h->num_descs = htole32(ndesc);
	if (b.full)
		vu_log(VU_WARN, "capabilities truncated to %zu bytes", b.len);
	return b.len;
}

/* ---- V4L2 buffer bookkeeping ----------------------------------------------- */

static void queue_reset_pairs(struct vv_queue *q)
{
	for (unsigned i = 0; i < M2M_MAX_BUFFERS; i++) {
		q->vbuf_res[i] = -1;
		q->vbuf_zc[i] = false;
	}
	q->in_driver = 0;
	for (unsigned i = 0; i < q->nres; i++) {
		q->res[i].vbuf = -1;
		q->res[i].fed = 0;
		q->res[i].pieces = 0;
	}
}

/* The oldest queued resource not yet paired with a V4L2 buffer. */
static struct vv_res *oldest_waiting(struct vv_queue *q, unsigned *count)
{
	struct vv_res *best = NULL;

	*count = 0;
	for (unsigned i = 0; i < q->nres; i++) {
		struct vv_res *r = &q->res[i];

		if (!r->queued || r->vbuf >= 0)
			continue;
		(*count)++;
		if (!best || r->seq < best->seq)
			best = r;
	}
	return best;
}

/* Answer every parked RESOURCE_QUEUE chain of a queue with FLAG_ERR (QUEUE_CLEAR,
 * destroy) and forget the V4L2 pairing. */
static void queue_flush(struct vv_dev *d, struct vv_stream *s, enum m2m_queue mq)
{
	struct vv_queue *q = &s->q[mq];

	for (unsigned i = 0; i < q->nres; i++) {
		struct vv_res *r = &q->res[i];

		if (!r->queued)
			continue;
		res_done(d, s, r, false, r->timestamp, VIRTIO_VIDEO_BUFFER_FLAG_ERR, 0);
	}
	queue_reset_pairs(q);
}

/* POLLIN/POLLOUT are asked only while a buffer can come back. Not after a
 * resolution change's or a drain's LAST buffer: the m2m core then reports
 * the fd readable for good (last_buffer_dequeued), and every DQBUF would
 * find nothing until the guest restarts the stream (measured with the fake
 * codec: thousands of empty wake-ups in a row). The inputs the codec still
 * holds come back once the stream runs again. */
static bool stream_wants_data(const struct vv_stream *s)
{
	if (s->error || s->flow == VV_FLOW_RES_CHANGE || s->flow == VV_FLOW_STOPPED)
		return false;
	return (s->m2m.streaming[M2M_SRC] && s->q[M2M_SRC].in_driver) ||
	       (s->m2m.streaming[M2M_DST] && s->q[M2M_DST].in_driver);
}

/* ---- feeding the codec (both roles; command and event thread) ------------- */

/* The oldest input resource whose data is not all in V4L2 buffers yet. */
static struct vv_res *oldest_unfed(struct vv_queue *q)
{
	struct vv_res *best = NULL;

	for (unsigned i = 0; i < q->nres; i++) {
		struct vv_res *r = &q->res[i];

		if (r->queued && r->fed < r->bytes && (!best || r->seq < best->seq))
			best = r;
	}
	return best;
}

static void input_done(struct vv_dev *d, struct vv_stream *s, struct vv_res *r, uint32_t flags)
{
	res_done(d, s, r, true, r->timestamp, flags, 0);
}

/* Copy queued bitstream data into free V4L2 OUTPUT buffers and queue them
 * (dev-decoder.rst, Decoding). The codec's buffers are sized from the coded
 * resolution, so a large frame may take several of them: a stateful decoder
 * parses the stream across buffer boundaries. The guest's buffer is done
 * when its last piece comes back. */
static void dec_feed_src(struct vv_dev *d, struct vv_stream *s)
{
	struct vv_queue *q = &s->q[M2M_SRC];
	struct vv_res *r;
	int vb;

	while ((r = oldest_unfed(q)) && (vb = pick_vbuf(s, M2M_SRC, r)) >= 0) {
		struct m2m_plane_map *m = &s->m2m.map[M2M_SRC][vb][0];
		uint32_t n = r->bytes - r->fed;
		struct m2m_buf b = { .index = (uint32_t)vb, .timestamp = r->timestamp };
		/* zero-copy: the whole guest buffer is one V4L2 buffer */
		bool zc = !r->fed && res_zc(d, s, r, M2M_SRC, &b) && b.length[0] >= n;
		int ret = 0;

		if (!zc) {
			m2m_buf_own(&b);
			if (n > m->length)
				n = (uint32_t)m->length;
			ret = res_copy(d, r, 0, (uint64_t)r->plane_offsets[0] + r->fed, m->addr, n,
				       false);
		}
		q->vbuf_zc[vb] = zc;
		if (!ret) {
			b.bytesused[0] = n;
			ret = m2m_qbuf(&s->m2m, M2M_SRC, &b);
		}
		if (ret) {
			vu_log(VU_WARN, "stream %u: input resource %u: %s", s->id, r->id,
			       ret == -EFAULT ? "guest memory not readable" : strerror(-ret));
			r->flags |= VIRTIO_VIDEO_BUFFER_FLAG_ERR;
			r->fed = r->bytes;	/* give up on the rest */
			if (!r->pieces)
				input_done(d, s, r, r->flags);
			continue;
		}
		r->fed += n;
		r->pieces++;
		r->last_vbuf = vb;
		zc ? s->n_zc++ : s->n_copied++;
		s->fed = true;
		q->vbuf_res[vb] = (int)(r - q->res);
		q->in_driver++;
	}
}

/* Encoder: copy waiting raw frames into free V4L2 OUTPUT buffers and queue
 * them (dev-encoder.rst, Encoding). */
static void enc_feed_src(struct vv_dev *d, struct vv_stream *s)
{
	struct vv_queue *q = &s->q[M2M_SRC];
	struct vv_res *r;
	int vb;

	while ((r = oldest_unfed(q)) && (vb = pick_vbuf(s, M2M_SRC, r)) >= 0) {
		struct m2m_buf b = { .index = (uint32_t)vb, .timestamp = r->timestamp };
		long ret = 0;

		q->vbuf_zc[vb] = res_zc(d, s, r, M2M_SRC, &b);
		if (!q->vbuf_zc[vb]) {
			m2m_buf_own(&b);
			ret = copy_frame(d, s, r, M2M_SRC, (unsigned)vb, false);
		}

		for (unsigned p = 0; p < s->m2m.num_planes[M2M_SRC]; p++)
			b.bytesused[p] = q->alloc_pix.sizeimage[p];
		if (ret >= 0)
			ret = m2m_qbuf(&s->m2m, M2M_SRC, &b);
		r->fed = r->bytes;
		if (ret) {
			vu_log(VU_WARN, "stream %u: input resource %u: %s", s->id, r->id,
			       ret == -EFAULT ? "guest memory not readable" :
			       ret == -ENOSPC ? "smaller than a frame" : strerror((int)-ret));
			input_done(d, s, r, VIRTIO_VIDEO_BUFFER_FLAG_ERR);
			continue;
		}
		r->pieces = 1;
		r->last_vbuf = vb;
		q->vbuf_zc[vb] ? s->n_zc++ : s->n_copied++;
		s->fed = true;
		q->vbuf_res[vb] = (int)(r - q->res);
		q->in_driver++;
	}
}

static void feed_src(struct vv_dev *d, struct vv_stream *s)
{
	if (is_encoder(d))
		enc_feed_src(d, s);
	else
		dec_feed_src(d, s);
}

/* Give waiting output resources V4L2 CAPTURE buffers. One resource is held
 * back while others wait, so that a drain whose LAST buffer carries a frame
 * still has a guest buffer for the empty EOS marker the guest driver needs. */
static void feed_dst(struct vv_dev *d, struct vv_stream *s)
{
	struct vv_queue *q = &s->q[M2M_DST];

	if (!q->allocated || s->flow == VV_FLOW_RES_CHANGE)
		return;
	for (;;) {
		unsigned waiting;
		struct vv_res *r = oldest_waiting(q, &waiting);
		int vb = r ? pick_vbuf(s, M2M_DST, r) : -1;
		struct m2m_buf b = { 0 };
		int ret;

		if (!r || vb < 0)
			return;
		if (s->eos_pending) {
			res_done(d, s, r, true, 0, VIRTIO_VIDEO_BUFFER_FLAG_EOS, 0);
			s->eos_pending = false;
			continue;
		}
		if (waiting == 1 && q->in_driver > 0)
			return;		/* keep one back */
		b.index = (uint32_t)vb;
		q->vbuf_zc[vb] = res_zc(d, s, r, M2M_DST, &b);
		if (!q->vbuf_zc[vb])
			m2m_buf_own(&b);
		ret = m2m_qbuf(&s->m2m, M2M_DST, &b);
		if (ret) {
			vu_log(VU_WARN, "stream %u: QBUF capture: %s", s->id, strerror(-ret));
			res_done(d, s, r, true, 0, VIRTIO_VIDEO_BUFFER_FLAG_ERR, 0);
			continue;
		}
		q->vbuf_res[vb] = (int)(r - q->res);
		r->vbuf = vb;
		r->last_vbuf = vb;
		q->vbuf_zc[vb] ? s->n_zc++ : s->n_copied++;
		q->in_driver++;
	}
}

/* Read the capture format after SOURCE_CHANGE (dev-decoder.rst, Capture
 * setup, step 1). */
static void dec_read_capture_format(struct vv_stream *s)
{
	struct m2m_pix pix;
	struct m2m_rect r;
	int32_t min = 0;

	if (m2m_get_fmt(&s->m2m, M2M_DST, &pix))
		return;
	if (m2m_get_selection(&s->m2m, M2M_DST, V4L2_SEL_TGT_COMPOSE, &r))
		r = (struct m2m_rect){ 0, 0, pix.width, pix.height };
	s->crop = r;
	if (m2m_get_ctrl(&s->m2m, V4L2_CID_MIN_BUFFERS_FOR_CAPTURE, &min) || min < 1)
		min = 1;
	/* +1: the buffer held back for the EOS marker */
	s->min_bufs[M2M_DST] = (uint32_t)min + 1;
}

/* (Re)allocate CAPTURE buffers with the current format and start streaming
 * (dev-decoder.rst, Capture setup, steps 5-7; dev-encoder.rst,
 * Initialization, steps 6-7). */
static int setup_capture(struct vv_dev *d, struct vv_stream *s)
{
	struct vv_queue *q = &s->q[M2M_DST];
	unsigned count = s->min_bufs[M2M_DST] + 2;
	enum m2m_memory want;
	const char *why;
	int r;

	if (count > M2M_MAX_BUFFERS)
		count = M2M_MAX_BUFFERS;
	q->allocated = false;	/* true again once REQBUFS succeeded */
	r = m2m_get_fmt(&s->m2m, M2M_DST, &q->alloc_pix);
	if (r)
		return r;
	choose_memory(d, s, M2M_DST, &why);
	want = s->m2m.mem[M2M_DST];
	r = m2m_alloc_buffers(&s->m2m, M2M_DST, &count);
	if (r)
		return r;
	log_memory(s, M2M_DST, want, why);
	queue_reset_pairs(q);
	q->allocated = true;
	r = m2m_streamon(&s->m2m, M2M_DST);
	if (r)
		return r;
	if (s->flow == VV_FLOW_RES_CHANGE || s->flow == VV_FLOW_INIT)
		s->flow = VV_FLOW_RUNNING;
	s->change_sent = false;		/* the guest acted on the last change */
	return 0;
}

/* ---- results from the codec, drain, events (event thread) ----------------- */

static uint32_t frame_flags(uint32_t v4l2_flags)
{
	uint32_t f = 0;

	if (v4l2_flags & V4L2_BUF_FLAG_KEYFRAME)
		f |= VIRTIO_VIDEO_BUFFER_FLAG_IFRAME;
	if (v4l2_flags & V4L2_BUF_FLAG_PFRAME)
		f |= VIRTIO_VIDEO_BUFFER_FLAG_PFRAME;
	if (v4l2_flags & V4L2_BUF_FLAG_BFRAME)
		f |= VIRTIO_VIDEO_BUFFER_FLAG_BFRAME;
	if (v4l2_flags & V4L2_BUF_FLAG_ERROR)
		f |= VIRTIO_VIDEO_BUFFER_FLAG_ERR;
	return f;
}

/* The frame type of a coded FWHT frame from its header, for drivers (vicodec
 * 6.1) that set no KEYFRAME/PFRAME flag on encoded buffers: 44 bytes, magic
 * 0x4f4f4f4f 0xffffffff, big-endian flags at byte 20. */
static uint32_t fwht_frame_flags(const uint8_t *p, uint32_t len)
{
	static const uint8_t magic[8] = { 0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff };
	uint32_t flags;

	if (len < 44 || memcmp(p, magic, sizeof(magic)))
		return 0;
	flags = (uint32_t)p[20] << 24 | (uint32_t)p[21] << 16 | (uint32_t)p[22] << 8 | p[23];
	return (flags & V4L2_FWHT_FL_I_FRAME) ? VIRTIO_VIDEO_BUFFER_FLAG_IFRAME
					      : VIRTIO_VIDEO_BUFFER_FLAG_PFRAME;
}

static void drain_done(struct vv_dev *d, struct vv_stream *s)
{
	if (s->drain != VV_DRAIN_NONE)
		respond_hdr(d, &s->drain_chain, VIRTIO_VIDEO_RESP_OK_NODATA, s->id);
	s->drain = VV_DRAIN_NONE;
	s->fed = false;
	s->flow = VV_FLOW_STOPPED;
}

/* Return an empty EOS buffer: the next waiting output resource, or the next
 * one the guest queues. */
static void send_eos(struct vv_dev *d, struct vv_stream *s)
{
	unsigned waiting;
	struct vv_res *r = oldest_waiting(&s->q[M2M_DST], &waiting);

	if (!r) {
		s->eos_pending = true;
		return;
	}
	res_done(d, s, r, true, 0, VIRTIO_VIDEO_BUFFER_FLAG_EOS, 0);
}

/* Tell the guest the capture format changed (DECODER_RESOLUTION_CHANGED),
 * once per change it must act on: a codec that repeats SOURCE_CHANGE for
 * the format already announced, before the guest set up capture for it
 * (setup_capture), is not repeated to the guest (an event storm would
 * otherwise make the guest reallocate its buffers again and again). */
static void res_change_send(struct vv_dev *d, struct vv_stream *s)
{
	struct m2m_pix pix = { 0 };

	if (m2m_get_fmt(&s->m2m, M2M_DST, &pix))
		pix = s->change_pix;
	if (s->change_sent && !memcmp(&pix, &s->change_pix, sizeof(pix)) &&
	    !memcmp(&s->crop, &s->change_crop, sizeof(s->crop)))
		return;
	s->change_sent = true;
	s->change_pix = pix;
	s->change_crop = s->crop;
	event_send(d, VIRTIO_VIDEO_EVENT_DECODER_RESOLUTION_CHANGED, s->id);
}

/* DQBUF on queue mq: the buffer, and the resource it was paired with (the
 * pairing ends; NULL when none, e.g. after a clear). A buffer index the
 * driver should not have returned is an error, never an array index. */
static int dequeue(struct vv_stream *s, enum m2m_queue mq, struct m2m_buf *b, struct vv_res **r)
{
	struct vv_queue *q = &s->q[mq];
	int slot, ret = m2m_dqbuf(&s->m2m, mq, b);

	if (ret)
		return ret;
	if (b->index >= s->m2m.nbufs[mq] || b->index >= M2M_MAX_BUFFERS) {
		vu_log(VU_WARN, "stream %u: the driver returned %s buffer %u of %u", s->id,
		       m2m_queue_name(mq), b->index, s->m2m.nbufs[mq]);
		return -EIO;
	}
	slot = q->vbuf_res[b->index];
	q->vbuf_res[b->index] = -1;
	if (q->in_driver)
		q->in_driver--;
	*r = slot < 0 || (unsigned)slot >= q->nres ? NULL : &q->res[slot];
	if (*r)
		(*r)->vbuf = -1;
	return 0;
}

static int dequeue_dst(struct vv_dev *d, struct vv_stream *s)
{
	struct m2m_buf b;
	struct vv_res *r;
	int ret = dequeue(s, M2M_DST, &b, &r);
	bool last, empty;

	if (ret || !r)
		return ret;
	last = b.flags & V4L2_BUF_FLAG_LAST;
	empty = b.bytesused[0] == 0;
	if (VUV_TRACE_ON)
		vu_log(VU_TRACE, "stream %u: capture buffer %u -> resource %u, %u bytes%s",
		       s->id, b.index, r->id, b.bytesused[0], last ? ", LAST" : "");
	if (!empty || !last) {
		long n = empty ? 0 : is_encoder(d) ? copy_coded_out(d, s, r, &b)
				   : copy_frame(d, s, r, M2M_DST, b.index, true);
		uint32_t flags = frame_flags(b.flags);

		if (is_encoder(d) && n > 0 && s->coded_format == VIRTIO_VIDEO_FORMAT_FWHT &&
		    !(flags & (VIRTIO_VIDEO_BUFFER_FLAG_IFRAME | VIRTIO_VIDEO_BUFFER_FLAG_PFRAME |
			       VIRTIO_VIDEO_BUFFER_FLAG_BFRAME))) {
			const uint8_t *p = (uint8_t *)s->m2m.map[M2M_DST][b.index][0].addr +
					   b.data_offset[0];
			uint8_t hdr[44];
			uint32_t len = (uint32_t)n;

			/* zero-copy: the header is in guest memory, read it safely */
			if (s->q[M2M_DST].vbuf_zc[b.index]) {
				p = hdr;
				len = n < (long)sizeof(hdr) || res_copy(d, r, 0, r->plane_offsets[0], hdr,
									 sizeof(hdr), false) ? 0 : sizeof(hdr);
			}
			flags |= fwht_frame_flags(p, len);
		}

		if (n < 0) {
			vu_log(VU_WARN, "stream %u: output resource %u: %s", s->id, r->id,
			       n == -ENOSPC ? "too small for the frame" : "guest memory not writable");
			flags |= VIRTIO_VIDEO_BUFFER_FLAG_ERR;
			n = 0;
		}
		res_done(d, s, r, true, b.timestamp, flags, (uint32_t)n);
	}
	if (!last)
		return 0;
	if (s->drain == VV_DRAIN_STOPPING) {
		/* dev-decoder.rst, Drain: the LAST buffer ends it. The guest
		 * driver forces bytesused to 0 on EOS, so the marker is a
		 * separate empty buffer when LAST carried a frame. */
		if (empty) {
			res_done(d, s, r, true, 0, VIRTIO_VIDEO_BUFFER_FLAG_EOS, 0);
		} else {
			send_eos(d, s);
		}
		drain_done(d, s);
	} else if (!is_encoder(d) && s->flow != VV_FLOW_STOPPED) {
		/* (Stopped: the LAST buffer of a drain that a QUEUE_CLEAR of
		 * the input ended, cmd_queue_clear; its resource stays queued
		 * and gets a V4L2 buffer again at resume_after_drain.)
		 * Dynamic resolution change: the resource stays queued, to be
		 * returned by the guest's QUEUE_CLEAR; old frames are all out,
		 * so now tell the guest. */
		s->flow = VV_FLOW_RES_CHANGE;
		if (s->change_pending) {
			s->change_pending = false;
			res_change_send(d, s);
		}
	}
	return 0;
}

static int dequeue_src(struct vv_dev *d, struct vv_stream *s)
{
	struct m2m_buf b;
	struct vv_res *r;
	int ret = dequeue(s, M2M_SRC, &b, &r);

	if (ret || !r)
		return ret;
	if (b.flags & V4L2_BUF_FLAG_ERROR)
		r->flags |= VIRTIO_VIDEO_BUFFER_FLAG_ERR;
	if (r->pieces && --r->pieces == 0 && r->fed == r->bytes && r->queued)
		input_done(d, s, r, r->flags);
	return 0;
}

static void stream_error(struct vv_dev *d, struct vv_stream *s, const char *why)
{
	if (s->error)
		return;
	vu_log(VU_ERR, "stream %u: %s", s->id, why);
	s->error = true;
	event_send(d, VIRTIO_VIDEO_EVENT_ERROR, s->id);
}

/* Pending V4L2 events. All of them are read first: the SOURCE_CHANGEs of
 * one wake-up describe one state of the codec (the format it reports now),
 * so they make one change, however many the driver raised. */
static void service_events(struct vv_dev *d, struct vv_stream *s)
{
	uint32_t type, changes;
	unsigned n = 0;

	while (m2m_dqevent(&s->m2m, &type, &changes) == 0)
		if (type == V4L2_EVENT_SOURCE_CHANGE && (changes & V4L2_EVENT_SRC_CH_RESOLUTION))
			n++;
	if (!n)
		return;
	dec_read_capture_format(s);
	s->fmt_known = true;
	vu_log(VU_DEBUG, "stream %u: source change (%u event%s)", s->id, n, n == 1 ? "" : "s");
	if (!s->q[M2M_DST].allocated || !s->m2m.streaming[M2M_DST] ||
	    s->flow == VV_FLOW_RES_CHANGE) {
		/* first header, or the LAST buffer is already out */
		res_change_send(d, s);
	} else {
		/* mid-stream: the event follows the LAST buffer, so that
		 * the guest has every frame of the old size first */
		s->change_pending = true;
	}
}

/* Issue the STOP command of a requested drain once it can take effect
 * (dev-decoder.rst / dev-encoder.rst, Drain, step 1):
 * - both queues stream: vicodec and the m2m helpers ignore it otherwise;
 * - every input the guest queued before STREAM_DRAIN is inside the codec.
 *   The m2m core marks the last buffer queued *at STOP time*: inputs still
 *   waiting here for a free V4L2 buffer would come after the end of the
 *   drain, lost to it and stale after it.
 * Called, under the device lock, by whichever thread makes the last of
 * these true: the command thread (STREAM_DRAIN, RESOURCE_QUEUE of output)
 * or the event thread (after feeding the codec freed V4L2 buffers). */
static void drain_start(struct vv_dev *d, struct vv_stream *s)
{
	int r;

	if (s->drain != VV_DRAIN_WAIT || !s->m2m.streaming[M2M_SRC] ||
	    !s->m2m.streaming[M2M_DST] || s->flow != VV_FLOW_RUNNING || oldest_unfed(&s->q[M2M_SRC]))
		return;
	r = is_encoder(d) ? m2m_encoder_cmd(&s->m2m, V4L2_ENC_CMD_STOP, false)
			  : m2m_decoder_cmd(&s->m2m, V4L2_DEC_CMD_STOP, false);
	if (r) {
		vu_log(VU_WARN, "stream %u: drain (STOP command): %s", s->id, strerror(-r));
		respond_hdr(d, &s->drain_chain, VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION, s->id);
		s->drain = VV_DRAIN_NONE;
		return;
	}
	s->drain = VV_DRAIN_STOPPING;
	wake_events(d);
}

/* POLLERR from the event thread's poll() describes the moment poll()
 * looked, before this thread had the lock: the m2m core reports it while
 * neither queue has work (v4l2_m2m_poll_for_data), e.g. just after a seek's
 * OUTPUT STREAMOFF with every capture buffer out, and the commands that
 * queued buffers again may have run since. Asked again under the lock, it
 * is the codec's state as the daemon knows it. */
static bool poll_err_now(const struct vv_stream *s)
{
	struct pollfd p = { .fd = s->m2m.fd, .events = POLLIN | POLLOUT };

	return poll(&p, 1, 0) > 0 && (p.revents & POLLERR);
}

/* Everything the codec has finished for stream s. Lock held. */
static void service_stream(struct vv_dev *d, struct vv_stream *s, short revents)
{
	bool progress = false;
	int r;

	if (revents & (POLLIN | POLLOUT | POLLERR)) {
		while ((r = dequeue_src(d, s)) == 0)
			progress = true;
		if (r == -EIO) {
			/* as on capture below: that input would never be answered */
			stream_error(d, s, "DQBUF output: I/O error");
			return;
		}
		if (r != -EAGAIN && r != -EINVAL && r != -EPIPE)
			vu_log(VU_WARN, "stream %u: DQBUF output: %s", s->id, strerror(-r));
		while ((r = dequeue_dst(d, s)) == 0) {
			/* tell the guest now, not after copying the next frames */
			vu_queue_notify(d->vu, VIRTIO_VIDEO_QUEUE_COMMAND);
			progress = true;
		}
		if (r == -EPIPE && s->drain == VV_DRAIN_STOPPING) {
			send_eos(d, s);
			drain_done(d, s);
		} else if (r == -EPIPE && s->flow != VV_FLOW_RES_CHANGE &&
			   s->flow != VV_FLOW_STOPPED) {
			/* vb2: EPIPE only after a LAST buffer, and every LAST
			 * buffer ended a drain or began a resolution change
			 * (dequeue_dst). Without one, the capture buffers in
			 * the driver never come back. */
			stream_error(d, s, "DQBUF capture: EPIPE without a LAST buffer");
			return;
		} else if (r == -EIO) {
			/* a bad index or the driver's own I/O error (dequeue()):
			 * the buffer's resource would never be answered */
			stream_error(d, s, "DQBUF capture: I/O error");
			return;
		}
		feed_src(d, s);
		feed_dst(d, s);
		drain_start(d, s);
	}
	if ((revents & POLLPRI) && !is_encoder(d))
		service_events(d, s);	/* source change: decoders only */
	if ((revents & (POLLHUP | POLLNVAL)) ||
	    ((revents & POLLERR) && !progress && stream_wants_data(s) && poll_err_now(s)))
		stream_error(d, s, "the V4L2 device reported an error");
}

static void *event_thread(void *arg)
{
	struct vv_dev *d = arg;
	struct pollfd pfd[1 + CONFIG_VUV_MAX_STREAMS];
	unsigned sidx[1 + CONFIG_VUV_MAX_STREAMS];
	uint32_t sgen[1 + CONFIG_VUV_MAX_STREAMS];

	for (;;) {
		unsigned n = 1;

		vu_lock(d->vu);
		if (d->stop) {
			vu_unlock(d->vu);
			return NULL;
		}
		pfd[0] = (struct pollfd){ .fd = d->wake_fd, .events = POLLIN };
		for (unsigned i = 0; i < CONFIG_VUV_MAX_STREAMS; i++) {
			struct vv_stream *s = d->streams[i];

			/* a failed stream's fd may report POLLHUP/POLLERR for
			 * good: left out until QUEUE_CLEAR or destroy */
			if (!s || s->state != VV_STREAM_OPEN || s->error)
				continue;
			pfd[n].fd = s->m2m.fd;
			pfd[n].events = POLLPRI | (stream_wants_data(s) ? POLLIN | POLLOUT : 0);
			pfd[n].revents = 0;
			sidx[n] = i;
			sgen[n] = s->gen;
			n++;
		}
		d->poll_seen = d->poll_req;
		pthread_cond_broadcast(&d->cond);
		vu_unlock(d->vu);

		if (poll(pfd, n, -1) < 0) {
			if (errno != EINTR)
				vu_log(VU_ERR, "event thread: poll: %s", strerror(errno));
			continue;
		}
		if (pfd[0].revents) {
			uint64_t v;

			if (read(d->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				vu_log(VU_WARN, "event thread: wake read: %s", strerror(errno));
		}
		vu_lock(d->vu);
		for (unsigned k = 1; k < n; k++) {
			/* the slot may hold another stream by now: gens are unique */
			struct vv_stream *s = d->streams[sidx[k]];

			if (!pfd[k].revents || !s || s->state != VV_STREAM_OPEN || s->gen != sgen[k])
				continue;
			service_stream(d, s, pfd[k].revents);
		}
		vu_queue_notify(d->vu, VIRTIO_VIDEO_QUEUE_COMMAND);
		vu_unlock(d->vu);
	}
}

/* Wait until the event thread no longer polls what we are about to close.
 * Lock held; cond_wait releases it while waiting. */
static void sync_event_thread(struct vv_dev *d)
{
	uint64_t want = ++d->poll_req;

	wake_events(d);
	while (d->poll_seen < want && !d->stop)
		pthread_cond_wait(&d->cond, vu_mutex(d->vu));
}

/* ---- streams --------------------------------------------------------------- */

static void stream_release(struct vv_dev *d, struct vv_stream *s, bool answer)
{
	if (CONFIG_VUV_ZERO_COPY)
		vu_log(VU_DEBUG, "stream %u: %lu buffers zero-copy, %lu copied", s->id, s->n_zc,
		       s->n_copied);
	s->state = VV_STREAM_CLOSING;
	sync_event_thread(d);
	for (int mq = 0; mq < 2; mq++) {
		struct vv_queue *q = &s->q[mq];

		for (unsigned i = 0; i < q->nres; i++) {
			struct vv_res *r = &q->res[i];

			if (r->queued && answer)
				res_done(d, s, r, false, r->timestamp, VIRTIO_VIDEO_BUFFER_FLAG_ERR, 0);
			else if (r->queued)
				vu_chain_release(&r->chain);
			res_free(d, r);
		}
		free(q->res);
	}
	if (s->drain != VV_DRAIN_NONE) {
		if (answer)
			respond_hdr(d, &s->drain_chain, VIRTIO_VIDEO_RESP_OK_NODATA, s->id);
		else
			vu_chain_release(&s->drain_chain);
	}
	m2m_close(&s->m2m);
	for (unsigned i = 0; i < CONFIG_VUV_MAX_STREAMS; i++)
		if (d->streams[i] == s)
			d->streams[i] = NULL;
	d->nstreams--;
	free(s);
}

/* ---- requests, parsed once -------------------------------------------------- */

/* virtio_video_params in host order (what SET_PARAMS may change). */
struct vv_params {
	enum m2m_queue q;
	uint32_t format;		/* virtio format */
	uint32_t width, height;
	struct m2m_rect crop;
	uint32_t frame_rate;
	uint32_t plane_size0;		/* plane_formats[0].plane_size */
};

/* A command as the handlers see it: copied out of guest memory once (by
 * vu.c), then parsed here once into host order, with every enum, count and
 * bound checked by its parser. Nothing reads the request bytes again. */
struct vv_req {
	uint32_t type, stream_id;
	struct vv_stream *s;		/* looked up by dispatch when the command needs one */
	union {
		enum m2m_queue q;	/* QUERY_CAPABILITY, DESTROY_ALL, QUEUE_CLEAR, GET_PARAMS */
		struct {
			uint32_t in_mem, out_mem, coded;
			char tag[65];
		} create;
		struct {
			enum m2m_queue q;
			uint32_t id, layout;
			unsigned num_planes;
			uint32_t plane_offsets[VIRTIO_VIDEO_MAX_PLANES];
			uint32_t num_entries[VIRTIO_VIDEO_MAX_PLANES];
			unsigned nent;
			const uint8_t *entries;	/* nent x 16 bytes of the copied request */
		} rc;
		struct {
			enum m2m_queue q;
			uint32_t id;
			uint64_t timestamp;
			uint64_t bytes;		/* sum of data_sizes[] */
		} rq;
		struct vv_params params;
		struct {
			uint32_t ctl, format, value;
		} ctl;
	} u;
};

static int parse_queue(uint32_t queue_type, enum m2m_queue *q)
{
	int i = queue_index(queue_type);

	if (i < 0)
		return -EINVAL;
	*q = (enum m2m_queue)i;
	return 0;
}

static int parse_none(const uint8_t *req, size_t len, struct vv_req *r)
{
	(void)req, (void)len, (void)r;
	return 0;
}

/* QUERY_CAPABILITY, RESOURCE_DESTROY_ALL, QUEUE_CLEAR, GET_PARAMS(_EXT) */
static int parse_queue_cmd(const uint8_t *req, size_t len, struct vv_req *r)
{
	(void)len;
	return parse_queue(rd32(req + 8), &r->u.q);
}

static int parse_stream_create(const uint8_t *req, size_t len, struct vv_req *r)
{
	(void)len;
	r->u.create.in_mem = rd32(req + 8);
	r->u.create.out_mem = rd32(req + 12);
	r->u.create.coded = rd32(req + 16);
	memcpy(r->u.create.tag, req + 24, 64);
	r->u.create.tag[64] = '\0';
	return 0;
}

static int parse_resource_create(const uint8_t *req, size_t len, struct vv_req *r)
{
	const size_t hdr = sizeof(struct virtio_video_resource_create);
	uint64_t total = 0;

	if (len < hdr || parse_queue(rd32(req + 8), &r->u.rc.q))
		return -EINVAL;
	r->u.rc.id = rd32(req + 12);
	r->u.rc.layout = rd32(req + 16);
	r->u.rc.num_planes = rd32(req + 20);
	if ((r->u.rc.layout != VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER &&
	     r->u.rc.layout != VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE) ||
	    r->u.rc.num_planes == 0 || r->u.rc.num_planes > VIRTIO_VIDEO_MAX_PLANES)
		return -EINVAL;
	for (unsigned p = 0; p < VIRTIO_VIDEO_MAX_PLANES; p++) {
		r->u.rc.plane_offsets[p] = rd32(req + 24 + 4 * p);
		r->u.rc.num_entries[p] = rd32(req + 56 + 4 * p);
		if (r->u.rc.num_entries[p] > VV_MAX_ENTRIES ||
		    (p >= r->u.rc.num_planes && r->u.rc.num_entries[p]))
			return -EINVAL;
		total += r->u.rc.num_entries[p];
	}
	if (total == 0 || total > VV_MAX_ENTRIES ||
	    len - hdr != total * sizeof(struct virtio_video_mem_entry))
		return -EINVAL;
	r->u.rc.nent = (unsigned)total;
	r->u.rc.entries = req + hdr;
	return 0;
}

static int parse_resource_queue(const uint8_t *req, size_t len, struct vv_req *r)
{
	uint32_t n = rd32(req + 24);

	(void)len;
	if (parse_queue(rd32(req + 8), &r->u.rq.q) || n > VIRTIO_VIDEO_MAX_PLANES)
		return -EINVAL;
	r->u.rq.id = rd32(req + 12);
	r->u.rq.timestamp = rd64(req + 16);
	r->u.rq.bytes = 0;
	for (unsigned i = 0; i < n; i++)
		r->u.rq.bytes += rd32(req + 28 + 4 * i);
	return 0;
}

/* SET_PARAMS(_EXT): the bounds of what may reach the codec; the codec
 * adjusts values inside them and the guest reads the result back. */
static int parse_set_params(const uint8_t *req, size_t len, struct vv_req *r)
{
	const uint8_t *p = req + 8;
	struct vv_params *v = &r->u.params;

	(void)len;
	if (parse_queue(rd32(p), &v->q))
		return -EINVAL;
	v->format = rd32(p + 4);
	v->width = rd32(p + 8);
	v->height = rd32(p + 12);
	v->crop = (struct m2m_rect){ (int32_t)rd32(p + 24), (int32_t)rd32(p + 28), rd32(p + 32),
				     rd32(p + 36) };
	v->frame_rate = rd32(p + 40);
	v->plane_size0 = rd32(p + 48);
	if (fmt_by_virtio(v->format) < 0 || v->width > VV_MAX_DIM || v->height > VV_MAX_DIM ||
	    v->frame_rate > VV_MAX_FPS || v->plane_size0 > VV_MAX_PLANE_SIZE)
		return -EINVAL;
	/* a crop, when given, lies inside the frame */
	if (v->crop.width && ((uint32_t)v->crop.left > v->width ||
			      v->crop.width > v->width - (uint32_t)v->crop.left ||
			      (uint32_t)v->crop.top > v->height ||
			      v->crop.height > v->height - (uint32_t)v->crop.top))
		return -EINVAL;
	return 0;
}

static int parse_query_control(const uint8_t *req, size_t len, struct vv_req *r)
{
	(void)len;
	r->u.ctl.ctl = rd32(req + 8);
	r->u.ctl.format = rd32(req + 16);
	return 0;
}

static int parse_get_control(const uint8_t *req, size_t len, struct vv_req *r)
{
	(void)len;
	r->u.ctl.ctl = rd32(req + 8);
	return 0;
}

/* 24 bytes, or 16 for FORCE_KEYFRAME, which has no value. */
static int parse_set_control(const uint8_t *req, size_t len, struct vv_req *r)
{
	r->u.ctl.ctl = rd32(req + 8);
	if (len == VIRTIO_VIDEO_SET_CONTROL_SHORT_SIZE &&
	    r->u.ctl.ctl == VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME) {
		r->u.ctl.value = 1;
		return 0;
	}
	if (len != sizeof(struct virtio_video_set_control))
		return -EINVAL;
	r->u.ctl.value = rd32(req + 16);
	return 0;
}

/* ---- command handlers ------------------------------------------------------- */

/*
 * A handler returns VV_ANSWER (dispatch answers OK_NODATA, or the response
 * the handler put in *out), VV_PARKED (the chain now belongs to the stream,
 * which answers it later, exactly once), or one of these -errno, which
 * dispatch maps to the protocol's error (resp_of): -ESRCH stream id,
 * -ENOENT resource id, -EBUSY invalid operation, -ENOMEM out of memory,
 * -EOPNOTSUPP unsupported control, -EINVAL (anything else) invalid
 * parameter. Host errors are logged where they happen and turned into one
 * of these; a raw errno never decides the answer.
 */
enum { VV_ANSWER = 0, VV_PARKED = 1 };

struct vv_out {
	_Alignas(8) uint8_t buf[VV_RESP_MAX > VV_CAPS_MAX ? VV_RESP_MAX : VV_CAPS_MAX];
	size_t len, max;		/* max: what the guest's writable buffer takes */
};

static uint32_t resp_of(int err)
{
	switch (err) {
	case -ESRCH: return VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID;
	case -ENOENT: return VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID;
	case -EBUSY: return VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION;
	case -ENOMEM: return VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY;
	case -EOPNOTSUPP: return VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL;
	default: return VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER;
	}
}

/* Move the chain into the stream's keeping: it is answered from there. */
static int park(struct vu_chain *dst, struct vu_chain *c)
{
	*dst = *c;
	c->req = NULL;
	return VV_PARKED;
}

static int cmd_query_capability(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
				struct vv_out *out)
{
	(void)c;
	out->len = build_caps(d, q->u.q, q->stream_id, out->buf,
			      out->max < VV_CAPS_MAX ? out->max : VV_CAPS_MAX);
	return out->len ? VV_ANSWER : -EINVAL;
}

/* The driver's minimum for the OUTPUT queue, or 1. */
static uint32_t min_output_buffers(struct vv_stream *s)
{
	int32_t v = 0;

	return m2m_get_ctrl(&s->m2m, V4L2_CID_MIN_BUFFERS_FOR_OUTPUT, &v) || v < 1 ? 1 : (uint32_t)v;
}

/* dev-decoder.rst, Initialization: the coded format on OUTPUT; the capture
 * format is known after the first SOURCE_CHANGE. */
static int dec_init(struct vv_stream *s, uint32_t coded)
{
	struct m2m_pix pix = { .pixfmt = coded, .width = 640, .height = 480, .num_planes = 1 };
	int r = m2m_set_fmt(&s->m2m, M2M_SRC, &pix);

	if (!r && pix.pixfmt != coded)
		r = -EINVAL;
	if (!r)
		r = m2m_subscribe(&s->m2m, V4L2_EVENT_SOURCE_CHANGE);
	s->min_bufs[M2M_SRC] = min_output_buffers(s);
	s->min_bufs[M2M_DST] = 2;
	s->flow = VV_FLOW_INIT;
	return r;
}

/* dev-encoder.rst, Initialization: the coded format on CAPTURE first, then a
 * raw format the codec has on OUTPUT (YUV420 if it can), then the
 * crop of the visible area. The guest refines both with SET_PARAMS. */
static int enc_init(struct vv_dev *d, struct vv_stream *s, uint32_t coded)
{
	struct m2m_pix pix = { .pixfmt = coded, .width = 640, .height = 480, .num_planes = 1 };
	struct m2m_rect crop = { 0, 0, 640, 480 };
	uint32_t raw = 0;
	int r = m2m_set_fmt(&s->m2m, M2M_DST, &pix);

	if (!r && pix.pixfmt != coded)
		r = -EINVAL;
	for (unsigned i = 0; i < NFORMATS && !raw; i++)	/* YU12, YM12, NV12, ... */
		if (!is_coded(formats[i].virtio))
			raw = offered_fourcc(&d->info, M2M_SRC, formats[i].virtio);
	if (!r && !raw)
		r = -EINVAL;
	if (!r) {
		pix = (struct m2m_pix){ .pixfmt = raw, .width = 640, .height = 480, .num_planes = 1 };
		r = m2m_set_fmt(&s->m2m, M2M_SRC, &pix);
	}
	if (!r)
		m2m_set_selection(&s->m2m, M2M_SRC, V4L2_SEL_TGT_CROP, &crop);
	s->min_bufs[M2M_SRC] = min_output_buffers(s);
	s->min_bufs[M2M_DST] = 2;	/* one, and one held back for EOS */
	s->fmt_known = true;
	s->flow = VV_FLOW_RUNNING;
	return r;
}

static void ctrl_defaults(struct vv_stream *s);

static int free_slot(const struct vv_dev *d)
{
	for (unsigned i = 0; i < CONFIG_VUV_MAX_STREAMS; i++)
		if (!d->streams[i])
			return (int)i;
	return -1;
}

static int cmd_stream_create(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			     struct vv_out *out)
{
	uint32_t id = q->stream_id, coded = q->u.create.coded;
	int fi = fmt_by_virtio(coded), r, slot;
	struct vv_stream *s;

	(void)c, (void)out;
	if (stream_find(d, id))
		return -ESRCH;
	if (q->u.create.in_mem != VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES ||
	    q->u.create.out_mem != VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES || fi < 0 || !is_coded(coded)) {
		vu_log(VU_WARN, "stream %u: unsupported memory type or format %s", id,
		       virtio_fmt_name(coded));
		return -EINVAL;
	}
	slot = free_slot(d);
	s = slot < 0 ? NULL : calloc(1, sizeof(*s));
	if (!s) {
		vu_log(VU_WARN, "stream %u: %s", id, slot < 0 ? "all " VV_STR(CONFIG_VUV_MAX_STREAMS)
		       " streams in use (Kconfig CONFIG_VUV_MAX_STREAMS)" : "out of memory");
		return -ENOMEM;
	}
	r = m2m_open(&s->m2m, d->devpath, d->info.mplane);
	if (r) {
		vu_log(VU_ERR, "stream %u: cannot open %s: %s", id, d->devpath, strerror(-r));
		free(s);
		return -ENOMEM;
	}
	r = is_encoder(d) ? enc_init(d, s, formats[fi].fourcc) : dec_init(s, formats[fi].fourcc);
	if (r) {
		vu_log(VU_WARN, "stream %u: the codec refuses %s: %s", id, formats[fi].name,
		       strerror(-r));
		m2m_close(&s->m2m);
		free(s);
		return -EINVAL;
	}
	for (unsigned i = 0; i < d->n_ctrls; i++) {
		r = m2m_set_ctrl(&s->m2m, d->ctrls[i].id, d->ctrls[i].value);
		if (r)
			vu_log(VU_WARN, "stream %u: --v4l2-ctrl=0x%x=%d: %s", id, d->ctrls[i].id,
			       d->ctrls[i].value, strerror(-r));
	}
	s->id = id;
	s->coded_format = coded;
	s->state = VV_STREAM_OPEN;
	s->gen = ++d->next_gen;
	ctrl_defaults(s);
	d->streams[slot] = s;
	d->nstreams++;
	for (int i = 0; i < 2; i++) {
		s->q[i].mq = (enum m2m_queue)i;
		queue_reset_pairs(&s->q[i]);
	}
	vu_log(VU_INFO, "stream %u: created (%s, tag \"%.64s\")", id, formats[fi].name,
	       q->u.create.tag);
	wake_events(d);
	return VV_ANSWER;
}

static int cmd_stream_destroy(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			      struct vv_out *out)
{
	(void)c, (void)out;
	vu_log(VU_INFO, "stream %u: destroyed", q->s->id);
	stream_release(d, q->s, true);
	return VV_ANSWER;
}

/* Input the codec has not given back yet. */
static bool input_pending(const struct vv_stream *s)
{
	const struct vv_queue *q = &s->q[M2M_SRC];

	for (unsigned i = 0; i < q->nres; i++)
		if (q->res[i].queued)
			return true;
	return false;
}

static int cmd_stream_drain(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			    struct vv_out *out)
{
	struct vv_stream *s = q->s;
	bool ready = s->m2m.streaming[M2M_SRC] && s->m2m.streaming[M2M_DST] &&
		     s->flow == VV_FLOW_RUNNING;

	(void)out;
	if (s->drain != VV_DRAIN_NONE)
		return -EBUSY;
	if (!ready && !input_pending(s) && !s->fed) {
		/* nothing ever reached the codec: the drain is complete already.
		 * (An input answered is not enough: a decoder may give a buffer
		 * back before the frame in it is decoded, as H.264 reordering
		 * does, and that frame belongs before the drain's end.) */
		send_eos(d, s);
		return VV_ANSWER;
	}
	/* Answered when the LAST buffer comes; drain_start issues the STOP
	 * command once it can take effect. */
	s->drain = VV_DRAIN_WAIT;
	park(&s->drain_chain, c);
	drain_start(d, s);
	return VV_PARKED;
}

/* The mem entries of RESOURCE_CREATE into r: every entry must be guest
 * memory, region by region, now; vu_gpa_* check again at every copy
 * because the memory table may change. */
static int res_entries(struct vv_dev *d, struct vv_res *r, const struct vv_req *q)
{
	unsigned n = 0;

	r->ent = calloc(q->u.rc.nent, sizeof(*r->ent));
	if (!r->ent)
		return -ENOMEM;
	r->nent = q->u.rc.nent;
	for (unsigned p = 0; p < r->num_planes; p++) {
		r->plane_first[p] = n;
		r->plane_nent[p] = q->u.rc.num_entries[p];
		r->plane_len[p] = 0;
		for (unsigned i = 0; i < r->plane_nent[p]; i++, n++) {
			const uint8_t *e = q->u.rc.entries + 16u * n;
			uint64_t gpa = rd64(e), avail = 0;
			uint32_t elen = rd32(e + 8);

			if (elen == 0)
				return -EINVAL;
			for (uint64_t off = 0; off < elen; off += avail) {
				avail = elen - off;
				if (gpa + off < gpa || !vu_gpa_to_va(d->vu, gpa + off, &avail) || !avail)
					return -EINVAL;
			}
			r->ent[n] = (struct vu_seg){ gpa, elen };
			r->plane_len[p] += elen;
		}
	}
	/* SINGLE_BUFFER: every colour plane lives in the one buffer, which is
	 * all the entries in order, whichever plane they were listed under. */
	if (r->layout == VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER) {
		uint64_t all = 0;

		for (unsigned p = 0; p < r->num_planes; p++)
			all += r->plane_len[p];
		for (unsigned p = 0; p < r->num_planes; p++) {
			r->plane_first[p] = 0;
			r->plane_nent[p] = r->nent;
			r->plane_len[p] = all;
			if (r->plane_offsets[p] > all)
				return -EINVAL;
		}
	}
	return 0;
}

static int cmd_resource_create(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			       struct vv_out *out)
{
	struct vv_stream *s = q->s;
	struct vv_queue *vq = &s->q[q->u.rc.q];
	struct vv_res *r;
	int ret;

	(void)c, (void)out;
	if (res_find(vq, q->u.rc.id))
		return -ENOENT;
	if (!vq->res)
		vq->res = calloc(VV_MAX_RESOURCES, sizeof(*vq->res));
	if (!vq->res || vq->nres == VV_MAX_RESOURCES)
		return -ENOMEM;
	r = &vq->res[vq->nres];
	memset(r, 0, sizeof(*r));
	r->id = q->u.rc.id;
	r->vbuf = -1;
	r->last_vbuf = -1;
	memset(r->dmabuf, -1, sizeof(r->dmabuf));	/* none yet */
	r->layout = q->u.rc.layout;
	r->num_planes = q->u.rc.num_planes;
	memcpy(r->plane_offsets, q->u.rc.plane_offsets, sizeof(r->plane_offsets));
	ret = res_entries(d, r, q);
	if (ret) {
		vu_log(VU_WARN, "stream %u: RESOURCE_CREATE %s %u refused: %s", s->id,
		       vq_name(q->u.rc.q), r->id, resp_name(resp_of(ret)));
		res_free(d, r);
		return ret;
	}
	res_view(d, s, r);
	vq->nres++;
	vu_log(VU_DEBUG, "stream %u: %s resource %u: %u entries%s", s->id, vq_name(q->u.rc.q),
	       r->id, r->nent, r->view ? ", mapped linearly" : "");
	return VV_ANSWER;
}

/* Bytes the guest can put in a resource: the one buffer, or all planes. */
static uint64_t res_capacity(const struct vv_res *r)
{
	uint64_t n = 0;

	if (r->layout == VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER)
		return r->plane_len[0] - (r->plane_offsets[0] < r->plane_len[0] ? r->plane_offsets[0]
										  : r->plane_len[0]);
	for (unsigned p = 0; p < r->num_planes; p++)
		n += r->plane_len[p];
	return n;
}

/* The first input after a completed drain restarts the codec
 * (dev-decoder.rst / dev-encoder.rst, Drain, last step): the START command,
 * and a restart of the CAPTURE queue, which the documents allow instead.
 * Both, because vicodec 6.1 clears its "last buffer dequeued" state only
 * in STREAMOFF: after START alone every capture DQBUF fails with EPIPE. The
 * guest's queued output resources stay queued and get V4L2 buffers again. */
static void streamon_failed(struct vv_dev *d, struct vv_stream *s, enum m2m_queue mq, int err);

static void resume_after_drain(struct vv_dev *d, struct vv_stream *s)
{
	int r = is_encoder(d) ? m2m_encoder_cmd(&s->m2m, V4L2_ENC_CMD_START, false)
			      : m2m_decoder_cmd(&s->m2m, V4L2_DEC_CMD_START, false);

	if (r)
		vu_log(VU_WARN, "stream %u: START command: %s", s->id, strerror(-r));
	if (s->m2m.streaming[M2M_DST]) {
		m2m_streamoff(&s->m2m, M2M_DST);
		queue_reset_pairs(&s->q[M2M_DST]);
		r = m2m_streamon(&s->m2m, M2M_DST);
		if (r) {
			streamon_failed(d, s, M2M_DST, r);
			return;
		}
	}
	s->flow = VV_FLOW_RUNNING;
	feed_dst(d, s);
}

/* The first bitstream/raw buffer allocates the V4L2 OUTPUT buffers. */
static int alloc_src(struct vv_dev *d, struct vv_stream *s)
{
	struct vv_queue *q = &s->q[M2M_SRC];
	unsigned count = VV_SRC_BUFFERS;
	enum m2m_memory want = M2M_MEM_MMAP;
	const char *why = "";
	int ret;

	if (q->allocated)
		return 0;
	ret = m2m_get_fmt(&s->m2m, M2M_SRC, &q->alloc_pix);
	if (!ret) {
		choose_memory(d, s, M2M_SRC, &why);
		want = s->m2m.mem[M2M_SRC];
		ret = m2m_alloc_buffers(&s->m2m, M2M_SRC, &count);
	}
	if (ret) {
		vu_log(VU_WARN, "stream %u: REQBUFS output: %s", s->id, strerror(-ret));
		return -ENOMEM;
	}
	log_memory(s, M2M_SRC, want, why);
	q->allocated = true;
	queue_reset_pairs(q);
	return 0;
}

/* Checks and set-up before an input buffer is accepted. */
static int queue_input(struct vv_dev *d, struct vv_stream *s, struct vv_res *r, uint64_t bytes)
{
	/* while draining, further input is refused (shared rules) */
	if (s->drain != VV_DRAIN_NONE)
		return -EBUSY;
	/* bounded before it is narrowed: repeated mem entries can make a
	 * resource's capacity exceed 4 GiB */
	if (bytes == 0 || bytes > res_capacity(r) || bytes > VV_MAX_PLANE_SIZE)
		return -EINVAL;
	if (alloc_src(d, s))
		return -ENOMEM;
	if (s->flow == VV_FLOW_STOPPED) {
		resume_after_drain(d, s);
		if (s->error)
			return -EBUSY;	/* the restart failed: ERROR event sent */
	}
	return 0;
}

/* A queue the codec would not start (STREAMON failed; dev-decoder.rst and
 * dev-encoder.rst know no recovery but a restart): its buffers come back
 * (STREAMOFF), their chains are answered with FLAG_ERR, and the guest gets
 * an ERROR event, on which its driver fails both queues and stops them:
 * QUEUE_CLEAR or STREAM_DESTROY then answer the rest, as after any stream
 * error. One log line (stream_error's). Command thread, lock held. */
static void streamon_failed(struct vv_dev *d, struct vv_stream *s, enum m2m_queue mq, int err)
{
	char why[80];

	snprintf(why, sizeof(why), "STREAMON %s: %s", m2m_queue_name(mq), strerror(-err));
	m2m_streamoff(&s->m2m, mq);
	queue_flush(d, s, mq);
	stream_error(d, s, why);
}

/* Checks and set-up before an output buffer is accepted. A STREAMON that
 * fails does not refuse the buffer: it is taken, and *streamon_err says the
 * caller must end it with streamon_failed(). */
static int queue_output(struct vv_dev *d, struct vv_stream *s, int *streamon_err)
{
	int ret;

	*streamon_err = 0;
	if (s->q[M2M_DST].allocated && s->m2m.streaming[M2M_DST])
		return 0;
	/* The guest queues capture buffers only after our
	 * DECODER_RESOLUTION_CHANGED; keep them until then. */
	if (!s->fmt_known)
		return 0;
	ret = setup_capture(d, s);
	if (ret && s->q[M2M_DST].allocated) {
		*streamon_err = ret;	/* buffers allocated, STREAMON failed */
	} else if (ret) {
		vu_log(VU_WARN, "stream %u: capture setup: %s", s->id, strerror(-ret));
		return -ENOMEM;
	}
	return 0;
}

static int cmd_resource_queue(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			      struct vv_out *out)
{
	struct vv_stream *s = q->s;
	enum m2m_queue mq = q->u.rq.q;
	struct vv_queue *vq = &s->q[mq];
	struct vv_res *r = res_find(vq, q->u.rq.id);
	int ret, streamon_err = 0;

	(void)out;
	if (!r || r->queued)
		return -ENOENT;
	if (s->error)
		return -EBUSY;
	res_view_renew(d, s, r);
	ret = mq == M2M_SRC ? queue_input(d, s, r, q->u.rq.bytes) : queue_output(d, s, &streamon_err);
	if (ret)
		return ret;
	r->queued = true;
	park(&r->chain, c);
	r->timestamp = q->u.rq.timestamp;
	r->bytes = (uint32_t)q->u.rq.bytes;
	r->fed = 0;
	r->pieces = 0;
	r->flags = 0;
	r->seq = vq->next_seq++;
	if (VUV_TRACE_ON)
		vu_log(VU_TRACE, "stream %u: queue %s resource %u (%u bytes, ts %llu)", s->id,
		       vq_name(mq), r->id, r->bytes,
		       (unsigned long long)r->timestamp);
	if (mq == M2M_SRC) {
		feed_src(d, s);
		if (!s->m2m.streaming[M2M_SRC] && vq->in_driver) {
			ret = m2m_streamon(&s->m2m, M2M_SRC);
			if (ret)
				streamon_failed(d, s, M2M_SRC, ret);	/* answers r too */
		}
	} else if (streamon_err) {
		streamon_failed(d, s, M2M_DST, streamon_err);	/* answers r too */
	} else {
		feed_dst(d, s);
	}
	drain_start(d, s);
	wake_events(d);
	return VV_PARKED;
}

static int cmd_resource_destroy_all(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
				    struct vv_out *out)
{
	struct vv_stream *s = q->s;
	enum m2m_queue mq = q->u.q;
	struct vv_queue *vq = &s->q[mq];
	unsigned zero = 0;

	(void)c, (void)out;
	if (s->m2m.streaming[mq])
		m2m_streamoff(&s->m2m, mq);
	queue_flush(d, s, mq);
	if (vq->allocated) {
		sync_event_thread(d);
		m2m_alloc_buffers(&s->m2m, mq, &zero);
		vq->allocated = false;
	}
	for (unsigned i = 0; i < vq->nres; i++)
		res_free(d, &vq->res[i]);
	vq->nres = 0;
	wake_events(d);
	return VV_ANSWER;
}

static int cmd_queue_clear(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			   struct vv_out *out)
{
	struct vv_stream *s = q->s;
	enum m2m_queue mq = q->u.q;
	bool stopped;

	(void)c, (void)out;
	/* the codec is stopped by a drain: STOP issued or LAST seen */
	stopped = s->drain == VV_DRAIN_STOPPING || s->flow == VV_FLOW_STOPPED;
	/* dev-decoder.rst, Seek (input) / capture reset (output): STREAMOFF
	 * returns every buffer; decoding resumes at the next STREAMON. */
	if (s->m2m.streaming[mq])
		m2m_streamoff(&s->m2m, mq);
	queue_flush(d, s, mq);
	s->eos_pending = false;
	s->error = false;
	if (s->drain != VV_DRAIN_NONE)
		drain_done(d, s);
	/* A capture STREAMOFF clears the codec's drain state (the m2m core's
	 * and vb2's "last buffer dequeued"); an input STREAMOFF does not, and
	 * during a drain it makes the next capture buffer LAST (the m2m core,
	 * v4l2_m2m_update_stop_streaming_state). The codec then stays stopped
	 * as after a completed drain: the next input restarts it
	 * (resume_after_drain), and dequeue_dst swallows that LAST buffer. */
	if (s->flow == VV_FLOW_STOPPED && (mq == M2M_DST || !stopped || !s->fmt_known))
		s->flow = s->fmt_known ? VV_FLOW_RUNNING : VV_FLOW_INIT;
	wake_events(d);
	return VV_ANSWER;
}

/* The visible rectangle of a raw queue: the decoder's compose (read at
 * SOURCE_CHANGE), the encoder's crop; the whole frame otherwise. */
static struct m2m_rect visible_rect(struct vv_dev *d, struct vv_stream *s, enum m2m_queue mq,
				    const struct m2m_pix *pix)
{
	struct m2m_rect full = { 0, 0, pix->width, pix->height }, r;

	if (mq == coded_queue(d))
		return full;
	if (!is_encoder(d))
		return s->fmt_known ? s->crop : full;
	return m2m_get_selection(&s->m2m, M2M_SRC, V4L2_SEL_TGT_CROP, &r) ? full : r;
}

static void fill_params(struct vv_dev *d, struct vv_stream *s, enum m2m_queue mq,
			struct virtio_video_params *p)
{
	struct m2m_pix pix;
	struct m2m_rect crop;
	struct vv_plane pl[VIRTIO_VIDEO_MAX_PLANES];
	uint32_t fps = s->frame_rate;
	unsigned n;
	int fi;

	memset(p, 0, sizeof(*p));
	p->queue_type = htole32(mq == M2M_SRC ? VIRTIO_VIDEO_QUEUE_TYPE_INPUT
					      : VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT);
	if (m2m_get_fmt(&s->m2m, mq, &pix))
		return;
	fi = fmt_by_fourcc(pix.pixfmt);
	p->format = htole32(fi < 0 ? 0 : formats[fi].virtio);
	p->frame_width = htole32(pix.width);
	p->frame_height = htole32(pix.height);
	p->min_buffers = htole32(s->min_bufs[mq]);
	p->max_buffers = htole32(mq == M2M_SRC ? VV_MAX_RESOURCES : M2M_MAX_BUFFERS);
	crop = visible_rect(d, s, mq, &pix);
	p->crop = (struct virtio_video_crop){ htole32((uint32_t)crop.left),
					      htole32((uint32_t)crop.top), htole32(crop.width),
					      htole32(crop.height) };
	if (!fps && (m2m_get_frame_rate(&s->m2m, M2M_SRC, &fps) || !fps))
		fps = VV_DEFAULT_FPS;	/* the guest driver divides by it */
	p->frame_rate = htole32(fps);
	n = host_planes(&pix, pl);
	p->num_planes = htole32(n);
	for (unsigned i = 0; i < n; i++) {
		p->plane_formats[i].plane_size = htole32(pl[i].size);
		p->plane_formats[i].stride = htole32(pl[i].stride);
	}
}

static int cmd_get_params(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			  struct vv_out *out)
{
	struct virtio_video_get_params_ext_resp *r = (void *)out->buf;

	(void)c;
	memset(r, 0, sizeof(*r));
	out->len = sizeof(*r);
	r->hdr.type = htole32(VIRTIO_VIDEO_RESP_OK_GET_PARAMS);
	r->hdr.stream_id = htole32(q->s->id);
	fill_params(d, q->s, q->u.q, &r->params.base);
	r->params.resource_type = htole32(VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES);
	if (q->type != VIRTIO_VIDEO_CMD_GET_PARAMS_EXT)
		out->len = sizeof(struct virtio_video_get_params_resp);
	return VV_ANSWER;
}

/* Apply the guest's params to a queue (format, size, crop, frame rate).
 * What the codec adjusts is read back by the guest with GET_PARAMS. */
static void apply_params(struct vv_dev *d, struct vv_stream *s, const struct vv_params *v)
{
	bool raw = v->q != coded_queue(d);
	struct m2m_pix pix;
	int r;

	if (m2m_get_fmt(&s->m2m, v->q, &pix))
		return;
	/* (one the device lacks: 0, which S_FMT makes the device's default) */
	pix.pixfmt = offered_fourcc(&d->info, v->q, v->format);
	/* the side whose size the guest decides: raw for encoders, coded for decoders */
	if (is_encoder(d) == raw && v->width && v->height) {
		pix.width = v->width;
		pix.height = v->height;
	}
	if (!raw && v->plane_size0)
		pix.sizeimage[0] = v->plane_size0;
	r = m2m_set_fmt(&s->m2m, v->q, &pix);
	if (r)
		vu_log(VU_WARN, "stream %u: S_FMT %s: %s", s->id, m2m_queue_name(v->q), strerror(-r));
	if (is_encoder(d) && raw) {
		/* dev-encoder.rst, Initialization step 4: the visible area */
		struct m2m_rect crop = v->crop;

		if (!crop.width || !crop.height)
			crop = (struct m2m_rect){ 0, 0, pix.width, pix.height };
		r = m2m_set_selection(&s->m2m, M2M_SRC, V4L2_SEL_TGT_CROP, &crop);
		if (r)
			vu_log(VU_WARN, "stream %u: crop %ux%u: %s", s->id, crop.width, crop.height,
			       strerror(-r));
		if (s->frame_rate)
			m2m_set_frame_rate(&s->m2m, M2M_SRC, s->frame_rate);
	}
	if (!is_encoder(d) && raw)
		dec_read_capture_format(s);
}

static int cmd_set_params(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			  struct vv_out *out)
{
	struct vv_stream *s = q->s;
	const struct vv_params *v = &q->u.params;

	(void)c, (void)out;
	if (is_coded(v->format) != (v->q == coded_queue(d)))
		return -EINVAL;
	if (v->frame_rate)
		s->frame_rate = v->frame_rate;
	/* Buffers allocated: the format is fixed until they are destroyed; a
	 * decoder's capture format exists only after the first header. */
	if (!s->q[v->q].allocated && (v->q != M2M_DST || s->fmt_known))
		apply_params(d, s, v);
	return VV_ANSWER;
}

/* ---- controls -------------------------------------------------------------- */

/* Menu values: virtio enum value (base + i) <-> V4L2 menu index v4l2[i]. */
struct vv_menu {
	uint32_t format;	/* coded format the control belongs to */
	uint32_t ctl;		/* VIRTIO_VIDEO_CONTROL_PROFILE or _LEVEL */
	uint32_t cid;
	uint32_t base;
	unsigned n;
	const uint8_t *v4l2;
};

static const uint8_t h264_profiles[] = {
	V4L2_MPEG_VIDEO_H264_PROFILE_BASELINE, V4L2_MPEG_VIDEO_H264_PROFILE_MAIN,
	V4L2_MPEG_VIDEO_H264_PROFILE_EXTENDED, V4L2_MPEG_VIDEO_H264_PROFILE_HIGH,
	V4L2_MPEG_VIDEO_H264_PROFILE_HIGH_10, V4L2_MPEG_VIDEO_H264_PROFILE_HIGH_422,
	V4L2_MPEG_VIDEO_H264_PROFILE_HIGH_444_PREDICTIVE,
	V4L2_MPEG_VIDEO_H264_PROFILE_SCALABLE_BASELINE, V4L2_MPEG_VIDEO_H264_PROFILE_SCALABLE_HIGH,
	V4L2_MPEG_VIDEO_H264_PROFILE_STEREO_HIGH, V4L2_MPEG_VIDEO_H264_PROFILE_MULTIVIEW_HIGH,
};
static const uint8_t h264_levels[] = {	/* virtio has no level 1b */
	V4L2_MPEG_VIDEO_H264_LEVEL_1_0, V4L2_MPEG_VIDEO_H264_LEVEL_1_1,
	V4L2_MPEG_VIDEO_H264_LEVEL_1_2, V4L2_MPEG_VIDEO_H264_LEVEL_1_3,
	V4L2_MPEG_VIDEO_H264_LEVEL_2_0, V4L2_MPEG_VIDEO_H264_LEVEL_2_1,
	V4L2_MPEG_VIDEO_H264_LEVEL_2_2, V4L2_MPEG_VIDEO_H264_LEVEL_3_0,
	V4L2_MPEG_VIDEO_H264_LEVEL_3_1, V4L2_MPEG_VIDEO_H264_LEVEL_3_2,
	V4L2_MPEG_VIDEO_H264_LEVEL_4_0, V4L2_MPEG_VIDEO_H264_LEVEL_4_1,
	V4L2_MPEG_VIDEO_H264_LEVEL_4_2, V4L2_MPEG_VIDEO_H264_LEVEL_5_0,
	V4L2_MPEG_VIDEO_H264_LEVEL_5_1,
};
static const uint8_t hevc_profiles[] = {
	V4L2_MPEG_VIDEO_HEVC_PROFILE_MAIN, V4L2_MPEG_VIDEO_HEVC_PROFILE_MAIN_10,
	V4L2_MPEG_VIDEO_HEVC_PROFILE_MAIN_STILL_PICTURE,
};
static const uint8_t vpx_profiles[] = { 0, 1, 2, 3 };

#define MENU(f, c, cid, base, t) { f, c, cid, base, sizeof(t), t }
static const struct vv_menu menus[] = {
	MENU(VIRTIO_VIDEO_FORMAT_H264, VIRTIO_VIDEO_CONTROL_PROFILE,
	     V4L2_CID_MPEG_VIDEO_H264_PROFILE, VIRTIO_VIDEO_PROFILE_H264_MIN, h264_profiles),
	MENU(VIRTIO_VIDEO_FORMAT_H264, VIRTIO_VIDEO_CONTROL_LEVEL,
	     V4L2_CID_MPEG_VIDEO_H264_LEVEL, VIRTIO_VIDEO_LEVEL_H264_MIN, h264_levels),
	MENU(VIRTIO_VIDEO_FORMAT_HEVC, VIRTIO_VIDEO_CONTROL_PROFILE,
	     V4L2_CID_MPEG_VIDEO_HEVC_PROFILE, VIRTIO_VIDEO_PROFILE_HEVC_MIN, hevc_profiles),
	MENU(VIRTIO_VIDEO_FORMAT_VP8, VIRTIO_VIDEO_CONTROL_PROFILE,
	     V4L2_CID_MPEG_VIDEO_VP8_PROFILE, VIRTIO_VIDEO_PROFILE_VP8_MIN, vpx_profiles),
	MENU(VIRTIO_VIDEO_FORMAT_VP9, VIRTIO_VIDEO_CONTROL_PROFILE,
	     V4L2_CID_MPEG_VIDEO_VP9_PROFILE, VIRTIO_VIDEO_PROFILE_VP9_MIN, vpx_profiles),
};

/* Plain controls: the same value on both sides (BITRATE_MODE: VBR 0, CBR 1
 * in both enums). */
static const struct {
	uint32_t ctl, cid;
} plain_ctrls[] = {
	{ VIRTIO_VIDEO_CONTROL_BITRATE, V4L2_CID_MPEG_VIDEO_BITRATE },
	{ VIRTIO_VIDEO_CONTROL_BITRATE_PEAK, V4L2_CID_MPEG_VIDEO_BITRATE_PEAK },
	{ VIRTIO_VIDEO_CONTROL_BITRATE_MODE, V4L2_CID_MPEG_VIDEO_BITRATE_MODE },
	{ VIRTIO_VIDEO_CONTROL_PREPEND_SPSPPS_TO_IDR, V4L2_CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR },
	{ VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME, V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME },
};

static const struct vv_menu *menu_of(uint32_t format, uint32_t ctl)
{
	for (size_t i = 0; i < sizeof(menus) / sizeof(menus[0]); i++)
		if (menus[i].format == format && menus[i].ctl == ctl)
			return &menus[i];
	return NULL;
}

static uint32_t plain_cid(uint32_t ctl)
{
	for (size_t i = 0; i < sizeof(plain_ctrls) / sizeof(plain_ctrls[0]); i++)
		if (plain_ctrls[i].ctl == ctl)
			return plain_ctrls[i].cid;
	return 0;
}

/* QUERY_CONTROL: the profiles or levels the codec offers for a format
 * (VIDIOC_QUERYCTRL + QUERYMENU on a scratch context of the device). */
static int cmd_query_control(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			     struct vv_out *out)
{
	const struct vv_menu *m = menu_of(q->u.ctl.format, q->u.ctl.ctl);
	struct virtio_video_query_control_resp *h = (void *)out->buf;
	le32 *values = (le32 *)(h + 1);
	struct m2m_ctx ctx;
	int32_t min, max, def;
	uint32_t n = 0;

	(void)c;
	if (!m || m2m_open(&ctx, d->devpath, d->info.mplane))
		return -EOPNOTSUPP;
	if (m2m_query_ctrl(&ctx, m->cid, &min, &max, &def) == 0)
		for (unsigned i = 0; i < m->n && n < 32; i++)
			if (m->v4l2[i] >= min && m->v4l2[i] <= max &&
			    m2m_menu_has(&ctx, m->cid, m->v4l2[i]))
				values[n++] = htole32(m->base + i);
	m2m_close(&ctx);
	if (!n)
		return -EOPNOTSUPP;
	memset(h, 0, sizeof(*h));
	h->hdr.type = htole32(VIRTIO_VIDEO_RESP_OK_QUERY_CONTROL);
	h->hdr.stream_id = htole32(q->stream_id);
	h->num = htole32(n);
	out->len = sizeof(*h) + 4 * n;
	return VV_ANSWER;
}

/* Controls the codec lacks. The guest driver reads PROFILE, BITRATE,
 * BITRATE_PEAK, BITRATE_MODE and PREPEND_SPSPPS_TO_IDR at every open of an
 * encoder (PROFILE, and LEVEL for H.264, of a decoder), ignores error
 * answers and uses the values as the defaults of V4L2 controls it builds
 * with ranges (BITRATE and BITRATE_PEAK 1..1000000000): a 0 makes its open()
 * fail with ERANGE. So such a control answers with what the guest set last,
 * or a default inside those ranges, and SET_CONTROL of it is remembered. */
#define VV_DEFAULT_BITRATE 1000000u	/* bits/s */

static const char *const ctl_names[VV_NUM_CTRLS] = {
	[VIRTIO_VIDEO_CONTROL_BITRATE] = "BITRATE",
	[VIRTIO_VIDEO_CONTROL_PROFILE] = "PROFILE",
	[VIRTIO_VIDEO_CONTROL_LEVEL] = "LEVEL",
	[VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME] = "FORCE_KEYFRAME",
	[VIRTIO_VIDEO_CONTROL_BITRATE_MODE] = "BITRATE_MODE",
	[VIRTIO_VIDEO_CONTROL_BITRATE_PEAK] = "BITRATE_PEAK",
	[VIRTIO_VIDEO_CONTROL_PREPEND_SPSPPS_TO_IDR] = "PREPEND_SPSPPS_TO_IDR",
};

static void ctrl_defaults(struct vv_stream *s)
{
	const struct vv_menu *m;

	s->ctl_val[VIRTIO_VIDEO_CONTROL_BITRATE] = VV_DEFAULT_BITRATE;
	s->ctl_val[VIRTIO_VIDEO_CONTROL_BITRATE_PEAK] = VV_DEFAULT_BITRATE;
	s->ctl_val[VIRTIO_VIDEO_CONTROL_BITRATE_MODE] = VIRTIO_VIDEO_BITRATE_MODE_VBR;
	s->ctl_val[VIRTIO_VIDEO_CONTROL_PREPEND_SPSPPS_TO_IDR] = 0;
	m = menu_of(s->coded_format, VIRTIO_VIDEO_CONTROL_PROFILE);
	s->ctl_val[VIRTIO_VIDEO_CONTROL_PROFILE] = m ? m->base : 0;
	m = menu_of(s->coded_format, VIRTIO_VIDEO_CONTROL_LEVEL);
	s->ctl_val[VIRTIO_VIDEO_CONTROL_LEVEL] = m ? m->base : 0;
}

/* The controls a stream of this role has at all: encoders all seven,
 * decoders PROFILE and LEVEL; PROFILE/LEVEL only for a format with a menu. */
static bool ctl_exists(struct vv_dev *d, const struct vv_stream *s, uint32_t ctl)
{
	if (ctl == VIRTIO_VIDEO_CONTROL_PROFILE || ctl == VIRTIO_VIDEO_CONTROL_LEVEL)
		return menu_of(s->coded_format, ctl) != NULL;
	return is_encoder(d) && plain_cid(ctl) != 0;
}

/* A value the guest driver's V4L2 control would accept. */
static bool ctl_value_ok(const struct vv_stream *s, uint32_t ctl, uint32_t v)
{
	const struct vv_menu *m = menu_of(s->coded_format, ctl);

	switch (ctl) {
	case VIRTIO_VIDEO_CONTROL_BITRATE:
	case VIRTIO_VIDEO_CONTROL_BITRATE_PEAK:
		return v >= 1 && v <= INT32_MAX;
	case VIRTIO_VIDEO_CONTROL_BITRATE_MODE:
		return v == VIRTIO_VIDEO_BITRATE_MODE_VBR || v == VIRTIO_VIDEO_BITRATE_MODE_CBR;
	case VIRTIO_VIDEO_CONTROL_PREPEND_SPSPPS_TO_IDR:
		return v <= 1;
	case VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME:
		return true;
	default:
		return m && v >= m->base && v - m->base < m->n;
	}
}

/* Read control ctl from the codec into *value: 0, or -EINVAL when the
 * codec has no such control. */
static int ctl_from_codec(struct vv_stream *s, uint32_t ctl, uint32_t *value)
{
	const struct vv_menu *m = menu_of(s->coded_format, ctl);
	int32_t v;
	int ret;

	if (ctl == VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME)
		return -EINVAL;
	ret = m2m_get_ctrl(&s->m2m, m ? m->cid : plain_cid(ctl), &v);
	if (ret)
		return ret;
	if (!m) {
		*value = (uint32_t)v;
		return 0;
	}
	for (unsigned i = 0; i < m->n; i++)
		if (m->v4l2[i] == v) {
			*value = m->base + i;
			return 0;
		}
	return -ERANGE;		/* a menu item virtio-video cannot name */
}

static int cmd_get_control(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			   struct vv_out *out)
{
	struct vv_stream *s = q->s;
	uint32_t ctl = q->u.ctl.ctl, value = 0;
	struct virtio_video_get_control_resp *r = (void *)out->buf;

	(void)c;
	if (ctl >= VV_NUM_CTRLS || ctl == VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME ||
	    !ctl_exists(d, s, ctl))
		return -EOPNOTSUPP;
	if (ctl_from_codec(s, ctl, &value))
		value = s->ctl_val[ctl];
	memset(r, 0, sizeof(*r));
	r->hdr.type = htole32(VIRTIO_VIDEO_RESP_OK_GET_CONTROL);
	r->hdr.stream_id = htole32(s->id);
	r->value = htole32(value);
	out->len = sizeof(*r);
	return VV_ANSWER;
}

/* Hand a checked value to the codec; 0, -EINVAL if it lacks the control,
 * or the codec's refusal. */
static int ctl_to_codec(struct vv_stream *s, uint32_t ctl, uint32_t value)
{
	const struct vv_menu *m = menu_of(s->coded_format, ctl);

	if (m)
		return m2m_set_ctrl(&s->m2m, m->cid, m->v4l2[value - m->base]);
	if (ctl == VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME)
		value = 1;
	return m2m_set_ctrl(&s->m2m, plain_cid(ctl), (int32_t)value);
}

static int cmd_set_control(struct vv_dev *d, struct vv_req *q, struct vu_chain *c,
			   struct vv_out *out)
{
	struct vv_stream *s = q->s;
	uint32_t ctl = q->u.ctl.ctl, value = q->u.ctl.value;
	int ret;

	(void)c, (void)out;
	if (ctl >= VV_NUM_CTRLS || !ctl_exists(d, s, ctl))
		return -EOPNOTSUPP;
	if (!ctl_value_ok(s, ctl, value))
		return -EINVAL;
	ret = ctl_to_codec(s, ctl, value);
	if (ret == -EINVAL) {
		/* the codec has no such control: remember it for GET_CONTROL */
		if (!(s->ctl_logged & (1u << ctl)))
			vu_log(VU_INFO, "stream %u: the codec has no %s control; it ignores %u",
			       s->id, ctl_names[ctl], value);
		s->ctl_logged |= 1u << ctl;
		ret = 0;
	}
	if (ret) {
		vu_log(VU_DEBUG, "stream %u: %s=%u refused by the codec: %s", s->id,
		       ctl_names[ctl], value, strerror(-ret));
		return ret == -ERANGE || ret == -EBUSY ? -EINVAL : -EOPNOTSUPP;
	}
	s->ctl_val[ctl] = value;
	return VV_ANSWER;
}

/* ---- dispatch --------------------------------------------------------------- */

struct vv_cmd {
	const char *name;
	int (*parse)(const uint8_t *req, size_t len, struct vv_req *r);
	int (*fn)(struct vv_dev *d, struct vv_req *q, struct vu_chain *c, struct vv_out *out);
	uint16_t len;		/* exact request size; 0: the parser checks it */
	bool needs_stream;
};

_Static_assert(sizeof(struct virtio_video_set_params_ext) <= UINT16_MAX, "vv_cmd.len");
#define CMD(c, n, l, p, f, s)								\
	[CMD_INDEX(VIRTIO_VIDEO_CMD_##c)] = { .name = n, .len = l, .parse = p, .fn = f,	\
					      .needs_stream = s }

/* The dispatch table is the map of the protocol. */
static const struct vv_cmd cmds[CMD_COUNT] = {
	CMD(QUERY_CAPABILITY, "QUERY_CAPABILITY", sizeof(struct virtio_video_query_capability),
	    parse_queue_cmd, cmd_query_capability, false),
	CMD(STREAM_CREATE, "STREAM_CREATE", sizeof(struct virtio_video_stream_create),
	    parse_stream_create, cmd_stream_create, false),
	CMD(STREAM_DESTROY, "STREAM_DESTROY", sizeof(struct virtio_video_cmd_hdr),
	    parse_none, cmd_stream_destroy, true),
	CMD(STREAM_DRAIN, "STREAM_DRAIN", sizeof(struct virtio_video_cmd_hdr),
	    parse_none, cmd_stream_drain, true),
	CMD(RESOURCE_CREATE, "RESOURCE_CREATE", 0,
	    parse_resource_create, cmd_resource_create, true),
	CMD(RESOURCE_QUEUE, "RESOURCE_QUEUE", sizeof(struct virtio_video_resource_queue),
	    parse_resource_queue, cmd_resource_queue, true),
	CMD(RESOURCE_DESTROY_ALL, "RESOURCE_DESTROY_ALL", sizeof(struct virtio_video_queue_cmd),
	    parse_queue_cmd, cmd_resource_destroy_all, true),
	CMD(QUEUE_CLEAR, "QUEUE_CLEAR", sizeof(struct virtio_video_queue_cmd),
	    parse_queue_cmd, cmd_queue_clear, true),
	CMD(GET_PARAMS, "GET_PARAMS", sizeof(struct virtio_video_queue_cmd),
	    parse_queue_cmd, cmd_get_params, true),
	CMD(SET_PARAMS, "SET_PARAMS", sizeof(struct virtio_video_set_params),
	    parse_set_params, cmd_set_params, true),
	CMD(QUERY_CONTROL, "QUERY_CONTROL", sizeof(struct virtio_video_query_control),
	    parse_query_control, cmd_query_control, false),
	CMD(GET_CONTROL, "GET_CONTROL", sizeof(struct virtio_video_get_control),
	    parse_get_control, cmd_get_control, true),
	CMD(SET_CONTROL, "SET_CONTROL", 0, parse_set_control, cmd_set_control, true),
	CMD(GET_PARAMS_EXT, "GET_PARAMS_EXT", sizeof(struct virtio_video_queue_cmd),
	    parse_queue_cmd, cmd_get_params, true),
	CMD(SET_PARAMS_EXT, "SET_PARAMS_EXT", sizeof(struct virtio_video_set_params_ext),
	    parse_set_params, cmd_set_params, true),
};

/* Parse, look the stream up, run the handler, answer: every popped chain
 * leaves here answered or parked in a stream, never both, never neither. */
static void dispatch(struct vv_dev *d, struct vu_chain *c)
{
	static struct vv_out out;	/* command thread only */
	const uint8_t *req = c->req;
	size_t len = c->req_len;
	struct vv_req q = { 0 };
	const struct vv_cmd *cmd;
	uint32_t idx;
	int r;

	if (len < sizeof(struct virtio_video_cmd_hdr)) {
		vu_log(VU_WARN, "command of %zu bytes, shorter than its header", len);
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, 0);
		return;
	}
	q.type = rd32(req);
	q.stream_id = rd32(req + 4);
	idx = q.type - VIRTIO_VIDEO_CMD_QUERY_CAPABILITY;
	cmd = (q.type >= VIRTIO_VIDEO_CMD_QUERY_CAPABILITY && idx < CMD_COUNT) ? &cmds[idx] : NULL;
	if (!cmd || !cmd->fn) {
		vu_log(VU_WARN, "unknown command 0x%x (stream %u)", q.type, q.stream_id);
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION, q.stream_id);
		return;
	}
	vu_log(VU_DEBUG, "stream %u: %s", q.stream_id, cmd->name);
	if (cmd->len && len != cmd->len) {
		vu_log(VU_WARN, "stream %u: %s of %zu bytes, expected %u", q.stream_id, cmd->name,
		       len, (unsigned)cmd->len);
		r = -EINVAL;
	} else if (cmd->needs_stream && !(q.s = stream_find(d, q.stream_id))) {
		vu_log(VU_WARN, "%s for unknown stream %u", cmd->name, q.stream_id);
		r = -ESRCH;
	} else if ((r = cmd->parse(req, len, &q))) {
		vu_log(VU_WARN, "stream %u: %s: malformed request", q.stream_id, cmd->name);
	} else {
		out.len = 0;
		out.max = c->wr_len;
		r = cmd->fn(d, &q, c, &out);
	}
	if (r == VV_PARKED) {
		if (c->req)	/* our bug; the guest still gets its one answer */
			vu_log(VU_ERR, "stream %u: %s parked nothing", q.stream_id, cmd->name);
		else
			return;
	}
	if (r < 0 || r == VV_PARKED)
		respond_hdr(d, c, r < 0 ? resp_of(r) : VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION,
			    q.stream_id);
	else if (out.len)
		respond(d, c, out.buf, out.len);
	else
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_OK_NODATA, q.stream_id);
}

/* ---- vhost-user device callbacks ------------------------------------------- */

static int dev_get_config(struct vu_dev *vu, uint32_t off, void *buf, uint32_t len)
{
	struct vv_dev *d = vu_dev_opaque(vu);
	struct virtio_video_config cfg = {
		.version = htole32(0),
		.max_caps_length = htole32(VV_CAPS_MAX),
		.max_resp_length = htole32(VV_RESP_MAX),
	};

	snprintf((char *)cfg.device_name, sizeof(cfg.device_name), "%s", d->info.card);
	if (off > sizeof(cfg) || len > sizeof(cfg) - off)
		return -EINVAL;
	memcpy(buf, (uint8_t *)&cfg + off, len);
	return 0;
}

static void dev_queue_kick(struct vu_dev *vu, unsigned q)
{
	struct vv_dev *d = vu_dev_opaque(vu);
	struct vu_chain c;
	int r;

	vu_lock(vu);
	if (q == VIRTIO_VIDEO_QUEUE_COMMAND) {
		/* -EINVAL: a malformed chain, already answered; anything else
		 * (empty, not ready, broken ring) ends the batch */
		while ((r = vu_queue_pop(vu, q, &c)) == 0 || r == -EINVAL) {
			if (r == 0)
				dispatch(d, &c);
		}
		vu_queue_notify(vu, q);
	} else if (q == VIRTIO_VIDEO_QUEUE_EVENT) {
		events_flush(d);
	}
	vu_unlock(vu);
}

static void dev_reset(struct vu_dev *vu)
{
	struct vv_dev *d = vu_dev_opaque(vu);
	unsigned n = 0;

	vu_lock(vu);
	for (unsigned i = 0; i < CONFIG_VUV_MAX_STREAMS; i++) {
		if (d->streams[i] && d->streams[i]->state == VV_STREAM_OPEN) {
			stream_release(d, d->streams[i], false);
			n++;
		}
	}
	d->backlog_len = 0;
	vu_unlock(vu);
	if (n)
		vu_log(VU_INFO, "device reset: %u stream(s) closed", n);
}

static struct vu_ops vv_ops = {
	.nqueues = VIRTIO_VIDEO_NUM_QUEUES,
	.get_config = dev_get_config,
	.queue_kick = dev_queue_kick,
	.reset = dev_reset,
};

/* ---- start-up ---------------------------------------------------------------- */

static const char *role_name(enum m2m_role r)
{
	return r == M2M_ROLE_DECODER ? "decoder" : r == M2M_ROLE_ENCODER ? "encoder" : "none";
}

static bool role_built(enum m2m_role r)
{
	return (r == M2M_ROLE_DECODER && CONFIG_VUV_DECODER) ||
	       (r == M2M_ROLE_ENCODER && CONFIG_VUV_ENCODER);
}

/* Open and check the device: a stateful mem2mem codec of a role we serve. */
static int probe_device(struct vv_dev *d, const char *path)
{
	char a[5], b[5];
	int r = m2m_probe(path, &d->info);

	if (r == -ENODEV) {
		vu_log(VU_ERR, "%s is not a V4L2 mem2mem device", path);
		return r;
	}
	if (r == -ENOTSUP) {
		vu_log(VU_ERR, "%s (%s) is not a stateful decoder or encoder", path, d->info.card);
		return r;
	}
	if (r) {
		vu_log(VU_ERR, "cannot open %s: %s", path, strerror(-r));
		return r;
	}
	if (!role_built(d->info.role)) {
		vu_log(VU_ERR, "%s is a stateful %s, but this build has no %s support "
		       "(Kconfig CONFIG_VUV_%s)", path, role_name(d->info.role),
		       role_name(d->info.role),
		       d->info.role == M2M_ROLE_ENCODER ? "ENCODER" : "DECODER");
		return -ENOTSUP;
	}
	vu_log(VU_INFO, "%s: %s %s (%s, %s), %u coded and %u raw formats", path,
	       d->info.driver, role_name(d->info.role), d->info.card,
	       d->info.mplane ? "multi-planar" : "single-planar",
	       d->info.nfmt[d->info.role == M2M_ROLE_DECODER ? M2M_SRC : M2M_DST],
	       d->info.nfmt[d->info.role == M2M_ROLE_DECODER ? M2M_DST : M2M_SRC]);
	for (unsigned i = 0; i < d->info.nfmt[M2M_SRC]; i++)
		for (unsigned j = 0; j < d->info.nfmt[M2M_DST]; j++)
			if (d->info.fmt[M2M_SRC][i].pair_mask & (1ull << j))
				vu_log(VU_DEBUG, "  %s -> %s",
				       m2m_fourcc(d->info.fmt[M2M_SRC][i].pixfmt, a),
				       m2m_fourcc(d->info.fmt[M2M_DST][j].pixfmt, b));
	return 0;
}

/* With no --v4l2-device, take the first stateful codec of a role this build
 * serves, decoders first. */
static const char *find_device(void)
{
	static char path[64];

	for (int role = M2M_ROLE_DECODER; role <= M2M_ROLE_ENCODER; role++) {
		for (int i = 0; i < 64 && role_built((enum m2m_role)role); i++) {
			struct m2m_info info;

			snprintf(path, sizeof(path), "/dev/video%d", i);
			if (access(path, F_OK))
				continue;
			if (m2m_probe(path, &info) == 0 && info.role == (enum m2m_role)role)
				return path;
		}
	}
	return NULL;
}

/* --v4l2-ctrl=ID=VALUE: a V4L2 control set on every new stream, for codec
 * settings virtio-video cannot express (e.g. GOP size, QP). */
static int parse_ctrl(struct vv_dev *d, const char *arg)
{
	char *end;
	unsigned long id;
	long v;

	errno = 0;
	id = strtoul(arg, &end, 0);
	if (errno || end == arg || *end != '=' || id == 0 || id > UINT32_MAX)
		return -EINVAL;
	arg = end + 1;
	v = strtol(arg, &end, 0);
	if (errno || end == arg || *end || v < INT32_MIN || v > INT32_MAX)
		return -EINVAL;
	if (d->n_ctrls == VV_MAX_USER_CTRLS)
		return -E2BIG;
	d->ctrls[d->n_ctrls].id = (uint32_t)id;
	d->ctrls[d->n_ctrls].value = (int32_t)v;
	d->n_ctrls++;
	return 0;
}

/* --memory=auto|userptr|dmabuf|mmap */
static int parse_memory(struct vv_dev *d, const char *arg)
{
	for (unsigned i = 0; i < sizeof(vv_memory_names) / sizeof(vv_memory_names[0]); i++)
		if (!strcmp(arg, vv_memory_names[i])) {
			d->memory = (enum vv_memory)i;
			if (!CONFIG_VUV_ZERO_COPY && d->memory != VV_MEM_MMAP && d->memory != VV_MEM_AUTO)
				vu_log(VU_WARN, "--memory=%s: built without zero-copy paths, using mmap",
				       arg);
			return 0;
		}
	return -EINVAL;
}

static void usage(FILE *f)
{
	fputs("Usage: vhost-user-video [OPTIONS]\n"
	      "A vhost-user virtio-video device (protocol v3) on a V4L2 stateful codec.\n\n"
	      "  -s, --socket-path=PATH   listen on this unix socket (mode 0600)\n"
	      "      --socket-group=GROUP let GROUP connect too (mode 0660)\n"
	      "      --fd=N, --socket-fd=N  use inherited socket N (listening or connected)\n"
	      "                           (LISTEN_FDS/LISTEN_PID: fd 3, without either)\n"
	      "  -d, --v4l2-device=DEV    the V4L2 codec node (default or empty: the first\n"
	      "                           stateful decoder, else encoder, in /dev/video*)\n"
	      "      --v4l2-ctrl=ID=VAL   set V4L2 control ID (e.g. 0x009909cb, GOP size)\n"
	      "                           on every stream; repeatable\n"
	      "      --memory=MODE        auto (default), userptr, dmabuf or mmap: how the\n"
	      "                           codec gets guest buffers (zero-copy or a copy)\n"
	      "      --print-capabilities print the backend's capabilities as JSON and exit\n"
	      "  -v, --verbose            log commands; twice: buffers too\n"
	      "  -h, --help               this text\n"
	      "  -V, --version            print the version\n"
	      "SIGTERM, SIGINT and SIGHUP stop it with exit status 0.\n", f);
}

/* systemd's sd_notify(3) protocol without libsystemd: one datagram to
 * $NOTIFY_SOCKET, a path or an abstract socket written with a leading '@'. */
static void notify(const char *msg)
{
	const char *e = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = e ? strlen(e) : 0;
	int fd;

	if (n < 2 || (e[0] != '/' && e[0] != '@') || n >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, e, n);
	if (e[0] == '@')
		sa.sun_path[0] = 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
			     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0)
		vu_log(VU_WARN, "NOTIFY_SOCKET %s: %s", e, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* systemd socket activation (sd_listen_fds(3)): the first passed fd, 3, when
 * LISTEN_PID is us; the variables are removed so no child inherits them.
 * -1: not activated. */
static int activation_fd(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	char *end;
	long p, n;

	if (!pid || !fds)
		return -1;
	p = strtol(pid, &end, 10);
	if (*end || p != (long)getpid())
		return -1;
	n = strtol(fds, &end, 10);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (*end || n < 1)
		return -1;
	if (n > 1)
		vu_log(VU_WARN, "LISTEN_FDS=%ld: serving fd 3 only", n);
	fcntl(3, F_SETFD, FD_CLOEXEC);
	return 3;
}

/* The gid of a group name in /etc/group (a static musl binary has no NSS;
 * musl's getgrnam would add its stdio and nscd client): -1 if not found. */
static long group_gid(const char *name)
{
	size_t len = strlen(name), n = 0;
	long gid = -1;
	char *buf = NULL;
	int fd = open("/etc/group", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	for (size_t cap = 0;;) {
		ssize_t k;

		if (n + 1 >= cap) {
			char *b = cap < (1u << 20) ? realloc(buf, cap = cap ? 2 * cap : 4096) : NULL;

			if (!b)
				goto out;
			buf = b;
		}
		k = read(fd, buf + n, cap - 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	buf[n] = 0;
	/* name:password:gid:members, one per line */
	for (char *l = buf, *nl; *l; l = nl ? nl + 1 : l + strlen(l)) {
		char *p = l + len, *end;

		nl = strchr(l, '\n');
		if (strncmp(l, name, len) || *p != ':' || !(p = strchr(p + 1, ':')) ||
		    (nl && p > nl))
			continue;
		gid = strtol(p + 1, &end, 10);
		if (end == p + 1 || (*end != ':' && *end != '\n' && *end) || gid < 0)
			gid = -1;
		break;
	}
out:
	free(buf);
	close(fd);
	return gid;
}

/* --socket-group: the socket was made 0600; give the group read/write. */
static int socket_group(const char *path, const char *group)
{
	char *end;
	long gid = strtol(group, &end, 10);

	if (!*group || *end || gid < 0)
		gid = group_gid(group);
	if (gid < 0 || gid > INT_MAX) {
		vu_log(VU_ERR, "--socket-group: no group '%s'", group);
		return -1;
	}
	if (chown(path, (uid_t)-1, (gid_t)gid) < 0 || chmod(path, 0660) < 0) {
		vu_log(VU_ERR, "--socket-group=%s on %s: %s", group, path, strerror(errno));
		return -1;
	}
	return 0;
}

/* vu_listen with the reason spelled out when the directory is missing. */
static int listen_on(const char *path)
{
	int fd = vu_listen(path);
	const char *slash = strrchr(path, '/');

	if (fd == -ENOENT && slash)
		vu_log(VU_ERR, "cannot listen on %s: directory %.*s does not exist", path,
		       slash == path ? 1 : (int)(slash - path), path);
	else if (fd < 0)
		vu_log(VU_ERR, "cannot listen on %s: %s", path, strerror(-fd));
	return fd;
}

/* vhost-user.rst, backend program conventions: JSON on stdout. "features"
 * are the roles this build serves; with --v4l2-device, the node's role and
 * the virtio device id QEMU must be given for it. */
static int print_capabilities(const char *dev_path)
{
	struct m2m_info info;
	int r = 0;

	printf("{\n  \"type\": \"video\",\n  \"features\": [");
	if (CONFIG_VUV_DECODER)
		printf("\n    \"decoder\"%s", CONFIG_VUV_ENCODER ? "," : "");
	if (CONFIG_VUV_ENCODER)
		printf("\n    \"encoder\"");
	printf("\n  ]");
	if (dev_path) {
		r = m2m_probe(dev_path, &info);
		if (!r && role_built(info.role))
			printf(",\n  \"device\": \"%s\",\n  \"role\": \"%s\",\n  \"virtio-id\": %d",
			       dev_path, role_name(info.role),
			       info.role == M2M_ROLE_ENCODER ? VIRTIO_ID_VIDEO_ENCODER
							     : VIRTIO_ID_VIDEO_DECODER);
		else
			vu_log(VU_ERR, "%s: %s", dev_path, r ? strerror(-r) : "not a codec this build serves");
	}
	printf("\n}\n");
	return r || (dev_path && !role_built(info.role)) ? 1 : 0;
}

static int parse_fd(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < 0 || v > INT_MAX)
		return -1;
	return (int)v;
}

/* An init script may start us with 0-2 closed: keep them out of reach. */
static void guard_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) < 0) {
			int n = open("/dev/null", O_RDWR);

			if (n > 2)
				close(n);
		}
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket-path", required_argument, NULL, 's' },
		{ "fd", required_argument, NULL, 'f' },
		{ "socket-fd", required_argument, NULL, 'f' },
		{ "socket-group", required_argument, NULL, 'g' },
		{ "v4l2-device", required_argument, NULL, 'd' },
		{ "v4l2-ctrl", required_argument, NULL, 'c' },
		{ "memory", required_argument, NULL, 'm' },
		{ "print-capabilities", no_argument, NULL, 'p' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock_path = NULL, *dev_path = NULL, *group = NULL;
	bool print_caps = false;
	int fd = -1, opt, sfd, r;
	sigset_t sigs;

	guard_std_fds();
	while ((opt = getopt_long(argc, argv, "s:d:vhV", opts, NULL)) != -1) {
		switch (opt) {
		case 's': sock_path = optarg; break;
		case 'g': group = optarg; break;
		case 'd': dev_path = *optarg ? optarg : NULL; break;	/* empty: look for one */
		case 'v': vu_verbosity++; break;
		case 'f':
			fd = parse_fd(optarg);
			if (fd < 0) {
				vu_log(VU_ERR, "--fd/--socket-fd: '%s' is not a file descriptor number", optarg);
				return 2;
			}
			break;
		case 'c':
			if (parse_ctrl(&vv, optarg)) {
				vu_log(VU_ERR, "--v4l2-ctrl: '%s' is not ID=VALUE (at most %d)", optarg,
				       VV_MAX_USER_CTRLS);
				return 2;
			}
			break;
		case 'm':
			if (parse_memory(&vv, optarg)) {
				vu_log(VU_ERR, "--memory: '%s' is not auto, userptr, dmabuf or mmap",
				       optarg);
				return 2;
			}
			break;
		case 'p': print_caps = true; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("vhost-user-video %s\n", VUV_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		vu_log(VU_ERR, "unexpected argument '%s'", argv[optind]);
		return 2;
	}
	if (print_caps)
		return print_capabilities(dev_path);
	if (!sock_path && fd < 0)
		fd = activation_fd();
	if (!!sock_path == (fd >= 0)) {
		vu_log(VU_ERR, "give exactly one of --socket-path and --fd (see --help)");
		return 2;
	}
	if (group && !sock_path)
		vu_log(VU_WARN, "--socket-group applies to --socket-path only; ignored");
	if (!dev_path && !(dev_path = find_device())) {
		vu_log(VU_ERR, "no V4L2 stateful codec found in /dev/video*; use --v4l2-device");
		return 1;
	}
	if (probe_device(&vv, dev_path))
		return 1;
	vv.devpath = dev_path;
	vv_ops.features = (1ull << VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES) |
			  (1ull << VIRTIO_VIDEO_F_RESOURCE_NON_CONTIG);

	/* Signals are read from a signalfd by the command thread only. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	vv.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vv.vu = vu_dev_new(&vv_ops, &vv);
	if (sfd < 0 || vv.wake_fd < 0 || !vv.vu) {
		vu_log(VU_ERR, "start-up: %s", strerror(errno ? errno : ENOMEM));
		return 1;
	}
	pthread_cond_init(&vv.cond, NULL);
	if (sock_path) {
		fd = listen_on(sock_path);
		if (fd < 0)
			return 1;
		if (group && socket_group(sock_path, group)) {
			unlink(sock_path);
			return 1;
		}
	}
	r = pthread_create(&vv.thread, NULL, event_thread, &vv);
	if (r) {
		vu_log(VU_ERR, "cannot start the event thread: %s", strerror(r));
		return 1;
	}
	vu_log(VU_INFO, "serving a %s (virtio-id=%d) on %s", role_name(vv.info.role),
	       is_encoder(&vv) ? VIRTIO_ID_VIDEO_ENCODER : VIRTIO_ID_VIDEO_DECODER,
	       sock_path ? sock_path : "an inherited socket");
	{
		char st[160 + PATH_MAX];

		snprintf(st, sizeof(st), "READY=1\nSTATUS=serving a %s (virtio-id=%d) on %s",
			 role_name(vv.info.role),
			 is_encoder(&vv) ? VIRTIO_ID_VIDEO_ENCODER : VIRTIO_ID_VIDEO_DECODER,
			 sock_path ? sock_path : "an inherited socket");
		notify(st);
	}

	r = vu_run(vv.vu, fd, sfd);
	notify("STOPPING=1");
	if (r < 0)
		vu_log(VU_ERR, "stopped: %s", strerror(-r));
	else
		vu_log(VU_INFO, "stopping");
	vu_disconnect(vv.vu);
	vu_lock(vv.vu);
	vv.stop = true;
	vu_unlock(vv.vu);
	wake_events(&vv);
	pthread_join(vv.thread, NULL);
	vu_dev_free(vv.vu);
	if (sock_path)
		unlink(sock_path);
	close(fd);
	close(sfd);
	close(vv.wake_fd);
	return r < 0 ? 1 : 0;
}
