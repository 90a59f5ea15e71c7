"""What a step does to a tenant, as data: a :class:`Change` and the :class:`Write` that makes it.

The ``diff_*`` functions of each step compare the state they read with the desired state and return
changes; only :mod:`runbook_lib.engine.executor` sends their writes. A change is ``planned`` until the executor
has applied it, then ``created``, ``updated`` or ``removed``; ``unchanged`` carries no write. Like an
Ansible task result, a change says what was found (``before``) and what is wanted (``after``).
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("resource", "name", "action", "summary")
Action = Literal["created", "updated", "removed", "unchanged", "planned"]
Outcome = Literal["created", "updated", "removed"]
Service = Literal["graph", "exchange"]
#: the actions that changed the tenant
CHANGED: tuple[Action, ...] = ("created", "updated", "removed")
MARKERS: dict[str, str] = {"created": "+", "updated": "~", "removed": "-"}


@dataclass(frozen=True)
class Confirm:
    """A read that tells whether a write whose answer was lost happened: an item of the answer's ``value``
    whose fields equal ``match``."""

    service: Service
    method: str
    path: str
    match: dict[str, Any]
    params: dict[str, str] | None = None
    body: Any = None


@dataclass(frozen=True)
class Write:
    """One request that makes a change. ``idempotent`` writes (upserts, PATCH, Set-*) may be sent again
    after a lost answer; others are repeated only after ``confirm`` reads that they did not happen."""

    service: Service
    method: str
    path: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False
    #: error codes meaning "the directory has not caught up yet" (a new object replicating): retried
    retry_codes: tuple[str, ...] = ()
    #: what the 403 of this write means: the permission and role it needs
    needs: str = ""
    #: for a write that is not idempotent: how to read whether it happened after a lost answer
    confirm: Confirm | None = None
    #: fields of the answer worth keeping in the record (new IDs, a secret's hint), never a secret's value
    keep: tuple[str, ...] = ()

    @property
    def upsert(self) -> bool:
        """Graph's create-if-missing: 201 with the new object, or 204 when it existed and was updated."""
        return self.headers.get("Prefer") == "create-if-missing"


@dataclass(frozen=True)
class Change:
    """One resource's comparison of current and desired state, and what was done about it."""

    resource: str
    name: str
    action: Action
    summary: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    #: what applying it sends (none for ``unchanged``, and none for changes applied outside the kit,
    #: such as step 3's PowerShell script)
    write: Write | None = field(default=None, compare=False)
    #: the action once the write is accepted
    outcome: Outcome = field(default="updated", compare=False)

    @property
    def applied(self) -> Change:
        """This change as the tenant accepted it."""
        return replace(self, action=self.outcome, write=None)

    def as_dict(self) -> dict[str, Any]:
        """The change as a record holds it: a planned change keeps what it would do (``outcome``)."""
        data = asdict(self)
        data.pop("write")
        if self.action != "planned":
            data.pop("outcome")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        return cls(
            data["resource"],
            data["name"],
            data["action"],
            data["summary"],
            data.get("before"),
            data.get("after"),
            outcome=data.get("outcome", "updated"),
        )

    @property
    def marker(self) -> str:
        """Terraform's mark: ``+`` creates, ``~`` updates, ``-`` removes (planned or done), blank unchanged."""
        if self.action == "unchanged":
            return " "
        return MARKERS[self.outcome if self.action == "planned" else self.action]

    def _repr_html_(self) -> str:
        return changes_frame([self]).to_html(index=False)

    def __repr__(self) -> str:
        return f"{self.action:>9}  {self.resource}: {self.name} ({self.summary})"


def changes_frame(changes: list[Change]) -> pd.DataFrame:
    """The changes as a table: what the notebooks show."""
    import pandas as pd

    return pd.DataFrame([c.as_dict() for c in changes], columns=list(COLUMNS))


def changes_text(changes: list[Change]) -> str:
    """The changes as aligned plain text, each marked ``+``/``~``/``-`` as Terraform does, for the command line
    (no table library on a run's critical path)."""
    rows = [(" ", *COLUMNS), *((c.marker, c.resource, c.name, c.action, c.summary) for c in changes)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=False)) + "  " + row[4] for row in rows
    )


def summary_line(changes: list[Change]) -> str:
    """One line of counts, as Terraform ends a plan: what a plan would do, or what a run did."""
    planned = [c for c in changes if c.action == "planned"]
    done = [c for c in changes if c.action in CHANGED]
    unchanged_count = sum(c.action == "unchanged" for c in changes)
    parts = []
    if planned or not done:
        counts = {o: sum(c.outcome == o for c in planned) for o in MARKERS}
        parts.append(
            f"Plan: {counts['created']} to create, {counts['updated']} to update, {counts['removed']} to remove"
        )
    if done:
        counts = {o: sum(c.action == o for c in done) for o in MARKERS}
        parts.append(f"Applied: {counts['created']} created, {counts['updated']} updated, {counts['removed']} removed")
    return "; ".join(parts) + f"; {unchanged_count} unchanged."


def pending(changes: list[Change]) -> bool:
    """Whether anything is left to do: a plan's ``--detailed-exitcode`` answers 2 when it is."""
    return any(c.action == "planned" for c in changes)


def changes_html(changes: list[Change]) -> str:
    """The changes as an HTML table, for a record's HTML."""
    cells = lambda row, tag: "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in row)  # noqa: E731
    body = "".join(f"<tr>{cells((c.resource, c.name, c.action, c.summary), 'td')}</tr>" for c in changes)
    return f"<table><thead><tr>{cells(COLUMNS, 'th')}</tr></thead><tbody>{body}</tbody></table>"


def unchanged(resource: str, name: str, summary: str, state: dict[str, Any] | None = None) -> Change:
    """A resource already as desired."""
    return Change(resource, name, "unchanged", summary, state, state)
