/* SPDX-License-Identifier: MIT */
/* tharness.h: the unit tests' pass/fail lines. A case is a `bool fn(void)`
 * that returns false through CHECK with a reason; main ends with
 * `return th_summary();` ("N passed, M failed", non-zero exit on failure). */
#ifndef THARNESS_H
#define THARNESS_H
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

static unsigned th_passed, th_failed;
static char th_why[512];

static inline bool th_fail(int line, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(th_why, sizeof(th_why), "line %d: ", line);

	va_start(ap, fmt);
	vsnprintf(th_why + n, sizeof(th_why) - n, fmt, ap);
	va_end(ap);
	return false;
}

#define CHECK(cond, ...) do { if (!(cond)) return th_fail(__LINE__, __VA_ARGS__); } while (0)

static inline void th_run(const char *name, bool (*fn)(void))
{
	th_why[0] = 0;
	if (fn()) {
		printf("PASS %s\n", name);
		th_passed++;
	} else {
		printf("FAIL %s: %s\n", name, th_why);
		th_failed++;
	}
	fflush(stdout);
}

static inline int th_summary(void)
{
	printf("%u passed, %u failed\n", th_passed, th_failed);
	return th_failed ? 1 : 0;
}
#endif /* THARNESS_H */
