/* SPDX-License-Identifier: MIT */
/*
 * tproc: the daemon under test as a child process, for the end-to-end tests.
 * Every wait is bounded.
 */
#ifndef TPROC_H
#define TPROC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct tdaemon {
	pid_t pid;			/* -1 when not running */
	char sock[300];
	char log[300];
};

int64_t t_now_ms(void);
void t_sleep_ms(int ms);
/* "exit status N" / "killed by signal N (name)" */
void t_describe_status(int st, char *buf, size_t len);
/* waitpid with a timeout: 0 and *st, or -ETIMEDOUT. */
int t_wait_exit(pid_t pid, int *st, int timeout_ms);

/* Start `daemon --socket-path=DIR/NAME.sock --v4l2-device=device [extra]`,
 * stdout+stderr appended to DIR/NAME.log. Fails if it dies within 100 ms. */
int tdaemon_start(struct tdaemon *t, const char *daemon, const char *device, const char *dir,
		  const char *name, const char *extra, char *err, size_t errlen);
/* Still running? If not, *how says how it ended. */
bool tdaemon_alive(struct tdaemon *t, char *how, size_t len);
/* Send sig and wait up to timeout_ms; 0 with *st, else SIGKILL and -ETIMEDOUT. */
int tdaemon_stop(struct tdaemon *t, int sig, int timeout_ms, int *st);
/* The last bytes of the daemon's log, indented, to f. */
void tdaemon_log_tail(const struct tdaemon *t, FILE *f);

/* ---- the one test runner --------------------------------------------------
 * A program has cases (int fn(void): 0, or -1 through CHECK/failf with why
 * set) and runs them against a daemon it started. Output, one line each:
 * "PASS name (x.y s)", "FAIL name: why" (+ the daemon's log tail), and at
 * the end "N passed, M failed". VUV_CASE=substring runs only the cases
 * whose name contains it; "a|b|c": any of them. */
struct tsuite {
	struct tdaemon dmn;		/* the daemon the cases talk to (pid -1: none) */
	const char *daemon, *device, *dir, *name, *args;	/* how to start it */
	const struct tdaemon *extra_log;	/* another daemon whose log a failure shows;
					 * reset before every case */
	unsigned npass, nfail, nskip;
};

bool t_case_selected(const char *name);
/* Start s->dmn from the fields above; 0, or -1 with why set. */
int tsuite_start(struct tsuite *s);
/* Run one case if selected. Its daemon is started first if it is not
 * running (a case may stop it on purpose: pid -1); if it was running after
 * the case, it must still be alive. */
void tsuite_case(struct tsuite *s, const char *name, int (*fn)(void));
/* The same for a case that needs no daemon (nothing started or checked). */
void tsuite_case_nodaemon(struct tsuite *s, const char *name, int (*fn)(void));
void tsuite_skip(struct tsuite *s, const char *name, const char *reason);
/* Count a result computed elsewhere (r = 0 pass, else why is the reason). */
void tsuite_result(struct tsuite *s, const char *name, int r, int64_t t0_ms);
/* SIGTERM the daemon: it must exit 0 within timeout_ms (counted as a case). */
void tsuite_stop(struct tsuite *s, int timeout_ms);
/* Print the totals; the program's exit status. */
int tsuite_end(const struct tsuite *s);

/* The failure message of the case being run, and the ways to set it. */
extern char why[1024];
int failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define CHECK(cond, ...) do { if (!(cond)) return failf(__VA_ARGS__); } while (0)

/* Run a shell command (printf format); 0, or -1 with why set. */
int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Run `v4l2-ctl ARGS >log 2>&1` until its output file out has want bytes
 * (0: any) and it did not give up on its own 2 s select timeout; at most 5
 * runs. 0, or -1 with why set. */
int v4l2ctl(const char *log, const char *out, size_t want, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* got must be the file want, times times over (a clip decoded again
 * after a drain); 0, or -1 with why set. */
int t_compare_repeated(const char *got, const char *want, unsigned times);
/* A whole file in memory (malloc, one spare byte), or NULL. */
uint8_t *slurp(const char *path, size_t *len);

#endif
