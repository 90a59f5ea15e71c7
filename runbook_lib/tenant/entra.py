"""Step 2: the Microsoft Entra ID application Webex Connect signs in with.

Each resource has a pure ``diff_*`` function (current state and desired state in, a
:class:`~runbook_lib.engine.changes.Change` out) and an ``ensure_*`` function that reads, diffs and hands the
change to the step's executor (which alone knows about plan mode and journals what the tenant accepted).
Verify calls the same diff functions on what it reads, and never an executor.

Objects by identity. The application is created idempotently under its alternate key ``uniqueName``
(``PATCH /applications(uniqueName=…)`` with ``Prefer: create-if-missing``) and later addressed by that key,
its client ID or its object ID, never by a name search again: a list query lags behind a create for seconds
(occasionally minutes), and two runs racing, or a run repeated after a timed-out create, still end with one
application. The search by display name remains only to find an application made by hand. The service
principal is created the same way, under its application's client ID.

Lists Graph replaces whole (redirect URIs, required resource access) are merged, never overwritten.
Objects just created are not read back, and Exchange Online's huge ``appRoleAssignedTo`` collection is
never listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..config import client_secrets, registry, secrets
from ..config.clouds import EXCHANGE_APP_ID, GRAPH_APP_ID
from ..config.params import SecretRef
from ..engine.changes import Change, Confirm, Write, changes_frame, unchanged
from ..engine.executor import NotKept
from ..engine.results import SecretFacts
from ..errors import RunbookError, StepFailed
from ..wire.graph import key_segment, odata_quote

if TYPE_CHECKING:
    from ..context.step import Step

APP_SELECT = "id,appId,uniqueName,displayName,tags,createdDateTime,web,requiredResourceAccess,passwordCredentials"
#: the mark the kit puts on every application and service principal it creates, so that a teardown removes only
#: objects that carry it (never one made by hand, whatever a record claims); and the start of the display name
#: of every client secret it adds
KIT_TAG = "runbook-kit:webex-connect-email"
SECRET_MARK = "Webex Connect (runbook"
#: the tag that lists a service principal under Enterprise applications in the portal, as the portal sets it
LISTED = "WindowsAzureActiveDirectoryIntegratedApp"
MAIL_SEND = "Mail.Send"
SMTP_SEND = "SMTP.Send"
REPLICATION_CODES = ("NoBackingApplicationObject", "Request_ResourceNotFound")
STEP = registry.APP_REGISTRATION
UPSERT = {"Prefer": "create-if-missing"}
#: what each kind of write needs when Graph answers 403: the scope, and the directory roles that may do it
NEEDS = {
    "application": "Application.ReadWrite.All and the Application Administrator or Cloud Application "
    "Administrator role",
    "admin consent": "AppRoleAssignment.ReadWrite.All with Application.Read.All, and a role that may grant admin "
    "consent (Cloud Application Administrator, Application Administrator or Global Administrator)",
    "tenant-wide consent": "DelegatedPermissionGrant.ReadWrite.All and a role that may grant admin consent "
    "(Cloud Application Administrator, Application Administrator or Global Administrator)",
    "client secret": "Application.ReadWrite.All, or ownership of the application",
}


# --- the permissions, looked up by name -------------------------------------------------------------


@dataclass(frozen=True)
class Delegated:
    """One delegated permission Webex Connect's Generate Token asks the mailbox user for, on its resource."""

    resource: str  # the resource's name, as the portal shows it
    resource_app_id: str
    sp_id: str  # the resource's service principal in this tenant: where a grant of it is made
    value: str
    id: str


@dataclass(frozen=True)
class Permissions:
    """The permission IDs the application declares, resolved by name in this tenant: Exchange Online's Mail.Send
    (application) and every delegated permission of Generate Token's Scope: SMTP.Send on Exchange Online, and
    offline_access, which is Microsoft Graph's and needs consent like any other."""

    sp_id: str  # Office 365 Exchange Online's service principal
    mail_send_role: str
    delegated: tuple[Delegated, ...]

    @property
    def smtp_send_scope(self) -> str:
        return next(d.id for d in self.delegated if d.value == SMTP_SEND)

    def rows(self) -> dict[str, str]:
        return {
            "Office 365 Exchange Online service principal": self.sp_id,
            "Mail.Send (application permission, Exchange Online) ID": self.mail_send_role,
            **{f"{d.value} (delegated permission, {d.resource}) ID": d.id for d in self.delegated},
        }

    def _repr_html_(self) -> str:
        return pd.DataFrame({"value": self.rows()}).to_html()

    def __repr__(self) -> str:
        return "\n".join(f"{name}: {value}" for name, value in self.rows().items())


#: the resources a permission of the kit's may be on, by application ID, with their names
RESOURCES = {EXCHANGE_APP_ID: "Office 365 Exchange Online", GRAPH_APP_ID: "Microsoft Graph"}


def _resource_sp(step: Step, app_id: str) -> dict[str, Any]:
    sp = step.graph.get(
        f"/servicePrincipals(appId={key_segment(app_id)})",
        params={"$select": "id,appId,displayName,appRoles,oauth2PermissionScopes"},
        missing_ok=True,
    )
    if sp is None and app_id == EXCHANGE_APP_ID:
        raise StepFailed(
            "this tenant has no Office 365 Exchange Online service principal, which means it has "
            "no Exchange Online licence: there is no mailbox service to send mail through",
            fix="add an Exchange Online (or Microsoft 365) licence to the tenant, then run step 2 again",
            step=STEP,
        )
    if sp is None:
        raise StepFailed(
            f"this tenant has no service principal of {RESOURCES.get(app_id, app_id)}",
            fix="open a Microsoft support case: every tenant has it",
            step=STEP,
        )
    return sp


def _enabled(items: list[dict[str, Any]], value: str, member: str | None = None) -> str | None:
    return next(
        (
            i["id"]
            for i in items
            if i.get("value") == value
            and i.get("isEnabled", True)
            and (member is None or member in i.get("allowedMemberTypes", []))
        ),
        None,
    )


def permissions(step: Step) -> Permissions:
    """Resolve Mail.Send and every permission of Generate Token's Scope by name on their resources' service
    principals (never hard-coded GUIDs)."""
    wanted = step.endpoints.delegated_permissions(step.endpoints.generate_token_scope)
    sps = {app_id: _resource_sp(step, app_id) for app_id in dict.fromkeys([EXCHANGE_APP_ID, *(a for a, _ in wanted)])}
    role = _enabled(sps[EXCHANGE_APP_ID].get("appRoles", []), MAIL_SEND, "Application")
    found = [(a, v, _enabled(sps[a].get("oauth2PermissionScopes", []), v)) for a, v in wanted]
    missing = [f"{v} on {RESOURCES.get(a, a)}" for a, v, pid in found if not pid]
    missing += [] if role else [f"{MAIL_SEND} on {RESOURCES[EXCHANGE_APP_ID]}"]
    if missing:
        raise StepFailed(
            f"the tenant's service principals do not offer {' and '.join(missing)}",
            fix="check the tenant's Exchange Online service; open a Microsoft support case",
            step=STEP,
        )
    delegated = tuple(Delegated(RESOURCES.get(a, a), a, sps[a]["id"], v, str(pid)) for a, v, pid in found)
    return Permissions(sps[EXCHANGE_APP_ID]["id"], str(role), delegated)


# --- user consent -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UserConsent:
    policy: str  # "any app", "verified publishers and low-impact permissions", or "off"
    mailbox_user_can_consent: bool | None  # None: depends on permission classifications
    explanation: str

    def _repr_html_(self) -> str:
        return pd.DataFrame(
            {"value": {"user consent policy": self.policy, "what it means here": self.explanation}}
        ).to_html()

    def __repr__(self) -> str:
        return f"User consent: {self.policy}. {self.explanation}"


def user_consent(step: Step) -> UserConsent:
    """Can the mailbox user consent at Webex Connect's Generate Token? Read from the authorization policy."""
    policy = step.graph.get("/policies/authorizationPolicy")
    assigned = policy.get("defaultUserRolePermissions", {}).get("permissionGrantPoliciesAssigned", [])
    mine = [p.lower() for p in assigned if p.lower().startswith("managepermissiongrantsforself.")]
    if any(p.endswith("microsoft-user-default-legacy") for p in mine):
        return UserConsent(
            "any app",
            True,
            "users may consent to any application: the mailbox user can consent to SMTP.Send and "
            "offline_access when Webex Connect's Generate Token asks",
        )
    if mine:
        return UserConsent(
            "verified publishers and low-impact permissions",
            None,
            "users may consent only to permissions classified as low impact: unless SMTP.Send and "
            "offline_access are classified so, Generate Token will ask for admin approval",
        )
    return UserConsent(
        "off",
        False,
        "user consent is turned off: the mailbox user cannot consent at Generate Token, so an administrator "
        "must grant tenant-wide consent for SMTP.Send (Exchange Online) and offline_access (Microsoft Graph)",
    )


def require_consent_path(step: Step, consent: UserConsent) -> None:
    """In consent mode ``user``, stop before any change when the user will not be able to consent."""
    if step.params.consent == "user" and consent.mailbox_user_can_consent is False:
        raise StepFailed(
            f"consent mode is 'user' but {consent.explanation}",
            fix="set `consent: admin` in the parameters (the kit then grants tenant-wide consent for SMTP.Send "
            "and offline_access), or allow user consent under Enterprise applications > Consent and permissions",
            step=STEP,
        )


# --- the application ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredApp:
    """What the application must be: named, keyed, with the callback URL and the permissions it declares
    (``access``: each a resource's application ID, a permission ID and "Role" or "Scope"), and without those
    ``application.mail_send`` rules out (``absent``)."""

    display_name: str
    unique_name: str
    callback_url: str
    access: tuple[tuple[str, str, str], ...]
    absent: tuple[tuple[str, str, str], ...] = ()
    #: what ``access`` declares, in words, for the change's summary
    described: str = ""


def tenant_wide_mail_send(step: Step) -> bool:
    """Whether the application gets Mail.Send tenant-wide from Entra ID (``application.mail_send: tenant``);
    ``scoped`` leaves it to Exchange's RBAC for Applications (:mod:`runbook_lib.tenant.rbac`), ``none`` to nobody."""
    return step.params.application.mail_send == "tenant"


def desired_application(step: Step, perms: Permissions) -> DesiredApp:
    """Every delegated permission of Generate Token's Scope (SMTP.Send on Exchange Online, offline_access on
    Microsoft Graph), and Mail.Send only with ``mail_send: tenant``; otherwise Mail.Send is taken off the list, so
    that nobody's later "Grant admin consent" in the portal brings tenant-wide Mail.Send back."""
    app = step.params.application
    mail_send = (EXCHANGE_APP_ID, perms.mail_send_role, "Role")
    delegated = tuple((d.resource_app_id, d.id, "Scope") for d in perms.delegated)
    wanted = tenant_wide_mail_send(step)
    scopes = ", ".join(f"{d.value} on {d.resource}" for d in perms.delegated)
    return DesiredApp(
        app.display_name,
        app.key,
        step.params.webex.callback_url,
        (mail_send, *delegated) if wanted else delegated,
        () if wanted else (mail_send,),
        f"Mail.Send (application) on Exchange Online and the delegated {scopes}"
        if wanted
        else f"the delegated {scopes} only, without tenant-wide Mail.Send (application)",
    )


def find_application(step: Step) -> dict[str, Any] | None:
    """The application by ``app_id`` if given, else by its alternate key, else (made by hand) by display name;
    several by name stop the step. Found by key or ID, it is found at once after a create."""
    app = step.params.application
    if app.app_id:
        found = step.graph.get(
            f"/applications(appId={key_segment(app.app_id)})", params={"$select": APP_SELECT}, missing_ok=True
        )
        if found is None:
            raise StepFailed(
                f"no application with client ID {app.app_id} in this tenant",
                fix="correct application.app_id, or remove it to find the application by its key",
                step=STEP,
            )
        return found
    keyed = step.graph.get(
        f"/applications(uniqueName={key_segment(app.key)})", params={"$select": APP_SELECT}, missing_ok=True
    )
    if keyed is not None:
        return keyed
    matches = step.graph.get_all(
        "/applications", params={"$filter": f"displayName eq {odata_quote(app.display_name)}", "$select": APP_SELECT}
    )
    if len(matches) > 1:
        raise DuplicateApplications(app.display_name, matches)
    return matches[0] if matches else None


class DuplicateApplications(StepFailed):
    """Display names are not unique: the operator must say which application is ours."""

    def __init__(self, name: str, matches: list[dict[str, Any]]) -> None:
        self.candidates = pd.DataFrame(
            [
                {
                    "object ID": m["id"],
                    "client ID": m["appId"],
                    "created": m.get("createdDateTime", ""),
                    "redirect URIs": ", ".join((m.get("web") or {}).get("redirectUris", [])),
                }
                for m in matches
            ]
        )
        super().__init__(
            f"{len(matches)} applications are named {name!r}:\n{self.candidates.to_string(index=False)}",
            fix="set application.app_id to the client ID of the one to configure",
            step=STEP,
        )


def require_application(step: Step, purpose: str) -> dict[str, Any]:
    """The application, or the step stops naming step 2: the later steps work only on what step 2 made.
    ``purpose`` ends the sentence "there is no application ... ", e.g. "yet"."""
    app = find_application(step)
    if app is None:
        raise StepFailed(
            f"there is no application {step.params.application.display_name!r} (key "
            f"{step.params.application.key!r}) {purpose}",
            fix="run step 2 first",
            step=registry.APP_REGISTRATION,
        )
    return app


def _merged_access(current: list[dict[str, Any]], desired: DesiredApp) -> list[dict[str, Any]]:
    """requiredResourceAccess with ours added to each resource's entry (Exchange Online's, Microsoft Graph's) and
    what ``absent`` names taken out; every other entry and permission kept as is."""
    merged = [dict(entry, resourceAccess=list(entry.get("resourceAccess", []))) for entry in current]
    for resource in dict.fromkeys(r for r, _, _ in desired.access + desired.absent):
        entry = next((e for e in merged if e.get("resourceAppId") == resource), None)
        if entry is None:
            entry = {"resourceAppId": resource, "resourceAccess": []}
            merged.append(entry)
        absent = {(pid, kind) for r, pid, kind in desired.absent if r == resource}
        entry["resourceAccess"] = [a for a in entry["resourceAccess"] if (a["id"], a["type"]) not in absent]
        have = {(a["id"], a["type"]) for a in entry["resourceAccess"]}
        entry["resourceAccess"] += [
            {"id": pid, "type": kind} for r, pid, kind in desired.access if r == resource and (pid, kind) not in have
        ]
    return merged


def _create_body(desired: DesiredApp) -> dict[str, Any]:
    return {
        "displayName": desired.display_name,
        "signInAudience": "AzureADMyOrg",
        "tags": [KIT_TAG],
        "web": {
            "redirectUris": [desired.callback_url],
            "implicitGrantSettings": {"enableAccessTokenIssuance": True, "enableIdTokenIssuance": False},
        },
        "requiredResourceAccess": _merged_access([], desired),
    }


def _patch_body(app: dict[str, Any], desired: DesiredApp) -> tuple[dict[str, Any], list[str]]:
    """The smallest PATCH that brings ``app`` to the desired state, and a sentence per difference."""
    web = app.get("web") or {}
    uris = list(web.get("redirectUris") or [])
    implicit = dict(web.get("implicitGrantSettings") or {})
    patch: dict[str, Any] = {}
    why: list[str] = []
    if desired.callback_url not in uris or not implicit.get("enableAccessTokenIssuance"):
        patch["web"] = {}
        if desired.callback_url not in uris:
            patch["web"]["redirectUris"] = uris + [desired.callback_url]
            why.append(f"add redirect URI {desired.callback_url}")
        if not implicit.get("enableAccessTokenIssuance"):
            patch["web"]["implicitGrantSettings"] = dict(implicit, enableAccessTokenIssuance=True)
            why.append("turn on implicit-grant access tokens")
    tags = list(app.get("tags") or [])
    if app.get("uniqueName") == desired.unique_name and KIT_TAG not in tags:
        patch["tags"] = [*tags, KIT_TAG]  # created under the kit's key (by an earlier version): the kit's, marked
        why.append("mark it as created by the kit (it carries the kit's key)")
    access = app.get("requiredResourceAccess") or []
    merged = _merged_access(access, desired)
    if merged != access:
        patch["requiredResourceAccess"] = merged
        why.append(f"declare {desired.described}")
    return patch, why


def diff_application(current: dict[str, Any] | None, desired: DesiredApp) -> Change:
    """Create under the alternate key (idempotent), or patch only what differs."""
    if current is None:
        body = _create_body(desired)
        return Change(
            "application",
            desired.display_name,
            "planned",
            f"create with redirect URI, implicit-grant access tokens and {desired.described}",
            None,
            {"uniqueName": desired.unique_name, **body},
            Write(
                "graph",
                "PATCH",
                f"/applications(uniqueName={key_segment(desired.unique_name)})",
                body,
                UPSERT,
                idempotent=True,
                needs=NEEDS["application"],
                keep=("id", "appId"),
            ),
            outcome="created",
        )
    ident = {"id": current["id"], "appId": current["appId"]}
    patch, why = _patch_body(current, desired)
    if not patch:
        return unchanged(
            "application", desired.display_name, "redirect URI, implicit grant and permissions as desired", ident
        )
    return Change(
        "application",
        desired.display_name,
        "planned",
        "; ".join(why),
        {**ident, **{k: current.get(k) for k in patch}},
        patch,
        Write(
            "graph",
            "PATCH",
            f"/applications/{current['id']}",
            patch,
            idempotent=True,
            retry_codes=("Request_ResourceNotFound",),
            needs=NEEDS["application"],
        ),
    )


def ensure_application(
    step: Step, perms: Permissions, current: dict[str, Any] | None
) -> tuple[Change, dict[str, Any] | None]:
    """Create the application in one request, or patch what differs; returns the change and the app."""
    desired = desired_application(step, perms)
    change, answer = step.executor.apply(diff_application(current, desired))
    if change.action == "planned":
        return change, current
    if current is None:  # created (201 with the object), or it existed under the key (204): read it by key
        app = answer or step.graph.get(
            f"/applications(uniqueName={key_segment(desired.unique_name)})",
            params={"$select": APP_SELECT},
            retry_codes=("Request_ResourceNotFound",),
        )
    else:
        app = {**current, **(change.after or {})} if change.action == "updated" else current
    step.facts.client_id, step.facts.object_id = app["appId"], app["id"]
    step.facts.unique_name = app.get("uniqueName")
    return change, app


# --- the service principal and consent -----------------------------------------------------------


def find_service_principal(step: Step, app: dict[str, Any] | None, app_change: Change) -> dict[str, Any] | None:
    """The application's service principal, by its client ID; none to read for an application just created."""
    if app is None or app_change.action == "created":
        return None
    return step.graph.get(
        f"/servicePrincipals(appId={key_segment(app['appId'])})",
        params={"$select": "id,appId,displayName,appRoleAssignmentRequired"},
        missing_ok=True,
    )


def diff_service_principal(app: dict[str, Any] | None, sp: dict[str, Any] | None, name: str) -> Change:
    """The application's service principal (its enterprise application), created idempotently by client ID."""
    if sp is not None:
        return unchanged("service principal", name, "exists", {"id": sp["id"]})
    write = (
        None
        if app is None
        else Write(
            "graph",
            "PATCH",
            f"/servicePrincipals(appId={key_segment(app['appId'])})",
            {"displayName": name, "tags": [LISTED, KIT_TAG]},
            UPSERT,
            idempotent=True,
            retry_codes=REPLICATION_CODES,
            needs=NEEDS["application"],
            keep=("id",),
        )
    )
    return Change(
        "service principal",
        name,
        "planned",
        "create",
        None,
        {"appId": (app or {}).get("appId", "(new)")},
        write,
        outcome="created",
    )


def ensure_service_principal(
    step: Step, app: dict[str, Any] | None, app_change: Change
) -> tuple[Change, dict[str, Any] | None]:
    """Read (unless the application is new), diff, apply; returns the change and the service principal
    (None while only planned)."""
    name = step.params.application.display_name
    sp = find_service_principal(step, app, app_change)
    change, answer = step.executor.apply(diff_service_principal(app, sp, name))
    if change.action in ("unchanged", "planned"):
        return change, sp
    assert app is not None
    return change, answer or step.graph.get(
        f"/servicePrincipals(appId={key_segment(app['appId'])})",
        params={"$select": "id,appId,displayName"},
        retry_codes=REPLICATION_CODES,
    )


def diff_mail_send_consent(
    sp_id: str | None, assignments: list[dict[str, Any]], perms: Permissions, *, wanted_granted: bool = True
) -> Change:
    """Admin consent for the Mail.Send application permission: an app role assignment on our service principal.
    Not wanted (``application.mail_send`` scoped or none), one found is removed: tenant-wide, it would let the
    application send as any mailbox whatever Exchange's scope says."""
    wanted = {"principalId": sp_id or "(new)", "resourceId": perms.sp_id, "appRoleId": perms.mail_send_role}
    found = next(
        (a for a in assignments if a.get("resourceId") == perms.sp_id and a.get("appRoleId") == perms.mail_send_role),
        None,
    )
    if not wanted_granted:
        if found is None:
            return unchanged("admin consent", MAIL_SEND, "not granted tenant-wide, as application.mail_send says")
        return Change(
            "admin consent",
            MAIL_SEND,
            "planned",
            "remove tenant-wide admin consent (application.mail_send is not tenant): it lets the application "
            "send as any mailbox",
            {**wanted, "id": found.get("id")},
            None,
            Write(
                "graph",
                "DELETE",
                f"/servicePrincipals/{sp_id}/appRoleAssignments/{found.get('id')}",
                needs=NEEDS["admin consent"],
            ),
            outcome="removed",
        )
    if found is not None:
        return unchanged("admin consent", MAIL_SEND, "granted", wanted)
    write = (
        None
        if sp_id is None
        else Write(
            "graph",
            "POST",
            f"/servicePrincipals/{perms.sp_id}/appRoleAssignedTo",
            wanted,
            retry_codes=REPLICATION_CODES,
            needs=NEEDS["admin consent"],
            keep=("id",),
            confirm=Confirm(
                "graph",
                "GET",
                f"/servicePrincipals/{sp_id}/appRoleAssignments",
                {"resourceId": perms.sp_id, "appRoleId": perms.mail_send_role},
            ),
        )
    )
    return Change("admin consent", MAIL_SEND, "planned", "grant admin consent", None, wanted, write, outcome="created")


def role_assignments(step: Step, sp_id: str | None) -> list[dict[str, Any]]:
    """Our service principal's own app role assignments (never the resource's huge appRoleAssignedTo)."""
    return step.graph.get_all(f"/servicePrincipals/{sp_id}/appRoleAssignments") if sp_id else []


def ensure_mail_send_consent(step: Step, sp: dict[str, Any] | None, perms: Permissions, sp_change: Change) -> Change:
    """Read our service principal's own assignments (unless it is new), diff, apply: grant Mail.Send with
    ``application.mail_send: tenant``, else remove a grant an earlier run made."""
    sp_id = sp["id"] if sp else None
    assignments = [] if sp_change.action == "created" else role_assignments(step, sp_id)
    change = diff_mail_send_consent(sp_id, assignments, perms, wanted_granted=tenant_wide_mail_send(step))
    return step.executor.apply(change)[0]


def grant_scope_write(grant_id: str, scope: str) -> Write:
    """Set a delegated grant's scope: one grant per client and resource, patched in place (idempotent)."""
    return Write(
        "graph",
        "PATCH",
        f"/oauth2PermissionGrants/{grant_id}",
        {"scope": scope},
        idempotent=True,
        needs=NEEDS["tenant-wide consent"],
    )


def diff_tenant_wide_grant(sp_id: str | None, grant: dict[str, Any] | None, permission: Delegated) -> Change:
    """Tenant-wide consent for one delegated permission: one grant per client and resource, patched in place
    (a permission the grant lacks is added to its scope), or made."""
    wanted = {"clientId": sp_id or "(new)", "consentType": "AllPrincipals", "resourceId": permission.sp_id}
    scopes = (grant or {}).get("scope", "").split()
    name = permission.value
    if grant is not None and name in scopes:
        return unchanged("tenant-wide consent", name, "granted", {"scope": grant["scope"]})
    scope = " ".join(scopes + [name])
    if grant is not None:
        return Change(
            "tenant-wide consent",
            name,
            "planned",
            f"add {name} to the existing grant on {permission.resource}",
            {"scope": grant["scope"]},
            {"scope": scope},
            grant_scope_write(grant["id"], scope),
        )
    write = (
        None
        if sp_id is None
        else Write(
            "graph",
            "POST",
            "/oauth2PermissionGrants",
            {**wanted, "scope": scope},
            retry_codes=REPLICATION_CODES,
            needs=NEEDS["tenant-wide consent"],
            keep=("id",),
            confirm=Confirm(
                "graph",
                "GET",
                "/oauth2PermissionGrants",
                {"resourceId": permission.sp_id, "consentType": "AllPrincipals"},
                params={"$filter": f"clientId eq {odata_quote(sp_id)}"},
            ),
        )
    )
    return Change(
        "tenant-wide consent",
        name,
        "planned",
        f"grant tenant-wide consent on {permission.resource}",
        None,
        {**wanted, "scope": scope},
        write,
        outcome="created",
    )


def delegated_grants(step: Step, sp: dict[str, Any] | None, sp_change: Change | None = None) -> list[dict[str, Any]]:
    """Every delegated permission grant of our service principal (one read); none to read for a new one."""
    if sp is None or (sp_change is not None and sp_change.action == "created"):
        return []
    return step.graph.get_all("/oauth2PermissionGrants", params={"$filter": f"clientId eq {odata_quote(sp['id'])}"})


def tenant_wide_grant(grants: list[dict[str, Any]], permission: Delegated) -> dict[str, Any] | None:
    """The tenant-wide grant on the permission's resource, if there is one."""
    return next(
        (g for g in grants if g.get("resourceId") == permission.sp_id and g.get("consentType") == "AllPrincipals"),
        None,
    )


def diff_delegated_consent(sp_id: str | None, grants: list[dict[str, Any]], perms: Permissions) -> list[Change]:
    """Tenant-wide consent for every delegated permission Generate Token asks for, on each resource."""
    return [diff_tenant_wide_grant(sp_id, tenant_wide_grant(grants, d), d) for d in perms.delegated]


def asked_of_the_user(perms: Permissions) -> str:
    """What the mailbox user is asked to consent to at Generate Token, permission by permission."""
    return "; ".join(f"{d.value} ({d.resource})" for d in perms.delegated)


def ensure_delegated_consent(
    step: Step, sp: dict[str, Any] | None, perms: Permissions, consent: UserConsent, sp_change: Change
) -> pd.DataFrame | str:
    """consent: admin grants every permission of Generate Token's Scope tenant-wide (SMTP.Send on Exchange
    Online, offline_access on Microsoft Graph: a grant of SMTP.Send alone leaves Generate Token at "Need admin
    approval" where users may not consent); consent: user leaves them to the mailbox user at Generate Token."""
    if step.params.consent == "admin":
        grants = delegated_grants(step, sp, sp_change)
        changes = diff_delegated_consent(sp["id"] if sp else None, grants, perms)
        return changes_frame([step.executor.apply(change)[0] for change in changes])
    return (
        f"consent: user, so at Webex Connect's Generate Token the mailbox user is asked to consent to "
        f"{asked_of_the_user(perms)} (user consent policy: {consent.policy}); no tenant-wide grant is made"
    )


# --- the client secret --------------------------------------------------------------------------


def stored_match(step: Step, app: dict[str, Any] | None) -> client_secrets.StoredMatch:
    """What the secret store holds, among the application's secrets."""
    return client_secrets.match_stored(
        secrets.read(step.params.secret_store), client_secrets.app_secrets(app), step.clock.now()
    )


def secrets_table(step: Step, app: dict[str, Any] | None) -> pd.DataFrame:
    """The application's secrets by hint and expiry (values are never readable), with their state."""
    return client_secrets.table(
        client_secrets.app_secrets(app), step.clock.now(), step.params.application.secret_renew_days
    )


def add_password(app: dict[str, Any], now: Any, lifetime_days: int) -> Write:
    """The write that adds a client secret; its answer carries the value once (``secretText``), never kept."""
    body = {
        "passwordCredential": {
            "displayName": f"{SECRET_MARK} {now.date().isoformat()})",
            "endDateTime": (now + timedelta(days=lifetime_days)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    }
    return Write(
        "graph",
        "POST",
        f"/applications/{app['id']}/addPassword",
        body,
        retry_codes=REPLICATION_CODES,
        needs=NEEDS["client secret"],
        keep=("keyId", "hint", "endDateTime"),
    )


def remove_password(app: dict[str, Any], key_id: str) -> Write:
    """The write that removes one client secret, by its Secret ID."""
    return Write(
        "graph",
        "POST",
        f"/applications/{app['id']}/removePassword",
        {"keyId": key_id},
        needs=NEEDS["client secret"],
    )


def diff_expired_secrets(app: dict[str, Any] | None, step_now: Any, remove: bool) -> list[Change]:
    """Expired secrets to remove (only when ``application.remove_expired_secrets`` says so)."""
    if app is None or not remove:
        return []
    return [
        Change(
            "expired client secret",
            f"hint {s.hint}",
            "planned",
            "remove",
            {"hint": s.hint, "expired": s.expires.date().isoformat(), "keyId": s.key_id},
            None,
            remove_password(app, s.key_id),
            outcome="removed",
        )
        for s in client_secrets.app_secrets(app)
        if s.state(step_now, 0) == "expired"
    ]


def prune_expired_secrets(step: Step, app: dict[str, Any] | None) -> list[Change]:
    """Remove expired secrets, only when ``application.remove_expired_secrets`` says so."""
    done = []
    for change in diff_expired_secrets(app, step.clock.now(), step.params.application.remove_expired_secrets):
        applied, _ = step.executor.apply(change)
        if applied.action == "removed" and app is not None:
            app["passwordCredentials"] = [
                c for c in app["passwordCredentials"] if c["keyId"] != (change.before or {}).get("keyId")
            ]
        done.append(applied)
    return done


def diff_secret(
    app: dict[str, Any] | None,
    match: client_secrets.StoredMatch,
    store: str,
    *,
    now: Any,
    renew_days: int,
    lifetime_days: int,
) -> Change:
    """Keep the stored secret while it is valid for longer than ``renew_days``; otherwise add a new one."""
    cred = match.secret
    if match.kind == "matched" and cred is not None and cred.state(now, renew_days) == "valid":
        facts = {"hint": cred.hint, "expires": cred.expires.date().isoformat(), "keyId": cred.key_id, "store": store}
        return unchanged("client secret", store, f"valid until {facts['expires']}; value is in the store", facts)
    reason = (
        f"the stored secret expires on {cred.expires.date().isoformat()}"
        if match.kind == "matched" and cred
        else "the application has no client secret yet"
        if not (app or {}).get("passwordCredentials")
        else match.explain(store)
    )
    return Change(
        "client secret",
        store,
        "planned",
        f"add a new secret ({reason})",
        None,
        {"store": store},
        None if app is None else add_password(app, now, lifetime_days),
        outcome="created",
    )


def ensure_secret(step: Step, app: dict[str, Any] | None) -> Change:
    """A valid client secret whose value is in the secret store; a new one only when needed. The new value
    goes straight into the store; the record keeps its hint, Secret ID and a fingerprint."""
    store = step.params.secret_store
    application = step.params.application
    match = stored_match(step, app)
    planned = diff_secret(
        app,
        match,
        store.describe(),
        now=step.clock.now(),
        renew_days=application.secret_renew_days,
        lifetime_days=application.secret_lifetime_days,
    )
    if planned.action == "unchanged" and match.secret is not None:
        step.facts.secret = SecretFacts(
            match.secret.hint, match.secret.expires.date().isoformat(), match.secret.key_id, store.describe()
        )
    # a value that matches none of the application's secrets may be another application's: kept, not overwritten
    keep_old = secrets.replaced(store) if match.kind == "no match" else None
    return add_secret(step, app, planned, keep_old=keep_old)


def add_secret(step: Step, app: dict[str, Any] | None, change: Change, *, keep_old: SecretRef | None = None) -> Change:
    """Apply a secret's addition so that the application never holds a secret whose value nobody has: the store
    is checked before Entra ID is asked (its answer shows the value once); the value goes into the store in the
    moment Entra ID accepted it, before the change is journaled, in the window a Ctrl-C waits for
    (:meth:`Executor.apply`'s ``keep``); if storing fails all the same, the new secret is removed again,
    journaled, or its Secret ID named. ``keep_old``: where the value the store held goes first."""
    store = step.params.secret_store
    if change.action == "planned" and change.write is not None and not step.executor.plan_only:
        problem = secrets.problem_writing(store, interactive=step.interactive)
        if problem:
            raise StepFailed(
                f"no new client secret was added: its value would have nowhere to go ({problem}); nothing was changed",
                fix="name a secret store this run can write in secret_store (a file, mode 0600, or a keyring entry)",
                step=STEP,
            )
    if app is None or change.write is None:
        return step.executor.apply(change)[0]
    try:
        return step.executor.apply(change, keep=secret_keeper(step, app, keep_old))[0]
    except NotKept as failed:
        key_id = str((failed.applied.after or {}).get("keyId"))
        orphan = Change(
            "client secret",
            f"Secret ID {key_id}",
            "planned",
            "remove the new secret, whose value could not be stored",
            {"keyId": key_id},
            None,
            remove_password(app, key_id),
            outcome="removed",
        )
        try:
            step.executor.apply(orphan)
            left = f"so the new secret (Secret ID {key_id}) was removed again: none is left that nobody holds"
        except RunbookError:
            left = f"and the new secret could not be removed again: remove Secret ID {key_id} in the portal"
        raise StepFailed(
            f"the new client secret's value could not be stored ({type(failed.__cause__).__name__}), {left}",
            fix="make the secret store writable, or name another in secret_store, then run the step again",
            step=STEP,
        ) from None


def secret_keeper(
    step: Step, app: dict[str, Any], keep_old: SecretRef | None = None
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What is done with a new secret's answer the moment Entra ID accepted it: the value the store held goes to
    ``keep_old`` (when given), the new value into the store; the record keeps a fingerprint and where the value
    went, never the value."""
    store = step.params.secret_store

    def keep(answer: dict[str, Any]) -> dict[str, Any]:
        expires = client_secrets.parse_time(answer["endDateTime"]).date().isoformat()
        notes = [f"the new secret: hint {answer['hint']}..., expires {expires}"]  # what goes into Webex Connect
        if keep_old is not None:
            kept = secrets.write(keep_old, secrets.read(store) or "")
            notes.append(f"the value the store held kept beside it: {kept}")
        notes.append(secrets.write(store, answer["secretText"]))
        app.setdefault("passwordCredentials", []).append({k: v for k, v in answer.items() if k != "secretText"})
        step.facts.secret = SecretFacts(
            answer["hint"],
            expires,
            answer["keyId"],
            store.describe(),
            secrets.fingerprint(answer["secretText"]),
        )
        return {"fingerprint": step.facts.secret.fingerprint, "summary": "; ".join(notes)}

    return keep


# --- the operator and the summary ------------------------------------------------------------------


def needed_permissions(step: Step) -> dict[str, str]:
    """The Graph permissions this step's writes need, with why; read-only ones fail later with a clear 403."""
    from ..wire.auth import OPERATOR_SCOPES

    names = ["Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All", "Policy.Read.All"]
    if step.params.consent == "admin":
        names.append("DelegatedPermissionGrant.ReadWrite.All")
    return {name: OPERATOR_SCOPES[name] for name in names}


def check_operator(step: Step) -> pd.DataFrame:
    """Sign in, then stop before any change if the token lacks a permission a write will need."""
    granted = step.signin.granted()
    needed = needed_permissions(step)
    table = pd.DataFrame([{"permission": n, "needed to": why, "granted": n in granted} for n, why in needed.items()])
    missing = [n for n in needed if n not in granted]
    if missing:
        raise StepFailed(
            f"the signed-in operator lacks {', '.join(missing)}; nothing was changed",
            fix="sign in as an Application Administrator or Cloud Application Administrator and "
            "accept the consent prompt for these scopes, or have a Global Administrator grant them "
            "to the operator client",
            step=STEP,
        )
    return table


def summary(step: Step, app: dict[str, Any] | None, consent: UserConsent) -> pd.DataFrame:
    """What step 4 will need, and whether the mailbox user can consent: recorded as the step's facts."""
    secret = step.facts.secret
    rows = {
        "Directory (tenant) ID": step.params.tenant_id,
        "Application (client) ID": (app or {}).get("appId", "(planned)"),
        "Object ID": (app or {}).get("id", "(planned)"),
        "Unique name (alternate key)": (app or {}).get("uniqueName")
        or ("(made by hand: none)" if app else step.params.application.key),
        "Redirect URI": step.params.webex.callback_url,
        "Client secret": f"hint {secret.hint}..., expires {secret.expires}, in {secret.store}"
        if secret
        else "(planned)",
        "User consent": consent.policy + (" (admin consent granted instead)" if step.params.consent == "admin" else ""),
    }
    step.facts.client_id = rows["Application (client) ID"]
    step.facts.object_id = rows["Object ID"]
    step.facts.user_consent = consent.policy
    return pd.DataFrame({"value": rows})
