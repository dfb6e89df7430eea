# Wyvern workbench. `make demo` runs the notebook workflow on this machine,
# `make test` runs every test, `make test-fast` the quick part of them (unit tests and the
# quick integration modules, under 3 minutes). All set up what they need first.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
COLLECTION_LINK := collections/ansible_collections/wyvern/workbench
PYTEST ?= $(BIN)/pytest
PYTEST_ARGS ?=
# Per-test results and times for CI (JUnit XML); pytest also prints the slowest tests.
TEST_REPORTS ?= tests/output
JUNIT = --junitxml=$(TEST_REPORTS)/junit-$@.xml

.PHONY: setup host venv test-deps collection demo test test-fast test-unit test-integration \
        test-molecule test-e2e lint bench bench-playbook bench-notebook build clean gpu-check

setup: host venv collection

# `make setup` needs only the control node (Python, ssh, rsync) and says what the local
# target would still need; demo requires the local target, the tests their tools besides.
SETUP_HOST_FLAGS ?=
demo bench-playbook bench-notebook: SETUP_HOST_FLAGS = --local
test test-fast test-unit test-integration test-molecule test-e2e test-deps: SETUP_HOST_FLAGS = --tests

host:
	@scripts/setup-host.sh $(SETUP_HOST_FLAGS)

# The control node needs Ansible and the AWS and Docker SDKs, nothing else: the notebook
# and PyTorch run in the container. PyTorch and the test tools come with `make test`.
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

test-deps: host $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml workload/pyproject.toml
	$(BIN)/pip install --quiet -e '.[workload,test]' -e ./workload
	@touch $@

collection: $(COLLECTION_LINK)

$(COLLECTION_LINK):
	@mkdir -p $(dir $@)
	@ln -sfn ../../.. $@

demo: setup
	ansible-playbook site.yml
	ansible-playbook playbooks/run.yml

test: setup test-deps lint
	$(PYTEST) $(JUNIT) $(PYTEST_ARGS)

# The developer loop: unit tests and the quick integration modules (tests/conftest.py
# lists them); no lint, Molecule, end to end, notebook image or model training.
test-fast: setup test-deps
	$(PYTEST) -m fast $(JUNIT) $(PYTEST_ARGS)

test-unit: setup test-deps
	$(PYTEST) -m unit $(JUNIT) $(PYTEST_ARGS)

test-integration: setup test-deps
	$(PYTEST) -m integration $(JUNIT) $(PYTEST_ARGS)

test-molecule: setup test-deps
	$(PYTEST) -m molecule $(JUNIT) $(PYTEST_ARGS)

test-e2e: setup test-deps
	$(PYTEST) -m e2e $(JUNIT) $(PYTEST_ARGS)

# ansible-test sanity (validate-modules, ansible-doc, compile, symlinks) with the packages
# of the test extras; scripts/sanity.py says why it does not let ansible-test install them.
lint: setup test-deps
	yamllint -s .
	ansible-lint
	ruff check .
	ruff format --check .
	$(BIN)/python scripts/sanity.py

bench: setup test-deps
	$(BIN)/python -m transfer_learning bench --json

bench-playbook: setup test-deps
	$(BIN)/python scripts/bench_playbook.py

bench-notebook: setup test-deps
	$(BIN)/python scripts/bench_notebook.py

# On a machine with an NVIDIA GPU and its own torch (no setup: nothing is installed).
gpu-check:
	scripts/gpu_check.sh

build: collection
	ansible-galaxy collection build --force

clean:
	rm -rf collections outputs .pytest_cache .ruff_cache wyvern-workbench-*.tar.gz
