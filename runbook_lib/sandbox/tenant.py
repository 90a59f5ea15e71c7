"""The simulated tenant's state and its HTTP behaviour.

State comes from a seed file (``recordings/<tenant>/tenant.yaml``): the tenant's IDs, its users,
existing applications, consent policy, the operator's granted scopes, and injected faults
(throttling, replication delays). IDs are generated from a seeded random source, so regenerating
the recordings gives the same IDs.
"""
from __future__ import annotations

import copy
import json
import random
import re
import secrets as pysecrets
import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

from ..endpoints import CLOUDS, EXCHANGE_APP_ID
from . import tokens

GRAPH_HOST = CLOUDS["global"]["graph_url"].removeprefix("https://")
LOGIN_HOST = CLOUDS["global"]["authority_host"]
EXCHANGE_RESOURCE = CLOUDS["global"]["exchange_url"]
SMTP_RESOURCE = CLOUDS["global"]["smtp_scope_resource"]
SMTP_SUFFIX = "[BN9PR03CA0123.namprd03.prod.outlook.com]"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ALL_OPERATOR_SCOPES = ["Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All",
                       "DelegatedPermissionGrant.ReadWrite.All", "Policy.Read.All", "User.Read.All",
                       "MailboxSettings.Read"]
CONSENT_POLICIES = {
    "legacy": ["ManagePermissionGrantsForSelf.microsoft-user-default-legacy",
               "ManagePermissionGrantsForOwnedResource.DeveloperConsent"],
    "low": ["ManagePermissionGrantsForSelf.microsoft-user-default-low",
            "ManagePermissionGrantsForOwnedResource.DeveloperConsent"],
    "off": ["ManagePermissionGrantsForOwnedResource.DeveloperConsent"],
}
MAILBOX_FIELDS = {"mailbox", "SmtpClientAuthenticationDisabled", "ForwardingSmtpAddress", "DeliverToMailboxAndForward"}
JSON_GRAPH = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] | None = None
    raw: bytes | None = None

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return b""
        return json.dumps(self.body).encode("utf-8")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SimulatedTenant:
    """One tenant. ``canary`` is embedded in every secret it issues, for leak tests; ``pending_polls=0``
    completes device-code sign-ins at once, so live-mode tests do not wait out the polling interval."""

    def __init__(self, seed: dict[str, Any], *, canary: str = "", now: Callable[[], datetime] | None = None,
                 pending_polls: int = 1) -> None:
        self.seed = copy.deepcopy(seed)
        self.pending_polls = pending_polls   # device-code polls answered "pending" before the sign-in completes
        self.store: dict[str, Any] | None = None   # sandbox mode: the trainee's secret store, for exercises
        self.rng = random.Random(seed.get("seed", seed["tenant_id"]))
        self.canary = canary
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.key = pysecrets.token_hex(16)
        self.tenant_id: str = seed["tenant_id"]
        self.domains = {seed["domain"].lower(), self.tenant_id}
        self.operator = seed.get("operator", {})
        self.faults: list[dict[str, Any]] = [dict(f) for f in seed.get("faults", [])]
        self.requests: list[str] = []   # every request served, for tests and the benchmark
        self.pending_devices: dict[str, int] = {}
        self.device_scopes: dict[str, str] = {}
        self.refresh_tokens: dict[str, tuple[list[str], str, str]] = {}
        self.exchange = self._exchange_sp() if seed.get("exchange_online", True) else None
        self.service_principals: list[dict[str, Any]] = [self.exchange] if self.exchange else []
        self.applications: list[dict[str, Any]] = []
        self.secret_values: dict[str, str] = {}
        self.assignments: list[dict[str, Any]] = []
        self.grants: list[dict[str, Any]] = []
        self.users = {u["upn"].lower(): {"id": self.new_id(), "userPrincipalName": u["upn"],
                                        "mail": u.get("mail", u["upn"]), "accountEnabled": u.get("enabled", True),
                                        "mailbox": u.get("mailbox", True),
                                        "SmtpClientAuthenticationDisabled": u.get("smtp_auth_disabled"),
                                        "ForwardingSmtpAddress": u.get("forwarding"),
                                        "DeliverToMailboxAndForward": u.get("keep_copy", False)}
                      for u in seed.get("users", [])}
        self.transport_smtp_auth_disabled = seed.get("tenant_smtp_auth_disabled", True)
        self.outbound_policies = [{"Name": "Default", "IsDefault": True,
                                   "AutoForwardingMode": seed.get("default_forwarding_mode", "Automatic")}]
        self.outbound_policies += [dict(p, IsDefault=False) for p in seed.get("outbound_policies", [])]
        self.outbound_rules = [dict(r) for r in seed.get("outbound_rules", [])]
        for app in seed.get("applications", []):
            self._seed_application(app)

    # --- ids and seeding ----------------------------------------------------------------------

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _secret_text(self) -> str:
        alphabet = string.ascii_letters + string.digits
        head = self.rng.choice(string.ascii_uppercase) + "".join(self.rng.choice(alphabet) for _ in range(2))
        tail = "".join(self.rng.choice(alphabet + "~._-") for _ in range(36))
        return head + "8Q~" + (self.canary or "") + tail

    def _exchange_sp(self) -> dict[str, Any]:
        role = lambda value, desc: {"allowedMemberTypes": ["Application"], "description": desc, "displayName": desc,
                                    "id": self.new_id(), "isEnabled": True, "origin": "Application", "value": value}
        scope = lambda value, desc: {"adminConsentDescription": desc, "adminConsentDisplayName": desc,
                                     "id": self.new_id(), "isEnabled": True, "type": "User", "value": value,
                                     "userConsentDescription": desc, "userConsentDisplayName": desc}
        return {"id": self.new_id(), "appId": EXCHANGE_APP_ID, "displayName": "Office 365 Exchange Online",
                "appRoles": [role("full_access_as_app", "Use Exchange Web Services with full access to all mailboxes"),
                             role("Mail.Read", "Read mail in all mailboxes"),
                             role("Mail.Send", "Send mail as any user"),
                             role("Exchange.ManageAsApp", "Manage Exchange As Application"),
                             role("SMTP.SendAsApp", "Send emails from mailboxes using SMTP AUTH")],
                "oauth2PermissionScopes": [scope("EWS.AccessAsUser.All", "Access mailboxes as the signed-in user"),
                                           scope("IMAP.AccessAsUser.All", "Read and write user mailboxes via IMAP"),
                                           scope("SMTP.Send", "Send emails from mailboxes using SMTP AUTH")]}

    def _seed_application(self, spec: dict[str, Any]) -> None:
        """An application that already exists, described by the scenario (drifted, configured, ...)."""
        now = self.now()
        app = {"id": self.new_id(), "appId": spec.get("app_id") or self.new_id(), "displayName": spec["display_name"],
               "createdDateTime": _iso(now - timedelta(days=spec.get("age_days", 400))), "signInAudience": "AzureADMyOrg",
               "web": {"redirectUris": list(spec.get("redirect_uris", [])),
                       "implicitGrantSettings": {"enableAccessTokenIssuance": spec.get("implicit_access_token", False),
                                                 "enableIdTokenIssuance": False}},
               "requiredResourceAccess": [], "passwordCredentials": []}
        if self.exchange:
            wanted = [(name, "Role") for name in spec.get("exchange_roles", [])]
            wanted += [(name, "Scope") for name in spec.get("exchange_scopes", [])]
            access = [{"id": self._permission_id(n, t), "type": t} for n, t in wanted]
            if access:
                app["requiredResourceAccess"].append({"resourceAppId": EXCHANGE_APP_ID, "resourceAccess": access})
        for other in spec.get("other_resource_access", []):
            app["requiredResourceAccess"].append(other)
        self.applications.append(app)
        for secret in spec.get("secrets", []):
            self._add_password(app, secret.get("description", "added by hand"),
                               now + timedelta(days=secret["expires_in_days"]), secret.get("value"), secret.get("key_id"))
        if spec.get("service_principal"):
            sp = self._new_sp(app)
            for role in spec.get("granted_roles", []):
                self.assignments.append(self._assignment(sp["id"], self._permission_id(role, "Role")))
            if spec.get("granted_scopes"):
                self.grants.append(self._grant(sp["id"], " ".join(spec["granted_scopes"])))

    def _permission_id(self, name: str, kind: str) -> str:
        items = self.exchange["appRoles"] if kind == "Role" else self.exchange["oauth2PermissionScopes"]
        return next(i["id"] for i in items if i["value"] == name)

    # --- HTTP -------------------------------------------------------------------------------------

    def handle(self, method: str, host: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        path, _, query_string = target.partition("?")
        self.requests.append(f"{method} {host}{path}")
        query = {k: v[0] for k, v in parse_qs(query_string).items()}
        fault = self._fault(method, path)
        if fault:
            response = fault
        elif host == LOGIN_HOST:
            response = self._identity(method, path, parse_qs(body.decode() if body else ""), query)
        elif host == GRAPH_HOST:
            response = self._graph(method, unquote(path), query, headers, body)
        elif f"https://{host}" == EXCHANGE_RESOURCE:
            response = self._exchange(method, unquote(path), headers, body)
        else:
            response = Response(404, {"error": "unknown host"})
        return self._finish(response, host, headers)

    def _finish(self, response: Response, host: str, headers: dict[str, str]) -> Response:
        request_id = self.new_id()
        out = {"Date": format_datetime(self.now(), usegmt=True), "request-id": request_id,
               "client-request-id": headers.get("client-request-id", request_id),
               "Cache-Control": "no-store, no-cache", "Strict-Transport-Security": "max-age=31536000"}
        if response.body is not None:
            out["Content-Type"] = JSON_GRAPH if host == GRAPH_HOST else "application/json; charset=utf-8"
        if response.raw is not None:
            out["Content-Type"] = "application/octet-stream"
        if host == GRAPH_HOST:
            out["x-ms-ags-diagnostic"] = json.dumps({"ServerInfo": {"DataCenter": "West Europe", "Slice": "E",
                                                                    "Ring": "5", "ScaleUnit": "001"}})
            if response.status >= 400 and isinstance(response.body, dict) and "error" in response.body:
                response.body["error"]["innerError"] = {"date": _iso(self.now()), "request-id": request_id,
                                                        "client-request-id": out["client-request-id"]}
        else:
            out["x-ms-request-id"] = request_id
            out["Set-Cookie"] = f"fpc={self.canary}Ahx{request_id[:8]}; expires=Tue, 01-Jan-2030 00:00:00 GMT; path=/; secure; HttpOnly"
        out.update(response.headers or {})
        response.headers = out
        return response

    def delay_for(self, method: str, target: str) -> float:
        """Seconds to wait before answering (a ``delay`` fault: a hung or very slow service)."""
        for fault in self.faults:
            if "delay" in fault and fault.get("times", 1) > 0 and fault["method"] == method \
                    and re.search(fault["path"], unquote(target.split("?")[0])):
                fault["times"] = fault.get("times", 1) - 1
                return float(fault["delay"])
        return 0.0

    def _fault(self, method: str, path: str) -> Response | None:
        for fault in self.faults:
            if "delay" in fault:
                continue
            if fault.get("times", 1) > 0 and fault["method"] == method and re.search(fault["path"], unquote(path)):
                fault["times"] = fault.get("times", 1) - 1
                body = {"error": {"code": fault["code"], "message": fault.get("message", fault["code"])}}
                if fault.get("detail"):
                    body["error"]["details"] = [{"code": fault["detail"], "message": fault.get("detail_message", "")}]
                headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
                return Response(fault["status"], body, headers)
        return None

    # --- identity platform --------------------------------------------------------------------

    def _identity(self, method: str, path: str, form: dict[str, list[str]], query: dict[str, str]) -> Response:
        parts = path.strip("/").split("/")
        tenant = parts[0].lower()
        if tenant not in self.domains:
            return self._aad_error(400, "invalid_request", 90002, f"Tenant '{parts[0]}' not found.")
        rest = "/".join(parts[1:])
        field = lambda name: (form.get(name) or [""])[0]
        if method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            return Response(200, self._openid_configuration())
        if method == "POST" and rest == "oauth2/v2.0/devicecode":
            return self._device_code(field("client_id"), field("scope"))
        if method == "POST" and rest == "oauth2/v2.0/token":
            return self._token(field("grant_type"), field)
        if method == "GET" and rest == "oauth2/v2.0/authorize":
            return self._authorize(query)
        return Response(404, {"error": "not_found"})

    def _openid_configuration(self) -> dict[str, Any]:
        base = f"https://{LOGIN_HOST}/{self.tenant_id}"
        return {"token_endpoint": f"{base}/oauth2/v2.0/token", "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"https://{LOGIN_HOST}/{self.tenant_id}/v2.0", "jwks_uri": f"https://{LOGIN_HOST}/{self.tenant_id}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com"}

    def _device_code(self, client_id: str, scope: str) -> Response:
        user_code = "".join(self.rng.choice(string.ascii_uppercase + string.digits) for _ in range(9))
        device_code = f"DAQABAAEAAAD{self.canary}" + pysecrets.token_urlsafe(48)
        self.pending_devices[device_code] = self.pending_polls
        self.device_scopes[device_code] = scope
        return Response(200, {"user_code": user_code, "device_code": device_code,
                              "verification_uri": "https://microsoft.com/devicelogin", "expires_in": 900, "interval": 5,
                              "message": f"To sign in, use a web browser to open the page https://microsoft.com/devicelogin "
                                         f"and enter the code {user_code} to authenticate."})

    def _authorize(self, query: dict[str, str]) -> Response:
        """The page Generate Token opens: refused at once for an unknown client or an unregistered redirect URI."""
        app = next((a for a in self.applications if a["appId"] == query.get("client_id")), None)
        if app is None:
            text = (f"AADSTS700016: Application with identifier '{query.get('client_id')}' was not found in the "
                    f"directory '{self.seed['domain']}'.")
        elif query.get("redirect_uri") not in (app.get("web") or {}).get("redirectUris", []):
            text = (f"AADSTS50011: The redirect URI '{query.get('redirect_uri')}' specified in the request does not "
                    f"match the redirect URIs configured for the application '{app['appId']}'.")
        else:
            return Response(200, headers={"Content-Type": "text/html; charset=utf-8"},
                            raw=b"<!DOCTYPE html><html><head><title>Sign in to your account</title></head>"
                                b"<body><form id='i0281'>Sign in</form></body></html>")
        page = f"<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body><p>{text}</p></body></html>"
        return Response(400, headers={"Content-Type": "text/html; charset=utf-8"}, raw=page.encode())

    def _aad_error(self, status: int, error: str, code: int, text: str) -> Response:
        trace = self.new_id()
        return Response(status, {"error": error, "error_description": f"AADSTS{code}: {text} Trace ID: {trace} "
                                 f"Correlation ID: {trace} Timestamp: {self.now():%Y-%m-%d %H:%M:%SZ}",
                                 "error_codes": [code], "timestamp": f"{self.now():%Y-%m-%d %H:%M:%SZ}",
                                 "trace_id": trace, "correlation_id": trace})

    def _token(self, grant: str, field: Callable[[str], str]) -> Response:
        if grant == DEVICE_GRANT:
            code = field("device_code")
            if code not in self.pending_devices:
                return self._aad_error(400, "invalid_grant", 70000, "The provided value for 'device_code' is not valid.")
            if self.pending_devices[code] > 0:
                self.pending_devices[code] -= 1
                return self._aad_error(400, "authorization_pending", 70016, "OAuth 2.0 device flow error. "
                                       "Authorization is pending. Continue polling.")
            del self.pending_devices[code]
            scope = self.device_scopes.pop(code, "")
            if EXCHANGE_RESOURCE in scope:
                return self._user_tokens(field("client_id"), ["Exchange.Manage"], EXCHANGE_RESOURCE)
            if f"{SMTP_RESOURCE}/SMTP.Send" in scope:   # the mailbox user signs in, as at Generate Token
                mailbox = next(iter(self.users.values()))["userPrincipalName"]
                return self._user_tokens(field("client_id"), ["SMTP.Send"], SMTP_RESOURCE, upn=mailbox)
            return self._user_tokens(field("client_id"), self.operator.get("scopes", ALL_OPERATOR_SCOPES))
        if grant == "refresh_token":
            grant = self.refresh_tokens.pop(field("refresh_token"), None)
            if grant is None:
                return self._aad_error(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity.")
            return self._user_tokens(field("client_id"), *grant)
        if grant == "client_credentials":
            return self._app_token(field("client_id"), field("client_secret"), field("scope"))
        return self._aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")

    def _user_tokens(self, client_id: str, scopes: list[str], resource: str = f"https://{GRAPH_HOST}",
                     upn: str = "") -> Response:
        upn = upn or self.operator.get("upn", f"admin@{self.seed['domain']}")
        oid = str(uuid.uuid5(uuid.NAMESPACE_URL, upn))
        now = int(self.now().timestamp())
        access = tokens.sign({"aud": resource, "iss": f"https://sts.windows.net/{self.tenant_id}/",
                              "iat": now, "nbf": now, "exp": now + 3599, "appid": client_id, "oid": oid,
                              "scp": " ".join(scopes), "tid": self.tenant_id, "upn": upn, "ver": "1.0"},
                             self.key, self.canary)
        id_token = tokens.sign({"aud": client_id, "iss": f"https://{LOGIN_HOST}/{self.tenant_id}/v2.0", "iat": now,
                                "nbf": now, "exp": now + 3599, "name": "Tenant Administrator", "oid": oid,
                                "preferred_username": upn, "sub": oid, "tid": self.tenant_id, "ver": "2.0"}, self.key, self.canary)
        refresh = f"1.AXoA{self.canary}" + pysecrets.token_urlsafe(64)   # opaque, as Entra ID's are
        self.refresh_tokens[refresh] = (scopes, resource, upn)
        client_info = tokens.b64url_json({"uid": oid, "utid": self.tenant_id})
        return Response(200, {"token_type": "Bearer", "scope": " ".join(f"{resource}/{s}" for s in scopes),
                              "expires_in": 3599, "ext_expires_in": 3599, "access_token": access,
                              "refresh_token": refresh, "id_token": id_token, "client_info": client_info})

    def _app_token(self, client_id: str, secret: str, scope: str) -> Response:
        automation = self.operator.get("automation") or {}
        if client_id == automation.get("client_id") and scope.startswith(f"https://{GRAPH_HOST}/"):
            if secret != automation.get("secret"):
                return self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
            return self._signed_app_token(client_id, f"https://{GRAPH_HOST}",
                                          self.operator.get("scopes", ALL_OPERATOR_SCOPES))
        app = next((a for a in self.applications if a["appId"] == client_id), None)
        if app is None:
            return self._aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' "
                                   f"was not found in the directory '{self.seed['domain']}'.")
        key_ids = [k for k, v in self.secret_values.items() if v == secret]
        cred = next((c for c in app["passwordCredentials"] if c["keyId"] in key_ids), None)
        if cred is None:
            return self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
                                   "being sent in the request is the client secret value, not the client secret ID, "
                                   f"for a secret added to app '{client_id}'.")
        if datetime.fromisoformat(cred["endDateTime"].replace("Z", "+00:00")) <= self.now():
            return self._aad_error(401, "invalid_client", 7000222, f"The provided client secret keys for app "
                                   f"'{client_id}' are expired.")
        resource = scope.removesuffix("/.default")
        sp = next((s for s in self.service_principals if s["appId"] == client_id), None)
        roles = []
        if sp and resource == EXCHANGE_RESOURCE and self.exchange:
            ids = {a["appRoleId"] for a in self.assignments if a["principalId"] == sp["id"]}
            roles = [r["value"] for r in self.exchange["appRoles"] if r["id"] in ids]
        return self._signed_app_token(client_id, resource, roles)

    def _signed_app_token(self, client_id: str, resource: str, roles: list[str]) -> Response:
        now = int(self.now().timestamp())
        access = tokens.sign({"aud": resource, "iss": f"https://sts.windows.net/{self.tenant_id}/", "iat": now,
                              "nbf": now, "exp": now + 3599, "appid": client_id, "roles": roles,
                              "tid": self.tenant_id, "ver": "1.0"}, self.key, self.canary)
        return Response(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": access})

    # --- Microsoft Graph ----------------------------------------------------------------------

    def _graph(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes) -> Response:
        auth = headers.get("authorization", "")
        claims = tokens.verify(auth.removeprefix("Bearer "), self.key, self.canary) if auth.startswith("Bearer ") else None
        if not claims or claims.get("aud") != f"https://{GRAPH_HOST}":
            return self._graph_error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
        path = path.removeprefix("/v1.0")
        data = json.loads(body) if body else {}
        for route_method, pattern, scopes, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                granted = set(claims.get("scp", "").split()) | set(claims.get("roles", []))
                if scopes and not granted & set(scopes):
                    return self._graph_error(403, "Authorization_RequestDenied",
                                             "Insufficient privileges to complete the operation.")
                return handler(*match.groups(), query=query, data=data)
        return self._graph_error(400, "BadRequest", f"Resource not found for the segment '{path.strip('/').split('/')[0]}'.")

    def _routes(self) -> list[tuple[str, str, tuple[str, ...], Callable[..., Response]]]:
        read_apps = ("Application.Read.All", "Application.ReadWrite.All")
        write_apps = ("Application.ReadWrite.All",)
        return [
            ("GET", r"/servicePrincipals\(appId='([^']+)'\)", read_apps, self._get_sp),
            ("POST", r"/servicePrincipals", write_apps, self._post_sp),
            ("GET", r"/servicePrincipals/([^/]+)/appRoleAssignments", read_apps, self._get_assignments),
            ("POST", r"/servicePrincipals/([^/]+)/appRoleAssignedTo", ("AppRoleAssignment.ReadWrite.All",), self._post_assignment),
            ("GET", r"/applications", read_apps, self._list_apps),
            ("GET", r"/applications\(appId='([^']+)'\)", read_apps, self._get_app_by_app_id),
            ("POST", r"/applications", write_apps, self._post_app),
            ("PATCH", r"/applications/([^/]+)", write_apps, self._patch_app),
            ("POST", r"/applications/([^/]+)/addPassword", write_apps, self._add_password_route),
            ("POST", r"/applications/([^/]+)/removePassword", write_apps, self._remove_password),
            ("GET", r"/oauth2PermissionGrants", ("DelegatedPermissionGrant.ReadWrite.All",), self._list_grants),
            ("POST", r"/oauth2PermissionGrants", ("DelegatedPermissionGrant.ReadWrite.All",), self._post_grant),
            ("PATCH", r"/oauth2PermissionGrants/([^/]+)", ("DelegatedPermissionGrant.ReadWrite.All",), self._patch_grant),
            ("GET", r"/policies/authorizationPolicy", ("Policy.Read.All",), self._policy),
            ("GET", r"/policies/identitySecurityDefaultsEnforcementPolicy", ("Policy.Read.All",), self._security_defaults),
            ("GET", r"/users", ("User.Read.All",), self._list_users),
            ("GET", r"/users/([^/]+)", ("User.Read.All",), self._get_user),
            ("GET", r"/users/([^/]+)/mailboxSettings", ("MailboxSettings.Read",), self._mailbox_settings),
        ]

    def _graph_error(self, status: int, code: str, message: str, detail: str = "") -> Response:
        body: dict[str, Any] = {"error": {"code": code, "message": message}}
        if detail:
            body["error"]["details"] = [{"code": detail, "message": message, "target": "appId"}]
        return Response(status, body)

    def _not_found(self, what: str) -> Response:
        return self._graph_error(404, "Request_ResourceNotFound",
                                 f"Resource '{what}' does not exist or one of its queried reference-property objects are not present.")

    @staticmethod
    def _select(item: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        fields = query.get("$select")
        return {k: copy.deepcopy(v) for k, v in item.items() if not fields or k in fields.split(",") or k == "id"}

    def _collection(self, context: str, items: list[dict[str, Any]], query: dict[str, str]) -> Response:
        return Response(200, {"@odata.context": f"https://{GRAPH_HOST}/v1.0/$metadata#{context}",
                              "value": [self._select(i, query) for i in items]})

    def _filter_eq(self, query: dict[str, str], field: str) -> str | None:
        match = re.fullmatch(rf"{field} eq '((?:[^']|'')*)'", query.get("$filter", ""))
        return match.group(1).replace("''", "'") if match else None

    # service principals
    def _new_sp(self, app: dict[str, Any]) -> dict[str, Any]:
        sp = {"id": self.new_id(), "appId": app["appId"], "displayName": app["displayName"], "appRoles": [],
              "oauth2PermissionScopes": []}
        self.service_principals.append(sp)
        return sp

    def _get_sp(self, app_id: str, query: dict[str, str], data: Any) -> Response:
        sp = next((s for s in self.service_principals if s["appId"] == app_id), None)
        return Response(200, self._select(sp, query)) if sp else self._not_found(f"servicePrincipals(appId='{app_id}')")

    def _post_sp(self, query: dict[str, str], data: Any) -> Response:
        app = next((a for a in self.applications if a["appId"] == data.get("appId")), None)
        if app is None:
            return self._graph_error(400, "Request_BadRequest", f"The appId '{data.get('appId')}' of the service "
                                     "principal does not reference a valid application object.", "NoBackingApplicationObject")
        if any(s["appId"] == app["appId"] for s in self.service_principals):
            return self._graph_error(409, "Request_MultipleObjectsWithSameKeyValue",
                                     "The service principal cannot be created, updated, or restored because the "
                                     "service principal name is already in use.")
        return Response(201, self._new_sp(app))

    def _assignment(self, principal: str, role: str) -> dict[str, Any]:
        return {"id": tokens.b64url(uuid.UUID(self.new_id()).bytes + uuid.UUID(self.new_id()).bytes[:8]),
                "appRoleId": role, "createdDateTime": _iso(self.now()), "principalId": principal,
                "principalType": "ServicePrincipal", "resourceId": self.exchange["id"],
                "resourceDisplayName": "Office 365 Exchange Online"}

    def _get_assignments(self, sp_id: str, query: dict[str, str], data: Any) -> Response:
        if not any(s["id"] == sp_id for s in self.service_principals):
            return self._not_found(sp_id)
        return self._collection("appRoleAssignments", [a for a in self.assignments if a["principalId"] == sp_id], query)

    def _post_assignment(self, resource_id: str, query: dict[str, str], data: Any) -> Response:
        if not any(s["id"] == data.get("principalId") for s in self.service_principals):
            return self._not_found(str(data.get("principalId")))
        if any(a["principalId"] == data["principalId"] and a["appRoleId"] == data["appRoleId"] for a in self.assignments):
            return self._graph_error(400, "Request_BadRequest", "Permission being assigned already exists on the object")
        assignment = self._assignment(data["principalId"], data["appRoleId"])
        self.assignments.append(assignment)
        return Response(201, assignment)

    # applications
    def _find_app(self, object_id: str) -> dict[str, Any] | None:
        return next((a for a in self.applications if a["id"] == object_id), None)

    def _list_apps(self, query: dict[str, str], data: Any) -> Response:
        name = self._filter_eq(query, "displayName")
        apps = [a for a in self.applications if name is None or a["displayName"] == name]
        return self._collection("applications", apps, query)

    def _get_app_by_app_id(self, app_id: str, query: dict[str, str], data: Any) -> Response:
        app = next((a for a in self.applications if a["appId"] == app_id), None)
        return Response(200, self._select(app, query)) if app else self._not_found(f"applications(appId='{app_id}')")

    def _post_app(self, query: dict[str, str], data: Any) -> Response:
        app = {"id": self.new_id(), "appId": self.new_id(), "createdDateTime": _iso(self.now()),
               "signInAudience": "AzureADMyOrg", "passwordCredentials": [], "requiredResourceAccess": [],
               "web": {"redirectUris": [], "implicitGrantSettings": {"enableAccessTokenIssuance": False,
                                                                     "enableIdTokenIssuance": False}}}
        app.update(copy.deepcopy(data))
        self.applications.append(app)
        return Response(201, copy.deepcopy(app))

    def _patch_app(self, object_id: str, query: dict[str, str], data: Any) -> Response:
        app = self._find_app(object_id)
        if app is None:
            return self._not_found(object_id)
        for key, value in data.items():
            if isinstance(value, dict) and isinstance(app.get(key), dict):
                app[key].update(copy.deepcopy(value))
            else:
                app[key] = copy.deepcopy(value)
        return Response(204)

    def _add_password(self, app: dict[str, Any], name: str, end: datetime, text: str | None = None,
                      key_id: str | None = None) -> dict[str, Any]:
        text = text or self._secret_text()
        cred = {"customKeyIdentifier": None, "displayName": name, "endDateTime": _iso(end), "hint": text[:3],
                "keyId": key_id or self.new_id(), "startDateTime": _iso(self.now()), "secretText": None}
        self.secret_values[cred["keyId"]] = text
        app["passwordCredentials"].append(cred)
        return dict(cred, secretText=text)

    def _add_password_route(self, object_id: str, query: dict[str, str], data: Any) -> Response:
        app = self._find_app(object_id)
        if app is None:
            return self._not_found(object_id)
        spec = data.get("passwordCredential", {})
        end = datetime.fromisoformat(spec.get("endDateTime", _iso(self.now() + timedelta(days=180))).replace("Z", "+00:00"))
        cred = self._add_password(app, spec.get("displayName", ""), end)
        return Response(200, {"@odata.context": f"https://{GRAPH_HOST}/v1.0/$metadata#microsoft.graph.passwordCredential", **cred})

    def _remove_password(self, object_id: str, query: dict[str, str], data: Any) -> Response:
        app = self._find_app(object_id)
        if app is None:
            return self._not_found(object_id)
        app["passwordCredentials"] = [c for c in app["passwordCredentials"] if c["keyId"] != data.get("keyId")]
        self.secret_values.pop(data.get("keyId"), None)
        return Response(204)

    # delegated permission grants
    def _grant(self, client_id: str, scope: str) -> dict[str, Any]:
        return {"id": tokens.b64url(uuid.UUID(self.new_id()).bytes + uuid.UUID(self.new_id()).bytes[:8]),
                "clientId": client_id, "consentType": "AllPrincipals", "principalId": None,
                "resourceId": self.exchange["id"], "scope": scope}

    def _list_grants(self, query: dict[str, str], data: Any) -> Response:
        client = self._filter_eq(query, "clientId")
        return self._collection("oauth2PermissionGrants", [g for g in self.grants if client is None or g["clientId"] == client], query)

    def _post_grant(self, query: dict[str, str], data: Any) -> Response:
        if any(g["clientId"] == data.get("clientId") and g["resourceId"] == data.get("resourceId")
               and g["consentType"] == data.get("consentType") for g in self.grants):
            return self._graph_error(409, "Request_MultipleObjectsWithSameKeyValue",
                                     "Permission entry already exists.")
        grant = self._grant(data["clientId"], data.get("scope", ""))
        self.grants.append(grant)
        return Response(201, grant)

    def _patch_grant(self, grant_id: str, query: dict[str, str], data: Any) -> Response:
        grant = next((g for g in self.grants if g["id"] == grant_id), None)
        if grant is None:
            return self._not_found(grant_id)
        grant["scope"] = data.get("scope", grant["scope"])
        return Response(204)

    # policy and users
    def _policy(self, query: dict[str, str], data: Any) -> Response:
        assigned = CONSENT_POLICIES[self.seed.get("user_consent", "legacy")]
        return Response(200, {"@odata.context": f"https://{GRAPH_HOST}/v1.0/$metadata#policies/authorizationPolicy/$entity",
                              "id": "authorizationPolicy", "displayName": "Authorization Policy",
                              "allowInvitesFrom": "everyone", "blockMsolPowerShell": False,
                              "defaultUserRolePermissions": {"allowedToCreateApps": True,
                                                             "allowedToCreateSecurityGroups": True,
                                                             "permissionGrantPoliciesAssigned": assigned}})

    def _user(self, key: str) -> dict[str, Any] | None:
        key = key.lower()
        return self.users.get(key) or next((u for u in self.users.values() if u["id"] == key), None)

    def _security_defaults(self, query: dict[str, str], data: Any) -> Response:
        return Response(200, {"id": "00000000-0000-0000-0000-000000000005", "displayName": "Security Defaults",
                              "isEnabled": bool(self.seed.get("security_defaults", False))})

    def _list_users(self, query: dict[str, str], data: Any) -> Response:
        mail = self._filter_eq(query, "mail")
        users = [{k: v for k, v in u.items() if k not in MAILBOX_FIELDS} for u in self.users.values()
                 if mail is None or (u["mail"] or "").lower() == mail.lower()]
        return self._collection("users", users, query)

    def _get_user(self, key: str, query: dict[str, str], data: Any) -> Response:
        user = self._user(key)
        if user is None:
            return self._not_found(key)
        return Response(200, self._select({k: v for k, v in user.items() if k not in MAILBOX_FIELDS}, query))

    def _mailbox_settings(self, key: str, query: dict[str, str], data: Any) -> Response:
        user = self._user(key)
        if user is None:
            return self._not_found(key)
        if not user["mailbox"]:
            return self._graph_error(404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, "
                                     "or is hosted on-premise.")
        return Response(200, {"timeZone": "UTC", "language": {"locale": "en-US"},
                              "automaticRepliesSetting": {"status": "disabled"}})

    # --- Exchange Online's admin API (InvokeCommand) -------------------------------------------

    def _exchange(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        auth = headers.get("authorization", "")
        claims = tokens.verify(auth.removeprefix("Bearer "), self.key, self.canary) if auth.startswith("Bearer ") else None
        if not claims or claims.get("aud") != EXCHANGE_RESOURCE:
            return Response(401, {"error": {"code": "InvalidAuthenticationToken", "message": "Invalid audience."}})
        if method != "POST" or not re.fullmatch(rf"/adminapi/beta/({re.escape(self.tenant_id)}|{re.escape(self.seed['domain'])})/InvokeCommand", path):
            return Response(404, {"error": {"code": "NotFound", "message": "Resource not found."}})
        if not self.operator.get("exchange_admin", True):
            return Response(403, None, {"Content-Type": "application/octet-stream"}, raw=b"\x00" * 16)  # as Exchange does
        command = json.loads(body or b"{}").get("CmdletInput", {})
        handler = self._cmdlets().get(command.get("CmdletName", ""))
        if handler is None:
            return self._exchange_error(400, f"The term '{command.get('CmdletName')}' is not recognized as a cmdlet.")
        return handler(command.get("Parameters") or {})

    def _exchange_error(self, status: int, text: str) -> Response:
        return Response(status, {"error": {"code": "BadRequest" if status == 400 else "NotFound", "message": "Invalid Operation",
                                           "details": [{"code": "Error", "message": text}],
                                           "innererror": {"message": text, "type": "Microsoft.Exchange.Management.RestApi",
                                                          "internalexception": {"message": text}}}})

    def _values(self, items: list[dict[str, Any]]) -> Response:
        return Response(200, {"@odata.context": f"{EXCHANGE_RESOURCE}/adminapi/beta/$metadata#Collection", "value": items})

    def _cmdlets(self) -> dict[str, Callable[[dict[str, Any]], Response]]:
        return {"Get-CASMailbox": self._get_cas, "Set-CASMailbox": self._set_cas, "Get-TransportConfig": self._get_transport,
                "Get-Mailbox": self._get_mailbox, "Set-Mailbox": self._set_mailbox,
                "Get-HostedOutboundSpamFilterPolicy": self._get_policies, "New-HostedOutboundSpamFilterPolicy": self._new_policy,
                "Set-HostedOutboundSpamFilterPolicy": self._set_policy, "Get-HostedOutboundSpamFilterRule": self._get_rules,
                "New-HostedOutboundSpamFilterRule": self._new_rule, "Set-HostedOutboundSpamFilterRule": self._set_rule}

    def _mailbox(self, identity: str) -> dict[str, Any] | None:
        user = self._user(identity or "")
        return user if user and user["mailbox"] else None

    def _missing(self, identity: str) -> Response:
        return self._exchange_error(404, f"The operation couldn't be performed because object '{identity}' couldn't be found on "
                                    f"'{self.seed['domain'].split('.')[0].upper()}P123A456.PROD.OUTLOOK.COM'.")

    def _get_cas(self, p: dict[str, Any]) -> Response:
        box = self._mailbox(p.get("Identity", ""))
        if box is None:
            return self._missing(p.get("Identity", ""))
        return self._values([{"Identity": box["userPrincipalName"], "PrimarySmtpAddress": box["mail"],
                              "SmtpClientAuthenticationDisabled": box["SmtpClientAuthenticationDisabled"]}])

    def _set_cas(self, p: dict[str, Any]) -> Response:
        box = self._mailbox(p.get("Identity", ""))
        if box is None:
            return self._missing(p.get("Identity", ""))
        box["SmtpClientAuthenticationDisabled"] = p.get("SmtpClientAuthenticationDisabled")
        return self._values([])

    def _get_transport(self, p: dict[str, Any]) -> Response:
        return self._values([{"Identity": "Transport Settings",
                              "SmtpClientAuthenticationDisabled": self.transport_smtp_auth_disabled}])

    def _get_mailbox(self, p: dict[str, Any]) -> Response:
        box = self._mailbox(p.get("Identity", ""))
        if box is None:
            return self._missing(p.get("Identity", ""))
        return self._values([{"UserPrincipalName": box["userPrincipalName"], "PrimarySmtpAddress": box["mail"],
                              "ForwardingSmtpAddress": box["ForwardingSmtpAddress"],
                              "DeliverToMailboxAndForward": box["DeliverToMailboxAndForward"]}])

    def _set_mailbox(self, p: dict[str, Any]) -> Response:
        box = self._mailbox(p.get("Identity", ""))
        if box is None:
            return self._missing(p.get("Identity", ""))
        for key in ("ForwardingSmtpAddress", "DeliverToMailboxAndForward"):
            if key in p:
                box[key] = p[key]
        return self._values([])

    def _get_policies(self, p: dict[str, Any]) -> Response:
        return self._values([dict(x) for x in self.outbound_policies])

    @staticmethod
    def _named(items: list[dict[str, Any]], name: Any) -> dict[str, Any] | None:
        """The policy or rule of that name; Exchange compares names case-insensitively."""
        return next((x for x in items if x["Name"].lower() == str(name or "").lower()), None)

    def _new_policy(self, p: dict[str, Any]) -> Response:
        if self._named(self.outbound_policies, p.get("Name")):
            return self._exchange_error(400, f"A policy named '{p.get('Name')}' already exists.")
        policy = {"Name": p["Name"], "IsDefault": False, "AutoForwardingMode": p.get("AutoForwardingMode", "Automatic")}
        self.outbound_policies.append(policy)
        return self._values([dict(policy)])

    def _set_policy(self, p: dict[str, Any]) -> Response:
        policy = self._named(self.outbound_policies, p.get("Identity"))
        if policy is None:
            return self._missing(p.get("Identity", ""))
        policy["AutoForwardingMode"] = p.get("AutoForwardingMode", policy["AutoForwardingMode"])
        return self._values([])

    def _get_rules(self, p: dict[str, Any]) -> Response:
        return self._values([dict(x) for x in self.outbound_rules])

    def _new_rule(self, p: dict[str, Any]) -> Response:
        if not any(x["Name"] == p.get("HostedOutboundSpamFilterPolicy") for x in self.outbound_policies):
            return self._missing(str(p.get("HostedOutboundSpamFilterPolicy")))
        rule = {"Name": p["Name"], "HostedOutboundSpamFilterPolicy": p["HostedOutboundSpamFilterPolicy"],
                "From": list(p.get("From") or []), "State": "Enabled", "Priority": len(self.outbound_rules)}
        self.outbound_rules.append(rule)
        return self._values([dict(rule)])

    def _set_rule(self, p: dict[str, Any]) -> Response:
        rule = self._named(self.outbound_rules, p.get("Identity"))
        if rule is None:
            return self._missing(p.get("Identity", ""))
        rule["From"] = list(p.get("From") or rule["From"])
        return self._values([])

    # --- SMTP AUTH (see sandbox.smtp) ------------------------------------------------------------

    def smtp_authenticate(self, user: str, token: str) -> tuple[int, str]:
        """What Exchange Online answers to AUTH XOAUTH2 for this user and token."""
        claims = tokens.verify(token, self.key, self.canary)
        if (not claims or claims.get("aud") != SMTP_RESOURCE or "SMTP.Send" not in str(claims.get("scp", "")).split()
                or str(claims.get("upn", "")).lower() != user.lower()):
            return 535, f"5.7.3 Authentication unsuccessful {SMTP_SUFFIX}"
        if self.seed.get("security_defaults"):
            return 535, ("5.7.139 Authentication unsuccessful, user is locked by your organization's security "
                         f"defaults policy. Contact your administrator. {SMTP_SUFFIX}")
        box = self._mailbox(user)
        disabled = None if box is None else box["SmtpClientAuthenticationDisabled"]
        if disabled is True or (disabled is None and self.transport_smtp_auth_disabled):
            scope = "Mailbox" if disabled is True else "Tenant"
            return 535, (f"5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the {scope}. "
                         f"Visit https://aka.ms/smtp_auth_disabled for more information. {SMTP_SUFFIX}")
        return 235, "2.7.0 Authentication successful"
