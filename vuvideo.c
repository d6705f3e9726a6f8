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
 *   always. It DQBUFs, copies decoded data to the guest, completes parked
 *   chains, DQEVENTs (source change, EOS) and sends events on the eventq.
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
#define VV_MAX_ENTRIES 16384		/* mem entries per resource */
#define VV_EVENT_BACKLOG 64
#define VV_SRC_BUFFERS 8		/* V4L2 bitstream buffers per stream */
#define VV_MAX_DIM 16384u		/* SET_PARAMS frame width/height */
#define VV_MAX_PLANE_SIZE (256u << 20)	/* a plane, or the data of one buffer */
#define VV_MAX_FPS 1000u

/* Per-buffer log lines exist only with CONFIG_VUV_VERBOSE_BUFFERS. */
#define VUV_TRACE_ON (CONFIG_VUV_VERBOSE_BUFFERS && vu_verbosity >= 2)

/* ---- types ----------------------------------------------------------------- */

struct vv_ent {
	uint64_t gpa;
	uint32_t len;
};

struct vv_res {
	uint32_t id;
	uint32_t layout;		/* VIRTIO_VIDEO_PLANES_LAYOUT_* */
	unsigned num_planes;
	uint32_t plane_offsets[VIRTIO_VIDEO_MAX_PLANES];
	unsigned plane_first[VIRTIO_VIDEO_MAX_PLANES];
	unsigned plane_nent[VIRTIO_VIDEO_MAX_PLANES];
	uint64_t plane_len[VIRTIO_VIDEO_MAX_PLANES];
	struct vv_ent *ent;
	unsigned nent;
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
	struct vv_res res[VV_MAX_RESOURCES];
	unsigned nres;
	int vbuf_res[M2M_MAX_BUFFERS];	/* resource slot using V4L2 buffer i, -1 free */
	unsigned in_driver;		/* V4L2 buffers queued to the driver */
	bool allocated;
	struct m2m_pix alloc_pix;	/* format the V4L2 buffers were allocated with */
	uint64_t next_seq;
};

enum vv_stream_state {
	VV_STREAM_FREE = 0,
	VV_STREAM_OPEN,
	VV_STREAM_CLOSING,
};

/* A stream's progress through dev-decoder.rst / dev-encoder.rst. */
enum vv_flow {
	VV_FLOW_INIT = 0,	/* decoder: waiting for the first SOURCE_CHANGE */
	VV_FLOW_RUNNING,
	VV_FLOW_DRAINING,	/* V4L2_DEC_CMD_STOP / V4L2_ENC_CMD_STOP issued */
	VV_FLOW_STOPPED,	/* drain completed: needs a START command */
	VV_FLOW_RES_CHANGE,	/* decoder: LAST seen after a mid-stream source change */
};

struct vv_stream {
	enum vv_stream_state state;
	enum vv_flow flow;
	uint32_t id;
	uint32_t gen;			/* bumped on every (re)use of the slot */
	uint32_t coded_format;		/* virtio format */
	struct m2m_ctx m2m;
	struct vv_queue q[2];		/* [M2M_SRC] = INPUT, [M2M_DST] = OUTPUT */
	bool fmt_known;			/* capture format known (after SOURCE_CHANGE) */
	bool change_pending;		/* resolution event waits for the LAST buffer */
	bool error;			/* the codec failed: no more data polling */
	bool drain_parked;		/* a STREAM_DRAIN waits for its end */
	bool drain_deferred;		/* ... and for its STOP command to be issued */
	struct vu_chain drain_chain;
	bool eos_pending;		/* next output resource goes back as empty EOS */
	struct virtio_video_crop crop;
	uint32_t min_bufs[2];
	uint32_t frame_rate;
};

#define VV_MAX_USER_CTRLS 16

struct vv_dev {
	struct vu_dev *vu;
	const char *devpath;
	/* --v4l2-ctrl=ID=VALUE, applied to every new stream */
	unsigned n_ctrls;
	struct { uint32_t id; int32_t value; } ctrls[VV_MAX_USER_CTRLS];
	struct m2m_info info;
	struct vv_stream streams[CONFIG_VUV_MAX_STREAMS];
	struct virtio_video_event backlog[VV_EVENT_BACKLOG];
	unsigned backlog_len;
	/* event thread */
	pthread_t thread;
	int wake_fd;
	pthread_cond_t cond;
	uint64_t poll_req, poll_seen;
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

static const char *queue_type_name(uint32_t qt)
{
	return qt == VIRTIO_VIDEO_QUEUE_TYPE_INPUT ? "input"
	       : qt == VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT ? "output" : "?";
}

/* virtio format <-> V4L2 fourcc, as the Linux guest driver maps them. */
static const struct {
	uint32_t virtio;
	uint32_t fourcc;
	unsigned color_planes;
	const char *name;
} formats[] = {
	{ VIRTIO_VIDEO_FORMAT_ARGB8888, V4L2_PIX_FMT_ARGB32, 1, "ARGB8888" },
	{ VIRTIO_VIDEO_FORMAT_BGRA8888, V4L2_PIX_FMT_ABGR32, 1, "BGRA8888" },
	{ VIRTIO_VIDEO_FORMAT_NV12, V4L2_PIX_FMT_NV12, 2, "NV12" },
	{ VIRTIO_VIDEO_FORMAT_YUV420, V4L2_PIX_FMT_YUV420, 3, "YUV420" },
	{ VIRTIO_VIDEO_FORMAT_YVU420, V4L2_PIX_FMT_YVU420, 3, "YVU420" },
	{ VIRTIO_VIDEO_FORMAT_MPEG2, V4L2_PIX_FMT_MPEG2, 1, "MPEG2" },
	{ VIRTIO_VIDEO_FORMAT_MPEG4, V4L2_PIX_FMT_MPEG4, 1, "MPEG4" },
	{ VIRTIO_VIDEO_FORMAT_H264, V4L2_PIX_FMT_H264, 1, "H264" },
	{ VIRTIO_VIDEO_FORMAT_HEVC, V4L2_PIX_FMT_HEVC, 1, "HEVC" },
	{ VIRTIO_VIDEO_FORMAT_VP8, V4L2_PIX_FMT_VP8, 1, "VP8" },
	{ VIRTIO_VIDEO_FORMAT_VP9, V4L2_PIX_FMT_VP9, 1, "VP9" },
	{ VIRTIO_VIDEO_FORMAT_FWHT, V4L2_PIX_FMT_FWHT, 1, "FWHT" },
};
#define NFORMATS (sizeof(formats) / sizeof(formats[0]))

static int fmt_by_fourcc(uint32_t fourcc)
{
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
	for (unsigned i = 0; i < CONFIG_VUV_MAX_STREAMS; i++)
		if (d->streams[i].state == VV_STREAM_OPEN && d->streams[i].id == id)
			return &d->streams[i];
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
		struct vv_ent *e = &r->ent[i];
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

/* Encoder: copy the coded bytes of CAPTURE buffer b into resource r. */
static long copy_coded_out(struct vv_dev *d, struct vv_stream *s, struct vv_res *r,
			   const struct m2m_buf *b)
{
	struct m2m_plane_map *m = &s->m2m.map[M2M_DST][b->index][0];
	uint32_t off = b->data_offset[0], used = b->bytesused[0];
	int ret;

	if (off > used || used > m->length)
		return -EIO;
	ret = res_copy(d, r, 0, r->plane_offsets[0], (uint8_t *)m->addr + off, used - off, true);
	return ret ? ret : (long)(used - off);
}

static void res_free(struct vv_res *r)
{
	free(r->ent);
	r->ent = NULL;
	r->nent = 0;
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
	for (int qq = 0; qq < 2; qq++) {
		int n = 0;

		for (unsigned i = 0; i < in->nfmt[qq]; i++)
			vidx[qq][i] = (fmt_by_fourcc(in->fmt[qq][i].pixfmt) >= 0 &&
				       n < VIRTIO_VIDEO_MAX_FORMAT_DESCS) ? n++ : -1;
	}
	for (unsigned i = 0; i < in->nfmt[q] && !b.full; i++) {
		const struct m2m_format *f = &in->fmt[q][i];
		const struct m2m_format *sf = sizes_of(in, q, f);
		struct virtio_video_format_desc *fd;
		uint64_t mask = 0;
		unsigned nframes = sf->nsizes ? sf->nsizes : 0;

		if (vidx[q][i] < 0)
			continue;
		for (unsigned j = 0; j < in->nfmt[o]; j++)
			if ((f->pair_mask & (1ull << j)) && vidx[o][j] >= 0)
				mask |= 1ull << vidx[o][j];
		fd = caps_put(&b, sizeof(*fd));
		if (!fd)
			break;
		fd->mask = htole64(mask);
		fd->format = htole32(formats[fmt_by_fourcc(f->pixfmt)].virtio);
		fd->planes_layout = htole32(VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER |
					    (is_coded(formats[fmt_by_fourcc(f->pixfmt)].virtio)
					     ? 0 : VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE));
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
	for (unsigned i = 0; i < M2M_MAX_BUFFERS; i++)
		q->vbuf_res[i] = -1;
	q->in_driver = 0;
	for (unsigned i = 0; i < q->nres; i++) {
		q->res[i].vbuf = -1;
		q->res[i].fed = 0;
		q->res[i].pieces = 0;
	}
}

static int free_vbuf(struct vv_stream *s, enum m2m_queue mq)
{
	struct vv_queue *q = &s->q[mq];

	for (unsigned i = 0; i < s->m2m.nbufs[mq]; i++)
		if (q->vbuf_res[i] < 0)
			return (int)i;
	return -1;
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
		respond_buffer(d, &r->chain, VIRTIO_VIDEO_RESP_OK_NODATA, s->id, r->timestamp,
			       VIRTIO_VIDEO_BUFFER_FLAG_ERR, 0);
		r->queued = false;
	}
	queue_reset_pairs(q);
}

static bool stream_wants_data(const struct vv_stream *s)
{
	if (s->error)
		return false;
	return (s->m2m.streaming[M2M_SRC] && s->q[M2M_SRC].in_driver) ||
	       (s->m2m.streaming[M2M_DST] && s->q[M2M_DST].in_driver &&
		s->flow != VV_FLOW_RES_CHANGE && s->flow != VV_FLOW_STOPPED);
}

/* ---- decoder: feeding the codec -------------------------------------------- */

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
	respond_buffer(d, &r->chain, VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, s->id, r->timestamp,
		       flags, 0);
	r->queued = false;
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

	while ((r = oldest_unfed(q)) && (vb = free_vbuf(s, M2M_SRC)) >= 0) {
		struct m2m_plane_map *m = &s->m2m.map[M2M_SRC][vb][0];
		uint32_t n = r->bytes - r->fed;
		struct m2m_buf b = { .index = (uint32_t)vb, .timestamp = r->timestamp };
		int ret;

		if (n > m->length)
			n = (uint32_t)m->length;
		ret = res_copy(d, r, 0, (uint64_t)r->plane_offsets[0] + r->fed, m->addr, n, false);
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

	while ((r = oldest_unfed(q)) && (vb = free_vbuf(s, M2M_SRC)) >= 0) {
		struct m2m_buf b = { .index = (uint32_t)vb, .timestamp = r->timestamp };
		long ret = copy_frame(d, s, r, M2M_SRC, (unsigned)vb, false);

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
		int vb = free_vbuf(s, M2M_DST);
		struct m2m_buf b = { 0 };
		int ret;

		if (!r || vb < 0)
			return;
		if (s->eos_pending) {
			respond_buffer(d, &r->chain, VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, s->id,
				       0, VIRTIO_VIDEO_BUFFER_FLAG_EOS, 0);
			r->queued = false;
			s->eos_pending = false;
			continue;
		}
		if (waiting == 1 && q->in_driver > 0)
			return;		/* keep one back */
		b.index = (uint32_t)vb;
		ret = m2m_qbuf(&s->m2m, M2M_DST, &b);
		if (ret) {
			vu_log(VU_WARN, "stream %u: QBUF capture: %s", s->id, strerror(-ret));
			respond_buffer(d, &r->chain, VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, s->id,
				       0, VIRTIO_VIDEO_BUFFER_FLAG_ERR, 0);
			r->queued = false;
			continue;
		}
		q->vbuf_res[vb] = (int)(r - q->res);
		r->vbuf = vb;
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
	if (m2m_get_selection(&s->m2m, M2M_DST, V4L2_SEL_TGT_COMPOSE, &r) == 0) {
		s->crop.left = htole32((uint32_t)r.left);
		s->crop.top = htole32((uint32_t)r.top);
		s->crop.width = htole32(r.width);
		s->crop.height = htole32(r.height);
	} else {
		s->crop = (struct virtio_video_crop){ 0, 0, htole32(pix.width), htole32(pix.height) };
	}
	if (m2m_get_ctrl(&s->m2m, V4L2_CID_MIN_BUFFERS_FOR_CAPTURE, &min) || min < 1)
		min = 1;
	/* +1: the buffer held back for the EOS marker */
	s->min_bufs[M2M_DST] = (uint32_t)min + 1;
}

/* (Re)allocate CAPTURE buffers with the current format and start streaming
 * (dev-decoder.rst, Capture setup, steps 5-7; dev-encoder.rst,
 * Initialization, steps 6-7). */
static int setup_capture(struct vv_stream *s)
{
	struct vv_queue *q = &s->q[M2M_DST];
	unsigned count = s->min_bufs[M2M_DST] + 2;
	int r;

	if (count > M2M_MAX_BUFFERS)
		count = M2M_MAX_BUFFERS;
	r = m2m_get_fmt(&s->m2m, M2M_DST, &q->alloc_pix);
	if (r)
		return r;
	r = m2m_alloc_buffers(&s->m2m, M2M_DST, &count);
	if (r)
		return r;
	queue_reset_pairs(q);
	q->allocated = true;
	r = m2m_streamon(&s->m2m, M2M_DST);
	if (r)
		return r;
	if (s->flow == VV_FLOW_RES_CHANGE || s->flow == VV_FLOW_INIT)
		s->flow = VV_FLOW_RUNNING;
	return 0;
}

/* ---- decoder: results from the codec (event thread) ----------------------- */

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
	if (s->drain_parked) {
		respond_hdr(d, &s->drain_chain, VIRTIO_VIDEO_RESP_OK_NODATA, s->id);
		s->drain_parked = false;
	}
	s->drain_deferred = false;
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
	respond_buffer(d, &r->chain, VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, s->id, 0,
		       VIRTIO_VIDEO_BUFFER_FLAG_EOS, 0);
	r->queued = false;
}

static int dequeue_dst(struct vv_dev *d, struct vv_stream *s)
{
	struct vv_queue *q = &s->q[M2M_DST];
	struct m2m_buf b;
	struct vv_res *r;
	int ret = m2m_dqbuf(&s->m2m, M2M_DST, &b);
	bool last, empty;
	int slot;

	if (ret)
		return ret;
	slot = q->vbuf_res[b.index];
	q->vbuf_res[b.index] = -1;
	if (q->in_driver)
		q->in_driver--;
	if (slot < 0)
		return 0;
	r = &q->res[slot];
	r->vbuf = -1;
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
			       VIRTIO_VIDEO_BUFFER_FLAG_BFRAME)))
			flags |= fwht_frame_flags((uint8_t *)s->m2m.map[M2M_DST][b.index][0].addr +
						  b.data_offset[0], (uint32_t)n);

		if (n < 0) {
			vu_log(VU_WARN, "stream %u: output resource %u: %s", s->id, r->id,
			       n == -ENOSPC ? "too small for the frame" : "guest memory not writable");
			flags |= VIRTIO_VIDEO_BUFFER_FLAG_ERR;
			n = 0;
		}
		respond_buffer(d, &r->chain, VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, s->id,
			       b.timestamp, flags, (uint32_t)n);
		r->queued = false;
	}
	if (!last)
		return 0;
	if (s->flow == VV_FLOW_DRAINING) {
		/* dev-decoder.rst, Drain: the LAST buffer ends it. The guest
		 * driver forces bytesused to 0 on EOS, so the marker is a
		 * separate empty buffer when LAST carried a frame. */
		if (empty) {
			respond_buffer(d, &r->chain, VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, s->id,
				       0, VIRTIO_VIDEO_BUFFER_FLAG_EOS, 0);
			r->queued = false;
		} else {
			send_eos(d, s);
		}
		drain_done(d, s);
	} else if (!is_encoder(d)) {
		/* Dynamic resolution change: the resource stays queued, to be
		 * returned by the guest's QUEUE_CLEAR; old frames are all out,
		 * so now tell the guest. */
		s->flow = VV_FLOW_RES_CHANGE;
		if (s->change_pending) {
			s->change_pending = false;
			event_send(d, VIRTIO_VIDEO_EVENT_DECODER_RESOLUTION_CHANGED, s->id);
		}
	}
	return 0;
}

static int dequeue_src(struct vv_dev *d, struct vv_stream *s)
{
	struct vv_queue *q = &s->q[M2M_SRC];
	struct m2m_buf b;
	struct vv_res *r;
	int slot, ret = m2m_dqbuf(&s->m2m, M2M_SRC, &b);

	if (ret)
		return ret;
	slot = q->vbuf_res[b.index];
	q->vbuf_res[b.index] = -1;
	if (q->in_driver)
		q->in_driver--;
	if (slot < 0)
		return 0;
	r = &q->res[slot];
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

static void service_events(struct vv_dev *d, struct vv_stream *s)
{
	uint32_t type, changes;

	while (m2m_dqevent(&s->m2m, &type, &changes) == 0) {
		if (type != V4L2_EVENT_SOURCE_CHANGE ||
		    !(changes & V4L2_EVENT_SRC_CH_RESOLUTION))
			continue;
		dec_read_capture_format(s);
		s->fmt_known = true;
		vu_log(VU_DEBUG, "stream %u: source change", s->id);
		if (!s->q[M2M_DST].allocated || !s->m2m.streaming[M2M_DST] ||
		    s->flow == VV_FLOW_RES_CHANGE) {
			/* first header, or the LAST buffer is already out */
			event_send(d, VIRTIO_VIDEO_EVENT_DECODER_RESOLUTION_CHANGED, s->id);
		} else {
			/* mid-stream: the event follows the LAST buffer, so that
			 * the guest has every frame of the old size first */
			s->change_pending = true;
		}
	}
}

/* Everything the codec has finished for stream s. Lock held. */
static void service_stream(struct vv_dev *d, struct vv_stream *s, short revents)
{
	bool progress = false;
	int r;

	if (revents & (POLLIN | POLLOUT | POLLERR)) {
		while ((r = dequeue_src(d, s)) == 0)
			progress = true;
		if (r != -EAGAIN && r != -EINVAL && r != -EPIPE)
			vu_log(VU_WARN, "stream %u: DQBUF output: %s", s->id, strerror(-r));
		while ((r = dequeue_dst(d, s)) == 0)
			progress = true;
		if (r == -EPIPE && s->flow == VV_FLOW_DRAINING) {
			send_eos(d, s);
			drain_done(d, s);
		}
		feed_src(d, s);
		feed_dst(d, s);
	}
	if ((revents & POLLPRI) && !is_encoder(d))
		service_events(d, s);	/* source change: decoders only */
	if ((revents & (POLLHUP | POLLNVAL)) ||
	    ((revents & POLLERR) && !progress && stream_wants_data(s)))
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
			struct vv_stream *s = &d->streams[i];

			if (s->state != VV_STREAM_OPEN)
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
			struct vv_stream *s = &d->streams[sidx[k]];

			if (!pfd[k].revents || s->state != VV_STREAM_OPEN || s->gen != sgen[k])
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
	uint32_t gen;

	s->state = VV_STREAM_CLOSING;
	sync_event_thread(d);
	for (int mq = 0; mq < 2; mq++) {
		struct vv_queue *q = &s->q[mq];

		for (unsigned i = 0; i < q->nres; i++) {
			struct vv_res *r = &q->res[i];

			if (r->queued && answer)
				respond_buffer(d, &r->chain, VIRTIO_VIDEO_RESP_OK_NODATA, s->id,
					       r->timestamp, VIRTIO_VIDEO_BUFFER_FLAG_ERR, 0);
			else if (r->queued)
				vu_chain_release(&r->chain);
			res_free(r);
		}
		q->nres = 0;
	}
	if (s->drain_parked) {
		if (answer)
			respond_hdr(d, &s->drain_chain, VIRTIO_VIDEO_RESP_OK_NODATA, s->id);
		else
			vu_chain_release(&s->drain_chain);
	}
	m2m_close(&s->m2m);
	gen = s->gen;
	memset(s, 0, sizeof(*s));
	s->gen = gen;
	s->state = VV_STREAM_FREE;
}

/* ---- command handlers ------------------------------------------------------ */

struct vv_cmd {
	const char *name;
	size_t len;		/* exact request size; 0: checked by the handler */
	void (*fn)(struct vv_dev *d, struct vu_chain *c, const uint8_t *req, size_t len);
	bool needs_stream;
};

static void cmd_query_capability(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
				 size_t len)
{
	int q = queue_index(rd32(req + 8));
	uint8_t buf[VV_CAPS_MAX];
	size_t max = c->wr_len < sizeof(buf) ? c->wr_len : sizeof(buf);
	size_t n;

	if (q < 0) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, rd32(req + 4));
		return;
	}
	n = build_caps(d, (enum m2m_queue)q, rd32(req + 4), buf, max);
	if (!n) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, rd32(req + 4));
		return;
	}
	respond(d, c, buf, n);
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
 * raw format the codec pairs with it on OUTPUT (YUV420 if it can), then the
 * crop of the visible area. The guest refines both with SET_PARAMS. */
static int enc_init(struct vv_dev *d, struct vv_stream *s, uint32_t coded)
{
	struct m2m_pix pix = { .pixfmt = coded, .width = 640, .height = 480, .num_planes = 1 };
	struct m2m_rect crop = { 0, 0, 640, 480 };
	uint32_t raw = 0;
	int r = m2m_set_fmt(&s->m2m, M2M_DST, &pix);

	if (!r && pix.pixfmt != coded)
		r = -EINVAL;
	for (unsigned i = 0; i < d->info.nfmt[M2M_SRC] && !r; i++) {
		uint32_t f = d->info.fmt[M2M_SRC][i].pixfmt;

		if (fmt_by_fourcc(f) >= 0 && (!raw || f == V4L2_PIX_FMT_YUV420))
			raw = f;
	}
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

static void cmd_stream_create(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
			      size_t len)
{
	uint32_t id = rd32(req + 4), in_mem = rd32(req + 8), out_mem = rd32(req + 12);
	uint32_t coded = rd32(req + 16);
	int fi = fmt_by_virtio(coded);
	struct vv_stream *s = NULL;
	char tag[65];
	int r;

	memcpy(tag, req + 24, 64);
	tag[64] = '\0';
	if (stream_find(d, id)) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, id);
		return;
	}
	if (in_mem != VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES ||
	    out_mem != VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES || fi < 0) {
		vu_log(VU_WARN, "stream %u: unsupported memory type or format %s", id,
		       virtio_fmt_name(coded));
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, id);
		return;
	}
	for (unsigned i = 0; i < CONFIG_VUV_MAX_STREAMS && !s; i++)
		if (d->streams[i].state == VV_STREAM_FREE)
			s = &d->streams[i];
	if (!s) {
		vu_log(VU_WARN, "stream %u: all %d streams in use", id, CONFIG_VUV_MAX_STREAMS);
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY, id);
		return;
	}
	r = m2m_open(&s->m2m, d->devpath, d->info.mplane);
	if (r) {
		vu_log(VU_ERR, "stream %u: cannot open %s: %s", id, d->devpath, strerror(-r));
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY, id);
		return;
	}
	r = is_encoder(d) ? enc_init(d, s, formats[fi].fourcc) : dec_init(s, formats[fi].fourcc);
	if (r) {
		vu_log(VU_WARN, "stream %u: the codec refuses %s: %s", id, formats[fi].name,
		       strerror(-r));
		m2m_close(&s->m2m);
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, id);
		return;
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
	s->gen++;
	for (int q = 0; q < 2; q++) {
		s->q[q].mq = (enum m2m_queue)q;
		queue_reset_pairs(&s->q[q]);
	}
	vu_log(VU_INFO, "stream %u: created (%s, tag \"%.64s\")", id, formats[fi].name, tag);
	respond_hdr(d, c, VIRTIO_VIDEO_RESP_OK_NODATA, id);
	wake_events(d);
}

static void cmd_stream_destroy(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
			       size_t len)
{
	struct vv_stream *s = stream_find(d, rd32(req + 4));

	vu_log(VU_INFO, "stream %u: destroyed", s->id);
	stream_release(d, s, true);
	respond_hdr(d, c, VIRTIO_VIDEO_RESP_OK_NODATA, rd32(req + 4));
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

/* Issue the STOP command of a requested drain once it can take effect:
 * vicodec and the m2m helpers ignore it unless both queues stream
 * (dev-decoder.rst / dev-encoder.rst, Drain, step 1). */
static void drain_start(struct vv_dev *d, struct vv_stream *s)
{
	int r;

	if (!s->drain_deferred || !s->m2m.streaming[M2M_SRC] || !s->m2m.streaming[M2M_DST] ||
	    s->flow != VV_FLOW_RUNNING)
		return;
	s->drain_deferred = false;
	r = is_encoder(d) ? m2m_encoder_cmd(&s->m2m, V4L2_ENC_CMD_STOP, false)
			  : m2m_decoder_cmd(&s->m2m, V4L2_DEC_CMD_STOP, false);
	if (r) {
		vu_log(VU_WARN, "stream %u: drain (STOP command): %s", s->id, strerror(-r));
		respond_hdr(d, &s->drain_chain, VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION, s->id);
		s->drain_parked = false;
		return;
	}
	s->flow = VV_FLOW_DRAINING;
	wake_events(d);
}

static void cmd_stream_drain(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
			     size_t len)
{
	struct vv_stream *s = stream_find(d, rd32(req + 4));
	bool ready = s->m2m.streaming[M2M_SRC] && s->m2m.streaming[M2M_DST] &&
		     s->flow == VV_FLOW_RUNNING;

	if (s->drain_parked) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION, s->id);
		return;
	}
	if (!ready && !input_pending(s)) {
		/* nothing in flight: the drain is complete already */
		send_eos(d, s);
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_OK_NODATA, s->id);
		return;
	}
	/* Answered when the LAST buffer comes; the STOP command waits until
	 * both queues stream (e.g. the guest has not queued output yet). */
	s->drain_chain = *c;
	s->drain_parked = true;
	s->drain_deferred = true;
	c->req = NULL;		/* owned by the parked copy now */
	drain_start(d, s);
}

/* Parse and check the mem entries of RESOURCE_CREATE into r. */
static uint32_t parse_entries(struct vv_dev *d, struct vv_res *r, const uint8_t *req,
			      size_t len)
{
	uint64_t total = 0;
	unsigned n = 0;

	for (unsigned p = 0; p < VIRTIO_VIDEO_MAX_PLANES; p++) {
		uint32_t k = rd32(req + 56 + 4 * p);

		if (k > VV_MAX_ENTRIES || (p >= r->num_planes && k))
			return VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER;
		total += k;
	}
	if (total == 0 || total > VV_MAX_ENTRIES ||
	    len != sizeof(struct virtio_video_resource_create) +
		   total * sizeof(struct virtio_video_mem_entry))
		return VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER;
	r->ent = calloc(total, sizeof(*r->ent));
	if (!r->ent)
		return VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY;
	r->nent = (unsigned)total;
	for (unsigned p = 0; p < r->num_planes; p++) {
		r->plane_first[p] = n;
		r->plane_nent[p] = rd32(req + 56 + 4 * p);
		r->plane_len[p] = 0;
		for (unsigned i = 0; i < r->plane_nent[p]; i++, n++) {
			const uint8_t *e = req + sizeof(struct virtio_video_resource_create) + 16u * n;
			uint64_t gpa = rd64(e), avail = 0;
			uint32_t elen = rd32(e + 8);

			/* the whole entry must be guest memory, region by region */
			for (uint64_t off = 0; off < elen; off += avail) {
				avail = elen - off;
				if (gpa + off < gpa || !vu_gpa_to_va(d->vu, gpa + off, &avail) || !avail)
					return VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER;
			}
			if (elen == 0)
				return VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER;
			r->ent[n] = (struct vv_ent){ gpa, elen };
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
				return VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER;
		}
	}
	return VIRTIO_VIDEO_RESP_OK_NODATA;
}

static void cmd_resource_create(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
				size_t len)
{
	struct vv_stream *s = stream_find(d, rd32(req + 4));
	int qi = queue_index(rd32(req + 8));
	uint32_t id = rd32(req + 12), resp;
	struct vv_queue *q;
	struct vv_res *r;

	if (len < sizeof(struct virtio_video_resource_create) || qi < 0) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, s->id);
		return;
	}
	q = &s->q[qi];
	if (res_find(q, id)) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID, s->id);
		return;
	}
	if (q->nres == VV_MAX_RESOURCES) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY, s->id);
		return;
	}
	r = &q->res[q->nres];
	memset(r, 0, sizeof(*r));
	r->id = id;
	r->vbuf = -1;
	r->layout = rd32(req + 16);
	r->num_planes = rd32(req + 20);
	for (unsigned p = 0; p < VIRTIO_VIDEO_MAX_PLANES; p++)
		r->plane_offsets[p] = rd32(req + 24 + 4 * p);
	if ((r->layout != VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER &&
	     r->layout != VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE) ||
	    r->num_planes == 0 || r->num_planes > VIRTIO_VIDEO_MAX_PLANES)
		resp = VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER;
	else
		resp = parse_entries(d, r, req, len);
	if (resp != VIRTIO_VIDEO_RESP_OK_NODATA) {
		vu_log(VU_WARN, "stream %u: RESOURCE_CREATE %s %u refused: %s", s->id,
		       queue_type_name(rd32(req + 8)), id, resp_name(resp));
		res_free(r);
	} else {
		q->nres++;
		vu_log(VU_DEBUG, "stream %u: %s resource %u: %u entries", s->id,
		       queue_type_name(rd32(req + 8)), id, r->nent);
	}
	respond_hdr(d, c, resp, s->id);
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

static void cmd_resource_queue(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
			       size_t len)
{
	struct vv_stream *s = stream_find(d, rd32(req + 4));
	int qi = queue_index(rd32(req + 8));
	uint32_t id = rd32(req + 12), nsizes = rd32(req + 24);
	uint64_t bytes = 0;
	struct vv_queue *q;
	struct vv_res *r;
	int ret;

	if (qi < 0 || nsizes > VIRTIO_VIDEO_MAX_PLANES) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, s->id);
		return;
	}
	q = &s->q[qi];
	r = res_find(q, id);
	if (!r || r->queued) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID, s->id);
		return;
	}
	if (s->error) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION, s->id);
		return;
	}
	for (unsigned i = 0; i < nsizes; i++)
		bytes += rd32(req + 28 + 4 * i);
	if (qi == M2M_SRC) {
		/* While draining, further input is refused (shared rules). */
		if (s->drain_parked) {
			respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION, s->id);
			return;
		}
		/* bounded before it is narrowed: repeated mem entries can make
		 * a resource's capacity exceed 4 GiB */
		if (bytes == 0 || bytes > res_capacity(r) || bytes > VV_MAX_PLANE_SIZE) {
			respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, s->id);
			return;
		}
		if (!q->allocated) {
			unsigned count = VV_SRC_BUFFERS;

			ret = m2m_get_fmt(&s->m2m, M2M_SRC, &q->alloc_pix);
			if (!ret)
				ret = m2m_alloc_buffers(&s->m2m, M2M_SRC, &count);
			if (ret) {
				vu_log(VU_WARN, "stream %u: REQBUFS output: %s", s->id, strerror(-ret));
				respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY, s->id);
				return;
			}
			q->allocated = true;
			queue_reset_pairs(q);
		}
		if (s->flow == VV_FLOW_STOPPED) {
			/* dev-decoder.rst / dev-encoder.rst, Drain: resume with START */
			if (is_encoder(d))
				m2m_encoder_cmd(&s->m2m, V4L2_ENC_CMD_START, false);
			else
				m2m_decoder_cmd(&s->m2m, V4L2_DEC_CMD_START, false);
			s->flow = VV_FLOW_RUNNING;
		}
	} else if (!q->allocated || !s->m2m.streaming[M2M_DST]) {
		if (!s->fmt_known) {
			/* The guest queues capture buffers only after our
			 * DECODER_RESOLUTION_CHANGED; keep them until then. */
		} else if ((ret = setup_capture(s))) {
			vu_log(VU_WARN, "stream %u: capture setup: %s", s->id, strerror(-ret));
			respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY, s->id);
			return;
		}
	}
	r->queued = true;
	r->chain = *c;
	c->req = NULL;
	r->timestamp = rd64(req + 16);
	r->bytes = (uint32_t)bytes;
	r->fed = 0;
	r->pieces = 0;
	r->flags = 0;
	r->seq = q->next_seq++;
	if (VUV_TRACE_ON)
		vu_log(VU_TRACE, "stream %u: queue %s resource %u (%u bytes, ts %llu)", s->id,
		       queue_type_name(rd32(req + 8)), id, r->bytes,
		       (unsigned long long)r->timestamp);
	if (qi == M2M_SRC) {
		feed_src(d, s);
		if (!s->m2m.streaming[M2M_SRC] && q->in_driver) {
			ret = m2m_streamon(&s->m2m, M2M_SRC);
			if (ret)
				vu_log(VU_WARN, "stream %u: STREAMON output: %s", s->id, strerror(-ret));
		}
	} else {
		feed_dst(d, s);
	}
	drain_start(d, s);
	wake_events(d);
}

static void cmd_resource_destroy_all(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
				     size_t len)
{
	struct vv_stream *s = stream_find(d, rd32(req + 4));
	int qi = queue_index(rd32(req + 8));
	struct vv_queue *q;
	unsigned zero = 0;

	if (qi < 0) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, s->id);
		return;
	}
	q = &s->q[qi];
	if (s->m2m.streaming[qi])
		m2m_streamoff(&s->m2m, (enum m2m_queue)qi);
	queue_flush(d, s, (enum m2m_queue)qi);
	if (q->allocated) {
		sync_event_thread(d);
		m2m_alloc_buffers(&s->m2m, (enum m2m_queue)qi, &zero);
		q->allocated = false;
	}
	for (unsigned i = 0; i < q->nres; i++)
		res_free(&q->res[i]);
	q->nres = 0;
	respond_hdr(d, c, VIRTIO_VIDEO_RESP_OK_NODATA, s->id);
	wake_events(d);
}

static void cmd_queue_clear(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
			    size_t len)
{
	struct vv_stream *s = stream_find(d, rd32(req + 4));
	int qi = queue_index(rd32(req + 8));

	if (qi < 0) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, s->id);
		return;
	}
	/* dev-decoder.rst, Seek (input) / capture reset (output): STREAMOFF
	 * returns every buffer; decoding resumes at the next STREAMON. */
	if (s->m2m.streaming[qi])
		m2m_streamoff(&s->m2m, (enum m2m_queue)qi);
	queue_flush(d, s, (enum m2m_queue)qi);
	s->eos_pending = false;
	s->error = false;
	if (s->flow == VV_FLOW_DRAINING || s->drain_parked)
		drain_done(d, s);
	if (s->flow == VV_FLOW_STOPPED)
		s->flow = s->fmt_known ? VV_FLOW_RUNNING : VV_FLOW_INIT;
	respond_hdr(d, c, VIRTIO_VIDEO_RESP_OK_NODATA, s->id);
	wake_events(d);
}

/* The visible rectangle of a raw queue: the decoder's compose (read at
 * SOURCE_CHANGE), the encoder's crop; the whole frame otherwise. */
static struct virtio_video_crop visible_rect(struct vv_dev *d, struct vv_stream *s, int qi,
					     const struct m2m_pix *pix)
{
	struct virtio_video_crop full = { 0, 0, htole32(pix->width), htole32(pix->height) };
	struct m2m_rect r;

	if (qi == (int)coded_queue(d))
		return full;
	if (!is_encoder(d))
		return s->fmt_known ? s->crop : full;
	if (m2m_get_selection(&s->m2m, M2M_SRC, V4L2_SEL_TGT_CROP, &r))
		return full;
	return (struct virtio_video_crop){ htole32((uint32_t)r.left), htole32((uint32_t)r.top),
					   htole32(r.width), htole32(r.height) };
}

static void fill_params(struct vv_dev *d, struct vv_stream *s, int qi,
			struct virtio_video_params *p)
{
	struct m2m_pix pix;
	struct vv_plane pl[VIRTIO_VIDEO_MAX_PLANES];
	uint32_t fps = s->frame_rate;
	unsigned n;
	int fi;

	memset(p, 0, sizeof(*p));
	p->queue_type = htole32(qi == M2M_SRC ? VIRTIO_VIDEO_QUEUE_TYPE_INPUT
					       : VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT);
	if (m2m_get_fmt(&s->m2m, (enum m2m_queue)qi, &pix))
		return;
	fi = fmt_by_fourcc(pix.pixfmt);
	p->format = htole32(fi < 0 ? 0 : formats[fi].virtio);
	p->frame_width = htole32(pix.width);
	p->frame_height = htole32(pix.height);
	p->min_buffers = htole32(s->min_bufs[qi]);
	p->max_buffers = htole32(qi == M2M_SRC ? VV_MAX_RESOURCES : M2M_MAX_BUFFERS);
	p->crop = visible_rect(d, s, qi, &pix);
	if (!fps)
		m2m_get_frame_rate(&s->m2m, M2M_SRC, &fps);
	p->frame_rate = htole32(fps);
	n = host_planes(&pix, pl);
	p->num_planes = htole32(n);
	for (unsigned i = 0; i < n; i++) {
		p->plane_formats[i].plane_size = htole32(pl[i].size);
		p->plane_formats[i].stride = htole32(pl[i].stride);
	}
}

static void cmd_get_params(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
			   size_t len)
{
	struct vv_stream *s = stream_find(d, rd32(req + 4));
	int qi = queue_index(rd32(req + 8));
	bool ext = rd32(req) == VIRTIO_VIDEO_CMD_GET_PARAMS_EXT;
	struct virtio_video_get_params_ext_resp r = { 0 };

	if (qi < 0) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, s->id);
		return;
	}
	r.hdr.type = htole32(VIRTIO_VIDEO_RESP_OK_GET_PARAMS);
	r.hdr.stream_id = htole32(s->id);
	fill_params(d, s, qi, &r.params.base);
	r.params.resource_type = htole32(VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES);
	respond(d, c, &r, ext ? sizeof(r) : sizeof(struct virtio_video_get_params_resp));
}

/* Apply the guest's params to queue qi (format, size, crop, frame rate).
 * What the codec adjusts is read back by the guest with GET_PARAMS. */
static void apply_params(struct vv_dev *d, struct vv_stream *s, int qi, const uint8_t *p,
			 uint32_t fourcc)
{
	bool raw = qi != (int)coded_queue(d);
	struct m2m_pix pix;
	int r;

	if (m2m_get_fmt(&s->m2m, (enum m2m_queue)qi, &pix))
		return;
	pix.pixfmt = fourcc;
	if (is_encoder(d) ? raw : !raw) {
		/* the side whose size the guest decides */
		if (rd32(p + 8) && rd32(p + 12)) {
			pix.width = rd32(p + 8);
			pix.height = rd32(p + 12);
		}
	}
	if (!raw && rd32(p + 48))
		pix.sizeimage[0] = rd32(p + 48);	/* plane_formats[0].plane_size */
	r = m2m_set_fmt(&s->m2m, (enum m2m_queue)qi, &pix);
	if (r)
		vu_log(VU_WARN, "stream %u: S_FMT %s: %s", s->id, m2m_queue_name(qi), strerror(-r));
	if (is_encoder(d) && raw) {
		/* dev-encoder.rst, Initialization step 4: the visible area */
		struct m2m_rect crop = { (int32_t)rd32(p + 24), (int32_t)rd32(p + 28),
					 rd32(p + 32), rd32(p + 36) };

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


/* Bounds for what SET_PARAMS may hand to the codec; the codec adjusts values
 * inside them, and the guest reads the result back with GET_PARAMS. */
static bool params_sane(const uint8_t *p)
{
	uint32_t w = rd32(p + 8), h = rd32(p + 12);
	uint32_t cl = rd32(p + 24), ct = rd32(p + 28), cw = rd32(p + 32), ch = rd32(p + 36);

	if (w > VV_MAX_DIM || h > VV_MAX_DIM || rd32(p + 40) > VV_MAX_FPS ||
	    rd32(p + 48) > VV_MAX_PLANE_SIZE)
		return false;
	/* a crop, when given, lies inside the frame */
	return !cw || (cl <= w && cw <= w - cl && ct <= h && ch <= h - ct);
}

static void cmd_set_params(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
			   size_t len)
{
	struct vv_stream *s = stream_find(d, rd32(req + 4));
	const uint8_t *p = req + 8;
	int qi = queue_index(rd32(p));
	int fi = fmt_by_virtio(rd32(p + 4));
	uint32_t fps = rd32(p + 40);

	if (qi < 0 || fi < 0 || is_coded(formats[fi].virtio) != (qi == (int)coded_queue(d)) ||
	    !params_sane(p)) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, s->id);
		return;
	}
	if (fps)
		s->frame_rate = fps;
	/* Buffers allocated: the format is fixed until they are destroyed; a
	 * decoder's capture format exists only after the first header. */
	if (!s->q[qi].allocated && (qi != M2M_DST || s->fmt_known))
		apply_params(d, s, qi, p, formats[fi].fourcc);
	respond_hdr(d, c, VIRTIO_VIDEO_RESP_OK_NODATA, s->id);
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

static uint32_t ctl_error(int r)
{
	return r == -ERANGE || r == -EBUSY ? VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER
					   : VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL;
}

/* QUERY_CONTROL: the profiles or levels the codec offers for a format
 * (VIDIOC_QUERYCTRL + QUERYMENU on a scratch context of the device). */
static void cmd_query_control(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
			      size_t len)
{
	uint32_t sid = rd32(req + 4);
	const struct vv_menu *m = menu_of(rd32(req + 16), rd32(req + 8));
	struct {
		struct virtio_video_query_control_resp h;
		le32 values[32];
	} r = { 0 };
	struct m2m_ctx ctx;
	int32_t min, max, def;
	uint32_t n = 0;

	if (!m || m2m_open(&ctx, d->devpath, d->info.mplane)) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL, sid);
		return;
	}
	if (m2m_query_ctrl(&ctx, m->cid, &min, &max, &def) == 0)
		for (unsigned i = 0; i < m->n && n < 32; i++)
			if (m->v4l2[i] >= min && m->v4l2[i] <= max &&
			    m2m_menu_has(&ctx, m->cid, m->v4l2[i]))
				r.values[n++] = htole32(m->base + i);
	m2m_close(&ctx);
	if (!n) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL, sid);
		return;
	}
	r.h.hdr.type = htole32(VIRTIO_VIDEO_RESP_OK_QUERY_CONTROL);
	r.h.hdr.stream_id = htole32(sid);
	r.h.num = htole32(n);
	respond(d, c, &r, sizeof(r.h) + 4 * n);
}

/* A decoder's PROFILE/LEVEL when its codec has no such control: the
 * format's first, which the guest driver only uses as a default. */
static int default_control(const struct vv_stream *s, uint32_t ctl, uint32_t *value)
{
	const struct vv_menu *m = menu_of(s->coded_format, ctl);

	if (!m)
		return -EINVAL;
	*value = m->base;
	return 0;
}

static void cmd_get_control(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
			    size_t len)
{
	struct vv_stream *s = stream_find(d, rd32(req + 4));
	uint32_t ctl = rd32(req + 8), cid = plain_cid(ctl), value = 0;
	const struct vv_menu *m = menu_of(s->coded_format, ctl);
	struct virtio_video_get_control_resp r = { 0 };
	int32_t v;
	int ret = -EINVAL;

	if (m) {
		ret = m2m_get_ctrl(&s->m2m, m->cid, &v);
		for (unsigned i = 0; !ret && i < m->n; i++)
			if (m->v4l2[i] == v) {
				value = m->base + i;
				break;
			}
		if (!ret && !value)
			ret = -ERANGE;
	} else if (cid && ctl != VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME) {
		ret = m2m_get_ctrl(&s->m2m, cid, &v);
		value = (uint32_t)v;
	}
	if (ret && !is_encoder(d))
		ret = default_control(s, ctl, &value);
	if (ret) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL, s->id);
		return;
	}
	r.hdr.type = htole32(VIRTIO_VIDEO_RESP_OK_GET_CONTROL);
	r.hdr.stream_id = htole32(s->id);
	r.value = htole32(value);
	respond(d, c, &r, sizeof(r));
}

static void cmd_set_control(struct vv_dev *d, struct vu_chain *c, const uint8_t *req,
			    size_t len)
{
	uint32_t ctl, value, cid;
	const struct vv_menu *m;
	struct vv_stream *s;
	int ret = -EINVAL;

	if (len != VIRTIO_VIDEO_SET_CONTROL_SHORT_SIZE &&
	    len != sizeof(struct virtio_video_set_control)) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, rd32(req + 4));
		return;
	}
	s = stream_find(d, rd32(req + 4));
	ctl = rd32(req + 8);
	/* FORCE_KEYFRAME may come without a value (16 bytes) */
	if (len == VIRTIO_VIDEO_SET_CONTROL_SHORT_SIZE && ctl != VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME) {
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, s->id);
		return;
	}
	value = len == VIRTIO_VIDEO_SET_CONTROL_SHORT_SIZE ? 1 : rd32(req + 16);
	m = menu_of(s->coded_format, ctl);
	cid = plain_cid(ctl);
	if (m) {
		if (value < m->base || value - m->base >= m->n) {
			respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, s->id);
			return;
		}
		ret = m2m_set_ctrl(&s->m2m, m->cid, m->v4l2[value - m->base]);
	} else if (cid && value <= INT32_MAX) {
		ret = m2m_set_ctrl(&s->m2m, cid, ctl == VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME ? 1
											 : (int32_t)value);
	}
	if (ret)
		vu_log(VU_DEBUG, "stream %u: control %u not applied: %s", s->id, ctl, strerror(-ret));
	respond_hdr(d, c, ret ? ctl_error(ret) : VIRTIO_VIDEO_RESP_OK_NODATA, s->id);
}

/* The dispatch table is the map of the protocol. */
static const struct vv_cmd cmds[CMD_COUNT] = {
	[CMD_INDEX(VIRTIO_VIDEO_CMD_QUERY_CAPABILITY)] = {
		"QUERY_CAPABILITY", sizeof(struct virtio_video_query_capability),
		cmd_query_capability, false },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_STREAM_CREATE)] = {
		"STREAM_CREATE", sizeof(struct virtio_video_stream_create),
		cmd_stream_create, false },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_STREAM_DESTROY)] = {
		"STREAM_DESTROY", sizeof(struct virtio_video_cmd_hdr),
		cmd_stream_destroy, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_STREAM_DRAIN)] = {
		"STREAM_DRAIN", sizeof(struct virtio_video_cmd_hdr),
		cmd_stream_drain, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_RESOURCE_CREATE)] = {
		"RESOURCE_CREATE", 0, cmd_resource_create, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_RESOURCE_QUEUE)] = {
		"RESOURCE_QUEUE", sizeof(struct virtio_video_resource_queue),
		cmd_resource_queue, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL)] = {
		"RESOURCE_DESTROY_ALL", sizeof(struct virtio_video_queue_cmd),
		cmd_resource_destroy_all, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_QUEUE_CLEAR)] = {
		"QUEUE_CLEAR", sizeof(struct virtio_video_queue_cmd),
		cmd_queue_clear, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_GET_PARAMS)] = {
		"GET_PARAMS", sizeof(struct virtio_video_queue_cmd),
		cmd_get_params, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_SET_PARAMS)] = {
		"SET_PARAMS", sizeof(struct virtio_video_set_params),
		cmd_set_params, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_QUERY_CONTROL)] = {
		"QUERY_CONTROL", sizeof(struct virtio_video_query_control),
		cmd_query_control, false },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_GET_CONTROL)] = {
		"GET_CONTROL", sizeof(struct virtio_video_get_control),
		cmd_get_control, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_SET_CONTROL)] = {
		"SET_CONTROL", 0, cmd_set_control, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_GET_PARAMS_EXT)] = {
		"GET_PARAMS_EXT", sizeof(struct virtio_video_queue_cmd),
		cmd_get_params, true },
	[CMD_INDEX(VIRTIO_VIDEO_CMD_SET_PARAMS_EXT)] = {
		"SET_PARAMS_EXT", sizeof(struct virtio_video_set_params_ext),
		cmd_set_params, true },
};

static void dispatch(struct vv_dev *d, struct vu_chain *c)
{
	const uint8_t *req = c->req;
	size_t len = c->req_len;
	uint32_t type, sid, idx;
	const struct vv_cmd *cmd;

	if (len < sizeof(struct virtio_video_cmd_hdr)) {
		vu_log(VU_WARN, "command of %zu bytes, shorter than its header", len);
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, 0);
		return;
	}
	type = rd32(req);
	sid = rd32(req + 4);
	idx = type - VIRTIO_VIDEO_CMD_QUERY_CAPABILITY;
	cmd = (type >= VIRTIO_VIDEO_CMD_QUERY_CAPABILITY && idx < CMD_COUNT) ? &cmds[idx] : NULL;
	if (!cmd || !cmd->fn) {
		vu_log(VU_WARN, "unknown command 0x%x (stream %u)", type, sid);
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION, sid);
		return;
	}
	vu_log(VU_DEBUG, "stream %u: %s", sid, cmd->name);
	if (cmd->len && len != cmd->len) {
		vu_log(VU_WARN, "stream %u: %s of %zu bytes, expected %zu", sid, cmd->name, len,
		       cmd->len);
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, sid);
		return;
	}
	if (cmd->needs_stream && !stream_find(d, sid)) {
		vu_log(VU_WARN, "%s for unknown stream %u", cmd->name, sid);
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, sid);
		return;
	}
	cmd->fn(d, c, req, len);
	/* Every handler answers or parks the chain (both leave c->req NULL).
	 * Anything else is our bug; the guest still gets its one answer. */
	if (c->req) {
		vu_log(VU_ERR, "stream %u: %s left unanswered", sid, cmd->name);
		respond_hdr(d, c, VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION, sid);
	}
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
		if (d->streams[i].state == VV_STREAM_OPEN) {
			stream_release(d, &d->streams[i], false);
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
