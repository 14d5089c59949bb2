# Meridian — the two commands of the README, plus build and bench.
#   make run    install what is missing, build, start PostgreSQL + meridiand locally
#   make test   install what is missing, build (also with ASan/UBSan), run every test
#   make bench  the benchmarks of bench/ (not tests)
BUILD      ?= build
ASAN_BUILD ?= build-asan
CMAKE_GEN  := -G Ninja

.PHONY: all deps build build-asan test run bench clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo

$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DMERIDIAN_SANITIZE=ON

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD)

build-asan: deps $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD)

# The release build is compiled too (warnings are errors in both); the
# suite runs on the sanitizer build, integration tests included.
test: build build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure --timeout 900 $(CTEST_ARGS)

run: build
	@scripts/run-local.sh $(BUILD)

bench: build
	@bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
