"""Headless runs through ``runbook run``: papermill, the notebooks and the archive, as an operator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runbook_lib import cli
from runbook_lib.config import params
from runbook_lib.records import record_views
from runbook_lib.records import store as records
from runbook_lib.running import runner
from runbook_lib.sandbox import state

from conftest import DEMO, ROOT

pytestmark = pytest.mark.e2e


def run_cli(tmp_path: Path, raw: dict, *extra: str, command: str = "run") -> tuple[int, Path]:
    params_file = tmp_path / f"{raw['tenant']}.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    archive = tmp_path / "archive"
    return cli.main([command, str(params_file), "--archive", str(archive), *extra]), archive


def manifest(archive: Path, tenant: str = "contoso") -> list[dict]:
    return [records.read_manifest(d) for d in records.record_dirs(archive, tenant)]


def test_demo_replay_run_archives_a_complete_record(tmp_path, demo_raw, capsys):
    code, archive = run_cli(tmp_path, demo_raw)
    assert code == 0
    out = capsys.readouterr().out
    assert "Record:" in out and "client secret" in out
    [record_dir] = records.record_dirs(archive, "contoso")
    names = {p.name for p in record_dir.iterdir()}
    steps = list(params.STEP_NAMES)
    assert names == {f"{s}.{ext}" for s in steps for ext in ("ipynb", "html")} | {
        "03_office365_mailbox.mailbox.ps1",
        "04_webex_connect_email_app.webex_connect_values.json",
        "manifest.json",
        "journal.jsonl",
        "seal.json",
    }
    [m] = manifest(archive)
    assert m["status"] == "ok" and m["kit_version"] and m["parameters"]["secret_store"] == demo_raw["secret_store"]
    assert m["mode"] == "replay" and m["operator"]["signed_in"]["name"] == "admin@contoso.onmicrosoft.com"
    assert m["operator"]["local_account"] and m["previous"] is None
    assert [s["status"] for s in m["steps"]] == ["ok"] * 6
    assert m["steps"][2]["files"] == [
        "03_office365_mailbox.ipynb",
        "03_office365_mailbox.html",
        "03_office365_mailbox.mailbox.ps1",
    ]
    assert [c["action"] for c in m["steps"][2]["changes"]] == ["planned"] * 4
    step2 = m["steps"][1]
    assert [c["action"] for c in step2["changes"]] == ["created"] * 4
    assert step2["counts"]["writes"] == 4 and step2["counts"]["reads"] == 5  # Exchange's and Graph's permissions
    for name, digest in m["files"].items():
        assert records.sha256(record_dir / name) == digest
    html = (record_dir / "02_azure_app_registration.html").read_text()
    assert "Service principal and admin consent" in html and "entra.ensure_secret" not in html


def test_plan_sends_no_write(tmp_path, demo_raw):
    code, archive = run_cli(tmp_path, demo_raw, command="plan")
    assert code == 0
    [m] = manifest(archive)
    step2 = m["steps"][1]
    assert step2["counts"]["writes"] == 0
    assert {c["action"] for c in step2["changes"]} == {"planned"}
    assert run_cli(tmp_path, demo_raw)[0] == 0  # then a run: the history tells them apart, and show says which
    table = record_views.history(archive, "contoso")
    assert table["kind"].tolist() == ["plan", "run"] and set(table["seal"]) == {"intact, unsigned"}
    plan, run = records.record_dirs(archive, "contoso")
    assert "a PLAN (apply: false)" in record_views.describe(plan).splitlines()[0]
    assert "kind: plan; seal: intact, unsigned" in record_views.describe(plan)
    assert "PLAN" not in record_views.describe(run).splitlines()[0] and "kind: run;" in record_views.describe(run)


def test_plan_summarizes_with_terraforms_markers_and_its_detailed_exit_code(tmp_path, demo_raw, capsys):
    code, _ = run_cli(tmp_path, demo_raw, "--detailed-exitcode", command="plan")
    out = capsys.readouterr().out
    assert code == 2  # changes pending
    assert "Plan: 6 to create, 2 to update, 0 to remove; 0 unchanged." in out
    assert any(line.startswith("+  application ") for line in out.splitlines())
    assert any(line.startswith("~  authenticated SMTP ") for line in out.splitlines())
    configured = yaml.safe_load((ROOT / "params/demo/fabrikam.yaml").read_text())  # already configured: nothing to do
    code, _ = run_cli(tmp_path, configured, "--detailed-exitcode", command="plan")
    assert code == 0 and "Plan: 0 to create, 0 to update, 0 to remove; 8 unchanged." in capsys.readouterr().out
    demo_raw["tenant_id"] = "nope"  # an error is 1, never the 2 of pending changes
    assert run_cli(tmp_path, demo_raw, "--detailed-exitcode", command="plan")[0] == 1
    assert run_cli(tmp_path, demo_raw, command="plan")[0] == 2  # without the flag, invalid input stays 2
    with pytest.raises(SystemExit) as stopped:
        cli.main(["plan", "--detailed-exitcode", "--no-such-option"])
    assert stopped.value.code == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.startswith("runbook 0.")


def test_bad_parameter_file_sends_and_writes_nothing(tmp_path, live_raw, sandbox, capsys):
    live_raw["tenant_id"] = "nope"
    live_raw["webex"]["callback_url"] = "https://contoso.us.webexconnect.io/callbak"
    live_raw["application"]["secret_lifetime_days"] = 0
    code, archive = run_cli(tmp_path, live_raw)
    err = capsys.readouterr().err
    assert code == 2
    for field in ("tenant_id", "webex.callback_url", "application.secret_lifetime_days"):
        assert field in err
    assert not archive.exists()
    assert sandbox.tenant.requests == []


def test_replay_without_a_recording_fails_naming_the_request(tmp_path, demo_raw, capsys):
    demo_raw["recordings"] = str(tmp_path / "empty")
    code, archive = run_cli(tmp_path, demo_raw)
    assert code == 1
    [m] = manifest(archive)
    assert [s["status"] for s in m["steps"]] == ["ok", "failed", "skipped", "skipped", "skipped", "ok"]
    assert m["steps"][5]["facts"]["diagnosis_source"] == "this run's failures"
    error = m["steps"][1]["error"]
    assert "no recorded answer for GET https://login.microsoftonline.com/" in error
    assert "02_azure_app_registration.yaml" in error and "make recordings" in error
    assert "Traceback" not in (next((archive / "contoso").glob("*/02_azure_app_registration.html")).read_text())


def test_a_run_talks_to_its_kernel_over_ipc_and_leaves_no_socket_behind(tmp_path):
    """No kernel of the kit listens on TCP, where any account on the machine could listen in (and ipykernel warns)."""
    before = set(Path("/tmp").glob("runbook-kernel-*"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runbook_lib.cli",
            "run",
            str(DEMO),
            "--steps",
            "01_webex_connect_app",
            "--archive",
            str(tmp_path / "archive"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "TCP without encryption" not in done.stderr
    assert set(Path("/tmp").glob("runbook-kernel-*")) == before


def test_no_device_code_text_in_a_replay_and_a_simulated_sign_in_in_the_sandbox(tmp_path, demo_raw, capsys):
    """A replay signs nobody in; a sandbox signs in by itself: neither may send anyone to Microsoft's real page."""
    replay = runner.run(params.validate(demo_raw), archive=tmp_path / "a", steps=["02_azure_app_registration"])
    assert replay.ok and "devicelogin" not in (replay.record / "02_azure_app_registration.ipynb").read_text()
    trainee = yaml.safe_load((ROOT / "params" / "training" / "trainee.yaml").read_text())
    trainee.update(tenant="signin-trainee", secret_store={"file": str(tmp_path / "t.secret")})
    state.reset("signin-trainee")
    sandbox = runner.run(params.validate(trainee), archive=tmp_path / "a", steps=["02_azure_app_registration"])
    page = (sandbox.record / "02_azure_app_registration.ipynb").read_text()
    assert sandbox.ok and "devicelogin" not in page and "Sandbox: a simulated sign-in" in page
