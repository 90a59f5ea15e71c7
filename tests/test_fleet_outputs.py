"""Where ``runbook fleet`` writes its reports: an output that would overwrite a parameter file, a folder, a device,
an unwritable place or another report's file is refused before anything is read or written (exit 2); a write
that fails is an error naming the file (exit 1) and leaves no report half written; the CSV holds no formula."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib import cli
from runbook_lib.errors import RunbookError
from runbook_lib.running import fleet, fleet_report
from runbook_lib.running.fleet import Health

pytestmark = pytest.mark.unit

#: a formula a spreadsheet would evaluate (no slash: it is also a file's name)
HYPERLINK = '=HYPERLINK("https:evil.example","click")'


def one_tenant(**facts) -> fleet.Fleet:
    base = {"tenant": "t", "params_file": "p.yaml", "mode": "replay", "warn_days": 30, "configured": True}
    facts = {**base, "stored": "matched", "hint": "abc", "expires": "2027-01-01", "days_left": 200, **facts}
    return fleet._rows([Health(**facts)])


@pytest.fixture
def reads(monkeypatch) -> list[list[str]]:
    """The fleet's read replaced by one healthy tenant: each call's files (none: nothing was read)."""
    calls: list[list[str]] = []

    def read_fleet(files, **_):
        calls.append(list(files))
        return one_tenant()

    monkeypatch.setattr(fleet, "read_fleet", read_fleet)
    return calls


@pytest.fixture
def inputs(tmp_path) -> list[Path]:
    files = [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    for f in files:
        f.write_text(f"tenant: {f.stem}\n")
    return files


def run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["fleet", *argv])
    return code, capsys.readouterr().err


def files_in(folder: Path) -> dict[str, str]:
    return {f.name: f.read_text() for f in folder.iterdir() if f.is_file()}


# --- refused before anything is read or written (exit 2) -------------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "glob", "symbolic link", "dot-dot"])
def test_an_output_that_is_a_parameter_file_read_is_refused(how, tmp_path, inputs, reads, capsys):
    given = str(tmp_path / "*.yaml") if how == "glob" else str(inputs[1])
    output = {
        "same path": inputs[1],
        "glob": inputs[1],
        "symbolic link": tmp_path / "link.csv",
        "dot-dot": tmp_path / "x" / ".." / "b.yaml",
    }[how]
    if how == "symbolic link":
        output.symlink_to(inputs[1])
    (tmp_path / "x").mkdir()
    before = files_in(tmp_path)
    code, err = run(capsys, str(inputs[0]), given, "--html", str(tmp_path / "ok.html"), "--csv", str(output))
    assert code == 2 and "--csv" in err and "parameter files read" in err, err
    assert "Traceback" not in err and reads == [] and files_in(tmp_path) == before


def test_an_output_that_is_a_folder_is_refused(tmp_path, inputs, reads, capsys):
    folder = tmp_path / "reports"
    folder.mkdir()
    code, err = run(capsys, str(inputs[0]), "--html", str(folder), "--json", str(tmp_path / "f.json"))
    assert code == 2 and "--html" in err and "is a folder" in err and "Traceback" not in err, err
    assert reads == [] and list(folder.iterdir()) == [] and not (tmp_path / "f.json").exists()


def test_an_output_whose_folder_cannot_be_made_is_refused(tmp_path, inputs, reads, capsys):
    code, err = run(capsys, str(inputs[0]), "--csv", str(inputs[1] / "reports" / "f.csv"))
    assert code == 2 and "--csv" in err and "is not a folder" in err and "Traceback" not in err, err
    assert reads == [] and inputs[1].read_text() == "tenant: b\n"


def test_an_output_whose_folder_cannot_be_written_is_refused(tmp_path, inputs, reads, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # the tests may run as root, for whom a folder's mode forbids nothing: the folder's access is refused here
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    code, err = run(capsys, str(inputs[0]), "--json", str(locked / "f.json"))
    assert code == 2 and "--json" in err and "cannot be written" in err, err
    assert reads == [] and list(locked.iterdir()) == []


def test_two_outputs_that_are_the_same_file_are_refused(tmp_path, inputs, reads, capsys):
    same = tmp_path / "report"
    (tmp_path / "x").mkdir()
    code, err = run(capsys, str(inputs[0]), "--csv", str(same), "--json", str(tmp_path / "x" / ".." / "report"))
    assert code == 2 and "--json" in err and "same file as --csv" in err, err
    assert reads == [] and not same.exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_device_is_refused_as_not_a_regular_file(inputs, reads, capsys):
    code, err = run(capsys, str(inputs[0]), "--json", "/dev/full")
    assert code == 2 and "--json" in err and "/dev/full is not a regular file" in err and "Traceback" not in err
    assert reads == []


def test_good_outputs_are_written_whole_into_a_folder_made_for_them(tmp_path, inputs, reads, capsys):
    out = tmp_path / "new" / "reports"
    (tmp_path / "old.csv").write_text("old\n")
    (tmp_path / "old.csv").chmod(0o640)
    argv = [str(inputs[0]), "--html", str(out / "f.html"), "--csv", str(tmp_path / "old.csv")]
    code, err = run(capsys, *argv, "--json", str(out / "f.json"))
    assert code == 0 and reads == [[str(inputs[0])]], err
    assert sorted(files_in(out)) == ["f.html", "f.json"] and "Fleet health" in (out / "f.html").read_text()
    assert (tmp_path / "old.csv").read_bytes() == fleet_report.csv_text(one_tenant()).encode()
    assert (tmp_path / "old.csv").stat().st_mode & 0o777 == 0o640  # a replaced report keeps its mode
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "f.json").stat().st_mode & 0o777 == 0o666 & ~umask  # a new report: the mode the umask gives
    assert not [f for f in tmp_path.rglob("*.tmp")]


# --- a write that fails: an error naming the file, no report half written (exit 1) -----------------------------

FAILING_WRITE = """
import resource, signal, sys
from runbook_lib import cli
from runbook_lib.running import fleet, fleet_report
from runbook_lib.running.fleet import Health

health = Health(tenant="t", params_file="p.yaml", mode="replay", warn_days=30, configured=True, days_left=200)
fleet.read_fleet = lambda files, **_: fleet._rows([health])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file grown past the limit: the write fails (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.exit(cli.main(["fleet", *sys.argv[2:]]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="file size limits are POSIX")
def test_a_write_that_fails_names_the_file_and_leaves_every_report_as_it_was(tmp_path, inputs):
    html, csv_file = tmp_path / "fleet.html", tmp_path / "fleet.csv"
    html.write_text("the previous report\n")
    csv_file.write_text("the previous rows\n")
    limit = 2048  # the page is bigger: its write fails part way
    assert len(fleet_report.html_page(one_tenant(), "now")) > limit
    done = subprocess.run(
        [sys.executable, "-c", FAILING_WRITE, str(limit), str(inputs[0]), "--html", str(html), "--csv", str(csv_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{html}: the report could not be written: File too large" in done.stderr
    assert html.read_text() == "the previous report\n" and csv_file.read_text() == "the previous rows\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.yaml", "b.yaml", "fleet.csv", "fleet.html"]


def test_a_full_disk_is_an_error_naming_the_file_and_its_temporary_file_is_removed(tmp_path, monkeypatch):
    json_file = tmp_path / "fleet.json"
    json_file.write_text("{}\n")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunbookError) as caught:
        fleet_report.write(one_tenant(), "now", html=None, csv_file=tmp_path / "f.csv", json_file=json_file)
    assert str(tmp_path / "f.csv") in str(caught.value) and "No space left on device" in str(caught.value)
    assert [f.name for f in tmp_path.iterdir()] == ["fleet.json"] and json_file.read_text() == "{}\n"


# --- the CSV: no cell a spreadsheet would evaluate ---------------------------------------------------------------


def test_csv_text_cells_that_start_a_formula_are_made_inert_and_numbers_stay_numbers():
    result = one_tenant(
        params_file=f"{HYPERLINK}.yaml",
        days_left=-3,
        application="+1+cmd|' /C calc'!A0",
        consent="-2+3",
        mailbox="@SUM(1+1)",
        last_verify="\t=1+1",
        expires="\r=1+1",
        hint="",
        stored="=stored",
    )
    [row] = list(csv.DictReader(io.StringIO(fleet_report.csv_text(result))))
    assert row["params_file"] == f"'{HYPERLINK}.yaml"
    assert row["application"] == "'+1+cmd|' /C calc'!A0" and row["consent"] == "'-2+3"
    assert row["mailbox"] == "'@SUM(1+1)" and row["last_verify"] == "'\t=1+1" and row["expires"] == "'\r=1+1"
    assert row["stored_secret"] == "'=stored"
    assert row["days_left"] == "-3" and row["writes"] == "0"  # numbers as they are
    assert row["tenant"] == "t" and row["status"] == "fail"  # every other cell as it was
    assert fleet_report.csv_cell(-3) == -3 and fleet_report.csv_cell(None) is None
    assert fleet_report.csv_cell("a=b") == "a=b" and fleet_report.csv_cell("") == ""


def test_a_parameter_file_named_as_a_formula_is_text_in_the_fleet_csv(tmp_path, monkeypatch, capsys):
    named = f"{HYPERLINK}.yaml"  # in the kit, as the fleet shows it (nothing is read: the read is replaced)
    monkeypatch.setattr(fleet, "read_fleet", lambda files, **_: one_tenant(params_file=files[0]))
    code, err = run(capsys, named, "--csv", str(tmp_path / "fleet.csv"), "--json", str(tmp_path / "f.json"))
    assert code == 0, err
    [row] = list(csv.DictReader((tmp_path / "fleet.csv").open(newline="")))
    assert row["params_file"] == f"'{named}"
    assert json.loads((tmp_path / "f.json").read_text())["tenants"][0]["params_file"] == named  # JSON as it was


def test_the_commands_refusals_are_in_the_readme():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Fleet health: `runbook fleet`") :]
    section = section[: section.index("\n### ", 1)]
    assert "regular file" in section and "exit code 2" in section and "temporary file" in section
