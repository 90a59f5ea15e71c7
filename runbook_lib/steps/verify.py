"""Step 5: prove it works. Every check gives a verdict, ``pass``, ``warn``, ``fail`` or ``not tested``, with
the fix; a check that did not run is never a pass.

* drift: step 2's and step 3's diff functions on the state read now (verify has no executor: nothing can
  be written); anything that would change is drift;
* the client secret: the store's value among the application's secrets (a Secret ID pasted as the value, a
  secret removed or rotated away, one that expires soon or has expired are told apart);
* the app-only token Webex Connect's application gets with the stored secret: its claims (aud, tid, appid,
  roles) must name this tenant, and carry Mail.Send as ``application.mail_send`` says: with ``tenant``
  they must, with ``scoped`` they must not (tenant-wide Mail.Send would make Exchange's scope moot), with
  ``none`` they need not (a warning when they do: more than needed). A brand-new secret or consent can take
  minutes to reach the token endpoint, so for those (only) it waits, within
  ``network.propagation_wait_seconds``, saying so;
* ``scoped``: Exchange's RBAC for Applications objects as step 3 makes them, and Exchange's own test
  (``Test-ServicePrincipalAuthorization``) that the mailbox is in scope (admin API only; the step 3 script
  tests it otherwise);
* the tenant-wide SMTP AUTH setting (``Get-TransportConfig``) and what it means for this mailbox, whose
  own setting wins (``$null`` on the mailbox follows the tenant). It is not the Basic authentication that
  Exchange Online turns off by default at the end of December 2026: OAuth, what Webex Connect uses here,
  goes on through SMTP AUTH;
* SMTP: STARTTLS on the submission port and AUTH XOAUTH2 offered; with ``verify.mailbox_sign_in`` the
  mailbox account signs in through the application itself (device code) and AUTH XOAUTH2 must succeed;
* the authorize URL Webex Connect's Generate Token opens; with ``verify.probe_authorize_url`` it is
  requested (without signing in) to catch AADSTS50011 / AADSTS700016 before the operator tries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import msal
import pandas as pd

from ..config import client_secrets, registry, secrets
from ..config.params import GUID_RE
from ..context.checks import Checks
from ..engine.changes import Change
from ..engine.results import Check, SecretFacts, Verdict
from ..errors import AuthError, StepFailed
from ..tenant import blockers, entra, exchange, rbac, smtp
from ..wire import auth
from . import diagnose

if TYPE_CHECKING:
    from ..context.step import Step

STEP = registry.VERIFY


@dataclass(frozen=True)
class Directory:
    """What verify reads of Entra ID once, for every later check: the application, its service principal, the
    permissions looked up by name, and the service principal's delegated grants."""

    app: dict[str, Any] | None
    sp: dict[str, Any] | None
    perms: entra.Permissions
    grants: list[dict[str, Any]]


def application_drift(step: Step, checks: Checks) -> Directory:
    """Step 2's desired state against the tenant now; returns what it read, for the later checks."""
    perms = entra.permissions(step)
    app = entra.find_application(step)
    desired = entra.desired_application(step, perms)
    app_change = entra.diff_application(app, desired)
    sp = entra.find_service_principal(step, app, app_change)
    sp_id = sp["id"] if sp else None
    consent_change = entra.diff_mail_send_consent(
        sp_id, entra.role_assignments(step, sp_id), perms, wanted_granted=entra.tenant_wide_mail_send(step)
    )
    changes = [app_change, entra.diff_service_principal(app, sp, step.params.application.display_name), consent_change]
    grants = entra.delegated_grants(step, sp)
    if step.params.consent == "admin":
        changes += entra.diff_delegated_consent(sp_id, grants, perms)
    more_than_needed = []
    if step.params.application.mail_send == "none":  # Mail.Send left in place is more than needed, not wrong
        more_than_needed.append(consent_change)
        if entra.diff_application(app, replace(desired, absent=())).action == "unchanged":
            more_than_needed.append(app_change)
    checks.drift([c for c in changes if c not in more_than_needed], "application_drift")
    checks.drift(more_than_needed, "mail_send_more_than_needed", differs="warn")
    return Directory(app, sp, perms, grants)


def mailbox_user_grants(step: Step, grants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grants that count for the mailbox user's sign-in: an administrator's, for every user, or their own."""
    user_id = (step.facts.mailbox_user or {}).get("id")
    return [g for g in grants if g.get("consentType") == "AllPrincipals" or g.get("principalId") == user_id]


def describe_grant(grant: dict[str, Any]) -> str:
    who = "an administrator, for every user" if grant.get("consentType") == "AllPrincipals" else "the mailbox user"
    return f"consented by {who} (grant {grant.get('id')}, scope {grant.get('scope')})"


def consent(step: Step, checks: Checks, directory: Directory) -> None:
    """Consent as it is, for each delegated permission of the Scope Webex Connect's Generate Token sends
    (offline_access on Microsoft Graph, SMTP.Send on Exchange Online): consented for the mailbox user (their own
    grant or an administrator's)? If not yet, whether the policy will let the user consent at Generate Token."""
    grants = mailbox_user_grants(step, directory.grants)
    scope = step.endpoints.generate_token_scope
    policy: entra.UserConsent | None = None
    for permission in directory.perms.delegated:
        name = f"{permission.value} consent"
        covering = [
            g
            for g in grants
            if g.get("resourceId") == permission.sp_id and permission.value in str(g.get("scope")).split()
        ]
        if covering:
            checks.add(name, "pass", "; ".join(describe_grant(g) for g in covering))
            continue
        policy = policy or entra.user_consent(step)
        asked = f"Generate Token asks for it ({permission.resource}; Scope: {scope})"
        if policy.mailbox_user_can_consent is False:
            checks.add(name, "fail", f"not consented; {asked}, and {policy.explanation}", code="user_consent_off")
        elif policy.mailbox_user_can_consent is None:
            checks.add(name, "warn", f"not consented yet; {asked}, and {policy.explanation}", code="user_consent_off")
        else:
            checks.add(
                name,
                "warn",
                f"not consented yet: {asked}, and the mailbox user consents to it there (the policy lets users "
                "consent to any app); until then Webex Connect has no token",
                code="consent_pending",
            )


def mailbox_drift(step: Step, checks: Checks) -> exchange.MailboxState | None:
    """Step 3's settings, read back when the admin API is in use (returned, for the later checks); otherwise
    not tested here."""
    if step.params.mailbox.apply_with != "adminapi":
        checks.add(
            "mailbox settings",
            "not tested",
            "not read: mailbox.apply_with is powershell, so the kit cannot "
            "read them; the step 3 script checks each setting when it runs",
            code="mailbox_not_read",
        )
        return None
    state = exchange.read_state(step)
    for change in exchange.diff_mailbox(state, exchange.settings(step)):
        ok = change.action == "unchanged"
        checks.add(
            f"{change.resource}: {change.name}",
            "pass" if ok else "fail",
            change.summary if ok else f"drift: {change.summary}",
            code=f"mailbox_{exchange.SECTIONS[change.resource]}",
        )
    return state


#: the Basic-auth deadline in a sentence: what the tenant-wide SMTP AUTH check adds to every verdict
BASIC_AUTH_DEADLINE = (
    "Exchange Online turns Basic authentication for SMTP AUTH off by default at the end of December 2026; "
    "OAuth, which Webex Connect uses here, goes on working through SMTP AUTH"
)


def smtp_auth_meaning(mailbox: bool | None, tenant: bool | None) -> tuple[Verdict, str]:
    """What the tenant-wide ``SmtpClientAuthenticationDisabled`` means for this mailbox, whose own setting wins
    (``None`` on the mailbox follows the tenant): the verdict and why. Only the mailbox's own "on" passes; when
    SMTP AUTH is off for the mailbox, the check of step 3's setting fails already, so this one warns."""
    said = {True: "off", False: "on", None: "not readable"}[tenant]
    if mailbox is False:
        return "pass", f"tenant-wide SMTP AUTH is {said}; the mailbox's own setting (on) wins over it"
    if mailbox is True:
        return "warn", f"tenant-wide SMTP AUTH is {said}, and the mailbox's own setting turns it off for this mailbox"
    if tenant is False:
        return "warn", (
            "the mailbox follows the tenant-wide setting, which is on today: an administrator turning SMTP AUTH off "
            "tenant-wide would stop Webex Connect; step 3 sets the mailbox's own setting"
        )
    if tenant is True:
        return "warn", "the mailbox follows the tenant-wide setting, which turns SMTP AUTH off for it"
    return "warn", "the mailbox follows the tenant-wide setting, which could not be read"


def tenant_smtp_auth(checks: Checks, state: exchange.MailboxState | None) -> None:
    """The tenant-wide SMTP AUTH setting, read with the mailbox's (admin API); the step 3 script reports it."""
    if state is None:
        checks.add(
            "SMTP AUTH, tenant-wide",
            "not tested",
            "not read: mailbox.apply_with is powershell; the step 3 script reports it (Get-TransportConfig). "
            + BASIC_AUTH_DEADLINE,
            code="tenant_smtp_auth",
        )
        return
    verdict, meaning = smtp_auth_meaning(state.smtp_auth_disabled, state.tenant_smtp_auth_disabled)
    checks.add("SMTP AUTH, tenant-wide", verdict, f"{meaning}. {BASIC_AUTH_DEADLINE}", code="tenant_smtp_auth")


#: application.mail_send -> the rule for Mail.Send in the app-only token's roles: (verdict with it, without it)
ROLE_RULES: dict[str, tuple[tuple[Verdict, str], tuple[Verdict, str]]] = {
    "tenant": (("pass", "mail_send_role"), ("fail", "mail_send_role")),
    "scoped": (("fail", "mail_send_scope_moot"), ("pass", "mail_send_scope_moot")),
    "none": (("warn", "mail_send_more_than_needed"), ("pass", "mail_send_more_than_needed")),
}
ROLE_MEANING = {
    ("tenant", True): "tenant-wide Mail.Send, as application.mail_send: tenant asks",
    ("tenant", False): "no Mail.Send: admin consent for it is missing",
    ("scoped", True): "tenant-wide Mail.Send: the application may send as any mailbox, Exchange's scope is moot",
    ("scoped", False): "no tenant-wide Mail.Send: Exchange's scope decides which mailbox the application may send as",
    ("none", True): "tenant-wide Mail.Send, more than Webex Connect needs (it sends with the delegated SMTP.Send)",
    ("none", False): "no application permission: Webex Connect sends with the delegated SMTP.Send",
}


def mail_send_role(option: str, roles: list[str]) -> tuple[Verdict, str, str]:
    """Mail.Send in the app-only token's roles, judged by ``application.mail_send``: verdict, detail, code."""
    held = entra.MAIL_SEND in roles
    verdict, code = ROLE_RULES[option][0 if held else 1]
    return verdict, f"{ROLE_MEANING[option, held]} (roles: {', '.join(roles) or 'none'})", code


def mail_send_scope(
    step: Step,
    checks: Checks,
    app: dict[str, Any] | None,
    sp: dict[str, Any] | None,
    state: exchange.MailboxState | None,
) -> None:
    """``application.mail_send: scoped``: the RBAC for Applications objects as step 3 makes them, then
    Exchange's own test that the mailbox is in scope (admin API); the script tests it otherwise."""
    if step.params.application.mail_send != "scoped":
        return
    if state is None:
        checks.add(
            "Mail.Send scope",
            "not tested",
            "not read: mailbox.apply_with is powershell; the step 3 script creates the scope and role assignment and "
            "tests them (Test-ServicePrincipalAuthorization)",
            code="mail_send_scope",
        )
        return
    wanted = rbac.target(step, app, sp, state.primary_smtp_address)
    checks.drift(rbac.diff_rbac(rbac.read_state(step, wanted), wanted), "mail_send_scope")
    if app is None:
        return
    rows = rbac.authorization(step, app["appId"], wanted.mailbox)
    shown = "; ".join(
        f"{r.get('RoleName')} on {r.get('AllowedResourceScope')}: InScope {r.get('InScope')}" for r in rows
    )
    checks.add(
        "Mail.Send scope",
        "pass" if rbac.in_scope(rows) else "fail",
        f"Test-ServicePrincipalAuthorization for {wanted.mailbox}: {shown or 'no application role in Exchange'}",
        code="mail_send_scope",
    )


def secret_and_token(step: Step, checks: Checks, app: dict[str, Any] | None) -> None:
    """The stored secret among the application's, its expiry, then the app-only token it gets and its claims."""
    store = step.params.secret_store.describe()
    stored = secrets.read(step.params.secret_store)
    now = step.clock.now()
    match = client_secrets.match_stored(stored, client_secrets.app_secrets(app), now)
    cred = match.secret
    if cred is not None and match.kind == "matched":
        step.facts.secret = SecretFacts(cred.hint, cred.expires.date().isoformat(), cred.key_id, store)
    if match.kind == "empty":
        checks.add("client secret", "fail", match.explain(store), code="secret_missing")
    elif match.kind == "secret id":
        checks.add("client secret", "fail", match.explain(store), code="secret_id_pasted")
    elif match.kind == "no match" or cred is None:
        checks.add("client secret", "fail", match.explain(store), code="secret_no_match")
    elif cred.days_left(now) <= 0:
        checks.add(
            "client secret", "fail", f"expired on {cred.expires.date()} (hint {cred.hint}...)", code="AADSTS7000222"
        )
    elif cred.days_left(now) < step.params.verify.secret_warn_days:
        checks.add(
            "client secret",
            "warn",
            f"expires in {cred.days_left(now)} days, on {cred.expires.date()}",
            code="secret_expiring",
        )
    else:
        checks.add("client secret", "pass", f"valid for {cred.days_left(now)} more days (hint {cred.hint}...)")
    if app is None or not stored:
        checks.add("app-only token", "not tested", "no application or no secret to ask a token with", code="app_token")
        return
    wait = step.params.network.propagation_wait_seconds
    new_secret = cred is not None and cred.is_new(now, wait)
    try:
        token = auth.app_token(
            step.endpoints,
            step.transport,
            app["appId"],
            stored,
            step.endpoints.exchange_scope,
            wait_up_to=wait if new_secret else 0.0,
        )
    except AuthError as error:
        code = f"AADSTS{error.codes[0]}" if error.codes else "app_token"
        kb = {"secret id": "secret_id_pasted", "no match": "secret_no_match"}.get(match.kind, code)
        checks.add("app-only token", "fail", f"{code}: {error.message}", code=kb)
        return
    claims = auth.claims(token)
    step.facts.token_claims = {k: claims.get(k) for k in ("aud", "tid", "appid", "roles")}
    checks.add("app-only token", "pass", f"issued for {claims.get('aud')} to {claims.get('appid')}")
    verdict, detail, code = mail_send_role(step.params.application.mail_send, claims.get("roles") or [])
    checks.add("Mail.Send in the token's roles", verdict, detail, code=code)
    if GUID_RE.match(step.params.tenant_id):
        same = claims.get("tid", "").lower() == step.params.tenant_id.lower()
        checks.add("token's tenant", "pass" if same else "fail", f"tid {claims.get('tid')}", code="tenant_mismatch")


#: the code of an SMTP AUTH test nobody signed in for
NOT_TRIED = "smtp_not_tried"
#: AADSTS7000218: a public client sign-in through an application that does not allow public client flows
PUBLIC_CLIENT_OFF = 7000218


def mailbox_token(step: Step, app: dict[str, Any] | None) -> tuple[str | None, str, str]:
    """A delegated SMTP.Send token for the mailbox, signed in through the customer's own application (as
    Generate Token does); Microsoft's first-party clients are not preauthorized for SMTP.Send. Returns the
    token, or None, why the sign-in could not be tried and the code whose fix applies: an application that
    does not allow public client flows (the kit leaves them off) is told apart from a refused sign-in."""
    if not step.params.verify.mailbox_sign_in:
        why = "set verify.mailbox_sign_in to sign in as the mailbox, or use Generate Token in Webex Connect"
        return None, why, NOT_TRIED
    if app is None:
        return None, "there is no application to sign in through (run step 2)", NOT_TRIED
    client = msal.PublicClientApplication(  # msal asks for openid and offline_access whatever: never profile too
        app["appId"],
        authority=step.endpoints.authority,
        http_client=step.transport.session,
        instance_discovery=False,
        exclude_scopes=["profile"],
    )
    try:
        result = auth.device_flow(client, [step.endpoints.smtp_scope], step.transport, print)
        if "access_token" in result:
            return str(result["access_token"]), "", ""
        error = auth.auth_error(result)
    except AuthError as refused:
        error = refused
    if PUBLIC_CLIENT_OFF in error.codes:  # the kit's own choice, not a fault: say so, and what the test would need
        return (
            None,
            (
                "the mailbox could not sign in through the application: it does not allow public client flows "
                f"(AADSTS{PUBLIC_CLIENT_OFF}), which the kit leaves off; Generate Token in Webex Connect is the test"
            ),
            "smtp_public_client_off",
        )
    code = f"AADSTS{error.codes[0]}" if error.codes else NOT_TRIED
    return None, f"the mailbox could not sign in through the application ({error.message})", code


def smtp_checks(step: Step, checks: Checks, directory: Directory) -> None:
    """STARTTLS and XOAUTH2 offered; then, if the mailbox signed in, AUTH XOAUTH2 itself (and the optional
    test message). A consent the sign-in made (a grant read before it, ``directory.grants``, that is new or wider
    afterwards) is one Generate Token needs too, and it is recorded."""
    token, why_not, why_code = mailbox_token(step, directory.app)
    if token is not None:
        known = {(g.get("id"), g.get("scope")) for g in directory.grants}
        after = mailbox_user_grants(step, entra.delegated_grants(step, directory.sp))
        made = [g for g in after if (g.get("id"), g.get("scope")) not in known]
        step.facts.grants_made = [describe_grant(g) for g in made]
        before = {g.get("id"): g for g in directory.grants}
        for grant in made:
            was = before.get(grant.get("id"))
            step.made_outside(
                Change(
                    "delegated consent",
                    f"grant {grant.get('id')}",
                    "updated" if was else "created",
                    "given by the mailbox user at the test sign-in",
                    {"scope": was.get("scope")} if was else None,
                    {k: grant.get(k) for k in ("id", "consentType", "principalId", "resourceId", "scope")},
                )
            )
            step.facts.warn(
                f"the test sign-in made a consent: {describe_grant(grant)}. Generate Token needs SMTP.Send and "
                "offline_access too (the test's sign-in also asks for openid, which msal adds); to take it back, "
                "delete the grant (Graph DELETE /oauth2PermissionGrants/{id}) or revoke it in Microsoft Entra admin "
                "center > Enterprise applications > Permissions"
            )
    transcript = smtp.probe(step, token, step.params.verify.test_message_to)
    e = step.endpoints
    offered = smtp.offers_xoauth2(transcript["features_tls"])
    checks.add(
        "SMTP STARTTLS and XOAUTH2",
        "pass" if offered else "fail",
        f"{e.smtp_host}:{e.smtp_port}: {transcript['starttls']}; AUTH offered: "
        + ", ".join(f for f in transcript["features_tls"] if f.upper().startswith("AUTH")),
        code="smtp_xoauth2",
    )
    reply = transcript["auth"]
    if reply is None:
        checks.add("SMTP AUTH XOAUTH2", "not tested", why_not, code=why_code)
        return
    text = f"{reply['code']} {reply['message']}"
    if reply["code"] == 235:
        checks.add("SMTP AUTH XOAUTH2", "pass", text)
        sent = transcript.get("sent")
        if sent is not None and 200 <= sent["code"] < 300:  # a message left the mailbox: a change like any other
            step.made_outside(
                Change("test message", str(sent["to"]), "created", "sent from the mailbox over SMTP AUTH", None, sent)
            )
        test_message(checks, sent)
        return
    finding = next(iter(diagnose.diagnose(text)), None)
    checks.add(
        "SMTP AUTH XOAUTH2", "fail", text, code=finding.code if finding else "smtp_auth_failed", explained=finding
    )


def test_message(checks: Checks, sent: dict[str, Any] | None) -> None:
    """The optional test message: accepted for delivery, or refused with Exchange's reason."""
    if sent is None:
        return
    text = f"to {sent['to']}: {sent['code']} {sent['message']}"
    if 200 <= sent["code"] < 300:
        checks.add("test message", "pass", f"accepted for delivery {text}; check it arrived")
        return
    finding = next(iter(diagnose.diagnose(f"{sent['code']} {sent['message']}")), None)
    checks.add("test message", "fail", text, code=finding.code if finding else "test_message", explained=finding)


def authorize_url(step: Step, checks: Checks, app: dict[str, Any] | None) -> str:
    """The URL Generate Token opens; optionally requested to see whether Entra ID refuses it outright."""
    client_id = (app or {}).get("appId", "")
    query = urlencode(
        {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": step.params.webex.callback_url,
            "scope": f"offline_access {step.endpoints.smtp_scope}",
            "prompt": "select_account",
        }
    )
    url = f"{step.endpoints.webex_authorize_url}?{query}"
    step.facts.authorize_url = url
    if not step.params.verify.probe_authorize_url or not client_id:
        checks.add(
            "authorize URL",
            "not tested",
            "built, not requested: set verify.probe_authorize_url to have Entra "
            "ID check the client ID and redirect URI",
            code="authorize_not_probed",
        )
        return url
    page = step.transport.session.get(
        f"{step.endpoints.authorize_url}?{query}",
        allow_redirects=False,
        timeout=(step.params.network.connect_timeout, step.params.network.read_timeout),
    ).text
    found = [f for f in diagnose.diagnose(page) if f.kind == "aadsts"]
    if found:
        checks.add("authorize URL", "fail", f"Entra ID answers {found[0].code}: {found[0].meaning}", code=found[0].code)
    else:
        checks.add("authorize URL", "pass", "Entra ID shows its sign-in page")
    return url


def run_checks(step: Step) -> pd.DataFrame:
    """Every check, in the order a person would look; returns the verdict table."""
    checks = Checks(step)
    exchange.check_mailbox_user(step)
    directory = application_drift(step, checks)
    app, sp = directory.app, directory.sp
    consent(step, checks, directory)
    blockers.assignment(step, checks, sp)
    blockers.security_defaults(step, checks)
    blockers.conditional_access(step, checks, app)
    state = mailbox_drift(step, checks)
    tenant_smtp_auth(checks, state)
    mail_send_scope(step, checks, app, sp, state)
    blockers.forwarding(step, checks, state)
    secret_and_token(step, checks, app)
    smtp_checks(step, checks, directory)
    authorize_url(step, checks, app)
    return checks.table()


def summary_line(checks: list[Check]) -> str:
    counts = {v: sum(c.verdict == v for c in checks) for v in ("pass", "warn", "fail", "not tested")}
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def require_pass(step: Step) -> str:
    """Fail the notebook when any check failed, naming each with its fix."""
    checks = step.result.checks
    failed = [c for c in checks if c.verdict == "fail"]
    if failed:
        raise StepFailed(
            f"{len(failed)} check(s) failed: " + "; ".join(f"{c.check} ({c.detail})" for c in failed),
            fix=" | ".join(dict.fromkeys(c.fix for c in failed if c.fix)),
            step=STEP,
        )
    return f"No check failed: {summary_line(checks)}."
