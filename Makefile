# flowport: the two README commands. Each sets up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test browser lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# make demo KEEP=1 leaves the demo's server running (stop: the command it prints); PORT=9000 picks
# its port (only from the command line: a PORT in the environment is someone else's).
demo: $(STAMP)
	$(strip $(if $(KEEP),FLOWPORT_DEMO_KEEP=$(KEEP)) $(if $(filter command line,$(origin PORT)),FLOWPORT_DEMO_PORT=$(PORT)) $(BIN)/python -m flowport.demo)

test: $(STAMP) browser
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The studio's browser tests drive Debian's Chromium with Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -qq chromium >/dev/null 2>&1 \
		|| (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1) \
		|| echo "note: could not install chromium; the studio's browser tests will be skipped"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
