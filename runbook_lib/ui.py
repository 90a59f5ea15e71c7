"""JupyterLab helpers for training: a form for a notebook's parameters, validated by the same schema as
the parameter files, and short checks of understanding. In a headless run (``runbook run``, which starts the
kernel with a journal) nobody can use them, so they are shown as static HTML instead: the record reads the same
and no widget library is loaded or messaged."""

from __future__ import annotations

import html
import os
from collections.abc import MutableMapping
from functools import cache
from importlib.resources import files
from typing import Any, get_args

import yaml

from . import params as params_mod
from .errors import ParamsError
from .journal import JOURNAL_ENV

#: the fields the form offers: (section or "", field); the rest keep the notebook's values
FORM_FIELDS = [
    ("", "tenant"),
    ("", "tenant_id"),
    ("", "mode"),
    ("", "apply"),
    ("", "consent"),
    ("webex", "asset_name"),
    ("webex", "email_id"),
    ("webex", "forwarding_address"),
    ("webex", "callback_url"),
    ("application", "display_name"),
    ("application", "secret_lifetime_days"),
    ("mailbox", "apply_with"),
]


def _model_field(section: str, name: str) -> Any:
    model: Any = params_mod.Params if not section else params_mod.Params.model_fields[section].annotation
    return model.model_fields[name]


def _widget(section: str, name: str, value: Any) -> Any:
    import ipywidgets as widgets

    label = f"{section}.{name}" if section else name
    annotation = _model_field(section, name).annotation
    style = {"description_width": "14em"}
    layout = widgets.Layout(width="44em")
    if annotation is bool:
        return widgets.Checkbox(value=bool(value), description=label, style=style, indent=False)
    if annotation is int:
        return widgets.IntText(value=int(value), description=label, style=style, layout=layout)
    choices = get_args(annotation)
    if choices and all(isinstance(c, str) for c in choices):
        return widgets.Dropdown(options=list(choices), value=value, description=label, style=style, layout=layout)
    return widgets.Text(value=str(value or ""), description=label, style=style, layout=layout)


def _headless() -> bool:
    return bool(os.environ.get(JOURNAL_ENV))


def _static(title: str, rows: list[tuple[str, Any]]) -> Any:
    from IPython.display import HTML

    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return HTML(f"<p><b>{html.escape(title)}</b></p><table>{body}</table>")


def parameters_form(namespace: MutableMapping[str, Any]) -> Any:
    """The notebook's parameters as a form; "Use these parameters" validates them and, when they are valid,
    puts them into the notebook so the cells below run with them."""
    current = params_mod.from_namespace(namespace).public()
    if _headless():
        values = [
            (f"{s}.{n}" if s else n, (current.get(s) or {}).get(n) if s else current.get(n)) for s, n in FORM_FIELDS
        ]
        return _static("Parameters of this run (a form in JupyterLab)", values)
    import ipywidgets as widgets

    fields = {(s, n): _widget(s, n, (current.get(s) or {}).get(n) if s else current.get(n)) for s, n in FORM_FIELDS}
    result = widgets.HTML()
    button = widgets.Button(description="Use these parameters", button_style="primary")

    def use(_: Any) -> None:
        data = dict(current)
        for (section, name), widget in fields.items():
            if section:
                data[section] = {**(data.get(section) or {}), name: widget.value}
            else:
                data[name] = widget.value
        try:
            validated = params_mod.validate(data, "the form")
        except ParamsError as error:
            rows = "".join(f"<li><b>{field}</b>: {why}</li>" for field, why in error.problems.items())
            result.value = f"<p style='color:#b00'>Not used; fix these fields:</p><ul>{rows}</ul>"
            return
        namespace.update(validated.public())
        result.value = "<p>Parameters set. Run the cells below (the setup cell starts the step with them).</p>"

    button.on_click(use)
    return widgets.VBox([*fields.values(), button, result])


@cache
def quizzes() -> dict[str, Any]:
    return yaml.safe_load(files("runbook_lib").joinpath("data/quizzes.yaml").read_text())


def check_understanding(key: str) -> Any:
    """A multiple-choice question with feedback, for the points trainees most often get wrong."""
    quiz = quizzes()[key]
    if _headless():
        return _static(
            f"Check your understanding (in JupyterLab): {quiz['question']}",
            [(chr(ord("a") + i), choice) for i, choice in enumerate(quiz["choices"])],
        )
    import ipywidgets as widgets

    choice = widgets.RadioButtons(options=quiz["choices"], value=None, layout=widgets.Layout(width="auto"))
    feedback = widgets.HTML()
    button = widgets.Button(description="Check")

    def check(_: Any) -> None:
        if choice.value is None:
            feedback.value = "<i>Pick an answer first.</i>"
        elif quiz["choices"].index(choice.value) == quiz["answer"]:
            feedback.value = f"<p><b>Right.</b> {quiz['explanation']}</p>"
        else:
            feedback.value = "<p><b>Not quite.</b> Think about it once more, or check the explanation above.</p>"

    button.on_click(check)
    return widgets.VBox(
        [widgets.HTML(f"<b>Check your understanding:</b> {quiz['question']}"), choice, button, feedback]
    )
