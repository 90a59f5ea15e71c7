"""Entra ID's sign-in endpoints for one tenant: OpenID configuration, device code, token, and the
authorize page Webex Connect's Generate Token opens.

As Entra ID does: a token names its resource in ``aud`` whatever host served it, and the OpenID
configuration names endpoints on the host asked; a scope on a resource the tenant does not know is
refused (AADSTS500011), as is a first-party client asking for a resource it is not preauthorized for
(AADSTS65002); the tenant's own application signs a user in by device code only as a public client.
"""

from __future__ import annotations

import secrets as pysecrets
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config.clouds import OIDC_SCOPES as OIDC
from . import cloud
from .mailboxes import KINDS
from .messages import Request, Response, parse_iso
from .tokens import b64url_json

if TYPE_CHECKING:
    from .tenant import SimulatedTenant

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: OpenID Connect's scopes (msal adds three of them itself): Microsoft Graph's delegated permissions, which a
#: customer's application needs consent for like any other; Microsoft's own clients are preauthorized
OIDC_SCOPES = frozenset(OIDC)
ALL_OPERATOR_SCOPES = [
    "Application.ReadWrite.All",
    "AppRoleAssignment.ReadWrite.All",
    "DelegatedPermissionGrant.ReadWrite.All",
    "Policy.Read.All",
    "User.Read.All",
    "MailboxSettings.Read",
]
#: who signs in by device code for each resource, and the delegated scopes the token carries
#: (None: the operator's granted Graph scopes)
SIGN_INS: dict[str, tuple[str, list[str] | None]] = {
    cloud.GRAPH: ("operator", None),
    cloud.EXCHANGE: ("operator", ["Exchange.Manage"]),
    cloud.SMTP: ("mailbox", ["SMTP.Send"]),  # the mailbox user, as at Generate Token
}
PAGE = "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>{}</body></html>"


def mailbox_upn(tenant: SimulatedTenant) -> str:
    """Who a sign-in for SMTP.Send signs in as (the mailbox user, as at Generate Token): the seed's first user."""
    return str(next(iter(tenant.users.values()))["userPrincipalName"])


class Refused(Exception):
    """An AADSTS error answer, raised where the request is found wanting."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass(frozen=True)
class Scope:
    """The resource a scope parameter asks for, the permission names on it, and OpenID Connect's scopes asked."""

    resource: str
    names: frozenset[str]
    oidc: frozenset[str] = frozenset()

    def wanted(self) -> dict[str, set[str]]:
        """What consent must cover, by resource: OpenID Connect's scopes are Microsoft Graph's."""
        wanted = {self.resource: set(self.names)}
        if self.oidc:
            wanted.setdefault(cloud.GRAPH, set()).update(self.oidc)
        return wanted


@dataclass
class DeviceSignIn:
    client_id: str
    scope: Scope
    polls_left: int


@dataclass(frozen=True)
class CodeGrant:
    """An authorization code the authorize page issued: for whom, to which client, asking what."""

    client_id: str
    redirect_uri: str
    scope: Scope
    upn: str


class Identity:
    def __init__(self, tenant: SimulatedTenant) -> None:
        self.t = tenant
        self.devices: dict[str, DeviceSignIn] = {}
        self.codes: dict[str, CodeGrant] = {}
        self.redeemed: set[str] = set()
        self.refresh_tokens: dict[str, tuple[list[str], str, str]] = {}  # token -> (scopes, resource, upn)
        self.endpoints: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "v2.0/.well-known/openid-configuration"): self._openid_configuration,
            ("POST", "oauth2/v2.0/devicecode"): self._device_code,
            ("POST", "oauth2/v2.0/token"): self._token,
            ("GET", "oauth2/v2.0/authorize"): self._authorize,
            ("POST", "oauth2/v2.0/authorize"): self._sign_in,
        }
        self.grants: dict[str, Callable[[Request], Response]] = {
            DEVICE_GRANT: self._device_grant,
            "authorization_code": self._code_grant,
            "refresh_token": self._refresh_grant,
            "client_credentials": self._client_grant,
        }

    def handle(self, request: Request) -> Response:
        tenant, _, rest = request.path.strip("/").partition("/")
        if tenant.lower() not in self.t.domains:
            return self._error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        endpoint = self.endpoints.get((request.method, rest))
        if endpoint is None:
            return Response(404, {"error": "not_found"})
        try:
            return endpoint(request)
        except Refused as refused:
            return refused.response

    def _error(self, status: int, error: str, code: int, text: str) -> Response:
        trace = self.t.new_id()
        now = f"{self.t.now():%Y-%m-%d %H:%M:%SZ}"
        return Response(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {trace} Timestamp: {now}",
                "error_codes": [code],
                "timestamp": now,
                "trace_id": trace,
                "correlation_id": trace,
                "error_uri": f"https://{cloud.LOGIN_HOST}/error?code={code}",
            },
        )

    def _refuse(self, status: int, error: str, code: int, text: str) -> Refused:
        return Refused(self._error(status, error, code, text))

    # --- what a request asks for, and whether that client may ---------------------------------

    def _scope(self, text: str) -> Scope:
        """The one resource ``text`` asks for; a bare name is a Graph scope, as Entra ID reads it."""
        asked: dict[str, set[str]] = {}
        oidc = frozenset(item for item in text.split() if item in OIDC_SCOPES)
        for item in text.split():
            if item in OIDC_SCOPES:
                continue
            resource, _, name = item.rpartition("/") if "://" in item else (cloud.GRAPH, "/", item)
            asked.setdefault(resource.rstrip("/"), set()).add(name)
        for resource in asked:
            if resource not in cloud.RESOURCES:
                raise self._refuse(
                    400,
                    "invalid_resource",
                    500011,
                    f"The resource principal named {resource} "
                    f"was not found in the tenant named {self.t.tenant_id}. This can happen if the "
                    "application has not been installed by the administrator of the tenant or consented "
                    "to by any user in the tenant. You might have sent your authentication request to "
                    "the wrong tenant.",
                )
        if len(asked) > 1:
            raise self._refuse(
                400,
                "invalid_scope",
                28000,
                "Provided value for the input parameter scope is not "
                f"valid because it contains more than one resource. Scope {text} is not valid.",
            )
        resource, names = next(iter(asked.items()), (cloud.GRAPH, set()))
        return Scope(resource, frozenset(names), oidc)

    def _preauthorized(self, client_id: str, scope: Scope) -> None:
        """A first-party client gets tokens only for the resources (and scopes) it is preauthorized for."""
        if client_id not in cloud.PREAUTHORIZED:
            return
        allowed = cloud.PREAUTHORIZED[client_id].get(scope.resource, frozenset())
        if allowed is None or (allowed and scope.names <= allowed):
            return
        raise self._refuse(
            400,
            "invalid_request",
            65002,
            f"Consent between first party application '{client_id}' "
            f"and first party resource '{cloud.RESOURCES[scope.resource]}' must be configured via "
            "preauthorization - applications owned and operated by Microsoft must get approval from "
            "the API owner before requesting tokens for that API.",
        )

    def _unknown_client(self, client_id: str) -> Refused:
        return self._refuse(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not "
            f"found in the directory '{self.t.seed['domain']}'. This can happen if the application has "
            "not been installed by the administrator of the tenant or consented to by any user in the "
            "tenant. You might have sent your authentication request to the wrong tenant.",
        )

    def _public_client(self, client_id: str) -> None:
        """A client that may sign a user in without a secret: first-party, or the tenant's own public client."""
        if client_id in cloud.PREAUTHORIZED:
            return
        app = self.t.application("appId", client_id)
        if app is None:
            raise self._unknown_client(client_id)
        if not (app.get("isFallbackPublicClient") or (app.get("publicClient") or {}).get("redirectUris")):
            raise self._refuse(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )

    # --- endpoints ----------------------------------------------------------------------------

    def _openid_configuration(self, request: Request) -> Response:
        base = f"https://{request.host}/{self.t.tenant_id}"
        return Response(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"https://{cloud.LOGIN_HOST}/{self.t.tenant_id}/v2.0",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            },
        )

    def _device_code(self, request: Request) -> Response:
        client_id = request.form("client_id")
        scope = self._scope(request.form("scope"))
        self._preauthorized(client_id, scope)
        self._public_client(client_id)
        user_code = "".join(self.t.rng.choice(string.ascii_uppercase + string.digits) for _ in range(9))
        device_code = f"DAQABAAEAAAD{self.t.canary}" + pysecrets.token_urlsafe(48)
        self.devices[device_code] = DeviceSignIn(client_id, scope, self.t.pending_polls)
        return Response(
            200,
            {
                "user_code": user_code,
                "device_code": device_code,
                "verification_uri": "https://microsoft.com/devicelogin",
                "expires_in": 900,
                "interval": 5,
                "message": f"To sign in, use a web browser to open the page https://microsoft.com/devicelogin "
                f"and enter the code {user_code} to authenticate.",
            },
        )

    def _page_problem(self, query: dict[str, str]) -> str:
        """What the authorize page shows instead of the sign-in form: an unknown client, an unregistered redirect
        URI (empty when neither)."""
        app = self.t.application("appId", query.get("client_id"))
        if app is None:
            return (
                f"AADSTS700016: Application with identifier '{query.get('client_id')}' was not found in the "
                f"directory '{self.t.seed['domain']}'."
            )
        if query.get("redirect_uri") not in (app.get("web") or {}).get("redirectUris", []):
            return (
                f"AADSTS50011: The redirect URI '{query.get('redirect_uri')}' specified in the request does not "
                f"match the redirect URIs configured for the application '{app['appId']}'."
            )
        return ""

    @staticmethod
    def _page(status: int, body: str) -> Response:
        return Response(status, headers={"Content-Type": "text/html; charset=utf-8"}, raw=PAGE.format(body).encode())

    def _authorize(self, request: Request) -> Response:
        """The page Generate Token opens: refused at once for an unknown client or an unregistered redirect URI."""
        problem = self._page_problem(request.query)
        return self._page(400, f"<p>{problem}</p>") if problem else self._page(200, "<form id='i0281'>Sign in</form>")

    def _sign_in(self, request: Request) -> Response:
        """The user signing in on that page (the simulated browser posts the authorize request's fields with the
        user's name, ``login_hint``): Entra ID checks the account, then consent for every scope asked, OpenID
        Connect's included. A user who may not consent sees "Need admin approval" (AADSTS90094) and is never sent
        back; otherwise the browser is redirected to the redirect URI with an authorization code."""
        query = {k: request.form(k) for k in ("client_id", "redirect_uri", "scope", "state", "response_type")}
        problem = self._page_problem(query)
        if not problem and query["response_type"] != "code":
            problem = "AADSTS70005: unsupported_response_type: the sandbox signs users in by the code flow only."
        if problem:
            return self._page(400, f"<p>{problem}</p>")
        upn = request.form("login_hint")
        try:
            scope = self._scope(query["scope"])
            self._may_sign_in(query["client_id"], upn)
            self._consent(query["client_id"], upn, scope.wanted(), interactive=True)
        except Refused as refused:
            text = str((refused.response.body or {}).get("error_description", ""))
            return self._page(200 if text.startswith("AADSTS90094") else 400, f"<p>{text}</p>")
        code = f"0.AXoA{self.t.canary}" + pysecrets.token_urlsafe(48)
        self.codes[code] = CodeGrant(query["client_id"], query["redirect_uri"], scope, upn)
        state = f"&state={query['state']}" if query["state"] else ""
        return Response(302, headers={"Location": f"{query['redirect_uri']}?code={code}{state}"})

    def _token(self, request: Request) -> Response:
        grant = self.grants.get(request.form("grant_type"))
        if grant is None:
            return self._error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if request.form("scope"):
            self._preauthorized(request.form("client_id"), self._scope(request.form("scope")))
        return grant(request)

    # --- grants -------------------------------------------------------------------------------

    def _device_grant(self, request: Request) -> Response:
        code = request.form("device_code")
        device = self.devices.get(code)
        if device is None:
            return self._error(400, "invalid_grant", 70000, "The provided value for 'device_code' is not valid.")
        if device.polls_left > 0:
            device.polls_left -= 1
            return self._error(
                400,
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            )
        del self.devices[code]
        who, scopes = SIGN_INS[device.scope.resource]
        upn = mailbox_upn(self.t) if who == "mailbox" else self._operator_upn()
        self._may_sign_in(device.client_id, upn)
        if who == "mailbox":
            self._consent(device.client_id, upn, device.scope.wanted())
        refresh = "offline_access" in device.scope.oidc
        return self._user_tokens(
            device.client_id, scopes or self._operator_scopes(), device.scope.resource, upn, refresh=refresh
        )

    def _consent(self, client_id: str, upn: str, wanted: dict[str, set[str]], *, interactive: bool = False) -> None:
        """A user signing in to the tenant's own application needs consent for every scope asked, on each
        resource (OpenID Connect's on Microsoft Graph): a tenant-wide grant, or their own. What is missing the
        user consents to when the policy lets users consent to any app (Entra ID then records a Principal grant
        per resource), else the sign-in is refused: "Need admin approval" (AADSTS90094) on the page, AADSTS65001
        at the token endpoint."""
        app = self.t.application("appId", client_id)
        user = self.t.user(upn)
        if app is None or user is None:
            return  # Microsoft's own clients are preauthorized
        app_sp = next((sp for sp in self.t.service_principals if sp["appId"] == client_id), None)
        missing: dict[str, set[str]] = {}
        for resource, names in wanted.items():
            resource_sp = self.t.service_principal(cloud.RESOURCES.get(resource, ""))
            held = {
                name
                for grant in self.t.grants
                if app_sp is not None
                and resource_sp is not None
                and grant["clientId"] == app_sp["id"]
                and grant["resourceId"] == resource_sp["id"]
                and (grant["consentType"] == "AllPrincipals" or grant["principalId"] == user["id"])
                for name in grant["scope"].split()
            }
            if resource_sp is not None and names - held:
                missing[resource_sp["id"]] = names - held
        if not missing:
            return
        if self.t.seed.get("user_consent", "legacy") != "legacy":
            asked = ", ".join(sorted(n for names in missing.values() for n in names))
            if interactive:
                raise self._refuse(
                    200,
                    "access_denied",
                    90094,
                    f"Need admin approval. {app['displayName']} needs permission to access resources in your "
                    f"organization that only an admin can grant ({asked}). Please ask an admin to grant "
                    "permission to this app before you can use it.",
                )
            raise self._refuse(
                400,
                "invalid_grant",
                65001,
                f"The user or administrator has not consented to use the application with ID '{client_id}' "
                f"named '{app['displayName']}' ({asked}). Send an interactive authorization request for this "
                "user and resource.",
            )
        app_sp = app_sp or self.t.new_sp(app)  # consenting makes the application's service principal too
        for resource_id, names in missing.items():
            own = next(
                (
                    g
                    for g in self.t.grants
                    if g["clientId"] == app_sp["id"]
                    and g["resourceId"] == resource_id
                    and g["principalId"] == user["id"]
                ),
                None,
            )
            if own is not None:  # one grant per client, resource and user: widened in place
                own["scope"] = " ".join(sorted({*own["scope"].split(), *names}))
            else:
                self.t.grants.append(self.t.grant(app_sp["id"], " ".join(sorted(names)), user["id"], resource_id))

    def _code_grant(self, request: Request) -> Response:
        """Webex Connect redeeming the code (a confidential client: its secret is checked first). A code is
        redeemed once (AADSTS54005) and only with the redirect URI it was issued to; a refresh token comes only
        with offline_access."""
        client_id = request.form("client_id")
        refused = self._confidential(client_id, request.form("client_secret"))
        if refused is not None:
            return refused
        code = request.form("code")
        if code in self.redeemed:
            return self._error(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed.")
        grant = self.codes.get(code)
        if grant is None or grant.client_id != client_id:
            return self._error(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if request.form("redirect_uri") != grant.redirect_uri:
            return self._error(
                400,
                "invalid_grant",
                70000,
                "The provided value for the 'redirect_uri' is not valid. The value must exactly match the "
                "redirect URI used to obtain the authorization code.",
            )
        del self.codes[code]
        self.redeemed.add(code)
        self._may_sign_in(client_id, grant.upn)
        names = sorted(grant.scope.names)
        refresh = "offline_access" in grant.scope.oidc
        return self._user_tokens(client_id, names, grant.scope.resource, grant.upn, refresh=refresh)

    def _refresh_grant(self, request: Request) -> Response:
        grant = self.refresh_tokens.get(request.form("refresh_token"))
        if grant is None:
            return self._error(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity.")
        self._may_sign_in(request.form("client_id"), grant[2])  # refused, the refresh token stays valid
        del self.refresh_tokens[request.form("refresh_token")]
        return self._user_tokens(request.form("client_id"), *grant)

    def _may_sign_in(self, client_id: str, upn: str) -> None:
        """Before consent, Entra ID refuses a user whose account is disabled (AADSTS50057: sign-in blocked, as
        for a shared mailbox) and, for an application that requires assignment, a user not assigned to it
        (AADSTS50105); both at every sign-in and every token refresh."""
        user = self.t.user(upn)
        if user is None:
            return
        if not (user["accountEnabled"] and KINDS[user["mailbox"]].sign_in):
            raise self._refuse(400, "invalid_grant", 50057, "The user account is disabled.")
        sp = self.t.service_principal(client_id)
        if (
            sp
            and sp.get("appRoleAssignmentRequired")
            and not any(a["principalId"] == user["id"] and a["resourceId"] == sp["id"] for a in self.t.assignments)
        ):
            raise self._refuse(
                400,
                "invalid_grant",
                50105,
                f"Your administrator has configured the application {sp['displayName']} ('{client_id}') to "
                "block users unless they are specifically granted ('assigned') access to the application. "
                f"The signed in user '{upn}' is blocked because they are not a direct member of a group "
                "with access, nor had access directly assigned by an administrator. Please contact your "
                "administrator to assign access to this application.",
            )

    def _client_grant(self, request: Request) -> Response:
        client_id, secret = request.form("client_id"), request.form("client_secret")
        scope = self._scope(request.form("scope"))
        if scope.names != {".default"}:
            return self._error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {request.form('scope')} "
                "is not valid. Client credential flows must have a scope value with /.default suffixed "
                "to the resource identifier (application ID URI).",
            )
        automation = self.t.operator.get("automation") or {}
        if client_id == automation.get("client_id") and scope.resource == cloud.GRAPH:
            if secret != automation.get("secret"):
                return self._error(401, "invalid_client", 7000215, "Invalid client secret provided.")
            return self._app_token(client_id, cloud.GRAPH, self._operator_scopes())
        refused = self._confidential(client_id, secret)
        if refused is not None:
            return refused
        return self._app_token(client_id, scope.resource, self._roles(client_id, scope.resource))

    def _confidential(self, client_id: str, secret: str) -> Response | None:
        """The refusal a confidential client's secret gets (none when it is one of the application's, in force
        and replicated)."""
        app = self.t.application("appId", client_id)
        if app is None:
            raise self._unknown_client(client_id)
        key_ids = {k for k, v in self.t.secret_values.items() if v == secret}
        cred = next(
            (
                c
                for c in app["passwordCredentials"]
                if c["keyId"] in key_ids and self.t.settled(c["startDateTime"], "secret_lag_seconds")
            ),
            None,
        )
        if cred is None:
            return self._error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret "
                "being sent in the request is the client secret value, not the client secret ID, "
                f"for a secret added to app '{client_id}'.",
            )
        if parse_iso(cred["endDateTime"]) <= self.t.now():
            return self._error(
                401, "invalid_client", 7000222, f"The provided client secret keys for app '{client_id}' are expired."
            )
        return None

    # --- tokens -------------------------------------------------------------------------------

    def _operator_upn(self) -> str:
        return str(self.t.operator.get("upn", f"admin@{self.t.seed['domain']}"))

    def _operator_scopes(self) -> list[str]:
        return list(self.t.operator.get("scopes", ALL_OPERATOR_SCOPES))

    def _roles(self, client_id: str, resource: str) -> list[str]:
        """Exchange Online's application permissions granted to the client, as far as tokens see them yet."""
        sp = self.t.service_principal(client_id)
        exchange = self.t.exchange_sp
        if not sp or resource != cloud.EXCHANGE or not exchange:
            return []
        ids = {
            a["appRoleId"]
            for a in self.t.assignments
            if a["principalId"] == sp["id"] and self.t.settled(a["createdDateTime"], "role_lag_seconds")
        }
        return [r["value"] for r in exchange["appRoles"] if r["id"] in ids]

    def _user_tokens(
        self, client_id: str, scopes: list[str], resource: str, upn: str, *, refresh: bool = True
    ) -> Response:
        user = self.t.user(upn)
        oid = user["id"] if user else str(uuid.uuid5(uuid.NAMESPACE_URL, upn))
        name = "Tenant Administrator" if upn == self._operator_upn() else upn.split("@")[0]
        now = int(self.t.now().timestamp())
        access = self._access_token(resource, client_id, oid, scp=" ".join(scopes), upn=upn)
        id_token = self.t.sign(
            {
                "aud": client_id,
                "iss": f"https://{cloud.LOGIN_HOST}/{self.t.tenant_id}/v2.0",
                "iat": now,
                "nbf": now,
                "exp": now + 3599,
                "name": name,
                "oid": oid,
                "preferred_username": upn,
                "sub": oid,
                "tid": self.t.tenant_id,
                "ver": "2.0",
            }
        )
        client_info = {"uid": oid, "utid": self.t.tenant_id}
        answer = {
            "token_type": "Bearer",
            "scope": " ".join(f"{resource}/{s}" for s in scopes),
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": access,
            "id_token": id_token,
            "client_info": b64url_json(client_info),
        }
        if refresh:  # only a sign-in that asked for offline_access gets one
            token = f"1.AXoA{self.t.canary}" + pysecrets.token_urlsafe(64)  # opaque, as Entra ID's are
            self.refresh_tokens[token] = (scopes, resource, upn)
            answer["refresh_token"] = token
        return Response(200, answer)

    def _access_token(self, resource: str, client_id: str, oid: str, **claims: Any) -> str:
        """A v1 access token for ``resource`` (its audience, whatever host served it), signed by this tenant."""
        now = int(self.t.now().timestamp())
        return self.t.sign(
            {
                "aud": resource,
                "iss": f"https://sts.windows.net/{self.t.tenant_id}/",
                "iat": now,
                "nbf": now,
                "exp": now + 3599,
                "appid": client_id,
                "oid": oid,
                "tid": self.t.tenant_id,
                "ver": "1.0",
                **claims,
            }
        )

    def _app_token(self, client_id: str, resource: str, roles: list[str]) -> Response:
        access = self._access_token(resource, client_id, self._app_oid(client_id), roles=roles)
        return Response(
            200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": access}
        )

    def _app_oid(self, client_id: str) -> str:
        """An app's token names its service principal's object ID."""
        sp = self.t.service_principal(client_id)
        return sp["id"] if sp else str(uuid.uuid5(uuid.NAMESPACE_URL, client_id))
