"""What can stop mail even when everything the kit configured is right: verify judges these too.

* **Security defaults** block SMTP AUTH for every mailbox, whatever the mailbox's own setting: a fail.
* **Conditional Access** policies that may apply to the mailbox user's sign-in (Generate Token, and Webex
  Connect's later refreshes) or to the application are listed, read-only, as warnings: whether one blocks
  depends on where and how the sign-in happens, which only the sign-in logs tell.
* **External forwarding** can still be stopped after the kit's outbound spam rule allows it: by the remote
  domain of the forwarding address (``AutoForwardEnabled``), by a mail flow (transport) rule that
  redirects, rejects or deletes, or by an outbound spam rule of higher priority (a lower number) whose
  policy does not allow forwarding. Exchange's admin API reads them; in PowerShell mode the step 3 script
  checks them and verify says ``not tested``.

The judging functions are pure (values in, findings out), so tests hold them to Exchange's and Entra's
documented rules without a tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import GraphError, OutcomeUnknown, StepFailed
from . import exchange, exchange_admin

if TYPE_CHECKING:
    from ..context.checks import Checks
    from ..context.step import Step

#: Conditional Access names Exchange Online by its appId, or all of Office 365 by this word
EXCHANGE_APP_IDS = ("00000002-0000-0ff1-ce00-000000000000", "Office365")
#: the client app types of Generate Token's browser sign-in and Webex Connect's refreshes
MODERN_CLIENTS = {"all", "browser", "mobileAppsAndDesktopClients"}
#: transport rule actions that stop a forwarded copy reaching Webex Connect
STOPPING_ACTIONS = (
    "RedirectMessageTo",
    "RejectMessageReasonText",
    "RejectMessageEnhancedStatusCode",
    "DeleteMessage",
    "Quarantine",
)


@dataclass(frozen=True)
class Blocker:
    """One policy, domain or rule that may stop mail, and why it applies here."""

    kind: str
    name: str
    why: str


# --- security defaults ---------------------------------------------------------------------------------------


def security_defaults(step: Step, checks: Checks) -> None:
    """Security defaults on is a fail whatever the mailbox says: Exchange refuses SMTP AUTH (5.7.139). Read
    with the mailbox user (:func:`runbook_lib.tenant.exchange.check_mailbox_user`), which must run first."""
    enabled = step.facts.security_defaults
    if enabled is None:
        checks.add(
            "security defaults",
            "not tested",
            "could not be read (see the warnings): check Microsoft Entra admin center > Overview > Properties",
            code="security_defaults_on",
        )
    elif enabled:
        checks.add(
            "security defaults",
            "fail",
            "security defaults are on: Exchange Online refuses SMTP AUTH for every mailbox, whatever the "
            "mailbox's own setting, so Webex Connect cannot send",
            code="security_defaults_on",
        )
    else:
        checks.add("security defaults", "pass", "off: they do not block SMTP AUTH")


# --- assignment ----------------------------------------------------------------------------------------------


def assignment(step: Step, checks: Checks, sp: dict[str, Any] | None) -> None:
    """An application that requires assignment refuses every user not assigned to it (AADSTS50105), the
    mailbox user at Generate Token included."""
    user_id = (step.facts.mailbox_user or {}).get("id")
    if sp is None or not user_id:
        return
    if not sp.get("appRoleAssignmentRequired"):
        checks.add("user assignment", "pass", "the application does not require users to be assigned")
        return
    assigned = any(a.get("resourceId") == sp["id"] for a in step.graph.get_all(f"/users/{user_id}/appRoleAssignments"))
    if assigned:
        checks.add("user assignment", "pass", "the application requires assignment, and the mailbox user is assigned")
    else:
        checks.add(
            "user assignment",
            "fail",
            "the application requires assignment and the mailbox user is not assigned: Generate Token is "
            "refused with AADSTS50105",
            code="AADSTS50105",
        )


# --- Conditional Access ----------------------------------------------------------------------------------------


def _listed(section: dict[str, Any], key: str, *values: str) -> bool:
    listed = {str(v).lower() for v in section.get(key) or []}
    return bool(listed & {v.lower() for v in values if v})


def conditional_access_applies(policy: dict[str, Any], user_id: str, app_id: str) -> str:
    """Why ``policy`` may apply to the mailbox user signing in to the application or to Exchange Online, or
    "" when it cannot. Group and role membership is not expanded: a policy on groups or roles *may* apply."""
    if policy.get("state") not in ("enabled", "enabledForReportingButNotEnforced"):
        return ""
    conditions = policy.get("conditions") or {}
    if not set(conditions.get("clientAppTypes") or ["all"]) & MODERN_CLIENTS:
        return ""  # legacy authentication only: Generate Token and the refreshes after it are modern sign-ins
    users = conditions.get("users") or {}
    apps = conditions.get("applications") or {}
    if _listed(users, "excludeUsers", user_id) or _listed(apps, "excludeApplications", app_id, *EXCHANGE_APP_IDS):
        return ""
    if _listed(users, "includeUsers", "All", user_id):
        who = "the mailbox user"
    elif users.get("includeGroups") or users.get("includeRoles"):
        who = "groups or roles that may include the mailbox user"
    else:
        return ""
    if _listed(apps, "includeApplications", "All"):
        what = "every application"
    elif _listed(apps, "includeApplications", app_id):
        what = "this application"
    elif _listed(apps, "includeApplications", *EXCHANGE_APP_IDS):
        what = "Exchange Online"
    else:
        return ""
    controls = ", ".join((policy.get("grantControls") or {}).get("builtInControls") or []) or "session controls"
    report_only = " (report-only: logged, not enforced)" if policy["state"] != "enabled" else ""
    return f"applies to {who} signing in to {what}; requires {controls}{report_only}"


def conditional_access(step: Step, checks: Checks, app: dict[str, Any] | None) -> None:
    """List (read-only) the Conditional Access policies that may apply to the mailbox user's sign-in."""
    user = step.facts.mailbox_user or {}
    try:
        policies = step.graph.get_all("/identity/conditionalAccess/policies")
    except (GraphError, OutcomeUnknown) as error:
        checks.add(
            "Conditional Access",
            "not tested",
            f"the policies could not be read ({error.message.splitlines()[0]}); a Security Reader or Global "
            "Reader can list them in Microsoft Entra admin center > Protection > Conditional Access",
            code="conditional_access",
        )
        return
    found = [
        Blocker("Conditional Access", str(p.get("displayName")), why)
        for p in policies
        if (why := conditional_access_applies(p, str(user.get("id", "")), str((app or {}).get("appId", ""))))
    ]
    if not found:
        checks.add(
            "Conditional Access",
            "pass",
            f"none of the tenant's {len(policies)} policies applies to the mailbox user or the application",
        )
    for blocker in found:
        checks.add(f"Conditional Access: {blocker.name}", "warn", blocker.why, code="conditional_access")


# --- external forwarding: remote domains, mail flow rules, outbound spam rules -----------------------------------


def remote_domain_for(domains: list[dict[str, Any]], address: str) -> dict[str, Any] | None:
    """The remote domain Exchange applies to ``address``: the most specific of an exact domain, a ``*.``
    wildcard that covers it, and the Default (``*``)."""
    domain = address.rsplit("@", 1)[-1].lower()

    def covers(entry: dict[str, Any]) -> bool:
        name = str(entry.get("DomainName", "")).lower()
        return name in (domain, "*") or (name.startswith("*.") and domain.endswith(name[1:]))

    matching = [d for d in domains if covers(d)]
    return max(matching, key=lambda d: len(str(d.get("DomainName", ""))), default=None)


def transport_rules_that_stop(rules: list[dict[str, Any]], mailbox: str, forward_to: str) -> list[Blocker]:
    """Enforced mail flow rules that may redirect, reject, delete or quarantine the forwarded copy. Exchange
    evaluates more conditions than these; a rule is listed when nothing here rules it out."""
    domain = forward_to.rsplit("@", 1)[-1].lower()
    found = []
    for rule in rules:
        if rule.get("State", "Enabled") != "Enabled" or rule.get("Mode", "Enforce") != "Enforce":
            continue
        actions = [a for a in STOPPING_ACTIONS if rule.get(a)]
        senders = [str(s).lower() for s in rule.get("From") or []]
        recipient_domains = [str(d).lower() for d in rule.get("RecipientDomainIs") or []]
        if (
            not actions
            or (senders and mailbox.lower() not in senders)
            or mailbox.lower() in [str(s).lower() for s in rule.get("ExceptIfFrom") or []]
            or rule.get("SentToScope") not in (None, "", "NotInOrganization")
            or rule.get("FromScope") not in (None, "", "InOrganization")
            or rule.get("MessageTypeMatches") not in (None, "", "AutoForward")
            or (recipient_domains and not any(domain == d or domain.endswith("." + d) for d in recipient_domains))
        ):
            continue
        found.append(Blocker("mail flow rule", str(rule.get("Name")), "its action: " + ", ".join(actions)))
    return found


def _sender_in(rule: dict[str, Any], mailbox: str) -> str:
    """Whether an outbound spam rule covers the sender: "yes", "maybe" (a group), or ""."""
    if mailbox.lower() in [str(s).lower() for s in rule.get("From") or []]:
        return "yes"
    domain = mailbox.rsplit("@", 1)[-1].lower()
    if domain in [str(d).lower() for d in rule.get("SenderDomainIs") or []]:
        return "yes"
    return "maybe" if rule.get("FromMemberOf") else ""


def spam_rules_first(
    rules: list[dict[str, Any]], policies: list[dict[str, Any]], mailbox: str, kit_rule: str | None
) -> list[tuple[Blocker, bool]]:
    """Outbound spam rules Exchange applies before the kit's (a lower ``Priority``; every custom rule comes
    before the Default policy) to this sender whose policy does not turn forwarding on. The flag says whether
    the rule surely covers the sender (rather than through a group)."""
    mine = next((r for r in rules if str(r.get("Name", "")).lower() == (kit_rule or "").lower()), None)
    before = float(mine.get("Priority", 0)) if mine else float("inf")
    modes = {str(p.get("Name", "")).lower(): str(p.get("AutoForwardingMode", "Automatic")) for p in policies}
    found = []
    for rule in rules:
        covered = _sender_in(rule, mailbox)
        mode = modes.get(str(rule.get("HostedOutboundSpamFilterPolicy", "")).lower(), "Automatic")
        if rule is mine or rule.get("State", "Enabled") != "Enabled" or not covered or mode == "On":
            continue
        if float(rule.get("Priority", 0)) < before:
            why = (
                f"priority {rule.get('Priority')} comes before the kit's rule; its policy "
                f"{rule.get('HostedOutboundSpamFilterPolicy')} has AutoForwardingMode {mode}"
                + ("" if covered == "yes" else " (it covers the sender if they are in its groups)")
            )
            found.append((Blocker("outbound spam rule", str(rule.get("Name")), why), covered == "yes"))
    return found


def forwarding(step: Step, checks: Checks, state: exchange.MailboxState | None) -> None:
    """What else can stop the forwarded copy reaching Webex Connect: read with the admin API, beside step 3's
    ``state`` (whose outbound spam policies and rules it reuses); not tested without it."""
    if state is None:
        checks.add(
            "external forwarding blockers",
            "not tested",
            "remote domains, mail flow rules and outbound spam rules are read by the admin API "
            "(mailbox.apply_with: adminapi); the step 3 script checks them when it runs",
            code="forwarding_blockers_not_read",
        )
        return
    mailbox, forward_to = step.params.webex.email_id, step.params.webex.forwarding_address
    try:
        domain = remote_domain_for(exchange_admin.invoke(step, "Get-RemoteDomain"), forward_to)
        rules = exchange_admin.invoke(step, "Get-TransportRule")
    except (StepFailed, OutcomeUnknown) as error:
        checks.add("external forwarding blockers", "not tested", f"not read: {error}", code="forwarding_blockers")
        return
    if domain is not None and domain.get("AutoForwardEnabled") is False:
        checks.add(
            f"remote domain {domain.get('Identity')}",
            "fail",
            f"AutoForwardEnabled is off for {domain.get('DomainName')}, which covers {forward_to}: "
            "Exchange drops automatically forwarded mail to it",
            code="remote_domain_blocks",
        )
    else:
        checks.add(
            "remote domain",
            "pass",
            f"{(domain or {}).get('Identity', 'Default')} allows automatic forwarding to {forward_to}",
        )
    stopping = transport_rules_that_stop(rules, mailbox, forward_to)
    for blocker in stopping:
        checks.add(f"mail flow rule: {blocker.name}", "warn", blocker.why, code="transport_rule_stops")
    if not stopping:
        checks.add("mail flow rules", "pass", f"none of {len(rules)} redirects, rejects or deletes forwarded mail")
    kit_rule = None if step.params.mailbox.use_default_policy else step.params.mailbox.forwarding_policy
    for blocker, sure in spam_rules_first(list(state.spam_rules), list(state.spam_policies), mailbox, kit_rule):
        checks.add(
            f"outbound spam rule: {blocker.name}", "fail" if sure else "warn", blocker.why, code="spam_rule_first"
        )
