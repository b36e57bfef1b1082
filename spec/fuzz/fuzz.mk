# spec/fuzz/fuzz.mk — libFuzzer targets (see spec/fuzz/README).
#
# Included by the Makefile after CORE_OBJS, CWARNS, PKGS and LUA_STATIC are
# defined (its prerequisites are expanded when this file is read).
#
#   make fuzz-build                    every build/fuzz/fuzz_<name>
#   make fuzz-run [FUZZ_SECONDS=10]    each target on a copy of its seed corpus;
#                                      fails on any crash, leak or timeout
#
# The core objects are compiled again with clang into build/fuzz/obj/, with
# coverage instrumentation and ASan+UBSan, so a fuzz build never touches
# build/ or build/asan/.

FUZZ_TARGETS := jwt webhook json spool spool_record config request csv
FUZZ_SECONDS ?= 10
FUZZ_DIR     := build/fuzz

FUZZ_CC := $(shell command -v clang-14 >/dev/null 2>&1 && echo clang-14 || echo clang)
# CWARNS is written for gcc; drop the flags clang lacks or reads differently:
# gcc's -Wcast-align is silent on x86 (only strict-alignment targets), clang's
# warns everywhere (gcc's -Wcast-align=strict), so it is left out here.
FUZZ_GCC_ONLY := -Wcast-align -Wlogical-op -Wduplicated-cond -Wduplicated-branches -Wjump-misses-init \
                 -Wformat-signedness -Wformat-overflow=% -Wformat-truncation=% -Wstringop-%
FUZZ_CWARNS   = $(filter-out $(FUZZ_GCC_ONLY),$(CWARNS))
FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS    = -std=c11 -D_GNU_SOURCE $(FUZZ_CWARNS) -g -O1 $(FUZZ_SAN) $(PKG_CFLAGS)
FUZZ_LDLIBS    = $(LDLIBS)

FUZZ_OBJS := $(addprefix $(FUZZ_DIR)/obj/,$(CORE_OBJS))
FUZZ_BINS := $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))

.PHONY: fuzz-build fuzz-run fuzz-flags

fuzz-build: $(FUZZ_BINS)

# Rebuild when the flags change. A phony prerequisite, not FORCE: under the
# Makefile's bare .SECONDARY: a missing FORCE file does not make the stamp out
# of date, so its recipe would never run again.
$(FUZZ_DIR)/flags.stamp: fuzz-flags
	@mkdir -p $(FUZZ_DIR)/obj
	@echo '$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_LDLIBS)' | cmp -s - $@ || \
	  echo '$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_LDLIBS)' > $@

$(FUZZ_DIR)/obj/%.o: core/%.c $(FUZZ_DIR)/flags.stamp
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_DIR)/obj/fuzz_%.o: spec/fuzz/fuzz_%.c spec/fuzz/fuzz_util.h $(FUZZ_DIR)/flags.stamp
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Icore -MMD -MP -c $< -o $@

FUZZ_LINK = $(FUZZ_CC) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -o $@ $^ $(FUZZ_LDLIBS)

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/fuzz_%.o $(FUZZ_OBJS)
	$(FUZZ_LINK)

# The spool's targets link only what they test: fuzz_spool the spool's files
# (core/spool*.c) and the logger, fuzz_spool_record the record format alone.
FUZZ_SPOOL_OBJS := $(addprefix $(FUZZ_DIR)/obj/,$(filter spool%.o,$(CORE_OBJS)) log.o)

$(FUZZ_DIR)/fuzz_spool: $(FUZZ_DIR)/obj/fuzz_spool.o $(FUZZ_SPOOL_OBJS)
	$(FUZZ_LINK)

$(FUZZ_DIR)/fuzz_spool_record: $(FUZZ_DIR)/obj/fuzz_spool_record.o $(FUZZ_DIR)/obj/spool_record.o
	$(FUZZ_LINK)

-include $(wildcard $(FUZZ_DIR)/obj/*.d)

# One line per target; the run fails if any target stopped on a finding.
fuzz-run: fuzz-build
	@mkdir -p $(FUZZ_DIR)/artifacts $(FUZZ_DIR)/logs; \
	failed=""; \
	for t in $(FUZZ_TARGETS); do \
	  rm -rf $(FUZZ_DIR)/corpus/$$t; mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	  cp spec/fuzz/corpus/$$t/* $(FUZZ_DIR)/corpus/$$t/ 2>/dev/null; \
	  d=$$t; [ $$t = webhook ] && d=json; \
	  dict=""; [ -f spec/fuzz/$$d.dict ] && dict="-dict=spec/fuzz/$$d.dict"; \
	  log=$(FUZZ_DIR)/logs/$$t.log; \
	  $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 -timeout=10 \
	    -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- $$dict \
	    $(FUZZ_DIR)/corpus/$$t >$$log 2>&1; \
	  rc=$$?; \
	  execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$log | tail -n 1); \
	  speed=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$log | tail -n 1); \
	  cov=$$(grep -o 'cov: [0-9]* ft: [0-9]*' $$log | tail -n 1); \
	  if [ $$rc -eq 0 ]; then \
	    printf 'fuzz_%-8s ok    %s execs (%s/s), %s\n' $$t "$${execs:-?}" "$${speed:-?}" "$$cov"; \
	  else \
	    printf 'fuzz_%-8s FAIL  exit %s after %s execs; see %s and %s\n' $$t $$rc \
	      "$${execs:-?}" $$log "$$(ls -t $(FUZZ_DIR)/artifacts/$$t-* 2>/dev/null | head -n 1)"; \
	    grep -m 3 -E 'ERROR|SUMMARY|runtime error' $$log | sed 's/^/    /'; \
	    failed="$$failed $$t"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz-run: findings in:$$failed"; exit 1; fi
