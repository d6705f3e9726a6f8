/* SPDX-License-Identifier: MIT */
/*
 * fuzz_vring: the split-ring walker over hostile guest memory. The session
 * is fixed and well-formed (two memory regions, ring 0 in region 0, ring 1
 * in region 1); the input is the guest: descriptor tables, indirect tables,
 * avail and used indexes and rings, buffers, written between the device's
 * pops and answers. Invariants: fuzz.h (and every popped chain's writable
 * pieces are guest memory, its request no longer than the limit).
 *
 * Header: u8 features (bit 0 INDIRECT_DESC, bit 1 EVENT_IDX), u8 log2 size
 * of ring 0 (% 9), u8 log2 size of ring 1 (% 9).
 * Step byte % 8:
 *   0 guest write: u32 offset into the 256 KiB memory file, u8 length, bytes
 *   1 pop u8 queue   2 respond u8 slot, u16 length   3 release u8 slot
 *   4 notify u8 queue   5 kick u8 queue   6 QEMU stop   7 QEMU start
 */
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include "fuzz.h"

/* Ring q: descriptors at +0, avail at +0x1000, used at +0x2000 of its region. */
#define RING_GPA(q) ((q) ? FZ_GPA1 : FZ_GPA0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd r = { data, size };
	uint8_t f = rd8(&r);
	unsigned num[2], steps = 0, heavy = 0;	/* stop/start: ~14 messages each */
	uint64_t features = (1ull << VIRTIO_F_VERSION_1) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES);

	num[0] = 1u << (rd8(&r) % 9);
	num[1] = 1u << (rd8(&r) % 9);
	if (f & 1)
		features |= 1ull << VIRTIO_RING_F_INDIRECT_DESC;
	if (f & 2)
		features |= 1ull << VIRTIO_RING_F_EVENT_IDX;
	fz_begin();
	fz_handshake(features);
	for (unsigned q = 0; q < 2; q++)
		fz_ring_setup(q, RING_GPA(q), RING_GPA(q) + 0x1000, RING_GPA(q) + 0x2000, num[q]);
	while (r.n && steps++ < 4000) {
		switch (rd8(&r) % 8) {
		case 0: {
			uint32_t off = rd32(&r) % FZ_MEM_SIZE;
			uint8_t buf[256], len = rd8(&r);

			rdbuf(&r, buf, len);
			fz_guest_write(off, buf, len);
			break;
		}
		case 1:
			fz_pop(rd8(&r) % 2);
			break;
		case 2: {
			unsigned s = rd8(&r);

			fz_respond(s, rd16(&r));
			break;
		}
		case 3:
			fz_release(rd8(&r));
			break;
		case 4:
			fz_notify(rd8(&r) % 2);
			break;
		case 5:
			fz_kick(rd8(&r) % 2);
			break;
		case 6:
			if (heavy++ < 16)
				fz_qemu_stop();
			break;
		default:
			if (heavy++ < 16)
				fz_qemu_start();
			break;
		}
	}
	fz_end();
	return 0;
}
