"""Touch only what is the kit's: the commands that read records never seal, write into or change the permissions
of a folder the kit did not make as a record; a tenant's name never becomes a path that leaves the archive; a
record renamed or forged shows. (Teardown's side of the same rule is in test_teardown.py.)"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from runbook_lib import cli
from runbook_lib.engine import journal
from runbook_lib.engine.changes import Change
from runbook_lib.records import integrity
from runbook_lib.records import store as records

from conftest import ROOT

pytestmark = pytest.mark.unit

OLD = time.time() - 3600  # older than the grace a record just opened is given


def folder_with_files(base: Path, name: str) -> Path:
    """Somebody's folder (a project, say), last changed an hour ago."""
    folder = base / name
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "main.py").write_text("print('mine')\n")
    (folder / "notes.txt").write_text("my notes\n")
    for path in [folder, folder / "src", folder / "src" / "main.py", folder / "notes.txt"]:
        os.utime(path, (OLD, OLD))
    return folder


def snapshot(base: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``base`` with its mode and size: what must not change."""
    return {str(p.relative_to(base)): (p.lstat().st_mode, p.lstat().st_size) for p in sorted(base.rglob("*"))}


def kit_record(archive: Path, tenant: str, stamp: str, *, changes: int = 0, sealed: bool = True) -> Path:
    """A record as the runner makes one: opened with its run entry, changes journaled, sealed at the end."""
    folder = archive / tenant / stamp
    folder.mkdir(parents=True)
    log = journal.Journal(folder / journal.JOURNAL_FILE)
    log.append("run", format=records.FORMAT, tenant=tenant, tenant_id="t-1", mode="sandbox", parameters={})
    log.append("step", step="02_azure_app_registration", event="started")
    for n in range(changes):
        made = Change("client secret", f"hint a{n}", "created", "add", None, {"keyId": f"k{n}"})
        log.append("change", step="02_azure_app_registration", change=made.as_dict())
    if sealed:
        entries = journal.read(log.path)
        manifest = records.manifest_for(
            entries[0], records.steps_from_journal(entries), entries, status="ok", finished="2026-01-01"
        )
        records.seal(folder, manifest)
    else:
        os.utime(folder, (OLD, OLD))
    return folder


@pytest.mark.parametrize("relative", [False, True], ids=["absolute path", "relative to the working folder"])
def test_show_on_a_folder_that_is_not_a_record_changes_nothing_beside_it(tmp_path, monkeypatch, capsys, relative):
    projects = tmp_path / "projects"
    target = folder_with_files(projects, "foo")
    folder_with_files(projects, "bar")
    folder_with_files(projects, "docs")
    before = snapshot(tmp_path)
    if relative:
        monkeypatch.chdir(projects)
    assert cli.main(["show", "foo" if relative else str(target)]) == 1
    assert "is not a run record" in capsys.readouterr().err
    assert snapshot(tmp_path) == before  # no manifest, no seal, no read-only tree anywhere


@pytest.mark.parametrize("tenant", ["../outside", "", "contoso/..", "/etc", "Contoso"])
def test_records_and_diff_refuse_a_tenant_name_that_is_a_path(tmp_path, capsys, tenant):
    archive = tmp_path / "archive"
    archive.mkdir()
    folder_with_files(tmp_path, "outside")
    before = snapshot(tmp_path)
    assert cli.main(["records", tenant, "--archive", str(archive)]) == 2
    assert "is not a tenant name" in capsys.readouterr().err
    assert cli.main(["diff", "--tenant", tenant, "--archive", str(archive)]) == 2
    error = capsys.readouterr().err
    assert "--tenant" in error and "is not a tenant name" in error and "[a-z0-9]" not in error  # words, no regex
    assert snapshot(tmp_path) == before


def test_a_symbolic_link_in_the_archive_is_never_followed_or_sealed(tmp_path, capsys):
    archive = tmp_path / "archive"
    outside = folder_with_files(tmp_path, "outside")
    (archive / "contoso").mkdir(parents=True)
    (archive / "contoso" / "20260101T000000Z").symlink_to(outside)
    (archive / "fabrikam").symlink_to(tmp_path / "outside")
    before = snapshot(tmp_path)
    assert cli.main(["records", "contoso", "--archive", str(archive)]) == 0
    assert "no records of tenant contoso" in capsys.readouterr().out
    assert cli.main(["records", "fabrikam", "--archive", str(archive)]) == 1
    assert "not a folder of the archive" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_only_folders_the_kit_opened_as_records_are_sealed_when_a_killed_run_is_found(tmp_path, capsys):
    archive = tmp_path / "archive"
    killed = kit_record(archive, "contoso", "20260101T000000Z", changes=1, sealed=False)
    strangers = [
        folder_with_files(archive / "contoso", "photos"),  # not named as a record
        folder_with_files(archive / "contoso", "20260102T000000Z"),  # named as one, but no journal of the kit's
    ]
    foreign = archive / "contoso" / "20260103T000000Z"  # a journal, but of another tenant
    foreign.mkdir()
    journal.Journal(foreign / journal.JOURNAL_FILE).append("run", tenant="fabrikam")
    os.utime(foreign, (OLD, OLD))
    before = {p: snapshot(p) for p in [*strangers, foreign]}
    assert cli.main(["records", "contoso", "--archive", str(archive)]) == 0
    out = capsys.readouterr()
    assert "sealed the interrupted record" in out.err and records.is_sealed(killed)
    assert {p: snapshot(p) for p in [*strangers, foreign]} == before
    assert records.record_dirs(archive, "contoso") == [killed]
    # the recovered record counts every write its journal holds (a kill -9 once showed 0)
    assert records.read_manifest(killed)["totals"]["writes"] == 1
    assert "20260101T000000Z" in out.out and " 1 " in out.out.splitlines()[1]


def test_a_record_renamed_to_another_time_does_not_verify(tmp_path):
    archive = tmp_path / "archive"
    record = kit_record(archive, "contoso", "20260105T000000Z")
    assert integrity.verify(record) == []
    moved = record.with_name("20250101T000000Z")
    record.parent.chmod(0o755)
    record.rename(moved)
    assert any(p.startswith("renamed:") for p in integrity.verify(moved))


def test_show_verifies_before_it_prints_and_marks_a_forged_record(tmp_path, capsys):
    record = kit_record(tmp_path / "archive", "contoso", "20260105T000000Z", changes=1)
    assert cli.main(["show", str(record)]) == 0
    assert "WARNING" not in capsys.readouterr().out
    integrity.make_writable(record)
    manifest = json.loads((record / "manifest.json").read_text())
    manifest["operator"]["local_account"] = "the-auditor"
    manifest["change"]["reason"] = "approved by the board"
    (record / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["show", str(record)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("WARNING: this record does not verify") and "manifest.json differs" in out


def test_records_lists_whether_each_record_verifies_and_is_signed(tmp_path, capsys):
    archive = tmp_path / "archive"
    kit_record(archive, "contoso", "20260105T000000Z")
    assert cli.main(["records", "contoso", "--archive", str(archive)]) == 0
    assert "intact, unsigned" in capsys.readouterr().out


def test_an_archive_that_is_a_file_is_refused(tmp_path, capsys):
    file = tmp_path / "archive"
    file.write_text("not a folder")
    assert cli.main(["records", "contoso", "--archive", str(file)]) == 2
    assert "--archive" in capsys.readouterr().err
    assert stat.S_ISREG(file.stat().st_mode) and file.read_text() == "not a folder"


def test_an_archive_that_cannot_be_made_is_a_clear_error_not_a_traceback(capsys):
    assert cli.main(["run", str(ROOT / "params" / "demo" / "contoso.yaml"), "--archive", "/proc/no-such/archive"]) == 1
    err = capsys.readouterr().err
    assert "/proc/no-such" in err and "Fix:" in err and "Traceback" not in err


def test_a_batch_record_whose_tenant_has_no_parameter_file_is_named(tmp_path, capsys):
    damaged = tmp_path / "batch"
    damaged.mkdir()
    (damaged / "batch.json").write_text(
        json.dumps({"status": "failed", "tenants": [{"tenant": "x", "status": "failed"}]})
    )
    assert cli.main(["batch", "--only-failed", str(damaged)]) == 1
    assert "every tenant entry needs its params_file" in capsys.readouterr().err
