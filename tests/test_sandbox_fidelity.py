"""The simulated tenant honours how Microsoft's services behave live, one rule a test: plain HTTP
(requests, msal) to the served sandbox, through its proxy under the real host names or straight to a
service's own loopback port, never through the kit."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import msal
import pytest
import requests
import yaml

from runbook_lib.errors import RunbookError
from runbook_lib.sandbox import mistakes, state
from runbook_lib.sandbox.server import Sandbox, serve
from runbook_lib.sandbox.tenant import SimulatedTenant

from conftest import ROOT

pytestmark = pytest.mark.e2e

GRAPH_CLI = "14d82eec-204b-4c2f-b7e8-296a70dab67e"
EXO_POWERSHELL = "fb78d390-0c51-40cd-8e17-fdbfab77341b"
AZURE_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
AUTOMATION = "9a1f0c3e-5b7d-4e2a-8c6f-1d3b5a7e9f00"
GRAPH = "https://graph.microsoft.com"
EXCHANGE = "https://outlook.office365.com"
SMTP_SEND = "https://outlook.office.com/SMTP.Send"
REAL_HOSTS = {"login": "https://login.microsoftonline.com", "graph": GRAPH, "exchange": EXCHANGE}
ROUTES = ["proxy", "direct"]


class Client:
    """Plain requests to a served sandbox, through its proxy or straight to each service's port."""

    def __init__(self, sandbox: Sandbox, route: str) -> None:
        self.tenant = sandbox.tenant
        self.session = requests.Session()
        self.session.verify = sandbox.ca_bundle
        self.session.trust_env = False
        if route == "proxy":
            self.session.proxies = {"https": sandbox.proxy}
            self.base = dict(REAL_HOSTS)
        else:
            self.base = {service: f"https://127.0.0.1:{port}" for service, port in sandbox.ports.items()}

    def login(self, endpoint: str, **form: str) -> requests.Response:
        return self.session.post(f"{self.base['login']}/{self.tenant.tenant_id}/oauth2/v2.0/{endpoint}", data=form)

    def device_code(self, client_id: str, scope: str) -> requests.Response:
        return self.login("devicecode", client_id=client_id, scope=f"{scope} openid profile offline_access")

    def sign_in(self, client_id: str, scope: str) -> dict[str, Any]:
        """A device-code sign-in completed at once (the sandbox's pending_polls=0)."""
        flow = self.device_code(client_id, scope)
        assert flow.status_code == 200, flow.text
        return self.login(
            "token",
            client_id=client_id,
            device_code=flow.json()["device_code"],
            grant_type="urn:ietf:params:oauth:grant-type:device_code",
        ).json()

    def token(self, client_id: str, scope: str) -> str:
        return self.sign_in(client_id, scope)["access_token"]

    def app_token(self, client_id: str, secret: str, scope: str) -> requests.Response:
        return self.login(
            "token", client_id=client_id, client_secret=secret, scope=scope, grant_type="client_credentials"
        )

    def graph(self, method: str, path: str, token: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return self.session.request(method, f"{self.base['graph']}/v1.0{path}", headers=headers, timeout=10, **kwargs)

    def cmdlet(self, token: str, name: str, **parameters: Any) -> requests.Response:
        return self.session.post(
            f"{self.base['exchange']}/adminapi/beta/{self.tenant.tenant_id}/InvokeCommand",
            headers={"Authorization": f"Bearer {token}"},
            json={"CmdletInput": {"CmdletName": name, "Parameters": parameters}},
            timeout=10,
        )


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def seed_of(tenant: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "recordings" / tenant / "tenant.yaml").read_text())


def aadsts(response: requests.Response, status: int, error: str, code: int) -> str:
    body = response.json()
    assert (response.status_code, body["error"], body["error_codes"]) == (status, error, [code]), body
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    return str(body["error_description"])


@pytest.fixture(params=ROUTES)
def client(request: pytest.FixtureRequest, sandbox: Sandbox) -> Client:
    return Client(sandbox, request.param)


START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> list[datetime]:
    """The simulated tenant's time, moved by the test."""
    return [START]


def served(seed: dict[str, Any], clock: list[datetime] | None = None) -> AbstractContextManager[Sandbox]:
    """The seed's tenant served, on the test's clock if given."""
    now = (lambda: clock[0]) if clock else None
    return serve(SimulatedTenant(seed, pending_polls=0, now=now))


# --- hosts are not resources ------------------------------------------------------------------


def test_a_graph_token_names_graph_whatever_host_served_it(client):
    token = client.token(GRAPH_CLI, f"{GRAPH}/User.Read.All")
    assert claims(token)["aud"] == GRAPH
    assert client.graph("GET", "/users/support@contoso.onmicrosoft.com", token).status_code == 200
    refused = client.cmdlet(token, "Get-TransportConfig")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "InvalidAuthenticationToken")
    exchange = client.token(EXO_POWERSHELL, f"{EXCHANGE}/.default")
    assert claims(exchange)["aud"] == EXCHANGE and client.cmdlet(exchange, "Get-TransportConfig").status_code == 200
    refused = client.graph("GET", "/users/support@contoso.onmicrosoft.com", exchange)
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "InvalidAuthenticationToken")


def test_msal_signs_in_on_the_direct_authority_host(sandbox):
    direct = sandbox.direct_endpoints()
    session = requests.Session()
    session.verify, session.trust_env = direct["ca_bundle"], False
    authority = f"https://{direct['authority_host']}/{sandbox.tenant.tenant_id}"
    app = msal.PublicClientApplication(GRAPH_CLI, authority=authority, http_client=session, instance_discovery=False)
    flow = app.initiate_device_flow(scopes=[f"{GRAPH}/User.Read.All"])
    result = app.acquire_token_by_device_flow(flow, exit_condition=lambda _: True)
    assert claims(result["access_token"])["aud"] == GRAPH
    assert all(r.startswith(("GET 127.0.0.1", "POST 127.0.0.1")) for r in sandbox.tenant.requests)


def test_openid_configuration_names_the_host_asked(client):
    authority = f"{client.base['login']}/{client.tenant.tenant_id}"
    config = client.session.get(f"{authority}/v2.0/.well-known/openid-configuration").json()
    assert config["token_endpoint"] == f"{authority}/oauth2/v2.0/token"
    assert config["issuer"] == f"https://login.microsoftonline.com/{client.tenant.tenant_id}/v2.0"


@pytest.mark.parametrize("suffix", ["/.default", "/User.Read.All"])
def test_a_scope_on_the_serving_host_names_no_resource(sandbox, suffix):
    client = Client(sandbox, "direct")
    host = client.base["graph"]
    text = aadsts(client.device_code(GRAPH_CLI, host + suffix), 400, "invalid_resource", 500011)
    assert f"The resource principal named {host} was not found in the tenant named {sandbox.tenant.tenant_id}" in text
    aadsts(client.app_token(AUTOMATION, "any", f"{host}/.default"), 400, "invalid_resource", 500011)


@pytest.mark.parametrize(
    "client_id, scope",
    [
        (GRAPH_CLI, f"{EXCHANGE}/.default"),
        (GRAPH_CLI, SMTP_SEND),
        (EXO_POWERSHELL, f"{GRAPH}/User.Read.All"),
        (AZURE_CLI, f"{GRAPH}/Application.ReadWrite.All"),
    ],
)
def test_first_party_clients_get_only_the_resources_they_are_preauthorized_for(client, client_id, scope):
    text = aadsts(client.device_code(client_id, scope), 400, "invalid_request", 65002)
    assert f"Consent between first party application '{client_id}' and first party resource" in text


@pytest.mark.parametrize(
    "client_id, scope, audience",
    [(EXO_POWERSHELL, f"{EXCHANGE}/.default", EXCHANGE), (AZURE_CLI, f"{GRAPH}/User.Read", GRAPH)],
)
def test_first_party_clients_get_what_they_are_preauthorized_for(client, client_id, scope, audience):
    assert claims(client.token(client_id, scope))["aud"] == audience


def test_the_tenants_own_public_client_signs_the_mailbox_in_for_smtp_send(seed):
    seed["applications"] = [
        {"display_name": "Webex Connect Email", "public_client": True},
        {"display_name": "Confidential", "app_id": AUTOMATION},
    ]
    with served(seed) as sandbox:
        client = Client(sandbox, "direct")
        public = sandbox.tenant.applications[0]["appId"]
        token = claims(client.token(public, SMTP_SEND))
        mailbox = ("https://outlook.office.com", "support@contoso.onmicrosoft.com", "SMTP.Send")
        assert (token["aud"], token["upn"], token["scp"]) == mailbox
        text = aadsts(client.device_code(AUTOMATION, SMTP_SEND), 401, "invalid_client", 7000218)
        assert "'client_assertion' or 'client_secret'" in text


# --- delegated permissions act as the signed-in user --------------------------------------------


def test_delegated_mailbox_settings_reach_the_signed_in_user_only(seed):
    seed["users"] += [
        {"upn": "admin@contoso.onmicrosoft.com"},
        {"upn": "nobox@contoso.onmicrosoft.com", "mailbox": "none"},
    ]
    seed["operator"]["automation"] = {"client_id": AUTOMATION, "secret": "Auto8Q~automation-secret-value"}
    with served(seed) as sandbox:
        client = Client(sandbox, "proxy")
        admin = client.token(GRAPH_CLI, f"{GRAPH}/MailboxSettings.Read")
        other = client.graph("GET", "/users/support@contoso.onmicrosoft.com/mailboxSettings", admin)
        assert other.status_code == 403
        assert other.json()["error"]["code"] == "ErrorAccessDenied"
        assert other.json()["error"]["message"] == "Access is denied. Check credentials and try again."
        own_id = sandbox.tenant.users["admin@contoso.onmicrosoft.com"]["id"]
        for own in (own_id, "ADMIN@contoso.onmicrosoft.com"):
            assert client.graph("GET", f"/users/{own}/mailboxSettings", admin).status_code == 200
        app = client.app_token(AUTOMATION, "Auto8Q~automation-secret-value", f"{GRAPH}/.default").json()["access_token"]
        assert "MailboxSettings.Read" in claims(app)["roles"]
        assert client.graph("GET", "/users/support@contoso.onmicrosoft.com/mailboxSettings", app).status_code == 200
        missing = client.graph("GET", "/users/nobox@contoso.onmicrosoft.com/mailboxSettings", app)
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "MailboxNotEnabledForRESTAPI")


# --- users and mailboxes as Graph and Exchange show them ------------------------------------------

KINDS = {
    "cloud": "user-cloud",
    "shared": "user-shared",
    "onprem": "user-onprem",
    "none": "user-none",
    "pending": "user-pending",
    True: "user-legacy-true",
    False: "user-legacy-false",
}
CLOUD_PLAN = [{"capabilityStatus": "Enabled", "provisioningStatus": "Success", "service": "exchange"}]
SELECT = "id,mail,accountEnabled,onPremisesSyncEnabled,assignedPlans,provisionedPlans"


@pytest.fixture
def mailboxes(seed: dict[str, Any]) -> Iterator[Sandbox]:
    seed["users"] = [{"upn": f"{name}@contoso.onmicrosoft.com", "mailbox": kind} for kind, name in KINDS.items()]
    with served(seed) as sandbox:
        yield sandbox


@pytest.mark.parametrize(
    "kind, mail, enabled, synced, provisioned, licensed",
    [
        ("cloud", True, True, None, CLOUD_PLAN, True),
        ("shared", True, False, None, [], False),
        ("onprem", True, True, True, [], False),
        ("none", False, True, None, [], False),
        ("pending", False, True, None, [dict(CLOUD_PLAN[0], provisioningStatus="PendingInput")], True),
        (True, True, True, None, CLOUD_PLAN, True),
        (False, False, True, None, [], False),
    ],
)
def test_graph_shows_a_mailbox_only_through_mail_and_plans(
    mailboxes, kind, mail, enabled, synced, provisioned, licensed
):
    client = Client(mailboxes, "direct")
    token = client.token(GRAPH_CLI, f"{GRAPH}/User.Read.All")
    upn = f"{KINDS[kind]}@contoso.onmicrosoft.com"
    user = client.graph("GET", f"/users/{upn}", token, params={"$select": SELECT}).json()
    assert (user["mail"] == upn, user["accountEnabled"], user["onPremisesSyncEnabled"]) == (mail, enabled, synced)
    assert user["provisionedPlans"] == provisioned
    assert [(p["service"], p["capabilityStatus"], p["servicePlanId"]) for p in user["assignedPlans"]] == (
        [("exchange", "Enabled", "efb87545-963c-4e0d-99df-69c6916d9eb0")] if licensed else []
    )
    assert all(p["assignedDateTime"] for p in user["assignedPlans"])
    assert "provisionedPlans" not in client.graph("GET", f"/users/{upn}", token).json()  # only when selected


@pytest.mark.parametrize("cmdlet", ["Get-Mailbox", "Get-EXOMailbox"])
def test_exchange_tells_shared_mailboxes_from_missing_ones(mailboxes, cmdlet):
    client = Client(mailboxes, "proxy")
    token = client.token(EXO_POWERSHELL, f"{EXCHANGE}/.default")
    for kind, recipient in (("cloud", "UserMailbox"), ("shared", "SharedMailbox")):
        [box] = client.cmdlet(token, cmdlet, Identity=f"{KINDS[kind]}@contoso.onmicrosoft.com").json()["value"]
        assert box["RecipientTypeDetails"] == recipient
    for kind in ("onprem", "none", "pending"):
        missing = client.cmdlet(token, cmdlet, Identity=f"{KINDS[kind]}@contoso.onmicrosoft.com")
        assert missing.status_code == 404
        assert "couldn't be found on" in missing.json()["error"]["details"][0]["message"]


# --- the directory is eventually consistent --------------------------------------------------------


def test_a_new_application_is_missing_from_name_searches_for_30_seconds(seed, clock):
    with served(seed, clock) as sandbox:
        client = Client(sandbox, "direct")
        token = client.token(GRAPH_CLI, f"{GRAPH}/Application.ReadWrite.All")
        created = client.graph("POST", "/applications", token, json={"displayName": "Webex Connect Email"}).json()
        search = {"$filter": "displayName eq 'Webex Connect Email'"}
        for seconds, found in ((0, 0), (29, 0), (30, 1)):
            clock[0] = START + timedelta(seconds=seconds)
            assert len(client.graph("GET", "/applications", token, params=search).json()["value"]) == found, seconds
            assert client.graph("GET", f"/applications/{created['id']}", token).status_code == 200
            assert client.graph("GET", f"/applications(appId='{created['appId']}')", token).status_code == 200


def test_seeded_applications_are_old_enough_to_be_listed(clock):
    with served(seed_of("fabrikam"), clock) as sandbox:
        client = Client(sandbox, "proxy")
        token = client.token(GRAPH_CLI, f"{GRAPH}/Application.Read.All")
        [app] = client.graph("GET", "/applications", token).json()["value"]
        assert app["displayName"] == "Webex Connect Email" and app["uniqueName"] is None


LAGS = {"read_lag_seconds": 20, "sp_lag_seconds": 40, "secret_lag_seconds": 60, "role_lag_seconds": 80}


def test_optional_lags_delay_reads_service_principals_secrets_and_roles(seed, clock):
    seed.update(LAGS)
    with served(seed, clock) as sandbox:
        client = Client(sandbox, "direct")
        token = client.token(GRAPH_CLI, f"{GRAPH}/Application.ReadWrite.All")
        app = client.graph("POST", "/applications", token, json={"displayName": "Webex Connect Email"}).json()
        reads = [
            ("GET", f"/applications/{app['id']}", None),
            ("PATCH", f"/applications/{app['id']}", {"notes": "x"}),
            ("POST", f"/applications/{app['id']}/addPassword", {"passwordCredential": {"displayName": "w"}}),
        ]
        for method, path, body in reads:
            missing = client.graph(method, path, token, json=body)
            assert (missing.status_code, missing.json()["error"]["code"]) == (404, "Request_ResourceNotFound"), path
        clock[0] = START + timedelta(seconds=20)
        secret = client.graph("POST", f"/applications/{app['id']}/addPassword", token, json={}).json()["secretText"]
        sp = client.graph("POST", "/servicePrincipals", token, json={"appId": app["appId"]})
        assert sp.status_code == 400 and sp.json()["error"]["details"][0]["code"] == "NoBackingApplicationObject"
        clock[0] = START + timedelta(seconds=40)
        sp = client.graph("POST", "/servicePrincipals", token, json={"appId": app["appId"]}).json()
        exchange = sandbox.tenant.exchange_sp
        mail_send = next(r["id"] for r in exchange["appRoles"] if r["value"] == "Mail.Send")
        assert client.graph(
            "POST",
            f"/servicePrincipals/{exchange['id']}/appRoleAssignedTo",
            token,
            json={"principalId": sp["id"], "resourceId": exchange["id"], "appRoleId": mail_send},
        ).ok

        def app_token():
            return client.app_token(app["appId"], secret, f"{EXCHANGE}/.default")

        aadsts(app_token(), 401, "invalid_client", 7000215)  # the secret is 20 s old
        clock[0] = START + timedelta(seconds=80)
        assert claims(app_token().json()["access_token"])["roles"] == []  # the assignment is 40 s old
        clock[0] = START + timedelta(seconds=120)
        assert claims(app_token().json()["access_token"])["roles"] == ["Mail.Send"]


# --- idempotent creation -----------------------------------------------------------------------------


def test_an_application_upsert_by_unique_name_creates_once_then_updates(seed, clock):
    with served(seed, clock) as sandbox:
        client = Client(sandbox, "proxy")
        token = client.token(GRAPH_CLI, f"{GRAPH}/Application.ReadWrite.All")
        key = "/applications(uniqueName='webex-connect-email')"
        upsert = {"Prefer": "create-if-missing"}
        body = {"displayName": "Webex Connect Email", "web": {"redirectUris": ["https://a.example/callback"]}}
        assert client.graph("PATCH", key, token, json=body).status_code == 404  # no Prefer: an update only
        created = client.graph("PATCH", key, token, json=body, headers=upsert)
        assert created.status_code == 201 and created.json()["uniqueName"] == "webex-connect-email"
        assert created.json()["appId"] and created.json()["passwordCredentials"] == []
        body["web"] = {"redirectUris": ["https://b.example/callback"]}
        updated = client.graph("PATCH", key, token, json=body, headers=upsert)
        assert (updated.status_code, updated.content) == (204, b"")
        app = client.graph("GET", key, token, params={"$select": "id,web"}).json()
        assert app["id"] == created.json()["id"] and app["web"]["redirectUris"] == ["https://b.example/callback"]
        clock[0] = START + timedelta(seconds=30)
        assert len(client.graph("GET", "/applications", token).json()["value"]) == 1
        renamed = client.graph("PATCH", f"/applications/{app['id']}", token, json={"uniqueName": "other"})
        assert (renamed.status_code, renamed.json()["error"]["code"]) == (400, "Request_BadRequest")
        again = client.graph("POST", "/applications", token, json={**body, "uniqueName": "webex-connect-email"})
        assert (again.status_code, again.json()["error"]["code"]) == (400, "Request_MultipleObjectsWithSameKeyValue")


def test_a_service_principal_upsert_creates_once_then_updates(seed, clock):
    with served(seed, clock) as sandbox:
        client = Client(sandbox, "direct")
        token = client.token(GRAPH_CLI, f"{GRAPH}/Application.ReadWrite.All")
        app = client.graph("POST", "/applications", token, json={"displayName": "Webex Connect Email"}).json()
        key = f"/servicePrincipals(appId='{app['appId']}')"
        upsert = {"Prefer": "create-if-missing"}
        assert client.graph("PATCH", key, token, json={}).status_code == 404
        created = client.graph("PATCH", key, token, json={"notes": "webex"}, headers=upsert)
        assert created.status_code == 201 and created.json()["appId"] == app["appId"]
        assert client.graph("PATCH", key, token, json={"notes": "webex connect"}, headers=upsert).status_code == 204
        assert client.graph("GET", key, token).json()["id"] == created.json()["id"]
        assert [s["appId"] for s in sandbox.tenant.service_principals].count(app["appId"]) == 1


# --- deletion -------------------------------------------------------------------------------------------


def _not_found(response: requests.Response) -> bool:
    return (response.status_code, response.json()["error"]["code"]) == (404, "Request_ResourceNotFound")


@pytest.mark.parametrize("address", ["id", "appId", "uniqueName"])
def test_deleting_an_application_takes_its_service_principal_along(seed, address):
    """DELETE answers 204 with no body; the application deleted in its home tenant takes its service principal
    (its enterprise application) with it, as Microsoft documents; a second DELETE is 404."""
    with served(seed) as sandbox:
        client = Client(sandbox, "direct")
        token = client.token(GRAPH_CLI, f"{GRAPH}/Application.ReadWrite.All")
        key = "/applications(uniqueName='webex-connect-email')"
        app = client.graph(
            "PATCH", key, token, json={"displayName": "Webex Connect Email"}, headers={"Prefer": "create-if-missing"}
        ).json()
        sp = client.graph("POST", "/servicePrincipals", token, json={"appId": app["appId"]}).json()
        path = {
            "id": f"/applications/{app['id']}",
            "appId": f"/applications(appId='{app['appId']}')",
            "uniqueName": key,
        }
        deleted = client.graph("DELETE", path[address], token)
        assert (deleted.status_code, deleted.content) == (204, b"")
        assert _not_found(client.graph("GET", key, token))
        assert _not_found(client.graph("GET", f"/servicePrincipals(appId='{app['appId']}')", token))
        assert _not_found(client.graph("DELETE", path[address], token))
        assert _not_found(client.graph("DELETE", f"/servicePrincipals/{sp['id']}", token))


def test_consents_and_service_principals_are_deleted_by_id(seed):
    with served(seed) as sandbox:
        client = Client(sandbox, "proxy")
        token = client.token(GRAPH_CLI, f"{GRAPH}/.default")
        app = client.graph("POST", "/applications", token, json={"displayName": "Webex Connect Email"}).json()
        sp = client.graph("POST", "/servicePrincipals", token, json={"appId": app["appId"]}).json()
        exchange = sandbox.tenant.exchange_sp
        mail_send = next(r["id"] for r in exchange["appRoles"] if r["value"] == "Mail.Send")
        wanted = {"principalId": sp["id"], "resourceId": exchange["id"], "appRoleId": mail_send}
        assignment = client.graph("POST", f"/servicePrincipals/{exchange['id']}/appRoleAssignedTo", token, json=wanted)
        grant = client.graph(
            "POST",
            "/oauth2PermissionGrants",
            token,
            json={
                "clientId": sp["id"],
                "consentType": "AllPrincipals",
                "resourceId": exchange["id"],
                "scope": "SMTP.Send",
            },
        )
        for path in (
            f"/servicePrincipals/{sp['id']}/appRoleAssignments/{assignment.json()['id']}",
            f"/oauth2PermissionGrants/{grant.json()['id']}",
            f"/servicePrincipals/{sp['id']}",
        ):
            assert client.graph("DELETE", path, token).status_code == 204, path
            assert _not_found(client.graph("DELETE", path, token)), path
        assert _not_found(client.graph("GET", f"/servicePrincipals/{sp['id']}/appRoleAssignments", token))
        assert client.graph("GET", f"/applications/{app['id']}", token).status_code == 200  # the application stays
    seed["operator"]["scopes"] = ["Application.Read.All"]
    with served(seed) as sandbox:
        client = Client(sandbox, "proxy")
        reader = client.token(GRAPH_CLI, f"{GRAPH}/Application.Read.All")
        app = sandbox.tenant.add_application({"displayName": "Webex Connect Email"})
        refused = client.graph("DELETE", f"/applications/{app['id']}", reader)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "Authorization_RequestDenied")


def test_exchange_removes_a_rule_and_a_policy_but_never_the_default_policy(seed):
    """As Exchange documents it: removing a policy leaves its rules (by design), the Default policy cannot be
    removed, and removing what is gone is Exchange's not-found error."""
    with served(seed) as sandbox:
        client = Client(sandbox, "proxy")
        token = client.token(EXO_POWERSHELL, f"{EXCHANGE}/.default")
        client.cmdlet(token, "New-HostedOutboundSpamFilterPolicy", Name="Webex", AutoForwardingMode="On")
        client.cmdlet(
            token,
            "New-HostedOutboundSpamFilterRule",
            Name="Webex",
            HostedOutboundSpamFilterPolicy="Webex",
            From=["a@b"],
        )
        assert client.cmdlet(token, "Remove-HostedOutboundSpamFilterPolicy", Identity="webex").status_code == 200
        assert [p["Name"] for p in client.cmdlet(token, "Get-HostedOutboundSpamFilterPolicy").json()["value"]] == [
            "Default"
        ]
        assert [r["Name"] for r in client.cmdlet(token, "Get-HostedOutboundSpamFilterRule").json()["value"]] == [
            "Webex"
        ]
        assert client.cmdlet(token, "Remove-HostedOutboundSpamFilterRule", Identity="Webex").status_code == 200
        assert client.cmdlet(token, "Get-HostedOutboundSpamFilterRule").json()["value"] == []
        for cmdlet in ("Remove-HostedOutboundSpamFilterRule", "Remove-HostedOutboundSpamFilterPolicy"):
            gone = client.cmdlet(token, cmdlet, Identity="Webex")
            assert gone.status_code == 404 and "couldn't be found on" in gone.json()["error"]["details"][0]["message"]
        default = client.cmdlet(token, "Remove-HostedOutboundSpamFilterPolicy", Identity="Default")
        assert default.status_code == 400 and default.json()["error"]["message"] == "Invalid Operation"
        assert [p["Name"] for p in sandbox.tenant.outbound_policies] == ["Default"]


# --- failures a live run meets ---------------------------------------------------------------------


def test_a_reset_fault_drops_the_connection_once(client):
    token = client.token(GRAPH_CLI, f"{GRAPH}/User.Read.All")
    client.tenant.faults.append({"method": "GET", "path": "^/v1.0/users$", "reset": True, "times": 1})
    with pytest.raises(requests.ConnectionError):
        client.graph("GET", "/users", token)
    assert client.graph("GET", "/users", token).status_code == 200


# --- the trainee's state -----------------------------------------------------------------------------

SEED = ROOT / "recordings" / "fabrikam" / "tenant.yaml"


def test_the_state_is_private_to_its_owner(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_STATE", str(tmp_path / "state"))
    state.save("trainee-1", state.load("trainee-1", SEED))
    path = state.state_file("trainee-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["trainee-1.json"]  # no temporary file left


@pytest.mark.parametrize("name", ["../contoso", "a/b", "..", "Trainee", "-a", "a-", "", "a" * 65, "a.b"])
def test_a_tenant_name_is_never_a_path(tmp_path, monkeypatch, name):
    monkeypatch.setenv("RUNBOOK_STATE", str(tmp_path / "state"))
    for action in (
        lambda: state.load(name, SEED),
        lambda: state.reset(name),
        lambda: mistakes.break_tenant(name, "secret-expired"),
    ):
        with pytest.raises(RunbookError, match="not a tenant name"):
            action()
    assert not (tmp_path / "state").exists()


def test_trainees_seeded_alike_get_secrets_of_their_own(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_STATE", str(tmp_path / "state"))
    first, second = state.load("trainee-1", SEED), state.load("trainee-2", SEED)
    assert [a["id"] for a in first.applications] == [a["id"] for a in second.applications]
    assert first.secret_text() != second.secret_text() and first.key != second.key
    state.save("trainee-1", first)
    again = state.load("trainee-1", SEED)
    assert again.salt == first.salt and again.secret_text() == first.secret_text()
    direct = [SimulatedTenant(seed_of("fabrikam")).secret_text() for _ in range(2)]
    assert direct[0] == direct[1]  # recordings stay reproducible


# --- consent is given by someone, and recorded --------------------------------------------------


def _webex_app(seed: dict[str, Any], **spec: Any) -> None:
    seed["applications"] = [
        {"display_name": "Webex Connect Email", "public_client": True, "exchange_scopes": ["SMTP.Send"], **spec}
    ]


@pytest.mark.parametrize("policy", ["legacy", "low", "off"])
def test_a_mailbox_sign_in_needs_consent_and_a_user_consent_is_recorded(seed, policy):
    seed["user_consent"] = policy
    _webex_app(seed, service_principal=True)
    with served(seed) as sandbox:
        client = Client(sandbox, "direct")
        app_id = sandbox.tenant.applications[0]["appId"]
        flow = client.sign_in(app_id, SMTP_SEND)
        if policy != "legacy":  # an unverified application: users may not consent; an admin must
            text = aadsts_body(flow, "invalid_grant", 65001)
            assert f"has not consented to use the application with ID '{app_id}'" in text
            assert sandbox.tenant.grants == []
            return
        assert "access_token" in flow
        user = sandbox.tenant.users["support@contoso.onmicrosoft.com"]
        graph, exchange = sandbox.tenant.graph_sp["id"], sandbox.tenant.exchange_sp["id"]
        # one grant per resource: OpenID Connect's scopes are Microsoft Graph's delegated permissions
        assert sorted(
            (g["consentType"], g["principalId"], g["resourceId"], g["scope"]) for g in sandbox.tenant.grants
        ) == sorted(
            [
                ("Principal", user["id"], exchange, "SMTP.Send"),
                ("Principal", user["id"], graph, "offline_access openid profile"),
            ]
        )
        client.sign_in(app_id, SMTP_SEND)
        assert len(sandbox.tenant.grants) == 2  # consented once


def test_a_tenant_wide_grant_lets_the_mailbox_sign_in_without_user_consent(seed):
    seed["user_consent"] = "off"
    oidc = ["offline_access", "openid", "profile"]  # what msal asks for beside the resource's scope
    _webex_app(seed, service_principal=True, granted_scopes=["SMTP.Send"], granted_graph_scopes=oidc)
    with served(seed) as sandbox:
        flow = Client(sandbox, "direct").sign_in(sandbox.tenant.applications[0]["appId"], SMTP_SEND)
        assert "access_token" in flow and [g["consentType"] for g in sandbox.tenant.grants] == ["AllPrincipals"] * 2


def test_a_tenant_wide_grant_of_smtp_send_alone_is_not_consent_for_openid_connects_scopes(seed):
    """offline_access, openid and profile are Microsoft Graph's, and need consent for a customer's application."""
    seed["user_consent"] = "off"
    _webex_app(seed, service_principal=True, granted_scopes=["SMTP.Send"])
    with served(seed) as sandbox:
        flow = Client(sandbox, "direct").sign_in(sandbox.tenant.applications[0]["appId"], SMTP_SEND)
        assert "offline_access" in aadsts_body(flow, "invalid_grant", 65001)


def aadsts_body(body: dict[str, Any], error: str, code: int) -> str:
    assert (body["error"], body["error_codes"]) == (error, [code]), body
    return str(body["error_description"])


# --- what else decides whether mail flows --------------------------------------------------------


def test_conditional_access_policies_need_policy_read_all(seed):
    seed["conditional_access"] = [{"displayName": "MFA for everyone", "users": {"includeUsers": ["All"]}}]
    with served(seed) as sandbox:
        client = Client(sandbox, "proxy")
        reader = client.token(GRAPH_CLI, f"{GRAPH}/Policy.Read.All")
        [policy] = client.graph("GET", "/identity/conditionalAccess/policies", reader).json()["value"]
        assert policy["state"] == "enabled" and policy["conditions"]["users"]["includeUsers"] == ["All"]
        assert policy["grantControls"]["builtInControls"] == ["mfa"]
    seed["operator"]["scopes"] = ["User.Read.All"]
    with served(seed) as sandbox:
        client = Client(sandbox, "proxy")
        users_only = client.token(GRAPH_CLI, f"{GRAPH}/User.Read.All")
        refused = client.graph("GET", "/identity/conditionalAccess/policies", users_only)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "Authorization_RequestDenied"


def test_every_organization_has_a_default_remote_domain_and_its_mail_flow_rules(seed):
    seed["remote_domains"] = [{"Identity": "Default", "AutoForwardEnabled": False}]
    seed["transport_rules"] = [{"Name": "b", "Priority": 1}, {"Name": "a", "Priority": 0}]
    with served(seed) as sandbox:
        client = Client(sandbox, "proxy")
        token = client.token(EXO_POWERSHELL, f"{EXCHANGE}/.default")
        [default] = client.cmdlet(token, "Get-RemoteDomain").json()["value"]
        assert (default["DomainName"], default["AutoForwardEnabled"]) == ("*", False)
        assert client.cmdlet(token, "Get-RemoteDomain", Identity="Nowhere").status_code == 404
        rules = client.cmdlet(token, "Get-TransportRule").json()["value"]
        assert [r["Name"] for r in rules] == ["a", "b"]  # in priority order


def test_exchange_accepts_a_message_only_from_the_authenticated_mailbox(seed):
    import smtplib
    import ssl

    from runbook_lib.tenant import smtp

    _webex_app(seed, service_principal=True)
    seed["users"][0]["smtp_auth_disabled"] = False
    with served(seed) as sandbox:
        token = Client(sandbox, "direct").token(sandbox.tenant.applications[0]["appId"], SMTP_SEND)
        context = ssl.create_default_context(cafile=sandbox.ca_bundle)
        with smtplib.SMTP("127.0.0.1", sandbox.smtp_port, timeout=10) as client:
            client.starttls(context=context)
            client.ehlo()
            assert client.mail("support@contoso.onmicrosoft.com")[0] == 250
            client.rcpt("someone@example.com")
            code, reply = client.data(b"Subject: before AUTH\r\n\r\nhello\r\n")
            assert (code, reply[:6]) == (530, b"5.7.57")
            client.rset()
            assert client.docmd("AUTH", "XOAUTH2 " + smtp.xoauth2("support@contoso.onmicrosoft.com", token))[0] == 235
            client.mail("ceo@contoso.onmicrosoft.com")
            client.rcpt("someone@example.com")
            code, reply = client.data(b"Subject: as someone else\r\n\r\nhello\r\n")
            assert (code, reply[:9]) == (554, b"5.2.252 S")
            client.rset()
            client.mail("support@contoso.onmicrosoft.com")
            client.rcpt("someone@example.com")
            assert client.data(b"Subject: a test\r\n\r\nhello\r\n")[0] == 250
        assert sandbox.tenant.sent == [
            {"from": "support@contoso.onmicrosoft.com", "to": ["someone@example.com"], "subject": "a test"}
        ]


# --- RBAC for Applications in Exchange Online ------------------------------------------------------------------


def test_rbac_for_applications_objects_have_exchanges_shapes_and_scope_one_mailbox(seed):
    """New-ServicePrincipal (a pointer to the Entra service principal), New-ManagementScope (a recipient filter),
    New-ManagementRoleAssignment -App (application roles only), Test-ServicePrincipalAuthorization (InScope per
    role; Entra ID's grants are not part of it), as Microsoft documents them."""
    seed["users"].append({"upn": "other@contoso.onmicrosoft.com"})
    app_id, object_id = "7bfb4608-5f50-456d-acce-a87338ac0c57", "b30b8215-49ba-4804-a8d6-67c23d4934f2"
    scope = "Webex Connect mailbox support@contoso.onmicrosoft.com"
    with served(seed) as sandbox:
        client = Client(sandbox, "proxy")
        token = client.token(EXO_POWERSHELL, f"{EXCHANGE}/.default")
        pointer = client.cmdlet(token, "New-ServicePrincipal", AppId=app_id, ObjectId=object_id, DisplayName="Webex")
        assert pointer.status_code == 200
        [shown] = client.cmdlet(token, "Get-ServicePrincipal", Identity=app_id).json()["value"]
        assert (shown["AppId"], shown["ObjectId"], shown["DisplayName"]) == (app_id, object_id, "Webex")
        made = client.cmdlet(
            token,
            "New-ManagementScope",
            Name=scope,
            RecipientRestrictionFilter="PrimarySmtpAddress -eq 'support@contoso.onmicrosoft.com'",
        )
        assert made.json()["value"][0]["ScopeRestrictionType"] == "RecipientScope"
        admin_role = client.cmdlet(token, "New-ManagementRoleAssignment", App=object_id, Role="Mail Recipients")
        assert (
            admin_role.status_code == 400 and "application roles" in admin_role.json()["error"]["details"][0]["message"]
        )
        assigned = client.cmdlet(
            token,
            "New-ManagementRoleAssignment",
            Name="Webex Mail.Send",
            App=object_id,
            Role="Application Mail.Send",
            CustomResourceScope=scope,
        ).json()["value"][0]
        assert (assigned["RoleAssigneeType"], assigned["RecipientWriteScope"]) == (
            "ServicePrincipal",
            "CustomRecipientScope",
        )
        assert [a["Name"] for a in client.cmdlet(token, "Get-ManagementRoleAssignment").json()["value"]] == [
            "Webex Mail.Send"
        ]

        def tested(**resource: str) -> dict[str, Any]:
            [row] = client.cmdlet(token, "Test-ServicePrincipalAuthorization", Identity=app_id, **resource).json()[
                "value"
            ]
            return row

        row = tested(Resource="support@contoso.onmicrosoft.com")
        assert (row["RoleName"], row["GrantedPermissions"], row["AllowedResourceScope"]) == (
            "Application Mail.Send",
            "Mail.Send",
            scope,
        )
        assert row["ScopeType"] == "CustomRecipientScope" and row["InScope"] is True
        assert tested(Resource="other@contoso.onmicrosoft.com")["InScope"] is False
        assert tested()["InScope"] == "Not Run"
        assert sandbox.tenant.assignments == []  # Exchange's grants are its own: nothing in Entra ID


def test_rbac_duplicates_are_refused_and_removing_what_is_gone_or_in_use_is_an_error(seed):
    app_id, object_id = "7bfb4608-5f50-456d-acce-a87338ac0c57", "b30b8215-49ba-4804-a8d6-67c23d4934f2"
    with served(seed) as sandbox:
        client = Client(sandbox, "proxy")
        token = client.token(EXO_POWERSHELL, f"{EXCHANGE}/.default")

        def run(cmdlet: str, **parameters: Any) -> tuple[int, str]:
            answer = client.cmdlet(token, cmdlet, **parameters)
            error = answer.json().get("error") if answer.status_code >= 400 else None
            return answer.status_code, error["details"][0]["message"] if error else ""

        pointer = {"AppId": app_id, "ObjectId": object_id}
        scope = {"Name": "S", "RecipientRestrictionFilter": "PrimarySmtpAddress -eq 'support@contoso.onmicrosoft.com'"}
        assignment = {"Name": "A", "App": app_id, "Role": "Application Mail.Send", "CustomResourceScope": "S"}
        for cmdlet, parameters in [
            ("New-ServicePrincipal", pointer),
            ("New-ManagementScope", scope),
            ("New-ManagementRoleAssignment", assignment),
        ]:
            assert run(cmdlet, **parameters)[0] == 200
            status, message = run(cmdlet, **parameters)
            assert status == 400 and "already exists" in message
        status, message = run("Remove-ManagementScope", Identity="S")
        assert status == 400 and "associated with the management role assignment" in message
        assert run("New-ManagementScope", Name="T", RecipientRestrictionFilter="not a filter")[0] == 400
        assert run("New-ManagementRoleAssignment", Name="x" * 65, App=app_id, Role="Application Mail.Send")[0] == 400
        for cmdlet, identity in [
            ("Remove-ManagementRoleAssignment", "A"),
            ("Remove-ManagementScope", "S"),
            ("Remove-ServicePrincipal", app_id),
        ]:
            assert run(cmdlet, Identity=identity) == (200, "")
            status, message = run(cmdlet, Identity=identity)
            assert status == 404 and "couldn't be found on" in message
        for cmdlet in ("Get-ServicePrincipal", "Get-ManagementScope", "Get-ManagementRoleAssignment"):
            assert run(cmdlet, Identity="gone")[0] == 404
        assert run("Test-ServicePrincipalAuthorization", Identity=app_id)[0] == 404


def test_an_app_only_token_carries_only_the_roles_entra_id_granted(seed):
    """RBAC for Applications is Exchange's alone: an application Exchange lets send as one mailbox gets no
    Mail.Send role in its token; admin consent in Entra ID puts it there."""
    secret = "Ab8Q~" + "s" * 35
    _webex_app(seed, service_principal=True, secrets=[{"expires_in_days": 30, "value": secret}])
    with served(seed) as sandbox:
        client = Client(sandbox, "proxy")
        tenant = sandbox.tenant
        app = tenant.applications[0]
        sp = tenant.service_principal(app["appId"])
        admin = client.token(EXO_POWERSHELL, f"{EXCHANGE}/.default")
        client.cmdlet(admin, "New-ServicePrincipal", AppId=app["appId"], ObjectId=sp["id"])
        client.cmdlet(admin, "New-ManagementRoleAssignment", Name="A", App=sp["id"], Role="Application Mail.Send")

        def roles() -> list[str]:
            answer = client.app_token(app["appId"], secret, f"{EXCHANGE}/.default")
            return list(claims(answer.json()["access_token"]).get("roles", []))

        assert roles() == []
        tenant.assignments.append(tenant.assignment(sp["id"], tenant.permission_id("Mail.Send", "Role")))
        assert roles() == ["Mail.Send"]
