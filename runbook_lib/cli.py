"""The ``runbook`` command: a thin layer over :mod:`runbook_lib.running.runner` and friends.

Exit codes: 0 success, 1 a step (or a check of a record) failed, 2 invalid parameters or usage (nothing was
sent or written), 130 the run was interrupted (its record is sealed, holding every change made). ``plan
--detailed-exitcode`` follows Terraform: 0 nothing to do, 2 changes pending, 1 any error (invalid input included).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, get_args

from . import __version__, paths
from .config import params as params_mod
from .config import registry
from .errors import ParamsError, RunbookError
from .sandbox import FAULT_NAMES

SIGNING_KEY_ENV = "RUNBOOK_SIGNING_KEY"
EXIT_INTERRUPTED = 130
#: `plan --detailed-exitcode`: the plan holds changes to make (Terraform's convention, for schedulers)
EXIT_PENDING = 2


def _archive(args: argparse.Namespace) -> Path:
    """The archive folder: ``--archive``, else the kit's; a path that exists and is not a folder is refused."""
    archive = Path(args.archive) if getattr(args, "archive", None) else paths.archive_dir()
    if archive.exists() and not archive.is_dir():
        raise ParamsError("the command line", {"--archive": f"{archive} exists and is not a folder"})
    return archive


def _signing_key(args: argparse.Namespace) -> Path | None:
    key = getattr(args, "sign_key", None) or os.environ.get(SIGNING_KEY_ENV)
    return Path(key) if key else None


def _load(path: str, overrides: dict[str, Any], archive: Path, *, run: bool = False) -> params_mod.Params:
    """The validated file, with command-line overrides on top, and every offline check passed (``run``: those
    of a run too, such as the reason and ticket of a change to a real tenant)."""
    from .context import preflight

    params = params_mod.load(path)
    if overrides:
        params = params_mod.override(params, overrides, path)
    preflight.require(params, archive=archive, source=path, run=run)
    return params


def _change(args: argparse.Namespace) -> dict[str, Any]:
    """``--reason``, ``--ticket`` and ``--no-ticket`` as overrides of the ``change`` section; empty when none given."""
    given = {"reason": args.reason, "ticket": args.ticket, "no_ticket": args.no_ticket or None}
    return {"change": {k: v for k, v in given.items() if v is not None}} if any(given.values()) else {}


def cmd_validate(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.params:
        try:
            loaded = _load(path, {}, _archive(args))
            print(f"{path}: valid")
            for warning in params_mod.name_warnings(loaded):
                print(f"  warning: {warning}")
        except ParamsError as exc:
            print(exc.explain(), file=sys.stderr)
            bad += 1
    return 2 if bad else 0


def _run(args: argparse.Namespace, overrides: dict[str, Any], plan: bool) -> int:
    from .engine.changes import changes_text, pending, summary_line
    from .engine.results import qualified, run_left_undone
    from .records.store import mode_meaning
    from .running import runner

    if args.mode:
        overrides["mode"] = args.mode
    if args.steps:  # the run's parameters name the steps it runs (a reason and ticket depend on them)
        overrides["steps"] = args.steps
    if args.confirm_rotation is not None:  # phase 2 without editing the file
        overrides["rotation"] = {"phase": 2, "confirmed_by": args.confirm_rotation}
    params = _load(args.params, {**overrides, **_change(args)}, _archive(args), run=True)
    steps = args.steps or (registry.plan_steps(params.steps) if plan else None)
    result = runner.run(
        params, archive=_archive(args), steps=steps, signing_key=_signing_key(args), wait_lock=args.wait
    )
    changes = [c for step in result.steps for c in step.changes]
    print(f"\n{mode_meaning(params.mode, params.apply)}")
    print("\nChanges:")
    print(changes_text(changes) if changes else "  (none)")
    print(summary_line(changes))
    failed = sum(int(s.counts.get("failed_writes", 0)) for s in result.steps)
    print(f"\nRecord: {result.record} (manifest sha256 {result.manifest_sha256})")
    status = qualified(result.status.upper(), run_left_undone(result.status, result.steps))
    print(f"Accepted writes: {result.writes}; failed write attempts: {failed}; status: {status}")
    for step in result.steps:
        if step.error and step.status in ("failed", "interrupted"):
            print(f"\n{step.step} {step.status}:\n{step.error}", file=sys.stderr)
    code = {"ok": 0, "interrupted": EXIT_INTERRUPTED}.get(result.status, 1)
    if code == 0 and getattr(args, "detailed_exitcode", False) and pending(changes):
        return EXIT_PENDING
    return code


def cmd_run(args: argparse.Namespace) -> int:
    return _run(args, {}, plan=False)


def cmd_plan(args: argparse.Namespace) -> int:
    return _run(args, {"apply": False}, plan=True)


def cmd_batch(args: argparse.Namespace) -> int:
    from .running import batch

    files = list(args.params)
    if args.only_failed:
        files += batch.failed_files(Path(args.only_failed))
    if not files:
        print("no parameter files given", file=sys.stderr)
        return 2
    if args.rotate_within is not None and args.steps:
        print("--rotate-within runs the rotation's phase 1 only: give it without --steps", file=sys.stderr)
        return 2
    record, table = batch.run_batch(
        files,
        jobs=args.jobs,
        steps=args.steps,
        archive=_archive(args),
        cell_timeout=args.cell_timeout,
        dask_scheduler=args.dask_scheduler,
        signing_key=_signing_key(args),
        wait_lock=args.wait,
        change=_change(args).get("change"),
        rotate_within=args.rotate_within,
    )
    print("\n" + batch.summary_text(table, record))
    print(f"\nBatch record: {record}")
    return {"ok": 0, "interrupted": EXIT_INTERRUPTED}.get(batch.overall(table["status"]), 1)


def _seal_abandoned(archive: Path, tenant: str) -> None:
    from .records import store as records

    records.seal_abandoned(archive, tenant, report=lambda text: print(text, file=sys.stderr))


def cmd_records(args: argparse.Namespace) -> int:
    from .records import record_views
    from .records import store as records

    records.tenant_folder(_archive(args), args.tenant)  # a tenant's name, never a path, before anything is done
    _seal_abandoned(_archive(args), args.tenant)
    table = record_views.history(_archive(args), args.tenant)
    print(table.to_string(index=False) if len(table) else f"no records of tenant {args.tenant}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Only reads: a record is checked before it is shown, and one that does not verify is shown as such (exit 1).
    Sealing a killed run's record is the business of the commands that take a tenant, never of a path."""
    from .records import integrity, record_views
    from .records import store as records

    record = records.require_record(Path(args.record))
    if not records.is_sealed(record):
        raise RunbookError(
            f"{record} is not sealed: its run is still going, or was killed before it ended",
            fix=f"wait for the run to end, or seal a killed run's record with `runbook records {record.parent.name}`",
        )
    problems = integrity.verify(record)
    if problems:
        print(f"WARNING: this record does not verify; what it says may be forged ({len(problems)} problem(s)):")
        print("\n".join(f"  - {p}" for p in problems) + "\n")
    print(record_views.describe(record))
    return 1 if problems else 0


def cmd_verify_record(args: argparse.Namespace) -> int:
    from .records import integrity

    problems = integrity.verify(Path(args.record), public_key=Path(args.public_key) if args.public_key else None)
    signed = " and its signature" if args.public_key else ""
    attached = len(integrity.attachment_lines(Path(args.record)))
    files = f"files and {attached} attachment(s)" if attached else "files"
    print("\n".join(problems) if problems else f"{args.record}: seal, chain, {files}{signed} all match")
    return 1 if problems else 0


def cmd_diff(args: argparse.Namespace) -> int:
    from .records import record_diff

    if (args.tenant is not None) == bool(args.records) or len(args.records) not in (0, 2):
        print("give two records (runbook diff RECORD_A RECORD_B) or a tenant (--tenant T), not both", file=sys.stderr)
        return 2
    if args.tenant is not None:
        from .records import store as records

        records.tenant_folder(_archive(args), args.tenant, field="--tenant")
        _seal_abandoned(_archive(args), args.tenant)
        a, b = record_diff.last_two(_archive(args), args.tenant)
    else:
        a, b = (Path(r) for r in args.records)
    print(record_diff.diff_records(a, b, any_tenant=args.any_tenant).text())
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    from .records import integrity

    done = integrity.attach(Path(args.record), Path(args.file), note=args.note, signing_key=_signing_key(args))
    print(
        f"{done.describe()}\nThe record's own seal is unchanged. The attachment's manifest sha256 is "
        f"{done.manifest_sha256}: keep it elsewhere if that matters (nothing later vouches for the newest attachment)"
    )
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from .records import integrity

    key_id = integrity.generate_key(Path(args.private), Path(args.public))
    print(
        f"key {key_id}: private key {args.private} (mode 0600; keep it where runs can read it and nobody else), "
        f"public key {args.public} (give it to auditors for `runbook verify-record --public-key`)"
    )
    return 0


#: a kernel's TCP ports on loopback can be reached from every account on the machine, and what the kernel outputs
#: (a revealed client secret too) read by anyone who subscribes, unencrypted: kernels use Unix sockets instead
KERNELS_OVER_IPC = ["--KernelManager.transport=ipc"] if os.name == "posix" else []


def lab_command(extra: list[str], folder: Path | None = None) -> list[str]:
    """JupyterLab on the kit (or ``folder``), opening on its notebooks, from this environment so the kit's kernel is
    there: a trainee reaches ``params/`` and ``archive/`` too. Its kernels talk over IPC (Unix sockets beside their
    connection files, in the runtime folder :func:`cmd_lab` makes private), never TCP."""
    as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # containers, CI
    opening = [] if folder else ["--LabApp.default_url=/lab/tree/notebooks/01_webex_connect_app.ipynb"]
    folder = folder or paths.project_root()
    root = [f"--ServerApp.root_dir={folder}", *opening]
    return [sys.executable, "-m", "jupyterlab", *root, *KERNELS_OVER_IPC, *as_root, *extra]


#: how long JupyterLab may take to shut its kernels down once asked to stop, before it is killed
LAB_STOP_SECONDS = 30


def cmd_lab(args: argparse.Namespace) -> int:
    """JupyterLab with its connection files and kernel sockets in a new folder only this account can enter (mode
    0700, removed afterwards), under /tmp: a Unix socket's path must stay under about 100 bytes. Ctrl-C or SIGTERM
    (stopped by its PID) stops JupyterLab and every kernel it started, then removes that folder: nothing is left
    serving on loopback."""
    import signal
    import subprocess
    import tempfile

    base = "/tmp" if os.path.isdir("/tmp") else None
    with tempfile.TemporaryDirectory(prefix="runbook-lab-", dir=base) as runtime:
        lab = subprocess.Popen(
            lab_command(args.jupyter_args), env={**os.environ, "JUPYTER_RUNTIME_DIR": runtime}, start_new_session=True
        )

        def stop(signum: int, frame: object) -> None:  # JupyterLab shuts its kernels down on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lab.pid, signal.SIGTERM)

        previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = lab.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            with contextlib.suppress(subprocess.TimeoutExpired):
                lab.wait(timeout=LAB_STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):  # whatever is left of it and its kernels
                os.killpg(lab.pid, signal.SIGKILL)
        return 0 if code in (0, -signal.SIGTERM, 128 + signal.SIGTERM) else code


def cmd_sandbox(args: argparse.Namespace) -> int:
    """A trainee acts on the tenant their own parameter file names (a sandbox-mode file), nothing else; the
    trainer's ``status`` reads every trainee's sandbox, and ``break --list`` describes the faults."""
    from .sandbox import mistakes, state

    if args.action == "status":
        return _sandbox_status(args)
    if args.action == "break" and args.list:
        print(mistakes.listing())
        return 0
    if args.action == "break" and not (args.params and args.fault):
        print("runbook sandbox break: give the trainee's parameter file and a fault, or --list", file=sys.stderr)
        return 2
    params = params_mod.load(args.params)
    if params.mode != "sandbox":
        print(
            f"{args.params}: mode is {params.mode}, not sandbox: `runbook sandbox` acts only on training tenants",
            file=sys.stderr,
        )
        return 2
    if args.action == "reset":
        print(
            f"{params.tenant}: "
            + (
                "sandbox reset; the next step starts from the seed"
                if state.reset(params.tenant)
                else "had no sandbox; nothing to reset"
            )
        )
    elif args.action == "break":
        print(f"{params.tenant}: {mistakes.break_tenant(params.tenant, args.fault)}")
    else:
        print(f"{params.tenant}: {mistakes.repair_tenant(params.tenant, args.fault)}")
    return 0


def _sandbox_status(args: argparse.Namespace) -> int:
    """The trainer's view: every trainee's sandbox on this machine (or those of the files given)."""
    from .sandbox import classroom

    folders = [Path(d) for d in args.state_dir] if args.state_dir else None
    statuses = classroom.classroom(classroom.state_files(folders, args.params), _archive(args))
    print(classroom.as_json(statuses) if args.json else classroom.text(statuses))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .steps import diagnose

    if args.tenant:
        record = diagnose.latest_record(args.tenant, _archive(args))
        if record is None:
            print(f"no record of tenant {args.tenant}", file=sys.stderr)
            return 2
        text = diagnose.record_text(record)
    elif args.file:
        try:
            text = Path(args.file).read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            print(f"cannot read {args.file}: {error.strerror}", file=sys.stderr)
            return 2
    elif args.text in (None, "-"):
        text = sys.stdin.read()
    else:
        text = args.text
    table = diagnose.table(diagnose.diagnose(text))
    for row in table.to_dict("records"):
        source = f"  source: {row['source']}\n" if row["source"] else ""
        print(f"{row['code']}: {row['meaning']}\n  fix: {row['fix']}\n  notebook: {row['notebook']}\n{source}")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    """Every tenant read (never written) and judged, most urgent first; 1 when any is at fail (cron, CI)."""
    from datetime import UTC, datetime

    from .running import fleet, fleet_report

    def progress(health: fleet.Health, done: int, total: int) -> None:
        status = fleet.judge(health).status
        print(f"[{done}/{total}] {health.tenant} ({health.mode}): {status}", file=sys.stderr, flush=True)

    given = {"html": args.html, "csv_file": args.csv, "json_file": args.json}
    outputs = {k: Path(v) if v else None for k, v in given.items()}
    fleet_report.check_outputs(fleet.expand(args.params), **outputs)  # before anything is read or written
    result = fleet.read_fleet(args.params, jobs=args.jobs, archive=_archive(args), progress=progress)
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    fleet_report.write(result, generated, **outputs)
    print(fleet_report.text(result))
    for kind, path in given.items():
        if path:
            print(f"{kind.removesuffix('_file')} report: {path}")
    return result.exit_code


def cmd_record_demos(args: argparse.Namespace) -> int:
    from .running import demos

    return 0 if demos.regenerate(args.tenants) else 1


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (0 jobs or a 0-second cell timeout cannot run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{value:g} must be between 0 and 86400 seconds")
    return value


def _record_options(p: argparse.ArgumentParser) -> None:
    """Where records go, how they are signed, how long a run waits for the tenant's lock, and why the change is
    made (the reason and ticket every record opens with)."""
    p.add_argument("--reason", metavar="TEXT", help="why this change is made (overrides change.reason)")
    p.add_argument("--ticket", metavar="ID", help="the change ticket it is made under (overrides change.ticket)")
    p.add_argument(
        "--no-ticket",
        action="store_true",
        help="the change has no ticket: a live or record run that applies changes then runs without one, and "
        "its record says so",
    )
    p.add_argument("--archive", help="archive folder (default: archive/ in the kit)")
    p.add_argument("--sign-key", help=f"Ed25519 private key to sign records with (or ${SIGNING_KEY_ENV})")
    p.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another run of the same tenant to finish (default: stop at once, naming it)",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="runbook",
        description="Configure the Webex Connect Email app with "
        "Office 365 OAuth 2.0, step by step, with a record of every run.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check parameter files offline; print every bad field")
    p.add_argument("params", nargs="+")
    p.add_argument("--archive", help="archive folder the runs would use (default: archive/ in the kit)")
    p.set_defaults(func=cmd_validate)
    for name, func, text in (
        ("run", cmd_run, "run the steps for one tenant and archive the record"),
        ("plan", cmd_plan, "the changing steps with apply: false: the intended changes, no write"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("params")
        p.add_argument("--mode", choices=get_args(params_mod.Mode), help="override the file's mode")
        p.add_argument("--steps", nargs="+", choices=registry.NAMES, help="run only these steps, in this order")
        p.add_argument(
            "--confirm-rotation",
            metavar="NAME",
            help="rotation phase 2: NAME confirmed Webex Connect uses the new secret (sets rotation.phase 2 and "
            "rotation.confirmed_by for this run)",
        )
        if name == "plan":
            p.add_argument(
                "--detailed-exitcode",
                action="store_true",
                help="exit 2 when changes are pending, 0 when there is nothing to do, 1 on an error (as Terraform)",
            )
        _record_options(p)
        p.set_defaults(func=func)
    p = sub.add_parser("batch", help="run many tenants in parallel; summary table and a batch record")
    p.add_argument("params", nargs="*")
    p.add_argument("--jobs", type=_positive, help="tenants at once (default: the number of cores)")
    p.add_argument("--steps", nargs="+", choices=registry.NAMES, help="run only these steps, e.g. 05_verify")
    p.add_argument(
        "--only-failed",
        metavar="BATCH_RECORD",
        help="run again the tenants of a batch record that did not end ok (failed, invalid, interrupted, not started)",
    )
    p.add_argument("--cell-timeout", type=_positive, default=600, help="seconds a notebook cell may run (default 600)")
    p.add_argument("--dask-scheduler", metavar="ADDRESS", help="run the tenants on a Dask cluster (extra 'dask')")
    p.add_argument(
        "--rotate-within",
        metavar="DAYS",
        type=_positive,
        help="phase 1 of the client secret rotation (08_rotate_secret) for every tenant whose stored secret expires "
        "within DAYS; the others are skipped, with the reason",
    )
    _record_options(p)
    p.set_defaults(func=cmd_batch)
    p = sub.add_parser("records", help="list a tenant's records and their status (seals any a killed run left)")
    p.add_argument("tenant")
    p.add_argument("--archive", help="archive folder (default: archive/ in the kit)")
    p.set_defaults(func=cmd_records)
    p = sub.add_parser("show", help="summarize one record, its mode first")
    p.add_argument("record")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("verify-record", help="check a record's seal, signature, chain and files")
    p.add_argument("record")
    p.add_argument("--public-key", help="the organisation's public key: the record must be signed with its pair")
    p.set_defaults(func=cmd_verify_record)
    p = sub.add_parser("diff", help="what changed in a tenant between two of its records, item by item")
    p.add_argument("records", nargs="*", metavar="RECORD", help="two records of one tenant (or give --tenant)")
    p.add_argument("--tenant", help="compare the tenant's last two sealed records")
    p.add_argument("--archive", help="archive folder for --tenant (default: archive/ in the kit)")
    p.add_argument("--any-tenant", action="store_true", help="compare records of two different tenants anyway")
    p.set_defaults(func=cmd_diff)
    p = sub.add_parser("attach", help="attach a file (step 3's script transcript) to a sealed record, sealed apart")
    p.add_argument("record")
    p.add_argument("file")
    p.add_argument("--note", default="", help="what the file is, e.g. who ran the script and when")
    p.add_argument("--sign-key", help=f"Ed25519 private key to sign the attachment with (or ${SIGNING_KEY_ENV})")
    p.set_defaults(func=cmd_attach)
    p = sub.add_parser("keygen", help="create an Ed25519 key pair for signing records")
    p.add_argument("private")
    p.add_argument("public")
    p.set_defaults(func=cmd_keygen)
    # every argument goes to JupyterLab as it is (argparse's REMAINDER would refuse one starting with "-")
    p = sub.add_parser("lab", help="open JupyterLab on the notebooks with the kit's kernel", prefix_chars="+")
    p.add_argument("jupyter_args", nargs="*", help="passed to JupyterLab, e.g. --no-browser --port 8899")
    p.set_defaults(func=cmd_lab)
    p = sub.add_parser("sandbox", help="training: trainees' simulated tenants: status, reset, break, repair")
    actions = p.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="the trainer's view: each trainee's steps done, faults, last verify")
    status.add_argument("params", nargs="*", help="trainees' parameter files (default: every sandbox found)")
    status.add_argument(
        "--state-dir",
        action="append",
        metavar="DIR",
        help="a kit's state folder holding sandbox/ (its .runbook, or RUNBOOK_STATE); repeat for each trainee's "
        "(default: this kit's)",
    )
    status.add_argument("--archive", help="archive folder of the trainees' records (default: archive/ in the kit)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    reset = actions.add_parser("reset", help="start the tenant of a trainee's parameter file over from its seed")
    reset.add_argument("params", help="the trainee's parameter file (mode: sandbox)")
    broken = actions.add_parser("break", help="inject a classic mistake for an exercise (--list describes them)")
    broken.add_argument("params", nargs="?", help="the trainee's parameter file (mode: sandbox)")
    broken.add_argument("fault", nargs="?", choices=FAULT_NAMES)
    broken.add_argument("--list", action="store_true", help="describe every fault: what it breaks, what it shows")
    repair = actions.add_parser("repair", help="make the fix of a fault an administrator makes in a portal")
    repair.add_argument("params", help="the trainee's parameter file (mode: sandbox)")
    repair.add_argument("fault", choices=FAULT_NAMES)
    p.set_defaults(func=cmd_sandbox)
    p = sub.add_parser("diagnose", help="explain every known error code in a text, a file, standard input or a record")
    p.add_argument("text", nargs="?", help="the error text ('-' or nothing: standard input)")
    p.add_argument("--file", help="read the text from a file")
    p.add_argument("--tenant", help="diagnose the tenant's latest record instead")
    p.add_argument("--archive", help="archive folder (default: archive/ in the kit)")
    p.set_defaults(func=cmd_diagnose)
    p = sub.add_parser("fleet", help="every tenant's secret expiry, drift and status, read only; exit 1 on any fail")
    p.add_argument("params", nargs="+", help="parameter files (or glob patterns) of the tenants")
    p.add_argument("--html", metavar="FILE", help="write the report, with its expiry timeline, as one HTML page")
    p.add_argument("--csv", metavar="FILE", help="write the rows as CSV")
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    p.add_argument("--jobs", type=_positive, help="tenants read at once (default: the number of cores)")
    p.add_argument("--archive", help="archive folder holding the last verify of each tenant (default: archive/)")
    p.set_defaults(func=cmd_fleet)
    p = sub.add_parser("record-demos", help="regenerate the demo recordings from the simulated tenants")
    p.add_argument("tenants", nargs="*", help="demo tenants to regenerate (default: all)")
    p.set_defaults(func=cmd_record_demos)
    return top


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # with --detailed-exitcode, 2 means "changes pending" alone: usage and parameter errors exit 1
    invalid = 1 if "--detailed-exitcode" in words else 2
    try:
        args = parser().parse_args(words)
    except SystemExit as exit_:
        if exit_.code == 2 and invalid != 2:
            raise SystemExit(invalid) from None
        raise
    try:
        return int(args.func(args))
    except ParamsError as exc:
        print(exc.explain(), file=sys.stderr)
        return invalid
    except RunbookError as exc:
        print(exc.explain(), file=sys.stderr)
        return 1
    except OSError as exc:  # a folder that cannot be made or written (an archive under /proc, a full disk)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{where}{exc.strerror or type(exc).__name__}", file=sys.stderr)
        print("Fix: give a folder this account can write (--archive), with room on its disk", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
