"""Step 3: the Office 365 mailbox: authenticated SMTP, forwarding to Webex Connect, external forwarding.

Graph checks the mailbox user (exists, enabled, has an Exchange Online mailbox, and its UPN is the
email ID Webex Connect was given). Graph has nothing for the three settings themselves, so:

* ``mailbox.apply_with: powershell`` (default, the documented way): the kit writes an Exchange Online
  PowerShell script into the record (:mod:`runbook_lib.powershell`); the operator runs it. The three
  changes are ``planned``.
* ``mailbox.apply_with: adminapi``: the same read-compare-apply through Exchange Online's admin REST
  endpoint (``InvokeCommand``, what the ExchangeOnlineManagement v3 module uses). **It is undocumented
  and unsupported by Microsoft and may change.** The operator needs an Exchange administrator role.
  The script is still written, holding only what differed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote as url_quote

import pandas as pd

from . import __version__, powershell
from .errors import GraphError, StepFailed
from .graph import odata_quote
from .records import Change

if TYPE_CHECKING:
    from .step import Step

STEP = "03_office365_mailbox"
SCRIPT_NAME = "mailbox.ps1"
USER_SELECT = "id,mail,userPrincipalName,accountEnabled"


# --- the mailbox user (Graph) --------------------------------------------------------------------

def check_mailbox_user(step: "Step") -> pd.DataFrame:
    """The mailbox user exists, is enabled, has an Exchange Online mailbox, and its UPN is the email ID."""
    upn = step.params.webex.email_id
    user = step.graph.get(f"/users/{url_quote(upn)}", params={"$select": USER_SELECT}, missing_ok=True)
    if user is None:
        by_mail = step.graph.get_all("/users", params={"$filter": f"mail eq {odata_quote(upn)}", "$select": USER_SELECT})
        if by_mail:
            raise StepFailed(f"{upn} is the mail address of {by_mail[0]['userPrincipalName']}, not its user "
                             "principal name (UPN); Webex Connect signs in and authenticates SMTP with the UPN",
                             fix=f"set webex.email_id to {by_mail[0]['userPrincipalName']} (in Webex Connect too)",
                             step="01_webex_connect_app")
        raise StepFailed(f"there is no user {upn} in this tenant",
                         fix="check webex.email_id against Microsoft 365 admin center > Users > Active users",
                         step="01_webex_connect_app")
    if not user.get("accountEnabled", True):
        raise StepFailed(f"the account {upn} is disabled: it could not sign in at Generate Token",
                         fix="unblock sign-in for the account in Microsoft 365 admin center", step=STEP)
    try:
        step.graph.get(f"/users/{user['id']}/mailboxSettings")
    except GraphError as error:
        if error.code != "MailboxNotEnabledForRESTAPI":
            raise
        raise StepFailed(f"{upn} has no Exchange Online mailbox: it has no Exchange Online licence, its mailbox "
                         "is on-premises, or the mailbox was deleted and is only soft-deleted",
                         fix="assign a licence that includes Exchange Online (and wait for the mailbox to be "
                         "created), or choose a cloud mailbox", step=STEP) from error
    defaults = step.graph.get("/policies/identitySecurityDefaultsEnforcementPolicy")
    step.facts["mailbox_user"] = {"id": user["id"], "upn": user["userPrincipalName"]}
    step.facts["security_defaults"] = bool(defaults.get("isEnabled"))
    return pd.DataFrame({"value": {
        "user principal name": user["userPrincipalName"], "account enabled": True, "Exchange Online mailbox": True,
        "security defaults": "ON: they block SMTP AUTH even when it is enabled on the mailbox; turn them off or "
                             "use Conditional Access instead" if defaults.get("isEnabled") else "off",
    }})


# --- the three settings ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MailboxState:
    """What Exchange Online says now (adminapi mode only)."""

    smtp_auth_disabled: bool | None
    tenant_smtp_auth_disabled: bool
    forwarding: str | None
    keep_copy: bool
    policy: dict[str, Any] | None
    rule: dict[str, Any] | None
    default_mode: str


def settings(step: "Step") -> powershell.Settings:
    mailbox = step.params.mailbox
    return powershell.Settings(step.params.webex.email_id, step.params.webex.forwarding_address,
                               mailbox.keep_copy, mailbox.forwarding_policy, mailbox.use_default_policy)


def invoke(step: "Step", cmdlet: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run one cmdlet through the admin API; its error's real message is nested, so dig it out."""
    body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters or {}}}
    try:
        answer = step.exchange.post("/InvokeCommand", body)
    except GraphError as error:
        raise _admin_error(cmdlet, error) from error
    return (answer or {}).get("value", [])


def _admin_error(cmdlet: str, error: GraphError) -> StepFailed:
    if error.status in (401, 403):
        return StepFailed(f"Exchange Online refused {cmdlet} (HTTP {error.status})",
                          fix="sign in as an Exchange Administrator (or Global Administrator); for automation the "
                          "application needs Exchange.ManageAsApp and the Exchange Administrator role; or use "
                          "mailbox.apply_with: powershell", step=STEP)
    inner = error.body.get("error", {})
    details = inner.get("details") or [{}]
    nested = (details[0].get("message") or
              ((inner.get("innererror") or {}).get("internalexception") or {}).get("message") or inner.get("message", ""))
    return StepFailed(f"{cmdlet} failed: {nested} (request-id {error.request_id or 'none'})",
                      fix="check the mailbox and policy names; run the generated PowerShell script to see "
                      "Exchange's full answer", step=STEP)


def read_state(step: "Step") -> MailboxState:
    """Five read-only cmdlets: the mailbox's SMTP AUTH and forwarding, the tenant's SMTP AUTH, the policies."""
    mailbox = step.params.webex.email_id
    cas = invoke(step, "Get-CASMailbox", {"Identity": mailbox})[0]
    tenant = invoke(step, "Get-TransportConfig")[0]
    box = invoke(step, "Get-Mailbox", {"Identity": mailbox})[0]
    name = step.params.mailbox.forwarding_policy
    policies = invoke(step, "Get-HostedOutboundSpamFilterPolicy")
    rules = invoke(step, "Get-HostedOutboundSpamFilterRule")
    default = next((p for p in policies if p.get("IsDefault") or p.get("Name") == "Default"), {})
    return MailboxState(
        smtp_auth_disabled=cas.get("SmtpClientAuthenticationDisabled"),
        tenant_smtp_auth_disabled=bool(tenant.get("SmtpClientAuthenticationDisabled")),
        forwarding=box.get("ForwardingSmtpAddress"), keep_copy=bool(box.get("DeliverToMailboxAndForward")),
        policy=next((p for p in policies if p.get("Name") == name), None),
        rule=next((r for r in rules if r.get("Name") == name), None),
        default_mode=str(default.get("AutoForwardingMode", "Automatic")))


def _same_address(current: str | None, wanted: str) -> bool:
    return (current or "").lower().removeprefix("smtp:") == wanted.lower()


def compare(step: "Step", state: MailboxState | None) -> dict[str, Change]:
    """Each setting as a change: ``planned`` writes where it differs (or is unknown), ``unchanged`` where not."""
    mailbox, wanted = step.params.webex.email_id, settings(step)
    unknown = state is None
    changes: dict[str, Change] = {}
    on = {"SmtpClientAuthenticationDisabled": False}
    before = None if unknown else {"SmtpClientAuthenticationDisabled": state.smtp_auth_disabled,
                                   "tenant-wide SmtpClientAuthenticationDisabled": state.tenant_smtp_auth_disabled}
    if unknown or state.smtp_auth_disabled is not False:
        changes["smtp_auth"] = Change("authenticated SMTP", mailbox, "planned", "enable SMTP AUTH for the mailbox", before, on)
    else:
        changes["smtp_auth"] = Change("authenticated SMTP", mailbox, "unchanged", "enabled", before, on)
    forward = {"ForwardingSmtpAddress": f"smtp:{wanted.forwarding_address}", "DeliverToMailboxAndForward": wanted.keep_copy}
    before = None if unknown else {"ForwardingSmtpAddress": state.forwarding, "DeliverToMailboxAndForward": state.keep_copy}
    if unknown or not _same_address(state.forwarding, wanted.forwarding_address) or state.keep_copy != wanted.keep_copy:
        summary = (f"replace forwarding to {state.forwarding.removeprefix('smtp:')} with Webex Connect's address"
                   if not unknown and state.forwarding and not _same_address(state.forwarding, wanted.forwarding_address)
                   else "forward every message to Webex Connect" + (", keeping a copy" if wanted.keep_copy else ""))
        changes["forwarding"] = Change("mailbox forwarding", mailbox, "planned", summary, before, forward)
    else:
        changes["forwarding"] = Change("mailbox forwarding", mailbox, "unchanged", "forwards to Webex Connect", before, forward)
    changes["external_forwarding"] = _compare_external(step, state)
    return changes


def _compare_external(step: "Step", state: MailboxState | None) -> Change:
    wanted, mailbox = settings(step), step.params.webex.email_id
    if wanted.use_default_policy:
        after = {"policy": "Default", "AutoForwardingMode": "On"}
        before = None if state is None else {"policy": "Default", "AutoForwardingMode": state.default_mode}
        differs = state is None or state.default_mode != "On"
        return Change("external forwarding", "Default policy", "planned" if differs else "unchanged",
                      "allow automatic forwarding for every sender (Default policy)" if differs else "allowed", before, after)
    after = {"policy": wanted.policy, "AutoForwardingMode": "On", "rule From": mailbox}
    if state is None:
        return Change("external forwarding", wanted.policy, "planned", "dedicated outbound spam policy and rule "
                      "allowing forwarding for this sender only", None, after)
    senders = [s.lower() for s in (state.rule or {}).get("From") or []]
    before = {"policy": (state.policy or {}).get("Name"), "AutoForwardingMode": (state.policy or {}).get("AutoForwardingMode"),
              "rule From": (state.rule or {}).get("From"), "Default policy AutoForwardingMode": state.default_mode}
    if state.policy and state.policy.get("AutoForwardingMode") == "On" and mailbox.lower() in senders:
        return Change("external forwarding", wanted.policy, "unchanged", "allowed for this sender", before, after)
    return Change("external forwarding", wanted.policy, "planned", "dedicated outbound spam policy and rule allowing "
                  f"forwarding for this sender only (Default policy: {state.default_mode})", before, after)


def apply(step: "Step", state: MailboxState, changes: dict[str, Change]) -> None:
    """adminapi mode: make the planned changes, each with its cmdlet(s), and record them."""
    mailbox, wanted = step.params.webex.email_id, settings(step)
    for key, change in changes.items():
        if change.action != "planned" or not step.params.apply:
            step.record(change)
            continue
        if key == "smtp_auth":
            invoke(step, "Set-CASMailbox", {"Identity": mailbox, "SmtpClientAuthenticationDisabled": False})
        elif key == "forwarding":
            invoke(step, "Set-Mailbox", {"Identity": mailbox, "ForwardingSmtpAddress": f"smtp:{wanted.forwarding_address}",
                                         "DeliverToMailboxAndForward": wanted.keep_copy})
        elif wanted.use_default_policy:
            invoke(step, "Set-HostedOutboundSpamFilterPolicy", {"Identity": "Default", "AutoForwardingMode": "On"})
        else:
            _apply_dedicated(step, state)
        new_policy = key == "external_forwarding" and not wanted.use_default_policy and state.policy is None
        step.record(Change(change.resource, change.name, "created" if new_policy else "updated",
                           change.summary, change.before, change.after))


def _apply_dedicated(step: "Step", state: MailboxState) -> None:
    name, mailbox = step.params.mailbox.forwarding_policy, step.params.webex.email_id
    if state.policy is None:
        invoke(step, "New-HostedOutboundSpamFilterPolicy", {"Name": name, "AutoForwardingMode": "On"})
    elif state.policy.get("AutoForwardingMode") != "On":
        invoke(step, "Set-HostedOutboundSpamFilterPolicy", {"Identity": name, "AutoForwardingMode": "On"})
    if state.rule is None:
        invoke(step, "New-HostedOutboundSpamFilterRule", {"Name": name, "HostedOutboundSpamFilterPolicy": name,
                                                          "From": [mailbox]})
    elif mailbox.lower() not in [s.lower() for s in state.rule.get("From") or []]:
        invoke(step, "Set-HostedOutboundSpamFilterRule", {"Identity": name, "From": list(state.rule["From"]) + [mailbox]})


def configure(step: "Step") -> pd.DataFrame:
    """Read (adminapi), compare, apply or plan, and write the script; returns the changes as a table."""
    state = read_state(step) if step.params.mailbox.apply_with == "adminapi" else None
    if state is not None:
        step.facts["tenant_smtp_auth_disabled"] = state.tenant_smtp_auth_disabled
        step.facts["default_forwarding_mode"] = state.default_mode
    changes = compare(step, state)
    if state is None:
        for change in changes.values():
            step.record(change)
    else:
        apply(step, state, changes)
    differing = {key for key, change in changes.items() if change.action == "planned"}
    text = powershell.script(settings(step), tenant=step.params.tenant, version=__version__,
                             date=step.clock.now().date().isoformat(), sections=differing)
    step.artifact(SCRIPT_NAME, text)
    return step.changes()
