"""``runbook run``: execute a tenant's notebooks headlessly with papermill and archive the record.

A record is ``archive/<tenant>/<UTC timestamp>/``: each executed notebook, an HTML rendering of
each, and ``manifest.json`` (kit version and commit, parameters, operator, times, each step's status,
changes and request counts, sha256 of every file). It is written to a temporary folder and renamed,
so it appears whole or not at all, and an existing record is never overwritten.
"""
from __future__ import annotations

import getpass
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
import papermill
from jupyter_client.kernelspec import find_kernel_specs
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert import HTMLExporter

from . import __version__, auth, diagnose, paths, records
from . import params as params_mod
from .records import StepRecord
from .step import STEP_MIME

#: the troubleshooting step runs even after a failure, on this run's errors
TROUBLESHOOT = "06_troubleshoot"
#: the steps that change a tenant: what a plan runs (verifying a plan would only report what it plans)
CHANGING_STEPS = ("01_webex_connect_app", "02_azure_app_registration", "03_office365_mailbox")
KERNEL = "runbook-kit"
CELL_TIMEOUT = 600


@dataclass
class RunResult:
    record: Path
    steps: list[StepRecord]

    @property
    def ok(self) -> bool:
        return all(s.status == "ok" for s in self.steps)

    @property
    def writes(self) -> int:
        return sum(s.counts.get("writes", 0) for s in self.steps)


@cache
def kernel_name() -> str:
    """The kit's kernel when installed (``make``), else the environment's own python3."""
    return KERNEL if KERNEL in find_kernel_specs() else "python3"


def step_record(notebook: Path, name: str) -> StepRecord:
    """The record a step published into its executed notebook (the last one, if re-run)."""
    nb = nbformat.read(notebook, as_version=4)
    found = [out["data"][STEP_MIME] for cell in nb.cells if cell.cell_type == "code"
             for out in cell.get("outputs", []) if STEP_MIME in out.get("data", {})]
    if not found:
        errors = [f"{out['ename']}: {out['evalue']}" for cell in nb.cells if cell.cell_type == "code"
                  for out in cell.get("outputs", []) if out.get("output_type") == "error"]
        return StepRecord(name, status="failed", error=errors[0] if errors else
                          "the notebook stopped before its step started (see the executed notebook)")
    return StepRecord(**found[-1])


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.project_root(), capture_output=True,
                             text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _html(notebook: Path, record: StepRecord) -> str:
    """The notebook for reading without Jupyter: the step's outcome and changes first, then the prose and
    outputs, no code."""
    nb = nbformat.read(notebook, as_version=4) if notebook.exists() else nbformat.v4.new_notebook()
    summary = f"**Record of {record.step}: {record.status}**\n\n" + (
        records.changes_frame(record.changes).to_html(index=False) if record.changes else "No changes.")
    if record.error:
        summary += f"\n\n**Error:**\n\n```\n{record.error}\n```"
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(summary))
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    return body


class _Kernel:
    """One kernel for all the steps of a run: imports and start-up are paid once, not per notebook.
    Each step still builds its own transport, sign-in and msal objects, so recordings stay per step
    (and nbval, which runs every notebook alone, would catch a step leaning on an earlier one)."""

    def __enter__(self) -> "_Kernel":
        self.manager = AsyncKernelManager(kernel_name=kernel_name())
        run_sync(self.manager.start_kernel)()
        return self

    def restart(self) -> None:
        """After a dead kernel or a hung cell: a new kernel (new process, new ports) for the retry."""
        self.__exit__()
        self.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.manager.has_kernel:
            run_sync(self.manager.shutdown_kernel)(now=True)


def _execute(name: str, notebooks: Path, output: Path, parameters: dict[str, Any], cell_timeout: int,
             kernel: _Kernel) -> StepRecord:
    """One notebook, retried once (in a fresh kernel) if its kernel died or a cell hung: every step reads
    before it writes, so running it again is safe."""
    problem = ""
    for attempt in (1, 2):
        if problem:
            kernel.restart()
        try:
            # no `cwd=`: papermill would chdir the whole process, breaking the other runs of a batch;
            # the kit resolves every path from the project root instead (runbook_lib.paths)
            papermill.execute_notebook(str(notebooks / f"{name}.ipynb"), str(output), parameters=parameters,
                                       kernel_name=kernel_name(), progress_bar=False, km=kernel.manager,
                                       execution_timeout=cell_timeout, log_output=False)
        except papermill.PapermillExecutionError:
            pass  # the step published its failure into the notebook; read it below
        except (DeadKernelError, CellTimeoutError, TimeoutError, RuntimeError) as error:
            problem = (f"attempt {attempt}: " + ("a cell ran longer than the cell timeout "
                       f"({cell_timeout} s)" if isinstance(error, (CellTimeoutError, TimeoutError))
                       else f"the kernel died ({type(error).__name__}: {str(error)[:160]})"))
            continue
        result = step_record(output, name)
        if problem:
            result.facts["retried"] = problem
        return result
    return StepRecord(name, status="failed", error=f"{problem}; retried once, giving up",
                      facts={"retried": problem})


def run(params: params_mod.Params, *, archive: Path | None = None, steps: list[str] | None = None,
        progress: Any = print, cell_timeout: int = CELL_TIMEOUT, notebooks: Path | None = None) -> RunResult:
    """Run the steps for one tenant and archive the record. Parameters are validated already.
    A second run for the same tenant while one is going is refused (a lock in the archive)."""
    archive = archive or paths.project_root() / "archive"
    notebooks = notebooks or paths.project_root() / "notebooks"
    with records.tenant_lock(archive, params.tenant), _Kernel() as kernel:
        tmp, final = records.new_record_dir(archive, params.tenant)
        started = datetime.now(timezone.utc)
        results: list[StepRecord] = []
        auth.clear_cache(params)
        try:
            for name in steps or params.steps:
                if any(r.status == "failed" for r in results) and name != TROUBLESHOOT:
                    results.append(StepRecord(name, status="skipped", error="an earlier step failed"))
                    continue
                parameters = params.public()
                if name == TROUBLESHOOT:
                    parameters["run_errors"] = diagnose.failure_lines([r.__dict__ for r in results])
                output = tmp / f"{name}.ipynb"
                result = _execute(name, notebooks, output, parameters, cell_timeout, kernel)
                results.append(result)
                for artifact, text in result.artifacts.items():
                    (tmp / f"{name}.{artifact}").write_text(text, encoding="utf-8")
                (tmp / f"{name}.html").write_text(_html(output, result), encoding="utf-8")
                progress(result.summary())
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written record behind
            raise
        finally:
            auth.clear_cache(params)
        manifest = {
            "kit_version": __version__, "git_commit": _git_commit(), "tenant": params.tenant,
            "parameters": params.public(), "operator": getpass.getuser(),
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "status": "ok" if all(r.status == "ok" for r in results) else "failed",
            "steps": [{**{k: v for k, v in r.__dict__.items() if k != "artifacts"},
                       "notebook": f"{r.step}.ipynb" if (tmp / f"{r.step}.ipynb").exists() else None,
                       "files": [f"{r.step}.{a}" for a in r.artifacts]} for r in results],
            "totals": {k: sum(r.counts.get(k, 0) for r in results) for k in ("reads", "writes", "auth", "retries")},
        }
        return RunResult(records.seal(tmp, final, manifest), results)
