# The two commands of the README: `make run` serves the lab, `make test` runs every test.
# Both set up ./.venv first; set-up is skipped when the requirement files have not changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: setup run test test-fast lint bench loadtest browser clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	# The lab itself, editable: `import lab` works from notebooks, scripts and the fine-tune worker.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian's chromium drives the browser tests (Playwright's own browser download needs the internet).
browser:
	@test -x $(CHROMIUM) || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

run: setup
	$(PY) app.py

test: setup browser
	$(PY) -m pytest

# Everything but the real-browser and slow tests, for a quick loop while editing.
test-fast: setup
	$(PY) -m pytest -m "not browser and not slow and not gpu"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(PY) -m bench

# A classroom on this machine: N simulated students for MINUTES against the launched app (bench/classroom.py);
# the table, JSON and plot land in test-artifacts/loadtest/.
N ?= 10
MINUTES ?= 2
loadtest: setup
	$(PY) -m bench classroom --students $(N) --minutes $(MINUTES)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
