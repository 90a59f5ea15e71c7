"""The ways to install the kit agree: pyproject.toml, environment.yml and the pinned requirements.lock."""

from __future__ import annotations

import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT

pytestmark = pytest.mark.unit

LOCK = ROOT / "requirements.lock"
LOWER, UPPER = {">=", ">", "~=", "=="}, {"<", "<=", "~=", "=="}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements() -> list[Requirement]:
    """Every requirement of pyproject.toml: the runtime ones and those of each extra."""
    project = _pyproject()
    extras = [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(r) for r in project["dependencies"] + extras]


def _bounds(requirements: list[Requirement], where: str) -> dict[str, str]:
    """Normalised name (case, ``_``, ``-``, ``.``) -> bounds, each package's bounds the same wherever it is listed."""
    bounds: dict[str, str] = {}
    for r in requirements:
        shown = str(r.specifier)
        assert bounds.setdefault(canonicalize_name(r.name), shown) == shown, f"{where}: {r.name} has two sets of bounds"
    return bounds


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, pinned, version = line.partition("==")
            assert pinned and version.strip(), f"{LOCK.name}: {line!r} is not pinned with =="
            pins[canonicalize_name(name.strip())] = Version(version.strip())
    return pins


def test_every_dependency_has_a_lower_and_an_upper_bound():
    for r in _requirements():
        operators = {s.operator for s in r.specifier}
        assert operators & LOWER and operators & UPPER, f"pyproject.toml: give {r} a lower and an upper bound"


def test_environment_yml_agrees_with_pyproject():
    """The same packages with the same lower and upper bounds."""
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    listed = [Requirement(d) for d in conda if isinstance(d, str)]
    listed = [r for r in listed if canonicalize_name(r.name) not in ("python", "pip")]
    assert _bounds(listed, "environment.yml") == _bounds(_requirements(), "pyproject.toml")


def test_the_lock_pins_every_package_of_pyproject_within_its_bounds():
    pins = _pins()
    assert canonicalize_name(_pyproject()["name"]) not in pins, f"{LOCK.name} pins the kit itself: run `make lock`"
    for r in _requirements():
        name = canonicalize_name(r.name)
        assert name in pins, f"{LOCK.name} pins no {r.name}: run `make lock`"
        assert r.specifier.contains(pins[name], prereleases=True), f"{LOCK.name}: {r.name}=={pins[name]} not in {r}"


def test_every_test_module_is_in_exactly_one_tier():
    """`make check` runs ``pytest -m unit``: a module without a tier in ``pytestmark`` would run in `make test` only."""
    import ast

    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    tiers = {marker.split(":")[0].strip() for marker in options["markers"]}
    assert {"unit", "replay", "e2e", "browser"} <= tiers
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        assigned = [
            node.value
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)
        ]
        named = {
            node.attr
            for value in assigned
            for node in ast.walk(value)
            if isinstance(node, ast.Attribute) and node.attr in tiers and getattr(node.value, "attr", None) == "mark"
        }
        assert len(named) == 1, f"{path.name}: set pytestmark = pytest.mark.<one of {sorted(tiers)}>, found {named}"


def test_notebook_parameters_match_the_demo_tenant():
    """JupyterLab opens each notebook ready to run the demo: its parameters cell is the demo file; a day-two step
    that changes the tenant (rotation, teardown) opens as a plan of it."""
    import nbformat

    from runbook_lib.config import params, registry
    from runbook_lib.context import ui

    demo = params.load(ROOT / "params" / "demo" / "contoso.yaml")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        namespace: dict = {}
        exec(cell.source, namespace)
        spec = registry.BY_NAME[path.stem]
        expected = demo if spec.by_default or not spec.in_plan else demo.model_copy(update={"apply": False})
        assert ui.notebook_params(namespace)[0] == expected, path.name
        assert nb.metadata.kernelspec.name == "runbook-kit" and nb.metadata.language_info.name == "python"


def test_no_notebook_cell_rebinds_a_parameter_name():
    """A cell that imports or assigns a parameter's name (say ``verify``) would hide the parameter."""
    import ast

    import nbformat

    from runbook_lib.config.params import Params

    names = set(Params.model_fields)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
                continue
            for node in ast.walk(ast.parse(cell.source)):
                bound = (
                    [a.asname or a.name.split(".")[0] for a in node.names]
                    if isinstance(node, (ast.Import, ast.ImportFrom))
                    else [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
                )
                assert not names & set(bound), f"{path.name}: {cell.source!r} rebinds {names & set(bound)}"
