# Two commands on a fresh machine: `make demo` and `make test`.
# Everything is installed into .venv at the versions pinned in requirements.lock (pip constraints); a second run
# skips the installs (stamp files, remade when pyproject.toml or the lock changes). `make lock` refreshes the lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KERNEL := runbook-kit
LOCK   := requirements.lock
LINTED := runbook_lib tests benchmarks

.PHONY: fleet-picture demo test check lint lock recordings lab bench clean demo-secrets browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (runbook kit)" >/dev/null
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml $(LOCK)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $@

# Refresh requirements.lock: resolve pyproject.toml's bounds (with the dev and dask extras) afresh in a throwaway
# virtualenv and pin every package it installed. Review the diff, then run `make test` (which installs the new pins).
lock:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp" $(LOCK).new' EXIT && \
	  $(PYTHON) -m venv "$$tmp/venv" && \
	  "$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip && \
	  "$$tmp/venv/bin/python" -m pip install --quiet -e '.[dev,dask]' && \
	  { echo '# Every package of the kit with its "dev" and "dask" extras, pinned: `make demo` and `make test` install'; \
	    echo '# with this file as pip constraints. Regenerate with `make lock`; never edit by hand.'; \
	    "$$tmp/venv/bin/python" -m pip freeze --exclude-editable; } > $(LOCK).new && \
	  mv $(LOCK).new $(LOCK) && echo "$(LOCK): $$(grep -c '==' $(LOCK)) packages pinned"

# Git keeps no file modes: the demo tenants' fake secret stores must be 0600 to be read, and their folder must not
# be writable by group or others (as a clone made under umask 002 is), or the kit's offline checks refuse them.
demo-secrets:
	@chmod 600 params/demo/secrets/*.secret
	@chmod go-w params/demo/secrets

# Lint, formatting and types: what every commit must pass (CI runs them through `make test`).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy runbook_lib

# Lint, formatting, types and the unit tests (pytest -m unit): seconds, for every commit. `make test` runs every tier.
check: lint demo-secrets
	$(BIN)/python -m pytest -m unit -q

demo: $(VENV)/.installed demo-secrets
	$(BIN)/runbook run params/demo/contoso.yaml
	@echo
	@echo "Open each step's HTML in the Record folder above (02_azure_app_registration.html, ...)."
	@echo "The runbook command is $(BIN)/runbook: run 'source $(VENV)/bin/activate' to call it as runbook."
	@echo "Next: runbook --help, runbook lab (the notebooks in JupyterLab), runbook fleet params/demo/*.yaml"

# The JupyterLab browser test drives Debian's chromium; install it where we can (root with apt-get).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "no chromium and no way to install it: the browser test will be skipped"; fi; }

test: lint demo-secrets browser
	$(BIN)/python -m pytest

# Regenerate every recording from the simulated tenants, then refresh the notebooks' stored outputs.
recordings: $(VENV)/.installed demo-secrets
	$(BIN)/runbook record-demos
	$(MAKE) --no-print-directory fleet-picture

# The README's fleet picture, made by the command the README documents over the demo tenants (a replay), drawn
# by headless chromium (`make browser` installs it). The page runs no script (its CSP forbids any), hence
# --no-sandbox is safe here, and needed as root. `runbook fleet` exits 1 when a tenant fails: only 2+ is an error.
fleet-picture: $(VENV)/.installed demo-secrets
	@command -v chromium >/dev/null 2>&1 || { echo "fleet-picture: no chromium (make browser installs it)"; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  { $(BIN)/runbook fleet params/demo/*.yaml --archive "$$tmp/archive" --html "$$tmp/fleet.html" >/dev/null; [ $$? -le 1 ]; } && \
	  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,900 \
	    --screenshot=docs/fleet-report.png "file://$$tmp/fleet.html" >/dev/null 2>&1 && \
	  echo "refreshed docs/fleet-report.png"

lab: $(VENV)/.installed
	$(BIN)/runbook lab

clean:
	rm -rf $(VENV) archive .runbook .mypy_cache .ruff_cache

# The speed benchmark: each figure measured 5 times, interleaved with its floor, medians and spread printed.
bench: $(VENV)/.installed-dev demo-secrets
	$(BIN)/python benchmarks/speed.py
