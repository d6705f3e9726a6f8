/* SPDX-License-Identifier: MIT */
/*
 * fuzz_view: the guest-memory mapping code of vu.c, linear views
 * (vu_view_*) and the udmabuf request building (vu_dmabuf_items,
 * vu_memfd_unfit). Built with configs/dmabuf_defconfig's CONFIG_VUV_DMABUF
 * (Makefile: FUZZ_DMA). Guest memory is two memfds of 64 KiB (each sealed
 * with F_SEAL_SHRINK or not, header bits) and the harness's own 256 KiB
 * memfd (the handshake's table; not sealable). Memory tables come through
 * the message handler (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG), mirrored
 * by a model here. Checks, besides fuzz.h's fd count:
 *  - a table is accepted exactly when the model says it is valid;
 *  - a view is made exactly when a straightforward reference says its
 *    pieces are guest memory and page-aligned the way mmap needs; it shows
 *    exactly the guest bytes its pieces name, in order, and writes through
 *    it land in the right file bytes (and back);
 *  - after a table change or a disconnect every view is invalid, its
 *    addresses unreadable and still reserved;
 *  - vu_dmabuf_items gives the reference's result: errno, items (file,
 *    offset, size), merging;
 *  - no mapping of the memfds is left after the input.
 *
 * Header: u8 bits 0/1 seal memfd 0/1 with F_SEAL_SHRINK.
 * Step byte % 10:
 *   0 SET_MEM_TABLE u8 n (% 8 + 1), n regions   1 ADD_MEM_REG region
 *   2 REM_MEM_REG u8 which, u8 perturb   3 new view u8 slot, pieces
 *   4 check view u8 slot   5 write through view u8 slot, u32 offset, u8 value
 *   6 free view u8 slot   7 check every view
 *   8 dmabuf items u8 max (bit 7: 1024, bits 7-6 01: no pieces, 11 and bit 0:
 *     memfd 1 sealed with F_SEAL_FUTURE_WRITE first; else % 6), pieces
 *   9 disconnect, reconnect, handshake
 * Region: u8 kind (% 3 file; bit 7 raw: u64 gpa, size, offset, uva; else
 *   u16 gpa (x4096 if bit 6, else x256); bit 5: u8 pages of size, u8 pages
 *   of offset, else u16 size, u16 offset).
 * Pieces: u8 n (bit 7: 8 + u8 pieces, one page each, consecutive from the
 *   first, or with bit 6 too 4090 + u8 % 16 times the first one; else
 *   n % 8 + 1), then per piece: u8 kind (>= 0xf0 raw: u64 gpa,
 *   u32 len; else region kind % n: u16 offset, page-aligned in its file if
 *   bit 6; length: bit 4 to the region's end, bit 5 u8 % 5 pages, else u16).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/udmabuf.h>
#include <linux/virtio_config.h>

#include "fuzz.h"

#define NFILES 3		/* 0, 1: ours; 2: FZ.memfd */
#define FILE_SIZE (64u * 1024)
#define NVIEWS 8
#define MAXP (4090 + 16)
#define VIEW_MAX_MAPS 4096u	/* vu.c's VU_VIEW_MAX_MAPS */

struct mregion {
	uint64_t gpa, size, uva, off;
	unsigned file;
};

static struct {
	int fd[NFILES];
	uint8_t *map[NFILES];
	uint64_t fsize[NFILES];
	bool sealed[NFILES];
	bool wsealed[NFILES];		/* F_SEAL_FUTURE_WRITE: no new writable mmap */
	struct mregion rg[VU_MAX_MEM_SLOTS];
	unsigned nrg;
	struct {
		struct vu_view *v;
		struct vu_seg seg[MAXP];
		unsigned n;
		bool valid;
	} view[NVIEWS];
	size_t pg;
} S;

static uint8_t pattern(unsigned f, uint32_t i)
{
	return (uint8_t)((i ^ (i >> 8) ^ (i >> 16)) * 31 + f * 97 + 1);
}

/* Lines of /proc/self/maps naming one of the memfds (no stdio). */
static unsigned n_maps(void)
{
	static char buf[1 << 20];
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	size_t len = 0;
	ssize_t r;
	unsigned n = 0;

	if (fd < 0)
		fz_fail("/proc/self/maps: %s", strerror(errno));
	while (len < sizeof(buf) - 1 && (r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)r;
	close(fd);
	buf[len] = '\0';
	for (char *p = buf; (p = strstr(p, "memfd:fzview")); p++)
		n++;
	for (char *p = buf; (p = strstr(p, "memfd:fuzz-guest")); p++)
		n++;
	return n;
}

/* ---- the model ---------------------------------------------------------------- */

static const struct mregion *m_region_of(uint64_t gpa)
{
	for (unsigned i = 0; i < S.nrg; i++)
		if (gpa >= S.rg[i].gpa && gpa - S.rg[i].gpa < S.rg[i].size)
			return &S.rg[i];
	return NULL;
}

/* region_map's checks, the file's size included. */
static bool m_region_ok(const struct vhost_user_mem_region *w, unsigned file)
{
	uint64_t size = w->memory_size, off = w->mmap_offset;

	return size && size - 1 <= UINT64_MAX - w->guest_phys_addr &&
	       size - 1 <= UINT64_MAX - w->userspace_addr && off <= UINT64_MAX - size &&
	       off + size <= S.fsize[file] && !S.wsealed[file];
}

static bool m_overlap(uint64_t g1, uint64_t s1, uint64_t g2, uint64_t s2)
{
	return g1 <= g2 + (s2 - 1) && g2 <= g1 + (s1 - 1);
}

static void views_all_invalid(void)
{
	for (unsigned i = 0; i < NVIEWS; i++)
		S.view[i].valid = false;
}

static void m_handshake(void)
{
	S.rg[0] = (struct mregion){ FZ_GPA0, FZ_REGION, FZ_UVA0, 0, 2 };
	S.rg[1] = (struct mregion){ FZ_GPA1, FZ_REGION, FZ_UVA1, FZ_REGION, 2 };
	S.nrg = 2;
}

/* ---- messages ------------------------------------------------------------------- */

/* Send one message with fds of our files, handle it, return the REPLY_ACK
 * value (0 accepted), or -1 if the connection was dropped. */
static int send_msg(uint32_t req, const void *pl, uint32_t size, const unsigned *files,
		    unsigned nfds)
{
	uint8_t buf[sizeof(struct vhost_user_hdr) + sizeof(struct vhost_user_mem_table)];
	struct vhost_user_hdr h = { req, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, size };
	int fds[8] = { 0 }, ret;
	uint64_t ack = ~0ull;

	FZ_REQUIRE(nfds <= 8, "%u fds", nfds);
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), pl, size);
	for (unsigned i = 0; i < nfds; i++)
		fds[i] = S.fd[files[i]];
	if (fz_send_fds(FZ.sock, buf, sizeof(h) + size, fds, nfds))
		fz_fail("sendmsg: %s", strerror(errno));
	ret = vu_handle_msg(FZ.dev);
	if (ret == -EPROTO || ret == -EPIPE || vu_broken(FZ.dev))
		return -1;
	if (recv(FZ.sock, &h, sizeof(h), MSG_DONTWAIT) != (ssize_t)sizeof(h) || h.size != 8 ||
	    recv(FZ.sock, &ack, 8, MSG_DONTWAIT) != 8)
		fz_fail("request %u: no REPLY_ACK", req);
	return ack != 0;
}

static void reconnect(void)
{
	fz_reconnect();
	fz_handshake((1ull << VIRTIO_F_VERSION_1) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES));
	m_handshake();
	views_all_invalid();
}

static void rd_region(struct rd *r, struct vhost_user_mem_region *w, unsigned *file)
{
	uint8_t kind = rd8(r);

	*file = kind % 3;
	if (kind & 0x80) {
		w->guest_phys_addr = rd64(r);
		w->memory_size = rd64(r);
		w->mmap_offset = rd64(r);
		w->userspace_addr = rd64(r);
		return;
	}
	w->guest_phys_addr = (uint64_t)rd16(r) * (kind & 0x40 ? 4096 : 256);
	if (kind & 0x20) {
		w->memory_size = (uint64_t)(rd8(r) % 17) * S.pg;
		w->mmap_offset = (uint64_t)(rd8(r) % 17) * S.pg;
	} else {
		w->memory_size = rd16(r);
		w->mmap_offset = rd16(r);
	}
	w->userspace_addr = FZ_UVA0 + w->guest_phys_addr;
}

static void table_changed(void)
{
	views_all_invalid();
}

static void op_set_mem_table(struct rd *r)
{
	struct vhost_user_mem_table t = { 0 };
	unsigned files[8], n = rd8(r) % 8 + 1;
	bool ok = true;
	int ack;

	t.nregions = n;
	for (unsigned i = 0; i < n; i++) {
		rd_region(r, &t.regions[i], &files[i]);
		ok = ok && m_region_ok(&t.regions[i], files[i]);
		for (unsigned j = 0; ok && j < i; j++)
			ok = !m_overlap(t.regions[i].guest_phys_addr, t.regions[i].memory_size,
					t.regions[j].guest_phys_addr, t.regions[j].memory_size);
	}
	ack = send_msg(VHOST_USER_SET_MEM_TABLE, &t, 8 + 32 * n, files, n);
	FZ_REQUIRE(ack >= 0, "SET_MEM_TABLE dropped the connection");
	FZ_REQUIRE((ack == 0) == ok, "SET_MEM_TABLE %s, the model says %s",
		   ack ? "refused" : "accepted", ok ? "valid" : "invalid");
	if (!ok)
		return;
	for (unsigned i = 0; i < n; i++)
		S.rg[i] = (struct mregion){ t.regions[i].guest_phys_addr, t.regions[i].memory_size,
					    t.regions[i].userspace_addr, t.regions[i].mmap_offset,
					    files[i] };
	S.nrg = n;
	table_changed();
}

static void op_add_mem_reg(struct rd *r)
{
	struct vhost_user_mem_reg_msg m = { 0 };
	unsigned file;
	bool ok;
	int ack;

	rd_region(r, &m.region, &file);
	ok = S.nrg < VU_MAX_MEM_SLOTS && m_region_ok(&m.region, file);
	for (unsigned i = 0; ok && i < S.nrg; i++)
		ok = !m_overlap(m.region.guest_phys_addr, m.region.memory_size, S.rg[i].gpa,
				S.rg[i].size);
	ack = send_msg(VHOST_USER_ADD_MEM_REG, &m, sizeof(m), &file, 1);
	FZ_REQUIRE(ack >= 0, "ADD_MEM_REG dropped the connection");
	FZ_REQUIRE((ack == 0) == ok, "ADD_MEM_REG %s, the model says %s",
		   ack ? "refused" : "accepted", ok ? "valid" : "invalid");
	if (ok)			/* existing views stay valid */
		S.rg[S.nrg++] = (struct mregion){ m.region.guest_phys_addr, m.region.memory_size,
						  m.region.userspace_addr, m.region.mmap_offset,
						  file };
}

static void op_rem_mem_reg(struct rd *r)
{
	struct vhost_user_mem_reg_msg m = { 0 };
	uint8_t which = rd8(r), perturb = rd8(r);
	unsigned found = S.nrg;
	int ack;

	if (S.nrg) {
		const struct mregion *g = &S.rg[which % S.nrg];

		m.region = (struct vhost_user_mem_region){ g->gpa, g->size, g->uva, g->off };
	}
	if (perturb & 1)
		m.region.memory_size += perturb >> 1;
	if (perturb & 2)
		m.region.guest_phys_addr ^= 1ull << (perturb >> 2);
	for (unsigned i = 0; i < S.nrg; i++)
		if (S.rg[i].gpa == m.region.guest_phys_addr && S.rg[i].size == m.region.memory_size &&
		    S.rg[i].uva == m.region.userspace_addr) {
			found = i;
			break;
		}
	ack = send_msg(VHOST_USER_REM_MEM_REG, &m, sizeof(m), NULL, 0);
	FZ_REQUIRE(ack >= 0, "REM_MEM_REG dropped the connection");
	FZ_REQUIRE((ack == 0) == (found < S.nrg), "REM_MEM_REG %s, the model %s the region",
		   ack ? "refused" : "accepted", found < S.nrg ? "has" : "has not");
	if (found == S.nrg)
		return;
	memmove(&S.rg[found], &S.rg[found + 1], (S.nrg - found - 1) * sizeof(S.rg[0]));
	S.nrg--;
	table_changed();
}

/* ---- pieces ----------------------------------------------------------------------- */

static unsigned rd_pieces(struct rd *r, struct vu_seg *seg)
{
	uint8_t c = rd8(r);
	unsigned n = c & 0x80 ? 8u + rd8(r) : c % 8u + 1;
	bool run = c & 0x80, same = (c & 0xc0) == 0xc0;

	if (same)		/* the first piece again and again: a mapping each */
		n = 4090 + (n - 8) % 16;

	for (unsigned i = 0; i < n; i++) {
		const struct mregion *g;
		uint64_t pos;
		uint8_t kind;

		if (run && i) {		/* the next page after the previous piece */
			seg[i] = same ? seg[0] : (struct vu_seg){ seg[i - 1].gpa + seg[i - 1].len,
								  (uint32_t)S.pg };
			continue;
		}
		kind = rd8(r);
		if (kind >= 0xf0 || !S.nrg) {
			seg[i].gpa = rd64(r);
			seg[i].len = rd32(r);
			continue;
		}
		g = &S.rg[kind % S.nrg];
		pos = rd16(r);
		if (kind & 0x40)	/* page-aligned in the file */
			pos = ((g->off + pos + S.pg - 1) & ~(uint64_t)(S.pg - 1)) - g->off;
		seg[i].gpa = g->gpa + pos;
		if (kind & 0x10)
			seg[i].len = pos < g->size ? (uint32_t)(g->size - pos) : 1;
		else if (kind & 0x20)
			seg[i].len = (uint32_t)((rd8(r) % 5) * S.pg);
		else
			seg[i].len = rd16(r);
		if (run)
			seg[i].len = (uint32_t)S.pg;
	}
	return n;
}

static bool wraps(uint64_t gpa, uint64_t len)
{
	return len && gpa > UINT64_MAX - (len - 1);
}

/* The reference for vu_view_new: 0 or an errno it may give. */
static int ref_view(const struct vu_seg *seg, unsigned n)
{
	uint64_t total = 0, at, head, pg = S.pg, mend = 0;
	const struct mregion *g, *mrg = NULL;
	unsigned nmaps = 0;
	bool wsealed = false;

	for (unsigned i = 0; i < n; i++) {
		if (!seg[i].len || wraps(seg[i].gpa, seg[i].len))
			return -EFAULT;
		total += seg[i].len;
		if (total > (1ull << 30))
			return -E2BIG;
	}
	if (!(g = m_region_of(seg[0].gpa)))
		return -EFAULT;
	head = at = (g->off + (seg[0].gpa - g->gpa)) % pg;
	for (unsigned i = 0; i < n; i++) {
		uint64_t gpa = seg[i].gpa, left = seg[i].len;

		while (left) {
			uint64_t chunk, foff;

			if (!(g = m_region_of(gpa)))
				return -EFAULT;
			chunk = g->size - (gpa - g->gpa);
			if (chunk > left)
				chunk = left;
			foff = g->off + (gpa - g->gpa);
			if (at != head && at % pg)
				return -ENOTSUP;	/* a later piece not on a page */
			if (foff % pg != at % pg)
				return -ENOTSUP;	/* not the same place in its page */
			if (foff / pg * pg < g->off ||
			    (foff + chunk + pg - 1) / pg * pg > g->off + g->size)
				return -ENOTSUP;	/* a partial page not guest memory */
			/* one mmap per run of file pages, the same region's fd */
			if (g != mrg || foff / pg * pg != mend)
				nmaps++;
			mrg = g;
			mend = (foff + chunk + pg - 1) / pg * pg;
			/* every page of the chunk is mapped from g's file */
			wsealed = wsealed || S.wsealed[g->file];
			at += chunk;
			gpa += chunk;
			left -= chunk;
		}
	}
	if (nmaps > VIEW_MAX_MAPS)
		return -EMLINK;
	return wsealed ? -EPERM : 0;	/* a writable shared mmap of it */
}

/* The guest byte at gpa (in the model: it must be memory). */
static uint8_t *m_byte(uint64_t gpa)
{
	const struct mregion *g = m_region_of(gpa);

	if (!g)
		fz_fail("model: gpa 0x%llx is not memory", (unsigned long long)gpa);
	return S.map[g->file] + g->off + (gpa - g->gpa);
}

/* The view shows exactly the bytes its pieces name, in order. */
static void check_bytes(unsigned s)
{
	const uint8_t *a = vu_view_addr(S.view[s].v);
	size_t at = 0, head;
	uint64_t end;

	for (unsigned i = 0; i < S.view[s].n; i++) {
		const struct vu_seg *sg = &S.view[s].seg[i];

		for (uint64_t k = 0; k < sg->len; ) {	/* region by region */
			const struct mregion *g = m_region_of(sg->gpa + k);
			uint64_t c = g->size - (sg->gpa + k - g->gpa);

			if (c > sg->len - k)
				c = sg->len - k;
			FZ_REQUIRE(!memcmp(a + at, m_byte(sg->gpa + k), c), "view %u: piece %u at +%llu "
				   "does not show its guest bytes", s, i, (unsigned long long)k);
			at += c;
			k += c;
		}
	}
	FZ_REQUIRE(at == vu_view_len(S.view[s].v), "view %u: %zu bytes, pieces %zu", s,
		   vu_view_len(S.view[s].v), at);
	/* The partial first and last pages show the guest bytes around the
	 * pieces, of the same region (the reference made sure they are). */
	head = (uintptr_t)a % S.pg;
	for (size_t k = 0; k < head; k++)
		FZ_REQUIRE((a - head)[k] == *m_byte(S.view[s].seg[0].gpa - head + k),
			   "view %u: byte %zu before the first piece is not its guest byte", s,
			   head - k);
	end = S.view[s].seg[S.view[s].n - 1].gpa + S.view[s].seg[S.view[s].n - 1].len;
	for (size_t k = 0; (head + at + k) % S.pg; k++)
		FZ_REQUIRE(a[at + k] == *m_byte(end + k), "view %u: byte %zu after the last piece "
			   "is not its guest byte", s, k);
}

/* An invalid view: unreadable, and its addresses still reserved. */
static void check_invalid(unsigned s)
{
	struct vu_view *v = S.view[s].v;
	uint8_t *a = vu_view_addr(v);
	size_t len = vu_view_len(v);
	int pfd[2];

	FZ_REQUIRE(!vu_view_valid(v), "view %u valid after the memory table changed", s);
	if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK))
		fz_fail("pipe: %s", strerror(errno));
	for (size_t off = 0; off < len; off += len / 4 + 1) {
		uint8_t *page = (uint8_t *)((uintptr_t)(a + off) & ~(uintptr_t)(S.pg - 1));
		void *p;

		/* the kernel reads the byte for write(): EFAULT if it cannot */
		FZ_REQUIRE(write(pfd[1], a + off, 1) < 0 && errno == EFAULT,
			   "invalid view %u readable at +%zu", s, off);
		p = mmap(page, S.pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			 -1, 0);
		if (p != MAP_FAILED)
			munmap(p, S.pg);
		FZ_REQUIRE(p == MAP_FAILED && errno == EEXIST,
			   "invalid view %u: its addresses at +%zu are no longer reserved", s, off);
	}
	close(pfd[0]);
	close(pfd[1]);
}

static void check_view(unsigned s)
{
	if (!S.view[s].v)
		return;
	if (S.view[s].valid) {
		FZ_REQUIRE(vu_view_valid(S.view[s].v), "view %u invalid, nothing changed", s);
		check_bytes(s);
	} else {
		check_invalid(s);
	}
}

static void view_free(unsigned s)
{
	vu_lock(FZ.dev);
	vu_view_free(FZ.dev, S.view[s].v);
	vu_unlock(FZ.dev);
	S.view[s].v = NULL;
}

static void op_view_new(struct rd *r)
{
	unsigned s = rd8(r) % NVIEWS, n;
	struct vu_view *v = (void *)1;
	int ret, ref;

	view_free(s);
	n = rd_pieces(r, S.view[s].seg);
	ref = ref_view(S.view[s].seg, n);
	vu_lock(FZ.dev);
	ret = vu_view_new(FZ.dev, S.view[s].seg, n, &v);
	vu_unlock(FZ.dev);
	FZ_REQUIRE(ret == 0 || ret == -EFAULT || ret == -ENOTSUP || ret == -E2BIG ||
		   (ret == -EPERM && S.wsealed[1]), "vu_view_new: %d (the reference %d)", ret, ref);
	FZ_REQUIRE((ret == 0) == (ref == 0), "vu_view_new %d, the reference says %d", ret, ref);
	/* (the mapping count, and mmap's EPERM on a file sealed against
	 * writes, are only known in vu's second pass, after mappings that a
	 * later piece's misalignment would also refuse) */
	FZ_REQUIRE((ref == -E2BIG || ref == -EMLINK) == (ret == -E2BIG) || (ref == -ENOTSUP &&
		   ret == -E2BIG) || ret == -EPERM, "vu_view_new %d, the reference says %d", ret, ref);
	FZ_REQUIRE(ret == 0 || !v, "vu_view_new failed, view not NULL");
	if (ret)
		return;
	S.view[s].v = v;
	S.view[s].n = n;
	S.view[s].valid = true;
	{
		const struct mregion *g = m_region_of(S.view[s].seg[0].gpa);

		FZ_REQUIRE((uintptr_t)vu_view_addr(v) % S.pg ==
			   (g->off + S.view[s].seg[0].gpa - g->gpa) % S.pg,
			   "view %u: first byte not at its place in the page", s);
	}
	check_bytes(s);
}

/* Write through the view, see it in the file; and the other way round. */
static void op_view_write(struct rd *r)
{
	unsigned s = rd8(r) % NVIEWS;
	uint32_t off = rd32(r);
	uint8_t val = rd8(r), *a, *f;
	uint64_t gpa = 0;

	if (!S.view[s].v || !S.view[s].valid)
		return;
	off %= (uint32_t)vu_view_len(S.view[s].v);
	for (unsigned i = 0, left = off; i < S.view[s].n; i++) {
		if (left < S.view[s].seg[i].len) {
			gpa = S.view[s].seg[i].gpa + left;
			break;
		}
		left -= S.view[s].seg[i].len;
	}
	a = (uint8_t *)vu_view_addr(S.view[s].v) + off;
	f = m_byte(gpa);
	*a = val;
	FZ_REQUIRE(*f == val, "view %u: a write at +%u is not in guest memory", s, off);
	val ^= 0xff;
	*f = val;
	FZ_REQUIRE(*a == val, "view %u: a guest write at +%u is not in the view", s, off);
}

/* ---- dmabuf ------------------------------------------------------------------------- */

/* The reference for vu_dmabuf_items: count or -errno, items (file, offset,
 * size) in ref[]. One item per region run: regions have their own fds. */
struct ritem {
	unsigned region, file;
	uint64_t off, size;
};

static int ref_dmabuf(const struct vu_seg *seg, unsigned n, unsigned max, struct ritem *it)
{
	unsigned count = 0;
	uint64_t pg = S.pg;

	if (!n)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		uint64_t gpa = seg[i].gpa, left = seg[i].len;

		if (i == n - 1)
			left = (left + pg - 1) / pg * pg;
		if (!left || gpa % pg || left % pg)
			return -EINVAL;
		if (wraps(gpa, left))
			return -EFAULT;
		while (left) {
			const struct mregion *g = m_region_of(gpa);
			uint64_t off, chunk;
			unsigned ri;

			if (!g)
				return -EFAULT;
			ri = (unsigned)(g - S.rg);
			off = g->off + (gpa - g->gpa);
			chunk = g->size - (gpa - g->gpa);
			if (chunk > left)
				chunk = left;
			if (off % pg || chunk % pg)
				return -EINVAL;
			if (g->file == 2 || !S.sealed[g->file] || S.wsealed[g->file])
				return -EPERM;
			if (count && it[count - 1].region == ri &&
			    it[count - 1].off + it[count - 1].size == off) {
				it[count - 1].size += chunk;
			} else {
				if (count == max)
					return -E2BIG;
				it[count++] = (struct ritem){ ri, g->file, off, chunk };
			}
			gpa += chunk;
			left -= chunk;
		}
	}
	return (int)count;
}

static bool same_file(int a, int b)
{
	struct stat sa, sb;

	return !fstat(a, &sa) && !fstat(b, &sb) && sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev;
}

static void op_dmabuf(struct rd *r)
{
	static struct vu_seg seg[MAXP];
	static struct udmabuf_create_item items[VU_DMABUF_MAX_ITEMS];
	static struct ritem ref[VU_DMABUF_MAX_ITEMS];
	uint8_t m = rd8(r);
	unsigned max = m & 0x80 ? VU_DMABUF_MAX_ITEMS : m % 6u, n = rd_pieces(r, seg);
	const char *why = NULL;
	int ret, want;

	if ((m & 0xc0) == 0x40)
		n = 0;
	if ((m & 0xc1) == 0xc1 && !S.wsealed[1]) {	/* a frontend seals against writes */
		if (fcntl(S.fd[1], F_ADD_SEALS, F_SEAL_FUTURE_WRITE))
			fz_fail("F_SEAL_FUTURE_WRITE: %s", strerror(errno));
		S.wsealed[1] = true;
	}

	want = ref_dmabuf(seg, n, max, ref);
	vu_lock(FZ.dev);
	ret = vu_dmabuf_items(FZ.dev, seg, n, items, max, &why);
	vu_unlock(FZ.dev);
	FZ_REQUIRE(ret == want, "vu_dmabuf_items %d (%s), the reference says %d", ret,
		   why ? why : "-", want);
	FZ_REQUIRE((ret < 0) == (why != NULL), "vu_dmabuf_items %d, why %s", ret, why ? why : "NULL");
	for (int i = 0; i < ret; i++)
		FZ_REQUIRE(items[i].offset == ref[i].off && items[i].size == ref[i].size &&
			   same_file((int)items[i].memfd, S.fd[ref[i].file]),
			   "dmabuf item %d: fd %u offset 0x%llx size 0x%llx, the reference: file %u "
			   "offset 0x%llx size 0x%llx", i, items[i].memfd,
			   (unsigned long long)items[i].offset, (unsigned long long)items[i].size,
			   ref[i].file, (unsigned long long)ref[i].off, (unsigned long long)ref[i].size);
}

/* ---- the input ---------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd r = { data, size };
	uint8_t hdr = rd8(&r);
	unsigned steps = 0, maps_before = n_maps();

	memset(&S, 0, sizeof(S));
	S.pg = (size_t)sysconf(_SC_PAGESIZE);
	fz_begin();
	for (unsigned f = 0; f < 2; f++) {
		S.fd[f] = memfd_create("fzview", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (S.fd[f] < 0 || ftruncate(S.fd[f], FILE_SIZE))
			fz_fail("memfd: %s", strerror(errno));
		S.fsize[f] = FILE_SIZE;
		S.sealed[f] = hdr >> f & 1;
		if (S.sealed[f] && fcntl(S.fd[f], F_ADD_SEALS, F_SEAL_SHRINK))
			fz_fail("F_ADD_SEALS: %s", strerror(errno));
		S.map[f] = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, S.fd[f], 0);
		if (S.map[f] == MAP_FAILED)
			fz_fail("mmap: %s", strerror(errno));
	}
	S.fd[2] = FZ.memfd;
	S.map[2] = FZ.mem;
	S.fsize[2] = FZ_MEM_SIZE;
	for (unsigned f = 0; f < NFILES; f++)
		for (uint32_t i = 0; i < S.fsize[f]; i++)
			S.map[f][i] = pattern(f, i);
	FZ_REQUIRE(!vu_memfd_unfit(S.fd[0]) == S.sealed[0], "memfd 0: %s",
		   vu_memfd_unfit(S.fd[0]) ? vu_memfd_unfit(S.fd[0]) : "fit");
	FZ_REQUIRE(vu_memfd_unfit(FZ.memfd) && vu_memfd_unfit(FZ.sock) && vu_memfd_unfit(-1),
		   "an unsealed memfd, a socket or -1 fit for udmabuf");
	FZ_REQUIRE(!vu_view_valid(NULL), "a NULL view is valid");
	fz_handshake((1ull << VIRTIO_F_VERSION_1) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES));
	m_handshake();
	while (r.n && steps++ < 300) {
		switch (rd8(&r) % 10) {
		case 0:
			op_set_mem_table(&r);
			break;
		case 1:
			op_add_mem_reg(&r);
			break;
		case 2:
			op_rem_mem_reg(&r);
			break;
		case 3:
			op_view_new(&r);
			break;
		case 4:
			check_view(rd8(&r) % NVIEWS);
			break;
		case 5:
			op_view_write(&r);
			break;
		case 6:
			view_free(rd8(&r) % NVIEWS);
			break;
		case 7:
			for (unsigned s = 0; s < NVIEWS; s++)
				check_view(s);
			break;
		case 8:
			op_dmabuf(&r);
			break;
		default:
			reconnect();
			break;
		}
	}
	for (unsigned s = 0; s < NVIEWS; s++)
		check_view(s);
	/* free half the views here, vu_dev_free the rest */
	for (unsigned s = 0; s < NVIEWS; s += 2)
		view_free(s);
	for (unsigned f = 0; f < 2; f++) {	/* vu keeps its own copies */
		munmap(S.map[f], FILE_SIZE);
		close(S.fd[f]);
	}
	fz_end();
	FZ_REQUIRE(n_maps() == maps_before, "%u memfd mappings after the input, %u before",
		   n_maps(), maps_before);
	return 0;
}
