"""Least privilege for Mail.Send: Exchange Online's RBAC for Applications (``application.mail_send: scoped``).

The support document grants the application Exchange Online's application permission ``Mail.Send`` with
admin consent in Entra ID, which lets it send as *any* mailbox in the tenant. Exchange can grant the same
right for chosen mailboxes only: a pointer to the application's service principal
(``New-ServicePrincipal``), a management scope whose recipient filter matches the one mailbox
(``New-ManagementScope``), and a role assignment of ``Application Mail.Send`` limited to that scope
(``New-ManagementRoleAssignment``); ``Test-ServicePrincipalAuthorization`` tells whether the mailbox is in
scope. Exchange's grant adds to Entra's: while tenant-wide consent stays, the scope changes nothing, so with
``scoped`` step 2 removes it.

Webex Connect itself needs neither: it sends with the mailbox user's delegated ``SMTP.Send`` token.
``none`` grants no application permission at all.

Step 3 applies these objects like its other settings: read, compare, apply through the admin API
(``mailbox.apply_with: adminapi``), or a section of the PowerShell script that reads before it writes.
The objects are named after the mailbox (:func:`scope_name`, :func:`assignment_name`) so that every later
run, and teardown, finds them by name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..engine.changes import Change, Write, unchanged
from ..errors import StepFailed
from ..wire.graph import key_segment
from . import exchange_admin

if TYPE_CHECKING:
    from ..context.step import Step

#: the role RBAC for Applications grants (Microsoft Graph's app-only Mail.Send), and the section of step 3's
#: script that applies it
ROLE, SECTION = "Application Mail.Send", "mail_send_scope"

#: the step 3 script's section for each resource (the role, ``Application Mail.Send``, is in ``ROLE``)
POINTER, SCOPE, ASSIGNMENT = "Exchange service principal", "management scope", "management role assignment"
SECTIONS = {POINTER: SECTION, SCOPE: SECTION, ASSIGNMENT: SECTION}
#: Exchange refuses longer names for role assignments (and its directory for scopes)
NAME_LIMIT = 64
#: what each option lets the application do, in plain words (notebook 02 shows it)
OPTIONS = {
    "tenant": (
        "the support document's way: admin consent for Exchange Online Mail.Send (application)",
        "the application may send as ANY mailbox in the tenant",
    ),
    "scoped": (
        "no tenant-wide Mail.Send; Exchange RBAC for Applications grants Application Mail.Send on this "
        "mailbox only (a management scope and a role assignment, applied in step 3)",
        "the application may send as this mailbox only",
    ),
    "none": (
        "no application permission at all",
        "the application may send as no mailbox on its own",
    ),
}


def _fit(name: str, upn: str) -> str:
    """``name`` as is when Exchange accepts its length; else shortened, keeping a hash of the mailbox so that
    two long mailboxes never share a name."""
    if len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha256(upn.lower().encode()).hexdigest()[:8]
    return f"{name[: NAME_LIMIT - 9]}~{digest}"


def scope_name(upn: str) -> str:
    """The management scope's name for this mailbox (what teardown removes by)."""
    return _fit(f"Webex Connect mailbox {upn}", upn)


def assignment_name(upn: str) -> str:
    """The role assignment's name for this mailbox (what teardown removes by)."""
    return _fit(f"Webex Connect Mail.Send {upn}", upn)


def recipient_filter(address: str) -> str:
    """The OPATH filter that matches the one mailbox; a quote in the value is doubled, as OPATH requires."""
    return "PrimarySmtpAddress -eq '{}'".format(address.replace("'", "''"))


def _same_id(current: Any, wanted: str | None) -> bool:
    """Exchange shows GUIDs in either case; nothing matches an ID not known yet."""
    return wanted is not None and str(current or "").lower() == wanted.lower()


def _same_filter(current: Any, wanted: str) -> bool:
    squeeze = lambda text: re.sub(r"\s+", " ", str(text or "")).strip().lower()  # noqa: E731
    return squeeze(current) == squeeze(wanted)


# --- what the scope is for -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The application (its client ID and its service principal's object ID, None until step 2 made them)
    and the mailbox it may send as."""

    app_id: str | None
    sp_object_id: str | None
    display_name: str
    mailbox: str  # the user principal name, which names the objects
    address: str  # the primary SMTP address, which the scope's filter matches

    @property
    def scope(self) -> str:
        return scope_name(self.mailbox)

    @property
    def assignment(self) -> str:
        return assignment_name(self.mailbox)

    @property
    def filter(self) -> str:
        return recipient_filter(self.address)


def target(step: Step, app: dict[str, Any] | None, sp: dict[str, Any] | None, address: str = "") -> Target:
    """The target of this step's parameters, for an application and service principal already read."""
    mailbox = step.params.webex.email_id
    return Target(
        (app or {}).get("appId"),
        (sp or {}).get("id"),
        step.params.application.display_name,
        mailbox,
        address or mailbox,
    )


def find_target(step: Step, address: str = "") -> Target:
    """Read the application and its service principal by identity (as step 2 left them): step 3's target."""
    from . import entra

    app = entra.find_application(step)
    sp = (
        step.graph.get(
            f"/servicePrincipals(appId={key_segment(app['appId'])})",
            params={"$select": "id,appId,displayName"},
            missing_ok=True,
        )
        if app
        else None
    )
    return target(step, app, sp, address)


# --- what Exchange holds (admin API) ---------------------------------------------------------------------


@dataclass(frozen=True)
class RbacState:
    """Exchange's pointer to the service principal, the management scope and the role assignment, or None."""

    pointer: dict[str, Any] | None
    scope: dict[str, Any] | None
    assignment: dict[str, Any] | None


class _Absent(StepFailed):
    """Exchange answered that the object does not exist."""


def _get(step: Step, cmdlet: str, identity: str) -> dict[str, Any] | None:
    try:
        found = exchange_admin.invoke(step, cmdlet, {"Identity": identity}, missing=_Absent(identity))
    except _Absent:
        return None
    return found[0] if found else None


def read_state(step: Step, wanted: Target) -> RbacState:
    """Get-* of each object by its identity (the client ID, the names): read-only."""
    return RbacState(
        _get(step, "Get-ServicePrincipal", wanted.app_id) if wanted.app_id else None,
        _get(step, "Get-ManagementScope", wanted.scope),
        _get(step, "Get-ManagementRoleAssignment", wanted.assignment),
    )


# --- the objects as changes -------------------------------------------------------------------------------


def _write(state: RbacState | None, wanted: Target, cmdlet: str, parameters: dict[str, Any]) -> Write | None:
    """The cmdlet's write, once there is something to send it about: the state read (admin API) and, for a
    cmdlet about the application, its IDs (step 2 makes them; until then the change is only planned)."""
    about_app = not cmdlet.endswith("ManagementScope")
    if state is None or (about_app and not (wanted.app_id and wanted.sp_object_id)):
        return None
    return exchange_admin.cmdlet_write(cmdlet, parameters)


def _remove(state: RbacState | None, wanted: Target, resource: str, name: str, cmdlet: str, why: str) -> Change:
    return Change(
        resource,
        name,
        "planned",
        f"remove it: {why}",
        {"Identity": name},
        None,
        _write(state, wanted, cmdlet, {"Identity": name}),
        outcome="removed",
    )


def diff_pointer(state: RbacState | None, wanted: Target) -> list[Change]:
    """Exchange's pointer to the application's service principal: created once; replaced when it points at
    another service principal (the application's was deleted and made again)."""
    after = {"AppId": wanted.app_id or "(step 2)", "ObjectId": wanted.sp_object_id or "(step 2)"}
    pointer = state.pointer if state is not None else None
    if pointer is not None and _same_id(pointer.get("ObjectId"), wanted.sp_object_id):
        return [unchanged(POINTER, wanted.display_name, "points at the application's service principal", after)]
    create = Change(
        POINTER,
        wanted.display_name,
        "planned",
        "create Exchange's pointer to the application's service principal",
        None,
        after,
        _write(
            state,
            wanted,
            "New-ServicePrincipal",
            {"AppId": wanted.app_id, "ObjectId": wanted.sp_object_id, "DisplayName": wanted.display_name},
        ),
        outcome="created",
    )
    if pointer is None:
        return [create]
    stale = _remove(
        state,
        wanted,
        POINTER,
        str(wanted.app_id),
        "Remove-ServicePrincipal",
        f"it points at service principal {pointer.get('ObjectId')}, which is not the application's",
    )
    return [stale, create]


def diff_scope(state: RbacState | None, wanted: Target) -> Change:
    """The management scope whose recipient filter matches the one mailbox."""
    after = {"RecipientRestrictionFilter": wanted.filter}
    scope = state.scope if state is not None else None
    if scope is not None and _same_filter(scope.get("RecipientFilter"), wanted.filter):
        return unchanged(SCOPE, wanted.scope, "matches this mailbox only", after)
    if scope is None:
        return Change(
            SCOPE,
            wanted.scope,
            "planned",
            "create a scope matching this mailbox only",
            None,
            after,
            _write(state, wanted, "New-ManagementScope", {"Name": wanted.scope, **after}),
            outcome="created",
        )
    return Change(
        SCOPE,
        wanted.scope,
        "planned",
        "match this mailbox only",
        {"RecipientFilter": scope.get("RecipientFilter")},
        after,
        _write(state, wanted, "Set-ManagementScope", {"Identity": wanted.scope, **after}),
    )


def diff_assignment(state: RbacState | None, wanted: Target) -> list[Change]:
    """The role assignment of Application Mail.Send to the application, limited to the scope; one that
    assigns another role, to another principal or on another scope is replaced (remove, then create)."""
    after = {"App": wanted.sp_object_id or "(step 2)", "Role": ROLE, "CustomResourceScope": wanted.scope}
    current = state.assignment if state is not None else None
    pointer = (state.pointer if state is not None else None) or {}
    ours = _same_id(pointer.get("ObjectId"), wanted.sp_object_id)
    assignees = {wanted.sp_object_id, *((pointer.get("Name"), pointer.get("Identity")) if ours else ())}
    if current is not None:
        wrong = [
            what
            for what, ok in (
                ("role", current.get("Role") == ROLE),
                ("scope", str(current.get("CustomResourceScope", "")).lower() == wanted.scope.lower()),
                ("principal", any(_same_id(current.get("RoleAssignee"), who) for who in assignees)),
            )
            if not ok
        ]
        if not wrong:
            return [unchanged(ASSIGNMENT, wanted.assignment, "Application Mail.Send on this mailbox's scope", after)]
    create = Change(
        ASSIGNMENT,
        wanted.assignment,
        "planned",
        "assign Application Mail.Send on this mailbox's scope only",
        None,
        after,
        _write(
            state,
            wanted,
            "New-ManagementRoleAssignment",
            {"Name": wanted.assignment, "App": wanted.sp_object_id, "Role": ROLE, "CustomResourceScope": wanted.scope},
        ),
        outcome="created",
    )
    if current is None:
        return [create]
    why = f"its {' and '.join(wrong)} differ from what the kit assigns"
    return [_remove(state, wanted, ASSIGNMENT, wanted.assignment, "Remove-ManagementRoleAssignment", why), create]


def diff_rbac(state: RbacState | None, wanted: Target) -> list[Change]:
    """Every object as a change, in the order Exchange needs them (pointer, scope, then the assignment).
    Without a state (powershell mode) the changes carry no write: the script applies them."""
    return [*diff_pointer(state, wanted), diff_scope(state, wanted), *diff_assignment(state, wanted)]


def changes(step: Step, address: str, *, read: bool) -> tuple[Target, list[Change]]:
    """Step 3's changes for ``application.mail_send: scoped`` (none otherwise); ``read``: through the admin
    API, else planned for the script."""
    if step.params.application.mail_send != "scoped":
        return target(step, None, None, address), []
    wanted = find_target(step, address)
    return wanted, diff_rbac(read_state(step, wanted) if read else None, wanted)


# --- the test Exchange offers ----------------------------------------------------------------------------------


def authorization(step: Step, app_id: str, mailbox: str) -> list[dict[str, Any]]:
    """``Test-ServicePrincipalAuthorization``: each role the application holds in Exchange and whether the
    mailbox is in its scope (Entra ID's grants are not part of it). Read-only; no pointer yet: no roles."""
    try:
        return exchange_admin.invoke(
            step,
            "Test-ServicePrincipalAuthorization",
            {"Identity": app_id, "Resource": mailbox},
            missing=_Absent(app_id),
        )
    except _Absent:
        return []


def in_scope(rows: list[dict[str, Any]]) -> bool:
    """Whether Application Mail.Send applies to the mailbox tested."""
    return any(r.get("RoleName") == ROLE and r.get("InScope") in (True, "True") for r in rows)


def options_table(chosen: str) -> pd.DataFrame:
    """The three choices of ``application.mail_send``: what the kit does and whom the application may send
    as, the chosen one marked. Webex Connect itself sends with the mailbox's delegated SMTP.Send in each."""
    return pd.DataFrame(
        [
            {
                "mail_send": name,
                "chosen": "◀" if name == chosen else "",
                "what the kit does": does,
                "the application": may,
            }
            for name, (does, may) in OPTIONS.items()
        ]
    ).set_index("mail_send")
