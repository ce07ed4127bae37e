# Every target creates the virtual environment on first use, so a fresh clone needs only Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint check bench soak tools crds image image-push kind-up kind-e2e kind-down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole pipeline on this machine: embedded broker, the two reference nodes, one bridge each.
run: $(STAMP)
	$(BIN)/resonance up $(RUN_ARGS)

# helm first (a second when present): the chart's tests must run for everyone, not skip.
# Two workers, a test file each at a time (each worker starts its own broker and API server): the
# tests mostly wait on real servers (about a fifth of two cores over the run), so two halve the time.
TEST_WORKERS ?= -n 2 --dist loadfile
test: $(STAMP) tools
	$(BIN)/python -m pytest -ra $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

# The relay benchmark (~5 minutes; BENCH_ARGS=--quick: a one-minute smoke run, results to /tmp),
# with the bench extra: mq-bridge as a contender and the plot. Then, with RESONANCE_KUBE_LITE (a
# kube-lite script), the operator with 1,000 nodes (~2 minutes), also into bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/relay.py $(BENCH_ARGS)
	@if [ -n "$$RESONANCE_KUBE_LITE" ] && [ -z "$(findstring --quick,$(BENCH_ARGS))" ]; then \
	  $(BIN)/python bench/operator_scale.py --results bench/RESULTS.md; \
	else echo "operator at scale: skipped (set RESONANCE_KUBE_LITE, and no --quick)"; fi

# The fault tests at their long sizes (20,000 messages each way; SOAK_SECONDS a long fault, default
# 60; the operator restarted under 3,000 nodes; about 20 minutes in all), outside CI; prints the
# README's Guarantees table. Needs
# RESONANCE_KUBE_LITE for the operator's.
SOAK_SECONDS ?= 60
soak: $(STAMP) tools
	rm -f bench/soak.jsonl
	RESONANCE_SOAK=long RESONANCE_SOAK_SECONDS=$(SOAK_SECONDS) RESONANCE_SOAK_RESULTS=bench/soak.jsonl \
	  $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=1200 tests/bridge/test_soak.py tests/bridge/test_broker_faults.py \
	  tests/bridge/test_standby.py \
	  tests/operator/test_faults.py tests/operator/test_failover.py tests/operator/test_scale.py \
	  tests/operator/test_refusals.py
	$(BIN)/python bench/soak_table.py bench/soak.jsonl

# helm into .tools/bin (hadolint and kubernetes-validate come with the dev extra).
tools: $(STAMP)
	$(BIN)/python scripts/tools.py

# The CRD lives in the operator package (its model reads the defaults from it); crds/ and the chart
# hold copies, and a test fails when they differ.
crds:
	cp operator/resonance_operator/resonancenodes.yaml crds/resonancenodes.yaml
	cp operator/resonance_operator/resonancenodes.yaml charts/resonance/crds/resonancenodes.yaml

# Where Docker exists: the one image of every resonance process, and pushing it to your registry
# (make image image-push IMAGE=registry.example.com/team/resonance:0.1.0).
image:
	docker build -t $(or $(IMAGE),resonance:dev) .

image-push:
	docker push $(or $(IMAGE),$(error set IMAGE=registry/repository:tag))

# A local cluster with kind (needs docker, kind, kubectl, helm): up, end-to-end check, down.
kind-up:
	HELM=$(or $(shell command -v helm),.tools/bin/helm) scripts/kind-up.sh

kind-e2e:
	scripts/kind-e2e.sh

kind-down:
	scripts/kind-down.sh

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
