# Set-up is part of every target: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test unit integration bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]'
	touch $(STAMP)

demo: install  ## tune -> register on the embedded default (local Ray in-process, local MLflow store)
	$(BIN)/handoff demo

test: install  ## the whole suite: unit, then integration (real Ray, real mlflow server)
	$(BIN)/python -m pytest tests/unit -q
	$(BIN)/python -m pytest tests/integration -q --durations=25

unit: install
	$(BIN)/python -m pytest tests/unit -q

integration: install
	$(BIN)/python -m pytest tests/integration -q --durations=25

bench: install
	$(BIN)/python bench/tune_schedulers.py

clean:
	rm -rf .handoff build *.egg-info
