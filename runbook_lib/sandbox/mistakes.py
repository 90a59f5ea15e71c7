"""The classic mistakes a trainer injects into a trainee's sandbox tenant (``runbook sandbox break``).

Each is described in ``data/faults.yaml`` (what it breaks, what the trainee sees, the codes verify reports
for it and troubleshooting explains, the notebook that repairs it) and implemented here, on the tenant's
state as Microsoft keeps it, so the trainee meets the answer Entra ID, Graph, Exchange or SMTP really gives
and the kit's own checks find it. Each says how it is injected, whether it is still in effect (the
trainer's ``runbook sandbox status``) and, for a fix the kit does not make (an administrator's click in a
portal), how the sandbox makes that fix (``runbook sandbox repair``).

The descriptions are read without building a simulated tenant, so the command line lists them cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib.resources import files
from typing import Any

from ..config import registry, strict_yaml
from ..errors import RunbookError
from . import state
from .messages import iso, parse_iso
from .state import TraineeTenant

DATA_FILE = "data/faults.yaml"
FIELDS = ("breaks", "sees", "codes", "notebook")
#: the app role an assignment gives when the application defines none ("Default Access")
DEFAULT_ACCESS = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Description:
    """What a fault breaks and how a trainee meets it, from ``data/faults.yaml``."""

    name: str
    breaks: str
    sees: str
    codes: tuple[str, ...]
    notebook: str
    portal: str = ""  # where an administrator fixes it, when the kit does not

    @property
    def fixed_by(self) -> str:
        if self.portal:
            return (
                f"an administrator, in the portal: {self.portal} (in the sandbox: `runbook sandbox repair "
                f"TRAINEE.yaml {self.name}`); then notebook {self.notebook} confirms it"
            )
        return f"notebook {self.notebook}, run again"

    def text(self) -> str:
        """The fault in a few lines, for ``runbook sandbox break --list``."""
        return "\n".join(
            [
                self.name,
                f"  breaks:   {self.breaks}",
                f"  sees:     {self.sees}",
                f"  codes:    {', '.join(self.codes)} (verify reports them; troubleshooting, 06, explains them)",
                f"  fixed by: {self.fixed_by}",
            ]
        )


def _description(name: str, row: Any) -> Description:
    problems = (
        ["must be a mapping"]
        if not isinstance(row, dict)
        else [f"no {key}" for key in FIELDS if not row.get(key)]
        + [f"unknown key {key!r}" for key in row if key not in (*FIELDS, "portal")]
        + ([] if isinstance(row.get("codes", []), list) else ["codes must be a list"])
    )
    if not problems and row["notebook"] not in registry.NAMES:
        problems.append(f"notebook {row['notebook']!r} is not a step")
    if problems:
        raise RunbookError(f"{DATA_FILE}: fault {name}: {'; '.join(problems)}", fix="correct the kit's fault list")
    return Description(
        name, row["breaks"], row["sees"], tuple(map(str, row["codes"])), row["notebook"], row.get("portal", "")
    )


@cache
def catalogue() -> dict[str, Description]:
    """Every fault's description, in the file's order."""
    data = strict_yaml.load_text(files("runbook_lib").joinpath(DATA_FILE).read_text(encoding="utf-8"), DATA_FILE)
    return {str(name): _description(str(name), row) for name, row in data.items()}


def listing() -> str:
    """Every fault described, for ``runbook sandbox break --list``."""
    return "\n\n".join(d.text() for d in catalogue().values())


@dataclass(frozen=True)
class Mistake:
    """A fault as the sandbox makes it: ``inject`` returns what it did; ``in_effect`` is None when it cannot
    tell; ``repair`` is the portal fix, for a fault the kit does not repair."""

    name: str
    inject: Callable[[TraineeTenant], str]
    in_effect: Callable[[TraineeTenant], bool | None]
    repair: Callable[[TraineeTenant], str] | None = None

    @property
    def describe(self) -> Description:
        return catalogue()[self.name]


# --- what the faults act on ----------------------------------------------------------------------------


def _app(t: TraineeTenant) -> dict[str, Any]:
    app = t.trainee_app
    if app is None:
        raise RunbookError("the trainee's tenant has no application yet", fix="run notebook 02 first")
    return app


def _sp(t: TraineeTenant) -> dict[str, Any]:
    sp = t.trainee_sp
    if sp is None:
        raise RunbookError("the trainee's application has no service principal yet", fix="run notebook 02 first")
    return sp


def _assigned(t: TraineeTenant, user: dict[str, Any], sp: dict[str, Any]) -> bool:
    """Whether the user is assigned to the application (Enterprise applications > Users and groups)."""
    return any(a["principalId"] == user["id"] and a["resourceId"] == sp["id"] for a in t.assignments)


# --- the application (step 2) --------------------------------------------------------------------------


def _redirect_uri_typo(t: TraineeTenant) -> str:
    app = _app(t)
    uris = app["web"]["redirectUris"]
    good = next(u for u in uris if u.endswith("/callback"))
    bad = good[:-1] + "c"  # one character off: .../callbacc
    app["web"]["redirectUris"] = [bad if u == good else u for u in uris]
    return f"redirect URI {good} is now {bad}"


def _redirect_uri_wrong(t: TraineeTenant) -> bool:
    app = t.trainee_app
    return app is None or not any(u.endswith("/callback") for u in app["web"]["redirectUris"])


def _consent_missing(t: TraineeTenant) -> str:
    sp = _sp(t)
    t.assignments = [a for a in t.assignments if a["principalId"] != sp["id"]]
    return "admin consent for Mail.Send revoked"


def mail_send_missing(t: TraineeTenant) -> bool:
    sp, exchange = t.trainee_sp, t.exchange_sp
    if sp is None or exchange is None:
        return True
    role = t.permission_id("Mail.Send", "Role")
    return not any(a["principalId"] == sp["id"] and a["appRoleId"] == role for a in t.assignments)


def _secret_expired(t: TraineeTenant) -> str:
    yesterday = iso(t.now() - timedelta(days=1))
    for cred in _app(t)["passwordCredentials"]:
        cred["endDateTime"] = yesterday
    return "every client secret expired yesterday"


def _no_valid_secret(t: TraineeTenant) -> bool:
    app = t.trainee_app
    creds = app["passwordCredentials"] if app else []
    return not any(parse_iso(c["endDateTime"]) > t.now() for c in creds)


def _secret_id_pasted(t: TraineeTenant) -> str:
    from ..config import secrets
    from ..config.params import SecretRef

    creds = _app(t)["passwordCredentials"]
    if not creds or not t.store:
        raise RunbookError("the application has no secret in a known store yet", fix="run notebook 02 first")
    secrets.write(SecretRef(**t.store), creds[-1]["keyId"])
    return f"the secret store now holds the Secret ID {creds[-1]['keyId']} instead of the Value"


def _stored(t: TraineeTenant) -> str | None:
    """The value in the trainee's secret store, to compare and never to show; None when this account cannot
    read it (another account's file, an environment variable of the trainee's session)."""
    from ..config import secrets
    from ..config.params import SecretRef

    try:
        return secrets.read(SecretRef(**t.store)) if t.store else None
    except (RunbookError, OSError):
        return None


def _store_holds_an_id(t: TraineeTenant) -> bool | None:
    stored, app = _stored(t), t.trainee_app
    if stored is None or app is None:
        return None
    return stored.strip() in {c["keyId"] for c in app["passwordCredentials"]}


def _secret_deleted(t: TraineeTenant) -> str:
    app = _app(t)
    for cred in app["passwordCredentials"]:
        t.secret_values.pop(cred["keyId"], None)
    app["passwordCredentials"] = []
    return "every client secret of the application deleted (Certificates & secrets > Delete)"


def _store_matches_no_secret(t: TraineeTenant) -> bool | None:
    stored, app = _stored(t), t.trainee_app
    if stored is None or app is None:
        return None
    return stored not in {t.secret_values.get(c["keyId"]) for c in app["passwordCredentials"]}


# --- the mailbox (step 3) ------------------------------------------------------------------------------


def _smtp_auth_disabled(t: TraineeTenant) -> str:
    for user in t.users.values():
        user["SmtpClientAuthenticationDisabled"] = True
    return "authenticated SMTP turned off for the mailbox"


def _smtp_auth_off(t: TraineeTenant) -> bool:
    return t.mailbox_user["SmtpClientAuthenticationDisabled"] is True


def _forwarding_blocked(t: TraineeTenant) -> str:
    t.outbound_rules = []
    t.outbound_policies = [p for p in t.outbound_policies if p.get("IsDefault")]
    for policy in t.outbound_policies:
        policy["AutoForwardingMode"] = "Automatic"
    return "external forwarding blocked again (dedicated policy and rule removed)"


def forwarding_refused(t: TraineeTenant) -> bool:
    """No outbound spam policy lets the mailbox forward outside: not the Default, not one whose rule names it."""
    allowing = {p["Name"].lower(): p for p in t.outbound_policies if p.get("AutoForwardingMode") == "On"}
    if any(p.get("IsDefault") for p in allowing.values()):
        return False
    user = t.mailbox_user
    sender = {str(user["mail"]).lower(), user["userPrincipalName"].lower()}
    return not any(
        str(rule.get("HostedOutboundSpamFilterPolicy", "")).lower() in allowing
        and sender & {str(f).lower() for f in rule.get("From") or []}
        for rule in t.outbound_rules
    )


# --- the tenant's own settings: consent, the account, assignment, security defaults ---------------------


def _user_consent_disabled(t: TraineeTenant) -> str:
    t.seed["user_consent"] = "off"
    return "user consent turned off in the tenant"


def smtp_send_consented(t: TraineeTenant) -> bool:
    """Whether SMTP.Send is consented for the mailbox user: tenant-wide, or by the user at their sign-in."""
    sp, user = t.trainee_sp, t.mailbox_user
    return sp is not None and any(
        g["clientId"] == sp["id"]
        and "SMTP.Send" in g["scope"].split()
        and (g["consentType"] == "AllPrincipals" or g.get("principalId") == user["id"])
        for g in t.grants
    )


def _consent_blocked(t: TraineeTenant) -> bool:
    return t.seed.get("user_consent") == "off" and not smtp_send_consented(t)


def _disable_mailbox_user(t: TraineeTenant) -> str:
    user = t.mailbox_user
    user["accountEnabled"] = False
    return f"the account {user['userPrincipalName']} is disabled: it can no longer sign in"


def _mailbox_user_disabled(t: TraineeTenant) -> bool:
    return not t.mailbox_user["accountEnabled"]


def _enable_mailbox_user(t: TraineeTenant) -> str:
    user = t.mailbox_user
    user["accountEnabled"] = True
    return f"sign-in unblocked for {user['userPrincipalName']} (Microsoft 365 admin center > Users)"


def _require_assignment(t: TraineeTenant) -> str:
    sp, user = _sp(t), t.mailbox_user
    sp["appRoleAssignmentRequired"] = True
    t.assignments = [a for a in t.assignments if not (a["principalId"] == user["id"] and a["resourceId"] == sp["id"])]
    return (
        f"the application {sp['displayName']} now requires user assignment, and {user['userPrincipalName']} "
        "is not assigned"
    )


def _user_not_assigned(t: TraineeTenant) -> bool:
    sp = t.trainee_sp
    return sp is not None and bool(sp.get("appRoleAssignmentRequired")) and not _assigned(t, t.mailbox_user, sp)


def _assign_mailbox_user(t: TraineeTenant) -> str:
    sp, user = _sp(t), t.mailbox_user
    if not _assigned(t, user, sp):
        assignment = t.assignment(user["id"], DEFAULT_ACCESS)  # Graph's shape; the resource is this application
        assignment.update(principalType="User", resourceId=sp["id"], resourceDisplayName=sp["displayName"])
        t.assignments.append(assignment)
    return (
        f"{user['userPrincipalName']} assigned to the application {sp['displayName']} "
        "(Enterprise applications > Users and groups)"
    )


def _security_defaults_on(t: TraineeTenant) -> str:
    t.seed["security_defaults"] = True
    return "security defaults turned on for the tenant"


def _security_defaults_enabled(t: TraineeTenant) -> bool:
    return bool(t.seed.get("security_defaults"))


def _security_defaults_off(t: TraineeTenant) -> str:
    t.seed["security_defaults"] = False
    return "security defaults turned off (Microsoft Entra admin center > Overview > Properties)"


#: every fault by name, the same names as data/faults.yaml (a test checks)
FAULTS: dict[str, Mistake] = {
    m.name: m
    for m in (
        Mistake("redirect-uri-typo", _redirect_uri_typo, _redirect_uri_wrong),
        Mistake("consent-missing", _consent_missing, mail_send_missing),
        Mistake("secret-expired", _secret_expired, _no_valid_secret),
        Mistake("secret-id-pasted", _secret_id_pasted, _store_holds_an_id),
        Mistake("secret-deleted", _secret_deleted, _store_matches_no_secret),
        Mistake("smtp-auth-disabled", _smtp_auth_disabled, _smtp_auth_off),
        Mistake("forwarding-blocked", _forwarding_blocked, forwarding_refused),
        Mistake("user-consent-disabled", _user_consent_disabled, _consent_blocked),
        Mistake("mailbox-user-disabled", _disable_mailbox_user, _mailbox_user_disabled, _enable_mailbox_user),
        Mistake("user-not-assigned", _require_assignment, _user_not_assigned, _assign_mailbox_user),
        Mistake("security-defaults-on", _security_defaults_on, _security_defaults_enabled, _security_defaults_off),
    )
}


def _existing(tenant: str) -> TraineeTenant:
    if not state.state_file(tenant).exists():
        raise RunbookError(f"tenant {tenant} has no sandbox yet", fix="run its notebooks in sandbox mode first")
    return state.read(state.state_file(tenant))


def break_tenant(tenant: str, fault: str) -> str:
    """Inject one classic mistake into the trainee's tenant, remembering which and when; returns what was done."""
    with state.locked(tenant, holder=f"sandbox break {fault}"):
        simulated = _existing(tenant)
        done = FAULTS[fault].inject(simulated)
        simulated.injected.append({"fault": fault, "at": iso(simulated.now())})
        state.save(tenant, simulated)
    return done


def repair_tenant(tenant: str, fault: str) -> str:
    """Make the fix of a fault that an administrator makes in a portal (the kit does not); returns what was done."""
    repair = FAULTS[fault].repair
    if repair is None:
        raise RunbookError(
            f"the kit repairs {fault} itself: no portal fix to make",
            fix=f"run notebook {FAULTS[fault].describe.notebook} again (`runbook sandbox break --list` says how)",
        )
    with state.locked(tenant, holder=f"sandbox repair {fault}"):
        simulated = _existing(tenant)
        done = repair(simulated)
        state.save(tenant, simulated)
    return done
