"""Troubleshooting: the knowledge base and diagnose()."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from runbook_lib import cli
from runbook_lib.config import knowledge
from runbook_lib.engine.results import StepRecord
from runbook_lib.errors import ParamsError
from runbook_lib.records import store as records
from runbook_lib.steps import diagnose

from conftest import ROOT

pytestmark = pytest.mark.unit

NOTEBOOKS = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
#: a fix names the notebook that applies it: troubleshooting itself only explains
FIXING = NOTEBOOKS - {"06_troubleshoot"}
#: the vendors whose pages the knowledge base cites
VENDOR_DOMAINS = ("microsoft.com", "webexconnect.io", "webex.com", "cisco.com")
SAMPLE = {
    "aadsts": "AADSTS{code}: something went wrong",
    "smtp": "550 {code} the server said no",
    "graph": '{{"error": {{"code": "{code}"}}}}',
    "checks": "05_verify: [{code}] a check failed",
}


def sample_code(kind: str, code: str) -> str:
    """The code a sample message carries: the first code of an SMTP range entry (4.7.500 for 4.7.500-699)."""
    return code.split("-")[0] if kind == "smtp" else code


def from_vendor(url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme == "https" and any(host == d or host.endswith(f".{d}") for d in VENDOR_DOMAINS)


@pytest.mark.parametrize("key", sorted(knowledge.entries()), ids=lambda k: f"{k[0]}-{k[1]}")
def test_every_entry_is_reachable_names_a_fixing_notebook_and_its_source(key):
    kind, code = key
    entry = knowledge.entries()[key]
    for each in (entry, *(variant for _, variant in entry.when)):
        assert (each.notebook in FIXING or each.notebook == "") and each.meaning and each.fix
        if each.notebook == "":  # a portal setting: its fix says where, in which admin center or portal
            assert any(w in each.fix for w in ("admin center", "portal", "Restricted entities")), each.fix
        assert from_vendor(each.source), each.source
    findings = diagnose.diagnose(SAMPLE[kind].format(code=sample_code(kind, code)))
    assert [(f.kind, f.code.removeprefix("AADSTS")) for f in findings][:1] == [(kind, sample_code(kind, code))]
    assert findings[0].source == entry.source


def test_vendor_domains_are_checked_by_host_not_by_substring():
    assert from_vendor("https://learn.microsoft.com/en-us/graph/errors")
    assert from_vendor("https://help.webexconnect.io/docs/email-cce")
    assert not from_vendor("http://learn.microsoft.com/en-us/graph/errors")
    assert not from_vendor("https://learn.microsoft.com.example.net/x")
    assert not from_vendor("https://notmicrosoft.com/x")


#: codes operators meet, in the words Microsoft's services answer with -> (code, notebook, words of the meaning)
REAL_MESSAGES = {
    "mfa required": (
        "AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new "
        "location, you must use multi-factor authentication to access '00000002-0000-0ff1-ce00-000000000000'.",
        "AADSTS50076",
        "04_webex_connect_email_app",
        "multifactor",
    ),
    "mfa registration required": (
        "AADSTS50079: Due to a configuration change made by your administrator, or because you moved to a new "
        "location, you must enroll in multi-factor authentication to access 'https://outlook.office.com'.",
        "AADSTS50079",
        "04_webex_connect_email_app",
        "registered",
    ),
    "disabled account": (
        '{"error":"invalid_grant","error_description":"AADSTS50057: User account is disabled.\\r\\nTrace ID: '
        '9bdf8b2c-5649-499a-a85a-db48deaa1900\\r\\nCorrelation ID: 1da0ba1d-a424-471b-9db4-74ab74ed7fab",'
        '"error_codes":[50057]}',
        "AADSTS50057",
        "",  # a portal setting
        "shared mailbox",
    ),
    "expired password": (
        "invalid_grant: AADSTS50055: The password is expired. Trace ID: 0000aaaa-11bb-cccc-dd22-eeeeee333333",
        "AADSTS50055",
        "04_webex_connect_email_app",
        "password has expired",
    ),
    "not assigned": (
        "AADSTS50105: Your administrator has configured the application Webex Connect Email "
        "('b30b8215-49ba-4804-a8d6-67c23d4934f2') to block users unless they are specifically granted "
        "('assigned') access to the application. The signed in user 'support@contoso.onmicrosoft.com' is "
        "blocked because they are not a direct member of a group with access, nor had access directly assigned "
        "by an administrator. Please contact your administrator to assign access to this application.",
        "AADSTS50105",
        "",  # a portal setting
        "Assignment required",
    ),
    "response type not enabled": (
        "error=unsupported_response_type&error_description=AADSTS700051: response_type 'token' is not enabled "
        "for the application.",
        "AADSTS700051",
        "02_azure_app_registration",
        "implicit-grant",
    ),
    "code already redeemed": (
        "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new valid code or use "
        "an existing refresh token.",
        "AADSTS54005",
        "04_webex_connect_email_app",
        "already redeemed",
    ),
    "code expired": (
        "invalid_grant AADSTS70008: The provided authorization code or refresh token has expired due to "
        "inactivity. Send a new interactive authorization request for this user and resource.",
        "AADSTS70008",
        "04_webex_connect_email_app",
        "expired",
    ),
    "first-party client not preauthorized": (
        "AADSTS65002: Consent between first party application '14d82eec-204b-4c2f-b7e8-296a70dab67e' and first "
        "party resource '00000002-0000-0ff1-ce00-000000000000' must be configured via preauthorization - "
        "applications owned and operated by Microsoft must get approval from the API owner before requesting "
        "tokens for that API.",
        "AADSTS65002",
        "02_azure_app_registration",
        "preauthorized",
    ),
    "resource not in the tenant": (
        "AADSTS500011: The resource principal named https://proxy.contoso.test was not found in the tenant named "
        "Contoso. This can happen if the application has not been installed by the administrator of the tenant "
        "or consented to by any user in the tenant.",
        "AADSTS500011",
        "01_webex_connect_app",
        "resource the tenant does not have",
    ),
    "connection dropped": (
        '451 4.4.0 Primary target IP address responded with: "421 4.4.2 Connection dropped due to SocketError." '
        "Attempted failover to alternate host, but that did not succeed.",
        "4.4.2",
        "04_webex_connect_email_app",
        "connection dropped",
    ),
    "submission quota": (
        "Remote Server returned '550 5.2.2 Submission quota exceeded'",
        "5.2.2",
        "03_office365_mailbox",
        "sending limits",
    ),
    "mailbox full": (
        "Remote Server returned '554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException."
        "MapiExceptionQuotaExceeded; Failed to process message due to a permanent exception'",
        "5.2.2",
        "03_office365_mailbox",
        "mailbox is full",
    ),
    "basic auth": (
        "550 5.7.30 Basic authentication is not supported for Client Submission.",
        "5.7.30",
        "04_webex_connect_email_app",
        "December 2026",
    ),
    "sending mailbox full": (
        "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException."
        "MapiExceptionShutoffQuotaExceeded; Failed to process message due to a permanent exception with message "
        "[BeginDiagnosticData]",
        "5.2.2",
        "03_office365_mailbox",
        "sending mailbox is full",
    ),
    "daily recipient limit": (
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to "
        "a permanent exception with message [BeginDiagnosticData]Cannot submit message.",
        "5.2.0",
        "03_office365_mailbox",
        "10,000 recipients",
    ),
    "send as denied at submission": (
        "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process "
        "message due to a permanent exception with message Cannot submit message.",
        "5.2.0",
        "04_webex_connect_email_app",
        "send as right",
    ),
    "concurrent connections": (
        "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more "
        "information. [Hostname=DM4PR18MB4126.namprd18.prod.outlook.com]",
        "4.3.2",
        "03_office365_mailbox",
        "three smtp auth connections",
    ),
    "recipient thread limit": (
        "432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded",
        "4.3.2",
        "03_office365_mailbox",
        "receiving too many messages",
    ),
    "bad outbound sender": (
        "Remote Server returned '550 5.1.8 Access denied, bad outbound sender AS(42004)'",
        "5.1.8",
        "",  # a portal setting
        "blocked from sending",
    ),
    "spam abuse": (
        "Remote Server returned '550 5.7.501 Access denied, spam abuse detected. For more information please go to "
        "http://go.microsoft.com/fwlink/?LinkId=526653'",
        "5.7.501",
        "03_office365_mailbox",
        "banned",
    ),
    "banned sender": (
        "550 5.7.503 Access denied, banned sender",
        "5.7.503",
        "03_office365_mailbox",
        "banned",
    ),
    "recipient rejected": (
        "550 5.7.504 [support@contoso.com]: Recipient address rejected: Access denied",
        "5.7.504",
        "03_office365_mailbox",
        "recipient address was rejected",
    ),
    "tenant over threshold": (
        "Remote Server returned '550 5.7.705 Access denied, tenant has exceeded threshold'",
        "5.7.705",
        "03_office365_mailbox",
        "whole tenant is blocked",
    ),
    "unregistered domain": (
        "550 5.7.750 Service unavailable. Client blocked from sending from unregistered domains.",
        "5.7.750",
        "03_office365_mailbox",
        "unregistered domains",
    ),
    "graylisted": (
        "451 4.7.500 Server busy. Please try again later from [198.51.100.7]. (S77719)",
        "4.7.500",
        "03_office365_mailbox",
        "temporary refusal",
    ),
    "missing service principal": (
        '{"error":"invalid_client","error_description":"AADSTS7000229: The client application '
        "3fa85f64-5717-4562-b3fc-2c963f66afa6 is missing service principal in the tenant "
        "aaaabbbb-0000-cccc-1111-dddd2222eeee. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119 "
        'Trace ID: 0000aaaa-11bb-cccc-dd22-eeeeee333333","error_codes":[7000229]}',
        "AADSTS7000229",
        "02_azure_app_registration",
        "no service principal",
    ),
    "account not in the tenant": (
        "AADSTS50034: The user account support@contoso.com does not exist in the contoso.onmicrosoft.com directory. "
        "To sign into this application, the account must be added to the directory.",
        "AADSTS50034",
        "04_webex_connect_email_app",
        "does not exist in this tenant",
    ),
    "locked account": (
        "AADSTS50053: The account is locked, you've tried to sign in too many times with an incorrect user ID or "
        "password.",
        "AADSTS50053",
        "04_webex_connect_email_app",
        "smart lockout",
    ),
    "malicious IP": (
        "AADSTS50053: Sign-in was blocked because it came from an IP address with malicious activity.",
        "AADSTS50053",
        "04_webex_connect_email_app",
        "ip address",
    ),
    "device not compliant": (
        "AADSTS53000: Device is not in required device state: compliant. Conditional Access policy requires a "
        "compliant device, and the device is not compliant. The user must enroll their device with an approved MDM "
        "provider like Intune.",
        "AADSTS53000",
        "",  # a portal setting
        "compliant",
    ),
    "external challenge": (
        "AADSTS50158: External security challenge not satisfied. User will be redirected to another page or "
        "authentication provider to satisfy additional authentication challenges.",
        "AADSTS50158",
        "04_webex_connect_email_app",
        "external security challenge",
    ),
    "resource disabled": (
        "AADSTS500014: The service principal for resource '00000002-0000-0ff1-ce00-000000000000' is disabled. This "
        "indicate that a subscription within the tenant has lapsed, or that the administrator for this tenant has "
        "disabled the application, preventing tokens from being issued for it.",
        "AADSTS500014",
        "",  # a portal setting
        "is disabled",
    ),
    "misconfigured application": (
        "AADSTS65005: The app requested consent to access resource Office 365 Exchange Online. This request failed "
        "because it does not match how the app was pre-configured during app registration. Contact the app vendor.",
        "AADSTS65005",
        "02_azure_app_registration",
        "api permissions",
    ),
    "invalid resource": (
        "AADSTS650057: Invalid resource. The client has requested access to a resource which is not listed in the "
        "requested permissions in the client's application registration. Client app ID: "
        "3fa85f64-5717-4562-b3fc-2c963f66afa6(Webex Connect Email). Resource value from request: "
        "https://outlook.office.com. Resource app ID: 00000002-0000-0ff1-ce00-000000000000.",
        "AADSTS650057",
        "02_azure_app_registration",
        "not among the application's requested permissions",
    ),
    "missing parameter": (
        "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
        "AADSTS900144",
        "04_webex_connect_email_app",
        "lacked a parameter",
    ),
    "need admin approval": (
        "AADSTS90094: Need admin approval. The grant requires admin permission.",
        "AADSTS90094",
        "02_azure_app_registration",
        "need admin approval",
    ),
    "secrets blocked by policy": (
        '{"error":{"code":"CredentialTypeNotAllowedAsPerAppPolicy","message":"Credential type not allowed as per '
        'assigned policy.","innerError":{"date":"2026-11-29T10:00:00","request-id":"1"}}}',
        "CredentialTypeNotAllowedAsPerAppPolicy",
        "02_azure_app_registration",
        "passwordaddition",
    ),
    "secret lifetime over policy": (
        '{"error":{"code":"CredentialInvalidLifetimeAsPerAppPolicy","message":"Credential lifetime exceeds the max '
        'value allowed as per assigned policy."}}',
        "CredentialInvalidLifetimeAsPerAppPolicy",
        "02_azure_app_registration",
        "passwordlifetime",
    ),
}


@pytest.mark.parametrize("name", sorted(REAL_MESSAGES))
def test_codes_operators_meet_are_explained_from_the_message_they_see(name):
    text, code, notebook, words = REAL_MESSAGES[name]
    [finding] = diagnose.diagnose(text)
    assert (finding.code, finding.notebook) == (code, notebook)
    assert words.lower() in finding.meaning.lower()
    assert from_vendor(finding.source)


def test_a_quota_ndr_cites_the_page_of_its_own_meaning():
    submission = diagnose.diagnose(REAL_MESSAGES["submission quota"][0])[0]
    full = diagnose.diagnose(REAL_MESSAGES["mailbox full"][0])[0]
    assert "keep_copy" in full.fix and "keep_copy" not in submission.fix
    assert submission.source.endswith("/ndr/non-delivery-reports-in-exchange-online")
    assert full.source.endswith("/non-delivery-reports-and-bounce-messages")


def test_a_pasted_ndr_and_log_give_each_code_once_in_order():
    text = (
        "Delivery has failed to these recipients or groups:\n"
        "Remote Server returned '550 5.7.520 Access denied, Your organization does not allow external "
        "forwarding. Please contact your administrator for further assistance. AS(7555)'\n"
        "msal: invalid_client AADSTS7000215: Invalid client secret provided. Trace ID: 1\n"
        "again: AADSTS7000215\n"
    )
    findings = diagnose.diagnose(text)
    assert [f.code for f in findings] == ["5.7.520", "AADSTS7000215"]
    assert findings[0].notebook == "03_office365_mailbox" and "Value" in findings[1].fix


def test_variants_refine_by_the_words_around_the_code():
    tenant = diagnose.diagnose(
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."
    )
    defaults = diagnose.diagnose(
        "535 5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy."
    )
    assert tenant[0].notebook == "03_office365_mailbox" and defaults[0].notebook == ""  # defaults: a portal setting
    assert "security defaults" in defaults[0].meaning and "security defaults" not in tenant[0].meaning
    assert defaults[0].source.endswith("/security-defaults") and tenant[0].source != defaults[0].source


def test_5_2_2_at_submission_is_the_sending_mailbox_full_and_a_recipients_only_when_the_ndr_says_so():
    sending = diagnose.diagnose(REAL_MESSAGES["sending mailbox full"][0])[0]
    recipient = diagnose.diagnose(REAL_MESSAGES["mailbox full"][0])[0]
    bare = diagnose.diagnose("550 5.2.2 the server said no")[0]
    for finding in (sending, bare):
        assert "sending mailbox is full" in finding.meaning and "Sent Items" in finding.meaning
        assert "recipient" not in finding.meaning
        assert finding.source.endswith("/send-emails/smtp-submission-improvements")
    assert "recipient's mailbox is full" in recipient.meaning and "sending" not in recipient.meaning
    quota = diagnose.diagnose(REAL_MESSAGES["submission quota"][0])[0]
    assert "5.2.0" in quota.meaning


def test_5_7_3_does_not_blame_smtp_auth_being_off():
    [finding] = diagnose.diagnose("535 5.7.3 Authentication unsuccessful [SN4PR0601CA0002.namprd06.prod.outlook.com]")
    assert finding.notebook == "04_webex_connect_email_app" and "SMTP AUTH" not in finding.meaning
    assert "step 3" not in finding.fix and "Scope" in finding.fix


#: Exchange's documented 5.7.139 replies -> (notebook, words of the meaning, the end of the source's address)
REPLIES_5_7_139 = {
    "SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more "
    "information.": ("03_office365_mailbox", "on this mailbox itself", "/authenticated-client-smtp-submission"),
    "SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more "
    "information.": ("03_office365_mailbox", "tenant-wide", "/authenticated-client-smtp-submission"),
    "user is locked by your organization's security defaults policy. Contact your administrator.": (
        "",
        "security defaults are on",
        "/security-defaults",
    ),
    "the request did not meet the criteria to be authenticated successfully. Contact your administrator.": (
        "02_azure_app_registration",
        "conditional access",
        "/troubleshoot-conditional-access",
    ),
    "basic authentication is disabled.": (
        "04_webex_connect_email_app",
        "basic authentication",
        "/disable-basic-authentication-in-exchange-online",
    ),
}


@pytest.mark.parametrize("reply", sorted(REPLIES_5_7_139))
def test_each_documented_5_7_139_reply_has_its_own_meaning(reply):
    notebook, words, source = REPLIES_5_7_139[reply]
    [finding] = diagnose.diagnose(f"535 5.7.139 Authentication unsuccessful, {reply} [DM6PR04CA0010.outlook.com]")
    assert finding.notebook == notebook and finding.source.endswith(source)
    assert words in finding.meaning.lower()
    others = [diagnose.diagnose(f"535 5.7.139 Authentication unsuccessful, {r}")[0].meaning for r in REPLIES_5_7_139]
    assert others.count(finding.meaning) == 1


def test_basic_authentication_disabled_is_fixed_by_oauth_not_by_enabling_smtp_auth():
    [finding] = diagnose.diagnose("535 5.7.139 Authentication unsuccessful, basic authentication is disabled.")
    assert "OAuth 2.0" in finding.fix and "is not the fix" in finding.fix
    assert not finding.fix.lower().startswith("enable authenticated smtp")


def test_offline_access_needs_consent_on_microsoft_graph_too():
    [finding] = diagnose.diagnose(
        "scope=offline_access https://outlook.office.com/SMTP.Send error=invalid_grant AADSTS65001: The user or "
        "administrator has not consented to use the application with ID '3fa85f64-5717-4562-b3fc-2c963f66afa6'."
    )
    assert finding.notebook == "02_azure_app_registration" and "Microsoft Graph" in finding.meaning
    assert "consent: admin" in finding.fix and "offline_access on Microsoft Graph" in finding.fix
    assert finding.source.endswith("/configure-permission-classifications")


@pytest.mark.parametrize("code", ["90094", "65001"])
def test_consent_refused_at_generate_token_gives_webexs_own_instruction(code):
    [finding] = diagnose.diagnose(f"Generate Token failed: AADSTS{code}: the grant requires admin permission.")
    assert finding.notebook == "04_webex_connect_email_app" and from_vendor(finding.source)
    assert "webexconnect.io" in finding.source and "explicitly review" in finding.fix
    assert "consent: admin" in finding.fix


def test_an_smtp_range_entry_covers_its_codes_and_a_code_of_its_own_wins(monkeypatch):
    ranged = knowledge.lookup("smtp", "4.7.500-699")
    assert ranged is not None and ranged.source.endswith("/fix-error-code-451-4-7-500-699-asxxx-in-exchange-online")
    assert knowledge.lookup("smtp", "4.7.500") is ranged and knowledge.lookup("smtp", "4.7.699") is ranged
    assert knowledge.lookup("smtp", "4.7.499") is None and knowledge.lookup("smtp", "4.7.700") is None
    assert knowledge.lookup("smtp", "5.7.512") is None and knowledge.lookup("aadsts", "4.7.512") is None
    own = GOOD.removeprefix("smtp:\n")
    parsed = knowledge.parse(GOOD.replace("  5.2.2:", "  5.2.0-9:").replace("meaning: quota", "meaning: range") + own)
    monkeypatch.setattr(knowledge, "entries", lambda: parsed)
    assert knowledge.lookup("smtp", "5.2.2").meaning == "quota" and knowledge.lookup("smtp", "5.2.7").meaning == "range"
    assert diagnose.diagnose("452 5.2.9 over quota")[0].code == "5.2.9"


def test_unknown_text_is_not_recognized_and_says_what_to_collect():
    assert diagnose.diagnose("the printer is on fire; error 42") == []
    row = diagnose.table([]).iloc[0]
    assert row["code"] == "(none)" and "not recognized" in row["meaning"] and "Correlation ID" in row["fix"]
    assert row["notebook"] == "05_verify"


def test_the_notebook_tables_show_each_finding_and_entry_with_its_source():
    findings = diagnose.diagnose("AADSTS50011 at Generate Token; then 550 5.7.520 Access denied")
    table = diagnose.table(findings)
    assert list(table.columns) == ["code", "meaning", "fix", "notebook", "source"]
    assert list(table["source"]) == [f.source for f in findings] and all(table["source"])
    every = diagnose.knowledge_table()
    assert len(every) == len(knowledge.entries()) and every["source"].map(from_vendor).all()


def test_version_numbers_are_not_smtp_codes():
    assert diagnose.diagnose("kit 1.2.3, python 3.11.7, address 10.5.7.139") == []


def test_cli_reads_text_file_and_standard_input(tmp_path, capsys, monkeypatch):
    assert cli.main(["diagnose", "AADSTS50011 at Generate Token"]) == 0
    out = capsys.readouterr().out
    assert "redirect URI mismatch" in out
    assert f"  source: {knowledge.lookup('aadsts', 50011).source}\n" in out
    ndr = tmp_path / "ndr.txt"
    ndr.write_text("550 5.7.520 Access denied")
    assert cli.main(["diagnose", "--file", str(ndr)]) == 0
    assert "03_office365_mailbox" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("nothing known here"))
    assert cli.main(["diagnose", "-"]) == 0
    assert "not recognized" in capsys.readouterr().out


def test_a_record_is_diagnosed_from_its_failed_steps_and_checks(tmp_path, capsys):
    record = tmp_path / "archive" / "acme" / "20261129T000000Z"
    record.mkdir(parents=True)
    (tmp_path / "archive" / "acme" / ".tmp-half-written").mkdir()
    unsealed = tmp_path / "archive" / "acme" / "20261129T010000Z"
    unsealed.mkdir()
    steps = [
        {
            "step": "05_verify",
            "status": "failed",
            "error": "2 check(s) failed",
            "checks": [
                {
                    "check": "app-only token",
                    "verdict": "fail",
                    "detail": "AADSTS7000222: expired",
                    "code": "AADSTS7000222",
                },
                {"check": "client secret", "verdict": "pass", "detail": "ok", "code": "client secret"},
            ],
        }
    ]
    records.seal(record, {"steps": steps})
    assert diagnose.latest_record("acme", tmp_path / "archive") == record
    assert cli.main(["diagnose", "--tenant", "acme", "--archive", str(tmp_path / "archive")]) == 0
    assert "the client secret has expired" in capsys.readouterr().out
    assert cli.main(["diagnose", "--tenant", "nobody", "--archive", str(tmp_path / "archive")]) == 2


def test_a_record_made_before_findings_had_sources_still_reads():
    old = {
        "code": "5.7.520",
        "kind": "smtp",
        "meaning": "m",
        "fix": "f",
        "notebook": "03_office365_mailbox",
        "context": "550 5.7.520",
    }
    [finding] = StepRecord.from_json({"step": "06_troubleshoot", "status": "ok", "findings": [old]}).findings
    assert finding.source == "" and finding.code == "5.7.520"


GOOD = (
    "smtp:\n"
    "  5.2.2:\n"
    "    meaning: quota\n"
    "    fix: look\n"
    "    notebook: 03_office365_mailbox\n"
    "    source: https://learn.microsoft.com/a\n"
    "    when:\n"
    "      - contains: [mailbox full]\n"
    "        meaning: full\n"
    "        fix: make room\n"
    "        notebook: 03_office365_mailbox\n"
)


def test_a_variant_without_its_own_source_cites_its_entrys():
    entry = knowledge.parse(GOOD)[("smtp", "5.2.2")]
    assert entry.refined("554 5.2.2 mailbox full").source == "https://learn.microsoft.com/a"


@pytest.mark.parametrize(
    "change, named",
    [
        (("    source: https://learn.microsoft.com/a\n", ""), "smtp 5.2.2: no source"),
        (("https://learn.microsoft.com/a", "http://learn.microsoft.com/a"), "is not an https URL"),
        (
            ("    notebook: 03_office365_mailbox\n    source", "    notebook: 06_troubleshoot\n    source"),
            "notebook '06_troubleshoot' is not a step that applies a fix",
        ),
        (
            ("        fix: make room\n", "        fix: make room\n        sorce: https://x\n"),
            "smtp 5.2.2: when[0]: unknown key 'sorce'",
        ),
        (("      - contains: [mailbox full]\n", "      - contains: []\n"), "contains must be a non-empty list"),
        (("smtp:", "sntp:"), "sntp: not a kind of code"),
        (("  5.2.2:", "  4.7.699-500:"), "smtp 4.7.699-500: not a range of codes"),
    ],
)
def test_a_bad_entry_fails_loading_and_is_named(change, named):
    with pytest.raises(knowledge.KnowledgeBaseError) as raised:
        knowledge.parse(GOOD.replace(*change))
    assert named in str(raised.value) and "CONTRIBUTING.md" in str(raised.value)


def test_a_code_given_twice_is_refused_not_silently_replaced():
    twice = GOOD + GOOD.removeprefix("smtp:\n")
    with pytest.raises(ParamsError, match="appears twice"):
        knowledge.parse(twice)


def test_a_fix_in_a_portal_names_no_notebook_and_suggests_no_run():
    [defaults] = diagnose.diagnose("AADSTS530035")
    assert defaults.notebook == "" and "Microsoft Entra admin center" in defaults.fix
    assert diagnose.table([defaults])["notebook"].tolist() == [diagnose.PORTAL_SETTING]
    [pasted] = diagnose.diagnose("[secret_id_pasted] client secret")  # the store holds a Secret ID: step 2 repairs
    assert pasted.notebook == "02_azure_app_registration"
