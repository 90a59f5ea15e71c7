"""What can stop mail beyond the kit's settings, judged by Exchange's and Entra ID's documented rules."""

from __future__ import annotations

import pytest

from runbook_lib.tenant import blockers

pytestmark = pytest.mark.unit

USER, APP = "5f0c3a5e-0000-4000-8000-000000000001", "9a1b2c3d-0000-4000-8000-000000000002"
MAILBOX, FORWARD = "support@contoso.com", "a41a0ba3566ed2091155f13e48e6d4f8@mail-us.imiconnect.io"


def policy(**conditions) -> dict:
    users = conditions.pop("users", {"includeUsers": ["All"]})
    apps = conditions.pop("applications", {"includeApplications": ["All"]})
    return {
        "displayName": "p",
        "state": conditions.pop("state", "enabled"),
        "conditions": {"users": users, "applications": apps, **conditions},
        "grantControls": {"builtInControls": ["mfa"]},
    }


@pytest.mark.parametrize(
    ("given", "applies"),
    [
        (policy(), "the mailbox user signing in to every application; requires mfa"),
        (policy(users={"includeUsers": [USER]}, applications={"includeApplications": [APP]}), "this application"),
        (policy(applications={"includeApplications": ["Office365"]}), "Exchange Online"),
        (policy(users={"includeGroups": ["g"]}), "groups or roles that may include"),
        (policy(state="enabledForReportingButNotEnforced"), "report-only"),
        (policy(state="disabled"), ""),
        (policy(users={"includeUsers": ["All"], "excludeUsers": [USER]}), ""),
        (policy(applications={"includeApplications": ["All"], "excludeApplications": ["Office365"]}), ""),
        (policy(applications={"includeApplications": ["someone-else"]}), ""),
        (policy(users={"includeUsers": ["another-user"]}), ""),
        # a legacy-authentication policy does not touch Generate Token's modern sign-in
        (policy(clientAppTypes=["exchangeActiveSync", "other"]), ""),
        (policy(clientAppTypes=["browser"]), "every application"),
    ],
)
def test_conditional_access_policy_applies_when_its_conditions_cover_the_sign_in(given, applies):
    why = blockers.conditional_access_applies(given, USER, APP)
    assert (applies in why) if applies else why == ""


def domain(identity: str, name: str, enabled: bool) -> dict:
    return {"Identity": identity, "DomainName": name, "AutoForwardEnabled": enabled}


def test_the_most_specific_remote_domain_decides():
    default = domain("Default", "*", True)
    wildcard = domain("Webex", "*.imiconnect.io", False)
    exact = domain("Webex US", "mail-us.imiconnect.io", True)
    assert blockers.remote_domain_for([default], FORWARD) is default
    assert blockers.remote_domain_for([default, wildcard], FORWARD) is wildcard
    assert blockers.remote_domain_for([exact, default, wildcard], FORWARD) is exact
    assert blockers.remote_domain_for([default, domain("Other", "*.example.com", False)], FORWARD) is default


def rule(**fields) -> dict:
    return {"Name": "r", "State": "Enabled", "Mode": "Enforce", **fields}


@pytest.mark.parametrize(
    ("given", "stops"),
    [
        (rule(RedirectMessageTo=["audit@contoso.com"]), True),
        (rule(Quarantine=True, MessageTypeMatches="AutoForward", SentToScope="NotInOrganization"), True),
        (rule(DeleteMessage=True, From=[MAILBOX]), True),
        (rule(RejectMessageReasonText="no", RecipientDomainIs=["imiconnect.io"]), True),
        (rule(DeleteMessage=True, From=["someone@contoso.com"]), False),
        (rule(DeleteMessage=True, ExceptIfFrom=[MAILBOX]), False),
        (rule(DeleteMessage=True, MessageTypeMatches="Encrypted"), False),
        (rule(DeleteMessage=True, SentToScope="InOrganization"), False),
        (rule(DeleteMessage=True, RecipientDomainIs=["example.com"]), False),
        (rule(DeleteMessage=True, Mode="Audit"), False),
        (rule(DeleteMessage=True, State="Disabled"), False),
        (rule(SetSCL=-1), False),  # an action that does not stop mail
    ],
)
def test_mail_flow_rules_that_may_stop_the_forwarded_copy(given, stops):
    assert bool(blockers.transport_rules_that_stop([given], MAILBOX, FORWARD)) is stops


POLICIES = [
    {"Name": "Default", "AutoForwardingMode": "Automatic"},
    {"Name": "Webex Connect forwarding", "AutoForwardingMode": "On"},
    {"Name": "Strict", "AutoForwardingMode": "Off"},
    {"Name": "Open", "AutoForwardingMode": "On"},
]
KIT = {"Name": "Webex Connect forwarding", "HostedOutboundSpamFilterPolicy": "Webex Connect forwarding", "Priority": 1}


def spam_rule(priority: int, policy: str = "Strict", **who) -> dict:
    return {"Name": f"{policy} {priority}", "HostedOutboundSpamFilterPolicy": policy, "Priority": priority, **who}


def test_an_earlier_outbound_spam_rule_without_forwarding_wins_over_the_kits():
    earlier = spam_rule(0, SenderDomainIs=["contoso.com"])
    [(blocker, sure)] = blockers.spam_rules_first([earlier, KIT], POLICIES, MAILBOX, KIT["Name"])
    assert sure and "priority 0 comes before the kit's rule" in blocker.why and "AutoForwardingMode Off" in blocker.why


@pytest.mark.parametrize(
    "other",
    [
        spam_rule(2, From=[MAILBOX]),  # applied after the kit's
        spam_rule(0, "Open", From=[MAILBOX]),  # allows forwarding anyway
        spam_rule(0, From=["someone@contoso.com"]),  # another sender
        spam_rule(0, From=[MAILBOX], State="Disabled"),
    ],
)
def test_outbound_spam_rules_that_do_not_stop_forwarding(other):
    assert blockers.spam_rules_first([other, KIT], POLICIES, MAILBOX, KIT["Name"]) == []


def test_a_group_rule_may_apply_and_every_custom_rule_beats_the_default_policy():
    group = spam_rule(5, FromMemberOf=["sales@contoso.com"])
    [(_, sure)] = blockers.spam_rules_first([group], POLICIES, MAILBOX, None)  # the kit changed the Default policy
    assert not sure
