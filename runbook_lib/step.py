"""What a notebook's setup cell starts: the validated parameters, transport, sign-in and Graph client
of one step, and the step's record.

The step publishes its record (status, changes, request counts, facts) as an output of the
notebook, under the MIME type :data:`STEP_MIME`, when it finishes or fails. ``runbook run`` reads
it back from the executed notebook, so the notebook file is the whole truth of what the step did.
Errors of the kit are shown as their message and fix, without a stack trace.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from . import endpoints, params as params_mod
from .auth import OperatorSignIn
from .errors import RunbookError
from .graph import Graph
from .records import Change, StepRecord, changes_frame
from .transport import Transport

STEP_MIME = "application/vnd.runbook.step+json"
_current: "Step | None" = None


class Step:
    """One notebook's run against one tenant."""

    def __init__(self, name: str, params: params_mod.Params) -> None:
        self.name = name
        self.params = params
        self.endpoints = endpoints.for_params(params)
        self.transport = Transport(params, name)
        self.clock = self.transport.clock
        self.result = StepRecord(name)
        self.facts = self.result.facts
        self.created: set[str] = set()
        self._signin: OperatorSignIn | None = None
        self._graph: Graph | None = None
        self._exchange: Graph | None = None
        self._planning: list[Change] | None = None

    @property
    def signin(self) -> OperatorSignIn:
        if self._signin is None:
            self._signin = OperatorSignIn(self.params, self.endpoints, self.transport)
        return self._signin

    @property
    def graph(self) -> Graph:
        """Graph as the operator; the first call signs in (device code or client credentials)."""
        if self._graph is None:
            self._graph = Graph(self.endpoints.graph, self.signin.token, self.transport)
        return self._graph

    @property
    def exchange(self) -> Graph:
        """Exchange Online's admin API as the operator (a second sign-in, for that resource)."""
        if self._exchange is None:
            signin = OperatorSignIn(self.params, self.endpoints, self.transport, resource="exchange")
            self._exchange = Graph(self.endpoints.exchange_admin, signin.token, self.transport)
        return self._exchange

    def record(self, change: Change) -> Change:
        """Add a change to the step's record; returns it so a cell can show it."""
        if self._planning is not None:
            self._planning.append(change)
        else:
            self.result.changes.append(change.as_dict())
        return change

    @contextmanager
    def planning(self) -> Iterator[list[Change]]:
        """Run ``ensure_*`` functions as a plan that is not part of this step's changes: verify uses it
        to compare the tenant with the desired state, with no write possible."""
        saved, self.params = self.params, self.params.model_copy(update={"apply": False})
        self._planning = []
        try:
            yield self._planning
        finally:
            self.params, self._planning = saved, None

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

    def finish(self) -> None:
        """Close the transport (writing a recording in record mode) and publish the record."""
        self._close("ok")

    def fail(self, error: BaseException) -> None:
        """Record the failure, saying which changes were already made, so the operator knows where things stand."""
        text = error.explain() if isinstance(error, RunbookError) else f"{type(error).__name__}: {error}"
        made = [f"{c['resource']} {c['name']} ({c['action']})" for c in self.result.changes
                if c["action"] in ("created", "updated")]
        text += ("\nAlready changed before the failure: " + "; ".join(made) +
                 ". Running the step again after the fix continues from there.") if made else \
            "\nNothing was changed in the tenant."
        self.result.error = text
        self._close("failed")

    def retries(self) -> Any:
        """Each retry of this step so far (throttling, replication delays) and how long it waited."""
        import pandas as pd

        return pd.DataFrame(self.transport.counts.waits, columns=["request", "status", "code", "wait_seconds", "attempt"])

    def _close(self, status: str) -> None:
        if self.result.status != "running":
            return
        self.result.status = status
        problem: RunbookError | None = None
        try:
            self.transport.close()
        except RunbookError as error:   # e.g. a recording refused for holding a secret: never hide it
            problem = error
            self.result.status = "failed"
            self.result.error = "\n".join(filter(None, [self.result.error, error.explain()]))
        self.result.counts = self.transport.counts.as_dict()
        _publish(self.result)
        if problem is not None and status == "ok":
            raise problem


def _publish(record: StepRecord) -> None:
    try:
        from IPython.display import display
    except ImportError:  # outside Jupyter: nothing to publish to
        return
    data = {"text/plain": record.summary(), STEP_MIME: json.loads(json.dumps(record.__dict__, default=str))}
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
    """Validate the notebook's parameters and switch the transport on; call from the setup cell."""
    global _current
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        shell.set_custom_exc((Exception,), _show_error)
        import pandas as pd

        pd.set_option("display.max_colwidth", None)   # addresses and URLs are shown whole, never cut short
    if _current is not None:
        _current.finish()  # the setup cell was run again: close the previous step first
        _current = None
    _current = Step(name, params_mod.from_namespace(namespace))
    return _current
