# converge: the two commands a fresh machine needs are `make run` and `make test`.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
DATA_DIR ?= var/data

.PHONY: all deps configure build run test test-unit bench bench-log install clean asan tsan

all: build

deps:
	@scripts/install-deps

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCONVERGE_WERROR=ON $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# The main job: the sidecar on the embedded default storage.
run: build
	@scripts/run-main $(BUILD_DIR)/converge $(DATA_DIR)

# The whole suite: unit, simulation and integration tests (integration tests start
# their own PostgreSQL, nats-server and redis-server on loopback).
test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

test-unit: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

# Peer systems side by side (converge bench all starts nats-server and redis-server itself),
# then the conflict-resolution microbenchmarks (Google Benchmark).
bench: build
	@$(BUILD_DIR)/converge bench all
	@$(BUILD_DIR)/bench/conflict_bench

asan:
	@$(MAKE) test BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo CMAKE_FLAGS=-DCONVERGE_SANITIZE=address

# The whole suite under ThreadSanitizer, like asan (integration tests start their sanitized
# child binaries and their own servers); long on a small machine.
tsan:
	@$(MAKE) test BUILD_DIR=build-tsan BUILD_TYPE=RelWithDebInfo CMAKE_FLAGS=-DCONVERGE_SANITIZE=thread

install: build
	@cmake --install $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR) build-asan build-tsan
