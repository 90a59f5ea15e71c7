"""Input is checked as it will be used: a value that becomes a registered URI, an address or a name is refused
when it holds whitespace, an invisible character or userinfo, or differs from its own normal form, so the value
registered is the value checked; a secret-shaped value is refused in every field, and never echoed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_lib.config import params
from runbook_lib.errors import ParamsError

from conftest import ROOT

pytestmark = pytest.mark.unit

CALLBACK = "https://contoso.us.webexconnect.io/callback"
#: the shape of an Entra ID client secret's value (three characters, a digit, Q~, 30 or more), and of a JWT
CLIENT_SECRET = "Xy.8Q~aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ2"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSJ9.c2ln"


def set_value(raw: dict[str, Any], where: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    *sections, field = where.split(".")
    target = raw
    for section in sections:
        target = target.setdefault(section, {})
    target[field] = value
    return raw


def refused(raw: dict[str, Any], where: str) -> str:
    """Why ``where`` is refused: the problem of that field, and of no other."""
    with pytest.raises(ParamsError) as caught:
        params.validate(raw)
    assert list(caught.value.problems) == [where], caught.value.problems
    return caught.value.problems[where]


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


# 1. the Webex Connect Call Back URL, registered as the application's redirect URI


@pytest.mark.parametrize(
    "value, said",
    [
        (" " + CALLBACK, "starts with a space"),
        (CALLBACK + "\n", "ends with a line break"),
        (CALLBACK + " ", "ends with a space"),
        ("https://contoso.us.webexconnect.io/call\tback", "holds a tab at character 40"),
        ("https://contoso.us.webex\u200bconnect.io/callback", "invisible character (U+200B ZERO WIDTH SPACE)"),
        ("https://contoso.us.webexconnect.io/callback\u2060", "invisible character (U+2060 WORD JOINER)"),
        ("https://contoso.us.webexconnect.io/\u2028callback", "U+2028 LINE SEPARATOR"),
    ],
)
def test_a_callback_url_with_a_space_line_break_or_invisible_character_is_refused(demo_raw, value, said):
    why = refused(set_value(demo_raw, "webex.callback_url", value), "webex.callback_url")
    assert said in why and "copy the Call Back URL again" in why


def test_a_callback_url_with_userinfo_is_refused_without_echoing_it(demo_raw):
    for value in (
        "https://attacker.example@contoso.us.webexconnect.io/callback",
        "https://ops:Pa55w0rd@contoso.us.webexconnect.io/callback",
    ):
        why = refused(set_value(demo_raw, "webex.callback_url", value), "webex.callback_url")
        assert "user name or password before the host" in why
        assert "attacker" not in why and "Pa55w0rd" not in why


@pytest.mark.parametrize(
    "value, said",
    [
        (CALLBACK + "?", "has a query"),
        (CALLBACK + "?x=1", "has a query"),
        (CALLBACK + "#x", "has a fragment"),
        (CALLBACK + "#", "has a fragment"),
        ("https://contoso.us.webexconnect.io:443/callback", "names a port"),
        ("https://contoso.us.webexconnect.io:/callback", "names a port"),
        ("http://contoso.us.webexconnect.io/callback", "must start with https://"),
        ("contoso.us.webexconnect.io/callback", "must start with https://"),
    ],
)
def test_a_callback_url_with_a_query_fragment_port_or_other_scheme_is_refused_in_words(demo_raw, value, said):
    assert said in refused(set_value(demo_raw, "webex.callback_url", value), "webex.callback_url")


@pytest.mark.parametrize(
    "value",
    [
        "https://CONTOSO.us.webexconnect.io/callback",
        "https://Contoso.US.WebexConnect.io/callback",
        "HTTPS://contoso.us.webexconnect.io/callback",
    ],
)
def test_a_callback_url_not_in_its_normal_form_is_refused_naming_the_form_expected(demo_raw, value):
    why = refused(set_value(demo_raw, "webex.callback_url", value), "webex.callback_url")
    assert f"write it as '{CALLBACK}'" in why


def test_a_callback_url_with_a_look_alike_letter_is_refused(demo_raw):
    value = "https://c\u043entoso.us.webexconnect.io/callback"  # a Cyrillic о
    why = refused(set_value(demo_raw, "webex.callback_url", value), "webex.callback_url")
    assert "U+043E CYRILLIC SMALL LETTER O" in why and "plain ASCII" in why


def test_a_callback_url_is_registered_exactly_as_it_was_checked(demo_raw):
    for value in (
        CALLBACK,
        "https://cl1pod12.imiconnect.io/callback",
        "https://contoso-two.us.webexconnect.io/callback",
    ):
        assert params.validate(set_value(demo_raw, "webex.callback_url", value)).webex.callback_url == value
    # a mistyped path still names the form expected, as the trainer guide's exercise E1 shows
    why = refused(set_value(demo_raw, "webex.callback_url", CALLBACK[:-1]), "webex.callback_url")
    assert "https://<tenant>.<region>.webexconnect.io/callback" in why


def test_the_kits_parameter_files_still_validate():
    files = sorted((ROOT / "params" / "demo").glob("*.yaml")) + [ROOT / "params" / "training" / "trainee.yaml"]
    assert len(files) > 10
    for path in files:
        params.load(path)


# 2. addresses: the whole value is the address, not its first line


@pytest.mark.parametrize(
    "where, value, said",
    [
        ("webex.email_id", "support@contoso.onmicrosoft.com\n", "ends with a line break"),
        ("webex.email_id", "support@contoso.onmicrosoft.com ", "ends with a space"),
        ("webex.email_id", "support@contoso.\u200bonmicrosoft.com", "U+200B ZERO WIDTH SPACE"),
        ("webex.email_id", "support @contoso.onmicrosoft.com", "holds a space at character 8"),
        ("webex.forwarding_address", "a41a0ba3566ed2091155f13e48e6d4f8@mail-us.imiconnect.io\n", "line break"),
        ("webex.forwarding_address", "\ta41a0ba3566ed2091155f13e48e6d4f8@mail-us.imiconnect.io", "starts with a tab"),
        ("verify.test_message_to", "someone@example.com\n", "ends with a line break"),
    ],
)
def test_an_address_with_a_line_break_space_or_invisible_character_is_refused(demo_raw, where, value, said):
    raw = set_value(demo_raw, where, value)
    if where.startswith("verify."):
        raw["verify"]["mailbox_sign_in"] = True
    why = refused(raw, where)
    assert said in why and "an email address holds no space" in why


def test_a_forwarding_address_elsewhere_is_refused_for_its_line_break_not_for_being_elsewhere(demo_raw):
    raw = set_value(demo_raw, "webex.forwarding_address", "helpdesk@partner.example\n")
    assert "ends with a line break" in refused(raw, "webex.forwarding_address")
    raw["mailbox"] = {"allow_non_webex_forwarding": True}
    assert "ends with a line break" in refused(raw, "webex.forwarding_address")


def test_a_tenant_id_with_a_trailing_line_break_is_refused(demo_raw):
    raw = set_value(demo_raw, "tenant_id", demo_raw["tenant_id"] + "\n")
    assert "neither a tenant GUID nor a verified domain" in refused(raw, "tenant_id")


# 3. names that become object names (the application, the asset, the spam policy) or a record's text


@pytest.mark.parametrize(
    "where", ["application.display_name", "webex.asset_name", "mailbox.forwarding_policy", "checklist.confirmed_by"]
)
@pytest.mark.parametrize(
    "value, said",
    [
        ("Webex Connect Email ", "ends with a space"),
        ("\u00a0Webex Connect Email", "starts with a no-break space"),
        ("Webex\u200bConnect Email", "U+200B ZERO WIDTH SPACE) at character 6"),
        ("Webex Connect\u2028Email", "U+2028 LINE SEPARATOR"),
        ("Webex Connect\u202eliamE", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("Webex Connect\x85Email", "control character (U+0085)"),
    ],
)
def test_a_name_with_a_control_or_format_character_or_space_at_an_end_is_refused(demo_raw, where, value, said):
    why = refused(set_value(demo_raw, where, value), where)
    assert said in why and "a name must not start or end with a space" in why


def test_a_rotation_confirmation_with_an_invisible_character_is_refused(demo_raw):
    raw = set_value(demo_raw, "rotation", {"phase": 2, "confirmed_by": "Ana Lima\u200b"})
    assert "U+200B ZERO WIDTH SPACE" in refused(raw, "rotation.confirmed_by")


def test_a_name_mixing_scripts_is_accepted_with_a_warning(demo_raw):
    assert params.name_warnings(params.validate(demo_raw)) == []
    raw = set_value(demo_raw, "application.display_name", "Webex C\u043ennect Email")  # a Cyrillic о
    raw["webex"]["asset_name"] = "Contoso Support Email"
    raw["mailbox"] = {"forwarding_policy": "Webex \u0391lpha forwarding"}  # a Greek Alpha
    warnings = params.name_warnings(params.validate(raw))
    assert len(warnings) == 2
    assert warnings[0].startswith("application.display_name 'Webex Cоnnect Email' mixes Latin letters with Cyrillic")
    assert "U+043E CYRILLIC SMALL LETTER O, character 8" in warnings[0]
    assert warnings[1].startswith("mailbox.forwarding_policy") and "Greek 'Α'" in warnings[1]
    # one script only, however unusual, is no warning: a Russian or Greek name is a name
    for name in ("Вебекс почта", "Ταχυδρομείο", "Webex Connect E-Mail (Zürich)"):
        assert params.name_warnings(params.validate(set_value(demo_raw, "application.display_name", name))) == []


# 4. a secret-shaped value, in any field, is refused without being echoed


@pytest.mark.parametrize(
    "where",
    [
        "checklist.confirmed_by",
        "rotation.confirmed_by",
        "application.display_name",
        "webex.asset_name",
        "mailbox.forwarding_policy",
        "change.reason",
        "change.ticket",
        "webex.email_id",
        "recordings",
    ],
)
@pytest.mark.parametrize("secret", [CLIENT_SECRET, "Ana " + CLIENT_SECRET, JWT, "password=hunter2-9Zq"])
def test_a_secret_shaped_value_is_refused_in_every_free_text_field_without_echoing_it(demo_raw, where, secret):
    value = secret + "@contoso.com" if where == "webex.email_id" else secret
    raw = set_value(demo_raw, where, value)
    if where == "rotation.confirmed_by":
        raw["rotation"]["phase"] = 2
    with pytest.raises(ParamsError) as caught:
        params.validate(raw)
    assert "looks like it holds a secret" in caught.value.problems[where]
    assert secret.split()[-1] not in str(caught.value)


def test_a_client_secret_is_refused_however_it_starts(demo_raw):
    """Entra ID secret values may start with '.', '~' or '-': the shape is three characters, a digit and Q~."""
    for value in ("~a-8Q~" + "x" * 34, "rotated ops-7Q~" + "x" * 34):
        assert "looks like it holds a secret" in refused(set_value(demo_raw, "change.reason", value), "change.reason")


# 5. a Secret ID is not a secret store; the regions of the Call Back URL and the forwarding address agree


@pytest.mark.parametrize("where", ["secret_store", "operator.secret"])
def test_a_secret_id_given_as_the_secret_store_file_is_refused(demo_raw, where):
    secret_id = "3f2a8b1c-1d2e-4f5a-9b8c-7d6e5f4a3b2c"
    for file in (secret_id, f".runbook/secrets/{secret_id.upper()}"):
        raw = set_value(demo_raw, where, {"file": file})
        if where == "operator.secret":
            raw["operator"].update(sign_in="client_credentials", client_id="11111111-2222-3333-4444-555555555555")
        assert "a Secret ID is not where a secret is kept" in refused(raw, f"{where}.file")


def test_a_callback_url_in_another_region_than_the_forwarding_address_is_refused(tmp_path, demo_raw):
    raw = set_value(demo_raw, "webex.callback_url", "https://contoso.eu.webexconnect.io/callback")
    with pytest.raises(ParamsError) as caught:
        params.load(write(tmp_path, raw))
    why = caught.value.problems["webex.callback_url"]
    assert "region 'eu'" in why and "region 'us' (mail-us.imiconnect.io)" in why and "regions agree" in why
    assert params.region_problems(raw) == {"webex.callback_url": why}
    # agreeing regions, a legacy URL (no region), and pairs Webex Connect's references do not tell apart, pass
    for url, address in [
        ("https://contoso.eu.webexconnect.io/callback", "a41a0ba3566ed2091155f13e48e6d4f8@mail-eu.imiconnect.io"),
        ("https://cl1pod12.imiconnect.io/callback", "a41a0ba3566ed2091155f13e48e6d4f8@mail-eu.imiconnect.io"),
        ("https://contoso.uk.webexconnect.io/callback", "a41a0ba3566ed2091155f13e48e6d4f8@mail-eu.imiconnect.io"),
        ("https://contoso.jp.webexconnect.io/callback", "a41a0ba3566ed2091155f13e48e6d4f8@mail-au.imiconnect.io"),
        ("https://contoso.xx.webexconnect.io/callback", "a41a0ba3566ed2091155f13e48e6d4f8@mail-us.imiconnect.io"),
    ]:
        ok = set_value(set_value(demo_raw, "webex.callback_url", url), "webex.forwarding_address", address)
        assert params.load(write(tmp_path, ok)).webex.callback_url == url


def test_the_tenant_name_error_says_what_a_tenant_name_is(demo_raw):
    for value in ("Contoso", "contoso_eu", "-contoso", "x" * 65):
        why = refused(set_value(demo_raw, "tenant", value), "tenant")
        assert "1 to 64 lowercase letters, digits and hyphens, starting and ending with a letter or digit" in why
        assert "^" not in why and "pattern" not in why
