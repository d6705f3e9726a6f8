/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <time.h>

#include "vvjob.h"

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static bool any_active(struct vvjob *jobs, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (jobs[i].ops->active(jobs[i].job))
			return true;
	return false;
}

static void fail_active(struct vvjob *jobs, unsigned n, const char *why)
{
	for (unsigned i = 0; i < n; i++)
		if (jobs[i].ops->active(jobs[i].job))
			jobs[i].ops->fail(jobs[i].job, why);
}

/* 0, or -1 after failing every active job. */
static int pause_now(struct vuf *v, struct vvjob *jobs, unsigned n, struct vvjob_pause *p)
{
	char why[300];

	p->done++;
	if (vuf_stop(v) < 0)
		snprintf(why, sizeof(why), "stop: %s", vuf_error(v));
	else if (p->while_stopped && p->while_stopped(p->arg))
		snprintf(why, sizeof(why), "while stopped: failed");
	else if (vuf_resume(v) < 0)
		snprintf(why, sizeof(why), "resume: %s", vuf_error(v));
	else
		return 0;
	fail_active(jobs, n, why);
	return -1;
}

int vvjob_run(struct vuf *v, struct vvjob *jobs, unsigned n, int timeout_ms)
{
	return vvjob_run_paused(v, jobs, n, timeout_ms, NULL);
}

int vvjob_run_paused(struct vuf *v, struct vvjob *jobs, unsigned n, int timeout_ms,
		     struct vvjob_pause *pause)
{
	double last = now_s();
	unsigned completed = 0;
	char why[300];

	for (unsigned i = 0; i < n; i++)
		jobs[i].ops->start(jobs[i].job);
	while (any_active(jobs, n)) {
		struct virtio_video_event ev;
		bool progress = false;
		uint64_t tok;

		while (vuf_event_wait(v, &ev, 0) >= 0) {
			progress = true;
			for (unsigned i = 0; i < n; i++)
				if (jobs[i].ops->active(jobs[i].job) &&
				    jobs[i].ops->stream_id(jobs[i].job) == ev.stream_id)
					jobs[i].ops->on_event(jobs[i].job, &ev);
		}
		if (vuf_wait_any(v, &tok, 20) == 0) {
			bool mine = false;

			progress = true;
			for (unsigned i = 0; i < n && !mine; i++)
				mine = jobs[i].ops->active(jobs[i].job) &&
				       jobs[i].ops->on_token(jobs[i].job, tok);
			if (!mine)	/* nobody's: collect and drop */
				vuf_wait(v, tok, NULL, 0, 0);
			if (pause && pause->done < pause->max && ++completed % pause->every == 0 &&
			    pause_now(v, jobs, n, pause))
				break;
		}
		if (v->ring_errors) {
			snprintf(why, sizeof(why), "ring errors: %s", vuf_error(v));
			fail_active(jobs, n, why);
		}
		if (progress) {
			last = now_s();
		} else if ((now_s() - last) * 1000 > timeout_ms) {
			snprintf(why, sizeof(why), "no progress for %d ms", timeout_ms);
			fail_active(jobs, n, why);
		}
	}
	for (unsigned i = 0; i < n; i++)
		if (!jobs[i].ops->done(jobs[i].job))
			return -1;
	return 0;
}
