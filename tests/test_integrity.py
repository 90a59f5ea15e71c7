"""Sealed records: every kind of tampering is named, signatures tie a record to a key, records form a chain."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.errors import RunbookError
from runbook_lib.records import integrity

pytestmark = pytest.mark.unit

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def make_record(tenant: Path, name: str, *, sign: Path | None = None, **fields: Any) -> Path:
    """A small record the way the runner makes one: files, then the manifest with its link, then the seal."""
    record = tenant / name
    (record / "logs").mkdir(parents=True)
    (record / "01_step.html").write_text("<p>created application</p>")
    (record / "01_step.ipynb").write_text('{"cells": []}')
    (record / "logs" / "mailbox.ps1").write_text("Set-Mailbox support")
    manifest = {
        "tenant": tenant.name,
        "started": "2024-05-01T10:00:00+00:00",
        "status": "ok",
        "operator": "alice",
        "files": integrity.file_hashes(record),
        "previous": integrity.previous_link(tenant),
        **fields,
    }
    (record / "manifest.json").write_text(json.dumps(manifest, indent=2))
    integrity.seal(record, signing_key=sign)
    return record


def rewrite_manifest(record: Path, **changes: Any) -> None:
    integrity.make_writable(record)
    manifest = json.loads((record / "manifest.json").read_text())
    manifest.update(changes)
    (record / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return make_record(tmp_path / "contoso", "20240501T100000Z")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "signing.pub"
    integrity.generate_key(private, public)
    return private, public


def test_a_clean_record_verifies_and_links_to_nothing(record):
    assert integrity.verify(record) == []
    seal = json.loads((record / "seal.json").read_text())
    assert seal["algorithm"] == "sha256" and seal["signature"] is None and seal["key_id"] is None
    assert json.loads((record / "manifest.json").read_text())["previous"] is None


def test_a_forged_operator_is_caught_by_the_seal(record):
    rewrite_manifest(record, operator="mallory")
    assert any("manifest.json differs from the sealed one" in p for p in integrity.verify(record))


def test_an_edited_file_is_named(record):
    integrity.make_writable(record)
    (record / "01_step.html").write_text("<p>nothing happened</p>")
    assert integrity.verify(record) == ["altered: 01_step.html no longer matches its sha256 in the manifest"]


def test_a_file_edited_with_its_hash_in_the_manifest_is_caught_by_the_seal(record):
    integrity.make_writable(record)
    (record / "logs" / "mailbox.ps1").write_text("Remove-Mailbox support")
    rewrite_manifest(record, files=integrity.file_hashes(record))
    problems = integrity.verify(record)
    assert len(problems) == 1 and "manifest.json differs from the sealed one" in problems[0]


def test_added_and_removed_files_are_named(record):
    integrity.make_writable(record)
    (record / "01_step.ipynb").unlink()
    (record / "logs" / "extra.txt").write_text("x")
    assert integrity.verify(record) == [
        "removed: 01_step.ipynb is named in the manifest but gone",
        "added: logs/extra.txt is not in the manifest",
    ]


def test_the_next_record_notices_a_deleted_or_rewritten_previous_one(tmp_path):
    tenant = tmp_path / "contoso"
    first = make_record(tenant, "20240501T100000Z")
    second = make_record(tenant, "20240501T100000Z-1")
    third = make_record(tenant, "20240502T090000Z")
    assert json.loads((third / "manifest.json").read_text())["previous"]["record"] == second.name
    assert integrity.previous_link(tenant, before=second.name)["record"] == first.name
    assert integrity.verify(second) == integrity.verify(third) == []

    # rewritten and sealed again, so the record itself verifies: only the next one can tell
    integrity.make_writable(second)
    (second / "seal.json").unlink()
    rewrite_manifest(second, status="failed")
    integrity.seal(second)
    assert integrity.verify(second) == []
    assert integrity.verify(third) == [
        f"the previous record {second.name} was rewritten: its manifest or seal "
        "no longer has the hash this record links to"
    ]

    integrity.make_writable(first)
    shutil.rmtree(first)
    assert integrity.verify(second) == [f"the previous record {first.name} named by this one is gone"]


def test_a_manifest_that_is_not_an_object_is_a_problem_not_a_crash(record):
    integrity.make_writable(record)
    (record / "manifest.json").write_text("[1, 2]")
    problems = integrity.verify(record)
    assert "manifest.json holds a JSON list, not the JSON object a record needs" in problems
    assert any("differs from the sealed one" in p for p in problems)


def test_an_unsealed_folder_and_a_missing_manifest_are_problems(tmp_path):
    old = tmp_path / "contoso" / "20230101T000000Z"
    old.mkdir(parents=True)
    (old / "manifest.json").write_text(json.dumps({"tenant": "contoso", "files": {}}))
    assert integrity.verify(old) == ["not sealed: the record has no seal.json (records made before sealing have none)"]
    assert integrity.previous_link(old.parent) is None  # unsealed records start no chain
    (old / "manifest.json").unlink()
    assert "manifest.json is missing" in integrity.verify(old)


def test_a_record_that_does_not_match_its_manifest_is_not_sealed(tmp_path):
    folder = tmp_path / "contoso" / "20240501T100000Z"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"tenant": "contoso", "files": {}}))
    (folder / "late.html").write_text("written after the manifest")
    with pytest.raises(RunbookError, match="added: late.html"):
        integrity.seal(folder)


def test_a_signed_record_verifies_with_its_key_only(tmp_path, keys):
    private, public = keys
    signed = make_record(tmp_path / "contoso", "20240501T100000Z", sign=private)
    assert integrity.verify(signed) == integrity.verify(signed, public_key=public) == []
    assert json.loads((signed / "seal.json").read_text())["key_id"] == integrity.key_id(integrity.load_public(public))

    other = tmp_path / "other"
    integrity.generate_key(other / "signing.pem", other / "signing.pub")
    problems = integrity.verify(signed, public_key=other / "signing.pub")
    assert len(problems) == 1 and problems[0].startswith("signed by another key")

    rewrite_manifest(signed, operator="mallory")
    assert any("signature by key" in p and "does not match" in p for p in integrity.verify(signed, public_key=public))


def test_an_unsigned_record_checked_against_a_key_is_not_signed(record, keys):
    assert integrity.verify(record, public_key=keys[1]) == [
        "not signed: the seal has no signature, but a public key was given to check it"
    ]


def test_sealed_files_and_folders_are_read_only(record):
    assert (record.stat().st_mode & 0o777) == 0o555 and ((record / "logs").stat().st_mode & 0o777) == 0o555
    for name in ("manifest.json", "seal.json", "01_step.html", "logs/mailbox.ps1"):
        assert ((record / name).stat().st_mode & 0o777) == 0o444
    if not AS_ROOT:  # root writes through any mode
        with pytest.raises(PermissionError):
            (record / "01_step.html").write_text("edited")
        with pytest.raises(PermissionError):
            (record / "new.txt").write_text("added")


def test_keys_are_created_once_private_and_checked_when_loaded(tmp_path, keys):
    private, public = keys
    assert (private.stat().st_mode & 0o777) == 0o600
    with pytest.raises(RunbookError, match="never overwritten"):
        integrity.generate_key(private, tmp_path / "new.pub")
    private.chmod(0o644)
    with pytest.raises(RunbookError, match="open to other users") as refused:
        integrity.load_private(private)
    assert "chmod 600" in refused.value.fix
    with pytest.raises(RunbookError, match="open to other users"):
        make_record(tmp_path / "contoso", "20240501T100000Z", sign=private)
    with pytest.raises(RunbookError, match="is missing"):
        integrity.load_private(tmp_path / "absent.pem")
    with pytest.raises(RunbookError, match="not a PEM Ed25519 public key"):
        integrity.load_public(private)
    garbled = tmp_path / "garbled.pem"
    garbled.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    garbled.chmod(0o600)
    with pytest.raises(RunbookError, match="not an unencrypted PEM Ed25519 private key"):
        integrity.load_private(garbled)
