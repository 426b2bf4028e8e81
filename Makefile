# Every target sets up .venv itself when it is missing: torch==2.13.0 first (a CPU build
# is on disk for that version; any other spec would pull GBs of CUDA), then the package.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# One torch/BLAS thread per test process: the nets are tiny, and on a busy 2-core machine a
# second thread stalls torch's pool (SB3's SAC test took 285 s with two threads, 34 s with one)
ONE_THREAD := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

.PHONY: demo test test-slow test-clients test-gym029 bench docs clean

# The demo needs only the core (the toy task, SB3, plots): .venv/core. Everything else (HF,
# Ray, OP-Mix, Syllabus, Minari, docs and dev tools) comes with .venv/ready, on first use of
# `make test` or any target that needs it, or by name: `.venv/bin/pip install -e ".[syllabus]"`.
.venv/core: pyproject.toml
	@echo "mixgym: setting up .venv with the demo's dependencies only (torch CPU, stable-baselines3, gymnasium, matplotlib)"
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --progress-bar on torch==2.13.0
	$(PY) -m pip install --progress-bar on -e .
	touch $@

EXTRAS := hf,bench,cluster,dev,opmix,swarm,syllabus,minari,wandb,docs
.venv/ready: .venv/core
	@echo "mixgym: installing the extras the tests need ($(EXTRAS))"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: .venv/core
	@echo "mixgym demo: agents on the mix-pilemix toy task (a few minutes on 2 cores); table and demo.png in mixgym-demo/"
	$(PY) -m mixgym.cli demo

test: .venv/ready
	$(ONE_THREAD) $(PY) -m pytest -q

test-slow: .venv/ready
	$(PY) -m pytest -q -m slow

# RL Zoo3, TorchRL, Tianshou and skrl driving mixgym as the README shows (a few minutes)
test-clients: .venv/ready
	$(ONE_THREAD) $(PY) -m pytest -q -m clients -p no:cacheprovider

# The env, reward, toy, copy and SB3 tests again on the oldest Gymnasium we support (CleanRL
# pins 0.29.1, which needs numpy < 2), in a second small venv without the hf extra
GYM029 := .venv-gym029/bin/python
.venv-gym029/ready: pyproject.toml
	test -x $(GYM029) || python3 -m venv .venv-gym029
	$(GYM029) -m pip install -q torch==2.13.0
	$(GYM029) -m pip install -q -e . "gymnasium==0.29.1" "numpy<2" "pytest>=8" "pytest-timeout>=2.3"
	touch $@

test-gym029: .venv-gym029/ready
	$(ONE_THREAD) $(GYM029) -m pytest -q -p no:cacheprovider tests/test_env.py tests/test_rewards.py tests/test_toy.py tests/test_sb3.py tests/test_copies.py

bench: .venv/ready
	$(PY) benchmarks/toy_throughput.py

# The topic pages in docs/, built as CI builds them: any warning (a broken link, a page left
# out of the nav) fails the build. Their code blocks run in tests/test_docs.py.
docs: .venv/ready
	$(PY) -m mkdocs build --strict --site-dir build/site

clean:
	rm -rf .venv .venv-gym029 .pytest_cache build/site
