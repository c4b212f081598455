# The two commands of the README: `make run` serves the lab, `make test` runs every test.
# Both set up ./.venv first; set-up is skipped when the requirement files have not changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: setup run replicas test test-fast lint bench loadtest browser caddy engine-build engine clean

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

# Debian's caddy is the proxy in front of several app replicas (deploy/Caddyfile). Where systemd runs,
# the package also enables a caddy service on port 80 that the lab does not use
# (`systemctl disable --now caddy` if unwanted); the lab runs its own `caddy run --config deploy/Caddyfile`.
caddy:
	@command -v caddy >/dev/null || test -x /usr/bin/caddy || { \
	  echo "Installing Debian's caddy for the app replicas"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq caddy; }

run: setup
	$(PY) app.py

# llama.cpp's OpenAI-compatible server, built once from the llama-cpp-python sdist on PyPI into
# ~/.cache/llm-lab/llama-server-0.3.36/ (outside the repository, so a fresh clone reuses it; the first
# build takes minutes). `make engine` serves the packaged SmolLM2 on ENGINE_PORT with 16 parallel slots:
# run the lab with LAB_GENERATION_URL=http://127.0.0.1:8080/v1 \
#   LAB_GENERATION_MODELS=HuggingFaceTB/SmolLM2-135M-Instruct=smollm2. README: "When one machine is not enough".
ENGINE_PORT ?= 8080
engine-build: setup
	$(PY) -m lab.engine_server build

engine: engine-build
	$(PY) -m lab.engine_server serve --port $(ENGINE_PORT)

# N app replicas behind Caddy with sticky sessions, on PORT (default GRADIO_SERVER_PORT or 7860); the
# replicas take the next N ports. Ctrl-C stops them all. README: "When one machine is not enough".
N ?= 2
replicas: setup caddy
	$(PY) -m lab.replicas --replicas $(N) $(if $(PORT),--port $(PORT))

test: setup browser caddy engine-build
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
