# The two commands of the README, and a few more. Every target installs what it needs
# from Debian's packages first (scripts/install-deps.sh is idempotent), configures into
# build/ and builds with -j2; binaries land in build/bin/.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= 2
# The build of `make` is tuned for this machine (XLSHARE_NATIVE); installable builds are not.
NATIVE ?= ON
CMAKE_FLAGS ?= -DXLSHARE_WARNINGS_AS_ERRORS=ON

.PHONY: all deps configure build test demo bench experiments fuzz sanitize format format-check clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DXLSHARE_NATIVE=$(NATIVE) $(CMAKE_FLAGS)

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
	$(BUILD_DIR)/bin/xlshare_bench_verify --repeats 3

experiments: build
	$(BUILD_DIR)/bin/xlshare_experiments --out docs/results

# libFuzzer targets built with clang (ASan + UBSan), each run for FUZZ_SECONDS over its
# corpus; new crashers land in build-fuzz/ and belong in tests/fuzz/regressions/.
FUZZ_SECONDS ?= 60
fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DXLSHARE_BUILD_FUZZERS=ON -DXLSHARE_BUILD_BENCH=OFF -DXLSHARE_BUILD_EXAMPLES=OFF
	cmake --build build-fuzz -j$(JOBS) --target fuzz_gguf fuzz_safetensors fuzz_pool_attach fuzz_cli fuzz_tokenizer
	for t in fuzz_gguf fuzz_safetensors fuzz_pool_attach fuzz_cli fuzz_tokenizer; do \
	  mkdir -p build-fuzz/corpus/$$t && cp -n tests/fuzz/corpus/$$t/* build-fuzz/corpus/$$t/ ; \
	  (cd build-fuzz && ./bin/$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 corpus/$$t) || exit 1; \
	done

# The sanitizer runs of CI: every test under ASan + UBSan, the concurrency tests under TSan.
# Under TSan, UCX's memory-event hooks (libucm patches madvise when it is loaded, and glibc
# calls madvise as a thread exits) crash TSan's runtime, in every program linked with UCX,
# so the TSan runs set UCX_MEM_EVENTS=no (xlshare registers the one region it serves
# explicitly and needs no registration cache).
sanitize: deps
	cmake --preset asan-ubsan
	cmake --build --preset asan-ubsan
	cd build-asan && ctest -j$(JOBS) --output-on-failure --timeout 900 -E "^(bench|experiments)\\."
	cmake --preset tsan
	cmake --build build-tsan -j$(JOBS) --target xlshare_cache_tests xlshare_engine_tests xlshare_reliability_tests xlshare_model_tests xlshare xlshare_remote_tests
	cd build-tsan && UCX_MEM_EVENTS=no TSAN_OPTIONS=halt_on_error=1 ./bin/xlshare_cache_tests && UCX_MEM_EVENTS=no TSAN_OPTIONS=halt_on_error=1 ./bin/xlshare_engine_tests --gtest_filter='EngineTest.Threads*:EngineTest.Caching*:Serving.*' && UCX_MEM_EVENTS=no TSAN_OPTIONS=halt_on_error=1 ./bin/xlshare_reliability_tests --gtest_filter='ReadVerification.*' && UCX_MEM_EVENTS=no TSAN_OPTIONS=halt_on_error=1 ./bin/xlshare_model_tests --gtest_filter='ComputeTeam.*' && UCX_MEM_EVENTS=no TSAN_OPTIONS=halt_on_error=1 ./bin/xlshare_remote_tests

# Every C++ file formatted as .clang-format says (clang-format 14, Debian 12's): `make
# format` rewrites them, `make format-check` (run by .ci/run) fails on any difference.
FORMAT_FILES = find include src tools bench tests examples -name '*.cpp' -o -name '*.hpp' -o -name '*.h'
format: deps
	$(FORMAT_FILES) | xargs clang-format -i
format-check: deps
	$(FORMAT_FILES) | xargs clang-format --dry-run --Werror

clean:
	rm -rf $(BUILD_DIR)
