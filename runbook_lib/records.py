"""Changes and run records.

A :class:`Change` is what one ``ensure_*`` call found and did: like an Ansible task result, it says
whether something was ``created``, ``updated``, left ``unchanged``, or only ``planned`` (plan mode).
The run record (:func:`write_record`) is an archive folder that is written once and never changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd

Action = Literal["created", "updated", "unchanged", "planned"]


@dataclass(frozen=True)
class Change:
    """One resource's comparison of current and desired state, and what was done about it."""

    resource: str
    name: str
    action: Action
    summary: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None

    @property
    def changed(self) -> bool:
        return self.action in ("created", "updated")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _repr_html_(self) -> str:
        return changes_frame([self]).to_html(index=False)

    def __repr__(self) -> str:
        return f"{self.action:>9}  {self.resource}: {self.name} ({self.summary})"


def changes_frame(changes: list[Change] | list[dict[str, Any]]) -> pd.DataFrame:
    """The changes as a table: what the notebooks show and the record summarises."""
    rows = [c.as_dict() if isinstance(c, Change) else c for c in changes]
    return pd.DataFrame(rows, columns=["resource", "name", "action", "summary"])


@dataclass
class StepRecord:
    """The outcome of one notebook, as the runner reads it back from the executed notebook."""

    step: str
    status: str = "running"
    changes: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)   # file name -> text, written into the record

    def summary(self) -> str:
        c = self.counts
        changed = sum(ch["action"] in ("created", "updated") for ch in self.changes)
        planned = sum(ch["action"] == "planned" for ch in self.changes)
        text = (f"Step {self.step}: {self.status}; {changed} changed, {planned} planned, "
                f"{len(self.changes) - changed - planned} unchanged; requests: {c.get('reads', 0)} reads, "
                f"{c.get('writes', 0)} writes, {c.get('auth', 0)} sign-in, {c.get('retries', 0)} retries")
        return text + (f"\nError: {self.error}" if self.error else "")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def utc_stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def new_record_dir(archive: Path, tenant: str) -> tuple[Path, Path]:
    """A private temporary folder to write into, and the final name it will be renamed to."""
    base = archive / tenant
    base.mkdir(parents=True, exist_ok=True)
    stamp = utc_stamp()
    final = base / stamp
    suffix = 1
    while final.exists():
        final = base / f"{stamp}-{suffix}"
        suffix += 1
    tmp = base / f".tmp-{final.name}-{os.getpid()}"
    tmp.mkdir()
    return tmp, final


def seal(tmp: Path, final: Path, manifest: dict[str, Any]) -> Path:
    """Hash every file, write the manifest, then rename: a record appears whole or not at all."""
    manifest["files"] = {p.relative_to(tmp).as_posix(): sha256(p)
                         for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    try:
        os.rename(tmp, final)  # fails rather than overwrite an existing record
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
