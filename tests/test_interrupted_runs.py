"""Records that survive any ending: Ctrl-C, SIGKILL, a lock held elsewhere, a bad store; nothing hidden left behind.

The runs here are real ``runbook run`` processes (so signals reach them as they would from a terminal)
against a simulated tenant served by this test process, which also slows one request down so the signal
lands while the run is inside step 3, after step 2 has changed the tenant.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runbook_lib import cli
from runbook_lib.config import params
from runbook_lib.engine import journal, locks
from runbook_lib.errors import LockHeld
from runbook_lib.records import store as records
from runbook_lib.running import batch, runner
from runbook_lib.sandbox import state

from conftest import ROOT

pytestmark = pytest.mark.e2e

#: step 3's first Graph read, held long enough for a signal to arrive while it is in flight
SLOW_STEP3 = {"method": "GET", "path": "^/v1.0/users/", "delay": 5, "times": 1}


def start_run(tmp_path: Path, raw: dict, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    params_file = tmp_path / "tenant.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    archive = tmp_path / "archive"
    process = subprocess.Popen(
        [sys.executable, "-m", "runbook_lib.cli", "run", str(params_file), "--archive", str(archive)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return process, archive


def wait_for(condition, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the run never reached the expected point"
        time.sleep(0.1)


def journal_of(archive: Path) -> list[dict]:
    folders = records.record_dirs(archive, "contoso")
    return journal.read(folders[-1] / journal.JOURNAL_FILE) if folders else []


def in_step3(archive: Path) -> bool:
    return any(e.get("kind") == "step" and e.get("step") == "03_office365_mailbox" for e in journal_of(archive))


@pytest.fixture
def slowed(sandbox):
    sandbox.tenant.faults.append(dict(SLOW_STEP3))
    return sandbox


def sandbox_run_in_step_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[subprocess.Popen, Path]:
    """A trainee's run in sandbox mode, its simulated tenant slowed in step 3 beforehand, caught in step 3's slow
    read."""
    monkeypatch.setenv("RUNBOOK_STATE", str(tmp_path / "state"))
    raw = yaml.safe_load((ROOT / "params" / "training" / "trainee.yaml").read_text())
    raw.update(tenant="contoso", secret_store={"file": str(tmp_path / "secrets" / "trainee.secret")})
    tenant = state.load("contoso", ROOT / "recordings" / "contoso" / "tenant.yaml")
    tenant.faults.append(dict(SLOW_STEP3))
    state.save("contoso", tenant)
    process, archive = start_run(tmp_path, raw, {"RUNBOOK_STATE": str(tmp_path / "state")})
    wait_for(lambda: in_step3(archive))
    time.sleep(1)  # step 3's slow read is in flight
    return process, archive


def test_ctrl_c_after_step_2_seals_an_interrupted_record_with_its_changes(tmp_path, monkeypatch):
    """In sandbox mode, as a trainee runs it: the trainee's simulated tenant is slowed in step 3 beforehand."""
    process, archive = sandbox_run_in_step_3(tmp_path, monkeypatch)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == cli.EXIT_INTERRUPTED, err
    assert "Stopping: the step finishes the request in flight" in err
    [record] = records.record_dirs(archive, "contoso")
    assert records.is_sealed(record) and not [p for p in (archive / "contoso").iterdir() if p.name.startswith(".")]
    manifest = records.read_manifest(record)
    assert manifest["status"] == "interrupted" and manifest["mode"] == "sandbox"
    by_step = {s["step"]: s for s in manifest["steps"]}
    assert [c["action"] for c in by_step["02_azure_app_registration"]["changes"]] == ["created"] * 4
    assert by_step["03_office365_mailbox"]["status"] == "interrupted"
    assert by_step["04_webex_connect_email_app"]["status"] == "not started"
    assert "Traceback" not in err
    assert cli.main(["verify-record", str(record)]) == 0


def test_sigkill_leaves_a_journal_the_next_command_seals(tmp_path, live_raw, slowed, capsys, monkeypatch):
    state = tmp_path / "state"
    process, archive = start_run(tmp_path, live_raw, {"RUNBOOK_STATE": str(state)})
    wait_for(lambda: in_step3(archive))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    [record] = records.record_dirs(archive, "contoso")
    assert not records.is_sealed(record)
    monkeypatch.setenv("RUNBOOK_STATE", str(state))
    assert cli.main(["records", "contoso", "--archive", str(archive)]) == 0
    captured = capsys.readouterr()
    assert "sealed the interrupted record" in captured.err and "4 change(s)" in captured.err
    assert "interrupted" in captured.out
    manifest = records.read_manifest(record)
    assert manifest["status"] == "interrupted" and manifest["totals"]["changes"] == 4
    assert manifest["operator"]["signed_in"]["name"] == "admin@contoso.onmicrosoft.com"


def test_two_runs_of_one_tenant_with_different_archives_one_is_refused(tmp_path, demo_raw):
    tenant = params.validate(demo_raw)
    with locks.tenant_lock(tenant, command="another run"), pytest.raises(LockHeld, match="another run"):
        runner.run(tenant, archive=tmp_path / "other-archive", steps=["01_webex_connect_app"])
    assert not (tmp_path / "other-archive" / "contoso").exists()


def test_a_store_readable_by_others_stops_before_any_request_or_file(tmp_path, live_raw, sandbox, capsys):
    store = tmp_path / "secrets" / "client.secret"
    store.parent.mkdir(mode=0o700)
    store.write_text("")
    store.chmod(0o644)
    params_file = tmp_path / "tenant.yaml"
    params_file.write_text(yaml.safe_dump(live_raw))
    code = cli.main(["run", str(params_file), "--archive", str(tmp_path / "archive")])
    assert code == 2 and "chmod 600" in capsys.readouterr().err
    assert sandbox.tenant.requests == [] and not (tmp_path / "archive").exists()


def test_records_of_a_tenant_list_every_status(tmp_path, demo_raw, capsys):
    archive = tmp_path / "archive"
    runner.run(params.validate(demo_raw), archive=archive, steps=["01_webex_connect_app"], progress=lambda _: None)
    running = records.open_record(archive, "contoso", {})
    assert cli.main(["records", "contoso", "--archive", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out.split() and "unsealed (running now" in out
    assert not records.is_sealed(running)  # a run that has only just opened its record is left alone


def test_an_interrupted_batch_keeps_a_record_and_only_failed_reruns_the_rest(tmp_path, demo_raw, live_raw, slowed):
    files = []
    for name, raw in (("contoso", demo_raw), ("contoso-live", live_raw), ("contoso-later", demo_raw)):
        raw = dict(raw, tenant=name)
        if raw["mode"] == "replay":
            raw["recordings"] = "recordings/contoso"
            raw["secret_store"] = {"file": str(tmp_path / "stores" / f"{name}.secret")}
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(raw))
    archive = tmp_path / "archive"
    process = subprocess.Popen(
        [sys.executable, "-m", "runbook_lib.cli", "batch", *map(str, files), "--jobs", "1", "--archive", str(archive)],
        env={**os.environ, "RUNBOOK_STATE": str(tmp_path / "state")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def live_in_step3() -> bool:
        folders = records.record_dirs(archive, "contoso-live")
        entries = journal.read(folders[-1] / journal.JOURNAL_FILE) if folders else []
        return any(e.get("step") == "03_office365_mailbox" for e in entries)

    wait_for(live_in_step3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == cli.EXIT_INTERRUPTED, err
    [batch_dir] = sorted((archive / batch.BATCHES).iterdir())
    data = json.loads((batch_dir / "batch.json").read_text())
    status = {t["tenant"]: t["status"] for t in data["tenants"]}
    assert status == {"contoso": "ok", "contoso-live": "interrupted", "contoso-later": "not started"}, status
    assert data["status"] == "interrupted" and records.is_sealed(batch_dir)
    [live_record] = records.record_dirs(archive, "contoso-live")
    assert records.read_manifest(live_record)["status"] == "interrupted"
    assert sorted(batch.failed_files(batch_dir)) == sorted(str(f) for f in files[1:])


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]], ids=["sigterm", "ctrl-c twice"])
def test_a_stop_at_once_ends_with_the_sealed_records_summary_and_no_traceback(tmp_path, monkeypatch, signals):
    process, archive = sandbox_run_in_step_3(tmp_path, monkeypatch)
    for signum in signals:
        process.send_signal(signum)
        time.sleep(0.3)
    out, err = process.communicate(timeout=120)
    assert process.returncode == cli.EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "DeadKernelError" not in err, err
    [record] = records.record_dirs(archive, "contoso")
    assert records.is_sealed(record) and records.read_manifest(record)["status"] == "interrupted"
    assert f"Record: {record}" in out and "status: INTERRUPTED" in out
