"""Step 5: prove it works. Every check gives a verdict, ``pass``, ``warn`` or ``fail``, with the fix.

* drift: step 2's and step 3's compare logic run as a plan (nothing can be written) against the state
  read now; anything that would change is drift;
* the app-only token Webex Connect's application gets with the stored secret: its claims (aud, tid,
  appid, roles) must carry Mail.Send and this tenant;
* the secret's expiry: warn under ``verify.secret_warn_days``, fail once expired;
* SMTP: STARTTLS on the submission port and AUTH XOAUTH2 offered; with ``verify.mailbox_sign_in``, the
  mailbox account signs in (device code) and AUTH XOAUTH2 must succeed;
* the authorize URL Webex Connect's Generate Token opens; with ``verify.probe_authorize_url`` it is
  requested (without signing in) to catch AADSTS50011 / AADSTS700016 before the operator tries.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pandas as pd

from . import auth, diagnose, entra, exchange, knowledge, secrets, smtp
from .errors import AuthError, StepFailed
from .params import GUID_RE

if TYPE_CHECKING:
    from .step import Step

STEP = "05_verify"


@dataclass(frozen=True)
class Check:
    check: str
    verdict: str         # pass | warn | fail
    detail: str
    fix: str = ""
    notebook: str = ""
    code: str = ""       # the knowledge-base key, so troubleshooting can explain the check


class Checks:
    """The verdicts of one verify run, kept in the step's facts (and so in the record)."""

    def __init__(self, step: "Step") -> None:
        self.step = step
        self.items: list[Check] = []
        step.facts["checks"] = []

    def add(self, check: str, verdict: str, detail: str, *, code: str = "", explained: Any = None) -> Check:
        """Record a verdict; its fix comes from ``explained`` (a diagnosis) or the knowledge base entry ``code``."""
        entry = explained or knowledge.lookup("checks", code or check)
        if verdict != "pass" and code.startswith("AADSTS"):
            entry = knowledge.lookup("aadsts", code.removeprefix("AADSTS")) or entry
        item = Check(check, verdict, detail, entry.fix if entry and verdict != "pass" else "",
                     entry.notebook if entry and verdict != "pass" else "", code or check)
        self.items.append(item)
        self.step.facts["checks"].append(asdict(item))
        return item

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(c) for c in self.items], columns=["check", "verdict", "detail", "fix", "notebook"])


def application_drift(step: "Step", checks: Checks) -> dict[str, Any] | None:
    """Step 2's desired state against the tenant now; returns the application for the later checks."""
    with step.planning() as plan:
        exo = entra.exchange_online(step)
        app = entra.find_application(step)
        _, app_now = entra.ensure_application(step, exo, app)
        sp = entra.ensure_service_principal(step, app_now)
        entra.ensure_mail_send_consent(step, sp, exo)
        if step.params.consent == "admin":
            entra.ensure_smtp_send_grant(step, sp, exo)
    for change in plan:
        verdict = "fail" if change.action == "planned" else "pass"
        checks.add(f"{change.resource}: {change.name}", verdict,
                   change.summary if verdict == "pass" else f"drift: would {change.summary}", code="application_drift")
    return app


def user_consent(step: "Step", checks: Checks) -> None:
    """Can the mailbox user consent at Generate Token (or has tenant-wide consent made that moot)?"""
    consent = entra.user_consent(step)
    if step.params.consent == "admin":
        checks.add("user consent", "pass", f"tenant-wide consent is used (user consent policy: {consent.policy})")
    elif consent.mailbox_user_can_consent is False:
        checks.add("user consent", "fail", consent.explanation, code="user_consent_off")
    elif consent.mailbox_user_can_consent is None:
        checks.add("user consent", "warn", consent.explanation, code="user_consent_off")
    else:
        checks.add("user consent", "pass", consent.explanation)


def mailbox_drift(step: "Step", checks: Checks) -> None:
    """Step 3's settings, read back when the admin API is in use."""
    exchange.check_mailbox_user(step)
    if step.params.mailbox.apply_with != "adminapi":
        checks.add("mailbox settings", "warn", "not read: mailbox.apply_with is powershell; the SMTP check tests "
                   "authenticated SMTP, and the record of step 3 holds the script", code="mailbox_not_read")
        return
    for key, change in exchange.compare(step, exchange.read_state(step)).items():
        verdict = "fail" if change.action == "planned" else "pass"
        checks.add(f"{change.resource}: {change.name}", verdict,
                   change.summary if verdict == "pass" else f"drift: {change.summary}", code=f"mailbox_{key}")


def secret_and_token(step: "Step", checks: Checks, app: dict[str, Any] | None) -> None:
    """Expiry of the stored secret, then the app-only token it gets and that token's claims."""
    stored = secrets.read(step.params.secret_store)
    table = entra.secrets_table(step, app)
    match = table[table["hint"] == (stored or "")[:3]] if stored else table.iloc[0:0]
    if not stored:
        checks.add("client secret", "fail", f"the store {step.params.secret_store.describe()} is empty", code="secret_missing")
    elif match.empty:
        checks.add("client secret", "fail", "the stored value matches none of the application's secrets: it may be "
                   "the Secret ID instead of the Value, or a secret of another application", code="AADSTS7000215")
    else:
        cred = match.iloc[0]
        days = (pd.Timestamp(cred["expires"]).date() - step.clock.now().date()).days
        if days <= 0:
            checks.add("client secret", "fail", f"expired on {cred['expires']} (hint {cred['hint']}...)", code="AADSTS7000222")
        elif days < step.params.verify.secret_warn_days:
            checks.add("client secret", "warn", f"expires in {days} days, on {cred['expires']}", code="secret_expiring")
        else:
            checks.add("client secret", "pass", f"valid for {days} more days (hint {cred['hint']}...)")
    if app is None or not stored:
        checks.add("app-only token", "fail", "not attempted: no application or no secret", code="app_token")
        return
    try:
        token = auth.app_token(step.endpoints, step.transport, app["appId"], stored, step.endpoints.exchange_scope)
    except AuthError as error:
        code = f"AADSTS{error.codes[0]}" if error.codes else "app_token"
        checks.add("app-only token", "fail", f"{code}: {error.message}", code=code)
        return
    claims = auth.claims(token)
    step.facts["token_claims"] = {k: claims.get(k) for k in ("aud", "tid", "appid", "roles")}
    checks.add("app-only token", "pass", f"issued for {claims.get('aud')} to {claims.get('appid')}")
    roles = claims.get("roles") or []
    checks.add("Mail.Send in the token's roles", "pass" if entra.MAIL_SEND in roles else "fail",
               f"roles: {', '.join(roles) or 'none'}", code="mail_send_role")
    if GUID_RE.match(step.params.tenant_id):
        same = claims.get("tid", "").lower() == step.params.tenant_id.lower()
        checks.add("token's tenant", "pass" if same else "fail", f"tid {claims.get('tid')}", code="tenant_mismatch")


def smtp_checks(step: "Step", checks: Checks) -> None:
    """STARTTLS and XOAUTH2 offered; then, if the mailbox signs in, AUTH XOAUTH2 itself."""
    token = None
    if step.params.verify.mailbox_sign_in:
        token = auth.OperatorSignIn(step.params, step.endpoints, step.transport, resource="smtp").token()
    transcript = smtp.probe(step, token)
    e = step.endpoints
    offered = smtp.offers_xoauth2(transcript["features_tls"])
    checks.add("SMTP STARTTLS and XOAUTH2", "pass" if offered else "fail",
               f"{e.smtp_host}:{e.smtp_port}: {transcript['starttls']}; AUTH offered: "
               + ", ".join(f for f in transcript["features_tls"] if f.upper().startswith("AUTH")), code="smtp_xoauth2")
    reply = transcript["auth"]
    if reply is None:
        checks.add("SMTP AUTH XOAUTH2", "warn", "not attempted: set verify.mailbox_sign_in to sign in as the mailbox",
                   code="smtp_not_tried")
        return
    text = f"{reply['code']} {reply['message']}"
    if reply["code"] == 235:
        checks.add("SMTP AUTH XOAUTH2", "pass", text)
        return
    finding = next(iter(diagnose.diagnose(text)), None)
    checks.add("SMTP AUTH XOAUTH2", "fail", text, code=finding.code if finding else "smtp_auth_failed", explained=finding)


def authorize_url(step: "Step", checks: Checks, app: dict[str, Any] | None) -> str:
    """The URL Generate Token opens; optionally requested to see whether Entra ID refuses it outright."""
    client_id = (app or {}).get("appId", "")
    url = f"{step.endpoints.authorize_url}?" + urlencode({
        "client_id": client_id, "response_type": "code", "redirect_uri": step.params.webex.callback_url,
        "scope": f"offline_access {step.endpoints.smtp_scope}", "prompt": "select_account"})
    step.facts["authorize_url"] = url
    if not step.params.verify.probe_authorize_url or not client_id:
        checks.add("authorize URL", "pass", "built; not requested (verify.probe_authorize_url is off)")
        return url
    page = step.transport.session.get(url, timeout=30, allow_redirects=False).text
    found = [f for f in diagnose.diagnose(page) if f.kind == "aadsts"]
    if found:
        checks.add("authorize URL", "fail", f"Entra ID answers {found[0].code}: {found[0].meaning}", code=found[0].code)
    else:
        checks.add("authorize URL", "pass", "Entra ID shows its sign-in page")
    return url


def run_checks(step: "Step") -> pd.DataFrame:
    """Every check, in the order a person would look; returns the verdict table."""
    checks = Checks(step)
    app = application_drift(step, checks)
    user_consent(step, checks)
    mailbox_drift(step, checks)
    secret_and_token(step, checks, app)
    smtp_checks(step, checks)
    authorize_url(step, checks, app)
    return checks.table()


def require_pass(step: "Step") -> str:
    """Fail the notebook when any check failed, naming each with its fix."""
    failed = [c for c in step.facts.get("checks", []) if c["verdict"] == "fail"]
    warned = [c for c in step.facts.get("checks", []) if c["verdict"] == "warn"]
    if failed:
        raise StepFailed(f"{len(failed)} check(s) failed: " + "; ".join(f"{c['check']} ({c['detail']})" for c in failed),
                         fix=" | ".join(dict.fromkeys(c["fix"] for c in failed if c["fix"])), step=STEP)
    return f"All checks passed ({len(warned)} warning(s))."
