# converge: the two commands a fresh machine needs are `make run` and `make test`.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
DATA_DIR ?= var/data

.PHONY: all deps configure build run test test-unit bench bench-log install package clean asan tsan

all: build

# Which packages scripts/install-deps installs (run, test or bench): each goal below asks for
# its own set, so `make run` installs only what building and running the server needs.
DEPS_SET ?= run
# Tests and benchmarks are built when their packages are installed (AUTO); the goals that need
# them require them (ON), so a missing package is a configure error, not a skipped target.
CONFIGURE_FLAGS ?=

deps:
	@scripts/install-deps $(DEPS_SET)

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCONVERGE_WERROR=ON $(CONFIGURE_FLAGS) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) $(BUILD_TARGETS)

# The main job: the sidecar on the embedded default storage.
run: build
	@scripts/run-main $(BUILD_DIR)/converge $(DATA_DIR)

# The whole suite: unit, simulation and integration tests (integration tests start
# their own PostgreSQL, nats-server and redis-server on loopback). The benchmarks are built
# too: their smoke test runs every `converge bench` workload briefly.
test test-unit: DEPS_SET = test
test test-unit: CONFIGURE_FLAGS = -DCONVERGE_BUILD_TESTS=ON -DCONVERGE_BUILD_BENCH=ON
test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

test-unit: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

# Peer systems side by side (converge bench all runs converge-bench, which starts nats-server
# and redis-server itself), then the conflict-resolution microbenchmarks (Google Benchmark).
bench: DEPS_SET = bench
bench: CONFIGURE_FLAGS = -DCONVERGE_BUILD_BENCH=ON
bench: BUILD_TARGETS = --target converge_cli converge_bench conflict_bench
bench: build
	@$(BUILD_DIR)/converge bench all
	@$(BUILD_DIR)/bench/conflict_bench

# The Debian package of the server (CPack, DEB): $(BUILD_DIR)/converge_<version>_<arch>.deb.
package: DEPS_SET = package
package: BUILD_TARGETS = --target converge_cli
package: build
	@cd $(BUILD_DIR) && cpack -G DEB >/dev/null && ls $(CURDIR)/$(BUILD_DIR)/*.deb

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
