"""The ``runbook`` command: a thin layer over :mod:`runbook_lib.runner` and friends.

Exit codes: 0 success, 1 a step failed, 2 invalid parameters or usage (nothing was sent or written).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import params as params_mod
from .errors import ParamsError, RunbookError
from .records import changes_frame


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


def cmd_diagnose(args: argparse.Namespace) -> int:
    from . import diagnose

    if args.tenant:
        record = diagnose.latest_record(args.tenant, Path(args.archive) if args.archive else None)
        if record is None:
            print(f"no record of tenant {args.tenant}", file=sys.stderr)
            return 2
        text = diagnose.record_text(record)
    elif args.file:
        text = Path(args.file).read_text(encoding="utf-8", errors="replace")
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
        p.add_argument("--mode", choices=["replay", "live", "record"], help="override the file's mode")
        p.add_argument("--archive", help="archive folder (default: archive/ in the kit)")
        p.set_defaults(func=func)
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
