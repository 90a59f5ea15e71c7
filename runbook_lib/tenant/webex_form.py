"""Step 4: exactly what to type into Webex Connect's Email app form, from this tenant's real state.

The values are built from the application as Graph has it now (client ID), the cloud's endpoints, and
the secret store. The client secret's value is never printed: the table says where it is; in JupyterLab
a button reveals it on screen for a minute, in a widget whose state is not saved with the notebook
(JupyterLab saves widget state only when "Save Widget State Automatically" is turned on). A headless run
(``runbook run``: the step has the run's journal) has nobody to press a button or tick a box, so it shows
what they would do in a sentence, never a widget's Python repr in the record.
"""

from __future__ import annotations

import html
import json
import threading
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..config import secrets, webex
from ..engine import journal
from . import entra

if TYPE_CHECKING:
    from ..context.step import Step

STEP = "04_webex_connect_email_app"
VALUES_FILE = "webex_connect_values.json"
REVEAL_SECONDS = 60
CLIENT_SECRET_NOTE = "the secret's Value, never its Secret ID"
#: the Email asset's consent-review setting (Webex's own words): with it ticked, Generate Token asks the user to
#: review consent, which fails where users may not consent
REVIEW_FIELD = "I would like to explicitly review before providing consent for authentication"


def client_secret(store: str, hint: str, expires: str) -> str:
    """The Client Secret field's value: where the Value is, and how to tell it (its hint), never the value."""
    return f"the Value in {store}: hint {hint}..., expires {expires}"


def form_values(step: Step) -> pd.DataFrame:
    """The form's fields in the order Webex Connect shows them, with where each value comes from. The
    application is found by its key or client ID, so this works right after step 2 created it."""
    app = entra.require_application(step, "yet")
    match = entra.stored_match(step, app)
    cred = match.secret if match.kind == "matched" else None
    e, w = step.endpoints, step.params.webex
    store = step.params.secret_store.describe()
    rows = [
        ("Asset Name", w.asset_name, "your choice, from step 1"),
        ("Email ID", w.email_id, "the mailbox"),
        ("Authentication Type", "OAuth 2.0", ""),
        ("SMTP Server", e.public_smtp_host, "Exchange Online's SMTP submission host"),
        ("Username", w.email_id, "the mailbox's user principal name"),
        ("Port", str(e.public_smtp_port), ""),
        ("Security", "STARTTLS (TLS)", ""),
        ("Client ID", app["appId"], "Application (client) ID from step 2"),
        (
            "Client Secret",
            client_secret(store, cred.hint, cred.expires.date().isoformat())
            if cred is not None
            else f"no valid secret in the store: {match.explain(store)}; run step 2",
            CLIENT_SECRET_NOTE,
        ),
        ("Call Back URL", w.callback_url, "shown by Webex Connect; registered in step 2"),
        ("Authorization URL", e.webex_authorize_url, "tenant-specific, not /common"),
        (
            "Scope",
            e.generate_token_scope,
            "delegated SMTP.Send (Exchange Online) and offline_access (Microsoft Graph, for a refresh token)",
        ),
        (
            REVIEW_FIELD,
            "cleared" if step.params.consent == "admin" else "cleared, unless users may consent to this app",
            "Webex: where users may not consent, this must be cleared or Generate Token fails",
        ),
        ("Access Token URL", e.webex_token_url, ""),
        ("Refresh Token URL", e.webex_token_url, "the same as the Access Token URL"),
    ]
    values = {field: value for field, value, _ in rows}
    step.facts.webex_connect_values = values
    step.artifact(VALUES_FILE, json.dumps(values, indent=2) + "\n")
    if cred is None:
        step.facts.warn(f"no valid client secret in the secret store: {match.explain(store)}")
    return pd.DataFrame(rows, columns=["field", "value", "note"])


def reveal_secret(step: Step) -> Any:
    """A button that shows the secret's Value on screen for a minute (JupyterLab only)."""
    store = step.params.secret_store
    if journal.started_by_runner():
        from IPython.display import Markdown

        return Markdown(
            f"In JupyterLab a **Reveal client secret** button shows the Value for {REVEAL_SECONDS} seconds. "
            f"A headless run never shows it: it is in `{store.describe()}`."
        )
    import ipywidgets as widgets

    button = widgets.Button(description="Reveal client secret", icon="eye")
    shown = widgets.HTML(value="")
    timers: list[threading.Timer] = []

    def hide() -> None:
        shown.value = ""
        button.description = "Reveal client secret"
        while timers:
            timers.pop().cancel()

    def toggle(_: Any) -> None:
        if shown.value:
            hide()
            return
        value = secrets.read(store)
        shown.value = f"<code>{html.escape(value)}</code>" if value else "<i>the secret store is empty: run step 2</i>"
        button.description = "Hide"
        timer = threading.Timer(REVEAL_SECONDS, hide)
        timer.daemon = True
        timer.start()
        timers.append(timer)

    button.on_click(toggle)
    return widgets.VBox([button, shown])


def checklist(step: Step) -> Any:
    """Check boxes for the Webex Connect actions; their state (or ``checklist`` in headless runs) is recorded, and
    a step that ends with any unconfirmed is ``ok, checklist incomplete`` (:attr:`StepRecord.status_text`)."""
    given = step.params.checklist
    state = {key: key in given.done for key in webex.CHECKLIST}
    step.facts.checklist = {"confirmed_by": given.confirmed_by, "items": state}
    if journal.started_by_runner():
        from IPython.display import Markdown

        return Markdown(
            "In JupyterLab these are check boxes. In a headless run the parameters `checklist.done` and "
            f"`checklist.confirmed_by` say what was confirmed: {sum(state.values())} of {len(state)} actions "
            "(the table below)."
        )
    import ipywidgets as widgets

    boxes = []
    for key, text in webex.CHECKLIST.items():
        box = widgets.Checkbox(value=state[key], description=text, indent=False, layout=widgets.Layout(width="auto"))
        box.observe(lambda change, key=key: state.__setitem__(key, change["new"]), names="value")
        boxes.append(box)
    return widgets.VBox(boxes)


def checklist_table(step: Step) -> pd.DataFrame:
    """What was confirmed, and by whom: this is what goes into the record."""
    recorded = step.facts.checklist or {"confirmed_by": "", "items": {}}
    return pd.DataFrame(
        [
            {"action": webex.CHECKLIST[k], "confirmed": done, "by": recorded["confirmed_by"] if done else ""}
            for k, done in recorded["items"].items()
        ]
    )
