# SPDX-License-Identifier: Apache-2.0
# zkw - build, test, demo, bench, install, Debian packages.
#
# `make` builds the product only (no test framework needed); `make test`
# builds the tests and benchmarks too and runs the suite. Sources are found
# by wildcard, so a new file in a folder needs no edit here. Each part has
# its own include path, which is how the layout's rules are enforced:
#
#   broker/zk/       the ZooKeeper watch library  -> libzkw.a (exports watcher.h only)
#                    sees include/ and lib/: nothing about shared memory
#   broker/publish/  the segment writer            sees include/ only: nothing about ZooKeeper
#   broker/daemon/   zkw-broker                    sees include/, broker/ and lib/: wires zk to publish
#   client/          libzkw-cache.{a,so}, client/python/ -> libzkw-client.so
#                    see include/ only
#   lib/             internal helpers of the tools and tests (never installed)
#   tools/           zkw-push, zkw-inspect, zkw-example: see include/ and lib/
#   tests/           unit/ integration/ fault/ fuzz/ bench/, on tests/support/
#
# `make check` rebuilds everything under ASan+UBSan in build/asan and runs
# the suite again; `make tsan` does the same under ThreadSanitizer.

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc
OBJCOPY ?= objcopy
# The one version number: include/zkw/common.h. The .pc files, the man
# pages and debian/changelog (checked by tests/integration/test_install.sh)
# follow it.
ZKW_VERSION := $(shell sed -n 's/^\#define ZKW_VERSION "\([^"]*\)".*/\1/p' include/zkw/common.h)
# ABI major of libzkw-cache (cache.h), not the release: bump it, and the
# Debian package name libzkw-cache<N>, when a change breaks existing callers.
CACHE_SOVERSION := 0
CACHE_SONAME    := libzkw-cache.so.$(CACHE_SOVERSION)
MULTIARCH := $(or $(DEB_HOST_MULTIARCH),$(shell $(CC) -print-multiarch 2>/dev/null))
LIBDIR  ?= $(PREFIX)/lib$(if $(MULTIARCH),/$(MULTIARCH))
INCLUDEDIR ?= $(PREFIX)/include
BINDIR  ?= $(PREFIX)/bin
# zkw-broker is a system daemon: sbin, man section 8.
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(PREFIX)/share/man
# /etc for /usr, else $(PREFIX)/etc (GNU): the unit's --config follows it.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
# systemd reads units and sysusers.d from /usr/local/lib too.
UNITDIR ?= $(if $(filter /usr,$(PREFIX)),$(or $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null),/lib/systemd/system),$(PREFIX)/lib/systemd/system)
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
# Where python3 imports from: Debian's own directory for /usr, the versioned
# site directory for any other prefix (/usr/local/lib/python3.11/dist-packages).
PYTHON3_VERSION := $(shell /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PYTHONDIR ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/python3/dist-packages,$(PREFIX)/lib/python$(PYTHON3_VERSION)/dist-packages)

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-missing-field-initializers
CPPFLAGS += -D_GNU_SOURCE -DTHREADED
CFLAGS   ?= -O2 -g
# Flags zkw needs whatever CFLAGS the command line gives.
ZKW_CFLAGS := -std=gnu11 -pthread -fPIC $(WARN) $(SANFLAGS) -MMD -MP
LDFLAGS  += -pthread $(SANFLAGS)
# -lxxhash: the watch library checks chunked content (broker/zk/chunks.c).
ZK_LIBS  := -lzookeeper_mt -lxxhash
URCU_LIBS := -lurcu-memb -lurcu-common
DAEMON_LIBS := -linih
# broker/publish/: the state files' checksum (xxHash, state.c), the content
# checks (libyaml, validate.c; JSON is checked by validate.c itself).
PUBLISH_LIBS := -lxxhash -lyaml
# The tests' oracle only: json-c judges JSON beside validate.c.
TEST_ONLY_LIBS := -ljson-c
LDLIBS   += -lrt

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

ZK_SRC      := $(wildcard broker/zk/*.c)
PUBLISH_SRC := $(wildcard broker/publish/*.c)
DAEMON_SRC  := $(filter-out broker/daemon/main.c,$(wildcard broker/daemon/*.c))
LIB_SRC     := $(wildcard lib/*.c)
CACHE_SRC   := $(wildcard client/*.c)
PY_SRC      := $(wildcard client/python/*.c)
TOOL_SRC    := $(wildcard tools/zkw-*.c)
SUPPORT_SRC := $(wildcard tests/support/*.c)
TEST_SRC    := $(wildcard tests/unit/test_*.c tests/integration/test_*.c tests/fault/test_*.c tests/fuzz/test_*.c)
BENCH_SRC   := $(wildcard tests/bench/bench_*.c)
BENCH_LIB_SRC := $(filter-out $(BENCH_SRC),$(wildcard tests/bench/*.c))

# Internal archives: the raw objects of each part, for the programs and the
# tests (which may reach a part's internals through its folder).
ZK_A      := $(BUILD)/internal/libzk.a
PUBLISH_A := $(BUILD)/internal/libpublish.a
DAEMON_A  := $(BUILD)/internal/libdaemon.a
LIB_A     := $(BUILD)/internal/libhelpers.a
SUPPORT_A := $(BUILD)/internal/libsupport.a
BENCH_A   := $(BUILD)/internal/libbench.a

# The product.
LIBZKW     := $(BUILD)/libzkw.a
# libzkw-cache.so is the development link -> $(CACHE_SONAME) -> the real file.
CACHE_SO   := $(BUILD)/libzkw-cache.so.$(ZKW_VERSION)
LIBCACHE   := $(BUILD)/libzkw-cache.a $(CACHE_SO) $(BUILD)/$(CACHE_SONAME) $(BUILD)/libzkw-cache.so
LIBCLIENT  := $(BUILD)/libzkw-client.so
TOOLS      := $(patsubst tools/%.c,$(BUILD)/%,$(TOOL_SRC))
PROGRAMS   := $(BUILD)/zkw-broker $(TOOLS)
PRODUCT    := $(LIBZKW) $(LIBCACHE) $(LIBCLIENT) $(PROGRAMS)
TESTS      := $(patsubst %.c,$(BUILD)/tests/%,$(notdir $(TEST_SRC)))
BENCHES    := $(patsubst %.c,$(BUILD)/bench/%,$(notdir $(BENCH_SRC)))

# Include paths, one per part.
$(BUILD)/broker/zk/%.o:      INC := -Iinclude -Ilib
$(BUILD)/broker/publish/%.o: INC := -Iinclude
$(BUILD)/broker/daemon/%.o:  INC := -Iinclude -Ibroker -Ilib
$(BUILD)/client/%.o:         INC := -Iinclude
$(BUILD)/lib/%.o:            INC := -Iinclude -Ilib
$(BUILD)/tools/%.o:          INC := -Iinclude -Ilib
$(BUILD)/tests/%.o:          INC := -Iinclude -Ilib -Ibroker -Itests/support
$(BUILD)/tests/fuzz/%.o:     INC := -Iinclude -Ilib -Ibroker -Itests/support -Itests/fuzz
$(BUILD)/tests/bench/%.o:    INC := -Iinclude -Ilib -Ibroker -Itests/support -Itests/bench
# Libraries export only what their public header declares (ZKW_API).
$(BUILD)/broker/zk/%.o $(BUILD)/client/%.o: VISIBILITY := -fvisibility=hidden

.PHONY: all tests suite test check tsan demo bench soak fuzz install uninstall man deb deb-check clean deps format
all: $(PRODUCT)
tests: $(PRODUCT) $(TESTS) $(BENCHES)
# What the sanitizer runs need: the benchmarks (test_bench_quick.sh) run in
# make test only.
suite: $(PRODUCT) $(TESTS)
# Builds for the suite use every core (the rules are parallel-safe).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

deps:
	@tools/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC) $(CFLAGS) $(ZKW_CFLAGS) $(VISIBILITY) -c -o $@ $<

$(ZK_A): $(call obj,$(ZK_SRC))
$(PUBLISH_A): $(call obj,$(PUBLISH_SRC))
$(DAEMON_A): $(call obj,$(DAEMON_SRC))
$(LIB_A): $(call obj,$(LIB_SRC))
$(SUPPORT_A): $(call obj,$(SUPPORT_SRC))
$(BENCH_A): $(call obj,$(BENCH_LIB_SRC))
$(BUILD)/libzkw-cache.a: $(call obj,$(CACHE_SRC))
$(ZK_A) $(PUBLISH_A) $(DAEMON_A) $(LIB_A) $(SUPPORT_A) $(BENCH_A) $(BUILD)/libzkw-cache.a:
	@mkdir -p $(dir $@)
	@rm -f $@
	$(AR) rcs $@ $^

# libzkw.a: one relocatable object whose hidden symbols are made local, so
# the archive exports exactly the ZKW_API functions of watcher.h.
$(LIBZKW): $(call obj,$(ZK_SRC))
	$(LD) -r -o $(BUILD)/libzkw.o $^
	$(OBJCOPY) --localize-hidden $(BUILD)/libzkw.o
	@rm -f $@
	$(AR) rcs $@ $(BUILD)/libzkw.o

$(CACHE_SO): $(call obj,$(CACHE_SRC))
	$(CC) -shared $(LDFLAGS) -Wl,-soname,$(CACHE_SONAME) -o $@ $^ $(URCU_LIBS) $(LDLIBS)
$(BUILD)/$(CACHE_SONAME): $(CACHE_SO)
	ln -sfn $(notdir $<) $@
$(BUILD)/libzkw-cache.so: $(BUILD)/$(CACHE_SONAME)
	ln -sfn $(notdir $<) $@

$(LIBCLIENT): $(call obj,$(PY_SRC))
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/zkw-broker: $(call obj,broker/daemon/main.c) $(DAEMON_A) $(PUBLISH_A) $(LIB_A) $(LIBZKW)
	$(CC) $(LDFLAGS) -o $@ $^ $(ZK_LIBS) $(DAEMON_LIBS) $(PUBLISH_LIBS) $(LDLIBS)

$(TOOLS): $(BUILD)/%: $(BUILD)/tools/%.o $(LIB_A) $(LIBZKW)
	$(CC) $(LDFLAGS) -o $@ $^ $(ZK_LIBS) $(LDLIBS)

# Tests link the parts' raw objects (test hooks are hidden in libzkw.a).
TEST_LIBS := $(SUPPORT_A) $(DAEMON_A) $(PUBLISH_A) $(ZK_A) $(LIB_A) $(BUILD)/libzkw-cache.a
$(TESTS): $(TEST_LIBS)
$(BENCHES): $(BENCH_A) $(TEST_LIBS)
$(TESTS) $(BENCHES):
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(filter %.a,$^) -lcmocka $(ZK_LIBS) $(URCU_LIBS) $(DAEMON_LIBS) $(PUBLISH_LIBS) $(TEST_ONLY_LIBS) $(LDLIBS)
define test_rule
$(BUILD)/tests/$(notdir $(1:.c=)): $(call obj,$(1))
endef
$(foreach t,$(TEST_SRC),$(eval $(call test_rule,$(t))))
$(foreach b,$(BENCH_SRC),$(eval $(BUILD)/bench/$(notdir $(b:.c=)): $(call obj,$(b))))

# The test command of README.md and .ci/run.
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) tests
	@tests/run.sh $(BUILD)

ASAN_BUILD := BUILD=build/asan SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
check: deps
	@$(MAKE) --no-print-directory -j$(JOBS) suite $(ASAN_BUILD)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/support/lsan.supp UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ZKW_SOAK_SECONDS=$${ZKW_SOAK_SECONDS:-10} tests/run.sh build/asan

tsan: deps
	@$(MAKE) --no-print-directory -j$(JOBS) suite BUILD=build/tsan CFLAGS="-O1 -g" SANFLAGS="-fsanitize=thread -Wno-tsan"
	@TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/support/tsan.supp" ZKW_TSAN=1 \
	    ZKW_SOAK_SECONDS=$${ZKW_SOAK_SECONDS:-10} tests/run.sh build/tsan

demo: deps
	@$(MAKE) --no-print-directory all
	@tools/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory tests CFLAGS="-O2 -g"
	@tests/bench/run.sh $(BUILD) $(BENCH_ARGS)

soak: deps
	@$(MAKE) --no-print-directory tests
	@tests/fault/soak.sh $(BUILD) $(SOAK_ARGS)

fuzz: deps
	@tests/fuzz/run.sh $(FUZZ_SECONDS)

# Templates (*.in) get the paths of this install: the same tree installs
# under /usr/local by hand and under /usr in the Debian package.
SUBST = sed -e 's|@VERSION@|$(ZKW_VERSION)|g' -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'
PC_IN := $(wildcard pkgconfig/*.pc.in)

# Man pages: scdoc sources in man/, NAME.SECTION.scd.
MAN_SRC := $(wildcard man/*.scd)
MANPAGES := $(patsubst man/%.scd,$(BUILD)/man/%,$(MAN_SRC))
man: $(MANPAGES)
$(BUILD)/man/%: man/%.scd include/zkw/common.h
	@command -v scdoc >/dev/null || { echo "scdoc is missing: make deps (or apt-get install scdoc)" >&2; exit 1; }
	@mkdir -p $(dir $@)
	sed 's|@VERSION@|$(ZKW_VERSION)|g' $< | scdoc >$@.tmp && mv $@.tmp $@

# The Python module loads libzkw-client.so from its own directory: a private
# library of the module (its ABI is checked at load), not a system one.
# broker.conf is the operator's: installed only when absent, removed only
# when unchanged.
install: all man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(INCLUDEDIR)/zkw \
	    $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(PYTHONDIR) $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(SYSCONFDIR)/zkw
	install -m 0755 $(TOOLS) $(DESTDIR)$(BINDIR)/
	install -m 0755 $(BUILD)/zkw-broker $(DESTDIR)$(SBINDIR)/
	install -m 0644 include/zkw/*.h $(DESTDIR)$(INCLUDEDIR)/zkw/
	install -m 0644 $(LIBZKW) $(BUILD)/libzkw-cache.a $(CACHE_SO) $(DESTDIR)$(LIBDIR)/
	ln -sfn $(notdir $(CACHE_SO)) $(DESTDIR)$(LIBDIR)/$(CACHE_SONAME)
	ln -sfn $(CACHE_SONAME) $(DESTDIR)$(LIBDIR)/libzkw-cache.so
	for pc in $(PC_IN); do \
	    $(SUBST) "$$pc" >$(DESTDIR)$(LIBDIR)/pkgconfig/$$(basename "$$pc" .in) || exit 1; done
	install -m 0644 client/python/zkw.py $(LIBCLIENT) $(DESTDIR)$(PYTHONDIR)/
	for page in $(MANPAGES); do \
	    install -D -m 0644 "$$page" "$(DESTDIR)$(MANDIR)/man$${page##*.}/$${page##*/}" || exit 1; done
	$(SUBST) systemd/zkw-broker.service.in >$(DESTDIR)$(UNITDIR)/zkw-broker.service
	install -m 0644 systemd/zkw.sysusers $(DESTDIR)$(SYSUSERSDIR)/zkw.conf
	[ -e $(DESTDIR)$(SYSCONFDIR)/zkw/broker.conf ] || \
	    install -m 0644 etc/broker.conf $(DESTDIR)$(SYSCONFDIR)/zkw/broker.conf

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(TOOLS))) $(DESTDIR)$(SBINDIR)/zkw-broker
	rm -rf $(DESTDIR)$(INCLUDEDIR)/zkw
	rm -f $(addprefix $(DESTDIR)$(LIBDIR)/,libzkw.a libzkw-cache.a libzkw-cache.so $(CACHE_SONAME) $(notdir $(CACHE_SO)))
	rm -f $(patsubst pkgconfig/%.in,$(DESTDIR)$(LIBDIR)/pkgconfig/%,$(PC_IN))
	rm -f $(DESTDIR)$(PYTHONDIR)/zkw.py $(DESTDIR)$(PYTHONDIR)/libzkw-client.so $(DESTDIR)$(PYTHONDIR)/__pycache__/zkw.*.pyc
	for page in $(notdir $(MANPAGES)); do rm -f "$(DESTDIR)$(MANDIR)/man$${page##*.}/$$page"; done
	rm -f $(DESTDIR)$(UNITDIR)/zkw-broker.service $(DESTDIR)$(SYSUSERSDIR)/zkw.conf
	! cmp -s etc/broker.conf $(DESTDIR)$(SYSCONFDIR)/zkw/broker.conf || rm -f $(DESTDIR)$(SYSCONFDIR)/zkw/broker.conf
	rmdir $(DESTDIR)$(SYSCONFDIR)/zkw 2>/dev/null || true

# The Debian packages (debian/), built from a copy of the tracked and new
# files in $(BUILD)/deb, never in this tree: the packaging cleans and
# rebuilds. The .deb files land in $(BUILD)/deb.
DEB_DIR := $(BUILD)/deb
DEB_SRC := $(DEB_DIR)/zkw-$(ZKW_VERSION)
deb: deps
	@v=$$(dpkg-parsechangelog -l debian/changelog -S Version) && [ "$${v%%-*}" = "$(ZKW_VERSION)" ] || { \
	    echo "debian/changelog is at $$v, include/zkw/common.h at $(ZKW_VERSION): add an entry (dch -v $(ZKW_VERSION))" >&2; exit 1; }
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_SRC)
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	    git ls-files -z --cached --others --exclude-standard | \
	        xargs -0 sh -c 'for f; do [ -e "$$f" ] && printf "%s\0" "$$f"; done' sh | \
	        tar --null -T - -cf - | tar -C $(DEB_SRC) -xf -; \
	else tar --exclude=./build --exclude=./.git --exclude='./$(BUILD)' -cf - . | tar -C $(DEB_SRC) -xf -; fi
	cd $(DEB_SRC) && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL dpkg-buildpackage -b -us -uc
	@ls -l $(DEB_DIR)/*.deb

# `make deb`, then lintian on the result: no error, no warning.
deb-check: deb
	lintian --fail-on error,warning --display-info $(DEB_DIR)/*.changes

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD) -path $(DEB_DIR) -prune -o -type f -name '*.d' -print 2>/dev/null)
