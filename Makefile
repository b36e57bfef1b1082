# steeple — build, run, test, bench.
#
#   make            build build/steeple (installs missing Debian packages first)
#   make run        start a private PostgreSQL in var/ unless DATABASE_URL is set, then serve
#   make test       every spec: C unit tests, Lua unit specs, integration specs
#   make asan       the same objects built with ASan+UBSan into build/asan/
#   make asan-test  the C and integration specs against the ASan build
#   make valgrind-test  the integration specs under valgrind memcheck
#   make test-faults    the fault suite (spec/faults): faults injected under mixed load
#   make fuzz       every libFuzzer target (spec/fuzz) for FUZZ_SECONDS each (clang)
#   make bench      benchmarks (spec/bench); not part of make test

PKGS    := lua5.4 lua5.4-cjson libevent libevent_openssl libevent_pthreads libpq libsodium openssl
CC      ?= cc
CWARNS  := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wcast-align -Wwrite-strings \
           -Wmissing-prototypes -Wstrict-prototypes -Wformat=2 -Wno-unused-parameter
CFLAGS  ?= -O2 -g

.DEFAULT_GOAL := all

# The packages' flags are read only after vendor/install.sh has run: build/pkg.mk
# is a makefile of its own that make brings up to date first, then reads every
# makefile again. Nothing below may call pkg-config while this file is parsed.
ifeq ($(filter-out clean,$(or $(MAKECMDGOALS),all)),)
PKG_CFLAGS :=
PKG_LIBS   :=
else
include build/pkg.mk
endif
build/pkg.mk: vendor/packages.txt vendor/install.sh
	@bash vendor/install.sh
	@mkdir -p build
	@cflags=$$(pkg-config --cflags $(PKGS)) && \
	  libs=$$(pkg-config --libs $(filter-out lua5.4 lua5.4-cjson,$(PKGS))) && \
	  printf 'PKG_CFLAGS := %s\nPKG_LIBS := %s\n' "$$cflags" "$$libs" > $@.tmp && mv $@.tmp $@

ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(CWARNS) $(CFLAGS) $(PKG_CFLAGS)
# Lua is linked statically: its API calls are on every request's path.
LUA_STATIC := /usr/lib/x86_64-linux-gnu/liblua5.4-cjson.a /usr/lib/x86_64-linux-gnu/liblua5.4.a
LDLIBS  = $(LUA_STATIC) $(PKG_LIBS) -lpthread -lm -ldl

# Every core/*.c but main.c is part of the core; every spec/c/test_*.c is a test.
CORE_OBJS := $(patsubst core/%.c,%.o,$(filter-out core/main.c,$(sort $(wildcard core/*.c))))
MAIN_OBJ  := main.o
C_TESTS   := $(patsubst spec/c/%.c,%,$(sort $(wildcard spec/c/test_*.c)))

BUILD ?= build
OBJS  := $(addprefix $(BUILD)/obj/,$(CORE_OBJS))
BIN   := $(BUILD)/steeple

.SECONDARY:

.PHONY: FORCE all deps run test test-c test-unit test-integration test-faults fuzz asan asan-test valgrind-test bench clean lint

all: deps $(BIN)

deps:
	@bash vendor/install.sh

# Rebuild everything when the flags change.
$(BUILD)/flags.stamp: FORCE
	@mkdir -p $(BUILD)/obj
	@echo '$(CC) $(ALL_CFLAGS) $(LDFLAGS) $(LDLIBS)' | cmp -s - $@ || \
	  echo '$(CC) $(ALL_CFLAGS) $(LDFLAGS) $(LDLIBS)' > $@
FORCE:

$(BUILD)/obj/%.o: core/%.c $(BUILD)/flags.stamp
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/test_%.o: spec/c/test_%.c $(BUILD)/flags.stamp
	$(CC) $(ALL_CFLAGS) -Icore -MMD -MP -c $< -o $@

$(BIN): $(OBJS) $(BUILD)/obj/$(MAIN_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test_%: $(BUILD)/obj/test_%.o $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

-include $(wildcard $(BUILD)/obj/*.d)

run: all
	@bash scripts/run.sh

test: all $(addprefix $(BUILD)/,$(C_TESTS))
	@BUILD=$(BUILD) C_TESTS="$(C_TESTS)" bash spec/run.sh

test-c: all $(addprefix $(BUILD)/,$(C_TESTS))
	@BUILD=$(BUILD) C_TESTS="$(C_TESTS)" bash spec/run.sh c

test-unit:
	@bash spec/run.sh unit

test-integration: all
	@BUILD=$(BUILD) bash spec/run.sh integration

# The fault suite's load generator (libevent's HTTP client, libsodium signatures).
build/faults/loadgen: spec/faults/loadgen.c
	@mkdir -p build/faults
	$(CC) -std=c11 -D_GNU_SOURCE $(CWARNS) -O2 -g -o $@ $< $(shell pkg-config --cflags --libs libevent libsodium)

test-faults: all build/faults/loadgen
	@BUILD=$(BUILD) bash spec/run.sh faults

include spec/fuzz/fuzz.mk

fuzz: deps fuzz-run

ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" build/asan/steeple $(addprefix build/asan/,$(C_TESTS))

asan-test: asan
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  BUILD=build/asan C_TESTS="$(C_TESTS)" bash spec/run.sh c integration

# Integration specs with every server process under valgrind memcheck; the
# reports land in build/valgrind/ (empty files = no errors, no definite leaks).
# Valgrind runs the server 20-50x slower: the specs stretch their waits, the
# spool's deadline and the send timeout 10x (STEEPLE_SPEC_SLOW); specs that
# time the server itself may still fail there.
valgrind-test: all
	@rm -rf build/valgrind
	@BUILD=$(BUILD) STEEPLE_BIN_WRAPPER=scripts/valgrind-steeple STEEPLE_SPEC_SLOW=10 bash spec/run.sh integration; \
	  echo "valgrind reports with errors:"; grep -l . build/valgrind/*.log || echo "none"

bench: all
	@bash spec/bench/run.sh

lint:
	@luacheck lua spec

clean:
	rm -rf build
