"""Troubleshooting: find every known error code in any text and say what it means, what fixes it and
which Microsoft or Cisco page says so.

Works on whatever the operator has: a Webex Connect log line, a non-delivery report, an msal error, a
failed run's record. Unknown text gets an honest "not recognized" and what to collect next.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import paths
from ..config import knowledge, registry
from ..engine.results import Finding, StepRecord
from ..records import store as records

if TYPE_CHECKING:
    import pandas as pd

    from ..context.step import Step

AADSTS_RE = re.compile(r"AADSTS(\d{5,7})")
SMTP_RE = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
COLLECT_NEXT = (
    "the complete error text (the whole NDR or log line), when it happened, any Trace ID, "
    "Correlation ID or request-id in it, and which step or action produced it; then run "
    "notebook 05_verify for the tenant"
)
#: what the notebook column says of a fix that is a setting in a Microsoft portal (the fix names which)
PORTAL_SETTING = "none: a portal setting"
#: the columns of a diagnosis, in the notebook and on the command line
COLUMNS = ["code", "meaning", "fix", "notebook", "source"]


def _context(text: str, start: int, end: int) -> str:
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    return text[line_start : line_end if line_end != -1 else len(text)].strip()[:200]


def diagnose(text: str) -> list[Finding]:
    """Every known code in ``text``, in order of appearance, each explained once."""
    found: dict[str, tuple[int, Finding]] = {}

    def add(kind: str, code: str, match: re.Match[str], label: str) -> None:
        entry = knowledge.lookup(kind, code)
        if entry is None or label in found:
            return
        context = _context(text, match.start(), match.end())
        entry = entry.refined(context)
        found[label] = (
            match.start(),
            Finding(label, kind, entry.meaning, entry.fix, entry.notebook, context, source=entry.source),
        )

    for match in AADSTS_RE.finditer(text):
        add("aadsts", match.group(1), match, f"AADSTS{match.group(1)}")
    for match in SMTP_RE.finditer(text):
        add("smtp", match.group(1), match, match.group(1))
    for match in WORD_RE.finditer(text):
        add("graph", match.group(0), match, match.group(0))
        add("checks", match.group(0), match, match.group(0))
    return [finding for _, finding in sorted(found.values(), key=lambda item: item[0])]


def table(findings: list[Finding]) -> pd.DataFrame:
    """Findings as a table, each with the page its meaning comes from, or the "not recognized" row
    saying what to collect next."""
    import pandas as pd

    if not findings:
        return pd.DataFrame(
            [
                {
                    "code": "(none)",
                    "meaning": "not recognized: no known error code in this text",
                    "fix": f"collect {COLLECT_NEXT}",
                    "notebook": registry.VERIFY,
                    "source": "",
                }
            ],
            columns=COLUMNS,
        )
    rows = [[getattr(f, column) for column in COLUMNS] for f in findings]
    where = COLUMNS.index("notebook")
    for row in rows:  # a fix no step applies: the portal the fix names
        row[where] = row[where] or PORTAL_SETTING
    return pd.DataFrame(rows, columns=COLUMNS)


def explain(step: Step, error_text: str = "", run_errors: list[str] | None = None) -> pd.DataFrame:
    """Diagnose this run's failures (``runbook run`` passes them), else ``error_text``, else the tenant's
    latest record; the findings go into the step's record."""
    import pandas as pd

    if run_errors is not None:
        source, text = "this run's failures", "\n".join(run_errors)
        if not run_errors:
            step.facts.diagnosis_source = source
            print("Nothing failed in this run: nothing to diagnose.")
            return pd.DataFrame(columns=COLUMNS)
    elif error_text.strip():
        source, text = "the error text given", error_text
    else:
        record = latest_record(step.params.tenant)
        source = f"the latest record, {record.name}" if record else "no record of this tenant yet"
        text = record_text(record) if record else ""
    findings = diagnose(text)
    step.facts.diagnosis_source = source
    step.result.findings = findings
    print(f"Diagnosed {source}: {len(findings)} known code(s).")
    return table(findings)


def latest_record(tenant: str, archive: Path | None = None) -> Path | None:
    """The newest sealed record of a tenant (one still running, or left by a killed run, is not read)."""
    found = [r for r in records.record_dirs(archive or paths.archive_dir(), tenant) if records.is_sealed(r)]
    return found[-1] if found else None


def failure_lines(steps: Iterable[StepRecord]) -> list[str]:
    """A run's failures as lines to diagnose: each failed step's error, each failed check with its code."""
    steps = list(steps)
    lines = [f"{s.step}: {s.error}" for s in steps if s.status in ("failed", "interrupted") and s.error]
    lines += [f"{s.step}: [{c.code}] {c.check}: {c.detail}" for s in steps for c in s.checks if c.verdict == "fail"]
    return lines


def record_text(record: Path) -> str:
    """The errors and failed checks of an archived record, as text to diagnose."""
    return "\n".join(failure_lines(StepRecord.from_json(s) for s in records.read_manifest(record)["steps"]))


def knowledge_table() -> pd.DataFrame:
    """The whole knowledge base, for reading: each entry with the page it comes from."""
    import pandas as pd

    return pd.DataFrame(
        [[e.kind, *(getattr(e, column) for column in COLUMNS)] for e in knowledge.entries().values()],
        columns=["kind", *COLUMNS],
    )
