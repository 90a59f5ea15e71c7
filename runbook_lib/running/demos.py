"""Regenerating the demo recordings: one command, ``runbook record-demos`` (``make recordings``).

Each demo tenant (``params/demo/<tenant>.yaml``) has a seed, ``recordings/<tenant>/tenant.yaml``,
describing the simulated tenant its recordings come from. Regeneration serves that tenant on
loopback, runs the tenant's notebooks in ``record`` mode through it (the live code path: msal,
requests, vcrpy with scrubbing), then re-executes the notebooks in replay to refresh the outputs
that nbval compares. Nothing is edited by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from .. import paths
from ..config import params as params_mod
from ..config import registry, secrets, strict_yaml
from ..sandbox.server import serve
from ..sandbox.tenant import SimulatedTenant
from . import fleet, runner


def demo_files() -> list[Path]:
    return sorted((paths.project_root() / "params" / "demo").glob("*.yaml"))


def seed_file(params: params_mod.Params) -> Path:
    return paths.resolve(params.recordings) / "tenant.yaml"


def record(
    params_file: Path,
    *,
    canary: str = "",
    archive: Path | None = None,
    overrides: dict[str, Any] | None = None,
    pending_polls: int = 1,
    store: secrets.SecretRef | None = None,
) -> runner.RunResult:
    """Run a demo tenant in record mode against its simulated tenant; returns the (throwaway) run.
    ``canary`` goes into every secret and token the tenant issues; ``pending_polls=0`` skips the
    device-code waits (leak tests do not need them in their recordings). The run keeps its secrets in
    ``store``, by default a private copy of the tenant's store, so they never reach the kit's own stores."""
    raw = strict_yaml.load_file(params_file)
    raw.update(overrides or {})
    params = params_mod.validate(raw, str(params_file))
    seed = yaml.safe_load(seed_file(params).read_text(encoding="utf-8"))
    tenant = SimulatedTenant(seed, canary=canary, pending_polls=pending_polls)
    with serve(tenant) as sandbox, tempfile.TemporaryDirectory() as tmp:
        store = store or secrets.private_copy(params.secret_store, Path(tmp) / "store")
        raw.update(
            mode="record",
            endpoints={**raw.get("endpoints", {}), **sandbox.endpoints()},
            secret_store=store.model_dump(exclude_none=True),
        )
        return runner.run(
            params_mod.validate(raw, str(params_file)), archive=archive or Path(tmp) / "archive", wait_lock=LOCK_WAIT
        )


def record_fleet(params_file: Path, recordings: Path | None = None, *, canary: str = "") -> fleet.Health:
    """Record what fleet health reads of a demo tenant (``07_fleet_health.yaml``) against its simulated tenant as
    its seed describes it: the state the tenant demonstrates, before any run. ``recordings``: where to write
    (default: the tenant's own recordings). Returns what was read; a read the tenant refuses (duplicate names,
    no licence) is part of what is recorded."""
    raw = strict_yaml.load_file(params_file)
    params = params_mod.validate(raw, str(params_file))
    seed = yaml.safe_load(seed_file(params).read_text(encoding="utf-8"))
    with serve(SimulatedTenant(seed, canary=canary, pending_polls=0)) as sandbox, tempfile.TemporaryDirectory() as tmp:
        raw.update(
            mode="record",
            recordings=str(recordings.resolve() if recordings else paths.resolve(params.recordings)),
            endpoints={**raw.get("endpoints", {}), **sandbox.endpoints()},
            secret_store=secrets.private_copy(params.secret_store, Path(tmp) / "store").model_dump(exclude_none=True),
        )
        return fleet.read_tenant(params_mod.validate(raw, str(params_file)), str(params_file), Path(tmp) / "archive")


#: the demo tenant the notebooks' own parameters name: nbval replays every notebook on it
DEFAULT_TENANT = "contoso"


def record_rotation_plan(params_file: Path) -> runner.RunResult:
    """Record what notebook 08 replays on its defaults, a plan of the rotation: the tenant is configured by the six
    steps first (their recordings thrown away), then 08 reads it. Teardown needs no recording: in a replay it reads
    nothing, since a replay's records prove nothing was made."""
    raw = strict_yaml.load_file(params_file)
    params = params_mod.validate(raw, str(params_file))
    seed = yaml.safe_load(seed_file(params).read_text(encoding="utf-8"))
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox, tempfile.TemporaryDirectory() as tmp:
        store = secrets.private_copy(params.secret_store, Path(tmp) / "store")
        base = {
            **raw,
            "mode": "record",
            "endpoints": {**raw.get("endpoints", {}), **sandbox.endpoints()},
            "secret_store": store.model_dump(exclude_none=True),
        }
        archive = Path(tmp) / "archive"
        setup = params_mod.validate({**base, "recordings": str(Path(tmp) / "setup")}, str(params_file))
        runner.run(setup, archive=archive, wait_lock=LOCK_WAIT)
        plan = params_mod.validate({**base, "apply": False, "steps": [registry.ROTATE_SECRET]}, str(params_file))
        return runner.run(plan, archive=archive, wait_lock=LOCK_WAIT)


#: demo scenarios of one tenant (tailspin, tailspin-pick) share its lock: the second waits for the first
LOCK_WAIT = 600

#: tenants recorded at once: each one's time is mostly waiting, not computing
PARALLEL = 6

#: (notebook, demo tenant): executed copies that nbval also checks, beside the default (contoso) outputs
SCENARIO_NOTEBOOKS = [("02_azure_app_registration", "northwind")]


def scenario_notebook(step: str, tenant: str) -> Path:
    return paths.project_root() / "tests" / "nbval" / f"{step}.{tenant}.ipynb"


def refresh_outputs() -> None:
    """Re-execute every notebook on its default parameters (the contoso demo, replay) and save it; then
    the scenario copies, parameterized by papermill, for nbval. Each notebook keeps its record in an archive of
    its own, thrown away (as nbval's do): what a notebook shows never depends on the records of another."""
    with tempfile.TemporaryDirectory(prefix="runbook-refresh-") as scratch:
        previous = os.environ.get(paths.ARCHIVE_ENV)
        try:
            _refresh(Path(scratch))
        finally:
            os.environ.pop(paths.ARCHIVE_ENV, None)
            if previous is not None:
                os.environ[paths.ARCHIVE_ENV] = previous


@contextlib.contextmanager
def _ipc() -> Iterator[AsyncKernelManager]:
    """A kernel manager over IPC for one notebook, as ``runbook run``'s, its sockets' folder removed after."""
    sockets = runner.sockets_folder()
    try:
        yield runner.ipc_manager(sockets)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def _refresh(scratch: Path) -> None:
    notebooks = paths.project_root() / "notebooks"
    for path in sorted(notebooks.glob("*.ipynb")):
        os.environ[paths.ARCHIVE_ENV] = str(scratch / path.stem)
        nb = nbformat.read(path, as_version=4)
        with _ipc() as km:
            NotebookClient(
                nb,
                km=km,
                timeout=runner.CELL_TIMEOUT,
                record_timing=False,
                resources={"metadata": {"path": str(path.parent)}},
            ).execute()
        nbformat.write(nb, path)
        print(f"refreshed outputs of {path.name}")
    for step, tenant in SCENARIO_NOTEBOOKS:
        os.environ[paths.ARCHIVE_ENV] = str(scratch / f"{step}.{tenant}")
        target = scenario_notebook(step, tenant)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _ipc() as km:
            papermill.execute_notebook(
                str(notebooks / f"{step}.ipynb"),
                str(target),
                parameters={"params_file": f"params/demo/{tenant}.yaml"},
                kernel_name=runner.kernel_name(),
                km=km,
                cwd=str(target.parent),
                progress_bar=False,
            )
        executed = nbformat.read(target, as_version=4)
        for where in ("input_path", "output_path"):  # papermill's absolute paths: no machine path in the kit
            executed.metadata.papermill[where] = paths.shown(executed.metadata.papermill[where])
        nbformat.write(executed, target)
        print(f"refreshed {target.relative_to(paths.project_root())}")


def _record_and_check(params_file: Path) -> bool:
    """Record one tenant; right when it ends as its seed expects and every step that sent a request has its
    recording."""
    result = record(params_file)
    params = params_mod.load(params_file)
    expected = yaml.safe_load(seed_file(params).read_text()).get("expect", "ok")
    outcome = "ok" if result.ok else "failed"
    folder = paths.resolve(params.recordings)
    missing = [
        s.step
        for s in result.steps
        if s.counts.get("reads", 0) + s.counts.get("writes", 0) + s.counts.get("auth", 0)
        and not (folder / f"{s.step}.yaml").exists()
    ]
    print(
        f"{params_file.stem}: recorded ({outcome}, expected {expected}); steps "
        + ", ".join(f"{s.step} {s.status}" for s in result.steps)
        + (f"; MISSING recordings of {', '.join(missing)}" if missing else ""),
        flush=True,
    )
    return outcome == expected and not missing


def regenerate(tenants: list[str] | None = None, workers: int = PARALLEL) -> bool:
    """Record every demo tenant (or those named), in parallel since each mostly waits (sign-in polling,
    Retry-After), then refresh the notebooks' stored outputs."""
    files = [f for f in demo_files() if not tenants or f.stem in tenants]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ok = all(list(pool.map(_record_and_check, files)))
    for params_file in files:  # one at a time: vcrpy patches HTTP for the whole process while a recording is open
        record_fleet(params_file)
    default = [f for f in files if f.stem == DEFAULT_TENANT]
    if default:
        rotation = record_rotation_plan(default[0])
        print(f"{DEFAULT_TENANT}: rotation plan recorded ({'ok' if rotation.ok else 'failed'})", flush=True)
        ok = ok and rotation.ok
    refresh_outputs()
    return ok
