"""Teardown (``09_teardown``): a sandbox tenant configured by steps 01-03 through the runner, then planned, torn
down and torn down again; what the kit did not make stays. And the ledger the records are folded into."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from runbook_lib.config import params, registry, secrets
from runbook_lib.config.clouds import GRAPH_APP_ID
from runbook_lib.engine import journal
from runbook_lib.engine.changes import Change
from runbook_lib.records import integrity
from runbook_lib.records import store as records
from runbook_lib.running import runner
from runbook_lib.sandbox import state
from runbook_lib.steps import teardown

from conftest import ROOT, scan

pytestmark = pytest.mark.e2e

TRAINEE = ROOT / "params" / "training" / "trainee.yaml"
CONFIGURE = [registry.WEBEX_VALUES, registry.APP_REGISTRATION, registry.MAILBOX]
MAILBOX = "support@contoso.onmicrosoft.com"
ELSEWHERE = "smtp:helpdesk@fabrikam.example"
POLICY = "Webex Connect forwarding"


@pytest.fixture(scope="module")
def kernel() -> Iterator[runner.Kernel]:
    with runner.Kernel() as running:  # one kernel for every run, as a trainee's JupyterLab has
        yield running


def seed(**extra: Any) -> dict[str, Any]:
    """Contoso with a mailbox that forwarded elsewhere (SMTP AUTH never set), and what someone made by hand: an
    application, another outbound spam policy and its rule."""
    data = yaml.safe_load((ROOT / "recordings" / "contoso" / "tenant.yaml").read_text())
    data["users"] = [{"upn": MAILBOX, "forwarding": ELSEWHERE, "keep_copy": False}]
    data["outbound_policies"] = [{"Name": "Executives", "AutoForwardingMode": "Off"}]
    data["outbound_rules"] = [
        {"Name": "Executives", "HostedOutboundSpamFilterPolicy": "Executives", "From": ["ceo@contoso.onmicrosoft.com"]}
    ]
    data["applications"] = [{"display_name": "HR portal", "service_principal": True, "granted_roles": ["Mail.Read"]}]
    data.update(extra)
    return data


class Trainee:
    """A trainee's sandbox tenant, configured and torn down through the runner."""

    def __init__(self, tmp_path: Path, kernel: runner.Kernel, name: str, seeded: dict[str, Any]) -> None:
        (tmp_path / "rec").mkdir()
        (tmp_path / "rec" / "tenant.yaml").write_text(yaml.safe_dump(seeded))
        self.raw = yaml.safe_load(TRAINEE.read_text())
        self.raw.update(
            tenant=name,
            recordings=str(tmp_path / "rec"),
            secret_store={"file": str(tmp_path / "trainee.secret")},
            consent="admin",
        )
        self.name, self.kernel, self.archive = name, kernel, tmp_path / "archive"
        state.reset(name)

    def run(self, steps: list[str], **overrides: Any) -> runner.RunResult:
        raw = {**self.raw, **overrides}
        return runner.run(
            params.validate(raw), archive=self.archive, steps=steps, progress=lambda _: None, kernel=self.kernel
        )

    def teardown(self, **overrides: Any) -> tuple[runner.RunResult, list[Change]]:
        result = self.run([registry.TEARDOWN], **overrides)
        [step] = result.steps
        assert step.status == "ok", step.error
        return result, step.changes

    @property
    def tenant(self) -> state.TraineeTenant:
        return state.read(state.state_file(self.name))


def actions(changes: list[Change]) -> set[tuple[str, str]]:
    return {(c.resource, c.action) for c in changes}


def test_teardown_removes_what_the_kit_created_restores_the_mailbox_and_then_makes_no_write(tmp_path, kernel):
    trainee = Trainee(tmp_path, kernel, "teardown-made", seed())
    configured = trainee.run(CONFIGURE)
    assert configured.ok, [s.error for s in configured.steps]
    made = trainee.tenant
    app = made.trainee_app
    assert app is not None and app["uniqueName"] == "webex-connect-email"
    value = secrets.read(params.validate(trainee.raw).secret_store)
    assert value

    plan, planned = trainee.teardown(apply=False)
    assert plan.writes == 0
    assert actions(planned) == {
        ("client secret", "planned"),
        ("admin consent", "planned"),
        ("tenant-wide consent", "planned"),
        ("service principal", "planned"),
        ("application", "planned"),
        ("outbound spam rule", "planned"),
        ("outbound spam policy", "planned"),
        ("mailbox forwarding", "planned"),
        ("authenticated SMTP", "planned"),
    }
    assert list(dict.fromkeys(c.resource for c in planned))[:5] == [
        "client secret",
        "admin consent",
        "tenant-wide consent",  # two: SMTP.Send on Exchange Online, offline_access on Microsoft Graph
        "service principal",
        "application",
    ]
    assert trainee.tenant.applications == made.applications  # a plan changes nothing

    first, removed = trainee.teardown()
    assert first.writes == 10 and {c.action for c in removed} == {"removed", "updated"}
    rule, policy = (
        next(i for i, c in enumerate(removed) if c.resource == r)
        for r in ("outbound spam rule", "outbound spam policy")
    )
    assert rule < policy
    forwarding = next(c for c in removed if c.resource == "mailbox forwarding")
    assert forwarding.before["ForwardingSmtpAddress"] == f"smtp:{trainee.raw['webex']['forwarding_address']}"
    assert forwarding.after == {"ForwardingSmtpAddress": ELSEWHERE, "DeliverToMailboxAndForward": False}

    tenant = trainee.tenant
    assert [a["displayName"] for a in tenant.applications] == ["HR portal"]  # made by hand: stays
    hr = tenant.applications[0]
    assert {s["appId"] for s in tenant.service_principals} == {hr["appId"], tenant.exchange_sp["appId"], GRAPH_APP_ID}
    assert [a["principalId"] for a in tenant.assignments] == [tenant.service_principal(hr["appId"])["id"]]
    assert [g for g in tenant.grants if g["consentType"] == "AllPrincipals"] == []
    assert [p["Name"] for p in tenant.outbound_policies] == ["Default", "Executives"]
    assert [r["Name"] for r in tenant.outbound_rules] == ["Executives"]
    user = tenant.users[MAILBOX]
    assert (user["ForwardingSmtpAddress"], user["DeliverToMailboxAndForward"]) == (ELSEWHERE, False)
    assert user["SmtpClientAuthenticationDisabled"] is None  # unset again: the tenant-wide setting decides

    again, unchanged = trainee.teardown()
    assert again.writes == 0 and {c.action for c in unchanged} == {"unchanged"}
    assert all("gone" in c.summary or "restored by" in c.summary for c in unchanged), [c.summary for c in unchanged]
    assert scan(trainee.archive, [value]) == []  # the secret's value is in no record, journal or page


def test_an_application_made_by_hand_stays_without_what_the_kit_added(tmp_path, kernel):
    hand = {
        "display_name": "Webex Connect Email",
        "service_principal": True,
        "secrets": [{"expires_in_days": 300, "description": "by hand"}],
    }
    trainee = Trainee(tmp_path, kernel, "teardown-hand", seed(applications=[hand]))
    assert trainee.run(CONFIGURE).ok
    app = trainee.tenant.trainee_app
    assert app is not None and app["uniqueName"] is None and len(app["passwordCredentials"]) == 2

    _, changes = trainee.teardown()
    outcome = {c.resource: (c.action, c.summary) for c in changes}
    assert outcome["application"][0] == "unchanged" and "made by hand" in outcome["application"][1]
    assert {outcome[r][0] for r in ("client secret", "admin consent", "tenant-wide consent")} == {"removed"}
    assert "service principal" not in outcome  # made by hand too: no record names it
    tenant = trainee.tenant
    [left] = tenant.applications
    assert left["id"] == app["id"] and [c["displayName"] for c in left["passwordCredentials"]] == ["by hand"]
    sp = tenant.service_principal(app["appId"])
    assert sp is not None and not [a for a in tenant.assignments if a["principalId"] == sp["id"]]
    assert not [g for g in tenant.grants if g["clientId"] == sp["id"] and g["consentType"] == "AllPrincipals"]


def test_scoped_mail_send_leaves_no_rbac_object_behind(tmp_path, kernel):
    trainee = Trainee(tmp_path, kernel, "teardown-scoped", seed())
    scoped = {**trainee.raw.get("application", {}), "mail_send": "scoped"}
    configured = trainee.run(CONFIGURE, application=scoped)
    assert configured.ok, [s.error for s in configured.steps]
    made = trainee.tenant
    assert made.exchange_service_principals and made.management_scopes and made.management_role_assignments

    _, changes = trainee.teardown(application=scoped)
    rbac = [c for c in changes if c.resource in teardown.RBAC]
    assert [(c.resource, c.action) for c in rbac] == [
        ("management role assignment", "removed"),
        ("management scope", "removed"),
        ("Exchange service principal", "removed"),
    ]
    tenant = trainee.tenant
    assert tenant.exchange_service_principals == tenant.management_scopes == tenant.management_role_assignments == []
    again, _ = trainee.teardown(application=scoped)
    assert again.writes == 0


def test_in_powershell_mode_the_script_restores_the_recorded_values_and_nothing_is_sent_to_exchange(tmp_path, kernel):
    trainee = Trainee(tmp_path, kernel, "teardown-script", seed())
    assert trainee.run(CONFIGURE).ok
    plan, changes = trainee.teardown(apply=False, mailbox={**trainee.raw["mailbox"], "apply_with": "powershell"})
    assert plan.writes == 0 and plan.steps[0].counts.get("reads")
    text = (plan.record / f"{registry.TEARDOWN}.{teardown.SCRIPT_NAME}").read_text()
    assert text.index("Remove-HostedOutboundSpamFilterRule") < text.index("Remove-HostedOutboundSpamFilterPolicy")
    assert (
        f"Set-Mailbox -Identity '{MAILBOX}' -ForwardingSmtpAddress '{ELSEWHERE}' -DeliverToMailboxAndForward $false"
        in text
    )
    assert "Set-CASMailbox -Identity 'support@contoso.onmicrosoft.com' -SmtpClientAuthenticationDisabled $null" in text
    assert "'Default'" not in text and "Executives" not in text
    assert [p["Name"] for p in trainee.tenant.outbound_policies] == ["Default", "Executives", POLICY]


# --- the ledger: what the records prove ----------------------------------------------------------------------


def change(resource: str, action: str, before: Any = None, after: Any = None, name: str = "x") -> Change:
    return Change(resource, name, action, "", before, after)  # type: ignore[arg-type]


def test_the_ledger_starts_afresh_after_a_teardown_and_tells_created_from_changed():
    step2, step3, down = registry.APP_REGISTRATION, registry.MAILBOX, registry.TEARDOWN
    made = teardown.ledger(
        [
            ("r1", step2, change("application", "updated", {"id": "1"}, {"web": {}})),  # made by hand
            ("r1", step2, change("client secret", "created", None, {"keyId": "k1"}, "file:s")),
            ("r2", step2, change("client secret", "created", None, {"keyId": "k2"}, "file:s")),
            ("r2", step2, change("expired client secret", "removed", {"keyId": "k1"}, None, "hint a")),
            ("r2", step3, change("mailbox forwarding", "updated", {"F": "old"}, {"F": "kit"})),
            ("r3", down, change("mailbox forwarding", "updated", {"F": "kit"}, {"F": "old"})),
            ("r4", step3, change("mailbox forwarding", "updated", {"F": "changed by hand"}, {"F": "kit"})),
        ]
    )
    by = {(m.resource, m.key_id or m.name): m for m in made}
    assert by[("application", "x")].created is False
    assert by[("client secret", "k1")].undone == f"{step2} in record r2" and by[("client secret", "k2")].undone is None
    forwarding = by[("mailbox forwarding", "x")]
    assert (forwarding.before, forwarding.record, forwarding.undone) == ({"F": "changed by hand"}, "r4", None)
    upserted = teardown.ledger([("r1", step2, change("application", "updated", None, {"uniqueName": "k"}))])
    assert upserted[0].created  # a create under the key answered 204 (a lost answer): the kit's


def write_record(
    archive: Path, tenant: str, stamp: str, mode: str, tenant_id: str, changes: list[Change], **parameters: Any
) -> Path:
    """A sealed record of a run that made ``changes``, as the runner seals one."""
    folder = archive / tenant / stamp
    folder.mkdir(parents=True)
    log = journal.Journal(folder / journal.JOURNAL_FILE)
    log.append("run", tenant=tenant, tenant_id=tenant_id, mode=mode, parameters=parameters)
    for name in (registry.APP_REGISTRATION, registry.MAILBOX):
        log.append("step", step=name, event="started")
    for c in changes:
        log.append("change", step=registry.APP_REGISTRATION, change=c.as_dict())
    entries = journal.read(log.path)
    steps = records.steps_from_journal(entries)
    records.seal(folder, records.manifest_for(entries[0], steps, entries, status="ok", finished="2026-01-01"))
    return folder


@pytest.mark.parametrize(
    ("mode", "recorded_mode", "recorded_tenant", "proves"),
    [
        ("live", "live", "t-1", True),
        ("live", "record", "t-1", True),
        ("live", "sandbox", "t-1", False),  # a trainee's sandbox is not the customer's tenant
        ("live", "live", "t-2", False),  # another tenant ID under the same name
        ("replay", "replay", "t-1", False),  # a replay changed no tenant
    ],
)
def test_only_records_of_the_same_tenant_reached_the_same_way_are_proof(
    tmp_path, monkeypatch, mode, recorded_mode, recorded_tenant, proves
):
    monkeypatch.delenv(journal.JOURNAL_ENV, raising=False)
    write_record(tmp_path, "t", "20260101T000000Z", recorded_mode, recorded_tenant, [change("application", "created")])
    step = SimpleNamespace(params=SimpleNamespace(mode=mode, tenant="t", tenant_id="t-1"), record_folder=None)
    proof = teardown.read_records(step, str(tmp_path))  # type: ignore[arg-type]
    assert bool(proof.made) is proves
    assert proves or proof.source.startswith("No record: nothing would be removed.")
    assert str(tmp_path) not in proof.source  # no machine path: the notebook's output stays the same anywhere


def test_without_an_archive_nothing_is_read_and_a_run_reads_its_own(tmp_path, monkeypatch):
    monkeypatch.delenv(journal.JOURNAL_ENV, raising=False)
    assert teardown.run_archive("") is None
    monkeypatch.setenv(journal.JOURNAL_ENV, str(tmp_path / "t" / "20260101T000000Z" / journal.JOURNAL_FILE))
    assert teardown.run_archive("elsewhere") == tmp_path


@pytest.mark.parametrize(
    ("apply_with", "apply", "noted"),
    [("powershell", True, True), ("adminapi", True, False), ("powershell", False, False)],
)
def test_a_step_3_applied_by_its_script_is_left_with_a_note(tmp_path, monkeypatch, apply_with, apply, noted):
    """The script's effects are in no record: the teardown cannot prove the policy or the mailbox's old values."""
    monkeypatch.delenv(journal.JOURNAL_ENV, raising=False)
    made = [change("application", "created")]
    write_record(
        tmp_path, "t", "20260101T000000Z", "live", "t-1", made, mailbox={"apply_with": apply_with}, apply=apply
    )
    step = SimpleNamespace(params=SimpleNamespace(mode="live", tenant="t", tenant_id="t-1"), record_folder=None)
    proof = teardown.read_records(step, str(tmp_path))  # type: ignore[arg-type]
    assert bool(proof.notes) is noted
    assert not noted or "20260101T000000Z: step 3 was applied by its PowerShell script" in repr(proof)


def forge(record: Path, app: dict[str, Any], *, reseal: bool, key: str | None = None) -> None:
    """Point the record's application at ``app`` (a forger's edit of after.id / appId, and of the key if given);
    ``reseal``: write the manifest and seal again, as anyone able to write the archive can for an unsigned record."""
    integrity.make_writable(record)
    lines = []
    for entry in journal.read(record / journal.JOURNAL_FILE):
        if entry.get("kind") == "change" and entry["change"]["resource"] == "application":
            entry["change"]["after"].update(id=app["id"], appId=app["appId"], **({"uniqueName": key} if key else {}))
        lines.append(json.dumps(entry))
    (record / journal.JOURNAL_FILE).write_text("\n".join(lines) + "\n")
    if reseal:
        (record / integrity.SEAL).unlink()
        manifest = json.loads((record / integrity.MANIFEST).read_text())
        manifest["files"] = integrity.file_hashes(record)
        (record / integrity.MANIFEST).write_text(json.dumps(manifest, indent=2))
        integrity.seal(record)


def test_a_tampered_record_is_not_read_and_the_kits_own_objects_are_found_by_their_mark(tmp_path, kernel):
    trainee = Trainee(tmp_path, kernel, "teardown-tampered", seed())
    configured = trainee.run(CONFIGURE)
    assert configured.ok
    hr = next(a for a in trainee.tenant.applications if a["displayName"] == "HR portal")
    forge(configured.record, hr, reseal=False)

    _, changes = trainee.teardown()
    outcome = {c.resource: (c.action, c.summary) for c in changes}
    assert outcome["application"][0] == "removed" and outcome["service principal"][0] == "removed"
    tenant = trainee.tenant
    assert [a["displayName"] for a in tenant.applications] == ["HR portal"]  # made by hand: stays
    record = records.record_dirs(trainee.archive, trainee.name)[-1]
    page = (record / f"{registry.TEARDOWN}.ipynb").read_text()
    assert f"Record {configured.record.name} was not read: it does not verify" in page
    assert "Found by the kit's key and mark, with no verified record of their creation" in page


@pytest.mark.parametrize("key", [None, "payroll-connector"], ids=["same key", "key edited too"])
def test_a_forged_and_resealed_record_never_removes_an_application_made_by_hand(tmp_path, kernel, key):
    trainee = Trainee(tmp_path, kernel, "teardown-forged", seed())
    configured = trainee.run(CONFIGURE)
    assert configured.ok
    hr = next(a for a in trainee.tenant.applications if a["displayName"] == "HR portal")
    forge(configured.record, hr, reseal=True, key=key)
    assert integrity.verify(configured.record) == []  # unsigned: the forgery verifies; the tenant is checked

    result, changes = trainee.teardown()
    outcome = {c.resource: (c.action, c.summary) for c in changes}
    assert outcome["application"][0] == "unchanged" and outcome["application"][1].startswith("refused")
    assert "HR portal" in [a["displayName"] for a in trainee.tenant.applications]
    assert trainee.tenant.service_principal(hr["appId"]) is not None
    assert not any(c.resource == "application" and c.action == "removed" for s in result.steps for c in s.changes)


def test_a_fabricated_folder_holding_only_a_journal_removes_nothing_made_by_hand(tmp_path, kernel):
    """The runner seals it first, as it seals a killed run's record; its word is then checked against the tenant."""
    trainee = Trainee(tmp_path, kernel, "teardown-fabricated", seed())
    assert trainee.run(CONFIGURE).ok
    hr = next(a for a in trainee.tenant.applications if a["displayName"] == "HR portal")
    folder = trainee.archive / trainee.name / "20300101T000000Z"
    folder.mkdir()
    log = journal.Journal(folder / journal.JOURNAL_FILE)
    log.append("run", tenant=trainee.name, tenant_id=trainee.raw["tenant_id"], mode="sandbox", parameters={})
    log.append("step", step=registry.APP_REGISTRATION, event="started")
    created = Change("application", "Payroll", "created", "create", None, {"id": hr["id"], "appId": hr["appId"]})
    log.append("change", step=registry.APP_REGISTRATION, change=created.as_dict())

    _, changes = trainee.teardown()
    assert "HR portal" in [a["displayName"] for a in trainee.tenant.applications]
    payroll = next(c for c in changes if c.name == "Payroll")
    assert payroll.action == "unchanged" and payroll.summary.startswith("refused")
    assert [c.action for c in changes if c.resource == "application" and c.name != "Payroll"] == ["removed"]
