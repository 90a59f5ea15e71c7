"""Run records: ``archive/<tenant>/<UTC stamp>/``, opened when a run starts and sealed however it ends.

A record folder exists from a run's first moment, holding the run's journal (:mod:`runbook_lib.engine.journal`),
so a change the tenant accepted is on disk even if the process is killed. When the run ends (ok, failed,
interrupted by Ctrl-C or SIGTERM) the runner writes the executed notebooks, their HTML, the files steps
keep and ``manifest.json``, then seals it (:mod:`runbook_lib.records.integrity`): a hash over the manifest, an
optional signature, a link to the tenant's previous record, every file read-only. A record left unsealed
by a killed process is sealed, from its journal, by the next ``runbook`` command for that tenant, with
status ``interrupted``. No hidden folder is ever used, so ``runbook records`` lists every record.

**Only records are treated as records.** A tenant's name is checked before it becomes a path (never ``..``, a
slash or an empty name), and a folder is a record only when it carries the kit's marks: named by its UTC
stamp, a real folder inside ``archive/<tenant>/`` (no symbolic link on the way), and either sealed (a manifest
and a seal) or holding the journal the kit opened it with, whose first entry names this tenant. Nothing else
is listed, read as proof, or sealed: a command pointed at another folder changes nothing there.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import params as params_mod
from ..config.params import SLUG_RE
from ..engine import journal, locks
from ..engine.changes import CHANGED, Change
from ..engine.results import Facts, Identity, StepRecord, run_status_text
from ..errors import LockHeld, ParamsError, RunbookError
from . import html_record, integrity

if TYPE_CHECKING:
    import nbformat

MANIFEST = integrity.MANIFEST
sha256 = integrity.sha256


def utc_stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


#: a record with no journal entry yet is left alone this long: its run may have only just opened it
JOURNAL_GRACE_SECONDS = 60
#: the mark of a journal the kit opened a record with (its first entry's ``format``)
FORMAT = "runbook-record/1"
TENANT_NAME_RULE = "1 to 64 lowercase letters, digits and hyphens, starting and ending with a letter or digit"


def tenant_folder(archive: Path, tenant: str, *, field: str = "tenant") -> Path:
    """``archive/<tenant>``, once ``tenant`` is a tenant's short name (never a path: no ``..``, no slash, not
    empty) and that folder, if it exists, is a real folder and not a symbolic link to somewhere else."""
    if not SLUG_RE.fullmatch(tenant):
        raise ParamsError(
            "the tenant name", {field: f"{tenant!r} is not a tenant name: a tenant name is {TENANT_NAME_RULE}"}
        )
    base = archive / tenant
    if base.is_symlink() or (base.exists() and not base.is_dir()):
        raise RunbookError(
            f"{base} is not a folder of the archive (a symbolic link, or a file): the kit reads and writes only "
            "real folders it made",
            fix="give the archive that really holds the tenant's records with --archive",
        )
    return base


def open_record(archive: Path, tenant: str, run: dict[str, Any]) -> Path:
    """A new record folder for a run, never an existing one, with its journal started by ``run`` (the run entry,
    carrying the kit's mark): from its first moment the folder shows it is a record of this tenant."""
    base = tenant_folder(archive, tenant)
    base.mkdir(parents=True, exist_ok=True)
    stamp = utc_stamp()
    for suffix in range(1000):
        folder = base / (stamp if suffix == 0 else f"{stamp}-{suffix}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        journal.Journal(folder / journal.JOURNAL_FILE).append("run", format=FORMAT, tenant=tenant, **run)
        return folder
    raise RunbookError(f"could not create a record folder under {base}", fix="check the archive folder")


def is_sealed(record: Path) -> bool:
    return integrity.sealed_folder(record)


def is_record(folder: Path) -> bool:
    """A folder the kit made as a record of the tenant whose folder holds it (see the module's docstring)."""
    if not integrity.RECORD_NAME.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
        return False
    if integrity.sealed_folder(folder):
        return True
    entry = run_entry(folder)
    return integrity.real_file(folder / journal.JOURNAL_FILE) and entry.get("tenant") == folder.parent.name


def require_record(folder: Path) -> Path:
    """``folder`` if it is a record the kit made, inside a tenant's folder; else a clear error, and nothing done."""
    base = folder.parent
    if not is_record(folder) or base.is_symlink() or not SLUG_RE.fullmatch(base.name):
        raise RunbookError(
            f"{folder} is not a run record: a record is a folder archive/<tenant>/<UTC time>/ that the kit made "
            "(sealed, or holding the kit's journal), reached without a symbolic link",
            fix="give a folder `runbook records TENANT` lists",
        )
    return folder


def record_dirs(archive: Path, tenant: str) -> list[Path]:
    """A tenant's records, sealed or not, oldest first: only folders the kit made as records (see
    :func:`is_record`); anything else in the tenant's folder is left alone."""
    base = tenant_folder(archive, tenant)
    if not base.is_dir():
        return []
    return sorted((p for p in base.iterdir() if is_record(p)), key=lambda p: integrity.record_order(p.name))


def seal(record: Path, manifest: dict[str, Any], *, signing_key: Path | None = None) -> str:
    """Write the manifest (linking the tenant's previous record, listing every file's sha256) and seal it.
    Returns the manifest's sha256. Call it under the tenant lock."""
    manifest["record"] = record.name
    manifest["previous"] = integrity.previous_link(record.parent, before=record.name)
    manifest["files"] = integrity.file_hashes(record)
    (record / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return integrity.seal(record, signing_key=signing_key)


def journal_changes(entries: list[dict[str, Any]], step: str) -> list[Change]:
    return [Change.from_dict(e["change"]) for e in entries if e.get("kind") == "change" and e.get("step") == step]


def signed_in(entries: list[dict[str, Any]]) -> Identity | None:
    found = next((e["identity"] for e in entries if e.get("kind") == "identity"), None)
    return Identity(**found) if found else None


def steps_from_journal(entries: list[dict[str, Any]]) -> list[StepRecord]:
    """What a journal says of each step it saw start: its status and the changes the tenant accepted."""
    ended = {
        e["step"]: e.get("status", "failed") for e in entries if e.get("kind") == "step" and e.get("event") == "ended"
    }
    started = [e["step"] for e in entries if e.get("kind") == "step" and e.get("event") == "started"]
    steps = []
    for name in dict.fromkeys(started):
        changes = journal_changes(entries, name)
        steps.append(
            StepRecord(
                name,
                status=ended.get(name, "interrupted"),
                changes=changes,
                counts={"writes": sum(c.action in CHANGED for c in changes)},  # the journal holds each accepted one
                facts=Facts(),
                error=None if name in ended else "the run stopped during this step",
            )
        )
    return steps


def unsealed(archive: Path, tenant: str) -> list[Path]:
    """Records of a tenant that no run has sealed: running now, or left by a killed process."""
    return [r for r in record_dirs(archive, tenant) if not is_sealed(r)]


def run_entry(record: Path) -> dict[str, Any]:
    """The journal's first entry: the run's tenant, mode and parameters (empty if it was never written, or is not
    a run entry)."""
    first = journal.first(record / journal.JOURNAL_FILE)
    return first if first.get("kind") == "run" else {}


def seal_from_journal(record: Path, *, signing_key: Path | None = None) -> str:
    """Seal a record a killed run left, from its journal: status ``interrupted``, every change it holds.
    Call it only when the record's own tenant lock is free (its run is over)."""
    entries = journal.read(record / journal.JOURNAL_FILE)
    steps = steps_from_journal(entries)
    manifest = manifest_for(
        run_entry(record),
        steps,
        entries,
        status="interrupted",
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        note="sealed from its journal by a later command: the run was killed before it ended",
    )
    seal(record, manifest, signing_key=signing_key)
    return (
        f"sealed the interrupted record {record} from its journal ({sum(len(s.changed) for s in steps)} "
        "change(s) the tenant accepted)"
    )


def manifest_for(
    run: dict[str, Any],
    steps: list[StepRecord],
    entries: list[dict[str, Any]],
    *,
    status: str,
    finished: str,
    note: str = "",
    files: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The manifest of a record: who (the signed-in identity and the local account), what mode, when, each
    step with its changes, checks and counts, and totals that count accepted writes and failed attempts apart."""
    identity = next((s.facts.signed_in for s in steps if s.facts.signed_in), None) or signed_in(entries)
    totals = {
        k: sum(int(s.counts.get(k, 0)) for s in steps) for k in ("reads", "writes", "failed_writes", "auth", "retries")
    }
    totals["changes"] = sum(len(s.changed) for s in steps)
    head = dict(header(run, identity))
    return {  # what a reader needs first comes first: the mode and what it means, the tenant, who, and why
        "kind": "run",
        "mode": run.get("mode"),
        "mode_meaning": head["mode"],
        "tenant": run.get("tenant"),
        "tenant_id": run.get("tenant_id"),
        "operator": {"signed_in": identity.__dict__ if identity else None, "local_account": run.get("local_account")},
        "change": {"reason": head["reason"], "ticket": head["ticket"]},
        "started_by": run.get("started_by") or "runbook run",
        "kit_version": run.get("kit_version"),
        "git_commit": run.get("git_commit"),
        "parameters": run.get("parameters"),
        "started": run.get("at"),
        "finished": finished,
        "status": status,
        "status_text": run_status_text(status, steps),
        **({"note": note} if note else {}),
        "steps": [
            {**{k: v for k, v in s.to_json().items() if k != "artifacts"}, "files": (files or {}).get(s.step, [])}
            for s in steps
        ],
        "totals": totals,
    }


def read_manifest(record: Path) -> dict[str, Any]:
    """A record's manifest, or a clear error when it is missing, unreadable or not a JSON object."""
    try:
        data = json.loads((record / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunbookError(
            f"{record} is not a run record: it has no readable manifest.json",
            fix="give a folder such as archive/<tenant>/<UTC time>/ (see `runbook records TENANT`)",
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("steps", []), list):
        raise RunbookError(
            f"{record}/manifest.json is not a run record's manifest (a JSON object with steps)",
            fix="the record was damaged or forged: check it with `runbook verify-record`",
        )
    return data


#: what each mode means for the tenant, said first in every record a person reads
MODE_MEANING = {
    "live": "LIVE: these changes were made to the real tenant",
    "record": "RECORD: live against the real tenant, and the exchanges were recorded",
    "replay": "REPLAY of recorded answers: nothing was sent to any tenant",
    "sandbox": "SANDBOX: a simulated training tenant on this machine; no real tenant was touched",
}

#: the modes whose runs reach a real tenant
REAL_TENANT_MODES = ("live", "record")


def run_kind(manifest: Mapping[str, Any]) -> str:
    """``plan`` for a record of ``runbook plan`` or any run with ``apply: false``, else ``run``."""
    return "plan" if (manifest.get("parameters") or {}).get("apply") is False else "run"


def mode_meaning(mode: str, apply: bool = True) -> str:
    """What a run's mode meant for the tenant, said first; a plan (``apply: false``) of a real tenant changed
    nothing, and says so."""
    if not apply and mode in REAL_TENANT_MODES:
        return f"{mode.upper()} PLAN (apply: false): the real tenant was read, and nothing was changed"
    meaning = MODE_MEANING.get(mode, f"mode {mode}")
    return meaning if apply else f"{meaning}; a PLAN (apply: false): no change was even attempted"


def header(run: Mapping[str, Any], identity: Identity | None) -> list[tuple[str, str]]:
    """What every record a person reads opens with, in this order: the mode and what it means for the tenant (a
    replayed demo must never read as a change to a real tenant), the tenant, who signed in, and why: the reason
    and ticket. ``run``: the journal's run entry or a manifest (both hold the mode, tenant and parameters)."""
    parameters = run.get("parameters") or {}
    change = parameters.get("change") or {}
    return [
        ("mode", mode_meaning(str(run.get("mode")), parameters.get("apply", True))),
        ("tenant", f"{run.get('tenant')} (tenant ID {run.get('tenant_id')})"),
        ("signed in", identity.describe() if identity else "nobody (no step signed in)"),
        ("reason", change.get("reason") or "none given"),
        ("ticket", change.get("ticket") or ("no ticket (--no-ticket)" if change.get("no_ticket") else "none given")),
    ]


def header_so_far(record: Path) -> list[tuple[str, str]]:
    """The header of a record still being written (a step's page is written when the step ends): whoever has
    signed in by then."""
    return header(run_entry(record), signed_in(journal.read(record / journal.JOURNAL_FILE)))


def write_text(path: Path, text: str) -> None:
    """A record file, written once."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_step(record: Path, nb: nbformat.NotebookNode | None, result: StepRecord, mode: str) -> list[str]:
    """The executed notebook, its HTML for people, and the files the step kept: written once."""
    written = []
    if nb is not None:
        write_text(record / f"{result.step}.ipynb", json.dumps(nb, ensure_ascii=False) + "\n")
        write_text(
            record / f"{result.step}.html",
            html_record.render(
                nb,
                title=f"{mode.upper()}: {result.step}",
                summary_html=html_record.summary_html(
                    result, header_so_far(record), real_tenant=mode in REAL_TENANT_MODES
                ),
            ),
        )
        written += [f"{result.step}.ipynb", f"{result.step}.html"]
    for artifact, text in result.artifacts.items():
        write_text(record / f"{result.step}.{artifact}", text)
        written.append(f"{result.step}.{artifact}")
    return written


def with_journal(result: StepRecord, entries: list[dict[str, Any]]) -> StepRecord:
    """A step's record with every change the journal holds for it (a retried step made some in its first
    attempt; a step stopped at once never published its record)."""
    known = {(c.resource, c.name, c.action) for c in result.changes}
    missing = [c for c in journal_changes(entries, result.step) if (c.resource, c.name, c.action) not in known]
    return replace(result, changes=[*result.changes, *missing]) if missing else result


def seal_abandoned(
    archive: Path,
    tenant: str,
    *,
    holding: params_mod.Params | None = None,
    signing_key: Path | None = None,
    report: Callable[[str], None] = print,
) -> list[Path]:
    """Seal the records of ``tenant`` that killed runs left, each only once its own tenant lock is free
    (``holding``: the parameters whose lock this process already holds). Runs still going are left alone."""
    sealed = []
    for record in unsealed(archive, tenant):
        entry = run_entry(record)
        try:
            owner = (
                params_mod.validate(entry["parameters"], f"the journal of {record}")
                if entry.get("parameters")
                else None
            )
        except params_mod.ParamsError:
            owner = None
        if owner is not None and (holding is None or locks.lock_file(owner) != locks.lock_file(holding)):
            try:
                with locks.tenant_lock(owner, command="seal an interrupted record"):
                    report(seal_from_journal(record, signing_key=signing_key))
            except LockHeld:
                continue  # its run is still going
        elif holding is not None or time.time() - record.stat().st_mtime > JOURNAL_GRACE_SECONDS:
            report(seal_from_journal(record, signing_key=signing_key))
        else:
            continue  # a run that has only just opened it
        sealed.append(record)
    return sealed
