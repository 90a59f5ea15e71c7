"""The trainee's path in sandbox mode: configure a fresh tenant, then for each classic mistake the trainer can
inject (``data/faults.yaml``) break the tenant, see verify fail and troubleshooting explain it by the codes the
fault list names, repair it as the list says, see verify pass. And the same path from one parameter file, as
JupyterLab runs it."""

from __future__ import annotations

import pytest
import yaml

from runbook_lib import cli
from runbook_lib.config import params, registry
from runbook_lib.errors import RunbookError
from runbook_lib.running import runner
from runbook_lib.sandbox import FAULT_NAMES, state
from runbook_lib.sandbox.mistakes import catalogue

from conftest import ROOT

pytestmark = pytest.mark.e2e

TRAINEE = ROOT / "params" / "training" / "trainee.yaml"
VERIFY = ["05_verify", "06_troubleshoot"]
#: what a trainee changes in their parameters to repair a fault, beyond running the notebook the list names
OVERRIDES = {"user-consent-disabled": {"consent": "admin"}}


def test_every_fault_is_described_and_every_override_is_a_fault():
    assert list(catalogue()) == list(FAULT_NAMES) and set(OVERRIDES) <= set(FAULT_NAMES)


def test_a_trainee_breaks_diagnoses_and_repairs_each_classic_mistake(tmp_path, capsys):
    raw = yaml.safe_load(TRAINEE.read_text())
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
        configured = run(list(params.STEP_NAMES))
        assert [s.status for s in configured] == ["ok"] * 6
        verified = configured[4].summary()  # exercise E4 asks which checks pass: the step's line counts them
        assert "; checks: " in verified and " 0 fail, " in verified and " pass, " in verified
        # the trainee's SMTP AUTH test says why it is not tested: the application allows no public client flows
        smtp_auth = {c.check: c for c in configured[4].checks}["SMTP AUTH XOAUTH2"]
        assert smtp_auth.verdict == "not tested" and smtp_auth.code == "smtp_public_client_off", smtp_auth
        assert "Allow public client flows" in smtp_auth.fix and smtp_auth.notebook == ""
        for fault, described in catalogue().items():
            assert cli.main(["sandbox", "break", str(trainee), fault]) == 0
            verify, troubleshoot = run(VERIFY)
            explained = {f.code for f in troubleshoot.findings}
            assert verify.status == "failed" and explained & set(described.codes), (fault, explained)
            # the trainer guide's exercises as written: the trainee repairs with the notebook the diagnosis names
            # (none for a portal setting, which the trainer makes as the administrator)
            named = {f.notebook for f in troubleshoot.findings if f.code == described.codes[0]}
            assert named == {"" if described.portal else described.notebook}, (fault, named)
            if described.portal:  # an administrator's fix in a portal: the trainer plays the administrator
                assert cli.main(["sandbox", "repair", str(trainee), fault]) == 0
            repair = [described.notebook] if described.notebook != "05_verify" else []
            *repaired, verified = run([*repair, "05_verify"], **OVERRIDES.get(fault, {}))
            assert all(s.status == "ok" for s in repaired), (fault, [s.error for s in repaired])
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


def test_a_trainee_runs_every_notebook_from_one_parameter_file(tmp_path):
    """JupyterLab's path: each notebook's parameters cell names the trainee's file (params_file) and nothing else,
    in one kernel without a run's journal, as a trainee's JupyterLab runs them; the six steps configure and verify
    the trainee's sandbox with the file's values, never the cell's demo ones, and the demo store is left alone."""
    raw = yaml.safe_load(TRAINEE.read_text())
    raw.update(tenant="trainee-file", secret_store={"file": str(tmp_path / "trainee.secret")})
    trainee = tmp_path / "trainee-file.yaml"
    trainee.write_text(yaml.safe_dump(raw))
    demo_store = ROOT / "params" / "demo" / "secrets" / "contoso.secret"
    before = demo_store.read_bytes()
    state.reset("trainee-file")
    with runner.Kernel() as kernel:
        results = [
            runner._execute(
                registry.BY_NAME[name],
                ROOT / "notebooks",
                {"params_file": str(trainee)},
                runner.CELL_TIMEOUT,
                kernel,
                {},
                tmp_path / "stop",
            )[1]
            for name in params.STEP_NAMES
        ]
    assert [r.status for r in results] == ["ok"] * 6, [r.error for r in results]
    mailbox = results[2].changes  # the file says adminapi (applied), the cell powershell (only planned)
    assert mailbox and {c.action for c in mailbox} <= {"created", "updated"}, [c.action for c in mailbox]
    assert (tmp_path / "trainee.secret").stat().st_size and demo_store.read_bytes() == before
    assert state.state_file("trainee-file").exists()
