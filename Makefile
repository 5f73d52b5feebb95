# zo-edge front door: `make demo` and `make test` on a fresh Debian machine with Python 3.11.
# Both create .venv on first use and are quick no-ops for setup on later runs. `make test` installs the
# dev and ray extras (the sweep's Ray engine is tested on a local cluster).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# the firmware side: the Arm cross-compiler, newlib, QEMU, and clang (every library is also checked under clang)
TOOLCHAIN_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm clang
PYTEST_ARGS ?=

.PHONY: demo test test-all toolchain setup bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	@touch $(STAMP)

setup: $(STAMP)

# The firmware toolchain from Debian, when we are root and a part is missing. Without root it says what
# to install: the tests then skip the firmware checks (under CI=true they fail), the demo its QEMU stage.
toolchain:
	@if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null \
	    && command -v clang >/dev/null && [ -e /usr/lib/arm-none-eabi/newlib/libc.a ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(TOOLCHAIN_PACKAGES)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TOOLCHAIN_PACKAGES) >/dev/null 2>&1 \
	    || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TOOLCHAIN_PACKAGES) >/dev/null) \
	    || echo "note: could not install $(TOOLCHAIN_PACKAGES); firmware checks need them"; \
	else \
	    echo "note: the firmware toolchain is missing and we are not root (sudo apt-get install $(TOOLCHAIN_PACKAGES))"; \
	fi

demo: $(STAMP) toolchain
	$(BIN)/zo-edge demo

test: $(STAMP) toolchain
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

# Everything, the slow end-to-end tests included.
test-all: $(STAMP) toolchain
	$(BIN)/python -m pytest -q -n 2 -m "slow or not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
