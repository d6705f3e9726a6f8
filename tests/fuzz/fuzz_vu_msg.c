/* SPDX-License-Identifier: MIT */
/*
 * fuzz_vu_msg: the vhost-user message stream. An input is a list of steps:
 * messages with any request, flags, payload and fds (real memfd, eventfds,
 * pipes), hang-ups mid-message, reconnects, QEMU's stop and start sequences,
 * the device popping, parking, answering and releasing chains (also after a
 * reset or a reconnect), guest memory writes, and a memory file shrunk
 * under the daemon. Invariants: fuzz.h.
 *
 * Step byte % 16:
 *   0 message: u8 request, u8 flags selector (bit 6: raw version bits
 *     from bits 0-1, else version 1; bit 3 NEED_REPLY), u16 size % 301,
 *     u8 fd count % 10, that many u8 fd kinds, then the payload bytes
 *   1 pop u8 queue      2 respond u8 slot, u16 length     3 release u8 slot
 *   4 notify u8 queue   5 reconnect   6 guest write u32 offset, u8 length, bytes
 *   7 shrink (u8 odd) or restore the memory file   8 kick u8 queue (echo)
 *   9 hang up after u8 bytes of a header   10 QEMU stop   11 QEMU start
 *   12 handshake (u64 features)   13 ring setup u8 queue, u16 desc/avail/used
 *     offsets (x16) in region 0, u8 log2 size    14, 15 nothing
 */
#include <string.h>

#include "fuzz.h"

static void step_msg(struct rd *r)
{
	uint8_t req = rd8(r), sel = rd8(r), kinds[16], pl[300];
	uint16_t size = rd16(r) % 301;
	unsigned nfds = rd8(r) % 10;
	uint32_t flags = sel & 0x40 ? sel & 3u : VHOST_USER_VERSION;

	if (sel & 0x08)
		flags |= VHOST_USER_NEED_REPLY_MASK;
	for (unsigned i = 0; i < nfds; i++)
		kinds[i] = rd8(r);
	rdbuf(r, pl, size);
	fz_msg(req, flags, pl, size, kinds, nfds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd r = { data, size };
	unsigned steps = 0, heavy = 0;	/* sequences of many messages */

	fz_begin();
	while (r.n && steps++ < 2000) {
		uint8_t op = rd8(&r) % 16;

		switch (op) {
		case 0:
			step_msg(&r);
			break;
		case 1:
			fz_pop(rd8(&r) % FZ_QUEUES);
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
			fz_notify(rd8(&r) % FZ_QUEUES);
			break;
		case 5:
			fz_reconnect();
			break;
		case 6: {
			uint32_t off = rd32(&r) % FZ_MEM_SIZE;
			uint8_t buf[256], len = rd8(&r);

			rdbuf(&r, buf, len);
			fz_guest_write(off, buf, len);
			break;
		}
		case 7:
			fz_truncate(rd8(&r) & 1);
			break;
		case 8:
			fz_kick(rd8(&r) % FZ_QUEUES);
			break;
		case 9:
			fz_hangup_mid_message(rd8(&r));
			break;
		case 10:
			if (heavy++ < 16)
				fz_qemu_stop();
			break;
		case 11:
			if (heavy++ < 16)
				fz_qemu_start();
			break;
		case 12:
			if (heavy++ < 16)
				fz_handshake(rd64(&r));
			else
				(void)rd64(&r);
			break;
		case 13: {
			unsigned q = rd8(&r) % FZ_QUEUES;
			uint64_t d = 16ull * (rd16(&r) % (FZ_REGION / 16));
			uint64_t a = 16ull * (rd16(&r) % (FZ_REGION / 16));
			uint64_t u = 16ull * (rd16(&r) % (FZ_REGION / 16));

			fz_ring_setup(q, d, a, u, 1u << (rd8(&r) % 16));
			break;
		}
		default:
			break;
		}
	}
	fz_end();
	return 0;
}
