"""Live mode as an engineer runs it against a tenant that behaves as Microsoft documents (the simulated tenant,
served on loopback): host overrides without a proxy, the default device-code sign-in, a mailbox that is not the
operator's, list queries that lag behind creates, answers lost on the way, optional reads that fail."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from runbook_lib.config import params, secrets
from runbook_lib.context.checks import Checks
from runbook_lib.context.step import Step
from runbook_lib.records import store as records
from runbook_lib.running import runner
from runbook_lib.sandbox.server import serve
from runbook_lib.sandbox.tenant import SimulatedTenant
from runbook_lib.steps import verify
from runbook_lib.tenant import entra, exchange
from runbook_lib.wire import auth

from conftest import ROOT

pytestmark = pytest.mark.e2e
STEP1, STEP2, STEP4 = "01_webex_connect_app", "02_azure_app_registration", "04_webex_connect_email_app"


def seed_of(tenant: str) -> dict:
    return yaml.safe_load((ROOT / "recordings" / tenant / "tenant.yaml").read_text())


def live_params(tmp_path: Path, endpoints: dict, tenant: str = "contoso", **overrides) -> params.Params:
    raw = copy.deepcopy(params.load(ROOT / "params" / "demo" / f"{tenant}.yaml").public())
    raw.update(
        mode="live",
        endpoints=endpoints,
        recordings=str(tmp_path / "rec"),
        secret_store={"file": str(tmp_path / "secrets" / "client.secret")},
        **overrides,
    )
    validated = params.validate(raw)
    auth.clear_cache(validated)  # as `runbook run` does: each simulated tenant signs its own tokens
    return validated


def run(p: params.Params, tmp_path: Path, steps: list[str] | None = None) -> runner.RunResult:
    return runner.run(p, archive=tmp_path / "archive", steps=steps, progress=lambda _: None)


def test_host_overrides_keep_resources_and_every_step_passes_twice(tmp_path):
    """Overrides for every host (no proxy), device code, consent: user, the mailbox is not the operator's."""
    with serve(SimulatedTenant(seed_of("contoso"), pending_polls=0)) as sandbox:
        p = live_params(tmp_path, sandbox.direct_endpoints())
        assert p.operator.sign_in == "device_code" and p.consent == "user"
        assert p.webex.email_id != seed_of("contoso")["operator"]["upn"]
        first, second = run(p, tmp_path), run(p, tmp_path)
        requests = list(sandbox.tenant.requests)
    assert [s.status for s in first.steps] == ["ok"] * 6, [s.error for s in first.steps]
    assert [s.status for s in second.steps] == ["ok"] * 6
    assert first.writes == 4 and second.writes == 0
    assert all(r.split()[1].startswith("127.0.0.1:") for r in requests)  # every host overridden
    assert not any("mailboxSettings" in r for r in requests)  # delegated: own mailbox only
    manifest = records.read_manifest(second.record)
    assert manifest["operator"]["signed_in"]["name"] == "admin@contoso.onmicrosoft.com"
    assert manifest["previous"]["record"] == first.record.name
    form = next(s for s in second.steps if s.step == STEP4).facts.webex_connect_values
    assert form["Authorization URL"].startswith("https://login.microsoftonline.com/")  # Webex gets the real host
    assert form["SMTP Server"] == "smtp.office365.com"


def test_scopes_name_resources_never_the_overridden_hosts(tmp_path):
    with serve(SimulatedTenant(seed_of("contoso"), pending_polls=0)) as sandbox:
        step = Step(STEP2, live_params(tmp_path, sandbox.direct_endpoints()))
        assert step.signin.scopes[0] == "https://graph.microsoft.com/Application.ReadWrite.All"
        assert step.endpoints.exchange_scope == "https://outlook.office365.com/.default"
        assert "Application.ReadWrite.All" in step.signin.granted()
        step.finish()


def test_list_lag_after_create_leaves_one_application_and_step_4_finds_it(tmp_path):
    seed = seed_of("contoso")
    seed["list_lag_seconds"] = 3600  # name searches miss the new application for the whole test
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        p = live_params(tmp_path, sandbox.endpoints())
        first = run(p, tmp_path, [STEP1, STEP2, STEP4])
        second = run(p, tmp_path, [STEP1, STEP2])
        apps = [a for a in sandbox.tenant.applications if a["displayName"] == "Webex Connect Email"]
    assert len(apps) == 1 and apps[0]["uniqueName"] == p.application.key
    assert [s.status for s in first.steps] == ["ok"] * 3 and second.ok
    assert first.steps[2].facts.webex_connect_values["Client ID"] == apps[0]["appId"]
    assert {c.action for c in second.steps[1].changes} == {"unchanged"}


def test_two_runs_racing_and_a_create_whose_answer_was_lost_end_with_one_application(tmp_path):
    seed = seed_of("contoso")
    seed["faults"] = [{"method": "PATCH", "path": r"^/v1.0/applications\(uniqueName=", "reset": True, "after": True}]
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        steps = []
        for machine in ("a", "b"):  # two operators that both found no application, before either created it
            step = Step(STEP2, live_params(tmp_path / machine, sandbox.endpoints()))
            perms = entra.permissions(step)
            steps.append((step, perms, entra.find_application(step)))
        changes = [entra.ensure_application(step, perms, None)[0] for step, perms, found in steps]
        apps = [a for a in sandbox.tenant.applications if a["displayName"] == "Webex Connect Email"]
    assert [found for _, _, found in steps] == [None, None]
    assert len(apps) == 1
    assert [c.action for c in changes] == ["updated", "updated"]  # the lost create, then the racing run: both 204
    assert "it existed already" in changes[0].summary


def test_a_failed_optional_read_is_a_warning_and_a_slow_read_is_retried(tmp_path):
    seed = seed_of("contoso")
    seed["faults"] = [
        {
            "method": "GET",
            "path": "^/v1.0/policies/identitySecurityDefaultsEnforcementPolicy$",
            "status": 403,
            "code": "Authorization_RequestDenied",
            "times": 9,
            "message": "Insufficient privileges to complete the operation.",
        },
        {"method": "GET", "path": "^/v1.0/users/", "delay": 3},
    ]
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        step = Step("03_office365_mailbox", live_params(tmp_path, sandbox.endpoints(), network={"read_timeout": 1}))
        table = exchange.check_mailbox_user(step)
        step.finish()
    assert table.loc["security defaults", "value"] == "not read (see the warnings)"
    [warning] = step.facts.warnings
    assert "security defaults could not be read" in warning and "Authorization_RequestDenied" in warning
    assert [w["code"] for w in step.transport.counts.waits] == ["ReadTimeout"]


def test_a_secret_that_matches_none_of_the_application_is_told_apart_and_not_waited_for(tmp_path):
    with serve(SimulatedTenant(seed_of("contoso"), pending_polls=0)) as sandbox:
        p = live_params(tmp_path, sandbox.endpoints())
        assert run(p, tmp_path, [STEP1, STEP2]).ok
        secrets.write(p.secret_store, "Old8Q~a-secret-removed-long-ago-from-the-app")
        step = Step("05_verify", p)
        checks = Checks(step)
        verify.secret_and_token(step, checks, entra.find_application(step))
        step.finish()
    secret = next(c for c in checks.items if c.check == "client secret")
    assert secret.verdict == "fail" and secret.code == "secret_no_match" and secret.notebook == STEP2
    assert "Value, not its Secret ID" not in secret.fix
    assert step.transport.counts.retries == 0


def test_a_brand_new_secret_is_waited_for_within_bounds_saying_so(tmp_path, monkeypatch, capsys):
    seed = seed_of("contoso")
    seed["secret_lag_seconds"] = 2
    monkeypatch.setattr(auth, "FIRST_WAIT", 1.0)
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        p = live_params(tmp_path, sandbox.endpoints())
        assert run(p, tmp_path, [STEP1, STEP2]).ok
        step = Step("05_verify", p)
        checks = Checks(step)
        verify.secret_and_token(step, checks, entra.find_application(step))
        step.finish()
    token = next(c for c in checks.items if c.check == "app-only token")
    assert token.verdict == "pass"
    waits = step.transport.counts.waits
    assert waits and {w["code"] for w in waits} == {"AADSTS7000215"} and sum(w["wait_seconds"] for w in waits) <= 300
    assert "does not honour the new secret yet" in capsys.readouterr().out


def _verify_fabrikam(tmp_path: Path, seed: dict, **verify_options) -> tuple[Step, SimulatedTenant]:
    """Step 5 live against the configured fabrikam tenant as ``seed`` changes it, with the store's secret."""
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        p = live_params(tmp_path, sandbox.endpoints(), tenant="fabrikam", verify=verify_options)
        secrets.write(p.secret_store, seed["applications"][0]["secrets"][0]["value"])
        step = Step("05_verify", p)
        verify.run_checks(step)
        step.finish()
        return step, sandbox.tenant


def test_the_mailbox_sign_in_records_the_consent_it_made_and_sends_the_test_message(tmp_path):
    seed = seed_of("fabrikam")
    del seed["applications"][0]["consented_by"]  # nobody has run Generate Token yet
    step, tenant = _verify_fabrikam(tmp_path, seed, mailbox_sign_in=True, test_message_to="webex-test@fabrikam.example")
    checks = {c.check: c for c in step.result.checks}
    assert checks["SMTP.Send consent"].verdict == "warn"  # read before the sign-in: not consented yet
    # one grant per resource: SMTP.Send on Exchange Online; on Microsoft Graph offline_access, with the openid
    # msal adds to every sign-in
    made = sorted(step.facts.grants_made)
    assert len(made) == 2 and all("consented by the mailbox user" in m for m in made)
    assert "scope offline_access openid)" in made[0] and "scope SMTP.Send" in made[1]
    assert any(
        "the test sign-in made a consent" in w and "DELETE /oauth2PermissionGrants" in w for w in step.facts.warnings
    )
    assert [g["consentType"] for g in tenant.grants] == ["Principal", "Principal"]
    assert checks["SMTP AUTH XOAUTH2"].verdict == "pass" and checks["test message"].verdict == "pass"
    assert tenant.sent == [
        {
            "from": "support@fabrikam.onmicrosoft.com",
            "to": ["webex-test@fabrikam.example"],
            "subject": "Webex Connect email app: test message for fabrikam",
        }
    ]


def test_without_consent_and_without_user_consent_the_smtp_login_is_not_tested_and_consent_fails(tmp_path):
    seed = seed_of("fabrikam")
    seed["user_consent"] = "off"
    del seed["applications"][0]["consented_by"]
    step, tenant = _verify_fabrikam(tmp_path, seed, mailbox_sign_in=True)
    checks = {c.check: c for c in step.result.checks}
    assert checks["SMTP.Send consent"].verdict == "fail" and checks["SMTP.Send consent"].code == "user_consent_off"
    smtp_auth = checks["SMTP AUTH XOAUTH2"]
    assert smtp_auth.verdict == "not tested" and "AADSTS65001" in smtp_auth.detail
    assert tenant.grants == [] and step.facts.grants_made == []
