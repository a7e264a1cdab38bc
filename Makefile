PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-gpu test test-gpu lint clean

# CPU machines (and CI): editable install, CPU torch kept by the constraints file.
install:
	$(PIP) install -c constraints-cpu.txt -e ".[dev]"

# GPU machines: keep the torch that is already installed (CUDA build); see README.
install-gpu:
	$(PIP) install -e ".[dev]"

test:
	$(PYTHON) -m pytest

test-gpu:
	$(PYTHON) -m pytest -m gpu

clean:
	rm -rf build dist *.egg-info src/*.egg-info .pytest_cache
