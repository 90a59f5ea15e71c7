"""The error knowledge base (``data/errors.yaml``): what a code means and which step fixes it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import yaml


@dataclass(frozen=True)
class Entry:
    kind: str
    code: str
    meaning: str
    fix: str
    notebook: str
    when: tuple[tuple[tuple[str, ...], Entry], ...] = ()

    def refined(self, text: str) -> Entry:
        """The variant whose words appear in ``text`` (an SMTP reply says more than its code)."""
        lowered = text.lower()
        return next((variant for words, variant in self.when if any(w.lower() in lowered for w in words)), self)


def _entry(kind: str, code: str, row: dict[str, Any]) -> Entry:
    variants = tuple(
        (tuple(v["contains"]), Entry(kind, code, v["meaning"], v["fix"], v["notebook"])) for v in row.get("when", [])
    )
    return Entry(kind, code, row["meaning"], row["fix"], row["notebook"], variants)


@cache
def entries() -> dict[tuple[str, str], Entry]:
    data = yaml.safe_load(files("runbook_lib").joinpath("data/errors.yaml").read_text())
    return {
        (kind, str(code)): _entry(kind, str(code), row) for kind, rows in data.items() for code, row in rows.items()
    }


def lookup(kind: str, code: str | int) -> Entry | None:
    """The entry for an AADSTS number (``aadsts``), a Graph code (``graph``), an SMTP enhanced status
    code (``smtp``) or a verify check (``checks``)."""
    return entries().get((kind, str(code)))
