"""`runbook attach`: a file added to a sealed record afterwards, sealed apart, checked by verify-record; a file
that looks like it holds a secret, or is too big, is refused."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from runbook_lib import cli
from runbook_lib.engine.changes import Change
from runbook_lib.engine.results import StepRecord
from runbook_lib.errors import RunbookError
from runbook_lib.records import integrity
from runbook_lib.records import store as records
from runbook_lib.tenant import powershell

from conftest import CANARY

pytestmark = pytest.mark.unit

TRANSCRIPT = """\
**********************
PowerShell transcript start
Start time: 20261130101500
Username: CONTOSO\\admin
Machine: ADMIN-PC (Microsoft Windows NT 10.0.19045.0)
Host Application: C:\\Program Files\\PowerShell\\7\\pwsh.dll
**********************
PS> .\\03_office365_mailbox.mailbox.ps1
Password: ********
authenticated SMTP enabled for support@contoso.onmicrosoft.com
**********************
PowerShell transcript end
"""
#: a client secret as Entra ID issues them (and the simulated tenant, with the leak-test canary in it)
CLIENT_SECRET = f"Q7x8Q~{CANARY}aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1y"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSJ9." + CANARY + "Sig0123456789abcdef"


def sealed_record(archive: Path, name: str = "20261130T100000Z") -> Path:
    """A small run record of tenant contoso, sealed as the runner seals one."""
    record = archive / "contoso" / name
    record.mkdir(parents=True)
    (record / "03_office365_mailbox.html").write_text("<p>4 planned</p>")
    step = StepRecord(
        "03_office365_mailbox",
        status="ok",
        changes=[Change("authenticated SMTP", "support@contoso.onmicrosoft.com", "planned", "enable SMTP AUTH")],
    )
    run = {"tenant": "contoso", "tenant_id": "contoso.onmicrosoft.com", "mode": "live", "parameters": {}}
    manifest = records.manifest_for(run, [step], [], status="ok", finished="2026-11-30T10:05:00+00:00")
    records.seal(record, manifest)
    return record


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return sealed_record(tmp_path / "archive")


@pytest.fixture
def transcript(tmp_path: Path) -> Path:
    path = tmp_path / "PowerShell_transcript.ADMIN-PC.20261130101500.txt"
    path.write_text(TRANSCRIPT)
    return path


def sealed_bytes(record: Path) -> tuple[bytes, bytes]:
    return (record / "manifest.json").read_bytes(), (record / "seal.json").read_bytes()


def test_an_attachment_keeps_the_record_sealed_and_is_listed(record, transcript, capsys):
    before = sealed_bytes(record)
    assert cli.main(["attach", str(record), str(transcript), "--note", "run by alice at 10:15"]) == 0
    out = capsys.readouterr().out
    assert "attachment 001: PowerShell_transcript.ADMIN-PC.20261130101500.txt" in out and "manifest sha256" in out

    assert sealed_bytes(record) == before  # what was sealed is untouched
    assert integrity.verify(record) == []
    folder = record / "attachments" / "001"
    assert (folder / transcript.name).read_text() == TRANSCRIPT
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["attached_to"] == {"record": record.name, "manifest_sha256": integrity.require_sealed(record)}
    assert manifest["note"] == "run by alice at 10:15" and manifest["previous"] is None
    for path in (record, record / "attachments", folder):
        assert stat.S_IMODE(path.stat().st_mode) == 0o555
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o444

    assert cli.main(["verify-record", str(record)]) == 0
    assert "files and 1 attachment(s) all match" in capsys.readouterr().out
    assert cli.main(["show", str(record)]) == 0
    assert "attachment 001: PowerShell_transcript" in capsys.readouterr().out


def test_the_kit_s_own_script_as_a_transcript_is_attachable(record, tmp_path):
    settings = powershell.Settings(
        "o'brien@contoso.onmicrosoft.com", "a41a0ba3566ed2091155f13e48e6d4f8@mail-us.imiconnect.io", True, "P", False
    )
    text = powershell.script(
        settings, tenant="contoso", version="1", date="2026-11-30", sections={"smtp_auth", "forwarding"}
    )
    path = tmp_path / "script.txt"
    path.write_text(TRANSCRIPT + text)
    assert integrity.secret_looking(path.read_text()) == []
    assert integrity.attach(record, path).file == "script.txt"


def test_a_tampered_attachment_is_named(record, transcript, capsys):
    integrity.attach(record, transcript)
    folder = record / "attachments" / "001"
    integrity.make_writable(record)
    (folder / transcript.name).write_text(TRANSCRIPT.replace("enabled", "disabled"))
    assert integrity.verify(record) == [
        f"attachment 001: altered: {transcript.name} no longer matches its sha256 in the manifest"
    ]
    assert cli.main(["verify-record", str(record)]) == 1
    assert "attachment 001: altered" in capsys.readouterr().out

    (folder / "extra.txt").write_text("x")
    (record / "attachments" / "loose.txt").write_text("x")
    problems = integrity.verify(record)
    assert "attachment 001: added: extra.txt is not in the manifest" in problems
    assert any(p.startswith("attachment loose.txt: not an attachment's folder") for p in problems)


def test_attachments_form_a_chain_and_belong_to_their_record(record, transcript, tmp_path):
    integrity.attach(record, transcript)
    second = integrity.attach(record, transcript, note="the second run of the script")
    assert second.folder == "002"
    link = json.loads((record / "attachments" / "002" / "manifest.json").read_text())["previous"]
    assert link["record"] == "001"

    integrity.make_writable(record)
    moved = tmp_path / "001"
    (record / "attachments" / "001").rename(moved)
    assert integrity.verify(record) == ["attachment 002: the previous record 001 named by this one is gone"]

    other = sealed_record(tmp_path / "archive", "20261130T110000Z")
    integrity.make_writable(other)
    (other / "attachments").mkdir()
    moved.rename(other / "attachments" / "001")
    assert integrity.verify(other) == [
        "attachment 001: it was attached to another record, or to this one before its manifest changed"
    ]


def test_a_signed_attachment_is_checked_against_the_organisation_s_key(record, transcript, tmp_path, capsys):
    private, public = tmp_path / "keys" / "k.pem", tmp_path / "keys" / "k.pub"
    integrity.generate_key(private, public)
    other_private, other_public = tmp_path / "keys" / "o.pem", tmp_path / "keys" / "o.pub"
    integrity.generate_key(other_private, other_public)
    assert cli.main(["attach", str(record), str(transcript), "--sign-key", str(private)]) == 0
    assert "signed by key" in capsys.readouterr().out

    # the record itself was sealed without a key: only the attachment is signed
    assert integrity.verify(record, public_key=public) == [
        "not signed: the seal has no signature, but a public key was given to check it"
    ]
    problems = integrity.verify(record, public_key=other_public)
    assert any(p.startswith("attachment 001: signed by another key") for p in problems)
    integrity.attach(record, transcript)
    assert "attachment 002: not signed: the seal has no signature, but a public key was given to check it" in (
        integrity.verify(record, public_key=public)
    )


@pytest.mark.parametrize(
    "line",
    [
        f"$secret = '{CLIENT_SECRET}'",
        f"Connect-ExchangeOnline -AccessToken {JWT}",
        f'{{"client_secret": "{CANARY}-not-a-real-value"}}',
        f"grant_type=refresh_token&refresh_token=1.AXoA{CANARY}abcdef",
        f"New-MgServicePrincipal -Password {CANARY}hunter2",
        f"$p = ConvertTo-SecureString '{CANARY}' -AsPlainText -Force",
    ],
)
def test_a_file_holding_a_secret_is_refused_without_quoting_it(record, tmp_path, line):
    path = tmp_path / "transcript.txt"
    path.write_text(TRANSCRIPT + line + "\n")
    with pytest.raises(RunbookError) as refused:
        integrity.attach(record, path)
    assert "was not attached: it holds what looks like a secret (line 13:" in refused.value.message
    assert CANARY not in refused.value.explain()
    assert not (record / "attachments").exists() and integrity.verify(record) == []


def test_a_windows_powershell_transcript_in_utf16_is_checked_too(record, tmp_path, capsys):
    path = tmp_path / "transcript.txt"
    leaked = TRANSCRIPT + f"$secret = '{CLIENT_SECRET}'\n"
    for encoding in ("utf-16", "utf-16-le"):  # with a byte order mark, and without
        path.write_bytes(leaked.encode(encoding))
        assert cli.main(["attach", str(record), str(path)]) == 1
        err = capsys.readouterr().err
        assert "a client secret value" in err and CANARY not in err
    path.write_bytes(TRANSCRIPT.encode("utf-16"))
    assert integrity.attach(record, path).size == len(TRANSCRIPT.encode("utf-16"))


def test_a_secret_in_the_note_is_refused(record, transcript):
    with pytest.raises(RunbookError, match="the note, line 1: a client secret value"):
        integrity.attach(record, transcript, note=f"secret was {CLIENT_SECRET}")
    with pytest.raises(RunbookError, match="the note has 501 characters; at most 500"):
        integrity.attach(record, transcript, note="x" * 501)


def test_what_cannot_be_attached_is_refused_naming_why(record, tmp_path, monkeypatch):
    with pytest.raises(RunbookError, match="No such file"):
        integrity.attach(record, tmp_path / "missing.txt")
    with pytest.raises(RunbookError, match="not a regular file"):
        integrity.attach(record, tmp_path)
    empty = tmp_path / "empty.txt"
    empty.touch()
    with pytest.raises(RunbookError, match="holds 0 bytes; an attachment holds 1 to"):
        integrity.attach(record, empty)
    monkeypatch.setattr(integrity, "ATTACHMENT_MAX_BYTES", 100)
    big = tmp_path / "big.txt"
    big.write_text("x" * 101)
    with pytest.raises(RunbookError, match="holds 101 bytes; an attachment holds 1 to 100 bytes"):
        integrity.attach(record, big)
    assert not (record / "attachments").exists()


def test_only_an_intact_sealed_record_takes_an_attachment(tmp_path, transcript, capsys):
    unsealed = tmp_path / "archive" / "contoso" / "20261130T120000Z"
    unsealed.mkdir(parents=True)
    assert cli.main(["attach", str(unsealed), str(transcript)]) == 1
    assert "does not verify" in capsys.readouterr().err

    record = sealed_record(tmp_path / "archive")
    integrity.make_writable(record)
    (record / "03_office365_mailbox.html").write_text("<p>nothing planned</p>")
    with pytest.raises(RunbookError, match="does not verify, so nothing is attached to it: altered"):
        integrity.attach(record, transcript)
    with pytest.raises(RunbookError, match="is not a run record: it is not a folder"):
        integrity.attach(tmp_path / "nowhere", transcript)


def test_a_file_name_cannot_pose_as_the_manifest(record, tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{}")
    assert integrity.attach(record, path).file == "attached-manifest.json"
    odd = tmp_path / ".hidden name$.txt"
    odd.write_text("x")
    assert integrity.attach(record, odd).file == "hidden_name_.txt"
    assert integrity.verify(record) == []


def test_an_attach_that_fails_leaves_no_half_made_attachment(record, transcript, monkeypatch):
    def crash(folder: Path, **_: object) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(integrity, "seal", crash)
    with pytest.raises(RunbookError, match="could not attach .* No space left on device"):
        integrity.attach(record, transcript)
    assert list((record / "attachments").iterdir()) == []
    for path in (record, record / "attachments"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o555  # read-only again
    monkeypatch.undo()
    assert integrity.verify(record) == [] and integrity.attach(record, transcript).folder == "001"
