"""``runbook batch``: many tenants at once, for partners.

Every parameter file is read and checked first (unreadable, malformed or failing the offline checks: reported
and skipped; the rest run). Tenants run in a bounded pool (threads here, each tenant's notebooks in a kernel
of its own, a separate process where the steps' work is done; or Dask workers with ``--dask-scheduler``). The
batch record,
``archive/_batches/<UTC time>/batch.json``, lists every tenant from the start (``not started``) and is
rewritten as each one finishes, so an interrupted batch still has one: Ctrl-C stops starting tenants and asks
the running ones to stop cleanly (their records are sealed ``interrupted``), a second Ctrl-C stops them at
once. ``--only-failed`` re-runs every tenant that did not end ``ok``. Batch records hold no parameter values
beyond the files' paths, and so no secret. ``--reason``, ``--ticket`` and ``--no-ticket`` apply to every tenant.
``--rotate-within DAYS`` runs phase 1 of the secret rotation (``08_rotate_secret``) only: each tenant's run reads
its stored secret's expiry first and changes nothing unless it expires within DAYS (``skipped``, with the reason).

The summary says, per tenant, how the run ended (``ok, checklist incomplete`` when step 4's checklist was not all
confirmed), how many days the stored client secret has left, and the diagnosis of a failure, printed whole and
wrapped below the table, never cut.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .. import paths
from ..config import params as params_mod
from ..config import registry
from ..context import preflight
from ..engine import interrupts
from ..engine.results import qualified, run_left_undone
from ..errors import ParamsError, RunbookError
from ..records import integrity
from ..records import store as records
from ..steps import diagnose
from . import runner

if TYPE_CHECKING:
    import pandas as pd

BATCHES = "_batches"
#: how a tenant's run ended when nothing is left to do: ok, or skipped (a rotation not due)
DONE = ("ok", "skipped")
_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


@dataclass
class TenantOutcome:
    params_file: str
    tenant: str
    #: ok | skipped (``--rotate-within``: not due) | failed | invalid | interrupted | not started: all but ok and
    #: skipped are run again by --only-failed
    status: str
    duration_s: float = 0.0
    writes: int = 0
    failing_step: str = ""
    diagnosis: str = ""
    record: str = ""
    #: what an ok run left for a person to finish (``checklist incomplete``), said after its status
    left_undone: str = ""
    #: days of validity the stored client secret had left when the run read it; None when no step read it
    secret_days_left: int | None = None


#: how a failed step's error (:meth:`runbook_lib.context.step.Step.fail`) ends: whether the tenant was changed before it
AFTERWORD = ("Already changed", "Nothing was changed")


def _diagnosis(result: runner.RunResult) -> tuple[str, str]:
    """The first failing step and its diagnosis in one paragraph, whole: the troubleshooting step's finding, else
    the error's message (every line of it, so no sentence is cut at a line break), its fix, and whether the tenant
    was changed before it; each ends as a sentence."""
    failed = next((s for s in result.steps if s.status in ("failed", "interrupted")), None)
    if failed is None:
        return "", ""
    found = [f for s in result.steps for f in s.findings] or diagnose.diagnose(failed.error or "")
    if found:
        where = found[0].notebook or diagnose.PORTAL_SETTING
        return failed.step, f"{found[0].code}: {found[0].fix} ({where})"
    lines = [line.strip() for line in (failed.error or "").splitlines() if line.strip()]
    message = " ".join(line for line in lines if not line.startswith(("Fix:", "Step:", *AFTERWORD)))
    fix = [line for line in lines if line.startswith("Fix:")]
    afterword = [line for line in lines if line.startswith(AFTERWORD)]
    parts = [part if part.endswith((".", "!", "?")) else f"{part}." for part in [message, *fix, *afterword] if part]
    return failed.step, " ".join(parts)


def _secret_days_left(result: runner.RunResult) -> int | None:
    """The stored client secret's days left, from the last step that read it, counted from that step's clock."""
    for step in reversed(result.steps):
        if step.facts.secret and step.facts.as_of:
            return step.facts.secret.days_left(step.facts.as_of)
    return None


@dataclass(frozen=True)
class Options:
    """How each tenant of a batch runs: plain values, so a worker process or a Dask worker receives them."""

    archive: str
    steps: list[str] | None = None
    cell_timeout: int = runner.CELL_TIMEOUT
    signing_key: str | None = None
    #: how long a tenant waits for another run of the same tenant (in this batch or elsewhere) to finish
    wait_lock: float = 0.0
    #: ``--reason``, ``--ticket``, ``--no-ticket``: the ``change`` section every tenant's run gets on top of its file's
    change: dict[str, Any] | None = None
    #: ``--rotate-within DAYS``: phase 1 of the secret rotation, for the tenants whose stored secret expires within
    #: that many days (each run reads the expiry first and changes nothing for the others)
    rotate_within: int | None = None

    def params(self, params_file: str) -> params_mod.Params:
        """A tenant's parameters as this batch runs them: its file, with the batch's steps and change on top."""
        overrides: dict[str, Any] = {"steps": self.steps, "change": self.change}
        if self.rotate_within is not None:
            overrides["rotation"] = {"phase": 1, "within_days": self.rotate_within}
        return params_mod.override(params_mod.load(params_file), {k: v for k, v in overrides.items() if v}, params_file)


def run_one(
    params_file: str, options: Options, stop_file: str | None = None, kernel: runner.Kernel | None = None
) -> dict[str, Any]:
    """One tenant, start to sealed record; a plain function of plain values so Dask can ship it to a worker.
    Once the batch is stopping (``stop_file`` exists), a tenant not yet started is not started."""
    params = options.params(params_file)
    archive = options.archive
    if stop_file and Path(stop_file).exists():
        return asdict(TenantOutcome(params_file, params.tenant, "not started", diagnosis="the batch was interrupted"))
    started = time.monotonic()
    try:
        result = runner.run(
            params,
            archive=Path(archive),
            steps=options.steps,
            progress=lambda _: None,
            cell_timeout=options.cell_timeout,
            signing_key=Path(options.signing_key) if options.signing_key else None,
            stop_file=Path(stop_file) if stop_file else None,
            kernel=kernel,
            wait_lock=options.wait_lock,
        )
    except RunbookError as error:  # e.g. another run of this tenant holds the lock
        return asdict(
            TenantOutcome(
                params_file, params.tenant, "failed", round(time.monotonic() - started, 1), diagnosis=error.message
            )
        )
    step, why = _diagnosis(result)
    status = result.status
    if options.rotate_within is not None and result.ok:
        from ..steps.rotation import not_due

        skipped = not_due(result.steps)
        status, why = ("skipped", skipped) if skipped else (status, why)
    return asdict(
        TenantOutcome(
            params_file,
            params.tenant,
            status,
            round(time.monotonic() - started, 1),
            result.writes,
            step,
            why,
            str(result.record.relative_to(Path(archive))),
            run_left_undone(result.status, result.steps),
            _secret_days_left(result),
        )
    )


def validate_all(
    files: list[str], archive: Path, options: Options | None = None
) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """(file, tenant) of every file that passes every offline check of a run as ``options`` has it (a change to a
    real tenant needs its reason and ticket), and an outcome for each that does not."""
    options = options or Options(str(archive))
    valid, invalid = [], []
    for path in files:
        try:
            params = options.params(path)
            preflight.require(params, archive=archive, source=path, run=True)
            valid.append((path, params.tenant))
        except ParamsError as error:
            invalid.append(
                asdict(
                    TenantOutcome(
                        path,
                        Path(path).stem,
                        "invalid",
                        diagnosis="; ".join(f"{k}: {v}" for k, v in error.problems.items()),
                    )
                )
            )
    return valid, invalid


def failed_files(batch_record: Path) -> list[str]:
    """The parameter files of a batch's tenants that did not end ok, for ``--only-failed``."""
    try:
        data = json.loads((batch_record / "batch.json").read_text(encoding="utf-8"))
        tenants = data["tenants"]
    except (OSError, ValueError, KeyError, TypeError):
        raise RunbookError(
            f"{batch_record} is not a batch record: it has no readable batch.json",
            fix="give a folder such as archive/_batches/<UTC time>/",
        ) from None
    if not isinstance(tenants, list) or not all(
        isinstance(t, dict) and isinstance(t.get("params_file"), str) for t in tenants
    ):
        raise RunbookError(
            f"{batch_record}/batch.json is damaged: every tenant entry needs its params_file",
            fix="check the batch record with `runbook verify-record`, or name the parameter files yourself",
        )
    return [t["params_file"] for t in tenants if t.get("status") not in DONE]


class _BatchRecord:
    """``batch.json``, rewritten (atomically) as tenants finish; sealed at the end, whatever the ending."""

    def __init__(self, archive: Path, files: list[str], outcomes: dict[str, dict[str, Any]]) -> None:
        base = archive / BATCHES
        base.mkdir(parents=True, exist_ok=True)
        self.folder = base / records.utc_stamp()
        suffix = 0
        while True:
            try:
                self.folder.mkdir()
                break
            except FileExistsError:
                suffix += 1
                self.folder = base / f"{records.utc_stamp()}-{suffix}"
        self.files = files
        self.outcomes = outcomes
        self.stop_file = self.folder / "stop-requested"
        self.save("running")

    def save(self, status: str) -> None:
        data = {
            "status": status,
            "files": self.files,
            "tenants": sorted(self.outcomes.values(), key=lambda o: o["tenant"]),
        }
        tmp = self.folder / ".batch.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / "batch.json")

    def seal(self, signing_key: Path | None) -> Path:
        done = list(self.outcomes.values())
        status = overall(o["status"] for o in done)
        self.save(status)
        summary(done).to_csv(self.folder / "summary.csv", index=False)
        manifest = {
            "kind": "batch",
            "status": status,
            "tenants": len(done),
            "files": integrity.file_hashes(self.folder),
        }
        (self.folder / records.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        integrity.seal(self.folder, signing_key=signing_key)
        return self.folder


class _Interrupts(interrupts.StopSignals):
    """Ctrl-C (or SIGTERM) during a batch: the first stops starting tenants and asks the running ones to stop
    before their next request; a second stops them at once. Their records are sealed either way."""

    def __init__(self, report: Callable[[str], None], stop_file: Path) -> None:
        super().__init__()
        self.report = report
        self.stop_file = stop_file

    def handle(self, signum: int) -> None:
        self.stop_file.touch()
        at_once = self.count > 1 or signum == signal.SIGTERM
        self.report(
            "Stopping the batch: no new tenant starts; running ones "
            + (
                "stop now."
                if at_once
                else "finish their request in flight and stop (Ctrl-C again to stop them at once)."
            )
        )
        if at_once:
            runner.stop_now()


def run_batch(
    files: list[str],
    *,
    jobs: int | None = None,
    steps: list[str] | None = None,
    archive: Path | None = None,
    cell_timeout: int = runner.CELL_TIMEOUT,
    dask_scheduler: str | None = None,
    signing_key: Path | None = None,
    wait_lock: float = 0.0,
    change: dict[str, Any] | None = None,
    rotate_within: int | None = None,
    progress: Callable[[str], None] = print,
) -> tuple[Path, pd.DataFrame]:
    """Run every valid tenant; returns the sealed batch record's folder and the summary table. ``change``: the
    ``change`` section (reason, ticket, no_ticket) every tenant runs with, on top of its file's. ``rotate_within``:
    only phase 1 of the secret rotation, for the tenants whose stored secret expires within that many days; the
    others end ``skipped``, with the reason."""
    archive = (archive or paths.archive_dir()).resolve()
    files = [str(Path(f).resolve()) for f in files]
    steps = [registry.ROTATE_SECRET] if rotate_within is not None else steps
    signing = str(signing_key) if signing_key else None
    options = Options(str(archive), steps, cell_timeout, signing, wait_lock, change, rotate_within)
    valid, invalid = validate_all(files, archive, options)
    for bad in invalid:
        progress(f"invalid: {bad['params_file']}: {bad['diagnosis']}")
    outcomes = {o["params_file"]: o for o in invalid}
    outcomes.update({f: asdict(TenantOutcome(f, tenant, "not started")) for f, tenant in valid})
    batch = _BatchRecord(archive, files, outcomes)
    total = len(valid)

    def finished(outcome: dict[str, Any], done: int) -> None:
        outcomes[outcome["params_file"]] = _report(outcome, done, total, progress)
        batch.save("running")

    try:
        if dask_scheduler:
            from distributed import Client
            from distributed import as_completed as dask_completed

            with Client(dask_scheduler) as client:
                futures = [client.submit(run_one, f, options, pure=False) for f, _ in valid]
                for done, future in enumerate(dask_completed(futures), start=1):
                    finished(future.result(), done)
        else:
            _run_pool(valid, jobs, options, batch.stop_file, finished, progress)
    finally:
        batch.stop_file.unlink(missing_ok=True)
        folder = batch.seal(signing_key)
    return folder, summary(list(outcomes.values()))


def _run_pool(
    valid: list[tuple[str, str]],
    jobs: int | None,
    options: Options,
    stop_file: Path,
    finished: Callable[[dict[str, Any], int], None],
    progress: Callable[[str], None],
) -> None:
    """Tenants in threads of this process, each thread keeping one kernel (a process of its own, where the steps'
    work is done) for its tenants one after another: no worker processes to start, no second copy of the kit,
    and a kernel's start-up and imports paid once per thread, not per tenant. A stop reaches every run through
    the shared stop file."""
    local = threading.local()
    kernels: list[runner.Kernel] = []

    def tenant(params_file: str) -> dict[str, Any]:
        if not hasattr(local, "kernel"):
            local.kernel = runner.Kernel().__enter__()
            kernels.append(local.kernel)
        return run_one(params_file, options, str(stop_file), local.kernel)

    try:
        in_pool(tenant, [f for f, _ in valid], jobs, finished, _Interrupts(progress, stop_file))
    finally:
        for kernel in kernels:
            kernel.__exit__()


def in_pool(
    work: Callable[[_Item], _Result],
    items: list[_Item],
    jobs: int | None,
    finished: Callable[[_Result, int], None],
    guard: AbstractContextManager[Any] | None = None,
) -> None:
    """``work`` on each item in a bounded pool of threads (``jobs``, default the number of cores); ``finished``
    hears each result, and how many are done, in the calling thread as each ends. ``guard`` is held while the
    pool runs (the batch's Ctrl-C handling); ``runbook fleet`` reads its tenants in the same pool."""
    with (
        ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2, thread_name_prefix="tenant") as pool,
        guard or nullcontext(),
    ):
        futures = [pool.submit(work, item) for item in items]
        for done, future in enumerate(as_completed(futures), start=1):
            finished(future.result(), done)


def _report(outcome: dict[str, Any], done: int, total: int, progress: Callable[[str], None]) -> dict[str, Any]:
    progress(
        f"[{done}/{total}] {outcome['tenant']}: {_status_text(outcome)} in {outcome['duration_s']:.0f} s, "
        f"{outcome['writes']} writes"
        + (
            "; " + ": ".join(filter(None, [outcome["failing_step"], outcome["diagnosis"]]))
            if outcome["status"] != "ok"
            else ""
        )
    )
    return outcome


def _status_text(outcome: dict[str, Any]) -> str:
    return qualified(outcome["status"], outcome.get("left_undone", ""))


def overall(statuses: Iterable[str]) -> str:
    """A batch's status from its tenants' (as batch.json or the summary has them: ``ok, checklist incomplete``,
    see :func:`runbook_lib.engine.results.qualified`, is ``ok`` with what a person must still finish): ``interrupted``
    when any was stopped or never started, ``ok`` when every one ended ok or skipped, else ``failed``."""
    ended = [status.partition(",")[0] for status in statuses]
    if any(status in ("interrupted", "not started") for status in ended):
        return "interrupted"
    return "ok" if all(status in DONE for status in ended) else "failed"


def summary(outcomes: list[dict[str, Any]]) -> pd.DataFrame:
    """The batch's table, by tenant (for people, and summary.csv): the status as people read it, the stored client
    secret's days left (blank when no step read it), and each diagnosis whole."""
    import pandas as pd

    columns = ["tenant", "status", "secret_days_left", "duration_s", "writes", "failing_step", "diagnosis", "record"]
    rows = [
        {
            **outcome,
            "status": _status_text(outcome),
            "secret_days_left": "" if outcome.get("secret_days_left") is None else outcome["secret_days_left"],
        }
        for outcome in sorted(outcomes, key=lambda o: str(o["tenant"]))
    ]
    return pd.DataFrame(rows, columns=columns)


#: the width the printed summary wraps each diagnosis to
WRAP = 100


def summary_text(table: pd.DataFrame, record: Path) -> str:
    """The summary as printed: the table without its diagnoses and record folders, then each diagnosis whole,
    wrapped (a diagnosis cut short is a fix half read); summary.csv in ``record`` holds the same."""
    text = table.drop(columns=["diagnosis", "record"]).to_string(index=False)
    diagnosed = [row for row in table.to_dict("records") if row["diagnosis"]]
    if not diagnosed:
        return text
    paragraphs = [
        textwrap.fill(
            str(row["tenant"]) + (f" ({row['failing_step']})" if row["failing_step"] else "") + f": {row['diagnosis']}",
            WRAP,
            initial_indent="  ",
            subsequent_indent="      ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        for row in diagnosed
    ]
    return "\n".join([text, "", f"Diagnoses (also in {record / 'summary.csv'}):", *paragraphs])
