"""The one place that applies changes: plan mode returns them, apply mode sends their writes.

Given a :class:`~runbook_lib.engine.changes.Change` from a ``diff_*`` function, :meth:`Executor.apply`:

* returns it untouched when it needs no write (``unchanged``, or applied outside the kit), or when the
  parameters say ``apply: false`` (plan mode): nothing is sent;
* otherwise sends its write, and the moment the tenant accepts it, appends the applied change to the run's
  journal (fsynced) before doing anything else; only then is the change added to the step's record;
* a write whose answer was lost is repeated only when it is idempotent (the Graph client does that) or after
  a read (``Confirm``) shows it did not happen; a 403 names the permission and role the write needs.

This is the only code that knows about ``apply``: verify calls the diff functions and never an executor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from ..errors import GraphError, OutcomeUnknown, StepFailed
from . import interrupts
from .changes import Change, Confirm, Service, Write
from .journal import Journal


class NotKept(StepFailed):
    """The tenant accepted a write, and what had to be done with its answer at once failed (a new secret's value
    could not be stored); ``applied`` is the change, journaled and recorded."""

    def __init__(self, applied: Change, failure: Exception) -> None:
        self.applied = applied
        super().__init__(
            f"{applied.resource} {applied.name}: the tenant accepted the change, but what had to follow it failed "
            f"({type(failure).__name__}: {failure})"
        )


class Client(Protocol):
    """What the executor asks of an API client (the wire's Graph and Exchange clients, or a test's fake): one
    request. Handed in, so the engine stands below the wire and knows no Microsoft API."""

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        retry_codes: Iterable[str] = (),
        missing_ok: bool = False,
        idempotent: bool | None = None,
    ) -> Any: ...


class Executor:
    """Applies a step's changes through its API clients, journaling each accepted one."""

    def __init__(
        self,
        clients: Mapping[Service, Callable[[], Client]],
        journal: Journal,
        *,
        step: str,
        apply: bool,
        record: Callable[[Change], None],
    ) -> None:
        self.clients = clients
        self.journal = journal
        self.step = step
        self.apply_writes = apply
        self.record = record

    @classmethod
    def for_step(cls, step: Any) -> Executor:
        """The executor of a notebook's step: its clients, its journal, its ``apply`` parameter."""
        return cls(
            {"graph": lambda: step.graph, "exchange": lambda: step.exchange},
            step.journal,
            step=step.name,
            apply=step.params.apply,
            record=step.record,
        )

    @property
    def plan_only(self) -> bool:
        """``apply: false``: changes are planned and nothing is sent. The one place a step learns it."""
        return not self.apply_writes

    def apply(self, change: Change, *, keep: Callable[[Any], dict[str, Any]] | None = None) -> tuple[Change, Any]:
        """Apply one change; returns it as it now stands and the write's answer (None when nothing was sent).

        ``keep``: what must be done with the answer in the very moment the tenant accepted the write (a new
        secret's value into its store): it runs before the change is journaled, inside the window a Ctrl-C
        waits for, and what it returns joins the change's ``after``. If it fails, the change is journaled all
        the same (the tenant holds what it made), saying so, and :class:`NotKept` is raised with it."""
        write = change.write
        if write is None or change.action != "planned" or not self.apply_writes:
            self.record(change)
            return change, None
        if self.journal.closed:
            raise StepFailed(
                f"{change.resource} {change.name} was not changed: this step has ended and its record is sealed, so "
                "the change would be recorded nowhere",
                fix="run the notebook's setup cell again: it starts a new record",
                step=self.step,
            )
        with interrupts.deferred():  # a Ctrl-C waits until the accepted write is journaled
            answer = self._send(write)
            applied = change.applied
            if write.upsert and answer is None:  # 204: it existed already (another run made it): updated
                applied = replace(applied, action="updated", summary=applied.summary + " (it existed already)")
            if write.keep and isinstance(answer, dict):
                applied = replace(applied, after={**(applied.after or {}), **{k: answer.get(k) for k in write.keep}})
            failure: Exception | None = None
            if keep is not None:
                try:
                    kept = dict(keep(answer))
                    note = kept.pop("summary", "")  # how it was kept, in words, joins the change's summary
                    summary = "; ".join(filter(None, [applied.summary, note]))
                    applied = replace(applied, summary=summary, after={**(applied.after or {}), **kept})
                except Exception as error:  # the tenant holds it whatever happened here: journal it, then say so
                    failure = error
                    applied = replace(applied, summary=f"{applied.summary}; NOT KEPT: {type(error).__name__}")
            self.journal.append("change", step=self.step, change=applied.as_dict())
            self.record(applied)
        if failure is not None:
            raise NotKept(applied, failure) from failure
        return applied, answer

    def _send(self, write: Write) -> Any:
        client = self.clients[write.service]()
        try:
            return self._request(client, write)
        except OutcomeUnknown:
            if write.confirm is None:
                raise
            found = self._confirmed(write.confirm)
            if found is not None:
                return found
            return self._request(client, write)  # it did not happen: sending it again is safe

    @staticmethod
    def _request(client: Client, write: Write) -> Any:
        try:
            return client.request(
                write.method,
                write.path,
                body=write.body,
                headers=write.headers,
                retry_codes=write.retry_codes,
                idempotent=write.idempotent,
            )
        except GraphError as error:
            if error.status != 403 or not write.needs:
                raise
            raise StepFailed(
                f"Microsoft refused the change ({error.message})",
                fix=f"this change needs {write.needs}; sign in with an account that has it",
            ) from error

    def _confirmed(self, confirm: Confirm) -> dict[str, Any] | None:
        answer = self.clients[confirm.service]().request(
            confirm.method, confirm.path, body=confirm.body, params=dict(confirm.params or {}), idempotent=True
        )
        items = (answer or {}).get("value", []) if isinstance(answer, dict) else []
        return next((item for item in items if all(item.get(k) == v for k, v in confirm.match.items())), None)
