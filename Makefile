# Set-up and entry points. `make demo` and `make test` each create .venv and install what is missing.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
# The CPU build of torch must be installed before anything else: with no torch present, a bare
# torch requirement makes pip pick a multi-GB CUDA build. On a machine without a local CPU wheel use
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PIP := $(VENV)/bin/python -m pip
STAMP := $(VENV)/.bbdeploy-installed

.PHONY: setup system demo test test-fast clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(PIP) install --quiet "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bbdeploy models
	$(VENV)/bin/bbdeploy run --jobs 2

# system packages the tests need (headless Chromium for the HTML report), installed when missing
system:
	tools/install_system_packages.sh

# --dist worksteal: a worker that runs out of tests takes queued ones from the other, instead of
# idling while the other works through a chunk of two-minute exports alone (measured: 5 min of tail)
test: $(STAMP) system
	$(VENV)/bin/python -m pytest -q -n auto --dist worksteal

# your own loop: every test not marked long (@pytest.mark.long: the exports of the zoo, real-weight
# accuracy, QAT, whole pipelines, the wheel in a fresh venv)
test-fast: $(STAMP) system
	$(VENV)/bin/python -m pytest -q -n auto --dist worksteal -m "not long"

clean:
	rm -rf $(VENV) bbdeploy-out .pytest_cache
