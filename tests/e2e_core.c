/* SPDX-License-Identifier: MIT */
/*
 * e2e_core: end-to-end tests of the real vhost-user-video daemon through the
 * vufront test frontend (QEMU's and the guest driver's side of the socket).
 *
 * Environment:
 *   VUV_DAEMON   path of the daemon binary (default ./vhost-user-video)
 *   VICODEC_DEC  the vicodec decoder node (/dev/videoN); without it only the
 *                cases that need no device run, the rest print SKIP
 *   TMPDIR       where the socket and the daemon's log go (default /tmp)
 *
 * Prints "PASS name" or "FAIL name: reason" per case and finally
 * "N passed, M failed"; exits non-zero if any case failed. Every wait is
 * bounded; a watchdog ends the whole run if something still hangs.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <endian.h>
#include <linux/virtio_config.h>

#include "tproc.h"
#include "vufront.h"

#define WATCHDOG_S 600
#define EXIT_WAIT_MS 2000	/* SIGTERM -> exit */
#define RUN_WAIT_MS 5000	/* one-shot daemon invocations */
#define ANSWER_MS 5000		/* one virtio-video command */
#define HANGUP_MS 2000		/* protocol violation -> connection dropped */
#define BOGUS_STREAM 0x7777

static const char *daemon_path, *device;
static char dir[256];
static struct tsuite suite = { .dmn = { .pid = -1 } };

/* ---- helpers -------------------------------------------------------------------- */


static void kill_wait(pid_t pid)
{
	int st;

	kill(pid, SIGKILL);
	t_wait_exit(pid, &st, 5000);
}

/*
 * Run the daemon once with args (NULL-terminated), capturing stdout and
 * stderr, killing it after timeout_ms. Returns 0 and *st if it exited.
 */
static int run_capture(const char *const *args, char *out, size_t outlen, char *err,
		       size_t errlen, int *st, int timeout_ms)
{
	int po[2], pe[2];
	size_t no = 0, ne = 0;
	int64_t deadline = t_now_ms() + timeout_ms;
	pid_t pid;
	bool open_o = true, open_e = true;

	if (pipe(po) < 0 || pipe(pe) < 0)
		return failf("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		return failf("fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]);
		close(pe[0]);
		execv(daemon_path, (char *const *)args);
		fprintf(stderr, "exec %s: %s\n", daemon_path, strerror(errno));
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	while ((open_o || open_e) && t_now_ms() < deadline) {
		struct pollfd p[2] = { { open_o ? po[0] : -1, POLLIN, 0 },
				       { open_e ? pe[0] : -1, POLLIN, 0 } };
		int r = poll(p, 2, (int)(deadline - t_now_ms()));

		if (r <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			char *b = i ? err : out;
			size_t *n = i ? &ne : &no, cap = i ? errlen : outlen;
			char sink[256];
			ssize_t k;

			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (*n + 1 < cap)
				k = read(p[i].fd, b + *n, cap - 1 - *n);
			else
				k = read(p[i].fd, sink, sizeof(sink));
			if (k <= 0) {
				if (i)
					open_e = false;
				else
					open_o = false;
			} else if (*n + 1 < cap) {
				*n += (size_t)k;
			}
		}
	}
	out[no] = 0;
	err[ne] = 0;
	close(po[0]);
	close(pe[0]);
	/* Output closed: it is exiting; allow a moment beyond the deadline. */
	if (t_wait_exit(pid, st, (int)(deadline - t_now_ms()) + 500) < 0) {
		kill_wait(pid);
		return failf("'%s' still running after %d ms", args[1] ? args[1] : "", timeout_ms);
	}
	return 0;
}

/* Open a frontend on the running daemon; NULL with why set. */
static struct vuf *open_front(const struct vuf_opts *o)
{
	char err[512];
	struct vuf *v = vuf_open(suite.dmn.sock, o, err, sizeof(err));

	if (!v)
		failf("handshake: %s", err);
	return v;
}

static struct vuf *open_default(void)
{
	return open_front(NULL);
}

/* Frontend done: ring errors fail the case; then close cleanly. */
static int finish(struct vuf *v, int ret)
{
	if (!v)
		return ret;
	if (ret == 0 && v->ring_errors)
		ret = failf("%u ring errors, last: %s", v->ring_errors, vuf_error(v));
	vuf_close(v);
	return ret;
}

/* QUERY_CAPABILITY on the input queue answers OK and parses. */
static int caps_ok(struct vuf *v, const char *when)
{
	struct vuf_caps c;
	int r = vuf_query_capability(v, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, &c);

	CHECK(r >= 0, "%s: QUERY_CAPABILITY: %s", when, vuf_error(v));
	CHECK(r == VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY, "%s: QUERY_CAPABILITY answered %s (0x%x)",
	      when, vuf_cmd_name((uint32_t)r), r);
	vuf_caps_free(&c);
	return 0;
}

/* ---- cases without a device ------------------------------------------------------- */

static int t_print_capabilities(void)
{
	const char *args[] = { daemon_path, "--print-capabilities", NULL };
	char out[4096], err[4096], squeezed[4096];
	size_t k = 0;
	int st;

	if (run_capture(args, out, sizeof(out), err, sizeof(err), &st, RUN_WAIT_MS) < 0)
		return -1;
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d, stderr: %s",
	      WIFEXITED(st) ? WEXITSTATUS(st) : -1, err);
	for (char *p = out; *p && k + 1 < sizeof(squeezed); p++)
		if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
			squeezed[k++] = *p;
	squeezed[k] = 0;
	CHECK(strstr(squeezed, "\"type\":\"video\""), "no \"type\": \"video\" in: %s", out);
	CHECK(squeezed[0] == '{', "output is not a JSON object: %s", out);
	return 0;
}

static int expect_start_failure(const char *const *args, const char *what)
{
	char out[4096], err[4096];
	int st;

	if (run_capture(args, out, sizeof(out), err, sizeof(err), &st, RUN_WAIT_MS) < 0)
		return failf("%s: %s", what, why);
	CHECK(!(WIFEXITED(st) && WEXITSTATUS(st) == 0), "%s: exit status 0", what);
	CHECK(WIFEXITED(st), "%s: did not exit cleanly (signal %d)", what,
	      WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	CHECK(err[0] && err[0] != '\n', "%s: exit %d without an error line on stderr", what,
	      WEXITSTATUS(st));
	return 0;
}

static int t_bad_flags(void)
{
	char sock_arg[400];
	const char *unknown[] = { daemon_path, "--no-such-flag", NULL };
	const char *no_socket[] = { daemon_path, "--v4l2-device=/dev/null", NULL };

	snprintf(sock_arg, sizeof(sock_arg), "--socket-path=%s/bad.sock", dir);
	const char *stray[] = { daemon_path, sock_arg, "--v4l2-device=/dev/null", "stray-arg", NULL };

	if (expect_start_failure(unknown, "--no-such-flag") < 0 ||
	    expect_start_failure(no_socket, "no --socket-path/--fd") < 0 ||
	    expect_start_failure(stray, "stray argument") < 0)
		return -1;
	return 0;
}

static int t_missing_device(void)
{
	char sock_arg[400];

	snprintf(sock_arg, sizeof(sock_arg), "--socket-path=%s/missing.sock", dir);
	const char *args[] = { daemon_path, sock_arg, "--v4l2-device=/nonexistent/video99", NULL };

	return expect_start_failure(args, "missing device");
}

/* ---- cases on a running daemon ------------------------------------------------------- */

static int t_handshake_mem_table(void)
{
	struct vuf *v = open_default();

	if (!v)
		return -1;
	return finish(v, caps_ok(v, "after SET_MEM_TABLE"));
}

static int t_handshake_add_mem_reg(void)
{
	struct vuf_opts o;
	struct vuf *v;

	vuf_opts_default(&o);
	o.use_add_mem_reg = true;
	o.separate_memfds = true;
	if (!(v = open_front(&o)))
		return -1;
	return finish(v, caps_ok(v, "after ADD_MEM_REG"));
}

static int t_handshake_variants(void)
{
	struct vuf_opts o;
	struct vuf *v;

	/* No EVENT_IDX, indirect tables, a small ring, no REPLY_ACK. */
	vuf_opts_default(&o);
	o.event_idx = false;
	o.use_indirect = true;
	o.queue_size = 16;
	o.n_events = 4;
	o.no_reply_ack = true;
	if (!(v = open_front(&o)))
		return -1;
	CHECK(!vuf_has_feature(v, VIRTIO_RING_F_EVENT_IDX), "EVENT_IDX negotiated anyway");
	/* More commands than ring entries: descriptors must be recycled. */
	for (int i = 0; i < 40; i++)
		if (caps_ok(v, "indirect, no EVENT_IDX") < 0)
			return finish(v, -1);
	return finish(v, 0);
}

static int t_config_space(void)
{
	struct vuf *v = open_default();
	struct virtio_video_config c;
	size_t nlen;

	if (!v)
		return -1;
	c = v->config;
	if (v->config_len != sizeof(c))
		return finish(v, failf("GET_CONFIG returned %u bytes, expected %zu", v->config_len,
				       sizeof(c)));
	nlen = strnlen((const char *)c.device_name, sizeof(c.device_name));
	if (le32toh(c.version) != 0)
		return finish(v, failf("version %u, expected 0", le32toh(c.version)));
	if (!le32toh(c.max_caps_length) || !le32toh(c.max_resp_length))
		return finish(v, failf("max_caps_length %u, max_resp_length %u",
				       le32toh(c.max_caps_length), le32toh(c.max_resp_length)));
	if (!nlen || nlen == sizeof(c.device_name))
		return finish(v, failf("device_name empty or not NUL-terminated"));
	/* Pure v3 frontends ask for 12 bytes. */
	uint8_t small[12];
	int r = vuf_get_config(v, 0, small, sizeof(small));

	if (r != (int)sizeof(small))
		return finish(v, failf("GET_CONFIG of 12 bytes: %s", r < 0 ? vuf_error(v) : "short"));
	if (memcmp(small, &c, sizeof(small)))
		return finish(v, failf("GET_CONFIG of 12 bytes differs from the first 12 of 44"));
	return finish(v, 0);
}

static int t_feature_bits(void)
{
	static const unsigned feat[] = { VIRTIO_F_VERSION_1, VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES,
					 VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
					 VHOST_USER_F_PROTOCOL_FEATURES };
	static const unsigned proto[] = {
		VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_PROTOCOL_F_REPLY_ACK,
		VHOST_USER_PROTOCOL_F_MQ, VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
		VHOST_USER_PROTOCOL_F_RESET_DEVICE,
	};
	struct vuf *v = open_default();

	if (!v)
		return -1;
	for (size_t i = 0; i < sizeof(feat) / sizeof(feat[0]); i++)
		if (!(v->dev_features >> feat[i] & 1))
			return finish(v, failf("feature %s not offered (0x%llx)",
					       vuf_feature_name(feat[i]),
					       (unsigned long long)v->dev_features));
	for (size_t i = 0; i < sizeof(proto) / sizeof(proto[0]); i++)
		if (!(v->dev_protocol_features >> proto[i] & 1))
			return finish(v, failf("protocol feature %s not offered (0x%llx)",
					       vuf_protocol_feature_name(proto[i]),
					       (unsigned long long)v->dev_protocol_features));
	return finish(v, 0);
}

static int t_queue_num(void)
{
	struct vuf *v = open_default();

	if (!v)
		return -1;
	if (v->queue_num != 2)
		return finish(v, failf("GET_QUEUE_NUM = %llu", (unsigned long long)v->queue_num));
	return finish(v, 0);
}

static int t_capabilities(void)
{
	struct vuf *v = open_default();
	struct vuf_caps c[2];
	uint32_t qt[2] = { VIRTIO_VIDEO_QUEUE_TYPE_INPUT, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT };
	bool fwht = false;
	int ret = 0;

	if (!v)
		return -1;
	for (int i = 0; i < 2; i++) {
		int r = vuf_query_capability(v, qt[i], &c[i]);

		if (r != VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY) {
			ret = failf("QUERY_CAPABILITY %s: %s", vuf_queue_type_name(qt[i]),
				    r < 0 ? vuf_error(v) : vuf_cmd_name((uint32_t)r));
			if (i)
				vuf_caps_free(&c[0]);
			return finish(v, ret);
		}
	}
	for (int i = 0; i < 2 && !ret; i++) {
		if (!c[i].num_descs)
			ret = failf("no %s formats", vuf_queue_type_name(qt[i]));
		for (unsigned d = 0; d < c[i].num_descs && !ret; d++) {
			uint64_t m = c[i].descs[d].mask, all = c[!i].num_descs >= 64 ? ~0ull :
								  (1ull << c[!i].num_descs) - 1;

			if (!m || (m & ~all))
				ret = failf("%s format %u: mask 0x%llx, %u formats on the other side",
					    vuf_queue_type_name(qt[i]), d, (unsigned long long)m,
					    c[!i].num_descs);
			if (!c[i].descs[d].num_frames)
				ret = failf("%s format %s without frame sizes", vuf_queue_type_name(qt[i]),
					    vuf_format_name(c[i].descs[d].format));
			if (i == 0 && c[i].descs[d].format == VIRTIO_VIDEO_FORMAT_FWHT)
				fwht = true;
		}
	}
	if (!ret && !fwht)
		ret = failf("vicodec decoder without FWHT input");
	vuf_caps_free(&c[0]);
	vuf_caps_free(&c[1]);
	return finish(v, ret);
}

/* One well-sized request per command. */
struct req {
	uint32_t type;
	uint8_t b[160];
	size_t len;
};

static size_t build_requests(struct req *rq, uint32_t stream, uint64_t mem_gpa)
{
	static const struct { uint32_t type; size_t len; } shapes[] = {
		{ VIRTIO_VIDEO_CMD_QUERY_CAPABILITY, 16 }, { VIRTIO_VIDEO_CMD_STREAM_CREATE, 88 },
		{ VIRTIO_VIDEO_CMD_STREAM_DESTROY, 8 }, { VIRTIO_VIDEO_CMD_STREAM_DRAIN, 8 },
		{ VIRTIO_VIDEO_CMD_RESOURCE_CREATE, 88 + 16 }, { VIRTIO_VIDEO_CMD_RESOURCE_QUEUE, 64 },
		{ VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL, 16 }, { VIRTIO_VIDEO_CMD_QUEUE_CLEAR, 16 },
		{ VIRTIO_VIDEO_CMD_GET_PARAMS, 16 }, { VIRTIO_VIDEO_CMD_SET_PARAMS, 120 },
		{ VIRTIO_VIDEO_CMD_QUERY_CONTROL, 24 }, { VIRTIO_VIDEO_CMD_GET_CONTROL, 16 },
		{ VIRTIO_VIDEO_CMD_SET_CONTROL, 24 }, { VIRTIO_VIDEO_CMD_SET_CONTROL, 16 },
		{ VIRTIO_VIDEO_CMD_GET_PARAMS_EXT, 16 }, { VIRTIO_VIDEO_CMD_SET_PARAMS_EXT, 128 },
	};
	size_t n = sizeof(shapes) / sizeof(shapes[0]);

	for (size_t i = 0; i < n; i++) {
		uint32_t w[40] = { htole32(shapes[i].type), htole32(stream) };

		rq[i].type = shapes[i].type;
		rq[i].len = shapes[i].len;
		switch (shapes[i].type) {
		case VIRTIO_VIDEO_CMD_STREAM_CREATE:
			w[4] = htole32(VIRTIO_VIDEO_FORMAT_FWHT);
			memcpy(&w[6], "e2e", 4);
			break;
		case VIRTIO_VIDEO_CMD_RESOURCE_CREATE: {
			uint64_t a = htole64(mem_gpa);

			w[2] = htole32(VIRTIO_VIDEO_QUEUE_TYPE_INPUT);
			w[3] = htole32(1);
			w[4] = htole32(VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER);
			w[5] = htole32(1);
			w[14] = htole32(1);		/* num_entries[0] */
			memcpy(&w[22], &a, 8);		/* the entry, inline */
			w[24] = htole32(VUF_PAGE);
			break;
		}
		case VIRTIO_VIDEO_CMD_RESOURCE_QUEUE:
			w[2] = htole32(VIRTIO_VIDEO_QUEUE_TYPE_INPUT);
			w[3] = htole32(0x4242);
			w[6] = htole32(1);
			w[7] = htole32(16);
			break;
		case VIRTIO_VIDEO_CMD_SET_PARAMS:
		case VIRTIO_VIDEO_CMD_SET_PARAMS_EXT:
			w[2] = htole32(VIRTIO_VIDEO_QUEUE_TYPE_INPUT);
			w[3] = htole32(VIRTIO_VIDEO_FORMAT_FWHT);
			break;
		case VIRTIO_VIDEO_CMD_QUERY_CONTROL:
			w[2] = htole32(VIRTIO_VIDEO_CONTROL_PROFILE);
			w[4] = htole32(VIRTIO_VIDEO_FORMAT_H264);
			break;
		case VIRTIO_VIDEO_CMD_GET_CONTROL:
		case VIRTIO_VIDEO_CMD_SET_CONTROL:
			w[2] = htole32(VIRTIO_VIDEO_CONTROL_BITRATE);
			w[4] = htole32(1000000);
			break;
		default:
			w[2] = htole32(VIRTIO_VIDEO_QUEUE_TYPE_INPUT);
			break;
		}
		memcpy(rq[i].b, w, rq[i].len);
	}
	return n;
}

/* Submit every command at once, then collect: each gets exactly one answer
 * with a valid type; nothing else shows up in the used ring. */
static int sweep(struct vuf *v, uint32_t stream, const char *what)
{
	struct req rq[20];
	uint64_t tok[20];
	uint64_t mem = vuf_alloc(v, VUF_PAGE, VUF_PAGE, 1);
	size_t n = build_requests(rq, stream, mem);
	size_t resp_len = le32toh(v->config.max_resp_length);
	uint8_t *resp;

	if (resp_len < 128)
		resp_len = 128;
	if (resp_len > 65536)
		resp_len = 65536;
	resp = malloc(resp_len);
	CHECK(resp && mem, "out of memory");
	for (size_t i = 0; i < n; i++)
		if (vuf_submit(v, rq[i].b, rq[i].len, NULL, 0,
			       rq[i].type == VIRTIO_VIDEO_CMD_QUERY_CAPABILITY ?
			       le32toh(v->config.max_caps_length) : resp_len, &tok[i]) < 0) {
			free(resp);
			return failf("%s: submit %s: %s", what, vuf_cmd_name(rq[i].type), vuf_error(v));
		}
	for (size_t i = 0; i < n; i++) {
		int used = vuf_wait(v, tok[i], resp, resp_len, ANSWER_MS);
		uint32_t type;

		if (used < 0) {
			free(resp);
			return failf("%s: %s (%zu bytes): %s", what, vuf_cmd_name(rq[i].type),
				     rq[i].len, vuf_error(v));
		}
		type = used >= 8 ? le32toh(*(uint32_t *)resp) : 0;
		if (used < 8 || !vuf_resp_type_valid(type)) {
			free(resp);
			return failf("%s: %s (%zu bytes) answered %d bytes, type 0x%x", what,
				     vuf_cmd_name(rq[i].type), rq[i].len, used, type);
		}
	}
	free(resp);
	t_sleep_ms(100);
	vuf_reap(v, VIRTIO_VIDEO_QUEUE_COMMAND);
	CHECK(!v->ring_errors, "%s: %s", what, vuf_error(v));
	CHECK(vuf_in_flight(v) == 0, "%s: %u chains still in flight", what, vuf_in_flight(v));
	return 0;
}

static int t_every_command_answered(void)
{
	struct vuf *v = open_default();
	int r;

	if (!v)
		return -1;
	/* A stream that does not exist, then the same on a real one (created
	 * by the sweep's own STREAM_CREATE, destroyed in the middle). */
	r = sweep(v, BOGUS_STREAM, "unknown stream");
	if (!r)
		r = sweep(v, 1, "stream 1");
	if (!r)
		r = sweep(v, 1, "stream 1 again");
	vuf_stream_destroy(v, 1);
	return finish(v, r);
}

static int t_stream_lifecycle(void)
{
	struct vuf *v = open_default();
	struct vuf_params p;
	struct vuf_sglist sg;
	uint32_t val, vals[64];
	unsigned num;
	int r, ret = 0;

	if (!v)
		return -1;
	r = vuf_stream_create(v, 1, VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES,
			      VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES, VIRTIO_VIDEO_FORMAT_FWHT, "e2e");
	if (r < 0 || !vuf_resp_type_valid((uint32_t)r))
		return finish(v, failf("STREAM_CREATE: %s", r < 0 ? vuf_error(v) : "bad type"));
	if (r == VIRTIO_VIDEO_RESP_OK_NODATA) {
		int again = vuf_stream_create(v, 1, 0, 0, VIRTIO_VIDEO_FORMAT_FWHT, "dup");

		if (again != VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID)
			ret = failf("second STREAM_CREATE of stream 1 answered %s (0x%x)",
				    again < 0 ? vuf_error(v) : vuf_cmd_name((uint32_t)again), again);
	}
	/* What the guest driver's open() sends, then a resource and a drain. */
	struct { const char *name; int r; } res[9];
	int k = 0;

	res[k].name = "GET_PARAMS_EXT input";
	res[k++].r = vuf_get_params(v, 1, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, true, &p);
	res[k].name = "GET_PARAMS_EXT output";
	res[k++].r = vuf_get_params(v, 1, VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT, true, &p);
	res[k].name = "GET_PARAMS input";
	res[k++].r = vuf_get_params(v, 1, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, false, &p);
	res[k].name = "GET_CONTROL PROFILE";
	res[k++].r = vuf_get_control(v, 1, VIRTIO_VIDEO_CONTROL_PROFILE, &val);
	res[k].name = "GET_CONTROL LEVEL";
	res[k++].r = vuf_get_control(v, 1, VIRTIO_VIDEO_CONTROL_LEVEL, &val);
	res[k].name = "GET_CONTROL BITRATE";
	res[k++].r = vuf_get_control(v, 1, VIRTIO_VIDEO_CONTROL_BITRATE, &val);
	res[k].name = "QUERY_CONTROL PROFILE";
	res[k++].r = vuf_query_control(v, 1, VIRTIO_VIDEO_CONTROL_PROFILE, VIRTIO_VIDEO_FORMAT_FWHT,
				       vals, 64, &num);
	if (vuf_alloc_scattered(v, 3 * VUF_PAGE + 100, &sg) == 0) {
		res[k].name = "RESOURCE_CREATE scattered";
		res[k++].r = vuf_resource_create(v, 1, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, 1,
						 VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER, 1, NULL,
						 &sg, 1);
		vuf_sglist_free(&sg);
	}
	res[k].name = "STREAM_DRAIN (idle stream)";
	res[k++].r = vuf_stream_drain(v, 1, ANSWER_MS);
	for (int i = 0; i < k && !ret; i++)
		if (res[i].r < 0 || !vuf_resp_type_valid((uint32_t)res[i].r))
			ret = failf("%s: %s", res[i].name,
				    res[i].r < 0 ? vuf_error(v) : vuf_cmd_name((uint32_t)res[i].r));
	r = vuf_stream_destroy(v, 1);
	if (!ret && (r < 0 || !vuf_resp_type_valid((uint32_t)r)))
		ret = failf("STREAM_DESTROY: %s", r < 0 ? vuf_error(v) : "bad type");
	return finish(v, ret);
}

static int expect_error_answer(struct vuf *v, const void *req, size_t len, const char *what)
{
	uint8_t resp[256];
	int used = vuf_cmd(v, req, len, NULL, 0, resp, sizeof(resp), ANSWER_MS);
	uint32_t type;

	CHECK(used >= 0, "%s: %s", what, vuf_error(v));
	CHECK(used >= 8, "%s: answered %d bytes", what, used);
	type = le32toh(*(uint32_t *)resp);
	CHECK(vuf_resp_type_is_error(type), "%s: answered %s (0x%x), expected an error", what,
	      vuf_cmd_name(type), type);
	return 0;
}

static int t_unknown_and_short(void)
{
	struct vuf *v = open_default();
	uint32_t unknown[4] = { htole32(0x1FF), 0, 0, 0 };
	uint32_t resp_type[4] = { htole32(VIRTIO_VIDEO_RESP_OK_NODATA), 0, 0, 0 };
	uint32_t qc[2] = { htole32(VIRTIO_VIDEO_CMD_QUERY_CAPABILITY), 0 };
	uint32_t sc[5] = { htole32(VIRTIO_VIDEO_CMD_STREAM_CREATE), htole32(1), 0, 0,
			   htole32(VIRTIO_VIDEO_FORMAT_FWHT) };
	uint32_t rq[8] = { htole32(VIRTIO_VIDEO_CMD_RESOURCE_QUEUE), htole32(1) };
	uint8_t tiny[4] = { 0x00, 0x01, 0, 0 }, resp[64];
	int r, used;

	if (!v)
		return -1;
	if ((r = expect_error_answer(v, unknown, sizeof(unknown), "type 0x1FF")) < 0 ||
	    (r = expect_error_answer(v, resp_type, sizeof(resp_type), "a response type as command")) < 0 ||
	    (r = expect_error_answer(v, qc, sizeof(qc), "QUERY_CAPABILITY of 8 bytes")) < 0 ||
	    (r = expect_error_answer(v, sc, sizeof(sc), "STREAM_CREATE of 20 bytes")) < 0 ||
	    (r = expect_error_answer(v, rq, sizeof(rq), "RESOURCE_QUEUE of 32 bytes")) < 0)
		return finish(v, r);
	/* Shorter than a header: any completion will do, but one it must get. */
	used = vuf_cmd(v, tiny, sizeof(tiny), NULL, 0, resp, sizeof(resp), ANSWER_MS);
	if (used < 0)
		return finish(v, failf("4-byte request: %s", vuf_error(v)));
	if (used > 0 && (used < 8 || !vuf_resp_type_is_error(le32toh(*(uint32_t *)resp))))
		return finish(v, failf("4-byte request answered %d bytes, type 0x%x", used,
				       used >= 8 ? le32toh(*(uint32_t *)resp) : 0));
	return finish(v, caps_ok(v, "after the bad requests"));
}

static int t_small_response(void)
{
	struct vuf *v = open_default();
	struct virtio_video_query_capability qc = {
		{ htole32(VIRTIO_VIDEO_CMD_QUERY_CAPABILITY), 0 },
		htole32(VIRTIO_VIDEO_QUEUE_TYPE_INPUT), { 0 } };
	uint8_t resp[16];
	int used;

	if (!v)
		return -1;
	used = vuf_cmd(v, &qc, sizeof(qc), NULL, 0, resp, 4, ANSWER_MS);
	if (used != 0)
		return finish(v, failf("4-byte response space: used length %d, expected 0 (%s)",
				       used, used < 0 ? vuf_error(v) : "wrote into it"));
	used = vuf_cmd(v, &qc, sizeof(qc), NULL, 0, resp, 8, ANSWER_MS);
	if (used < 0 || (used != 0 && !(used == 8 && vuf_resp_type_is_error(le32toh(*(uint32_t *)resp)))))
		return finish(v, failf("8-byte response space for capabilities: used %d: %s", used,
				       used < 0 ? vuf_error(v) : "not 0 or an error header"));
	/* No writable descriptor at all. */
	used = vuf_cmd(v, &qc, sizeof(qc), NULL, 0, NULL, 0, ANSWER_MS);
	if (used != 0)
		return finish(v, failf("chain without response space: used %d (%s)", used,
				       used < 0 ? vuf_error(v) : "non-zero"));
	return finish(v, caps_ok(v, "after the short responses"));
}

/* A protocol violation must drop the connection; the next one must work. */
static int violation(const void *bytes, size_t len, const char *what)
{
	struct vuf *v = open_default();

	if (!v)
		return failf("%s: %s", what, why);
	if (vuf_send_raw(v, bytes, len, NULL, 0) < 0)
		return finish(v, failf("%s: send: %s", what, vuf_error(v)));
	if (vuf_wait_hangup(v, HANGUP_MS) < 0)
		return finish(v, failf("%s: %s", what, vuf_error(v)));
	if (vuf_reconnect(v) < 0)
		return finish(v, failf("%s: reconnect: %s", what, vuf_error(v)));
	return finish(v, caps_ok(v, what));
}

static int t_bad_message_size(void)
{
	struct { struct vhost_user_hdr h; uint32_t half; } __attribute__((packed)) short_feat = {
		{ VHOST_USER_SET_FEATURES, VHOST_USER_VERSION, 4 }, 0 };
	struct vhost_user_hdr huge = { VHOST_USER_GET_FEATURES, VHOST_USER_VERSION, 0x7fffffff };
	struct { struct vhost_user_hdr h; uint8_t pad[12]; } __attribute__((packed)) long_num = {
		{ VHOST_USER_SET_VRING_NUM, VHOST_USER_VERSION, 12 }, { 0 } };

	if (violation(&short_feat, sizeof(short_feat), "SET_FEATURES with 4-byte payload") < 0 ||
	    violation(&huge, sizeof(huge), "GET_FEATURES claiming 2 GiB") < 0 ||
	    violation(&long_num, sizeof(long_num), "SET_VRING_NUM with 12-byte payload") < 0)
		return -1;
	return 0;
}

static int t_bad_version(void)
{
	struct vhost_user_hdr h = { VHOST_USER_GET_FEATURES, 0x2, 0 };

	return violation(&h, sizeof(h), "header version 2");
}

/* An unknown request: answered with an error or dropped, never a crash. */
static int t_unknown_request(void)
{
	struct vuf *v = open_default();

	if (!v)
		return -1;
	if (vuf_send_msg(v, 99, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, NULL, 0, NULL, 0) < 0)
		return finish(v, failf("send: %s", vuf_error(v)));
	t_sleep_ms(200);
	if (vuf_reconnect(v) < 0)
		return finish(v, failf("reconnect after request 99: %s", vuf_error(v)));
	return finish(v, caps_ok(v, "after request 99"));
}

static int t_abrupt_disconnect(void)
{
	struct vuf *v = open_default();
	uint8_t qc[16] = { 0 };
	uint64_t t;
	int r, first;

	if (!v)
		return -1;
	first = vuf_stream_create(v, 1, 0, 0, VIRTIO_VIDEO_FORMAT_FWHT, "abrupt");
	qc[0] = 0x00;
	qc[1] = 0x01;
	qc[8] = 0x00;
	qc[9] = 0x01;
	/* Leave a command in flight and vanish. */
	if (vuf_submit(v, qc, sizeof(qc), NULL, 0, 4096, &t) < 0)
		return finish(v, failf("submit: %s", vuf_error(v)));
	vuf_disconnect_abrupt(v);
	if (vuf_reconnect(v) < 0)
		return finish(v, failf("reconnect: %s", vuf_error(v)));
	if (caps_ok(v, "after reconnect") < 0)
		return finish(v, -1);
	/* The old connection's stream must be gone with it. */
	r = vuf_stream_create(v, 1, 0, 0, VIRTIO_VIDEO_FORMAT_FWHT, "abrupt");
	if (first == VIRTIO_VIDEO_RESP_OK_NODATA && r != VIRTIO_VIDEO_RESP_OK_NODATA)
		return finish(v, failf("STREAM_CREATE 1 after reconnect answered %s: stream survived "
				       "the disconnect?", r < 0 ? vuf_error(v) : vuf_cmd_name((uint32_t)r)));
	vuf_stream_destroy(v, 1);
	/* And a second abrupt drop right in the handshake. */
	vuf_disconnect_abrupt(v);
	if (vuf_connect(v, suite.dmn.sock) < 0 ||
	    vuf_send_msg(v, VHOST_USER_GET_FEATURES, VHOST_USER_VERSION, NULL, 0, NULL, 0) < 0)
		return finish(v, failf("connect: %s", vuf_error(v)));
	vuf_disconnect_abrupt(v);
	if (vuf_reconnect(v) < 0)
		return finish(v, failf("reconnect after a drop mid-handshake: %s", vuf_error(v)));
	return finish(v, caps_ok(v, "after a drop mid-handshake"));
}

static int t_clean_stop(void)
{
	struct vuf *v = open_default();
	int r;

	if (!v)
		return -1;
	for (int i = 0; i < 3; i++)
		if (caps_ok(v, "before stop") < 0)
			return finish(v, -1);
	if ((r = vuf_stop(v)) < 0)
		return finish(v, failf("stop: %s", vuf_error(v)));
	if (v->q[0].last_base != v->q[0].avail_idx)
		return finish(v, failf("GET_VRING_BASE commandq = %u, %u chains were posted",
				       v->q[0].last_base, v->q[0].avail_idx));
	/* Start again on the same connection, as after a guest reboot. */
	if (vuf_restart(v) < 0)
		return finish(v, failf("restart after stop: %s", vuf_error(v)));
	if (caps_ok(v, "after stop and restart") < 0)
		return finish(v, -1);
	if (vuf_stop(v) < 0)
		return finish(v, failf("second stop: %s", vuf_error(v)));
	if (v->q[0].last_base != v->q[0].avail_idx)
		return finish(v, failf("GET_VRING_BASE after restart = %u, %u chains were posted",
				       v->q[0].last_base, v->q[0].avail_idx));
	return finish(v, 0);
}

static int sigterm_exits(void)
{
	int st;

	CHECK(suite.dmn.pid > 0, "daemon not running");
	if (tdaemon_stop(&suite.dmn, SIGTERM, EXIT_WAIT_MS, &st) < 0)
		return failf("still running %d ms after SIGTERM", EXIT_WAIT_MS);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "after SIGTERM: %s",
	      (t_describe_status(st, why, sizeof(why)), why));
	return 0;
}

static int t_sigterm_connected(void)
{
	struct vuf *v = open_default();
	int r;

	if (!v)
		return -1;
	r = sigterm_exits();
	vuf_close(v);
	return r;
}

static int t_sigterm_idle(void)
{
	/* Serve one frontend first, so the daemon is past its start-up. */
	struct vuf *v = open_default();

	if (!v)
		return -1;
	if (finish(v, caps_ok(v, "before SIGTERM")) < 0)
		return -1;
	t_sleep_ms(100);
	return sigterm_exits();
}

/* --fd=N with an inherited listening socket (systemd socket activation, an
 * init script that owns the socket): two frontends in a row, then SIGTERM. */
static int t_inherited_listen_fd(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct tdaemon t = { .pid = -1 };
	char dev_arg[300];
	int lfd, st, r = 0;

	if ((size_t)snprintf(a.sun_path, sizeof(a.sun_path), "%s/inherited.sock", dir) >=
	    sizeof(a.sun_path))
		return failf("socket path too long under %s", dir);
	unlink(a.sun_path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(lfd >= 0, "socket: %s", strerror(errno));
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1)) {
		close(lfd);
		return failf("bind/listen %s: %s", a.sun_path, strerror(errno));
	}
	snprintf(dev_arg, sizeof(dev_arg), "--v4l2-device=%s", device);
	snprintf(t.sock, sizeof(t.sock), "%s", a.sun_path);
	t.pid = fork();
	if (t.pid == 0) {
		int log = open(suite.dmn.log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		if (log >= 0) {
			dup2(log, 1);
			dup2(log, 2);
		}
		/* fd 3 without CLOEXEC: dup2 gives that, except onto itself */
		if (lfd == 3)
			fcntl(3, F_SETFD, 0);
		else
			dup2(lfd, 3);
		execl(daemon_path, daemon_path, "--fd=3", dev_arg, (char *)NULL);
		_exit(127);
	}
	close(lfd);
	CHECK(t.pid > 0, "fork: %s", strerror(errno));
	for (int round = 0; round < 2 && !r; round++) {
		char err[512];
		struct vuf *v = vuf_open(a.sun_path, NULL, err, sizeof(err));

		r = v ? finish(v, caps_ok(v, round ? "second frontend" : "first frontend"))
		      : failf("frontend %d on the inherited socket: %s", round + 1, err);
	}
	if (tdaemon_stop(&t, SIGTERM, EXIT_WAIT_MS, &st) < 0)
		return r ? r : failf("still running %d ms after SIGTERM", EXIT_WAIT_MS);
	if (!r && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		r = failf("after SIGTERM: %s", (t_describe_status(st, why, sizeof(why)), why));
	unlink(a.sun_path);
	return r;
}

/* ---- runner ------------------------------------------------------------------------------ */

struct tcase {
	const char *name;
	int (*fn)(void);
	bool daemon;			/* needs the daemon running on VICODEC_DEC */
};

static const struct tcase cases[] = {
	{ "print_capabilities", t_print_capabilities, false },
	{ "bad_flags", t_bad_flags, false },
	{ "missing_device", t_missing_device, false },
	{ "handshake_mem_table", t_handshake_mem_table, true },
	{ "handshake_add_mem_reg", t_handshake_add_mem_reg, true },
	{ "handshake_indirect_no_event_idx", t_handshake_variants, true },
	{ "config_space", t_config_space, true },
	{ "feature_bits", t_feature_bits, true },
	{ "queue_num", t_queue_num, true },
	{ "capabilities", t_capabilities, true },
	{ "every_command_answered", t_every_command_answered, true },
	{ "stream_lifecycle", t_stream_lifecycle, true },
	{ "unknown_and_short_requests", t_unknown_and_short, true },
	{ "small_response_descriptor", t_small_response, true },
	{ "bad_message_size_reconnect", t_bad_message_size, true },
	{ "bad_header_version", t_bad_version, true },
	{ "unknown_vhost_user_request", t_unknown_request, true },
	{ "abrupt_disconnect_reconnect", t_abrupt_disconnect, true },
	{ "clean_stop_restart", t_clean_stop, true },
	{ "sigterm_connected", t_sigterm_connected, true },
	{ "sigterm_idle", t_sigterm_idle, true },
	{ "inherited_listening_fd", t_inherited_listen_fd, false },
};

static void on_watchdog(int sig)
{
	static const char msg[] = "FAIL watchdog: the whole run took too long\n";

	(void)sig;
	if (suite.dmn.pid > 0)
		kill(suite.dmn.pid, SIGKILL);
	if (write(1, msg, sizeof(msg) - 1) < 0)
		_exit(2);
	_exit(2);
}

int main(int argc, char **argv)
{
	const char *tmp = getenv("TMPDIR");

	(void)argc;
	(void)argv;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_watchdog);
	alarm(WATCHDOG_S);
	daemon_path = getenv("VUV_DAEMON");
	if (!daemon_path || !*daemon_path)
		daemon_path = "./vhost-user-video";
	device = getenv("VICODEC_DEC");
	snprintf(dir, sizeof(dir), "%s/vuv-e2e-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		printf("FAIL setup: mkdtemp %s: %s\n0 passed, 1 failed\n", dir, strerror(errno));
		return 1;
	}
	if (access(daemon_path, X_OK) < 0) {
		printf("FAIL setup: daemon %s: %s\n0 passed, 1 failed\n", daemon_path, strerror(errno));
		return 1;
	}
	suite.daemon = daemon_path;
	suite.device = device;
	suite.dir = dir;
	suite.name = "x";
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tcase *c = &cases[i];

		if (c->daemon && (!device || !*device))
			tsuite_skip(&suite, c->name, "VICODEC_DEC not set");
		else if (c->daemon)
			tsuite_case(&suite, c->name, c->fn);
		else
			tsuite_case_nodaemon(&suite, c->name, c->fn);
	}
	tsuite_stop(&suite, 5000);
	unlink(suite.dmn.sock);
	if (suite.nfail) {
		printf("daemon log kept in %s/x.log\n", dir);
	} else {
		char log[300];

		snprintf(log, sizeof(log), "%s/x.log", dir);
		unlink(log);
		rmdir(dir);
	}
	return tsuite_end(&suite);
}
