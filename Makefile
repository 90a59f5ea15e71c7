# Two commands on a fresh machine: `make demo` and `make test`.
# Everything is installed into .venv; a second run skips the installs (stamp files).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KERNEL := runbook-kit

.PHONY: demo test recordings lab bench clean demo-secrets browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (runbook kit)" >/dev/null
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Git keeps no file modes: the demo tenants' fake secret stores must be 0600 to be read.
demo-secrets:
	@chmod 600 params/demo/secrets/*.secret

demo: $(VENV)/.installed demo-secrets
	$(BIN)/runbook run params/demo/contoso.yaml

# The JupyterLab browser test drives Debian's chromium; install it where we can (root with apt-get).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "no chromium and no way to install it: the browser test will be skipped"; fi; }

test: $(VENV)/.installed-dev demo-secrets browser
	$(BIN)/python -m pytest

# Regenerate every recording from the simulated tenants, then refresh the notebooks' stored outputs.
recordings: $(VENV)/.installed demo-secrets
	$(BIN)/runbook record-demos

lab: $(VENV)/.installed
	$(BIN)/runbook lab

clean:
	rm -rf $(VENV) archive .runbook
