# nicsim — two commands on a fresh Debian 12 machine (as root): `make demo`, `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the project needs: C++ toolchain for Verilator models, lz4/zlib for FST
# waveforms, clang/libbpf/bpftool for eBPF objects, PoCL for OpenCL kernels, iproute2 for
# veth/netns peers, ethtool for the kernel GSO/GRO oracles, ccache for Verilator's runtime
# library (compiled once instead of in every build).
APT_PACKAGES := g++ make ccache liblz4-dev zlib1g-dev clang-15 llvm-15 libbpf-dev bpftool \
	pocl-opencl-icd ocl-icd-opencl-dev iproute2 tcpdump ethtool
JOBS ?= 2

.PHONY: install demo test test-long synth bench lint clean readme-table

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install-debian.sh
	bash scripts/install-debian.sh $(APT_PACKAGES)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/nicsim demo
	$(BIN)/nicsim run scenarios/pmd-drop-64.toml --out out/pmd-drop-64
	$(BIN)/nicsim compare linux,netmap,pmd --app drop --cores 1..2 --duration-us 300 \
		--json out/compare/drop-64.json
	$(BIN)/nicsim compare xdp,af_xdp,linux,pmd --app drop --load 0.5,4,8 --duration-us 200 \
		--json out/compare/xdp-load.json

test: install
	NICSIM_HYPOTHESIS=ci $(BIN)/python -m pytest -n $(JOBS) --dist worksteal -m "not long" -q --durations=25

test-long: install
	$(BIN)/python -m pytest -n $(JOBS) --dist worksteal -q -m long

synth: install
	$(BIN)/nicsim synth-all --out benchmarks/results/synth.json

bench: install
	$(BIN)/python benchmarks/bench_engines.py
	$(BIN)/python benchmarks/bench_world.py
	$(BIN)/python benchmarks/bench_tso.py
	$(BIN)/python benchmarks/bench_lro.py
	$(BIN)/python benchmarks/bench_ebpf.py
	$(BIN)/python benchmarks/bench_toe.py
	$(BIN)/python benchmarks/bench_match_action.py
	$(BIN)/nicsim gpu bench

readme-table: install
	$(BIN)/python scripts/readme_table.py

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf build .pytest_cache
