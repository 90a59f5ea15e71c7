"""Changes and run records.

A :class:`Change` is what one ``ensure_*`` call found and did: like an Ansible task result, it says
whether something was ``created``, ``updated``, left ``unchanged``, or only ``planned`` (plan mode).
The run record (:func:`write_record`) is an archive folder that is written once and never changed.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

import pandas as pd

from .errors import RunbookError

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


@contextmanager
def tenant_lock(archive: Path, tenant: str) -> Iterator[None]:
    """One run per tenant at a time: a second one is refused at once, never both creating applications."""
    folder = archive / tenant
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunbookError(f"a run for tenant {tenant} is already in progress ({holder})",
                               fix="wait for it to finish, then run again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {utc_stamp()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def record_dirs(archive: Path, tenant: str) -> list[Path]:
    """A tenant's complete records, oldest first (temporary folders and the lock are not records)."""
    base = archive / tenant
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.exists() else []


def read_manifest(record: Path) -> dict[str, Any]:
    try:
        return json.loads((record / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunbookError(f"{record} is not a run record: it has no readable manifest.json",
                           fix="give a folder such as archive/<tenant>/<UTC time>/ (see `runbook records TENANT`)") from None


def history(archive: Path, tenant: str) -> pd.DataFrame:
    """Past runs of a tenant: when, who, how it ended, how many writes."""
    rows = []
    for record in record_dirs(archive, tenant):
        m = read_manifest(record)
        failed = [s["step"] for s in m["steps"] if s["status"] == "failed"]
        rows.append({"record": record.name, "started": m["started"], "operator": m["operator"], "status": m["status"],
                     "writes": m["totals"]["writes"], "failed step": ", ".join(failed)})
    return pd.DataFrame(rows, columns=["record", "started", "operator", "status", "writes", "failed step"])


def describe(record: Path) -> str:
    """A record in a few lines: who, when, each step's outcome, the changes, failed checks."""
    m = read_manifest(record)
    lines = [f"{m['tenant']} {record.name}: {m['status']} (operator {m['operator']}, kit {m['kit_version']}, "
             f"{m['started']} to {m['finished']})",
             f"requests: {m['totals']['reads']} reads, {m['totals']['writes']} writes, {m['totals']['retries']} retries"]
    for step in m["steps"]:
        lines.append(f"  {step['step']}: {step['status']}" + (f": {step['error'].splitlines()[0]}" if step.get("error") else ""))
        lines += [f"      {c['action']:>9} {c['resource']}: {c['name']} ({c['summary']})" for c in step["changes"]]
        lines += [f"      check {c['verdict']}: {c['check']}: {c['detail']}" for c in step["facts"].get("checks", [])
                  if c["verdict"] != "pass"]
    return "\n".join(lines)


def verify_files(record: Path) -> list[str]:
    """Every file against the manifest's sha256: what was altered, removed or added since the run."""
    expected: dict[str, str] = read_manifest(record)["files"]
    present = {p.relative_to(record).as_posix() for p in record.rglob("*") if p.is_file()} - {"manifest.json"}
    problems = [f"removed: {name}" for name in sorted(set(expected) - present)]
    problems += [f"added: {name}" for name in sorted(present - set(expected))]
    problems += [f"altered: {name}" for name in sorted(set(expected) & present) if sha256(record / name) != expected[name]]
    return problems
