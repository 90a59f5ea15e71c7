"""Teardown (``09_teardown``): remove what the kit created for Webex Connect, restore what it changed.

**The records are the proof.** What the kit created is decided from the tenant's run records, never from names
alone: each record's journal holds every change the tenant accepted, with its ``before`` values. Read oldest
first, they give, per resource, whether the kit created it (a ``created`` change, or the application's create
under its key answered 204 after a lost answer), the value it had before the kit first changed it, the value the
kit left, and whether a teardown already removed or restored it (a configuration after that starts afresh). Only
the records of the same tenant ID, reached the same way (a real tenant by ``live`` or ``record``, a trainee's
sandbox by ``sandbox``), count; a replay changed no tenant, so its records prove nothing. The records come from
the archive the run writes to (``runbook run`` gives the kernel its journal, inside it) or, in JupyterLab, from
the notebook's ``archive`` variable; with no record the teardown removes nothing and says how to proceed.

**What is removed, in order**: the client secrets the kit added (credentials first: whatever happens next, the
application can no longer sign in), the Mail.Send admin consent and the tenant-wide SMTP.Send grant (a grant the
kit only extended gets its old scope back), the service principal, then the application, each only when the kit
created it; an application made by hand keeps existing, without what the kit added to it. Then Exchange: the
RBAC for Applications objects of ``application.mail_send: scoped`` (:mod:`runbook_lib.tenant.rbac`; the role
assignment, its scope, Exchange's pointer to the service principal), the outbound spam rule before its policy
(never the Default policy), and the mailbox's forwarding and SMTP AUTH set back to their recorded values, each
only while it is still as the kit left it: a value someone changed since is left, with a note. Exchange is
changed through the admin API (``mailbox.apply_with: adminapi``) or by a PowerShell script kept with the
record, which checks each value again before changing it.

Every removal is a :class:`~runbook_lib.engine.changes.Change` with its ``before`` values, applied by the step's
executor (journaled, or only planned with ``apply: false``). A second teardown finds everything gone and
makes no write.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .. import __version__, paths
from ..config import registry
from ..engine import journal
from ..engine.changes import CHANGED, Change, Write, changes_frame, unchanged
from ..errors import GraphError, StepFailed
from ..records import integrity
from ..records import store as records
from ..tenant import powershell, rbac
from ..tenant.entra import KIT_TAG, NEEDS, SECRET_MARK, grant_scope_write
from ..tenant.exchange import MailboxState, read_state
from ..tenant.exchange_admin import admin_error, cmdlet_body, cmdlet_write
from ..wire.graph import key_segment, odata_quote

if TYPE_CHECKING:
    from ..context.step import Step

STEP = registry.TEARDOWN
SCRIPT_NAME = "teardown.ps1"
#: which tenant a mode's records changed: the same for the teardown and the record, or the record proves
#: nothing here (a replay changed no tenant at all)
WORLDS: dict[str, str | None] = {"live": "real", "record": "real", "sandbox": "sandbox", "replay": None}
SECRETS = ("client secret", "expired client secret")


# --- what the records prove -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Made:
    """What the records say the kit did to one resource since it last configured it."""

    resource: str
    name: str
    created: bool
    before: dict[str, Any] | None  # before the kit first changed it
    after: dict[str, Any] | None  # as the kit left it (the IDs Microsoft gave it, merged)
    record: str  # the record of the kit's first change to it
    undone: str | None = None  # the record (and step) that removed or restored it since

    @property
    def key_id(self) -> str | None:
        return (self.after or {}).get("keyId") or (self.before or {}).get("keyId")


@dataclass
class Proof:
    """The tenant's records, read for a teardown: what the kit made, and where that was read."""

    source: str
    made: list[Made]
    #: what the records cannot prove, and is therefore left (step 3 applied by its PowerShell script)
    notes: list[str] = field(default_factory=list)

    def of(self, *resources: str) -> list[Made]:
        return [m for m in self.made if m.resource in resources]

    def find(self, resource: str) -> Made | None:
        return next(iter(self.of(resource)), None)

    def frame(self) -> pd.DataFrame:
        rows = [
            {
                "resource": m.resource,
                "name": m.name,
                "the kit": "created it" if m.created else "changed it",
                "first in record": m.record,
                "since": f"undone by {m.undone}" if m.undone else "",
            }
            for m in self.made
        ]
        return pd.DataFrame(rows, columns=["resource", "name", "the kit", "first in record", "since"])

    def _repr_html_(self) -> str:
        notes = "".join(f"<p>{html.escape(note)}</p>" for note in self.notes)
        return f"<p>{html.escape(self.source)}</p>" + (self.frame().to_html(index=False) if self.made else "") + notes

    def __repr__(self) -> str:
        table = "\n" + self.frame().to_string(index=False) if self.made else ""
        return "\n".join([self.source + table, *self.notes])


def run_archive(archive: str = "", own: Path | None = None) -> Path | None:
    """The archive a run writes to (its journal is ``<archive>/<tenant>/<stamp>/journal.jsonl``), else the
    notebook's ``archive`` (relative to the kit), else the archive of the step's own record (``own``)."""
    running = os.environ.get(journal.JOURNAL_ENV)
    if running:
        return Path(running).parent.parent.parent
    if archive:
        return paths.resolve(archive)
    return own.parent.parent if own else None


def _key(resource: str, name: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> tuple[str, str]:
    """Secrets are told apart by their Secret ID (a store holds one after another); the rest by name."""
    if resource in SECRETS:
        return "client secret", str((after or {}).get("keyId") or (before or {}).get("keyId") or name)
    return resource, name


def ledger(changes: Iterable[tuple[str, str, Change]]) -> list[Made]:
    """Fold accepted changes ``(record, step, change)``, oldest first, into what the kit made and what is undone."""
    made: dict[tuple[str, str], Made] = {}
    for record, step, change in changes:
        if change.action not in CHANGED:
            continue
        key = _key(change.resource, change.name, change.before, change.after)
        kept = made.get(key)
        if step == STEP or change.action == "removed":
            if kept is not None:
                made[key] = replace(kept, undone=f"{step} in record {record}")
            continue
        created = change.action == "created" or (change.resource == "application" and change.before is None)
        if kept is None or kept.undone:
            hint = (change.after or {}).get("hint") if change.resource in SECRETS else None
            name = f"hint {hint}" if hint else change.name
            made[key] = Made(change.resource, name, created, change.before, change.after, record)
        else:
            made[key] = replace(
                kept, created=kept.created or created, after={**(kept.after or {}), **(change.after or {})}
            )
    return list(made.values())


def unverified(record: Path) -> str:
    """Why a record cannot be taken as proof (empty when it can): it is not sealed, or its seal, files, chain or
    signature do not verify. A teardown removes nothing on such a record's word."""
    if not records.is_sealed(record):
        return "it is not sealed (its run is still going, or was killed: `runbook records TENANT` seals it)"
    problems = integrity.verify(record)
    return f"it does not verify ({problems[0]}; see `runbook verify-record`)" if problems else ""


def read_records(step: Step, archive: str = "") -> Proof:
    """What the tenant's verified records prove the kit made; read from the run's archive (or ``archive``). The
    run's own record, being written, is not proof of anything before it."""
    p = step.params
    world = WORLDS[p.mode]
    own = step.record_folder
    folder = run_archive(archive, own)
    if world is None:
        return Proof(
            "No record: nothing would be removed. A replay's answers were recorded and changed no tenant, "
            "so no record can prove the kit created anything here.",
            [],
        )
    if folder is None:
        return Proof(_NO_ARCHIVE, [])
    changes: list[tuple[str, str, Change]] = []
    notes: list[str] = []
    read = 0
    for record in records.record_dirs(folder, p.tenant):
        run = records.run_entry(record)
        if record == own or (run.get("tenant_id") != p.tenant_id or WORLDS.get(str(run.get("mode"))) != world):
            continue
        refused = unverified(record)
        if refused:
            notes.append(f"Record {record.name} was not read: {refused}. Nothing is removed on its word.")
            continue
        read += 1
        entries = journal.read(record / journal.JOURNAL_FILE)
        accepted = [
            (record.name, e.get("step", ""), Change.from_dict(e["change"]))
            for e in entries
            if e.get("kind") == "change"
        ]
        changes += accepted
        if _scripted(run, entries):
            notes.append(
                f"Record {record.name}: step 3 was applied by its PowerShell script, whose effects no record shows. "
                "If the script was run, remove the outbound spam rule and policy it made and set the mailbox's "
                "forwarding and SMTP AUTH back by hand (its transcript, attached with `runbook attach`, shows the "
                "values before)."
            )
    made = ledger(changes)
    if not made:
        return Proof(
            f"No record: nothing would be removed. {read} record(s) of tenant {p.tenant} in this archive, "
            "none with a change the kit made. " + _HOW,
            [],
            notes,
        )
    return Proof(
        f"{read} record(s) of tenant {p.tenant}: what the kit made and changed, as they prove it.", made, notes
    )


def _scripted(run: dict[str, Any], entries: list[dict[str, Any]]) -> bool:
    """A run that applied step 3 with ``mailbox.apply_with: powershell``: the script, not the kit, changed Exchange."""
    parameters = run.get("parameters") or {}
    return (
        (parameters.get("mailbox") or {}).get("apply_with", "powershell") == "powershell"
        and parameters.get("apply", True)
        and any(e.get("kind") == "step" and e.get("step") == registry.MAILBOX for e in entries)
    )


_HOW = (
    "The records are the proof of what the kit created: run the teardown as "
    "`runbook run PARAMS --steps 09_teardown` with the archive that holds the tenant's records (`--archive DIR`), "
    "or in JupyterLab set `archive` to that folder. "
    "Objects made by hand are never removed."
)
_NO_ARCHIVE = "No record: nothing would be removed. No archive was given to read the tenant's records from. " + _HOW


# --- Entra ID: secrets, consents, the service principal, the application -------------------------------


@dataclass(frozen=True)
class Directory:
    """What Entra ID holds now of what the kit made."""

    app: dict[str, Any] | None
    sp: dict[str, Any] | None
    assignments: list[dict[str, Any]]
    grants: list[dict[str, Any]]


ENTRA = ("client secret", "admin consent", "tenant-wide consent", "service principal", "application")


def _recorded(proof: Proof, field: str, *resources: str) -> str | None:
    """An ID the records name: as the kit left the object, or as it found one made by hand."""
    values = ({**(m.before or {}), **(m.after or {})}.get(field) for m in proof.of(*resources))
    return next((str(value) for value in values if value), None)


def read_directory(step: Step, proof: Proof) -> Directory:
    """The application by client ID (``application.app_id``) or its key (then the client ID the records name:
    an application made by hand has no key), its service principal, its assignments and grants."""
    p = step.params.application
    select = {"$select": "id,appId,uniqueName,displayName,tags,passwordCredentials"}
    app_id = p.app_id
    app = None
    if not app_id:
        key = _recorded(proof, "uniqueName", "application") or p.key
        app = step.graph.get(f"/applications(uniqueName={key_segment(key)})", params=select, missing_ok=True)
        app_id = None if app else _recorded(proof, "appId", "application", "service principal")
    if app is None and app_id:
        app = step.graph.get(f"/applications(appId={key_segment(app_id)})", params=select, missing_ok=True)
    sp_app_id = (app or {}).get("appId") or _recorded(proof, "appId", "application", "service principal")
    sp = (
        step.graph.get(
            f"/servicePrincipals(appId={key_segment(sp_app_id)})", params={"$select": "id,appId,tags"}, missing_ok=True
        )
        if sp_app_id
        else None
    )
    assignments = step.graph.get_all(f"/servicePrincipals/{sp['id']}/appRoleAssignments") if sp else []
    grants = (
        step.graph.get_all("/oauth2PermissionGrants", params={"$filter": f"clientId eq {odata_quote(sp['id'])}"})
        if sp and proof.of("tenant-wide consent")
        else []
    )
    return Directory(app, sp, assignments, grants)


def _undone(made: Made, present: dict[str, Any] | None) -> Change:
    """An item a teardown (or a later step) already removed or restored: told, never touched again."""
    if made.created and present is None:
        return unchanged(made.resource, made.name, f"gone: removed by {made.undone}")
    what = "removed" if made.created else "restored"
    return unchanged(
        made.resource, made.name, f"{what} by {made.undone}; no record since says the kit changed it: left", present
    )


def _removal(made: Made, present: dict[str, Any] | None, write: Write | None, what: str = "") -> Change:
    """Remove ``present`` when the kit created it; say why when it stays."""
    if made.undone:
        return _undone(made, present)
    if present is None:
        return unchanged(made.resource, made.name, "gone already")
    if not made.created:
        return unchanged(
            made.resource, made.name, what or "the kit did not create it (it only changed it): left", present
        )
    return Change(
        made.resource, made.name, "planned", "remove what the kit created", present, None, write, outcome="removed"
    )


def mismatch(made: Made, found: dict[str, Any], fields: tuple[str, ...]) -> str:
    """Why ``found`` is not the object the records say the kit created (empty when it is): one of ``fields``
    differs from the record, or it lacks the mark the kit puts on what it creates. A record can be forged or
    mistaken; the object in the tenant is checked before anything is removed on its word."""
    recorded = {**(made.before or {}), **(made.after or {})}
    for name in fields:
        if recorded.get(name) and found.get(name) != recorded[name]:
            return f"its {name} is {found.get(name)!r}, but the record names {recorded[name]!r}"
    if made.created and KIT_TAG not in (found.get("tags") or []):
        return (
            f"it does not carry the kit's mark (the tag {KIT_TAG!r} on what the kit creates); run step 2 once to "
            "mark an application the kit created under its key"
        )
    return ""


def refused(made: Made, present: dict[str, Any], why: str) -> Change:
    return unchanged(made.resource, made.name, f"refused, left as it is: {why}", present)


def diff_secret(made: Made, app: dict[str, Any] | None) -> Change:
    """A client secret the kit added (its display name carries the kit's mark): removed from the application
    (made by hand or not)."""
    cred = next((c for c in (app or {}).get("passwordCredentials") or [] if c.get("keyId") == made.key_id), None)
    present = (
        None if cred is None else {"keyId": made.key_id, "hint": cred.get("hint"), "expires": cred.get("endDateTime")}
    )
    if cred is not None and not made.undone and not str(cred.get("displayName") or "").startswith(SECRET_MARK):
        return refused(made, present or {}, f"its description {cred.get('displayName')!r} is not the kit's")
    write = (
        Write(
            "graph",
            "POST",
            f"/applications/{app['id']}/removePassword",
            {"keyId": made.key_id},
            needs=NEEDS["client secret"],
        )
        if app and cred
        else None
    )
    return _removal(made, present, write)


def diff_mail_send(made: Made, sp: dict[str, Any] | None, assignments: list[dict[str, Any]]) -> Change:
    """The Mail.Send admin consent (an app role assignment) the kit granted."""
    kit = made.after or {}
    found = next(
        (
            a
            for a in assignments
            if a.get("id") == kit.get("id")
            or (a.get("appRoleId"), a.get("resourceId")) == (kit.get("appRoleId"), kit.get("resourceId"))
        ),
        None,
    )
    present = None if found is None else {k: found.get(k) for k in ("id", "principalId", "resourceId", "appRoleId")}
    write = (
        Write(
            "graph",
            "DELETE",
            f"/servicePrincipals/{sp['id']}/appRoleAssignments/{found['id']}",
            needs=NEEDS["admin consent"],
        )
        if sp and found
        else None
    )
    return _removal(made, present, write)


def diff_smtp_send_grant(made: Made, grants: list[dict[str, Any]]) -> Change:
    """The tenant-wide SMTP.Send grant: deleted when the kit made it; its old scope back when the kit only
    added SMTP.Send to it (and nobody changed it since)."""
    kit = made.after or {}
    tenant_wide = [g for g in grants if g.get("consentType") == "AllPrincipals"]
    found = next((g for g in tenant_wide if g.get("id") == kit.get("id")), None) or next(
        (g for g in tenant_wide if set(g.get("scope", "").split()) == set(str(kit.get("scope", "")).split())), None
    )
    present = None if found is None else {"id": found["id"], "scope": found.get("scope", "")}
    if made.created or made.undone or found is None:
        write = (
            Write("graph", "DELETE", f"/oauth2PermissionGrants/{found['id']}", needs=NEEDS["tenant-wide consent"])
            if found
            else None
        )
        return _removal(made, present, write)
    old = (made.before or {}).get("scope")
    if old is None:
        return unchanged(made.resource, made.name, "no record of its scope before the kit changed it: left", present)
    return Change(
        made.resource,
        made.name,
        "planned",
        f"restore the grant's scope to {old!r} (the kit added SMTP.Send to it)",
        present,
        {"scope": old},
        grant_scope_write(found["id"], old),
    )


def diff_service_principal(made: Made, sp: dict[str, Any] | None) -> Change:
    """The service principal, only when the kit created it and it is still the one the records name, marked."""
    present = None if sp is None else {"id": sp["id"], "appId": sp.get("appId")}
    why = mismatch(made, sp, ("id", "appId")) if sp is not None and not made.undone else ""
    if why:
        return refused(made, present or {}, why)
    write = Write("graph", "DELETE", f"/servicePrincipals/{sp['id']}", needs=NEEDS["application"]) if sp else None
    return _removal(made, present, write)


def diff_application(made: Made, app: dict[str, Any] | None) -> Change:
    """The application, only when the kit created it and it is still the one the records name (ID, client ID and
    key), marked as the kit's; one made by hand stays (without the kit's secrets)."""
    present = None if app is None else {k: app.get(k) for k in ("id", "appId", "uniqueName", "displayName")}
    why = mismatch(made, app, ("id", "appId", "uniqueName")) if app is not None and not made.undone else ""
    if why:
        return refused(made, present or {}, why)
    write = Write("graph", "DELETE", f"/applications/{app['id']}", needs=NEEDS["application"]) if app else None
    return _removal(
        made,
        present,
        write,
        "made by hand (the kit only updated it): left, without the secrets and consents the kit added",
    )


def diff_directory(proof: Proof, directory: Directory) -> list[Change]:
    """Every Entra ID item the records name, in the order they must go: secrets, consents, service principal,
    application. Consents live on the service principal: when it is refused, so are they."""
    sp = directory.sp
    sp_made = proof.find("service principal")
    sp_refused = mismatch(sp_made, sp, ("id", "appId")) if sp and sp_made and not sp_made.undone else ""

    def on_sp(made: Made, diff: Callable[[], Change]) -> Change:
        if not sp_refused or made.undone:
            return diff()
        return refused(made, {}, f"it is on a service principal that is not the one the records name ({sp_refused})")

    diffs: dict[str, Callable[[Made], Change]] = {
        "client secret": lambda m: diff_secret(m, directory.app),
        "admin consent": lambda m: on_sp(m, lambda: diff_mail_send(m, sp, directory.assignments)),
        "tenant-wide consent": lambda m: on_sp(m, lambda: diff_smtp_send_grant(m, directory.grants)),
        "service principal": lambda m: diff_service_principal(m, sp),
        "application": lambda m: diff_application(m, directory.app),
    }
    return [diffs[resource](m) for resource in ENTRA for m in proof.of(resource)]


NO_RECORD = "none: found by the kit's key and mark"


def unrecorded(proof: Proof, directory: Directory, key: str) -> list[Made]:
    """The kit's own application and service principal that no verified record names (a record lost, or a run
    that left none): found by the kit's key and the mark the kit puts on what it creates, offered for removal."""
    app, sp = directory.app, directory.sp
    if app is None or app.get("uniqueName") != key or KIT_TAG not in (app.get("tags") or []):
        return []
    found = []
    if not proof.of("application"):
        ids = {k: app.get(k) for k in ("id", "appId", "uniqueName")}
        found.append(Made("application", app["displayName"], True, None, ids, NO_RECORD))
    marked_sp = sp is not None and sp.get("appId") == app.get("appId") and KIT_TAG in (sp.get("tags") or [])
    if marked_sp and sp and not proof.of("service principal"):
        found.append(Made("service principal", app["displayName"], True, None, {"id": sp["id"]}, NO_RECORD))
    return found


def remove_directory(step: Step, proof: Proof) -> pd.DataFrame:
    """Read what Entra ID holds of what the kit made, then remove it (or, in a plan, say what would go). The kit's
    own objects that no record names are found by its key and mark, and removed too."""
    if WORLDS[step.params.mode] is None:  # a replay: no tenant was changed, and none is read
        return changes_frame([])
    directory = read_directory(step, proof)
    extra = unrecorded(proof, directory, step.params.application.key)
    if extra:
        proof.made.extend(extra)
        proof.notes.append(
            "Found by the kit's key and mark, with no verified record of their creation: "
            + ", ".join(f"{m.resource} {m.name}" for m in extra)
            + ". They are the kit's, so the teardown removes them too."
        )
    applied = [step.executor.apply(change)[0] for change in diff_directory(proof, directory)]
    return changes_frame(applied)


# --- Exchange Online: RBAC, the outbound spam rule and policy, the mailbox ---------------------------------


@dataclass(frozen=True)
class ExchangeItem:
    """How one kind of Exchange object is read, restored or removed (knowledge as data)."""

    get: str
    fields: tuple[str, ...] = ()
    set: str = ""  # restores what the kit changed
    remove: str = ""  # removes what the kit created
    switch: str = ""  # what the script adds to Remove-* so it does not prompt
    current: Callable[[MailboxState], dict[str, Any] | None] = lambda state: None
    identity: str = ""  # the object's identity, when not the change's name
    identity_field: str = ""  # or the field of the kit's value that holds it

    def identity_of(self, made: Made) -> str:
        if self.identity_field:
            return str((made.after or {}).get(self.identity_field) or made.name)
        return self.identity or made.name


def _policy(state: MailboxState) -> dict[str, Any] | None:
    return None if state.policy is None else {"AutoForwardingMode": state.policy.get("AutoForwardingMode")}


def _rule(state: MailboxState) -> dict[str, Any] | None:
    return None if state.rule is None else {"From": list(state.rule.get("From") or [])}


#: in the order they go: the rule before its policy, the Default policy's mode, then the mailbox's settings
EXCHANGE: dict[str, ExchangeItem] = {
    "outbound spam rule": ExchangeItem(
        "Get-HostedOutboundSpamFilterRule",
        ("From",),
        "Set-HostedOutboundSpamFilterRule",
        "Remove-HostedOutboundSpamFilterRule",
        "-Confirm:$false",
        _rule,
    ),
    "outbound spam policy": ExchangeItem(
        "Get-HostedOutboundSpamFilterPolicy",
        ("AutoForwardingMode",),
        "Set-HostedOutboundSpamFilterPolicy",
        "Remove-HostedOutboundSpamFilterPolicy",
        "-Force",
        _policy,
    ),
    "external forwarding": ExchangeItem(
        "Get-HostedOutboundSpamFilterPolicy",
        ("AutoForwardingMode",),
        "Set-HostedOutboundSpamFilterPolicy",
        current=lambda s: {"AutoForwardingMode": s.default_mode},
        identity="Default",
    ),
    "mailbox forwarding": ExchangeItem(
        "Get-Mailbox",
        ("ForwardingSmtpAddress", "DeliverToMailboxAndForward"),
        "Set-Mailbox",
        current=lambda s: {"ForwardingSmtpAddress": s.forwarding, "DeliverToMailboxAndForward": s.keep_copy},
    ),
    "authenticated SMTP": ExchangeItem(
        "Get-CASMailbox",
        ("SmtpClientAuthenticationDisabled",),
        "Set-CASMailbox",
        current=lambda s: {"SmtpClientAuthenticationDisabled": s.smtp_auth_disabled},
    ),
}
#: ``application.mail_send: scoped``: Exchange RBAC for Applications (:mod:`runbook_lib.tenant.rbac`), in the order they
#: go: the role assignment, its scope, then Exchange's pointer to the service principal (by its client ID)
RBAC: dict[str, ExchangeItem] = {
    rbac.ASSIGNMENT: ExchangeItem(
        "Get-ManagementRoleAssignment", remove="Remove-ManagementRoleAssignment", switch="-Confirm:$false"
    ),
    rbac.SCOPE: ExchangeItem("Get-ManagementScope", remove="Remove-ManagementScope", switch="-Confirm:$false"),
    rbac.POINTER: ExchangeItem(
        "Get-ServicePrincipal", remove="Remove-ServicePrincipal", switch="-Confirm:$false", identity_field="AppId"
    ),
}


def _norm(value: Any) -> Any:
    """Values as Exchange compares them: addresses without ``smtp:`` and case, lists in any order."""
    if isinstance(value, str):
        return value.lower().removeprefix("smtp:")
    if isinstance(value, list):
        return sorted(_norm(v) for v in value)
    return value


def _same(a: dict[str, Any], b: dict[str, Any], fields: tuple[str, ...]) -> bool:
    return all(_norm(a.get(f)) == _norm(b.get(f)) for f in fields)


def diff_restore(made: Made, current: dict[str, Any] | None, item: ExchangeItem, adminapi: bool) -> Change:
    """Set back the value recorded before the kit changed it, while the value is still the kit's. Without
    ``current`` (PowerShell mode) the change is planned and the script checks the value itself."""
    before = made.before or {}
    if made.undone:
        return _undone(made, current)
    if not all(f in before for f in item.fields):
        return unchanged(made.resource, made.name, "no record says its value before the kit changed it: left", current)
    wanted = {f: before[f] for f in item.fields}
    if adminapi:
        if current is None:
            return unchanged(made.resource, made.name, "gone: nothing to restore")
        if _same(current, wanted, item.fields):
            return unchanged(made.resource, made.name, "as it was before the kit changed it", current)
        if not _same(current, made.after or {}, item.fields):
            return unchanged(made.resource, made.name, "changed outside the kit since: left as it is", current)
    identity = item.identity_of(made)
    return Change(
        made.resource,
        made.name,
        "planned",
        "restore the value it had before the kit changed it",
        current,
        wanted,
        cmdlet_write(item.set, {"Identity": identity, **wanted}) if adminapi else None,
    )


def diff_exchange_removal(made: Made, current: dict[str, Any] | None, item: ExchangeItem, adminapi: bool) -> Change:
    """An Exchange object the kit created; the Default policy never."""
    if made.name.lower() == "default":
        return unchanged(made.resource, made.name, "the Default policy is never removed", current)
    if not adminapi and not made.undone:  # the script reads it and removes it when present
        return Change(
            made.resource,
            made.name,
            "planned",
            "remove what the kit created (the script checks first)",
            None,
            None,
            outcome="removed",
        )
    write = cmdlet_write(item.remove, {"Identity": item.identity_of(made)})
    return _removal(made, current, write)


def diff_exchange_item(made: Made, item: ExchangeItem, current: dict[str, Any] | None, adminapi: bool) -> Change:
    """Remove what the kit created (when the kind can be removed), restore what it changed."""
    if made.created and item.remove:
        return diff_exchange_removal(made, current, item, adminapi)
    return diff_restore(made, current, item, adminapi)


def exchange_items(proof: Proof) -> list[tuple[Made, ExchangeItem]]:
    """Every Exchange item the records name, in the order they go: RBAC, the rule, the policy, the mailbox."""
    return [(m, item) for items in (RBAC, EXCHANGE) for resource, item in items.items() for m in proof.of(resource)]


def _exchange_find(step: Step, cmdlet: str, identity: str) -> dict[str, Any] | None:
    """One object by identity, or None when Exchange answers it does not exist."""
    answer = step.exchange.request(
        "POST", "/InvokeCommand", body=cmdlet_body(cmdlet, {"Identity": identity}), idempotent=True, missing_ok=True
    )
    return next(iter((answer or {}).get("value", [])), None)


def _current(step: Step, made: Made, item: ExchangeItem, state: MailboxState | None) -> dict[str, Any] | None:
    if state is None:  # PowerShell mode: the script reads it
        return None
    if made.resource in RBAC:
        identity = item.identity_of(made)
        return {"Identity": identity} if _exchange_find(step, item.get, identity) else None
    return item.current(state)


def _check_names(step: Step, proof: Proof) -> None:
    """The admin API reads the mailbox and policy the parameters name: they must be those the kit changed."""
    p = step.params
    expected = {
        "outbound spam rule": ("mailbox.forwarding_policy", p.mailbox.forwarding_policy),
        "outbound spam policy": ("mailbox.forwarding_policy", p.mailbox.forwarding_policy),
        "mailbox forwarding": ("webex.email_id", p.webex.email_id),
        "authenticated SMTP": ("webex.email_id", p.webex.email_id),
    }
    for made in proof.of(*expected):
        field, value = expected[made.resource]
        if made.name.lower() != value.lower():
            raise StepFailed(
                f"the records show the kit changed {made.resource} {made.name!r}, but {field} is {value!r}",
                fix=f"set {field} to {made.name!r}, as when step 3 changed it, and run the teardown again",
                step=STEP,
            )


def restore_exchange(step: Step, proof: Proof) -> pd.DataFrame:
    """Remove the RBAC objects, the rule and the policy the kit created and restore the mailbox, through the
    admin API, or in a PowerShell script kept with the record."""
    items = exchange_items(proof)
    if not items:
        return changes_frame([])
    adminapi = step.params.mailbox.apply_with == "adminapi"
    state = None
    if adminapi:
        _check_names(step, proof)
        state = read_state(step) if proof.of(*EXCHANGE) else None
    done: list[tuple[Made, ExchangeItem, Change]] = []
    for made, item in items:
        change = diff_exchange_item(made, item, _current(step, made, item, state), adminapi)
        try:
            done.append((made, item, step.executor.apply(change)[0]))
        except GraphError as error:
            cmdlet = change.write.body["CmdletInput"]["CmdletName"] if change.write else made.resource
            raise admin_error(cmdlet, error) from error
    if not adminapi:
        step.artifact(SCRIPT_NAME, script(step, done))
    return changes_frame([change for _, _, change in done])


# --- the PowerShell script ---------------------------------------------------------------------------------


def _ps(value: Any) -> str:
    """A PowerShell literal."""
    if value is None:
        return "$null"
    if isinstance(value, bool):
        return powershell.boolean(value)
    if isinstance(value, list):
        return "@(" + ", ".join(_ps(v) for v in value) + ")"
    return powershell.quote(str(value))


def _still(field: str, value: Any) -> str:
    """A PowerShell test that ``$now.<field>`` still holds ``value`` (the kit's)."""
    if isinstance(value, list):
        joined = ";".join(sorted(str(v) for v in value))
        return f"((@($now.{field}) | Sort-Object) -join ';') -eq {powershell.quote(joined)}"
    return f"$null -eq $now.{field}" if value is None else f"$now.{field} -eq {_ps(value)}"


def _section(number: int, made: Made, item: ExchangeItem, change: Change) -> str:
    identity = powershell.quote(item.identity_of(made))
    label = powershell.quote(f"{made.resource} {made.name}")
    lines = [
        f"\n# {number}. {made.resource}: {made.name}: {change.summary}",
        f"$now = {item.get} -Identity {identity} -ErrorAction SilentlyContinue",
    ]
    if change.outcome == "removed":
        lines += [
            f"if ($now) {{ {item.remove} -Identity {identity} {item.switch}; Write-Host ({label} + ': removed') }}",
            f"else {{ Write-Host ({label} + ': gone already') }}",
        ]
    else:
        guard = " -and ".join(_still(f, (made.after or {}).get(f)) for f in item.fields)
        values = " ".join(f"-{f} {_ps((change.after or {}).get(f))}" for f in item.fields)
        lines += [
            f"if ($now -and {guard}) {{",
            f"    {item.set} -Identity {identity} {values}",
            f"    Write-Host ({label} + ': restored')",
            f"}} else {{ Write-Host ({label} + ': not as the kit left it (changed since, or gone): left as it is') }}",
        ]
    return "\n".join(lines) + "\n"


def script(step: Step, done: list[tuple[Made, ExchangeItem, Change]]) -> str:
    """The Exchange Online PowerShell script of a teardown: each planned item read again, then changed."""
    planned = [(made, item, change) for made, item, change in done if change.action == "planned"]
    sections = [_section(n, *entry) for n, entry in enumerate(planned, start=1)]
    head = (
        "# Webex Connect Email app, teardown: what the kit created in Exchange Online, removed; what it changed, "
        f"restored.\n# Tenant {step.params.tenant}. Written by the runbook kit {__version__} on "
        f"{step.clock.now().date().isoformat()}.\n# Safe to run more than once: each item is read first and "
        "changed only while it is as the kit left it.\n#Requires -Modules ExchangeOnlineManagement\n"
        "$ErrorActionPreference = 'Stop'\nConnect-ExchangeOnline -ShowBanner:$false\n"
    )
    body = "".join(sections) or "\n# Nothing to do: every item is gone, or as it was before the kit.\n"
    return head + body + "\nDisconnect-ExchangeOnline -Confirm:$false\n"


def script_view(step: Step) -> Any:
    """The script, in PowerShell mode; otherwise a sentence saying why there is none."""
    from IPython.display import Markdown

    if SCRIPT_NAME in step.result.artifacts:
        return step.view(SCRIPT_NAME)
    return Markdown("No script: the admin API made the Exchange changes, or there were none to make.")


# --- the summary --------------------------------------------------------------------------------------------


NEVER = (
    "Never removed: anything no record shows the kit created (an application made by hand, other outbound spam "
    "policies and rules, the Default policy), the consents the mailbox user gave at Generate Token (they go with "
    "the service principal), Webex Connect's own email asset, and the value in the secret store (delete it: the "
    "secret it holds is removed)."
)


def _outcome(change: Change, plan: bool) -> str:
    if change.action != "planned":
        return {"removed": "removed", "updated": "restored"}.get(change.action, change.summary)
    verb = "removed" if change.outcome == "removed" else "restored"
    return f"would be {verb}" if plan else f"{verb} by the PowerShell script, once run"


def summary(step: Step, proof: Proof) -> pd.DataFrame:
    """What happened to each item, in plain words, and what the teardown never touches."""
    plan = step.executor.plan_only
    changes = step.result.changes
    done = sum(c.action in CHANGED for c in changes)
    planned = sum(c.action == "planned" for c in changes)
    if not proof.made:
        print("Nothing to remove: no record proves the kit made anything here (see above).")
    elif plan:
        print(f"Plan: {planned} item(s) would be removed or restored; nothing was changed.")
    else:
        print(
            f"{done} item(s) removed or restored" + (f"; {planned} left to the PowerShell script." if planned else ".")
        )
    for note in proof.notes:
        print(note)
    if proof.made:
        print(NEVER)
    rows = [{"resource": c.resource, "name": c.name, "outcome": _outcome(c, plan)} for c in changes]
    return pd.DataFrame(rows, columns=["resource", "name", "outcome"])
