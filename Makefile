# The two commands a newcomer needs: `make run` and `make test`.
# Both install missing Debian packages first (scripts/deps.sh).
# The builds are quiet: compiler output goes to $(BUILD)/build.log, shown
# only when something fails, so `make run` prints the server's own lines.
JOBS := $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
BUILD_ASAN ?= build-asan
CMAKE_ARGS ?= # more configure options, e.g. -DCMAKE_C_COMPILER=clang

# $(call quiet_build,DIR,CMAKE OPTIONS): configure and build DIR, output in
# DIR/build.log.
define quiet_build
	@mkdir -p $(1)
	@{ cmake -S . -B $(1) $(2) $(CMAKE_ARGS) && cmake --build $(1) -j$(JOBS); } >$(1)/build.log 2>&1 || { \
	  cat $(1)/build.log >&2; echo "make: building $(1) failed (log: $(1)/build.log)" >&2; exit 1; }
	@test -x $(1)/lensroom
endef

.PHONY: run test build build-asan deps bench clean

run: build
	@$(BUILD)/lensroom serve

# The run path: no test package is looked for (LENSROOM_TESTS=OFF).
build:
	@scripts/deps.sh build
	$(call quiet_build,$(BUILD),-DCMAKE_BUILD_TYPE=RelWithDebInfo -DLENSROOM_TESTS=OFF)

# Tests run against the ASan/UBSan build; the release build is compiled too
# so a broken `make run` cannot hide behind a green test run.
test: build
	@scripts/deps.sh test
	$(call quiet_build,$(BUILD_ASAN),-DCMAKE_BUILD_TYPE=Debug -DLR_SANITIZE=ON -DLENSROOM_TESTS=ON)
	@scripts/node-test-tools.sh
	cd $(BUILD_ASAN) && ctest --output-on-failure --timeout 600 -j2

bench: build
	@scripts/deps.sh bench
	bench/run.sh

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
