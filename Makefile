# The two commands a newcomer needs: `make run` and `make test`.
# Both install missing Debian packages first (scripts/deps.sh).
JOBS := $(shell nproc 2>/dev/null || echo 2)

.PHONY: run test build build-asan deps bench clean

run: build
	./build/lensroom serve

build:
	@scripts/deps.sh build
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build -j$(JOBS)
	@test -x build/lensroom

# Tests run against the ASan/UBSan build; the release build is compiled too
# so a broken `make run` cannot hide behind a green test run.
test: build
	@scripts/deps.sh test
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLR_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@test -x build-asan/lensroom
	@scripts/node-test-tools.sh
	cd build-asan && ctest --output-on-failure --timeout 600

bench: build
	@scripts/deps.sh bench
	bench/run.sh

clean:
	rm -rf build build-asan
