"""The trainee's path in sandbox mode: configure a fresh tenant, then for each classic mistake break the
tenant, see verify fail and troubleshooting name the fix, repair with the step it names, see verify pass."""

from __future__ import annotations

import pytest
import yaml

from runbook_lib import cli, params, runner
from runbook_lib.errors import RunbookError
from runbook_lib.sandbox import FAULT_NAMES, state

from conftest import ROOT

pytestmark = pytest.mark.e2e

VERIFY = ["05_verify", "06_troubleshoot"]
#: fault -> (the failing check, the notebook troubleshooting must name, the steps that repair it, overrides)
EXERCISES = {
    "redirect-uri-typo": (
        "application: Webex Connect Email",
        "02_azure_app_registration",
        ["02_azure_app_registration"],
        {},
    ),
    "consent-missing": ("admin consent: Mail.Send", "02_azure_app_registration", ["02_azure_app_registration"], {}),
    "secret-expired": ("client secret", "02_azure_app_registration", ["02_azure_app_registration"], {}),
    "secret-id-pasted": ("client secret", "04_webex_connect_email_app", ["02_azure_app_registration"], {}),
    "smtp-auth-disabled": (
        "authenticated SMTP: support@contoso.onmicrosoft.com",
        "03_office365_mailbox",
        ["03_office365_mailbox"],
        {},
    ),
    "forwarding-blocked": (
        "outbound spam policy: Webex Connect forwarding",
        "03_office365_mailbox",
        ["03_office365_mailbox"],
        {},
    ),
    "user-consent-disabled": (
        "user consent",
        "02_azure_app_registration",
        ["02_azure_app_registration"],
        {"consent": "admin"},
    ),
}


def test_every_fault_has_an_exercise():
    assert set(EXERCISES) == set(state.FAULTS) == set(FAULT_NAMES)


def test_a_trainee_breaks_diagnoses_and_repairs_each_classic_mistake(tmp_path, capsys):
    raw = yaml.safe_load((ROOT / "params" / "training" / "trainee.yaml").read_text())
    raw.update(tenant="trainee-test", secret_store={"file": str(tmp_path / "trainee.secret")})
    archive = tmp_path / "archive"
    trainee = tmp_path / "trainee-test.yaml"
    trainee.write_text(yaml.safe_dump(raw))

    with runner.Kernel() as kernel:  # one kernel for the whole session, as a trainee's JupyterLab has

        def run(steps, **overrides):
            raw.update(overrides)
            return runner.run(
                params.validate(raw), archive=archive, steps=steps, progress=lambda _: None, kernel=kernel
            ).steps

        state.reset("trainee-test")
        assert [s.status for s in run(list(params.STEP_NAMES))] == ["ok"] * 6
        for fault, (check, notebook, repair, overrides) in EXERCISES.items():
            assert cli.main(["sandbox", "break", str(trainee), fault]) == 0
            verify, troubleshoot = run(VERIFY)
            failed = [c.check for c in verify.checks if c.verdict == "fail"]
            assert verify.status == "failed" and check in failed, (fault, failed)
            assert notebook in {f.notebook for f in troubleshoot.findings}, fault
            *repaired, verified = run([*repair, "05_verify"], **overrides)  # repair, then verify again
            assert all(s.status == "ok" for s in repaired), fault
            assert verified.status == "ok", (fault, verified.error)
    capsys.readouterr()
    assert cli.main(["sandbox", "reset", str(trainee)]) == 0
    assert "trainee-test: sandbox reset" in capsys.readouterr().out


def test_sandbox_commands_act_only_on_a_trainee_file_and_refuse_paths(tmp_path, capsys):
    demo = ROOT / "params" / "demo" / "contoso.yaml"
    assert cli.main(["sandbox", "reset", str(demo)]) == 2  # a replay file: not a training tenant
    assert "not sandbox" in capsys.readouterr().err
    for name in ("../x", "../../archive/contoso/manifest", "a/b"):
        with pytest.raises(RunbookError):
            state.reset(name)
