# dpumesh — `make lab` brings up the emulated lab, `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := $(CURDIR)/.venv
STAMPS      := $(CURDIR)/.cache/stamps
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG  := $(CURDIR)/ansible.cfg
export CONTAINERS_CONF := $(CURDIR)/tools/podman/containers.conf
export PIP_DISABLE_PIP_VERSION_CHECK := 1

APT_HASH := $(shell sha256sum requirements/apt.txt | cut -c1-16)
PY_HASH  := $(shell cat pyproject.toml requirements/dev.txt requirements/constraints.txt | sha256sum | cut -c1-16)

.PHONY: help deps lab test image clean-venv lab-down bench

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMPS)/apt-$(APT_HASH):
	@mkdir -p $(STAMPS)
	tools/install-apt-packages requirements/apt.txt
	@touch $@

$(STAMPS)/venv-$(PY_HASH): $(STAMPS)/apt-$(APT_HASH)
	@mkdir -p $(STAMPS)
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -c requirements/constraints.txt -r requirements/dev.txt
	$(VENV)/bin/pip install -q -c requirements/constraints.txt --no-deps --no-build-isolation -e .
	$(VENV)/bin/ansible-galaxy collection install -r requirements.yml
	@touch $@

# Byte-compile the package and the plugins, as pip does for an installed package: the CLI and every Ansible
# fork then load them without compiling (even where PYTHONDONTWRITEBYTECODE is set). Python ignores a .pyc
# whose source changed since, so an edit is never masked; it only loads slower until the next make.
$(STAMPS)/bytecode: $(STAMPS)/venv-$(PY_HASH) $(shell find src plugins filter_plugins roles playbooks -name '*.py' -not -path '*/molecule/*')
	$(VENV)/bin/python -m compileall -q src plugins filter_plugins roles playbooks >/dev/null
	@touch $@

deps: $(STAMPS)/venv-$(PY_HASH) $(STAMPS)/bytecode  ## install apt packages, the pinned venv and collections

image: deps  ## build the molecule test image (only when its recipe changed)
	tools/build-test-image

lab: deps  ## bring up the emulated DPU lab (ansible-playbook -i inventories/lab playbooks/site.yml)
	ansible-playbook -i inventories/lab playbooks/site.yml

lab-down: deps  ## remove everything the lab created
	dpumesh lab down

test: deps image  ## lint, unit, behaviour, molecule and lab end-to-end tests
	tools/run-test-suite

# Extra flags per benchmark, e.g. make bench BENCH_SCALE_FLAGS="--fractions 0.125,0.25 --max-seconds 600"
BENCH_MEMORY_FLAGS ?=
BENCH_SCALE_FLAGS  ?=
BENCH_LAB_FLAGS    ?=
BENCH_LATENCY_FLAGS ?=
bench: deps  ## run every benchmark: JSON in benchmarks/results, plots in docs/benchmarks (docs/benchmarks.md)
	@status=0; \
	python -m benchmarks.memory $(BENCH_MEMORY_FLAGS) || status=1; \
	python -m benchmarks.compiler_scale $(BENCH_SCALE_FLAGS) || status=1; \
	python -m benchmarks.playbook $(BENCH_LAB_FLAGS) || status=1; \
	python -m benchmarks.latency $(BENCH_LATENCY_FLAGS) || status=1; \
	exit $$status

clean-venv:
	rm -rf $(VENV) $(STAMPS)
