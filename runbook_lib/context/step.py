"""What a notebook's setup cell starts: the validated parameters, transport, sign-in, API clients, change
executor and record of one step.

The step publishes its record (status, changes, checks, request counts, facts) as an output of the
notebook, under the MIME type :data:`STEP_MIME`, when it finishes or fails. ``runbook run`` reads it back
from the executed notebook, so the notebook file is the whole truth of what the step did; the changes are
also in the run's journal the moment they happen (:mod:`runbook_lib.engine.journal`). Errors of the kit are shown
as their message and fix, without a stack trace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import endpoints
from ..config import params as params_mod
from ..engine import journal
from ..engine.changes import Change, changes_frame
from ..engine.executor import Executor
from ..engine.results import STEP_MIME, Identity, StepRecord
from ..errors import Interrupted, RunbookError
from ..wire.auth import OperatorSignIn
from ..wire.graph import Graph
from ..wire.transport import open_transport
from .session import NotebookRun

_current: Step | None = None


class Step:
    """One notebook's run against one tenant. ``run``: the run context a notebook opened itself (run by hand,
    papermill, nbconvert); none when ``runbook run`` started the kernel, which holds the context itself."""

    def __init__(self, name: str, params: params_mod.Params, run: NotebookRun | None = None) -> None:
        self.name = name
        self.params = params
        self.run = run
        self.endpoints = endpoints.for_params(params)
        self.transport = open_transport(params, name)
        self.clock = self.transport.clock
        self.result = StepRecord(name)
        self.facts = self.result.facts
        self.journal = run.journal if run else journal.for_kernel()
        self._signin: OperatorSignIn | None = None
        self._graph: Graph | None = None
        self._exchange: Graph | None = None
        self._executor: Executor | None = None

    @property
    def interactive(self) -> bool:
        """Somebody is at the notebook (JupyterLab by hand), who can act on what a step shows them."""
        return self.run is not None and self.run.started_by.startswith("Jupyter")

    @property
    def record_folder(self) -> Path | None:
        """The record this step is written into (its run's, or its own when run by hand)."""
        return self.journal.path.parent if self.journal.path else None

    @property
    def signin(self) -> OperatorSignIn:
        if self._signin is None:
            self._signin = OperatorSignIn(self.params, self.endpoints, self.transport, on_identity=self._signed_in)
        return self._signin

    @property
    def graph(self) -> Graph:
        """Graph as the operator; the first call signs in (device code or client credentials)."""
        if self._graph is None:
            self._graph = Graph(self.endpoints.graph, self.signin.token, self.transport, self.params.network)
        return self._graph

    @property
    def exchange(self) -> Graph:
        """Exchange Online's admin API as the operator (a second sign-in, for that resource)."""
        if self._exchange is None:
            signin = OperatorSignIn(self.params, self.endpoints, self.transport, resource="exchange")
            self._exchange = Graph(self.endpoints.exchange_admin, signin.token, self.transport, self.params.network)
        return self._exchange

    @property
    def executor(self) -> Executor:
        """Applies this step's changes (or, in plan mode, only records them)."""
        if self._executor is None:
            self._executor = Executor.for_step(self)
        return self._executor

    def _signed_in(self, identity: Identity) -> None:
        """Who the record names: the identity in the token, not the local account."""
        if self.facts.signed_in is None:
            self.facts.signed_in = identity
            self.journal.append("identity", step=self.name, identity=identity.__dict__)

    def made_outside(self, change: Change) -> Change:
        """A change the tenant made because of this step but not through its executor (a consent the mailbox gave
        at verify's test sign-in, a test message sent): journaled the moment it is known, then recorded."""
        self.journal.append("change", step=self.name, change=change.as_dict())
        return self.record(change)

    def record(self, change: Change) -> Change:
        """Add a change to the step's record; returns it so a cell can show it."""
        self.result.changes.append(change)
        return change

    def artifact(self, name: str, text: str) -> None:
        """Keep a file (a script, a values sheet) with the step's record."""
        self.result.artifacts[name] = text

    def view(self, name: str) -> Any:
        """A kept file, shown in the notebook."""
        from IPython.display import Markdown

        language = {"ps1": "powershell", "json": "json"}.get(name.rsplit(".", 1)[-1], "")
        return Markdown(f"`{name}`, saved with the record:\n\n```{language}\n{self.result.artifacts[name]}\n```")

    def changes(self) -> Any:
        """The step's changes so far, as a table."""
        return changes_frame(self.result.changes)

    def warnings(self) -> Any:
        """What the step noticed but did not stop for (an optional read that failed, and why)."""
        from IPython.display import Markdown

        return Markdown("\n".join(f"- {w}" for w in self.facts.warnings) or "No warnings.")

    def finish(self) -> None:
        """Close the transport (writing a recording in record mode) and publish the record."""
        self._close("ok")

    def fail(self, error: BaseException) -> None:
        """Record the failure, saying which changes were already made, so the operator knows where things stand."""
        text = error.explain() if isinstance(error, RunbookError) else f"{type(error).__name__}: {error}"
        made = [f"{c.resource} {c.name} ({c.action})" for c in self.result.changed]
        text += (
            (
                "\nAlready changed before the failure: "
                + "; ".join(made)
                + ". Running the step again after the fix continues from there."
            )
            if made
            else "\nNothing was changed in the tenant."
        )
        self.result.error = text
        self._close("interrupted" if isinstance(error, (Interrupted, KeyboardInterrupt)) else "failed")

    def retries(self) -> Any:
        """Each retry of this step so far (throttling, replication delays, lost answers) and how long it waited."""
        import pandas as pd

        return pd.DataFrame(
            self.transport.counts.waits, columns=["request", "status", "code", "wait_seconds", "attempt"]
        )

    def _close(self, status: str) -> None:
        if self.result.status != "running":
            return
        self.result.status = status  # type: ignore[assignment]
        if self.facts.secret:  # when the secret's days left were counted (a replay's clock is the recording's)
            self.facts.as_of = self.clock.now().isoformat(timespec="seconds")
        problem: RunbookError | None = None
        try:
            self.transport.close()
        except RunbookError as error:  # e.g. a recording refused for holding a secret: never hide it
            problem = error
            self.result.status = "failed"
            self.result.error = "\n".join(filter(None, [self.result.error, error.explain()]))
        self.result.counts = self.transport.counts.as_dict()
        _publish(self.result)
        if self.run is not None:
            self.run.seal(self.result)
        if problem is not None and status == "ok":
            raise problem


def _publish(record: StepRecord) -> None:
    try:
        from IPython.display import display
    except ImportError:  # outside Jupyter: nothing to publish to
        return
    data = {"text/plain": record.summary(), STEP_MIME: json.loads(json.dumps(record.to_json(), default=str))}
    display(data, raw=True)


def _show_error(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython custom exception handler: record the failure, show a kit error as message and fix.

    IPython discards what a handler returns when a cell raises, so the handler shows it itself."""
    if _current is not None:
        _current.fail(value)
    if isinstance(value, RunbookError):
        stb = [f"{etype.__name__}: {value.explain()}"]
    else:
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    shell._showtraceback(etype, value, stb)
    return stb


def start(name: str, namespace: Mapping[str, Any]) -> Step:
    """Validate the notebook's parameters (the cell's, or the trainee's file its ``params_file`` names: see
    :func:`runbook_lib.context.ui.notebook_params`) and switch the transport on; call from the setup cell."""
    from .ui import notebook_params

    global _current
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        shell.set_custom_exc((Exception, KeyboardInterrupt), _show_error)
        import pandas as pd

        pd.set_option("display.max_colwidth", None)  # addresses and URLs are shown whole, never cut short
    if _current is not None:
        _current.finish()  # the setup cell was run again: close the previous step first
        _current = None
    params, notes = notebook_params(namespace)
    run = None if journal.started_by_runner() else NotebookRun(name, params, shell).open()
    try:
        _current = Step(name, params, run)
    except BaseException as error:
        if run is not None:  # its record is sealed, saying why, and the lock let go
            run.seal(StepRecord(name, status="failed", error=f"the step could not start: {error}"))
        raise
    for note in notes:
        _current.facts.warn(note)
    return _current
