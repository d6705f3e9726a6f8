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

#endif
