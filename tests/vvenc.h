/* SPDX-License-Identifier: MIT */
/*
 * vvenc: a guest encoder on top of vufront. It plays what the Linux
 * virtio-video driver and a v4l2-ctl encode do: create a stream for a coded
 * format, set the raw input format and size, read back the plane layout the
 * device applied, create input and output resources, queue every output
 * buffer, feed raw frames, collect the coded frames (appended to one file:
 * the concatenation is the bitstream), drain (empty EOS buffer), destroy.
 * Several encoders can run at once on one struct vuf: vvenc_run_all
 * multiplexes them in one thread.
 *
 * Raw input: a file of YU12 (I420) frames of the visible size W x H, i.e.
 * W*H*3/2 bytes each, as v4l2-ctl --stream-from reads it. Each frame is laid
 * out in the input resource per the device's INPUT params (plane sizes and
 * strides); padding rows and bytes are zero.
 */
#ifndef VVENC_H
#define VVENC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vufront.h"
#include "vvjob.h"

#define VVENC_MAX_RES 64

/* A raw YU12 clip of nframes frames of w x h (visible size). */
struct vvenc_raw {
	uint8_t *data;
	size_t len;
	unsigned w, h, nframes;
	size_t frame_size;		/* w*h*3/2 */
};

/* Load path as frames of w x h (even sizes); the file length must be a
 * multiple of the frame size. */
int vvenc_raw_load(struct vvenc_raw *r, const char *path, unsigned w, unsigned h, char *err,
		   size_t errlen);
void vvenc_raw_free(struct vvenc_raw *r);

struct vvenc_opts {
	uint32_t stream_id;
	uint32_t coded_format;		/* default FWHT */
	unsigned n_in;			/* input resources (default 4, at least min_buffers) */
	unsigned n_out;			/* output resources (default 4, at least min_buffers) */
	unsigned frame_rate;		/* default 30 */
	bool scatter;			/* page-sized entries over both regions (NON_CONTIG) */
	bool per_plane;			/* PER_PLANE input resources: one sg list per plane */
	bool one_data_size;		/* RESOURCE_QUEUE INPUT with num_data_sizes = 1 (the
					 * whole frame), as the Linux driver sends for a
					 * single-memory-plane YU12 buffer; default one size
					 * per plane */
	int clear_after;		/* > 0: after this many output frames, QUEUE_CLEAR the
					 * input queue and continue with the next unsent frame */
	int destroy_after;		/* > 0: after this many output frames, STREAM_DESTROY
					 * and collect every queued buffer; the run ends there */
	bool early_drain;		/* STREAM_DRAIN right after the last RESOURCE_QUEUE
					 * (default: once every input is answered) */
	bool outputs_late;		/* queue the inputs and the drain before creating any
					 * output resource */
	unsigned resume;		/* after the drain, encode the clip this many times more,
					 * each pass ended by its own drain */
	int timeout_ms;			/* no progress for this long = failure (default 60000) */
	int verbose;
};

/* One coded frame, in the order the device returned them. */
struct vvenc_frame {
	uint32_t size;			/* coded bytes */
	uint32_t flags;			/* VIRTIO_VIDEO_BUFFER_FLAG_* */
	uint64_t timestamp;
	int src;			/* input number (from the timestamp, counted over every
					 * pass), -1 if none */
};

struct vvenc_result {
	unsigned frames_sent;		/* input buffers queued */
	unsigned frames_in;		/* input buffers completed OK */
	unsigned frames_out;		/* coded frames written */
	unsigned keyframes;		/* coded frames with FLAG_IFRAME */
	unsigned cleared;		/* input buffers returned with FLAG_ERR by QUEUE_CLEAR */
	unsigned returned;		/* buffers still queued at STREAM_DESTROY, returned */
	unsigned returned_err;		/* of those, returned with FLAG_ERR (or a bare header) */
	unsigned frames_at_destroy;	/* frames_out when destroy_after destroyed the stream */
	unsigned clear_at;		/* next_frame when the clear happened (clear_after) */
	bool eos;			/* the empty EOS buffer arrived */
	unsigned drains;		/* drains completed (answer + EOS) */
	bool drained;			/* STREAM_DRAIN answered OK */
	bool destroyed;			/* the destroy_after path ran */
	unsigned ts_errors;		/* output timestamps not matching an input */
	uint64_t bytes_out;
	struct vuf_params ip, op;	/* INPUT/OUTPUT params as the device applied them */
	double seconds;
	char err[256];			/* set on failure */
};

struct vvenc;

/* One encoder of raw, appending coded frames to out (may be NULL). */
struct vvenc *vvenc_new(struct vuf *v, const struct vvenc_raw *raw, FILE *out,
			const struct vvenc_opts *o);
void vvenc_free(struct vvenc *e);
const struct vvenc_result *vvenc_result(const struct vvenc *e);
/* Output frame k (k < frames_out), or NULL. */
const struct vvenc_frame *vvenc_frame(const struct vvenc *e, unsigned k);

/* Run all encoders to completion; 0 if every one finished (drained + EOS +
 * destroyed, or destroyed early by destroy_after), else -1 with each
 * failure in its result's err. */
int vvenc_run_all(struct vvenc **e, unsigned n);
extern const struct vvjob_ops vvenc_job_ops;

/* Timestamp the driver puts on input frame i (ns, a multiple of 1000 like a
 * V4L2 timeval converted to ns); the same series as vvdec_ts. */
static inline uint64_t vvenc_ts(unsigned i)
{
	return 1000000000ull + (uint64_t)i * 33333000ull;
}

#endif /* VVENC_H */
