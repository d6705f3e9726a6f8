/* SPDX-License-Identifier: MIT */
/*
 * qemu_stopcont: vu.c against the real QEMU (the 10.0.2 fixture in
 * ../shared/guest-driver/qemu), VM `stop` and `cont` over QMP while the
 * device holds parked chains, and a guest reset.
 *
 * No guest kernel: QEMU runs with the qtest accelerator and this program
 * plays the guest's virtio-pci driver through the qtest socket (PCI config
 * cycles, BAR and MMIO accesses, guest RAM reads and writes), so QEMU's own
 * vhost code sends its real message sequences (hw/virtio/vhost.c) to a vu
 * device running vu_run in a thread. The device parks every chain it pops;
 * the test answers them, before `stop`, while stopped, and after `cont`, and
 * checks the guest's used ring: every chain exactly once, in the used index
 * the guest reads.
 *
 * Usage: qemu_stopcont [QEMU_DIR] (default ../shared/guest-driver/qemu).
 * Without the fixture it prints a note and the totals of nothing.
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>

#include "tharness.h"
#include "vu.h"

#define QSIZE 16
#define RING(q) (0x100000ull + 0x10000ull * (q))	/* desc +0, avail +0x1000, used +0x2000 */
#define BUF(h) (0x200000ull + 0x100ull * (h))		/* 8 readable bytes, 16 writable at +0x40 */
#define BAR_ADDR 0xe0000000ull

/* ---- the device: parks every chain ------------------------------------------------ */

static struct {
	struct vu_dev *dev;
	pthread_cond_t cond;		/* with the vu mutex: a chain was parked */
	struct vu_chain parked[64];
	unsigned nparked, resets;
} D = { .cond = PTHREAD_COND_INITIALIZER };

static int d_get_config(struct vu_dev *d, uint32_t off, void *buf, uint32_t len)
{
	(void)d;
	if (off > 44 || len > 44 - off)
		return -EINVAL;
	memset(buf, 0, len);
	return 0;
}

static void d_kick(struct vu_dev *d, unsigned q)
{
	struct vu_chain c;
	int r;

	vu_lock(d);
	while ((r = vu_queue_pop(d, q, &c)) != -EAGAIN && r != -EIO)
		if (r == 0 && D.nparked < 64)
			D.parked[D.nparked++] = c;
		else if (r == 0)
			vu_chain_release(&c);
	pthread_cond_broadcast(&D.cond);
	vu_unlock(d);
}

static void d_reset(struct vu_dev *d)
{
	vu_lock(d);
	D.resets++;
	for (unsigned i = 0; i < D.nparked; i++)
		vu_chain_release(&D.parked[i]);
	D.nparked = 0;
	vu_unlock(d);
}

static const struct vu_ops d_ops = {
	.nqueues = 2, .get_config = d_get_config, .queue_kick = d_kick, .reset = d_reset,
};

/* Answer parked chain i with "answer-X" (what the event thread does). */
static void d_answer(unsigned i, char tag)
{
	char b[16] = "answer-?";

	b[7] = tag;
	vu_lock(D.dev);
	vu_chain_respond(D.dev, &D.parked[i], b, sizeof(b));
	vu_queue_notify(D.dev, D.parked[i].queue);
	vu_unlock(D.dev);
}

static bool d_wait_parked(unsigned n)
{
	vu_lock(D.dev);
	while (D.nparked < n)
		pthread_cond_wait(&D.cond, vu_mutex(D.dev));
	vu_unlock(D.dev);
	return true;
}

/* ---- QEMU, qtest and QMP ------------------------------------------------------------ */

static struct {
	pid_t pid;
	FILE *qt, *qmp;
	char dir[64];
} Q = { .pid = -1 };

static int listen_at(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 1))
		return -1;
	return fd;
}

/* One qtest command; the reply line (without "OK ") in buf. IRQ lines skipped. */
static bool qt(char *buf, size_t len, const char *fmt, ...)
{
	char line[8192];
	va_list ap;

	va_start(ap, fmt);
	vfprintf(Q.qt, fmt, ap);
	va_end(ap);
	fputc('\n', Q.qt);
	fflush(Q.qt);
	while (fgets(line, sizeof(line), Q.qt)) {
		if (!strncmp(line, "IRQ", 3))
			continue;
		line[strcspn(line, "\n")] = 0;
		if (strncmp(line, "OK", 2))
			return th_fail(__LINE__, "qtest: '%s'", line);
		if (buf && len) {
			const char *v = line[2] ? line + 3 : "";
			size_t n = strlen(v) < len - 1 ? strlen(v) : len - 1;

			memcpy(buf, v, n);
			buf[n] = 0;
		}
		return true;
	}
	return th_fail(__LINE__, "qtest: QEMU went away");
}

static uint64_t qt_read(const char *op, uint64_t addr)
{
	char b[64];

	return qt(b, sizeof(b), "%s 0x%llx", op, (unsigned long long)addr) ?
	       strtoull(b, NULL, 0) : UINT64_MAX;
}

static bool qt_write(const char *op, uint64_t addr, uint64_t v)
{
	return qt(NULL, 0, "%s 0x%llx 0x%llx", op, (unsigned long long)addr,
		  (unsigned long long)v);
}

/* A QMP command; skips events up to its "return" (false on "error"). */
static bool qmp(const char *cmd)
{
	char line[8192];

	fprintf(Q.qmp, "{\"execute\": \"%s\"}\n", cmd);
	fflush(Q.qmp);
	while (fgets(line, sizeof(line), Q.qmp)) {
		if (strstr(line, "\"return\""))
			return true;
		if (strstr(line, "\"error\""))
			return th_fail(__LINE__, "QMP %s: %s", cmd, line);
	}
	return th_fail(__LINE__, "QMP %s: QEMU went away", cmd);
}

static bool qemu_start(const char *qdir, const char *vu_sock)
{
	char qt_path[128], qmp_path[128], qtest_arg[160], qmp_arg[200], chr[200], bin[4096],
	     share[4096], line[4096];
	int lq, lm, fq, fm, alive[2];
	struct pollfd p[3];

	snprintf(qt_path, sizeof(qt_path), "%s/qtest.sock", Q.dir);
	snprintf(qmp_path, sizeof(qmp_path), "%s/qmp.sock", Q.dir);
	lq = listen_at(qt_path);
	lm = listen_at(qmp_path);
	CHECK(lq >= 0 && lm >= 0, "listen: %s", strerror(errno));
	snprintf(qtest_arg, sizeof(qtest_arg), "unix:%s", qt_path);
	snprintf(qmp_arg, sizeof(qmp_arg), "socket,id=qmp,path=%s", qmp_path);
	snprintf(chr, sizeof(chr), "socket,id=vv,path=%s", vu_sock);
	snprintf(bin, sizeof(bin), "%s/qemu-system-x86_64", qdir);
	snprintf(share, sizeof(share), "%s/share", qdir);
	/* QEMU holds the write end of `alive` (it is not CLOEXEC): EOF means it
	 * died before connecting (a missing library, a bad option). */
	CHECK(pipe(alive) == 0, "pipe");
	Q.pid = fork();
	if (Q.pid == 0) {
		char log[160];
		int fd;

		close(alive[0]);

		snprintf(log, sizeof(log), "%s/qemu.log", Q.dir);
		fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(bin, bin, "-L", share, "-machine", "pc", "-accel", "qtest", "-qtest", qtest_arg,
		      "-chardev", qmp_arg, "-mon", "chardev=qmp,mode=control", "-display", "none",
		      "-nodefaults", "-m", "64M", "-object",
		      "memory-backend-memfd,id=mem,size=64M,share=on", "-numa", "node,memdev=mem",
		      "-chardev", chr, "-device",
		      "vhost-user-device-pci,chardev=vv,virtio-id=31,num_vqs=2,config_size=44,"
		      "addr=04.0", (char *)NULL);
		_exit(127);
	}
	close(alive[1]);
	fq = fm = -1;
	while (fq < 0 || fm < 0) {
		p[0] = (struct pollfd){ fq < 0 ? lq : -1, POLLIN, 0 };
		p[1] = (struct pollfd){ fm < 0 ? lm : -1, POLLIN, 0 };
		p[2] = (struct pollfd){ alive[0], POLLIN, 0 };
		if (poll(p, 3, -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents & POLLIN)
			fq = accept4(lq, NULL, NULL, SOCK_CLOEXEC);
		if (p[1].revents & POLLIN)
			fm = accept4(lm, NULL, NULL, SOCK_CLOEXEC);
		if ((p[2].revents & (POLLIN | POLLHUP)) && (fq < 0 || fm < 0))
			break;
	}
	close(alive[0]);
	close(lq);
	close(lm);
	CHECK(fq >= 0 && fm >= 0, "QEMU did not connect (it exited? see %s/qemu.log)", Q.dir);
	Q.qt = fdopen(fq, "r+");
	Q.qmp = fdopen(fm, "r+");
	CHECK(fgets(line, sizeof(line), Q.qmp) && strstr(line, "QMP"), "no QMP greeting");
	return qmp("qmp_capabilities");
}

static void qemu_stop(void)
{
	int st;

	if (Q.qmp) {
		fprintf(Q.qmp, "{\"execute\": \"quit\"}\n");
		fflush(Q.qmp);
	}
	if (Q.pid > 0)
		waitpid(Q.pid, &st, 0);
	if (Q.qt)
		fclose(Q.qt);
	if (Q.qmp)
		fclose(Q.qmp);
	Q.qt = Q.qmp = NULL;
	Q.pid = -1;
}

/* ---- the guest's virtio-pci driver ------------------------------------------------- */

static struct {
	uint32_t cfg;			/* PCI config address of the device */
	uint64_t common, notify, isr, device;
	uint32_t notify_mult;
	uint16_t aidx[2];
} G;

static uint32_t pci_rd(unsigned reg)
{
	qt_write("outl", 0xcf8, G.cfg | (reg & 0xfc));
	return (uint32_t)qt_read("inl", 0xcfc);
}

static void pci_wr(unsigned reg, uint32_t v)
{
	qt_write("outl", 0xcf8, G.cfg | (reg & 0xfc));
	qt_write("outl", 0xcfc, v);
}

/* Find the device, map BAR 4, find the virtio capabilities. */
static bool guest_probe(void)
{
	unsigned cap;

	G.cfg = 0x80000000u | (4u << 11);
	CHECK(pci_rd(0) == (0x1af4u | (0x105fu << 16)), "no virtio-video device at 00:04.0: 0x%x",
	      pci_rd(0));
	pci_wr(0x20, (uint32_t)BAR_ADDR | 0x4);		/* BAR 4: 64-bit memory */
	pci_wr(0x24, 0);
	pci_wr(0x04, pci_rd(0x04) | 0x6);		/* memory space, bus master */
	for (cap = pci_rd(0x34) & 0xff; cap; cap = (pci_rd(cap) >> 8) & 0xff) {
		uint32_t h = pci_rd(cap), off = pci_rd(cap + 8);
		uint8_t type = (h >> 24) & 0xff, bar = pci_rd(cap + 4) & 0xff;
		uint64_t at = BAR_ADDR + off;

		if ((h & 0xff) != 0x09 || bar != 4)
			continue;
		if (type == VIRTIO_PCI_CAP_COMMON_CFG)
			G.common = at;
		else if (type == VIRTIO_PCI_CAP_NOTIFY_CFG) {
			G.notify = at;
			G.notify_mult = pci_rd(cap + 16);
		} else if (type == VIRTIO_PCI_CAP_ISR_CFG)
			G.isr = at;
		else if (type == VIRTIO_PCI_CAP_DEVICE_CFG)
			G.device = at;
	}
	CHECK(G.common && G.notify, "virtio capabilities not found");
	return true;
}

#define CC(field) (G.common + offsetof(struct virtio_pci_common_cfg, field))

/* virtio 1.x 3.1.1 with VERSION_1 only; both rings zeroed, DRIVER_OK. */
static bool guest_init(void)
{
	uint8_t st = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;

	qt_write("writeb", CC(device_status), 0);
	qt_write("writeb", CC(device_status), st);
	qt_write("writel", CC(guest_feature_select), 0);
	qt_write("writel", CC(guest_feature), 0);
	qt_write("writel", CC(guest_feature_select), 1);
	qt_write("writel", CC(guest_feature), 1);	/* VIRTIO_F_VERSION_1 (bit 32) */
	st |= VIRTIO_CONFIG_S_FEATURES_OK;
	qt_write("writeb", CC(device_status), st);
	CHECK(qt_read("readb", CC(device_status)) & VIRTIO_CONFIG_S_FEATURES_OK, "FEATURES_OK");
	for (unsigned q = 0; q < 2; q++) {
		CHECK(qt(NULL, 0, "memset 0x%llx 0x3000 0", (unsigned long long)RING(q)), "memset");
		qt_write("writew", CC(queue_select), q);
		qt_write("writew", CC(queue_size), QSIZE);
		qt_write("writew", CC(queue_msix_vector), 0xffff);
		qt_write("writel", CC(queue_desc_lo), RING(q));
		qt_write("writel", CC(queue_desc_hi), 0);
		qt_write("writel", CC(queue_avail_lo), RING(q) + 0x1000);
		qt_write("writel", CC(queue_avail_hi), 0);
		qt_write("writel", CC(queue_used_lo), RING(q) + 0x2000);
		qt_write("writel", CC(queue_used_hi), 0);
		qt_write("writew", CC(queue_enable), 1);
		G.aidx[q] = 0;
	}
	qt_write("writeb", CC(device_status), st | VIRTIO_CONFIG_S_DRIVER_OK);
	return true;
}

/* Chain h on ring 0 (descriptors 2h, 2h+1), made available. */
static void guest_post(uint16_t h)
{
	uint64_t d = RING(0) + 32ull * h;

	qt(NULL, 0, "write 0x%llx 8 0x%s", (unsigned long long)BUF(h), "7265717565737421");
	qt(NULL, 0, "memset 0x%llx 16 0x2e", (unsigned long long)BUF(h) + 0x40);
	qt_write("writeq", d, BUF(h));
	qt_write("writel", d + 8, 8);
	qt_write("writew", d + 12, VRING_DESC_F_NEXT);
	qt_write("writew", d + 14, 2 * h + 1);
	qt_write("writeq", d + 16, BUF(h) + 0x40);
	qt_write("writel", d + 24, 16);
	qt_write("writew", d + 28, VRING_DESC_F_WRITE);
	qt_write("writew", d + 30, 0);
	qt_write("writew", RING(0) + 0x1000 + 4 + 2 * (G.aidx[0] % QSIZE), 2 * h);
	G.aidx[0]++;
	qt_write("writew", RING(0) + 0x1000 + 2, G.aidx[0]);
}

static void guest_kick(unsigned q)
{
	uint16_t off;

	qt_write("writew", CC(queue_select), q);
	off = (uint16_t)qt_read("readw", CC(queue_notify_off));
	qt_write("writew", G.notify + (uint64_t)off * G.notify_mult, q);
}

static uint16_t guest_used_idx(void)
{
	return (uint16_t)qt_read("readw", RING(0) + 0x2000 + 2);
}

/* Until the used index reaches n (the backend handles QEMU's messages in
 * its own time after a QMP command returns); the watchdog bounds it. */
static void guest_wait_used(uint16_t n)
{
	while (guest_used_idx() != n)
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
}

/* heads[0..n) each exactly once in the used ring, with its answer. */
static bool guest_used_exactly(const uint16_t *heads, const char *tags, unsigned n)
{
	CHECK(guest_used_idx() == n, "used idx %u, expected %u", guest_used_idx(), n);
	for (unsigned k = 0; k < n; k++) {
		unsigned seen = 0;

		for (unsigned i = 0; i < n; i++) {
			uint64_t e = RING(0) + 0x2000 + 4 + 8 * i;

			if (qt_read("readl", e) != heads[k])
				continue;
			seen++;
			CHECK(qt_read("readl", e + 4) == 16, "head %u: used length", heads[k]);
		}
		CHECK(seen == 1, "head %u is %u times in the used ring", heads[k], seen);
		CHECK(qt_read("readb", BUF(heads[k] / 2) + 0x40 + 7) == (uint8_t)tags[k],
		      "head %u: wrong answer", heads[k]);
	}
	return true;
}

/* ---- the cases --------------------------------------------------------------------- */

static const char *qemu_dir;
static char vu_sock[128];

/* `stop` with three parked chains (one answered before), one answered while
 * stopped, `cont`, the last answered after: each exactly once, no reset. */
static bool case_stop_cont(void)
{
	static const uint16_t heads[4] = { 0, 2, 4, 6 };

	CHECK(guest_probe() && guest_init(), "%s", why);
	for (uint16_t h = 0; h < 4; h++)
		guest_post(h);
	guest_kick(0);
	d_wait_parked(4);
	d_answer(0, 'a');
	CHECK(guest_used_idx() == 1, "answer before stop");
	CHECK(qmp("stop"), "stop");
	d_answer(1, 'b');
	d_answer(2, 'c');
	CHECK(guest_used_idx() == 1, "answers while stopped reached the used ring");
	CHECK(qt_read("readb", BUF(2) + 0x40) == '.', "a suspended device wrote guest memory");
	CHECK(qmp("cont"), "cont");
	guest_wait_used(3);
	d_answer(3, 'd');
	CHECK(D.resets == 0, "stop/cont reset the device %u times", D.resets);
	return guest_used_exactly(heads, "abcd", 4);
}

/* Two more cycles, an answer while stopped in each. */
static bool case_stop_cont_again(void)
{
	static const uint16_t heads[6] = { 0, 2, 4, 6, 8, 10 };

	guest_post(4);
	guest_post(5);
	guest_kick(0);
	d_wait_parked(6);
	for (unsigned i = 0; i < 2; i++) {
		CHECK(qmp("stop"), "stop");
		d_answer(4 + i, 'e' + i);
		CHECK(qmp("cont"), "cont");
		guest_wait_used(5 + i);
	}
	CHECK(D.resets == 0, "stop/cont reset the device");
	return guest_used_exactly(heads, "abcdef", 6);
}

/* The guest resets the device with a chain parked and one answered while
 * stopped: the device forgets everything, nothing reaches the new rings. */
static bool case_guest_reset(void)
{
	unsigned before;

	guest_post(6);
	guest_kick(0);
	d_wait_parked(7);
	CHECK(qmp("stop"), "stop");
	d_answer(6, 'g');
	CHECK(qmp("cont"), "cont");
	guest_wait_used(7);
	guest_post(7);
	guest_kick(0);
	d_wait_parked(8);
	vu_lock(D.dev);
	before = D.resets;
	vu_unlock(D.dev);
	CHECK(guest_init(), "re-init: %s", why);
	/* a chain on the fresh ring proves the device runs; its kick comes
	 * after every message of the restart */
	guest_post(0);
	guest_kick(0);
	d_wait_parked(1);
	CHECK(D.resets == before + 1, "guest reset: %u device resets", D.resets - before);
	d_answer(0, 'z');
	CHECK(guest_used_idx() == 1, "fresh ring: used idx %u", guest_used_idx());
	return true;
}

struct runner {
	pthread_t th;
	int fd, stop, ret;
};

static void *run_thread(void *arg)
{
	struct runner *r = arg;

	r->ret = vu_run(D.dev, r->fd, r->stop);
	return NULL;
}

static void watchdog(int sig)
{
	static const char m[] = "FAIL qemu_stopcont: watchdog: no progress in 300 s\n0 passed, 1 failed\n";

	(void)sig;
	if (write(1, m, sizeof(m) - 1) < 0)
		_exit(3);
	if (Q.pid > 0)
		kill(Q.pid, SIGKILL);
	_exit(1);
}

int main(int argc, char **argv)
{
	struct runner rn = { .ret = -1 };
	char path[4096];
	struct stat st;
	uint64_t one = 1;
	int rc;

	qemu_dir = argc > 1 ? argv[1] : "../shared/guest-driver/qemu";
	snprintf(path, sizeof(path), "%s/qemu-system-x86_64", qemu_dir);
	if (stat(path, &st)) {
		printf("qemu_stopcont: no QEMU fixture at %s; nothing to run\n", path);
		return th_summary();
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, watchdog);
	alarm(300);
	snprintf(Q.dir, sizeof(Q.dir), "/tmp/vuv-qemu.XXXXXX");
	if (!mkdtemp(Q.dir))
		return 1;
	snprintf(vu_sock, sizeof(vu_sock), "%s/vu.sock", Q.dir);
	vu_verbosity = getenv("VUV_QEMU_VERBOSE") ? atoi(getenv("VUV_QEMU_VERBOSE")) : 0;
	D.dev = vu_dev_new(&d_ops, NULL);
	rn.fd = vu_listen(vu_sock);
	rn.stop = eventfd(0, EFD_CLOEXEC);
	if (!D.dev || rn.fd < 0 || rn.stop < 0 || pthread_create(&rn.th, NULL, run_thread, &rn))
		return 1;
	if (!qemu_start(qemu_dir, vu_sock)) {
		char msg[sizeof(why)];

		snprintf(msg, sizeof(msg), "%.900s (log: %s/qemu.log)", why, Q.dir);
		snprintf(why, sizeof(why), "%s", msg);
		tsuite_result(&th_suite, "qemu start", -1, t_now_ms());
	} else {
		th_run("qemu_stop_cont", case_stop_cont);
		th_run("qemu_stop_cont_again", case_stop_cont_again);
		th_run("qemu_guest_reset", case_guest_reset);
	}
	qemu_stop();
	if (write(rn.stop, &one, 8) != 8)
		return 1;
	pthread_join(rn.th, NULL);
	vu_dev_free(D.dev);
	close(rn.fd);
	close(rn.stop);
	rc = th_summary();
	if (!rc) {
		snprintf(path, sizeof(path), "rm -rf %s", Q.dir);
		if (system(path))
			rc = 1;
	}
	return rc;
}
