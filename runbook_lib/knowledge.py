"""The error knowledge base (``data/errors.yaml``): what a code means and which step fixes it."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import yaml


@dataclass(frozen=True)
class Entry:
    kind: str
    code: str
    meaning: str
    fix: str
    notebook: str


@cache
def entries() -> dict[tuple[str, str], Entry]:
    data = yaml.safe_load(files("runbook_lib").joinpath("data/errors.yaml").read_text())
    return {(kind, str(code)): Entry(kind, str(code), **row) for kind, rows in data.items() for code, row in rows.items()}


def lookup(kind: str, code: str | int) -> Entry | None:
    """The entry for an AADSTS number (``kind="aadsts"``) or a Graph error code (``kind="graph"``)."""
    return entries().get((kind, str(code)))
