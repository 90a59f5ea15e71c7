"""The ``runbook`` command: a thin layer over :mod:`runbook_lib.runner` and friends.

Exit codes: 0 success, 1 a step failed, 2 invalid parameters or usage (nothing was sent or written).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from . import params as params_mod
from .errors import ParamsError, RunbookError
from .records import changes_frame
from .sandbox.state import FAULTS


def _load(path: str, overrides: dict[str, Any]) -> params_mod.Params:
    """The validated file, with command-line overrides validated on top."""
    params = params_mod.load(path)
    return params_mod.validate({**params.public(), **overrides}, path) if overrides else params


def cmd_validate(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.params:
        try:
            params_mod.load(path)
            print(f"{path}: valid")
        except ParamsError as exc:
            print(exc.explain(), file=sys.stderr)
            bad += 1
    return 2 if bad else 0


def _run(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from . import runner

    if args.mode:
        overrides["mode"] = args.mode
    params = _load(args.params, overrides)
    steps = [s for s in params.steps if s in runner.CHANGING_STEPS] if not params.apply else None
    result = runner.run(params, archive=Path(args.archive) if args.archive else None, steps=steps)
    changes = [c for step in result.steps for c in step.changes]
    print("\nChanges:")
    print(changes_frame(changes).to_string(index=False) if changes else "  (none)")
    print(f"\nRecord: {result.record}")
    print(f"Writes: {result.writes}; status: {'ok' if result.ok else 'FAILED'}")
    for step in result.steps:
        if step.error and step.status == "failed":
            print(f"\n{step.step} failed:\n{step.error}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    return _run(args, {})


def cmd_plan(args: argparse.Namespace) -> int:
    return _run(args, {"apply": False})


def _archive(args: argparse.Namespace) -> Path:
    from . import paths

    return Path(args.archive) if args.archive else paths.project_root() / "archive"


def cmd_batch(args: argparse.Namespace) -> int:
    from . import batch

    files = list(args.params)
    if args.only_failed:
        files += batch.failed_files(Path(args.only_failed))
    if not files:
        print("no parameter files given", file=sys.stderr)
        return 2
    record, table = batch.run_batch(files, jobs=args.jobs, steps=args.steps, archive=_archive(args),
                                    cell_timeout=args.cell_timeout, dask_scheduler=args.dask_scheduler)
    print("\n" + table.drop(columns=["record"]).to_string(index=False))
    print(f"\nBatch record: {record}")
    return 0 if (table["status"] == "ok").all() else 1


def cmd_records(args: argparse.Namespace) -> int:
    from . import records

    table = records.history(_archive(args), args.tenant)
    print(table.to_string(index=False) if len(table) else f"no records of tenant {args.tenant}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from . import records

    print(records.describe(Path(args.record)))
    return 0


def cmd_verify_record(args: argparse.Namespace) -> int:
    from . import records

    problems = records.verify_files(Path(args.record))
    print("\n".join(problems) if problems else f"{args.record}: every file matches the manifest")
    return 1 if problems else 0


def lab_command(extra: list[str], folder: Path | None = None) -> list[str]:
    """JupyterLab on the kit's notebooks (or ``folder``), from this environment so the kit's kernel is there."""
    from . import paths

    as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []   # containers, CI
    folder = folder or paths.project_root() / "notebooks"
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}", *as_root, *extra]


def cmd_lab(args: argparse.Namespace) -> int:
    import subprocess

    return subprocess.call(lab_command(args.jupyter_args))


def cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import state

    if args.action == "reset":
        print(f"{args.tenant}: " + ("sandbox reset; the next step starts from the seed" if state.reset(args.tenant)
                                    else "had no sandbox; nothing to reset"))
    else:
        print(f"{args.tenant}: {state.break_tenant(args.tenant, args.fault)}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from . import diagnose

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
    for row in table.itertuples(index=False):
        print(f"{row.code}: {row.meaning}\n  fix: {row.fix}\n  notebook: {row.notebook}\n")
    return 0


def cmd_record_demos(args: argparse.Namespace) -> int:
    from . import demos

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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="runbook", description="Configure the Webex Connect Email app with "
                                  "Office 365 OAuth 2.0, step by step, with a record of every run.")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check parameter files; print every bad field")
    p.add_argument("params", nargs="+")
    p.set_defaults(func=cmd_validate)
    for name, func, text in (("run", cmd_run, "run the steps for one tenant and archive the record"),
                             ("plan", cmd_plan, "steps 1-3 with apply: false: show intended changes, write nothing")):
        p = sub.add_parser(name, help=text)
        p.add_argument("params")
        p.add_argument("--mode", choices=["replay", "live", "record", "sandbox"], help="override the file's mode")
        p.add_argument("--archive", help="archive folder (default: archive/ in the kit)")
        p.set_defaults(func=func)
    p = sub.add_parser("batch", help="run many tenants in parallel; summary table and a batch record")
    p.add_argument("params", nargs="*")
    p.add_argument("--jobs", type=_positive, help="tenants at once (default: the number of cores)")
    p.add_argument("--steps", nargs="+", choices=params_mod.STEP_NAMES, help="run only these steps, e.g. 05_verify")
    p.add_argument("--only-failed", metavar="BATCH_RECORD", help="run again the failed tenants of a batch record")
    p.add_argument("--cell-timeout", type=_positive, default=600, help="seconds a notebook cell may run (default 600)")
    p.add_argument("--dask-scheduler", metavar="ADDRESS", help="run the tenants on a Dask cluster (extra 'dask')")
    p.add_argument("--archive", help="archive folder (default: archive/ in the kit)")
    p.set_defaults(func=cmd_batch)
    p = sub.add_parser("records", help="list a tenant's past runs")
    p.add_argument("tenant")
    p.add_argument("--archive", help="archive folder (default: archive/ in the kit)")
    p.set_defaults(func=cmd_records)
    p = sub.add_parser("show", help="summarize one record")
    p.add_argument("record")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("verify-record", help="check every file of a record against its manifest's hashes")
    p.add_argument("record")
    p.set_defaults(func=cmd_verify_record)
    p = sub.add_parser("lab", help="open JupyterLab on the notebooks with the kit's kernel")
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="passed to JupyterLab, e.g. --no-browser --port 8899")
    p.set_defaults(func=cmd_lab)
    p = sub.add_parser("sandbox", help="training: reset a trainee's simulated tenant, or break it on purpose")
    actions = p.add_subparsers(dest="action", required=True)
    reset = actions.add_parser("reset", help="start the tenant over from its seed")
    reset.add_argument("tenant")
    broken = actions.add_parser("break", help="inject a classic mistake for an exercise")
    broken.add_argument("tenant")
    broken.add_argument("fault", choices=sorted(FAULTS))
    p.set_defaults(func=cmd_sandbox)
    p = sub.add_parser("diagnose", help="explain every known error code in a text, a file, standard input or a record")
    p.add_argument("text", nargs="?", help="the error text ('-' or nothing: standard input)")
    p.add_argument("--file", help="read the text from a file")
    p.add_argument("--tenant", help="diagnose the tenant's latest record instead")
    p.add_argument("--archive", help="archive folder (default: archive/ in the kit)")
    p.set_defaults(func=cmd_diagnose)
    p = sub.add_parser("record-demos", help="regenerate the demo recordings from the simulated tenants")
    p.add_argument("tenants", nargs="*", help="demo tenants to regenerate (default: all)")
    p.set_defaults(func=cmd_record_demos)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ParamsError as exc:
        print(exc.explain(), file=sys.stderr)
        return 2
    except RunbookError as exc:
        print(exc.explain(), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
