/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tproc.h"

int64_t t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void t_sleep_ms(int ms)
{
	nanosleep(&(struct timespec){ ms / 1000, (long)(ms % 1000) * 1000000 }, NULL);
}

void t_describe_status(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exit status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "status 0x%x", st);
}

int t_wait_exit(pid_t pid, int *st, int timeout_ms)
{
	int64_t deadline = t_now_ms() + timeout_ms;

	for (;;) {
		pid_t r = waitpid(pid, st, WNOHANG);

		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (t_now_ms() >= deadline)
			return -ETIMEDOUT;
		t_sleep_ms(5);
	}
}

int tdaemon_start(struct tdaemon *t, const char *daemon, const char *device, const char *dir,
		  const char *name, const char *extra, char *err, size_t errlen)
{
	char sock_arg[400], dev_arg[300];
	int st;

	snprintf(t->sock, sizeof(t->sock), "%s/%s.sock", dir, name);
	snprintf(t->log, sizeof(t->log), "%s/%s.log", dir, name);
	snprintf(sock_arg, sizeof(sock_arg), "--socket-path=%s", t->sock);
	snprintf(dev_arg, sizeof(dev_arg), "--v4l2-device=%s", device);
	fflush(NULL);
	t->pid = fork();
	if (t->pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		return -1;
	}
	if (t->pid == 0) {
		int fd = open(t->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		/* VUV_DAEMON_WRAPPER="valgrind -q ...": words put before the daemon */
		char wrap[512], *argv[40];
		int n = 0;
		const char *w = getenv("VUV_DAEMON_WRAPPER");

		snprintf(wrap, sizeof(wrap), "%s", w ? w : "");
		for (char *tok = strtok(wrap, " "); tok && n < 32; tok = strtok(NULL, " "))
			argv[n++] = tok;
		/* VUV_MEMORY=auto|userptr|dmabuf|mmap: the daemon's --memory */
		const char *mem = getenv("VUV_MEMORY");
		char mem_arg[64];

		argv[n++] = (char *)daemon;
		argv[n++] = sock_arg;
		argv[n++] = dev_arg;
		if (mem && *mem) {
			snprintf(mem_arg, sizeof(mem_arg), "--memory=%s", mem);
			argv[n++] = mem_arg;
		}
		if (extra)
			argv[n++] = (char *)extra;
		argv[n] = NULL;
		execvp(argv[0], argv);
		_exit(127);
	}
	if (t_wait_exit(t->pid, &st, 100) == 0) {
		char s[100];

		t_describe_status(st, s, sizeof(s));
		snprintf(err, errlen, "daemon exited at start-up (%s)", s);
		t->pid = -1;
		return -1;
	}
	return 0;
}

bool tdaemon_alive(struct tdaemon *t, char *how, size_t len)
{
	int st;

	if (t->pid < 0) {
		snprintf(how, len, "not running");
		return false;
	}
	if (waitpid(t->pid, &st, WNOHANG) == t->pid) {
		t_describe_status(st, how, len);
		t->pid = -1;
		return false;
	}
	return true;
}

int tdaemon_stop(struct tdaemon *t, int sig, int timeout_ms, int *st)
{
	int r, dummy;

	if (t->pid < 0)
		return 0;
	kill(t->pid, sig);
	r = t_wait_exit(t->pid, st ? st : &dummy, timeout_ms);
	if (r) {
		kill(t->pid, SIGKILL);
		t_wait_exit(t->pid, &dummy, 5000);
	}
	t->pid = -1;
	return r;
}

void tdaemon_log_tail(const struct tdaemon *t, FILE *f)
{
	char buf[3072];
	FILE *l = fopen(t->log, "r");
	size_t n;
	long size;

	if (!l)
		return;
	fseek(l, 0, SEEK_END);
	size = ftell(l);
	fseek(l, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	n = fread(buf, 1, sizeof(buf) - 1, l);
	fclose(l);
	buf[n] = 0;
	fprintf(f, "  daemon log (%s):\n", t->log);
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
		fprintf(f, "  | %s\n", line);
}

char why[1024];

int failf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return -1;
}

int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st))
		return failf("command failed: %s", cmd);
	return 0;
}

/* v4l2-ctl as a reference is not deterministic on a loaded machine, and
 * says so only sometimes: its m2m streaming loop gives up after a fixed 2 s
 * select() timeout ("select timeout", exit 0, a short output), and its
 * decoder sends STOP as soon as the file is read, which vicodec drops while
 * CAPTURE is not streaming yet or applies to whichever buffer is last at
 * that moment (seen: 3 of 6 1080p frames). So a run counts only when the
 * output has the size the caller knows it must have; otherwise run again. */
int v4l2ctl(const char *log, const char *out, size_t want, const char *fmt, ...)
{
	char args[1800];
	va_list ap;
	struct stat st;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	for (int attempt = 1; attempt <= 5; attempt++) {
		size_t n;
		uint8_t *text;
		bool timed_out;

		if (sh("timeout 600 v4l2-ctl %s >%s 2>&1", args, log))
			return -1;
		text = slurp(log, &n);
		timed_out = text && memmem(text, n, "select timeout", 14);
		free(text);
		if (!timed_out && (!want || (stat(out, &st) == 0 && (size_t)st.st_size == want)))
			return 0;
		printf("  note: v4l2-ctl %s (%lld of %zu bytes); running it again (%d of 5)\n",
		       timed_out ? "hit its fixed 2 s select timeout" : "came out short",
		       stat(out, &st) ? -1ll : (long long)st.st_size, want, attempt);
	}
	return failf("v4l2-ctl gave no complete output in 5 runs: %s", args);
}

int t_compare_repeated(const char *got, const char *want, unsigned times)
{
	size_t gl = 0, wl = 0;
	uint8_t *g = slurp(got, &gl), *w = slurp(want, &wl);
	int r = 0;

	if (!g || !w)
		r = failf("cannot read %s or %s", got, want);
	else if (gl != wl * times)
		r = failf("%s has %zu bytes, the reference %s %zu (x%u)", got, gl, want, wl, times);
	for (size_t i = 0; !r && i < gl; i++)
		if (g[i] != w[i % wl])
			r = failf("%s differs from the reference %s (x%u) at byte %zu", got, want, times, i);
	free(g);
	free(w);
	return r;
}

uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b = NULL;
	long n;

	*len = 0;
	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		goto out;
	b = malloc((size_t)n + 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	*len = (size_t)n;
out:
	if (f)
		fclose(f);
	return b;
}

/* ---- the runner --------------------------------------------------------------- */

/* VUV_CASE="a|b": the cases whose name contains a or b */
bool t_case_selected(const char *name)
{
	const char *f = getenv("VUV_CASE");

	if (!f || !*f)
		return true;
	for (;;) {
		const char *bar = strchr(f, '|');
		size_t n = bar ? (size_t)(bar - f) : strlen(f);
		char one[256];

		if (n && n < sizeof(one)) {
			memcpy(one, f, n);
			one[n] = '\0';
			if (strstr(name, one))
				return true;
		}
		if (!bar)
			return false;
		f = bar + 1;
	}
}

int tsuite_start(struct tsuite *s)
{
	char err[256];

	if (tdaemon_start(&s->dmn, s->daemon, s->device, s->dir, s->name, s->args, err,
			  sizeof(err)) == 0)
		return 0;
	return failf("starting the daemon (%s): %s", s->device, err);
}

void tsuite_result(struct tsuite *s, const char *name, int r, int64_t t0_ms)
{
	if (r) {
		s->nfail++;
		printf("FAIL %s: %s\n", name, why[0] ? why : "(no reason given)");
		if (s->dmn.log[0])
			tdaemon_log_tail(&s->dmn, stdout);
		if (s->extra_log) {
			printf("  (log of %s)\n", s->extra_log->sock);
			tdaemon_log_tail(s->extra_log, stdout);
		}
	} else {
		s->npass++;
		printf("PASS %s (%.1f s)\n", name, (double)(t_now_ms() - t0_ms) / 1000);
	}
	fflush(stdout);
}

void tsuite_skip(struct tsuite *s, const char *name, const char *reason)
{
	if (!t_case_selected(name))
		return;
	s->nskip++;
	printf("SKIP %s: %s\n", name, reason);
	fflush(stdout);
}

static void run_one(struct tsuite *s, const char *name, int (*fn)(void), bool daemon)
{
	char how[128];
	int64_t t0 = t_now_ms();
	int r = 0;

	if (!t_case_selected(name))
		return;
	why[0] = 0;
	s->extra_log = NULL;
	if (daemon && s->dmn.pid < 0) {
		if (s->dmn.log[0])
			printf("  starting the daemon again\n");
		r = tsuite_start(s);
	}
	if (!r)
		r = fn();
	if (!r && daemon && s->dmn.pid > 0 && !tdaemon_alive(&s->dmn, how, sizeof(how)))
		r = failf("the daemon died (%s)", how);
	tsuite_result(s, name, r, t0);
	if (daemon && s->dmn.pid > 0 && !tdaemon_alive(&s->dmn, how, sizeof(how)))
		printf("  the daemon died (%s)\n", how);
}

void tsuite_case(struct tsuite *s, const char *name, int (*fn)(void))
{
	run_one(s, name, fn, true);
}

void tsuite_case_nodaemon(struct tsuite *s, const char *name, int (*fn)(void))
{
	run_one(s, name, fn, false);
}

void tsuite_stop(struct tsuite *s, int timeout_ms)
{
	char name[200], st_s[100];
	int64_t t0 = t_now_ms();
	int st = 0, r;

	snprintf(name, sizeof(name), "daemon (%s) exits 0 on SIGTERM after the run", s->device);
	if (s->dmn.pid < 0)
		return;
	r = tdaemon_stop(&s->dmn, SIGTERM, timeout_ms, &st);
	t_describe_status(st, st_s, sizeof(st_s));
	tsuite_result(s, name, r ? failf("no exit within %d ms", timeout_ms)
			  : !WIFEXITED(st) || WEXITSTATUS(st) ? failf("%s", st_s) : 0, t0);
	s->dmn.log[0] = '\0';	/* the next start is a first start */
}

int tsuite_end(const struct tsuite *s)
{
	if (s->nskip)
		printf("(%u skipped)\n", s->nskip);
	printf("%u passed, %u failed\n", s->npass, s->nfail);
	return s->nfail ? 1 : 0;
}
