"""`runbook diff`: what changed in a tenant between two records, item by item; and step 3's PowerShell changes
confirmed by a later verify through the admin API. The records are made by real runs (replayed demo tenants,
and sandbox tenants where the "before" state must be broken on purpose) and by sealing small manifests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook_lib import cli
from runbook_lib.config import params, registry, secrets
from runbook_lib.engine.changes import Change
from runbook_lib.engine.results import Check, StepRecord
from runbook_lib.errors import RunbookError
from runbook_lib.records import integrity, record_diff, record_views
from runbook_lib.records import store as records
from runbook_lib.running import runner
from runbook_lib.sandbox import mistakes, state

from conftest import ROOT

pytestmark = pytest.mark.e2e

DEMO = ROOT / "params" / "demo"
MAILBOX_ITEMS = [
    "authenticated SMTP: support@contoso.onmicrosoft.com",
    "mailbox forwarding: support@contoso.onmicrosoft.com",
    "outbound spam policy: Webex Connect forwarding",
    "outbound spam rule: Webex Connect forwarding",
]


@pytest.fixture(scope="module")
def kernel() -> Iterator[runner.Kernel]:
    with runner.Kernel() as started:  # one kernel for every run of this module, as a batch thread keeps one
        yield started


def demo(name: str, folder: Path, **overrides: Any) -> dict[str, Any]:
    """A demo tenant's parameters with a private copy of its secret store."""
    loaded = params.load(DEMO / f"{name}.yaml")
    store = secrets.private_copy(loaded.secret_store, folder / "stores", f"{name}.secret")
    return loaded.public() | {"secret_store": store.model_dump(exclude_none=True)} | overrides


def run(kernel: runner.Kernel, archive: Path, raw: dict[str, Any], steps: list[str] | None = None) -> runner.RunResult:
    return runner.run(params.validate(raw), archive=archive, steps=steps, progress=lambda _: None, kernel=kernel)


@pytest.fixture(scope="module")
def northwind(kernel: runner.Kernel, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Northwind's changing steps (1 to 3) replayed three times: a plan, a run that repairs its drift, and the
    same run again."""
    folder = tmp_path_factory.mktemp("northwind")
    raw = demo("northwind", folder)
    steps = registry.plan_steps(list(registry.PROCEDURE))
    plan = run(kernel, folder / "archive", raw | {"apply": False}, steps)
    first, again = (run(kernel, folder / "archive", raw, steps) for _ in range(2))
    assert plan.ok and first.ok and again.ok
    return [plan.record, first.record, again.record]


@pytest.fixture(scope="module")
def fabrikam(kernel: runner.Kernel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Fabrikam as a sandbox tenant: configured, then broken (a redirect URI one character off, SMTP AUTH
    off) and verified (record A), then repaired by steps 2 and 3 and verified again (record B)."""
    folder = tmp_path_factory.mktemp("fabrikam")
    raw = demo("fabrikam", folder, mode="sandbox")
    state.reset("fabrikam")
    assert run(kernel, folder / "archive", raw).ok  # the sandbox gives the application secrets of its own
    for fault in ("redirect-uri-typo", "smtp-auth-disabled"):
        mistakes.break_tenant("fabrikam", fault)
    broken = run(kernel, folder / "archive", raw, ["05_verify", "06_troubleshoot"])
    repaired = run(kernel, folder / "archive", raw, ["02_azure_app_registration", "03_office365_mailbox", "05_verify"])
    assert broken.status == "failed" and repaired.ok, repaired.steps[-1].error
    return folder / "archive", broken.record, repaired.record


def test_a_plan_then_a_run_of_northwind_lists_what_the_run_made_of_the_plan(northwind, capsys):
    plan, first, _ = northwind
    assert cli.main(["diff", str(first), str(plan)]) == 0  # either order: the older record is A
    out = capsys.readouterr().out
    diff = record_diff.diff_records(plan, first)
    assert diff.a == plan and diff.b == first
    made = [i.item for i in diff.of_kind("made")]  # A planned them, B made them: not "repaired"
    assert made[:2] == ["application: Webex Connect Email", "admin consent: Mail.Send"]
    assert made[2].startswith("client secret: file:")
    assert made[3:] == [m.replace("contoso", "northwind") for m in MAILBOX_ITEMS]
    assert [i.item for i in diff.of_kind("unchanged")] == ["service principal: Webex Connect Email"]
    assert not diff.of_kind("drifted") and not diff.of_kind("still failing") and not diff.of_kind("repaired")
    assert "7 made, 0 repaired, 0 drifted, 0 still failing, 0 left to the script, 0 changed, 1 unchanged" in out
    assert "a PLAN (apply: false)" in out and "REPLAY of recorded answers" in out
    assert "{" not in out  # values read field by field, never as raw JSON
    assert (
        "web.redirectUris: was [https://intranet.northwind.example/signin, https://localhost:5001/callback] in A, "
        "[https://intranet.northwind.example/signin, https://localhost:5001/callback, "
        "https://northwind.us.webexconnect.io/callback] in B"
    ) in out
    assert "ForwardingSmtpAddress: was smtp:helpdesk@northwind-partner.example in A" in out
    assert "A: planned (enable SMTP AUTH for the mailbox)\n    B: updated (as in A)\n" in out
    frame = diff.frame()
    assert list(frame.columns) == ["kind", "resource", "name", "A", "B", "differences"]
    assert (frame["kind"] == "made").sum() == 7


def test_the_same_replay_twice_says_the_recordings_differ_never_outside_the_kit(northwind, capsys):
    _, first, again = northwind
    archive = first.parent.parent
    assert cli.main(["diff", "--tenant", "northwind", "--archive", str(archive)]) == 0
    out = capsys.readouterr().out
    diff = record_diff.diff_records(first, again)
    assert not diff.of_kind("drifted") and "outside the kit" not in out  # a replay reads no tenant
    changed = {i.item: i for i in diff.of_kind("changed")}
    # a replay starts from the recorded state every time: B's recording starts where A started, not where it ended
    assert (
        "application: Webex Connect Email" in changed
        and "authenticated SMTP: support@northwind.onmicrosoft.com" in (changed)
    )
    assert "SmtpClientAuthenticationDisabled: was false when A ended, true when B started" in out
    assert "B's recording starts from another value than A left" in changed["application: Webex Connect Email"].in_b


def test_fabrikam_broken_then_repaired_lists_the_repaired_items(fabrikam, capsys):
    archive, broken, repaired = fabrikam
    assert cli.main(["diff", "--tenant", "fabrikam", "--archive", str(archive)]) == 0
    out = capsys.readouterr().out
    diff = record_diff.diff_records(broken, repaired)
    assert [i.item for i in diff.of_kind("repaired")] == [
        "application: Webex Connect Email",
        "authenticated SMTP: support@fabrikam.onmicrosoft.com",
        "SMTP AUTH XOAUTH2",  # checks that were failing because of those two
        "authorize URL",
    ]
    application = diff.of_kind("repaired")[0]
    assert application.in_a.startswith("verify fail: drift: would add redirect URI")
    assert application.in_b.startswith("updated (") and "verify pass" in application.in_b
    [uris] = application.differences()
    found, left = uris.removeprefix("web.redirectUris: ").split(" when B started, ")
    assert "/callback" not in found and "https://fabrikam.us.webexconnect.io/callback] when B ended" in left
    assert "SmtpClientAuthenticationDisabled: was true when B started, false when B ended" in out
    assert "SANDBOX: a simulated training tenant" in out and "4 repaired, 0 drifted" in out
    stored = (archive.parent / "stores" / "fabrikam.secret").read_text().strip()
    assert stored and stored not in out and stored not in diff.frame().to_string()


def test_a_diff_is_refused_naming_the_problem(northwind, tmp_path, capsys):
    plan, first, _ = northwind
    assert cli.main(["diff", str(plan), str(tmp_path / "gone")]) == 1
    assert "gone is not a run record: it is not a folder" in capsys.readouterr().err
    assert cli.main(["diff", str(plan), str(plan)]) == 1
    assert "is given twice" in capsys.readouterr().err
    assert cli.main(["diff", str(plan)]) == 2
    assert cli.main(["diff", str(plan), str(first), "--tenant", "northwind"]) == 2
    assert "give two records (runbook diff RECORD_A RECORD_B) or a tenant (--tenant T)" in capsys.readouterr().err

    assert cli.main(["diff", "--tenant", "nobody", "--archive", str(tmp_path)]) == 1
    assert "tenant nobody has 0 sealed record(s)" in capsys.readouterr().err

    unsealed = tmp_path / "northwind" / "20261130T000000Z"
    unsealed.mkdir(parents=True)
    with pytest.raises(RunbookError, match="is not sealed: its run is still going, or was killed"):
        record_diff.diff_records(plan, unsealed)


def sealed(
    archive: Path,
    name: str,
    steps: list[StepRecord],
    *,
    tenant: str = "contoso",
    mode: str = "live",
    apply_with: str = "powershell",
    apply: bool = True,
) -> Path:
    """A small sealed run record, as the runner seals one, with these steps."""
    record = archive / tenant / name
    record.mkdir(parents=True)
    run_entry = {
        "tenant": tenant,
        "tenant_id": f"{tenant}.onmicrosoft.com",
        "mode": mode,
        "parameters": {"apply": apply, "mailbox": {"apply_with": apply_with}},
        "at": f"{name[:4]}-{name[4:6]}-{name[6:8]}T{name[9:11]}:{name[11:13]}:{name[13:15]}+00:00",
    }
    records.seal(record, records.manifest_for(run_entry, steps, [], status="ok", finished=run_entry["at"]))
    return record


SMTP = ("authenticated SMTP", "support@contoso.onmicrosoft.com")


def mailbox(action: str, before: bool = True, after: bool = False) -> StepRecord:
    """Step 3 with one change: SMTP AUTH found disabled (``before``) and wanted enabled."""
    found, wanted = ({"SmtpClientAuthenticationDisabled": v} for v in (before, after))
    return StepRecord(registry.MAILBOX, "ok", [Change(*SMTP, action, "enable SMTP AUTH", found, wanted)])


def verify(verdict: str, *others: Check) -> StepRecord:
    return StepRecord(registry.VERIFY, status="ok", checks=[Check(": ".join(SMTP), verdict, "as read"), *others])


def test_drifted_still_failing_changed_and_uncompared_items(tmp_path):
    a = sealed(
        tmp_path,
        "20261130T100000Z",
        [mailbox("unchanged", before=False), verify("pass", Check("client secret", "fail", "expired"))],
    )
    b = sealed(
        tmp_path,
        "20261130T110000Z",
        [
            verify("fail", Check("client secret", "fail", "expired"), Check("authorize URL", "not tested", "off")),
        ],
    )
    diff = record_diff.diff_records(a, b)
    assert [(i.item, i.kind) for i in diff.items] == [
        ("authenticated SMTP: support@contoso.onmicrosoft.com", "drifted"),
        ("client secret", "still failing"),
        ("authorize URL", "only in B"),
    ]
    c = sealed(tmp_path, "20261130T120000Z", [mailbox("unchanged", before=False), verify("pass")])
    d = sealed(tmp_path, "20261130T130000Z", [mailbox("unchanged", before=False), verify("warn")])
    [item] = record_diff.diff_records(c, d).items
    assert item.kind == "changed" and item.in_b == "unchanged (as in A); verify warn: as read"


def test_what_a_plan_planned_is_made_by_a_run_or_left_to_step_3s_script(tmp_path):
    plan = sealed(tmp_path, "20261130T100000Z", [mailbox("planned")], apply=False)
    scripted = sealed(tmp_path, "20261130T110000Z", [mailbox("planned")])  # powershell: a person runs the script
    [item] = record_diff.diff_records(plan, scripted).items
    assert item.kind == "left to the script"  # not "still failing": the kit never runs the script
    made = sealed(tmp_path, "20261130T120000Z", [mailbox("updated")], apply_with="adminapi")
    [item] = record_diff.diff_records(plan, made).items
    assert item.kind == "made" and item.differences() == ["SmtpClientAuthenticationDisabled: was true in A, false in B"]
    failed = sealed(tmp_path, "20261130T113000Z", [mailbox("planned")], apply_with="adminapi")  # a run that failed
    [item] = record_diff.diff_records(failed, made).items
    assert item.kind == "repaired"  # a run's leftover, not a plan's


def test_a_value_absent_on_one_side_is_listed_field_by_field_and_bounded():
    item = record_diff.ItemDiff(
        "application",
        "x",
        "made",
        "planned",
        "created",
        record_diff._fields(None, {f"f{i}": i for i in range(10)} | {"web": {"redirectUris": ["https://a"]}}),
    )
    lines = item.differences()
    assert lines[0] == "f0: was absent in A, 0 in B" and lines[-1] == "(and 3 more values)" and len(lines) == 9


def test_records_of_two_tenants_are_compared_only_when_asked(tmp_path, capsys):
    a = sealed(tmp_path, "20261130T100000Z", [mailbox("planned")])
    b = sealed(tmp_path, "20261130T110000Z", [mailbox("updated")], tenant="fabrikam")
    assert cli.main(["diff", str(a), str(b)]) == 1
    err = capsys.readouterr().err
    assert "is a record of tenant contoso (contoso.onmicrosoft.com)" in err and "--any-tenant" in err
    assert cli.main(["diff", str(a), str(b), "--any-tenant"]) == 0
    assert "1 repaired" in capsys.readouterr().out


def test_an_edited_manifest_is_not_diffed(tmp_path):
    a = sealed(tmp_path, "20261130T100000Z", [mailbox("planned")])
    b = sealed(tmp_path, "20261130T110000Z", [mailbox("updated")])
    integrity.make_writable(b)
    (b / "manifest.json").write_text((b / "manifest.json").read_text().replace('"updated"', '"unchanged"'))
    with pytest.raises(RunbookError, match="manifest.json is not the manifest that was sealed"):
        record_diff.diff_records(a, b)


@pytest.fixture
def powershell_then_verified(kernel: runner.Kernel, tmp_path: Path) -> tuple[Path, list[Path]]:
    """A sandbox tenant seeded like contoso: step 3 in PowerShell mode (R1), a verify through the admin API
    before anyone ran the script (R2), the script's effect (applied through the admin API into another
    archive), and a verify that finds it done (R3)."""
    raw = demo("contoso", tmp_path, mode="sandbox", tenant="ps-trainee")
    state.reset("ps-trainee")
    archive = tmp_path / "archive"
    r1 = run(kernel, archive, raw, ["01_webex_connect_app", "02_azure_app_registration", "03_office365_mailbox"])
    assert [c.action for c in r1.steps[2].changes] == ["planned"] * 4
    adminapi = raw | {"mailbox": {**raw["mailbox"], "apply_with": "adminapi"}}
    r2 = run(kernel, archive, adminapi, ["05_verify"])
    assert run(kernel, tmp_path / "elsewhere", adminapi, ["03_office365_mailbox"]).ok  # "a person ran the script"
    r3 = run(kernel, archive, adminapi, ["05_verify"])
    return archive, [r1.record, r2.record, r3.record]


def test_a_later_verify_confirms_the_changes_left_to_the_script(powershell_then_verified, capsys):
    archive, (r1, r2, r3) = powershell_then_verified
    found = record_diff.confirmations(archive, "ps-trainee")
    assert [f"{c.resource}: {c.name}" for c in found] == MAILBOX_ITEMS
    assert {(c.record, c.by) for c in found} == {(r1.name, r3.name)}  # not R2: the script had not run yet
    assert cli.main(["show", str(r1)]) == 0
    out = capsys.readouterr().out
    assert "step 3's script (run by a person): 4 of 4 planned change(s) confirmed" in out
    assert f"authenticated SMTP: support@contoso.onmicrosoft.com: confirmed by record {r3.name} on" in out
    history = record_views.history(archive, "ps-trainee").set_index("record")["step 3 script"]
    assert history[r1.name] == f"4 planned, 4 confirmed by {r3.name}" and history[r2.name] == ""
    assert integrity.verify(r1) == []  # a derived view: the sealed record is unchanged


def test_only_a_verify_of_the_same_tenant_confirms_and_a_kit_write_does_not(tmp_path):
    r1 = sealed(tmp_path, "20261130T100000Z", [mailbox("planned")])
    sealed(tmp_path, "20261130T110000Z", [verify("pass")], mode="replay", apply_with="adminapi")
    assert record_diff.confirmations(tmp_path, "contoso") == []  # a replay is not the tenant
    assert "0 of 1 planned change(s) confirmed" in record_diff.script_lines(r1)[0]
    assert "not confirmed yet: authenticated SMTP" in record_diff.script_lines(r1)[1]
    sealed(tmp_path, "20261130T120000Z", [mailbox("updated"), verify("pass")], apply_with="adminapi")
    assert record_diff.confirmations(tmp_path, "contoso") == []  # the kit made it so, not the script
    sealed(tmp_path, "20261130T130000Z", [mailbox("planned")], apply=False)
    sealed(tmp_path, "20261130T140000Z", [verify("pass")], apply_with="adminapi")
    assert record_diff.script_status(tmp_path, "contoso") == {"20261130T100000Z": "1 planned, 0 confirmed yet"}
