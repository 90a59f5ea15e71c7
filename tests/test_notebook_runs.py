"""Every way of running a notebook is a real run: papermill, nbconvert and a kernel driven by hand each open the
same run context as `runbook run` (checks, the tenant's lock, a record with its journal, sealed on every ending),
and `records`, `diff`, teardown and fleet read what they leave like any other record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import papermill
import pytest
import yaml
from jupyter_client.manager import KernelManager

from runbook_lib import cli, paths
from runbook_lib.config import params, registry
from runbook_lib.context import session
from runbook_lib.engine import journal, locks
from runbook_lib.errors import LockHeld
from runbook_lib.records import integrity
from runbook_lib.records import store as records
from runbook_lib.running import fleet, runner
from runbook_lib.sandbox import state

from conftest import CANARY, ROOT, scan

pytestmark = pytest.mark.e2e

NOTEBOOKS = ROOT / "notebooks"
BIN = Path(sys.executable).parent


def trainee(tmp_path: Path, name: str, **changes: Any) -> Path:
    """A trainee's parameter file (sandbox mode) with a store of its own; its sandbox starts from the seed."""
    raw = yaml.safe_load((ROOT / "params" / "training" / "trainee.yaml").read_text())
    raw.update(tenant=name, secret_store={"file": str(tmp_path / f"{name}.secret")}, **changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    state.reset(name)
    return path


def papermill_cli(notebook: str, params_file: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "papermill"), str(NOTEBOOKS / notebook), str(out), "-p", "params_file", str(params_file)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def the_record(archive: Path, tenant: str) -> dict[str, Any]:
    [record] = records.record_dirs(archive, tenant)
    assert records.is_sealed(record) and integrity.verify(record) == []
    return records.read_manifest(record)


def test_papermill_leaves_a_sealed_record_that_records_diff_teardown_and_fleet_read(tmp_path, capsys):
    archive = tmp_path / "archive"
    env = {paths.ARCHIVE_ENV: str(archive)}
    file = trainee(tmp_path, "pm-trainee")
    done = papermill_cli("02_azure_app_registration.ipynb", file, tmp_path / "02.ipynb", env)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = the_record(archive, "pm-trainee")
    assert manifest["started_by"] == "papermill" and manifest["mode"] == "sandbox"
    [step] = manifest["steps"]
    assert step["status"] == "ok" and manifest["totals"]["writes"] == 4
    assert {f for f in step["files"]} == {"02_azure_app_registration.ipynb", "02_azure_app_registration.html"}
    assert cli.main(["records", "pm-trainee", "--archive", str(archive)]) == 0
    assert "papermill" in capsys.readouterr().out

    # steps 3 and 5 by papermill too: fleet reads the verify's date, diff compares the records
    for notebook in ("03_office365_mailbox.ipynb", "05_verify.ipynb"):
        done = papermill_cli(notebook, file, tmp_path / notebook, env)
        assert done.returncode == 0, done.stderr[-2000:]
    assert fleet.last_verify(archive, "pm-trainee")
    assert cli.main(["diff", "--tenant", "pm-trainee", "--archive", str(archive)]) == 0
    assert "what changed between two runs" in capsys.readouterr().out

    # the end-of-class teardown finds what the notebook run created, and removes it
    raw = yaml.safe_load(file.read_text())
    down = runner.run(params.validate(raw), archive=archive, steps=[registry.TEARDOWN], progress=lambda _: None)
    removed = {(c.resource, c.action) for c in down.steps[0].changes}
    assert ("application", "removed") in removed and ("service principal", "removed") in removed
    assert state.read(state.state_file("pm-trainee")).trainee_app is None


def test_nbconvert_execute_leaves_a_sealed_record(tmp_path):
    archive = tmp_path / "archive"
    file = trainee(tmp_path, "nbc-trainee")
    prepared = tmp_path / "01_webex_connect_app.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / prepared.name), str(prepared), parameters={"params_file": str(file)}, prepare_only=True
    )
    done = subprocess.run(
        [str(BIN / "jupyter"), "nbconvert", "--execute", "--to", "notebook", "--inplace", str(prepared)],
        env={**os.environ, paths.ARCHIVE_ENV: str(archive)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = the_record(archive, "nbc-trainee")
    assert manifest["started_by"] == "nbconvert" and manifest["steps"][0]["status"] == "ok"


def test_a_notebook_run_by_hand_and_a_runbook_run_of_one_tenant_never_run_at_once(tmp_path):
    raw = yaml.safe_load(trainee(tmp_path, "lock-trainee").read_text())
    tenant = params.validate(raw)
    by_hand = session.NotebookRun(registry.APP_REGISTRATION, tenant, shell=None, archive=tmp_path / "a").open()
    try:
        with pytest.raises(LockHeld) as refused:
            runner.run(tenant, archive=tmp_path / "a", steps=[registry.WEBEX_VALUES], progress=lambda _: None)
        assert "notebook 02_azure_app_registration" in str(refused.value)
    finally:
        by_hand.seal(session.StepRecord(registry.APP_REGISTRATION, status="ok"))
    with (
        locks.tenant_lock(tenant, command="run"),
        pytest.raises(LockHeld, match="locked by run for tenant lock-trainee"),
    ):
        session.NotebookRun(registry.APP_REGISTRATION, tenant, shell=None, archive=tmp_path / "a").open()
    assert [records.read_manifest(r)["status"] for r in records.record_dirs(tmp_path / "a", "lock-trainee")] == ["ok"]


def test_no_operator_token_cache_outlives_a_live_notebook_run(tmp_path, live_raw):
    live_raw.update(tenant="live-by-hand")
    file = tmp_path / "live.yaml"
    file.write_text(yaml.safe_dump(live_raw))
    done = papermill_cli(
        "02_azure_app_registration.ipynb", file, tmp_path / "02.ipynb", {paths.ARCHIVE_ENV: str(tmp_path / "archive")}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert the_record(tmp_path / "archive", "live-by-hand")["mode"] == "live"
    assert not paths.token_cache("live-by-hand").exists()
    assert scan(tmp_path / "archive", [CANARY]) == []  # no token or secret of the tenant's in the record


def test_a_hand_run_kernel_killed_mid_step_is_sealed_by_the_next_command_with_every_write(tmp_path):
    archive = tmp_path / "archive"
    file = trainee(tmp_path, "kill-trainee")
    km = KernelManager(kernel_name=runner.kernel_name())
    km.start_kernel(env={**os.environ, paths.ARCHIVE_ENV: str(archive)}, cwd=str(tmp_path))
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        cells = [
            f"params_file = {str(file)!r}",
            "import runbook_lib.context.step as rb\nfrom runbook_lib.tenant import entra",
            "step = rb.start('02_azure_app_registration', globals())",
            "perms = entra.permissions(step)",
            "change, app = entra.ensure_application(step, perms, entra.find_application(step))",
        ]
        for code in cells:
            reply = client.execute_interactive(code, timeout=120)
            assert reply["content"]["status"] == "ok", reply["content"]
        [record] = records.record_dirs(archive, "kill-trainee")
        assert not records.is_sealed(record)
        os.kill(km.provisioner.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        client.stop_channels()
        km.cleanup_resources()
    assert cli.main(["records", "kill-trainee", "--archive", str(archive)]) == 0
    manifest = records.read_manifest(record)
    assert manifest["status"] == "interrupted" and manifest["started_by"] != "runbook run"
    assert manifest["totals"]["writes"] == 1
    [created] = [c for s in manifest["steps"] for c in s["changes"]]
    assert (created["resource"], created["action"]) == ("application", "created")
    assert [e["kind"] for e in journal.read(record / journal.JOURNAL_FILE)][:2] == ["run", "step"]
