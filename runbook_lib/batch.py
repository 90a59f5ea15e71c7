"""``runbook batch``: many tenants at once, for partners.

Every parameter file is validated first; bad ones are reported and skipped, the rest run in a bounded pool
(worker processes here, each tenant's notebooks in its own kernel; or Dask workers with ``--dask-scheduler``).
A batch record, ``archive/_batches/<UTC time>/batch.json``, lists every tenant with its status, duration,
writes, failing step, diagnosis and the path of its record, so ``--only-failed`` can run just the failures.
Batch records hold no parameter values beyond the files' paths, and so no secret.
"""
from __future__ import annotations

import json
import os
from multiprocessing import get_context
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import diagnose, paths, records, runner
from . import params as params_mod
from .errors import ParamsError, RunbookError

BATCHES = "_batches"


@dataclass
class TenantOutcome:
    params_file: str
    tenant: str
    status: str            # ok | failed | invalid
    duration_s: float = 0.0
    writes: int = 0
    failing_step: str = ""
    diagnosis: str = ""
    record: str = ""


def _diagnosis(result: runner.RunResult) -> tuple[str, str]:
    """The first failing step and a one-line diagnosis (the troubleshooting step's, else the error's)."""
    failed = next((s for s in result.steps if s.status == "failed"), None)
    if failed is None:
        return "", ""
    found = [f for s in result.steps for f in s.facts.get("diagnosis", {}).get("findings", [])]
    found = found or [f.__dict__ for f in diagnose.diagnose(failed.error or "")]
    if found:
        return failed.step, f"{found[0]['code']}: {found[0]['fix']} ({found[0]['notebook']})"
    lines = (failed.error or "").splitlines()
    fix = next((line for line in lines if line.startswith("Fix:")), "")
    return failed.step, " ".join(filter(None, [lines[0][:160] if lines else "", fix]))


def run_one(params_file: str, archive: str, steps: list[str] | None, cell_timeout: int) -> dict[str, Any]:
    """One tenant, start to record; a plain function of plain values so Dask can ship it to a worker."""
    params = params_mod.load(params_file)
    started = time.monotonic()
    try:
        result = runner.run(params, archive=Path(archive), steps=steps, progress=lambda _: None,
                            cell_timeout=cell_timeout)
    except RunbookError as error:   # e.g. another run of this tenant holds the lock
        return asdict(TenantOutcome(params_file, params.tenant, "failed", time.monotonic() - started,
                                    diagnosis=error.message))
    step, why = _diagnosis(result)
    return asdict(TenantOutcome(params_file, params.tenant, "ok" if result.ok else "failed",
                                round(time.monotonic() - started, 1), result.writes, step, why,
                                str(result.record.relative_to(Path(archive)))))


def validate_all(files: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The valid files, and an outcome for each invalid one naming its bad fields."""
    valid, invalid = [], []
    for path in files:
        try:
            params_mod.load(path)
            valid.append(path)
        except ParamsError as error:
            invalid.append(asdict(TenantOutcome(path, Path(path).stem, "invalid",
                                                diagnosis="; ".join(f"{k}: {v}" for k, v in error.problems.items()))))
    return valid, invalid


def failed_files(batch_record: Path) -> list[str]:
    """The parameter files of a batch's failed and invalid tenants, for ``--only-failed``."""
    try:
        data = json.loads((batch_record / "batch.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunbookError(f"{batch_record} is not a batch record: it has no readable batch.json",
                           fix="give a folder such as archive/_batches/<UTC time>/") from None
    return [t["params_file"] for t in data["tenants"] if t["status"] != "ok"]


def run_batch(files: list[str], *, jobs: int | None = None, steps: list[str] | None = None,
              archive: Path | None = None, cell_timeout: int = runner.CELL_TIMEOUT,
              dask_scheduler: str | None = None, progress: Callable[[str], None] = print) -> tuple[Path, pd.DataFrame]:
    """Run every valid tenant; returns the batch record's folder and the summary table."""
    archive = (archive or paths.project_root() / "archive").resolve()
    valid, outcomes = validate_all([str(Path(f).resolve()) for f in files])
    for bad in outcomes:
        progress(f"invalid: {bad['params_file']}: {bad['diagnosis']}")
    total = len(valid)
    if dask_scheduler:
        from distributed import Client
        from distributed import as_completed as dask_completed

        with Client(dask_scheduler) as client:
            futures = [client.submit(run_one, f, str(archive), steps, cell_timeout, pure=False) for f in valid]
            for done, future in enumerate(dask_completed(futures), start=1):
                outcomes.append(_report(future.result(), done, total, progress))
    else:   # processes, not threads: each tenant's own bookkeeping (papermill, HTML) then runs in parallel too
        with ProcessPoolExecutor(max_workers=jobs or os.cpu_count() or 2, mp_context=_workers()) as pool:
            futures = [pool.submit(run_one, f, str(archive), steps, cell_timeout) for f in valid]
            for done, future in enumerate(as_completed(futures), start=1):
                outcomes.append(_report(future.result(), done, total, progress))
    return _write_batch_record(archive, files, outcomes), summary(outcomes)


def _workers() -> Any:
    """Worker processes forked from a clean server that has imported the kit: as quick to start as a fork,
    without copying this process's ZMQ contexts and event loops, which are not fork-safe."""
    context = get_context("forkserver")
    context.set_forkserver_preload(["runbook_lib.batch"])
    return context


def _report(outcome: dict[str, Any], done: int, total: int, progress: Callable[[str], None]) -> dict[str, Any]:
    progress(f"[{done}/{total}] {outcome['tenant']}: {outcome['status']} in {outcome['duration_s']:.0f} s, "
             f"{outcome['writes']} writes" + (f"; {outcome['failing_step']}: {outcome['diagnosis']}"
                                              if outcome["status"] != "ok" else ""))
    return outcome


def summary(outcomes: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["tenant", "status", "duration_s", "writes", "failing_step", "diagnosis", "record"]
    return pd.DataFrame(sorted(outcomes, key=lambda o: o["tenant"]), columns=columns)


def _write_batch_record(archive: Path, files: list[str], outcomes: list[dict[str, Any]]) -> Path:
    tmp, final = records.new_record_dir(archive, BATCHES)
    data = {"files": files, "tenants": sorted(outcomes, key=lambda o: o["tenant"]),
            "status": "ok" if all(o["status"] == "ok" for o in outcomes) else "failed"}
    (tmp / "batch.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    summary(outcomes).to_csv(tmp / "summary.csv", index=False)
    return records.seal(tmp, final, {"kind": "batch", "tenants": len(outcomes)})
