"""Steps' functions against a simulated tenant in live mode, without a kernel: the fine-grained cases."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runbook_lib import auth, entra, exchange, params, verify, webex, webex_form
from runbook_lib.errors import AuthError, GraphError, StepFailed
from runbook_lib.sandbox.server import serve
from runbook_lib.sandbox.tenant import SimulatedTenant
from runbook_lib.step import Step

from conftest import ROOT

pytestmark = pytest.mark.e2e

AUTOMATION = "9a1f0c3e-5b7d-4e2a-8c6f-1d3b5a7e9f00"


def seed_of(tenant: str) -> dict:
    return yaml.safe_load((ROOT / "recordings" / tenant / "tenant.yaml").read_text())


def step_for(tenant: str, sandbox, tmp_path: Path, **overrides) -> Step:
    raw = params.load(ROOT / "params" / "demo" / f"{tenant}.yaml").public()
    raw.update(
        mode="live",
        endpoints=sandbox.endpoints(),
        recordings=str(tmp_path / "rec"),
        secret_store={"file": str(tmp_path / "store.secret")},
    )
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    validated = params.validate(raw)
    auth.clear_cache(validated)  # as `runbook run` does: each simulated tenant signs its own tokens
    return Step("02_azure_app_registration", validated)


def test_expired_secrets_are_removed_only_when_asked(tmp_path):
    with serve(SimulatedTenant(seed_of("northwind"), pending_polls=0)) as sandbox:
        step = step_for("northwind", sandbox, tmp_path)
        app = entra.find_application(step)
        assert entra.prune_expired_secrets(step, app) == []
        assert list(entra.secrets_table(step, app)["state"]) == ["expired", "expiring soon"]
        step = step_for("northwind", sandbox, tmp_path, application={"remove_expired_secrets": True})
        app = entra.find_application(step)
        [removed] = entra.prune_expired_secrets(step, app)
        assert removed.action == "removed" and removed.before["expired"] < step.clock.now().date().isoformat()
        assert list(entra.secrets_table(step, entra.find_application(step))["state"]) == ["expiring soon"]


def test_a_fault_that_persists_fails_bounded_with_its_request_id(tmp_path):
    seed = seed_of("contoso")
    seed["faults"] = [
        {
            "method": "PATCH",
            "path": r"^/v1.0/servicePrincipals\(appId=",
            "status": 400,
            "times": 99,
            "code": "Request_BadRequest",
            "detail": "NoBackingApplicationObject",
        }
    ]
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        step = step_for("contoso", sandbox, tmp_path)
        step.transport.clock.sleep = lambda seconds: None  # the waits are asserted, not slept
        exo = entra.exchange_online(step)
        change, app = entra.ensure_application(step, exo, entra.find_application(step))
        with pytest.raises(GraphError) as caught:
            entra.ensure_service_principal(step, app, change)
    assert "NoBackingApplicationObject" in caught.value.codes and caught.value.request_id
    assert "request-id" in str(caught.value) and "run the step again" in caught.value.fix
    assert step.transport.counts.retries == 5


def test_automation_signs_in_with_client_credentials_from_a_secret_reference(tmp_path, monkeypatch):
    seed = seed_of("contoso")
    seed["operator"]["automation"] = {"client_id": AUTOMATION, "secret": "Auto8Q~automation-secret-value"}
    operator = {"sign_in": "client_credentials", "client_id": AUTOMATION, "secret": {"env": "RUNBOOK_TEST_OPERATOR"}}
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        monkeypatch.setenv("RUNBOOK_TEST_OPERATOR", "Auto8Q~automation-secret-value")
        step = step_for("contoso", sandbox, tmp_path, operator=operator)
        assert "AppRoleAssignment.ReadWrite.All" in set(entra.check_operator(step)["permission"])
        monkeypatch.setenv("RUNBOOK_TEST_OPERATOR", "wrong-value")
        auth.clear_cache(step.params)  # as `runbook run` does at the start of every run
        step = step_for("contoso", sandbox, tmp_path, operator=operator)
        with pytest.raises(AuthError) as caught:
            step.signin.token()
    assert caught.value.codes == [7000215] and "Value, not its Secret ID" in caught.value.fix
    assert "wrong-value" not in str(caught.value)


def test_a_finished_step_sends_nothing_more(tmp_path):
    with serve(SimulatedTenant(seed_of("contoso"), pending_polls=0)) as sandbox:
        step = step_for("contoso", sandbox, tmp_path)
        step.finish()
        with pytest.raises(Exception, match="has finished"):
            entra.exchange_online(step)
        assert sandbox.tenant.requests == []


def mailbox_step(seed: dict, sandbox, tmp_path: Path) -> Step:
    raw = params.load(ROOT / "params" / "demo" / "wingtip-admin.yaml").public()
    raw.update(
        mode="live",
        endpoints=sandbox.endpoints(),
        recordings=str(tmp_path / "rec"),
        secret_store={"file": str(tmp_path / "store.secret")},
    )
    validated = params.validate(raw)
    auth.clear_cache(validated)
    return Step("03_office365_mailbox", validated)


def test_exchange_refusal_names_the_role_needed(tmp_path):
    seed = seed_of("wingtip-admin")
    seed["operator"]["exchange_admin"] = False  # Exchange answers 403 with a body of NUL bytes
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        step = mailbox_step(seed, sandbox, tmp_path)
        with pytest.raises(StepFailed) as caught:
            exchange.read_state(step)
    assert "refused Get-Mailbox (HTTP 403)" in str(caught.value) and "Exchange Administrator" in caught.value.fix


def test_exchange_errors_show_the_nested_message(tmp_path):
    seed = seed_of("wingtip-admin")
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        step = mailbox_step(seed, sandbox, tmp_path)
        with pytest.raises(StepFailed) as caught:
            exchange.invoke(step, "Get-Mailbox", {"Identity": "nobody@wingtip.onmicrosoft.com"})
    assert "couldn't be found" in str(caught.value) and "Invalid Operation" not in str(caught.value)


def test_second_adminapi_run_changes_nothing(tmp_path):
    seed = seed_of("wingtip-admin")
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        first = mailbox_step(seed, sandbox, tmp_path)
        exchange.configure(first)
        second = mailbox_step(seed, sandbox, tmp_path)
        exchange.configure(second)
    assert [c.action for c in first.result.changes] == ["updated", "updated", "created", "created"]
    assert [c.action for c in second.result.changes] == ["unchanged"] * 4
    assert second.transport.counts.writes == 0


def test_upn_given_as_an_alias_is_caught(tmp_path):
    seed = seed_of("contoso")
    seed["users"] = [{"upn": "jane.doe@contoso.onmicrosoft.com", "mail": "support@contoso.onmicrosoft.com"}]
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        step = step_for("contoso", sandbox, tmp_path)
        with pytest.raises(StepFailed) as caught:
            exchange.check_mailbox_user(step)
    assert "not its user principal name" in str(caught.value)
    assert "jane.doe@contoso.onmicrosoft.com" in caught.value.fix


def test_webex_form_values_show_where_the_secret_is_never_the_secret(tmp_path):
    seed = seed_of("fabrikam")
    value = (ROOT / "params" / "demo" / "secrets" / "fabrikam.secret").read_text()
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        step = step_for("fabrikam", sandbox, tmp_path, secret_store={"file": "params/demo/secrets/fabrikam.secret"})
        table = webex_form.form_values(step).set_index("field")["value"]
    app = next(iter(SimulatedTenant(seed).applications))
    assert table["Client ID"] == app["appId"]
    assert table["Scope"] == "offline_access https://outlook.office.com/SMTP.Send"
    assert table["Authorization URL"].endswith(f"/{seed['tenant_id']}/oauth2/v2.0/authorize")
    assert table["Access Token URL"] == table["Refresh Token URL"]
    assert "hint Fab..." in table["Client Secret"]
    saved = step.result.artifacts[webex_form.VALUES_FILE]
    assert value not in saved and value not in table.to_string()


def test_reveal_button_shows_the_secret_only_on_click(tmp_path, demo_raw):
    store = tmp_path / "store.secret"
    store.write_text("Abc8Q~the-value")
    store.chmod(0o600)
    demo_raw.update(recordings=str(tmp_path), secret_store={"file": str(store)})
    step = Step("04_webex_connect_email_app", params.validate(demo_raw))
    box = webex_form.reveal_secret(step)
    button, shown = box.children
    assert shown.value == ""
    button.click()
    assert "Abc8Q~the-value" in shown.value and button.description == "Hide"
    button.click()
    assert shown.value == ""
    step.finish()


def test_checklist_records_who_confirmed_what(tmp_path, demo_raw):
    demo_raw.update(recordings=str(tmp_path), checklist={"confirmed_by": "Ana", "done": ["saved", "registered"]})
    step = Step("04_webex_connect_email_app", params.validate(demo_raw))
    boxes = webex_form.checklist(step).children
    boxes[0].value = True  # ticked in JupyterLab
    table = webex_form.checklist_table(step).set_index("action")
    assert table["confirmed"].tolist() == [True, False, False, True, True]
    assert table.loc[webex.CHECKLIST["saved"], "by"] == "Ana"
    step.finish()


@pytest.mark.parametrize("days, verdict", [(200, "pass"), (10, "warn"), (-1, "fail")])
def test_secret_expiry_verdicts(tmp_path, days, verdict):
    seed = seed_of("fabrikam")
    seed["applications"][0]["secrets"][0]["expires_in_days"] = days
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        step = step_for("fabrikam", sandbox, tmp_path, secret_store={"file": "params/demo/secrets/fabrikam.secret"})
        checks = verify.Checks(step)
        verify.secret_and_token(step, checks, entra.find_application(step))
    secret = next(c for c in checks.items if c.check == "client secret")
    token = next(c for c in checks.items if c.check == "app-only token")
    assert secret.verdict == verdict
    assert token.verdict == ("fail" if days < 0 else "pass")
    if days < 0:
        assert "AADSTS7000222" in token.detail and token.notebook == "02_azure_app_registration"
