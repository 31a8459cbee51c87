# make lab: the tutorial in JupyterLab. make test: ruff, then the whole test suite.
# Both create .venv (from python3) and install the project into it when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test install clean-venv

install: $(STAMP)

# The tested versions (requirements/constraints.txt), with the optional figure and TensorBoard
# outputs, so that every test runs.
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e '.[test,figures,tensorboard]'
	touch $(STAMP)

# Loopback only, with Jupyter's generated token (printed in the log): never open on all
# interfaces without one.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 notebooks/tutorial.ipynb

# ruff first: pyflakes, import order and bugbear ([tool.ruff] in pyproject.toml), in seconds.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -ra $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
