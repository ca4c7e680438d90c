# The two set-up commands: `make demo` and `make test`. Each creates .venv and installs kpartial.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint bench bench-methods clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "kpartial needs Python 3.11, got " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) tools/demo.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

# Style gate of CI (configured in pyproject.toml): lint errors and unformatted files fail it.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Long measurements (not part of the tests): speed vs PyTorch, loss step times, Open Images scale,
# then the Mulan comparison. `make bench-methods`: every method on the four Mulan sets (~3 h).
bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/cpu_speed.py
	$(PY) benchmarks/loss_speed.py
	$(PY) benchmarks/scale_benchmark.py
	$(PY) benchmarks/mulan_benchmark.py

bench-methods: $(VENV)/.installed
	bash benchmarks/methods_benchmark.sh yeast enron corel5k bibtex

clean:
	rm -rf $(VENV) workdirs
