"""Batches, locks, retries of a dead kernel or a hung cell, and record inspection."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from runbook_lib import batch, cli, integrity, locks, params, records, runner
from runbook_lib.errors import LockHeld

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
    [batch_dir] = records.record_dirs(archive, batch.BATCHES)
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
