"""Fleet health: the judging, the timeline's geometry, the demo tenants replayed through ``runbook fleet``, and a
fleet of sandbox tenants; read only throughout, and no secret in any output."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from runbook_lib import cli
from runbook_lib.config import params, registry, secrets
from runbook_lib.running import demos, fleet, fleet_report
from runbook_lib.running.fleet import Health, Problem
from runbook_lib.sandbox import mistakes, state
from runbook_lib.sandbox.state import TraineeTenant

from conftest import CANARY, ROOT

pytestmark = pytest.mark.e2e

DEMO = ROOT / "params" / "demo"

# --- judging: status and next action from what was read -----------------------------------------------------


def health(**facts) -> Health:
    base = {"tenant": "t", "params_file": "p.yaml", "mode": "live", "warn_days": 30, "configured": True}
    return Health(**{**base, "stored": "matched", "hint": "abc", "expires": "2027-01-01", **facts})


@pytest.mark.parametrize(
    "facts, status, action",
    [
        ({"days_left": 200}, "ok", "nothing to do now; rotate the secret before 2027-01-01"),
        ({"days_left": 30}, "ok", "nothing to do now"),
        ({"days_left": 29}, "warn", "runbook run p.yaml --steps 08_rotate_secret"),
        ({"days_left": 0}, "fail", "runbook run p.yaml --steps 08_rotate_secret"),
        ({"days_left": None, "stored": "empty", "hint": ""}, "fail", "--steps 02_azure_app_registration"),
        ({"days_left": None, "stored": "no match", "hint": ""}, "fail", "--steps 02_azure_app_registration"),
        ({"days_left": None, "stored": "secret id", "hint": ""}, "fail", "--steps 02_azure_app_registration"),
        ({"configured": False}, "fail", "configure the tenant: runbook run p.yaml"),
        ({"error": "sign-in failed: AADSTS50076", "error_fix": "sign in again"}, "fail", "sign in again"),
        (
            {"days_left": 10, "problems": [Problem("fail", "admin consent: Mail.Send: drift", "step 2", "02_x")]},
            "fail",
            "step 2: runbook run p.yaml --steps 02_x",
        ),
        (
            {"days_left": 200, "problems": [Problem("warn", "SMTP.Send consent: not yet", "consent", "04_x")]},
            "warn",
            "consent: runbook run p.yaml --steps 04_x",
        ),
    ],
)
def test_judge_gives_one_status_and_the_next_action(facts, status, action):
    judged = fleet.judge(health(**facts))
    assert judged.status == status and action in judged.next_action, judged


def test_a_warn_with_a_fail_is_a_fail_and_every_problem_is_the_reason():
    judged = fleet.judge(health(days_left=5, problems=[Problem("fail", "mailbox drift", "step 3", "03_x")]))
    assert judged.status == "fail" and "03_x" in judged.next_action
    assert "mailbox drift" in judged.reason and "expires in 5 days" in judged.reason


def test_rows_are_sorted_fail_first_then_fewest_days_left():
    rows = fleet._rows(
        [
            health(tenant="a", days_left=300),
            health(tenant="b", days_left=10),
            health(tenant="c", days_left=-3),
            health(tenant="d", configured=False, days_left=None),
            health(tenant="e", days_left=20),
        ]
    ).rows
    assert [r.health.tenant for r in rows] == ["d", "c", "b", "e", "a"]


# --- the timeline's geometry ----------------------------------------------------------------------------------


def test_axis_maps_days_to_x_and_clamps():
    axis = fleet_report.Axis(-30, 120, left=100, right=400)
    assert axis.x(-30) == 100 and axis.x(120) == 400 and axis.x(0) == 160
    assert axis.x(-999) == 100 and axis.x(9999) == 400
    assert axis.ticks() == [-30, 0, 30, 60, 90, 120]


def test_axis_shows_today_every_window_and_expiry_in_whole_months():
    assert fleet_report.axis_for([], [30]) == fleet_report.Axis(-30, 120)
    assert fleet_report.axis_for([200, -45], [30]) == fleet_report.Axis(-60, 210)
    assert fleet_report.axis_for([5000, -5000], [90]) == fleet_report.Axis(-365, 730)  # clamped at the edges


def test_timeline_draws_today_the_warning_window_and_each_expiry():
    rows = fleet._rows([health(tenant="soon", days_left=20, warn_days=30), health(tenant="old", days_left=-10)]).rows
    svg = fleet_report.timeline_svg(rows)
    axis = fleet_report.axis_for([20, -10], [30, 30])
    today = axis.x(0)
    assert re.search(rf'<line class="today" x1="{today}" y1="\S+" x2="{today}"', svg)
    windows = re.findall(r'<rect class="warning-window" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)
    assert windows == [(str(today), str(round(axis.x(30) - today, 1)))] * 2
    dots = re.findall(r'<circle class="expiry" cx="([\d.]+)" cy="[\d.]+" r="5" fill="(#\w+)"', svg)
    assert dots == [(str(axis.x(-10)), fleet_report.COLOURS["fail"]), (str(axis.x(20)), fleet_report.COLOURS["warn"])]


# --- the demo tenants, recorded into a copy and replayed through the command ---------------------------------

#: each demo tenant's status as the fleet reads its seed state (the state its scenario demonstrates)
DEMO_STATUS = {
    "fabrikam": "ok",  # healthy
    "bellows": "warn",  # healthy, the secret expires within the warning window
    "vanarsdel": "fail",  # secret expired
    "trey": "fail",  # a Secret ID in the store
    "coho": "fail",  # Mail.Send consent missing
    "alpine": "fail",  # SMTP AUTH off
    "fourthcoffee": "fail",  # forwarding blocked
    "wideworld": "fail",  # security defaults on
    "northwind": "fail",  # drifted
    "tailspin": "fail",  # two applications of the name: not read
    "proseware": "fail",  # no Exchange Online: not read
    "relecloud": "fail",  # no mailbox: not read
    "margies": "fail",  # on-premises mailbox: not read
    **{
        t: "fail" for t in ("contoso", "adatum", "lamna", "litware", "lucerne", "wingtip", "woodgrove")
    },  # not configured
    **{t: "fail" for t in ("tailspin-pick", "wingtip-admin")},  # configured in part: drift
}


@pytest.fixture(scope="module")
def demo_fleet(tmp_path_factory) -> Path:
    """Every demo tenant's fleet reads recorded (with a canary in every secret and token the simulated tenants
    issue) into a copy of its recordings, and a parameter file replaying that copy."""
    folder = tmp_path_factory.mktemp("fleet")
    for path in sorted(DEMO.glob("*.yaml")):
        copy = folder / "recordings" / path.stem
        shutil.copytree(ROOT / "recordings" / path.stem, copy)
        recorded = demos.record_fleet(path, copy, canary=CANARY)
        assert recorded.writes == 0 and recorded.mode == "record"
        raw = params.load(path).public() | {"recordings": str(copy)}
        (folder / "params").mkdir(exist_ok=True)
        (folder / "params" / path.name).write_text(yaml.safe_dump(raw))
    return folder


@pytest.fixture(scope="module")
def demo_report(demo_fleet) -> tuple[int, str]:
    """``runbook fleet`` over the demo tenants' copies, writing every report: its exit code and what it printed."""
    import contextlib
    import io

    out = demo_fleet / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(
            [
                "fleet",
                str(demo_fleet / "params" / "*.yaml"),
                *("--html", str(out / "fleet.html"), "--csv", str(out / "fleet.csv")),
                *("--json", str(out / "fleet.json"), "--archive", str(demo_fleet / "archive")),
            ]
        )
    return code, printed.getvalue()


def test_the_demo_fleet_gives_each_tenant_its_status_and_exits_1(demo_fleet, demo_report):
    code, printed = demo_report
    out = demo_fleet / "out"
    assert code == 1
    rows = json.loads((out / "fleet.json").read_text())["tenants"]
    assert {r["tenant"]: r["status"] for r in rows} == DEMO_STATUS
    assert [r["status"] for r in rows] == sorted((r["status"] for r in rows), key=fleet.RANK.get)
    assert all(r["writes"] == 0 and r["mode"] == "replay" for r in rows)
    by_tenant = {r["tenant"]: r for r in rows}
    assert "08_rotate_secret" in by_tenant["vanarsdel"]["next_action"] and by_tenant["vanarsdel"]["days_left"] < 0
    assert (
        "Secret ID" in by_tenant["trey"]["reason"] and "02_azure_app_registration" in by_tenant["trey"]["next_action"]
    )
    assert "admin consent: Mail.Send" in by_tenant["coho"]["reason"]
    assert by_tenant["alpine"]["mailbox"].startswith("drift") and by_tenant["fabrikam"]["mailbox"] == "as desired"
    assert "2 applications" in by_tenant["tailspin"]["reason"]
    assert by_tenant["contoso"]["mailbox"] == "not read"  # mailbox.apply_with: powershell
    assert list(csv.DictReader((out / "fleet.csv").open()))[0]["tenant"] == rows[0]["tenant"]
    assert "20 fail, 1 warn, 1 ok" in printed
    # the README's words under its fleet picture say what this command gives (`make fleet-picture` draws it)
    readme = (ROOT / "README.md").read_text()
    assert f"over the {len(rows)} demo tenants (20 fail, 1 warn, 1 ok" in readme.replace("\n", " ")

    page = (out / "fleet.html").read_text()
    assert "<script" not in page.lower() and 'http-equiv="Content-Security-Policy"' in page
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="timeline"' in page
    assert 'class="today"' in page and page.count('class="warning-window"') == len(DEMO_STATUS)
    assert "REPLAY of recorded answers" in page and "(replay)" in page
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", page)  # nothing loaded from anywhere


def test_no_secret_in_any_output_or_recording(demo_fleet, demo_report):
    stored = [secrets.read(params.load(p).secret_store) for p in DEMO.glob("*.yaml")]
    needles = [CANARY, *(v for v in stored if v and len(v) > 8)]
    out = demo_fleet / "out"
    leaked = [f"{f.name}: {n}" for f in out.iterdir() for n in needles if n in f.read_text()]
    recorded = demo_fleet / "recordings"
    leaked += [f"{f}: {CANARY}" for f in recorded.rglob(f"{registry.FLEET_HEALTH}.yaml") if CANARY in f.read_text()]
    assert len(list(out.iterdir())) == 3 and not leaked


def test_bad_input_names_the_field_and_reads_nothing(demo_fleet, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    raw = yaml.safe_load((demo_fleet / "params" / "fabrikam.yaml").read_text())
    bad.write_text(yaml.safe_dump(raw | {"tenant_id": "not-a-tenant", "recordings": str(tmp_path / "none")}))
    code = cli.main(
        ["fleet", str(demo_fleet / "params" / "fabrikam.yaml"), str(bad), "--json", str(tmp_path / "f.json")]
    )
    assert code == 2 and "tenant_id" in capsys.readouterr().err
    assert not (tmp_path / "f.json").exists()


def test_the_last_successful_verify_comes_from_the_records(tmp_path):
    sealed = tmp_path / "t" / "20260101T000000Z"
    sealed.mkdir(parents=True)
    steps = [{"step": registry.VERIFY, "status": "ok"}]
    (sealed / "manifest.json").write_text(json.dumps({"finished": "2026-01-01T00:05:00+00:00", "steps": steps}))
    (sealed / "seal.json").write_text("{}")
    failed = tmp_path / "t" / "20260201T000000Z"
    failed.mkdir()
    (failed / "manifest.json").write_text(json.dumps({"steps": [{"step": registry.VERIFY, "status": "failed"}]}))
    (failed / "seal.json").write_text("{}")
    assert fleet.last_verify(tmp_path, "t") == "2026-01-01"
    assert fleet.last_verify(tmp_path, "nobody") == ""


# --- a fleet of sandbox tenants: one healthy, one with a fault injected ----------------------------------------


def sandbox_tenant(tmp_path: Path, name: str, fault: str = "") -> str:
    """A trainee's sandbox seeded from the configured demo tenant (fabrikam), with ``fault`` injected, and its
    parameter file, with a store of its own holding the tenant's secret."""
    seeds = tmp_path / "recordings" / name
    shutil.copytree(ROOT / "recordings" / "fabrikam", seeds)
    tenant = TraineeTenant(yaml.safe_load((seeds / "tenant.yaml").read_text()), salt="")
    if fault:
        mistakes.FAULTS[fault].inject(tenant)
    demo = params.load(DEMO / "fabrikam.yaml")
    store = secrets.private_copy(demo.secret_store, tmp_path / "stores", f"{name}.secret")
    state.save(name, tenant, store.model_dump(exclude_none=True))
    raw = demo.public() | {"tenant": name, "mode": "sandbox", "recordings": str(seeds)}
    raw["secret_store"] = store.model_dump(exclude_none=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_fleet_of_sandbox_tenants_reads_in_parallel_and_writes_nothing(tmp_path):
    files = [sandbox_tenant(tmp_path, "fleet-healthy"), sandbox_tenant(tmp_path, "fleet-broken", "consent-missing")]
    seen = []
    result = fleet.read_fleet(files, jobs=2, archive=tmp_path / "archive", progress=lambda h, d, t: seen.append(d))
    rows = {r.health.tenant: r for r in result.rows}
    assert rows["fleet-healthy"].judgement.status == "ok", rows["fleet-healthy"].judgement
    broken = rows["fleet-broken"].judgement
    assert broken.status == "fail" and "admin consent: Mail.Send" in broken.reason
    assert "--steps 02_azure_app_registration" in broken.next_action
    assert [r.health.tenant for r in result.rows] == ["fleet-broken", "fleet-healthy"] and result.exit_code == 1
    assert all(r.health.writes == 0 and r.health.mode == "sandbox" for r in result.rows)
    assert rows["fleet-healthy"].health.days_left == 200 and seen == [1, 2]
    assert mistakes.FAULTS["consent-missing"].in_effect(state.read(state.state_file("fleet-broken")))  # unrepaired


# --- the notebook: a fleet in JupyterLab, and its own tenant in a run ------------------------------------------


def test_the_notebook_shows_the_fleet_it_is_given(demo_fleet, tmp_path):
    import nbformat
    import papermill

    from runbook_lib.running import runner

    files = [str(demo_fleet / "params" / f"{t}.yaml") for t in ("fabrikam", "vanarsdel")]
    output = tmp_path / "07.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{registry.FLEET_HEALTH}.ipynb"),
        str(output),
        parameters={"fleet_files": files},
        kernel_name=runner.kernel_name(),
        cwd=str(ROOT / "notebooks"),
        progress_bar=False,
    )
    shown = [
        o.get("data", {}).get("text/html", "") for c in nbformat.read(output, 4).cells for o in c.get("outputs", [])
    ]
    [report] = [html for html in shown if 'class="timeline"' in html]
    assert report.index("vanarsdel") < report.index("fabrikam") and "1 fail, 0 warn, 1 ok" in report


def test_a_run_of_the_step_reads_its_own_tenant(demo_fleet, tmp_path):
    from runbook_lib.running import runner

    loaded = params.load(demo_fleet / "params" / "coho.yaml")
    raw = loaded.public() | {"steps": [registry.FLEET_HEALTH]}
    raw["secret_store"] = secrets.private_copy(loaded.secret_store, tmp_path / "store").model_dump(exclude_none=True)
    result = runner.run(params.validate(raw), archive=tmp_path / "archive", steps=[registry.FLEET_HEALTH])
    [step] = result.steps
    assert step.status == "ok" and step.counts["writes"] == 0, step.error
    assert "admin consent: Mail.Send" in [c.check for c in step.checks if c.verdict == "fail"]
