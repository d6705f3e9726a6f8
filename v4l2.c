/* SPDX-License-Identifier: MIT */
/*
 * m2m: one open file of a V4L2 mem2mem stateful codec. See v4l2.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/videodev2.h>

#include "config.h"
#if CONFIG_VUV_DMABUF
#include <linux/dma-buf.h>
#include <linux/udmabuf.h>
#endif
#include "v4l2.h"

_Static_assert(M2M_MAX_PLANES == VIDEO_MAX_PLANES, "plane count");

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;

	do
		r = ioctl(fd, req, arg);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

const char *m2m_fourcc(uint32_t f, char buf[5])
{
	for (int i = 0; i < 4; i++) {
		char c = (char)((f >> (8 * i)) & 0xff);
		buf[i] = (c >= 0x20 && c < 0x7f) ? c : '.';
	}
	buf[4] = '\0';
	return buf;
}

const char *m2m_queue_name(enum m2m_queue q)
{
	static const char *const names[] = {
		[M2M_SRC] = "output",
		[M2M_DST] = "capture",
	};
	return q <= M2M_DST ? names[q] : "?";
}

const char *m2m_memory_name(enum m2m_memory m)
{
	static const char *const names[] = {
		[M2M_MEM_MMAP] = "mmap",
		[M2M_MEM_USERPTR] = "userptr",
		[M2M_MEM_DMABUF] = "dmabuf",
	};
	return m <= M2M_MEM_DMABUF ? names[m] : "?";
}

static const uint32_t v4l2_memory[] = {
	[M2M_MEM_MMAP] = V4L2_MEMORY_MMAP,
	[M2M_MEM_USERPTR] = V4L2_MEMORY_USERPTR,
	[M2M_MEM_DMABUF] = V4L2_MEMORY_DMABUF,
};

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
	memset(ctx, 0, sizeof(*ctx));
	set_types(ctx, mplane);
	ctx->bounce_fd[M2M_SRC] = ctx->bounce_fd[M2M_DST] = -1;
	ctx->fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	return ctx->fd < 0 ? -errno : 0;
}

static void unmap_queue(struct m2m_ctx *ctx, enum m2m_queue q)
{
	for (unsigned i = 0; i < M2M_MAX_BUFFERS; i++) {
		for (unsigned p = 0; p < M2M_MAX_PLANES; p++) {
			struct m2m_plane_map *m = &ctx->map[q][i][p];

			if (m->addr) {
				munmap(m->addr, m->length);
				if (m->dmabuf >= 0)
					close(m->dmabuf);
			}
			*m = (struct m2m_plane_map){ NULL, 0, 0, -1, false };
		}
	}
	if (ctx->bounce_fd[q] >= 0)
		close(ctx->bounce_fd[q]);
	ctx->bounce_fd[q] = -1;
	ctx->bounce_len[q] = 0;
	ctx->nbufs[q] = 0;
}

void m2m_close(struct m2m_ctx *ctx)
{
	if (ctx->fd < 0)
		return;
	unmap_queue(ctx, M2M_SRC);
	unmap_queue(ctx, M2M_DST);
	close(ctx->fd);
	ctx->fd = -1;
}

/* ---- formats -------------------------------------------------------------- */

static void pix_from_v4l2(const struct m2m_ctx *ctx, const struct v4l2_format *f,
			  struct m2m_pix *pix)
{
	memset(pix, 0, sizeof(*pix));
	if (ctx->mplane) {
		const struct v4l2_pix_format_mplane *mp = &f->fmt.pix_mp;

		pix->pixfmt = mp->pixelformat;
		pix->width = mp->width;
		pix->height = mp->height;
		pix->num_planes = mp->num_planes;
		if (pix->num_planes > M2M_MAX_PLANES)
			pix->num_planes = M2M_MAX_PLANES;
		for (unsigned i = 0; i < pix->num_planes; i++) {
			pix->sizeimage[i] = mp->plane_fmt[i].sizeimage;
			pix->bytesperline[i] = mp->plane_fmt[i].bytesperline;
		}
	} else {
		pix->pixfmt = f->fmt.pix.pixelformat;
		pix->width = f->fmt.pix.width;
		pix->height = f->fmt.pix.height;
		pix->num_planes = 1;
		pix->sizeimage[0] = f->fmt.pix.sizeimage;
		pix->bytesperline[0] = f->fmt.pix.bytesperline;
	}
}

int m2m_get_fmt(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_pix *pix)
{
	struct v4l2_format f = { .type = ctx->buf_type[q] };
	int r = xioctl(ctx->fd, VIDIOC_G_FMT, &f);

	if (r == 0)
		pix_from_v4l2(ctx, &f, pix);
	return r;
}

/* S_FMT with the fields that matter for a codec queue: fourcc, size, and
 * (coded side) sizeimage. The driver's answer is written back to *pix. */
int m2m_set_fmt(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_pix *pix)
{
	struct v4l2_format f = { .type = ctx->buf_type[q] };
	int r;

	if (ctx->mplane) {
		struct v4l2_pix_format_mplane *mp = &f.fmt.pix_mp;

		mp->pixelformat = pix->pixfmt;
		mp->width = pix->width;
		mp->height = pix->height;
		mp->field = V4L2_FIELD_NONE;
		mp->num_planes = pix->num_planes ? (uint8_t)pix->num_planes : 1;
		for (unsigned i = 0; i < mp->num_planes && i < M2M_MAX_PLANES; i++) {
			mp->plane_fmt[i].sizeimage = pix->sizeimage[i];
			mp->plane_fmt[i].bytesperline = pix->bytesperline[i];
		}
	} else {
		f.fmt.pix.pixelformat = pix->pixfmt;
		f.fmt.pix.width = pix->width;
		f.fmt.pix.height = pix->height;
		f.fmt.pix.field = V4L2_FIELD_NONE;
		f.fmt.pix.sizeimage = pix->sizeimage[0];
		f.fmt.pix.bytesperline = pix->bytesperline[0];
	}
	r = xioctl(ctx->fd, VIDIOC_S_FMT, &f);
	if (r == 0)
		pix_from_v4l2(ctx, &f, pix);
	return r;
}

int m2m_get_selection(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t target,
		      struct m2m_rect *r)
{
	/* The selection API takes the single-planar type names. */
	struct v4l2_selection s = {
		.type = q == M2M_SRC ? V4L2_BUF_TYPE_VIDEO_OUTPUT
				     : V4L2_BUF_TYPE_VIDEO_CAPTURE,
		.target = target,
	};
	int ret = xioctl(ctx->fd, VIDIOC_G_SELECTION, &s);

	if (ret == 0) {
		r->left = s.r.left;
		r->top = s.r.top;
		r->width = s.r.width;
		r->height = s.r.height;
	}
	return ret;
}

int m2m_set_selection(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t target,
		      struct m2m_rect *r)
{
	struct v4l2_selection s = {
		.type = q == M2M_SRC ? V4L2_BUF_TYPE_VIDEO_OUTPUT
				     : V4L2_BUF_TYPE_VIDEO_CAPTURE,
		.target = target,
		.r = { .left = r->left, .top = r->top,
		       .width = r->width, .height = r->height },
	};
	int ret = xioctl(ctx->fd, VIDIOC_S_SELECTION, &s);

	if (ret == 0) {
		r->left = s.r.left;
		r->top = s.r.top;
		r->width = s.r.width;
		r->height = s.r.height;
	}
	return ret;
}

int m2m_set_frame_rate(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t fps)
{
	struct v4l2_streamparm p = { .type = ctx->buf_type[q] };

	if (fps == 0)
		return -EINVAL;
	/* timeperframe lives in the same place for output and capture */
	p.parm.output.timeperframe.numerator = 1;
	p.parm.output.timeperframe.denominator = fps;
	return xioctl(ctx->fd, VIDIOC_S_PARM, &p);
}

int m2m_get_frame_rate(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t *fps)
{
	struct v4l2_streamparm p = { .type = ctx->buf_type[q] };
	int r = xioctl(ctx->fd, VIDIOC_G_PARM, &p);
	struct v4l2_fract *t = &p.parm.output.timeperframe;

	if (r)
		return r;
	*fps = t->numerator ? t->denominator / t->numerator : 0;
	return 0;
}

/* ---- probing -------------------------------------------------------------- */

static void enum_sizes(int fd, struct m2m_format *f)
{
	struct v4l2_frmsizeenum fs = { .pixel_format = f->pixfmt };

	for (fs.index = 0; f->nsizes < M2M_MAX_SIZES; fs.index++) {
		struct m2m_frmsize *s = &f->sizes[f->nsizes];

		if (xioctl(fd, VIDIOC_ENUM_FRAMESIZES, &fs))
			break;
		if (fs.type == V4L2_FRMSIZE_TYPE_DISCRETE) {
			s->min_w = s->max_w = fs.discrete.width;
			s->min_h = s->max_h = fs.discrete.height;
			s->step_w = s->step_h = 0;
		} else {
			s->min_w = fs.stepwise.min_width;
			s->max_w = fs.stepwise.max_width;
			s->step_w = fs.stepwise.step_width;
			s->min_h = fs.stepwise.min_height;
			s->max_h = fs.stepwise.max_height;
			s->step_h = fs.stepwise.step_height;
		}
		f->nsizes++;
		if (fs.type != V4L2_FRMSIZE_TYPE_DISCRETE)
			break;	/* stepwise/continuous: one entry only */
	}
}

static void enum_rates(int fd, struct m2m_format *f)
{
	struct v4l2_frmivalenum fi = { .pixel_format = f->pixfmt };

	if (!f->nsizes)
		return;
	fi.width = f->sizes[0].max_w;
	fi.height = f->sizes[0].max_h;
	for (fi.index = 0; f->nrates < M2M_MAX_RATES; fi.index++) {
		struct m2m_frmrate *r = &f->rates[f->nrates];

		if (xioctl(fd, VIDIOC_ENUM_FRAMEINTERVALS, &fi))
			break;
		if (fi.type == V4L2_FRMIVAL_TYPE_DISCRETE) {
			if (!fi.discrete.numerator)
				continue;
			r->min = r->max = fi.discrete.denominator / fi.discrete.numerator;
			r->step = 0;
		} else {
			/* interval max = slowest rate */
			struct v4l2_fract *lo = &fi.stepwise.max, *hi = &fi.stepwise.min;

			if (!lo->numerator || !hi->numerator)
				break;
			r->min = lo->denominator / lo->numerator;
			r->max = hi->denominator / hi->numerator;
			r->step = 1;
		}
		f->nrates++;
		if (fi.type != V4L2_FRMIVAL_TYPE_DISCRETE)
			break;
	}
}

/* Append the formats the driver lists now for queue q; return their bit
 * mask in info->fmt[q]. */
static uint64_t enum_formats(int fd, uint32_t type, struct m2m_info *info,
			     enum m2m_queue q)
{
	struct v4l2_fmtdesc d = { .type = type };
	uint64_t mask = 0;

	for (d.index = 0; d.index < M2M_MAX_FORMATS; d.index++) {
		unsigned i;

		if (xioctl(fd, VIDIOC_ENUM_FMT, &d))
			break;
		for (i = 0; i < info->nfmt[q]; i++)
			if (info->fmt[q][i].pixfmt == d.pixelformat)
				break;
		if (i == info->nfmt[q]) {
			struct m2m_format *f;

			if (i == M2M_MAX_FORMATS)
				continue;
			f = &info->fmt[q][info->nfmt[q]++];
			memset(f, 0, sizeof(*f));
			f->pixfmt = d.pixelformat;
			f->flags = d.flags;
			enum_sizes(fd, f);
			enum_rates(fd, f);
		}
		mask |= 1ull << i;
	}
	return mask;
}

/* For every coded format, set it on its queue and list what the other queue
 * offers with it: that gives the pairing masks of the capabilities. */
static int probe_pairs(int fd, struct m2m_ctx *ctx, struct m2m_info *info,
		       enum m2m_queue coded)
{
	enum m2m_queue raw = coded == M2M_SRC ? M2M_DST : M2M_SRC;

	for (unsigned j = 0; j < info->nfmt[coded]; j++) {
		struct m2m_format *cf = &info->fmt[coded][j];
		struct m2m_pix pix = {
			.pixfmt = cf->pixfmt, .width = 640, .height = 480,
			.num_planes = 1,
		};
		uint64_t m;

		if (!(cf->flags & V4L2_FMT_FLAG_COMPRESSED))
			continue;
		if (cf->nsizes) {
			pix.width = cf->sizes[0].min_w;
			pix.height = cf->sizes[0].min_h;
		}
		if (m2m_set_fmt(ctx, coded, &pix))
			continue;
		m = enum_formats(fd, ctx->buf_type[raw], info, raw);
		cf->pair_mask |= m;
		for (unsigned i = 0; i < info->nfmt[raw]; i++)
			if (m & (1ull << i))
				info->fmt[raw][i].pair_mask |= 1ull << j;
	}
	return 0;
}

static bool any_compressed(const struct m2m_info *info, enum m2m_queue q)
{
	for (unsigned i = 0; i < info->nfmt[q]; i++)
		if (info->fmt[q][i].flags & V4L2_FMT_FLAG_COMPRESSED)
			return true;
	return false;
}

int m2m_probe(const char *path, struct m2m_info *info)
{
	struct v4l2_capability cap = { 0 };
	struct m2m_ctx ctx;
	uint32_t caps;
	int r;

	memset(info, 0, sizeof(*info));
	r = m2m_open(&ctx, path, false);
	if (r)
		return r;
	r = xioctl(ctx.fd, VIDIOC_QUERYCAP, &cap);
	if (r == -ENOTTY || r == -EINVAL)
		r = -ENODEV;	/* not a V4L2 node at all */
	if (r)
		goto out_close;
	caps = (cap.capabilities & V4L2_CAP_DEVICE_CAPS) ? cap.device_caps
							 : cap.capabilities;
	memcpy(info->driver, cap.driver, sizeof(info->driver) - 1);
	memcpy(info->card, cap.card, sizeof(info->card) - 1);
	memcpy(info->bus_info, cap.bus_info, sizeof(info->bus_info) - 1);
	r = -ENODEV;
	if (!(caps & V4L2_CAP_STREAMING))
		goto out_close;
	if (caps & V4L2_CAP_VIDEO_M2M_MPLANE)
		info->mplane = true;
	else if (!(caps & V4L2_CAP_VIDEO_M2M))
		goto out_close;
	set_types(&ctx, info->mplane);

	enum_formats(ctx.fd, ctx.buf_type[M2M_SRC], info, M2M_SRC);
	enum_formats(ctx.fd, ctx.buf_type[M2M_DST], info, M2M_DST);
	r = -ENOTSUP;
	if (any_compressed(info, M2M_SRC) && !any_compressed(info, M2M_DST)) {
		/* dev-decoder.rst: a stateful decoder accepts V4L2_DEC_CMD_STOP;
		 * a stateless one only FLUSH. */
		if (m2m_decoder_cmd(&ctx, V4L2_DEC_CMD_STOP, true))
			goto out_close;
		info->role = M2M_ROLE_DECODER;
		probe_pairs(ctx.fd, &ctx, info, M2M_SRC);
	} else if (any_compressed(info, M2M_DST) && !any_compressed(info, M2M_SRC)) {
		if (m2m_encoder_cmd(&ctx, V4L2_ENC_CMD_STOP, true))
			goto out_close;
		info->role = M2M_ROLE_ENCODER;
		probe_pairs(ctx.fd, &ctx, info, M2M_DST);
	} else {
		goto out_close;
	}
	r = 0;
out_close:
	m2m_close(&ctx);
	return r;
}

/* ---- buffers -------------------------------------------------------------- */

#if CONFIG_VUV_DMABUF
/* Bounce memory of a DMABUF queue (CONFIG_VUV_DMABUF): the copy path needs
 * memory the daemon can write and the codec can take as a dmabuf. The
 * queue's buffers get one memfd of the daemon's, each plane at its own
 * page-aligned offset, mapped for the copies and sealed against shrinking
 * and growing once the queue is allocated (udmabuf wants F_SEAL_SHRINK); a
 * plane becomes a udmabuf the first time its buffer is queued without a
 * dmabuf of the guest's (most buffers of such a queue never are, and their
 * pages are never allocated). The CPU owns the memory between DQBUF and
 * QBUF (DMA_BUF_IOCTL_SYNC START and END, which keep the caches of
 * non-coherent Arm SoCs right). */
static int bounce_alloc(struct m2m_ctx *ctx, enum m2m_queue q, size_t len, uint64_t *off)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE), size = (len + pg - 1) / pg * pg;

	if (ctx->bounce_fd[q] < 0) {
		ctx->bounce_fd[q] = memfd_create("vhost-user-video-bounce",
						 MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (ctx->bounce_fd[q] < 0)
			return -errno;
	}
	*off = ctx->bounce_len[q];
	if (ftruncate(ctx->bounce_fd[q], (off_t)(*off + size)))
		return -errno;
	ctx->bounce_len[q] = *off + size;
	return ctx->bounce_fd[q];
}

static int bounce_seal(struct m2m_ctx *ctx, enum m2m_queue q)
{
	return ctx->bounce_fd[q] < 0 || !fcntl(ctx->bounce_fd[q], F_ADD_SEALS, F_SEAL_SHRINK |
					       F_SEAL_GROW | F_SEAL_SEAL) ? 0 : -errno;
}

static int cpu_sync(struct m2m_plane_map *m, bool cpu)
{
	struct dma_buf_sync sync = { (cpu ? DMA_BUF_SYNC_START : DMA_BUF_SYNC_END) |
				     DMA_BUF_SYNC_RW };
	int r = m->cpu == cpu ? 0 : xioctl(m->dmabuf, DMA_BUF_IOCTL_SYNC, &sync);

	if (!r)
		m->cpu = cpu;
	return r;
}

/* Plane m's bounce memory as a dmabuf, handed to the device: the dmabuf fd
 * (kept by the plane) or -errno. */
static int bounce_dmabuf(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_plane_map *m)
{
	static int udmabuf = -1;	/* /dev/udmabuf, opened once (QBUF: under the device lock) */
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	struct udmabuf_create req = {
		.memfd = (uint32_t)ctx->bounce_fd[q], .flags = UDMABUF_FLAGS_CLOEXEC,
		.offset = m->off, .size = (m->length + pg - 1) / pg * pg,
	};
	int r;

	if (m->dmabuf < 0) {
		if (udmabuf < 0 && (udmabuf = open("/dev/udmabuf", O_RDWR | O_CLOEXEC)) < 0)
			return -errno;
		r = ioctl(udmabuf, UDMABUF_CREATE, &req);
		if (r < 0)
			return -errno;
		m->dmabuf = r;
		m->cpu = false;
		r = cpu_sync(m, true);	/* (the first START maps it: what the CPU wrote is kept) */
		if (r)
			return r;
	}
	r = cpu_sync(m, false);
	return r ? r : m->dmabuf;
}
#else
static int bounce_alloc(struct m2m_ctx *ctx, enum m2m_queue q, size_t len, uint64_t *off)
{
	(void)ctx, (void)q, (void)len, (void)off;
	return -ENOTSUP;
}

static int bounce_seal(struct m2m_ctx *ctx, enum m2m_queue q)
{
	(void)ctx, (void)q;
	return 0;
}

static int bounce_dmabuf(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_plane_map *m)
{
	(void)ctx, (void)q, (void)m;
	return -ENOTSUP;
}

static int cpu_sync(struct m2m_plane_map *m, bool cpu)
{
	(void)m, (void)cpu;
	return 0;
}
#endif

static int map_buffer(struct m2m_ctx *ctx, enum m2m_queue q, unsigned index)
{
	struct v4l2_plane planes[M2M_MAX_PLANES];
	struct v4l2_buffer b = {
		.type = ctx->buf_type[q],
		.memory = v4l2_memory[ctx->mem[q]],
		.index = index,
	};
	bool own = ctx->mem[q] != M2M_MEM_MMAP;
	unsigned n = 1;
	int r;

	memset(planes, 0, sizeof(planes));
	if (ctx->mplane) {
		b.m.planes = planes;
		b.length = M2M_MAX_PLANES;
	}
	r = xioctl(ctx->fd, VIDIOC_QUERYBUF, &b);
	if (r)
		return r;
	if (ctx->mplane)
		n = b.length < M2M_MAX_PLANES ? b.length : M2M_MAX_PLANES;
	ctx->num_planes[q] = n;
	for (unsigned p = 0; p < n; p++) {
		size_t len = ctx->mplane ? planes[p].length : b.length;
		off_t off = ctx->mplane ? planes[p].m.mem_offset : b.m.offset;
		uint64_t boff = 0;
		void *a;

		/* bounce memory: pages only where the copy path writes */
		if (ctx->mem[q] == M2M_MEM_DMABUF) {
			if ((r = bounce_alloc(ctx, q, len, &boff)) < 0)
				return r;
			a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, r, (off_t)boff);
		} else if (own) {
			a = mmap(NULL, len, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		} else {
			a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, ctx->fd, off);
		}
		if (a == MAP_FAILED)
			return -errno;
		ctx->map[q][index][p] = (struct m2m_plane_map){ a, len, boff, -1, true };
	}
	return 0;
}

int m2m_alloc_buffers(struct m2m_ctx *ctx, enum m2m_queue q, unsigned *count)
{
	struct v4l2_requestbuffers rb = {
		.count = *count < M2M_MAX_BUFFERS ? *count : M2M_MAX_BUFFERS,
		.type = ctx->buf_type[q],
		.memory = v4l2_memory[ctx->mem[q]],
	};
	int r;

	unmap_queue(ctx, q);
	r = xioctl(ctx->fd, VIDIOC_REQBUFS, &rb);
	if (r && *count && ctx->mem[q] != M2M_MEM_MMAP) {
		/* the driver refuses that memory: the copy path's MMAP */
		ctx->mem[q] = M2M_MEM_MMAP;
		rb.memory = V4L2_MEMORY_MMAP;
		rb.count = *count < M2M_MAX_BUFFERS ? *count : M2M_MAX_BUFFERS;
		r = xioctl(ctx->fd, VIDIOC_REQBUFS, &rb);
	}
	if (r)
		return r;
	ctx->buf_caps[q] = rb.capabilities;
	if (rb.count > M2M_MAX_BUFFERS)
		return -ENOMEM;	/* cannot happen with count <= VIDEO_MAX_FRAME */
	for (unsigned i = 0; i < rb.count && !r; i++)
		r = map_buffer(ctx, q, i);
	if (!r)
		r = bounce_seal(ctx, q);
	if (r) {
		unmap_queue(ctx, q);
		return r;
	}
	ctx->nbufs[q] = rb.count;
	*count = rb.count;
	return 0;
}

int m2m_query_buf_caps(struct m2m_ctx *ctx, enum m2m_queue q, uint32_t *caps)
{
	struct v4l2_requestbuffers rb = {
		.type = ctx->buf_type[q],
		.memory = V4L2_MEMORY_MMAP,
	};
	int r;

	unmap_queue(ctx, q);
	r = xioctl(ctx->fd, VIDIOC_REQBUFS, &rb);
	*caps = r ? 0 : rb.capabilities;
	return r;
}

static void ns_to_timeval(uint64_t ns, struct timeval *tv)
{
	tv->tv_sec = (time_t)(ns / 1000000000u);
	tv->tv_usec = (suseconds_t)((ns % 1000000000u) / 1000u);
}

int m2m_qbuf(struct m2m_ctx *ctx, enum m2m_queue q, const struct m2m_buf *mb)
{
	struct v4l2_plane planes[M2M_MAX_PLANES];
	struct v4l2_buffer b = {
		.type = ctx->buf_type[q],
		.memory = v4l2_memory[ctx->mem[q]],
		.index = mb->index,
		.flags = mb->flags,
		.field = V4L2_FIELD_NONE,
	};
	bool user = ctx->mem[q] == M2M_MEM_USERPTR;
	bool dma = CONFIG_VUV_DMABUF && ctx->mem[q] == M2M_MEM_DMABUF;
	uintptr_t ptr[M2M_MAX_PLANES];
	uint32_t len[M2M_MAX_PLANES];
	int fd[M2M_MAX_PLANES];

	if (mb->index >= ctx->nbufs[q] || (ctx->mem[q] == M2M_MEM_DMABUF && !dma))
		return -EINVAL;
	ns_to_timeval(mb->timestamp, &b.timestamp);
	memset(planes, 0, sizeof(planes));
	for (unsigned p = 0; p < ctx->num_planes[q]; p++) {
		struct m2m_plane_map *m = &ctx->map[q][mb->index][p];
		bool own = user ? !mb->userptr[p] : !dma || mb->dmabuf[p] < 0;

		ptr[p] = own ? (uintptr_t)m->addr : mb->userptr[p];
		len[p] = own ? (uint32_t)m->length : mb->length[p];
		fd[p] = own ? -1 : mb->dmabuf[p];
		if (dma && own && (fd[p] = bounce_dmabuf(ctx, q, m)) < 0)
			return fd[p];
	}
	if (ctx->mplane) {
		b.m.planes = planes;
		b.length = ctx->num_planes[q];
		for (unsigned p = 0; p < ctx->num_planes[q]; p++) {
			planes[p].bytesused = mb->bytesused[p];
			planes[p].length = len[p];
			if (user)
				planes[p].m.userptr = ptr[p];
			if (dma)
				planes[p].m.fd = fd[p];
		}
	} else {
		b.bytesused = mb->bytesused[0];
		if (user)
			b.m.userptr = ptr[0];
		if (dma)
			b.m.fd = fd[0];
		if (user || dma)
			b.length = len[0];
	}
	return xioctl(ctx->fd, VIDIOC_QBUF, &b);
}

int m2m_dqbuf(struct m2m_ctx *ctx, enum m2m_queue q, struct m2m_buf *mb)
{
	struct v4l2_plane planes[M2M_MAX_PLANES];
	struct v4l2_buffer b = {
		.type = ctx->buf_type[q],
		.memory = v4l2_memory[ctx->mem[q]],
	};
	int r;

	memset(planes, 0, sizeof(planes));
	if (ctx->mplane) {
		b.m.planes = planes;
		b.length = M2M_MAX_PLANES;
	}
	r = xioctl(ctx->fd, VIDIOC_DQBUF, &b);
	if (r)
		return r;
	memset(mb, 0, sizeof(*mb));
	mb->index = b.index;
	mb->flags = b.flags;
	mb->sequence = b.sequence;
	mb->timestamp = (uint64_t)b.timestamp.tv_sec * 1000000000u +
			(uint64_t)b.timestamp.tv_usec * 1000u;
	if (ctx->mplane) {
		mb->num_planes = b.length < M2M_MAX_PLANES ? b.length : M2M_MAX_PLANES;
		for (unsigned p = 0; p < mb->num_planes; p++) {
			mb->bytesused[p] = planes[p].bytesused;
			mb->data_offset[p] = planes[p].data_offset;
		}
	} else {
		mb->num_planes = 1;
		mb->bytesused[0] = b.bytesused;
	}
	if (mb->index >= ctx->nbufs[q])
		return -EIO;	/* the driver returned a buffer we never mapped */
	/* bounce memory the device had: the CPU's again, for the copy (a
	 * failed sync cannot undo the DQBUF: the buffer is the caller's) */
	for (unsigned p = 0; p < ctx->num_planes[q]; p++) {
		struct m2m_plane_map *m = &ctx->map[q][mb->index][p];

		if (m->dmabuf >= 0)
			(void)cpu_sync(m, true);
	}
	return 0;
}

int m2m_streamon(struct m2m_ctx *ctx, enum m2m_queue q)
{
	int type = (int)ctx->buf_type[q];
	int r = xioctl(ctx->fd, VIDIOC_STREAMON, &type);

	if (r == 0)
		ctx->streaming[q] = true;
	return r;
}

int m2m_streamoff(struct m2m_ctx *ctx, enum m2m_queue q)
{
	int type = (int)ctx->buf_type[q];
	int r = xioctl(ctx->fd, VIDIOC_STREAMOFF, &type);

	if (r == 0)
		ctx->streaming[q] = false;
	return r;
}

/* ---- events, commands, controls ------------------------------------------- */

int m2m_subscribe(struct m2m_ctx *ctx, uint32_t event_type)
{
	struct v4l2_event_subscription s = { .type = event_type };

	return xioctl(ctx->fd, VIDIOC_SUBSCRIBE_EVENT, &s);
}

int m2m_dqevent(struct m2m_ctx *ctx, uint32_t *type, uint32_t *changes)
{
	struct v4l2_event ev;
	int r;

	memset(&ev, 0, sizeof(ev));
	r = xioctl(ctx->fd, VIDIOC_DQEVENT, &ev);
	if (r)
		return r == -ENOENT ? -EAGAIN : r;
	*type = ev.type;
	*changes = ev.type == V4L2_EVENT_SOURCE_CHANGE ? ev.u.src_change.changes : 0;
	return 0;
}

int m2m_decoder_cmd(struct m2m_ctx *ctx, uint32_t cmd, bool try)
{
	struct v4l2_decoder_cmd c = { .cmd = cmd };

	return xioctl(ctx->fd, try ? VIDIOC_TRY_DECODER_CMD : VIDIOC_DECODER_CMD, &c);
}

int m2m_encoder_cmd(struct m2m_ctx *ctx, uint32_t cmd, bool try)
{
	struct v4l2_encoder_cmd c = { .cmd = cmd };

	return xioctl(ctx->fd, try ? VIDIOC_TRY_ENCODER_CMD : VIDIOC_ENCODER_CMD, &c);
}

int m2m_get_ctrl(struct m2m_ctx *ctx, uint32_t id, int32_t *value)
{
	struct v4l2_control c = { .id = id };
	int r = xioctl(ctx->fd, VIDIOC_G_CTRL, &c);

	if (r == 0)
		*value = c.value;
	return r;
}

int m2m_set_ctrl(struct m2m_ctx *ctx, uint32_t id, int32_t value)
{
	struct v4l2_control c = { .id = id, .value = value };

	return xioctl(ctx->fd, VIDIOC_S_CTRL, &c);
}

int m2m_query_ctrl(struct m2m_ctx *ctx, uint32_t id, int32_t *min, int32_t *max,
		   int32_t *def)
{
	struct v4l2_queryctrl q = { .id = id };
	int r = xioctl(ctx->fd, VIDIOC_QUERYCTRL, &q);

	if (r)
		return r;
	if (q.flags & V4L2_CTRL_FLAG_DISABLED)
		return -EINVAL;
	*min = q.minimum;
	*max = q.maximum;
	*def = q.default_value;
	return 0;
}

bool m2m_menu_has(struct m2m_ctx *ctx, uint32_t id, uint32_t index)
{
	struct v4l2_querymenu m = { .id = id, .index = index };

	return xioctl(ctx->fd, VIDIOC_QUERYMENU, &m) == 0;
}
