# The whole set-up on a fresh machine:  `make serve`  (install, register the default, serve)
#                                       `make test`   (install, run the test suite)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= pyramidnet-cifar10:latest
PORT ?= 3000

.PHONY: install model serve test build

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	touch $@

# Register the embedded default unless the store already holds a model of that name.
model: install
	$(BIN)/bentoml models get $(MODEL) >/dev/null 2>&1 || $(BIN)/python scripts/save_model.py

serve: model
	$(BIN)/bentoml serve service:PyramidNetClassifier --port $(PORT)

test: install
	$(BIN)/python -m pytest

build: model
	$(BIN)/bentoml build
