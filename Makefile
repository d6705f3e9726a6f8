# vhost-user-video: a vhost-user virtio-video backend on V4L2 stateful codecs.
# One non-recursive GNU Makefile. `make help` lists the targets.

VERSION := 0.1.0

# ---- toolchain ---------------------------------------------------------------
# A CC given on the command line or in the environment (Buildroot, Yocto) wins;
# otherwise $(CROSS_COMPILE)gcc, or musl-gcc for a native static build.
STATIC ?= 1
CROSS_COMPILE ?=
ifeq ($(origin CC),default)
  ifneq ($(CROSS_COMPILE),)
    CC = $(CROSS_COMPILE)gcc
  else ifeq ($(STATIC),1)
    CC = musl-gcc
  else
    CC = gcc
  endif
endif
STRIP ?= $(CROSS_COMPILE)strip
ASAN_CC ?= gcc
AWK ?= awk

# Output directory. Another one (with another KCONFIG_CONFIG) builds another
# configuration beside the default: make B=build/dec KCONFIG_CONFIG=configs/decoder_defconfig
B := build
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share
INSTALL ?= install

# Kernel uapi headers. Debian's musl-gcc does not search /usr/include, so when
# $(CC) cannot find <linux/videodev2.h> we point it at a private directory of
# links to the system's linux/, asm-generic/ and the target's asm/.
# Cross toolchains without them: make KERNEL_HEADERS=/path/to/sysroot/usr/include
KERNEL_HEADERS ?=
ifeq ($(KERNEL_HEADERS),)
  ifneq ($(filter-out help clean distclean defconfig %_defconfig olddefconfig savedefconfig menuconfig install-qemu-json install-sysv install-systemd uninstall,$(or $(MAKECMDGOALS),all)),)
    HASH := \#
    CC_HAS_UAPI := $(shell printf '$(HASH)include <linux/videodev2.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo y)
  endif
  ifneq ($(CC_HAS_UAPI),y)
    TARGET_TRIPLE := $(subst -musl,-gnu,$(shell $(CC) -dumpmachine 2>/dev/null))
    UAPI_ASM := $(firstword $(wildcard /usr/include/$(TARGET_TRIPLE)/asm /usr/$(TARGET_TRIPLE)/include/asm))
    KINC := $(B)/kinc
    KERNEL_HEADERS := $(KINC)
  endif
endif

# ---- configuration (Kconfig -> .config -> build/config.h) -------------------
KCONFIG_AWK := $(AWK) -f scripts/kconfig.awk
KCONFIG_CONFIG ?= .config
CONFIG_FILE := $(firstword $(wildcard $(KCONFIG_CONFIG)) /dev/null)

# ---- flags: ours first, the user's CPPFLAGS/CFLAGS/LDFLAGS appended ---------
VUV_CPPFLAGS := -D_GNU_SOURCE -DVUV_VERSION='"$(VERSION)"' -I$(B) -I.
# The default build is the embedded one: -Os, no unwind tables (-g still
# gives .debug_frame for gdb; strip removes it), code and data in one
# segment each without page padding. OPT=-O2 for the old flags.
OPT ?= -Os -fno-asynchronous-unwind-tables -fno-unwind-tables
VUV_CFLAGS := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wno-unused-parameter $(OPT) -g \
	-ffunction-sections -fdata-sections -pthread -MMD -MP
VUV_LDFLAGS := -pthread -Wl,--gc-sections
ifeq ($(STATIC),1)
  # static: no loader, so RELRO protects nothing; code and data segments
  # follow each other in the file without page padding (the page they share
  # is mapped twice, as usual). GNU ld >= 2.31; other linkers: LDFLAGS_SIZE=
  LDFLAGS_SIZE ?= -Wl,-z,noseparate-code -Wl,-z,norelro -Wl,-z,common-page-size=64
  VUV_LDFLAGS += -static $(LDFLAGS_SIZE)
endif
VUV_KINC_FLAGS := $(if $(KERNEL_HEADERS),-isystem $(KERNEL_HEADERS))

ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined -fasynchronous-unwind-tables -O1

ifeq ($(V),1)
  Q :=
  quiet = @:
else
  Q := @
  quiet = @printf '  %-7s %s\n'
endif

.DELETE_ON_ERROR:
.SUFFIXES:

# The default build puts the daemon at the top; other B directories keep theirs.
DAEMON := $(if $(filter build,$(B)),vhost-user-video,$(B)/vhost-user-video)
DAEMON_SRCS := vuvideo.c vu.c v4l2.c
# The same daemon on the fake codec (tests/fake_m2m.c) for host unit tests.
FAKE_DAEMON_SRCS := vuvideo.c vu.c tests/fake_m2m.c
# Test programs: name -> sources. Each links what it tests, nothing more.
TEST_PROGS := test_vu test_vv test_fmt qemu_stopcont e2e_core e2e_svc e2e_dec e2e_enc vuvideo-front
test_vu_SRCS := tests/test_vu.c vu.c tests/tproc.c
test_vv_SRCS := tests/test_vv.c tests/vvdec.c tests/vvenc.c tests/vvjob.c tests/vufront.c tests/vvcmd.c tests/tproc.c
qemu_stopcont_SRCS := tests/qemu_stopcont.c vu.c tests/tproc.c
# vu.c's own printf (static musl build) or libc's (ASan)
test_fmt_SRCS := tests/test_fmt.c vu.c
e2e_core_SRCS := tests/e2e_core.c tests/vufront.c tests/vvcmd.c tests/tproc.c
e2e_svc_SRCS := tests/e2e_svc.c tests/vufront.c tests/vvcmd.c tests/tproc.c
e2e_dec_SRCS := tests/e2e_dec.c tests/vvdec.c tests/vvjob.c tests/vufront.c tests/vvcmd.c tests/tproc.c
e2e_enc_SRCS := tests/e2e_enc.c tests/vvenc.c tests/vvdec.c tests/vvjob.c tests/vufront.c tests/vvcmd.c tests/tproc.c
vuvideo-front_SRCS := tests/vvfront.c tests/vvenc.c tests/vvdec.c tests/vvjob.c tests/vufront.c tests/vvcmd.c

objs = $(patsubst %.c,$(1)/%.o,$(2))

# ---- the daemon --------------------------------------------------------------
all: $(DAEMON)

$(DAEMON): $(call objs,$(B),$(DAEMON_SRCS))
	$(quiet) LD $@
	$(Q)$(CC) $(VUV_CFLAGS) $(CFLAGS) $(VUV_LDFLAGS) $(LDFLAGS) -o $@ $^

$(B)/%.o: %.c $(B)/config.h $(B)/flags $(if $(KINC),$(KINC)/.stamp) | $(B)/tests
	$(quiet) CC $<
	$(Q)$(CC) $(VUV_CPPFLAGS) $(VUV_KINC_FLAGS) $(CPPFLAGS) $(VUV_CFLAGS) $(CFLAGS) -c -o $@ $<

# Regenerated on every run (which configuration file is used may change with
# KCONFIG_CONFIG), but replaced only when its content changes.
$(B)/config.h: FORCE | $(B)/tests
	$(Q)$(KCONFIG_AWK) -v mode=header Kconfig $(CONFIG_FILE) > $@.tmp
	$(Q)if cmp -s $@.tmp $@; then rm -f $@.tmp; else \
		printf '  %-7s %s\n' GEN "$@ ($(CONFIG_FILE))"; mv $@.tmp $@; fi

# The compiler and flags: objects are rebuilt when they change (OPT=..., CC=...).
$(B)/flags: FORCE | $(B)/tests
	$(file >$@.tmp,$(CC) $(VUV_CPPFLAGS) $(CPPFLAGS) $(VUV_CFLAGS) $(CFLAGS) $(VUV_LDFLAGS) $(LDFLAGS))
	$(Q)if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

FORCE:

$(B)/tests $(B)/asan/tests $(B)/gcc/tests:
	$(Q)mkdir -p $@

$(KINC)/.stamp:
	$(quiet) KINC "$(or $(UAPI_ASM),no asm/ headers found for $(TARGET_TRIPLE))"
	$(Q)test -n "$(UAPI_ASM)" -a -d /usr/include/linux || { \
		echo "error: no kernel uapi headers for $(CC) ($(TARGET_TRIPLE));" \
		     "install linux-libc-dev (cross: e.g. linux-libc-dev-arm64-cross)," \
		     "or set KERNEL_HEADERS=DIR" >&2; exit 1; }
	$(Q)mkdir -p $(KINC)
	$(Q)ln -sfn /usr/include/linux $(KINC)/linux
	$(Q)ln -sfn /usr/include/asm-generic $(KINC)/asm-generic
	$(Q)ln -sfn $(UAPI_ASM) $(KINC)/asm
	$(Q)touch $@

# ---- tests -------------------------------------------------------------------
# Native programs (static like the daemon) and the same again under
# AddressSanitizer + UndefinedBehaviorSanitizer (glibc gcc, dynamic).
define test_prog
$(B)/tests/$(1): $(call objs,$(B),$($(1)_SRCS))
	$$(quiet) LD $$@
	$$(Q)$$(CC) $$(VUV_CFLAGS) $$(CFLAGS) $$(VUV_LDFLAGS) $$(LDFLAGS) -o $$@ $$^
$(B)/asan/tests/$(1): $(call objs,$(B)/asan,$($(1)_SRCS))
	$$(quiet) LD $$@
	$$(Q)$$(ASAN_CC) $$(VUV_CFLAGS) $$(ASAN_FLAGS) -pthread -o $$@ $$^
endef
$(foreach t,$(TEST_PROGS),$(eval $(call test_prog,$(t))))

$(B)/asan/$(DAEMON): $(call objs,$(B)/asan,$(DAEMON_SRCS))
	$(quiet) LD $@
	$(Q)$(ASAN_CC) $(VUV_CFLAGS) $(ASAN_FLAGS) -pthread -o $@ $^

# Plain gcc (dynamic glibc), so that valgrind can watch it.
$(B)/tests/vhost-user-video-fake: $(call objs,$(B)/gcc,$(FAKE_DAEMON_SRCS))
	$(quiet) LD $@
	$(Q)$(ASAN_CC) $(VUV_CFLAGS) -pthread -o $@ $^

$(B)/gcc/%.o: %.c $(B)/config.h | $(B)/gcc/tests
	$(quiet) CC "$< [gcc]"
	$(Q)$(ASAN_CC) $(VUV_CPPFLAGS) $(VUV_CFLAGS) -c -o $@ $<
$(B)/asan/tests/vhost-user-video-fake: $(call objs,$(B)/asan,$(FAKE_DAEMON_SRCS))
	$(quiet) LD $@
	$(Q)$(ASAN_CC) $(VUV_CFLAGS) $(ASAN_FLAGS) -pthread -o $@ $^

$(B)/asan/%.o: %.c $(B)/config.h | $(B)/asan/tests
	$(quiet) CC "$< [asan]"
	$(Q)$(ASAN_CC) $(VUV_CPPFLAGS) $(VUV_CFLAGS) $(ASAN_FLAGS) -c -o $@ $<

# ---- fuzz targets (tests/fuzz) --------------------------------------------------
# Each target links vu.c built with VU_TEST_HOOKS. make check replays the
# committed corpora with gcc ASan+UBSan (replay.c, no clang needed); make fuzz
# runs libFuzzer (clang) for FUZZ_SECONDS per target.
FUZZ_TARGETS := fuzz_vu_msg fuzz_vring fuzz_vv_cmd fuzz_view
# fuzz_vv_cmd includes vuvideo.c itself (its statics are the harness's).
FUZZ_SRCS = tests/fuzz/$(1).c $(if $(filter fuzz_vv_cmd,$(1)),tests/fake_m2m.c,tests/fuzz/fuzz_common.c) vu.c
# fuzz_view covers the DMABUF request building too: its objects see the
# configuration of configs/dmabuf_defconfig ($(B)/dmacfg/config.h).
FUZZ_DMA := fuzz_view
FUZZ_D = $(if $(filter $(FUZZ_DMA),$(1)),-dma)
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_CPPFLAGS := $(VUV_CPPFLAGS) -DVU_TEST_HOOKS -Itests/fuzz
FUZZ_SAN := address,undefined
define fuzz_prog
$(B)/asan/tests/$(1)-replay: $(call objs,$(B)/hooks$(call FUZZ_D,$(1)),$(call FUZZ_SRCS,$(1)) tests/fuzz/replay.c) | $(B)/asan/tests
	$$(quiet) LD $$@
	$$(Q)$$(ASAN_CC) $$(VUV_CFLAGS) $$(ASAN_FLAGS) -pthread -o $$@ $$^
$(B)/fuzz/$(1): $(call objs,$(B)/fuzz$(call FUZZ_D,$(1)),$(call FUZZ_SRCS,$(1)))
	$$(quiet) LD $$@
	$$(Q)mkdir -p $$(dir $$@)
	$$(Q)$$(FUZZ_CC) -g -O1 -fsanitize=fuzzer,$$(FUZZ_SAN) -pthread -o $$@ $$^
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call fuzz_prog,$(t))))

$(B)/hooks/%.o: %.c $(B)/config.h
	$(quiet) CC "$< [asan, hooks]"
	$(Q)mkdir -p $(dir $@)
	$(Q)$(ASAN_CC) $(FUZZ_CPPFLAGS) $(VUV_CFLAGS) $(ASAN_FLAGS) -c -o $@ $<

$(B)/fuzz/%.o: %.c $(B)/config.h
	$(quiet) CC "$< [libfuzzer]"
	$(Q)mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter \
		-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,$(FUZZ_SAN) \
		-fno-sanitize-recover=undefined -pthread -MMD -MP -c -o $@ $<

$(B)/dmacfg/config.h: configs/dmabuf_defconfig Kconfig scripts/kconfig.awk
	$(Q)mkdir -p $(dir $@)
	$(Q)$(KCONFIG_AWK) -v mode=header Kconfig configs/dmabuf_defconfig > $@

$(B)/hooks-dma/%.o: %.c $(B)/dmacfg/config.h
	$(quiet) CC "$< [asan, hooks, dmabuf]"
	$(Q)mkdir -p $(dir $@)
	$(Q)$(ASAN_CC) -I$(B)/dmacfg $(FUZZ_CPPFLAGS) $(VUV_CFLAGS) $(ASAN_FLAGS) -c -o $@ $<

$(B)/fuzz-dma/%.o: %.c $(B)/dmacfg/config.h
	$(quiet) CC "$< [libfuzzer, dmabuf]"
	$(Q)mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) -I$(B)/dmacfg $(FUZZ_CPPFLAGS) -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter \
		-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,$(FUZZ_SAN) \
		-fno-sanitize-recover=undefined -pthread -MMD -MP -c -o $@ $<

$(B)/tests/mkseeds: tests/fuzz/mkseeds.c vu.h | $(B)/tests
	$(quiet) LD $@
	$(Q)$(ASAN_CC) $(VUV_CPPFLAGS) $(VUV_CFLAGS) -o $@ $<

# Regenerate the seed corpora (committed; crashers found later sit beside them).
fuzz-seeds: $(B)/tests/mkseeds
	$(Q)$(B)/tests/mkseeds tests/fuzz/corpus

fuzz:
	$(Q)tests/deps.sh fuzz
	$(Q)$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=$(B)/fuzz/%)
	$(Q)tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# CI's fuzzing: a fixed number of inputs from a fixed seed (FUZZ_SEED) per
# target, so that the same inputs run on any machine at any load (about a
# minute each on an idle 2-core machine; the README has the counts).
FUZZ_CI_RUNS ?= fuzz_vu_msg:80000 fuzz_vring:80000 fuzz_vv_cmd:15000 fuzz_view:6000
fuzz-ci:
	$(Q)tests/deps.sh fuzz
	$(Q)$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=$(B)/fuzz/%)
	$(Q)tests/fuzz/run.sh --runs $(FUZZ_CI_RUNS)

tests: $(DAEMON) $(TEST_PROGS:%=$(B)/tests/%) $(B)/tests/vhost-user-video-fake trimmed dmabuf-build

# The one-role configurations, each in its own directory (make check tests them).
trimmed:
	$(Q)$(MAKE) --no-print-directory B=build/dec KCONFIG_CONFIG=configs/decoder_defconfig build/dec/vhost-user-video
	$(Q)$(MAKE) --no-print-directory B=build/enc KCONFIG_CONFIG=configs/encoder_defconfig build/enc/vhost-user-video
# With CONFIG_VUV_DMABUF (off by default): its daemon and its vu.c unit
# tests (the udmabuf request building runs on any host).
dmabuf-build:
	$(Q)$(MAKE) --no-print-directory B=build/dma KCONFIG_CONFIG=configs/dmabuf_defconfig \
		build/dma/vhost-user-video build/dma/tests/test_vu build/dma/asan/tests/test_vu \
		build/dma/tests/vhost-user-video-fake
tests-asan: $(B)/asan/$(DAEMON) $(TEST_PROGS:%=$(B)/asan/tests/%) \
	$(B)/asan/tests/vhost-user-video-fake $(FUZZ_TARGETS:%=$(B)/asan/tests/%-replay)

# Stripped sizes of the full, decoder-only and encoder-only static builds, and
# of the full aarch64 build when aarch64-linux-musl-gcc is there (tests/cross.sh
# installs it).
SIZE_BINS := $(DAEMON) build/dec/vhost-user-video build/enc/vhost-user-video build/dma/vhost-user-video
size: $(DAEMON) trimmed dmabuf-build
	$(Q)if command -v aarch64-linux-musl-gcc >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory B=build/arm64 CROSS_COMPILE=aarch64-linux-musl- \
			build/arm64/vhost-user-video; fi
	$(Q)for b in $(SIZE_BINS) build/arm64/vhost-user-video; do \
		[ -e $$b ] || { echo "$$b: not built (no aarch64-linux-musl-gcc)"; continue; }; \
		s=$(STRIP); case $$b in build/arm64/*) s=aarch64-linux-gnu-strip;; esac; \
		$$s -o $$b.stripped $$b && \
		printf '%-32s %7d bytes stripped\n' $$b $$(wc -c < $$b.stripped); \
		rm -f $$b.stripped; \
	done

# `make check` first installs what a fresh Debian machine lacks (as root), then
# builds both variants and runs unit tests on the host and end-to-end tests
# on the real vicodec in a small VM. Ends with "N passed, N failed".
check:
	$(Q)tests/deps.sh
	$(Q)$(MAKE) --no-print-directory tests tests-asan
	$(Q)tests/run.sh

# The real guest driver in the loop (needs ../shared/guest-driver/): L2 runs
# the Linux virtio-video driver under QEMU inside the vicodec VM.
check-guest:
	$(Q)tests/deps.sh
	$(Q)$(MAKE) --no-print-directory $(DAEMON) $(B)/tests/vuvideo-front
	$(Q)tests/guest/guest.sh check

# The decoder and encoder e2e tests on Arm: the static aarch64 daemon and
# aarch64 test programs on vicodec in an arm64 VM (qemu-system-aarch64, TCG;
# tests/vm/vm-arm64.sh, doc/arm-vm.md), single- and multi-planar.
ARM_B := build/arm64
ARM_PROGS := $(ARM_B)/vhost-user-video $(ARM_B)/tests/e2e_dec $(ARM_B)/tests/e2e_enc $(ARM_B)/tests/vuvideo-front
arm64-tests:
	$(Q)$(MAKE) --no-print-directory B=$(ARM_B) CROSS_COMPILE=aarch64-linux-musl- $(ARM_PROGS)
check-arm:
	$(Q)tests/vm/vm-arm64.sh setup
	$(Q)$(MAKE) --no-print-directory arm64-tests
	$(Q)tests/vm/vm-arm64.sh check

# Unit tests only (no VM), for quick iterations.
check-unit:
	$(Q)$(MAKE) --no-print-directory tests tests-asan
	$(Q)VUV_NO_VM=1 tests/run.sh

# DMABUF from guest memory on the real vicodec (opt-in, ~13 min under TCG):
# a VM with Debian sid's kernel (it has /dev/udmabuf; the first run fetches
# and builds it, 3-8 min), the CONFIG_VUV_DMABUF build, single- and
# multi-planar. See doc/dmabuf.md.
check-dmabuf:
	$(Q)tests/deps.sh
	$(Q)$(MAKE) --no-print-directory dmabuf-build $(B)/tests/e2e_dec $(B)/tests/e2e_enc \
		$(B)/tests/test_vv
	$(Q)VUV_VM_KERNEL=sid tests/vm/vm.sh run -- tests/vm-dmabuf.sh
	$(Q)VUV_VM_KERNEL=sid tests/vm/vm.sh run --multiplanar -- tests/vm-dmabuf.sh

# The main job: boot the vicodec VM, decode a clip through the daemon with
# the test frontend, compare with v4l2-ctl decoding directly, print frames/s.
demo:
	$(Q)tests/deps.sh
	$(Q)$(MAKE) --no-print-directory $(DAEMON) $(B)/tests/vuvideo-front
	$(Q)tests/vm/vm.sh run -- tests/demo.sh

# Throughput through the daemon vs v4l2-ctl directly, CPU per frame, RSS, size.
bench:
	$(Q)tests/deps.sh
	$(Q)$(MAKE) --no-print-directory $(DAEMON) $(B)/tests/vuvideo-front
	$(Q)tests/vm/vm.sh run -- bench/bench.sh
	$(Q)tests/vm/vm.sh run --multiplanar -- bench/bench.sh

# The same with a third daemon on DMABUF (build/dma, --memory=dmabuf, the
# frontend's memfds sealed) in the Debian sid kernel VM, which has
# /dev/udmabuf (as make check-dmabuf). vm.sh hands every VUV_* variable to
# the guest: VUV_BENCH_PATHS, VUV_BENCH_ROUNDS=1 for a shorter run. Under
# TCG on a busy machine a run takes longer than vm.sh's default 900 s.
BENCH_TIMEOUT ?= 3600
bench-dmabuf:
	$(Q)tests/deps.sh
	$(Q)$(MAKE) --no-print-directory dmabuf-build $(DAEMON) $(B)/tests/vuvideo-front
	$(Q)VUV_BENCH_PATHS="$(or $(VUV_BENCH_PATHS),mmap userptr dmabuf)" VUV_VM_KERNEL=sid \
		tests/vm/vm.sh run --timeout $(BENCH_TIMEOUT) -- bench/bench.sh
	$(Q)VUV_BENCH_PATHS="$(or $(VUV_BENCH_PATHS),mmap userptr dmabuf)" VUV_VM_KERNEL=sid \
		tests/vm/vm.sh run --multiplanar --timeout $(BENCH_TIMEOUT) -- bench/bench.sh

# ---- configuration targets ---------------------------------------------------
defconfig:
	$(Q)$(KCONFIG_AWK) -v mode=config Kconfig /dev/null > $(KCONFIG_CONFIG)
	@echo "wrote $(KCONFIG_CONFIG) with the defaults"

# configs/NAME_defconfig -> .config: decoder_defconfig, encoder_defconfig
%_defconfig: configs/%_defconfig
	$(Q)$(KCONFIG_AWK) -v mode=config Kconfig $< > $(KCONFIG_CONFIG)
	@echo "wrote $(KCONFIG_CONFIG) from $<"

olddefconfig:
	$(Q)$(KCONFIG_AWK) -v mode=config Kconfig $(CONFIG_FILE) > $(KCONFIG_CONFIG).tmp && \
		mv $(KCONFIG_CONFIG).tmp $(KCONFIG_CONFIG)
	@echo "wrote $(KCONFIG_CONFIG) (new options take their defaults)"

savedefconfig:
	$(Q)$(KCONFIG_AWK) -v mode=save Kconfig $(CONFIG_FILE) > defconfig
	@echo "wrote defconfig (only the options that differ from the defaults)"

menuconfig:
	$(Q)if command -v kconfig-mconf >/dev/null 2>&1; then \
		kconfig-mconf Kconfig; \
	elif python3 -c 'import menuconfig' >/dev/null 2>&1; then \
		python3 -m menuconfig Kconfig; \
	else \
		echo "menuconfig needs a Kconfig front end:" >&2; \
		echo "  apt-get install kconfig-frontends-nox   (kconfig-mconf)" >&2; \
		echo "  or: apt-get install python3-kconfiglib" >&2; \
		echo "or edit .config by hand and run 'make olddefconfig'." >&2; \
		exit 1; \
	fi
	$(Q)$(MAKE) --no-print-directory olddefconfig

# ---- install -------------------------------------------------------------------
# Not stripped (distributions strip themselves); install-strip does.
# The QEMU JSON descriptor only on request: QEMU's schema has no "video" type
# yet, and a libvirt that meets an unknown type fails its whole discovery.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
INITDIR ?= $(SYSCONFDIR)/init.d
# the script's name there (Yocto's update-rc.d wants a plain name)
INITSCRIPT ?= S50vhost-user-video
SYSTEMDUNITDIR ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/systemd/system,$(PREFIX)/lib/systemd/system)
UNITS := vhost-user-video.service vhost-user-video.socket vhost-user-video@.service
SUBST = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'

install: $(DAEMON)
	$(INSTALL) -D -m 0755 $(DAEMON) $(DESTDIR)$(BINDIR)/vhost-user-video
	$(INSTALL) -D -m 0644 doc/vhost-user-video.8 $(DESTDIR)$(MANDIR)/man8/vhost-user-video.8

install-qemu-json:
	$(INSTALL) -d $(DESTDIR)$(DATADIR)/qemu/vhost-user
	$(SUBST) doc/50-vhost-user-video.json > \
		$(DESTDIR)$(DATADIR)/qemu/vhost-user/50-vhost-user-video.json

# BusyBox/SysV init: the script and its defaults file (kept if present).
install-sysv:
	$(INSTALL) -d $(DESTDIR)$(INITDIR)
	sed -e 's|^BIN="/usr/bin/|BIN="$(BINDIR)/|' -e 's|"/etc/default/|"$(SYSCONFDIR)/default/|g' \
		contrib/init/S50vhost-user-video > $(DESTDIR)$(INITDIR)/$(INITSCRIPT)
	chmod 0755 $(DESTDIR)$(INITDIR)/$(INITSCRIPT)
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/default
	test -e $(DESTDIR)$(SYSCONFDIR)/default/vhost-user-video || \
		$(INSTALL) -m 0644 contrib/init/vhost-user-video.default \
			$(DESTDIR)$(SYSCONFDIR)/default/vhost-user-video

install-systemd:
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	for u in $(UNITS); do \
		$(SUBST) contrib/systemd/$$u > $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u; \
	done

install-strip: install
	$(STRIP) $(DESTDIR)$(BINDIR)/vhost-user-video

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/vhost-user-video $(DESTDIR)$(MANDIR)/man8/vhost-user-video.8 \
		$(DESTDIR)$(DATADIR)/qemu/vhost-user/50-vhost-user-video.json \
		$(DESTDIR)$(INITDIR)/$(INITSCRIPT) \
		$(UNITS:%=$(DESTDIR)$(SYSTEMDUNITDIR)/%)

clean:
	rm -rf build vhost-user-video

distclean: clean
	rm -f .config .config.tmp defconfig

help:
	@echo "vhost-user-video $(VERSION)"
	@echo "Build:   make [STATIC=0] [CROSS_COMPILE=aarch64-linux-musl-] [CC=..] [KERNEL_HEADERS=DIR] [V=1]"
	@echo "  all            the static daemon ./$(DAEMON) (default)"
	@echo "  check          install test deps (root), build, run unit + sanitizer + VM tests"
	@echo "  check-unit     unit tests only, no VM"
	@echo "  check-guest    the real Linux guest driver through QEMU (../shared/guest-driver/)"
	@echo "  check-arm      e2e decoder + encoder tests with the aarch64 daemon in an arm64 vicodec VM (TCG)"
	@echo "  check-dmabuf   DMABUF from guest memory on vicodec, in a Debian sid kernel VM"
	@echo "  demo           decode a clip through the daemon on vicodec in the test VM"
	@echo "  bench          decode/encode throughput through the daemon (MMAP, USERPTR) vs v4l2-ctl directly"
	@echo "  bench-dmabuf   the same with DMABUF too, in the Debian sid kernel VM (/dev/udmabuf)"
	@echo "  fuzz           libFuzzer on each target for FUZZ_SECONDS=$(FUZZ_SECONDS) (clang)"
	@echo "  fuzz-ci        libFuzzer on a fixed number of inputs per target, seed FUZZ_SEED (CI)"
	@echo "  fuzz-seeds     regenerate the seed corpora in tests/fuzz/corpus"
	@echo "  size           stripped sizes: full, decoder-only, encoder-only, aarch64"
	@echo "  tests          build the test programs into $(B)/tests"
	@echo "  install        daemon + man page; PREFIX=$(PREFIX) DESTDIR= BINDIR= MANDIR=; install-strip, uninstall"
	@echo "  install-sysv   contrib/init: S50vhost-user-video + /etc/default/vhost-user-video (INITDIR, SYSCONFDIR)"
	@echo "  install-systemd  contrib/systemd units (SYSTEMDUNITDIR)"
	@echo "  install-qemu-json  QEMU's vhost-user JSON descriptor (not by install: no \"video\" type in QEMU's schema yet)"
	@echo "  clean          remove build output; distclean also removes .config"
	@echo "Configure (no Kconfig tool needed):"
	@echo "  defconfig      .config with the defaults (KCONFIG_CONFIG=FILE for another file)"
	@echo "  decoder_defconfig, encoder_defconfig   a one-role build (configs/)"
	@echo "  olddefconfig   fill in missing options of .config with their defaults"
	@echo "  savedefconfig  write the options that differ from the defaults to ./defconfig"
	@echo "  menuconfig     interactive (kconfig-mconf or python3 -m menuconfig)"

.PHONY: FORCE all tests trimmed dmabuf-build tests-asan check check-unit check-guest check-arm arm64-tests check-dmabuf demo bench bench-dmabuf fuzz fuzz-ci \
	fuzz-seeds size defconfig olddefconfig savedefconfig menuconfig install install-qemu-json \
	install-sysv install-systemd install-strip uninstall clean distclean help

-include $(shell find $(B) -name '*.d' -type f 2>/dev/null)
