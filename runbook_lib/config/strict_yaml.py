"""Parameter files read strictly: plain YAML only, so that a file cannot surprise the kit.

PyYAML's safe loader still expands anchors and aliases (a few lines can grow to gigabytes, or to a
structure that contains itself), keeps the last of two equal keys without a word (``apply: false``
... ``apply: true`` means true) and reads whatever file it is given. Each of these is refused here
with a :class:`~runbook_lib.errors.ParamsError` that names the file, the line and the fix.
"""

from __future__ import annotations

import codecs
import stat
from pathlib import Path
from typing import Any

import yaml

from ..errors import ParamsError, shorten

#: a tenant's parameters fit in a few kilobytes; anything near this is the wrong file
MAX_BYTES = 256 * 1024
#: parameter files nest four levels deep; the limit keeps every later walk of the tree shallow
MAX_DEPTH = 32

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SAFE_TAGS = frozenset(tag for tag in yaml.SafeLoader.yaml_constructors if tag)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STANDARD = "tag:yaml.org,2002:"


def _refused(source: str, why: str) -> ParamsError:
    return ParamsError(source, {"(file)": why})


def load_file(path: Path, *, max_bytes: int = MAX_BYTES) -> Any:
    """The mapping a parameter file holds, read with every check of :func:`load_text` and the file's own."""
    source = str(path)
    return load_text(_decode(_read(path, max_bytes, source), source), source)


def _too_big(size: int, max_bytes: int) -> str:
    return (
        f"is {size} bytes, more than the {max_bytes} bytes a parameter file may have: "
        "a tenant's parameters fit in a few kilobytes, so check that this is the right file"
    )


def _read(path: Path, max_bytes: int, source: str) -> bytes:
    """The file's bytes; never follows the path into a folder, a device or a pipe."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise _refused(source, "is a folder, not a parameter file: give the path of a .yaml file")
        if not stat.S_ISREG(info.st_mode):
            raise _refused(source, "is not a regular file (a device, pipe or socket): give the path of a .yaml file")
        if info.st_size > max_bytes:
            raise _refused(source, _too_big(info.st_size, max_bytes))
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise _refused(source, "does not exist: check the path and its spelling") from None
    except PermissionError:
        raise _refused(
            source,
            "cannot be read (permission denied): give your user read access to it "
            "(chmod u+r) and to its folders, or run as its owner",
        ) from None
    except OSError as exc:
        raise _refused(source, f"cannot be read ({exc.strerror or exc.__class__.__name__})") from None
    if len(data) > max_bytes:  # it grew after stat
        raise _refused(source, _too_big(len(data), max_bytes))
    return data


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is dropped); anything else is refused in one sentence."""
    fix = "save it as UTF-8 text"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _refused(source, f"is not a UTF-8 text file (its byte-order mark says UTF-16 or UTF-32): {fix}")
    if b"\0" in data:
        raise _refused(source, f"is not a UTF-8 text file (it holds NUL bytes: binary, UTF-16 or UTF-32): {fix}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _refused(
            source,
            f"is not a UTF-8 text file (line {line} has a byte that is not UTF-8, as in "
            f"Latin-1 or Windows-1252 text): {fix}",
        ) from None


def load_text(text: str, source: str) -> Any:
    """The mapping ``text`` holds. Anchors, aliases, merge keys, tags beyond the standard ones, deep
    nesting and duplicate keys are refused before anything is built, so a hostile file fails at once."""
    loader = _LOADER(text)
    try:
        _scan(text, source)
        node = loader.get_single_node()
        if node is None:
            raise _refused(source, "is empty: a parameter file is a mapping of parameter names to values")
        _check(node, "", loader, source)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _refused(source, _syntax(exc, text)) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a set" if isinstance(data, set) else "a single value"
        raise _refused(source, f"must be a mapping of parameter names to values, not {kind}")
    return data


def _scan(text: str, source: str) -> None:
    """Refuse anchors, aliases and deep nesting from the event stream, before any node exists."""
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _refused(
                source,
                f"uses a YAML anchor or alias (line {line}); parameter files may not: write the value out in full",
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _refused(
                    source, f"nests deeper than {MAX_DEPTH} levels (line {line}); parameter files are a few levels deep"
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check(node: yaml.Node, path: str, loader: Any, source: str) -> None:
    """Refuse merge keys, unknown tags and duplicate keys anywhere under ``node`` (a tree: aliases are gone)."""
    line = node.start_mark.line + 1
    if node.tag == _MERGE_TAG:
        raise _refused(
            source, f"uses a YAML merge key << (line {line}); parameter files may not: write the keys out in full"
        )
    if node.tag not in _SAFE_TAGS:
        tag = node.tag.replace(_STANDARD, "!!", 1) if node.tag.startswith(_STANDARD) else node.tag
        raise _refused(
            source,
            f"uses the YAML tag {shorten(tag, 60)} (line {line}); parameter files hold "
            "plain text, numbers, true/false, lists and mappings only: remove the tag or quote the value",
        )
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            _check(key, path, loader, source)
            key_line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode):
                raise _refused(
                    source, f"uses a list or mapping as a key (line {key_line}); parameter names are plain words"
                )
            name = loader.construct_object(key)
            where = f"{path}.{name}" if path else str(name)
            if name in seen:
                raise _refused(
                    source,
                    f"key {shorten(where, 120)} appears twice (lines {seen[name]} and "
                    f"{key_line}); YAML would silently keep the last one: delete the one you do not mean",
                )
            seen[name] = key_line
            _check(value, where, loader, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check(item, f"{path}.{index}", loader, source)


def _syntax(exc: yaml.YAMLError, text: str) -> str:
    """What YAML objects to and where, in one line of at most a couple of hundred characters."""
    if isinstance(exc, yaml.MarkedYAMLError):
        what = ": ".join(part for part in (exc.context, exc.problem) if part)
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        what, where = exc.reason, f" (line {line})"
    else:
        what, where = str(exc), ""
    return f"is not valid YAML: {shorten(' '.join(what.split()), 200)}{where}"
