"""What changed in a tenant between two of its runs, item by item, read from the two records' manifests.

An *item* is one resource a step compares (``application: Webex Connect Email``, ``authenticated SMTP:
support@…``) or one verify check (``client secret``). A record says what its steps found and did to each (a
change: ``before``, ``after`` and its action) and what verify said at the end (verify names its drift checks
``resource: name``, after the change they compare). From these, an item's value and health when each run ended:

* its value: ``after`` laid over ``before`` once the tenant accepted the change, nothing once removed, and
  ``before`` while the change is only planned or there was nothing to change;
* its health: verify's verdict when verify judged it; otherwise applied or unchanged is good, and planned is
  bad (the tenant still differs from what is wanted).

Between the older record A and the newer B an item is **made** (A, a plan, planned it; B made it),
**repaired** (bad in A, good in B), **drifted** (good in A, bad in B; or B found another value than A left: the
tenant was changed between the runs, outside the kit), **still failing**, **left to the script** (B left it to
step 3's PowerShell script, which the kit does not run), **changed** (its value or verdict differs), or
**unchanged** (counted, not listed); items only one record has are named apart. A replay reads no tenant: where
either record is one, nothing "drifted outside the kit"; a value B's recording starts from that differs from
what A left is **changed**, and said to come from the recordings. A diff reads the two sealed manifests and
nothing else; they hold no secret (references, hints and fingerprints only).

The same records close step 3's PowerShell path: with ``mailbox.apply_with: powershell`` a run leaves the
mailbox changes ``planned`` (a person runs the script); a later verify through the admin API that finds a
setting as desired **confirms** that change. This is a view derived from the records: a sealed record is
never changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..config import registry
from ..engine.changes import CHANGED
from ..engine.results import StepRecord
from ..errors import RunbookError, shorten
from . import integrity
from . import store as records

if TYPE_CHECKING:
    import pandas as pd

Kind = Literal[
    "made",
    "repaired",
    "drifted",
    "still failing",
    "left to the script",
    "changed",
    "unchanged",
    "only in A",
    "only in B",
]
#: the kinds a diff lists item by item, in this order; unchanged items are only counted
LISTED: tuple[Kind, ...] = ("made", "repaired", "drifted", "still failing", "left to the script", "changed")
#: at most this many values of one item are listed (an application holds dozens); the rest are counted
MAX_FIELDS = 8
UNCOMPARED: tuple[Kind, ...] = ("only in A", "only in B")
_HEALTH = {"pass": "good", "warn": "good", "fail": "bad"}  # "not tested" says nothing either way


@dataclass(frozen=True)
class Field:
    """One value of an item that differs: ``path`` in the item's state (empty: the item as a whole)."""

    path: str
    was: Any
    now: Any


@dataclass(frozen=True)
class ItemDiff:
    """One item between the two records: what each says of it, and the values that differ."""

    resource: str
    name: str
    kind: Kind
    in_a: str
    in_b: str
    fields: tuple[Field, ...] = ()
    #: where the values compared come from, as the text says it: ("in A", "in B") unless a record did not read it
    sides: tuple[str, str] = ("in A", "in B")

    @property
    def item(self) -> str:
        return f"{self.resource}: {self.name}" if self.name else self.resource

    def differences(self) -> list[str]:
        was, now = self.sides
        lines = [
            f"{f.path or 'the item'}: was {_show(f.was)} {was}, {_show(f.now)} {now}" for f in self.fields[:MAX_FIELDS]
        ]
        more = len(self.fields) - MAX_FIELDS
        return lines + ([f"(and {more} more values)"] if more > 0 else [])


@dataclass(frozen=True)
class RecordDiff:
    """Two records of a tenant compared, the older as A."""

    tenant: str
    a: Path
    b: Path
    headings: tuple[str, str]
    items: tuple[ItemDiff, ...]

    def of_kind(self, kind: Kind) -> list[ItemDiff]:
        return [i for i in self.items if i.kind == kind]

    def text(self) -> str:
        """The diff for people: each repaired, drifted, still failing and changed item with its values."""
        counts = ", ".join(f"{len(self.of_kind(k))} {k}" for k in (*LISTED, "unchanged", *UNCOMPARED))
        lines = [f"Tenant {self.tenant}: what changed between two runs", *self.headings, counts]
        for kind in LISTED:
            for number, item in enumerate(self.of_kind(kind)):
                lines += [f"\n{kind}:"] if number == 0 else []
                lines += [f"  {item.item}", f"    A: {item.in_a}", f"    B: {item.in_b}"]
                lines += [f"    {line}" for line in item.differences()]
        for kind in UNCOMPARED:
            found = self.of_kind(kind)
            if found:
                lines.append(f"\n{kind}, not compared: " + ", ".join(i.item for i in found))
        return "\n".join(lines)

    def frame(self) -> pd.DataFrame:
        """Every item, unchanged ones included, as a table for notebooks."""
        import pandas as pd

        return pd.DataFrame(
            [(i.kind, i.resource, i.name, i.in_a, i.in_b, "; ".join(i.differences())) for i in self.items],
            columns=["kind", "resource", "name", "A", "B", "differences"],
        )


@dataclass
class _Item:
    """What one record says of one item."""

    action: str | None = None
    summary: str = ""
    before: Any = None
    after: Any = None
    verdict: str | None = None
    detail: str = ""

    @property
    def read(self) -> bool:
        """Whether the record holds the item's value (a change), not only a verdict."""
        return self.action is not None

    @property
    def end(self) -> Any:
        """The item's value when the run ended."""
        if self.action == "removed":
            return None
        return _laid_over(self.before, self.after) if self.action in CHANGED else self.before

    @property
    def health(self) -> str | None:
        judged = _HEALTH.get(self.verdict or "")
        if judged:
            return judged
        if self.action in (*CHANGED, "unchanged"):
            return "good"
        return "bad" if self.action == "planned" else None

    def words(self, earlier: _Item | None = None) -> str:
        """What the record says of the item; a summary the same as the ``earlier`` record's is not repeated."""
        same = earlier is not None and earlier.action is not None and earlier.summary == self.summary
        said = [f"{self.action} ({'as in A' if same else self.summary})"] if self.action else []
        said += [f"verify {self.verdict}: {self.detail}"] if self.verdict else []
        return "; ".join(said)


def _laid_over(before: Any, after: Any) -> Any:
    """``after`` over ``before``: a change's ``after`` holds only what it sets."""
    if isinstance(before, dict) and isinstance(after, dict):
        return {**before, **{k: _laid_over(before.get(k), v) for k, v in after.items()}}
    return after


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flat(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _fields(was: Any, now: Any) -> tuple[Field, ...]:
    """The values that differ, one per field: an item that exists on one side only is compared with nothing
    field by field, never shown as one raw object."""
    if isinstance(now, dict) and was is None:
        was = {}
    if isinstance(was, dict) and now is None:
        now = {}
    if isinstance(was, dict) and isinstance(now, dict):
        a, b = (_flat(side) if side else {} for side in (was, now))
        return tuple(Field(p, a.get(p), b.get(p)) for p in dict.fromkeys([*a, *b]) if a.get(p) != b.get(p))
    return (Field("", was, now),) if was != now else ()


def _show(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):  # readable, not JSON
        return shorten("[" + "; ".join(", ".join(f"{k}={_show(v)}" for k, v in d.items()) for d in value) + "]", 200)
    return shorten(json.dumps(value, sort_keys=True, default=str, ensure_ascii=False), 200)


def _key(check: str) -> tuple[str, str]:
    """The item a check judges: verify names drift checks ``resource: name``."""
    resource, colon, name = check.partition(": ")
    return (resource, name) if colon else (check, "")


def _items(steps: list[StepRecord]) -> dict[tuple[str, str], _Item]:
    items: dict[tuple[str, str], _Item] = {}
    for step in steps:
        for change in step.changes:
            item = items.setdefault((change.resource, change.name), _Item())
            item.action, item.summary = change.action, change.summary
            item.before, item.after = change.before, change.after
        for check in step.checks:
            item = items.setdefault(_key(check.check), _Item())
            item.verdict, item.detail = check.verdict, check.detail
    return items


@dataclass(frozen=True)
class _Pair:
    """What the two records are, which changes how an item between them reads."""

    #: A is a plan (``apply: false``): what it planned, B may have made
    a_plan: bool = False
    #: either record replayed recordings: no tenant was read, so nothing changed "outside the kit"
    replayed: bool = False
    #: the items B left to step 3's PowerShell script
    script: frozenset[tuple[str, str]] = frozenset()


def _compare(resource: str, name: str, a: _Item | None, b: _Item | None, pair: _Pair = _Pair()) -> ItemDiff:
    if a is None or b is None:
        return ItemDiff(
            resource, name, "only in B" if a is None else "only in A", a.words() if a else "", b.words() if b else ""
        )
    fields: tuple[Field, ...] = ()
    sides = ("in A", "in B")
    if a.read and b.read:
        fields = _fields(a.end, b.end)
    elif b.read:
        fields, sides = _fields(b.before, b.end), ("when B started", "when B ended")
    between = _fields(a.end, b.before) if a.read and b.read else ()  # changed after A, before B, outside the kit
    said = (
        "B's recording starts from another value than A left"
        if pair.replayed
        else "B found it changed since A ended, outside the kit"
    )
    in_b = b.words(a) + (f"; {said}" if between else "")
    kind: Kind
    if pair.a_plan and a.action == "planned" and b.action in CHANGED:
        kind = "made"
    elif (resource, name) in pair.script and b.action == "planned" and b.health != "good" and not b.verdict:
        kind = "left to the script"
    elif a.health == "bad" and b.health == "good":
        kind = "repaired"
    elif a.health == "good" and b.health == "bad":
        kind = "changed" if pair.replayed else "drifted"
    elif a.health == b.health == "bad":
        kind = "still failing"
    elif between:
        kind, fields, sides = "changed" if pair.replayed else "drifted", between, ("when A ended", "when B started")
    elif fields or (a.verdict and b.verdict and a.verdict != b.verdict):
        kind = "changed"
    else:
        kind = "unchanged"
    return ItemDiff(resource, name, kind, a.words(), in_b, fields, sides)


@dataclass(frozen=True)
class _Run:
    """A sealed run record, read once: its manifest and its steps."""

    record: Path
    manifest: dict[str, Any]
    steps: list[StepRecord]

    @property
    def world(self) -> tuple[Any, str]:
        """Which tenant the run talked to: a replay or a sandbox confirms nothing of a real tenant."""
        mode = str(self.manifest.get("mode"))
        return self.manifest.get("tenant_id"), "real" if mode in records.REAL_TENANT_MODES else mode

    @property
    def script(self) -> list[tuple[str, str]]:
        """The changes step 3 left to its PowerShell script: planned, in a run that applies."""
        mailbox_section = (self.manifest.get("parameters") or {}).get("mailbox") or {}
        if mailbox_section.get("apply_with") != "powershell" or records.run_kind(self.manifest) == "plan":
            return []
        mailbox = [c for s in self.steps if s.step == registry.MAILBOX for c in s.changes]
        return [(c.resource, c.name) for c in mailbox if c.action == "planned"]


def _run(record: Path) -> _Run:
    """A run record, once its seal vouches for its manifest."""
    integrity.require_sealed(record)
    manifest = records.read_manifest(record)
    if manifest.get("kind", "run") != "run":
        raise RunbookError(
            f"{record} is a {manifest.get('kind')} record, not a run of one tenant",
            fix="give two records from archive/<tenant>/ (see `runbook records TENANT`)",
        )
    return _Run(record, manifest, [StepRecord.from_json(s) for s in manifest.get("steps", [])])


def _heading(label: str, run: _Run) -> str:
    m = run.manifest
    applied = records.run_kind(m) == "run"
    mode = records.mode_meaning(str(m.get("mode")), applied)
    steps = " ".join(s.step[:2] for s in run.steps)  # the mode's words say a plan is one
    return f"  {label} {run.record.name}: {m.get('status')}, steps {steps}; started {m.get('started')}; {mode}"


def diff_records(a: Path, b: Path, *, any_tenant: bool = False) -> RecordDiff:
    """Two sealed records compared item by item, the older as A whichever order they are given in. Refused
    (a RunbookError naming the problem) for a missing or unsealed record, the same record twice, or records
    of two tenants unless ``any_tenant``."""
    if a.resolve() == b.resolve():
        raise RunbookError(f"{a} is given twice: a diff compares two records", fix="give two different records")
    first, second = _run(a), _run(b)
    tenants = [(r.manifest.get("tenant"), r.manifest.get("tenant_id")) for r in (first, second)]
    if tenants[0] != tenants[1] and not any_tenant:
        raise RunbookError(
            f"{a} is a record of tenant {tenants[0][0]} ({tenants[0][1]}) and {b} of tenant {tenants[1][0]} "
            f"({tenants[1][1]}): a diff compares two runs of one tenant",
            fix="give two records of one tenant, or add --any-tenant to compare them anyway",
        )
    older, newer = sorted(
        (first, second), key=lambda r: (str(r.manifest.get("started") or ""), integrity.record_order(r.record.name))
    )
    items_a, items_b = _items(older.steps), _items(newer.steps)
    pair = _Pair(
        a_plan=records.run_kind(older.manifest) == "plan",
        replayed="replay" in (older.world[1], newer.world[1]),
        script=frozenset(newer.script),
    )
    return RecordDiff(
        str(newer.manifest.get("tenant")),
        older.record,
        newer.record,
        (_heading("A", older), _heading("B", newer)),
        tuple(_compare(*key, items_a.get(key), items_b.get(key), pair) for key in dict.fromkeys([*items_a, *items_b])),
    )


def last_two(archive: Path, tenant: str) -> tuple[Path, Path]:
    """The tenant's two newest sealed records."""
    sealed = [r for r in records.record_dirs(archive, tenant) if records.is_sealed(r)]
    if len(sealed) < 2:
        raise RunbookError(
            f"tenant {tenant} has {len(sealed)} sealed record(s) in {archive}: a diff needs two",
            fix="run the tenant again (`runbook run` or `runbook plan`), or name two records",
        )
    return sealed[-2], sealed[-1]


# --- step 3's script, confirmed by a later verify --------------------------------------------------------


@dataclass(frozen=True)
class Confirmation:
    """A change step 3 left to its PowerShell script, found as desired by a later verify."""

    record: str
    resource: str
    name: str
    by: str
    on: str
    detail: str

    def describe(self) -> str:
        return f"{self.resource}: {self.name}: confirmed by record {self.by} on {self.on} ({self.detail})"


def _confirmed(run: _Run, item: tuple[str, str], later: list[_Run]) -> Confirmation | None:
    """The first later verify of the same tenant that passed the item's check; none when a later run of the
    kit applied the item itself first (the script was not what made it so)."""
    check = f"{item[0]}: {item[1]}"
    for other in (r for r in later if r.world == run.world):
        if any((c.resource, c.name) == item and c.action in CHANGED for s in other.steps for c in s.changes):
            return None
        passed = next((c for s in other.steps for c in s.checks if c.check == check and c.verdict == "pass"), None)
        if passed:
            when = str(other.manifest.get("started"))
            return Confirmation(run.record.name, *item, other.record.name, when, passed.detail)
    return None


def _script_report(archive: Path, tenant: str) -> list[tuple[_Run, list[Confirmation]]]:
    """Each record of the tenant that left changes to step 3's script, with those a later verify confirmed."""
    runs = []
    for record in records.record_dirs(archive, tenant):
        try:
            runs.append(_run(record))
        except RunbookError:
            continue  # unsealed or damaged: it confirms nothing (`runbook records` names it)
    return [
        (run, [c for item in run.script if (c := _confirmed(run, item, runs[index + 1 :]))])
        for index, run in enumerate(runs)
        if run.script
    ]


def confirmations(archive: Path, tenant: str) -> list[Confirmation]:
    """Every change a tenant's records left to step 3's script that a later verify found as desired."""
    return [c for _, done in _script_report(archive, tenant) for c in done]


def script_status(archive: Path, tenant: str) -> dict[str, str]:
    """Per record that left changes to step 3's script: how many a later verify confirmed, and by which record.
    For ``runbook records``."""
    status = {}
    for run, done in _script_report(archive, tenant):
        by = ", ".join(dict.fromkeys(c.by for c in done))
        status[run.record.name] = f"{len(run.script)} planned, {len(done)} confirmed" + (f" by {by}" if by else " yet")
    return status


def script_lines(record: Path) -> list[str]:
    """For ``runbook show``: what became of the changes this record left to step 3's script."""
    try:
        run = _run(record)
    except RunbookError:
        return []  # `runbook show` says what is wrong with it
    if not run.script:
        return []
    report = _script_report(record.parent.parent, record.parent.name)
    done = next((confirmed for other, confirmed in report if other.record.name == record.name), [])
    lines = [f"step 3's script (run by a person): {len(done)} of {len(run.script)} planned change(s) confirmed"]
    lines += [f"  {c.describe()}" for c in done]
    missing = [f"{r}: {n}" for r, n in run.script if (r, n) not in {(c.resource, c.name) for c in done}]
    if missing:
        lines.append(
            "  not confirmed yet: " + ", ".join(missing) + " (a later verify with mailbox.apply_with: adminapi "
            "confirms them once it finds them as desired)"
        )
    return lines
