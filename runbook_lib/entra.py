"""Step 2: the Microsoft Entra ID application Webex Connect signs in with.

Each ``ensure_*`` function reads the current state, compares it with the desired state and
returns a :class:`Change`; with ``apply: false`` it plans and writes nothing. Lists that Graph
replaces whole (redirect URIs, required resource access) are merged, never overwritten, so
anything the tenant added stays.

Request economy on a fresh tenant: one read of Exchange Online's service principal (permission
IDs by name), one search by display name, one read of the consent policy, then a create carrying
everything but the secret, the service principal, the Mail.Send assignment, (the SMTP.Send grant
in admin consent mode) and the secret. Objects we have just created are not read back, and
Exchange Online's huge ``appRoleAssignedTo`` collection is never listed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import secrets
from .endpoints import EXCHANGE_APP_ID
from .errors import GraphError, StepFailed
from .graph import key_segment, odata_quote
from .records import Change

if TYPE_CHECKING:
    from .step import Step

APP_SELECT = "id,appId,displayName,createdDateTime,web,requiredResourceAccess,passwordCredentials"
MAIL_SEND = "Mail.Send"
SMTP_SEND = "SMTP.Send"
REPLICATION_CODES = ("NoBackingApplicationObject", "Request_ResourceNotFound")
STEP = "02_azure_app_registration"
#: what each kind of write needs when Graph answers 403: the scope, and the directory roles that may do it
WRITE_NEEDS = {
    "application": "Application.ReadWrite.All and the Application Administrator or Cloud Application Administrator role",
    "service principal": "Application.ReadWrite.All and the Application Administrator or Cloud Application Administrator role",
    "admin consent": "AppRoleAssignment.ReadWrite.All with Application.Read.All, and a role that may grant admin "
                     "consent (Cloud Application Administrator, Application Administrator or Global Administrator)",
    "tenant-wide consent": "DelegatedPermissionGrant.ReadWrite.All and a role that may grant admin consent "
                           "(Cloud Application Administrator, Application Administrator or Global Administrator)",
    "client secret": "Application.ReadWrite.All, or ownership of the application",
}


def _write(step: "Step", resource: str, method: str, path: str, body: Any, **kwargs: Any) -> Any:
    """A Graph write whose 403 names exactly the permission and role this kind of change needs."""
    try:
        return step.graph.request(method, path, body=body, **kwargs)
    except GraphError as error:
        if error.status != 403:
            raise
        raise StepFailed(f"Graph refused to change the {resource}: {error.message}",
                         fix=f"this change needs {WRITE_NEEDS[resource]}; sign in with an account that has it",
                         step=STEP) from error


@dataclass(frozen=True)
class ExchangeOnline:
    """Office 365 Exchange Online's service principal in this tenant, and the permission IDs we need."""

    sp_id: str
    mail_send_role: str
    smtp_send_scope: str


def exchange_online(step: "Step") -> ExchangeOnline:
    """Resolve Mail.Send and SMTP.Send by name (never hard-coded GUIDs)."""
    sp = step.graph.get(f"/servicePrincipals(appId={key_segment(EXCHANGE_APP_ID)})",
                        params={"$select": "id,appId,displayName,appRoles,oauth2PermissionScopes"}, missing_ok=True)
    if sp is None:
        raise StepFailed("this tenant has no Office 365 Exchange Online service principal, which means it has "
                         "no Exchange Online licence: there is no mailbox service to send mail through",
                         fix="add an Exchange Online (or Microsoft 365) licence to the tenant, then run step 2 again",
                         step=STEP)
    role = next((r["id"] for r in sp.get("appRoles", []) if r.get("value") == MAIL_SEND
                 and "Application" in r.get("allowedMemberTypes", []) and r.get("isEnabled", True)), None)
    scope = next((s["id"] for s in sp.get("oauth2PermissionScopes", []) if s.get("value") == SMTP_SEND
                  and s.get("isEnabled", True)), None)
    if not role or not scope:
        missing = " and ".join(n for n, v in ((MAIL_SEND, role), (SMTP_SEND, scope)) if not v)
        raise StepFailed(f"Exchange Online's service principal does not offer {missing}",
                         fix="check the tenant's Exchange Online service; open a Microsoft support case", step=STEP)
    return ExchangeOnline(sp["id"], role, scope)


# --- user consent -----------------------------------------------------------------------------

@dataclass(frozen=True)
class UserConsent:
    policy: str          # "any app", "verified publishers and low-impact permissions", or "off"
    mailbox_user_can_consent: bool | None   # None: depends on permission classifications
    explanation: str


def user_consent(step: "Step") -> UserConsent:
    """Can the mailbox user consent at Webex Connect's Generate Token? Read from the authorization policy."""
    policy = step.graph.get("/policies/authorizationPolicy")
    assigned = policy.get("defaultUserRolePermissions", {}).get("permissionGrantPoliciesAssigned", [])
    mine = [p.lower() for p in assigned if p.lower().startswith("managepermissiongrantsforself.")]
    if any(p.endswith("microsoft-user-default-legacy") for p in mine):
        return UserConsent("any app", True, "users may consent to any application: the mailbox user can "
                           "consent to SMTP.Send when Webex Connect's Generate Token asks")
    if mine:
        return UserConsent("verified publishers and low-impact permissions", None,
                           "users may consent only to permissions classified as low impact: unless SMTP.Send and "
                           "offline_access are classified so, Generate Token will ask for admin approval")
    return UserConsent("off", False, "user consent is turned off: the mailbox user cannot consent at Generate "
                       "Token, so an administrator must grant tenant-wide consent for SMTP.Send")


def require_consent_path(step: "Step", consent: UserConsent) -> None:
    """In consent mode ``user``, stop before any change when the user will not be able to consent."""
    if step.params.consent == "user" and consent.mailbox_user_can_consent is False:
        raise StepFailed(f"consent mode is 'user' but {consent.explanation}",
                         fix="set `consent: admin` in the parameters (the kit then grants tenant-wide consent for "
                         "SMTP.Send), or allow user consent under Enterprise applications > Consent and permissions",
                         step=STEP)


# --- the application ----------------------------------------------------------------------------

def find_application(step: "Step") -> dict[str, Any] | None:
    """The application by ``app_id`` if given, else by display name; several matches stop the step."""
    app = step.params.application
    if app.app_id:
        found = step.graph.get(f"/applications(appId={key_segment(app.app_id)})",
                               params={"$select": APP_SELECT}, missing_ok=True)
        if found is None:
            raise StepFailed(f"no application with client ID {app.app_id} in this tenant",
                             fix="correct application.app_id, or remove it to search by display name", step=STEP)
        return found
    matches = step.graph.get_all("/applications", params={
        "$filter": f"displayName eq {odata_quote(app.display_name)}", "$select": APP_SELECT})
    if len(matches) > 1:
        raise DuplicateApplications(app.display_name, matches)
    return matches[0] if matches else None


class DuplicateApplications(StepFailed):
    """Display names are not unique: the operator must say which application is ours."""

    def __init__(self, name: str, matches: list[dict[str, Any]]) -> None:
        self.candidates = pd.DataFrame([{
            "object ID": m["id"], "client ID": m["appId"], "created": m.get("createdDateTime", ""),
            "redirect URIs": ", ".join((m.get("web") or {}).get("redirectUris", [])),
        } for m in matches])
        super().__init__(f"{len(matches)} applications are named {name!r}:\n{self.candidates.to_string(index=False)}",
                         fix="set application.app_id to the client ID of the one to configure", step=STEP)


def _desired_access(exo: ExchangeOnline) -> list[dict[str, str]]:
    return [{"id": exo.mail_send_role, "type": "Role"}, {"id": exo.smtp_send_scope, "type": "Scope"}]


def _merged_access(current: list[dict[str, Any]], exo: ExchangeOnline) -> list[dict[str, Any]]:
    """requiredResourceAccess with ours added to Exchange Online's entry; every other entry kept as is."""
    merged = [dict(entry, resourceAccess=list(entry.get("resourceAccess", []))) for entry in current]
    entry = next((e for e in merged if e.get("resourceAppId") == EXCHANGE_APP_ID), None)
    if entry is None:
        entry = {"resourceAppId": EXCHANGE_APP_ID, "resourceAccess": []}
        merged.append(entry)
    have = {(a["id"], a["type"]) for a in entry["resourceAccess"]}
    entry["resourceAccess"] += [a for a in _desired_access(exo) if (a["id"], a["type"]) not in have]
    return merged


def _create_body(step: "Step", exo: ExchangeOnline) -> dict[str, Any]:
    return {
        "displayName": step.params.application.display_name,
        "signInAudience": "AzureADMyOrg",
        "web": {"redirectUris": [step.params.webex.callback_url],
                "implicitGrantSettings": {"enableAccessTokenIssuance": True, "enableIdTokenIssuance": False}},
        "requiredResourceAccess": [{"resourceAppId": EXCHANGE_APP_ID, "resourceAccess": _desired_access(exo)}],
    }


def _patch_body(step: "Step", app: dict[str, Any], exo: ExchangeOnline) -> tuple[dict[str, Any], list[str]]:
    """The smallest PATCH that brings ``app`` to the desired state, and a sentence per difference."""
    web = app.get("web") or {}
    uris = list(web.get("redirectUris") or [])
    implicit = dict(web.get("implicitGrantSettings") or {})
    callback = step.params.webex.callback_url
    patch: dict[str, Any] = {}
    why: list[str] = []
    if callback not in uris or not implicit.get("enableAccessTokenIssuance"):
        patch["web"] = {}
        if callback not in uris:
            patch["web"]["redirectUris"] = uris + [callback]
            why.append(f"add redirect URI {callback}")
        if not implicit.get("enableAccessTokenIssuance"):
            patch["web"]["implicitGrantSettings"] = dict(implicit, enableAccessTokenIssuance=True)
            why.append("turn on implicit-grant access tokens")
    access = app.get("requiredResourceAccess") or []
    merged = _merged_access(access, exo)
    if merged != access:
        patch["requiredResourceAccess"] = merged
        why.append("add Exchange Online Mail.Send (application) and SMTP.Send (delegated) permissions")
    return patch, why


def ensure_application(step: "Step", exo: ExchangeOnline, current: dict[str, Any] | None) -> tuple[Change, dict[str, Any] | None]:
    """Create the application in one request, or patch what differs; returns the change and the app."""
    name = step.params.application.display_name
    if current is None:
        body = _create_body(step, exo)
        if not step.params.apply:
            return step.record(Change("application", name, "planned", "create with redirect URI, implicit-grant "
                                      "access tokens and Exchange Online permissions", None, body)), None
        created = _write(step, "application", "POST", "/applications", body)
        step.created.add("application")
        return step.record(Change("application", name, "created", "created with redirect URI, implicit-grant access "
                                  "tokens and Exchange Online permissions", None,
                                  {"id": created["id"], "appId": created["appId"], **body})), created
    patch, why = _patch_body(step, current, exo)
    ident = {"id": current["id"], "appId": current["appId"]}
    if not patch:
        return step.record(Change("application", name, "unchanged", "redirect URI, implicit grant and "
                                  "permissions as desired", ident, ident)), current
    before = {k: current.get(k) for k in patch}
    if not step.params.apply:
        return step.record(Change("application", name, "planned", "; ".join(why), before, patch)), current
    _write(step, "application", "PATCH", f"/applications/{current['id']}", patch)
    return step.record(Change("application", name, "updated", "; ".join(why), before, patch)), {**current, **patch}


def ensure_service_principal(step: "Step", app: dict[str, Any] | None) -> dict[str, Any] | None:
    """The application's service principal (its enterprise application), which consent attaches to."""
    name = step.params.application.display_name
    if app is None:
        step.record(Change("service principal", name, "planned", "create", None, {}))
        return None
    if "application" not in step.created:
        sp = step.graph.get(f"/servicePrincipals(appId={key_segment(app['appId'])})",
                            params={"$select": "id,appId,displayName"}, missing_ok=True)
        if sp is not None:
            step.record(Change("service principal", name, "unchanged", "exists", {"id": sp["id"]}, {"id": sp["id"]}))
            return sp
    if not step.params.apply:
        step.record(Change("service principal", name, "planned", "create", None, {"appId": app["appId"]}))
        return None
    sp = _write(step, "service principal", "POST", "/servicePrincipals", {"appId": app["appId"]},
                retry_codes=REPLICATION_CODES)
    step.created.add("service principal")
    step.record(Change("service principal", name, "created", "created", None, {"id": sp["id"], "appId": app["appId"]}))
    return sp


def ensure_mail_send_consent(step: "Step", sp: dict[str, Any] | None, exo: ExchangeOnline) -> Change:
    """Admin consent for the Mail.Send application permission: an app role assignment."""
    wanted = {"principalId": sp["id"] if sp else "(new)", "resourceId": exo.sp_id, "appRoleId": exo.mail_send_role}
    if sp is not None and "service principal" not in step.created:
        assignments = step.graph.get_all(f"/servicePrincipals/{sp['id']}/appRoleAssignments")
        if any(a.get("resourceId") == exo.sp_id and a.get("appRoleId") == exo.mail_send_role for a in assignments):
            return step.record(Change("admin consent", MAIL_SEND, "unchanged", "granted", wanted, wanted))
    if sp is None or not step.params.apply:
        return step.record(Change("admin consent", MAIL_SEND, "planned", "grant admin consent", None, wanted))
    _write(step, "admin consent", "POST", f"/servicePrincipals/{exo.sp_id}/appRoleAssignedTo", wanted,
           retry_codes=REPLICATION_CODES)
    return step.record(Change("admin consent", MAIL_SEND, "created", "granted admin consent", None, wanted))


def ensure_smtp_send_grant(step: "Step", sp: dict[str, Any] | None, exo: ExchangeOnline) -> Change:
    """Tenant-wide consent for delegated SMTP.Send: one grant per client and resource, patched in place."""
    wanted = {"clientId": sp["id"] if sp else "(new)", "consentType": "AllPrincipals", "resourceId": exo.sp_id}
    grant = None
    if sp is not None and "service principal" not in step.created:
        grants = step.graph.get_all("/oauth2PermissionGrants", params={"$filter": f"clientId eq {odata_quote(sp['id'])}"})
        grant = next((g for g in grants if g.get("resourceId") == exo.sp_id
                      and g.get("consentType") == "AllPrincipals"), None)
    scopes = (grant or {}).get("scope", "").split()
    if SMTP_SEND in scopes:
        return step.record(Change("tenant-wide consent", SMTP_SEND, "unchanged", "granted",
                                  {"scope": grant["scope"]}, {"scope": grant["scope"]}))
    scope = " ".join(scopes + [SMTP_SEND])
    summary = "add SMTP.Send to the existing grant" if grant else "grant tenant-wide consent"
    before = {"scope": grant["scope"]} if grant else None
    if sp is None or not step.params.apply:
        return step.record(Change("tenant-wide consent", SMTP_SEND, "planned", summary, before, {**wanted, "scope": scope}))
    if grant:
        _write(step, "tenant-wide consent", "PATCH", f"/oauth2PermissionGrants/{grant['id']}", {"scope": scope})
        return step.record(Change("tenant-wide consent", SMTP_SEND, "updated", summary, before, {"scope": scope}))
    _write(step, "tenant-wide consent", "POST", "/oauth2PermissionGrants", {**wanted, "scope": scope},
           retry_codes=REPLICATION_CODES)
    return step.record(Change("tenant-wide consent", SMTP_SEND, "created", summary, None, {**wanted, "scope": scope}))


# --- the client secret --------------------------------------------------------------------------

def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def secrets_table(step: "Step", app: dict[str, Any] | None) -> pd.DataFrame:
    """The application's secrets by hint and expiry (values are never readable), with their state."""
    now = step.clock.now()
    renew = timedelta(days=step.params.application.secret_renew_days)
    rows = []
    for cred in (app or {}).get("passwordCredentials") or []:
        end = _parse_time(cred["endDateTime"])
        state = "expired" if end <= now else "expiring soon" if end <= now + renew else "valid"
        rows.append({"hint": cred.get("hint"), "description": cred.get("displayName"),
                     "expires": end.date().isoformat(), "state": state, "keyId": cred.get("keyId")})
    return pd.DataFrame(rows, columns=["hint", "description", "expires", "state", "keyId"])


def prune_expired_secrets(step: "Step", app: dict[str, Any] | None) -> list[Change]:
    """Remove expired secrets, only when ``application.remove_expired_secrets`` says so."""
    table = secrets_table(step, app)
    expired = table[table["state"] == "expired"]
    if app is None or expired.empty or not step.params.application.remove_expired_secrets:
        return []
    changes = []
    for _, cred in expired.iterrows():
        what = {"hint": cred["hint"], "expired": cred["expires"], "keyId": cred["keyId"]}
        if step.params.apply:
            _write(step, "client secret", "POST", f"/applications/{app['id']}/removePassword", {"keyId": cred["keyId"]})
            app["passwordCredentials"] = [c for c in app["passwordCredentials"] if c["keyId"] != cred["keyId"]]
        changes.append(step.record(Change("expired client secret", f"hint {cred['hint']}",
                                          "updated" if step.params.apply else "planned", "removed" if
                                          step.params.apply else "remove", what, None)))
    return changes


def stored_secret(step: "Step", app: dict[str, Any] | None) -> pd.Series | None:
    """The application's secret whose value the store holds (matched by hint), if it is still valid."""
    stored = secrets.read(step.params.secret_store)
    table = secrets_table(step, app)
    usable = table[(table["state"] == "valid") & (table["hint"] == (stored or "")[:3])] if stored else table.iloc[0:0]
    return usable.iloc[0] if len(usable) else None


def ensure_secret(step: "Step", app: dict[str, Any] | None) -> Change:
    """A valid client secret whose value is in the secret store; a new one only when needed."""
    store = step.params.secret_store
    cred = stored_secret(step, app)
    if cred is not None:
        facts = {"hint": cred["hint"], "expires": cred["expires"], "keyId": cred["keyId"], "store": store.describe()}
        step.facts["secret"] = facts
        return step.record(Change("client secret", store.describe(), "unchanged",
                                  f"valid until {cred['expires']}; value is in the store", facts, facts))
    reason = "the secret store holds no secret that is valid in Entra ID"
    if app is None or not step.params.apply:
        return step.record(Change("client secret", store.describe(), "planned", f"add a new secret ({reason})"))
    lifetime = timedelta(days=step.params.application.secret_lifetime_days)
    now = step.clock.now()
    body = {"passwordCredential": {"displayName": f"Webex Connect (runbook {now.date().isoformat()})",
                                   "endDateTime": (now + lifetime).strftime("%Y-%m-%dT%H:%M:%SZ")}}
    created = _write(step, "client secret", "POST", f"/applications/{app['id']}/addPassword", body,
                     retry_codes=REPLICATION_CODES)
    where = secrets.write(store, created["secretText"])
    app.setdefault("passwordCredentials", []).append({k: v for k, v in created.items() if k != "secretText"})
    facts = {"hint": created["hint"], "expires": _parse_time(created["endDateTime"]).date().isoformat(),
             "keyId": created["keyId"], "store": store.describe(), "fingerprint": secrets.fingerprint(created["secretText"])}
    step.facts["secret"] = facts
    return step.record(Change("client secret", store.describe(), "created", f"added a new secret ({reason}); {where}",
                              None, facts))


# --- the operator, delegated consent and the summary ---------------------------------------------

def needed_permissions(step: "Step") -> dict[str, str]:
    """The Graph permissions this step's writes need, with why; read-only ones fail later with a clear 403."""
    from .auth import OPERATOR_SCOPES

    names = ["Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All", "Policy.Read.All"]
    if step.params.consent == "admin":
        names.append("DelegatedPermissionGrant.ReadWrite.All")
    return {name: OPERATOR_SCOPES[name] for name in names}


def check_operator(step: "Step") -> pd.DataFrame:
    """Sign in, then stop before any change if the token lacks a permission a write will need."""
    granted = step.signin.granted()
    needed = needed_permissions(step)
    table = pd.DataFrame([{"permission": n, "needed to": why, "granted": n in granted} for n, why in needed.items()])
    missing = [n for n in needed if n not in granted]
    if missing:
        raise StepFailed(f"the signed-in operator lacks {', '.join(missing)}; nothing was changed",
                         fix="sign in as an Application Administrator or Cloud Application Administrator and "
                         "accept the consent prompt for these scopes, or have a Global Administrator grant them "
                         "to the operator client", step=STEP)
    return table


def ensure_delegated_consent(step: "Step", sp: dict[str, Any] | None, exo: ExchangeOnline,
                             consent: UserConsent) -> Change | str:
    """consent: admin grants SMTP.Send tenant-wide; consent: user leaves it to Generate Token."""
    if step.params.consent == "admin":
        return ensure_smtp_send_grant(step, sp, exo)
    return ("consent: user, so the mailbox user consents to SMTP.Send at Webex Connect's Generate Token "
            f"(user consent policy: {consent.policy}); no tenant-wide grant is made")


def summary(step: "Step", app: dict[str, Any] | None, consent: UserConsent) -> pd.DataFrame:
    """What step 4 will need, and whether the mailbox user can consent: recorded as the step's facts."""
    secret = step.facts.get("secret", {})
    rows = {
        "Directory (tenant) ID": step.params.tenant_id,
        "Application (client) ID": (app or {}).get("appId", "(planned)"),
        "Object ID": (app or {}).get("id", "(planned)"),
        "Redirect URI": step.params.webex.callback_url,
        "Client secret": f"hint {secret['hint']}..., expires {secret['expires']}, in {secret['store']}"
                         if secret else "(planned)",
        "User consent": consent.policy + (" (admin consent granted instead)" if step.params.consent == "admin" else ""),
    }
    step.facts.update({"client_id": rows["Application (client) ID"], "object_id": rows["Object ID"],
                       "user_consent": consent.policy})
    return pd.DataFrame({"value": rows})
