/* SPDX-License-Identifier: MIT */
/*
 * vvcmd: the virtio-video commands of the test frontend (see vufront.h):
 * typed requests and their answers, capabilities, names. The transport
 * (guest memory, rings, the vhost-user socket and handshake, chains, the
 * eventq) is vufront.c.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vufront.h"

#define fail vuf_fail
#define MIB (1024u * 1024u)

static uint32_t rd32(const uint8_t *p)
{
	uint32_t x;

	memcpy(&x, p, 4);
	return le32toh(x);
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t x;

	memcpy(&x, p, 8);
	return le64toh(x);
}

/* ---- names ------------------------------------------------------------------ */

static const char *const cmd_names[] = {
	[0x00] = "QUERY_CAPABILITY", [0x01] = "STREAM_CREATE", [0x02] = "STREAM_DESTROY",
	[0x03] = "STREAM_DRAIN", [0x04] = "RESOURCE_CREATE", [0x05] = "RESOURCE_QUEUE",
	[0x06] = "RESOURCE_DESTROY_ALL", [0x07] = "QUEUE_CLEAR", [0x08] = "GET_PARAMS",
	[0x09] = "SET_PARAMS", [0x0A] = "QUERY_CONTROL", [0x0B] = "GET_CONTROL",
	[0x0C] = "SET_CONTROL", [0x0D] = "GET_PARAMS_EXT", [0x0E] = "SET_PARAMS_EXT",
};

static const char *const resp_names[] = {
	[0x00] = "OK_NODATA", [0x01] = "OK_QUERY_CAPABILITY", [0x02] = "OK_RESOURCE_QUEUE",
	[0x03] = "OK_GET_PARAMS", [0x04] = "OK_QUERY_CONTROL", [0x05] = "OK_GET_CONTROL",
};

static const char *const err_names[] = {
	[0x00] = "ERR_INVALID_OPERATION", [0x01] = "ERR_OUT_OF_MEMORY",
	[0x02] = "ERR_INVALID_STREAM_ID", [0x03] = "ERR_INVALID_RESOURCE_ID",
	[0x04] = "ERR_INVALID_PARAMETER", [0x05] = "ERR_UNSUPPORTED_CONTROL",
};

#define NAME(tab, i) ((size_t)(i) < sizeof(tab) / sizeof((tab)[0]) && (tab)[i] ? (tab)[i] : NULL)

const char *vuf_cmd_name(uint32_t type)
{
	const char *n = NULL;

	if (type >= 0x100 && type < 0x200)
		n = NAME(cmd_names, type - 0x100);
	else if (type >= 0x200 && type < 0x300)
		n = NAME(resp_names, type - 0x200);
	else if (type >= 0x300 && type < 0x400)
		n = NAME(err_names, type - 0x300);
	return n ? n : "unknown";
}

bool vuf_resp_type_valid(uint32_t type)
{
	return (type >= 0x200 && type <= 0x205) || vuf_resp_type_is_error(type);
}

bool vuf_resp_type_is_error(uint32_t type)
{
	return type >= 0x300 && type <= 0x305;
}

static const char *const raw_fmt_names[] = {
	[1] = "ARGB8888", [2] = "BGRA8888", [3] = "NV12", [4] = "YUV420", [5] = "YVU420",
};

static const char *const coded_fmt_names[] = {
	[0] = "MPEG2", [1] = "MPEG4", [2] = "H264", [3] = "HEVC", [4] = "VP8", [5] = "VP9",
	[6] = "FWHT",
};

const char *vuf_format_name(uint32_t fmt)
{
	const char *n = NULL;

	if (fmt < 0x1000)
		n = NAME(raw_fmt_names, fmt);
	else
		n = NAME(coded_fmt_names, fmt - 0x1000);
	return n ? n : "unknown";
}

const char *vuf_queue_type_name(uint32_t qt)
{
	return qt == VIRTIO_VIDEO_QUEUE_TYPE_INPUT ? "input" :
	       qt == VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT ? "output" : "unknown";
}

static const char *const control_names[] = {
	[1] = "BITRATE", [2] = "PROFILE", [3] = "LEVEL", [4] = "FORCE_KEYFRAME",
	[5] = "BITRATE_MODE", [6] = "BITRATE_PEAK", [7] = "PREPEND_SPSPPS_TO_IDR",
};

const char *vuf_control_name(uint32_t ctrl)
{
	const char *n = NAME(control_names, ctrl);

	return n ? n : "unknown";
}

/* ---- chains with a virtio-video header ----------------------------------- */

int vuf_wait_type(struct vuf *v, uint64_t token, void *resp, size_t resp_len,
		  size_t min_len, int timeout_ms)
{
	struct virtio_video_cmd_hdr h;
	uint32_t type;
	int r;

	if (!resp) {
		resp = &h;
		resp_len = sizeof(h);
	}
	r = vuf_wait(v, token, resp, resp_len, timeout_ms);
	if (r < 0)
		return r;
	if ((size_t)r < sizeof(h))
		return fail(v, -EPROTO, "response of %d bytes, shorter than a header", r);
	type = rd32(resp);
	if (!vuf_resp_type_is_error(type) && (size_t)r < min_len)
		return fail(v, -EPROTO, "%s response of %d bytes, expected %zu", vuf_cmd_name(type),
			    r, min_len);
	return (int)type;
}

static int simple_cmd(struct vuf *v, const void *req, size_t len, void *resp, size_t resp_len,
		      size_t min_len, int timeout_ms)
{
	uint64_t t;
	int r = vuf_submit(v, req, len, NULL, 0, resp_len, &t);

	return r < 0 ? r : vuf_wait_type(v, t, resp, resp_len, min_len, timeout_ms);
}

static struct virtio_video_cmd_hdr mkhdr(uint32_t type, uint32_t stream_id)
{
	return (struct virtio_video_cmd_hdr){ htole32(type), htole32(stream_id) };
}

int vuf_stream_create(struct vuf *v, uint32_t stream_id, uint32_t in_mem_type,
		      uint32_t out_mem_type, uint32_t coded_format, const char *tag)
{
	struct virtio_video_stream_create c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_STREAM_CREATE, stream_id),
		.in_mem_type = htole32(in_mem_type),
		.out_mem_type = htole32(out_mem_type),
		.coded_format = htole32(coded_format),
	};

	if (tag)
		snprintf((char *)c.tag, sizeof(c.tag), "%s", tag);
	return simple_cmd(v, &c, sizeof(c), NULL, 8, 8, v->opts.cmd_timeout_ms);
}

int vuf_stream_destroy(struct vuf *v, uint32_t stream_id)
{
	struct virtio_video_cmd_hdr c = mkhdr(VIRTIO_VIDEO_CMD_STREAM_DESTROY, stream_id);

	return simple_cmd(v, &c, sizeof(c), NULL, 8, 8, v->opts.cmd_timeout_ms);
}

int vuf_stream_drain_submit(struct vuf *v, uint32_t stream_id, uint64_t *token)
{
	struct virtio_video_cmd_hdr c = mkhdr(VIRTIO_VIDEO_CMD_STREAM_DRAIN, stream_id);

	return vuf_submit(v, &c, sizeof(c), NULL, 0, 8, token);
}

int vuf_stream_drain(struct vuf *v, uint32_t stream_id, int timeout_ms)
{
	uint64_t t;
	int r = vuf_stream_drain_submit(v, stream_id, &t);

	return r < 0 ? r : vuf_wait_type(v, t, NULL, 0, 8, timeout_ms);
}

int vuf_resource_create(struct vuf *v, uint32_t stream_id, uint32_t queue_type,
			uint32_t resource_id, uint32_t planes_layout, uint32_t num_planes,
			const uint32_t *plane_offsets, const struct vuf_sglist *mem, unsigned n_mem)
{
	struct virtio_video_resource_create c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_RESOURCE_CREATE, stream_id),
		.queue_type = htole32(queue_type),
		.resource_id = htole32(resource_id),
		.planes_layout = htole32(planes_layout),
		.num_planes = htole32(num_planes),
	};
	struct virtio_video_mem_entry *e;
	size_t total = 0, k = 0;
	uint64_t t;
	int r;

	if (n_mem > VIRTIO_VIDEO_MAX_PLANES)
		return fail(v, -EINVAL, "%u planes", n_mem);
	for (unsigned p = 0; p < VIRTIO_VIDEO_MAX_PLANES; p++)
		c.plane_offsets[p] = htole32(plane_offsets && p < num_planes ? plane_offsets[p] : 0);
	for (unsigned p = 0; p < n_mem; p++) {
		c.num_entries[p] = htole32(mem[p].n);
		total += mem[p].n;
	}
	e = calloc(total ? total : 1, sizeof(*e));
	if (!e)
		return fail(v, -ENOMEM, "out of memory");
	for (unsigned p = 0; p < n_mem; p++)
		for (unsigned i = 0; i < mem[p].n; i++, k++) {
			e[k].addr = htole64(mem[p].e[i].gpa);
			e[k].length = htole32(mem[p].e[i].len);
		}
	r = vuf_submit(v, &c, sizeof(c), e, total * sizeof(*e), 8, &t);
	free(e);
	return r < 0 ? r : vuf_wait_type(v, t, NULL, 0, 8, v->opts.cmd_timeout_ms);
}

int vuf_resource_queue(struct vuf *v, uint32_t stream_id, uint32_t queue_type,
		       uint32_t resource_id, uint64_t timestamp, unsigned num_data_sizes,
		       const uint32_t *data_sizes, uint64_t *token)
{
	struct virtio_video_resource_queue c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_RESOURCE_QUEUE, stream_id),
		.queue_type = htole32(queue_type),
		.resource_id = htole32(resource_id),
		.timestamp = htole64(timestamp),
		.num_data_sizes = htole32(num_data_sizes),
	};

	for (unsigned i = 0; i < num_data_sizes && i < VIRTIO_VIDEO_MAX_PLANES; i++)
		c.data_sizes[i] = htole32(data_sizes[i]);
	return vuf_submit(v, &c, sizeof(c), NULL, 0, sizeof(struct virtio_video_resource_queue_resp),
			  token);
}

int vuf_resource_queue_wait(struct vuf *v, uint64_t token, struct vuf_rq_result *res,
			    int timeout_ms)
{
	uint8_t b[sizeof(struct virtio_video_resource_queue_resp)] = { 0 };
	int used = vuf_wait(v, token, b, sizeof(b), timeout_ms);
	uint32_t type;

	memset(res, 0, sizeof(*res));
	if (used < 0)
		return used;
	if (used < 8)
		return fail(v, -EPROTO, "RESOURCE_QUEUE response of %d bytes, shorter than a header",
			    used);
	type = rd32(b);
	if (type == VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE && (size_t)used < sizeof(b))
		return fail(v, -EPROTO, "OK_RESOURCE_QUEUE response of %d bytes", used);
	res->used_len = (uint32_t)used;
	if ((size_t)used >= sizeof(b)) {
		res->timestamp = rd64(b + 8);
		res->flags = rd32(b + 16);
		res->size = rd32(b + 20);
	}
	return (int)type;
}

static int queue_cmd(struct vuf *v, uint32_t type, uint32_t stream_id, uint32_t queue_type,
		     uint64_t *token)
{
	struct virtio_video_queue_cmd c = {
		.hdr = mkhdr(type, stream_id),
		.queue_type = htole32(queue_type),
	};

	return vuf_submit(v, &c, sizeof(c), NULL, 0, 8, token);
}

int vuf_resource_destroy_all(struct vuf *v, uint32_t stream_id, uint32_t queue_type)
{
	uint64_t t;
	int r = queue_cmd(v, VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL, stream_id, queue_type, &t);

	return r < 0 ? r : vuf_wait_type(v, t, NULL, 0, 8, v->opts.cmd_timeout_ms);
}

int vuf_queue_clear_submit(struct vuf *v, uint32_t stream_id, uint32_t queue_type, uint64_t *token)
{
	return queue_cmd(v, VIRTIO_VIDEO_CMD_QUEUE_CLEAR, stream_id, queue_type, token);
}

int vuf_queue_clear(struct vuf *v, uint32_t stream_id, uint32_t queue_type, int timeout_ms)
{
	uint64_t t;
	int r = vuf_queue_clear_submit(v, stream_id, queue_type, &t);

	return r < 0 ? r : vuf_wait_type(v, t, NULL, 0, 8, timeout_ms);
}

static void params_from_wire(struct vuf_params *p, const uint8_t *w, bool ext)
{
	memset(p, 0, sizeof(*p));
	p->queue_type = rd32(w + 0);
	p->format = rd32(w + 4);
	p->frame_width = rd32(w + 8);
	p->frame_height = rd32(w + 12);
	p->min_buffers = rd32(w + 16);
	p->max_buffers = rd32(w + 20);
	p->crop.left = rd32(w + 24);
	p->crop.top = rd32(w + 28);
	p->crop.width = rd32(w + 32);
	p->crop.height = rd32(w + 36);
	p->frame_rate = rd32(w + 40);
	p->num_planes = rd32(w + 44);
	for (unsigned i = 0; i < VIRTIO_VIDEO_MAX_PLANES; i++) {
		p->plane[i].plane_size = rd32(w + 48 + 8 * i);
		p->plane[i].stride = rd32(w + 52 + 8 * i);
	}
	if (ext)
		p->resource_type = rd32(w + 112);
}

static void params_to_wire(struct virtio_video_params_ext *w, const struct vuf_params *p)
{
	memset(w, 0, sizeof(*w));
	w->base.queue_type = htole32(p->queue_type);
	w->base.format = htole32(p->format);
	w->base.frame_width = htole32(p->frame_width);
	w->base.frame_height = htole32(p->frame_height);
	w->base.min_buffers = htole32(p->min_buffers);
	w->base.max_buffers = htole32(p->max_buffers);
	w->base.crop.left = htole32(p->crop.left);
	w->base.crop.top = htole32(p->crop.top);
	w->base.crop.width = htole32(p->crop.width);
	w->base.crop.height = htole32(p->crop.height);
	w->base.frame_rate = htole32(p->frame_rate);
	w->base.num_planes = htole32(p->num_planes);
	for (unsigned i = 0; i < VIRTIO_VIDEO_MAX_PLANES; i++) {
		w->base.plane_formats[i].plane_size = htole32(p->plane[i].plane_size);
		w->base.plane_formats[i].stride = htole32(p->plane[i].stride);
	}
	w->resource_type = htole32(p->resource_type);
}

int vuf_get_params(struct vuf *v, uint32_t stream_id, uint32_t queue_type, bool ext,
		   struct vuf_params *out)
{
	struct virtio_video_queue_cmd c = {
		.hdr = mkhdr(ext ? VIRTIO_VIDEO_CMD_GET_PARAMS_EXT : VIRTIO_VIDEO_CMD_GET_PARAMS,
			     stream_id),
		.queue_type = htole32(queue_type),
	};
	uint8_t b[sizeof(struct virtio_video_get_params_ext_resp)] = { 0 };
	size_t len = ext ? sizeof(struct virtio_video_get_params_ext_resp) :
			   sizeof(struct virtio_video_get_params_resp);
	int r = simple_cmd(v, &c, sizeof(c), b, len, len, v->opts.cmd_timeout_ms);

	if (r == VIRTIO_VIDEO_RESP_OK_GET_PARAMS && out)
		params_from_wire(out, b + 8, ext);
	return r;
}

int vuf_set_params(struct vuf *v, uint32_t stream_id, const struct vuf_params *p, bool ext)
{
	struct virtio_video_set_params_ext c;

	c.hdr = mkhdr(ext ? VIRTIO_VIDEO_CMD_SET_PARAMS_EXT : VIRTIO_VIDEO_CMD_SET_PARAMS, stream_id);
	params_to_wire(&c.params, p);
	return simple_cmd(v, &c, ext ? sizeof(struct virtio_video_set_params_ext) :
				       sizeof(struct virtio_video_set_params),
			  NULL, 8, 8, v->opts.cmd_timeout_ms);
}

int vuf_query_control(struct vuf *v, uint32_t stream_id, uint32_t control, uint32_t format,
		      uint32_t *values, unsigned max, unsigned *num)
{
	struct virtio_video_query_control c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_QUERY_CONTROL, stream_id),
		.control = htole32(control),
		.format = htole32(format),
	};
	uint8_t b[16 + 4 * 128] = { 0 };
	uint64_t t;
	int r, used;

	*num = 0;
	if ((r = vuf_submit(v, &c, sizeof(c), NULL, 0, sizeof(b), &t)) < 0)
		return r;
	/* vuf_wait_type does not tell the length: wait, then type by hand. */
	used = vuf_wait(v, t, b, sizeof(b), v->opts.cmd_timeout_ms);
	if (used < 0)
		return used;
	if (used < 8)
		return fail(v, -EPROTO, "response of %d bytes, shorter than a header", used);
	r = (int)rd32(b);
	if (r != VIRTIO_VIDEO_RESP_OK_QUERY_CONTROL)
		return r;
	if (used < 16 || rd32(b + 8) > (uint32_t)(used - 16) / 4)
		return fail(v, -EPROTO, "QUERY_CONTROL response of %d bytes for %u values", used,
			    used >= 16 ? rd32(b + 8) : 0);
	*num = rd32(b + 8);
	for (unsigned i = 0; i < *num && i < max; i++)
		values[i] = rd32(b + 16 + 4 * i);
	return r;
}

int vuf_get_control(struct vuf *v, uint32_t stream_id, uint32_t control, uint32_t *value)
{
	struct virtio_video_get_control c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_GET_CONTROL, stream_id),
		.control = htole32(control),
	};
	uint8_t b[sizeof(struct virtio_video_get_control_resp)] = { 0 };
	int r = simple_cmd(v, &c, sizeof(c), b, sizeof(b), sizeof(b), v->opts.cmd_timeout_ms);

	if (r == VIRTIO_VIDEO_RESP_OK_GET_CONTROL && value)
		*value = rd32(b + 8);
	return r;
}

int vuf_set_control(struct vuf *v, uint32_t stream_id, uint32_t control, uint32_t value)
{
	struct virtio_video_set_control c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_SET_CONTROL, stream_id),
		.control = htole32(control),
		.value = htole32(value),
	};

	return simple_cmd(v, &c, sizeof(c), NULL, 8, 8, v->opts.cmd_timeout_ms);
}

/* ---- capabilities -------------------------------------------------------------------------- */

void vuf_caps_free(struct vuf_caps *c)
{
	if (!c->descs)
		return;
	for (unsigned i = 0; i < c->num_descs; i++) {
		for (unsigned j = 0; c->descs[i].frames && j < c->descs[i].num_frames; j++)
			free(c->descs[i].frames[j].rates);
		free(c->descs[i].frames);
	}
	free(c->descs);
	memset(c, 0, sizeof(*c));
}

static struct vuf_range rd_range(const uint8_t *p)
{
	return (struct vuf_range){ rd32(p), rd32(p + 4), rd32(p + 8) };
}

#define CAPS_FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); goto bad; } while (0)

int vuf_caps_parse(const void *buf, size_t len, struct vuf_caps *out, char *err, size_t errlen)
{
	const uint8_t *b = buf;
	size_t off = 16;
	char dummy[8];

	if (!err) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	memset(out, 0, sizeof(*out));
	if (len < 16)
		CAPS_FAIL("capability response of %zu bytes, shorter than 16", len);
	out->num_descs = rd32(b + 8);
	if (out->num_descs > VIRTIO_VIDEO_MAX_FORMAT_DESCS)
		CAPS_FAIL("%u format descriptors (at most %d)", out->num_descs,
			  VIRTIO_VIDEO_MAX_FORMAT_DESCS);
	if (out->num_descs > (len - off) / 24)
		CAPS_FAIL("%u format descriptors do not fit in %zu bytes", out->num_descs, len);
	out->descs = calloc(out->num_descs ? out->num_descs : 1, sizeof(*out->descs));
	if (!out->descs)
		CAPS_FAIL("out of memory");
	for (unsigned i = 0; i < out->num_descs; i++) {
		struct vuf_format_desc *d = &out->descs[i];
		unsigned nf;

		if (len - off < 24)
			CAPS_FAIL("descriptor %u truncated at byte %zu", i, off);
		d->mask = rd64(b + off);
		d->format = rd32(b + off + 8);
		d->planes_layout = rd32(b + off + 12);
		d->plane_align = rd32(b + off + 16);
		nf = rd32(b + off + 20);
		off += 24;
		if (nf > (len - off) / 40)
			CAPS_FAIL("descriptor %u: %u frames do not fit in the %zu bytes left", i, nf,
				  len - off);
		d->frames = calloc(nf ? nf : 1, sizeof(*d->frames));
		if (!d->frames)
			CAPS_FAIL("out of memory");
		d->num_frames = nf;
		for (unsigned j = 0; j < nf; j++) {
			struct vuf_frame *f = &d->frames[j];
			unsigned nr;

			if (len - off < 40)
				CAPS_FAIL("descriptor %u frame %u truncated", i, j);
			f->width = rd_range(b + off);
			f->height = rd_range(b + off + 16);
			nr = rd32(b + off + 32);
			off += 40;
			if (nr > (len - off) / 16)
				CAPS_FAIL("descriptor %u frame %u: %u rates do not fit", i, j, nr);
			f->rates = calloc(nr ? nr : 1, sizeof(*f->rates));
			if (!f->rates)
				CAPS_FAIL("out of memory");
			f->num_rates = nr;
			for (unsigned k = 0; k < nr; k++, off += 16)
				f->rates[k] = rd_range(b + off);
		}
	}
	return 0;
bad:
	vuf_caps_free(out);
	return -EPROTO;
}

int vuf_query_capability(struct vuf *v, uint32_t queue_type, struct vuf_caps *out)
{
	struct virtio_video_query_capability c = {
		.hdr = mkhdr(VIRTIO_VIDEO_CMD_QUERY_CAPABILITY, 0),
		.queue_type = htole32(queue_type),
	};
	uint32_t max = le32toh(v->config.max_caps_length);
	size_t len = max && max <= MIB ? max : 4096;
	uint8_t *b = calloc(1, len);
	char why[200];
	int used, r;

	memset(out, 0, sizeof(*out));
	if (!b)
		return fail(v, -ENOMEM, "out of memory");
	used = vuf_cmd(v, &c, sizeof(c), NULL, 0, b, len, v->opts.cmd_timeout_ms);
	if (used < 0) {
		free(b);
		return used;
	}
	if (used < 8) {
		free(b);
		return fail(v, -EPROTO, "QUERY_CAPABILITY response of %d bytes", used);
	}
	r = (int)rd32(b);
	if (r == VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY) {
		if (vuf_caps_parse(b, (size_t)used, out, why, sizeof(why)) < 0)
			r = fail(v, -EPROTO, "QUERY_CAPABILITY %s: %s", vuf_queue_type_name(queue_type),
				 why);
		else
			out->queue_type = queue_type;
	}
	free(b);
	return r;
}

static void print_range(FILE *f, const char *what, struct vuf_range r)
{
	if (r.min == r.max)
		fprintf(f, "%s %u", what, r.min);
	else
		fprintf(f, "%s %u..%u step %u", what, r.min, r.max, r.step);
}

void vuf_caps_print(FILE *f, const struct vuf_caps *c, const struct vuf_caps *other)
{
	fprintf(f, "%s capabilities: %u format%s\n", vuf_queue_type_name(c->queue_type),
		c->num_descs, c->num_descs == 1 ? "" : "s");
	for (unsigned i = 0; i < c->num_descs; i++) {
		const struct vuf_format_desc *d = &c->descs[i];

		fprintf(f, "  [%u] %s (0x%x)  planes_layout 0x%x%s%s  plane_align %u\n", i,
			vuf_format_name(d->format), d->format, d->planes_layout,
			d->planes_layout & VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER ? " single-buffer" : "",
			d->planes_layout & VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE ? " per-plane" : "",
			d->plane_align);
		fprintf(f, "      mask 0x%016" PRIx64 " ->", d->mask);
		for (unsigned b = 0; b < 64; b++) {
			if (!(d->mask >> b & 1))
				continue;
			if (other && b < other->num_descs)
				fprintf(f, " %s", vuf_format_name(other->descs[b].format));
			else
				fprintf(f, " #%u", b);
		}
		fprintf(f, "\n");
		for (unsigned j = 0; j < d->num_frames; j++) {
			const struct vuf_frame *fr = &d->frames[j];

			fprintf(f, "      frame %u: ", j);
			print_range(f, "width", fr->width);
			print_range(f, ", height", fr->height);
			fprintf(f, ", %u rate%s", fr->num_rates, fr->num_rates == 1 ? "" : "s");
			for (unsigned k = 0; k < fr->num_rates; k++)
				print_range(f, k ? "," : ":", fr->rates[k]);
			fprintf(f, "\n");
		}
	}
}
