"""``runbook run``: execute a tenant's notebooks headlessly and archive the record, whatever happens.

Before the first request: the parameters are checked offline (:mod:`runbook_lib.context.preflight`), the tenant's
lock is taken (:mod:`runbook_lib.engine.locks`, keyed by tenant ID, whatever the archive folder), and any record a
killed run left is sealed from its journal. Then a record folder is opened with its journal, and every step
runs in **one kernel** (imports and start-up paid once per run). Each notebook is parameterized the way
papermill does it (an ``injected-parameters`` cell) and executed with nbclient, and written to the record
**once**, when the step ends: crash safety is the journal's job, not a notebook rewritten after every cell.

Endings: a step that fails stops the run (troubleshooting still runs on the failures); the first Ctrl-C asks
the running step to stop before its next request (the request in flight finishes and is journaled); a
second Ctrl-C or a SIGTERM stops at once. Every ending seals the record (``ok``, ``failed`` or
``interrupted``), holding every change the tenant accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import find_kernel_specs
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_event_loop, run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from .. import __version__, paths
from ..config import params as params_mod
from ..config import registry
from ..context import preflight
from ..engine import interrupts, journal, locks
from ..engine.results import STEP_MIME, StepRecord
from ..records import store as records
from ..steps import diagnose

KERNEL = "runbook-kit"
CELL_TIMEOUT = 600
#: how long a new kernel may take to answer (a busy machine is slow to start Python and import)
KERNEL_START_TIMEOUT = 120
STOP_FILE = "stop-requested"


@dataclass
class RunResult:
    record: Path
    steps: list[StepRecord]
    status: str  # ok | failed | interrupted
    manifest_sha256: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def writes(self) -> int:
        return sum(int(s.counts.get("writes", 0)) for s in self.steps)


@cache
def kernel_name() -> str:
    """The kit's kernel when installed (``make``), else the environment's own python3."""
    return KERNEL if KERNEL in find_kernel_specs() else "python3"


@cache
def _template(path: Path) -> str:
    """A notebook as papermill reads it (every cell with its tags), without the outputs stored in it (a cell
    a failure leaves unexecuted must not show an old run's output, least of all an old step record) nor the
    widget state a JupyterLab save left (an old session's, and most of a record's bytes); read once per process
    and kept as JSON, from which each step makes its own copy."""
    nb = load_notebook_node(str(path))
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return json.dumps(nb)


def step_record(nb: nbformat.NotebookNode, name: str) -> StepRecord:
    """The record a step published into its executed notebook (the last one, if re-run)."""
    found = [
        out["data"][STEP_MIME]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if STEP_MIME in out.get("data", {})
    ]
    if found:
        return StepRecord.from_json(found[-1])
    errors = [
        f"{out['ename']}: {out['evalue']}"
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    return StepRecord(
        name,
        status="failed",
        error=errors[0] if errors else "the notebook stopped before its step started (see the executed notebook)",
    )


@cache
def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=paths.project_root(),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


#: the kernels of the runs going on in this process (a batch runs several in threads), for stop_now()
_RUNNING: set[Kernel] = set()
_RUNNING_LOCK = threading.Lock()


def stop_now() -> None:
    """Stop every run of this process at once (a batch's second Ctrl-C): kill their kernels. Each run then seals
    its record ``interrupted`` from its journal; a run whose stop file exists does not retry a dead kernel."""
    with _RUNNING_LOCK:
        kernels = list(_RUNNING)
    for kernel in kernels:
        kernel.kill()


def _quiet_dead_kernel() -> None:
    """A stop at once leaves the cell's nbclient task to end with DeadKernelError when its kernel is killed; the
    sealed record says what happened, so asyncio's late report of that task is not shown as a traceback."""
    loop = ensure_event_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), DeadKernelError):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def sockets_folder() -> str:
    """A private folder (mode 0700) for a kernel's IPC sockets; whoever makes it removes it when the kernel stops."""
    base = "/tmp" if os.path.isdir("/tmp") else None  # a socket's path must stay under about 100 bytes
    return tempfile.mkdtemp(prefix="runbook-kernel-", dir=base)


def ipc_manager(sockets: str) -> AsyncKernelManager:
    """The kit's kernel, talking over IPC in ``sockets`` (on POSIX): never TCP on loopback, where any account on
    the machine could listen in, and so no warning about it."""
    over_ipc = {"transport": "ipc", "connection_file": os.path.join(sockets, "kernel.json")}
    return AsyncKernelManager(kernel_name=kernel_name(), **(over_ipc if os.name == "posix" else {}))


class Kernel:
    """One kernel, and one client talking to it, for all the steps of a run (and, in a batch, for the runs of one
    thread one after another): start-up, imports and the client's readiness wait are paid once. Each run tells it
    its journal and stop file (:meth:`use`). Each step still builds its own transport, sign-in and msal objects,
    so recordings stay per step (and nbval, which runs every notebook alone, would catch a step leaning on an
    earlier one).

    Its client talks to it over IPC (Unix sockets in a folder of its own, mode 0700, removed when it stops), as
    ``runbook lab``'s kernels do, never over TCP on loopback, where any account on the machine could listen in."""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}

    def __enter__(self) -> Kernel:
        self.sockets = sockets_folder()
        self.manager = ipc_manager(self.sockets)
        run_sync(self.manager.start_kernel)()
        self.client = self.manager.client()
        self.client.start_channels()
        run_sync(self.client.wait_for_ready)(timeout=KERNEL_START_TIMEOUT)
        self.client.allow_stdin = False
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        if self.env:
            self.use(self.env)
        return self

    def use(self, env: dict[str, str]) -> None:
        """Give the kernel a run's environment (its journal and stop file: paths, never a secret); a kernel that
        died meanwhile is started anew first."""
        if not run_sync(self.manager.is_alive)():
            self.restart()
        self.env = env
        code = f"import os; os.environ.update({json.dumps(env)})"
        run_sync(self.client.execute_interactive)(code, silent=True, store_history=False, timeout=KERNEL_START_TIMEOUT)

    def kill(self) -> None:
        """Kill the kernel process outright: the cell running gets a dead kernel."""
        pid = getattr(self.manager.provisioner, "pid", None)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        """After a dead kernel or a hung cell: a new kernel (new process, new ports), with the run's environment."""
        self.__exit__()
        self.__enter__()

    def __exit__(self, *exc: object) -> None:
        with _RUNNING_LOCK:
            _RUNNING.discard(self)
        self.client.stop_channels()
        try:
            if self.manager.has_kernel:
                run_sync(self.manager.shutdown_kernel)(now=True)
        finally:
            shutil.rmtree(self.sockets, ignore_errors=True)


class _StepClient(NotebookClient):
    """nbclient on the run's own kernel and client. nbclient's own set-up would add Ctrl-C and SIGTERM handlers
    that shut the kernel down mid-request (and, removed, leave Python's default handler in place of the run's),
    and open a new client per notebook, each waiting for the kernel to be ready; the run owns the kernel, its
    client and the signals, so this set-up does nothing."""

    @asynccontextmanager
    async def async_setup_kernel(self, **kwargs: Any) -> AsyncIterator[None]:
        yield


class _Stop(interrupts.StopSignals):
    """Ctrl-C and SIGTERM during a run. The first Ctrl-C creates the stop file, which the kernel checks
    before each request; a second Ctrl-C, or SIGTERM, raises KeyboardInterrupt here at once."""

    def __init__(self, stop_file: Path, report: Callable[[str], None]) -> None:
        super().__init__()
        self.stop_file = stop_file
        self.report = report

    def handle(self, signum: int) -> None:
        if signum == signal.SIGTERM or self.count > 1:
            raise KeyboardInterrupt
        self.stop_file.touch()
        self.report(
            "Stopping: the step finishes the request in flight, records it and stops (Ctrl-C again to "
            "stop at once; the record is sealed either way)."
        )


def _execute(
    spec: registry.StepSpec,
    notebooks: Path,
    parameters: dict[str, Any],
    cell_timeout: int,
    kernel: Kernel,
    current: dict[str, Any],
    stop_file: Path,
) -> tuple[nbformat.NotebookNode, StepRecord]:
    """One notebook, parameterized as papermill does and executed in the run's kernel; retried once in a new
    kernel if its kernel died or a cell hung (every step reads before it writes, so that is safe), unless the
    run is stopping."""
    problem = ""
    for attempt in (1, 2):
        if problem:
            kernel.restart()
        nb = parameterize_notebook(nbformat.from_dict(json.loads(_template(notebooks / spec.notebook))), parameters)
        for cell in nb.cells:  # the injected cell comes without an ID, which nbformat will soon require
            cell.setdefault("id", "injected-parameters")
        current["nb"] = nb
        client = _StepClient(
            nb,
            km=kernel.manager,
            kernel_name=kernel_name(),
            timeout=cell_timeout,
            record_timing=False,
            store_widget_state=False,  # a headless run shows no widget: its state would be most of the record
            allow_errors=False,
        )
        client.kc = kernel.client
        try:
            client.execute()
        except CellExecutionError:
            pass  # the step published its failure into the notebook; read it below
        except (DeadKernelError, CellTimeoutError, TimeoutError, RuntimeError) as error:
            if stop_file.exists():
                return nb, StepRecord(spec.name, status="interrupted", error="the run was stopped at once")
            problem = f"attempt {attempt}: " + (
                f"a cell ran longer than the cell timeout ({cell_timeout} s)"
                if isinstance(error, (CellTimeoutError, TimeoutError))
                else f"the kernel died ({type(error).__name__}: {str(error)[:160]})"
            )
            continue
        result = step_record(nb, spec.name)
        if problem:
            result.facts.retried = problem
        return nb, result
    return current["nb"], StepRecord(spec.name, status="failed", error=f"{problem}; retried once, giving up")


def run(
    params: params_mod.Params,
    *,
    archive: Path | None = None,
    steps: list[str] | None = None,
    progress: Callable[[str], None] = print,
    cell_timeout: int = CELL_TIMEOUT,
    notebooks: Path | None = None,
    signing_key: Path | None = None,
    wait_lock: float = 0.0,
    stop_file: Path | None = None,
    kernel: Kernel | None = None,
) -> RunResult:
    """Run the steps for one tenant and seal the record, however the run ends. ``stop_file``: a file whose
    existence stops the run before its next request (a batch shares one among its runs); by default the run's
    own, which its Ctrl-C handling creates. ``kernel``: one to reuse (a batch thread's); by default a new one."""
    archive = archive or paths.archive_dir()
    notebooks = notebooks or paths.project_root() / "notebooks"
    preflight.require(params, archive=archive, source=f"the parameters of {params.tenant}")
    with locks.tenant_lock(params, wait_seconds=wait_lock, command="run"):
        records.seal_abandoned(archive, params.tenant, holding=params, signing_key=signing_key, report=progress)
        record = records.open_record(
            archive,
            params.tenant,
            {
                "tenant_id": params.tenant_id,
                "mode": params.mode,
                "parameters": params.public(),
                "kit_version": __version__,
                "git_commit": _git_commit(),
                "local_account": locks.local_account(),
                "started_by": "runbook run",
            },
        )
        log = journal.Journal(record / journal.JOURNAL_FILE)
        own_stop_file = record / STOP_FILE
        stop_file = stop_file or own_stop_file
        env = {journal.JOURNAL_ENV: str(log.path), journal.STOP_FILE_ENV: str(stop_file)}
        results: list[StepRecord] = []
        files: dict[str, list[str]] = {}
        current: dict[str, Any] = {}
        status, note = "failed", ""
        stop = _Stop(stop_file, lambda text: print(text, file=sys.stderr))
        paths.forget_tokens(params.tenant)
        try:
            with stop, contextlib.nullcontext(kernel) if kernel else Kernel() as run_kernel:
                run_kernel.use(env)
                for name in steps or params.steps:
                    spec = registry.BY_NAME[name]
                    if stop_file.exists():
                        results.append(StepRecord(name, status="not started", error="the run was interrupted first"))
                        continue
                    if any(r.status in ("failed", "interrupted") for r in results) and not spec.after_failure:
                        results.append(StepRecord(name, status="skipped", error="an earlier step failed"))
                        continue
                    parameters: dict[str, Any] = {"parameters": params.public(), "params_file": "", "overrides": {}}
                    if spec.after_failure:
                        parameters["run_errors"] = diagnose.failure_lines(results)
                    log.append("step", step=name, event="started")
                    current.clear()
                    nb, result = _execute(spec, notebooks, parameters, cell_timeout, run_kernel, current, stop_file)
                    current.clear()
                    log.append("step", step=name, event="ended", status=result.status)
                    results.append(result)
                    files[name] = records.write_step(record, nb, result, params.mode)
                    progress(result.summary())
            status = (
                "interrupted"
                if stop_file.exists() or any(r.status == "interrupted" for r in results)
                else "ok"
                if all(r.status == "ok" for r in results)
                else "failed"
            )
        except KeyboardInterrupt:
            _quiet_dead_kernel()
            stop_now()  # a kernel the run did not start (one it was given) would otherwise go on with the cell
            status, note = "interrupted", "stopped at once (a second Ctrl-C, or SIGTERM)"
        except BaseException as crash:
            note = f"the runner stopped on an unexpected error: {type(crash).__name__}: {str(crash)[:200]}"
            raise
        finally:
            paths.forget_tokens(params.tenant)
            own_stop_file.unlink(missing_ok=True)
            entries = journal.read(log.path) if log.path else []
            done = {r.step for r in results}
            for unfinished in records.steps_from_journal(entries):
                if unfinished.step not in done:
                    files[unfinished.step] = records.write_step(record, current.get("nb"), unfinished, params.mode)
                    results.append(unfinished)
            results = [records.with_journal(r, entries) for r in results]
            run_entry = next((e for e in entries if e.get("kind") == "run"), {})
            manifest = records.manifest_for(
                run_entry,
                results,
                entries,
                status=status,
                note=note,
                files=files,
                finished=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            digest = records.seal(record, manifest, signing_key=signing_key)
        return RunResult(record, results, status, digest)
