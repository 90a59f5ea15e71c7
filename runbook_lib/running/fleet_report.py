"""The fleet health report: a picture read at a glance, then the table; as HTML, CSV and JSON.

The picture is a timeline of each tenant's client secret: one row per tenant, most urgent first, a bar from
today to the day the stored secret expires (to the left of today when it has expired), coloured by the
tenant's status; the warning window (``verify.secret_warn_days`` after today) shaded on each row, today a
line. The application's other secrets are small grey ticks. "Today" is the day each tenant was read: for a
replay, the moment its recording was made, so a demo reads the same on any day.

The page follows the records' conventions (:mod:`runbook_lib.records.html_record`): self-contained, inline CSS and
inline SVG, no script, nothing loaded from anywhere, and a Content-Security-Policy that forbids it; each
tenant's mode is said on its row and the page opens with what the modes mean, so a replayed demo never reads
as a real tenant. No secret is in any of it: the stored secret is named by its hint.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Protocol

from .. import paths
from ..errors import ParamsError, RunbookError
from ..records import store as records
from ..records.html_record import page


class Fleet(Protocol):
    """What a report reads of a fleet (:class:`runbook_lib.running.fleet.Fleet`, which shows itself through this
    module): its rows, each with the tenant's health and judgement, their counts by status, and the rows as records."""

    @property
    def rows(self) -> list[Any]: ...

    def counts(self) -> dict[str, int]: ...

    def records(self) -> list[dict[str, Any]]: ...


#: one row of a fleet (:class:`runbook_lib.running.fleet.Row`): its ``health`` and ``judgement``
Row = Any

COLOURS = {"fail": "#b00020", "warn": "#b26a00", "ok": "#1e7d32"}
#: the chart's size and margins, in SVG units
WIDTH, LABEL, RIGHT, TOP, ROW = 960, 230, 20, 34, 26
#: how far the axis reaches at least (days before and after today), and at most
MIN_PAST, MIN_FUTURE, MAX_PAST, MAX_FUTURE = 30, 120, 365, 730
TICK_DAYS = 30


@dataclass(frozen=True)
class Axis:
    """Days from today mapped to x: pure, so its geometry is tested on its own."""

    first: int
    last: int
    left: float = LABEL
    right: float = WIDTH - RIGHT

    def x(self, days: float) -> float:
        """Where ``days`` from today falls, clamped to the axis."""
        days = min(max(days, self.first), self.last)
        return round(self.left + (days - self.first) * (self.right - self.left) / (self.last - self.first), 1)

    def ticks(self) -> list[int]:
        start = math.ceil(self.first / TICK_DAYS) * TICK_DAYS
        return list(range(start, self.last + 1, TICK_DAYS))


def axis_for(days: list[int], warn_days: list[int]) -> Axis:
    """An axis that shows today, every warning window and every expiry (beyond a year ago or two years ahead,
    the bar is clamped at the edge), in whole months of 30 days."""
    past = min([-MIN_PAST, *days])
    future = max([MIN_FUTURE, *(w * 2 for w in warn_days), *days])
    first = -min(math.ceil(-past / TICK_DAYS) * TICK_DAYS, MAX_PAST)
    last = min(math.ceil(future / TICK_DAYS) * TICK_DAYS, MAX_FUTURE)
    return Axis(first, last)


def _days_text(days: int | None) -> str:
    if days is None:
        return "no valid stored secret"
    return f"expired {-days} days ago" if days <= 0 else f"{days} days left"


def timeline_svg(rows: list[Row]) -> str:
    """The secret expiry timeline as an inline SVG element."""
    axis = axis_for(
        [d for r in rows for d in [r.health.days_left, *r.health.other_days_left] if d is not None],
        [r.health.warn_days for r in rows],
    )
    height = TOP + ROW * max(len(rows), 1) + 10
    bottom = height - 10
    today = axis.x(0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-labelledby="timeline-title">',
        '<title id="timeline-title">Client secret expiry per tenant: today, the warning window, each expiry</title>',
    ]
    for tick in axis.ticks():
        x = axis.x(tick)
        parts.append(f'<line class="tick" x1="{x}" y1="{TOP - 6}" x2="{x}" y2="{bottom}" stroke="#ddd"/>')
        label = "today" if tick == 0 else f"{tick:+d} d"
        parts.append(f'<text x="{x}" y="{TOP - 12}" text-anchor="middle" font-size="11" fill="#555">{label}</text>')
    for i, row in enumerate(rows):
        h, status = row.health, row.judgement.status
        y = TOP + i * ROW
        middle = y + ROW / 2
        colour = COLOURS[status]
        window = axis.x(h.warn_days) - today
        parts += [
            f'<rect class="warning-window" x="{today}" y="{y + 2}" width="{window}" height="{ROW - 4}" '
            f'fill="#fbe3b4"><title>warning window: {h.warn_days} days</title></rect>',
            f'<text x="{LABEL - 8}" y="{middle + 4}" text-anchor="end" font-size="12" fill="{colour}">'
            f"{escape(h.tenant)} ({escape(h.mode)})</text>",
        ]
        for other in h.other_days_left:
            x = axis.x(other)
            parts.append(
                f'<line class="other-secret" x1="{x}" y1="{y + 5}" x2="{x}" y2="{y + ROW - 5}" stroke="#888" '
                f'stroke-width="2"><title>another secret on the application: {_days_text(other)}</title></line>'
            )
        title = escape(f"{h.tenant}: {status}, {_days_text(h.days_left)}" + (f", on {h.expires}" if h.expires else ""))
        if h.days_left is None:
            why = "not read" if h.error else "not configured" if h.configured is False else _days_text(None)
            parts.append(
                f'<text class="no-secret" x="{today + 6}" y="{middle + 4}" font-size="11" fill="{colour}">'
                f"{escape(why)}<title>{title}</title></text>"
            )
            continue
        end = axis.x(h.days_left)
        parts += [
            f'<rect class="secret" x="{min(today, end)}" y="{middle - 4}" width="{abs(end - today)}" height="8" '
            f'fill="{colour}" fill-opacity="0.35"><title>{title}</title></rect>',
            f'<circle class="expiry" cx="{end}" cy="{middle}" r="5" fill="{colour}"><title>{title}</title></circle>',
        ]
    parts.append(
        f'<line class="today" x1="{today}" y1="{TOP - 6}" x2="{today}" y2="{bottom}" stroke="#1b1b1b" '
        'stroke-width="2" stroke-dasharray="4 3"><title>today (a replay: when its recording was made)</title></line>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


COLUMNS = ["tenant", "mode", "status", "days_left", "expires", "stored_secret", "other_secrets", "application"]
COLUMNS += ["consent", "mailbox", "last_verify", "reason", "next_action"]


def _modes(fleet: Fleet) -> str:
    """What the tenants' modes mean, red when any tenant is real."""
    modes = sorted({r.health.mode for r in fleet.rows})
    real = any(r.health.real_tenant for r in fleet.rows)
    lines = "<br>".join(
        f"{sum(r.health.mode == m for r in fleet.rows)} tenant(s): {escape(records.mode_meaning(m))}" for m in modes
    )
    return f'<p class="mode {"real" if real else "simulated"}">{lines}</p>'


def _cell(value: object) -> str:
    return "" if value is None else escape(str(value))


def report_body(fleet: Fleet) -> str:
    """The report without its page: the modes, the counts, the timeline, the key, the table (what the notebook
    shows inline)."""
    counts = fleet.counts()
    cells = "".join(
        "<tr>" + "".join(f'<td class="{record["status"]}">{_cell(record[c])}</td>' for c in COLUMNS) + "</tr>"
        for record in fleet.records()
    )
    key = " ".join(f'<span style="color:{colour}">&#9679; {status}</span>' for status, colour in COLOURS.items())
    return "\n".join(
        [
            _modes(fleet),
            f"<p><b>{counts['fail']} fail, {counts['warn']} warn, {counts['ok']} ok</b> of {len(fleet.rows)} "
            "tenant(s), most urgent first. Nothing was written to any tenant.</p>",
            timeline_svg(fleet.rows),
            f'<p class="key">{key} <span class="window">&#9632; warning window (verify.secret_warn_days)</span> '
            "&#9474; today &#9474; grey: the application's other secrets</p>",
            "<table><tr>" + "".join(f"<th>{escape(c)}</th>" for c in COLUMNS) + f"</tr>{cells}</table>",
        ]
    )


_FLEET_CSS = """
body { max-width: 96em; }
td.fail { color: #b00020; } td.warn { color: #8a5200; }
.window { color: #e9b860; }
svg.timeline { max-width: 100%; height: auto; font-family: system-ui, sans-serif; }
"""


def html_page(fleet: Fleet, generated: str) -> str:
    """The whole page: self-contained, no script."""
    body = f"""<h1>Fleet health</h1>
<p>Read on {escape(generated)}: each tenant's client secret, drift of the application, consents and mailbox,
and its last successful verify.</p>
{report_body(fleet)}"""
    return page("Fleet health", body, _FLEET_CSS)


#: what a spreadsheet takes for the start of a formula (OWASP, CSV injection): a text cell starting with one is
#: prefixed with a single quote, so it is shown as text and never evaluated
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell as the CSV holds it: text that a spreadsheet would read as a formula made inert; numbers as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def csv_text(fleet: Fleet) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fleet.records()[0]) if fleet.rows else COLUMNS)
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in record.items()} for record in fleet.records())
    return out.getvalue()


def json_text(fleet: Fleet, generated: str) -> str:
    data = {"generated": generated, "counts": fleet.counts(), "tenants": fleet.records()}
    return json.dumps(data, indent=2) + "\n"


#: the command's option of each report
OPTIONS = {"html": "--html", "csv_file": "--csv", "json_file": "--json"}


def _output_problem(path: Path, inputs: set[Path]) -> str:
    """What keeps ``path`` from taking a report, or "" (its folder is made when missing and possible)."""
    full = path.resolve()
    if full in inputs:
        return f"{path} is one of the parameter files read: the report would overwrite it"
    if path.is_dir():
        return f"{path} is a folder: name a file in it"
    if path.exists():
        if not stat.S_ISREG(path.stat().st_mode):
            return f"{path} is not a regular file"
        if not os.access(path, os.W_OK):
            return f"{path} cannot be written"
    folder = full.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"its folder cannot be made: {folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} cannot be written"
    return ""


def check_outputs(
    inputs: Iterable[str | Path], *, html: Path | None, csv_file: Path | None, json_file: Path | None
) -> None:
    """Refuse, before anything is read or written, a report that would overwrite a parameter file of ``inputs``
    (resolved as the fleet reads them), go to a folder, a device or anything but a regular file, into a folder
    that cannot be made or written, or to the same file as another report: a :class:`ParamsError` naming each
    option (the command's exit code 2)."""
    read = {paths.resolve(i).resolve() for i in inputs}
    problems: dict[str, str] = {}
    taken: dict[Path, str] = {}
    for key, path in {"html": html, "csv_file": csv_file, "json_file": json_file}.items():
        if path is None:
            continue
        option = OPTIONS[key]
        try:
            full = path.resolve()
            why = f"{path} is the same file as {taken[full]}" if full in taken else _output_problem(path, read)
        except (OSError, RuntimeError) as error:  # a folder that may not be looked into, a loop of links
            full, why = path, f"{path} cannot be checked: {getattr(error, 'strerror', None) or error}"
        if why:
            problems[option] = why
        taken.setdefault(full, option)
    if problems:
        raise ParamsError("the command line", problems)


def _write_failed(path: Path, error: OSError) -> RunbookError:
    reason = error.strerror or str(error)
    return RunbookError(
        f"{path}: the report could not be written: {reason}",
        fix="free space on its disk or name another file, and run again; no report was left half written",
    )


def _temporary(target: Path, text: str) -> Path:
    """``text`` in a new file beside ``target`` (same folder, so replacing is atomic), synced to disk; the file is
    removed again when writing fails. Its mode: the target's when it exists, else the one the umask gives."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if target.exists():
            os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def write(fleet: Fleet, generated: str, *, html: Path | None, csv_file: Path | None, json_file: Path | None) -> None:
    """Each report asked for, whole or not at all: every report is written to a temporary file beside it, and
    only when all are written does each replace its file (a symbolic link's target). A write that fails (a full
    disk) removes the temporary files, leaves every report as it was, and raises a :class:`RunbookError` naming
    the file and the reason."""
    wanted = (
        (html, lambda: html_page(fleet, generated)),
        (csv_file, lambda: csv_text(fleet)),
        (json_file, lambda: json_text(fleet, generated)),
    )
    written: list[tuple[Path, Path, Path]] = []
    try:
        for path, text in wanted:
            if path is None:
                continue
            target = path.resolve()
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                written.append((path, _temporary(target, text()), target))
            except OSError as error:
                raise _write_failed(path, error) from error
        for path, temporary, target in written:
            try:
                os.replace(temporary, target)
            except OSError as error:
                raise _write_failed(path, error) from error
    finally:
        for _, temporary, _ in written:
            temporary.unlink(missing_ok=True)


def text(fleet: Fleet) -> str:
    """The report as the command prints it: the counts, then a line per tenant, most urgent first, with its next
    action (the files hold every column)."""
    counts = fleet.counts()
    width = max((len(r.health.tenant) + len(r.health.mode) for r in fleet.rows), default=0) + 3
    lines = [f"{counts['fail']} fail, {counts['warn']} warn, {counts['ok']} ok"]
    for row in fleet.rows:
        h = row.health
        days = "" if h.days_left is None else f"{h.days_left} d"
        name = f"{h.tenant} ({h.mode})"
        lines.append(f"{row.judgement.status:<4}  {name:<{width}} {days:>7}  {row.judgement.next_action}")
    return "\n".join(lines)
