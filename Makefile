# zkw — build, test, demo, bench, install.
#
# Everything is discovered by wildcard so a new module needs no Makefile edit:
#   broker/*.c (but main.c)  -> build/libzkw.a        (watcher + segment writer)
#   broker/main.c            -> build/zkw-broker
#   tools/zkw-*.c            -> build/zkw-*           (one tool per file)
#   client/cache.c           -> build/libzkw-cache.{a,so}  (liburcu reader cache)
#   client/reader.c          -> build/libzkw-client.so     (client.h for bindings)
#   tests/support/*.c        -> linked into every test
#   tests/test_*.c           -> build/tests/test_*    (cmocka binaries)
#   tools/bench/bench_*.c    -> build/bench/bench_*
#
# `make check` rebuilds everything under ASan+UBSan in build/asan and runs the
# suite again; `make tsan` does the same under ThreadSanitizer for the
# multi-threaded tests.

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-missing-field-initializers
CPPFLAGS += -D_GNU_SOURCE -DTHREADED -Iinclude -Ibroker -Itests/support -I/usr/include/x86_64-linux-gnu
CFLAGS   ?= -O2 -g
# Flags zkw needs whatever CFLAGS the command line gives.
ZKW_CFLAGS := -std=gnu11 -pthread -fPIC $(WARN) $(SANFLAGS) -MMD -MP
LDFLAGS  += -pthread $(SANFLAGS)
ZK_LIBS  := -lzookeeper_mt
URCU_LIBS := -lurcu-memb -lurcu-common
LDLIBS   += -lrt

BROKER_SRC  := $(filter-out broker/main.c,$(wildcard broker/*.c))
BROKER_OBJ  := $(BROKER_SRC:%.c=$(BUILD)/%.o)
CACHE_SRC   := $(wildcard client/cache.c)
CACHE_OBJ   := $(CACHE_SRC:%.c=$(BUILD)/%.o)
BINDING_SRC := $(wildcard client/reader.c)
SUPPORT_SRC := $(wildcard tests/support/*.c)
SUPPORT_OBJ := $(SUPPORT_SRC:%.c=$(BUILD)/%.o)
TOOL_SRC    := $(wildcard tools/zkw-*.c)
TOOLS       := $(TOOL_SRC:tools/%.c=$(BUILD)/%)
TEST_SRC    := $(wildcard tests/test_*.c)
TESTS       := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC   := $(wildcard tools/bench/bench_*.c)
BENCHES     := $(BENCH_SRC:tools/bench/%.c=$(BUILD)/bench/%)
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)

LIBZKW      := $(BUILD)/libzkw.a
LIBCACHE    := $(if $(CACHE_SRC),$(BUILD)/libzkw-cache.a $(BUILD)/libzkw-cache.so)
LIBBINDING  := $(if $(BINDING_SRC),$(BUILD)/libzkw-client.so)
PROGRAMS    := $(BUILD)/zkw-broker $(TOOLS)

.PHONY: all test check tsan demo bench soak fuzz install uninstall clean deps format
all: $(LIBZKW) $(LIBCACHE) $(LIBBINDING) $(PROGRAMS) $(TESTS) $(BENCHES)

deps:
	@tools/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(ZKW_CFLAGS) -c -o $@ $<

$(LIBZKW): $(BROKER_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/libzkw-cache.a: $(CACHE_OBJ)
	$(AR) rcs $@ $^

$(BUILD)/libzkw-cache.so: $(CACHE_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(URCU_LIBS) $(LDLIBS)

$(BUILD)/libzkw-client.so: $(BUILD)/client/reader.o
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/zkw-broker: $(BUILD)/broker/main.o $(LIBZKW)
	$(CC) $(LDFLAGS) -o $@ $^ $(ZK_LIBS) $(LDLIBS)

$(BUILD)/zkw-%: $(BUILD)/tools/zkw-%.o $(LIBZKW)
	$(CC) $(LDFLAGS) -o $@ $^ $(ZK_LIBS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(SUPPORT_OBJ) $(LIBZKW) $(LIBCACHE)
	$(CC) $(LDFLAGS) -o $@ $< $(SUPPORT_OBJ) $(LIBZKW) $(filter %.a,$(LIBCACHE)) -lcmocka $(ZK_LIBS) $(URCU_LIBS) $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/tools/bench/%.o $(LIBZKW) $(LIBCACHE)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBZKW) $(filter %.a,$(LIBCACHE)) $(ZK_LIBS) $(URCU_LIBS) $(LDLIBS)

# The test command of README.md and .ci/run.
test: deps
	@$(MAKE) --no-print-directory all
	@tests/run.sh $(BUILD)

check: deps
	@$(MAKE) --no-print-directory all BUILD=build/asan \
	    SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    tests/run.sh build/asan

tsan: deps
	@$(MAKE) --no-print-directory all BUILD=build/tsan CFLAGS="-O1 -g" SANFLAGS="-fsanitize=thread -Wno-tsan"
	@TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" ZKW_TSAN=1 tests/run.sh build/tsan

demo: deps
	@$(MAKE) --no-print-directory all
	@tools/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory all CFLAGS="-O2 -g"
	@tools/bench/run.sh $(BUILD) $(BENCH_ARGS)

soak: deps
	@$(MAKE) --no-print-directory all
	@tools/soak.sh $(BUILD) $(SOAK_ARGS)

fuzz: deps
	@tools/fuzz.sh $(FUZZ_SECONDS)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include/zkw $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 0755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 include/zkw/*.h $(DESTDIR)$(PREFIX)/include/zkw/
	install -m 0644 $(LIBZKW) $(LIBCACHE) $(LIBBINDING) $(DESTDIR)$(PREFIX)/lib/
	install -d $(DESTDIR)$(PREFIX)/share/zkw/python
	install -m 0644 client/python/zkw.py $(DESTDIR)$(PREFIX)/share/zkw/python/
	for pc in tools/*.pc.in; do [ -e "$$pc" ] || continue; \
	    sed -e 's|@PREFIX@|$(PREFIX)|g' "$$pc" > $(DESTDIR)$(PREFIX)/lib/pkgconfig/$$(basename "$$pc" .in); done

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(notdir $(PROGRAMS)))
	rm -rf $(DESTDIR)$(PREFIX)/include/zkw $(DESTDIR)$(PREFIX)/share/zkw
	rm -f $(DESTDIR)$(PREFIX)/lib/libzkw*.a $(DESTDIR)$(PREFIX)/lib/libzkw*.so $(DESTDIR)$(PREFIX)/lib/pkgconfig/zkw*.pc

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
