"""The training widgets, driven as a person would: set values, click."""

from __future__ import annotations

import pytest

from runbook_lib import ui

pytestmark = pytest.mark.e2e


def test_form_uses_valid_parameters_and_refuses_bad_ones(demo_raw):
    namespace = dict(demo_raw)
    form = ui.parameters_form(namespace)
    *fields, button, result = form.children
    by_label = {f.description: f for f in fields}
    by_label["webex.callback_url"].value = "https://contoso.us.webexconnect.io/callbak"
    button.click()
    assert "webex.callback_url" in result.value and namespace["webex"] == demo_raw["webex"]
    by_label["webex.callback_url"].value = "https://contoso.eu.webexconnect.io/callback"
    by_label["apply"].value = False
    button.click()
    assert "Parameters set" in result.value
    assert (
        namespace["webex"]["callback_url"] == "https://contoso.eu.webexconnect.io/callback"
        and namespace["apply"] is False
    )
    assert by_label["mode"].options == ("replay", "live", "record", "sandbox")


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


def test_runbook_lab_serves_the_notebooks(tmp_path):
    """`runbook lab` starts JupyterLab on the notebooks: it answers on loopback and lists them."""
    import json
    import socket
    import subprocess
    import time
    import urllib.request

    from runbook_lib import cli

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        "--IdentityProvider.token=",
        f"--ServerApp.runtime_dir={tmp_path}",
    ]
    server = subprocess.Popen(cli.lab_command(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=2) as answer:
                    listing = json.load(answer)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("JupyterLab did not answer within a minute")
        names = {item["name"] for item in listing["content"]}
        assert "05_verify.ipynb" in names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs", timeout=5) as answer:
            assert "runbook-kit" in json.load(answer)["kernelspecs"]
    finally:
        server.terminate()
        server.wait(timeout=30)
