# make lab: the tutorial in JupyterLab. make test: the whole test suite.
# Both create .venv (from python3) and install the project into it when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Loopback only, with Jupyter's generated token (printed in the log): never open on all
# interfaces without one.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 notebooks/tutorial.ipynb

test: $(STAMP)
	$(PY) -m pytest -ra $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
