# EZ-API control plane: build, run, test, bench.
# Release objects go to build/release, sanitized (test) objects to build/asan.

CC      ?= cc
SANITIZE ?=
WARN    := -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wpointer-arith -Wundef -Werror
CSTD    := -std=c11 -D_GNU_SOURCE
INCS    := -Icommon -Ifcgi-app -Ibackground -I/usr/include/postgresql -I/usr/include/hiredis -I/usr/include/cjson
LIBS    := -lfcgi -lpq -lhiredis -lcjson -linih -lzmq -lcrypto -lcurl -lpthread -lm

ifeq ($(SANITIZE),)
  BUILD  := build/release
  OPT    := -O2 -g
else
  BUILD  := build/asan
  OPT    := -O1 -g -fno-omit-frame-pointer -fsanitize=$(SANITIZE) -fno-sanitize-recover=all
endif
CFLAGS  := $(CSTD) $(WARN) $(OPT) $(INCS) $(EXTRA_CFLAGS)
LDFLAGS := $(OPT) $(EXTRA_LDFLAGS)

COMMON_SRC := $(wildcard common/*.c)
FCGI_SRC   := $(wildcard fcgi-app/*.c)
BG_SRC     := $(wildcard background/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
FCGI_OBJ   := $(FCGI_SRC:%.c=$(BUILD)/%.o)
BG_OBJ     := $(BG_SRC:%.c=$(BUILD)/%.o)
# Unit tests link the worker's objects too (router, request parsing), minus main.
FCGI_LIBOBJ := $(filter-out $(BUILD)/fcgi-app/main.o,$(FCGI_OBJ))
BG_LIBOBJ   := $(filter-out $(BUILD)/background/main.o,$(BG_OBJ))
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all build asan run stop test tsan unit e2e bench fuzz clean install-deps migrate \
        format format-check swagger

all: build

build: $(BUILD)/ezapi-fcgi $(BUILD)/ezapi-background $(BUILD)/bench-responder

asan:
	$(MAKE) SANITIZE=address,undefined build units

units: $(UNIT_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libcommon.a: $(COMMON_OBJ)
	ar rcs $@ $^

$(BUILD)/ezapi-fcgi: $(FCGI_OBJ) $(BUILD)/libcommon.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/ezapi-background: $(BG_OBJ) $(BUILD)/libcommon.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bench-responder: $(BUILD)/tests/bench/responder.o
	$(CC) $(LDFLAGS) -o $@ $^ -lfcgi -lpthread

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(FCGI_LIBOBJ) $(BG_LIBOBJ) $(BUILD)/libcommon.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka

-include $(shell find build -name '*.d' 2>/dev/null)

install-deps:
	scripts/install-deps

swagger:
	scripts/install-swagger

# Start the whole local stack in ./data (kept between runs).
run: install-deps swagger build
	scripts/stack start --dir data --build build/release

stop:
	scripts/stack stop --dir data

migrate:
	scripts/migrate

# Private stack on free ports, sanitized build, unit + end-to-end tests, always torn down.
test: install-deps swagger
	$(MAKE) SANITIZE=address,undefined build units
	scripts/run-tests

# The e2e suite against ThreadSanitizer builds of the servers (not part of `make test`:
# it doubles the run time). Any report fails the run (scripts/run-tests scans the logs).
tsan: install-deps swagger
	$(MAKE) SANITIZE=thread BUILD=build/tsan build
	TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0 suppressions=$(CURDIR)/tests/tsan.supp" \
		TEST_BUILD=build/tsan SKIP_UNIT=1 scripts/run-tests

bench: install-deps swagger build
	scripts/bench

fuzz: install-deps
	scripts/fuzz

format:
	clang-format -i common/*.[ch] fcgi-app/*.[ch] background/*.[ch] tests/unit/*.c tests/bench/*.c

format-check:
	clang-format --dry-run --Werror common/*.[ch] fcgi-app/*.[ch] background/*.[ch] tests/unit/*.c tests/bench/*.c

clean:
	rm -rf build
