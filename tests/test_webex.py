import pytest

from runbook_lib.config import webex

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "field, value",
    [
        ("forwarding_address", "a41a0ba3566ed2091155f13e48e6d4f8@mail-us.imiconnect.io"),
        ("forwarding_address", "B6B9072DB2CE25198B45F08C9A9E0123@mail-eu.imiconnect.io"),
        ("callback_url", "https://contoso.us.webexconnect.io/callback"),
        ("callback_url", "https://cl1pod12.imiconnect.io/callback"),
        ("email_id", "support@contoso.onmicrosoft.com"),
        ("email_id", "o'brien@contoso.com"),
    ],
)
def test_good_values(field, value):
    assert webex.problem(field, value) is None


@pytest.mark.parametrize(
    "field, value",
    [
        ("forwarding_address", "b6b9072db2ce25198b45f08c9a9e@mail-us.imiconnect.io"),  # cut short
        ("forwarding_address", "a41a0ba3566ed2091155f13e48e6d4f8@mail-us.example.com"),
        ("callback_url", "http://contoso.us.webexconnect.io/callback"),  # not https
        ("callback_url", "https://contoso.us.webexconnect.io/callback/"),  # one character off
        ("callback_url", "https://contoso.us.webexconnect.io.evil.com/callback"),
        ("callback_url", "https://contoso.us.webexconnect.io/callback?x=1"),
        ("email_id", "support"),
        ("email_id", "support@contoso"),
        ("asset_name", "  "),
    ],
)
def test_bad_values_name_the_expected_form(field, value):
    why = webex.problem(field, value)
    assert why and webex.EXPECTED[field] in why


def test_tables(demo_raw):
    table = webex.values_table(demo_raw["webex"])
    assert list(table["field"]) == ["asset_name", "email_id", "forwarding_address", "callback_url"]
    assert table["well formed"].all()
    forward = webex.carried_forward(demo_raw["webex"])
    assert "https://contoso.us.webexconnect.io/callback" in set(forward["value"])
