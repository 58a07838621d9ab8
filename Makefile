# The README's commands. Everything installs into .venv from PyPI on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint docs bench install system clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: a local Kafka broker and a worker; a simulated day streamed through them, findings shown live, then the SOC console on them until Ctrl-C
demo: $(STAMP)
	@mkdir -p out
	$(BIN)/sepwatch policy check deploy/policy/example.yaml
	$(BIN)/sepwatch demo --policy deploy/policy/example.yaml

## lint: ruff over everything, mypy --strict over every package
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy schemas detectors adapters simulator streams review console cli

## docs: the docs site (mkdocs.yml) into out/site; --strict: a broken link or anchor fails it
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## system: the Debian packages the tests run for real (Prometheus, Alertmanager); once
system:
	deploy/local/debian-packages.sh

## test: lint, the docs site, then the whole test suite
test: lint docs system
	$(BIN)/pytest

## bench: the whole-pipeline benchmark (starts Kafka and Elasticsearch; ~30 min; writes docs/BENCHMARKS.md)
bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.late_data

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache .hypothesis
