"""Secret stores: where a client secret lives, named in the parameters by reference only.

* ``env``: an environment variable. Readable; a new secret can only be set for this process,
  so the operator is told to move it somewhere durable.
* ``file``: a file with mode 0600 (created so, parents 0700); relative to the project root.
* ``keyring``: ``SERVICE/USERNAME`` in the operating system's keyring.

While a rotation of the client secret is half done (:mod:`runbook_lib.steps.rotation`), the value it replaced stays
retrievable beside the store, under the same rules, until phase 2 removes it: :func:`previous` names where.

Notebooks show a secret's hint (its first three characters, as Entra ID does) and a fingerprint,
never its value.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from .. import paths
from ..errors import RunbookError
from .params import SecretRef


def fingerprint(value: str) -> str:
    """A short, non-reversible identifier to tell two secrets apart in a record."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]


def private_folder(folder: Path) -> None:
    """Create ``folder`` and any missing parent with mode 0700: ``mkdir(parents=True)`` gives the
    parents the umask's mode, and a folder others can write to lets them replace what is in it."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process made it first: its mode is that process's business
        created.chmod(0o700)  # the umask may have taken bits away


def _file(ref: SecretRef) -> Path:
    return paths.resolve(ref.file or "")


def read(ref: SecretRef) -> str | None:
    """The secret's value, or None when the store holds none yet."""
    if ref.env:
        return os.environ.get(ref.env) or None
    if ref.file:
        path = _file(ref)
        if not path.exists():
            return None
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise RunbookError(
                f"secret file {ref.file} is readable by others (mode {mode:o})", fix=f"chmod 600 {ref.file}"
            )
        return path.read_text(encoding="utf-8").strip() or None
    import keyring

    service, username = (ref.keyring or "").split("/", 1)
    return keyring.get_password(service, username)


def write(ref: SecretRef, value: str) -> str:
    """Store a new secret; returns a sentence for the operator saying where it went."""
    if ref.env:
        os.environ[ref.env] = value
        return (
            f"stored in environment variable {ref.env} for this process only: copy it into your "
            "password manager now, it cannot be read from Entra ID again"
        )
    if ref.file:
        path = _file(ref)
        private_folder(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(value)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return f"stored in file {ref.file} (mode 0600)"
    import keyring

    service, username = (ref.keyring or "").split("/", 1)
    keyring.set_password(service, username, value)
    return f"stored in the keyring as {ref.keyring}"


def sibling(ref: SecretRef, suffix: str) -> SecretRef:
    """A store beside ``ref``, under the same rules: ``<file>.<suffix>`` (mode 0600, like the store), the keyring
    entry ``SERVICE/USERNAME.<suffix>``, or the environment variable ``NAME_<SUFFIX>`` (which, like every
    environment store, the kit can set for its own process only)."""
    if ref.env:
        return SecretRef(env=f"{ref.env}_{suffix.upper()}")
    if ref.file:
        return SecretRef(file=f"{ref.file}.{suffix}")
    return SecretRef(keyring=f"{ref.keyring}.{suffix}")


def previous(ref: SecretRef) -> SecretRef:
    """Where the value a rotation replaced is kept until its phase 2."""
    return sibling(ref, "previous")


def replaced(ref: SecretRef) -> SecretRef:
    """Where a value step 2 found in the store and replaced is kept: it matched none of the application's secrets,
    so it may be another application's, and a store is never overwritten without keeping what it held."""
    return sibling(ref, "replaced")


def problem_writing(ref: SecretRef, *, interactive: bool) -> str:
    """Why a new secret's value could not be written to ``ref`` (empty when it can): asked before Entra ID is
    asked for the secret, whose value is shown once, so that the tenant never holds a secret nobody has."""
    if ref.env:
        return (
            ""
            if interactive
            else f"environment variable {ref.env} can be set for this process only, and nobody is at this run to "
            "copy the value out before it ends"
        )
    if ref.file:
        path = _file(ref)
        if path.is_dir():
            return f"{ref.file} is a folder"
        existing = path if path.exists() else next(p for p in path.parents if p.exists())
        if not os.access(existing, os.W_OK) or (existing != path and not os.access(existing, os.X_OK)):
            return f"{existing} cannot be written by this account"
        return ""
    import keyring
    from keyring.backends import fail

    if isinstance(keyring.get_keyring(), fail.Keyring):
        return "no keyring is available on this machine (keyring's backend is 'fail')"
    return ""


def delete(ref: SecretRef) -> str:
    """Remove a stored secret (a rotation's previous value, once phase 2 removed it from the application);
    returns a sentence for the operator saying where from. Nothing to remove is not an error."""
    if ref.env:
        os.environ.pop(ref.env, None)
        return f"removed environment variable {ref.env} from this process: unset it where you define it too"
    if ref.file:
        _file(ref).unlink(missing_ok=True)
        return f"deleted file {ref.file}"
    import keyring
    from keyring.errors import PasswordDeleteError

    service, username = (ref.keyring or "").split("/", 1)
    with contextlib.suppress(PasswordDeleteError):  # not there: already deleted
        keyring.delete_password(service, username)
    return f"deleted the keyring entry {ref.keyring}"


def private_copy(ref: SecretRef, folder: Path, name: str = "store.secret") -> SecretRef:
    """A file store in ``folder`` holding what ``ref`` holds now: runs that must not touch the real store
    (recording, tests, benchmarks) use it, and a secret the scenario depends on is still there."""
    copy = folder / name
    private_folder(folder)
    value = read(ref) or ""
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others, even briefly
    os.fchmod(fd, 0o600)  # a file that was there keeps its old mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    return SecretRef(file=str(copy))
