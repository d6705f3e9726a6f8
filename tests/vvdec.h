/* SPDX-License-Identifier: MIT */
/*
 * vvdec: a guest decoder on top of vufront. It plays what the Linux
 * virtio-video driver and a v4l2-ctl decode do: create a stream, send the
 * first bitstream buffer, wait for DECODER_RESOLUTION_CHANGED, read the
 * output params, create output resources, decode, drain (empty EOS buffer),
 * destroy. Several decoders can run at once on one struct vuf: vvdec_run_all
 * multiplexes them in one thread.
 *
 * Output: each decoded buffer is written as the device laid it out (the
 * plane sizes of GET_PARAMS_EXT, one after the other), which is what
 * v4l2-ctl --stream-to writes for the same buffer.
 */
#ifndef VVDEC_H
#define VVDEC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vufront.h"
#include "vvjob.h"

#define VVDEC_MAX_RES 64

/* A bitstream split into frames (FWHT: header magic + big-endian size). */
struct vvdec_clip {
	uint8_t *data;
	size_t len;
	unsigned nframes;
	size_t *off, *size;
};

int vvdec_clip_load(struct vvdec_clip *c, const char *path, char *err, size_t errlen);
void vvdec_clip_free(struct vvdec_clip *c);

/* Write n deterministic YU12 frames of w x h (gradients, a moving box,
 * texture; seed varies them) to path: test content of our own. */
int vvdec_gen_raw(const char *path, unsigned w, unsigned h, unsigned n, unsigned seed);

struct vvdec_opts {
	uint32_t stream_id;
	uint32_t coded_format;		/* default FWHT */
	unsigned n_in;			/* input resources (default 4) */
	unsigned n_out_extra;		/* output resources beyond min_buffers (default 2) */
	bool scatter;			/* page-sized entries over both regions (NON_CONTIG) */
	bool per_plane;			/* PER_PLANE output resources */
	bool mixed;			/* the resources in region 1 (every other one) start
					 * 512 bytes into a page: a USERPTR view takes them,
					 * a dmabuf cannot (copied on a DMABUF queue) */
	size_t garbage;			/* bytes of junk after each frame in its buffer */
	int seek_after;			/* > 0: after this many output frames, QUEUE_CLEAR
					 * the input and continue at frame seek_to */
	unsigned seek_to;
	uint32_t out_format;		/* 0: the device's; else SET_PARAMS_EXT OUTPUT */
	bool early_drain;		/* STREAM_DRAIN right after the last RESOURCE_QUEUE, as
					 * ffmpeg sends STOP at end of file (default: once every
					 * input is answered) */
	bool eager;			/* queue every input without waiting for the first
					 * DECODER_RESOLUTION_CHANGED (before any output resource) */
	unsigned resume;		/* after the drain, decode the clip this many times more,
					 * each pass ended by its own drain (a new input restarts
					 * the stream: dev-decoder.rst, Drain) */
	bool tolerate_errors;		/* codec errors are counted, not failures: FLAG_ERR on an
					 * input, FLAG_ERR on an output outside a clear (not
					 * written, queued again, as v4l2-ctl does), an ERROR event
					 * (the stream is destroyed and the run ends) */
	int timeout_ms;			/* no progress for this long = failure (default 60000) */
	int verbose;
};

struct vvdec_result {
	unsigned frames_in;		/* input buffers completed OK */
	unsigned frames_out;		/* output frames written */
	unsigned res_changes;		/* DECODER_RESOLUTION_CHANGED events */
	unsigned cleared;		/* buffers returned with FLAG_ERR by a clear */
	unsigned drains;		/* drains completed (answer + EOS) */
	unsigned ring_full;		/* submissions deferred: the commandq was full */
	unsigned in_errors, out_errors;	/* tolerate_errors: buffers back with FLAG_ERR */
	unsigned error_events;		/* tolerate_errors: ERROR events */
	bool eos;			/* the empty EOS buffer arrived */
	bool drained;			/* STREAM_DRAIN answered OK */
	unsigned ts_errors;		/* output timestamps not matching an input */
	uint32_t width, height;		/* last output params (coded) */
	uint32_t crop_w, crop_h;
	double seconds;
	char err[256];			/* set on failure */
};

struct vvdec;

/* One decoder writing frames to out (may be NULL); frame_ts[i] of every
 * written frame goes to ts_out if non-NULL (frames_out entries). */
struct vvdec *vvdec_new(struct vuf *v, const struct vvdec_clip *clip, FILE *out,
			const struct vvdec_opts *o);
void vvdec_free(struct vvdec *d);
const struct vvdec_result *vvdec_result(const struct vvdec *d);
/* Index into the clip of the input frame that output frame k came from
 * (by timestamp), or -1. Valid after the run, k < frames_out. */
int vvdec_frame_source(const struct vvdec *d, unsigned k);
/* The same counted over every pass (resume): input number, or -1. */
int vvdec_frame_input(const struct vvdec *d, unsigned k);

/* Run all decoders (at most 16) to completion; 0 if every one finished
 * (drained + EOS + destroyed), else -1 with each failure in its result's err.
 * vvdec_job_ops runs a decoder as a vvjob, e.g. beside encoders. */
int vvdec_run_all(struct vvdec **d, unsigned n);
extern const struct vvjob_ops vvdec_job_ops;

/* Timestamp the driver puts on input frame i (ns, a multiple of 1000 like a
 * V4L2 timeval converted to ns). */
static inline uint64_t vvdec_ts(unsigned i)
{
	return 1000000000ull + (uint64_t)i * 33333000ull;
}

#endif /* VVDEC_H */
