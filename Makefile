# The whole set-up on a fresh machine:  `make serve`  (install what serving needs, register the default, serve)
#                                       `make test`   (install with the dev tools, run the test suite)
# Serving on the CPU needs no torch, so `make serve` installs none on a machine without an NVIDIA GPU;
# `make install-torch` adds it for what needs it: a .pth checkpoint, training, the torch backends.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
# What `make serve` and `make build` use: a model store tag, the same knob as the service's
# PYRAMIDNET_MODEL (either spelling works). Empty: the embedded default, registered on first use
# under a version derived from its weights, so nothing else registered under its name is served
# in its place.
MODEL ?= $(PYRAMIDNET_MODEL)
# `make build BENTOFILE=bentofile.cpu.yaml`: the CPU bento (OpenVINO only, no torch).
BENTOFILE ?= bentofile.yaml
# BentoML's anonymous usage tracking is off for everything run from here (the bento sets it too).
export BENTOML_DO_NOT_TRACK := true

# The tag to use, in $$tag: MODEL, or the embedded default (registered if it is not yet).
resolve_model = tag="$(MODEL)"; \
	if [ -z "$$tag" ]; then out=$$($(BIN)/python scripts/save_model.py) || exit 1; \
	echo "$$out" >&2; tag=$$(echo "$$out" | head -n1); fi

.PHONY: install install-torch serve test test-fast lint build image loadtest data data-check

# Where nvidia-smi lists a GPU, serving runs a torch backend on it: `make serve` installs torch there.
GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && echo yes)

# uv installs every environment: the dev tools in 36 s where pip takes 84 s, both from empty caches
# (docs/performance.md, The test suite). It runs from a venv of its own; the environments are still made
# by `python -m venv`, so pip stays in them for your own use. uv reads none of pip's configuration: pip's
# find-links (where a machine may keep torch's CPU build, as this project's do) is passed on to it.
UV := .uv/bin/uv
FIND_LINKS ?= $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^.*find-links='\(..*\)'$$/\1/p" | head -n1)
uv_install = $(UV) pip install --python $(1)/bin/python --compile-bytecode $(foreach f,$(FIND_LINKS),--find-links $(f))

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install -q uv==0.13.10

install: $(VENV)/.serve

$(VENV)/.serve: pyproject.toml constraints.txt | $(UV)
	$(PYTHON) -m venv $(VENV)
	$(call uv_install,$(VENV)) -e '.$(if $(GPU),[torch])' -c constraints.txt
	touch $@

install-torch: $(VENV)/.torch

$(VENV)/.torch: $(VENV)/.serve
	$(call uv_install,$(VENV)) -e '.[torch]' -c constraints.txt
	touch $@

$(VENV)/.dev: pyproject.toml constraints.txt | $(UV)
	$(PYTHON) -m venv $(VENV)
	$(call uv_install,$(VENV)) -e '.[dev]' -c constraints.txt
	touch $@ $(VENV)/.serve $(VENV)/.torch $(VENV)/.loadtest

$(VENV)/.loadtest: $(VENV)/.serve
	$(call uv_install,$(VENV)) -e '.[loadtest]' -c constraints.txt
	touch $@

# README's load test: Locust (added to .venv) against the server of `make serve`, 32 users for
# DURATION, the figures in results/ (LOCUST_ARGS: more options, e.g. --cifar10 DIR).
HOST ?= http://127.0.0.1:$(PORT)
DURATION ?= 60s
loadtest: $(VENV)/.loadtest
	mkdir -p results
	$(BIN)/locust -f locustfile.py --headless --host $(HOST) -u 32 -r 8 -t $(DURATION) --csv results/locust $(LOCUST_ARGS)

serve: $(VENV)/.serve
	@$(resolve_model); echo "serving $$tag on port $(PORT)" >&2; \
	PYRAMIDNET_MODEL=$$tag exec $(BIN)/bentoml serve service:PyramidNetClassifier --port $(PORT)

# The custom resources' published schemas (KEDA, Prometheus Operator, Argo Rollouts) run on Node.js.
CRD_SCHEMAS := tests/crd_schemas
$(CRD_SCHEMAS)/node_modules: $(CRD_SCHEMAS)/package-lock.json
	npm ci --prefix $(CRD_SCHEMAS) --no-audit --no-fund
	touch $@

# checkov, the policy checks platform teams run on manifests, in a venv of its own: its pins
# (networkx, packaging, ...) would move the serving stack's.
CHECKOV := .checkov
$(CHECKOV)/.installed: | $(UV)
	$(PYTHON) -m venv $(CHECKOV)
	$(call uv_install,$(CHECKOV)) checkov==3.3.30
	touch $@

# CIFAR-10 for the tests: CIFAR10_DIR, else this project's copy beside the clone, else the official
# binary version that `make data` downloads (model_store.cifar10.default_source: the same order).
DATA := $(or $(CIFAR10_DIR),$(wildcard ../shared/data/cifar10),.data/cifar-10-binary.tar.gz)
CIFAR10_URL := https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
data: .data/cifar-10-binary.tar.gz

.data/cifar-10-binary.tar.gz:
	@mkdir -p .data
	@curl -fsL --retry 2 --connect-timeout 20 -o $@.part $(CIFAR10_URL) && mv $@.part $@ || { rm -f $@.part; \
	echo "make data: $(CIFAR10_URL) cannot be reached from here: download it where you can, then put it at $@ or set CIFAR10_DIR to it" >&2; exit 1; }

data-check:
	@test -e "$(DATA)" || { echo "make test needs CIFAR-10: run make data (the official binary version, about 170 MB), or set CIFAR10_DIR to it, its unpacked folder, or this project's layout (README, Set-up)" >&2; exit 1; }

# Also needs prometheus (with promtool) and hey, from Debian: .ci/run installs them. Two pytest-xdist workers
# of one thread each (tests/conftest.py) share the suite, the slowest tier first, a worker with nothing left
# taking tests from the other's queue; then the tests that measure time or load (marker `alone`) run with
# nothing beside them. docs/performance.md, The test suite, has the times.
test: data-check $(UV) $(VENV)/.dev $(CRD_SCHEMAS)/node_modules $(CHECKOV)/.installed
	$(BIN)/python -m pytest -n 2 --dist worksteal -m 'not alone and not container' tests/e2e tests/integration tests/unit
	$(BIN)/python -m pytest -m alone

# The unit tier alone, on two workers: no process, no socket.
test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -n 2 tests/unit

# Style and architecture: ruff's lint and format, and the import contracts in pyproject.toml.
lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

build: $(VENV)/.serve
	@$(resolve_model); PYRAMIDNET_MODEL=$$tag $(BIN)/bentoml build -f $(BENTOFILE)

# The bento of `make build`, containerized (Docker, else buildah) as
# $(REGISTRY)/<bento name>:<package version>-<model version>: the reference is the last line printed.
REGISTRY ?= localhost
image: $(VENV)/.serve
	@$(resolve_model); PYRAMIDNET_MODEL=$$tag scripts/build_image.sh $(BENTOFILE) $(REGISTRY)
