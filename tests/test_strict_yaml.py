"""Parameter files are read strictly: every malformed or hostile file is one ParamsError, at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runbook_lib.config import params, strict_yaml
from runbook_lib.errors import ParamsError

from conftest import DEMO

pytestmark = pytest.mark.unit


def why(path: Path, **kwargs) -> str:
    with pytest.raises(ParamsError) as caught:
        strict_yaml.load_file(path, **kwargs)
    assert set(caught.value.problems) == {"(file)"} and caught.value.source == str(path)
    return caught.value.problems["(file)"]


def text_why(text: str) -> str:
    with pytest.raises(ParamsError) as caught:
        strict_yaml.load_text(text, "tenant.yaml")
    return caught.value.problems["(file)"]


def test_the_demo_file_loads_as_before():
    assert strict_yaml.load_file(DEMO)["tenant"] == "contoso"


def test_missing_file_folder_and_device(tmp_path):
    assert "does not exist" in why(tmp_path / "missing.yaml")
    assert "does not exist" in why(tmp_path / "missing" / "tenant.yaml")
    assert "is a folder" in why(tmp_path)
    if Path("/dev/zero").exists():
        assert "not a regular file" in why(Path("/dev/zero"))


def test_oversize_file_names_its_size_and_the_limit(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 300_000 + "\n")
    message = why(big)
    assert str(big.stat().st_size) in message and str(strict_yaml.MAX_BYTES) in message
    assert "100 bytes" in why(big, max_bytes=100)


@pytest.mark.parametrize(
    "data",
    [
        b"\x7fELF\x02\x01\x01\x00\x00\x00binary",
        "tenant: contoso\n".encode("utf-16"),
        "tenant: contoso\n".encode("utf-16-be"),
        "tenant: contoso\n".encode("utf-32"),
        "tenant: Café\n".encode("latin-1"),
    ],
    ids=["binary", "utf-16", "utf-16-no-bom", "utf-32", "latin-1"],
)
def test_files_that_are_not_utf8_text_get_one_sentence(tmp_path, data):
    path = tmp_path / "tenant.yaml"
    path.write_bytes(data)
    message = why(path)
    assert message.startswith("is not a UTF-8 text file") and "save it as UTF-8" in message


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "tenant.yaml"
    path.write_bytes("tenant: contoso\n".encode("utf-8-sig"))
    assert strict_yaml.load_file(path) == {"tenant": "contoso"}


def test_syntax_error_gives_line_and_column_briefly():
    message = text_why("tenant: contoso\nwebex:\n  asset_name: [unclosed\n  email_id: x\n")
    assert message.startswith("is not valid YAML") and "(line 4, column 11)" in message
    assert len(message) < 300 and "Traceback" not in message


def test_control_characters_give_their_line():
    assert "line 2" in text_why("tenant: contoso\nmode: \x07\n")


@pytest.mark.parametrize(
    "text",
    [
        "extra: &a {y: *a}\n",
        "a: &x 1\nb: *x\n",
        "base: &b {x: 1}\nderived:\n  <<: *b\n",
    ],
)
def test_anchors_and_aliases_are_refused(text):
    message = text_why(text)
    assert "uses a YAML anchor or alias (line 1); parameter files may not" in message


def test_a_merge_key_without_an_alias_is_refused():
    assert "merge key << (line 2)" in text_why("a: 1\n<<: {b: 2}\n")


def test_a_nested_alias_bomb_is_refused_at_once():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    bomb = "\n".join(lines) + "\n"  # 10**12 strings once expanded
    started = time.perf_counter()
    message = text_why(bomb)
    assert time.perf_counter() - started < 0.2
    assert "anchor or alias (line 1)" in message


def test_tags_beyond_plain_values_are_refused():
    message = text_why("tenant: !!python/object/apply:os.system [echo hi]\n")
    assert "YAML tag !!python/object/apply:os.system (line 1)" in message
    assert "YAML tag !vault (line 2)" in text_why("tenant: x\napp: !vault abc\n")


def test_a_duplicate_key_names_both_lines(tmp_path):
    path = tmp_path / "tenant.yaml"
    path.write_text(DEMO.read_text() + "apply: false\n")
    message = why(path)
    assert message.startswith("key apply appears twice (lines 6 and ")
    assert f"and {len(DEMO.read_text().splitlines()) + 1})" in message
    with pytest.raises(ParamsError, match="key apply appears twice"):
        params.load(path)


def test_a_duplicate_nested_key_names_its_path():
    text = "tenant: a\nwebex:\n  email_id: a@b.c\n  asset_name: x\n  email_id: d@e.f\n"
    assert "key webex.email_id appears twice (lines 3 and 5)" in text_why(text)
    assert "key steps.1.x appears twice (lines 3 and 4)" in text_why("steps:\n  - a\n  - x: 1\n    x: 2\n")


def test_keys_equal_as_values_are_duplicates():
    assert "appears twice (lines 1 and 2)" in text_why("'yes': 1\n'yes': 2\n")
    assert "appears twice (lines 1 and 2)" in text_why("1: a\n0x1: b\n")


def test_the_top_level_must_be_a_mapping():
    assert "mapping" in text_why("- tenant: contoso\n") and "a list" in text_why("- tenant: contoso\n")
    assert "a single value" in text_why("contoso\n")
    assert "is empty" in text_why("# nothing but a comment\n")
    assert "single document" in text_why("a: 1\n---\nb: 2\n")


def test_deep_nesting_is_refused():
    assert "nests deeper than" in text_why("a: " + "[" * 100 + "]" * 100 + "\n")


def test_a_huge_key_is_not_echoed_whole():
    key = "k" * 1000  # YAML's longest plain key
    message = text_why(f"{key}: 1\n{key}: 2\n")
    assert "(1000 characters)" in message and len(message) < 400
