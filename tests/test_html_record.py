"""HTML records: one page that loads nothing from outside, with prose and outputs but no code."""

from __future__ import annotations

import re
from html import escape

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from runbook_lib import paths
from runbook_lib.engine.changes import Change
from runbook_lib.engine.results import Facts, StepRecord
from runbook_lib.records import html_record

pytestmark = pytest.mark.unit

NOTEBOOKS = sorted((paths.project_root() / "notebooks").glob("*.ipynb"))
REMOTE_REFERENCE = re.compile(r"<(?:link|script)\b[^>]*\b(?:src|href)\s*=\s*[\"']?https?://", re.IGNORECASE)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def assert_self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    assert not REMOTE_REFERENCE.search(html)
    assert "<link" not in html.lower()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_renders_self_contained_with_prose_and_outputs_but_no_code(path):
    nb = nbformat.read(path, as_version=4)
    html = html_record.render(nb, title=path.stem, summary_html=f"<p>Record of {path.stem}: ok</p>")
    assert_self_contained(html)
    assert html.index(f"Record of {path.stem}: ok") < html.index("<h1>")
    headings = [
        line[2:].strip()
        for cell in nb.cells
        if cell.cell_type == "markdown"
        for line in cell.source.splitlines()
        if line.startswith("# ")
    ]
    assert headings and all(escape(h, quote=False) in html for h in headings)
    code = [
        line.strip()
        for cell in nb.cells
        if cell.cell_type == "code"
        for line in cell.source.splitlines()
        if "(" in line and not line.lstrip().startswith("#")
    ]
    assert code and not [line for line in code if escape(line) in html or escape(line, quote=False) in html]


def test_outputs_are_shown_as_a_reader_needs_them():
    nb = new_notebook(
        cells=[
            new_markdown_cell('## Prose\n\nSome *text*.\n\n<script src="https://cdn.example.com/x.js"></script>'),
            new_code_cell(
                "form = parameters_form(globals())",
                outputs=[
                    new_output(
                        "execute_result",
                        execution_count=1,
                        data={
                            html_record.WIDGET_MIME: {"model_id": "abc", "version_major": 2, "version_minor": 0},
                            "text/plain": "VBox(children=(Text(value='contoso'),))",
                        },
                    )
                ],
            ),
            new_code_cell(
                "graph.get('/me')",
                outputs=[
                    new_output("stream", name="stderr", text="\x1b[33mretrying\x1b[0m\n"),
                    new_output(
                        "error",
                        ename="GraphError",
                        evalue="\x1b[31mHTTP 403 Authorization_RequestDenied\x1b[0m",
                        traceback=["\x1b[31m---------\x1b[0m", "Traceback (most recent call last)"],
                    ),
                ],
            ),
            new_code_cell(
                "show()",
                outputs=[
                    new_output(
                        "display_data",
                        data={
                            "text/html": '<link rel="stylesheet" href="https://cdn.example.com/a.css">'
                            "<table><tr><td>cell</td></tr></table>"
                            "<script>alert(1)</script><script src='http://x/y.js'>",
                            "text/plain": "a table",
                        },
                    ),
                    new_output(
                        "display_data", data={"text/markdown": "`mailbox.ps1`, saved", "text/plain": "<Markdown>"}
                    ),
                    new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
                    new_output("execute_result", execution_count=3, data={"text/plain": "3 < 4"}),
                ],
            ),
        ]
    )
    html = html_record.render(nb, title="Step <2>", summary_html="<p>Record of step 2: failed</p>")
    assert_self_contained(html)
    assert "<title>Step &lt;2&gt;</title>" in html and "<h2>Prose</h2>" in html and "<em>text</em>" in html
    assert escape(html_record.WIDGET_TEXT) in html and "VBox(" not in html and "model_id" not in html
    assert '<pre class="error">GraphError: HTTP 403 Authorization_RequestDenied</pre>' in html
    assert "\x1b" not in html and "[31m" not in html and "Traceback" not in html
    assert '<pre class="stderr">retrying\n</pre>' in html
    assert "<td>cell</td>" in html and "alert(1)" not in html and "a table" not in html
    assert "<code>mailbox.ps1</code>, saved" in html
    assert f'<img src="data:image/png;base64,{PNG}"' in html
    assert "3 &lt; 4" in html
    assert "parameters_form" not in html and "graph.get" not in html


HEADER = [
    ("mode", "LIVE: these changes were made to the real tenant"),
    ("tenant", "contoso (tenant ID 3c8a5f3e-2b1d-4f4a-9c6e-8d2f7a1b5e90)"),
    ("signed in", "admin@contoso.onmicrosoft.com (user, object o, tenant t)"),
    ("reason", "Webex Connect <mail> for support"),
    ("ticket", "CHG0042"),
]


@pytest.mark.parametrize("real_tenant", [True, False])
def test_a_page_opens_with_the_mode_as_a_banner_then_the_header_then_the_outcome(real_tenant):
    step = StepRecord(
        "04_webex_connect_email_app",
        status="ok",
        changes=[Change("application", "Webex Connect Email", "created", "create")],
        facts=Facts(checklist={"confirmed_by": "", "items": {"saved": True, "registered": False}}),
    )
    summary = html_record.summary_html(step, HEADER, real_tenant=real_tenant)
    html = html_record.render(new_notebook(cells=[new_markdown_cell("# Step 4")]), title="t", summary_html=summary)
    banner = f'<p class="mode {"real" if real_tenant else "simulated"}">LIVE: these changes'
    order = [banner, "CHG0042", "Record of 04_webex_connect_email_app: ok, checklist incomplete", "<td>created</td>"]
    assert [html.index(text) for text in order] == sorted(html.index(text) for text in order)
    assert html.index(order[-1]) < html.index("<h1>") and "Webex Connect &lt;mail&gt; for support" in html
    assert ("No real tenant was changed" in html) is not real_tenant
