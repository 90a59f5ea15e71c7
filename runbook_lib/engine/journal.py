"""The change journal: what a run did to a tenant, written down the moment it happened.

One JSON object per line, appended and fsynced before the kit does anything else, so that however a
run ends (success, failure, Ctrl-C, SIGTERM, a dead kernel, a killed process) every change the tenant
accepted is on disk. ``runbook run`` writes its steps' boundaries into it and seals the record from it
(:mod:`runbook_lib.records.store`); the kernel running the notebooks appends each change
(:mod:`runbook_lib.engine.executor`) and who signed in. The journal holds no secret: changes carry hints,
fingerprints and IDs only.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: set by ``runbook run`` for its kernel: the journal file of the run
JOURNAL_ENV = "RUNBOOK_JOURNAL"
#: set by ``runbook run`` for its kernel: a file whose existence asks the step to stop before its next request
STOP_FILE_ENV = "RUNBOOK_STOP_FILE"
JOURNAL_FILE = "journal.jsonl"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Journal:
    """Appends entries to a file (durably) or, with no file, keeps them in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        #: set once its record is sealed: a write sent afterwards would have nowhere to be recorded
        self.closed = False

    def append(self, kind: str, **fields: Any) -> None:
        """Write one entry and force it to disk before returning."""
        entry = {"kind": kind, "at": _now(), **fields}
        self.entries.append(entry)
        if self.path is None:
            return
        line = (json.dumps(entry, default=str) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def started_by_runner() -> bool:
    """Whether ``runbook run`` started this kernel (it gives the kernel its journal): nobody is at the notebook."""
    return bool(os.environ.get(JOURNAL_ENV))


def for_kernel() -> Journal:
    """The run's journal when ``runbook run`` started this kernel, else one kept in memory."""
    path = os.environ.get(JOURNAL_ENV)
    return Journal(Path(path) if path else None)


def first(path: Path) -> dict[str, Any]:
    """The first entry alone (a record's run entry), read without reading the rest; empty when there is none."""
    try:
        if path.is_symlink() or not path.is_file():
            return {}
        with path.open(encoding="utf-8", errors="replace") as handle:
            entry = json.loads(handle.readline(1024 * 1024))
    except (OSError, ValueError):
        return {}
    return entry if isinstance(entry, dict) else {}


def read(path: Path) -> list[dict[str, Any]]:
    """Every complete entry; a line torn by a killed process is skipped, never fatal."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
