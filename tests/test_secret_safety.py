"""A new client secret's value is shown once: the application must never hold a secret whose value nobody has.
The store is checked before Entra ID is asked; the value is stored in the moment the tenant accepted it, before
the change is journaled, in the window a Ctrl-C waits for; if storing fails all the same, the new secret is
removed again and both changes are journaled. A store holding a value that is none of the application's
secrets (perhaps another application's) is never overwritten without keeping what it held."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_lib.config import params, registry, secrets
from runbook_lib.context.step import Step
from runbook_lib.engine.executor import Executor
from runbook_lib.errors import StepFailed
from runbook_lib.sandbox.server import serve
from runbook_lib.sandbox.tenant import SimulatedTenant
from runbook_lib.tenant import entra
from runbook_lib.wire import auth

from conftest import ROOT

pytestmark = pytest.mark.e2e


def step_2(tmp_path: Path, endpoints: dict[str, Any], **changes: Any) -> tuple[Step, dict[str, Any]]:
    """Step 2 live against a fresh simulated tenant, up to the secret: the application exists, no secret yet."""
    raw = params.load(ROOT / "params" / "demo" / "contoso.yaml").public()
    raw.update(mode="live", endpoints=endpoints, recordings=str(tmp_path / "rec"))
    raw.update({"secret_store": {"file": str(tmp_path / "store.secret")}, **changes})  # never the demo's store
    p = params.validate(raw)
    auth.clear_cache(p)
    step = Step(registry.APP_REGISTRATION, p)
    perms = entra.permissions(step)
    _, app = entra.ensure_application(step, perms, entra.find_application(step))
    assert app is not None
    return step, app


def secret_changes(step: Step) -> list[tuple[str, str]]:
    return [(e["change"]["name"], e["change"]["action"]) for e in step.journal.entries if e["kind"] == "change"][1:]


@pytest.fixture
def tenant() -> SimulatedTenant:
    return SimulatedTenant(
        yaml.safe_load((ROOT / "recordings" / "contoso" / "tenant.yaml").read_text()), pending_polls=0
    )


def test_a_store_that_cannot_take_the_value_is_refused_before_entra_id_is_asked(tmp_path, tenant):
    with serve(tenant) as sandbox:
        step, app = step_2(tmp_path, sandbox.endpoints(), secret_store={"env": "WEBEX_CLIENT_SECRET"})
        with pytest.raises(StepFailed, match="its value would have nowhere to go"):
            entra.ensure_secret(step, app)
    assert not any("addPassword" in r for r in tenant.requests)  # headless: an env store keeps nothing
    assert all(not a["passwordCredentials"] for a in tenant.applications)


def test_a_value_that_cannot_be_stored_after_all_has_its_secret_removed_again_and_both_journaled(
    tmp_path, tenant, monkeypatch
):
    real_write = secrets.write

    def failing(ref: Any, value: str) -> str:
        if ref.file and ref.file.endswith("store.secret"):
            raise PermissionError(13, "Permission denied")
        return real_write(ref, value)

    with serve(tenant) as sandbox:
        step, app = step_2(tmp_path, sandbox.endpoints())
        monkeypatch.setattr(secrets, "write", failing)
        with pytest.raises(StepFailed, match="was removed again: none is left that nobody holds"):
            entra.ensure_secret(step, app)
    assert all(not a["passwordCredentials"] for a in tenant.applications)
    [(added, created), (removed, gone)] = secret_changes(step)
    assert created == "created" and gone == "removed" and removed.startswith("Secret ID ")


def test_a_ctrl_c_during_add_password_waits_until_the_value_is_stored_and_journaled(tmp_path, tenant, monkeypatch):
    send = Executor._send

    def interrupted(self: Executor, write: Any) -> Any:
        answer = send(self, write)
        if write.path.endswith("/addPassword"):
            signal.raise_signal(signal.SIGINT)  # the operator presses Ctrl-C as Entra ID answers
        return answer

    with serve(tenant) as sandbox:
        step, app = step_2(tmp_path, sandbox.endpoints())
        monkeypatch.setattr(Executor, "_send", interrupted)
        with pytest.raises(KeyboardInterrupt):
            entra.ensure_secret(step, app)
    [held] = [c for a in tenant.applications for c in a["passwordCredentials"]]
    stored = secrets.read(step.params.secret_store)
    assert stored and stored.startswith(held["hint"])  # the store holds the value of the secret the tenant holds
    assert secret_changes(step) == [(step.params.secret_store.describe(), "created")]


def test_a_store_holding_another_applications_secret_keeps_it_beside_the_new_one(tmp_path, tenant):
    store = tmp_path / "store.secret"
    store.write_text("Oth8Q~a.value.of.another.application.not.this.one")
    store.chmod(0o600)
    with serve(tenant) as sandbox:
        step, app = step_2(tmp_path, sandbox.endpoints())
        change = entra.ensure_secret(step, app)
    assert change.action == "created" and "kept beside it" in change.summary
    assert (tmp_path / "store.secret.replaced").read_text() == "Oth8Q~a.value.of.another.application.not.this.one"
    assert store.read_text() != "Oth8Q~a.value.of.another.application.not.this.one"
