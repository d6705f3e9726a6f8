/* SPDX-License-Identifier: MIT */
/*
 * e2e_svc: the daemon as a service manager sees it. This program plays
 * systemd's side (NOTIFY_SOCKET readiness, LISTEN_FDS socket activation) and
 * an init script's (signals, socket permissions, inherited connected fds).
 *
 * Environment: VUV_DAEMON (default ./vhost-user-video), VICODEC_DEC (the
 * decoder node; required: the daemon opens its device before it listens),
 * TMPDIR. Prints "PASS name" / "FAIL name: reason" and "N passed, M failed".
 * Every wait is bounded by a generous limit; nothing relies on timing.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tproc.h"
#include "vufront.h"

#define WATCHDOG_S 600
#define WAIT_MS 10000		/* start-up, signal -> exit: generous, never a measurement */

static const char *daemon_path, *device;
static char dir[256], logpath[300];
static pid_t child = -1;

/* Start the daemon with args (NULL-terminated, daemon path first). fd3 >= 0
 * becomes fd 3; env is "NAME=VALUE" strings; listen_pid sets LISTEN_PID to
 * the child's own pid, as systemd does. stdout+stderr go to logpath. */
static pid_t spawn(const char *const *args, int fd3, const char *const *env, bool listen_pid)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	int log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);

	if (log >= 0) {
		dup2(log, 1);
		dup2(log, 2);
	}
	if (fd3 == 3)
		fcntl(3, F_SETFD, 0);
	else if (fd3 >= 0)
		dup2(fd3, 3);
	for (; env && *env; env++)
		putenv((char *)*env);
	if (listen_pid) {
		char p[32];

		snprintf(p, sizeof(p), "%d", (int)getpid());
		setenv("LISTEN_PID", p, 1);
	}
	execv(args[0], (char *const *)args);
	_exit(127);
}

static int stop_child(int sig, int *st)
{
	if (child < 0)
		return failf("no daemon");
	kill(child, sig);
	if (t_wait_exit(child, st, WAIT_MS) < 0) {
		kill(child, SIGKILL);
		t_wait_exit(child, st, 5000);
		child = -1;
		return failf("still running %d ms after signal %d", WAIT_MS, sig);
	}
	child = -1;
	return 0;
}

static int exited_0(int st, const char *when)
{
	char how[100];

	t_describe_status(st, how, sizeof(how));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: %s", when, how);
	return 0;
}

/* A frontend connects, completes the handshake, asks for the capabilities. */
static int frontend_ok(const char *sock, const char *when)
{
	char err[512];
	struct vuf_caps c;
	struct vuf *v = vuf_open(sock, NULL, err, sizeof(err));
	int r;

	CHECK(v, "%s: frontend on %s: %s", when, sock, err);
	r = vuf_query_capability(v, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, &c);
	if (r != VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY) {
		failf("%s: QUERY_CAPABILITY: %d %s", when, r, vuf_error(v));
		vuf_close(v);
		return -1;
	}
	vuf_caps_free(&c);
	vuf_close(v);
	return 0;
}

/* A datagram socket playing systemd's notify socket: a path, or (name
 * starting with '@') an abstract one. The NOTIFY_SOCKET= string in env. */
static int notify_socket(const char *name, char *env, size_t envlen)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return failf("socket: %s", strerror(errno));
	if (name[0] == '@') {
		snprintf(a.sun_path, sizeof(a.sun_path), "@%s-%d", name + 1, (int)getpid());
		snprintf(env, envlen, "NOTIFY_SOCKET=%s", a.sun_path);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(a.sun_path));
		a.sun_path[0] = 0;
	} else {
		if ((size_t)snprintf(a.sun_path, sizeof(a.sun_path), "%s/%s", dir, name) >=
		    sizeof(a.sun_path)) {
			close(fd);
			return failf("socket path too long under %s", dir);
		}
		unlink(a.sun_path);
		snprintf(env, envlen, "NOTIFY_SOCKET=%s", a.sun_path);
		len = sizeof(a);
	}
	if (bind(fd, (struct sockaddr *)&a, len) < 0) {
		close(fd);
		return failf("bind notify socket %s: %s", env, strerror(errno));
	}
	return fd;
}

/* The next notification, NUL-terminated, waiting at most WAIT_MS. */
static int notify_recv(int fd, char *buf, size_t len)
{
	struct pollfd p = { fd, POLLIN, 0 };
	ssize_t n;

	if (poll(&p, 1, WAIT_MS) != 1)
		return failf("no notification within %d ms", WAIT_MS);
	n = recv(fd, buf, len - 1, 0);
	if (n < 0)
		return failf("recv: %s", strerror(errno));
	buf[n] = 0;
	return 0;
}

/* A listening unix socket at DIR/name. */
static int listener(const char *name, char *path, size_t pathlen)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd;

	snprintf(path, pathlen, "%s/%s", dir, name);
	if ((size_t)snprintf(a.sun_path, sizeof(a.sun_path), "%s", path) >= sizeof(a.sun_path))
		return failf("socket path too long: %s", path);
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 1)) {
		if (fd >= 0)
			close(fd);
		return failf("listen on %s: %s", path, strerror(errno));
	}
	return fd;
}

/* ---- cases --------------------------------------------------------------------------- */

/* Type=notify: READY=1 and STATUS= arrive once the socket accepts, STOPPING=1 at SIGTERM. */
static int notify_case(const char *name)
{
	char env[200], msg[512], sock[300], sarg[320], darg[300];
	int nfd, st;

	if ((nfd = notify_socket(name, env, sizeof(env))) < 0)
		return -1;
	snprintf(sock, sizeof(sock), "%s/notify.sock", dir);
	snprintf(sarg, sizeof(sarg), "--socket-path=%s", sock);
	snprintf(darg, sizeof(darg), "--v4l2-device=%s", device);
	const char *args[] = { daemon_path, sarg, darg, NULL };
	const char *envs[] = { env, NULL };

	child = spawn(args, -1, envs, false);
	if (notify_recv(nfd, msg, sizeof(msg)) < 0)
		goto fail;
	if (!strstr(msg, "READY=1") || !strstr(msg, "STATUS=serving a decoder")) {
		failf("first notification is not READY=1 + STATUS: '%s'", msg);
		goto fail;
	}
	/* Ready means ready: the socket accepts now, no retry needed. */
	if (frontend_ok(sock, "right after READY=1") < 0)
		goto fail;
	kill(child, SIGTERM);
	if (notify_recv(nfd, msg, sizeof(msg)) < 0 || !strstr(msg, "STOPPING=1")) {
		if (!why[0])
			failf("no STOPPING=1 after SIGTERM: '%s'", msg);
		goto fail;
	}
	close(nfd);
	if (stop_child(SIGTERM, &st) < 0)
		return -1;
	return exited_0(st, "after SIGTERM");
fail:
	close(nfd);
	stop_child(SIGKILL, &st);
	return -1;
}

static int t_notify_path(void) { return notify_case("notify"); }
static int t_notify_abstract(void) { return notify_case("@vuv-notify"); }

/* systemd socket activation: LISTEN_FDS=1, LISTEN_PID=the daemon, fd 3 a
 * listening socket, no --fd or --socket-path. Two frontends, then SIGTERM. */
static int t_socket_activation(void)
{
	char path[300], darg[300], env[200], msg[512];
	int lfd, nfd, st, r = 0;

	if ((lfd = listener("activated.sock", path, sizeof(path))) < 0)
		return -1;
	if ((nfd = notify_socket("notify-act", env, sizeof(env))) < 0) {
		close(lfd);
		return -1;
	}
	snprintf(darg, sizeof(darg), "--v4l2-device=%s", device);
	const char *args[] = { daemon_path, darg, NULL };
	const char *envs[] = { "LISTEN_FDS=1", "LISTEN_FDNAMES=vhost-user-video.socket", env, NULL };

	child = spawn(args, lfd, envs, true);
	close(lfd);
	r = notify_recv(nfd, msg, sizeof(msg));
	if (!r && !strstr(msg, "READY=1"))
		r = failf("not READY=1: '%s'", msg);
	if (!r && !strstr(msg, "an inherited socket"))
		r = failf("STATUS does not name the inherited socket: '%s'", msg);
	close(nfd);
	for (int i = 0; i < 2 && !r; i++)
		r = frontend_ok(path, i ? "second frontend" : "first frontend");
	if (stop_child(SIGTERM, &st) < 0)
		return -1;
	return r ? r : exited_0(st, "after SIGTERM");
}

/* LISTEN_PID of another process: not for us, so no socket and exit 2. */
static int t_activation_other_pid(void)
{
	char path[300], darg[300];
	int lfd, st;

	if ((lfd = listener("other.sock", path, sizeof(path))) < 0)
		return -1;
	snprintf(darg, sizeof(darg), "--v4l2-device=%s", device);
	const char *args[] = { daemon_path, darg, NULL };
	const char *envs[] = { "LISTEN_FDS=1", "LISTEN_PID=1", NULL };

	child = spawn(args, lfd, envs, false);
	close(lfd);
	if (t_wait_exit(child, &st, WAIT_MS) < 0)
		return stop_child(SIGKILL, &st), failf("still running with LISTEN_PID=1");
	child = -1;
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "LISTEN_PID=1: exit status %d, expected 2",
	      WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}

/* The socket is owner-only whatever the umask; --socket-group widens it to a
 * group (mode 0660, that gid); an unknown group is refused, no socket left. */
static int socket_mode_case(const char *group, gid_t gid)
{
	char sock[300], sarg[320], darg[300], garg[100], env[200], msg[512];
	struct stat sb;
	int nfd, st, r = 0;

	snprintf(sock, sizeof(sock), "%s/mode.sock", dir);
	snprintf(sarg, sizeof(sarg), "--socket-path=%s", sock);
	snprintf(darg, sizeof(darg), "--v4l2-device=%s", device);
	snprintf(garg, sizeof(garg), "--socket-group=%s", group ? group : "");
	const char *args[] = { daemon_path, sarg, darg, group ? garg : NULL, NULL };

	if ((nfd = notify_socket("notify-mode", env, sizeof(env))) < 0)
		return -1;
	const char *envs[] = { env, NULL };
	mode_t old = umask(0);	/* the most permissive caller */

	child = spawn(args, -1, envs, false);
	umask(old);
	r = notify_recv(nfd, msg, sizeof(msg));
	close(nfd);
	if (!r && stat(sock, &sb) < 0)
		r = failf("stat %s after READY=1: %s", sock, strerror(errno));
	if (!r && !S_ISSOCK(sb.st_mode))
		r = failf("%s is not a socket", sock);
	if (!r && !group && (sb.st_mode & 0777) != 0600)
		r = failf("mode %03o with umask 000, expected 600", sb.st_mode & 0777);
	if (!r && group && ((sb.st_mode & 0777) != 0660 || sb.st_gid != gid))
		r = failf("--socket-group=%s: mode %03o gid %u, expected 660 gid %u", group,
			  sb.st_mode & 0777, (unsigned)sb.st_gid, (unsigned)gid);
	if (stop_child(SIGTERM, &st) < 0)
		return -1;
	return r ? r : exited_0(st, "after SIGTERM");
}

static int t_socket_owner_only(void) { return socket_mode_case(NULL, 0); }

static int t_socket_group(void)
{
	/* a named group other than ours if there is one, else a number */
	struct group *g = getgrnam("video");
	char num[32];

	if (g && g->gr_gid != getgid())
		return socket_mode_case("video", g->gr_gid);
	snprintf(num, sizeof(num), "%u", (unsigned)getgid() + 1);
	return socket_mode_case(num, getgid() + 1);
}

/* Run the daemon to its end (it must exit by itself); *st and its log. */
static int run_to_exit(const char *const *args, int *st, char *out, size_t outlen)
{
	size_t n = 0;
	uint8_t *log;

	unlink(logpath);
	child = spawn(args, -1, NULL, false);
	if (t_wait_exit(child, st, WAIT_MS) < 0) {
		int dummy;

		stop_child(SIGKILL, &dummy);
		return failf("still running after %d ms", WAIT_MS);
	}
	child = -1;
	log = slurp(logpath, &n);
	snprintf(out, outlen, "%s", log ? (char *)log : "");
	free(log);
	return 0;
}

static int t_unknown_group(void)
{
	char sock[300], sarg[320], darg[300], out[2048];
	int st;

	snprintf(sock, sizeof(sock), "%s/nogroup.sock", dir);
	snprintf(sarg, sizeof(sarg), "--socket-path=%s", sock);
	snprintf(darg, sizeof(darg), "--v4l2-device=%s", device);
	const char *args[] = { daemon_path, sarg, darg, "--socket-group=no-such-group-vuv", NULL };

	if (run_to_exit(args, &st, out, sizeof(out)) < 0)
		return -1;
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d, expected 1",
	      WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	CHECK(strstr(out, "no group 'no-such-group-vuv'"), "no clear error: %s", out);
	CHECK(access(sock, F_OK) < 0, "%s left behind", sock);
	return 0;
}

static int t_missing_directory(void)
{
	char sarg[320], darg[300], out[2048], want[400];
	int st;

	snprintf(sarg, sizeof(sarg), "--socket-path=%s/no-such-dir/x.sock", dir);
	snprintf(darg, sizeof(darg), "--v4l2-device=%s", device);
	snprintf(want, sizeof(want), "directory %s/no-such-dir does not exist", dir);
	const char *args[] = { daemon_path, sarg, darg, NULL };

	if (run_to_exit(args, &st, out, sizeof(out)) < 0)
		return -1;
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d, expected 1",
	      WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	CHECK(strstr(out, want), "no '%s' in: %s", want, out);
	return 0;
}

/* SIGHUP ends the daemon like SIGTERM: exit 0, socket file removed. */
static int t_sighup(void)
{
	char sock[300], sarg[320], darg[300], env[200], msg[512];
	int nfd, st, r;

	snprintf(sock, sizeof(sock), "%s/hup.sock", dir);
	snprintf(sarg, sizeof(sarg), "--socket-path=%s", sock);
	snprintf(darg, sizeof(darg), "--v4l2-device=%s", device);
	const char *args[] = { daemon_path, sarg, darg, NULL };

	if ((nfd = notify_socket("notify-hup", env, sizeof(env))) < 0)
		return -1;
	const char *envs[] = { env, NULL };

	child = spawn(args, -1, envs, false);
	r = notify_recv(nfd, msg, sizeof(msg));
	close(nfd);
	if (!r)
		r = frontend_ok(sock, "before SIGHUP");
	if (stop_child(SIGHUP, &st) < 0)
		return -1;
	if (r)
		return r;
	if (exited_0(st, "after SIGHUP") < 0)
		return -1;
	CHECK(access(sock, F_OK) < 0, "%s still there after SIGHUP", sock);
	return 0;
}

/* --socket-fd=3 with a connected socket: serve it, exit 0 when it hangs up. */
static int t_connected_fd_hangup(void)
{
	char darg[300];
	int sv[2], st;
	struct vuf *v;
	struct vuf_caps c;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
	      strerror(errno));
	snprintf(darg, sizeof(darg), "--v4l2-device=%s", device);
	const char *args[] = { daemon_path, "--socket-fd=3", darg, NULL };

	child = spawn(args, sv[1], NULL, false);
	close(sv[1]);
	v = vuf_new(NULL);
	if (!v) {
		close(sv[0]);
		return stop_child(SIGKILL, &st), failf("vuf_new");
	}
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	v->sock = sv[0];
	if (vuf_handshake(v) < 0 ||
	    vuf_query_capability(v, VIRTIO_VIDEO_QUEUE_TYPE_INPUT, &c) !=
		    VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY) {
		failf("on the connected fd: %s", vuf_error(v));
		vuf_close(v);
		stop_child(SIGKILL, &st);
		return -1;
	}
	vuf_caps_free(&c);
	vuf_close(v);		/* the hang-up */
	if (t_wait_exit(child, &st, WAIT_MS) < 0)
		return stop_child(SIGKILL, &st), failf("still running %d ms after the hang-up", WAIT_MS);
	child = -1;
	return exited_0(st, "after the frontend hung up");
}

/* ---- runner -------------------------------------------------------------------------- */

static const struct {
	const char *name;
	int (*fn)(void);
} cases[] = {
	{ "notify_ready_status_stopping", t_notify_path },
	{ "notify_abstract_socket", t_notify_abstract },
	{ "socket_activation_listen_fds", t_socket_activation },
	{ "socket_activation_other_pid_ignored", t_activation_other_pid },
	{ "socket_owner_only", t_socket_owner_only },
	{ "socket_group", t_socket_group },
	{ "socket_group_unknown", t_unknown_group },
	{ "socket_directory_missing", t_missing_directory },
	{ "sighup_exits_0", t_sighup },
	{ "connected_socket_fd_hangup_exits_0", t_connected_fd_hangup },
};

static void on_watchdog(int sig)
{
	static const char msg[] = "FAIL watchdog: the whole run took too long\n";

	(void)sig;
	if (child > 0)
		kill(child, SIGKILL);
	if (write(1, msg, sizeof(msg) - 1) < 0)
		_exit(2);
	_exit(2);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	int passed = 0, failed = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_watchdog);
	alarm(WATCHDOG_S);
	daemon_path = getenv("VUV_DAEMON");
	if (!daemon_path || !*daemon_path)
		daemon_path = "./vhost-user-video";
	device = getenv("VICODEC_DEC");
	if (!device || !*device) {
		printf("FAIL setup: VICODEC_DEC not set (run in the test VM)\n0 passed, 1 failed\n");
		return 1;
	}
	snprintf(dir, sizeof(dir), "%s/vuv-e2e-svc-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		printf("FAIL setup: mkdtemp %s: %s\n0 passed, 1 failed\n", dir, strerror(errno));
		return 1;
	}
	snprintf(logpath, sizeof(logpath), "%s/daemon.log", dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why[0] = 0;
		if (cases[i].fn() == 0) {
			printf("PASS %s\n", cases[i].name);
			passed++;
		} else {
			printf("FAIL %s: %s\n", cases[i].name, why[0] ? why : "(no reason given)");
			failed++;
		}
	}
	if (failed)
		printf("daemon log kept in %s\n", logpath);
	else if (sh("rm -rf '%s'", dir) < 0)
		printf("note: could not remove %s\n", dir);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
