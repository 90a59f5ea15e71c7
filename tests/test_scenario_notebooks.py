"""The scenario copies under tests/nbval are the source notebooks, executed with another tenant's parameters."""

from __future__ import annotations

import nbformat
import pytest

from runbook_lib.running import demos

from conftest import ROOT

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("step, tenant", demos.SCENARIO_NOTEBOOKS)
def test_scenario_copy_has_the_source_cells(step, tenant):
    source = nbformat.read(ROOT / "notebooks" / f"{step}.ipynb", as_version=4)
    copy = nbformat.read(demos.scenario_notebook(step, tenant), as_version=4)
    cells = [c for c in copy.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    assert [c.source for c in cells] == [c.source for c in source.cells]
    assert copy.metadata.papermill.parameters == {"params_file": f"params/demo/{tenant}.yaml"}
