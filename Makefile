# The two commands of the README, and a few more. Every target installs what it needs
# from Debian's packages first (scripts/install-deps.sh is idempotent), configures into
# build/ and builds with -j2; binaries land in build/bin/.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= 2
CMAKE_FLAGS ?= -DXLSHARE_WARNINGS_AS_ERRORS=ON

.PHONY: all deps configure build test demo bench experiments clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j$(JOBS)

test: build
	cd $(BUILD_DIR) && ctest -j$(JOBS) --output-on-failure --timeout 600

demo: build
	$(BUILD_DIR)/bin/xlshare_demo $(if $(MODEL),--model $(MODEL),)

bench: build
	$(BUILD_DIR)/bin/xlshare_bench_link --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
	$(BUILD_DIR)/bin/xlshare_bench_cache --repeats 3
	$(BUILD_DIR)/bin/xlshare_bench_model --repeats 3

experiments: build
	$(BUILD_DIR)/bin/xlshare_experiments --out docs/results

clean:
	rm -rf $(BUILD_DIR)
