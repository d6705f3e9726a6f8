/* SPDX-License-Identifier: MIT */
/*
 * vuvideo-front: drive a vhost-user-video daemon by hand, as QEMU and the
 * guest driver would, through the vufront library.
 *
 *   vuvideo-front --socket /tmp/video.sock caps
 *   vuvideo-front --socket /tmp/video.sock raw-cmd 0x10d 1 0x100
 *   vuvideo-front --socket /tmp/video.sock decode clip.fwht out.yuv
 *   vuvideo-front --socket /tmp/video.sock encode 640 480 raw.yu12 out.fwht
 *   vuvideo-front gen 640 480 60 raw.yu12
 *
 * Global options come before the subcommand; each subcommand is one entry of
 * the table at the bottom. Exit 0 on success, 1 with a message otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <endian.h>
#include <linux/virtio_config.h>

#include "vufront.h"
#include "vvdec.h"
#include "vvenc.h"

#define PROG "vuvideo-front"

static int timeout_ms = VUF_CMD_TIMEOUT_MS;

static void print_bits(const char *title, uint64_t bits, const char *(*name)(unsigned))
{
	printf("%s 0x%016" PRIx64 ":", title, bits);
	for (unsigned b = 0; b < 64; b++)
		if (bits >> b & 1)
			printf(" %s", name(b));
	printf("\n");
}

static void print_config(struct vuf *v)
{
	char name[sizeof(v->config.device_name) + 1] = { 0 };

	memcpy(name, v->config.device_name, sizeof(v->config.device_name));
	printf("config (%u bytes): version %u, max_caps_length %u, max_resp_length %u, "
	       "device_name \"%s\"\n", v->config_len, le32toh(v->config.version),
	       le32toh(v->config.max_caps_length), le32toh(v->config.max_resp_length), name);
}

static void print_negotiation(struct vuf *v)
{
	print_bits("device features    ", v->dev_features, vuf_feature_name);
	print_bits("negotiated features", v->features, vuf_feature_name);
	print_bits("device protocol    ", v->dev_protocol_features, vuf_protocol_feature_name);
	print_bits("negotiated protocol", v->protocol_features, vuf_protocol_feature_name);
	printf("queues %" PRIu64 ", memory slots %" PRIu64 "\n", v->queue_num, v->max_mem_slots);
}

static int query(struct vuf *v, uint32_t qt, struct vuf_caps *c)
{
	int r = vuf_query_capability(v, qt, c);

	if (r < 0) {
		fprintf(stderr, PROG ": QUERY_CAPABILITY %s: %s\n", vuf_queue_type_name(qt),
			vuf_error(v));
		return -1;
	}
	if (r != VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY) {
		fprintf(stderr, PROG ": QUERY_CAPABILITY %s answered %s (0x%x)\n",
			vuf_queue_type_name(qt), vuf_cmd_name((uint32_t)r), r);
		return -1;
	}
	return 0;
}

static int cmd_caps(struct vuf *v, int argc, char **argv)
{
	struct vuf_caps in, out;
	int ret = 1;

	if (argc > 1) {
		fprintf(stderr, PROG ": %s takes no arguments\n", argv[0]);
		return 2;
	}
	print_config(v);
	print_negotiation(v);
	if (query(v, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, &in) < 0)
		return 1;
	if (query(v, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, &out) == 0) {
		vuf_caps_print(stdout, &in, &out);
		vuf_caps_print(stdout, &out, &in);
		vuf_caps_free(&out);
		ret = 0;
	}
	vuf_caps_free(&in);
	return ret;
}

static int cmd_config(struct vuf *v, int argc, char **argv)
{
	if (argc > 1) {
		fprintf(stderr, PROG ": %s takes no arguments\n", argv[0]);
		return 2;
	}
	print_config(v);
	print_negotiation(v);
	return 0;
}

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long long x;

	errno = 0;
	x = strtoull(s, &end, 0);
	if (errno || end == s || *end || x > UINT32_MAX) {
		fprintf(stderr, PROG ": not a 32-bit number: %s\n", s);
		return -1;
	}
	*out = (uint32_t)x;
	return 0;
}

static void hexdump(const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i += 16) {
		printf("  %04zx:", i);
		for (size_t j = i; j < len && j < i + 16; j++)
			printf(" %02x", b[j]);
		printf("\n");
	}
}

/* raw-cmd TYPE [STREAM_ID [LE32-WORD...]]: header + words, print the answer. */
static int cmd_raw(struct vuf *v, int argc, char **argv)
{
	uint32_t words[64], resp_len = le32toh(v->config.max_resp_length);
	unsigned n = 0;
	uint8_t *resp;
	int used;

	if (argc < 2 || argc - 1 > (int)(sizeof(words) / sizeof(words[0]))) {
		fprintf(stderr, PROG ": usage: raw-cmd TYPE [STREAM_ID [WORD...]]\n");
		return 2;
	}
	for (int i = 1; i < argc; i++, n++)
		if (parse_u32(argv[i], &words[n]) < 0)
			return 2;
	if (n < 2)
		words[n++] = 0;
	for (unsigned i = 0; i < n; i++)
		words[i] = htole32(words[i]);
	if (resp_len < 4096)
		resp_len = 4096;
	resp = calloc(1, resp_len);
	if (!resp)
		return 1;
	used = vuf_cmd(v, words, 4 * n, NULL, 0, resp, resp_len, timeout_ms);
	if (used < 0) {
		fprintf(stderr, PROG ": %s\n", vuf_error(v));
		free(resp);
		return 1;
	}
	if (used >= 8)
		printf("response %s (0x%x), stream %u, %d bytes\n",
		       vuf_cmd_name(le32toh(*(uint32_t *)resp)), le32toh(*(uint32_t *)resp),
		       le32toh(*(uint32_t *)(resp + 4)), used);
	else
		printf("response of %d bytes\n", used);
	hexdump(resp, (size_t)used);
	free(resp);
	return 0;
}

/* decode [--quiet] [--scatter] [--per-plane] [--streams N] IN.fwht OUT.yuv:
 * play the guest driver's decode of a FWHT clip; OUT gets the visible
 * frames as v4l2-ctl --stream-to writes them (OUT.N for stream N > 1). */
static int cmd_decode(struct vuf *v, int argc, char **argv)
{
	struct vvdec_opts o = { .timeout_ms = 60000 };
	struct vvdec *ds[8] = { NULL };
	FILE *outs[8] = { NULL };
	struct vvdec_clip clip;
	unsigned n = 1, frames = 0;
	bool quiet = false;
	double secs = 0;
	char err[256];
	int i, ret = 0;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--quiet"))
			quiet = true;
		else if (!strcmp(argv[i], "--scatter"))
			o.scatter = true;
		else if (!strcmp(argv[i], "--per-plane"))
			o.per_plane = true;
		else if (!strcmp(argv[i], "--streams") && i + 1 < argc && atoi(argv[i + 1]) > 0 &&
			 atoi(argv[i + 1]) <= 8)
			n = (unsigned)atoi(argv[++i]);
		else {
			fprintf(stderr, PROG ": decode: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (argc - i != 2) {
		fprintf(stderr, PROG ": decode: IN.fwht OUT.yuv expected\n");
		return 2;
	}
	if (vvdec_clip_load(&clip, argv[i], err, sizeof(err))) {
		fprintf(stderr, PROG ": %s\n", err);
		return 1;
	}
	o.verbose = !quiet;
	for (unsigned k = 0; k < n && !ret; k++) {
		char path[4096];

		snprintf(path, sizeof(path), k ? "%s.%u" : "%s", argv[i + 1], k + 1);
		outs[k] = fopen(path, "wb");
		o.stream_id = k + 1;
		ds[k] = outs[k] ? vvdec_new(v, &clip, outs[k], &o) : NULL;
		if (!ds[k]) {
			fprintf(stderr, PROG ": cannot write %s\n", path);
			ret = 1;
		}
	}
	if (!ret && vvdec_run_all(ds, n))
		ret = 1;
	for (unsigned k = 0; k < n; k++) {
		const struct vvdec_result *r = ds[k] ? vvdec_result(ds[k]) : NULL;

		if (r && r->err[0])
			fprintf(stderr, PROG ": stream %u: %s\n", k + 1, r->err);
		if (r) {
			frames += r->frames_out;
			if (r->seconds > secs)
				secs = r->seconds;
		}
		if (outs[k] && fclose(outs[k]))
			ret = 1;
		vvdec_free(ds[k]);
	}
	vvdec_clip_free(&clip);
	if (!ret)
		printf("decoded %u frames in %.3f s: %.2f frames/s\n", frames, secs,
		       secs > 0 ? frames / secs : 0.0);
	return ret;
}

/* encode [--quiet] [--scatter] WIDTH HEIGHT RAW.yu12 OUT.fwht: play the
 * guest driver's encode of raw YU12 frames of WIDTH x HEIGHT to FWHT; OUT
 * gets the coded frames one after the other (a FWHT bitstream). */
static int cmd_encode(struct vuf *v, int argc, char **argv)
{
	struct vvenc_opts o = { .timeout_ms = 60000 };
	const struct vvenc_result *r;
	struct vvenc_raw raw;
	struct vvenc *e;
	uint32_t w, h;
	bool quiet = false;
	char err[256];
	FILE *out;
	int i, ret = 0;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--quiet"))
			quiet = true;
		else if (!strcmp(argv[i], "--scatter"))
			o.scatter = true;
		else {
			fprintf(stderr, PROG ": encode: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (argc - i != 4 || parse_u32(argv[i], &w) || parse_u32(argv[i + 1], &h)) {
		fprintf(stderr, PROG ": encode: WIDTH HEIGHT RAW.yu12 OUT.fwht expected\n");
		return 2;
	}
	if (vvenc_raw_load(&raw, argv[i + 2], w, h, err, sizeof(err))) {
		fprintf(stderr, PROG ": %s\n", err);
		return 1;
	}
	out = fopen(argv[i + 3], "wb");
	if (!out) {
		fprintf(stderr, PROG ": cannot write %s: %s\n", argv[i + 3], strerror(errno));
		vvenc_raw_free(&raw);
		return 1;
	}
	o.verbose = !quiet;
	e = vvenc_new(v, &raw, out, &o);
	if (!e || vvenc_run_all(&e, 1))
		ret = 1;
	r = e ? vvenc_result(e) : NULL;
	if (r && r->err[0])
		fprintf(stderr, PROG ": %s\n", r->err);
	if (fclose(out)) {
		fprintf(stderr, PROG ": writing %s: %s\n", argv[i + 3], strerror(errno));
		ret = 1;
	}
	if (!ret && r) {
		if (!quiet)
			printf("%u frames in, %u coded frames (%u keyframes), %llu bytes\n",
			       r->frames_in, r->frames_out, r->keyframes,
			       (unsigned long long)r->bytes_out);
		printf("encoded %u frames in %.3f s: %.2f frames/s\n", r->frames_out, r->seconds,
		       r->seconds > 0 ? r->frames_out / r->seconds : 0.0);
	}
	vvenc_free(e);
	vvenc_raw_free(&raw);
	return ret;
}

/* gen W H N FILE: raw YU12 test frames of our own (no daemon needed). */
static int cmd_gen(struct vuf *v, int argc, char **argv)
{
	uint32_t w, h, n;

	(void)v;
	if (argc != 5 || parse_u32(argv[1], &w) || parse_u32(argv[2], &h) ||
	    parse_u32(argv[3], &n) || w < 64 || h < 64 || w % 2 || h % 2) {
		fprintf(stderr, PROG ": gen WIDTH HEIGHT FRAMES FILE (even sizes >= 64)\n");
		return 2;
	}
	if (vvdec_gen_raw(argv[4], w, h, n, 0)) {
		fprintf(stderr, PROG ": cannot write %s\n", argv[4]);
		return 1;
	}
	return 0;
}

struct subcmd {
	const char *name;
	int (*run)(struct vuf *v, int argc, char **argv);	/* argv[0] = name */
	const char *args;
	const char *help;
	bool offline;			/* needs no daemon */
};

static const struct subcmd subcmds[] = {
	{ "caps", cmd_caps, "", "config space, negotiated features, input and output capabilities", false },
	{ "config", cmd_config, "", "config space and negotiated features only", false },
	{ "raw-cmd", cmd_raw, "TYPE [STREAM_ID [WORD...]]",
	  "send a header and little-endian words, print the response", false },
	{ "decode", cmd_decode, "[--quiet] [--scatter] [--per-plane] [--streams N] IN.fwht OUT.yuv",
	  "decode a FWHT clip as the guest driver would; print frames/s", false },
	{ "encode", cmd_encode, "[--quiet] [--scatter] WIDTH HEIGHT RAW.yu12 OUT.fwht",
	  "encode raw YU12 frames to FWHT as the guest driver would; print frames/s", false },
	{ "gen", cmd_gen, "WIDTH HEIGHT FRAMES FILE", "write raw YU12 test frames (no daemon)", true },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " --socket PATH [OPTIONS] COMMAND [ARGS]\n"
		   "options:\n"
		   "  --socket PATH      the daemon's vhost-user socket\n"
		   "  --timeout MS       command timeout (default %d)\n"
		   "  --queue-size N     virtqueue size (default 256)\n"
		   "  --add-mem-reg      memory with ADD_MEM_REG instead of SET_MEM_TABLE\n"
		   "  --no-event-idx     do not negotiate EVENT_IDX\n"
		   "  --indirect         send commands as indirect descriptors\n"
		   "  -v, --verbose      log vhost-user messages\n"
		   "commands:\n", VUF_CMD_TIMEOUT_MS);
	for (size_t i = 0; i < sizeof(subcmds) / sizeof(subcmds[0]); i++)
		fprintf(f, "  %-8s %s\n  %8s %s\n", subcmds[i].name, subcmds[i].args, "",
			subcmds[i].help);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "queue-size", required_argument, NULL, 'q' },
		{ "add-mem-reg", no_argument, NULL, 'a' },
		{ "no-event-idx", no_argument, NULL, 'e' },
		{ "indirect", no_argument, NULL, 'i' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const struct subcmd *sc = NULL;
	const char *path = NULL;
	struct vuf_opts o;
	struct vuf *v;
	char err[512];
	uint32_t x;
	int c, ret;

	vuf_opts_default(&o);
	while ((c = getopt_long(argc, argv, "+s:t:q:aeivh", longopts, NULL)) != -1) {
		switch (c) {
		case 's': path = optarg; break;
		case 't':
			if (parse_u32(optarg, &x) < 0 || x > INT32_MAX)
				return 2;
			timeout_ms = (int)x;
			o.cmd_timeout_ms = (int)x;
			break;
		case 'q':
			if (parse_u32(optarg, &x) < 0)
				return 2;
			o.queue_size = x;
			break;
		case 'a': o.use_add_mem_reg = true; break;
		case 'e': o.event_idx = false; break;
		case 'i': o.use_indirect = true; break;
		case 'v': o.verbose++; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, PROG ": error: no command given\n");
		usage(stderr);
		return 2;
	}
	for (size_t i = 0; i < sizeof(subcmds) / sizeof(subcmds[0]); i++)
		if (!strcmp(argv[optind], subcmds[i].name))
			sc = &subcmds[i];
	if (!sc) {
		fprintf(stderr, PROG ": error: unknown command '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (sc->offline)
		return sc->run(NULL, argc - optind, argv + optind);
	if (!path) {
		fprintf(stderr, PROG ": error: --socket PATH is required\n");
		usage(stderr);
		return 2;
	}
	v = vuf_open(path, &o, err, sizeof(err));
	if (!v) {
		fprintf(stderr, PROG ": error: %s: %s\n", path, err);
		return 1;
	}
	ret = sc->run(v, argc - optind, argv + optind);
	if (!ret && v->ring_errors) {
		fprintf(stderr, PROG ": error: %u ring errors, last: %s\n", v->ring_errors,
			vuf_error(v));
		ret = 1;
	}
	vuf_close(v);
	return ret;
}
