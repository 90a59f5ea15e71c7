# Two commands on a fresh machine: `make demo` and `make test`.
# Everything is installed into .venv; a second run skips the installs (stamp files).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KERNEL := runbook-kit

.PHONY: demo test recordings lab bench clean demo-secrets

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

test: $(VENV)/.installed-dev demo-secrets
	$(BIN)/python -m pytest

# Regenerate every recording from the simulated tenants, then refresh the notebooks' stored outputs.
recordings: $(VENV)/.installed demo-secrets
	$(BIN)/runbook record-demos

lab: $(VENV)/.installed
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) archive .runbook
