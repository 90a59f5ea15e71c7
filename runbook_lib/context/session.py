"""One run context, however a notebook is started: JupyterLab by hand, papermill (its command line, its Python
API, a scheduler's operator), nbconvert, nbval in the tests.

``runbook run`` opens a run's context around its kernel (:mod:`runbook_lib.running.runner`) and hands the kernel its
journal. A notebook started any other way has nothing around it, so its setup cell
(:func:`runbook_lib.context.step.start`) opens the context here, inside the kernel, with the same guarantees, before
the first request:

* the offline checks of a run (:mod:`runbook_lib.context.preflight`: the reason and ticket of a live change included);
* the tenant's lock (:mod:`runbook_lib.engine.locks`), held from the setup cell until the step ends; a ``runbook run``
  of the same tenant meanwhile is refused, naming this notebook as the holder, and the other way round;
* a record folder in the archive (``RUNBOOK_ARCHIVE``, else ``archive/``) whose journal, fsynced, holds every
  change the tenant accepts, and who signed in;
* no operator token cache outlives the step: it is deleted when the step starts and when it ends.

**A record per notebook.** Each notebook run is a record of its own, sealed when its step ends (``step.finish()``,
a failure, a Ctrl-C) or when its kernel stops in the middle (shut down or restarted: the kernel's exit seals it).
A kernel killed outright leaves its folder with the journal, and the next command for the tenant seals it from
the journal, as it does for a killed ``runbook run``. Why not one record for a whole sitting: a person works
through the notebooks over hours, each in a kernel of its own that may be closed at any moment; a record sealed
when its step ends is never left open between notebooks, no lock is held while they read, and ``runbook records``
lists them in order, each saying how it was started.

**The executed notebook** is rebuilt from what the kernel ran: each cell's source and what it showed (displays,
results, printed text, errors), captured as it happens and laid onto the step's notebook in ``notebooks/``, so the
record holds the prose, the code as run (edited cells and injected parameters included) and the outputs, like a
``runbook run``'s, with its HTML page beside it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat

from .. import __version__, paths
from ..config.params import Params
from ..engine import journal, locks
from ..engine.results import StepRecord
from ..records import store as records
from . import preflight

#: how the kit names what started a notebook's kernel, by a word of the parent process's command line
STARTERS = (
    ("papermill", "papermill"),
    ("nbconvert", "nbconvert"),
    ("pytest", "pytest (nbval)"),
    ("jupyter-lab", "JupyterLab"),
    ("jupyterlab", "JupyterLab"),
    ("jupyter_server", "JupyterLab"),
    ("jupyter-server", "JupyterLab"),
    ("jupyter-notebook", "Jupyter Notebook"),
)


def started_by() -> str:
    """What started this kernel, as far as the kernel can tell: JupyterLab names the notebook's session; papermill,
    nbconvert and pytest are the kernel's parent process."""
    if os.environ.get("JPY_SESSION_NAME"):
        return "JupyterLab"
    try:
        command = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = ""
    return next((name for word, name in STARTERS if word in command), "a Jupyter kernel")


class Capture:
    """The cells a kernel runs and what each shows, captured through IPython's hooks (cell events, the display
    publisher, the display hook, standard output and error), never by reading the notebook file."""

    #: the last input an earlier step of this kernel captured: a step's record starts after it
    consumed = 0

    def __init__(self, shell: Any) -> None:
        """Start capturing; the cells the kernel ran before, since an earlier step's record ended (the parameters
        papermill injected, the setup cell now running), are taken from its input history and results."""
        self.shell = shell
        since = Capture.consumed + 1
        history = list(shell.user_ns.get("In", []))
        results = shell.user_ns.get("Out", {})
        self.cells: list[nbformat.NotebookNode] = []
        for number in range(max(since, 1), len(history)):
            cell = nbformat.v4.new_code_cell(history[number])
            cell.execution_count = number
            if number in results:
                data = shell.display_formatter.format(results[number])[0]
                cell.outputs.append(nbformat.v4.new_output("execute_result", data=data, execution_count=number))
            self.cells.append(cell)
        self._undo: list[Callable[[], None]] = []
        shell.events.register("pre_run_cell", self._pre)
        shell.events.register("post_run_cell", self._post)
        self._undo.append(lambda: shell.events.unregister("pre_run_cell", self._pre))
        self._undo.append(lambda: shell.events.unregister("post_run_cell", self._post))
        self._wrap(shell.display_pub, "publish", self._display)
        self._wrap(shell.displayhook, "write_format_data", self._result)
        for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
            self._wrap(stream, "write", lambda text, name=name: self._stream(name, text))

    def _wrap(self, owner: Any, method: str, tap: Callable[..., None]) -> None:
        original = getattr(owner, method)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with contextlib.suppress(Exception):  # capturing must never break what the notebook shows
                tap(*args, **kwargs)
            return original(*args, **kwargs)

        setattr(owner, method, wrapped)
        self._undo.append(lambda: owner.__dict__.pop(method, None))

    def close(self) -> None:
        Capture.consumed = self.shell.execution_count
        while self._undo:
            with contextlib.suppress(Exception):
                self._undo.pop()()

    def _outputs(self) -> list[dict[str, Any]]:
        if not self.cells:  # output of the setup cell before its pre_run_cell was seen: give it a cell
            self.cells.append(nbformat.v4.new_code_cell(""))
        return self.cells[-1]["outputs"]

    def _pre(self, info: Any) -> None:
        cell = nbformat.v4.new_code_cell(info.raw_cell)
        cell.execution_count = self.shell.execution_count
        self.cells.append(cell)

    def _post(self, result: Any) -> None:
        error = result.error_in_exec or result.error_before_exec
        if error is not None:
            text = error.explain() if hasattr(error, "explain") else str(error)
            self._outputs().append(
                nbformat.v4.new_output("error", ename=type(error).__name__, evalue=text, traceback=[])
            )

    def _display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None, **_: Any) -> None:
        self._outputs().append(nbformat.v4.new_output("display_data", data=dict(data), metadata=dict(metadata or {})))

    def _result(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self._outputs().append(
            nbformat.v4.new_output(
                "execute_result",
                data=dict(data),
                metadata=dict(metadata or {}),
                execution_count=self.shell.execution_count,
            )
        )

    def _stream(self, name: str, text: str) -> None:
        outputs = self._outputs()
        if outputs and outputs[-1].get("output_type") == "stream" and outputs[-1].get("name") == name:
            outputs[-1]["text"] += text
        else:
            outputs.append(nbformat.v4.new_output("stream", name=name, text=text))

    def notebook(self, template: Path) -> nbformat.NotebookNode:
        """The step's notebook (its prose and cells, outputs cleared) with each cell the kernel ran laid on the
        cell of the same source; a cell the notebook does not have (injected parameters, an edited cell) goes
        after the last one matched."""
        nb = nbformat.read(template, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        place = 0
        for ran in self.cells:
            found = next(
                (
                    i
                    for i, cell in enumerate(nb.cells)
                    if cell.cell_type == "code"
                    and cell.execution_count is None
                    and cell.source.strip() == ran.source.strip()
                ),
                None,
            )
            if found is None:
                nb.cells.insert(place, ran)
                place += 1
                continue
            nb.cells[found].outputs, nb.cells[found].execution_count = ran.outputs, ran.execution_count
            place = found + 1
        for index, cell in enumerate(nb.cells):
            cell.setdefault("id", f"cell-{index}")
        return nb


class NotebookRun:
    """The run context a notebook's setup cell opens when no ``runbook run`` started its kernel (see above)."""

    def __init__(self, step: str, params: Params, shell: Any, archive: Path | None = None) -> None:
        self.step = step
        self.params = params
        self.archive = archive or paths.archive_dir()
        self.started_by = started_by()
        self._stack = contextlib.ExitStack()
        self.record: Path | None = None
        self.journal = journal.Journal(None)
        self.capture: Capture | None = None
        self.shell = shell

    def open(self) -> NotebookRun:
        """Checks, lock, record folder and journal; nothing is opened when a check fails or the lock is held."""
        preflight.require(self.params, archive=self.archive, source=f"the parameters of {self.params.tenant}", run=True)
        command = f"notebook {self.step} ({self.started_by}, pid {os.getpid()})"
        self._stack.enter_context(locks.tenant_lock(self.params, command=command))
        try:
            records.seal_abandoned(self.archive, self.params.tenant, holding=self.params, report=print)
            self.record = records.open_record(
                self.archive,
                self.params.tenant,
                {
                    "tenant_id": self.params.tenant_id,
                    "mode": self.params.mode,
                    "parameters": self.params.public(),
                    "kit_version": __version__,
                    "local_account": locks.local_account(),
                    "started_by": self.started_by,
                },
            )
        except BaseException:
            self._stack.close()
            raise
        self.journal = journal.Journal(self.record / journal.JOURNAL_FILE)
        self.journal.append("step", step=self.step, event="started")
        paths.forget_tokens(self.params.tenant)
        if self.shell is not None:
            self.capture = Capture(self.shell)
        atexit.register(self._kernel_exit)
        return self

    def _kernel_exit(self) -> None:
        """The kernel stops with the step still running (shut down, restarted): seal what the journal holds."""
        if self.record is not None and not records.is_sealed(self.record):
            result = StepRecord(self.step, status="interrupted", error="the kernel stopped during this step")
            self.seal(result)

    def seal(self, result: StepRecord) -> Path | None:
        """Write the executed notebook, its HTML and the step's files, then the manifest, and seal; release the
        lock and forget the operator's tokens, however writing went."""
        record = self.record
        if record is None or records.is_sealed(record):
            return record
        try:
            self.journal.append("step", step=self.step, event="ended", status=result.status)
            self.journal.closed = True
            entries = journal.read(record / journal.JOURNAL_FILE)
            result = records.with_journal(result, entries)
            nb = (
                self.capture.notebook(paths.project_root() / "notebooks" / f"{self.step}.ipynb")
                if self.capture
                else None
            )
            files = {self.step: records.write_step(record, nb, result, self.params.mode)}
            manifest = records.manifest_for(
                entries[0],
                [result],
                entries,
                status=result.status if result.status in ("ok", "failed", "interrupted") else "failed",
                finished=datetime.now(UTC).isoformat(timespec="seconds"),
                files=files,
            )
            records.seal(record, manifest)
        finally:
            if self.capture is not None:
                self.capture.close()
            paths.forget_tokens(self.params.tenant)
            self._stack.close()
            atexit.unregister(self._kernel_exit)
        return record
