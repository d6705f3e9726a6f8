/* SPDX-License-Identifier: MIT */
/*
 * The "codec" of the fake V4L2 backend (tests/fake_m2m.c), shared with the
 * tests that check its output byte for byte (tests/test_vv.c).
 *
 * Bitstream: FWHT framing (as vicodec writes it): a 44-byte header, all
 * fields big-endian u32: magic 0x4f4f4f4f 0xffffffff, version, width,
 * height, flags (V4L2_FWHT_FL_I_FRAME = bit 10), colorspace, xfer_func,
 * ycbcr_enc, quantization, size; then size payload bytes.
 *  - Decoder: a frame of width x height decodes to a raw buffer of the
 *    capture format (coded size, one memory plane) whose byte i is
 *    fk_pixel(fk_seed(payload) ^ fourcc, i).
 *  - Encoder: a raw frame encodes to a header (width x height = the crop,
 *    I-frame flag every GOP frames and after FORCE_KEY_FRAME) and an 8-byte
 *    payload: be32 FNV-1a of the visible rows of every colour plane in
 *    order, be32 frame number since the stream (re)started.
 */
#ifndef FAKE_CODEC_H
#define FAKE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define FK_HDR 44u
#define FK_ENC_PAYLOAD 8u
#define FK_I_FRAME (1u << 10)
#define FK_ALIGN 16u		/* coded sizes are multiples of this */

static inline uint32_t fk_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void fk_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t fk_fnv(const uint8_t *p, size_t n, uint32_t h)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}
#define FK_FNV_INIT 2166136261u

static inline uint32_t fk_seed(const uint8_t *payload, size_t n)
{
	return fk_fnv(payload, n, FK_FNV_INIT);
}

static inline uint8_t fk_pixel(uint32_t seed, size_t i)
{
	uint32_t x = seed ^ ((uint32_t)i * 2654435761u);

	x ^= x >> 15;
	x *= 0x2c1b3c6du;
	x ^= x >> 12;
	return (uint8_t)x;
}

/* A frame header with the magic and the given fields, the rest 0. */
static inline void fk_header(uint8_t *h, uint32_t w, uint32_t hgt, uint32_t flags, uint32_t size)
{
	static const uint8_t magic[8] = { 0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff };

	for (unsigned i = 0; i < FK_HDR; i++)
		h[i] = i < 8 ? magic[i] : 0;
	fk_put_be32(h + 8, 3);
	fk_put_be32(h + 12, w);
	fk_put_be32(h + 16, hgt);
	fk_put_be32(h + 20, flags);
	fk_put_be32(h + 40, size);
}

static inline uint32_t fk_align(uint32_t v)
{
	return (v + FK_ALIGN - 1) / FK_ALIGN * FK_ALIGN;
}

#endif /* FAKE_CODEC_H */
