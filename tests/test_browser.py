"""JupyterLab in a real browser: notebook 01 in sandbox mode, run cell by cell as a trainee would, with the
parameters form and the validated table rendered. Headless Chromium (Debian's package) driven by Playwright;
a screenshot is saved to test-artifacts/. Skipped, saying why, only where no browser can be had."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request

import nbformat
import papermill
import pytest
import yaml

from runbook_lib import cli, paths
from runbook_lib.records import integrity
from runbook_lib.records import store as records
from runbook_lib.sandbox import state

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"
#: one budget for the whole walk through JupyterLab, shared by every wait (a busy machine is slow everywhere)
BUDGET_SECONDS = 300
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium on this machine: `make test` installs "
        "Debian's chromium package where apt-get is available and it runs as root",
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_trainee_runs_notebook_01_in_sandbox_mode_in_jupyterlab(tmp_path):
    from playwright.sync_api import sync_playwright

    trainee = yaml.safe_load((ROOT / "params" / "training" / "trainee.yaml").read_text())
    trainee.update(tenant="browser-trainee", secret_store={"file": str(tmp_path / "trainee.secret")})
    state.reset("browser-trainee")
    (tmp_path / "trainee.yaml").write_text(yaml.safe_dump(trainee))
    papermill.execute_notebook(  # the trainee's way: their parameter file, named once
        str(ROOT / "notebooks" / "01_webex_connect_app.ipynb"),
        str(tmp_path / "01_webex_connect_app.ipynb"),
        parameters={"params_file": str(tmp_path / "trainee.yaml")},
        prepare_only=True,
    )
    port = free_port()
    server = subprocess.Popen(
        cli.lab_command(
            [
                "--no-browser",
                f"--port={port}",
                "--ip=127.0.0.1",
                "--IdentityProvider.token=",
                f"--ServerApp.runtime_dir={tmp_path / 'runtime'}",
                f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",  # no tab of another run is restored
            ],
            folder=tmp_path,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.monotonic()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() - started < BUDGET_SECONDS, "JupyterLab did not answer"
                time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            deadline = time.monotonic() + BUDGET_SECONDS

            def left() -> float:
                """What remains of the one budget every wait shares, in milliseconds: a slow machine spends
                it where it is slow, and no single wait is guessed."""
                return max(1_000.0, (deadline - time.monotonic()) * 1000)

            page.goto(f"http://127.0.0.1:{port}/lab/tree/01_webex_connect_app.ipynb", timeout=left())
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=left())
            idle = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
            page.wait_for_selector(idle, timeout=left())
            page.locator(".jp-Notebook").first.click()
            page.keyboard.press("Escape")
            # Shift+Enter through the notebook, as a trainee does, each cell done first (counted in the file: the page
            # renders only the cells in view)
            for _ in range(len(nbformat.read(tmp_path / "01_webex_connect_app.ipynb", as_version=4).cells)):
                page.keyboard.press("Shift+Enter")
                page.wait_for_selector(idle, timeout=left())
            page.get_by_text("well formed").first.wait_for(timeout=left())
            page.get_by_role("button", name="Use these parameters").wait_for(timeout=left())
            page.get_by_text("Step 01_webex_connect_app: ok").wait_for(timeout=left())
            # the validated values table shows the forwarding address (a visible cell, not a widget's hidden text)
            address = "a41a0ba3566ed2091155f13e48e6d4f8@mail-us.imiconnect.io"
            page.locator(".jp-OutputArea-output table td").filter(has_text=address).first.wait_for(
                state="visible", timeout=left()
            )
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
            ARTIFACTS.mkdir(exist_ok=True)
            page.get_by_role("heading", name="The values, checked").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-notebook-01-sandbox.png"), full_page=False)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (ARTIFACTS / "jupyterlab-notebook-01-sandbox.png").stat().st_size > 10_000
    # the notebook run in JupyterLab left a sealed record, as `runbook run` would
    [record] = records.record_dirs(paths.archive_dir(), "browser-trainee")
    manifest = records.read_manifest(record)
    assert (manifest["started_by"], manifest["status"], manifest["mode"]) == ("JupyterLab", "ok", "sandbox")
    assert integrity.verify(record) == [] and (record / "01_webex_connect_app.html").exists()
