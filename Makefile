# Every target sets up .venv itself when it is missing: torch==2.13.0 first (a CPU build
# is on disk for that version; any other spec would pull GBs of CUDA), then the package.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-slow bench clean

.venv/ready: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[hf,bench,cluster,dev]"
	touch $@

demo: .venv/ready
	$(PY) -m mixgym.cli demo

test: .venv/ready
	$(PY) -m pytest -q

test-slow: .venv/ready
	$(PY) -m pytest -q -m slow

bench: .venv/ready
	$(PY) benchmarks/toy_throughput.py

clean:
	rm -rf .venv .pytest_cache
