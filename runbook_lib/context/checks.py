"""Verify's verdicts, one check at a time, each with the fix the knowledge base gives its code: what verify, the
checks of what blocks mail (:mod:`runbook_lib.tenant.blockers`), fleet health and rotation's proof add to a step's
record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from ..config import knowledge
from ..engine.changes import Change
from ..engine.results import Check, Finding, Verdict

if TYPE_CHECKING:
    from .step import Step


class Checks:
    """The verdicts of one verify run, kept in the step's record."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.items = step.result.checks

    def add(
        self, check: str, verdict: Verdict, detail: str, *, code: str = "", explained: Finding | None = None
    ) -> Check:
        """Record a verdict; its fix comes from ``explained`` (a diagnosis) or the knowledge base entry ``code``."""
        entry: Any = explained or knowledge.lookup("checks", code or check)
        if verdict != "pass" and code.startswith("AADSTS"):
            entry = knowledge.lookup("aadsts", code.removeprefix("AADSTS")) or entry
        show = entry is not None and verdict != "pass"
        item = Check(check, verdict, detail, entry.fix if show else "", entry.notebook if show else "", code or check)
        self.items.append(item)
        return item

    def drift(self, changes: list[Change], code: str, differs: Verdict = "fail") -> None:
        """A verdict per compared resource: as desired passes, anything that would change fails (or, for what is
        more than needed rather than wrong, gets ``differs``)."""
        for change in changes:
            ok = change.action == "unchanged"
            self.add(
                f"{change.resource}: {change.name}",
                "pass" if ok else differs,
                change.summary if ok else f"drift: would {change.summary}",
                code=code,
            )

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([c.__dict__ for c in self.items], columns=["check", "verdict", "detail", "fix", "notebook"])
