"""Every tenant state an engineer meets: each demo tenant replayed headlessly with its outcome.

Record once, assert many: every demo tenant is replayed once as its parameter file says and once as a plan (the
steps a plan runs, ``apply: false``), as two batches using both cores; every test reads the sealed records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
import yaml

from runbook_lib.config import params, registry, secrets
from runbook_lib.engine.results import StepRecord
from runbook_lib.records import store as records
from runbook_lib.running import batch, runner

from conftest import ROOT

pytestmark = pytest.mark.replay

STEP2 = "02_azure_app_registration"
STEP3 = "03_office365_mailbox"


@dataclass
class Expected:
    status: str
    actions: list[str] = field(default_factory=list)
    writes: int = 0
    retries: int = 0
    failed_writes: int = 0
    error: list[str] = field(default_factory=list)
    plan_status: str = ""  # the outcome of a plan run when it differs (a refusal only a write can meet)


SCENARIOS = {
    "contoso": Expected("ok", ["created"] * 4, writes=4),
    "fabrikam": Expected("ok", ["unchanged"] * 4),
    "northwind": Expected("ok", ["updated", "unchanged", "created", "created"], writes=3),
    "tailspin": Expected(
        "failed", error=["2 applications are named 'Webex Connect Email'", "application.app_id", "Nothing was changed"]
    ),
    "tailspin-pick": Expected("ok", ["updated", "created", "created", "created"], writes=4),
    "wingtip": Expected("failed", error=["user consent is turned off", "consent: admin", "Nothing was changed"]),
    # the application declares offline_access; SMTP.Send joins the existing grant; offline_access gets its own
    "wingtip-admin": Expected("ok", ["updated", "unchanged", "unchanged", "created", "updated", "created"], writes=4),
    # users may not consent, consent: admin, mail_send: none: both delegated permissions granted, no Mail.Send
    "lamna": Expected("ok", ["created", "created", "unchanged", "created", "created", "created"], writes=5),
    # the create's answer was lost: the upsert sent again finds it made (204), so the application is "updated"
    "adatum": Expected("ok", ["updated", "created", "created", "created"], writes=4, failed_writes=5, retries=6),
    "litware": Expected("failed", error=["lacks AppRoleAssignment.ReadWrite.All", "Nothing was changed"]),
    "woodgrove": Expected(
        "failed",
        ["created", "created"],
        writes=2,
        failed_writes=1,
        plan_status="ok",
        error=[
            "Microsoft refused the change",
            "AppRoleAssignment.ReadWrite.All",
            "request-id",
            "Already changed before the failure: application Webex Connect Email "
            "(created); service principal Webex Connect Email (created)",
        ],
    ),
    "proseware": Expected("failed", error=["no Exchange Online licence", "Nothing was changed"]),
    "relecloud": Expected("ok", ["created"] * 4, writes=4),
    "lucerne": Expected("ok", ["created"] * 4, writes=4),
    "margies": Expected("ok", ["created"] * 4, writes=4),
}

#: step 3 where its recordings exist (tenants whose step 2 succeeded)
MAILBOX = {
    "contoso": Expected("ok", ["planned"] * 4),  # powershell: the script applies them
    "adatum": Expected("ok", ["planned"] * 4),
    "tailspin-pick": Expected("ok", ["planned"] * 4),
    "fabrikam": Expected("ok", ["unchanged"] * 4),  # adminapi, configured
    "northwind": Expected("ok", ["updated", "updated", "created", "created"], writes=4),
    "wingtip-admin": Expected("ok", ["updated", "updated", "created", "created"], writes=4),
    "lamna": Expected("ok", ["updated", "updated", "created", "created"], writes=4),
    "relecloud": Expected("failed", error=["has no mailbox", "licence", "Nothing was changed"]),
    "lucerne": Expected("ok", ["updated", "updated", "created", "created"], writes=4),  # a shared mailbox
    "margies": Expected("failed", error=["Exchange Online has no mailbox", "on-premises", "Nothing was changed"]),
}


DEMO = ROOT / "params" / "demo"


@dataclass
class Replayed:
    """One demo tenant's sealed record: its steps by name, and the folder holding its files."""

    record: Path
    steps: dict[str, StepRecord]

    def file(self, name: str) -> str:
        return (self.record / name).read_text()


@pytest.fixture(scope="session")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Replayed]:
    """Replay every demo tenant once (apply) and every step-2 scenario once as a plan, in two batches."""
    folder = tmp_path_factory.mktemp("scenarios")
    files: dict[bool, list[str]] = {True: [], False: []}
    for path in sorted(DEMO.glob("*.yaml")):
        loaded = params.load(path)
        for apply in (True, False):
            if not apply and path.stem not in SCENARIOS:
                continue
            raw = loaded.public() | {"apply": apply, "tenant": loaded.tenant if apply else f"{loaded.tenant}-plan"}
            if not apply:
                raw["steps"] = registry.plan_steps(loaded.steps)
            raw["secret_store"] = secrets.private_copy(
                loaded.secret_store, folder / "stores", f"{raw['tenant']}.secret"
            )
            raw["secret_store"] = raw["secret_store"].model_dump(exclude_none=True)
            target = folder / "params" / f"{raw['tenant']}.yaml"
            target.parent.mkdir(exist_ok=True)
            target.write_text(yaml.safe_dump(raw))
            files[apply].append(str(target))
    for apply in (True, False):  # demo scenarios of one tenant share its lock: they wait for each other
        batch.run_batch(files[apply], jobs=2, archive=folder / "archive", wait_lock=600, progress=lambda _: None)

    def find(tenant: str, apply: bool = True) -> Replayed:
        [record] = records.record_dirs(folder / "archive", tenant if apply else f"{tenant}-plan")
        manifest = records.read_manifest(record)
        return Replayed(record, {s["step"]: StepRecord.from_json(s) for s in manifest["steps"]})

    return find


def test_every_demo_tenant_has_a_scenario():
    assert {p.stem for p in (ROOT / "params" / "demo").glob("*.yaml")} == set(SCENARIOS) | set(VERIFY)


@pytest.mark.parametrize("tenant", sorted(SCENARIOS))
def test_scenario_outcome(tenant, replayed):
    expected = SCENARIOS[tenant]
    step = replayed(tenant).steps[STEP2]
    assert step.status == expected.status, step.error
    assert [c.action for c in step.changes] == expected.actions
    assert step.counts["writes"] == expected.writes and step.counts["failed_writes"] == expected.failed_writes
    assert step.counts["retries"] == expected.retries
    for text in expected.error:
        assert text in (step.error or ""), step.error


@pytest.mark.parametrize("tenant", sorted(SCENARIOS))
def test_plan_sends_no_write_in_any_scenario(tenant, replayed):
    step = replayed(tenant, apply=False).steps[STEP2]
    assert step.counts["writes"] == 0
    assert all(c.action in ("planned", "unchanged") for c in step.changes)
    expected = SCENARIOS[tenant]
    assert step.status == (expected.plan_status or expected.status)


def test_drifted_tenant_keeps_what_it_had(replayed):
    step = replayed("northwind").steps[STEP2]
    app = step.changes[0]
    uris = app.after["web"]["redirectUris"]
    assert uris == [
        "https://intranet.northwind.example/signin",
        "https://localhost:5001/callback",
        "https://northwind.us.webexconnect.io/callback",
    ]
    assert app.after["web"]["implicitGrantSettings"]["enableAccessTokenIssuance"] is True
    resources = [r["resourceAppId"] for r in app.after["requiredResourceAccess"]]
    assert resources == ["00000003-0000-0000-c000-000000000000", "00000002-0000-0ff1-ce00-000000000000"]
    assert "turn on implicit-grant access tokens" in app.summary


def test_throttled_tenant_records_each_retry_and_wait(replayed):
    step = replayed("adatum").steps[STEP2]
    waits = [(w["status"], w["code"], w["wait_seconds"]) for w in step.counts["waits"]]
    assert waits == [
        (429, "TooManyRequests", 3),
        (503, "serviceNotAvailable", 2),
        (400, "Request_BadRequest", 2.0),
        (400, "Request_BadRequest", 4.0),
        (404, "Request_ResourceNotFound", 2.0),
        (404, "Request_ResourceNotFound", 2.0),
    ]


def test_admin_consent_patches_the_existing_grant(replayed):
    step = replayed("wingtip-admin").steps[STEP2]
    grants = {c.name: c for c in step.changes if c.resource == "tenant-wide consent"}
    assert grants["SMTP.Send"].before == {"scope": "IMAP.AccessAsUser.All"}
    assert grants["SMTP.Send"].after == {"scope": "IMAP.AccessAsUser.All SMTP.Send"}
    # offline_access is Microsoft Graph's: a grant of its own, on Graph's service principal
    assert grants["offline_access"].action == "created" and grants["offline_access"].after["scope"] == "offline_access"


@pytest.mark.parametrize("tenant", sorted(MAILBOX))
def test_mailbox_scenario(tenant, replayed):
    expected = MAILBOX[tenant]
    step = replayed(tenant).steps[STEP3]
    assert step.status == expected.status, step.error
    assert [c.action for c in step.changes] == expected.actions
    assert step.counts["writes"] == expected.writes
    for text in expected.error:
        assert text in (step.error or ""), step.error
    if expected.status == "ok":
        assert "Connect-ExchangeOnline" in replayed(tenant).file(f"{STEP3}.mailbox.ps1")


@pytest.mark.parametrize("tenant", ["fabrikam", "northwind", "wingtip-admin"])
def test_mailbox_plan_sends_no_write(tenant, replayed):
    step = replayed(tenant, apply=False).steps[STEP3]
    assert step.counts["writes"] == 0 and step.counts["reads"] == 7
    assert {c.action for c in step.changes} <= {"planned", "unchanged"}


def test_forwarding_elsewhere_is_replaced_with_the_old_value_recorded(replayed):
    step = replayed("northwind").steps[STEP3]
    forwarding = step.changes[1]
    assert forwarding.before == {
        "ForwardingSmtpAddress": "smtp:helpdesk@northwind-partner.example",
        "DeliverToMailboxAndForward": False,
    }
    assert "replace forwarding to helpdesk@northwind-partner.example" in forwarding.summary
    script = replayed("northwind").file(f"{STEP3}.mailbox.ps1")
    assert "Set-Mailbox -Identity $mailbox -ForwardingSmtpAddress $forward -DeliverToMailboxAndForward $true" in script


def test_configured_mailbox_script_changes_nothing(replayed):
    script = replayed("fabrikam").file(f"{STEP3}.mailbox.ps1")
    assert "Set-" not in script and "New-" not in script
    assert script.count("already as desired when the kit read it") == 3


#: step 5's failed checks and step 6's diagnosis for each verify scenario: (failed checks, codes, fix notebooks)
VERIFY = {
    "fabrikam": ([], [], []),
    "bellows": ([], [], []),  # healthy, but the secret expires within the warning window: a warn, not a fail
    "vanarsdel": (["client secret", "app-only token"], ["AADSTS7000222"], ["02_azure_app_registration"]),
    "trey": (
        ["client secret", "app-only token"],
        ["AADSTS7000215", "secret_id_pasted"],
        ["04_webex_connect_email_app"],
    ),
    "coho": (
        ["admin consent: Mail.Send", "Mail.Send in the token's roles"],
        ["application_drift", "mail_send_role"],
        ["02_azure_app_registration"],
    ),
    "alpine": (
        ["authenticated SMTP: support@alpine.onmicrosoft.com", "SMTP AUTH XOAUTH2"],
        ["5.7.139", "mailbox_smtp_auth"],
        ["03_office365_mailbox"],
    ),
    "fourthcoffee": (
        ["outbound spam policy: Webex Connect forwarding", "outbound spam rule: Webex Connect forwarding"],
        ["mailbox_external_forwarding"],
        ["03_office365_mailbox"],
    ),
    # configured as the kit wants, yet security defaults, a remote domain and an earlier spam rule stop mail
    "wideworld": (
        [
            "security defaults",
            "remote domain Webex Connect",
            "outbound spam rule: Strict outbound",
            "SMTP AUTH XOAUTH2",
        ],
        ["security_defaults_on", "remote_domain_blocks", "spam_rule_first", "5.7.139"],
        ["03_office365_mailbox", ""],  # the spam rule is step 3's; security defaults and remote domains a portal's
    ),
}


@pytest.mark.parametrize("tenant", sorted(VERIFY))
def test_verify_scenario(tenant, replayed):
    failed_checks, codes, notebooks = VERIFY[tenant]
    steps = replayed(tenant).steps
    verify, troubleshoot = steps["05_verify"], steps["06_troubleshoot"]
    checks = verify.checks
    assert [c.check for c in checks if c.verdict == "fail"] == failed_checks, verify.error
    assert verify.status == ("failed" if failed_checks else "ok")
    # every failed check says what fixes it, and where: a notebook, or a portal setting the fix names
    assert all(c.fix and (c.notebook or "admin center" in c.fix) for c in checks if c.verdict == "fail")
    findings = troubleshoot.findings
    for code in codes:
        assert code in [f.code for f in findings], findings
    assert {f.notebook for f in findings} >= set(notebooks)
    assert troubleshoot.status == "ok" and verify.counts["writes"] == 0


def test_fresh_demo_tenant_verifies_with_warnings_only(replayed):
    steps = list(replayed("contoso").steps.values())
    assert [s.status for s in steps] == ["ok"] * 6
    checks = {c.check: c.verdict for c in steps[4].checks}
    assert checks["SMTP STARTTLS and XOAUTH2"] == "pass" and checks["app-only token"] == "pass"
    assert {checks[c] for c in ("mailbox settings", "SMTP AUTH XOAUTH2", "authorize URL")} == {"not tested"}
    assert "fail" not in checks.values()
    assert steps[5].facts.diagnosis_source == "this run's failures" and steps[5].findings == []


def test_a_pasted_ndr_is_diagnosed_by_the_troubleshooting_notebook(tmp_path):
    """Headless use of notebook 06: papermill with an error_text parameter."""
    import papermill

    output = tmp_path / "06.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "06_troubleshoot.ipynb"),
        str(output),
        parameters={
            "error_text": "550 5.7.520 Access denied, Your organization does not allow external forwarding. AS(7555)"
        },
        kernel_name=runner.kernel_name(),
        cwd=str(ROOT / "notebooks"),
        progress_bar=False,
    )
    record = runner.step_record(nbformat.read(output, as_version=4), "06_troubleshoot")
    [finding] = record.findings
    assert finding.code == "5.7.520" and finding.notebook == "03_office365_mailbox"


def test_a_shared_mailbox_is_recognised_by_exchange_and_explained(replayed):
    step = replayed("lucerne").steps[STEP3]
    assert step.facts.mailbox_kind == "SharedMailbox"
    graph_says, exchange_says = step.facts.warnings
    assert "Graph cannot tell which" in graph_says and "Get-Mailbox decides" in graph_says
    assert "shared mailbox" in exchange_says and "Login ID" in exchange_says


def test_what_blocks_mail_beyond_the_kits_settings_is_judged(replayed):
    checks = {c.check: c for c in replayed("wideworld").steps["05_verify"].checks}
    assert "Exchange Online refuses SMTP AUTH for every mailbox" in checks["security defaults"].detail
    assert "Entra admin center" in checks["security defaults"].fix
    # Conditional Access is listed read-only: the MFA policy applies; the legacy-authentication one does not
    assert checks["Conditional Access: Require MFA for all users"].verdict == "warn"
    assert not any("Block legacy authentication" in name for name in checks)
    assert checks["mail flow rule: Quarantine auto-forwarded mail"].verdict == "warn"
    assert checks["SMTP.Send consent"].verdict == "pass" and "the mailbox user" in checks["SMTP.Send consent"].detail


def test_a_healthy_tenant_passes_the_new_checks_and_its_test_message_is_accepted(replayed):
    step = replayed("fabrikam").steps["05_verify"]
    checks = {c.check: c.verdict for c in step.checks}
    consents = ("SMTP.Send consent", "offline_access consent")
    for name in ("security defaults", "Conditional Access", "remote domain", "mail flow rules", *consents):
        assert checks[name] == "pass", name
    # the user consented at Generate Token to its Scope; the test's sign-in widened the Graph grant by openid only
    [widened] = step.facts.grants_made
    assert checks["test message"] == "pass" and "scope offline_access openid)" in widened


def test_consent_is_read_as_it_is_not_as_the_policy_suggests(replayed):
    checks = {c.check: c for c in replayed("contoso").steps["05_verify"].checks}
    consent = checks["SMTP.Send consent"]
    assert consent.verdict == "warn" and "not consented yet" in consent.detail and "Generate Token" in consent.detail
    assert checks["external forwarding blockers"].verdict == "not tested"
