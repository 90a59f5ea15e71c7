"""JupyterLab helpers for training: the parameters a notebook's step runs with, a form for them, short checks of
understanding, and the diagram of the whole flow.

**One source of parameters.** Every notebook's ``parameters`` cell is the same few lines: ``params_file`` (a
tenant's parameter file, relative to the kit; the demo tenant's by default, a trainee names their own),
``overrides`` (values that replace the file's for this run only) and ``parameters`` (the validated parameters
whole, set by ``runbook run`` or by the form). Each notebook reads them through :func:`notebook_params`, exactly as
``runbook run`` reads a file, so a value set once means the same in every step. Outside ``replay`` the notebook
also makes the offline checks ``runbook run`` makes (:mod:`runbook_lib.context.preflight`), and refuses the demo
tenants' shared secret stores, which only replays may write.

In a headless run (``runbook run``, which starts the kernel with a journal) nobody can use the widgets, so they
are shown as static HTML instead: the record reads the same and no widget library is loaded or messaged. Such a
run injects the parameters it read from its file once; a ``params_file`` a notebook names is ignored there.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, MutableMapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, get_args

import yaml

from .. import paths
from ..config import params as params_mod
from ..engine.journal import started_by_runner
from ..errors import ParamsError, shorten
from . import preflight

#: the variables of every notebook's parameters cell: the tenant's parameter file, values replacing the file's for
#: this run only, and the validated parameters whole (set by ``runbook run`` or the form: then no file is read)
PARAMS_FILE = "params_file"
OVERRIDES = "overrides"
PARAMETERS = "parameters"
#: how the kit's messages show a trainee's parameter file
EXAMPLE_FILE = "params/training/trainee-07.yaml"
#: what a notebook opens with: the demo tenant, replayed offline
DEMO_FILE = "params/demo/contoso.yaml"
#: the file the flow diagram is drawn in (static SVG: it loads nothing, so it shows offline and in records)
FLOW_DIAGRAM = Path("docs") / "flow.svg"

#: the fields the form offers: (section or "", field); the rest keep the values of the file or the cell
FORM_FIELDS = [
    ("", "tenant"),
    ("", "tenant_id"),
    ("", "mode"),
    ("", "recordings"),
    ("", "secret_store"),
    ("", "apply"),
    ("", "consent"),
    ("webex", "asset_name"),
    ("webex", "email_id"),
    ("webex", "forwarding_address"),
    ("webex", "callback_url"),
    ("application", "display_name"),
    ("application", "secret_lifetime_days"),
    ("mailbox", "apply_with"),
    ("mailbox", "keep_copy"),
    ("verify", "mailbox_sign_in"),
    ("verify", "probe_authorize_url"),
]
#: how the form writes a secret store: ``kind:value``, as :meth:`SecretRef.describe` shows it
STORE_KINDS = ("file", "env", "keyring")


def _own_store(tenant: str) -> str:
    return f"{{file: .runbook/secrets/{tenant}.secret}} (in the form: file:.runbook/secrets/{tenant}.secret)"


def _load_file(name: str) -> params_mod.Params:
    """A trainee's parameter file, read and validated as ``runbook run`` reads it; relative to the kit, like every
    path of a parameter file. A file that cannot be read is a problem of the ``params_file`` field."""
    try:
        return params_mod.load(paths.resolve(name))
    except ParamsError as error:
        if "(file)" in error.problems:
            raise ParamsError(
                "the notebook's parameters",
                {
                    PARAMS_FILE: f"{shorten(name)} {error.problems['(file)']}. Set params_file in the parameters "
                    f"cell (or the form's params_file field) to your parameter file, such as {EXAMPLE_FILE}, or "
                    "to '' to use the cell's values"
                },
            ) from None
        if error.problems.get("secret_store") != "required but missing":
            raise
        hint = "required but missing: give this trainee a store of their own, " + _own_store("TENANT")
        raise ParamsError(error.source, error.problems | {"secret_store": hint}) from None


def _check(params: params_mod.Params, source: str) -> params_mod.Params:
    """Outside ``replay``, the offline checks of ``runbook run`` (a missing sandbox seed, a store others can
    read, a demo tenant's shared store ...), so a notebook fails here, naming the field, before any request."""
    if params.mode == "replay":
        return params
    found = preflight.problems(params, archive=paths.archive_dir())
    if found:
        raise ParamsError(source, found)
    return params


def notebook_params(namespace: Mapping[str, Any]) -> tuple[params_mod.Params, list[str]]:
    """The parameters a notebook's step runs with, and what it should be told about them: ``parameters`` when set
    (by ``runbook run``, or the form), else the file ``params_file`` names with ``overrides`` on top."""
    given = namespace.get(PARAMETERS) or {}
    if started_by_runner():
        return params_mod.validate(dict(given), "this run's parameters"), []
    if given:
        used = _check(params_mod.validate(dict(given), "the form's parameters"), "the form's parameters")
        return used, params_mod.name_warnings(used)
    name = str(namespace.get(PARAMS_FILE) or "")
    if not name:
        raise ParamsError(
            "the notebook's parameters",
            {PARAMS_FILE: f"name a tenant's parameter file, such as {EXAMPLE_FILE} (the demo tenant: {DEMO_FILE})"},
        )
    loaded = _load_file(name)
    overrides = namespace.get(OVERRIDES) or {}
    if not isinstance(overrides, Mapping):
        raise ParamsError("the notebook's parameters", {OVERRIDES: "must be a mapping of fields to values, or {}"})
    if overrides:
        loaded = params_mod.override(loaded, dict(overrides), f"params_file {shorten(name)} with overrides")
    return _check(loaded, f"params_file {shorten(name)}"), params_mod.name_warnings(loaded)


def _model_field(section: str, name: str) -> Any:
    model: Any = params_mod.Params if not section else params_mod.Params.model_fields[section].annotation
    return model.model_fields[name]


def _label(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def _value(values: Mapping[str, Any], section: str, name: str) -> Any:
    value = (values.get(section) or {}).get(name) if section else values.get(name)
    if name == "secret_store" and isinstance(value, Mapping):
        return next((f"{kind}:{value[kind]}" for kind in STORE_KINDS if value.get(kind)), "")
    return value


def _store_ref(text: str) -> dict[str, str] | None:
    kind, _, value = text.strip().partition(":")
    return {kind: value.strip()} if kind in STORE_KINDS and value.strip() else None


def _widget(section: str, name: str, value: Any) -> Any:
    import ipywidgets as widgets

    label = _label(section, name)
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
    placeholder = "file:.runbook/secrets/TENANT.secret" if name == "secret_store" else ""
    return widgets.Text(value=str(value or ""), description=label, placeholder=placeholder, style=style, layout=layout)


def _static(title: str, rows: list[tuple[str, Any]]) -> Any:
    from IPython.display import HTML

    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return HTML(f"<p><b>{html.escape(title)}</b></p><table>{body}</table>")


def _problems_html(error: ParamsError, lead: str) -> str:
    rows = "".join(f"<li><b>{html.escape(field)}</b>: {html.escape(why)}</li>" for field, why in error.problems.items())
    return f"<p style='color:#b00'>{html.escape(lead)}</p><ul>{rows}</ul>"


def _save_params(params: params_mod.Params, name: str) -> Path:
    """Write a trainee's parameter file: only what differs from the defaults, so it reads like a hand-written one.
    Never into ``params/demo/`` (the demo tenants, committed and shared)."""
    path = paths.resolve(name)
    demo = os.path.realpath(paths.project_root() / "params" / "demo")
    if path.suffix not in (".yaml", ".yml"):
        raise ParamsError("the form", {PARAMS_FILE: f"{shorten(name)} must be a .yaml file"})
    if Path(os.path.realpath(path)).is_relative_to(demo):
        raise ParamsError(
            "the form",
            {
                PARAMS_FILE: "params/demo/ holds the demo tenants, shared by everyone: save yours under "
                f"params/training/, such as params/training/{params.tenant}.yaml"
            },
        )
    data = params.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    text = (
        "# A trainee's parameters, saved by a notebook's form. Every notebook whose params_file names this file\n"
        "# runs with it; `runbook run` and `runbook sandbox` take it as it is.\n"
        + yaml.safe_dump(data, sort_keys=False)
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ParamsError(
            "the form", {PARAMS_FILE: f"{shorten(name)} cannot be written ({error.strerror or type(error).__name__})"}
        ) from None
    return path


def parameters_form(namespace: MutableMapping[str, Any]) -> Any:
    """The notebook's parameters as a form, checked exactly as a parameter file is. *Use these parameters* sets
    them for this notebook; *Save to the file* also writes them to the trainee's parameter file (``params_file``),
    which every notebook can then load; *Load the file* fills the form from it."""
    name = str(namespace.get(PARAMS_FILE) or "")
    if started_by_runner():
        current = dict(namespace.get(PARAMETERS) or {})
        rows = [(_label(s, n), _value(current, s, n)) for s, n in FORM_FIELDS]
        return _static("Parameters of this run (a form in JupyterLab)", rows)
    import ipywidgets as widgets

    result = widgets.HTML()
    try:
        current = notebook_params(namespace)[0].public()
    except ParamsError as error:  # e.g. a file the trainee is about to create with Save: the demo's, to start from
        current = _load_file(DEMO_FILE).public()
        result.value = _problems_html(error, "The demo tenant's values are shown, not the file's:")
    fields = {(s, n): _widget(s, n, _value(current, s, n)) for s, n in FORM_FIELDS}
    file_field = widgets.Text(
        value=name,
        description=PARAMS_FILE,
        placeholder=EXAMPLE_FILE,
        style={"description_width": "14em"},
        layout=widgets.Layout(width="44em"),
    )
    load, use = widgets.Button(description="Load the file"), widgets.Button(description="Use these parameters")
    save = widgets.Button(description="Save to the file", button_style="primary")

    def validated() -> params_mod.Params:
        data = dict(current)
        bad = {}
        for (section, field), widget in fields.items():
            value = widget.value
            if field == "secret_store":
                value = _store_ref(value)
                if value is None:
                    bad[field] = "write file:PATH, env:NAME or keyring:SERVICE/USER, such as " + _own_store("TENANT")
                    continue
            if section:
                data[section] = {**(data.get(section) or {}), field: value}
            else:
                data[field] = value
        try:
            params = params_mod.validate(data, "the form")
        except ParamsError as error:
            raise ParamsError("the form", bad | error.problems) from None
        if bad:
            raise ParamsError("the form", bad)
        return _check(params, "the form")

    def show(params: params_mod.Params) -> None:
        """The form (and the values it does not show) become ``params``'s."""
        current.clear()
        current.update(params.public())
        for (section, field), widget in fields.items():
            widget.value = _value(current, section, field)

    def apply(params: params_mod.Params, file: str) -> None:
        show(params)
        namespace[PARAMETERS] = dict(current)
        namespace[PARAMS_FILE] = file

    def on_use(_: Any) -> None:
        try:
            params = validated()
        except ParamsError as error:
            result.value = _problems_html(error, "Not used; fix these fields:")
            return
        apply(params, "")
        result.value = (
            "<p>Parameters set for this notebook (not saved: <i>Save to the file</i> keeps them for every "
            "notebook). Run the cells below.</p>"
        )

    def on_save(_: Any) -> None:
        file = file_field.value.strip()
        try:
            if not file:
                raise ParamsError("the form", {PARAMS_FILE: "name the file to save to, such as " + EXAMPLE_FILE})
            params = validated()
            _save_params(params, file)
        except ParamsError as error:
            result.value = _problems_html(error, "Not saved; fix these fields:")
            return
        apply(params, file)
        result.value = (
            f"<p>Saved to <code>{html.escape(file)}</code> and set for this notebook. In every other notebook, "
            f"set <code>params_file = {html.escape(repr(file))}</code> in the parameters cell (or load it "
            "here).</p>"
        )

    def on_load(_: Any) -> None:
        file = file_field.value.strip()
        try:
            if not file:
                raise ParamsError("the form", {PARAMS_FILE: "name the file to load, such as " + EXAMPLE_FILE})
            params = _load_file(file)
        except ParamsError as error:
            result.value = _problems_html(error, "Not loaded:")
            return
        show(params)
        try:
            _check(params, f"params_file {shorten(file)}")
        except ParamsError as error:
            result.value = _problems_html(error, "Loaded into the form, not used yet; fix these fields, then Save:")
            return
        apply(params, file)
        result.value = f"<p>Loaded <code>{html.escape(file)}</code> and set for this notebook.</p>"

    load.on_click(on_load)
    use.on_click(on_use)
    save.on_click(on_save)
    return widgets.VBox([widgets.HBox([file_field, load]), *fields.values(), widgets.HBox([use, save]), result])


@cache
def quizzes() -> dict[str, Any]:
    return yaml.safe_load(files("runbook_lib").joinpath("data/quizzes.yaml").read_text())


def check_understanding(key: str) -> Any:
    """A multiple-choice question with feedback, for the points trainees most often get wrong."""
    quiz = quizzes()[key]
    if started_by_runner():
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


def flow_diagram() -> Any:
    """The whole flow in one picture: which sign-in gets which token for whom, and the path of mail both ways.
    Drawn as static SVG (``docs/flow.svg``), shown inline: it loads nothing, offline or in a record."""
    from IPython.display import HTML

    return HTML((paths.project_root() / FLOW_DIAGRAM).read_text(encoding="utf-8"))
