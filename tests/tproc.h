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
/* A whole file in memory (malloc, one spare byte), or NULL. */
uint8_t *slurp(const char *path, size_t *len);

#endif
