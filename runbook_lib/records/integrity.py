"""Tamper-evident run records: a seal over the manifest, an optional signature, and a chain of records.

A record's ``manifest.json`` lists the sha256 of every other file, so an edited file shows. The seal
(``seal.json``) holds the sha256 of the manifest itself, so an edited manifest (a forged operator, date or
change list, or a file edited together with its hash) shows too. An Ed25519 signature over the manifest
proves who sealed it: without one, anybody able to rewrite a manifest can rewrite the seal as well.
Each manifest also names the tenant's previous sealed record and its manifest hash (``previous``), so
deleting or rewriting a record breaks the check of the next one. Only the newest record has no such
witness: keep its manifest hash (printed by ``runbook run``) somewhere else if that matters.

Sealing makes the files and folders read-only: that stops casual edits, not a determined owner; the
hashes and the signature are what detect those.

**Attachments** (``runbook attach``) add a file to a sealed record afterwards, typically the transcript of
step 3's PowerShell script, which a person runs after the record was sealed. The record's own manifest and
seal are never touched: its ``attachments/`` folder is set apart from its files, and each attachment is a
small sealed record of its own, ``attachments/NNN/``, holding the file, a manifest (the file's sha256, size,
note, time, local account, the sealed manifest hash of the record it belongs to, and a link to the previous
attachment) and a seal over that manifest, signed like a record's. Nothing is ever rewritten: a later
attachment is a new folder. Deleting an earlier attachment breaks the link of the next; like the newest
record, the newest attachment has no such witness. A file holding anything that looks like a secret (a
token, a client secret, a password) is refused, and so is a file over :data:`ATTACHMENT_MAX_BYTES`.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..engine.locks import local_account
from ..errors import RunbookError
from ..wire import recording

MANIFEST = "manifest.json"
SEAL = "seal.json"
ALGORITHM = "sha256"
_KEYGEN_FIX = "create a key pair with `runbook keygen PRIVATE PUBLIC`, or give the right file"
#: the folder of a record that holds its attachments, set apart from the files its manifest lists
ATTACHMENTS = "attachments"
#: the largest file `runbook attach` takes: a script's transcript is a few hundred kilobytes at most
ATTACHMENT_MAX_BYTES = 10 * 1024 * 1024
NOTE_MAX_CHARS = 500


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entries(folder: Path, *, attachments_apart: bool = True) -> dict[str, Path]:
    """Everything in the record but folders, the manifest and the seal, by relative path; symbolic links
    are listed, never followed. A record's ``attachments/`` folder (a real one, not a link) is left out:
    its attachments are sealed apart (``attachments_apart=False`` for an attachment's own folder)."""
    found = {}
    for top, dirs, files in os.walk(folder):
        if attachments_apart and Path(top) == folder:
            dirs[:] = [d for d in dirs if d != ATTACHMENTS or os.path.islink(os.path.join(top, d))]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            relative = Path(top, name).relative_to(folder).as_posix()
            if relative not in (MANIFEST, SEAL):
                found[relative] = Path(top, name)
    return found


def file_hashes(folder: Path, *, attachments_apart: bool = True) -> dict[str, str]:
    """The sha256 of every regular file of a record but the manifest and the seal: what the manifest's
    ``files`` holds. Links and other special files are left out, so the check reports them as altered."""
    entries = _entries(folder, attachments_apart=attachments_apart)
    return {name: sha256(path) for name, path in sorted(entries.items()) if stat.S_ISREG(path.lstat().st_mode)}


def _load(path: Path, what: str = "", fix: str = "") -> bytes:
    """A file's bytes, or a RunbookError naming the file (``what``, else its name) and why it is unreadable."""
    what = what or path.name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RunbookError(f"{what} is missing", fix=fix) from None
    except OSError as exc:
        raise RunbookError(f"{what} cannot be read ({exc.strerror})", fix=fix) from None


def _object(name: str, data: bytes) -> dict[str, Any]:
    """A JSON object, or a RunbookError saying plainly what else the file holds."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise RunbookError(f"{name} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RunbookError(f"{name} holds a JSON {type(value).__name__}, not the JSON object a record needs")
    return value


def _sealed_digest(record: Path) -> str:
    """The manifest hash a record's seal vouches for."""
    digest = _object(SEAL, _load(record / SEAL)).get("manifest_sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise RunbookError(f"{SEAL} holds no manifest sha256")
    return digest


# --- keys -----------------------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: what a seal and `runbook keygen` name the key by."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create a file that must not exist yet, with its final mode from the start, and flush it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.fchmod(fd, mode)  # the umask may have taken bits away
    finally:
        os.close(fd)


def generate_key(private_path: Path, public_path: Path) -> str:
    """A new Ed25519 key pair for signing records: the private key readable by its owner only (mode 0600),
    unencrypted so unattended runs can use it. Returns the key id."""
    for path in (private_path, public_path):
        if path.exists():
            raise RunbookError(
                f"{path} already exists; a key file is never overwritten",
                fix="choose another file name, or move the old key away first",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    _write_new(
        private_path,
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        0o600,
    )
    _write_new(
        public_path,
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        0o644,
    )
    return key_id(private.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    """The signing key, refused if anyone but its owner may read or change it: whoever can read it can sign
    records in the operator's name."""
    data = _load(path, f"the signing key {path}", _KEYGEN_FIX)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise RunbookError(
            f"the signing key {path} is open to other users (mode {mode:04o})",
            fix=f"allow its owner only: chmod 600 {path}",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise RunbookError(f"the signing key {path} is not an unencrypted PEM Ed25519 private key", fix=_KEYGEN_FIX)
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """The public key a record's signature is checked against."""
    data = _load(path, f"the public key {path}", _KEYGEN_FIX)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise RunbookError(
            f"the public key {path} is not a PEM Ed25519 public key",
            fix="give the public file that `runbook keygen` wrote next to the signing key",
        )
    return key


# --- sealing --------------------------------------------------------------------------------------------


#: the name of a record folder: the UTC second its run opened it, ``-N`` for another run in the same second
RECORD_NAME = re.compile(r"\d{8}T\d{6}Z(?:-\d{1,3})?")


def record_order(name: str) -> tuple[str, int]:
    """Records are named by UTC stamp, with ``-N`` added when two runs start in the same second."""
    stamp, _, suffix = name.partition("-")
    return stamp, int(suffix) if suffix.isdigit() else 0


def real_file(path: Path) -> bool:
    """A regular file, never a link to one: a record's own files are never links."""
    return not path.is_symlink() and path.is_file()


def _named(name: str) -> bool:
    """Named as a record (its UTC stamp) or an attachment (its number) is."""
    return RECORD_NAME.fullmatch(name) is not None or (name.isascii() and name.isdigit())


def sealed_folder(path: Path) -> bool:
    """A folder named as records and attachments are, not a link, holding a manifest and a seal."""
    return (
        _named(path.name)
        and not path.is_symlink()
        and path.is_dir()
        and real_file(path / MANIFEST)
        and real_file(path / SEAL)
    )


def previous_link(tenant_folder: Path, before: str | None = None) -> dict[str, str] | None:
    """The link a new record's manifest carries as ``previous``: the tenant's newest sealed record (older
    than the record named ``before``, if given) and its manifest hash; None for the first sealed record.
    Call it under the tenant lock, so two runs cannot link to the same record."""
    sealed = [p for p in tenant_folder.iterdir() if sealed_folder(p)] if tenant_folder.is_dir() else []
    if before is not None:  # records link to records, attachments to attachments
        sealed = [
            p for p in sealed if p.name.isdigit() == before.isdigit() and record_order(p.name) < record_order(before)
        ]
    if not sealed:
        return None
    newest = max(sealed, key=lambda p: record_order(p.name))
    try:
        return {"record": newest.name, "manifest_sha256": _sealed_digest(newest)}
    except RunbookError as exc:
        raise RunbookError(
            f"the newest record {newest} has a damaged seal ({exc.message}), so a new record cannot link to it",
            fix=f"see what happened with `runbook verify-record {newest}`",
        ) from None


def _file_problems(folder: Path, expected: dict[str, str], *, attachments_apart: bool = True) -> list[str]:
    actual = file_hashes(folder, attachments_apart=attachments_apart)
    present = set(_entries(folder, attachments_apart=attachments_apart))
    problems = [f"removed: {name} is named in the manifest but gone" for name in sorted(set(expected) - present)]
    problems += [f"added: {name} is not in the manifest" for name in sorted(present - set(expected))]
    problems += [
        f"altered: {name} no longer matches its sha256 in the manifest"
        for name in sorted(set(expected) & present)
        if actual.get(name) != expected[name]
    ]
    return problems


def _manifest_files(manifest: dict[str, Any]) -> dict[str, str]:
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise RunbookError("manifest.json has no 'files' object of file names and their sha256")
    return files


def _sync_read_only(path: Path, mode: int) -> None:
    """Flush a file or folder to disk, then drop its write bits."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _raw(public: Ed25519PublicKey) -> str:
    return base64.b64encode(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def seal(folder: Path, *, signing_key: Path | None = None) -> str:
    """Seal a finished record: write ``seal.json`` over the bytes of its manifest (signed if a key is given),
    then make every file read-only (0444) and every folder 0555. Returns the manifest's sha256.
    A record is sealed once, and only if its files are exactly those the manifest lists: a seal must never
    vouch for a mismatch."""
    key = load_private(signing_key) if signing_key else None
    if (folder / SEAL).exists():
        raise RunbookError(
            f"{folder} is sealed already; a record is sealed once", fix="make a new record instead of changing this one"
        )
    data = _load(folder / MANIFEST)
    problems = _file_problems(folder, _manifest_files(_object(MANIFEST, data)))
    if problems:
        raise RunbookError(
            f"{folder} does not match its manifest, so it is not sealed: " + "; ".join(problems),
            fix="write the manifest after the last file of the record (see file_hashes)",
        )
    digest = hashlib.sha256(data).hexdigest()
    body = {"algorithm": ALGORITHM, "manifest_sha256": digest, "signature": None, "public_key": None, "key_id": None}
    if key:
        body.update(
            signature=base64.b64encode(key.sign(data)).decode(),
            public_key=_raw(key.public_key()),
            key_id=key_id(key.public_key()),
        )
    _write_new(folder / SEAL, (json.dumps(body, indent=2) + "\n").encode(), 0o444)
    for top, _, files in os.walk(folder, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(top, name)):
                _sync_read_only(Path(top, name), 0o444)
        _sync_read_only(Path(top), 0o555)
    return digest


def make_writable(folder: Path) -> None:
    """Give a sealed record's owner write access back, for tools that prune or clean up archives."""
    for top, _, files in os.walk(folder):
        for path in [Path(top), *(Path(top, name) for name in files)]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)


# --- verifying ------------------------------------------------------------------------------------------


def _signature_problems(data: bytes, body: dict[str, Any], trusted: Ed25519PublicKey | None) -> list[str]:
    """With a trusted key the record must be signed by that key. Without one, a signature is checked
    against the key the seal carries: that proves the manifest is intact, not who signed it."""
    if body.get("signature") is None:
        return ["not signed: the seal has no signature, but a public key was given to check it"] if trusted else []
    try:
        key = trusted or Ed25519PublicKey.from_public_bytes(
            base64.b64decode(body.get("public_key") or "", validate=True)
        )
        signature = base64.b64decode(body["signature"], validate=True)
    except (ValueError, TypeError):
        return [f"{SEAL} holds a malformed signature or public key"]
    if body.get("key_id") != key_id(key):
        return [
            f"signed by another key: the seal names key {body.get('key_id')}, not {key_id(key)}"
            + (" (the public key given)" if trusted else f" (the public key {SEAL} carries)")
        ]
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return [f"the signature by key {key_id(key)} does not match manifest.json"]
    return []


def _previous_problems(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """The link to the tenant's previous record: that record must still exist, with the manifest and
    seal it had when this record was made."""
    link = manifest.get("previous")
    if link is None:
        return []
    if not isinstance(link, dict) or not isinstance(link.get("record"), str):
        return ["manifest.json has a malformed 'previous' link"]
    name = link["record"]
    if not _named(name):
        return [f"manifest.json links to {name!r}, which is not a record's name"]
    previous = folder.parent / name
    if not previous.is_dir():
        return [f"the previous record {name} named by this one is gone"]
    sealed: str | None
    actual: str | None
    try:
        sealed = _sealed_digest(previous)
        actual = hashlib.sha256(_load(previous / MANIFEST)).hexdigest()
    except RunbookError:
        sealed = actual = None
    if not link.get("manifest_sha256") == sealed == actual:
        return [
            f"the previous record {name} was rewritten: its manifest or seal no longer has the hash "
            "this record links to"
        ]
    return []


def _not_a_record(folder: Path) -> RunbookError:
    return RunbookError(
        f"{folder} is not a run record: it is not a folder",
        fix="give a folder such as archive/<tenant>/<UTC time>/ (see `runbook records TENANT`)",
    )


def verify(folder: Path, *, public_key: Path | None = None) -> list[str]:
    """Everything wrong with a record and its attachments, one sentence each; an empty list means it is
    intact. With ``public_key`` the record and each attachment must also be signed by that key. A missing or
    malformed key file raises RunbookError: that is a mistake in the command, not in the record."""
    if not folder.is_dir():
        raise _not_a_record(folder)
    trusted = load_public(public_key) if public_key else None
    return _name_problems(folder) + _sealed_problems(folder, trusted) + _attachment_problems(folder, trusted)


def seal_text(folder: Path) -> str:
    """A sealed record's integrity in a few words, for lists: whether it verifies, and whether it is signed."""
    problems = verify(folder)
    if problems:
        return f"DOES NOT VERIFY ({len(problems)} problem(s); see `runbook verify-record`): {problems[0]}"
    signed = _object(SEAL, _load(folder / SEAL)).get("key_id")
    return f"intact, signed by key {signed}" if signed else "intact, unsigned"


def _name_problems(folder: Path) -> list[str]:
    """A record is where and what its manifest says: a folder renamed (to an older time, say, to reorder the
    tenant's history) or reached through a link shows. Records sealed before the manifest named its folder
    carry no name to compare."""
    problems = [f"{folder} is a symbolic link: a record is a real folder"] if folder.is_symlink() else []
    try:
        manifest = _object(MANIFEST, _load(folder / MANIFEST))
    except RunbookError:
        return problems  # the seal's check names it
    named = manifest.get("record")
    if named is not None and named != folder.name:
        problems.append(f"renamed: the manifest names this record {named!r}, but its folder is {folder.name!r}")
    return problems


def _sealed_problems(folder: Path, trusted: Ed25519PublicKey | None, *, attachments_apart: bool = True) -> list[str]:
    """What is wrong with one sealed folder (a record, or one of its attachments): manifest, seal,
    signature, files and the link to the previous one."""
    problems: list[str] = []
    data = manifest = body = None
    try:
        data = _load(folder / MANIFEST)
        manifest = _object(MANIFEST, data)
    except RunbookError as exc:
        problems.append(exc.message)
    if not (folder / SEAL).exists():
        problems.append(f"not sealed: the record has no {SEAL} (records made before sealing have none)")
    else:
        try:
            body = _object(SEAL, _load(folder / SEAL))
        except RunbookError as exc:
            problems.append(exc.message)
    if body is not None and data is not None:
        digest = hashlib.sha256(data).hexdigest()
        if body.get("manifest_sha256") != digest:
            problems.append(
                f"manifest.json differs from the sealed one (sha256 {digest[:12]}…, sealed "
                f"{str(body.get('manifest_sha256'))[:12]}…): its operator, dates, changes or file "
                "hashes were edited"
            )
        problems += _signature_problems(data, body, trusted)
    if manifest is not None:
        try:
            problems += _file_problems(folder, _manifest_files(manifest), attachments_apart=attachments_apart)
        except RunbookError as exc:
            problems.append(exc.message)
        problems += _previous_problems(folder, manifest)
    return problems


def require_sealed(record: Path) -> str:
    """The sha256 of a record's manifest, once it is known to be the manifest its seal vouches for: what is
    built on a record afterwards (a diff, an attachment) must rest on what was sealed."""
    if not record.is_dir():
        raise _not_a_record(record)
    if not (record / SEAL).exists():
        raise RunbookError(
            f"{record} is not sealed: its run is still going, or was killed before it ended",
            fix="wait for the run to end; a killed run's record is sealed by the next `runbook records TENANT`",
        )
    digest = hashlib.sha256(_load(record / MANIFEST, f"{record}/{MANIFEST}")).hexdigest()
    if _sealed_digest(record) != digest:
        raise RunbookError(
            f"{record}/{MANIFEST} is not the manifest that was sealed: it was edited",
            fix=f"see what changed with `runbook verify-record {record}`",
        )
    return digest


# --- attachments ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """One file attached to a sealed record, as its own manifest describes it."""

    folder: str
    file: str
    size: int
    sha256: str
    note: str
    attached: str
    local_account: str
    key_id: str | None
    manifest_sha256: str

    def describe(self) -> str:
        signed = f", signed by key {self.key_id}" if self.key_id else ""
        note = f": {self.note}" if self.note else ""
        return (
            f"attachment {self.folder}: {self.file} ({self.size} bytes, sha256 {self.sha256[:12]}…), attached "
            f"{self.attached} by {self.local_account}{signed}{note}"
        )


#: what looks like a secret in a file to attach, by what it is; a match is named, never quoted
_SECRET_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "a signed token (JWT)",
        re.compile(rf"eyJ[\w-]{{4,}}\.eyJ[\w-]{{4,}}\.(?!{recording.SCRUBBED_SIGNATURE})[\w-]{{16,}}"),
    ),
    ("a client secret value (Entra ID's Q~ shape)", re.compile(r"(?<![\w~.-])[\w.-]{3}\dQ~[\w~.-]{20,}")),
    (
        "a value given to a secret's field",
        re.compile(
            r"(?i)(?<![\w-])(?:"
            + "|".join(sorted((recording.JSON_SECRET_FIELDS | recording.FORM_SECRET_FIELDS) - {"code"}))
            + r")[\"']?\s*[:=]\s*[\"']?(?!scrubbed-)(?=[^\s\"'&,;]*[A-Za-z0-9])[^\s\"'&,;]{8,}"
        ),
    ),
    (
        "a secret given to a PowerShell parameter",
        re.compile(r"(?i)-(?:ClientSecret|AccessToken|Password|CertificatePassword)\s+['\"]?(?![($])[^\s'\"]{8,}"),
    ),
    (
        "a plain-text password for ConvertTo-SecureString",
        re.compile(r"(?i)ConvertTo-SecureString\s+(?:-String\s+)?['\"]"),
    ),
)


def secret_looking(text: str) -> list[str]:
    """Where ``text`` holds something that looks like a secret: line numbers and kinds, never the value."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        found += [f"line {number}: {what}" for what, shape in _SECRET_SHAPES if shape.search(line)]
    return found


def _as_text(data: bytes) -> str:
    """A file's text for the secret check: Windows PowerShell writes transcripts in UTF-16, others UTF-8."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    if data[1:2] == b"\x00":  # UTF-16 without a byte order mark
        return data.decode("utf-16-le", errors="replace")
    return data.decode("utf-8", errors="replace")


def _attachable(source: Path, note: str) -> bytes:
    """The file's bytes, refused (naming why) when it is not a regular file, empty or too big, or holds
    anything that looks like a secret, as the note may not."""
    try:
        info = source.stat()
    except OSError as exc:
        raise RunbookError(f"cannot attach {source}: {exc.strerror}", fix="give the path of an existing file") from None
    if not stat.S_ISREG(info.st_mode):
        raise RunbookError(f"cannot attach {source}: it is not a regular file", fix="give a file, not a folder")
    if len(note) > NOTE_MAX_CHARS:
        raise RunbookError(f"the note has {len(note)} characters; at most {NOTE_MAX_CHARS}", fix="shorten --note")
    data = _load(source, f"the file {source}") if info.st_size <= ATTACHMENT_MAX_BYTES else b""
    if not data or len(data) > ATTACHMENT_MAX_BYTES:
        raise RunbookError(
            f"cannot attach {source}: it holds {info.st_size} bytes; an attachment holds 1 to "
            f"{ATTACHMENT_MAX_BYTES} bytes",
            fix="attach the part that matters (a transcript of step 3's script is far smaller)",
        )
    found = secret_looking(_as_text(data)) + [f"the note, {where}" for where in secret_looking(note)]
    if found:
        shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
        raise RunbookError(
            f"{source} was not attached: it holds what looks like a secret ({shown})",
            fix="remove the secret from the file (a record must hold none) and attach it again; then treat "
            "that secret as exposed and replace it",
        )
    return data


def _stored_name(name: str) -> str:
    """The file's name inside the record: safe characters only, never the manifest's or the seal's."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:120] or "attachment"
    return f"attached-{cleaned}" if cleaned in (MANIFEST, SEAL) else cleaned


@contextmanager
def _opened(folder: Path) -> Iterator[None]:
    """Let the owner write into a sealed (0555) folder for a moment; read-only again afterwards, whatever
    happens."""
    folder.chmod(0o755)
    try:
        yield
    finally:
        _sync_read_only(folder, 0o555)


def attach(record: Path, source: Path, *, note: str = "", signing_key: Path | None = None) -> Attachment:
    """Attach a file to a sealed record without touching what was sealed: a new ``attachments/NNN/`` folder
    with the file, its manifest (bound to the record's sealed manifest hash) and its seal, signed with
    ``signing_key`` if given, then read-only like the record. Refused for a record that does not verify,
    and for a file that is not attachable (see :func:`_attachable`)."""
    if not record.is_dir():
        raise _not_a_record(record)
    if signing_key:
        load_private(signing_key)  # a bad key is refused before anything is written
    problems = _sealed_problems(record, None)
    if problems:
        raise RunbookError(
            f"{record} does not verify, so nothing is attached to it: " + "; ".join(problems[:3]),
            fix=f"see every problem with `runbook verify-record {record}`",
        )
    bound = {"record": record.name, "manifest_sha256": require_sealed(record)}
    data = _attachable(source, note)
    name = _stored_name(source.name)
    base = record / ATTACHMENTS
    try:
        with _opened(record):
            base.mkdir(exist_ok=True)
            with _opened(base):
                number = max((int(p.name) for p in base.iterdir() if p.name.isdigit()), default=0) + 1
                folder = base / f"{number:03d}"
                folder.mkdir()  # never an existing one: of two attaches at once, one stops here
                try:
                    _write_new(folder / name, data, 0o644)
                    manifest = {
                        "kind": "attachment",
                        "attached_to": bound,
                        "file": name,
                        "size": len(data),
                        "note": note,
                        "attached": datetime.now(UTC).isoformat(timespec="seconds"),
                        "local_account": local_account(),
                        "previous": previous_link(base, before=folder.name),
                        "files": file_hashes(folder, attachments_apart=False),
                    }
                    _write_new(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), 0o644)
                    seal(folder, signing_key=signing_key)
                except BaseException:
                    shutil.rmtree(folder, ignore_errors=True)  # no half-made attachment is left behind
                    raise
    except OSError as exc:
        raise RunbookError(
            f"could not attach {source} to {record}: {exc.strerror}",
            fix="attach as the account that owns the archive, one attach at a time",
        ) from None
    return _attachment(folder)


def _attachment(folder: Path) -> Attachment:
    manifest = _object(MANIFEST, _load(folder / MANIFEST))
    body = _object(SEAL, _load(folder / SEAL))
    name = str(manifest.get("file"))
    return Attachment(
        folder.name,
        name,
        int(manifest.get("size") or 0),
        str((manifest.get("files") or {}).get(name, "")),
        str(manifest.get("note") or ""),
        str(manifest.get("attached")),
        str(manifest.get("local_account")),
        body.get("key_id"),
        str(body.get("manifest_sha256")),
    )


def _attachment_folders(record: Path) -> list[Path]:
    base = record / ATTACHMENTS
    if base.is_symlink() or not base.is_dir():
        return []  # a link or a file by that name is not set apart: the record's own check names it
    return sorted(base.iterdir(), key=lambda p: record_order(p.name))


def attachment_lines(record: Path) -> list[str]:
    """Each attachment of a record in a sentence, as its manifest reads (`runbook verify-record` checks
    them)."""
    lines = []
    for folder in _attachment_folders(record):
        try:
            lines.append(_attachment(folder).describe())
        except (RunbookError, ValueError, TypeError, AttributeError):
            lines.append(f"attachment {folder.name}: unreadable; check the record with `runbook verify-record`")
    return lines


def _attachment_problems(record: Path, trusted: Ed25519PublicKey | None) -> list[str]:
    """Each attachment must be intact and sealed, link to the one before it, and belong to this record as it
    was sealed."""
    try:
        digest: str | None = _sealed_digest(record)
    except RunbookError:
        digest = None  # the record's own check says why
    problems = []
    for folder in _attachment_folders(record):
        label = f"attachment {folder.name}"
        if folder.is_symlink() or not folder.is_dir():
            problems.append(f"{label}: not an attachment's folder (added to {ATTACHMENTS}/ by hand?)")
            continue
        problems += [f"{label}: {p}" for p in _sealed_problems(folder, trusted, attachments_apart=False)]
        try:
            bound = _object(MANIFEST, _load(folder / MANIFEST)).get("attached_to")
        except RunbookError:
            continue  # named above
        if bound != {"record": record.name, "manifest_sha256": digest}:
            problems.append(f"{label}: it was attached to another record, or to this one before its manifest changed")
    return problems
