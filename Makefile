# One-command environment: `make setup` builds .venv from scratch (idempotent), `make test` runs
# the lint and the whole suite, `make demo` runs the embedded end-to-end demo.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.instseg-installed
DEMO_DIR ?= output/demo

.PHONY: setup test lint demo clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py scripts/install_detectron2.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip<26"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) scripts/install_detectron2.py --force
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -c "import detectron2, instseg"
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check setup.py instseg scripts tests
	$(VENV)/bin/ruff format --check setup.py instseg scripts tests

test: lint
	$(VENV)/bin/pytest

demo: setup
	$(VENV)/bin/instseg demo --output $(DEMO_DIR)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
