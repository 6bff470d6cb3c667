# hf_bridge — `make run` and `make test` install whatever is missing first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(abspath $(VENV))/bin/python
MIX_ENV ?= test

# The Hub is optional: local data needs no network, and without this flag
# `datasets` retries an unreachable Hub for tens of seconds per call.
export HF_HUB_OFFLINE ?= 1
export HF_BRIDGE_PYTHON := $(PY)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PY_STAMP  := $(VENV)/.stamp-install
NODE_DIR  := tests/interop/node
NODE_STAMP := $(NODE_DIR)/node_modules/.stamp-install

.PHONY: help run test test-python test-elixir bench install python elixir node proto clean

help:
	@echo "make run    - install what is missing, then stream the bundled dataset into Elixir"
	@echo "make test   - install what is missing, then run every Python and Elixir test"
	@echo "make bench  - run the benchmarks (bench/), print ratios against baselines"

## ---- installation ---------------------------------------------------------

$(PY_STAMP): pyproject.toml proto/hf_bridge/v1/hf_bridge.proto
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	$(PY) -m py_worker.wire --force
	@touch $@

python: $(PY_STAMP)
proto: python

elixir:
	@if ! command -v mix >/dev/null 2>&1 || \
	    ! erl -noshell -eval 'halt(case {code:which(ssl), code:which(httpc)} of {non_existing, _} -> 1; {_, non_existing} -> 1; _ -> 0 end)' >/dev/null 2>&1; then \
	  echo "==> installing Elixir and Erlang/OTP from Debian"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq elixir erlang-dev erlang-ssl erlang-inets erlang-os-mon >/dev/null; \
	fi
	@mix --version | tail -n 1

$(NODE_STAMP): $(NODE_DIR)/package.json
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	cd $(NODE_DIR) && npm install --no-audit --no-fund --loglevel=error
	@touch $@

node: $(if $(wildcard $(NODE_DIR)/package.json),$(NODE_STAMP))

install: python elixir node

## ---- the two commands -----------------------------------------------------

run: install
	$(PY) -m py_worker.demo

# Both suites run even when the first fails; the exit status reports either.
test: install
	@$(MAKE) --no-print-directory -k test-python test-elixir

test-python: python
	$(PY) -m pytest -q tests

test-elixir: python elixir node
	@if [ -f elixir_client/mix.exs ]; then \
	  cd elixir_client && mix format --check-formatted && MIX_ENV=test mix test; \
	else echo "elixir_client: no mix project yet"; fi

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) py_worker/_gen elixir_client/_build $(NODE_DIR)/node_modules .cache
