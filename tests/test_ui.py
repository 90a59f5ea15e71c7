"""The training helpers, driven as a person would: set values, click; the parameters a notebook runs with; the flow
diagram; JupyterLab as `runbook lab` starts it."""

from __future__ import annotations

import html
import json
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
import yaml

from runbook_lib import cli
from runbook_lib.config import params
from runbook_lib.context import ui
from runbook_lib.engine.journal import JOURNAL_ENV
from runbook_lib.errors import ParamsError

from conftest import ROOT

pytestmark = pytest.mark.e2e

TRAINEE = ROOT / "params" / "training" / "trainee.yaml"


def form_parts(form):
    """The form's file field and Load button, its fields by label, its Use and Save buttons, and its message."""
    file_row, *fields, buttons, result = form.children
    file_field, load = file_row.children
    use, save = buttons.children
    return file_field, load, {f.description: f for f in fields}, use, save, result


def trainee_raw(tmp_path: Path) -> dict:
    raw = yaml.safe_load(TRAINEE.read_text())
    raw["secret_store"] = {"file": str(tmp_path / "secrets" / "trainee.secret")}
    return raw


def cell(**values: object) -> dict:
    """A notebook's parameters cell as it opens (the demo tenant), with ``values`` set."""
    return {"params_file": "params/demo/contoso.yaml", "overrides": {}, "parameters": {}, **values}


def test_form_uses_valid_parameters_and_refuses_bad_ones(demo_raw):
    namespace = cell()
    _, _, by_label, use, _, result = form_parts(ui.parameters_form(namespace))
    by_label["webex.callback_url"].value = "https://contoso.us.webexconnect.io/callbak"
    use.click()
    assert "webex.callback_url" in result.value and namespace["parameters"] == {}
    by_label["webex.callback_url"].value = "https://contoso-two.us.webexconnect.io/callback"
    by_label["apply"].value = False
    use.click()
    assert "Parameters set" in result.value
    used = namespace["parameters"]
    assert used["webex"]["callback_url"] == "https://contoso-two.us.webexconnect.io/callback" and used["apply"] is False
    assert namespace["params_file"] == "" and ui.notebook_params(namespace)[0] == params.validate(used)
    assert by_label["mode"].options == ("replay", "live", "record", "sandbox")
    assert {"secret_store", "recordings", "mode", "verify.mailbox_sign_in"} <= set(by_label)


def test_the_form_refuses_a_trainee_run_that_would_write_the_demo_store():
    namespace = cell()
    _, _, by_label, use, _, result = form_parts(ui.parameters_form(namespace))
    by_label["mode"].value = "sandbox"
    by_label["tenant"].value = "trainee-07"
    by_label["recordings"].value = "recordings/contoso"
    use.click()
    assert "secret_store" in result.value and "demo tenant" in result.value and namespace["parameters"] == {}
    assert "{file: .runbook/secrets/trainee-07.secret}" in result.value  # the fix names a store of the trainee's own
    by_label["secret_store"].value = "the secret itself"
    use.click()
    assert "write file:PATH, env:NAME or keyring:SERVICE/USER" in result.value and namespace["parameters"] == {}
    by_label["recordings"].value = ""
    by_label["secret_store"].value = "file:.runbook/secrets/trainee-07.secret"
    use.click()  # the seed of recordings/trainee-07 does not exist: named before any request
    assert "sandbox mode needs the seed" in result.value and namespace["parameters"] == {}


def test_a_trainee_saves_the_form_to_a_file_every_notebook_then_loads(tmp_path):
    raw = trainee_raw(tmp_path)
    target = tmp_path / "trainee-07.yaml"
    first = cell(params_file=str(target))  # the file does not exist yet
    file_field, _, by_label, _, save, result = form_parts(ui.parameters_form(first))
    assert "does not exist" in result.value and by_label["tenant"].value == "contoso"  # the demo's values shown
    for label, value in {
        "tenant": "trainee-07",
        "mode": "sandbox",
        "recordings": "recordings/contoso",
        "secret_store": f"file:{raw['secret_store']['file']}",
        "mailbox.apply_with": "adminapi",
        "verify.probe_authorize_url": True,
    }.items():
        by_label[label].value = value
    save.click()
    assert "Saved to" in result.value, result.value
    saved = params.load(target)
    assert saved.tenant == "trainee-07" and saved.mode == "sandbox" and saved.verify.probe_authorize_url
    assert first["params_file"] == str(target) and first["parameters"]["tenant"] == "trainee-07"
    assert "network" not in yaml.safe_load(target.read_text())  # defaults are left out: it reads like a person's

    second = cell()  # another notebook: its cell still names the demo file
    file_field, load, by_label, _, save, result = form_parts(ui.parameters_form(second))
    file_field.value = ""
    load.click()
    assert "name the file to load" in result.value and second["parameters"] == {}
    file_field.value = str(target)
    load.click()
    assert "Loaded" in result.value and by_label["tenant"].value == "trainee-07"
    assert ui.notebook_params(second) == (saved, [])

    file_field.value = "params/demo/mine.yaml"
    save.click()
    assert "params/demo/ holds the demo tenants" in result.value and not (ROOT / "params/demo/mine.yaml").exists()


def test_a_file_with_a_problem_loads_into_the_form_to_be_fixed_and_saved(tmp_path):
    raw = trainee_raw(tmp_path)
    raw["secret_store"] = {"file": "params/demo/secrets/contoso.secret"}  # a sandbox must not write it
    target = tmp_path / "trainee-01.yaml"
    target.write_text(yaml.safe_dump(raw))
    namespace = cell()
    file_field, load, by_label, _, save, result = form_parts(ui.parameters_form(namespace))
    file_field.value = str(target)
    load.click()
    assert "not used yet" in result.value and "demo tenant" in result.value and namespace["parameters"] == {}
    by_label["secret_store"].value = f"file:{tmp_path / 'own.secret'}"
    save.click()
    saved = params.load(target)  # the values the form does not show are the file's
    assert saved.checklist.confirmed_by == "trainee-01" and saved.secret_store.file == str(tmp_path / "own.secret")
    assert namespace["parameters"]["tenant"] == "trainee-01" and namespace["params_file"] == str(target)


def test_the_parameters_are_the_file_with_the_overrides_on_top(tmp_path):
    raw = trainee_raw(tmp_path)
    del raw["mailbox"]  # left out of the file: the default
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
    got, notes = ui.notebook_params(cell(params_file=str(tmp_path / "t.yaml")))
    assert got == params.validate(raw) and got.mailbox == params.Mailbox() and notes == []
    changed = cell(params_file=str(tmp_path / "t.yaml"), overrides={"apply": False, "mailbox": {"keep_copy": False}})
    got = ui.notebook_params(changed)[0]
    assert got.apply is False and got.mailbox.keep_copy is False and got.tenant == raw["tenant"]
    with pytest.raises(ParamsError) as bad:
        ui.notebook_params(cell(overrides=["apply"]))
    assert set(bad.value.problems) == {"overrides"}
    with pytest.raises(ParamsError) as none:
        ui.notebook_params(cell(params_file=""))
    assert set(none.value.problems) == {"params_file"} and "params/demo/contoso.yaml" in none.value.explain()


def test_a_missing_or_incomplete_params_file_is_named_never_a_raw_error(tmp_path):
    with pytest.raises(ParamsError) as missing:
        ui.notebook_params(cell(params_file="params/training/nobody.yaml"))
    assert set(missing.value.problems) == {"params_file"}
    assert (
        "does not exist" in missing.value.explain() and "params_file in the parameters cell" in missing.value.explain()
    )
    raw = trainee_raw(tmp_path)
    del raw["secret_store"]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as incomplete:
        ui.notebook_params(cell(params_file=str(tmp_path / "t.yaml")))
    assert "a store of their own, {file: .runbook/secrets/TENANT.secret}" in incomplete.value.problems["secret_store"]


def test_a_run_uses_the_parameters_it_injected_never_a_file_the_notebook_names(demo_raw, monkeypatch):
    """`runbook run` read its file once and injected it whole; a file a saved notebook names must not replace it."""
    monkeypatch.setenv(JOURNAL_ENV, "journal.jsonl")
    got, notes = ui.notebook_params(cell(parameters=demo_raw, params_file="params/training/trainee.yaml"))
    assert got == params.validate(demo_raw) and notes == []
    html = ui.parameters_form(cell(parameters=demo_raw)).data  # headless: a table, no widget
    assert "Parameters of this run" in html and "file:params/demo/secrets/contoso.secret" in html


def test_every_notebook_has_the_same_small_parameters_cell_and_reads_every_field_from_it(tmp_path):
    """One source of parameters: each notebook's cell is a few lines naming the file, and a value set once in it
    (``mail_send`` included, which step 3 decides on) means the same in every step."""
    raw = trainee_raw(tmp_path)
    raw["application"] = {"display_name": "Webex Connect Email (EU)", "mail_send": "scoped", "secret_lifetime_days": 90}
    raw.update(consent="admin", verify={"mailbox_sign_in": False, "secret_warn_days": 12})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
    expected = params.validate(raw)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        [parameters] = [
            c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])
        ]
        assert len(parameters.source.splitlines()) <= 10, path.name
        namespace: dict = {}
        exec(parameters.source, namespace)
        assert {"params_file", "overrides", "parameters"} <= set(namespace), path.name
        namespace.update(params_file=str(tmp_path / "t.yaml"), overrides={})
        assert ui.notebook_params(namespace)[0] == expected, path.name


@pytest.mark.parametrize("key", sorted(ui.quizzes()))
def test_each_check_of_understanding_gives_feedback(key):
    quiz = ui.quizzes()[key]
    _, choice, button, feedback = ui.check_understanding(key).children
    button.click()
    assert "Pick an answer" in feedback.value
    choice.value = quiz["choices"][(quiz["answer"] + 1) % len(quiz["choices"])]
    button.click()
    assert "Not quite" in feedback.value
    choice.value = quiz["choices"][quiz["answer"]]
    button.click()
    assert "Right" in feedback.value and quiz["explanation"] in feedback.value


def test_every_notebook_checks_understanding_and_every_check_is_asked(monkeypatch):
    asked: dict[str, list[str]] = {}
    for path in sorted((ROOT / "notebooks").glob("0[1-9]_*.ipynb")):
        cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        asked[path.stem] = [key for src in cells for key in ui.quizzes() if f'check_understanding("{key}")' in src]
    assert all(asked.values()), asked
    assert sorted(k for keys in asked.values() for k in keys) == sorted(ui.quizzes())
    monkeypatch.setenv(JOURNAL_ENV, "journal.jsonl")  # headless: static HTML that reads the same
    assert html.escape(ui.quizzes()["callback_exact"]["question"]) in ui.check_understanding("callback_exact").data


def test_the_flow_diagram_is_static_and_names_every_token():
    svg = ui.flow_diagram().data
    root = ET.fromstring(svg)  # well-formed, one picture
    text = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for said in (
        "the operator's Graph token",
        "app-only token",
        "delegated SMTP.Send access token",
        "refresh token",
        "@mail-<region>.imiconnect.io",
        "AADSTS50011",
    ):
        assert said in text, said
    assert "<script" not in svg and "http://" not in svg.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in svg and "href" not in svg  # loads nothing: offline, in JupyterLab and in records
    assert any(
        "flow_diagram()" in c.source for c in nbformat.read(ROOT / "notebooks/01_webex_connect_app.ipynb", 4).cells
    )


def lab_processes(runtime: str) -> list[int]:
    """Processes whose command line names ``runtime`` (JupyterLab's kernels are started with a connection file in
    it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if runtime.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_runbook_lab_serves_the_kit_its_kernels_listen_on_no_port_and_a_sigterm_leaves_nothing_behind():
    """`runbook lab` starts JupyterLab on the kit (the notebooks, params/ and archive/ in reach): it answers on
    loopback; a kernel it starts talks over Unix sockets in a private runtime folder. Stopped by its PID, it stops
    JupyterLab and the kernel, and removes the folder."""
    from jupyter_client import BlockingKernelClient

    assert "--KernelManager.transport=ipc" in cli.lab_command([])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "test-token"
    headers = {"Authorization": f"token {token}"}
    args = ["--no-browser", f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}"]
    before = set(Path("/tmp").glob("runbook-lab-*"))
    lab = subprocess.Popen(
        [str(Path(sys.executable).parent / "runbook"), "lab", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents", headers=headers)
                with urllib.request.urlopen(request, timeout=2) as answer:
                    listing = json.load(answer)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("JupyterLab did not answer within a minute")
        assert {"notebooks", "params"} <= {item["name"] for item in listing["content"]}
        [runtime] = set(Path("/tmp").glob("runbook-lab-*")) - before
        assert stat.S_IMODE(runtime.stat().st_mode) & 0o077 == 0
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/kernels", data=b'{"name": "runbook-kit"}', headers=headers
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            kernel = json.load(answer)
        connection = runtime / f"kernel-{kernel['id']}.json"
        info = json.loads(connection.read_text())
        assert info["transport"] == "ipc" and info["ip"].startswith(str(runtime))
        client = BlockingKernelClient(connection_file=str(connection))
        client.load_connection_file()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            assert client.execute_interactive("6 * 7", timeout=60)["content"]["status"] == "ok"
        finally:
            client.stop_channels()
        assert lab_processes(str(runtime))  # the kernel runs
        lab.send_signal(signal.SIGTERM)  # stopped by its PID
        assert lab.wait(timeout=90) == 0
    finally:
        if lab.poll() is None:
            lab.kill()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2)
    assert not runtime.exists() and lab_processes(str(runtime)) == []
