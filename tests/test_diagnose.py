"""Troubleshooting: the knowledge base and diagnose()."""

from __future__ import annotations

import pytest

from runbook_lib import cli, diagnose, knowledge, records

from conftest import ROOT

pytestmark = pytest.mark.unit

NOTEBOOKS = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
SAMPLE = {
    "aadsts": "AADSTS{code}: something went wrong",
    "smtp": "550 {code} the server said no",
    "graph": '{{"error": {{"code": "{code}"}}}}',
    "checks": "05_verify: [{code}] a check failed",
}


@pytest.mark.parametrize("key", sorted(knowledge.entries()), ids=lambda k: f"{k[0]}-{k[1]}")
def test_every_entry_is_reachable_and_names_a_notebook(key):
    kind, code = key
    entry = knowledge.entries()[key]
    assert entry.notebook in NOTEBOOKS and entry.meaning and entry.fix
    for _, variant in entry.when:
        assert variant.notebook in NOTEBOOKS
    findings = diagnose.diagnose(SAMPLE[kind].format(code=code))
    assert [(f.kind, f.code.removeprefix("AADSTS")) for f in findings][:1] == [(kind, code)]


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
    assert tenant[0].notebook == "03_office365_mailbox"
    assert defaults[0].notebook == "05_verify" and "security defaults" in defaults[0].meaning


def test_unknown_text_is_not_recognized_and_says_what_to_collect():
    assert diagnose.diagnose("the printer is on fire; error 42") == []
    row = diagnose.table([]).iloc[0]
    assert row["code"] == "(none)" and "not recognized" in row["meaning"] and "Correlation ID" in row["fix"]


def test_version_numbers_are_not_smtp_codes():
    assert diagnose.diagnose("kit 1.2.3, python 3.11.7, address 10.5.7.139") == []


def test_cli_reads_text_file_and_standard_input(tmp_path, capsys, monkeypatch):
    assert cli.main(["diagnose", "AADSTS50011 at Generate Token"]) == 0
    assert "redirect URI mismatch" in capsys.readouterr().out
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
