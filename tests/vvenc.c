/* SPDX-License-Identifier: MIT */
/*
 * vvenc: a guest encoder on top of vufront. See vvenc.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vvenc.h"

enum vvenc_state { ST_IDLE, ST_RUN, ST_DRAIN, ST_DONE, ST_FAILED };

struct vres {
	uint32_t id;
	struct vuf_sglist sg[VIRTIO_VIDEO_MAX_PLANES];
	unsigned nsg;
	bool queued;
	uint64_t token;
};

struct vvenc {
	struct vuf *v;
	const struct vvenc_raw *raw;
	FILE *out;
	struct vvenc_opts o;
	struct vvenc_result r;
	enum vvenc_state state;
	struct vres in[VVENC_MAX_RES];
	unsigned n_in;
	struct vres outr[VVENC_MAX_RES];
	unsigned n_out;
	unsigned next_frame;		/* input number, counted over every pass */
	unsigned pass;			/* 0, then 1..o.resume */
	bool drain_sent, clear_done;
	uint64_t drain_token;
	struct vvenc_frame *frames;
	unsigned frames_cap;
	uint8_t *inbuf;			/* one raw frame laid out per the INPUT params */
	size_t in_total;		/* sum of the INPUT plane sizes */
	uint32_t in_off[VIRTIO_VIDEO_MAX_PLANES];
	uint8_t *obuf;			/* one coded frame */
	size_t out_size;		/* OUTPUT plane_size */
	struct timespec t0;
};

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double since(const struct timespec *t0)
{
	return now_s() - ((double)t0->tv_sec + (double)t0->tv_nsec / 1e9);
}

__attribute__((format(printf, 2, 3)))
static void failf(struct vvenc *e, const char *fmt, ...)
{
	va_list ap;

	if (e->state == ST_FAILED)
		return;
	va_start(ap, fmt);
	vsnprintf(e->r.err, sizeof(e->r.err), fmt, ap);
	va_end(ap);
	e->state = ST_FAILED;
	if (e->o.verbose)
		fprintf(stderr, "vvenc %u: FAILED: %s\n", e->o.stream_id, e->r.err);
}

static const char *answer(struct vvenc *e, int t)
{
	return t < 0 ? vuf_error(e->v) : vuf_cmd_name((uint32_t)t);
}

/* ---- raw clips ------------------------------------------------------------ */

int vvenc_raw_load(struct vvenc_raw *r, const char *path, unsigned w, unsigned h, char *err,
		   size_t errlen)
{
	FILE *f;
	long sz;

	memset(r, 0, sizeof(*r));
	if (!w || !h || w % 2 || h % 2) {
		snprintf(err, errlen, "%s: frame size %ux%u is not even", path, w, h);
		return -1;
	}
	r->w = w;
	r->h = h;
	r->frame_size = (size_t)w * h * 3 / 2;
	f = fopen(path, "rb");
	if (!f || fseek(f, 0, SEEK_END) || (sz = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	if ((size_t)sz % r->frame_size) {
		snprintf(err, errlen, "%s: %ld bytes is not a whole number of %ux%u YU12 frames "
			 "(%zu bytes each)", path, sz, w, h, r->frame_size);
		fclose(f);
		return -1;
	}
	r->len = (size_t)sz;
	r->nframes = (unsigned)(r->len / r->frame_size);
	r->data = malloc(r->len ? r->len : 1);
	if (!r->data || fread(r->data, 1, r->len, f) != r->len) {
		snprintf(err, errlen, "cannot read %s", path);
		fclose(f);
		free(r->data);
		r->data = NULL;
		return -1;
	}
	fclose(f);
	return 0;
}

void vvenc_raw_free(struct vvenc_raw *r)
{
	free(r->data);
	memset(r, 0, sizeof(*r));
}

/* ---- resources -------------------------------------------------------------- */

static int alloc_sg(struct vvenc *e, size_t len, int region, struct vuf_sglist *sg)
{
	if (e->o.scatter)
		return vuf_alloc_scattered(e->v, len, sg);
	return vuf_alloc_contig(e->v, len, region, sg);
}

static void res_release(struct vres *r)
{
	for (unsigned i = 0; i < r->nsg; i++)
		vuf_sglist_free(&r->sg[i]);
	r->nsg = 0;
	r->queued = false;
}

/* Plane p of a YU12 frame: visible bytes per row and rows. */
static void plane_dims(const struct vvenc *e, unsigned p, size_t *row_bytes, size_t *rows)
{
	*row_bytes = p ? e->raw->w / 2 : e->raw->w;
	*rows = p ? e->raw->h / 2 : e->raw->h;
}

/* Set the raw format on the INPUT queue, then learn both layouts. */
static int setup_params(struct vvenc *e)
{
	const unsigned w = e->raw->w, h = e->raw->h;
	struct vuf_params *ip = &e->r.ip, *op = &e->r.op;
	int t;

	t = vuf_get_params(e->v, e->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, true, ip);
	if (t != VIRTIO_VIDEO_RESP_OK_GET_PARAMS) {
		failf(e, "GET_PARAMS_EXT input: %s", answer(e, t));
		return -1;
	}
	ip->queue_type = VIRTIO_VIDEO_QUEUE_TYPE_INPUT;
	ip->format = VIRTIO_VIDEO_FORMAT_YUV420;
	ip->frame_width = w;
	ip->frame_height = h;
	ip->crop.left = 0;
	ip->crop.top = 0;
	ip->crop.width = w;
	ip->crop.height = h;
	ip->frame_rate = e->o.frame_rate;
	t = vuf_set_params(e->v, e->o.stream_id, ip, true);
	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(e, "SET_PARAMS_EXT input (YUV420 %ux%u): %s", w, h, answer(e, t));
		return -1;
	}
	t = vuf_get_params(e->v, e->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, true, ip);
	if (t != VIRTIO_VIDEO_RESP_OK_GET_PARAMS) {
		failf(e, "GET_PARAMS_EXT input after SET_PARAMS_EXT: %s", answer(e, t));
		return -1;
	}
	t = vuf_get_params(e->v, e->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, true, op);
	if (t != VIRTIO_VIDEO_RESP_OK_GET_PARAMS) {
		failf(e, "GET_PARAMS_EXT output: %s", answer(e, t));
		return -1;
	}
	if (e->o.verbose) {
		fprintf(stderr, "vvenc %u: input %s %ux%u (visible %u,%u %ux%u), %u planes:",
			e->o.stream_id, vuf_format_name(ip->format), ip->frame_width,
			ip->frame_height, ip->crop.left, ip->crop.top, ip->crop.width,
			ip->crop.height, ip->num_planes);
		for (unsigned p = 0; p < ip->num_planes && p < VIRTIO_VIDEO_MAX_PLANES; p++)
			fprintf(stderr, " %u/%u", ip->plane[p].plane_size, ip->plane[p].stride);
		fprintf(stderr, ", min %u; output %s %ux%u, plane_size %u, min %u\n",
			ip->min_buffers, vuf_format_name(op->format), op->frame_width,
			op->frame_height, op->plane[0].plane_size, op->min_buffers);
	}
	if (ip->format != VIRTIO_VIDEO_FORMAT_YUV420) {
		failf(e, "input params: format %s after setting YUV420", vuf_format_name(ip->format));
		return -1;
	}
	if (ip->frame_width < w || ip->frame_height < h || ip->crop.left || ip->crop.top ||
	    ip->crop.width != w || ip->crop.height != h) {
		failf(e, "input params: frame %ux%u, visible %u,%u %ux%u after setting %ux%u",
		      ip->frame_width, ip->frame_height, ip->crop.left, ip->crop.top,
		      ip->crop.width, ip->crop.height, w, h);
		return -1;
	}
	if (ip->num_planes != 3) {
		failf(e, "input params: %u planes for YUV420, expected 3", ip->num_planes);
		return -1;
	}
	e->in_total = 0;
	for (unsigned p = 0; p < 3; p++) {
		size_t rb, rows;

		plane_dims(e, p, &rb, &rows);
		if (ip->plane[p].stride < rb || (uint64_t)ip->plane[p].stride * rows >
						    ip->plane[p].plane_size) {
			failf(e, "input params: plane %u of %u bytes, stride %u cannot hold %zu rows "
			      "of %zu bytes", p, ip->plane[p].plane_size, ip->plane[p].stride, rows, rb);
			return -1;
		}
		e->in_off[p] = (uint32_t)e->in_total;
		e->in_total += ip->plane[p].plane_size;
	}
	if (op->format != e->o.coded_format) {
		failf(e, "output params: format %s, the stream was created for %s",
		      vuf_format_name(op->format), vuf_format_name(e->o.coded_format));
		return -1;
	}
	if (op->num_planes < 1 || op->plane[0].plane_size == 0) {
		failf(e, "output params: %u planes, coded buffer size %u", op->num_planes,
		      op->plane[0].plane_size);
		return -1;
	}
	e->out_size = op->plane[0].plane_size;
	e->inbuf = malloc(e->in_total);
	e->obuf = malloc(e->out_size);
	if (!e->inbuf || !e->obuf) {
		failf(e, "out of memory");
		return -1;
	}
	return 0;
}

static int create_inputs(struct vvenc *e)
{
	const struct vuf_params *ip = &e->r.ip;
	int t;

	e->n_in = e->o.n_in;
	if (e->n_in < ip->min_buffers)
		e->n_in = ip->min_buffers < VVENC_MAX_RES ? ip->min_buffers : VVENC_MAX_RES;
	for (unsigned i = 0; i < e->n_in; i++) {
		struct vres *r = &e->in[i];
		uint32_t offs[VIRTIO_VIDEO_MAX_PLANES] = { 0 };

		r->id = i + 1;
		if (e->o.per_plane) {
			r->nsg = ip->num_planes;
			for (unsigned p = 0; p < ip->num_planes; p++)
				if (alloc_sg(e, ip->plane[p].plane_size, (int)((i + p) & 1), &r->sg[p]))
					goto nomem;
		} else {
			r->nsg = 1;
			if (alloc_sg(e, e->in_total, (int)(i & 1), &r->sg[0]))
				goto nomem;
			memcpy(offs, e->in_off, sizeof(offs));
		}
		t = vuf_resource_create(e->v, e->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, r->id,
					e->o.per_plane ? VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE
						       : VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER,
					ip->num_planes, offs, r->sg, r->nsg);
		if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
			failf(e, "RESOURCE_CREATE input %u (%s, %u planes, %zu bytes): %s", r->id,
			      e->o.per_plane ? "per-plane" : "single buffer", ip->num_planes,
			      e->in_total, answer(e, t));
			return -1;
		}
	}
	return 0;
nomem:
	failf(e, "guest memory full: %s", vuf_error(e->v));
	return -1;
}

static int queue_out(struct vvenc *e, struct vres *r)
{
	int t = vuf_resource_queue(e->v, e->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, r->id, 0,
				   0, NULL, &r->token);

	if (t < 0) {
		failf(e, "RESOURCE_QUEUE output %u: %s", r->id, vuf_error(e->v));
		return -1;
	}
	r->queued = true;
	return 0;
}

static int create_outputs(struct vvenc *e)
{
	int t;

	e->n_out = e->o.n_out;
	if (e->n_out < e->r.op.min_buffers)
		e->n_out = e->r.op.min_buffers < VVENC_MAX_RES ? e->r.op.min_buffers : VVENC_MAX_RES;
	for (unsigned i = 0; i < e->n_out; i++) {
		struct vres *r = &e->outr[i];
		uint32_t zero[VIRTIO_VIDEO_MAX_PLANES] = { 0 };

		r->id = 100 + i + 1;
		r->nsg = 1;
		if (alloc_sg(e, e->out_size, (int)((i + 1) & 1), &r->sg[0])) {
			failf(e, "guest memory full: %s", vuf_error(e->v));
			return -1;
		}
		t = vuf_resource_create(e->v, e->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, r->id,
					VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, 1, zero, r->sg, 1);
		if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
			failf(e, "RESOURCE_CREATE output %u (%zu bytes): %s", r->id, e->out_size,
			      answer(e, t));
			return -1;
		}
	}
	for (unsigned i = 0; i < e->n_out; i++)
		if (queue_out(e, &e->outr[i]))
			return -1;
	return 0;
}

/* ---- the encode loop ------------------------------------------------------------ */

/* Lay raw frame f out in e->inbuf per the INPUT params. The padding (rows
 * and columns outside the visible frame, e.g. 1080 -> 1088) is black
 * (Y 16, Cb/Cr 128): the encoder codes whole 8x8 blocks, so what lies there
 * shapes the visible edge. v4l2-ctl pre-fills its buffers with its test
 * pattern; the reference encode asks for pattern 5, "100% Black", to match. */
static void layout_frame(struct vvenc *e, unsigned f)
{
	const uint8_t *src = e->raw->data + (size_t)f * e->raw->frame_size;

	for (unsigned p = 0; p < 3; p++)
		memset(e->inbuf + e->in_off[p], p ? 0x80 : 0x10, e->r.ip.plane[p].plane_size);
	for (unsigned p = 0; p < 3; p++) {
		uint32_t stride = e->r.ip.plane[p].stride;
		size_t rb, rows;

		plane_dims(e, p, &rb, &rows);
		for (size_t y = 0; y < rows; y++) {
			memcpy(e->inbuf + e->in_off[p] + y * stride, src, rb);
			src += rb;
		}
	}
}

static int write_input(struct vvenc *e, struct vres *r)
{
	if (!e->o.per_plane)
		return vuf_sg_write(e->v, &r->sg[0], 0, e->inbuf, e->in_total);
	for (unsigned p = 0; p < r->nsg; p++)
		if (vuf_sg_write(e->v, &r->sg[p], 0, e->inbuf + e->in_off[p],
				 e->r.ip.plane[p].plane_size))
			return -1;
	return 0;
}

static void send_drain(struct vvenc *e);

static void feed(struct vvenc *e)
{
	unsigned end = (e->pass + 1) * e->raw->nframes;	/* this pass's last + 1 */

	for (unsigned i = 0; i < e->n_in && e->state == ST_RUN; i++) {
		struct vres *r = &e->in[i];
		uint32_t sizes[VIRTIO_VIDEO_MAX_PLANES] = { 0 };
		unsigned n = e->next_frame, nsizes;
		int t;

		if (r->queued)
			continue;
		if (n >= end)
			break;
		layout_frame(e, n % e->raw->nframes);
		if (write_input(e, r)) {
			failf(e, "writing input: %s", vuf_error(e->v));
			return;
		}
		if (e->o.one_data_size) {
			nsizes = 1;
			sizes[0] = (uint32_t)e->in_total;
		} else {
			nsizes = e->r.ip.num_planes;
			for (unsigned p = 0; p < nsizes; p++)
				sizes[p] = e->r.ip.plane[p].plane_size;
		}
		t = vuf_resource_queue(e->v, e->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, r->id,
				       vvenc_ts(n), nsizes, sizes, &r->token);
		if (t < 0) {
			failf(e, "RESOURCE_QUEUE input: %s", vuf_error(e->v));
			return;
		}
		r->queued = true;
		e->next_frame++;
		e->r.frames_sent++;
		if (e->o.early_drain && e->next_frame == end)
			send_drain(e);
	}
}

static bool inputs_idle(const struct vvenc *e)
{
	for (unsigned i = 0; i < e->n_in; i++)
		if (e->in[i].queued)
			return false;
	return true;
}

static void maybe_drain(struct vvenc *e)
{
	if (e->o.early_drain || e->state != ST_RUN ||
	    e->next_frame < (e->pass + 1) * e->raw->nframes || !inputs_idle(e))
		return;
	send_drain(e);
}

static void send_drain(struct vvenc *e)
{
	int t = vuf_stream_drain_submit(e->v, e->o.stream_id, &e->drain_token);
	if (t < 0) {
		failf(e, "STREAM_DRAIN: %s", vuf_error(e->v));
		return;
	}
	e->drain_sent = true;
	e->state = ST_DRAIN;
	if (e->o.verbose)
		fprintf(stderr, "vvenc %u: drain after %u frames in, %u out\n", e->o.stream_id,
			e->r.frames_in, e->r.frames_out);
}

static int frame_of_ts(const struct vvenc *e, uint64_t ts)
{
	uint64_t base = vvenc_ts(0), step = vvenc_ts(1) - vvenc_ts(0);

	if (ts < base || (ts - base) % step ||
	    (ts - base) / step >= (uint64_t)e->raw->nframes * (1 + e->o.resume))
		return -1;
	return (int)((ts - base) / step);
}

static void do_clear(struct vvenc *e);
static void do_destroy(struct vvenc *e);

/* A completed output buffer: a coded frame, the EOS buffer, or one returned
 * by a destroy (after_destroy: never requeued, ERR expected). */
static void on_output(struct vvenc *e, struct vres *r, const struct vuf_rq_result *rr,
		      bool requeue, bool after_destroy)
{
	struct vvenc_frame *fr;

	r->queued = false;
	if (rr->used_len < 24) {
		if (after_destroy) {
			e->r.returned_err++;	/* a bare header: returned, no frame */
			return;
		}
		failf(e, "output buffer %u answered with %u bytes", r->id, rr->used_len);
		return;
	}
	if (rr->flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS) {
		if (e->state != ST_DRAIN && !after_destroy) {
			failf(e, "EOS buffer before the drain (after %u frames)", e->r.frames_out);
			return;
		}
		if (rr->flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR) {
			failf(e, "the EOS buffer is flagged ERR (flags 0x%x)", rr->flags);
			return;
		}
		if (rr->size) {
			failf(e, "the EOS buffer carries %u bytes (the driver forces bytesused to 0 "
			      "on EOS: that frame would be lost)", rr->size);
			return;
		}
		if (e->r.eos) {
			failf(e, "a second EOS buffer");
			return;
		}
		e->r.eos = true;
		return;
	}
	if (rr->flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR) {
		if (!after_destroy) {
			failf(e, "output buffer %u came back with FLAG_ERR (flags 0x%x, size %u) "
			      "after %u frames", r->id, rr->flags, rr->size, e->r.frames_out);
			return;
		}
		e->r.returned_err++;
		return;
	}
	if (after_destroy && rr->size == 0)
		return;		/* returned empty without ERR: tolerated */
	if (rr->size == 0) {
		failf(e, "empty output buffer %u without EOS (flags 0x%x) after %u frames", r->id,
		      rr->flags, e->r.frames_out);
		return;
	}
	if (e->r.eos) {
		failf(e, "a coded frame (%u bytes) after the EOS buffer", rr->size);
		return;
	}
	if (rr->size > e->out_size) {
		failf(e, "output buffer %u: size %u beyond its %zu bytes", r->id, rr->size,
		      e->out_size);
		return;
	}
	if (vuf_sg_read(e->v, &r->sg[0], 0, e->obuf, rr->size)) {
		failf(e, "reading output: %s", vuf_error(e->v));
		return;
	}
	if (e->out && fwrite(e->obuf, 1, rr->size, e->out) != rr->size) {
		failf(e, "writing the output file: %s", strerror(errno));
		return;
	}
	if (e->r.frames_out == e->frames_cap) {
		unsigned cap = e->frames_cap ? 2 * e->frames_cap : 256;
		struct vvenc_frame *nf = realloc(e->frames, cap * sizeof(*nf));

		if (!nf) {
			failf(e, "out of memory");
			return;
		}
		e->frames = nf;
		e->frames_cap = cap;
	}
	fr = &e->frames[e->r.frames_out];
	fr->size = rr->size;
	fr->flags = rr->flags;
	fr->timestamp = rr->timestamp;
	fr->src = frame_of_ts(e, rr->timestamp);
	if (fr->src < 0)
		e->r.ts_errors++;
	if (rr->flags & VIRTIO_VIDEO_BUFFER_FLAG_IFRAME)
		e->r.keyframes++;
	e->r.frames_out++;
	e->r.bytes_out += rr->size;
	if (!requeue)
		return;
	if (e->o.destroy_after > 0 && e->r.frames_out == (unsigned)e->o.destroy_after) {
		do_destroy(e);
		return;
	}
	if (e->o.clear_after > 0 && !e->clear_done && e->r.frames_out == (unsigned)e->o.clear_after)
		do_clear(e);
	if (e->state == ST_RUN || e->state == ST_DRAIN)
		queue_out(e, r);
}

/* Wait for every queued buffer after a STREAM_DESTROY: the device must
 * return each one. */
static int collect_after_destroy(struct vvenc *e)
{
	for (unsigned i = 0; i < e->n_out + e->n_in; i++) {
		bool is_out = i < e->n_out;
		struct vres *r = is_out ? &e->outr[i] : &e->in[i - e->n_out];
		struct vuf_rq_result rr;
		int t;

		if (!r->queued)
			continue;
		t = vuf_resource_queue_wait(e->v, r->token, &rr, VUF_CMD_TIMEOUT_MS);
		r->queued = false;
		if (t < 0) {
			failf(e, "%s buffer %u was not returned after STREAM_DESTROY: %s",
			      is_out ? "output" : "input", r->id, vuf_error(e->v));
			return -1;
		}
		if (t != VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE && t != VIRTIO_VIDEO_RESP_OK_NODATA) {
			failf(e, "%s buffer %u returned by STREAM_DESTROY with %s",
			      is_out ? "output" : "input", r->id, vuf_cmd_name((uint32_t)t));
			return -1;
		}
		e->r.returned++;
		if (is_out) {
			on_output(e, r, &rr, false, true);
			if (e->state == ST_FAILED)
				return -1;
		} else if (rr.used_len < 24 || (rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR)) {
			e->r.returned_err++;
		} else {
			e->r.frames_in++;
		}
	}
	return 0;
}

static void do_destroy(struct vvenc *e)
{
	int t = vuf_stream_destroy(e->v, e->o.stream_id);

	e->r.frames_at_destroy = e->r.frames_out;
	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(e, "STREAM_DESTROY: %s", answer(e, t));
		return;
	}
	if (e->o.verbose)
		fprintf(stderr, "vvenc %u: destroyed after %u frames out\n", e->o.stream_id,
			e->r.frames_out);
	if (e->drain_sent) {
		/* a destroy answers a pending drain too (any answer) */
		if (vuf_wait_type(e->v, e->drain_token, NULL, 0, 8, VUF_CMD_TIMEOUT_MS) < 0) {
			failf(e, "STREAM_DRAIN not answered after STREAM_DESTROY: %s",
			      vuf_error(e->v));
			return;
		}
		e->drain_sent = false;
	}
	if (collect_after_destroy(e))
		return;
	e->r.destroyed = true;
	e->r.seconds = since(&e->t0);
	e->state = ST_DONE;
}

/* QUEUE_CLEAR of the input queue (STREAMOFF of the raw queue in the guest):
 * queued inputs come back (FLAG_ERR if dropped); the encode goes on. */
static void do_clear(struct vvenc *e)
{
	int t = vuf_queue_clear(e->v, e->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, VUF_CMD_TIMEOUT_MS);

	e->clear_done = true;
	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(e, "QUEUE_CLEAR input: %s", answer(e, t));
		return;
	}
	for (unsigned i = 0; i < e->n_in; i++) {
		struct vres *r = &e->in[i];
		struct vuf_rq_result rr;

		if (!r->queued)
			continue;
		t = vuf_resource_queue_wait(e->v, r->token, &rr, VUF_CMD_TIMEOUT_MS);
		r->queued = false;
		if (t < 0) {
			failf(e, "input buffer %u was not returned by QUEUE_CLEAR: %s", r->id,
			      vuf_error(e->v));
			return;
		}
		if (rr.used_len < 24) {
			failf(e, "input buffer %u returned by QUEUE_CLEAR with a %u-byte %s", r->id,
			      rr.used_len, vuf_cmd_name((uint32_t)t));
			return;
		}
		if (rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR)
			e->r.cleared++;
		else
			e->r.frames_in++;
	}
	e->r.clear_at = e->next_frame;
	if (e->o.verbose)
		fprintf(stderr, "vvenc %u: input cleared after %u frames out (%u buffers dropped), "
			"continuing at frame %u\n", e->o.stream_id, e->r.frames_out, e->r.cleared,
			e->next_frame);
}

/* After a drain the next input restarts the encoder (dev-encoder.rst,
 * Drain); the EOS buffer goes back to the device. */
static void resume(struct vvenc *e)
{
	e->pass++;
	e->r.drained = e->r.eos = false;
	e->state = ST_RUN;
	for (unsigned i = 0; i < e->n_out && e->state == ST_RUN; i++)
		if (!e->outr[i].queued)
			queue_out(e, &e->outr[i]);
	feed(e);
	maybe_drain(e);
}

static void finish(struct vvenc *e)
{
	int t;

	if (e->state != ST_DRAIN || !e->r.drained || !e->r.eos)
		return;
	e->r.drains++;
	if (e->pass < e->o.resume) {
		resume(e);
		return;
	}
	t = vuf_stream_destroy(e->v, e->o.stream_id);
	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(e, "STREAM_DESTROY: %s", answer(e, t));
		return;
	}
	/* the device returns whatever was still queued */
	if (collect_after_destroy(e))
		return;
	e->r.seconds = since(&e->t0);
	e->state = ST_DONE;
}

/* Route a completed chain to its encoder; false if it is not ours. */
static bool on_token(struct vvenc *e, uint64_t tok)
{
	struct vuf_rq_result rr;
	int t;

	if (e->drain_sent && tok == e->drain_token) {
		e->drain_sent = false;
		t = vuf_wait_type(e->v, tok, NULL, 0, 8, 0);
		if (t != VIRTIO_VIDEO_RESP_OK_NODATA)
			failf(e, "STREAM_DRAIN answered %s", answer(e, t));
		else if (!e->clear_done && e->r.frames_in != e->next_frame)
			/* dev-encoder.rst, Drain: every buffer queued before it is done */
			failf(e, "STREAM_DRAIN answered with %u of %u inputs answered",
			      e->r.frames_in, e->next_frame);
		else
			e->r.drained = true;
		finish(e);
		return true;
	}
	for (unsigned i = 0; i < e->n_in; i++) {
		struct vres *r = &e->in[i];

		if (!r->queued || r->token != tok)
			continue;
		t = vuf_resource_queue_wait(e->v, tok, &rr, 0);
		r->queued = false;
		if (t < 0)
			failf(e, "input buffer %u: %s", r->id, vuf_error(e->v));
		else if (t != VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE && t != VIRTIO_VIDEO_RESP_OK_NODATA)
			failf(e, "input buffer %u answered %s", r->id, vuf_cmd_name((uint32_t)t));
		else if (rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR)
			failf(e, "input buffer %u (frame %d) came back with FLAG_ERR", r->id,
			      frame_of_ts(e, rr.timestamp));
		else
			e->r.frames_in++;
		feed(e);
		maybe_drain(e);
		return true;
	}
	for (unsigned i = 0; i < e->n_out; i++) {
		struct vres *r = &e->outr[i];

		if (!r->queued || r->token != tok)
			continue;
		t = vuf_resource_queue_wait(e->v, tok, &rr, 0);
		if (t < 0) {
			r->queued = false;
			failf(e, "output buffer %u: %s", r->id, vuf_error(e->v));
		} else if (t != VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE) {
			r->queued = false;
			failf(e, "output buffer %u answered %s", r->id, vuf_cmd_name((uint32_t)t));
		} else {
			on_output(e, r, &rr, true, false);
		}
		feed(e);
		maybe_drain(e);
		finish(e);
		return true;
	}
	return false;
}

struct vvenc *vvenc_new(struct vuf *v, const struct vvenc_raw *raw, FILE *out,
			const struct vvenc_opts *o)
{
	struct vvenc *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->v = v;
	e->raw = raw;
	e->out = out;
	if (o)
		e->o = *o;
	if (!e->o.stream_id)
		e->o.stream_id = 1;
	if (!e->o.coded_format)
		e->o.coded_format = VIRTIO_VIDEO_FORMAT_FWHT;
	if (!e->o.n_in)
		e->o.n_in = 4;
	if (e->o.n_in > VVENC_MAX_RES)
		e->o.n_in = VVENC_MAX_RES;
	if (!e->o.n_out)
		e->o.n_out = 4;
	if (e->o.n_out > VVENC_MAX_RES)
		e->o.n_out = VVENC_MAX_RES;
	if (!e->o.frame_rate)
		e->o.frame_rate = 30;
	if (!e->o.timeout_ms)
		e->o.timeout_ms = 60000;
	return e;
}

void vvenc_free(struct vvenc *e)
{
	if (!e)
		return;
	for (unsigned i = 0; i < VVENC_MAX_RES; i++) {
		res_release(&e->in[i]);
		res_release(&e->outr[i]);
	}
	free(e->frames);
	free(e->inbuf);
	free(e->obuf);
	free(e);
}

const struct vvenc_result *vvenc_result(const struct vvenc *e)
{
	return &e->r;
}

const struct vvenc_frame *vvenc_frame(const struct vvenc *e, unsigned k)
{
	return k < e->r.frames_out ? &e->frames[k] : NULL;
}

static void start(struct vvenc *e)
{
	int t;

	clock_gettime(CLOCK_MONOTONIC, &e->t0);
	t = vuf_stream_create(e->v, e->o.stream_id, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
			      VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, e->o.coded_format, "vvenc");
	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(e, "STREAM_CREATE (%s): %s", vuf_format_name(e->o.coded_format), answer(e, t));
		return;
	}
	if (setup_params(e) || create_inputs(e))
		return;
	if (!e->o.outputs_late && create_outputs(e))
		return;
	e->state = ST_RUN;
	feed(e);
	maybe_drain(e);
	if (e->o.outputs_late && e->state != ST_FAILED)
		create_outputs(e);
}

static bool active(const struct vvenc *e)
{
	return e->state != ST_DONE && e->state != ST_FAILED;
}

static const char *state_name(enum vvenc_state s)
{
	static const char *const names[] = { "setup", "encoding", "draining", "done", "failed" };

	return names[s];
}

/* ---- vvjob glue ---------------------------------------------------------------- */

static void job_start(void *j)
{
	start(j);
}

static bool job_active(const void *j)
{
	return active(j);
}

static bool job_done(const void *j)
{
	return ((const struct vvenc *)j)->state == ST_DONE;
}

static uint32_t job_stream_id(const void *j)
{
	return ((const struct vvenc *)j)->o.stream_id;
}

static bool job_on_token(void *j, uint64_t tok)
{
	return on_token(j, tok);
}

/* An encoder expects no event at all. */
static void job_on_event(void *j, const struct virtio_video_event *ev)
{
	struct vvenc *e = j;

	failf(e, "event 0x%x from the device (%s) after %u frames out", ev->event_type,
	      ev->event_type == VIRTIO_VIDEO_EVENT_ERROR ? "ERROR" : "unexpected",
	      e->r.frames_out);
}

static void job_fail(void *j, const char *why)
{
	struct vvenc *e = j;

	failf(e, "%s (%s; %u frames sent, %u in, %u out, drain %s, EOS %s)", why,
	      state_name(e->state), e->r.frames_sent, e->r.frames_in, e->r.frames_out,
	      e->r.drained ? "answered" : e->drain_sent ? "pending" : "not sent",
	      e->r.eos ? "seen" : "not seen");
}

const struct vvjob_ops vvenc_job_ops = {
	.start = job_start,
	.active = job_active,
	.done = job_done,
	.stream_id = job_stream_id,
	.on_token = job_on_token,
	.on_event = job_on_event,
	.fail = job_fail,
};

int vvenc_run_all(struct vvenc **es, unsigned n)
{
	struct vvjob jobs[16];
	int timeout = 0;

	if (n == 0 || n > 16)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		jobs[i] = (struct vvjob){ es[i], &vvenc_job_ops };
		if (es[i]->o.timeout_ms > timeout)
			timeout = es[i]->o.timeout_ms;
	}
	return vvjob_run(es[0]->v, jobs, n, timeout);
}
