"""A trainee's sandbox state: held by one step, break or repair at a time, so a fault injected during a step is
never wiped out by the step's save; and a damaged state file is named, with `sandbox reset` as the fix, never a
traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from runbook_lib import cli
from runbook_lib.config import params, registry
from runbook_lib.errors import RunbookError
from runbook_lib.sandbox import state
from runbook_lib.sandbox.transport import SandboxTransport

from conftest import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture
def trainee(tmp_path: Path) -> tuple[Path, params.Params]:
    raw = yaml.safe_load((ROOT / "params" / "training" / "trainee.yaml").read_text())
    raw.update(tenant="state-trainee", secret_store={"file": str(tmp_path / "t.secret")})
    file = tmp_path / "trainee.yaml"
    file.write_text(yaml.safe_dump(raw))
    state.reset("state-trainee")
    return file, params.validate(raw)


def test_a_break_during_a_step_waits_for_its_save_and_the_fault_is_kept(trainee, monkeypatch, capsys):
    file, p = trainee
    SandboxTransport(p, registry.WEBEX_VALUES).close()  # the sandbox exists
    monkeypatch.setattr(state, "LOCK_WAIT_SECONDS", 0.3)
    running = SandboxTransport(p, registry.APP_REGISTRATION)  # a step holds the sandbox from its load to its save
    try:
        assert cli.main(["sandbox", "break", str(file), "security-defaults-on"]) == 1
        assert "in use (step 02_azure_app_registration" in capsys.readouterr().err
    finally:
        running.close()
    assert cli.main(["sandbox", "break", str(file), "security-defaults-on"]) == 0
    SandboxTransport(p, registry.APP_REGISTRATION).close()  # the next step loads the fault, and saves it back
    assert [i["fault"] for i in state.read(state.state_file("state-trainee")).injected] == ["security-defaults-on"]


@pytest.mark.parametrize(
    "content",
    ["this is not json", "null", "[1, 2]", '{"seed": 5}', "folder"],
    ids=["garbage", "null", "a list", "missing fields", "a folder"],
)
def test_a_damaged_state_file_is_named_with_reset_as_the_fix(trainee, content, capsys):
    file, p = trainee
    SandboxTransport(p, registry.WEBEX_VALUES).close()
    path = state.state_file("state-trainee")
    data = json.loads(path.read_text())
    path.unlink()
    if content == "folder":
        path.mkdir()
    elif content == '{"seed": 5}':
        path.write_text(json.dumps({**data, "seed": 5, "service_principals": "none"}))
    else:
        path.write_text(content)
    with pytest.raises(RunbookError) as damaged:
        state.read(path)
    assert "sandbox reset" in damaged.value.fix and "Traceback" not in damaged.value.explain()
    assert cli.main(["sandbox", "break", str(file), "security-defaults-on"]) == 1
    err = capsys.readouterr().err
    assert "state-trainee" in err and "sandbox reset" in err
    if content == "folder":
        assert cli.main(["sandbox", "reset", str(file)]) == 1 and path.is_dir()  # not the kit's file: left
    else:
        assert cli.main(["sandbox", "reset", str(file)]) == 0 and not path.exists()
