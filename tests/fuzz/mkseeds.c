/* SPDX-License-Identifier: MIT */
/*
 * mkseeds: writes the seed corpora (well-formed sessions) of the fuzz
 * targets, in the step format of fuzz_vu_msg.c and fuzz_vring.c:
 *   mkseeds DIR   -> DIR/fuzz_vu_msg/seed-*, DIR/fuzz_vring/seed-*,
 *                    DIR/fuzz_vv_cmd/seed-* (fuzz_vv_cmd.c's steps),
 *                    DIR/fuzz_view/seed-* (fuzz_view.c's steps)
 * `make fuzz-seeds` runs it on tests/fuzz/corpus; the output is committed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include "vu.h"

struct out {
	uint8_t b[16384];
	size_t n;
	bool vring;		/* fuzz_vring step codes */
};

static void put(struct out *o, const void *p, size_t len)
{
	if (o->n + len > sizeof(o->b))
		abort();
	memcpy(o->b + o->n, p, len);
	o->n += len;
}

static void u8(struct out *o, uint8_t v) { put(o, &v, 1); }
static void u16(struct out *o, uint16_t v) { put(o, &v, 2); }
static void u32(struct out *o, uint32_t v) { put(o, &v, 4); }
static void u64(struct out *o, uint64_t v) { put(o, &v, 8); }

/* Guest memory is the memfd; gpa 0 is offset 0 (region 0). */
static void gwrite(struct out *o, uint32_t off, const void *p, uint8_t len)
{
	u8(o, o->vring ? 0 : 6);
	u32(o, off);
	u8(o, len);
	put(o, p, len);
}

static void desc(struct out *o, uint32_t table, unsigned i, uint64_t addr, uint32_t len,
		 uint16_t flags, uint16_t next)
{
	struct vring_desc d = { addr, len, flags, next };

	gwrite(o, table + 16 * i, &d, sizeof(d));
}

/* avail ring of a ring at base: entry slot = head, idx = n. */
static void avail(struct out *o, uint32_t base, uint16_t slot, uint16_t head, uint16_t idx)
{
	gwrite(o, base + 0x1000 + 4 + 2 * slot, &head, 2);
	gwrite(o, base + 0x1000 + 2, &idx, 2);
}

/* Chain h of ring at base: 8 readable bytes, 16 writable, descriptors 2h, 2h+1. */
static void chain(struct out *o, uint32_t base, uint16_t h, uint16_t slot)
{
	uint32_t data = 0x8000 + 0x100 * h;

	gwrite(o, data, "request!", 8);
	desc(o, base, 2 * h, data, 8, VRING_DESC_F_NEXT, 2 * h + 1);
	desc(o, base, 2 * h + 1, data + 0x40, 16, VRING_DESC_F_WRITE, 0);
	avail(o, base, slot, 2 * h, slot + 1);
}

static void op(struct out *o, uint8_t code, int arg)
{
	u8(o, code);
	if (arg >= 0)
		u8(o, (uint8_t)arg);
}

static void respond(struct out *o, uint8_t slot, uint16_t len)
{
	u8(o, 2);
	u8(o, slot);
	u16(o, len);
}

static void msg(struct out *o, uint8_t req, uint8_t sel, const void *pl, uint16_t size,
		const uint8_t *kinds, unsigned nfds)
{
	u8(o, 0);
	u8(o, req);
	u8(o, sel);
	u16(o, size);
	u8(o, nfds);
	put(o, kinds, nfds);
	put(o, pl, size);
}

#define F_ALL ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) | \
	       (1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES))

/* fuzz_vu_msg: handshake and ring 0 at gpa 0 (desc 0, avail 0x1000, used 0x2000,
 * 16 entries), ring 1 at gpa 0x4000. */
static void msg_session(struct out *o)
{
	u8(o, 12);
	u64(o, F_ALL);
	for (unsigned q = 0; q < 2; q++) {
		u8(o, 13);
		u8(o, q);
		u16(o, q * 0x400);
		u16(o, q * 0x400 + 0x100);
		u16(o, q * 0x400 + 0x200);
		u8(o, 4);
	}
}

static void save(const char *dir, const char *name, const struct out *o)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(o->b, 1, o->n, f) != o->n || fclose(f)) {
		fprintf(stderr, "mkseeds: %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

static void seeds_msg(const char *dir)
{
	struct out o;
	uint8_t none[1] = { 0 }, ev[1] = { 1 }, mem2[2] = { 0, 0 };

	/* echo: a chain kicked and answered */
	memset(&o, 0, sizeof(o));
	msg_session(&o);
	chain(&o, 0, 0, 0);
	op(&o, 8, 0);
	save(dir, "seed-echo", &o);

	/* stop with parked chains, an answer while stopped, cont, the rest */
	memset(&o, 0, sizeof(o));
	msg_session(&o);
	for (uint16_t h = 0; h < 3; h++)
		chain(&o, 0, h, h);
	for (int i = 0; i < 3; i++)
		op(&o, 1, 0);
	respond(&o, 0, 8);
	op(&o, 10, -1);
	respond(&o, 1, 8);
	op(&o, 11, -1);
	respond(&o, 2, 8);
	save(dir, "seed-stop-cont", &o);

	/* parked chains answered after a reset and after a reconnect */
	memset(&o, 0, sizeof(o));
	msg_session(&o);
	for (uint16_t h = 0; h < 3; h++)
		chain(&o, 0, h, h);
	for (int i = 0; i < 3; i++)
		op(&o, 1, 0);
	msg(&o, VHOST_USER_RESET_DEVICE, 0x08, NULL, 0, none, 0);
	respond(&o, 0, 8);
	op(&o, 5, -1);
	respond(&o, 1, 8);
	op(&o, 3, 2);
	save(dir, "seed-reset", &o);

	/* a guest reset after stop: rings re-created from 0 */
	memset(&o, 0, sizeof(o));
	msg_session(&o);
	chain(&o, 0, 0, 0);
	op(&o, 1, 0);
	op(&o, 10, -1);
	respond(&o, 0, 8);
	msg_session(&o);
	save(dir, "seed-guest-reset", &o);

	/* the memory file shrinks under a running ring */
	memset(&o, 0, sizeof(o));
	msg_session(&o);
	chain(&o, 0, 0, 0);
	op(&o, 1, 0);
	op(&o, 7, 1);
	op(&o, 8, 0);
	respond(&o, 0, 8);
	op(&o, 7, 0);
	msg_session(&o);
	save(dir, "seed-truncate", &o);

	/* the whole QEMU handshake as explicit messages */
	memset(&o, 0, sizeof(o));
	{
		uint64_t pf = 0x8209, f = F_ALL, v;
		struct vhost_user_mem_table t = { .nregions = 2 };
		struct vhost_user_config_msg c = { 0, 44, 0, { 0 } };
		struct vhost_user_mem_reg_msg reg = { 0, { 0x200000, 0x1000, 0x7f0000200000, 0 } };
		struct vhost_vring_state_msg st;
		struct vhost_vring_addr_msg a = { 0, 0, 0x7f0000000000, 0x7f0000002000,
						  0x7f0000001000, 0 };

		msg(&o, VHOST_USER_GET_FEATURES, 0, NULL, 0, none, 0);
		msg(&o, VHOST_USER_GET_PROTOCOL_FEATURES, 0, NULL, 0, none, 0);
		msg(&o, VHOST_USER_SET_PROTOCOL_FEATURES, 0x08, &pf, 8, none, 0);
		msg(&o, VHOST_USER_GET_QUEUE_NUM, 0, NULL, 0, none, 0);
		msg(&o, VHOST_USER_GET_MAX_MEM_SLOTS, 0, NULL, 0, none, 0);
		msg(&o, VHOST_USER_SET_OWNER, 0, NULL, 0, none, 0);
		for (uint64_t q = 0; q < 2; q++) {
			msg(&o, VHOST_USER_SET_VRING_CALL, 0x08, &q, 8, ev, 1);
			msg(&o, VHOST_USER_SET_VRING_ERR, 0x08, &q, 8, ev, 1);
		}
		msg(&o, VHOST_USER_GET_CONFIG, 0, &c, 12 + 44, none, 0);
		msg(&o, VHOST_USER_SET_FEATURES, 0x08, &f, 8, none, 0);
		t.regions[0] = (struct vhost_user_mem_region){ 0, 0x20000, 0x7f0000000000, 0 };
		t.regions[1] = (struct vhost_user_mem_region){ 0x100000, 0x20000, 0x7f0000100000,
							       0x20000 };
		msg(&o, VHOST_USER_SET_MEM_TABLE, 0x08, &t, 8 + 64, mem2, 2);
		msg(&o, VHOST_USER_ADD_MEM_REG, 0x08, &reg, sizeof(reg), mem2, 1);
		msg(&o, VHOST_USER_REM_MEM_REG, 0x08, &reg, sizeof(reg), mem2, 0);
		st = (struct vhost_vring_state_msg){ 0, 16 };
		msg(&o, VHOST_USER_SET_VRING_NUM, 0x08, &st, 8, none, 0);
		st.num = 0;
		msg(&o, VHOST_USER_SET_VRING_BASE, 0x08, &st, 8, none, 0);
		msg(&o, VHOST_USER_SET_VRING_ADDR, 0x08, &a, sizeof(a), none, 0);
		v = 0;
		msg(&o, VHOST_USER_SET_VRING_KICK, 0x08, &v, 8, ev, 1);
		msg(&o, VHOST_USER_SET_VRING_CALL, 0x08, &v, 8, ev, 1);
		st.num = 1;
		msg(&o, VHOST_USER_SET_VRING_ENABLE, 0x08, &st, 8, none, 0);
		chain(&o, 0, 0, 0);
		op(&o, 8, 0);
		v = 0x0f;
		msg(&o, VHOST_USER_SET_STATUS, 0x08, &v, 8, none, 0);
		msg(&o, VHOST_USER_GET_STATUS, 0, NULL, 0, none, 0);
		msg(&o, VHOST_USER_SET_VRING_ADDR, 0x08, &a, sizeof(a), none, 0);
		st.num = 0;
		msg(&o, VHOST_USER_SET_VRING_ENABLE, 0x08, &st, 8, none, 0);
		msg(&o, VHOST_USER_GET_VRING_BASE, 0, &st, 8, none, 0);
		msg(&o, VHOST_USER_RESET_OWNER, 0, NULL, 0, none, 0);
	}
	save(dir, "seed-qemu-messages", &o);

	/* hang-up mid-message, then a session on the next connection */
	memset(&o, 0, sizeof(o));
	op(&o, 9, 5);
	msg_session(&o);
	chain(&o, 0, 1, 0);
	op(&o, 8, 0);
	save(dir, "seed-hangup", &o);

	/* an indirect chain */
	memset(&o, 0, sizeof(o));
	msg_session(&o);
	desc(&o, 0x6000, 0, 0x8000, 8, VRING_DESC_F_NEXT, 1);
	desc(&o, 0x6000, 1, 0x8100, 16, VRING_DESC_F_WRITE, 0);
	desc(&o, 0, 0, 0x6000, 32, VRING_DESC_F_INDIRECT, 0);
	avail(&o, 0, 0, 0, 1);
	op(&o, 1, 0);
	respond(&o, 0, 12);
	op(&o, 4, 0);
	save(dir, "seed-indirect", &o);
}

static void vring_header(struct out *o, uint8_t features, uint8_t l0, uint8_t l1)
{
	memset(o, 0, sizeof(*o));
	o->vring = true;
	u8(o, features);
	u8(o, l0);
	u8(o, l1);
}

static void seeds_vring(const char *dir)
{
	struct out o;

	/* three chains on ring 0, one on ring 1 (region 1 starts at file offset 128 KiB) */
	vring_header(&o, 3, 4, 3);
	for (uint16_t h = 0; h < 3; h++)
		chain(&o, 0, h, h);
	chain(&o, 0x20000, 0, 0);
	for (int i = 0; i < 3; i++)
		op(&o, 1, 0);
	op(&o, 1, 1);
	respond(&o, 0, 8);
	respond(&o, 1, 16);
	respond(&o, 2, 17);
	op(&o, 4, 0);
	op(&o, 5, 1);
	save(dir, "seed-chains", &o);

	/* indirect table, buffers across the two regions' boundary in gpa is a hole:
	 * a readable buffer at the end of region 0 */
	vring_header(&o, 1, 4, 4);
	desc(&o, 0x6000, 0, 0x1fff8, 8, VRING_DESC_F_NEXT, 1);
	desc(&o, 0x6000, 1, 0x8100, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2);
	desc(&o, 0x6000, 2, 0x100000 + 0x8000, 16, VRING_DESC_F_WRITE, 0);
	desc(&o, 0, 0, 0x6000, 48, VRING_DESC_F_INDIRECT, 0);
	avail(&o, 0, 0, 0, 1);
	op(&o, 1, 0);
	respond(&o, 0, 32);
	save(dir, "seed-indirect", &o);

	/* stop/cont with parked chains, EVENT_IDX */
	vring_header(&o, 2, 3, 3);
	for (uint16_t h = 0; h < 4; h++)
		chain(&o, 0, h, h);
	for (int i = 0; i < 4; i++)
		op(&o, 1, 0);
	respond(&o, 0, 8);
	op(&o, 6, -1);
	respond(&o, 1, 8);
	respond(&o, 2, 8);
	op(&o, 7, -1);
	respond(&o, 3, 8);
	op(&o, 4, 0);
	save(dir, "seed-stop-cont", &o);

	/* a loop and an avail index far ahead */
	vring_header(&o, 0, 2, 2);
	desc(&o, 0, 0, 0x8000, 8, VRING_DESC_F_NEXT, 1);
	desc(&o, 0, 1, 0x8000, 8, VRING_DESC_F_NEXT, 0);
	avail(&o, 0, 0, 0, 1);
	op(&o, 5, 0);
	avail(&o, 0, 1, 0, 9);
	op(&o, 5, 0);
	save(dir, "seed-loop", &o);
}

/* ---- fuzz_vv_cmd: guest sessions of the command layer ---------------------- */

#define FK_HDR 44
enum { VC_CREATE, VC_DESTROY, VC_DRAIN, VC_RES_CREATE, VC_QUEUE, VC_DESTROY_ALL, VC_CLEAR,
       VC_GET_PARAMS, VC_SET_PARAMS, VC_CONTROLS, VC_FRAME, VC_WRITE, VC_EVENTS, VC_EVENTS_FORCED,
       VC_RAW, VC_LIFE };

static void vc_header(struct out *o, uint8_t dev, uint8_t fault, uint8_t n)
{
	o->n = 0;
	u8(o, dev);
	u8(o, fault);
	u8(o, n);
}

static void vc_create(struct out *o, uint8_t sid)
{
	u8(o, VC_CREATE);
	u8(o, sid);
	u8(o, 0);		/* FWHT */
	u8(o, 0);		/* guest pages both ways */
}

/* planes 3 (YU12) or 1 (coded), one entry over the resource's memory */
static void vc_res_create(struct out *o, uint8_t sid, uint8_t q, uint8_t res, uint8_t planes)
{
	u8(o, VC_RES_CREATE);
	u8(o, sid);
	u8(o, q);
	u8(o, res);
	u8(o, 0);
	u8(o, planes);
	u8(o, 0);
}

static void vc_queue(struct out *o, uint8_t sid, uint8_t q, uint8_t res, uint8_t ts,
		     unsigned n, const uint16_t *sizes)
{
	u8(o, VC_QUEUE);
	u8(o, sid);
	u8(o, q);
	u8(o, res);
	u8(o, ts);
	u8(o, (uint8_t)n);
	for (unsigned i = 0; i < n; i++)
		u16(o, sizes[i]);
}

/* a w x h frame (16 x (1 + sz bits)) of payload bytes into input res */
static void vc_frame(struct out *o, uint8_t res, uint8_t sz, uint8_t payload, uint8_t key)
{
	u8(o, VC_FRAME);
	u8(o, res);
	u16(o, 0);
	u8(o, sz);
	u8(o, payload);
	u8(o, key);
}

static void vc_op(struct out *o, uint8_t code, uint8_t sid, uint8_t q)
{
	u8(o, code);
	u8(o, sid);
	u8(o, q);
}

static void vc_events(struct out *o, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		u8(o, VC_EVENTS);
}

/* Decoder: 4 bitstream resources, frames of size sz, the first header,
 * 3 output resources, nframes frames in turn, drain. */
static void vc_decode(struct out *o, uint8_t sid, unsigned nframes, uint8_t sz, uint8_t sz2)
{
	uint16_t fsize[1] = { FK_HDR + 32 };

	vc_create(o, sid);
	for (uint8_t r = 0; r < 4; r++)
		vc_res_create(o, sid, 0, r, 1);
	for (unsigned i = 0; i < nframes; i++) {
		uint8_t res = (uint8_t)(i % 4);

		vc_frame(o, res, i < nframes / 2 ? sz : sz2, 32, i == 0);
		vc_queue(o, sid, 0, res, (uint8_t)i, 1, fsize);
		vc_events(o, 1);
		if (i == 0) {
			vc_op(o, VC_GET_PARAMS, sid, 1);
			for (uint8_t r = 0; r < 3; r++) {
				vc_res_create(o, sid, 1, r, 3);
				vc_queue(o, sid, 1, r, 0, 0, NULL);
			}
			vc_events(o, 2);
		} else {
			vc_queue(o, sid, 1, (uint8_t)(i % 3), 0, 0, NULL);
			vc_events(o, 1);
		}
	}
	u8(o, VC_DRAIN);
	u8(o, sid);
	vc_events(o, 3);
	for (uint8_t r = 0; r < 3; r++)
		vc_queue(o, sid, 1, r, 0, 0, NULL);
	vc_events(o, 2);
	/* decoding again after the drain (START, capture restart) */
	for (uint8_t i = 0; i < 2; i++) {
		vc_frame(o, i, sz2, 32, 1);
		vc_queue(o, sid, 0, i, (uint8_t)(100 + i), 1, fsize);
		vc_events(o, 2);
	}
}

/* Encoder: 16x16 YU12 input by SET_PARAMS, 3 raw and 3 coded resources. */
static void vc_encode(struct out *o, uint8_t sid, unsigned nframes)
{
	uint16_t psizes[3] = { 256, 64, 64 };

	vc_create(o, sid);
	u8(o, VC_SET_PARAMS);
	u8(o, sid);
	u8(o, 0);		/* input */
	u8(o, 0);		/* YU12 */
	u16(o, 16);
	u16(o, 16);
	u8(o, 3);
	u32(o, 256);
	u8(o, 0);
	u8(o, 30);
	for (uint8_t r = 0; r < 3; r++) {
		vc_res_create(o, sid, 0, r, 3);
		vc_res_create(o, sid, 1, r, 1);
		vc_queue(o, sid, 1, r, 0, 0, NULL);
	}
	for (unsigned i = 0; i < nframes; i++) {
		u8(o, VC_WRITE);
		u32(o, (uint32_t)(i % 3) * 0x8000);
		u8(o, 16);
		put(o, "raw frame bytes!", 16);
		vc_queue(o, sid, 0, (uint8_t)(i % 3), (uint8_t)i, 3, psizes);
		vc_events(o, 2);
		if (i >= 2)
			vc_queue(o, sid, 1, (uint8_t)(i % 3), 0, 0, NULL);
	}
	u8(o, VC_DRAIN);
	u8(o, sid);
	vc_events(o, 3);
}

static void seeds_vv(const char *dir)
{
	static const char *const fault[10] = {
		"", "enodev", "error", "eio-qbuf", "bad-index", "big-used", "epipe", "streamon",
		"no-event", "storm",
	};
	static struct out o;
	char name[64];

	for (uint8_t dev = 0; dev < 4; dev += 1) {
		bool enc = dev >= 2;

		for (uint8_t f = 0; f < 10; f++) {
			if (f && dev % 2)
				continue;	/* faults: single-planar only */
			vc_header(&o, dev, f, 1);	/* the fault at N = 2 */
			if (enc)
				vc_encode(&o, 0, 8);
			else
				vc_decode(&o, 0, 8, 0, 0);
			snprintf(name, sizeof(name), "seed-%s%s%s%s", enc ? "enc" : "dec",
				 dev % 2 ? "-mplane" : "", f ? "-" : "", fault[f]);
			save(dir, name, &o);
		}
	}
	/* a resolution change mid-stream; two streams at once */
	vc_header(&o, 0, 0, 0);
	vc_decode(&o, 0, 8, 0, 5);
	save(dir, "seed-dec-res-change", &o);
	vc_header(&o, 0, 0, 0);
	vc_decode(&o, 0, 6, 0, 0);
	vc_decode(&o, 1, 6, 1, 1);
	save(dir, "seed-dec-two-streams", &o);
	/* seek (clear input), destroy-all, a reset and a reconnect mid-stream */
	vc_header(&o, 0, 0, 0);
	vc_decode(&o, 0, 4, 0, 0);
	vc_op(&o, VC_CLEAR, 0, 0);
	vc_op(&o, VC_CLEAR, 0, 1);
	vc_op(&o, VC_DESTROY_ALL, 0, 1);
	vc_decode(&o, 2, 4, 0, 0);
	vc_op(&o, VC_LIFE, 1, 0);	/* RESET_DEVICE */
	vc_decode(&o, 0, 4, 0, 0);
	vc_op(&o, VC_LIFE, 2, 0);	/* disconnect, reconnect */
	vc_decode(&o, 0, 4, 0, 0);
	save(dir, "seed-dec-seek-reset-reconnect", &o);
	/* every control and capability query */
	vc_header(&o, 2, 0, 0);
	vc_create(&o, 0);
	for (uint8_t w = 0; w < 4; w++)
		for (uint8_t c = 0; c < 9; c++) {
			u8(&o, VC_CONTROLS);
			u8(&o, w);
			u8(&o, 0);
			u8(&o, c);
			u32(&o, c * 1000u + w);
		}
	/* raw commands: every type with a bare header, then short and long */
	for (uint16_t t = 0; t < 20; t++) {
		u8(&o, VC_RAW);
		u16(&o, (uint16_t)(t + 1));
		u8(&o, 0);
		u8(&o, 8);
		put(&o, "\0\0\0\0\0\0\0\0", 8);
	}
	u8(&o, VC_RAW);
	u16(&o, 0x8000 | 6);
	u8(&o, 0);
	u8(&o, 4);
	put(&o, "abcd", 4);
	save(dir, "seed-enc-controls", &o);
}

/* ---- fuzz_view (fuzz_view.c's steps) ---- */

/* A region of file f: gpa and size in pages, file offset in pages. */
static void fv_region(struct out *o, uint8_t f, uint16_t gpa_pages, uint8_t pages, uint8_t off)
{
	u8(o, 0x60 | f);
	u16(o, gpa_pages);
	u8(o, pages);
	u8(o, off);
}

/* Two 64 KiB regions back to back: memfd 0 at gpa 0, memfd 1 at 64 KiB. */
static void fv_table(struct out *o)
{
	u8(o, 0);
	u8(o, 1);
	fv_region(o, 0, 0, 16, 0);
	fv_region(o, 1, 16, 16, 0);
}

/* A piece of region r: at byte pos (aligned: page-aligned in its file), len bytes. */
static void fv_piece(struct out *o, uint8_t r, uint16_t pos, uint16_t len)
{
	u8(o, r);
	u16(o, pos);
	u16(o, len);
}

static void fv_piece_pages(struct out *o, uint8_t r, uint16_t pos, uint8_t pages)
{
	u8(o, 0x60 | r);
	u16(o, pos);
	u8(o, pages);
}

static void fv_raw(struct out *o, uint64_t gpa, uint32_t len)
{
	u8(o, 0xff);
	u64(o, gpa);
	u32(o, len);
}

/* Steps 3 (view) and 8 (dmabuf) give their number of pieces less one. */
static void seeds_view(const char *dir)
{
	struct out o;

	/* a view of three pieces over both regions (partial first and last
	 * pages), read, written, invalidated by REM_MEM_REG, made again */
	memset(&o, 0, sizeof(o));
	u8(&o, 3);
	fv_table(&o);
	u8(&o, 3), u8(&o, 0), u8(&o, 2);	/* 3 pieces */
	fv_piece(&o, 0, 0x100, 0xf00);
	fv_piece_pages(&o, 1, 0, 2);
	fv_piece(&o, 0, 0x3000, 0x123);
	u8(&o, 4), u8(&o, 0);
	u8(&o, 5), u8(&o, 0), u32(&o, 0x1234), u8(&o, 0xa5);
	u8(&o, 3), u8(&o, 1), u8(&o, 0);	/* 1 piece */
	fv_piece(&o, 1, 0x10, 0x20);
	u8(&o, 7);
	u8(&o, 2), u8(&o, 1), u8(&o, 0);
	u8(&o, 7);
	u8(&o, 6), u8(&o, 0);
	u8(&o, 3), u8(&o, 0), u8(&o, 0);	/* 1 piece */
	fv_piece(&o, 0, 0x80, 0x80);
	u8(&o, 4), u8(&o, 0);
	save(dir, "seed-views", &o);

	/* many one-page pieces, across the two regions; dmabuf items of them */
	memset(&o, 0, sizeof(o));
	u8(&o, 3);
	fv_table(&o);
	u8(&o, 3), u8(&o, 2), u8(&o, 0x80), u8(&o, 16);
	fv_piece_pages(&o, 0, 0x4000, 1);
	u8(&o, 4), u8(&o, 2);
	u8(&o, 5), u8(&o, 2), u32(&o, 0xc000), u8(&o, 0x11);
	u8(&o, 8), u8(&o, 0x80), u8(&o, 0x80), u8(&o, 16);
	fv_piece_pages(&o, 0, 0x4000, 1);
	u8(&o, 8), u8(&o, 0x80), u8(&o, 2);	/* 3 pieces */
	fv_piece_pages(&o, 0, 0, 2);
	fv_piece_pages(&o, 0, 0x2000, 1);
	fv_piece(&o, 1, 0, 0x1001);
	u8(&o, 0), u8(&o, 0);	/* a new table: the view goes */
	fv_region(&o, 1, 0, 16, 0);
	u8(&o, 7);
	u8(&o, 9);
	u8(&o, 7);
	save(dir, "seed-many", &o);

	/* the same page 4096 and 4097 times: one mapping each, at the limit
	 * and past it */
	memset(&o, 0, sizeof(o));
	u8(&o, 3);
	fv_table(&o);
	u8(&o, 3), u8(&o, 0), u8(&o, 0xc0), u8(&o, 6);
	fv_piece_pages(&o, 0, 0x1000, 1);
	u8(&o, 4), u8(&o, 0);
	u8(&o, 3), u8(&o, 1), u8(&o, 0xc0), u8(&o, 7);
	fv_piece_pages(&o, 1, 0x1000, 1);
	u8(&o, 3), u8(&o, 1), u8(&o, 0xc0), u8(&o, 7);
	fv_piece(&o, 1, 0x1000, 0x800);
	u8(&o, 0), u8(&o, 0);
	fv_region(&o, 1, 0, 16, 0);
	u8(&o, 4), u8(&o, 0);
	save(dir, "seed-maps", &o);

	/* memfd 1 sealed against writes after SET_MEM_TABLE: no dmabuf (its
	 * old region stays), no view of it, no new region of it */
	memset(&o, 0, sizeof(o));
	u8(&o, 3);
	fv_table(&o);
	u8(&o, 8), u8(&o, 0xc1), u8(&o, 0);	/* 1 piece */
	fv_piece_pages(&o, 1, 0, 1);
	u8(&o, 8), u8(&o, 0x80), u8(&o, 0);	/* 1 piece */
	fv_piece_pages(&o, 0, 0, 1);
	u8(&o, 3), u8(&o, 0), u8(&o, 0);	/* 1 piece */
	fv_piece_pages(&o, 1, 0, 1);
	u8(&o, 3), u8(&o, 1), u8(&o, 0);	/* 1 piece */
	fv_piece_pages(&o, 0, 0, 1);
	u8(&o, 1);
	fv_region(&o, 1, 0x100, 1, 0);
	u8(&o, 7);
	save(dir, "seed-sealed", &o);

	/* what is refused: dmabuf of an unsealed memfd, unaligned, outside,
	 * too many items; views outside, misaligned, zero length */
	memset(&o, 0, sizeof(o));
	u8(&o, 1);		/* memfd 1 unsealed */
	fv_table(&o);
	u8(&o, 8), u8(&o, 0x80), u8(&o, 0);	/* 1 piece */
	fv_piece_pages(&o, 1, 0, 1);
	u8(&o, 8), u8(&o, 0x80), u8(&o, 0);	/* 1 piece */
	fv_piece(&o, 0, 0x10, 0x1000);
	u8(&o, 8), u8(&o, 0x80), u8(&o, 0);	/* 1 piece */
	fv_raw(&o, 0x7ffff000, 0x1000);
	u8(&o, 8), u8(&o, 0x80), u8(&o, 0);	/* 1 piece, wraps */
	fv_raw(&o, 0xfffffffffffff000ull, 0x2000);
	u8(&o, 8), u8(&o, 0x40), u8(&o, 0);	/* no pieces */
	fv_piece_pages(&o, 0, 0, 1);
	u8(&o, 8), u8(&o, 1), u8(&o, 1);	/* 2 pieces */
	fv_piece_pages(&o, 0, 0, 1);
	fv_piece_pages(&o, 0, 0x4000, 1);
	u8(&o, 3), u8(&o, 0), u8(&o, 0);	/* 1 piece */
	fv_raw(&o, 0xfffffffffffff000ull, 0x2000);
	u8(&o, 3), u8(&o, 0), u8(&o, 1);	/* 2 pieces */
	fv_piece(&o, 0, 0x100, 0x1000);
	fv_piece(&o, 0, 0x2000, 0x10);
	u8(&o, 3), u8(&o, 0), u8(&o, 0);	/* 1 piece */
	fv_piece(&o, 0, 0x100, 0);
	save(dir, "seed-refused", &o);

	/* hostile tables: overlapping, wrapping, past the file; ADD_MEM_REG
	 * beside the handshake's table, a view across it, then REM_MEM_REG */
	memset(&o, 0, sizeof(o));
	u8(&o, 3);
	u8(&o, 0), u8(&o, 1);
	fv_region(&o, 0, 0, 16, 0);
	fv_region(&o, 1, 8, 16, 0);
	u8(&o, 0), u8(&o, 0);
	u8(&o, 0x80), u64(&o, 0xfffffffffffff000ull), u64(&o, 0x2000), u64(&o, 0), u64(&o, 0);
	u8(&o, 0), u8(&o, 0);
	fv_region(&o, 0, 0, 16, 1);
	u8(&o, 1);
	fv_region(&o, 0, 0x200, 16, 0);
	u8(&o, 3), u8(&o, 4), u8(&o, 0);	/* 1 piece */
	fv_piece(&o, 0, 0, 0x8000);
	u8(&o, 1);
	fv_region(&o, 1, 0x300, 4, 4);
	u8(&o, 3), u8(&o, 5), u8(&o, 1);	/* 2 pieces */
	fv_piece_pages(&o, 3, 0, 4);
	fv_piece_pages(&o, 2, 0, 1);
	u8(&o, 8), u8(&o, 0x80), u8(&o, 1);	/* 2 pieces */
	fv_piece_pages(&o, 3, 0, 4);
	fv_piece_pages(&o, 2, 0, 1);
	u8(&o, 7);
	u8(&o, 2), u8(&o, 2), u8(&o, 0);
	u8(&o, 7);
	save(dir, "seed-tables", &o);
}

int main(int argc, char **argv)
{
	char d[4096];

	if (argc != 2) {
		fprintf(stderr, "usage: mkseeds DIR\n");
		return 2;
	}
	snprintf(d, sizeof(d), "%s/fuzz_vu_msg", argv[1]);
	mkdir(argv[1], 0755);
	mkdir(d, 0755);
	seeds_msg(d);
	snprintf(d, sizeof(d), "%s/fuzz_vring", argv[1]);
	mkdir(d, 0755);
	seeds_vring(d);
	snprintf(d, sizeof(d), "%s/fuzz_vv_cmd", argv[1]);
	mkdir(d, 0755);
	seeds_vv(d);
	snprintf(d, sizeof(d), "%s/fuzz_view", argv[1]);
	mkdir(d, 0755);
	seeds_view(d);
	return 0;
}
