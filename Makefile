# The two commands: `make demo` and `make test`. Both create or reuse the virtualenv .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU wheel on this machine's disk; GPU users install their own torch build before `make`.
TORCH_PIN ?= torch==2.13.0
# Project-local scratch so nothing leaks into ~/.cache or /tmp (DeepSpeed JIT, torchelastic, TorchServe).
export TMPDIR := $(CURDIR)/.tmp
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions

.PHONY: demo test venv clean

$(VENV)/.installed: pyproject.toml
	@mkdir -p $(TMPDIR)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh

test: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .tmp .cache demo-out runs
