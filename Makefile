# lagprobe Makefile
# SPDX-License-Identifier: BSD-2-Clause
#
#   make                  build/liblagprobe.a, build/examples/* and the
#                         plugin build/lagprobe.so (only
#                         builds: installs nothing)
#   make deps             scripts/deps.sh: installs the missing Debian
#                         packages (apt-get; SKIP_DEPS=1 skips it,
#                         EXTRA_DEPS adds packages)
#   make test             deps, check-compile, every build (in parallel),
#                         then, all at once: the tests plain, under
#                         ASan+UBSan, under TSan and under valgrind
#                         memcheck, the end-to-end scripts, the fuzz
#                         targets' regressions and FUZZ_CI_TIME s of
#                         fuzzing each; one line per binary as it ends,
#                         the five slowest, and last "N passed, N failed"
#   make check            deps, then the plain tests and the e2e smoke
#                         (CHECK_E2E): the edit-compile-test loop
#   make test-normal | test-asan | test-tsan   one variant
#   make test-valgrind    the normal build's tests under valgrind memcheck
#   make demo DEMO_ARGS=...                    deps, build and run examples/demo/
#   make plugin           build/lagprobe.so, lagprobe as a librdkafka plugin
#                         (README.md, "Zero-code mode")
#   make install [PREFIX=/usr/local] [DESTDIR=]   (the plugin too, in LIBDIR)
#
# CC, CXX, CPPFLAGS, CFLAGS, CXXFLAGS and LDFLAGS come from the caller;
# warnings are added through WARN (make WARN=-Wall keeps the warnings and
# drops -Werror). probe.c is always compiled as C11 by $(CC); only the C++
# examples and tests (*.cpp) use $(CXX). Only deps, demo, test and check
# run scripts/deps.sh; every other target only checks that the libraries it
# needs are there (pkg-config, stb_ds.h) and, when they are not, stops and
# says to run `make deps`.

PREFIX ?= /usr/local
# Plain "=": LIBRARY_PATH-style names come from the environment (gcc reads
# LIBRARY_PATH) and must not move the install. Override on the command line.
INCLUDEDIR = $(PREFIX)/include
LIBDIR = $(PREFIX)/lib
PKGCONFIGDIR = $(LIBDIR)/pkgconfig
DATADIR = $(PREFIX)/share
INSTALL ?= install

CFLAGS ?= -O2 -g
CXXFLAGS ?= -O2 -g
CSTD = -std=c11
CXXSTD = -std=c++11
WARN = -Wall -Wextra -Werror
PKG_CONFIG ?= pkg-config

# Recursively expanded on purpose: on a fresh machine the libraries only
# exist once deps has run, after the Makefile was read.
#
# Another librdkafka (or any other library) is found through PKG_CONFIG_PATH:
#   PKG_CONFIG_PATH=/opt/rdkafka/lib/pkgconfig make test
# Its headers are included as system headers (-isystem), so that a warning
# in them (librdkafka 2.15's rdkafka.h trips -Wignored-qualifiers) does not
# fail a -Werror build of ours. -I/usr/include and -I/usr/local/include are
# dropped: they are searched anyway, and as -isystem they would break g++'s
# #include_next in <cstdlib>. When pkg-config names a library directory
# (-L, which it prints only for a directory outside the linker's default
# path) programs we link get it as an rpath (RDKAFKA_RPATH, empty it to
# rely on LD_LIBRARY_PATH instead), so they run against that library.
pc_cflags = $(patsubst -I%,-isystem %,$(filter-out -I/usr/include \
	-I/usr/local/include,$(shell $(PKG_CONFIG) --cflags $(1))))
comma := ,
RDKAFKA_CFLAGS = $(call pc_cflags,rdkafka)
RDKAFKA_LIBS = $(shell $(PKG_CONFIG) --libs rdkafka)
RDKAFKA_RPATH = $(patsubst -L%,-Wl$(comma)-rpath$(comma)%,$(filter -L%,$(RDKAFKA_LIBS)))
# librdkafka's C++ wrapper, for examples/*.cpp and tests/test_*.cpp only;
# its rpath when it lives elsewhere than librdkafka.
RDKAFKACPP_CFLAGS = $(call pc_cflags,rdkafka++)
RDKAFKACPP_LIBS = $(shell $(PKG_CONFIG) --libs rdkafka++)
RDKAFKACPP_RPATH = $(filter-out $(RDKAFKA_RPATH),$(patsubst \
	-L%,-Wl$(comma)-rpath$(comma)%,$(filter -L%,$(RDKAFKACPP_LIBS))))
MHD_CFLAGS = $(call pc_cflags,libmicrohttpd)
MHD_LIBS = $(shell $(PKG_CONFIG) --libs libmicrohttpd)
CMOCKA_CFLAGS = $(call pc_cflags,cmocka)
CMOCKA_LIBS = $(shell $(PKG_CONFIG) --libs cmocka)
SYS_LIBS = -lpthread -lm

# "." stands for "#", which a make function call may take for a comment.
version_part = $(shell sed -n 's/^.define LAGPROBE_VERSION_$(1)  *\([0-9][0-9]*\).*/\1/p' probe.h)
LAGPROBE_MAJOR := $(call version_part,MAJOR)
LAGPROBE_MINOR := $(call version_part,MINOR)
LAGPROBE_PATCH := $(call version_part,PATCH)
LAGPROBE_VERSION := $(LAGPROBE_MAJOR).$(LAGPROBE_MINOR).$(LAGPROBE_PATCH)

BUILD = build
LIB = $(BUILD)/liblagprobe.a

EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLE_CXX_SRCS := $(wildcard examples/*.cpp)
CXX_EXAMPLES := $(patsubst examples/%.cpp,$(BUILD)/examples/%,$(EXAMPLE_CXX_SRCS))
# The demo is one program of several files (examples/demo/*.c).
DEMO_SRCS := $(wildcard examples/demo/*.c)
DEMO_OBJS := $(patsubst examples/demo/%.c,$(BUILD)/demo/%.o,$(DEMO_SRCS))
EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRCS)) \
	$(CXX_EXAMPLES) $(if $(DEMO_SRCS),$(BUILD)/examples/demo)

TEST_SRCS := $(wildcard tests/test_*.c)
TEST_NAMES := $(patsubst tests/%.c,%,$(TEST_SRCS))
TEST_CXX_SRCS := $(wildcard tests/test_*.cpp)
TEST_CXX_NAMES := $(patsubst tests/%.cpp,%,$(TEST_CXX_SRCS))
# Linked into every test binary when present.
TEST_HARNESS := $(wildcard tests/harness.c)
# Extra flags for one test: TEST_CFLAGS_NAME / TEST_LIBS_NAME (NAME as in
# test_output); none needs any today: every test reads JSON with the
# harness's h_json_parse().

.PHONY: all deps check-compile test test-normal test-asan test-tsan \
	test-build test-build-normal test-build-asan test-build-tsan \
	test-e2e test-build-e2e test-valgrind check \
	run-normal run-asan run-tsan run-valgrind run-e2e run-fuzz run-check-e2e \
	run-waves \
	demo install uninstall clean FORCE
.DELETE_ON_ERROR:
# Keep the intermediate objects of the test chains for incremental builds.
.SECONDARY:

all: $(LIB) $(EXAMPLES) $(PLUGIN)

FORCE:

# Recipe of a DIR/cmd file that records a command line. It is rewritten only
# when the text changes, so what depends on it is rebuilt after a change of
# compiler or flags (make CC=clang ...), and left alone otherwise.
record_cmd = @mkdir -p $(@D); t='$(subst ','\'',$(strip $(1)))'; \
	[ "$$t" = "$$(cat $@ 2>/dev/null)" ] || printf '%s\n' "$$t" > $@

# ---- dependencies --------------------------------------------------------
# Installing packages is `make deps` (scripts/deps.sh, apt-get), and the
# README's commands that start from a fresh machine, `make demo`, `make test`
# and `make check`, run it first. Every build rule depends (order-only) on
# deps; in any other make, deps installs nothing: it only checks that the
# libraries the goals need are found, so that a machine without them gets
# one line naming `make deps` instead of a pkg-config or compiler error.

INSTALLING_GOALS = deps demo test check
NEED_PKGS = rdkafka \
	$(if $(filter-out install uninstall check-compile fuzz% bench%,$(or $(MAKECMDGOALS),all)),libmicrohttpd) \
	$(if $(filter test% check,$(MAKECMDGOALS)),cmocka) \
	$(if $(filter bench%,$(MAKECMDGOALS)),libcjson jansson)
NEED_HEADERS = stb/stb_ds.h

ifneq ($(filter $(INSTALLING_GOALS),$(MAKECMDGOALS)),)
ifeq ($(SKIP_DEPS),1)
deps: ;
else
deps:
	@scripts/deps.sh $(EXTRA_DEPS)
endif
else
deps:
	@missing=; \
	for p in $(sort $(NEED_PKGS)); do \
		$(PKG_CONFIG) --exists $$p 2>/dev/null || missing="$$missing $$p"; done; \
	for h in $(NEED_HEADERS); do printf '\043include <%s>\n' $$h | \
		$(CC) $(CPPFLAGS) -E -x c - >/dev/null 2>&1 || missing="$$missing $$h"; done; \
	[ -z "$$missing" ] || { echo "lagprobe: not found:$$missing ($(PKG_CONFIG)," \
		"$(CC)). Run 'make deps' to install the Debian packages" \
		"(scripts/deps.sh), or point PKG_CONFIG_PATH and CPPFLAGS at them." >&2; exit 1; }
endif

# ---- library -------------------------------------------------------------

LIB_CC = $(CC) $(CPPFLAGS) $(CSTD) $(WARN) $(CFLAGS) $(RDKAFKA_CFLAGS)

$(BUILD)/cmd: FORCE | deps
	$(call record_cmd,$(LIB_CC))

$(BUILD)/probe.o: probe.c $(BUILD)/cmd | deps
	$(LIB_CC) -MMD -MP -c $< -o $@

$(LIB): $(BUILD)/probe.o
	rm -f $@
	$(AR) rcs $@ $^

# ---- examples ------------------------------------------------------------
# Each examples/NAME.c is one program, build/examples/NAME, linked with the
# library, librdkafka, pthread and libm. Each examples/NAME.cpp likewise,
# compiled and linked by $(CXX) with $(CXXFLAGS) and librdkafka's C++
# wrapper (rdkafka++); the library in it is still probe.c compiled as C11 by
# $(CC). Extra flags for one example: EXAMPLE_CFLAGS_NAME /
# EXAMPLE_LIBS_NAME. health* examples get libmicrohttpd.

EX_CC = $(CC) $(CPPFLAGS) -I. $(CSTD) $(WARN) $(CFLAGS) $(RDKAFKA_CFLAGS)
EX_LINK = $(LDFLAGS) $(RDKAFKA_RPATH) $(RDKAFKA_LIBS) $(SYS_LIBS)
EX_CXX = $(CXX) $(CPPFLAGS) -I. $(CXXSTD) $(WARN) $(CXXFLAGS) \
	$(RDKAFKACPP_CFLAGS) $(RDKAFKA_CFLAGS)
EX_CXX_LINK = $(LDFLAGS) $(RDKAFKA_RPATH) $(RDKAFKACPP_RPATH) \
	$(RDKAFKACPP_LIBS) $(RDKAFKA_LIBS) $(SYS_LIBS)

$(BUILD)/examples/health%: EX_CFLAGS = $(MHD_CFLAGS)
$(BUILD)/examples/health%: EX_LIBS = $(MHD_LIBS)

$(BUILD)/examples/cmd: FORCE | deps
	$(call record_cmd,$(EX_CC) $(EX_LINK) $(EX_CXX) $(EX_CXX_LINK))

$(BUILD)/examples/%: examples/%.c $(LIB) $(BUILD)/examples/cmd | deps
	$(EX_CC) $(EX_CFLAGS) $(EXAMPLE_CFLAGS_$(@F)) -MMD -MP -o $@ $< $(LIB) \
		$(EX_LIBS) $(EXAMPLE_LIBS_$(@F)) $(EX_LINK)

# A static pattern rule, so that it never competes with the C rule above.
$(CXX_EXAMPLES): $(BUILD)/examples/%: examples/%.cpp $(LIB) \
		$(BUILD)/examples/cmd | deps
	$(EX_CXX) $(EX_CFLAGS) $(EXAMPLE_CFLAGS_$(@F)) -MMD -MP -o $@ $< $(LIB) \
		$(EX_LIBS) $(EXAMPLE_LIBS_$(@F)) $(EX_CXX_LINK)

# The demo, build/examples/demo, from examples/demo/*.c: one object per
# file in build/demo/, so an edit recompiles one file.
$(DEMO_OBJS): $(BUILD)/demo/%.o: examples/demo/%.c $(BUILD)/examples/cmd | deps
	@mkdir -p $(@D)
	$(EX_CC) -MMD -MP -c $< -o $@

$(BUILD)/examples/demo: $(DEMO_OBJS) $(LIB) $(BUILD)/examples/cmd | deps
	$(EX_CC) -o $@ $(DEMO_OBJS) $(LIB) $(EX_LINK)

demo: $(BUILD)/examples/demo
	$(BUILD)/examples/demo $(DEMO_ARGS)

# ---- plugin ----------------------------------------------------------------
# make plugin: build/lagprobe.so, lagprobe as a librdkafka plugin
# (plugin.library.paths=...; README.md, "Zero-code mode"): probe.c and the
# front end in plugin/, compiled -fPIC with hidden visibility; the export
# map leaves conf_init() as its only dynamic symbol. It is linked with
# librdkafka so that the loader reuses the host's copy (same soname) even
# when that was loaded RTLD_LOCAL (Python extension modules).
# build/plugin/plugin_app: a plain consumer for the end-to-end tests, with
# -v for the vendored probe (linked with the normal build's probe.o);
# build/plugin/plugin_app_cpp: an RdKafka::KafkaConsumer, no probe.

PLUGIN = $(BUILD)/lagprobe.so
PLUGIN_DIR = $(BUILD)/plugin
PLUGIN_SRCS = $(wildcard plugin/*.c)
PLUGIN_OBJS = $(PLUGIN_DIR)/probe.o $(patsubst plugin/%.c,$(PLUGIN_DIR)/%.o,$(PLUGIN_SRCS))
PLUGIN_CC = $(CC) $(CPPFLAGS) $(CSTD) $(WARN) $(CFLAGS) -fPIC \
	-fvisibility=hidden $(RDKAFKA_CFLAGS)
PLUGIN_LINK = -shared -Wl,--version-script=plugin/exports.map -Wl,-z,defs \
	$(LDFLAGS) $(RDKAFKA_RPATH) $(RDKAFKA_LIBS) $(SYS_LIBS) -ldl

.PHONY: plugin
plugin: $(PLUGIN)

$(PLUGIN_DIR)/cmd: FORCE | deps
	$(call record_cmd,$(PLUGIN_CC) $(PLUGIN_LINK))

$(PLUGIN_DIR)/probe.o: probe.c $(PLUGIN_DIR)/cmd | deps
	$(PLUGIN_CC) -MMD -MP -c $< -o $@

$(PLUGIN_DIR)/%.o: plugin/%.c $(PLUGIN_DIR)/cmd | deps
	$(PLUGIN_CC) -MMD -MP -c $< -o $@

$(PLUGIN): $(PLUGIN_OBJS) plugin/exports.map
	$(CC) $(CFLAGS) -o $@ $(PLUGIN_OBJS) $(PLUGIN_LINK)

$(PLUGIN_DIR)/plugin_app: tests/plugin_app.c $(LIB) $(BUILD)/examples/cmd | deps
	@mkdir -p $(@D)
	$(EX_CC) -MMD -MP -o $@ $< $(LIB) $(EX_LINK)

# The same for the C++ wrapper, which duplicates the conf: no probe linked.
# --no-as-needed: it calls no C function itself, and without its own
# dependency on librdkafka that library would come through librdkafka++'s,
# found on the default path, not RDKAFKA_RPATH (another librdkafka).
$(PLUGIN_DIR)/plugin_app_cpp: tests/plugin_app_cpp.cpp $(BUILD)/examples/cmd | deps
	@mkdir -p $(@D)
	$(EX_CXX) -MMD -MP -o $@ $< -Wl,--no-as-needed $(EX_CXX_LINK)

# ---- compile checks --------------------------------------------------------
# The drop-in must compile cleanly with every compiler users have, and
# probe.h must parse as C++. The plugin front end (plugin/*.c) too.

CHECK_CCS = gcc clang
CHECK_CXXS = g++ clang++

check-compile: | deps
	@mkdir -p $(BUILD)/check
	@set -e; for cc in $(CHECK_CCS); do \
		echo "check-compile: $$cc $(CSTD) $(WARN) -c probe.c"; \
		$$cc $(CSTD) $(WARN) $(RDKAFKA_CFLAGS) -c probe.c -o $(BUILD)/check/probe-$$cc.o; \
		for f in $(PLUGIN_SRCS); do \
			echo "check-compile: $$cc $(CSTD) $(WARN) -fPIC -c $$f"; \
			$$cc $(CSTD) $(WARN) -fPIC -fvisibility=hidden $(RDKAFKA_CFLAGS) -c $$f \
				-o $(BUILD)/check/$$(basename $$f .c)-$$cc.o; \
		done; \
	done; \
	for cxx in $(CHECK_CXXS); do \
		echo "check-compile: $$cxx $(WARN) -fsyntax-only probe.h"; \
		echo '#include "probe.h"' | $$cxx -x c++ $(WARN) -fsyntax-only -I. $(RDKAFKA_CFLAGS) -; \
	done

# ---- tests -----------------------------------------------------------------
# Three variants of every tests/test_NAME.c, each in its own directory:
#   normal  build/test/NAME
#   asan    build/asan/NAME   -fsanitize=address,undefined
#   tsan    build/tsan/NAME   -fsanitize=thread (compiler: TSAN_CC)
# Each test is compiled with $(CFLAGS) -g -O1 -I. -Itests and linked with
# tests/harness.c (if present), probe.c compiled the same way (as an archive,
# so a white-box test may #include "../probe.c" instead), cmocka, librdkafka,
# pthread and libm. TSan needs the C11 threads shim in tests/harness.c:
# librdkafka's thrd_create()/mtx_lock() threads are otherwise unknown to it.
# Each tests/test_NAME.cpp gets the same three variants, compiled and linked
# by $(CXX) (TSan: TSAN_CXX) with $(CXXFLAGS), the same sanitizer flags and
# librdkafka's C++ wrapper; harness.c and probe.c stay C11 objects built by
# the C compiler of the variant, so the C++ binary has the threads shim too.

TEST_OPT = -g -O1
TSAN_CC ?= $(CC)
TSAN_CXX ?= $(CXX)

test_dir_normal = $(BUILD)/test
test_dir_asan = $(BUILD)/asan
test_dir_tsan = $(BUILD)/tsan
test_cc_normal = $(CC)
test_cc_asan = $(CC)
test_cc_tsan = $(TSAN_CC)
test_cxx_normal = $(CXX)
test_cxx_asan = $(CXX)
test_cxx_tsan = $(TSAN_CXX)
test_san_normal =
test_san_asan = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
# gcc warns (-Wtsan) that TSan does not model atomic_thread_fence, which
# probe.c's seqlocks use; the data they guard are atomics, so TSan still
# checks every access. clang has no such warning and rejects the option.
test_san_tsan = -fsanitize=thread $(shell $(TSAN_CC) -Werror -Wno-tsan -fsyntax-only -x c /dev/null 2>/dev/null && echo -Wno-tsan)
# The same for the C++ compiler of each variant.
test_xsan_normal = $(test_san_normal)
test_xsan_asan = $(test_san_asan)
test_xsan_tsan = -fsanitize=thread $(shell $(TSAN_CXX) -Werror -Wno-tsan -fsyntax-only -x c++ /dev/null 2>/dev/null && echo -Wno-tsan)

TEST_ASAN_OPTIONS ?= halt_on_error=1:detect_leaks=1
TEST_UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1
TEST_TSAN_OPTIONS ?= halt_on_error=1:second_deadlock_stack=1$(if $(wildcard tests/tsan.supp),:suppressions=$(CURDIR)/tests/tsan.supp)
test_env_normal =
test_env_asan = ASAN_OPTIONS='$(TEST_ASAN_OPTIONS)' UBSAN_OPTIONS='$(TEST_UBSAN_OPTIONS)'
test_env_tsan = TSAN_OPTIONS='$(TEST_TSAN_OPTIONS)'

RUN_TESTS = BUILD_DIR=$(BUILD) scripts/run-tests.sh

# Every C test binary is linked with scripts/cmocka_declared.c, which wraps
# cmocka's group runner to print how many tests the group holds before any
# filter (HR_FILTER and the like) drops some: scripts/run-tests.sh fails a
# binary that runs fewer tests than it declares.
TEST_DECLARED_LINK = -Wl,--wrap=_cmocka_run_group_tests

# Test binaries run at once per variant (scripts/run-tests.sh TEST_JOBS).
# They mostly wait on the mock cluster's timers (a group's first join alone
# takes 3 s in the mock), not on the CPU: measured with every binary under
# time(1) during a whole make test, all test binaries together used ~390 s
# of CPU in ~530 s on 2 cores, the load average staying near 3. So a
# variant takes about the sum of its binaries' times over its jobs: normal
# and asan run 4 at once each, tsan (alone in its wave) 6, valgrind 3 (its
# binaries serialise their threads on one core).
TEST_JOBS_normal ?= 4
TEST_JOBS_asan ?= 4
TEST_JOBS_tsan ?= 6
TEST_JOBS_valgrind ?= 3
TEST_JOBS_e2e ?= 2
# Binaries (or scripts) split over several processes (NAME=N, see
# scripts/run-tests.sh TEST_SHARDS) so that no binary holds up the end of
# its wave: test_diagnosis (~270 s per variant, its quiet-consumer tests
# alone 60 s and 20 s of steady traffic), test_headroom (~160 s) and
# test_outage (~120 s); make check sets its own.
TEST_SHARDS ?= test_diagnosis=3 test_headroom=2 test_outage=2
# Run at nice 10 (scripts/run-tests.sh TEST_NICE): they burn CPU and time
# nothing (a C++ CMake build; a 200k-message stress loop with generous
# bounds), while test_diagnosis's scenarios need the CPU at the right time.
TEST_NICE ?= e2e_cmake.sh test_concurrency
RUN_OPTS = TEST_SHARDS='$(TEST_SHARDS)' TEST_NICE='$(TEST_NICE)'

# $(1): variant name
define test_variant
$(1)_cxx_bins := $$(addprefix $$(test_dir_$(1))/,$$(TEST_CXX_NAMES))
$(1)_bins := $$(addprefix $$(test_dir_$(1))/,$$(TEST_NAMES)) $$($(1)_cxx_bins)
$(1)_harness := $$(patsubst tests/%.c,$$(test_dir_$(1))/%.o,$$(TEST_HARNESS))
$(1)_declared := $$(test_dir_$(1))/cmocka_declared.o
$(1)_cc = $$(test_cc_$(1)) $$(CPPFLAGS) -I. -Itests $$(CSTD) $$(WARN) \
	$$(CFLAGS) $$(TEST_OPT) $$(test_san_$(1)) $$(RDKAFKA_CFLAGS) $$(CMOCKA_CFLAGS)
$(1)_link = $$(test_cc_$(1)) $$(test_san_$(1)) $$(LDFLAGS) $$(RDKAFKA_RPATH)
$(1)_cxx = $$(test_cxx_$(1)) $$(CPPFLAGS) -I. -Itests $$(CXXSTD) $$(WARN) \
	$$(CXXFLAGS) $$(TEST_OPT) $$(test_xsan_$(1)) $$(RDKAFKACPP_CFLAGS) \
	$$(RDKAFKA_CFLAGS) $$(CMOCKA_CFLAGS)
$(1)_cxxlink = $$(test_cxx_$(1)) $$(test_xsan_$(1)) $$(LDFLAGS) \
	$$(RDKAFKA_RPATH) $$(RDKAFKACPP_RPATH)

$$(test_dir_$(1))/cmd: FORCE | deps
	$$(call record_cmd,$$($(1)_cc) $$($(1)_link) $$($(1)_cxx) $$($(1)_cxxlink))

$$(test_dir_$(1))/probe.o: probe.c $$(test_dir_$(1))/cmd | deps
	$$($(1)_cc) -MMD -MP -c $$< -o $$@

$$(test_dir_$(1))/liblagprobe.a: $$(test_dir_$(1))/probe.o
	rm -f $$@
	$$(AR) rcs $$@ $$^

$$(test_dir_$(1))/%.o: tests/%.c $$(test_dir_$(1))/cmd | deps
	@mkdir -p $$(@D)
	$$($(1)_cc) $$(TEST_CFLAGS_$$*) -MMD -MP -c $$< -o $$@

$$($(1)_declared): scripts/cmocka_declared.c $$(test_dir_$(1))/cmd | deps
	$$($(1)_cc) -MMD -MP -c $$< -o $$@

$$(test_dir_$(1))/test_%: $$(test_dir_$(1))/test_%.o $$($(1)_harness) \
		$$($(1)_declared) $$(test_dir_$(1))/liblagprobe.a $$(test_dir_$(1))/cmd
	$$($(1)_link) $$(TEST_DECLARED_LINK) -o $$@ $$(filter-out %/cmd,$$^) \
		$$(TEST_LIBS_test_$$*) $$(CMOCKA_LIBS) $$(RDKAFKA_LIBS) $$(SYS_LIBS)

# C++ tests: static pattern rules, never competing with the C rules above.
$$($(1)_cxx_bins:=.o): $$(test_dir_$(1))/%.o: tests/%.cpp \
		$$(test_dir_$(1))/cmd | deps
	@mkdir -p $$(@D)
	$$($(1)_cxx) $$(TEST_CFLAGS_$$*) -MMD -MP -c $$< -o $$@

$$($(1)_cxx_bins): $$(test_dir_$(1))/%: $$(test_dir_$(1))/%.o \
		$$($(1)_harness) $$($(1)_declared) $$(test_dir_$(1))/liblagprobe.a \
		$$(test_dir_$(1))/cmd
	$$($(1)_cxxlink) $$(TEST_DECLARED_LINK) -o $$@ $$(filter-out %/cmd,$$^) $$(TEST_LIBS_$$*) \
		$$(CMOCKA_LIBS) $$(RDKAFKACPP_LIBS) $$(RDKAFKA_LIBS) $$(SYS_LIBS)

test-build-$(1): $$($(1)_bins)

test-$(1): test-build-$(1)
	@$$(MAKE) --no-print-directory run-$(1)

# Runs what is built, builds nothing (make test runs these side by side).
run-$(1):
	@$$(test_env_$(1)) TEST_JOBS=$$(TEST_JOBS_$(1)) $$(RUN_OPTS) $$(RUN_TESTS) $(1) $$($(1)_bins)
endef

TEST_VARIANTS = normal asan tsan
$(foreach v,$(TEST_VARIANTS),$(eval $(call test_variant,$(v))))

# End-to-end scripts, tests/e2e_*.sh: TAP output, run once against the
# normal build's examples and library (build/examples/...,
# build/liblagprobe.a), never under sanitizers, and counted under the label
# "e2e" (one test per check line).
E2E_SCRIPTS := $(wildcard tests/e2e_*.sh)

# The plugin scripts (tests/e2e_plugin_*.sh) need the plugin, the programs of
# tests/plugin_app*.c* and the mock cluster process of bench/ (BENCH_DIR is defined further down).
test-build-e2e: $(EXAMPLES) $(PLUGIN) $(PLUGIN_DIR)/plugin_app \
	$(PLUGIN_DIR)/plugin_app_cpp $(BUILD)/bench/mock_broker

test-e2e: test-build-e2e
	@$(MAKE) --no-print-directory run-e2e

run-e2e:
	@TEST_JOBS=$(TEST_JOBS_e2e) $(RUN_OPTS) $(RUN_TESTS) --tap e2e $(E2E_SCRIPTS)

test-build: $(foreach v,$(TEST_VARIANTS),test-build-$(v)) test-build-e2e

# ---- valgrind ----------------------------------------------------------------
# The normal build's test binaries once more, under memcheck. A binary fails
# when memcheck reports an error or memory "definitely lost" (exit status
# 99; scripts/run-tests.sh also reads memcheck's summary and says which);
# "still reachable" and "possibly lost" memory does not count. librdkafka
# 2.0.2 needs no suppressions; tests/valgrind.supp, when it exists, is read,
# and is for librdkafka-internal noise only (each entry justified).
# memcheck serialises a binary's threads on one core and is ~20-50x slower
# per CPU second, but these tests mostly wait on the mock cluster's timers:
# wall time grows far less. --fair-sched=yes hands that core round-robin:
# with the default lock a thread that never blocks (a snapshot reader in a
# loop) starved the consumer and librdkafka for seconds. The tests detect
# valgrind (RUNNING_ON_VALGRIND) and widen their bounds on waits and on
# speed-dependent figures (h_slow() in tests/harness.h).
VALGRIND ?= valgrind
VALGRIND_OPTS = --tool=memcheck --error-exitcode=99 --leak-check=full \
	--errors-for-leak-kinds=definite --fair-sched=yes \
	$(if $(wildcard tests/valgrind.supp),--suppressions=$(CURDIR)/tests/valgrind.supp)
# Seconds per binary under valgrind (TEST_TIMEOUT of run-tests.sh): the
# slowest, test_headroom, takes under 3 minutes (about as long as natively:
# it waits on timers), so a hang fails after 10 minutes, not 15.
VALGRIND_TIMEOUT ?= 600
test_env_valgrind = TEST_WRAPPER='$(VALGRIND) $(VALGRIND_OPTS)' \
	TEST_TIMEOUT=$(VALGRIND_TIMEOUT)

test-valgrind: test-build-normal
	@$(MAKE) --no-print-directory run-valgrind

# At nice VALGRIND_NICE: memcheck keeps a core busy per binary, and when
# every suite runs at once (make test) the native binaries, which time the
# mock cluster's heartbeats and rebalances, must get the CPU first; valgrind
# soaks up the rest (its tests widen their waits, h_slow()).
VALGRIND_NICE ?= 5
run-valgrind:
	@$(test_env_valgrind) TEST_JOBS=$(TEST_JOBS_valgrind) $(RUN_OPTS) \
		BUILD_DIR=$(BUILD) nice -n $(VALGRIND_NICE) scripts/run-tests.sh valgrind $(normal_bins)

# ---- make test, make check ---------------------------------------------------
# make test builds everything first (BUILD_JOBS compilers at once), then
# runs every suite at the same time: the variants, valgrind, e2e and fuzz,
# each with its own TEST_JOBS binaries at once. Every suite runs even when
# another failed; the last line is the total over all of them and decides
# the exit status. Old counts go first, so a build failure cannot leave an
# earlier run's total behind (the times stay: each runner starts the
# binaries that took longest last time first). scripts/run-tests.sh prints
# one line per binary as it ends and, with --total, the five slowest.
BUILD_JOBS ?= $(shell n=$$(nproc 2>/dev/null) && echo $$((n + 1)) || echo 2)
TEST_SUITES = $(addprefix run-,$(TEST_VARIANTS)) run-valgrind run-e2e run-fuzz
# The native variants run in two waves next to valgrind, e2e and fuzz: with
# all three at once, 12 binaries timing the mock cluster's heartbeats,
# rebalances and producer bursts at the same time on 2 cores failed
# (test_diagnosis test_producer_burst, test_rebalance
# test_two_members_eager), while two waves still end before valgrind does.
TEST_WAVE1 ?= run-normal run-asan
TEST_WAVE2 ?= run-tsan

test: deps
	@rm -f $(BUILD)/*-logs/counts
	@$(MAKE) --no-print-directory -j$(BUILD_JOBS) check-compile test-build \
		fuzz-build fuzz-corpus
	@$(MAKE) --no-print-directory -k -j4 run-valgrind run-e2e run-fuzz run-waves || true
	@$(RUN_TESTS) --total $(patsubst run-%,%,$(TEST_SUITES))

# (Side by side through the shell: a -jN sub-make under make's jobserver
# only warns and resets it.)
run-waves:
	-@$(foreach t,$(TEST_WAVE1),$(MAKE) --no-print-directory $(t) & ) wait
	-@$(foreach t,$(TEST_WAVE2),$(MAKE) --no-print-directory $(t) & ) wait

# make check: the edit-compile-test loop. The plain build's tests, every
# binary at once and the slowest split over several processes
# (CHECK_SHARDS), side by side with the end-to-end smoke (CHECK_E2E: the
# Prometheus scrape of the health server, ~30 s); the same lines and total
# as make test. Not in it: the sanitizers, valgrind, the CMake/install
# e2e script and fuzzing (make test).
CHECK_E2E ?= $(wildcard tests/e2e_prometheus.sh)
CHECK_JOBS ?= 32
CHECK_SHARDS ?= test_headroom=5 test_diagnosis=7 test_faults=3 test_rebalance=2 test_lag=2 \
	test_outage=4 test_cpp=3 test_compat=2

check: deps
	@rm -f $(BUILD)/*-logs/counts
	@$(MAKE) --no-print-directory -j$(BUILD_JOBS) test-build-normal test-build-e2e
	@$(MAKE) --no-print-directory -k -j2 run-normal run-check-e2e \
		TEST_JOBS_normal=$(CHECK_JOBS) TEST_SHARDS='$(CHECK_SHARDS)' || true
	@$(RUN_TESTS) --total normal check-e2e

run-check-e2e:
	@TEST_JOBS=$(TEST_JOBS_e2e) $(RUN_TESTS) --tap check-e2e $(CHECK_E2E)

# ---- bench and fuzz --------------------------------------------------------
# make bench     builds bench/*.c (probe.c at -O2 -g, whatever CFLAGS say),
#                writes real statistics documents of 10, 1,000 and 10,000
#                partitions from the mock cluster (once; the last takes ~30 s),
#                runs every benchmark (a few minutes) and prints the table;
#                BENCHMARKS.md's table is rewritten from the run
#                (BENCH_WRITE=0: print only). BENCH_ARGS=--quick: fewer runs.
# make fuzz-ci   builds the libFuzzer targets (FUZZ_CC, clang), replays
#                fuzz/regressions/*, then fuzzes each target FUZZ_CI_TIME
#                seconds (30) from the seed corpus.
# make fuzz      the same for FUZZ_TIME seconds per target (600), or
#                FUZZ_RUNS executions when set. Findings: build/fuzz/artifacts.
# See BENCHMARKS.md and fuzz/README.md.

.PHONY: bench bench-build fuzz fuzz-ci fuzz-build fuzz-corpus test-fuzz

BENCH_DIR = $(BUILD)/bench
BENCH_OPT = -O2 -g
BENCH_CC = $(CC) $(CPPFLAGS) -I. $(CSTD) $(WARN) $(BENCH_OPT) $(RDKAFKA_CFLAGS)
BENCH_LINK = $(LDFLAGS) $(RDKAFKA_RPATH) $(RDKAFKA_LIBS) $(SYS_LIBS)
BENCH_WRAP = -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free
CJSON_CFLAGS = $(call pc_cflags,libcjson)
CJSON_LIBS = $(shell $(PKG_CONFIG) --libs libcjson)
JANSSON_CFLAGS = $(call pc_cflags,jansson)
JANSSON_LIBS = $(shell $(PKG_CONFIG) --libs jansson)
BENCH_BINS = $(addprefix $(BENCH_DIR)/,mock_broker gen_stats bench_consume \
	bench_stats bench_snapshot bench_memory bench_warn)
BENCH_DOCS = $(addprefix $(BENCH_DIR)/stats_,10.json 1000.json 10000.json)
BENCH_WRITE ?= 1

$(BENCH_DIR)/cmd: FORCE | deps
	$(call record_cmd,$(BENCH_CC) $(BENCH_LINK))

$(BENCH_DIR)/probe.o: probe.c $(BENCH_DIR)/cmd | deps
	$(BENCH_CC) -MMD -MP -c $< -o $@

# Programs on the public API, linked with probe.o (or without the probe).
$(BENCH_DIR)/mock_broker $(BENCH_DIR)/gen_stats: $(BENCH_DIR)/%: bench/%.c \
		$(BENCH_DIR)/cmd | deps
	$(BENCH_CC) -MMD -MP -o $@ $< $(BENCH_LINK)

$(BENCH_DIR)/bench_consume $(BENCH_DIR)/bench_warn: $(BENCH_DIR)/%: bench/%.c \
		$(BENCH_DIR)/probe.o $(BENCH_DIR)/cmd | deps
	$(BENCH_CC) -MMD -MP -o $@ $< $(BENCH_DIR)/probe.o $(BENCH_LINK)

# White-box programs: they #include "../probe.c".
$(BENCH_DIR)/bench_stats: bench/bench_stats.c probe.c $(BENCH_DIR)/cmd | deps
	$(BENCH_CC) $(CJSON_CFLAGS) $(JANSSON_CFLAGS) -MMD -MP -o $@ $< \
		$(BENCH_WRAP) $(CJSON_LIBS) $(JANSSON_LIBS) $(BENCH_LINK)

$(BENCH_DIR)/bench_memory: bench/bench_memory.c probe.c $(BENCH_DIR)/cmd | deps
	$(BENCH_CC) -MMD -MP -o $@ $< $(BENCH_WRAP),--wrap=strdup $(BENCH_LINK)

$(BENCH_DIR)/bench_snapshot: bench/bench_snapshot.c probe.c $(BENCH_DIR)/cmd | deps
	$(BENCH_CC) -MMD -MP -o $@ $< $(BENCH_LINK)

# Real statistics documents; rewritten only when gen_stats changes.
$(BENCH_DIR)/stats_%.json: $(BENCH_DIR)/gen_stats
	$(BENCH_DIR)/gen_stats -p $* -o $@

# The plugin too: bench_consume holds it against the vendored probe.
bench-build: $(BENCH_BINS) $(BENCH_DOCS) $(PLUGIN)

bench: bench-build
	python3 bench/run.py $(BENCH_DIR) \
		$(if $(filter 1,$(BENCH_WRITE)),--write BENCHMARKS.md) $(BENCH_ARGS)

FUZZ_DIR = $(BUILD)/fuzz
FUZZ_CC ?= clang
FUZZ_TIME ?= 600
FUZZ_CI_TIME ?= 30
FUZZ_RUNS ?=
FUZZ_TARGETS = stats render http
FUZZ_SAN = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer -fsanitize-coverage-ignorelist=fuzz/coverage.ignore
FUZZ_BUILD = $(FUZZ_CC) $(CPPFLAGS) -I. $(CSTD) $(WARN) -g -O2 $(FUZZ_SAN) \
	$(RDKAFKA_CFLAGS)
$(FUZZ_DIR)/cmd: FORCE | deps
	$(call record_cmd,$(FUZZ_BUILD))

# Per target: more functions left out of coverage instrumentation.
FUZZ_IGNORE_stats = -fsanitize-coverage-ignorelist=fuzz/coverage-stats.ignore

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_util.h fuzz/coverage.ignore \
		fuzz/coverage-stats.ignore probe.c probe.h plugin/http.c \
		plugin/plugin.h $(FUZZ_DIR)/cmd | deps
	$(FUZZ_BUILD) $(FUZZ_IGNORE_$*) -o $@ $< $(LDFLAGS) $(RDKAFKA_RPATH) \
		$(RDKAFKA_LIBS) $(SYS_LIBS)

# Seeds: real documents from the mock cluster, their truncations and
# mutations (fuzz/make_corpus.py) for stats and render, rewritten when the
# generator changes; fuzz_http starts from its regression inputs.
$(FUZZ_DIR)/seed.stamp: $(BENCH_DIR)/gen_stats $(BENCH_DIR)/stats_10.json \
		fuzz/make_corpus.py $(wildcard fuzz/regressions/http/*)
	rm -rf $(FUZZ_DIR)/seed $(FUZZ_DIR)/corpus
	mkdir -p $(FUZZ_DIR)/seed
	$(BENCH_DIR)/gen_stats -p 1 -o $(FUZZ_DIR)/seed/stats_p1.json
	$(BENCH_DIR)/gen_stats -p 4 -T 2 -o $(FUZZ_DIR)/seed/stats_t2p4.json
	cp $(BENCH_DIR)/stats_10.json $(FUZZ_DIR)/seed/stats_p10.json
	python3 fuzz/make_corpus.py $(FUZZ_DIR)/corpus/stats \
		$(FUZZ_DIR)/corpus/render $(FUZZ_DIR)/seed/*.json
	mkdir -p $(FUZZ_DIR)/corpus/http
	cp fuzz/regressions/http/* $(FUZZ_DIR)/corpus/http/
	touch $@

fuzz-build: $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))
fuzz-corpus: $(FUZZ_DIR)/seed.stamp

# fuzz/run.sh replays fuzz/regressions/TARGET/* and then fuzzes each target,
# printing TAP; make test counts it as the "fuzz" suite.
FUZZ_RUN = FUZZ_DIR=$(FUZZ_DIR) fuzz/run.sh

fuzz-ci: fuzz-build fuzz-corpus
	@$(FUZZ_RUN) -t $(FUZZ_CI_TIME) $(FUZZ_TARGETS)

fuzz: fuzz-build fuzz-corpus
	@$(FUZZ_RUN) $(if $(FUZZ_RUNS),-r $(FUZZ_RUNS),-t $(FUZZ_TIME)) $(FUZZ_TARGETS)

test-fuzz: fuzz-build fuzz-corpus
	@$(MAKE) --no-print-directory run-fuzz

# At the lowest priority: fuzzing is pure CPU for a fixed time, and under
# make test it shares the machine with tests that wait on timers.
run-fuzz:
	@FUZZ_DIR=$(FUZZ_DIR) FUZZ_TIME=$(FUZZ_CI_TIME) BUILD_DIR=$(BUILD) \
		nice -n 19 scripts/run-tests.sh --tap fuzz fuzz/run.sh

# ---- install ---------------------------------------------------------------
# probe.h goes to INCLUDEDIR/lagprobe/; probe.c and probe.h also go to
# DATADIR/lagprobe/ for vendoring. lagprobe.pc's Cflags name both
# INCLUDEDIR/lagprobe and INCLUDEDIR, so `#include <lagprobe/probe.h>` (the
# installed spelling) and `#include "probe.h"` (the vendored one) both work;
# tests/e2e_cmake.sh checks both.

# Paths under PREFIX are written relative to ${prefix} in the .pc file.
pc_path = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))

define LAGPROBE_PC
prefix=$(PREFIX)
libdir=$(call pc_path,$(LIBDIR))
includedir=$(call pc_path,$(INCLUDEDIR))

Name: lagprobe
Description: In-process Kafka consumer lag probe for librdkafka consumers
Version: $(LAGPROBE_VERSION)
Requires: rdkafka
Libs: -L$${libdir} -llagprobe $(SYS_LIBS)
Cflags: -I$${includedir}/lagprobe -I$${includedir}
endef
export LAGPROBE_PC

# Rewritten every time: it records PREFIX.
$(BUILD)/lagprobe.pc: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' "$$LAGPROBE_PC" > $@

install: $(LIB) $(PLUGIN) $(BUILD)/lagprobe.pc
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR)/lagprobe $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(DATADIR)/lagprobe
	$(INSTALL) -m 644 probe.h $(DESTDIR)$(INCLUDEDIR)/lagprobe/
	$(INSTALL) -m 644 probe.c probe.h $(DESTDIR)$(DATADIR)/lagprobe/
	$(INSTALL) -m 644 $(LIB) $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 755 $(PLUGIN) $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 644 $(BUILD)/lagprobe.pc $(DESTDIR)$(PKGCONFIGDIR)/

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/lagprobe/probe.h \
		$(DESTDIR)$(DATADIR)/lagprobe/probe.c \
		$(DESTDIR)$(DATADIR)/lagprobe/probe.h \
		$(DESTDIR)$(LIBDIR)/liblagprobe.a \
		$(DESTDIR)$(LIBDIR)/lagprobe.so \
		$(DESTDIR)$(PKGCONFIGDIR)/lagprobe.pc
	-rmdir $(DESTDIR)$(INCLUDEDIR)/lagprobe $(DESTDIR)$(DATADIR)/lagprobe 2>/dev/null

clean:
	rm -rf $(BUILD)

# Not build/examples/demo.d: a build tree from before the demo became
# examples/demo/ holds one that names examples/demo.c, which is gone.
-include $(filter-out $(BUILD)/examples/demo.d,$(wildcard $(BUILD)/*.d \
	$(BUILD)/*/*.d $(BUILD)/*/*/*.d))
