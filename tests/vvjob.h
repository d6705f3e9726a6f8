/* SPDX-License-Identifier: MIT */
/*
 * vvjob: run several guest streams (decoders, encoders) at once on one
 * vufront connection, in one thread: route each completed command chain and
 * each event to the stream it belongs to, and fail streams that make no
 * progress for a while. vvdec_run_all and vvenc_run_all are built on it.
 */
#ifndef VVJOB_H
#define VVJOB_H

#include <stdbool.h>
#include <stdint.h>

#include "vufront.h"

struct vvjob_ops {
	void (*start)(void *job);
	bool (*active)(const void *job);	/* not yet done or failed */
	bool (*done)(const void *job);		/* finished successfully */
	uint32_t (*stream_id)(const void *job);
	/* A completed commandq chain: true if it was this job's (collected). */
	bool (*on_token)(void *job, uint64_t token);
	void (*on_event)(void *job, const struct virtio_video_event *ev);
	/* Record a failure; the job adds its own state to why. */
	void (*fail)(void *job, const char *why);
};

struct vvjob {
	void *job;
	const struct vvjob_ops *ops;
};

/* Start every job and run until none is active. timeout_ms without any
 * completion or event fails the active ones. 0 if all are done, else -1. */
int vvjob_run(struct vuf *v, struct vvjob *jobs, unsigned n, int timeout_ms);

/* VM stop/cont in the middle: every `every` completed commands (at most
 * `max` times), vuf_stop, call while_stopped (non-zero fails every job),
 * then vuf_resume. A completion's job usually submits and kicks new work
 * before the stop, so the device has work while stopped. */
struct vvjob_pause {
	unsigned every, max;
	int (*while_stopped)(void *arg);
	void *arg;
	unsigned done;			/* stop/cont cycles made */
};
int vvjob_run_paused(struct vuf *v, struct vvjob *jobs, unsigned n, int timeout_ms,
		     struct vvjob_pause *pause);

#endif
