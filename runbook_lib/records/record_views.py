"""Records as people read them: a tenant's history (``runbook records``) and one record in a few lines (``runbook
show``), each with what became of the changes a record left to step 3's script
(:mod:`runbook_lib.records.record_diff`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..engine.results import Identity, StepRecord
from ..errors import RunbookError
from . import integrity
from . import store as records
from .record_diff import script_lines, script_status


def _operator(manifest: dict[str, Any]) -> str:
    operator = manifest.get("operator") or {}
    who = (operator.get("signed_in") or {}).get("name") if isinstance(operator, dict) else operator
    local = operator.get("local_account") if isinstance(operator, dict) else None
    return f"{who or 'nobody signed in'}" + (f" (local account {local})" if local else "")


def history(archive: Path, tenant: str) -> pd.DataFrame:
    """Every record of a tenant, sealed or not: when, how started, plan or run, mode, who, under which ticket, how it
    ended, accepted writes, its seal."""
    rows: list[dict[str, Any]] = []
    for record in records.record_dirs(archive, tenant):
        if not records.is_sealed(record):
            rows.append(
                {
                    "record": record.name,
                    "started": "",
                    "started by": "",
                    "kind": "",
                    "mode": "",
                    "operator": "",
                    "ticket": "",
                    "status": "unsealed (running now, or killed: the next command for this tenant seals it)",
                    "writes": "",
                    "failed step": "",
                    "seal": "",
                }
            )
            continue
        try:
            m = records.read_manifest(record)
        except RunbookError as error:
            rows.append({"record": record.name, "status": f"damaged: {error.message}", "seal": "DOES NOT VERIFY"})
            continue
        failed = [s.get("step") for s in m.get("steps", []) if s.get("status") in ("failed", "interrupted")]
        rows.append(
            {  # a table for people: every value as it reads
                "record": record.name,
                "started": m.get("started"),
                "started by": m.get("started_by") or "runbook run",
                "kind": records.run_kind(m),
                "mode": m.get("mode"),
                "operator": _operator(m),
                "ticket": (m.get("change") or {}).get("ticket", ""),
                "status": m.get("status_text") or m.get("status"),
                "writes": (m.get("totals") or {}).get("writes"),
                "failed step": ", ".join(map(str, failed)),
                "seal": integrity.seal_text(record),
            }
        )
    columns = [
        "record",
        "started",
        "started by",
        "kind",
        "mode",
        "operator",
        "ticket",
        "status",
        "writes",
        "failed step",
        "seal",
    ]
    table = pd.DataFrame(rows, columns=columns)
    scripts = script_status(archive, tenant)
    table["step 3 script"] = [scripts.get(name, "") for name in table["record"]]
    return table


def describe(record: Path) -> str:
    """A record in a few lines: its header (the mode first, the tenant, who, why), when, each step's outcome, the
    changes, failed checks."""
    m = records.read_manifest(record)
    totals = m.get("totals") or {}
    signed = (m.get("operator") or {}).get("signed_in")
    head = records.header(m, Identity(**signed) if isinstance(signed, dict) else None)
    lines = [
        head[0][1],
        *(f"{label}: {value}" for label, value in head[1:]),
        f"record {record.name}: {m.get('status_text') or m.get('status')} (started by "
        f"{m.get('started_by') or 'runbook run'}; local account "
        f"{(m.get('operator') or {}).get('local_account')}; kit {m.get('kit_version')}, "
        f"{m.get('started')} to {m.get('finished')})",
        f"requests: {totals.get('reads', 0)} reads, {totals.get('writes', 0)} accepted writes, "
        f"{totals.get('failed_writes', 0)} failed write attempts, {totals.get('retries', 0)} retries",
        f"kind: {records.run_kind(m)}; seal: {integrity.seal_text(record)}",
    ]
    if m.get("note"):
        lines.append(f"note: {m['note']}")
    for data in m.get("steps", []):
        step = StepRecord.from_json(data)
        lines.append(f"  {step.step}: {step.status_text}" + (f": {step.error.splitlines()[0]}" if step.error else ""))
        lines += [f"      {c.action:>9} {c.resource}: {c.name} ({c.summary})" for c in step.changes]
        lines += [f"      check {c.verdict}: {c.check}: {c.detail}" for c in step.checks if c.verdict != "pass"]
    return "\n".join([*lines, *script_lines(record), *integrity.attachment_lines(record)])
