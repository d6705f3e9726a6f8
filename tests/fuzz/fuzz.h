/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h: what the fuzz targets share (fuzz_common.c). A target is a
 * libFuzzer entry point, LLVMFuzzerTestOneInput, built two ways: with clang
 * -fsanitize=fuzzer,address,undefined (make fuzz), and with gcc ASan+UBSan
 * against replay.c, which runs the committed corpus (make check).
 *
 * An input is a script: a byte reader hands out fields, 0 once exhausted.
 * The harness plays the frontend over a socketpair and the device above vu
 * (parking chains, answering them later), with guest memory in a real memfd.
 * Besides "no crash", it checks after every step:
 *  - every chain is answered exactly once: vu.c built with VU_TEST_HOOKS
 *    reports each used-ring entry; an entry must be the chain just answered,
 *    or an answer kept while its ring was stopped and now delivered; a kept
 *    answer must be delivered by the time its ring runs again, unless the
 *    connection generation changed (reset, disconnect, ring re-created);
 *  - no fd is leaked: the process has as many fds after the input as before.
 * A broken invariant prints one line and aborts (a crash to the fuzzer).
 */
#ifndef FUZZ_H
#define FUZZ_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vu.h"

struct rd {
	const uint8_t *p;
	size_t n;
};

uint8_t rd8(struct rd *r);
uint16_t rd16(struct rd *r);
uint32_t rd32(struct rd *r);
uint64_t rd64(struct rd *r);
/* Copy up to len bytes; the rest of buf is zeroed. */
void rdbuf(struct rd *r, void *buf, size_t len);

#define FZ_SLOTS 64
#define FZ_MEM_SIZE (256u * 1024)
#define FZ_QUEUES 2

struct fz_ring {			/* the last valid NUM/ADDR sent, the last base got */
	struct vhost_vring_state_msg num;
	struct vhost_vring_addr_msg addr;
	uint32_t base;
	bool have_num, have_addr;
};

struct fz {
	struct vu_dev *dev;
	int sock;			/* our end of the connection, -1 if none */
	int memfd;
	uint8_t *mem;			/* the whole memfd, FZ_MEM_SIZE */
	bool truncated;
	struct vu_chain slot[FZ_SLOTS];
	bool busy[FZ_SLOTS];
	struct fz_ring ring[FZ_QUEUES];
	int fds_before;
};

extern struct fz FZ;

void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define FZ_REQUIRE(cond, ...) do { if (!(cond)) fz_fail(__VA_ARGS__); } while (0)

/* Start of an input: a device, a connection, guest memory. */
void fz_begin(void);
/* End of an input: release parked chains, free everything, check fds. */
void fz_end(void);

/* sendmsg() of len bytes with nfds (at most FZ_MAX_FDS) fds: 0 when all sent. */
#define FZ_MAX_FDS 16
int fz_send_fds(int sock, const void *buf, size_t len, const int *fds, unsigned nfds);

/* One vhost-user message, handled at once; replies are read and parsed.
 * fdkinds: 0 guest memfd, 1 a new eventfd, 2 a pipe's write end. */
void fz_msg(uint32_t req, uint32_t flags, const void *pl, uint32_t size,
	    const uint8_t *fdkinds, unsigned nfds);
/* Part of a header, then hang up and reconnect. */
void fz_hangup_mid_message(unsigned bytes);
/* Drop the connection and attach a new one (parked chains stay parked). */
void fz_reconnect(void);

/* The device side. */
void fz_pop(unsigned q);
void fz_respond(unsigned slot, size_t len);
void fz_release(unsigned slot);
void fz_notify(unsigned q);
void fz_kick(unsigned q);	/* pop everything, answer each at once */

/* The guest side. */
void fz_guest_write(uint32_t off, const void *buf, size_t len);
void fz_truncate(bool shrink);

/* QEMU's stop and start sequences on both rings (hw/virtio/vhost.c). */
void fz_qemu_stop(void);
void fz_qemu_start(void);

/* Well-formed pieces, for the targets and the seed generator. */
void fz_handshake(uint64_t features);
void fz_ring_setup(unsigned q, uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa,
		   unsigned num);
uint64_t fz_uva(uint64_t gpa);

/* The guest memory map the seeds use: two regions of the memfd. */
#define FZ_GPA0 0x0ull
#define FZ_GPA1 0x100000ull
#define FZ_REGION (FZ_MEM_SIZE / 2)
#define FZ_UVA0 0x7f0000000000ull
#define FZ_UVA1 0x7f0000100000ull

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#endif /* FUZZ_H */
