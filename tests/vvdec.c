/* SPDX-License-Identifier: MIT */
/*
 * vvdec: a guest decoder on top of vufront. See vvdec.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vvdec.h"

#define FWHT_HDR_SIZE 44u
static const uint8_t fwht_magic[8] = { 0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff };

enum vvdec_state { ST_WAIT_RES, ST_RUN, ST_DRAIN, ST_DONE, ST_FAILED };

struct vres {
	uint32_t id;
	struct vuf_sglist sg[VIRTIO_VIDEO_MAX_PLANES];
	unsigned nsg;
	bool queued;
	uint64_t token;
};

struct vvdec {
	struct vuf *v;
	const struct vvdec_clip *clip;
	FILE *out;
	struct vvdec_opts o;
	struct vvdec_result r;
	enum vvdec_state state;
	struct vres in[VVDEC_MAX_RES];
	unsigned n_in;
	struct vres outr[VVDEC_MAX_RES];
	unsigned n_out;
	uint32_t next_out_id;
	struct vuf_params op;
	unsigned next_frame;		/* input number, counted over every pass */
	unsigned pass;			/* 0, then 1..o.resume */
	bool first_sent, drain_sent, seek_done;
	bool drain_wanted;		/* early drain waiting for room in the ring */
	uint64_t drain_token;
	int *src;
	unsigned src_cap;
	uint8_t *buf;
	size_t buf_len;
	struct timespec t0;
};

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void failf(struct vvdec *d, const char *fmt, ...)
{
	va_list ap;

	if (d->state == ST_FAILED)
		return;
	va_start(ap, fmt);
	vsnprintf(d->r.err, sizeof(d->r.err), fmt, ap);
	va_end(ap);
	d->state = ST_FAILED;
	if (d->o.verbose)
		fprintf(stderr, "vvdec %u: FAILED: %s\n", d->o.stream_id, d->r.err);
}

/* ---- clips -------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int vvdec_clip_load(struct vvdec_clip *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 0, pos = 0;
	long sz;

	memset(c, 0, sizeof(*c));
	if (!f || fseek(f, 0, SEEK_END) || (sz = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET)) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	c->len = (size_t)sz;
	c->data = malloc(c->len);
	if (!c->data || fread(c->data, 1, c->len, f) != c->len) {
		snprintf(err, errlen, "cannot read %s", path);
		fclose(f);
		return -1;
	}
	fclose(f);
	while (pos < c->len) {
		size_t fl;

		if (c->len - pos < FWHT_HDR_SIZE || memcmp(c->data + pos, fwht_magic, 8)) {
			snprintf(err, errlen, "%s: no FWHT frame header at offset %zu", path, pos);
			return -1;
		}
		fl = FWHT_HDR_SIZE + be32(c->data + pos + 40);
		if (fl > c->len - pos) {
			snprintf(err, errlen, "%s: truncated frame at offset %zu", path, pos);
			return -1;
		}
		if (c->nframes == cap) {
			cap = cap ? 2 * cap : 64;
			c->off = realloc(c->off, cap * sizeof(*c->off));
			c->size = realloc(c->size, cap * sizeof(*c->size));
			if (!c->off || !c->size) {
				snprintf(err, errlen, "out of memory");
				return -1;
			}
		}
		c->off[c->nframes] = pos;
		c->size[c->nframes] = fl;
		c->nframes++;
		pos += fl;
	}
	return 0;
}

void vvdec_clip_free(struct vvdec_clip *c)
{
	free(c->data);
	free(c->off);
	free(c->size);
	memset(c, 0, sizeof(*c));
}

/* Deterministic YU12 frames: gradients, a moving box and some texture, so
 * that the FWHT encoder has real work and P-frames differ from I-frames. */
int vvdec_gen_raw(const char *path, unsigned w, unsigned h, unsigned n, unsigned seed)
{
	FILE *f = fopen(path, "wb");
	size_t ysz = (size_t)w * h, csz = ysz / 4;
	uint8_t *buf = malloc(ysz + 2 * csz);

	if (!f || !buf)
		goto fail;
	for (unsigned k = 0; k < n; k++) {
		/* The 64x64 square moves; at the minimum size (64) it stays. */
		unsigned bx = (k * 16 + seed * 40) % (w > 64 ? w - 64 : 1);
		unsigned by = (k * 8 + seed * 20) % (h > 64 ? h - 64 : 1);

		for (unsigned y = 0; y < h; y++)
			for (unsigned x = 0; x < w; x++) {
				uint8_t v = (uint8_t)(x / 2 + y / 3 + k * 5 + seed);

				if (x >= bx && x < bx + 64 && y >= by && y < by + 64)
					v = (uint8_t)(235 - ((x ^ y) & 31));
				else if (((x * 7 + y * 13 + k) % 97) == 0)
					v ^= 0x55;
				buf[(size_t)y * w + x] = v;
			}
		for (unsigned i = 0; i < csz; i++) {
			buf[ysz + i] = (uint8_t)(128 + (i % (w / 2)) / 8 - k);
			buf[ysz + csz + i] = (uint8_t)(96 + (i / (w / 2)) / 4 + seed);
		}
		if (fwrite(buf, 1, ysz + 2 * csz, f) != ysz + 2 * csz)
			goto fail;
	}
	free(buf);
	return fclose(f) ? -1 : 0;
fail:
	free(buf);
	if (f)
		fclose(f);
	return -1;
}

/* ---- resources ------------------------------------------------------------ */

static int alloc_sg(struct vvdec *d, size_t len, int region, struct vuf_sglist *sg)
{
	if (d->o.scatter)
		return vuf_alloc_scattered(d->v, len, sg);
	return vuf_alloc_contig_at(d->v, len, region, d->o.mixed && region == 1 ? 512 : 0, sg);
}

static void res_release(struct vres *r)
{
	for (unsigned i = 0; i < r->nsg; i++)
		vuf_sglist_free(&r->sg[i]);
	r->nsg = 0;
	r->queued = false;
}

static int create_inputs(struct vvdec *d)
{
	struct vuf_params ip;
	size_t max = 0, size;
	int t;

	t = vuf_get_params(d->v, d->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, true, &ip);
	if (t != VIRTIO_VIDEO_RESP_OK_GET_PARAMS) {
		failf(d, "GET_PARAMS_EXT input: %s", t < 0 ? vuf_error(d->v) : vuf_cmd_name((uint32_t)t));
		return -1;
	}
	for (unsigned i = 0; i < d->clip->nframes; i++)
		if (d->clip->size[i] > max)
			max = d->clip->size[i];
	size = max + d->o.garbage;
	if (size < ip.plane[0].plane_size)
		size = ip.plane[0].plane_size;
	size = (size + VUF_PAGE - 1) & ~(size_t)(VUF_PAGE - 1);
	d->buf_len = size;
	d->buf = malloc(size);
	if (!d->buf) {
		failf(d, "out of memory");
		return -1;
	}
	for (unsigned i = 0; i < d->n_in; i++) {
		struct vres *r = &d->in[i];
		uint32_t zero[VIRTIO_VIDEO_MAX_PLANES] = { 0 };

		r->id = i + 1;
		r->nsg = 1;
		if (alloc_sg(d, size, (int)(i & 1), &r->sg[0])) {
			failf(d, "guest memory full: %s", vuf_error(d->v));
			return -1;
		}
		t = vuf_resource_create(d->v, d->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, r->id,
					VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, 1, zero, r->sg, 1);
		if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
			failf(d, "RESOURCE_CREATE input %u: %s", r->id,
			      t < 0 ? vuf_error(d->v) : vuf_cmd_name((uint32_t)t));
			return -1;
		}
	}
	return 0;
}

static int queue_out(struct vvdec *d, struct vres *r)
{
	int t = vuf_resource_queue(d->v, d->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, r->id, 0,
				   0, NULL, &r->token);

	if (t < 0) {
		failf(d, "RESOURCE_QUEUE output %u: %s", r->id, vuf_error(d->v));
		return -1;
	}
	r->queued = true;
	return 0;
}

/* Wait for the chains of queued resources that the device must already
 * have answered (after a clear or destroy). */
static int collect_queued(struct vvdec *d, struct vres *set, unsigned n, bool count_cleared)
{
	for (unsigned i = 0; i < n; i++) {
		struct vuf_rq_result rr;
		int t;

		if (!set[i].queued)
			continue;
		t = vuf_resource_queue_wait(d->v, set[i].token, &rr, VUF_CMD_TIMEOUT_MS);
		set[i].queued = false;
		if (t < 0) {
			failf(d, "a queued buffer was not returned: %s", vuf_error(d->v));
			return -1;
		}
		/* done before the clear (OK) or returned by it (FLAG_ERR) */
		if (count_cleared && (rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR))
			d->r.cleared++;
		else if (count_cleared)
			d->r.frames_in++;
	}
	return 0;
}

static void on_output(struct vvdec *d, struct vres *r, const struct vuf_rq_result *rr,
		      bool requeue);

/* STREAMOFF + REQBUFS(0) of the capture queue in the guest. Frames that
 * completed before the clear are still written (with the old layout). */
static int reset_outputs(struct vvdec *d)
{
	int t = vuf_queue_clear(d->v, d->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, VUF_CMD_TIMEOUT_MS);

	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(d, "QUEUE_CLEAR output: %s", t < 0 ? vuf_error(d->v) : vuf_cmd_name((uint32_t)t));
		return -1;
	}
	for (unsigned i = 0; i < d->n_out; i++) {
		struct vres *r = &d->outr[i];
		struct vuf_rq_result rr;

		if (!r->queued)
			continue;
		t = vuf_resource_queue_wait(d->v, r->token, &rr, VUF_CMD_TIMEOUT_MS);
		r->queued = false;
		if (t < 0) {
			failf(d, "a queued output buffer was not returned by the clear: %s",
			      vuf_error(d->v));
			return -1;
		}
		on_output(d, r, &rr, false);
	}
	t = vuf_resource_destroy_all(d->v, d->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT);
	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(d, "RESOURCE_DESTROY_ALL output: %s", t < 0 ? vuf_error(d->v)
								: vuf_cmd_name((uint32_t)t));
		return -1;
	}
	for (unsigned i = 0; i < d->n_out; i++)
		res_release(&d->outr[i]);
	return 0;
}

/* DECODER_RESOLUTION_CHANGED: what the driver does (re-read params,
 * recreate output buffers). */
static void on_resolution(struct vvdec *d)
{
	unsigned want;
	size_t total = 0;
	int t;

	d->r.res_changes++;
	if (d->n_out && reset_outputs(d))
		return;
	t = vuf_get_params(d->v, d->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, true, &d->op);
	if (t != VIRTIO_VIDEO_RESP_OK_GET_PARAMS) {
		failf(d, "GET_PARAMS_EXT output: %s", t < 0 ? vuf_error(d->v) : vuf_cmd_name((uint32_t)t));
		return;
	}
	if (d->o.out_format && d->op.format != d->o.out_format) {
		d->op.format = d->o.out_format;
		t = vuf_set_params(d->v, d->o.stream_id, &d->op, true);
		if (t == VIRTIO_VIDEO_RESP_OK_NODATA)
			t = vuf_get_params(d->v, d->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, true,
					   &d->op);
		if (t != VIRTIO_VIDEO_RESP_OK_GET_PARAMS) {
			failf(d, "SET_PARAMS_EXT output: %s", t < 0 ? vuf_error(d->v)
								    : vuf_cmd_name((uint32_t)t));
			return;
		}
	}
	if (d->op.num_planes == 0 || d->op.num_planes > VIRTIO_VIDEO_MAX_PLANES) {
		failf(d, "output params with %u planes", d->op.num_planes);
		return;
	}
	d->r.width = d->op.frame_width;
	d->r.height = d->op.frame_height;
	d->r.crop_w = d->op.crop.width;
	d->r.crop_h = d->op.crop.height;
	if (d->o.verbose)
		fprintf(stderr, "vvdec %u: resolution %ux%u (visible %ux%u), %s, %u planes, min %u\n",
			d->o.stream_id, d->op.frame_width, d->op.frame_height, d->op.crop.width,
			d->op.crop.height, vuf_format_name(d->op.format), d->op.num_planes,
			d->op.min_buffers);
	want = d->op.min_buffers + d->o.n_out_extra;
	if (want > VVDEC_MAX_RES)
		want = VVDEC_MAX_RES;
	for (unsigned p = 0; p < d->op.num_planes; p++)
		total += d->op.plane[p].plane_size;
	d->n_out = want;
	for (unsigned i = 0; i < want; i++) {
		struct vres *r = &d->outr[i];
		uint32_t offs[VIRTIO_VIDEO_MAX_PLANES] = { 0 };
		size_t acc = 0;

		r->id = ++d->next_out_id;
		if (d->o.per_plane) {
			r->nsg = d->op.num_planes;
			for (unsigned p = 0; p < r->nsg; p++)
				if (alloc_sg(d, d->op.plane[p].plane_size, (int)((i + p) & 1), &r->sg[p]))
					goto nomem;
		} else {
			r->nsg = 1;
			if (alloc_sg(d, total, (int)(i & 1), &r->sg[0]))
				goto nomem;
			for (unsigned p = 0; p < d->op.num_planes; p++) {
				offs[p] = (uint32_t)acc;
				acc += d->op.plane[p].plane_size;
			}
		}
		t = vuf_resource_create(d->v, d->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, r->id,
					d->o.per_plane ? VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE
						       : VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER,
					d->op.num_planes, offs, r->sg, r->nsg);
		if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
			failf(d, "RESOURCE_CREATE output %u: %s", r->id,
			      t < 0 ? vuf_error(d->v) : vuf_cmd_name((uint32_t)t));
			return;
		}
		if (queue_out(d, r))
			return;
	}
	if (d->state == ST_WAIT_RES)
		d->state = ST_RUN;
	return;
nomem:
	failf(d, "guest memory full: %s", vuf_error(d->v));
}

/* ---- the decode loop ---------------------------------------------------------- */

/* A full commandq is not an error: like the Linux driver, wait for a
 * completion to free descriptors, then try again. */
static void send_drain(struct vvdec *d)
{
	int t = vuf_stream_drain_submit(d->v, d->o.stream_id, &d->drain_token);

	d->drain_wanted = t == -ENOSPC;
	if (t == -ENOSPC) {
		d->r.ring_full++;
		return;
	}
	if (t < 0) {
		failf(d, "STREAM_DRAIN: %s", vuf_error(d->v));
		return;
	}
	d->drain_sent = true;
	d->state = ST_DRAIN;
}

static void feed(struct vvdec *d)
{
	unsigned end = (d->pass + 1) * d->clip->nframes;	/* this pass's last + 1 */

	for (unsigned i = 0; i < d->n_in && d->state != ST_FAILED; i++) {
		struct vres *r = &d->in[i];
		unsigned n = d->next_frame, f = n % d->clip->nframes;
		uint32_t size;
		int t;

		if (r->queued)
			continue;
		if (n >= end || (d->state == ST_WAIT_RES && d->first_sent && !d->o.eager) ||
		    d->state == ST_DRAIN || d->state == ST_DONE)
			break;
		size = (uint32_t)d->clip->size[f];
		memcpy(d->buf, d->clip->data + d->clip->off[f], size);
		/* junk after the frame: data_sizes must bound what is decoded */
		for (size_t k = 0; k < d->o.garbage && size + k < d->buf_len; k++)
			d->buf[size + k] = (uint8_t)(0x4f ^ k);
		if (vuf_sg_write(d->v, &r->sg[0], 0, d->buf, size + d->o.garbage)) {
			failf(d, "writing input: %s", vuf_error(d->v));
			return;
		}
		t = vuf_resource_queue(d->v, d->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, r->id,
				       vvdec_ts(n), 1, &size, &r->token);
		if (t == -ENOSPC) {
			d->r.ring_full++;
			break;		/* the application's queue is deeper than the ring */
		}
		if (t < 0) {
			failf(d, "RESOURCE_QUEUE input: %s", vuf_error(d->v));
			return;
		}
		r->queued = true;
		d->first_sent = true;
		d->next_frame++;
		if (d->o.early_drain && d->next_frame == end)
			send_drain(d);
	}
}

static bool inputs_idle(const struct vvdec *d)
{
	for (unsigned i = 0; i < d->n_in; i++)
		if (d->in[i].queued)
			return false;
	return true;
}

static void maybe_drain(struct vvdec *d)
{
	if (d->drain_wanted && d->state != ST_DRAIN) {
		send_drain(d);
		return;
	}
	if (d->o.early_drain || d->state != ST_RUN || d->next_frame < (d->pass + 1) * d->clip->nframes ||
	    !inputs_idle(d))
		return;
	send_drain(d);
}

/* After a drain: the next pass starts with a new input (dev-decoder.rst,
 * Drain: the decoder resumes); the EOS buffer goes back to the device. */
static void resume(struct vvdec *d)
{
	d->pass++;
	d->r.drained = d->r.eos = false;
	d->state = ST_RUN;
	for (unsigned i = 0; i < d->n_out && d->state == ST_RUN; i++)
		if (!d->outr[i].queued)
			queue_out(d, &d->outr[i]);
	feed(d);
	maybe_drain(d);
}

static void finish(struct vvdec *d)
{
	int t;

	if (d->state != ST_DRAIN || !d->r.drained || !d->r.eos)
		return;
	d->r.drains++;
	if (d->pass < d->o.resume) {
		resume(d);
		return;
	}
	t = vuf_stream_destroy(d->v, d->o.stream_id);
	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(d, "STREAM_DESTROY: %s", t < 0 ? vuf_error(d->v) : vuf_cmd_name((uint32_t)t));
		return;
	}
	/* the device returns whatever was still queued */
	if (collect_queued(d, d->outr, d->n_out, false) || collect_queued(d, d->in, d->n_in, false))
		return;
	d->r.seconds = now_s() - ((double)d->t0.tv_sec + (double)d->t0.tv_nsec / 1e9);
	d->state = ST_DONE;
}

static void seek(struct vvdec *d)
{
	int t = vuf_queue_clear(d->v, d->o.stream_id, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, VUF_CMD_TIMEOUT_MS);

	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(d, "QUEUE_CLEAR input: %s", t < 0 ? vuf_error(d->v) : vuf_cmd_name((uint32_t)t));
		return;
	}
	if (collect_queued(d, d->in, d->n_in, true))
		return;
	d->seek_done = true;
	d->next_frame = d->o.seek_to;
	if (d->o.verbose)
		fprintf(stderr, "vvdec %u: seek to frame %u\n", d->o.stream_id, d->o.seek_to);
}

static int frame_of_ts(const struct vvdec *d, uint64_t ts)
{
	uint64_t base = vvdec_ts(0), step = vvdec_ts(1) - vvdec_ts(0);

	if (ts < base || (ts - base) % step ||
	    (ts - base) / step >= (uint64_t)d->clip->nframes * (1 + d->o.resume))
		return -1;
	return (int)((ts - base) / step);
}

/* Write the visible rectangle (crop) of the frame in d->buf, plane by plane,
 * as v4l2-ctl --stream-to does when compose is smaller than the buffer. A
 * plane's rows and bytes per row scale with its size and stride: this covers
 * planar, semi-planar and packed formats alike. */
static int write_visible(struct vvdec *d)
{
	const struct vuf_params *op = &d->op;
	size_t off = 0;

	for (unsigned p = 0; p < op->num_planes; p++) {
		uint32_t stride = op->plane[p].stride, size = op->plane[p].plane_size;
		uint64_t rows, row_bytes, top, left;

		if (!stride || !op->frame_height || !op->frame_width) {
			if (fwrite(d->buf + off, 1, size, d->out) != size)
				return -1;
			off += size;
			continue;
		}
		rows = (uint64_t)op->crop.height * (size / stride) / op->frame_height;
		row_bytes = (uint64_t)op->crop.width * stride / op->frame_width;
		top = (uint64_t)op->crop.top * (size / stride) / op->frame_height;
		left = (uint64_t)op->crop.left * stride / op->frame_width;
		for (uint64_t y = 0; y < rows; y++) {
			size_t at = off + (size_t)((top + y) * stride + left);

			if (at + row_bytes > off + size ||
			    fwrite(d->buf + at, 1, (size_t)row_bytes, d->out) != row_bytes)
				return -1;
		}
		off += size;
	}
	return 0;
}

static void on_output(struct vvdec *d, struct vres *r, const struct vuf_rq_result *rr,
		      bool requeue)
{
	size_t total = 0;

	r->queued = false;
	if (rr->flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS) {
		if (d->state != ST_DRAIN) {
			failf(d, "EOS buffer before the drain");
			return;
		}
		d->r.eos = true;
		return;
	}
	if ((rr->flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR) && requeue && d->o.tolerate_errors) {
		d->r.out_errors++;	/* the codec's error: nothing to write */
		queue_out(d, r);
		return;
	}
	if (rr->flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR) {
		d->r.cleared++;
		return;		/* returned by a clear: not requeued */
	}
	for (unsigned p = 0; p < d->op.num_planes; p++)
		total += d->op.plane[p].plane_size;
	if (total > d->buf_len) {
		uint8_t *nb = realloc(d->buf, total);

		if (!nb) {
			failf(d, "out of memory");
			return;
		}
		d->buf = nb;
		d->buf_len = total;
	}
	if (d->o.per_plane) {
		size_t off = 0;

		for (unsigned p = 0; p < d->op.num_planes; p++) {
			if (vuf_sg_read(d->v, &r->sg[p], 0, d->buf + off, d->op.plane[p].plane_size)) {
				failf(d, "reading output: %s", vuf_error(d->v));
				return;
			}
			off += d->op.plane[p].plane_size;
		}
	} else if (vuf_sg_read(d->v, &r->sg[0], 0, d->buf, total)) {
		failf(d, "reading output: %s", vuf_error(d->v));
		return;
	}
	if (d->out && write_visible(d) < 0) {
		failf(d, "writing the output file: %s", strerror(errno));
		return;
	}
	if (d->r.frames_out == d->src_cap) {
		d->src_cap = d->src_cap ? 2 * d->src_cap : 256;
		d->src = realloc(d->src, d->src_cap * sizeof(*d->src));
		if (!d->src) {
			failf(d, "out of memory");
			return;
		}
	}
	d->src[d->r.frames_out] = frame_of_ts(d, rr->timestamp);
	if (d->src[d->r.frames_out] < 0)
		d->r.ts_errors++;
	d->r.frames_out++;
	if (!requeue)
		return;
	if (d->o.seek_after > 0 && !d->seek_done && d->r.frames_out == (unsigned)d->o.seek_after)
		seek(d);
	if (d->state != ST_FAILED)
		queue_out(d, r);
}

/* Route a completed chain to its decoder; false if it is not ours. */
static bool on_token(struct vvdec *d, uint64_t tok)
{
	struct vuf_rq_result rr;
	int t;

	if (d->drain_sent && tok == d->drain_token) {
		d->drain_sent = false;
		t = vuf_wait_type(d->v, tok, NULL, 0, 8, 0);
		if (t != VIRTIO_VIDEO_RESP_OK_NODATA)
			failf(d, "STREAM_DRAIN answered %s", t < 0 ? vuf_error(d->v) : vuf_cmd_name((uint32_t)t));
		else if (!d->seek_done && d->r.frames_in + d->r.in_errors != d->next_frame)
			/* dev-decoder.rst, Drain: every buffer queued before it is done */
			failf(d, "STREAM_DRAIN answered with %u of %u inputs answered",
			      d->r.frames_in, d->next_frame);
		else
			d->r.drained = true;
		finish(d);
		return true;
	}
	for (unsigned i = 0; i < d->n_in; i++) {
		struct vres *r = &d->in[i];

		if (!r->queued || r->token != tok)
			continue;
		t = vuf_resource_queue_wait(d->v, tok, &rr, 0);
		r->queued = false;
		if (t >= 0 && (rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR) && d->o.tolerate_errors)
			d->r.in_errors++;
		else if (t < 0 || (rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR))
			failf(d, "input buffer %u came back %s", r->id,
			      t < 0 ? vuf_error(d->v) : "with FLAG_ERR");
		else
			d->r.frames_in++;
		feed(d);
		maybe_drain(d);
		return true;
	}
	for (unsigned i = 0; i < d->n_out; i++) {
		struct vres *r = &d->outr[i];

		if (!r->queued || r->token != tok)
			continue;
		t = vuf_resource_queue_wait(d->v, tok, &rr, 0);
		if (t < 0) {
			r->queued = false;
			failf(d, "output buffer %u: %s", r->id, vuf_error(d->v));
		} else {
			on_output(d, r, &rr, true);
		}
		feed(d);
		maybe_drain(d);
		finish(d);
		return true;
	}
	return false;
}

struct vvdec *vvdec_new(struct vuf *v, const struct vvdec_clip *clip, FILE *out,
			const struct vvdec_opts *o)
{
	struct vvdec *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->v = v;
	d->clip = clip;
	d->out = out;
	d->o = *o;
	if (!d->o.coded_format)
		d->o.coded_format = VIRTIO_VIDEO_FORMAT_FWHT;
	if (!d->o.n_in)
		d->o.n_in = 4;
	if (d->o.n_in > VVDEC_MAX_RES)
		d->o.n_in = VVDEC_MAX_RES;
	if (!d->o.timeout_ms)
		d->o.timeout_ms = 60000;
	d->n_in = d->o.n_in;
	return d;
}

void vvdec_free(struct vvdec *d)
{
	if (!d)
		return;
	for (unsigned i = 0; i < VVDEC_MAX_RES; i++) {
		res_release(&d->in[i]);
		res_release(&d->outr[i]);
	}
	free(d->src);
	free(d->buf);
	free(d);
}

const struct vvdec_result *vvdec_result(const struct vvdec *d)
{
	return &d->r;
}

int vvdec_frame_input(const struct vvdec *d, unsigned k)
{
	return k < d->r.frames_out ? d->src[k] : -1;
}

int vvdec_frame_source(const struct vvdec *d, unsigned k)
{
	int n = vvdec_frame_input(d, k);

	return n < 0 ? -1 : n % (int)d->clip->nframes;
}

static void start(struct vvdec *d)
{
	int t;

	clock_gettime(CLOCK_MONOTONIC, &d->t0);
	t = vuf_stream_create(d->v, d->o.stream_id, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
			      VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, d->o.coded_format, "vvdec");
	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(d, "STREAM_CREATE: %s", t < 0 ? vuf_error(d->v) : vuf_cmd_name((uint32_t)t));
		return;
	}
	d->state = ST_WAIT_RES;
	if (create_inputs(d) == 0)
		feed(d);
}

static bool active(const struct vvdec *d)
{
	return d->state != ST_DONE && d->state != ST_FAILED;
}

/* tolerate_errors: the stream is broken; the guest closes it (STREAM_DESTROY
 * returns every queued buffer) and the run ends. */
static void on_error_event(struct vvdec *d)
{
	int t;

	d->r.error_events++;
	t = vuf_stream_destroy(d->v, d->o.stream_id);
	if (t != VIRTIO_VIDEO_RESP_OK_NODATA) {
		failf(d, "STREAM_DESTROY after an ERROR event: %s",
		      t < 0 ? vuf_error(d->v) : vuf_cmd_name((uint32_t)t));
		return;
	}
	d->drain_sent = false;
	if (collect_queued(d, d->outr, d->n_out, false) || collect_queued(d, d->in, d->n_in, false))
		return;
	d->state = ST_DONE;
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
	return ((const struct vvdec *)j)->state == ST_DONE;
}

static uint32_t job_stream_id(const void *j)
{
	return ((const struct vvdec *)j)->o.stream_id;
}

static bool job_on_token(void *j, uint64_t tok)
{
	return on_token(j, tok);
}

static void job_on_event(void *j, const struct virtio_video_event *ev)
{
	struct vvdec *d = j;

	if (ev->event_type == VIRTIO_VIDEO_EVENT_DECODER_RESOLUTION_CHANGED)
		on_resolution(d);
	else if (d->o.tolerate_errors && active(d))
		on_error_event(d);
	else
		failf(d, "ERROR event from the device");
	feed(d);
}

static void job_fail(void *j, const char *why)
{
	struct vvdec *d = j;

	failf(d, "%s (state %d, %u frames in, %u out)", why, d->state, d->r.frames_in,
	      d->r.frames_out);
}

const struct vvjob_ops vvdec_job_ops = {
	.start = job_start,
	.active = job_active,
	.done = job_done,
	.stream_id = job_stream_id,
	.on_token = job_on_token,
	.on_event = job_on_event,
	.fail = job_fail,
};

int vvdec_run_all(struct vvdec **ds, unsigned n)
{
	struct vvjob jobs[16];
	int timeout = 0;

	if (n == 0 || n > 16)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		jobs[i] = (struct vvjob){ ds[i], &vvdec_job_ops };
		if (ds[i]->o.timeout_ms > timeout)
			timeout = ds[i]->o.timeout_ms;
	}
	return vvjob_run(ds[0]->v, jobs, n, timeout);
}
