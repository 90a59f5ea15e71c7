"""Fleet health (``runbook fleet``, notebook ``07_fleet_health``): after day one, every tenant read, never
written, and judged ``ok``, ``warn`` or ``fail`` with the one thing to do next.

What breaks mail after the configuration is done: the client secret expiring (Webex Connect stops sending
without a word), a consent someone revoked, an application or mailbox setting someone changed, security
defaults turned on. For each tenant this reads, through that tenant's own transport (its ``mode``: a replay
answers from ``recordings/<tenant>/07_fleet_health.yaml``):

* the mailbox user, the application, its service principal and consents, compared with step 2's desired
  state by verify's own functions (:func:`runbook_lib.steps.verify.application_drift`), and the SMTP.Send consent
  as it is;
* security defaults and user assignment (:mod:`runbook_lib.tenant.blockers`);
* the mailbox settings through the admin API (``mailbox.apply_with: adminapi``; with ``powershell`` they are
  not read);
* the client secret the store holds among the application's secrets (:mod:`runbook_lib.config.client_secrets`), its
  days left counted by the tenant's clock, and the application's other secrets;
* the last successful verify: the newest sealed record whose ``05_verify`` ended ok.

No executor is ever made, so nothing can be written; each tenant's write count is kept and reported. No
token is asked for with the stored secret and nobody signs in as the mailbox: that is verify's job.

Tenants are read in the batch pool's threads. vcrpy (replay and record) patches HTTP for the whole process
while a recording is open, so tenants in those modes are read one at a time, before the pool reads the
others (live, sandbox) in parallel. A tenant whose read fails is a ``fail`` row with the reason, never the
end of the fleet.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import paths
from ..config import client_secrets, knowledge, registry, secrets
from ..config import params as params_mod
from ..context import preflight
from ..context.checks import Checks
from ..engine import journal
from ..engine.results import Check
from ..errors import ParamsError, RunbookError
from ..records import store as records
from ..steps import verify
from ..tenant import blockers, exchange
from ..wire import auth, transport
from . import batch

if TYPE_CHECKING:
    from ..context.step import Step

Status = Literal["ok", "warn", "fail"]
STEP = registry.FLEET_HEALTH
#: fail first, then warn, then ok
RANK: dict[str, int] = {"fail": 0, "warn": 1, "ok": 2}
#: the default fleet of the notebook: the demo tenants
DEMO_FLEET = "params/demo/*.yaml"
#: the next action's parameter file when the notebook's own tenant came without one
PARAMS_PLACEHOLDER = "PARAMS.yaml"
#: the two-phase rotation: what fixes a secret that expires soon or has expired
ROTATE = ("rotate the secret (two phases: Webex Connect keeps sending throughout)", registry.ROTATE_SECRET)
#: how the stored value relates to the application's secrets, when it is not a valid match: the verify check
#: code whose knowledge-base entry says what it means and what fixes it
STORE_CODES = {"empty": "secret_missing", "secret id": "secret_id_pasted", "no match": "secret_no_match"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a tenant: how bad, what, what fixes it and the notebook that does."""

    status: Status
    what: str
    fix: str
    notebook: str


@dataclass
class Health:
    """What was read of one tenant: plain values, so the row goes to CSV and JSON as it is. Never a secret:
    the stored secret is described by its hint (the three characters Entra ID shows) and expiry only."""

    tenant: str
    params_file: str
    mode: str
    warn_days: int
    #: the tenant's clock when it was read (a replay's: the moment its recording was made)
    as_of: str = ""
    #: whether the application exists (None: not read)
    configured: bool | None = None
    #: the store's value among the application's secrets: matched, empty, secret id, no match
    stored: str = ""
    hint: str = ""
    expires: str = ""
    days_left: int | None = None
    #: the application's other secrets: "hint... until date" (rotation leaves two for a while)
    other_secrets: list[str] = field(default_factory=list)
    #: the application's other secrets' days left, for the timeline
    other_days_left: list[int] = field(default_factory=list)
    application: str = ""
    consent: str = ""
    mailbox: str = ""
    last_verify: str = ""
    #: what verify's checks found wrong (the secret's own problem is judged from the fields above)
    problems: list[Problem] = field(default_factory=list)
    #: why the read failed (then nothing above is trusted)
    error: str = ""
    error_fix: str = ""
    error_step: str = ""
    #: requests that changed something: zero, always (the fleet has no executor)
    writes: int = 0

    @property
    def real_tenant(self) -> bool:
        return self.mode in records.REAL_TENANT_MODES


@dataclass(frozen=True)
class Judgement:
    status: Status
    reason: str
    next_action: str


def _action(fix: str, notebook: str, params_file: str) -> str:
    return f"{fix}: runbook run {params_file} --steps {notebook}" if notebook else fix


def secret_problem(stored: str, days_left: int | None, expires: str, warn_days: int) -> Problem | None:
    """The stored client secret judged as verify judges it: none matching (empty, a Secret ID, a value no
    secret has) and expired are ``fail``; under ``warn_days`` days left is ``warn``; the fix of an expiring or
    expired one is rotation."""
    if stored in STORE_CODES:
        entry = knowledge.lookup("checks", STORE_CODES[stored])
        assert entry is not None, STORE_CODES[stored]  # the knowledge base is checked when first read
        return Problem("fail", f"client secret: {entry.meaning}", entry.fix, entry.notebook)
    if days_left is None:
        return None
    if days_left <= 0:
        return Problem("fail", f"client secret: expired on {expires}", *ROTATE)
    if days_left < warn_days:
        return Problem("warn", f"client secret: expires in {days_left} days, on {expires}", *ROTATE)
    return None


def judge(health: Health) -> Judgement:
    """One status and the next action from what was read: pure, so it is tested on its own. The worst problem
    decides the status; the first of the worst says what to do next."""
    run = f"runbook run {health.params_file}"
    if health.error:
        fix = health.error_fix or "fix the cause, then run fleet health again"
        return Judgement(
            "fail", f"could not be read: {health.error}", _action(fix, health.error_step, health.params_file)
        )
    if health.configured is False:
        return Judgement(
            "fail",
            "not configured: the application does not exist in this tenant",
            f"configure the tenant: {run}",
        )
    found = [*health.problems]
    secret = secret_problem(health.stored, health.days_left, health.expires, health.warn_days)
    if secret is not None:
        found.append(secret)
    if not found:
        rotate_by = f"; rotate the secret before {health.expires}" if health.expires else ""
        return Judgement("ok", "nothing wrong was found", f"nothing to do now{rotate_by}")
    worst = min(found, key=lambda p: RANK[p.status])
    first = next(p for p in found if p.status == worst.status)
    return Judgement(
        worst.status, "; ".join(p.what for p in found), _action(first.fix, first.notebook, health.params_file)
    )


def _problems(checks: Iterable[Check]) -> list[Problem]:
    return [
        Problem("fail" if c.verdict == "fail" else "warn", f"{c.check}: {c.detail}", c.fix, c.notebook)
        for c in checks
        if c.verdict in ("fail", "warn")
    ]


def _summary(checks: list[Check], codes: Callable[[str], bool], none: str) -> str:
    """What a group of checks says in a few words: as desired, or what is wrong."""
    group = [c for c in checks if codes(c.code)]
    if not group:
        return none
    if all(c.verdict == "not tested" for c in group):
        return "not read"
    bad = [c.check for c in group if c.verdict in ("fail", "warn")]
    return "drift: " + ", ".join(bad) if bad else "as desired"


def last_verify(archive: Path, tenant: str) -> str:
    """The date of the tenant's newest sealed record whose verify step ended ok; empty when there is none."""
    for record in reversed(records.record_dirs(archive, tenant)):
        if not records.is_sealed(record):
            continue
        try:
            manifest = records.read_manifest(record)
        except RunbookError:
            continue
        steps = {s.get("step"): s.get("status") for s in manifest.get("steps", []) if isinstance(s, dict)}
        if steps.get(registry.VERIFY) == "ok":
            return str(manifest.get("finished") or manifest.get("started") or "")[:10]
    return ""


def read(step: Step, health: Health) -> Health:
    """Everything fleet health reads of one tenant, through ``step`` (which never makes an executor); fills
    ``health`` and returns it."""
    checks = Checks(step)
    exchange.check_mailbox_user(step)
    directory = verify.application_drift(step, checks)
    app, sp = directory.app, directory.sp
    health.configured = app is not None
    verify.consent(step, checks, directory)
    blockers.assignment(step, checks, sp)
    blockers.security_defaults(step, checks)
    verify.mailbox_drift(step, checks)
    now = step.clock.now()
    health.as_of = now.isoformat(timespec="seconds")
    on_app = client_secrets.app_secrets(app)
    match = client_secrets.match_stored(secrets.read(step.params.secret_store), on_app, now)
    health.stored = match.kind
    if match.secret is not None:
        health.hint, health.expires = match.secret.hint, match.secret.expires.date().isoformat()
        health.days_left = match.secret.days_left(now)
    others = [s for s in on_app if s is not match.secret]
    health.other_secrets = [f"{s.hint}... until {s.expires.date().isoformat()}" for s in others]
    health.other_days_left = [s.days_left(now) for s in others]
    items = step.result.checks
    health.application = _summary(items, lambda code: code == "application_drift", "not read")
    health.consent = _summary(
        items, lambda code: code.endswith(" consent") or code in ("user_consent_off", "consent_pending"), ""
    )
    health.mailbox = _summary(items, lambda code: code.startswith("mailbox_"), "not read")
    health.problems = _problems(items)
    return health


def _failed(health: Health, error: RunbookError) -> None:
    """Why the read failed: the message's first line (a table of candidates stays in the step's own record)."""
    health.error = error.message.splitlines()[0]
    health.error_fix, health.error_step = error.fix, error.step


def _unread(params: params_mod.Params, params_file: str) -> Health:
    return Health(params.tenant, params_file, params.mode, params.verify.secret_warn_days)


def read_tenant(params: params_mod.Params, params_file: str, archive: Path) -> Health:
    """One tenant, read through a step of its own (its transport, sign-in and clients); a failure is the row's
    reason, never an exception. The step's transport is closed, not ``finish``-ed: a finished step publishes
    its record into the notebook, and the tenants of a fleet are not the notebook's step."""
    from ..context.step import Step

    health = _unread(params, params_file)
    health.last_verify = last_verify(archive, params.tenant)
    auth.clear_cache(params)  # as a run does: each tenant signs in afresh, and no token outlives the read
    step: Step | None = None
    try:
        step = Step(STEP, params)
        read(step, health)
    except RunbookError as error:
        _failed(health, error)
    except Exception as error:  # a tenant's failure must never end the fleet
        health.error = f"{type(error).__name__}: {error}"
    finally:
        if step is not None:
            try:
                step.transport.close()
            except RunbookError as error:
                health.error = health.error or error.message
            health.writes = step.transport.counts.writes + step.transport.counts.failed_writes
        auth.clear_cache(params)
    return health


def read_own(step: Step, params_file: str, archive: Path) -> Health:
    """The notebook's own tenant through the notebook's step (``runbook run P --steps 07_fleet_health``): its
    checks, facts and counts land in the run's record."""
    health = _unread(step.params, params_file)
    health.last_verify = last_verify(archive, step.params.tenant)
    try:
        read(step, health)
    except RunbookError as error:
        _failed(health, error)
    health.writes = step.transport.counts.writes + step.transport.counts.failed_writes
    return health


# --- the fleet ---------------------------------------------------------------------------------------------


def expand(patterns: Iterable[str]) -> list[str]:
    """Parameter files from names or glob patterns (relative to the kit), in order, each once."""
    found: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(paths.resolve(pattern)))) if glob.has_magic(pattern) else [pattern]
        found += [shown for shown in map(paths.shown, matches) if shown not in found]
    return found


def load_all(files: list[str], archive: Path) -> list[tuple[str, params_mod.Params]]:
    """Every file read and checked offline before any tenant is read: one error naming each bad file's fields."""
    loaded, problems = [], {}
    for path in files:
        try:
            params = params_mod.load(paths.resolve(path))
            preflight.require(params, archive=archive, source=path)
            loaded.append((path, params))
        except ParamsError as error:
            problems.update({f"{path}: {name}": why for name, why in error.problems.items()})
    if problems:
        raise ParamsError("fleet", problems)
    if not loaded:
        raise ParamsError("fleet", {"PARAMS": "no parameter file given"})
    return loaded


@dataclass
class Row:
    """A tenant's line of the report: what was read and how it was judged."""

    health: Health
    judgement: Judgement

    @property
    def urgency(self) -> tuple[int, float, str]:
        days = self.health.days_left
        return (RANK[self.judgement.status], float("-inf") if days is None else days, self.health.tenant)

    def as_dict(self) -> dict[str, Any]:
        """The row as CSV and JSON have it (never a secret)."""
        h = self.health
        return {
            "tenant": h.tenant,
            "status": self.judgement.status,
            "days_left": h.days_left,
            "expires": h.expires,
            "stored_secret": f"{h.hint}... ({h.stored})" if h.hint else h.stored,
            "other_secrets": "; ".join(h.other_secrets),
            "application": h.application,
            "consent": h.consent,
            "mailbox": h.mailbox,
            "last_verify": h.last_verify,
            "reason": self.judgement.reason,
            "next_action": self.judgement.next_action,
            "mode": h.mode,
            "mode_meaning": records.mode_meaning(h.mode),
            "as_of": h.as_of,
            "writes": h.writes,
            "params_file": h.params_file,
        }


@dataclass
class Fleet:
    """Every tenant's row, most urgent first."""

    rows: list[Row]

    @property
    def failed(self) -> bool:
        return any(r.judgement.status == "fail" for r in self.rows)

    @property
    def exit_code(self) -> int:
        """0 when no tenant is at fail, 1 when any is: for cron and CI."""
        return 1 if self.failed else 0

    def counts(self) -> dict[str, int]:
        return {s: sum(r.judgement.status == s for r in self.rows) for s in RANK}

    def records(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.rows]

    def table(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.records(), dtype=object)  # days left stay whole numbers, blank when none

    def _repr_html_(self) -> str:
        from .fleet_report import report_body

        return report_body(self)

    def __repr__(self) -> str:
        from .fleet_report import text

        return text(self)


def _rows(healths: Iterable[Health]) -> Fleet:
    rows = [Row(h, judge(h)) for h in healths]
    return Fleet(sorted(rows, key=lambda r: r.urgency))


def read_fleet(
    files: list[str],
    *,
    jobs: int | None = None,
    archive: Path | None = None,
    progress: Callable[[Health, int, int], None] | None = None,
) -> Fleet:
    """Read every tenant of ``files`` (names or glob patterns), judged and sorted by urgency. Bad input raises
    :class:`ParamsError` before any tenant is read."""
    archive = archive or paths.archive_dir()
    return _read_loaded(load_all(expand(files), archive), jobs, archive, progress)


def _read_loaded(
    loaded: list[tuple[str, params_mod.Params]],
    jobs: int | None,
    archive: Path,
    progress: Callable[[Health, int, int], None] | None,
) -> Fleet:
    done: list[Health] = []

    def finished(health: Health, _: int) -> None:
        done.append(health)
        if progress is not None:
            progress(health, len(done), len(loaded))

    for path, params in loaded:  # a transport that intercepts the whole process: one tenant at a time
        if transport.transport_class(params.mode).process_wide:
            finished(read_tenant(params, path, archive), 0)
    rest = [(path, params) for path, params in loaded if not transport.transport_class(params.mode).process_wide]
    batch.in_pool(lambda item: read_tenant(item[1], item[0], archive), rest, jobs, finished)
    return _rows(done)


def notebook_fleet(step: Step, fleet_files: list[str], params_file: str = "", archive: str = "") -> Fleet:
    """What notebook 07 shows. In a run (``runbook run P --steps 07_fleet_health``), or with no ``fleet_files``,
    the fleet is the notebook's own tenant, read through the notebook's step (its checks and counts land in the
    record); otherwise the files ``fleet_files`` names, each read through a step of its own, and the notebook's
    step reads nothing: it is closed first, so that its recording does not answer for the fleet's tenants."""
    folder = Path(archive) if archive else paths.archive_dir()
    in_run = journal.started_by_runner()
    if in_run or not fleet_files:
        return _rows([read_own(step, params_file or PARAMS_PLACEHOLDER, folder)])
    loaded = load_all(expand(fleet_files), folder)  # a bad file is named before anything is read
    step.finish()
    return _read_loaded(loaded, None, folder, None)
