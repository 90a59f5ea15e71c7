"""Least privilege for Mail.Send (``application.mail_send``) and the tenant-wide SMTP AUTH report, in sandbox
mode with ``mailbox.apply_with: adminapi``: each step's library calls as its notebook makes them, no kernel."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.config import params, registry
from runbook_lib.context.step import Step
from runbook_lib.sandbox import state
from runbook_lib.sandbox.tenant import SimulatedTenant
from runbook_lib.steps import verify
from runbook_lib.tenant import entra, exchange, powershell, rbac

from conftest import ROOT

pytestmark = pytest.mark.e2e

MAILBOX = "support@contoso.onmicrosoft.com"
SCOPE, ASSIGNMENT = f"Webex Connect mailbox {MAILBOX}", f"Webex Connect Mail.Send {MAILBOX}"


def sandbox_raw(tmp_path: Path, tenant: str, mail_send: str, **overrides: Any) -> dict[str, Any]:
    """The contoso demo as a trainee's sandbox tenant of its own (its seed in ``tmp_path``), step 3 through the
    admin API."""
    folder = tmp_path / "rec"
    folder.mkdir(exist_ok=True)
    (folder / "tenant.yaml").write_text((ROOT / "recordings" / "contoso" / "tenant.yaml").read_text())
    state.reset(tenant)
    raw = copy.deepcopy(params.load(ROOT / "params" / "demo" / "contoso.yaml").public())
    raw.update(
        {
            "tenant": tenant,
            "mode": "sandbox",
            "recordings": str(folder),
            "secret_store": {"file": str(tmp_path / "store.secret")},
            "mailbox": {"apply_with": "adminapi"},
            **overrides,
        }
    )
    raw["application"] = {**raw["application"], "mail_send": mail_send}
    return raw


def step_2(raw: dict[str, Any]) -> Step:
    """Notebook 02's calls."""
    step = Step(registry.APP_REGISTRATION, params.validate(raw))
    perms = entra.permissions(step)
    consent = entra.user_consent(step)
    change, app = entra.ensure_application(step, perms, entra.find_application(step))
    sp_change, sp = entra.ensure_service_principal(step, app, change)
    entra.ensure_mail_send_consent(step, sp, perms, sp_change)
    entra.ensure_delegated_consent(step, sp, perms, consent, sp_change)
    entra.ensure_secret(step, app)
    step.finish()
    return step


def step_3(raw: dict[str, Any]) -> Step:
    """Notebook 03's calls."""
    step = Step(registry.MAILBOX, params.validate(raw))
    exchange.check_mailbox_user(step)
    exchange.configure(step)
    step.finish()
    return step


def step_5(raw: dict[str, Any]) -> Step:
    step = Step(registry.VERIFY, params.validate(raw))
    verify.run_checks(step)
    step.finish()
    return step


def configure(raw: dict[str, Any]) -> tuple[Step, Step]:
    return step_2(raw), step_3(raw)


def writes(*steps: Step) -> int:
    return sum(s.transport.counts.writes for s in steps)


def verdicts(step: Step) -> dict[str, str]:
    return {c.check: c.verdict for c in step.result.checks}


def failed(step: Step) -> list[str]:
    return [f"{c.check}: {c.detail}" for c in step.result.checks if c.verdict == "fail"]


def tenant_state(raw: dict[str, Any]) -> SimulatedTenant:
    return state.load(raw["tenant"], Path(raw["recordings"]) / "tenant.yaml")


def mail_send_assignments(tenant: SimulatedTenant) -> list[dict[str, Any]]:
    role = tenant.permission_id("Mail.Send", "Role")
    sp = tenant.service_principal(tenant.application("uniqueName", "webex-connect-email")["appId"])
    return [a for a in tenant.assignments if a["principalId"] == sp["id"] and a["appRoleId"] == role]


def test_scoped_makes_the_scope_and_role_assignment_verifies_and_a_second_run_writes_nothing(tmp_path):
    raw = sandbox_raw(tmp_path, "lp-scoped", "scoped")
    first = configure(raw)
    tenant = tenant_state(raw)
    app = tenant.application("uniqueName", "webex-connect-email")
    sp = tenant.service_principal(app["appId"])
    assert mail_send_assignments(tenant) == []  # no tenant-wide consent in Entra ID
    exchange_online = next(
        e for e in app["requiredResourceAccess"] if e["resourceAppId"] == tenant.exchange_sp["appId"]
    )
    assert [a["type"] for a in exchange_online["resourceAccess"]] == ["Scope"]  # SMTP.Send only
    [pointer] = tenant.exchange_service_principals
    assert (pointer["AppId"], pointer["ObjectId"]) == (app["appId"], sp["id"])
    [scope] = tenant.management_scopes
    assert (scope["Name"], scope["RecipientFilter"]) == (SCOPE, f"PrimarySmtpAddress -eq '{MAILBOX}'")
    [assignment] = tenant.management_role_assignments
    assert assignment["Name"] == ASSIGNMENT and assignment["Role"] == "Application Mail.Send"
    assert assignment["CustomResourceScope"] == SCOPE and assignment["RoleAssignee"] == sp["id"]
    created = [c.resource for c in first[1].result.changes if c.action == "created"]
    assert created[-3:] == [rbac.POINTER, rbac.SCOPE, rbac.ASSIGNMENT]

    checked = step_5(raw)
    assert failed(checked) == []
    shown = verdicts(checked)
    assert shown["Mail.Send in the token's roles"] == "pass" and shown["Mail.Send scope"] == "pass"
    assert shown[f"{rbac.ASSIGNMENT}: {ASSIGNMENT}"] == "pass"
    assert writes(*configure(raw)) == 0 and writes(checked) == 0
    script = first[1].result.artifacts[exchange.SCRIPT_NAME]
    assert "# 4. Mail.Send for this mailbox only" in script and "already as desired" not in script.split("# 4.")[1]


def test_switching_an_existing_tenant_setup_to_scoped_removes_tenant_wide_mail_send(tmp_path):
    raw = sandbox_raw(tmp_path, "lp-switch", "tenant")
    configure(raw)
    assert len(mail_send_assignments(tenant_state(raw))) == 1
    assert verdicts(step_5(raw))["Mail.Send in the token's roles"] == "pass"

    raw["application"]["mail_send"] = "scoped"
    moot = step_5(raw)  # before step 2 runs again: the scope would be moot
    assert verdicts(moot)["Mail.Send in the token's roles"] == "fail"
    [check] = [c for c in moot.result.checks if c.check == "Mail.Send in the token's roles"]
    assert "moot" in check.detail and check.notebook == "02_azure_app_registration"

    two, three = configure(raw)
    removed = [c for c in two.result.changes if c.resource == "admin consent"]
    assert [c.action for c in removed] == ["removed"]
    application = next(c for c in two.result.changes if c.resource == "application")
    assert application.action == "updated" and "without tenant-wide Mail.Send" in application.summary
    assert mail_send_assignments(tenant_state(raw)) == []
    assert failed(step_5(raw)) == []


def test_none_verifies_without_mail_send_and_warns_when_it_is_there(tmp_path):
    raw = sandbox_raw(tmp_path, "lp-none", "none")
    configure(raw)
    tenant = tenant_state(raw)
    assert mail_send_assignments(tenant) == [] and tenant.management_scopes == []
    checked = step_5(raw)
    assert failed(checked) == [] and verdicts(checked)["Mail.Send in the token's roles"] == "pass"
    assert "Mail.Send scope" not in verdicts(checked)

    raw = sandbox_raw(tmp_path, "lp-none-after-tenant", "tenant")
    configure(raw)
    raw["application"]["mail_send"] = "none"
    more = step_5(raw)  # Mail.Send still granted, as the tenant run left it: more than needed, not wrong
    assert failed(more) == []
    warned = {c.check: c.code for c in more.result.checks if c.verdict == "warn"}
    assert warned["Mail.Send in the token's roles"] == "mail_send_more_than_needed"
    assert (
        warned["admin consent: Mail.Send"] == warned["application: Webex Connect Email"] == "mail_send_more_than_needed"
    )


@pytest.mark.parametrize(
    "option, held, verdict, code",
    [
        ("tenant", True, "pass", "mail_send_role"),
        ("tenant", False, "fail", "mail_send_role"),
        ("scoped", True, "fail", "mail_send_scope_moot"),
        ("scoped", False, "pass", "mail_send_scope_moot"),
        ("none", True, "warn", "mail_send_more_than_needed"),
        ("none", False, "pass", "mail_send_more_than_needed"),
    ],
)
def test_each_option_judges_mail_send_in_the_token_by_its_own_rule(option, held, verdict, code):
    judged = verify.mail_send_role(option, ["Mail.Send"] if held else [])
    assert judged[0] == verdict and judged[2] == code


def test_a_scope_changed_by_hand_is_drift_and_step_3_puts_it_back(tmp_path):
    raw = sandbox_raw(tmp_path, "lp-drift", "scoped")
    configure(raw)
    tenant = tenant_state(raw)
    tenant.management_scopes[0]["RecipientFilter"] = "PrimarySmtpAddress -eq 'someone@contoso.onmicrosoft.com'"
    state.save(raw["tenant"], tenant)
    drifted = step_5(raw)
    assert verdicts(drifted)["Mail.Send scope"] == "fail"  # Exchange's own test: the mailbox is out of scope
    assert verdicts(drifted)[f"{rbac.SCOPE}: {SCOPE}"] == "fail"
    fixed = step_3(raw)
    assert [c.action for c in fixed.result.changes if c.resource == rbac.SCOPE] == ["updated"]
    assert failed(step_5(raw)) == []


def test_powershell_mode_writes_the_rbac_section_reading_before_writing(tmp_path):
    raw = sandbox_raw(tmp_path, "lp-script", "scoped", mailbox={"apply_with": "powershell"})
    step_2(raw)
    three = step_3(raw)
    assert writes(three) == 0 and tenant_state(raw).management_scopes == []
    text = three.result.artifacts[exchange.SCRIPT_NAME]
    section = text[text.index("# 4. Mail.Send for this mailbox only") : text.index("# 5. Read only")]
    for read, write in [
        ("Get-ServicePrincipal", "New-ServicePrincipal"),
        ("Get-ManagementScope", "New-ManagementScope"),
        ("Get-ManagementRoleAssignment", "New-ManagementRoleAssignment"),
    ]:
        assert section.index(read) < section.index(write)
    assert f"$scopeName = '{SCOPE}'" in section and f"$assignmentName = '{ASSIGNMENT}'" in section
    assert "Test-ServicePrincipalAuthorization -Identity $appId -Resource $mailbox" in section
    assert "-Role $role" in section and "$role = 'Application Mail.Send'" in section
    planned = [c for c in three.result.changes if c.resource in rbac.SECTIONS]
    assert [c.action for c in planned] == ["planned"] * 3 and all(c.write is None for c in planned)
    checked = step_5(raw)
    assert verdicts(checked)["Mail.Send scope"] == "not tested"
    assert verdicts(checked)["SMTP AUTH, tenant-wide"] == "not tested"


def test_the_script_waits_for_step_2_when_the_application_is_not_there_yet():
    settings = powershell.Settings(MAILBOX, "x@mail-us.imiconnect.io", True, "P", False)
    later = rbac.Target(None, None, "Webex Connect Email", MAILBOX, MAILBOX)
    text = powershell.script(
        settings, tenant="t", version="1", date="2026-01-01", sections={"mail_send_scope"}, scoped=later
    )
    assert "Run step 2, then step 3 again" in text and "New-ManagementRoleAssignment" not in text


@pytest.mark.parametrize(
    "mailbox, tenant, verdict, words",
    [
        (False, True, "pass", "own setting (on) wins"),
        (False, False, "pass", "own setting (on) wins"),
        (None, False, "warn", "follows the tenant-wide setting, which is on"),
        (None, True, "warn", "turns SMTP AUTH off for it"),
        (True, False, "warn", "turns it off for this mailbox"),
        (None, None, "warn", "could not be read"),
    ],
)
def test_the_tenant_wide_smtp_auth_setting_is_judged_for_this_mailbox(mailbox, tenant, verdict, words):
    judged, meaning = verify.smtp_auth_meaning(mailbox, tenant)
    assert judged == verdict and words in meaning


def test_verify_reports_the_tenant_wide_smtp_auth_setting_with_the_deadline(tmp_path):
    raw = sandbox_raw(tmp_path, "lp-smtp", "tenant")
    configure(raw)
    checked = step_5(raw)
    [check] = [c for c in checked.result.checks if c.check == "SMTP AUTH, tenant-wide"]
    assert check.verdict == "pass"  # the seed has it off tenant-wide; step 3 set the mailbox's own
    assert "tenant-wide SMTP AUTH is off" in check.detail and "December 2026" in check.detail


def test_object_names_fit_exchange_and_stay_apart():
    assert rbac.scope_name(MAILBOX) == SCOPE and rbac.assignment_name(MAILBOX) == ASSIGNMENT
    long_a, long_b = ("a" * 50 + "1@contoso.onmicrosoft.com", "a" * 50 + "2@contoso.onmicrosoft.com")
    names = {rbac.assignment_name(long_a), rbac.assignment_name(long_b), rbac.scope_name(long_a)}
    assert len(names) == 3 and all(len(n) <= rbac.NAME_LIMIT for n in names)
    assert rbac.recipient_filter("o'brien@contoso.com") == "PrimarySmtpAddress -eq 'o''brien@contoso.com'"


def test_the_sandbox_keeps_exchange_rbac_objects_between_steps_and_reads_older_state(tmp_path):
    raw = sandbox_raw(tmp_path, "lp-state", "scoped")
    configure(raw)
    path = state.state_file(raw["tenant"])
    data = json.loads(path.read_text())
    assert [s["Name"] for s in data["management_scopes"]] == [SCOPE]
    for name in state.LATER:  # a state file an older kit wrote: loaded with none
        data.pop(name)
    path.write_text(json.dumps(data))
    assert tenant_state(raw).management_role_assignments == []


def test_the_notebooks_run_scoped_end_to_end_and_a_second_run_writes_nothing(tmp_path):
    """The same through `runbook run` (the notebooks in one kernel): steps 1 to 5, twice."""
    from runbook_lib.running import runner

    raw = sandbox_raw(tmp_path, "lp-notebooks", "scoped")
    run = lambda: runner.run(params.validate(raw), archive=tmp_path / "archive", progress=lambda _: None)  # noqa: E731
    first, second = run(), run()
    assert first.ok and second.ok, [s.error for s in (*first.steps, *second.steps) if s.error]
    assert second.writes == 0
    tenant = tenant_state(raw)
    assert [s["Name"] for s in tenant.management_scopes] == [SCOPE]
    assert [a["Name"] for a in tenant.management_role_assignments] == [ASSIGNMENT]
    checks = {c.check: c.verdict for s in second.steps for c in s.checks}
    assert checks["Mail.Send scope"] == "pass" and checks["Mail.Send in the token's roles"] == "pass"
