/* SPDX-License-Identifier: MIT */
/* tharness.h: test_vu's cases are `bool fn(void)` that return false through
 * CHECK with a reason (and its line). They run through the one runner of
 * tproc.c: PASS/FAIL lines, the VUV_CASE filter, "N passed, M failed"; main
 * ends with `return th_summary();`. */
#ifndef THARNESS_H
#define THARNESS_H
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "tproc.h"

static struct tsuite th_suite = { .dmn = { .pid = -1 } };

static inline bool th_fail(int line, const char *fmt, ...)
{
	char buf[sizeof(why) - 32];	/* the arguments may be `why` itself */
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	snprintf(why, sizeof(why), "line %d: %s", line, buf);
	return false;
}

#undef CHECK
#define CHECK(cond, ...) do { if (!(cond)) return th_fail(__LINE__, __VA_ARGS__); } while (0)

static inline void th_run(const char *name, bool (*fn)(void))
{
	int64_t t0 = t_now_ms();

	if (!t_case_selected(name))
		return;
	why[0] = 0;
	tsuite_result(&th_suite, name, fn() ? 0 : -1, t0);
}

static inline int th_summary(void)
{
	return tsuite_end(&th_suite);
}
#endif /* THARNESS_H */
