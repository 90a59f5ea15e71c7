"""The trainer guide's 2-hour agenda, walked end to end in the sandbox: every `runbook` command of its shell
blocks runs in order, as the trainer types it, against a trainee made the way the guide's set-up makes one; each
exits as the guide says; each exercise's output holds what the answer key says the trainee sees; the checks of
understanding have the answers the guide gives; the agenda's minutes add up. The guide is the test's script, so
the two cannot drift apart."""

from __future__ import annotations

import contextlib
import re
import shlex

import pytest
import yaml

from runbook_lib import cli, paths
from runbook_lib.context import ui
from runbook_lib.running import runner

from conftest import ROOT

pytestmark = pytest.mark.e2e

GUIDE = (ROOT / "docs" / "trainer-guide.md").read_text(encoding="utf-8")
#: a trainee's file as the guide's set-up names it; the test makes it as the set-up's loop does
TRAINEE_FILE = re.compile(r"params/training/(trainee-\d\d)\.yaml")


def section(title: str) -> str:
    """The text under a `## ` heading that starts with ``title``, up to the next such heading."""
    [found] = re.findall(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", GUIDE, re.MULTILINE | re.DOTALL)
    return found


def table(text: str) -> list[list[str]]:
    """The body rows of the Markdown table(s) in ``text``, as cells."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")
    ]
    return [row for row in rows[1:] if not set("".join(row)) <= set("-: ")]


def steps(text: str) -> list[tuple[str, list[tuple[list[str], int]]]]:
    """Each ```sh block: the exercise its first comment names ("# E5: ..."; "" for none), and its `runbook`
    commands with the exit code the guide expects (0, unless the line's comment says `exit N`)."""
    found = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        exercise = re.match(r"# (E\d+):", block)
        commands = [
            (shlex.split(line, comments=True), int(m.group(1)) if (m := re.search(r"#.*\bexit (\d+)", line)) else 0)
            for line in block.splitlines()
            if line.startswith("runbook ")
        ]
        found.append((exercise.group(1) if exercise else "", commands))
    return found


def minutes(agenda: str) -> int:
    """The agenda table's total, checking that each part starts when the one before it ends."""
    clock = 0
    for start, length, *_ in table(agenda.split("\n### ")[0]):
        hours, mins = start.split(":")
        assert int(hours) * 60 + int(mins) == clock, f"{start} should be {clock // 60}:{clock % 60:02d}"
        clock += int(length)
    return clock


AGENDA = section("The 2-hour session")
HALF_DAY = section("The half-day session")
KEY = section("Answer key")


def test_the_agendas_last_two_hours_and_half_a_day():
    assert minutes(AGENDA) == 120
    assert minutes(section("The half-day session")) == 240


def test_the_guide_gives_every_check_its_right_answer_and_the_agendas_ask_them_all():
    letter = {key: "abcd"[quiz["answer"]] for key, quiz in ui.quizzes().items()}
    in_agenda = dict(re.findall(r"`(\w+)`\s+\(answer \*\*([a-d])\*\*\)", AGENDA + HALF_DAY))
    in_key = {row[1].strip("`"): row[2][0] for row in table(KEY) if len(row) == 3 and row[0].isdigit()}
    assert in_agenda == letter and in_key == letter


def test_a_trainer_walks_the_two_hour_agenda_in_the_sandbox(tmp_path, capsys, monkeypatch):
    walk = steps(AGENDA)
    exercises = [exercise for exercise, _ in walk if exercise]
    answers = {row[0]: re.findall(r"`([^`]+)`", row[1]) for row in table(KEY) if row[0].startswith("E")}
    assert exercises == sorted(answers, key=lambda e: int(e[1:])) and all(answers.values()), (exercises, answers)

    def trainee(match: re.Match) -> str:
        """The set-up's copy of params/training/trainee.yaml for this trainee, its secret store private."""
        name = match.group(1)
        raw = yaml.safe_load((ROOT / "params/training/trainee.yaml").read_text().replace("trainee-01", name))
        raw["secret_store"] = {"file": str(tmp_path / "secrets" / f"{name}.secret")}
        made = tmp_path / f"{name}.yaml"
        made.write_text(yaml.safe_dump(raw))
        return str(made)

    monkeypatch.setattr(paths, "archive_dir", lambda: tmp_path / "archive")
    outputs: dict[str, str] = {}
    with runner.Kernel() as kernel:  # one kernel for the session, as a trainee's JupyterLab has
        monkeypatch.setattr(runner, "Kernel", lambda: contextlib.nullcontext(kernel))
        for exercise, commands in walk:
            for argv, expected in commands:
                argv = [TRAINEE_FILE.sub(trainee, arg) for arg in argv[1:]]
                code = cli.main(argv)
                said = capsys.readouterr()
                assert code == expected, (argv, code, said.out[-2000:], said.err[-2000:])
                outputs[exercise] = outputs.get(exercise, "") + said.out + said.err
    for exercise, expected in answers.items():
        missing = [text for text in expected if text not in outputs[exercise]]
        assert not missing, (exercise, missing, outputs[exercise][-3000:])


def test_the_walk_uses_the_guides_own_files():
    """Every file the agenda's commands name is one the kit has, or a trainee file the guide's set-up makes."""
    named = {arg for _, commands in steps(AGENDA) for argv, _ in commands for arg in argv if arg.endswith(".yaml")}
    made = {name for name in named if TRAINEE_FILE.fullmatch(name)}
    assert made and all((ROOT / name).is_file() for name in named - made), named - made
