"""The tenant lock: one run per tenant and application, held by the OS, so a killed holder frees it."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_lib.config import params
from runbook_lib.engine import locks
from runbook_lib.errors import LockHeld, RunbookError

from conftest import DEMO

pytestmark = pytest.mark.unit

#: holds the demo tenant's lock until its stdin closes, or for argv[1] seconds when given
HOLDER = """
import sys, time
from runbook_lib.config import params
from runbook_lib.engine import locks
with locks.tenant_lock(params.load(sys.argv[1]), command="batch"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2])) if len(sys.argv) > 2 else sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNBOOK_STATE", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture(autouse=True)
def live_file(tmp_path: Path) -> Path:
    """The demo tenant reached live: a replay touches no tenant and takes no tenant's lock."""
    data = yaml.safe_load(DEMO.read_text())
    data["mode"] = "live"
    (tmp_path / "live.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "live.yaml"


@pytest.fixture
def demo(live_file: Path) -> params.Params:
    return params.load(live_file)


def variant(demo: params.Params, **changes: Any) -> params.Params:
    data = demo.public()
    for key, value in changes.items():
        if key == "display_name":
            data["application"]["display_name"] = value
        else:
            data[key] = value
    return params.validate(data)


def hold(live_file: Path, *seconds: float) -> subprocess.Popen:
    """Another process holding the demo tenant's lock (it inherits RUNBOOK_STATE)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(live_file), *map(str, seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "held\n"
    return proc


@pytest.fixture
def holder(live_file: Path) -> Iterator[subprocess.Popen]:
    proc = hold(live_file)
    yield proc
    proc.stdin.close()
    proc.wait(timeout=30)


def test_a_second_holder_is_told_who_holds_it_and_since_when(demo, holder):
    with pytest.raises(LockHeld) as caught, locks.tenant_lock(demo):
        pytest.fail("took a lock another process holds")
    held = caught.value.holder
    assert held["pid"] == holder.pid and held["command"] == "batch" and held["tenant"] == "contoso"
    message = str(caught.value)
    assert f"pid {holder.pid}" in message and f"since {held['since']}" in message and held["user"] in message
    assert "--wait SECONDS" in message and demo.tenant_id in message


def test_waiting_acquires_once_the_holder_is_done(demo, live_file):
    proc = hold(live_file, 0.6)
    started = time.monotonic()
    with locks.tenant_lock(demo, wait_seconds=20):
        waited = time.monotonic() - started
    proc.wait(timeout=30)
    assert 0.2 < waited < 20


def test_waiting_gives_up_after_the_time_given(demo, holder):
    started = time.monotonic()
    with pytest.raises(LockHeld, match="after waiting 0.5 s"), locks.tenant_lock(demo, wait_seconds=0.5):
        pass
    assert 0.5 <= time.monotonic() - started < 5


def test_a_killed_holders_lock_is_taken_over(demo, live_file):
    proc = hold(live_file)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdin.close()
    stale = json.loads(locks.lock_file(demo).read_text())
    assert stale["pid"] == proc.pid  # the dead holder never cleaned up
    with locks.tenant_lock(demo, command="run"):
        assert json.loads(locks.lock_file(demo).read_text())["pid"] == os.getpid()


def test_the_lock_is_the_tenants_whatever_the_parameter_file_or_archive(demo, tmp_path):
    other_file = variant(
        demo, tenant="contoso-again", recordings=str(tmp_path / "elsewhere"), tenant_id=demo.tenant_id.upper()
    )
    with locks.tenant_lock(demo), pytest.raises(LockHeld), locks.tenant_lock(other_file):
        pass


def test_other_tenants_and_other_applications_are_not_blocked(demo):
    other_tenant = variant(demo, tenant_id="1f9d4c2e-6b7a-4e3d-9a8b-0c1d2e3f4a5b")
    other_app = variant(demo, display_name="Webex Connect Email (EU)")
    with locks.tenant_lock(demo), locks.tenant_lock(other_tenant), locks.tenant_lock(other_app):
        pass


def test_any_application_name_makes_a_safe_file_name(demo, state):
    for name in ("../../etc/passwd", "Webex ☃ / Email", "§§§"):
        path = locks.lock_file(variant(demo, display_name=name))
        assert path.parent == state / "locks" and "/" not in path.name and path.name.endswith(".lock")
    # one key (uniqueName) is one application, however its display name is typed: one lock
    assert locks.lock_file(variant(demo, display_name="Webex Connect Email")) == locks.lock_file(
        variant(demo, display_name="WEBEX connect email")
    )
    assert locks.lock_file(variant(demo, display_name="A b")) != locks.lock_file(variant(demo, display_name="A c"))


def test_a_replay_takes_no_tenants_lock_only_its_archive_folders(demo):
    """A replay changes no tenant: two demo tenants of one tenant ID replay side by side (a batch of the demo
    tenants); two replays of one tenant name would seal into one folder, and take turns."""
    replay = variant(demo, mode="replay")
    pick = variant(demo, mode="replay", tenant="contoso-pick")
    with (
        locks.tenant_lock(demo),
        locks.tenant_lock(replay),
        locks.tenant_lock(pick),
        pytest.raises(LockHeld),
        locks.tenant_lock(variant(demo, mode="replay")),
    ):
        pass


def test_private_while_held_and_empty_once_released_even_after_an_error(demo, state):
    with pytest.raises(RuntimeError), locks.tenant_lock(demo, command="plan"):
        path = locks.lock_file(demo)
        assert json.loads(path.read_text())["command"] == "plan"
        raise RuntimeError("the step failed")
    assert path.read_text() == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with locks.tenant_lock(demo):
        pass


def test_a_run_by_the_tenants_domain_takes_the_lock_of_a_run_by_its_id(demo, tmp_path):
    """The trainee's sandbox knows its domain from its seed; a live tenant's is resolved as Entra ID resolves it."""
    sandbox = variant(demo, mode="sandbox", recordings="recordings/contoso")
    by_domain = variant(demo, mode="sandbox", recordings="recordings/contoso", tenant_id="Contoso.onmicrosoft.com")
    assert locks.lock_file(sandbox) == locks.lock_file(by_domain)


def test_a_live_run_by_domain_is_resolved_through_entra_ids_openid_configuration(live_raw):
    by_id = params.validate(live_raw)
    by_domain = params.validate({**live_raw, "tenant_id": "contoso.onmicrosoft.com"})
    assert locks.lock_file(by_domain) == locks.lock_file(by_id)
    with pytest.raises(RunbookError, match="does not know the tenant|could not be resolved"):
        locks.lock_file(params.validate({**live_raw, "tenant_id": "nobody.onmicrosoft.com"}))
