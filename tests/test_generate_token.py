"""Webex Connect's Generate Token, played against the simulated tenant after the kit configured it: the mailbox
user signs in by the authorization-code flow with exactly Webex's Scope (`offline_access` +
`https://outlook.office.com/SMTP.Send`), Webex redeems the code with the client secret, and sends over SMTP
AUTH XOAUTH2. In a tenant where users may not consent, this works only if step 2's `consent: admin` granted
every permission of that Scope: offline_access is Microsoft Graph's and needs consent like SMTP.Send."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml

from runbook_lib.config import params, registry, secrets
from runbook_lib.config.clouds import CLOUDS, EXCHANGE_APP_ID, GRAPH_APP_ID
from runbook_lib.running import runner
from runbook_lib.sandbox import state
from runbook_lib.sandbox.server import Sandbox, serve
from runbook_lib.steps import diagnose
from runbook_lib.tenant import smtp

from conftest import ROOT

pytestmark = pytest.mark.e2e

MAILBOX = "support@contoso.onmicrosoft.com"
CALLBACK = "https://contoso.us.webexconnect.io/callback"
SCOPE = f"offline_access {CLOUDS['global']['smtp_scope_resource']}/SMTP.Send"  # Webex Connect's Scope field


@pytest.fixture(scope="module")
def kernel() -> Iterator[runner.Kernel]:
    with runner.Kernel() as running:
        yield running


def configure(tmp_path: Path, kernel: runner.Kernel, name: str) -> tuple[dict[str, Any], runner.RunResult]:
    """Steps 01-03 on a fresh sandbox tenant where users may not consent: `consent: admin`, `mail_send: none`."""
    seed = yaml.safe_load((ROOT / "recordings" / "contoso" / "tenant.yaml").read_text())
    seed["user_consent"] = "off"
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "tenant.yaml").write_text(yaml.safe_dump(seed))
    raw = yaml.safe_load((ROOT / "params" / "training" / "trainee.yaml").read_text())
    raw.update(
        tenant=name,
        recordings=str(tmp_path / "rec"),
        secret_store={"file": str(tmp_path / "store.secret")},
        consent="admin",
        application={"display_name": "Webex Connect Email", "mail_send": "none"},
    )
    state.reset(name)
    steps = [registry.WEBEX_VALUES, registry.APP_REGISTRATION, registry.MAILBOX]
    result = runner.run(params.validate(raw), archive=tmp_path / "archive", steps=steps, progress=lambda _: None)
    assert result.ok, [s.error for s in result.steps]
    return raw, result


def generate_token(sandbox: Sandbox, client_id: str, secret: str) -> tuple[requests.Response, dict[str, Any]]:
    """What Webex Connect does: the authorize page, the mailbox user signing in on it, then the code redeemed
    with the client secret. Returns the page's last answer and the token endpoint's (empty when no code came)."""
    session = requests.Session()
    session.verify, session.trust_env = sandbox.ca_bundle, False
    login = f"https://127.0.0.1:{sandbox.ports['login']}/{sandbox.tenant.tenant_id}/oauth2/v2.0"
    asked = {"client_id": client_id, "response_type": "code", "redirect_uri": CALLBACK, "scope": SCOPE}
    assert session.get(f"{login}/authorize", params={**asked, "state": "s1"}).status_code == 200
    page = session.post(
        f"{login}/authorize", data={**asked, "state": "s1", "login_hint": MAILBOX}, allow_redirects=False
    )
    if page.status_code != 302:
        return page, {}
    back = urlsplit(page.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK and parse_qs(back.query)["state"] == ["s1"]
    code = parse_qs(back.query)["code"][0]
    form = {"client_id": client_id, "client_secret": secret, "code": code, "redirect_uri": CALLBACK, "scope": SCOPE}
    tokens = session.post(f"{login}/token", data={**form, "grant_type": "authorization_code"}).json()
    return page, tokens


def xoauth2(sandbox: Sandbox, token: str) -> int:
    with smtplib.SMTP("127.0.0.1", sandbox.smtp_port, timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=sandbox.ca_bundle))
        client.ehlo()
        return client.docmd("AUTH", "XOAUTH2 " + smtp.xoauth2(MAILBOX, token))[0]


def test_generate_token_works_where_users_may_not_consent_and_no_mail_send_exists(tmp_path, kernel):
    raw, _ = configure(tmp_path, kernel, "consent-admin")
    tenant = state.read(state.state_file(raw["tenant"]))
    app, sp = tenant.trainee_app, tenant.trainee_sp
    assert app is not None and sp is not None
    secret = secrets.read(params.validate(raw).secret_store)
    with serve(tenant) as sandbox:
        page, tokens = generate_token(sandbox, app["appId"], secret)
        assert page.status_code == 302, page.text
        assert tokens.get("access_token") and tokens.get("refresh_token"), tokens
        assert xoauth2(sandbox, tokens["access_token"]) == 235
    # no Mail.Send of any kind: neither Exchange Online's app role nor Microsoft Graph's
    assert [a for a in tenant.assignments if a["principalId"] == sp["id"]] == []
    declared = {(r["resourceAppId"], a["type"]) for r in app["requiredResourceAccess"] for a in r["resourceAccess"]}
    assert declared == {(EXCHANGE_APP_ID, "Scope"), (GRAPH_APP_ID, "Scope")}
    assert not any("Mail.Send" in g["scope"] for g in tenant.grants)
    tenant_wide = {(g["resourceId"], g["scope"]) for g in tenant.grants if g["clientId"] == sp["id"]}
    assert tenant_wide == {(tenant.exchange_sp["id"], "SMTP.Send"), (tenant.graph_sp["id"], "offline_access")}


def test_without_the_offline_access_grant_generate_token_needs_admin_approval_and_verify_and_diagnose_say_so(
    tmp_path, kernel
):
    raw, _ = configure(tmp_path, kernel, "consent-no-offline")
    name = raw["tenant"]
    tenant = state.read(state.state_file(name))
    tenant.grants = [g for g in tenant.grants if g["resourceId"] != tenant.graph_sp["id"]]  # as before this fix
    state.save(name, tenant)
    app = tenant.trainee_app
    assert app is not None
    with serve(tenant) as sandbox:
        page, tokens = generate_token(sandbox, app["appId"], secrets.read(params.validate(raw).secret_store))
    assert tokens == {} and "AADSTS90094" in page.text and "offline_access" in page.text

    explained = {f.code: f for f in diagnose.diagnose(page.text)}
    assert "offline_access" in explained["AADSTS90094"].fix and "consent: admin" in explained["AADSTS90094"].fix

    verified = runner.run(
        params.validate({**raw, "verify": {"mailbox_sign_in": False}}),
        archive=tmp_path / "archive",
        steps=[registry.VERIFY],
        progress=lambda _: None,
        kernel=kernel,
    )
    checks = {c.check: c for c in verified.steps[0].checks}
    assert checks["SMTP.Send consent"].verdict == "pass"
    offline = checks["offline_access consent"]
    assert offline.verdict == "fail" and offline.code == "user_consent_off" and "Microsoft Graph" in offline.detail
    assert "offline_access" in offline.fix and "consent: admin" in offline.fix
