"""The pure ``diff_*`` functions of every step, and the one executor that applies their changes.

No kernel, no network, no simulated tenant: each diff gets a hand-made current state (shaped like Graph's or
Exchange's answer) and a desired state, and each test reads the Change it returns: its action, its ``before`` and
``after``, and the Write that would make it (method, path, body) or that there is none. The executor is driven
through a fake API client that records the requests it gets and answers from a list (a value, or an error to raise).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.config.client_secrets import AppSecret, StoredMatch
from runbook_lib.config.clouds import EXCHANGE_APP_ID, GRAPH_APP_ID
from runbook_lib.engine import journal
from runbook_lib.engine.changes import Change, Confirm, Write, changes_text, pending, summary_line, unchanged
from runbook_lib.engine.executor import Executor, NotKept
from runbook_lib.errors import GraphError, OutcomeUnknown, StepFailed
from runbook_lib.steps import rotation, teardown
from runbook_lib.steps.rotation import RotationState
from runbook_lib.steps.teardown import Directory, Made, Proof
from runbook_lib.tenant import entra, exchange, rbac
from runbook_lib.tenant.entra import KIT_TAG, NEEDS, UPSERT, Delegated, DesiredApp, Permissions
from runbook_lib.tenant.exchange import MailboxState
from runbook_lib.tenant.exchange_admin import EXCHANGE_ADMIN_NEEDS
from runbook_lib.tenant.powershell import Settings
from runbook_lib.tenant.rbac import RbacState, Target

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
STEP = "02_azure_app_registration"
MAILBOX = "support@contoso.com"
FORWARD_TO = "inbox@webex.example"
POLICY = "Webex Connect forwarding"
CALLBACK = "https://webex.example/callback"
KIT_SECRET_NAME = "Webex Connect (runbook 2024-06-01)"


def sent(change: Change) -> tuple[str, str, str, Any] | None:
    """What the change's write would send: service, method, path and body; None when it has no write."""
    w = change.write
    return None if w is None else (w.service, w.method, w.path, w.body)


def cmdlet(name: str, parameters: dict[str, Any]) -> tuple[str, str, str, Any]:
    """What a write of one Exchange admin API cmdlet sends."""
    return ("exchange", "POST", "/InvokeCommand", {"CmdletInput": {"CmdletName": name, "Parameters": parameters}})


# --- entra: the permissions and the application ---------------------------------------------------------------

SMTP_SEND = Delegated("Office 365 Exchange Online", EXCHANGE_APP_ID, "exo-sp", "SMTP.Send", "scope-smtp")
OFFLINE = Delegated("Microsoft Graph", GRAPH_APP_ID, "graph-sp", "offline_access", "scope-offline")
PERMS = Permissions("exo-sp", "role-mail-send", (SMTP_SEND, OFFLINE))
DESIRED = DesiredApp(
    "Webex Connect Email",
    "webex-connect-email",
    CALLBACK,
    ((EXCHANGE_APP_ID, "scope-smtp", "Scope"), (GRAPH_APP_ID, "scope-offline", "Scope")),
    ((EXCHANGE_APP_ID, "role-mail-send", "Role"),),
    "the delegated SMTP.Send and offline_access only",
)
ACCESS = [
    {"resourceAppId": EXCHANGE_APP_ID, "resourceAccess": [{"id": "scope-smtp", "type": "Scope"}]},
    {"resourceAppId": GRAPH_APP_ID, "resourceAccess": [{"id": "scope-offline", "type": "Scope"}]},
]


def app(**fields: Any) -> dict[str, Any]:
    """An application as Graph answers it (APP_SELECT), configured as desired unless ``fields`` say otherwise."""
    return {
        "id": "obj-1",
        "appId": "app-1",
        "uniqueName": DESIRED.unique_name,
        "displayName": DESIRED.display_name,
        "tags": [KIT_TAG],
        "web": {"redirectUris": [CALLBACK], "implicitGrantSettings": {"enableAccessTokenIssuance": True}},
        "requiredResourceAccess": ACCESS,
        "passwordCredentials": [],
        **fields,
    }


def test_diff_application_unchanged_when_configured_as_desired() -> None:
    change = entra.diff_application(app(), DESIRED)
    assert change.action == "unchanged"
    assert change.before == change.after == {"id": "obj-1", "appId": "app-1"}
    assert change.write is None


def test_diff_application_creates_a_missing_one_by_upsert_under_its_key() -> None:
    change = entra.diff_application(None, DESIRED)
    assert change.action == "planned" and change.outcome == "created"
    assert change.before is None
    service, method, path, body = sent(change)
    assert (service, method, path) == ("graph", "PATCH", "/applications(uniqueName='webex-connect-email')")
    assert body["tags"] == [KIT_TAG] and body["web"]["redirectUris"] == [CALLBACK]
    assert body["requiredResourceAccess"] == ACCESS  # Mail.Send (absent) is not declared
    assert change.after == {"uniqueName": "webex-connect-email", **body}
    assert change.write.headers == UPSERT and change.write.upsert and change.write.idempotent
    assert change.write.keep == ("id", "appId") and change.write.needs == NEEDS["application"]


def test_diff_application_patches_only_the_missing_redirect_uri_keeping_the_others() -> None:
    current = app(web={"redirectUris": ["https://other"], "implicitGrantSettings": {"enableAccessTokenIssuance": True}})
    change = entra.diff_application(current, DESIRED)
    assert change.action == "planned" and change.outcome == "updated"
    patch = {"web": {"redirectUris": ["https://other", CALLBACK]}}
    assert sent(change) == ("graph", "PATCH", "/applications/obj-1", patch)
    assert change.before == {"id": "obj-1", "appId": "app-1", "web": current["web"]}
    assert change.after == patch
    assert change.write.idempotent and not change.write.upsert


def test_diff_application_takes_tenant_wide_mail_send_off_the_declared_permissions() -> None:
    with_mail_send = [
        {
            "resourceAppId": EXCHANGE_APP_ID,
            "resourceAccess": [{"id": "role-mail-send", "type": "Role"}, {"id": "scope-smtp", "type": "Scope"}],
        },
        ACCESS[1],
    ]
    change = entra.diff_application(app(requiredResourceAccess=with_mail_send), DESIRED)
    assert change.action == "planned"
    assert sent(change) == ("graph", "PATCH", "/applications/obj-1", {"requiredResourceAccess": ACCESS})
    assert change.before == {"id": "obj-1", "appId": "app-1", "requiredResourceAccess": with_mail_send}


# --- entra: the service principal and consents -------------------------------------------------------------------


def test_diff_service_principal_unchanged_when_it_exists() -> None:
    change = entra.diff_service_principal(app(), {"id": "sp-1"}, "Webex Connect Email")
    assert change.action == "unchanged" and change.before == change.after == {"id": "sp-1"}
    assert change.write is None


def test_diff_service_principal_creates_a_missing_one_by_upsert_under_the_client_id() -> None:
    change = entra.diff_service_principal(app(), None, "Webex Connect Email")
    assert change.action == "planned" and change.outcome == "created"
    assert (change.before, change.after) == (None, {"appId": "app-1"})
    body = {"displayName": "Webex Connect Email", "tags": [entra.LISTED, KIT_TAG]}
    assert sent(change) == ("graph", "PATCH", "/servicePrincipals(appId='app-1')", body)
    assert change.write.upsert and change.write.keep == ("id",)


def test_diff_service_principal_of_an_application_not_made_yet_has_no_write() -> None:
    change = entra.diff_service_principal(None, None, "Webex Connect Email")
    assert change.action == "planned" and change.after == {"appId": "(new)"} and change.write is None


MAIL_SEND_WANTED = {"principalId": "sp-1", "resourceId": "exo-sp", "appRoleId": "role-mail-send"}


def test_diff_mail_send_consent_unchanged_when_granted() -> None:
    assignments = [{"id": "as-1", "resourceId": "exo-sp", "appRoleId": "role-mail-send"}]
    change = entra.diff_mail_send_consent("sp-1", assignments, PERMS)
    assert change.action == "unchanged" and change.after == MAIL_SEND_WANTED and change.write is None


def test_diff_mail_send_consent_grants_with_a_confirm_read_for_a_lost_answer() -> None:
    other = [{"id": "as-0", "resourceId": "graph-sp", "appRoleId": "role-mail-send"}]
    change = entra.diff_mail_send_consent("sp-1", other, PERMS)
    assert change.action == "planned" and change.outcome == "created"
    assert (change.before, change.after) == (None, MAIL_SEND_WANTED)
    assert sent(change) == ("graph", "POST", "/servicePrincipals/exo-sp/appRoleAssignedTo", MAIL_SEND_WANTED)
    assert not change.write.idempotent and change.write.keep == ("id",)
    assert change.write.confirm == Confirm(
        "graph",
        "GET",
        "/servicePrincipals/sp-1/appRoleAssignments",
        {"resourceId": "exo-sp", "appRoleId": "role-mail-send"},
    )


def test_diff_mail_send_consent_for_a_service_principal_not_made_yet_has_no_write() -> None:
    change = entra.diff_mail_send_consent(None, [], PERMS)
    assert change.action == "planned" and change.after["principalId"] == "(new)" and change.write is None


def test_diff_mail_send_consent_removes_a_grant_not_wanted() -> None:
    assignments = [{"id": "as-1", "resourceId": "exo-sp", "appRoleId": "role-mail-send"}]
    change = entra.diff_mail_send_consent("sp-1", assignments, PERMS, wanted_granted=False)
    assert change.action == "planned" and change.outcome == "removed"
    assert (change.before, change.after) == ({**MAIL_SEND_WANTED, "id": "as-1"}, None)
    assert sent(change) == ("graph", "DELETE", "/servicePrincipals/sp-1/appRoleAssignments/as-1", None)


def test_diff_mail_send_consent_unchanged_when_not_wanted_and_not_granted() -> None:
    change = entra.diff_mail_send_consent("sp-1", [], PERMS, wanted_granted=False)
    assert change.action == "unchanged" and change.before is None and change.write is None


def test_diff_tenant_wide_grant_unchanged_when_the_grant_holds_the_permission() -> None:
    grant = {"id": "g1", "scope": "User.Read SMTP.Send"}
    change = entra.diff_tenant_wide_grant("sp-1", grant, SMTP_SEND)
    assert change.action == "unchanged" and change.before == change.after == {"scope": "User.Read SMTP.Send"}
    assert change.write is None


def test_diff_tenant_wide_grant_adds_the_permission_to_the_existing_grant_in_place() -> None:
    change = entra.diff_tenant_wide_grant("sp-1", {"id": "g1", "scope": "User.Read"}, SMTP_SEND)
    assert change.action == "planned" and change.outcome == "updated"
    assert (change.before, change.after) == ({"scope": "User.Read"}, {"scope": "User.Read SMTP.Send"})
    assert sent(change) == ("graph", "PATCH", "/oauth2PermissionGrants/g1", {"scope": "User.Read SMTP.Send"})
    assert change.write.idempotent


def test_diff_tenant_wide_grant_makes_a_new_grant_with_a_confirm_read() -> None:
    change = entra.diff_tenant_wide_grant("sp-1", None, SMTP_SEND)
    wanted = {"clientId": "sp-1", "consentType": "AllPrincipals", "resourceId": "exo-sp", "scope": "SMTP.Send"}
    assert change.action == "planned" and change.outcome == "created"
    assert (change.before, change.after) == (None, wanted)
    assert sent(change) == ("graph", "POST", "/oauth2PermissionGrants", wanted)
    assert change.write.keep == ("id",)
    assert change.write.confirm.match == {"resourceId": "exo-sp", "consentType": "AllPrincipals"}
    assert change.write.confirm.params == {"$filter": "clientId eq 'sp-1'"}


def test_diff_tenant_wide_grant_for_a_service_principal_not_made_yet_has_no_write() -> None:
    change = entra.diff_tenant_wide_grant(None, None, SMTP_SEND)
    assert change.action == "planned" and change.after["clientId"] == "(new)" and change.write is None


def test_diff_delegated_consent_unchanged_when_each_resource_is_granted() -> None:
    grants = [
        {"id": "g1", "resourceId": "exo-sp", "consentType": "AllPrincipals", "scope": "SMTP.Send"},
        {"id": "g2", "resourceId": "graph-sp", "consentType": "AllPrincipals", "scope": "offline_access"},
    ]
    changes = entra.diff_delegated_consent("sp-1", grants, PERMS)
    assert [(c.name, c.action) for c in changes] == [("SMTP.Send", "unchanged"), ("offline_access", "unchanged")]


def test_diff_delegated_consent_plans_a_grant_per_resource_ignoring_a_single_users_grant() -> None:
    grants = [{"id": "g9", "resourceId": "exo-sp", "consentType": "Principal", "scope": "SMTP.Send"}]
    changes = entra.diff_delegated_consent("sp-1", grants, PERMS)
    assert [(c.name, c.action, c.outcome) for c in changes] == [
        ("SMTP.Send", "planned", "created"),
        ("offline_access", "planned", "created"),
    ]
    assert [sent(c)[3]["resourceId"] for c in changes] == ["exo-sp", "graph-sp"]


# --- entra: client secrets ----------------------------------------------------------------------------------------


def cred(key_id: str, hint: str, end: str, name: str = KIT_SECRET_NAME, start: str = "2024-06-01T00:00:00Z") -> dict:
    """A passwordCredential as Graph lists it (never its value)."""
    return {"keyId": key_id, "hint": hint, "displayName": name, "endDateTime": end, "startDateTime": start}


def secret(key_id: str, hint: str, expires: datetime, starts: datetime | None = None) -> AppSecret:
    return AppSecret(key_id, hint, KIT_SECRET_NAME, expires, starts)


def test_diff_expired_secrets_none_unless_asked_to_remove() -> None:
    current = app(passwordCredentials=[cred("k-old", "old", "2024-12-01T00:00:00Z")])
    assert entra.diff_expired_secrets(current, NOW, False) == []
    assert entra.diff_expired_secrets(None, NOW, True) == []


def test_diff_expired_secrets_removes_only_the_expired_ones() -> None:
    current = app(
        passwordCredentials=[cred("k-old", "old", "2024-12-01T00:00:00Z"), cred("k-new", "new", "2026-01-01T00:00:00Z")]
    )
    [change] = entra.diff_expired_secrets(current, NOW, True)
    assert (change.resource, change.name, change.action, change.outcome) == (
        "expired client secret",
        "hint old",
        "planned",
        "removed",
    )
    assert (change.before, change.after) == ({"hint": "old", "expired": "2024-12-01", "keyId": "k-old"}, None)
    assert sent(change) == ("graph", "POST", "/applications/obj-1/removePassword", {"keyId": "k-old"})


def test_diff_secret_unchanged_while_the_stored_secret_is_valid() -> None:
    stored = secret("k1", "abc", datetime(2026, 1, 1, tzinfo=UTC))
    change = entra.diff_secret(
        app(), StoredMatch("matched", stored), "file:s", now=NOW, renew_days=30, lifetime_days=180
    )
    assert change.action == "unchanged" and change.write is None
    assert change.before == change.after == {"hint": "abc", "expires": "2026-01-01", "keyId": "k1", "store": "file:s"}


def test_diff_secret_adds_a_new_one_when_the_stored_secret_expires_within_renew_days() -> None:
    stored = secret("k1", "abc", datetime(2025, 1, 10, tzinfo=UTC))
    current = app(passwordCredentials=[cred("k1", "abc", "2025-01-10T00:00:00Z")])
    change = entra.diff_secret(
        current, StoredMatch("matched", stored), "file:s", now=NOW, renew_days=30, lifetime_days=180
    )
    assert change.action == "planned" and change.outcome == "created"
    assert "the stored secret expires on 2025-01-10" in change.summary
    assert (change.before, change.after) == (None, {"store": "file:s"})
    body = {
        "passwordCredential": {
            "displayName": "Webex Connect (runbook 2025-01-01)",
            "endDateTime": "2025-06-30T12:00:00Z",
        }
    }
    assert sent(change) == ("graph", "POST", "/applications/obj-1/addPassword", body)
    assert change.write.keep == ("keyId", "hint", "endDateTime")  # never secretText


def test_diff_secret_adds_the_first_secret_of_an_application_without_any() -> None:
    change = entra.diff_secret(app(), StoredMatch("empty"), "file:s", now=NOW, renew_days=30, lifetime_days=180)
    assert change.action == "planned" and "the application has no client secret yet" in change.summary
    assert sent(change)[:3] == ("graph", "POST", "/applications/obj-1/addPassword")


def test_diff_secret_of_an_application_not_made_yet_has_no_write() -> None:
    change = entra.diff_secret(None, StoredMatch("empty"), "file:s", now=NOW, renew_days=30, lifetime_days=180)
    assert change.action == "planned" and change.write is None


# --- exchange: the mailbox's settings -----------------------------------------------------------------------------

WANTED = Settings(MAILBOX, FORWARD_TO, True, POLICY, False)
AS_WANTED = MailboxState(
    recipient_type="UserMailbox",
    smtp_auth_disabled=False,
    tenant_smtp_auth_disabled=True,
    forwarding=f"SMTP:{FORWARD_TO.upper()}",  # Exchange's prefix and case do not matter
    keep_copy=True,
    policy={"Name": POLICY, "AutoForwardingMode": "On"},
    rule={"Name": POLICY, "From": [MAILBOX.upper()]},
    default_mode="Automatic",
)


def test_diff_smtp_auth_unchanged_when_enabled() -> None:
    change = exchange.diff_smtp_auth(AS_WANTED, MAILBOX)
    assert change.action == "unchanged" and change.after == {"SmtpClientAuthenticationDisabled": False}
    assert change.write is None


def test_diff_smtp_auth_enables_it_with_set_casmailbox() -> None:
    change = exchange.diff_smtp_auth(replace(AS_WANTED, smtp_auth_disabled=None), MAILBOX)
    assert change.action == "planned"
    assert change.before == {
        "SmtpClientAuthenticationDisabled": None,
        "tenant-wide SmtpClientAuthenticationDisabled": True,
    }
    assert change.after == {"SmtpClientAuthenticationDisabled": False}
    assert sent(change) == cmdlet("Set-CASMailbox", {"Identity": MAILBOX, "SmtpClientAuthenticationDisabled": False})
    assert change.write.idempotent and change.write.needs == EXCHANGE_ADMIN_NEEDS


def test_diff_smtp_auth_without_a_state_is_left_to_the_script() -> None:
    change = exchange.diff_smtp_auth(None, MAILBOX)
    assert change.action == "planned" and change.before is None and change.write is None


FORWARD = {"ForwardingSmtpAddress": f"smtp:{FORWARD_TO}", "DeliverToMailboxAndForward": True}


def test_diff_forwarding_unchanged_when_it_forwards_to_webex_connect() -> None:
    change = exchange.diff_forwarding(AS_WANTED, WANTED)
    assert change.action == "unchanged" and change.after == FORWARD and change.write is None


def test_diff_forwarding_replaces_another_forwarding_address() -> None:
    change = exchange.diff_forwarding(replace(AS_WANTED, forwarding="smtp:old@else.example", keep_copy=False), WANTED)
    assert change.action == "planned" and "replace forwarding to old@else.example" in change.summary
    assert change.before == {"ForwardingSmtpAddress": "smtp:old@else.example", "DeliverToMailboxAndForward": False}
    assert change.after == FORWARD
    assert sent(change) == cmdlet("Set-Mailbox", {"Identity": MAILBOX, **FORWARD})


def test_diff_forwarding_without_a_state_is_left_to_the_script() -> None:
    change = exchange.diff_forwarding(None, WANTED)
    assert change.action == "planned" and change.before is None and change.after == FORWARD and change.write is None


def test_diff_external_forwarding_unchanged_when_the_dedicated_policy_and_rule_allow_it() -> None:
    policy, rule = exchange.diff_external_forwarding(AS_WANTED, WANTED)
    assert (policy.resource, policy.action, policy.after) == (
        "outbound spam policy",
        "unchanged",
        {"AutoForwardingMode": "On"},
    )
    assert (rule.resource, rule.action, rule.after) == ("outbound spam rule", "unchanged", {"From": [MAILBOX.upper()]})
    assert policy.write is rule.write is None


def test_diff_external_forwarding_creates_a_missing_policy_and_rule() -> None:
    policy, rule = exchange.diff_external_forwarding(replace(AS_WANTED, policy=None, rule=None), WANTED)
    assert (policy.action, policy.outcome, policy.before) == ("planned", "created", None)
    assert sent(policy) == cmdlet("New-HostedOutboundSpamFilterPolicy", {"Name": POLICY, "AutoForwardingMode": "On"})
    assert (rule.action, rule.outcome, rule.before, rule.after) == ("planned", "created", None, {"From": [MAILBOX]})
    assert sent(rule) == cmdlet(
        "New-HostedOutboundSpamFilterRule",
        {"Name": POLICY, "HostedOutboundSpamFilterPolicy": POLICY, "From": [MAILBOX]},
    )
    assert not policy.write.idempotent and not rule.write.idempotent  # New-* is not sent twice blindly


def test_diff_external_forwarding_turns_the_policy_on_and_adds_the_sender_to_the_rule() -> None:
    state = replace(
        AS_WANTED,
        policy={"Name": POLICY, "AutoForwardingMode": "Automatic"},
        rule={"Name": POLICY, "From": ["other@contoso.com"]},
    )
    policy, rule = exchange.diff_external_forwarding(state, WANTED)
    assert (policy.action, policy.before) == ("planned", {"AutoForwardingMode": "Automatic"})
    assert sent(policy) == cmdlet(
        "Set-HostedOutboundSpamFilterPolicy", {"Identity": POLICY, "AutoForwardingMode": "On"}
    )
    assert (rule.action, rule.before, rule.after) == (
        "planned",
        {"From": ["other@contoso.com"]},
        {"From": ["other@contoso.com", MAILBOX]},
    )
    assert sent(rule) == cmdlet(
        "Set-HostedOutboundSpamFilterRule", {"Identity": POLICY, "From": ["other@contoso.com", MAILBOX]}
    )


def test_diff_external_forwarding_through_the_default_policy() -> None:
    default = replace(WANTED, use_default_policy=True)
    [same] = exchange.diff_external_forwarding(replace(AS_WANTED, default_mode="On"), default)
    assert (same.name, same.action, same.write) == ("Default policy", "unchanged", None)
    [change] = exchange.diff_external_forwarding(AS_WANTED, default)
    assert (change.action, change.before) == ("planned", {"AutoForwardingMode": "Automatic"})
    assert change.after == {"policy": "Default", "AutoForwardingMode": "On"}
    assert sent(change) == cmdlet(
        "Set-HostedOutboundSpamFilterPolicy", {"Identity": "Default", "AutoForwardingMode": "On"}
    )


def test_diff_mailbox_unchanged_when_every_setting_is_as_wanted() -> None:
    changes = exchange.diff_mailbox(AS_WANTED, WANTED)
    assert [(c.resource, c.action) for c in changes] == [
        ("authenticated SMTP", "unchanged"),
        ("mailbox forwarding", "unchanged"),
        ("outbound spam policy", "unchanged"),
        ("outbound spam rule", "unchanged"),
    ]


def test_diff_mailbox_without_a_state_plans_every_setting_for_the_script_without_writes() -> None:
    changes = exchange.diff_mailbox(None, WANTED)
    assert [c.action for c in changes] == ["planned"] * 4
    assert [c.write for c in changes] == [None] * 4


# --- rbac: RBAC for Applications ----------------------------------------------------------------------------------

TARGET = Target("app-1", "sp-1", "Webex Connect Email", MAILBOX, MAILBOX)
SCOPE_NAME = f"Webex Connect mailbox {MAILBOX}"
ASSIGNMENT_NAME = f"Webex Connect Mail.Send {MAILBOX}"
FILTER = f"PrimarySmtpAddress -eq '{MAILBOX}'"
RBAC_AS_WANTED = RbacState(
    pointer={"AppId": "app-1", "ObjectId": "SP-1", "Name": "ptr-1"},  # GUIDs in either case
    scope={"Name": SCOPE_NAME, "RecipientFilter": f"primarysmtpaddress  -eq  '{MAILBOX}'"},
    assignment={"Role": rbac.ROLE, "CustomResourceScope": SCOPE_NAME.upper(), "RoleAssignee": "ptr-1"},
)


def test_diff_pointer_unchanged_when_it_points_at_the_service_principal() -> None:
    [change] = rbac.diff_pointer(RBAC_AS_WANTED, TARGET)
    assert change.action == "unchanged" and change.after == {"AppId": "app-1", "ObjectId": "sp-1"}
    assert change.write is None


def test_diff_pointer_creates_a_missing_one() -> None:
    [change] = rbac.diff_pointer(RbacState(None, None, None), TARGET)
    assert (change.action, change.outcome, change.before) == ("planned", "created", None)
    assert sent(change) == cmdlet(
        "New-ServicePrincipal", {"AppId": "app-1", "ObjectId": "sp-1", "DisplayName": "Webex Connect Email"}
    )


def test_diff_pointer_replaces_one_pointing_at_another_service_principal() -> None:
    stale_state = replace(RBAC_AS_WANTED, pointer={"AppId": "app-1", "ObjectId": "sp-deleted"})
    remove, create = rbac.diff_pointer(stale_state, TARGET)
    assert (remove.action, remove.outcome, remove.before, remove.after) == (
        "planned",
        "removed",
        {"Identity": "app-1"},
        None,
    )
    assert "sp-deleted" in remove.summary
    assert sent(remove) == cmdlet("Remove-ServicePrincipal", {"Identity": "app-1"})
    assert (create.outcome, sent(create)[3]["CmdletInput"]["CmdletName"]) == ("created", "New-ServicePrincipal")


def test_diff_pointer_has_no_write_before_step_2_made_the_application() -> None:
    [change] = rbac.diff_pointer(RbacState(None, None, None), replace(TARGET, app_id=None, sp_object_id=None))
    assert change.action == "planned" and change.after == {"AppId": "(step 2)", "ObjectId": "(step 2)"}
    assert change.write is None


def test_diff_scope_unchanged_when_its_filter_matches_the_mailbox() -> None:
    change = rbac.diff_scope(RBAC_AS_WANTED, TARGET)
    assert change.action == "unchanged" and change.after == {"RecipientRestrictionFilter": FILTER}


def test_diff_scope_creates_a_missing_one_even_before_the_application_exists() -> None:
    change = rbac.diff_scope(RbacState(None, None, None), replace(TARGET, app_id=None, sp_object_id=None))
    assert (change.action, change.outcome, change.before) == ("planned", "created", None)
    assert sent(change) == cmdlet("New-ManagementScope", {"Name": SCOPE_NAME, "RecipientRestrictionFilter": FILTER})


def test_diff_scope_narrows_a_scope_matching_something_else() -> None:
    state = replace(RBAC_AS_WANTED, scope={"RecipientFilter": "Department -eq 'Sales'"})
    change = rbac.diff_scope(state, TARGET)
    assert (change.action, change.before) == ("planned", {"RecipientFilter": "Department -eq 'Sales'"})
    assert sent(change) == cmdlet("Set-ManagementScope", {"Identity": SCOPE_NAME, "RecipientRestrictionFilter": FILTER})


def test_diff_scope_without_a_state_is_left_to_the_script() -> None:
    change = rbac.diff_scope(None, TARGET)
    assert change.action == "planned" and change.write is None


def test_diff_assignment_unchanged_when_it_assigns_the_role_to_the_pointer_on_the_scope() -> None:
    [change] = rbac.diff_assignment(RBAC_AS_WANTED, TARGET)
    assert change.action == "unchanged"
    assert change.after == {"App": "sp-1", "Role": rbac.ROLE, "CustomResourceScope": SCOPE_NAME}


def test_diff_assignment_creates_a_missing_one() -> None:
    [change] = rbac.diff_assignment(replace(RBAC_AS_WANTED, assignment=None), TARGET)
    assert (change.action, change.outcome, change.before) == ("planned", "created", None)
    assert sent(change) == cmdlet(
        "New-ManagementRoleAssignment",
        {"Name": ASSIGNMENT_NAME, "App": "sp-1", "Role": rbac.ROLE, "CustomResourceScope": SCOPE_NAME},
    )


def test_diff_assignment_replaces_one_with_another_role() -> None:
    wrong = {**RBAC_AS_WANTED.assignment, "Role": "Application Mail.ReadWrite"}
    remove, create = rbac.diff_assignment(replace(RBAC_AS_WANTED, assignment=wrong), TARGET)
    assert (remove.action, remove.outcome, remove.after) == ("planned", "removed", None)
    assert "its role differ" in remove.summary
    assert sent(remove) == cmdlet("Remove-ManagementRoleAssignment", {"Identity": ASSIGNMENT_NAME})
    assert create.outcome == "created"


def test_diff_rbac_unchanged_when_every_object_is_as_wanted() -> None:
    changes = rbac.diff_rbac(RBAC_AS_WANTED, TARGET)
    assert [(c.resource, c.action) for c in changes] == [
        (rbac.POINTER, "unchanged"),
        (rbac.SCOPE, "unchanged"),
        (rbac.ASSIGNMENT, "unchanged"),
    ]


def test_diff_rbac_plans_the_pointer_then_the_scope_then_the_assignment() -> None:
    changes = rbac.diff_rbac(RbacState(None, None, None), TARGET)
    assert [(c.resource, c.action) for c in changes] == [
        (rbac.POINTER, "planned"),
        (rbac.SCOPE, "planned"),
        (rbac.ASSIGNMENT, "planned"),
    ]
    assert [sent(c)[3]["CmdletInput"]["CmdletName"] for c in changes] == [
        "New-ServicePrincipal",
        "New-ManagementScope",
        "New-ManagementRoleAssignment",
    ]


# --- rotation: the two phases -------------------------------------------------------------------------------------

OLD = secret("k-old", "old", datetime(2026, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
NEW = secret("k-new", "new", datetime(2027, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
ROTATING_APP = {"id": "obj-1", "appId": "app-1"}


def rotation_state(current: StoredMatch, previous: StoredMatch) -> RotationState:
    return RotationState(ROTATING_APP, "file:s", [OLD, NEW], current, previous, True, NOW, 30)


BEFORE_PHASE_1 = rotation_state(StoredMatch("matched", OLD), StoredMatch("empty"))
PENDING = rotation_state(StoredMatch("matched", NEW), StoredMatch("matched", OLD))


def test_diff_add_unchanged_while_a_rotation_is_pending() -> None:
    change = rotation.diff_add(PENDING, lifetime_days=180)
    assert change.action == "unchanged" and "phase 1 done already" in change.summary
    assert change.after == {"hint": "new", "expires": "2027-01-01", "keyId": "k-new", "store": "file:s"}
    assert change.write is None


def test_diff_add_unchanged_when_the_stored_secret_is_not_due_within_the_days_asked() -> None:
    change = rotation.diff_add(BEFORE_PHASE_1, lifetime_days=180, within_days=30)
    assert change.action == "unchanged" and change.after["due"] is False and change.write is None


def test_diff_add_plans_a_new_secret_beside_the_stored_one() -> None:
    change = rotation.diff_add(BEFORE_PHASE_1, lifetime_days=180)
    assert (change.action, change.outcome) == ("planned", "created")
    assert change.before == {"hint": "old", "expires": "2026-01-01", "keyId": "k-old", "store": "file:s"}
    assert change.after == {"store": "file:s"}
    assert sent(change)[:3] == ("graph", "POST", "/applications/obj-1/addPassword")


def test_diff_add_refuses_when_the_store_holds_none_of_the_applications_secrets() -> None:
    with pytest.raises(StepFailed, match="nothing to rotate"):
        rotation.diff_add(rotation_state(StoredMatch("no match"), StoredMatch("empty")), lifetime_days=180)


def test_diff_remove_removes_the_previous_secret_of_a_pending_rotation() -> None:
    change = rotation.diff_remove(PENDING, "ops@contoso.com")
    assert (change.resource, change.name, change.action, change.outcome) == (
        rotation.PREVIOUS,
        "hint old",
        "planned",
        "removed",
    )
    assert "ops@contoso.com confirmed" in change.summary
    assert change.before == {"hint": "old", "expires": "2026-01-01", "keyId": "k-old", "store": "file:s"}
    assert change.after == {"confirmed_by": "ops@contoso.com"}
    assert sent(change) == ("graph", "POST", "/applications/obj-1/removePassword", {"keyId": "k-old"})


def test_diff_remove_before_phase_1_names_the_stored_secret_phase_1_makes_the_previous() -> None:
    change = rotation.diff_remove(BEFORE_PHASE_1, None)
    assert change.action == "planned" and change.after is None
    assert "once Webex Connect uses the new secret" in change.summary
    assert sent(change)[3] == {"keyId": "k-old"}


# --- teardown: Entra ID --------------------------------------------------------------------------------------------

SECRET_MADE = Made("client secret", "hint abc", True, None, {"keyId": "k1", "hint": "abc"}, "r1")
KIT_APP = {
    "id": "obj-1",
    "appId": "app-1",
    "uniqueName": "webex-connect-email",
    "displayName": "Webex Connect Email",
    "tags": [KIT_TAG],
    "passwordCredentials": [cred("k1", "abc", "2026-01-01T00:00:00Z")],
}
APP_MADE = Made("application", "Webex Connect Email", True, None, {k: KIT_APP[k] for k in ("id", "appId")}, "r1")
SP = {"id": "sp-1", "appId": "app-1", "tags": [entra.LISTED, KIT_TAG]}
SP_MADE = Made("service principal", "Webex Connect Email", True, None, {"id": "sp-1", "appId": "app-1"}, "r1")
ASSIGNMENT = {"id": "as-1", "principalId": "sp-1", "resourceId": "exo-sp", "appRoleId": "role-mail-send"}
CONSENT_MADE = Made("admin consent", "Mail.Send", True, None, ASSIGNMENT, "r1")
GRANT = {"id": "g1", "consentType": "AllPrincipals", "scope": "SMTP.Send"}
GRANT_MADE = Made("tenant-wide consent", "SMTP.Send", True, None, {"id": "g1", "scope": "SMTP.Send"}, "r1")


def test_teardown_diff_secret_removes_the_kits_secret() -> None:
    change = teardown.diff_secret(SECRET_MADE, KIT_APP)
    assert (change.action, change.outcome, change.after) == ("planned", "removed", None)
    assert change.before == {"keyId": "k1", "hint": "abc", "expires": "2026-01-01T00:00:00Z"}
    assert sent(change) == ("graph", "POST", "/applications/obj-1/removePassword", {"keyId": "k1"})


def test_teardown_diff_secret_unchanged_when_gone_already() -> None:
    change = teardown.diff_secret(SECRET_MADE, {**KIT_APP, "passwordCredentials": []})
    assert (change.action, change.summary, change.before, change.write) == ("unchanged", "gone already", None, None)


def test_teardown_diff_secret_refuses_a_secret_not_named_by_the_kit() -> None:
    by_hand = {**KIT_APP, "passwordCredentials": [cred("k1", "abc", "2026-01-01T00:00:00Z", name="made by Ann")]}
    change = teardown.diff_secret(SECRET_MADE, by_hand)
    assert change.action == "unchanged" and change.summary.startswith("refused")
    assert change.before == change.after == {"keyId": "k1", "hint": "abc", "expires": "2026-01-01T00:00:00Z"}
    assert change.write is None


def test_teardown_diff_secret_told_when_a_teardown_removed_it_already() -> None:
    undone = replace(SECRET_MADE, undone="09_teardown in record r2")
    change = teardown.diff_secret(undone, {**KIT_APP, "passwordCredentials": []})
    assert change.action == "unchanged" and change.summary == "gone: removed by 09_teardown in record r2"


def test_teardown_diff_mail_send_deletes_the_assignment_the_kit_made() -> None:
    change = teardown.diff_mail_send(CONSENT_MADE, SP, [ASSIGNMENT])
    assert (change.action, change.outcome, change.before, change.after) == ("planned", "removed", ASSIGNMENT, None)
    assert sent(change) == ("graph", "DELETE", "/servicePrincipals/sp-1/appRoleAssignments/as-1", None)


def test_teardown_diff_mail_send_unchanged_when_gone_or_not_the_kits() -> None:
    gone = teardown.diff_mail_send(CONSENT_MADE, SP, [])
    assert (gone.action, gone.summary, gone.write) == ("unchanged", "gone already", None)
    by_hand = teardown.diff_mail_send(replace(CONSENT_MADE, created=False), SP, [ASSIGNMENT])
    assert by_hand.action == "unchanged" and "the kit did not create it" in by_hand.summary
    assert by_hand.before == ASSIGNMENT and by_hand.write is None


def test_teardown_diff_smtp_send_grant_deletes_a_grant_the_kit_made() -> None:
    change = teardown.diff_smtp_send_grant(GRANT_MADE, [GRANT])
    assert (change.action, change.outcome, change.before) == ("planned", "removed", {"id": "g1", "scope": "SMTP.Send"})
    assert sent(change) == ("graph", "DELETE", "/oauth2PermissionGrants/g1", None)


def test_teardown_diff_smtp_send_grant_restores_the_scope_of_a_grant_the_kit_only_extended() -> None:
    extended = Made(
        "tenant-wide consent", "SMTP.Send", False, {"scope": "User.Read"}, {"scope": "User.Read SMTP.Send"}, "r1"
    )
    grant = {"id": "g1", "consentType": "AllPrincipals", "scope": "SMTP.Send User.Read"}
    change = teardown.diff_smtp_send_grant(extended, [grant])
    assert (change.action, change.outcome) == ("planned", "updated")
    assert (change.before, change.after) == ({"id": "g1", "scope": "SMTP.Send User.Read"}, {"scope": "User.Read"})
    assert sent(change) == ("graph", "PATCH", "/oauth2PermissionGrants/g1", {"scope": "User.Read"})


def test_teardown_diff_smtp_send_grant_unchanged_when_gone_or_its_old_scope_is_unknown() -> None:
    gone = teardown.diff_smtp_send_grant(GRANT_MADE, [{**GRANT, "consentType": "Principal"}])
    assert (gone.action, gone.summary, gone.write) == ("unchanged", "gone already", None)
    unknown = Made("tenant-wide consent", "SMTP.Send", False, None, {"id": "g1"}, "r1")
    left = teardown.diff_smtp_send_grant(unknown, [GRANT])
    assert left.action == "unchanged" and "no record of its scope" in left.summary and left.write is None


def test_teardown_diff_service_principal_deletes_the_kits_own() -> None:
    change = teardown.diff_service_principal(SP_MADE, SP)
    assert (change.action, change.outcome, change.before) == ("planned", "removed", {"id": "sp-1", "appId": "app-1"})
    assert sent(change) == ("graph", "DELETE", "/servicePrincipals/sp-1", None)


def test_teardown_diff_service_principal_refuses_one_without_the_kits_mark() -> None:
    change = teardown.diff_service_principal(SP_MADE, {**SP, "tags": []})
    assert change.action == "unchanged" and change.summary.startswith("refused") and "mark" in change.summary
    assert change.write is None


def test_teardown_diff_service_principal_unchanged_when_gone() -> None:
    change = teardown.diff_service_principal(SP_MADE, None)
    assert (change.action, change.summary, change.write) == ("unchanged", "gone already", None)


def test_teardown_diff_application_deletes_the_kits_own() -> None:
    change = teardown.diff_application(APP_MADE, KIT_APP)
    assert (change.action, change.outcome, change.after) == ("planned", "removed", None)
    assert change.before == {k: KIT_APP[k] for k in ("id", "appId", "uniqueName", "displayName")}
    assert sent(change) == ("graph", "DELETE", "/applications/obj-1", None)


def test_teardown_diff_application_leaves_one_made_by_hand() -> None:
    change = teardown.diff_application(replace(APP_MADE, created=False), {**KIT_APP, "tags": []})
    assert change.action == "unchanged" and change.summary.startswith("made by hand") and change.write is None


def test_teardown_diff_application_refuses_one_the_records_do_not_name() -> None:
    named = replace(APP_MADE, after={**APP_MADE.after, "uniqueName": "webex-connect-email"})
    change = teardown.diff_application(named, {**KIT_APP, "uniqueName": "someone-elses"})
    assert change.action == "unchanged" and "uniqueName" in change.summary and change.write is None


def test_teardown_diff_application_unchanged_when_gone() -> None:
    change = teardown.diff_application(APP_MADE, None)
    assert (change.action, change.summary, change.write) == ("unchanged", "gone already", None)


def test_teardown_diff_directory_removes_secrets_then_consents_then_sp_then_application() -> None:
    proof = Proof("records", [APP_MADE, SP_MADE, GRANT_MADE, CONSENT_MADE, SECRET_MADE])
    changes = teardown.diff_directory(proof, Directory(KIT_APP, SP, [ASSIGNMENT], [GRANT]))
    assert [(c.resource, c.action, sent(c)[1]) for c in changes] == [
        ("client secret", "planned", "POST"),
        ("admin consent", "planned", "DELETE"),
        ("tenant-wide consent", "planned", "DELETE"),
        ("service principal", "planned", "DELETE"),
        ("application", "planned", "DELETE"),
    ]


def test_teardown_diff_directory_unchanged_when_everything_is_gone() -> None:
    proof = Proof("records", [SECRET_MADE, SP_MADE, APP_MADE])
    changes = teardown.diff_directory(proof, Directory(None, None, [], []))
    assert [(c.action, c.write) for c in changes] == [("unchanged", None)] * 3


def test_teardown_diff_directory_refuses_consents_on_a_service_principal_the_records_do_not_name() -> None:
    proof = Proof("records", [CONSENT_MADE, SP_MADE])
    changes = teardown.diff_directory(proof, Directory(KIT_APP, {**SP, "id": "sp-other"}, [ASSIGNMENT], []))
    assert [c.action for c in changes] == ["unchanged", "unchanged"]
    assert all(c.summary.startswith("refused") and c.write is None for c in changes)


# --- teardown: Exchange ---------------------------------------------------------------------------------------------

FORWARDING = teardown.EXCHANGE["mailbox forwarding"]
SPAM_POLICY = teardown.EXCHANGE["outbound spam policy"]
FORWARD_BEFORE = {"ForwardingSmtpAddress": None, "DeliverToMailboxAndForward": False}
FORWARD_MADE = Made("mailbox forwarding", MAILBOX, False, FORWARD_BEFORE, FORWARD, "r1")
POLICY_MADE = Made("outbound spam policy", POLICY, True, None, {"AutoForwardingMode": "On"}, "r1")


def test_diff_restore_sets_back_the_value_the_kit_found() -> None:
    current = {"ForwardingSmtpAddress": f"SMTP:{FORWARD_TO.upper()}", "DeliverToMailboxAndForward": True}
    change = teardown.diff_restore(FORWARD_MADE, current, FORWARDING, True)
    assert (change.action, change.outcome) == ("planned", "updated")
    assert (change.before, change.after) == (current, FORWARD_BEFORE)
    assert sent(change) == cmdlet("Set-Mailbox", {"Identity": MAILBOX, **FORWARD_BEFORE})


def test_diff_restore_unchanged_when_as_before_the_kit() -> None:
    change = teardown.diff_restore(FORWARD_MADE, dict(FORWARD_BEFORE), FORWARDING, True)
    assert change.action == "unchanged" and change.summary == "as it was before the kit changed it"
    assert change.write is None


def test_diff_restore_leaves_a_value_changed_outside_the_kit() -> None:
    other = {"ForwardingSmtpAddress": "smtp:elsewhere@example.com", "DeliverToMailboxAndForward": True}
    change = teardown.diff_restore(FORWARD_MADE, other, FORWARDING, True)
    assert change.action == "unchanged" and "changed outside the kit" in change.summary
    assert change.before == change.after == other and change.write is None


def test_diff_restore_unchanged_without_a_recorded_value_before_the_kit() -> None:
    change = teardown.diff_restore(replace(FORWARD_MADE, before=None), dict(FORWARD), FORWARDING, True)
    assert change.action == "unchanged" and "no record says its value" in change.summary and change.write is None


def test_diff_restore_in_powershell_mode_is_planned_for_the_script() -> None:
    change = teardown.diff_restore(FORWARD_MADE, None, FORWARDING, False)
    assert (change.action, change.before, change.after, change.write) == ("planned", None, FORWARD_BEFORE, None)


def test_diff_exchange_removal_removes_what_the_kit_created() -> None:
    change = teardown.diff_exchange_removal(POLICY_MADE, {"AutoForwardingMode": "On"}, SPAM_POLICY, True)
    assert (change.action, change.outcome) == ("planned", "removed")
    assert (change.before, change.after) == ({"AutoForwardingMode": "On"}, None)
    assert sent(change) == cmdlet("Remove-HostedOutboundSpamFilterPolicy", {"Identity": POLICY})
    assert not change.write.idempotent


def test_diff_exchange_removal_unchanged_when_gone() -> None:
    change = teardown.diff_exchange_removal(POLICY_MADE, None, SPAM_POLICY, True)
    assert (change.action, change.summary, change.write) == ("unchanged", "gone already", None)


def test_diff_exchange_removal_never_removes_the_default_policy() -> None:
    change = teardown.diff_exchange_removal(replace(POLICY_MADE, name="Default"), {}, SPAM_POLICY, True)
    assert change.action == "unchanged" and "never removed" in change.summary and change.write is None


def test_diff_exchange_removal_in_powershell_mode_is_planned_for_the_script() -> None:
    change = teardown.diff_exchange_removal(POLICY_MADE, None, SPAM_POLICY, False)
    assert (change.action, change.outcome, change.before, change.after) == ("planned", "removed", None, None)
    assert change.write is None


def test_diff_exchange_item_removes_a_created_rbac_pointer_by_its_client_id() -> None:
    made = Made(rbac.POINTER, "Webex Connect Email", True, None, {"AppId": "app-1", "ObjectId": "sp-1"}, "r1")
    change = teardown.diff_exchange_item(made, teardown.RBAC[rbac.POINTER], {"Identity": "app-1"}, True)
    assert (change.action, change.outcome) == ("planned", "removed")
    assert sent(change) == cmdlet("Remove-ServicePrincipal", {"Identity": "app-1"})


def test_diff_exchange_item_restores_what_the_kit_only_changed() -> None:
    made = Made("external forwarding", "Default policy", True, {"AutoForwardingMode": "Automatic"}, None, "r1")
    item = teardown.EXCHANGE["external forwarding"]  # created or not, the Default policy is restored, never removed
    change = teardown.diff_exchange_item(made, item, None, False)
    assert (change.action, change.outcome, change.after) == ("planned", "updated", {"AutoForwardingMode": "Automatic"})
    same = teardown.diff_exchange_item(made, item, {"AutoForwardingMode": "Automatic"}, True)
    assert same.action == "unchanged" and same.write is None


# --- the executor, through a fake client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any
    headers: Any
    params: Any
    idempotent: bool


class FakeClient:
    """Records each request and answers with the next of ``answers``: a value to return or an error to raise."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[Call] = []

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        retry_codes: tuple[str, ...] = (),
        idempotent: bool = False,
        missing_ok: bool = False,
    ) -> Any:
        self.calls.append(Call(method, path, body, headers, params, idempotent))
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_executor(
    tmp_path: Path, fake: FakeClient, *, apply: bool = True, record: Any = None
) -> tuple[Executor, list[Change], journal.Journal]:
    recorded: list[Change] = []
    log = journal.Journal(tmp_path / "j.jsonl")
    executor = Executor(
        {"graph": lambda: fake, "exchange": lambda: fake},
        log,
        step=STEP,
        apply=apply,
        record=record or recorded.append,
    )
    return executor, recorded, log


def journaled(tmp_path: Path) -> list[dict[str, Any]]:
    return [e["change"] for e in journal.read(tmp_path / "j.jsonl") if e.get("kind") == "change"]


def planned(write: Write, outcome: str = "created", after: dict[str, Any] | None = None) -> Change:
    return Change("thing", "one", "planned", "make it", None, after or {"x": 1}, write, outcome=outcome)


POST = Write("graph", "POST", "/things", {"x": 1})
UPSERT_WRITE = Write("graph", "PATCH", "/things(key='one')", {"x": 1}, UPSERT, idempotent=True, keep=("id",))
CONFIRMED = replace(POST, keep=("id",), confirm=Confirm("graph", "GET", "/things", {"x": 1}, params={"$top": "5"}))


def graph_error(status: int) -> GraphError:
    return GraphError(status, "Authorization_RequestDenied", "Insufficient privileges", "req-1", "POST", "/things")


@pytest.mark.parametrize("apply", [True, False])
def test_plan_only_is_true_exactly_when_apply_is_false(tmp_path: Path, apply: bool) -> None:
    executor, _, _ = make_executor(tmp_path, FakeClient(), apply=apply)
    assert executor.plan_only is (not apply)


def test_plan_mode_sends_nothing_and_records_the_planned_change(tmp_path: Path) -> None:
    fake = FakeClient()
    executor, recorded, _ = make_executor(tmp_path, fake, apply=False)
    change = planned(POST)
    assert executor.apply(change) == (change, None)
    assert fake.calls == [] and recorded == [change] and recorded[0].action == "planned"
    assert journaled(tmp_path) == []


def test_apply_mode_sends_nothing_for_an_unchanged_change_or_one_without_a_write(tmp_path: Path) -> None:
    fake = FakeClient()
    executor, recorded, _ = make_executor(tmp_path, fake)
    same = unchanged("thing", "one", "as wanted", {"x": 1})
    outside = planned(None)  # applied outside the kit (step 3's script)
    assert executor.apply(same) == (same, None) and executor.apply(outside) == (outside, None)
    assert fake.calls == [] and recorded == [same, outside] and journaled(tmp_path) == []


def test_apply_mode_sends_the_write_and_returns_the_applied_change(tmp_path: Path) -> None:
    fake = FakeClient({"id": "new-1"})
    executor, recorded, _ = make_executor(tmp_path, fake)
    applied, answer = executor.apply(planned(POST))
    assert fake.calls == [Call("POST", "/things", {"x": 1}, {}, None, False)]
    assert answer == {"id": "new-1"}
    assert (applied.action, applied.write, applied.after) == ("created", None, {"x": 1})
    assert recorded == [applied]


def test_apply_journals_the_applied_change_before_recording_it(tmp_path: Path) -> None:
    on_disk_when_recorded: list[list[dict[str, Any]]] = []
    fake = FakeClient({"id": "new-1"})
    executor, _, _ = make_executor(tmp_path, fake, record=lambda c: on_disk_when_recorded.append(journaled(tmp_path)))
    applied, _ = executor.apply(planned(POST))
    assert on_disk_when_recorded == [[applied.as_dict()]]
    [entry] = journal.read(tmp_path / "j.jsonl")
    assert (entry["kind"], entry["step"], entry["change"]["action"]) == ("change", STEP, "created")


def test_an_upsert_answered_204_is_updated_because_it_existed_already(tmp_path: Path) -> None:
    fake = FakeClient(None)
    executor, _, _ = make_executor(tmp_path, fake)
    applied, answer = executor.apply(planned(UPSERT_WRITE))
    assert answer is None
    assert applied.action == "updated" and applied.summary == "make it (it existed already)"
    assert fake.calls[0].headers == {"Prefer": "create-if-missing"} and fake.calls[0].idempotent
    assert journaled(tmp_path)[0]["action"] == "updated"


def test_an_upsert_answered_201_is_created_and_keeps_the_new_id(tmp_path: Path) -> None:
    fake = FakeClient({"id": "new-1", "secretish": "not kept"})
    executor, _, _ = make_executor(tmp_path, fake)
    applied, _ = executor.apply(planned(UPSERT_WRITE))
    assert applied.action == "created" and applied.after == {"x": 1, "id": "new-1"}
    assert journaled(tmp_path)[0]["after"] == {"x": 1, "id": "new-1"}


def test_a_lost_answer_found_by_its_confirm_read_is_not_sent_twice(tmp_path: Path) -> None:
    found = {"id": "made-1", "x": 1}
    fake = FakeClient(OutcomeUnknown("timed out"), {"value": [{"id": "other", "x": 2}, found]})
    executor, recorded, _ = make_executor(tmp_path, fake)
    applied, answer = executor.apply(planned(CONFIRMED))
    assert [(c.method, c.path) for c in fake.calls] == [("POST", "/things"), ("GET", "/things")]
    assert fake.calls[1].params == {"$top": "5"} and fake.calls[1].idempotent
    assert answer == found and applied.action == "created" and applied.after == {"x": 1, "id": "made-1"}
    assert recorded == [applied] and journaled(tmp_path) == [applied.as_dict()]


def test_a_lost_answer_its_confirm_read_does_not_find_is_sent_again(tmp_path: Path) -> None:
    fake = FakeClient(OutcomeUnknown("timed out"), {"value": [{"id": "other", "x": 2}]}, {"id": "made-2"})
    executor, _, _ = make_executor(tmp_path, fake)
    applied, _ = executor.apply(planned(CONFIRMED))
    assert [(c.method, c.path) for c in fake.calls] == [("POST", "/things"), ("GET", "/things"), ("POST", "/things")]
    assert applied.after == {"x": 1, "id": "made-2"} and len(journaled(tmp_path)) == 1


def test_a_lost_answer_without_a_confirm_read_raises_and_records_nothing(tmp_path: Path) -> None:
    fake = FakeClient(OutcomeUnknown("timed out"))
    executor, recorded, _ = make_executor(tmp_path, fake)
    with pytest.raises(OutcomeUnknown):
        executor.apply(planned(POST))
    assert len(fake.calls) == 1 and recorded == [] and journaled(tmp_path) == []


def test_a_403_on_a_write_with_needs_names_what_it_needs(tmp_path: Path) -> None:
    fake = FakeClient(graph_error(403))
    executor, recorded, _ = make_executor(tmp_path, fake)
    with pytest.raises(StepFailed) as failed:
        executor.apply(planned(replace(POST, needs=NEEDS["application"])))
    assert failed.value.fix == f"this change needs {NEEDS['application']}; sign in with an account that has it"
    assert "Insufficient privileges" in failed.value.message
    assert isinstance(failed.value.__cause__, GraphError)
    assert recorded == [] and journaled(tmp_path) == []


@pytest.mark.parametrize(("status", "needs"), [(403, ""), (400, NEEDS["application"])])
def test_other_graph_errors_are_raised_as_they_are(tmp_path: Path, status: int, needs: str) -> None:
    executor, _, _ = make_executor(tmp_path, FakeClient(graph_error(status)))
    with pytest.raises(GraphError) as failed:
        executor.apply(planned(replace(POST, needs=needs)))
    assert failed.value.status == status and not isinstance(failed.value, StepFailed)


def test_a_keep_callback_joins_its_summary_and_fields_to_the_applied_change(tmp_path: Path) -> None:
    fake = FakeClient({"id": "new-1", "secretText": "CANARYz7Q"})
    executor, _, _ = make_executor(tmp_path, fake)
    applied, _ = executor.apply(
        planned(replace(POST, keep=("id",))), keep=lambda a: {"fingerprint": "fp", "summary": "stored"}
    )
    assert applied.summary == "make it; stored"
    assert applied.after == {"x": 1, "id": "new-1", "fingerprint": "fp"}
    assert "CANARYz7Q" not in (tmp_path / "j.jsonl").read_text()


def test_a_failing_keep_callback_raises_not_kept_after_journaling_the_change(tmp_path: Path) -> None:
    fake = FakeClient({"id": "new-1"})
    executor, recorded, _ = make_executor(tmp_path, fake)

    def keep(answer: Any) -> dict[str, Any]:
        raise OSError("store is read-only")

    with pytest.raises(NotKept) as failed:
        executor.apply(planned(replace(POST, keep=("id",))), keep=keep)
    assert failed.value.applied.summary == "make it; NOT KEPT: OSError"
    assert failed.value.applied.after == {"x": 1, "id": "new-1"}
    assert isinstance(failed.value.__cause__, OSError)
    assert journaled(tmp_path) == [failed.value.applied.as_dict()]
    assert recorded == [failed.value.applied]


def test_a_closed_journal_refuses_the_write_before_anything_is_sent(tmp_path: Path) -> None:
    fake = FakeClient({"id": "new-1"})
    executor, recorded, log = make_executor(tmp_path, fake)
    log.closed = True
    with pytest.raises(StepFailed, match="record is sealed") as failed:
        executor.apply(planned(POST))
    assert failed.value.step == STEP
    assert fake.calls == [] and recorded == [] and journaled(tmp_path) == []


def test_exchange_writes_go_through_the_exchange_client(tmp_path: Path) -> None:
    graph, admin = FakeClient(), FakeClient({"value": []})
    recorded: list[Change] = []
    executor = Executor(
        {"graph": lambda: graph, "exchange": lambda: admin},
        journal.Journal(tmp_path / "j.jsonl"),
        step=STEP,
        apply=True,
        record=recorded.append,
    )
    change = exchange.diff_smtp_auth(replace(AS_WANTED, smtp_auth_disabled=True), MAILBOX)
    applied, _ = executor.apply(change)
    assert graph.calls == [] and [(c.method, c.path) for c in admin.calls] == [("POST", "/InvokeCommand")]
    assert admin.calls[0].body == change.write.body and applied.action == "updated"


# --- the plan's summary, as Terraform gives it ------------------------------------------------------------------


def _planned(name: str, outcome: str) -> Change:
    return Change("item", name, "planned", "do it", None, {"x": 1}, Write("graph", "POST", "/x"), outcome=outcome)  # type: ignore[arg-type]


def test_a_plan_counts_what_it_would_create_update_and_remove_and_marks_each_line():
    changes = [_planned("a", "created"), _planned("b", "updated"), _planned("c", "removed")]
    changes.append(unchanged("item", "d", "ok"))
    assert summary_line(changes) == "Plan: 1 to create, 1 to update, 1 to remove; 1 unchanged."
    assert [line[0] for line in changes_text(changes).splitlines()[1:]] == ["+", "~", "-", " "]
    assert pending(changes) and not pending(changes[3:])
    assert summary_line([]) == "Plan: 0 to create, 0 to update, 0 to remove; 0 unchanged."


def test_a_run_counts_what_it_did_and_a_half_done_run_both():
    done = [_planned("a", "created").applied, _planned("b", "removed").applied]
    assert summary_line(done) == "Applied: 1 created, 0 updated, 1 removed; 0 unchanged."
    assert summary_line([*done, _planned("c", "updated")]) == (
        "Plan: 0 to create, 1 to update, 0 to remove; Applied: 1 created, 0 updated, 1 removed; 0 unchanged."
    )


def test_a_planned_change_keeps_what_it_would_do_through_its_record():
    planned = _planned("a", "removed")
    assert Change.from_dict(planned.as_dict()).marker == "-"
    assert "outcome" not in planned.applied.as_dict()  # a change made says it in its action
