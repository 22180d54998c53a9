# Thin wrapper over CMake + CTest. `make demo` and `make test` are the two
# setup commands of the README: both install missing Debian packages first.
BUILD ?= build
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
PREFIX ?= /usr/local

.PHONY: all deps configure test bench bench-peers demo install fuzz clean

all: configure
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@bash scripts/deps.sh

configure: deps
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

test: all
	cd $(BUILD) && OMP_WAIT_POLICY=passive ctest --output-on-failure -j $(JOBS)

bench: all
	bash bench/run.sh $(BUILD)

# graft side by side with llama.cpp, llama2.c's run.c and PyTorch, each when present
# (bench/README.md, "Peers"); PEERS_ARGS="--runs 7 --threads 2" etc.
PEERS_ARGS ?=
bench-peers: all
	python3 bench/peers.py --build $(BUILD) $(PEERS_ARGS)

demo: all
	bash scripts/demo.sh $(BUILD)

# bin/graft, lib/libgraft.a, lib/libgraft.so*, include/graft.h, lib/pkgconfig/graft.pc
install: all
	cmake --install $(BUILD) --prefix $(PREFIX)

# Every libFuzzer harness in fuzz/ for FUZZ_SECONDS each (clang, ASan + UBSan;
# scripts/fuzz.sh). FUZZ_SECONDS=5 is CI's smoke.
FUZZ_SECONDS ?= 60
fuzz:
	@GRAFT_FUZZ_DEPS=1 bash scripts/deps.sh
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD)
