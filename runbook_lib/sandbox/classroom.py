"""The trainer's view of a classroom (``runbook sandbox status``): every trainee's sandbox tenant, what the
trainee has done in it, the faults injected and whether each is still unrepaired, and the last verify.

**Finding the trainees.** A trainee's sandbox is a state file, ``<state folder>/sandbox/<tenant>.json``. By
default the status reads this kit's state folder (``.runbook/``, or what ``RUNBOOK_STATE`` names), which
holds the sandbox of everyone who runs the notebooks from this checkout, whatever their tenant names. On a
classroom server where each trainee has a checkout (or a ``RUNBOOK_STATE`` folder) of their own,
``--state-dir`` names those folders; trainees' parameter files limit the view to their tenants. A state file
the trainer's account may not read (mode 0600, another account's) is listed as such.

**Steps done** come from two places: the tenant itself, which shows what steps 2 and 3 leave behind (the
application with its service principal and secret; the mailbox's forwarding), and the trainee's records
(``runbook run``; notebooks run in JupyterLab leave none) made since the sandbox was seeded. The **last
verify** is the newest such record with step 05_verify: when it ended, its status and verdicts.

**Never a secret**: the state holds the client secrets' values and the token-signing key; only names,
counts, dates and settings are read from it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from ..config import params as params_mod
from ..config import registry
from ..engine.results import StepRecord, Verdict
from ..errors import ParamsError, RunbookError
from ..records import store as records
from . import mistakes, state
from .messages import parse_iso

if TYPE_CHECKING:
    import pandas as pd

VERDICTS: tuple[str, ...] = get_args(Verdict)
#: the table's columns, the widest last
COLUMNS = ["trainee", "last active", "steps done", "faults", "last verify", "tenant"]
#: whether an injected fault is still in effect, in words
FAULT_STATE = {True: "still broken", False: "repaired", None: "cannot tell"}


@dataclass(frozen=True)
class FaultStatus:
    fault: str
    injected: str  # when it was last injected (ISO, UTC)
    state: str  # still broken, repaired, cannot tell


@dataclass(frozen=True)
class LastVerify:
    record: str
    finished: str
    status: str
    verdicts: dict[str, int]  # pass, warn, fail, not tested -> how many


@dataclass
class TraineeStatus:
    """One trainee's sandbox, as the trainer sees it."""

    trainee: str
    state_file: str
    last_active: str | None = None  # when the sandbox was last saved (ISO, UTC)
    steps_done: list[str] = field(default_factory=list)
    tenant: dict[str, Any] = field(default_factory=dict)
    faults: list[FaultStatus] = field(default_factory=list)
    last_verify: LastVerify | None = None
    problem: str = ""


# --- finding the trainees' sandboxes -------------------------------------------------------------------


def state_files(state_dirs: list[Path] | None = None, params_files: list[str] | None = None) -> list[Path]:
    """The sandboxes to show: those of the trainees whose parameter files are given, else every one in the
    state folders (this kit's by default). A trainee without a sandbox yet gets the path it will have."""
    folders = [state.sandbox_dir(d) for d in state_dirs] if state_dirs else [state.sandbox_dir()]
    if params_files:
        found = []
        for path in params_files:
            params = params_mod.load(path)
            if params.mode != "sandbox":
                raise ParamsError(path, {"mode": f"is {params.mode}, not sandbox: the file names no trainee's sandbox"})
            candidates = [folder / f"{params.tenant}.json" for folder in folders]
            found.append(next((c for c in candidates if c.exists()), candidates[0]))
        return found
    for folder in folders:
        if not folder.is_dir():
            raise RunbookError(
                f"{folder} does not exist: no trainee has run a notebook in sandbox mode with this state folder",
                fix="give the state folder of the trainees' kit (--state-dir: its .runbook or RUNBOOK_STATE)",
            )
    return sorted(
        (p for folder in folders for p in folder.glob("*.json") if state.NAME.fullmatch(p.stem)),
        key=lambda p: p.stem,
    )


# --- one trainee ---------------------------------------------------------------------------------------


def tenant_summary(t: state.TraineeTenant) -> dict[str, Any]:
    """What the tenant shows now: names, counts and settings, never a secret value."""
    app, user, now = t.trainee_app, t.mailbox_user, t.now()
    ends = [parse_iso(c["endDateTime"]) for c in (app["passwordCredentials"] if app else [])]
    smtp_auth = user["SmtpClientAuthenticationDisabled"]
    tenant_default = "off" if t.transport_smtp_auth_disabled else "on"
    return {
        "application": app["displayName"] if app else None,
        "service principal": t.trainee_sp is not None,
        "secrets valid": sum(end > now for end in ends),
        "secrets expired": sum(end <= now for end in ends),
        "Mail.Send consented": not mistakes.mail_send_missing(t),
        "SMTP.Send consented": mistakes.smtp_send_consented(t),
        "mailbox": user["userPrincipalName"],
        "mailbox account enabled": bool(user["accountEnabled"]),
        "SMTP AUTH": {False: "on", True: "off", None: f"tenant default ({tenant_default})"}[smtp_auth],
        "forwarding": str(user["ForwardingSmtpAddress"] or "").removeprefix("smtp:") or None,
        "external forwarding allowed": not mistakes.forwarding_refused(t),
        "user consent": t.seed.get("user_consent", "legacy"),
        "security defaults": bool(t.seed.get("security_defaults")),
    }


def _steps_in_tenant(summary: dict[str, Any]) -> list[str]:
    """The steps whose objects the tenant holds: step 2's application, service principal and secret, step 3's
    forwarding (steps 1, 4, 5 and 6 change nothing in the tenant)."""
    done = []
    if (
        summary["application"]
        and summary["service principal"]
        and summary["secrets valid"] + summary["secrets expired"]
    ):
        done.append(registry.APP_REGISTRATION)
    if summary["forwarding"]:
        done.append(registry.MAILBOX)
    return done


def _faults(t: state.TraineeTenant) -> list[FaultStatus]:
    """Each fault injected (the latest time for one injected twice), and whether it is still in effect."""
    latest = {entry["fault"]: entry["at"] for entry in t.injected}
    found = []
    for name, at in latest.items():
        fault = mistakes.FAULTS.get(name)
        try:
            effect = fault.in_effect(t) if fault else None
        except RunbookError:
            effect = None
        found.append(FaultStatus(name, at, FAULT_STATE[effect]))
    return found


def _records_since(archive: Path, trainee: str, started: str | None) -> list[dict[str, Any]]:
    """The trainee's sealed records, oldest first, that ended after their sandbox was seeded (all, if unknown):
    the run that seeded it started before."""
    since = datetime.fromisoformat(started) if started else None
    manifests = []
    for record in records.record_dirs(archive, trainee):
        if not records.is_sealed(record):
            continue
        try:
            manifest = records.read_manifest(record)
            ended = datetime.fromisoformat(str(manifest.get("finished")))
        except (RunbookError, ValueError):
            continue  # damaged: `runbook records` shows it
        if since is None or ended >= since:
            manifests.append({**manifest, "record": record.name})
    return manifests


def _last_verify(manifests: list[dict[str, Any]]) -> LastVerify | None:
    for manifest in reversed(manifests):
        step = next((s for s in manifest.get("steps", []) if s.get("step") == registry.VERIFY), None)
        if step is not None and step.get("status") not in ("skipped", "not started"):
            counts = Counter(str(c.verdict) for c in StepRecord.from_json(step).checks)
            return LastVerify(
                manifest["record"],
                str(manifest.get("finished")),
                str(step.get("status")),
                {v: counts.get(v, 0) for v in VERDICTS},
            )
    return None


def trainee_status(path: Path, archive: Path) -> TraineeStatus:
    """One trainee's sandbox and records; a sandbox that cannot be read says why, in ``problem``."""
    status = TraineeStatus(path.stem, str(path))
    if not path.exists():
        status.problem = "no sandbox yet: the trainee has not run a notebook in sandbox mode"
        return status
    try:
        t = state.read(path)
        status.tenant = tenant_summary(t)
    except PermissionError:
        status.problem = "cannot read the sandbox: another account owns it (run the status as that account)"
        return status
    except (OSError, ValueError, KeyError) as error:
        status.problem = f"cannot read the sandbox ({type(error).__name__}): reset it"
        return status
    except RunbookError as error:
        status.problem = error.message
        return status
    status.last_active = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    manifests = _records_since(archive, path.stem, t.started)
    ran = {s.get("step") for m in manifests for s in m.get("steps", []) if s.get("status") == "ok"}
    done = ran | set(_steps_in_tenant(status.tenant))
    status.steps_done = [name for name in registry.NAMES if name in done]
    status.faults = _faults(t)
    status.last_verify = _last_verify(manifests)
    return status


def classroom(files: list[Path], archive: Path) -> list[TraineeStatus]:
    return [trainee_status(path, archive) for path in files]


# --- for people, and for programs ----------------------------------------------------------------------


def _when(iso_time: str | None) -> str:
    return f"{datetime.fromisoformat(iso_time).astimezone(UTC):%Y-%m-%d %H:%M} UTC" if iso_time else ""


def _tenant_text(summary: dict[str, Any]) -> str:
    if not summary:
        return ""
    s = summary
    secrets = f"{s['secrets valid']} valid secret(s)" + (
        f", {s['secrets expired']} expired" if s["secrets expired"] else ""
    )
    parts = [f"application ({secrets})" if s["application"] else "no application"]
    parts.append("Mail.Send consented" if s["Mail.Send consented"] else "no Mail.Send consent")
    if s["SMTP.Send consented"]:
        parts.append("SMTP.Send consented")
    if s["user consent"] == "off":
        parts.append("user consent off")
    if not s["mailbox account enabled"]:
        parts.append("mailbox account disabled")
    parts.append(f"SMTP AUTH {s['SMTP AUTH']}")
    parts.append("forwarding set" if s["forwarding"] else "no forwarding")
    parts.append("external forwarding " + ("allowed" if s["external forwarding allowed"] else "blocked"))
    if s["security defaults"]:
        parts.append("security defaults ON")
    return "; ".join(parts)


def _verify_text(last: LastVerify | None) -> str:
    if last is None:
        return "no record of a verify"
    counts = ", ".join(f"{n} {v}" for v, n in last.verdicts.items())
    return f"{_when(last.finished)}: {last.status} ({counts})"


def table(statuses: list[TraineeStatus]) -> pd.DataFrame:
    """One row per trainee, every value as it reads."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "trainee": s.trainee,
                "last active": _when(s.last_active),
                "steps done": " ".join(name.split("_")[0] for name in s.steps_done) or "none",
                "faults": ", ".join(f"{f.fault} ({f.state})" for f in s.faults) or "none",
                "last verify": "" if s.problem else _verify_text(s.last_verify),
                "tenant": s.problem or _tenant_text(s.tenant),
            }
            for s in statuses
        ],
        columns=COLUMNS,
    )


def text(statuses: list[TraineeStatus]) -> str:
    """The table as aligned text, every column left-aligned as words read."""
    frame = table(statuses)
    widths = {c: max([len(c), *map(len, frame[c])]) for c in frame.columns}
    aligned = frame.to_string(
        index=False, justify="left", formatters={c: f"{{:<{w}}}".format for c, w in widths.items()}
    )
    return "\n".join(line.rstrip() for line in aligned.splitlines())


def as_json(statuses: list[TraineeStatus]) -> str:
    return json.dumps([asdict(s) for s in statuses], indent=2)
