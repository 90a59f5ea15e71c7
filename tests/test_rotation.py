"""Two-phase rotation of the client secret (``08_rotate_secret``) against a simulated tenant served on loopback:
the phases as runs with records, verify between and after them, plan mode, the refusals, the previous value in
every kind of store, and the batch option that rotates only the tenants whose secret expires soon."""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path

import keyring
import pytest
import yaml
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

from runbook_lib import cli
from runbook_lib.config import client_secrets, params, registry, secrets
from runbook_lib.config.params import SecretRef
from runbook_lib.context.step import Step
from runbook_lib.engine.changes import Change
from runbook_lib.errors import ParamsError, StepFailed
from runbook_lib.records import store as records
from runbook_lib.running import batch, runner
from runbook_lib.sandbox.server import serve
from runbook_lib.sandbox.tenant import SimulatedTenant
from runbook_lib.steps import rotation, verify
from runbook_lib.wire import auth

from conftest import CANARY, ROOT, scan

pytestmark = pytest.mark.e2e

ROTATE = registry.ROTATE_SECRET
CONFIGURE = [registry.WEBEX_VALUES, registry.APP_REGISTRATION]
OLD = "Old8Q~" + "o" * 34
NEW = "New8Q~" + "n" * 34


def seed_of(tenant: str = "contoso") -> dict:
    return yaml.safe_load((ROOT / "recordings" / tenant / "tenant.yaml").read_text())


def raw_params(sandbox, store: Path, **overrides) -> dict:
    """The contoso demo's parameters, live against the simulated tenant, with a store of the test's own."""
    raw = copy.deepcopy(params.load(ROOT / "params" / "demo" / "contoso.yaml").public())
    raw.update(
        mode="live",
        endpoints=sandbox.endpoints(),
        recordings=str(store.parent / "rec"),
        secret_store={"file": str(store)},
        change={"reason": "a test of the rotation", "ticket": "TEST-12"},
    )
    raw.update(overrides)
    return raw


def live(sandbox, store: Path, **overrides) -> params.Params:
    validated = params.validate(raw_params(sandbox, store, **overrides))
    auth.clear_cache(validated)  # as `runbook run` does: each simulated tenant signs its own tokens
    return validated


def app_secrets(sandbox, name: str = "Webex Connect Email") -> list[client_secrets.AppSecret]:
    app = next(a for a in sandbox.tenant.applications if a["displayName"] == name)
    return client_secrets.app_secrets(app)


def stored_key(store: Path, listed: list[client_secrets.AppSecret]) -> str | None:
    match = client_secrets.match_stored(store.read_text(), listed, listed[0].expires)
    return match.secret.key_id if match.kind == "matched" and match.secret else None


def verify_verdicts(p: params.Params) -> dict[str, str]:
    """Step 5's checks, as notebook 05 runs them (in this process): their verdicts by check."""
    step = Step(registry.VERIFY, p)
    verify.run_checks(step)
    step.finish()
    return {c.check: c.verdict for c in step.result.checks}


def passes(verdicts: dict[str, str]) -> bool:
    return "fail" not in verdicts.values() and verdicts["app-only token"] == "pass"


def test_phase_one_then_two_leaves_one_secret_the_stored_one_and_verify_passes_throughout(tmp_path):
    store, archive = tmp_path / "secrets" / "client.secret", tmp_path / "archive"
    previous = Path(f"{store}.previous")
    with serve(SimulatedTenant(seed_of(), canary=CANARY, pending_polls=0)) as sandbox, runner.Kernel() as kernel:

        def run(**overrides) -> runner.RunResult:
            p = live(sandbox, store, **overrides)
            return runner.run(p, archive=archive, steps=[ROTATE], progress=lambda _: None, kernel=kernel)

        p = live(sandbox, store)
        assert runner.run(p, archive=archive, steps=CONFIGURE, progress=lambda _: None, kernel=kernel).ok
        [first] = app_secrets(sandbox)
        first_value = store.read_text()
        assert CANARY in first_value  # the simulated tenant's secrets carry the canary: the scan below can fail
        assert passes(verify_verdicts(p))

        plan = run(apply=False)
        assert plan.ok and plan.writes == 0
        [planned] = [s.changes for s in plan.steps]
        assert [(c.resource, c.action) for c in planned] == [
            ("client secret", "planned"),
            (rotation.PREVIOUS, "planned"),
        ]
        assert planned[1].before["keyId"] == first.key_id and "phase 2" in planned[1].summary
        assert [s.key_id for s in app_secrets(sandbox)] == [first.key_id] and not previous.exists()
        assert store.read_text() == first_value

        one = run(rotation={"phase": 1})
        assert one.ok and one.writes == 1, [s.error for s in one.steps]
        listed = app_secrets(sandbox)
        new_key = stored_key(store, listed)
        assert len(listed) == 2 and new_key not in (None, first.key_id)
        assert previous.read_text() == first_value and stat.S_IMODE(previous.stat().st_mode) == 0o600
        [added] = one.steps[0].changes
        assert added.action == "created" and added.after["keyId"] == new_key and added.after["fingerprint"]
        assert f"the new secret: hint {store.read_text()[:3]}..." in added.summary  # what goes into Webex Connect
        assert "checks: " in one.steps[0].summary() and " 0 fail" in one.steps[0].summary()  # rotation's proof
        assert {c.check: c.verdict for c in one.steps[0].checks}["app-only token"] == "pass"
        assert passes(verify_verdicts(p))  # both secrets work: Webex Connect may still use the old one

        again = run(rotation={"phase": 1})
        assert again.ok and again.writes == 0
        assert [c.action for c in again.steps[0].changes] == ["unchanged"] and len(app_secrets(sandbox)) == 2

        # phase 2 by the command's flag, as an operator runs it: no edit of the parameter file
        file = tmp_path / "contoso.yaml"
        file.write_text(yaml.safe_dump(raw_params(sandbox, store)))
        code = cli.main(
            ["run", str(file), "--steps", ROTATE, "--confirm-rotation", "Ana Lima", "--archive", str(archive)]
        )
        assert code == 0
        manifest = records.read_manifest(records.record_dirs(archive, "contoso")[-1])
        [left] = app_secrets(sandbox)
        assert left.key_id == new_key == stored_key(store, [left]) and not previous.exists()
        [removed] = [Change.from_dict(c) for c in manifest["steps"][0]["changes"]]
        assert removed.action == "removed" and removed.before["keyId"] == first.key_id
        assert removed.after == {"confirmed_by": "Ana Lima"}
        assert passes(verify_verdicts(p))

    assert manifest["parameters"]["rotation"]["confirmed_by"] == "Ana Lima"
    assert [s["status"] for s in manifest["steps"]] == ["ok"]
    assert CANARY in store.read_text()
    assert scan(archive, [CANARY, first_value, store.read_text()]) == []


def test_phase_two_without_who_confirmed_is_refused_by_the_schema(demo_raw):
    demo_raw["rotation"] = {"phase": 2}
    with pytest.raises(ParamsError) as refused:
        params.validate(demo_raw)
    assert list(refused.value.problems) == ["rotation.confirmed_by"]
    demo_raw["rotation"] = {"phase": 2, "confirmed_by": "Ana Lima"}
    assert params.validate(demo_raw).rotation.confirmed_by == "Ana Lima"


def seeded(*secrets_: dict) -> dict:
    """The contoso tenant with the application already made, holding ``secrets_``."""
    seed = seed_of()
    seed["applications"] = [
        {
            "display_name": "Webex Connect Email",
            "service_principal": True,
            "redirect_uris": ["https://contoso.us.webexconnect.io/callback"],
            "implicit_access_token": True,
            "exchange_roles": ["Mail.Send"],
            "exchange_scopes": ["SMTP.Send"],
            "granted_roles": ["Mail.Send"],
            "secrets": list(secrets_),
        }
    ]
    return seed


def put(ref: Path, value: str) -> None:
    secrets.write(SecretRef(file=str(ref)), value)


def phase(sandbox, store: Path, number: int) -> Step:
    """A step of the rotation at ``number``, run in this process up to its changes."""
    confirmed = {"confirmed_by": "Ana Lima"} if number == 2 else {}
    step = Step(ROTATE, live(sandbox, store, rotation={"phase": number, **confirmed}))
    try:
        rotation.rotate(step, rotation.read_state(step))
    finally:
        step.finish()
    return step


@pytest.mark.parametrize(
    "stored, previous, refusal",
    [
        (OLD, None, "no rotation is pending"),
        (OLD, OLD, "holds the same secret as the store"),
        ("Zzz8Q~a-value-the-application-never-had", None, "nothing to rotate"),
        ("Zzz8Q~a-value-the-application-never-had", OLD, "nothing to rotate"),
    ],
)
def test_phase_two_refuses_and_changes_nothing_without_a_pending_rotation(tmp_path, stored, previous, refusal):
    store = tmp_path / "client.secret"
    put(store, stored)
    if previous:
        put(Path(f"{store}.previous"), previous)
    with serve(SimulatedTenant(seeded({"expires_in_days": 20, "value": OLD}), pending_polls=0)) as sandbox:
        with pytest.raises(StepFailed, match=refusal) as refused:
            phase(sandbox, store, 2)
        assert [s.hint for s in app_secrets(sandbox)] == ["Old"]
        assert not [r for r in sandbox.tenant.requests if r.startswith("POST") and "Password" in r]
    assert "nothing was changed" in refused.value.message and stored not in str(refused.value)
    assert store.read_text() == stored and Path(f"{store}.previous").exists() == bool(previous)


def test_phase_one_refuses_when_the_store_holds_none_of_the_applications_secrets(tmp_path):
    store = tmp_path / "client.secret"
    put(store, "Zzz8Q~a-value-the-application-never-had")
    with serve(SimulatedTenant(seeded({"expires_in_days": 20, "value": OLD}), pending_polls=0)) as sandbox:
        with pytest.raises(StepFailed, match="nothing to rotate") as refused:
            phase(sandbox, store, 1)
        assert len(app_secrets(sandbox)) == 1
    assert refused.value.step == registry.APP_REGISTRATION


def test_phase_two_after_the_old_secret_went_already_only_drops_the_previous_value(tmp_path):
    """What a phase 2 stopped between the removal and the store leaves (or a removal by hand): run again, it
    finishes without a write."""
    store = tmp_path / "client.secret"
    put(store, NEW)
    put(Path(f"{store}.previous"), OLD)
    with serve(SimulatedTenant(seeded({"expires_in_days": 170, "value": NEW}), pending_polls=0)) as sandbox:
        step = phase(sandbox, store, 2)
        assert [s.hint for s in app_secrets(sandbox)] == ["New"]
    assert [c.action for c in step.result.changes] == ["unchanged"] and step.transport.counts.writes == 0
    assert not Path(f"{store}.previous").exists() and store.read_text() == NEW


def test_phase_two_leaves_an_old_secret_it_cannot_tell_from_the_stored_one(tmp_path):
    store = tmp_path / "client.secret"
    same_hint_old, same_hint_new = "Abc8Q~" + "o" * 34, "Abc8Q~" + "n" * 34
    put(store, same_hint_new)
    put(Path(f"{store}.previous"), same_hint_old)
    seed = seeded({"expires_in_days": 20, "value": same_hint_old}, {"expires_in_days": 170, "value": same_hint_new})
    with serve(SimulatedTenant(seed, pending_polls=0)) as sandbox:
        with pytest.raises(StepFailed, match="share the hint Abc"):
            phase(sandbox, store, 2)
        assert len(app_secrets(sandbox)) == 2


def batch_file(tmp_path: Path, sandbox, tenant: str, app: str, value: str) -> str:
    """A tenant of the batch: its own application in the simulated tenant, and its own store holding ``value``."""
    store = tmp_path / "stores" / f"{tenant}.secret"
    put(store, value)
    raw = raw_params(sandbox, store, tenant=tenant, application={"display_name": app})
    raw["recordings"] = str(tmp_path / "rec" / tenant)
    path = tmp_path / f"{tenant}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_the_batch_option_rotates_only_the_tenant_whose_secret_expires_soon(tmp_path, capsys):
    seed = seeded({"expires_in_days": 10, "value": OLD})
    later = copy.deepcopy(seed["applications"][0])
    later.update(display_name="Webex Connect Later", secrets=[{"expires_in_days": 120, "value": NEW}])
    seed["applications"].append(later)
    archive = tmp_path / "archive"
    with serve(SimulatedTenant(seed, canary=CANARY, pending_polls=0)) as sandbox:
        files = [
            batch_file(tmp_path, sandbox, "soon", "Webex Connect Email", OLD),
            batch_file(tmp_path, sandbox, "later", "Webex Connect Later", NEW),
        ]
        code = cli.main(["batch", *files, "--rotate-within", "30", "--jobs", "1", "--archive", str(archive)])
        soon, late = app_secrets(sandbox), app_secrets(sandbox, "Webex Connect Later")
    out = capsys.readouterr().out
    assert code == 0, out
    assert len(soon) == 2 and [s.hint for s in late] == ["New"]
    [batch_dir] = sorted((archive / batch.BATCHES).iterdir())
    by_tenant = {t["tenant"]: t for t in json.loads((batch_dir / "batch.json").read_text())["tenants"]}
    assert by_tenant["soon"]["status"] == "ok" and by_tenant["soon"]["writes"] == 1
    assert by_tenant["later"]["status"] == "skipped" and by_tenant["later"]["writes"] == 0
    assert "not due" in by_tenant["later"]["diagnosis"] and "expires in 120 days" in by_tenant["later"]["diagnosis"]
    assert "later: skipped" in out and "not due" in out
    assert batch.failed_files(batch_dir) == []  # --only-failed has nothing to do
    assert [m["steps"][0]["step"] for m in map(records.read_manifest, records.record_dirs(archive, "soon"))] == [ROTATE]
    assert Path(f"{tmp_path / 'stores' / 'soon.secret'}.previous").read_text() == OLD
    assert not Path(f"{tmp_path / 'stores' / 'later.secret'}.previous").exists()
    assert scan(archive, [CANARY, OLD, NEW]) == []


def test_the_batch_option_is_phase_one_alone():
    assert cli.main(["batch", "x.yaml", "--rotate-within", "30", "--steps", registry.VERIFY]) == 2


class MemoryKeyring(KeyringBackend):
    """A keyring in memory, as the operating system's would keep entries."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


@pytest.fixture
def memory_keyring():
    before = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(before)


def test_the_previous_value_lives_beside_every_kind_of_store(tmp_path, monkeypatch, memory_keyring):
    file_store = SecretRef(file=str(tmp_path / "private" / "client.secret"))
    assert secrets.previous(file_store).file == f"{file_store.file}.previous"
    secrets.write(secrets.previous(file_store), OLD)
    assert stat.S_IMODE(Path(f"{file_store.file}.previous").stat().st_mode) == 0o600
    assert secrets.read(secrets.previous(file_store)) == OLD

    ring = SecretRef(keyring="webex-connect/contoso")
    assert secrets.previous(ring).keyring == "webex-connect/contoso.previous"
    secrets.write(secrets.previous(ring), OLD)
    assert memory_keyring.entries == {("webex-connect", "contoso.previous"): OLD}

    env = SecretRef(env="WEBEX_SECRET")
    monkeypatch.setenv("WEBEX_SECRET", NEW)
    assert "for this process only" in secrets.write(secrets.previous(env), OLD)
    assert secrets.read(secrets.previous(env)) == OLD and secrets.read(env) == NEW

    for ref in (file_store, ring, env):
        said = secrets.delete(secrets.previous(ref))
        assert secrets.read(secrets.previous(ref)) is None and OLD not in said
        secrets.delete(secrets.previous(ref))  # nothing left to delete is no error
    assert memory_keyring.entries == {}
