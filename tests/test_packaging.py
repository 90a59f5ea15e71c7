"""The two ways to install the kit list the same packages."""
from __future__ import annotations

import re
import tomllib

import yaml

from conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | {r for extra in project["optional-dependencies"].values() for r in extra}
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    listed = {d for d in conda if isinstance(d, str) and _name(d) not in ("python", "pip")}
    assert {_name(r): r.replace(" ", "") for r in wanted} == {_name(d): d.replace(" ", "") for d in listed}


def test_notebook_parameters_match_the_demo_tenant():
    """JupyterLab opens each notebook ready to run the demo: its parameters cell is the demo file."""
    import nbformat

    from runbook_lib import params

    demo = params.load(ROOT / "params" / "demo" / "contoso.yaml")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        namespace: dict = {}
        exec(cell.source, namespace)
        assert params.from_namespace(namespace) == demo, path.name
        assert nb.metadata.kernelspec.name == "runbook-kit" and nb.metadata.language_info.name == "python"


def test_no_notebook_cell_rebinds_a_parameter_name():
    """A cell that imports or assigns a parameter's name (say ``verify``) would hide the parameter."""
    import ast

    import nbformat

    from runbook_lib.params import Params

    names = set(Params.model_fields)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
                continue
            for node in ast.walk(ast.parse(cell.source)):
                bound = [a.asname or a.name.split(".")[0] for a in node.names] if isinstance(
                    node, (ast.Import, ast.ImportFrom)) else [t.id for t in getattr(node, "targets", [])
                                                              if isinstance(t, ast.Name)]
                assert not names & set(bound), f"{path.name}: {cell.source!r} rebinds {names & set(bound)}"
