# Two commands on a fresh machine:  `make demo` (PILCO cart-pole swing-up) and `make test`.
# Each creates the virtual environment it needs in .venv, installing the CPU build of torch
# 2.13.0 first so that pip never resolves a CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: venv demo test docs bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==$(TORCH_VERSION)
	$(PY) -m pip install -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m wmrl pilco --task cartpole-swingup --seed 0 --out runs/cartpole-seed0

test: venv
	$(PY) -m ruff check wmrl tests benchmarks examples
	$(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html
	$(PY) -m pytest -q

docs: venv
	$(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

bench: venv
	$(PY) benchmarks/tasks.py

clean:
	rm -rf $(VENV) runs .pytest_cache
