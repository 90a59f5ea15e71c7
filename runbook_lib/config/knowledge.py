"""The error knowledge base (``data/errors.yaml``): what a code means, which step fixes it, and where
Microsoft or Cisco says so.

Every entry names its ``source``, the public page its meaning comes from, so an operator can read the
vendor's own words and a maintainer can re-check the entry when the vendor changes its behaviour. An
entry's ``notebook`` is the step that applies the fix; troubleshooting only explains, so it is never named. A
fix that is a setting in a Microsoft portal (security defaults, Conditional Access, a blocked sign-in) names
``portal``: no step applies it, so none is named and no ``runbook run`` is suggested.
The file is read strictly (no duplicate keys) and checked when first used: a bad entry fails naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from ..errors import RunbookError
from . import registry, strict_yaml

DATA_FILE = "data/errors.yaml"
#: Entra sign-in codes, SMTP enhanced status codes, Graph error codes, verify's check codes
KINDS = ("aadsts", "smtp", "graph", "checks")
REQUIRED = ("meaning", "fix", "notebook", "source")
ENTRY_KEYS = frozenset({*REQUIRED, "when"})
#: a variant refines its entry by the words around the code; it may cite its own page
VARIANT_KEYS = frozenset({*REQUIRED, "contains"})
#: the steps a fix can point at: every step but troubleshooting itself
FIXING_STEPS = tuple(name for name in registry.NAMES if name != registry.TROUBLESHOOT)
#: what an entry names when its fix is a portal setting; its ``Entry.notebook`` is then empty
PORTAL = "portal"
#: an SMTP entry may stand for a range Microsoft documents as one ("4.7.500-699"): its last number, low to high
SMTP_RANGE_RE = re.compile(r"^([245]\.\d{1,3})\.(\d{1,3})-(\d{1,3})$")


class KnowledgeBaseError(RunbookError):
    """``data/errors.yaml`` holds an entry the kit cannot use; the message names each one and why."""


@dataclass(frozen=True)
class Entry:
    kind: str
    code: str
    meaning: str
    fix: str
    #: the step that applies the fix; empty when the fix is a portal setting no notebook changes
    notebook: str
    #: the Microsoft or Cisco page the meaning comes from (an https URL)
    source: str
    when: tuple[tuple[tuple[str, ...], Entry], ...] = ()

    def refined(self, text: str) -> Entry:
        """The variant whose words appear in ``text`` (an SMTP reply says more than its code)."""
        lowered = text.lower()
        return next((variant for words, variant in self.when if any(w.lower() in lowered for w in words)), self)


def _problems(row: Any, required: tuple[str, ...], allowed: frozenset[str]) -> list[str]:
    """What is wrong with one entry or variant, in words a maintainer can act on."""
    if not isinstance(row, dict):
        return ["must be a mapping of meaning, fix, notebook and source"]
    found = [f"unknown key {key!r}" for key in row if key not in allowed]
    found += [f"no {key}" for key in required if not (isinstance(row.get(key), str) and row[key].strip())]
    source, notebook = row.get("source"), row.get("notebook")
    if isinstance(source, str) and not source.startswith("https://"):
        found.append(f"source {source!r} is not an https URL")
    if notebook is not None and notebook not in (*FIXING_STEPS, PORTAL):
        found.append(
            f"notebook {notebook!r} is not a step that applies a fix ({', '.join(FIXING_STEPS)}) nor {PORTAL!r}"
        )
    if "contains" in allowed:
        words = row.get("contains")
        if not (isinstance(words, list) and words and all(isinstance(w, str) and w for w in words)):
            found.append("contains must be a non-empty list of words")
    variants = row.get("when", [])
    if not isinstance(variants, list):
        return [*found, "when must be a list of variants"]
    for index, variant in enumerate(variants):
        found += [f"when[{index}]: {p}" for p in _problems(variant, REQUIRED[:3], VARIANT_KEYS)]
    return found


def _range(code: str) -> tuple[str, int, int] | None:
    """An SMTP range entry's prefix and bounds ("4.7.500-699" -> ("4.7", 500, 699)); None for any other code."""
    match = SMTP_RANGE_RE.match(code)
    return (match[1], int(match[2]), int(match[3])) if match and int(match[2]) < int(match[3]) else None


def _covers(code_range: str, code: str) -> bool:
    """Whether an SMTP range entry (``4.7.500-699``) covers the enhanced status code ``code`` (``4.7.512``)."""
    bounds = _range(code_range)
    prefix, _, last = code.rpartition(".")
    return bounds is not None and prefix == bounds[0] and last.isdigit() and bounds[1] <= int(last) <= bounds[2]


def _entry(kind: str, code: str, row: dict[str, Any]) -> Entry:
    variants = tuple(
        (
            tuple(v["contains"]),
            Entry(kind, code, v["meaning"], v["fix"], _step(v["notebook"]), v.get("source", row["source"])),
        )
        for v in row.get("when", [])
    )
    return Entry(kind, code, row["meaning"], row["fix"], _step(row["notebook"]), row["source"], variants)


def _step(notebook: str) -> str:
    """The step an entry names, empty for a portal setting."""
    return "" if notebook == PORTAL else notebook


def parse(text: str, where: str = DATA_FILE) -> dict[tuple[str, str], Entry]:
    """Every entry of a knowledge-base file, keyed by (kind, code); bad entries raise, each one named."""
    data = strict_yaml.load_text(text, where)
    problems = [f"{kind}: not a kind of code ({', '.join(KINDS)})" for kind in data if kind not in KINDS]
    problems += [f"{kind}: must map codes to entries" for kind, rows in data.items() if not isinstance(rows, dict)]
    if not problems:
        problems = [
            f"{kind} {code}: {why}"
            for kind, rows in data.items()
            for code, row in rows.items()
            for why in _problems(row, REQUIRED, ENTRY_KEYS)
        ]
        problems += [
            f"smtp {code}: not a range of codes (like 4.7.500-699, the lower number first)"
            for code in data.get("smtp") or {}
            if "-" in str(code) and _range(str(code)) is None
        ]
    if problems:
        raise KnowledgeBaseError(
            f"{where}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems),
            fix="give every entry its meaning, fix, notebook (the step that applies the fix) and source "
            "(the https URL of the Microsoft or Cisco page it comes from); see CONTRIBUTING.md",
        )
    return {
        (kind, str(code)): _entry(kind, str(code), row) for kind, rows in data.items() for code, row in rows.items()
    }


@cache
def entries() -> dict[tuple[str, str], Entry]:
    return parse(files("runbook_lib").joinpath(DATA_FILE).read_text(encoding="utf-8"))


def lookup(kind: str, code: str | int) -> Entry | None:
    """The entry for an AADSTS number (``aadsts``), a Graph code (``graph``), an SMTP enhanced status
    code (``smtp``) or a verify check (``checks``). An SMTP code with no entry of its own is looked up in
    the ranges (``4.7.512`` in ``4.7.500-699``)."""
    found = entries().get((kind, str(code)))
    if found is not None or kind != "smtp":
        return found
    return next((e for (k, key), e in entries().items() if k == kind and _covers(key, str(code))), None)
