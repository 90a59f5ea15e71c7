"""Steps' functions against a simulated tenant in live mode, without a kernel: the fine-grained cases."""

from __future__ import annotations

from pathlib import Path

import msal
import pytest
import yaml

from runbook_lib.config import params, registry, webex
from runbook_lib.context.checks import Checks
from runbook_lib.context.step import Step
from runbook_lib.engine.results import StepRecord
from runbook_lib.errors import AuthError, GraphError, StepFailed
from runbook_lib.sandbox import mistakes
from runbook_lib.sandbox.server import serve
from runbook_lib.sandbox.state import TraineeTenant
from runbook_lib.sandbox.tenant import SimulatedTenant
from runbook_lib.steps import diagnose, verify
from runbook_lib.tenant import entra, exchange, exchange_admin, webex_form
from runbook_lib.wire import auth

from conftest import ROOT

pytestmark = pytest.mark.e2e

AUTOMATION = "9a1f0c3e-5b7d-4e2a-8c6f-1d3b5a7e9f00"


def seed_of(tenant: str) -> dict:
    return yaml.safe_load((ROOT / "recordings" / tenant / "tenant.yaml").read_text())


def step_for(tenant: str, sandbox, tmp_path: Path, step: str = registry.APP_REGISTRATION, **overrides) -> Step:
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
    return Step(step, validated)


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
        perms = entra.permissions(step)
        change, app = entra.ensure_application(step, perms, entra.find_application(step))
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
            entra.permissions(step)
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
            exchange_admin.invoke(step, "Get-Mailbox", {"Identity": "nobody@wingtip.onmicrosoft.com"})
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
        checks = Checks(step)
        verify.secret_and_token(step, checks, entra.find_application(step))
    secret = next(c for c in checks.items if c.check == "client secret")
    token = next(c for c in checks.items if c.check == "app-only token")
    assert secret.verdict == verdict
    assert token.verdict == ("fail" if days < 0 else "pass")
    if days < 0:
        assert "AADSTS7000222" in token.detail and token.notebook == "02_azure_app_registration"


# --- the trainer's faults, as a trainee meets them -----------------------------------------------------------

SECRET = "Cfg8Q~" + "v" * 34
FORWARDING = "a41a0ba3566ed2091155f13e48e6d4f8@mail-us.imiconnect.io"


def configured_seed() -> dict:
    """The contoso tenant as steps 2 and 3 leave it, its application allowing public client flows so that
    verify signs the mailbox in through it (verify.mailbox_sign_in), as Generate Token does."""
    seed = seed_of("contoso")
    seed["users"][0].update(smtp_auth_disabled=False, forwarding=f"smtp:{FORWARDING}", keep_copy=True)
    policy = "Webex Connect forwarding"
    seed["outbound_policies"] = [{"Name": policy, "AutoForwardingMode": "On"}]
    rule = {"Name": policy, "HostedOutboundSpamFilterPolicy": policy, "State": "Enabled", "Priority": 0}
    seed["outbound_rules"] = [{**rule, "From": [seed["users"][0]["upn"]]}]
    seed["applications"] = [
        {
            "display_name": "Webex Connect Email",
            "public_client": True,
            "service_principal": True,
            "redirect_uris": ["https://contoso.us.webexconnect.io/callback"],
            "implicit_access_token": True,
            "exchange_roles": ["Mail.Send"],
            "exchange_scopes": ["SMTP.Send"],
            "graph_scopes": ["offline_access"],
            "granted_roles": ["Mail.Send"],
            "granted_scopes": ["SMTP.Send"],
            "granted_graph_scopes": ["offline_access"],
            "secrets": [{"expires_in_days": 100, "value": SECRET}],
        }
    ]
    return seed


def verify_step(sandbox, tmp_path: Path) -> Step:
    """Step 5 with the secret store step 2 left (the application's secret, until step 2 replaces it)."""
    store = tmp_path / "store.secret"
    if not store.exists():
        store.write_text(SECRET)
        store.chmod(0o600)
    overrides = {"verify": {"mailbox_sign_in": True}, "mailbox": {"apply_with": "adminapi"}}
    return step_for("contoso", sandbox, tmp_path, registry.VERIFY, secret_store={"file": str(store)}, **overrides)


def what_verify_shows(sandbox, tmp_path: Path) -> tuple[list, str, str]:
    """Verify's checks (none if it stopped), the error it stopped with, and the answer to the mailbox's own
    sign-in through the application (as at Generate Token): what troubleshooting is given."""
    step = verify_step(sandbox, tmp_path)
    try:
        verify.run_checks(step)
        stopped = ""
    except StepFailed as error:
        stopped = error.explain()
    _, refused, _ = verify.mailbox_token(step, entra.find_application(step))
    step.finish()
    return step.result.checks, stopped, refused


#: fault -> what verify shows for it: the check that must not pass, or the error it stops with
PORTAL_FAULTS = {
    "mailbox-user-disabled": ("", "is disabled"),
    "user-not-assigned": ("user assignment", ""),
    "security-defaults-on": ("security defaults", ""),
}


def test_a_configured_sandbox_verifies_clean(tmp_path):
    with serve(TraineeTenant(configured_seed(), salt="")) as sandbox:
        checks, stopped, refused = what_verify_shows(sandbox, tmp_path)
    assert not stopped and not refused
    assert {c.check: c.verdict for c in checks}["SMTP AUTH XOAUTH2"] == "pass"
    assert [c.check for c in checks if c.verdict not in ("pass", "not tested")] == []


@pytest.mark.parametrize("fault", PORTAL_FAULTS)
def test_a_portal_fault_shows_its_error_troubleshooting_explains_it_and_its_repair_clears_it(tmp_path, fault):
    tenant = TraineeTenant(configured_seed(), salt="")
    mistake = mistakes.FAULTS[fault]
    mistake.inject(tenant)
    assert mistake.in_effect(tenant) is True
    check, error = PORTAL_FAULTS[fault]
    with serve(tenant) as sandbox:
        checks, stopped, refused = what_verify_shows(sandbox, tmp_path)
        shown = [f"[{c.code}] {c.check}: {c.detail}" for c in checks if c.verdict != "pass"]
        if check:
            assert {c.check: c.verdict for c in checks}[check] != "pass", shown
        assert error in stopped
        findings = {f.code: f for f in diagnose.diagnose("\n".join([*shown, stopped, refused]))}
        for code in mistake.describe.codes:  # every code the fault's description promises, each explained
            assert code in findings and findings[code].notebook != registry.TROUBLESHOOT, (code, shown, refused)
        if fault != "security-defaults-on":  # the identity platform's own answer, as msal reports it
            assert f"invalid_grant: {mistake.describe.codes[0]}:" in refused

        assert mistake.repair is not None
        mistake.repair(tenant)  # as the administrator's click in the portal would
        assert mistake.in_effect(tenant) is False
        checks, stopped, refused = what_verify_shows(sandbox, tmp_path)
    assert not stopped and not refused
    assert {c.check: c.verdict for c in checks}["SMTP AUTH XOAUTH2"] == "pass"
    assert [c.check for c in checks if c.verdict == "fail"] == []


def test_webex_connects_token_refresh_is_refused_while_the_mailbox_account_is_disabled(tmp_path):
    tenant = TraineeTenant(configured_seed(), salt="")
    disabled = mistakes.FAULTS["mailbox-user-disabled"]
    with serve(tenant) as sandbox:
        step = verify_step(sandbox, tmp_path)
        app_id = entra.find_application(step)["appId"]
        scope = [step.endpoints.smtp_scope]

        def client() -> msal.PublicClientApplication:  # a new one each time: msal keeps a refusal for a minute
            return msal.PublicClientApplication(
                app_id, authority=step.endpoints.authority, http_client=step.transport.session, instance_discovery=False
            )

        refresh = auth.device_flow(client(), scope, step.transport, lambda _: None)["refresh_token"]
        disabled.inject(tenant)
        refused = client().acquire_token_by_refresh_token(refresh, scope)
        assert refused["error"] == "invalid_grant" and refused["error_codes"] == [50057]
        assert "AADSTS50057: The user account is disabled." in refused["error_description"]
        assert disabled.repair is not None
        disabled.repair(tenant)
        assert "access_token" in client().acquire_token_by_refresh_token(refresh, scope)  # the same token again
        step.finish()


def test_a_deleted_secret_is_found_explained_and_replaced_by_step_2(tmp_path):
    tenant = TraineeTenant(configured_seed(), salt="")
    tenant.store = {"file": str(tmp_path / "store.secret")}  # as sandbox mode keeps it
    deleted = mistakes.FAULTS["secret-deleted"]
    with serve(tenant) as sandbox:
        checks, stopped, _ = what_verify_shows(sandbox, tmp_path)
        assert [c.check for c in checks if c.verdict == "fail"] == [] and not stopped
        deleted.inject(tenant)
        assert deleted.in_effect(tenant) is True
        checks, stopped, _ = what_verify_shows(sandbox, tmp_path)
        assert {c.check for c in checks if c.verdict == "fail"} == {"client secret", "app-only token"}
        given = diagnose.failure_lines([StepRecord(registry.VERIFY, "failed", checks=checks)])  # as 06 gets them
        assert set(deleted.describe.codes) <= {f.code for f in diagnose.diagnose("\n".join(given))}

        step = step_for("contoso", sandbox, tmp_path, secret_store=tenant.store)
        assert entra.ensure_secret(step, entra.find_application(step)).action == "created"  # step 2's repair
        step.finish()
        assert deleted.in_effect(tenant) is False
        checks, stopped, _ = what_verify_shows(sandbox, tmp_path)
    assert [c.check for c in checks if c.verdict == "fail"] == [] and not stopped
