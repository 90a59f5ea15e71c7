"""The step 3 script, by content: cmdlets, parameters, quoting, and nothing secret."""

from __future__ import annotations

import pytest

from runbook_lib.config import params
from runbook_lib.tenant import powershell

pytestmark = pytest.mark.unit


SETTINGS = powershell.Settings(
    "o'brien@contoso.com",
    "a41a0ba3566ed2091155f13e48e6d4f8@mail-us.imiconnect.io",
    True,
    "Webex Connect \u2019forwarding'",
    False,
)
ALL = {"smtp_auth", "forwarding", "external_forwarding"}


def script(settings=SETTINGS, sections=ALL) -> str:
    return powershell.script(settings, tenant="contoso", version="1.0", date="2026-11-29", sections=sections)


def test_quote_doubles_every_kind_of_single_quote():
    assert powershell.quote("o'brien") == "'o''brien'"
    assert (
        powershell.quote("a\u2018b\u2019c\u201ad\u201be") == "'a\u2018\u2018b\u2019\u2019c\u201a\u201ad\u201b\u201be'"
    )
    with pytest.raises(ValueError):
        powershell.quote("line\nbreak")


def test_every_section_reads_before_it_writes():
    text = script()
    assert "$mailbox = 'o''brien@contoso.com'" in text
    assert "$policy = 'Webex Connect \u2019\u2019forwarding'''" in text
    for read, write in [
        ("Get-CASMailbox", "Set-CASMailbox"),
        ("Get-Mailbox", "Set-Mailbox"),
        ("Get-HostedOutboundSpamFilterPolicy", "New-HostedOutboundSpamFilterPolicy"),
        ("Get-HostedOutboundSpamFilterRule", "New-HostedOutboundSpamFilterRule"),
    ]:
        assert text.index(read) < text.index(write)
    assert "-SmtpClientAuthenticationDisabled $false" in text
    assert "-ForwardingSmtpAddress $forward -DeliverToMailboxAndForward $true" in text
    assert "$forward = 'smtp:a41a0ba3566ed2091155f13e48e6d4f8@mail-us.imiconnect.io'" in text
    assert "-AutoForwardingMode On" in text and "-Identity Default" not in text
    assert text.startswith("# Webex Connect Email app") and text.rstrip().endswith(
        "Disconnect-ExchangeOnline -Confirm:$false"
    )


def test_only_differing_sections_are_written():
    text = script(sections={"forwarding"})
    assert "Set-CASMailbox" not in text and "Set-HostedOutboundSpamFilter" not in text
    assert "New-HostedOutboundSpamFilter" not in text
    assert "Set-Mailbox" in text and text.count("already as desired") == 2


def test_the_checks_of_what_else_stops_mail_only_read():
    text = script(sections=set())
    checks = text[text.index("# 4. Read only") : text.index("Disconnect-ExchangeOnline")]
    for cmdlet in ("Get-RemoteDomain", "Get-TransportRule", "Get-HostedOutboundSpamFilterRule", "Get-TransportConfig"):
        assert cmdlet in checks
    assert "Set-" not in checks and "New-" not in checks and "Remove-" not in checks
    assert "$forward = 'smtp:" in text  # set for the checks even when section 2 is left out


def test_default_policy_only_when_asked():
    text = script(powershell.Settings("a@b.com", "x@y.com", False, "P", True))
    assert "Set-HostedOutboundSpamFilterPolicy -Identity Default -AutoForwardingMode On" in text
    assert "New-HostedOutboundSpamFilterRule" not in text
    assert "-DeliverToMailboxAndForward $false" in text


def test_no_secret_or_token_in_the_script(demo_raw):
    text = script()
    for word in ("secret", "token", "password", "Bearer"):
        assert word not in text.lower()


def test_forwarding_to_a_non_webex_address_needs_an_explicit_yes(demo_raw):
    demo_raw["webex"]["forwarding_address"] = "helpdesk@partner.example"
    with pytest.raises(params.ParamsError) as caught:
        params.validate(demo_raw)
    assert "mailbox.allow_non_webex_forwarding" in caught.value.problems["webex.forwarding_address"]
    demo_raw["mailbox"] = {"allow_non_webex_forwarding": True}
    assert params.validate(demo_raw).webex.forwarding_address == "helpdesk@partner.example"


@pytest.mark.parametrize(
    "mailbox, field",
    [
        ({"apply_with": "graph"}, "mailbox.apply_with"),
        ({"forwarding_policy": "two\nlines"}, "mailbox.forwarding_policy"),
        ({"forwarding_policy": ""}, "mailbox.forwarding_policy"),
    ],
)
def test_mailbox_parameters_are_checked(demo_raw, mailbox, field):
    demo_raw["mailbox"] = mailbox
    with pytest.raises(params.ParamsError) as caught:
        params.validate(demo_raw)
    assert field in caught.value.problems
