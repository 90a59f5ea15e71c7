"""Microsoft Graph v1.0 as the kit uses it: applications, service principals, consent, policies, users.

As Graph does: a token is accepted only when its audience is Graph's resource, whatever host served
it; delegated permissions reach no further than the signed-in user may (another user's mailbox
settings are refused); users show their mailbox only through licences and provisioned plans; and
the directory is eventually consistent: list queries miss new applications for a while and, where
the seed says so, reads by key, dependent writes and new service principals fail for a while too.
Applications and service principals can be created idempotently (``Prefer: create-if-missing``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import cloud
from .mailboxes import KINDS, plans
from .messages import Request, Response, parse_iso

if TYPE_CHECKING:
    from .tenant import SimulatedTenant

CONSENT_POLICIES = {
    "legacy": [
        "ManagePermissionGrantsForSelf.microsoft-user-default-legacy",
        "ManagePermissionGrantsForOwnedResource.DeveloperConsent",
    ],
    "low": [
        "ManagePermissionGrantsForSelf.microsoft-user-default-low",
        "ManagePermissionGrantsForOwnedResource.DeveloperConsent",
    ],
    "off": ["ManagePermissionGrantsForOwnedResource.DeveloperConsent"],
}
#: of the user properties simulated, those Graph returns without $select
USER_DEFAULT = ("id", "userPrincipalName", "mail")
KEY = r"'((?:[^']|'')*)'"  # an OData key value in quotes, a quote doubled inside
READ_APPS = ("Application.Read.All", "Application.ReadWrite.All")
WRITE_APPS = ("Application.ReadWrite.All",)
GRANTS = ("DelegatedPermissionGrant.ReadWrite.All",)


@dataclass(frozen=True)
class Call:
    """One Graph request with the verified claims of its token."""

    request: Request
    claims: dict[str, Any]
    data: Any  # the JSON body

    @property
    def query(self) -> dict[str, str]:
        return self.request.query

    @property
    def upsert(self) -> bool:
        return "create-if-missing" in self.request.headers.get("prefer", "").lower()

    @property
    def delegated(self) -> bool:
        return "scp" in self.claims


def _error(status: int, code: str, message: str, detail: str = "") -> Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if detail:
        body["error"]["details"] = [{"code": detail, "message": message, "target": "appId"}]
    return Response(status, body)


def _not_found(what: str) -> Response:
    return _error(
        404,
        "Request_ResourceNotFound",
        f"Resource '{what}' does not exist or one of its queried reference-property objects are not present.",
    )


def _select(item: dict[str, Any], query: dict[str, str], default: tuple[str, ...] = ()) -> dict[str, Any]:
    fields = query["$select"].split(",") if query.get("$select") else default
    return {k: copy.deepcopy(v) for k, v in item.items() if not fields or k in fields or k == "id"}


def _collection(
    context: str, items: list[dict[str, Any]], query: dict[str, str], default: tuple[str, ...] = ()
) -> Response:
    return Response(
        200,
        {
            "@odata.context": f"{cloud.GRAPH}/v1.0/$metadata#{context}",
            "value": [_select(i, query, default) for i in items],
        },
    )


def _filter_eq(query: dict[str, str], field: str) -> str | None:
    match = re.fullmatch(rf"{field} eq {KEY}", query.get("$filter", ""))
    return match.group(1).replace("''", "'") if match else None


def _key(value: str) -> str:
    return value.replace("''", "'")


class Graph:
    def __init__(self, tenant: SimulatedTenant) -> None:
        self.t = tenant
        self.routes: list[tuple[str, str, tuple[str, ...], Callable[..., Response]]] = [
            ("GET", rf"/servicePrincipals\(appId={KEY}\)", READ_APPS, self._get_sp),
            ("PATCH", rf"/servicePrincipals\(appId={KEY}\)", WRITE_APPS, self._upsert_sp),
            ("POST", r"/servicePrincipals", WRITE_APPS, self._post_sp),
            ("DELETE", r"/servicePrincipals/([^/]+)", WRITE_APPS, self._delete_sp),
            ("GET", r"/servicePrincipals/([^/]+)/appRoleAssignments", READ_APPS, self._get_assignments),
            (
                "POST",
                r"/servicePrincipals/([^/]+)/appRoleAssignedTo",
                ("AppRoleAssignment.ReadWrite.All",),
                self._post_assignment,
            ),
            (
                "DELETE",
                r"/servicePrincipals/([^/]+)/appRoleAssignments/([^/]+)",
                ("AppRoleAssignment.ReadWrite.All",),
                self._delete_assignment,
            ),
            ("GET", r"/applications", READ_APPS, self._list_apps),
            ("POST", r"/applications", WRITE_APPS, self._post_app),
            ("GET", rf"/applications\(appId={KEY}\)", READ_APPS, self._get_app_by("appId")),
            ("GET", rf"/applications\(uniqueName={KEY}\)", READ_APPS, self._get_app_by("uniqueName")),
            ("PATCH", rf"/applications\(uniqueName={KEY}\)", WRITE_APPS, self._upsert_app),
            ("DELETE", rf"/applications\(appId={KEY}\)", WRITE_APPS, self._delete_app_by("appId")),
            ("DELETE", rf"/applications\(uniqueName={KEY}\)", WRITE_APPS, self._delete_app_by("uniqueName")),
            ("DELETE", r"/applications/([^/]+)", WRITE_APPS, self._delete_app_by("id")),
            ("GET", r"/applications/([^/]+)", READ_APPS, self._get_app_by("id")),
            ("PATCH", r"/applications/([^/]+)", WRITE_APPS, self._patch_app),
            ("POST", r"/applications/([^/]+)/addPassword", WRITE_APPS, self._add_password),
            ("POST", r"/applications/([^/]+)/removePassword", WRITE_APPS, self._remove_password),
            ("GET", r"/oauth2PermissionGrants", GRANTS, self._list_grants),
            ("POST", r"/oauth2PermissionGrants", GRANTS, self._post_grant),
            ("PATCH", r"/oauth2PermissionGrants/([^/]+)", GRANTS, self._patch_grant),
            ("DELETE", r"/oauth2PermissionGrants/([^/]+)", GRANTS, self._delete_grant),
            ("GET", r"/policies/authorizationPolicy", ("Policy.Read.All",), self._policy),
            (
                "GET",
                r"/policies/identitySecurityDefaultsEnforcementPolicy",
                ("Policy.Read.All",),
                self._security_defaults,
            ),
            ("GET", r"/identity/conditionalAccess/policies", ("Policy.Read.All",), self._conditional_access),
            ("GET", r"/users", ("User.Read.All",), self._list_users),
            ("GET", r"/users/([^/]+)", ("User.Read.All",), self._get_user),
            ("GET", r"/users/([^/]+)/appRoleAssignments", ("User.Read.All",), self._user_assignments),
            (
                "GET",
                r"/users/([^/]+)/mailboxSettings",
                ("MailboxSettings.Read", "MailboxSettings.ReadWrite"),
                self._mailbox_settings,
            ),
        ]

    def handle(self, request: Request) -> Response:
        claims = self.t.bearer(request.headers)
        if not claims or claims.get("aud") != cloud.GRAPH:
            return _error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
        path = request.path.removeprefix("/v1.0")
        for method, pattern, scopes, handler in self.routes:
            match = re.fullmatch(pattern, path)
            if match and method == request.method:
                granted = set(claims.get("scp", "").split()) | set(claims.get("roles", []))
                if scopes and not granted & set(scopes):
                    return _error(
                        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
                    )
                return handler(Call(request, claims, request.json()), *match.groups())
        return _error(400, "BadRequest", f"Resource not found for the segment '{path.strip('/').split('/')[0]}'.")

    # --- service principals -------------------------------------------------------------------

    def _get_sp(self, call: Call, app_id: str) -> Response:
        sp = self.t.service_principal(_key(app_id))
        return Response(200, _select(sp, call.query)) if sp else _not_found(f"servicePrincipals(appId='{app_id}')")

    def _backing_app(self, app_id: Any) -> dict[str, Any] | None:
        """The application a new service principal is for, once the directory shows it."""
        app = self.t.application("appId", app_id)
        return app if app and self.t.settled(app["createdDateTime"], "sp_lag_seconds") else None

    def _no_backing_app(self, app_id: Any) -> Response:
        return _error(
            400,
            "Request_BadRequest",
            f"The appId '{app_id}' of the service principal does not reference a valid application object.",
            "NoBackingApplicationObject",
        )

    def _post_sp(self, call: Call) -> Response:
        app_id = call.data.get("appId")
        app = self._backing_app(app_id)
        if app is None:
            return self._no_backing_app(app_id)
        if self.t.service_principal(app_id):
            return _error(
                409,
                "Request_MultipleObjectsWithSameKeyValue",
                "The service principal cannot be created, "
                "updated, or restored because the service principal name is already in use.",
            )
        return Response(201, self.t.new_sp(app))

    def _upsert_sp(self, call: Call, app_id: str) -> Response:
        app_id = _key(app_id)
        fields = {k: copy.deepcopy(v) for k, v in call.data.items() if k not in ("id", "appId")}
        sp = self.t.service_principal(app_id)
        if sp:
            sp.update(fields)
            return Response(204)
        if not call.upsert:
            return _not_found(f"servicePrincipals(appId='{app_id}')")
        app = self._backing_app(app_id)
        if app is None:
            return self._no_backing_app(app_id)
        sp = self.t.new_sp(app)
        sp.update(fields)
        return Response(201, copy.deepcopy(sp))

    def _get_assignments(self, call: Call, sp_id: str) -> Response:
        if not any(s["id"] == sp_id for s in self.t.service_principals):
            return _not_found(sp_id)
        return _collection(
            "appRoleAssignments", [a for a in self.t.assignments if a["principalId"] == sp_id], call.query
        )

    def _post_assignment(self, call: Call, resource_id: str) -> Response:
        data = call.data
        if not any(s["id"] == data.get("principalId") for s in self.t.service_principals):
            return _not_found(str(data.get("principalId")))
        if any(
            a["principalId"] == data["principalId"] and a["appRoleId"] == data["appRoleId"] for a in self.t.assignments
        ):
            return _error(400, "Request_BadRequest", "Permission being assigned already exists on the object")
        assignment = self.t.assignment(data["principalId"], data["appRoleId"])
        self.t.assignments.append(assignment)
        return Response(201, assignment)

    def _delete_assignment(self, call: Call, sp_id: str, assignment_id: str) -> Response:
        """``DELETE /servicePrincipals/{id}/appRoleAssignments/{id}``: 204, or 404 for either one missing."""
        found = next((a for a in self.t.assignments if a["id"] == assignment_id and a["principalId"] == sp_id), None)
        if found is None:
            return _not_found(assignment_id)
        self.t.assignments.remove(found)
        return Response(204)

    def _drop_sp(self, sp: dict[str, Any]) -> None:
        """A service principal goes to deleted items with what hangs on it: its app role assignments and the
        consent grants it is the client of (restoring it within 30 days brings them back; not simulated)."""
        self.t.service_principals.remove(sp)
        self.t.assignments = [a for a in self.t.assignments if sp["id"] not in (a["principalId"], a["resourceId"])]
        self.t.grants = [g for g in self.t.grants if g["clientId"] != sp["id"]]

    def _delete_sp(self, call: Call, sp_id: str) -> Response:
        sp = next((s for s in self.t.service_principals if s["id"] == sp_id), None)
        if sp is None:
            return _not_found(sp_id)
        self._drop_sp(sp)
        return Response(204)

    # --- applications -------------------------------------------------------------------------

    def _readable(self, app: dict[str, Any] | None) -> dict[str, Any] | None:
        """The application, once reads by id or key find it (``read_lag_seconds``)."""
        return app if app and self.t.settled(app["createdDateTime"], "read_lag_seconds") else None

    def _list_apps(self, call: Call) -> Response:
        name = _filter_eq(call.query, "displayName")
        apps = [
            a
            for a in self.t.applications
            if (name is None or a["displayName"] == name) and self.t.settled(a["createdDateTime"], "list_lag_seconds")
        ]
        return _collection("applications", apps, call.query)

    def _get_app_by(self, key: str) -> Callable[[Call, str], Response]:
        def get(call: Call, value: str) -> Response:
            app = self._readable(self.t.application(key, _key(value)))
            what = value if key == "id" else f"applications({key}='{value}')"
            return Response(200, _select(app, call.query)) if app else _not_found(what)

        return get

    def _taken(self, unique_name: Any) -> Response | None:
        """Graph's refusal of a second object with the same uniqueName."""
        if unique_name is not None and self.t.application("uniqueName", unique_name):
            return _error(
                400,
                "Request_MultipleObjectsWithSameKeyValue",
                "Another object with the same value for property uniqueName already exists.",
            )
        return None

    def _post_app(self, call: Call) -> Response:
        data = call.data
        refused = self._taken(data.get("uniqueName"))
        if refused:
            return refused
        return Response(201, copy.deepcopy(self.t.add_application(data)))

    def _update(self, app: dict[str, Any], data: dict[str, Any]) -> Response:
        """PATCH: complex properties merged a level deep; lists (redirectUris, requiredResourceAccess) replaced whole.
        uniqueName may be set once, never changed."""
        current = app.get("uniqueName")
        wanted = data.get("uniqueName", current)
        if current is not None and wanted != current:
            return _error(400, "Request_BadRequest", "Property 'uniqueName' is immutable once set.")
        refused = self._taken(wanted) if current is None else None
        if refused:
            return refused
        for key, value in data.items():
            if isinstance(value, dict) and isinstance(app.get(key), dict):
                app[key].update(copy.deepcopy(value))
            else:
                app[key] = copy.deepcopy(value)
        return Response(204)

    def _patch_app(self, call: Call, object_id: str) -> Response:
        app = self._readable(self.t.application("id", object_id))
        return self._update(app, call.data) if app else _not_found(object_id)

    def _upsert_app(self, call: Call, unique_name: str) -> Response:
        unique_name = _key(unique_name)
        app = self.t.application("uniqueName", unique_name)
        data = call.data
        if app:
            return self._update(app, data)
        if not call.upsert:
            return _not_found(f"applications(uniqueName='{unique_name}')")
        if not data.get("displayName"):
            return _error(
                400, "Request_BadRequest", "A value is required for property 'displayName' of resource 'Application'."
            )
        return Response(201, copy.deepcopy(self.t.add_application({**data, "uniqueName": unique_name})))

    def _add_password(self, call: Call, object_id: str) -> Response:
        app = self._readable(self.t.application("id", object_id))
        if app is None:
            return _not_found(object_id)
        spec = call.data.get("passwordCredential", {})
        end = spec.get("endDateTime")
        cred = self.t.add_password(
            app, spec.get("displayName", ""), parse_iso(end) if end else self.t.now() + timedelta(days=180)
        )
        return Response(
            200, {"@odata.context": f"{cloud.GRAPH}/v1.0/$metadata#microsoft.graph.passwordCredential", **cred}
        )

    def _remove_password(self, call: Call, object_id: str) -> Response:
        app = self.t.application("id", object_id)
        if app is None:
            return _not_found(object_id)
        key_id = call.data.get("keyId")
        app["passwordCredentials"] = [c for c in app["passwordCredentials"] if c["keyId"] != key_id]
        self.t.secret_values.pop(key_id, None)
        return Response(204)

    def _delete_app_by(self, key: str) -> Callable[[Call, str], Response]:
        """``DELETE /applications/{id}`` (or by ``appId`` / ``uniqueName``): 204. As Microsoft documents it, an
        application deleted in its home tenant takes its service principal (the enterprise application) with
        it, and both wait 30 days in deleted items (not simulated: nothing the kit reads sees them)."""

        def delete(call: Call, value: str) -> Response:
            app = self.t.application(key, _key(value))
            if app is None:
                return _not_found(value if key == "id" else f"applications({key}='{value}')")
            self.t.applications.remove(app)
            for cred in app["passwordCredentials"]:
                self.t.secret_values.pop(cred["keyId"], None)
            sp = self.t.service_principal(app["appId"])
            if sp is not None:
                self._drop_sp(sp)
            return Response(204)

        return delete

    # --- delegated permission grants ----------------------------------------------------------

    def _list_grants(self, call: Call) -> Response:
        client = _filter_eq(call.query, "clientId")
        return _collection(
            "oauth2PermissionGrants",
            [g for g in self.t.grants if client is None or g["clientId"] == client],
            call.query,
        )

    def _post_grant(self, call: Call) -> Response:
        data = call.data
        if any(
            g["clientId"] == data.get("clientId")
            and g["resourceId"] == data.get("resourceId")
            and g["consentType"] == data.get("consentType")
            for g in self.t.grants
        ):
            return _error(409, "Request_MultipleObjectsWithSameKeyValue", "Permission entry already exists.")
        resource = data.get("resourceId")
        if not any(sp["id"] == resource for sp in self.t.service_principals):
            return _not_found(str(resource))
        principal = data.get("principalId") if data.get("consentType") == "Principal" else None
        grant = self.t.grant(data["clientId"], data.get("scope", ""), principal, resource)
        self.t.grants.append(grant)
        return Response(201, grant)

    def _patch_grant(self, call: Call, grant_id: str) -> Response:
        grant = next((g for g in self.t.grants if g["id"] == grant_id), None)
        if grant is None:
            return _not_found(grant_id)
        grant["scope"] = call.data.get("scope", grant["scope"])
        return Response(204)

    def _delete_grant(self, call: Call, grant_id: str) -> Response:
        grant = next((g for g in self.t.grants if g["id"] == grant_id), None)
        if grant is None:
            return _not_found(grant_id)
        self.t.grants.remove(grant)
        return Response(204)

    # --- policies -----------------------------------------------------------------------------

    def _policy(self, call: Call) -> Response:
        assigned = CONSENT_POLICIES[self.t.seed.get("user_consent", "legacy")]
        return Response(
            200,
            {
                "@odata.context": f"{cloud.GRAPH}/v1.0/$metadata#policies/authorizationPolicy/$entity",
                "id": "authorizationPolicy",
                "displayName": "Authorization Policy",
                "allowInvitesFrom": "everyone",
                "blockMsolPowerShell": False,
                "defaultUserRolePermissions": {
                    "allowedToCreateApps": True,
                    "allowedToCreateSecurityGroups": True,
                    "permissionGrantPoliciesAssigned": assigned,
                },
            },
        )

    def _security_defaults(self, call: Call) -> Response:
        return Response(
            200,
            {
                "id": "00000000-0000-0000-0000-000000000005",
                "displayName": "Security Defaults",
                "isEnabled": bool(self.t.seed.get("security_defaults", False)),
            },
        )

    def _conditional_access(self, call: Call) -> Response:
        """The tenant's Conditional Access policies, in Graph's shape (a seed gives the parts that matter)."""
        policies = [
            {
                "id": policy["id"],
                "displayName": policy["displayName"],
                "state": policy.get("state", "enabled"),
                "conditions": {
                    "users": {
                        "includeUsers": [],
                        "excludeUsers": [],
                        "includeGroups": [],
                        "excludeGroups": [],
                        "includeRoles": [],
                        "excludeRoles": [],
                        **policy.get("users", {}),
                    },
                    "applications": {
                        "includeApplications": [],
                        "excludeApplications": [],
                        **policy.get("applications", {}),
                    },
                    "clientAppTypes": policy.get("clientAppTypes", ["all"]),
                    "clientApplications": policy.get("clientApplications"),
                },
                "grantControls": {"operator": "OR", "builtInControls": policy.get("grant", ["mfa"])},
            }
            for policy in self.t.conditional_access
        ]
        return _collection("identity/conditionalAccess/policies", policies, call.query)

    # --- users --------------------------------------------------------------------------------

    @staticmethod
    def _view(user: dict[str, Any]) -> dict[str, Any]:
        """The user as Graph shows it: the mailbox only through mail, licences and provisioned plans."""
        kind = KINDS[user["mailbox"]]
        return {
            "id": user["id"],
            "userPrincipalName": user["userPrincipalName"],
            "mail": user["mail"] if kind.has_mail else None,
            "accountEnabled": user["accountEnabled"] and kind.sign_in,
            "onPremisesSyncEnabled": True if kind.synced else None,
            **plans(kind, user["assignedDateTime"]),
        }

    def _list_users(self, call: Call) -> Response:
        mail = _filter_eq(call.query, "mail")
        users = [self._view(u) for u in self.t.users.values()]
        return _collection(
            "users",
            [u for u in users if mail is None or (u["mail"] or "").lower() == mail.lower()],
            call.query,
            USER_DEFAULT,
        )

    def _get_user(self, call: Call, key: str) -> Response:
        user = self.t.user(key)
        return Response(200, _select(self._view(user), call.query, USER_DEFAULT)) if user else _not_found(key)

    def _user_assignments(self, call: Call, key: str) -> Response:
        user = self.t.user(key)
        if user is None:
            return _not_found(key)
        mine = [a for a in self.t.assignments if a["principalId"] == user["id"]]
        return _collection(f"users('{user['id']}')/appRoleAssignments", mine, call.query)

    @staticmethod
    def _signed_in(claims: dict[str, Any], user: dict[str, Any]) -> bool:
        return (
            str(claims.get("oid", "")).lower() == user["id"].lower()
            or str(claims.get("upn", "")).lower() == user["userPrincipalName"].lower()
        )

    def _mailbox_settings(self, call: Call, key: str) -> Response:
        """A delegated token reads the signed-in user's own settings only; an application token any user's."""
        user = self.t.user(key)
        if user is None:
            return _not_found(key)
        if call.delegated and not self._signed_in(call.claims, user):
            return _error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        if not KINDS[user["mailbox"]].recipient_type:
            return _error(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        return Response(
            200, {"timeZone": "UTC", "language": {"locale": "en-US"}, "automaticRepliesSetting": {"status": "disabled"}}
        )
