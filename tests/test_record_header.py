"""What every record opens with (the mode, the tenant, who signed in, the reason and ticket), the checks on the
reason and ticket, and the step status that says what a person has still to finish."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_lib.config import params
from runbook_lib.context import preflight
from runbook_lib.engine.results import Facts, Identity, SecretFacts, StepRecord, run_status_text
from runbook_lib.errors import ParamsError
from runbook_lib.records import record_views
from runbook_lib.records import store as records

pytestmark = pytest.mark.unit

STEP4 = "04_webex_connect_email_app"
ADMIN = Identity("user", "admin@contoso.onmicrosoft.com", "o-1", "t-1", "c-1")
#: an Entra ID client secret's shape (made up): three characters, a digit, Q~, then the rest
SECRET_SHAPED = "Ab18Q~" + "x" * 34


def with_change(raw: dict[str, Any], **change: Any) -> dict[str, Any]:
    return {**copy.deepcopy(raw), "change": change}


def live(raw: dict[str, Any], tmp_path: Path, **fields: Any) -> dict[str, Any]:
    """The demo tenant in live mode with a private store (no request is made: only offline checks run here)."""
    return {**copy.deepcopy(raw), "mode": "live", "secret_store": {"file": str(tmp_path / "s" / "c.secret")}, **fields}


def change_problems(raw: dict[str, Any], tmp_path: Path, *, run: bool = True) -> dict[str, str]:
    found = preflight.problems(params.validate(raw), archive=tmp_path / "archive", run=run)
    return {field: why for field, why in found.items() if field.startswith("change.")}


# --- the reason and ticket ------------------------------------------------------------------------------------


def test_a_reason_and_ticket_are_kept_as_one_line_each(demo_raw):
    p = params.validate(with_change(demo_raw, reason="  New support mailbox for EMEA ", ticket=4711))
    assert p.change.reason == "New support mailbox for EMEA" and p.change.ticket == "4711"
    renewing = params.validate(with_change(demo_raw, reason="renew the client secret: it expires in May"))
    assert renewing.change.reason == "renew the client secret: it expires in May"  # naming a secret is fine


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("ticket", "CHG1\nCHG2", "one line"),
        ("reason", "tab\there", "one line"),
        ("ticket", "C" * 101, "at most 100"),
        ("ticket", "  ", "is empty"),
        ("ticket", "password=hunter2", "holds a secret"),
        ("reason", "client_secret: " + SECRET_SHAPED, "holds a secret"),
        ("reason", f"use {SECRET_SHAPED} for now", "holds a secret"),
        ("ticket", "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln", "holds a secret"),
    ],
)
def test_a_bad_reason_or_ticket_is_named_without_quoting_it(demo_raw, field, value, why):
    with pytest.raises(ParamsError) as raised:
        params.validate(with_change(demo_raw, **{field: value}))
    assert why in raised.value.problems[f"change.{field}"]
    assert value.strip() not in raised.value.explain() or len(value.strip()) < 3


def test_no_ticket_is_an_option_of_one_run_never_a_files(demo_raw, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(with_change(demo_raw, reason="why", no_ticket=True)))
    with pytest.raises(ParamsError) as raised:
        params.load(path)
    assert list(raised.value.problems) == ["change.no_ticket"]
    path.write_text(yaml.safe_dump(with_change(demo_raw, reason="from the file")))
    overridden = params.override(params.load(path), {"change": {"ticket": "CHG7", "no_ticket": True}}, str(path))
    assert overridden.change == params.ChangeRequest(reason="from the file", ticket="CHG7", no_ticket=True)


def test_a_live_run_that_applies_changes_needs_a_reason_and_a_ticket(demo_raw, tmp_path):
    raw = live(demo_raw, tmp_path)
    missing = change_problems(raw, tmp_path)
    assert sorted(missing) == ["change.reason", "change.ticket"]
    assert "--reason" in missing["change.reason"] and "--no-ticket" in missing["change.ticket"]
    assert change_problems(with_change(raw, reason="why", ticket="CHG1"), tmp_path) == {}
    assert list(change_problems(with_change(raw, no_ticket=True), tmp_path)) == ["change.reason"]
    assert change_problems(with_change(raw, reason="why", no_ticket=True), tmp_path) == {}
    assert list(change_problems({**raw, "mode": "record"}, tmp_path)) == ["change.reason", "change.ticket"]


@pytest.mark.parametrize(
    "fields",
    [{"apply": False}, {"mode": "replay"}, {"mode": "sandbox"}, {"steps": ["05_verify", "06_troubleshoot"]}],
    ids=["plan", "replay", "sandbox", "verify-only"],
)
def test_runs_that_change_no_real_tenant_need_no_ticket(demo_raw, tmp_path, fields):
    assert change_problems(live(demo_raw, tmp_path, **fields), tmp_path) == {}


def test_checking_a_file_alone_asks_for_no_ticket(demo_raw, tmp_path):
    assert change_problems(live(demo_raw, tmp_path), tmp_path, run=False) == {}


# --- the header -----------------------------------------------------------------------------------------------


def record_of(tmp_path: Path, raw: dict[str, Any], steps: list[StepRecord], identity: Identity | None) -> Path:
    """A sealed record folder holding only the manifest a run of ``raw`` would write."""
    p = params.validate(raw)
    run = {"kind": "run", "mode": p.mode, "tenant": p.tenant, "tenant_id": p.tenant_id, "parameters": p.public()}
    entries = [{"kind": "identity", "identity": identity.__dict__}] if identity else []
    manifest = records.manifest_for(run, steps, entries, status="ok", finished="2026-01-01T00:00:00+00:00")
    folder = tmp_path / "archive" / p.tenant / "20260101T000000Z"
    folder.mkdir(parents=True)
    records.seal(folder, manifest)
    return folder


def checklist_step(*done: bool) -> StepRecord:
    items = {f"item{i}": value for i, value in enumerate(done)}
    return StepRecord(STEP4, status="ok", facts=Facts(checklist={"confirmed_by": "ops", "items": items}))


def test_show_and_the_manifest_open_with_the_mode_tenant_identity_reason_and_ticket(demo_raw, tmp_path):
    raw = with_change(demo_raw, reason="new mailbox", ticket="CHG0042")
    record = record_of(tmp_path, raw, [checklist_step(True, False)], ADMIN)
    lines = record_views.describe(record).splitlines()
    assert lines[:5] == [
        records.MODE_MEANING["replay"],
        "tenant: contoso (tenant ID 3c8a5f3e-2b1d-4f4a-9c6e-8d2f7a1b5e90)",
        f"signed in: {ADMIN.describe()}",
        "reason: new mailbox",
        "ticket: CHG0042",
    ]
    assert f"  {STEP4}: ok, checklist incomplete" in lines
    manifest = records.read_manifest(record)
    assert list(manifest)[:7] == ["kind", "mode", "mode_meaning", "tenant", "tenant_id", "operator", "change"]
    assert manifest["change"] == {"reason": "new mailbox", "ticket": "CHG0042"}
    assert manifest["status"] == "ok" and manifest["status_text"] == "ok, checklist incomplete"
    assert manifest["steps"][0]["status"] == "ok" and manifest["steps"][0]["status_text"] == "ok, checklist incomplete"
    history = record_views.history(tmp_path / "archive", "contoso")
    assert history.loc[0, "ticket"] == "CHG0042" and history.loc[0, "status"] == "ok, checklist incomplete"


def test_a_header_says_when_there_is_no_ticket_no_reason_or_nobody_signed_in(demo_raw, tmp_path):
    head = dict(records.header({"mode": "live", "parameters": {"change": {"no_ticket": True}}}, None))
    assert head["ticket"] == "no ticket (--no-ticket)" and head["reason"] == "none given"
    assert head["signed in"] == "nobody (no step signed in)"
    assert dict(records.header({"mode": "live", "parameters": {}}, None))["ticket"] == "none given"


@pytest.mark.parametrize(
    ("mode", "apply", "first"),
    [
        ("replay", True, "REPLAY of recorded answers: nothing was sent to any tenant"),
        ("sandbox", True, "SANDBOX: a simulated training tenant on this machine; no real tenant was touched"),
        ("live", True, "LIVE: these changes were made to the real tenant"),
        ("live", False, "LIVE PLAN (apply: false): the real tenant was read, and nothing was changed"),
        (
            "replay",
            False,
            "REPLAY of recorded answers: nothing was sent to any tenant; "
            "a PLAN (apply: false): no change was even attempted",
        ),
    ],
)
def test_the_mode_line_never_lets_a_replay_or_a_plan_read_as_a_change(mode, apply, first):
    assert records.header({"mode": mode, "parameters": {"apply": apply}}, None)[0] == ("mode", first)


# --- the status a person reads --------------------------------------------------------------------------------


def test_an_unconfirmed_checklist_qualifies_ok_and_nothing_else():
    assert checklist_step(True, True).status_text == "ok"
    incomplete = checklist_step(True, False)
    assert incomplete.status == "ok" and incomplete.status_text == "ok, checklist incomplete"
    assert "Step 04_webex_connect_email_app: ok, checklist incomplete;" in incomplete.summary()
    failed = StepRecord(STEP4, status="failed", facts=incomplete.facts)
    assert failed.status_text == "failed" and StepRecord("05_verify", status="ok").status_text == "ok"
    assert StepRecord.from_json(json.loads(json.dumps(incomplete.to_json()))).status_text == incomplete.status_text
    assert run_status_text("ok", [StepRecord("01"), incomplete]) == "ok, checklist incomplete"
    assert run_status_text("failed", [incomplete]) == "failed"


def test_days_left_are_counted_as_verify_counts_them():
    secret = SecretFacts("abc", "2027-05-28", "k", "file:x")
    assert secret.days_left("2026-11-29T16:11:58+00:00") == 180
    assert secret.days_left("2027-05-28T23:59:00+00:00") == 0 and secret.days_left("2027-06-01") == -4
