"""An executed notebook as one self-contained HTML page, for the run record.

Records are read by auditors, years later, often offline: the page loads nothing from anywhere (no
script, no stylesheet or font from a CDN; a Content-Security-Policy forbids it even if a notebook
output tried), shows prose and outputs but no code, and is built directly from the notebook, which
is several times faster than nbconvert's exporter (a run renders every notebook it executes).

Each page opens with the record's header (:func:`runbook_lib.records.store.header`): the mode as a banner,
red for a real tenant and blue for a replay or a sandbox, so a demo never reads as a change to a real
tenant; then the tenant, who signed in, the reason and the ticket; then the step's outcome.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from html import escape
from typing import Any

import nbformat
from nbconvert.filters import strip_ansi
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

from ..engine.changes import changes_html
from ..engine.results import StepRecord

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: what a page says where JupyterLab showed a widget: its text form is a Python repr, which is for programmers
WIDGET_TEXT = "(A JupyterLab control was shown here: it works only in a notebook open in JupyterLab.)"

# scripts (an unclosed one runs to the end of its fragment, as in a browser), links, remote CSS imports
_REMOTE = re.compile(
    r"<script\b.*?(?:</script\s*>|\Z)|<link\b[^>]*>|@import\s+(?:url\()?\s*[\"']?(?:https?:)?//[^;]*;?",
    re.IGNORECASE | re.DOTALL,
)

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b;
       max-width: 64em; margin: 2em auto; padding: 0 1em; }
h1, h2, h3 { line-height: 1.2; }
table { border-collapse: collapse; margin: .5em 0; font-size: 14px; }
th, td { border: 1px solid #999; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eee; }
code, pre { font: 13px/1.4 ui-monospace, Menlo, Consolas, monospace; background: #f4f4f4; }
pre { padding: .6em .8em; white-space: pre-wrap; overflow-wrap: anywhere; }
.summary { border: 2px solid #444; padding: .2em 1em; margin-bottom: 2em; }
.mode { font-weight: bold; padding: .4em .8em; color: #fff; }
.mode.real { background: #b00020; }
.mode.simulated { background: #0b4f8a; }
.widget { color: #555; font-style: italic; }
.output { margin: .5em 0 1em; }
.error, .stderr { color: #b00020; }
img { max-width: 100%; }
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _local(html: str) -> str:
    """HTML with nothing that would load or run anything: what a notebook output or raw HTML may hold."""
    return _REMOTE.sub("", html)


def _pre(text: str, kind: str) -> str:
    return f'<pre class="{kind}">{escape(strip_ansi(text))}</pre>'


def _image(mime: str) -> Callable[[str], str]:
    return lambda data: f'<img src="data:{mime};base64,{"".join(data.split())}" alt="">'


def _output(out: dict[str, Any], markdown: Callable[[str], str]) -> str:
    """One output in the form a reader needs; widgets (which need a live kernel) by their text form."""
    kind = out.get("output_type")
    if kind == "stream":
        return _pre(out.get("text", ""), out.get("name", "stdout"))
    if kind == "error":
        return _pre(f"{out.get('ename', 'Error')}: {out.get('evalue', '')}", "error")
    data = out.get("data", {})
    if WIDGET_MIME in data:
        return f'<p class="widget">{escape(WIDGET_TEXT)}</p>'
    shown: dict[str, Callable[[str], str]] = {
        "text/html": _local,
        "text/markdown": markdown,
        "image/png": _image("image/png"),
        "image/jpeg": _image("image/jpeg"),
        "text/plain": lambda text: _pre(text, "text"),
    }
    for mime, show in shown.items():
        if mime in data:
            return show(data[mime])
    return ""


@lru_cache(maxsize=512)
def _markdown(source: str) -> str:
    """Prose rendered once per process: a notebook's Markdown is the same in every run of it."""
    return _markdown_with(source, {})


def _markdown_with(source: str, attachments: dict[str, Any]) -> str:
    renderer = IPythonRenderer(escape=False, exclude_anchor_links=True)
    renderer.attachments = attachments
    return _local(MarkdownWithMath(renderer=renderer).render(source))


def summary_html(result: StepRecord, header: list[tuple[str, str]], *, real_tenant: bool) -> str:
    """What a step's page opens with: the record's header (its first row, the mode, as a banner), then the
    step's outcome as people read it (``ok, checklist incomplete``), its changes and its error."""
    (_, mode), *rows = header
    parts = [
        f'<p class="mode {"real" if real_tenant else "simulated"}">{escape(mode)}</p>',
        "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>",
        f"<p><b>Record of {escape(result.step)}: {escape(result.status_text)}</b></p>",
        changes_html(result.changes) if result.changes else "<p>No changes.</p>",
    ]
    if result.changes and not real_tenant:
        parts.append("<p>No real tenant was changed: see the mode above.</p>")
    if result.error:
        parts.append(f"<p><b>Error:</b></p><pre>{escape(result.error)}</pre>")
    return "\n".join(parts)


def render(nb: nbformat.NotebookNode, *, title: str, summary_html: str) -> str:
    """The page: ``summary_html`` (the step's outcome and changes) first, then each cell's prose or
    outputs. Code inputs and raw cells are left out: the reader is an auditor, not a programmer."""

    def markdown(source: str, attachments: dict[str, Any] | None = None) -> str:
        return _markdown_with(source, attachments) if attachments else _markdown(source)

    parts = [f'<section class="summary">\n{_local(summary_html)}\n</section>']
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(f'<div class="markdown">\n{markdown(cell.source, cell.get("attachments"))}</div>')
        elif cell.cell_type == "code":
            shown = [_output(out, markdown) for out in cell.get("outputs", [])]
            parts += [f'<div class="output">\n{html}\n</div>' for html in shown if html]
    return page(title, "\n".join(parts))


def page(title: str, body: str, css: str = "") -> str:
    """A self-contained page: the records' policy (nothing loaded from anywhere, no script) and base style."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_CSS}{css}</style>
</head>
<body>
{body}
</body>
</html>
"""
