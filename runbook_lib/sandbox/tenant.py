"""The simulated tenant's state and how a seed makes it; each service's behaviour is in its own module
(:mod:`.identity`, :mod:`.graph`, :mod:`.exchange`, :mod:`.smtp`), which requests reach by service,
never by host name.

A seed (``recordings/<tenant>/tenant.yaml``) gives the tenant's IDs, its users and their mailboxes,
existing applications (and who consented to them), the consent policy, security defaults, Conditional
Access policies, remote domains and mail flow rules, the operator's granted scopes, how long the directory
takes to show a write (``*_lag_seconds``), and injected faults. IDs come from a random source seeded
with the seed's name, so regenerating the recordings gives the same IDs; secret values come from
another one, which a trainee's sandbox salts (see :mod:`.state`).
"""

from __future__ import annotations

import copy
import json
import random
import secrets as pysecrets
import string
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from ..config.clouds import EXCHANGE_APP_ID, GRAPH_APP_ID
from . import faults, tokens
from .mailboxes import KINDS, kind_name
from .messages import Request, Response, Service, iso, parse_iso

#: how long the directory takes to show a write, by kind of read (seed fields, seconds): Entra ID
#: replicates across data centres, and a run must not depend on reading its own writes at once
LAGS: dict[str, float] = {
    "list_lag_seconds": 30,  # list queries ($filter) miss a new application
    "read_lag_seconds": 0,  # reads by id or key, addPassword and PATCH answer 404 for a new application
    "sp_lag_seconds": 0,  # creating its service principal answers NoBackingApplicationObject
    "secret_lag_seconds": 0,  # the token endpoint refuses a new secret (AADSTS7000215)
    "role_lag_seconds": 0,  # a new app role assignment is missing from fresh tokens' roles
}
#: every Exchange Online organization has this remote domain; it allows automatic forwarding unless changed
DEFAULT_REMOTE_DOMAIN = {"Identity": "Default", "Name": "Default", "DomainName": "*", "AutoForwardEnabled": True}
JSON_GRAPH = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


class SimulatedTenant:
    """One tenant. ``canary`` is embedded in every secret it issues, for leak tests; ``pending_polls=0``
    completes device-code sign-ins at once, so live-mode tests do not wait out the polling interval;
    ``salt`` varies the secret values of tenants seeded alike (IDs stay those of the seed)."""

    def __init__(
        self,
        seed: dict[str, Any],
        *,
        canary: str = "",
        now: Callable[[], datetime] | None = None,
        pending_polls: int = 1,
        salt: str = "",
    ) -> None:
        self.seed = copy.deepcopy(seed)
        self.pending_polls = pending_polls  # device-code polls answered "pending" before the sign-in completes
        self.store: dict[str, Any] | None = None  # sandbox mode: the trainee's secret store, for exercises
        name = seed.get("seed", seed["tenant_id"])
        self.rng = random.Random(name)  # IDs
        self.salt = salt
        self.secret_rng = random.Random(f"{name}/{salt}")  # secret values
        self.canary = canary
        self.now = now or (lambda: datetime.now(UTC))
        self.key = pysecrets.token_hex(16)  # signs this tenant's tokens
        self.tenant_id: str = seed["tenant_id"]
        self.domains = {seed["domain"].lower(), self.tenant_id}
        self.operator = seed.get("operator", {})
        self.lags = {field: float(seed.get(field, default)) for field, default in LAGS.items()}
        self.faults: list[dict[str, Any]] = [dict(f) for f in seed.get("faults", [])]
        self.requests: list[str] = []  # every request served, "METHOD host/path", for tests and the benchmark
        self.service_principals: list[dict[str, Any]] = (
            [self._exchange_sp()] if seed.get("exchange_online", True) else []
        ) + [self._graph_sp()]  # every tenant has Microsoft Graph's
        self.applications: list[dict[str, Any]] = []
        self.secret_values: dict[str, str] = {}
        self.assignments: list[dict[str, Any]] = []
        self.grants: list[dict[str, Any]] = []
        self.users = {u["upn"].lower(): self._seed_user(u) for u in seed.get("users", [])}
        self.transport_smtp_auth_disabled = seed.get("tenant_smtp_auth_disabled", True)
        self.outbound_policies = [
            {
                "Name": "Default",
                "IsDefault": True,
                "AutoForwardingMode": seed.get("default_forwarding_mode", "Automatic"),
            }
        ]
        self.outbound_policies += [dict(p, IsDefault=False) for p in seed.get("outbound_policies", [])]
        self.outbound_rules = [dict(r) for r in seed.get("outbound_rules", [])]
        # Exchange's RBAC for Applications: pointers to service principals, management scopes, role assignments
        self.exchange_service_principals: list[dict[str, Any]] = []
        self.management_scopes: list[dict[str, Any]] = []
        self.management_role_assignments: list[dict[str, Any]] = []
        # what else decides whether mail flows: Conditional Access (Graph), remote domains and mail flow rules
        self.conditional_access = [
            {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, p["displayName"])), **p}
            for p in seed.get("conditional_access", [])
        ]
        domains = {"Default": dict(DEFAULT_REMOTE_DOMAIN)}  # a seed's "Default" entry changes it
        for domain in seed.get("remote_domains", []):
            domains[domain["Identity"]] = {**domains.get(domain["Identity"], {}), **domain}
        self.remote_domains = list(domains.values())
        self.transport_rules = [dict(r) for r in seed.get("transport_rules", [])]
        self.sent: list[dict[str, Any]] = []  # messages accepted by SMTP submission: envelope and subject only
        for app in seed.get("applications", []):
            self._seed_application(app)
        #: what answers each service's requests: given by :func:`.server.serve`, which knows the services
        self.services: dict[str, Service] = {}

    # --- ids, secrets, time -------------------------------------------------------------------

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def secret_text(self) -> str:
        alphabet = string.ascii_letters + string.digits
        rng = self.secret_rng
        head = rng.choice(string.ascii_uppercase) + "".join(rng.choice(alphabet) for _ in range(2))
        tail = "".join(rng.choice(alphabet + "~._-") for _ in range(36))
        return head + "8Q~" + (self.canary or "") + tail

    def settled(self, written: str, lag: str) -> bool:
        """Whether a write made at ``written`` (ISO time) shows yet to the kind of read ``lag`` names."""
        return self.now() - parse_iso(written) >= timedelta(seconds=self.lags[lag])

    def sign(self, claims: dict[str, Any]) -> str:
        return tokens.sign(claims, self.key, self.canary)

    def verify(self, token: str) -> dict[str, Any] | None:
        return tokens.verify(token, self.key, self.canary)

    def bearer(self, headers: dict[str, str]) -> dict[str, Any] | None:
        """The claims of the request's bearer token, if this tenant signed it."""
        auth = headers.get("authorization", "")
        return self.verify(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None

    # --- seeding ------------------------------------------------------------------------------

    def _exchange_sp(self) -> dict[str, Any]:
        def role(value: str, desc: str) -> dict[str, Any]:
            return {
                "allowedMemberTypes": ["Application"],
                "description": desc,
                "displayName": desc,
                "id": self.new_id(),
                "isEnabled": True,
                "origin": "Application",
                "value": value,
            }

        def scope(value: str, desc: str) -> dict[str, Any]:
            return {
                "adminConsentDescription": desc,
                "adminConsentDisplayName": desc,
                "id": self.new_id(),
                "isEnabled": True,
                "type": "User",
                "value": value,
                "userConsentDescription": desc,
                "userConsentDisplayName": desc,
            }

        return {
            "id": self.new_id(),
            "appId": EXCHANGE_APP_ID,
            "displayName": "Office 365 Exchange Online",
            "appRoles": [
                role("full_access_as_app", "Use Exchange Web Services with full access to all mailboxes"),
                role("Mail.Read", "Read mail in all mailboxes"),
                role("Mail.Send", "Send mail as any user"),
                role("Exchange.ManageAsApp", "Manage Exchange As Application"),
                role("SMTP.SendAsApp", "Send emails from mailboxes using SMTP AUTH"),
            ],
            "oauth2PermissionScopes": [
                scope("EWS.AccessAsUser.All", "Access mailboxes as the signed-in user"),
                scope("IMAP.AccessAsUser.All", "Read and write user mailboxes via IMAP"),
                scope("SMTP.Send", "Send emails from mailboxes using SMTP AUTH"),
            ],
        }

    def _graph_sp(self) -> dict[str, Any]:
        """Microsoft Graph's service principal, with the delegated permissions a sign-in meets: OpenID Connect's
        scopes are Graph's (their IDs are the same in every tenant), consented like any other."""
        scopes = {
            "openid": ("37f7f235-527c-4136-accd-4a02d197296e", "Sign users in"),
            "profile": ("14dad69e-099b-42c9-810b-d002981feec1", "View users' basic profile"),
            "email": ("64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0", "View users' email address"),
            "offline_access": (
                "7427e0e9-2fba-42fe-b0c0-848c9e6a8182",
                "Maintain access to data you have given it access to",
            ),
            "User.Read": ("e1fe6dd8-ba31-4d61-89e7-88639da4683d", "Sign in and read user profile"),
        }
        return {
            "id": str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"{self.tenant_id}/{GRAPH_APP_ID}")
            ),  # leaves the seed's IDs as they were
            "appId": GRAPH_APP_ID,
            "displayName": "Microsoft Graph",
            "appRoles": [],
            "oauth2PermissionScopes": [
                {"id": pid, "isEnabled": True, "type": "User", "value": value, "adminConsentDisplayName": text}
                for value, (pid, text) in scopes.items()
            ],
        }

    def _seed_user(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.new_id(),
            "userPrincipalName": spec["upn"],
            "mail": spec.get("mail", spec["upn"]),
            "accountEnabled": spec.get("enabled", True),
            "mailbox": kind_name(spec.get("mailbox", "cloud")),
            "assignedDateTime": iso(self.now() - timedelta(days=400)),
            "SmtpClientAuthenticationDisabled": spec.get("smtp_auth_disabled"),
            "ForwardingSmtpAddress": spec.get("forwarding"),
            "DeliverToMailboxAndForward": spec.get("keep_copy", False),
        }

    def _seed_application(self, spec: dict[str, Any]) -> None:
        """An application that already exists, made by hand (no uniqueName), as the scenario describes it."""
        created = self.now() - timedelta(days=spec.get("age_days", 400))
        app = self.add_application(
            {
                "displayName": spec["display_name"],
                "createdDateTime": iso(created),
                "isFallbackPublicClient": spec.get("public_client") or None,
                "web": {
                    "redirectUris": list(spec.get("redirect_uris", [])),
                    "implicitGrantSettings": {
                        "enableAccessTokenIssuance": spec.get("implicit_access_token", False),
                        "enableIdTokenIssuance": False,
                    },
                },
            }
        )
        if spec.get("app_id"):
            app["appId"] = spec["app_id"]
        if self.exchange_sp:
            wanted = [(name, "Role") for name in spec.get("exchange_roles", [])]
            wanted += [(name, "Scope") for name in spec.get("exchange_scopes", [])]
            access = [{"id": self.permission_id(n, t), "type": t} for n, t in wanted]
            if access:
                app["requiredResourceAccess"].append({"resourceAppId": EXCHANGE_APP_ID, "resourceAccess": access})
        graph_scopes = [{"id": self.graph_scope_id(n), "type": "Scope"} for n in spec.get("graph_scopes", [])]
        if graph_scopes:
            app["requiredResourceAccess"].append({"resourceAppId": GRAPH_APP_ID, "resourceAccess": graph_scopes})
        for other in spec.get("other_resource_access", []):
            app["requiredResourceAccess"].append(other)
        for secret in spec.get("secrets", []):
            self.add_password(
                app,
                secret.get("description", "added by hand"),
                self.now() + timedelta(days=secret["expires_in_days"]),
                secret.get("value"),
                secret.get("key_id"),
                start=created,
            )
        if spec.get("service_principal"):
            sp = self.new_sp(app)
            for role in spec.get("granted_roles", []):
                self.assignments.append(self.assignment(sp["id"], self.permission_id(role, "Role"), created))
            if spec.get("granted_scopes"):
                self.grants.append(self.grant(sp["id"], " ".join(spec["granted_scopes"])))
            if spec.get("granted_graph_scopes"):
                scope = " ".join(spec["granted_graph_scopes"])
                self.grants.append(self.grant(sp["id"], scope, resource=self.graph_sp["id"]))
            for upn in spec.get("consented_by", []):  # users who consented themselves at Generate Token: to its
                user = self.users[upn.lower()]["id"]  # whole Scope, SMTP.Send on Exchange and offline_access on Graph
                self.grants.append(self.grant(sp["id"], "SMTP.Send", principal=user))
                self.grants.append(self.grant(sp["id"], "offline_access", principal=user, resource=self.graph_sp["id"]))

    # --- the directory ------------------------------------------------------------------------

    @property
    def graph_sp(self) -> dict[str, Any]:
        """Microsoft Graph's service principal: every tenant has it."""
        sp = self.service_principal(GRAPH_APP_ID)
        assert sp is not None
        return sp

    @property
    def exchange_sp(self) -> dict[str, Any] | None:
        """Office 365 Exchange Online's service principal; None in a tenant without Exchange Online."""
        return self.service_principal(EXCHANGE_APP_ID)

    def graph_scope_id(self, name: str) -> str:
        return next(i["id"] for i in self.graph_sp["oauth2PermissionScopes"] if i["value"] == name)

    def permission_id(self, name: str, kind: str) -> str:
        assert self.exchange_sp is not None
        items = self.exchange_sp["appRoles"] if kind == "Role" else self.exchange_sp["oauth2PermissionScopes"]
        return next(i["id"] for i in items if i["value"] == name)

    def user(self, key: str) -> dict[str, Any] | None:
        """A user by user principal name or object ID (as Graph's /users/{key} finds them)."""
        key = key.lower()
        return self.users.get(key) or next((u for u in self.users.values() if u["id"] == key), None)

    def mailbox(self, identity: str) -> dict[str, Any] | None:
        """The user whose Exchange Online mailbox ``identity`` (UPN, object ID or address) names, if there is one."""
        user = self.user(identity) or next(
            (u for u in self.users.values() if (u["mail"] or "").lower() == identity.lower()), None
        )
        return user if user and KINDS[user["mailbox"]].recipient_type else None

    def application(self, key: str, value: Any) -> dict[str, Any] | None:
        """The application whose ``key`` (id, appId, uniqueName) is ``value``."""
        return next((a for a in self.applications if value is not None and a.get(key) == value), None)

    def service_principal(self, app_id: str) -> dict[str, Any] | None:
        return next((s for s in self.service_principals if s["appId"] == app_id), None)

    def add_application(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A new application object: Graph's defaults with ``fields`` on top."""
        app: dict[str, Any] = {
            "id": self.new_id(),
            "appId": self.new_id(),
            "createdDateTime": iso(self.now()),
            "displayName": None,
            "uniqueName": None,
            "signInAudience": "AzureADMyOrg",
            "isFallbackPublicClient": None,
            "tags": [],
            "publicClient": {"redirectUris": []},
            "passwordCredentials": [],
            "requiredResourceAccess": [],
            "web": {
                "redirectUris": [],
                "implicitGrantSettings": {"enableAccessTokenIssuance": False, "enableIdTokenIssuance": False},
            },
        }
        app.update(copy.deepcopy(fields))
        self.applications.append(app)
        return app

    def new_sp(self, app: dict[str, Any]) -> dict[str, Any]:
        sp = {
            "id": self.new_id(),
            "appId": app["appId"],
            "displayName": app["displayName"],
            "appRoleAssignmentRequired": False,
            "tags": [],
            "appRoles": [],
            "oauth2PermissionScopes": [],
        }
        self.service_principals.append(sp)
        return sp

    def assignment(self, principal: str, role: str, created: datetime | None = None) -> dict[str, Any]:
        assert self.exchange_sp is not None
        return {
            "id": tokens.b64url(uuid.UUID(self.new_id()).bytes + uuid.UUID(self.new_id()).bytes[:8]),
            "appRoleId": role,
            "createdDateTime": iso(created or self.now()),
            "principalId": principal,
            "principalType": "ServicePrincipal",
            "resourceId": self.exchange_sp["id"],
            "resourceDisplayName": "Office 365 Exchange Online",
        }

    def grant(
        self, client_id: str, scope: str, principal: str | None = None, resource: str | None = None
    ) -> dict[str, Any]:
        """An oauth2PermissionGrant on a resource's service principal (by default Exchange Online's): tenant-wide
        (an admin's), or one user's own consent."""
        assert self.exchange_sp is not None
        return {
            "id": tokens.b64url(uuid.UUID(self.new_id()).bytes + uuid.UUID(self.new_id()).bytes[:8]),
            "clientId": client_id,
            "consentType": "Principal" if principal else "AllPrincipals",
            "principalId": principal,
            "resourceId": resource or self.exchange_sp["id"],
            "scope": scope,
        }

    def add_password(
        self,
        app: dict[str, Any],
        name: str,
        end: datetime,
        text: str | None = None,
        key_id: str | None = None,
        start: datetime | None = None,
    ) -> dict[str, Any]:
        """A new client secret; returns it with its value (shown once, as Graph does)."""
        text = text or self.secret_text()
        cred: dict[str, Any] = {
            "customKeyIdentifier": None,
            "displayName": name,
            "endDateTime": iso(end),
            "hint": text[:3],
            "keyId": key_id or self.new_id(),
            "startDateTime": iso(start or self.now()),
            "secretText": None,
        }
        self.secret_values[cred["keyId"]] = text
        app["passwordCredentials"].append(cred)
        return dict(cred, secretText=text)

    # --- serving --------------------------------------------------------------------------------

    def handle(
        self, service: str, method: str, host: str, target: str, headers: dict[str, str], body: bytes
    ) -> Response:
        """Answer one request to ``service`` (login, graph, exchange); ``host`` is where it came to."""
        request = Request(method, host, target, headers, body)
        self.requests.append(f"{method} {host}{target.partition('?')[0]}")
        reset = faults.take(self.faults, "reset", method, request.path)
        if reset and not reset.get("after"):
            return Response(0, reset=True)
        fault = None if reset else faults.take(self.faults, "status", method, request.path)
        behaviour = self.services.get(service)
        if fault:
            response = faults.error(fault)
        elif behaviour is None:
            response = Response(404, {"error": "unknown host"})
        else:
            response = behaviour.handle(request)
        if reset:  # ``after``: the request was carried out, and its answer is lost on the way back
            return Response(0, reset=True)
        return self._finish(response, service, headers)

    def delay_for(self, method: str, target: str) -> float:
        """Seconds to wait before answering (a ``delay`` fault: a hung or very slow service)."""
        fault = faults.take(self.faults, "delay", method, Request(method, "", target, {}).path)
        return float(fault["delay"]) if fault else 0.0

    def _finish(self, response: Response, service: str, headers: dict[str, str]) -> Response:
        request_id = self.new_id()
        out = {
            "Date": format_datetime(self.now(), usegmt=True),
            "request-id": request_id,
            "client-request-id": headers.get("client-request-id", request_id),
            "Cache-Control": "no-store, no-cache",
            "Strict-Transport-Security": "max-age=31536000",
        }
        if response.body is not None:
            out["Content-Type"] = JSON_GRAPH if service == "graph" else "application/json; charset=utf-8"
        if response.raw is not None:
            out["Content-Type"] = "application/octet-stream"
        if service == "graph":
            out["x-ms-ags-diagnostic"] = json.dumps(
                {"ServerInfo": {"DataCenter": "West Europe", "Slice": "E", "Ring": "5", "ScaleUnit": "001"}}
            )
            if response.status >= 400 and isinstance(response.body, dict) and "error" in response.body:
                response.body["error"]["innerError"] = {
                    "date": iso(self.now()),
                    "request-id": request_id,
                    "client-request-id": out["client-request-id"],
                }
        else:
            out["x-ms-request-id"] = request_id
            out["Set-Cookie"] = (
                f"fpc={self.canary}Ahx{request_id[:8]}; expires=Tue, 01-Jan-2030 00:00:00 GMT; path=/; secure; HttpOnly"
            )
        out.update(response.headers or {})
        response.headers = out
        return response
