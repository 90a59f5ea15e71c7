"""The trainer's tools: `runbook sandbox status` over a classroom of trainees, and `break --list` describing
every fault from the one list (data/faults.yaml) the sandbox implements."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from runbook_lib import cli
from runbook_lib.config import params, registry
from runbook_lib.engine.results import StepRecord
from runbook_lib.records import store as records
from runbook_lib.running import runner
from runbook_lib.sandbox import FAULT_NAMES, mistakes, state
from runbook_lib.steps import diagnose

from conftest import CANARY, ROOT

pytestmark = pytest.mark.e2e


# --- break --list: one description per fault, the same names as the implementation -------------------


def test_every_fault_is_described_and_implemented_alike():
    assert list(mistakes.catalogue()) == list(FAULT_NAMES)
    assert set(mistakes.FAULTS) == set(FAULT_NAMES)
    for name, fault in mistakes.FAULTS.items():  # a portal fix to make exactly when the kit makes none
        assert (fault.repair is not None) == bool(fault.describe.portal), name


def test_troubleshooting_explains_every_code_a_fault_shows():
    for described in mistakes.catalogue().values():
        found = {f.code: f for f in diagnose.diagnose(" ".join(described.codes))}
        assert set(described.codes) <= set(found), described.name
        for code in described.codes:
            assert found[code].fix and found[code].notebook != registry.TROUBLESHOOT, (described.name, code)


def test_break_list_describes_each_fault(capsys):
    assert cli.main(["sandbox", "break", "--list"]) == 0
    out = capsys.readouterr().out
    blocks = {block.splitlines()[0]: block for block in out.strip().split("\n\n")}
    assert list(blocks) == list(FAULT_NAMES)
    for name, described in mistakes.catalogue().items():
        block = blocks[name]
        assert described.breaks in block and described.sees in block and described.notebook in block
        assert ("runbook sandbox repair" in block) == bool(described.portal)
    assert "AADSTS50057" in blocks["mailbox-user-disabled"] and "Unblock sign-in" in blocks["mailbox-user-disabled"]


def test_break_without_a_fault_or_list_is_a_usage_error(capsys):
    assert cli.main(["sandbox", "break"]) == 2
    assert "--list" in capsys.readouterr().err


# --- status: two trainees in one classroom ---------------------------------------------------------------


@pytest.fixture
def classroom(tmp_path, monkeypatch):
    """Two trainees' sandboxes and records, made as trainees make them (steps in a kernel, the trainer's
    faults from the command line): trainee-a configured everything, then its secret was expired and verify
    failed; trainee-b ran steps 1-2, had consent revoked and repaired, then security defaults turned on."""
    monkeypatch.setenv("RUNBOOK_STATE", str(tmp_path / "state"))  # before the kernel starts: it inherits it
    archive = tmp_path / "archive"
    files = {}
    with runner.Kernel() as kernel:

        def run(name, steps):
            raw = yaml.safe_load((ROOT / "params" / "training" / "trainee.yaml").read_text())
            raw.update(tenant=name, secret_store={"file": str(tmp_path / f"{name}.secret")})
            files[name] = tmp_path / f"{name}.yaml"
            files[name].write_text(yaml.safe_dump(raw))
            result = runner.run(
                params.validate(raw), archive=archive, steps=steps, progress=lambda _: None, kernel=kernel
            )
            return [s.status for s in result.steps]

        def sandbox(*args):
            assert cli.main(["sandbox", *args]) == 0

        assert run("trainee-a", list(registry.PROCEDURE)) == ["ok"] * 6
        sandbox("break", str(files["trainee-a"]), "secret-expired")
        assert run("trainee-a", [registry.VERIFY]) == ["failed"]
        assert run("trainee-b", list(registry.PROCEDURE[:2])) == ["ok"] * 2
        sandbox("break", str(files["trainee-b"]), "consent-missing")
        assert run("trainee-b", [registry.APP_REGISTRATION]) == ["ok"]
        sandbox("break", str(files["trainee-b"]), "security-defaults-on")
    # a secret whose value is a canary: the status must never show any of it
    tenant = state.read(state.state_file("trainee-b"))
    tenant.add_password(tenant.trainee_app, "canary", datetime.now(UTC) + timedelta(days=30), f"{CANARY}-secret-value")
    state.save("trainee-b", tenant)
    return archive, files


def secrets_of_the_classroom(tmp_path: Path) -> list[str]:
    """Every secret value a status could leak: the client secrets and signing keys the sandboxes hold, and
    what the trainees' secret stores hold."""
    found = [CANARY]
    for path in (tmp_path / "state" / "sandbox").glob("*.json"):
        data = json.loads(path.read_text())
        found += [*data["secret_values"].values(), data["key"]]
    found += [p.read_text().strip() for p in tmp_path.glob("*.secret")]
    return found


def test_status_shows_each_trainee_steps_faults_and_last_verify_and_never_a_secret(classroom, tmp_path, capsys):
    archive, _ = classroom
    capsys.readouterr()
    assert cli.main(["sandbox", "status", "--archive", str(archive)]) == 0
    table = capsys.readouterr().out
    assert cli.main(["sandbox", "status", "--archive", str(archive), "--json"]) == 0
    listed = {s["trainee"]: s for s in json.loads(capsys.readouterr().out)}

    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert set(rows) == set(listed) == {"trainee-a", "trainee-b"}
    assert "01 02 03 04 05 06" in rows["trainee-a"] and "secret-expired (still broken)" in rows["trainee-a"]
    assert "UTC 01 02 " in rows["trainee-b"] and "UTC 01 02 03" not in rows["trainee-b"]
    assert "consent-missing (repaired), security-defaults-on (still broken)" in rows["trainee-b"]
    assert "no record of a verify" in rows["trainee-b"]

    a, b = listed["trainee-a"], listed["trainee-b"]
    assert a["steps_done"] == list(registry.PROCEDURE) and b["steps_done"] == list(registry.PROCEDURE[:2])
    assert [(f["fault"], f["state"]) for f in b["faults"]] == [
        ("consent-missing", "repaired"),
        ("security-defaults-on", "still broken"),
    ]
    assert b["tenant"]["security defaults"] is True and b["tenant"]["secrets valid"] == 2
    last = a["last_verify"]
    [*_, record] = records.record_dirs(archive, "trainee-a")
    verify = StepRecord.from_json(records.read_manifest(record)["steps"][0])
    assert last["record"] == record.name and last["status"] == "failed"
    assert last["verdicts"] == {v: sum(c.verdict == v for c in verify.checks) for v in last["verdicts"]}
    assert last["verdicts"]["fail"] >= 1
    assert f"failed ({last['verdicts']['pass']} pass" in rows["trainee-a"]

    for secret in secrets_of_the_classroom(tmp_path):
        assert secret not in table and secret not in json.dumps(listed)


def test_status_of_the_trainees_named_by_their_files_or_state_folders(classroom, tmp_path, capsys):
    archive, files = classroom
    capsys.readouterr()
    assert cli.main(["sandbox", "status", "--archive", str(archive), str(files["trainee-b"])]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["trainee-b"]

    other = tmp_path / "other-checkout" / ".runbook"  # a trainee with a kit of their own, reset to a bad state
    state.sandbox_dir(other).mkdir(parents=True)
    (state.sandbox_dir(other) / "trainee-c.json").write_text(json.dumps({"seed": {}}))
    folders = ["--state-dir", str(tmp_path / "state"), "--state-dir", str(other)]
    assert cli.main(["sandbox", "status", "--archive", str(archive), *folders, "--json"]) == 0
    listed = {s["trainee"]: s for s in json.loads(capsys.readouterr().out)}
    assert set(listed) == {"trainee-a", "trainee-b", "trainee-c"}
    assert "an older kit wrote it" in listed["trainee-c"]["problem"]

    assert cli.main(["sandbox", "status", str(ROOT / "params" / "demo" / "contoso.yaml")]) == 2
    assert "not sandbox" in capsys.readouterr().err
