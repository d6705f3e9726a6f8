/* SPDX-License-Identifier: MIT */
/*
 * Host unit tests of the device model (vuvideo.c): the daemon built on the
 * fake codec (tests/fake_m2m.c, build/tests/vhost-user-video-fake), driven
 * over a real unix socket by the test frontend playing the guest driver.
 * No VM, no V4L2. Every decoded frame and coded buffer is checked byte for
 * byte against tests/fake_codec.h.
 *
 * VUV_FAKE_DAEMON: the daemon (default build/tests/vhost-user-video-fake);
 * VUV_DAEMON_WRAPPER: e.g. valgrind; VUV_CASE: run matching cases only;
 * VUV_KEEP_LOGS=1: keep the logs when everything passed.
 * The daemons run with VUV_FAKE_STRICT=1: a QBUF of a buffer the codec
 * holds aborts them (tests/fake_m2m.c).
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/videodev2.h>

#include "fake_codec.h"
#include "tproc.h"
#include "vufront.h"
#include "vvdec.h"
#include "vvenc.h"

static struct tsuite suite = { .dmn = { .pid = -1 } };
static char work[] = "/tmp/vuv-unit-XXXXXX";
static bool mplane;

static bool is_encoder_dev(void)
{
	return strstr(suite.device, "encoder") != NULL;
}

#define W 320u
#define H 240u
/* the size of decode_exact's clip and encode_exact's frames (W x H but
 * for the dmabuf cases) */
static unsigned job_w = W, job_h = H;

static struct vuf *cur_front;	/* closed after the case if it returned early */

static struct vuf *open_front(const struct vuf_opts *o)
{
	char err[256];
	struct vuf_opts def;
	struct vuf *v;

	if (!o) {
		vuf_opts_default(&def);
		o = &def;
	}
	def = *o;
	def.connect_timeout_ms = 60000;	/* a daemon under valgrind starts slowly */
	v = vuf_open(suite.dmn.sock, &def, err, sizeof(err));
	if (!v)
		failf("frontend: %s", err);
	cur_front = v;
	return v;
}

/* The frontend saw nothing wrong on the rings, and no chain is left. */
static int close_front(struct vuf *v, int r)
{
	if (!r && v->ring_errors)
		r = failf("%u ring errors: %s", v->ring_errors, vuf_error(v));
	if (!r && vuf_in_flight(v))
		r = failf("%u chains never answered", vuf_in_flight(v));
	vuf_close(v);
	if (cur_front == v)
		cur_front = NULL;
	return r;
}

/* ---- clips ------------------------------------------------------------------- */

/* Append one frame of w x h with payload_len bytes derived from tag. */
static void clip_add(struct vvdec_clip *c, uint32_t w, uint32_t h, size_t payload_len, unsigned tag)
{
	size_t fl = FK_HDR + payload_len;

	c->data = realloc(c->data, c->len + fl);
	c->off = realloc(c->off, (c->nframes + 1) * sizeof(*c->off));
	c->size = realloc(c->size, (c->nframes + 1) * sizeof(*c->size));
	if (!c->data || !c->off || !c->size)
		abort();
	fk_header(c->data + c->len, w, h, c->nframes % 10 ? 0 : FK_I_FRAME, (uint32_t)payload_len);
	for (size_t j = 0; j < payload_len; j++)
		c->data[c->len + FK_HDR + j] = (uint8_t)(tag * 131 + j * 7 + (j >> 8));
	c->off[c->nframes] = c->len;
	c->size[c->nframes] = fl;
	c->nframes++;
	c->len += fl;
}

static void clip_make(struct vvdec_clip *c, unsigned n, uint32_t w, uint32_t h, unsigned seed)
{
	memset(c, 0, sizeof(*c));
	for (unsigned i = 0; i < n; i++)
		clip_add(c, w, h, 60 + (i * 13) % 200, seed * 1000 + i);
}

/* Check the decoded output: frame k is input `in order ? k : any`, and is
 * the fake's pattern for that input's frame, whole. */
static int check_decoded(struct vvdec *d, const struct vvdec_clip *c, const uint8_t *out,
			 size_t len, uint32_t fourcc, bool in_order)
{
	const struct vvdec_result *r = vvdec_result(d);
	size_t off = 0;

	for (unsigned k = 0; k < r->frames_out; k++) {
		int n = vvdec_frame_input(d, k);
		const uint8_t *f;
		uint32_t seed, w, h;
		size_t size;

		CHECK(n >= 0, "output frame %u has no input's timestamp", k);
		CHECK(!in_order || n == (int)k, "output frame %u carries the timestamp of input %d", k, n);
		f = c->data + c->off[(unsigned)n % c->nframes];
		w = fk_be32(f + 12);
		h = fk_be32(f + 16);
		size = (size_t)fk_align(w) * fk_align(h) * 3 / 2;
		seed = fk_seed(f + FK_HDR, fk_be32(f + 40)) ^ fourcc;
		CHECK(off + size <= len, "output frame %u: only %zu of %zu bytes", k, len - off, size);
		for (size_t i = 0; i < size; i++)
			CHECK(out[off + i] == fk_pixel(seed, i),
			      "output frame %u (input %d) differs at byte %zu", k, n, i);
		off += size;
	}
	CHECK(off == len, "%zu bytes of output beyond the frames", len - off);
	return 0;
}

struct djob {
	struct vvdec_clip c;
	struct vvdec_opts o;
	struct vvdec *d;
	FILE *f;
	char *out;
	size_t out_len;
};

/* Decode j->c with j->o on a new connection; fo may be NULL. */
static int decode(struct djob *j, const struct vuf_opts *fo)
{
	struct vuf *v = open_front(fo);
	int r;

	if (!v)
		return -1;
	if (!j->o.stream_id)
		j->o.stream_id = 1;
	j->o.timeout_ms = 30000;
	j->f = open_memstream(&j->out, &j->out_len);
	j->d = vvdec_new(v, &j->c, j->f, &j->o);
	if (!j->f || !j->d)
		return close_front(v, failf("out of memory"));
	vvdec_run_all(&j->d, 1);
	fclose(j->f);
	j->f = NULL;
	r = vvdec_result(j->d)->err[0] ? failf("%s", vvdec_result(j->d)->err) : 0;
	return close_front(v, r);
}

static void djob_free(struct djob *j)
{
	vvdec_free(j->d);
	free(j->out);
	vvdec_clip_free(&j->c);
}

/* Decode n frames with options o: every frame, in order, exact, every drain. */
static int decode_exact(unsigned n, const struct vvdec_opts *o, const struct vuf_opts *fo)
{
	struct djob j = { .o = *o };
	const struct vvdec_result *r;
	int ret;

	clip_make(&j.c, n, job_w, job_h, n);
	ret = decode(&j, fo);
	r = j.d ? vvdec_result(j.d) : NULL;
	if (!ret && !(r->drained && r->eos))
		ret = failf("drain %s, EOS %s", r->drained ? "answered" : "not answered",
			    r->eos ? "seen" : "missing");
	if (!ret && r->frames_out != n * (1 + o->resume))
		ret = failf("%u frames out of %u", r->frames_out, n * (1 + o->resume));
	if (!ret && r->drains != 1 + o->resume)
		ret = failf("%u drains of %u", r->drains, 1 + o->resume);
	if (!ret && r->res_changes != 1)
		ret = failf("%u DECODER_RESOLUTION_CHANGED events, 1 expected", r->res_changes);
	if (!ret)
		ret = check_decoded(j.d, &j.c, (uint8_t *)j.out, j.out_len, V4L2_PIX_FMT_YUV420, true);
	djob_free(&j);
	return ret;
}

/* ---- decoder cases -------------------------------------------------------------- */

static int t_dec_basic(void)
{
	return decode_exact(30, &(struct vvdec_opts){ 0 }, NULL);
}

static int t_dec_drain_12(void)
{
	return decode_exact(12, &(struct vvdec_opts){ .n_in = 12, .early_drain = true }, NULL);
}

static int t_dec_drain_32(void)
{
	return decode_exact(32, &(struct vvdec_opts){ .n_in = 32, .early_drain = true }, NULL);
}

static int t_dec_drain_before_outputs(void)
{
	return decode_exact(12, &(struct vvdec_opts){ .n_in = 12, .early_drain = true, .eager = true },
			    NULL);
}

static int t_dec_resume(void)
{
	return decode_exact(10, &(struct vvdec_opts){ .n_in = 12, .early_drain = true, .resume = 2 },
			    NULL);
}

static int t_dec_deep_queue(void)
{
	struct vuf_opts fo;

	vuf_opts_default(&fo);
	fo.queue_size = 64;
	return decode_exact(48, &(struct vvdec_opts){ .n_in = 48, .early_drain = true }, &fo);
}

static int t_dec_scatter_per_plane(void)
{
	return decode_exact(8, &(struct vvdec_opts){ .scatter = true, .per_plane = true }, NULL);
}

static int t_dec_nv12(void)
{
	struct djob j = { .o = { .out_format = VIRTIO_VIDEO_FORMAT_NV12 } };
	int r;

	clip_make(&j.c, 6, W, H, 7);
	r = decode(&j, NULL);
	if (!r && vvdec_result(j.d)->frames_out != 6)
		r = failf("%u frames of 6", vvdec_result(j.d)->frames_out);
	if (!r)
		r = check_decoded(j.d, &j.c, (uint8_t *)j.out, j.out_len, V4L2_PIX_FMT_NV12, true);
	djob_free(&j);
	return r;
}

/* Frames larger than the codec's bitstream buffers: split across them. */
static int t_dec_split_frames(void)
{
	struct djob j = { .o = { .n_in = 4 } };
	int r;

	memset(&j.c, 0, sizeof(j.c));
	for (unsigned i = 0; i < 5; i++)	/* the buffers hold 44 + 320*240*3/4 bytes */
		clip_add(&j.c, W, H, i & 1 ? 150000 : 40000, 900 + i);
	r = decode(&j, NULL);
	if (!r && vvdec_result(j.d)->frames_out != 5)
		r = failf("%u frames of 5", vvdec_result(j.d)->frames_out);
	if (!r)
		r = check_decoded(j.d, &j.c, (uint8_t *)j.out, j.out_len, V4L2_PIX_FMT_YUV420, true);
	djob_free(&j);
	return r;
}

/* 320x240 then 640x480: two events, every frame of both sizes. */
static int t_dec_resolution_change(void)
{
	struct djob j = { .o = { .n_in = 6 } };
	int r;

	memset(&j.c, 0, sizeof(j.c));
	for (unsigned i = 0; i < 8; i++)
		clip_add(&j.c, W, H, 100 + i, 500 + i);
	for (unsigned i = 0; i < 5; i++)
		clip_add(&j.c, 640, 480, 100 + i, 600 + i);
	r = decode(&j, NULL);
	if (!r && vvdec_result(j.d)->res_changes != 2)
		r = failf("%u DECODER_RESOLUTION_CHANGED events, 2 expected",
			  vvdec_result(j.d)->res_changes);
	if (!r && vvdec_result(j.d)->frames_out != 13)
		r = failf("%u frames of 13", vvdec_result(j.d)->frames_out);
	if (!r)
		r = check_decoded(j.d, &j.c, (uint8_t *)j.out, j.out_len, V4L2_PIX_FMT_YUV420, true);
	djob_free(&j);
	return r;
}

/* QUEUE_CLEAR input mid-stream, then on at frame 20: what comes out is
 * exact, and nothing from before the seek comes after it. */
static int t_dec_seek(void)
{
	struct djob j = { .o = { .seek_after = 5, .seek_to = 20 } };
	const struct vvdec_result *res;
	int r, last = -1;

	clip_make(&j.c, 30, W, H, 3);
	r = decode(&j, NULL);
	res = j.d ? vvdec_result(j.d) : NULL;
	if (!r)
		r = check_decoded(j.d, &j.c, (uint8_t *)j.out, j.out_len, V4L2_PIX_FMT_YUV420, false);
	for (unsigned k = 0; !r && k < res->frames_out; k++) {
		int n = vvdec_frame_input(j.d, k);

		if (n <= last)
			r = failf("output %u is input %d after input %d", k, n, last);
		last = n;
	}
	if (!r && vvdec_frame_input(j.d, res->frames_out - 1) != 29)
		r = failf("the last frame is input %d, not 29", vvdec_frame_input(j.d, res->frames_out - 1));
	djob_free(&j);
	return r;
}

static int t_dec_two_streams(void)
{
	struct vuf *v = open_front(NULL);
	struct vvdec_clip c[2];
	struct vvdec *d[2];
	FILE *f[2];
	char *out[2] = { 0 };
	size_t len[2] = { 0 };
	int r = 0;

	if (!v)
		return -1;
	for (int i = 0; i < 2; i++) {
		clip_make(&c[i], 10 + 5 * (unsigned)i, W, H, 40 + (unsigned)i);
		f[i] = open_memstream(&out[i], &len[i]);
		d[i] = vvdec_new(v, &c[i], f[i], &(struct vvdec_opts){ .stream_id = 7 + (unsigned)i,
								       .timeout_ms = 30000 });
	}
	vvdec_run_all(d, 2);
	for (int i = 0; i < 2; i++) {
		fclose(f[i]);
		if (!r && vvdec_result(d[i])->err[0])
			r = failf("stream %d: %s", i, vvdec_result(d[i])->err);
		if (!r && vvdec_result(d[i])->frames_out != c[i].nframes)
			r = failf("stream %d: %u frames of %u", i, vvdec_result(d[i])->frames_out,
				  c[i].nframes);
		if (!r)
			r = check_decoded(d[i], &c[i], (uint8_t *)out[i], len[i], V4L2_PIX_FMT_YUV420, true);
		vvdec_free(d[i]);
		vvdec_clip_free(&c[i]);
		free(out[i]);
	}
	return close_front(v, r);
}

/* ---- raw commands ------------------------------------------------------------------ */

/* Send one request (and an optional payload descriptor); the response type,
 * or -errno. */
static int send_req(struct vuf *v, const void *req, size_t len, const void *pl, size_t pl_len,
		    void *resp, size_t resp_len)
{
	uint8_t buf[512];
	int n;

	if (!resp) {
		resp = buf;
		resp_len = sizeof(buf);
	}
	n = vuf_cmd(v, req, len, pl, pl_len, resp, resp_len, VUF_CMD_TIMEOUT_MS);
	if (n < 0)
		return n;
	if (n < 8)
		return -EPROTO;
	return (int)le32toh(*(uint32_t *)resp);
}

static int expect(int got, int want, const char *what)
{
	if (got == want)
		return 0;
	return failf("%s: answered %s (%d), expected %s", what,
		     got < 0 ? "nothing" : vuf_cmd_name((uint32_t)got), got, vuf_cmd_name((uint32_t)want));
}

#define EXPECT(got, want, ...)                                                  \
	do {                                                                    \
		char what_[200];                                                \
		snprintf(what_, sizeof(what_), __VA_ARGS__);                    \
		if (expect((got), (want), what_))                               \
			return -1;                                              \
	} while (0)

/* The guest driver's layout of one decoded frame in a SINGLE_BUFFER
 * resource: the planes back to back, sized by GET_PARAMS. Returns its size. */
static size_t plane_offsets(const struct vuf_params *op, uint32_t offs[8])
{
	size_t total = 0;

	for (unsigned p = 0; p < op->num_planes; p++) {
		offs[p] = (uint32_t)total;
		total += op->plane[p].plane_size;
	}
	return total;
}

/* Output resources 10..10+n-1 of stream sid, each one frame of contiguous
 * guest memory, as the guest driver makes them after GET_PARAMS; each is
 * queued too unless tout is NULL. */
static int create_outputs(struct vuf *v, uint32_t sid, const struct vuf_params *op, unsigned n,
			  struct vuf_sglist *out, uint64_t *tout)
{
	uint32_t offs[8] = { 0 };
	size_t total = plane_offsets(op, offs);

	for (unsigned i = 0; i < n; i++) {
		CHECK(!vuf_alloc_contig(v, total, 1, &out[i]), "guest memory");
		EXPECT(vuf_resource_create(v, sid, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10 + i,
					   VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, op->num_planes, offs,
					   &out[i], 1),
		       VIRTIO_VIDEO_RESP_OK_NODATA, "RESOURCE_CREATE output %u", 10 + i);
		if (tout)
			EXPECT(vuf_resource_queue(v, sid, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10 + i, 0, 0,
						  NULL, &tout[i]), 0, "queue output %u", 10 + i);
	}
	return 0;
}

static struct virtio_video_cmd_hdr hdr(uint32_t type, uint32_t sid)
{
	return (struct virtio_video_cmd_hdr){ htole32(type), htole32(sid) };
}

static int queue_cmd(struct vuf *v, uint32_t type, uint32_t sid, uint32_t qt)
{
	struct virtio_video_queue_cmd q = { hdr(type, sid), htole32(qt), { 0 } };

	return send_req(v, &q, sizeof(q), NULL, 0, NULL, 0);
}

static int create_res(struct vuf *v, uint32_t sid, uint32_t qt, uint32_t id, uint32_t layout,
		      uint32_t nplanes, const uint32_t *nent, const struct virtio_video_mem_entry *e,
		      size_t ne, size_t extra)
{
	struct virtio_video_resource_create rc = { hdr(VIRTIO_VIDEO_CMD_RESOURCE_CREATE, sid),
						   htole32(qt), htole32(id), htole32(layout),
						   htole32(nplanes), { 0 }, { 0 } };
	uint8_t buf[sizeof(rc) + 16 * 16 + 16];
	size_t len = sizeof(rc) + ne * sizeof(*e) + extra;

	for (unsigned p = 0; p < VIRTIO_VIDEO_MAX_PLANES; p++)
		rc.num_entries[p] = htole32(nent[p]);
	memset(buf, 0, sizeof(buf));
	memcpy(buf, &rc, sizeof(rc));
	memcpy(buf + sizeof(rc), e, ne * sizeof(*e));
	return send_req(v, buf, len, NULL, 0, NULL, 0);
}

static int rq(struct vuf *v, uint32_t sid, uint32_t qt, uint32_t id, uint32_t nsizes,
	      uint32_t size0, uint64_t *token)
{
	uint32_t sizes[VIRTIO_VIDEO_MAX_PLANES] = { size0 };

	return vuf_resource_queue(v, sid, qt, id, 0, nsizes, sizes, token);
}

/* Every command's malformed forms, and unknown ids: each answered once with
 * the protocol's error; then the stream still works. */
static int t_parse_errors(void)
{
	struct vuf *v = open_front(NULL);
	const uint32_t IN = VIRTIO_VIDEO_QUEUE_TYPE_INPUT, OUT = VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT;
	const uint32_t SB = VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER;
	uint8_t big[sizeof(struct virtio_video_set_params_ext) + 8];
	struct virtio_video_mem_entry e[4];
	uint32_t nent[VIRTIO_VIDEO_MAX_PLANES] = { 1 };
	uint64_t gpa, tok, out_tok = 0, in2_tok = 0;
	struct vuf_rq_result rr;
	struct vuf_params p;
	static const struct {
		uint32_t type;
		size_t len;
	} sized[] = {
		{ VIRTIO_VIDEO_CMD_QUERY_CAPABILITY, sizeof(struct virtio_video_query_capability) },
		{ VIRTIO_VIDEO_CMD_STREAM_CREATE, sizeof(struct virtio_video_stream_create) },
		{ VIRTIO_VIDEO_CMD_STREAM_DESTROY, sizeof(struct virtio_video_cmd_hdr) },
		{ VIRTIO_VIDEO_CMD_STREAM_DRAIN, sizeof(struct virtio_video_cmd_hdr) },
		{ VIRTIO_VIDEO_CMD_RESOURCE_QUEUE, sizeof(struct virtio_video_resource_queue) },
		{ VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL, sizeof(struct virtio_video_queue_cmd) },
		{ VIRTIO_VIDEO_CMD_QUEUE_CLEAR, sizeof(struct virtio_video_queue_cmd) },
		{ VIRTIO_VIDEO_CMD_GET_PARAMS, sizeof(struct virtio_video_queue_cmd) },
		{ VIRTIO_VIDEO_CMD_SET_PARAMS, sizeof(struct virtio_video_set_params) },
		{ VIRTIO_VIDEO_CMD_QUERY_CONTROL, sizeof(struct virtio_video_query_control) },
		{ VIRTIO_VIDEO_CMD_GET_CONTROL, sizeof(struct virtio_video_get_control) },
		{ VIRTIO_VIDEO_CMD_GET_PARAMS_EXT, sizeof(struct virtio_video_queue_cmd) },
		{ VIRTIO_VIDEO_CMD_SET_PARAMS_EXT, sizeof(struct virtio_video_set_params_ext) },
	};
	static const uint32_t stream_cmds[] = {
		VIRTIO_VIDEO_CMD_STREAM_DESTROY, VIRTIO_VIDEO_CMD_STREAM_DRAIN,
		VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL, VIRTIO_VIDEO_CMD_QUEUE_CLEAR,
		VIRTIO_VIDEO_CMD_GET_PARAMS, VIRTIO_VIDEO_CMD_GET_PARAMS_EXT,
	};
	int t;

	if (!v)
		return -1;
	/* sizes: one byte short and one byte long of every fixed-size command */
	memset(big, 0, sizeof(big));
	for (size_t i = 0; i < sizeof(sized) / sizeof(sized[0]); i++) {
		struct virtio_video_cmd_hdr h = hdr(sized[i].type, 1);

		memcpy(big, &h, sizeof(h));
		if (sized[i].len > 8)
			EXPECT(send_req(v, big, sized[i].len - 1, NULL, 0, NULL, 0),
			       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "%s of %zu bytes",
			       vuf_cmd_name(sized[i].type), sized[i].len - 1);
		EXPECT(send_req(v, big, sized[i].len + 1, NULL, 0, NULL, 0),
		       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "%s of %zu bytes",
		       vuf_cmd_name(sized[i].type), sized[i].len + 1);
	}
	{
		struct virtio_video_cmd_hdr h = hdr(0x0999, 1);

		EXPECT(send_req(v, &h, sizeof(h), NULL, 0, NULL, 0),
		       VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION, "unknown command 0x999");
		EXPECT(send_req(v, &h, 4, NULL, 0, NULL, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
		       "a 4-byte command");
	}
	/* unknown stream ids */
	for (size_t i = 0; i < sizeof(stream_cmds) / sizeof(stream_cmds[0]); i++) {
		struct virtio_video_queue_cmd q = { hdr(stream_cmds[i], 77), htole32(IN), { 0 } };
		size_t len = stream_cmds[i] == VIRTIO_VIDEO_CMD_STREAM_DESTROY ||
			     stream_cmds[i] == VIRTIO_VIDEO_CMD_STREAM_DRAIN ? 8 : sizeof(q);

		EXPECT(send_req(v, &q, len, NULL, 0, NULL, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID,
		       "%s of an unknown stream", vuf_cmd_name(stream_cmds[i]));
	}
	EXPECT(vuf_get_control(v, 77, VIRTIO_VIDEO_CONTROL_BITRATE, &(uint32_t){ 0 }),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, "GET_CONTROL of an unknown stream");
	EXPECT(rq(v, 77, IN, 1, 1, 10, &tok), 0, "RESOURCE_QUEUE submit");
	EXPECT(vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, "RESOURCE_QUEUE of an unknown stream");
	/* STREAM_CREATE */
	EXPECT(vuf_stream_create(v, 1, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "t"),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_CREATE");
	EXPECT(vuf_stream_create(v, 1, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "t"),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID, "STREAM_CREATE of an existing id");
	EXPECT(vuf_stream_create(v, 2, VIRTIO_VIDEO_MEM_TYPE_VIRTIO_OBJECT,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "t"),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "STREAM_CREATE with object memory");
	EXPECT(vuf_stream_create(v, 2, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, 0x7777, "t"),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "STREAM_CREATE of an unknown format");
	EXPECT(vuf_stream_create(v, 2, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_H264, "t"),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "STREAM_CREATE of a format the codec lacks");
	/* bad queue types */
	for (uint32_t type = VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL; type <= VIRTIO_VIDEO_CMD_GET_PARAMS;
	     type++)
		EXPECT(queue_cmd(v, type, 1, 0x55), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
		       "%s of queue type 0x55", vuf_cmd_name(type));
	{
		struct virtio_video_query_capability q = { hdr(VIRTIO_VIDEO_CMD_QUERY_CAPABILITY, 0),
							   htole32(7), { 0 } };

		EXPECT(send_req(v, &q, sizeof(q), NULL, 0, NULL, 0),
		       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "QUERY_CAPABILITY of queue type 7");
	}
	/* RESOURCE_CREATE */
	gpa = vuf_alloc(v, 65536, 4096, 0);
	CHECK(gpa, "guest memory full");
	e[0] = (struct virtio_video_mem_entry){ htole64(gpa), htole32(65536), { 0 } };
	EXPECT(create_res(v, 1, 9, 1, SB, 1, nent, e, 1, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_CREATE of queue type 9");
	EXPECT(create_res(v, 1, IN, 1, 7, 1, nent, e, 1, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_CREATE with layout 7");
	EXPECT(create_res(v, 1, IN, 1, SB, 0, nent, e, 1, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_CREATE with 0 planes");
	EXPECT(create_res(v, 1, IN, 1, SB, 9, nent, e, 1, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_CREATE with 9 planes");
	EXPECT(create_res(v, 1, IN, 1, SB, 1, nent, e, 1, 16), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_CREATE with an entry more than num_entries");
	EXPECT(create_res(v, 1, IN, 1, SB, 1, nent, e, 0, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_CREATE with an entry fewer than num_entries");
	EXPECT(create_res(v, 1, IN, 1, SB, 1, (uint32_t[8]){ 1, 1 }, (struct virtio_video_mem_entry[2]){
				  e[0], e[0] }, 2, 0),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_CREATE with entries for plane 1 of 1");
	EXPECT(create_res(v, 1, IN, 1, SB, 1, (uint32_t[8]){ 0 }, e, 0, 0),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_CREATE without entries");
	EXPECT(create_res(v, 1, IN, 1, SB, 1, (uint32_t[8]){ 16385 }, e, 0, 0),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_CREATE with 16385 entries");
	e[1] = (struct virtio_video_mem_entry){ htole64(0x10), htole32(4096), { 0 } };
	EXPECT(create_res(v, 1, IN, 1, SB, 1, nent, &e[1], 1, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_CREATE of unmapped guest memory");
	e[1] = (struct virtio_video_mem_entry){ htole64(gpa), 0, { 0 } };
	EXPECT(create_res(v, 1, IN, 1, SB, 1, nent, &e[1], 1, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_CREATE with an empty entry");
	e[1] = (struct virtio_video_mem_entry){ htole64(~0ull - 100), htole32(4096), { 0 } };
	EXPECT(create_res(v, 1, IN, 1, SB, 1, nent, &e[1], 1, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
	       "RESOURCE_CREATE with an entry wrapping around");
	EXPECT(create_res(v, 1, IN, 1, SB, 1, nent, e, 1, 0), VIRTIO_VIDEO_RESP_OK_NODATA,
	       "RESOURCE_CREATE input 1");
	EXPECT(create_res(v, 1, IN, 1, SB, 1, nent, e, 1, 0), VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID,
	       "RESOURCE_CREATE of an existing id");
	/* RESOURCE_QUEUE */
	EXPECT(rq(v, 1, 9, 1, 1, 10, &tok), 0, "submit");
	EXPECT(vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_QUEUE of queue type 9");
	EXPECT(rq(v, 1, IN, 5, 1, 10, &tok), 0, "submit");
	EXPECT(vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID, "RESOURCE_QUEUE of an unknown resource");
	EXPECT(rq(v, 1, IN, 1, 9, 10, &tok), 0, "submit");
	EXPECT(vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_QUEUE with 9 data sizes");
	EXPECT(rq(v, 1, IN, 1, 1, 0, &tok), 0, "submit");
	EXPECT(vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_QUEUE of 0 bytes");
	EXPECT(rq(v, 1, IN, 1, 1, 65537, &tok), 0, "submit");
	EXPECT(vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "RESOURCE_QUEUE of more bytes than the resource");
	{
		/* an output resource waits (no format yet): queued twice */
		uint64_t tok2;

		e[1] = (struct virtio_video_mem_entry){ htole64(gpa + 32768), htole32(32768), { 0 } };
		EXPECT(create_res(v, 1, OUT, 20, SB, 1, nent, &e[1], 1, 0), VIRTIO_VIDEO_RESP_OK_NODATA,
		       "RESOURCE_CREATE output 20");
		EXPECT(rq(v, 1, OUT, 20, 0, 0, &tok2), 0, "submit");
		EXPECT(rq(v, 1, OUT, 20, 0, 0, &tok), 0, "submit");
		EXPECT(vuf_wait_type(v, tok, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
		       VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID, "RESOURCE_QUEUE of a queued resource");
		out_tok = tok2;
	}
	{
		/* two frames: the codec reads the first header and holds the
		 * second buffer until capture is set up */
		uint8_t frame[FK_HDR + 100] = { 0 };

		fk_header(frame, W, H, FK_I_FRAME, 100);
		CHECK(vuf_va_range(v, gpa, sizeof(frame)), "no mapping");
		memcpy(vuf_va_range(v, gpa, sizeof(frame)), frame, sizeof(frame));
		EXPECT(create_res(v, 1, IN, 2, SB, 1, nent, e, 1, 0), VIRTIO_VIDEO_RESP_OK_NODATA,
		       "RESOURCE_CREATE input 2");
		EXPECT(rq(v, 1, IN, 1, 1, sizeof(frame), &tok), 0, "submit");
		EXPECT(vuf_resource_queue_wait(v, tok, &rr, VUF_CMD_TIMEOUT_MS),
		       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "RESOURCE_QUEUE of a header");
		CHECK(!(rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR), "the header came back with FLAG_ERR");
		EXPECT(rq(v, 1, IN, 2, 1, sizeof(frame), &in2_tok), 0, "submit");
	}
	/* SET_PARAMS bounds */
	EXPECT(vuf_get_params(v, 1, OUT, true, &p), VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS_EXT");
	CHECK(p.frame_rate != 0, "GET_PARAMS frame_rate 0 (the guest driver divides by it)");
	CHECK(p.frame_width == W && p.frame_height == H, "output params %ux%u after the header",
	      p.frame_width, p.frame_height);
	{
		struct vuf_params b = p;

		b.frame_width = 16385;
		EXPECT(vuf_set_params(v, 1, &b, true), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
		       "SET_PARAMS width 16385");
		b = p;
		b.frame_rate = 1001;
		EXPECT(vuf_set_params(v, 1, &b, true), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
		       "SET_PARAMS 1001 frames/s");
		b = p;
		b.plane[0].plane_size = (256u << 20) + 1;
		EXPECT(vuf_set_params(v, 1, &b, true), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
		       "SET_PARAMS plane size over 256 MiB");
		b = p;
		b.crop.left = 10;
		b.crop.width = b.frame_width;
		EXPECT(vuf_set_params(v, 1, &b, true), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
		       "SET_PARAMS crop outside the frame");
		b = p;
		b.format = VIRTIO_VIDEO_FORMAT_FWHT;
		EXPECT(vuf_set_params(v, 1, &b, true), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
		       "SET_PARAMS a coded format on the output queue");
		b = p;
		b.queue_type = 3;
		EXPECT(vuf_set_params(v, 1, &b, true), VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER,
		       "SET_PARAMS queue type 3");
		b = p;
		EXPECT(vuf_set_params(v, 1, &b, false), VIRTIO_VIDEO_RESP_OK_NODATA,
		       "SET_PARAMS of what GET_PARAMS said");
	}
	/* a second drain while one is parked */
	{
		uint64_t d1, d2;

		EXPECT(vuf_stream_drain_submit(v, 1, &d1), 0, "submit");
		EXPECT(vuf_stream_drain_submit(v, 1, &d2), 0, "submit");
		EXPECT(vuf_wait_type(v, d2, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
		       VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION, "a second STREAM_DRAIN");
		EXPECT(vuf_stream_destroy(v, 1), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY");
		/* the parked drain and the queued buffers are answered by the destroy */
		t = vuf_wait_type(v, d1, NULL, 0, 8, VUF_CMD_TIMEOUT_MS);
		CHECK(t >= 0, "the parked drain was not answered at destroy: %s", vuf_error(v));
		CHECK(vuf_resource_queue_wait(v, out_tok, &rr, VUF_CMD_TIMEOUT_MS) >= 0 &&
		      (rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR), "the queued output at destroy: %s",
		      vuf_error(v));
		CHECK(vuf_resource_queue_wait(v, in2_tok, &rr, VUF_CMD_TIMEOUT_MS) >= 0,
		      "the held input at destroy: %s", vuf_error(v));
	}
	return close_front(v, 0);
}

/* CONFIG_VUV_MAX_STREAMS (256) streams, then OUT_OF_MEMORY; all destroyed. */
static int t_max_streams(void)
{
	struct vuf *v = open_front(NULL);
	unsigned n = 0;
	int t = 0;

	if (!v)
		return -1;
	while (n < 300) {
		t = vuf_stream_create(v, 100 + n, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				      VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "m");
		if (t != VIRTIO_VIDEO_RESP_OK_NODATA)
			break;
		n++;
	}
	CHECK(n == 256, "%u streams created before %s", n, t < 0 ? vuf_error(v) : vuf_cmd_name((uint32_t)t));
	EXPECT(t, VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY, "STREAM_CREATE number 257");
	for (unsigned i = 0; i < n; i++)
		EXPECT(vuf_stream_destroy(v, 100 + i), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY %u", i);
	EXPECT(vuf_stream_create(v, 5, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "m"),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_CREATE after freeing them");
	EXPECT(vuf_stream_destroy(v, 5), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY");
	return close_front(v, 0);
}

/* STREAM_DESTROY with inputs and outputs queued: every chain answered once. */
static int t_dec_destroy_mid_stream(void)
{
	struct vuf *v = open_front(NULL);
	struct vvdec_clip c;
	struct vuf_sglist in[6], out[4];
	uint64_t tin[6], tout[4];
	struct vuf_params op;
	struct virtio_video_event ev;
	uint32_t zero[8] = { 0 };
	int r = 0;

	if (!v)
		return -1;
	clip_make(&c, 6, W, H, 11);
	EXPECT(vuf_stream_create(v, 3, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "d"),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_CREATE");
	for (unsigned i = 0; i < 6; i++) {
		CHECK(!vuf_alloc_contig(v, 4096, 0, &in[i]), "guest memory");
		EXPECT(vuf_resource_create(v, 3, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, i + 1,
					   VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, 1, zero, &in[i], 1),
		       VIRTIO_VIDEO_RESP_OK_NODATA, "RESOURCE_CREATE input");
		CHECK(!vuf_sg_write(v, &in[i], 0, c.data + c.off[i], c.size[i]), "write");
		EXPECT(vuf_resource_queue(v, 3, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, i + 1, vvdec_ts(i), 1,
					  (uint32_t[8]){ (uint32_t)c.size[i] }, &tin[i]), 0, "queue");
	}
	EXPECT(vuf_event_wait(v, &ev, VUF_CMD_TIMEOUT_MS), 0, "DECODER_RESOLUTION_CHANGED");
	CHECK(ev.event_type == VIRTIO_VIDEO_EVENT_DECODER_RESOLUTION_CHANGED, "event %u", ev.event_type);
	EXPECT(vuf_get_params(v, 3, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, true, &op),
	       VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS");
	if (create_outputs(v, 3, &op, 4, out, tout))
		return -1;
	EXPECT(vuf_stream_destroy(v, 3), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY");
	for (unsigned i = 0; i < 6 && !r; i++) {
		struct vuf_rq_result rr;

		if (vuf_resource_queue_wait(v, tin[i], &rr, VUF_CMD_TIMEOUT_MS) < 0)
			r = failf("input %u never answered: %s", i, vuf_error(v));
	}
	for (unsigned i = 0; i < 4 && !r; i++) {
		struct vuf_rq_result rr;

		if (vuf_resource_queue_wait(v, tout[i], &rr, VUF_CMD_TIMEOUT_MS) < 0)
			r = failf("output %u never answered: %s", i, vuf_error(v));
	}
	for (unsigned i = 0; i < 6; i++)
		vuf_sglist_free(&in[i]);
	for (unsigned i = 0; i < 4; i++)
		vuf_sglist_free(&out[i]);
	vvdec_clip_free(&c);
	return close_front(v, r);
}

/* A drain while the codec holds a frame whose bitstream buffer it already
 * returned (capture not set up yet; dev-decoder.rst lets a decoder return
 * OUTPUT buffers before their frames): the frame, then the empty EOS
 * buffer, then the drain's answer. */
static int t_dec_drain_held_frame(void)
{
	struct vuf *v = open_front(NULL);
	struct vvdec_clip c;
	struct vuf_sglist in, out[4];
	uint64_t tin, tout[4], tdrain;
	struct vuf_rq_result rr;
	struct vuf_params op;
	struct virtio_video_event ev;
	uint32_t zero[8] = { 0 };
	int r = 0;

	if (!v)
		return -1;
	clip_make(&c, 1, W, H, 12);
	EXPECT(vuf_stream_create(v, 4, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "h"),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_CREATE");
	CHECK(!vuf_alloc_contig(v, 4096, 0, &in), "guest memory");
	EXPECT(vuf_resource_create(v, 4, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1,
				   VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, 1, zero, &in, 1),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "RESOURCE_CREATE input");
	CHECK(!vuf_sg_write(v, &in, 0, c.data, c.size[0]), "write");
	EXPECT(vuf_resource_queue(v, 4, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, vvdec_ts(0), 1,
				  (uint32_t[8]){ (uint32_t)c.size[0] }, &tin), 0, "queue");
	EXPECT(vuf_resource_queue_wait(v, tin, &rr, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "the input");
	EXPECT(vuf_event_wait(v, &ev, VUF_CMD_TIMEOUT_MS), 0, "DECODER_RESOLUTION_CHANGED");
	EXPECT(vuf_stream_drain_submit(v, 4, &tdrain), 0, "STREAM_DRAIN");
	EXPECT(vuf_get_params(v, 4, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, true, &op),
	       VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS");
	if (create_outputs(v, 4, &op, 4, out, tout))
		return -1;
	EXPECT(vuf_resource_queue_wait(v, tout[0], &rr, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "output 0");
	CHECK(!(rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS) && rr.size > 0 && rr.timestamp == vvdec_ts(0),
	      "the first output is %s (flags 0x%x, %u bytes), not the frame queued before the drain",
	      rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS ? "the EOS buffer" : "something else",
	      rr.flags, rr.size);
	EXPECT(vuf_resource_queue_wait(v, tout[1], &rr, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "output 1");
	CHECK(rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS, "no EOS after the frame (flags 0x%x)", rr.flags);
	EXPECT(vuf_wait_type(v, tdrain, NULL, 0, 8, VUF_CMD_TIMEOUT_MS), VIRTIO_VIDEO_RESP_OK_NODATA,
	       "STREAM_DRAIN");
	EXPECT(vuf_stream_destroy(v, 4), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY");
	for (unsigned i = 2; i < 4 && !r; i++)
		if (vuf_resource_queue_wait(v, tout[i], &rr, VUF_CMD_TIMEOUT_MS) < 0)
			r = failf("output %u never answered", i);
	vuf_sglist_free(&in);
	for (unsigned i = 0; i < 4; i++)
		vuf_sglist_free(&out[i]);
	vvdec_clip_free(&c);
	return close_front(v, r);
}

/* Output resource out holds input frame f of clip c, byte for byte. */
static int check_frame(struct vuf *v, const struct vuf_sglist *out, const struct vuf_rq_result *rr,
		       const struct vvdec_clip *c, unsigned f, const char *what)
{
	const uint8_t *in = c->data + c->off[f];
	size_t size = (size_t)fk_align(fk_be32(in + 12)) * fk_align(fk_be32(in + 16)) * 3 / 2;
	uint32_t seed = fk_seed(in + FK_HDR, fk_be32(in + 40)) ^ V4L2_PIX_FMT_YUV420;
	uint8_t *buf;
	int r = 0;

	CHECK(!(rr->flags & (VIRTIO_VIDEO_BUFFER_FLAG_EOS | VIRTIO_VIDEO_BUFFER_FLAG_ERR)) &&
	      rr->timestamp == vvdec_ts(f) && rr->size >= size,
	      "%s: flags 0x%x, timestamp %llu, %u bytes, not frame %u", what, rr->flags,
	      (unsigned long long)rr->timestamp, rr->size, f);
	buf = malloc(size);
	CHECK(buf && !vuf_sg_read(v, out, 0, buf, size), "%s: read", what);
	for (size_t i = 0; i < size && !r; i++)
		if (buf[i] != fk_pixel(seed, i))
			r = failf("%s (frame %u) differs at byte %zu", what, f, i);
	free(buf);
	return r;
}

/* QUEUE_CLEAR of one queue while a drain waits for its LAST buffer (STOP
 * issued, no capture buffer in the codec), as Chromium and ffmpeg reset
 * during a flush on seek: the clear answers the drain, and decoding goes
 * on with the next input and output buffers: every frame exact, every
 * chain answered once. Clearing the input makes the codec mark the next
 * capture buffer LAST (v4l2_m2m_update_stop_streaming_state). */
static int clear_during_drain(uint32_t clear_q, bool complete)
{
	enum { NIN = 6, NOUT = 6, SID = 6 };
	struct vuf *v = open_front(NULL);
	struct vvdec_clip c;
	struct vuf_sglist in[NIN], out[NOUT];
	uint64_t tin[NIN], tout[NOUT], tdrain;
	struct vuf_rq_result rr;
	struct vuf_params op;
	struct virtio_video_event ev;
	uint32_t zero[8] = { 0 };
	char what[64];
	int r = 0;

	if (!v)
		return -1;
	clip_make(&c, NIN, W, H, 33);
	EXPECT(vuf_stream_create(v, SID, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "c"),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_CREATE");
	for (unsigned i = 0; i < NIN; i++) {
		CHECK(!vuf_alloc_contig(v, 4096, 0, &in[i]), "guest memory");
		EXPECT(vuf_resource_create(v, SID, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1 + i,
					   VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, 1, zero, &in[i], 1),
		       VIRTIO_VIDEO_RESP_OK_NODATA, "RESOURCE_CREATE input");
		CHECK(!vuf_sg_write(v, &in[i], 0, c.data + c.off[i], c.size[i]), "write");
	}
	EXPECT(vuf_resource_queue(v, SID, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, vvdec_ts(0), 1,
				  (uint32_t[8]){ (uint32_t)c.size[0] }, &tin[0]), 0, "queue");
	EXPECT(vuf_event_wait(v, &ev, VUF_CMD_TIMEOUT_MS), 0, "DECODER_RESOLUTION_CHANGED");
	EXPECT(vuf_get_params(v, SID, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, true, &op),
	       VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS");
	if (create_outputs(v, SID, &op, NOUT, out, NULL))
		return -1;
	/* frames 0-2 into outputs 0-2: then the codec has no capture buffer */
	for (unsigned i = 0; i < 3; i++)
		EXPECT(vuf_resource_queue(v, SID, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10 + i, 0, 0, NULL,
					  &tout[i]), 0, "queue");
	for (unsigned i = 1; i < 3; i++)
		EXPECT(vuf_resource_queue(v, SID, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1 + i, vvdec_ts(i), 1,
					  (uint32_t[8]){ (uint32_t)c.size[i] }, &tin[i]), 0, "queue");
	for (unsigned i = 0; i < 3; i++) {
		snprintf(what, sizeof(what), "output %u", i);
		EXPECT(vuf_resource_queue_wait(v, tout[i], &rr, VUF_CMD_TIMEOUT_MS),
		       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, what);
		if ((r = check_frame(v, &out[i], &rr, &c, i, what)))
			return close_front(v, r);
		EXPECT(vuf_resource_queue_wait(v, tin[i], &rr, VUF_CMD_TIMEOUT_MS),
		       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "an input");
	}
	/* the drain's STOP goes to the codec at once (every input is in it);
	 * its LAST buffer waits for a capture buffer, which the clear precedes */
	EXPECT(vuf_stream_drain_submit(v, SID, &tdrain), 0, "STREAM_DRAIN");
	if (complete) {
		/* variant: the clear after the drain's end (LAST, EOS, answer) */
		EXPECT(vuf_resource_queue(v, SID, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10, 0, 0, NULL,
					  &tout[0]), 0, "queue");
		EXPECT(vuf_resource_queue_wait(v, tout[0], &rr, VUF_CMD_TIMEOUT_MS),
		       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "the EOS buffer");
		CHECK(rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS, "no EOS (flags 0x%x)", rr.flags);
		EXPECT(vuf_wait_type(v, tdrain, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
		       VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DRAIN");
	}
	EXPECT(vuf_queue_clear(v, SID, clear_q, VUF_CMD_TIMEOUT_MS), VIRTIO_VIDEO_RESP_OK_NODATA,
	       "QUEUE_CLEAR");
	if (!complete)
		EXPECT(vuf_wait_type(v, tdrain, NULL, 0, 8, VUF_CMD_TIMEOUT_MS),
		       VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DRAIN");
	/* decoding goes on: frames 3-5 into outputs 3-5 */
	for (unsigned i = 3; i < NOUT; i++)
		EXPECT(vuf_resource_queue(v, SID, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10 + i, 0, 0, NULL,
					  &tout[i]), 0, "queue");
	for (unsigned i = 3; i < NIN; i++)
		EXPECT(vuf_resource_queue(v, SID, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1 + i, vvdec_ts(i), 1,
					  (uint32_t[8]){ (uint32_t)c.size[i] }, &tin[i]), 0, "queue");
	for (unsigned i = 3; i < NOUT; i++) {
		snprintf(what, sizeof(what), "output %u after the clear", i);
		EXPECT(vuf_resource_queue_wait(v, tout[i], &rr, VUF_CMD_TIMEOUT_MS),
		       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, what);
		if ((r = check_frame(v, &out[i], &rr, &c, i, what)))
			return close_front(v, r);
		EXPECT(vuf_resource_queue_wait(v, tin[i], &rr, VUF_CMD_TIMEOUT_MS),
		       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "an input after the clear");
		CHECK(!(rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR), "input %u: FLAG_ERR", i);
	}
	/* and a drain after it completes as usual */
	EXPECT(vuf_resource_queue(v, SID, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10, 0, 0, NULL, &tout[0]),
	       0, "queue");
	EXPECT(vuf_stream_drain(v, SID, VUF_CMD_TIMEOUT_MS), VIRTIO_VIDEO_RESP_OK_NODATA,
	       "the second STREAM_DRAIN");
	EXPECT(vuf_resource_queue_wait(v, tout[0], &rr, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "the EOS buffer");
	CHECK(rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS, "no EOS (flags 0x%x)", rr.flags);
	EXPECT(vuf_stream_destroy(v, SID), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY");
	for (unsigned i = 0; i < NIN; i++)
		vuf_sglist_free(&in[i]);
	for (unsigned i = 0; i < NOUT; i++)
		vuf_sglist_free(&out[i]);
	vvdec_clip_free(&c);
	return close_front(v, r);
}

static int t_dec_clear_input_during_drain(void)
{
	return clear_during_drain(VIRTIO_VIDEO_QUEUE_TYPE_INPUT, false);
}

static int t_dec_clear_input_after_drain(void)
{
	return clear_during_drain(VIRTIO_VIDEO_QUEUE_TYPE_INPUT, true);
}

static int t_dec_clear_output_during_drain(void)
{
	return clear_during_drain(VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, false);
}

/* ---- faults ---------------------------------------------------------------------- */

/* Run fn against a daemon of its own started with VUV_FAKE_FAULTS=faults. */
static int with_faults(const char *faults, int (*fn)(void))
{
	struct tdaemon saved = suite.dmn;
	char err[256], how[100];
	int r, st;

	setenv("VUV_FAKE_FAULTS", faults, 1);
	r = tdaemon_start(&suite.dmn, suite.daemon, suite.device, work, "faults", "-v", err, sizeof(err));
	unsetenv("VUV_FAKE_FAULTS");
	if (r) {
		suite.dmn = saved;
		return failf("starting the daemon with %s: %s", faults, err);
	}
	r = fn();
	if (!tdaemon_alive(&suite.dmn, how, sizeof(how)) && !r)
		r = failf("the daemon with faults %s died (%s)", faults, how);
	if (tdaemon_stop(&suite.dmn, SIGTERM, 60000, &st) == 0 && !r &&
	    (!WIFEXITED(st) || WEXITSTATUS(st))) {
		t_describe_status(st, how, sizeof(how));
		r = failf("the daemon with faults %s: %s at SIGTERM", faults, how);
	}
	if (r)
		tdaemon_log_tail(&suite.dmn, stdout);
	suite.dmn = saved;
	return r;
}

/* The device disappears after 3 frames: the guest gets an ERROR event, the
 * stream can still be destroyed with every chain answered. */
static int f_enodev(void)
{
	struct djob j = { 0 };
	int r;

	clip_make(&j.c, 12, W, H, 21);
	r = decode(&j, NULL);
	/* which the guest sees first depends on the threads: either says it */
	if (r && (strstr(why, "ERROR event") || strstr(why, "came back with FLAG_ERR")))
		r = 0;
	else if (!r)
		r = failf("decoded %u frames on a device that went away",
			  vvdec_result(j.d)->frames_out);
	djob_free(&j);
	return r;
}

static int t_fault_enodev(void)
{
	return with_faults("enodev=3", f_enodev);
}

/* Capture buffer 3 comes back with ERROR: that one is FLAG_ERR, the rest exact. */
static int f_error(void)
{
	struct djob j = { .o = { .n_out_extra = 3 } };
	const struct vvdec_result *res;
	int r;

	clip_make(&j.c, 10, W, H, 22);
	r = decode(&j, NULL);
	res = j.d ? vvdec_result(j.d) : NULL;
	if (!r && (res->cleared != 1 || res->frames_out != 9))
		r = failf("%u buffers with FLAG_ERR, %u frames (1 and 9 expected)", res->cleared,
			  res->frames_out);
	if (!r)
		r = check_decoded(j.d, &j.c, (uint8_t *)j.out, j.out_len, V4L2_PIX_FMT_YUV420, false);
	djob_free(&j);
	return r;
}

static int t_fault_error_flag(void)
{
	return with_faults("error=3", f_error);
}

/* QBUF of the 2nd bitstream buffer fails: that input is answered FLAG_ERR. */
static int f_eio(void)
{
	struct djob j = { 0 };
	int r;

	clip_make(&j.c, 6, W, H, 23);
	r = decode(&j, NULL);
	if (r && strstr(why, "came back with FLAG_ERR"))
		r = 0;
	else if (!r)
		r = failf("no input came back with FLAG_ERR");
	djob_free(&j);
	return r;
}

static int t_fault_eio_qbuf(void)
{
	return with_faults("eio_qbuf=2", f_eio);
}

static void collect_answered(struct vuf *v);

/* SOURCE_CHANGE never comes (no_event=1, stream 3 only): the guest queues
 * bitstream and output buffers, waits in vain, then gives up. Every command
 * is still answered (the command thread never waits for the codec), every
 * chain is answered by QUEUE_CLEAR and STREAM_DESTROY, and a healthy
 * stream 8 opened meanwhile on the same connection decodes exactly. */
static int f_no_event(void)
{
	struct vuf *v = open_front(NULL);
	struct vvdec_clip c;
	struct vuf_sglist in[4], out[2];
	uint64_t tin[4], tout[2];
	struct vuf_params op;
	uint32_t zero[8] = { 0 };
	struct vvdec *d;
	FILE *f;
	char *o = NULL;
	size_t olen = 0;
	int r = 0;

	if (!v)
		return -1;
	clip_make(&c, 12, W, H, 31);
	EXPECT(vuf_stream_create(v, 3, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "n"),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_CREATE");
	for (unsigned i = 0; i < 4; i++) {
		CHECK(!vuf_alloc_contig(v, 4096, 0, &in[i]), "guest memory");
		EXPECT(vuf_resource_create(v, 3, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, i + 1,
					   VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, 1, zero, &in[i], 1),
		       VIRTIO_VIDEO_RESP_OK_NODATA, "RESOURCE_CREATE input");
		CHECK(!vuf_sg_write(v, &in[i], 0, c.data + c.off[i], c.size[i]), "write");
		EXPECT(vuf_resource_queue(v, 3, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, i + 1, vvdec_ts(i), 1,
					  (uint32_t[8]){ (uint32_t)c.size[i] }, &tin[i]), 0, "queue");
	}
	/* the guest would wait for DECODER_RESOLUTION_CHANGED here; it has
	 * the default format and queues outputs anyway */
	EXPECT(vuf_get_params(v, 3, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, true, &op),
	       VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS");
	if (create_outputs(v, 3, &op, 2, out, tout))
		return -1;
	/* a healthy stream beside the stuck one */
	f = open_memstream(&o, &olen);
	d = vvdec_new(v, &c, f, &(struct vvdec_opts){ .stream_id = 8, .timeout_ms = 30000 });
	if (!f || !d)
		abort();
	vvdec_run_all(&d, 1);
	fclose(f);
	if (vvdec_result(d)->err[0])
		r = failf("stream 8: %s", vvdec_result(d)->err);
	else if (vvdec_result(d)->frames_out != c.nframes)
		r = failf("stream 8: %u frames of %u", vvdec_result(d)->frames_out, c.nframes);
	else
		r = check_decoded(d, &c, (uint8_t *)o, olen, V4L2_PIX_FMT_YUV420, true);
	vvdec_free(d);
	free(o);
	/* the guest gives up on stream 3 */
	if (!r && vuf_queue_clear(v, 3, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, VUF_CMD_TIMEOUT_MS) !=
		  VIRTIO_VIDEO_RESP_OK_NODATA)
		r = failf("QUEUE_CLEAR input: %s", vuf_error(v));
	if (!r && vuf_queue_clear(v, 3, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, VUF_CMD_TIMEOUT_MS) !=
		  VIRTIO_VIDEO_RESP_OK_NODATA)
		r = failf("QUEUE_CLEAR output: %s", vuf_error(v));
	if (!r && vuf_stream_destroy(v, 3) != VIRTIO_VIDEO_RESP_OK_NODATA)
		r = failf("STREAM_DESTROY: %s", vuf_error(v));
	/* vvdec collected some of stream 3's answers with its own; the rest
	 * now: close_front fails if any chain is still unanswered */
	collect_answered(v);
	(void)tin;
	(void)tout;
	for (unsigned i = 0; i < 4; i++)
		vuf_sglist_free(&in[i]);
	for (unsigned i = 0; i < 2; i++)
		vuf_sglist_free(&out[i]);
	vvdec_clip_free(&c);
	return close_front(v, r);
}

static int t_fault_no_event(void)
{
	int r = with_faults("ctx=1,no_event=1", f_no_event);
	char log[sizeof(work) + 20];
	FILE *f;
	char line[1024];
	unsigned spin = 0;

	snprintf(log, sizeof(log), "%s/faults.log", work);
	f = fopen(log, "r");
	while (f && fgets(line, sizeof(line), f))
		spin += strstr(line, "DQBUF calls in a row found nothing") != NULL;
	if (f)
		fclose(f);
	if (!r && spin)
		r = failf("the event thread polled busily (%u reports in %s)", spin, log);
	return r;
}

/* ---- encoder cases ---------------------------------------------------------------- */



struct ejob {
	struct vvenc_raw raw;
	struct vvenc_opts o;
	struct vvenc *e;
	FILE *f;
	char *out;
	size_t out_len;
};

static void raw_make(struct vvenc_raw *r, unsigned n, unsigned seed)
{
	r->w = job_w;
	r->h = job_h;
	r->nframes = n;
	r->frame_size = (size_t)job_w * job_h * 3 / 2;
	r->len = r->frame_size * n;
	r->data = malloc(r->len);
	if (!r->data)
		abort();
	for (size_t i = 0; i < r->len; i++)
		r->data[i] = fk_pixel(seed, i);
}

static int encode(struct ejob *j, const struct vuf_opts *fo)
{
	struct vuf *v = open_front(fo);
	int r;

	if (!v)
		return -1;
	if (!j->o.stream_id)
		j->o.stream_id = 1;
	j->o.timeout_ms = 30000;
	j->f = open_memstream(&j->out, &j->out_len);
	j->e = vvenc_new(v, &j->raw, j->f, &j->o);
	if (!j->f || !j->e)
		return close_front(v, failf("out of memory"));
	vvenc_run_all(&j->e, 1);
	fclose(j->f);
	j->f = NULL;
	r = vvenc_result(j->e)->err[0] ? failf("%s", vvenc_result(j->e)->err) : 0;
	return close_front(v, r);
}

static void ejob_free(struct ejob *j)
{
	vvenc_free(j->e);
	free(j->out);
	free(j->raw.data);
}

/* Each coded frame is the fake's encoding of the raw frame of its timestamp. */
static int check_encoded(struct ejob *j, bool in_order)
{
	const struct vvenc_result *r = vvenc_result(j->e);
	size_t off = 0;

	for (unsigned k = 0; k < r->frames_out; k++) {
		const struct vvenc_frame *f = vvenc_frame(j->e, k);
		const uint8_t *p = (uint8_t *)j->out + off;
		uint32_t hash;

		CHECK(f->src >= 0, "coded frame %u has no input's timestamp", k);
		CHECK(!in_order || f->src == (int)k, "coded frame %u is input %d", k, f->src);
		CHECK(f->size == FK_HDR + FK_ENC_PAYLOAD && off + f->size <= j->out_len,
		      "coded frame %u: %u bytes", k, f->size);
		hash = fk_fnv(j->raw.data + (size_t)((unsigned)f->src % j->raw.nframes) * j->raw.frame_size,
			      j->raw.frame_size, FK_FNV_INIT);
		CHECK(fk_be32(p + 12) == j->raw.w && fk_be32(p + 16) == j->raw.h, "coded frame %u: %ux%u", k,
		      fk_be32(p + 12), fk_be32(p + 16));
		CHECK(fk_be32(p + FK_HDR) == hash, "coded frame %u is not input %d's frame", k, f->src);
		CHECK(!!(f->flags & VIRTIO_VIDEO_BUFFER_FLAG_IFRAME) == !!(fk_be32(p + 20) & FK_I_FRAME),
		      "coded frame %u: flags 0x%x against its header", k, f->flags);
		off += f->size;
	}
	CHECK(off == j->out_len, "%zu bytes beyond the coded frames", j->out_len - off);
	return 0;
}

static int encode_exact(unsigned n, const struct vvenc_opts *o)
{
	struct ejob j = { .o = *o };
	const struct vvenc_result *r;
	int ret;

	raw_make(&j.raw, n, n + 100);
	ret = encode(&j, NULL);
	r = j.e ? vvenc_result(j.e) : NULL;
	if (!ret && !(r->drained && r->eos))
		ret = failf("drain %s, EOS %s", r->drained ? "answered" : "not answered",
			    r->eos ? "seen" : "missing");
	if (!ret && r->frames_out != n * (1 + o->resume))
		ret = failf("%u coded frames of %u", r->frames_out, n * (1 + o->resume));
	if (!ret && r->drains != 1 + o->resume)
		ret = failf("%u drains of %u", r->drains, 1 + o->resume);
	if (!ret)
		ret = check_encoded(&j, true);
	if (!ret && vvenc_frame(j.e, 0) && !(vvenc_frame(j.e, 0)->flags & VIRTIO_VIDEO_BUFFER_FLAG_IFRAME))
		ret = failf("the first coded frame is no IFRAME");
	ejob_free(&j);
	return ret;
}

/* ---- faults of one stream, a healthy one beside it ----------------------------------- */

/* How the faulty stream must end. */
enum f_want {
	F_EXACT,	/* decodes exactly anyway (the fault is harmless) */
	F_ERROR,	/* FLAG_ERR on a buffer or an ERROR event */
};

/* After the guest gave up on a stream (STREAM_DESTROY answered): collect
 * every chain the device answered; what stays in flight was never answered. */
static void collect_answered(struct vuf *v)
{
	uint64_t t;

	while (vuf_in_flight(v) && vuf_wait_any(v, &t, VUF_CMD_TIMEOUT_MS) >= 0)
		vuf_wait(v, t, NULL, 0, VUF_CMD_TIMEOUT_MS);
}

/* Decoder: streams 7 (opened first: ctx=1 gets the faults) and 8 (healthy)
 * on one connection, run together. Stream 8 must be exact; stream 7 as
 * want says. A command thread that blocked would stop both. */
static int f_two_dec(enum f_want want)
{
	struct vuf *v = open_front(NULL);
	struct vvdec_clip c[2];
	struct vvdec *d[2];
	FILE *f[2];
	char *out[2] = { 0 };
	size_t len[2] = { 0 };
	int r = 0;

	if (!v)
		return -1;
	for (int i = 0; i < 2; i++) {
		clip_make(&c[i], 12, W, H, 60 + (unsigned)i);
		f[i] = open_memstream(&out[i], &len[i]);
		d[i] = vvdec_new(v, &c[i], f[i], &(struct vvdec_opts){ .stream_id = 7 + (unsigned)i,
								       .timeout_ms = 30000 });
		if (!f[i] || !d[i])
			abort();
	}
	vvdec_run_all(d, 2);
	/* the guest gives up on stream 7: every chain must be answered */
	vuf_stream_destroy(v, 7);
	collect_answered(v);
	for (int i = 0; i < 2; i++) {
		const struct vvdec_result *res = vvdec_result(d[i]);
		bool faulty = i == 0;

		fclose(f[i]);
		if (!r && (!faulty || want == F_EXACT)) {
			if (res->err[0])
				r = failf("stream %d: %s", 7 + i, res->err);
			else if (res->frames_out != c[i].nframes || res->res_changes != 1)
				r = failf("stream %d: %u frames of %u, %u resolution events", 7 + i,
					  res->frames_out, c[i].nframes, res->res_changes);
			else
				r = check_decoded(d[i], &c[i], (uint8_t *)out[i], len[i],
						  V4L2_PIX_FMT_YUV420, true);
		} else if (!r && !strstr(res->err, "ERROR") && !strstr(res->err, "FLAG_ERR")) {
			r = failf("stream 7 with the fault: %s", res->err[0] ? res->err
					: "decoded without an error");
		}
		vvdec_free(d[i]);
		vvdec_clip_free(&c[i]);
		free(out[i]);
	}
	return close_front(v, r);
}

/* Encoder: the same with streams 7 (faulty) and 8. */
static int f_two_enc(enum f_want want)
{
	struct vuf *v = open_front(NULL);
	struct ejob j[2] = { 0 };
	struct vvenc *e[2];
	int r = 0;

	if (!v)
		return -1;
	for (int i = 0; i < 2; i++) {
		raw_make(&j[i].raw, 12, 70 + (unsigned)i);
		j[i].o = (struct vvenc_opts){ .stream_id = 7 + (unsigned)i, .timeout_ms = 30000 };
		j[i].f = open_memstream(&j[i].out, &j[i].out_len);
		e[i] = j[i].e = vvenc_new(v, &j[i].raw, j[i].f, &j[i].o);
		if (!j[i].f || !j[i].e)
			abort();
	}
	vvenc_run_all(e, 2);
	vuf_stream_destroy(v, 7);
	collect_answered(v);
	for (int i = 0; i < 2; i++) {
		const struct vvenc_result *res = vvenc_result(j[i].e);
		bool faulty = i == 0;

		fclose(j[i].f);
		if (!r && (!faulty || want == F_EXACT)) {
			if (res->err[0])
				r = failf("stream %d: %s", 7 + i, res->err);
			else if (res->frames_out != j[i].raw.nframes)
				r = failf("stream %d: %u coded frames of %u", 7 + i, res->frames_out,
					  j[i].raw.nframes);
			else
				r = check_encoded(&j[i], true);
		} else if (!r && !strstr(res->err, "ERROR") && !strstr(res->err, "FLAG_ERR")) {
			r = failf("stream 7 with the fault: %s", res->err[0] ? res->err
					: "encoded without an error");
		}
		ejob_free(&j[i]);
	}
	return close_front(v, r);
}

/* Lines of the daemon's log holding needle. */
static char f_log[sizeof(work) + 20];	/* the log of with_faults' daemon */

static unsigned log_count(const char *needle)
{
	FILE *f = fopen(f_log, "r");
	char line[1024];
	unsigned n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

static enum f_want f_cur_want;
static int f_dec_cur(void) { return f_two_dec(f_cur_want); }
static int f_enc_cur(void) { return f_two_enc(f_cur_want); }

/* The case: a daemon of its own with faults (for the first stream only),
 * the two streams, then the log: at most max_lines warnings/errors about
 * stream 7 (one line per fault, not a flood; the frontend's own teardown
 * may add one), none about stream 8, and no busy polling. The fake prints
 * "... DQBUF calls in a row found nothing" at close when a run of idle
 * DQBUFs reached 100: the daemon DQBUFs only after poll() says the fd is
 * readable and stops at the first EAGAIN, so a wake-up costs at most one
 * idle call per queue, and the fake's readiness is exact but for one
 * stale byte per state change: a healthy run stays under 10; a thread
 * that spins on a fd reaches 100 within microseconds. */
static int fault_case(const char *faults, enum f_want want, unsigned max_lines)
{
	char spec[200];
	unsigned n7, n8, spin;
	int r;

	snprintf(spec, sizeof(spec), "ctx=1,%s", faults);
	snprintf(f_log, sizeof(f_log), "%s/faults.log", work);
	fclose(fopen(f_log, "w"));	/* appended to by every daemon: this case's only */
	f_cur_want = want;
	r = with_faults(spec, is_encoder_dev() ? f_enc_cur : f_dec_cur);
	if (r)
		return r;
	n7 = log_count("warning: stream 7:") + log_count("error: stream 7:");
	n8 = log_count("warning: stream 8:") + log_count("error: stream 8:");
	spin = log_count("DQBUF calls in a row found nothing");
	if (n7 > max_lines || n8 || spin || (want == F_ERROR && !n7)) {
		r = failf("faults %s: %u log lines about stream 7 (1..%u expected), %u about "
			  "stream 8, %u busy-poll reports (%s)", faults, n7, max_lines, n8, spin, f_log);
	}
	return r;
}

static int t_fault_bad_index(void) { return fault_case("bad_index=3", F_ERROR, 2); }
/* The decoder copies the format's frame size and never trusts bytesused:
 * exact; the encoder copies bytesused bytes: that buffer FLAG_ERR. */
static int t_fault_big_used(void)
{
	return fault_case("big_used=3", is_encoder_dev() ? F_ERROR : F_EXACT, 2);
}
static int t_fault_epipe(void) { return fault_case("epipe=3", F_ERROR, 2); }
static int t_fault_streamon(void) { return fault_case("streamon=1", F_ERROR, 2); }
static int t_fault_storm(void) { return fault_case("storm=200", F_EXACT, 0); }
/* The decoder's first STREAMON is OUTPUT's: the 2nd is capture's (setup_capture). */
static int t_fault_streamon_capture(void) { return fault_case("streamon=2", F_ERROR, 2); }

/* Every SOURCE_CHANGE 51 times, at the first header and at the mid-stream
 * change: still exactly one DECODER_RESOLUTION_CHANGED per change. */
static int t_fault_storm_res_change(void)
{
	return with_faults("storm=50", t_dec_resolution_change);
}

/* A seek's OUTPUT STREAMOFF, then a POLLERR that reaches the event thread
 * only after buffers were queued again (fake fault stale_err): the seek
 * stays exact, no ERROR event, no error logged; the fault was injected. */
static int stale_err_case(int (*fn)(void))
{
	int r;

	snprintf(f_log, sizeof(f_log), "%s/faults.log", work);
	fclose(fopen(f_log, "w"));
	r = with_faults("stale_err=1", fn);
	if (!r && log_count("injected fault: a stale POLLERR") != 1)
		r = failf("the stale POLLERR was injected %u times, 1 expected (%s)",
			  log_count("injected fault: a stale POLLERR"), f_log);
	if (!r && log_count("error: stream"))
		r = failf("%u stream errors logged (%s)", log_count("error: stream"), f_log);
	return r;
}

static int t_fault_stale_err_seek(void) { return stale_err_case(t_dec_seek); }

static int t_enc_basic(void)
{
	return encode_exact(25, &(struct vvenc_opts){ 0 });
}

static int t_enc_drain_12(void)
{
	return encode_exact(12, &(struct vvenc_opts){ .n_in = 12, .early_drain = true });
}

static int t_enc_drain_32(void)
{
	return encode_exact(32, &(struct vvenc_opts){ .n_in = 32, .early_drain = true });
}

static int t_enc_inputs_first(void)
{
	return encode_exact(12, &(struct vvenc_opts){ .n_in = 12, .early_drain = true,
						      .outputs_late = true });
}

static int t_enc_resume(void)
{
	return encode_exact(10, &(struct vvenc_opts){ .n_in = 12, .early_drain = true, .resume = 2 });
}

static int t_enc_per_plane(void)
{
	return encode_exact(8, &(struct vvenc_opts){ .per_plane = true, .scatter = true });
}

static int t_enc_one_data_size(void)
{
	return encode_exact(8, &(struct vvenc_opts){ .one_data_size = true });
}

static int t_enc_clear_input(void)
{
	struct ejob j = { .o = { .clear_after = 4 } };
	int r;

	raw_make(&j.raw, 20, 5);
	r = encode(&j, NULL);
	if (!r)
		r = check_encoded(&j, false);
	if (!r && !vvenc_result(j.e)->drained)
		r = failf("no drain after the clear");
	ejob_free(&j);
	return r;
}

static int t_fault_stale_err_clear(void) { return stale_err_case(t_enc_clear_input); }

static int t_enc_destroy_mid(void)
{
	struct ejob j = { .o = { .destroy_after = 5, .n_in = 8, .n_out = 8 } };
	int r;

	raw_make(&j.raw, 30, 6);
	r = encode(&j, NULL);
	if (!r && !vvenc_result(j.e)->destroyed)
		r = failf("the stream was not destroyed mid-encode");
	/* Frames finished before the destroy but collected after it are taken
	 * in resource order (collect_after_destroy), not completion order:
	 * each must still be the encoding of the input its timestamp names. */
	if (!r)
		r = check_encoded(&j, false);
	ejob_free(&j);
	return r;
}

/* Controls the fake lacks (BITRATE & co.): valid defaults, SET remembered,
 * invalid values refused; PROFILE/LEVEL do not exist for FWHT. */
static int t_enc_controls(void)
{
	struct vuf *v = open_front(NULL);
	struct vuf_params p;
	uint32_t val;
	static const uint32_t ctl[] = { VIRTIO_VIDEO_CONTROL_BITRATE, VIRTIO_VIDEO_CONTROL_BITRATE_PEAK,
					VIRTIO_VIDEO_CONTROL_BITRATE_MODE,
					VIRTIO_VIDEO_CONTROL_PREPEND_SPSPPS_TO_IDR };

	if (!v)
		return -1;
	EXPECT(vuf_stream_create(v, 1, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "c"),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_CREATE");
	for (size_t i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++) {
		EXPECT(vuf_get_control(v, 1, ctl[i], &val), VIRTIO_VIDEO_RESP_OK_GET_CONTROL, "GET %s",
		       vuf_control_name(ctl[i]));
		if (ctl[i] == VIRTIO_VIDEO_CONTROL_BITRATE || ctl[i] == VIRTIO_VIDEO_CONTROL_BITRATE_PEAK)
			CHECK(val >= 1 && val <= 1000000000, "%s default %u", vuf_control_name(ctl[i]), val);
		else
			CHECK(val <= 1, "%s default %u", vuf_control_name(ctl[i]), val);
	}
	EXPECT(vuf_set_control(v, 1, VIRTIO_VIDEO_CONTROL_BITRATE, 2500000), VIRTIO_VIDEO_RESP_OK_NODATA,
	       "SET BITRATE");
	EXPECT(vuf_get_control(v, 1, VIRTIO_VIDEO_CONTROL_BITRATE, &val), VIRTIO_VIDEO_RESP_OK_GET_CONTROL,
	       "GET BITRATE");
	CHECK(val == 2500000, "BITRATE %u after SET 2500000", val);
	EXPECT(vuf_set_control(v, 1, VIRTIO_VIDEO_CONTROL_BITRATE_MODE, VIRTIO_VIDEO_BITRATE_MODE_CBR),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "SET BITRATE_MODE CBR");
	EXPECT(vuf_get_control(v, 1, VIRTIO_VIDEO_CONTROL_BITRATE_MODE, &val),
	       VIRTIO_VIDEO_RESP_OK_GET_CONTROL, "GET BITRATE_MODE");
	CHECK(val == VIRTIO_VIDEO_BITRATE_MODE_CBR, "BITRATE_MODE %u after SET CBR", val);
	EXPECT(vuf_set_control(v, 1, VIRTIO_VIDEO_CONTROL_BITRATE, 0),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "SET BITRATE 0");
	EXPECT(vuf_set_control(v, 1, VIRTIO_VIDEO_CONTROL_BITRATE_MODE, 5),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "SET BITRATE_MODE 5");
	EXPECT(vuf_set_control(v, 1, VIRTIO_VIDEO_CONTROL_PREPEND_SPSPPS_TO_IDR, 2),
	       VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER, "SET PREPEND 2");
	EXPECT(vuf_get_control(v, 1, VIRTIO_VIDEO_CONTROL_BITRATE, &val), VIRTIO_VIDEO_RESP_OK_GET_CONTROL,
	       "GET BITRATE");
	CHECK(val == 2500000, "BITRATE %u after refused SETs", val);
	EXPECT(vuf_get_control(v, 1, VIRTIO_VIDEO_CONTROL_PROFILE, &val),
	       VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL, "GET PROFILE of FWHT");
	EXPECT(vuf_get_control(v, 1, 99, &val), VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL,
	       "GET control 99");
	EXPECT(vuf_set_control(v, 1, VIRTIO_VIDEO_CONTROL_FORCE_KEYFRAME, 1), VIRTIO_VIDEO_RESP_OK_NODATA,
	       "SET FORCE_KEYFRAME");
	EXPECT(vuf_get_params(v, 1, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, false, &p),
	       VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS input");
	CHECK(p.frame_rate != 0, "GET_PARAMS frame_rate 0 (the codec says 0)");
	EXPECT(vuf_get_params(v, 1, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, false, &p),
	       VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS output");
	CHECK(p.frame_rate != 0, "GET_PARAMS output frame_rate 0");
	EXPECT(vuf_stream_destroy(v, 1), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY");
	return close_front(v, 0);
}


/* ---- memory paths ------------------------------------------------------------------- */

/* Run fn against a daemon of its own with VUV_MEMORY=memory (NULL: auto)
 * and the fake's faults; then every want[] string must be in its log. */
static int with_memory(const char *memory, const char *faults, int (*fn)(void),
		       const char *const *want)
{
	const char *outer = getenv("VUV_MEMORY");
	char saved[64] = "", log[sizeof(work) + 20], line[1024];
	bool found[8] = { 0 };
	FILE *f;
	int r;

	if (outer)
		snprintf(saved, sizeof(saved), "%s", outer);
	snprintf(log, sizeof(log), "%s/faults.log", work);
	unlink(log);
	if (memory)
		setenv("VUV_MEMORY", memory, 1);
	else
		unsetenv("VUV_MEMORY");
	r = with_faults(faults ? faults : "", fn);
	if (outer)
		setenv("VUV_MEMORY", saved, 1);
	else
		unsetenv("VUV_MEMORY");
	f = fopen(log, "r");
	while (f && fgets(line, sizeof(line), f))
		for (unsigned i = 0; want[i]; i++)
			found[i] |= strstr(line, want[i]) != NULL;
	if (f)
		fclose(f);
	for (unsigned i = 0; !r && want[i]; i++)
		if (!found[i])
			r = failf("no \"%s\" in %s", want[i], log);
	return r;
}

static int m_decode(void)
{
	return decode_exact(8, &(struct vvdec_opts){ 0 }, NULL);
}

static int m_decode_scattered(void)
{
	return decode_exact(8, &(struct vvdec_opts){ .scatter = true }, NULL);
}

static int m_encode(void)
{
	return encode_exact(8, &(struct vvenc_opts){ 0 });
}

static int m_encode_scattered(void)
{
	return encode_exact(8, &(struct vvenc_opts){ .scatter = true });
}

static int (*m_job(void))(void)
{
	return strstr(suite.device, "encoder") ? m_encode : m_decode;
}

/* auto on a driver with USERPTR: both queues zero-copy, nothing copied */
static int t_mem_auto(void)
{
	static const char *const want[] = { "input memory: userptr (the driver offers USERPTR)",
					    "output memory: userptr (the driver offers USERPTR)",
					    " buffers zero-copy, 0 copied", NULL };
	return with_memory(NULL, NULL, m_job(), want);
}

static int t_mem_auto_scattered(void)
{
	static const char *const want[] = { "input memory: userptr", "output memory: userptr",
					    " buffers zero-copy, 0 copied", NULL };
	return with_memory("auto", NULL, strstr(suite.device, "encoder") ? m_encode_scattered
									 : m_decode_scattered, want);
}

static int t_mem_mmap(void)
{
	static const char *const want[] = { "input memory: mmap + copy (--memory=mmap)",
					    "output memory: mmap + copy (--memory=mmap)",
					    ": 0 buffers zero-copy", NULL };
	return with_memory("mmap", NULL, m_job(), want);
}

/* the driver says USERPTR but REQBUFS refuses it: MMAP, the guest sees nothing */
static int t_mem_userptr_fails(void)
{
	static const char *const want[] = { "input memory: mmap + copy (REQBUFS userptr failed)",
					    "output memory: mmap + copy (REQBUFS userptr failed)",
					    ": 0 buffers zero-copy", NULL };
	return with_memory("userptr", "userptr_fail=1", m_job(), want);
}

static int t_mem_no_userptr(void)
{
	static const char *const want[] = { "input memory: mmap + copy (the driver offers no USERPTR)",
					    ": 0 buffers zero-copy", NULL };
	return with_memory(NULL, "no_userptr=1", m_job(), want);
}

/* dmabuf is not built: forced, it goes on to USERPTR */
static int t_mem_dmabuf(void)
{
	static const char *const want[] = { "input memory: userptr (--memory=dmabuf, not built",
					    " buffers zero-copy, 0 copied", NULL };
	return with_memory("dmabuf", NULL, m_job(), want);
}

/* DMABUF from guest memory (make check-dmabuf: the CONFIG_VUV_DMABUF fake
 * daemon, /dev/udmabuf, sealed memfds). At 512x512 every colour plane of
 * YU12/NV12 starts on a page: with :mem-planes each memory plane is a
 * dmabuf of its own over the guest's pages, nothing is copied. */
static int t_mem_dmabuf_planes(void)
{
	static const char *const want[] = { "input memory: dmabuf", "output memory: dmabuf",
					    " buffers zero-copy, 0 copied", NULL };
	int r;

	job_w = job_h = 512;
	r = with_memory("dmabuf", NULL, m_job(), want);
	job_w = W, job_h = H;
	return r;
}

/* At 320x240 the chroma planes start inside a page: with :mem-planes no
 * dmabuf can show them, so the raw queue takes USERPTR (nothing copied);
 * with one memory plane the frame is one dmabuf from its first byte. */
static int t_mem_dmabuf_unaligned(void)
{
	bool enc = strstr(suite.device, "encoder") != NULL;
	const char *raw = strstr(suite.device, "mem-planes") ? "userptr" : "dmabuf";
	char in[64], out[64];
	const char *const want[] = { in, out, " buffers zero-copy, 0 copied", NULL };

	snprintf(in, sizeof(in), "input memory: %s", enc ? raw : "dmabuf");
	snprintf(out, sizeof(out), "output memory: %s", enc ? "dmabuf" : raw);

	return with_memory("dmabuf", NULL, m_job(), want);
}

/* A guest that names the same pages in its input and in two output
 * resources at once: the codec reads the bitstream from them and writes the
 * frame over it, in guest memory and nowhere else (the page after them
 * stays as it was), and the daemon answers everything. */
static int f_overlap(void)
{
	struct vuf *v = open_front(NULL);
	struct vvdec_clip c;
	struct vuf_sglist mem, canary;
	uint64_t tin, tout[2], tdrain;
	struct vuf_params op;
	struct vuf_rq_result rr;
	uint32_t zero[8] = { 0 }, offs[8] = { 0 };
	size_t total = 0, len = 1u << 20;
	uint8_t *buf = NULL;
	uint32_t seed;
	int r = 0;

	if (!v)
		return -1;
	clip_make(&c, 1, W, H, 41);
	EXPECT(vuf_stream_create(v, 5, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
				 VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "o"),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_CREATE");
	CHECK(!vuf_alloc_contig(v, len, 0, &mem) && !vuf_alloc_contig(v, 4096, 0, &canary),
	      "guest memory");
	buf = malloc(len);
	CHECK(buf, "memory");
	memset(buf, 0xee, 4096);
	CHECK(!vuf_sg_write(v, &canary, 0, buf, 4096), "canary");
	EXPECT(vuf_resource_create(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1,
				   VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, 1, zero, &mem, 1),
	       VIRTIO_VIDEO_RESP_OK_NODATA, "RESOURCE_CREATE input");
	CHECK(!vuf_sg_write(v, &mem, 0, c.data + c.off[0], c.size[0]), "write");
	EXPECT(vuf_resource_queue(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1, vvdec_ts(0), 1,
				  (uint32_t[8]){ (uint32_t)c.size[0] }, &tin), 0, "queue input");
	/* as the guest driver: output resources after DECODER_RESOLUTION_CHANGED */
	{
		struct virtio_video_event ev;

		EXPECT(vuf_event_wait(v, &ev, VUF_CMD_TIMEOUT_MS), 0, "event");
		CHECK(ev.event_type == VIRTIO_VIDEO_EVENT_DECODER_RESOLUTION_CHANGED &&
		      ev.stream_id == 5, "event %u of stream %u", ev.event_type, ev.stream_id);
	}
	EXPECT(vuf_get_params(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, true, &op),
	       VIRTIO_VIDEO_RESP_OK_GET_PARAMS, "GET_PARAMS");
	total = plane_offsets(&op, offs);
	CHECK(total <= len, "frame of %zu bytes", total);
	for (unsigned i = 0; i < 2; i++) {
		EXPECT(vuf_resource_create(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10 + i,
					   VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, op.num_planes, offs,
					   &mem, 1),
		       VIRTIO_VIDEO_RESP_OK_NODATA, "RESOURCE_CREATE output");
		EXPECT(vuf_resource_queue(v, 5, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, 10 + i, 0, 0, NULL,
					  &tout[i]), 0, "queue output");
	}
	EXPECT(vuf_resource_queue_wait(v, tin, &rr, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "input");
	EXPECT(vuf_stream_drain_submit(v, 5, &tdrain), 0, "STREAM_DRAIN");
	EXPECT(vuf_resource_queue_wait(v, tout[0], &rr, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "output 10");
	CHECK(!(rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR) && rr.size == total,
	      "output 10: flags 0x%x, %u bytes", rr.flags, rr.size);
	EXPECT(vuf_resource_queue_wait(v, tout[1], &rr, VUF_CMD_TIMEOUT_MS),
	       VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE, "output 11");
	CHECK(rr.flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS, "output 11 is no EOS (flags 0x%x)", rr.flags);
	EXPECT(vuf_wait_type(v, tdrain, NULL, 0, 8, VUF_CMD_TIMEOUT_MS), VIRTIO_VIDEO_RESP_OK_NODATA,
	       "STREAM_DRAIN");
	/* the frame decoded from the bitstream it overwrote */
	CHECK(!vuf_sg_read(v, &mem, 0, buf, total), "read");
	seed = fk_seed(c.data + c.off[0] + FK_HDR, fk_be32(c.data + c.off[0] + 40)) ^
	       V4L2_PIX_FMT_YUV420;
	for (size_t i = 0; i < total; i++)
		CHECK(buf[i] == fk_pixel(seed, i), "the frame differs at byte %zu", i);
	CHECK(!vuf_sg_read(v, &canary, 0, buf, 4096), "read canary");
	for (size_t i = 0; i < 4096; i++)
		CHECK(buf[i] == 0xee, "the page after the resources changed at byte %zu", i);
	EXPECT(vuf_stream_destroy(v, 5), VIRTIO_VIDEO_RESP_OK_NODATA, "STREAM_DESTROY");
	free(buf);
	vuf_sglist_free(&mem);
	vuf_sglist_free(&canary);
	vvdec_clip_free(&c);
	return close_front(v, r);
}

static int t_mem_overlap(void)
{
	static const char *const want[] = { "input memory: userptr", "output memory: userptr",
					    " buffers zero-copy, 0 copied", NULL };
	return with_memory(NULL, NULL, f_overlap, want);
}

/* ---- main -------------------------------------------------------------------------- */

struct tcase {
	const char *name;
	int (*fn)(void);
	bool known_bug;		/* run only with VUV_KNOWN_BUGS=1 */
};

/* A device that offers NV12 and NV12M, YUV420 and YUV420M (Wave5): the
 * guest sees each virtio format once, paired with the coded format. */
static int t_caps_twins(void)
{
	bool dec = strstr(suite.device, "decoder") != NULL;
	uint32_t qt[2] = { VIRTIO_VIDEO_QUEUE_TYPE_INPUT, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT };
	struct vuf_caps c[2] = { 0 };
	struct vuf *v = open_front(NULL);
	const struct vuf_caps *raw, *coded;
	int r = 0;

	if (!v)
		return -1;
	for (int i = 0; i < 2 && !r; i++)
		if (vuf_query_capability(v, qt[i], &c[i]) != VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY)
			r = failf("QUERY_CAPABILITY of queue %u: %s", qt[i], vuf_error(v));
	raw = &c[dec ? 1 : 0];
	coded = &c[dec ? 0 : 1];
	if (!r && raw->num_descs != 2)
		r = failf("%u raw format descriptors for YU12, NV12, YM12, NM12; 2 expected",
			  raw->num_descs);
	if (!r && !((raw->descs[0].format == VIRTIO_VIDEO_FORMAT_YUV420 &&
		     raw->descs[1].format == VIRTIO_VIDEO_FORMAT_NV12)))
		r = failf("raw formats %u, %u: YUV420, NV12 expected", raw->descs[0].format,
			  raw->descs[1].format);
	if (!r && (coded->num_descs != 1 || coded->descs[0].mask != 3))
		r = failf("%u coded descriptors, mask 0x%llx: 1 with mask 0x3 expected",
			  coded->num_descs,
			  (unsigned long long)(coded->num_descs ? coded->descs[0].mask : 0));
	vuf_caps_free(&c[0]);
	vuf_caps_free(&c[1]);
	return close_front(v, r);
}

/* Both twins offered: the stream uses the one-plane format (the fake seeds
 * YM12 and NM12 frames differently there, so the exact checks tell). */
static const struct tcase twin_dec_cases[] = {
	{ "NV12 and NV12M offered: each format once in the capabilities", t_caps_twins, false },
	{ "decode 30 frames, byte-exact", t_dec_basic, false },
	{ "NV12 output by SET_PARAMS", t_dec_nv12, false },
};

static const struct tcase dec_cases[] = {
	{ "decode 30 frames, byte-exact", t_dec_basic, false },
	{ "drain right after the 12th queued input: every frame, in order", t_dec_drain_12, false },
	{ "drain right after the 32nd queued input: every frame, in order", t_dec_drain_32, false },
	{ "12 inputs and the drain before any output resource", t_dec_drain_before_outputs, false },
	{ "decode again after a drain, twice: no stale frame", t_dec_resume, false },
	{ "48 buffers through a 64-entry ring, drain at once: no deadlock", t_dec_deep_queue, false },
	{ "scattered pages, per-plane output", t_dec_scatter_per_plane, false },
	{ "NV12 output by SET_PARAMS", t_dec_nv12, false },
	{ "frames larger than the codec's buffers are split", t_dec_split_frames, false },
	{ "resolution change: two events, every frame of both sizes", t_dec_resolution_change, false },
	{ "QUEUE_CLEAR input (seek): exact, nothing stale", t_dec_seek, false },
	{ "two streams at once", t_dec_two_streams, false },
	{ "parse errors of every command, unknown ids, SET_PARAMS bounds", t_parse_errors, false },
	{ "256 streams, then OUT_OF_MEMORY", t_max_streams, false },
	{ "STREAM_DESTROY mid-stream answers every chain", t_dec_destroy_mid_stream, false },
	{ "drain while the codec holds a frame of a returned input: frame, EOS, answer",
	  t_dec_drain_held_frame, false },
	{ "QUEUE_CLEAR of the input during a drain: decoding goes on, every frame exact",
	  t_dec_clear_input_during_drain, false },
	{ "QUEUE_CLEAR of the output during a drain: decoding goes on, every frame exact",
	  t_dec_clear_output_during_drain, false },
	{ "QUEUE_CLEAR of the input after a drain: decoding goes on, every frame exact",
	  t_dec_clear_input_after_drain, false },
	{ "fault: the device goes away mid-stream (ENODEV)", t_fault_enodev, false },
	{ "fault: a capture buffer with V4L2_BUF_FLAG_ERROR", t_fault_error_flag, false },
	{ "fault: EIO on QBUF of a bitstream buffer", t_fault_eio_qbuf, false },
	{ "fault: SOURCE_CHANGE never comes: the guest gives up, every chain answered", t_fault_no_event, false },
	{ "fault: DQBUF capture returns a bad index; a healthy stream beside", t_fault_bad_index, false },
	{ "fault: capture bytesused past the buffer; a healthy stream beside", t_fault_big_used, false },
	{ "fault: EPIPE from DQBUF capture outside a drain; a healthy stream beside", t_fault_epipe, false },
	{ "fault: STREAMON fails; a healthy stream beside", t_fault_streamon, false },
	{ "fault: an event storm (201 SOURCE_CHANGE at once); a healthy stream beside", t_fault_storm, false },
	{ "fault: STREAMON of capture fails; a healthy stream beside", t_fault_streamon_capture, false },
	{ "fault: an event storm at both changes of a resolution change: two events", t_fault_storm_res_change, false },
	{ "fault: a stale POLLERR after a seek's STREAMOFF: exact, no error", t_fault_stale_err_seek, false },
	{ "memory auto: USERPTR on both queues, nothing copied, exact", t_mem_auto, false },
	{ "memory auto, scattered pages: USERPTR, nothing copied, exact", t_mem_auto_scattered, false },
	{ "memory forced mmap: copied, exact", t_mem_mmap, false },
	{ "memory forced userptr, REQBUFS USERPTR fails: MMAP, exact", t_mem_userptr_fails, false },
	{ "memory auto, a driver without USERPTR: MMAP, exact", t_mem_no_userptr, false },
	{ "memory forced dmabuf (not built): the next path, USERPTR", t_mem_dmabuf, false },
	{ "memory: one guest buffer as input and two outputs at once", t_mem_overlap, false },
};

static const struct tcase enc_cases[] = {
	{ "encode 25 frames, byte-exact", t_enc_basic, false },
	{ "encoder: drain right after the 12th queued input", t_enc_drain_12, false },
	{ "encoder: drain right after the 32nd queued input", t_enc_drain_32, false },
	{ "encoder: 12 inputs and the drain before any output resource", t_enc_inputs_first, false },
	{ "encoder: encode again after a drain, twice", t_enc_resume, false },
	{ "encoder: scattered per-plane input", t_enc_per_plane, false },
	{ "encoder: one data size for three planes", t_enc_one_data_size, false },
	{ "encoder: QUEUE_CLEAR input mid-stream", t_enc_clear_input, false },
	{ "encoder: STREAM_DESTROY mid-encode", t_enc_destroy_mid, false },
	{ "encoder: controls the codec lacks; GET_PARAMS frame_rate", t_enc_controls, false },
	{ "encoder fault: DQBUF capture returns a bad index; a healthy stream beside", t_fault_bad_index, false },
	{ "encoder fault: capture bytesused past the buffer; a healthy stream beside", t_fault_big_used, false },
	{ "encoder fault: EPIPE from DQBUF capture outside a drain; a healthy stream beside", t_fault_epipe, false },
	{ "encoder fault: STREAMON fails; a healthy stream beside", t_fault_streamon, false },
	{ "encoder fault: a stale POLLERR after QUEUE_CLEAR input: exact, no error", t_fault_stale_err_clear, false },
	{ "encoder memory auto: USERPTR on both queues, nothing copied, exact", t_mem_auto, false },
	{ "encoder memory auto, scattered pages: USERPTR, nothing copied, exact", t_mem_auto_scattered, false },
	{ "encoder memory forced mmap: copied, exact", t_mem_mmap, false },
	{ "encoder memory forced userptr, REQBUFS USERPTR fails: MMAP, exact", t_mem_userptr_fails, false },
	{ "encoder memory auto, a driver without USERPTR: MMAP, exact", t_mem_no_userptr, false },
};

static const struct tcase twin_enc_cases[] = {
	{ "NV12 and NV12M offered: each format once in the capabilities", t_caps_twins, false },
	{ "encode 25 frames, byte-exact", t_enc_basic, false },
};

static const struct tcase dmabuf_cases[] = {
	{ "memory forced dmabuf: a dmabuf per memory plane, nothing copied, exact",
	  t_mem_dmabuf_planes, false },
	{ "memory forced dmabuf, colour planes inside a page: exact, nothing copied",
	  t_mem_dmabuf_unaligned, false },
};

static int (*cur_case)(void);

static int run_case(void)
{
	int r = cur_case();

	if (cur_front) {
		vuf_close(cur_front);	/* a case that failed half-way */
		cur_front = NULL;
	}
	return r;
}

static void run_config(const char *device, const struct tcase *cases, size_t n)
{
	char name[300];
	bool any = false;

	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s [%s]", cases[i].name, device);
		any |= t_case_selected(name);
	}
	if (!any)
		return;
	suite.device = device;
	mplane = strstr(device, "mplane") != NULL;
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s [%s]", cases[i].name, device);
		if (cases[i].known_bug && !getenv("VUV_KNOWN_BUGS")) {
			if (t_case_selected(name))
				printf("SKIP %s: a known daemon bug (VUV_KNOWN_BUGS=1 runs it)\n", name);
			continue;
		}
		cur_case = cases[i].fn;
		tsuite_case(&suite, name, run_case);
	}
	tsuite_stop(&suite, 60000);
}

int main(void)
{
	int r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	suite.daemon = getenv("VUV_FAKE_DAEMON") ? getenv("VUV_FAKE_DAEMON")
						  : "build/tests/vhost-user-video-fake";
	suite.name = "daemon";
	suite.args = "-v";
	/* the fake aborts the daemon on a QBUF of a buffer it holds */
	setenv("VUV_FAKE_STRICT", "1", 1);
	if (!mkdtemp(work)) {
		printf("FAIL mkdtemp: %s\n0 passed, 1 failed\n", strerror(errno));
		return 1;
	}
	suite.dir = work;
	run_config("fake:decoder", dec_cases, sizeof(dec_cases) / sizeof(dec_cases[0]));
	run_config("fake:decoder:mplane", dec_cases, sizeof(dec_cases) / sizeof(dec_cases[0]));
	run_config("fake:encoder", enc_cases, sizeof(enc_cases) / sizeof(enc_cases[0]));
	run_config("fake:encoder:mplane", enc_cases, sizeof(enc_cases) / sizeof(enc_cases[0]));
	/* raw formats with a memory plane per colour plane (MediaTek) */
	run_config("fake:decoder:mplane:mem-planes", dec_cases,
		   sizeof(dec_cases) / sizeof(dec_cases[0]));
	run_config("fake:encoder:mplane:mem-planes", enc_cases,
		   sizeof(enc_cases) / sizeof(enc_cases[0]));
	/* both (Wave5) */
	run_config("fake:decoder:mplane:both-planes", twin_dec_cases,
		   sizeof(twin_dec_cases) / sizeof(twin_dec_cases[0]));
	run_config("fake:encoder:mplane:both-planes", twin_enc_cases,
		   sizeof(twin_enc_cases) / sizeof(twin_enc_cases[0]));
	/* DMABUF: tests/vm-dmabuf.sh sets VUV_TEST_DMABUF=1 in the sid VM */
	for (unsigned i = 0; i < 4; i++) {
		static const char *const dev[] = { "fake:decoder:mplane", "fake:encoder:mplane",
						   "fake:decoder:mplane:mem-planes",
						   "fake:encoder:mplane:mem-planes" };
		char name[300];

		if (getenv("VUV_TEST_DMABUF") && !strcmp(getenv("VUV_TEST_DMABUF"), "1")) {
			run_config(dev[i], dmabuf_cases, sizeof(dmabuf_cases) / sizeof(dmabuf_cases[0]));
			continue;
		}
		for (size_t k = 0; k < sizeof(dmabuf_cases) / sizeof(dmabuf_cases[0]); k++) {
			snprintf(name, sizeof(name), "%s [%s]", dmabuf_cases[k].name, dev[i]);
			if (t_case_selected(name))
				tsuite_skip(&suite, name, "needs /dev/udmabuf and the CONFIG_VUV_DMABUF "
					    "fake daemon: make check-dmabuf runs it");
		}
	}
	r = tsuite_end(&suite);
	if (!r && !getenv("VUV_KEEP_LOGS"))
		sh("rm -rf %s", work);
	else
		printf("logs kept in %s\n", work);
	return r;
}
