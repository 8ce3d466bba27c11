# Two commands do all set-up:  make train [DATA=path]  and  make test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= cifar10
RECIPE ?= default
ARGS ?=

.PHONY: setup train test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# uv installs the pinned set in a fraction of pip's time (with pip's indexes and constraints); pip if it fails
	$(BIN)/python -m pip install --quiet uv==0.13.9 && \
	  $(BIN)/python -m uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt \
	    $$($(BIN)/python scripts/uv_args.py) || \
	  $(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

train: setup
	$(BIN)/cnnmode train --recipe $(RECIPE) data.path=$(DATA) $(ARGS)

test: setup
	$(BIN)/python -m pytest -n auto --dist loadfile  # one worker per core, each with its share of threads

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
