"""Preflight: secret stores, the CA bundle, the recordings folder and the sandbox seed, checked offline."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trustme

from runbook_lib import paths
from runbook_lib.config import params, secrets
from runbook_lib.config.params import SecretRef
from runbook_lib.context import preflight
from runbook_lib.errors import ParamsError

from conftest import DEMO, ROOT

pytestmark = pytest.mark.unit


@pytest.fixture
def good(demo_raw: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The demo parameters with a store, recordings and archive of their own in tmp_path, all fine."""
    raw = copy.deepcopy(demo_raw)
    raw.update(
        recordings=str(tmp_path / "recordings"), secret_store={"file": str(tmp_path / "stores" / "client.secret")}
    )
    return raw


def check(raw: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    return preflight.problems(params.validate(raw), archive=tmp_path / "archive")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mode, p.stat().st_mtime_ns) for p in [folder, *folder.rglob("*")]}


def store(tmp_path: Path, mode: int = 0o600, folder: str = "private") -> Path:
    path = tmp_path / folder / "client.secret"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text("placeholder")
    path.chmod(mode)
    return path


def test_a_valid_setup_passes_and_nothing_is_created(good, tmp_path):
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    good["endpoints"] = {"ca_bundle": str(bundle)}
    before = snapshot(tmp_path)
    assert check(good, tmp_path) == {}
    preflight.require(params.validate(good), archive=tmp_path / "archive", source="t.yaml")
    assert snapshot(tmp_path) == before


def test_the_demo_tenant_and_its_committed_store_pass(tmp_path):
    demo = params.load(DEMO)
    assert demo.secret_store.file == "params/demo/secrets/contoso.secret"
    assert preflight.problems(demo, archive=ROOT / "archive") == {}


def test_a_store_readable_by_others_is_refused_with_the_chmod(good, tmp_path):
    path = store(tmp_path, 0o644)
    good["secret_store"] = {"file": str(path)}
    why = check(good, tmp_path)["secret_store"]
    assert "mode 0644" in why and f"chmod 600 {path}" in why


def test_etc_hostname_is_refused(good, tmp_path):
    if not Path("/etc/hostname").is_file():
        pytest.skip("no /etc/hostname here")
    good["secret_store"] = {"file": "/etc/hostname"}
    assert "/etc/hostname" in check(good, tmp_path)["secret_store"]


@pytest.mark.parametrize("folder", ["archive", "recordings", "notebooks", "params", "params/demo"])
def test_stores_inside_the_kits_shared_folders_are_refused(good, tmp_path, folder):
    good["secret_store"] = {"file": f"{folder}/client.secret"}
    why = check(good, tmp_path)["secret_store"]
    assert f"the kit's {folder.split('/')[0]}/ folder" in why and ".runbook/secrets/client.secret" in why
    assert not (ROOT / folder / "client.secret").exists()


def test_a_store_in_this_runs_archive_is_refused(good, tmp_path):
    good["secret_store"] = {"file": str(tmp_path / "archive" / "contoso" / "client.secret")}
    assert "this run's archive folder" in check(good, tmp_path)["secret_store"]


def test_a_link_is_judged_by_where_it_leads(good, tmp_path):
    private = store(tmp_path)
    link = tmp_path / "private" / "link.secret"
    link.symlink_to(private)
    good["secret_store"] = {"file": str(link)}
    assert check(good, tmp_path) == {}
    private.chmod(0o640)
    assert "chmod 600" in check(good, tmp_path)["secret_store"]
    outside = tmp_path / "private" / "archived.secret"
    outside.symlink_to(ROOT / "archive" / "contoso" / "client.secret")
    good["secret_store"] = {"file": str(outside)}
    assert "the kit's archive/ folder" in check(good, tmp_path)["secret_store"]
    loop = tmp_path / "private" / "loop.secret"
    loop.symlink_to(loop)
    good["secret_store"] = {"file": str(loop)}
    assert "cannot be checked" in check(good, tmp_path)["secret_store"]


def test_a_store_in_a_folder_others_can_write_is_refused(good, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    good["secret_store"] = {"file": str(shared / "client.secret")}
    why = check(good, tmp_path)["secret_store"]
    assert "mode 0777" in why and f"chmod 700 {shared}" in why


def test_a_folder_or_a_device_is_not_a_store(good, tmp_path):
    good["secret_store"] = {"file": str(tmp_path)}
    assert "is a folder" in check(good, tmp_path)["secret_store"]
    if Path("/dev/null").exists():
        good["secret_store"] = {"file": "/dev/null"}
        assert "a device" in check(good, tmp_path)["secret_store"]


def test_a_store_of_another_user_is_refused(good, tmp_path, monkeypatch):
    good["secret_store"] = {"file": str(store(tmp_path))}
    monkeypatch.setattr(preflight.os, "geteuid", lambda: os.getuid() + 4242)
    assert "belongs to another user" in check(good, tmp_path)["secret_store"]


def test_a_store_the_kit_cannot_write_is_refused(good, tmp_path, monkeypatch):
    path = store(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only = {path, locked}  # as for a user without write access (root has it everywhere)
    access = os.access
    monkeypatch.setattr(
        preflight.os,
        "access",
        lambda where, mode: access(where, mode) and not (mode & os.W_OK and Path(where) in read_only),
    )
    good["secret_store"] = {"file": str(path)}
    assert "is not writable" in check(good, tmp_path)["secret_store"]
    good["secret_store"] = {"file": str(locked / "client.secret")}
    assert f"folder {locked} is not writable" in check(good, tmp_path)["secret_store"]
    good["secret_store"] = {"file": str(locked / "sub" / "client.secret")}
    assert "cannot be created" in check(good, tmp_path)["secret_store"]


def test_the_operators_secret_file_must_exist(good, tmp_path):
    good["operator"] = {
        "sign_in": "client_credentials",
        "client_id": "11111111-2222-3333-4444-555555555555",
        "secret": {"file": str(tmp_path / "private" / "operator.secret")},
    }
    assert "does not exist" in check(good, tmp_path)["operator.secret"]
    good["operator"]["secret"] = {"file": str(store(tmp_path))}
    assert check(good, tmp_path) == {}


def test_a_keyring_store_needs_a_keyring(good, tmp_path, monkeypatch):
    import keyring
    from keyring.backends import fail

    good["secret_store"] = {"keyring": "webex-runbook/contoso"}
    monkeypatch.setattr(keyring, "get_keyring", lambda: fail.Keyring())
    why = check(good, tmp_path)["secret_store"]
    assert "no keyring" in why and "{file:" in why
    monkeypatch.setattr(keyring, "get_keyring", lambda: object())
    assert check(good, tmp_path) == {}


def test_a_missing_or_non_pem_ca_bundle_is_refused(good, tmp_path):
    good["endpoints"] = {"ca_bundle": str(tmp_path / "missing.pem")}
    assert "does not exist" in check(good, tmp_path)["endpoints.ca_bundle"]
    der = tmp_path / "ca.cer"
    der.write_bytes(b"0\x82\x03\x00 not a PEM file")
    good["endpoints"] = {"ca_bundle": str(der)}
    assert "holds no PEM certificate" in check(good, tmp_path)["endpoints.ca_bundle"]


def test_relative_recordings_stay_inside_the_kit(good, tmp_path):
    good["recordings"] = "../../x"
    assert "leads out of the kit" in check(good, tmp_path)["recordings"]
    good["recordings"] = "recordings/contoso/../fabrikam"
    assert check(good, tmp_path) == {}


def test_sandbox_mode_needs_its_seed(good, tmp_path):
    good["mode"] = "sandbox"
    assert "tenant.yaml" in check(good, tmp_path)["mode"]
    good["recordings"] = str(paths.project_root() / "recordings" / "contoso")
    assert check(good, tmp_path) == {}


def test_require_names_every_problem_at_once(good, tmp_path):
    good.update(recordings="../../x", secret_store={"file": "archive/client.secret"})
    with pytest.raises(ParamsError) as caught:
        preflight.require(params.validate(good), archive=tmp_path / "archive", source="t.yaml")
    assert set(caught.value.problems) == {"recordings", "secret_store"} and caught.value.source == "t.yaml"


def test_stores_the_kit_creates_are_private_and_pass(good, tmp_path):
    copy_ref = secrets.private_copy(params.load(DEMO).secret_store, tmp_path / "a" / "b")
    written = SecretRef(file=str(tmp_path / "c" / "d" / "client.secret"))
    secrets.write(written, "placeholder")
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "c", tmp_path / "c" / "d"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for ref in (copy_ref, written):
        good["secret_store"] = ref.model_dump(exclude_none=True)
        assert check(good, tmp_path) == {}
