# The two commands the README promises: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install browser lint clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Headless Chromium for the browser tests (Debian's package; Playwright's own download
# cannot work offline).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium chromium-driver; \
	  else sudo apt-get update -q && sudo apt-get install -y -q chromium chromium-driver; fi; }

run: install
	$(PY) manage.py migrate --no-input
	$(PY) manage.py demo_setup
	$(PY) manage.py run_all --host $(HOST) --port $(PORT)

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

# Style, the dependency rules (import-linter: classifier.ml imports no Django, layers import
# downward, no cycles) and the size limits (tools/codeshape.py).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m tools.codeshape
	$(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

clean:
	rm -rf var/broker var/media var/db.sqlite3 var/test_db.sqlite3*
