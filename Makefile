# Two commands: `make lab` opens the course, `make test` runs every test.
# Both create .venv and install the course into it on first use (offline-friendly:
# pip takes torch from the local wheel cache where the machine has one).
PYTHON ?= $(if $(filter Windows_NT,$(OS)),python,python3)
VENV ?= .venv
# The venv's programs: $(VENV)/bin (Linux, macOS, WSL), $(VENV)/Scripts/*.exe (Windows, with make in Git Bash or MSYS2).
WINDOWS := $(filter Windows_NT,$(OS))
VENV_BIN := $(VENV)/$(if $(WINDOWS),Scripts,bin)
EXE := $(if $(WINDOWS),.exe)
PY := $(VENV_BIN)/python$(EXE)
STAMP := $(VENV)/.installed
# The real EuroSAT archive: use $(TL_EUROSAT_ARCHIVE) if set, else the shared copy beside the checkout.
TL_EUROSAT_ARCHIVE ?= $(wildcard $(CURDIR)/../shared/data/eurosat/EuroSAT_RGB.zip)
export TL_EUROSAT_ARCHIVE
# SST-2 (notebook 08): $(TL_SST2_DIR) if set, else the shared copy beside the checkout.
TL_SST2_DIR ?= $(wildcard $(CURDIR)/../shared/data/sst2)
export TL_SST2_DIR
PYTEST_ARGS ?=
# Environment of the course's kernels (the same pairs as tl_helpers.runner.KERNEL_ENV; a test compares them):
# torch's OpenMP threads spin for only a moment while they wait, then sleep, so a kernel sharing its CPUs stays fast.
KERNEL_ENV := --env OMP_WAIT_POLICY PASSIVE --env GOMP_SPINCOUNT 1000

.PHONY: install lab test test-fast lint format exercises check-exercises bench bench-grading bench-shared-cpu gpu-check e2e doctor data clean site site-install site-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name tl-course --display-name "Python (tl-course)" $(KERNEL_ENV) >/dev/null
	$(PY) -m ipykernel install --sys-prefix $(KERNEL_ENV) >/dev/null  # the venv's python3 kernel, which the notebooks name
	touch $(STAMP)

lab: install
	$(PY) -m tl_helpers doctor || true
	$(VENV_BIN)/jupyter$(EXE) lab $(if $(filter 0,$(shell id -u)),--allow-root) --ServerApp.root_dir=$(CURDIR) notebooks/00_setup_check.ipynb

doctor: install
	$(PY) -m tl_helpers doctor

data: install
	$(PY) -m tl_helpers data prepare

# TEST_JOBS=2 (CI sets it): the unit tests first, on two pytest-xdist workers, then the notebooks on two workers, whole
# notebooks per worker, each kernel with one compute thread (conftest.py). Both parts run; either failing fails.
TEST_JOBS ?= 1
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=600

test: install
ifeq ($(TEST_JOBS),1)
	TL_REQUIRE_ALL_NOTEBOOKS=1 $(PY) -m pytest $(NBVAL) $(PYTEST_ARGS)
else
	status=0; \
	$(PY) -m pytest tests -n $(TEST_JOBS) $(PYTEST_ARGS) || status=1; \
	TL_REQUIRE_ALL_NOTEBOOKS=1 $(PY) -m pytest notebooks $(NBVAL) -n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS) || status=1; \
	exit $$status
endif

# The fast tier (about a minute on a 2-core CPU): unit tests, no notebooks, nothing marked slow.
test-fast: install
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

# ruff (pinned in the dev extras, configured in pyproject.toml): lint the package, tests, benchmarks
# and notebooks; check the formatting of the Python files. `make format` fixes what it can.
lint: install
	$(VENV_BIN)/ruff$(EXE) check .
	$(VENV_BIN)/ruff$(EXE) format --check .

format: install
	$(VENV_BIN)/ruff$(EXE) check --fix .
	$(VENV_BIN)/ruff$(EXE) format .

# Browser tests: the course in JupyterLab, in Debian's headless chromium (installs chromium
# and the npm packages pinned by e2e/package-lock.json on first use). E2E_NOTEBOOKS=all runs
# every notebook; see e2e/run.sh for the settings. Always stops JupyterLab; non-zero on failure.
e2e: install
	VENV=$(VENV) ./e2e/run.sh $(E2E_ARGS)

exercises: install
	$(PY) -m tl_helpers exercises build

check-exercises: install
	$(PY) -m tl_helpers exercises check

clean:
	rm -rf $(VENV) .pytest_cache site build/site-src build/site-sphinx build/executed

# The static course site (docs/site/): every notebook with its outputs, the exercises, an index;
# HTML in site/ (not committed). Executes the notebooks offline unless `make test` ran with
# TL_SAVE_EXECUTED=build/executed on the same sources (then it reuses those executions).
# `make site-install` (online, once) adds the pinned builder packages (extra `site`).
SITE_STAMP := $(VENV)/.installed-site
site-install: $(SITE_STAMP)

$(SITE_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,site]"
	touch $(SITE_STAMP)

site: site-install
	$(PY) docs/site/build.py $(SITE_ARGS)

# The site in Chromium, served from 127.0.0.1 (after `make site`; see e2e/site.sh).
site-check: install
	VENV=$(VENV) ./e2e/site.sh $(E2E_ARGS)

bench: install
	$(PY) benchmarks/run.py $(BENCH_ARGS)
	$(PY) benchmarks/grading.py
	$(PY) benchmarks/adapt.py
	$(PY) benchmarks/depthwise.py
	$(PY) benchmarks/pointwise.py
	$(PY) benchmarks/optimizer.py

# The GPU paths on a real GPU (< 8 min): the fast requires_cuda tests with TL_REQUIRE_CUDA=1, notebook 06's
# capstone recipe and `make bench BENCH_ARGS=--quick`; figures to build/gpu_check.json. Without CUDA it says
# so in one line and exits 0. GPU_CHECK_ARGS: --out PATH, --data-dir DIR, --skip-tests/-capstone/-bench.
gpu-check: install
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# `grade` on copies of the solution notebooks: seconds per submission, the share spent starting up, --jobs 1 vs 2
# (figures to benchmarks/grading.json). Default: 2 copies of 01, 03, 04, 08; the class figure:
# make bench-grading BENCH_ARGS="--submissions 30 --notebooks all" (06 and 07 train models: long; run it alone).
bench-grading: install
	$(PY) benchmarks/grading.py $(BENCH_ARGS)

# One training cell alone vs two at once, with and without the kernel env (run it on an idle machine).
bench-shared-cpu: install
	$(PY) benchmarks/shared_cpu.py $(BENCH_ARGS)
