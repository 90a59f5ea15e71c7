"""Batches, locks, retries of a dead kernel or a hung cell, record inspection: what a record and a batch summary
say first (the mode, the tenant, who, the reason and ticket), and that a change to a real tenant needs them."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from pydantic import BaseModel

from runbook_lib import cli
from runbook_lib.config import params
from runbook_lib.engine import locks
from runbook_lib.engine.results import SecretFacts, StepRecord
from runbook_lib.errors import LockHeld
from runbook_lib.records import integrity, record_views
from runbook_lib.records import store as records
from runbook_lib.running import batch, runner

from conftest import DEMO, ROOT

pytestmark = pytest.mark.e2e

STEP1 = "01_webex_connect_app"


def test_batch_validates_first_runs_the_rest_and_reruns_only_failures(tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("tenant: Not A Slug\n")
    files = [str(DEMO), str(ROOT / "params" / "demo" / "tailspin.yaml"), str(bad)]
    archive = tmp_path / "archive"
    code = cli.main(
        ["batch", *files, "--jobs", "2", "--steps", STEP1, "02_azure_app_registration", "--archive", str(archive)]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "invalid: " in out and "tenant:" in out and "[2/2]" in out
    [batch_dir] = sorted((archive / batch.BATCHES).iterdir())
    data = json.loads((batch_dir / "batch.json").read_text())
    by_tenant = {t["tenant"]: t for t in data["tenants"]}
    assert by_tenant["contoso"]["status"] == "ok" and by_tenant["contoso"]["writes"] == 4
    assert by_tenant["tailspin"]["failing_step"] == "02_azure_app_registration"
    assert "application.app_id" in by_tenant["tailspin"]["diagnosis"]
    assert by_tenant["broken"]["status"] == "invalid" and "tenant" in by_tenant["broken"]["diagnosis"]
    assert (archive / by_tenant["contoso"]["record"] / "manifest.json").exists()
    assert integrity.verify(batch_dir) == [] and data["status"] == "failed"
    # --only-failed runs tailspin (and re-checks the broken file), not contoso
    code = cli.main(["batch", "--only-failed", str(batch_dir), "--steps", STEP1, "--archive", str(archive)])
    assert code == 1
    assert len(records.record_dirs(archive, "contoso")) == 1 and len(records.record_dirs(archive, "tailspin")) == 2


def test_a_second_run_of_the_same_tenant_waits_or_is_refused(tmp_path, demo_raw):
    archive = tmp_path / "archive"
    tenant = params.validate(demo_raw)
    with locks.tenant_lock(tenant, command="another run"), pytest.raises(LockHeld, match="locked by another run"):
        runner.run(tenant, archive=archive, steps=[STEP1], wait_lock=0.5)
    assert records.record_dirs(archive, "contoso") == []
    runner.run(tenant, archive=archive, steps=[STEP1], progress=lambda _: None)
    assert len(records.record_dirs(archive, "contoso")) == 1


def test_a_hung_cell_fails_its_attempt_and_the_step_is_retried_once(tmp_path, live_raw, sandbox):
    sandbox.tenant.faults.append({"method": "GET", "path": "^/v1.0/applications$", "delay": 20, "times": 1})
    result = runner.run(
        params.validate(live_raw),
        archive=tmp_path / "archive",
        cell_timeout=5,
        steps=["02_azure_app_registration"],
        progress=lambda _: None,
    )
    [step] = result.steps
    assert step.status == "ok" and "cell timeout (5 s)" in step.facts.retried


def test_a_dead_kernel_is_retried_once(tmp_path, demo_raw):
    marker = tmp_path / "died-once"
    nb = nbformat.read(ROOT / "notebooks" / f"{STEP1}.ipynb", as_version=4)
    setup = next(i for i, c in enumerate(nb.cells) if "rb.start(" in c.source)
    nb.cells.insert(
        setup,
        nbformat.v4.new_code_cell(
            f"import os, pathlib\nif not pathlib.Path({str(marker)!r}).exists():\n"
            f"    pathlib.Path({str(marker)!r}).touch()\n    os._exit(1)"
        ),
    )
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(nb, notebooks / f"{STEP1}.ipynb")
    result = runner.run(
        params.validate(demo_raw),
        archive=tmp_path / "archive",
        steps=[STEP1],
        notebooks=notebooks,
        progress=lambda _: None,
    )
    [step] = result.steps
    assert step.status == "ok" and "kernel died" in step.facts.retried


def test_records_list_show_and_verify(tmp_path, demo_raw, capsys):
    archive = tmp_path / "archive"
    result = runner.run(
        params.validate(demo_raw), archive=archive, steps=[STEP1, "02_azure_app_registration"], progress=lambda _: None
    )
    assert cli.main(["records", "contoso", "--archive", str(archive)]) == 0
    assert result.record.name in capsys.readouterr().out
    assert cli.main(["show", str(result.record)]) == 0
    shown = capsys.readouterr().out
    assert "created application: Webex Connect Email" in shown and "02_azure_app_registration: ok" in shown
    assert cli.main(["verify-record", str(result.record)]) == 0
    integrity.make_writable(result.record)
    (result.record / "02_azure_app_registration.html").write_text("tampered")
    (result.record / f"{STEP1}.ipynb").unlink()
    (result.record / "extra.txt").write_text("x")
    assert cli.main(["verify-record", str(result.record)]) == 1
    out = capsys.readouterr().out
    assert (
        "altered: 02_azure_app_registration.html" in out
        and f"removed: {STEP1}.ipynb" in out
        and "added: extra.txt" in out
    )


def test_the_html_record_starts_with_the_changes_and_has_no_code(tmp_path, demo_raw):
    result = runner.run(
        params.validate(demo_raw),
        archive=tmp_path / "archive",
        steps=[STEP1, "02_azure_app_registration"],
        progress=lambda _: None,
    )
    html = (result.record / "02_azure_app_registration.html").read_text()
    assert html.index("Record of 02_azure_app_registration: ok") < html.index("Register the application")
    assert "grant admin consent" in html and "rb.start(" not in html and "entra.ensure_secret" not in html
    assert "REPLAY of recorded answers: nothing was sent to any tenant" in html
    assert not re.search(r"<(script|link)[^>]*(src|href)=[\"']?https?://", html) and "<script" not in html


def test_the_same_batch_runs_on_a_dask_cluster(tmp_path):
    import distributed  # the 'dask' extra; part of the dev extras, so this test always runs

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        record, table = batch.run_batch(
            [str(DEMO), str(ROOT / "params" / "demo" / "proseware.yaml")],
            steps=[STEP1, "02_azure_app_registration"],
            archive=tmp_path / "archive",
            dask_scheduler=cluster.scheduler_address,
            progress=lambda _: None,
        )
    outcome = table.set_index("tenant")
    assert outcome.loc["contoso", "status"] == "ok" and outcome.loc["proseware", "status"] == "failed"
    assert "Exchange Online" in outcome.loc["proseware", "diagnosis"]
    assert integrity.verify(record) == []


def test_paths_that_are_not_records_get_a_clear_error(tmp_path, capsys):
    assert cli.main(["show", str(tmp_path)]) == 1
    assert cli.main(["verify-record", str(tmp_path)]) == 1
    assert cli.main(["batch", "--only-failed", str(tmp_path)]) == 1
    assert cli.main(["diagnose", "--file", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert "is not a run record" in err and "is not a batch record" in err and "cannot read" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("option", ["--jobs", "--cell-timeout"])
def test_batch_options_must_be_positive(option, capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["batch", str(DEMO), option, "0", "--archive", str(tmp_path)])
    assert stopped.value.code == 2 and f"argument {option}: 0 must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "contoso").exists()


# --- what a record and a batch summary open with and say --------------------------------------------------------


def kit_classes() -> set[str]:
    """Every dataclass and parameter model of the kit: their default reprs are for programmers, never for people."""
    import runbook_lib

    names = set()
    for info in pkgutil.walk_packages(runbook_lib.__path__, "runbook_lib."):
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and (dataclasses.is_dataclass(cls) or issubclass(cls, BaseModel)):
                names.add(name)
    return names


REPR = re.compile(rf"\b(?:{'|'.join(sorted(kit_classes()))})\(\w+=")


def outputs_text(notebook: Path) -> str:
    """Every text a person reads in a notebook's outputs: streams, errors, and text, HTML and Markdown results."""
    nb = nbformat.read(notebook, as_version=4)
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts += [out.get("text", ""), out.get("ename", ""), out.get("evalue", "")]
            texts += [str(out.get("data", {}).get(mime, "")) for mime in ("text/plain", "text/html", "text/markdown")]
    return "\n".join(texts)


@pytest.fixture(scope="module")
def demo_batch(tmp_path_factory):
    """One replayed batch, every tenant with its own secret store and the batch's reason and ticket: contoso (every
    step), contoso-form (steps 1 to 4: it ends with step 4's checklist not confirmed) and proseware (fails at step 2,
    with a long diagnosis)."""
    folder = tmp_path_factory.mktemp("demo-batch")
    files = []
    for name, tenant, steps in (
        ("contoso", "contoso", None),
        ("contoso-form", "contoso", 4),
        ("proseware", "proseware", None),
    ):
        raw = yaml.safe_load((ROOT / "params" / "demo" / f"{tenant}.yaml").read_text())
        raw.update(
            tenant=name, recordings=f"recordings/{tenant}", secret_store={"file": str(folder / f"{name}.secret")}
        )
        raw.update({"steps": list(params.STEP_NAMES[:steps])} if steps else {})
        files.append(folder / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(raw))
    record, table = batch.run_batch(
        [str(f) for f in files],
        jobs=2,
        archive=folder / "archive",
        change={"reason": "training: the demo tenants", "ticket": "TRAIN-7"},
        wait_lock=120,  # contoso and contoso-form are one tenant: one runs after the other
        progress=lambda _: None,
    )
    return folder / "archive", record, table.set_index("tenant", drop=False)


def test_a_replayed_record_names_the_mode_first_in_show_and_html(demo_batch, capsys):
    archive, _, table = demo_batch
    record = archive / table.loc["contoso", "record"]
    assert cli.main(["show", str(record)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == records.MODE_MEANING["replay"]
    assert shown[1:5] == [
        "tenant: contoso (tenant ID 3c8a5f3e-2b1d-4f4a-9c6e-8d2f7a1b5e90)",
        "signed in: admin@contoso.onmicrosoft.com (user, object 0e4f7a86-a7f7-5818-9d9a-f6859803153a, "
        "tenant 3c8a5f3e-2b1d-4f4a-9c6e-8d2f7a1b5e90)",
        "reason: training: the demo tenants",
        "ticket: TRAIN-7",
    ]
    html = (record / "02_azure_app_registration.html").read_text()
    body = html[html.index("<body>") :]
    banner = '<p class="mode simulated">REPLAY of recorded answers: nothing was sent to any tenant</p>'
    assert body.index(banner) < body.index("TRAIN-7") < body.index("Record of 02_azure_app_registration")
    assert "<title>REPLAY: 02_azure_app_registration</title>" in html and "No real tenant was changed" in html
    manifest = records.read_manifest(record)
    assert manifest["mode_meaning"] == records.MODE_MEANING["replay"] and manifest["change"]["ticket"] == "TRAIN-7"


def test_no_output_a_person_reads_shows_a_python_repr(demo_batch):
    assert REPR.search(repr(SecretFacts("abc", "2027-01-01", "k", "file:x")))  # the pattern finds a default repr
    archive, _, table = demo_batch
    folders = [archive / record for record in table["record"]]
    pages = [page for folder in folders for page in sorted(folder.glob("*.ipynb")) + sorted(folder.glob("*.html"))]
    assert len(pages) > 8
    found = {
        page.name: REPR.findall(outputs_text(page) if page.suffix == ".ipynb" else page.read_text()) for page in pages
    }
    assert not {name: reprs for name, reprs in found.items() if reprs}
    assert not [page.name for page in pages if page.suffix == ".html" and "VBox(" in page.read_text()]


def test_an_unconfirmed_checklist_says_so_in_every_status(demo_batch, capsys):
    archive, record, table = demo_batch
    run = archive / table.loc["contoso-form", "record"]
    step4 = next(s for s in records.read_manifest(run)["steps"] if s["step"] == "04_webex_connect_email_app")
    assert step4["status"] == "ok" and step4["status_text"] == "ok, checklist incomplete"
    assert (
        "Record of 04_webex_connect_email_app: ok, checklist incomplete" in (run / f"{step4['step']}.html").read_text()
    )
    cli.main(["show", str(run)])
    assert "  04_webex_connect_email_app: ok, checklist incomplete" in capsys.readouterr().out.splitlines()
    assert records.read_manifest(run)["status"] == "ok" and record_views.history(archive, "contoso-form").loc[
        0, "status"
    ] == ("ok, checklist incomplete")
    assert table.loc["contoso-form", "status"] == "ok, checklist incomplete"
    saved = {t["tenant"]: t for t in json.loads((record / "batch.json").read_text())["tenants"]}
    assert saved["contoso-form"]["status"] == "ok" and saved["contoso-form"]["left_undone"] == "checklist incomplete"


def test_the_batch_summary_has_the_secrets_days_left_and_every_diagnosis_whole(demo_batch):
    _, record, table = demo_batch
    lifetime = yaml.safe_load(DEMO.read_text())["application"]["secret_lifetime_days"]
    assert table.loc["contoso", "secret_days_left"] == lifetime  # a secret made by this run
    assert table.loc["proseware", "secret_days_left"] == ""  # step 2 failed before any secret was read
    diagnosis = table.loc["proseware", "diagnosis"]
    assert len(diagnosis) > batch.WRAP and diagnosis.endswith(
        "then run step 2 again. Nothing was changed in the tenant."
    )
    text = batch.summary_text(table.reset_index(drop=True), record)
    assert all(len(line) <= batch.WRAP for line in text.split("Diagnoses")[1].splitlines())
    assert f"proseware (02_azure_app_registration): {diagnosis}" in " ".join(text.split())
    assert "secret_days_left" in text.splitlines()[0] and str(record / "summary.csv") in text
    csv = pd.read_csv(record / "summary.csv", keep_default_na=False).set_index("tenant")
    assert csv.loc["proseware", "diagnosis"] == diagnosis and csv.loc["contoso", "secret_days_left"] == str(lifetime)


def test_a_diagnosis_keeps_every_line_of_the_message_and_its_fix():
    error = (
        "the token endpoint refused\nthe secret: it expired\nFix: run step 2\nStep: 02\nAlready changed: app (created)."
    )
    result = runner.RunResult(Path("r"), [StepRecord("05_verify", status="failed", error=error)], "failed", "")
    assert batch._diagnosis(result) == (
        "05_verify",
        "the token endpoint refused the secret: it expired. Fix: run step 2. Already changed: app (created).",
    )


def test_a_batch_is_ok_when_every_tenant_is_and_a_checklist_left_to_a_person_is_ok():
    assert batch.overall(["ok", "ok, checklist incomplete"]) == "ok"
    assert batch.overall(["ok", "failed", "invalid"]) == "failed"
    assert batch.overall(["ok, checklist incomplete", "not started"]) == "interrupted"


# --- a change to a real tenant needs its reason and ticket -------------------------------------------------------


def test_a_live_run_without_a_ticket_is_refused_before_any_request_or_file(tmp_path, live_raw, sandbox, capsys):
    del live_raw["change"]
    params_file = tmp_path / "tenant.yaml"
    params_file.write_text(yaml.safe_dump(live_raw))
    archive = tmp_path / "archive"
    assert cli.main(["run", str(params_file), "--archive", str(archive), "--reason", "new mailbox"]) == 2
    err = capsys.readouterr().err
    assert "change.ticket: required when a live-mode run applies changes" in err and "change.reason" not in err
    assert cli.main(["batch", str(params_file), "--archive", str(archive)]) == 1
    assert "change.ticket" in capsys.readouterr().out
    assert sandbox.tenant.requests == [] and not (archive / "contoso").exists()
    assert not (tmp_path / "secrets").exists()


def test_no_ticket_lets_a_live_run_go_and_its_record_says_so(tmp_path, live_raw, sandbox, capsys):
    del live_raw["change"]
    params_file = tmp_path / "tenant.yaml"
    params_file.write_text(yaml.safe_dump(live_raw))
    archive = tmp_path / "archive"
    command = ["run", str(params_file), "--archive", str(archive), "--steps", STEP1, "--reason", "urgent: mail down"]
    assert cli.main([*command, "--no-ticket"]) == 0
    assert records.MODE_MEANING["live"] in capsys.readouterr().out
    [record] = records.record_dirs(archive, "contoso")
    assert cli.main(["show", str(record)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == records.MODE_MEANING["live"] and "ticket: no ticket (--no-ticket)" in shown[1:5]
    assert "reason: urgent: mail down" in shown[1:5]
    html = (record / f"{STEP1}.html").read_text()
    assert '<p class="mode real">LIVE' in html and "no ticket (--no-ticket)" in html
    assert records.read_manifest(record)["change"] == {
        "reason": "urgent: mail down",
        "ticket": "no ticket (--no-ticket)",
    }
