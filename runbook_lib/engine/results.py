"""What a step found and did, as typed records: checks, findings, facts and the step's record.

These travel as objects through the library; they become JSON only at the two edges, the step's output
in its notebook (which ``runbook run`` reads back) and the record's manifest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import date
from typing import Any, Literal

from .changes import CHANGED, Change

#: the MIME type under which a step publishes its record into its notebook (``runbook run`` reads it back)
STEP_MIME = "application/vnd.runbook.step+json"
Verdict = Literal["pass", "warn", "fail", "not tested"]
Status = Literal["running", "ok", "failed", "interrupted", "skipped", "not started"]


@dataclass(frozen=True)
class Check:
    """One verify verdict with its fix; ``code`` is the knowledge-base key troubleshooting explains it by."""

    check: str
    verdict: Verdict
    detail: str
    fix: str = ""
    notebook: str = ""
    code: str = ""


@dataclass(frozen=True)
class Finding:
    """A known error code found in a text, with what it means, what fixes it and the page that says so."""

    code: str
    kind: str
    meaning: str
    fix: str
    notebook: str
    context: str
    source: str = ""  # empty in records made before findings named their source


@dataclass(frozen=True)
class SecretFacts:
    """The client secret the store holds, as Entra ID describes it (never its value)."""

    hint: str
    expires: str
    key_id: str
    store: str
    fingerprint: str = ""

    def days_left(self, on: str) -> int:
        """Days from ``on`` (an ISO date or time) to the expiry date, as verify counts them: 0 or less, expired."""
        return (date.fromisoformat(self.expires[:10]) - date.fromisoformat(on[:10])).days


@dataclass(frozen=True)
class Identity:
    """Who signed in, from the token's claims: a person (UPN) or an application (app ID)."""

    kind: Literal["user", "application"]
    name: str
    object_id: str
    tenant_id: str
    client_id: str

    def describe(self) -> str:
        return f"{self.name} ({self.kind}, object {self.object_id}, tenant {self.tenant_id})"


@dataclass
class Facts:
    """What a step learned that later steps, the record and people need."""

    client_id: str | None = None
    object_id: str | None = None
    unique_name: str | None = None
    secret: SecretFacts | None = None
    user_consent: str | None = None
    signed_in: Identity | None = None
    mailbox_user: dict[str, str] | None = None
    mailbox_kind: str | None = None
    security_defaults: bool | None = None
    tenant_smtp_auth_disabled: bool | None = None
    default_forwarding_mode: str | None = None
    webex_connect_values: dict[str, str] | None = None
    checklist: dict[str, Any] | None = None
    token_claims: dict[str, Any] | None = None
    authorize_url: str | None = None
    grants_made: list[str] = field(default_factory=list)  # consents a verify sign-in made, for the record
    diagnosis_source: str | None = None
    retried: str | None = None
    #: the step's clock when it ended (in replay, the recording's moment): what expiries are counted from
    as_of: str | None = None
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        """Something the operator should know that did not stop the step (an optional read that failed)."""
        if text not in self.warnings:
            self.warnings.append(text)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Facts:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("secret"), dict):
            values["secret"] = SecretFacts(**values["secret"])
        if isinstance(values.get("signed_in"), dict):
            values["signed_in"] = Identity(**values["signed_in"])
        return cls(**values)


@dataclass
class StepRecord:
    """The outcome of one notebook: what ``runbook run`` reads back from the executed notebook."""

    step: str
    status: Status = "running"
    changes: list[Change] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    facts: Facts = field(default_factory=Facts)
    error: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> text, written into the record

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.action in CHANGED]

    @property
    def left_undone(self) -> str:
        """What an ``ok`` step leaves for a person to finish, said after its status: step 4's checklist of the
        actions done by hand in Webex Connect, not all confirmed."""
        items = (self.facts.checklist or {}).get("items") or {}
        return "checklist incomplete" if self.status == "ok" and not all(items.values()) else ""

    @property
    def status_text(self) -> str:
        """The status as people read it: ``ok, checklist incomplete``, never a plain ``ok`` that hides it."""
        return qualified(self.status, self.left_undone)

    def summary(self) -> str:
        c = self.counts
        changed = len(self.changed)
        planned = sum(ch.action == "planned" for ch in self.changes)
        text = (
            f"Step {self.step}: {self.status_text}; {changed} changed, {planned} planned, "
            f"{len(self.changes) - changed - planned} unchanged; requests: {c.get('reads', 0)} reads, "
            f"{c.get('writes', 0)} writes ({c.get('failed_writes', 0)} failed attempts), "
            f"{c.get('auth', 0)} sign-in, {c.get('retries', 0)} retries"
        )
        if self.checks:  # verify's (and rotation's proof's) verdicts, counted as exercise E4 asks
            counts = {v: sum(c.verdict == v for c in self.checks) for v in ("pass", "warn", "fail", "not tested")}
            text += "; checks: " + ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
        return text + (f"\nError: {self.error}" if self.error else "")

    def to_json(self) -> dict[str, Any]:
        """As data; ``status_text`` is there for people reading the JSON (it is derived, and not read back)."""
        data = asdict(self)
        data["changes"] = [c.as_dict() for c in self.changes]
        return {"step": self.step, "status": self.status, "status_text": self.status_text, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        return cls(
            step=data["step"],
            status=data.get("status", "failed"),
            changes=[Change.from_dict(c) for c in data.get("changes", [])],
            checks=[Check(**c) for c in data.get("checks", [])],
            findings=[Finding(**f) for f in data.get("findings", [])],
            counts=data.get("counts") or {},
            facts=Facts.from_dict(data.get("facts") or {}),
            error=data.get("error"),
            artifacts=data.get("artifacts") or {},
        )


def qualified(status: str, undone: str) -> str:
    """A status with what was left undone after it (``ok, checklist incomplete``): the one form people read."""
    return f"{status}, {undone}" if undone else status


def run_left_undone(status: str, steps: Iterable[StepRecord]) -> str:
    """What an ok run's steps left for a person to finish; empty when nothing, or when the run did not end ok."""
    return ", ".join(dict.fromkeys(s.left_undone for s in steps if s.left_undone)) if status == "ok" else ""


def run_status_text(status: str, steps: Iterable[StepRecord]) -> str:
    """A run's status as people read it: ``ok`` qualified by what its steps left for a person to finish."""
    return qualified(status, run_left_undone(status, steps))
