"""Step 3: the Office 365 mailbox: authenticated SMTP, forwarding to Webex Connect, external forwarding.

**The mailbox user, from Graph**, with what an administrator's delegated token may read for *another* user
(``User.Read.All``): the user exists, is enabled, its UPN is the email ID Webex Connect was given, and
Exchange Online is provisioned for it (``provisionedPlans`` with ``service: exchange``). The kit does not
read ``/users/{id}/mailboxSettings``: delegated ``MailboxSettings.Read`` reaches only the signed-in user's
own mailbox, so an administrator gets 403 for anyone else. What Graph cannot tell, a shared mailbox (no
plans, sign-in blocked) or an on-premises one (``mail`` set, no Exchange Online plan), the kit learns from
Exchange itself: the admin API's ``Get-Mailbox`` (``RecipientTypeDetails``) or the PowerShell script's own
first check.

**The three settings**, which Graph cannot read or write:

* ``mailbox.apply_with: powershell`` (default, the documented way): the kit writes an Exchange Online
  PowerShell script into the record (:mod:`runbook_lib.tenant.powershell`); the operator runs it. The changes are
  ``planned``: the kit cannot see them happen.
* ``mailbox.apply_with: adminapi``: read-compare-apply through Exchange Online's admin REST endpoint
  (``InvokeCommand``, what the ExchangeOnlineManagement v3 module uses). **It is undocumented and unsupported
  by Microsoft and may change.** The operator needs an Exchange administrator role. The script is still
  written, holding only what differed.

Optional reads (security defaults, the tenant-wide SMTP AUTH setting) that fail become warnings with their
reason: no write depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote as url_quote

import pandas as pd

from .. import __version__
from ..config import registry
from ..engine.changes import Change, unchanged
from ..errors import GraphError, OutcomeUnknown, StepFailed
from ..wire.graph import odata_quote
from . import powershell
from .exchange_admin import admin_error, cmdlet_write, invoke

if TYPE_CHECKING:
    from ..context.step import Step

STEP = registry.MAILBOX
SCRIPT_NAME = "mailbox.ps1"
USER_SELECT = "id,mail,userPrincipalName,accountEnabled,assignedPlans,provisionedPlans"


# --- the mailbox user (Graph) --------------------------------------------------------------------


@dataclass(frozen=True)
class MailboxKind:
    """What Graph (and, where it can, Exchange) says about the user's mailbox."""

    kind: str  # "Exchange Online", "being provisioned", "none", "unknown from Graph", "shared", ...
    usable: bool | None  # None: Graph cannot tell; Exchange (admin API or the script) decides
    explanation: str


def mailbox_kind(user: dict[str, Any]) -> MailboxKind:
    """Decide from ``provisionedPlans`` (and ``mail``) what Graph can know about the user's mailbox."""
    plans = [p for p in user.get("provisionedPlans") or [] if str(p.get("service", "")).lower() == "exchange"]
    if any(p.get("provisioningStatus") == "Success" and p.get("capabilityStatus") == "Enabled" for p in plans):
        return MailboxKind("Exchange Online", True, "Exchange Online is provisioned for the user")
    if any(str(p.get("provisioningStatus", "")).startswith("Pending") for p in plans):
        return MailboxKind(
            "being provisioned",
            False,
            "Exchange Online is still being provisioned for the user (a licence was assigned recently)",
        )
    if not user.get("mail"):
        return MailboxKind("none", False, "the user has no mailbox: no Exchange Online licence, and no mail address")
    return MailboxKind(
        "unknown from Graph",
        None,
        "the user has a mail address but no Exchange Online plan: a "
        "shared mailbox, a mailbox on-premises, or a licence removed; Graph cannot tell which",
    )


def check_mailbox_user(step: Step) -> pd.DataFrame:
    """The mailbox user exists, is enabled, its UPN is the email ID, and Exchange Online serves its mailbox."""
    upn = step.params.webex.email_id
    user = step.graph.get(f"/users/{url_quote(upn)}", params={"$select": USER_SELECT}, missing_ok=True)
    if user is None:
        by_mail = step.graph.get_all(
            "/users", params={"$filter": f"mail eq {odata_quote(upn)}", "$select": USER_SELECT}
        )
        if by_mail:
            raise StepFailed(
                f"{upn} is the mail address of {by_mail[0]['userPrincipalName']}, not its user "
                "principal name (UPN); Webex Connect signs in and authenticates SMTP with the UPN",
                fix=f"set webex.email_id to {by_mail[0]['userPrincipalName']} (in Webex Connect too)",
                step=registry.WEBEX_VALUES,
            )
        raise StepFailed(
            f"there is no user {upn} in this tenant",
            fix="check webex.email_id against Microsoft 365 admin center > Users > Active users",
            step=registry.WEBEX_VALUES,
        )
    kind = mailbox_kind(user)
    if kind.usable is False:
        raise StepFailed(
            f"{upn}: {kind.explanation}",
            fix="assign a licence that includes Exchange Online and wait until the mailbox exists "
            "(minutes to hours), or choose a cloud mailbox",
            step=STEP,
        )
    if not user.get("accountEnabled", True) and kind.usable:
        raise StepFailed(
            f"the account {upn} is disabled: its sign-in at Generate Token, and every token refresh Webex Connect "
            "makes, would be refused (AADSTS50057)",
            fix="unblock sign-in for the account in Microsoft 365 admin center",
            step=STEP,
        )
    step.facts.mailbox_user = {"id": user["id"], "upn": user["userPrincipalName"]}
    step.facts.mailbox_kind = kind.kind
    if kind.usable is None:
        step.facts.warn(
            f"{upn}: {kind.explanation}. "
            + (
                "The admin API's Get-Mailbox decides below."
                if step.params.mailbox.apply_with == "adminapi"
                else "The PowerShell script checks it first (Get-EXOMailbox) and stops for an on-premises mailbox."
            )
        )
    defaults = security_defaults(step)
    return pd.DataFrame(
        {
            "value": {
                "user principal name": user["userPrincipalName"],
                "account enabled": bool(user.get("accountEnabled", True)),
                "mailbox (from Graph)": kind.explanation,
                "security defaults": {
                    True: "ON: they block SMTP AUTH even when it is enabled on the mailbox; turn them off "
                    "or use Conditional Access instead",
                    False: "off",
                    None: "not read (see the warnings)",
                }[defaults],
            }
        }
    )


def security_defaults(step: Step) -> bool | None:
    """Whether security defaults are on: an optional read, a warning when it fails."""
    try:
        defaults = step.graph.get("/policies/identitySecurityDefaultsEnforcementPolicy")
    except (GraphError, OutcomeUnknown) as error:
        step.facts.warn(
            f"security defaults could not be read ({error.message.splitlines()[0]}); they block SMTP AUTH "
            "when on: check Microsoft Entra admin center > Properties > Manage security defaults"
        )
        return None
    step.facts.security_defaults = bool(defaults.get("isEnabled"))
    return step.facts.security_defaults


# --- Exchange's own answers (admin API) -------------------------------------------------------------


def settings(step: Step) -> powershell.Settings:
    mailbox = step.params.mailbox
    return powershell.Settings(
        step.params.webex.email_id,
        step.params.webex.forwarding_address,
        mailbox.keep_copy,
        mailbox.forwarding_policy,
        mailbox.use_default_policy,
    )


@dataclass(frozen=True)
class MailboxState:
    """What Exchange Online says now (adminapi mode only)."""

    recipient_type: str
    smtp_auth_disabled: bool | None
    tenant_smtp_auth_disabled: bool | None
    forwarding: str | None
    keep_copy: bool
    policy: dict[str, Any] | None
    rule: dict[str, Any] | None
    default_mode: str
    #: what a recipient filter matches the mailbox by (RBAC for Applications' scope)
    primary_smtp_address: str = ""
    #: every outbound spam policy and rule, for verify's judgement of rules applied before the kit's
    spam_policies: tuple[dict[str, Any], ...] = ()
    spam_rules: tuple[dict[str, Any], ...] = ()


def read_state(step: Step) -> MailboxState:
    """Read-only cmdlets: the mailbox (its type, SMTP AUTH, forwarding), the tenant's SMTP AUTH, the policies."""
    mailbox = step.params.webex.email_id
    box = invoke(
        step,
        "Get-Mailbox",
        {"Identity": mailbox},
        missing=StepFailed(
            f"Exchange Online has no mailbox {mailbox}: it is on-premises, or has no Exchange Online licence",
            fix="choose a cloud mailbox, or assign an Exchange Online licence and wait for the mailbox to be created",
            step=STEP,
        ),
    )[0]
    recipient_type = str(box.get("RecipientTypeDetails", "UserMailbox"))
    if recipient_type == "SharedMailbox":
        step.facts.warn(
            f"{mailbox} is a shared mailbox: nobody signs in to it (sign-in is blocked by design), so at "
            "Generate Token Webex Connect needs 'Login ID For Generating Token': a licensed user with "
            "Send As on the shared mailbox, whose own SMTP AUTH must be on"
        )
    step.facts.mailbox_kind = recipient_type
    cas = invoke(step, "Get-CASMailbox", {"Identity": mailbox})[0]
    name = step.params.mailbox.forwarding_policy
    policies = invoke(step, "Get-HostedOutboundSpamFilterPolicy")
    rules = invoke(step, "Get-HostedOutboundSpamFilterRule")
    default = next((p for p in policies if p.get("IsDefault") or p.get("Name") == "Default"), {})
    return MailboxState(
        recipient_type=recipient_type,
        smtp_auth_disabled=cas.get("SmtpClientAuthenticationDisabled"),
        tenant_smtp_auth_disabled=tenant_smtp_auth_disabled(step),
        forwarding=box.get("ForwardingSmtpAddress"),
        keep_copy=bool(box.get("DeliverToMailboxAndForward")),
        policy=next((p for p in policies if p.get("Name") == name), None),
        rule=next((r for r in rules if r.get("Name") == name), None),
        default_mode=str(default.get("AutoForwardingMode", "Automatic")),
        primary_smtp_address=str(box.get("PrimarySmtpAddress") or mailbox),
        spam_policies=tuple(policies),
        spam_rules=tuple(rules),
    )


def tenant_smtp_auth_disabled(step: Step) -> bool | None:
    """The tenant-wide SMTP AUTH setting (the mailbox's own wins): optional, a warning when unreadable."""
    try:
        value = bool(invoke(step, "Get-TransportConfig")[0].get("SmtpClientAuthenticationDisabled"))
    except (StepFailed, OutcomeUnknown, IndexError) as error:
        step.facts.warn(
            f"the tenant-wide SMTP AUTH setting could not be read ({error}); the mailbox's own setting decides anyway"
        )
        return None
    step.facts.tenant_smtp_auth_disabled = value
    return value


# --- the settings as changes ---------------------------------------------------------------------------


def _same_address(current: str | None, wanted: str) -> bool:
    return (current or "").lower().removeprefix("smtp:") == wanted.lower()


def diff_smtp_auth(state: MailboxState | None, mailbox: str) -> Change:
    on = {"SmtpClientAuthenticationDisabled": False}
    if state is not None and state.smtp_auth_disabled is False:
        return unchanged("authenticated SMTP", mailbox, "enabled", on)
    before = (
        None
        if state is None
        else {
            "SmtpClientAuthenticationDisabled": state.smtp_auth_disabled,
            "tenant-wide SmtpClientAuthenticationDisabled": state.tenant_smtp_auth_disabled,
        }
    )
    return Change(
        "authenticated SMTP",
        mailbox,
        "planned",
        "enable SMTP AUTH for the mailbox",
        before,
        on,
        cmdlet_write("Set-CASMailbox", {"Identity": mailbox, "SmtpClientAuthenticationDisabled": False})
        if state is not None
        else None,
    )


def diff_forwarding(state: MailboxState | None, wanted: powershell.Settings) -> Change:
    forward = {
        "ForwardingSmtpAddress": f"smtp:{wanted.forwarding_address}",
        "DeliverToMailboxAndForward": wanted.keep_copy,
    }
    if (
        state is not None
        and _same_address(state.forwarding, wanted.forwarding_address)
        and state.keep_copy == wanted.keep_copy
    ):
        return unchanged("mailbox forwarding", wanted.mailbox, "forwards to Webex Connect", forward)
    replacing = (
        state is not None and state.forwarding and not _same_address(state.forwarding, wanted.forwarding_address)
    )
    summary = (
        f"replace forwarding to {(state.forwarding or '').removeprefix('smtp:')} with Webex Connect's address"
        if state is not None and replacing
        else "forward every message to Webex Connect" + (", keeping a copy" if wanted.keep_copy else "")
    )
    before = (
        None
        if state is None
        else {"ForwardingSmtpAddress": state.forwarding, "DeliverToMailboxAndForward": state.keep_copy}
    )
    return Change(
        "mailbox forwarding",
        wanted.mailbox,
        "planned",
        summary,
        before,
        forward,
        cmdlet_write("Set-Mailbox", {"Identity": wanted.mailbox, **forward}) if state is not None else None,
    )


def diff_external_forwarding(state: MailboxState | None, wanted: powershell.Settings) -> list[Change]:
    """Automatic forwarding to an external address: the Default policy when asked, else a dedicated outbound
    spam policy and a rule scoped to this one sender (two changes, each one write)."""
    if wanted.use_default_policy:
        after = {"policy": "Default", "AutoForwardingMode": "On"}
        if state is not None and state.default_mode == "On":
            return [unchanged("external forwarding", "Default policy", "allowed", after)]
        return [
            Change(
                "external forwarding",
                "Default policy",
                "planned",
                "allow automatic forwarding for every sender (Default policy)",
                None if state is None else {"AutoForwardingMode": state.default_mode},
                after,
                cmdlet_write("Set-HostedOutboundSpamFilterPolicy", {"Identity": "Default", "AutoForwardingMode": "On"})
                if state is not None
                else None,
            )
        ]
    return [_diff_policy(state, wanted), _diff_rule(state, wanted)]


def _diff_policy(state: MailboxState | None, wanted: powershell.Settings) -> Change:
    after = {"AutoForwardingMode": "On"}
    policy = state.policy if state is not None else None
    if policy is not None and policy.get("AutoForwardingMode") == "On":
        return unchanged("outbound spam policy", wanted.policy, "allows automatic forwarding", after)
    default = f" (Default policy: {state.default_mode})" if state is not None else ""
    if policy is None:
        return Change(
            "outbound spam policy",
            wanted.policy,
            "planned",
            f"create a dedicated policy allowing automatic forwarding{default}",
            None,
            after,
            cmdlet_write("New-HostedOutboundSpamFilterPolicy", {"Name": wanted.policy, "AutoForwardingMode": "On"})
            if state is not None
            else None,
            outcome="created",
        )
    return Change(
        "outbound spam policy",
        wanted.policy,
        "planned",
        "allow automatic forwarding",
        {"AutoForwardingMode": policy.get("AutoForwardingMode")},
        after,
        cmdlet_write("Set-HostedOutboundSpamFilterPolicy", {"Identity": wanted.policy, "AutoForwardingMode": "On"}),
    )


def _diff_rule(state: MailboxState | None, wanted: powershell.Settings) -> Change:
    rule = state.rule if state is not None else None
    senders = list((rule or {}).get("From") or [])
    if rule is not None and wanted.mailbox.lower() in [s.lower() for s in senders]:
        return unchanged("outbound spam rule", wanted.policy, "covers this sender", {"From": senders})
    if rule is None:
        return Change(
            "outbound spam rule",
            wanted.policy,
            "planned",
            "create a rule applying the policy to this sender only",
            None,
            {"From": [wanted.mailbox]},
            cmdlet_write(
                "New-HostedOutboundSpamFilterRule",
                {"Name": wanted.policy, "HostedOutboundSpamFilterPolicy": wanted.policy, "From": [wanted.mailbox]},
            )
            if state is not None
            else None,
            outcome="created",
        )
    return Change(
        "outbound spam rule",
        wanted.policy,
        "planned",
        "add this sender to the rule",
        {"From": senders},
        {"From": senders + [wanted.mailbox]},
        cmdlet_write(
            "Set-HostedOutboundSpamFilterRule", {"Identity": wanted.policy, "From": senders + [wanted.mailbox]}
        ),
    )


#: the script's section for each kind of change
SECTIONS = {
    "authenticated SMTP": "smtp_auth",
    "mailbox forwarding": "forwarding",
    "external forwarding": "external_forwarding",
    "outbound spam policy": "external_forwarding",
    "outbound spam rule": "external_forwarding",
}


def diff_mailbox(state: MailboxState | None, wanted: powershell.Settings) -> list[Change]:
    """Every setting as a change: ``planned`` where it differs (or is unknown: powershell mode), else ``unchanged``.
    Without a state (powershell mode) the changes carry no write: the script applies them."""
    return [
        diff_smtp_auth(state, wanted.mailbox),
        diff_forwarding(state, wanted),
        *diff_external_forwarding(state, wanted),
    ]


def configure(step: Step) -> pd.DataFrame:
    """Read (adminapi), diff, apply or plan, and write the script; returns the changes as a table."""
    state = read_state(step) if step.params.mailbox.apply_with == "adminapi" else None
    if state is not None:
        step.facts.default_forwarding_mode = state.default_mode
    from . import rbac

    wanted = settings(step)
    scoped, least_privilege = rbac.changes(step, state.primary_smtp_address if state else "", read=state is not None)
    changes = diff_mailbox(state, wanted) + least_privilege
    for change in changes:
        try:
            step.executor.apply(change)
        except GraphError as error:
            cmdlet = change.write.body["CmdletInput"]["CmdletName"] if change.write else change.resource
            raise admin_error(cmdlet, error) from error
    differing = {{**SECTIONS, **rbac.SECTIONS}[c.resource] for c in changes if c.action != "unchanged"}
    text = powershell.script(
        wanted,
        tenant=step.params.tenant,
        version=__version__,
        date=step.clock.now().date().isoformat(),
        sections=differing,
        scoped=scoped if least_privilege else None,
    )
    step.artifact(SCRIPT_NAME, text)
    return step.changes()
