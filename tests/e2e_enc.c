/* SPDX-License-Identifier: MIT */
/*
 * End-to-end encoder tests: the real daemon on the real vicodec stateful
 * encoder, driven by the test frontend playing the guest driver (vvenc).
 * Every encode is decoded with v4l2-ctl on vicodec's stateful decoder and
 * compared byte for byte with the decode of a DIRECT v4l2-ctl encode of the
 * same raw frames. Runs inside the test VM (tests/vm/vm.sh): VICODEC_ENC,
 * VICODEC_DEC and VUV_DAEMON name the nodes and the daemon.
 *
 * Test content is made here: raw frames from our own pattern generator
 * (vvdec_gen_raw).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tproc.h"
#include "vufront.h"
#include "vvdec.h"
#include "vvenc.h"

#define FWHT_HDR_SIZE 44u
#define FWHT_FL_I_FRAME (1u << 10)	/* header flags bit: intra-coded frame */
#define CID_GOP_SIZE 0x009909cb		/* V4L2_CID_MPEG_VIDEO_GOP_SIZE */

static const char *daemon_path, *dec_node, *enc_node;
static const char *work = "/tmp/vuv-e2e-enc";
static struct tsuite suite = { .dmn = { .pid = -1 } };


__attribute__((format(printf, 1, 2)))
static void note(const char *fmt, ...)
{
	va_list ap;

	printf("  note: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* ---- content ------------------------------------------------------------------- */

struct clip {
	const char *name;
	unsigned w, h, n, seed;
};

static const struct clip clips[] = {
	{ "vga", 640, 480, 30, 1 },
	{ "hd", 1920, 1080, 6, 2 },
	{ "e12", 640, 480, 12, 3 },
	{ "e32", 640, 480, 32, 4 },
};

static const struct clip *find_clip(const char *name)
{
	for (size_t i = 0; i < sizeof(clips) / sizeof(clips[0]); i++)
		if (!strcmp(clips[i].name, name))
			return &clips[i];
	return NULL;
}

/* FWHT -> raw with v4l2-ctl on the stateful decoder (the visible frames). */
/* ... of frames frames of w x h: that many YU12 bytes are expected. */
static int v4l2_decode(const char *in, const char *out, unsigned w, unsigned h, unsigned frames)
{
	char log[320];

	snprintf(log, sizeof(log), "%s.dec.log", out);
	return v4l2ctl(log, out, (size_t)w * h * 3 / 2 * frames,
		       "-d %s --stream-out-mmap --stream-mmap --stream-from %s --stream-to %s",
		       dec_node, in, out);
}

/* The reference: raw -> FWHT directly on the stateful encoder (the crop
 * selection keeps 1080p's visible size), then decoded.
 *
 * v4l2-ctl sends STOP as soon as it has read the file, and under load that
 * STOP races vicodec's job: the encode ends a frame early (measured: 3 of 6
 * 1080p frames with several OUTPUT buffers; 5 of 6, five runs in a row, with
 * one buffer on Debian sid's 7.2 at load 5). So v4l2-ctl encodes REF_EXTRA
 * frames more than the clip has (frame k of vvdec_gen_raw depends only on k
 * and the seed, so the first n are the clip's) and the reference is its
 * first n frames: an FWHT frame depends only on the frames before it. A run
 * that still gives fewer than n is made again. */
#define REF_EXTRA 2

static int make_clip(const struct clip *c)
{
	char raw[256], rawx[256], fwht[256], yuv[256], log[280], err[256];
	int r = -1;

	snprintf(raw, sizeof(raw), "%s/%s.yu12", work, c->name);
	snprintf(rawx, sizeof(rawx), "%s/%s.ref.yu12", work, c->name);
	snprintf(fwht, sizeof(fwht), "%s/%s.direct.fwht", work, c->name);
	snprintf(yuv, sizeof(yuv), "%s/%s.direct.yuv", work, c->name);
	snprintf(log, sizeof(log), "%s.enc.log", fwht);
	if (vvdec_gen_raw(raw, c->w, c->h, c->n, c->seed) ||
	    vvdec_gen_raw(rawx, c->w, c->h, c->n + REF_EXTRA, c->seed))
		return failf("cannot write %s", raw);
	/* pattern 5 (black) is what v4l2-ctl leaves in the padding rows, as the
	 * guest encoder (vvenc.c) does. One OUTPUT buffer: with more, the
	 * STOP race above is much more frequent. */
	for (int attempt = 1; attempt <= 5 && r; attempt++) {
		struct vvdec_clip fc;

		if (v4l2ctl(log, fwht, 0, "-d %s --set-fmt-video-out=width=%u,height=%u,"
			    "pixelformat=YU12 --set-selection-output=target=crop,width=%u,height=%u "
			    "--stream-out-pattern=5 --stream-out-mmap=1 --stream-mmap --stream-from %s "
			    "--stream-to %s", enc_node, c->w, c->h, c->w, c->h, rawx, fwht))
			return -1;
		if (vvdec_clip_load(&fc, fwht, err, sizeof(err)))
			return failf("%s", err);
		r = fc.nframes >= c->n ? 0 : -1;
		if (r) {
			printf("  note: v4l2-ctl encoded %u of %u frames; again\n", fc.nframes,
			       c->n + REF_EXTRA);
		} else if (truncate(fwht, (off_t)(fc.off[c->n - 1] + fc.size[c->n - 1]))) {
			vvdec_clip_free(&fc);	/* the clip's frames: the file up to frame n's end */
			return failf("cannot truncate %s: %s", fwht, strerror(errno));
		}
		vvdec_clip_free(&fc);
	}
	if (r)
		return failf("v4l2-ctl did not encode %u frames of %s", c->n, c->name);
	return v4l2_decode(fwht, yuv, c->w, c->h, c->n);
}

/* 0 if equal; else -1 with *at = the first differing byte (or -2 if
 * unreadable). */
static int same_files(const char *a, const char *b, size_t *al, size_t *bl, size_t *at)
{
	uint8_t *x = slurp(a, al), *y = slurp(b, bl);
	int r = 0;

	*at = 0;
	if (!x || !y) {
		r = -2;
	} else if (*al != *bl || memcmp(x, y, *al)) {
		while (*at < *al && *at < *bl && x[*at] == y[*at])
			(*at)++;
		r = -1;
	}
	free(x);
	free(y);
	return r;
}


static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- running encodes --------------------------------------------------------------- */

static struct vuf *open_at(const char *sock, const struct vuf_opts *o)
{
	char err[256];
	struct vuf *v = vuf_open(sock, o, err, sizeof(err));

	if (!v)
		failf("frontend: %s", err);
	return v;
}

static struct vuf *open_front(const struct vuf_opts *o)
{
	return open_at(suite.dmn.sock, o);
}

struct enc_job {
	const char *clip;		/* name in work/ */
	struct vvenc_opts o;
	const struct clip *c;
	struct vvenc_raw raw;
	struct vvenc *e;
	FILE *out;
	char out_path[256];
};

static int job_init(struct vuf *v, struct enc_job *j, const char *tag)
{
	char path[256], err[256];

	j->c = find_clip(j->clip);
	if (!j->c)
		return failf("no clip %s", j->clip);
	snprintf(path, sizeof(path), "%s/%s.yu12", work, j->clip);
	if (vvenc_raw_load(&j->raw, path, j->c->w, j->c->h, err, sizeof(err)))
		return failf("%s", err);
	snprintf(j->out_path, sizeof(j->out_path), "%s/%s.%s.fwht", work, j->clip, tag);
	j->out = fopen(j->out_path, "wb");
	if (!j->out)
		return failf("cannot write %s", j->out_path);
	j->e = vvenc_new(v, &j->raw, j->out, &j->o);
	return j->e ? 0 : failf("out of memory");
}

static void job_fini(struct enc_job *j)
{
	if (j->out)
		fclose(j->out);
	j->out = NULL;
	vvenc_free(j->e);
	j->e = NULL;
	vvenc_raw_free(&j->raw);
}

/* Decode the job's bitstream and compare with the direct encode's decode;
 * report whether the bitstreams themselves are identical. */
static int compare_with_direct(struct enc_job *j)
{
	char yuv[300], ref[256], direct[256];
	size_t gl, wl, at;
	int r;

	snprintf(yuv, sizeof(yuv), "%s.yuv", j->out_path);
	snprintf(ref, sizeof(ref), "%s/%s.direct.yuv", work, j->clip);
	snprintf(direct, sizeof(direct), "%s/%s.direct.fwht", work, j->clip);
	if (v4l2_decode(j->out_path, yuv, j->c->w, j->c->h, vvenc_result(j->e)->frames_out) ||
	    t_compare_repeated(yuv, ref, 1 + j->o.resume))
		return -1;
	if (j->o.resume)
		return 0;
	r = same_files(j->out_path, direct, &gl, &wl, &at);
	if (r == 0)
		note("%s: bitstream identical to the direct v4l2-ctl encode (%zu bytes)", j->clip, gl);
	else
		note("%s: bitstream differs from the direct encode (%zu vs %zu bytes, first at byte "
		     "%zu); the decodes are identical", j->clip, gl, wl, at);
	return 0;
}

static int check_result(struct enc_job *j, bool exact)
{
	const struct vvenc_result *r = vvenc_result(j->e);

	CHECK(!r->err[0], "%s: %s", j->clip, r->err);
	CHECK(r->drained && r->eos, "%s: drain %s, EOS buffer %s", j->clip,
	      r->drained ? "answered" : "not answered", r->eos ? "seen" : "missing");
	CHECK(r->ts_errors == 0, "%s: %u output timestamps match no input", j->clip, r->ts_errors);
	if (!exact)
		return 0;
	CHECK(r->frames_in == j->raw.nframes * (1 + j->o.resume),
	      "%s: %u of %u input buffers completed", j->clip, r->frames_in,
	      j->raw.nframes * (1 + j->o.resume));
	CHECK(r->frames_out == r->frames_in, "%s: %u coded frames for %u inputs", j->clip,
	      r->frames_out, r->frames_in);
	CHECK(r->drains == 1 + j->o.resume, "%s: %u drains completed of %u", j->clip, r->drains,
	      1 + j->o.resume);
	for (unsigned k = 0; k < r->frames_out; k++)
		CHECK(vvenc_frame(j->e, k)->src == (int)k,
		      "%s: output frame %u carries the timestamp of input %d (%llu ns)", j->clip, k,
		      vvenc_frame(j->e, k)->src, (unsigned long long)vvenc_frame(j->e, k)->timestamp);
	return compare_with_direct(j);
}

/* Encode n clips at once on one connection. keep: leave the jobs for the
 * caller to inspect (then it calls job_fini). */
static int encode_jobs(struct vuf *v, struct enc_job *jobs, unsigned n, bool exact,
		       const char *tag, bool keep)
{
	struct vvenc *es[4];
	int r = 0;

	for (unsigned i = 0; i < n && !r; i++) {
		if (!jobs[i].o.stream_id)
			jobs[i].o.stream_id = i + 1;
		r = job_init(v, &jobs[i], tag);
		es[i] = jobs[i].e;
	}
	if (!r) {
		vvenc_run_all(es, n);
		for (unsigned i = 0; i < n; i++)
			fflush(jobs[i].out);
		for (unsigned i = 0; i < n && !r; i++)
			r = check_result(&jobs[i], exact);
	}
	if (!r && v->ring_errors)
		r = failf("frontend saw %u ring errors: %s", v->ring_errors, vuf_error(v));
	if (!keep || r)
		for (unsigned i = 0; i < n; i++)
			job_fini(&jobs[i]);
	return r;
}

static int encode_one(const char *clip, const struct vvenc_opts *o, const struct vuf_opts *fo,
		      const char *tag)
{
	struct enc_job j = { .clip = clip };
	struct vuf *v = open_front(fo);
	int r;

	if (!v)
		return -1;
	if (o)
		j.o = *o;
	r = encode_jobs(v, &j, 1, true, tag, false);
	vuf_close(v);
	return r;
}

/* I-frame flags of the frames of a FWHT file, from their headers. */
static int header_iframes(const char *path, bool *is_i, unsigned max, unsigned *n)
{
	struct vvdec_clip c;
	char err[256];

	if (vvdec_clip_load(&c, path, err, sizeof(err)))
		return failf("%s", err);
	*n = c.nframes;
	for (unsigned k = 0; k < c.nframes && k < max; k++)
		is_i[k] = be32(c.data + c.off[k] + 20) & FWHT_FL_I_FRAME;
	vvdec_clip_free(&c);
	return 0;
}

static const char *frame_type(uint32_t flags)
{
	switch (flags & (VIRTIO_VIDEO_BUFFER_FLAG_IFRAME | VIRTIO_VIDEO_BUFFER_FLAG_PFRAME |
			 VIRTIO_VIDEO_BUFFER_FLAG_BFRAME)) {
	case VIRTIO_VIDEO_BUFFER_FLAG_IFRAME: return "IFRAME";
	case VIRTIO_VIDEO_BUFFER_FLAG_PFRAME: return "PFRAME";
	case VIRTIO_VIDEO_BUFFER_FLAG_BFRAME: return "BFRAME";
	case 0: return "no frame type";
	default: return "several frame types";
	}
}

/* Output frame k must be an IFRAME when k % gop == 0, else a PFRAME; the
 * FWHT headers of the bitstream tell what vicodec really did. */
static int check_gop(struct enc_job *j, unsigned gop)
{
	const struct vvenc_result *r = vvenc_result(j->e);
	bool hdr_i[64] = { false };
	unsigned nh = 0, want_kf = 0;

	if (header_iframes(j->out_path, hdr_i, 64, &nh))
		return -1;
	CHECK(nh == r->frames_out, "%s holds %u FWHT frames, %u were returned", j->out_path, nh,
	      r->frames_out);
	for (unsigned k = 0; k < r->frames_out && k < 64; k++)
		CHECK(hdr_i[k] == !(k % gop),
		      "vicodec coded output frame %u as an %s-frame (FWHT header), expected an %s-frame "
		      "with a GOP of %u (the GOP setting did not reach the encoder?)", k,
		      hdr_i[k] ? "I" : "P", k % gop ? "P" : "I", gop);
	for (unsigned k = 0; k < r->frames_out && k < 64; k++) {
		const struct vvenc_frame *f = vvenc_frame(j->e, k);
		uint32_t want = k % gop ? VIRTIO_VIDEO_BUFFER_FLAG_PFRAME : VIRTIO_VIDEO_BUFFER_FLAG_IFRAME;

		CHECK(strcmp(frame_type(f->flags), frame_type(want)) == 0,
		      "output frame %u: flags 0x%x (%s), expected %s (its FWHT header says %s-frame)",
		      k, f->flags, frame_type(f->flags), frame_type(want), hdr_i[k] ? "I" : "P");
		want_kf += !(k % gop);
	}
	CHECK(r->keyframes == want_kf, "%u keyframes, expected %u", r->keyframes, want_kf);
	return 0;
}

/* ---- cases -------------------------------------------------------------------------- */

static int t_encode_640(void)
{
	return encode_one("vga", NULL, NULL, "out");
}

static int t_encode_1080(void)
{
	struct enc_job j = { .clip = "hd" };
	struct vuf *v = open_front(NULL);
	const struct vvenc_result *r;
	int ret;

	if (!v)
		return -1;
	ret = encode_jobs(v, &j, 1, true, "out", true);
	if (!ret) {
		r = vvenc_result(j.e);
		note("hd: device input params %ux%u visible %ux%u, planes %u/%u %u/%u %u/%u "
		     "(size/stride); coded buffer %u bytes; %llu coded bytes in %.2f s",
		     r->ip.frame_width, r->ip.frame_height, r->ip.crop.width, r->ip.crop.height,
		     r->ip.plane[0].plane_size, r->ip.plane[0].stride, r->ip.plane[1].plane_size,
		     r->ip.plane[1].stride, r->ip.plane[2].plane_size, r->ip.plane[2].stride,
		     r->op.plane[0].plane_size, (unsigned long long)r->bytes_out, r->seconds);
		job_fini(&j);
	}
	vuf_close(v);
	return ret;
}

static int t_keyframes(void)
{
	struct enc_job j = { .clip = "vga" };
	struct vuf *v = open_front(NULL);
	int ret;

	if (!v)
		return -1;
	ret = encode_jobs(v, &j, 1, false, "gop", true);
	if (!ret) {
		ret = check_gop(&j, 10);
		job_fini(&j);
	}
	vuf_close(v);
	return ret;
}

static int t_timestamps(void)
{
	struct enc_job j = { .clip = "vga" };
	struct vuf *v = open_front(NULL);
	const struct vvenc_result *r;
	int ret;

	if (!v)
		return -1;
	ret = encode_jobs(v, &j, 1, false, "ts", true);
	if (!ret) {
		r = vvenc_result(j.e);
		if (r->frames_out != j.raw.nframes)
			ret = failf("%u coded frames for %u inputs", r->frames_out, j.raw.nframes);
		for (unsigned k = 0; k < r->frames_out && !ret; k++)
			if (vvenc_frame(j.e, k)->timestamp != vvenc_ts(k))
				ret = failf("output frame %u carries timestamp %llu, input %u had %llu", k,
					    (unsigned long long)vvenc_frame(j.e, k)->timestamp, k,
					    (unsigned long long)vvenc_ts(k));
		job_fini(&j);
	}
	vuf_close(v);
	return ret;
}

static int expect(int got, int want, const char *what)
{
	if (got == want)
		return 0;
	return failf("%s: got %s, expected %s", what,
		     got < 0 ? "no answer" : vuf_cmd_name((uint32_t)got), vuf_cmd_name((uint32_t)want));
}

/* STREAM_CREATE + the raw format, returning both param sets. */
static int setup_stream(struct vuf *v, uint32_t sid, unsigned w, unsigned h, struct vuf_params *ip,
			struct vuf_params *op)
{
	int t = vuf_stream_create(v, sid, 0, 0, VIRTIO_VIDEO_FORMAT_FWHT, "e2e-enc");

	if (t != VIRTIO_VIDEO_RESP_OK_NODATA)
		return expect(t, VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_CREATE");
	t = vuf_get_params(v, sid, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, true, ip);
	if (t != VIRTIO_VIDEO_RESP_OK_GET_PARAMS)
		return expect(t, VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS_EXT input");
	ip->format = VIRTIO_VIDEO_FORMAT_YUV420;
	ip->frame_width = w;
	ip->frame_height = h;
	ip->crop.left = ip->crop.top = 0;
	ip->crop.width = w;
	ip->crop.height = h;
	ip->frame_rate = 30;
	t = vuf_set_params(v, sid, ip, true);
	if (t != VIRTIO_VIDEO_RESP_OK_NODATA)
		return expect(t, VIRTIO_VIDEO_RESP_OK_NODATA, "SET_PARAMS_EXT input");
	t = vuf_get_params(v, sid, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, true, ip);
	if (t != VIRTIO_VIDEO_RESP_OK_GET_PARAMS)
		return expect(t, VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS_EXT input");
	t = vuf_get_params(v, sid, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, true, op);
	if (t != VIRTIO_VIDEO_RESP_OK_GET_PARAMS)
		return expect(t, VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS_EXT output");
	if (ip->num_planes < 1 || ip->num_planes > VIRTIO_VIDEO_MAX_PLANES || !op->plane[0].plane_size)
		return failf("params: %u input planes, coded buffer %u bytes", ip->num_planes,
			     op->plane[0].plane_size);
	return 0;
}

static size_t frame_bytes(const struct vuf_params *ip, uint32_t *offs, uint32_t *sizes)
{
	size_t total = 0;

	for (unsigned p = 0; p < ip->num_planes; p++) {
		offs[p] = (uint32_t)total;
		sizes[p] = ip->plane[p].plane_size;
		total += ip->plane[p].plane_size;
	}
	return total;
}

/* The drain as the driver may do it: inputs queued, no output buffer yet,
 * V4L2_ENC_CMD_STOP. The drain must wait for output buffers; a second drain
 * and more input meanwhile are INVALID_OPERATION; once output buffers come,
 * every frame is returned, then an empty EOS buffer, then the drain answer. */
static int t_drain_before_outputs(void)
{
	const unsigned nin = 4, nout = 2;
	struct vuf *v = open_front(NULL);
	struct vuf_sglist in[5] = { { 0 } }, out[2] = { { 0 } };
	struct vuf_params ip, op;
	uint32_t offs[8] = { 0 }, sizes[8] = { 0 }, zero[8] = { 0 };
	uint64_t in_tok[4], out_tok[2], drain_tok, tok;
	bool in_q[4] = { false }, out_q[2] = { false }, drained = false, eos = false;
	unsigned frames = 0, ins_done = 0;
	uint8_t *pattern = NULL;
	size_t total;
	int64_t deadline;
	int r = 0, t;

	if (!v)
		return -1;
#define EXPECT(got, want, what) do { if ((r = expect((got), (want), (what)))) goto out; } while (0)
	if ((r = setup_stream(v, 30, 640, 480, &ip, &op)))
		goto out;
	total = frame_bytes(&ip, offs, sizes);
	pattern = malloc(total);
	if (!pattern) {
		r = failf("out of memory");
		goto out;
	}
	for (size_t i = 0; i < total; i++)
		pattern[i] = (uint8_t)(i * 7 + i / 640);
	for (unsigned i = 0; i < nin + 1; i++) {
		if (vuf_alloc_contig(v, total, (int)(i & 1), &in[i]) ||
		    vuf_sg_write(v, &in[i], 0, pattern, total)) {
			r = failf("guest memory: %s", vuf_error(v));
			goto out;
		}
		EXPECT(vuf_resource_create(v, 30, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, i + 1,
					   VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, ip.num_planes,
					   offs, &in[i], 1),
		       VIRTIO_VIDEO_RESP_OK_NODATA, "RESOURCE_CREATE input");
	}
	for (unsigned i = 0; i < nout; i++) {
		if (vuf_alloc_contig(v, op.plane[0].plane_size, (int)(i & 1), &out[i])) {
			r = failf("guest memory: %s", vuf_error(v));
			goto out;
		}
		EXPECT(vuf_resource_create(v, 30, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10 + i,
					   VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, 1, zero, &out[i], 1),
		       VIRTIO_VIDEO_RESP_OK_NODATA, "RESOURCE_CREATE output");
	}
	for (unsigned i = 0; i < nin; i++) {
		if (vuf_resource_queue(v, 30, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, i + 1, vvenc_ts(i),
				       ip.num_planes, sizes, &in_tok[i]) < 0) {
			r = failf("RESOURCE_QUEUE input: %s", vuf_error(v));
			goto out;
		}
		in_q[i] = true;
	}
	if (vuf_stream_drain_submit(v, 30, &drain_tok) < 0) {
		r = failf("STREAM_DRAIN: %s", vuf_error(v));
		goto out;
	}
	t_sleep_ms(300);
	vuf_reap(v, 0);
	if (vuf_done(v, drain_tok)) {
		t = vuf_wait_type(v, drain_tok, NULL, 0, 8, 0);
		r = failf("STREAM_DRAIN answered %s before any output buffer was queued",
			  t < 0 ? vuf_error(v) : vuf_cmd_name((uint32_t)t));
		goto out;
	}
	if (vuf_stream_drain_submit(v, 30, &tok) < 0) {
		r = failf("STREAM_DRAIN: %s", vuf_error(v));
		goto out;
	}
	EXPECT(vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS), VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION,
	       "STREAM_DRAIN while draining");
	if (vuf_resource_queue(v, 30, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, nin + 1, vvenc_ts(nin),
			       ip.num_planes, sizes, &tok) < 0) {
		r = failf("RESOURCE_QUEUE input: %s", vuf_error(v));
		goto out;
	}
	EXPECT(vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS), VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION,
	       "RESOURCE_QUEUE input while draining");
	for (unsigned i = 0; i < nout; i++) {
		if (vuf_resource_queue(v, 30, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10 + i, 0, 0, NULL,
				       &out_tok[i]) < 0) {
			r = failf("RESOURCE_QUEUE output: %s", vuf_error(v));
			goto out;
		}
		out_q[i] = true;
	}
	deadline = t_now_ms() + 60000;
	while (!(drained && eos && ins_done == nin)) {
		struct vuf_rq_result rr;
		bool known = false;

		if (t_now_ms() > deadline) {
			r = failf("after 60 s: %u of %u inputs done, %u frames, EOS %s, drain %s",
				  ins_done, nin, frames, eos ? "seen" : "missing",
				  drained ? "answered" : "pending");
			goto out;
		}
		if (vuf_wait_any(v, &tok, 100) < 0)
			continue;
		if (!drained && tok == drain_tok) {
			EXPECT(vuf_wait_type(v, tok, NULL, 0, 8, 0), VIRTIO_VIDEO_RESP_OK_NODATA,
			       "STREAM_DRAIN");
			drained = true;
			continue;
		}
		for (unsigned i = 0; i < nin && !known; i++) {
			if (!in_q[i] || in_tok[i] != tok)
				continue;
			known = true;
			in_q[i] = false;
			t = vuf_resource_queue_wait(v, tok, &rr, 0);
			if (t < 0 || (rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR)) {
				r = failf("input %u came back %s", i + 1,
					  t < 0 ? vuf_error(v) : "with FLAG_ERR");
				goto out;
			}
			ins_done++;
		}
		for (unsigned i = 0; i < nout && !known; i++) {
			if (!out_q[i] || out_tok[i] != tok)
				continue;
			known = true;
			out_q[i] = false;
			t = vuf_resource_queue_wait(v, tok, &rr, 0);
			if (t != VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE ||
			    (rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR)) {
				r = failf("output %u came back %s (flags 0x%x)", 10 + i,
					  t < 0 ? vuf_error(v) : vuf_cmd_name((uint32_t)t), rr.flags);
				goto out;
			}
			if (rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS) {
				if (rr.size || frames != nin || eos) {
					r = failf("EOS buffer with %u bytes after %u of %u frames%s",
						  rr.size, frames, nin, eos ? " (a second one)" : "");
					goto out;
				}
				eos = true;
				continue;
			}
			if (!rr.size || eos || rr.timestamp != vvenc_ts(frames)) {
				r = failf("output %u: %u bytes, timestamp %llu as frame %u (EOS %s)",
					  frames, rr.size, (unsigned long long)rr.timestamp, frames,
					  eos ? "already seen" : "not yet");
				goto out;
			}
			frames++;
			if (vuf_resource_queue(v, 30, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10 + i, 0, 0, NULL,
					       &out_tok[i]) < 0) {
				r = failf("RESOURCE_QUEUE output: %s", vuf_error(v));
				goto out;
			}
			out_q[i] = true;
		}
		if (!known)
			vuf_wait(v, tok, NULL, 0, 0);
	}
	EXPECT(vuf_stream_destroy(v, 30), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY");
	for (unsigned i = 0; i < nout; i++) {
		struct vuf_rq_result rr;

		if (out_q[i] && vuf_resource_queue_wait(v, out_tok[i], &rr, VUF_CMD_TIMEOUT_MS) < 0) {
			r = failf("output %u not returned after STREAM_DESTROY: %s", 10 + i,
				  vuf_error(v));
			goto out;
		}
	}
	if (v->ring_errors)
		r = failf("ring errors: %s", vuf_error(v));
out:
#undef EXPECT
	free(pattern);
	for (unsigned i = 0; i < 5; i++)
		vuf_sglist_free(&in[i]);
	for (unsigned i = 0; i < 2; i++)
		vuf_sglist_free(&out[i]);
	vuf_close(v);
	return r;
}

static int t_scattered(void)
{
	struct vvenc_opts o = { .scatter = true };

	return encode_one("vga", &o, NULL, "scatter");
}

static int t_scattered_per_plane_hd(void)
{
	struct vvenc_opts o = { .scatter = true, .per_plane = true };

	return encode_one("hd", &o, NULL, "perplane");
}

static int t_one_data_size(void)
{
	struct vvenc_opts o = { .one_data_size = true };

	return encode_one("vga", &o, NULL, "onesize");
}

static int t_indirect_no_event_idx(void)
{
	struct vuf_opts fo;

	vuf_opts_default(&fo);
	fo.use_indirect = true;
	fo.event_idx = false;
	fo.use_add_mem_reg = true;
	return encode_one("vga", NULL, &fo, "indirect");
}

static int t_two_encoders(void)
{
	struct enc_job j[2] = { { .clip = "vga" }, { .clip = "hd" } };
	struct vuf *v = open_front(NULL);
	int r;

	if (!v)
		return -1;
	j[0].o.stream_id = 11;
	j[1].o.stream_id = 12;
	j[1].o.scatter = true;
	r = encode_jobs(v, j, 2, true, "two", false);
	vuf_close(v);
	return r;
}

/* QUEUE_CLEAR of the raw queue mid-encode: queued inputs come back with
 * FLAG_ERR (or OK if already done), the encode continues, and the result is
 * a valid bitstream of the right frames. */
static int t_clear_input(void)
{
	struct enc_job j = { .clip = "vga" };
	struct vuf *v = open_front(NULL);
	const struct vvenc_result *r;
	struct vvdec_clip c = { 0 };
	char yuv[300], err[256];
	size_t ylen = 0;
	uint8_t *y = NULL;
	int ret, last = -1;
	bool after = false;

	if (!v)
		return -1;
	j.o.clear_after = 8;
	ret = encode_jobs(v, &j, 1, false, "clear", true);
	if (ret)
		goto out_v;
	r = vvenc_result(j.e);
	note("clear after 8 frames out: %u inputs sent, %u done, %u returned with FLAG_ERR, "
	     "%u frames out, resumed at frame %u", r->frames_sent, r->frames_in, r->cleared,
	     r->frames_out, r->clear_at);
	if (r->frames_in + r->cleared != r->frames_sent) {
		ret = failf("%u inputs sent, %u done + %u cleared", r->frames_sent, r->frames_in,
			    r->cleared);
		goto out;
	}
	/* an input returned with FLAG_ERR may still have been encoded (it was in
	 * the codec already): V4L2's STREAMOFF semantics; not checked */
	if (r->frames_out < 8 || r->frames_out > r->frames_sent) {
		ret = failf("%u frames out for %u inputs sent", r->frames_out, r->frames_sent);
		goto out;
	}
	for (unsigned k = 0; k < r->frames_out; k++) {
		int s = vvenc_frame(j.e, k)->src;

		if (s <= last) {
			ret = failf("output frame %u carries input %d's timestamp after input %d", k, s,
				    last);
			goto out;
		}
		last = s;
		after |= s >= (int)r->clear_at;
	}
	if (!after) {
		ret = failf("no frame sent after the clear (from %u on) was encoded", r->clear_at);
		goto out;
	}
	if (vvdec_clip_load(&c, j.out_path, err, sizeof(err))) {
		ret = failf("not a FWHT stream: %s", err);
		goto out;
	}
	if (c.nframes != r->frames_out) {
		ret = failf("%s holds %u FWHT frames, %u were returned", j.out_path, c.nframes,
			    r->frames_out);
		goto out;
	}
	for (unsigned k = 0; k < c.nframes; k++)
		if (be32(c.data + c.off[k] + 12) != 640 || be32(c.data + c.off[k] + 16) != 480) {
			ret = failf("FWHT frame %u is %ux%u", k, be32(c.data + c.off[k] + 12),
				    be32(c.data + c.off[k] + 16));
			goto out;
		}
	snprintf(yuv, sizeof(yuv), "%s.yuv", j.out_path);
	if ((ret = v4l2_decode(j.out_path, yuv, 640, 480, r->frames_out)))
		goto out;
	y = slurp(yuv, &ylen);
	if (!y || ylen != (size_t)r->frames_out * 640 * 480 * 3 / 2)
		ret = failf("v4l2-ctl decoded %zu bytes, expected %u frames of 640x480 (%zu bytes)",
			    ylen, r->frames_out, (size_t)r->frames_out * 640 * 480 * 3 / 2);
out:
	free(y);
	vvdec_clip_free(&c);
	job_fini(&j);
out_v:
	vuf_close(v);
	return ret;
}

/* STREAM_DESTROY mid-encode: every queued buffer comes back, the stream is
 * gone, and the next stream on the connection encodes correctly. */
static int t_destroy_mid_encode(void)
{
	struct enc_job j = { .clip = "vga" }, k = { .clip = "vga" };
	struct vuf *v = open_front(NULL);
	const struct vvenc_result *r;
	uint32_t sizes[3] = { 1000, 1000, 1000 };
	uint64_t tok;
	int ret, t;

	if (!v)
		return -1;
	j.o.stream_id = 40;
	j.o.destroy_after = 5;
	if ((ret = job_init(v, &j, "destroy")))
		goto out;
	vvenc_run_all(&j.e, 1);
	r = vvenc_result(j.e);
	if (r->err[0]) {
		ret = failf("%s", r->err);
		goto out;
	}
	if (!r->destroyed) {
		ret = failf("the stream was not destroyed mid-encode");
		goto out;
	}
	note("destroyed after %u frames out: %u queued buffers returned (%u with FLAG_ERR, "
	     "%u with a finished frame)", r->frames_at_destroy, r->returned, r->returned_err,
	     r->frames_out - r->frames_at_destroy);
	t = vuf_resource_queue(v, 40, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, vvenc_ts(0), 3, sizes, &tok);
	if (t >= 0)
		t = vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS);
	if ((ret = expect(t, VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID,
			  "RESOURCE_QUEUE on a destroyed stream")))
		goto out;
	k.o.stream_id = 41;
	ret = encode_jobs(v, &k, 1, true, "afterdestroy", false);
out:
	job_fini(&j);
	vuf_close(v);
	return ret;
}

/* dev-encoder.rst, Drain: every frame queued before the drain is encoded
 * before it ends, however many wait inside the daemon for a V4L2 buffer. */
static int t_drain_12(void)
{
	struct vvenc_opts o = { .n_in = 12, .early_drain = true };

	return encode_one("e12", &o, NULL, "drain12");
}

static int t_drain_32(void)
{
	struct vvenc_opts o = { .n_in = 32, .early_drain = true };

	return encode_one("e32", &o, NULL, "drain32");
}

static int t_drain_inputs_first(void)
{
	struct vvenc_opts o = { .n_in = 12, .early_drain = true, .outputs_late = true };

	return encode_one("e12", &o, NULL, "inputsfirst");
}

/* The next input after a drain restarts the encoder; no frame from before
 * the drain comes out after it. */
static int t_drain_resume(void)
{
	struct vvenc_opts o = { .n_in = 12, .early_drain = true, .resume = 2 };

	return encode_one("e12", &o, NULL, "resume");
}

/* Codec controls vicodec's encoder does not have. The guest driver reads
 * PROFILE, BITRATE, BITRATE_PEAK, BITRATE_MODE and PREPEND_SPSPPS_TO_IDR at
 * every open and builds V4L2 controls from the values (BITRATE and
 * BITRATE_PEAK in 1..1000000000): each must read as a valid value, take a
 * valid SET_CONTROL, read it back, and refuse an invalid one. PROFILE and
 * LEVEL do not exist for FWHT. */
static int t_controls(void)
{
	static const struct { uint32_t ctrl, lo, hi, set, bad; } ctrls[] = {
		{ VIRTIO_VIDEO_CONTROL_BITRATE, 1, 1000000000, 3000000, 0 },
		{ VIRTIO_VIDEO_CONTROL_BITRATE_PEAK, 1, 1000000000, 6000000, 0 },
		{ VIRTIO_VIDEO_CONTROL_BITRATE_MODE, 0, 1, 1, 2 },
		{ VIRTIO_VIDEO_CONTROL_PREPEND_SPSPPS_TO_IDR, 0, 1, 1, 7 },
	};
	struct vuf *v = open_front(NULL);
	struct enc_job j = { .clip = "vga" };
	uint32_t val, vals[16];
	unsigned num = 0;
	char what[96];
	int r = 0, t;

	if (!v)
		return -1;
	t = vuf_stream_create(v, 50, 0, 0, VIRTIO_VIDEO_FORMAT_FWHT, "controls");
	if ((r = expect(t, VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_CREATE")))
		goto out;
	/* the driver builds timeperframe as 1/frame_rate from these */
	for (uint32_t q = VIRTIO_VIDEO_QUEUE_TYPE_INPUT; q <= VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT; q++) {
		struct vuf_params p;

		if ((r = expect(vuf_get_params(v, 50, q, true, &p), VIRTIO_VIDEO_RESP_OK_GET_PARAMS,
				"GET_PARAMS_EXT")))
			goto out;
		if (p.frame_rate == 0) {
			r = failf("GET_PARAMS_EXT %s: frame_rate 0",
				  q == VIRTIO_VIDEO_QUEUE_TYPE_INPUT ? "input" : "output");
			goto out;
		}
	}
	for (size_t i = 0; i < sizeof(ctrls) / sizeof(ctrls[0]) && !r; i++) {
		const char *name = vuf_control_name(ctrls[i].ctrl);

		snprintf(what, sizeof(what), "GET_CONTROL %s", name);
		if ((r = expect(vuf_get_control(v, 50, ctrls[i].ctrl, &val),
				VIRTIO_VIDEO_RESP_OK_GET_CONTROL, what)))
			break;
		if (val < ctrls[i].lo || val > ctrls[i].hi) {
			r = failf("%s reads %u, outside the guest driver's %u..%u", name, val,
				  ctrls[i].lo, ctrls[i].hi);
			break;
		}
		snprintf(what, sizeof(what), "SET_CONTROL %s=%u", name, ctrls[i].set);
		if ((r = expect(vuf_set_control(v, 50, ctrls[i].ctrl, ctrls[i].set),
				VIRTIO_VIDEO_RESP_OK_NODATA, what)))
			break;
		snprintf(what, sizeof(what), "SET_CONTROL %s=%u (invalid)", name, ctrls[i].bad);
		if ((r = expect(vuf_set_control(v, 50, ctrls[i].ctrl, ctrls[i].bad),
				VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, what)))
			break;
		if ((r = expect(vuf_get_control(v, 50, ctrls[i].ctrl, &val),
				VIRTIO_VIDEO_RESP_OK_GET_CONTROL, what)))
			break;
		if (val != ctrls[i].set)
			r = failf("%s reads %u after SET_CONTROL %u", name, val, ctrls[i].set);
	}
	if (r)
		goto out;
	for (uint32_t ctl = VIRTIO_VIDEO_CONTROL_PROFILE; ctl <= VIRTIO_VIDEO_CONTROL_LEVEL && !r;
	     ctl++) {
		snprintf(what, sizeof(what), "GET_CONTROL %s for FWHT", vuf_control_name(ctl));
		r = expect(vuf_get_control(v, 50, ctl, &val),
			   VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL, what);
		snprintf(what, sizeof(what), "SET_CONTROL %s for FWHT", vuf_control_name(ctl));
		if (!r)
			r = expect(vuf_set_control(v, 50, ctl, 0x100),
				   VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL, what);
	}
	if (r)
		goto out;
	r = expect(vuf_query_control(v, 50, VIRTIO_VIDEO_CONTROL_PROFILE, VIRTIO_VIDEO_FORMAT_FWHT,
				     vals, 16, &num),
		   VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL, "QUERY_CONTROL PROFILE for FWHT");
	if (r)
		goto out;
	r = expect(vuf_set_control(v, 50, VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME, 1),
		   VIRTIO_VIDEO_RESP_OK_NODATA, "SET_CONTROL FORCE_KEYFRAME");
	if (r)
		goto out;
	if ((r = expect(vuf_stream_destroy(v, 50), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY")))
		goto out;
	/* nothing broken: a stream on the same connection encodes correctly */
	j.o.stream_id = 51;
	r = encode_jobs(v, &j, 1, true, "aftercontrols", false);
out:
	vuf_close(v);
	return r;
}

static int queue_answer(struct vuf *v, uint32_t sid, uint32_t q, uint32_t res, unsigned nsizes,
			const uint32_t *sizes)
{
	uint64_t tok;
	int t = vuf_resource_queue(v, sid, q, res, 0, nsizes, sizes, &tok);

	return t < 0 ? t : vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS);
}

static int raw_answer(struct vuf *v, uint32_t type, uint32_t sid, size_t len, size_t resp_len)
{
	uint8_t req[256] = { 0 }, resp[256];
	int t;

	memcpy(req, &(uint32_t){ htole32(type) }, 4);
	memcpy(req + 4, &(uint32_t){ htole32(sid) }, 4);
	memcpy(req + 8, &(uint32_t){ htole32(VIRTIO_VIDEO_QUEUE_TYPE_INPUT) }, 4);
	t = vuf_cmd(v, req, len, NULL, 0, resp, resp_len, VUF_CMD_TIMEOUT_MS);
	return t >= 8 ? (int)le32toh(*(uint32_t *)resp) : -1;
}

/* Bad input from the guest: a clear error each, nothing lost, and the next
 * stream on the same connection encodes correctly. */
static int t_bad_input(void)
{
	struct vuf *v = open_front(NULL);
	struct vuf_sglist good = { 0 }, bad = { 0 };
	struct vuf_params ip, op, tmp;
	struct vuf_sg e;
	uint32_t offs[8] = { 0 }, sizes[8] = { 0 }, big[8] = { 0 }, nine[9] = { 0 };
	size_t total;
	uint64_t tok;
	int r = 0, t;

	if (!v)
		return -1;
#define EXPECT(got, want, what) do { if ((r = expect((got), (want), (what)))) goto out; } while (0)
	if ((r = setup_stream(v, 5, 640, 480, &ip, &op)))
		goto out;
	total = frame_bytes(&ip, offs, sizes);
	EXPECT(vuf_stream_create(v, 5, 0, 0, VIRTIO_VIDEO_FORMAT_FWHT, "dup"),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, "STREAM_CREATE with an id in use");
	EXPECT(vuf_stream_create(v, 6, 0, 0, VIRTIO_VIDEO_FORMAT_H264, "h264"),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "STREAM_CREATE for a format vicodec lacks");
	EXPECT(vuf_stream_create(v, 6, 1, 1, VIRTIO_VIDEO_FORMAT_FWHT, "obj"),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "STREAM_CREATE with VIRTIO_OBJECT memory");
	/* unknown stream ids */
	EXPECT(vuf_get_params(v, 77, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, true, &tmp),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, "GET_PARAMS_EXT on an unknown stream");
	EXPECT(vuf_set_params(v, 77, &ip, true), VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID,
	       "SET_PARAMS_EXT on an unknown stream");
	EXPECT(vuf_queue_clear(v, 77, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, "QUEUE_CLEAR on an unknown stream");
	EXPECT(vuf_stream_drain(v, 77, VUF_CMD_TIMEOUT_MS), VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID,
	       "STREAM_DRAIN on an unknown stream");
	EXPECT(vuf_resource_destroy_all(v, 77, VIRTIO_VIDEO_QUEUE_TYPE_INPUT),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, "RESOURCE_DESTROY_ALL on an unknown stream");
	EXPECT(vuf_stream_destroy(v, 77), VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID,
	       "STREAM_DESTROY of an unknown stream");
	/* resources */
	if (vuf_alloc_contig(v, total, 1, &good)) {
		r = failf("guest memory: %s", vuf_error(v));
		goto out;
	}
	EXPECT(vuf_resource_create(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, 1, ip.num_planes, offs,
				   &good, 1),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "RESOURCE_CREATE");
	EXPECT(vuf_resource_create(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, 1, ip.num_planes, offs,
				   &good, 1),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID, "RESOURCE_CREATE with an id in use");
	EXPECT(vuf_resource_create(v, 77, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 2, 1, ip.num_planes, offs,
				   &good, 1),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, "RESOURCE_CREATE on an unknown stream");
	EXPECT(vuf_resource_create(v, 5, 0x555, 2, 1, ip.num_planes, offs, &good, 1),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_CREATE with a bad queue type");
	EXPECT(vuf_resource_create(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 2, 3, ip.num_planes, offs,
				   &good, 1),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_CREATE with a bad planes layout");
	EXPECT(vuf_resource_create(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 2, 1, 9, offs, &good, 1),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_CREATE with 9 planes");
	/* entries outside guest memory: below both regions, across a region's
	 * end, wrapping 2^64, empty */
	bad.e = &e;
	bad.n = 1;
	e = (struct vuf_sg){ 0x1000, (uint32_t)total };
	EXPECT(vuf_resource_create(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 3, 1, ip.num_planes, offs,
				   &bad, 1),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_CREATE outside guest memory");
	e = (struct vuf_sg){ VUF_REGION1_GPA + v->reg[1].size - 4096, (uint32_t)total };
	EXPECT(vuf_resource_create(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 3, 1, ip.num_planes, offs,
				   &bad, 1),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_CREATE across a region's end");
	e = (struct vuf_sg){ 0xfffffffffff00000ull, (uint32_t)total };
	EXPECT(vuf_resource_create(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 3, 1, ip.num_planes, offs,
				   &bad, 1),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_CREATE wrapping 2^64");
	e = (struct vuf_sg){ VUF_REGION0_GPA, 0 };
	EXPECT(vuf_resource_create(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 3, 1, ip.num_planes, offs,
				   &bad, 1),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_CREATE with an empty entry");
	/* queueing */
	EXPECT(queue_answer(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 99, ip.num_planes, sizes),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID, "RESOURCE_QUEUE input of an unknown resource");
	EXPECT(queue_answer(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 99, 0, NULL),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID, "RESOURCE_QUEUE output of an unknown resource");
	big[0] = (uint32_t)total + 1;
	EXPECT(queue_answer(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, 1, big),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_QUEUE with one data size larger than the resource");
	memcpy(big, sizes, sizeof(big));
	big[ip.num_planes - 1] += 4096;
	EXPECT(queue_answer(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, ip.num_planes, big),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_QUEUE with plane data sizes beyond the resource");
	EXPECT(queue_answer(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, 9, nine),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_QUEUE with 9 data sizes");
	EXPECT(queue_answer(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, 1, nine),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_QUEUE with no data");
	EXPECT(queue_answer(v, 5, 0x999, 1, ip.num_planes, sizes),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_QUEUE with a bad queue type");
	EXPECT(queue_answer(v, 88, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, ip.num_planes, sizes),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, "RESOURCE_QUEUE on an unknown stream");
	/* wrong request sizes */
	EXPECT(raw_answer(v, VIRTIO_VIDEO_CMD_RESOURCE_QUEUE, 5, 60, 24),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_QUEUE of 60 bytes");
	EXPECT(raw_answer(v, VIRTIO_VIDEO_CMD_GET_PARAMS_EXT, 5, 12, 128),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "GET_PARAMS_EXT of 12 bytes");
	EXPECT(raw_answer(v, VIRTIO_VIDEO_CMD_SET_PARAMS_EXT, 5, 64, 8),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "SET_PARAMS_EXT of 64 bytes");
	/* a destroyed stream is gone */
	EXPECT(vuf_stream_destroy(v, 5), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY");
	t = vuf_resource_queue(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, 0, ip.num_planes, sizes, &tok);
	EXPECT(t < 0 ? t : vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, "RESOURCE_QUEUE on a destroyed stream");
	EXPECT(vuf_stream_destroy(v, 5), VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID,
	       "STREAM_DESTROY twice");
	if (v->ring_errors)
		r = failf("ring errors: %s", vuf_error(v));
	/* nothing lost: a stream on the same connection encodes correctly */
	if (!r) {
		struct enc_job j = { .clip = "vga" };

		j.o.stream_id = 7;
		r = encode_jobs(v, &j, 1, true, "afterbad", false);
	}
out:
#undef EXPECT
	vuf_sglist_free(&good);
	vuf_close(v);
	return r;
}

/* A GOP of 5 through the daemon's generic V4L2 control option. */
static int t_gop_ctrl(void)
{
	static struct tdaemon d2 = { .pid = -1 };
	char err[256], arg[64], how[128];
	struct enc_job j = { .clip = "vga" };
	struct vuf *v;
	int r, st;

	snprintf(arg, sizeof(arg), "--v4l2-ctrl=0x%08x=5", CID_GOP_SIZE);
	if (tdaemon_start(&d2, daemon_path, enc_node, work, "daemon-gop5", arg, err, sizeof(err)))
		return failf("starting the daemon with %s: %s", arg, err);
	suite.extra_log = &d2;
	v = open_at(d2.sock, NULL);
	r = v ? 0 : -1;
	if (!r) {
		r = encode_jobs(v, &j, 1, false, "gop5", true);
		if (!r) {
			if (vvenc_result(j.e)->frames_out != j.raw.nframes)
				r = failf("%u coded frames for %u inputs", vvenc_result(j.e)->frames_out,
					  j.raw.nframes);
			else
				r = check_gop(&j, 5);
			job_fini(&j);
		}
		vuf_close(v);
	}
	if (!r && !tdaemon_alive(&d2, how, sizeof(how)))
		r = failf("the daemon with %s died (%s)", arg, how);
	if (tdaemon_stop(&d2, SIGTERM, 5000, &st) && !r)
		r = failf("the daemon with %s did not exit on SIGTERM", arg);
	if (r)
		return r;
	suite.extra_log = NULL;
	return 0;
}

/* ---- main ------------------------------------------------------------------------------ */

int main(void)
{
	static const struct { const char *name; int (*fn)(void); } cases[] = {
		{ "encode 640x480, decodes byte-exact like a direct v4l2-ctl encode", t_encode_640 },
		{ "encode 1920x1080, decodes byte-exact like a direct v4l2-ctl encode", t_encode_1080 },
		{ "keyframe flags: IFRAME at 0, 10, 20 (GOP 10), PFRAME otherwise", t_keyframes },
		{ "timestamps: output frame k carries input k's", t_timestamps },
		{ "drain before output buffers: waits, INVALID_OPERATION meanwhile, empty EOS",
		  t_drain_before_outputs },
		{ "drain right after the 12th queued frame: every frame, in order", t_drain_12 },
		{ "drain right after the 32nd queued frame: every frame, in order", t_drain_32 },
		{ "12 frames and the drain before any output resource", t_drain_inputs_first },
		{ "encode again after a drain, twice: no stale frame", t_drain_resume },
		{ "scattered input/output pages over both regions (NON_CONTIG)", t_scattered },
		{ "scattered per-plane input at 1080p", t_scattered_per_plane_hd },
		{ "one data size for the whole raw frame (as the Linux driver sends)", t_one_data_size },
		{ "indirect descriptors, no EVENT_IDX, ADD_MEM_REG", t_indirect_no_event_idx },
		{ "two encoders concurrently (640x480 + scattered 1920x1080)", t_two_encoders },
		{ "QUEUE_CLEAR input mid-encode, then continue to a valid stream", t_clear_input },
		{ "STREAM_DESTROY mid-encode returns every buffer, next stream exact", t_destroy_mid_encode },
		{ "controls vicodec lacks: valid defaults, remembered, checked", t_controls },
		{ "bad input: clear errors, then a correct encode", t_bad_input },
		{ "GOP 5 via --v4l2-ctrl=0x009909cb=5: keyframes every 5 frames", t_gop_ctrl },
	};

	setvbuf(stdout, NULL, _IOLBF, 0);
	daemon_path = getenv("VUV_DAEMON");
	dec_node = getenv("VICODEC_DEC");
	enc_node = getenv("VICODEC_ENC");
	if (!daemon_path || !dec_node || !enc_node) {
		printf("e2e_enc: VUV_DAEMON, VICODEC_DEC and VICODEC_ENC must be set (run in the test VM)\n");
		printf("0 passed, 1 failed\n");
		return 1;
	}
	if (sh("rm -rf %s && mkdir -p %s", work, work)) {
		printf("FAIL preparing test content: %s\n", why);
		printf("0 passed, 1 failed\n");
		return 1;
	}
	for (size_t i = 0; i < sizeof(clips) / sizeof(clips[0]); i++)
		if (make_clip(&clips[i])) {
			printf("FAIL preparing test content: %s\n", why);
			printf("0 passed, 1 failed\n");
			return 1;
		}
	printf("test content ready in %s\n", work);
	suite.daemon = daemon_path;
	suite.device = enc_node;
	suite.dir = work;
	suite.name = "daemon";
	suite.args = "-v";
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		tsuite_case(&suite, cases[i].name, cases[i].fn);
	tsuite_stop(&suite, 5000);
	return tsuite_end(&suite);
}
