# Two commands do the whole set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := demo

.PHONY: install demo test lint reproduce benchmark clean

install: $(STAMP)

# torch goes first and alone: pinned, it takes the local CPU build; a bare
# requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip show -q torch >/dev/null 2>&1 || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[train,root,dev]'
	touch $(STAMP)

# the main job: calibration runs -> constants -> resolution and linearity -> demo/report.html
demo: $(STAMP)
	$(VENV)/bin/calocoffea demo --out $(DEMO)

lint: $(STAMP)
	$(VENV)/bin/ruff check calocoffea processors plugins models tests benchmarks reproduce
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

reproduce: $(STAMP)
	@failed=""; for f in reproduce/[!_]*.py; do echo "== $$f"; $(PY) $$f || failed="$$failed $$f"; done; \
	if [ -n "$$failed" ]; then echo "targets missed in:$$failed"; exit 1; fi

benchmark: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done
	$(PY) benchmarks/agc/agc.py --size full --readme

clean:
	rm -rf $(VENV) $(DEMO) .mypy_cache .ruff_cache .pytest_cache
