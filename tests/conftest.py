"""Shared fixtures: the demo parameters, and a simulated tenant served on loopback."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_lib import paths
from runbook_lib.sandbox.server import Sandbox, serve
from runbook_lib.sandbox.tenant import SimulatedTenant

ROOT = paths.project_root()
DEMO = ROOT / "params" / "demo" / "contoso.yaml"
CANARY = "CANARYz7Q"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The notebooks nbval collects (notebooks/, tests/nbval/) replay recordings in a kernel: tier ``replay``.
    The tiers (unit, replay, e2e, browser) are registered in pyproject.toml; test modules set ``pytestmark``."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.replay)


#: the archives of the test session: one per notebook nbval runs, and one for every other test
ARCHIVES = Path(tempfile.mkdtemp(prefix="runbook-test-archives-"))


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(ARCHIVES, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Records go to the test session's own archives, never the checkout's: the tests read only what they made,
    whatever a user ran before. Each notebook nbval runs keeps its record in an archive of its own (its kernel
    starts in this setup, with this environment), as `make recordings` ran it, so what a notebook shows never
    depends on another's records."""
    os.environ[paths.ARCHIVE_ENV] = str(ARCHIVES / (item.path.stem if item.path.suffix == ".ipynb" else "tests"))


@pytest.fixture(autouse=True, scope="session")
def private_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Live-mode token caches and sandboxes go to a temporary folder, not the checkout. The demo secret stores get
    the mode `make` gives them (git keeps no modes), for runs of pytest without make."""
    for store in (ROOT / "params" / "demo" / "secrets").glob("*.secret"):
        store.chmod(0o600)
    mp = pytest.MonkeyPatch()
    mp.setenv("RUNBOOK_STATE", str(tmp_path_factory.mktemp("state")))
    yield
    mp.undo()


@pytest.fixture
def demo_raw() -> dict[str, Any]:
    return yaml.safe_load(DEMO.read_text())


@pytest.fixture
def seed() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "recordings" / "contoso" / "tenant.yaml").read_text())


@pytest.fixture
def sandbox(seed: dict[str, Any]) -> Iterator[Sandbox]:
    with serve(SimulatedTenant(seed, canary=CANARY, pending_polls=0)) as running:
        yield running


@pytest.fixture
def live_raw(demo_raw: dict[str, Any], sandbox: Sandbox, tmp_path: Path) -> dict[str, Any]:
    """The demo tenant's parameters in live mode against the sandbox, with private stores, and the reason and
    ticket a live run that applies changes must give."""
    raw = copy.deepcopy(demo_raw)
    raw.update(
        mode="live",
        endpoints=sandbox.endpoints(),
        recordings=str(tmp_path / "recordings"),
        secret_store={"file": str(tmp_path / "secrets" / "client.secret")},
        change={"reason": "a test of the kit", "ticket": "TEST-1"},
    )
    return raw


def scan(folder: Path, needles: list[str], skip: tuple[str, ...] = ()) -> list[str]:
    """Files under ``folder`` (but those named in ``skip``) that contain any of ``needles`` (as text)."""
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and path.name not in skip:
            text = path.read_bytes().decode("utf-8", errors="replace")
            hits += [f"{path.name}: {n}" for n in needles if n in text]
    return hits
